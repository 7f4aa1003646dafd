//! Bearer JWT verification.
//!
//! Keys come from exactly one source: a JWKS URL (fetched with bounded timeouts, cached,
//! refetched when a token names an unknown `kid` but at most every `jwks_min_refresh_secs`, and
//! when older than `jwks_max_age_secs`), a PEM public key, or an HS256 secret (development).
//!
//! A token is checked in this order, and every failure is a 401 whose message says what was
//! wrong (never echoing the token):
//! 1. at most `max_token_bytes` long, three base64url parts;
//! 2. the header's `alg` is on the allow-list (asymmetric algorithms with keys, HS256 only with a
//!    secret: an HS256 token can never be checked against a public key) and matches the key's
//!    family; `none` is not an algorithm here at all;
//! 3. the signature;
//! 4. `exp` (required, a number), `nbf` (a number if present), both with `leeway_secs`; `iss`
//!    and `aud` when configured;
//! 5. the user claim is a string and a valid [`UserId`].
//!
//! The admin claim grants operator access when it equals `admin_value`, or is a
//! space-separated string (OAuth `scope`) or an array (`roles`, `groups`) containing it.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use jsonwebtoken::jwk::{Jwk, PublicKeyUse};
use jsonwebtoken::{decode, decode_header, Algorithm, AlgorithmFamily, DecodingKey, Validation};
use serde_json::Value;
use tokio::sync::{Mutex, RwLock};
use tracing::{debug, info, warn};
use warren_core::{Error, Result, UserId};

use crate::config::AuthConfig;
use crate::dev;
use crate::error::ApiError;

/// Who is calling.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Principal {
    /// The user named by the token.
    pub user: UserId,
    /// Operator access: may act on every workspace.
    pub admin: bool,
}

impl Principal {
    /// The workspace owner a route's `{user}` names (`me` is the caller), if the caller may act
    /// on it. A normal user acting on anyone else's workspace gets 403, whether it exists or
    /// not (so the answer tells nothing about other users).
    pub fn target(&self, raw: &str) -> std::result::Result<UserId, ApiError> {
        let user = if raw == "me" { self.user.clone() } else { UserId::new(raw).map_err(ApiError::from)? };
        self.check(&user)?;
        Ok(user)
    }

    /// 403 unless the caller is `user` or an admin.
    pub fn check(&self, user: &UserId) -> std::result::Result<(), ApiError> {
        if self.admin || &self.user == user {
            Ok(())
        } else {
            Err(ApiError::forbidden(format!(
                "user {} may only act on their own workspace (use 'me'); operator access needs the admin claim",
                self.user
            )))
        }
    }

    /// 403 unless the caller is an admin.
    pub fn require_admin(&self, what: &str) -> std::result::Result<(), ApiError> {
        if self.admin {
            Ok(())
        } else {
            Err(ApiError::forbidden(format!("{what} needs operator access (the admin claim)")))
        }
    }
}

/// Where keys come from.
enum Keys {
    /// HS256 secret.
    Secret(DecodingKey),
    /// One PEM public key.
    Pem(DecodingKey),
    /// A JWKS, fetched and cached.
    Jwks(Jwks),
}

/// How the server authenticates, for logs and the start banner.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AuthMode {
    /// HS256 with the development secret in the state directory.
    Dev,
    /// HS256 with a configured secret.
    Secret,
    /// A PEM public key.
    Pem,
    /// A JWKS URL.
    Jwks,
}

/// Verifies bearer tokens.
pub struct Authenticator {
    keys: Keys,
    mode: AuthMode,
    algorithms: Vec<Algorithm>,
    issuer: Option<String>,
    audience: Option<String>,
    user_claim: String,
    admin_claim: String,
    admin_value: String,
    leeway: u64,
    max_token_bytes: usize,
    /// The HS256 secret (development mode and configured secrets), for minting tokens.
    secret: Option<Vec<u8>>,
}

impl std::fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authenticator")
            .field("mode", &self.mode)
            .field("algorithms", &self.algorithms)
            .field("issuer", &self.issuer)
            .field("audience", &self.audience)
            .field("user_claim", &self.user_claim)
            .field("admin_claim", &self.admin_claim)
            .finish_non_exhaustive()
    }
}

fn parse_algs(names: &[String]) -> Result<Vec<Algorithm>> {
    names
        .iter()
        .map(|n| {
            n.parse::<Algorithm>().map_err(|_| {
                Error::InvalidRequest(format!(
                    "auth.algorithms: unknown algorithm {n:?} (RS256, RS384, RS512, PS256, PS384, PS512, ES256, ES384, EdDSA, HS256, HS384, HS512)"
                ))
            })
        })
        .collect()
}

