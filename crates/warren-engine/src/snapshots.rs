//! Snapshots of workspaces, end to end: the engine's side of [`warren_snapshot`].
//!
//! # Taking one ([`Engine::snapshot_create`])
//! Under the user's lock (so snapshots and restores of one user never overlap, across
//! processes too): a running workspace whose backend can freeze (`ns`: the cgroup freezer) is
//! frozen, archived and thawed, and keeps running (its processes only pause); on a backend that
//! cannot (`dir`) it is stopped, archived and started again, the seed's behaviour. A stopped
//! workspace is archived as it is. The archive is written on a blocking thread, streamed into
//! the configured storage. The whole sequence runs in a task of its own, so a caller that goes
//! away (an HTTP client hanging up) cannot leave a workspace frozen: the thaw or restart always
//! runs. Then retention keeps the newest `snapshots.keep` (default 5) unpinned snapshots; pinned
//! ones are extra and the newest one is never deleted.
//!
//! # Restoring one ([`Engine::snapshot_restore`])
//! The archive is verified (size and SHA-256 against the manifest) and extracted into a staging
//! directory beside the workspace, with every file given to the workspace's uid, while the
//! workspace keeps running. Only then: the workspace is stopped if it runs, its current files are
//! saved as a `pre_restore` snapshot (so every restore can be undone by restoring that one), the
//! staging tree is swapped in atomically (`renameat2(RENAME_EXCHANGE)`), and the workspace is
//! started again if it was running. A failure before the swap leaves the workspace as it was
//! (restarted if it was running).
//!
//! `pre_restore` snapshots count towards `keep` like any other, but taking one never applies
//! retention: a restore never deletes one of the user's snapshots. The next snapshot taken
//! applies retention to all of them (the newest `keep` stay).
//!
//! # After a crash
//! Before freezing or stopping a workspace for a snapshot or restore, the engine writes a marker
//! `{state}/run/snapshot/{user}.json` (what it was doing, whether the workspace was running) and
//! removes it once the workspace is back as it was; every start and create is bracketed by one
//! too. When an engine opens, for every workspace whose lock is free (nobody is working on it): a
//! marker means the process was killed midway, so the workspace is thawed and started again if
//! it was running (a killed start is torn down instead unless it got as far as running: on `ns`
//! the helper outlives warren and would leave an init no `init.json` names; a killed create gets
//! its directory); a running workspace on a backend that can freeze is thawed in any case (a
//! frozen cgroup nobody holds the lock for is debris); leftovers of an interrupted restore
//! (`.{user}.restore-*` beside the workspace) are deleted ([`warren_snapshot::recover`]). A
//! destroy first renames the home to `.{user}.restore-destroy-*`, so a killed one leaves the
//! files whole or gone, never half deleted; found without the home, that name means the destroy
//! is finished now. What killed operations left of users without a workspace (such names, a
//! marker) is deleted too. Archives without a manifest (a killed create) are
//! never listed, and are removed by [`Snapshots::cleanup_orphans`] once an hour old, the first
//! time an engine touches snapshots and when the trigger loop starts.
//!
//! # Automatic snapshots ([`Engine::run_triggers`], [`Engine::tick_triggers`])
//! * **Idle suspension** (`snapshots.idle_suspend_after`): the engine records each workspace's
//!   last use (exec, file access, start) in memory and, at most every 30 s, in the store (and
//!   every 30 s while a command runs), so activity through any process counts. A running
//!   workspace unused for that long and with no command running in this process is stopped,
//!   marked suspended and snapshotted (trigger `idle`). Its next use resumes it: `exec` and
//!   `exec_stream` start a suspended workspace transparently, as does `ensure_running`; an
//!   explicit `stop` clears the mark (an explicitly stopped workspace stays stopped).
//! * **Daily** (`snapshots.daily_at`, UTC): once per day after that time, every workspace that
//!   is running or was used since the previous day's slot gets a `daily` snapshot. The slot
//!   handled last is kept in the store, so a restart does not repeat it; a missed slot is
//!   caught up once.
//! * **Explicit save** is [`Engine::snapshot_create`] (trigger `manual`).
//!
//! Every snapshot, restore, deletion, pin, suspension, resumption and recovery is an event in
//! the audit trail.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use serde_json::json;
use tokio::sync::mpsc;
use tracing::{debug, info, warn};
use warren_core::backend::blocking;
use warren_core::config::{Config, SnapshotConfig, SnapshotStorage};
use warren_core::{
    Backend, Error, ExecEvent, ExecHandle, Result, SnapshotId, State, UserId, WorkspaceId, WorkspaceSpec,
};
use warren_snapshot::{
    ArchiveOptions, CreateOptions as ArchiveCreate, ExtractOptions, ImportOptions, Manifest, ProgressFn, S3Config,
    S3Storage, Snapshots, Trigger,
};
use warren_store::{DesiredState, NewEvent, Store, WorkspaceRecord};

use crate::{spec_of, Engine, Timestamp};

/// How often activity is written to the store, at most (and while a command runs).
const PERSIST_EVERY: Duration = Duration::from_secs(30);
/// Archives without a manifest younger than this may belong to a create in progress.
const ORPHAN_AGE: Duration = Duration::from_secs(3600);
/// After an automatic snapshot of a workspace failed, wait this long before trying again.
const RETRY_AFTER: Duration = Duration::from_secs(15 * 60);

/// How to take a snapshot.
#[derive(Clone)]
pub struct SnapshotOptions {
    /// Why (default `manual`).
    pub trigger: Trigger,
    /// Exempt from retention.
    pub pinned: bool,
    /// Told about the archive's progress now and then (entries and file bytes so far).
    pub progress: Option<ProgressFn>,
}

impl Default for SnapshotOptions {
    fn default() -> Self {
        Self { trigger: Trigger::Manual, pinned: false, progress: None }
    }
}

impl fmt::Debug for SnapshotOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SnapshotOptions")
            .field("trigger", &self.trigger)
            .field("pinned", &self.pinned)
            .field("progress", &self.progress.is_some())
            .finish()
    }
}

/// How a running workspace was kept still while it was archived.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Quiesce {
    /// Frozen and thawed: it kept running (its processes paused).
    Freeze,
    /// Stopped and started again (the backend cannot freeze).
    StopStart,
    /// It was not running.
    Stopped,
}

impl Quiesce {
    /// The event spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Quiesce::Freeze => "freeze",
            Quiesce::StopStart => "stop_start",
            Quiesce::Stopped => "stopped",
        }
    }
}

