//! The API's request and response bodies (what `/openapi.json` describes). The CLI's client
//! mode reads the same types.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use warren_core::fs::{DirEntry, FileKind};
use warren_core::monitor::MonitorPolicy;
use warren_core::{BackendKind, Limits, State};
use warren_engine::{Event, Manifest, RestoreOutcome, Trigger, Usage, WorkspaceInfo};

/// Resource limits of a workspace; `null` means unlimited.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct LimitsBody {
    /// Memory, bytes (at least 8 MiB).
    pub memory_bytes: Option<u64>,
    /// CPU, in thousandths of a core (10 ..= 1000000).
    pub cpu_millis: Option<u32>,
    /// Processes and threads (at least 4).
    pub pids: Option<u32>,
    /// Disk, bytes (enforcement is backend-specific).
    pub disk_bytes: Option<u64>,
    /// Open files per process (16 ..= 1048576).
    pub nofile: u64,
}

impl From<Limits> for LimitsBody {
    fn from(l: Limits) -> Self {
        Self {
            memory_bytes: l.memory_bytes,
            cpu_millis: l.cpu_millis,
            pids: l.pids,
            disk_bytes: l.disk_bytes,
            nofile: l.nofile,
        }
    }
}

impl From<LimitsBody> for Limits {
    fn from(l: LimitsBody) -> Self {
        Self {
            memory_bytes: l.memory_bytes,
            cpu_millis: l.cpu_millis,
            pids: l.pids,
            disk_bytes: l.disk_bytes,
            nofile: l.nofile,
        }
    }
}

/// A workspace's lifecycle state, as the host shows it now.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum WorkspaceState {
    /// The backend has no such workspace.
    Absent,
    /// Files exist; nothing runs.
    Stopped,
    /// Running.
    Running,
}

impl From<State> for WorkspaceState {
    fn from(s: State) -> Self {
        match s {
            State::Absent => Self::Absent,
            State::Stopped => Self::Stopped,
            State::Running => Self::Running,
        }
    }
}

impl From<WorkspaceState> for State {
    fn from(s: WorkspaceState) -> Self {
        match s {
            WorkspaceState::Absent => Self::Absent,
            WorkspaceState::Stopped => Self::Stopped,
            WorkspaceState::Running => Self::Running,
        }
    }
}

/// The backend holding a workspace.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    /// Linux namespaces, cgroups and seccomp.
    Ns,
    /// A directory and a uid per workspace.
    Dir,
    /// A container per workspace (Docker Engine API).
    Docker,
    /// A shared container of the pool, an account per user.
    Pool,
}

impl From<BackendKind> for Backend {
    fn from(b: BackendKind) -> Self {
        match b {
            BackendKind::Ns => Self::Ns,
            BackendKind::Docker => Self::Docker,
            BackendKind::Pool => Self::Pool,
            BackendKind::Dir | BackendKind::Auto => Self::Dir,
        }
    }
}

impl From<Backend> for BackendKind {
    fn from(b: Backend) -> Self {
        match b {
            Backend::Ns => Self::Ns,
            Backend::Dir => Self::Dir,
            Backend::Docker => Self::Docker,
            Backend::Pool => Self::Pool,
        }
    }
}

/// A workspace. Same fields, in the same order, as `warren workspace status --json`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Workspace {
    /// Its owner.
    #[schema(example = "u_123")]
    pub user: String,
    /// Its id.
    #[schema(example = "ws_01JDQ8Y3H0XK4S3V7Q9B2C5D6E")]
    pub workspace_id: String,
    /// Linux account name inside it.
    pub username: String,
    /// Host uid (and gid) that owns its files and runs its processes.
    pub uid: u32,
    /// The backend that holds it.
    pub backend: Backend,
    /// What the host shows now.
    pub state: WorkspaceState,
    /// Resource limits.
    pub limits: LimitsBody,
    /// Network beyond loopback.
    pub network: bool,
    /// Its own image; `null`: the server's configured default.
    #[schema(example = "python:3.11")]
    pub image: Option<String>,
    /// When it was created (RFC 3339, UTC, milliseconds).
    #[schema(example = "2026-01-01T12:00:00.000Z")]
    pub created_at: String,
}

