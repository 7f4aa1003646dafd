//! The error every warren library returns across a crate boundary.
//!
//! Variants are *kinds* a caller can act on (bad input, missing, conflicting state, ...); the
//! server maps each kind to one HTTP status in one place. Messages say what failed and what to do.

use std::io;

/// Result alias for warren operations.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What went wrong, by kind.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An id (user, workspace, snapshot) broke its rule.
    #[error("invalid {kind} {value:?}: {rule}")]
    InvalidId {
        /// Which kind of id ("user id", "snapshot id", ...).
        kind: &'static str,
        /// The rejected value, as given.
        value: String,
        /// The rule it broke, in words.
        rule: &'static str,
    },
    /// A path inside a workspace was malformed or tried to leave the workspace.
    #[error("invalid path {path:?}: {reason}")]
    InvalidPath {
        /// The rejected path, as given (lossy for non-UTF-8).
        path: String,
        /// Why it was rejected.
        reason: String,
    },
    /// A request was well-formed but not acceptable (bad argument, bad limit, ...).
    #[error("invalid request: {0}")]
    InvalidRequest(String),
    /// The named thing does not exist.
    #[error("{0} not found")]
    NotFound(String),
    /// The named thing exists already.
    #[error("{0} already exists")]
    AlreadyExists(String),
    /// The operation does not fit the current state (e.g. exec in a stopped workspace).
    #[error("{0}")]
    Conflict(String),
    /// This backend or host cannot do it.
    #[error("unsupported: {0}")]
    Unsupported(String),
    /// A capacity is used up: a workspace's disk quota, the container pool.
    #[error("{0}")]
    Exhausted(String),
    /// A deadline passed.
    #[error("timed out: {0}")]
    Timeout(String),
    /// An I/O error, with what was being done.
    #[error("{what}: {source}")]
    Io {
        /// What warren was doing.
        what: String,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// The backend, store or host failed in a way the caller cannot fix by changing the request.
    #[error("{0}")]
    Internal(String),
}

impl Error {
    /// Wraps an I/O error with a description of what was being done.
    pub fn io(what: impl Into<String>, source: io::Error) -> Self {
        Error::Io { what: what.into(), source }
    }

    /// Wraps an errno from `nix` with a description of what was being done.
    pub fn errno(what: impl Into<String>, errno: nix::errno::Errno) -> Self {
        Error::Io { what: what.into(), source: io::Error::from(errno) }
    }

    /// A stable machine-readable code for this error's kind (used in API error bodies).
    pub fn code(&self) -> &'static str {
        match self {
            Error::InvalidId { .. } => "invalid_id",
            Error::InvalidPath { .. } => "invalid_path",
            Error::InvalidRequest(_) => "invalid_request",
            Error::NotFound(_) => "not_found",
            Error::AlreadyExists(_) => "already_exists",
            Error::Conflict(_) => "conflict",
            Error::Unsupported(_) => "unsupported",
            Error::Exhausted(_) => "exhausted",
            Error::Timeout(_) => "timeout",
            Error::Io { source, .. } if source.kind() == io::ErrorKind::NotFound => "not_found",
            Error::Io { .. } => "io",
            Error::Internal(_) => "internal",
        }
    }
}
