//! Warren's engine: the one place that ties the pieces together.
//!
//! * picks the backend (`auto`: `ns` when the host can run it, else `docker` when a daemon
//!   answers, else `dir`; the pool when it is enabled) and says why;
//! * keeps workspaces in the [`Store`] (`{state}/warren.db`) and gives each user a fixed uid;
//! * serialises changes to a workspace across threads *and processes* with an `flock` on
//!   `{state}/locks/{user}.lock`, so several `warren` commands (or a server and a CLI) can work on
//!   the same state directory at once;
//! * records every change in the store's audit trail;
//! * on open, asks the backend how each stored workspace really is (the host is the truth) and
//!   records where that differs from what was last asked for; first it repairs what a killed
//!   snapshot, restore, start, create or destroy left behind (see [`snapshots`]);
//! * takes, restores and manages snapshots, and runs the automatic ones ([`snapshots`]).
//!
//! The state a caller sees ([`WorkspaceInfo::state`]) always comes live from the backend.

pub mod monitor;
pub mod snapshots;

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg};
use serde::Serialize;
use serde_json::json;
use tracing::{field, info, warn, Span};
use warren_backend_dir::DirBackend;
use warren_backend_docker::pool::{DockerPool, PoolOptions};
use warren_backend_docker::{DockerBackend, DockerOptions};
use warren_backend_ns::{HelperCmd, NsBackend};
use warren_core::backend::blocking;
use warren_core::config::Config;
use warren_core::fs::{Confined, DirEntry};
use warren_core::{
    Backend, BackendKind, Capabilities, Error, ExecHandle, ExecOutput, ExecRequest, Limits, Result, State, Stats,
    UserId, WorkspaceId, WorkspacePath, WorkspaceSpec,
};
use warren_store::{DesiredState, NewEvent, Store, StoreError, WorkspaceRecord};

pub use monitor::{Enforcement, Usage};
pub use snapshots::{Quiesce, RestoreOutcome, SnapshotOptions, TickReport};
pub use warren_snapshot::{Manifest, Progress, ProgressFn, Trigger};
pub use warren_store::{Event, Timestamp};

/// How to open the engine, beyond the [`Config`].
#[derive(Clone, Debug, Default)]
pub struct EngineOptions {
    /// How the ns backend starts its helper; `None` finds it ([`HelperCmd::locate`]).
    pub ns_helper: Option<HelperCmd>,
}

/// Options of [`Engine::create`]; `None` takes the configured default.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CreateOptions {
    /// Resource limits.
    pub limits: Option<Limits>,
    /// Network access beyond loopback.
    pub network: Option<bool>,
    /// The backend to hold this workspace (`None` or `Auto`: the engine's own pick). A workspace
    /// stays on the backend it was created with.
    pub backend: Option<BackendKind>,
    /// The resource monitor's policy for this workspace (`None`: the configured default).
    pub policy: Option<warren_core::monitor::MonitorPolicy>,
    /// The image it runs (`None`: the configured default, which follows later changes of it).
    pub image: Option<String>,
}

/// A workspace as a caller sees it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct WorkspaceInfo {
    /// Its owner.
    pub user: UserId,
    /// Its id.
    pub workspace_id: WorkspaceId,
    /// Linux account name inside it.
    pub username: String,
    /// Host uid (and gid) that owns its files and runs its processes.
    pub uid: u32,
    /// The backend that holds it.
    pub backend: BackendKind,
    /// What the host shows now (asked from the backend on every call).
    pub state: State,
    /// Resource limits.
    pub limits: Limits,
    /// Network beyond loopback.
    pub network: bool,
    /// Its own image (`None`: the configured default).
    pub image: Option<String>,
    /// When it was created.
    pub created_at: Timestamp,
}

/// The engine. Share it behind an `Arc`; every method takes `&self`.
#[derive(Debug)]
pub struct Engine {
    cfg: Config,
    kind: BackendKind,
    backend: Arc<dyn Backend>,
    /// Backends of workspaces created under another backend than the one picked now.
    others: Mutex<HashMap<BackendKind, Arc<dyn Backend>>>,
    ns_helper: Option<HelperCmd>,
    store: Arc<Store>,
    locks: PathBuf,
    snap: snapshots::SnapState,
    monitor: monitor::MonitorState,
}