impl Authenticator {
    /// Builds the verifier from the configuration; in development mode (no key source) it
    /// loads or creates `{state_dir}/dev-secret`. A JWKS is not fetched here ([`Self::warm_up`]).
    pub fn new(cfg: &AuthConfig, state_dir: &std::path::Path) -> Result<Self> {
        if cfg.leeway_secs > MAX_LEEWAY_SECS {
            // A huge leeway accepts long-expired tokens (and overflows the library's clock math).
            return Err(Error::InvalidRequest(format!(
                "auth.leeway_secs (WARREN_JWT_LEEWAY_SECS) {} is more than {MAX_LEEWAY_SECS}: it is for clock skew, not token lifetime",
                cfg.leeway_secs
            )));
        }
        let sources =
            [cfg.jwks_url.is_some(), cfg.public_key_file.is_some(), cfg.secret.is_some() || cfg.secret_file.is_some()];
        if sources.iter().filter(|s| **s).count() > 1 {
            return Err(Error::InvalidRequest(
                "auth: set only one of jwks_url, public_key_file, and secret/secret_file".into(),
            ));
        }
        if cfg.secret.is_some() && cfg.secret_file.is_some() {
            return Err(Error::InvalidRequest("auth: set secret or secret_file, not both".into()));
        }
        if cfg.user_claim.is_empty() || cfg.admin_claim.is_empty() || cfg.admin_value.is_empty() {
            return Err(Error::InvalidRequest(
                "auth: user_claim, admin_claim and admin_value must not be empty".into(),
            ));
        }
        let (mut issuer, mut audience) = (cfg.issuer.clone(), cfg.audience.clone());
        let mut secret = None;
        let (keys, mode, family) = if let Some(url) = &cfg.jwks_url {
            let jwks = Jwks::new(url, cfg)?;
            (Keys::Jwks(jwks), AuthMode::Jwks, None)
        } else if let Some(path) = &cfg.public_key_file {
            let pem = std::fs::read(path)
                .map_err(|e| Error::io(format!("reading the JWT public key {}", path.display()), e))?;
            let key = DecodingKey::from_rsa_pem(&pem)
                .or_else(|_| DecodingKey::from_ec_pem(&pem))
                .or_else(|_| DecodingKey::from_ed_pem(&pem))
                .map_err(|e| {
                    Error::InvalidRequest(format!(
                        "{} is not a PEM public key (RSA, EC P-256 or Ed25519, 'BEGIN PUBLIC KEY'): {e}",
                        path.display()
                    ))
                })?;
            let fam = key.family();
            (Keys::Pem(key), AuthMode::Pem, Some(fam))
        } else {
            let (bytes, mode) = match (&cfg.secret, &cfg.secret_file) {
                (Some(s), _) => {
                    dev::check_secret(s.as_bytes(), "from auth.secret / WARREN_JWT_SECRET")?;
                    (s.as_bytes().to_vec(), AuthMode::Secret)
                }
                (None, Some(f)) => (dev::read_secret(f)?, AuthMode::Secret),
                (None, None) => {
                    issuer.get_or_insert_with(|| dev::DEV_ISSUER.to_owned());
                    audience.get_or_insert_with(|| dev::DEV_AUDIENCE.to_owned());
                    (dev::load_or_create_secret(state_dir)?, AuthMode::Dev)
                }
            };
            let key = DecodingKey::from_secret(&bytes);
            secret = Some(bytes);
            (Keys::Secret(key), mode, Some(AlgorithmFamily::Hmac))
        };
        let hmac = matches!(mode, AuthMode::Dev | AuthMode::Secret);
        let algorithms = match &cfg.algorithms {
            Some(names) => parse_algs(names)?,
            None if hmac => vec![Algorithm::HS256],
            None => {
                let all = vec![Algorithm::RS256, Algorithm::ES256, Algorithm::EdDSA];
                match family {
                    Some(f) => all.into_iter().filter(|a| a.family() == f).collect(),
                    None => all,
                }
            }
        };
        if algorithms.is_empty() {
            return Err(Error::InvalidRequest("auth.algorithms is empty: no token could ever be accepted".into()));
        }
        for a in &algorithms {
            let is_hmac = a.family() == AlgorithmFamily::Hmac;
            if is_hmac != hmac {
                return Err(Error::InvalidRequest(format!(
                    "auth.algorithms: {a:?} does not fit the key source: HMAC algorithms only with secret/secret_file, \
                     RSA/EC/EdDSA only with jwks_url or public_key_file"
                )));
            }
            if let Some(f) = family {
                if a.family() != f {
                    return Err(Error::InvalidRequest(format!(
                        "auth.algorithms: {a:?} does not fit the public key in {} (a {f:?} key)",
                        cfg.public_key_file.as_ref().map(|p| p.display().to_string()).unwrap_or_default()
                    )));
                }
            }
        }
        if matches!(mode, AuthMode::Jwks | AuthMode::Pem) && (issuer.is_none() || audience.is_none()) {
            warn!(
                "auth: no issuer or audience configured: any token signed by these keys is accepted, \
                 including ones your identity provider issued for other applications; set auth.issuer and auth.audience"
            );
        }
        Ok(Self {
            keys,
            mode,
            algorithms,
            issuer,
            audience,
            user_claim: cfg.user_claim.clone(),
            admin_claim: cfg.admin_claim.clone(),
            admin_value: cfg.admin_value.clone(),
            leeway: cfg.leeway_secs,
            max_token_bytes: cfg.max_token_bytes,
            secret,
        })
    }

