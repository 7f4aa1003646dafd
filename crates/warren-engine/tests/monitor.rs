//! The resource monitor on real backends: a memory hog, a disk filler and a fork of processes
//! trigger the workspace's policy (warn, stop, kill), events are recorded, and the disk quota
//! refuses writes through the engine.

use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use warren_core::config::Config;
use warren_core::monitor::{Action, MonitorPolicy, Resource};
use warren_core::{BackendKind, ExecEvent, ExecRequest, Limits, State, UserId, WorkspacePath};
use warren_engine::{CreateOptions, Engine, EngineOptions};

/// Uids of this test file: 3_600_000 + 1000 per test.
const UID_BASE: u32 = 3_600_000;

struct Env {
    _tmp: tempfile::TempDir,
    engine: Engine,
}

async fn env(kind: BackendKind, slot: u32) -> Env {
    let tmp = tempfile::tempdir().expect("tempdir");
    std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o711)).expect("chmod tempdir 0711");
    let cfg = Config {
        state_dir: tmp.path().join("state"),
        backend: kind,
        uid_base: UID_BASE + slot * 1000,
        uid_count: 1000,
        ..Config::default()
    };
    let engine = Engine::open(cfg, EngineOptions::default()).await.expect("open engine");
    Env { _tmp: tmp, engine }
}

fn user(s: &str) -> UserId {
    UserId::new(s).expect("valid user id")
}

fn policy(action: Action) -> MonitorPolicy {
    MonitorPolicy {
        action,
        grace_secs: 0,
        cpu_percent: None,
        memory_percent: None,
        pids_percent: None,
        disk_percent: None,
    }
}

/// Starts `script` in the workspace and waits for it to print `ready`; the handle keeps it running.
async fn hog(engine: &Engine, u: &UserId, script: &str) -> warren_core::ExecHandle {
    let mut h = engine.exec_stream(u, ExecRequest::new(["sh", "-c", script])).await.expect("start the hog");
    let mut out = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while !String::from_utf8_lossy(&out).contains("ready") {
        let ev = tokio::time::timeout_at(deadline, h.events.recv()).await.expect("the hog got ready in time");
        match ev {
            Some(ExecEvent::Stdout(b)) | Some(ExecEvent::Stderr(b)) => out.extend_from_slice(&b),
            Some(ExecEvent::Exit(s)) => panic!("the hog exited early ({s:?}): {}", String::from_utf8_lossy(&out)),
            None => panic!("the hog's stream ended: {}", String::from_utf8_lossy(&out)),
        }
    }
    h
}

