//! File operations confined beneath a workspace directory.
//!
//! Every path is resolved by the kernel with `openat2(RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS)`
//! relative to a descriptor of the workspace directory. Symlinks inside the workspace keep
//! working; a symlink (or a race that swaps a directory for one) that would lead outside fails
//! with `EXDEV`, which is reported as an [`Error::InvalidPath`]. Writes go to a temporary file in
//! the target directory, are fsynced, given to the workspace's owner and renamed into place, so a
//! reader or a crash sees the old or the new content, never a mix.

use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use nix::errno::Errno;
use nix::fcntl::{OFlag, OpenHow, ResolveFlag};
use nix::sys::stat::{fstat, fstatat, Mode, SFlag};
use nix::unistd::{fchown, Gid, Uid, UnlinkatFlags};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::path::WorkspacePath;

/// The kind of a directory entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FileKind {
    /// A regular file.
    File,
    /// A directory.
    Dir,
    /// A symbolic link (not followed).
    Symlink,
    /// Anything else (FIFO, socket, device).
    Other,
}

/// One entry of a directory listing, or the result of a stat.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DirEntry {
    /// The entry's name (lossy UTF-8).
    pub name: String,
    /// What it is.
    pub kind: FileKind,
    /// Size in bytes.
    pub size: u64,
    /// Permission bits.
    pub mode: u32,
    /// Modification time, seconds since the epoch.
    pub mtime: i64,
}

/// Options for [`Confined::write`].
#[derive(Clone, Copy, Debug)]
pub struct WriteOptions {
    /// Permission bits of the file (masked to 0o777: no setuid, setgid or sticky bits).
    pub mode: u32,
    /// Create missing parent directories.
    pub create_parents: bool,
}

impl Default for WriteOptions {
    fn default() -> Self {
        Self { mode: 0o644, create_parents: true }
    }
}

/// A workspace directory, opened once; all operations stay beneath it.
#[derive(Debug)]
pub struct Confined {
    root: OwnedFd,
    owner: Option<(u32, u32)>,
}

impl AsFd for Confined {
    /// The workspace directory (an `O_PATH` descriptor), for callers that walk the tree with their
    /// own `*at` calls; they must resolve beneath it with `RESOLVE_BENEATH` like this module does.
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.root.as_fd()
    }
}

/// `openat2`, retried on `EAGAIN`: with `RESOLVE_BENEATH` the kernel answers `EAGAIN` when a
/// rename or mount anywhere on the system raced with resolving a `..` component (it cannot then
/// prove the walk stayed beneath the root) and asks the caller to try again.
fn openat2_retry<P: ?Sized + nix::NixPath, Fd: AsFd>(dirfd: Fd, path: &P, how: OpenHow) -> nix::Result<OwnedFd> {
    let mut tries = 0;
    loop {
        match nix::fcntl::openat2(dirfd.as_fd(), path, how) {
            Err(Errno::EAGAIN) if tries < 128 => {
                tries += 1;
                std::thread::yield_now();
            }
            r => return r,
        }
    }
}

fn how(flags: OFlag) -> OpenHow {
    OpenHow::new()
        .flags(flags | OFlag::O_CLOEXEC)
        .resolve(ResolveFlag::RESOLVE_BENEATH | ResolveFlag::RESOLVE_NO_MAGICLINKS)
}

fn path_err(p: &WorkspacePath, e: Errno, doing: &str) -> Error {
    let path = p.to_string();
    match e {
        Errno::EXDEV => {
            Error::InvalidPath { path, reason: "resolves outside the workspace (through a symlink or mount)".into() }
        }
        Errno::ELOOP => Error::InvalidPath { path, reason: "too many levels of symbolic links".into() },
        Errno::ENOENT => Error::NotFound(format!("path {path:?} in the workspace")),
        Errno::ENOTDIR => Error::InvalidPath { path, reason: "a parent is not a directory".into() },
        Errno::EISDIR => Error::InvalidPath { path, reason: "is a directory".into() },
        Errno::EEXIST => Error::AlreadyExists(format!("path {path:?}")),
        Errno::ENOTEMPTY => Error::Conflict(format!("directory {path:?} is not empty; delete it recursively")),
        Errno::ENOSPC | Errno::EDQUOT => {
            Error::Conflict(format!("no space left to {doing} {path:?}: the workspace's disk is full"))
        }
        e => Error::errno(format!("{doing} {path:?}"), e),
    }
}

