//! The skill routes over real HTTP on the dir backend: build from a skill and its wheel (built
//! here: no package index is reachable), tools with exact JSON, refused tools, owners and
//! admins, failed builds and cleanup. Uids: 3_200_000 + 1000 per slot, slots 50..=59 of the
//! skill work (its crate's own tests use the slots below).

mod common;

use std::path::Path;
use std::process::Command;

use base64::Engine as _;
use common::*;
use reqwest::Method;
use serde_json::{json, Value};
use warren_server::config::ServerConfig;

const SKILL_UID_BASE: u32 = 3_200_000;

struct Api {
    srv: TestServer,
    _jwks: JwksServer,
    _tmp: tempfile::TempDir,
    key: Signer,
}

impl Api {
    async fn start(slot: u32) -> Self {
        let key = Signer::rsa("k1");
        let jwks = JwksServer::start(json!({ "keys": [key.jwk()] })).await;
        let (tmp, mut cfg) = engine_config(slot);
        cfg.uid_base = SKILL_UID_BASE + slot * 1000;
        let srv = TestServer::start_on(cfg, jwks_auth(&jwks.url), ServerConfig::default()).await;
        Self { srv, _jwks: jwks, _tmp: tmp, key }
    }

    fn token(&self, user: &str) -> String {
        self.key.token(&claims(user))
    }

    fn admin(&self) -> String {
        self.key.token(&admin_claims("ops"))
    }

    /// A tool call: (status, body with `duration_ms` zeroed).
    async fn tool(&self, token: &str, id: &str, tool: &str, args: Value) -> (u16, Value) {
        let (status, mut v) = self.post(&format!("/v1/skills/{id}/tools/{tool}"), token, args).await;
        if status == 200 {
            assert!(v["duration_ms"].is_u64(), "{v}");
            v["duration_ms"] = json!(0);
        }
        (status, v)
    }
}

impl std::ops::Deref for Api {
    type Target = TestServer;
    fn deref(&self) -> &TestServer {
        &self.srv
    }
}

fn require_python_venv() {
    let ok =
        Command::new("/usr/bin/python3").args(["-c", "import venv, ensurepip"]).status().is_ok_and(|s| s.success());
    assert!(ok, "python skills need /usr/bin/python3 with venv and ensurepip (Debian: apt-get install python3-venv)");
}

/// A minimal valid wheel `demo_pkg-0.1.0-py3-none-any.whl` (module `demo_pkg` with `hello`).
fn wheel(dir: &Path) -> Vec<u8> {
    let script = r#"
import base64, hashlib, sys, zipfile
files = {
    "demo_pkg/__init__.py": "def hello(who):\n    return 'hello, ' + who\n",
    "demo_pkg-0.1.0.dist-info/METADATA": "Metadata-Version: 2.1\nName: demo_pkg\nVersion: 0.1.0\n",
    "demo_pkg-0.1.0.dist-info/WHEEL": "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
}
rec = []
with zipfile.ZipFile(sys.argv[1], "w") as z:
    for p, t in files.items():
        z.writestr(p, t)
        d = base64.urlsafe_b64encode(hashlib.sha256(t.encode()).digest()).rstrip(b"=").decode()
        rec.append(f"{p},sha256={d},{len(t)}")
    rec.append("demo_pkg-0.1.0.dist-info/RECORD,,")
    z.writestr("demo_pkg-0.1.0.dist-info/RECORD", "\n".join(rec) + "\n")
"#;
    let file = dir.join("demo_pkg-0.1.0-py3-none-any.whl");
    let out = Command::new("/usr/bin/python3").args(["-c", script]).arg(&file).output().expect("python3");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    std::fs::read(&file).expect("the wheel")
}

const SKILL: &str = "---\nname: greeter\ndescription: Greets.\nruntime: python\n\
                     packages: [wheels/demo_pkg-0.1.0-py3-none-any.whl]\nlimits: { memory: 256M, pids: 64 }\n\
                     tools: [read_file, write_file, run_python]\n---\n# Greeter\nUse demo_pkg.\n";

