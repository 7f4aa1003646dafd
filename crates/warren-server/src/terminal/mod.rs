//! The browser terminal: a login shell on a pseudo-terminal in the user's workspace, over a
//! WebSocket, in sessions that survive disconnects.
//!
//! * [`protocol`]: the messages and close codes (`docs/terminal-protocol.md`);
//! * [`ws`]: one connection: `auth` (first message, the same JWT rules as the API, never in the
//!   URL), `attach` (new or existing session), then bytes both ways;
//! * [`session`]: the sessions, their flow control and timeouts;
//! * [`emulator`]: the `vt100` state per session that a re-attach replays;
//! * [`shell`]: the command a session runs (login shell, `container-info`);
//! * [`page`]: the xterm.js page at `/terminal` and `/container-terminal`, its assets, the
//!   development sign-in.
//!
//! The WebSocket and the page are outside the API's authentication layer (a browser cannot set
//! an `Authorization` header on a WebSocket); the session list and close routes are API routes.

pub mod emulator;
pub mod page;
pub mod protocol;
pub mod session;
pub mod shell;
pub mod ws;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Extension, Json, Router};

pub use session::{SessionInfo, TerminalConfig, Terminals};

use crate::error::{ApiError, ApiResult, ErrorBody};
use crate::{AppState, Caller};

/// The routes that need no `Authorization` header: the WebSocket (it authenticates with its
/// first message) and the page with its assets.
pub fn public_routes() -> Router<AppState> {
    Router::new()
        .route("/v1/workspaces/{user}/terminal", get(ws::terminal_ws))
        .route("/", get(page::root))
        .route("/terminal", get(page::page))
        .route("/container-terminal", get(page::page))
        .route("/terminal/assets/{name}", get(page::asset))
        .route("/terminal/config", get(page::config))
        .route("/terminal/dev-login", post(page::dev_login))
}

/// The user's terminal sessions, oldest first.
#[utoipa::path(get, path = "/v1/workspaces/{user}/terminal/sessions", tag = "terminal", security(("bearer" = [])),
    params(("user" = String, Path, description = "the owner, or `me`")),
    responses((status = 200, body = Vec<SessionInfo>), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
pub async fn list_sessions(
    State(s): State<AppState>,
    Extension(c): Extension<Caller>,
    Path(user): Path<String>,
) -> ApiResult<Json<Vec<SessionInfo>>> {
    let user = c.target(&user)?;
    Ok(Json(s.terminals.list(&user).iter().map(|s| s.info()).collect()))
}

/// Closes a terminal session: its shell is killed and its client (if attached) gets
/// `session_closed` and close code 4410.
#[utoipa::path(delete, path = "/v1/workspaces/{user}/terminal/sessions/{id}", tag = "terminal", security(("bearer" = [])),
    params(("user" = String, Path, description = "the owner, or `me`"), ("id" = String, Path, description = "the session")),
    responses((status = 204, description = "closed"), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn close_session(
    State(s): State<AppState>,
    Extension(c): Extension<Caller>,
    Path((user, id)): Path<(String, String)>,
) -> ApiResult<StatusCode> {
    let user = c.target(&user)?;
    if s.terminals.close(&user, &id, "session_closed", "the session was closed through the API").await {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::new(StatusCode::NOT_FOUND, "not_found", format!("no terminal session {id} of user {user}")))
    }
}