impl Confined {
    /// Opens `dir` (which must exist). Files and directories created later are given to
    /// `owner` (uid, gid) when set.
    pub fn open(dir: &Path, owner: Option<(u32, u32)>) -> Result<Self> {
        let root = nix::fcntl::open(dir, OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC, Mode::empty())
            .map_err(|e| Error::errno(format!("opening workspace directory {}", dir.display()), e))?;
        Ok(Self { root, owner })
    }

    fn open_at(&self, p: &WorkspacePath, flags: OFlag, doing: &str) -> Result<OwnedFd> {
        let rel: &Path = if p.is_root() { Path::new(".") } else { p.as_path() };
        openat2_retry(self.root.as_fd(), rel, how(flags)).map_err(|e| path_err(p, e, doing))
    }

    fn chown(&self, fd: BorrowedFd<'_>, p: &WorkspacePath) -> Result<()> {
        if let Some((uid, gid)) = self.owner {
            fchown(fd, Some(Uid::from_raw(uid)), Some(Gid::from_raw(gid))).map_err(|e| path_err(p, e, "chown"))?;
        }
        Ok(())
    }

    /// Reads a regular file, refusing files larger than `max_bytes`.
    pub fn read(&self, p: &WorkspacePath, max_bytes: u64) -> Result<Vec<u8>> {
        // O_NONBLOCK: opening a FIFO must not hang the caller.
        let fd = self.open_at(p, OFlag::O_RDONLY | OFlag::O_NOCTTY | OFlag::O_NONBLOCK, "reading")?;
        let st = fstat(fd.as_fd()).map_err(|e| path_err(p, e, "reading"))?;
        if SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT != SFlag::S_IFREG {
            return Err(Error::InvalidPath { path: p.to_string(), reason: "not a regular file".into() });
        }
        if st.st_size as u64 > max_bytes {
            return Err(Error::InvalidRequest(format!(
                "file {p} is {} bytes, more than the {max_bytes}-byte limit for a single read; download it as an archive instead",
                st.st_size
            )));
        }
        let mut buf = Vec::with_capacity(st.st_size as usize);
        File::from(fd).take(max_bytes + 1).read_to_end(&mut buf).map_err(|e| Error::io(format!("reading {p}"), e))?;
        if buf.len() as u64 > max_bytes {
            return Err(Error::InvalidRequest(format!("file {p} grew past the {max_bytes}-byte read limit")));
        }
        Ok(buf)
    }

    /// Opens a regular file for reading, to stream it (no size limit; FIFOs, devices and
    /// directories are refused like in [`Confined::read`]). Returns it with its description.
    pub fn open_read(&self, p: &WorkspacePath) -> Result<(File, DirEntry)> {
        let fd = self.open_at(p, OFlag::O_RDONLY | OFlag::O_NOCTTY | OFlag::O_NONBLOCK, "reading")?;
        let st = fstat(fd.as_fd()).map_err(|e| path_err(p, e, "reading"))?;
        if SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT != SFlag::S_IFREG {
            return Err(Error::InvalidPath { path: p.to_string(), reason: "not a regular file".into() });
        }
        let name = p.split().map_or_else(|| OsString::from("."), |(_, n)| n.to_owned());
        Ok((File::from(fd), entry(&name, &st)))
    }

