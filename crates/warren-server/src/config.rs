//! The server's settings: the `[server]` and `[auth]` tables of the configuration file, then
//! `WARREN_*` environment variables (and the seed's container variables) over them.
//!
//! | TOML key | environment | default | meaning |
//! | --- | --- | --- | --- |
//! | `server.listen` | `WARREN_LISTEN` | `127.0.0.1:7878` | address to listen on |
//! | `server.max_json_bytes` | `WARREN_MAX_JSON_BYTES` | 1 MiB | body limit of JSON routes |
//! | `server.max_body_bytes` | `WARREN_MAX_BODY_BYTES` | 64 MiB | body limit of file and archive uploads |
//! | `server.request_timeout_secs` | `WARREN_REQUEST_TIMEOUT_SECS` | 120 | time to a response's headers (exec has its own) |
//! | `server.exec_timeout_secs` | `WARREN_EXEC_TIMEOUT_SECS` | 600 | exec timeout when a request gives none |
//! | `server.max_exec_timeout_secs` | `WARREN_MAX_EXEC_TIMEOUT_SECS` | 3600 | longest exec timeout a request may ask for |
//! | `server.rate_limit_rps` | `WARREN_RATE_LIMIT_RPS` | 50 | per-user token bucket: refill per second (0 switches it off) |
//! | `server.rate_limit_burst` | `WARREN_RATE_LIMIT_BURST` | 100 | per-user token bucket: size |
//! | `server.shutdown_grace_secs` | `WARREN_SHUTDOWN_GRACE_SECS` | 30 | how long in-flight requests may finish on SIGINT/SIGTERM |
//! | `server.terminal_reconnect_secs` | `WARREN_TERMINAL_RECONNECT_SECS` | 300 | a disconnected terminal session waits this long to be re-attached |
//! | `server.terminal_idle_secs` | `WARREN_TERMINAL_IDLE_SECS` | 3600 | a terminal session without input or output this long is closed |
//! | `server.terminal_max_sessions` | `WARREN_TERMINAL_MAX_SESSIONS` | 8 | terminal sessions per user |
//! | `server.use_containers` | `USE_CONTAINERS` | false | the seed's pooled mode: new workspaces go to the container pool (backend `pool`; `[pool] enabled`) |
//! | `server.max_containers` | `MAX_CONTAINERS` | 10 | most containers in the pool (`[pool] max_containers`) |
//! | `server.users_per_container` | `USERS_PER_CONTAINER` | 20 | most users per pooled container (`[pool] users_per_container`) |
//! | `server.container_image` | `CONTAINER_IMAGE` | `warren-workspace:latest` | the image of workspaces (the top-level `image`): a docker tag for docker and pool, an imported root filesystem for ns (`warren image import`) |
//! | `server.code_project_roots` | | none | directories beneath which a normal user may start a code session on a project of the host (`{user}` in a root is the caller's user id); admins may start one on any directory |
//! | `auth.jwks_url` | `WARREN_JWKS_URL` | none | verify tokens against this JWKS (Auth0, Keycloak, Clerk, Supabase, ...) |
//! | `auth.public_key_file` | `WARREN_JWT_PUBLIC_KEY_FILE` | none | ... or against this PEM public key (RSA, P-256 or Ed25519) |
//! | `auth.secret_file` | `WARREN_JWT_SECRET_FILE` | none | ... or HS256 with the secret in this file |
//! | `auth.secret` | `WARREN_JWT_SECRET` | none | ... or HS256 with this secret |
//! | `auth.issuer` | `WARREN_JWT_ISSUER` | none (`warren-dev` in development mode) | required `iss` |
//! | `auth.audience` | `WARREN_JWT_AUDIENCE` | none (`warren` in development mode) | required `aud` |
//! | `auth.algorithms` | `WARREN_JWT_ALGORITHMS` (comma-separated) | RS256, ES256, EdDSA (keys); HS256 (secret) | the allow-list |
//! | `auth.user_claim` | `WARREN_JWT_USER_CLAIM` | `sub` | the claim naming the user (must be a valid user id) |
//! | `auth.admin_claim` | `WARREN_JWT_ADMIN_CLAIM` | `scope` | the claim that can grant operator access |
//! | `auth.admin_value` | `WARREN_JWT_ADMIN_VALUE` | `warren:admin` | ... when it is this string, or a space-separated list or array containing it |
//! | `auth.leeway_secs` | `WARREN_JWT_LEEWAY_SECS` | 30 | clock skew allowed on `exp` and `nbf` |
//! | `auth.jwks_min_refresh_secs` | | 30 | an unknown `kid` refetches the JWKS at most this often |
//! | `auth.jwks_max_age_secs` | | 600 | the JWKS is refetched when older than this |
//! | `auth.jwks_timeout_ms` | | 5000 | bound on one JWKS fetch |
//! | `auth.max_token_bytes` | | 8192 | longer tokens are refused unread |
//!
//! With none of `jwks_url`, `public_key_file`, `secret_file` and `secret` set, the server runs
//! in **development mode**: it signs and checks HS256 tokens with a secret it keeps in
//! `{state}/dev-secret`.

