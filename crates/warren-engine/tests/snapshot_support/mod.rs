//! Helpers of the engine's snapshot tests: state directories, trees to compare, a moto server.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, SystemTime};

use warren_core::config::Config;
use warren_core::{BackendKind, ExecRequest, SnapshotId, UserId, WorkspaceSpec};
use warren_engine::{Engine, EngineOptions, WorkspaceInfo};

/// Uids of the snapshot test files: 2_800_000 + 1000 per slot.
pub const UID_BASE: u32 = 2_800_000;

pub struct Env {
    pub tmp: tempfile::TempDir,
    pub state: PathBuf,
    pub cfg: Config,
}

pub fn new_env(kind: BackendKind, slot: u32) -> Env {
    let tmp = tempfile::tempdir().expect("tempdir");
    std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o711)).expect("chmod tempdir 0711");
    let state = tmp.path().join("state");
    let cfg = Config {
        state_dir: state.clone(),
        backend: kind,
        uid_base: UID_BASE + slot * 1000,
        uid_count: 1000,
        ..Config::default()
    };
    Env { tmp, state, cfg }
}

impl Env {
    pub async fn open(&self) -> Engine {
        Engine::open(self.cfg.clone(), EngineOptions::default()).await.expect("open engine")
    }

    pub fn home(&self, user: &str) -> PathBuf {
        self.state.join("workspaces").join(user)
    }
}

pub fn user(s: &str) -> UserId {
    UserId::new(s).expect("valid user id")
}

pub fn snap(s: &str) -> SnapshotId {
    SnapshotId::new(s).expect("valid snapshot id")
}

pub fn sh(script: &str) -> ExecRequest {
    ExecRequest::new(["sh", "-c", script])
}

pub fn spec_of(info: &WorkspaceInfo) -> WorkspaceSpec {
    WorkspaceSpec {
        id: info.workspace_id.clone(),
        user: info.user.clone(),
        username: info.username.clone(),
        uid: info.uid,
        gid: info.uid,
        limits: info.limits.clone(),
        network: info.network,
        image: None,
    }
}

/// Deterministic bytes that do not compress.
pub fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out
}

/// One entry of a tree as the tests compare it (directory mtimes left out).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Node {
    Dir { mode: u32, uid: u32 },
    File { mode: u32, uid: u32, mtime: i64, data: Vec<u8> },
    Symlink { uid: u32, target: PathBuf },
    Other,
}

/// The tree under `root` (root excluded), not following symlinks.
pub fn tree(root: &Path) -> BTreeMap<PathBuf, Node> {
    let mut out = BTreeMap::new();
    walk(root, Path::new(""), &mut out);
    out
}

fn walk(root: &Path, rel: &Path, out: &mut BTreeMap<PathBuf, Node>) {
    let dir = root.join(rel);
    let mut names: Vec<_> = std::fs::read_dir(&dir).expect("read_dir").map(|e| e.expect("entry").file_name()).collect();
    names.sort();
    for name in names {
        let r = rel.join(&name);
        let p = root.join(&r);
        let md = std::fs::symlink_metadata(&p).expect("lstat");
        let ft = md.file_type();
        let node = if ft.is_dir() {
            Node::Dir { mode: md.mode() & 0o7777, uid: md.uid() }
        } else if ft.is_file() {
            Node::File {
                mode: md.mode() & 0o7777,
                uid: md.uid(),
                mtime: md.mtime(),
                data: std::fs::read(&p).expect("read"),
            }
        } else if ft.is_symlink() {
            Node::Symlink { uid: md.uid(), target: std::fs::read_link(&p).expect("readlink") }
        } else {
            Node::Other
        };
        let is_dir = ft.is_dir();
        out.insert(r.clone(), node);
        if is_dir {
            walk(root, &r, out);
        }
    }
}

/// Every entry's owner is `uid` (the root included).
pub fn owned_by(root: &Path, uid: u32) -> Result<(), String> {
    let md = std::fs::metadata(root).map_err(|e| e.to_string())?;
    if md.uid() != uid || md.mode() & 0o777 != 0o700 {
        return Err(format!("{} is uid {} mode {:o}", root.display(), md.uid(), md.mode() & 0o7777));
    }
    for (p, n) in tree(root) {
        let u = match n {
            Node::Dir { uid, .. } | Node::File { uid, .. } | Node::Symlink { uid, .. } => uid,
            Node::Other => continue,
        };
        if u != uid {
            return Err(format!("{} is owned by uid {u}, not {uid}", p.display()));
        }
    }
    Ok(())
}

/// Polls `cond` every 2 ms for up to `secs` seconds (a deadline for a hang, not a timing
/// assertion).
pub fn wait_until(secs: u64, mut cond: impl FnMut() -> bool) -> bool {
    let end = SystemTime::now() + Duration::from_secs(secs);
    while SystemTime::now() < end {
        if cond() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    cond()
}

pub fn which(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")?.to_str()?.split(':').map(|d| Path::new(d).join(name)).find(|p| p.is_file())
}

/// The freezer state of an ns workspace's cgroup: `Some(true)` frozen, `Some(false)` thawed.
pub fn frozen(ws: &warren_core::WorkspaceId) -> Option<bool> {
    let v1 = PathBuf::from(format!("/sys/fs/cgroup/freezer/warren/{ws}/freezer.state"));
    if let Ok(s) = std::fs::read_to_string(&v1) {
        return Some(s.trim() == "FROZEN");
    }
    let v2 = PathBuf::from(format!("/sys/fs/cgroup/warren/{ws}/cgroup.freeze"));
    std::fs::read_to_string(v2).ok().map(|s| s.trim() == "1")
}

/// A `moto_server` (S3 protocol) on a free loopback port, killed (by its pid) when dropped.
pub struct Moto {
    child: Child,
    pub port: u16,
    log: tempfile::NamedTempFile,
}

impl Moto {
    /// `None` (with the reason printed) only when moto_server is not installed.
    pub fn start() -> Option<Moto> {
        let Some(bin) = which("moto_server") else {
            eprintln!("SKIPPED: moto_server not found on PATH; install it with: pip install 'moto[server]' (scripts/install-deps does)");
            return None;
        };
        let port = TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port();
        let log = tempfile::NamedTempFile::new().expect("log file");
        let child = Command::new(bin)
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdin(Stdio::null())
            .stdout(log.reopen().expect("log"))
            .stderr(log.reopen().expect("log"))
            .spawn()
            .expect("start moto_server");
        let moto = Moto { child, port, log };
        let up = wait_until(60, || moto.http("GET", "/").map(|r| r.starts_with("HTTP/1.1 200")).unwrap_or(false));
        if !up {
            let s = std::fs::read_to_string(moto.log.path()).unwrap_or_default();
            panic!("moto_server did not come up on port {port}: {s}");
        }
        Some(moto)
    }

    /// A bare HTTP/1.1 request (moto needs no signature for bucket creation).
    pub fn http(&self, method: &str, path: &str) -> std::io::Result<String> {
        let mut s = TcpStream::connect(("127.0.0.1", self.port))?;
        s.set_read_timeout(Some(Duration::from_secs(10)))?;
        write!(
            s,
            "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
            self.port
        )?;
        let mut out = String::new();
        s.read_to_string(&mut out)?;
        Ok(out)
    }

    pub fn create_bucket(&self, name: &str) {
        let r = self.http("PUT", &format!("/{name}")).expect("create bucket");
        assert!(r.starts_with("HTTP/1.1 200"), "create bucket: {r}");
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
