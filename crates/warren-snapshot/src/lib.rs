//! Warren's snapshots: one `tar.zst` archive and one JSON manifest per snapshot, safe
//! extraction of untrusted archives, an atomic swap into the workspace, and storage on local
//! disk or any S3-compatible store.
//!
//! # Format (version 1)
//! * Storage keys: `snapshots/{user}/{snap}.tar.zst` (the archive) and
//!   `snapshots/{user}/{snap}.json` (its [`Manifest`]), relative to the state directory for
//!   local storage or to the bucket prefix for S3. The manifest is written last, atomically
//!   (temp file + fsync + rename locally, a single PUT on S3): **a snapshot without a manifest
//!   does not exist**; [`Snapshots::cleanup_orphans`] removes such archives.
//! * The archive is a single zstd frame (level 3, content checksum) of a POSIX ustar stream
//!   (GNU long-name records for paths over 255 bytes), as `tar -C ws -cf - . | zstd` would make
//!   and `zstd -dc | tar -x` reads. Entries are relative paths without a `./` prefix, in
//!   depth-first order with names sorted byte-wise; directories end in `/`. Only directories,
//!   regular files and symlinks are stored; sockets, FIFOs and devices are skipped (counted in
//!   the manifest's `skipped_entries` and logged); hard-linked files are stored as separate
//!   copies. Modes are masked to 0o777, uid/gid are 0 and user/group names empty (ownership
//!   belongs to the workspace, not the archive), mtimes are whole seconds.
//! * Names must be UTF-8 on both sides: the writer refuses a tree with a non-UTF-8 name
//!   (naming it) and the reader rejects such entries, so every name warren writes it can
//!   restore and show in its API. The writer also enforces the reader's depth, entry and
//!   name-length limits ([`ArchiveLimits`]).
//! * Hard links in an archive are always rejected (warren never writes them).
//!
//! # Reading untrusted archives
//! See [`extract`] for the full list of defences; [`scan`] applies the same rules without
//! writing (used by [`Snapshots::import`]). A restore verifies the archive's size and SHA-256
//! against the manifest before extracting anything.
//!
//! # Restoring
//! [`Snapshots::prepare_restore`] extracts into a staging directory beside the workspace;
//! [`PreparedRestore::swap_in`] exchanges it with the workspace atomically
//! (`renameat2(RENAME_EXCHANGE)`). See [`swap`] for the crash-recovery rule.
//!
//! Everything here blocks; async callers use `tokio::task::spawn_blocking`.

pub mod create;
pub mod error;
pub mod extract;
mod fsutil;
pub mod limits;
pub mod manifest;
pub mod snapshots;
pub mod storage;
pub mod swap;
pub mod time;

pub use create::{write_archive, ArchiveOptions, ArchiveStats};
pub use error::{Rejection, Result, SnapshotError};
pub use extract::{extract_to, scan, ExtractOptions, ExtractStats};
pub use limits::{ArchiveLimits, Progress, ProgressFn};
pub use manifest::{archive_key, manifest_key, Manifest, Trigger, FORMAT_VERSION};
pub use snapshots::{CreateOptions, ImportOptions, PreparedRestore, Snapshots};
pub use storage::{LocalStorage, ObjectInfo, ObjectWriter, S3Config, S3Storage, Storage};
pub use swap::{prepare_staging, recover, sibling_path, swap_in};
pub use time::Timestamp;
