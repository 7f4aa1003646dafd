//! The handlers. Each one names its caller ([`Caller`]), resolves and authorizes the target user
//! first, then calls the engine.

use std::collections::BTreeMap;
use std::io;
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::extract::{FromRequest, Path, Query, Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use base64::Engine as _;
use futures::StreamExt;
use serde::de::DeserializeOwned;
use serde::Deserialize;
use tokio::sync::mpsc;
use utoipa::IntoParams;
use warren_core::backend::blocking;
use warren_core::monitor::MonitorPolicy;
use warren_core::{ExecControl, ExecEvent, ExecRequest, Limits, SnapshotId, WorkspacePath};
use warren_engine::{CreateOptions, SnapshotOptions};

use crate::api::*;
use crate::archive;
use crate::error::{ApiError, ApiResult, ErrorBody};
use crate::{AppState, Caller};

// ---------------------------------------------------------------------------------------------
// Bodies

/// A JSON body of at most `max_json_bytes`; an empty body reads as `null`. Any content type
/// is accepted (so `curl -d '{...}'` works without `-H 'Content-Type: application/json'`).
#[derive(Debug)]
pub struct JsonBody<T>(pub T);

impl<T: DeserializeOwned> FromRequest<AppState> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, ApiError> {
        let bytes = read_body(req, state.cfg.max_json_bytes).await?;
        let text: &[u8] = if bytes.iter().all(u8::is_ascii_whitespace) { b"null" } else { &bytes };
        serde_json::from_slice(text)
            .map(JsonBody)
            .map_err(|e| ApiError::bad_request(format!("the request body is not valid JSON for this route: {e}")))
    }
}

/// A raw body of at most `max_body_bytes` (file and archive uploads).
#[derive(Debug)]
pub struct RawBody(pub Bytes);

impl FromRequest<AppState> for RawBody {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, ApiError> {
        read_body(req, state.cfg.max_body_bytes).await.map(RawBody)
    }
}

async fn read_body(req: Request, limit: usize) -> Result<Bytes, ApiError> {
    let declared =
        req.headers().get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(ApiError::too_large(limit));
    }
    let mut stream = req.into_body().into_data_stream();
    let mut buf = Vec::with_capacity(declared.map_or(0, |n| n as usize));
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| ApiError::bad_request(format!("reading the request body failed: {e}")))?;
        if buf.len() + chunk.len() > limit {
            return Err(ApiError::too_large(limit));
        }
        buf.extend_from_slice(&chunk);
    }
    Ok(Bytes::from(buf))
}

/// A response body from a channel; it ends with an error (so the client sees a cut transfer)
/// when the shutdown grace period is over.
fn stream_body(s: &AppState, rx: mpsc::Receiver<io::Result<Vec<u8>>>) -> Body {
    let cut = Box::pin(s.cut_off());
    Body::from_stream(futures::stream::unfold(Some((rx, cut)), |st| async move {
        let (mut rx, mut cut) = st?;
        tokio::select! {
            item = rx.recv() => item.map(|i| (i, Some((rx, cut)))),
            () = &mut cut => Some((Err(io::Error::other("the server is shutting down")), None)),
        }
    }))
}

fn wpath(p: &str) -> ApiResult<WorkspacePath> {
    WorkspacePath::new(p).map_err(ApiError::from)
}

// ---------------------------------------------------------------------------------------------
// Operations

/// Liveness: the process answers.
#[utoipa::path(get, path = "/healthz", tag = "operations", responses((status = 200, body = Health)))]
pub async fn healthz() -> Json<Health> {
    Json(Health { status: "ok".into(), checks: BTreeMap::new() })
}

/// Readiness: the state store answers and the backend's state directory is there.
#[utoipa::path(get, path = "/readyz", tag = "operations", responses(
    (status = 200, description = "ready", body = Health),
    (status = 503, description = "not ready; `checks` says why", body = Health),
))]
pub async fn readyz(State(s): State<AppState>) -> Response {
    let mut checks = BTreeMap::new();
    let store = match s.engine.events(None, 1).await {
        Ok(_) => "ok".to_owned(),
        Err(e) => format!("failed: {e}"),
    };
    checks.insert("store".to_owned(), store);
    let dir = s.engine.config().state_dir.join("workspaces");
    let backend = match std::fs::metadata(&dir) {
        Ok(m) if m.is_dir() => format!("ok ({})", s.engine.backend_kind()),
        Ok(_) => format!("failed: {} is not a directory", dir.display()),
        Err(e) => format!("failed: {}: {e}", dir.display()),
    };
    checks.insert("backend".to_owned(), backend);
    let ok = checks.values().all(|v| v.starts_with("ok"));
    let status = if ok { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    (status, Json(Health { status: if ok { "ok" } else { "not ready" }.into(), checks })).into_response()
}

/// Prometheus metrics (text format).
#[utoipa::path(get, path = "/metrics", tag = "operations", responses(
    (status = 200, description = "Prometheus text exposition format", content_type = "text/plain", body = String),
))]
pub async fn metrics(State(s): State<AppState>) -> Response {
    let (mut by_state, up) = (BTreeMap::new(), true);
    let up = match s.engine.list().await {
        Ok(list) => {
            for st in ["absent", "stopped", "running"] {
                by_state.insert(st.to_owned(), 0u64);
            }
            for w in list {
                *by_state.entry(w.state.to_string()).or_default() += 1;
            }
            up
        }
        Err(e) => {
            tracing::warn!(error = %e, "metrics: listing workspaces failed");
            false
        }
    };
    let mut text = s.metrics.render(&by_state, up);
    crate::metrics::Metrics::render_usage(&mut text, &s.engine.last_usage());
    ([(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; version=0.0.4"))], text).into_response()
}

/// This API's OpenAPI document.
#[utoipa::path(get, path = "/openapi.json", tag = "operations", responses(
    (status = 200, description = "OpenAPI 3.1 document", content_type = "application/json", body = Object),
))]
pub async fn openapi_json() -> Response {
    ([(header::CONTENT_TYPE, HeaderValue::from_static("application/json"))], crate::openapi_json()).into_response()
}

