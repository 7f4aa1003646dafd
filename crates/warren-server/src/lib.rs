//! Warren's control plane: `warren serve`.
//!
//! * [`routes`]: the REST API under `/v1`, the seed's `/snapshot/...` routes, `/healthz`,
//!   `/readyz`, `/metrics` and `/openapi.json`;
//! * [`auth`]: bearer JWTs checked against a JWKS URL, a PEM public key or an HS256 secret
//!   ([`dev`]: the development secret in the state directory);
//! * [`error`]: one JSON error shape and the one mapping of error kinds to HTTP statuses;
//! * [`terminal`]: the browser terminal (WebSocket at `/v1/workspaces/{user}/terminal`, the
//!   page at `/terminal`), sessions that survive disconnects;
//! * per-user rate limiting ([`ratelimit`]), body limits, request timeouts, metrics
//!   ([`metrics`]) and an audit event for every mutating call.
//!
//! A request to `/v1` or `/snapshot` passes, in order: metrics (outermost), the request timeout
//! (not for exec, which has its own), authentication (401), the user's rate limit (429), the
//! handler (which resolves `{user}`, `me` included, and answers 403 for anyone else's workspace
//! unless the caller is an admin), then the audit record for POST, PUT and DELETE.

pub mod api;
pub mod archive;
pub mod auth;
pub mod code_api;
pub mod config;
pub mod dev;
pub mod error;
pub mod metrics;
pub mod ratelimit;
pub mod routes;
pub mod skill_api;
pub mod terminal;

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{MatchedPath, Request, State};
use axum::http::{header, Method};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use serde_json::json;
use tokio::net::TcpListener;
use tracing::{info, warn};
use utoipa::OpenApi;
use warren_core::UserId;
use warren_engine::Engine;

use crate::auth::{Authenticator, Principal};
use crate::config::{AuthConfig, ServerConfig};
use crate::error::ApiError;
use crate::metrics::Metrics;
use crate::ratelimit::RateLimiter;

/// Shared by every request.
#[derive(Clone, Debug)]
pub struct AppState(Arc<Inner>);

/// What [`AppState`] holds.
#[derive(Debug)]
pub struct Inner {
    /// The engine.
    pub engine: Arc<Engine>,
    /// Token verification.
    pub auth: Arc<Authenticator>,
    /// Settings.
    pub cfg: ServerConfig,
    /// The terminal sessions.
    pub terminals: Arc<terminal::Terminals>,
    limiter: RateLimiter,
    metrics: Metrics,
    /// Set when the shutdown grace period is over: handlers and response streams still running
    /// end then (which kills their commands).
    cut: tokio::sync::watch::Sender<bool>,
}

impl Inner {
    /// Completes when the shutdown grace period is over.
    pub fn cut_off(&self) -> impl Future<Output = ()> + Send + 'static {
        let mut rx = self.cut.subscribe();
        async move {
            let _ = rx.wait_for(|cut| *cut).await;
        }
    }
}

impl std::ops::Deref for AppState {
    type Target = Inner;
    fn deref(&self) -> &Inner {
        &self.0
    }
}

/// The authenticated caller of a request, and the workspace owner it acted on (for the audit
/// record).
#[derive(Clone, Debug)]
pub struct Caller {
    /// Who the token names.
    pub principal: Principal,
    target: Arc<Mutex<Option<UserId>>>,
}

impl Caller {
    /// See [`Principal::target`]; remembers the target for the audit record.
    pub fn target(&self, raw: &str) -> Result<UserId, ApiError> {
        let user = if raw == "me" { self.principal.user.clone() } else { UserId::new(raw).map_err(ApiError::from)? };
        *self.target.lock().unwrap_or_else(|p| p.into_inner()) = Some(user.clone());
        self.principal.check(&user)?;
        Ok(user)
    }
}

/// The server.
#[derive(Debug)]
pub struct Server {
    state: AppState,
}

impl Server {
    /// Builds the server on `engine`: checks the settings, sets up authentication (creating
    /// the development secret in the engine's state directory when no keys are configured) and
    /// fetches the JWKS once if there is one.
    pub async fn new(engine: Arc<Engine>, cfg: ServerConfig, auth: &AuthConfig) -> warren_core::Result<Self> {
        for note in cfg.validate().map_err(|e| warren_core::Error::InvalidRequest(e.to_string()))? {
            warn!("{note}");
        }
        let authn = Authenticator::new(auth, &engine.config().state_dir)?;
        authn.warm_up().await;
        let inner = Inner {
            engine,
            auth: Arc::new(authn),
            limiter: RateLimiter::new(cfg.rate_limit_rps, cfg.rate_limit_burst),
            metrics: Metrics::default(),
            cut: tokio::sync::watch::channel(false).0,
            terminals: terminal::Terminals::new(cfg.terminal()),
            cfg,
        };
        Ok(Self { state: AppState(Arc::new(inner)) })
    }

    /// The token verifier (to mint development tokens).
    pub fn authenticator(&self) -> &Authenticator {
        &self.state.auth
    }

    /// The HTTP application.
    pub fn router(&self) -> Router {
        router(self.state.clone())
    }

