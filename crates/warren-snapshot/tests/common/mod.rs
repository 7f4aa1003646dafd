//! Helpers shared by the snapshot tests: trees to archive, tree comparison, raw tar building.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use warren_core::{SnapshotId, UserId};

pub fn user(s: &str) -> UserId {
    UserId::new(s).expect("valid user id")
}

pub fn snap(s: &str) -> SnapshotId {
    SnapshotId::new(s).expect("valid snapshot id")
}

/// A temp dir laid out like warren's state dir: `{root}/state/workspaces/{user}` exists (0700),
/// `{root}/sentinel/canary` sits outside, `{root}/state` and `{root}/state/workspaces` are 0711.
pub struct Env {
    pub dir: tempfile::TempDir,
    pub state: PathBuf,
    pub workspaces: PathBuf,
    pub sentinel: PathBuf,
}

impl Env {
    pub fn new() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o711)).expect("chmod");
        let state = dir.path().join("state");
        let workspaces = state.join("workspaces");
        fs::create_dir_all(&workspaces).expect("mkdir");
        for d in [&state, &workspaces] {
            fs::set_permissions(d, fs::Permissions::from_mode(0o711)).expect("chmod");
        }
        let sentinel = dir.path().join("sentinel");
        fs::create_dir(&sentinel).expect("mkdir sentinel");
        fs::write(sentinel.join("canary"), b"untouched").expect("write canary");
        Self { dir, state, workspaces, sentinel }
    }

    pub fn ws(&self, u: &str) -> PathBuf {
        let p = self.workspaces.join(u);
        if !p.exists() {
            fs::create_dir(&p).expect("mkdir ws");
            fs::set_permissions(&p, fs::Permissions::from_mode(0o700)).expect("chmod ws");
        }
        p
    }

    /// Every entry outside `state/snapshots`, with contents and modes: proof that nothing else
    /// was written. Directory mtimes are left out: a staging directory created and removed
    /// beside the workspace touches its parent's mtime.
    pub fn outside_snapshots(&self) -> BTreeMap<PathBuf, Node> {
        let mut t = without_dir_mtimes(tree(self.dir.path()));
        t.retain(|p, _| !p.starts_with("state/snapshots"));
        t
    }
}

/// One entry of a tree, as compared by the tests.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Node {
    Dir { mode: u32, mtime: i64 },
    File { mode: u32, mtime: i64, data: Vec<u8> },
    Symlink { target: PathBuf },
    Other,
}

/// The tree under `root` (root excluded), not following symlinks.
pub fn tree(root: &Path) -> BTreeMap<PathBuf, Node> {
    let mut out = BTreeMap::new();
    walk(root, Path::new(""), &mut out);
    out
}

fn walk(dir: &Path, rel: &Path, out: &mut BTreeMap<PathBuf, Node>) {
    let Ok(rd) = fs::read_dir(dir) else { return };
    for e in rd {
        let e = e.expect("dir entry");
        let p = e.path();
        let r = rel.join(e.file_name());
        let m = fs::symlink_metadata(&p).expect("lstat");
        let ft = m.file_type();
        let node = if ft.is_dir() {
            walk(&p, &r, out);
            Node::Dir { mode: m.mode() & 0o7777, mtime: m.mtime() }
        } else if ft.is_file() {
            Node::File { mode: m.mode() & 0o7777, mtime: m.mtime(), data: fs::read(&p).expect("read") }
        } else if ft.is_symlink() {
            Node::Symlink { target: fs::read_link(&p).expect("readlink") }
        } else {
            Node::Other
        };
        out.insert(r, node);
    }
}

/// Drops directory mtimes (they change whenever an entry is added, so only a restore keeps them).
pub fn without_dir_mtimes(mut t: BTreeMap<PathBuf, Node>) -> BTreeMap<PathBuf, Node> {
    for n in t.values_mut() {
        if let Node::Dir { mtime, .. } = n {
            *mtime = 0;
        }
    }
    t
}

pub fn set_mtime(p: &Path, secs: i64) {
    let t = nix::sys::time::TimeSpec::new(secs, 0);
    nix::sys::stat::utimensat(nix::fcntl::AT_FDCWD, p, &t, &t, nix::sys::stat::UtimensatFlags::NoFollowSymlink)
        .expect("utimensat");
}

pub fn chmod(p: &Path, mode: u32) {
    fs::set_permissions(p, fs::Permissions::from_mode(mode)).expect("chmod");
}

/// Deterministic pseudo-random bytes (xorshift), incompressible enough for zstd.
pub fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut v = Vec::with_capacity(len + 8);
    while v.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        v.extend_from_slice(&x.to_le_bytes());
    }
    v.truncate(len);
    v
}