/// Who the token says the caller is.
#[utoipa::path(get, path = "/v1/whoami", tag = "workspaces", security(("bearer" = [])), responses(
    (status = 200, body = WhoAmI), (status = 401, body = ErrorBody),
))]
pub async fn whoami(Extension(c): Extension<Caller>) -> Json<WhoAmI> {
    Json(WhoAmI { user: c.principal.user.to_string(), admin: c.principal.admin })
}

/// The caller, as the server sees them.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, Deserialize, utoipa::ToSchema)]
pub struct WhoAmI {
    /// The user the token names.
    pub user: String,
    /// Operator access.
    pub admin: bool,
}

// ---------------------------------------------------------------------------------------------
// Workspaces

/// Creates a workspace (stopped). A normal user creates their own: `user` may be left out or
/// must be theirs.
#[utoipa::path(post, path = "/v1/workspaces", tag = "workspaces", security(("bearer" = [])),
    request_body(content = CreateWorkspace, description = "all fields optional; an empty body creates the caller's workspace with the defaults"),
    responses(
        (status = 201, body = Workspace),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 409, description = "the user has a workspace already", body = ErrorBody),
    ))]
pub async fn create_workspace(
    State(s): State<AppState>,
    Extension(c): Extension<Caller>,
    JsonBody(body): JsonBody<Option<CreateWorkspace>>,
) -> ApiResult<(StatusCode, Json<Workspace>)> {
    let body = body.unwrap_or_default();
    let user = match &body.user {
        Some(u) => c.target(u)?,
        None => c.target("me")?,
    };
    let limits = body.limits.map(|patch| limits_patch(&s, patch)).transpose()?;
    let policy = match body.policy {
        None => None,
        Some(_) if !c.principal.admin => {
            return Err(ApiError::forbidden("only an admin may set a workspace's monitor policy"));
        }
        Some(p) => Some(MonitorPolicy::try_from(p)?),
    };
    let opts = CreateOptions { limits, network: body.network, policy, image: body.image, ..Default::default() };
    let info = s.engine.create(&user, opts).await?;
    Ok((StatusCode::CREATED, Json(info.into())))
}

/// The configured default limits with the keys of `patch` over them (`null`: unlimited).
pub(crate) fn limits_patch(s: &AppState, patch: serde_json::Map<String, serde_json::Value>) -> ApiResult<Limits> {
    let mut base = match serde_json::to_value(&s.engine.config().limits) {
        Ok(serde_json::Value::Object(m)) => m,
        _ => serde_json::Map::new(),
    };
    base.extend(patch);
    serde_json::from_value(serde_json::Value::Object(base)).map_err(|e| ApiError::bad_request(format!("limits: {e}")))
}

/// Lists workspaces: every one for an admin, the caller's own (zero or one) otherwise.
#[utoipa::path(get, path = "/v1/workspaces", tag = "workspaces", security(("bearer" = [])), responses(
    (status = 200, body = Vec<Workspace>), (status = 401, body = ErrorBody),
))]
pub async fn list_workspaces(
    State(s): State<AppState>,
    Extension(c): Extension<Caller>,
) -> ApiResult<Json<Vec<Workspace>>> {
    let list = if c.principal.admin {
        s.engine.list().await?
    } else {
        match s.engine.status(&c.principal.user).await {
            Ok(i) => vec![i],
            Err(warren_core::Error::NotFound(_)) => vec![],
            Err(e) => return Err(e.into()),
        }
    };
    Ok(Json(list.into_iter().map(Workspace::from).collect()))
}

