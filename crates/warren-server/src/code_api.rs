//! The code-session routes (`/v1/code/sessions`; see docs/code-sessions.md).
//!
//! Starting a session copies a directory of the server host into a sandbox, so an admin may
//! start one on any directory (naming the user it is for with `owner`), a normal user only for
//! themselves on a directory beneath one of `[server] code_project_roots` (`{user}` in a root is
//! their id; the path is resolved, symlinks and `..` included, before it is checked). From then
//! on the owner drives it.
//! A normal user sees and acts on their own sessions only (403 otherwise); sessions started by
//! the local CLI have no owner and are an admin's. Work that changes state (start, exec and
//! its commit, commit, sync, stop) runs in a task of its own, so a client that goes away or a
//! request timeout cannot leave it half done.

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, OpenApi, ToSchema};
use warren_code::{
    Change, Changes, CommitInfo, CopyReport, Diff, LogEntry, Range, SessionId, SessionInfo, Sessions, Skipped,
    StartOptions, StopOptions, StopReport, SyncOptions, SyncReport,
};
use warren_core::{BackendKind, UserId};

use crate::api::{ExecBody, ExecResult};
use crate::error::{ApiError, ApiResult, ErrorBody};
use crate::routes::{exec_request, JsonBody};
use crate::{AppState, Caller};

/// The code routes, merged into the authenticated /v1 API.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/code/sessions", post(start_session).get(list_sessions))
        .route("/v1/code/sessions/{id}", get(get_session).delete(stop_session))
        .route("/v1/code/sessions/{id}/exec", post(exec))
        .route("/v1/code/sessions/{id}/commit", post(commit))
        .route("/v1/code/sessions/{id}/changes", get(changes))
        .route("/v1/code/sessions/{id}/diff", get(diff))
        .route("/v1/code/sessions/{id}/log", get(log))
        .route("/v1/code/sessions/{id}/sync", post(sync))
}

/// The code routes' part of the OpenAPI document.
#[derive(OpenApi)]
#[openapi(
    paths(start_session, list_sessions, get_session, stop_session, exec, commit, changes, diff, log, sync),
    components(schemas(
        StartSession, CodeSession, CodeCopyReport, CodeSkipped, CodeCommit, CodeExecResult, CodeChanges,
        CodeChange, CodeDiff, CodeLogEntry, SyncBody, CodeSyncReport, CodeConflict, CodeStopped, CommitBody,
    )),
    tags((name = "code", description = "Coding sessions: a host project in a sandbox, every change tracked outside it, synced back safely (docs/code-sessions.md)"))
)]
#[derive(Debug)]
pub struct CodeApiDoc;

// ---------------------------------------------------------------------------------------------
// Wire types (field for field what `warren_code` serializes, so clients may read either)

/// `POST /v1/code/sessions`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StartSession {
    /// The project directory on the server host (absolute).
    pub path: String,
    /// The user the session is for (default: the caller).
    pub owner: Option<String>,
    /// `ns`, `dir` or `docker` (default: the server's pick).
    pub backend: Option<String>,
    /// Limits to change from the server's defaults (fields of the workspace limits).
    #[schema(value_type = Option<Object>)]
    pub limits: Option<serde_json::Map<String, serde_json::Value>>,
    /// Network beyond loopback (default off).
    pub network: Option<bool>,
    /// Names left out at any depth besides `.git` (like `target`, `node_modules`).
    #[serde(default)]
    pub exclude: Vec<String>,
    /// The image the sandbox runs, one `warren image import` made (default: the server's).
    pub image: Option<String>,
}

/// An entry left out, and why.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct CodeSkipped {
    /// Path relative to the project.
    pub path: String,
    /// Why.
    pub reason: String,
}

impl From<Skipped> for CodeSkipped {
    fn from(s: Skipped) -> Self {
        Self { path: s.path, reason: s.reason }
    }
}

/// What the copy into the workspace did.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct CodeCopyReport {
    /// Regular files copied.
    pub files: u64,
    /// Symlinks copied.
    pub symlinks: u64,
    /// Directories created.
    pub dirs: u64,
    /// Bytes copied.
    pub bytes: u64,
    /// Entries left out (the first 100).
    pub skipped: Vec<CodeSkipped>,
    /// How many were left out.
    pub skipped_count: u64,
}