    /// Opens (creating if asked) the directory `p`, one component at a time.
    fn dir(&self, p: &WorkspacePath, create: bool) -> Result<OwnedFd> {
        if !create {
            return self.open_at(p, OFlag::O_PATH | OFlag::O_DIRECTORY, "opening directory");
        }
        let mut cur = self.open_at(&WorkspacePath::root(), OFlag::O_PATH | OFlag::O_DIRECTORY, "opening")?;
        let mut sofar = WorkspacePath::root();
        for comp in p.as_path().iter() {
            sofar = sofar.join(&WorkspacePath::new(comp)?);
            match nix::sys::stat::mkdirat(cur.as_fd(), comp, Mode::from_bits_truncate(0o755)) {
                Ok(()) => {
                    let fd =
                        openat2_retry(cur.as_fd(), comp, how(OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW))
                            .map_err(|e| path_err(&sofar, e, "creating directory"))?;
                    self.chown(fd.as_fd(), &sofar)?;
                }
                Err(Errno::EEXIST) => {}
                Err(e) => return Err(path_err(&sofar, e, "creating directory")),
            }
            cur = openat2_retry(cur.as_fd(), comp, how(OFlag::O_PATH | OFlag::O_DIRECTORY))
                .map_err(|e| path_err(&sofar, e, "opening directory"))?;
        }
        Ok(cur)
    }

    /// Creates a directory (and its parents when `parents`).
    pub fn mkdir(&self, p: &WorkspacePath, parents: bool) -> Result<()> {
        if parents {
            return self.dir(p, true).map(drop);
        }
        let (parent, name) = p.split().ok_or_else(|| Error::AlreadyExists("the workspace root".into()))?;
        let pfd = self.dir(&parent, false)?;
        nix::sys::stat::mkdirat(pfd.as_fd(), name, Mode::from_bits_truncate(0o755))
            .map_err(|e| path_err(p, e, "creating directory"))?;
        let fd = openat2_retry(pfd.as_fd(), name, how(OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW))
            .map_err(|e| path_err(p, e, "creating directory"))?;
        self.chown(fd.as_fd(), p)
    }

    /// Atomically writes `data` to `p`: temp file, fsync, chown, rename, fsync of the directory.
    pub fn write(&self, p: &WorkspacePath, data: &[u8], opts: WriteOptions) -> Result<()> {
        let (parent, name) = p.split().ok_or_else(|| Error::InvalidPath {
            path: ".".into(),
            reason: "cannot write to the workspace root".into(),
        })?;
        let pfd = self.dir(&parent, opts.create_parents)?;
        let tmp = temp_name(name);
        let fd = openat2_retry(
            pfd.as_fd(),
            tmp.as_os_str(),
            how(OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW)
                .mode(Mode::from_bits_truncate(0o600)),
        )
        .map_err(|e| path_err(p, e, "writing"))?;
        let result = (|| {
            self.chown(fd.as_fd(), p)?;
            nix::sys::stat::fchmod(fd.as_fd(), Mode::from_bits_truncate(opts.mode & 0o777))
                .map_err(|e| path_err(p, e, "chmod"))?;
            let mut f = File::from(fd);
            f.write_all(data).map_err(|e| Error::io(format!("writing {p}"), e))?;
            f.sync_all().map_err(|e| Error::io(format!("syncing {p}"), e))?;
            nix::fcntl::renameat(pfd.as_fd(), tmp.as_os_str(), pfd.as_fd(), name)
                .map_err(|e| path_err(p, e, "renaming into"))?;
            Ok(())
        })();
        if result.is_err() {
            let _ = nix::unistd::unlinkat(pfd.as_fd(), tmp.as_os_str(), UnlinkatFlags::NoRemoveDir);
            return result;
        }
        // Make the rename durable: fsync the directory (needs a real descriptor, not O_PATH).
        if let Ok(d) = openat2_retry(pfd.as_fd(), ".", how(OFlag::O_RDONLY | OFlag::O_DIRECTORY)) {
            let _ = nix::unistd::fsync(d.as_fd());
        }
        Ok(())
    }

