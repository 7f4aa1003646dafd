//! The namespace backend: warren's fast default.
//!
//! Each running workspace is one long-lived init process (pid 1 of its own pid namespace) in
//! fresh mount, uts, ipc, cgroup and network namespaces (loopback only unless network was
//! asked for), on a root filesystem assembled from the host's read-only `/usr` and a generated
//! `/etc`, with the workspace bind-mounted as the user's home, running as the workspace's
//! unprivileged uid with no capabilities, `no_new_privs` and a seccomp deny-list, inside a
//! cgroup (v1 or v2) that bounds memory, cpu and pids. See [`init`] for the process model and
//! [`rootfs`] for the filesystem.
//!
//! Warren never forks from its threaded runtime: it executes a small helper binary which does the
//! namespace work and becomes the init. Exec asks the init (over a root-only unix socket kept
//! outside the workspace's root) to fork the command, passing stdio as descriptors.
//!
//! What survives a restart of warren is on the host: `run/ns/<workspace>/init.json` (pid and
//! start time of the init, written atomically) and the cgroup. [`Backend::status`] checks both
//! against `/proc`, so it tells the truth after warren was killed.

pub mod client;
pub mod init;
pub mod proto;
pub mod rootfs;

use std::ffi::OsString;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use tracing::{debug, info_span, Instrument};
use warren_core::backend::{blocking, disk_usage, HostFiles};
use warren_core::{
    Backend, BackendKind, Capabilities, Error, ExecHandle, ExecRequest, IsolationLevel, Result, State, Stats, Status,
    WorkspacePath, WorkspaceSpec,
};
use warren_sys::cgroup::{self, Cgroup};

pub use init::helper_main;

/// The argument that makes a warren binary run the namespace helper instead of its own main.
pub const HELPER_ARG: &str = "__warren-ns-init";

/// How to start the helper that sets up a workspace's namespaces.
#[derive(Clone, Debug)]
pub struct HelperCmd {
    /// Program to execute.
    pub program: PathBuf,
    /// Arguments before the helper's own.
    pub args: Vec<OsString>,
}

impl HelperCmd {
    /// Finds the helper: `$WARREN_NSINIT`, then `warren-nsinit` beside the running binary (or
    /// one directory up, for test binaries in `target/*/deps`), then the running binary itself
    /// with [`HELPER_ARG`] (every warren binary dispatches it first thing in `main`).
    pub fn locate() -> Result<Self> {
        if let Some(p) = std::env::var_os("WARREN_NSINIT") {
            return Ok(Self { program: PathBuf::from(p), args: vec![] });
        }
        let exe = std::env::current_exe().map_err(|e| Error::io("finding the running binary", e))?;
        for dir in exe.parent().into_iter().chain(exe.parent().and_then(Path::parent)) {
            let cand = dir.join("warren-nsinit");
            if cand.is_file() {
                return Ok(Self { program: cand, args: vec![] });
            }
        }
        Ok(Self { program: exe, args: vec![OsString::from(HELPER_ARG)] })
    }
}

/// What survives a restart of warren: which process is the workspace's init.
#[derive(Clone, Copy, Debug, Serialize, Deserialize)]
struct InitRecord {
    version: u32,
    pid: u32,
    start_time: u64,
}

/// The namespace backend.
#[derive(Debug)]
pub struct NsBackend {
    state_dir: PathBuf,
    helper: HelperCmd,
    userns: bool,
    /// The root filesystem directory workspaces get their programs from (`None`: the host's).
    image: Option<PathBuf>,
}

/// Whether this kernel lets warren give each workspace its own user namespace.
pub fn userns_supported() -> bool {
    Path::new("/proc/self/ns/user").exists()
        && std::fs::read_to_string("/proc/sys/user/max_user_namespaces")
            .ok()
            .and_then(|s| s.trim().parse::<u64>().ok())
            .is_some_and(|n| n > 0)
}

const TMP_BYTES: u64 = 256 << 20;

