//! Shared set-up for the namespace backend's integration tests: a private state directory, the
//! backend opened on it with the `warren-nsinit` helper built by cargo, workspaces on fixed
//! per-test uids, and a cleanup that stops and destroys every workspace even when the test
//! panics.

#![allow(dead_code)]

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use warren_backend_ns::{HelperCmd, NsBackend};
use warren_core::{Backend, ExecOutput, ExecRequest, Limits, State, WorkspaceSpec};

/// First uid of these tests (far from the conformance suite's range, which starts at 2_000_200).
pub const UID_BASE: u32 = 2_500_000;
/// Uids per test process: concurrent runs of the test binaries claim distinct slots (the
/// conformance suite's slot lock files are reused for that).
pub const UIDS_PER_SLOT: u32 = 100;

/// The uid of workspace number `n` (`n < 100`, distinct per workspace across all tests of a binary).
pub fn uid(n: u32) -> u32 {
    assert!(n < UIDS_PER_SLOT, "workspace number {n} is out of range");
    UID_BASE + warren_testkit::uid_slot() * UIDS_PER_SLOT + n
}

/// Default timeout of a command in these tests: long enough to never fire on a working host,
/// short enough that a hung attack fails the test instead of hanging it.
pub const EXEC_TIMEOUT: Duration = Duration::from_secs(30);

/// One test's world. Dropping it stops and destroys its workspaces and kills any leftover
/// process of their uids.
pub struct Env {
    pub backend: Arc<NsBackend>,
    specs: Mutex<Vec<WorkspaceSpec>>,
    dir: Option<tempfile::TempDir>,
}

/// Opens the backend on a fresh state directory; `None` (with the reason printed) when this
/// host cannot run the namespace backend.
pub fn env() -> Option<Env> {
    if let Err(why) = NsBackend::probe() {
        eprintln!("SKIPPED: the ns backend cannot run here: {why}");
        return None;
    }
    let dir = tempfile::tempdir().expect("creating a temp state dir");
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o711)).expect("chmod state dir");
    let helper = HelperCmd { program: env!("CARGO_BIN_EXE_warren-nsinit").into(), args: vec![] };
    let backend = NsBackend::new(dir.path(), Some(helper)).expect("opening the ns backend");
    Some(Env { backend: Arc::new(backend), specs: Mutex::new(Vec::new()), dir: Some(dir) })
}

impl Env {
    /// The state directory.
    pub fn state_dir(&self) -> &Path {
        self.dir.as_ref().expect("state dir lives until drop").path()
    }

    /// Creates and starts workspace number `n` of user `user` with `limits`.
    pub async fn workspace(&self, user: &str, n: u32, limits: Limits) -> WorkspaceSpec {
        let spec = WorkspaceSpec {
            // The account is named after the test's role ("attacker", "victim") so paths read
            // plainly; the engine derives real names with `UserId::linux_username`.
            username: user.to_owned(),
            limits,
            ..warren_testkit::spec(user, uid(n))
        };
        self.start_spec(spec).await
    }

    /// Creates and starts `spec` (registered for cleanup first).
    pub async fn start_spec(&self, spec: WorkspaceSpec) -> WorkspaceSpec {
        // Leftovers of an earlier, killed run on the same uid would blur what the test sees.
        kill_uid(spec.uid);
        self.specs.lock().expect("specs lock").push(spec.clone());
        self.backend.create(&spec).await.expect("create");
        let st = self.backend.start(&spec).await.expect("start");
        assert_eq!(st.state, State::Running);
        spec
    }

    /// The home directory of `spec` on the host.
    pub fn host_home(&self, spec: &WorkspaceSpec) -> PathBuf {
        self.backend.host_files(spec).expect("the ns backend keeps files on the host").dir
    }

    /// The runtime directory of `spec` on the host (control socket, init record).
    pub fn run_dir(&self, spec: &WorkspaceSpec) -> PathBuf {
        self.state_dir().join("run/ns").join(spec.id.as_str())
    }

    /// Runs `req` (with [`EXEC_TIMEOUT`] unless it has a timeout) in `spec`.
    pub async fn exec(&self, spec: &WorkspaceSpec, mut req: ExecRequest) -> Out {
        if req.timeout.is_none() {
            req.timeout = Some(EXEC_TIMEOUT);
        }
        let what = req.argv.join(" ");
        let out = self.backend.exec(spec, req).await.unwrap_or_else(|e| panic!("exec of {what:?} failed to run: {e}"));
        assert!(!out.timed_out, "{what:?} hung until its timeout: {:?}", Out::from(out.clone()));
        Out::from(out)
    }

