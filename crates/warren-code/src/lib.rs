//! Coding sessions: a host project copied into a sandboxed workspace, every command's effect
//! recorded in a history the sandbox cannot reach, and the changes synced back safely.
//!
//! * [`Sessions::start`] copies a project (everything but `.git`, see [`copy`]) into a new
//!   workspace owned by the synthetic user `code.<id>`, with limits and no network by default,
//!   and records the copy as the base commit of a bare git repository kept outside the sandbox
//!   (`{state}/code/{id}/track.git`, root-owned, never mounted into it).
//! * [`Sessions::exec`] runs a command and then records the workspace's files as a commit
//!   ([`track`]): the files are read as root, beneath the home, without following any symlink,
//!   only what the workspace's uid owns, so nothing inside can make the history hold a host
//!   file, and nothing inside can write to the history at all.
//! * [`Sessions::changes`], [`Sessions::diff`] and [`Sessions::log`] read the history.
//! * [`Sessions::sync`] writes the recorded changes into the host project ([`sync`]), refusing
//!   with the list of conflicts when host files changed meanwhile, unless forced.
//! * [`Sessions::stop`] destroys the workspace (and the history, unless kept).
//!
//! On disk, per session: `{state}/code/{id}/` (0700 root) holds `session.json` (written
//! atomically), `lock` (an `flock` every change holds, across processes), `track.git` and
//! `stat-cache`. See docs/code-sessions.md.

mod copy;
mod git;
mod record;
mod sync;
mod track;
mod tree;

use std::fs::File;
use std::os::fd::AsFd;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

use nix::fcntl::Flock;
use serde::{Deserialize, Serialize};
use tracing::{info, warn};
use warren_core::backend::blocking;
use warren_core::time::Timestamp;
use warren_core::{BackendKind, Error, ExecOutput, ExecRequest, ExitStatus, Limits, Result, State, UserId};
use warren_engine::{CreateOptions, Engine};

pub use record::{CopyReport, SessionId, SessionRecord, SessionStatus, Skipped, MAX_SKIPPED_LISTED};
pub use sync::{Conflict, SyncOptions, SyncReport, MAX_SYNC_BYTES};
pub use track::{CommitInfo, MAX_FILE_BYTES};

use git::Git;
use record::{code_root, lock, private_dir, read_record, write_record, RECORD_VERSION};

/// How to start a session.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StartOptions {
    /// The host project directory.
    pub project: PathBuf,
    /// Who the session belongs to (`None`: the local CLI).
    pub owner: Option<UserId>,
    /// The backend (`None`: the engine's pick).
    pub backend: Option<BackendKind>,
    /// Resource limits (`None`: the configured defaults).
    pub limits: Option<Limits>,
    /// Network beyond loopback (off unless asked for).
    pub network: bool,
    /// Names left out at any depth, besides `.git` (like `target` or `node_modules`): never
    /// copied, tracked or synced.
    pub exclude: Vec<String>,
    /// The image the sandbox runs (`None`: the configured default); see `warren image`.
    pub image: Option<String>,
}

/// A session as callers see it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionInfo {
    /// The session.
    pub id: SessionId,
    /// Who it belongs to (`None`: started by the local CLI).
    pub owner: Option<UserId>,
    /// The host project.
    pub project: String,
    /// The synthetic user owning its workspace.
    pub workspace_user: UserId,
    /// The backend holding the workspace.
    pub backend: Option<BackendKind>,
    /// Where the session is.
    pub status: SessionStatus,
    /// The workspace's state on the host now (`None`: it has none).
    pub state: Option<State>,
    /// The project as copied in.
    pub base_commit: Option<String>,
    /// The last commit written back to the host.
    pub synced_commit: Option<String>,
    /// The last recorded commit.
    pub head_commit: Option<String>,
    /// Whether the history holds changes the host does not have yet.
    pub unsynced: bool,
    /// Names left out besides `.git`.
    pub exclude: Vec<String>,
    /// When it started.
    pub created_at: Timestamp,
    /// What the copy did.
    pub copy: CopyReport,
}

/// What a command run in a session gave.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExecOutcome {
    /// The command's output.
    pub output: ExecOutput,
    /// The commit recorded after it.
    pub commit: CommitInfo,
}