impl NsBackend {
    /// Opens the backend on `state_dir`; `helper` defaults to [`HelperCmd::locate`].
    pub fn new(state_dir: &Path, helper: Option<HelperCmd>) -> Result<Self> {
        let helper = match helper {
            Some(h) => h,
            None => HelperCmd::locate()?,
        };
        for d in
            [state_dir.to_path_buf(), state_dir.join("workspaces"), state_dir.join("run"), state_dir.join("run/ns")]
        {
            std::fs::create_dir_all(&d).map_err(|e| Error::io(format!("creating {}", d.display()), e))?;
        }
        for d in [state_dir.to_path_buf(), state_dir.join("workspaces")] {
            std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o711))
                .map_err(|e| Error::io(format!("chmod {}", d.display()), e))?;
        }
        // 0711: with user namespaces the init runs as the host's `nobody` while it mounts its root
        // and must traverse these (never list them); control sockets inside are root-only (0600).
        for d in [state_dir.join("run"), state_dir.join("run/ns")] {
            std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o711))
                .map_err(|e| Error::io(format!("chmod {}", d.display()), e))?;
        }
        Ok(Self {
            state_dir: state_dir.to_owned(),
            helper,
            userns: userns_supported() && std::env::var_os("WARREN_NS_USERNS").is_none_or(|v| v != "0"),
            image: None,
        })
    }

    /// Gives workspaces the programs of the root filesystem directory `image` (its `/usr`,
    /// `/bin`, `/lib*` and shared `/etc` files) instead of the host's. A workspace's own
    /// [`WorkspaceSpec::image`] wins over it.
    pub fn with_image(mut self, image: Option<PathBuf>) -> Self {
        self.image = image;
        self
    }

    /// The root filesystem `spec` runs: its own image's, else the backend's (`None`: the host's),
    /// checked to hold a shell.
    fn image_of(&self, spec: &WorkspaceSpec) -> Result<Option<PathBuf>> {
        let image = match &spec.image {
            Some(name) => Some(warren_core::config::image_rootfs(&self.state_dir, name)?),
            None => self.image.clone(),
        };
        if let Some(dir) = &image {
            if !dir.join("bin/sh").exists() && !dir.join("usr/bin/sh").exists() {
                let name = spec.image.as_deref().map_or_else(|| dir.display().to_string(), str::to_owned);
                return Err(Error::NotFound(format!(
                    "the image {name} (no /bin/sh in {}): import one with `warren image import <rootfs> --tag NAME`",
                    dir.display()
                )));
            }
        }
        Ok(image)
    }

    /// Turns user namespaces on or off (default: on where the kernel allows them; the
    /// `WARREN_NS_USERNS=0` environment variable turns them off).
    pub fn with_userns(mut self, on: bool) -> Self {
        self.userns = on;
        self
    }

    /// Whether workspaces get their own user namespace.
    pub fn userns(&self) -> bool {
        self.userns
    }

    /// Whether this host can run the backend; `Err` says why not.
    pub fn probe() -> std::result::Result<(), String> {
        if !nix::unistd::geteuid().is_root() {
            return Err("the ns backend needs root (to create namespaces, cgroups and per-workspace uids)".into());
        }
        for ns in ["mnt", "pid", "net", "uts", "ipc", "cgroup"] {
            if !Path::new("/proc/self/ns").join(ns).exists() {
                return Err(format!("the kernel has no {ns} namespace support"));
            }
        }
        Cgroup::open("warren/probe").map_err(|e| format!("cgroups unusable: {e}"))?;
        if warren_sys::seccomp::compile().is_err() {
            return Err("seccomp filter cannot be built for this architecture".into());
        }
        Ok(())
    }

    fn home(&self, spec: &WorkspaceSpec) -> PathBuf {
        self.state_dir.join("workspaces").join(spec.user.as_str())
    }

    fn run_dir(&self, spec: &WorkspaceSpec) -> PathBuf {
        self.state_dir.join("run/ns").join(spec.id.as_str())
    }

    fn cgroup_name(spec: &WorkspaceSpec) -> String {
        format!("warren/{}", spec.id)
    }

    fn read_record(&self, spec: &WorkspaceSpec) -> Option<InitRecord> {
        let b = std::fs::read(self.run_dir(spec).join("init.json")).ok()?;
        serde_json::from_slice(&b).ok()
    }

    fn live_init(&self, spec: &WorkspaceSpec) -> Option<InitRecord> {
        self.read_record(spec).filter(|r| warren_sys::proc::is_alive(r.pid, r.start_time))
    }

    fn write_record(&self, spec: &WorkspaceSpec, rec: &InitRecord) -> Result<()> {
        let data = serde_json::to_vec(rec).map_err(|e| Error::Internal(e.to_string()))?;
        warren_core::fs::write_atomic(&self.run_dir(spec).join("init.json"), &data, 0o600)
    }

    /// Kills the init (and with it the whole pid namespace), empties and removes the cgroup,
    /// and removes runtime files. Safe to call in any state.
    fn teardown(&self, spec: &WorkspaceSpec) -> Result<()> {
        if let Some(rec) = self.read_record(spec) {
            if !warren_sys::proc::kill_and_wait(rec.pid, rec.start_time, Duration::from_secs(10)) {
                return Err(Error::Internal(format!(
                    "init {} of workspace {} survived SIGKILL for 10 s",
                    rec.pid, spec.id
                )));
            }
        }
        let cg = Cgroup::open(&Self::cgroup_name(spec)).map_err(sys_err)?;
        cg.destroy().map_err(sys_err)?;
        let run = self.run_dir(spec);
        for f in ["init.json", "ctl.sock"] {
            let _ = std::fs::remove_file(run.join(f));
        }
        // A record write killed midway leaves its temporary file (`.init.json.warren-tmp-*`).
        if let Ok(rd) = std::fs::read_dir(&run) {
            for e in rd.flatten().filter(|e| e.file_name().as_encoded_bytes().starts_with(b".init.json.")) {
                let _ = std::fs::remove_file(e.path());
            }
        }
        Ok(())
    }

    fn start_blocking(&self, spec: &WorkspaceSpec) -> Result<Status> {
        if let Some(rec) = self.live_init(spec) {
            return Ok(Status { state: State::Running, pid: Some(rec.pid) });
        }
        let home = self.home(spec);
        let md = std::fs::symlink_metadata(&home)
            .map_err(|_| Error::NotFound(format!("workspace of user {}", spec.user)))?;
        if !md.is_dir() || md.uid() != spec.uid {
            return Err(Error::Conflict(format!(
                "{} is not a directory owned by uid {}: refusing to start the workspace",
                home.display(),
                spec.uid
            )));
        }
        // Leftovers of a crash during an earlier start or stop.
        self.teardown(spec)?;
        let run = self.run_dir(spec);
        std::fs::create_dir_all(&run).map_err(|e| Error::io(format!("creating {}", run.display()), e))?;
        let sock = run.join("ctl.sock");
        if sock.as_os_str().len() >= 108 {
            return Err(Error::InvalidRequest(format!(
                "state dir path is too long: the control socket {} must be under 108 bytes; use a shorter --state-dir",
                sock.display()
            )));
        }
        let image = self.image_of(spec)?;
        let l = &spec.limits;
        let cg = Cgroup::create(
            &Self::cgroup_name(spec),
            &cgroup::Limits { memory_bytes: l.memory_bytes, cpu_millis: l.cpu_millis, pids: l.pids },
        )
        .map_err(sys_err)?;
        let cfg = proto::InitConfig {
            workspace: spec.id.to_string(),
            username: spec.username.clone(),
            uid: spec.uid,
            gid: spec.gid,
            home,
            run_dir: run,
            cgroup_procs: cg.procs_files(),
            network: spec.network,
            nofile: l.nofile,
            nproc: l.pids.map(u64::from),
            fsize: l.disk_bytes,
            tmp_bytes: l.memory_bytes.map_or(TMP_BYTES, |m| m.min(TMP_BYTES)),
            userns: self.userns,
            image,
        };
        let json = serde_json::to_string(&cfg).map_err(|e| Error::Internal(e.to_string()))?;
        // The config goes in on stdin, not argv: a workspace can read its init's /proc/1/cmdline.
        let mut child = std::process::Command::new(&self.helper.program)
            .args(&self.helper.args)
            .env_clear()
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .map_err(|e| Error::io(format!("running the namespace helper {}", self.helper.program.display()), e))?;
        if let Some(mut stdin) = child.stdin.take() {
            use std::io::Write;
            stdin.write_all(json.as_bytes()).map_err(|e| Error::io("sending the workspace config to the helper", e))?;
        }
        let out = child.wait_with_output().map_err(|e| Error::io("waiting for the namespace helper", e))?;
        if !out.status.success() {
            let _ = cg.destroy();
            let msg = String::from_utf8_lossy(&out.stderr).trim().to_owned();
            return Err(Error::Internal(format!("starting workspace {} failed: {msg}", spec.id)));
        }
        let report: proto::InitReport = serde_json::from_slice(&out.stdout)
            .map_err(|e| Error::Internal(format!("namespace helper printed an unreadable report ({e})")))?;
        self.write_record(spec, &InitRecord { version: 1, pid: report.pid, start_time: report.start_time })?;
        debug!(pid = report.pid, "workspace init running");
        Ok(Status { state: State::Running, pid: Some(report.pid) })
    }
}