/// What a restore did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RestoreOutcome {
    /// The snapshot now in the workspace.
    pub restored: Manifest,
    /// The automatic snapshot of the files the restore replaced: restore it to undo.
    pub pre_restore: Manifest,
    /// Regular files restored.
    pub files: u64,
    /// Bytes of regular files restored.
    pub bytes: u64,
    /// The workspace was running and was started again.
    pub restarted: bool,
}

/// What one pass of the automatic triggers did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TickReport {
    /// Workspaces snapshotted and stopped for idleness, with their snapshot.
    pub idle_suspended: Vec<(UserId, SnapshotId)>,
    /// Workspaces given their daily snapshot.
    pub daily: Vec<(UserId, SnapshotId)>,
    /// Workspaces whose automatic snapshot failed, with the error.
    pub failed: Vec<(UserId, String)>,
}

/// The engine's snapshot state.
#[derive(Debug)]
pub(crate) struct SnapState {
    cfg: SnapshotConfig,
    state_dir: PathBuf,
    storage: Mutex<Option<Snapshots>>,
    orphans_checked: AtomicBool,
    markers: PathBuf,
    pub(crate) activity: ActivityTracker,
    retry_after: Mutex<HashMap<UserId, SystemTime>>,
}

/// The marker's `op` while a workspace starts.
pub(crate) const START_OP: &str = "start";
/// The marker's `op` while a workspace is created.
pub(crate) const CREATE_OP: &str = "create";
/// The kind of a destroy's set-aside files among the `.{user}.restore-*` names.
const DESTROY_KIND: &str = "destroy";

impl SnapState {
    /// Brackets a start or create ([`START_OP`], [`CREATE_OP`]) with a crash marker: one killed
    /// midway can leave a half-done workspace that `status` cannot see (on `ns`, an init whose
    /// `init.json` was never written; a stored workspace without its directory); the next
    /// engine completes or undoes it (see the module docs).
    pub(crate) fn mark(&self, user: &UserId, op: &str) -> Result<()> {
        write_marker(&self.markers, user, op, false)
    }

    /// The operation is over (done or failed): removes the marker [`SnapState::mark`] wrote.
    pub(crate) fn unmark(&self, user: &UserId) {
        remove_marker(&self.markers, user);
    }

    pub(crate) fn new(cfg: &Config, store: Arc<Store>) -> Self {
        Self {
            cfg: cfg.snapshots.clone(),
            state_dir: cfg.state_dir.clone(),
            storage: Mutex::new(None),
            orphans_checked: AtomicBool::new(false),
            markers: cfg.state_dir.join("run").join("snapshot"),
            activity: ActivityTracker { seen: Arc::new(Mutex::new(HashMap::new())), store },
            retry_after: Mutex::new(HashMap::new()),
        }
    }
}

/// Last use of each workspace, in memory and (throttled) in the store.
#[derive(Clone, Debug)]
pub(crate) struct ActivityTracker {
    seen: Arc<Mutex<HashMap<UserId, Seen>>>,
    store: Arc<Store>,
}

#[derive(Debug, Default)]
struct Seen {
    last: Option<SystemTime>,
    persisted: Option<SystemTime>,
    busy: u32,
}

impl ActivityTracker {
    fn map(&self) -> std::sync::MutexGuard<'_, HashMap<UserId, Seen>> {
        self.seen.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Records a use of the user's workspace now.
    pub(crate) fn touch(&self, user: &UserId) {
        let now = SystemTime::now();
        let persist = {
            let mut map = self.map();
            let e = map.entry(user.clone()).or_default();
            e.last = Some(e.last.map_or(now, |l| l.max(now)));
            let due = e.persisted.is_none_or(|p| now.duration_since(p).unwrap_or(Duration::ZERO) >= PERSIST_EVERY);
            if due {
                e.persisted = Some(now);
            }
            due
        };
        if persist {
            let (store, u, at) = (self.store.clone(), user.clone(), Timestamp::from_millis(millis(now)));
            // Off the caller's path: a use must not wait for a durable write.
            if let Ok(rt) = tokio::runtime::Handle::try_current() {
                rt.spawn_blocking(move || {
                    if let Err(e) = store.touch_activity(&u, at) {
                        debug!(user = %u, error = %e, "recording workspace activity failed");
                    }
                });
            }
        }
    }

    /// Marks a command running in the user's workspace until the guard drops (it counts as
    /// use all along).
    pub(crate) fn busy(&self, user: &UserId) -> BusyGuard {
        self.touch(user);
        self.map().entry(user.clone()).or_default().busy += 1;
        let (me, u) = (self.clone(), user.clone());
        let ticker = tokio::runtime::Handle::try_current().ok().map(|rt| {
            rt.spawn(async move {
                let mut every = tokio::time::interval_at(tokio::time::Instant::now() + PERSIST_EVERY, PERSIST_EVERY);
                loop {
                    every.tick().await;
                    me.touch(&u);
                }
            })
        });
        BusyGuard { tracker: self.clone(), user: user.clone(), ticker }
    }

    fn last(&self, user: &UserId) -> (Option<SystemTime>, u32) {
        self.map().get(user).map_or((None, 0), |s| (s.last, s.busy))
    }
}

/// A command in progress (see [`ActivityTracker::busy`]).
#[derive(Debug)]
pub(crate) struct BusyGuard {
    tracker: ActivityTracker,
    user: UserId,
    ticker: Option<tokio::task::JoinHandle<()>>,
}

impl Drop for BusyGuard {
    fn drop(&mut self) {
        if let Some(t) = self.ticker.take() {
            t.abort();
        }
        if let Some(s) = self.tracker.map().get_mut(&self.user) {
            s.busy = s.busy.saturating_sub(1);
        }
        self.tracker.touch(&self.user);
    }
}

/// Passes a streaming exec's events through, keeping the workspace marked busy until the
/// command ends or the caller drops the handle (which then drops the backend's, killing the
/// command, as before).
pub(crate) fn track_exec(h: ExecHandle, busy: BusyGuard) -> ExecHandle {
    let ExecHandle { stdin, events: mut inner, control } = h;
    let (tx, rx) = mpsc::channel(64);
    tokio::spawn(async move {
        let _busy = busy;
        loop {
            tokio::select! {
                ev = inner.recv() => match ev {
                    Some(ev) => {
                        let exit = matches!(ev, ExecEvent::Exit(_));
                        if tx.send(ev).await.is_err() || exit {
                            break;
                        }
                    }
                    None => break,
                },
                _ = tx.closed() => break,
            }
        }
    });
    ExecHandle { stdin, events: rx, control }
}

