//! Recording a workspace's files as a commit of the tracking repository.
//!
//! The home is read as root through [`crate::tree`] (beneath the home, no symlink followed,
//! only what the workspace uid owns) and streamed into `git fast-import`: a regular file becomes
//! a blob (mode 100644, or 100755 when its owner may execute it), a symlink a blob holding its
//! target (mode 120000). Directories are implied by their files (git keeps no empty ones).
//! Nested `.git` directories and the session's excluded names are never recorded.
//!
//! An entry the history cannot hold safely (a FIFO, a file of another uid, one larger than
//! [`MAX_FILE_BYTES`], one that changed while it was read) is listed as skipped, and the last
//! recorded version of that path is kept: the history never claims a change it did not see.
//!
//! A stat cache (`{session}/stat-cache`) spares reading unchanged files: an entry is reused
//! when device, inode, size, mode, owner, mtime and ctime all match and its ctime was more than
//! [`RACY_SECS`] older than the scan that recorded it (ctime cannot be set from inside the
//! sandbox, and the margin covers coarse timestamp clocks, as git's "racily clean" rule does).

use std::collections::HashMap;
use std::os::fd::BorrowedFd;
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use nix::sys::stat::FileStat;
use warren_core::Result;

use crate::git::{DataRef, Git, TreeEntry, MODE_EXEC, MODE_FILE, MODE_LINK};
use crate::record::{Skipped, MAX_SKIPPED_LISTED};
use crate::tree::{self, Found, WalkOptions};

/// Largest file the history records (bigger ones are skipped; GitHub's limit too).
pub const MAX_FILE_BYTES: u64 = 100 << 20;
/// How much older than a scan a file's ctime must be for its cache entry to be trusted.
const RACY_SECS: i64 = 3;

/// What a commit did.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct CommitInfo {
    /// The branch's commit now.
    pub commit: String,
    /// Whether the files differ from the previous commit.
    pub changed: bool,
    /// Whether a new commit was made (an unchanged tree is still recorded after a command).
    pub created: bool,
    /// Entries the history could not hold (the first [`MAX_SKIPPED_LISTED`]).
    pub skipped: Vec<Skipped>,
    /// How many in all.
    pub skipped_count: u64,
}

#[derive(Clone, Debug, PartialEq, Eq)]
struct StatKey {
    dev: u64,
    ino: u64,
    size: i64,
    mode: u32,
    uid: u32,
    mtime: (i64, i64),
    ctime: (i64, i64),
}

impl StatKey {
    fn of(st: &FileStat) -> Self {
        Self {
            dev: st.st_dev,
            ino: st.st_ino,
            size: st.st_size,
            mode: st.st_mode,
            uid: st.st_uid,
            mtime: (st.st_mtime, st.st_mtime_nsec),
            ctime: (st.st_ctime, st.st_ctime_nsec),
        }
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len()).step_by(2).map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok()).collect()
}

type Cache = HashMap<Vec<u8>, (StatKey, String)>;

/// Loads the cache; anything unreadable is an empty cache (it only saves work).
fn load_cache(path: &Path) -> Cache {
    let Ok(text) = std::fs::read_to_string(path) else { return Cache::new() };
    let mut lines = text.lines();
    if lines.next() != Some("warren-stat-cache 1") {
        return Cache::new();
    }
    let mut map = Cache::new();
    for line in lines {
        let f: Vec<&str> = line.split(' ').collect();
        let [sha, dev, ino, size, mode, uid, ms, mn, cs, cn, p] = f[..] else { return Cache::new() };
        let parsed = (|| {
            Some((
                unhex(p)?,
                (
                    StatKey {
                        dev: dev.parse().ok()?,
                        ino: ino.parse().ok()?,
                        size: size.parse().ok()?,
                        mode: mode.parse().ok()?,
                        uid: uid.parse().ok()?,
                        mtime: (ms.parse().ok()?, mn.parse().ok()?),
                        ctime: (cs.parse().ok()?, cn.parse().ok()?),
                    },
                    sha.to_owned(),
                ),
            ))
        })();
        match parsed {
            Some((p, v)) => {
                map.insert(p, v);
            }
            None => return Cache::new(),
        }
    }
    map
}

fn save_cache(path: &Path, cache: &Cache) -> Result<()> {
    let mut out = String::from("warren-stat-cache 1\n");
    for (p, (k, sha)) in cache {
        out.push_str(&format!(
            "{sha} {} {} {} {} {} {} {} {} {} {}\n",
            k.dev,
            k.ino,
            k.size,
            k.mode,
            k.uid,
            k.mtime.0,
            k.mtime.1,
            k.ctime.0,
            k.ctime.1,
            hex(p)
        ));
    }
    warren_core::fs::write_atomic(path, out.as_bytes(), 0o600)
}

