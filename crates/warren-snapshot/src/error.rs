//! Errors of this crate: the shared [`warren_core::Error`] kinds, plus two that callers (and
//! tests) want to tell apart: an archive *rejected* as unsafe, and an archive that is *corrupt*.

use std::fmt;

/// Result alias for snapshot operations.
pub type Result<T, E = SnapshotError> = std::result::Result<T, E>;

/// What went wrong with a snapshot operation.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    /// An archive entry was refused by the hostile-archive defences. Nothing was written outside
    /// the staging directory, and the staging directory has been removed.
    #[error(
        "snapshot archive rejected at entry {entry:?}: {reason}; the archive is unsafe or was not made by warren, \
         nothing was restored"
    )]
    Rejected {
        /// The entry's path as it appears in the archive (lossy UTF-8).
        entry: String,
        /// Why it was refused.
        reason: Rejection,
    },
    /// The archive cannot be read: not zstd, not tar, truncated, or damaged inside.
    #[error("snapshot archive is corrupt: {0}; restore another snapshot or re-export this one")]
    Corrupt(String),
    /// A stored archive does not match its manifest (size or SHA-256): it was damaged or replaced
    /// after it was written.
    #[error(
        "snapshot archive {key} does not match its manifest: expected {expected}, found {actual}; \
         the stored copy is damaged, restore another snapshot"
    )]
    ChecksumMismatch {
        /// The archive's storage key.
        key: String,
        /// What the manifest says (size and SHA-256).
        expected: String,
        /// What was read.
        actual: String,
    },
    /// Any other failure, by kind.
    #[error(transparent)]
    Core(#[from] warren_core::Error),
}

impl SnapshotError {
    /// The rejection reason, if this is a rejected archive.
    pub fn rejection(&self) -> Option<&Rejection> {
        match self {
            SnapshotError::Rejected { reason, .. } => Some(reason),
            _ => None,
        }
    }

    pub(crate) fn io(what: impl Into<String>, source: std::io::Error) -> Self {
        SnapshotError::Core(warren_core::Error::io(what, source))
    }

    pub(crate) fn errno(what: impl Into<String>, errno: nix::errno::Errno) -> Self {
        SnapshotError::Core(warren_core::Error::errno(what, errno))
    }

    pub(crate) fn internal(msg: impl Into<String>) -> Self {
        SnapshotError::Core(warren_core::Error::Internal(msg.into()))
    }

    pub(crate) fn rejected(entry: &[u8], reason: Rejection) -> Self {
        SnapshotError::Rejected { entry: String::from_utf8_lossy(entry).into_owned(), reason }
    }
}

impl From<SnapshotError> for warren_core::Error {
    /// Rejected and corrupt archives are [`warren_core::Error::InvalidRequest`] (the archive given
    /// is unusable); a stored archive that no longer matches its manifest is
    /// [`warren_core::Error::Internal`] (the store was damaged).
    fn from(e: SnapshotError) -> Self {
        match e {
            SnapshotError::Core(c) => c,
            e @ (SnapshotError::Rejected { .. } | SnapshotError::Corrupt(_)) => {
                warren_core::Error::InvalidRequest(e.to_string())
            }
            e @ SnapshotError::ChecksumMismatch { .. } => warren_core::Error::Internal(e.to_string()),
        }
    }
}

/// Why an archive entry was refused.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Rejection {
    /// A `..` component: the entry would land outside the workspace.
    PathTraversal,
    /// An absolute path.
    AbsolutePath,
    /// An empty name, or a name with a NUL byte.
    BadName,
    /// A name that is not UTF-8 (warren keeps names UTF-8 end to end; see the crate docs).
    NonUtf8Name,
    /// A path component longer than 255 bytes.
    NameTooLong {
        /// Its length in bytes.
        len: usize,
    },
    /// A path longer than 4096 bytes.
    PathTooLong {
        /// Its length in bytes.
        len: usize,
    },
    /// More nested directories than allowed.
    TooDeep {
        /// The entry's depth.
        depth: usize,
        /// The limit.
        max: usize,
    },
    /// A parent of the entry is a symlink: writing through it could leave the workspace.
    ThroughSymlink,
    /// A parent of the entry is not a directory.
    ParentNotDirectory,
    /// The entry's path was already used by an earlier entry.
    Duplicate,
    /// A hard link (warren never writes them; see the crate docs).
    Hardlink,
    /// A character or block device node.
    DeviceNode,
    /// A FIFO (named pipe).
    Fifo,
    /// A setuid or setgid bit.
    SetuidSetgid {
        /// The mode as given.
        mode: u32,
    },
    /// An entry type warren does not restore (tar type flag byte).
    UnsupportedType(u8),
    /// A tar feature warren does not restore (PAX sparse files, ...).
    UnsupportedFormat(&'static str),
    /// A symlink whose target is empty, too long, or not UTF-8.
    BadSymlinkTarget,
    /// More entries than allowed.
    TooManyEntries {
        /// The limit.
        max: u64,
    },
    /// The declared unpacked size passes the byte cap (decompression bomb).
    TooLarge {
        /// Bytes declared so far, this entry included.
        declared: u64,
        /// The cap.
        cap: u64,
    },
    /// Per-entry metadata (long names, PAX headers) larger than allowed.
    MetadataTooLarge {
        /// The limit in bytes.
        max: u64,
    },
    /// The archive's root (`.`) is given as something other than a directory.
    RootNotDirectory,
}

impl fmt::Display for Rejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Rejection::PathTraversal => f.write_str("path contains '..', which would leave the workspace"),
            Rejection::AbsolutePath => f.write_str("absolute path; archive paths must be relative"),
            Rejection::BadName => f.write_str("empty name or a name containing a NUL byte"),
            Rejection::NonUtf8Name => f.write_str("name is not valid UTF-8"),
            Rejection::NameTooLong { len } => write!(f, "a path component is {len} bytes, more than 255"),
            Rejection::PathTooLong { len } => write!(f, "path is {len} bytes, more than 4096"),
            Rejection::TooDeep { depth, max } => write!(f, "path is {depth} levels deep, more than the limit of {max}"),
            Rejection::ThroughSymlink => {
                f.write_str("a parent directory is a symlink; writing through it could leave the workspace")
            }
            Rejection::ParentNotDirectory => f.write_str("a parent of this entry is not a directory"),
            Rejection::Duplicate => f.write_str("duplicate entry: this path was already in the archive"),
            Rejection::Hardlink => f.write_str("hard links are not restored"),
            Rejection::DeviceNode => f.write_str("device nodes are not restored"),
            Rejection::Fifo => f.write_str("FIFOs are not restored"),
            Rejection::SetuidSetgid { mode } => write!(f, "mode {mode:o} has a setuid or setgid bit"),
            Rejection::UnsupportedType(t) => write!(f, "unsupported tar entry type {:?}", char::from(*t)),
            Rejection::UnsupportedFormat(what) => write!(f, "unsupported tar feature: {what}"),
            Rejection::BadSymlinkTarget => f.write_str("symlink target is empty, longer than 4095 bytes or not UTF-8"),
            Rejection::TooManyEntries { max } => write!(f, "more than {max} entries"),
            Rejection::TooLarge { declared, cap } => write!(
                f,
                "declared unpacked size reaches {declared} bytes, more than the cap of {cap} bytes (raise the cap if the archive is trusted)"
            ),
            Rejection::MetadataTooLarge { max } => {
                write!(f, "entry metadata (long names, PAX headers) larger than {max} bytes")
            }
            Rejection::RootNotDirectory => f.write_str("the archive root '.' is not a directory"),
        }
    }
}
