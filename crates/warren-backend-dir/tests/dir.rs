//! The dir backend on real processes and real uids (run as root).
//!
//! Each test has its own state directory and its own uids (2_000_100 and up, below the
//! conformance suite's range), so tests run in parallel.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use tempfile::TempDir;
use warren_backend_dir::DirBackend;
use warren_core::{
    Backend, Error, ExecControl, ExecEvent, ExecHandle, ExecOutput, ExecRequest, State, TtySize, WorkspacePath,
    WorkspaceSpec,
};

struct Env {
    _tmp: TempDir,
    state: PathBuf,
    b: DirBackend,
    specs: Vec<WorkspaceSpec>,
}

impl Env {
    fn new() -> Self {
        let tmp = tempfile::tempdir().expect("tempdir");
        std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o711)).expect("chmod 0711");
        let state = tmp.path().join("state");
        let b = DirBackend::new(&state).expect("opening the dir backend");
        Self { _tmp: tmp, state, b, specs: Vec::new() }
    }

    fn spec(&mut self, user: &str, uid: u32) -> WorkspaceSpec {
        let s = warren_testkit::spec(user, uid);
        self.specs.push(s.clone());
        s
    }

    async fn running(&mut self, user: &str, uid: u32) -> WorkspaceSpec {
        let s = self.spec(user, uid);
        self.b.create(&s).await.expect("create");
        self.b.start(&s).await.expect("start");
        s
    }

    fn home(&self, s: &WorkspaceSpec) -> PathBuf {
        self.b.host_files(s).expect("dir keeps files on the host").dir
    }

    async fn exec(&self, s: &WorkspaceSpec, req: ExecRequest) -> ExecOutput {
        self.b.exec(s, req).await.expect("exec")
    }

    async fn sh(&self, s: &WorkspaceSpec, script: &str) -> ExecOutput {
        self.exec(s, ExecRequest::new(["sh", "-c", script])).await
    }

    /// Destroys every workspace the test made (kills their processes).
    async fn finish(self) {
        for s in &self.specs {
            self.b.destroy(s).await.expect("destroy");
        }
    }
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn wpath(p: &str) -> WorkspacePath {
    WorkspacePath::new(p).expect("valid path")
}

/// Live (not zombie) host processes whose real uid is `uid`.
fn processes_of(uid: u32) -> Vec<i32> {
    let mut out = Vec::new();
    for ent in std::fs::read_dir("/proc").expect("/proc").flatten() {
        let Some(pid) = ent.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else { continue };
        let Ok(status) = std::fs::read_to_string(ent.path().join("status")) else { continue };
        let field = |name: &str| status.lines().find_map(|l| l.strip_prefix(name)).map(str::trim).unwrap_or("");
        let zombie = field("State:").starts_with('Z') || field("State:").starts_with('X');
        if !zombie && field("Uid:").split_whitespace().next() == Some(uid.to_string().as_str()) {
            out.push(pid);
        }
    }
    out
}

