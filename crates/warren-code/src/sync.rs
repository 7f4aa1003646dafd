//! Writing a session's recorded changes back to the host project.
//!
//! What is written is the history, never the live workspace: the changes between the last
//! synced commit (the base at first) and the branch's head, exactly what `changes` and `diff`
//! show. Before anything is written, every changed path on the host is compared with its last
//! synced version (kind, content, owner-exec bit); any difference is a conflict, and the sync is
//! refused with the whole list unless forced.
//!
//! Writes happen beneath the project through [`crate::tree`]: never through a symlink (a
//! symlinked parent on the host is a conflict, and never followed even when forced), never
//! under `.git`, each file atomically (temp, fsync, rename). Deletions come first (so a file can
//! replace a directory), then writes in path order; directories emptied by deletions are
//! removed. A replaced file keeps its owner and permission bits (the exec bit follows the
//! history); a new one gets the parent directory's owner and 0644 or 0755. A symlink is synced
//! only when its target is relative and stays inside the project.

use std::collections::HashMap;
use std::os::fd::AsFd;
use std::path::Path;

use nix::errno::Errno;
use nix::fcntl::AtFlags;
use nix::sys::stat::{fstatat, SFlag};
use serde::{Deserialize, Serialize};
use warren_core::{Error, Result};

use crate::git::{CatFile, Git, TreeEntry, MODE_EXEC, MODE_LINK};
use crate::record::Skipped;
use crate::tree::{self, Current, Owner};

/// Options of a sync.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SyncOptions {
    /// Overwrite host files that changed since the session started (or the last sync).
    pub force: bool,
    /// Only check: report what would be written and the conflicts, change nothing.
    pub dry_run: bool,
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

/// What the history says a path should be, with its content.
enum Want {
    Absent,
    File { data: Vec<u8>, exec: bool },
    Link(Vec<u8>),
}

fn want(entry: Option<&TreeEntry>, cat: &mut CatFile) -> Result<Want> {
    Ok(match entry {
        None => Want::Absent,
        Some(e) if e.mode == MODE_LINK => Want::Link(cat.blob(&e.sha)?),
        Some(e) => Want::File { data: cat.blob(&e.sha)?, exec: e.mode == MODE_EXEC },
    })
}

fn differs(expected: &Want, cur: &Current) -> Option<String> {
    match (expected, cur) {
        (_, Current::Other(why)) => Some(why.clone()),
        (Want::Absent, Current::Absent) => None,
        (Want::Absent, _) => Some("created on the host since the last sync".into()),
        (_, Current::Absent) => Some("deleted on the host since the last sync".into()),
        (Want::File { data, exec }, Current::File { data: d, exec: x }) => {
            if data != d {
                Some("changed on the host since the last sync".into())
            } else if exec != x {
                Some("its executable bit changed on the host since the last sync".into())
            } else {
                None
            }
        }
        (Want::File { .. }, Current::Unread { .. }) => Some("changed on the host since the last sync".into()),
        (Want::Link(t), Current::Symlink(c)) if t == c => None,
        (Want::Link(_), Current::Symlink(_)) => Some("the symlink changed on the host since the last sync".into()),
        (_, Current::Dir) => Some("a directory is in its place on the host".into()),
        (_, Current::Symlink(_)) => Some("a symlink is in its place on the host".into()),
        (Want::Link(_), Current::File { .. } | Current::Unread { .. }) => {
            Some("a regular file is in its place on the host".into())
        }
    }
}

/// Permission bits of the regular file at `path`, if there is one.
fn perm_of(root: std::os::fd::BorrowedFd<'_>, path: &[u8]) -> Option<u32> {
    let (dir, name) = tree::open_parent(root, path).ok()?;
    match fstatat(dir.as_fd(), name, AtFlags::AT_SYMLINK_NOFOLLOW) {
        Ok(st) if tree::kind_of(&st) == SFlag::S_IFREG => Some(st.st_mode & 0o777),
        Ok(_) | Err(Errno::ENOENT) | Err(_) => None,
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

    // What each changed path must become, and what the host must still hold for it.
    let mut plan: Vec<(Vec<u8>, Want)> = Vec::new();
    for (_, path) in &changes {
        if tree::path_excluded(path, exclude) {
            report.skipped.push(Skipped { path: shown(path), reason: "under .git or excluded: never synced".into() });
            continue;
        }
        let expected = want(old.get(path), &mut cat)?;
        let size = match &expected {
            Want::File { data, .. } => Some(data.len() as u64),
            _ => None,
        };
        let cur = tree::current(root, path, size);
        if let Some(reason) = differs(&expected, &cur) {
            report.conflicts.push(Conflict { path: shown(path), reason });
        }
        plan.push((path.clone(), want(new.get(path), &mut cat)?));
    }
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

    // Deletions first, so a file can take the place of a directory.
    let mut emptied: Vec<Vec<u8>> = Vec::new();
    for (path, w) in &plan {
        if !matches!(w, Want::Absent) {
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

    let mut writes: Vec<&(Vec<u8>, Want)> = plan.iter().filter(|(_, w)| !matches!(w, Want::Absent)).collect();
    writes.sort_by(|a, b| a.0.cmp(&b.0));
    let mut perms: HashMap<Vec<u8>, u32> = HashMap::new();
    for (path, w) in writes {
        if let Want::Link(target) = w {
            if !tree::link_stays_inside(path, target) {
                report.skipped.push(Skipped {
                    path: shown(path),
                    reason: format!(
                        "a symlink to {:?}, outside the project: not synced",
                        String::from_utf8_lossy(target)
                    ),
                });
                continue;
            }
        }
        if opts.dry_run {
            report.written.push(shown(path));
            continue;
        }
        let (parent, name) = tree::split(path);
        let name = <std::ffi::OsStr as std::os::unix::ffi::OsStrExt>::from_bytes(name);
        let res = tree::make_dirs(root, parent, Owner::Inherit, 0o755).and_then(|dir| match w {
            Want::Link(target) => tree::write_symlink(dir.as_fd(), name, target, Owner::Inherit, path),
            Want::File { data, exec } => {
                let base = *perms.entry(path.clone()).or_insert_with(|| perm_of(root, path).unwrap_or(0o644));
                let mode = if *exec { base | 0o100 | ((base & 0o044) >> 2) } else { base & !0o111 };
                tree::write_file(dir.as_fd(), name, &mut data.as_slice(), mode, Owner::Inherit, path).map(drop)
            }
            Want::Absent => Ok(()),
        });
        match res {
            Ok(()) => report.written.push(shown(path)),
            Err(e @ Error::Io { .. }) => return Err(e),
            Err(e) => report.skipped.push(Skipped { path: shown(path), reason: e.to_string() }),
        }
    }
    report.applied = !opts.dry_run;
    Ok(report)
}
