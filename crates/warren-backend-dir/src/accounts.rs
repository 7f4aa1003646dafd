//! Host account entries for workspace uids, so that `id -un`, `whoami`, `ls -l` and shell
//! prompts show the workspace's username instead of a bare number.
//!
//! `create` (and `start`, to repair a host whose account files were reset) adds
//!
//! ```text
//! /etc/passwd  {username}:*:{uid}:{gid}:warren workspace:{home}:/usr/sbin/nologin
//! /etc/group   {username}:x:{gid}:
//! ```
//!
//! and `destroy` removes them. The password field `*` and the `nologin` shell mean the account
//! cannot log in (no password, no shell for sshd or su); commands run through warren only.
//!
//! Only entries warren made are ever changed: a passwd line is warren's when its comment field
//! is exactly `warren workspace`. If the uid or the name already belongs to a host account, the
//! entry is not added (the workspace then runs nameless) and a warning is logged. Usernames come
//! from [`warren_core::UserId::linux_username`] (`u_...` or `w-...`), which never name a system
//! account. Several workspaces may share a username with different uids (a user's workspace on
//! two state directories): lookups by uid, which is what `id -un` does, stay exact.
//!
//! Edits hold the lock `lckpwdf(3)` takes (an `fcntl` lock on `/etc/.pwd.lock`, also taken by
//! `useradd` and friends) and replace the file atomically (temporary file, fsync, rename), keeping
//! its mode and owner.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use nix::fcntl::{fcntl, FcntlArg};
use nix::libc;
use warren_core::{Error, Result};

/// The comment field that marks a passwd entry as warren's.
pub(crate) const MARKER: &str = "warren workspace";

/// fcntl locks do not exclude threads of one process: this does.
static IN_PROCESS: Mutex<()> = Mutex::new(());

/// The account files to edit.
#[derive(Debug, Clone)]
pub(crate) struct AccountDb {
    passwd: PathBuf,
    group: PathBuf,
    lock: PathBuf,
}

/// What an edit of one file comes to.
#[derive(Debug, PartialEq, Eq)]
enum Edit {
    /// The file already says what it should.
    Unchanged,
    /// The new content.
    Changed(String),
    /// Not touched, and why.
    Skipped(String),
}

/// One workspace account.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Account<'a> {
    pub name: &'a str,
    pub uid: u32,
    pub gid: u32,
    pub home: &'a Path,
}

impl AccountDb {
    /// The host's `/etc/passwd` and `/etc/group`.
    pub(crate) fn host() -> Self {
        Self::at(Path::new("/etc"))
    }

    /// `passwd`, `group` and `.pwd.lock` in `dir`.
    pub(crate) fn at(dir: &Path) -> Self {
        Self { passwd: dir.join("passwd"), group: dir.join("group"), lock: dir.join(".pwd.lock") }
    }

    /// Adds (or repairs) the entries of `acct`. Returns why an entry was not added, if one was
    /// not; errors are failures to read or write the files.
    pub(crate) fn ensure(&self, acct: Account<'_>) -> Result<Vec<String>> {
        check_fields(acct)?;
        let shell = if Path::new("/usr/sbin/nologin").exists() { "/usr/sbin/nologin" } else { "/bin/false" };
        self.edit(|passwd, group| match ensure_passwd(passwd, acct, shell) {
            // No user entry of ours: no group either.
            skipped @ Edit::Skipped(_) => (skipped, Edit::Unchanged),
            p => (p, ensure_group(group, acct)),
        })
    }

    /// Removes the entries of `acct` that warren made.
    pub(crate) fn remove(&self, acct: Account<'_>) -> Result<Vec<String>> {
        self.edit(|passwd, group| (remove_passwd(passwd, acct), remove_group(group, acct)))
    }

