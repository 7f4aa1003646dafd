//! The snapshot catalogue of one storage: create, list, restore, delete, retention, export,
//! import, and orphan cleanup.
//!
//! Callers serialise operations on one user's snapshots (the engine holds a per-workspace
//! lock); different users never interfere.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use warren_core::{SnapshotId, UserId};

use crate::create::{write_archive, ArchiveOptions};
use crate::error::{Result, SnapshotError};
use crate::extract::{extract_to, scan, ExtractOptions, ExtractStats};
use crate::fsutil::{self, HashReader, HashWriter};
use crate::limits::ArchiveLimits;
use crate::manifest::{archive_key, manifest_key, user_prefix, Manifest, Trigger, FORMAT_VERSION};
use crate::storage::{LocalStorage, Storage};
use crate::swap;
use crate::time::Timestamp;

/// How to take a snapshot.
#[derive(Clone, Debug)]
pub struct CreateOptions {
    /// Why (default manual).
    pub trigger: Trigger,
    /// Exempt from retention.
    pub pinned: bool,
    /// The workspace's backend, recorded in the manifest (`dir`, `ns`, ...).
    pub backend: String,
    /// The snapshot this one follows, if the caller tracks one.
    pub parent: Option<SnapshotId>,
    /// Compression, threads, limits, progress.
    pub archive: ArchiveOptions,
}

impl Default for CreateOptions {
    fn default() -> Self {
        Self {
            trigger: Trigger::Manual,
            pinned: false,
            backend: "unknown".into(),
            parent: None,
            archive: ArchiveOptions::default(),
        }
    }
}

/// How to import an archive file.
#[derive(Clone, Debug)]
pub struct ImportOptions {
    /// Exempt from retention.
    pub pinned: bool,
    /// Recorded as the manifest's backend (default `import`).
    pub backend: String,
    /// The caps the archive must fit (it is checked entry by entry while it is copied in).
    pub limits: ArchiveLimits,
}

impl Default for ImportOptions {
    fn default() -> Self {
        Self { pinned: false, backend: "import".into(), limits: ArchiveLimits::default() }
    }
}

/// The snapshots kept in one [`Storage`].
#[derive(Debug, Clone)]
pub struct Snapshots {
    storage: Arc<dyn Storage>,
}

fn not_found(user: &UserId, id: &SnapshotId) -> SnapshotError {
    SnapshotError::Core(warren_core::Error::NotFound(format!("snapshot {id} of user {user}")))
}

impl Snapshots {
    /// Snapshots in `storage`.
    pub fn new(storage: Arc<dyn Storage>) -> Self {
        Self { storage }
    }

    /// Snapshots on local disk under `{state_dir}/snapshots/`.
    pub fn local(state_dir: impl Into<PathBuf>) -> Self {
        Self::new(Arc::new(LocalStorage::new(state_dir)))
    }

    /// The storage.
    pub fn storage(&self) -> &Arc<dyn Storage> {
        &self.storage
    }

    /// Archives the workspace directory `source` as snapshot `id` of `user`. The archive is
    /// streamed into the storage; the manifest is written after the archive is durable, so
    /// a crash at any point leaves either no snapshot or a complete one.
    pub fn create(&self, user: &UserId, id: &SnapshotId, source: &Path, opts: &CreateOptions) -> Result<Manifest> {
        if self.storage.get(&manifest_key(user, id))?.is_some() {
            return Err(SnapshotError::Core(warren_core::Error::AlreadyExists(format!(
                "snapshot {id} of user {user}; pick another name or delete it first"
            ))));
        }
        let created = Timestamp::now();
        let akey = archive_key(user, id);
        let mut w = self.storage.writer(&akey)?;
        let stats = match write_archive(source, &mut w, &opts.archive) {
            Ok((stats, _)) => stats,
            Err(e) => {
                w.abort();
                return Err(e);
            }
        };
        w.finish()?;
        let manifest = Manifest {
            format_version: FORMAT_VERSION,
            id: id.clone(),
            user: user.clone(),
            created,
            trigger: opts.trigger,
            pinned: opts.pinned,
            archive_bytes: stats.archive_bytes,
            unpacked_bytes: stats.unpacked_bytes,
            file_count: stats.file_count,
            entry_count: stats.entry_count,
            sha256: stats.sha256,
            backend: opts.backend.clone(),
            parent: opts.parent.clone(),
            skipped_entries: stats.skipped,
        };
        if let Err(e) = self.storage.put(&manifest_key(user, id), &manifest.to_json()) {
            let _ = self.storage.delete(&akey);
            return Err(e);
        }
        tracing::info!(%user, snapshot = %id, bytes = manifest.archive_bytes, files = manifest.file_count, "snapshot created");
        Ok(manifest)
    }

