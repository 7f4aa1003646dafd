//! Putting a restored tree in place atomically, and cleaning up after a crash.
//!
//! A restore extracts into a *staging* directory beside the workspace directory
//! (`{parent}/.{name}.restore-staging-{random}`, same file system), syncs that file system
//! once (see [`crate::ExtractOptions::sync`]), then exchanges the two names with `renameat2(RENAME_EXCHANGE)`: the workspace path
//! names the complete old tree before that call and the complete new tree after it, never a mix.
//! The old tree, now under the staging name, is then deleted. Downloads from remote storage go
//! to `{parent}/.{name}.restore-download-{random}`.
//!
//! **Recovery rule.** Every leftover named `.{name}.restore-*` beside a workspace directory is
//! debris of an interrupted restore and is deleted by [`recover`]: before the exchange it is a
//! partial or unused new tree (the workspace still holds the old one), after it the old tree
//! (the workspace already holds the new one), and a download is only a cache. The engine calls
//! [`recover`] before using a workspace after a start-up; [`prepare_staging`] calls it too.

use std::ffi::OsString;
use std::os::fd::AsFd;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::RenameFlags;

use crate::error::{Result, SnapshotError};
use crate::fsutil;

fn marker(workspace: &Path) -> Result<(PathBuf, OsString)> {
    let (parent, name) = fsutil::split_parent(workspace)?;
    let mut m = OsString::from(".");
    m.push(name);
    m.push(".restore-");
    Ok((parent.to_path_buf(), m))
}

/// A fresh, unused path beside `workspace` for a restore's `kind` (`staging`, `download`).
pub fn sibling_path(workspace: &Path, kind: &str) -> Result<PathBuf> {
    let (parent, mut m) = marker(workspace)?;
    m.push(kind);
    m.push("-");
    m.push(fsutil::random_hex(6));
    Ok(parent.join(m))
}

/// Deletes the debris of interrupted restores of `workspace` (see the module docs). Returns
/// how many leftovers were removed.
pub fn recover(workspace: &Path) -> Result<usize> {
    let (parent, m) = marker(workspace)?;
    let pfd = match fsutil::open_dir(&parent) {
        Ok(fd) => fd,
        Err(SnapshotError::Core(warren_core::Error::Io { source, .. }))
            if source.kind() == std::io::ErrorKind::NotFound =>
        {
            return Ok(0)
        }
        Err(e) => return Err(e),
    };
    let mut dir = nix::dir::Dir::openat(
        pfd.as_fd(),
        ".",
        nix::fcntl::OFlag::O_RDONLY | nix::fcntl::OFlag::O_DIRECTORY | nix::fcntl::OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::empty(),
    )
    .map_err(|e| SnapshotError::errno(format!("listing {}", parent.display()), e))?;
    let leftovers: Vec<OsString> = dir
        .iter()
        .filter_map(|e| e.ok())
        .map(|e| std::ffi::OsStr::from_bytes(e.file_name().to_bytes()).to_owned())
        .filter(|n| n.as_bytes().starts_with(m.as_bytes()))
        .collect();
    for name in &leftovers {
        tracing::info!(path = %parent.join(name).display(), "removing the leftover of an interrupted restore");
        fsutil::remove_tree_at(pfd.as_fd(), name)
            .map_err(|e| SnapshotError::errno(format!("removing {}", parent.join(name).display()), e))?;
    }
    Ok(leftovers.len())
}

/// Recovers `workspace` (see [`recover`]) and returns a fresh staging path beside it.
pub fn prepare_staging(workspace: &Path) -> Result<PathBuf> {
    recover(workspace)?;
    sibling_path(workspace, "staging")
}

/// Makes the complete tree at `staging` the workspace at `workspace`, atomically, then deletes
/// the old tree. Both must be in the same directory (as [`sibling_path`] makes them). If
/// `workspace` does not exist, `staging` is simply renamed to it.
///
/// Durability: [`crate::extract_to`] syncs the staging tree's file system before it returns
/// (unless told not to), and the directory holding both names is fsynced after the exchange,
/// so after a power loss the workspace is the old tree or the complete new one. Callers stop
/// the workspace first: processes, mounts and open directories keep seeing the old tree.
pub fn swap_in(staging: &Path, workspace: &Path) -> Result<()> {
    let (sparent, sname) = fsutil::split_parent(staging)?;
    let (wparent, wname) = fsutil::split_parent(workspace)?;
    let spfd = fsutil::open_dir(sparent)?;
    let wpfd = fsutil::open_dir(wparent)?;
    let same = {
        let a = nix::sys::stat::fstat(spfd.as_fd()).map_err(|e| SnapshotError::errno("stat", e))?;
        let b = nix::sys::stat::fstat(wpfd.as_fd()).map_err(|e| SnapshotError::errno("stat", e))?;
        a.st_dev == b.st_dev && a.st_ino == b.st_ino
    };
    if !same {
        return Err(SnapshotError::Core(warren_core::Error::InvalidRequest(format!(
            "staging directory {} must be beside the workspace {}",
            staging.display(),
            workspace.display()
        ))));
    }
    match nix::fcntl::renameat2(spfd.as_fd(), sname, wpfd.as_fd(), wname, RenameFlags::RENAME_EXCHANGE) {
        Ok(()) => {}
        Err(Errno::ENOENT) => {
            // No workspace yet (or no staging: then this fails too, with ENOENT).
            nix::fcntl::renameat2(spfd.as_fd(), sname, wpfd.as_fd(), wname, RenameFlags::RENAME_NOREPLACE).map_err(
                |e| SnapshotError::errno(format!("moving {} to {}", staging.display(), workspace.display()), e),
            )?;
            nix::unistd::fsync(wpfd.as_fd()).map_err(|e| SnapshotError::errno("syncing the workspace directory", e))?;
            return Ok(());
        }
        Err(e) => {
            return Err(SnapshotError::errno(
                format!("exchanging {} with {} (renameat2 RENAME_EXCHANGE)", staging.display(), workspace.display()),
                e,
            ))
        }
    }
    nix::unistd::fsync(wpfd.as_fd()).map_err(|e| SnapshotError::errno("syncing the workspace directory", e))?;
    // The old tree now sits under the staging name; a crash from here on leaves it for recover().
    if let Err(e) = fsutil::remove_tree_at(spfd.as_fd(), sname) {
        tracing::warn!(path = %staging.display(), error = %e, "could not delete the replaced workspace tree; recover() will");
    }
    Ok(())
}