    fn edit(&self, f: impl FnOnce(&str, &str) -> (Edit, Edit)) -> Result<Vec<String>> {
        let _guard = IN_PROCESS.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let _lock = self.lock_file()?;
        let passwd = read(&self.passwd)?;
        let group = read(&self.group)?;
        let (p, g) = f(&passwd, &group);
        let mut skipped = Vec::new();
        for (edit, path) in [(p, &self.passwd), (g, &self.group)] {
            match edit {
                Edit::Unchanged => {}
                Edit::Changed(content) => replace(path, &content)?,
                Edit::Skipped(why) => skipped.push(format!("{}: {why}", path.display())),
            }
        }
        Ok(skipped)
    }

    /// Takes the `lckpwdf` lock (retrying for up to 15 s, as `lckpwdf` does); released when the
    /// returned file is closed.
    fn lock_file(&self) -> Result<File> {
        let f = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(&self.lock)
            .map_err(|e| Error::io(format!("opening {}", self.lock.display()), e))?;
        // A write lock on the whole file.
        let mut fl = zeroed_flock();
        fl.l_type = libc::F_WRLCK as libc::c_short;
        fl.l_whence = libc::SEEK_SET as libc::c_short;
        for _ in 0..150 {
            match fcntl(&f, FcntlArg::F_SETLK(&fl)) {
                Ok(_) => return Ok(f),
                Err(nix::errno::Errno::EAGAIN | nix::errno::Errno::EACCES | nix::errno::Errno::EINTR) => {
                    std::thread::sleep(Duration::from_millis(100));
                }
                Err(e) => return Err(Error::errno(format!("locking {}", self.lock.display()), e)),
            }
        }
        Err(Error::Conflict(format!(
            "{} stayed locked for 15 s (another program is editing the account files); try again",
            self.lock.display()
        )))
    }
}

/// A `flock` struct with every field zero.
fn zeroed_flock() -> libc::flock {
    libc::flock { l_type: 0, l_whence: 0, l_start: 0, l_len: 0, l_pid: 0 }
}

fn check_fields(acct: Account<'_>) -> Result<()> {
    let name_ok = !acct.name.is_empty()
        && acct.name.len() <= 32
        && acct.name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
        && !acct.name.starts_with('-');
    if !name_ok {
        return Err(Error::InvalidRequest(format!("{:?} is not a portable account name", acct.name)));
    }
    let home = acct.home.to_string_lossy();
    if home.contains([':', '\n']) || home.contains('\u{fffd}') {
        return Err(Error::InvalidRequest(format!("home {home:?} cannot be written to /etc/passwd")));
    }
    Ok(())
}

fn read(path: &Path) -> Result<String> {
    std::fs::read_to_string(path).map_err(|e| Error::io(format!("reading {}", path.display()), e))
}

/// Replaces `path` atomically with `content`, keeping its mode and owner.
fn replace(path: &Path, content: &str) -> Result<()> {
    let md = std::fs::symlink_metadata(path).map_err(|e| Error::io(format!("looking at {}", path.display()), e))?;
    if !md.file_type().is_file() {
        return Err(Error::Conflict(format!("{} is not a regular file; not editing it", path.display())));
    }
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let tmp = path.with_file_name(format!(".{name}.warren-{}", std::process::id()));
    let write = || -> std::io::Result<()> {
        let mut f = OpenOptions::new().write(true).create_new(true).mode(0o600).open(&tmp)?;
        f.write_all(content.as_bytes())?;
        std::os::unix::fs::fchown(&f, Some(md.uid()), Some(md.gid()))?;
        f.set_permissions(std::fs::Permissions::from_mode(md.mode() & 0o7777))?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)?;
        if let Some(dir) = path.parent() {
            File::open(dir)?.sync_all()?;
        }
        Ok(())
    };
    write().map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        Error::io(format!("rewriting {}", path.display()), e)
    })
}

fn with_line(content: &str, line: &str) -> String {
    let mut out = content.to_owned();
    if !out.is_empty() && !out.ends_with('\n') {
        out.push('\n');
    }
    out.push_str(line);
    out.push('\n');
    out
}