use std::net::SocketAddr;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// The `[server]` table.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerConfig {
    /// Address to listen on.
    pub listen: SocketAddr,
    /// Body limit of JSON routes, bytes.
    pub max_json_bytes: usize,
    /// Body limit of file and archive uploads, bytes.
    pub max_body_bytes: usize,
    /// Time to a response's headers, seconds (exec routes use the exec timeouts instead).
    pub request_timeout_secs: u64,
    /// Exec timeout when a request gives none, seconds.
    pub exec_timeout_secs: u64,
    /// Longest exec timeout a request may ask for, seconds.
    pub max_exec_timeout_secs: u64,
    /// Per-user token bucket refill, requests per second; 0 switches rate limiting off.
    pub rate_limit_rps: u32,
    /// Per-user token bucket size.
    pub rate_limit_burst: u32,
    /// Grace period for in-flight requests at shutdown, seconds.
    pub shutdown_grace_secs: u64,
    /// A disconnected terminal session waits this long for its client, seconds.
    pub terminal_reconnect_secs: u64,
    /// A terminal session without input or output for this long is closed, seconds.
    pub terminal_idle_secs: u64,
    /// Terminal sessions per user.
    pub terminal_max_sessions: u32,
    /// The seed's `USE_CONTAINERS`: asks for the docker backend.
    pub use_containers: bool,
    /// The seed's `MAX_CONTAINERS`.
    pub max_containers: Option<u32>,
    /// The seed's `USERS_PER_CONTAINER`.
    pub users_per_container: Option<u32>,
    /// The seed's `CONTAINER_IMAGE`.
    pub container_image: Option<String>,
    /// Directories beneath which a normal user may start a code session (`{user}`: the
    /// caller's id), like `/srv/projects/{user}`; empty: only admins start sessions.
    pub code_project_roots: Vec<String>,
}

/// Default address: loopback only.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:7878";

/// Longest time any `*_secs` setting may give (10^12 s, the range of durations in
/// `warren_core::config::parse_duration`).
pub const MAX_SECS: u64 = 1_000_000_000_000;

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 7878)),
            max_json_bytes: 1 << 20,
            max_body_bytes: 64 << 20,
            request_timeout_secs: 120,
            exec_timeout_secs: 600,
            max_exec_timeout_secs: 3600,
            rate_limit_rps: 50,
            rate_limit_burst: 100,
            shutdown_grace_secs: 30,
            terminal_reconnect_secs: 300,
            terminal_idle_secs: 3600,
            terminal_max_sessions: 8,
            use_containers: false,
            max_containers: None,
            users_per_container: None,
            container_image: None,
            code_project_roots: Vec::new(),
        }
    }
}