    /// Describes `p` without following a final symlink.
    pub fn stat(&self, p: &WorkspacePath) -> Result<DirEntry> {
        let (dirfd, name): (OwnedFd, OsString) = match p.split() {
            Some((parent, name)) => (self.dir(&parent, false)?, name.to_owned()),
            None => (self.dir(&WorkspacePath::root(), false)?, OsString::from(".")),
        };
        let st = fstatat(dirfd.as_fd(), name.as_os_str(), nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW)
            .map_err(|e| path_err(p, e, "stat"))?;
        Ok(entry(&name, &st))
    }

    /// Lists a directory, sorted by name.
    pub fn list(&self, p: &WorkspacePath) -> Result<Vec<DirEntry>> {
        let fd = self.open_at(p, OFlag::O_RDONLY | OFlag::O_DIRECTORY, "listing")?;
        let dup = fd.try_clone().map_err(|e| Error::io(format!("listing {p}"), e))?;
        let mut dir = nix::dir::Dir::from_fd(dup).map_err(|e| path_err(p, e, "listing"))?;
        let mut out = Vec::new();
        for ent in dir.iter() {
            let ent = ent.map_err(|e| path_err(p, e, "listing"))?;
            let name = OsStr::from_bytes(ent.file_name().to_bytes());
            if name == "." || name == ".." {
                continue;
            }
            match fstatat(fd.as_fd(), name, nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW) {
                Ok(st) => out.push(entry(name, &st)),
                Err(Errno::ENOENT) => continue, // removed while listing
                Err(e) => return Err(path_err(p, e, "listing")),
            }
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    /// Deletes a file, symlink or (empty, or with `recursive`) directory. Never follows symlinks.
    pub fn remove(&self, p: &WorkspacePath, recursive: bool) -> Result<()> {
        let (parent, name) = p.split().ok_or_else(|| Error::InvalidPath {
            path: ".".into(),
            reason: "cannot delete the workspace root".into(),
        })?;
        let pfd = self.dir(&parent, false)?;
        match nix::unistd::unlinkat(pfd.as_fd(), name, UnlinkatFlags::NoRemoveDir) {
            Ok(()) => Ok(()),
            Err(Errno::EISDIR) => {
                if recursive {
                    remove_tree(pfd.as_fd(), name, 0).map_err(|e| path_err(p, e, "deleting"))
                } else {
                    nix::unistd::unlinkat(pfd.as_fd(), name, UnlinkatFlags::RemoveDir)
                        .map_err(|e| path_err(p, e, "deleting"))
                }
            }
            Err(e) => Err(path_err(p, e, "deleting")),
        }
    }
}

/// Creates `dir` as a directory owned by `uid:gid`, mode 0700, atomically: it is built under a
/// temporary name beside it and renamed into place with `RENAME_NOREPLACE`, so no crash or race
/// leaves a directory with the wrong owner or mode at `dir`. An existing `dir` is an
/// [`Error::AlreadyExists`] (callers decide whether an existing one is acceptable).
pub fn create_private_dir(dir: &Path, uid: u32, gid: u32) -> Result<()> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    let parent = dir.parent().ok_or_else(|| Error::InvalidRequest(format!("{} has no parent", dir.display())))?;
    let name = dir.file_name().ok_or_else(|| Error::InvalidRequest(format!("{} has no name", dir.display())))?;
    let tmp = parent.join(temp_name(name));
    std::fs::DirBuilder::new()
        .mode(0o700)
        .create(&tmp)
        .map_err(|e| Error::io(format!("creating {}", tmp.display()), e))?;
    let finish = || -> Result<()> {
        std::os::unix::fs::chown(&tmp, Some(uid), Some(gid))
            .map_err(|e| Error::io(format!("giving {} to uid {uid}", tmp.display()), e))?;
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o700))
            .map_err(|e| Error::io(format!("making {} mode 0700", tmp.display()), e))?;
        nix::fcntl::renameat2(
            nix::fcntl::AT_FDCWD,
            &tmp,
            nix::fcntl::AT_FDCWD,
            dir,
            nix::fcntl::RenameFlags::RENAME_NOREPLACE,
        )
        .map_err(|e| match e {
            Errno::EEXIST => Error::AlreadyExists(dir.display().to_string()),
            e => Error::errno(format!("moving the new directory to {}", dir.display()), e),
        })
    };
    finish().inspect_err(|_| {
        let _ = std::fs::remove_dir(&tmp);
    })?;
    if let Ok(d) = File::open(parent) {
        let _ = d.sync_all();
    }
    Ok(())
}

