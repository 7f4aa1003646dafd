//! Reading an archive safely: [`extract_to`] writes it into a fresh staging directory,
//! [`scan`] checks it without writing anything.
//!
//! Defences, in the order an entry meets them:
//! 1. zstd's window is capped ([`ArchiveLimits::window_log_max`]); every byte the tar parser
//!    reads is metered, so a long-name record or PAX header cannot grow past
//!    [`ArchiveLimits::max_metadata_bytes`] (the `tar` crate would read it whole into memory).
//! 2. Entry count, then the path: UTF-8, relative, no `..`, components at most 255 bytes, at
//!    most 4096 bytes in all, at most [`ArchiveLimits::max_depth`] deep.
//! 3. Type: regular files (GNU sparse ones included), directories and symlinks only; hard links,
//!    devices, FIFOs and anything else are refused. Setuid/setgid modes are refused; the sticky
//!    bit is dropped; ownership in the archive is ignored (everything is given to the workspace's
//!    owner).
//! 4. Size: every entry's declared size (a sparse file's full logical size) is added up before
//!    its data is read and checked against the byte cap.
//! 5. Writing: every directory is opened with `openat(.., O_DIRECTORY | O_NOFOLLOW)` one
//!    component at a time from a descriptor of the staging root, so a symlink in a parent is
//!    reported (and never followed); files are created with `O_CREAT | O_EXCL | O_NOFOLLOW`,
//!    directories with `mkdirat` and symlinks with `symlinkat`, each of which fails on an
//!    existing name: a second entry for a path is a duplicate, whatever the first one was.
//!
//! Small files are written by a pool of threads (the archive is read on the calling thread),
//! handed over in batches of up to [`BATCH_FILES`] files or [`BATCH_BYTES`] bytes (one channel
//! message and thread wake-up per batch, not per file); large files are created on the calling
//! thread and their data streamed to one more thread, which writes them while decompression goes
//! on. A file's parent directory always exists before the file is handed over, and only
//! directories and symlinks (made on the calling thread) can be parents, so the parallelism
//! never changes what lands where. On any error the staging directory is removed whole.

use std::cell::Cell;
use std::collections::HashMap;
use std::ffi::OsStr;
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, SyncSender};
use std::sync::{Arc, Mutex};

use nix::errno::Errno;
use nix::fcntl::{AtFlags, OFlag};
use nix::sys::stat::{fstatat, Mode, SFlag, UtimensatFlags};
use nix::sys::time::TimeSpec;
use nix::unistd::{Gid, Uid};

use crate::create::thread_count;
use crate::error::{Rejection, Result, SnapshotError};
use crate::fsutil;
use crate::limits::{check_link_target, split_path, ArchiveLimits, Progress, ProgressFn};

/// Files up to this size are handed to the writer threads; larger ones are streamed, in
/// [`STREAM_CHUNK`]-byte chunks, to the stream thread.
const SMALL_FILE_BYTES: u64 = 1 << 20;
/// Small files per batch handed to a writer thread, at most.
const BATCH_FILES: usize = 32;
/// A batch is handed over once its files hold this many bytes.
const BATCH_BYTES: usize = 1 << 20;
/// Batches queued for the writer threads, at most.
const BATCH_QUEUE: usize = 16;
/// Bytes of tar headers a single entry may use besides its metadata records.
const HEADER_SLACK: u64 = 8 * 512;

/// How to extract.
#[derive(Clone)]
pub struct ExtractOptions {
    /// The caps.
    pub limits: ArchiveLimits,
    /// Give everything created to this (uid, gid); `None` keeps the caller's ids.
    pub owner: Option<(u32, u32)>,
    /// Mode of the extracted tree's root directory (default 0o700, as workspace homes).
    pub root_mode: u32,
    /// The compressed size, for the default byte cap (`max(512 MiB, 20 x archive)`).
    pub archive_bytes: Option<u64>,
    /// Writer threads; 0 (the default) means one per core.
    pub threads: usize,
    /// Make the extracted tree durable before returning (one `syncfs` of the staging
    /// directory's file system, no per-file fsync). On by default: a restore swaps the tree in
    /// and deletes the old one, so without it a power loss right after could leave neither.
    pub sync: bool,
    /// Told about progress now and then.
    pub progress: Option<ProgressFn>,
}

impl Default for ExtractOptions {
    fn default() -> Self {
        Self {
            limits: ArchiveLimits::default(),
            owner: None,
            root_mode: 0o700,
            archive_bytes: None,
            threads: 0,
            sync: true,
            progress: None,
        }
    }
}

impl std::fmt::Debug for ExtractOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ExtractOptions")
            .field("limits", &self.limits)
            .field("owner", &self.owner)
            .field("root_mode", &format_args!("{:o}", self.root_mode))
            .field("archive_bytes", &self.archive_bytes)
            .field("threads", &self.threads)
            .field("sync", &self.sync)
            .field("progress", &self.progress.is_some())
            .finish()
    }
}