impl Engine {
    /// Opens the engine on `cfg.state_dir` (creating it), picks the backend and reconciles the
    /// stored workspaces with the host.
    pub async fn open(cfg: Config, opts: EngineOptions) -> Result<Engine> {
        cfg.limits.validate().map_err(|e| Error::InvalidRequest(format!("configured default limits: {e}")))?;
        cfg.snapshots.validate()?;
        cfg.monitor.policy.validate().map_err(|e| Error::InvalidRequest(format!("[monitor.policy]: {e}")))?;
        cfg.pool.validate()?;
        cfg.docker.validate()?;
        check_uid_range(&cfg)?;
        let state = cfg.state_dir.clone();
        let locks = state.join("locks");
        let db = state.join("warren.db");
        let store = {
            let (state, locks) = (state.clone(), locks.clone());
            blocking(move || {
                prepare_dirs(&state, &locks)?;
                Store::open(&db).map_err(Error::from)
            })
            .await?
        };
        let (kind, backend) = pick_backend(&cfg, opts.ns_helper.clone())?;
        let store = Arc::new(store);
        let snap = snapshots::SnapState::new(&cfg, store.clone());
        let engine = Engine {
            cfg,
            kind,
            backend,
            others: Mutex::new(HashMap::new()),
            ns_helper: opts.ns_helper,
            store,
            locks,
            snap,
            monitor: monitor::MonitorState::default(),
        };
        engine.reconcile().await;
        Ok(engine)
    }

    /// The backend new workspaces are created with.
    pub fn backend_kind(&self) -> BackendKind {
        self.kind
    }

    /// What that backend can do.
    pub fn capabilities(&self) -> Capabilities {
        self.backend.capabilities()
    }

    /// The configuration the engine runs with.
    pub fn config(&self) -> &Config {
        &self.cfg
    }

    /// Creates the user's workspace (stopped). `AlreadyExists` if the user has one.
    ///
    /// The user's uid is allocated on first use and kept forever: a user who destroys and
    /// recreates their workspace gets the same uid back.
    #[tracing::instrument(skip_all, fields(user = %user, workspace = field::Empty))]
    pub async fn create(&self, user: &UserId, opts: CreateOptions) -> Result<WorkspaceInfo> {
        let limits = opts.limits.unwrap_or_else(|| self.cfg.limits.clone());
        limits.validate()?;
        if let Some(p) = &opts.policy {
            p.validate()?;
        }
        let network = opts.network.unwrap_or(self.cfg.network);
        if let Some(image) = &opts.image {
            warren_core::config::check_image_name(image)?;
        }
        let kind = opts.backend.filter(|k| *k != BackendKind::Auto).unwrap_or(self.kind);
        let backend = self.backend_for(kind)?;
        let _lock = self.lock(user).await?;
        let u = user.clone();
        if self.db(move |s| s.get_workspace(&u)).await?.is_some() {
            return Err(Error::AlreadyExists(format!("workspace of user {user}")));
        }
        let (u, base, count) = (user.clone(), self.cfg.uid_base, self.cfg.uid_count);
        let uid = self.db(move |s| s.allocate_uid(&u, base, count)).await?;
        let now = Timestamp::now();
        let rec = WorkspaceRecord {
            user: user.clone(),
            workspace_id: WorkspaceId::generate(),
            uid,
            username: user.linux_username(),
            backend: kind,
            desired_state: DesiredState::Stopped,
            limits,
            network,
            image: opts.image.clone(),
            created_at: now,
            updated_at: now,
        };
        Span::current().record("workspace", field::display(&rec.workspace_id));
        let event = NewEvent::new(
            "create",
            json!({ "uid": uid, "backend": kind, "limits": rec.limits, "network": network, "image": rec.image }),
        );
        let r = rec.clone();
        // Until the directory exists too (a create killed in between is completed on recovery).
        self.snap.mark(user, snapshots::CREATE_OP)?;
        let policy = opts.policy.clone();
        self.db(move |s| {
            s.insert_workspace(&r, &event)?;
            match &policy {
                Some(p) => s.set_policy(&r.user, Some(p), &NewEvent::new("policy", json!({ "policy": p }))),
                None => Ok(()),
            }
        })
        .await?;
        let spec = spec_of(&rec);
        let created = backend.create(&spec).await;
        self.snap.unmark(user);
        if let Err(e) = created {
            warn!(error = %e, "the backend failed to create the workspace; removing it again");
            if !matches!(e, Error::AlreadyExists(_)) {
                if let Err(e2) = backend.destroy(&spec).await {
                    warn!(error = %e2, "cleaning up after the failed create failed too");
                }
            }
            let (u, event) = (user.clone(), NewEvent::new("create_failed", json!({ "error": e.to_string() })));
            if let Err(e2) = self.db(move |s| s.delete_workspace(&u, &event)).await {
                warn!(error = %e2, "forgetting the failed workspace failed");
            }
            return Err(e);
        }
        let state = backend.status(&spec).await?.state;
        info!(uid, backend = %kind, "created workspace");
        Ok(info_of(rec, state))
    }