impl From<CopyReport> for CodeCopyReport {
    fn from(c: CopyReport) -> Self {
        Self {
            files: c.files,
            symlinks: c.symlinks,
            dirs: c.dirs,
            bytes: c.bytes,
            skipped: c.skipped.into_iter().map(Into::into).collect(),
            skipped_count: c.skipped_count,
        }
    }
}

/// A coding session.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct CodeSession {
    /// The session id (12 hex digits).
    pub id: String,
    /// The user it belongs to (`null`: started by the server host's CLI; admins only).
    pub owner: Option<String>,
    /// The project directory on the server host.
    pub project: String,
    /// The synthetic user owning the session's workspace (`code.<id>`).
    pub workspace_user: String,
    /// `ns`, `dir` or `docker`.
    pub backend: Option<String>,
    /// `starting`, `active` or `stopped` (history kept, workspace gone).
    pub status: String,
    /// The workspace's state now (`null`: it has none).
    pub state: Option<String>,
    /// The project as copied in.
    pub base_commit: Option<String>,
    /// The last commit synced to the host.
    pub synced_commit: Option<String>,
    /// The last recorded commit.
    pub head_commit: Option<String>,
    /// The history holds changes the host does not have.
    pub unsynced: bool,
    /// Names left out besides `.git`.
    pub exclude: Vec<String>,
    /// When it started (RFC 3339).
    pub created_at: String,
    /// What the copy did.
    pub copy: CodeCopyReport,
}

fn lower<T: Serialize>(v: &T) -> String {
    match serde_json::to_value(v) {
        Ok(serde_json::Value::String(s)) => s,
        _ => String::new(),
    }
}

impl From<SessionInfo> for CodeSession {
    fn from(i: SessionInfo) -> Self {
        Self {
            id: i.id.to_string(),
            owner: i.owner.map(String::from),
            project: i.project,
            workspace_user: i.workspace_user.to_string(),
            backend: i.backend.map(|b| b.as_str().to_owned()),
            status: i.status.to_string(),
            state: i.state.map(|s| s.to_string()),
            base_commit: i.base_commit,
            synced_commit: i.synced_commit,
            head_commit: i.head_commit,
            unsynced: i.unsynced,
            exclude: i.exclude,
            created_at: i.created_at.to_string(),
            copy: i.copy.into(),
        }
    }
}

/// A recorded commit.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct CodeCommit {
    /// The branch's commit now.
    pub commit: String,
    /// The files differ from the previous commit.
    pub changed: bool,
    /// A new commit was made.
    pub created: bool,
    /// Entries the history could not hold (their last version is kept; the first 100).
    pub skipped: Vec<CodeSkipped>,
    /// How many.
    pub skipped_count: u64,
}

impl From<CommitInfo> for CodeCommit {
    fn from(c: CommitInfo) -> Self {
        Self {
            commit: c.commit,
            changed: c.changed,
            created: c.created,
            skipped: c.skipped.into_iter().map(Into::into).collect(),
            skipped_count: c.skipped_count,
        }
    }
}

/// `POST .../exec`: the command's result and the commit recorded after it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct CodeExecResult {
    /// How the command ended and its output.
    #[serde(flatten)]
    pub result: ExecResult,
    /// The commit recorded after the command.
    pub commit: CodeCommit,
}

/// One changed path.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct CodeChange {
    /// Path relative to the project.
    pub path: String,
    /// `added`, `modified`, `deleted` or `type_changed`.
    pub kind: String,
    /// Lines added (`null`: binary).
    pub lines_added: Option<u64>,
    /// Lines deleted (`null`: binary).
    pub lines_deleted: Option<u64>,
}

impl From<Change> for CodeChange {
    fn from(c: Change) -> Self {
        Self { path: c.path, kind: lower(&c.kind), lines_added: c.lines_added, lines_deleted: c.lines_deleted }
    }
}

/// The changes between two commits, with a diffstat.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct CodeChanges {
    /// From this commit.
    pub from: String,
    /// To this commit.
    pub to: String,
    /// Every changed path, sorted.
    pub files: Vec<CodeChange>,
    /// Paths added.
    pub added: u64,
    /// Paths modified.
    pub modified: u64,
    /// Paths deleted.
    pub deleted: u64,
    /// Lines added.
    pub lines_added: u64,
    /// Lines deleted.
    pub lines_deleted: u64,
}