/// What an archive held.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ExtractStats {
    /// Regular files.
    pub files: u64,
    /// Directories (the root not included).
    pub dirs: u64,
    /// Symlinks.
    pub symlinks: u64,
    /// Sum of regular file sizes.
    pub bytes: u64,
}

impl ExtractStats {
    /// Files, directories and symlinks.
    pub fn entries(&self) -> u64 {
        self.files + self.dirs + self.symlinks
    }
}

/// The budget marker put in an `io::Error` when metadata outgrows its cap.
#[derive(Debug)]
struct OverBudget;

impl std::fmt::Display for OverBudget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("entry metadata over budget")
    }
}

impl std::error::Error for OverBudget {}

/// Meters the decompressed stream: the parser may read only what the current entry declared
/// plus one entry's worth of metadata before the next entry is handed out.
struct Metered<R> {
    inner: R,
    left: Rc<Cell<u64>>,
    total: Rc<Cell<u64>>,
}

impl<R: Read> Read for Metered<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let left = self.left.get();
        if left == 0 {
            return Err(io::Error::other(OverBudget));
        }
        let want = buf.len().min(usize::try_from(left).unwrap_or(usize::MAX));
        let n = self.inner.read(&mut buf[..want])?;
        self.left.set(left - n as u64);
        self.total.set(self.total.get() + n as u64);
        Ok(n)
    }
}

/// What an entry is, once checked.
enum Kind {
    File { size: u64 },
    Dir,
    Symlink { target: Vec<u8> },
}

/// An entry that passed the checks.
struct Checked {
    raw: Vec<u8>,
    comps: Vec<Vec<u8>>,
    kind: Kind,
    mode: u32,
    mtime: i64,
}

impl Checked {
    fn reject(&self, reason: Rejection) -> SnapshotError {
        SnapshotError::rejected(&self.raw, reason)
    }

    fn name(&self) -> &OsStr {
        OsStr::from_bytes(self.comps.last().map(Vec::as_slice).unwrap_or(b"."))
    }
}

/// Where checked entries go.
trait Sink {
    fn dir(&mut self, e: &Checked) -> Result<()>;
    fn symlink(&mut self, e: &Checked, target: &[u8]) -> Result<()>;
    fn file(&mut self, e: &Checked, size: u64, data: &mut dyn Read) -> Result<()>;
    /// Called every entry; an error stops the extraction (a writer thread failed).
    fn check(&mut self) -> Result<()> {
        Ok(())
    }
}

fn read_error(e: io::Error, after: &[u8], limits: &ArchiveLimits) -> SnapshotError {
    if e.get_ref().is_some_and(|inner| inner.is::<OverBudget>()) {
        let entry = if after.is_empty() { b"(first entry)".to_vec() } else { [b"(after) ", after].concat() };
        return SnapshotError::rejected(&entry, Rejection::MetadataTooLarge { max: limits.max_metadata_bytes });
    }
    let mut msg = format!("reading the tar.zst stream failed: {e}");
    if e.to_string().contains("memory") {
        msg.push_str(&format!(
            " (the zstd window is larger than 2^{} bytes: was it compressed with --long?)",
            limits.window_log_max
        ));
    }
    SnapshotError::Corrupt(msg)
}

fn round_up(n: u64) -> u64 {
    n.saturating_add(511) & !511
}