    /// Starts the user's workspace; a running one is left as it is.
    #[tracing::instrument(skip_all, fields(user = %user, workspace = field::Empty))]
    pub async fn start(&self, user: &UserId) -> Result<WorkspaceInfo> {
        let _lock = self.lock(user).await?;
        self.start_locked(user, "start").await
    }

    async fn start_locked(&self, user: &UserId, kind: &'static str) -> Result<WorkspaceInfo> {
        let (rec, backend) = self.lookup(user).await?;
        self.snap.mark(user, snapshots::START_OP)?;
        let status = backend.start(&spec_of(&rec)).await;
        self.snap.unmark(user);
        let status = status?;
        let (u, event) = (user.clone(), NewEvent::new(kind, json!({ "pid": status.pid })));
        let rec = self.db(move |s| s.set_desired_state(&u, DesiredState::Running, &event)).await?;
        self.clear_suspended(user).await?;
        self.snap.activity.touch(user);
        info!(pid = status.pid, "started workspace");
        Ok(info_of(rec, status.state))
    }

    /// Starts the user's workspace unless it is running already (for callers that want
    /// "exec starts it if needed"). [`Engine::exec`] itself starts only a workspace that was
    /// suspended for idleness (see [`snapshots`]); an explicitly stopped one stays stopped.
    #[tracing::instrument(skip_all, fields(user = %user, workspace = field::Empty))]
    pub async fn ensure_running(&self, user: &UserId) -> Result<WorkspaceInfo> {
        let info = self.status(user).await?;
        if info.state == State::Running {
            self.snap.activity.touch(user);
            return Ok(info);
        }
        let _lock = self.lock(user).await?;
        // Someone else may have started it while this call waited for the lock.
        let info = self.status(user).await?;
        if info.state == State::Running {
            self.snap.activity.touch(user);
            return Ok(info);
        }
        let u = user.clone();
        let kind = if self.db(move |s| s.activity(&u)).await?.suspended { "resume" } else { "auto_start" };
        self.start_locked(user, kind).await
    }

    /// Stops the user's workspace, killing every process in it. Files stay.
    #[tracing::instrument(skip_all, fields(user = %user, workspace = field::Empty))]
    pub async fn stop(&self, user: &UserId) -> Result<WorkspaceInfo> {
        let _lock = self.lock(user).await?;
        let (rec, backend) = self.lookup(user).await?;
        let spec = spec_of(&rec);
        backend.stop(&spec).await?;
        let (u, event) = (user.clone(), NewEvent::new("stop", json!({})));
        let rec = self.db(move |s| s.set_desired_state(&u, DesiredState::Stopped, &event)).await?;
        // Stopped on purpose: the next exec must not resume it.
        self.clear_suspended(user).await?;
        let state = backend.status(&spec).await?.state;
        info!("stopped workspace");
        Ok(info_of(rec, state))
    }

    /// Stops the user's workspace and deletes it with all its files. The user keeps their uid.
    #[tracing::instrument(skip_all, fields(user = %user, workspace = field::Empty))]
    pub async fn destroy(&self, user: &UserId) -> Result<()> {
        let _lock = self.lock(user).await?;
        let (rec, backend) = self.lookup(user).await?;
        // The files go first, in one rename: a destroy killed midway leaves them whole or gone
        // (and the next engine finishes it), never half deleted.
        let home = self.set_aside_home(&backend, &spec_of(&rec)).await?;
        backend.destroy(&spec_of(&rec)).await?;
        self.monitor.forget(user);
        self.monitor.forget_usage(user);
        let (u, event) = (user.clone(), NewEvent::new("destroy", json!({})));
        self.db(move |s| s.delete_workspace(&u, &event)).await?;
        self.drop_set_aside(user, home).await;
        info!("destroyed workspace");
        Ok(())
    }