fn millis(t: SystemTime) -> i64 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_millis()).unwrap_or(i64::MAX),
        Err(_) => 0,
    }
}

fn system_time(ts: Timestamp) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(u64::try_from(ts.as_millis()).unwrap_or(0))
}

/// The start of the most recent daily slot at or before `now`.
fn daily_slot(now: SystemTime, at: warren_core::config::TimeOfDay) -> SystemTime {
    let secs = now.duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    let slot = secs - secs % 86_400 + at.seconds();
    let slot = if slot > secs { slot.saturating_sub(86_400) } else { slot };
    UNIX_EPOCH + Duration::from_secs(slot)
}

/// Users with leftovers of an interrupted restore beside their workspace (`.{user}.restore-*`
/// in `{state}/workspaces`), found with one directory listing.
pub(crate) fn restore_debris(state_dir: &Path) -> HashSet<String> {
    let Ok(rd) = std::fs::read_dir(state_dir.join("workspaces")) else { return HashSet::new() };
    rd.flatten()
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            let rest = name.strip_prefix('.')?;
            let (user, _) = rest.split_once(".restore-")?;
            Some(user.to_owned())
        })
        .collect()
}

/// A destroy set the files of the workspace at `home` aside and was killed before it finished:
/// no home, and a `.{user}.restore-destroy-*` beside where it was.
fn destroy_unfinished(home: &Path) -> bool {
    let (Some(parent), Some(name)) = (home.parent(), home.file_name().and_then(|n| n.to_str())) else {
        return false;
    };
    if std::fs::symlink_metadata(home).is_ok() {
        return false;
    }
    let prefix = format!(".{name}.restore-{DESTROY_KIND}-");
    std::fs::read_dir(parent)
        .map(|rd| rd.flatten().any(|e| e.file_name().to_str().is_some_and(|n| n.starts_with(&prefix))))
        .unwrap_or(false)
}

/// What a snapshot or restore in progress wrote down in case it is killed.
#[derive(Debug, Serialize, Deserialize)]
struct Marker {
    op: String,
    was_running: bool,
    pid: u32,
    at: i64,
}

/// Writes the crash marker `{markers}/{user}.json` (see the module docs).
fn write_marker(markers: &Path, user: &UserId, op: &str, was_running: bool) -> Result<()> {
    std::fs::create_dir_all(markers).map_err(|e| Error::io(format!("creating {}", markers.display()), e))?;
    let _ = std::fs::set_permissions(markers, std::fs::Permissions::from_mode(0o700));
    let m = Marker { op: op.to_owned(), was_running, pid: std::process::id(), at: Timestamp::now().as_millis() };
    let body = serde_json::to_vec(&m).map_err(|e| Error::Internal(e.to_string()))?;
    warren_core::fs::write_atomic(&markers.join(format!("{user}.json")), &body, 0o600)
}

fn remove_marker(markers: &Path, user: &UserId) {
    let path = markers.join(format!("{user}.json"));
    if let Err(e) = std::fs::remove_file(&path) {
        if e.kind() != std::io::ErrorKind::NotFound {
            warn!(path = %path.display(), error = %e, "could not remove the snapshot marker");
        }
    }
}

/// Everything a snapshot job needs, owned, so it can run in a task of its own.
#[derive(Clone, Debug)]
struct Job {
    store: Arc<Store>,
    snaps: Snapshots,
    markers: PathBuf,
    keep: usize,
    user: UserId,
    rec: WorkspaceRecord,
    spec: WorkspaceSpec,
    backend: Arc<dyn Backend>,
    dir: PathBuf,
}

impl Job {
    fn write_marker(&self, op: &str, was_running: bool) -> Result<()> {
        write_marker(&self.markers, &self.user, op, was_running)
    }

    fn remove_marker(&self) {
        remove_marker(&self.markers, &self.user);
    }

    async fn event(&self, kind: &str, detail: serde_json::Value) {
        let (store, u, ws, event) =
            (self.store.clone(), self.user.clone(), self.rec.workspace_id.clone(), NewEvent::new(kind, detail));
        if let Err(e) = blocking(move || store.record_event(Some(&u), Some(&ws), &event).map_err(Error::from)).await {
            warn!(user = %self.user, kind, error = %e, "recording an event failed");
        }
    }

    async fn state(&self) -> Result<State> {
        Ok(self.backend.status(&self.spec).await?.state)
    }

    /// The newest snapshot's id (the next one's parent); with `id`, fails with `AlreadyExists`
    /// if the user has a snapshot `id` already.
    async fn parent_of(&self, id: Option<&SnapshotId>) -> Result<Option<SnapshotId>> {
        let (snaps, u, i) = (self.snaps.clone(), self.user.clone(), id.cloned());
        blocking(move || {
            if let Some(i) = i {
                match snaps.get(&u, &i) {
                    Err(warren_snapshot::SnapshotError::Core(Error::NotFound(_))) => {}
                    _ => {
                        return Err(Error::AlreadyExists(format!(
                            "snapshot {i} of user {u}; pick another name or delete it first"
                        )))
                    }
                }
            }
            Ok(snaps.list(&u).map_err(Error::from)?.first().map(|m| m.id.clone()))
        })
        .await
    }

    /// Archives the workspace directory as it is now (the caller keeps it still).
    async fn archive(
        &self,
        id: &SnapshotId,
        trigger: Trigger,
        pinned: bool,
        parent: Option<SnapshotId>,
        progress: Option<ProgressFn>,
    ) -> Result<Manifest> {
        let opts = ArchiveCreate {
            trigger,
            pinned,
            backend: self.rec.backend.to_string(),
            parent,
            archive: ArchiveOptions { progress, ..ArchiveOptions::default() },
        };
        let (snaps, u, i, dir) = (self.snaps.clone(), self.user.clone(), id.clone(), self.dir.clone());
        blocking(move || snaps.create(&u, &i, &dir, &opts).map_err(Error::from)).await
    }

