//! The code-session routes over real HTTP on the dir backend: only an admin starts a session
//! (for a user), the owner drives it, anyone else gets 403; exec with its commit, changes,
//! diff, log, sync with conflicts and force, stop. Uids: 3_100_000 + 1000 per slot, slots
//! 50..=59 (the warren-code crate's tests use 0..=49).

mod common;

use common::*;
use reqwest::Method;
use serde_json::{json, Value};
use warren_server::config::ServerConfig;

const UID_BASE: u32 = 3_100_000;

async fn server(slot: u32) -> (TestServer, JwksServer, Signer, tempfile::TempDir) {
    server_with(slot, |_| ServerConfig::default()).await
}

/// A server whose settings may name directories of its temporary directory.
async fn server_with(
    slot: u32,
    settings: impl FnOnce(&std::path::Path) -> ServerConfig,
) -> (TestServer, JwksServer, Signer, tempfile::TempDir) {
    let key = Signer::rsa("k1");
    let jwks = JwksServer::start(json!({ "keys": [key.jwk()] })).await;
    let (tmp, mut cfg) = engine_config(slot);
    cfg.uid_base = UID_BASE + slot * 1000;
    let srv = TestServer::start_on(cfg, jwks_auth(&jwks.url), settings(tmp.path())).await;
    (srv, jwks, key, tmp)
}

/// With `code_project_roots`, a normal user starts sessions for themselves beneath their own
/// root, and nowhere else: not another user's root, not through a symlink or `..` out of theirs,
/// not for someone else; whether a path exists is told only inside their root.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_starts_sessions_beneath_their_project_root_only() {
    let (srv, _jwks, key, tmp) = server_with(51, |t| ServerConfig {
        code_project_roots: vec![format!("{}/projects/{{user}}", t.display())],
        ..ServerConfig::default()
    })
    .await;
    let alice = key.token(&claims("u_alice"));
    let projects = tmp.path().join("projects");
    for p in ["u_alice/app/src", "u_bob/secret"] {
        std::fs::create_dir_all(projects.join(p)).expect("mkdir");
    }
    std::fs::write(projects.join("u_alice/app/src/main.rs"), b"fn main() {}\n").expect("write");
    std::fs::write(projects.join("u_bob/secret/key"), b"bob's\n").expect("write");
    std::os::unix::fs::symlink(projects.join("u_bob/secret"), projects.join("u_alice/link")).expect("symlink");
    let p = |rel: &str| projects.join(rel).to_string_lossy().into_owned();

    for (path, owner, status) in [
        (p("u_bob/secret"), None, 403),
        (p("u_alice/link"), None, 403),
        (p("u_alice/../u_bob/secret"), None, 403),
        ("/etc".to_owned(), None, 403),
        ("/nonexistent/anywhere".to_owned(), None, 403),
        (p("u_alice/missing"), None, 404),
        (p("u_alice/app"), Some("u_bob"), 403),
    ] {
        let body = json!({ "path": path, "owner": owner, "backend": "dir" });
        let (st, answer) = srv.post("/v1/code/sessions", &alice, body.clone()).await;
        assert_eq!(st, status, "{body}: {answer}");
    }
    let (st, body) = srv.post("/v1/code/sessions", &alice, json!({ "path": p("u_alice/app"), "backend": "dir" })).await;
    assert_eq!(st, 201, "{body}");
    assert_eq!(body["owner"], "u_alice");
    assert_eq!(body["copy"]["files"], 1, "{body}");
    let id = body["id"].as_str().expect("id").to_owned();
    let (st, body) =
        srv.post(&format!("/v1/code/sessions/{id}/exec"), &alice, json!({ "argv": ["cat", "src/main.rs"] })).await;
    assert_eq!((st, body["stdout"].as_str()), (200, Some("fn main() {}\n")), "{body}");
    // A read-only command changed no file: nothing to sync, the session just stops.
    let (st, body) = srv.call(Method::DELETE, &format!("/v1/code/sessions/{id}"), Some(&alice), None).await;
    assert_eq!(st, 200, "{body}");
}

