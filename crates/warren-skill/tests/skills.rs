//! Skill sandboxes on real backends: a python skill with a wheel built here (no package index
//! is reachable), its tools' exact JSON, refused tools, limits and network as the skill says,
//! failed builds and cleanups that leave nothing behind.

mod common;

use std::path::Path;

use common::{assert_gone, build_wheel, require_python_venv, Env};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use warren_core::{BackendKind, UserId};
use warren_engine::CreateOptions;
use warren_skill::{BuildRequest, BuildStatus, PackageSource, SandboxId, SandboxRecord, SkillError, Skills};

fn request(text: &str, dir: &Path) -> BuildRequest {
    BuildRequest {
        text: text.to_owned(),
        packages: PackageSource::Dir(dir.to_path_buf()),
        owner: None,
        backend: None,
        origin: dir.join("skill.md").display().to_string(),
        max_limits: None,
    }
}

/// A tool's result as JSON with its duration zeroed (the one field that varies).
async fn tool(skills: &Skills<'_>, id: &SandboxId, name: &str, args: Value) -> Value {
    let r = skills.call(id, name, args).await.unwrap_or_else(|e| panic!("{name}: {e}"));
    let mut v = serde_json::to_value(r).expect("JSON");
    assert!(v["duration_ms"].is_u64(), "{v}");
    v["duration_ms"] = json!(0);
    v
}

/// The result every tool starts from.
fn result(tool: &str) -> Value {
    json!({
        "tool": tool, "ok": true, "exit_code": null, "signal": null, "stdout": null, "stderr": null,
        "content": null, "entries": null, "path": null, "bytes": null, "encoding": "utf8",
        "timed_out": false, "truncated": false, "duration_ms": 0, "error": null,
    })
}

fn ran(tool: &str, stdout: &str) -> Value {
    let mut v = result(tool);
    v["exit_code"] = json!(0);
    v["stdout"] = json!(stdout);
    v["stderr"] = json!("");
    v
}

const GREETER: &str = r##"---
name: greeter
description: Greets people with a tiny package.
runtime: python
packages:
  - wheels/demo_pkg-0.1.0-py3-none-any.whl
files:
  - path: data/names.txt
    content: "ada\ngrace\n"
  - path: bin/count.sh
    content: "#!/bin/sh\nwc -l < data/names.txt\n"
    mode: "755"
environment:
  GREETING: hi there
limits:
  memory: 256M
  pids: 48
  timeout: 20s
tools: [write_file, read_file, list_files, run_python]
workdir: work
---
# Greeter

Call `run_python` with `import demo_pkg; print(demo_pkg.hello("you"))`.
"##;