/// Reads `reader` (tar.zst) entry by entry, checks every entry and hands it to `sink`.
fn drive<R: Read>(reader: R, opts: &ExtractOptions, sink: &mut dyn Sink) -> Result<ExtractStats> {
    let limits = &opts.limits;
    let cap = limits.byte_cap(opts.archive_bytes);
    let meta = limits.max_metadata_bytes.saturating_add(HEADER_SLACK);
    let mut decoder =
        zstd::stream::read::Decoder::new(reader).map_err(|e| SnapshotError::io("setting up the zstd decoder", e))?;
    decoder.window_log_max(limits.window_log_max).map_err(|e| SnapshotError::io("setting up the zstd decoder", e))?;
    let left = Rc::new(Cell::new(meta));
    let total = Rc::new(Cell::new(0u64));
    let mut archive = tar::Archive::new(Metered { inner: decoder, left: Rc::clone(&left), total: Rc::clone(&total) });
    let mut stats = ExtractStats::default();
    let mut declared: u64 = 0;
    let mut seen: u64 = 0;
    let mut last: Vec<u8> = Vec::new();
    {
        let mut entries = archive.entries().map_err(|e| read_error(e, &last, limits))?;
        loop {
            sink.check()?;
            let mut entry = match entries.next() {
                None => break,
                Some(Ok(entry)) => entry,
                Some(Err(e)) => return Err(read_error(e, &last, limits)),
            };
            let raw = entry.path_bytes().into_owned();
            let size = entry.size();
            // The parser may now read this entry's data and the next entry's metadata.
            left.set(round_up(size).saturating_add(meta));
            seen += 1;
            if seen > limits.max_entries {
                return Err(SnapshotError::rejected(&raw, Rejection::TooManyEntries { max: limits.max_entries }));
            }
            let etype = entry.header().entry_type();
            if etype.is_pax_global_extensions() {
                last = raw;
                continue;
            }
            let comps: Vec<Vec<u8>> = split_path(&raw, limits.max_depth)
                .map_err(|r| SnapshotError::rejected(&raw, r))?
                .into_iter()
                .map(<[u8]>::to_vec)
                .collect();
            let corrupt = |e: io::Error| {
                SnapshotError::Corrupt(format!("bad tar header for {:?}: {e}", String::from_utf8_lossy(&raw)))
            };
            let mode = entry.header().mode().map_err(corrupt)?;
            if mode & 0o6000 != 0 {
                return Err(SnapshotError::rejected(&raw, Rejection::SetuidSetgid { mode }));
            }
            let mtime = i64::try_from(entry.header().mtime().unwrap_or(0)).unwrap_or(i64::MAX);
            if let Some(pax) = entry.pax_extensions().map_err(corrupt)? {
                for ext in pax {
                    let ext = ext.map_err(corrupt)?;
                    if ext.key_bytes().starts_with(b"GNU.sparse.") {
                        return Err(SnapshotError::rejected(&raw, Rejection::UnsupportedFormat("PAX sparse files")));
                    }
                }
            }
            let kind = match etype {
                tar::EntryType::Regular | tar::EntryType::Continuous | tar::EntryType::GNUSparse => Kind::File { size },
                tar::EntryType::Directory => Kind::Dir,
                tar::EntryType::Symlink => {
                    let target = entry.link_name_bytes().map(|t| t.into_owned()).unwrap_or_default();
                    check_link_target(&target).map_err(|r| SnapshotError::rejected(&raw, r))?;
                    Kind::Symlink { target }
                }
                tar::EntryType::Link => return Err(SnapshotError::rejected(&raw, Rejection::Hardlink)),
                tar::EntryType::Char | tar::EntryType::Block => {
                    return Err(SnapshotError::rejected(&raw, Rejection::DeviceNode))
                }
                tar::EntryType::Fifo => return Err(SnapshotError::rejected(&raw, Rejection::Fifo)),
                other => return Err(SnapshotError::rejected(&raw, Rejection::UnsupportedType(other.as_byte()))),
            };
            // Every entry's declared data counts (a directory with a size is skipped, but
            // skipping costs decompression too); a sparse file counts its full logical size.
            declared = declared.saturating_add(size);
            if declared > cap {
                return Err(SnapshotError::rejected(&raw, Rejection::TooLarge { declared, cap }));
            }
            let checked = Checked { raw, comps, kind, mode: mode & 0o777, mtime };
            if checked.comps.is_empty() {
                // The archive root (`./`): its mode and owner are warren's to set.
                if !matches!(checked.kind, Kind::Dir) {
                    return Err(checked.reject(Rejection::RootNotDirectory));
                }
                last = checked.raw;
                continue;
            }
            match &checked.kind {
                Kind::Dir => {
                    sink.dir(&checked)?;
                    stats.dirs += 1;
                }
                Kind::Symlink { target } => {
                    sink.symlink(&checked, target)?;
                    stats.symlinks += 1;
                }
                Kind::File { size } => {
                    let mut data = ReadExactly { inner: &mut entry, left: *size, failed: None };
                    let r = sink.file(&checked, *size, &mut data);
                    if let Some(e) = data.failed.take() {
                        // The archive side failed (corrupt, truncated, over budget), whatever
                        // the sink made of it.
                        return Err(match e.get_ref().is_some_and(|i| i.is::<ShortEntry>()) {
                            true => SnapshotError::Corrupt(format!(
                                "entry {:?} is shorter than its header says (truncated archive)",
                                String::from_utf8_lossy(&checked.raw)
                            )),
                            false => read_error(e, &checked.raw, limits),
                        });
                    }
                    r?;
                    stats.files += 1;
                    stats.bytes += size;
                }
            }
            if let Some(p) = &opts.progress {
                if stats.entries() % 1024 == 0 {
                    p(Progress { entries: stats.entries(), bytes: stats.bytes, total_bytes: None });
                }
            }
            last = checked.raw;
        }
    }
    sink.check()?;
    // After the end-of-archive marker: allow record padding, refuse anything bigger, and read
    // to the end so zstd checks its frame checksum.
    left.set(1 << 20);
    let mut rest = archive.into_inner();
    io::copy(&mut rest, &mut io::sink()).map_err(|e| {
        if e.get_ref().is_some_and(|i| i.is::<OverBudget>()) {
            SnapshotError::Corrupt("more than 1 MiB of data after the end of the tar archive".into())
        } else {
            read_error(e, &last, limits)
        }
    })?;
    // Even an empty tree has the end-of-archive marker (two zero blocks).
    if total.get() < 1024 {
        return Err(SnapshotError::Corrupt(format!(
            "the stream holds {} bytes of tar data, too few for a tar archive (an empty or truncated file?)",
            total.get()
        )));
    }
    if let Some(p) = &opts.progress {
        p(Progress { entries: stats.entries(), bytes: stats.bytes, total_bytes: Some(stats.bytes) });
    }
    Ok(stats)
}