/// A tree with everything a workspace has: nested and empty directories, empty, small, large
/// and executable files, odd modes, unicode and long names, relative, absolute and dangling
/// symlinks, and fixed mtimes.
pub fn rich_tree(root: &Path) {
    let w = |p: &str, data: &[u8], mode: u32, mtime: i64| {
        let path = root.join(p);
        fs::create_dir_all(path.parent().expect("parent")).expect("mkdir -p");
        fs::write(&path, data).expect("write");
        chmod(&path, mode);
        set_mtime(&path, mtime);
    };
    w("README.md", b"# hello\n", 0o644, 1_600_000_000);
    w("empty", b"", 0o600, 1_600_000_001);
    w("bin/run.sh", b"#!/bin/sh\necho hi\n", 0o755, 1_600_000_002);
    w("secret/key", b"k3y", 0o400, 1_600_000_003);
    w("src/main.rs", b"fn main() {}\n", 0o640, 1_600_000_004);
    w("src/deep/er/and/deeper/file.txt", b"deep", 0o644, 1_600_000_005);
    w("héllo wörld.txt", "ünïcödé".as_bytes(), 0o644, 1_600_000_006);
    w("日本語/ファイル.txt", "こんにちは".as_bytes(), 0o644, 1_600_000_007);
    w("emoji/🦀.rs", b"crab", 0o644, 1_600_000_008);
    w("big/random.bin", &noise(3 << 20, 7), 0o644, 1_600_000_009);
    w("big/zeros.bin", &vec![0u8; 2 << 20], 0o644, 1_600_000_010);
    w("big/just-over-small.bin", &noise(256 * 1024 + 1, 8), 0o644, 1_600_000_011);
    let long_dir = "d".repeat(120);
    let long_name = format!("{long_dir}/{}/{}", "e".repeat(200), "f".repeat(250));
    w(&long_name, b"long path", 0o644, 1_600_000_012);
    for i in 0..50 {
        w(&format!("many/file_{i:03}"), format!("content {i}\n").as_bytes(), 0o644, 1_600_000_100 + i);
    }
    fs::create_dir_all(root.join("empty_dir")).expect("mkdir");
    fs::create_dir_all(root.join("ro_dir")).expect("mkdir");
    w("ro_dir/inside", b"ro", 0o444, 1_600_000_013);
    let sym = |target: &str, link: &str| {
        std::os::unix::fs::symlink(target, root.join(link)).expect("symlink");
        set_mtime(&root.join(link), 1_600_000_020);
    };
    sym("README.md", "link_rel");
    sym("/usr/bin/env", "link_abs");
    sym("does/not/exist", "link_dangling");
    sym("src", "link_dir");
    sym(&"t".repeat(300), "link_long_target");
    // Directory modes and mtimes last (adding entries changes a directory's mtime).
    chmod(&root.join("ro_dir"), 0o555);
    chmod(&root.join("secret"), 0o700);
    chmod(&root.join("empty_dir"), 0o750);
    let mut dirs: Vec<PathBuf> =
        tree(root).into_iter().filter(|(_, n)| matches!(n, Node::Dir { .. })).map(|(p, _)| root.join(p)).collect();
    dirs.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    for (i, d) in dirs.iter().enumerate() {
        set_mtime(d, 1_600_001_000 + i as i64);
    }
}

/// `n` small files spread over directories (for speed and kill tests).
pub fn small_files_tree(root: &Path, n: usize, tag: &str) {
    for i in 0..n {
        let p = root.join(format!("d{:02}/f{i:05}.txt", i % 37));
        fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
        fs::write(&p, format!("{tag} {i} {}\n", "x".repeat(i % 300))).expect("write");
    }
}

/// Builds tar streams byte by byte with the `tar` crate's low-level header API, including
/// everything its high-level API refuses to write.
pub struct RawTar {
    b: tar::Builder<Vec<u8>>,
}

pub fn octal(dst: &mut [u8], v: u64) {
    let s = format!("{:0w$o}", v, w = dst.len() - 1);
    assert!(s.len() < dst.len(), "{v} does not fit");
    dst[..s.len()].copy_from_slice(s.as_bytes());
    dst[s.len()] = 0;
}

impl RawTar {
    pub fn new() -> Self {
        Self { b: tar::Builder::new(Vec::new()) }
    }

    /// A header with `path` copied verbatim (GNU long-name record first when over 100 bytes).
    pub fn header(&mut self, path: &[u8], ty: tar::EntryType, mode: u32, size: u64) -> tar::Header {
        if path.len() > 100 {
            self.long(b'L', path);
        }
        let mut h = tar::Header::new_gnu();
        let n = path.len().min(100);
        h.as_old_mut().name[..n].copy_from_slice(&path[..n]);
        h.set_entry_type(ty);
        h.set_mode(mode);
        h.set_size(size);
        h.set_mtime(1_600_000_000);
        h.set_uid(0);
        h.set_gid(0);
        h
    }