impl From<Changes> for CodeChanges {
    fn from(c: Changes) -> Self {
        Self {
            from: c.from,
            to: c.to,
            files: c.files.into_iter().map(Into::into).collect(),
            added: c.added,
            modified: c.modified,
            deleted: c.deleted,
            lines_added: c.lines_added,
            lines_deleted: c.lines_deleted,
        }
    }
}

/// A unified diff.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct CodeDiff {
    /// From this commit.
    pub from: String,
    /// To this commit.
    pub to: String,
    /// The patch (invalid UTF-8 replaced).
    pub text: String,
    /// Cut at 16 MiB.
    pub truncated: bool,
}

impl From<Diff> for CodeDiff {
    fn from(d: Diff) -> Self {
        Self { from: d.from, to: d.to, text: d.text, truncated: d.truncated }
    }
}

/// One recorded commit.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct CodeLogEntry {
    /// Its id.
    pub commit: String,
    /// When (RFC 3339).
    pub time: String,
    /// First line: `base: ...`, `exec: <command>`, `outside: ...`, `commit: ...`, `stop: ...`.
    pub subject: String,
    /// The whole message.
    pub message: String,
}

impl From<LogEntry> for CodeLogEntry {
    fn from(e: LogEntry) -> Self {
        Self { commit: e.commit, time: e.time.to_string(), subject: e.subject, message: e.message }
    }
}

/// `POST .../sync`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SyncBody {
    /// Overwrite host files that changed since the last sync.
    #[serde(default)]
    pub force: bool,
    /// Only report what would be written and the conflicts.
    #[serde(default)]
    pub dry_run: bool,
    /// The most bytes of file content this sync may write (default 1 GiB); more is refused
    /// before anything is written.
    #[serde(default)]
    pub max_bytes: Option<u64>,
}

/// A host file changed since the last sync.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct CodeConflict {
    /// Path relative to the project.
    pub path: String,
    /// What is different on the host.
    pub reason: String,
}

/// What a sync did (or would do).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct CodeSyncReport {
    /// The last synced commit before.
    pub from: String,
    /// The commit synced.
    pub to: String,
    /// Whether the host was changed.
    pub applied: bool,
    /// Written.
    pub written: Vec<String>,
    /// Deleted.
    pub deleted: Vec<String>,
    /// Not applied, and why.
    pub skipped: Vec<CodeSkipped>,
    /// Host files changed since the last sync (overwritten when forced).
    pub conflicts: Vec<CodeConflict>,
}

impl From<SyncReport> for CodeSyncReport {
    fn from(r: SyncReport) -> Self {
        Self {
            from: r.from,
            to: r.to,
            applied: r.applied,
            written: r.written,
            deleted: r.deleted,
            skipped: r.skipped.into_iter().map(Into::into).collect(),
            conflicts: r.conflicts.into_iter().map(|c| CodeConflict { path: c.path, reason: c.reason }).collect(),
        }
    }
}

/// What a stop did.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct CodeStopped {
    /// The session.
    pub id: String,
    /// Its history was kept.
    pub history_kept: bool,
    /// Changes never synced were dropped.
    pub discarded_changes: bool,
}

impl From<StopReport> for CodeStopped {
    fn from(r: StopReport) -> Self {
        Self { id: r.id.to_string(), history_kept: r.history_kept, discarded_changes: r.discarded_changes }
    }
}

/// `POST .../commit`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CommitBody {
    /// The commit message (default: "recorded on request").
    pub message: Option<String>,
}

/// Which commits to compare (default: last synced to last recorded).
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct RangeQuery {
    /// From this commit (hex id or prefix).
    pub from: Option<String>,
    /// To this commit.
    pub to: Option<String>,
    /// From the base: everything the session changed, synced or not.
    pub all: Option<bool>,
    /// Only this path (diff only).
    pub path: Option<String>,
}

impl RangeQuery {
    fn range(&self) -> Range {
        Range { from: self.from.clone(), to: self.to.clone(), all: self.all.unwrap_or(false) }
    }
}

/// `DELETE /v1/code/sessions/{id}` options.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct StopQuery {
    /// Keep the history (changes, diff, log and sync keep working; deleting again removes it).
    pub keep_history: Option<bool>,
    /// Drop changes never synced (otherwise such a session is not stopped: 409).
    pub discard: Option<bool>,
}