#[derive(Debug)]
struct ShortEntry;

impl std::fmt::Display for ShortEntry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("archive entry shorter than its header")
    }
}

impl std::error::Error for ShortEntry {}

/// An entry's data, failing if the archive ends before `left` bytes were read. Keeps the
/// first read error so the caller can tell archive faults from file-system faults.
struct ReadExactly<'a, R> {
    inner: &'a mut R,
    left: u64,
    failed: Option<io::Error>,
}

impl<R: Read> Read for ReadExactly<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.left == 0 {
            return Ok(0);
        }
        let want = buf.len().min(usize::try_from(self.left).unwrap_or(usize::MAX));
        let n = match self.inner.read(&mut buf[..want]) {
            Ok(0) => Err(io::Error::new(io::ErrorKind::UnexpectedEof, ShortEntry)),
            Ok(n) => Ok(n),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => return Err(e),
            Err(e) => Err(e),
        };
        match n {
            Ok(n) => {
                self.left -= n as u64;
                Ok(n)
            }
            Err(e) => {
                let msg = io::Error::new(e.kind(), e.to_string());
                self.failed.get_or_insert(e);
                Err(msg)
            }
        }
    }
}

/// Checks a `tar.zst` stream with every rule [`extract_to`] applies, writing nothing.
/// Returns what it holds.
pub fn scan<R: Read>(reader: R, opts: &ExtractOptions) -> Result<ExtractStats> {
    let mut sink = Scanner { known: HashMap::new() };
    drive(reader, opts, &mut sink)
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Node {
    Dir { implicit: bool },
    File,
    Symlink,
}

/// The in-memory twin of the extractor's file system checks.
struct Scanner {
    known: HashMap<Vec<u8>, Node>,
}

impl Scanner {
    fn place(&mut self, e: &Checked, node: Node) -> Result<()> {
        let mut key = Vec::new();
        for (i, c) in e.comps.iter().enumerate() {
            if i > 0 {
                key.push(b'/');
            }
            key.extend_from_slice(c);
            if i + 1 == e.comps.len() {
                break;
            }
            match self.known.get(&key) {
                Some(Node::Symlink) => return Err(e.reject(Rejection::ThroughSymlink)),
                Some(Node::File) => return Err(e.reject(Rejection::ParentNotDirectory)),
                Some(Node::Dir { .. }) => {}
                None => {
                    self.known.insert(key.clone(), Node::Dir { implicit: true });
                }
            }
        }
        match self.known.get(&key) {
            None => {
                self.known.insert(key, node);
                Ok(())
            }
            Some(Node::Dir { implicit: true }) if node == (Node::Dir { implicit: false }) => {
                self.known.insert(key, node);
                Ok(())
            }
            Some(_) => Err(e.reject(Rejection::Duplicate)),
        }
    }
}

impl Sink for Scanner {
    fn dir(&mut self, e: &Checked) -> Result<()> {
        self.place(e, Node::Dir { implicit: false })
    }

    fn symlink(&mut self, e: &Checked, _target: &[u8]) -> Result<()> {
        self.place(e, Node::Symlink)
    }

    fn file(&mut self, e: &Checked, _size: u64, data: &mut dyn Read) -> Result<()> {
        self.place(e, Node::File)?;
        io::copy(data, &mut io::sink())
            .map_err(|err| SnapshotError::io(format!("reading {:?}", String::from_utf8_lossy(&e.raw)), err))?;
        Ok(())
    }
}

/// Extracts a `tar.zst` stream into `dest`, which must not exist yet (its parent must). `dest`
/// is created with mode 0700 owned by the caller while the extraction runs, and given
/// `opts.root_mode` and `opts.owner` at the end. On any error `dest` is removed whole and the
/// error returned; nothing outside `dest` is ever written.
pub fn extract_to<R: Read>(reader: R, dest: &Path, opts: &ExtractOptions) -> Result<ExtractStats> {
    let (parent, name) = fsutil::split_parent(dest)?;
    let pfd = fsutil::open_dir(parent)?;
    nix::sys::stat::mkdirat(pfd.as_fd(), name, Mode::from_bits_truncate(0o700)).map_err(|e| match e {
        Errno::EEXIST => {
            SnapshotError::Core(warren_core::Error::AlreadyExists(format!("staging directory {}", dest.display())))
        }
        e => SnapshotError::errno(format!("creating staging directory {}", dest.display()), e),
    })?;
    let result = extract_into_new(reader, pfd.as_fd(), name, opts);
    if result.is_err() {
        if let Err(e) = fsutil::remove_tree_at(pfd.as_fd(), name) {
            tracing::warn!(dir = %dest.display(), error = %e, "could not remove the staging directory after a failed extraction");
        }
    }
    result
}

fn extract_into_new<R: Read>(
    reader: R,
    parent: std::os::fd::BorrowedFd<'_>,
    name: &OsStr,
    opts: &ExtractOptions,
) -> Result<ExtractStats> {
    let root = nix::fcntl::openat(
        parent,
        name,
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| SnapshotError::errno("opening the staging directory", e))?;
    let root = Arc::new(root);
    let workers = thread_count(opts.threads).clamp(2, 8);
    let (tx, rx) = mpsc::sync_channel::<Vec<WriteJob>>(BATCH_QUEUE);
    let rx = Arc::new(Mutex::new(rx));
    let failure: Arc<Mutex<Option<SnapshotError>>> = Arc::new(Mutex::new(None));
    let failed = Arc::new(AtomicBool::new(false));
    let owner = opts.owner;
    let files = NewFiles { owner, umask: current_umask() };
    let (stream_tx, stream_rx) = mpsc::sync_channel::<Stream>(STREAM_QUEUE);
    let (spare_tx, spare_rx) = mpsc::channel::<Vec<u8>>();
    let result = std::thread::scope(|s| {
        for _ in 0..workers {
            let rx = Arc::clone(&rx);
            let failure = Arc::clone(&failure);
            let failed = Arc::clone(&failed);
            s.spawn(move || writer_loop(&rx, files, &failure, &failed));
        }
        {
            let failure = Arc::clone(&failure);
            let failed = Arc::clone(&failed);
            s.spawn(move || stream_loop(&stream_rx, &spare_tx, files, &failure, &failed));
        }
        let mut ex = Extractor {
            root: Arc::clone(&root),
            stack: Vec::new(),
            implicit: HashMap::new(),
            dirs: Vec::new(),
            owner,
            jobs: Some(tx),
            stream: Some(stream_tx),
            spare: spare_rx,
            batch: Vec::new(),
            batch_bytes: 0,
            failure: Arc::clone(&failure),
            failed: Arc::clone(&failed),
        };
        let r = drive(reader, opts, &mut ex).and_then(|stats| ex.flush_batch().map(|()| stats));
        // Close the job channels and let the writers finish what they have.
        ex.jobs = None;
        ex.stream = None;
        (r, ex)
    });
    let (r, mut ex) = result;
    if let Some(e) = failure.lock().ok().and_then(|mut f| f.take()) {
        return Err(e);
    }
    let stats = r?;
    ex.finish_dirs()?;
    let chown = |fd: &OwnedFd| -> Result<()> {
        if let Some((uid, gid)) = owner {
            nix::unistd::fchown(fd.as_fd(), Some(Uid::from_raw(uid)), Some(Gid::from_raw(gid)))
                .map_err(|e| SnapshotError::errno("giving the staging directory to the workspace owner", e))?;
        }
        nix::sys::stat::fchmod(fd.as_fd(), Mode::from_bits_truncate(opts.root_mode & 0o777))
            .map_err(|e| SnapshotError::errno("setting the staging directory's mode", e))
    };
    chown(&root)?;
    if opts.sync {
        nix::unistd::syncfs(root.as_fd()).map_err(|e| SnapshotError::errno("syncing the restored files to disk", e))?;
    }
    Ok(stats)
}

struct WriteJob {
    dir: Arc<OwnedFd>,
    raw: Vec<u8>,
    name: Vec<u8>,
    mode: u32,
    mtime: i64,
    data: Vec<u8>,
}

fn writer_loop(
    rx: &Mutex<Receiver<Vec<WriteJob>>>,
    files: NewFiles,
    failure: &Mutex<Option<SnapshotError>>,
    failed: &AtomicBool,
) {
    loop {
        let batch = {
            let Ok(guard) = rx.lock() else { return };
            match guard.recv() {
                Ok(batch) => batch,
                Err(_) => return,
            }
        };
        for job in batch {
            if failed.load(Ordering::Relaxed) {
                break; // drain without writing
            }
            let r = write_file(&job.dir, &job.raw, OsStr::from_bytes(&job.name), job.mode, job.mtime, files, &job.data);
            if let Err(e) = r {
                if let Ok(mut f) = failure.lock() {
                    if f.is_none() {
                        *f = Some(e);
                    }
                }
                failed.store(true, Ordering::Relaxed);
            }
        }
    }
}

fn fs_error(raw: &[u8], doing: &str, e: Errno) -> SnapshotError {
    let shown = String::from_utf8_lossy(raw);
    match e {
        Errno::ENOSPC | Errno::EDQUOT => SnapshotError::Core(warren_core::Error::Conflict(format!(
            "no space left while restoring {shown:?}: free disk space or raise the workspace's disk limit"
        ))),
        e => SnapshotError::errno(format!("{doing} {shown:?} in the staging directory"), e),
    }
}

fn timespec(secs: i64) -> TimeSpec {
    TimeSpec::new(secs, 0)
}

/// Who gets the files a restore creates, and the umask they are created under.
#[derive(Clone, Copy, Debug)]
struct NewFiles {
    owner: Option<(u32, u32)>,
    /// The process's umask when the extraction started; `None` if unknown.
    umask: Option<u32>,
}

/// The process's umask (the `Umask:` line of `/proc/self/status`, Linux 4.7 and later), read
/// without changing it; `None` if it cannot be read.
fn current_umask() -> Option<u32> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find_map(|l| l.strip_prefix("Umask:"))?;
    u32::from_str_radix(line.trim(), 8).ok()
}

