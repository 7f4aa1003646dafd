//! Session ids, the session record (`session.json`) and the per-session lock.

use std::fmt;
use std::fs::File;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::str::FromStr;

use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg};
use serde::{Deserialize, Serialize};
use warren_core::time::Timestamp;
use warren_core::{BackendKind, Error, Result, UserId};

/// The prefix of the synthetic user that owns a session's workspace.
pub const WORKSPACE_PREFIX: &str = "code.";

/// A coding session: 12 lowercase hex digits. Its workspace belongs to the synthetic user
/// `code.<id>` (a prefix no token may name).
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct SessionId(String);

impl SessionId {
    /// A fresh random id.
    pub fn generate() -> Result<Self> {
        let mut b = [0u8; 6];
        getrandom::fill(&mut b).map_err(|e| Error::Internal(format!("no randomness for a session id: {e}")))?;
        Ok(Self(b.iter().map(|x| format!("{x:02x}")).collect()))
    }

    /// The id as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The synthetic user owning the session's workspace.
    pub fn workspace_user(&self) -> Result<UserId> {
        // `code.` + 12 hex digits always passes the user-id rule.
        UserId::new(format!("{WORKSPACE_PREFIX}{}", self.0))
    }
}

impl FromStr for SessionId {
    type Err = Error;
    /// Accepts the id or its workspace user (`code.<id>`).
    fn from_str(s: &str) -> Result<Self> {
        let id = s.strip_prefix(WORKSPACE_PREFIX).unwrap_or(s);
        if id.len() == 12 && id.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) {
            Ok(Self(id.to_owned()))
        } else {
            Err(Error::InvalidId {
                kind: "session id",
                value: s.to_owned(),
                rule: "must be 12 lowercase hex digits (optionally prefixed with 'code.'), as `warren code list` shows",
            })
        }
    }
}

impl TryFrom<String> for SessionId {
    type Error = Error;
    fn try_from(s: String) -> Result<Self> {
        s.parse()
    }
}

impl From<SessionId> for String {
    fn from(id: SessionId) -> String {
        id.0
    }
}

impl fmt::Display for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SessionId({:?})", self.0)
    }
}

/// Where a session is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SessionStatus {
    /// Being set up (copying the project); a session left in this state by a crash is debris
    /// that `stop` removes.
    Starting,
    /// The workspace exists; commands run and are tracked.
    Active,
    /// The workspace is gone; the history was kept (`stop --keep-history`): changes, diff, log
    /// and sync still work.
    Stopped,
}

impl fmt::Display for SessionStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            SessionStatus::Starting => "starting",
            SessionStatus::Active => "active",
            SessionStatus::Stopped => "stopped",
        })
    }
}

/// Something left out of the copy or of a commit, and why.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Skipped {
    /// The path, relative to the project (lossy UTF-8).
    pub path: String,
    /// Why.
    pub reason: String,
}

/// What the copy into the workspace did.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CopyReport {
    /// Regular files copied.
    pub files: u64,
    /// Symbolic links copied.
    pub symlinks: u64,
    /// Directories created.
    pub dirs: u64,
    /// Bytes of file content copied.
    pub bytes: u64,
    /// Entries left out (the first [`MAX_SKIPPED_LISTED`]).
    pub skipped: Vec<Skipped>,
    /// How many entries were left out in all.
    pub skipped_count: u64,
}

/// Most skipped entries listed in a report (the count is always complete).
pub const MAX_SKIPPED_LISTED: usize = 100;

/// The on-disk record of a session, `{state}/code/{id}/session.json`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionRecord {
    /// Format version (1).
    pub version: u32,
    /// The session.
    pub id: SessionId,
    /// Who started it through the API (`None`: the local CLI; only admins see it over the API).
    pub owner: Option<UserId>,
    /// The host project directory (absolute, canonical).
    pub project: PathBuf,
    /// The synthetic user owning the workspace (`code.<id>`).
    pub workspace_user: UserId,
    /// The backend holding the workspace.
    pub backend: Option<BackendKind>,
    /// Names left out at any depth, besides `.git` (never copied, tracked or synced).
    pub exclude: Vec<String>,
    /// Where the session is.
    pub status: SessionStatus,
    /// The commit of the project as copied in.
    pub base_commit: Option<String>,
    /// The commit last written back to the host (the base until the first sync).
    pub synced_commit: Option<String>,
    /// When it started.
    pub created_at: Timestamp,
    /// What the copy did.
    pub copy: CopyReport,
}

