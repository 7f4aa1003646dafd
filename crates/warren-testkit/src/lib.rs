//! Warren's conformance suite: one test body, generic over [`Backend`], that every backend runs
//! unchanged.
//!
//! A backend instantiates the suite in its `tests/conformance.rs` with a [`Harness`] (how to open
//! the backend on a state directory) and the [`conformance_tests!`] macro, which expands to one
//! `#[tokio::test(flavor = "multi_thread")]` per check so each check shows by name:
//!
//! ```ignore
//! use warren_core::BackendKind;
//! use warren_testkit::Harness;
//!
//! fn harness() -> Harness<warren_backend_dir::DirBackend> {
//!     Harness::new(BackendKind::Dir, |dir| warren_backend_dir::DirBackend::new(dir).expect("opening the dir backend"))
//! }
//!
//! warren_testkit::conformance_tests!(harness());
//! ```
//!
//! The test crate needs `tokio` (features `rt-multi-thread`, `macros`) as a dev-dependency.
//! [`Harness::skip_unless`] turns every check into a printed skip when the host cannot run the
//! backend (`NsBackend::probe()` failing, no Docker daemon, ...).
//!
//! Each check runs in its own state directory (a temp dir, mode 0711) with its own workspace uids
//! (from [`UID_BASE`] up, distinct per check, per backend kind and per concurrently running test
//! process, see [`uid_slot`]), so checks run in parallel.
//! The harness opens the backend on that state directory; dropping it and opening a new one on
//! the same directory is how the suite simulates "warren restarted" ([`Env::reopen`]).
//! Whatever a check leaves behind (also when it panics) is destroyed, leftover host processes of
//! its uids are killed, and the state directory is removed unless something is still mounted
//! beneath it.

use std::fmt;
use std::future::Future;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use warren_core::{
    Backend, BackendKind, Capabilities, ExecEvent, ExecHandle, ExecOutput, ExecRequest, ExitStatus, Result, UserId,
    WorkspacePath, WorkspaceSpec,
};

pub mod checks;

pub use checks::*;

/// First workspace uid the suite uses.
pub const UID_BASE: u32 = 2_000_200;
/// Uids reserved per check (a check uses at most this many workspaces).
pub const UIDS_PER_CHECK: u32 = 8;
/// Uids reserved per backend kind, so two backends' suites can run at once on one host.
pub const UIDS_PER_KIND: u32 = 200;
/// Uids reserved per test process ("slot"): concurrent runs of the suite (several `cargo test`
/// at once) each claim a slot with a lock file, so they never share a uid.
pub const UIDS_PER_SLOT: u32 = 4 * UIDS_PER_KIND;
/// Number of slots.
pub const SLOTS: u32 = 64;

/// Longest a single backend call (create, start, exec, ...) may take before the check fails as hung.
pub const OP_GUARD: Duration = Duration::from_secs(180);
/// Longest a whole check may take before it fails as hung.
pub const CHECK_GUARD: Duration = Duration::from_secs(900);
/// How long the suite waits for something that must happen "eventually" (a killed process to
/// disappear, a workspace to become usable again after its pids limit was hit).
pub const EVENTUALLY: Duration = Duration::from_secs(60);

/// How the suite opens the backend under test.
pub struct Harness<B: Backend> {
    kind: BackendKind,
    make: Box<dyn Fn(&Path) -> B + Send + Sync>,
    skip: Option<String>,
}

impl<B: Backend> Harness<B> {
    /// A harness for a backend of `kind`, opened by `make` on a state directory. `make` is called
    /// again on the same directory to simulate a restart of warren.
    pub fn new(kind: BackendKind, make: impl Fn(&Path) -> B + Send + Sync + 'static) -> Self {
        Self { kind, make: Box::new(make), skip: None }
    }

    /// Skips every check, printing the reason, when `probe` is `Err` (the host cannot run the backend).
    pub fn skip_unless(mut self, probe: std::result::Result<(), String>) -> Self {
        if let Err(why) = probe {
            self.skip = Some(why);
        }
        self
    }

    /// Why the checks are skipped, if they are.
    pub fn skip_reason(&self) -> Option<&str> {
        self.skip.as_deref()
    }

    /// The kind of backend this harness opens (its capabilities must say the same).
    pub fn kind(&self) -> BackendKind {
        self.kind
    }