/// Creates a regular file under `dir` (never following or replacing anything) with its final
/// permission bits (the staging root is private until the swap, and the descriptor the creating
/// `open` returns may write whatever the mode).
fn create_file(dir: &OwnedFd, raw: &[u8], name: &OsStr, mode: u32) -> Result<File> {
    let fd = nix::fcntl::openat(
        dir.as_fd(),
        name,
        OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::from_bits_truncate(mode & 0o777),
    )
    .map_err(|e| match e {
        Errno::EEXIST => SnapshotError::rejected(raw, Rejection::Duplicate),
        e => fs_error(raw, "creating", e),
    })?;
    Ok(File::from(fd))
}

fn write_error(raw: &[u8], e: io::Error) -> SnapshotError {
    match e.raw_os_error().map(Errno::from_raw) {
        Some(errno @ (Errno::ENOSPC | Errno::EDQUOT)) => fs_error(raw, "writing", errno),
        _ => SnapshotError::io(format!("writing {:?} in the staging directory", String::from_utf8_lossy(raw)), e),
    }
}

/// Gives a written file its owner, mode and time. The mode is set again only when the umask
/// took some of its bits away at creation (or the umask is unknown).
fn finish_file(f: &File, raw: &[u8], mode: u32, mtime: i64, files: NewFiles) -> Result<()> {
    let mode = mode & 0o777;
    if let Some((uid, gid)) = files.owner {
        nix::unistd::fchown(f.as_fd(), Some(Uid::from_raw(uid)), Some(Gid::from_raw(gid)))
            .map_err(|e| fs_error(raw, "chown of", e))?;
    }
    if files.umask.is_none_or(|umask| mode & umask != 0) {
        nix::sys::stat::fchmod(f.as_fd(), Mode::from_bits_truncate(mode)).map_err(|e| fs_error(raw, "chmod of", e))?;
    }
    let t = timespec(mtime);
    nix::sys::stat::futimens(f.as_fd(), &t, &t).map_err(|e| fs_error(raw, "setting the time of", e))
}

