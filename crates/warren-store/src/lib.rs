//! Warren's state store: one SQLite file, `{state}/warren.db`.
//!
//! | table | holds |
//! | --- | --- |
//! | `workspaces` | one row per user with a workspace: its id, uid, backend, desired state, limits |
//! | `uid_allocations` | each user's uid, kept forever, so a recreated workspace gets the same uid |
//! | `events` | the audit trail: every change, what it was and when |
//! | `workspace_activity` | per workspace: last use, whether it was suspended for idleness, the last daily snapshot slot (for the engine's automatic snapshots) |
//!
//! Durability: WAL journal with `synchronous=FULL`, so a committed change survives a crash or a
//! power cut, and every change (the row and its event) is one transaction, so a `kill -9` at any
//! point leaves either all of it or none of it. Several processes may open the same file; writers
//! wait for each other (`busy_timeout`).
//!
//! Format: the schema version is `PRAGMA user_version`. Migrations are numbered, applied in order
//! (each in its own transaction) when a store is opened, and only ever add: data written by an
//! older warren stays readable. A file with a version newer than this build knows is refused.

mod error;
mod time;

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use rusqlite::{params, Connection, OptionalExtension, Row, Transaction, TransactionBehavior};
use serde::{Deserialize, Serialize};
use warren_core::monitor::MonitorPolicy;
use warren_core::{BackendKind, Limits, UserId, WorkspaceId};

pub use error::StoreError;
pub use time::Timestamp;

use error::Context;

/// Result alias for store operations.
pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// The migrations, in order; migration `n` (1-based) brings the schema to version `n`.
/// Append only: never edit or reorder a released migration.
const MIGRATIONS: &[&str] = &[
    // 1: workspaces, uid allocations, events.
    "
    CREATE TABLE uid_allocations (
        user_id      TEXT    NOT NULL PRIMARY KEY,
        uid          INTEGER NOT NULL UNIQUE,
        allocated_at INTEGER NOT NULL,
        UNIQUE (user_id, uid)
    ) STRICT;

    CREATE TABLE workspaces (
        user_id       TEXT    NOT NULL PRIMARY KEY,
        workspace_id  TEXT    NOT NULL UNIQUE,
        uid           INTEGER NOT NULL UNIQUE,
        username      TEXT    NOT NULL,
        backend       TEXT    NOT NULL CHECK (backend IN ('ns', 'dir', 'docker')),
        desired_state TEXT    NOT NULL CHECK (desired_state IN ('stopped', 'running')),
        limits        TEXT    NOT NULL CHECK (json_valid(limits)),
        network       INTEGER NOT NULL CHECK (network IN (0, 1)),
        created_at    INTEGER NOT NULL,
        updated_at    INTEGER NOT NULL,
        FOREIGN KEY (user_id, uid) REFERENCES uid_allocations (user_id, uid)
    ) STRICT;

    CREATE TABLE events (
        id           INTEGER PRIMARY KEY AUTOINCREMENT,
        at           INTEGER NOT NULL,
        workspace_id TEXT,
        user_id      TEXT,
        kind         TEXT    NOT NULL,
        detail       TEXT    NOT NULL CHECK (json_valid(detail))
    ) STRICT;

    CREATE INDEX events_by_user ON events (user_id, id);
    ",
    // 2: activity of workspaces, for idle suspension and daily snapshots.
    "
    CREATE TABLE workspace_activity (
        user_id       TEXT    NOT NULL PRIMARY KEY REFERENCES workspaces (user_id) ON DELETE CASCADE,
        last_activity INTEGER,
        suspended     INTEGER NOT NULL DEFAULT 0 CHECK (suspended IN (0, 1)),
        last_daily    INTEGER
    ) STRICT;
    ",
    // 3: a workspace's own resource-monitor policy (absent: the configured default).
    "
    CREATE TABLE workspace_policy (
        user_id TEXT NOT NULL PRIMARY KEY REFERENCES workspaces (user_id) ON DELETE CASCADE,
        policy  TEXT NOT NULL
    ) STRICT;
    ",
    // 4: the `pool` backend (SQLite cannot change a CHECK in place: rebuild the table; foreign
    // keys are off while migrating, so the rows that refer to it stay).
    "
    CREATE TABLE workspaces_v4 (
        user_id       TEXT    NOT NULL PRIMARY KEY,
        workspace_id  TEXT    NOT NULL UNIQUE,
        uid           INTEGER NOT NULL UNIQUE,
        username      TEXT    NOT NULL,
        backend       TEXT    NOT NULL CHECK (backend IN ('ns', 'dir', 'docker', 'pool')),
        desired_state TEXT    NOT NULL CHECK (desired_state IN ('stopped', 'running')),
        limits        TEXT    NOT NULL CHECK (json_valid(limits)),
        network       INTEGER NOT NULL CHECK (network IN (0, 1)),
        created_at    INTEGER NOT NULL,
        updated_at    INTEGER NOT NULL,
        FOREIGN KEY (user_id, uid) REFERENCES uid_allocations (user_id, uid)
    ) STRICT;
    INSERT INTO workspaces_v4 SELECT * FROM workspaces;
    DROP TABLE workspaces;
    ALTER TABLE workspaces_v4 RENAME TO workspaces;
    ",
    // 5: a workspace's own image (NULL: the configured default).
    "
    ALTER TABLE workspaces ADD COLUMN image TEXT CHECK (image IS NULL OR length(image) BETWEEN 1 AND 200);
    ",
];