    /// Takes snapshot `id`: freezes or stops a running workspace, archives, thaws or restarts
    /// (always, also when the archive failed).
    async fn take(&self, id: &SnapshotId, opts: &SnapshotOptions) -> Result<(Manifest, Quiesce)> {
        let parent = self.parent_of(Some(id)).await?;
        let running = self.state().await? == State::Running;
        let mut how = if !running {
            Quiesce::Stopped
        } else if self.backend.capabilities().freeze {
            Quiesce::Freeze
        } else {
            Quiesce::StopStart
        };
        if running {
            self.write_marker("snapshot_create", true)?;
        }
        if how == Quiesce::Freeze {
            match self.backend.freeze(&self.spec, true).await {
                Ok(()) => {}
                Err(Error::Unsupported(why)) => {
                    info!(user = %self.user, %why, "cannot freeze: stopping the workspace for the snapshot instead");
                    how = Quiesce::StopStart;
                }
                Err(e) => {
                    let _ = self.backend.freeze(&self.spec, false).await;
                    self.remove_marker();
                    return Err(e);
                }
            }
        }
        if how == Quiesce::StopStart {
            info!(user = %self.user, "the {} backend cannot freeze a workspace: stopping it for the snapshot and starting it again after", self.rec.backend);
            if let Err(e) = self.backend.stop(&self.spec).await {
                if let Err(e2) = self.backend.start(&self.spec).await {
                    warn!(user = %self.user, error = %e2, "starting the workspace again failed too");
                } else {
                    self.remove_marker();
                }
                return Err(e);
            }
        }
        let made = self.archive(id, opts.trigger, opts.pinned, parent, opts.progress.clone()).await;
        let back = match how {
            Quiesce::Freeze => self.backend.freeze(&self.spec, false).await,
            Quiesce::StopStart => self.backend.start(&self.spec).await.map(drop),
            Quiesce::Stopped => Ok(()),
        };
        match (&made, &back) {
            (_, Ok(())) => self.remove_marker(),
            (_, Err(e)) => warn!(
                user = %self.user,
                error = %e,
                "the workspace could not be thawed or started after the snapshot; the next engine start retries"
            ),
        }
        match (made, back) {
            (Ok(m), Ok(())) => Ok((m, how)),
            (Err(e), _) => Err(e),
            (Ok(m), Err(e)) => Err(Error::Internal(format!(
                "snapshot {} was taken, but the workspace could not be {} afterwards: {e}; run `warren workspace start {}`",
                m.id,
                if how == Quiesce::Freeze { "thawed" } else { "started again" },
                self.user
            ))),
        }
    }

    /// Retention (unless `m` is a pre-restore snapshot) and the event.
    async fn finish(&self, m: &Manifest, how: Quiesce) -> Vec<SnapshotId> {
        let deleted = if m.trigger == Trigger::PreRestore {
            Vec::new()
        } else {
            let (snaps, u, keep) = (self.snaps.clone(), self.user.clone(), self.keep);
            match blocking(move || snaps.apply_retention(&u, keep).map_err(Error::from)).await {
                Ok(d) => d,
                Err(e) => {
                    warn!(user = %self.user, error = %e, "applying snapshot retention failed");
                    Vec::new()
                }
            }
        };
        self.event(
            "snapshot_create",
            json!({
                "snapshot": m.id,
                "trigger": m.trigger,
                "pinned": m.pinned,
                "quiesce": how.as_str(),
                "archive_bytes": m.archive_bytes,
                "unpacked_bytes": m.unpacked_bytes,
                "files": m.file_count,
                "retention_deleted": deleted,
            }),
        )
        .await;
        info!(user = %self.user, snapshot = %m.id, trigger = %m.trigger, quiesce = how.as_str(), bytes = m.archive_bytes, "snapshot taken");
        deleted
    }

    async fn restart_if(&self, running: bool) {
        if running {
            if let Err(e) = self.backend.start(&self.spec).await {
                warn!(user = %self.user, error = %e, "starting the workspace again failed; the next engine start retries");
                return;
            }
        }
        self.remove_marker();
    }

    async fn restore(&self, id: &SnapshotId, progress: Option<ProgressFn>) -> Result<RestoreOutcome> {
        let running = self.state().await? == State::Running;
        // Verify and extract while the workspace keeps running.
        let eopts = ExtractOptions {
            owner: Some((self.spec.uid, self.spec.gid)),
            root_mode: 0o700,
            progress,
            ..ExtractOptions::default()
        };
        let (snaps, u, i, dir) = (self.snaps.clone(), self.user.clone(), id.clone(), self.dir.clone());
        let prepared = blocking(move || snaps.prepare_restore(&u, &i, &dir, &eopts).map_err(Error::from)).await?;
        let restored = prepared.manifest().clone();
        let stats = prepared.stats();
        self.write_marker("snapshot_restore", running)?;
        if running {
            if let Err(e) = self.backend.stop(&self.spec).await {
                self.restart_if(true).await;
                return Err(e);
            }
        }
        let parent = match self.parent_of(None).await {
            Ok(p) => p,
            Err(e) => {
                self.restart_if(running).await;
                return Err(e);
            }
        };
        let pre_id = SnapshotId::generate();
        let pre = match self.archive(&pre_id, Trigger::PreRestore, false, parent, None).await {
            Ok(m) => m,
            Err(e) => {
                self.restart_if(running).await;
                return Err(Error::Internal(format!(
                    "saving the current files as a pre-restore snapshot failed, so nothing was restored: {e}"
                )));
            }
        };
        self.finish(&pre, Quiesce::Stopped).await;
        if let Err(e) = blocking(move || prepared.swap_in().map_err(Error::from)).await {
            self.restart_if(running).await;
            return Err(e);
        }
        // The extraction gave every file to the workspace's uid; make sure of the root too.
        let (dir, uid, gid) = (self.dir.clone(), self.spec.uid, self.spec.gid);
        blocking(move || {
            std::os::unix::fs::chown(&dir, Some(uid), Some(gid))
                .and_then(|()| std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)))
                .map_err(|e| Error::io(format!("giving {} to uid {uid}", dir.display()), e))
        })
        .await?;
        if running {
            if let Err(e) = self.backend.start(&self.spec).await {
                return Err(Error::Internal(format!(
                    "snapshot {id} was restored, but the workspace did not start again: {e}; run `warren workspace start {}`",
                    self.user
                )));
            }
        }
        self.remove_marker();
        self.event(
            "snapshot_restore",
            json!({
                "snapshot": id,
                "pre_restore": pre.id,
                "files": stats.files,
                "bytes": stats.bytes,
                "restarted": running,
            }),
        )
        .await;
        info!(user = %self.user, snapshot = %id, pre_restore = %pre.id, files = stats.files, "snapshot restored");
        Ok(RestoreOutcome { restored, pre_restore: pre, files: stats.files, bytes: stats.bytes, restarted: running })
    }
}

/// Runs `f` in a task of its own (so it finishes even if the caller is dropped) and waits.
async fn detached<T: Send + 'static>(f: impl std::future::Future<Output = Result<T>> + Send + 'static) -> Result<T> {
    tokio::spawn(f).await.map_err(|e| Error::Internal(format!("a snapshot task failed: {e}")))?
}

