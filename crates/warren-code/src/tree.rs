//! Reading and writing a directory tree without ever leaving it.
//!
//! Every open is `openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS)` from a
//! descriptor of the tree's root (optionally `RESOLVE_NO_XDEV` too), so no symlink, however it
//! was planted or swapped in, is ever followed: symlinks are read as links (`readlinkat`) and
//! written as links (`symlinkat`). Regular files are opened `O_NOFOLLOW | O_NONBLOCK` and checked
//! with `fstat` on the opened descriptor (a FIFO or device swapped in is refused, never read).
//! When an owner is given, only entries that uid owns are read: a hard link to a file of someone
//! else (root's `/etc/shadow`, say) is refused even if it sits inside the tree.
//!
//! Writes go to a temporary name in the target directory (`O_CREAT | O_EXCL | O_NOFOLLOW`), are
//! fsynced, given their owner and mode and renamed over the final name (which replaces a symlink
//! there rather than following it), then the directory is fsynced. Whole blocks of zeros are
//! left as holes, so a sparse file stays sparse.
//!
//! # Symlinks written by a sync
//!
//! A symlink is copied into a session when its target, read lexically, stays inside the project
//! ([`link_stays_inside`]): inside the sandbox a link leading out reaches only the sandbox's own
//! files. Writing one into the host project needs more, because on the host a link is resolved
//! through every other link on the way. [`link_resolves_inside`] resolves the target the way the
//! kernel would once the sync is done, component by component, against the tree being synced:
//!
//! * an absolute (or empty) target is refused; `..` never climbs above the project's root;
//! * a symlink of the tree is followed (its target spliced in; at most [`MAX_LINK_FOLLOWS`] in
//!   all, so a loop is refused); a regular file of the tree is refused anywhere but last;
//! * where the tree has an entry this sync does not change, the host must agree: a symlink on
//!   the host in place of a directory or file of the tree (or a parent that is one), or a
//!   symlink of the tree the host changed, is refused;
//! * a component the tree does not have is looked up on the host, which may hold what was never
//!   copied in (a symlink leading out that the copy left out, an excluded directory, `.git`): a
//!   symlink there is refused, and so is anything but a directory before the last component;
//! * an entry this sync deletes or replaces (and whatever is beneath it) counts as gone;
//! * a component absent from both is fine: the link dangles, inside the project, and what
//!   follows is resolved lexically.

use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io::Read as _;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::Path;

use nix::errno::Errno;
use nix::fcntl::{AtFlags, OFlag, OpenHow, ResolveFlag};
use nix::sys::stat::{fstat, fstatat, FileStat, Mode, SFlag};
use nix::unistd::{Gid, Uid, UnlinkatFlags};
use warren_core::{Error, Result};

/// Most entries a walk visits; a bigger tree is refused (it would not be a source project).
pub const MAX_ENTRIES: usize = 1_000_000;
/// Longest relative path handled (Linux `PATH_MAX`).
const MAX_PATH: usize = 4096;

/// What a walk looks at and skips.
#[derive(Clone, Debug, Default)]
pub(crate) struct WalkOptions {
    /// Names skipped at any depth (besides `.git` in any case, which is always skipped).
    pub exclude: Vec<String>,
    /// Only entries this uid owns (others are skipped with a reason).
    pub owner: Option<u32>,
    /// Do not cross mount points.
    pub no_xdev: bool,
}

/// One entry found by [`walk`].
#[derive(Debug)]
pub(crate) enum Found<'a> {
    /// A directory (visited before its contents).
    Dir { st: FileStat },
    /// A regular file; open it with [`read_file`] on `dir` and `name`.
    File { dir: BorrowedFd<'a>, name: &'a OsStr, st: FileStat },
    /// A symbolic link, with its target.
    Symlink { target: Vec<u8> },
}

/// `openat2` flags that never follow a symlink and never leave the root.
pub(crate) fn how(flags: OFlag, no_xdev: bool) -> OpenHow {
    let mut r = ResolveFlag::RESOLVE_BENEATH | ResolveFlag::RESOLVE_NO_SYMLINKS | ResolveFlag::RESOLVE_NO_MAGICLINKS;
    if no_xdev {
        r |= ResolveFlag::RESOLVE_NO_XDEV;
    }
    OpenHow::new().flags(flags | OFlag::O_CLOEXEC).resolve(r)
}

/// `openat2`, retried on `EAGAIN` (a concurrent rename anywhere can make the kernel ask).
pub(crate) fn openat2<P: ?Sized + nix::NixPath>(dir: BorrowedFd<'_>, path: &P, how: OpenHow) -> nix::Result<OwnedFd> {
    let mut tries = 0;
    loop {
        match nix::fcntl::openat2(dir, path, how) {
            Err(Errno::EAGAIN) if tries < 128 => {
                tries += 1;
                std::thread::yield_now();
            }
            r => return r,
        }
    }
}

/// Opens a directory to work beneath (an `O_PATH` descriptor). The path must be absolute and
/// is resolved without following any symlink in any component (callers pass canonical paths:
/// a symlink found there later, swapped in by whoever controls a parent directory, is refused).
pub(crate) fn open_root(dir: &Path) -> Result<OwnedFd> {
    if !dir.is_absolute() {
        return Err(Error::InvalidRequest(format!("{} is not an absolute path", dir.display())));
    }
    let how = OpenHow::new()
        .flags(OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC)
        .resolve(ResolveFlag::RESOLVE_NO_SYMLINKS | ResolveFlag::RESOLVE_NO_MAGICLINKS);
    openat2(nix::fcntl::AT_FDCWD, dir, how).map_err(|e| match e {
        Errno::ENOENT => Error::NotFound(format!("directory {}", dir.display())),
        Errno::ENOTDIR | Errno::ELOOP => Error::InvalidRequest(format!(
            "{} is not a directory, or a component of it is now a symlink (it was resolved when the session \
             started; nothing is written through a symlink)",
            dir.display()
        )),
        e => Error::errno(format!("opening {}", dir.display()), e),
    })
}