/// A workspace and its state on the host now. `{user}` may be `me`.
#[utoipa::path(get, path = "/v1/workspaces/{user}", tag = "workspaces", security(("bearer" = [])),
    params(("user" = String, Path, description = "the owner, or `me`")),
    responses((status = 200, body = Workspace), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn get_workspace(
    State(s): State<AppState>,
    Extension(c): Extension<Caller>,
    Path(user): Path<String>,
) -> ApiResult<Json<Workspace>> {
    let user = c.target(&user)?;
    Ok(Json(s.engine.status(&user).await?.into()))
}

/// Starts a workspace (a running one is left as it is).
#[utoipa::path(post, path = "/v1/workspaces/{user}/start", tag = "workspaces", security(("bearer" = [])),
    params(("user" = String, Path, description = "the owner, or `me`")),
    responses((status = 200, body = Workspace), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn start_workspace(
    State(s): State<AppState>,
    Extension(c): Extension<Caller>,
    Path(user): Path<String>,
) -> ApiResult<Json<Workspace>> {
    let user = c.target(&user)?;
    Ok(Json(s.engine.start(&user).await?.into()))
}

/// Stops a workspace, killing every process in it (files stay).
#[utoipa::path(post, path = "/v1/workspaces/{user}/stop", tag = "workspaces", security(("bearer" = [])),
    params(("user" = String, Path, description = "the owner, or `me`")),
    responses((status = 200, body = Workspace), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn stop_workspace(
    State(s): State<AppState>,
    Extension(c): Extension<Caller>,
    Path(user): Path<String>,
) -> ApiResult<Json<Workspace>> {
    let user = c.target(&user)?;
    Ok(Json(s.engine.stop(&user).await?.into()))
}

/// Destroys a workspace with all its files (the user keeps their uid).
#[utoipa::path(delete, path = "/v1/workspaces/{user}", tag = "workspaces", security(("bearer" = [])),
    params(("user" = String, Path, description = "the owner, or `me`")),
    responses((status = 200, body = Destroyed), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn destroy_workspace(
    State(s): State<AppState>,
    Extension(c): Extension<Caller>,
    Path(user): Path<String>,
) -> ApiResult<Json<Destroyed>> {
    let user = c.target(&user)?;
    s.engine.destroy(&user).await?;
    Ok(Json(Destroyed { destroyed: user.to_string() }))
}

/// Resource usage against the workspace's limits (CPU percent over the last monitor window, or
/// over a quarter second measured now), and the monitor policy that applies.
#[utoipa::path(get, path = "/v1/workspaces/{user}/stats", tag = "workspaces", security(("bearer" = [])),
    params(("user" = String, Path, description = "the owner, or `me`")),
    responses((status = 200, body = StatsBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn stats(
    State(s): State<AppState>,
    Extension(c): Extension<Caller>,
    Path(user): Path<String>,
) -> ApiResult<Json<StatsBody>> {
    let user = c.target(&user)?;
    Ok(Json(s.engine.usage(&user, Duration::from_millis(250)).await?.into()))
}

/// The workspace's resource-monitor policy.
#[utoipa::path(get, path = "/v1/workspaces/{user}/policy", tag = "workspaces", security(("bearer" = [])),
    params(("user" = String, Path, description = "the owner, or `me`")),
    responses((status = 200, body = PolicyBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn get_policy(
    State(s): State<AppState>,
    Extension(c): Extension<Caller>,
    Path(user): Path<String>,
) -> ApiResult<Json<PolicyBody>> {
    let user = c.target(&user)?;
    s.engine.status(&user).await?;
    Ok(Json(s.engine.policy(&user).await?.into()))
}

/// Sets the workspace's resource-monitor policy (admin only: the policy is the operator's
/// enforcement, not the tenant's choice).
#[utoipa::path(put, path = "/v1/workspaces/{user}/policy", tag = "workspaces", security(("bearer" = [])),
    params(("user" = String, Path, description = "the owner")), request_body = SetPolicy,
    responses((status = 200, body = PolicyBody), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody)))]
pub async fn set_policy(
    State(s): State<AppState>,
    Extension(c): Extension<Caller>,
    Path(user): Path<String>,
    JsonBody(body): JsonBody<SetPolicy>,
) -> ApiResult<Json<PolicyBody>> {
    let user = c.target(&user)?;
    if !c.principal.admin {
        return Err(ApiError::forbidden("only an admin may set a workspace's monitor policy"));
    }
    let policy = body.policy.map(MonitorPolicy::try_from).transpose()?;
    Ok(Json(s.engine.set_policy(&user, policy).await?.into()))
}

/// `GET /v1/events` query.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct EventsQuery {
    /// Only this user's events (a normal user: always their own).
    pub user: Option<String>,
    /// How many, newest last (default 50, at most 1000).
    pub limit: Option<usize>,
}

/// The audit trail: the last events, oldest first. A normal user sees their own.
#[utoipa::path(get, path = "/v1/events", tag = "workspaces", security(("bearer" = [])), params(EventsQuery),
    responses((status = 200, body = Vec<EventBody>), (status = 403, body = ErrorBody)))]
pub async fn events(
    State(s): State<AppState>,
    Extension(c): Extension<Caller>,
    Query(q): Query<EventsQuery>,
) -> ApiResult<Json<Vec<EventBody>>> {
    let user = match &q.user {
        Some(u) => Some(c.target(u)?),
        None if c.principal.admin => None,
        None => Some(c.principal.user.clone()),
    };
    let limit = q.limit.unwrap_or(50).min(1000);
    let events = s.engine.events(user.as_ref(), limit).await?;
    Ok(Json(events.into_iter().map(EventBody::from).collect()))
}

// ---------------------------------------------------------------------------------------------
// Exec

pub(crate) fn exec_request(s: &AppState, b: ExecBody) -> ApiResult<(ExecRequest, Option<Vec<u8>>, Duration)> {
    let stdin = match (b.stdin, b.stdin_base64) {
        (Some(_), Some(_)) => return Err(ApiError::bad_request("give stdin or stdin_base64, not both")),
        (Some(t), None) => Some(t.into_bytes()),
        (None, Some(b64)) => Some(
            base64::engine::general_purpose::STANDARD
                .decode(b64.as_bytes())
                .map_err(|e| ApiError::bad_request(format!("stdin_base64 is not base64: {e}")))?,
        ),
        (None, None) => None,
    };
    let max = s.cfg.max_exec_timeout_secs.saturating_mul(1000);
    let ms = b.timeout_ms.unwrap_or(s.cfg.exec_timeout_secs.saturating_mul(1000));
    if ms == 0 || ms > max {
        return Err(ApiError::bad_request(format!(
            "timeout_ms must be between 1 and {max} (the server's max_exec_timeout_secs)"
        )));
    }
    let timeout = Duration::from_millis(ms);
    let req = ExecRequest {
        argv: b.argv,
        env: b.env.into_iter().collect(),
        cwd: b.cwd,
        stdin: None,
        timeout: Some(timeout),
        tty: None,
    };
    req.validate()?;
    Ok((req, stdin, timeout))
}

pub(crate) fn encode(bytes: &[u8], enc: Encoding) -> String {
    match enc {
        Encoding::Utf8 => String::from_utf8_lossy(bytes).into_owned(),
        Encoding::Base64 => base64::engine::general_purpose::STANDARD.encode(bytes),
    }
}

/// Runs a command to completion (starting the workspace if it is stopped) and returns its
/// output. `stdout`/`stderr` are UTF-8 text with invalid bytes replaced (`encoding: utf8`, the
/// default) or exact base64 (`encoding: base64`); each keeps at most 16 MiB (`truncated`).
#[utoipa::path(post, path = "/v1/workspaces/{user}/exec", tag = "exec", security(("bearer" = [])),
    params(("user" = String, Path, description = "the owner, or `me`")),
    request_body = ExecBody,
    responses((status = 200, body = ExecResult), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn exec(
    State(s): State<AppState>,
    Extension(c): Extension<Caller>,
    Path(user): Path<String>,
    JsonBody(body): JsonBody<ExecBody>,
) -> ApiResult<Json<ExecResult>> {
    let user = c.target(&user)?;
    let encoding = body.encoding;
    let (mut req, stdin, _) = exec_request(&s, body)?;
    req.stdin = stdin;
    s.engine.ensure_running(&user).await?;
    let out = s.engine.exec(&user, req).await?;
    Ok(Json(exec_result(&out, encoding)))
}

/// A finished command as the API answers it, output in `encoding`.
pub(crate) fn exec_result(out: &warren_core::ExecOutput, encoding: Encoding) -> ExecResult {
    ExecResult {
        exit_code: out.exit_code,
        signal: out.signal,
        stdout: encode(&out.stdout, encoding),
        stderr: encode(&out.stderr, encoding),
        encoding,
        timed_out: out.timed_out,
        truncated: out.truncated,
        duration_ms: u64::try_from(out.duration.as_millis()).unwrap_or(u64::MAX),
    }
}

/// Decodes a stream's bytes as UTF-8 without splitting a character across two events.
#[derive(Default)]
struct Utf8Carry(Vec<u8>);

impl Utf8Carry {
    fn push(&mut self, data: &[u8]) -> String {
        self.0.extend_from_slice(data);
        let mut out = String::new();
        let mut rest: &[u8] = &self.0;
        loop {
            match std::str::from_utf8(rest) {
                Ok(s) => {
                    out.push_str(s);
                    rest = &[];
                    break;
                }
                Err(e) => {
                    let (ok, bad) = rest.split_at(e.valid_up_to());
                    out.push_str(std::str::from_utf8(ok).unwrap_or_default());
                    match e.error_len() {
                        Some(n) => {
                            out.push('\u{FFFD}');
                            rest = &bad[n..];
                        }
                        None => {
                            rest = bad; // an incomplete character: wait for the rest of it
                            break;
                        }
                    }
                }
            }
        }
        self.0 = rest.to_vec();
        out
    }

    fn finish(&mut self) -> Option<String> {
        if self.0.is_empty() {
            return None;
        }
        let s = String::from_utf8_lossy(&self.0).into_owned();
        self.0.clear();
        Some(s)
    }
}

fn line(ev: &ExecEventBody) -> io::Result<Vec<u8>> {
    let mut v = serde_json::to_vec(ev).map_err(io::Error::other)?;
    v.push(b'\n');
    Ok(v)
}

/// Runs a command and streams its output as newline-delimited JSON (`application/x-ndjson`),
/// one [`ExecEventBody`] per line as it happens, ending with one `exit` (or `error`) line.
/// Closing the connection kills the command.
#[utoipa::path(post, path = "/v1/workspaces/{user}/exec/stream", tag = "exec", security(("bearer" = [])),
    params(("user" = String, Path, description = "the owner, or `me`")),
    request_body = ExecBody,
    responses(
        (status = 200, description = "one JSON event per line", content_type = "application/x-ndjson", body = ExecEventBody),
        (status = 400, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn exec_stream(
    State(s): State<AppState>,
    Extension(c): Extension<Caller>,
    Path(user): Path<String>,
    JsonBody(body): JsonBody<ExecBody>,
) -> ApiResult<Response> {
    let user = c.target(&user)?;
    let encoding = body.encoding;
    let (req, stdin, timeout) = exec_request(&s, body)?;
    s.engine.ensure_running(&user).await?;
    let mut h = s.engine.exec_stream(&user, req).await?;
    if let (Some(tx), Some(bytes)) = (h.stdin.take(), stdin) {
        tokio::spawn(async move {
            for chunk in bytes.chunks(64 << 10) {
                if tx.send(chunk.to_vec()).await.is_err() {
                    break;
                }
            }
        });
    }
    let (tx, rx) = mpsc::channel::<io::Result<Vec<u8>>>(32);
    tokio::spawn(async move {
        let started = Instant::now();
        let deadline = tokio::time::sleep(timeout);
        tokio::pin!(deadline);
        let (mut out8, mut err8) = (Utf8Carry::default(), Utf8Carry::default());
        let mut timed_out = false;
        let data = |carry: &mut Utf8Carry, b: &[u8]| match encoding {
            Encoding::Utf8 => carry.push(b),
            Encoding::Base64 => encode(b, Encoding::Base64),
        };
        loop {
            let ev = tokio::select! {
                ev = h.events.recv() => ev,
                _ = &mut deadline, if !timed_out => {
                    timed_out = true;
                    let _ = h.control.send(ExecControl::Signal(9)).await;
                    continue;
                }
                _ = tx.closed() => return, // the client went away: dropping the handle kills the command
            };
            let body = match ev {
                Some(ExecEvent::Stdout(b)) => ExecEventBody::Stdout { data: data(&mut out8, &b) },
                Some(ExecEvent::Stderr(b)) => ExecEventBody::Stderr { data: data(&mut err8, &b) },
                Some(ExecEvent::Exit(st)) => {
                    for (carry, is_out) in [(&mut out8, true), (&mut err8, false)] {
                        if let Some(rest) = carry.finish() {
                            let ev = if is_out {
                                ExecEventBody::Stdout { data: rest }
                            } else {
                                ExecEventBody::Stderr { data: rest }
                            };
                            let _ = tx.send(line(&ev)).await;
                        }
                    }
                    let ev = ExecEventBody::Exit {
                        exit_code: st.code,
                        signal: st.signal,
                        timed_out,
                        duration_ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
                    };
                    let _ = tx.send(line(&ev)).await;
                    return;
                }
                None => {
                    let e = ApiError::from(warren_core::Error::Internal(
                        "the command's output ended without an exit status".into(),
                    ));
                    let _ = tx.send(line(&ExecEventBody::Error { error: e.body().error })).await;
                    return;
                }
            };
            if matches!(&body, ExecEventBody::Stdout { data } | ExecEventBody::Stderr { data } if data.is_empty()) {
                continue;
            }
            if tx.send(line(&body)).await.is_err() {
                return;
            }
        }
    });
    let mut resp = Response::new(stream_body(&s, rx));
    resp.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/x-ndjson"));
    resp.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    Ok(resp)
}

// ---------------------------------------------------------------------------------------------
// Files

/// `path` query of listings and archives.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PathQuery {
    /// Directory relative to the workspace's home (default: the home).
    pub path: Option<String>,
}

/// Lists a directory (sorted by name).
#[utoipa::path(get, path = "/v1/workspaces/{user}/files", tag = "files", security(("bearer" = [])),
    params(("user" = String, Path, description = "the owner, or `me`"), PathQuery),
    responses((status = 200, body = Vec<FileEntry>), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn list_files(
    State(s): State<AppState>,
    Extension(c): Extension<Caller>,
    Path(user): Path<String>,
    Query(q): Query<PathQuery>,
) -> ApiResult<Json<Vec<FileEntry>>> {
    let user = c.target(&user)?;
    let path = wpath(q.path.as_deref().unwrap_or(""))?;
    let list = s.engine.list_files(&user, &path).await?;
    Ok(Json(list.into_iter().map(FileEntry::from).collect()))
}

/// Downloads a file (streamed; any size).
#[utoipa::path(get, path = "/v1/workspaces/{user}/files/{path}", tag = "files", security(("bearer" = [])),
    params(("user" = String, Path, description = "the owner, or `me`"), ("path" = String, Path, description = "file path relative to the home")),
    responses(
        (status = 200, description = "the file's bytes", content_type = "application/octet-stream", body = Vec<u8>),
        (status = 400, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn read_file(
    State(s): State<AppState>,
    Extension(c): Extension<Caller>,
    Path((user, path)): Path<(String, String)>,
) -> ApiResult<Response> {
    let user = c.target(&user)?;
    let path = wpath(&path)?;
    let files = s.engine.files(&user).await?;
    let (file, st) = blocking(move || files.open_read(&path)).await?;
    let (tx, rx) = mpsc::channel::<io::Result<Vec<u8>>>(4);
    tokio::task::spawn_blocking(move || {
        use std::io::Read;
        let mut f = file.take(st.size);
        loop {
            let mut buf = vec![0u8; 256 << 10];
            match f.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => {
                    buf.truncate(n);
                    if tx.blocking_send(Ok(buf)).is_err() {
                        break;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    let _ = tx.blocking_send(Err(e));
                    break;
                }
            }
        }
    });
    let mut resp = Response::new(stream_body(&s, rx));
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/octet-stream"));
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(st.size));
    Ok(resp)
}

/// `PUT .../files/{path}` query.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct WriteQuery {
    /// Permission bits, octal (default 644).
    pub mode: Option<String>,
}

/// Writes a file atomically from the raw body, creating parent directories.
#[utoipa::path(put, path = "/v1/workspaces/{user}/files/{path}", tag = "files", security(("bearer" = [])),
    params(("user" = String, Path, description = "the owner, or `me`"), ("path" = String, Path, description = "file path relative to the home"), WriteQuery),
    request_body(content = Vec<u8>, content_type = "application/octet-stream"),
    responses((status = 200, body = WriteResult), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 413, body = ErrorBody)))]
pub async fn write_file(
    State(s): State<AppState>,
    Extension(c): Extension<Caller>,
    Path((user, path)): Path<(String, String)>,
    Query(q): Query<WriteQuery>,
    RawBody(body): RawBody,
) -> ApiResult<Json<WriteResult>> {
    let user = c.target(&user)?;
    let path = wpath(&path)?;
    let mode = match q.mode.as_deref() {
        None => 0o644,
        Some(m) => u32::from_str_radix(m, 8).ok().filter(|m| *m <= 0o777).ok_or_else(|| {
            ApiError::bad_request(format!("mode {m:?} must be octal permission bits like 644 or 755"))
        })?,
    };
    let n = body.len() as u64;
    s.engine.write_file(&user, &path, body.to_vec(), mode).await?;
    Ok(Json(WriteResult { path: path.to_string(), bytes: n, mode: format!("{mode:o}") }))
}

/// `DELETE .../files/{path}` query.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct DeleteQuery {
    /// Delete a directory with everything in it.
    pub recursive: Option<bool>,
}

/// Deletes a file or directory (never following a symlink).
#[utoipa::path(delete, path = "/v1/workspaces/{user}/files/{path}", tag = "files", security(("bearer" = [])),
    params(("user" = String, Path, description = "the owner, or `me`"), ("path" = String, Path, description = "path relative to the home"), DeleteQuery),
    responses((status = 204, description = "deleted"), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 409, description = "a non-empty directory without recursive", body = ErrorBody)))]