/// Writes a host-side file (state, records, markers) so that a crash or `kill -9` at any point
/// leaves either the old content or the new, never a mix: a temporary file beside it
/// (`O_EXCL`, `mode`), fsync, rename over `path`, fsync of the directory.
pub fn write_atomic(path: &Path, data: &[u8], mode: u32) -> Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let parent = path.parent().ok_or_else(|| Error::InvalidRequest(format!("{} has no parent", path.display())))?;
    let name = path.file_name().ok_or_else(|| Error::InvalidRequest(format!("{} has no name", path.display())))?;
    let tmp = parent.join(temp_name(name));
    let write = || -> std::io::Result<()> {
        let mut f = std::fs::OpenOptions::new().write(true).create_new(true).mode(mode).open(&tmp)?;
        f.write_all(data)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    };
    write().map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        Error::io(format!("writing {}", path.display()), e)
    })?;
    File::open(parent).and_then(|d| d.sync_all()).map_err(|e| Error::io(format!("syncing {}", parent.display()), e))
}

fn temp_name(name: &OsStr) -> OsString {
    let mut rnd = [0u8; 6];
    let _ = getrandom::fill(&mut rnd);
    let hex: String = rnd.iter().map(|b| format!("{b:02x}")).collect();
    let mut short: Vec<u8> = name.as_bytes().iter().copied().take(200).collect();
    short.retain(|b| *b != b'/');
    let mut s = OsString::from(".");
    s.push(OsStr::from_bytes(&short));
    s.push(format!(".warren-tmp-{hex}"));
    s
}

fn remove_tree(parent: BorrowedFd<'_>, name: &OsStr, depth: usize) -> nix::Result<()> {
    if depth > 4096 {
        return Err(Errno::ELOOP);
    }
    let fd = nix::fcntl::openat(
        parent,
        name,
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::empty(),
    )?;
    let mut dir = nix::dir::Dir::from_fd(fd.try_clone().map_err(|_| Errno::EMFILE)?)?;
    let names: Vec<OsString> = dir
        .iter()
        .filter_map(|e| e.ok())
        .map(|e| OsStr::from_bytes(e.file_name().to_bytes()).to_owned())
        .filter(|n| n != "." && n != "..")
        .collect();
    for child in names {
        match nix::unistd::unlinkat(fd.as_fd(), child.as_os_str(), UnlinkatFlags::NoRemoveDir) {
            Ok(()) | Err(Errno::ENOENT) => {}
            Err(Errno::EISDIR) => remove_tree(fd.as_fd(), &child, depth + 1)?,
            Err(e) => return Err(e),
        }
    }
    nix::unistd::unlinkat(parent, name, UnlinkatFlags::RemoveDir)
}