/// Waits (bounded, generously) until `uid` has no live process left; returns what is left.
async fn wait_no_processes(uid: u32) -> Vec<i32> {
    for _ in 0..600 {
        if processes_of(uid).is_empty() {
            return Vec::new();
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    processes_of(uid)
}

async fn next_stdout(h: &mut ExecHandle) -> Vec<u8> {
    match h.events.recv().await {
        Some(ExecEvent::Stdout(b)) => b,
        other => panic!("expected stdout, got {other:?}"),
    }
}

/// Reads events until the output contains `want`; panics on Exit or end.
async fn read_until(h: &mut ExecHandle, out: &mut String, want: &str) {
    while !out.contains(want) {
        match h.events.recv().await {
            Some(ExecEvent::Stdout(b)) => out.push_str(&text(&b)),
            other => panic!("waiting for {want:?} after {out:?}, got {other:?}"),
        }
    }
}

/// Reads events to the end and returns the exit status.
async fn wait_exit(h: &mut ExecHandle) -> warren_core::ExitStatus {
    loop {
        match h.events.recv().await {
            Some(ExecEvent::Exit(st)) => return st,
            Some(_) => {}
            None => panic!("the stream ended without Exit"),
        }
    }
}

#[test]
fn probe_passes_as_root() {
    assert_eq!(DirBackend::probe(), Ok(()));
}

#[tokio::test(flavor = "multi_thread")]
async fn lifecycle_and_layout() {
    let mut env = Env::new();
    let s = env.spec("alice", 2_000_100);
    let home = env.home(&s);
    assert_eq!(env.b.status(&s).await.expect("status").state, State::Absent);
    assert!(matches!(env.b.start(&s).await, Err(Error::NotFound(_))));

    env.b.create(&s).await.expect("create");
    env.b.create(&s).await.expect("create is idempotent");
    assert_eq!(env.b.status(&s).await.expect("status").state, State::Stopped);
    let md = std::fs::symlink_metadata(&home).expect("home");
    assert!(md.is_dir());
    assert_eq!((md.mode() & 0o7777, md.uid(), md.gid()), (0o700, s.uid, s.gid));
    for dir in [env.state.clone(), env.state.join("workspaces")] {
        let md = std::fs::metadata(&dir).expect("state dir");
        assert_eq!(md.mode() & 0o7777, 0o711, "{}", dir.display());
    }
    // Same user, other uid: refused.
    let mut other = s.clone();
    other.uid = 2_000_101;
    other.gid = 2_000_101;
    assert!(matches!(env.b.create(&other).await, Err(Error::AlreadyExists(_))));
    // System uids are refused outright.
    let mut root = s.clone();
    root.uid = 0;
    assert!(matches!(env.b.create(&root).await, Err(Error::InvalidRequest(_))));
    assert!(matches!(env.b.stop(&root).await, Err(Error::InvalidRequest(_))));

    let r = env.b.exec(&s, ExecRequest::new(["true"])).await;
    match r {
        Err(Error::Conflict(msg)) => assert_eq!(msg, "workspace of user alice is stopped; start it first"),
        other => panic!("exec in a stopped workspace: {other:?}"),
    }

    let st = env.b.start(&s).await.expect("start");
    assert_eq!(st.state, State::Running);
    env.b.start(&s).await.expect("start again");
    let run_file = env.state.join("run/dir").join(format!("{}.json", s.id));
    assert!(run_file.is_file(), "the running state lives outside the home");
    assert_eq!(std::fs::metadata(env.state.join("run/dir")).expect("run dir").mode() & 0o777, 0o700);
    // Nothing of the backend's own state is in the home.
    assert_eq!(std::fs::read_dir(&home).expect("home").count(), 0);

    // A new backend on the same state dir (warren restarted) sees the same.
    let again = DirBackend::new(&env.state).expect("reopen");
    assert_eq!(again.status(&s).await.expect("status").state, State::Running);
    assert_eq!(text(&env.sh(&s, "echo up").await.stdout), "up\n");

    env.b.stop(&s).await.expect("stop");
    env.b.stop(&s).await.expect("stop is idempotent");
    assert_eq!(again.status(&s).await.expect("status").state, State::Stopped);
    assert!(!run_file.exists());
    assert!(matches!(env.b.exec(&s, ExecRequest::new(["true"])).await, Err(Error::Conflict(_))));

    env.b.write_file(&s, &wpath("keep"), b"kept".to_vec(), 0o600).await.expect("write while stopped");
    env.b.start(&s).await.expect("start");
    assert_eq!(text(&env.sh(&s, "cat keep").await.stdout), "kept");

    env.b.destroy(&s).await.expect("destroy");
    assert_eq!(env.b.status(&s).await.expect("status").state, State::Absent);
    assert!(!home.exists() && !run_file.exists());
    env.b.destroy(&s).await.expect("destroy is idempotent");
    assert!(matches!(env.b.exec(&s, ExecRequest::new(["true"])).await, Err(Error::NotFound(_))));
    assert!(matches!(env.b.stats(&s).await, Err(Error::NotFound(_))));
    env.finish().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn destroy_does_not_follow_symlinks() {
    let mut env = Env::new();
    let s = env.running("alice", 2_000_102).await;
    let outside = env.state.join("outside");
    std::fs::create_dir(&outside).expect("mkdir");
    std::fs::write(outside.join("precious"), b"keep me").expect("write");
    let out = env.sh(&s, &format!("ln -s {} link && mkdir -p d && ln -s / d/root", outside.display())).await;
    assert_eq!(out.exit_code, 0, "{out:?}");
    env.b.destroy(&s).await.expect("destroy");
    assert_eq!(std::fs::read(outside.join("precious")).expect("still there"), b"keep me");
    assert!(Path::new("/etc/passwd").exists());
    env.finish().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn exec_codes_streams_env_and_identity() {
    let mut env = Env::new();
    let s = env.running("alice", 2_000_103).await;
    let home = env.home(&s);

    let out = env.sh(&s, "echo out; echo err >&2; exit 3").await;
    assert_eq!((out.exit_code, out.signal), (3, None), "{out:?}");
    assert_eq!((text(&out.stdout), text(&out.stderr)), ("out\n".into(), "err\n".into()));

    let out = env.exec(&s, ExecRequest { stdin: Some(b"fed\x00in".to_vec()), ..ExecRequest::new(["cat"]) }).await;
    assert_eq!(out.stdout, b"fed\x00in");

    let out = env.exec(&s, ExecRequest::new(["sh", "-c", "id -u; id -g; id -G"])).await;
    assert_eq!(text(&out.stdout), format!("{0}\n{0}\n{0}\n", s.uid), "no supplementary groups: {out:?}");

    let req = ExecRequest {
        env: vec![("FOO".into(), "bar".into()), ("USER".into(), "override".into())],
        ..ExecRequest::new(["sh", "-c", "echo \"$FOO|$HOME|$USER|$PATH|$WARREN_WORKSPACE|${TERM-none}\"; env | wc -l"])
    };
    let out = env.exec(&s, req).await;
    let o = text(&out.stdout);
    let lines: Vec<&str> = o.lines().collect();
    assert_eq!(
        lines[0],
        format!(
            "bar|{}|override|/usr/local/bin:/usr/bin:/bin:/usr/local/sbin:/usr/sbin:/sbin|{}|none",
            home.display(),
            s.id
        )
    );
    // Only the fixed environment (8 variables, one overridden, plus FOO) and what sh adds (PWD).
    assert!(lines[1].trim().parse::<u32>().expect("a count") <= 10, "{o}");

    // no_new_privs and rlimits.
    let out = env.sh(&s, "grep NoNewPrivs /proc/self/status; ulimit -c; ulimit -n").await;
    assert_eq!(text(&out.stdout), "NoNewPrivs:\t1\n0\n1024\n");

    // Its own session: the shell leads a session and a process group.
    let out = env.sh(&s, "cut -d' ' -f5,6 /proc/$$/stat; echo $$").await;
    let o = text(&out.stdout);
    let lines: Vec<&str> = o.lines().collect();
    assert_eq!(lines[0], format!("{0} {0}", lines[1]));

    // A missing program is an error naming it.
    match env.b.exec(&s, ExecRequest::new(["no-such-program-xyz"])).await {
        Err(Error::NotFound(msg)) => assert!(msg.contains("no-such-program-xyz"), "{msg}"),
        other => panic!("missing program: {other:?}"),
    }
    assert!(matches!(env.b.exec(&s, ExecRequest::new(Vec::<String>::new())).await, Err(Error::InvalidRequest(_))));
    env.finish().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn exec_cwd_is_confined() {
    let mut env = Env::new();
    let s = env.running("alice", 2_000_104).await;
    let home = env.home(&s);
    env.b.make_dir(&s, &wpath("sub/dir")).await.expect("mkdir");
    let out = env.exec(&s, ExecRequest { cwd: Some("sub/dir".into()), ..ExecRequest::new(["pwd"]) }).await;
    assert_eq!(text(&out.stdout), format!("{}/sub/dir\n", home.display()));
    let out = env.exec(&s, ExecRequest::new(["pwd"])).await;
    assert_eq!(text(&out.stdout), format!("{}\n", home.display()), "the default cwd is the home");

    for bad in ["..", "/etc", "sub/../../x"] {
        let r = env.b.exec(&s, ExecRequest { cwd: Some(bad.into()), ..ExecRequest::new(["pwd"]) }).await;
        assert!(matches!(r, Err(Error::InvalidPath { .. })), "cwd {bad}: {r:?}");
    }
    // A symlink planted by the workspace that leads out is refused too.
    assert_eq!(env.sh(&s, "ln -s /etc out && ln -s sub inside").await.exit_code, 0);
    let r = env.b.exec(&s, ExecRequest { cwd: Some("out".into()), ..ExecRequest::new(["pwd"]) }).await;
    assert!(matches!(r, Err(Error::InvalidPath { .. })), "cwd through a symlink out: {r:?}");
    let out = env.exec(&s, ExecRequest { cwd: Some("inside/dir".into()), ..ExecRequest::new(["pwd"]) }).await;
    assert_eq!(text(&out.stdout), format!("{}/sub/dir\n", home.display()), "a symlink staying inside works");
    let r = env.b.exec(&s, ExecRequest { cwd: Some("missing".into()), ..ExecRequest::new(["pwd"]) }).await;
    assert!(matches!(r, Err(Error::NotFound(_))), "{r:?}");
    env.finish().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn timeout_and_signals_kill_the_group() {
    let mut env = Env::new();
    let s = env.running("alice", 2_000_105).await;

    // The shell and its child sleep both die: the whole process group is killed.
    let req = ExecRequest {
        timeout: Some(Duration::from_millis(300)),
        ..ExecRequest::new(["sh", "-c", "sleep 1000; echo never"])
    };
    let out = env.exec(&s, req).await;
    assert!(out.timed_out, "{out:?}");
    assert_eq!((out.exit_code, out.signal), (137, Some(9)), "{out:?}");
    assert!(wait_no_processes(s.uid).await.is_empty(), "the timed-out sleep survived");

    let out = env.sh(&s, "kill -TERM $$").await;
    assert_eq!((out.exit_code, out.signal), (143, Some(15)));

    // Signal reaches the whole group: the shell and the sleep it waits for. (The signal is sent
    // once the sleep runs: a signal landing between a shell's fork and its child's exec is lost
    // by the shell's own handler, whatever the backend does.)
    let script = "sleep 1000 & echo $!; wait; echo after";
    let mut h = env.b.exec_stream(&s, ExecRequest::new(["sh", "-c", script])).await.expect("stream");
    let pid = text(&next_stdout(&mut h).await).trim().to_owned();
    for _ in 0..600 {
        if std::fs::read_to_string(format!("/proc/{pid}/cmdline")).unwrap_or_default().starts_with("sleep") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    h.control.send(ExecControl::Signal(15)).await.expect("signal");
    let st = wait_exit(&mut h).await;
    assert_eq!((st.code, st.signal), (143, Some(15)));
    assert!(h.events.recv().await.is_none(), "nothing follows Exit");
    assert!(wait_no_processes(s.uid).await.is_empty(), "SIGTERM reached the shell only");
    env.finish().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn dropping_the_handle_kills_the_command() {
    let mut env = Env::new();
    let s = env.running("alice", 2_000_106).await;
    let mut h = env
        .b
        .exec_stream(&s, ExecRequest::new(["sh", "-c", "echo started; sleep 1000; touch done"]))
        .await
        .expect("stream");
    assert_eq!(next_stdout(&mut h).await, b"started\n");
    assert!(!processes_of(s.uid).is_empty());
    drop(h);
    assert!(wait_no_processes(s.uid).await.is_empty(), "the command outlived its handle");
    assert!(matches!(env.b.read_file(&s, &wpath("done")).await, Err(Error::NotFound(_))));
    env.finish().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn output_is_complete_and_streams() {
    let mut env = Env::new();
    let s = env.running("alice", 2_000_107).await;
    // Written right before exit, on both streams, by the process and by a child it waited for.
    let out = env.sh(&s, "head -c 3000000 /dev/zero; printf tail; printf e >&2; (printf sub)").await;
    assert_eq!(out.stdout.len(), 3_000_000 + "tailsub".len(), "{} bytes", out.stdout.len());
    assert!(out.stdout.ends_with(b"tailsub"));
    assert_eq!(out.stderr, b"e");
    for _ in 0..20 {
        let out = env.sh(&s, "printf last").await;
        assert_eq!(out.stdout, b"last");
    }

    // A background process keeping stdout open does not keep the exec from ending.
    let out = env.sh(&s, "sleep 1000 & echo bg").await;
    assert_eq!((out.exit_code, text(&out.stdout)), (0, "bg\n".to_owned()));

    // Streaming stdin: line by line.
    let mut h = env
        .b
        .exec_stream(&s, ExecRequest::new(["sh", "-c", "while read l; do echo \"got $l\"; done; echo eof"]))
        .await
        .expect("stream");
    let tx = h.stdin.take().expect("stdin");
    tx.send(b"one\n".to_vec()).await.expect("send");
    assert_eq!(next_stdout(&mut h).await, b"got one\n");
    tx.send(b"two\n".to_vec()).await.expect("send");
    assert_eq!(next_stdout(&mut h).await, b"got two\n");
    drop(tx);
    assert_eq!(next_stdout(&mut h).await, b"eof\n");
    assert_eq!(wait_exit(&mut h).await.code, 0);
    env.finish().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn tty_exec() {
    let mut env = Env::new();
    let s = env.running("alice", 2_000_108).await;
    let req = ExecRequest {
        tty: Some(TtySize { rows: 33, cols: 101 }),
        ..ExecRequest::new(["sh", "-c", "tty; stty size; echo \"$TERM\"; stat -c %u $(tty); echo oops >&2; printf end"])
    };
    let out = env.exec(&s, req).await;
    assert_eq!(out.exit_code, 0, "{out:?}");
    assert!(out.stderr.is_empty(), "a terminal merges stderr: {out:?}");
    let o = text(&out.stdout);
    let lines: Vec<&str> = o.split("\r\n").collect();
    assert!(lines[0].starts_with("/dev/pts/"), "{o:?}");
    assert_eq!(&lines[1..], ["33 101", "xterm-256color", &s.uid.to_string(), "oops", "end"], "{o:?}");

    // Resize, interactive input, and the end of input closing the terminal's stdin.
    let req = ExecRequest {
        tty: Some(TtySize { rows: 24, cols: 80 }),
        ..ExecRequest::new(["sh", "-c", "echo ready; while read x; do stty size; done; echo bye"])
    };
    let mut h = env.b.exec_stream(&s, req).await.expect("stream");
    let mut out = String::new();
    read_until(&mut h, &mut out, "ready").await;
    h.control.send(ExecControl::Resize(TtySize { rows: 50, cols: 132 })).await.expect("resize");
    let tx = h.stdin.take().expect("stdin");
    // The resize and the input travel separately: type lines until the new size shows.
    for _ in 0..100 {
        tx.send(b"\n".to_vec()).await.expect("send");
        let before = out.matches("\r\n").count();
        while out.matches("\r\n").count() < before + 2 {
            match h.events.recv().await {
                Some(ExecEvent::Stdout(b)) => out.push_str(&text(&b)),
                other => panic!("{other:?} after {out:?}"),
            }
        }
        if out.contains("50 132") {
            break;
        }
    }
    assert!(out.contains("50 132"), "{out:?}");
    drop(tx);
    read_until(&mut h, &mut out, "bye").await;
    assert_eq!(wait_exit(&mut h).await.code, 0);
    env.finish().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn files_are_shared_with_exec() {
    let mut env = Env::new();
    let s = env.running("alice", 2_000_109).await;
    assert_eq!(env.sh(&s, "mkdir -p a && printf 'from exec' > a/x.txt").await.exit_code, 0);
    assert_eq!(env.b.read_file(&s, &wpath("a/x.txt")).await.expect("read"), b"from exec");
    env.b.write_file(&s, &wpath("b/y.txt"), b"from api".to_vec(), 0o640).await.expect("write");
    let out = env.sh(&s, "cat b/y.txt; echo; stat -c '%u %g %a' b/y.txt").await;
    assert_eq!(text(&out.stdout), format!("from api\n{0} {0} 640\n", s.uid));
    let list = env.b.list_files(&s, &WorkspacePath::root()).await.expect("list");
    let mut names: Vec<&str> = list.iter().map(|e| e.name.as_str()).collect();
    names.sort_unstable();
    assert_eq!(names, ["a", "b"]);
    env.finish().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn workspaces_cannot_reach_each_other() {
    let mut env = Env::new();
    let a = env.running("alice", 2_000_110).await;
    let b = env.running("bob", 2_000_111).await;
    let secret = env.home(&b).join("secret.txt");
    assert_eq!(env.sh(&b, "printf topsecret > secret.txt && chmod 644 secret.txt").await.exit_code, 0);

    let out = env.exec(&a, ExecRequest::new(["cat", &secret.to_string_lossy()])).await;
    assert_ne!(out.exit_code, 0);
    assert!(text(&out.stderr).contains("Permission denied"), "{out:?}");
    assert!(out.stdout.is_empty());
    let out = env.exec(&a, ExecRequest::new(["ls", &env.state.join("workspaces").to_string_lossy()])).await;
    assert!(text(&out.stderr).contains("Permission denied"), "listing all homes: {out:?}");
    let out = env.exec(&a, ExecRequest::new(["ls", &env.state.join("run").join("dir").to_string_lossy()])).await;
    assert_ne!(out.exit_code, 0, "reading the run state: {out:?}");

    // Nor signal each other's processes.
    let mut h =
        env.b.exec_stream(&b, ExecRequest::new(["sh", "-c", "echo $$; exec sleep 1000"])).await.expect("stream");
    let pid = text(&next_stdout(&mut h).await).trim().to_owned();
    let out = env.sh(&a, &format!("kill -9 {pid}")).await;
    assert_ne!(out.exit_code, 0, "{out:?}");
    assert!(Path::new(&format!("/proc/{pid}")).exists());
    // Stopping one workspace leaves the other's processes alone.
    env.b.stop(&a).await.expect("stop a");
    assert!(processes_of(b.uid).iter().any(|p| p.to_string() == pid));
    drop(h);
    env.finish().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn stop_kills_background_processes() {
    let mut env = Env::new();
    let s = env.running("alice", 2_000_112).await;
    let out = env.sh(&s, "sleep 1000 & setsid sleep 1001 </dev/null >/dev/null 2>&1 & echo $!").await;
    assert_eq!(out.exit_code, 0, "{out:?}");
    assert!(processes_of(s.uid).len() >= 2, "the background sleeps run");
    let st = env.b.stats(&s).await.expect("stats");
    assert!(st.pids >= 2 && st.memory_bytes > 0, "{st:?}");
    env.b.stop(&s).await.expect("stop");
    // stop returns only once they are gone.
    assert_eq!(processes_of(s.uid), Vec::<i32>::new());
    env.finish().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn pids_limit_stops_a_fork_loop() {
    let mut env = Env::new();
    let mut s = env.spec("alice", 2_000_113);
    s.limits.pids = Some(12);
    env.b.create(&s).await.expect("create");
    env.b.start(&s).await.expect("start");
    let out = env.sh(&s, "i=0; while [ $i -lt 50 ]; do sleep 1000 & i=$((i+1)); done; echo looped").await;
    let err = text(&out.stderr).to_lowercase();
    assert!(err.contains("fork") || err.contains("resource"), "{out:?}");
    let n = processes_of(s.uid).len();
    assert!(n <= 12, "{n} processes under a limit of 12");
    let st = env.b.stats(&s).await.expect("stats");
    assert!(st.pids <= 12, "{st:?}");
    env.b.stop(&s).await.expect("stop");
    assert!(processes_of(s.uid).is_empty());
    // Afterwards the workspace works again.
    env.b.start(&s).await.expect("start");
    assert_eq!(env.sh(&s, "echo alive").await.stdout, b"alive\n");
    env.finish().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn stats_count_cpu_memory_and_disk() {
    let mut env = Env::new();
    let s = env.running("alice", 2_000_114).await;
    let st = env.b.stats(&s).await.expect("stats");
    assert_eq!((st.pids, st.cpu_usage_ns, st.memory_limit_bytes), (0, 0, None), "{st:?}");
    let mut h = env
        .b
        .exec_stream(
            &s,
            ExecRequest::new([
                "sh",
                "-c",
                "i=0; while [ $i -lt 200000 ]; do i=$((i+1)); done; echo busy; exec sleep 1000",
            ]),
        )
        .await
        .expect("stream");
    assert_eq!(next_stdout(&mut h).await, b"busy\n");
    let st = env.b.stats(&s).await.expect("stats");
    assert!(st.pids >= 1 && st.cpu_usage_ns > 0 && st.memory_bytes > 0, "{st:?}");
    let before = st.disk_bytes;
    env.b.write_file(&s, &wpath("big"), vec![7u8; 1 << 20], 0o644).await.expect("write");
    let st = env.b.stats(&s).await.expect("stats");
    assert!(st.disk_bytes >= before + (1 << 20), "{st:?}");
    drop(h);
    env.finish().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn capabilities_are_honest() {
    let env = Env::new();
    let c = env.b.capabilities();
    assert_eq!(c.isolation, warren_core::IsolationLevel::UidOnly);
    assert!(c.pids_limit && c.tty);
    assert!(!c.memory_limit && !c.cpu_limit && !c.network_isolation && !c.process_isolation && !c.freeze);
}

#[tokio::test(flavor = "multi_thread")]
async fn host_account_names_the_uid_until_destroy() {
    let mut env = Env::new();
    let s = env.running("u_acct", 2_000_115).await;
    assert_eq!(s.username, "u_acct");
    let out = env.sh(&s, "id -un; id -gn; whoami").await;
    assert_eq!(text(&out.stdout), "u_acct\nu_acct\nu_acct\n", "{out:?}");
    let entry = |uid: u32| {
        std::fs::read_to_string("/etc/passwd")
            .expect("passwd")
            .lines()
            .find(|l| l.split(':').nth(2) == Some(uid.to_string().as_str()))
            .map(str::to_owned)
    };
    let line = entry(s.uid).expect("a passwd entry");
    assert_eq!(line, format!("u_acct:*:{0}:{0}:warren workspace:{1}:/usr/sbin/nologin", s.uid, env.home(&s).display()));
    // Creating again changes nothing; destroy removes the entries.
    env.b.create(&s).await.expect("create again");
    assert_eq!(entry(s.uid).as_deref(), Some(line.as_str()));
    env.b.destroy(&s).await.expect("destroy");
    assert_eq!(entry(s.uid), None);
    let group = std::fs::read_to_string("/etc/group").expect("group");
    assert!(!group.lines().any(|l| l.split(':').nth(2) == Some(s.gid.to_string().as_str())), "{group}");
    env.finish().await;
}
