//! `kill -9` during create and during restore. The child is this test binary re-executed with
//! an environment variable naming its job; without the variable the child "tests" do nothing.

mod common;

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::*;
use warren_snapshot::{CreateOptions, ExtractOptions, Snapshots, Trigger};

const CHILD_ENV: &str = "WARREN_SNAPSHOT_TEST_CHILD";

fn spawn_child(test: &str, job: &str) -> Child {
    Command::new(std::env::current_exe().expect("test binary"))
        .args(["--exact", test, "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, job)
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn child")
}

fn kill9(mut child: Child) {
    child.kill().expect("SIGKILL");
    let status = child.wait().expect("wait");
    assert_eq!(status.signal(), Some(9), "the child was killed by SIGKILL (it must not finish on its own)");
}

/// Child: creates snapshots `s0`, `s1`, ... of `{ws}` into `{state}` until killed.
#[test]
fn child_create_loop() {
    let Ok(job) = std::env::var(CHILD_ENV) else { return };
    let Some(rest) = job.strip_prefix("create:") else { return };
    let (state, ws) = rest.split_once('|').expect("state|ws");
    let snaps = Snapshots::local(state);
    let u = user("u_1");
    for i in 0.. {
        let opts = CreateOptions { trigger: Trigger::Idle, backend: "dir".into(), ..CreateOptions::default() };
        snaps.create(&u, &snap(&format!("s{i}")), Path::new(ws), &opts).expect("child create");
    }
}

#[test]
fn kill_9_during_create_leaves_no_partial_snapshot() {
    let env = Env::new();
    let ws = env.ws("u_1");
    // Big enough that one create takes a while: 48 MiB that does not compress, 2,000 files.
    fs::create_dir_all(ws.join("big")).expect("mkdir");
    for i in 0..6 {
        write_file(&ws.join(format!("big/blob{i}")), &noise(8 << 20, i));
    }
    small_files_tree(&ws, 2000, "kill");
    let dir = env.state.join("snapshots/u_1");
    let u = user("u_1");
    let snaps = Snapshots::local(&env.state);
    for round in 0..3 {
        let child = spawn_child("child_create_loop", &format!("create:{}|{}", env.state.display(), ws.display()));
        // Wait until at least one snapshot is complete and the next archive is half-written.
        let complete_before = snaps.list(&u).expect("list").len();
        let mid_write = wait_until(120, || {
            let done = snaps.list(&u).map(|l| l.len()).unwrap_or(0);
            done > complete_before
                && fs::read_dir(&dir).into_iter().flatten().flatten().any(|e| {
                    let n = e.file_name().into_string().unwrap_or_default();
                    n.starts_with('.')
                        && n.contains(".tar.zst.tmp-")
                        && e.metadata().map(|m| m.len() > (1 << 20)).unwrap_or(false)
                })
        });
        assert!(mid_write, "round {round}: the child never got mid-way through a create");
        kill9(child);

        // Every listed snapshot is whole: its archive matches its manifest and restores.
        let listed = snaps.list(&u).expect("list after kill");
        assert!(!listed.is_empty());
        for m in &listed {
            snaps
                .verify(&u, &m.id)
                .unwrap_or_else(|e| panic!("round {round}: listed snapshot {} is partial: {e}", m.id));
        }
        // What is not a listed snapshot is debris (the half-written archive, maybe a finished
        // archive whose manifest was not written yet): the orphan cleanup removes exactly that.
        let expected: Vec<String> = {
            let mut v: Vec<String> =
                listed.iter().flat_map(|m| [format!("{}.json", m.id), format!("{}.tar.zst", m.id)]).collect();
            v.sort();
            v
        };
        let debris: Vec<String> = names(&dir).into_iter().filter(|n| !expected.contains(n)).collect();
        assert!(!debris.is_empty(), "round {round}: the half-written archive is there");
        let removed = snaps.cleanup_orphans(Duration::ZERO).expect("cleanup");
        assert_eq!(removed, debris.len(), "round {round}: debris {debris:?}");
        assert_eq!(names(&dir), expected, "round {round}: only complete snapshots remain");
        // Start the next round with an empty catalogue so the child reuses s0, s1, ...
        for m in listed {
            snaps.delete(&u, &m.id).expect("delete");
        }
    }
    // One of the complete snapshots restores to the workspace's exact content.
    let child = spawn_child("child_create_loop", &format!("create:{}|{}", env.state.display(), ws.display()));
    assert!(wait_until(120, || snaps.list(&u).map(|l| !l.is_empty()).unwrap_or(false)));
    kill9(child);
    let m = snaps.list(&u).expect("list").pop().expect("one");
    let before = tree(&ws);
    let ws2 = env.ws("u_check");
    snaps.restore(&u, &m.id, &ws2, &ExtractOptions::default()).expect("restore");
    assert_eq!(tree(&ws2), before);
}

fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> =
        fs::read_dir(dir).expect("ls").map(|e| e.expect("entry").file_name().into_string().expect("utf8")).collect();
    v.sort();
    v
}

/// Child: restores `a`, `b`, `a`, ... into `{ws}` until killed.
#[test]
fn child_restore_loop() {
    let Ok(job) = std::env::var(CHILD_ENV) else { return };
    let Some(rest) = job.strip_prefix("restore:") else { return };
    let (state, ws) = rest.split_once('|').expect("state|ws");
    let snaps = Snapshots::local(state);
    let u = user("u_1");
    // No syncfs: on a busy disk it takes seconds, and atomicity (what this test is about)
    // does not depend on it; this way the kills land in every phase of a restore.
    let opts = ExtractOptions { sync: false, ..ExtractOptions::default() };
    for i in 0u64.. {
        let id = if i % 2 == 0 { "b" } else { "a" };
        snaps.restore(&u, &snap(id), Path::new(ws), &opts).expect("child restore");
    }
}

fn build(dir: &Path, tag: &str) -> BTreeMap<PathBuf, Node> {
    fs::create_dir_all(dir).expect("mkdir");
    small_files_tree(dir, 1500, tag);
    write_file(&dir.join("shared-name.txt"), format!("the {tag} version").as_bytes());
    fs::create_dir_all(dir.join(format!("only-in-{tag}"))).expect("mkdir");
    write_file(&dir.join(format!("only-in-{tag}/blob")), &noise(3 << 20, tag.len() as u64));
    tree(dir)
}

#[test]
fn kill_9_during_restore_leaves_the_old_or_the_new_tree() {
    let env = Env::new();
    let u = user("u_1");
    let snaps = Snapshots::local(&env.state);
    let src = env.dir.path().join("src");
    let tree_a = build(&src.join("a"), "a");
    let tree_b = build(&src.join("b"), "b");
    let opts = CreateOptions::default();
    snaps.create(&u, &snap("a"), &src.join("a"), &opts).expect("create a");
    snaps.create(&u, &snap("b"), &src.join("b"), &opts).expect("create b");
    let ws = env.ws("u_1");
    snaps.restore(&u, &snap("a"), &ws, &ExtractOptions::default()).expect("initial restore");
    let strip = |t: BTreeMap<PathBuf, Node>| without_dir_mtimes(t);
    let (a, b) = (strip(tree_a), strip(tree_b));
    assert_eq!(strip(tree(&ws)), a);

    let mut seen_a = 0;
    let mut seen_b = 0;
    for round in 0..8u64 {
        let child = spawn_child("child_restore_loop", &format!("restore:{}|{}", env.state.display(), ws.display()));
        // A pseudo-random moment within the first few restores (one takes 0.1 to 1.5 s here):
        // somewhere in extraction, the exchange, or deleting the old tree.
        let r = noise(8, round + 1);
        let delay = 20 + u64::from(u16::from_le_bytes([r[0], r[1]])) % 3000;
        std::thread::sleep(Duration::from_millis(delay));
        kill9(child);
        let now = strip(tree(&ws));
        if now == a {
            seen_a += 1;
        } else if now == b {
            seen_b += 1;
        } else {
            let extra: Vec<_> = now.keys().filter(|k| !a.contains_key(*k) && !b.contains_key(*k)).take(5).collect();
            panic!(
                "round {round}: the workspace is neither tree a nor tree b ({} entries; stray: {extra:?})",
                now.len()
            );
        }
        // Debris is cleaned by the recovery rule and never touches the workspace.
        warren_snapshot::recover(&ws).expect("recover");
        let left: Vec<String> = names(&env.workspaces);
        assert_eq!(left, vec!["u_1".to_owned()], "round {round}: debris left after recover");
        assert!(strip(tree(&ws)) == a || strip(tree(&ws)) == b);
    }
    eprintln!("kill -9 during restore: workspace was tree a {seen_a} times, tree b {seen_b} times");
    // The workspace still restores normally afterwards.
    snaps.restore(&u, &snap("b"), &ws, &ExtractOptions::default()).expect("restore after kills");
    assert_eq!(strip(tree(&ws)), b);
}
