//! Where archives and manifests live: a small blocking trait with a local-disk and an
//! S3-compatible implementation.
//!
//! Keys are `/`-separated and relative (`snapshots/u_123/snap_001.tar.zst`). Every method
//! blocks: call them from a blocking thread (`tokio::task::spawn_blocking`) when in async code.

mod local;
mod s3;

use std::fmt;
use std::io::{Read, Write};
use std::path::PathBuf;
use std::time::SystemTime;

pub use local::LocalStorage;
pub use s3::{S3Config, S3Storage};

use crate::error::Result;

/// One stored object.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ObjectInfo {
    /// Its key.
    pub key: String,
    /// Its size in bytes.
    pub size: u64,
    /// When it was last written.
    pub modified: SystemTime,
}

/// An object being written. Nothing is visible under the key until [`ObjectWriter::finish`]
/// returns; dropping the writer without finishing it discards what was written.
pub trait ObjectWriter: Write + Send {
    /// Makes the object durable and visible under its key; returns its size.
    fn finish(self: Box<Self>) -> Result<u64>;
    /// Discards the object.
    fn abort(self: Box<Self>);
}

/// A place to keep snapshot archives and manifests.
pub trait Storage: Send + Sync + fmt::Debug {
    /// A short description for logs and messages (`local:/var/lib/warren`, `s3://bucket/prefix`).
    fn describe(&self) -> String;
    /// Starts writing `key` (streamed: large objects go up in parts).
    fn writer(&self, key: &str) -> Result<Box<dyn ObjectWriter>>;
    /// Reads `key` as a stream. A missing key is [`warren_core::Error::NotFound`].
    fn reader(&self, key: &str) -> Result<Box<dyn Read + Send>>;
    /// The object's path when it is a local file (lets a restore read it in place).
    fn local_path(&self, _key: &str) -> Option<PathBuf> {
        None
    }
    /// Writes a small object atomically (readers see the old or the new one), replacing it.
    fn put(&self, key: &str, data: &[u8]) -> Result<()>;
    /// Reads a small object; `None` if it does not exist.
    fn get(&self, key: &str) -> Result<Option<Vec<u8>>>;
    /// Every object whose key starts with `prefix` (a `/`-terminated directory-like prefix),
    /// temporary files of unfinished local writes included.
    fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>>;
    /// Deletes `key`; a missing key is not an error.
    fn delete(&self, key: &str) -> Result<()>;
}

/// Checks that a key is relative, `/`-separated and free of `.`/`..` and empty components.
pub(crate) fn check_key(key: &str) -> Result<()> {
    let ok = !key.is_empty()
        && !key.starts_with('/')
        && !key.contains('\0')
        && key.split('/').enumerate().all(|(i, c)| {
            let last = i == key.split('/').count() - 1;
            (c.is_empty() && last) || (!c.is_empty() && c != "." && c != "..")
        });
    if ok {
        Ok(())
    } else {
        Err(crate::error::SnapshotError::Core(warren_core::Error::InvalidRequest(format!(
            "invalid storage key {key:?}"
        ))))
    }
}