/// Whether a name is skipped everywhere: `.git` in any letter case, or an excluded name.
pub(crate) fn excluded(name: &[u8], exclude: &[String]) -> bool {
    name.eq_ignore_ascii_case(b".git") || exclude.iter().any(|e| e.as_bytes() == name)
}

/// Whether a relative path has a skipped component.
pub(crate) fn path_excluded(path: &[u8], exclude: &[String]) -> bool {
    path.split(|b| *b == b'/').any(|c| c.is_empty() || c == b"." || c == b".." || excluded(c, exclude))
}

pub(crate) fn kind_of(st: &FileStat) -> SFlag {
    SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT
}

fn rel_str(path: &[u8]) -> String {
    String::from_utf8_lossy(path).into_owned()
}

fn join(dir: &[u8], name: &[u8]) -> Vec<u8> {
    let mut p = Vec::with_capacity(dir.len() + 1 + name.len());
    if !dir.is_empty() {
        p.extend_from_slice(dir);
        p.push(b'/');
    }
    p.extend_from_slice(name);
    p
}

/// Walks the tree beneath `root` depth-first, names in byte order, calling `visit` for every
/// directory, regular file and symlink (with its path relative to the root, `/`-separated).
/// Anything else, and anything the options exclude or the owner check refuses, goes to
/// `skip(path, reason)`. Entries that vanish during the walk are left out silently.
pub(crate) fn walk(
    root: BorrowedFd<'_>,
    opts: &WalkOptions,
    visit: &mut dyn FnMut(&[u8], Found<'_>) -> Result<()>,
    skip: &mut dyn FnMut(&[u8], String),
) -> Result<()> {
    let mut stack: Vec<Vec<u8>> = vec![Vec::new()];
    let mut seen = 0usize;
    while let Some(rel) = stack.pop() {
        let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW;
        let dirfd = match if rel.is_empty() {
            openat2(root, ".", how(flags, opts.no_xdev))
        } else {
            openat2(root, OsStr::from_bytes(&rel), how(flags, opts.no_xdev))
        } {
            Ok(fd) => fd,
            Err(Errno::ENOENT) if !rel.is_empty() => continue,
            Err(e) if !rel.is_empty() => {
                skip(
                    &rel,
                    format!("the directory could not be opened beneath the tree ({e}); it changed while being read"),
                );
                continue;
            }
            Err(e) => return Err(Error::errno("opening the tree's root directory", e)),
        };
        let st = fstat(dirfd.as_fd()).map_err(|e| Error::errno(format!("stat of {}", rel_str(&rel)), e))?;
        if let Some(uid) = opts.owner {
            if st.st_uid != uid {
                if rel.is_empty() {
                    return Err(Error::Internal(format!(
                        "the tree's root belongs to uid {}, not to the expected uid {uid}",
                        st.st_uid
                    )));
                }
                skip(&rel, format!("owned by uid {}, not by the workspace", st.st_uid));
                continue;
            }
        }
        if !rel.is_empty() {
            visit(&rel, Found::Dir { st })?;
        }
        let names = list_names(dirfd.as_fd()).map_err(|e| Error::errno(format!("listing {}", rel_str(&rel)), e))?;
        let mut subdirs = Vec::new();
        for name in names {
            seen += 1;
            if seen > MAX_ENTRIES {
                return Err(Error::InvalidRequest(format!(
                    "the tree has more than {MAX_ENTRIES} entries; exclude generated directories (--exclude NAME)"
                )));
            }
            let path = join(&rel, name.as_bytes());
            if excluded(name.as_bytes(), &opts.exclude) {
                continue;
            }
            if path.len() > MAX_PATH {
                skip(&path, "the path is longer than 4096 bytes".into());
                continue;
            }
            let st = match fstatat(dirfd.as_fd(), name.as_os_str(), AtFlags::AT_SYMLINK_NOFOLLOW) {
                Ok(st) => st,
                Err(Errno::ENOENT) => continue,
                Err(e) => {
                    skip(&path, format!("stat failed: {e}"));
                    continue;
                }
            };
            let kind = kind_of(&st);
            if let Some(uid) = opts.owner {
                if st.st_uid != uid && kind != SFlag::S_IFDIR {
                    skip(&path, format!("owned by uid {}, not by the workspace", st.st_uid));
                    continue;
                }
            }
            if kind == SFlag::S_IFDIR {
                subdirs.push(path);
            } else if kind == SFlag::S_IFREG {
                visit(&path, Found::File { dir: dirfd.as_fd(), name: name.as_os_str(), st })?;
            } else if kind == SFlag::S_IFLNK {
                match nix::fcntl::readlinkat(dirfd.as_fd(), name.as_os_str()) {
                    Ok(t) => visit(&path, Found::Symlink { target: t.into_vec() })?,
                    Err(Errno::ENOENT) => continue,
                    Err(e) => skip(&path, format!("the symlink could not be read ({e}); it changed while being read")),
                }
            } else {
                skip(&path, "not a regular file, directory or symlink (FIFO, socket or device)".into());
            }
        }
        // Depth-first in name order: push in reverse so the smallest name is visited first.
        stack.extend(subdirs.into_iter().rev());
    }
    Ok(())
}

fn list_names(dirfd: BorrowedFd<'_>) -> nix::Result<Vec<OsString>> {
    let dup = dirfd.try_clone_to_owned().map_err(|_| Errno::EMFILE)?;
    let mut dir = nix::dir::Dir::from_fd(dup)?;
    let mut names = Vec::new();
    for ent in dir.iter() {
        let ent = ent?;
        let name = ent.file_name().to_bytes();
        if name != b"." && name != b".." {
            names.push(OsStr::from_bytes(name).to_owned());
        }
    }
    names.sort();
    Ok(names)
}

/// What reading a regular file gave.
#[derive(Debug)]
pub(crate) enum Read {
    /// Its content and its status after the read; `stable` when nothing about it changed while
    /// it was read.
    Data { data: Vec<u8>, st: FileStat, stable: bool },
    /// It vanished.
    Gone,
    /// It could not be read safely, and why.
    Refused(String),
}

/// Reads the regular file `name` in `dir` (no symlink followed, no FIFO or device read, at
/// most `max` bytes, only if `owner` owns it when given).
pub(crate) fn read_file(dir: BorrowedFd<'_>, name: &OsStr, owner: Option<u32>, max: u64, no_xdev: bool) -> Read {
    let flags = OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_NONBLOCK | OFlag::O_NOCTTY;
    let fd = match openat2(dir, name, how(flags, no_xdev)) {
        Ok(fd) => fd,
        Err(Errno::ENOENT) => return Read::Gone,
        Err(e) => return Read::Refused(format!("could not be opened safely ({e}); it changed while being read")),
    };
    let before = match fstat(fd.as_fd()) {
        Ok(st) => st,
        Err(e) => return Read::Refused(format!("stat failed: {e}")),
    };
    if kind_of(&before) != SFlag::S_IFREG {
        return Read::Refused("not a regular file when opened (it changed while being read)".into());
    }
    if let Some(uid) = owner {
        if before.st_uid != uid {
            return Read::Refused(format!("owned by uid {}, not by the workspace", before.st_uid));
        }
    }
    let size = before.st_size.max(0) as u64;
    if size > max {
        return Read::Refused(format!("{size} bytes, more than the {max}-byte limit for a tracked file"));
    }
    let mut data = Vec::with_capacity(size as usize);
    let mut f = File::from(fd);
    if let Err(e) = (&mut f).take(max + 1).read_to_end(&mut data) {
        return Read::Refused(format!("reading failed: {e}"));
    }
    if data.len() as u64 > max {
        return Read::Refused(format!("grew past the {max}-byte limit for a tracked file while being read"));
    }
    let after = match fstat(f.as_fd()) {
        Ok(st) => st,
        Err(e) => return Read::Refused(format!("stat failed: {e}")),
    };
    let stable = same_stat(&before, &after) && after.st_size.max(0) as u64 == data.len() as u64;
    Read::Data { data, st: after, stable }
}

fn same_stat(a: &FileStat, b: &FileStat) -> bool {
    (a.st_dev, a.st_ino, a.st_size, a.st_mode, a.st_uid, a.st_mtime, a.st_mtime_nsec, a.st_ctime, a.st_ctime_nsec)
        == (
            b.st_dev,
            b.st_ino,
            b.st_size,
            b.st_mode,
            b.st_uid,
            b.st_mtime,
            b.st_mtime_nsec,
            b.st_ctime,
            b.st_ctime_nsec,
        )
}

/// Who gets files and directories created by a write.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Owner {
    /// This uid and gid.
    Fixed(u32, u32),
    /// The replaced entry's owner, else the parent directory's.
    Inherit,
}

