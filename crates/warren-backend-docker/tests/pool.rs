//! The container pool (the seed's pooled mode) on a real docker daemon: placement in the
//! container with the fewest users, a full pool, the same seat and account after a restart,
//! and users sharing a container who cannot read each other's files, see each other's
//! processes or signal them. Skipped, with the reason printed, only when no daemon answers.
//! Uids 3_700_000.. belong to this file.

mod common;

use std::time::Duration;

use warren_backend_docker::pool::{DockerPool, PoolOptions};
use warren_backend_docker::DockerBackend;
use warren_core::{Backend, ExecEvent, ExecRequest, State, WorkspaceSpec};

const UID_BASE: u32 = 3_700_000;

struct Pool {
    _tmp: tempfile::TempDir,
    state: std::path::PathBuf,
    pool: DockerPool,
    opts: PoolOptions,
}

impl Pool {
    fn new(max_containers: u32, users_per_container: u32) -> Option<Self> {
        if let Err(why) = DockerBackend::probe() {
            eprintln!("SKIPPED: no docker daemon answers ({why})");
            return None;
        }
        common::ensure_image();
        let tmp = tempfile::tempdir().expect("tempdir");
        std::fs::set_permissions(tmp.path(), std::os::unix::fs::PermissionsExt::from_mode(0o711)).expect("chmod");
        let state = tmp.path().join("state");
        let opts = PoolOptions { max_containers, users_per_container };
        let pool = DockerPool::new(&state, common::options(), opts).expect("open the pool");
        Some(Self { _tmp: tmp, state, pool, opts })
    }

    /// The same state directory opened again (warren restarted).
    fn reopen(&self) -> DockerPool {
        DockerPool::new(&self.state, common::options(), self.opts).expect("reopen the pool")
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        let (pool, n) = (self.pool.clone(), self.opts.max_containers);
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
            rt.block_on(async {
                for i in 0..n {
                    let opts = bollard::query_parameters::RemoveContainerOptionsBuilder::default().force(true).build();
                    let _ = pool.docker().remove_container(&pool.container_name(i), Some(opts)).await;
                }
            });
        })
        .join();
    }
}

fn spec(slot: u32, i: u32, user: &str) -> WorkspaceSpec {
    warren_testkit::spec(user, UID_BASE + slot * 100 + i)
}