/// `GET .../log` options.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct LogQuery {
    /// How many commits, newest first (default 50, at most 10000).
    pub limit: Option<usize>,
}

// ---------------------------------------------------------------------------------------------
// Handlers

/// The session `raw` names, if the caller may act on it: its owner, or an admin (sessions
/// without an owner, started from the host's CLI, are an admin's only).
async fn authorize(s: &AppState, c: &Caller, raw: &str) -> ApiResult<SessionId> {
    let id: SessionId = raw.parse().map_err(ApiError::from)?;
    let rec = Sessions::new(&s.engine).record(&id).await?;
    match &rec.owner {
        Some(owner) => {
            c.target(owner.as_str()).map_err(|_| {
                ApiError::forbidden(format!(
                    "code session {id} belongs to another user; {} may act on their own sessions only \
                     (operator access needs the admin claim)",
                    c.principal.user
                ))
            })?;
        }
        None => c.principal.require_admin("acting on a session started from the server host's command line")?,
    }
    Ok(id)
}

/// Runs `work` in a task of its own (it finishes even if the request is dropped).
async fn detached<T: Send + 'static>(
    work: impl std::future::Future<Output = warren_core::Result<T>> + Send + 'static,
) -> ApiResult<T> {
    tokio::spawn(work)
        .await
        .map_err(|e| ApiError::from(warren_core::Error::Internal(format!("the session task failed: {e}"))))?
        .map_err(ApiError::from)
}

/// Starts a coding session: copies a directory of the server host (everything but `.git` and
/// the excluded names) into a new sandboxed workspace (no network unless asked) and records it
/// as the base commit. An admin may name any directory and, with `owner`, the user who then
/// drives the session; a normal user only a directory beneath one of the server's
/// `code_project_roots`, for themselves.
#[utoipa::path(post, path = "/v1/code/sessions", tag = "code", security(("bearer" = [])),
    request_body = StartSession,
    responses(
        (status = 201, body = CodeSession),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, description = "not an admin, and the path is not beneath a project root of the caller's", body = ErrorBody),
        (status = 404, description = "no such directory", body = ErrorBody),
    ))]
pub async fn start_session(
    State(s): State<AppState>,
    Extension(c): Extension<Caller>,
    JsonBody(body): JsonBody<StartSession>,
) -> ApiResult<(StatusCode, Json<CodeSession>)> {
    if !c.principal.admin && s.cfg.code_project_roots.is_empty() {
        c.principal.require_admin(
            "starting a code session (it copies a directory of the server host; \
             [server] code_project_roots lets users start them beneath their own directories)",
        )?;
    }
    let owner = match &body.owner {
        Some(o) => c.target(o)?,
        None => c.target("me")?,
    };
    if owner.is_reserved() {
        return Err(ApiError::bad_request(format!("{owner} is a reserved user id and cannot own a session")));
    }
    let path = std::path::PathBuf::from(&body.path);
    if !path.is_absolute() {
        return Err(ApiError::bad_request("path must be an absolute directory on the server host"));
    }
    let path = if c.principal.admin { path } else { beneath_a_root(&s.cfg.code_project_roots, &owner, &path)? };
    let backend = match &body.backend {
        None => None,
        Some(b) => Some(b.parse::<BackendKind>().map_err(ApiError::from)?),
    };
    let limits = body.limits.map(|patch| crate::routes::limits_patch(&s, patch)).transpose()?;
    let opts = StartOptions {
        project: path,
        owner: Some(owner),
        backend,
        limits,
        network: body.network.unwrap_or(false),
        exclude: body.exclude,
        image: body.image,
    };
    let engine = s.engine.clone();
    let info = detached(async move { Sessions::new(&engine).start(opts).await }).await?;
    Ok((StatusCode::CREATED, Json(info.into())))
}