/// The schema version this build writes (and the newest it reads).
pub const SCHEMA_VERSION: u32 = MIGRATIONS.len() as u32;

/// How long a writer waits for another process's transaction before giving up.
const BUSY_TIMEOUT: Duration = Duration::from_secs(30);

/// The state a workspace should be in, as last asked for. What it *is* in is the host's business
/// (the backend's `status`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DesiredState {
    /// Files exist, nothing should run.
    Stopped,
    /// It should be running.
    Running,
}

impl DesiredState {
    /// The stored spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            DesiredState::Stopped => "stopped",
            DesiredState::Running => "running",
        }
    }
}

impl fmt::Display for DesiredState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for DesiredState {
    type Err = StoreError;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "stopped" => Ok(Self::Stopped),
            "running" => Ok(Self::Running),
            other => Err(StoreError::Corrupt(format!("desired state {other:?} is neither 'stopped' nor 'running'"))),
        }
    }
}

/// A stored workspace.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct WorkspaceRecord {
    /// Its owner (one workspace per user).
    pub user: UserId,
    /// The workspace's id.
    pub workspace_id: WorkspaceId,
    /// Host uid (and gid) of the workspace; must be the user's allocation.
    pub uid: u32,
    /// Linux account name inside the workspace.
    pub username: String,
    /// The backend that holds it (never `auto`).
    pub backend: BackendKind,
    /// The state last asked for.
    pub desired_state: DesiredState,
    /// Resource limits.
    pub limits: Limits,
    /// Network beyond loopback.
    pub network: bool,
    /// Its own image (`None`: the configured default).
    pub image: Option<String>,
    /// When it was created.
    pub created_at: Timestamp,
    /// When the row last changed.
    pub updated_at: Timestamp,
}

/// An event to record with a change.
#[derive(Clone, Debug, PartialEq)]
pub struct NewEvent {
    /// What happened (`create`, `start`, `reconcile`, ...).
    pub kind: String,
    /// Details, as JSON.
    pub detail: serde_json::Value,
}

impl NewEvent {
    /// An event of `kind` with `detail`.
    pub fn new(kind: impl Into<String>, detail: serde_json::Value) -> Self {
        Self { kind: kind.into(), detail }
    }
}

/// A recorded event of the audit trail.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Event {
    /// Sequence number (increasing).
    pub id: i64,
    /// When.
    pub at: Timestamp,
    /// The workspace concerned, if any.
    pub workspace_id: Option<WorkspaceId>,
    /// The user concerned, if any.
    pub user: Option<UserId>,
    /// What happened.
    pub kind: String,
    /// Details.
    pub detail: serde_json::Value,
}

/// What the engine remembers about a workspace's use (see [`Store::activity`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Activity {
    /// The last time someone used it (exec, file access), as recorded.
    pub last_activity: Option<Timestamp>,
    /// It was stopped for idleness and resumes on its next use.
    pub suspended: bool,
    /// The daily-snapshot slot last handled for it.
    pub last_daily: Option<Timestamp>,
}

/// The state store. Cheap to share behind an `Arc`; calls are serialised on one connection and
/// across processes by SQLite's locking.
#[derive(Debug)]
pub struct Store {
    conn: Mutex<Connection>,
    path: PathBuf,
}