    /// Runs a shell script in `spec`.
    pub async fn sh(&self, spec: &WorkspaceSpec, script: &str) -> Out {
        self.exec(spec, ExecRequest::new(["sh", "-c", script])).await
    }

    /// Runs a python3 program in `spec`.
    pub async fn py(&self, spec: &WorkspaceSpec, code: &str) -> Out {
        self.exec(spec, ExecRequest::new(["python3", "-c", code])).await
    }

    /// Asserts that `spec` still runs commands.
    pub async fn assert_alive(&self, spec: &WorkspaceSpec) {
        let out = self.sh(spec, "echo ok").await;
        assert_eq!((out.code, out.stdout.as_str()), (0, "ok\n"), "workspace {} no longer answers: {out:?}", spec.user);
    }

    /// Stops and destroys every workspace, asserting success, and checks that no process of
    /// their uids survives on the host.
    pub async fn finish(self) {
        // On a panic here, Drop still cleans up: the list is only emptied once all went well.
        let specs = self.specs.lock().expect("specs lock").clone();
        for s in &specs {
            self.backend.stop(s).await.expect("stop");
            assert_no_processes(s.uid);
            self.backend.destroy(s).await.expect("destroy");
        }
        self.specs.lock().expect("specs lock").clear();
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        let specs = std::mem::take(&mut *self.specs.lock().unwrap_or_else(|p| p.into_inner()));
        if specs.is_empty() {
            return;
        }
        let backend = self.backend.clone();
        // Drop cannot await, and may run on a runtime thread: clean up on a thread of our own.
        let cleanup = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("cleanup runtime");
            rt.block_on(async {
                for s in &specs {
                    if let Err(e) = backend.stop(s).await {
                        eprintln!("cleanup: stopping {}: {e}", s.id);
                    }
                    kill_uid(s.uid);
                    if let Err(e) = backend.destroy(s).await {
                        eprintln!("cleanup: destroying {}: {e}", s.id);
                    }
                }
            });
        });
        let _ = cleanup.join();
    }
}

/// Output of a command, as text.
#[derive(Clone, Debug)]
pub struct Out {
    pub code: i32,
    pub signal: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl From<ExecOutput> for Out {
    fn from(o: ExecOutput) -> Self {
        Self {
            code: o.exit_code,
            signal: o.signal,
            stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
        }
    }
}

impl Out {
    /// Asserts exit code 0 and returns stdout.
    pub fn ok(&self, what: &str) -> &str {
        assert_eq!(self.code, 0, "{what} should have succeeded: {self:?}");
        &self.stdout
    }

    /// Asserts a non-zero exit whose stderr says `why`.
    pub fn failed_with(&self, what: &str, why: &str) {
        assert_ne!(self.code, 0, "ATTACK SUCCEEDED: {what}: {self:?}");
        assert!(self.stderr.contains(why), "{what} failed, but not with {why:?}: {self:?}");
    }

    /// The value printed after `key` on a line `key value` of stdout.
    pub fn field(&self, key: &str) -> &str {
        self.stdout
            .lines()
            .find_map(|l| l.strip_prefix(key).and_then(|r| r.strip_prefix(' ')))
            .unwrap_or_else(|| panic!("no line {key:?} in the output: {self:?}"))
    }
}

/// Host processes (not zombies) whose real uid is `uid`.
pub fn host_processes(uid: u32) -> Vec<(i32, String)> {
    warren_testkit::host_processes(uid)
}

/// Kills every host process of `uid` (only test uids are passed here).
pub fn kill_uid(uid: u32) {
    for (pid, _) in host_processes(uid) {
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL);
    }
}

/// Asserts that no process of `uid` is left on the host (a killed pid namespace empties
/// promptly; this waits up to 10 s for the kernel to finish).
pub fn assert_no_processes(uid: u32) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let left = host_processes(uid);
        if left.is_empty() {
            return;
        }
        assert!(Instant::now() < deadline, "processes of uid {uid} survived the workspace's stop: {left:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Whether a host process with `pid` exists and is not a zombie.
pub fn host_pid_alive(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(s) => s.rsplit_once(") ").is_some_and(|(_, rest)| !rest.starts_with('Z') && !rest.starts_with('X')),
        Err(_) => false,
    }
}
