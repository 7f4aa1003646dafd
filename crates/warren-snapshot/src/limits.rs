//! Limits every archive obeys, and the path rules shared by the writer and the reader.

use std::sync::Arc;

use crate::error::Rejection;

/// Longest path component (Linux `NAME_MAX`).
pub const MAX_NAME_BYTES: usize = 255;
/// Longest path (Linux `PATH_MAX`).
pub const MAX_PATH_BYTES: usize = 4096;

/// Caps against decompression bombs and pathological trees. The writer enforces the structural
/// ones too (entries, depth, names), so everything warren writes restores with the same limits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ArchiveLimits {
    /// Cap on the total declared size of regular files. `None`: `max(512 MiB, 20 x archive
    /// size)` (cargo's rule), and no less than a trusted manifest's `unpacked_bytes` when
    /// restoring a stored snapshot.
    pub max_unpacked_bytes: Option<u64>,
    /// Cap on the number of entries (default 1,000,000).
    pub max_entries: u64,
    /// Cap on path depth in components (default 128).
    pub max_depth: usize,
    /// Cap on one entry's metadata: long-name records and PAX headers (default 1 MiB).
    pub max_metadata_bytes: u64,
    /// zstd window cap as a power of two (default 27 = 128 MiB): bounds decoder memory.
    pub window_log_max: u32,
}

impl Default for ArchiveLimits {
    fn default() -> Self {
        Self {
            max_unpacked_bytes: None,
            max_entries: 1_000_000,
            max_depth: 128,
            max_metadata_bytes: 1 << 20,
            window_log_max: 27,
        }
    }
}

impl ArchiveLimits {
    /// The byte cap for an archive of `archive_bytes` compressed bytes (unknown: 512 MiB).
    pub fn byte_cap(&self, archive_bytes: Option<u64>) -> u64 {
        self.max_unpacked_bytes.unwrap_or_else(|| (512u64 << 20).max(archive_bytes.unwrap_or(0).saturating_mul(20)))
    }
}

/// A callback told about progress now and then: entries and bytes done so far.
pub type ProgressFn = Arc<dyn Fn(Progress) + Send + Sync>;

/// Progress of an archive, extraction, upload or download.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Progress {
    /// Entries done.
    pub entries: u64,
    /// Bytes done (file bytes for archive and extract, archive bytes for transfers).
    pub bytes: u64,
    /// The total in bytes, when known.
    pub total_bytes: Option<u64>,
}

/// Splits an archive path into its components, checking every rule. An empty result is the
/// archive root (`.`, `./`).
pub(crate) fn split_path(raw: &[u8], max_depth: usize) -> Result<Vec<&[u8]>, Rejection> {
    if raw.is_empty() || raw.contains(&0) {
        return Err(Rejection::BadName);
    }
    if std::str::from_utf8(raw).is_err() {
        return Err(Rejection::NonUtf8Name);
    }
    if raw[0] == b'/' {
        return Err(Rejection::AbsolutePath);
    }
    if raw.len() > MAX_PATH_BYTES {
        return Err(Rejection::PathTooLong { len: raw.len() });
    }
    let mut comps = Vec::new();
    for c in raw.split(|b| *b == b'/') {
        match c {
            b"" | b"." => {}
            b".." => return Err(Rejection::PathTraversal),
            c if c.len() > MAX_NAME_BYTES => return Err(Rejection::NameTooLong { len: c.len() }),
            c => comps.push(c),
        }
    }
    if comps.len() > max_depth {
        return Err(Rejection::TooDeep { depth: comps.len(), max: max_depth });
    }
    Ok(comps)
}

/// Checks a symlink target: non-empty, no NUL, at most 4095 bytes, UTF-8. Where it points is
/// not checked: a link may point anywhere (`~/bin/py -> /usr/bin/python3`); what is refused is
/// any later entry written *through* it.
pub(crate) fn check_link_target(target: &[u8]) -> Result<(), Rejection> {
    if target.is_empty()
        || target.len() >= MAX_PATH_BYTES
        || target.contains(&0)
        || std::str::from_utf8(target).is_err()
    {
        return Err(Rejection::BadSymlinkTarget);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths() {
        assert_eq!(split_path(b"./a//b/./c/", 128), Ok(vec![&b"a"[..], b"b", b"c"]));
        assert_eq!(split_path(b"./", 128), Ok(vec![]));
        assert_eq!(split_path(b"a/../b", 128), Err(Rejection::PathTraversal));
        assert_eq!(split_path(b"/etc/passwd", 128), Err(Rejection::AbsolutePath));
        assert_eq!(split_path(b"a/\xff", 128), Err(Rejection::NonUtf8Name));
        assert_eq!(split_path(b"", 128), Err(Rejection::BadName));
        assert_eq!(split_path(&[b'a'; 256], 128), Err(Rejection::NameTooLong { len: 256 }));
        assert_eq!(split_path(b"a/b/c", 2), Err(Rejection::TooDeep { depth: 3, max: 2 }));
        assert_eq!(ArchiveLimits::default().byte_cap(Some(1 << 30)), 20 << 30);
        assert_eq!(ArchiveLimits::default().byte_cap(None), 512 << 20);
    }
}
