//! Sandbox ids and the sandbox records: `{state}/skills/{id}.json` (directory 0700, files 0600),
//! each written atomically (temporary file, fsync, rename, fsync of the directory).

use std::fmt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use tracing::warn;
use warren_core::backend::blocking;
use warren_core::fs::{Confined, WriteOptions};
use warren_core::time::Timestamp;
use warren_core::{BackendKind, Error, Limits, UserId, WorkspaceId, WorkspacePath};

use crate::error::{Result, SkillError};
use crate::format::Skill;

/// Version of the record format.
pub const RECORD_VERSION: u32 = 1;
/// Largest record read back, bytes (a record holds a skill file of at most 1 MiB).
const MAX_RECORD_BYTES: u64 = 8 << 20;

/// A sandbox's id: `skill.` and 12 lowercase hex digits. It is also the user id that owns the
/// sandbox's workspace in the engine.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct SandboxId(String);

/// The id prefix (one of [`UserId::RESERVED_PREFIXES`]).
pub const PREFIX: &str = "skill.";

impl SandboxId {
    /// A fresh random id.
    pub fn generate() -> Result<Self> {
        let mut b = [0u8; 6];
        getrandom::fill(&mut b)
            .map_err(|e| Error::Internal(format!("the kernel gave no random bytes for a sandbox id: {e}")))?;
        let hex: String = b.iter().map(|x| format!("{x:02x}")).collect();
        Ok(Self(format!("{PREFIX}{hex}")))
    }

    /// Checks `s` against the rule.
    pub fn new(s: impl Into<String>) -> Result<Self> {
        let s = s.into();
        let ok = s
            .strip_prefix(PREFIX)
            .is_some_and(|h| h.len() == 12 && h.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)));
        if ok {
            Ok(Self(s))
        } else {
            Err(SkillError::NotFound(format!(
                "{s:?} (a sandbox id is 'skill.' and 12 lowercase hex digits, as `warren skill build` prints it)"
            )))
        }
    }

    /// The id as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The engine user owning the sandbox's workspace.
    pub fn user(&self) -> Result<UserId> {
        Ok(UserId::new(self.0.clone())?)
    }
}

impl FromStr for SandboxId {
    type Err = SkillError;
    fn from_str(s: &str) -> Result<Self> {
        Self::new(s)
    }
}

impl TryFrom<String> for SandboxId {
    type Error = SkillError;
    fn try_from(s: String) -> Result<Self> {
        Self::new(s)
    }
}

impl From<SandboxId> for String {
    fn from(id: SandboxId) -> String {
        id.0
    }
}

impl fmt::Display for SandboxId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for SandboxId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SandboxId({:?})", self.0)
    }
}

/// Where a sandbox's build is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum BuildStatus {
    /// Being built (or the builder died: clean it up).
    Building,
    /// Built; its tools run.
    Ready,
    /// The build failed and the sandbox could not be removed: clean it up.
    Failed,
}

/// One step of a build.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct BuildStep {
    /// `start`, `home`, `files`, `packages`, `venv`, `pip_install`, `node`, `npm_install`, `check`.
    pub step: String,
    /// It succeeded.
    pub ok: bool,
    /// Exit code of the step's command, if it ran one.
    pub exit_code: Option<i32>,
    /// Wall time.
    pub duration_ms: u64,
    /// The end of the command's output (at most 2 KiB), or what the step did.
    pub output: String,
}

/// A package as installed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct InstalledPackage {
    /// As the skill lists it (a path or a requirement).
    pub spec: String,
    /// The file's name inside the sandbox (`~/.skill/packages/`), for package files.
    pub file_name: Option<String>,
    /// Its size, for package files.
    pub bytes: Option<u64>,
    /// Lower-case hex SHA-256, for package files.
    pub sha256: Option<String>,
}

/// What the build did.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct BuildLog {
    /// Wall time of the whole build.
    pub duration_ms: u64,
    /// The steps, in order.
    pub steps: Vec<BuildStep>,
    /// The packages.
    pub packages: Vec<InstalledPackage>,
    /// The runtime's version inside the sandbox (`3.11.2`, `v20.19.2`), when it has one.
    pub runtime_version: Option<String>,
    /// What the backend does not enforce of the skill's settings.
    pub warnings: Vec<String>,
}

/// A sandbox record, as stored.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SandboxRecord {
    /// [`RECORD_VERSION`].
    pub format_version: u32,
    /// The sandbox.
    pub id: SandboxId,
    /// Who built it through the API; `None` for the local CLI (then only admins reach it over
    /// the API).
    pub owner: Option<UserId>,
    /// The build's state.
    pub status: BuildStatus,
    /// The parsed skill.
    pub skill: Skill,
    /// Lower-case hex SHA-256 of the skill file.
    pub source_sha256: String,
    /// Where the skill file came from (a host path, or `api`).
    pub origin: String,
    /// The backend holding the workspace.
    pub backend: BackendKind,
    /// The workspace, once created.
    pub workspace_id: Option<WorkspaceId>,
    /// `$HOME` inside the sandbox, once known.
    pub home: Option<String>,
    /// The workspace's limits.
    pub limits: Limits,
    /// What the build did.
    pub build: BuildLog,
    /// Why the build failed (status `failed`).
    pub error: Option<String>,
    /// When the build started.
    pub created_at: Timestamp,
}

