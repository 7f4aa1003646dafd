//! Moving a tree in and out of a workspace as a plain tar.
//!
//! Both directions go through [`Confined`], so every open is confined beneath the workspace by
//! the kernel. Only regular files and directories travel: a download leaves symlinks and
//! special files out (they are counted in the log); an upload with anything else (symlinks,
//! hard links, devices, FIFOs, sparse files), an absolute path or a `..` component is refused
//! whole, before anything is written, because every entry is checked first.

use std::ffi::OsStr;
use std::io::{self, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use tar::EntryType;
use tokio::sync::mpsc;
use tracing::{debug, warn};
use warren_core::fs::{Confined, FileKind, WriteOptions};
use warren_core::{Error, Result, WorkspacePath};

use crate::api::ArchiveResult;

/// Most entries an uploaded archive may have.
pub const MAX_ENTRIES: usize = 100_000;
/// Deepest directory a download descends into.
const MAX_DEPTH: usize = 256;

/// A `Write` that hands chunks to an async receiver (the response body).
#[derive(Debug)]
pub struct ChannelWriter {
    tx: mpsc::Sender<io::Result<Vec<u8>>>,
    buf: Vec<u8>,
}

const CHUNK: usize = 256 << 10;

impl ChannelWriter {
    /// Sends to `tx`.
    pub fn new(tx: mpsc::Sender<io::Result<Vec<u8>>>) -> Self {
        Self { tx, buf: Vec::with_capacity(CHUNK) }
    }

    fn send(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let chunk = std::mem::replace(&mut self.buf, Vec::with_capacity(CHUNK));
        self.tx.blocking_send(Ok(chunk)).map_err(|_| io::Error::new(io::ErrorKind::BrokenPipe, "the client went away"))
    }
}

impl Write for ChannelWriter {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        self.buf.extend_from_slice(data);
        if self.buf.len() >= CHUNK {
            self.send()?;
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.send()
    }
}

/// Checks that `root` is a directory of the workspace (so a bad request fails before the
/// response starts).
pub fn check_dir(c: &Confined, root: &WorkspacePath) -> Result<()> {
    let st = c.stat(root)?;
    if st.kind != FileKind::Dir {
        return Err(Error::InvalidPath { path: root.to_string(), reason: "not a directory".into() });
    }
    Ok(())
}

/// Writes a tar of the tree under `root` (paths relative to it) to `out`.
pub fn write_tar<W: Write>(c: &Confined, root: &WorkspacePath, out: W) -> io::Result<W> {
    let mut b = tar::Builder::new(out);
    let mut skipped = 0u64;
    let mut stack: Vec<(WorkspacePath, usize)> = vec![(WorkspacePath::root(), 0)];
    while let Some((rel, depth)) = stack.pop() {
        let dir = root.join(&rel);
        let entries = match c.list(&dir) {
            Ok(e) => e,
            Err(Error::NotFound(_)) if !rel.is_root() => continue, // removed meanwhile
            Err(e) => return Err(io::Error::other(e.to_string())),
        };
        let mut subdirs = Vec::new();
        for e in entries {
            let Ok(name) = WorkspacePath::new(&e.name) else {
                skipped += 1;
                continue;
            };
            let child = rel.join(&name);
            match e.kind {
                FileKind::Dir => {
                    let mut h = tar::Header::new_gnu();
                    h.set_entry_type(EntryType::Directory);
                    h.set_mode(e.mode & 0o777);
                    h.set_mtime(u64::try_from(e.mtime).unwrap_or(0));
                    h.set_size(0);
                    b.append_data(&mut h, child.as_path(), io::empty())?;
                    if depth + 1 < MAX_DEPTH {
                        subdirs.push((child, depth + 1));
                    } else {
                        skipped += 1;
                    }
                }
                FileKind::File => {
                    let (file, st) = match c.open_read(&root.join(&child)) {
                        Ok(f) => f,
                        Err(Error::NotFound(_)) => continue,
                        Err(e) => {
                            debug!(path = %child, error = %e, "leaving a file out of the archive");
                            skipped += 1;
                            continue;
                        }
                    };
                    let mut h = tar::Header::new_gnu();
                    h.set_entry_type(EntryType::Regular);
                    h.set_mode(st.mode & 0o777);
                    h.set_mtime(u64::try_from(st.mtime).unwrap_or(0));
                    h.set_size(st.size);
                    // Exactly `size` bytes even if the file changes while it is read.
                    let data = file.take(st.size).chain(io::repeat(0)).take(st.size);
                    b.append_data(&mut h, child.as_path(), data)?;
                }
                FileKind::Symlink | FileKind::Other => skipped += 1,
            }
        }
        // Depth-first, in name order.
        stack.extend(subdirs.into_iter().rev());
    }
    if skipped > 0 {
        debug!(skipped, "symlinks, special files and unreadable entries were left out of the archive");
    }
    b.into_inner()
}

/// An entry to write, once all are checked.
enum Planned {
    Dir,
    /// File data at `start .. start + size` of the archive.
    File {
        start: u64,
        size: u64,
        mode: u32,
    },
}

/// Extracts the tar in `data` beneath `root`, creating `root` if needed. Every entry is
/// checked before the first is written.
pub fn extract_tar(c: &Confined, root: &WorkspacePath, data: &[u8]) -> Result<ArchiveResult> {
    let bad = |what: String| Error::InvalidRequest(format!("archive refused: {what}; nothing was written"));
    let mut plan: Vec<(WorkspacePath, Planned)> = Vec::new();
    let mut ar = tar::Archive::new(data);
    let entries = ar.entries().map_err(|e| bad(format!("not a tar archive ({e})")))?;
    for entry in entries {
        let entry = entry.map_err(|e| bad(format!("not a valid tar archive ({e})")))?;
        if plan.len() >= MAX_ENTRIES {
            return Err(bad(format!("more than {MAX_ENTRIES} entries")));
        }
        let raw = entry.path_bytes();
        let shown = String::from_utf8_lossy(&raw).into_owned();
        let path = Path::new(OsStr::from_bytes(&raw));
        if path.is_absolute() {
            return Err(bad(format!("entry {shown:?} has an absolute path")));
        }
        let rel = WorkspacePath::new(path).map_err(|e| bad(format!("entry {shown:?}: {e}")))?;
        let kind = entry.header().entry_type();
        let mode = entry.header().mode().unwrap_or(0o644) & 0o777;
        match kind {
            EntryType::Regular | EntryType::Continuous => {
                if rel.is_root() {
                    return Err(bad(format!("file entry {shown:?} has no name")));
                }
                let start = entry.raw_file_position();
                plan.push((rel, Planned::File { start, size: entry.size(), mode }));
            }
            EntryType::Directory => {
                if !rel.is_root() {
                    plan.push((rel, Planned::Dir));
                }
            }
            EntryType::XGlobalHeader => {}
            other => {
                let what = match other {
                    EntryType::Symlink => "a symlink",
                    EntryType::Link => "a hard link",
                    EntryType::Char | EntryType::Block => "a device",
                    EntryType::Fifo => "a FIFO",
                    EntryType::GNUSparse => "a sparse file",
                    _ => "of an unsupported type",
                };
                return Err(bad(format!(
                    "entry {shown:?} is {what}: only regular files and directories can be uploaded"
                )));
            }
        }
    }
    c.mkdir(root, true)?;
    let mut res = ArchiveResult::default();
    for (rel, file) in plan {
        let dest = root.join(&rel);
        match file {
            Planned::Dir => {
                c.mkdir(&dest, true)?;
                res.dirs += 1;
            }
            Planned::File { start, size, mode } => {
                let start = usize::try_from(start).map_err(|_| bad("offset overflow".into()))?;
                let end = usize::try_from(size).ok().and_then(|s| start.checked_add(s));
                let Some(bytes) = end.and_then(|end| data.get(start..end)) else {
                    return Err(bad(format!("entry {rel} runs past the end of the archive")));
                };
                c.write(&dest, bytes, WriteOptions { mode, create_parents: true })?;
                res.files += 1;
                res.bytes += size;
            }
        }
    }
    Ok(res)
}

/// Runs [`write_tar`] on a blocking thread, returning the receiving end of its chunks.
pub fn spawn_tar(c: Confined, root: WorkspacePath) -> mpsc::Receiver<io::Result<Vec<u8>>> {
    let (tx, rx) = mpsc::channel(4);
    tokio::task::spawn_blocking(move || {
        let w = ChannelWriter::new(tx.clone());
        let r = write_tar(&c, &root, w).and_then(|mut w| w.flush());
        if let Err(e) = r {
            if e.kind() == io::ErrorKind::BrokenPipe {
                debug!(path = %root, "archive download: the client went away");
            } else {
                warn!(path = %root, error = %e, "archive download failed");
                // An error item aborts the response body: the client sees a cut-off transfer,
                // not a tar that looks complete.
                let _ = tx.blocking_send(Err(e));
            }
        }
    });
    rx
}