impl Engine {
    /// The snapshot catalogue of the configured storage (opened on first use).
    pub fn snapshot_storage(&self) -> Result<Snapshots> {
        let mut slot = self.snap.storage.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(s) = slot.as_ref() {
            return Ok(s.clone());
        }
        let snaps = match self.snap.cfg.storage {
            SnapshotStorage::Local => Snapshots::local(&self.snap.state_dir),
            SnapshotStorage::S3 => {
                let s3 = self.snap.cfg.s3.clone().unwrap_or_default();
                let cfg = S3Config {
                    bucket: s3.bucket,
                    prefix: s3.prefix,
                    endpoint: s3.endpoint,
                    region: s3.region,
                    allow_http: s3.allow_http,
                    ..S3Config::default()
                };
                Snapshots::new(Arc::new(S3Storage::new(cfg).map_err(Error::from)?))
            }
        };
        info!(storage = %snaps.storage().describe(), "snapshot storage");
        *slot = Some(snaps.clone());
        Ok(snaps)
    }

    /// The storage, after removing orphaned archives once per engine.
    async fn snaps(&self) -> Result<Snapshots> {
        let snaps = self.snapshot_storage()?;
        if !self.snap.orphans_checked.swap(true, Ordering::SeqCst) {
            let s = snaps.clone();
            match blocking(move || s.cleanup_orphans(ORPHAN_AGE).map_err(Error::from)).await {
                Ok(0) => {}
                Ok(n) => info!(removed = n, "removed archives of interrupted snapshots"),
                Err(e) => warn!(error = %e, "cleaning up archives of interrupted snapshots failed"),
            }
        }
        Ok(snaps)
    }

    async fn job(&self, user: &UserId) -> Result<Job> {
        let (rec, backend) = self.lookup(user).await?;
        let spec = spec_of(&rec);
        let dir = backend
            .host_files(&spec)
            .ok_or_else(|| {
                Error::Unsupported(format!("the {} backend keeps no files on the host to snapshot", rec.backend))
            })?
            .dir;
        Ok(Job {
            store: self.store.clone(),
            snaps: self.snaps().await?,
            markers: self.snap.markers.clone(),
            keep: self.snap.cfg.keep,
            user: user.clone(),
            rec,
            spec,
            backend,
            dir,
        })
    }

    async fn user_event(&self, user: &UserId, kind: &str, detail: serde_json::Value) {
        let (u, event) = (user.clone(), NewEvent::new(kind, detail));
        let r = self
            .db(move |s| {
                let ws: Option<WorkspaceId> = s.get_workspace(&u)?.map(|r| r.workspace_id);
                s.record_event(Some(&u), ws.as_ref(), &event)
            })
            .await;
        if let Err(e) = r {
            warn!(%user, kind, error = %e, "recording an event failed");
        }
    }

    /// Takes a snapshot of the user's workspace: `id`, or a generated time-sortable one.
    ///
    /// A running workspace keeps running where the backend can freeze it (`ns`); elsewhere it
    /// is stopped for the archive and started again (see the module docs). Retention runs
    /// after. `AlreadyExists` if the user has a snapshot `id`.
    #[tracing::instrument(skip_all, fields(user = %user, workspace = tracing::field::Empty))]
    pub async fn snapshot_create(
        &self,
        user: &UserId,
        id: Option<SnapshotId>,
        opts: SnapshotOptions,
    ) -> Result<Manifest> {
        let lock = self.lock(user).await?;
        let job = self.job(user).await?;
        let id = id.unwrap_or_else(SnapshotId::generate);
        detached(async move {
            let _lock = lock;
            let (m, how) = job.take(&id, &opts).await?;
            job.finish(&m, how).await;
            Ok(m)
        })
        .await
    }

    /// Restores snapshot `id` into the user's workspace (see the module docs): verified and
    /// extracted first, then the current files are saved as a `pre_restore` snapshot, then the
    /// new tree is swapped in and the workspace restarted if it was running. On failure the
    /// workspace is as it was.
    pub async fn snapshot_restore(&self, user: &UserId, id: &SnapshotId) -> Result<RestoreOutcome> {
        self.snapshot_restore_with(user, id, None).await
    }

    /// [`Engine::snapshot_restore`], telling `progress` how the extraction goes.
    #[tracing::instrument(skip_all, fields(user = %user, workspace = tracing::field::Empty))]
    pub async fn snapshot_restore_with(
        &self,
        user: &UserId,
        id: &SnapshotId,
        progress: Option<ProgressFn>,
    ) -> Result<RestoreOutcome> {
        let lock = self.lock(user).await?;
        let job = self.job(user).await?;
        let id = id.clone();
        detached(async move {
            let _lock = lock;
            job.restore(&id, progress).await
        })
        .await
    }

    /// The user's snapshots, newest first (the user needs no workspace: snapshots outlive it).
    pub async fn snapshot_list(&self, user: &UserId) -> Result<Vec<Manifest>> {
        let (snaps, u) = (self.snaps().await?, user.clone());
        blocking(move || snaps.list(&u).map_err(Error::from)).await
    }

    /// One snapshot's manifest.
    pub async fn snapshot_get(&self, user: &UserId, id: &SnapshotId) -> Result<Manifest> {
        let (snaps, u, i) = (self.snaps().await?, user.clone(), id.clone());
        blocking(move || snaps.get(&u, &i).map_err(Error::from)).await
    }

    /// Deletes a snapshot.
    pub async fn snapshot_delete(&self, user: &UserId, id: &SnapshotId) -> Result<()> {
        let _lock = self.lock(user).await?;
        let (snaps, u, i) = (self.snaps().await?, user.clone(), id.clone());
        blocking(move || snaps.delete(&u, &i).map_err(Error::from)).await?;
        self.user_event(user, "snapshot_delete", json!({ "snapshot": id })).await;
        Ok(())
    }

    /// Pins (exempts from retention) or unpins a snapshot.
    pub async fn snapshot_pin(&self, user: &UserId, id: &SnapshotId, pinned: bool) -> Result<Manifest> {
        let _lock = self.lock(user).await?;
        let (snaps, u, i) = (self.snaps().await?, user.clone(), id.clone());
        let m = blocking(move || snaps.set_pinned(&u, &i, pinned).map_err(Error::from)).await?;
        self.user_event(user, if pinned { "snapshot_pin" } else { "snapshot_unpin" }, json!({ "snapshot": id })).await;
        Ok(m)
    }

