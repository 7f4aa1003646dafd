//! A process inside a session tries to corrupt the tracking history or make it hold host files:
//! forged `.git` directories, symlinks to host paths and to the tracking repository, writes to
//! the repository, a hard link to a root-only file, symlink swaps racing the commits. It fails:
//! the history holds only what the session's files were, never a byte of a host file. And the
//! sync never writes through a symlink in the host project. Slots 10..=19 belong to this file.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use common::*;
use warren_code::{Range, Sessions, StartOptions, StopOptions, SyncOptions};
use warren_core::BackendKind;

const MARKER: &str = "HOST-SECRET-7c1e9a55";

struct Secrets {
    file: std::path::PathBuf,
    dir: std::path::PathBuf,
}

/// A root-only file and a root-only directory holding one, beside the state directory.
fn secrets(env: &Env) -> Secrets {
    let file = env.path("secret.txt");
    std::fs::write(&file, format!("{MARKER} file\n")).expect("write secret");
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    let dir = env.path("secretdir");
    write_tree(&dir, &[("topsecret", format!("{MARKER} dir\n").as_bytes())]);
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).expect("chmod");
    Secrets { file, dir }
}

fn assert_no_leak(repo: &Path) {
    let objects = all_objects(repo);
    assert!(
        !objects.windows(MARKER.len()).any(|w| w == MARKER.as_bytes()),
        "host secret content reached the tracking history"
    );
}

fn linear_history(repo: &Path) -> usize {
    let out = String::from_utf8(git(repo, &["rev-list", "--parents", "refs/heads/main"])).expect("utf8");
    let lines: Vec<&str> = out.lines().collect();
    for (i, l) in lines.iter().enumerate() {
        let n = l.split(' ').count();
        let want = if i + 1 == lines.len() { 1 } else { 2 };
        assert_eq!(n, want, "commit {l} is not part of one linear history");
    }
    lines.len()
}