    /// The user's workspace, with its state as the host shows it now.
    #[tracing::instrument(skip_all, fields(user = %user, workspace = field::Empty))]
    pub async fn status(&self, user: &UserId) -> Result<WorkspaceInfo> {
        let (rec, backend) = self.lookup(user).await?;
        let state = backend.status(&spec_of(&rec)).await?.state;
        Ok(info_of(rec, state))
    }

    /// Every workspace, ordered by user id, each with its live state.
    pub async fn list(&self) -> Result<Vec<WorkspaceInfo>> {
        Ok(self.list_with_state().await?.into_iter().map(|(rec, _, state)| info_of(rec, state)).collect())
    }

    /// Every stored workspace with its backend and its state on the host now.
    pub(crate) async fn list_with_state(&self) -> Result<Vec<(WorkspaceRecord, Arc<dyn Backend>, State)>> {
        let recs = self.db(|s| s.list_workspaces()).await?;
        let mut out = Vec::with_capacity(recs.len());
        for rec in recs {
            let backend = self.backend_for(rec.backend)?;
            let state = backend.status(&spec_of(&rec)).await?.state;
            out.push((rec, backend, state));
        }
        Ok(out)
    }

    /// Runs a command to completion in the user's workspace. The workspace must be running
    /// (the backend's `Conflict` otherwise; see [`Engine::ensure_running`]), unless it was
    /// suspended for idleness: then it is resumed first, transparently.
    #[tracing::instrument(skip_all, fields(user = %user, workspace = field::Empty))]
    pub async fn exec(&self, user: &UserId, req: ExecRequest) -> Result<ExecOutput> {
        let (rec, backend) = self.lookup(user).await?;
        let rec = self.resume_if_suspended(user, rec).await?;
        let _busy = self.snap.activity.busy(user);
        backend.exec(&spec_of(&rec), req).await
    }

    /// Starts a command in the user's workspace and streams its output (resuming a workspace
    /// suspended for idleness first, like [`Engine::exec`]).
    #[tracing::instrument(skip_all, fields(user = %user, workspace = field::Empty))]
    pub async fn exec_stream(&self, user: &UserId, req: ExecRequest) -> Result<ExecHandle> {
        let (rec, backend) = self.lookup(user).await?;
        let rec = self.resume_if_suspended(user, rec).await?;
        let busy = self.snap.activity.busy(user);
        let h = backend.exec_stream(&spec_of(&rec), req).await?;
        Ok(snapshots::track_exec(h, busy))
    }

    /// Reads a file of the user's workspace.
    #[tracing::instrument(skip_all, fields(user = %user, workspace = field::Empty))]
    pub async fn read_file(&self, user: &UserId, path: &WorkspacePath) -> Result<Vec<u8>> {
        let (rec, backend) = self.lookup(user).await?;
        self.snap.activity.touch(user);
        backend.read_file(&spec_of(&rec), path).await
    }

    /// Writes a file (atomically, creating parent directories) with permission bits `mode`.
    #[tracing::instrument(skip_all, fields(user = %user, workspace = field::Empty))]
    pub async fn write_file(&self, user: &UserId, path: &WorkspacePath, data: Vec<u8>, mode: u32) -> Result<()> {
        let (rec, backend) = self.lookup(user).await?;
        self.snap.activity.touch(user);
        self.check_disk_quota(&rec, &backend, data.len() as u64).await?;
        backend.write_file(&spec_of(&rec), path, data, mode).await
    }

    /// Lists a directory of the user's workspace.
    #[tracing::instrument(skip_all, fields(user = %user, workspace = field::Empty))]
    pub async fn list_files(&self, user: &UserId, path: &WorkspacePath) -> Result<Vec<DirEntry>> {
        let (rec, backend) = self.lookup(user).await?;
        self.snap.activity.touch(user);
        backend.list_files(&spec_of(&rec), path).await
    }

    /// Creates a directory and its parents.
    #[tracing::instrument(skip_all, fields(user = %user, workspace = field::Empty))]
    pub async fn make_dir(&self, user: &UserId, path: &WorkspacePath) -> Result<()> {
        let (rec, backend) = self.lookup(user).await?;
        self.snap.activity.touch(user);
        backend.make_dir(&spec_of(&rec), path).await
    }

