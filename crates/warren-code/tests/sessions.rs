//! Coding sessions end to end on real backends: copy in, exec with automatic commits, exact
//! changes and diff, sync back (never touching `.git`), conflicts and --force, stop.
//! Slots 0..=9 belong to this file.

mod common;

use std::os::unix::fs::PermissionsExt;

use common::*;
use warren_code::{ChangeKind, Range, SessionStatus, Sessions, StartOptions, StopOptions, SyncOptions};
use warren_core::{BackendKind, Error};

fn project(env: &Env) -> std::path::PathBuf {
    let p = env.path("project");
    write_tree(
        &p,
        &[
            ("README.md", b"# demo\nline two\n"),
            ("src/main.rs", b"fn main() {\n    println!(\"hi\");\n}\n"),
            ("src/old.rs", b"// to be deleted\n"),
            ("run.sh", b"#!/bin/sh\necho run\n"),
            ("data.bin", &[0u8, 1, 2, 255, 0, 7]),
            ("lib/nested/deep.txt", b"deep\n"),
            ("target/debug/junk", b"build output\n"),
            (".git/HEAD", b"ref: refs/heads/master\n"),
            (".git/config", b"[core]\n\tbare = false\n"),
            ("vendor/dep/.git/HEAD", b"nested repo\n"),
            ("vendor/dep/code.c", b"int x;\n"),
        ],
    );
    std::fs::set_permissions(p.join("run.sh"), std::fs::Permissions::from_mode(0o755)).expect("chmod");
    std::os::unix::fs::symlink("src/main.rs", p.join("main-link")).expect("symlink");
    std::os::unix::fs::symlink("/etc/passwd", p.join("outside-link")).expect("symlink");
    std::os::unix::fs::symlink("../../etc", p.join("lib/climb")).expect("symlink");
    nix::unistd::mkfifo(&p.join("pipe"), nix::sys::stat::Mode::from_bits_truncate(0o600)).expect("mkfifo");
    p
}