/// The `[auth]` table.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthConfig {
    /// JWKS URL.
    pub jwks_url: Option<String>,
    /// PEM public key file.
    pub public_key_file: Option<PathBuf>,
    /// HS256 secret file.
    pub secret_file: Option<PathBuf>,
    /// HS256 secret.
    pub secret: Option<String>,
    /// Required issuer.
    pub issuer: Option<String>,
    /// Required audience.
    pub audience: Option<String>,
    /// Allowed algorithms (`RS256`, `ES256`, `EdDSA`, `HS256`, ...).
    pub algorithms: Option<Vec<String>>,
    /// The claim naming the user.
    pub user_claim: String,
    /// The claim that can grant operator access.
    pub admin_claim: String,
    /// The value of `admin_claim` that grants it.
    pub admin_value: String,
    /// Clock skew allowed, seconds.
    pub leeway_secs: u64,
    /// Least time between two JWKS fetches triggered by unknown `kid`s, seconds.
    pub jwks_min_refresh_secs: u64,
    /// Refetch the JWKS when older than this, seconds.
    pub jwks_max_age_secs: u64,
    /// Bound on one JWKS fetch, milliseconds.
    pub jwks_timeout_ms: u64,
    /// Longest token accepted, bytes.
    pub max_token_bytes: usize,
}

impl Default for AuthConfig {
    fn default() -> Self {
        Self {
            jwks_url: None,
            public_key_file: None,
            secret_file: None,
            secret: None,
            issuer: None,
            audience: None,
            algorithms: None,
            user_claim: "sub".into(),
            admin_claim: "scope".into(),
            admin_value: "warren:admin".into(),
            leeway_secs: 30,
            jwks_min_refresh_secs: 30,
            jwks_max_age_secs: 600,
            jwks_timeout_ms: 5000,
            max_token_bytes: 8192,
        }
    }
}

impl AuthConfig {
    /// True when no key source is configured: the server makes and uses a development secret.
    pub fn is_dev(&self) -> bool {
        self.jwks_url.is_none() && self.public_key_file.is_none() && self.secret_file.is_none() && self.secret.is_none()
    }
}

/// A setting that could not be read; says which and why.
#[derive(Debug, thiserror::Error)]
#[error("{name}={value:?}: {why}")]
pub struct SettingError {
    /// The variable or key.
    pub name: String,
    /// Its value.
    pub value: String,
    /// What is wrong and what is expected.
    pub why: String,
}

fn bad(name: &str, value: &str, why: impl Into<String>) -> SettingError {
    SettingError { name: name.to_owned(), value: value.to_owned(), why: why.into() }
}

/// Parses a boolean the way shells and the seed spell them.
pub fn parse_bool(name: &str, v: &str) -> Result<bool, SettingError> {
    match v.trim().to_ascii_lowercase().as_str() {
        "1" | "true" | "yes" | "on" => Ok(true),
        "0" | "false" | "no" | "off" | "" => Ok(false),
        _ => Err(bad(name, v, "expected true or false (or 1/0, yes/no, on/off)")),
    }
}

fn parse_num<T: std::str::FromStr>(name: &str, v: &str, what: &str) -> Result<T, SettingError> {
    v.trim().parse().map_err(|_| bad(name, v, format!("expected {what}")))
}

fn positive(name: &str, v: &str) -> Result<u32, SettingError> {
    let n: u32 = parse_num(name, v, "a whole number of at least 1")?;
    if n == 0 {
        return Err(bad(name, v, "expected a whole number of at least 1"));
    }
    Ok(n)
}

/// Checks an image reference (`CONTAINER_IMAGE`) for shape only: it is not pulled.
pub fn check_image(name: &str, v: &str) -> Result<(), SettingError> {
    let ok = !v.is_empty()
        && v.len() <= 255
        && v.as_bytes()[0].is_ascii_alphanumeric()
        && v.bytes().all(|b| b.is_ascii_alphanumeric() || b"./:_@-".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(bad(name, v, "expected an image reference like python:3.12-slim or registry.example.com/team/image:tag"))
    }
}

