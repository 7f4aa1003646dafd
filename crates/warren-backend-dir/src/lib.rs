//! The `dir` backend: a directory and an unprivileged uid per workspace; commands are plain
//! host processes running as that uid, with rlimits.
//!
//! It needs nothing but root and works on any Linux host, which makes it the fallback when the
//! `ns` backend cannot run. Its isolation is that of two Unix users on one machine.
//!
//! # What it does
//!
//! * **Files**: `{state}/workspaces/{user}` is the home directory, owned by the workspace's uid
//!   and gid, mode 0700. `{state}` and `{state}/workspaces` are made mode 0711, so a workspace
//!   can reach its own home but not list or enter anyone else's.
//! * **Processes**: each command runs as the workspace's uid and gid with no supplementary
//!   groups, `no_new_privs` (setuid binaries do not elevate), an empty environment but for
//!   [`ExecRequest::environment`], its own session and process group, and these rlimits:
//!
//!   | limit | rlimit | worth |
//!   | --- | --- | --- |
//!   | `pids` | `RLIMIT_NPROC` | real: counts every process and thread of the uid, so it bounds the whole workspace (a new exec may start one process beyond it; its own forks then fail) |
//!   | `nofile` | `RLIMIT_NOFILE` | per process |
//!   | - | `RLIMIT_CORE` = 0 | no core dumps in the home |
//!   | `memory_bytes` | `RLIMIT_AS` | rough: caps each process's *virtual* address space, not the workspace's memory; programs that reserve much address space (JVMs, Go, some allocators) may fail under it |
//!   | `disk_bytes` | `RLIMIT_FSIZE` | rough: caps the size of each file written, not the total |
//!
//! * **Account**: `create` adds `{username}:*:{uid}:{gid}:warren workspace:{home}:/usr/sbin/nologin`
//!   to the host's `/etc/passwd` (and the group to `/etc/group`) so `id -un`, `whoami` and `ls -l`
//!   show the name; the account cannot log in. `destroy` removes it. Only lines warren made are
//!   touched; a uid or name already used by a host account is left alone (see `accounts.rs`).
//! * **Lifecycle**: "running" is a state file outside the home,
//!   `{state}/run/dir/{workspace_id}.json` (written atomically), so a restarted warren sees the
//!   truth. A stopped workspace refuses exec. `stop` kills every host process whose uid is the
//!   workspace's: one `kill(-1, SIGKILL)` made as that uid (which a fork cannot race), repeated
//!   until `/proc` shows none left. A workspace's uid must be dedicated to it.
//! * **Stats**: CPU time, resident memory and tasks summed over the uid's processes in `/proc`;
//!   disk from the home directory.
//!
//! # What it does NOT isolate
//!
//! * **Processes are visible**: a workspace sees every host process in `/proc` and `ps`, with
//!   its command line (which is where secrets passed as arguments leak).
//! * **Network is open**: a workspace has the host's network, including services bound to
//!   localhost. [`WorkspaceSpec::network`] is not enforced.
//! * **The host filesystem is readable** wherever ordinary permissions allow it (`/etc`, `/usr`,
//!   world-readable files in other places), and world-writable places (`/tmp`, `/dev/shm`) are
//!   shared with the host and other workspaces.
//! * **No memory or CPU limits**: nothing bounds the workspace's total memory or CPU share
//!   (`RLIMIT_AS` is per process and virtual); disk is not bounded in total either.
//! * **Kernel attack surface** is the full one: no seccomp filter, no namespaces.
//!
//! Use the `ns` backend wherever it runs; `dir` is for hosts that cannot give namespaces.

mod accounts;
mod exec;

use std::fs::{DirBuilder, File};
use std::io;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use warren_core::backend::{disk_usage, HostFiles};
use warren_core::{
    Backend, BackendKind, Capabilities, Error, ExecHandle, ExecRequest, IsolationLevel, Result, State, Stats, Status,
    WorkspaceSpec,
};

/// The lowest uid (and gid) a workspace may have: below it are the host's system accounts,
/// whose processes `stop` would otherwise kill.
pub const MIN_UID: u32 = 1000;

/// Directory backend.
#[derive(Debug, Clone)]
pub struct DirBackend {
    state_dir: PathBuf,
    workspaces: PathBuf,
    run_dir: PathBuf,
    accounts: accounts::AccountDb,
}

/// What the run file of a running workspace holds.
#[derive(Debug, Serialize, Deserialize)]
struct RunFile {
    workspace: String,
    user: String,
    uid: u32,
    started_at_unix: u64,
}