pub async fn delete_file(
    State(s): State<AppState>,
    Extension(c): Extension<Caller>,
    Path((user, path)): Path<(String, String)>,
    Query(q): Query<DeleteQuery>,
) -> ApiResult<StatusCode> {
    let user = c.target(&user)?;
    let path = wpath(&path)?;
    s.engine.delete_file(&user, &path, q.recursive.unwrap_or(false)).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Downloads a directory as a tar (streamed). Regular files and directories only: symlinks
/// and special files are left out.
#[utoipa::path(get, path = "/v1/workspaces/{user}/archive", tag = "files", security(("bearer" = [])),
    params(("user" = String, Path, description = "the owner, or `me`"), PathQuery),
    responses(
        (status = 200, description = "a tar of the directory's contents (paths relative to it)", content_type = "application/x-tar", body = Vec<u8>),
        (status = 400, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn get_archive(
    State(s): State<AppState>,
    Extension(c): Extension<Caller>,
    Path(user): Path<String>,
    Query(q): Query<PathQuery>,
) -> ApiResult<Response> {
    let user = c.target(&user)?;
    let root = wpath(q.path.as_deref().unwrap_or(""))?;
    let files = s.engine.files(&user).await?;
    let (files, root) = blocking(move || archive::check_dir(&files, &root).map(|()| (files, root))).await?;
    let rx = archive::spawn_tar(files, root);
    let mut resp = Response::new(stream_body(&s, rx));
    resp.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/x-tar"));
    Ok(resp)
}

/// Uploads a tar and extracts it beneath `path` (created if needed). Regular files and
/// directories only; an archive with links, devices, absolute paths or `..` is refused whole
/// before anything is written. Existing files are replaced.
#[utoipa::path(put, path = "/v1/workspaces/{user}/archive", tag = "files", security(("bearer" = [])),
    params(("user" = String, Path, description = "the owner, or `me`"), PathQuery),
    request_body(content = Vec<u8>, content_type = "application/x-tar"),
    responses((status = 200, body = ArchiveResult), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 413, body = ErrorBody)))]
