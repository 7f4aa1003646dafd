//! The one trait every isolation backend implements, and the types it speaks.
//!
//! A backend is stateless towards its caller: it keeps whatever it needs to find a running
//! workspace again on the host itself (a pid file, a container label), so that [`Backend::status`]
//! tells the truth even after the warren process was killed and restarted.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

use crate::error::{Error, Result};
use crate::fs::{Confined, DirEntry, WriteOptions};
use crate::id::{UserId, WorkspaceId};
use crate::path::WorkspacePath;

/// Which backend.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum BackendKind {
    /// Pick the strongest backend this host supports.
    #[default]
    Auto,
    /// Linux namespaces + cgroups + seccomp.
    Ns,
    /// A plain directory per workspace; host processes under a per-workspace uid.
    Dir,
    /// Docker Engine API.
    Docker,
    /// Docker Engine API, many users per container (the pooled mode of `[pool]`).
    Pool,
}

impl BackendKind {
    /// The config spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            BackendKind::Auto => "auto",
            BackendKind::Ns => "ns",
            BackendKind::Dir => "dir",
            BackendKind::Docker => "docker",
            BackendKind::Pool => "pool",
        }
    }
}

impl fmt::Display for BackendKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for BackendKind {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "auto" => Ok(Self::Auto),
            "ns" => Ok(Self::Ns),
            "dir" => Ok(Self::Dir),
            "docker" => Ok(Self::Docker),
            "pool" => Ok(Self::Pool),
            other => {
                Err(Error::InvalidRequest(format!("unknown backend {other:?}: expected auto, ns, dir, docker or pool")))
            }
        }
    }
}

/// How strongly a backend separates a workspace from the host and from other workspaces.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum IsolationLevel {
    /// Separate uid and directory only; processes share the host's view.
    UidOnly,
    /// Kernel namespaces, cgroups, seccomp, no capabilities.
    Namespaces,
    /// A container runtime (namespaces managed by another daemon).
    Container,
    /// A virtual machine.
    MicroVm,
}

/// What a backend can do.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Capabilities {
    /// The backend.
    pub kind: BackendKind,
    /// Isolation strength.
    pub isolation: IsolationLevel,
    /// Memory limit is enforced (not just advisory).
    pub memory_limit: bool,
    /// CPU limit is enforced.
    pub cpu_limit: bool,
    /// Pids limit is enforced.
    pub pids_limit: bool,
    /// Network is cut off unless asked for.
    pub network_isolation: bool,
    /// Other workspaces' processes are invisible.
    pub process_isolation: bool,
    /// The workspace can be frozen (for consistent snapshots without stopping).
    pub freeze: bool,
    /// Interactive exec with a pseudo-terminal.
    pub tty: bool,
}

/// Resource limits of a workspace. `None` means "no limit".
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    /// Memory, bytes (cgroup memory limit; swap is not allowed on top).
    pub memory_bytes: Option<u64>,
    /// CPU, in thousandths of a core (1000 = one core).
    pub cpu_millis: Option<u32>,
    /// Number of processes and threads.
    pub pids: Option<u32>,
    /// Disk, bytes (enforcement is backend-specific; see the backend's docs).
    pub disk_bytes: Option<u64>,
    /// Open files per process.
    pub nofile: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            memory_bytes: Some(512 << 20),
            cpu_millis: Some(1000),
            pids: Some(256),
            disk_bytes: Some(2 << 30),
            nofile: 1024,
        }
    }
}

