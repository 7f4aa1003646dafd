//! Writing an archive: walk, read in parallel, tar, compress with multithreaded zstd, hash.
//!
//! The walk runs on the calling thread: each directory is opened relative to its parent with
//! `O_NOFOLLOW` (never by path), listed, and its names sorted byte-wise, so the tar order is
//! deterministic. Regular files are handed to a small pool of reader threads in batches of up to
//! [`BATCH_FILES`] files of one directory (one job and one reply per batch, not per file: thread
//! wake-ups cost more than reading a small file from the page cache); the results are written
//! strictly in walk order, with at most [`MAX_INFLIGHT`] files read ahead (small files are read
//! whole, large ones streamed by the tar writer). The tar stream goes through a 1 MiB buffer into
//! zstd (level 3, one worker per core, content checksum on); the compressed bytes go in 1 MiB
//! chunks to an output thread that hashes them and writes them to the destination, so neither
//! SHA-256 nor the destination's writes hold up the thread that feeds zstd. Nothing is fsynced
//! per file; the destination is synced once by its storage.

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
/// Files per reader job, at most (all from one directory, consecutive in walk order).
pub const BATCH_FILES: usize = 16;
/// Compressed bytes per chunk handed to the output thread.
const OUT_CHUNK: usize = 1 << 20;
/// Compressed chunks queued for the output thread, at most.
const OUT_QUEUE: usize = 4;

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
pub fn write_archive<W: Write + Send>(source: &Path, out: W, opts: &ArchiveOptions) -> Result<(ArchiveStats, W)> {
    let root = nix::fcntl::open(source, OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC, Mode::empty())
        .map_err(|e| SnapshotError::errno(format!("opening workspace directory {}", source.display()), e))?;
    let root_dev = fstat(root.as_fd()).map_err(|e| SnapshotError::errno("stat of the workspace directory", e))?.st_dev;
    let threads = thread_count(opts.threads);
    let (chunk_tx, chunk_rx) = mpsc::sync_channel::<Vec<u8>>(OUT_QUEUE);
    let (spare_tx, spare_rx) = mpsc::channel::<Vec<u8>>();
    let zio = |e: io::Error| SnapshotError::io("setting up the zstd encoder", e);
    let mut enc = zstd::stream::write::Encoder::new(
        ChunkSender { tx: chunk_tx, spare: spare_rx, buf: Vec::with_capacity(OUT_CHUNK) },
        opts.level,
    )
    .map_err(zio)?;
    if threads > 1 {
        enc.multithread(u32::try_from(threads).unwrap_or(1)).map_err(zio)?;
    }
    enc.include_checksum(true).map_err(zio)?;
    let mut builder = tar::Builder::new(BufWriter::with_capacity(1 << 20, enc));

    let (job_tx, job_rx) = mpsc::sync_channel::<Job>(MAX_INFLIGHT);
    let job_rx = Arc::new(Mutex::new(job_rx));
    let readers = threads.clamp(2, 8);
    let mut stats = ArchiveStats::default();
    let tio = |e: io::Error| SnapshotError::io("writing the snapshot archive", e);
    let (result, written) = std::thread::scope(|s| {
        let output = s.spawn(move || output_loop(out, &chunk_rx, &spare_tx));
        for _ in 0..readers {
            let rx = Arc::clone(&job_rx);
            s.spawn(move || reader_loop(&rx));
        }
        let mut w = Walker {
            builder: &mut builder,
            queue: VecDeque::new(),
            queued_files: 0,
            batch: None,
            jobs: job_tx,
            stats: &mut stats,
            limits: &opts.limits,
            progress: opts.progress.as_ref(),
            root_dev,
        };
        let r = w.walk(Arc::new(root), Vec::new()).and_then(|()| w.drain(0));
        // Dropping the walker closes the job channel: the readers finish and the scope joins them.
        drop(w);
        // Finishing (or, on an error, dropping) the encoder closes the chunk channel: the output
        // thread finishes.
        let r = r.and_then(|()| finish_stream(builder).map_err(tio));
        let written = output.join().unwrap_or_else(|_| Err(io::Error::other("the archive output thread panicked")));
        (r, written)
    });
    // The output thread's own error (a full disk, a failed upload) explains a stopped channel.
    let (out, bytes, sha256) = written.map_err(tio)?;
    result?;
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

/// Ends the tar stream and the zstd frame, and hands the last compressed bytes to the output
/// thread.
fn finish_stream(
    mut builder: tar::Builder<BufWriter<zstd::stream::write::Encoder<'static, ChunkSender>>>,
) -> io::Result<()> {
    builder.finish()?;
    let buffered = builder.into_inner()?;
    let enc = buffered.into_inner().map_err(|e| e.into_error())?;
    let mut chunks = enc.finish()?;
    chunks.send()
}

/// Hashes and writes the compressed chunks, in order, then hands back the destination, its
/// byte count and SHA-256. Emptied chunks go back for reuse.
fn output_loop<W: Write>(
    out: W,
    chunks: &Receiver<Vec<u8>>,
    spare: &mpsc::Sender<Vec<u8>>,
) -> io::Result<(W, u64, String)> {
    let mut w = HashWriter::new(out);
    for mut chunk in chunks {
        w.write_all(&chunk)?;
        chunk.clear();
        // The sender may be gone already (the last chunk); then the buffer is just freed.
        let _ = spare.send(chunk);
    }
    Ok(w.finish())
}

/// The zstd encoder's destination: collects compressed bytes into [`OUT_CHUNK`]-byte chunks for
/// the output thread.
struct ChunkSender {
    tx: SyncSender<Vec<u8>>,
    spare: Receiver<Vec<u8>>,
    buf: Vec<u8>,
}

impl ChunkSender {
    fn send(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let next = self.spare.try_recv().unwrap_or_else(|_| Vec::with_capacity(OUT_CHUNK));
        let full = std::mem::replace(&mut self.buf, next);
        self.tx.send(full).map_err(|_| io::Error::other("the archive output thread stopped"))
    }
}

impl Write for ChunkSender {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        if self.buf.len() + data.len() > OUT_CHUNK {
            self.send()?;
        }
        self.buf.extend_from_slice(data);
        Ok(data.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.send()
    }
}

/// A file's name in its directory and its path in the archive.
type NamedFile = (OsString, Vec<u8>);

/// Regular files of one directory to read, and where to send what was read (in the same order).
struct Job {
    dir: Arc<OwnedFd>,
    files: Vec<NamedFile>,
    reply: SyncSender<Vec<(Vec<u8>, FileRead)>>,
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
        let dir = job.dir;
        let results = job.files.into_iter().map(|(name, path)| {
            let read = read_file(&dir, &name, &path);
            (path, read)
        });
        let results: Vec<_> = results.collect();
        // The writer may have stopped on an error; then nobody listens, which is fine.
        let _ = job.reply.send(results);
    }
}