/// Runs monitor passes until one acts (at most ~10 s), returning what it did.
async fn tick_until_enforced(engine: &Engine) -> Vec<warren_engine::Enforcement> {
    for _ in 0..100 {
        let done = engine.monitor_tick().await.expect("monitor pass");
        if !done.is_empty() {
            return done;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the monitor never acted");
}

/// Holds ~24 MB in a shell variable (resident memory on every backend).
const MEMORY_HOG: &str = "x=$(head -c 24000000 /dev/zero | tr '\\0' a); echo ready; sleep 600; echo ${#x}";

async fn memory_hog_triggers_the_policy(kind: BackendKind, slot: u32, action: Action) {
    let env = env(kind, slot).await;
    let e = &env.engine;
    let u = user("u_hog");
    let limits = Limits { memory_bytes: Some(96 << 20), ..Limits::default() };
    let p = MonitorPolicy { memory_percent: Some(20), ..policy(action) };
    e.create(&u, CreateOptions { limits: Some(limits), policy: Some(p.clone()), ..Default::default() })
        .await
        .expect("create");
    assert_eq!(e.policy(&u).await.expect("policy"), p, "the workspace keeps its own policy");
    e.start(&u).await.expect("start");
    // Positive control: idle, the workspace is under the threshold and nothing happens.
    let idle = e.usage(&u, Duration::from_millis(200)).await.expect("usage");
    assert!(idle.over.is_empty(), "an idle workspace is over a threshold: {idle:?}");
    assert!(e.monitor_tick().await.expect("tick").is_empty());

    let handle = hog(e, &u, MEMORY_HOG).await;
    let busy = e.usage(&u, Duration::ZERO).await.expect("usage");
    assert!(busy.memory_bytes >= 20 << 20, "the hog's memory shows in the stats: {busy:?}");
    assert!(busy.over.contains(&Resource::Memory), "{busy:?}");
    let done = tick_until_enforced(e).await;
    assert_eq!(done.len(), 1, "{done:?}");
    assert_eq!((done[0].action, done[0].resource, done[0].threshold), (action, Resource::Memory, 20));
    let events = e.events(Some(&u), 20).await.expect("events");
    let ev = events.iter().rev().find(|ev| ev.kind == "monitor").expect("a monitor event is recorded");
    assert_eq!(ev.detail["action"], action.as_str());
    assert_eq!(ev.detail["resource"], "memory");

    let state = e.status(&u).await.expect("status").state;
    match action {
        Action::Warn => {
            assert_eq!(state, State::Running, "warn leaves the workspace alone");
            // Once per episode: the hog is still there, but no second warning.
            for _ in 0..3 {
                assert!(e.monitor_tick().await.expect("tick").is_empty(), "warned twice for one episode");
            }
            drop(handle);
        }
        Action::Stop => {
            assert_eq!(state, State::Stopped, "stop stops the workspace");
            drop(handle);
        }
        Action::Kill => {
            assert_eq!(state, State::Running, "kill starts the workspace again");
            drop(handle);
            let after = e.usage(&u, Duration::ZERO).await.expect("usage");
            assert!(after.memory_bytes < 20 << 20, "the hog is gone after kill: {after:?}");
        }
    }
    e.destroy(&u).await.expect("destroy");
}

async fn disk_quota(kind: BackendKind, slot: u32) {
    let env = env(kind, slot).await;
    let e = &env.engine;
    let u = user("u_disk");
    let limits = Limits { disk_bytes: Some(1 << 20), ..Limits::default() };
    let p = MonitorPolicy { disk_percent: Some(100), ..policy(Action::Stop) };
    e.create(&u, CreateOptions { limits: Some(limits), policy: Some(p), ..Default::default() }).await.expect("create");
    let path = WorkspacePath::new("small").expect("path");
    e.write_file(&u, &path, vec![b'a'; 512 << 10], 0o644).await.expect("a write under the quota");
    let big = WorkspacePath::new("big").expect("path");
    let err = e.write_file(&u, &big, vec![b'b'; 768 << 10], 0o644).await.expect_err("a write over the quota");
    assert_eq!(err.code(), "exhausted", "{err}");
    assert!(err.to_string().contains("disk quota"), "{err}");
    assert!(e.read_file(&u, &big).await.is_err(), "the refused file was not written");
    // No single file can outgrow the quota (RLIMIT_FSIZE = the disk limit)...
    e.start(&u).await.expect("start");
    let out = e.exec(&u, ExecRequest::new(["sh", "-c", "head -c 2000000 /dev/zero > one"])).await.expect("exec");
    assert_ne!(out.exit_code, 0, "a file larger than the quota was written: {out:?}");
    e.delete_file(&u, &WorkspacePath::new("one").expect("path"), false).await.expect("delete");
    // ... but several files can: the monitor sees the home over its quota and stops the workspace.
    let fill = "mkdir fill && for i in 1 2 3; do head -c 700000 /dev/zero > fill/$i; done";
    let out = e.exec(&u, ExecRequest::new(["sh", "-c", fill])).await.expect("fill");
    assert_eq!(out.exit_code, 0, "{out:?}");
    let done = tick_until_enforced(e).await;
    assert_eq!((done[0].action, done[0].resource), (Action::Stop, Resource::Disk), "{done:?}");
    assert_eq!(e.status(&u).await.expect("status").state, State::Stopped);
    e.delete_file(&u, &WorkspacePath::new("fill").expect("path"), true).await.expect("free the disk");
    e.write_file(&u, &big, vec![b'b'; 256 << 10], 0o644).await.expect("under the quota again");
    e.destroy(&u).await.expect("destroy");
}

async fn policy_updates(kind: BackendKind, slot: u32) {
    let env = env(kind, slot).await;
    let e = &env.engine;
    let u = user("u_pol");
    e.create(&u, CreateOptions::default()).await.expect("create");
    assert_eq!(e.policy(&u).await.expect("policy"), e.config().monitor.policy, "the default applies");
    let bad = MonitorPolicy { pids_percent: Some(0), ..MonitorPolicy::default() };
    let err = e.set_policy(&u, Some(bad)).await.expect_err("a zero threshold");
    assert!(err.to_string().contains("pids_percent"), "{err}");
    let p = MonitorPolicy { action: Action::Kill, ..MonitorPolicy::default() };
    assert_eq!(e.set_policy(&u, Some(p.clone())).await.expect("set"), p);
    assert_eq!(e.set_policy(&u, None).await.expect("reset"), e.config().monitor.policy);
    let all = e.usage_all(Duration::ZERO).await.expect("usage of all");
    assert_eq!(all.len(), 1);
    assert_eq!((all[0].state, all[0].cpu_percent), (State::Stopped, None));
    e.destroy(&u).await.expect("destroy");
}

/// The grace time: a workspace over its threshold is acted on only once it has stayed over for
/// `grace_secs`, and a spike that ends sooner is forgiven (its episode starts again).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ns_grace_time_delays_the_action_and_forgives_a_short_spike() {
    let env = env(BackendKind::Ns, 9).await;
    let e = &env.engine;
    let u = user("u_grace");
    let limits = Limits { memory_bytes: Some(96 << 20), ..Limits::default() };
    let p = MonitorPolicy { memory_percent: Some(20), grace_secs: 2, ..policy(Action::Stop) };
    e.create(&u, CreateOptions { limits: Some(limits), policy: Some(p), ..Default::default() }).await.expect("create");
    e.start(&u).await.expect("start");

    // A spike shorter than the grace time: over, then gone before 2 s have passed.
    let spike = hog(e, &u, MEMORY_HOG).await;
    assert!(e.monitor_tick().await.expect("tick").is_empty(), "acted at once despite the grace time");
    drop(spike);
    let mut retry = 0;
    while !e.usage(&u, Duration::ZERO).await.expect("usage").over.is_empty() {
        retry += 1;
        assert!(retry < 100, "the spike's memory was never released");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(e.monitor_tick().await.expect("tick").is_empty());
    tokio::time::sleep(Duration::from_millis(2200)).await;
    assert!(e.monitor_tick().await.expect("tick").is_empty(), "a forgiven spike was acted on later");
    assert_eq!(e.status(&u).await.expect("status").state, State::Running);

    // A hog that stays: nothing before 2 s, the stop after.
    let started = tokio::time::Instant::now();
    let hold = hog(e, &u, MEMORY_HOG).await;
    assert!(e.monitor_tick().await.expect("tick").is_empty(), "a new episode got no grace time");
    let done = tick_until_enforced(e).await;
    let waited = started.elapsed();
    assert!(waited >= Duration::from_secs(2), "acted after {waited:?}, inside the 2 s grace time");
    assert_eq!((done[0].action, done[0].resource), (Action::Stop, Resource::Memory), "{done:?}");
    drop(hold);
    assert_eq!(e.status(&u).await.expect("status").state, State::Stopped);
    e.destroy(&u).await.expect("destroy");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ns_memory_hog_stop() {
    memory_hog_triggers_the_policy(BackendKind::Ns, 0, Action::Stop).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ns_memory_hog_warn() {
    memory_hog_triggers_the_policy(BackendKind::Ns, 1, Action::Warn).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ns_memory_hog_kill() {
    memory_hog_triggers_the_policy(BackendKind::Ns, 2, Action::Kill).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dir_memory_hog_stop() {
    memory_hog_triggers_the_policy(BackendKind::Dir, 3, Action::Stop).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ns_disk_quota() {
    disk_quota(BackendKind::Ns, 4).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dir_disk_quota() {
    disk_quota(BackendKind::Dir, 5).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dir_policy_updates() {
    policy_updates(BackendKind::Dir, 6).await;
}

/// Imports a small image built from this host's programs as the docker backend's default image
/// (nothing can be pulled here); `false` when no docker daemon answers.
fn docker_image() -> bool {
    use std::sync::OnceLock;
    static READY: OnceLock<Result<(), String>> = OnceLock::new();
    if let Err(why) = warren_backend_docker::DockerBackend::probe() {
        eprintln!("SKIPPED: no docker daemon answers ({why})");
        return false;
    }
    let r = READY.get_or_init(|| {
        std::thread::spawn(|| {
            let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
            let root = dir.path().join("rootfs");
            warren_backend_docker::image::minimal_rootfs(&root, &[]).map_err(|e| e.to_string())?;
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(|e| e.to_string())?;
            rt.block_on(async {
                let b = warren_backend_docker::DockerBackend::new(dir.path()).map_err(|e| e.to_string())?;
                let tag = warren_backend_docker::DEFAULT_IMAGE;
                warren_backend_docker::image::import_dir(b.docker(), &root, tag).await.map_err(|e| e.to_string())
            })
        })
        .join()
        .unwrap_or_else(|_| Err("building the image panicked".into()))
    });
    if let Err(e) = r {
        panic!("the docker daemon answers but the image could not be built: {e}");
    }
    true
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn docker_memory_hog_stop() {
    if docker_image() {
        memory_hog_triggers_the_policy(BackendKind::Docker, 7, Action::Stop).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn docker_disk_quota() {
    if docker_image() {
        disk_quota(BackendKind::Docker, 10).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pool_memory_hog_kill_and_use_containers() {
    if !docker_image() {
        return;
    }
    // USE_CONTAINERS: new workspaces go to the pool; the monitor watches each user in it.
    let tmp = tempfile::tempdir().expect("tempdir");
    std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o711)).expect("chmod tempdir 0711");
    let mut cfg = Config {
        state_dir: tmp.path().join("state"),
        uid_base: UID_BASE + 8 * 1000,
        uid_count: 1000,
        ..Config::default()
    };
    cfg.pool.enabled = true;
    cfg.pool.max_containers = 1;
    let e = Engine::open(cfg, EngineOptions::default()).await.expect("open engine");
    assert_eq!(e.backend_kind(), BackendKind::Pool);
    let (u, other) = (user("u_poolhog"), user("u_neighbour"));
    let limits = Limits { memory_bytes: Some(96 << 20), ..Limits::default() };
    let p = MonitorPolicy { memory_percent: Some(20), ..policy(Action::Kill) };
    let opts = CreateOptions { limits: Some(limits), policy: Some(p), ..Default::default() };
    let info = e.create(&u, opts).await.expect("create");
    assert_eq!(info.backend, BackendKind::Pool);
    e.create(&other, CreateOptions::default()).await.expect("create the neighbour");
    e.start(&u).await.expect("start");
    e.start(&other).await.expect("start the neighbour");
    let mut neighbour = hog(&e, &other, "echo ready; sleep 600").await;
    let handle = hog(&e, &u, MEMORY_HOG).await;
    let done = tick_until_enforced(&e).await;
    assert_eq!(done.len(), 1, "only the hog is acted on: {done:?}");
    assert_eq!((&done[0].user, done[0].action, done[0].resource), (&u, Action::Kill, Resource::Memory));
    drop(handle);
    assert_eq!(e.status(&u).await.expect("status").state, State::Running, "kill restarts the user's seat");
    let after = e.usage(&u, Duration::ZERO).await.expect("usage");
    assert!(after.memory_bytes < 20 << 20, "the hog is gone: {after:?}");
    assert!(neighbour.events.try_recv().is_err(), "the neighbour's command still runs");
    assert_eq!(e.status(&other).await.expect("status").state, State::Running);
    for w in [&u, &other] {
        e.destroy(w).await.expect("destroy");
    }
    let docker = warren_backend_docker::DockerBackend::new(tmp.path()).expect("docker");
    let pool = warren_backend_docker::pool::DockerPool::new(
        &tmp.path().join("state"),
        warren_backend_docker::DockerOptions::default(),
        warren_backend_docker::pool::PoolOptions { max_containers: 1, users_per_container: 20 },
    )
    .expect("pool");
    let rm = bollard::query_parameters::RemoveContainerOptionsBuilder::default().force(true).build();
    let _ = docker.docker().remove_container(&pool.container_name(0), Some(rm)).await;
}
