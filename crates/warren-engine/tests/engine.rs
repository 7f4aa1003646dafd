//! The engine on real backends, real SQLite and real processes, in temporary state directories.
//!
//! Every test has its own state directory and its own uid range (the dir backend's `stop` kills
//! every process of a workspace's uid, so no two tests may share one).

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use warren_backend_dir::DirBackend;
use warren_backend_ns::NsBackend;
use warren_core::config::Config;
use warren_core::{Backend, BackendKind, ExecRequest, Limits, State, UserId, WorkspacePath, WorkspaceSpec};
use warren_engine::{CreateOptions, Engine, EngineOptions, WorkspaceInfo};

/// Uids of this test file: 2_300_000 + 1000 per test.
const UID_BASE: u32 = 2_300_000;

struct Env {
    _tmp: tempfile::TempDir,
    state: PathBuf,
    cfg: Config,
}

fn new_env(kind: BackendKind, slot: u32) -> Env {
    let tmp = tempfile::tempdir().expect("tempdir");
    std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o711)).expect("chmod tempdir 0711");
    let state = tmp.path().join("state");
    let cfg = Config {
        state_dir: state.clone(),
        backend: kind,
        uid_base: UID_BASE + slot * 1000,
        uid_count: 1000,
        ..Config::default()
    };
    Env { _tmp: tmp, state, cfg }
}

impl Env {
    async fn open(&self) -> Engine {
        Engine::open(self.cfg.clone(), EngineOptions::default()).await.expect("open engine")
    }
}

fn user(s: &str) -> UserId {
    UserId::new(s).expect("valid user id")
}

fn sh(script: &str) -> ExecRequest {
    ExecRequest::new(["sh", "-c", script])
}

fn path(p: &str) -> WorkspacePath {
    WorkspacePath::new(p).expect("valid path")
}

fn spec_of(info: &WorkspaceInfo) -> WorkspaceSpec {
    WorkspaceSpec {
        id: info.workspace_id.clone(),
        user: info.user.clone(),
        username: info.username.clone(),
        uid: info.uid,
        gid: info.uid,
        limits: info.limits.clone(),
        network: info.network,
        image: None,
    }
}