fn read_file(dir: &OwnedFd, name: &OsStr, path: &[u8]) -> FileRead {
    let shown = || String::from_utf8_lossy(path).into_owned();
    let fd = match nix::fcntl::openat(
        dir.as_fd(),
        name,
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
    let mut data = vec![0u8; size as usize + 1];
    let got = match read_small(&mut file, &mut data) {
        Ok(n) => n,
        Err(e) => return FileRead::Failed(SnapshotError::io(format!("reading {} for the snapshot", shown()), e)),
    };
    data.truncate(got);
    let changed = data.len() as u64 != size;
    data.resize(size as usize, 0);
    FileRead::Small { st, data, changed }
}

/// Fills `buf` (the file's size at `fstat` plus one byte) from the file; returns the bytes read.
/// A short read of a regular file means its end, so a file that kept its size takes one `read`
/// (not a second one to see the end).
fn read_small(file: &mut File, buf: &mut [u8]) -> io::Result<usize> {
    let mut got = 0;
    while got < buf.len() {
        match file.read(&mut buf[got..]) {
            Ok(0) => break,
            Ok(n) => {
                got += n;
                if got == buf.len() - 1 {
                    break;
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(got)
}

enum Item {
    Dir { path: Vec<u8>, st: FileStat },
    Symlink { path: Vec<u8>, target: Vec<u8>, st: FileStat },
    Files { count: usize, reply: Receiver<Vec<(Vec<u8>, FileRead)>> },
}

impl Item {
    /// Queue weight: files read ahead.
    fn weight(&self) -> usize {
        match self {
            Item::Files { count, .. } => *count,
            _ => 1,
        }
    }
}

struct Walker<'a, W: Write> {
    builder: &'a mut tar::Builder<W>,
    queue: VecDeque<Item>,
    /// Sum of the queued items' weights.
    queued_files: usize,
    /// Files of the directory being walked, not yet handed to the readers.
    batch: Option<(Arc<OwnedFd>, Vec<NamedFile>)>,
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
                let files = match &mut self.batch {
                    Some((d, files)) if Arc::ptr_eq(d, &dir) => files,
                    _ => {
                        self.flush_batch()?;
                        &mut self.batch.insert((Arc::clone(&dir), Vec::with_capacity(BATCH_FILES))).1
                    }
                };
                files.push((name, path));
                if files.len() >= BATCH_FILES {
                    self.flush_batch()?;
                }
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
        self.flush_batch()
    }

    /// Hands the pending batch of files to the readers and queues its place in the tar stream.
    fn flush_batch(&mut self) -> Result<()> {
        let Some((dir, files)) = self.batch.take() else { return Ok(()) };
        let count = files.len();
        let (tx, rx) = mpsc::sync_channel(1);
        self.jobs
            .send(Job { dir, files, reply: tx })
            .map_err(|_| SnapshotError::internal("snapshot file readers stopped unexpectedly"))?;
        self.queue.push_back(Item::Files { count, reply: rx });
        self.queued_files += count;
        self.drain(MAX_INFLIGHT)
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

    /// Queues a directory or symlink, after the files walked before it.
    fn push(&mut self, item: Item) -> Result<()> {
        self.flush_batch()?;
        self.queued_files += item.weight();
        self.queue.push_back(item);
        self.drain(MAX_INFLIGHT)
    }

    /// Writes queued items, in order, until at most `keep` files (or other entries) are left.
    fn drain(&mut self, keep: usize) -> Result<()> {
        while self.queued_files > keep {
            let Some(item) = self.queue.pop_front() else { break };
            self.queued_files -= item.weight();
            match item {
                Item::Files { reply, .. } => {
                    let reads = reply.recv().map_err(|_| SnapshotError::internal("a snapshot file reader died"))?;
                    for (path, read) in reads {
                        self.emit_file(path, read)?;
                    }
                }
                item => self.emit(item)?,
            }
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
            Item::Files { .. } => return Err(SnapshotError::internal("a batch of files emitted as one entry")),
        }
        self.progressed();
        Ok(())
    }

    fn progressed(&mut self) {
        if let Some(p) = self.progress {
            if self.stats.entry_count.is_multiple_of(1024) {
                p(Progress { entries: self.stats.entry_count, bytes: self.stats.unpacked_bytes, total_bytes: None });
            }
        }
    }

    fn emit_file(&mut self, path: Vec<u8>, read: FileRead) -> Result<()> {
        let tio = |e: io::Error| SnapshotError::io("writing the snapshot archive", e);
        let mut h = tar::Header::new_ustar();
        h.set_uid(0);
        h.set_gid(0);
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
        self.progressed();
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