    /// Opens the backend on `state_dir`.
    pub fn open(&self, state_dir: &Path) -> B {
        (self.make)(state_dir)
    }
}

impl<B: Backend> fmt::Debug for Harness<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Harness").field("kind", &self.kind).field("skip", &self.skip).finish_non_exhaustive()
    }
}

/// A workspace spec for `user` running as `uid` (gid the same), default limits, no network, no image.
pub fn spec(user: &str, uid: u32) -> WorkspaceSpec {
    WorkspaceSpec::new(UserId::new(user).expect("the suite's user ids are valid"), uid)
}

/// A workspace path from a literal the suite knows is valid.
pub fn wpath(p: &str) -> WorkspacePath {
    WorkspacePath::new(p).expect("the suite's workspace paths are valid")
}

/// Lossy UTF-8 of command output.
pub fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Describes a command's result for assertion messages.
pub fn describe(out: &ExecOutput) -> String {
    let clip = |b: &[u8]| {
        let s = text(&b[..b.len().min(2000)]);
        if b.len() > 2000 {
            format!("{s}... ({} bytes)", b.len())
        } else {
            s
        }
    };
    format!(
        "exit {} signal {:?} timed_out {} stdout {:?} stderr {:?}",
        out.exit_code,
        out.signal,
        out.timed_out,
        clip(&out.stdout),
        clip(&out.stderr)
    )
}

/// Awaits `fut`, failing the check if it takes longer than `limit` (a hang, not slowness:
/// the limits are minutes).
pub async fn guard<T>(what: &str, limit: Duration, fut: impl Future<Output = T>) -> T {
    match tokio::time::timeout(limit, fut).await {
        Ok(v) => v,
        Err(_) => panic!("{what} did not finish within {} s: the backend seems to hang", limit.as_secs()),
    }
}

/// Runs one check with the whole-check hang guard (what the macro's tests call).
pub async fn run_check(name: &str, check: impl Future<Output = ()>) {
    guard(&format!("conformance check {name}"), CHECK_GUARD, check).await;
}

/// Polls for a condition that must become true "eventually" ([`EVENTUALLY`]).
#[derive(Debug)]
pub struct Retry {
    what: String,
    deadline: Instant,
}

impl Retry {
    /// Starts waiting for `what`.
    pub fn new(what: impl Into<String>) -> Self {
        Self { what: what.into(), deadline: Instant::now() + EVENTUALLY }
    }