    /// The manifest of one snapshot.
    pub fn get(&self, user: &UserId, id: &SnapshotId) -> Result<Manifest> {
        let bytes = self.storage.get(&manifest_key(user, id))?.ok_or_else(|| not_found(user, id))?;
        let m = Manifest::from_json(&bytes)?;
        if &m.user != user || &m.id != id {
            return Err(SnapshotError::Corrupt(format!(
                "manifest {} names snapshot {} of user {}",
                manifest_key(user, id),
                m.id,
                m.user
            )));
        }
        Ok(m)
    }

    /// A user's snapshots, newest first. Archives without a manifest are not snapshots and
    /// are not listed; unreadable manifests are skipped with a warning.
    pub fn list(&self, user: &UserId) -> Result<Vec<Manifest>> {
        let prefix = user_prefix(user);
        let mut out = Vec::new();
        for obj in self.storage.list(&prefix)? {
            let name = &obj.key[prefix.len()..];
            let Some(stem) = name.strip_suffix(".json") else { continue };
            if name.contains('/') || stem.starts_with('.') {
                continue;
            }
            let Ok(id) = SnapshotId::new(stem) else { continue };
            match self.get(user, &id) {
                Ok(m) => out.push(m),
                Err(e) => tracing::warn!(key = %obj.key, error = %e, "skipping an unreadable snapshot manifest"),
            }
        }
        out.sort_by(|a, b| b.created.cmp(&a.created).then_with(|| b.id.cmp(&a.id)));
        Ok(out)
    }

    /// Deletes a snapshot: the manifest first (the snapshot is gone at once), then the archive.
    pub fn delete(&self, user: &UserId, id: &SnapshotId) -> Result<()> {
        self.get(user, id)?;
        self.storage.delete(&manifest_key(user, id))?;
        if let Err(e) = self.storage.delete(&archive_key(user, id)) {
            tracing::warn!(%user, snapshot = %id, error = %e, "archive not deleted; cleanup_orphans will remove it");
        }
        tracing::info!(%user, snapshot = %id, "snapshot deleted");
        Ok(())
    }

    /// Pins (exempts from retention) or unpins a snapshot.
    pub fn set_pinned(&self, user: &UserId, id: &SnapshotId, pinned: bool) -> Result<Manifest> {
        let mut m = self.get(user, id)?;
        if m.pinned != pinned {
            m.pinned = pinned;
            self.storage.put(&manifest_key(user, id), &m.to_json())?;
        }
        Ok(m)
    }

    /// Keeps the newest `keep` unpinned snapshots of `user` (at least one: the only snapshot
    /// is never deleted) and every pinned one; deletes the rest. Returns the deleted ids.
    pub fn apply_retention(&self, user: &UserId, keep: usize) -> Result<Vec<SnapshotId>> {
        let keep = keep.max(1);
        let mut kept = 0;
        let mut deleted = Vec::new();
        for m in self.list(user)? {
            if m.pinned {
                continue;
            }
            if kept < keep {
                kept += 1;
                continue;
            }
            self.delete(user, &m.id)?;
            deleted.push(m.id);
        }
        Ok(deleted)
    }

    /// Deletes debris older than `older_than`: archives without a manifest (a create or delete
    /// that was interrupted) and temporary files of unfinished writes. Returns how many objects
    /// were removed. Incomplete S3 multipart uploads are invisible here; see [`crate::storage`].
    pub fn cleanup_orphans(&self, older_than: Duration) -> Result<usize> {
        let objects = self.storage.list("snapshots/")?;
        let keys: std::collections::HashSet<&str> = objects.iter().map(|o| o.key.as_str()).collect();
        let now = SystemTime::now();
        let mut removed = 0;
        for obj in &objects {
            // Only `snapshots/{user}/{name}`: anything else under `snapshots/` is not ours to judge.
            let mut parts = obj.key.splitn(3, '/');
            let (Some(_), Some(user), Some(name)) = (parts.next(), parts.next(), parts.next()) else { continue };
            if name.contains('/') || UserId::new(user).is_err() {
                continue;
            }
            let dir = format!("snapshots/{user}");
            if !name.starts_with('.') {
                if name.ends_with(".json") {
                    continue;
                }
                if let Some(stem) = name.strip_suffix(".tar.zst") {
                    if keys.contains(format!("{dir}/{stem}.json").as_str()) {
                        continue;
                    }
                }
            }
            let age = now.duration_since(obj.modified).unwrap_or(Duration::ZERO);
            if age < older_than {
                continue;
            }
            tracing::info!(key = %obj.key, "removing snapshot debris");
            self.storage.delete(&obj.key)?;
            removed += 1;
        }
        Ok(removed)
    }

