//! Writing an archive: walk, read in parallel, tar, compress with multithreaded zstd, hash.
//!
//! The walk runs on the calling thread: each directory is opened relative to its parent with
//! `O_NOFOLLOW` (never by path), listed, and its names sorted byte-wise, so the tar order is
//! deterministic. Regular files are handed to a small pool of reader threads; their results come
//! back through one channel per file and are written strictly in walk order, with at most
//! [`MAX_INFLIGHT`] files read ahead (small files are read whole, large ones streamed by the
//! writer). The tar stream goes through a 1 MiB buffer into zstd (level 3, one worker per core,
//! content checksum on), and the compressed bytes are hashed on their way to the destination.
//! Nothing is fsynced per file; the destination is synced once by its storage.

use std::collections::VecDeque;
use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io::{self, BufWriter, Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::Path;
use std::sync::mpsc::{self, Receiver, SyncSender};
use std::sync::{Arc, Mutex};

use nix::errno::Errno;
use nix::fcntl::{AtFlags, OFlag};
use nix::sys::stat::{fstat, fstatat, FileStat, Mode, SFlag};

use crate::error::{Result, SnapshotError};
use crate::fsutil::HashWriter;
use crate::limits::{check_link_target, split_path, ArchiveLimits, Progress, ProgressFn};

/// Files read ahead of the tar writer, at most.
pub const MAX_INFLIGHT: usize = 128;
/// Files up to this size are read whole by the reader pool; larger ones are streamed.
pub const SMALL_FILE_BYTES: u64 = 256 * 1024;

/// How to write an archive.
#[derive(Clone)]
pub struct ArchiveOptions {
    /// zstd level (default 3).
    pub level: i32,
    /// zstd workers and file readers; 0 (the default) means one per core.
    pub threads: usize,
    /// Structural limits the tree must fit (so it restores with the same limits).
    pub limits: ArchiveLimits,
    /// Told about progress now and then.
    pub progress: Option<ProgressFn>,
}

impl Default for ArchiveOptions {
    fn default() -> Self {
        Self { level: 3, threads: 0, limits: ArchiveLimits::default(), progress: None }
    }
}

impl std::fmt::Debug for ArchiveOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ArchiveOptions")
            .field("level", &self.level)
            .field("threads", &self.threads)
            .field("limits", &self.limits)
            .field("progress", &self.progress.is_some())
            .finish()
    }
}

/// What an archive holds.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ArchiveStats {
    /// Compressed size in bytes.
    pub archive_bytes: u64,
    /// Lower-case hex SHA-256 of the compressed bytes.
    pub sha256: String,
    /// Sum of regular file sizes.
    pub unpacked_bytes: u64,
    /// Regular files.
    pub file_count: u64,
    /// All entries (files, directories, symlinks).
    pub entry_count: u64,
    /// Sockets, FIFOs, devices and other-filesystem directories left out (each logged).
    pub skipped: u64,
    /// Files that changed size while being read (the workspace was not frozen); logged.
    pub changed: u64,
}

pub(crate) fn thread_count(requested: usize) -> usize {
    if requested > 0 {
        return requested;
    }
    std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2).clamp(1, 16)
}

/// Archives the tree under `source` (not the directory itself: paths are relative to it) into
/// `out` as `tar.zst`. Returns the statistics and `out` (for the caller to make durable).
pub fn write_archive<W: Write>(source: &Path, out: W, opts: &ArchiveOptions) -> Result<(ArchiveStats, W)> {
    let root = nix::fcntl::open(source, OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC, Mode::empty())
        .map_err(|e| SnapshotError::errno(format!("opening workspace directory {}", source.display()), e))?;
    let root_dev = fstat(root.as_fd()).map_err(|e| SnapshotError::errno("stat of the workspace directory", e))?.st_dev;
    let threads = thread_count(opts.threads);
    let zio = |e: io::Error| SnapshotError::io("setting up the zstd encoder", e);
    let mut enc = zstd::stream::write::Encoder::new(HashWriter::new(out), opts.level).map_err(zio)?;
    if threads > 1 {
        enc.multithread(u32::try_from(threads).unwrap_or(1)).map_err(zio)?;
    }
    enc.include_checksum(true).map_err(zio)?;
    let mut builder = tar::Builder::new(BufWriter::with_capacity(1 << 20, enc));

    let (job_tx, job_rx) = mpsc::sync_channel::<Job>(MAX_INFLIGHT);
    let job_rx = Arc::new(Mutex::new(job_rx));
    let readers = threads.clamp(2, 8);
    let mut stats = ArchiveStats::default();
    let result = std::thread::scope(|s| {
        for _ in 0..readers {
            let rx = Arc::clone(&job_rx);
            s.spawn(move || reader_loop(&rx));
        }
        let mut w = Walker {
            builder: &mut builder,
            queue: VecDeque::new(),
            jobs: job_tx,
            stats: &mut stats,
            limits: &opts.limits,
            progress: opts.progress.as_ref(),
            root_dev,
        };
        let r = w.walk(Arc::new(root), Vec::new()).and_then(|()| w.drain(0));
        // Dropping the walker closes the job channel: the readers finish and the scope joins them.
        drop(w);
        r
    });
    result?;
    let tio = |e: io::Error| SnapshotError::io("writing the snapshot archive", e);
    builder.finish().map_err(tio)?;
    let buffered = builder.into_inner().map_err(tio)?;
    let enc = buffered.into_inner().map_err(|e| tio(e.into_error()))?;
    let hashing = enc.finish().map_err(tio)?;
    let (out, bytes, sha256) = hashing.finish();
    stats.archive_bytes = bytes;
    stats.sha256 = sha256;
    if let Some(p) = &opts.progress {
        p(Progress {
            entries: stats.entry_count,
            bytes: stats.unpacked_bytes,
            total_bytes: Some(stats.unpacked_bytes),
        });
    }
    if stats.skipped > 0 || stats.changed > 0 {
        tracing::warn!(skipped = stats.skipped, changed = stats.changed, "snapshot archive written with warnings");
    }
    Ok((stats, out))
}