    /// Deletes a file, or a directory (with its contents when `recursive`).
    #[tracing::instrument(skip_all, fields(user = %user, workspace = field::Empty))]
    pub async fn delete_file(&self, user: &UserId, path: &WorkspacePath, recursive: bool) -> Result<()> {
        let (rec, backend) = self.lookup(user).await?;
        self.snap.activity.touch(user);
        let r = backend.delete_file(&spec_of(&rec), path, recursive).await;
        self.monitor.forget_disk(user);
        r
    }

    /// Resource usage of the user's workspace.
    #[tracing::instrument(skip_all, fields(user = %user, workspace = field::Empty))]
    pub async fn stats(&self, user: &UserId) -> Result<Stats> {
        let (rec, backend) = self.lookup(user).await?;
        backend.stats(&spec_of(&rec)).await
    }

    /// The last `limit` events of the audit trail (of `user` if given), oldest first.
    pub async fn events(&self, user: Option<&UserId>, limit: usize) -> Result<Vec<Event>> {
        let u = user.cloned();
        self.db(move |s| s.events(u.as_ref(), limit)).await
    }

    /// Records an event of `kind` in the audit trail, of `user`'s workspace when `user` is
    /// given (the server records every mutating API call this way).
    pub async fn audit(&self, user: Option<&UserId>, kind: &str, detail: serde_json::Value) -> Result<()> {
        let (u, event) = (user.cloned(), NewEvent::new(kind, detail));
        self.db(move |s| {
            let ws = match &u {
                Some(u) => s.get_workspace(u)?.map(|r| r.workspace_id),
                None => None,
            };
            s.record_event(u.as_ref(), ws.as_ref(), &event)
        })
        .await
        .map(drop)
    }

    /// Confined file access beneath the user's workspace home: one lookup, then every open
    /// goes through [`Confined`] (for bulk work such as tar upload and download).
    #[tracing::instrument(skip_all, fields(user = %user, workspace = field::Empty))]
    pub async fn files(&self, user: &UserId) -> Result<Confined> {
        let (rec, backend) = self.lookup(user).await?;
        self.snap.activity.touch(user);
        backend.confined(&spec_of(&rec))
    }

    /// The stored record and its backend; `NotFound` if the user has no workspace.
    async fn lookup(&self, user: &UserId) -> Result<(WorkspaceRecord, Arc<dyn Backend>)> {
        let u = user.clone();
        let rec = self
            .db(move |s| s.get_workspace(&u))
            .await?
            .ok_or_else(|| Error::NotFound(format!("workspace of user {user}")))?;
        Span::current().record("workspace", field::display(&rec.workspace_id));
        let backend = self.backend_for(rec.backend)?;
        Ok((rec, backend))
    }

    /// The backend holding workspaces of `kind`: the picked one, or another opened on demand
    /// (a workspace stays with the backend it was created with).
    fn backend_for(&self, kind: BackendKind) -> Result<Arc<dyn Backend>> {
        if kind == self.kind {
            return Ok(self.backend.clone());
        }
        let mut others = self.others.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(b) = others.get(&kind) {
            return Ok(b.clone());
        }
        info!(backend = %kind, "opening the {kind} backend for workspaces created with it");
        let b = open_backend(kind, &self.cfg, self.ns_helper.clone())?;
        others.insert(kind, b.clone());
        Ok(b)
    }