    /// Sleeps a little before the next try; panics (with `last`, what was seen) once the deadline passed.
    pub async fn wait(&mut self, last: impl fmt::Display) {
        if Instant::now() > self.deadline {
            panic!("{} did not happen within {} s; last seen: {last}", self.what, EVENTUALLY.as_secs());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// What a streaming exec produced, up to and including its exit.
#[derive(Clone, Debug, Default)]
pub struct Collected {
    /// Stdout (or terminal) bytes, concatenated.
    pub stdout: Vec<u8>,
    /// Stderr bytes, concatenated.
    pub stderr: Vec<u8>,
    /// Every event, in order.
    pub events: Vec<ExecEvent>,
    /// The exit, if one came before the stream ended.
    pub exit: Option<ExitStatus>,
}

/// Reads the next event of a streaming exec (hang-guarded).
pub async fn next_event(h: &mut ExecHandle) -> Option<ExecEvent> {
    guard("waiting for the next event of a streaming exec", OP_GUARD, h.events.recv()).await
}

/// Reads events until `Exit` (included) or the end of the stream.
pub async fn collect(h: &mut ExecHandle) -> Collected {
    let mut c = Collected::default();
    while let Some(ev) = next_event(h).await {
        match &ev {
            ExecEvent::Stdout(b) => c.stdout.extend_from_slice(b),
            ExecEvent::Stderr(b) => c.stderr.extend_from_slice(b),
            ExecEvent::Exit(st) => c.exit = Some(*st),
        }
        let done = matches!(ev, ExecEvent::Exit(_));
        c.events.push(ev);
        if done {
            break;
        }
    }
    c
}

/// Host processes (not zombies) whose real uid is `uid`: `(pid, command line)`.
pub fn host_processes(uid: u32) -> Vec<(i32, String)> {
    let mut out = Vec::new();
    let Ok(rd) = std::fs::read_dir("/proc") else { return out };
    for ent in rd.flatten() {
        let Some(pid) = ent.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else { continue };
        let Ok(status) = std::fs::read_to_string(ent.path().join("status")) else { continue };
        let mut real_uid = None;
        let mut zombie = false;
        for line in status.lines() {
            if let Some(rest) = line.strip_prefix("Uid:") {
                real_uid = rest.split_whitespace().next().and_then(|u| u.parse::<u32>().ok());
            } else if let Some(rest) = line.strip_prefix("State:") {
                zombie = rest.trim_start().starts_with('Z') || rest.trim_start().starts_with('X');
            }
        }
        if real_uid == Some(uid) && !zombie {
            let cmd = std::fs::read(ent.path().join("cmdline")).unwrap_or_default();
            let cmd = text(&cmd).replace('\0', " ").trim_end().to_owned();
            out.push((pid, cmd));
        }
    }
    out
}

/// This process's uid slot, claimed once with an exclusive `flock` on
/// `$TMPDIR/warren-testkit-uid-slot-{n}.lock` and held until the process exits.
pub fn uid_slot() -> u32 {
    use nix::fcntl::{Flock, FlockArg};
    static SLOT: std::sync::OnceLock<(u32, Flock<std::fs::File>)> = std::sync::OnceLock::new();
    SLOT.get_or_init(|| {
        for n in 0..SLOTS {
            let path = std::env::temp_dir().join(format!("warren-testkit-uid-slot-{n}.lock"));
            let Ok(f) = std::fs::OpenOptions::new().create(true).truncate(false).write(true).open(&path) else {
                continue;
            };
            if let Ok(lock) = Flock::lock(f, FlockArg::LockExclusiveNonblock) {
                return (n, lock);
            }
        }
        panic!(
            "all {SLOTS} uid slots of the conformance suite are taken (lock files in {})",
            std::env::temp_dir().display()
        )
    })
    .0
}

/// Mount points at or beneath `dir` (from `/proc/self/mountinfo`).
fn mounts_beneath(dir: &Path) -> Vec<PathBuf> {
    let Ok(info) = std::fs::read_to_string("/proc/self/mountinfo") else { return vec![] };
    info.lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(|m| PathBuf::from(m.replace("\\040", " ")))
        .filter(|m| m.starts_with(dir))
        .collect()
}

/// One check's world: a state directory, the backend opened on it, and the workspaces it made.
pub struct Env<'h, B: Backend> {
    harness: &'h Harness<B>,
    check: &'static str,
    state: PathBuf,
    backend: Option<B>,
    specs: Vec<WorkspaceSpec>,
    uids: std::ops::Range<u32>,
    next_uid: u32,
}

impl<B: Backend> fmt::Debug for Env<'_, B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Env")
            .field("check", &self.check)
            .field("state", &self.state)
            .field("specs", &self.specs.len())
            .finish_non_exhaustive()
    }
}

impl<'h, B: Backend> Env<'h, B> {
    /// Sets up check number `index` named `check`; `None` (after printing why) when the harness skips.
    pub fn new(harness: &'h Harness<B>, check: &'static str, index: u32) -> Option<Self> {
        if let Some(why) = harness.skip_reason() {
            println!("SKIP {check} on the {} backend: {why}", harness.kind());
            return None;
        }
        let state = tempfile::Builder::new()
            .prefix(&format!("warren-conformance-{}-{check}-", harness.kind()))
            .tempdir()
            .expect("creating a temporary state directory")
            .keep();
        std::fs::set_permissions(&state, std::fs::Permissions::from_mode(0o711))
            .expect("making the state directory 0711");
        let kind_offset = match harness.kind() {
            BackendKind::Dir => 0,
            BackendKind::Ns => 1,
            BackendKind::Docker | BackendKind::Pool => 2,
            BackendKind::Auto => 3,
        } * UIDS_PER_KIND;
        let first = UID_BASE + uid_slot() * UIDS_PER_SLOT + kind_offset + index * UIDS_PER_CHECK;
        let backend = harness.open(&state);
        Some(Self {
            harness,
            check,
            state,
            backend: Some(backend),
            specs: vec![],
            uids: first..first + UIDS_PER_CHECK,
            next_uid: first,
        })
    }

    /// The backend under test.
    pub fn backend(&self) -> &B {
        self.backend.as_ref().expect("the backend is open")
    }

