//! The terminal web page (`/terminal`, and `/container-terminal`, the seed's address), its
//! assets (built into the binary), and the development sign-in.
//!
//! xterm.js and its fit addon come from npm (`@xterm/xterm`, `@xterm/addon-fit`), vendored
//! into `crates/warren-server/assets/` by `scripts/update-terminal-assets` (versions in
//! `assets/VERSIONS`, MIT licences beside them); the page, its script and style are warren's.

use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};
use warren_core::UserId;

use crate::auth::AuthMode;
use crate::error::{ApiError, ApiResult};
use crate::routes::JsonBody;
use crate::AppState;

/// Lifetime of a development sign-in token.
pub const DEV_TOKEN_TTL: Duration = Duration::from_secs(12 * 3600);

const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; \
                   connect-src 'self'; img-src 'self' data:; font-src 'self' data:; \
                   frame-ancestors 'none'; base-uri 'none'; form-action 'none'";

/// (name, content type, bytes) of every asset.
const ASSETS: &[(&str, &str, &[u8])] = &[
    ("xterm.js", "text/javascript; charset=utf-8", include_bytes!("../../assets/xterm.js")),
    ("xterm.css", "text/css; charset=utf-8", include_bytes!("../../assets/xterm.css")),
    ("addon-fit.js", "text/javascript; charset=utf-8", include_bytes!("../../assets/addon-fit.js")),
    ("terminal.js", "text/javascript; charset=utf-8", include_bytes!("../../assets/terminal.js")),
    ("terminal.css", "text/css; charset=utf-8", include_bytes!("../../assets/terminal.css")),
    ("LICENSE-xterm", "text/plain; charset=utf-8", include_bytes!("../../assets/LICENSE-xterm")),
    ("LICENSE-addon-fit", "text/plain; charset=utf-8", include_bytes!("../../assets/LICENSE-addon-fit")),
    ("VERSIONS", "text/plain; charset=utf-8", include_bytes!("../../assets/VERSIONS")),
];

const PAGE: &[u8] = include_bytes!("../../assets/terminal.html");

fn with_headers(mut resp: Response, content_type: &'static str, cache: &'static str) -> Response {
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static(cache));
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    resp
}

/// `GET /terminal` and `GET /container-terminal`: the page.
pub async fn page() -> Response {
    let mut resp = with_headers(PAGE.into_response(), "text/html; charset=utf-8", "no-cache");
    let h = resp.headers_mut();
    h.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP));
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    resp
}

/// `GET /terminal/assets/{name}`.
pub async fn asset(Path(name): Path<String>) -> Response {
    match ASSETS.iter().find(|(n, _, _)| *n == name) {
        Some((_, ct, bytes)) => with_headers(bytes.into_response(), ct, "no-cache"),
        None => {
            ApiError::new(StatusCode::NOT_FOUND, "not_found", format!("no terminal asset {name:?}")).into_response()
        }
    }
}

/// What the page needs to know about the server.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PageConfig {
    /// The development sign-in is available.
    pub dev_login: bool,
    /// Where the terminal WebSocket is (`{user}` may be `me`).
    pub websocket: String,
}

/// Development sign-in is available: development mode and a loopback listening address.
pub fn dev_login_enabled(s: &AppState) -> bool {
    s.terminals.local_addr.get().is_some_and(|a| dev_login_possible(s.auth.mode(), *a))
}

/// Whether a server with this auth mode listening on `addr` offers the development sign-in.
pub fn dev_login_possible(mode: AuthMode, addr: std::net::SocketAddr) -> bool {
    mode == AuthMode::Dev && addr.ip().is_loopback()
}

/// `GET /`: to the terminal page.
pub async fn root() -> axum::response::Redirect {
    axum::response::Redirect::to("/terminal")
}

/// `GET /terminal/config`.
pub async fn config(State(s): State<AppState>) -> Json<PageConfig> {
    Json(PageConfig { dev_login: dev_login_enabled(&s), websocket: "/v1/workspaces/{user}/terminal".into() })
}

/// `POST /terminal/dev-login` body.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DevLogin {
    /// The user to sign in as.
    pub user: String,
}

/// `POST /terminal/dev-login` answer.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct DevToken {
    /// A token for `user` (not an admin's).
    pub token: String,
    /// The user.
    pub user: String,
    /// Lifetime, seconds.
    pub expires_in: u64,
}

/// `POST /terminal/dev-login`: a token for any user, only in development mode on a loopback
/// address (404 otherwise), and only from a page of this server (an `Origin` header, when
/// there is one, must name this host).
pub async fn dev_login(
    State(s): State<AppState>,
    headers: HeaderMap,
    JsonBody(body): JsonBody<DevLogin>,
) -> ApiResult<Json<DevToken>> {
    if !dev_login_enabled(&s) {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            "signing in locally needs development mode on a loopback address; use a token",
        ));
    }
    if let Some(origin) = headers.get(header::ORIGIN) {
        let host = headers.get(header::HOST).and_then(|h| h.to_str().ok()).unwrap_or("");
        let origin = origin.to_str().unwrap_or("");
        let same = origin.strip_prefix("http://").or_else(|| origin.strip_prefix("https://")) == Some(host);
        if !same {
            return Err(ApiError::forbidden("signing in locally is only allowed from this server's own page"));
        }
    }
    let user = UserId::new(body.user.trim()).map_err(ApiError::from)?;
    let token = s
        .auth
        .mint(&user, false, DEV_TOKEN_TTL)
        .ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, "not_found", "this server cannot mint tokens"))?
        .map_err(ApiError::from)?;
    tracing::info!(user = %user, "development sign-in");
    Ok(Json(DevToken { token, user: user.to_string(), expires_in: DEV_TOKEN_TTL.as_secs() }))
}
