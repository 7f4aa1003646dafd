//! The real `warren` binary on the dir backend in temporary state directories.
//!
//! Each test has its own state directory and uid range (set through a `--config` file), because
//! the dir backend's `stop` kills every process of a workspace's uid.

mod common;

use std::io::Write;
use std::process::{Command, Stdio};

use common::{show, Warren};

/// Uids of this test file: 2_400_000 + 1000 per test.
const UID_BASE: u32 = 2_400_000;

/// `warren --backend dir ...` on test `slot`'s state directory and uids.
fn warren(slot: u32) -> Warren {
    Warren::new(UID_BASE + slot * 1000, "").on("dir")
}

#[test]
fn seed_flow_create_exec_and_files_survive_stop_start() {
    let w = warren(0);
    let created = w.ok(&["workspace", "create", "u_123"]);
    assert!(created.starts_with("created workspace ws_"), "{created}");
    let status = w.json(&["workspace", "status", "u_123"]);
    assert_eq!(status["state"], "stopped");
    assert_eq!(status["backend"], "dir");
    let uid = status["uid"].as_u64().expect("uid");
    assert!((u64::from(UID_BASE)..u64::from(UID_BASE) + 1000).contains(&uid), "{uid}");

    // exec starts the stopped workspace.
    let out = w.ok(&["exec", "u_123", "--", "sh", "-c", "echo hi > f; id"]);
    assert!(out.starts_with(&format!("uid={uid}")), "{out}");
    assert_eq!(w.json(&["workspace", "status", "u_123"])["state"], "running");

    assert_eq!(w.ok(&["workspace", "stop", "u_123"]), "u_123: stopped\n");
    assert_eq!(w.ok(&["cat", "u_123", "f"]), "hi\n", "files are readable while stopped");
    assert_eq!(w.ok(&["workspace", "start", "u_123"]), "u_123: running\n");
    assert_eq!(w.ok(&["exec", "u_123", "--", "cat", "f"]), "hi\n");

    let list = w.json(&["workspace", "list"]);
    assert_eq!(list.as_array().map(Vec::len), Some(1));
    assert_eq!(list[0]["user"], "u_123");
    let table = w.ok(&["workspace", "list"]);
    assert!(table.lines().nth(1).is_some_and(|l| l.starts_with("u_123 ") && l.contains("running")), "{table}");

    // The same uid after destroy and create.
    assert_eq!(w.ok(&["workspace", "destroy", "u_123"]), "destroyed the workspace of u_123\n");
    let again = w.json(&["workspace", "create", "u_123"]);
    assert_eq!(again["uid"].as_u64(), Some(uid));
    assert_ne!(again["workspace_id"], status["workspace_id"]);
    let err = w.run(&["cat", "u_123", "f"]);
    assert_eq!(err.status.code(), Some(1), "{}", show(&err));
    w.ok(&["workspace", "destroy", "u_123"]);
}