impl Limits {
    /// Rejects nonsensical limits with a message naming the field.
    pub fn validate(&self) -> Result<()> {
        if let Some(m) = self.memory_bytes {
            if m < 8 << 20 {
                return Err(Error::InvalidRequest(format!("memory_bytes {m} is below the 8 MiB minimum")));
            }
        }
        if let Some(c) = self.cpu_millis {
            if !(10..=1_000_000).contains(&c) {
                return Err(Error::InvalidRequest(format!("cpu_millis {c} must be between 10 and 1000000")));
            }
        }
        if let Some(p) = self.pids {
            if p < 4 {
                return Err(Error::InvalidRequest(format!("pids {p} is below the minimum of 4")));
            }
        }
        if !(16..=1 << 20).contains(&self.nofile) {
            return Err(Error::InvalidRequest(format!("nofile {} must be between 16 and 1048576", self.nofile)));
        }
        Ok(())
    }
}

/// Everything a backend needs to know about a workspace. The engine builds it from the store.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkspaceSpec {
    /// The workspace.
    pub id: WorkspaceId,
    /// Its owner.
    pub user: UserId,
    /// Linux account name inside the workspace.
    pub username: String,
    /// Unprivileged host uid that owns the workspace's files and runs its processes.
    pub uid: u32,
    /// Its gid (same number as the uid).
    pub gid: u32,
    /// Resource limits.
    pub limits: Limits,
    /// Network access beyond loopback.
    pub network: bool,
    /// The image this workspace runs, by name (one `warren image import` made: a docker tag on
    /// `docker`, a root filesystem under `{state_dir}/images/` on `ns`); `None`: the backend's
    /// configured default (`CONTAINER_IMAGE`, else docker's default image or the host's programs
    /// on `ns`). The `dir` and `pool` backends cannot give one workspace its own image.
    #[serde(default)]
    pub image: Option<String>,
}

impl WorkspaceSpec {
    /// A new workspace (fresh id) of `user` running as `uid` (gid the same), with the account
    /// name [`UserId::linux_username`] gives, default limits, no network and the default image.
    pub fn new(user: UserId, uid: u32) -> Self {
        Self {
            id: WorkspaceId::generate(),
            username: user.linux_username(),
            user,
            uid,
            gid: uid,
            limits: Limits::default(),
            network: false,
            image: None,
        }
    }
}

/// Lifecycle state.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum State {
    /// The backend has no such workspace.
    Absent,
    /// Files exist; nothing runs.
    Stopped,
    /// Running.
    Running,
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            State::Absent => "absent",
            State::Stopped => "stopped",
            State::Running => "running",
        })
    }
}

/// A workspace's state as the host shows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Status {
    /// Lifecycle state.
    pub state: State,
    /// Host pid of the workspace's init, when running and the backend has one.
    pub pid: Option<u32>,
}

/// Resource usage.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stats {
    /// CPU time used since start, nanoseconds.
    pub cpu_usage_ns: u64,
    /// Memory in use, bytes.
    pub memory_bytes: u64,
    /// Memory limit, bytes, if any.
    pub memory_limit_bytes: Option<u64>,
    /// Processes and threads.
    pub pids: u64,
    /// Disk used by the workspace's files, bytes.
    pub disk_bytes: u64,
}

/// Terminal size.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TtySize {
    /// Rows.
    pub rows: u16,
    /// Columns.
    pub cols: u16,
}

/// A command to run inside a workspace.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ExecRequest {
    /// Program and arguments; the program is looked up in `PATH` inside the workspace.
    pub argv: Vec<String>,
    /// Extra environment (the environment starts empty but for PATH, HOME, USER, LANG, ...).
    pub env: Vec<(String, String)>,
    /// Working directory relative to the home directory (default: the home directory).
    pub cwd: Option<String>,
    /// Bytes fed to stdin, then closed (sync exec only).
    pub stdin: Option<Vec<u8>>,
    /// Kill the command after this long.
    pub timeout: Option<Duration>,
    /// Run in a pseudo-terminal of this size (stdout and stderr merge).
    pub tty: Option<TtySize>,
}

/// Most output kept per stream by a sync exec; the rest is dropped and flagged.
pub const MAX_SYNC_OUTPUT: usize = 16 << 20;