    /// Serves on `listener` until `shutdown` completes, then lets in-flight requests finish
    /// for at most `shutdown_grace_secs` (streams still open then are cut, which kills their
    /// commands).
    pub async fn serve(
        self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        let grace = Duration::from_secs(self.state.cfg.shutdown_grace_secs);
        if let Ok(addr) = listener.local_addr() {
            let _ = self.state.terminals.local_addr.set(addr);
        }
        let app = self.router();
        let (stop_tx, mut stop_rx) = tokio::sync::watch::channel(false);
        let mut server = tokio::spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(async move {
                    let _ = stop_rx.changed().await;
                })
                .await
        });
        tokio::select! {
            r = &mut server => return r.unwrap_or_else(|e| Err(std::io::Error::other(e))),
            () = shutdown => {}
        }
        info!(grace_secs = grace.as_secs(), "shutting down: finishing in-flight requests");
        let _ = stop_tx.send(true);
        // Terminal connections are upgraded: the HTTP server does not wait for them. Their
        // sessions end now (clients get 1001 and `shutting_down`).
        self.state.terminals.shutdown().await;
        match tokio::time::timeout(grace, &mut server).await {
            Ok(r) => r.unwrap_or_else(|e| Err(std::io::Error::other(e))),
            Err(_) => {
                warn!("in-flight requests did not finish within {} s; cutting them off", grace.as_secs());
                let _ = self.state.cut.send(true);
                match tokio::time::timeout(Duration::from_secs(5), &mut server).await {
                    Ok(r) => r.unwrap_or_else(|e| Err(std::io::Error::other(e))),
                    Err(_) => {
                        server.abort();
                        Ok(())
                    }
                }
            }
        }
    }
}

/// The application: routes, then (inside out) authentication on the API routes, the request
/// timeout, and metrics.
pub fn router(state: AppState) -> Router {
    use routes::*;
    let api = Router::new()
        .route("/v1/whoami", get(whoami))
        .route("/v1/workspaces", post(create_workspace).get(list_workspaces))
        .route("/v1/workspaces/{user}", get(get_workspace).delete(destroy_workspace))
        .route("/v1/workspaces/{user}/start", post(start_workspace))
        .route("/v1/workspaces/{user}/stop", post(stop_workspace))
        .route("/v1/workspaces/{user}/stats", get(stats))
        .route("/v1/workspaces/{user}/policy", get(get_policy).put(set_policy))
        .route("/v1/workspaces/{user}/exec", post(exec))
        .route("/v1/workspaces/{user}/exec/stream", post(exec_stream))
        .route("/v1/workspaces/{user}/files", get(list_files))
        .route("/v1/workspaces/{user}/files/{*path}", get(read_file).put(write_file).delete(delete_file))
        .route("/v1/workspaces/{user}/archive", get(get_archive).put(put_archive))
        .route("/v1/workspaces/{user}/snapshots", post(create_snapshot).get(list_snapshots))
        .route("/v1/workspaces/{user}/snapshots/{id}", get(get_snapshot).delete(delete_snapshot))
        .route("/v1/workspaces/{user}/snapshots/{id}/restore", post(restore_snapshot))
        .route("/v1/workspaces/{user}/snapshots/{id}/pin", post(pin_snapshot))
        .route("/v1/workspaces/{user}/terminal/sessions", get(terminal::list_sessions))
        .route("/v1/workspaces/{user}/terminal/sessions/{id}", axum::routing::delete(terminal::close_session))
        .route("/v1/events", get(events))
        .route("/snapshot/create", post(seed_snapshot_create))
        .route("/snapshot/restore", post(seed_snapshot_restore))
        .route("/snapshot/list/{user_id}", get(seed_snapshot_list))
        .merge(code_api::routes())
        .merge(skill_api::routes())
        .route_layer(middleware::from_fn_with_state(state.clone(), authenticate));
    let ops = Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/openapi.json", get(openapi_json));
    Router::new()
        .merge(api)
        .merge(ops)
        .merge(terminal::public_routes())
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(middleware::from_fn_with_state(state.clone(), request_timeout))
        .layer(middleware::from_fn_with_state(state.clone(), cut_at_shutdown))
        .layer(middleware::from_fn_with_state(state.clone(), observe))
        .with_state(state)
}

fn route_of(req: &Request) -> String {
    req.extensions().get::<MatchedPath>().map_or_else(|| "unmatched".to_owned(), |m| m.as_str().to_owned())
}

async fn observe(State(s): State<AppState>, req: Request, next: Next) -> Response {
    let method = match *req.method() {
        Method::GET | Method::HEAD | Method::POST | Method::PUT | Method::DELETE | Method::PATCH | Method::OPTIONS => {
            req.method().to_string()
        }
        _ => "OTHER".to_owned(), // keeps the label set bounded
    };
    let (route, started) = (route_of(&req), Instant::now());
    let resp = next.run(req).await;
    s.metrics.observe(&route, &method, resp.status().as_u16(), started.elapsed());
    resp
}