    async fn db<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Store) -> std::result::Result<T, StoreError> + Send + 'static,
    ) -> Result<T> {
        let store = self.store.clone();
        blocking(move || f(&store).map_err(Error::from)).await
    }

    /// Takes the user's workspace lock, waiting for another thread or process that holds it.
    async fn lock(&self, user: &UserId) -> Result<Flock<File>> {
        let path = self.lock_path(user);
        let user = user.clone();
        blocking(move || loop {
            let file = open_lock_file(&path)?;
            let file = match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
                Ok(l) => l,
                Err((f, Errno::EWOULDBLOCK)) => {
                    info!(user = %user, "waiting for another warren process working on this workspace");
                    let mut file = f;
                    loop {
                        match Flock::lock(file, FlockArg::LockExclusive) {
                            Ok(l) => break l,
                            Err((f, Errno::EINTR)) => file = f,
                            Err((_, e)) => return Err(Error::errno(format!("locking {}", path.display()), e)),
                        }
                    }
                }
                Err((_, e)) => return Err(Error::errno(format!("locking {}", path.display()), e)),
            };
            if still_linked(&file, &path) {
                return Ok(file);
            }
            // [`Engine::forget_lock`] removed the file while we waited: lock the new one.
        })
        .await
    }

    /// The user's lock if nobody holds it now.
    async fn try_lock(&self, user: &UserId) -> Result<Option<Flock<File>>> {
        let path = self.lock_path(user);
        blocking(move || loop {
            let file = open_lock_file(&path)?;
            match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
                Ok(l) if still_linked(&l, &path) => return Ok(Some(l)),
                Ok(_) => continue,
                Err((_, Errno::EWOULDBLOCK)) => return Ok(None),
                Err((_, e)) => return Err(Error::errno(format!("locking {}", path.display()), e)),
            }
        })
        .await
    }

    /// Removes the lock file of a user who has no workspace and will not come back (the
    /// throw-away users of skill sandboxes and code sessions), so they do not pile up. Holders
    /// and waiters stay correct: a lock is only good while its file is still the one at its
    /// path, and [`Engine::lock`] checks that.
    pub async fn forget_lock(&self, user: &UserId) -> Result<()> {
        let lock = self.lock(user).await?;
        let u = user.clone();
        if self.db(move |s| s.get_workspace(&u)).await?.is_some() {
            return Err(Error::Conflict(format!("user {user} has a workspace: its lock stays")));
        }
        let path = self.lock_path(user);
        blocking(move || {
            let removed = std::fs::remove_file(&path);
            drop(lock);
            match removed {
                Ok(()) => Ok(()),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
                Err(e) => Err(Error::io(format!("removing {}", path.display()), e)),
            }
        })
        .await
    }

    fn lock_path(&self, user: &UserId) -> PathBuf {
        self.locks.join(format!("{user}.lock"))
    }

    /// Compares each stored workspace with what the host shows and records differences. The
    /// host wins: the desired state follows it. A workspace another process is working on right
    /// now (its lock is held) is left alone. Failures are logged, never fatal.
    async fn reconcile(&self) {
        let recs = match self.db(|s| s.list_workspaces()).await {
            Ok(r) => r,
            Err(e) => {
                warn!(error = %e, "reconcile: listing workspaces failed");
                return;
            }
        };
        let debris = snapshots::restore_debris(&self.cfg.state_dir);
        let stored: HashSet<String> = recs.iter().map(|r| r.user.as_str().to_owned()).collect();
        for rec in recs {
            if let Err(e) = self.reconcile_one(&rec, debris.contains(rec.user.as_str())).await {
                warn!(user = %rec.user, workspace = %rec.workspace_id, error = %e, "reconcile failed");
            }
        }
        self.recover_orphans(&stored, &debris).await;
    }

    async fn reconcile_one(&self, rec: &WorkspaceRecord, debris: bool) -> Result<()> {
        let Some(_lock) = self.try_lock(&rec.user).await? else {
            tracing::debug!(user = %rec.user, "reconcile: workspace busy, skipped");
            return Ok(());
        };
        // Re-read under the lock: the row may have changed since it was listed.
        let u = rec.user.clone();
        let Some(rec) = self.db(move |s| s.get_workspace(&u)).await? else { return Ok(()) };
        let backend = self.backend_for(rec.backend)?;
        // What a killed snapshot or restore left: a frozen cgroup, a workspace stopped for an
        // archive, a restore's staging tree.
        if self.recover_locked(&rec, &backend, debris).await {
            return Ok(());
        }
        let actual = backend.status(&spec_of(&rec)).await?.state;
        let agree = matches!(
            (rec.desired_state, actual),
            (DesiredState::Running, State::Running) | (DesiredState::Stopped, State::Stopped)
        );
        if agree {
            return Ok(());
        }
        let follow = if actual == State::Running { DesiredState::Running } else { DesiredState::Stopped };
        if actual == State::Absent {
            // Recorded once, not on every open.
            let u = rec.user.clone();
            let last = self.db(move |s| s.events(Some(&u), 1)).await?;
            if last.first().is_some_and(|e| e.kind == "reconcile" && e.detail["actual"] == "absent") {
                warn!(user = %rec.user, workspace = %rec.workspace_id, "workspace is stored but the backend has none: destroy it");
                return Ok(());
            }
        }
        warn!(
            user = %rec.user,
            workspace = %rec.workspace_id,
            desired = %rec.desired_state,
            actual = %actual,
            "workspace state on the host differs from the last one asked for; the host wins"
        );
        let (u, event) =
            (rec.user.clone(), NewEvent::new("reconcile", json!({ "desired": rec.desired_state, "actual": actual })));
        self.db(move |s| s.set_desired_state(&u, follow, &event)).await?;
        Ok(())
    }
}