impl ExecRequest {
    /// A request running `argv` with defaults.
    pub fn new<S: Into<String>>(argv: impl IntoIterator<Item = S>) -> Self {
        Self { argv: argv.into_iter().map(Into::into).collect(), ..Default::default() }
    }

    /// Rejects an empty argv, NUL bytes and bad environment names.
    pub fn validate(&self) -> Result<()> {
        if self.argv.is_empty() || self.argv[0].is_empty() {
            return Err(Error::InvalidRequest("argv is empty: give the program to run".into()));
        }
        if self.argv.iter().any(|a| a.contains('\0')) {
            return Err(Error::InvalidRequest("argv contains a NUL byte".into()));
        }
        for (k, v) in &self.env {
            let ok = !k.is_empty()
                && !k.as_bytes()[0].is_ascii_digit()
                && k.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
            if !ok || v.contains('\0') {
                return Err(Error::InvalidRequest(format!(
                    "environment variable {k:?} is invalid: names are [A-Za-z_][A-Za-z0-9_]*, values have no NUL"
                )));
            }
        }
        if let Some(cwd) = &self.cwd {
            if cwd.contains('\0') {
                return Err(Error::InvalidRequest("cwd contains a NUL byte".into()));
            }
        }
        Ok(())
    }

    /// The environment a command starts with: fixed defaults, then the request's variables.
    pub fn environment(&self, spec: &WorkspaceSpec, home: &str) -> Vec<(String, String)> {
        let mut env = vec![
            ("PATH".to_owned(), "/usr/local/bin:/usr/bin:/bin:/usr/local/sbin:/usr/sbin:/sbin".to_owned()),
            ("HOME".to_owned(), home.to_owned()),
            ("USER".to_owned(), spec.username.clone()),
            ("LOGNAME".to_owned(), spec.username.clone()),
            ("SHELL".to_owned(), "/bin/sh".to_owned()),
            ("LANG".to_owned(), "C.UTF-8".to_owned()),
            ("WARREN_USER".to_owned(), spec.user.to_string()),
            ("WARREN_WORKSPACE".to_owned(), spec.id.to_string()),
        ];
        if self.tty.is_some() {
            env.push(("TERM".to_owned(), "xterm-256color".to_owned()));
        }
        for (k, v) in &self.env {
            env.retain(|(ek, _)| ek != k);
            env.push((k.clone(), v.clone()));
        }
        env
    }
}

/// How a command ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExitStatus {
    /// Exit code; 128 + signal number when killed by a signal (the shell convention).
    pub code: i32,
    /// The signal that killed it, if any.
    pub signal: Option<i32>,
}

/// The result of a sync exec.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExecOutput {
    /// Exit code (128 + signal when killed).
    pub exit_code: i32,
    /// Killing signal, if any.
    pub signal: Option<i32>,
    /// Standard output.
    pub stdout: Vec<u8>,
    /// Standard error.
    pub stderr: Vec<u8>,
    /// Killed because the timeout passed.
    pub timed_out: bool,
    /// Output beyond [`MAX_SYNC_OUTPUT`] per stream was dropped.
    pub truncated: bool,
    /// Wall time.
    pub duration: Duration,
}

/// Output and the end of a streaming exec.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ExecEvent {
    /// Bytes on stdout (or the terminal).
    Stdout(Vec<u8>),
    /// Bytes on stderr.
    Stderr(Vec<u8>),
    /// The command ended; no event follows.
    Exit(ExitStatus),
}

/// Controls for a running exec.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExecControl {
    /// Resize the terminal.
    Resize(TtySize),
    /// Send a signal to the command's process group.
    Signal(i32),
}

/// A running command. Dropping `stdin` closes the command's stdin; dropping the whole handle
/// before [`ExecEvent::Exit`] kills the command.
#[derive(Debug)]
pub struct ExecHandle {
    /// Bytes for the command's stdin (or terminal).
    pub stdin: Option<mpsc::Sender<Vec<u8>>>,
    /// Output, then exactly one `Exit`.
    pub events: mpsc::Receiver<ExecEvent>,
    /// Resize and signal.
    pub control: mpsc::Sender<ExecControl>,
}