/// The records directory.
#[derive(Clone, Debug)]
pub struct Records {
    dir: PathBuf,
}

impl Records {
    /// The records of the engine state directory `state`.
    pub fn new(state: &Path) -> Self {
        Self { dir: state.join("skills") }
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn file(id: &SandboxId) -> Result<WorkspacePath> {
        Ok(WorkspacePath::new(format!("{id}.json"))?)
    }

    fn prepare(&self) -> warren_core::Result<()> {
        std::fs::create_dir_all(&self.dir)
            .map_err(|e| Error::io(format!("creating the skill records directory {}", self.dir.display()), e))?;
        std::fs::set_permissions(&self.dir, std::fs::Permissions::from_mode(0o700))
            .map_err(|e| Error::io(format!("making {} mode 0700", self.dir.display()), e))?;
        Ok(())
    }

    /// Writes `rec` atomically.
    pub async fn save(&self, rec: &SandboxRecord) -> Result<()> {
        let this = self.clone();
        let mut data = serde_json::to_vec_pretty(rec)
            .map_err(|e| Error::Internal(format!("encoding the record of sandbox {}: {e}", rec.id)))?;
        data.push(b'\n');
        let file = Self::file(&rec.id)?;
        blocking(move || {
            this.prepare()?;
            let c = Confined::open(&this.dir, None)?;
            c.write(&file, &data, WriteOptions { mode: 0o600, create_parents: false })
        })
        .await?;
        Ok(())
    }

    /// Reads the record of `id`.
    pub async fn load(&self, id: &SandboxId) -> Result<SandboxRecord> {
        let path = self.dir.join(format!("{id}.json"));
        let shown = id.to_string();
        let data = blocking(move || match std::fs::metadata(&path) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Error::io(format!("reading {}", path.display()), e)),
            Ok(md) if md.len() > MAX_RECORD_BYTES => {
                Err(Error::Internal(format!("{} is larger than a record can be", path.display())))
            }
            Ok(_) => std::fs::read(&path).map(Some).map_err(|e| Error::io(format!("reading {}", path.display()), e)),
        })
        .await?;
        let data = data.ok_or_else(|| SkillError::NotFound(shown.clone()))?;
        let rec: SandboxRecord = serde_json::from_slice(&data)
            .map_err(|e| Error::Internal(format!("the record of sandbox {shown} is damaged: {e}")))?;
        if rec.format_version != RECORD_VERSION {
            return Err(Error::Internal(format!(
                "the record of sandbox {shown} has format {} and this warren reads {RECORD_VERSION}",
                rec.format_version
            ))
            .into());
        }
        Ok(rec)
    }

    /// Every record, oldest first. Damaged records are logged and left out.
    pub async fn list(&self) -> Result<Vec<SandboxRecord>> {
        let dir = self.dir.clone();
        let ids = blocking(move || {
            let rd = match std::fs::read_dir(&dir) {
                Ok(rd) => rd,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
                Err(e) => return Err(Error::io(format!("listing {}", dir.display()), e)),
            };
            let mut ids = Vec::new();
            for ent in rd.flatten() {
                let name = ent.file_name();
                let Some(stem) = name.to_str().and_then(|n| n.strip_suffix(".json")) else { continue };
                if let Ok(id) = SandboxId::new(stem) {
                    ids.push(id);
                }
            }
            Ok(ids)
        })
        .await?;
        let mut out = Vec::with_capacity(ids.len());
        for id in ids {
            match self.load(&id).await {
                Ok(r) => out.push(r),
                Err(SkillError::NotFound(_)) => {} // removed meanwhile
                Err(e) => warn!(sandbox = %id, error = %e, "skipping a skill record that cannot be read"),
            }
        }
        out.sort_by(|a, b| a.created_at.cmp(&b.created_at).then_with(|| a.id.cmp(&b.id)));
        Ok(out)
    }

    /// Deletes the record of `id`; `false` if there was none.
    pub async fn remove(&self, id: &SandboxId) -> Result<bool> {
        let path = self.dir.join(format!("{id}.json"));
        let dir = self.dir.clone();
        Ok(blocking(move || match std::fs::remove_file(&path) {
            Ok(()) => {
                if let Ok(d) = std::fs::File::open(&dir) {
                    let _ = d.sync_all();
                }
                Ok(true)
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(Error::io(format!("deleting {}", path.display()), e)),
        })
        .await?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_follow_the_rule() {
        let id = SandboxId::generate().expect("random");
        assert!(id.as_str().starts_with("skill.") && id.as_str().len() == 18, "{id}");
        assert_eq!(SandboxId::new(id.as_str()).expect("valid"), id);
        assert!(id.user().expect("a user id").is_reserved());
        for bad in ["skill.0123456789a", "skill.0123456789AB", "code.0123456789ab", "skill.0123456789ag", "../x"] {
            assert!(SandboxId::new(bad).is_err(), "{bad}");
        }
    }
}
