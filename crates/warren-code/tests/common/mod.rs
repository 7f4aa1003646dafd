//! Shared by the session tests: a real engine on a temporary state directory, per backend, and
//! helpers to build projects and read the tracking repository independently of the crate.

#![allow(dead_code)]

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use warren_backend_ns::HelperCmd;
use warren_core::config::Config;
use warren_core::{BackendKind, ExecRequest};
use warren_engine::{Engine, EngineOptions};

/// Uids of this crate's tests: 3_100_000 + 1000 per slot (each test its own slot).
pub const UID_BASE: u32 = 3_100_000;

pub struct Env {
    pub tmp: tempfile::TempDir,
    pub cfg: Config,
    pub engine: Engine,
}

impl Env {
    pub fn state(&self) -> &Path {
        &self.cfg.state_dir
    }

    /// A directory beside the state, root-owned.
    pub fn path(&self, name: &str) -> PathBuf {
        self.tmp.path().join(name)
    }
}

/// Where the ns backend's helper was built (it must be: `cargo build -p warren-backend-ns --bins`).
fn ns_helper() -> HelperCmd {
    let exe = std::env::current_exe().expect("test binary path");
    for dir in exe.ancestors().skip(1).take(3) {
        let cand = dir.join("warren-nsinit");
        if cand.is_file() {
            return HelperCmd { program: cand, args: vec![] };
        }
    }
    panic!("warren-nsinit is not built next to the test binary: run `cargo build -p warren-backend-ns --bins` first");
}

/// Why docker tests cannot run here, or `None` when they can (the test image is then built).
pub fn docker_unavailable() -> Option<String> {
    if let Err(why) = warren_backend_docker::DockerBackend::probe() {
        return Some(why.to_string());
    }
    static IMAGE: OnceLock<Result<(), String>> = OnceLock::new();
    match IMAGE.get_or_init(|| std::thread::spawn(build_image).join().unwrap_or_else(|_| Err("panicked".into()))) {
        Ok(()) => None,
        Err(e) => panic!("a docker daemon answers but the test image could not be built: {e}"),
    }
}

pub async fn env(kind: BackendKind, slot: u32) -> Env {
    let tmp = tempfile::tempdir().expect("tempdir");
    std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o711)).expect("chmod 0711");
    let cfg = Config {
        state_dir: tmp.path().join("state"),
        backend: kind,
        uid_base: UID_BASE + slot * 1000,
        uid_count: 1000,
        image: (kind == BackendKind::Docker).then(|| IMAGE.to_owned()),
        ..Config::default()
    };
    let opts = EngineOptions { ns_helper: (kind == BackendKind::Ns).then(ns_helper) };
    let engine = Engine::open(cfg.clone(), opts).await.expect("open engine");
    assert_eq!(engine.backend_kind(), kind);
    Env { tmp, cfg, engine }
}

pub fn sh(script: &str) -> ExecRequest {
    ExecRequest::new(["sh", "-c", script])
}

/// Writes `files` (path, content) under `root`, creating parents.
pub fn write_tree(root: &Path, files: &[(&str, &[u8])]) {
    for (p, data) in files {
        let path = root.join(p);
        std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
        std::fs::write(&path, data).expect("write");
    }
}

/// Every file under `dir` (not following symlinks) with its content and mode, for exact
/// before/after comparisons (mtimes included).
pub fn fingerprint(dir: &Path) -> Vec<(String, Vec<u8>, u32, i64)> {
    use std::os::unix::fs::MetadataExt;
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let mut ents: Vec<_> = std::fs::read_dir(&d).expect("read_dir").flatten().collect();
        ents.sort_by_key(|e| e.file_name());
        for e in ents {
            let md = std::fs::symlink_metadata(e.path()).expect("lstat");
            let rel = e.path().strip_prefix(dir).expect("prefix").to_string_lossy().into_owned();
            let data = if md.file_type().is_file() {
                std::fs::read(e.path()).expect("read")
            } else if md.file_type().is_symlink() {
                std::fs::read_link(e.path()).expect("readlink").into_os_string().into_encoded_bytes()
            } else {
                stack.push(e.path());
                Vec::new()
            };
            out.push((rel, data, md.mode(), md.mtime_nsec() + md.mtime() * 1_000_000_000));
        }
    }
    out.sort();
    out
}

/// Runs git on a repository directly (the test's own view, independent of the crate).
pub fn git(repo: &Path, args: &[&str]) -> Vec<u8> {
    let out = Command::new("git")
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .arg("--git-dir")
        .arg(repo)
        .args(args)
        .output()
        .expect("run git");
    assert!(out.status.success(), "git {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    out.stdout
}

/// Every object of a repository, decompressed, concatenated (to search for leaked bytes).
pub fn all_objects(repo: &Path) -> Vec<u8> {
    git(repo, &["cat-file", "--batch-all-objects", "--batch", "--unordered"])
}

/// Every path of every commit of the branch.
pub fn all_paths(repo: &Path) -> Vec<String> {
    let commits = String::from_utf8(git(repo, &["rev-list", "refs/heads/main"])).expect("utf8");
    let mut paths = Vec::new();
    for c in commits.lines() {
        let out = git(repo, &["ls-tree", "-r", "-z", "--name-only", c]);
        for p in out.split(|b| *b == 0).filter(|p| !p.is_empty()) {
            paths.push(String::from_utf8_lossy(p).into_owned());
        }
    }
    paths.sort();
    paths.dedup();
    paths
}

pub const IMAGE: &str = "warren-code-test:busybox";

fn build_image() -> Result<(), String> {
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let root = dir.path().join("rootfs");
    warren_backend_docker::image::minimal_rootfs(&root, &[]).map_err(|e| e.to_string())?;
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(|e| e.to_string())?;
    rt.block_on(async {
        let opts = warren_backend_docker::DockerOptions { image: IMAGE.to_owned(), ..Default::default() };
        let backend =
            warren_backend_docker::DockerBackend::with_options(dir.path(), opts).map_err(|e| e.to_string())?;
        warren_backend_docker::image::import_dir(backend.docker(), &root, IMAGE).await.map_err(|e| e.to_string())
    })
}
