//! The example skills in examples/skills stay valid and do what their instructions say.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::Env;
use serde_json::{json, Value};
use warren_core::BackendKind;
use warren_skill::{BuildRequest, PackageSource, Runtime, Skills};

fn examples() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/skills")
}

fn read(name: &str) -> String {
    std::fs::read_to_string(examples().join(name)).unwrap_or_else(|e| panic!("reading {name}: {e}"))
}

#[test]
fn every_example_parses() {
    let mut runtimes = Vec::new();
    for ent in std::fs::read_dir(examples()).expect("examples/skills").flatten() {
        let path = ent.path();
        if path.extension().is_some_and(|e| e == "md") {
            let text = std::fs::read_to_string(&path).expect("read");
            let skill = warren_skill::parse(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            assert!(!skill.instructions.trim().is_empty(), "{} has instructions", path.display());
            runtimes.push(skill.runtime);
        }
    }
    for r in [Runtime::Python, Runtime::Shell, Runtime::Node] {
        assert!(runtimes.contains(&r), "an example of runtime {r}");
    }
}

async fn run(skills: &Skills<'_>, id: &warren_skill::SandboxId, tool: &str, args: Value) -> Value {
    let r = skills.call(id, tool, args).await.unwrap_or_else(|e| panic!("{tool}: {e}"));
    let v = serde_json::to_value(&r).expect("JSON");
    assert_eq!(v["ok"], true, "{v}");
    v
}

fn request(text: String, dir: &Path) -> BuildRequest {
    BuildRequest {
        text,
        packages: PackageSource::Dir(dir.to_path_buf()),
        owner: None,
        backend: None,
        origin: "example".into(),
        max_limits: None,
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn examples_build_and_work() {
    common::require_python_venv();
    let env = Env::new(BackendKind::Dir, 7);
    let engine = env.open().await.expect("engine");
    let skills = Skills::new(&engine);
    let dir = env.skill_dir();

    // disk-report (shell).
    let rec = skills.build(request(read("disk-report.md"), &dir)).await.expect("build disk-report");
    let v = run(&skills, &rec.id, "write_file", json!({ "path": "m/a.txt", "content": "12345" })).await;
    assert_eq!(v["bytes"], 5);
    let v = run(&skills, &rec.id, "run_command", json!({ "argv": ["bin/report.sh", "m"] })).await;
    assert_eq!(v["stdout"], format!("files: 1\nbytes: {}\nlargest:\n5\tm/a.txt\n", du_bytes(&rec, "m")));
    skills.cleanup(&rec.id).await.expect("cleanup");

    // json-shape (node), where node runs.
    if Path::new("/usr/bin/node").exists() {
        let rec = skills.build(request(read("json-shape.md"), &dir)).await.expect("build json-shape");
        let v = run(&skills, &rec.id, "run_command", json!({ "argv": ["node", "shape.js", "sample.json"] })).await;
        let shape: Value = serde_json::from_str(v["stdout"].as_str().expect("stdout")).expect("JSON shape");
        assert_eq!(
            shape,
            json!({ "limits": { "memory": "number", "network": "boolean" }, "name": "string", "tags": ["string"] })
        );
        skills.cleanup(&rec.id).await.expect("cleanup");
    } else {
        eprintln!("json-shape skipped: no /usr/bin/node on this host");
    }

    // csv-stats (python), its wheel built the way its header says.
    let src = dir.join("csvstats");
    let status = Command::new("cp").arg("-r").arg(examples().join("csvstats")).arg(&src).status().expect("cp");
    assert!(status.success());
    let out = Command::new("/usr/bin/python3")
        .args(["-m", "pip", "wheel", "--no-index", "--no-build-isolation", "--no-deps", "-q", "-w"])
        .arg(dir.join("wheels"))
        .arg(&src)
        .output()
        .expect("python3 -m pip");
    if !out.status.success() {
        eprintln!(
            "csv-stats skipped: this host's python3 cannot build its wheel without an index (needs pip, setuptools \
             and wheel): {}",
            String::from_utf8_lossy(&out.stderr).lines().last().unwrap_or_default()
        );
        return;
    }
    let rec = skills.build(request(read("csv-stats.md"), &dir)).await.expect("build csv-stats");
    let code = "import csvstats, json\nprint(json.dumps(csvstats.summarise('data/sales.csv'), indent=2))";
    let v = run(&skills, &rec.id, "run_python", json!({ "code": code })).await;
    let stats: Value = serde_json::from_str(v["stdout"].as_str().expect("stdout")).expect("JSON stats");
    assert_eq!(stats["rows"], 3);
    assert_eq!(stats["units"], json!({ "count": 3, "sum": 24.0, "mean": 8.0, "min": 5.0, "max": 12.0 }));
    assert_eq!(stats["price"]["mean"], 2.7);
    skills.cleanup(&rec.id).await.expect("cleanup");
}

/// What `du -sb` says of `dir` in the sandbox's workdir (directory sizes depend on the file system).
fn du_bytes(rec: &warren_skill::SandboxRecord, dir: &str) -> String {
    let home = rec.home.as_deref().expect("home");
    let out = Command::new("du").arg("-sb").arg(Path::new(home).join(dir)).output().expect("du");
    String::from_utf8_lossy(&out.stdout).split_whitespace().next().unwrap_or_default().to_owned()
}