/// Records the tree beneath `home` (owned by `uid`) as a commit on the session's branch.
/// Without `always`, nothing is committed when the files are the same as the last commit's.
pub(crate) fn commit(
    git: &Git,
    session_dir: &Path,
    home: BorrowedFd<'_>,
    uid: u32,
    exclude: &[String],
    message: &str,
    always: bool,
) -> Result<CommitInfo> {
    let cache_path = session_dir.join("stat-cache");
    match commit_once(git, &cache_path, home, uid, exclude, message, always, true) {
        Ok(c) => Ok(c),
        Err(e) => {
            // A cache that names a blob the repository lacks would fail the import: retry
            // once reading everything.
            tracing::warn!(error = %e, "recording the workspace failed; retrying without the stat cache");
            let _ = std::fs::remove_file(&cache_path);
            commit_once(git, &cache_path, home, uid, exclude, message, always, false)
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn commit_once(
    git: &Git,
    cache_path: &Path,
    home: BorrowedFd<'_>,
    uid: u32,
    exclude: &[String],
    message: &str,
    always: bool,
    use_cache: bool,
) -> Result<CommitInfo> {
    let head = git.head()?;
    let prev: HashMap<Vec<u8>, TreeEntry> = match &head {
        Some(h) => git.ls_tree(h)?,
        None => HashMap::new(),
    };
    let old_cache = if use_cache { load_cache(cache_path) } else { Cache::new() };
    let now = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0);
    let mut fi = git.fast_import()?;
    let mut entries: Vec<(Vec<u8>, u32, DataRef)> = Vec::new();
    let mut new_cache: Vec<(Vec<u8>, StatKey, u64)> = Vec::new();
    let mut kept_cache = Cache::new();
    let mut skipped: Vec<(Vec<u8>, String)> = Vec::new();
    let mut refused: Vec<(Vec<u8>, String)> = Vec::new();
    let opts = WalkOptions { exclude: exclude.to_vec(), owner: Some(uid), no_xdev: true };
    let mut visit = |path: &[u8], found: Found<'_>| -> Result<()> {
        match found {
            Found::Dir { .. } => Ok(()),
            Found::Symlink { target, .. } => {
                let m = fi.blob(&target)?;
                entries.push((path.to_vec(), MODE_LINK, DataRef::Mark(m)));
                Ok(())
            }
            Found::File { dir, name, st } => {
                let key = StatKey::of(&st);
                let mode = if st.st_mode & 0o100 != 0 { MODE_EXEC } else { MODE_FILE };
                if let Some((k, sha)) = old_cache.get(path) {
                    let in_head = prev.get(path).is_some_and(|e| &e.sha == sha);
                    if *k == key && in_head {
                        entries.push((path.to_vec(), mode, DataRef::Sha(sha.clone())));
                        kept_cache.insert(path.to_vec(), (key, sha.clone()));
                        return Ok(());
                    }
                }
                match tree::read_file(dir, name, Some(uid), MAX_FILE_BYTES, true) {
                    tree::Read::Data { data, st, stable } => {
                        let mode = if st.st_mode & 0o100 != 0 { MODE_EXEC } else { MODE_FILE };
                        let m = fi.blob(&data)?;
                        entries.push((path.to_vec(), mode, DataRef::Mark(m)));
                        if stable && st.st_ctime + RACY_SECS < now {
                            new_cache.push((path.to_vec(), StatKey::of(&st), m));
                        }
                    }
                    tree::Read::Gone => {}
                    tree::Read::Refused(why) => refused.push((path.to_vec(), why)),
                }
                Ok(())
            }
        }
    };
    let mut skip = |path: &[u8], why: String| skipped.push((path.to_vec(), why));
    tree::walk(home, &opts, &mut visit, &mut skip)?;
    skipped.append(&mut refused);
    skipped.sort();

    // Keep the last recorded version of whatever could not be read now.
    let mut have: std::collections::HashSet<Vec<u8>> = entries.iter().map(|e| e.0.clone()).collect();
    for (p, _) in &skipped {
        let mut prefix = p.clone();
        prefix.push(b'/');
        for (path, e) in &prev {
            if (path == p || path.starts_with(&prefix)) && have.insert(path.clone()) {
                entries.push((path.clone(), e.mode, DataRef::Sha(e.sha.clone())));
            }
        }
    }

    let skipped_count = skipped.len() as u64;
    let mut msg = message.trim_end().to_owned();
    if let Some((p, why)) = skipped.first() {
        msg.push_str(&format!(
            "\n\nskipped: {skipped_count} entries the history cannot hold (their last recorded version is kept); first: {}: {why}",
            String::from_utf8_lossy(p)
        ));
    }
    let marks = fi.commit(head.as_deref(), &entries, &msg, now)?;
    let (pending, tree) = git.pending()?;
    let head_tree = match &head {
        Some(h) => git.tree_of(h)?,
        None => crate::git::EMPTY_TREE.to_owned(),
    };
    let changed = head.is_none() || head_tree != tree;
    let created = changed || always;
    let commit = if created {
        git.advance(&pending, head.as_deref(), "warren code")?;
        pending
    } else {
        git.drop_pending()?;
        head.clone().unwrap_or(pending)
    };
    for (p, k, m) in new_cache {
        if let Some(sha) = marks.get(&m) {
            kept_cache.insert(p, (k, sha.clone()));
        }
    }
    if let Err(e) = save_cache(cache_path, &kept_cache) {
        tracing::warn!(error = %e, "saving the stat cache failed; the next commit reads every file");
        let _ = std::fs::remove_file(cache_path);
    }
    let skipped = skipped
        .into_iter()
        .take(MAX_SKIPPED_LISTED)
        .map(|(p, reason)| Skipped { path: String::from_utf8_lossy(&p).into_owned(), reason })
        .collect();
    Ok(CommitInfo { commit, changed, created, skipped, skipped_count })
}

/// A command line for a commit message: shell-quoted words, control characters escaped, at
/// most 300 characters.
pub(crate) fn show_argv(argv: &[String]) -> String {
    let mut out = String::new();
    for (i, a) in argv.iter().enumerate() {
        if i > 0 {
            out.push(' ');
        }
        let plain = !a.is_empty() && a.chars().all(|c| c.is_ascii_alphanumeric() || "-_./=:,+@%".contains(c));
        if plain {
            out.push_str(a);
        } else if a.chars().any(char::is_control) {
            out.push_str("$'");
            for c in a.chars() {
                match c {
                    '\'' => out.push_str("\\'"),
                    '\\' => out.push_str("\\\\"),
                    '\n' => out.push_str("\\n"),
                    '\t' => out.push_str("\\t"),
                    c if c.is_control() => out.push_str(&format!("\\x{:02x}", c as u32 & 0xff)),
                    c => out.push(c),
                }
            }
            out.push('\'');
        } else {
            out.push('\'');
            out.push_str(&a.replace('\'', "'\\''"));
            out.push('\'');
        }
    }
    if out.chars().count() > 300 {
        out = out.chars().take(297).collect::<String>() + "...";
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn argv_display() {
        assert_eq!(show_argv(&["sh".into(), "-c".into(), "echo hi > f".into()]), "sh -c 'echo hi > f'");
        assert_eq!(show_argv(&["a'b".into()]), "'a'\\''b'");
        assert_eq!(show_argv(&["a\nb\x1e".into()]), "$'a\\nb\\x1e'");
        assert_eq!(show_argv(&["".into()]), "''");
        assert!(show_argv(&["x".repeat(1000)]).len() <= 300);
    }

    /// Names git and fast-import treat specially (quotes, backslashes, newlines, invalid UTF-8,
    /// a leading dash or quote, `.git` in other cases) are recorded exactly or, for `.git`, not
    /// at all; a second commit of the same files changes nothing.
    #[test]
    fn hostile_names() {
        use std::os::fd::AsFd;
        use std::os::unix::ffi::OsStrExt;
        let t = tempfile::tempdir().expect("tempdir");
        let (session, home) = (t.path().join("s"), t.path().join("h"));
        std::fs::create_dir_all(&session).expect("mkdir");
        std::fs::create_dir_all(home.join("sub")).expect("mkdir");
        let names: Vec<&[u8]> = vec![
            b"a \"quoted\" name",
            b"back\\slash",
            b"new\nline",
            b"\xff\xferaw",
            b"-dash",
            b"\"lead",
            b"tab\there",
            b"sub/M 100644 inline x",
        ];
        for n in &names {
            std::fs::write(home.join(std::ffi::OsStr::from_bytes(n)), n).expect("write");
        }
        std::fs::create_dir_all(home.join("sub/.Git")).expect("mkdir");
        std::fs::write(home.join("sub/.Git/HEAD"), b"x").expect("write");
        let git = Git::new(&session).expect("git");
        git.init().expect("init");
        let root = crate::tree::open_root(&home).expect("root");
        let me = nix::unistd::geteuid().as_raw();
        let c = commit(&git, &session, root.as_fd(), me, &[], "first", false).expect("commit");
        assert!(c.changed && c.created && c.skipped_count == 0, "{c:?}");
        let tree = git.ls_tree(&c.commit).expect("ls-tree");
        let mut got: Vec<Vec<u8>> = tree.keys().cloned().collect();
        got.sort();
        let mut want: Vec<Vec<u8>> = names.iter().map(|n| n.to_vec()).collect();
        want.sort();
        assert_eq!(got, want);
        let again = commit(&git, &session, root.as_fd(), me, &[], "second", false).expect("commit");
        assert_eq!((again.changed, again.created, again.commit), (false, false, c.commit));
    }

    #[test]
    fn hex_roundtrip() {
        let p = b"a b\n\xff/c".to_vec();
        assert_eq!(unhex(&hex(&p)), Some(p));
        assert_eq!(unhex("0"), None);
        assert_eq!(unhex("zz"), None);
    }
}