fn ensure_passwd(content: &str, acct: Account<'_>, shell: &str) -> Edit {
    let want = format!("{}:*:{}:{}:{MARKER}:{}:{shell}", acct.name, acct.uid, acct.gid, acct.home.display());
    let uid = acct.uid.to_string();
    let mut ours = None;
    for (i, line) in content.lines().enumerate() {
        let f: Vec<&str> = line.split(':').collect();
        if f.len() < 7 {
            continue;
        }
        let warren = f[4] == MARKER;
        if f[2] == uid {
            if !warren {
                return Edit::Skipped(format!("uid {uid} belongs to host account {:?}", f[0]));
            }
            ours = Some(i);
        } else if f[0] == acct.name && !warren {
            return Edit::Skipped(format!("the name {:?} belongs to host account with uid {}", f[0], f[2]));
        }
    }
    match ours {
        None => Edit::Changed(with_line(content, &want)),
        Some(i) => {
            let lines: Vec<&str> = content.lines().collect();
            if lines[i] == want {
                return Edit::Unchanged;
            }
            // A stale entry of this uid (another home, another name): replace it in place.
            let mut out: String = lines
                .iter()
                .enumerate()
                .map(|(j, l)| if j == i { format!("{want}\n") } else { format!("{l}\n") })
                .collect();
            if !content.ends_with('\n') && i + 1 != lines.len() {
                out.pop();
            }
            Edit::Changed(out)
        }
    }
}

fn ensure_group(content: &str, acct: Account<'_>) -> Edit {
    let gid = acct.gid.to_string();
    for line in content.lines() {
        let f: Vec<&str> = line.split(':').collect();
        if f.len() < 3 {
            continue;
        }
        if f[2] == gid {
            return if f[0] == acct.name {
                Edit::Unchanged
            } else {
                Edit::Skipped(format!("gid {gid} belongs to group {:?}", f[0]))
            };
        }
        if f[0] == acct.name {
            return Edit::Skipped(format!("the group name {:?} is taken by gid {}", f[0], f[2]));
        }
    }
    Edit::Changed(with_line(content, &format!("{}:x:{gid}:", acct.name)))
}

fn without(content: &str, drop: impl Fn(&[&str]) -> bool) -> Edit {
    let mut out = String::with_capacity(content.len());
    let mut changed = false;
    for line in content.lines() {
        let f: Vec<&str> = line.split(':').collect();
        if drop(&f) {
            changed = true;
        } else {
            out.push_str(line);
            out.push('\n');
        }
    }
    if changed {
        Edit::Changed(out)
    } else {
        Edit::Unchanged
    }
}

fn remove_passwd(content: &str, acct: Account<'_>) -> Edit {
    let uid = acct.uid.to_string();
    without(content, |f| f.len() >= 7 && f[2] == uid && f[4] == MARKER)
}

