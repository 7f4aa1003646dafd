//! Small descriptor-relative file helpers.

use std::ffi::{OsStr, OsString};
use std::io::{self, Write};
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::sys::stat::Mode;
use nix::unistd::UnlinkatFlags;
use sha2::{Digest, Sha256};

use crate::error::{Result, SnapshotError};

/// `n` random bytes as lower-case hex (12 characters for 6 bytes).
pub(crate) fn random_hex(n: usize) -> String {
    let mut b = vec![0u8; n];
    if getrandom::fill(&mut b).is_err() {
        let t = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
        let mix = t ^ (u128::from(std::process::id()) << 64);
        for (i, x) in b.iter_mut().enumerate() {
            *x = (mix >> ((i % 16) * 8)) as u8;
        }
    }
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Removes `name` under `parent` and everything beneath it, never following symlinks.
/// A missing entry is not an error.
pub(crate) fn remove_tree_at(parent: BorrowedFd<'_>, name: &OsStr) -> nix::Result<()> {
    match nix::unistd::unlinkat(parent, name, UnlinkatFlags::NoRemoveDir) {
        Ok(()) | Err(Errno::ENOENT) => Ok(()),
        Err(Errno::EISDIR) => remove_dir_tree(parent, name, 0),
        Err(e) => Err(e),
    }
}

fn remove_dir_tree(parent: BorrowedFd<'_>, name: &OsStr, depth: usize) -> nix::Result<()> {
    if depth > 4096 {
        return Err(Errno::ELOOP);
    }
    let fd = match nix::fcntl::openat(
        parent,
        name,
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::empty(),
    ) {
        Ok(fd) => fd,
        Err(Errno::ENOENT) => return Ok(()),
        Err(e) => return Err(e),
    };
    // A directory made read-only by an archive (mode 0555) must still be emptied when warren
    // does not run as root.
    let _ = nix::sys::stat::fchmod(fd.as_fd(), Mode::from_bits_truncate(0o700));
    loop {
        let mut dir = nix::dir::Dir::openat(
            fd.as_fd(),
            ".",
            OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
            Mode::empty(),
        )?;
        let names: Vec<OsString> = dir
            .iter()
            .filter_map(|e| e.ok())
            .map(|e| OsStr::from_bytes(e.file_name().to_bytes()).to_owned())
            .filter(|n| n != "." && n != "..")
            .take(4096)
            .collect();
        if names.is_empty() {
            break;
        }
        for child in names {
            match nix::unistd::unlinkat(fd.as_fd(), child.as_os_str(), UnlinkatFlags::NoRemoveDir) {
                Ok(()) | Err(Errno::ENOENT) => {}
                Err(Errno::EISDIR) => remove_dir_tree(fd.as_fd(), &child, depth + 1)?,
                Err(e) => return Err(e),
            }
        }
    }
    match nix::unistd::unlinkat(parent, name, UnlinkatFlags::RemoveDir) {
        Ok(()) | Err(Errno::ENOENT) => Ok(()),
        Err(e) => Err(e),
    }
}

/// Removes a path and everything beneath it without following symlinks (missing is fine).
pub(crate) fn remove_tree(path: &Path) -> Result<()> {
    let (parent, name) = split_parent(path)?;
    let pfd = open_dir(parent)?;
    remove_tree_at(pfd.as_fd(), name).map_err(|e| SnapshotError::errno(format!("removing {}", path.display()), e))
}

/// The parent directory and final name of a path.
pub(crate) fn split_parent(path: &Path) -> Result<(&Path, &OsStr)> {
    let name = path.file_name().ok_or_else(|| {
        SnapshotError::Core(warren_core::Error::InvalidRequest(format!("{} has no final name", path.display())))
    })?;
    let parent = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    Ok((parent, name))
}

/// Opens a directory for `*at` calls.
pub(crate) fn open_dir(path: &Path) -> Result<std::os::fd::OwnedFd> {
    nix::fcntl::open(path, OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC, Mode::empty())
        .map_err(|e| SnapshotError::errno(format!("opening directory {}", path.display()), e))
}

/// fsyncs a directory so renames in it are durable.
pub(crate) fn fsync_dir(path: &Path) -> Result<()> {
    let fd = open_dir(path)?;
    nix::unistd::fsync(fd.as_fd()).map_err(|e| SnapshotError::errno(format!("syncing directory {}", path.display()), e))
}

/// A writer that counts and hashes (SHA-256) what passes through it.
#[derive(Debug)]
pub(crate) struct HashWriter<W> {
    inner: W,
    hash: Sha256,
    bytes: u64,
}

impl<W: Write> HashWriter<W> {
    pub(crate) fn new(inner: W) -> Self {
        Self { inner, hash: Sha256::new(), bytes: 0 }
    }

    /// The inner writer, the byte count and the lower-case hex digest.
    pub(crate) fn finish(self) -> (W, u64, String) {
        (self.inner, self.bytes, hex(&self.hash.finalize()))
    }
}

impl<W: Write> Write for HashWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hash.update(&buf[..n]);
        self.bytes += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// A reader of `file` from offset 0 that keeps its own position (`pread`): several can read one
/// open file at once, from different threads.
#[derive(Debug)]
pub(crate) struct ReadAt<'a> {
    file: &'a std::fs::File,
    pos: u64,
}

impl<'a> ReadAt<'a> {
    pub(crate) fn new(file: &'a std::fs::File) -> Self {
        Self { file, pos: 0 }
    }
}

impl io::Read for ReadAt<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = std::os::unix::fs::FileExt::read_at(self.file, buf, self.pos)?;
        self.pos += n as u64;
        Ok(n)
    }
}

/// A reader that counts and hashes (SHA-256) what passes through it.
#[derive(Debug)]
pub(crate) struct HashReader<R> {
    inner: R,
    hash: Sha256,
    bytes: u64,
}

impl<R: io::Read> HashReader<R> {
    pub(crate) fn new(inner: R) -> Self {
        Self { inner, hash: Sha256::new(), bytes: 0 }
    }

    pub(crate) fn finish(self) -> (R, u64, String) {
        (self.inner, self.bytes, hex(&self.hash.finalize()))
    }
}

impl<R: io::Read> io::Read for HashReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hash.update(&buf[..n]);
        self.bytes += n as u64;
        Ok(n)
    }
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// `io::copy` with a 1 MiB buffer (fewer system calls for archives and downloads).
pub(crate) fn copy_big(r: &mut dyn io::Read, w: &mut dyn Write) -> io::Result<u64> {
    let mut buf = vec![0u8; 1 << 20];
    let mut total = 0u64;
    loop {
        let n = match r.read(&mut buf) {
            Ok(0) => return Ok(total),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        w.write_all(&buf[..n])?;
        total += n as u64;
    }
}