impl Store {
    /// Opens (creating if needed) the database at `path` and brings its schema up to date.
    ///
    /// A new file is created with mode 0600: workspace processes run as other uids on the host
    /// and must not read it.
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref().to_owned();
        create_private(&path)?;
        let open_err = |source| StoreError::Open { path: path.clone(), source };
        let mut conn = Connection::open(&path).map_err(open_err)?;
        conn.busy_timeout(BUSY_TIMEOUT).map_err(open_err)?;
        set_wal(&conn, &path)?;
        conn.pragma_update(None, "synchronous", "FULL").map_err(open_err)?;
        // Off while migrating: a migration that rebuilds a table must not cascade its drop.
        conn.pragma_update(None, "foreign_keys", false).map_err(open_err)?;
        migrate(&mut conn, &path)?;
        conn.pragma_update(None, "foreign_keys", true).map_err(open_err)?;
        tracing::debug!(path = %path.display(), version = SCHEMA_VERSION, "state store open");
        Ok(Self { conn: Mutex::new(conn), path })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn conn(&self) -> MutexGuard<'_, Connection> {
        // A panic while holding the lock leaves the connection usable: an open transaction was
        // rolled back when its guard dropped.
        self.conn.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The schema version of the file (`PRAGMA user_version`).
    pub fn schema_version(&self) -> Result<u32> {
        self.conn().query_row("PRAGMA user_version", [], |r| r.get(0)).ctx("reading the schema version")
    }

    /// Checks the file's integrity and its foreign keys; `Err` says what is wrong.
    pub fn integrity_check(&self) -> Result<()> {
        let conn = self.conn();
        let mut st = conn.prepare("PRAGMA integrity_check").ctx("checking integrity")?;
        let rows: Vec<String> = st
            .query_map([], |r| r.get(0))
            .ctx("checking integrity")?
            .collect::<Result<_, _>>()
            .ctx("checking integrity")?;
        if rows != ["ok"] {
            return Err(StoreError::Corrupt(format!("integrity check: {}", rows.join("; "))));
        }
        let mut st = conn.prepare("PRAGMA foreign_key_check").ctx("checking foreign keys")?;
        let bad: Vec<String> = st
            .query_map([], |r| r.get::<_, String>(0))
            .ctx("checking foreign keys")?
            .collect::<Result<_, _>>()
            .ctx("checking foreign keys")?;
        if !bad.is_empty() {
            return Err(StoreError::Corrupt(format!("foreign key violations in {}", bad.join(", "))));
        }
        Ok(())
    }

    /// The user's uid: the existing allocation if there is one, else a new one in
    /// `base .. base + count`, starting at `base + stable_hash(user) % count` and probing upwards
    /// (wrapping) past uids taken by other users. Allocations are never released, so the answer
    /// for a user never changes once given, and given the same store it is deterministic.
    pub fn allocate_uid(&self, user: &UserId, base: u32, count: u32) -> Result<u32> {
        check_range(base, count)?;
        let mut conn = self.conn();
        let tx = immediate(&mut conn)?;
        let existing: Option<u32> = tx
            .query_row("SELECT uid FROM uid_allocations WHERE user_id = ?1", [user.as_str()], |r| r.get(0))
            .optional()
            .ctx("looking up a uid allocation")?;
        if let Some(uid) = existing {
            if u64::from(uid) < u64::from(base) || u64::from(uid) >= u64::from(base) + u64::from(count) {
                tracing::warn!(user = %user, uid, base, count, "the user's uid lies outside the configured range; keeping it");
            }
            return Ok(uid);
        }
        let start = user.stable_hash() % u64::from(count);
        let mut taken = tx.prepare("SELECT 1 FROM uid_allocations WHERE uid = ?1").ctx("preparing uid probe")?;
        let mut found = None;
        for i in 0..u64::from(count) {
            let cand = u64::from(base) + (start + i) % u64::from(count);
            let uid = u32::try_from(cand).map_err(|_| StoreError::InvalidRange(format!("uid {cand} overflows")))?;
            if !taken.exists([uid]).ctx("probing a uid")? {
                found = Some((uid, i));
                break;
            }
        }
        drop(taken);
        let Some((uid, probes)) = found else {
            return Err(StoreError::UidRangeExhausted { user: user.clone(), base, count });
        };
        let now = Timestamp::now().as_millis();
        tx.execute(
            "INSERT INTO uid_allocations (user_id, uid, allocated_at) VALUES (?1, ?2, ?3)",
            params![user.as_str(), uid, now],
        )
        .ctx("recording a uid allocation")?;
        insert_event(
            &tx,
            Some(user),
            None,
            &NewEvent::new("uid_allocated", serde_json::json!({ "uid": uid, "probes": probes })),
        )?;
        tx.commit().ctx("committing a uid allocation")?;
        tracing::debug!(user = %user, uid, "allocated uid");
        Ok(uid)
    }