fn spec_of(rec: &WorkspaceRecord) -> WorkspaceSpec {
    WorkspaceSpec {
        id: rec.workspace_id.clone(),
        user: rec.user.clone(),
        username: rec.username.clone(),
        uid: rec.uid,
        gid: rec.uid,
        limits: rec.limits.clone(),
        network: rec.network,
        image: rec.image.clone(),
    }
}

fn info_of(rec: WorkspaceRecord, state: State) -> WorkspaceInfo {
    WorkspaceInfo {
        user: rec.user,
        workspace_id: rec.workspace_id,
        username: rec.username,
        uid: rec.uid,
        backend: rec.backend,
        state,
        limits: rec.limits,
        network: rec.network,
        image: rec.image,
        created_at: rec.created_at,
    }
}

fn check_uid_range(cfg: &Config) -> Result<()> {
    let end = u64::from(cfg.uid_base) + u64::from(cfg.uid_count);
    if cfg.uid_base == 0 || cfg.uid_count == 0 || end > u64::from(u32::MAX) {
        return Err(Error::InvalidRequest(format!(
            "uid_base {} and uid_count {} must give a non-empty range of unprivileged uids below {}",
            cfg.uid_base,
            cfg.uid_count,
            u32::MAX
        )));
    }
    Ok(())
}

/// `{state}` and `{state}/workspaces` mode 0711 (per-uid processes reach their home but cannot
/// list others), `{state}/locks` mode 0700.
fn prepare_dirs(state: &Path, locks: &Path) -> Result<()> {
    let hint = "set --state-dir or WARREN_STATE_DIR to a directory you can write";
    for (dir, mode) in [(state.to_owned(), 0o711), (state.join("workspaces"), 0o711), (locks.to_owned(), 0o700)] {
        std::fs::create_dir_all(&dir)
            .map_err(|e| Error::io(format!("creating the state directory {} ({hint})", dir.display()), e))?;
        let md = std::fs::metadata(&dir).map_err(|e| Error::io(format!("reading {}", dir.display()), e))?;
        if md.permissions().mode() & 0o7777 != mode {
            std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(mode))
                .map_err(|e| Error::io(format!("setting mode {mode:o} on {}", dir.display()), e))?;
        }
    }
    Ok(())
}