fn ran(tool: &str, stdout: &str) -> Value {
    json!({
        "tool": tool, "ok": true, "exit_code": 0, "signal": null, "stdout": stdout, "stderr": "",
        "content": null, "entries": null, "path": null, "bytes": null, "encoding": "utf8",
        "timed_out": false, "truncated": false, "duration_ms": 0, "error": null,
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn skill_sandboxes_over_the_api() {
    require_python_venv();
    let api = Api::start(50).await;
    let tmp = tempfile::tempdir().expect("tempdir");
    let whl = wheel(tmp.path());
    let b64 = base64::engine::general_purpose::STANDARD.encode(&whl);
    let (alice, bob, admin) = (api.token("u_alice"), api.token("u_bob"), api.admin());

    // Build.
    let body = json!({ "skill": SKILL, "package_files": { "wheels/demo_pkg-0.1.0-py3-none-any.whl": b64 } });
    let (status, sb) = api.post("/v1/skills", &alice, body).await;
    assert_eq!(status, 201, "{sb}");
    let id = sb["id"].as_str().expect("id").to_owned();
    assert!(id.starts_with("skill.") && id.len() == 18, "{id}");
    assert_eq!(
        (sb["status"].as_str(), sb["owner"].as_str(), sb["state"].as_str(), sb["backend"].as_str()),
        (Some("ready"), Some("u_alice"), Some("running"), Some("dir"))
    );
    assert_eq!(sb["tools"], json!(["read_file", "write_file", "run_python"]));
    assert_eq!(sb["instructions"], "# Greeter\nUse demo_pkg.\n");
    assert_eq!(sb["limits"]["memory_bytes"], 256 << 20);
    assert_eq!(sb["packages"][0]["bytes"], whl.len());
    assert!(sb["stats"].is_null(), "no stats in the build answer: {sb}");

    // Tools.
    let (status, v) =
        api.tool(&alice, &id, "run_python", json!({ "code": "import demo_pkg\nprint(demo_pkg.hello('api'))" })).await;
    assert_eq!((status, v), (200, ran("run_python", "hello, api\n")));
    let (status, v) = api.tool(&alice, &id, "write_file", json!({ "path": "n.txt", "content": "7" })).await;
    assert_eq!((status, v["ok"].clone(), v["bytes"].clone()), (200, json!(true), json!(1)));
    let (status, v) = api.tool(&alice, &id, "read_file", json!({ "path": "n.txt" })).await;
    assert_eq!((status, v["content"].clone()), (200, json!("7")));
    let (status, v) = api.tool(&alice, &id, "read_file", json!({ "path": "nope" })).await;
    assert_eq!((status, v["ok"].clone(), v["error"]["code"].clone()), (200, json!(false), json!("not_found")));
    let (status, v) = api.tool(&alice, &id, "run_command", json!({ "command": "id" })).await;
    assert_eq!((status, error_code(&v).as_str()), (403, "tool_not_allowed"));
    assert!(v["error"]["message"].as_str().is_some_and(|m| m.contains("read_file, write_file, run_python")), "{v}");
    let (status, v) = api.tool(&alice, &id, "format_disk", json!({})).await;
    assert_eq!((status, error_code(&v).as_str()), (404, "unknown_tool"));
    let (status, v) = api.tool(&alice, &id, "write_file", json!({ "path": "x", "content": "", "sudo": true })).await;
    assert_eq!((status, error_code(&v).as_str()), (400, "invalid_request"));

    // Owners, other users and admins.
    let (status, v) = api.get(&format!("/v1/skills/{id}"), &alice).await;
    assert_eq!(status, 200, "{v}");
    assert!(v["stats"]["disk_bytes"].as_u64().is_some_and(|d| d > 0), "{v}");
    for (method, path) in [
        (Method::GET, format!("/v1/skills/{id}")),
        (Method::DELETE, format!("/v1/skills/{id}")),
        (Method::POST, format!("/v1/skills/{id}/tools/read_file")),
    ] {
        let (status, v) = api.call(method, &path, Some(&bob), Some(json!({ "path": "n.txt" }))).await;
        assert_eq!((status, error_code(&v).as_str()), (403, "forbidden"), "{path}");
    }
    assert_eq!(api.get("/v1/skills", &bob).await, (200, json!([])));
    let (_, mine) = api.get("/v1/skills", &alice).await;
    assert_eq!(mine.as_array().map(Vec::len), Some(1));
    let (_, all) = api.get("/v1/skills", &admin).await;
    assert_eq!(all[0]["id"], id.as_str());
    let (status, _) = api.tool(&admin, &id, "read_file", json!({ "path": "n.txt" })).await;
    assert_eq!(status, 200);
    let (status, v) = api.get("/v1/skills/skill.000000000000", &alice).await;
    assert_eq!((status, error_code(&v).as_str()), (404, "not_found"));
    // The sandbox is a workspace like any other: admins see it; its id is no one's to log in as.
    let (_, workspaces) = api.get("/v1/workspaces", &admin).await;
    assert!(workspaces.as_array().expect("list").iter().any(|w| w["user"] == id.as_str()), "{workspaces}");
    let (status, _) = api.get("/v1/whoami", &api.token(&id)).await;
    assert_eq!(status, 401, "a token naming a sandbox is refused");

    // Only admins name a host path or a backend.
    let (status, v) = api.post("/v1/skills", &alice, json!({ "path": "/etc/passwd" })).await;
    assert_eq!((status, error_code(&v).as_str()), (403, "forbidden"));
    let (status, v) = api.post("/v1/skills", &alice, json!({ "skill": SKILL, "backend": "dir" })).await;
    assert_eq!((status, error_code(&v).as_str()), (403, "forbidden"));

    // Bad skills and bad builds leave nothing.
    let (status, v) = api.post("/v1/skills", &alice, json!({ "skill": "---\nname: x\nruntime: cobol\n---\n" })).await;
    assert_eq!((status, error_code(&v).as_str()), (400, "invalid_skill"));
    assert!(v["error"]["message"].as_str().is_some_and(|m| m.contains("description")), "{v}");
    // A user's sandbox gets no more than the server's default limits; an admin's may.
    for limits in ["{ memory: 1G }", "{ pids: unlimited }"] {
        let text = format!("---\nname: big\ndescription: d\nruntime: shell\nlimits: {limits}\n---\n");
        let (status, v) = api.post("/v1/skills", &alice, json!({ "skill": text })).await;
        assert_eq!((status, error_code(&v).as_str()), (400, "invalid_skill"), "{limits}: {v}");
        assert!(v["error"]["message"].as_str().is_some_and(|m| m.contains("the server's default limits")), "{v}");
    }
    let text = "---\nname: big\ndescription: d\nruntime: shell\nlimits: { memory: 1G }\n---\n";
    let (status, big) = api.post("/v1/skills", &admin, json!({ "skill": text })).await;
    assert_eq!((status, big["limits"]["memory_bytes"].as_u64()), (201, Some(1 << 30)), "{big}");
    let big_id = big["id"].as_str().expect("id").to_owned();
    let (status, _) = api.call(Method::DELETE, &format!("/v1/skills/{big_id}"), Some(&admin), None).await;
    assert_eq!(status, 200);
    let (status, v) = api.post("/v1/skills", &alice, json!({ "skill": SKILL })).await;
    assert_eq!((status, error_code(&v).as_str()), (400, "invalid_skill"), "the wheel was not sent");
    let broken = base64::engine::general_purpose::STANDARD.encode(b"not a zip");
    let body = json!({ "skill": SKILL, "package_files": { "wheels/demo_pkg-0.1.0-py3-none-any.whl": broken } });
    let (status, v) = api.post("/v1/skills", &alice, body).await;
    assert_eq!((status, error_code(&v).as_str()), (422, "build_failed"), "{v}");
    assert!(v["error"]["message"].as_str().is_some_and(|m| m.contains("pip_install")), "{v}");
    let (_, mine) = api.get("/v1/skills", &alice).await;
    assert_eq!(mine.as_array().map(Vec::len), Some(1), "the failed build left no sandbox: {mine}");

    // An admin builds from a file on the host; its wheel is read beside it.
    std::fs::create_dir_all(tmp.path().join("wheels")).expect("mkdir");
    std::fs::write(tmp.path().join("wheels/demo_pkg-0.1.0-py3-none-any.whl"), &whl).expect("wheel");
    std::fs::write(tmp.path().join("skill.md"), SKILL).expect("skill");
    let path = tmp.path().join("skill.md").display().to_string();
    let (status, sb2) = api.post("/v1/skills", &admin, json!({ "path": path })).await;
    assert_eq!((status, sb2["owner"].as_str()), (201, Some("ops")), "{sb2}");
    let id2 = sb2["id"].as_str().expect("id").to_owned();

    // Cleanup.
    let (status, v) = api.call(Method::DELETE, &format!("/v1/skills/{id}"), Some(&alice), None).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v, json!({ "id": id, "workspace_removed": true, "snapshots_removed": 0, "record_removed": true }));
    assert!(!api.state.join("workspaces").join(&id).exists(), "home removed");
    assert!(!api.state.join("skills").join(format!("{id}.json")).exists(), "record removed");
    let (status, _) = api.get(&format!("/v1/skills/{id}"), &alice).await;
    assert_eq!(status, 404);
    let (status, _) = api.call(Method::DELETE, &format!("/v1/skills/{id2}"), Some(&admin), None).await;
    assert_eq!(status, 200);
    assert_eq!(api.get("/v1/skills", &admin).await, (200, json!([])));
    let (_, workspaces) = api.get("/v1/workspaces", &admin).await;
    assert_eq!(workspaces, json!([]));
}