    /// The user's uid allocation, if any.
    pub fn uid_of(&self, user: &UserId) -> Result<Option<u32>> {
        self.conn()
            .query_row("SELECT uid FROM uid_allocations WHERE user_id = ?1", [user.as_str()], |r| r.get(0))
            .optional()
            .ctx("looking up a uid allocation")
    }

    /// Inserts a workspace and records `event` for it, in one transaction. The uid must be the
    /// user's allocation ([`Store::allocate_uid`]).
    pub fn insert_workspace(&self, rec: &WorkspaceRecord, event: &NewEvent) -> Result<()> {
        if rec.backend == BackendKind::Auto {
            return Err(StoreError::Invalid("a workspace's backend must be resolved, not 'auto'".into()));
        }
        let limits = serde_json::to_string(&rec.limits).map_err(|e| StoreError::Corrupt(format!("limits: {e}")))?;
        let mut conn = self.conn();
        let tx = immediate(&mut conn)?;
        let exists = tx
            .prepare_cached("SELECT 1 FROM workspaces WHERE user_id = ?1")
            .and_then(|mut s| s.exists([rec.user.as_str()]))
            .ctx("looking up a workspace")?;
        if exists {
            return Err(StoreError::AlreadyExists(rec.user.clone()));
        }
        match tx.query_row("SELECT uid FROM uid_allocations WHERE user_id = ?1", [rec.user.as_str()], |r| {
            r.get::<_, u32>(0)
        }) {
            Ok(uid) if uid == rec.uid => {}
            Ok(uid) => {
                return Err(StoreError::Invalid(format!(
                    "workspace of user {} given uid {} but the user's allocation is {uid}",
                    rec.user, rec.uid
                )))
            }
            Err(rusqlite::Error::QueryReturnedNoRows) => {
                return Err(StoreError::Invalid(format!("user {} has no uid allocation: allocate one first", rec.user)))
            }
            Err(e) => return Err(e).ctx("looking up a uid allocation"),
        }
        tx.execute(
            "INSERT INTO workspaces (user_id, workspace_id, uid, username, backend, desired_state, limits, network,
                                     created_at, updated_at, image)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
            params![
                rec.user.as_str(),
                rec.workspace_id.as_str(),
                rec.uid,
                rec.username,
                rec.backend.as_str(),
                rec.desired_state.as_str(),
                limits,
                rec.network,
                rec.created_at.as_millis(),
                rec.updated_at.as_millis(),
                rec.image,
            ],
        )
        .ctx("inserting a workspace")?;
        insert_event(&tx, Some(&rec.user), Some(&rec.workspace_id), event)?;
        tx.commit().ctx("committing a new workspace")
    }

    /// The user's workspace, if any.
    pub fn get_workspace(&self, user: &UserId) -> Result<Option<WorkspaceRecord>> {
        let conn = self.conn();
        get(&conn, user)
    }

    /// Every workspace, ordered by user id.
    pub fn list_workspaces(&self) -> Result<Vec<WorkspaceRecord>> {
        let conn = self.conn();
        let mut st = conn.prepare(&format!("{SELECT_WORKSPACE} ORDER BY user_id")).ctx("listing workspaces")?;
        let rows = st.query_map([], raw_row).ctx("listing workspaces")?;
        rows.map(|r| r.ctx("listing workspaces").and_then(RawRecord::parse)).collect()
    }

    /// Sets the workspace's desired state and records `event`, in one transaction; returns the
    /// updated record.
    pub fn set_desired_state(&self, user: &UserId, state: DesiredState, event: &NewEvent) -> Result<WorkspaceRecord> {
        let mut conn = self.conn();
        let tx = immediate(&mut conn)?;
        let n = tx
            .execute(
                "UPDATE workspaces SET desired_state = ?2, updated_at = ?3 WHERE user_id = ?1",
                params![user.as_str(), state.as_str(), Timestamp::now().as_millis()],
            )
            .ctx("updating a workspace's state")?;
        if n == 0 {
            return Err(StoreError::NotFound(user.clone()));
        }
        let rec = get(&tx, user)?.ok_or_else(|| StoreError::NotFound(user.clone()))?;
        insert_event(&tx, Some(user), Some(&rec.workspace_id), event)?;
        tx.commit().ctx("committing a state change")?;
        Ok(rec)
    }

    /// Deletes the user's workspace and records `event`, in one transaction; returns what was
    /// deleted. The uid allocation stays.
    pub fn delete_workspace(&self, user: &UserId, event: &NewEvent) -> Result<WorkspaceRecord> {
        let mut conn = self.conn();
        let tx = immediate(&mut conn)?;
        let rec = get(&tx, user)?.ok_or_else(|| StoreError::NotFound(user.clone()))?;
        tx.execute("DELETE FROM workspaces WHERE user_id = ?1", [user.as_str()]).ctx("deleting a workspace")?;
        insert_event(&tx, Some(user), Some(&rec.workspace_id), event)?;
        tx.commit().ctx("committing a deletion")?;
        Ok(rec)
    }

    /// Records that the user's workspace was used at `at` (kept if a later time is stored).
    /// Does nothing if the user has no workspace.
    pub fn touch_activity(&self, user: &UserId, at: Timestamp) -> Result<()> {
        self.conn()
            .execute(
                "INSERT INTO workspace_activity (user_id, last_activity)
                 SELECT user_id, ?2 FROM workspaces WHERE user_id = ?1
                 ON CONFLICT (user_id) DO UPDATE
                     SET last_activity = max(coalesce(last_activity, 0), excluded.last_activity)",
                params![user.as_str(), at.as_millis()],
            )
            .ctx("recording workspace activity")?;
        Ok(())
    }

    /// Marks the user's workspace as suspended for idleness (or not), recording `event` with
    /// the change in one transaction when given. Does nothing if the user has no workspace.
    pub fn set_suspended(&self, user: &UserId, suspended: bool, event: Option<&NewEvent>) -> Result<()> {
        let mut conn = self.conn();
        let tx = immediate(&mut conn)?;
        tx.execute(
            "INSERT INTO workspace_activity (user_id, suspended)
             SELECT user_id, ?2 FROM workspaces WHERE user_id = ?1
             ON CONFLICT (user_id) DO UPDATE SET suspended = excluded.suspended",
            params![user.as_str(), suspended],
        )
        .ctx("recording a suspension")?;
        if let Some(event) = event {
            let ws = get(&tx, user)?.map(|r| r.workspace_id);
            insert_event(&tx, Some(user), ws.as_ref(), event)?;
        }
        tx.commit().ctx("committing a suspension")
    }

    /// Records the daily-snapshot slot last handled for the user's workspace.
    pub fn set_last_daily(&self, user: &UserId, slot: Timestamp) -> Result<()> {
        self.conn()
            .execute(
                "INSERT INTO workspace_activity (user_id, last_daily)
                 SELECT user_id, ?2 FROM workspaces WHERE user_id = ?1
                 ON CONFLICT (user_id) DO UPDATE SET last_daily = excluded.last_daily",
                params![user.as_str(), slot.as_millis()],
            )
            .ctx("recording a daily snapshot")?;
        Ok(())
    }

    /// What is recorded about the use of the user's workspace (all empty if nothing is).
    pub fn activity(&self, user: &UserId) -> Result<Activity> {
        self.conn()
            .query_row(
                "SELECT last_activity, suspended, last_daily FROM workspace_activity WHERE user_id = ?1",
                [user.as_str()],
                activity_row,
            )
            .optional()
            .ctx("reading workspace activity")
            .map(Option::unwrap_or_default)
    }

    /// Sets the user's workspace's own monitor policy (`None`: back to the configured default),
    /// recording `event` with it in one transaction. `NotFound` if the user has no workspace.
    pub fn set_policy(&self, user: &UserId, policy: Option<&MonitorPolicy>, event: &NewEvent) -> Result<()> {
        let mut conn = self.conn();
        let tx = immediate(&mut conn)?;
        let ws = get(&tx, user)?.ok_or_else(|| StoreError::NotFound(user.clone()))?.workspace_id;
        match policy {
            Some(p) => {
                let text = serde_json::to_string(p).map_err(|e| StoreError::Corrupt(format!("policy: {e}")))?;
                tx.execute(
                    "INSERT INTO workspace_policy (user_id, policy) VALUES (?1, ?2)
                     ON CONFLICT (user_id) DO UPDATE SET policy = excluded.policy",
                    params![user.as_str(), text],
                )
                .ctx("storing a monitor policy")?;
            }
            None => {
                tx.execute("DELETE FROM workspace_policy WHERE user_id = ?1", [user.as_str()])
                    .ctx("removing a monitor policy")?;
            }
        }
        insert_event(&tx, Some(user), Some(&ws), event)?;
        tx.commit().ctx("committing a monitor policy")
    }

    /// The user's workspace's own monitor policy, if it has one.
    pub fn policy(&self, user: &UserId) -> Result<Option<MonitorPolicy>> {
        let text: Option<String> = self
            .conn()
            .query_row("SELECT policy FROM workspace_policy WHERE user_id = ?1", [user.as_str()], |r| r.get(0))
            .optional()
            .ctx("reading a monitor policy")?;
        text.map(|t| {
            serde_json::from_str(&t).map_err(|e| StoreError::Corrupt(format!("monitor policy of {user}: {e}")))
        })
        .transpose()
    }

    /// Records an event on its own; returns its id.
    pub fn record_event(
        &self,
        user: Option<&UserId>,
        workspace: Option<&WorkspaceId>,
        event: &NewEvent,
    ) -> Result<i64> {
        let mut conn = self.conn();
        let tx = immediate(&mut conn)?;
        let id = insert_event(&tx, user, workspace, event)?;
        tx.commit().ctx("committing an event")?;
        Ok(id)
    }

    /// The last `limit` events (of `user` if given), oldest first.
    pub fn events(&self, user: Option<&UserId>, limit: usize) -> Result<Vec<Event>> {
        let conn = self.conn();
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let mut st = conn
            .prepare(
                "SELECT id, at, workspace_id, user_id, kind, detail FROM (
                     SELECT * FROM events WHERE ?1 IS NULL OR user_id = ?1 ORDER BY id DESC LIMIT ?2
                 ) ORDER BY id",
            )
            .ctx("reading events")?;
        let rows = st
            .query_map(params![user.map(UserId::as_str), limit], |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    r.get::<_, i64>(1)?,
                    r.get::<_, Option<String>>(2)?,
                    r.get::<_, Option<String>>(3)?,
                    r.get::<_, String>(4)?,
                    r.get::<_, String>(5)?,
                ))
            })
            .ctx("reading events")?;
        rows.map(|r| {
            let (id, at, ws, user, kind, detail) = r.ctx("reading events")?;
            Ok(Event {
                id,
                at: Timestamp::from_millis(at),
                workspace_id: ws.map(|w| WorkspaceId::new(w).map_err(corrupt)).transpose()?,
                user: user.map(|u| UserId::new(u).map_err(corrupt)).transpose()?,
                kind,
                detail: serde_json::from_str(&detail).map_err(|e| StoreError::Corrupt(format!("event {id}: {e}")))?,
            })
        })
        .collect()
    }
}

