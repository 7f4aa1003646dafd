//! The harness: a real server task on an ephemeral port over a real engine (dir backend, a
//! temporary state directory, a uid range of its own per test), a JWKS served by a second
//! HTTP server, and tokens minted with `ring` by hand, independently of the `jsonwebtoken`
//! crate the server verifies with.

#![allow(dead_code)]

use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use ring::rand::SystemRandom;
use ring::signature::{self, EcdsaKeyPair, Ed25519KeyPair, KeyPair, RsaKeyPair};
use serde_json::{json, Value};
use tokio::sync::oneshot;
use warren_core::config::Config;
use warren_core::BackendKind;
use warren_engine::{Engine, EngineOptions};
use warren_server::config::{AuthConfig, ServerConfig};
use warren_server::Server;

/// Uids of this test crate: 2_700_000 + 1000 per slot (each test its own slot).
pub const UID_BASE: u32 = 2_700_000;

pub const ISSUER: &str = "https://idp.test/";
pub const AUDIENCE: &str = "warren-api";

pub fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).expect("clock").as_secs()
}

pub fn b64(data: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(data)
}

fn pem_der(pem: &str) -> Vec<u8> {
    let body: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
    base64::engine::general_purpose::STANDARD.decode(body).expect("PEM base64")
}

fn data_file(name: &str) -> String {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data").join(name);
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("reading {}: {e}", p.display()))
}

/// A signing key and its public JWK.
pub enum Key {
    Rsa(RsaKeyPair),
    Ec(EcdsaKeyPair),
    Ed(Ed25519KeyPair),
    Hmac(Vec<u8>),
}

pub struct Signer {
    pub kid: Option<String>,
    pub key: Key,
}

impl Signer {
    pub fn rsa(kid: &str) -> Self {
        Self::rsa_from("rsa-test-key.pem", kid)
    }

    /// Another RSA key (not published).
    pub fn other_rsa(kid: &str) -> Self {
        Self::rsa_from("rsa-other-key.pem", kid)
    }

    fn rsa_from(file: &str, kid: &str) -> Self {
        let kp = RsaKeyPair::from_pkcs8(&pem_der(&data_file(file))).expect("RSA PKCS#8 key");
        Self { kid: Some(kid.into()), key: Key::Rsa(kp) }
    }

    pub fn ec(kid: &str) -> Self {
        let rng = SystemRandom::new();
        let alg = &signature::ECDSA_P256_SHA256_FIXED_SIGNING;
        let doc = EcdsaKeyPair::generate_pkcs8(alg, &rng).expect("P-256 key");
        let kp = EcdsaKeyPair::from_pkcs8(alg, doc.as_ref(), &rng).expect("P-256 key");
        Self { kid: Some(kid.into()), key: Key::Ec(kp) }
    }

    pub fn ed(kid: &str) -> Self {
        let doc = Ed25519KeyPair::generate_pkcs8(&SystemRandom::new()).expect("Ed25519 key");
        let kp = Ed25519KeyPair::from_pkcs8(doc.as_ref()).expect("Ed25519 key");
        Self { kid: Some(kid.into()), key: Key::Ed(kp) }
    }

    pub fn hmac(secret: &[u8]) -> Self {
        Self { kid: None, key: Key::Hmac(secret.to_vec()) }
    }

