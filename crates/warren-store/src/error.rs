//! The store's error enum and its conversion into [`warren_core::Error`].

use std::path::PathBuf;

use warren_core::UserId;

/// What went wrong in the state store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database file could not be opened or set up.
    #[error("opening the state database {}: {source}", path.display())]
    Open {
        /// The database file.
        path: PathBuf,
        /// The SQLite error.
        #[source]
        source: rusqlite::Error,
    },
    /// Preparing the database file (creating it, setting its permissions) failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The database was written by a newer warren.
    #[error(
        "the state database {} has schema version {found}, newer than version {known} that this warren knows: \
         upgrade warren (an older warren never writes data it cannot read back)",
        path.display()
    )]
    TooNew {
        /// The database file.
        path: PathBuf,
        /// The version found in the file.
        found: u32,
        /// The newest version this build knows.
        known: u32,
    },
    /// The file system does not support WAL journaling.
    #[error(
        "the state database {} refused WAL journaling (journal mode stays {mode}): \
         put the state directory on a local file system",
        path.display()
    )]
    NoWal {
        /// The database file.
        path: PathBuf,
        /// The journal mode SQLite kept.
        mode: String,
    },
    /// A SQLite statement failed.
    #[error("state database: {what}: {source}")]
    Sqlite {
        /// What was being done.
        what: String,
        /// The SQLite error.
        #[source]
        source: rusqlite::Error,
    },
    /// The user has a workspace already.
    #[error("workspace of user {0} already exists")]
    AlreadyExists(UserId),
    /// The user has no workspace.
    #[error("workspace of user {0}")]
    NotFound(UserId),
    /// Every uid of the configured range is taken.
    #[error(
        "no free uid left in {base}..{end} ({count} uids) for user {user}: raise uid_count or pick another uid_base",
        end = u64::from(*base) + u64::from(*count)
    )]
    UidRangeExhausted {
        /// The user asking.
        user: UserId,
        /// First uid of the range.
        base: u32,
        /// Size of the range.
        count: u32,
    },
    /// The uid range is unusable.
    #[error("invalid uid range: {0}")]
    InvalidRange(String),
    /// A caller broke the store's rules (a bug in the caller, not bad user input).
    #[error("state database: refused: {0}")]
    Invalid(String),
    /// A row could not be read back (hand-edited or damaged database).
    #[error("the state database holds an unreadable row: {0}")]
    Corrupt(String),
}

impl From<StoreError> for warren_core::Error {
    fn from(e: StoreError) -> Self {
        use warren_core::Error;
        match e {
            StoreError::AlreadyExists(user) => Error::AlreadyExists(format!("workspace of user {user}")),
            StoreError::NotFound(user) => Error::NotFound(format!("workspace of user {user}")),
            StoreError::InvalidRange(m) => Error::InvalidRequest(format!("invalid uid range: {m}")),
            StoreError::Io { what, source } => Error::Io { what, source },
            StoreError::Sqlite { ref source, .. } | StoreError::Open { ref source, .. } if is_busy(source) => {
                Error::Timeout(format!("{e} (another warren process holds the database; try again)"))
            }
            other => Error::Internal(other.to_string()),
        }
    }
}

fn is_busy(e: &rusqlite::Error) -> bool {
    matches!(e.sqlite_error_code(), Some(rusqlite::ErrorCode::DatabaseBusy) | Some(rusqlite::ErrorCode::DatabaseLocked))
}

/// Adds "what was being done" to a SQLite error.
pub(crate) trait Context<T> {
    fn ctx(self, what: &str) -> Result<T, StoreError>;
}

impl<T> Context<T> for Result<T, rusqlite::Error> {
    fn ctx(self, what: &str) -> Result<T, StoreError> {
        self.map_err(|source| StoreError::Sqlite { what: what.to_owned(), source })
    }
}