/// Creates the database file with mode 0600 if it does not exist (SQLite gives the `-wal` and
/// `-shm` files the same mode).
fn create_private(path: &Path) -> Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    match std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(path) {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(source) => Err(StoreError::Io { what: format!("creating the state database {}", path.display()), source }),
    }
}

/// Switches to WAL. On a brand-new file two processes may race to do it; the loser can get
/// `SQLITE_BUSY` without the busy handler being consulted, so retry for a while.
fn set_wal(conn: &Connection, path: &Path) -> Result<()> {
    let mut tries = 0;
    loop {
        match conn.pragma_update_and_check(None, "journal_mode", "WAL", |r| r.get::<_, String>(0)) {
            Ok(mode) if mode.eq_ignore_ascii_case("wal") => return Ok(()),
            Ok(mode) => return Err(StoreError::NoWal { path: path.to_owned(), mode }),
            Err(e)
                if tries < 300
                    && matches!(
                        e.sqlite_error_code(),
                        Some(rusqlite::ErrorCode::DatabaseBusy) | Some(rusqlite::ErrorCode::DatabaseLocked)
                    ) =>
            {
                tries += 1;
                std::thread::sleep(Duration::from_millis(10));
            }
            Err(source) => return Err(StoreError::Open { path: path.to_owned(), source }),
        }
    }
}

