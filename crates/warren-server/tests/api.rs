//! The REST API over real HTTP on the dir backend: workspaces, exec, files, archives, the
//! seed's routes, errors, limits, the audit trail, metrics, shutdown and restart. Slots 40..=99
//! belong to this file.

mod common;

use std::io::Read;
use std::time::Duration;

use base64::Engine as _;
use common::*;
use reqwest::Method;
use serde_json::{json, Value};
use warren_server::config::ServerConfig;

/// A server on a JWKS with one RSA key.
struct Api {
    srv: TestServer,
    _jwks: JwksServer,
    key: Signer,
}

impl Api {
    async fn start(slot: u32, server: ServerConfig) -> Self {
        let key = Signer::rsa("k1");
        let jwks = JwksServer::start(json!({ "keys": [key.jwk()] })).await;
        let srv = TestServer::start(slot, jwks_auth(&jwks.url), server).await;
        Self { srv, _jwks: jwks, key }
    }

    fn token(&self, user: &str) -> String {
        self.key.token(&claims(user))
    }

    fn admin(&self) -> String {
        self.key.token(&admin_claims("ops"))
    }
}

impl std::ops::Deref for Api {
    type Target = TestServer;
    fn deref(&self) -> &TestServer {
        &self.srv
    }
}

fn b64d(s: &Value) -> Vec<u8> {
    base64::engine::general_purpose::STANDARD.decode(s.as_str().expect("string")).expect("base64")
}