    /// The key source.
    pub fn mode(&self) -> AuthMode {
        self.mode
    }

    /// The allowed algorithms.
    pub fn algorithms(&self) -> &[Algorithm] {
        &self.algorithms
    }

    /// Mints a token the server accepts, when it verifies with a secret (development mode or
    /// a configured HS256 secret); `None` with JWKS or PEM keys (tokens come from the identity
    /// provider then).
    pub fn mint(&self, user: &UserId, admin: bool, ttl: Duration) -> Option<Result<String>> {
        let secret = self.secret.as_ref()?;
        let opts = dev::MintOptions {
            user: user.clone(),
            admin,
            ttl,
            issuer: self.issuer.clone(),
            audience: self.audience.clone(),
            user_claim: self.user_claim.clone(),
            admin_claim: self.admin_claim.clone(),
            admin_value: self.admin_value.clone(),
        };
        Some(dev::mint(secret, &opts))
    }

    /// Fetches the JWKS once (logging a failure: the server still starts, and fetches again
    /// when a token arrives).
    pub async fn warm_up(&self) {
        if let Keys::Jwks(j) = &self.keys {
            match j.refresh(true).await {
                Ok(n) => info!(url = %j.url, keys = n, "fetched the JWKS"),
                Err(e) => {
                    warn!(url = %j.url, error = %e, "fetching the JWKS failed; tokens are refused until it works")
                }
            }
        }
    }

    /// Verifies an `Authorization` header value.
    pub async fn verify_header(&self, header: Option<&str>) -> std::result::Result<Principal, ApiError> {
        let Some(h) = header else {
            return Err(ApiError::unauthorized("missing Authorization header: send 'Authorization: Bearer <JWT>'"));
        };
        let token = h
            .strip_prefix("Bearer ")
            .or_else(|| h.strip_prefix("bearer "))
            .ok_or_else(|| ApiError::unauthorized("the Authorization header must be 'Bearer <JWT>'"))?
            .trim();
        self.verify(token).await
    }