    /// Its capabilities.
    pub fn caps(&self) -> Capabilities {
        self.backend().capabilities()
    }

    /// The state directory.
    pub fn state_dir(&self) -> &Path {
        &self.state
    }

    /// The check's name.
    pub fn check(&self) -> &'static str {
        self.check
    }

    /// A new spec for `user` with the next free uid (destroyed when the check ends).
    pub fn spec(&mut self, user: &str) -> WorkspaceSpec {
        self.spec_with(user, |_| {})
    }

    /// Like [`Env::spec`], then `edit` changes it (limits, ...).
    pub fn spec_with(&mut self, user: &str, edit: impl FnOnce(&mut WorkspaceSpec)) -> WorkspaceSpec {
        assert!(self.uids.contains(&self.next_uid), "check {} uses more than {UIDS_PER_CHECK} workspaces", self.check);
        let mut s = spec(user, self.next_uid);
        self.next_uid += 1;
        edit(&mut s);
        self.specs.push(s.clone());
        s
    }

    /// A created and started workspace for `user`.
    pub async fn running(&mut self, user: &str) -> WorkspaceSpec {
        self.running_with(user, |_| {}).await
    }

    /// A created and started workspace for `user`, its spec changed by `edit` first.
    pub async fn running_with(&mut self, user: &str, edit: impl FnOnce(&mut WorkspaceSpec)) -> WorkspaceSpec {
        let s = self.spec_with(user, edit);
        self.create(&s).await;
        self.start(&s).await;
        s
    }

    /// Creates `s`, asserting success.
    pub async fn create(&self, s: &WorkspaceSpec) {
        let r = guard("create", OP_GUARD, self.backend().create(s)).await;
        if let Err(e) = r {
            panic!("create of {} (uid {}) failed: {e} ({e:?})", s.user, s.uid);
        }
    }

    /// Starts `s`, asserting success and that it reports Running.
    pub async fn start(&self, s: &WorkspaceSpec) -> warren_core::Status {
        let r = guard("start", OP_GUARD, self.backend().start(s)).await;
        match r {
            Ok(st) => {
                assert_eq!(st.state, warren_core::State::Running, "start of {} returned {st:?}", s.user);
                st
            }
            Err(e) => panic!("start of {} (uid {}) failed: {e} ({e:?})", s.user, s.uid),
        }
    }

    /// Stops `s`, asserting success.
    pub async fn stop(&self, s: &WorkspaceSpec) {
        let r = guard("stop", OP_GUARD, self.backend().stop(s)).await;
        if let Err(e) = r {
            panic!("stop of {} failed: {e} ({e:?})", s.user);
        }
    }

    /// The status of `s`, asserting the call succeeds.
    pub async fn status(&self, s: &WorkspaceSpec) -> warren_core::Status {
        match guard("status", OP_GUARD, self.backend().status(s)).await {
            Ok(st) => st,
            Err(e) => panic!("status of {} failed: {e} ({e:?})", s.user),
        }
    }

    /// Drops the backend and opens a new one on the same state directory ("warren restarted").
    pub fn reopen(&mut self) {
        drop(self.backend.take());
        self.backend = Some(self.harness.open(&self.state));
    }

    /// Runs `req` in `s`, returning the backend's answer (hang-guarded).
    pub async fn try_exec(&self, s: &WorkspaceSpec, req: ExecRequest) -> Result<ExecOutput> {
        let what = format!("exec {:?}", req.argv);
        guard(&what, OP_GUARD, self.backend().exec(s, req)).await
    }

    /// Runs `req` in `s`, asserting the backend ran it (any exit code).
    pub async fn exec(&self, s: &WorkspaceSpec, req: ExecRequest) -> ExecOutput {
        let argv = req.argv.clone();
        match self.try_exec(s, req).await {
            Ok(out) => out,
            Err(e) => panic!("exec {argv:?} in the workspace of {} failed: {e} ({e:?})", s.user),
        }
    }

    /// Runs `sh -c script` in `s`.
    pub async fn sh(&self, s: &WorkspaceSpec, script: &str) -> ExecOutput {
        self.exec(s, ExecRequest::new(["sh", "-c", script])).await
    }

    /// Runs `sh -c script` in `s`, asserting exit 0; returns stdout.
    pub async fn sh_ok(&self, s: &WorkspaceSpec, script: &str) -> String {
        let out = self.sh(s, script).await;
        assert!(
            out.exit_code == 0 && !out.timed_out,
            "`{script}` in the workspace of {} failed: {}",
            s.user,
            describe(&out)
        );
        text(&out.stdout)
    }

    /// Starts a streaming exec, asserting the backend accepted it.
    pub async fn stream(&self, s: &WorkspaceSpec, req: ExecRequest) -> ExecHandle {
        let argv = req.argv.clone();
        match guard("exec_stream", OP_GUARD, self.backend().exec_stream(s, req)).await {
            Ok(h) => h,
            Err(e) => panic!("exec_stream {argv:?} in the workspace of {} failed: {e} ({e:?})", s.user),
        }
    }

    /// Command lines of the processes `s` can see in its own `/proc` (one per line, NULs as spaces).
    pub async fn processes(&self, s: &WorkspaceSpec) -> Vec<String> {
        let out = self
            .sh_ok(s, "for f in /proc/[0-9]*/cmdline; do tr '\\000' ' ' < \"$f\"; echo; done 2>/dev/null; true")
            .await;
        out.lines().map(str::trim).filter(|l| !l.is_empty()).map(str::to_owned).collect()
    }

    /// Destroys every workspace the check made, asserting success. Call at the end of a check.
    pub async fn finish(mut self) {
        let specs = std::mem::take(&mut self.specs);
        for s in &specs {
            let r = guard("destroy", OP_GUARD, self.backend().destroy(s)).await;
            if let Err(e) = r {
                panic!("destroy of {} at the end of check {} failed: {e} ({e:?})", s.user, self.check);
            }
        }
    }

    fn cleanup(&mut self) {
        let specs = std::mem::take(&mut self.specs);
        if !specs.is_empty() {
            if let Some(b) = self.backend.as_ref() {
                let multi = tokio::runtime::Handle::try_current()
                    .map(|h| h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread)
                    .unwrap_or(false);
                if multi {
                    tokio::task::block_in_place(|| {
                        tokio::runtime::Handle::current().block_on(async {
                            for s in &specs {
                                let _ = tokio::time::timeout(OP_GUARD, b.destroy(s)).await;
                            }
                        })
                    });
                } else {
                    eprintln!("check {}: not on a multi-thread runtime; workspaces were not destroyed", self.check);
                }
            }
        }
        // Drop the backend before looking for leftovers: it may own processes (kill-on-drop).
        drop(self.backend.take());
        for uid in self.uids.clone() {
            for (pid, cmd) in host_processes(uid) {
                eprintln!("check {}: killing leftover process {pid} of uid {uid}: {cmd}", self.check);
                let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL);
            }
        }
        let mounts = mounts_beneath(&self.state);
        if mounts.is_empty() {
            if let Err(e) = std::fs::remove_dir_all(&self.state) {
                eprintln!("check {}: could not remove {}: {e}", self.check, self.state.display());
            }
        } else {
            eprintln!(
                "check {}: leaving {} in place: something is still mounted beneath it: {mounts:?}",
                self.check,
                self.state.display()
            );
        }
    }
}