/// Reads an NDJSON exec stream to its end.
async fn stream_events(resp: reqwest::Response) -> Vec<Value> {
    assert_eq!(resp.status().as_u16(), 200);
    assert_eq!(resp.headers()["content-type"], "application/x-ndjson");
    let text = resp.text().await.expect("stream");
    text.lines().map(|l| serde_json::from_str(l).expect("one JSON event per line")).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workspace_lifecycle_through_me() {
    let api = Api::start(40, ServerConfig::default()).await;
    let t = api.token("u_life");
    let (status, w) = api.call(Method::POST, "/v1/workspaces", Some(&t), None).await;
    assert_eq!(status, 201, "{w}");
    assert_eq!(
        (w["user"].as_str(), w["state"].as_str(), w["backend"].as_str()),
        (Some("u_life"), Some("stopped"), Some("dir"))
    );
    let (status, body) = api.post("/v1/workspaces", &t, json!({})).await;
    assert_eq!((status, error_code(&body).as_str()), (409, "already_exists"));
    assert_eq!(api.get("/v1/workspaces/me", &t).await.1["workspace_id"], w["workspace_id"]);
    assert_eq!(api.get("/v1/workspaces/u_life", &t).await.1["workspace_id"], w["workspace_id"]);
    let (status, started) = api.post("/v1/workspaces/me/start", &t, json!(null)).await;
    assert_eq!((status, started["state"].as_str()), (200, Some("running")));
    let (status, stats) = api.get("/v1/workspaces/me/stats", &t).await;
    assert_eq!(status, 200, "{stats}");
    assert!(stats["disk_bytes"].is_u64() && stats["pids"].is_u64(), "{stats}");
    let (status, stopped) = api.post("/v1/workspaces/me/stop", &t, json!(null)).await;
    assert_eq!((status, stopped["state"].as_str()), (200, Some("stopped")));
    // A normal user's list is their own workspace; an admin's is everyone's.
    let admin = api.admin();
    api.post("/v1/workspaces", &admin, json!({ "user": "u_other" })).await;
    let (_, mine) = api.get("/v1/workspaces", &t).await;
    assert_eq!(mine.as_array().map(Vec::len), Some(1), "{mine}");
    let (_, all) = api.get("/v1/workspaces", &admin).await;
    let users: Vec<&str> = all.as_array().expect("list").iter().filter_map(|w| w["user"].as_str()).collect();
    assert_eq!(users, ["u_life", "u_other"]);
    let (status, body) = api.call(Method::DELETE, "/v1/workspaces/me", Some(&t), None).await;
    assert_eq!((status, body), (200, json!({ "destroyed": "u_life" })));
    let (status, body) = api.get("/v1/workspaces/me", &t).await;
    assert_eq!((status, error_code(&body).as_str()), (404, "not_found"));
    assert_eq!(api.get("/v1/workspaces", &t).await.1, json!([]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_takes_partial_limits_over_the_defaults() {
    let api = Api::start(41, ServerConfig::default()).await;
    let t = api.token("u_lim");
    let (status, w) = api
        .post(
            "/v1/workspaces",
            &t,
            json!({ "limits": { "memory_bytes": 1073741824u64, "cpu_millis": null }, "network": true }),
        )
        .await;
    assert_eq!(status, 201, "{w}");
    assert_eq!(
        w["limits"],
        json!({ "memory_bytes": 1073741824u64, "cpu_millis": null, "pids": 256, "disk_bytes": 2147483648u64, "nofile": 1024 })
    );
    assert_eq!(w["network"], json!(true));
    let t2 = api.token("u_lim2");
    for (body, code) in [
        (json!({ "limits": { "memory_bytes": 1 } }), "invalid_request"),
        (json!({ "limits": { "memroy_bytes": 1 } }), "invalid_request"),
        (json!({ "color": "red" }), "invalid_request"),
        (json!({ "user": "u_someone_else" }), "forbidden"),
        (json!({ "user": "../x" }), "invalid_id"),
        (json!({ "image": "../../etc" }), "invalid_request"),
        (json!({ "image": "" }), "invalid_request"),
        // This server's backend is dir: the host's programs, no image of a workspace's own.
        (json!({ "image": "python:3.11" }), "unsupported"),
    ] {
        let (status, e) = api.post("/v1/workspaces", &t2, body.clone()).await;
        assert_eq!(error_code(&e), code, "{body}: {e}");
        let want = match code {
            "forbidden" => 403,
            "unsupported" => 501,
            _ => 400,
        };
        assert_eq!(status, want, "{body}");
    }
    let (status, w) = api.get("/v1/workspaces/me", &t2).await;
    assert_eq!(status, 404, "no failed create left a workspace: {w}");
    assert_eq!(api.get("/v1/workspaces/me", &t).await.1["image"], json!(null), "no image of its own");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exec_returns_output_exit_code_and_timeouts() {
    let api = Api::start(42, ServerConfig::default()).await;
    let t = api.token("u_exec");
    api.post("/v1/workspaces", &t, json!({})).await;
    // The workspace is started on demand.
    let (status, r) = api
        .post(
            "/v1/workspaces/me/exec",
            &t,
            json!({ "argv": ["sh", "-c", "mkdir -p sub; cd sub; pwd; cat; echo \"$GREETING\" >&2; exit 3"], "env": { "GREETING": "hallo" }, "stdin": "from stdin\n" }),
        )
        .await;
    assert_eq!(status, 200, "{r}");
    assert_eq!(r["exit_code"], json!(3));
    assert!(r["stdout"].as_str().expect("stdout").ends_with("/sub\nfrom stdin\n"), "{r}");
    assert_eq!(
        (r["stderr"].as_str(), r["encoding"].as_str(), r["timed_out"].as_bool()),
        (Some("hallo\n"), Some("utf8"), Some(false))
    );
    // cwd, base64 in and out (exact bytes, invalid UTF-8 included).
    let input = base64::engine::general_purpose::STANDARD.encode([0u8, 255, 10, 200]);
    let (_, r) = api
        .post(
            "/v1/workspaces/me/exec",
            &t,
            json!({ "argv": ["cat"], "cwd": "sub", "stdin_base64": input, "encoding": "base64" }),
        )
        .await;
    assert_eq!(b64d(&r["stdout"]), [0u8, 255, 10, 200]);
    let (_, r) = api.post("/v1/workspaces/me/exec", &t, json!({ "argv": ["printf", "\\377ok"] })).await;
    assert_eq!(r["stdout"], json!("\u{FFFD}ok"), "utf8 mode is lossy");
    let (status, r) =
        api.post("/v1/workspaces/me/exec", &t, json!({ "argv": ["sleep", "30"], "timeout_ms": 300 })).await;
    assert_eq!((status, r["timed_out"].as_bool(), r["signal"].as_i64()), (200, Some(true), Some(9)), "{r}");
    for (body, why) in [
        (json!({ "argv": [] }), "empty argv"),
        (json!({ "argv": ["true"], "stdin": "a", "stdin_base64": "YQ==" }), "two stdins"),
        (json!({ "argv": ["true"], "stdin_base64": "***" }), "bad base64"),
        (json!({ "argv": ["true"], "timeout_ms": 999_999_999_999u64 }), "timeout too long"),
        (json!({ "argv": ["true"], "env": { "1BAD": "x" } }), "bad env name"),
        (json!({ "argv": ["true"], "shell": true }), "unknown field"),
        (json!({ "argv": ["true"], "cwd": "../.." }), "cwd outside"),
    ] {
        let (status, e) = api.post("/v1/workspaces/me/exec", &t, body).await;
        assert!(status == 400 || status == 404, "{why}: {status} {e}");
        error_code(&e);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exec_stream_sends_events_as_they_happen() {
    let api = Api::start(43, ServerConfig::default()).await;
    let t = api.token("u_stream");
    api.post("/v1/workspaces", &t, json!({})).await;
    // The first line arrives while the command still runs (it waits for its stdin... no: for a
    // file the test writes only after reading that line).
    let resp = api
        .req(Method::POST, "/v1/workspaces/me/exec/stream", Some(&t))
        .json(&json!({ "argv": ["sh", "-c", "echo first; while [ ! -e go ]; do sleep 0.05; done; echo second >&2; printf '\\303'; sleep 0.1; printf '\\251\\n'; exit 5"] }))
        .send()
        .await
        .expect("request");
    assert_eq!(resp.status().as_u16(), 200);
    let mut resp = resp;
    let mut got = Vec::new();
    while !got.ends_with(b"\n") {
        got.extend_from_slice(&resp.chunk().await.expect("chunk").expect("more"));
    }
    assert_eq!(serde_json::from_slice::<Value>(&got).expect("event"), json!({ "type": "stdout", "data": "first\n" }));
    let (status, _) = api.call(Method::PUT, "/v1/workspaces/me/files/go", Some(&t), None).await;
    assert_eq!(status, 200);
    let mut rest = Vec::new();
    while let Some(c) = resp.chunk().await.expect("chunk") {
        rest.extend_from_slice(&c);
    }
    let events: Vec<Value> =
        String::from_utf8(rest).expect("utf8").lines().map(|l| serde_json::from_str(l).expect("json")).collect();
    let out: String = events.iter().filter(|e| e["type"] == "stdout").filter_map(|e| e["data"].as_str()).collect();
    assert_eq!(out, "é\n", "a character split across writes arrives whole: {events:?}");
    assert!(events.iter().any(|e| *e == json!({ "type": "stderr", "data": "second\n" })), "{events:?}");
    let last = events.last().expect("events");
    assert_eq!(
        (last["type"].as_str(), last["exit_code"].as_i64(), last["timed_out"].as_bool()),
        (Some("exit"), Some(5), Some(false))
    );
    // base64 mode, stdin, and a timeout.
    let resp = api
        .req(Method::POST, "/v1/workspaces/me/exec/stream", Some(&t))
        .json(
            &json!({ "argv": ["sh", "-c", "cat; sleep 30"], "stdin": "in\n", "encoding": "base64", "timeout_ms": 500 }),
        )
        .send()
        .await
        .expect("request");
    let events = stream_events(resp).await;
    assert_eq!(b64d(&events[0]["data"]), b"in\n");
    let last = events.last().expect("events");
    assert_eq!((last["type"].as_str(), last["timed_out"].as_bool()), (Some("exit"), Some(true)), "{events:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closing_the_stream_kills_the_command() {
    let api = Api::start(44, ServerConfig::default()).await;
    let t = api.token("u_gone");
    api.post("/v1/workspaces", &t, json!({})).await;
    let mut resp = api
        .req(Method::POST, "/v1/workspaces/me/exec/stream", Some(&t))
        .json(&json!({ "argv": ["sh", "-c", "echo $$; exec sleep 600"] }))
        .send()
        .await
        .expect("request");
    let mut got = Vec::new();
    while !got.ends_with(b"\n") {
        got.extend_from_slice(&resp.chunk().await.expect("chunk").expect("more"));
    }
    let ev: Value = serde_json::from_slice(&got).expect("event");
    let pid: u32 = ev["data"].as_str().expect("data").trim().parse().expect("pid");
    assert!(std::path::Path::new(&format!("/proc/{pid}")).exists());
    drop(resp);
    // Poll (bounded) until the process is gone.
    for _ in 0..600 {
        let gone = match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
            Err(_) => true,
            Ok(s) => s.rsplit(") ").next().is_some_and(|r| r.starts_with('Z')),
        };
        if gone {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the command {pid} still runs after its client went away");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn files_are_written_read_listed_and_deleted() {
    let api = Api::start(45, ServerConfig::default()).await;
    let t = api.token("u_files");
    api.post("/v1/workspaces", &t, json!({})).await;
    let resp = api
        .req(Method::PUT, "/v1/workspaces/me/files/dir/with%20space/run.sh?mode=755", Some(&t))
        .body(b"#!/bin/sh\necho ran\n".to_vec())
        .send()
        .await
        .expect("put");
    assert_eq!(resp.status().as_u16(), 200);
    assert_eq!(
        resp.json::<Value>().await.expect("json"),
        json!({ "path": "dir/with space/run.sh", "bytes": 19, "mode": "755" })
    );
    let resp =
        api.req(Method::GET, "/v1/workspaces/me/files/dir/with%20space/run.sh", Some(&t)).send().await.expect("get");
    assert_eq!(resp.headers()["content-type"], "application/octet-stream");
    assert_eq!(resp.bytes().await.expect("body").as_ref(), b"#!/bin/sh\necho ran\n");
    let (_, r) = api.post("/v1/workspaces/me/exec", &t, json!({ "argv": ["./run.sh"], "cwd": "dir/with space" })).await;
    assert_eq!(r["stdout"], json!("ran\n"), "mode 755 made it executable: {r}");
    let (status, list) = api.get("/v1/workspaces/me/files?path=dir", &t).await;
    assert_eq!(status, 200);
    assert_eq!(list[0]["name"], json!("with space"));
    assert_eq!(list[0]["kind"], json!("dir"));
    let (_, list) = api.get("/v1/workspaces/me/files?path=dir/with%20space", &t).await;
    assert_eq!(
        (list[0]["name"].as_str(), list[0]["mode"].as_u64(), list[0]["size"].as_u64()),
        (Some("run.sh"), Some(0o755), Some(19))
    );
    // The file belongs to the workspace's uid on the host.
    use std::os::unix::fs::MetadataExt;
    let uid = api.get("/v1/workspaces/me", &t).await.1["uid"].as_u64().expect("uid");
    let host = api.state.join("workspaces/u_files/dir/with space/run.sh");
    assert_eq!(u64::from(std::fs::metadata(&host).expect("host file").uid()), uid);
    // Errors.
    for (m, path, code, status) in [
        (Method::GET, "/v1/workspaces/me/files/dir", "invalid_path", 400),
        (Method::GET, "/v1/workspaces/me/files/nope", "not_found", 404),
        (Method::GET, "/v1/workspaces/me/files/x%2F..%2F..%2Fetc%2Fpasswd", "invalid_path", 400),
        (Method::GET, "/v1/workspaces/me/files//etc/passwd", "invalid_path", 400),
        (Method::PUT, "/v1/workspaces/me/files/..%2Fescape", "invalid_path", 400),
        (Method::PUT, "/v1/workspaces/me/files/x?mode=4755", "invalid_request", 400),
        (Method::DELETE, "/v1/workspaces/me/files/dir", "conflict", 409),
        (Method::GET, "/v1/workspaces/me/files?path=%2E%2E", "invalid_path", 400),
    ] {
        let (s, e) = api.call(m.clone(), path, Some(&t), None).await;
        assert_eq!((s, error_code(&e).as_str()), (status, code), "{m} {path}: {e}");
    }
    // A symlink planted inside cannot lead outside, for reading or writing.
    api.post("/v1/workspaces/me/exec", &t, json!({ "argv": ["sh", "-c", "ln -s /etc/shadow shadow; ln -s / root"] }))
        .await;
    let (s, e) = api.get("/v1/workspaces/me/files/shadow", &t).await;
    assert_eq!((s, error_code(&e).as_str()), (400, "invalid_path"), "{e}");
    let (s, _) = api.call(Method::PUT, "/v1/workspaces/me/files/root/tmp/x", Some(&t), None).await;
    assert_eq!(s, 400);
    let (s, _) = api.call(Method::DELETE, "/v1/workspaces/me/files/dir?recursive=true", Some(&t), None).await;
    assert_eq!(s, 204);
    let (s, _) = api.get("/v1/workspaces/me/files?path=dir", &t).await;
    assert_eq!(s, 404);
}

fn tar_of(entries: &[(&str, &[u8], u32)], dirs: &[&str]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for d in dirs {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Directory);
        h.set_mode(0o755);
        h.set_size(0);
        b.append_data(&mut h, d, std::io::empty()).expect("dir entry");
    }
    for (path, data, mode) in entries {
        let mut h = tar::Header::new_gnu();
        h.set_mode(*mode);
        h.set_size(data.len() as u64);
        b.append_data(&mut h, path, *data).expect("file entry");
    }
    b.into_inner().expect("tar")
}

/// A tar with one raw entry: the name is written as is (the tar crate refuses `..` itself).
fn raw_tar(name: &[u8], kind: tar::EntryType, link: Option<&str>, data: &[u8]) -> Vec<u8> {
    let mut h = tar::Header::new_old();
    h.as_old_mut().name[..name.len()].copy_from_slice(name);
    h.set_entry_type(kind);
    h.set_mode(0o644);
    h.set_size(data.len() as u64);
    if let Some(l) = link {
        h.set_link_name(l).expect("link name");
    }
    h.set_cksum();
    let mut b = tar::Builder::new(Vec::new());
    b.append(&h, data).expect("append");
    b.into_inner().expect("tar")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tree_goes_up_and_down_as_tar() {
    let api = Api::start(46, ServerConfig::default()).await;
    let t = api.token("u_tar");
    api.post("/v1/workspaces", &t, json!({})).await;
    let long = format!("deep/{}/file.txt", "n".repeat(150));
    let tarball = tar_of(
        &[("a.txt", b"alpha", 0o600), ("bin/run", b"#!/bin/sh\n", 0o755), (&long, b"long", 0o644)],
        &["empty", "bin"],
    );
    let resp =
        api.req(Method::PUT, "/v1/workspaces/me/archive?path=proj", Some(&t)).body(tarball).send().await.expect("put");
    assert_eq!(resp.status().as_u16(), 200);
    let r: Value = resp.json().await.expect("json");
    assert_eq!((r["files"].as_u64(), r["bytes"].as_u64()), (Some(3), Some(19)), "{r}");
    let (_, r) = api.post("/v1/workspaces/me/exec", &t, json!({ "argv": ["sh", "-c", "cat proj/a.txt; stat -c %a proj/a.txt proj/bin/run; ls proj/empty | wc -l"] })).await;
    assert_eq!(r["stdout"], json!("alpha600\n755\n0\n"), "{r}");
    // A symlink in the tree is left out of the download.
    api.post("/v1/workspaces/me/exec", &t, json!({ "argv": ["ln", "-s", "/etc/passwd", "proj/link"] })).await;
    let resp = api.req(Method::GET, "/v1/workspaces/me/archive?path=proj", Some(&t)).send().await.expect("get");
    assert_eq!(resp.headers()["content-type"], "application/x-tar");
    let bytes = resp.bytes().await.expect("tar");
    let mut ar = tar::Archive::new(&bytes[..]);
    let mut got = Vec::new();
    for e in ar.entries().expect("entries") {
        let mut e = e.expect("entry");
        let path = e.path().expect("path").to_string_lossy().into_owned();
        let mut data = Vec::new();
        e.read_to_end(&mut data).expect("read");
        got.push((path, e.header().mode().expect("mode") & 0o777, data));
    }
    got.sort();
    let names: Vec<&str> = got.iter().map(|(p, _, _)| p.as_str()).collect();
    assert_eq!(names, ["a.txt", "bin", "bin/run", "deep", &format!("deep/{}", "n".repeat(150)), &long, "empty"]);
    assert_eq!(got[0], ("a.txt".to_owned(), 0o600, b"alpha".to_vec()));
    assert_eq!(got[2].2, b"#!/bin/sh\n");
    // Errors before the stream starts.
    let (s, e) = api.get("/v1/workspaces/me/archive?path=missing", &t).await;
    assert_eq!((s, error_code(&e).as_str()), (404, "not_found"));
    let (s, e) = api.get("/v1/workspaces/me/archive?path=proj/a.txt", &t).await;
    assert_eq!((s, error_code(&e).as_str()), (400, "invalid_path"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_archives_are_refused_whole() {
    let api = Api::start(47, ServerConfig::default()).await;
    let t = api.token("u_hostile");
    api.post("/v1/workspaces", &t, json!({})).await;
    let ok_then = |bad: Vec<u8>| {
        // A good entry first: nothing may be written when a later one is bad.
        let mut v = tar_of(&[("good.txt", b"fine", 0o644)], &[]);
        v.truncate(v.len() - 1024); // drop the end-of-archive blocks
        v.extend_from_slice(&bad);
        v
    };
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("symlink", ok_then(raw_tar(b"link", tar::EntryType::Symlink, Some("/etc/passwd"), b""))),
        ("hard link", ok_then(raw_tar(b"hard", tar::EntryType::Link, Some("/etc/passwd"), b""))),
        ("dot-dot", ok_then(raw_tar(b"../evil", tar::EntryType::Regular, None, b"x"))),
        ("inner dot-dot", ok_then(raw_tar(b"a/../../evil", tar::EntryType::Regular, None, b"x"))),
        ("absolute", ok_then(raw_tar(b"/tmp/evil", tar::EntryType::Regular, None, b"x"))),
        ("char device", ok_then(raw_tar(b"dev", tar::EntryType::Char, None, b""))),
        ("block device", ok_then(raw_tar(b"blk", tar::EntryType::Block, None, b""))),
        ("fifo", ok_then(raw_tar(b"fifo", tar::EntryType::Fifo, None, b""))),
        ("garbage", b"this is not a tar archive at all, not even close......".repeat(20)),
    ];
    for (why, body) in cases {
        let resp =
            api.req(Method::PUT, "/v1/workspaces/me/archive?path=up", Some(&t)).body(body).send().await.expect("put");
        let status = resp.status().as_u16();
        let e: Value = resp.json().await.expect("json");
        assert_eq!((status, error_code(&e).as_str()), (400, "invalid_request"), "{why}: {e}");
        let (s, _) = api.get("/v1/workspaces/me/files?path=up", &t).await;
        assert_eq!(s, 404, "{why}: nothing was written");
    }
    assert!(!std::path::Path::new("/tmp/evil").exists());
    // Extracting over a planted symlink stays inside.
    api.post("/v1/workspaces/me/exec", &t, json!({ "argv": ["ln", "-s", "/tmp", "out"] })).await;
    let body = tar_of(&[("x.txt", b"x", 0o644)], &[]);
    let resp =
        api.req(Method::PUT, "/v1/workspaces/me/archive?path=out/sub", Some(&t)).body(body).send().await.expect("put");
    assert_eq!(resp.status().as_u16(), 400);
    assert!(!std::path::Path::new("/tmp/sub/x.txt").exists());
}

/// Every route that names a workspace, with user `u` in it.
fn routes_for(u: &str) -> Vec<(Method, String, Option<Value>)> {
    let w = format!("/v1/workspaces/{u}");
    vec![
        (Method::GET, w.clone(), None),
        (Method::POST, format!("{w}/start"), None),
        (Method::POST, format!("{w}/stop"), None),
        (Method::GET, format!("{w}/stats"), None),
        (Method::POST, format!("{w}/exec"), Some(json!({ "argv": ["cat", "secret.txt"] }))),
        (Method::POST, format!("{w}/exec/stream"), Some(json!({ "argv": ["cat", "secret.txt"] }))),
        (Method::GET, format!("{w}/files"), None),
        (Method::GET, format!("{w}/files/secret.txt"), None),
        (Method::PUT, format!("{w}/files/planted.txt"), None),
        (Method::DELETE, format!("{w}/files/secret.txt"), None),
        (Method::GET, format!("{w}/archive"), None),
        (Method::PUT, format!("{w}/archive"), None),
        (Method::GET, format!("/v1/events?user={u}"), None),
        (Method::POST, "/v1/workspaces".to_owned(), Some(json!({ "user": u }))),
        (Method::POST, "/snapshot/create".to_owned(), Some(json!({ "user_id": u }))),
        (Method::POST, "/snapshot/restore".to_owned(), Some(json!({ "user_id": u, "snapshot_id": "snap_1" }))),
        (Method::GET, format!("/snapshot/list/{u}"), None),
        (Method::POST, format!("{w}/snapshots"), None),
        (Method::GET, format!("{w}/snapshots"), None),
        (Method::GET, format!("{w}/snapshots/snap_1"), None),
        (Method::POST, format!("{w}/snapshots/snap_1/restore"), None),
        (Method::POST, format!("{w}/snapshots/snap_1/pin"), None),
        (Method::DELETE, format!("{w}/snapshots/snap_1"), None),
        (Method::DELETE, w, None),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_cannot_touch_another_users_workspace_through_any_route() {
    let api = Api::start(48, ServerConfig::default()).await;
    let (a, b, admin) = (api.token("u_alice"), api.token("u_bob"), api.admin());
    assert_eq!(api.post("/v1/workspaces", &a, json!({})).await.0, 201);
    assert_eq!(api.post("/v1/workspaces", &b, json!({})).await.0, 201);
    let resp = api
        .req(Method::PUT, "/v1/workspaces/me/files/secret.txt", Some(&b))
        .body("bob's secret")
        .send()
        .await
        .expect("put");
    assert_eq!(resp.status().as_u16(), 200);
    // Alice on Bob's workspace, and on one that does not exist: 403 either way (no hint of
    // which users exist).
    for target in ["u_bob", "u_nobody"] {
        for (m, path, body) in routes_for(target) {
            let (status, e) = api.call(m.clone(), &path, Some(&a), body).await;
            assert_eq!(status, 403, "alice: {m} {path}: {e}");
            assert_eq!(error_code(&e), "forbidden", "{m} {path}");
        }
    }
    // Bob's workspace is untouched.
    let (_, r) = api.post("/v1/workspaces/me/exec", &b, json!({ "argv": ["cat", "secret.txt"] })).await;
    assert_eq!(r["stdout"], json!("bob's secret"));
    let (_, list) = api.get("/v1/workspaces/me/files", &b).await;
    assert!(!list.to_string().contains("planted"), "{list}");
    // The refusals are in the audit trail, against Bob's workspace, as Alice's.
    let (_, events) = api.get("/v1/events?user=u_bob&limit=1000", &admin).await;
    let refused = events
        .as_array()
        .expect("events")
        .iter()
        .filter(|e| e["kind"] == "api" && e["detail"]["by"] == "u_alice" && e["detail"]["status"] == 403)
        .count();
    assert!(refused >= 8, "{events}");
    // An admin may do all of it (the routes answer with something other than 403).
    for (m, path, body) in routes_for("u_bob") {
        let (status, e) = api.call(m.clone(), &path, Some(&admin), body).await;
        assert_ne!(status, 403, "admin: {m} {path}: {e}");
        assert_ne!(status, 401, "admin: {m} {path}: {e}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_are_json_with_the_right_status() {
    let api = Api::start(49, ServerConfig::default()).await;
    let t = api.token("u_err");
    let cases = [
        (Method::GET, "/no/such/route", 404, "not_found"),
        (Method::DELETE, "/v1/whoami", 405, "method_not_allowed"),
        (Method::GET, "/v1/workspaces/bad..id", 400, "invalid_id"),
        (Method::GET, "/v1/workspaces/me", 404, "not_found"),
        (Method::POST, "/v1/workspaces/me/start", 404, "not_found"),
    ];
    for (m, path, status, code) in cases {
        let (s, e) = api.call(m.clone(), path, Some(&t), None).await;
        assert_eq!((s, error_code(&e).as_str()), (status, code), "{m} {path}: {e}");
    }
    let resp = api.req(Method::POST, "/v1/workspaces/me/exec", Some(&t)).body("{not json").send().await.expect("post");
    assert_eq!(resp.status().as_u16(), 400);
    assert_eq!(resp.headers()["content-type"], "application/json");
    assert_eq!(error_code(&resp.json().await.expect("json")), "invalid_request");
    let (s, e) = api.post("/snapshot/restore", &t, json!({ "user_id": "u_err", "snapshot_id": "../x" })).await;
    assert_eq!((s, error_code(&e).as_str()), (400, "invalid_id"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bodies_over_the_limit_get_413() {
    let cfg = ServerConfig { max_json_bytes: 4096, max_body_bytes: 65536, ..ServerConfig::default() };
    let api = Api::start(50, cfg).await;
    let t = api.token("u_big");
    api.post("/v1/workspaces", &t, json!({})).await;
    let resp = api
        .req(Method::PUT, "/v1/workspaces/me/files/big", Some(&t))
        .body(vec![b'x'; 65537])
        .send()
        .await
        .expect("put");
    assert_eq!(resp.status().as_u16(), 413);
    assert_eq!(error_code(&resp.json().await.expect("json")), "payload_too_large");
    let resp = api
        .req(Method::PUT, "/v1/workspaces/me/files/fits", Some(&t))
        .body(vec![b'x'; 65536])
        .send()
        .await
        .expect("put");
    assert_eq!(resp.status().as_u16(), 200);
    let (s, e) = api.post("/v1/workspaces/me/exec", &t, json!({ "argv": ["true"], "stdin": "y".repeat(5000) })).await;
    assert_eq!((s, error_code(&e).as_str()), (413, "payload_too_large"));
    let resp =
        api.req(Method::PUT, "/v1/workspaces/me/archive", Some(&t)).body(vec![0u8; 70000]).send().await.expect("put");
    assert_eq!(resp.status().as_u16(), 413);
    // Without a Content-Length (chunked), the limit holds while reading.
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let addr = api.url.trim_start_matches("http://").to_owned();
    let mut s = tokio::net::TcpStream::connect(&addr).await.expect("connect");
    let chunk = vec![b'z'; 8192];
    let mut req = format!(
        "PUT /v1/workspaces/me/files/chunked HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {t}\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
    )
    .into_bytes();
    for _ in 0..10 {
        req.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
        req.extend_from_slice(&chunk);
        req.extend_from_slice(b"\r\n");
    }
    req.extend_from_slice(b"0\r\n\r\n");
    let _ = s.write_all(&req).await; // the server may answer and close before reading it all
    let mut answer = Vec::new();
    let _ = s.read_to_end(&mut answer).await;
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    let (s, _) = api.get("/v1/workspaces/me/files?path=chunked", &t).await;
    assert_eq!(s, 404, "nothing written");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rate_limit_is_per_user_and_answers_429() {
    let cfg = ServerConfig { rate_limit_rps: 1, rate_limit_burst: 3, ..ServerConfig::default() };
    let api = Api::start(51, cfg).await;
    let (a, b) = (api.token("u_fast"), api.token("u_calm"));
    let mut statuses = Vec::new();
    for _ in 0..20 {
        statuses.push(api.get("/v1/whoami", &a).await.0);
    }
    assert_eq!(&statuses[..3], [200, 200, 200], "{statuses:?}");
    assert!(statuses[3..].contains(&429), "{statuses:?}");
    let (s, e) = api.get("/v1/whoami", &a).await;
    if s == 429 {
        assert_eq!(error_code(&e), "rate_limited");
    }
    assert_eq!(api.get("/v1/whoami", &b).await.0, 200, "another user has their own bucket");
    // Unauthenticated requests are refused before they cost anyone's tokens.
    assert_eq!(api.call(Method::GET, "/healthz", None, None).await.0, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_checked_in_openapi_document_is_the_generated_one() {
    let generated = warren_server::openapi_json();
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/openapi.json");
    let checked_in = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        generated == checked_in,
        "docs/openapi.json is out of date with the code: regenerate it with\n    cargo run -p warren -- openapi > docs/openapi.json\nand commit it"
    );
    let doc: Value = serde_json::from_str(&generated).expect("valid JSON");
    for p in [
        "/v1/workspaces",
        "/v1/workspaces/{user}/exec/stream",
        "/v1/workspaces/{user}/archive",
        "/snapshot/create",
        "/snapshot/list/{user_id}",
    ] {
        assert!(doc["paths"][p].is_object(), "{p} documented");
    }
    let api = Api::start(52, ServerConfig::default()).await;
    let (s, served) = api.call(Method::GET, "/openapi.json", None, None).await;
    assert_eq!(s, 200);
    assert_eq!(served, doc, "/openapi.json serves the same document");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_seed_snapshot_flow_works_as_a_new_user_tries_it() {
    let api = Api::start(53, ServerConfig::default()).await;
    let t = api.token("u_123");
    api.post("/v1/workspaces", &t, json!({})).await;
    api.post("/v1/workspaces/me/exec", &t, json!({ "argv": ["sh", "-c", "echo original > notes.txt"] })).await;
    // curl's default form content type, as in the README.
    let resp = api
        .req(Method::POST, "/snapshot/create", Some(&t))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(r#"{"user_id":"u_123","snapshot_id":"snap_001"}"#)
        .send()
        .await
        .expect("post");
    assert_eq!(resp.status().as_u16(), 200);
    let created: Value = resp.json().await.expect("json");
    assert_eq!(
        (created["user_id"].as_str(), created["snapshot_id"].as_str()),
        (Some("u_123"), Some("snap_001")),
        "{created}"
    );
    assert_eq!(created["snapshot"]["trigger"], json!("manual"));
    assert!(created["snapshot"]["file_count"].as_u64() >= Some(1), "{created}");
    let (s, gen) = api.post("/snapshot/create", &t, json!({ "user_id": "u_123" })).await;
    assert_eq!(s, 200, "{gen}");
    assert!(gen["snapshot_id"].as_str().is_some_and(|id| id.starts_with("snap_") && id.len() == 31), "{gen}");
    let (s, e) = api.post("/snapshot/create", &t, json!({ "user_id": "u_123", "snapshot_id": "snap_001" })).await;
    assert_eq!((s, error_code(&e).as_str()), (409, "already_exists"));
    api.post("/v1/workspaces/me/exec", &t, json!({ "argv": ["sh", "-c", "echo changed > notes.txt; touch extra"] }))
        .await;
    let (s, list) = api.get("/snapshot/list/u_123", &t).await;
    assert_eq!(s, 200);
    let ids: Vec<&str> =
        list["snapshots"].as_array().expect("snapshots").iter().filter_map(|m| m["id"].as_str()).collect();
    assert_eq!(ids.len(), 2, "{list}");
    assert!(ids.contains(&"snap_001"));
    let (s, r) = api.post("/snapshot/restore", &t, json!({ "user_id": "u_123", "snapshot_id": "snap_001" })).await;
    assert_eq!(s, 200, "{r}");
    assert_eq!(r["snapshot_id"], json!("snap_001"));
    let (_, out) = api.post("/v1/workspaces/me/exec", &t, json!({ "argv": ["sh", "-c", "cat notes.txt; ls"] })).await;
    assert_eq!(out["stdout"], json!("original\nnotes.txt\n"), "the files are back: {out}");
    // Errors keep their shape.
    let (s, e) = api.post("/snapshot/restore", &t, json!({ "user_id": "u_123", "snapshot_id": "snap_404" })).await;
    assert_eq!((s, error_code(&e).as_str()), (404, "not_found"), "{e}");
    let (s, e) = api.post("/snapshot/restore", &t, json!({ "user_id": "u_123", "snapshot_id": "../x" })).await;
    assert_eq!((s, error_code(&e).as_str()), (400, "invalid_id"));
    let (s, e) = api.post("/snapshot/create", &t, json!({ "user": "u_123" })).await;
    assert_eq!((s, error_code(&e).as_str()), (400, "invalid_request"), "the seed's field is user_id: {e}");
    assert_eq!(api.get("/snapshot/list/me", &t).await.0, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshots_under_v1_take_list_pin_restore_undo_and_delete() {
    let api = Api::start(61, ServerConfig::default()).await;
    let t = api.token("u_snap");
    api.post("/v1/workspaces", &t, json!({})).await;
    api.post("/v1/workspaces/me/exec", &t, json!({ "argv": ["sh", "-c", "echo one > f"] })).await;
    let (s, first) = api.call(Method::POST, "/v1/workspaces/me/snapshots", Some(&t), None).await;
    assert_eq!(s, 201, "{first}");
    let first_id = first["id"].as_str().expect("id").to_owned();
    assert_eq!((first["user"].as_str(), first["pinned"].as_bool()), (Some("u_snap"), Some(false)));
    api.post("/v1/workspaces/me/exec", &t, json!({ "argv": ["sh", "-c", "echo two > f"] })).await;
    let (s, second) = api.post("/v1/workspaces/me/snapshots", &t, json!({ "id": "named", "pinned": true })).await;
    assert_eq!((s, second["id"].as_str(), second["pinned"].as_bool()), (201, Some("named"), Some(true)), "{second}");
    let (_, list) = api.get("/v1/workspaces/me/snapshots", &t).await;
    let ids: Vec<&str> = list.as_array().expect("list").iter().filter_map(|m| m["id"].as_str()).collect();
    assert_eq!(ids, ["named", first_id.as_str()], "newest first");
    let (s, got) = api.get(&format!("/v1/workspaces/me/snapshots/{first_id}"), &t).await;
    assert_eq!((s, &got), (200, &first));
    let (s, unpinned) = api.post("/v1/workspaces/me/snapshots/named/pin", &t, json!({ "pinned": false })).await;
    assert_eq!((s, unpinned["pinned"].as_bool()), (200, Some(false)));
    let (_, pinned) = api.call(Method::POST, "/v1/workspaces/me/snapshots/named/pin", Some(&t), None).await;
    assert_eq!(pinned["pinned"], json!(true));
    let (s, r) = api.post(&format!("/v1/workspaces/me/snapshots/{first_id}/restore"), &t, json!(null)).await;
    assert_eq!(s, 200, "{r}");
    assert_eq!(
        (r["restored"]["id"].as_str(), r["pre_restore"]["trigger"].as_str()),
        (Some(first_id.as_str()), Some("pre_restore"))
    );
    let (_, f) = api.post("/v1/workspaces/me/exec", &t, json!({ "argv": ["cat", "f"] })).await;
    assert_eq!(f["stdout"], json!("one\n"));
    // Undo: restore the pre_restore snapshot.
    let undo = r["pre_restore"]["id"].as_str().expect("id").to_owned();
    let (s, _) = api.post(&format!("/v1/workspaces/me/snapshots/{undo}/restore"), &t, json!(null)).await;
    assert_eq!(s, 200);
    let (_, f) = api.post("/v1/workspaces/me/exec", &t, json!({ "argv": ["cat", "f"] })).await;
    assert_eq!(f["stdout"], json!("two\n"));
    let (s, _) = api.call(Method::DELETE, &format!("/v1/workspaces/me/snapshots/{first_id}"), Some(&t), None).await;
    assert_eq!(s, 204);
    let (s, e) = api.get(&format!("/v1/workspaces/me/snapshots/{first_id}"), &t).await;
    assert_eq!((s, error_code(&e).as_str()), (404, "not_found"));
    let (s, e) = api.post("/v1/workspaces/me/snapshots", &t, json!({ "id": "bad id" })).await;
    assert_eq!((s, error_code(&e).as_str()), (400, "invalid_id"));
    // Snapshot calls are audited like every mutating call.
    let (_, events) = api.get("/v1/events?limit=200", &t).await;
    assert!(events
        .as_array()
        .expect("events")
        .iter()
        .any(|e| e["kind"] == "api" && e["detail"]["route"] == "/v1/workspaces/{user}/snapshots/{id}/restore"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_never_reach_the_workspace() {
    let api = Api::start(54, ServerConfig::default()).await;
    let t = api.token("u_tok");
    api.post("/v1/workspaces", &t, json!({})).await;
    let sig = t.rsplit('.').next().expect("signature").to_owned();
    // Its own environment, and its files: no token, no header.
    let own = "env; cat /proc/self/environ | tr '\\0' '\\n'; grep -rl -e Bearer -e eyJ . 2>/dev/null; true";
    let (_, r) = api.post("/v1/workspaces/me/exec", &t, json!({ "argv": ["sh", "-c", own] })).await;
    let out = format!("{}{}", r["stdout"], r["stderr"]);
    assert!(out.contains("WARREN_USER=u_tok"), "the probe ran: {out}");
    for needle in [t.as_str(), sig.as_str(), "Bearer", "Authorization", "authorization", "eyJ"] {
        assert!(!out.contains(needle), "{needle:?} is visible inside the workspace");
    }
    // Every command line and environment it can read on this host (the dir backend shares the
    // host's process list): not this token.
    let all = "cat /proc/[0-9]*/cmdline 2>/dev/null | tr '\\0' ' '; cat /proc/[0-9]*/environ 2>/dev/null | tr '\\0' '\\n'; true";
    let (_, r) = api.post("/v1/workspaces/me/exec", &t, json!({ "argv": ["sh", "-c", all] })).await;
    let out = format!("{}{}", r["stdout"], r["stderr"]);
    assert!(!out.contains(&sig), "the token is visible in a process on this host");
    let resp = api
        .req(Method::POST, "/v1/workspaces/me/exec/stream", Some(&t))
        .json(&json!({ "argv": ["sh", "-c", own] }))
        .send()
        .await
        .expect("post");
    let events = stream_events(resp).await;
    let out: String = events.iter().filter_map(|e| e["data"].as_str()).collect();
    assert!(out.contains("WARREN_USER=u_tok"));
    assert!(!out.contains(&sig) && !out.contains("Bearer") && !out.contains("eyJ"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_mutating_call_is_audited_and_reads_are_not() {
    let api = Api::start(55, ServerConfig::default()).await;
    let t = api.token("u_audit");
    api.post("/v1/workspaces", &t, json!({})).await;
    api.call(Method::PUT, "/v1/workspaces/me/files/a", Some(&t), None).await;
    api.get("/v1/workspaces/me", &t).await;
    api.call(Method::DELETE, "/v1/workspaces/me/files/missing", Some(&t), None).await;
    let (s, events) = api.get("/v1/events?limit=100", &t).await;
    assert_eq!(s, 200);
    let api_events: Vec<&Value> = events.as_array().expect("events").iter().filter(|e| e["kind"] == "api").collect();
    let seen: Vec<(String, String, u64)> = api_events
        .iter()
        .map(|e| {
            let d = &e["detail"];
            (
                d["method"].as_str().unwrap_or("").to_owned(),
                d["route"].as_str().unwrap_or("").to_owned(),
                d["status"].as_u64().unwrap_or(0),
            )
        })
        .collect();
    assert_eq!(
        seen,
        [
            ("POST".to_owned(), "/v1/workspaces".to_owned(), 201),
            ("PUT".to_owned(), "/v1/workspaces/{user}/files/{*path}".to_owned(), 200),
            ("DELETE".to_owned(), "/v1/workspaces/{user}/files/{*path}".to_owned(), 404),
        ]
    );
    assert!(api_events
        .iter()
        .all(|e| e["user"] == "u_audit" && e["detail"]["by"] == "u_audit" && e["workspace_id"].is_string()));
    // The engine's own events are there too.
    assert!(events.as_array().expect("events").iter().any(|e| e["kind"] == "create"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_readiness_and_metrics() {
    let api = Api::start(56, ServerConfig::default()).await;
    let t = api.token("u_metrics");
    api.post("/v1/workspaces", &t, json!({})).await;
    api.post("/v1/workspaces/me/start", &t, json!(null)).await;
    api.get("/v1/workspaces/u_other_one", &t).await;
    assert_eq!(api.call(Method::GET, "/healthz", None, None).await, (200, json!({ "status": "ok" })));
    let (s, ready) = api.call(Method::GET, "/readyz", None, None).await;
    assert_eq!((s, ready["status"].as_str()), (200, Some("ok")), "{ready}");
    let resp = api.req(Method::GET, "/metrics", None).send().await.expect("metrics");
    assert!(resp.headers()["content-type"].to_str().expect("ct").starts_with("text/plain"));
    let text = resp.text().await.expect("text");
    for want in [
        "warren_http_requests_total{route=\"/v1/workspaces\",method=\"POST\",status=\"201\"} 1",
        "warren_http_requests_total{route=\"/v1/workspaces/{user}\",method=\"GET\",status=\"403\"} 1",
        "warren_http_request_duration_seconds_count{route=\"/v1/workspaces/{user}/start\"} 1",
        "warren_workspaces{state=\"running\"} 1",
        "warren_up 1",
    ] {
        assert!(text.contains(want), "missing {want:?} in\n{text}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_lets_in_flight_requests_finish() {
    let api = Api::start(57, ServerConfig::default()).await;
    let t = api.token("u_shut");
    api.post("/v1/workspaces", &t, json!({})).await;
    let mut resp = api
        .req(Method::POST, "/v1/workspaces/me/exec/stream", Some(&t))
        .json(&json!({ "argv": ["sh", "-c", "echo started; while [ ! -e go ]; do sleep 0.05; done; echo finished"] }))
        .send()
        .await
        .expect("request");
    let first = resp.chunk().await.expect("chunk").expect("first event");
    assert!(String::from_utf8_lossy(&first).contains("started"));
    let Api { mut srv, _jwks: _keep_jwks, key: _ } = api;
    let (home, url) = (srv.state.join("workspaces/u_shut"), srv.url.clone());
    let shutdown = tokio::spawn(async move {
        let r = srv.shutdown().await;
        (r, srv)
    });
    // New connections are refused once the server stops accepting (bounded wait).
    let mut refused = false;
    for _ in 0..200 {
        if reqwest::Client::new().get(format!("{url}/healthz")).send().await.is_err() {
            refused = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert!(refused, "the listener closes on shutdown");
    std::fs::write(home.join("go"), b"").expect("let the command finish");
    let mut rest = Vec::new();
    while let Some(c) = resp.chunk().await.expect("the in-flight stream is not cut") {
        rest.extend_from_slice(&c);
    }
    let rest = String::from_utf8_lossy(&rest);
    assert!(rest.contains("finished") && rest.contains("\"type\":\"exit\""), "{rest}");
    let (r, _srv) = shutdown.await.expect("join");
    r.expect("serve returned Ok");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_cuts_streams_that_outlive_the_grace_period() {
    let cfg = ServerConfig { shutdown_grace_secs: 1, ..ServerConfig::default() };
    let mut api = Api::start(59, cfg).await;
    let t = api.token("u_cut");
    api.post("/v1/workspaces", &t, json!({})).await;
    let mut resp = api
        .req(Method::POST, "/v1/workspaces/me/exec/stream", Some(&t))
        .json(&json!({ "argv": ["sh", "-c", "echo $$; exec sleep 600"] }))
        .send()
        .await
        .expect("request");
    let first = resp.chunk().await.expect("chunk").expect("first event");
    let ev: Value = serde_json::from_slice(&first).expect("event");
    let pid: u32 = ev["data"].as_str().expect("pid").trim().parse().expect("pid");
    api.srv.shutdown().await.expect("serve returns after the grace period");
    for _ in 0..600 {
        let gone = match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
            Err(_) => true,
            Ok(s) => s.rsplit(") ").next().is_some_and(|r| r.starts_with('Z')),
        };
        if gone {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the command of a cut stream still runs");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workspaces_outlive_a_server_restart() {
    let key = Signer::rsa("k1");
    let jwks = JwksServer::start(json!({ "keys": [key.jwk()] })).await;
    let (_tmp, cfg) = engine_config(60);
    let t = key.token(&claims("u_restart"));
    let mut first = TestServer::start_on(cfg.clone(), jwks_auth(&jwks.url), ServerConfig::default()).await;
    first.post("/v1/workspaces", &t, json!({})).await;
    first.post("/v1/workspaces/me/start", &t, json!(null)).await;
    first.post("/v1/workspaces/me/exec", &t, json!({ "argv": ["sh", "-c", "echo kept > f"] })).await;
    first.shutdown().await.expect("shutdown");
    drop(first);
    let second = TestServer::start_on(cfg, jwks_auth(&jwks.url), ServerConfig::default()).await;
    let (s, w) = second.get("/v1/workspaces/me", &t).await;
    assert_eq!((s, w["state"].as_str()), (200, Some("running")), "{w}");
    let (_, r) = second.post("/v1/workspaces/me/exec", &t, json!({ "argv": ["cat", "f"] })).await;
    assert_eq!(r["stdout"], json!("kept\n"));
}
