//! `warren snapshot ...` with the real binary, in temporary state directories: the issue's
//! "done when" flow, export/import, and `kill -9` of a snapshot in progress.
//!
//! Each test has its own state directory and uid range (set through a `--config` file).

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, SystemTime};

use common::{show, Warren};

/// Uids of this test file: 2_850_000 + 1000 per test.
const UID_BASE: u32 = 2_850_000;

/// `warren --backend BACKEND ...` on test `slot`'s state directory and uids, keeping 5 snapshots.
fn warren(slot: u32, backend: &'static str) -> Warren {
    Warren::new(UID_BASE + slot * 1000, "\n[snapshots]\nkeep = 5\n").on(backend)
}

fn ns_available() -> bool {
    match warren_backend_ns::NsBackend::probe() {
        Ok(()) => true,
        Err(why) => {
            eprintln!("SKIPPED on ns: the ns backend cannot run here: {why}");
            false
        }
    }
}

/// The "done when": `warren snapshot create u_123 snap_001`, change files,
/// `warren snapshot restore u_123 snap_001`, files are back; list, export/import, pin, delete.
fn done_when(backend: &'static str, slot: u32) {
    let w = warren(slot, backend);
    w.ok(&["workspace", "create", "u_123"]);
    w.ok(&["exec", "u_123", "--", "sh", "-c", "mkdir -p src && echo 'print(1)' > src/app.py && echo v1 > notes.txt"]);

    let out = w.ok(&["snapshot", "create", "u_123", "snap_001"]);
    assert!(out.starts_with("snapshot snap_001 of u_123: "), "{out}");
    if backend == "dir" {
        assert!(out.contains("stopped for the snapshot and started again"), "{out}");
    } else {
        assert!(out.contains("kept running"), "{out}");
    }
    assert_eq!(w.json(&["workspace", "status", "u_123"])["state"], "running");

    w.ok(&["exec", "u_123", "--", "sh", "-c", "echo v2 > notes.txt; rm -r src; echo junk > new.txt"]);
    assert_eq!(w.ok(&["cat", "u_123", "notes.txt"]), "v2\n");

    let out = w.ok(&["snapshot", "restore", "u_123", "snap_001"]);
    assert!(out.starts_with("restored snap_001 into the workspace of u_123"), "{out}");
    assert!(out.contains("undo with: warren snapshot restore u_123 snap_"), "{out}");
    assert_eq!(w.ok(&["cat", "u_123", "notes.txt"]), "v1\n", "files are back");
    assert_eq!(w.ok(&["exec", "u_123", "--", "cat", "src/app.py"]), "print(1)\n");
    assert!(!w.run(&["cat", "u_123", "new.txt"]).status.success(), "files made after the snapshot are gone");

    let table = w.ok(&["snapshot", "list", "u_123"]);
    let lines: Vec<&str> = table.lines().collect();
    assert!(lines[0].starts_with("ID ") && lines[0].contains("TRIGGER") && lines[0].contains("PINNED"), "{table}");
    assert_eq!(lines.len(), 3, "{table}");
    assert!(lines[1].contains("pre_restore"), "newest first: {table}");
    assert!(lines[2].starts_with("snap_001 ") && lines[2].contains("manual"), "{table}");
    let list = w.json(&["snapshot", "list", "u_123"]);
    let list = list.as_array().expect("array");
    assert_eq!(list[1]["id"], "snap_001");
    assert_eq!(list[1]["file_count"], 2);
    assert_eq!(list[0]["trigger"], "pre_restore");
    let pre = list[0]["id"].as_str().expect("id").to_owned();

    // Undo the restore.
    w.ok(&["snapshot", "restore", "u_123", &pre]);
    assert_eq!(w.ok(&["cat", "u_123", "notes.txt"]), "v2\n");

    // Export, import under another user, restore there.
    let file = w.dir.join("u_123.tar.zst");
    let file_s = file.to_str().expect("utf-8 path");
    let out = w.ok(&["snapshot", "export", "u_123", "snap_001", file_s]);
    assert!(out.starts_with("exported snap_001 of u_123 to "), "{out}");
    let plain = Command::new("sh")
        .arg("-c")
        .arg(format!("zstd -dc '{file_s}' | tar -tf - | sort"))
        .output()
        .expect("zstd | tar");
    if plain.status.success() {
        let names = String::from_utf8_lossy(&plain.stdout);
        assert!(names.contains("notes.txt") && names.contains("src/app.py"), "{names}");
    }
    assert!(!w.run(&["snapshot", "export", "u_123", "snap_001", file_s]).status.success(), "no overwrite");
    w.ok(&["workspace", "create", "u_456"]);
    let out = w.ok(&["snapshot", "import", "u_456", file_s, "moved"]);
    assert!(out.contains("as snapshot moved of u_456"), "{out}");
    w.ok(&["snapshot", "restore", "u_456", "moved"]);
    assert_eq!(w.ok(&["cat", "u_456", "notes.txt"]), "v1\n");
    assert_eq!(w.ok(&["cat", "u_456", "src/app.py"]), "print(1)\n");

    // Pin, unpin, delete, and the errors people will meet.
    assert_eq!(w.json(&["snapshot", "pin", "u_123", "snap_001"])["pinned"], true);
    assert!(w.ok(&["snapshot", "list", "u_123"]).lines().any(|l| l.starts_with("snap_001 ") && l.ends_with("yes")));
    assert_eq!(w.ok(&["snapshot", "unpin", "u_123", "snap_001"]), "snapshot snap_001 of u_123 is not pinned\n");
    assert_eq!(w.ok(&["snapshot", "delete", "u_123", "snap_001"]), "deleted snapshot snap_001 of u_123\n");
    let err = w.run(&["snapshot", "restore", "u_123", "snap_001"]);
    assert_eq!(err.status.code(), Some(1), "{}", show(&err));
    assert!(
        String::from_utf8_lossy(&err.stderr).contains("snapshot snap_001 of user u_123 not found"),
        "{}",
        show(&err)
    );
    let err = w.run(&["snapshot", "create", "u_123", "../etc"]);
    assert!(String::from_utf8_lossy(&err.stderr).contains("invalid snapshot id"), "{}", show(&err));
    let err = w.run(&["snapshot", "create", "u_nobody"]);
    assert!(String::from_utf8_lossy(&err.stderr).contains("workspace of user u_nobody not found"), "{}", show(&err));
    let kinds = w.json(&["events", "u_123"]);
    let kinds: Vec<&str> = kinds.as_array().expect("events").iter().filter_map(|e| e["kind"].as_str()).collect();
    for k in ["snapshot_create", "snapshot_restore", "snapshot_export", "snapshot_pin", "snapshot_delete"] {
        assert!(kinds.contains(&k), "{k} in {kinds:?}");
    }
    w.ok(&["workspace", "destroy", "u_123"]);
    w.ok(&["workspace", "destroy", "u_456"]);
}