/// Which commits to compare. Defaults: from the last synced commit to the last recorded one.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Range {
    /// From this commit (a hex id or prefix).
    pub from: Option<String>,
    /// To this commit.
    pub to: Option<String>,
    /// From the base (everything the session changed, synced or not).
    #[serde(default)]
    pub all: bool,
}

/// How a path changed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ChangeKind {
    /// New.
    Added,
    /// Content or mode changed.
    Modified,
    /// Gone.
    Deleted,
    /// A file became a symlink or the other way round.
    TypeChanged,
}

/// One changed path.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Change {
    /// The path, relative to the project.
    pub path: String,
    /// How it changed.
    pub kind: ChangeKind,
    /// Lines added (`None` for binary content).
    pub lines_added: Option<u64>,
    /// Lines deleted (`None` for binary content).
    pub lines_deleted: Option<u64>,
}

/// The changes between two commits, with a diffstat.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Changes {
    /// From this commit.
    pub from: String,
    /// To this commit.
    pub to: String,
    /// Every changed path, sorted.
    pub files: Vec<Change>,
    /// Paths added.
    pub added: u64,
    /// Paths modified (type changes included).
    pub modified: u64,
    /// Paths deleted.
    pub deleted: u64,
    /// Lines added in all.
    pub lines_added: u64,
    /// Lines deleted in all.
    pub lines_deleted: u64,
}

/// A patch between two commits.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Diff {
    /// From this commit.
    pub from: String,
    /// To this commit.
    pub to: String,
    /// The unified diff (invalid UTF-8 replaced).
    pub text: String,
    /// Cut at the size limit.
    pub truncated: bool,
}

/// One recorded commit.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogEntry {
    /// Its id.
    pub commit: String,
    /// When it was recorded.
    pub time: Timestamp,
    /// Its first line: `base: ...`, `exec: <command>`, `outside: ...`, `commit: ...`, `stop: ...`.
    pub subject: String,
    /// The whole message (exit code, skipped entries).
    pub message: String,
}

/// Options of [`Sessions::stop`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StopOptions {
    /// Keep the history: changes, diff, log and sync keep working; stopping again removes it.
    pub keep_history: bool,
    /// Drop changes that were never synced.
    pub discard: bool,
}

/// What a stop did.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StopReport {
    /// The session.
    pub id: SessionId,
    /// Whether its history was kept.
    pub history_kept: bool,
    /// Whether unsynced changes were dropped.
    pub discarded_changes: bool,
}

/// Largest diff returned ([`Diff::truncated`] beyond).
pub const MAX_DIFF_BYTES: usize = 16 << 20;

/// The coding sessions of an engine.
#[derive(Clone, Debug)]
pub struct Sessions<'e> {
    engine: &'e Engine,
    root: PathBuf,
}

fn check_exclude(names: &[String]) -> Result<()> {
    if names.len() > 64 {
        return Err(Error::InvalidRequest("at most 64 excluded names".into()));
    }
    for n in names {
        if n.is_empty() || n == "." || n == ".." || n.contains('/') || n.contains('\0') || n.len() > 255 {
            return Err(Error::InvalidRequest(format!(
                "excluded name {n:?} must be a single file or directory name (no '/'), like target or node_modules"
            )));
        }
    }
    Ok(())
}

fn exec_message(argv: &[String], status: Option<ExitStatus>, timed_out: bool) -> String {
    let mut m = format!("exec: {}\n\n", track::show_argv(argv));
    match status {
        Some(s) => {
            m.push_str(&format!("exit: {}\n", s.code));
            if let Some(sig) = s.signal {
                m.push_str(&format!("signal: {sig}\n"));
            }
        }
        None => m.push_str("exit: unknown (the command's output stream ended early)\n"),
    }
    if timed_out {
        m.push_str("timed out: yes\n");
    }
    m
}

impl<'e> Sessions<'e> {
    /// The sessions kept in the engine's state directory.
    pub fn new(engine: &'e Engine) -> Self {
        Self { engine, root: code_root(&engine.config().state_dir) }
    }

    fn dir(&self, id: &SessionId) -> PathBuf {
        self.root.join(id.as_str())
    }