async fn flow(kind: BackendKind, slot: u32) {
    let env = env(kind, slot).await;
    let proj = project(&env);
    let git_before = fingerprint(&proj.join(".git"));
    let s = Sessions::new(&env.engine);

    let info = s
        .start(StartOptions { project: proj.clone(), exclude: vec!["target".into()], ..Default::default() })
        .await
        .expect("start");
    assert_eq!(info.status, SessionStatus::Active);
    assert_eq!(info.backend, Some(kind));
    assert_eq!(info.workspace_user.as_str(), format!("code.{}", info.id));
    assert!(!info.unsynced);
    assert_eq!(info.base_commit, info.head_commit);
    // Copied: README, main.rs, old.rs, run.sh, data.bin, deep.txt, code.c; the in-tree link.
    assert_eq!(info.copy.files, 7, "{:?}", info.copy);
    assert_eq!(info.copy.symlinks, 1, "{:?}", info.copy);
    let skipped: Vec<&str> = info.copy.skipped.iter().map(|s| s.path.as_str()).collect();
    assert_eq!(skipped, vec!["lib/climb", "outside-link", "pipe"], "{:?}", info.copy.skipped);
    let id = info.id.clone();

    // Inside: the copy, without .git or the excluded directory, with the exec bit, no network.
    let files = env.engine.files(&info.workspace_user).await.expect("files");
    let root = warren_core::WorkspacePath::root();
    let names: Vec<String> = files.list(&root).expect("list").into_iter().map(|e| e.name).collect();
    assert_eq!(names, ["README.md", "data.bin", "lib", "main-link", "run.sh", "src", "vendor"]);
    let out =
        s.exec(&id, sh("test ! -e vendor/dep/.git && ./run.sh && readlink main-link && id -u")).await.expect("exec");
    assert_eq!(out.output.exit_code, 0, "{}", String::from_utf8_lossy(&out.output.stderr));
    let uid = env.engine.status(&info.workspace_user).await.expect("status").uid;
    assert_eq!(String::from_utf8_lossy(&out.output.stdout), format!("run\nsrc/main.rs\n{uid}\n"));
    assert!(out.commit.created && !out.commit.changed, "{:?}", out.commit);

    // Edit, create, delete, chmod, through exec.
    let script = "printf '# demo\\nline 2\\nline three\\n' > README.md && rm src/old.rs && mkdir -p docs && \
                  printf 'new\\n' > docs/new.md && chmod +x src/main.rs && printf '\\000\\001' > data.bin && \
                  ln -s docs/new.md docs-link && exit 3";
    let out = s.exec(&id, sh(script)).await.expect("exec");
    assert_eq!(out.output.exit_code, 3);
    assert!(out.commit.changed && out.commit.created);
    assert_eq!(out.commit.skipped_count, 0);

    let ch = s.changes(&id, &Range::default()).await.expect("changes");
    let got: Vec<(&str, ChangeKind, Option<u64>, Option<u64>)> =
        ch.files.iter().map(|c| (c.path.as_str(), c.kind, c.lines_added, c.lines_deleted)).collect();
    assert_eq!(
        got,
        vec![
            ("README.md", ChangeKind::Modified, Some(2), Some(1)),
            ("data.bin", ChangeKind::Modified, None, None),
            ("docs-link", ChangeKind::Added, Some(1), Some(0)),
            ("docs/new.md", ChangeKind::Added, Some(1), Some(0)),
            ("src/main.rs", ChangeKind::Modified, Some(0), Some(0)),
            ("src/old.rs", ChangeKind::Deleted, Some(0), Some(1)),
        ]
    );
    assert_eq!((ch.added, ch.modified, ch.deleted), (2, 3, 1));
    assert_eq!((ch.lines_added, ch.lines_deleted), (4, 2));
    assert_eq!(ch.from, info.base_commit.clone().expect("base"));

    let diff = s.diff(&id, &Range::default(), &[]).await.expect("diff");
    assert!(!diff.truncated);
    for needle in [
        "diff --git a/README.md b/README.md",
        "-line two\n+line 2\n+line three\n",
        "deleted file mode 100644",
        "-// to be deleted",
        "old mode 100644\nnew mode 100755",
        "new file mode 120000",
        "Binary files a/data.bin and b/data.bin differ",
        "+new\n",
    ] {
        assert!(diff.text.contains(needle), "{needle:?} missing from:\n{}", diff.text);
    }
    let only = s.diff(&id, &Range::default(), &["docs".into()]).await.expect("diff of a path");
    assert!(only.text.contains("docs/new.md") && !only.text.contains("README"), "{}", only.text);

    let log = s.log(&id, 10).await.expect("log");
    let subjects: Vec<&str> = log.iter().map(|e| e.subject.as_str()).collect();
    assert_eq!(subjects.len(), 3, "{subjects:?}");
    assert!(subjects[0].starts_with("exec: sh -c 'printf"), "{subjects:?}");
    assert!(log[0].message.contains("exit: 3"), "{}", log[0].message);
    assert!(subjects[1].starts_with("exec: sh -c 'test ! -e"), "{subjects:?}");
    assert_eq!(subjects[2], format!("base: copy of {}", proj.display()));

    // Sync writes exactly the changes; .git and the excluded directory are untouched.
    let dry = s.sync(&id, SyncOptions { dry_run: true, ..Default::default() }).await.expect("dry run");
    assert!(!dry.applied && dry.conflicts.is_empty());
    assert_eq!(std::fs::read(proj.join("README.md")).expect("read"), b"# demo\nline two\n", "dry run wrote");
    let rep = s.sync(&id, SyncOptions::default()).await.expect("sync");
    assert!(rep.applied);
    assert_eq!(rep.deleted, vec!["src/old.rs"]);
    assert_eq!(rep.written, vec!["README.md", "data.bin", "docs-link", "docs/new.md", "src/main.rs"]);
    assert!(rep.skipped.is_empty() && rep.conflicts.is_empty(), "{rep:?}");
    assert_eq!(std::fs::read(proj.join("README.md")).expect("read"), b"# demo\nline 2\nline three\n");
    assert_eq!(std::fs::read(proj.join("docs/new.md")).expect("read"), b"new\n");
    assert_eq!(std::fs::read(proj.join("data.bin")).expect("read"), [0u8, 1]);
    assert!(!proj.join("src/old.rs").exists());
    assert_eq!(std::fs::read_link(proj.join("docs-link")).expect("link").to_str(), Some("docs/new.md"));
    let mode = std::fs::metadata(proj.join("src/main.rs")).expect("stat").permissions().mode();
    assert_eq!(mode & 0o777, 0o755, "the exec bit follows the history");
    assert_eq!(fingerprint(&proj.join(".git")), git_before, ".git must be untouched");
    assert_eq!(std::fs::read(proj.join("target/debug/junk")).expect("read"), b"build output\n");
    assert!(proj.join("outside-link").is_symlink() && proj.join("pipe").exists());

    // Again: nothing to do.
    let again = s.sync(&id, SyncOptions::default()).await.expect("resync");
    assert!(again.written.is_empty() && again.deleted.is_empty() && again.from == again.to, "{again:?}");
    assert!(s.changes(&id, &Range::default()).await.expect("changes").files.is_empty());
    assert_eq!(s.changes(&id, &Range { all: true, ..Default::default() }).await.expect("all").files.len(), 6);

    // A host edit of a file the session also changed blocks the sync; --force overrides.
    let out = s.exec(&id, sh("echo inside > README.md && echo more >> docs/new.md")).await.expect("exec");
    assert_eq!(out.output.exit_code, 0);
    std::fs::write(proj.join("README.md"), b"edited on the host\n").expect("host edit");
    std::fs::write(proj.join("docs/unrelated.md"), b"host only\n").expect("host add");
    let err = s.sync(&id, SyncOptions::default()).await.expect_err("conflict");
    assert!(matches!(err, Error::Conflict(_)), "{err}");
    let msg = err.to_string();
    assert!(msg.contains("README.md: changed on the host") && msg.contains("--force"), "{msg}");
    assert!(!msg.contains("docs/new.md"), "{msg}");
    assert_eq!(std::fs::read(proj.join("README.md")).expect("read"), b"edited on the host\n", "refused: untouched");
    assert_eq!(std::fs::read(proj.join("docs/new.md")).expect("read"), b"new\n", "refused: nothing written");
    let dry = s.sync(&id, SyncOptions { dry_run: true, ..Default::default() }).await.expect("dry run");
    assert_eq!(dry.conflicts.len(), 1);
    assert_eq!(dry.conflicts[0].path, "README.md");
    let forced = s.sync(&id, SyncOptions { force: true, ..Default::default() }).await.expect("forced");
    assert_eq!(forced.conflicts.len(), 1);
    assert_eq!(std::fs::read(proj.join("README.md")).expect("read"), b"inside\n");
    assert_eq!(std::fs::read(proj.join("docs/new.md")).expect("read"), b"new\nmore\n");
    assert_eq!(std::fs::read(proj.join("docs/unrelated.md")).expect("read"), b"host only\n");
    assert_eq!(fingerprint(&proj.join(".git")), git_before, ".git must be untouched");

    // A host file deleted and one created where the session adds one are conflicts too.
    s.exec(&id, sh("echo a > added.txt && echo b > run.sh")).await.expect("exec");
    std::fs::write(proj.join("added.txt"), b"host\n").expect("host add");
    std::fs::remove_file(proj.join("run.sh")).expect("host delete");
    let dry = s.sync(&id, SyncOptions { dry_run: true, ..Default::default() }).await.expect("dry run");
    let c: Vec<(&str, &str)> = dry.conflicts.iter().map(|c| (c.path.as_str(), c.reason.as_str())).collect();
    assert_eq!(
        c,
        vec![
            ("added.txt", "created on the host since the last sync"),
            ("run.sh", "deleted on the host since the last sync")
        ]
    );

    // Stop refuses to drop unsynced work, then keeps the history on request.
    let err = s.stop(&id, StopOptions::default()).await.expect_err("unsynced");
    assert!(err.to_string().contains("never synced"), "{err}");
    let st = s.stop(&id, StopOptions { keep_history: true, ..Default::default() }).await.expect("stop");
    assert!(st.history_kept);
    assert!(env.engine.status(&info.workspace_user).await.is_err(), "the workspace is gone");
    let got = s.get(&id).await.expect("get");
    assert_eq!((got.status, got.state), (SessionStatus::Stopped, None));
    assert!(got.unsynced);
    assert!(s.exec(&id, sh("true")).await.is_err());
    assert_eq!(s.changes(&id, &Range::default()).await.expect("changes").files.len(), 2);
    let forced = s.sync(&id, SyncOptions { force: true, ..Default::default() }).await.expect("sync after stop");
    assert_eq!(forced.written, vec!["added.txt", "run.sh"]);
    let st = s.stop(&id, StopOptions::default()).await.expect("remove");
    assert!(!st.history_kept && !st.discarded_changes);
    assert!(matches!(s.get(&id).await, Err(Error::NotFound(_))));
    let lock = env.state().join("locks").join(format!("{}.lock", info.workspace_user));
    assert!(!lock.exists(), "the session user's lock file is gone too");
    assert!(s.list().await.expect("list").is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_flow_dir() {
    flow(BackendKind::Dir, 0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_flow_ns() {
    flow(BackendKind::Ns, 1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_flow_docker() {
    if let Some(why) = docker_unavailable() {
        eprintln!("skipped: no docker daemon answers here ({why})");
        return;
    }
    flow(BackendKind::Docker, 2).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn start_refuses_bad_projects_and_cleans_up() {
    let env = env(BackendKind::Dir, 3).await;
    let s = Sessions::new(&env.engine);
    let missing = s.start(StartOptions { project: env.path("nope"), ..Default::default() }).await;
    assert!(matches!(missing, Err(Error::NotFound(_))), "{missing:?}");
    let state = s.start(StartOptions { project: env.state().to_owned(), ..Default::default() }).await;
    assert!(state.expect_err("state dir").to_string().contains("overlaps"));
    let above = s.start(StartOptions { project: env.tmp.path().to_owned(), ..Default::default() }).await;
    assert!(above.expect_err("parent of the state dir").to_string().contains("overlaps"));
    std::fs::create_dir(env.path("p")).expect("mkdir");
    let bad = s.start(StartOptions { project: env.path("p"), exclude: vec!["a/b".into()], ..Default::default() }).await;
    assert!(matches!(bad, Err(Error::InvalidRequest(_))), "{bad:?}");
    let bad_limits = warren_core::Limits { pids: Some(1), ..Default::default() };
    let bad = s.start(StartOptions { project: env.path("p"), limits: Some(bad_limits), ..Default::default() }).await;
    assert!(matches!(bad, Err(Error::InvalidRequest(_))), "{bad:?}");
    assert!(s.list().await.expect("list").is_empty());
    assert!(env.engine.list().await.expect("workspaces").is_empty(), "nothing left behind");

    // A session with network on and custom limits; an empty project gives an empty base.
    let limits = warren_core::Limits { pids: Some(64), ..Default::default() };
    let info = s
        .start(StartOptions { project: env.path("p"), limits: Some(limits.clone()), ..Default::default() })
        .await
        .expect("start");
    let ws = env.engine.status(&info.workspace_user).await.expect("workspace");
    assert_eq!(ws.limits, limits);
    assert!(!ws.network, "no network by default");
    assert_eq!(s.list().await.expect("list").len(), 1);
    let rep = s.stop(&info.id, StopOptions::default()).await.expect("stop");
    assert!(!rep.history_kept);
    assert!(env.engine.list().await.expect("workspaces").is_empty());

    // Unknown sessions are NotFound everywhere; a record-less directory (a start killed at
    // once) is removed by stop.
    let ghost: warren_code::SessionId = "0123456789ab".parse().expect("id");
    assert!(matches!(s.stop(&ghost, StopOptions::default()).await, Err(Error::NotFound(_))));
    assert!(matches!(s.exec(&ghost, sh("true")).await, Err(Error::NotFound(_))));
    assert!(matches!(s.get(&ghost).await, Err(Error::NotFound(_))));
    let debris = env.state().join("code").join(ghost.as_str());
    std::fs::create_dir(&debris).expect("mkdir");
    assert!(s.list().await.expect("list").is_empty());
    s.stop(&ghost, StopOptions::default()).await.expect("stop the debris");
    assert!(!debris.exists());
}

/// Changes made outside a tracked command get a commit of their own before the next command;
/// `commit` records on request with its message; a streamed exec is recorded by `finish`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outside_changes_manual_commits_and_streamed_exec() {
    let env = env(BackendKind::Dir, 4).await;
    let proj = env.path("p");
    write_tree(&proj, &[("a", b"a\n")]);
    let s = Sessions::new(&env.engine);
    let info = s.start(StartOptions { project: proj, ..Default::default() }).await.expect("start");
    let id = info.id.clone();
    let uid = env.engine.status(&info.workspace_user).await.expect("status").uid;
    let home = env.state().join("workspaces").join(info.workspace_user.as_str());
    let put = |name: &str, data: &[u8]| {
        std::fs::write(home.join(name), data).expect("write");
        std::os::unix::fs::chown(home.join(name), Some(uid), Some(uid)).expect("chown");
    };

    put("bg.txt", b"from a background process\n");
    let out = s.exec(&id, sh("cat bg.txt")).await.expect("exec");
    assert!(!out.commit.changed, "the outside change was recorded before the command");
    let log = s.log(&id, 10).await.expect("log");
    let subjects: Vec<&str> = log.iter().map(|e| e.subject.as_str()).collect();
    assert_eq!(subjects[..2], ["exec: sh -c 'cat bg.txt'", "outside: changes made outside a tracked command"]);
    let range = Range { from: Some(log[2].commit.clone()), to: Some(log[1].commit[..10].to_owned()), all: false };
    let ch = s.changes(&id, &range).await.expect("changes between two commits");
    assert_eq!(ch.files.iter().map(|f| f.path.as_str()).collect::<Vec<_>>(), ["bg.txt"]);
    let bad = s.changes(&id, &Range { from: Some("HEAD~1".into()), ..Default::default() }).await;
    assert!(matches!(bad, Err(Error::InvalidRequest(_))), "{bad:?}");
    let unknown = s.changes(&id, &Range { from: Some("abcdef0".into()), ..Default::default() }).await;
    assert!(matches!(unknown, Err(Error::NotFound(_))), "{unknown:?}");

    put("manual.txt", b"m\n");
    let c = s.commit(&id, Some("checkpoint\x1b[2J")).await.expect("commit");
    assert!(c.changed && c.created);
    let log = s.log(&id, 1).await.expect("log");
    assert_eq!(log[0].subject, "commit: checkpoint [2J", "control characters are dropped");
    let again = s.commit(&id, None).await.expect("commit");
    assert!(!again.changed && again.created);

    let (mut h, pending) = s.exec_stream(&id, sh("echo streamed > s.txt; echo out; exit 5")).await.expect("stream");
    let mut stdout = Vec::new();
    let status = loop {
        match h.events.recv().await.expect("event") {
            warren_core::ExecEvent::Stdout(b) => stdout.extend(b),
            warren_core::ExecEvent::Stderr(_) => {}
            warren_core::ExecEvent::Exit(st) => break st,
        }
    };
    assert_eq!((stdout.as_slice(), status.code), (&b"out\n"[..], 5));
    let c = pending.finish(Some(status), false).await.expect("finish");
    assert!(c.changed);
    let log = s.log(&id, 1).await.expect("log");
    assert!(log[0].subject.starts_with("exec: sh -c 'echo streamed") && log[0].message.contains("exit: 5"), "{log:?}");
    let ch = s.changes(&id, &Range::default()).await.expect("changes");
    assert_eq!(ch.files.iter().map(|f| f.path.as_str()).collect::<Vec<_>>(), ["bg.txt", "manual.txt", "s.txt"]);
    s.stop(&id, StopOptions { discard: true, ..Default::default() }).await.expect("stop");
}

/// A symlink or a file that became a directory, and a directory that became a symlink, sync
/// without a false conflict, and nothing is written through the symlink that was replaced. A
/// host symlink the host itself changed is still a conflict, and even forced it is removed,
/// never written through.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn entries_that_change_kind_sync_without_false_conflicts() {
    let env = env(BackendKind::Dir, 5).await;
    let proj = env.path("p");
    write_tree(&proj, &[("sub/kept", b"sub\n"), ("f", b"file\n"), ("e/x", b"e\n")]);
    std::os::unix::fs::symlink("sub", proj.join("d")).expect("symlink");
    std::os::unix::fs::symlink("sub", proj.join("l")).expect("symlink");
    let outside = env.path("outside");
    write_tree(&outside, &[("kept", b"outside\n")]);
    let outside_before = fingerprint(&outside);
    let s = Sessions::new(&env.engine);
    let info = s.start(StartOptions { project: proj.clone(), ..Default::default() }).await.expect("start");
    assert_eq!((info.copy.files, info.copy.symlinks), (3, 2), "{:?}", info.copy);
    let id = info.id.clone();
    let script = "rm d && mkdir d && echo y > d/x && rm f && mkdir f && echo z > f/x && rm -r e && ln -s sub e";
    let out = s.exec(&id, sh(script)).await.expect("exec");
    assert_eq!(out.output.exit_code, 0, "{}", String::from_utf8_lossy(&out.output.stderr));

    let dry = s.sync(&id, SyncOptions { dry_run: true, ..Default::default() }).await.expect("dry run");
    assert!(dry.conflicts.is_empty(), "{:?}", dry.conflicts);
    let rep = s.sync(&id, SyncOptions::default()).await.expect("no false conflict");
    assert!(rep.conflicts.is_empty() && rep.skipped.is_empty(), "{rep:?}");
    assert_eq!(rep.deleted, ["d", "e/x", "f"]);
    assert_eq!(rep.written, ["d/x", "e", "f/x"]);
    assert!(std::fs::symlink_metadata(proj.join("d")).expect("lstat").is_dir(), "d is a directory now");
    assert_eq!(std::fs::read(proj.join("d/x")).expect("read"), b"y\n");
    assert!(!proj.join("sub/x").exists(), "nothing was written through the old link");
    assert_eq!(std::fs::read(proj.join("f/x")).expect("read"), b"z\n");
    assert_eq!(std::fs::read_link(proj.join("e")).expect("e is a link").to_str(), Some("sub"));
    assert_eq!(std::fs::read_dir(proj.join("sub")).expect("read_dir").count(), 1, "sub holds only kept");

    // The host retargets a link the sandbox turns into a directory: a conflict (the host changed
    // it), not "a parent is a symlink" for what goes beneath it; forced, the link is removed and
    // the directory made, nothing written through the link.
    s.exec(&id, sh("rm l && mkdir l && echo w > l/x")).await.expect("exec");
    std::fs::remove_file(proj.join("l")).expect("rm");
    std::os::unix::fs::symlink(&outside, proj.join("l")).expect("symlink");
    let err = s.sync(&id, SyncOptions::default()).await.expect_err("the host changed l");
    let msg = err.to_string();
    assert!(msg.contains("l: the symlink changed on the host"), "{msg}");
    assert!(!msg.contains("l/x"), "{msg}");
    let rep = s.sync(&id, SyncOptions { force: true, ..Default::default() }).await.expect("forced");
    assert_eq!((rep.deleted.as_slice(), rep.written.as_slice()), (&["l".to_owned()][..], &["l/x".to_owned()][..]));
    assert_eq!(fingerprint(&outside), outside_before, "nothing written through the host's link");
    assert!(std::fs::symlink_metadata(proj.join("l")).expect("lstat").is_dir());
    assert_eq!(std::fs::read(proj.join("l/x")).expect("read"), b"w\n");
    s.stop(&id, StopOptions::default()).await.expect("stop");
}

/// The peak resident set size of this process (`VmHWM`), in bytes.
fn peak_rss() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("read /proc/self/status");
    let kb = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .expect("VmHWM in /proc/self/status");
    kb * 1024
}

/// Resets the peak resident set size to the current one (`clear_refs` 5, Linux 4.0+).
fn reset_peak_rss() -> u64 {
    std::fs::write("/proc/self/clear_refs", "5").expect("reset the peak RSS");
    peak_rss()
}

/// Syncing large files never holds their content: four sparse files of 99 MiB (nothing on the
/// disk quota, nothing in the history once compressed) are compared and written streamed, with
/// the process's peak RSS far below one file's size; the bytes one sync writes are capped, and
/// more is refused before anything is written; written files stay sparse.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sync_streams_large_files_and_caps_the_bytes_written() {
    const MIB: u64 = 1 << 20;
    const SIZE: u64 = 99 * MIB;
    // Far below one file: holding any one of them would cross it.
    const BOUND: u64 = 48 * MIB;
    let env = env(BackendKind::Dir, 6).await;
    let proj = env.path("p");
    write_tree(&proj, &[("a", b"a\n")]);
    let s = Sessions::new(&env.engine);
    let info = s.start(StartOptions { project: proj.clone(), ..Default::default() }).await.expect("start");
    let id = info.id.clone();
    // Each file: a hole, then its number as its last byte.
    let make = format!(
        "for i in 1 2 3 4; do truncate -s {} big$i && printf $i | dd of=big$i bs=1 seek={} conv=notrunc \
         2>/dev/null; done",
        SIZE - 1,
        SIZE - 1
    );
    let out = s.exec(&id, sh(&make)).await.expect("exec");
    assert_eq!(out.output.exit_code, 0, "{}", String::from_utf8_lossy(&out.output.stderr));
    assert_eq!(out.commit.skipped_count, 0, "{:?}", out.commit.skipped);

    let base = reset_peak_rss();
    let dry = s.sync(&id, SyncOptions { dry_run: true, ..Default::default() }).await.expect("dry run");
    assert_eq!(dry.written.len(), 4);
    let grew = peak_rss().saturating_sub(base);
    assert!(grew < BOUND, "a dry run of 4 x 99 MiB raised the peak RSS by {} MiB", grew / MIB);

    let err = s.sync(&id, SyncOptions { max_bytes: Some(300 * MIB), ..Default::default() }).await.expect_err("cap");
    assert!(matches!(err, Error::InvalidRequest(_)), "{err}");
    let msg = err.to_string();
    assert!(msg.contains(&format!("{} bytes", 4 * SIZE)) && msg.contains("--max-bytes"), "{msg}");
    assert!(!proj.join("big1").exists(), "a refused sync wrote nothing");

    let base = reset_peak_rss();
    let rep = s.sync(&id, SyncOptions::default()).await.expect("sync");
    assert_eq!(rep.written.len(), 4, "{rep:?}");
    let grew = peak_rss().saturating_sub(base);
    assert!(grew < BOUND, "writing 4 x 99 MiB raised the peak RSS by {} MiB", grew / MIB);
    use std::os::unix::fs::MetadataExt;
    for i in 1..=4u8 {
        let path = proj.join(format!("big{i}"));
        let md = std::fs::metadata(&path).expect("stat");
        assert_eq!(md.len(), SIZE);
        assert!(md.blocks() * 512 < MIB, "big{i} stayed sparse: {} blocks", md.blocks());
        let data = std::fs::read(&path).expect("read");
        assert_eq!(data[(SIZE - 1) as usize], b'0' + i);
        let zeros = [0u8; 1 << 16];
        assert!(data[..(SIZE - 1) as usize].chunks(zeros.len()).all(|c| c == &zeros[..c.len()]));
    }

    // Conflicts among large files of the same size are found by streaming both.
    let out = s.exec(&id, sh(&format!("printf z | dd of=big1 bs=1 seek={} conv=notrunc 2>/dev/null; printf z | dd of=big2 bs=1 seek={} conv=notrunc 2>/dev/null", SIZE - 1, SIZE - 1))).await.expect("exec");
    assert_eq!(out.output.exit_code, 0);
    {
        use std::io::{Seek, Write};
        let mut f = std::fs::OpenOptions::new().write(true).open(proj.join("big2")).expect("open");
        f.seek(std::io::SeekFrom::Start(10 * MIB)).expect("seek");
        f.write_all(b"host edit").expect("write");
    }
    let base = reset_peak_rss();
    let dry = s.sync(&id, SyncOptions { dry_run: true, ..Default::default() }).await.expect("dry run");
    let c: Vec<(&str, &str)> = dry.conflicts.iter().map(|c| (c.path.as_str(), c.reason.as_str())).collect();
    assert_eq!(c, [("big2", "changed on the host since the last sync")]);
    let grew = peak_rss().saturating_sub(base);
    assert!(grew < BOUND, "comparing 2 x 99 MiB raised the peak RSS by {} MiB", grew / MIB);
    s.stop(&id, StopOptions { discard: true, ..Default::default() }).await.expect("stop");
}

/// The host's local IPv4 addresses (from `/proc/net/fib_trie`: `/32 host LOCAL` entries).
fn host_addresses() -> Vec<String> {
    let trie = std::fs::read_to_string("/proc/net/fib_trie").expect("read /proc/net/fib_trie");
    let mut last = None;
    let mut addrs = Vec::new();
    for line in trie.lines() {
        let l = line.trim();
        if let Some(ip) = l.strip_prefix("|-- ") {
            last = Some(ip.to_owned());
        } else if l.contains("/32 host LOCAL") {
            if let Some(ip) = last.clone() {
                if !addrs.contains(&ip) {
                    addrs.push(ip);
                }
            }
        }
    }
    addrs
}

/// Connects from inside the session to `addr:port`, printing `connected` or `failed`.
async fn connect_from(s: &Sessions<'_>, id: &warren_code::SessionId, addr: &str, port: u16) -> String {
    let script = format!("if timeout 5 bash -c 'echo hi > /dev/tcp/{addr}/{port}' 2>/dev/null; then echo connected; else echo failed; fi");
    let out = s.exec(id, sh(&script)).await.expect("exec");
    String::from_utf8_lossy(&out.output.stdout).trim().to_owned()
}

/// A session on ns has no network unless asked for: only loopback inside, and a listener on
/// the host is unreachable on every host address (loopback included). The control: a session
/// with network reaches the same listener.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ns_sessions_have_no_network_by_default() {
    let env = env(BackendKind::Ns, 7).await;
    let proj = env.path("p");
    write_tree(&proj, &[("a", b"a\n")]);
    let listener = std::net::TcpListener::bind("0.0.0.0:0").expect("listen");
    listener.set_nonblocking(true).expect("nonblocking");
    let port = listener.local_addr().expect("addr").port();
    let addrs = host_addresses();
    assert!(addrs.iter().any(|a| a == "127.0.0.1"), "{addrs:?}");
    assert!(addrs.iter().any(|a| !a.starts_with("127.")), "a non-loopback host address to try: {addrs:?}");
    let s = Sessions::new(&env.engine);

    let off = s.start(StartOptions { project: proj.clone(), ..Default::default() }).await.expect("start");
    assert!(!env.engine.status(&off.workspace_user).await.expect("status").network);
    let out = s.exec(&off.id, sh("tail -n +3 /proc/net/dev | cut -d: -f1 | tr -d ' '")).await.expect("exec");
    assert_eq!(String::from_utf8_lossy(&out.output.stdout), "lo\n", "only loopback inside");
    for a in &addrs {
        assert_eq!(
            connect_from(&s, &off.id, a, port).await,
            "failed",
            "{a}:{port} reached from a session without network"
        );
    }
    assert!(listener.accept().is_err_and(|e| e.kind() == std::io::ErrorKind::WouldBlock), "no connection arrived");

    // The control: with network, the same connections arrive.
    let on = s.start(StartOptions { project: proj.clone(), network: true, ..Default::default() }).await.expect("start");
    let out = s.exec(&on.id, sh("tail -n +3 /proc/net/dev | cut -d: -f1 | tr -d ' '")).await.expect("exec");
    assert_ne!(String::from_utf8_lossy(&out.output.stdout), "lo\n", "the host's interfaces with network");
    for a in &addrs {
        assert_eq!(connect_from(&s, &on.id, a, port).await, "connected", "{a}:{port} with network");
        let mut got = false;
        for _ in 0..100 {
            if listener.accept().is_ok() {
                got = true;
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        assert!(got, "the connection to {a} arrived");
    }
    for id in [&off.id, &on.id] {
        s.stop(id, StopOptions { discard: true, ..Default::default() }).await.expect("stop");
    }
}