fn migrate(conn: &mut Connection, path: &Path) -> Result<()> {
    let version = |c: &Connection| -> Result<u32> {
        c.query_row("PRAGMA user_version", [], |r| r.get(0)).ctx("reading the schema version")
    };
    let found = version(conn)?;
    if found > SCHEMA_VERSION {
        return Err(StoreError::TooNew { path: path.to_owned(), found, known: SCHEMA_VERSION });
    }
    if found == SCHEMA_VERSION {
        return Ok(());
    }
    for (i, sql) in MIGRATIONS.iter().enumerate() {
        let target = u32::try_from(i + 1).unwrap_or(u32::MAX);
        let tx = immediate(conn)?;
        // Another process may have migrated while this one waited for the write lock.
        let now = version(&tx)?;
        if now > SCHEMA_VERSION {
            return Err(StoreError::TooNew { path: path.to_owned(), found: now, known: SCHEMA_VERSION });
        }
        if now >= target {
            continue;
        }
        tx.execute_batch(sql).ctx(&format!("applying schema migration {target}"))?;
        let broken: Option<String> = tx
            .query_row("PRAGMA foreign_key_check", [], |r| r.get(0))
            .optional()
            .ctx("checking foreign keys after a migration")?;
        if let Some(table) = broken {
            return Err(StoreError::Corrupt(format!(
                "schema migration {target} would leave rows of table {table} without their parent; nothing was changed"
            )));
        }
        tx.pragma_update(None, "user_version", target).ctx("setting the schema version")?;
        tx.commit().ctx(&format!("committing schema migration {target}"))?;
        tracing::info!(path = %path.display(), version = target, "migrated state database");
    }
    Ok(())
}