async fn sh(pool: &DockerPool, s: &WorkspaceSpec, script: &str) -> (i32, String, String) {
    let out = pool.exec(s, ExecRequest::new(["sh", "-c", script])).await.expect("exec");
    (
        out.exit_code,
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn placement_fewest_users_first_and_a_full_pool() {
    let Some(p) = Pool::new(2, 2) else { return };
    let specs: Vec<WorkspaceSpec> = (0..4).map(|i| spec(0, i, &format!("u_place{i}"))).collect();
    for s in &specs {
        p.pool.create(s).await.expect("create");
    }
    let seats: Vec<u32> =
        specs.iter().map(|s| p.pool.seat(s.user.as_str()).expect("seat").expect("placed").container).collect();
    assert_eq!(seats, vec![0, 1, 0, 1], "each user goes to the container with the fewest users");
    let extra = spec(0, 4, "u_place4");
    let err = p.pool.create(&extra).await.expect_err("the pool is full");
    assert_eq!(err.code(), "exhausted", "{err}");
    assert!(err.to_string().contains("MAX_CONTAINERS"), "the error names the setting: {err}");
    assert_eq!(p.pool.status(&extra).await.expect("status").state, State::Absent, "nothing was left of it");
    // A seat frees up: the next user takes it.
    p.pool.destroy(&specs[1]).await.expect("destroy");
    assert_eq!(p.pool.status(&specs[1]).await.expect("status").state, State::Absent);
    p.pool.create(&extra).await.expect("create in the freed seat");
    assert_eq!(p.pool.seat("u_place4").expect("seat").expect("placed").container, 1);
    // Creating an existing user again is idempotent: same seat.
    p.pool.create(&specs[0]).await.expect("create again");
    assert_eq!(p.pool.seat("u_place0").expect("seat").expect("placed").container, 0);
    // Network is refused (pooled containers have none).
    let mut net = spec(0, 5, "u_place5");
    net.network = true;
    assert_eq!(p.pool.create(&net).await.expect_err("network").code(), "unsupported");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn same_seat_account_and_files_after_a_restart() {
    let Some(p) = Pool::new(3, 5) else { return };
    let s = spec(1, 0, "alice.example.com");
    p.pool.create(&s).await.expect("create");
    let st = p.pool.start(&s).await.expect("start");
    assert_eq!(st.state, State::Running);
    let (code, out, err) = sh(&p.pool, &s, "id -un; id -u; pwd; stat -c %a .; echo kept > notes.txt").await;
    assert_eq!(code, 0, "{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], s.username, "the account resolves by name");
    assert!(s.username.starts_with("w-"), "a deterministic username for a non-seed id: {}", s.username);
    assert_eq!(lines[1], s.uid.to_string(), "commands run as the user's uid");
    assert_eq!(lines[2], format!("/workspace/{}", s.username));
    assert_eq!(lines[3], "700", "the home is private");
    let seat = p.pool.seat(s.user.as_str()).expect("seat").expect("placed");

    // warren restarts: a new pool object on the same state finds the same seat, account, files.
    let again = p.reopen();
    assert_eq!(again.seat(s.user.as_str()).expect("seat"), Some(seat.clone()));
    assert_eq!(again.status(&s).await.expect("status").state, State::Running, "re-adopted running");
    let (code, out, _) = sh(&again, &s, "id -un; cat notes.txt").await;
    assert_eq!((code, out.as_str()), (0, format!("{}\nkept\n", s.username).as_str()));

    // The container itself goes away (daemon restart, host reboot): start brings it back and
    // the home persists on the host.
    let opts = bollard::query_parameters::RemoveContainerOptionsBuilder::default().force(true).build();
    again.docker().remove_container(&again.container_name(seat.container), Some(opts)).await.expect("remove");
    assert_eq!(again.status(&s).await.expect("status").state, State::Stopped);
    again.start(&s).await.expect("start again");
    let (code, out, _) = sh(&again, &s, "cat notes.txt").await;
    assert_eq!((code, out.as_str()), (0, "kept\n"));
    assert_eq!(again.seat(s.user.as_str()).expect("seat").map(|s| s.container), Some(seat.container));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn users_sharing_a_container_are_isolated() {
    let Some(p) = Pool::new(1, 5) else { return };
    let (a, b) = (spec(2, 0, "u_alice"), spec(2, 1, "u_bob"));
    for s in [&a, &b] {
        p.pool.create(s).await.expect("create");
        p.pool.start(s).await.expect("start");
    }
    let (sa, sb) = (p.pool.seat("u_alice").expect("seat"), p.pool.seat("u_bob").expect("seat"));
    assert_eq!(sa.map(|s| s.container), sb.map(|s| s.container), "one container for both");
    let (code, _, err) = sh(&p.pool, &a, "echo secret > secret.txt; chmod 644 secret.txt").await;
    assert_eq!(code, 0, "{err}");

    // Alice keeps a process running.
    let mut h = p.pool.exec_stream(&a, ExecRequest::new(["sh", "-c", "echo $$; exec sleep 300"])).await.expect("exec");
    let pid = match tokio::time::timeout(Duration::from_secs(30), h.events.recv()).await.expect("pid in time") {
        Some(ExecEvent::Stdout(b)) => String::from_utf8_lossy(&b).trim().to_owned(),
        other => panic!("expected the pid, got {other:?}"),
    };
    // Positive control: Alice sees her own process.
    let (_, mine, _) = sh(&p.pool, &a, &format!("test -d /proc/{pid} && echo visible")).await;
    assert_eq!(mine.trim(), "visible");

    // Bob cannot read her home, list /workspace, see her process or signal it.
    let home_a = format!("/workspace/{}", a.username);
    let (code, _, err) = sh(&p.pool, &b, &format!("cat {home_a}/secret.txt")).await;
    assert_ne!(code, 0, "bob read alice's file");
    assert!(err.contains("denied"), "{err}");
    let (code, out, _) = sh(&p.pool, &b, "ls /workspace").await;
    assert!(code != 0 || !out.contains(&a.username), "bob listed the homes: {out}");
    let (_, out, _) = sh(&p.pool, &b, &format!("test -d /proc/{pid} && echo SEEN_$((1+1)); ps -o pid,user,args")).await;
    assert!(!out.contains("SEEN_2"), "bob sees alice's process: {out}");
    assert!(out.contains(&b.username) || out.contains("u_bob"), "positive control: bob's ps lists his own: {out}");
    assert!(!out.contains("sleep 300"), "bob's ps shows alice's command: {out}");
    let (code, _, _) = sh(&p.pool, &b, &format!("kill -9 {pid}")).await;
    assert_ne!(code, 0, "bob signalled alice's process");
    let (_, caps, _) = sh(&p.pool, &b, "grep CapEff /proc/self/status").await;
    assert!(caps.contains("0000000000000000"), "commands run without capabilities: {caps}");
    let (_, still, _) = sh(&p.pool, &a, &format!("test -d /proc/{pid} && echo alive")).await;
    assert_eq!(still.trim(), "alive");

    // Stopping Bob kills only Bob's processes.
    p.pool.stop(&b).await.expect("stop bob");
    assert_eq!(p.pool.status(&b).await.expect("status").state, State::Stopped);
    assert_eq!(p.pool.exec(&b, ExecRequest::new(["true"])).await.expect_err("stopped").code(), "conflict");
    let (_, still, _) = sh(&p.pool, &a, &format!("test -d /proc/{pid} && echo alive")).await;
    assert_eq!(still.trim(), "alive", "stopping bob touched alice");
    // Stopping Alice ends her process.
    p.pool.stop(&a).await.expect("stop alice");
    let end = tokio::time::timeout(Duration::from_secs(30), async {
        while let Some(ev) = h.events.recv().await {
            if let ExecEvent::Exit(s) = ev {
                return s;
            }
        }
        panic!("no exit");
    })
    .await
    .expect("alice's process ended");
    assert_eq!(end.signal, Some(9), "{end:?}");
}

/// The `/proc` mount options of the running pool container `n`, read on the host.
async fn proc_options(pool: &DockerPool, n: u32) -> String {
    let c = pool
        .docker()
        .inspect_container(&pool.container_name(n), None::<bollard::query_parameters::InspectContainerOptions>)
        .await
        .expect("inspect");
    let pid = c.state.and_then(|s| s.pid).expect("a running container has a pid");
    let mounts = std::fs::read_to_string(format!("/proc/{pid}/mounts")).expect("mounts");
    mounts
        .lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .find(|f| f.len() > 3 && f[1] == "/proc" && f[2] == "proc")
        .map(|f| f[3].to_owned())
        .expect("the container has /proc")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_adopted_container_that_shows_processes_is_sealed_again() {
    let Some(p) = Pool::new(1, 5) else { return };
    let (a, b) = (spec(3, 0, "u_carol"), spec(3, 1, "u_dave"));
    p.pool.create(&a).await.expect("create");
    p.pool.start(&a).await.expect("start");
    assert!(proc_options(&p.pool, 0).await.contains("hidepid=invisible"), "a new pool container hides processes");
    let (_, tmp, _) = sh(&p.pool, &a, "stat -c %a:%u /tmp").await;
    assert_eq!(tmp.trim(), "1777:0", "the shared /tmp is root's and sticky");
    // Someone on the host undoes the hiding (or a warren was killed between start and hiding).
    let c = p
        .pool
        .docker()
        .inspect_container(&p.pool.container_name(0), None::<bollard::query_parameters::InspectContainerOptions>)
        .await
        .expect("inspect");
    let pid = c.state.and_then(|s| s.pid).expect("pid").to_string();
    let st = std::process::Command::new("nsenter")
        .args(["--target", &pid, "--mount", "--pid", "--", "mount", "-o", "remount,hidepid=off", "/proc"])
        .status()
        .expect("nsenter");
    assert!(st.success());
    assert!(!proc_options(&p.pool, 0).await.contains("hidepid=invisible"), "the control: hiding is off now");
    // A restarted warren adopts the running container only after hiding processes again.
    let again = p.reopen();
    again.create(&b).await.expect("create");
    again.start(&b).await.expect("start");
    assert!(proc_options(&again, 0).await.contains("hidepid=invisible"), "the adopted container was not sealed again");
}