impl DirBackend {
    /// Opens the backend on `state_dir`, creating `{state}`, `{state}/workspaces` (both mode
    /// 0711) and `{state}/run/dir` (mode 0700) as needed.
    pub fn new(state_dir: &Path) -> Result<Self> {
        let b = Self {
            state_dir: state_dir.to_owned(),
            workspaces: state_dir.join("workspaces"),
            run_dir: state_dir.join("run").join("dir"),
            accounts: accounts::AccountDb::host(),
        };
        b.prepare()?;
        Ok(b)
    }

    /// Whether this host can run the backend: it must be Linux and warren must run as root
    /// (to give each workspace its own uid). `Err` says why not.
    pub fn probe() -> std::result::Result<(), String> {
        if !cfg!(target_os = "linux") {
            return Err("the dir backend needs Linux".into());
        }
        if !nix::unistd::geteuid().is_root() {
            return Err("the dir backend must run as root: it runs each workspace as its own uid".into());
        }
        if !Path::new("/proc/self/status").exists() {
            return Err("the dir backend needs /proc mounted to find a workspace's processes".into());
        }
        Ok(())
    }

    fn prepare(&self) -> Result<()> {
        for dir in [&self.state_dir, &self.workspaces] {
            DirBuilder::new()
                .recursive(true)
                .mode(0o711)
                .create(dir)
                .map_err(|e| Error::io(format!("creating {}", dir.display()), e))?;
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o711))
                .map_err(|e| Error::io(format!("making {} mode 0711", dir.display()), e))?;
        }
        let run = self.state_dir.join("run");
        DirBuilder::new()
            .mode(0o711)
            .create(&run)
            .or_else(|e| if e.kind() == io::ErrorKind::AlreadyExists { Ok(()) } else { Err(e) })
            .map_err(|e| Error::io(format!("creating {}", run.display()), e))?;
        DirBuilder::new()
            .mode(0o700)
            .create(&self.run_dir)
            .or_else(|e| if e.kind() == io::ErrorKind::AlreadyExists { Ok(()) } else { Err(e) })
            .map_err(|e| Error::io(format!("creating {}", self.run_dir.display()), e))?;
        Ok(())
    }

    /// The workspace's home directory on the host.
    pub fn home(&self, spec: &WorkspaceSpec) -> PathBuf {
        self.workspaces.join(spec.user.as_str())
    }

    fn run_file(&self, spec: &WorkspaceSpec) -> PathBuf {
        self.run_dir.join(format!("{}.json", spec.id))
    }

    /// Whether the home directory exists (as a directory, not through a symlink).
    fn exists(&self, spec: &WorkspaceSpec) -> Result<bool> {
        let home = self.home(spec);
        match std::fs::symlink_metadata(&home) {
            Ok(md) if md.is_dir() => Ok(true),
            Ok(_) => Err(Error::Conflict(format!(
                "{} exists but is not a directory; remove it to use the workspace of user {}",
                home.display(),
                spec.user
            ))),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(Error::io(format!("looking at {}", home.display()), e)),
        }
    }

    fn running(&self, spec: &WorkspaceSpec) -> Result<bool> {
        let path = self.run_file(spec);
        match std::fs::read(&path) {
            Ok(bytes) => match serde_json::from_slice::<RunFile>(&bytes) {
                Ok(rf) => Ok(rf.uid == spec.uid && rf.workspace == spec.id.as_str()),
                Err(e) => {
                    tracing::warn!(path = %path.display(), error = %e, "ignoring an unreadable run file");
                    Ok(false)
                }
            },
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(Error::io(format!("reading {}", path.display()), e)),
        }
    }

    fn current_status(&self, spec: &WorkspaceSpec) -> Result<Status> {
        let state = if !self.exists(spec)? {
            State::Absent
        } else if self.running(spec)? {
            State::Running
        } else {
            State::Stopped
        };
        Ok(Status { state, pid: None })
    }

    fn not_found(spec: &WorkspaceSpec) -> Error {
        Error::NotFound(format!("workspace of user {}", spec.user))
    }

    fn create_home(&self, spec: &WorkspaceSpec) -> Result<()> {
        self.prepare()?;
        let home = self.home(spec);
        if self.exists(spec)? {
            return self.check_home(spec, &home);
        }
        match warren_core::fs::create_private_dir(&home, spec.uid, spec.gid) {
            Ok(()) => Ok(()),
            Err(e) => {
                if self.exists(spec)? {
                    // Created concurrently: fine if it is the same workspace.
                    return self.check_home(spec, &home);
                }
                Err(e)
            }
        }
    }

    fn check_home(&self, spec: &WorkspaceSpec, home: &Path) -> Result<()> {
        let md = std::fs::symlink_metadata(home).map_err(|e| Error::io(format!("looking at {}", home.display()), e))?;
        if md.uid() != spec.uid {
            return Err(Error::AlreadyExists(format!(
                "workspace directory {} of user {} (owned by uid {}, not {})",
                home.display(),
                spec.user,
                md.uid(),
                spec.uid
            )));
        }
        Ok(())
    }

    fn account<'a>(&self, spec: &'a WorkspaceSpec, home: &'a Path) -> accounts::Account<'a> {
        accounts::Account { name: &spec.username, uid: spec.uid, gid: spec.gid, home }
    }

    /// Adds the workspace's host account entries; best effort (a workspace runs without them,
    /// only nameless), so problems are logged, not returned.
    fn ensure_account(&self, spec: &WorkspaceSpec) {
        let home = self.home(spec);
        match self.accounts.ensure(self.account(spec, &home)) {
            Ok(skipped) => {
                for why in skipped {
                    tracing::warn!(username = %spec.username, uid = spec.uid, "host account entry not added: {why}");
                }
            }
            Err(e) => tracing::warn!(username = %spec.username, error = %e, "adding the host account entries failed"),
        }
    }

    /// Removes the workspace's host account entries; best effort like [`Self::ensure_account`].
    fn remove_account(&self, spec: &WorkspaceSpec) {
        let home = self.home(spec);
        if let Err(e) = self.accounts.remove(self.account(spec, &home)) {
            tracing::warn!(username = %spec.username, error = %e, "removing the host account entries failed");
        }
    }

    fn write_run_file(&self, spec: &WorkspaceSpec) -> Result<()> {
        self.prepare()?;
        let rf = RunFile {
            workspace: spec.id.to_string(),
            user: spec.user.to_string(),
            uid: spec.uid,
            started_at_unix: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
        };
        let bytes = serde_json::to_vec(&rf).map_err(|e| Error::Internal(format!("encoding the run file: {e}")))?;
        warren_core::fs::write_atomic(&self.run_file(spec), &bytes, 0o600)
    }

    fn remove_run_file(&self, spec: &WorkspaceSpec) -> Result<()> {
        let path = self.run_file(spec);
        match std::fs::remove_file(&path) {
            Ok(()) => {
                sync_dir(&self.run_dir);
                Ok(())
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(Error::io(format!("removing {}", path.display()), e)),
        }
    }
}