    /// A GNU long-name (`L`) or long-link (`K`) record.
    pub fn long(&mut self, kind: u8, value: &[u8]) {
        let mut h = tar::Header::new_gnu();
        h.as_old_mut().name[..13].copy_from_slice(b"././@LongLink");
        h.set_entry_type(tar::EntryType::new(kind));
        h.set_mode(0o644);
        let mut data = value.to_vec();
        data.push(0);
        h.set_size(data.len() as u64);
        h.set_cksum();
        self.b.append(&h, &data[..]).expect("append long name");
    }

    /// Appends a header (checksum set here) and its data.
    pub fn append(&mut self, mut h: tar::Header, data: &[u8]) {
        h.set_cksum();
        self.b.append(&h, data).expect("append");
    }

    /// Appends a header whose data is shorter than declared (a "declared size" bomb).
    pub fn append_raw(&mut self, mut h: tar::Header, data: &[u8]) {
        h.set_cksum();
        let w = self.b.get_mut();
        w.extend_from_slice(h.as_bytes());
        w.extend_from_slice(data);
        let pad = (512 - data.len() % 512) % 512;
        w.extend(std::iter::repeat_n(0u8, pad));
    }

    pub fn file(&mut self, path: &[u8], data: &[u8]) {
        let h = self.header(path, tar::EntryType::Regular, 0o644, data.len() as u64);
        self.append(h, data);
    }

    pub fn file_mode(&mut self, path: &[u8], data: &[u8], mode: u32) {
        let h = self.header(path, tar::EntryType::Regular, mode, data.len() as u64);
        self.append(h, data);
    }

    pub fn dir(&mut self, path: &[u8]) {
        let h = self.header(path, tar::EntryType::Directory, 0o755, 0);
        self.append(h, b"");
    }

    pub fn link(&mut self, ty: tar::EntryType, path: &[u8], target: &[u8]) {
        if target.len() > 100 {
            self.long(b'K', target);
        }
        let mut h = self.header(path, ty, 0o777, 0);
        let n = target.len().min(100);
        h.as_old_mut().linkname[..n].copy_from_slice(&target[..n]);
        self.append(h, b"");
    }

    pub fn symlink(&mut self, path: &[u8], target: &[u8]) {
        self.link(tar::EntryType::Symlink, path, target);
    }

    /// A PAX extended header (`x`) for the next entry.
    pub fn pax(&mut self, records: &[(&str, &[u8])]) {
        let mut data = Vec::new();
        for (k, v) in records {
            let body_len = k.len() + v.len() + 3; // ' ' '=' '\n'
            let mut len = body_len + 1;
            while format!("{len}").len() + body_len != len {
                len = format!("{len}").len() + body_len;
            }
            data.extend_from_slice(format!("{len} {k}=").as_bytes());
            data.extend_from_slice(v);
            data.push(b'\n');
        }
        let mut h = tar::Header::new_ustar();
        h.as_old_mut().name[..11].copy_from_slice(b"PaxHeader/x");
        h.set_entry_type(tar::EntryType::XHeader);
        h.set_mode(0o644);
        h.set_size(data.len() as u64);
        self.append(h, &data);
    }

    /// The tar stream with its end marker.
    pub fn tar(self) -> Vec<u8> {
        self.b.into_inner().expect("finish tar")
    }

    /// The tar stream, zstd-compressed.
    pub fn zst(self) -> Vec<u8> {
        zstd::encode_all(&self.tar()[..], 3).expect("zstd")
    }
}

pub fn sha256_hex(data: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(data).iter().map(|b| format!("{b:02x}")).collect()
}

/// Writes `archive` into local storage under `state` as snapshot `id` of `u`, with a manifest
/// that matches it (as if the store had been tampered with, or a bug had written it).
pub fn plant_snapshot(state: &Path, u: &UserId, id: &SnapshotId, archive: &[u8]) {
    use warren_snapshot::{LocalStorage, Manifest, Storage, Timestamp, Trigger};
    let st = LocalStorage::new(state);
    st.put(&warren_snapshot::archive_key(u, id), archive).expect("put archive");
    let m = Manifest {
        format_version: 1,
        id: id.clone(),
        user: u.clone(),
        created: Timestamp::now(),
        trigger: Trigger::Manual,
        pinned: false,
        archive_bytes: archive.len() as u64,
        unpacked_bytes: 0,
        file_count: 0,
        entry_count: 0,
        sha256: sha256_hex(archive),
        backend: "dir".into(),
        parent: None,
        skipped_entries: 0,
    };
    st.put(&warren_snapshot::manifest_key(u, id), &m.to_json()).expect("put manifest");
}

pub fn write_file(p: &Path, data: &[u8]) {
    let mut f = fs::File::create(p).expect("create");
    f.write_all(data).expect("write");
}

/// Waits for `cond` up to `secs` seconds, polling.
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

/// True when `name` is on `PATH`.
pub fn which(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")?.to_str()?.split(':').map(|d| Path::new(d).join(name)).find(|p| p.is_file())
}