/// A regular file to read, and where to send what was read.
struct Job {
    dir: Arc<OwnedFd>,
    name: OsString,
    path: Vec<u8>,
    reply: SyncSender<FileRead>,
}

enum FileRead {
    /// Read whole; `changed` if its size moved while reading (then padded or cut to `st_size`).
    Small {
        st: FileStat,
        data: Vec<u8>,
        changed: bool,
    },
    /// Open, to be streamed by the writer.
    Large {
        st: FileStat,
        file: File,
    },
    /// Gone, or no longer a regular file.
    Vanished,
    Failed(SnapshotError),
}

fn reader_loop(rx: &Mutex<Receiver<Job>>) {
    loop {
        let job = {
            let Ok(guard) = rx.lock() else { return };
            match guard.recv() {
                Ok(job) => job,
                Err(_) => return,
            }
        };
        let result = read_file(&job);
        // The writer may have stopped on an error; then nobody listens, which is fine.
        let _ = job.reply.send(result);
    }
}

fn read_file(job: &Job) -> FileRead {
    let shown = || String::from_utf8_lossy(&job.path).into_owned();
    let fd = match nix::fcntl::openat(
        job.dir.as_fd(),
        job.name.as_os_str(),
        OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_NONBLOCK | OFlag::O_NOCTTY | OFlag::O_CLOEXEC,
        Mode::empty(),
    ) {
        Ok(fd) => fd,
        Err(Errno::ENOENT | Errno::ELOOP | Errno::ENXIO) => return FileRead::Vanished,
        Err(e) => return FileRead::Failed(SnapshotError::errno(format!("opening {} for the snapshot", shown()), e)),
    };
    let st = match fstat(fd.as_fd()) {
        Ok(st) => st,
        Err(e) => return FileRead::Failed(SnapshotError::errno(format!("stat of {}", shown()), e)),
    };
    if SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT != SFlag::S_IFREG {
        return FileRead::Vanished;
    }
    let size = u64::try_from(st.st_size).unwrap_or(0);
    let mut file = File::from(fd);
    if size > SMALL_FILE_BYTES {
        return FileRead::Large { st, file };
    }
    let mut data = Vec::with_capacity(size as usize + 1);
    if let Err(e) = (&mut file).take(size + 1).read_to_end(&mut data) {
        return FileRead::Failed(SnapshotError::io(format!("reading {} for the snapshot", shown()), e));
    }
    let changed = data.len() as u64 != size;
    data.resize(size as usize, 0);
    FileRead::Small { st, data, changed }
}

enum Item {
    Dir { path: Vec<u8>, st: FileStat },
    Symlink { path: Vec<u8>, target: Vec<u8>, st: FileStat },
    File { path: Vec<u8>, reply: Receiver<FileRead> },
}

struct Walker<'a, W: Write> {
    builder: &'a mut tar::Builder<W>,
    queue: VecDeque<Item>,
    jobs: SyncSender<Job>,
    stats: &'a mut ArchiveStats,
    limits: &'a ArchiveLimits,
    progress: Option<&'a ProgressFn>,
    root_dev: u64,
}

fn kind_of(st: &FileStat) -> SFlag {
    SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT
}