/// Makes a rename or removal in `dir` durable (best effort: a failure only costs durability).
fn sync_dir(dir: &Path) {
    if let Err(e) = File::open(dir).and_then(|d| d.sync_all()) {
        tracing::warn!(dir = %dir.display(), error = %e, "fsync of a directory failed");
    }
}

/// Runs blocking work off the runtime, inside the caller's span (so its logs carry the
/// workspace id).
async fn in_span<T: Send + 'static>(f: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    let span = tracing::Span::current();
    warren_core::backend::blocking(move || span.in_scope(f)).await
}

/// Refuses uids that are not a dedicated, unprivileged workspace uid.
fn check_spec(spec: &WorkspaceSpec) -> Result<()> {
    for (what, id) in [("uid", spec.uid), ("gid", spec.gid)] {
        if id < MIN_UID || id == 65534 || id == u32::MAX {
            return Err(Error::InvalidRequest(format!(
                "workspace {what} {id} is a system or reserved id: workspace uids must be at least {MIN_UID} and dedicated to the workspace"
            )));
        }
    }
    if let Some(image) = &spec.image {
        return Err(Error::Unsupported(format!(
            "the dir backend runs this host's programs and cannot give a workspace the image {image}: \
             create it without an image, or on the ns or docker backend"
        )));
    }
    Ok(())
}

#[async_trait]
impl Backend for DirBackend {
    fn capabilities(&self) -> Capabilities {
        Capabilities {
            kind: BackendKind::Dir,
            isolation: IsolationLevel::UidOnly,
            memory_limit: false,
            cpu_limit: false,
            pids_limit: true,
            network_isolation: false,
            process_isolation: false,
            freeze: false,
            tty: true,
        }
    }