/// Whether the locked `file` is still the one at `path` (not removed or replaced meanwhile).
fn still_linked(file: &File, path: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (file.metadata(), std::fs::metadata(path)) {
        (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
        _ => false,
    }
}

fn open_lock_file(path: &Path) -> Result<File> {
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(path)
        .map_err(|e| Error::io(format!("opening lock file {}", path.display()), e))
}

fn pick_backend(cfg: &Config, helper: Option<HelperCmd>) -> Result<(BackendKind, Arc<dyn Backend>)> {
    let kind = match cfg.backend {
        BackendKind::Auto | BackendKind::Pool if cfg.pool.enabled => {
            info!(backend = "pool", "backend pool: the container pool is enabled ([pool] enabled / USE_CONTAINERS)");
            BackendKind::Pool
        }
        BackendKind::Auto => {
            let (kind, why) = choose_auto(NsBackend::probe(), DockerBackend::probe);
            info!(backend = %kind, "backend auto: picked {kind}, {why}");
            kind
        }
        kind => {
            info!(backend = %kind, "backend {kind}, as configured");
            kind
        }
    };
    Ok((kind, open_backend(kind, cfg, helper)?))
}

/// `auto`'s choice, strongest first, and why: `ns` when its probe passes (the workspace's own
/// kernel namespaces, cgroup and seccomp filter, no daemon to trust); else `docker` when a
/// daemon answers (a container per workspace); else `dir` (a uid and rlimits only). `docker`
/// is probed only when `ns` cannot run.
fn choose_auto(
    ns: std::result::Result<(), String>,
    docker: impl FnOnce() -> std::result::Result<(), String>,
) -> (BackendKind, String) {
    match ns {
        Ok(()) => (BackendKind::Ns, "because this host supports namespaces, cgroups and seccomp".to_owned()),
        Err(why) => match docker() {
            Ok(()) => (
                BackendKind::Docker,
                format!("because the ns backend cannot run here ({why}) and a docker daemon answers"),
            ),
            Err(docker_why) => (
                BackendKind::Dir,
                format!("because the ns backend cannot run here ({why}) and no docker daemon answers ({docker_why})"),
            ),
        },
    }
}

/// The docker options with the configured image, if any.
fn docker_options(cfg: &Config) -> DockerOptions {
    let mut o = DockerOptions::default();
    if let Some(i) = &cfg.image {
        o.image = i.clone();
    }
    o.read_only_root = cfg.docker.read_only_root;
    o.tmp_size = cfg.docker.tmp_size.clone();
    o
}

fn open_backend(kind: BackendKind, cfg: &Config, helper: Option<HelperCmd>) -> Result<Arc<dyn Backend>> {
    let state = cfg.state_dir.as_path();
    match kind {
        BackendKind::Dir => {
            DirBackend::probe().map_err(|why| Error::Unsupported(format!("the dir backend cannot run here: {why}")))?;
            Ok(Arc::new(DirBackend::new(state)?))
        }
        BackendKind::Ns => {
            NsBackend::probe().map_err(|why| {
                Error::Unsupported(format!("the ns backend cannot run on this host: {why}; use --backend dir"))
            })?;
            let image = cfg.image.as_deref().map(|n| warren_core::config::image_rootfs(state, n)).transpose()?;
            Ok(Arc::new(NsBackend::new(state, helper)?.with_image(image)))
        }
        BackendKind::Docker => {
            DockerBackend::probe().map_err(|why| {
                Error::Unsupported(format!(
                    "the docker backend cannot run here: {why}; start dockerd or use --backend ns or dir"
                ))
            })?;
            Ok(Arc::new(DockerBackend::with_options(state, docker_options(cfg))?))
        }
        BackendKind::Pool => {
            DockerBackend::probe().map_err(|why| {
                Error::Unsupported(format!(
                    "the container pool (USE_CONTAINERS) needs a docker daemon: {why}; start dockerd or turn the pool off"
                ))
            })?;
            let pool = PoolOptions {
                max_containers: cfg.pool.max_containers,
                users_per_container: cfg.pool.users_per_container,
            };
            Ok(Arc::new(DockerPool::new(&cfg.state_dir, docker_options(cfg), pool)?))
        }
        BackendKind::Auto => Err(Error::Internal("backend 'auto' must be resolved before opening it".into())),
    }
}

// The server shares one engine between tasks.
const _: fn() = || {
    fn shareable<T: Send + Sync>() {}
    shareable::<Engine>();
};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auto_picks_the_strongest_backend_that_can_run() {
        let no = |why: &str| Err::<(), String>(why.to_owned());
        let docker_never = || -> std::result::Result<(), String> { panic!("docker is probed only when ns cannot run") };
        assert_eq!(choose_auto(Ok(()), docker_never).0, BackendKind::Ns);
        let (kind, why) = choose_auto(no("no user namespaces"), || Ok(()));
        assert_eq!(kind, BackendKind::Docker);
        assert!(why.contains("no user namespaces") && why.contains("docker daemon answers"), "{why}");
        let (kind, why) = choose_auto(no("no cgroups"), || no("no socket"));
        assert_eq!(kind, BackendKind::Dir);
        assert!(why.contains("no cgroups") && why.contains("no socket"), "{why}");
    }

    #[test]
    fn an_enabled_pool_is_picked_under_auto() {
        // `auto` (or `pool`) with the pool enabled is the pool, without probing ns.
        let mut cfg = Config { backend: BackendKind::Auto, ..Config::default() };
        cfg.pool.enabled = true;
        cfg.state_dir = std::env::temp_dir().join("warren-engine-pick-test-never-created");
        match pick_backend(&cfg, None) {
            Ok((kind, _)) => assert_eq!(kind, BackendKind::Pool),
            Err(e) => {
                assert!(e.to_string().contains("USE_CONTAINERS"), "without a daemon the error names the pool: {e}")
            }
        }
    }
}