async fn tamper(kind: BackendKind, slot: u32) {
    let env = env(kind, slot).await;
    let sec = secrets(&env);
    let proj = env.path("project");
    write_tree(&proj, &[("a.txt", b"original\n")]);
    let s = Sessions::new(&env.engine);
    let info = s.start(StartOptions { project: proj.clone(), ..Default::default() }).await.expect("start");
    let id = info.id.clone();
    let dir = env.state().join("code").join(id.as_str());
    let track = dir.join("track.git");
    let home = env.state().join("workspaces").join(info.workspace_user.as_str());
    let (t, f, d, p) = (track.display(), sec.file.display(), sec.dir.display(), proj.display());

    // Forged repositories, links to host paths and to the history, direct writes to it.
    let script = format!(
        "mkdir -p .git/objects/ab .git/refs/heads && echo 'ref: refs/heads/main' > .git/HEAD && \
         printf forged > .git/objects/ab/cdef01 && echo 0123456789012345678901234567890123456789 > .git/refs/heads/main && \
         mkdir -p sub && printf 'gitdir: {t}\\n' > sub/.git && mkdir -p deep/.GIT && echo x > deep/.GIT/config && \
         ln -s {f} secret-link && ln -s {d} secretdir-link && ln -s {t} track-link && ln -s {p} project-link && \
         ln -s / root-link && ln -s /proc/self/root/etc host-etc && ln -s {d}/topsecret deep-link && \
         (echo forged > {t}/refs/heads/main) 2>/dev/null && echo WROTE-TRACK; \
         (cat {t}/HEAD) 2>/dev/null && echo READ-TRACK; \
         (cat {f}) 2>/dev/null && echo READ-SECRET; \
         echo inside > a.txt; exit 0"
    );
    let out = s.exec(&id, sh(&script)).await.expect("exec");
    let stdout = String::from_utf8_lossy(&out.output.stdout);
    assert_eq!(out.output.exit_code, 0, "{}", String::from_utf8_lossy(&out.output.stderr));
    for bad in ["WROTE-TRACK", "READ-TRACK", "READ-SECRET"] {
        assert!(!stdout.contains(bad), "{bad}: {stdout}");
    }
    assert!(out.commit.changed);
    let paths = all_paths(&track);
    for p in &paths {
        assert!(!p.split('/').any(|c| c.eq_ignore_ascii_case(".git")), "{p} holds a .git component");
    }
    let links = ["deep-link", "host-etc", "project-link", "root-link", "secret-link", "secretdir-link", "track-link"];
    assert_eq!(paths, [&["a.txt"][..], &links[..]].concat(), "only the session's own entries");
    let tree = String::from_utf8(git(&track, &["ls-tree", "refs/heads/main"])).expect("utf8");
    for l in links {
        assert!(
            tree.lines().any(|t| t.starts_with("120000 ") && t.ends_with(&format!("\t{l}"))),
            "{l} is a link: {tree}"
        );
    }
    let link = git(&track, &["cat-file", "-p", "refs/heads/main:secret-link"]);
    assert_eq!(link, sec.file.as_os_str().as_encoded_bytes(), "a link is recorded as its target text");
    assert_no_leak(&track);

    // A hard link to a root-only file (what a kernel without protected_hardlinks would let the
    // workspace make): refused, the last recorded version kept, nothing leaked.
    std::fs::hard_link(&sec.file, home.join("hard")).expect("hard link");
    std::fs::hard_link(&sec.file, home.join("a.txt.tmp")).expect("hard link");
    std::fs::rename(home.join("a.txt.tmp"), home.join("a.txt")).expect("replace a.txt with the link");
    let c = s.commit(&id, Some("after the hard links")).await.expect("commit");
    let why: Vec<(&str, &str)> = c.skipped.iter().map(|s| (s.path.as_str(), s.reason.as_str())).collect();
    assert_eq!(
        why,
        vec![("a.txt", "owned by uid 0, not by the workspace"), ("hard", "owned by uid 0, not by the workspace")]
    );
    assert_eq!(git(&track, &["cat-file", "-p", "refs/heads/main:a.txt"]), b"inside\n", "the last version is kept");
    assert!(!all_paths(&track).contains(&"hard".to_owned()));
    assert_no_leak(&track);
    std::fs::remove_file(home.join("hard")).expect("rm");
    std::fs::remove_file(home.join("a.txt")).expect("rm");

    // Symlink swaps racing the commits: a directory and a file keep being replaced by links to
    // the root-only directory and file while warren records the home.
    let swapper = format!(
        "mkdir d && echo inside > d/x && echo inside > f; \
         (i=0; while [ ! -e stop-swapper ] && [ $i -lt 200000 ]; do i=$((i+1)); \
           mv d d.real; ln -s {d} d; rm d; mv d.real d; mv f f.real; ln -s {f} f; rm f; mv f.real f; \
           ln -sfn {d} e; rm e; mkdir e; echo e > e/y; rm -r e; done) </dev/null >/dev/null 2>&1 &"
    );
    let out = s.exec(&id, sh(&swapper)).await.expect("start the swapper");
    assert_eq!(out.output.exit_code, 0, "{}", String::from_utf8_lossy(&out.output.stderr));
    let mut raced = 0;
    for i in 0..25 {
        let c = s.commit(&id, Some(&format!("race {i}"))).await.expect("commit while racing");
        raced += usize::from(c.skipped_count > 0);
    }
    // How often a commit met a swap mid-walk (informative: the race is the swapper's luck).
    let trees = String::from_utf8(git(&track, &["log", "--format=%T", "-n", "25", "refs/heads/main"])).expect("utf8");
    let distinct: std::collections::BTreeSet<&str> = trees.lines().collect();
    eprintln!("{raced} of 25 commits met an entry swapped while it was read; {} distinct trees", distinct.len());
    s.exec(&id, sh("touch stop-swapper")).await.expect("stop the swapper");
    assert_no_leak(&track);
    for p in all_paths(&track) {
        for dirname in ["d/", "d.real/", "e/"] {
            if let Some(rest) = p.strip_prefix(dirname) {
                assert!(["x", "y"].contains(&rest), "{p}: something beneath a swapped link was recorded");
            }
        }
        assert!(!p.ends_with("topsecret"), "{p}");
    }
    let commits = String::from_utf8(git(&track, &["rev-list", "refs/heads/main"])).expect("utf8");
    for c in commits.lines() {
        for file in ["d/x", "d.real/x", "f", "f.real"] {
            let spec = format!("{c}:{file}");
            let out = std::process::Command::new("git")
                .args(["--git-dir", &track.to_string_lossy(), "cat-file", "-p", &spec])
                .output()
                .expect("git");
            if out.status.success() {
                let ok = out.stdout == b"inside\n"
                    || out.stdout == sec.file.as_os_str().as_encoded_bytes()
                    || out.stdout == sec.dir.as_os_str().as_encoded_bytes();
                assert!(ok, "{spec}: {:?}", String::from_utf8_lossy(&out.stdout));
            }
        }
    }
    let n = linear_history(&track);
    assert!(n >= 4, "base, the exec, the hard-link commit, the swapper: {n}");

    // The history's own files were never writable from inside and stay root's.
    use std::os::unix::fs::MetadataExt;
    let md = std::fs::metadata(&dir).expect("session dir");
    assert_eq!((md.uid(), md.mode() & 0o777), (0, 0o700));
    let rep = s.stop(&id, StopOptions { discard: true, ..Default::default() }).await.expect("stop");
    assert!(rep.discarded_changes);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_cannot_be_tampered_dir() {
    tamper(BackendKind::Dir, 10).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_cannot_be_tampered_ns() {
    tamper(BackendKind::Ns, 11).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_cannot_be_tampered_docker() {
    if let Some(why) = docker_unavailable() {
        eprintln!("skipped: no docker daemon answers here ({why})");
        return;
    }
    tamper(BackendKind::Docker, 12).await;
}

/// The sync never writes through a symlink of the host project, never writes a link that
/// leads outside it, and never writes under `.git`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sync_never_writes_through_host_symlinks() {
    let env = env(BackendKind::Dir, 13).await;
    let proj = env.path("outer/project");
    write_tree(&proj, &[("lib/a", b"base\n"), ("top.txt", b"base\n"), (".git/HEAD", b"ref: refs/heads/x\n")]);
    let outside = env.path("outside");
    write_tree(&outside, &[("a", b"base\n"), ("target", b"base\n")]);
    let outside_before = fingerprint(&outside);
    let git_before = fingerprint(&proj.join(".git"));
    let s = Sessions::new(&env.engine);
    let info = s.start(StartOptions { project: proj.clone(), ..Default::default() }).await.expect("start");
    let id = info.id.clone();
    let out = s
        .exec(
            &id,
            sh("echo changed > lib/a && echo new > lib/b && echo changed > top.txt && ln -s /etc/passwd evil && \
                ln -s ../../../x climb && ln -s lib/a fine && mkdir -p x/.git && echo forged > x/.git/HEAD && echo ok > x/y"),
        )
        .await
        .expect("exec");
    assert_eq!(out.output.exit_code, 0);

    // The host replaces lib/ and top.txt with symlinks to look-alikes outside the project.
    std::fs::remove_dir_all(proj.join("lib")).expect("rm");
    std::os::unix::fs::symlink(&outside, proj.join("lib")).expect("symlink");
    std::fs::remove_file(proj.join("top.txt")).expect("rm");
    std::os::unix::fs::symlink(outside.join("target"), proj.join("top.txt")).expect("symlink");

    let err = s.sync(&id, SyncOptions::default()).await.expect_err("conflicts");
    let msg = err.to_string();
    assert!(msg.contains("lib/a: a parent (lib) is a symlink on the host"), "{msg}");
    assert!(msg.contains("lib/b: a parent (lib) is a symlink on the host"), "{msg}");
    assert!(msg.contains("top.txt: a symlink is in its place on the host"), "{msg}");
    let rep = s.sync(&id, SyncOptions { force: true, ..Default::default() }).await.expect("forced");
    assert_eq!(fingerprint(&outside), outside_before, "nothing written through a host symlink");
    let skipped: Vec<&str> = rep.skipped.iter().map(|s| s.path.as_str()).collect();
    // fine -> lib/a would now lead through the host's lib, a symlink out of the project.
    assert_eq!(skipped, vec!["climb", "evil", "fine", "lib/a", "lib/b"], "{:?}", rep.skipped);
    assert_eq!(rep.written, vec!["top.txt", "x/y"]);
    assert!(!proj.join("top.txt").is_symlink(), "the link itself was replaced, not followed");
    assert_eq!(std::fs::read(proj.join("top.txt")).expect("read"), b"changed\n");
    for p in ["fine", "evil", "climb"] {
        assert!(std::fs::symlink_metadata(proj.join(p)).is_err(), "{p} was written");
    }
    assert!(!proj.join("x/.git").exists(), "a .git from the sandbox is never synced");
    assert_eq!(fingerprint(&proj.join(".git")), git_before);
    let ch = s.changes(&id, &Range { all: true, ..Default::default() }).await.expect("changes");
    assert!(ch.files.iter().all(|c| !c.path.contains(".git")), "{:?}", ch.files);

    // Whoever controls a parent of the project swaps it for a symlink to a look-alike: the
    // project path is never resolved through it.
    s.exec(&id, sh("echo later > top.txt")).await.expect("exec");
    let decoy = env.path("decoy");
    write_tree(&decoy, &[("project/top.txt", b"changed\n")]);
    let decoy_before = fingerprint(&decoy);
    std::fs::rename(env.path("outer"), env.path("outer.real")).expect("rename");
    std::os::unix::fs::symlink(&decoy, env.path("outer")).expect("symlink");
    let err = s.sync(&id, SyncOptions { force: true, ..Default::default() }).await.expect_err("refused");
    assert!(err.to_string().contains("now a symlink"), "{err}");
    assert_eq!(fingerprint(&decoy), decoy_before);
    s.stop(&id, StopOptions { discard: true, ..Default::default() }).await.expect("stop");
}

/// Every symlink under `dir` that resolves (on the host, following everything) to somewhere
/// outside `inside`, with where it leads.
fn links_leading_out(dir: &Path, inside: &Path) -> Vec<(String, std::path::PathBuf)> {
    let inside = std::fs::canonicalize(inside).expect("canonicalize");
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).expect("read_dir").flatten() {
            let md = std::fs::symlink_metadata(e.path()).expect("lstat");
            if md.file_type().is_dir() {
                stack.push(e.path());
            } else if md.file_type().is_symlink() {
                // Where it leads (readlink -f: the existing part resolved, the rest appended).
                let mut p = e.path();
                let mut rest = Vec::new();
                let resolved = loop {
                    if let Ok(c) = std::fs::canonicalize(&p) {
                        break rest.iter().rev().fold(c, |acc: std::path::PathBuf, r| acc.join(r));
                    }
                    match (p.parent(), p.file_name()) {
                        (Some(parent), Some(name)) => {
                            rest.push(name.to_owned());
                            p = parent.to_path_buf();
                        }
                        _ => break p,
                    }
                };
                if !resolved.starts_with(&inside) {
                    out.push((e.path().strip_prefix(dir).expect("prefix").display().to_string(), resolved));
                }
            }
        }
    }
    out.sort();
    out
}