fn sys_err(e: warren_sys::SysError) -> Error {
    Error::Internal(e.to_string())
}

#[async_trait]
impl Backend for NsBackend {
    fn capabilities(&self) -> Capabilities {
        Capabilities {
            kind: BackendKind::Ns,
            isolation: IsolationLevel::Namespaces,
            memory_limit: true,
            cpu_limit: true,
            pids_limit: true,
            network_isolation: true,
            process_isolation: true,
            freeze: true,
            tty: true,
        }
    }

    async fn create(&self, spec: &WorkspaceSpec) -> Result<()> {
        // A workspace of an image that was never imported fails now, not at its first start.
        self.image_of(spec)?;
        let home = self.home(spec);
        let (uid, gid) = (spec.uid, spec.gid);
        blocking(move || create_home(&home, uid, gid)).await
    }

    async fn start(&self, spec: &WorkspaceSpec) -> Result<Status> {
        let span = info_span!("ns.start", workspace = %spec.id);
        let _g = span.enter();
        // Runs in this thread: the helper is a separate process, so no fork happens here.
        self.start_blocking(spec)
    }

    async fn stop(&self, spec: &WorkspaceSpec) -> Result<()> {
        let span = info_span!("ns.stop", workspace = %spec.id);
        let _g = span.enter();
        self.teardown(spec)
    }