    pub fn alg(&self) -> &'static str {
        match self.key {
            Key::Rsa(_) => "RS256",
            Key::Ec(_) => "ES256",
            Key::Ed(_) => "EdDSA",
            Key::Hmac(_) => "HS256",
        }
    }

    /// The public JWK.
    pub fn jwk(&self) -> Value {
        let mut j = match &self.key {
            Key::Rsa(kp) => {
                let c: ring::rsa::PublicKeyComponents<Vec<u8>> = kp.public().into();
                json!({ "kty": "RSA", "n": b64(&c.n), "e": b64(&c.e), "alg": "RS256", "use": "sig" })
            }
            Key::Ec(kp) => {
                let p = kp.public_key().as_ref();
                json!({ "kty": "EC", "crv": "P-256", "x": b64(&p[1..33]), "y": b64(&p[33..65]), "alg": "ES256" })
            }
            Key::Ed(kp) => json!({ "kty": "OKP", "crv": "Ed25519", "x": b64(kp.public_key().as_ref()) }),
            Key::Hmac(_) => panic!("no public JWK for an HMAC key"),
        };
        if let Some(kid) = &self.kid {
            j["kid"] = json!(kid);
        }
        j
    }

    pub fn sign(&self, msg: &[u8]) -> Vec<u8> {
        let rng = SystemRandom::new();
        match &self.key {
            Key::Rsa(kp) => {
                let mut sig = vec![0u8; kp.public().modulus_len()];
                kp.sign(&signature::RSA_PKCS1_SHA256, &rng, msg, &mut sig).expect("RSA sign");
                sig
            }
            Key::Ec(kp) => kp.sign(&rng, msg).expect("ECDSA sign").as_ref().to_vec(),
            Key::Ed(kp) => kp.sign(msg).as_ref().to_vec(),
            Key::Hmac(s) => ring::hmac::sign(&ring::hmac::Key::new(ring::hmac::HMAC_SHA256, s), msg).as_ref().to_vec(),
        }
    }

    /// A JWT with this key's alg and kid in the header.
    pub fn token(&self, claims: &Value) -> String {
        let mut header = json!({ "alg": self.alg(), "typ": "JWT" });
        if let Some(kid) = &self.kid {
            header["kid"] = json!(kid);
        }
        self.token_with_header(&header, claims)
    }

    pub fn token_with_header(&self, header: &Value, claims: &Value) -> String {
        let msg = format!("{}.{}", b64(header.to_string().as_bytes()), b64(claims.to_string().as_bytes()));
        let sig = self.sign(msg.as_bytes());
        format!("{msg}.{}", b64(&sig))
    }
}

/// Claims that pass every check, for `sub`.
pub fn claims(sub: &str) -> Value {
    let t = now();
    json!({ "sub": sub, "iss": ISSUER, "aud": AUDIENCE, "iat": t, "nbf": t - 5, "exp": t + 600 })
}

pub fn admin_claims(sub: &str) -> Value {
    let mut c = claims(sub);
    c["scope"] = json!("openid warren:admin");
    c
}

/// The RSA test public key, PEM (SPKI).
pub fn rsa_public_pem() -> String {
    data_file("rsa-test-pub.pem")
}

/// A JWKS served over HTTP, with a count of fetches.
pub struct JwksServer {
    pub url: String,
    pub keys: Arc<Mutex<Value>>,
    pub fetches: Arc<AtomicUsize>,
    _stop: oneshot::Sender<()>,
}

impl JwksServer {
    pub async fn start(jwks: Value) -> Self {
        let keys = Arc::new(Mutex::new(jwks));
        let fetches = Arc::new(AtomicUsize::new(0));
        let (k, f) = (keys.clone(), fetches.clone());
        let app = axum::Router::new().route(
            "/.well-known/jwks.json",
            axum::routing::get(move || {
                let (k, f) = (k.clone(), f.clone());
                async move {
                    f.fetch_add(1, Ordering::SeqCst);
                    axum::Json(k.lock().expect("jwks lock").clone())
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind JWKS server");
        let addr = listener.local_addr().expect("addr");
        let (tx, rx) = oneshot::channel::<()>();
        tokio::spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(async move {
                    let _ = rx.await;
                })
                .await;
        });
        Self { url: format!("http://{addr}/.well-known/jwks.json"), keys, fetches, _stop: tx }
    }

    pub fn fetches(&self) -> usize {
        self.fetches.load(Ordering::SeqCst)
    }

    pub fn set(&self, jwks: Value) {
        *self.keys.lock().expect("jwks lock") = jwks;
    }
}

/// The JWKS auth settings for `url`.
pub fn jwks_auth(url: &str) -> AuthConfig {
    AuthConfig {
        jwks_url: Some(url.into()),
        issuer: Some(ISSUER.into()),
        audience: Some(AUDIENCE.into()),
        ..AuthConfig::default()
    }
}

/// A running server.
pub struct TestServer {
    pub url: String,
    pub http: reqwest::Client,
    pub engine: Arc<Engine>,
    pub state: PathBuf,
    pub cfg: Config,
    stop: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
    _tmp: Option<tempfile::TempDir>,
}

/// A temporary state directory (mode 0711 on the way down) and the engine config of `slot`.
pub fn engine_config(slot: u32) -> (tempfile::TempDir, Config) {
    let tmp = tempfile::tempdir().expect("tempdir");
    std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o711)).expect("chmod 0711");
    let cfg = Config {
        state_dir: tmp.path().join("state"),
        backend: BackendKind::Dir,
        uid_base: UID_BASE + slot * 1000,
        uid_count: 1000,
        ..Config::default()
    };
    (tmp, cfg)
}