    /// Verifies a token.
    pub async fn verify(&self, token: &str) -> std::result::Result<Principal, ApiError> {
        let unauth = |m: String| ApiError::unauthorized(m);
        if token.len() > self.max_token_bytes {
            return Err(unauth(format!("token is longer than {} bytes", self.max_token_bytes)));
        }
        if token.split('.').count() != 3 {
            return Err(unauth("malformed token: expected a JWT (three base64url parts)".into()));
        }
        let header = decode_header(token).map_err(|e| {
            unauth(format!("malformed token header (alg 'none' and unknown algorithms are refused): {e}"))
        })?;
        if !self.algorithms.contains(&header.alg) {
            return Err(unauth(format!(
                "token algorithm {:?} is not allowed (allowed: {:?})",
                header.alg, self.algorithms
            )));
        }
        let key = match &self.keys {
            Keys::Secret(k) | Keys::Pem(k) => k.clone(),
            Keys::Jwks(j) => j.key_for(header.kid.as_deref(), header.alg).await?,
        };
        if key.family() != header.alg.family() {
            return Err(unauth(format!("token algorithm {:?} does not fit the key", header.alg)));
        }
        let mut v = Validation::new(header.alg);
        v.leeway = self.leeway;
        v.validate_exp = true;
        v.validate_nbf = true;
        let mut required = vec!["exp"];
        match &self.issuer {
            Some(iss) => {
                v.set_issuer(&[iss]);
                required.push("iss");
            }
            None => v.iss = None,
        }
        match &self.audience {
            Some(aud) => {
                v.set_audience(&[aud]);
                required.push("aud");
            }
            None => v.validate_aud = false,
        }
        v.set_required_spec_claims(&required);
        let data = decode::<serde_json::Map<String, Value>>(token, &key, &v).map_err(|e| {
            use jsonwebtoken::errors::ErrorKind as K;
            let why = match e.kind() {
                K::InvalidSignature => "bad signature".to_owned(),
                K::ExpiredSignature => "token expired".to_owned(),
                K::ImmatureSignature => "token not valid yet (nbf)".to_owned(),
                K::InvalidIssuer => "wrong issuer (iss)".to_owned(),
                K::InvalidAudience => "wrong audience (aud)".to_owned(),
                K::MissingRequiredClaim(c) => format!("token has no '{c}' claim"),
                K::InvalidClaimFormat(c) => format!("claim '{c}' has the wrong type"),
                K::InvalidAlgorithm => "algorithm does not fit the key".to_owned(),
                _ => format!("invalid token: {e}"),
            };
            debug!(reason = %why, "token refused");
            unauth(why)
        })?;
        let claims = data.claims;
        // `exp` is required above; make sure it is a number (not a string the library skipped).
        if !claims.get("exp").is_some_and(Value::is_number) || claims.get("nbf").is_some_and(|n| !n.is_number()) {
            return Err(unauth("exp and nbf must be numbers".into()));
        }
        let user = match claims.get(&self.user_claim) {
            Some(Value::String(s)) => UserId::new(s.as_str())
                .map_err(|e| unauth(format!("claim '{}' is not a valid warren user id: {e}", self.user_claim)))?,
            Some(_) => return Err(unauth(format!("claim '{}' is not a string", self.user_claim))),
            None => return Err(unauth(format!("token has no '{}' claim naming the user", self.user_claim))),
        };
        if user.is_reserved() {
            return Err(unauth(format!(
                "claim '{}' names {user}, a reserved id (warren's own workspaces of coding sessions and skills)",
                self.user_claim
            )));
        }
        let admin = match claims.get(&self.admin_claim) {
            Some(Value::String(s)) => s == &self.admin_value || s.split_whitespace().any(|p| p == self.admin_value),
            Some(Value::Array(a)) => a.iter().any(|v| v.as_str() == Some(self.admin_value.as_str())),
            _ => false,
        };
        Ok(Principal { user, admin })
    }
}

/// The most clock skew `leeway_secs` may allow.
pub const MAX_LEEWAY_SECS: u64 = 600;

/// A JWKS cache.
struct Jwks {
    url: String,
    client: reqwest::Client,
    keys: RwLock<JwksState>,
    /// One fetch at a time.
    fetching: Mutex<()>,
    min_refresh: Duration,
    max_age: Duration,
}

#[derive(Default)]
struct JwksState {
    by_kid: HashMap<String, Arc<(DecodingKey, Option<Algorithm>)>>,
    without_kid: Vec<Arc<(DecodingKey, Option<Algorithm>)>>,
    fetched: Option<Instant>,
    attempted: Option<Instant>,
}