/// A sync never writes a symlink that leads out of the project, however it gets there: through
/// other symlinks it writes (a chain whose every link looks inside when read alone), through a
/// symlink of the host that was never copied in (it led out, so the copy left it out), or
/// through a loop. Links that stay inside, dangling ones too, are written.
async fn chained_links(kind: BackendKind, slot: u32) {
    let env = env(kind, slot).await;
    let proj = env.path("project");
    write_tree(&proj, &[("keep.txt", b"keep\n"), ("sub/inner.txt", b"inner\n")]);
    let outside = env.path("outside");
    write_tree(&outside, &[("f", b"outside\n")]);
    // Host symlinks leading out: the copy leaves them out, the sandbox never sees them.
    std::os::unix::fs::symlink("/etc", proj.join("h")).expect("symlink");
    std::os::unix::fs::symlink("../outside", proj.join("up")).expect("symlink");
    std::os::unix::fs::symlink("sub/../../outside", proj.join("sub-up")).expect("symlink");
    let s = Sessions::new(&env.engine);
    let info = s.start(StartOptions { project: proj.clone(), ..Default::default() }).await.expect("start");
    let skipped: Vec<&str> = info.copy.skipped.iter().map(|s| s.path.as_str()).collect();
    assert_eq!(skipped, ["h", "sub-up", "up"], "the copy left the escaping links out");
    let id = info.id.clone();
    let script = "mkdir -p a/b/c && ln -s ../../.. a/b/c/s && ln -s s/../../../etc/passwd a/b/c/l && \
                  ln -s s/../../../outside/f a/b/c/o && ln -s s a/b/c/s2 && ln -s s2/.. a/b/c/up2 && \
                  ln -s h/passwd via-host && ln -s h host-dir && ln -s up/f via-up && ln -s sub-up/f via-sub-up && \
                  ln -s loop1 loop2 && ln -s loop2 loop1 && ln -s keep.txt/x through-file && \
                  ln -s a/b/c/s/keep.txt fine && ln -s a/b/c/s/sub/inner.txt fine2 && ln -s sub fine-dir && \
                  ln -s missing/file dangling && ln -s ../keep.txt sub/up-one";
    let out = s.exec(&id, sh(script)).await.expect("exec");
    assert_eq!(out.output.exit_code, 0, "{}", String::from_utf8_lossy(&out.output.stderr));

    let dry = s.sync(&id, SyncOptions { dry_run: true, ..Default::default() }).await.expect("dry run");
    let rep = s.sync(&id, SyncOptions::default()).await.expect("sync");
    assert!(rep.conflicts.is_empty(), "{:?}", rep.conflicts);
    let skipped: Vec<&str> = rep.skipped.iter().map(|s| s.path.as_str()).collect();
    let refused = [
        "a/b/c/l",
        "a/b/c/o",
        "a/b/c/up2",
        "host-dir",
        "loop1",
        "loop2",
        "through-file",
        "via-host",
        "via-sub-up",
        "via-up",
    ];
    assert_eq!(skipped, refused, "{:#?}", rep.skipped);
    assert_eq!(rep.written, ["a/b/c/s", "a/b/c/s2", "dangling", "fine", "fine-dir", "fine2", "sub/up-one"]);
    assert_eq!((&dry.written, &dry.skipped), (&rep.written, &rep.skipped), "the dry run said the same");
    let why = |p: &str| rep.skipped.iter().find(|s| s.path == p).map(|s| s.reason.clone()).unwrap_or_default();
    assert!(why("a/b/c/l").contains("leads above the project"), "{}", why("a/b/c/l"));
    assert!(why("via-host").contains("h, a symlink on the host"), "{}", why("via-host"));
    assert!(why("loop1").contains("more than 40 symlinks"), "{}", why("loop1"));
    for p in refused {
        assert!(std::fs::symlink_metadata(proj.join(p)).is_err(), "{p} was written");
    }
    assert_eq!(
        links_leading_out(&proj, &proj),
        [
            ("h".to_owned(), std::path::PathBuf::from("/etc")),
            ("sub-up".to_owned(), std::fs::canonicalize(&outside).expect("canonicalize")),
            ("up".to_owned(), std::fs::canonicalize(&outside).expect("canonicalize")),
        ],
        "only the host's own links lead out"
    );
    assert_eq!(std::fs::read(proj.join("fine")).expect("read"), b"keep\n");
    assert_eq!(std::fs::read(proj.join("fine2")).expect("read"), b"inner\n");
    assert_eq!(std::fs::read(proj.join("sub/up-one")).expect("read"), b"keep\n");
    assert_eq!(std::fs::read_link(proj.join("dangling")).expect("link").to_str(), Some("missing/file"));
    s.stop(&id, StopOptions { discard: true, ..Default::default() }).await.expect("stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sync_never_writes_links_that_lead_out_dir() {
    chained_links(BackendKind::Dir, 14).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sync_never_writes_links_that_lead_out_ns() {
    chained_links(BackendKind::Ns, 15).await;
}
