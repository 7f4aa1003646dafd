//! Copying a host project into a new workspace's home.
//!
//! The project is walked without following symlinks ([`crate::tree`]); `.git` (at any depth, in
//! any letter case) and the excluded names are left out. Regular files are copied with their
//! permission bits (owner read and write added; setuid, setgid and sticky bits dropped),
//! directories are created (owner rwx added), everything given to the workspace's uid.
//! A symlink is copied as a link when its target is relative and, read lexically, stays inside
//! the project; any other symlink (absolute, or climbing out) and every FIFO, socket or device
//! is left out and listed in the report. Hard links become separate files.

use std::ffi::OsStr;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;

use warren_core::{Error, Result};

use crate::record::{CopyReport, Skipped, MAX_SKIPPED_LISTED};
use crate::tree::{self, Found, Owner, WalkOptions};

fn skip(report: &mut CopyReport, path: &[u8], reason: String) {
    report.skipped_count += 1;
    if report.skipped.len() < MAX_SKIPPED_LISTED {
        report.skipped.push(Skipped { path: String::from_utf8_lossy(path).into_owned(), reason });
    }
}

/// Copies the tree beneath `project` into `home`, owned by `uid:gid`.
pub(crate) fn copy_in(
    project: BorrowedFd<'_>,
    home: BorrowedFd<'_>,
    uid: u32,
    gid: u32,
    exclude: &[String],
) -> Result<CopyReport> {
    let owner = Owner::Fixed(uid, gid);
    let mut report = CopyReport::default();
    let mut refused: Vec<(Vec<u8>, String)> = Vec::new();
    // The directory last written into, kept open across its files.
    let mut last: Option<(Vec<u8>, OwnedFd)> = None;
    let opts = WalkOptions { exclude: exclude.to_vec(), owner: None, no_xdev: false };
    let mut visit = |path: &[u8], found: Found<'_>| -> Result<()> {
        let (parent, name) = tree::split(path);
        let name = OsStr::from_bytes(name);
        if let Found::Dir { st } = found {
            tree::make_dirs(home, path, owner, (st.st_mode & 0o777) | 0o700)?;
            report.dirs += 1;
            return Ok(());
        }
        if last.as_ref().map(|(p, _)| p.as_slice()) != Some(parent) {
            last = Some((parent.to_vec(), tree::make_dirs(home, parent, owner, 0o755)?));
        }
        let Some((_, dirfd)) = &last else {
            return Err(Error::Internal("the directory just opened is gone".into()));
        };
        let dir = dirfd.as_fd();
        match found {
            Found::Dir { .. } => Ok(()),
            Found::Symlink { target, .. } => {
                if tree::link_stays_inside(path, &target) {
                    tree::write_symlink(dir, name, &target, owner, path)?;
                    report.symlinks += 1;
                } else {
                    let shown = String::from_utf8_lossy(&target).into_owned();
                    refused.push((path.to_vec(), format!("a symlink to {shown:?}, outside the project: not copied")));
                }
                Ok(())
            }
            Found::File { dir: src_dir, name: src_name, st } => {
                let mut f = match tree::open_file(src_dir, src_name) {
                    Ok((f, _)) => f,
                    Err(why) => {
                        refused.push((path.to_vec(), why));
                        return Ok(());
                    }
                };
                let mode = (st.st_mode & 0o777) | 0o600;
                report.bytes += tree::write_file(dir, name, &mut f, mode, owner, path)?;
                report.files += 1;
                Ok(())
            }
        }
    };
    let mut special: Vec<(Vec<u8>, String)> = Vec::new();
    let mut on_skip = |path: &[u8], why: String| special.push((path.to_vec(), why));
    tree::walk(project, &opts, &mut visit, &mut on_skip)?;
    special.append(&mut refused);
    special.sort();
    for (p, why) in special {
        skip(&mut report, &p, why);
    }
    Ok(report)
}