#[test]
fn done_when_flow_on_dir() {
    done_when("dir", 0);
}

#[test]
fn done_when_flow_on_ns() {
    if ns_available() {
        done_when("ns", 1);
    }
}

fn wait_until(secs: u64, mut cond: impl FnMut() -> bool) -> bool {
    let end = SystemTime::now() + Duration::from_secs(secs);
    while SystemTime::now() < end {
        if cond() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    cond()
}

/// The archive being written: `.snap_k.tar.zst.tmp-*` with data in it.
fn archive_in_progress(dir: &Path) -> bool {
    std::fs::read_dir(dir).is_ok_and(|rd| {
        rd.flatten().any(|e| {
            e.file_name().to_string_lossy().starts_with(".snap_k.tar.zst.tmp-")
                && e.metadata().is_ok_and(|m| m.len() > 0)
        })
    })
}

fn freezer_state(ws: &str) -> Option<String> {
    std::fs::read_to_string(format!("/sys/fs/cgroup/freezer/warren/{ws}/freezer.state"))
        .or_else(|_| std::fs::read_to_string(format!("/sys/fs/cgroup/warren/{ws}/cgroup.freeze")))
        .ok()
        .map(|s| s.trim().to_owned())
}

/// `kill -9` of `warren snapshot create` while it archives a big file: no snapshot is listed,
/// and the next warren command finds the workspace running again (thawed on ns, restarted on
/// dir, where it was stopped for the archive).
fn kill_during_create(backend: &'static str, slot: u32) {
    let w = warren(slot, backend);
    let ws = w.json(&["workspace", "create", "u_kill"])["workspace_id"].as_str().expect("id").to_owned();
    w.ok(&["exec", "u_kill", "--", "sh", "-c", "head -c 268435456 /dev/urandom > big && echo small > small"]);
    let mut child = w
        .cmd(&["snapshot", "create", "u_kill", "snap_k"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn snapshot create");
    let dir = w.state.join("snapshots/u_kill");
    assert!(wait_until(120, || archive_in_progress(&dir)), "the archive never started");
    if backend == "ns" {
        assert_eq!(freezer_state(&ws).as_deref(), Some("FROZEN"), "frozen while archiving");
    } else {
        assert_eq!(w.json(&["workspace", "status", "u_kill"])["state"], "stopped", "stopped while archiving");
    }
    child.kill().expect("kill -9");
    let status = child.wait().expect("wait");
    assert_eq!(std::os::unix::process::ExitStatusExt::signal(&status), Some(9), "killed, not finished");

    assert_eq!(w.json(&["snapshot", "list", "u_kill"]), serde_json::json!([]), "no partial snapshot listed");
    assert!(!dir.join("snap_k.json").exists());
    assert_eq!(w.json(&["workspace", "status", "u_kill"])["state"], "running");
    if backend == "ns" {
        assert_eq!(freezer_state(&ws).as_deref(), Some("THAWED"), "thawed by the next warren");
    }
    assert_eq!(w.ok(&["exec", "u_kill", "--", "cat", "small"]), "small\n");
    let events = w.json(&["events", "u_kill"]);
    let rec = events.as_array().expect("events").iter().find(|e| e["kind"] == "snapshot_recovered").cloned();
    let rec = rec.expect("a snapshot_recovered event");
    assert_eq!(rec["detail"]["op"], "snapshot_create");
    // A snapshot under the same name works now.
    w.ok(&["snapshot", "create", "u_kill", "snap_k"]);
    assert_eq!(w.json(&["snapshot", "list", "u_kill"]).as_array().map(Vec::len), Some(1));
    w.ok(&["workspace", "destroy", "u_kill"]);
}

#[test]
fn kill_9_during_create_on_dir() {
    kill_during_create("dir", 2);
}

#[test]
fn kill_9_during_create_on_ns() {
    if ns_available() {
        kill_during_create("ns", 3);
    }
}