impl From<WorkspaceInfo> for Workspace {
    fn from(i: WorkspaceInfo) -> Self {
        Self {
            user: i.user.to_string(),
            workspace_id: i.workspace_id.to_string(),
            username: i.username,
            uid: i.uid,
            backend: i.backend.into(),
            state: i.state.into(),
            limits: i.limits.into(),
            network: i.network,
            image: i.image,
            created_at: i.created_at.to_string(),
        }
    }
}

/// `POST /v1/workspaces`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateWorkspace {
    /// The owner; a normal user may only name themselves (the default).
    pub user: Option<String>,
    /// Limits; a key left out takes the server's default, `null` means unlimited.
    #[schema(value_type = Option<LimitsBody>)]
    pub limits: Option<serde_json::Map<String, serde_json::Value>>,
    /// Network beyond loopback (default: the server's setting).
    pub network: Option<bool>,
    /// The resource monitor's policy (admin only; default: the server's `[monitor.policy]`).
    pub policy: Option<PolicyBody>,
    /// The image to run, one `warren image import` made on this host (`ns` and `docker`
    /// backends); default: the server's `CONTAINER_IMAGE`, else the host's programs (`ns`).
    #[schema(example = "python:3.11")]
    pub image: Option<String>,
}

/// Resource usage against the workspace's limits, and the monitor policy that applies.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct StatsBody {
    /// Its state on the host.
    pub state: WorkspaceState,
    /// CPU use over the last sampling window, percent of one core (150 = 1.5 cores busy);
    /// `null` when the workspace is not running.
    pub cpu_percent: Option<f64>,
    /// CPU limit, percent of one core (100 per core); `null`: none.
    pub cpu_limit_percent: Option<f64>,
    /// Memory in use, bytes.
    pub memory_bytes: u64,
    /// Memory limit, bytes, if any.
    pub memory_limit_bytes: Option<u64>,
    /// Processes and threads.
    pub pids: u64,
    /// Pids limit, if any.
    pub pids_limit: Option<u32>,
    /// Disk used by the workspace's files, bytes.
    pub disk_bytes: u64,
    /// Disk limit (quota), bytes, if any.
    pub disk_limit_bytes: Option<u64>,
    /// Use of each limited resource (`cpu`, `memory`, `pids`, `disk`), percent of its limit.
    pub percent: BTreeMap<String, f64>,
    /// Resources above the policy's threshold now.
    pub over: Vec<String>,
    /// The monitor policy that applies.
    pub policy: PolicyBody,
}

impl From<Usage> for StatsBody {
    fn from(u: Usage) -> Self {
        Self {
            state: u.state.into(),
            cpu_percent: u.cpu_percent,
            cpu_limit_percent: u.cpu_limit_percent,
            memory_bytes: u.memory_bytes,
            memory_limit_bytes: u.memory_limit_bytes,
            pids: u.pids,
            pids_limit: u.pids_limit,
            disk_bytes: u.disk_bytes,
            disk_limit_bytes: u.disk_limit_bytes,
            percent: u.percent.into_iter().map(|(r, v)| (r.as_str().to_owned(), v)).collect(),
            over: u.over.iter().map(|r| r.as_str().to_owned()).collect(),
            policy: u.policy.into(),
        }
    }
}

/// A workspace's resource-monitor policy: thresholds in percent of its own limits, how long
/// one may stay exceeded, and what happens then.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PolicyBody {
    /// `warn` (an event), `stop` (the workspace is stopped) or `kill` (every process killed,
    /// the workspace started again).
    #[schema(example = "stop")]
    pub action: String,
    /// Seconds a threshold may stay exceeded before the action.
    #[serde(default)]
    pub grace_secs: u64,
    /// CPU threshold, percent of the CPU limit; `null`: not watched.
    #[serde(default)]
    pub cpu_percent: Option<u32>,
    /// Memory threshold, percent of the memory limit.
    #[serde(default)]
    pub memory_percent: Option<u32>,
    /// Pids threshold, percent of the pids limit.
    #[serde(default)]
    pub pids_percent: Option<u32>,
    /// Disk threshold, percent of the disk limit (100: the quota itself).
    #[serde(default)]
    pub disk_percent: Option<u32>,
}