fn immediate(conn: &mut Connection) -> Result<Transaction<'_>> {
    conn.transaction_with_behavior(TransactionBehavior::Immediate).ctx("starting a write transaction")
}

fn check_range(base: u32, count: u32) -> Result<()> {
    if base == 0 {
        return Err(StoreError::InvalidRange("uid_base must not be 0: uid 0 is root".into()));
    }
    if count == 0 {
        return Err(StoreError::InvalidRange("uid_count must be at least 1".into()));
    }
    // u32::MAX is (uid_t)-1, "no uid" to the kernel.
    if u64::from(base) + u64::from(count) > u64::from(u32::MAX) {
        return Err(StoreError::InvalidRange(format!(
            "uid_base {base} + uid_count {count} passes the largest uid {}",
            u32::MAX - 1
        )));
    }
    Ok(())
}

fn insert_event(
    tx: &Transaction<'_>,
    user: Option<&UserId>,
    workspace: Option<&WorkspaceId>,
    event: &NewEvent,
) -> Result<i64> {
    tx.execute(
        "INSERT INTO events (at, workspace_id, user_id, kind, detail) VALUES (?1, ?2, ?3, ?4, ?5)",
        params![
            Timestamp::now().as_millis(),
            workspace.map(WorkspaceId::as_str),
            user.map(UserId::as_str),
            event.kind,
            event.detail.to_string(),
        ],
    )
    .ctx("recording an event")?;
    Ok(tx.last_insert_rowid())
}

const SELECT_WORKSPACE: &str = "SELECT user_id, workspace_id, uid, username, backend, desired_state, limits, network,
                                       created_at, updated_at, image
                                FROM workspaces";

struct RawRecord {
    user: String,
    workspace_id: String,
    uid: u32,
    username: String,
    backend: String,
    desired_state: String,
    limits: String,
    network: bool,
    created_at: i64,
    updated_at: i64,
    image: Option<String>,
}

fn raw_row(r: &Row<'_>) -> rusqlite::Result<RawRecord> {
    Ok(RawRecord {
        user: r.get(0)?,
        workspace_id: r.get(1)?,
        uid: r.get(2)?,
        username: r.get(3)?,
        backend: r.get(4)?,
        desired_state: r.get(5)?,
        limits: r.get(6)?,
        network: r.get(7)?,
        created_at: r.get(8)?,
        updated_at: r.get(9)?,
        image: r.get(10)?,
    })
}

fn activity_row(r: &Row<'_>) -> rusqlite::Result<Activity> {
    Ok(Activity {
        last_activity: r.get::<_, Option<i64>>(0)?.map(Timestamp::from_millis),
        suspended: r.get(1)?,
        last_daily: r.get::<_, Option<i64>>(2)?.map(Timestamp::from_millis),
    })
}