fn remove_group(content: &str, acct: Account<'_>) -> Edit {
    let gid = acct.gid.to_string();
    without(content, |f| f.len() == 4 && f[0] == acct.name && f[2] == gid && f[1] == "x" && f[3].is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    const PASSWD: &str = "root:x:0:0:root:/root:/bin/bash\nalice:x:1000:1000:Alice:/home/alice:/bin/bash\n";
    const GROUP: &str = "root:x:0:\nalice:x:1000:\n";

    fn acct(name: &'static str, uid: u32) -> Account<'static> {
        Account { name, uid, gid: uid, home: Path::new("/s/workspaces/u_1") }
    }

    #[test]
    fn adds_repairs_and_removes_only_its_own_entries() {
        let a = acct("u_1", 2_000_000);
        let Edit::Changed(p) = ensure_passwd(PASSWD, a, "/usr/sbin/nologin") else { panic!("not added") };
        assert_eq!(p, format!("{PASSWD}u_1:*:2000000:2000000:warren workspace:/s/workspaces/u_1:/usr/sbin/nologin\n"));
        assert_eq!(ensure_passwd(&p, a, "/usr/sbin/nologin"), Edit::Unchanged);
        // A stale entry of the same uid (other home) is replaced in place.
        let moved = Account { home: Path::new("/t/workspaces/u_1"), ..a };
        let Edit::Changed(p2) = ensure_passwd(&p, moved, "/usr/sbin/nologin") else { panic!("not repaired") };
        assert!(p2.ends_with("warren workspace:/t/workspaces/u_1:/usr/sbin/nologin\n"), "{p2}");
        assert_eq!(p2.lines().count(), 3);
        // Same name, other uid (another state dir): both stay.
        let Edit::Changed(p3) = ensure_passwd(&p2, acct("u_1", 2_000_001), "/bin/false") else { panic!() };
        assert_eq!(p3.lines().count(), 4);
        assert_eq!(remove_passwd(&p3, a), Edit::Changed(format!("{PASSWD}{}\n", p3.lines().nth(3).expect("4th"))));

        let Edit::Changed(g) = ensure_group(GROUP, a) else { panic!("group not added") };
        assert_eq!(g, format!("{GROUP}u_1:x:2000000:\n"));
        assert_eq!(ensure_group(&g, a), Edit::Unchanged);
        assert_eq!(remove_group(&g, a), Edit::Changed(GROUP.to_owned()));
        assert_eq!(remove_group(GROUP, a), Edit::Unchanged);
    }

    #[test]
    fn never_touches_host_accounts() {
        // The uid is a host account's.
        assert!(matches!(ensure_passwd(PASSWD, acct("u_1", 1000), "/bin/false"), Edit::Skipped(_)));
        assert!(matches!(ensure_group(GROUP, acct("u_1", 1000)), Edit::Skipped(_)));
        assert!(matches!(ensure_group(GROUP, acct("alice", 2_000_000)), Edit::Skipped(_)));
        // The name is a host account's.
        assert!(matches!(ensure_passwd(PASSWD, acct("alice", 2_000_000), "/bin/false"), Edit::Skipped(_)));
        // Removing never drops a host line, even with a matching uid.
        assert_eq!(remove_passwd(PASSWD, acct("alice", 1000)), Edit::Unchanged);
        // No trailing newline in the original: still one entry per line.
        let Edit::Changed(p) = ensure_passwd(PASSWD.trim_end(), acct("u_2", 2_000_002), "/bin/false") else { panic!() };
        assert_eq!(p.lines().count(), 3);
        assert!(check_fields(Account { name: "root:x", ..acct("u_1", 2_000_000) }).is_err());
        assert!(check_fields(Account { home: Path::new("/a:b"), ..acct("u_1", 2_000_000) }).is_err());
    }

    #[test]
    fn edits_files_atomically_keeping_mode() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("passwd"), PASSWD).expect("write");
        std::fs::write(dir.path().join("group"), GROUP).expect("write");
        std::fs::set_permissions(dir.path().join("passwd"), std::fs::Permissions::from_mode(0o644)).expect("chmod");
        let db = AccountDb::at(dir.path());
        let a = acct("u_1", 2_000_000);
        assert!(db.ensure(a).expect("ensure").is_empty());
        let p = std::fs::read_to_string(dir.path().join("passwd")).expect("read");
        assert!(p.contains("u_1:*:2000000:2000000:warren workspace:"), "{p}");
        let md = std::fs::metadata(dir.path().join("passwd")).expect("md");
        assert_eq!(md.mode() & 0o7777, 0o644);
        let skipped = db.ensure(acct("alice", 2_000_005)).expect("ensure");
        assert_eq!(skipped.len(), 1, "{skipped:?}");
        assert!(db.remove(a).expect("remove").is_empty());
        assert_eq!(std::fs::read_to_string(dir.path().join("passwd")).expect("read"), PASSWD);
        assert_eq!(std::fs::read_to_string(dir.path().join("group")).expect("read"), GROUP);
        let leftovers: Vec<_> = std::fs::read_dir(dir.path())
            .expect("ls")
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.contains("warren"))
            .collect();
        assert!(leftovers.is_empty(), "{leftovers:?}");
    }
}