    /// Reads a snapshot's archive whole and checks its size and SHA-256 against the manifest.
    pub fn verify(&self, user: &UserId, id: &SnapshotId) -> Result<Manifest> {
        let m = self.get(user, id)?;
        let key = archive_key(user, id);
        let mut r = HashReader::new(self.storage.reader(&key)?);
        fsutil::copy_big(&mut r, &mut io::sink()).map_err(|e| SnapshotError::io(format!("reading {key}"), e))?;
        let (_, bytes, sha) = r.finish();
        check_digest(&m, &key, bytes, &sha)?;
        Ok(m)
    }

    /// Verifies snapshot `id` and extracts it into a fresh staging directory beside
    /// `workspace` (leftovers of earlier interrupted restores are removed first). Nothing
    /// touches `workspace` until [`PreparedRestore::swap_in`]; the workspace may keep running
    /// meanwhile. `opts.archive_bytes` is filled in from the manifest, and unless
    /// `opts.limits.max_unpacked_bytes` is set, the byte cap is raised to the manifest's
    /// `unpacked_bytes`.
    ///
    /// The archive's size and SHA-256 are checked against the manifest while it is extracted
    /// (on a second thread, for a local archive; a download is hashed as it arrives, before the
    /// extraction): a mismatch deletes the staging tree and is the error, so a damaged archive
    /// never reaches the workspace. Extracting before the check finished adds nothing to what an
    /// archive can do: the extraction is the one `import` runs on foreign archives, with every
    /// hostile-archive defence and size cap, into a private directory.
    ///
    /// One restore per workspace at a time: a restore starts by deleting every other
    /// staging directory of the same workspace (the crash-recovery rule, see [`crate::swap`]).
    pub fn prepare_restore(
        &self,
        user: &UserId,
        id: &SnapshotId,
        workspace: &Path,
        opts: &ExtractOptions,
    ) -> Result<PreparedRestore> {
        let m = self.get(user, id)?;
        let key = archive_key(user, id);
        let staging = swap::prepare_staging(workspace)?;
        let mut eopts = opts.clone();
        eopts.archive_bytes = Some(m.archive_bytes);
        if eopts.limits.max_unpacked_bytes.is_none() {
            let cap = eopts.limits.byte_cap(Some(m.archive_bytes)).max(m.unpacked_bytes);
            eopts.limits.max_unpacked_bytes = Some(cap);
        }
        if let Some(p) = &eopts.progress {
            let p = Arc::clone(p);
            let total = m.unpacked_bytes;
            eopts.progress = Some(Arc::new(move |mut pr: crate::limits::Progress| {
                pr.total_bytes = Some(total);
                p(pr)
            }));
        }
        let mut download: Option<PathBuf> = None;
        let result = (|| match self.storage.local_path(&key) {
            Some(p) => {
                let f = File::open(&p).map_err(|e| match e.kind() {
                    io::ErrorKind::NotFound => SnapshotError::Core(warren_core::Error::NotFound(format!(
                        "archive of snapshot {id} of user {user} (the manifest exists but {key} is missing)"
                    ))),
                    _ => SnapshotError::io(format!("opening {}", p.display()), e),
                })?;
                let (hashed, extracted) = std::thread::scope(|s| {
                    let hasher = s.spawn(|| {
                        let mut r = HashReader::new(fsutil::ReadAt::new(&f));
                        fsutil::copy_big(&mut r, &mut io::sink()).map(|_| r.finish())
                    });
                    let extracted =
                        extract_to(io::BufReader::with_capacity(1 << 20, fsutil::ReadAt::new(&f)), &staging, &eopts);
                    (hasher.join(), extracted)
                });
                let checked = match hashed {
                    Ok(Ok((_, bytes, sha))) => check_digest(&m, &key, bytes, &sha),
                    Ok(Err(e)) => Err(SnapshotError::io(format!("reading {key}"), e)),
                    Err(_) => Err(SnapshotError::Core(warren_core::Error::Internal(format!(
                        "the thread hashing {key} panicked"
                    )))),
                };
                if let Err(e) = checked {
                    if extracted.is_ok() {
                        if let Err(rm) = fsutil::remove_tree(&staging) {
                            tracing::warn!(path = %staging.display(), error = %rm, "could not remove the staging tree of an archive that failed its check");
                        }
                    }
                    return Err(e);
                }
                extracted
            }
            None => {
                let path = swap::sibling_path(workspace, "download")?;
                download = Some(path.clone());
                let mut f = OpenOptions::new()
                    .read(true)
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .open(&path)
                    .map_err(|e| SnapshotError::io(format!("creating {}", path.display()), e))?;
                let mut w = HashWriter::new(&f);
                let mut r = self.storage.reader(&key)?;
                fsutil::copy_big(&mut r, &mut w).map_err(|e| SnapshotError::io(format!("downloading {key}"), e))?;
                let (_, bytes, sha) = w.finish();
                check_digest(&m, &key, bytes, &sha)?;
                f.rewind().map_err(|e| SnapshotError::io("rewinding the archive", e))?;
                extract_to(io::BufReader::with_capacity(1 << 20, f), &staging, &eopts)
            }
        })();
        if let Some(d) = &download {
            let _ = std::fs::remove_file(d);
        }
        let stats = result?;
        if stats.bytes != m.unpacked_bytes || stats.files != m.file_count {
            tracing::warn!(%user, snapshot = %id, ?stats, "archive contents differ from the manifest's counts");
        }
        Ok(PreparedRestore { staging, workspace: workspace.to_path_buf(), manifest: m, stats, done: false })
    }