/// Where a backend keeps a workspace's files on the host, for the default file operations.
#[derive(Clone, Debug)]
pub struct HostFiles {
    /// The home directory on the host.
    pub dir: PathBuf,
    /// Owner given to created files.
    pub uid: u32,
    /// Group given to created files.
    pub gid: u32,
}

/// Largest file [`Backend::read_file`] returns in one piece.
pub const MAX_READ_BYTES: u64 = 64 << 20;

/// An isolation backend. All methods are idempotent where that makes sense: `stop` of a stopped
/// workspace and `destroy` of an absent one succeed.
#[async_trait]
pub trait Backend: Send + Sync + fmt::Debug + 'static {
    /// What this backend can do.
    fn capabilities(&self) -> Capabilities;

    /// Creates the workspace's files (home directory owned by `spec.uid`, mode 0700).
    async fn create(&self, spec: &WorkspaceSpec) -> Result<()>;
    /// Starts it; a running workspace is left as it is.
    async fn start(&self, spec: &WorkspaceSpec) -> Result<Status>;
    /// Stops it, killing every process in it. Files stay.
    async fn stop(&self, spec: &WorkspaceSpec) -> Result<()>;
    /// What the host shows now.
    async fn status(&self, spec: &WorkspaceSpec) -> Result<Status>;
    /// Stops it and removes all its files.
    async fn destroy(&self, spec: &WorkspaceSpec) -> Result<()>;
    /// Starts a command and streams its output.
    async fn exec_stream(&self, spec: &WorkspaceSpec, req: ExecRequest) -> Result<ExecHandle>;
    /// Current resource usage.
    async fn stats(&self, spec: &WorkspaceSpec) -> Result<Stats>;
    /// Where the workspace's files are on the host, if they are there.
    fn host_files(&self, spec: &WorkspaceSpec) -> Option<HostFiles>;

    /// Freezes (`true`) or thaws (`false`) every process of a running workspace, for a consistent
    /// snapshot without stopping it. Backends that cannot return [`Error::Unsupported`]
    /// (their `capabilities().freeze` is false) and callers fall back to stop + start.
    async fn freeze(&self, spec: &WorkspaceSpec, frozen: bool) -> Result<()> {
        let _ = (spec, frozen);
        Err(Error::Unsupported(format!("the {} backend cannot freeze a workspace", self.capabilities().kind)))
    }

    /// Runs a command to completion and collects its output.
    async fn exec(&self, spec: &WorkspaceSpec, req: ExecRequest) -> Result<ExecOutput> {
        req.validate()?;
        let started = Instant::now();
        let timeout = req.timeout;
        let stdin_bytes = req.stdin.clone();
        let mut h = self.exec_stream(spec, ExecRequest { stdin: None, ..req }).await?;
        let feeder = match (h.stdin.take(), stdin_bytes) {
            (Some(tx), Some(bytes)) => Some(tokio::spawn(async move {
                for chunk in bytes.chunks(64 << 10) {
                    if tx.send(chunk.to_vec()).await.is_err() {
                        break;
                    }
                }
            })),
            _ => None, // dropping the sender closes stdin
        };
        let mut out = ExecOutput {
            exit_code: -1,
            signal: None,
            stdout: Vec::new(),
            stderr: Vec::new(),
            timed_out: false,
            truncated: false,
            duration: Duration::ZERO,
        };
        let deadline = timeout.map(|t| tokio::time::Instant::now() + t);
        loop {
            let ev = match deadline {
                Some(d) if !out.timed_out => match tokio::time::timeout_at(d, h.events.recv()).await {
                    Ok(ev) => ev,
                    Err(_) => {
                        out.timed_out = true;
                        let _ = h.control.send(ExecControl::Signal(9)).await;
                        continue;
                    }
                },
                _ => h.events.recv().await,
            };
            match ev {
                Some(ExecEvent::Stdout(b)) => append(&mut out.stdout, &b, &mut out.truncated),
                Some(ExecEvent::Stderr(b)) => append(&mut out.stderr, &b, &mut out.truncated),
                Some(ExecEvent::Exit(st)) => {
                    out.exit_code = st.code;
                    out.signal = st.signal;
                    break;
                }
                None => return Err(Error::Internal("the command's output stream ended without an exit status".into())),
            }
        }
        if let Some(f) = feeder {
            f.abort();
        }
        out.duration = started.elapsed();
        Ok(out)
    }

    /// Reads a file (at most [`MAX_READ_BYTES`]).
    async fn read_file(&self, spec: &WorkspaceSpec, path: &WorkspacePath) -> Result<Vec<u8>> {
        let (c, path) = (self.confined(spec)?, path.clone());
        blocking(move || c.read(&path, MAX_READ_BYTES)).await
    }

    /// Writes a file atomically, creating parent directories.
    async fn write_file(&self, spec: &WorkspaceSpec, path: &WorkspacePath, data: Vec<u8>, mode: u32) -> Result<()> {
        let (c, path) = (self.confined(spec)?, path.clone());
        blocking(move || c.write(&path, &data, WriteOptions { mode, create_parents: true })).await
    }

    /// Lists a directory.
    async fn list_files(&self, spec: &WorkspaceSpec, path: &WorkspacePath) -> Result<Vec<DirEntry>> {
        let (c, path) = (self.confined(spec)?, path.clone());
        blocking(move || c.list(&path)).await
    }

    /// Creates a directory and its parents.
    async fn make_dir(&self, spec: &WorkspaceSpec, path: &WorkspacePath) -> Result<()> {
        let (c, path) = (self.confined(spec)?, path.clone());
        blocking(move || c.mkdir(&path, true)).await
    }

    /// Deletes a file or directory.
    async fn delete_file(&self, spec: &WorkspaceSpec, path: &WorkspacePath, recursive: bool) -> Result<()> {
        let (c, path) = (self.confined(spec)?, path.clone());
        blocking(move || c.remove(&path, recursive)).await
    }

    /// Opens the workspace's host directory for confined file operations.
    fn confined(&self, spec: &WorkspaceSpec) -> Result<Confined> {
        let hf = self
            .host_files(spec)
            .ok_or_else(|| Error::Unsupported("this backend does not keep workspace files on the host".into()))?;
        if !hf.dir.exists() {
            return Err(Error::NotFound(format!("workspace of user {}", spec.user)));
        }
        Confined::open(&hf.dir, Some((hf.uid, hf.gid)))
    }
}

fn append(buf: &mut Vec<u8>, b: &[u8], truncated: &mut bool) {
    let room = MAX_SYNC_OUTPUT.saturating_sub(buf.len());
    if b.len() > room {
        *truncated = true;
    }
    buf.extend_from_slice(&b[..b.len().min(room)]);
}

/// Runs blocking file work off the async runtime.
pub async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(f).await.map_err(|e| Error::Internal(format!("a blocking task failed: {e}")))?
}

/// Disk bytes used under `dir` (allocated blocks, each inode counted once; not following links).
pub fn disk_usage(dir: &std::path::Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    let mut total = 0u64;
    let mut seen = std::collections::HashSet::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else { continue };
        for ent in rd.flatten() {
            let Ok(md) = ent.metadata() else { continue };
            if md.nlink() > 1 && !md.is_dir() && !seen.insert((md.dev(), md.ino())) {
                continue;
            }
            total += md.blocks() * 512;
            if md.is_dir() {
                stack.push(ent.path());
            }
        }
    }
    total
}