impl From<MonitorPolicy> for PolicyBody {
    fn from(p: MonitorPolicy) -> Self {
        Self {
            action: p.action.as_str().to_owned(),
            grace_secs: p.grace_secs,
            cpu_percent: p.cpu_percent,
            memory_percent: p.memory_percent,
            pids_percent: p.pids_percent,
            disk_percent: p.disk_percent,
        }
    }
}

impl TryFrom<PolicyBody> for MonitorPolicy {
    type Error = warren_core::Error;
    fn try_from(b: PolicyBody) -> Result<Self, Self::Error> {
        let p = MonitorPolicy {
            action: b.action.parse()?,
            grace_secs: b.grace_secs,
            cpu_percent: b.cpu_percent,
            memory_percent: b.memory_percent,
            pids_percent: b.pids_percent,
            disk_percent: b.disk_percent,
        };
        p.validate()?;
        Ok(p)
    }
}

/// `PUT /v1/workspaces/{user}/policy`: a policy of the workspace's own, or `null` for the
/// configured default.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SetPolicy {
    /// The policy; `null` returns the workspace to the configured default.
    pub policy: Option<PolicyBody>,
}

/// How command output (and input) bytes are carried in JSON.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Encoding {
    /// Text: bytes decoded as UTF-8, invalid sequences replaced with U+FFFD (lossy).
    #[default]
    Utf8,
    /// Standard base64 with padding (exact).
    Base64,
}

/// `POST .../exec` and `POST .../exec/stream`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ExecBody {
    /// Program and arguments; the program is looked up in `PATH` inside the workspace.
    #[schema(example = json!(["sh", "-c", "echo hi"]))]
    pub argv: Vec<String>,
    /// Extra environment variables.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Working directory, relative to the workspace's home.
    pub cwd: Option<String>,
    /// Standard input, as text (closed after it). Not together with `stdin_base64`.
    pub stdin: Option<String>,
    /// Standard input, base64 (closed after it).
    pub stdin_base64: Option<String>,
    /// Kill the command after this many milliseconds (default and maximum: server settings).
    pub timeout_ms: Option<u64>,
    /// How to return stdout and stderr (default `utf8`).
    #[serde(default)]
    pub encoding: Encoding,
}

/// The result of `POST .../exec`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ExecResult {
    /// Exit code; 128 + the signal number when a signal killed it.
    pub exit_code: i32,
    /// The signal that killed it, if any.
    pub signal: Option<i32>,
    /// Standard output, in `encoding`.
    pub stdout: String,
    /// Standard error, in `encoding`.
    pub stderr: String,
    /// How `stdout` and `stderr` are encoded.
    pub encoding: Encoding,
    /// Killed because the timeout passed.
    pub timed_out: bool,
    /// Output beyond 16 MiB per stream was dropped.
    pub truncated: bool,
    /// Wall time.
    pub duration_ms: u64,
}

/// One line of `POST .../exec/stream` (newline-delimited JSON): output as it happens, then
/// exactly one `exit` (or `error`) line.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum ExecEventBody {
    /// Bytes on stdout.
    Stdout {
        /// The bytes, in the request's `encoding` (utf8 mode never splits a character).
        data: String,
    },
    /// Bytes on stderr.
    Stderr {
        /// The bytes, in the request's `encoding`.
        data: String,
    },
    /// The command ended.
    Exit {
        /// Exit code; 128 + signal when killed.
        exit_code: i32,
        /// The killing signal, if any.
        signal: Option<i32>,
        /// Killed because the timeout passed.
        timed_out: bool,
        /// Wall time.
        duration_ms: u64,
    },
    /// The command could not be followed to its end.
    Error {
        /// What went wrong.
        error: crate::error::ErrorDetail,
    },
}

/// The kind of a directory entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum FileKindBody {
    /// A regular file.
    File,
    /// A directory.
    Dir,
    /// A symbolic link (not followed).
    Symlink,
    /// A FIFO, socket or device.
    Other,
}