    /// Copies a snapshot's archive to the file `dest` (a plain `.tar.zst`, checked against its
    /// manifest). `AlreadyExists` if `dest` exists.
    pub async fn snapshot_export(&self, user: &UserId, id: &SnapshotId, dest: &Path) -> Result<Manifest> {
        if dest.symlink_metadata().is_ok() {
            return Err(Error::AlreadyExists(format!("{} (pick a new file name or remove it)", dest.display())));
        }
        let (snaps, u, i, d) = (self.snaps().await?, user.clone(), id.clone(), dest.to_path_buf());
        let m = blocking(move || snaps.export(&u, &i, &d).map_err(Error::from)).await?;
        self.user_event(user, "snapshot_export", json!({ "snapshot": id, "file": dest.display().to_string() })).await;
        Ok(m)
    }

    /// Imports a `.tar.zst` file as snapshot `id` (or a generated id) of `user`, checking every
    /// entry with the rules a restore applies. Retention runs after, as for a new snapshot.
    pub async fn snapshot_import(&self, user: &UserId, id: Option<SnapshotId>, src: &Path) -> Result<Manifest> {
        let _lock = self.lock(user).await?;
        let id = id.unwrap_or_else(SnapshotId::generate);
        let (snaps, u, i, s) = (self.snaps().await?, user.clone(), id.clone(), src.to_path_buf());
        let keep = self.snap.cfg.keep;
        let (m, deleted) = blocking(move || {
            let m = snaps.import(&u, &i, &s, &ImportOptions::default()).map_err(Error::from)?;
            let deleted = snaps.apply_retention(&u, keep).map_err(Error::from)?;
            Ok((m, deleted))
        })
        .await?;
        self.user_event(
            user,
            "snapshot_import",
            json!({ "snapshot": id, "file": src.display().to_string(), "files": m.file_count, "retention_deleted": deleted }),
        ).await;
        Ok(m)
    }

    /// Clears the user's "suspended for idleness" mark, if set.
    pub(crate) async fn clear_suspended(&self, user: &UserId) -> Result<()> {
        let u = user.clone();
        self.db(move |s| if s.activity(&u)?.suspended { s.set_suspended(&u, false, None) } else { Ok(()) }).await
    }

    /// Starts a workspace that was suspended for idleness (its next use resumes it); returns
    /// the record to use. Costs nothing for a workspace that should be running.
    pub(crate) async fn resume_if_suspended(&self, user: &UserId, rec: WorkspaceRecord) -> Result<WorkspaceRecord> {
        if rec.desired_state != DesiredState::Stopped {
            return Ok(rec);
        }
        let u = user.clone();
        if !self.db(move |s| s.activity(&u)).await?.suspended {
            return Ok(rec);
        }
        let _lock = self.lock(user).await?;
        let (rec, backend) = self.lookup(user).await?;
        let u = user.clone();
        if !self.db(move |s| s.activity(&u)).await?.suspended {
            return Ok(rec);
        }
        if backend.status(&spec_of(&rec)).await?.state != State::Running {
            info!(%user, "resuming the workspace suspended for idleness");
            self.start_locked(user, "resume").await?;
        } else {
            self.clear_suspended(user).await?;
        }
        Ok(self.lookup(user).await?.0)
    }

    /// Repairs what a killed snapshot, restore, start, create or destroy left (called with the
    /// user's lock held; see the module docs). Failures are logged. True if the workspace is
    /// gone: a killed destroy was finished.
    pub(crate) async fn recover_locked(&self, rec: &WorkspaceRecord, backend: &Arc<dyn Backend>, debris: bool) -> bool {
        let spec = spec_of(rec);
        if debris {
            if let Some(hf) = backend.host_files(&spec) {
                if destroy_unfinished(&hf.dir) {
                    return self.finish_destroy(rec, backend, hf.dir).await;
                }
                match blocking(move || warren_snapshot::recover(&hf.dir).map_err(Error::from)).await {
                    Ok(n) if n > 0 => {
                        info!(user = %rec.user, removed = n, "removed leftovers of an interrupted restore")
                    }
                    Ok(_) => {}
                    Err(e) => {
                        warn!(user = %rec.user, error = %e, "removing leftovers of an interrupted restore failed")
                    }
                }
            }
        }
        let marker_path = self.snap.markers.join(format!("{}.json", rec.user));
        let marker: Option<Marker> = std::fs::read(&marker_path).ok().and_then(|b| serde_json::from_slice(&b).ok());
        let state = match backend.status(&spec).await {
            Ok(s) => s.state,
            Err(e) => {
                warn!(user = %rec.user, error = %e, "recovery: status failed");
                return false;
            }
        };
        let mut thawed = false;
        if state == State::Running && backend.capabilities().freeze {
            // A frozen cgroup with nobody holding the lock is debris: thawing is idempotent.
            match backend.freeze(&spec, false).await {
                Ok(()) => thawed = true,
                Err(e) => warn!(user = %rec.user, error = %e, "recovery: thawing the workspace failed"),
            }
        }
        let Some(m) = marker else {
            if marker_path.with_extension("json.tmp").exists() {
                let _ = std::fs::remove_file(marker_path.with_extension("json.tmp"));
            }
            return false;
        };
        warn!(user = %rec.user, op = %m.op, pid = m.pid, "a {} was interrupted (process {} died); putting the workspace back", m.op, m.pid);
        if m.op == START_OP {
            // Whatever the killed start got to that `status` does not count as running (on ns:
            // an init it never recorded) is torn down; a start that recorded its init stands.
            let torn_down = state != State::Running;
            if torn_down {
                if let Err(e) = backend.stop(&spec).await {
                    warn!(user = %rec.user, error = %e, "recovery: tearing down the interrupted start failed");
                    return false;
                }
            }
            let _ = std::fs::remove_file(&marker_path);
            self.user_event(&rec.user, "start_recovered", json!({ "pid": m.pid, "torn_down": torn_down })).await;
            return false;
        }
        if m.op == CREATE_OP {
            // The workspace is stored (the marker outlived the insert): make its directory too.
            let completed = state == State::Absent;
            if completed {
                if let Err(e) = backend.create(&spec).await {
                    warn!(user = %rec.user, error = %e, "recovery: completing the interrupted create failed");
                    return false;
                }
            }
            let _ = std::fs::remove_file(&marker_path);
            self.user_event(&rec.user, "create_recovered", json!({ "pid": m.pid, "completed": completed })).await;
            return false;
        }
        let mut started = false;
        if m.was_running && state != State::Running {
            match backend.start(&spec).await {
                Ok(_) => started = true,
                Err(e) => {
                    warn!(user = %rec.user, error = %e, "recovery: starting the workspace again failed");
                    return false;
                }
            }
        }
        let _ = std::fs::remove_file(&marker_path);
        self.user_event(
            &rec.user,
            "snapshot_recovered",
            json!({ "op": m.op, "pid": m.pid, "was_running": m.was_running, "thawed": thawed, "started": started }),
        )
        .await;
        false
    }