    async fn status(&self, spec: &WorkspaceSpec) -> Result<Status> {
        if let Some(rec) = self.live_init(spec) {
            return Ok(Status { state: State::Running, pid: Some(rec.pid) });
        }
        let state = if self.home(spec).is_dir() { State::Stopped } else { State::Absent };
        Ok(Status { state, pid: None })
    }

    async fn destroy(&self, spec: &WorkspaceSpec) -> Result<()> {
        self.teardown(spec)?;
        let (home, run) = (self.home(spec), self.run_dir(spec));
        blocking(move || {
            for d in [&home, &run] {
                match std::fs::remove_dir_all(d) {
                    Ok(()) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => return Err(Error::io(format!("removing {}", d.display()), e)),
                }
            }
            Ok(())
        })
        .await
    }

    async fn exec_stream(&self, spec: &WorkspaceSpec, req: ExecRequest) -> Result<ExecHandle> {
        req.validate()?;
        if self.live_init(spec).is_none() {
            return Err(Error::Conflict(format!("workspace of user {} is not running; start it first", spec.user)));
        }
        let home = format!("/home/{}", spec.username);
        let cwd = match &req.cwd {
            None => home.clone(),
            Some(c) => {
                let p = WorkspacePath::new(c)?;
                if p.is_root() {
                    home.clone()
                } else {
                    format!("{home}/{}", p.as_path().display())
                }
            }
        };
        let env = req.environment(spec, &home);
        let request = proto::Request::Exec { argv: req.argv.clone(), env, cwd, tty: req.tty.map(|t| (t.rows, t.cols)) };
        let sock = self.run_dir(spec).join("ctl.sock");
        client::exec(&sock, request, spec.id.to_string()).instrument(info_span!("ns.exec", workspace = %spec.id)).await
    }

    async fn freeze(&self, spec: &WorkspaceSpec, frozen: bool) -> Result<()> {
        if self.live_init(spec).is_none() {
            return Err(Error::Conflict(format!("workspace of user {} is not running; nothing to freeze", spec.user)));
        }
        let name = Self::cgroup_name(spec);
        blocking(move || Cgroup::open(&name).map_err(sys_err)?.freeze(frozen).map_err(sys_err)).await
    }

    async fn stats(&self, spec: &WorkspaceSpec) -> Result<Stats> {
        let home = self.home(spec);
        if !home.is_dir() {
            return Err(Error::NotFound(format!("workspace of user {}", spec.user)));
        }
        let name = Self::cgroup_name(spec);
        let running = self.live_init(spec).is_some();
        blocking(move || {
            let mut s = Stats { disk_bytes: disk_usage(&home), ..Default::default() };
            if running {
                let u = Cgroup::open(&name).map_err(sys_err)?.usage();
                s.cpu_usage_ns = u.cpu_ns;
                s.memory_bytes = u.memory_bytes;
                s.memory_limit_bytes = u.memory_limit;
                s.pids = u.pids;
            }
            Ok(s)
        })
        .await
    }

    fn host_files(&self, spec: &WorkspaceSpec) -> Option<HostFiles> {
        Some(HostFiles { dir: self.home(spec), uid: spec.uid, gid: spec.gid })
    }
}

/// Creates the home directory, owned by the workspace, mode 0700. An existing one must already
/// belong to the same uid.
fn create_home(home: &Path, uid: u32, gid: u32) -> Result<()> {
    match std::fs::symlink_metadata(home) {
        Ok(md) if md.is_dir() && md.uid() == uid => return Ok(()),
        Ok(_) => {
            return Err(Error::AlreadyExists(format!("{} (owned by another uid or not a directory)", home.display())));
        }
        Err(_) => {}
    }
    match warren_core::fs::create_private_dir(home, uid, gid) {
        // Created concurrently by another warren process: fine if it is this workspace's.
        Err(Error::AlreadyExists(_)) => create_home(home, uid, gid),
        r => r,
    }
}