fn temp_name(name: &[u8]) -> OsString {
    let mut rnd = [0u8; 6];
    let _ = getrandom::fill(&mut rnd);
    let hex: String = rnd.iter().map(|b| format!("{b:02x}")).collect();
    let mut s = b".".to_vec();
    s.extend(name.iter().copied().take(180));
    s.extend_from_slice(format!(".warren-tmp-{hex}").as_bytes());
    OsString::from_vec(s)
}

fn chown_fd(fd: BorrowedFd<'_>, uid: u32, gid: u32) -> nix::Result<()> {
    match nix::unistd::fchown(fd, Some(Uid::from_raw(uid)), Some(Gid::from_raw(gid))) {
        // Not root: files stay the caller's, which is what a non-root caller can give.
        Err(Errno::EPERM) => Ok(()),
        r => r,
    }
}

fn err_at(path: &[u8], doing: &str, e: Errno) -> Error {
    let p = rel_str(path);
    match e {
        Errno::ELOOP | Errno::EXDEV => Error::InvalidPath {
            path: p,
            reason: format!("{doing}: a component is a symlink (never followed) or leaves the directory"),
        },
        Errno::ENOTDIR => Error::InvalidPath { path: p, reason: format!("{doing}: a parent is not a directory") },
        Errno::EISDIR => Error::InvalidPath { path: p, reason: format!("{doing}: it is a directory") },
        Errno::ENOTEMPTY | Errno::EEXIST => {
            Error::Conflict(format!("{p}: {doing}: a non-empty directory is in the way"))
        }
        Errno::ENOSPC | Errno::EDQUOT => Error::Conflict(format!("{p}: {doing}: no space left")),
        e => Error::errno(format!("{doing} {p}"), e),
    }
}