impl<B: Backend> Drop for Env<'_, B> {
    fn drop(&mut self) {
        self.cleanup();
    }
}

/// Expands to one `#[tokio::test(flavor = "multi_thread")]` per conformance check, each building
/// its harness with `$harness` (an expression evaluating to a [`Harness`]).
#[macro_export]
macro_rules! conformance_tests {
    ($harness:expr) => {
        $crate::conformance_tests!(@each $harness;
            capabilities,
            lifecycle,
            exec_basics,
            exec_identity,
            exec_signals_and_timeout,
            exec_large_output,
            exec_requires_running,
            exec_cwd_confined,
            stream_events,
            stream_drop_kills,
            stream_signal,
            stream_tty,
            files_round_trip,
            files_shared_with_exec,
            files_confined,
            persistence_stop_start,
            persistence_restart,
            isolation_between_users,
            limits_pids,
            limits_memory,
            limits_disk,
            scratch_and_root,
            stats,
            freeze,
        );
    };
    (@each $harness:expr; $($check:ident),+ $(,)?) => {
        $(
            #[::tokio::test(flavor = "multi_thread")]
            async fn $check() {
                let harness = $harness;
                $crate::run_check(stringify!($check), $crate::checks::$check(&harness)).await;
            }
        )+
    };
}