fn check<T: serde::de::DeserializeOwned>(v: &Value) -> T {
    serde_json::from_value(v.clone()).unwrap_or_else(|e| panic!("the CLI cannot read {v}: {e}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn code_sessions_over_http() {
    let (srv, _jwks, key, tmp) = server(50).await;
    let admin = key.token(&admin_claims("ops"));
    let alice = key.token(&claims("u_alice"));
    let bob = key.token(&claims("u_bob"));
    let proj = tmp.path().join("project");
    std::fs::create_dir_all(proj.join("src")).expect("mkdir");
    std::fs::write(proj.join("src/a.txt"), b"one\n").expect("write");
    std::fs::create_dir_all(proj.join(".git")).expect("mkdir");
    std::fs::write(proj.join(".git/HEAD"), b"ref: refs/heads/main\n").expect("write");
    let path = proj.to_string_lossy().into_owned();

    // Only an admin may copy a host directory into a sandbox.
    let (st, body) = srv.post("/v1/code/sessions", &alice, json!({ "path": path })).await;
    assert_eq!((st, error_code(&body).as_str()), (403, "forbidden"), "{body}");
    let (st, body) = srv.post("/v1/code/sessions", &admin, json!({ "path": "relative/dir" })).await;
    assert_eq!((st, error_code(&body).as_str()), (400, "invalid_request"), "{body}");
    let missing = tmp.path().join("missing").to_string_lossy().into_owned();
    let (st, body) = srv.post("/v1/code/sessions", &admin, json!({ "path": missing })).await;
    assert_eq!(st, 404, "{body}");
    let (st, body) = srv.post("/v1/code/sessions", &admin, json!({ "path": path, "owner": "code.abc" })).await;
    assert_eq!(st, 400, "{body}");
    let (st, body) = srv.post("/v1/code/sessions", &admin, json!({ "path": path, "bogus": 1 })).await;
    assert_eq!(st, 400, "{body}");

    let (st, body) =
        srv.post("/v1/code/sessions", &admin, json!({ "path": path, "owner": "u_alice", "backend": "dir" })).await;
    assert_eq!(st, 201, "{body}");
    let info: warren_code::SessionInfo = check(&body);
    assert_eq!(info.owner.as_ref().map(|o| o.as_str()), Some("u_alice"));
    assert_eq!(body["status"], "active");
    assert_eq!(body["backend"], "dir");
    assert_eq!(body["state"], "running");
    assert_eq!(body["copy"]["files"], 1);
    let id = info.id.to_string();
    let base = format!("/v1/code/sessions/{id}");

    // The owner sees it; another user does not, and may not touch it.
    let (st, list) = srv.get("/v1/code/sessions", &alice).await;
    assert_eq!((st, list.as_array().map(Vec::len)), (200, Some(1)), "{list}");
    let _: Vec<warren_code::SessionInfo> = check(&list);
    let (st, list) = srv.get("/v1/code/sessions", &bob).await;
    assert_eq!((st, list), (200, json!([])));
    let (st, list) = srv.get("/v1/code/sessions", &admin).await;
    assert_eq!((st, list.as_array().map(Vec::len)), (200, Some(1)));
    for (method, route) in [
        (Method::GET, base.clone()),
        (Method::POST, format!("{base}/exec")),
        (Method::GET, format!("{base}/changes")),
        (Method::GET, format!("{base}/diff")),
        (Method::GET, format!("{base}/log")),
        (Method::POST, format!("{base}/sync")),
        (Method::POST, format!("{base}/commit")),
        (Method::DELETE, base.clone()),
    ] {
        let body = match route.rsplit('/').next() {
            Some("exec") => Some(json!({ "argv": ["true"] })),
            _ if method == Method::POST => Some(json!({})),
            _ => None,
        };
        let (st, b) = srv.call(method.clone(), &route, Some(&bob), body).await;
        assert_eq!((st, error_code(&b).as_str()), (403, "forbidden"), "{method} {route}: {b}");
    }
    let (st, b) = srv.get("/v1/code/sessions/not-an-id", &alice).await;
    assert_eq!(st, 400, "{b}");
    let (st, b) = srv.get("/v1/code/sessions/0123456789ab", &alice).await;
    assert_eq!(st, 404, "{b}");

    // Exec and its commit; the changes, the diff, the log.
    let (st, out) = srv
        .post(
            &format!("{base}/exec"),
            &alice,
            json!({ "argv": ["sh", "-c", "echo two > src/a.txt; echo new > b.txt; echo out"] }),
        )
        .await;
    assert_eq!(st, 200, "{out}");
    assert_eq!((out["exit_code"].as_i64(), out["stdout"].as_str()), (Some(0), Some("out\n")));
    assert_eq!(out["commit"]["changed"], true);
    let _: warren_code::CommitInfo = check(&out["commit"]);
    let (st, ch) = srv.get(&format!("{base}/changes"), &alice).await;
    assert_eq!(st, 200, "{ch}");
    let changes: warren_code::Changes = check(&ch);
    let files: Vec<(&str, warren_code::ChangeKind)> = changes.files.iter().map(|f| (f.path.as_str(), f.kind)).collect();
    assert_eq!(
        files,
        vec![("b.txt", warren_code::ChangeKind::Added), ("src/a.txt", warren_code::ChangeKind::Modified)]
    );
    let (st, d) = srv.get(&format!("{base}/diff?path=src"), &alice).await;
    assert_eq!(st, 200, "{d}");
    let diff: warren_code::Diff = check(&d);
    assert!(diff.text.contains("-one\n+two\n") && !diff.text.contains("b.txt"), "{}", diff.text);
    let (st, b) = srv.get(&format!("{base}/diff?from=--output=/tmp/x"), &alice).await;
    assert_eq!(st, 400, "{b}");
    let (st, log) = srv.get(&format!("{base}/log?limit=10"), &alice).await;
    assert_eq!(st, 200, "{log}");
    let log: Vec<warren_code::LogEntry> = check(&log);
    assert_eq!(log.len(), 2);
    assert!(log[0].subject.starts_with("exec: sh -c 'echo two") && log[0].message.contains("exit: 0"), "{log:?}");

    // A host edit blocks the sync (409 listing it); a dry run lists it; force overrides.
    std::fs::write(proj.join("src/a.txt"), b"host\n").expect("host edit");
    let (st, b) = srv.post(&format!("{base}/sync"), &alice, json!({})).await;
    assert_eq!((st, error_code(&b).as_str()), (409, "conflict"), "{b}");
    assert!(b["error"]["message"].as_str().unwrap_or_default().contains("src/a.txt: changed on the host"), "{b}");
    let (st, dry) = srv.post(&format!("{base}/sync"), &alice, json!({ "dry_run": true })).await;
    assert_eq!(st, 200, "{dry}");
    let dry: warren_code::SyncReport = check(&dry);
    assert_eq!((dry.applied, dry.conflicts.len()), (false, 1));
    let (st, rep) = srv.post(&format!("{base}/sync"), &alice, json!({ "force": true })).await;
    assert_eq!(st, 200, "{rep}");
    assert_eq!(rep["written"], json!(["b.txt", "src/a.txt"]));
    assert_eq!(std::fs::read(proj.join("src/a.txt")).expect("read"), b"two\n");
    assert_eq!(std::fs::read(proj.join(".git/HEAD")).expect("read"), b"ref: refs/heads/main\n");

    // Stop: refused with unsynced changes, then discarded.
    let (st, out) = srv.post(&format!("{base}/exec"), &alice, json!({ "argv": ["sh", "-c", "echo 3 > c.txt"] })).await;
    assert_eq!(st, 200, "{out}");
    let (st, b) = srv.call(Method::DELETE, &base, Some(&alice), None).await;
    assert_eq!((st, error_code(&b).as_str()), (409, "conflict"), "{b}");
    let (st, b) = srv.call(Method::DELETE, &format!("{base}?discard=true"), Some(&alice), None).await;
    assert_eq!(st, 200, "{b}");
    let stopped: warren_code::StopReport = check(&b);
    assert!(stopped.discarded_changes && !stopped.history_kept);
    let (st, _) = srv.get(&base, &alice).await;
    assert_eq!(st, 404);
    assert!(srv.engine.list().await.expect("list").is_empty(), "the workspace is gone");

    // The audit trail names the owner for the mutating calls.
    let events = srv.engine.events(Some(&warren_core::UserId::new("u_alice").expect("id")), 100).await.expect("events");
    assert!(events.iter().any(|e| e.kind == "api" && e.detail["route"] == "/v1/code/sessions/{id}/sync"), "{events:?}");
}