/// Creates a regular file under `dir` and fills it with `data`.
fn write_file(
    dir: &OwnedFd,
    raw: &[u8],
    name: &OsStr,
    mode: u32,
    mtime: i64,
    files: NewFiles,
    data: &[u8],
) -> Result<()> {
    let mut f = create_file(dir, raw, name, mode)?;
    f.write_all(data).map_err(|e| write_error(raw, e))?;
    finish_file(&f, raw, mode, mtime, files)
}

/// Bytes per chunk of a large file sent to the stream thread.
const STREAM_CHUNK: usize = 1 << 20;
/// Chunks queued for the stream thread, at most.
const STREAM_QUEUE: usize = 8;

/// A large file on its way to the stream thread, which writes it while the calling thread goes
/// on decompressing. The file is created (and a duplicate name refused) on the calling thread.
enum Stream {
    Open { file: File, raw: Vec<u8>, mode: u32, mtime: i64 },
    Chunk(Vec<u8>),
    Close,
}

/// Writes the large files sent to it, one at a time, in order; emptied chunks go back for reuse.
fn stream_loop(
    rx: &Receiver<Stream>,
    spare: &mpsc::Sender<Vec<u8>>,
    files: NewFiles,
    failure: &Mutex<Option<SnapshotError>>,
    failed: &AtomicBool,
) {
    let mut current: Option<(File, Vec<u8>, u32, i64)> = None;
    for msg in rx {
        let r = match msg {
            Stream::Open { file, raw, mode, mtime } => {
                current = Some((file, raw, mode, mtime));
                Ok(())
            }
            Stream::Chunk(mut buf) => {
                let r = match &mut current {
                    Some((f, raw, ..)) if !failed.load(Ordering::Relaxed) => {
                        f.write_all(&buf).map_err(|e| write_error(raw, e))
                    }
                    _ => Ok(()),
                };
                buf.clear();
                let _ = spare.send(buf);
                r
            }
            Stream::Close => match current.take() {
                Some((f, raw, mode, mtime)) if !failed.load(Ordering::Relaxed) => {
                    finish_file(&f, &raw, mode, mtime, files)
                }
                _ => Ok(()),
            },
        };
        if let Err(e) = r {
            current = None;
            if let Ok(mut f) = failure.lock() {
                if f.is_none() {
                    *f = Some(e);
                }
            }
            failed.store(true, Ordering::Relaxed);
        }
    }
}

