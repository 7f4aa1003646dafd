//! Paths inside a workspace.
//!
//! A [`WorkspacePath`] is relative to the workspace's home directory and is checked lexically:
//! no absolute paths, no `..`, no NUL, no empty or over-long components. That is the first line.
//! The second line is in [`crate::fs`]: every open is done by the kernel with
//! `openat2(RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS)` from a descriptor of the workspace
//! directory, so a symlink planted inside the workspace cannot lead outside it either.

use std::fmt;
use std::path::{Component, Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// Longest path accepted (Linux `PATH_MAX`).
pub const MAX_PATH_BYTES: usize = 4096;
/// Longest single component accepted (Linux `NAME_MAX`).
pub const MAX_NAME_BYTES: usize = 255;

/// A normalised, relative path inside a workspace. The empty path is the workspace's root.
#[derive(Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct WorkspacePath(PathBuf);

impl WorkspacePath {
    /// Validates a user-supplied path. `.` components and repeated or trailing slashes are
    /// dropped; anything that could name a place outside the workspace is an error.
    pub fn new(raw: impl AsRef<Path>) -> Result<Self> {
        let raw = raw.as_ref();
        let shown = raw.to_string_lossy().into_owned();
        let bad = |reason: &str| Err(Error::InvalidPath { path: shown.clone(), reason: reason.to_owned() });
        let bytes = raw.as_os_str().as_encoded_bytes();
        if bytes.len() > MAX_PATH_BYTES {
            return bad("longer than 4096 bytes");
        }
        if bytes.contains(&0) {
            return bad("contains a NUL byte");
        }
        let mut out = PathBuf::new();
        for c in raw.components() {
            match c {
                Component::Normal(name) => {
                    if name.as_encoded_bytes().len() > MAX_NAME_BYTES {
                        return bad("a component is longer than 255 bytes");
                    }
                    out.push(name);
                }
                Component::CurDir => {}
                Component::ParentDir => return bad("'..' is not allowed: paths stay inside the workspace"),
                Component::RootDir | Component::Prefix(_) => {
                    return bad("absolute paths are not allowed: give a path relative to the workspace home")
                }
            }
        }
        Ok(Self(out))
    }

    /// The workspace root itself.
    pub fn root() -> Self {
        Self(PathBuf::new())
    }

    /// True for the workspace root.
    pub fn is_root(&self) -> bool {
        self.0.as_os_str().is_empty()
    }

    /// The relative path.
    pub fn as_path(&self) -> &Path {
        &self.0
    }

    /// The parent directory and the final name; `None` for the root.
    pub fn split(&self) -> Option<(WorkspacePath, &std::ffi::OsStr)> {
        let name = self.0.file_name()?;
        let parent = self.0.parent().map(Path::to_path_buf).unwrap_or_default();
        Some((WorkspacePath(parent), name))
    }

    /// Joins a validated child path.
    pub fn join(&self, child: &WorkspacePath) -> WorkspacePath {
        WorkspacePath(self.0.join(&child.0))
    }
}

impl TryFrom<String> for WorkspacePath {
    type Error = Error;
    fn try_from(s: String) -> Result<Self> {
        Self::new(s)
    }
}

impl From<WorkspacePath> for String {
    fn from(p: WorkspacePath) -> String {
        p.0.to_string_lossy().into_owned()
    }
}

impl fmt::Display for WorkspacePath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_root() {
            f.write_str(".")
        } else {
            write!(f, "{}", self.0.display())
        }
    }
}

impl fmt::Debug for WorkspacePath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "WorkspacePath({:?})", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalises_and_rejects() {
        assert_eq!(WorkspacePath::new("a/./b//c/").expect("ok").as_path(), Path::new("a/b/c"));
        assert!(WorkspacePath::new("").expect("ok").is_root());
        assert!(WorkspacePath::new(".").expect("ok").is_root());
        for bad in ["../x", "a/../../x", "a/..", "/etc/passwd", "/"] {
            let e = WorkspacePath::new(bad).expect_err(bad).to_string();
            assert!(e.contains(&format!("{bad:?}")), "{e}");
        }
        assert!(WorkspacePath::new("a".repeat(256)).is_err());
        assert!(WorkspacePath::new("a/".repeat(2049)).is_err());
        assert!(WorkspacePath::new(std::ffi::OsStr::new("a\0b")).is_err());
    }

    #[test]
    fn splits() {
        let p = WorkspacePath::new("a/b/c").expect("ok");
        let (parent, name) = p.split().expect("has a name");
        assert_eq!(parent.as_path(), Path::new("a/b"));
        assert_eq!(name, "c");
        assert!(WorkspacePath::root().split().is_none());
    }
}
