//! Bearer tokens: `auth::Authenticator::verify_header` (what the API and the terminal's `auth`
//! message run) with an HS256 secret, an issuer and an audience configured.
//!
//! Two input forms (first byte): even, the rest is the `Authorization` header value as sent;
//! odd, the rest is a JWT header and a claims object (split at the first NUL) that the harness
//! signs with the server's own secret, so the fuzzer reaches every check behind the signature.
//!
//! Invariants: no panic; an unsigned or foreign token is never accepted; a signed one is
//! accepted only if it says `alg: HS256`, `exp` is a number not in the past (30 s leeway), an
//! `nbf` is a number not in the future, `iss` and `aud` are the configured ones, and the user
//! claim is a string that is a valid, non-reserved user id; the principal is that user, an
//! admin exactly when the `scope` claim grants it.
#![no_main]

use std::sync::OnceLock;
use std::time::{SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use jsonwebtoken::{Algorithm, EncodingKey};
use libfuzzer_sys::fuzz_target;
use serde_json::Value;
use warren_core::UserId;
use warren_server::auth::{Authenticator, Principal};
use warren_server::config::AuthConfig;

const SECRET: &str = "warren-fuzz-secret-of-at-least-32-bytes!";
const ISSUER: &str = "warren-fuzz";
const AUDIENCE: &str = "warren";
const LEEWAY: i64 = 30;

struct Harness {
    rt: tokio::runtime::Runtime,
    auth: Authenticator,
    key: EncodingKey,
}

fn harness() -> &'static Harness {
    static H: OnceLock<Harness> = OnceLock::new();
    H.get_or_init(|| {
        let cfg = AuthConfig {
            secret: Some(SECRET.into()),
            issuer: Some(ISSUER.into()),
            audience: Some(AUDIENCE.into()),
            leeway_secs: LEEWAY as u64,
            ..AuthConfig::default()
        };
        let auth = Authenticator::new(&cfg, std::path::Path::new("/nonexistent"))
            .unwrap_or_else(|e| panic!("building the authenticator: {e}"));
        let rt = tokio::runtime::Builder::new_current_thread().build().expect("a tokio runtime");
        Harness { rt, auth, key: EncodingKey::from_secret(SECRET.as_bytes()) }
    })
}

fn verify(header: &str) -> Option<Principal> {
    let h = harness();
    h.rt.block_on(h.auth.verify_header(Some(header))).ok()
}

fn now() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0)
}

/// What an accepted token's claims must satisfy.
fn check_accepted(header: &[u8], claims: &[u8], p: &Principal) {
    let hdr: Value = serde_json::from_slice(header).expect("an accepted token's header is JSON");
    assert_eq!(hdr.get("alg").and_then(Value::as_str), Some("HS256"), "accepted header {hdr}");
    let c: serde_json::Map<String, Value> =
        serde_json::from_slice(claims).expect("an accepted token's claims are a JSON object");
    let t = now() as f64;
    let exp = c.get("exp").and_then(Value::as_f64).unwrap_or_else(|| panic!("accepted without a numeric exp: {c:?}"));
    assert!(exp >= t - (LEEWAY + 5) as f64, "accepted an expired token (exp {exp}, now {t})");
    if let Some(nbf) = c.get("nbf") {
        let nbf = nbf.as_f64().unwrap_or_else(|| panic!("accepted a non-numeric nbf: {c:?}"));
        assert!(nbf <= t + (LEEWAY + 5) as f64, "accepted a token not valid yet (nbf {nbf}, now {t})");
    }
    assert_eq!(c.get("iss").and_then(Value::as_str), Some(ISSUER), "accepted with iss {:?}", c.get("iss"));
    let aud_ok = match c.get("aud") {
        Some(Value::String(s)) => s == AUDIENCE,
        Some(Value::Array(a)) => a.iter().any(|v| v.as_str() == Some(AUDIENCE)),
        _ => false,
    };
    assert!(aud_ok, "accepted with aud {:?}", c.get("aud"));
    let sub = c.get("sub").and_then(Value::as_str).unwrap_or_else(|| panic!("accepted without a string sub: {c:?}"));
    let user = UserId::new(sub).unwrap_or_else(|e| panic!("accepted an invalid user id: {e}"));
    assert!(!user.is_reserved(), "accepted a reserved user id {user}");
    assert_eq!(p.user, user);
    let admin = match c.get("scope") {
        Some(Value::String(s)) => s.split_whitespace().any(|w| w == "warren:admin"),
        Some(Value::Array(a)) => a.iter().any(|v| v.as_str() == Some("warren:admin")),
        _ => false,
    };
    assert_eq!(p.admin, admin, "admin flag for scope {:?}", c.get("scope"));
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else { return };
    if mode & 1 == 0 {
        // Anything a client can send. The fuzzer cannot sign, so nothing may pass unless it
        // kept a signed seed intact; if something passes, its claims must still hold.
        let text = String::from_utf8_lossy(rest);
        if let Some(p) = verify(&text) {
            let token = text.strip_prefix("Bearer ").or_else(|| text.strip_prefix("bearer ")).expect("accepted").trim();
            let mut parts = token.split('.');
            let (Some(h), Some(c)) = (parts.next(), parts.next()) else { panic!("accepted {text:?}") };
            let h = URL_SAFE_NO_PAD.decode(h).expect("accepted header is base64url");
            let c = URL_SAFE_NO_PAD.decode(c).expect("accepted claims are base64url");
            check_accepted(&h, &c, &p);
        }
        return;
    }
    let (header, claims) = match rest.iter().position(|b| *b == 0) {
        Some(i) => (&rest[..i], &rest[i + 1..]),
        None => (rest, &b"{}"[..]),
    };
    let message = format!("{}.{}", URL_SAFE_NO_PAD.encode(header), URL_SAFE_NO_PAD.encode(claims));
    let sig = jsonwebtoken::crypto::sign(message.as_bytes(), &harness().key, Algorithm::HS256).expect("signing");
    let token = format!("{message}.{sig}");
    if let Some(p) = verify(&format!("Bearer {token}")) {
        check_accepted(header, claims, &p);
    }
});
