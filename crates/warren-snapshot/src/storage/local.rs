//! Local-disk storage under a root directory (warren's state directory).

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use super::{check_key, ObjectInfo, ObjectWriter, Storage};
use crate::error::{Result, SnapshotError};
use crate::fsutil;

/// Objects as files under a root: key `snapshots/u/s.tar.zst` is `{root}/snapshots/u/s.tar.zst`.
///
/// Writes go to a hidden temporary file beside the target (`.{name}.tmp-{random}`), are
/// fsynced once, renamed into place, and the directory is fsynced. Directories are created
/// with mode 0700: snapshots hold users' files and are for root only.
#[derive(Debug, Clone)]
pub struct LocalStorage {
    root: PathBuf,
}

impl LocalStorage {
    /// Storage rooted at `root` (created on first write).
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    /// The root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    fn path(&self, key: &str) -> Result<PathBuf> {
        check_key(key)?;
        Ok(self.root.join(key))
    }

    fn temp_for(path: &Path) -> Result<(PathBuf, PathBuf)> {
        let (dir, name) = fsutil::split_parent(path)?;
        let mut tmp = std::ffi::OsString::from(".");
        tmp.push(name);
        tmp.push(format!(".tmp-{}", fsutil::random_hex(6)));
        Ok((dir.to_path_buf(), dir.join(tmp)))
    }

    fn make_dir(dir: &Path) -> Result<()> {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|e| SnapshotError::io(format!("creating snapshot directory {}", dir.display()), e))
    }
}

fn not_found(what: &str) -> SnapshotError {
    SnapshotError::Core(warren_core::Error::NotFound(what.to_owned()))
}

/// A local object being written.
#[derive(Debug)]
struct LocalWriter {
    file: Option<File>,
    tmp: PathBuf,
    target: PathBuf,
    dir: PathBuf,
}

impl Write for LocalWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match &mut self.file {
            Some(f) => f.write(buf),
            None => Err(io::Error::other("writer already finished")),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match &mut self.file {
            Some(f) => f.flush(),
            None => Ok(()),
        }
    }
}

impl ObjectWriter for LocalWriter {
    fn finish(mut self: Box<Self>) -> Result<u64> {
        let file = self.file.take().ok_or_else(|| SnapshotError::internal("writer already finished"))?;
        let what = || format!("writing {}", self.target.display());
        file.sync_all().map_err(|e| SnapshotError::io(what(), e))?;
        let size = file.metadata().map_err(|e| SnapshotError::io(what(), e))?.len();
        drop(file);
        fs::rename(&self.tmp, &self.target).map_err(|e| SnapshotError::io(what(), e))?;
        fsutil::fsync_dir(&self.dir)?;
        Ok(size)
    }

    fn abort(mut self: Box<Self>) {
        self.discard();
    }
}

impl LocalWriter {
    fn discard(&mut self) {
        if self.file.take().is_some() {
            let _ = fs::remove_file(&self.tmp);
        }
    }
}

impl Drop for LocalWriter {
    fn drop(&mut self) {
        self.discard();
    }
}

impl Storage for LocalStorage {
    fn describe(&self) -> String {
        format!("local:{}", self.root.display())
    }

    fn writer(&self, key: &str) -> Result<Box<dyn ObjectWriter>> {
        let target = self.path(key)?;
        let (dir, tmp) = Self::temp_for(&target)?;
        Self::make_dir(&dir)?;
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(|e| SnapshotError::io(format!("creating {}", tmp.display()), e))?;
        Ok(Box::new(LocalWriter { file: Some(file), tmp, target, dir }))
    }

    fn reader(&self, key: &str) -> Result<Box<dyn Read + Send>> {
        let path = self.path(key)?;
        match File::open(&path) {
            Ok(f) => Ok(Box::new(f)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Err(not_found(&format!("stored object {key}"))),
            Err(e) => Err(SnapshotError::io(format!("opening {}", path.display()), e)),
        }
    }

    fn local_path(&self, key: &str) -> Option<PathBuf> {
        self.path(key).ok()
    }

    fn put(&self, key: &str, data: &[u8]) -> Result<()> {
        let mut w = self.writer(key)?;
        w.write_all(data).map_err(|e| SnapshotError::io(format!("writing {key}"), e))?;
        w.finish().map(drop)
    }

    fn get(&self, key: &str) -> Result<Option<Vec<u8>>> {
        let path = self.path(key)?;
        match fs::read(&path) {
            Ok(data) => Ok(Some(data)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(SnapshotError::io(format!("reading {}", path.display()), e)),
        }
    }

    fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>> {
        check_key(prefix)?;
        let (dir_key, name_prefix) = match prefix.rfind('/') {
            Some(i) => (&prefix[..=i], &prefix[i + 1..]),
            None => ("", prefix),
        };
        let mut out = Vec::new();
        walk(&self.root.join(dir_key), dir_key, name_prefix, &mut out, 0)?;
        out.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(out)
    }

    fn delete(&self, key: &str) -> Result<()> {
        let path = self.path(key)?;
        match fs::remove_file(&path) {
            Ok(()) => {
                if let Some(dir) = path.parent() {
                    let _ = fsutil::fsync_dir(dir);
                }
                Ok(())
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(SnapshotError::io(format!("deleting {}", path.display()), e)),
        }
    }
}

fn walk(dir: &Path, key_prefix: &str, name_prefix: &str, out: &mut Vec<ObjectInfo>, depth: usize) -> Result<()> {
    let rd = match fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(SnapshotError::io(format!("listing {}", dir.display()), e)),
    };
    for ent in rd {
        let ent = ent.map_err(|e| SnapshotError::io(format!("listing {}", dir.display()), e))?;
        let Ok(name) = ent.file_name().into_string() else { continue };
        if !name.starts_with(name_prefix) {
            continue;
        }
        let Ok(meta) = fs::symlink_metadata(ent.path()) else { continue };
        let key = format!("{key_prefix}{name}");
        if meta.is_dir() {
            if depth < 16 {
                walk(&ent.path(), &format!("{key}/"), "", out, depth + 1)?;
            }
        } else if meta.is_file() {
            out.push(ObjectInfo { key, size: meta.len(), modified: meta.modified().unwrap_or(std::time::UNIX_EPOCH) });
        }
    }
    Ok(())
}
