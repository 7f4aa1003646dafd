//! The real `warren serve` process on an ephemeral port, the CLI as its client (`--url`), and
//! `warren token`. The dir backend always; the ns backend when this host can run it.
//!
//! Uids of this file: 2_750_000 + 1000 per test.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

use serde_json::{json, Value};

use common::{show, Warren};

const UID_BASE: u32 = 2_750_000;

/// `warren --backend BACKEND ...` on test `slot`'s state directory and uids, with a rate limit no
/// test reaches and 5 s of token leeway.
fn warren(slot: u32, backend: &'static str) -> Warren {
    Warren::new(UID_BASE + slot * 1000, "\n[server]\nrate_limit_rps = 1000\n\n[auth]\nleeway_secs = 5\n").on(backend)
}

/// Starts `warren serve` on an ephemeral port; returns it and what it printed up to the API line.
fn serve(env: &Warren) -> Served {
    let mut child = env
        .cmd(&["serve", "--listen", "127.0.0.1:0"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start warren serve");
    let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
    let mut banner = Vec::new();
    for line in lines.by_ref() {
        let line = line.expect("banner line");
        let done = line.starts_with("API: ");
        banner.push(line);
        if done {
            break;
        }
    }
    let url = banner
        .first()
        .and_then(|l| l.strip_prefix("warren listening on "))
        .and_then(|l| l.split_whitespace().next())
        .unwrap_or_else(|| panic!("no listening line in {banner:?}"))
        .to_owned();
    // Keep draining stdout so the server never blocks on it.
    std::thread::spawn(move || for _ in lines {});
    Served { child, url, banner }
}

struct Served {
    child: Child,
    url: String,
    banner: Vec<String>,
}

impl Served {
    fn token_of(&self, prefix: &str) -> String {
        self.banner
            .iter()
            .find_map(|l| l.strip_prefix(prefix))
            .map(|t| t.trim().to_owned())
            .unwrap_or_else(|| panic!("no {prefix:?} in {:?}", self.banner))
    }

    /// SIGTERM, then waits for the exit status.
    fn stop(mut self) -> std::process::ExitStatus {
        let pid = nix::unistd::Pid::from_raw(i32::try_from(self.child.id()).expect("pid"));
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).expect("SIGTERM");
        self.child.wait().expect("wait")
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn http() -> reqwest::blocking::Client {
    reqwest::blocking::Client::new()
}

#[test]
fn serve_prints_where_it_listens_and_working_dev_tokens() {
    let env = warren(0, "dir");
    let served = serve(&env);
    assert!(served.url.starts_with("http://127.0.0.1:"), "{:?}", served.banner);
    let user = served.token_of("token of user u_123 (24h): ");
    let admin = served.token_of("admin token (24h):         ");
    assert!(
        served.banner.iter().any(|l| l.contains("curl -s -X POST") && l.contains("/snapshot/create")),
        "{:?}",
        served.banner
    );
    let who = |t: &str| -> Value {
        http().get(format!("{}/v1/whoami", served.url)).bearer_auth(t).send().expect("whoami").json().expect("json")
    };
    assert_eq!(who(&user), json!({ "user": "u_123", "admin": false }));
    assert_eq!(who(&admin)["admin"], json!(true));
    // The seed's flow with the printed token: create the workspace, then the seed route.
    let r = http().post(format!("{}/v1/workspaces", served.url)).bearer_auth(&user).send().expect("create");
    assert_eq!(r.status().as_u16(), 201);
    let r = http()
        .post(format!("{}/snapshot/create", served.url))
        .bearer_auth(&user)
        .body(r#"{"user_id":"u_123"}"#)
        .send()
        .expect("seed");
    assert_eq!(r.status().as_u16(), 200);
    let created: Value = r.json().expect("json");
    let id = created["snapshot_id"].as_str().expect("snapshot_id").to_owned();
    let list: Value = http()
        .get(format!("{}/snapshot/list/u_123", served.url))
        .bearer_auth(&user)
        .send()
        .expect("list")
        .json()
        .expect("json");
    assert_eq!(list["snapshots"][0]["id"].as_str(), Some(id.as_str()), "{list}");
    let r = http()
        .post(format!("{}/snapshot/restore", served.url))
        .bearer_auth(&user)
        .body(format!(r#"{{"user_id":"u_123","snapshot_id":"{id}"}}"#))
        .send()
        .expect("restore");
    assert_eq!(r.status().as_u16(), 200);
    // warren token mints tokens the server accepts.
    let t = env.ok(&["token", "u_minted", "--ttl", "10m"]);
    assert_eq!(who(t.trim()), json!({ "user": "u_minted", "admin": false }));
    let t = env.ok(&["token", "ops", "--admin"]);
    assert_eq!(who(t.trim())["admin"], json!(true));
    let status = served.stop();
    assert!(status.success(), "SIGTERM is a clean exit: {status:?}");
}

#[test]
fn the_cli_is_the_same_over_url() {
    let env = warren(1, "dir");
    let served = serve(&env);
    let url = served.url.clone();
    let remote = |args: &[&str]| {
        let mut all = vec!["--url", url.as_str()];
        all.extend_from_slice(args);
        env.run(&all)
    };
    let r = remote(&["workspace", "create", "u_cli", "--memory", "1G", "--cpus", "unlimited"]);
    assert!(r.status.success(), "{}", show(&r));
    assert!(String::from_utf8_lossy(&r.stdout).starts_with("created workspace ws_"), "{}", show(&r));
    let r = remote(&["exec", "u_cli", "--", "sh", "-c", "echo out; echo err >&2; mkdir -p d; echo hi > d/f; exit 42"]);
    assert_eq!(r.status.code(), Some(42), "{}", show(&r));
    assert_eq!((r.stdout.as_slice(), r.stderr.as_slice()), (&b"out\n"[..], &b"err\n"[..]));
    // The same answers as the local engine on the same state directory.
    for args in [
        &["--json", "workspace", "status", "u_cli"][..],
        &["workspace", "status", "u_cli"],
        &["--json", "workspace", "list"],
        &["ls", "u_cli", "d"],
        &["--json", "ls", "u_cli"],
        &["cat", "u_cli", "d/f"],
    ] {
        let local = env.run(args);
        let over = remote(args);
        assert!(local.status.success(), "{}", show(&local));
        assert_eq!(
            String::from_utf8_lossy(&over.stdout),
            String::from_utf8_lossy(&local.stdout),
            "{args:?} differs over --url: {}",
            show(&over)
        );
    }
    let mut child = env
        .cmd(&["--url", &url, "exec", "u_cli", "--", "tr", "a-z", "A-Z"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn");
    std::io::Write::write_all(&mut child.stdin.take().expect("stdin"), b"piped\n").expect("write");
    let out = child.wait_with_output().expect("wait");
    assert_eq!(out.stdout, b"PIPED\n");
    let r = remote(&["exec", "u_cli", "--timeout", "500ms", "--", "sleep", "60"]);
    assert_eq!(r.status.code(), Some(124), "{}", show(&r));
    let r = remote(&["--json", "exec", "u_cli", "--", "sh", "-c", "printf x; exit 3"]);
    assert_eq!(r.status.code(), Some(3));
    let j: Value = serde_json::from_slice(&r.stdout).expect("json");
    assert_eq!((j["stdout"].as_str(), j["exit_code"].as_i64()), (Some("x"), Some(3)));
    // Errors: the server's message, exit code 1.
    let r = remote(&["cat", "u_cli", "nope"]);
    assert_eq!(r.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&r.stderr).contains("not found"), "{}", show(&r));
    // A user token cannot reach another user's workspace.
    let user_token = env.ok(&["token", "u_other"]);
    let r =
        env.cmd(&["--url", &url, "cat", "u_cli", "d/f"]).env("WARREN_TOKEN", user_token.trim()).output().expect("run");
    assert_eq!(r.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&r.stderr).contains("only act on their own workspace"), "{}", show(&r));
    let r = env.cmd(&["--url", &url, "workspace", "list"]).env("WARREN_TOKEN", "garbage").output().expect("run");
    assert!(String::from_utf8_lossy(&r.stderr).contains("refused the token"), "{}", show(&r));
    // Snapshots over --url: taken, listed, restored, unpinned and deleted through the API, with
    // the local engine's answers.
    let r = remote(&["snapshot", "create", "u_cli", "s1", "--pin"]);
    assert!(r.status.success(), "{}", show(&r));
    let text = String::from_utf8_lossy(&r.stdout);
    assert!(text.starts_with("snapshot s1 of u_cli: ") && text.contains(", pinned"), "{}", show(&r));
    let r = remote(&["exec", "u_cli", "--", "sh", "-c", "echo changed > d/f"]);
    assert!(r.status.success(), "{}", show(&r));
    for args in [&["--json", "snapshot", "list", "u_cli"][..], &["snapshot", "list", "u_cli"]] {
        let (local, over) = (env.run(args), remote(args));
        assert!(local.status.success() && over.status.success(), "{}\n{}", show(&local), show(&over));
        assert_eq!(String::from_utf8_lossy(&over.stdout), String::from_utf8_lossy(&local.stdout), "{args:?}");
    }
    let r = remote(&["snapshot", "restore", "u_cli", "s1"]);
    assert!(r.status.success(), "{}", show(&r));
    assert!(
        String::from_utf8_lossy(&r.stdout).starts_with("restored s1 into the workspace of u_cli: "),
        "{}",
        show(&r)
    );
    assert_eq!(remote(&["cat", "u_cli", "d/f"]).stdout, b"hi\n", "the snapshot's files are back");
    let r = remote(&["snapshot", "unpin", "u_cli", "s1"]);
    assert_eq!(String::from_utf8_lossy(&r.stdout), "snapshot s1 of u_cli is not pinned\n", "{}", show(&r));
    let r = remote(&["snapshot", "delete", "u_cli", "s1"]);
    assert_eq!(String::from_utf8_lossy(&r.stdout), "deleted snapshot s1 of u_cli\n", "{}", show(&r));
    let r = remote(&["snapshot", "restore", "u_cli", "s1"]);
    assert_eq!(r.status.code(), Some(1), "{}", show(&r));
    assert!(String::from_utf8_lossy(&r.stderr).contains("not found"), "{}", show(&r));
    let r = remote(&["snapshot", "export", "u_cli", "s1", "/tmp/never-written.tar.zst"]);
    assert_eq!(r.status.code(), Some(1), "{}", show(&r));
    assert!(String::from_utf8_lossy(&r.stderr).contains("without --url"), "{}", show(&r));
    let r = remote(&["rm", "u_cli", "d", "-r"]);
    assert!(r.status.success(), "{}", show(&r));
    let r = remote(&["workspace", "destroy", "u_cli"]);
    assert_eq!(String::from_utf8_lossy(&r.stdout), "destroyed the workspace of u_cli\n");
    // Without a server there, a clear error.
    served.stop();
    let r = remote(&["workspace", "list"]);
    assert_eq!(r.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&r.stderr).contains("cannot reach the warren server"), "{}", show(&r));
}

#[test]
fn seed_container_settings_are_validated() {
    let env = warren(2, "dir");
    let out = env
        .cmd(&["serve", "--listen", "127.0.0.1:0"])
        .env("MAX_CONTAINERS", "zero")
        .stdin(Stdio::null())
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("MAX_CONTAINERS"), "{}", show(&out));
    let out = env.cmd(&["serve"]).env("CONTAINER_IMAGE", "not an image").stdin(Stdio::null()).output().expect("run");
    assert!(String::from_utf8_lossy(&out.stderr).contains("CONTAINER_IMAGE"), "{}", show(&out));
}

/// The ns backend through the server: isolation holds and the workspace outlives a restart.
#[test]
fn ns_workspaces_through_the_server_survive_a_restart() {
    if let Err(why) = warren_backend_ns::NsBackend::probe() {
        eprintln!("skipped: the ns backend cannot run here: {why}");
        return;
    }
    let env = warren(3, "ns");
    let served = serve(&env);
    let token = served.token_of("token of user u_123 (24h): ");
    let url = served.url.clone();
    let c = http();
    let r = c.post(format!("{url}/v1/workspaces")).bearer_auth(&token).send().expect("create");
    assert_eq!(r.status().as_u16(), 201);
    let w: Value = r.json().expect("json");
    assert_eq!(w["backend"], json!("ns"));
    let exec = |argv: Value| -> Value {
        let r = c
            .post(format!("{url}/v1/workspaces/me/exec"))
            .bearer_auth(&token)
            .json(&json!({ "argv": argv }))
            .send()
            .expect("exec");
        assert_eq!(r.status().as_u16(), 200);
        r.json().expect("json")
    };
    let r = exec(json!(["sh", "-c", "echo $$ > pid; setsid sleep 600 </dev/null >/dev/null 2>&1 & echo $! > bg; env; cat /proc/self/environ; cat /proc/[0-9]*/cmdline | tr '\\0' ' '"]));
    let out = r["stdout"].as_str().expect("stdout");
    assert!(out.contains("WARREN_USER=u_123"), "{out}");
    let sig = token.rsplit('.').next().expect("sig");
    assert!(!out.contains(sig) && !out.contains("Bearer"), "the token is visible inside the workspace: {out}");
    // Its own pid namespace: the shell's pid is small.
    let pid: u32 = exec(json!(["cat", "pid"]))["stdout"].as_str().expect("pid").trim().parse().expect("pid");
    assert!(pid < 100, "pid {pid} is from the workspace's own pid namespace");
    let exec_stream = c
        .post(format!("{url}/v1/workspaces/me/exec/stream"))
        .bearer_auth(&token)
        .json(&json!({ "argv": ["sh", "-c", "echo one; echo two >&2"] }))
        .send()
        .expect("stream")
        .text()
        .expect("text");
    assert!(exec_stream.contains(r#"{"type":"stdout","data":"one\n"}"#), "{exec_stream}");
    assert!(exec_stream.lines().last().is_some_and(|l| l.contains(r#""type":"exit""#)), "{exec_stream}");
    assert!(served.stop().success());
    // The workspace keeps running without the server, and the next server adopts it.
    let served = serve(&env);
    let token = served.token_of("token of user u_123 (24h): ");
    let w: Value = c
        .get(format!("{}/v1/workspaces/me", served.url))
        .bearer_auth(&token)
        .send()
        .expect("get")
        .json()
        .expect("json");
    assert_eq!(w["state"], json!("running"), "{w}");
    let r: Value = c
        .post(format!("{}/v1/workspaces/me/exec", served.url))
        .bearer_auth(&token)
        .json(&json!({ "argv": ["sh", "-c", "kill -0 $(cat bg) && echo alive"] }))
        .send()
        .expect("exec")
        .json()
        .expect("json");
    assert_eq!(r["stdout"], json!("alive\n"), "a process started before the restart still runs: {r}");
    let r = c.delete(format!("{}/v1/workspaces/me", served.url)).bearer_auth(&token).send().expect("destroy");
    assert_eq!(r.status().as_u16(), 200);
    assert!(served.stop().success());
}

/// Files and trees through the server on the ns backend land owned by the workspace's user.
#[test]
fn ns_files_and_archives_through_the_server() {
    if let Err(why) = warren_backend_ns::NsBackend::probe() {
        eprintln!("skipped: the ns backend cannot run here: {why}");
        return;
    }
    let env = warren(4, "ns");
    let served = serve(&env);
    let token = served.token_of("token of user u_123 (24h): ");
    let url = served.url.clone();
    let c = http();
    assert_eq!(
        c.post(format!("{url}/v1/workspaces")).bearer_auth(&token).send().expect("create").status().as_u16(),
        201
    );
    let mut b = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_gnu();
    h.set_mode(0o640);
    h.set_size(5);
    b.append_data(&mut h, "src/main.txt", &b"hello"[..]).expect("entry");
    let tarball = b.into_inner().expect("tar");
    let r = c
        .put(format!("{url}/v1/workspaces/me/archive?path=proj"))
        .bearer_auth(&token)
        .body(tarball)
        .send()
        .expect("put");
    assert_eq!(r.status().as_u16(), 200);
    let r: Value = c
        .post(format!("{url}/v1/workspaces/me/exec"))
        .bearer_auth(&token)
        .json(&json!({ "argv": ["sh", "-c", "stat -c '%U %a' proj/src/main.txt; cat proj/src/main.txt; echo made > proj/out.txt"] }))
        .send()
        .expect("exec")
        .json()
        .expect("json");
    assert_eq!(r["stdout"], json!("u_123 640\nhello"), "{r}");
    let bytes = c
        .get(format!("{url}/v1/workspaces/me/archive?path=proj"))
        .bearer_auth(&token)
        .send()
        .expect("get")
        .bytes()
        .expect("tar");
    let mut names: Vec<String> = tar::Archive::new(&bytes[..])
        .entries()
        .expect("entries")
        .map(|e| e.expect("entry").path().expect("path").to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names, ["out.txt", "src", "src/main.txt"]);
    let r = c.get(format!("{url}/v1/workspaces/me/files/proj/out.txt")).bearer_auth(&token).send().expect("get");
    assert_eq!(r.bytes().expect("body").as_ref(), b"made\n");
    c.delete(format!("{url}/v1/workspaces/me")).bearer_auth(&token).send().expect("destroy");
    assert!(served.stop().success());
}

/// `warren --url URL shell` on a pseudo-terminal, through the server's terminal WebSocket: the
/// local shell's behaviour (raw mode restored after, window size changes reach the shell, the
/// shell's exit code), its refusal without a terminal, and the server's refusal of a token for
/// another user.
#[test]
fn shell_over_url_on_a_pty() {
    use std::io::{Read, Write};
    use std::os::fd::OwnedFd;
    use std::sync::{Arc, Mutex};
    use std::time::{Duration, Instant};

    let env = warren(8, "dir");
    let served = serve(&env);
    let url = served.url.clone();
    // Without a terminal on stdin, like the local `warren shell`.
    let r = env.run(&["--url", &url, "shell", "u_tty"]);
    assert_eq!(r.status.code(), Some(1), "{}", show(&r));
    assert!(String::from_utf8_lossy(&r.stderr).contains("needs a terminal"), "{}", show(&r));

    // The client leads its own session with the pty as its controlling terminal, so resizing the
    // pty sends it SIGWINCH, as a terminal emulator's would.
    let (master, slave) = warren_sys::pty::openpty(30, 100).expect("openpty");
    let before = nix::sys::termios::tcgetattr(&slave).expect("tcgetattr");
    let on_pty = |cmd: &mut Command| {
        let io = |fd: &OwnedFd| Stdio::from(fd.try_clone().expect("dup"));
        cmd.stdin(io(&slave)).stdout(io(&slave));
        let mut opts =
            warren_sys::spawn::SpawnOptions::new(nix::unistd::getuid().as_raw(), nix::unistd::getgid().as_raw());
        opts.new_session = true;
        opts.controlling_tty = true;
        warren_sys::spawn::apply(cmd, &opts);
    };
    let mut cmd = env.cmd(&["--url", &url, "shell", "u_tty"]);
    on_pty(&mut cmd);
    let mut child = cmd.stderr(Stdio::piped()).spawn().expect("spawn");
    drop(cmd);
    let seen = Arc::new(Mutex::new(Vec::<u8>::new()));
    let mut m = std::fs::File::from(master.try_clone().expect("dup master"));
    let reader = {
        let seen = Arc::clone(&seen);
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            loop {
                match m.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => seen.lock().expect("lock").extend_from_slice(&buf[..n]),
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                    Err(_) => break, // EIO: every slave closed
                }
            }
        })
    };
    let text = || String::from_utf8_lossy(&seen.lock().expect("lock")).into_owned();
    let wait_for = |what: &dyn Fn(&str) -> bool, why: &str| {
        let deadline = Instant::now() + Duration::from_secs(30);
        while !what(&text()) {
            assert!(Instant::now() < deadline, "{why}; the terminal shows: {:?}", text());
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    let mut keys = std::fs::File::from(master);
    // The prompt: attached, the local terminal raw.
    wait_for(&|t| !t.is_empty(), "no prompt from the remote shell");
    let raw = nix::sys::termios::tcgetattr(&slave).expect("tcgetattr raw");
    assert!(!raw.local_flags.contains(nix::sys::termios::LocalFlags::ECHO), "raw mode while attached");
    keys.write_all(b"stty size\r").expect("type");
    wait_for(&|t| t.contains("30 100\r\n"), "the remote terminal has the local size");
    warren_sys::pty::set_winsize(&keys, 41, 123).expect("resize the pty");
    // The resize travels as its own message: ask again until the shell sees it.
    let deadline = Instant::now() + Duration::from_secs(30);
    while !text().contains("41 123\r\n") {
        assert!(Instant::now() < deadline, "the resize never reached the remote shell: {:?}", text());
        keys.write_all(b"stty size\r").expect("type");
        std::thread::sleep(Duration::from_millis(200));
    }
    // More output than the server's flow-control window: it keeps coming as the client acks it.
    keys.write_all(b"seq 200000; echo end-$((5+5))\r").expect("type");
    wait_for(&|t| t.contains("\n200000\r\n") && t.contains("end-10\r\n"), "all of a long output arrived");
    keys.write_all(b"echo $((6*7)); exit 3\r").expect("type");
    let status = child.wait().expect("wait");
    let mut stderr = String::new();
    child.stderr.take().expect("stderr").read_to_string(&mut stderr).expect("stderr");
    let after = nix::sys::termios::tcgetattr(&slave).expect("tcgetattr after");
    assert_eq!(status.code(), Some(3), "the shell's exit code; stderr {stderr:?}, terminal {:?}", text());
    assert!(text().contains("42\r\n"), "{:?}", text());
    assert_eq!(after.local_flags, before.local_flags, "terminal restored");
    assert_eq!(after.input_flags, before.input_flags, "terminal restored");
    assert_eq!(after.output_flags, before.output_flags, "terminal restored");

    // A user's token for another user's workspace: the server's refusal, exit 1.
    let other = env.ok(&["token", "u_other"]);
    let mut cmd = env.cmd(&["--url", &url, "shell", "u_tty"]);
    on_pty(&mut cmd);
    let r = cmd.env("WARREN_TOKEN", other.trim()).stderr(Stdio::piped()).output().expect("run");
    drop(cmd);
    let err = String::from_utf8_lossy(&r.stderr);
    assert_eq!(r.status.code(), Some(1), "{err}");
    assert!(err.contains("refused the terminal") && err.contains("only act on their own workspace"), "{err}");
    assert_eq!(nix::sys::termios::tcgetattr(&slave).expect("tcgetattr").local_flags, before.local_flags);
    drop(slave);
    reader.join().expect("reader");

    let r = env.run(&["--url", &url, "workspace", "destroy", "u_tty"]);
    assert!(r.status.success(), "{}", show(&r));
    assert!(served.stop().success());
}