    async fn load(&self, id: &SessionId) -> Result<(SessionRecord, PathBuf)> {
        let dir = self.dir(id);
        let d = dir.clone();
        let rec = blocking(move || read_record(&d)).await?;
        if &rec.id != id {
            return Err(Error::Internal(format!("{} holds the record of session {}", dir.display(), rec.id)));
        }
        Ok((rec, dir))
    }

    async fn save(&self, dir: &Path, rec: &SessionRecord) -> Result<()> {
        let (d, r) = (dir.to_owned(), rec.clone());
        blocking(move || write_record(&d, &r)).await
    }

    fn git(dir: &Path) -> Result<Git> {
        Git::new(dir)
    }

    /// Starts a session: a new workspace holding a copy of the project, its base commit recorded.
    #[tracing::instrument(skip_all, fields(project = %opts.project.display()))]
    pub async fn start(&self, opts: StartOptions) -> Result<SessionInfo> {
        check_exclude(&opts.exclude)?;
        if let Some(l) = &opts.limits {
            l.validate()?;
        }
        if let Some(o) = &opts.owner {
            if o.is_reserved() {
                return Err(Error::InvalidRequest(format!("{o} is a reserved user id and cannot own a session")));
            }
        }
        let (given, state) = (opts.project.clone(), self.engine.config().state_dir.clone());
        let project = blocking(move || {
            let p = std::fs::canonicalize(&given).map_err(|e| match e.kind() {
                std::io::ErrorKind::NotFound => Error::NotFound(format!("project directory {}", given.display())),
                _ => Error::io(format!("resolving {}", given.display()), e),
            })?;
            if !p.is_dir() {
                return Err(Error::InvalidRequest(format!("{} is not a directory", p.display())));
            }
            if p.parent().is_none() {
                return Err(Error::InvalidRequest("the root directory cannot be a project".into()));
            }
            let state = std::fs::canonicalize(&state).unwrap_or(state);
            if p.starts_with(&state) || state.starts_with(&p) {
                return Err(Error::InvalidRequest(format!(
                    "{} overlaps warren's state directory {}: pick the project's own directory",
                    p.display(),
                    state.display()
                )));
            }
            if p.to_str().is_none() {
                return Err(Error::InvalidRequest(format!("{} is not valid UTF-8", p.display())));
            }
            Ok(p)
        })
        .await?;

        let root = self.root.clone();
        let (id, dir) = blocking(move || {
            private_dir(&root)?;
            for _ in 0..8 {
                let id = SessionId::generate()?;
                let dir = root.join(id.as_str());
                match std::fs::DirBuilder::new().mode(0o700).create(&dir) {
                    Ok(()) => return Ok((id, dir)),
                    Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                    Err(e) => return Err(Error::io(format!("creating {}", dir.display()), e)),
                }
            }
            Err(Error::Internal("no free session id after 8 tries".into()))
        })
        .await?;
        let _lock = lock(&dir).await?;
        let user = id.workspace_user()?;
        let mut rec = SessionRecord {
            version: RECORD_VERSION,
            id: id.clone(),
            owner: opts.owner.clone(),
            project: project.clone(),
            workspace_user: user.clone(),
            backend: None,
            exclude: opts.exclude.clone(),
            status: SessionStatus::Starting,
            base_commit: None,
            synced_commit: None,
            created_at: Timestamp::now(),
            copy: CopyReport::default(),
        };
        self.save(&dir, &rec).await?;
        match self.set_up(&mut rec, &dir, &opts).await {
            Ok(()) => {
                info!(session = %id, project = %project.display(), "started code session");
                drop(_lock);
                self.info(rec).await
            }
            Err(e) => {
                warn!(session = %id, error = %e, "starting the code session failed; removing it");
                if let Err(e2) = self.engine.destroy(&user).await {
                    if !matches!(e2, Error::NotFound(_)) {
                        warn!(error = %e2, "destroying the half-made workspace failed");
                    }
                }
                let d = dir.clone();
                let _ = blocking(move || std::fs::remove_dir_all(&d).map_err(|e| Error::io("removing", e))).await;
                Err(e)
            }
        }
    }