/// Writes checked entries beneath the staging root.
struct Extractor {
    root: Arc<OwnedFd>,
    /// The directories last walked into, from the root: component name and descriptor.
    stack: Vec<(Vec<u8>, Arc<OwnedFd>)>,
    /// Directories created because a later entry needed them, not (yet) named by an entry:
    /// index into `dirs`.
    implicit: HashMap<Vec<Vec<u8>>, usize>,
    /// Every directory made: path, final mode, mtime (applied at the end).
    dirs: Vec<(Vec<Vec<u8>>, u32, Option<i64>)>,
    owner: Option<(u32, u32)>,
    jobs: Option<SyncSender<Vec<WriteJob>>>,
    /// Large files go to the stream thread; emptied chunks come back on `spare`.
    stream: Option<SyncSender<Stream>>,
    spare: Receiver<Vec<u8>>,
    /// Small files not yet handed to the writers, and their bytes.
    batch: Vec<WriteJob>,
    batch_bytes: usize,
    failure: Arc<Mutex<Option<SnapshotError>>>,
    failed: Arc<AtomicBool>,
}

impl Extractor {
    /// Hands the pending small files to the writer threads.
    fn flush_batch(&mut self) -> Result<()> {
        if self.batch.is_empty() {
            return Ok(());
        }
        let batch = std::mem::replace(&mut self.batch, Vec::with_capacity(BATCH_FILES));
        self.batch_bytes = 0;
        let jobs = self.jobs.as_ref().ok_or_else(|| SnapshotError::internal("restore writers already stopped"))?;
        jobs.send(batch).map_err(|_| SnapshotError::internal("restore writer threads stopped unexpectedly"))
    }

    fn chown_fd(&self, fd: &OwnedFd, raw: &[u8]) -> Result<()> {
        if let Some((uid, gid)) = self.owner {
            nix::unistd::fchown(fd.as_fd(), Some(Uid::from_raw(uid)), Some(Gid::from_raw(gid)))
                .map_err(|e| fs_error(raw, "chown of", e))?;
        }
        Ok(())
    }

    /// The directory `comps` (relative to the root), opened component by component without
    /// following symlinks; missing ones are created.
    fn open_dir(&mut self, comps: &[Vec<u8>], raw: &[u8]) -> Result<Arc<OwnedFd>> {
        let mut common = 0;
        while common < self.stack.len() && common < comps.len() && self.stack[common].0 == comps[common] {
            common += 1;
        }
        self.stack.truncate(common);
        for i in common..comps.len() {
            let cur = self.stack.last().map(|(_, fd)| Arc::clone(fd)).unwrap_or_else(|| Arc::clone(&self.root));
            let name = OsStr::from_bytes(&comps[i]);
            let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
            let fd = match nix::fcntl::openat(cur.as_fd(), name, flags, Mode::empty()) {
                Ok(fd) => fd,
                Err(Errno::ENOENT) => {
                    match nix::sys::stat::mkdirat(cur.as_fd(), name, Mode::from_bits_truncate(0o700)) {
                        Ok(()) | Err(Errno::EEXIST) => {}
                        Err(e) => return Err(fs_error(raw, "creating a parent directory of", e)),
                    }
                    let fd = nix::fcntl::openat(cur.as_fd(), name, flags, Mode::empty())
                        .map_err(|e| self.classify(&cur, name, raw, e))?;
                    self.chown_fd(&fd, raw)?;
                    let path = comps[..=i].to_vec();
                    self.implicit.insert(path.clone(), self.dirs.len());
                    self.dirs.push((path, 0o755, None));
                    fd
                }
                Err(e) => return Err(self.classify(&cur, name, raw, e)),
            };
            self.stack.push((comps[i].clone(), Arc::new(fd)));
        }
        Ok(self.stack.last().map(|(_, fd)| Arc::clone(fd)).unwrap_or_else(|| Arc::clone(&self.root)))
    }

    /// Why a parent could not be opened as a directory.
    fn classify(&self, dir: &OwnedFd, name: &OsStr, raw: &[u8], e: Errno) -> SnapshotError {
        if matches!(e, Errno::ELOOP | Errno::ENOTDIR) {
            let is_link = fstatat(dir.as_fd(), name, AtFlags::AT_SYMLINK_NOFOLLOW)
                .map(|st| SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT == SFlag::S_IFLNK)
                .unwrap_or(false);
            return SnapshotError::rejected(
                raw,
                if is_link { Rejection::ThroughSymlink } else { Rejection::ParentNotDirectory },
            );
        }
        fs_error(raw, "opening a parent directory of", e)
    }

    fn parent(&mut self, e: &Checked) -> Result<Arc<OwnedFd>> {
        let n = e.comps.len() - 1;
        let comps = e.comps[..n].to_vec();
        self.open_dir(&comps, &e.raw)
    }