/// Opens (creating missing ones, mode `mode`, given to `owner`) the directories of `rel_dir`
/// beneath `root`, one component at a time, never through a symlink. Returns a readable
/// descriptor of the last one.
pub(crate) fn make_dirs(root: BorrowedFd<'_>, rel_dir: &[u8], owner: Owner, mode: u32) -> Result<OwnedFd> {
    let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW;
    let mut cur = openat2(root, ".", how(flags, false)).map_err(|e| err_at(b".", "opening the root", e))?;
    if rel_dir.is_empty() {
        return Ok(cur);
    }
    let mut sofar = Vec::new();
    for comp in rel_dir.split(|b| *b == b'/') {
        if comp.is_empty() || comp == b"." || comp == b".." {
            return Err(Error::InvalidPath { path: rel_str(rel_dir), reason: "empty, '.' or '..' component".into() });
        }
        sofar = join(&sofar, comp);
        let name = OsStr::from_bytes(comp);
        let created = match nix::sys::stat::mkdirat(cur.as_fd(), name, Mode::from_bits_truncate(0o700)) {
            Ok(()) => true,
            Err(Errno::EEXIST) => false,
            Err(e) => return Err(err_at(&sofar, "creating the directory", e)),
        };
        let next =
            openat2(cur.as_fd(), name, how(flags, false)).map_err(|e| err_at(&sofar, "opening the directory", e))?;
        if created {
            let (uid, gid) = match owner {
                Owner::Fixed(u, g) => (u, g),
                Owner::Inherit => {
                    let st = fstat(cur.as_fd()).map_err(|e| err_at(&sofar, "stat of the parent", e))?;
                    (st.st_uid, st.st_gid)
                }
            };
            chown_fd(next.as_fd(), uid, gid).map_err(|e| err_at(&sofar, "chown", e))?;
            nix::sys::stat::fchmod(next.as_fd(), Mode::from_bits_truncate(mode & 0o777))
                .map_err(|e| err_at(&sofar, "chmod", e))?;
        }
        cur = next;
    }
    Ok(cur)
}

/// The owner a new entry `name` in `dir` gets.
fn owner_of(dir: BorrowedFd<'_>, name: &OsStr, owner: Owner, path: &[u8]) -> Result<(u32, u32)> {
    match owner {
        Owner::Fixed(u, g) => Ok((u, g)),
        Owner::Inherit => match fstatat(dir, name, AtFlags::AT_SYMLINK_NOFOLLOW) {
            Ok(st) => Ok((st.st_uid, st.st_gid)),
            Err(Errno::ENOENT) => {
                let st = fstat(dir).map_err(|e| err_at(path, "stat of the parent", e))?;
                Ok((st.st_uid, st.st_gid))
            }
            Err(e) => Err(err_at(path, "stat", e)),
        },
    }
}

/// Atomically writes a regular file `name` in `dir` with permission bits `mode`, its content
/// read from `data`.
pub(crate) fn write_file(
    dir: BorrowedFd<'_>,
    name: &OsStr,
    data: &mut dyn std::io::Read,
    mode: u32,
    owner: Owner,
    path: &[u8],
) -> Result<u64> {
    let (uid, gid) = owner_of(dir, name, owner, path)?;
    let tmp = temp_name(name.as_bytes());
    let flags = OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW;
    let fd = openat2(dir, tmp.as_os_str(), how(flags, false).mode(Mode::from_bits_truncate(0o600)))
        .map_err(|e| err_at(path, "creating a temporary file", e))?;
    let result = (|| {
        chown_fd(fd.as_fd(), uid, gid).map_err(|e| err_at(path, "chown", e))?;
        nix::sys::stat::fchmod(fd.as_fd(), Mode::from_bits_truncate(mode & 0o777))
            .map_err(|e| err_at(path, "chmod", e))?;
        let mut f = File::from(fd);
        let n = copy_sparse(data, &mut f).map_err(|e| Error::io(format!("writing {}", rel_str(path)), e))?;
        f.sync_all().map_err(|e| Error::io(format!("syncing {}", rel_str(path)), e))?;
        nix::fcntl::renameat(dir, tmp.as_os_str(), dir, name).map_err(|e| err_at(path, "renaming into place", e))?;
        Ok(n)
    })();
    if result.is_err() {
        let _ = nix::unistd::unlinkat(dir, tmp.as_os_str(), UnlinkatFlags::NoRemoveDir);
        return result;
    }
    let _ = nix::unistd::fsync(dir);
    result
}