    async fn set_up(&self, rec: &mut SessionRecord, dir: &Path, opts: &StartOptions) -> Result<()> {
        let user = rec.workspace_user.clone();
        let created = self
            .engine
            .create(
                &user,
                CreateOptions {
                    limits: opts.limits.clone(),
                    network: Some(opts.network),
                    backend: opts.backend,
                    image: opts.image.clone(),
                    ..Default::default()
                },
            )
            .await?;
        rec.backend = Some(created.backend);
        let files = self.engine.files(&user).await?;
        let (project, exclude, uid, d) = (rec.project.clone(), rec.exclude.clone(), created.uid, dir.to_owned());
        let message = format!("base: copy of {}\n", project.display());
        let (copy, commit) = blocking(move || {
            let proj = tree::open_root(&project)?;
            let report = copy::copy_in(proj.as_fd(), files.as_fd(), uid, uid, &exclude)?;
            let git = Git::new(&d)?;
            git.init()?;
            let c = track::commit(&git, &d, files.as_fd(), uid, &exclude, &message, true)?;
            Ok((report, c))
        })
        .await?;
        rec.copy = copy;
        rec.base_commit = Some(commit.commit.clone());
        rec.synced_commit = Some(commit.commit);
        self.engine.ensure_running(&user).await?;
        rec.status = SessionStatus::Active;
        self.save(dir, rec).await
    }

    async fn info(&self, rec: SessionRecord) -> Result<SessionInfo> {
        let dir = self.dir(&rec.id);
        let (head, unsynced) = if rec.status == SessionStatus::Starting {
            (None, false)
        } else {
            let git = Self::git(&dir)?;
            let synced = rec.synced_commit.clone();
            blocking(move || {
                let head = git.head()?;
                let unsynced = has_unsynced(&git, head.as_deref(), synced.as_deref())?;
                Ok((head, unsynced))
            })
            .await?
        };
        let state = match self.engine.status(&rec.workspace_user).await {
            Ok(i) => Some(i.state),
            Err(Error::NotFound(_)) => None,
            Err(e) => return Err(e),
        };
        Ok(SessionInfo {
            id: rec.id,
            owner: rec.owner,
            project: rec.project.to_string_lossy().into_owned(),
            workspace_user: rec.workspace_user,
            backend: rec.backend,
            status: rec.status,
            state,
            base_commit: rec.base_commit,
            synced_commit: rec.synced_commit,
            head_commit: head,
            unsynced,
            exclude: rec.exclude,
            created_at: rec.created_at,
            copy: rec.copy,
        })
    }

    /// A session.
    pub async fn get(&self, id: &SessionId) -> Result<SessionInfo> {
        let (rec, _) = self.load(id).await?;
        self.info(rec).await
    }

    /// The record of a session (cheap: no look at the workspace or the history).
    pub async fn record(&self, id: &SessionId) -> Result<SessionRecord> {
        Ok(self.load(id).await?.0)
    }

    /// Every session, oldest first.
    pub async fn list(&self) -> Result<Vec<SessionInfo>> {
        let root = self.root.clone();
        let recs = blocking(move || {
            let rd = match std::fs::read_dir(&root) {
                Ok(rd) => rd,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(vec![]),
                Err(e) => return Err(Error::io(format!("listing {}", root.display()), e)),
            };
            let mut recs = Vec::new();
            for ent in rd.flatten() {
                let name = ent.file_name();
                let Some(id) = name.to_str().and_then(|n| n.parse::<SessionId>().ok()) else { continue };
                match read_record(&ent.path()) {
                    Ok(r) if r.id == id => recs.push(r),
                    Ok(_) => warn!(dir = %ent.path().display(), "a session directory holds another session's record"),
                    // A session being created has no record for a moment.
                    Err(Error::NotFound(_)) => {}
                    Err(e) => warn!(error = %e, "skipping an unreadable session record"),
                }
            }
            recs.sort_by(|a, b| (a.created_at, &a.id).cmp(&(b.created_at, &b.id)));
            Ok(recs)
        })
        .await?;
        let mut out = Vec::with_capacity(recs.len());
        for r in recs {
            out.push(self.info(r).await?);
        }
        Ok(out)
    }

    fn require_active(rec: &SessionRecord) -> Result<()> {
        match rec.status {
            SessionStatus::Active => Ok(()),
            SessionStatus::Starting => Err(Error::Conflict(format!(
                "session {} is still starting (or its start failed; stop it to clean up)",
                rec.id
            ))),
            SessionStatus::Stopped => Err(Error::Conflict(format!(
                "session {} is stopped (only its history is left: changes, diff, log and sync still work)",
                rec.id
            ))),
        }
    }