/// `path` resolved (symlinks, `.` and `..`), if it is beneath one of `roots` with `{user}` as
/// `owner`; 404 if it does not exist, 403 if it is elsewhere.
fn beneath_a_root(roots: &[String], owner: &UserId, path: &std::path::Path) -> ApiResult<std::path::PathBuf> {
    let roots: Vec<String> = roots.iter().map(|r| r.replace("{user}", owner.as_str())).collect();
    let refused = || {
        ApiError::forbidden(format!(
            "{} is not beneath a code project root of user {owner} (the server's code_project_roots: {})",
            path.display(),
            roots.join(", ")
        ))
    };
    let real = match std::fs::canonicalize(path) {
        Ok(real) => real,
        // Whether a path exists is only told about the caller's own directories.
        Err(e) if roots.iter().any(|r| path.starts_with(r)) => {
            return Err(warren_core::Error::io(format!("resolving {}", path.display()), e).into())
        }
        Err(_) => return Err(refused()),
    };
    if roots.iter().any(|r| std::fs::canonicalize(r).is_ok_and(|r| real.starts_with(r))) {
        Ok(real)
    } else {
        Err(refused())
    }
}

/// Lists sessions: every one for an admin, the caller's own otherwise.
#[utoipa::path(get, path = "/v1/code/sessions", tag = "code", security(("bearer" = [])),
    responses((status = 200, body = Vec<CodeSession>), (status = 401, body = ErrorBody)))]
pub async fn list_sessions(
    State(s): State<AppState>,
    Extension(c): Extension<Caller>,
) -> ApiResult<Json<Vec<CodeSession>>> {
    let all = Sessions::new(&s.engine).list().await?;
    let me: Option<&UserId> = Some(&c.principal.user);
    Ok(Json(all.into_iter().filter(|i| c.principal.admin || i.owner.as_ref() == me).map(CodeSession::from).collect()))
}

/// A session, with its workspace's state and its commits.
#[utoipa::path(get, path = "/v1/code/sessions/{id}", tag = "code", security(("bearer" = [])),
    params(("id" = String, Path, description = "the session id")),
    responses((status = 200, body = CodeSession), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn get_session(
    State(s): State<AppState>,
    Extension(c): Extension<Caller>,
    Path(id): Path<String>,
) -> ApiResult<Json<CodeSession>> {
    let id = authorize(&s, &c, &id).await?;
    Ok(Json(Sessions::new(&s.engine).get(&id).await?.into()))
}

/// Stops a session: destroys its workspace, and its history unless `keep_history`. Refused
/// (409) while the history holds changes never synced, unless `keep_history` or `discard`.
#[utoipa::path(delete, path = "/v1/code/sessions/{id}", tag = "code", security(("bearer" = [])),
    params(("id" = String, Path, description = "the session id"), StopQuery),
    responses(
        (status = 200, body = CodeStopped), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 409, description = "unsynced changes", body = ErrorBody)))]
pub async fn stop_session(
    State(s): State<AppState>,
    Extension(c): Extension<Caller>,
    Path(id): Path<String>,
    Query(q): Query<StopQuery>,
) -> ApiResult<Json<CodeStopped>> {
    let id = authorize(&s, &c, &id).await?;
    let opts = StopOptions { keep_history: q.keep_history.unwrap_or(false), discard: q.discard.unwrap_or(false) };
    let engine = s.engine.clone();
    let rep = detached(async move { Sessions::new(&engine).stop(&id, opts).await }).await?;
    Ok(Json(rep.into()))
}

/// Runs a command in the session's workspace, then records the workspace's files as a commit
/// (named after the command and its exit code). Same body as the workspace exec.
#[utoipa::path(post, path = "/v1/code/sessions/{id}/exec", tag = "code", security(("bearer" = [])),
    params(("id" = String, Path, description = "the session id")),
    request_body = ExecBody,
    responses((status = 200, body = CodeExecResult), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 409, description = "the session is not active", body = ErrorBody)))]
pub async fn exec(
    State(s): State<AppState>,
    Extension(c): Extension<Caller>,
    Path(id): Path<String>,
    JsonBody(body): JsonBody<ExecBody>,
) -> ApiResult<Json<CodeExecResult>> {
    let id = authorize(&s, &c, &id).await?;
    let encoding = body.encoding;
    let (mut req, stdin, _) = exec_request(&s, body)?;
    req.stdin = stdin;
    let engine = s.engine.clone();
    let out = detached(async move { Sessions::new(&engine).exec(&id, req).await }).await?;
    let o = out.output;
    Ok(Json(CodeExecResult { result: crate::routes::exec_result(&o, encoding), commit: out.commit.into() }))
}