    /// Moves the workspace's files out of the way in one rename, to `.{user}.restore-destroy-*`
    /// beside them, so that a destroy killed midway leaves them whole or gone, never half
    /// deleted. While that name exists without the home the destroy is unfinished, and the next
    /// engine finishes it. Returns the home whose leftovers [`Engine::drop_set_aside`] deletes
    /// (`None` if the backend keeps no files on the host).
    pub(crate) async fn set_aside_home(
        &self,
        backend: &Arc<dyn Backend>,
        spec: &WorkspaceSpec,
    ) -> Result<Option<PathBuf>> {
        let Some(hf) = backend.host_files(spec) else { return Ok(None) };
        blocking(move || {
            let home = hf.dir;
            if std::fs::symlink_metadata(&home).is_err() {
                return Ok(Some(home));
            }
            let aside = warren_snapshot::sibling_path(&home, DESTROY_KIND).map_err(Error::from)?;
            std::fs::rename(&home, &aside)
                .map_err(|e| Error::io(format!("moving {} aside to destroy it", home.display()), e))?;
            if let Some(parent) = home.parent() {
                let _ = std::fs::File::open(parent).and_then(|d| d.sync_all());
            }
            Ok(Some(home))
        })
        .await
    }

    /// Deletes the files [`Engine::set_aside_home`] set aside (and the user's crash marker):
    /// the last step of a destroy, after the workspace is forgotten.
    pub(crate) async fn drop_set_aside(&self, user: &UserId, home: Option<PathBuf>) {
        if let Some(home) = home {
            if let Err(e) = blocking(move || warren_snapshot::recover(&home).map_err(Error::from)).await {
                warn!(%user, error = %e, "deleting the destroyed workspace's files failed; the next engine start retries");
            }
        }
        remove_marker(&self.snap.markers, user);
    }

    /// Finishes a destroy that was killed after it set the files aside. True if the workspace
    /// is gone now.
    async fn finish_destroy(&self, rec: &WorkspaceRecord, backend: &Arc<dyn Backend>, home: PathBuf) -> bool {
        warn!(user = %rec.user, workspace = %rec.workspace_id, "a destroy was interrupted; finishing it");
        if let Err(e) = backend.destroy(&spec_of(rec)).await {
            warn!(user = %rec.user, error = %e, "recovery: finishing the interrupted destroy failed");
            return false;
        }
        let (u, event) = (rec.user.clone(), NewEvent::new("destroy", json!({ "recovered": true })));
        if let Err(e) = self.db(move |s| s.delete_workspace(&u, &event)).await {
            warn!(user = %rec.user, error = %e, "recovery: forgetting the destroyed workspace failed");
            return false;
        }
        self.drop_set_aside(&rec.user, Some(home)).await;
        true
    }