    fn require_history(rec: &SessionRecord) -> Result<()> {
        if rec.status == SessionStatus::Starting {
            return Err(Error::Conflict(format!("session {} has no history yet: it is still starting", rec.id)));
        }
        Ok(())
    }

    /// Records the workspace now (under the session's lock).
    async fn commit_locked(
        &self,
        rec: &SessionRecord,
        dir: &Path,
        message: String,
        always: bool,
    ) -> Result<CommitInfo> {
        let user = rec.workspace_user.clone();
        let uid = self.engine.status(&user).await?.uid;
        let files = self.engine.files(&user).await?;
        let (d, exclude) = (dir.to_owned(), rec.exclude.clone());
        blocking(move || {
            let git = Git::new(&d)?;
            track::commit(&git, &d, files.as_fd(), uid, &exclude, &message, always)
        })
        .await
    }

    /// Takes the lock of an active session and, when `outside`, records what changed since the
    /// last commit outside tracked commands.
    async fn begin(&self, id: &SessionId, outside: bool) -> Result<(SessionRecord, PathBuf, Flock<File>)> {
        let dir = self.dir(id);
        let guard = lock(&dir).await?;
        let (rec, dir) = self.load(id).await?;
        Self::require_active(&rec)?;
        if !outside {
            return Ok((rec, dir, guard));
        }
        let c =
            self.commit_locked(&rec, &dir, "outside: changes made outside a tracked command\n".into(), false).await?;
        if c.created {
            info!(session = %id, commit = %c.commit, "recorded changes made outside a tracked command");
        }
        Ok((rec, dir, guard))
    }

    /// Runs a command in the session's workspace (starting it if needed) and records the
    /// workspace's files as a commit named after the command and its exit code.
    #[tracing::instrument(skip_all, fields(session = %id))]
    pub async fn exec(&self, id: &SessionId, req: ExecRequest) -> Result<ExecOutcome> {
        req.validate()?;
        let (rec, dir, _guard) = self.begin(id, true).await?;
        self.engine.ensure_running(&rec.workspace_user).await?;
        let argv = req.argv.clone();
        let output = self.engine.exec(&rec.workspace_user, req).await?;
        let status = ExitStatus { code: output.exit_code, signal: output.signal };
        let commit = self.commit_locked(&rec, &dir, exec_message(&argv, Some(status), output.timed_out), true).await?;
        Ok(ExecOutcome { output, commit })
    }

    /// Starts a command with streamed output. Read the handle's events to the end, then call
    /// [`PendingCommit::finish`] to record the commit (the session stays locked until then; a
    /// dropped `PendingCommit` records nothing, and the next command records the changes as
    /// made outside a tracked command).
    #[tracing::instrument(skip_all, fields(session = %id))]
    pub async fn exec_stream(
        &self,
        id: &SessionId,
        req: ExecRequest,
    ) -> Result<(warren_core::ExecHandle, PendingCommit<'e>)> {
        req.validate()?;
        let (rec, dir, guard) = self.begin(id, true).await?;
        self.engine.ensure_running(&rec.workspace_user).await?;
        let argv = req.argv.clone();
        let handle = self.engine.exec_stream(&rec.workspace_user, req).await?;
        Ok((handle, PendingCommit { sessions: self.clone(), rec, dir, argv, _guard: guard }))
    }

    /// Records the workspace's files now (a commit even when nothing changed, with `message`).
    pub async fn commit(&self, id: &SessionId, message: Option<&str>) -> Result<CommitInfo> {
        let (rec, dir, _guard) = self.begin(id, false).await?;
        let m = message.map(str::trim).filter(|m| !m.is_empty()).unwrap_or("recorded on request");
        let m: String = m.chars().map(|c| if c.is_control() && c != '\n' { ' ' } else { c }).take(2000).collect();
        self.commit_locked(&rec, &dir, format!("commit: {m}\n"), true).await
    }

