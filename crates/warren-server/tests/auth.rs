//! Authentication over real HTTP: a JWKS served by a test server, tokens minted with `ring`
//! (not the JWT library the server uses). Every forged token is its own test and must get 401.

mod common;

use std::time::Duration;

use common::*;
use serde_json::{json, Value};
use warren_server::config::{AuthConfig, ServerConfig};

/// A server verifying against a JWKS with an RSA, an EC and an Ed25519 key; slot numbers
/// 0..=39 belong to this file.
async fn setup(slot: u32) -> (TestServer, JwksServer, Signer) {
    let rsa = Signer::rsa("rsa-1");
    let jwks = JwksServer::start(json!({ "keys": [rsa.jwk(), Signer::ec("ec-1").jwk()] })).await;
    let srv = TestServer::start(slot, jwks_auth(&jwks.url), ServerConfig::default()).await;
    (srv, jwks, rsa)
}

async fn whoami(srv: &TestServer, token: &str) -> (u16, Value) {
    srv.get("/v1/whoami", token).await
}

async fn assert_refused(srv: &TestServer, token: &str, why: &str) {
    let (status, body) = whoami(srv, token).await;
    assert_eq!(status, 401, "{why}: {body}");
    assert_eq!(error_code(&body), "unauthorized", "{why}");
    // Refused on every kind of route, the seed's included.
    for (m, p, b) in [
        (reqwest::Method::GET, "/v1/workspaces/me", None),
        (reqwest::Method::POST, "/v1/workspaces", Some(json!({}))),
        (reqwest::Method::POST, "/snapshot/create", Some(json!({ "user_id": "u_1" }))),
        (reqwest::Method::GET, "/snapshot/list/u_1", None),
    ] {
        let (s, body) = srv.call(m.clone(), p, Some(token), b).await;
        assert_eq!(s, 401, "{why}: {m} {p}: {body}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn valid_tokens_of_each_algorithm_are_accepted() {
    let (rsa, ec, ed) = (Signer::rsa("rsa-1"), Signer::ec("ec-2"), Signer::ed("ed-1"));
    let jwks = JwksServer::start(json!({ "keys": [rsa.jwk(), ec.jwk(), ed.jwk()] })).await;
    let srv = TestServer::start(0, jwks_auth(&jwks.url), ServerConfig::default()).await;
    for (signer, name) in [(&rsa, "RS256"), (&ec, "ES256"), (&ed, "EdDSA")] {
        let (status, body) = whoami(&srv, &signer.token(&claims("u_alg"))).await;
        assert_eq!(status, 200, "{name}: {body}");
        assert_eq!(body, json!({ "user": "u_alg", "admin": false }), "{name}");
    }
    let (status, body) = whoami(&srv, &rsa.token(&admin_claims("ops"))).await;
    assert_eq!((status, body), (200, json!({ "user": "ops", "admin": true })));
    // A lowercase scheme and an `aud` array containing ours are fine too.
    let mut c = claims("u_aud");
    c["aud"] = json!(["other", AUDIENCE]);
    let resp = srv
        .req(reqwest::Method::GET, "/v1/whoami", None)
        .header("authorization", format!("bearer {}", rsa.token(&c)))
        .send()
        .await
        .expect("request");
    assert_eq!(resp.status().as_u16(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_or_non_bearer_authorization_is_refused() {
    let (srv, _jwks, rsa) = setup(1).await;
    let (status, body) = srv.call(reqwest::Method::GET, "/v1/whoami", None, None).await;
    assert_eq!((status, error_code(&body).as_str()), (401, "unauthorized"));
    let resp = srv
        .req(reqwest::Method::GET, "/v1/whoami", None)
        .header("authorization", format!("Basic {}", rsa.token(&claims("u_1"))))
        .send()
        .await
        .expect("request");
    assert_eq!(resp.status().as_u16(), 401);
    assert_eq!(resp.headers().get("www-authenticate").and_then(|v| v.to_str().ok()), Some("Bearer realm=\"warren\""));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_alg_none() {
    let (srv, _jwks, _) = setup(2).await;
    let header = json!({ "alg": "none", "typ": "JWT" });
    let unsigned = format!("{}.{}.", b64(header.to_string().as_bytes()), b64(claims("u_1").to_string().as_bytes()));
    assert_refused(&srv, &unsigned, "alg none").await;
    let header = json!({ "alg": "None", "kid": "rsa-1" });
    let unsigned = format!("{}.{}.", b64(header.to_string().as_bytes()), b64(claims("u_1").to_string().as_bytes()));
    assert_refused(&srv, &unsigned, "alg None with a kid").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_hs256_signed_with_the_rsa_public_key() {
    let (srv, _jwks, _) = setup(3).await;
    let pem = rsa_public_pem();
    let mut forger = Signer::hmac(pem.as_bytes());
    forger.kid = Some("rsa-1".into());
    assert_refused(&srv, &forger.token(&claims("u_1")), "HS256 with the public key PEM as secret").await;
    // ... and with the DER bytes, and without a kid.
    let der: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
    let forger = Signer::hmac(der.as_bytes());
    assert_refused(&srv, &forger.token(&claims("u_1")), "HS256 with the key's base64").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_unknown_kid() {
    let (srv, jwks, _) = setup(4).await;
    let before = jwks.fetches();
    let stranger = Signer::other_rsa("not-in-the-jwks");
    assert_refused(&srv, &stranger.token(&claims("u_1")), "unknown kid").await;
    // A known kid on a token signed by another key: the signature does not match.
    let impostor = Signer::other_rsa("rsa-1");
    assert_refused(&srv, &impostor.token(&claims("u_1")), "known kid, wrong key").await;
    // Unknown kids refetch the JWKS, but at most once per jwks_min_refresh_secs (30 s).
    assert!(jwks.fetches() <= before + 1, "fetches {} after {before}", jwks.fetches());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_with_its_own_key_in_the_header() {
    let (srv, _jwks, _) = setup(20).await;
    let attacker = Signer::other_rsa("rsa-1");
    // The header carries the attacker's public key (jwk) and a URL to more (jku, x5u): none is
    // ever used, only the configured JWKS.
    let header = json!({
        "alg": "RS256", "kid": "rsa-1", "jwk": attacker.jwk(),
        "jku": "http://127.0.0.1:9/evil.json", "x5u": "http://127.0.0.1:9/evil.pem"
    });
    assert_refused(&srv, &attacker.token_with_header(&header, &claims("u_1")), "embedded jwk/jku").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_expired() {
    let (srv, _jwks, rsa) = setup(5).await;
    let mut c = claims("u_1");
    c["exp"] = json!(now() - 3600);
    assert_refused(&srv, &rsa.token(&c), "expired").await;
    c["exp"] = json!(format!("{}", now() + 3600));
    assert_refused(&srv, &rsa.token(&c), "exp as a string").await;
    c.as_object_mut().expect("object").remove("exp");
    assert_refused(&srv, &rsa.token(&c), "no exp").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_nbf_in_the_future() {
    let (srv, _jwks, rsa) = setup(6).await;
    let mut c = claims("u_1");
    c["nbf"] = json!(now() + 3600);
    assert_refused(&srv, &rsa.token(&c), "nbf in the future").await;
    c["nbf"] = json!("99999999999");
    assert_refused(&srv, &rsa.token(&c), "nbf as a string (type confusion)").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_wrong_issuer() {
    let (srv, _jwks, rsa) = setup(7).await;
    let mut c = claims("u_1");
    c["iss"] = json!("https://evil.test/");
    assert_refused(&srv, &rsa.token(&c), "wrong iss").await;
    c.as_object_mut().expect("object").remove("iss");
    assert_refused(&srv, &rsa.token(&c), "no iss").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_wrong_audience() {
    let (srv, _jwks, rsa) = setup(8).await;
    let mut c = claims("u_1");
    c["aud"] = json!("some-other-app");
    assert_refused(&srv, &rsa.token(&c), "wrong aud").await;
    c.as_object_mut().expect("object").remove("aud");
    assert_refused(&srv, &rsa.token(&c), "no aud").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_missing_user_claim() {
    let (srv, _jwks, rsa) = setup(9).await;
    let mut c = claims("u_1");
    c.as_object_mut().expect("object").remove("sub");
    assert_refused(&srv, &rsa.token(&c), "no sub").await;
    c["sub"] = json!(123);
    assert_refused(&srv, &rsa.token(&c), "sub not a string").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_malformed_user_id() {
    let (srv, _jwks, rsa) = setup(10).await;
    for bad in ["auth0|123", "../etc", "", "u 1", "a/b", ".hidden", &"x".repeat(65)] {
        assert_refused(&srv, &rsa.token(&claims(bad)), &format!("sub {bad:?}")).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_tampered_payload() {
    let (srv, _jwks, rsa) = setup(11).await;
    let token = rsa.token(&claims("u_1"));
    let parts: Vec<&str> = token.split('.').collect();
    let mut c = claims("u_1");
    c["sub"] = json!("u_2");
    c["scope"] = json!("warren:admin");
    let tampered = format!("{}.{}.{}", parts[0], b64(c.to_string().as_bytes()), parts[2]);
    assert_refused(&srv, &tampered, "tampered payload").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_truncated_signature() {
    let (srv, _jwks, rsa) = setup(12).await;
    let token = rsa.token(&claims("u_1"));
    assert_refused(&srv, &token[..token.len() - 10], "truncated signature").await;
    let no_sig = &token[..=token.rfind('.').expect("dot")];
    assert_refused(&srv, no_sig, "empty signature").await;
    assert_refused(&srv, "not-a-jwt", "garbage").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_oversized_token() {
    let (srv, _jwks, rsa) = setup(13).await;
    let mut c = claims("u_1");
    c["pad"] = json!("x".repeat(9000));
    let token = rsa.token(&c);
    assert!(token.len() > 8192);
    assert_refused(&srv, &token, "oversized (validly signed)").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotated_key_is_fetched_on_its_unknown_kid() {
    let rsa = Signer::rsa("old");
    let jwks = JwksServer::start(json!({ "keys": [rsa.jwk()] })).await;
    let auth = AuthConfig { jwks_min_refresh_secs: 0, ..jwks_auth(&jwks.url) };
    let srv = TestServer::start(14, auth, ServerConfig::default()).await;
    assert_eq!(whoami(&srv, &rsa.token(&claims("u_1"))).await.0, 200);
    let new = Signer::ec("new");
    assert_eq!(whoami(&srv, &new.token(&claims("u_1"))).await.0, 401, "not published yet");
    jwks.set(json!({ "keys": [new.jwk()] }));
    let before = jwks.fetches();
    assert_eq!(whoami(&srv, &new.token(&claims("u_1"))).await.0, 200, "fetched on the unknown kid");
    assert!(jwks.fetches() > before);
    let fetched = jwks.fetches();
    assert_eq!(whoami(&srv, &new.token(&claims("u_1"))).await.0, 200);
    assert_eq!(jwks.fetches(), fetched, "a known kid does not refetch");
    // The old key was rotated out: refused now.
    assert_eq!(whoami(&srv, &rsa.token(&claims("u_1"))).await.0, 401);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_kids_do_not_hammer_the_identity_provider() {
    let rsa = Signer::rsa("k");
    let jwks = JwksServer::start(json!({ "keys": [rsa.jwk()] })).await;
    let auth = AuthConfig { jwks_min_refresh_secs: 3600, ..jwks_auth(&jwks.url) };
    let srv = TestServer::start(15, auth, ServerConfig::default()).await;
    let before = jwks.fetches();
    for i in 0..20 {
        let t = Signer::other_rsa(&format!("kid-{i}")).token(&claims("u_1"));
        assert_eq!(whoami(&srv, &t).await.0, 401);
    }
    assert_eq!(jwks.fetches(), before, "no refetch within jwks_min_refresh_secs");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hanging_jwks_endpoint_is_bounded() {
    // Accepts connections and never answers.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!("http://{}/jwks", listener.local_addr().expect("addr"));
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = listener.accept().await {
            held.push(s);
        }
    });
    let auth = AuthConfig { jwks_timeout_ms: 300, jwks_min_refresh_secs: 0, ..jwks_auth(&url) };
    let srv = tokio::time::timeout(Duration::from_secs(30), TestServer::start(16, auth, ServerConfig::default()))
        .await
        .expect("the server starts although the JWKS hangs");
    let t = Signer::rsa("k").token(&claims("u_1"));
    let (status, body) = tokio::time::timeout(Duration::from_secs(30), whoami(&srv, &t)).await.expect("bounded");
    assert_eq!(status, 401, "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pem_public_key_verifies_and_refuses_hs256_with_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let pem = dir.path().join("pub.pem");
    std::fs::write(&pem, rsa_public_pem()).expect("write pem");
    let auth = AuthConfig {
        public_key_file: Some(pem),
        issuer: Some(ISSUER.into()),
        audience: Some(AUDIENCE.into()),
        ..AuthConfig::default()
    };
    let srv = TestServer::start(17, auth, ServerConfig::default()).await;
    let rsa = Signer::rsa("any");
    assert_eq!(whoami(&srv, &rsa.token(&claims("u_pem"))).await, (200, json!({ "user": "u_pem", "admin": false })));
    let forger = Signer::hmac(rsa_public_pem().as_bytes());
    assert_refused(&srv, &forger.token(&claims("u_pem")), "HS256 with the PEM").await;
    assert_refused(&srv, &Signer::ec("e").token(&claims("u_pem")), "ES256 with an RSA key configured").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_and_user_claims_are_configurable() {
    let rsa = Signer::rsa("k");
    let jwks = JwksServer::start(json!({ "keys": [rsa.jwk()] })).await;
    let auth = AuthConfig {
        user_claim: "https://example.com/user_id".into(),
        admin_claim: "roles".into(),
        admin_value: "admin".into(),
        ..jwks_auth(&jwks.url)
    };
    let srv = TestServer::start(18, auth, ServerConfig::default()).await;
    let mut c = claims("auth0|ignored");
    c["https://example.com/user_id"] = json!("user_2NfX");
    assert_eq!(whoami(&srv, &rsa.token(&c)).await, (200, json!({ "user": "user_2NfX", "admin": false })));
    c["roles"] = json!(["viewer", "admin"]);
    assert_eq!(whoami(&srv, &rsa.token(&c)).await, (200, json!({ "user": "user_2NfX", "admin": true })));
    c["roles"] = json!("administrator");
    assert_eq!(whoami(&srv, &rsa.token(&c)).await.1["admin"], json!(false), "no substring matches");
    c["scope"] = json!("warren:admin");
    c["roles"] = json!([]);
    assert_eq!(whoami(&srv, &rsa.token(&c)).await.1["admin"], json!(false), "the default admin claim is not consulted");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn development_mode_makes_a_private_secret_and_accepts_only_its_tokens() {
    let srv = TestServer::start(19, AuthConfig::default(), ServerConfig::default()).await;
    let secret_file = srv.state.join("dev-secret");
    let md = std::fs::metadata(&secret_file).expect("dev-secret exists");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(md.permissions().mode() & 0o777, 0o600);
    let secret = std::fs::read_to_string(&secret_file).expect("read secret");
    let secret = secret.trim_end().as_bytes();
    // A token minted independently with the secret, the development issuer and audience.
    let t = now();
    let mut dev = json!({ "sub": "u_dev", "iss": "warren-dev", "aud": "warren", "exp": t + 60, "nbf": t });
    assert_eq!(
        whoami(&srv, &Signer::hmac(secret).token(&dev)).await,
        (200, json!({ "user": "u_dev", "admin": false }))
    );
    dev["scope"] = json!("warren:admin");
    assert_eq!(whoami(&srv, &Signer::hmac(secret).token(&dev)).await.1["admin"], json!(true));
    assert_refused(&srv, &Signer::hmac(&[7u8; 32]).token(&dev), "another secret").await;
    dev["iss"] = json!("elsewhere");
    assert_refused(&srv, &Signer::hmac(secret).token(&dev), "dev token with the wrong iss").await;
    // RS256 tokens are not accepted in development mode.
    assert_refused(&srv, &Signer::rsa("k").token(&claims("u_dev")), "RS256 in dev mode").await;
}

#[test]
fn misconfigurations_are_refused_with_a_reason() {
    let dir = tempfile::tempdir().expect("tempdir");
    let check = |auth: AuthConfig, want: &str| {
        let e = warren_server::auth::Authenticator::new(&auth, dir.path()).expect_err(want).to_string();
        assert!(e.contains(want), "{e}");
    };
    check(
        AuthConfig {
            jwks_url: Some("https://idp.test/jwks".into()),
            secret: Some("s".repeat(40)),
            ..Default::default()
        },
        "only one of",
    );
    check(AuthConfig { secret: Some("short".into()), ..Default::default() }, "at least 32");
    check(
        AuthConfig {
            jwks_url: Some("https://idp.test/jwks".into()),
            algorithms: Some(vec!["HS256".into()]),
            ..Default::default()
        },
        "HMAC algorithms only with secret",
    );
    check(
        AuthConfig { secret: Some("s".repeat(40)), algorithms: Some(vec!["RS256".into()]), ..Default::default() },
        "does not fit",
    );
    check(AuthConfig { jwks_url: Some("http://idp.test/jwks".into()), ..Default::default() }, "must be https");
    check(
        AuthConfig {
            jwks_url: Some("https://idp.test/jwks".into()),
            algorithms: Some(vec!["none".into()]),
            ..Default::default()
        },
        "unknown algorithm",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reserved_subjects_are_refused() {
    let (srv, _jwks, rsa) = setup(30).await;
    // A valid signature does not make a token able to own a coding session's or a skill's workspace.
    for sub in ["code.0123456789ab", "skill.0123456789ab"] {
        assert_refused(&srv, &rsa.token(&claims(sub)), sub).await;
    }
    // Positive control: the same signer, an ordinary subject.
    let (status, _) = srv.call(reqwest::Method::GET, "/v1/whoami", Some(&rsa.token(&claims("code-1"))), None).await;
    assert_eq!(status, 200);
}

#[test]
fn a_leeway_beyond_clock_skew_is_refused() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let mut cfg = warren_server::config::AuthConfig { secret: Some("s".repeat(32)), ..Default::default() };
    cfg.leeway_secs = warren_server::auth::MAX_LEEWAY_SECS;
    warren_server::auth::Authenticator::new(&cfg, tmp.path()).expect("the maximum is fine");
    cfg.leeway_secs = u64::MAX;
    let err = warren_server::auth::Authenticator::new(&cfg, tmp.path()).expect_err("a huge leeway");
    assert!(err.to_string().contains("leeway_secs"), "{err}");
}