    /// Deletes what killed operations left for users without a stored workspace (a destroy's
    /// set-aside files, a restore's staging tree, a crash marker), under each user's lock.
    pub(crate) async fn recover_orphans(&self, stored: &HashSet<String>, debris: &HashSet<String>) {
        let markers: HashSet<String> = std::fs::read_dir(&self.snap.markers)
            .map(|rd| {
                rd.flatten()
                    .filter_map(|e| e.file_name().into_string().ok()?.strip_suffix(".json").map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default();
        for name in debris.union(&markers).filter(|u| !stored.contains(*u)) {
            let Ok(user) = UserId::new(name) else { continue };
            let Ok(Some(_lock)) = self.try_lock(&user).await else { continue };
            // Re-check under the lock: a create may have finished since the listing.
            let u = user.clone();
            if !matches!(self.db(move |s| s.get_workspace(&u)).await, Ok(None)) {
                continue;
            }
            let home = self.cfg.state_dir.join("workspaces").join(user.as_str());
            info!(%user, "removing what an interrupted operation left of a workspace that no longer exists");
            self.drop_set_aside(&user, Some(home)).await;
        }
    }

    /// Runs the automatic snapshots until the process ends: removes orphaned archives, then
    /// calls [`Engine::tick_triggers`] every 30 s (more often for short idle times). Returns at
    /// once when neither idle suspension nor daily snapshots are configured. For the server to
    /// spawn.
    pub async fn run_triggers(&self) {
        if let Err(e) = self.snaps().await {
            warn!(error = %e, "snapshot storage unavailable");
        }
        let cfg = &self.snap.cfg;
        if cfg.idle_suspend_after.is_none() && cfg.daily_at.is_none() {
            info!("automatic snapshots are off (snapshots.idle_suspend_after and snapshots.daily_at unset)");
            return;
        }
        let period = cfg
            .idle_suspend_after
            .map_or(Duration::from_secs(30), |d| (d / 4).clamp(Duration::from_secs(1), Duration::from_secs(30)));
        info!(idle_suspend_after = ?cfg.idle_suspend_after, daily_at = ?cfg.daily_at.map(|t| t.to_string()), "automatic snapshots on");
        loop {
            match self.tick_triggers(SystemTime::now()).await {
                Ok(r) if r == TickReport::default() => {}
                Ok(r) => info!(
                    idle = r.idle_suspended.len(),
                    daily = r.daily.len(),
                    failed = r.failed.len(),
                    "automatic snapshots"
                ),
                Err(e) => warn!(error = %e, "automatic snapshots: pass failed"),
            }
            tokio::time::sleep(period).await;
        }
    }

    /// One pass of the automatic snapshots as of `now` (a parameter so tests can drive time):
    /// idle suspension, then daily snapshots. A workspace someone else is working on (its lock
    /// is held) is left for the next pass.
    pub async fn tick_triggers(&self, now: SystemTime) -> Result<TickReport> {
        let mut report = TickReport::default();
        let cfg = self.snap.cfg.clone();
        if cfg.idle_suspend_after.is_none() && cfg.daily_at.is_none() {
            return Ok(report);
        }
        let recs = self.db(|s| s.list_workspaces()).await?;
        for rec in recs {
            let user = rec.user.clone();
            if self.snap.retry_after.lock().unwrap_or_else(|p| p.into_inner()).get(&user).is_some_and(|t| *t > now) {
                continue;
            }
            let outcome = self.tick_one(&rec, now, &cfg, &mut report).await;
            if let Err((trigger, e)) = outcome {
                warn!(%user, trigger = %trigger, error = %e, "automatic snapshot failed");
                self.user_event(&user, "snapshot_failed", json!({ "trigger": trigger, "error": e.to_string() })).await;
                self.snap.retry_after.lock().unwrap_or_else(|p| p.into_inner()).insert(user.clone(), now + RETRY_AFTER);
                report.failed.push((user, e.to_string()));
            }
        }
        Ok(report)
    }

    /// The last use of a workspace: this process's memory, the store, the last state change.
    async fn last_use(&self, rec: &WorkspaceRecord) -> Result<(SystemTime, u32, warren_store::Activity)> {
        let u = rec.user.clone();
        let act = self.db(move |s| s.activity(&u)).await?;
        let (mem, busy) = self.snap.activity.last(&rec.user);
        let mut last = system_time(rec.updated_at);
        if let Some(t) = act.last_activity {
            last = last.max(system_time(t));
        }
        if let Some(t) = mem {
            last = last.max(t);
        }
        Ok((last, busy, act))
    }

    async fn tick_one(
        &self,
        rec: &WorkspaceRecord,
        now: SystemTime,
        cfg: &SnapshotConfig,
        report: &mut TickReport,
    ) -> std::result::Result<(), (Trigger, Error)> {
        let backend = self.backend_for(rec.backend).map_err(|e| (Trigger::Idle, e))?;
        let state = backend.status(&spec_of(rec)).await.map_err(|e| (Trigger::Idle, e))?.state;
        let (last, busy, act) = self.last_use(rec).await.map_err(|e| (Trigger::Idle, e))?;
        if let Some(idle_after) = cfg.idle_suspend_after {
            let idle_for = now.duration_since(last).unwrap_or(Duration::ZERO);
            if state == State::Running && busy == 0 && idle_for >= idle_after {
                if let Some(id) = self.idle_suspend(&rec.user, now, idle_after).await.map_err(|e| (Trigger::Idle, e))? {
                    report.idle_suspended.push((rec.user.clone(), id));
                }
                return Ok(());
            }
        }
        if let Some(at) = cfg.daily_at {
            let slot = daily_slot(now, at);
            let done = act.last_daily.is_some_and(|d| system_time(d) >= slot);
            let used = last + Duration::from_secs(86_400) >= slot;
            if !done && (state == State::Running || used) {
                if let Some(id) = self.daily(&rec.user, slot).await.map_err(|e| (Trigger::Daily, e))? {
                    report.daily.push((rec.user.clone(), id));
                }
            }
        }
        Ok(())
    }

    /// Suspends an idle workspace: marks it, stops it, snapshots it. `None` if it turned out
    /// busy or in use.
    async fn idle_suspend(&self, user: &UserId, now: SystemTime, idle_after: Duration) -> Result<Option<SnapshotId>> {
        let Some(lock) = self.try_lock(user).await? else { return Ok(None) };
        let job = self.job(user).await?;
        if job.state().await? != State::Running {
            return Ok(None);
        }
        let (last, busy, _) = self.last_use(&job.rec).await?;
        let idle_for = now.duration_since(last).unwrap_or(Duration::ZERO);
        if busy > 0 || idle_for < idle_after {
            return Ok(None);
        }
        let id = SnapshotId::generate();
        let event = NewEvent::new("idle_suspend", json!({ "idle_for_s": idle_for.as_secs(), "snapshot": id }));
        let u = user.clone();
        self.db(move |s| {
            s.set_suspended(&u, true, None)?;
            s.set_desired_state(&u, DesiredState::Stopped, &event)
        })
        .await?;
        info!(%user, idle_for_s = idle_for.as_secs(), "suspending the idle workspace");
        detached(async move {
            let _lock = lock;
            job.backend.stop(&job.spec).await?;
            let opts = SnapshotOptions { trigger: Trigger::Idle, ..SnapshotOptions::default() };
            let (m, how) = job.take(&id, &opts).await?;
            job.finish(&m, how).await;
            Ok(Some(m.id))
        })
        .await
    }

    /// The daily snapshot of one workspace for `slot`. `None` if the workspace was busy.
    async fn daily(&self, user: &UserId, slot: SystemTime) -> Result<Option<SnapshotId>> {
        let Some(lock) = self.try_lock(user).await? else { return Ok(None) };
        let job = self.job(user).await?;
        let u = user.clone();
        let act = self.db(move |s| s.activity(&u)).await?;
        if act.last_daily.is_some_and(|d| system_time(d) >= slot) {
            return Ok(None);
        }
        let slot_ts = Timestamp::from_millis(millis(slot));
        detached(async move {
            let _lock = lock;
            let opts = SnapshotOptions { trigger: Trigger::Daily, ..SnapshotOptions::default() };
            let (m, how) = job.take(&SnapshotId::generate(), &opts).await?;
            let (store, u) = (job.store.clone(), job.user.clone());
            blocking(move || store.set_last_daily(&u, slot_ts).map_err(Error::from)).await?;
            job.finish(&m, how).await;
            Ok(Some(m.id))
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use warren_core::config::TimeOfDay;

    #[test]
    fn daily_slots() {
        let at = TimeOfDay { hour: 3, minute: 0 };
        let day = 20_000u64 * 86_400;
        let t = |s: u64| UNIX_EPOCH + Duration::from_secs(s);
        assert_eq!(daily_slot(t(day + 3 * 3600), at), t(day + 3 * 3600));
        assert_eq!(daily_slot(t(day + 4 * 3600), at), t(day + 3 * 3600));
        assert_eq!(daily_slot(t(day + 2 * 3600), at), t(day - 86_400 + 3 * 3600));
    }

    #[test]
    fn finds_restore_debris() {
        let dir = tempfile::tempdir().expect("tempdir");
        let ws = dir.path().join("workspaces");
        std::fs::create_dir_all(ws.join("u_1")).expect("mkdir");
        std::fs::create_dir_all(ws.join(".u_1.restore-staging-abc")).expect("mkdir");
        std::fs::write(ws.join(".u.2.restore-download-x"), b"").expect("write");
        std::fs::create_dir_all(ws.join(".hidden")).expect("mkdir");
        let mut found: Vec<String> = restore_debris(dir.path()).into_iter().collect();
        found.sort();
        assert_eq!(found, ["u.2", "u_1"]);
    }
}