    async fn range(&self, rec: &SessionRecord, dir: &Path, range: &Range) -> Result<(Git, String, String)> {
        Self::require_history(rec)?;
        let git = Self::git(dir)?;
        let base = rec.base_commit.clone().ok_or_else(|| Error::Internal("the session has no base commit".into()))?;
        let synced = rec.synced_commit.clone().unwrap_or_else(|| base.clone());
        let r = range.clone();
        blocking(move || {
            let from = match (&r.from, r.all) {
                (Some(f), _) => git.resolve(f)?,
                (None, true) => base,
                (None, false) => synced,
            };
            let to = match &r.to {
                Some(t) => git.resolve(t)?,
                None => git.head()?.ok_or_else(|| Error::Internal("the history has no commit".into()))?,
            };
            Ok((git, from, to))
        })
        .await
    }

    /// Files added, modified and deleted, with a diffstat.
    pub async fn changes(&self, id: &SessionId, range: &Range) -> Result<Changes> {
        let (rec, dir) = self.load(id).await?;
        let (git, from, to) = self.range(&rec, &dir, range).await?;
        blocking(move || {
            let names = git.name_status(&from, &to)?;
            let stats = git.numstat(&from, &to)?;
            let mut out = Changes {
                from: from.clone(),
                to: to.clone(),
                files: Vec::with_capacity(names.len()),
                added: 0,
                modified: 0,
                deleted: 0,
                lines_added: 0,
                lines_deleted: 0,
            };
            for (status, path) in names {
                let kind = match status {
                    b'A' => ChangeKind::Added,
                    b'D' => ChangeKind::Deleted,
                    b'T' => ChangeKind::TypeChanged,
                    _ => ChangeKind::Modified,
                };
                match kind {
                    ChangeKind::Added => out.added += 1,
                    ChangeKind::Deleted => out.deleted += 1,
                    _ => out.modified += 1,
                }
                let counts = stats.get(&path).copied().flatten();
                if let Some((a, d)) = counts {
                    out.lines_added += a;
                    out.lines_deleted += d;
                }
                out.files.push(Change {
                    path: String::from_utf8_lossy(&path).into_owned(),
                    kind,
                    lines_added: counts.map(|c| c.0),
                    lines_deleted: counts.map(|c| c.1),
                });
            }
            out.files.sort_by(|a, b| a.path.cmp(&b.path));
            Ok(out)
        })
        .await
    }

    /// The patch between two commits (of `paths` only, when given), at most [`MAX_DIFF_BYTES`].
    pub async fn diff(&self, id: &SessionId, range: &Range, paths: &[String]) -> Result<Diff> {
        for p in paths {
            warren_core::WorkspacePath::new(p)?;
        }
        let (rec, dir) = self.load(id).await?;
        let (git, from, to) = self.range(&rec, &dir, range).await?;
        let paths = paths.to_vec();
        blocking(move || {
            let (bytes, truncated) = git.diff(&from, &to, &paths, MAX_DIFF_BYTES)?;
            Ok(Diff { from, to, text: String::from_utf8_lossy(&bytes).into_owned(), truncated })
        })
        .await
    }

    /// The last `limit` commits, newest first.
    pub async fn log(&self, id: &SessionId, limit: usize) -> Result<Vec<LogEntry>> {
        let (rec, dir) = self.load(id).await?;
        Self::require_history(&rec)?;
        let git = Self::git(&dir)?;
        let limit = limit.clamp(1, 10_000);
        blocking(move || {
            Ok(git
                .log(limit)?
                .into_iter()
                .map(|(commit, t, message)| LogEntry {
                    commit,
                    time: Timestamp::from_millis(t.saturating_mul(1000)),
                    subject: message.lines().next().unwrap_or_default().to_owned(),
                    message,
                })
                .collect())
        })
        .await
    }

    /// Writes the recorded changes (last synced commit to head) into the host project.
    #[tracing::instrument(skip_all, fields(session = %id))]
    pub async fn sync(&self, id: &SessionId, opts: SyncOptions) -> Result<SyncReport> {
        let dir = self.dir(id);
        let _guard = lock(&dir).await?;
        let (mut rec, dir) = self.load(id).await?;
        Self::require_history(&rec)?;
        let git = Self::git(&dir)?;
        let from = rec.synced_commit.clone().ok_or_else(|| Error::Internal("the session has no base commit".into()))?;
        let (project, exclude) = (rec.project.clone(), rec.exclude.clone());
        let report = blocking(move || {
            let to = git.head()?.ok_or_else(|| Error::Internal("the history has no commit".into()))?;
            sync::sync(&git, &project, &from, &to, &exclude, opts)
        })
        .await?;
        if !opts.dry_run {
            rec.synced_commit = Some(report.to.clone());
            self.save(&dir, &rec).await?;
            info!(
                written = report.written.len(),
                deleted = report.deleted.len(),
                conflicts_overwritten = report.conflicts.len(),
                "synced the session's changes to the host project"
            );
        }
        Ok(report)
    }