async fn lifecycle(kind: BackendKind, slot: u32) {
    let env = new_env(kind, slot);
    let engine = env.open().await;
    assert_eq!(engine.backend_kind(), kind);
    assert_eq!(engine.capabilities().kind, kind);
    let u = user("u_123");

    let err = engine.status(&u).await.expect_err("no workspace yet");
    assert_eq!(err.code(), "not_found", "{err}");

    let limits = Limits { pids: Some(128), ..Limits::default() };
    let info = engine
        .create(&u, CreateOptions { limits: Some(limits.clone()), network: Some(false), ..Default::default() })
        .await
        .expect("create");
    assert_eq!(info.user, u);
    assert_eq!(info.username, "u_123");
    assert_eq!(info.backend, kind);
    assert_eq!(info.state, State::Stopped);
    assert_eq!(info.limits, limits);
    assert!((env.cfg.uid_base..env.cfg.uid_base + env.cfg.uid_count).contains(&info.uid), "uid {}", info.uid);
    let home = env.state.join("workspaces").join("u_123");
    if kind == BackendKind::Dir {
        use std::os::unix::fs::MetadataExt;
        let md = std::fs::metadata(&home).expect("home exists");
        assert_eq!((md.uid(), md.gid(), md.mode() & 0o7777), (info.uid, info.uid, 0o700));
    }
    let mode = |p: &Path| std::fs::metadata(p).expect("stat").permissions().mode() & 0o7777;
    assert_eq!(mode(&env.state), 0o711);
    assert_eq!(mode(&env.state.join("workspaces")), 0o711);

    let err = engine.create(&u, CreateOptions::default()).await.expect_err("second create");
    assert_eq!(err.code(), "already_exists", "{err}");

    // Exec in a stopped workspace is the backend's Conflict; ensure_running starts it.
    let err = engine.exec(&u, sh("true")).await.expect_err("exec while stopped");
    assert_eq!(err.code(), "conflict", "{err}");
    let running = engine.ensure_running(&u).await.expect("ensure_running");
    assert_eq!(running.state, State::Running);
    assert_eq!(engine.ensure_running(&u).await.expect("again").state, State::Running);

    let out = engine.exec(&u, sh("echo hi > f; id -u; id -g; echo err >&2; exit 3")).await.expect("exec");
    assert_eq!(out.exit_code, 3);
    assert_eq!(String::from_utf8_lossy(&out.stdout), format!("{0}\n{0}\n", info.uid));
    assert_eq!(out.stderr, b"err\n");
    assert_eq!(engine.read_file(&u, &path("f")).await.expect("read f"), b"hi\n");

    engine.write_file(&u, &path("dir/g.txt"), b"from the host".to_vec(), 0o640).await.expect("write");
    let out = engine.exec(&u, sh("cat dir/g.txt; stat -c %a dir/g.txt")).await.expect("exec cat");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "from the host640\n");
    let names: Vec<String> =
        engine.list_files(&u, &WorkspacePath::root()).await.expect("ls").into_iter().map(|e| e.name).collect();
    assert!(names.contains(&"f".to_owned()) && names.contains(&"dir".to_owned()), "{names:?}");
    engine.make_dir(&u, &path("a/b")).await.expect("mkdir");
    engine.delete_file(&u, &path("dir"), true).await.expect("rm -r");
    let err = engine.read_file(&u, &path("dir/g.txt")).await.expect_err("deleted");
    assert_eq!(err.code(), "not_found");

    let stats = engine.stats(&u).await.expect("stats");
    assert!(stats.disk_bytes > 0, "{stats:?}");

    // Streaming exec.
    let mut h = engine.exec_stream(&u, sh("echo one; echo two >&2")).await.expect("exec_stream");
    drop(h.stdin.take());
    let (mut out, mut err, mut code) = (Vec::new(), Vec::new(), None);
    while let Some(ev) = h.events.recv().await {
        match ev {
            warren_core::ExecEvent::Stdout(b) => out.extend(b),
            warren_core::ExecEvent::Stderr(b) => err.extend(b),
            warren_core::ExecEvent::Exit(st) => code = Some(st.code),
        }
    }
    assert_eq!((out.as_slice(), err.as_slice(), code), (&b"one\n"[..], &b"two\n"[..], Some(0)));

    let listed = engine.list().await.expect("list");
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].workspace_id, info.workspace_id);
    assert_eq!(listed[0].state, State::Running);

    let stopped = engine.stop(&u).await.expect("stop");
    assert_eq!(stopped.state, State::Stopped);
    assert_eq!(engine.status(&u).await.expect("status").state, State::Stopped);
    assert_eq!(engine.read_file(&u, &path("f")).await.expect("files survive stop"), b"hi\n");
    let started = engine.start(&u).await.expect("start");
    assert_eq!(started.state, State::Running);
    let out = engine.exec(&u, sh("cat f")).await.expect("exec after restart");
    assert_eq!(out.stdout, b"hi\n");

    engine.destroy(&u).await.expect("destroy");
    assert!(!home.exists(), "home removed");
    assert_eq!(engine.status(&u).await.expect_err("gone").code(), "not_found");
    assert_eq!(engine.destroy(&u).await.expect_err("destroy twice").code(), "not_found");
    assert!(engine.list().await.expect("list").is_empty());

    let kinds: Vec<String> = engine.events(Some(&u), 100).await.expect("events").into_iter().map(|e| e.kind).collect();
    assert_eq!(kinds, ["uid_allocated", "create", "auto_start", "stop", "start", "destroy"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn lifecycle_on_dir() {
    lifecycle(BackendKind::Dir, 0).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn lifecycle_on_ns() {
    if let Err(why) = NsBackend::probe() {
        eprintln!("skipped: the ns backend cannot run here: {why}");
        return;
    }
    lifecycle(BackendKind::Ns, 1).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn uid_is_stable_across_destroy_and_recreate() {
    let env = new_env(BackendKind::Dir, 2);
    let engine = env.open().await;
    let (a, b) = (user("alice"), user("bob"));
    let first = engine.create(&a, CreateOptions::default()).await.expect("create a");
    let other = engine.create(&b, CreateOptions::default()).await.expect("create b");
    assert_ne!(first.uid, other.uid);
    engine.destroy(&a).await.expect("destroy a");
    let again = engine.create(&a, CreateOptions::default()).await.expect("recreate a");
    assert_eq!(again.uid, first.uid, "same user, same uid");
    assert_ne!(again.workspace_id, first.workspace_id, "a new workspace");
    assert_eq!(again.state, State::Stopped);
    // Also in another state directory with the same range: the uid follows from the user id.
    let env2 = new_env(BackendKind::Dir, 2);
    let engine2 = env2.open().await;
    let elsewhere = engine2.create(&a, CreateOptions::default()).await.expect("create elsewhere");
    assert_eq!(elsewhere.uid, first.uid);
    engine2.destroy(&a).await.expect("cleanup");
    engine.destroy(&a).await.expect("cleanup a");
    engine.destroy(&b).await.expect("cleanup b");
}

#[tokio::test(flavor = "multi_thread")]
async fn reopening_keeps_status_and_files() {
    let env = new_env(BackendKind::Dir, 3);
    let u = user("u_reopen");
    let (running, stopped) = (user("u_running"), user("u_stopped"));
    {
        let engine = env.open().await;
        engine.create(&u, CreateOptions { network: Some(true), ..Default::default() }).await.expect("create");
        engine.start(&u).await.expect("start");
        engine.exec(&u, sh("mkdir -p d && echo kept > d/file")).await.expect("exec");
        engine.create(&running, CreateOptions::default()).await.expect("create");
        engine.start(&running).await.expect("start");
        engine.create(&stopped, CreateOptions::default()).await.expect("create");
    } // "warren restarted"
    let engine = env.open().await;
    let info = engine.status(&u).await.expect("status after reopen");
    assert_eq!(info.state, State::Running);
    assert!(info.network);
    assert_eq!(engine.read_file(&u, &path("d/file")).await.expect("file kept"), b"kept\n");
    let out = engine.exec(&u, sh("cat d/file")).await.expect("exec after reopen");
    assert_eq!(out.stdout, b"kept\n");
    let states: Vec<(String, State)> =
        engine.list().await.expect("list").into_iter().map(|i| (i.user.to_string(), i.state)).collect();
    assert_eq!(
        states,
        [
            ("u_reopen".to_owned(), State::Running),
            ("u_running".to_owned(), State::Running),
            ("u_stopped".to_owned(), State::Stopped)
        ]
    );
    // Nothing differed, so reopening recorded no reconcile event.
    assert!(engine.events(None, 1000).await.expect("events").iter().all(|e| e.kind != "reconcile"));
    for x in [&u, &running, &stopped] {
        engine.destroy(x).await.expect("cleanup");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn reconcile_follows_the_host() {
    let env = new_env(BackendKind::Dir, 4);
    let u = user("u_rec");
    let info = {
        let engine = env.open().await;
        engine.create(&u, CreateOptions::default()).await.expect("create");
        engine.start(&u).await.expect("start")
    };
    // Behind warren's back (a reboot would do the same): the workspace stops.
    DirBackend::new(&env.state).expect("dir backend").stop(&spec_of(&info)).await.expect("stop behind warren's back");
    let engine = env.open().await;
    assert_eq!(engine.status(&u).await.expect("status").state, State::Stopped);
    let events = engine.events(Some(&u), 100).await.expect("events");
    let rec: Vec<_> = events.iter().filter(|e| e.kind == "reconcile").collect();
    assert_eq!(rec.len(), 1, "{events:?}");
    assert_eq!(rec[0].detail["desired"], "running");
    assert_eq!(rec[0].detail["actual"], "stopped");
    assert_eq!(rec[0].workspace_id.as_ref(), Some(&info.workspace_id));
    drop(engine);
    // The store now agrees with the host: opening again records nothing new.
    let engine = env.open().await;
    let n = engine.events(Some(&u), 100).await.expect("events").iter().filter(|e| e.kind == "reconcile").count();
    assert_eq!(n, 1);
    engine.destroy(&u).await.expect("cleanup");
}

#[tokio::test(flavor = "multi_thread")]
async fn backend_choice() {
    let env = new_env(BackendKind::Auto, 5);
    let engine = env.open().await;
    let expected = if NsBackend::probe().is_ok() { BackendKind::Ns } else { BackendKind::Dir };
    assert_eq!(engine.backend_kind(), expected);
    drop(engine);

    // docker when asked for: opened if dockerd answers, otherwise refused with the probe's reason.
    let cfg = Config { backend: BackendKind::Docker, ..env.cfg.clone() };
    match warren_backend_docker::DockerBackend::probe() {
        Ok(()) => {
            let engine = Engine::open(cfg, EngineOptions::default()).await.expect("dockerd answers");
            assert_eq!(engine.backend_kind(), BackendKind::Docker);
        }
        Err(why) => {
            let err = Engine::open(cfg, EngineOptions::default()).await.expect_err("dockerd is not reachable");
            assert_eq!(err.code(), "unsupported");
            assert!(err.to_string().contains(&why), "{err}");
        }
    }

    if let Err(why) = NsBackend::probe() {
        let cfg = Config { backend: BackendKind::Ns, ..env.cfg.clone() };
        let err = Engine::open(cfg, EngineOptions::default()).await.expect_err("ns cannot run here");
        assert_eq!(err.code(), "unsupported");
        assert!(err.to_string().contains(&why), "{err}");
    }

    let cfg = Config { uid_base: 0, ..env.cfg.clone() };
    let err = Engine::open(cfg, EngineOptions::default()).await.expect_err("uid 0 in range");
    assert_eq!(err.code(), "invalid_request");
    let engine = env.open().await;
    let bad = Limits { pids: Some(1), ..Limits::default() };
    let err = engine
        .create(&user("u_bad"), CreateOptions { limits: Some(bad), ..Default::default() })
        .await
        .expect_err("limits");
    assert_eq!(err.code(), "invalid_request");
    assert!(engine.status(&user("u_bad")).await.is_err(), "nothing was created");
}

#[tokio::test(flavor = "multi_thread")]
async fn concurrent_creates_in_one_process_exactly_one_wins() {
    let env = new_env(BackendKind::Dir, 6);
    let (e1, e2) = (env.open().await, env.open().await);
    let u = user("u_race");
    let (r1, r2) = tokio::join!(e1.create(&u, CreateOptions::default()), e2.create(&u, CreateOptions::default()));
    let codes: Vec<&str> = [&r1, &r2].iter().map(|r| r.as_ref().map_or_else(|e| e.code(), |_| "ok")).collect();
    let mut sorted = codes.clone();
    sorted.sort();
    assert_eq!(sorted, ["already_exists", "ok"], "{r1:?} {r2:?}");
    e1.destroy(&u).await.expect("cleanup");
}

const RACE_STATE: &str = "WARREN_ENGINE_TEST_RACE_STATE";
const RACE_UID_BASE: &str = "WARREN_ENGINE_TEST_RACE_UID_BASE";

/// Not a test on its own: a child process of `two_processes_racing_create_exactly_one_wins`.
/// Without its variables it does nothing.
#[test]
fn race_child() {
    let (Some(state), Some(base)) = (std::env::var_os(RACE_STATE), std::env::var(RACE_UID_BASE).ok()) else {
        return;
    };
    let cfg = Config {
        state_dir: PathBuf::from(state),
        backend: BackendKind::Dir,
        uid_base: base.parse().expect("uid base"),
        uid_count: 1000,
        ..Config::default()
    };
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("runtime");
    let code = rt.block_on(async {
        let engine = Engine::open(cfg, EngineOptions::default()).await.expect("child: open engine");
        match engine.create(&user("u_race"), CreateOptions::default()).await {
            Ok(_) => "ok".to_owned(),
            Err(e) => e.code().to_owned(),
        }
    });
    println!("RESULT={code}");
}

#[test]
fn two_processes_racing_create_exactly_one_wins() {
    let env = new_env(BackendKind::Dir, 7);
    let exe = std::env::current_exe().expect("test binary");
    // Fresh state directory: the processes also race to create and migrate the database.
    let children: Vec<_> = (0..4)
        .map(|_| {
            Command::new(&exe)
                .args(["--exact", "race_child", "--nocapture", "--test-threads=1"])
                .env(RACE_STATE, &env.state)
                .env(RACE_UID_BASE, env.cfg.uid_base.to_string())
                .stdout(Stdio::piped())
                .stderr(Stdio::inherit())
                .spawn()
                .expect("spawn child")
        })
        .collect();
    let mut results: Vec<String> = children
        .into_iter()
        .map(|c| {
            let out = c.wait_with_output().expect("wait child");
            assert!(out.status.success(), "child failed: {out:?}");
            let text = String::from_utf8_lossy(&out.stdout).into_owned();
            text.lines()
                .find_map(|l| l.split("RESULT=").nth(1))
                .unwrap_or_else(|| panic!("no result in {text:?}"))
                .to_owned()
        })
        .collect();
    results.sort();
    assert_eq!(results, ["already_exists", "already_exists", "already_exists", "ok"]);
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("runtime");
    rt.block_on(async {
        let engine = env.open().await;
        let list = engine.list().await.expect("list");
        assert_eq!(list.len(), 1);
        let creates = engine.events(None, 100).await.expect("events").iter().filter(|e| e.kind == "create").count();
        assert_eq!(creates, 1);
        engine.destroy(&user("u_race")).await.expect("cleanup");
    });
}
