//! Shared pieces of warren's fuzz targets: a raw tar writer that can express anything a hostile
//! archive can ([`tarfmt`]), and the archive harness with its invariants ([`archive`]).
//!
//! Scratch files go under `$WARREN_FUZZ_TMP` (set by `scripts/fuzz`, which removes it), else
//! under the system's temp directory.

pub mod archive;
pub mod tarfmt;

use std::path::PathBuf;

/// A directory of this process's own for scratch files (created on first use).
pub fn scratch_dir(what: &str) -> PathBuf {
    let root = std::env::var_os("WARREN_FUZZ_TMP").map(PathBuf::from).unwrap_or_else(std::env::temp_dir);
    let dir = root.join(format!("warren-fuzz-{what}-{}", std::process::id()));
    // Left over from an earlier process with the same pid: start clean.
    let _ = std::fs::remove_dir_all(&dir);
    if let Err(e) = std::fs::create_dir_all(&dir) {
        panic!("fuzz harness: cannot create the scratch directory {}: {e}", dir.display());
    }
    dir
}