/// A directory entry. Same shape as `warren ls --json`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct FileEntry {
    /// Name.
    pub name: String,
    /// What it is.
    pub kind: FileKindBody,
    /// Size, bytes.
    pub size: u64,
    /// Permission bits.
    pub mode: u32,
    /// Modification time, seconds since the epoch.
    pub mtime: i64,
}

impl From<DirEntry> for FileEntry {
    fn from(e: DirEntry) -> Self {
        Self {
            name: e.name,
            kind: match e.kind {
                FileKind::File => FileKindBody::File,
                FileKind::Dir => FileKindBody::Dir,
                FileKind::Symlink => FileKindBody::Symlink,
                FileKind::Other => FileKindBody::Other,
            },
            size: e.size,
            mode: e.mode,
            mtime: e.mtime,
        }
    }
}

impl From<FileEntry> for DirEntry {
    fn from(e: FileEntry) -> Self {
        Self {
            name: e.name,
            kind: match e.kind {
                FileKindBody::File => FileKind::File,
                FileKindBody::Dir => FileKind::Dir,
                FileKindBody::Symlink => FileKind::Symlink,
                FileKindBody::Other => FileKind::Other,
            },
            size: e.size,
            mode: e.mode,
            mtime: e.mtime,
        }
    }
}

/// The answer to `PUT .../files/{path}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct WriteResult {
    /// The path written, relative to the home.
    pub path: String,
    /// Bytes written.
    pub bytes: u64,
    /// Permission bits, octal.
    #[schema(example = "644")]
    pub mode: String,
}

/// The answer to `PUT .../archive`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ArchiveResult {
    /// Regular files written.
    pub files: u64,
    /// Directories created.
    pub dirs: u64,
    /// Bytes of file content written.
    pub bytes: u64,
}

/// The answer to `DELETE /v1/workspaces/{user}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Destroyed {
    /// The user whose workspace was destroyed.
    pub destroyed: String,
}

/// An entry of the audit trail.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct EventBody {
    /// Sequence number (increasing).
    pub id: i64,
    /// When (RFC 3339, UTC).
    pub at: String,
    /// The workspace concerned, if any.
    pub workspace_id: Option<String>,
    /// The user concerned, if any.
    pub user: Option<String>,
    /// What happened (`create`, `start`, `api`, ...).
    pub kind: String,
    /// Details.
    #[schema(value_type = Object)]
    pub detail: serde_json::Value,
}

impl From<Event> for EventBody {
    fn from(e: Event) -> Self {
        Self {
            id: e.id,
            at: e.at.to_string(),
            workspace_id: e.workspace_id.map(|w| w.to_string()),
            user: e.user.map(|u| u.to_string()),
            kind: e.kind,
            detail: e.detail,
        }
    }
}

/// Why a snapshot was taken.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum SnapshotTrigger {
    /// Asked for (the API, `warren snapshot create`).
    Manual,
    /// When an idle workspace was suspended.
    Idle,
    /// The daily schedule.
    Daily,
    /// Automatically before a restore (restore it to undo that restore).
    PreRestore,
    /// Imported from a file.
    Import,
}

impl From<Trigger> for SnapshotTrigger {
    fn from(t: Trigger) -> Self {
        match t {
            Trigger::Manual => Self::Manual,
            Trigger::Idle => Self::Idle,
            Trigger::Daily => Self::Daily,
            Trigger::PreRestore => Self::PreRestore,
            Trigger::Import => Self::Import,
        }
    }
}