impl Jwks {
    fn new(url: &str, cfg: &AuthConfig) -> Result<Self> {
        let parsed =
            reqwest::Url::parse(url).map_err(|e| Error::InvalidRequest(format!("auth.jwks_url {url:?}: {e}")))?;
        let loopback = parsed.host_str().is_some_and(|h| h == "localhost" || h == "127.0.0.1" || h == "[::1]");
        if parsed.scheme() != "https" && !(parsed.scheme() == "http" && loopback) {
            return Err(Error::InvalidRequest(format!(
                "auth.jwks_url {url:?} must be https (plain http only to localhost)"
            )));
        }
        let timeout = Duration::from_millis(cfg.jwks_timeout_ms.max(100));
        let client = reqwest::Client::builder()
            .connect_timeout(timeout)
            .timeout(timeout)
            .redirect(reqwest::redirect::Policy::limited(3))
            .user_agent(concat!("warren/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| Error::Internal(format!("building the JWKS HTTP client: {e}")))?;
        Ok(Self {
            url: url.to_owned(),
            client,
            keys: RwLock::new(JwksState::default()),
            fetching: Mutex::new(()),
            min_refresh: Duration::from_secs(cfg.jwks_min_refresh_secs),
            max_age: Duration::from_secs(cfg.jwks_max_age_secs.max(1)),
        })
    }

    async fn key_for(&self, kid: Option<&str>, alg: Algorithm) -> std::result::Result<DecodingKey, ApiError> {
        let stale = self.keys.read().await.fetched.is_none_or(|t| t.elapsed() > self.max_age);
        if stale {
            if let Err(e) = self.refresh(false).await {
                warn!(url = %self.url, error = %e, "refreshing the JWKS failed; using the keys fetched before, if any");
            }
        }
        if let Some(k) = self.lookup(kid, alg).await? {
            return Ok(k);
        }
        // An unknown kid may be a key the provider rotated in: fetch again (rate-limited).
        if let Err(e) = self.refresh(false).await {
            warn!(url = %self.url, error = %e, "refreshing the JWKS failed");
        }
        self.lookup(kid, alg).await?.ok_or_else(|| match kid {
            Some(k) => ApiError::unauthorized(format!("no key with kid {k:?} in the JWKS")),
            None => ApiError::unauthorized("token has no kid and the JWKS has no single key for its algorithm"),
        })
    }

    async fn lookup(&self, kid: Option<&str>, alg: Algorithm) -> std::result::Result<Option<DecodingKey>, ApiError> {
        let st = self.keys.read().await;
        let fits = |e: &(DecodingKey, Option<Algorithm>)| e.1.is_none_or(|a| a == alg) && e.0.family() == alg.family();
        match kid {
            Some(kid) => match st.by_kid.get(kid) {
                Some(e) if fits(e) => Ok(Some(e.0.clone())),
                Some(_) => Err(ApiError::unauthorized(format!("key {kid:?} is not for algorithm {alg:?}"))),
                None => Ok(None),
            },
            None => {
                let mut cands = st.without_kid.iter().chain(st.by_kid.values()).filter(|e| fits(e));
                match (cands.next(), cands.next()) {
                    (Some(e), None) => Ok(Some(e.0.clone())),
                    _ => Ok(None),
                }
            }
        }
    }

    /// Fetches the JWKS unless one was fetched less than `min_refresh` ago (`force` ignores
    /// that). Returns how many keys it holds.
    async fn refresh(&self, force: bool) -> Result<usize> {
        let _one = self.fetching.lock().await;
        {
            let st = self.keys.read().await;
            if !force && st.attempted.is_some_and(|t| t.elapsed() < self.min_refresh) {
                return Ok(st.by_kid.len() + st.without_kid.len());
            }
        }
        self.keys.write().await.attempted = Some(Instant::now());
        let resp = self
            .client
            .get(&self.url)
            .send()
            .await
            .map_err(|e| Error::Timeout(format!("fetching the JWKS {}: {e}", self.url)))?;
        if !resp.status().is_success() {
            return Err(Error::Internal(format!("fetching the JWKS {}: HTTP {}", self.url, resp.status())));
        }
        let body = resp.bytes().await.map_err(|e| Error::Internal(format!("reading the JWKS {}: {e}", self.url)))?;
        if body.len() > 1 << 20 {
            return Err(Error::Internal(format!("the JWKS {} is larger than 1 MiB", self.url)));
        }
        let v: Value = serde_json::from_slice(&body)
            .map_err(|e| Error::Internal(format!("the JWKS {} is not JSON: {e}", self.url)))?;
        let Some(list) = v.get("keys").and_then(Value::as_array) else {
            return Err(Error::Internal(format!("the JWKS {} has no \"keys\" array", self.url)));
        };
        let mut st = JwksState { fetched: Some(Instant::now()), attempted: Some(Instant::now()), ..Default::default() };
        for k in list {
            let jwk: Jwk = match serde_json::from_value(k.clone()) {
                Ok(j) => j,
                Err(e) => {
                    debug!(error = %e, "skipping a JWKS entry that is not a usable JWK");
                    continue;
                }
            };
            if matches!(jwk.common.public_key_use, Some(PublicKeyUse::Encryption)) {
                continue;
            }
            let alg = jwk.common.key_algorithm.and_then(|a| Algorithm::try_from(a).ok());
            let key = match DecodingKey::from_jwk(&jwk) {
                Ok(k) => k,
                Err(e) => {
                    debug!(kid = ?jwk.common.key_id, error = %e, "skipping a JWKS key");
                    continue;
                }
            };
            if key.family() == AlgorithmFamily::Hmac {
                continue; // a symmetric key has no business in a published key set
            }
            let entry = Arc::new((key, alg));
            match jwk.common.key_id {
                Some(kid) => {
                    st.by_kid.insert(kid, entry);
                }
                None => st.without_kid.push(entry),
            }
        }
        let n = st.by_kid.len() + st.without_kid.len();
        *self.keys.write().await = st;
        debug!(url = %self.url, keys = n, "JWKS refreshed");
        Ok(n)
    }
}