    /// Gives every directory its final mode and mtime, deepest first.
    fn finish_dirs(&mut self) -> Result<()> {
        let dirs = std::mem::take(&mut self.dirs);
        for (comps, mode, mtime) in dirs.iter().rev() {
            let raw = comps.join(&b'/');
            let fd = self.open_dir(comps, &raw)?;
            nix::sys::stat::fchmod(fd.as_fd(), Mode::from_bits_truncate(mode & 0o777))
                .map_err(|e| fs_error(&raw, "chmod of", e))?;
            if let Some(t) = mtime {
                let t = timespec(*t);
                nix::sys::stat::futimens(fd.as_fd(), &t, &t).map_err(|e| fs_error(&raw, "setting the time of", e))?;
            }
        }
        self.stack.clear();
        Ok(())
    }
}

impl Sink for Extractor {
    fn check(&mut self) -> Result<()> {
        if self.failed.load(Ordering::Relaxed) {
            let e = self.failure.lock().ok().and_then(|mut f| f.take());
            return Err(e.unwrap_or_else(|| SnapshotError::internal("a restore writer thread failed")));
        }
        Ok(())
    }

    fn dir(&mut self, e: &Checked) -> Result<()> {
        let parent = self.parent(e)?;
        let name = e.name();
        match nix::sys::stat::mkdirat(parent.as_fd(), name, Mode::from_bits_truncate(0o700)) {
            Ok(()) => {
                let fd = nix::fcntl::openat(
                    parent.as_fd(),
                    name,
                    OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
                    Mode::empty(),
                )
                .map_err(|err| self.classify(&parent, name, &e.raw, err))?;
                self.chown_fd(&fd, &e.raw)?;
                self.dirs.push((e.comps.clone(), e.mode, Some(e.mtime)));
                // Entries usually continue inside this directory.
                self.stack.push((e.comps[e.comps.len() - 1].clone(), Arc::new(fd)));
                Ok(())
            }
            Err(Errno::EEXIST) => match self.implicit.remove(&e.comps) {
                Some(i) => {
                    self.dirs[i] = (e.comps.clone(), e.mode, Some(e.mtime));
                    Ok(())
                }
                None => Err(e.reject(Rejection::Duplicate)),
            },
            Err(err) => Err(fs_error(&e.raw, "creating directory", err)),
        }
    }

    fn symlink(&mut self, e: &Checked, target: &[u8]) -> Result<()> {
        let parent = self.parent(e)?;
        let name = e.name();
        nix::unistd::symlinkat(OsStr::from_bytes(target), parent.as_fd(), name).map_err(|err| match err {
            Errno::EEXIST => e.reject(Rejection::Duplicate),
            err => fs_error(&e.raw, "creating symlink", err),
        })?;
        if let Some((uid, gid)) = self.owner {
            nix::unistd::fchownat(
                parent.as_fd(),
                name,
                Some(Uid::from_raw(uid)),
                Some(Gid::from_raw(gid)),
                AtFlags::AT_SYMLINK_NOFOLLOW,
            )
            .map_err(|err| fs_error(&e.raw, "chown of", err))?;
        }
        let t = timespec(e.mtime);
        nix::sys::stat::utimensat(parent.as_fd(), name, &t, &t, UtimensatFlags::NoFollowSymlink)
            .map_err(|err| fs_error(&e.raw, "setting the time of", err))?;
        Ok(())
    }

    fn file(&mut self, e: &Checked, size: u64, data: &mut dyn Read) -> Result<()> {
        let parent = self.parent(e)?;
        if size <= SMALL_FILE_BYTES {
            let mut buf = Vec::with_capacity(usize::try_from(size).unwrap_or(0));
            data.read_to_end(&mut buf).map_err(|err| SnapshotError::io("reading the archive", err))?;
            let job = WriteJob {
                dir: parent,
                raw: e.raw.clone(),
                name: e.comps[e.comps.len() - 1].clone(),
                mode: e.mode,
                mtime: e.mtime,
                data: buf,
            };
            self.batch_bytes += job.data.len();
            self.batch.push(job);
            if self.batch.len() >= BATCH_FILES || self.batch_bytes >= BATCH_BYTES {
                self.flush_batch()?;
            }
            return Ok(());
        }
        let file = create_file(&parent, &e.raw, e.name(), e.mode)?;
        let stopped = || SnapshotError::internal("the restore stream thread stopped unexpectedly");
        let stream = self.stream.as_ref().ok_or_else(stopped)?;
        stream.send(Stream::Open { file, raw: e.raw.clone(), mode: e.mode, mtime: e.mtime }).map_err(|_| stopped())?;
        loop {
            let mut buf = self.spare.try_recv().unwrap_or_default();
            buf.resize(STREAM_CHUNK, 0);
            let mut n = 0;
            while n < buf.len() {
                match data.read(&mut buf[n..]) {
                    Ok(0) => break,
                    Ok(k) => n += k,
                    Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
                    Err(err) => return Err(SnapshotError::io("reading the archive", err)),
                }
            }
            if n == 0 {
                break;
            }
            buf.truncate(n);
            stream.send(Stream::Chunk(buf)).map_err(|_| stopped())?;
            if n < STREAM_CHUNK {
                break;
            }
        }
        stream.send(Stream::Close).map_err(|_| stopped())
    }
}