impl<W: Write> Walker<'_, W> {
    fn invalid(path: &[u8], why: impl std::fmt::Display) -> SnapshotError {
        SnapshotError::Core(warren_core::Error::InvalidRequest(format!(
            "cannot snapshot {:?}: {why}; rename or remove it and try again",
            String::from_utf8_lossy(path)
        )))
    }

    fn walk(&mut self, dir: Arc<OwnedFd>, prefix: Vec<u8>) -> Result<()> {
        let shown_dir =
            || if prefix.is_empty() { ".".to_owned() } else { String::from_utf8_lossy(&prefix).into_owned() };
        let mut names: Vec<(OsString, Option<nix::dir::Type>)> = {
            let mut d = nix::dir::Dir::openat(
                dir.as_fd(),
                ".",
                OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
                Mode::empty(),
            )
            .map_err(|e| SnapshotError::errno(format!("listing {}", shown_dir()), e))?;
            let mut v = Vec::new();
            for ent in d.iter() {
                let ent = ent.map_err(|e| SnapshotError::errno(format!("listing {}", shown_dir()), e))?;
                let name = ent.file_name().to_bytes();
                if name != b"." && name != b".." {
                    v.push((OsStr::from_bytes(name).to_owned(), ent.file_type()));
                }
            }
            v
        };
        names.sort_unstable_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
        for (name, dtype) in names {
            let mut path = prefix.clone();
            path.extend_from_slice(name.as_bytes());
            if let Err(why) = split_path(&path, self.limits.max_depth) {
                return Err(Self::invalid(&path, why));
            }
            let kind = match dtype {
                Some(nix::dir::Type::Directory) => SFlag::S_IFDIR,
                Some(nix::dir::Type::Symlink) => SFlag::S_IFLNK,
                Some(nix::dir::Type::File) => SFlag::S_IFREG,
                Some(_) => SFlag::S_IFIFO,
                None => match fstatat(dir.as_fd(), name.as_os_str(), AtFlags::AT_SYMLINK_NOFOLLOW) {
                    Ok(st) => kind_of(&st),
                    Err(Errno::ENOENT) => continue,
                    Err(e) => {
                        return Err(SnapshotError::errno(format!("stat of {}", String::from_utf8_lossy(&path)), e))
                    }
                },
            };
            self.count_entry(&path)?;
            if kind == SFlag::S_IFREG {
                let (tx, rx) = mpsc::sync_channel(1);
                let job = Job { dir: Arc::clone(&dir), name, path: path.clone(), reply: tx };
                self.jobs
                    .send(job)
                    .map_err(|_| SnapshotError::internal("snapshot file readers stopped unexpectedly"))?;
                self.push(Item::File { path, reply: rx })?;
            } else if kind == SFlag::S_IFDIR {
                let fd = match nix::fcntl::openat(
                    dir.as_fd(),
                    name.as_os_str(),
                    OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
                    Mode::empty(),
                ) {
                    Ok(fd) => fd,
                    Err(Errno::ENOENT | Errno::ENOTDIR | Errno::ELOOP) => {
                        self.changed(&path, "vanished or changed type while archiving");
                        continue;
                    }
                    Err(e) => {
                        return Err(SnapshotError::errno(format!("opening {}", String::from_utf8_lossy(&path)), e))
                    }
                };
                let st = fstat(fd.as_fd()).map_err(|e| SnapshotError::errno("stat of a directory", e))?;
                if st.st_dev != self.root_dev {
                    self.skip(&path, "is on another filesystem (a mount point)");
                    continue;
                }
                path.push(b'/');
                self.push(Item::Dir { path: path.clone(), st })?;
                self.walk(Arc::new(fd), path)?;
            } else if kind == SFlag::S_IFLNK {
                let target = match nix::fcntl::readlinkat(dir.as_fd(), name.as_os_str()) {
                    Ok(t) => t.into_vec(),
                    Err(Errno::ENOENT | Errno::EINVAL) => {
                        self.changed(&path, "vanished or changed type while archiving");
                        continue;
                    }
                    Err(e) => {
                        return Err(SnapshotError::errno(format!("reading link {}", String::from_utf8_lossy(&path)), e))
                    }
                };
                if let Err(why) = check_link_target(&target) {
                    return Err(Self::invalid(&path, why));
                }
                let st = match fstatat(dir.as_fd(), name.as_os_str(), AtFlags::AT_SYMLINK_NOFOLLOW) {
                    Ok(st) => st,
                    Err(Errno::ENOENT) => continue,
                    Err(e) => {
                        return Err(SnapshotError::errno(format!("stat of {}", String::from_utf8_lossy(&path)), e))
                    }
                };
                self.push(Item::Symlink { path, target, st })?;
            } else {
                self.skip(&path, "is a socket, FIFO or device");
            }
        }
        Ok(())
    }

    fn count_entry(&mut self, path: &[u8]) -> Result<()> {
        if self.stats.entry_count >= self.limits.max_entries {
            return Err(Self::invalid(
                path,
                format!("the workspace has more than {} entries", self.limits.max_entries),
            ));
        }
        self.stats.entry_count += 1;
        Ok(())
    }

    fn skip(&mut self, path: &[u8], why: &str) {
        tracing::warn!(path = %String::from_utf8_lossy(path), "snapshot skips an entry that {why}");
        self.stats.skipped += 1;
        self.stats.entry_count = self.stats.entry_count.saturating_sub(1);
    }

    fn changed(&mut self, path: &[u8], why: &str) {
        tracing::warn!(path = %String::from_utf8_lossy(path), "snapshot: entry {why}");
        self.stats.changed += 1;
        self.stats.entry_count = self.stats.entry_count.saturating_sub(1);
    }

    fn push(&mut self, item: Item) -> Result<()> {
        self.queue.push_back(item);
        self.drain(MAX_INFLIGHT)
    }

    /// Writes queued items, in order, until at most `keep` are left.
    fn drain(&mut self, keep: usize) -> Result<()> {
        while self.queue.len() > keep {
            let Some(item) = self.queue.pop_front() else { break };
            self.emit(item)?;
        }
        Ok(())
    }

    fn emit(&mut self, item: Item) -> Result<()> {
        let tio = |e: io::Error| SnapshotError::io("writing the snapshot archive", e);
        let mut h = tar::Header::new_ustar();
        h.set_uid(0);
        h.set_gid(0);
        match item {
            Item::Dir { path, st } => {
                h.set_entry_type(tar::EntryType::Directory);
                h.set_mode(st.st_mode & 0o777);
                h.set_mtime(u64::try_from(st.st_mtime).unwrap_or(0));
                h.set_size(0);
                self.builder.append_data(&mut h, OsStr::from_bytes(&path), io::empty()).map_err(tio)?;
            }
            Item::Symlink { path, target, st } => {
                h.set_entry_type(tar::EntryType::Symlink);
                h.set_mode(0o777);
                h.set_mtime(u64::try_from(st.st_mtime).unwrap_or(0));
                h.set_size(0);
                self.builder.append_link(&mut h, OsStr::from_bytes(&path), OsStr::from_bytes(&target)).map_err(tio)?;
            }
            Item::File { path, reply } => {
                let read = reply
                    .recv()
                    .unwrap_or_else(|_| FileRead::Failed(SnapshotError::internal("a snapshot file reader died")));
                let (st, body) = match read {
                    FileRead::Small { st, data, changed } => (st, Body::Small(data, changed)),
                    FileRead::Large { st, file } => (st, Body::Large(file)),
                    FileRead::Vanished => {
                        self.changed(&path, "vanished or changed type while archiving");
                        return Ok(());
                    }
                    FileRead::Failed(e) => return Err(e),
                };
                let size = match &body {
                    Body::Small(data, _) => data.len() as u64,
                    Body::Large(_) => u64::try_from(st.st_size).unwrap_or(0),
                };
                h.set_entry_type(tar::EntryType::Regular);
                h.set_mode(st.st_mode & 0o777);
                h.set_mtime(u64::try_from(st.st_mtime).unwrap_or(0));
                h.set_size(size);
                match body {
                    Body::Small(data, changed) => {
                        if changed {
                            self.stats.changed += 1;
                            tracing::warn!(path = %String::from_utf8_lossy(&path), "file changed size while archiving");
                        }
                        self.builder.append_data(&mut h, OsStr::from_bytes(&path), &data[..]).map_err(tio)?;
                    }
                    Body::Large(file) => {
                        let mut exact = Exact { inner: file.take(size), left: size, short: false };
                        self.builder.append_data(&mut h, OsStr::from_bytes(&path), &mut exact).map_err(tio)?;
                        if exact.short {
                            self.stats.changed += 1;
                            tracing::warn!(path = %String::from_utf8_lossy(&path), "file shrank while archiving");
                        }
                    }
                }
                self.stats.file_count += 1;
                self.stats.unpacked_bytes += size;
            }
        }
        if let Some(p) = self.progress {
            if self.stats.entry_count.is_multiple_of(1024) {
                p(Progress { entries: self.stats.entry_count, bytes: self.stats.unpacked_bytes, total_bytes: None });
            }
        }
        Ok(())
    }
}

enum Body {
    Small(Vec<u8>, bool),
    Large(File),
}

/// Yields exactly `left` bytes: the file's, then zeros if it shrank meanwhile.
struct Exact<R> {
    inner: R,
    left: u64,
    short: bool,
}

impl<R: Read> Read for Exact<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.left == 0 {
            return Ok(0);
        }
        let want = buf.len().min(usize::try_from(self.left).unwrap_or(usize::MAX));
        let mut n = if self.short { 0 } else { self.inner.read(&mut buf[..want])? };
        if n == 0 {
            self.short = true;
            buf[..want].fill(0);
            n = want;
        }
        self.left -= n as u64;
        Ok(n)
    }
}