async fn cut_at_shutdown(State(s): State<AppState>, req: Request, next: Next) -> Response {
    tokio::select! {
        r = next.run(req) => r,
        () = s.cut_off() => ApiError::new(
            axum::http::StatusCode::SERVICE_UNAVAILABLE,
            "shutting_down",
            "the server is shutting down and cut this request off; retry when it is back",
        )
        .into_response(),
    }
}

async fn request_timeout(State(s): State<AppState>, req: Request, next: Next) -> Response {
    let route = route_of(&req);
    if route.contains("/exec") || route.contains("/snapshot") || route.starts_with("/v1/skills") {
        // exec runs under its own timeout; a snapshot or restore takes as long as the tree needs
        // (and finishes even if its caller goes away); skill builds and tools run under the
        // skill's timeouts.
        return next.run(req).await;
    }
    let secs = s.cfg.request_timeout_secs;
    match tokio::time::timeout(Duration::from_secs(secs), next.run(req)).await {
        Ok(r) => r,
        Err(_) => ApiError::request_timeout(secs).into_response(),
    }
}

async fn authenticate(State(s): State<AppState>, mut req: Request, next: Next) -> Response {
    let header = req.headers().get(header::AUTHORIZATION).map(|v| v.to_str().unwrap_or("\u{0}"));
    let principal = match s.auth.verify_header(header).await {
        Ok(p) => p,
        Err(e) => {
            tracing::debug!(route = %route_of(&req), reason = %e.message, "unauthenticated request");
            return e.into_response();
        }
    };
    // The token stops here: nothing after this point sees the header.
    req.headers_mut().remove(header::AUTHORIZATION);
    if !s.limiter.allow(&principal.user) {
        return ApiError::rate_limited().into_response();
    }
    let caller = Caller { principal: principal.clone(), target: Arc::new(Mutex::new(None)) };
    let slot = caller.target.clone();
    let (method, route) = (req.method().clone(), route_of(&req));
    req.extensions_mut().insert(caller);
    let resp = next.run(req).await;
    if matches!(method, Method::POST | Method::PUT | Method::DELETE | Method::PATCH) {
        let target = slot.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let detail = json!({
            "by": principal.user.as_str(),
            "admin": principal.admin,
            "method": method.as_str(),
            "route": route,
            "status": resp.status().as_u16(),
        });
        let who = target.as_ref().unwrap_or(&principal.user);
        if let Err(e) = s.engine.audit(Some(who), "api", detail).await {
            warn!(error = %e, "recording the audit event failed");
        }
    }
    resp
}

/// The OpenAPI document, generated from the handlers and types.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "warren",
        description = "Isolated, persistent workspaces, one per user. Every /v1 and /snapshot call needs \
                       `Authorization: Bearer <JWT>`; a normal user acts only on their own workspace \
                       (`me`), anything else is 403. Errors are `{\"error\":{\"code\",\"message\"}}`.",
        license(name = "Apache-2.0")
    ),
    paths(
        routes::healthz, routes::readyz, routes::metrics, routes::openapi_json, routes::whoami,
        routes::create_workspace, routes::list_workspaces, routes::get_workspace, routes::start_workspace,
        routes::stop_workspace, routes::destroy_workspace, routes::stats, routes::get_policy, routes::set_policy,
        routes::events,
        routes::exec, routes::exec_stream,
        routes::list_files, routes::read_file, routes::write_file, routes::delete_file,
        routes::get_archive, routes::put_archive,
        routes::create_snapshot, routes::list_snapshots, routes::get_snapshot, routes::restore_snapshot,
        routes::delete_snapshot, routes::pin_snapshot,
        routes::seed_snapshot_create, routes::seed_snapshot_restore, routes::seed_snapshot_list,
        terminal::ws::terminal_ws, terminal::list_sessions, terminal::close_session,
    ),
    components(schemas(error::ErrorBody, error::ErrorDetail)),
    modifiers(&BearerAuth),
    tags(
        (name = "workspaces", description = "Create, inspect, start, stop and destroy workspaces"),
        (name = "exec", description = "Run commands"),
        (name = "files", description = "Files and trees (tar)"),
        (name = "snapshots", description = "Snapshots: take, list, restore, delete, pin"),
        (name = "seed", description = "The seed's snapshot routes, kept working"),
        (name = "terminal", description = "The browser terminal: its WebSocket (docs/terminal-protocol.md) and its sessions"),
        (name = "operations", description = "Health, readiness, metrics, this document"),
    )
)]
#[derive(Debug)]
pub struct ApiDoc;

struct BearerAuth;

impl utoipa::Modify for BearerAuth {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
        let components = doc.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).bearer_format("JWT").build()),
        );
    }
}

/// The OpenAPI document as pretty JSON with a final newline (what `docs/openapi.json` holds).
pub fn openapi_json() -> String {
    let mut doc = ApiDoc::openapi();
    doc.merge(code_api::CodeApiDoc::openapi());
    doc.merge(skill_api::SkillApiDoc::openapi());
    doc.info.version = env!("CARGO_PKG_VERSION").to_owned();
    let mut s = doc.to_pretty_json().unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"));
    s.push('\n');
    s
}
