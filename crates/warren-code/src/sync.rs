//! Writing a session's recorded changes back to the host project.
//!
//! What is written is the history, never the live workspace: the changes between the last
//! synced commit (the base at first) and the branch's head, exactly what `changes` and `diff`
//! show. Before anything is written, every changed path on the host is compared with its last
//! synced version (kind, content, owner-exec bit); any difference is a conflict, and the sync is
//! refused with the whole list unless forced. A path beneath a symlink or file that this same
//! sync deletes (a symlink or file that became a directory) is compared as absent: the deletion
//! comes first, and the deleted entry's own comparison says whether the host changed it.
//!
//! Content is never held in memory: sizes come from the tree listing, a host file of the
//! recorded size is compared with the recorded blob streamed from `git cat-file`, and each file
//! is written by streaming its blob into the temporary file that is renamed into place, one
//! file at a time (runs of zeros become holes, as they were in the sandbox). One sync writes at
//! most [`MAX_SYNC_BYTES`] bytes of file content unless told otherwise
//! ([`SyncOptions::max_bytes`]); more is refused before anything is written.
//!
//! Writes happen beneath the project through [`crate::tree`]: never through a symlink (a
//! symlinked parent on the host is a conflict, and never followed even when forced), never
//! under `.git`, each file atomically (temp, fsync, rename). Deletions come first (so a file can
//! replace a directory), then writes in path order; directories emptied by deletions are
//! removed. A replaced file keeps its owner and permission bits (the exec bit follows the
//! history); a new one gets the parent directory's owner and 0644 or 0755. A symlink is synced
//! only when it resolves inside the project, judged against the tree being synced and the host
//! ([`tree::link_resolves_inside`], "Symlinks written by a sync" in [`crate::tree`]); the
//! verdicts are reached before anything is changed, so a dry run reports what a sync does.

use std::collections::{HashMap, HashSet};
use std::os::fd::{AsFd, BorrowedFd};
use std::path::Path;

use nix::errno::Errno;
use nix::fcntl::AtFlags;
use nix::sys::stat::{fstatat, SFlag};
use serde::{Deserialize, Serialize};
use warren_core::{Error, Result};

use crate::git::{CatFile, Git, TreeEntry, MODE_EXEC, MODE_LINK};
use crate::record::Skipped;
use crate::tree::{self, Current, LinkTree, Node, Owner};

/// The most bytes of file content one sync writes unless [`SyncOptions::max_bytes`] says
/// otherwise (1 GiB): a sandbox can make files that cost it nothing (sparse files compress to
/// nothing in the history) but that would fill the host's disk once written out.
pub const MAX_SYNC_BYTES: u64 = 1 << 30;

/// The longest symlink target read from the history (Linux `PATH_MAX`).
const MAX_LINK_TARGET: u64 = 4096;

/// Options of a sync.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SyncOptions {
    /// Overwrite host files that changed since the session started (or the last sync).
    pub force: bool,
    /// Only check: report what would be written and the conflicts, change nothing.
    pub dry_run: bool,
    /// The most bytes of file content this sync may write (`None`: [`MAX_SYNC_BYTES`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_bytes: Option<u64>,
}

/// A host file that changed since the session started (or since the last sync).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Conflict {
    /// The path, relative to the project.
    pub path: String,
    /// What is different on the host.
    pub reason: String,
}

/// What a sync did (or, for a dry run, would do).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SyncReport {
    /// The last synced commit before this sync.
    pub from: String,
    /// The commit synced.
    pub to: String,
    /// Whether anything was changed on the host (false for a dry run and for a refused sync).
    pub applied: bool,
    /// Files and symlinks written (or to be written).
    pub written: Vec<String>,
    /// Paths deleted (or to be deleted).
    pub deleted: Vec<String>,
    /// Changes not applied, and why.
    pub skipped: Vec<Skipped>,
    /// Host files that changed since the last sync (overwritten when forced).
    pub conflicts: Vec<Conflict>,
}

