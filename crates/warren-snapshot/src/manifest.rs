//! The manifest: one small JSON document beside each archive, written last.
//!
//! ```json
//! {
//!   "format_version": 1,
//!   "id": "snap_001",
//!   "user": "u_123",
//!   "created": "2025-01-02T03:04:05.678Z",
//!   "trigger": "manual",
//!   "pinned": false,
//!   "archive_bytes": 1234,
//!   "unpacked_bytes": 56789,
//!   "file_count": 42,
//!   "entry_count": 50,
//!   "sha256": "9f86d0...",
//!   "backend": "dir",
//!   "parent": null
//! }
//! ```
//!
//! Readers accept every `format_version` ever written (today: 1) and refuse newer ones with a
//! message saying so; unknown fields are ignored so a later minor addition stays readable.

use serde::{Deserialize, Serialize};
use warren_core::{SnapshotId, UserId};

use crate::error::{Result, SnapshotError};
use crate::time::Timestamp;

/// The manifest format this crate writes.
pub const FORMAT_VERSION: u32 = 1;

/// Why a snapshot was taken.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Trigger {
    /// Asked for explicitly (`warren snapshot create`, the API's save).
    Manual,
    /// Taken when an idle workspace was suspended.
    Idle,
    /// The daily schedule.
    Daily,
    /// Taken automatically before a restore, so the restore can be undone.
    PreRestore,
    /// Created by importing an archive file.
    Import,
}

impl Trigger {
    /// The manifest spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Trigger::Manual => "manual",
            Trigger::Idle => "idle",
            Trigger::Daily => "daily",
            Trigger::PreRestore => "pre_restore",
            Trigger::Import => "import",
        }
    }
}

impl std::fmt::Display for Trigger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Trigger {
    type Err = warren_core::Error;
    fn from_str(s: &str) -> warren_core::Result<Self> {
        Ok(match s {
            "manual" => Trigger::Manual,
            "idle" => Trigger::Idle,
            "daily" => Trigger::Daily,
            "pre_restore" => Trigger::PreRestore,
            "import" => Trigger::Import,
            _ => {
                return Err(warren_core::Error::InvalidRequest(format!(
                    "unknown snapshot trigger {s:?}: expected manual, idle, daily, pre_restore or import"
                )))
            }
        })
    }
}

/// Everything known about one snapshot. A snapshot exists exactly when its manifest does.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    /// Manifest format version ([`FORMAT_VERSION`] when written by this crate).
    pub format_version: u32,
    /// The snapshot's id, unique per user.
    pub id: SnapshotId,
    /// Whose workspace it is.
    pub user: UserId,
    /// When it was taken.
    pub created: Timestamp,
    /// Why it was taken.
    pub trigger: Trigger,
    /// Exempt from retention.
    #[serde(default)]
    pub pinned: bool,
    /// Size of the `.tar.zst` archive in bytes.
    pub archive_bytes: u64,
    /// Sum of the sizes of the regular files inside.
    pub unpacked_bytes: u64,
    /// Number of regular files inside.
    pub file_count: u64,
    /// Number of entries inside (files, directories, symlinks).
    #[serde(default)]
    pub entry_count: u64,
    /// Lower-case hex SHA-256 of the archive bytes.
    pub sha256: String,
    /// The backend the workspace ran on (`dir`, `ns`, ...; `import` for imported files).
    pub backend: String,
    /// The snapshot this one was taken after, if the caller recorded one.
    #[serde(default)]
    pub parent: Option<SnapshotId>,
    /// Entries the creator skipped (sockets, FIFOs, devices), with a warning in the log.
    #[serde(default)]
    pub skipped_entries: u64,
}

#[derive(Deserialize)]
struct VersionProbe {
    format_version: Option<u32>,
}

impl Manifest {
    /// Parses a manifest of any version this crate can read.
    pub fn from_json(bytes: &[u8]) -> Result<Self> {
        let bad = |e: &dyn std::fmt::Display| {
            SnapshotError::Corrupt(format!("snapshot manifest is not valid: {e}; delete the snapshot"))
        };
        let probe: VersionProbe = serde_json::from_slice(bytes).map_err(|e| bad(&e))?;
        match probe.format_version {
            // Version 1 is the current layout; later versions add a branch here that converts.
            Some(1) => serde_json::from_slice::<Manifest>(bytes).map_err(|e| bad(&e)),
            Some(v) if v > FORMAT_VERSION => Err(SnapshotError::Core(warren_core::Error::Unsupported(format!(
                "snapshot manifest format {v} was written by a newer warren (this one reads up to {FORMAT_VERSION}); upgrade warren"
            )))),
            Some(v) => Err(bad(&format!("unknown format_version {v}"))),
            None => Err(bad(&"missing format_version")),
        }
    }

    /// The manifest as pretty JSON.
    pub fn to_json(&self) -> Vec<u8> {
        // Serialising plain data with string keys cannot fail.
        serde_json::to_vec_pretty(self).unwrap_or_default()
    }
}

/// The storage key of a user's snapshot directory: `snapshots/{user}/`.
pub fn user_prefix(user: &UserId) -> String {
    format!("snapshots/{user}/")
}

/// The storage key of an archive: `snapshots/{user}/{snap}.tar.zst`.
pub fn archive_key(user: &UserId, id: &SnapshotId) -> String {
    format!("snapshots/{user}/{id}.tar.zst")
}

/// The storage key of a manifest: `snapshots/{user}/{snap}.json`.
pub fn manifest_key(user: &UserId, id: &SnapshotId) -> String {
    format!("snapshots/{user}/{id}.json")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Manifest {
        Manifest {
            format_version: FORMAT_VERSION,
            id: SnapshotId::new("snap_001").expect("id"),
            user: UserId::new("u_123").expect("user"),
            created: Timestamp::from_millis(1_735_787_045_678),
            trigger: Trigger::PreRestore,
            pinned: true,
            archive_bytes: 10,
            unpacked_bytes: 20,
            file_count: 3,
            entry_count: 4,
            sha256: "ab".repeat(32),
            backend: "dir".into(),
            parent: None,
            skipped_entries: 0,
        }
    }

    #[test]
    fn round_trips_and_reads_v1() {
        let m = sample();
        assert_eq!(Manifest::from_json(&m.to_json()).expect("parse"), m);
        // A version-1 document as first written (no optional fields, an unknown extra field).
        let v1 = br#"{"format_version":1,"id":"snap_001","user":"u_123","created":"2025-01-02T03:04:05.678Z",
            "trigger":"pre_restore","archive_bytes":10,"unpacked_bytes":20,"file_count":3,
            "sha256":"00","backend":"ns","future_field":true}"#;
        let m = Manifest::from_json(v1).expect("v1");
        assert_eq!(m.trigger, Trigger::PreRestore);
        assert!(!m.pinned && m.parent.is_none());
        let json = String::from_utf8(sample().to_json()).expect("utf8");
        assert!(json.contains("\"created\": \"2025-01-02T03:04:05.678Z\""), "{json}");
        assert!(json.contains("\"trigger\": \"pre_restore\""), "{json}");
    }

    #[test]
    fn refuses_newer_and_broken() {
        let e = Manifest::from_json(br#"{"format_version":99}"#).expect_err("newer");
        assert!(e.to_string().contains("newer warren"), "{e}");
        assert!(Manifest::from_json(b"{").is_err());
        assert!(Manifest::from_json(br#"{"format_version":1,"id":"../x"}"#).is_err());
    }
}
