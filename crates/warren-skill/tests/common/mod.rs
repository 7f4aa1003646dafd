//! Shared by this crate's tests: state directories with a uid range per test slot, a wheel built
//! locally (no package index is reachable), a node package tarball, and checks that a removed
//! sandbox left nothing behind.

#![allow(dead_code)]

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use warren_core::config::Config;
use warren_core::BackendKind;
use warren_engine::{Engine, EngineOptions};
use warren_skill::{SandboxId, SandboxRecord};

/// Uids of this crate's tests: 3_200_000 + 1000 per slot (each test its own slot).
pub const UID_BASE: u32 = 3_200_000;

pub struct Env {
    pub tmp: tempfile::TempDir,
    pub cfg: Config,
}

impl Env {
    /// A state directory for `kind` in test slot `slot`.
    pub fn new(kind: BackendKind, slot: u32) -> Self {
        let tmp = tempfile::tempdir().expect("tempdir");
        std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o711)).expect("chmod 0711");
        let cfg = Config {
            state_dir: tmp.path().join("state"),
            backend: kind,
            uid_base: UID_BASE + slot * 1000,
            uid_count: 1000,
            ..Config::default()
        };
        Self { tmp, cfg }
    }

    /// The engine, or why this backend cannot run here.
    pub async fn open(&self) -> Result<Engine, String> {
        Engine::open(self.cfg.clone(), EngineOptions::default()).await.map_err(|e| e.to_string())
    }

    /// A directory for skill files.
    pub fn skill_dir(&self) -> PathBuf {
        let d = self.tmp.path().join("skill");
        std::fs::create_dir_all(d.join("wheels")).expect("mkdir skill");
        d
    }
}

/// The host's Python (Debian's, which the sandboxes use too).
pub fn python() -> &'static str {
    if Path::new("/usr/bin/python3").exists() {
        "/usr/bin/python3"
    } else {
        "python3"
    }
}

/// Fails the test, saying what to install, when the sandbox's Python cannot make a virtual
/// environment (python skills need it; Debian: python3-venv).
pub fn require_python_venv() {
    let out = Command::new("/usr/bin/python3")
        .args(["-c", "import venv, ensurepip"])
        .output()
        .unwrap_or_else(|e| panic!("python skills need /usr/bin/python3 with venv and ensurepip: {e}"));
    assert!(
        out.status.success(),
        "python skills need /usr/bin/python3 with venv and ensurepip (Debian: apt-get install python3-venv): {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

const WHEEL_SCRIPT: &str = r#"
import base64, hashlib, sys, zipfile
out, name, version = sys.argv[1], sys.argv[2], sys.argv[3]
dist = f"{name}-{version}.dist-info"
files = {
    f"{name}/__init__.py": "def hello(who):\n    return f'hello, {who}, from " + name + " " + version + "'\n",
    f"{dist}/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\nSummary: a test package\n",
    f"{dist}/WHEEL": "Wheel-Version: 1.0\nGenerator: warren-test\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    f"{dist}/entry_points.txt": f"[console_scripts]\n{name.replace('_', '-')}-hello = {name}:main\n",
    f"{dist}/top_level.txt": f"{name}\n",
}
files[f"{name}/__init__.py"] += "def main():\n    print(hello('cli'))\n"
record = []
with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as z:
    for path, text in files.items():
        data = text.encode()
        z.writestr(path, data)
        digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
        record.append(f"{path},sha256={digest},{len(data)}")
    record.append(f"{dist}/RECORD,,")
    z.writestr(f"{dist}/RECORD", "\n".join(record) + "\n")
"#;

/// Builds `NAME-VERSION-py3-none-any.whl` in `dir` (a package `NAME` with `hello(who)` and a
/// console script `NAME-hello`) and returns its file name.
pub fn build_wheel(dir: &Path, name: &str, version: &str) -> String {
    let file = format!("{name}-{version}-py3-none-any.whl");
    let out = Command::new(python())
        .args(["-c", WHEEL_SCRIPT])
        .arg(dir.join(&file))
        .args([name, version])
        .output()
        .expect("running python to build the test wheel");
    assert!(out.status.success(), "building the wheel: {}", String::from_utf8_lossy(&out.stderr));
    file
}

/// Builds an npm package tarball `NAME-VERSION.tgz` in `dir` (`module.exports.hello`).
pub fn build_npm_tarball(dir: &Path, name: &str, version: &str) -> String {
    let work = tempfile::tempdir().expect("tempdir");
    let pkg = work.path().join("package");
    std::fs::create_dir_all(&pkg).expect("mkdir package");
    std::fs::write(pkg.join("package.json"), format!(r#"{{"name":"{name}","version":"{version}","main":"index.js"}}"#))
        .expect("package.json");
    std::fs::write(
        pkg.join("index.js"),
        format!("exports.hello = (who) => `hello, ${{who}}, from {name} {version}`;\n"),
    )
    .expect("index.js");
    let file = format!("{name}-{version}.tgz");
    let status = Command::new("tar")
        .arg("-czf")
        .arg(dir.join(&file))
        .arg("-C")
        .arg(work.path())
        .arg("package")
        .status()
        .expect("running tar");
    assert!(status.success(), "tar failed");
    file
}

/// Live host processes running as `uid` (zombies are dead: they wait for the host's pid 1 to
/// reap them, which may take a moment).
pub fn processes_of(uid: u32) -> Vec<u32> {
    let mut out = Vec::new();
    for ent in std::fs::read_dir("/proc").expect("/proc").flatten() {
        let Some(pid) = ent.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else { continue };
        let Ok(md) = std::fs::metadata(ent.path()) else { continue };
        if md.uid() != uid {
            continue;
        }
        let stat = std::fs::read_to_string(ent.path().join("stat")).unwrap_or_default();
        let state = stat.rsplit_once(')').and_then(|(_, rest)| rest.split_whitespace().next());
        if state != Some("Z") && state.is_some() {
            out.push(pid);
        }
    }
    out
}

/// Asserts that sandbox `id` (built as `rec`) left nothing: no record, no workspace, no home,
/// no run state, no process of its uid.
pub async fn assert_gone(engine: &Engine, state: &Path, id: &SandboxId, rec: Option<&SandboxRecord>, uid: u32) {
    assert!(!state.join("skills").join(format!("{id}.json")).exists(), "record of {id} removed");
    let user = id.user().expect("user id");
    let err = engine.status(&user).await.expect_err("the workspace is gone");
    assert_eq!(err.code(), "not_found", "{err}");
    assert!(!state.join("workspaces").join(id.as_str()).exists(), "home of {id} removed");
    if let Some(ws) = rec.and_then(|r| r.workspace_id.as_ref()) {
        assert!(!state.join("run/ns").join(ws.as_str()).exists(), "ns run state removed");
        assert!(!state.join("run/dir").join(format!("{ws}.json")).exists(), "dir run state removed");
    }
    assert!(engine.list().await.expect("list").iter().all(|w| w.user != user), "no workspace listed");
    assert!(!state.join("locks").join(format!("{user}.lock")).exists(), "the sandbox user's lock file removed");
    let left: Vec<String> = processes_of(uid)
        .into_iter()
        .map(|p| std::fs::read_to_string(format!("/proc/{p}/stat")).unwrap_or_default())
        .collect();
    assert!(left.is_empty(), "no process of uid {uid} left: {left:?}");
}