fn shown(p: &[u8]) -> String {
    String::from_utf8_lossy(p).into_owned()
}

/// What the history held at a changed path when it was last synced.
enum Was<'a> {
    Absent,
    /// A directory (a prefix of other paths): a directory that became a file or a symlink.
    Dir,
    File(&'a TreeEntry),
    Link(&'a TreeEntry),
}

/// Every proper prefix (directory) of the paths of a tree.
fn dirs_of(tree: &HashMap<Vec<u8>, TreeEntry>) -> HashSet<Vec<u8>> {
    let mut dirs = HashSet::new();
    for path in tree.keys() {
        let mut p: &[u8] = path;
        while let Some(i) = p.iter().rposition(|b| *b == b'/') {
            p = &p[..i];
            if !dirs.insert(p.to_vec()) {
                break;
            }
        }
    }
    dirs
}

/// Compares the host file at `path` with blob `sha`, both streamed. `Some(why)` when they
/// differ (or the host file cannot be read safely).
fn content_differs(cat: &mut CatFile, sha: &str, root: BorrowedFd<'_>, path: &[u8]) -> Result<Option<String>> {
    let changed = || Some("changed on the host since the last sync".to_owned());
    let mut host = match tree::open_regular(root, path) {
        Ok(Some((f, _))) => f,
        Ok(None) => return Ok(Some("deleted on the host since the last sync".into())),
        Err(why) => return Ok(Some(why)),
    };
    cat.stream(sha, |blob, _| {
        const CHUNK: usize = 64 * 1024;
        let (mut a, mut b) = (vec![0u8; CHUNK], vec![0u8; CHUNK]);
        loop {
            let n = tree::read_full(blob, &mut a).map_err(|e| Error::io("reading from git cat-file", e))?;
            let m = match tree::read_full(&mut host, &mut b) {
                Ok(m) => m,
                Err(e) => return Ok(Some(format!("could not be read on the host: {e}"))),
            };
            if a[..n] != b[..m] {
                return Ok(changed());
            }
            if n < CHUNK {
                return Ok(None);
            }
        }
    })
}

/// Why the host's `cur` at `path` is not what the history had there when last synced (`None`:
/// it is).
fn differs(
    was: &Was<'_>,
    cur: Current,
    cat: &mut CatFile,
    root: BorrowedFd<'_>,
    path: &[u8],
) -> Result<Option<String>> {
    Ok(match (was, cur) {
        (_, Current::Other(why)) | (_, Current::Blocked { reason: why, .. }) => Some(why),
        (Was::Absent, Current::Absent) => None,
        (Was::Absent, _) => Some("created on the host since the last sync".into()),
        // Its contents are changed paths of their own, compared one by one.
        (Was::Dir, Current::Dir | Current::Absent) => None,
        (_, Current::Absent) => Some("deleted on the host since the last sync".into()),
        (Was::File(e), Current::File { size, exec }) => {
            if size != e.size {
                Some("changed on the host since the last sync".into())
            } else if let Some(why) = content_differs(cat, &e.sha, root, path)? {
                Some(why)
            } else if exec != (e.mode == MODE_EXEC) {
                Some("its executable bit changed on the host since the last sync".into())
            } else {
                None
            }
        }
        (Was::Link(e), Current::Symlink(t)) => {
            if cat.small_blob(&e.sha, MAX_LINK_TARGET)? == t {
                None
            } else {
                Some("the symlink changed on the host since the last sync".into())
            }
        }
        (_, Current::Dir) => Some("a directory is in its place on the host".into()),
        (_, Current::Symlink(_)) => Some("a symlink is in its place on the host".into()),
        (Was::Dir | Was::Link(_), Current::File { .. }) => Some("a regular file is in its place on the host".into()),
    })
}

/// Permission bits of the regular file at `path`, if there is one.
fn perm_of(root: BorrowedFd<'_>, path: &[u8]) -> Option<u32> {
    let (dir, name) = tree::open_parent(root, path).ok()?;
    match fstatat(dir.as_fd(), name, AtFlags::AT_SYMLINK_NOFOLLOW) {
        Ok(st) if tree::kind_of(&st) == SFlag::S_IFREG => Some(st.st_mode & 0o777),
        Ok(_) | Err(Errno::ENOENT) | Err(_) => None,
    }
}

/// The tree being synced, as links are resolved against it.
struct Synced<'a> {
    new: &'a HashMap<Vec<u8>, TreeEntry>,
    dirs: &'a HashSet<Vec<u8>>,
    changed: &'a HashSet<&'a [u8]>,
    cat: &'a mut CatFile,
}