pub async fn put_archive(
    State(s): State<AppState>,
    Extension(c): Extension<Caller>,
    Path(user): Path<String>,
    Query(q): Query<PathQuery>,
    RawBody(body): RawBody,
) -> ApiResult<Json<ArchiveResult>> {
    let user = c.target(&user)?;
    let root = wpath(q.path.as_deref().unwrap_or(""))?;
    let files = s.engine.files(&user).await?;
    let res = blocking(move || archive::extract_tar(&files, &root, &body)).await?;
    Ok(Json(res))
}

// ---------------------------------------------------------------------------------------------
// Snapshots

fn snap_id(raw: &str) -> ApiResult<SnapshotId> {
    SnapshotId::new(raw).map_err(ApiError::from)
}

/// Takes a snapshot (201). A running `ns` workspace keeps running (frozen while it is
/// archived); a `dir` one is stopped for the archive and started again. Retention then keeps
/// the newest `snapshots.keep`; pinned ones are extra.
#[utoipa::path(post, path = "/v1/workspaces/{user}/snapshots", tag = "snapshots", security(("bearer" = [])),
    params(("user" = String, Path, description = "the owner, or `me`")),
    request_body(content = CreateSnapshot, description = "optional; an empty body takes a snapshot with a generated id"),
    responses((status = 201, body = Snapshot), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 409, description = "the id is taken", body = ErrorBody)))]