    #[tracing::instrument(skip_all, fields(workspace = %spec.id))]
    async fn create(&self, spec: &WorkspaceSpec) -> Result<()> {
        check_spec(spec)?;
        spec.limits.validate()?;
        let (this, spec) = (self.clone(), spec.clone());
        in_span(move || {
            this.create_home(&spec)?;
            this.ensure_account(&spec);
            Ok(())
        })
        .await?;
        tracing::info!("workspace directory ready");
        Ok(())
    }

    #[tracing::instrument(skip_all, fields(workspace = %spec.id))]
    async fn start(&self, spec: &WorkspaceSpec) -> Result<Status> {
        check_spec(spec)?;
        let (this, spec) = (self.clone(), spec.clone());
        in_span(move || {
            match this.current_status(&spec)?.state {
                State::Absent => return Err(Self::not_found(&spec)),
                State::Running => {}
                State::Stopped => {
                    this.ensure_account(&spec);
                    this.write_run_file(&spec)?;
                    tracing::info!("workspace started");
                }
            }
            Ok(Status { state: State::Running, pid: None })
        })
        .await
    }

    #[tracing::instrument(skip_all, fields(workspace = %spec.id))]
    async fn stop(&self, spec: &WorkspaceSpec) -> Result<()> {
        check_spec(spec)?;
        let (this, spec) = (self.clone(), spec.clone());
        in_span(move || {
            // First refuse new commands, then kill what runs.
            this.remove_run_file(&spec)?;
            kill_all(spec.uid)?;
            tracing::info!("workspace stopped");
            Ok(())
        })
        .await
    }

    #[tracing::instrument(skip_all, fields(workspace = %spec.id))]
    async fn status(&self, spec: &WorkspaceSpec) -> Result<Status> {
        let (this, spec) = (self.clone(), spec.clone());
        in_span(move || this.current_status(&spec)).await
    }

    #[tracing::instrument(skip_all, fields(workspace = %spec.id))]
    async fn destroy(&self, spec: &WorkspaceSpec) -> Result<()> {
        check_spec(spec)?;
        let (this, spec) = (self.clone(), spec.clone());
        in_span(move || {
            this.remove_run_file(&spec)?;
            kill_all(spec.uid)?;
            if this.exists(&spec)? {
                let home = this.home(&spec);
                // remove_dir_all never follows symlinks: a link in the home to elsewhere is
                // removed, not its target.
                std::fs::remove_dir_all(&home).map_err(|e| Error::io(format!("removing {}", home.display()), e))?;
                sync_dir(&this.workspaces);
            }
            this.remove_account(&spec);
            tracing::info!("workspace destroyed");
            Ok(())
        })
        .await
    }

    #[tracing::instrument(skip_all, fields(workspace = %spec.id))]
    async fn exec_stream(&self, spec: &WorkspaceSpec, req: ExecRequest) -> Result<ExecHandle> {
        check_spec(spec)?;
        req.validate()?;
        let (this, s) = (self.clone(), spec.clone());
        match in_span(move || this.current_status(&s)).await?.state {
            State::Absent => return Err(Self::not_found(spec)),
            State::Stopped => {
                return Err(Error::Conflict(format!("workspace of user {} is stopped; start it first", spec.user)))
            }
            State::Running => {}
        }
        exec::start(spec, &self.home(spec), req).await
    }

    #[tracing::instrument(skip_all, fields(workspace = %spec.id))]
    async fn stats(&self, spec: &WorkspaceSpec) -> Result<Stats> {
        let (this, spec) = (self.clone(), spec.clone());
        in_span(move || {
            if !this.exists(&spec)? {
                return Err(Self::not_found(&spec));
            }
            let u = warren_sys::uidprocs::usage_of(spec.uid);
            Ok(Stats {
                cpu_usage_ns: u.cpu_ns,
                memory_bytes: u.rss_bytes,
                memory_limit_bytes: None,
                pids: u.threads,
                disk_bytes: disk_usage(&this.home(&spec)),
            })
        })
        .await
    }

    fn host_files(&self, spec: &WorkspaceSpec) -> Option<HostFiles> {
        Some(HostFiles { dir: self.home(spec), uid: spec.uid, gid: spec.gid })
    }
}

/// Kills every process of `uid` and waits until none is left.
fn kill_all(uid: u32) -> Result<()> {
    warren_sys::uidprocs::kill_all(uid).map_err(|e| Error::Internal(format!("killing the processes of uid {uid}: {e}")))
}