async fn python_skill(kind: BackendKind, slot: u32) {
    require_python_venv();
    let env = Env::new(kind, slot);
    let engine = match env.open().await {
        Ok(e) => e,
        Err(why) => {
            eprintln!("skipped: the {kind} backend cannot run here: {why}");
            return;
        }
    };
    let dir = env.skill_dir();
    let wheel = build_wheel(&dir.join("wheels"), "demo_pkg", "0.1.0");
    let wheel_sha: String = Sha256::digest(std::fs::read(dir.join("wheels").join(&wheel)).expect("wheel"))
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let skills = Skills::new(&engine);

    let rec = skills.build(request(GREETER, &dir)).await.expect("build");
    let id = rec.id.clone();
    let user = id.user().expect("user");
    assert_eq!(rec.status, BuildStatus::Ready);
    assert_eq!(rec.backend, kind);
    assert_eq!(rec.skill.name, "greeter");
    assert!(rec.skill.instructions.starts_with("# Greeter\n"), "{}", rec.skill.instructions);
    assert_eq!(rec.build.packages.len(), 1);
    assert_eq!(rec.build.packages[0].sha256.as_deref(), Some(wheel_sha.as_str()));
    assert!(rec.build.runtime_version.as_deref().is_some_and(|v| v.starts_with("3.")), "{:?}", rec.build);
    let steps: Vec<&str> = rec.build.steps.iter().map(|s| s.step.as_str()).collect();
    assert_eq!(steps, ["create", "start", "home", "files", "packages", "venv", "pip_install", "check"]);
    assert!(rec.build.steps.iter().all(|s| s.ok));
    assert_eq!(rec.build.warnings.iter().any(|w| w.contains("network")), kind == BackendKind::Dir, "{:?}", rec.build);
    let stored = skills.get(&id).await.expect("record");
    assert_eq!(stored, rec, "the record on disk is the one returned");
    let listed: Vec<SandboxId> = skills.list().await.expect("list").into_iter().map(|r| r.id).collect();
    assert_eq!(listed, std::slice::from_ref(&id));

    // The workspace has the skill's limits and no network.
    let info = engine.status(&user).await.expect("the sandbox is a workspace");
    assert_eq!(info.backend, kind);
    assert_eq!((info.limits.memory_bytes, info.limits.pids), (Some(256 << 20), Some(48)));
    assert!(!info.network);
    let view = skills.view(rec.clone(), true).await;
    assert_eq!(view.state.as_deref(), Some("running"));
    let stats = view.stats.expect("stats");
    if kind == BackendKind::Ns {
        assert_eq!(stats.memory_limit_bytes, Some(256 << 20), "the cgroup has the skill's memory limit");
    }
    assert!(stats.disk_bytes > 0);

    // run_python: the package, the environment, the workdir, the skill's files.
    let code = "import demo_pkg, os, sys\nprint(demo_pkg.hello(os.environ['GREETING']))\n\
                print(sys.prefix == os.environ['VIRTUAL_ENV'] == os.environ['HOME'] + '/.venv')\n\
                print(os.getcwd() == os.environ['HOME'] + '/work')\nprint(open('data/names.txt').read().split())\n";
    let v = tool(&skills, &id, "run_python", json!({ "code": code })).await;
    assert_eq!(v, ran("run_python", "hello, hi there, from demo_pkg 0.1.0\nTrue\nTrue\n['ada', 'grace']\n"));
    // pip made the package's console script, on PATH.
    let code =
        "import subprocess\nprint(subprocess.run(['demo-pkg-hello'], capture_output=True, text=True).stdout, end='')";
    let v = tool(&skills, &id, "run_python", json!({ "code": code })).await;
    assert_eq!(v, ran("run_python", "hello, cli, from demo_pkg 0.1.0\n"));
    let v = tool(
        &skills,
        &id,
        "run_python",
        json!({ "code": "import sys\nprint(sys.argv[1:], sys.stdin.read())", "args": ["a", "b"], "stdin": "in", "cwd": "data" }),
    )
    .await;
    assert_eq!(v, ran("run_python", "['a', 'b'] in\n"));
    let v = tool(&skills, &id, "run_python", json!({ "code": "import sys\nprint('out')\nsys.exit(3)" })).await;
    let mut want = ran("run_python", "out\n");
    want["ok"] = json!(false);
    want["exit_code"] = json!(3);
    assert_eq!(v, want);
    let v =
        tool(&skills, &id, "run_python", json!({ "code": "print('x' * 10, flush=True); 1/0", "encoding": "base64" }))
            .await;
    assert_eq!(v["stdout"], "eHh4eHh4eHh4eAo=");
    assert!(v["stderr"].as_str().is_some_and(|s| !s.is_empty()), "{v}");
    assert_eq!(v["encoding"], "base64");
    let v = tool(&skills, &id, "run_python", json!({ "code": "import time\ntime.sleep(60)", "timeout_ms": 300 })).await;
    assert_eq!(
        (v["ok"].clone(), v["timed_out"].clone(), v["error"]["code"].clone()),
        (json!(false), json!(true), json!("timeout"))
    );
    let err = skills.call(&id, "run_python", json!({ "code": "1", "timeout_ms": 20_001 })).await.expect_err("too long");
    assert_eq!(err.code(), "invalid_request", "{err}");
    // The program file is gone after the call.
    let code = "import os\nprint([f for f in os.listdir(os.environ['HOME'] + '/.skill/tmp') if f not in __file__])";
    let v = tool(&skills, &id, "run_python", json!({ "code": code })).await;
    assert_eq!(v["stdout"], "[]\n");

    // File tools, relative to the workdir.
    let v = tool(&skills, &id, "write_file", json!({ "path": "out/result.txt", "content": "42\n" })).await;
    let mut want = result("write_file");
    want["path"] = json!("out/result.txt");
    want["bytes"] = json!(3);
    assert_eq!(v, want);
    let v = tool(&skills, &id, "read_file", json!({ "path": "out/result.txt" })).await;
    let mut want = result("read_file");
    want["path"] = json!("out/result.txt");
    want["bytes"] = json!(3);
    want["content"] = json!("42\n");
    assert_eq!(v, want);
    let v = tool(&skills, &id, "read_file", json!({ "path": "data/names.txt", "max_bytes": 3 })).await;
    assert_eq!(
        (v["content"].clone(), v["bytes"].clone(), v["truncated"].clone()),
        (json!("ada"), json!(10), json!(true))
    );
    let v = tool(&skills, &id, "read_file", json!({ "path": "data/names.txt", "encoding": "base64" })).await;
    assert_eq!(v["content"], "YWRhCmdyYWNlCg==");
    let v = tool(
        &skills,
        &id,
        "write_file",
        json!({ "path": "bin/b64.sh", "content": "IyEvYmluL3NoCmVjaG8gYjY0Cg==", "encoding": "base64", "mode": "750" }),
    )
    .await;
    assert_eq!(v["bytes"], 19);
    let v = tool(&skills, &id, "list_files", json!({ "path": "bin" })).await;
    let entries: Vec<(String, String, String, u64)> = v["entries"]
        .as_array()
        .expect("entries")
        .iter()
        .map(|e| {
            let s = |k: &str| e[k].as_str().expect("a string").to_owned();
            (s("name"), s("kind"), s("mode"), e["size"].as_u64().expect("size"))
        })
        .collect();
    assert_eq!(
        entries,
        [("b64.sh".into(), "file".into(), "750".into(), 19), ("count.sh".into(), "file".into(), "755".into(), 33)]
    );
    let v = tool(&skills, &id, "list_files", Value::Null).await;
    let names: Vec<&str> =
        v["entries"].as_array().expect("entries").iter().filter_map(|e| e["name"].as_str()).collect();
    assert_eq!(names, ["bin", "data", "out"]);
    assert_eq!(v["path"], ".");

    // Failures inside a call are results, with an error.
    let v = tool(&skills, &id, "read_file", json!({ "path": "missing.txt" })).await;
    assert_eq!((v["ok"].clone(), v["error"]["code"].clone()), (json!(false), json!("not_found")));
    let v = tool(&skills, &id, "read_file", json!({ "path": "../../../../etc/passwd" })).await;
    assert_eq!(v["error"]["code"], "invalid_path", "{v}");
    let v = tool(&skills, &id, "run_python", json!({ "code": "import os\nos.symlink('/etc', 'escape')" })).await;
    assert_eq!(v["ok"], true, "{v}");
    let v = tool(&skills, &id, "read_file", json!({ "path": "escape/passwd" })).await;
    assert_eq!(v["error"]["code"], "invalid_path", "a symlink cannot lead out: {v}");
    let v = tool(&skills, &id, "write_file", json!({ "path": "escape/evil", "content": "x" })).await;
    assert_eq!(v["error"]["code"], "invalid_path", "{v}");

    // Refused and malformed calls are errors.
    let err = skills.call(&id, "run_command", json!({ "command": "id" })).await.expect_err("not allowed");
    assert!(matches!(err, SkillError::ToolNotAllowed { .. }), "{err:?}");
    assert_eq!(err.code(), "tool_not_allowed");
    assert!(err.to_string().contains("write_file, read_file, list_files, run_python"), "{err}");
    let err = skills.call(&id, "rm_rf", json!({})).await.expect_err("unknown");
    assert_eq!(err.code(), "unknown_tool");
    let err = skills.call(&id, "write_file", json!({ "path": "x" })).await.expect_err("no content");
    assert_eq!(err.code(), "invalid_request", "{err}");
    let err =
        skills.call(&id, "write_file", json!({ "path": "x", "content": "", "owner": 0 })).await.expect_err("extra");
    assert!(err.to_string().contains("owner"), "{err}");

    // Limits hold: processes and memory.
    let code = "import subprocess\nprocs, err = [], None\ntry:\n    for _ in range(100):\n        \
                procs.append(subprocess.Popen(['sleep', '60']))\nexcept OSError as e:\n    err = e\nfinally:\n    \
                for p in procs: p.kill()\n    for p in procs: p.wait()\nprint(len(procs) < 48, err is not None)";
    let v = tool(&skills, &id, "run_python", json!({ "code": code })).await;
    assert_eq!(v["stdout"], "True True\n", "the pids limit holds: {v}");
    let v = tool(&skills, &id, "run_python", json!({ "code": "b = b'x' * (400 << 20)\nprint(len(b))" })).await;
    assert_eq!(v["ok"], false, "400 MiB do not fit in 256 MiB: {v}");
    assert_eq!(v["stdout"], "", "{v}");

    // Network: the sandbox cannot reach the host's loopback unless the skill asks (ns); the dir
    // backend cannot cut it and says so.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let code = format!("import socket\nsocket.create_connection(('127.0.0.1', {port}), timeout=5)\nprint('connected')");
    let v = tool(&skills, &id, "run_python", json!({ "code": code })).await;
    assert_eq!(v["ok"], kind == BackendKind::Dir, "{v}");

    // Cleanup removes everything.
    let cleaned = skills.cleanup(&id).await.expect("cleanup");
    assert!(cleaned.workspace_removed && cleaned.record_removed, "{cleaned:?}");
    assert_gone(&engine, &env.cfg.state_dir, &id, Some(&rec), info.uid).await;
    let err = skills.cleanup(&id).await.expect_err("twice");
    assert_eq!(err.code(), "not_found");
    let err = skills.call(&id, "read_file", json!({ "path": "x" })).await.expect_err("gone");
    assert_eq!(err.code(), "not_found");
    let kinds: Vec<String> =
        engine.events(Some(&user), 100).await.expect("events").into_iter().map(|e| e.kind).collect();
    assert!(kinds.contains(&"skill_build".to_owned()) && kinds.contains(&"skill_cleanup".to_owned()), "{kinds:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn python_skill_on_dir() {
    python_skill(BackendKind::Dir, 0).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn python_skill_on_ns() {
    python_skill(BackendKind::Ns, 1).await;
}

/// Only what the state directory shows: skill records and sandbox homes.
fn leftovers(state: &Path) -> Vec<String> {
    let mut out = Vec::new();
    for sub in ["skills", "workspaces"] {
        if let Ok(rd) = std::fs::read_dir(state.join(sub)) {
            out.extend(rd.flatten().map(|e| format!("{sub}/{}", e.file_name().to_string_lossy())));
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn failed_builds_leave_nothing() {
    require_python_venv();
    let env = Env::new(BackendKind::Dir, 2);
    let engine = env.open().await.expect("engine");
    let skills = Skills::new(&engine);
    let dir = env.skill_dir();
    std::fs::write(dir.join("wheels/broken-0.1.0-py3-none-any.whl"), b"not a zip file").expect("write");
    let text =
        "---\nname: broken\ndescription: d\nruntime: python\npackages: [wheels/broken-0.1.0-py3-none-any.whl]\n---\n";
    let err = skills.build(request(text, &dir)).await.expect_err("a broken wheel");
    match &err {
        SkillError::Build { step, log, message, .. } => {
            assert_eq!(step, "pip_install", "{err}");
            assert_eq!(log.last().map(|s| (s.step.as_str(), s.ok)), Some(("pip_install", false)), "{log:?}");
            assert!(message.contains("broken-0.1.0-py3-none-any.whl"), "{message}");
        }
        other => panic!("expected a build error, got {other:?}"),
    }
    assert_eq!(err.code(), "build_failed");
    assert!(engine.list().await.expect("list").is_empty(), "the workspace is gone");
    assert!(leftovers(&env.cfg.state_dir).is_empty(), "{:?}", leftovers(&env.cfg.state_dir));

    // Invalid skills and missing package files fail before anything is made.
    let err = skills.build(request("---\nname: x\n---\n", &dir)).await.expect_err("invalid");
    assert_eq!(err.code(), "invalid_skill");
    let text = "---\nname: x\ndescription: d\nruntime: python\npackages: [wheels/absent-1.0-py3-none-any.whl]\n---\n";
    let err = skills.build(request(text, &dir)).await.expect_err("missing wheel");
    assert!(matches!(&err, SkillError::Invalid { field, .. } if field == "packages[0]"), "{err:?}");
    assert!(engine.list().await.expect("list").is_empty());
    assert!(leftovers(&env.cfg.state_dir).is_empty(), "{:?}", leftovers(&env.cfg.state_dir));
}

/// A shell skill with and without network on the ns backend.
#[tokio::test(flavor = "multi_thread")]
async fn network_only_when_the_skill_asks_on_ns() {
    let env = Env::new(BackendKind::Ns, 3);
    let engine = match env.open().await {
        Ok(e) => e,
        Err(why) => {
            eprintln!("skipped: the ns backend cannot run here: {why}");
            return;
        }
    };
    let skills = Skills::new(&engine);
    let dir = env.skill_dir();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let probe = format!(
        "python3 -c \"import socket; socket.create_connection(('127.0.0.1', {port}), timeout=5); print('connected')\""
    );
    for network in [false, true] {
        let text = format!("---\nname: net\ndescription: d\nruntime: shell\nnetwork: {network}\n---\n");
        let rec = skills.build(request(&text, &dir)).await.expect("build");
        assert!(rec.build.warnings.is_empty(), "{:?}", rec.build.warnings);
        assert_eq!(engine.status(&rec.id.user().expect("user")).await.expect("status").network, network);
        let v = tool(&skills, &rec.id, "run_command", json!({ "command": probe })).await;
        assert_eq!(v["ok"], network, "network {network}: {v}");
        if network {
            assert_eq!(v["stdout"], "connected\n");
        }
        let err =
            skills.call(&rec.id, "run_python", json!({ "code": "1" })).await.expect_err("not a default shell tool");
        assert_eq!(err.code(), "tool_not_allowed");
        skills.cleanup(&rec.id).await.expect("cleanup");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn node_skill_with_a_tarball() {
    if which("node").is_none() || which("npm").is_none() {
        eprintln!("skipped: node and npm are not installed on this host (a node skill runs the host's node)");
        return;
    }
    let env = Env::new(BackendKind::Dir, 4);
    let engine = env.open().await.expect("engine");
    let skills = Skills::new(&engine);
    let dir = env.skill_dir();
    let tgz = common::build_npm_tarball(&dir, "demo-node", "1.2.3");
    let text = format!(
        "---\nname: noder\ndescription: d\nruntime: node\npackages: [{tgz}]\nenvironment: {{ WHO: you }}\n\
         limits: {{ memory: unlimited }}\n---\nUse require('demo-node').\n"
    );
    let rec = skills.build(request(&text, &dir)).await.expect("build");
    assert!(rec.build.runtime_version.as_deref().is_some_and(|v| v.starts_with('v')), "{:?}", rec.build);
    let v = tool(
        &skills,
        &rec.id,
        "run_command",
        json!({ "argv": ["node", "-e", "console.log(require('demo-node').hello(process.env.WHO))"] }),
    )
    .await;
    assert_eq!(v, ran("run_command", "hello, you, from demo-node 1.2.3\n"));
    skills.cleanup(&rec.id).await.expect("cleanup");
    assert!(leftovers(&env.cfg.state_dir).is_empty(), "{:?}", leftovers(&env.cfg.state_dir));
}

fn which(name: &str) -> Option<std::path::PathBuf> {
    ["/usr/local/bin", "/usr/bin", "/bin"].iter().map(|d| Path::new(d).join(name)).find(|p| p.exists())
}

/// What a crash leaves (a record still `building`, a workspace without a record, snapshots of a
/// sandbox) is removed by cleanup.
#[tokio::test(flavor = "multi_thread")]
async fn cleanup_removes_what_a_crash_left() {
    let env = Env::new(BackendKind::Dir, 5);
    let engine = env.open().await.expect("engine");
    let skills = Skills::new(&engine);
    let dir = env.skill_dir();
    let rec = skills
        .build(request("---\nname: s\ndescription: d\nruntime: shell\nlimits: { pids: 32 }\n---\n", &dir))
        .await
        .expect("build");
    let user = rec.id.user().expect("user");
    let uid = engine.status(&user).await.expect("status").uid;
    let v = tool(
        &skills,
        &rec.id,
        "run_command",
        json!({ "command": "echo $((6 * 7)) > answer; sleep 60 & echo started" }),
    )
    .await;
    assert_eq!(v["stdout"], "started\n", "{v}");
    engine.snapshot_create(&user, None, Default::default()).await.expect("a snapshot of the sandbox");
    let mut building: SandboxRecord = rec.clone();
    building.status = BuildStatus::Building;
    skills.records().save(&building).await.expect("save");
    let err = skills.call(&rec.id, "run_command", json!({ "command": "true" })).await.expect_err("not ready");
    assert_eq!(err.code(), "conflict", "{err}");
    let cleaned = skills.cleanup(&rec.id).await.expect("cleanup");
    assert_eq!((cleaned.workspace_removed, cleaned.snapshots_removed, cleaned.record_removed), (true, 1, true));
    assert!(engine.snapshot_list(&user).await.expect("snapshots").is_empty());
    assert_gone(&engine, &env.cfg.state_dir, &rec.id, Some(&rec), uid).await;

    // A workspace whose record never got written.
    let orphan = SandboxId::new("skill.00000000abcd").expect("id");
    let ouser: UserId = orphan.user().expect("user");
    let info = engine.create(&ouser, CreateOptions::default()).await.expect("create");
    let cleaned = skills.cleanup(&orphan).await.expect("cleanup of an orphan");
    assert_eq!((cleaned.workspace_removed, cleaned.record_removed), (true, false));
    assert_gone(&engine, &env.cfg.state_dir, &orphan, None, info.uid).await;
}

/// An API caller has at most MAX_SANDBOXES_PER_OWNER sandboxes, and no more than the limits
/// they are capped at.
#[tokio::test(flavor = "multi_thread")]
async fn owners_are_capped() {
    let env = Env::new(BackendKind::Dir, 8);
    let engine = env.open().await.expect("engine");
    let skills = Skills::new(&engine);
    let dir = env.skill_dir();
    let owned = |owner: &str, text: &str| BuildRequest {
        owner: Some(UserId::new(owner).expect("user")),
        max_limits: Some(warren_core::Limits::default()),
        ..request(text, &dir)
    };
    let small = "---\nname: s\ndescription: d\nruntime: shell\n---\n";
    let big = "---\nname: s\ndescription: d\nruntime: shell\nlimits: { memory: 4G }\n---\n";
    let err = skills.build(owned("u_cap", big)).await.expect_err("above the cap");
    assert!(matches!(&err, SkillError::Invalid { field, .. } if field == "limits.memory"), "{err:?}");
    for _ in 0..warren_skill::MAX_SANDBOXES_PER_OWNER {
        skills.build(owned("u_cap", small)).await.expect("build");
    }
    let err = skills.build(owned("u_cap", small)).await.expect_err("one too many");
    assert_eq!(err.code(), "too_many_sandboxes", "{err}");
    let other = skills.build(owned("u_other", small)).await.expect("another owner is not counted against");
    assert_eq!(other.owner.as_ref().map(UserId::as_str), Some("u_other"));
    for rec in skills.list().await.expect("list") {
        skills.cleanup(&rec.id).await.expect("cleanup");
    }
    assert!(engine.list().await.expect("list").is_empty());
    assert!(leftovers(&env.cfg.state_dir).is_empty(), "{:?}", leftovers(&env.cfg.state_dir));
}