    /// [`Self::prepare_restore`] then [`PreparedRestore::swap_in`]: after it returns, the
    /// workspace directory holds exactly the snapshot. Stop the workspace first.
    pub fn restore(
        &self,
        user: &UserId,
        id: &SnapshotId,
        workspace: &Path,
        opts: &ExtractOptions,
    ) -> Result<ExtractStats> {
        let prepared = self.prepare_restore(user, id, workspace, opts)?;
        let stats = prepared.stats();
        prepared.swap_in()?;
        tracing::info!(%user, snapshot = %id, files = stats.files, "snapshot restored");
        Ok(stats)
    }

    /// Copies a snapshot's archive to `dest` as a plain `.tar.zst` file (written beside it
    /// and renamed into place once its checksum matched the manifest).
    pub fn export(&self, user: &UserId, id: &SnapshotId, dest: &Path) -> Result<Manifest> {
        let m = self.get(user, id)?;
        let key = archive_key(user, id);
        let (dir, name) = fsutil::split_parent(dest)?;
        let mut tmp_name = std::ffi::OsString::from(".");
        tmp_name.push(name);
        tmp_name.push(format!(".tmp-{}", fsutil::random_hex(6)));
        let tmp = dir.join(tmp_name);
        let result = (|| {
            let f = OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&tmp)
                .map_err(|e| SnapshotError::io(format!("creating {}", tmp.display()), e))?;
            let mut w = HashWriter::new(&f);
            let mut r = self.storage.reader(&key)?;
            fsutil::copy_big(&mut r, &mut w)
                .map_err(|e| SnapshotError::io(format!("exporting {key} to {}", dest.display()), e))?;
            let (_, bytes, sha) = w.finish();
            check_digest(&m, &key, bytes, &sha)?;
            f.sync_all().map_err(|e| SnapshotError::io(format!("syncing {}", tmp.display()), e))?;
            std::fs::rename(&tmp, dest)
                .map_err(|e| SnapshotError::io(format!("moving the export to {}", dest.display()), e))?;
            fsutil::fsync_dir(dir)
        })();
        if result.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        result.map(|()| m)
    }

    /// Imports a `.tar.zst` file as snapshot `id` of `user`. The file is copied into the
    /// storage and checked entry by entry (with every rule a restore applies) in one pass;
    /// the manifest is computed from what was read and written last.
    pub fn import(&self, user: &UserId, id: &SnapshotId, src: &Path, opts: &ImportOptions) -> Result<Manifest> {
        if self.storage.get(&manifest_key(user, id))?.is_some() {
            return Err(SnapshotError::Core(warren_core::Error::AlreadyExists(format!(
                "snapshot {id} of user {user}; pick another name or delete it first"
            ))));
        }
        let file = File::open(src).map_err(|e| SnapshotError::io(format!("opening {}", src.display()), e))?;
        let size = file.metadata().map_err(|e| SnapshotError::io(format!("stat of {}", src.display()), e))?.len();
        let akey = archive_key(user, id);
        let mut w = self.storage.writer(&akey)?;
        let result = (|| {
            let mut tee =
                Tee { inner: HashReader::new(io::BufReader::with_capacity(1 << 20, file)), out: &mut w, failed: None };
            let eopts = ExtractOptions { limits: opts.limits, archive_bytes: Some(size), ..ExtractOptions::default() };
            let scanned = scan(&mut tee, &eopts);
            if let Some(e) = tee.failed.take() {
                return Err(SnapshotError::io(
                    format!("copying {} into {}", src.display(), self.storage.describe()),
                    e,
                ));
            }
            let stats = scanned?;
            // Anything after the zstd stream (scan stops there) is copied too, so the stored
            // archive is byte for byte the file.
            fsutil::copy_big(&mut tee, &mut io::sink())
                .map_err(|e| SnapshotError::io(format!("reading {}", src.display()), e))?;
            let (_, bytes, sha) = tee.inner.finish();
            Ok((stats, bytes, sha))
        })();
        let (stats, bytes, sha) = match result {
            Ok(v) => v,
            Err(e) => {
                w.abort();
                return Err(e);
            }
        };
        w.finish()?;
        let manifest = Manifest {
            format_version: FORMAT_VERSION,
            id: id.clone(),
            user: user.clone(),
            created: Timestamp::now(),
            trigger: Trigger::Import,
            pinned: opts.pinned,
            archive_bytes: bytes,
            unpacked_bytes: stats.bytes,
            file_count: stats.files,
            entry_count: stats.entries(),
            sha256: sha,
            backend: opts.backend.clone(),
            parent: None,
            skipped_entries: 0,
        };
        if let Err(e) = self.storage.put(&manifest_key(user, id), &manifest.to_json()) {
            let _ = self.storage.delete(&akey);
            return Err(e);
        }
        tracing::info!(%user, snapshot = %id, bytes, "snapshot imported");
        Ok(manifest)
    }
}

