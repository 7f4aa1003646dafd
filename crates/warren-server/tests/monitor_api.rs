//! The resource monitor through the API: stats against limits, the policy routes (reading is
//! the owner's, setting is the admin's), and the per-workspace gauges of `/metrics`. Slots
//! 260..=269 belong to this file. (Enforcement itself is tested on every backend in
//! crates/warren-engine/tests/monitor.rs.)

mod common;

use common::*;
use reqwest::Method;
use serde_json::json;
use warren_server::config::ServerConfig;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stats_policy_and_metrics() {
    let key = Signer::rsa("k1");
    let jwks = JwksServer::start(json!({ "keys": [key.jwk()] })).await;
    let srv = TestServer::start(260, jwks_auth(&jwks.url), ServerConfig::default()).await;
    let (alice, bob, admin) =
        (key.token(&claims("u_alice")), key.token(&claims("u_bob")), key.token(&admin_claims("ops")));

    // A tenant may not pick their own policy at create time...
    let body = json!({ "policy": { "action": "warn", "memory_percent": 10000 } });
    let (status, b) = srv.call(Method::POST, "/v1/workspaces", Some(&alice), Some(body)).await;
    assert_eq!(status, 403, "{b}");
    // ... an admin may.
    let body = json!({ "user": "u_alice", "limits": { "memory_bytes": 268435456 },
        "policy": { "action": "stop", "grace_secs": 5, "memory_percent": 80 } });
    let (status, b) = srv.call(Method::POST, "/v1/workspaces", Some(&admin), Some(body)).await;
    assert_eq!(status, 201, "{b}");
    let (status, b) =
        srv.call(Method::POST, "/v1/workspaces/me/exec", Some(&alice), Some(json!({ "argv": ["true"] }))).await;
    assert_eq!(status, 200, "{b}");

    let (status, s) = srv.call(Method::GET, "/v1/workspaces/me/stats", Some(&alice), None).await;
    assert_eq!(status, 200, "{s}");
    assert_eq!(s["state"], "running");
    assert_eq!(s["memory_limit_bytes"], 268435456u64);
    assert!(s["cpu_percent"].is_number(), "a running workspace has a CPU figure: {s}");
    assert!(s["percent"]["memory"].is_number() && s["percent"]["pids"].is_number(), "{s}");
    assert_eq!(s["over"], json!([]));
    assert_eq!(s["policy"]["action"], "stop");
    assert_eq!(s["policy"]["memory_percent"], 80);

    let (status, p) = srv.call(Method::GET, "/v1/workspaces/me/policy", Some(&alice), None).await;
    assert_eq!((status, p["grace_secs"].as_u64()), (200, Some(5)), "{p}");
    let (status, _) = srv.call(Method::GET, "/v1/workspaces/u_alice/policy", Some(&bob), None).await;
    assert_eq!(status, 403, "another tenant reads no policy");
    let lax = json!({ "policy": { "action": "warn" } });
    let (status, b) = srv.call(Method::PUT, "/v1/workspaces/me/policy", Some(&alice), Some(lax.clone())).await;
    assert_eq!(status, 403, "a tenant cannot loosen their own policy: {b}");
    let (status, b) = srv
        .call(
            Method::PUT,
            "/v1/workspaces/u_alice/policy",
            Some(&admin),
            Some(json!({ "policy": { "action": "nuke" } })),
        )
        .await;
    assert_eq!((status, error_code(&b).as_str()), (400, "invalid_request"), "{b}");
    let (status, b) = srv
        .call(
            Method::PUT,
            "/v1/workspaces/u_alice/policy",
            Some(&admin),
            Some(json!({ "policy": { "action": "kill", "memory_percent": 0 } })),
        )
        .await;
    assert_eq!(status, 400, "a zero threshold is refused: {b}");
    let (status, p) = srv.call(Method::PUT, "/v1/workspaces/u_alice/policy", Some(&admin), Some(lax)).await;
    assert_eq!((status, p["action"].as_str()), (200, Some("warn")), "{p}");
    assert_eq!(p["memory_percent"], json!(null), "fields left out are not watched");
    let (status, p) =
        srv.call(Method::PUT, "/v1/workspaces/u_alice/policy", Some(&admin), Some(json!({ "policy": null }))).await;
    assert_eq!(status, 200, "{p}");
    assert_eq!(p["action"], srv.cfg.monitor.policy.action.as_str(), "null returns to the configured default");

    let resp = srv.req(Method::GET, "/metrics", None).send().await.expect("metrics");
    let text = resp.text().await.expect("text");
    assert!(text.contains("warren_workspace_memory_limit_bytes{user=\"u_alice\",backend=\"dir\"} 268435456"), "{text}");
    assert!(text.contains("warren_workspace_pids{user=\"u_alice\",backend=\"dir\"}"), "{text}");
    let events = srv.engine.events(Some(&warren_core::UserId::new("u_alice").expect("id")), 50).await.expect("ev");
    assert!(events.iter().filter(|e| e.kind == "policy").count() >= 3, "policy changes are audited: {events:?}");
}