pub(crate) const RECORD_VERSION: u32 = 1;

/// `{state}/code`, created 0700 root on first use.
pub(crate) fn code_root(state_dir: &Path) -> PathBuf {
    state_dir.join("code")
}

/// Creates `dir` (mode 0700) if missing and checks it is a real directory of ours, mode 0700.
pub(crate) fn private_dir(dir: &Path) -> Result<()> {
    match std::fs::DirBuilder::new().mode(0o700).create(dir) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(Error::io(format!("creating {}", dir.display()), e)),
    }
    let md = std::fs::symlink_metadata(dir).map_err(|e| Error::io(format!("reading {}", dir.display()), e))?;
    if !md.file_type().is_dir() {
        return Err(Error::Internal(format!("{} is not a directory; move it away", dir.display())));
    }
    if md.uid() != nix::unistd::geteuid().as_raw() {
        return Err(Error::Internal(format!(
            "{} belongs to uid {}, not to warren; it must not be trusted: move it away",
            dir.display(),
            md.uid()
        )));
    }
    if md.permissions().mode() & 0o7777 != 0o700 {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
            .map_err(|e| Error::io(format!("making {} mode 0700", dir.display()), e))?;
    }
    Ok(())
}

/// Reads a session record.
pub(crate) fn read_record(dir: &Path) -> Result<SessionRecord> {
    let p = dir.join("session.json");
    let data = std::fs::read(&p).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => Error::NotFound(format!(
            "code session {}",
            dir.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default()
        )),
        _ => Error::io(format!("reading {}", p.display()), e),
    })?;
    let rec: SessionRecord = serde_json::from_slice(&data)
        .map_err(|e| Error::Internal(format!("{} is not a valid session record: {e}", p.display())))?;
    if rec.version != RECORD_VERSION {
        return Err(Error::Unsupported(format!(
            "{} has format version {}; this warren reads version {RECORD_VERSION}",
            p.display(),
            rec.version
        )));
    }
    Ok(rec)
}

/// Writes a session record atomically: temp file, fsync, rename, fsync of the directory.
pub(crate) fn write_record(dir: &Path, rec: &SessionRecord) -> Result<()> {
    let data = serde_json::to_vec_pretty(rec).map_err(|e| Error::Internal(format!("encoding the record: {e}")))?;
    warren_core::fs::write_atomic(&dir.join("session.json"), &data, 0o600)
}

/// The session's lock, held by every change (exec and its commit, commit, sync, stop), across
/// threads and processes.
pub(crate) async fn lock(dir: &Path) -> Result<Flock<File>> {
    let p = dir.join("lock");
    warren_core::backend::blocking(move || {
        let f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(&p)
            .map_err(|e| match e.kind() {
                std::io::ErrorKind::NotFound => Error::NotFound(format!(
                    "code session {}",
                    p.parent().and_then(Path::file_name).map(|n| n.to_string_lossy().into_owned()).unwrap_or_default()
                )),
                _ => Error::io(format!("opening {}", p.display()), e),
            })?;
        let mut f = f;
        loop {
            match Flock::lock(f, FlockArg::LockExclusive) {
                Ok(l) => return Ok(l),
                Err((back, Errno::EINTR)) => f = back,
                Err((_, e)) => return Err(Error::errno(format!("locking {}", p.display()), e)),
            }
        }
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids() {
        let id = SessionId::generate().expect("id");
        assert_eq!(id.as_str().len(), 12);
        let user = id.workspace_user().expect("user");
        assert_eq!(user.as_str(), format!("code.{id}"));
        assert!(user.is_reserved());
        let again: SessionId = format!("code.{id}").parse().expect("with prefix");
        assert_eq!(again, id);
        for bad in ["", "abc", "ABCDEF012345", "0123456789abc", "../../etc/x", "code.", "0123456789ag"] {
            assert!(bad.parse::<SessionId>().is_err(), "{bad}");
        }
    }
}