/// Fills `buf` from `r` as far as it goes; the bytes read (fewer only at the end).
pub(crate) fn read_full(r: &mut dyn std::io::Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

/// Copies `data` into the new, empty file `f` a buffer at a time, leaving holes where whole
/// blocks of zeros are (a sparse file stays sparse). Returns the bytes copied.
fn copy_sparse(data: &mut dyn std::io::Read, f: &mut File) -> std::io::Result<u64> {
    use std::io::{Seek as _, SeekFrom, Write as _};
    const BLOCK: usize = 64 * 1024;
    let mut buf = vec![0u8; BLOCK];
    let mut total = 0u64;
    loop {
        // Fill a whole block (a short read must not misalign the holes).
        let n = read_full(data, &mut buf)?;
        if n == 0 {
            break;
        }
        if buf[..n].iter().all(|b| *b == 0) {
            f.seek(SeekFrom::Current(n as i64))?;
        } else {
            f.write_all(&buf[..n])?;
        }
        total += n as u64;
        if n < BLOCK {
            break;
        }
    }
    // A file that ends in a hole gets its length.
    f.set_len(total)?;
    Ok(total)
}

/// Opens the regular file `name` in `dir` for reading (no symlink followed, FIFOs and devices
/// refused).
pub(crate) fn open_file(dir: BorrowedFd<'_>, name: &OsStr) -> std::result::Result<(File, FileStat), String> {
    let flags = OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_NONBLOCK | OFlag::O_NOCTTY;
    let fd = openat2(dir, name, how(flags, false)).map_err(|e| format!("could not be opened safely: {e}"))?;
    let st = fstat(fd.as_fd()).map_err(|e| format!("stat failed: {e}"))?;
    if kind_of(&st) != SFlag::S_IFREG {
        return Err("not a regular file when opened".into());
    }
    Ok((File::from(fd), st))
}

/// Atomically makes `name` in `dir` a symlink to `target`.
pub(crate) fn write_symlink(dir: BorrowedFd<'_>, name: &OsStr, target: &[u8], owner: Owner, path: &[u8]) -> Result<()> {
    let (uid, gid) = owner_of(dir, name, owner, path)?;
    let tmp = temp_name(name.as_bytes());
    nix::unistd::symlinkat(OsStr::from_bytes(target), dir, tmp.as_os_str())
        .map_err(|e| err_at(path, "creating a symlink", e))?;
    let result = (|| {
        match nix::unistd::fchownat(
            dir,
            tmp.as_os_str(),
            Some(Uid::from_raw(uid)),
            Some(Gid::from_raw(gid)),
            AtFlags::AT_SYMLINK_NOFOLLOW,
        ) {
            Ok(()) | Err(Errno::EPERM) => {}
            Err(e) => return Err(err_at(path, "chown", e)),
        }
        nix::fcntl::renameat(dir, tmp.as_os_str(), dir, name).map_err(|e| err_at(path, "renaming into place", e))
    })();
    if result.is_err() {
        let _ = nix::unistd::unlinkat(dir, tmp.as_os_str(), UnlinkatFlags::NoRemoveDir);
        return result;
    }
    let _ = nix::unistd::fsync(dir);
    Ok(())
}

/// The directory part and the name of a relative path.
pub(crate) fn split(path: &[u8]) -> (&[u8], &[u8]) {
    match path.iter().rposition(|b| *b == b'/') {
        Some(i) => (&path[..i], &path[i + 1..]),
        None => (&[], path),
    }
}

/// Opens the existing parent directory of `path` beneath `root` (never through a symlink).
pub(crate) fn open_parent<'p>(root: BorrowedFd<'_>, path: &'p [u8]) -> nix::Result<(OwnedFd, &'p OsStr)> {
    let (dir, name) = split(path);
    let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW;
    let fd = if dir.is_empty() {
        openat2(root, ".", how(flags, false))?
    } else {
        openat2(root, OsStr::from_bytes(dir), how(flags, false))?
    };
    Ok((fd, OsStr::from_bytes(name)))
}

/// What is at a path now.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Current {
    /// Nothing.
    Absent,
    /// A regular file: its size and whether the owner may execute it (its content is compared
    /// by the caller, streamed: see [`open_regular`]).
    File { size: u64, exec: bool },
    /// A symlink and its target.
    Symlink(Vec<u8>),
    /// A directory.
    Dir,
    /// A parent of the path (`parent`) is a symlink or not a directory: the path cannot be
    /// reached without following a symlink or going through a non-directory.
    Blocked { parent: Vec<u8>, reason: String },
    /// Something else (a FIFO, socket or device), or a failure to look (the reason).
    Other(String),
}

/// Looks at `path` beneath `root` without following any symlink.
pub(crate) fn current(root: BorrowedFd<'_>, path: &[u8]) -> Current {
    let (dirfd, name) = match open_parent(root, path) {
        Ok(x) => x,
        Err(Errno::ENOENT) => return Current::Absent,
        Err(e) => return blocked_parent(root, path, e),
    };
    let st = match fstatat(dirfd.as_fd(), name, AtFlags::AT_SYMLINK_NOFOLLOW) {
        Ok(st) => st,
        Err(Errno::ENOENT) => return Current::Absent,
        Err(e) => return Current::Other(format!("stat failed on the host: {e}")),
    };
    let kind = kind_of(&st);
    if kind == SFlag::S_IFDIR {
        Current::Dir
    } else if kind == SFlag::S_IFLNK {
        match nix::fcntl::readlinkat(dirfd.as_fd(), name) {
            Ok(t) => Current::Symlink(t.into_vec()),
            Err(e) => Current::Other(format!("readlink failed on the host: {e}")),
        }
    } else if kind == SFlag::S_IFREG {
        Current::File { size: st.st_size.max(0) as u64, exec: st.st_mode & 0o100 != 0 }
    } else {
        Current::Other("a FIFO, socket or device is in its place on the host".into())
    }
}

/// Opens the regular file at `path` beneath `root` for reading, never through a symlink (a
/// FIFO or device is refused, never opened for reading). `Ok(None)`: it is gone.
pub(crate) fn open_regular(root: BorrowedFd<'_>, path: &[u8]) -> std::result::Result<Option<(File, FileStat)>, String> {
    let (dirfd, name) = match open_parent(root, path) {
        Ok(x) => x,
        Err(Errno::ENOENT) => return Ok(None),
        Err(e) => return Err(format!("its parent could not be opened safely on the host: {e}")),
    };
    match fstatat(dirfd.as_fd(), name, AtFlags::AT_SYMLINK_NOFOLLOW) {
        Err(Errno::ENOENT) => return Ok(None),
        Err(e) => return Err(format!("stat failed on the host: {e}")),
        Ok(st) if kind_of(&st) != SFlag::S_IFREG => return Err("not a regular file on the host".into()),
        Ok(_) => {}
    }
    open_file(dirfd.as_fd(), name).map(Some)
}