pub async fn create_snapshot(
    State(s): State<AppState>,
    Extension(c): Extension<Caller>,
    Path(user): Path<String>,
    JsonBody(body): JsonBody<Option<CreateSnapshot>>,
) -> ApiResult<(StatusCode, Json<Snapshot>)> {
    let user = c.target(&user)?;
    let body = body.unwrap_or_default();
    let id = body.id.as_deref().map(snap_id).transpose()?;
    let opts = SnapshotOptions { pinned: body.pinned, ..SnapshotOptions::default() };
    let m = s.engine.snapshot_create(&user, id, opts).await?;
    Ok((StatusCode::CREATED, Json(m.into())))
}

/// Lists the user's snapshots, newest first (they outlive the workspace).
#[utoipa::path(get, path = "/v1/workspaces/{user}/snapshots", tag = "snapshots", security(("bearer" = [])),
    params(("user" = String, Path, description = "the owner, or `me`")),
    responses((status = 200, body = Vec<Snapshot>), (status = 403, body = ErrorBody)))]
pub async fn list_snapshots(
    State(s): State<AppState>,
    Extension(c): Extension<Caller>,
    Path(user): Path<String>,
) -> ApiResult<Json<Vec<Snapshot>>> {
    let user = c.target(&user)?;
    Ok(Json(s.engine.snapshot_list(&user).await?.into_iter().map(Snapshot::from).collect()))
}