fn entry(name: &OsStr, st: &nix::sys::stat::FileStat) -> DirEntry {
    let fmt = SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT;
    let kind = if fmt == SFlag::S_IFREG {
        FileKind::File
    } else if fmt == SFlag::S_IFDIR {
        FileKind::Dir
    } else if fmt == SFlag::S_IFLNK {
        FileKind::Symlink
    } else {
        FileKind::Other
    };
    DirEntry {
        name: name.to_string_lossy().into_owned(),
        kind,
        size: st.st_size as u64,
        mode: st.st_mode & 0o7777,
        mtime: st.st_mtime,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wp(s: &str) -> WorkspacePath {
        WorkspacePath::new(s).expect("valid path")
    }

    #[test]
    fn write_read_list_remove() {
        let t = tempfile::tempdir().expect("tempdir");
        let c = Confined::open(t.path(), None).expect("open");
        c.write(&wp("a/b/c.txt"), b"hello", WriteOptions::default()).expect("write");
        assert_eq!(c.read(&wp("a/b/c.txt"), 100).expect("read"), b"hello");
        c.write(&wp("a/b/c.txt"), b"bye", WriteOptions { mode: 0o4755, create_parents: false }).expect("overwrite");
        assert_eq!(std::fs::read(t.path().join("a/b/c.txt")).expect("host read"), b"bye");
        let st = c.stat(&wp("a/b/c.txt")).expect("stat");
        assert_eq!(st.mode, 0o755, "setuid bit is masked");
        let names: Vec<_> = c.list(&wp("a/b")).expect("list").into_iter().map(|e| e.name).collect();
        assert_eq!(names, vec!["c.txt"], "no temp files left behind");
        assert!(matches!(c.remove(&wp("a"), false), Err(Error::Conflict(_))));
        c.remove(&wp("a"), true).expect("rm -r");
        assert!(matches!(c.read(&wp("a/b/c.txt"), 100), Err(Error::NotFound(_))));
        assert!(c.read(&wp("x"), 100).is_err());
    }

    #[test]
    fn symlinks_cannot_lead_outside() {
        let outer = tempfile::tempdir().expect("tempdir");
        let ws = outer.path().join("ws");
        std::fs::create_dir(&ws).expect("mkdir");
        std::fs::write(outer.path().join("secret"), b"s3cret").expect("write secret");
        std::os::unix::fs::symlink("../secret", ws.join("rel")).expect("symlink");
        std::os::unix::fs::symlink(outer.path().join("secret"), ws.join("abs")).expect("symlink");
        std::os::unix::fs::symlink("..", ws.join("up")).expect("symlink");
        std::os::unix::fs::symlink("/proc/self/root/etc", ws.join("magic")).expect("symlink");
        let c = Confined::open(&ws, None).expect("open");
        for p in ["rel", "abs", "up/secret", "magic/hostname"] {
            let e = c.read(&wp(p), 100).expect_err(p);
            assert!(matches!(e, Error::InvalidPath { .. }), "{p}: {e}");
        }
        for p in ["up/new", "abs"] {
            // writing through an escaping parent fails; writing *over* a symlink replaces the link.
            let r = c.write(&wp(p), b"x", WriteOptions::default());
            if p == "abs" {
                r.expect("replaces the symlink itself");
                assert_eq!(std::fs::read(outer.path().join("secret")).expect("read"), b"s3cret");
            } else {
                assert!(matches!(r, Err(Error::InvalidPath { .. })), "{p}: {r:?}");
            }
        }
        assert!(c.list(&wp("up")).is_err());
        // An inner symlink that stays inside works.
        std::fs::write(ws.join("real"), b"ok").expect("write");
        std::os::unix::fs::symlink("real", ws.join("inner")).expect("symlink");
        assert_eq!(c.read(&wp("inner"), 10).expect("inner link"), b"ok");
        // Deleting a symlink to a directory outside deletes the link, not the target.
        c.remove(&wp("up"), true).expect("remove link");
        assert!(outer.path().join("secret").exists());
    }

    #[test]
    fn fifo_is_not_read() {
        let t = tempfile::tempdir().expect("tempdir");
        nix::unistd::mkfifo(&t.path().join("f"), Mode::from_bits_truncate(0o600)).expect("mkfifo");
        let c = Confined::open(t.path(), None).expect("open");
        assert!(matches!(c.read(&wp("f"), 10), Err(Error::InvalidPath { .. })));
    }

    #[test]
    fn read_limit() {
        let t = tempfile::tempdir().expect("tempdir");
        std::fs::write(t.path().join("big"), vec![0u8; 1000]).expect("write");
        let c = Confined::open(t.path(), None).expect("open");
        assert!(matches!(c.read(&wp("big"), 999), Err(Error::InvalidRequest(_))));
        assert_eq!(c.read(&wp("big"), 1000).expect("read").len(), 1000);
    }
}