/// Why the parent of `path` cannot be opened: the first component that is a symlink or not a
/// directory (looked at without following anything: every shorter prefix is a directory).
fn blocked_parent(root: BorrowedFd<'_>, path: &[u8], e: Errno) -> Current {
    let (dir, _) = split(path);
    let mut prefix = Vec::new();
    for comp in dir.split(|b| *b == b'/') {
        prefix = join(&prefix, comp);
        match fstatat(root, OsStr::from_bytes(&prefix), AtFlags::AT_SYMLINK_NOFOLLOW) {
            Ok(st) if kind_of(&st) == SFlag::S_IFLNK => {
                let reason = format!("a parent ({}) is a symlink on the host", rel_str(&prefix));
                return Current::Blocked { parent: prefix, reason };
            }
            Ok(st) if kind_of(&st) != SFlag::S_IFDIR => {
                let reason = format!("a parent ({}) is not a directory on the host", rel_str(&prefix));
                return Current::Blocked { parent: prefix, reason };
            }
            Ok(_) => {}
            Err(_) => break,
        }
    }
    Current::Other(format!("a parent cannot be opened on the host: {e}"))
}

/// Removes the file or symlink at `path` (a directory is left: `Ok(false)`).
pub(crate) fn remove(root: BorrowedFd<'_>, path: &[u8]) -> Result<bool> {
    let (dirfd, name) = match open_parent(root, path) {
        Ok(x) => x,
        Err(Errno::ENOENT) => return Ok(true),
        Err(e) => return Err(err_at(path, "opening the parent", e)),
    };
    match nix::unistd::unlinkat(dirfd.as_fd(), name, UnlinkatFlags::NoRemoveDir) {
        Ok(()) | Err(Errno::ENOENT) => {
            let _ = nix::unistd::fsync(dirfd.as_fd());
            Ok(true)
        }
        Err(Errno::EISDIR) => Ok(false),
        Err(e) => Err(err_at(path, "deleting", e)),
    }
}

/// Removes the directory `rel_dir` and its parents while they are empty (never the root).
pub(crate) fn prune_empty(root: BorrowedFd<'_>, mut rel_dir: &[u8]) {
    while !rel_dir.is_empty() {
        let Ok((dirfd, name)) = open_parent(root, rel_dir) else { return };
        if nix::unistd::unlinkat(dirfd.as_fd(), name, UnlinkatFlags::RemoveDir).is_err() {
            return;
        }
        rel_dir = split(rel_dir).0;
    }
}

/// Whether a symlink at `path` pointing at `target` stays inside the tree, judged lexically:
/// relative, and never climbing above the root.
pub(crate) fn link_stays_inside(path: &[u8], target: &[u8]) -> bool {
    if target.is_empty() || target.starts_with(b"/") {
        return false;
    }
    let (dir, _) = split(path);
    let mut depth: i64 = if dir.is_empty() { 0 } else { dir.split(|b| *b == b'/').count() as i64 };
    for comp in target.split(|b| *b == b'/') {
        match comp {
            b"" | b"." => {}
            b".." => {
                depth -= 1;
                if depth < 0 {
                    return false;
                }
            }
            _ => depth += 1,
        }
    }
    true
}

/// Most symlinks followed while resolving one link's target (the kernel's own limit).
pub(crate) const MAX_LINK_FOLLOWS: usize = 40;

/// What the tree being synced holds at a path.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Node {
    /// Nothing (the host may still have something there).
    Absent,
    /// A directory (a proper prefix of a path of the tree).
    Dir,
    /// A regular file.
    File,
    /// A symlink and its target.
    Link(Vec<u8>),
}

/// The tree a link is resolved against by [`link_resolves_inside`]: what a sync writes.
pub(crate) trait LinkTree {
    /// What the synced tree holds at `path`.
    fn node(&mut self, path: &[u8]) -> Result<Node>;
    /// Whether this sync writes or deletes `path`: the host's entry there is going away.
    fn changed(&self, path: &[u8]) -> bool;
}

fn components(target: &[u8]) -> impl DoubleEndedIterator<Item = &[u8]> {
    target.split(|b| *b == b'/').filter(|c| !c.is_empty() && *c != b".")
}

/// What the host will hold at `path` once the sync deleted what it deletes: an entry this sync
/// deletes or replaces, or one beneath a symlink or file it deletes, counts as absent.
fn host_after(root: BorrowedFd<'_>, tree: &dyn LinkTree, path: &[u8]) -> Current {
    match current(root, path) {
        Current::Blocked { parent, .. } if tree.changed(&parent) => Current::Absent,
        Current::Symlink(_) | Current::File { .. } if tree.changed(path) => Current::Absent,
        c => c,
    }
}