impl LinkTree for Synced<'_> {
    fn node(&mut self, path: &[u8]) -> Result<Node> {
        Ok(match self.new.get(path) {
            Some(e) if e.mode == MODE_LINK => Node::Link(self.cat.small_blob(&e.sha, MAX_LINK_TARGET)?),
            Some(_) => Node::File,
            None if self.dirs.contains(path) => Node::Dir,
            None => Node::Absent,
        })
    }

    fn changed(&self, path: &[u8]) -> bool {
        self.changed.contains(path)
    }
}

/// Writes the changes `from..to` of the history into `project`.
pub(crate) fn sync(
    git: &Git,
    project: &Path,
    from: &str,
    to: &str,
    exclude: &[String],
    opts: SyncOptions,
) -> Result<SyncReport> {
    let mut report = SyncReport { from: from.to_owned(), to: to.to_owned(), ..SyncReport::default() };
    if from == to {
        return Ok(report);
    }
    let changes = git.name_status(from, to)?;
    let old = git.ls_tree(from)?;
    let new = git.ls_tree(to)?;
    let root = tree::open_root(project)?;
    let root = root.as_fd();
    let mut cat = git.cat_file()?;

    // What each changed path must become (no content: that is streamed at write time).
    let mut plan: Vec<(&[u8], Option<&TreeEntry>)> = Vec::new();
    for (_, path) in &changes {
        if tree::path_excluded(path, exclude) {
            report.skipped.push(Skipped { path: shown(path), reason: "under .git or excluded: never synced".into() });
            continue;
        }
        plan.push((path, new.get(path)));
    }
    let bytes: u64 = plan.iter().filter_map(|(_, e)| e.filter(|e| e.mode != MODE_LINK)).map(|e| e.size).sum();
    let max = opts.max_bytes.unwrap_or(MAX_SYNC_BYTES);
    if bytes > max {
        return Err(Error::InvalidRequest(format!(
            "sync refused: it would write {bytes} bytes of file content, more than the {max} bytes one sync may \
             write; nothing was changed. Look at what the session made (warren code changes), then sync again with \
             a higher limit (--max-bytes) if it is what you want"
        )));
    }
    let changed: HashSet<&[u8]> = plan.iter().map(|(p, _)| *p).collect();
    // Files and symlinks this sync deletes: what was beneath them on the host goes with them.
    let deleted: HashSet<&[u8]> =
        plan.iter().filter(|(p, e)| e.is_none() && old.contains_key(*p)).map(|(p, _)| *p).collect();

    // What the host must still hold for each changed path.
    let old_dirs = dirs_of(&old);
    for (path, _) in &plan {
        let was = match old.get(*path) {
            Some(e) if e.mode == MODE_LINK => Was::Link(e),
            Some(e) => Was::File(e),
            None if old_dirs.contains(*path) => Was::Dir,
            None => Was::Absent,
        };
        let cur = match tree::current(root, path) {
            Current::Blocked { parent, .. } if deleted.contains(parent.as_slice()) => Current::Absent,
            c => c,
        };
        if let Some(reason) = differs(&was, cur, &mut cat, root, path)? {
            report.conflicts.push(Conflict { path: shown(path), reason });
        }
    }
    drop(old_dirs);
    if !report.conflicts.is_empty() && !opts.force && !opts.dry_run {
        let list: Vec<String> = report.conflicts.iter().map(|c| format!("  {}: {}", c.path, c.reason)).collect();
        return Err(Error::Conflict(format!(
            "sync refused: {} host file(s) changed since the session started (or since the last sync), and writing \
             the session's changes would overwrite them:\n{}\nreview them (warren code diff), then sync again with \
             --force to overwrite them",
            report.conflicts.len(),
            list.join("\n")
        )));
    }

    // Which symlinks resolve inside the project, judged before anything changes.
    let new_dirs = dirs_of(&new);
    let mut refused_links: HashSet<&[u8]> = HashSet::new();
    for (path, e) in &plan {
        let Some(e) = e.filter(|e| e.mode == MODE_LINK) else { continue };
        let target = cat.small_blob(&e.sha, MAX_LINK_TARGET)?;
        let mut view = Synced { new: &new, dirs: &new_dirs, changed: &changed, cat: &mut cat };
        if let Err(why) = tree::link_resolves_inside(root, &mut view, path, &target)? {
            report.skipped.push(Skipped {
                path: shown(path),
                reason: format!(
                    "a symlink to {:?}, which does not resolve inside the project ({why}): not synced",
                    String::from_utf8_lossy(&target)
                ),
            });
            refused_links.insert(path);
        }
    }
    drop(new_dirs);

    // Deletions first, so a file can take the place of a directory.
    let mut emptied: Vec<Vec<u8>> = Vec::new();
    for (path, e) in &plan {
        if e.is_some() {
            continue;
        }
        if opts.dry_run {
            report.deleted.push(shown(path));
            continue;
        }
        match tree::remove(root, path) {
            Ok(true) => {
                report.deleted.push(shown(path));
                emptied.push(tree::split(path).0.to_vec());
            }
            Ok(false) => report.skipped.push(Skipped {
                path: shown(path),
                reason: "a directory is in its place on the host: left alone".into(),
            }),
            Err(e @ Error::Io { .. }) => return Err(e),
            Err(e) => report.skipped.push(Skipped { path: shown(path), reason: e.to_string() }),
        }
    }
    emptied.sort();
    emptied.dedup();
    for d in emptied.iter().rev() {
        // Only directories the deletions emptied, and only if the history has nothing under them.
        let mut prefix = d.clone();
        prefix.push(b'/');
        if !new.keys().any(|k| k.starts_with(&prefix)) {
            tree::prune_empty(root, d);
        }
    }

    let mut writes: Vec<(&[u8], &TreeEntry)> =
        plan.iter().filter_map(|(p, e)| e.map(|e| (*p, e))).filter(|(p, _)| !refused_links.contains(p)).collect();
    writes.sort_by(|a, b| a.0.cmp(b.0));
    for (path, e) in writes {
        if opts.dry_run {
            report.written.push(shown(path));
            continue;
        }
        let (parent, name) = tree::split(path);
        let name = <std::ffi::OsStr as std::os::unix::ffi::OsStrExt>::from_bytes(name);
        let res = tree::make_dirs(root, parent, Owner::Inherit, 0o755).and_then(|dir| {
            if e.mode == MODE_LINK {
                let target = cat.small_blob(&e.sha, MAX_LINK_TARGET)?;
                tree::write_symlink(dir.as_fd(), name, &target, Owner::Inherit, path)
            } else {
                let base = perm_of(root, path).unwrap_or(0o644);
                let mode = if e.mode == MODE_EXEC { base | 0o100 | ((base & 0o044) >> 2) } else { base & !0o111 };
                cat.stream(&e.sha, |data, _| tree::write_file(dir.as_fd(), name, data, mode, Owner::Inherit, path))
                    .map(drop)
            }
        });
        match res {
            Ok(()) => report.written.push(shown(path)),
            Err(e @ (Error::Io { .. } | Error::Internal(_))) => return Err(e),
            Err(e) => report.skipped.push(Skipped { path: shown(path), reason: e.to_string() }),
        }
    }
    report.skipped.sort_by(|a, b| a.path.cmp(&b.path));
    report.applied = !opts.dry_run;
    Ok(report)
}