impl TestServer {
    /// A server for test `slot` with `auth` and `server` settings.
    pub async fn start(slot: u32, auth: AuthConfig, server: ServerConfig) -> Self {
        let (tmp, cfg) = engine_config(slot);
        let mut s = Self::start_on(cfg, auth, server).await;
        s._tmp = Some(tmp);
        s
    }

    /// A server on an existing engine configuration (to restart on the same state).
    pub async fn start_on(cfg: Config, auth: AuthConfig, server: ServerConfig) -> Self {
        let engine = Arc::new(Engine::open(cfg.clone(), EngineOptions::default()).await.expect("open engine"));
        let srv = Server::new(engine.clone(), server, &auth).await.expect("server");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let (tx, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(srv.serve(listener, async move {
            let _ = rx.await;
        }));
        Self {
            url: format!("http://{addr}"),
            http: reqwest::Client::new(),
            engine,
            state: cfg.state_dir.clone(),
            cfg,
            stop: Some(tx),
            task: Some(task),
            _tmp: None,
        }
    }

    /// Signals shutdown and waits for the server to return.
    pub async fn shutdown(&mut self) -> std::io::Result<()> {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        match self.task.take() {
            Some(t) => tokio::time::timeout(Duration::from_secs(60), t)
                .await
                .expect("the server returned after shutdown")
                .expect("server task"),
            None => Ok(()),
        }
    }

    pub fn req(&self, method: reqwest::Method, path: &str, token: Option<&str>) -> reqwest::RequestBuilder {
        let rb = self.http.request(method, format!("{}{path}", self.url));
        match token {
            Some(t) => rb.bearer_auth(t),
            None => rb,
        }
    }

    /// Sends and returns (status, body as JSON or `Value::String` of the text).
    pub async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> (u16, Value) {
        let mut rb = self.req(method, path, token);
        if let Some(b) = body {
            rb = rb.json(&b);
        }
        let resp = rb.send().await.expect("request");
        let status = resp.status().as_u16();
        let text = resp.text().await.expect("body");
        let v = serde_json::from_str(&text).unwrap_or(Value::String(text));
        (status, v)
    }

    pub async fn get(&self, path: &str, token: &str) -> (u16, Value) {
        self.call(reqwest::Method::GET, path, Some(token), None).await
    }

    pub async fn post(&self, path: &str, token: &str, body: Value) -> (u16, Value) {
        self.call(reqwest::Method::POST, path, Some(token), Some(body)).await
    }
}

/// Asserts the error shape and returns the code.
pub fn error_code(body: &Value) -> String {
    let code = body["error"]["code"].as_str().unwrap_or_else(|| panic!("not an error body: {body}"));
    let msg = body["error"]["message"].as_str().unwrap_or_else(|| panic!("no message: {body}"));
    assert!(!msg.is_empty(), "{body}");
    assert_eq!(body.as_object().map(|o| o.len()), Some(1), "only `error` at the top: {body}");
    code.to_owned()
}