/// A snapshot: its manifest. Same fields, in the same order, as `warren snapshot list --json`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Snapshot {
    /// Manifest format version.
    pub format_version: u32,
    /// The snapshot's id, unique per user.
    #[schema(example = "snap_001")]
    pub id: String,
    /// Whose workspace it is.
    pub user: String,
    /// When it was taken (RFC 3339, UTC).
    pub created: String,
    /// Why it was taken.
    pub trigger: SnapshotTrigger,
    /// Exempt from retention.
    pub pinned: bool,
    /// Size of the `.tar.zst` archive, bytes.
    pub archive_bytes: u64,
    /// Sum of the regular files' sizes.
    pub unpacked_bytes: u64,
    /// Regular files inside.
    pub file_count: u64,
    /// Entries inside (files, directories, symlinks).
    pub entry_count: u64,
    /// Lower-case hex SHA-256 of the archive.
    pub sha256: String,
    /// The backend the workspace ran on.
    pub backend: String,
    /// The snapshot this one was taken after, if recorded.
    pub parent: Option<String>,
    /// Sockets, FIFOs and devices left out.
    pub skipped_entries: u64,
}

impl From<Manifest> for Snapshot {
    fn from(m: Manifest) -> Self {
        Self {
            format_version: m.format_version,
            id: m.id.to_string(),
            user: m.user.to_string(),
            created: m.created.to_string(),
            trigger: m.trigger.into(),
            pinned: m.pinned,
            archive_bytes: m.archive_bytes,
            unpacked_bytes: m.unpacked_bytes,
            file_count: m.file_count,
            entry_count: m.entry_count,
            sha256: m.sha256,
            backend: m.backend,
            parent: m.parent.map(|p| p.to_string()),
            skipped_entries: m.skipped_entries,
        }
    }
}

/// `POST /v1/workspaces/{user}/snapshots`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateSnapshot {
    /// The id (1-64 of `A-Z a-z 0-9 _ . -`); default: generated, sortable by time.
    pub id: Option<String>,
    /// Exempt it from retention.
    #[serde(default)]
    pub pinned: bool,
}

/// What a restore did.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct RestoreResult {
    /// The snapshot now in the workspace.
    pub restored: Snapshot,
    /// The automatic snapshot of the files the restore replaced: restore it to undo.
    pub pre_restore: Snapshot,
    /// Regular files restored.
    pub files: u64,
    /// Bytes of regular files restored.
    pub bytes: u64,
    /// The workspace was running and was started again.
    pub restarted: bool,
}

impl From<RestoreOutcome> for RestoreResult {
    fn from(r: RestoreOutcome) -> Self {
        Self {
            restored: r.restored.into(),
            pre_restore: r.pre_restore.into(),
            files: r.files,
            bytes: r.bytes,
            restarted: r.restarted,
        }
    }
}

/// The seed's `POST /snapshot/create`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct SeedSnapshotCreate {
    /// The user whose workspace to snapshot.
    #[schema(example = "u_123")]
    pub user_id: String,
    /// The snapshot's id; default: generated.
    #[serde(default)]
    #[schema(example = "snap_001")]
    pub snapshot_id: Option<String>,
}

/// The answer to the seed's `POST /snapshot/create`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct SeedSnapshotCreated {
    /// The user.
    pub user_id: String,
    /// The new snapshot's id.
    pub snapshot_id: String,
    /// Its manifest.
    pub snapshot: Snapshot,
}

/// The answer to the seed's `POST /snapshot/restore`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct SeedSnapshotRestored {
    /// The user.
    pub user_id: String,
    /// The snapshot now in the workspace.
    pub snapshot_id: String,
    /// The automatic snapshot of the replaced files (restore it to undo).
    pub pre_restore_id: String,
    /// Regular files restored.
    pub files: u64,
    /// The workspace was running and was started again.
    pub restarted: bool,
}

/// The answer to the seed's `GET /snapshot/list/{user_id}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct SeedSnapshotList {
    /// The user.
    pub user_id: String,
    /// Newest first.
    pub snapshots: Vec<Snapshot>,
}

/// The seed's `POST /snapshot/restore`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct SeedSnapshotRestore {
    /// The user whose workspace to restore.
    #[schema(example = "u_123")]
    pub user_id: String,
    /// The snapshot to restore.
    #[schema(example = "snap_01JDQ8Y3H0XK4S3V7Q9B2C5D6E")]
    pub snapshot_id: String,
}

/// `GET /healthz` and `GET /readyz`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Health {
    /// `ok`, or what is not.
    pub status: String,
    /// Per check: `ok` or what failed.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub checks: BTreeMap<String, String>,
}