    /// Ends a session: its workspace is destroyed; its history too unless kept. Refused while
    /// the history holds changes never synced, unless they are kept or discarded.
    #[tracing::instrument(skip_all, fields(session = %id))]
    pub async fn stop(&self, id: &SessionId, opts: StopOptions) -> Result<StopReport> {
        let dir = self.dir(id);
        let guard = lock(&dir).await?;
        let (mut rec, dir) = match self.load(id).await {
            Ok(x) => x,
            Err(Error::NotFound(_)) => {
                // A start killed before its first record: nothing but the directory exists.
                let d = dir.clone();
                blocking(move || std::fs::remove_dir_all(&d).map_err(|e| Error::io("removing a session debris", e)))
                    .await?;
                return Ok(StopReport { id: id.clone(), history_kept: false, discarded_changes: false });
            }
            Err(e) => return Err(e),
        };
        let mut unsynced = false;
        if rec.status != SessionStatus::Starting {
            if rec.status == SessionStatus::Active {
                match self.commit_locked(&rec, &dir, "stop: the files when the session ended\n".into(), false).await {
                    Ok(_) | Err(Error::NotFound(_)) => {}
                    Err(e) => return Err(e),
                }
            }
            let git = Self::git(&dir)?;
            let synced = rec.synced_commit.clone();
            unsynced = blocking(move || has_unsynced(&git, git.head()?.as_deref(), synced.as_deref())).await?;
        }
        let keep = opts.keep_history && rec.status == SessionStatus::Active;
        if unsynced && !keep && !opts.discard {
            return Err(Error::Conflict(format!(
                "session {id} has changes never synced to {}: sync them (warren code sync {id}), keep the history \
                 (--keep-history) or drop them (--discard)",
                rec.project.display()
            )));
        }
        match self.engine.destroy(&rec.workspace_user).await {
            Ok(()) | Err(Error::NotFound(_)) => {}
            Err(e) => return Err(e),
        }
        // The session's user never comes back (a kept history needs no workspace).
        self.engine.forget_lock(&rec.workspace_user).await?;
        if keep {
            rec.status = SessionStatus::Stopped;
            self.save(&dir, &rec).await?;
            let cache = dir.join("stat-cache");
            let _ = std::fs::remove_file(cache);
        } else {
            let d = dir.clone();
            blocking(move || {
                std::fs::remove_dir_all(&d).map_err(|e| Error::io(format!("removing {}", d.display()), e))
            })
            .await?;
        }
        drop(guard);
        info!(history_kept = keep, "stopped code session");
        Ok(StopReport { id: id.clone(), history_kept: keep, discarded_changes: unsynced && !keep })
    }
}

/// Whether the history holds files never synced: other files, not merely other commits (every
/// exec commits, a read-only one too, with the same tree).
fn has_unsynced(git: &Git, head: Option<&str>, synced: Option<&str>) -> Result<bool> {
    match (head, synced) {
        (None, _) => Ok(false),
        (Some(h), Some(s)) => Ok(h != s && git.tree_of(h)? != git.tree_of(s)?),
        (Some(_), None) => Ok(true),
    }
}

/// The commit owed after a streamed command ([`Sessions::exec_stream`]); holds the session's lock.
#[derive(Debug)]
pub struct PendingCommit<'e> {
    sessions: Sessions<'e>,
    rec: SessionRecord,
    dir: PathBuf,
    argv: Vec<String>,
    _guard: Flock<File>,
}

impl PendingCommit<'_> {
    /// Records the workspace's files after the command ended with `status` (`None`: its end
    /// was not seen).
    pub async fn finish(self, status: Option<ExitStatus>, timed_out: bool) -> Result<CommitInfo> {
        let msg = exec_message(&self.argv, status, timed_out);
        self.sessions.commit_locked(&self.rec, &self.dir, msg, true).await
    }
}