/// Applies environment variables (read through `get`) over the file's settings.
pub fn apply_env(
    server: &mut ServerConfig,
    auth: &mut AuthConfig,
    get: impl Fn(&str) -> Option<String>,
) -> Result<(), SettingError> {
    // The first name that is set wins: the WARREN_ spelling, then the seed's.
    let var = |names: &[&'static str]| names.iter().find_map(|n| get(n).map(|v| (*n, v)));
    if let Some((n, v)) = var(&["WARREN_LISTEN"]) {
        server.listen = parse_listen(&v).map_err(|why| bad(n, &v, why))?;
    }
    if let Some((n, v)) = var(&["WARREN_MAX_JSON_BYTES"]) {
        server.max_json_bytes = parse_num(n, &v, "a number of bytes")?;
    }
    if let Some((n, v)) = var(&["WARREN_MAX_BODY_BYTES"]) {
        server.max_body_bytes = parse_num(n, &v, "a number of bytes")?;
    }
    if let Some((n, v)) = var(&["WARREN_REQUEST_TIMEOUT_SECS"]) {
        server.request_timeout_secs = parse_num(n, &v, "seconds")?;
    }
    if let Some((n, v)) = var(&["WARREN_EXEC_TIMEOUT_SECS"]) {
        server.exec_timeout_secs = parse_num(n, &v, "seconds")?;
    }
    if let Some((n, v)) = var(&["WARREN_MAX_EXEC_TIMEOUT_SECS"]) {
        server.max_exec_timeout_secs = parse_num(n, &v, "seconds")?;
    }
    if let Some((n, v)) = var(&["WARREN_RATE_LIMIT_RPS"]) {
        server.rate_limit_rps = parse_num(n, &v, "requests per second (0 switches the limit off)")?;
    }
    if let Some((n, v)) = var(&["WARREN_RATE_LIMIT_BURST"]) {
        server.rate_limit_burst = parse_num(n, &v, "a number of requests")?;
    }
    if let Some((n, v)) = var(&["WARREN_SHUTDOWN_GRACE_SECS"]) {
        server.shutdown_grace_secs = parse_num(n, &v, "seconds")?;
    }
    if let Some((n, v)) = var(&["WARREN_TERMINAL_RECONNECT_SECS"]) {
        server.terminal_reconnect_secs = parse_num(n, &v, "seconds")?;
    }
    if let Some((n, v)) = var(&["WARREN_TERMINAL_IDLE_SECS"]) {
        server.terminal_idle_secs = parse_num(n, &v, "seconds")?;
    }
    if let Some((n, v)) = var(&["WARREN_TERMINAL_MAX_SESSIONS"]) {
        server.terminal_max_sessions = positive(n, &v)?;
    }
    if let Some((n, v)) = var(&["WARREN_USE_CONTAINERS", "USE_CONTAINERS"]) {
        server.use_containers = parse_bool(n, &v)?;
    }
    if let Some((n, v)) = var(&["WARREN_MAX_CONTAINERS", "MAX_CONTAINERS"]) {
        server.max_containers = Some(positive(n, &v)?);
    }
    if let Some((n, v)) = var(&["WARREN_USERS_PER_CONTAINER", "USERS_PER_CONTAINER"]) {
        server.users_per_container = Some(positive(n, &v)?);
    }
    if let Some((n, v)) = var(&["WARREN_CONTAINER_IMAGE", "CONTAINER_IMAGE"]) {
        check_image(n, &v)?;
        server.container_image = Some(v);
    }
    let text = |names: &[&'static str]| var(names).map(|(_, v)| v).filter(|v| !v.is_empty());
    if let Some(v) = text(&["WARREN_JWKS_URL"]) {
        auth.jwks_url = Some(v);
    }
    if let Some(v) = text(&["WARREN_JWT_PUBLIC_KEY_FILE"]) {
        auth.public_key_file = Some(PathBuf::from(v));
    }
    if let Some(v) = text(&["WARREN_JWT_SECRET_FILE"]) {
        auth.secret_file = Some(PathBuf::from(v));
    }
    if let Some(v) = text(&["WARREN_JWT_SECRET"]) {
        auth.secret = Some(v);
    }
    if let Some(v) = text(&["WARREN_JWT_ISSUER"]) {
        auth.issuer = Some(v);
    }
    if let Some(v) = text(&["WARREN_JWT_AUDIENCE"]) {
        auth.audience = Some(v);
    }
    if let Some(v) = text(&["WARREN_JWT_ALGORITHMS"]) {
        auth.algorithms = Some(v.split(',').map(|s| s.trim().to_owned()).filter(|s| !s.is_empty()).collect());
    }
    if let Some(v) = text(&["WARREN_JWT_USER_CLAIM"]) {
        auth.user_claim = v;
    }
    if let Some(v) = text(&["WARREN_JWT_ADMIN_CLAIM"]) {
        auth.admin_claim = v;
    }
    if let Some(v) = text(&["WARREN_JWT_ADMIN_VALUE"]) {
        auth.admin_value = v;
    }
    if let Some((n, v)) = var(&["WARREN_JWT_LEEWAY_SECS"]) {
        auth.leeway_secs = parse_num(n, &v, "seconds")?;
    }
    Ok(())
}

/// `HOST:PORT`, `:PORT` (all interfaces) or `PORT` (loopback).
pub fn parse_listen(v: &str) -> Result<SocketAddr, String> {
    let v = v.trim();
    if let Ok(port) = v.parse::<u16>() {
        return Ok(SocketAddr::from(([127, 0, 0, 1], port)));
    }
    if let Some(port) = v.strip_prefix(':') {
        let port: u16 = port.parse().map_err(|_| format!("{port:?} is not a port number"))?;
        return Ok(SocketAddr::from(([0, 0, 0, 0], port)));
    }
    v.parse().map_err(|_| "expected HOST:PORT like 127.0.0.1:7878 or [::1]:7878, :PORT, or PORT".to_owned())
}

impl ServerConfig {
    /// The terminal sessions' settings.
    pub fn terminal(&self) -> crate::terminal::TerminalConfig {
        crate::terminal::TerminalConfig {
            reconnect: std::time::Duration::from_secs(self.terminal_reconnect_secs),
            idle: std::time::Duration::from_secs(self.terminal_idle_secs),
            max_sessions: self.terminal_max_sessions as usize,
            ..crate::terminal::TerminalConfig::default()
        }
    }

    /// Checks ranges and the seed's values; returns what to log about settings that have no
    /// effect on this build.
    pub fn validate(&self) -> Result<Vec<String>, SettingError> {
        if self.max_json_bytes < 1024 {
            return Err(bad("server.max_json_bytes", &self.max_json_bytes.to_string(), "must be at least 1024"));
        }
        if self.max_body_bytes < self.max_json_bytes {
            return Err(bad(
                "server.max_body_bytes",
                &self.max_body_bytes.to_string(),
                "must be at least server.max_json_bytes",
            ));
        }
        if self.request_timeout_secs == 0 || self.exec_timeout_secs == 0 || self.max_exec_timeout_secs == 0 {
            return Err(bad("server.*timeout_secs", "0", "timeouts must be at least 1 second"));
        }
        if self.terminal_reconnect_secs == 0 || self.terminal_idle_secs == 0 || self.terminal_max_sessions == 0 {
            return Err(bad("server.terminal_*", "0", "terminal timeouts and the session limit must be at least 1"));
        }
        // Deadlines are `now + setting`: a value near u64::MAX would overflow (and panic) there.
        for (name, v) in [
            ("server.request_timeout_secs", self.request_timeout_secs),
            ("server.exec_timeout_secs", self.exec_timeout_secs),
            ("server.max_exec_timeout_secs", self.max_exec_timeout_secs),
            ("server.shutdown_grace_secs", self.shutdown_grace_secs),
            ("server.terminal_reconnect_secs", self.terminal_reconnect_secs),
            ("server.terminal_idle_secs", self.terminal_idle_secs),
        ] {
            if v > MAX_SECS {
                return Err(bad(name, &v.to_string(), format!("must be at most {MAX_SECS} seconds")));
            }
        }
        if self.rate_limit_rps > 0 && self.rate_limit_burst == 0 {
            return Err(bad("server.rate_limit_burst", "0", "must be at least 1 when rate_limit_rps is set"));
        }
        for (name, v) in [("MAX_CONTAINERS", self.max_containers), ("USERS_PER_CONTAINER", self.users_per_container)] {
            if v == Some(0) {
                return Err(bad(name, "0", "expected a whole number of at least 1"));
            }
        }
        if let Some(img) = &self.container_image {
            check_image("CONTAINER_IMAGE", img)?;
        }
        for root in &self.code_project_roots {
            let path = std::path::Path::new(root);
            let placeholder_ok = root.split('/').all(|c| c == "{user}" || !c.contains(['{', '}']));
            if !path.is_absolute() || !placeholder_ok || root.split('/').any(|c| c == "..") {
                return Err(bad(
                    "server.code_project_roots",
                    root,
                    "expected an absolute directory without `..`, where `{user}` may stand for a whole path component",
                ));
            }
        }
        let mut notes = Vec::new();
        if self.use_containers {
            notes.push(format!(
                "USE_CONTAINERS=true: new workspaces go to the container pool ({} containers of {} users at most)",
                self.max_containers.unwrap_or(10),
                self.users_per_container.unwrap_or(20)
            ));
        }
        Ok(notes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let m: HashMap<String, String> = pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        move |k| m.get(k).cloned()
    }

    #[test]
    fn env_overrides_and_seed_names() {
        let (mut s, mut a) = (ServerConfig::default(), AuthConfig::default());
        apply_env(
            &mut s,
            &mut a,
            env(&[
                ("WARREN_LISTEN", "0.0.0.0:9000"),
                ("USE_CONTAINERS", "true"),
                ("MAX_CONTAINERS", "10"),
                ("USERS_PER_CONTAINER", "3"),
                ("CONTAINER_IMAGE", "python:3.12-slim"),
                ("WARREN_JWT_ALGORITHMS", "RS256, ES256"),
                ("WARREN_RATE_LIMIT_RPS", "0"),
            ]),
        )
        .expect("valid");
        assert_eq!(s.listen, "0.0.0.0:9000".parse().expect("addr"));
        assert!(s.use_containers);
        assert_eq!((s.max_containers, s.users_per_container), (Some(10), Some(3)));
        assert_eq!(s.container_image.as_deref(), Some("python:3.12-slim"));
        assert_eq!(a.algorithms, Some(vec!["RS256".to_owned(), "ES256".to_owned()]));
        assert_eq!(s.rate_limit_rps, 0);
        let notes = s.validate().expect("valid");
        assert_eq!(notes.len(), 1, "{notes:?}");
        assert!(notes[0].contains("container pool"), "{notes:?}");
    }

    #[test]
    fn bad_seed_values_are_refused_with_their_name() {
        for (k, v) in [
            ("USE_CONTAINERS", "maybe"),
            ("MAX_CONTAINERS", "0"),
            ("MAX_CONTAINERS", "-1"),
            ("USERS_PER_CONTAINER", "many"),
            ("CONTAINER_IMAGE", "bad image"),
            ("CONTAINER_IMAGE", "$(rm -rf /)"),
            ("WARREN_LISTEN", "nowhere"),
        ] {
            let (mut s, mut a) = (ServerConfig::default(), AuthConfig::default());
            let e = apply_env(&mut s, &mut a, env(&[(k, v)])).expect_err(k).to_string();
            assert!(e.contains(k), "{e}");
        }
    }

    #[test]
    fn listen_forms() {
        assert_eq!(parse_listen("7000").expect("port"), "127.0.0.1:7000".parse().expect("addr"));
        assert_eq!(parse_listen(":7000").expect("port"), "0.0.0.0:7000".parse().expect("addr"));
        assert_eq!(parse_listen("[::1]:7000").expect("v6"), "[::1]:7000".parse().expect("addr"));
        assert_eq!(DEFAULT_LISTEN.parse::<SocketAddr>().expect("default"), ServerConfig::default().listen);
    }

    #[test]
    fn dev_mode_is_the_absence_of_keys() {
        assert!(AuthConfig::default().is_dev());
        assert!(!AuthConfig { jwks_url: Some("https://x/jwks".into()), ..Default::default() }.is_dev());
    }
}