/// One snapshot.
#[utoipa::path(get, path = "/v1/workspaces/{user}/snapshots/{id}", tag = "snapshots", security(("bearer" = [])),
    params(("user" = String, Path, description = "the owner, or `me`"), ("id" = String, Path, description = "the snapshot")),
    responses((status = 200, body = Snapshot), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn get_snapshot(
    State(s): State<AppState>,
    Extension(c): Extension<Caller>,
    Path((user, id)): Path<(String, String)>,
) -> ApiResult<Json<Snapshot>> {
    let user = c.target(&user)?;
    Ok(Json(s.engine.snapshot_get(&user, &snap_id(&id)?).await?.into()))
}

/// Restores a snapshot: verified and unpacked beside the workspace first, then the current
/// files are saved as a `pre_restore` snapshot, the new tree swapped in, and the workspace
/// started again if it was running. On failure the workspace is as it was.
#[utoipa::path(post, path = "/v1/workspaces/{user}/snapshots/{id}/restore", tag = "snapshots", security(("bearer" = [])),
    params(("user" = String, Path, description = "the owner, or `me`"), ("id" = String, Path, description = "the snapshot")),
    responses((status = 200, body = RestoreResult), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn restore_snapshot(
    State(s): State<AppState>,
    Extension(c): Extension<Caller>,
    Path((user, id)): Path<(String, String)>,
) -> ApiResult<Json<RestoreResult>> {
    let user = c.target(&user)?;
    Ok(Json(s.engine.snapshot_restore(&user, &snap_id(&id)?).await?.into()))
}

/// Deletes a snapshot.
#[utoipa::path(delete, path = "/v1/workspaces/{user}/snapshots/{id}", tag = "snapshots", security(("bearer" = [])),
    params(("user" = String, Path, description = "the owner, or `me`"), ("id" = String, Path, description = "the snapshot")),
    responses((status = 204, description = "deleted"), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn delete_snapshot(
    State(s): State<AppState>,
    Extension(c): Extension<Caller>,
    Path((user, id)): Path<(String, String)>,
) -> ApiResult<StatusCode> {
    let user = c.target(&user)?;
    s.engine.snapshot_delete(&user, &snap_id(&id)?).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `POST .../snapshots/{id}/pin` body.
#[derive(Clone, Debug, Deserialize, serde::Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PinBody {
    /// Pin (true, the default) or unpin (false).
    #[serde(default = "yes")]
    pub pinned: bool,
}

fn yes() -> bool {
    true
}

/// Pins a snapshot (retention never deletes it) or unpins it.
#[utoipa::path(post, path = "/v1/workspaces/{user}/snapshots/{id}/pin", tag = "snapshots", security(("bearer" = [])),
    params(("user" = String, Path, description = "the owner, or `me`"), ("id" = String, Path, description = "the snapshot")),
    request_body(content = PinBody, description = "optional; default pins"),
    responses((status = 200, body = Snapshot), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn pin_snapshot(
    State(s): State<AppState>,
    Extension(c): Extension<Caller>,
    Path((user, id)): Path<(String, String)>,
    JsonBody(body): JsonBody<Option<PinBody>>,
) -> ApiResult<Json<Snapshot>> {
    let user = c.target(&user)?;
    let pinned = body.is_none_or(|b| b.pinned);
    Ok(Json(s.engine.snapshot_pin(&user, &snap_id(&id)?, pinned).await?.into()))
}

/// The seed's route: snapshots a user's workspace (`snapshot_id` optional).
#[utoipa::path(post, path = "/snapshot/create", tag = "seed", security(("bearer" = [])),
    request_body = SeedSnapshotCreate,
    responses((status = 200, body = SeedSnapshotCreated), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn seed_snapshot_create(
    State(s): State<AppState>,
    Extension(c): Extension<Caller>,
    JsonBody(body): JsonBody<SeedSnapshotCreate>,
) -> ApiResult<Json<SeedSnapshotCreated>> {
    let user = c.target(&body.user_id)?;
    let id = body.snapshot_id.as_deref().map(snap_id).transpose()?;
    let m = s.engine.snapshot_create(&user, id, SnapshotOptions::default()).await?;
    Ok(Json(SeedSnapshotCreated { user_id: user.to_string(), snapshot_id: m.id.to_string(), snapshot: m.into() }))
}

/// The seed's route: restores a user's workspace from a snapshot.
#[utoipa::path(post, path = "/snapshot/restore", tag = "seed", security(("bearer" = [])),
    request_body = SeedSnapshotRestore,
    responses((status = 200, body = SeedSnapshotRestored), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn seed_snapshot_restore(
    State(s): State<AppState>,
    Extension(c): Extension<Caller>,
    JsonBody(body): JsonBody<SeedSnapshotRestore>,
) -> ApiResult<Json<SeedSnapshotRestored>> {
    let user = c.target(&body.user_id)?;
    let id = snap_id(&body.snapshot_id)?;
    let r = s.engine.snapshot_restore(&user, &id).await?;
    Ok(Json(SeedSnapshotRestored {
        user_id: user.to_string(),
        snapshot_id: r.restored.id.to_string(),
        pre_restore_id: r.pre_restore.id.to_string(),
        files: r.files,
        restarted: r.restarted,
    }))
}

/// The seed's route: lists a user's snapshots, newest first.
#[utoipa::path(get, path = "/snapshot/list/{user_id}", tag = "seed", security(("bearer" = [])),
    params(("user_id" = String, Path, description = "the owner, or `me`")),
    responses((status = 200, body = SeedSnapshotList), (status = 403, body = ErrorBody)))]
pub async fn seed_snapshot_list(
    State(s): State<AppState>,
    Extension(c): Extension<Caller>,
    Path(user): Path<String>,
) -> ApiResult<Json<SeedSnapshotList>> {
    let user = c.target(&user)?;
    let list = s.engine.snapshot_list(&user).await?;
    Ok(Json(SeedSnapshotList { user_id: user.to_string(), snapshots: list.into_iter().map(Snapshot::from).collect() }))
}

// ---------------------------------------------------------------------------------------------
// Fallbacks

/// Unknown route.
pub async fn not_found() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such route; GET /openapi.json lists them")
}

/// Known route, wrong method.
pub async fn method_not_allowed() -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "this route does not take that method; see /openapi.json",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utf8_carry_never_splits_a_character() {
        let mut c = Utf8Carry::default();
        let e = "é".as_bytes();
        assert_eq!(c.push(b"a"), "a");
        assert_eq!(c.push(&e[..1]), "");
        assert_eq!(c.push(&e[1..]), "é");
        assert_eq!(c.push(b"\xffb"), "\u{FFFD}b", "invalid bytes are replaced, not carried");
        assert_eq!(c.push(&"€".as_bytes()[..2]), "");
        assert_eq!(c.finish().as_deref(), Some("\u{FFFD}"), "an unfinished character at the end");
        assert_eq!(c.finish(), None);
    }
}