fn corrupt(e: warren_core::Error) -> StoreError {
    StoreError::Corrupt(e.to_string())
}

impl RawRecord {
    fn parse(self) -> Result<WorkspaceRecord> {
        let user = UserId::new(self.user).map_err(corrupt)?;
        Ok(WorkspaceRecord {
            workspace_id: WorkspaceId::new(self.workspace_id).map_err(corrupt)?,
            uid: self.uid,
            username: self.username,
            backend: BackendKind::from_str(&self.backend).map_err(corrupt)?,
            desired_state: self.desired_state.parse()?,
            limits: serde_json::from_str(&self.limits)
                .map_err(|e| StoreError::Corrupt(format!("limits of the workspace of user {user}: {e}")))?,
            network: self.network,
            image: self.image,
            created_at: Timestamp::from_millis(self.created_at),
            updated_at: Timestamp::from_millis(self.updated_at),
            user,
        })
    }
}

fn get(conn: &Connection, user: &UserId) -> Result<Option<WorkspaceRecord>> {
    conn.prepare_cached(&format!("{SELECT_WORKSPACE} WHERE user_id = ?1"))
        .and_then(|mut st| st.query_row([user.as_str()], raw_row).optional())
        .ctx("looking up a workspace")?
        .map(RawRecord::parse)
        .transpose()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A version-3 database with a workspace, its activity and its policy migrates to the
    /// `pool`-capable schema without losing a row (the table rebuild must not cascade).
    #[test]
    fn migration_4_keeps_rows_that_refer_to_workspaces() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("old.db");
        {
            let conn = Connection::open(&path).expect("open");
            conn.pragma_update(None, "foreign_keys", true).expect("fk on");
            for sql in &MIGRATIONS[..3] {
                conn.execute_batch(sql).expect("old migration");
            }
            conn.pragma_update(None, "user_version", 3).expect("version 3");
            conn.execute_batch(
                "INSERT INTO uid_allocations VALUES ('u_old', 2000001, 1);
                 INSERT INTO workspaces VALUES ('u_old', 'ws_01JDQ8Y3H0XK4S3V7Q9B2C5D6E', 2000001, 'u_old', 'ns', 'running', '{}', 0, 1, 1);
                 INSERT INTO workspace_activity VALUES ('u_old', 5, 0, NULL);
                 INSERT INTO workspace_policy VALUES ('u_old', '{\"action\":\"stop\"}');",
            )
            .expect("old rows");
            conn.execute("INSERT INTO uid_allocations VALUES ('u_p', 2000002, 1)", []).expect("uid");
            let refused = conn.execute(
                "INSERT INTO workspaces VALUES ('u_p', 'ws_p', 2000002, 'u_p', 'pool', 'running', '{}', 0, 1, 1)",
                [],
            );
            assert!(refused.is_err(), "positive control: version 3 knows no pool backend");
        }
        let store = Store::open(&path).expect("migrate");
        assert_eq!(store.schema_version().expect("version"), SCHEMA_VERSION);
        // Migration 5: the old row reads back, with no image of its own.
        let old = store.get_workspace(&UserId::new("u_old").expect("id")).expect("read").expect("the old workspace");
        assert_eq!((old.backend, old.image), (BackendKind::Ns, None));
        let conn = store.conn();
        let count = |t: &str| conn.query_row(&format!("SELECT count(*) FROM {t}"), [], |r| r.get::<_, i64>(0));
        assert_eq!(count("workspaces").expect("count"), 1);
        assert_eq!(count("workspace_activity").expect("count"), 1, "activity survived the rebuild");
        assert_eq!(count("workspace_policy").expect("count"), 1, "the policy survived the rebuild");
        conn.execute_batch(
            "INSERT INTO uid_allocations VALUES ('u_pool', 2000003, 1);
             INSERT INTO workspaces VALUES ('u_pool', 'ws_pool', 2000003, 'u_pool', 'pool', 'stopped', '{}', 0, 1, 1, NULL);",
        )
        .expect("a pool workspace fits the new schema");
        // Foreign keys are on again: deleting a workspace still cascades.
        conn.execute("DELETE FROM workspaces WHERE user_id = 'u_old'", []).expect("delete");
        assert_eq!(count("workspace_policy").expect("count"), 0);
    }
}