fn check_digest(m: &Manifest, key: &str, bytes: u64, sha: &str) -> Result<()> {
    if bytes != m.archive_bytes || sha != m.sha256 {
        let what = if bytes < m.archive_bytes { " (truncated)" } else { "" };
        return Err(SnapshotError::ChecksumMismatch {
            key: key.to_owned(),
            expected: format!("{} bytes, sha256 {}", m.archive_bytes, m.sha256),
            actual: format!("{bytes} bytes{what}, sha256 {sha}"),
        });
    }
    Ok(())
}

/// Reads through, copying everything read to `out`; keeps the first write error.
struct Tee<'a, R> {
    inner: R,
    out: &'a mut dyn Write,
    failed: Option<io::Error>,
}

impl<R: Read> Read for Tee<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        if let Err(e) = self.out.write_all(&buf[..n]) {
            let shown = io::Error::new(e.kind(), e.to_string());
            self.failed.get_or_insert(e);
            return Err(shown);
        }
        Ok(n)
    }
}

/// A snapshot extracted beside a workspace, ready to be swapped in. Dropping it without
/// [`Self::swap_in`] removes the staging directory.
#[derive(Debug)]
pub struct PreparedRestore {
    staging: PathBuf,
    workspace: PathBuf,
    manifest: Manifest,
    stats: ExtractStats,
    done: bool,
}

impl PreparedRestore {
    /// Where the snapshot was extracted.
    pub fn staging(&self) -> &Path {
        &self.staging
    }

    /// The snapshot's manifest.
    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    /// What was extracted.
    pub fn stats(&self) -> ExtractStats {
        self.stats
    }

    /// Atomically replaces the workspace directory with the extracted tree
    /// (see [`crate::swap::swap_in`]).
    pub fn swap_in(mut self) -> Result<()> {
        self.done = true;
        let r = swap::swap_in(&self.staging, &self.workspace);
        if r.is_err() {
            // Before the exchange the staging tree is the unused new one, after it the old one:
            // either way it goes (recover() would remove it too).
            let _ = fsutil::remove_tree(&self.staging);
        }
        r
    }

    /// Removes the extracted tree without touching the workspace.
    pub fn discard(mut self) -> Result<()> {
        self.done = true;
        fsutil::remove_tree(&self.staging)
    }
}

impl Drop for PreparedRestore {
    fn drop(&mut self) {
        if !self.done {
            if let Err(e) = fsutil::remove_tree(&self.staging) {
                tracing::warn!(path = %self.staging.display(), error = %e, "could not remove an unused restore staging directory");
            }
        }
    }
}