/// Records the workspace's files now (for changes made outside a tracked command).
#[utoipa::path(post, path = "/v1/code/sessions/{id}/commit", tag = "code", security(("bearer" = [])),
    params(("id" = String, Path, description = "the session id")),
    request_body(content = CommitBody, description = "optional"),
    responses((status = 200, body = CodeCommit), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 409, body = ErrorBody)))]
pub async fn commit(
    State(s): State<AppState>,
    Extension(c): Extension<Caller>,
    Path(id): Path<String>,
    JsonBody(body): JsonBody<Option<CommitBody>>,
) -> ApiResult<Json<CodeCommit>> {
    let id = authorize(&s, &c, &id).await?;
    let message = body.and_then(|b| b.message);
    let engine = s.engine.clone();
    let info = detached(async move { Sessions::new(&engine).commit(&id, message.as_deref()).await }).await?;
    Ok(Json(info.into()))
}

/// Files added, modified and deleted, with a diffstat (default: since the last sync).
#[utoipa::path(get, path = "/v1/code/sessions/{id}/changes", tag = "code", security(("bearer" = [])),
    params(("id" = String, Path, description = "the session id"), RangeQuery),
    responses((status = 200, body = CodeChanges), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody)))]
pub async fn changes(
    State(s): State<AppState>,
    Extension(c): Extension<Caller>,
    Path(id): Path<String>,
    Query(q): Query<RangeQuery>,
) -> ApiResult<Json<CodeChanges>> {
    let id = authorize(&s, &c, &id).await?;
    Ok(Json(Sessions::new(&s.engine).changes(&id, &q.range()).await?.into()))
}

/// The unified diff (default: since the last sync; at most 16 MiB, `truncated` beyond).
#[utoipa::path(get, path = "/v1/code/sessions/{id}/diff", tag = "code", security(("bearer" = [])),
    params(("id" = String, Path, description = "the session id"), RangeQuery),
    responses((status = 200, body = CodeDiff), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody)))]
pub async fn diff(
    State(s): State<AppState>,
    Extension(c): Extension<Caller>,
    Path(id): Path<String>,
    Query(q): Query<RangeQuery>,
) -> ApiResult<Json<CodeDiff>> {
    let id = authorize(&s, &c, &id).await?;
    let paths: Vec<String> = q.path.iter().cloned().collect();
    Ok(Json(Sessions::new(&s.engine).diff(&id, &q.range(), &paths).await?.into()))
}

/// The recorded commits, newest first.
#[utoipa::path(get, path = "/v1/code/sessions/{id}/log", tag = "code", security(("bearer" = [])),
    params(("id" = String, Path, description = "the session id"), LogQuery),
    responses((status = 200, body = Vec<CodeLogEntry>), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn log(
    State(s): State<AppState>,
    Extension(c): Extension<Caller>,
    Path(id): Path<String>,
    Query(q): Query<LogQuery>,
) -> ApiResult<Json<Vec<CodeLogEntry>>> {
    let id = authorize(&s, &c, &id).await?;
    let log = Sessions::new(&s.engine).log(&id, q.limit.unwrap_or(50)).await?;
    Ok(Json(log.into_iter().map(Into::into).collect()))
}

/// Writes the recorded changes (last synced commit to head) into the host project, never under
/// `.git`, never through a symlink. Refused (409, every conflict listed) when host files
/// changed since the last sync, unless `force`.
#[utoipa::path(post, path = "/v1/code/sessions/{id}/sync", tag = "code", security(("bearer" = [])),
    params(("id" = String, Path, description = "the session id")),
    request_body(content = SyncBody, description = "optional"),
    responses((status = 200, body = CodeSyncReport), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 409, description = "host files changed since the last sync; the message lists them", body = ErrorBody)))]
pub async fn sync(
    State(s): State<AppState>,
    Extension(c): Extension<Caller>,
    Path(id): Path<String>,
    JsonBody(body): JsonBody<Option<SyncBody>>,
) -> ApiResult<Json<CodeSyncReport>> {
    let id = authorize(&s, &c, &id).await?;
    let b = body.unwrap_or_default();
    let opts = SyncOptions { force: b.force, dry_run: b.dry_run, max_bytes: b.max_bytes };
    let engine = s.engine.clone();
    let rep = detached(async move { Sessions::new(&engine).sync(&id, opts).await }).await?;
    Ok(Json(rep.into()))
}