#[test]
fn exit_codes_streams_and_stdin() {
    let w = warren(1);
    w.ok(&["workspace", "create", "u_exit", "--memory", "256M", "--cpus", "0.5", "--pids", "64"]);
    let limits = &w.json(&["workspace", "status", "u_exit"])["limits"];
    assert_eq!((limits["memory_bytes"].as_u64(), limits["cpu_millis"].as_u64()), (Some(256 << 20), Some(500)));
    assert_eq!(limits["pids"].as_u64(), Some(64));

    let out = w.run(&["exec", "u_exit", "--", "sh", "-c", "echo out; echo err >&2; exit 42"]);
    assert_eq!(out.status.code(), Some(42), "{}", show(&out));
    assert_eq!(out.stdout, b"out\n");
    assert_eq!(out.stderr, b"err\n");

    let out = w.run(&["exec", "u_exit", "--", "sh", "-c", "kill -9 $$"]);
    assert_eq!(out.status.code(), Some(128 + 9), "killed by a signal: {}", show(&out));

    let out = w.run(&["exec", "u_exit", "--timeout", "1s", "--", "sleep", "600"]);
    assert_eq!(out.status.code(), Some(124), "{}", show(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("timed out"), "{}", show(&out));

    let out = w.with_stdin(&["exec", "u_exit", "--", "sh", "-c", "tr a-z A-Z; echo $GREETING; pwd"], b"piped in\n");
    assert!(out.status.success(), "{}", show(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.starts_with("PIPED IN\n\n"), "{stdout}");

    w.ok(&["exec", "u_exit", "--", "mkdir", "sub"]);
    let out = w.ok(&["exec", "u_exit", "--env", "GREETING=hello", "--cwd", "sub", "--", "sh", "-c", "echo $GREETING"]);
    assert_eq!(out, "hello\n");

    let out = w.run(&["--json", "exec", "u_exit", "--", "sh", "-c", "echo o; echo e >&2; exit 3"]);
    assert_eq!(out.status.code(), Some(3), "{}", show(&out));
    let j: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(
        (j["exit_code"].as_i64(), j["stdout"].as_str(), j["stderr"].as_str()),
        (Some(3), Some("o\n"), Some("e\n"))
    );
    w.ok(&["workspace", "destroy", "u_exit"]);
}

#[test]
fn files_put_ls_cat_rm() {
    let w = warren(2);
    w.ok(&["workspace", "create", "u_files"]);
    let out = w.with_stdin(&["put", "u_files", "dir/notes.txt", "--mode", "600"], b"some notes\n");
    assert!(out.status.success(), "{}", show(&out));
    let local = w.dir.join("local.sh");
    std::fs::write(&local, "#!/bin/sh\necho run\n").expect("write local file");
    w.ok(&["put", "u_files", "run.sh", "--from", local.to_str().expect("utf-8 path"), "--mode", "755"]);

    assert_eq!(w.ok(&["cat", "u_files", "dir/notes.txt"]), "some notes\n");
    let ls = w.ok(&["ls", "u_files"]);
    assert!(ls.lines().any(|l| l.starts_with("d") && l.ends_with(" dir/")), "{ls}");
    assert!(ls.lines().any(|l| l.starts_with("-755") && l.ends_with(" run.sh")), "{ls}");
    let entries = w.json(&["ls", "u_files", "dir"]);
    assert_eq!(entries[0]["name"], "notes.txt");
    assert_eq!(entries[0]["mode"].as_u64(), Some(0o600));
    assert_eq!(entries[0]["size"].as_u64(), Some(11));
    assert_eq!(w.ok(&["exec", "u_files", "--", "./run.sh"]), "run\n");

    let out = w.run(&["rm", "u_files", "dir"]);
    assert_eq!(out.status.code(), Some(1), "a non-empty directory needs -r: {}", show(&out));
    w.ok(&["rm", "u_files", "dir", "-r"]);
    let out = w.run(&["cat", "u_files", "dir/notes.txt"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).starts_with("error: "), "{}", show(&out));

    let out = w.run(&["cat", "u_files", "../etc/passwd"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("'..' is not allowed"), "{}", show(&out));
    w.ok(&["workspace", "destroy", "u_files"]);
}

#[test]
fn clear_errors_and_exit_codes() {
    let w = warren(3);
    // A bad user id is a usage error (2) that names the rule.
    let out = w.run(&["workspace", "create", "../x"]);
    assert_eq!(out.status.code(), Some(2), "{}", show(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("invalid user id \"../x\""), "{err}");
    assert!(err.contains("must be 1-64 characters of A-Z, a-z, 0-9"), "{err}");

    let out = w.run(&["exec", "u_1"]);
    assert_eq!(out.status.code(), Some(2), "no command: {}", show(&out));
    let out = w.run(&["workspace", "create", "u_1", "--memory", "lots"]);
    assert_eq!(out.status.code(), Some(2), "{}", show(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("invalid size \"lots\""), "{}", show(&out));

    // Runtime errors: "error: <message>", exit 1.
    let out = w.run(&["workspace", "status", "nobody"]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(String::from_utf8_lossy(&out.stderr), "error: workspace of user nobody not found\n");
    w.ok(&["workspace", "create", "u_1"]);
    let out = w.run(&["workspace", "create", "u_1"]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(String::from_utf8_lossy(&out.stderr), "error: workspace of user u_1 already exists\n");
    let out = w.run(&["workspace", "create", "u_2", "--pids", "1"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("pids 1 is below the minimum"), "{}", show(&out));

    let bad = w.dir.join("bad.toml");
    std::fs::write(&bad, "colour = \"blue\"\n").expect("write config");
    let out = Command::new(env!("CARGO_BIN_EXE_warren"))
        .args(["--backend", "dir", "--config", bad.to_str().expect("utf-8"), "workspace", "list"])
        .arg("--state-dir")
        .arg(&w.state)
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.starts_with("error: config file") && err.contains("colour"), "{err}");

    // docker works when dockerd answers; otherwise the error says why docker cannot be used.
    let out = w.cmd_on("docker", &["workspace", "list"]).output().expect("run");
    // The daemon warren asks: the fixture removes DOCKER_HOST.
    let docker_info = Command::new("docker").arg("info").env_remove("DOCKER_HOST").output();
    let docker_up = docker_info.is_ok_and(|o| o.status.success());
    if docker_up {
        assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    } else {
        assert_eq!(out.status.code(), Some(1), "{}", show(&out));
        assert!(String::from_utf8_lossy(&out.stderr).to_lowercase().contains("docker"), "{}", show(&out));
    }
    let out = w.cmd_on("lxc", &["workspace", "list"]).output().expect("run");
    assert_eq!(out.status.code(), Some(2), "{}", show(&out));
    w.ok(&["workspace", "destroy", "u_1"]);
}

#[test]
fn help_everywhere_with_examples() {
    let w = warren(4);
    for args in [
        &["--help"][..],
        &["workspace", "create", "--help"],
        &["workspace", "start", "--help"],
        &["workspace", "stop", "--help"],
        &["workspace", "status", "--help"],
        &["workspace", "destroy", "--help"],
        &["workspace", "list", "--help"],
        &["exec", "--help"],
        &["shell", "--help"],
        &["ls", "--help"],
        &["cat", "--help"],
        &["put", "--help"],
        &["rm", "--help"],
        &["events", "--help"],
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_warren")).args(args).output().expect("run");
        assert_eq!(out.status.code(), Some(0), "{args:?}");
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(text.contains("Example"), "{args:?} has no examples:\n{text}");
    }
    // The audit trail.
    w.ok(&["workspace", "create", "u_ev"]);
    w.ok(&["workspace", "start", "u_ev"]);
    let kinds: Vec<String> = w
        .json(&["events", "u_ev"])
        .as_array()
        .expect("array")
        .iter()
        .map(|e| e["kind"].as_str().unwrap_or_default().to_owned())
        .collect();
    assert_eq!(kinds, ["uid_allocated", "create", "start"]);
    w.ok(&["workspace", "destroy", "u_ev"]);
}

#[test]
fn shell_needs_a_terminal() {
    let w = warren(5);
    w.ok(&["workspace", "create", "u_sh"]);
    let out = w.run(&["shell", "u_sh"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("needs a terminal"), "{}", show(&out));
    w.ok(&["workspace", "destroy", "u_sh"]);
}

#[test]
fn shell_in_a_pty_runs_and_restores_the_terminal() {
    use std::io::Read;
    use std::os::fd::OwnedFd;

    let w = warren(6);
    w.ok(&["workspace", "create", "u_pty"]);
    let (master, slave) = warren_sys::pty::openpty(30, 100).expect("openpty");
    let before = nix::sys::termios::tcgetattr(&slave).expect("tcgetattr");
    let io = |fd: &OwnedFd| Stdio::from(fd.try_clone().expect("dup"));
    let mut child =
        w.cmd(&["shell", "u_pty"]).stdin(io(&slave)).stdout(io(&slave)).stderr(io(&slave)).spawn().expect("spawn");
    let mut m = std::fs::File::from(master);
    let reader = {
        let mut m = m.try_clone().expect("dup master");
        std::thread::spawn(move || {
            let mut out = Vec::new();
            let mut buf = [0u8; 4096];
            loop {
                match m.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => out.extend_from_slice(&buf[..n]),
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                    Err(_) => break, // EIO: every slave closed
                }
            }
            String::from_utf8_lossy(&out).into_owned()
        })
    };
    m.write_all(b"echo from-$((40+2)); stty size; exit 3\n").expect("type into the terminal");
    let status = child.wait().expect("wait");
    let after = nix::sys::termios::tcgetattr(&slave).expect("tcgetattr after");
    drop(slave);
    let out = reader.join().expect("reader");
    assert_eq!(status.code(), Some(3), "{out}");
    assert!(out.contains("from-42"), "{out}");
    assert!(out.contains("30 100"), "the remote terminal has the local size: {out}");
    assert_eq!(after.local_flags, before.local_flags, "terminal restored");
    assert_eq!(after.input_flags, before.input_flags, "terminal restored");
    assert_eq!(after.output_flags, before.output_flags, "terminal restored");
    w.ok(&["workspace", "destroy", "u_pty"]);
}

#[test]
fn stats_and_policy() {
    let w = warren(7);
    w.ok(&["workspace", "create", "u_stats", "--memory", "256M", "--pids", "64"]);
    w.ok(&["exec", "u_stats", "--", "true"]);
    let v = w.json(&["stats", "u_stats"]);
    let s = &v[0]["stats"];
    assert_eq!(v[0]["user"], "u_stats");
    assert_eq!((s["memory_limit_bytes"].as_u64(), s["pids_limit"].as_u64()), (Some(256 << 20), Some(64)), "{v}");
    assert!(s["cpu_percent"].is_number(), "a running workspace has a CPU figure: {v}");
    let table = w.ok(&["stats"]);
    assert!(table.starts_with("USER") && table.contains("u_stats") && table.contains("256.0M"), "{table}");

    let p = w.json(&["policy", "u_stats"]);
    assert_eq!(p["action"], "warn", "the configured default: {p}");
    w.ok(&["policy", "u_stats", "--action", "stop", "--memory", "80", "--cpu", "0"]);
    let p = w.json(&["policy", "u_stats"]);
    assert_eq!((p["action"].as_str(), p["memory_percent"].as_u64()), (Some("stop"), Some(80)), "{p}");
    assert!(p["cpu_percent"].is_null(), "0 stops watching: {p}");
    let out = w.run(&["policy", "u_stats", "--action", "explode"]);
    assert!(
        !out.status.success() && String::from_utf8_lossy(&out.stderr).contains("warn, stop or kill"),
        "{}",
        show(&out)
    );
    w.ok(&["policy", "u_stats", "--reset"]);
    let p = w.json(&["policy", "u_stats"]);
    assert_eq!(p["action"], "warn");
    w.ok(&["workspace", "destroy", "u_stats"]);
}