/// Whether a symlink at `path` pointing at `target`, written into the project beneath `root`
/// by a sync of `tree`, resolves inside the project. `Ok(Err(why))` when it does not (or might
/// not). The rule is the module's (see "Symlinks written by a sync").
pub(crate) fn link_resolves_inside(
    root: BorrowedFd<'_>,
    tree: &mut dyn LinkTree,
    path: &[u8],
    target: &[u8],
) -> Result<std::result::Result<(), String>> {
    if target.is_empty() {
        return Ok(Err("its target is empty".into()));
    }
    if target.starts_with(b"/") {
        return Ok(Err("its target is an absolute path".into()));
    }
    // Where resolution is (components, all directories or absent), and what is left to resolve.
    let mut at: Vec<Vec<u8>> = components(split(path).0).map(<[u8]>::to_vec).collect();
    let mut todo: std::collections::VecDeque<Vec<u8>> = components(target).map(<[u8]>::to_vec).collect();
    let mut follows = 0usize;
    while let Some(comp) = todo.pop_front() {
        if comp == b".." {
            if at.pop().is_none() {
                return Ok(Err("it leads above the project".into()));
            }
            continue;
        }
        let p = join(&at.join(&b'/'), &comp);
        let last = todo.is_empty();
        let shown = rel_str(&p);
        let changed = tree.changed(&p);
        match tree.node(&p)? {
            Node::Link(t) => {
                // Unchanged by this sync: the host must hold the same link.
                if !changed && current(root, &p) != Current::Symlink(t.clone()) {
                    return Ok(Err(format!("it goes through {shown}, a symlink that differs on the host")));
                }
                follows += 1;
                if follows > MAX_LINK_FOLLOWS {
                    return Ok(Err(format!("it goes through more than {MAX_LINK_FOLLOWS} symlinks (a loop?)")));
                }
                if t.is_empty() || t.starts_with(b"/") {
                    return Ok(Err(format!("it goes through {shown}, a symlink to an absolute path")));
                }
                for c in components(&t).rev() {
                    todo.push_front(c.to_vec());
                }
            }
            Node::File if !last => return Ok(Err(format!("it goes through {shown}, a file"))),
            Node::File | Node::Dir => match host_after(root, tree, &p) {
                Current::Symlink(_) => return Ok(Err(format!("it goes through {shown}, a symlink on the host"))),
                Current::Blocked { reason, .. } => return Ok(Err(format!("it goes through {shown}: {reason}"))),
                _ => at.push(comp),
            },
            Node::Absent => match host_after(root, tree, &p) {
                Current::Absent | Current::Dir => at.push(comp),
                Current::File { .. } if last => at.push(comp),
                Current::File { .. } => return Ok(Err(format!("it goes through {shown}, a file on the host"))),
                Current::Symlink(_) => {
                    return Ok(Err(format!("it goes through {shown}, a symlink on the host that was never copied in")))
                }
                Current::Blocked { reason, .. } => return Ok(Err(format!("it goes through {shown}: {reason}"))),
                Current::Other(why) => return Ok(Err(format!("it goes through {shown}: {why}"))),
            },
        }
    }
    Ok(Ok(()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn links_inside() {
        assert!(link_stays_inside(b"a", b"b"));
        assert!(link_stays_inside(b"d/a", b"../b"));
        assert!(link_stays_inside(b"d/e/a", b"../../b/c"));
        assert!(!link_stays_inside(b"a", b"../b"));
        assert!(!link_stays_inside(b"d/a", b"../../b"));
        assert!(!link_stays_inside(b"a", b"/etc/passwd"));
        assert!(!link_stays_inside(b"a", b""));
        assert!(!link_stays_inside(b"d/a", b"x/../../../etc"));
    }

    /// A tree for [`link_resolves_inside`]: path -> node, and the paths the sync changes.
    struct Fake(std::collections::HashMap<&'static str, Node>, Vec<&'static str>);

    impl LinkTree for Fake {
        fn node(&mut self, path: &[u8]) -> Result<Node> {
            let p = std::str::from_utf8(path).expect("utf-8");
            if let Some(n) = self.0.get(p) {
                return Ok(n.clone());
            }
            let dir = self.0.keys().any(|k| k.starts_with(p) && k.as_bytes().get(p.len()) == Some(&b'/'));
            Ok(if dir { Node::Dir } else { Node::Absent })
        }
        fn changed(&self, path: &[u8]) -> bool {
            self.1.iter().any(|c| c.as_bytes() == path)
        }
    }

    #[test]
    fn links_resolve_against_the_tree_and_the_host() {
        let t = tempfile::tempdir().expect("tempdir");
        let ws = t.path().join("ws");
        std::fs::create_dir_all(ws.join("real/dir")).expect("mkdir");
        std::fs::write(ws.join("real/f"), b"f").expect("write");
        std::os::unix::fs::symlink("/etc", ws.join("h")).expect("symlink");
        std::os::unix::fs::symlink("real", ws.join("old")).expect("symlink");
        std::os::unix::fs::symlink("/etc", ws.join("real/swapped")).expect("symlink");
        let r = root(&ws);
        let link = |t: &str| Node::Link(t.as_bytes().to_vec());
        let mut tree = Fake(
            [
                ("real/f", Node::File),
                ("real/dir/g", Node::File),
                ("real/swapped/x", Node::File),
                ("a/b/s", link("../..")),
                ("a/b/s2", link("s/real")),
                ("loop", link("loop")),
                ("old/new", Node::File),
            ]
            .into_iter()
            .collect(),
            vec!["a/b/s", "a/b/s2", "loop", "old", "old/new"],
        );
        let mut check = |path: &str, target: &str| {
            link_resolves_inside(r.as_fd(), &mut tree, path.as_bytes(), target.as_bytes()).expect("resolve")
        };
        for (path, target) in [
            ("x", "real/f"),
            ("x", "real/dir/"),
            ("a/b/x", "s/real/f"),
            ("a/b/x", "s2/dir/../f"),
            ("x", "missing/deeper/f"),
            ("x", "old/new"),
            ("x", "real/../real/./f"),
        ] {
            assert_eq!(check(path, target), Ok(()), "{path} -> {target}");
        }
        for (path, target, why) in [
            ("x", "/etc/passwd", "absolute"),
            ("x", "", "empty"),
            ("x", "..", "above the project"),
            ("a/b/x", "s/..", "above the project"),
            ("a/b/x", "s2/../../etc", "above the project"),
            ("x", "h", "h, a symlink on the host"),
            ("x", "h/passwd", "h, a symlink on the host"),
            ("x", "real/f/x", "real/f, a file"),
            ("x", "loop", "more than 40"),
            ("x", "real/swapped/x", "real/swapped, a symlink on the host"),
            ("x", "missing/../h/x", "h, a symlink on the host"),
        ] {
            match check(path, target) {
                Err(w) => assert!(w.contains(why), "{path} -> {target}: {w}"),
                Ok(()) => panic!("{path} -> {target} was allowed"),
            }
        }
    }

    fn root(dir: &Path) -> OwnedFd {
        open_root(dir).expect("open root")
    }

    /// What the walk sees between its `fstatat` and its `open` when an entry is swapped: the
    /// open itself refuses symlinks, FIFOs and other owners' files.
    #[test]
    fn reads_refuse_swapped_entries() {
        let t = tempfile::tempdir().expect("tempdir");
        let outside = t.path().join("outside");
        std::fs::write(&outside, b"secret").expect("write");
        let ws = t.path().join("ws");
        std::fs::create_dir(&ws).expect("mkdir");
        std::fs::write(ws.join("ok"), b"fine").expect("write");
        std::os::unix::fs::symlink(&outside, ws.join("link")).expect("symlink");
        nix::unistd::mkfifo(&ws.join("fifo"), Mode::from_bits_truncate(0o600)).expect("mkfifo");
        let r = root(&ws);
        let me = nix::unistd::geteuid().as_raw();
        match read_file(r.as_fd(), OsStr::new("ok"), Some(me), 100, true) {
            Read::Data { data, stable, .. } => assert!(data == b"fine" && stable),
            other => panic!("{other:?}"),
        }
        for name in ["link", "fifo"] {
            assert!(matches!(read_file(r.as_fd(), OsStr::new(name), Some(me), 100, true), Read::Refused(_)), "{name}");
        }
        assert!(matches!(read_file(r.as_fd(), OsStr::new("gone"), Some(me), 100, true), Read::Gone));
        let other = read_file(r.as_fd(), OsStr::new("ok"), Some(me + 1), 100, true);
        assert!(matches!(other, Read::Refused(ref why) if why.contains("owned by uid")), "{other:?}");
        assert!(matches!(read_file(r.as_fd(), OsStr::new("ok"), None, 3, true), Read::Refused(_)), "size limit");
    }

    #[test]
    fn walk_records_links_without_following_them() {
        let t = tempfile::tempdir().expect("tempdir");
        let secret = t.path().join("secret");
        std::fs::create_dir(&secret).expect("mkdir");
        std::fs::write(secret.join("inner"), b"s").expect("write");
        let ws = t.path().join("ws");
        std::fs::create_dir_all(ws.join("d/.git")).expect("mkdir");
        std::fs::write(ws.join("d/.git/HEAD"), b"x").expect("write");
        std::fs::write(ws.join("d/f"), b"f").expect("write");
        std::os::unix::fs::symlink(&secret, ws.join("d/s")).expect("symlink");
        let r = root(&ws);
        let mut seen = Vec::new();
        let mut visit = |p: &[u8], f: Found<'_>| -> Result<()> {
            let kind = match f {
                Found::Dir { .. } => "dir".to_owned(),
                Found::File { .. } => "file".to_owned(),
                Found::Symlink { target } => format!("link {}", String::from_utf8_lossy(&target)),
            };
            seen.push((String::from_utf8_lossy(p).into_owned(), kind));
            Ok(())
        };
        walk(r.as_fd(), &WalkOptions::default(), &mut visit, &mut |_, _| {}).expect("walk");
        let want = vec![
            ("d".to_owned(), "dir".to_owned()),
            ("d/f".to_owned(), "file".to_owned()),
            ("d/s".to_owned(), format!("link {}", secret.display())),
        ];
        assert_eq!(seen, want);
    }

    #[test]
    fn writes_never_go_through_symlinks() {
        let t = tempfile::tempdir().expect("tempdir");
        let outside = t.path().join("outside");
        std::fs::create_dir(&outside).expect("mkdir");
        std::fs::write(outside.join("f"), b"keep").expect("write");
        let ws = t.path().join("ws");
        std::fs::create_dir(&ws).expect("mkdir");
        std::os::unix::fs::symlink(&outside, ws.join("sub")).expect("symlink");
        std::os::unix::fs::symlink(outside.join("f"), ws.join("file")).expect("symlink");
        let r = root(&ws);
        assert!(make_dirs(r.as_fd(), b"sub/deeper", Owner::Inherit, 0o755).is_err());
        assert!(
            matches!(current(r.as_fd(), b"sub/f"), Current::Blocked { ref parent, ref reason } if parent == b"sub" && reason.contains("(sub) is a symlink"))
        );
        assert_eq!(current(r.as_fd(), b"file"), Current::Symlink(outside.join("f").into_os_string().into_vec()));
        let dir = make_dirs(r.as_fd(), b"", Owner::Inherit, 0o755).expect("root");
        write_file(dir.as_fd(), OsStr::new("file"), &mut &b"new"[..], 0o644, Owner::Inherit, b"file").expect("write");
        assert_eq!(std::fs::read(outside.join("f")).expect("read"), b"keep", "the link was replaced, not followed");
        assert_eq!(std::fs::read(ws.join("file")).expect("read"), b"new");
        assert!(!std::fs::symlink_metadata(ws.join("file")).expect("lstat").file_type().is_symlink());
        assert!(remove(r.as_fd(), b"sub").expect("remove the link"));
        assert!(outside.join("f").exists());
        assert!(matches!(open_root(&ws.join("file")), Err(Error::InvalidRequest(_)) | Err(Error::NotFound(_))));
    }

    #[test]
    fn exclusions() {
        let ex = vec!["target".to_owned()];
        assert!(excluded(b".git", &ex));
        assert!(excluded(b".GiT", &ex));
        assert!(excluded(b"target", &ex));
        assert!(!excluded(b"targets", &ex));
        assert!(path_excluded(b"a/.git/config", &ex));
        assert!(path_excluded(b"a//b", &ex));
        assert!(path_excluded(b"../b", &ex));
        assert!(!path_excluded(b"a/b.git", &ex));
    }
}
