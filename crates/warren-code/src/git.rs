//! The tracking repository, driven through the `git` CLI with a sanitized environment.
//!
//! Every git process runs with an empty environment but for a fixed `PATH`, `HOME` (the session
//! directory), `GIT_DIR` (the bare repository), `GIT_CONFIG_NOSYSTEM=1`,
//! `GIT_CONFIG_GLOBAL=/dev/null` and `LC_ALL=C`, and with `-c` settings that switch off hooks,
//! attribute files (a `.gitattributes` written by the sandbox must not hide a change from a
//! reviewer: `attr.tree` is the empty tree), external diff drivers and text conversion, and
//! automatic gc; objects and refs are fsynced. Arguments that come from callers are only ever
//! validated hexadecimal commit ids; paths travel inside the fast-import stream or after `--`
//! with literal pathspecs.

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufRead, BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};

use warren_core::{Error, Result};

/// The id of the empty tree.
pub(crate) const EMPTY_TREE: &str = "4b825dc642cb6eb9a060e54bf8d69288fbee4904";

/// The branch holding the session's history.
pub(crate) const BRANCH: &str = "refs/heads/main";
const PENDING: &str = "refs/warren/pending";

/// A regular file, an executable one, a symlink.
pub(crate) const MODE_FILE: u32 = 0o100644;
pub(crate) const MODE_EXEC: u32 = 0o100755;
pub(crate) const MODE_LINK: u32 = 0o120000;

fn git_binary() -> Result<PathBuf> {
    ["/usr/bin/git", "/usr/local/bin/git", "/bin/git"].iter().map(PathBuf::from).find(|p| p.is_file()).ok_or_else(
        || Error::Unsupported("git is not installed (code sessions keep their history with it): install git".into()),
    )
}

/// Whether `s` is a commit id as callers may give it (4 to 40 lowercase hex digits).
pub(crate) fn valid_rev(s: &str) -> bool {
    (4..=40).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// Lines added and deleted per path (`None`: binary).
pub(crate) type LineCounts = HashMap<Vec<u8>, Option<(u64, u64)>>;

/// One entry of a tree listing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct TreeEntry {
    pub mode: u32,
    pub sha: String,
    /// The blob's size in bytes.
    pub size: u64,
}

/// The tracking repository of one session.
#[derive(Debug)]
pub(crate) struct Git {
    git: PathBuf,
    git_dir: PathBuf,
    home: PathBuf,
}

impl Git {
    /// The repository `{session}/track.git`.
    pub fn new(session_dir: &Path) -> Result<Self> {
        Ok(Self { git: git_binary()?, git_dir: session_dir.join("track.git"), home: session_dir.to_owned() })
    }

    fn command(&self) -> Command {
        let mut c = Command::new(&self.git);
        c.env_clear()
            .env("PATH", "/usr/local/bin:/usr/bin:/bin")
            .env("HOME", &self.home)
            .env("GIT_DIR", &self.git_dir)
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .env("GIT_CONFIG_GLOBAL", "/dev/null")
            .env("GIT_TERMINAL_PROMPT", "0")
            .env("GIT_OPTIONAL_LOCKS", "0")
            .env("GIT_NO_REPLACE_OBJECTS", "1")
            .env("GIT_LITERAL_PATHSPECS", "1")
            .env("LC_ALL", "C")
            .current_dir(&self.home)
            .stdin(Stdio::null());
        for kv in [
            "core.hooksPath=/dev/null",
            "core.attributesFile=/dev/null",
            &format!("attr.tree={EMPTY_TREE}"),
            "core.fsync=objects,reference",
            "core.fsyncMethod=fsync",
            "gc.auto=0",
            "maintenance.auto=false",
            "core.pager=cat",
            "color.ui=false",
            "diff.renames=false",
            "log.showSignature=false",
        ] {
            c.arg("-c").arg(kv);
        }
        c
    }

    fn fail(&self, what: &str, stderr: &[u8]) -> Error {
        let msg = String::from_utf8_lossy(stderr);
        Error::Internal(format!("git {what} failed in {}: {}", self.git_dir.display(), msg.trim()))
    }

    /// Runs git with `args`; its stdout, or an error with its stderr.
    fn run(&self, what: &str, args: &[&str]) -> Result<Vec<u8>> {
        let out = self.command().args(args).output().map_err(|e| Error::io(format!("running git {what}"), e))?;
        if !out.status.success() {
            return Err(self.fail(what, &out.stderr));
        }
        Ok(out.stdout)
    }

    /// Runs git with `args`, keeping at most `max` bytes of stdout (the process is killed
    /// beyond); returns the bytes and whether they were cut.
    fn run_capped(&self, what: &str, args: &[&str], max: usize) -> Result<(Vec<u8>, bool)> {
        let mut child = self
            .command()
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| Error::io(format!("running git {what}"), e))?;
        let mut out = Vec::new();
        let mut cut = false;
        if let Some(stdout) = child.stdout.take() {
            stdout
                .take(max as u64 + 1)
                .read_to_end(&mut out)
                .map_err(|e| Error::io(format!("reading git {what}"), e))?;
            if out.len() > max {
                out.truncate(max);
                cut = true;
                let _ = child.kill();
            }
        }
        let res = child.wait_with_output().map_err(|e| Error::io(format!("waiting for git {what}"), e))?;
        if !cut && !res.status.success() {
            return Err(self.fail(what, &res.stderr));
        }
        Ok((out, cut))
    }

    /// Creates the bare repository.
    pub fn init(&self) -> Result<()> {
        let out = self
            .command()
            .env_remove("GIT_DIR")
            .args(["init", "--quiet", "--bare", "--initial-branch=main"])
            .arg(&self.git_dir)
            .output()
            .map_err(|e| Error::io("running git init", e))?;
        if !out.status.success() {
            return Err(self.fail("init", &out.stderr));
        }
        Ok(())
    }

    /// The commit the branch points at, if any.
    pub fn head(&self) -> Result<Option<String>> {
        let out = self
            .command()
            .args(["rev-parse", "--verify", "--quiet", &format!("{BRANCH}^{{commit}}")])
            .output()
            .map_err(|e| Error::io("running git rev-parse", e))?;
        match out.status.code() {
            Some(0) => Ok(Some(String::from_utf8_lossy(&out.stdout).trim().to_owned())),
            Some(1) => Ok(None),
            _ => Err(self.fail("rev-parse", &out.stderr)),
        }
    }

    /// The full commit id of `rev` (a validated hex prefix, or a full id).
    pub fn resolve(&self, rev: &str) -> Result<String> {
        if !valid_rev(rev) {
            return Err(Error::InvalidRequest(format!("{rev:?} is not a commit id (4 to 40 lowercase hex digits)")));
        }
        let out = self
            .command()
            .args(["rev-parse", "--verify", "--quiet", &format!("{rev}^{{commit}}")])
            .output()
            .map_err(|e| Error::io("running git rev-parse", e))?;
        if !out.status.success() {
            return Err(Error::NotFound(format!("commit {rev} in this session's history (see `warren code log`)")));
        }
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
    }

    /// The tree of `commit`, every blob and symlink with its path and size.
    pub fn ls_tree(&self, commit: &str) -> Result<HashMap<Vec<u8>, TreeEntry>> {
        let out = self.run("ls-tree", &["ls-tree", "-r", "-l", "-z", "--full-tree", commit])?;
        let mut map = HashMap::new();
        for rec in out.split(|b| *b == 0).filter(|r| !r.is_empty()) {
            // "<mode> SP <type> SP <sha> SP+ <size> TAB <path>"
            let tab = rec.iter().position(|b| *b == b'\t').ok_or_else(|| self.fail("ls-tree", b"malformed output"))?;
            let head = String::from_utf8_lossy(&rec[..tab]);
            let mut parts = head.split_whitespace();
            let (Some(mode), Some(_kind), Some(sha), Some(size)) =
                (parts.next(), parts.next(), parts.next(), parts.next())
            else {
                return Err(self.fail("ls-tree", b"malformed output"));
            };
            let mode = u32::from_str_radix(mode, 8).map_err(|_| self.fail("ls-tree", b"malformed mode"))?;
            let size = size.parse().map_err(|_| self.fail("ls-tree", b"malformed size"))?;
            map.insert(rec[tab + 1..].to_vec(), TreeEntry { mode, sha: sha.to_owned(), size });
        }
        Ok(map)
    }

    /// Starts a fast-import writing to a pending ref.
    pub fn fast_import(&self) -> Result<FastImport> {
        let marks = self.home.join("marks.tmp");
        let _ = std::fs::remove_file(&marks);
        let err_path = self.home.join("fast-import.err");
        let err = File::create(&err_path).map_err(|e| Error::io(format!("creating {}", err_path.display()), e))?;
        let mut child = self
            .command()
            .args(["fast-import", "--quiet", "--done", "--force"])
            .arg(format!("--export-marks={}", marks.display()))
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::from(err))
            .spawn()
            .map_err(|e| Error::io("running git fast-import", e))?;
        let stdin = child.stdin.take().ok_or_else(|| Error::Internal("git fast-import has no stdin".into()))?;
        Ok(FastImport { child, input: BufWriter::with_capacity(1 << 20, stdin), next_mark: 1, marks, err_path })
    }

    /// Moves the branch from `old` to `new` (compare-and-swap) and drops the pending ref.
    pub fn advance(&self, new: &str, old: Option<&str>, reason: &str) -> Result<()> {
        let zero = "0000000000000000000000000000000000000000";
        self.run("update-ref", &["update-ref", "-m", reason, BRANCH, new, old.unwrap_or(zero)])?;
        self.drop_pending()
    }

    /// Removes the pending ref (if any).
    pub fn drop_pending(&self) -> Result<()> {
        let out = self
            .command()
            .args(["update-ref", "-d", PENDING])
            .output()
            .map_err(|e| Error::io("running git update-ref", e))?;
        if !out.status.success() {
            return Err(self.fail("update-ref -d", &out.stderr));
        }
        Ok(())
    }

    /// The pending commit and its tree.
    pub fn pending(&self) -> Result<(String, String)> {
        let out = self.run("rev-parse", &["rev-parse", PENDING, &format!("{PENDING}^{{tree}}")])?;
        let text = String::from_utf8_lossy(&out);
        let mut it = text.lines();
        match (it.next(), it.next()) {
            (Some(c), Some(t)) => Ok((c.trim().to_owned(), t.trim().to_owned())),
            _ => Err(self.fail("rev-parse", b"no pending commit")),
        }
    }

    /// The tree of a commit.
    pub fn tree_of(&self, commit: &str) -> Result<String> {
        let out = self.run("rev-parse", &["rev-parse", "--verify", &format!("{commit}^{{tree}}")])?;
        Ok(String::from_utf8_lossy(&out).trim().to_owned())
    }

    /// `git diff --name-status` between two commits: (status letter, path).
    pub fn name_status(&self, from: &str, to: &str) -> Result<Vec<(u8, Vec<u8>)>> {
        let out =
            self.run("diff", &["diff", "--name-status", "-z", "--no-renames", "--no-ext-diff", from, to, "--"])?;
        let mut it = out.split(|b| *b == 0);
        let mut v = Vec::new();
        while let Some(status) = it.next() {
            if status.is_empty() {
                continue;
            }
            let path = it.next().ok_or_else(|| self.fail("diff --name-status", b"malformed output"))?;
            v.push((status[0], path.to_vec()));
        }
        Ok(v)
    }

    /// `git diff --numstat` between two commits: path -> (added, deleted), `None` for binary.
    pub fn numstat(&self, from: &str, to: &str) -> Result<LineCounts> {
        let out = self.run("diff", &["diff", "--numstat", "-z", "--no-renames", "--no-ext-diff", from, to, "--"])?;
        let mut map = HashMap::new();
        for rec in out.split(|b| *b == 0).filter(|r| !r.is_empty()) {
            let mut parts = rec.splitn(3, |b| *b == b'\t');
            let (Some(a), Some(d), Some(p)) = (parts.next(), parts.next(), parts.next()) else {
                return Err(self.fail("diff --numstat", b"malformed output"));
            };
            let num = |x: &[u8]| std::str::from_utf8(x).ok().and_then(|s| s.parse::<u64>().ok());
            let counts = match (num(a), num(d)) {
                (Some(a), Some(d)) => Some((a, d)),
                _ => None,
            };
            map.insert(p.to_vec(), counts);
        }
        Ok(map)
    }

    /// The patch between two commits (at most `max` bytes), optionally of some paths only.
    pub fn diff(&self, from: &str, to: &str, paths: &[String], max: usize) -> Result<(Vec<u8>, bool)> {
        let mut args = vec!["diff", "--no-color", "--no-ext-diff", "--no-textconv", "--no-renames", from, to, "--"];
        args.extend(paths.iter().map(String::as_str));
        self.run_capped("diff", &args, max)
    }

    /// The last `limit` commits of the branch, newest first: (id, unix time, message).
    pub fn log(&self, limit: usize) -> Result<Vec<(String, i64, String)>> {
        let n = format!("--max-count={limit}");
        let out = self.run("log", &["log", "--no-color", &n, "--format=%H%x1f%ct%x1f%B%x1e", BRANCH, "--"])?;
        let text = String::from_utf8_lossy(&out);
        let mut v = Vec::new();
        for rec in text.split('\x1e') {
            let rec = rec.trim_start_matches('\n');
            if rec.is_empty() {
                continue;
            }
            let mut parts = rec.splitn(3, '\x1f');
            let (Some(id), Some(t), Some(msg)) = (parts.next(), parts.next(), parts.next()) else {
                return Err(self.fail("log", b"malformed output"));
            };
            v.push((id.to_owned(), t.trim().parse().unwrap_or(0), msg.trim_end().to_owned()));
        }
        Ok(v)
    }

    /// Reads objects by id (`git cat-file --batch`).
    pub fn cat_file(&self) -> Result<CatFile> {
        let mut child = self
            .command()
            .args(["cat-file", "--batch"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| Error::io("running git cat-file", e))?;
        let stdin = child.stdin.take().ok_or_else(|| Error::Internal("git cat-file has no stdin".into()))?;
        let stdout = child.stdout.take().ok_or_else(|| Error::Internal("git cat-file has no stdout".into()))?;
        Ok(CatFile { child, stdin, stdout: BufReader::new(stdout), broken: false })
    }
}

/// A blob or the id of one, for a tree entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum DataRef {
    /// A blob written in this import.
    Mark(u64),
    /// A blob already in the repository.
    Sha(String),
}

/// A running `git fast-import`.
#[derive(Debug)]
pub(crate) struct FastImport {
    child: Child,
    input: BufWriter<ChildStdin>,
    next_mark: u64,
    marks: PathBuf,
    err_path: PathBuf,
}

/// Quotes a path for fast-import: C style, every byte outside printable ASCII in octal.
fn quote(path: &[u8]) -> Vec<u8> {
    let mut q = vec![b'"'];
    for &b in path {
        match b {
            b'"' => q.extend_from_slice(b"\\\""),
            b'\\' => q.extend_from_slice(b"\\\\"),
            0x20..=0x7e => q.push(b),
            _ => q.extend_from_slice(format!("\\{b:03o}").as_bytes()),
        }
    }
    q.push(b'"');
    q
}

impl FastImport {
    fn io(&mut self, e: std::io::Error) -> Error {
        // The process probably died: its stderr says why.
        let _ = self.child.kill();
        let _ = self.child.wait();
        let msg = std::fs::read_to_string(&self.err_path).unwrap_or_default();
        Error::Internal(format!("git fast-import failed: {e}; {}", msg.trim()))
    }

    /// Writes a blob; returns its mark.
    pub fn blob(&mut self, data: &[u8]) -> Result<u64> {
        let mark = self.next_mark;
        self.next_mark += 1;
        let r = write!(self.input, "blob\nmark :{mark}\ndata {}\n", data.len())
            .and_then(|_| self.input.write_all(data))
            .and_then(|_| self.input.write_all(b"\n"));
        r.map_err(|e| self.io(e))?;
        Ok(mark)
    }

    /// Writes the commit (the whole tree: `deleteall`, then every entry), ends the stream and
    /// waits. Returns the marks' blob ids.
    pub fn commit(
        mut self,
        parent: Option<&str>,
        entries: &[(Vec<u8>, u32, DataRef)],
        message: &str,
        time: i64,
    ) -> Result<HashMap<u64, String>> {
        let mut w = || -> std::io::Result<()> {
            write!(self.input, "commit {PENDING}\ncommitter warren <warren@localhost> {time} +0000\n")?;
            write!(self.input, "data {}\n{message}\n", message.len())?;
            if let Some(p) = parent {
                writeln!(self.input, "from {p}")?;
            }
            self.input.write_all(b"deleteall\n")?;
            for (path, mode, data) in entries {
                match data {
                    DataRef::Mark(m) => write!(self.input, "M {mode:06o} :{m} ")?,
                    DataRef::Sha(s) => write!(self.input, "M {mode:06o} {s} ")?,
                }
                self.input.write_all(&quote(path))?;
                self.input.write_all(b"\n")?;
            }
            self.input.write_all(b"\ndone\n")?;
            self.input.flush()
        };
        if let Err(e) = w() {
            return Err(self.io(e));
        }
        let FastImport { mut child, input, marks, err_path, .. } = self;
        drop(input);
        let status = child.wait().map_err(|e| Error::io("waiting for git fast-import", e))?;
        let err = std::fs::read_to_string(&err_path).unwrap_or_default();
        let _ = std::fs::remove_file(&err_path);
        if !status.success() {
            return Err(Error::Internal(format!("git fast-import failed: {}", err.trim())));
        }
        let text = std::fs::read_to_string(&marks).unwrap_or_default();
        let _ = std::fs::remove_file(&marks);
        let mut map = HashMap::new();
        for line in text.lines() {
            if let Some((m, sha)) = line.strip_prefix(':').and_then(|l| l.split_once(' ')) {
                if let Ok(m) = m.parse() {
                    map.insert(m, sha.to_owned());
                }
            }
        }
        Ok(map)
    }
}

/// A running `git cat-file --batch`.
#[derive(Debug)]
pub(crate) struct CatFile {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
    /// A read failed midway: the stream is out of step and no further object can be read.
    broken: bool,
}

impl CatFile {
    /// Streams blob `sha` to `f`, which gets a reader of exactly the blob's bytes and its size;
    /// whatever `f` leaves unread is skipped, so the next object can be read. Never holds more
    /// of the blob in memory than a buffer.
    pub fn stream<T>(&mut self, sha: &str, f: impl FnOnce(&mut dyn Read, u64) -> Result<T>) -> Result<T> {
        if !valid_rev(sha) {
            return Err(Error::Internal(format!("{sha:?} is not an object id")));
        }
        if self.broken {
            return Err(Error::Internal(
                "git cat-file is out of step after a failed read: run the command again".into(),
            ));
        }
        let io = |e: std::io::Error| Error::io("reading from git cat-file", e);
        writeln!(self.stdin, "{sha}").and_then(|_| self.stdin.flush()).map_err(io)?;
        let mut header = String::new();
        self.stdout.read_line(&mut header).map_err(io)?;
        let mut parts = header.trim_end().split(' ');
        let (Some(_id), Some(kind), Some(size)) = (parts.next(), parts.next(), parts.next()) else {
            return Err(Error::Internal(format!("git cat-file: object {sha} is missing ({})", header.trim())));
        };
        // From here on the stream holds the object's bytes: a failure leaves it out of step.
        self.broken = true;
        let size: u64 = size.parse().map_err(|_| Error::Internal("git cat-file: malformed size".into()))?;
        if kind != "blob" {
            return Err(Error::Internal(format!("git cat-file: {sha} is a {kind}, not a blob")));
        }
        let mut body = (&mut self.stdout).take(size);
        let res = f(&mut body, size);
        std::io::copy(&mut body, &mut std::io::sink()).map_err(io)?;
        if body.limit() != 0 {
            return Err(Error::Internal(format!("git cat-file: blob {sha} ended early")));
        }
        let mut lf = [0u8; 1];
        self.stdout.read_exact(&mut lf).map_err(io)?;
        if lf != *b"\n" {
            return Err(Error::Internal("git cat-file: malformed output after a blob".into()));
        }
        self.broken = false;
        res
    }

    /// The content of blob `sha`, which must be at most `max` bytes (a symlink's target).
    pub fn small_blob(&mut self, sha: &str, max: u64) -> Result<Vec<u8>> {
        self.stream(sha, |r, size| {
            if size > max {
                return Err(Error::Internal(format!("blob {sha} is {size} bytes, more than the {max} expected")));
            }
            let mut data = Vec::with_capacity(size as usize);
            r.read_to_end(&mut data).map_err(|e| Error::io("reading from git cat-file", e))?;
            Ok(data)
        })
    }
}

impl Drop for CatFile {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting() {
        assert_eq!(quote(b"a b"), b"\"a b\"".to_vec());
        assert_eq!(quote(b"a\"b\\c"), b"\"a\\\"b\\\\c\"".to_vec());
        assert_eq!(quote(b"a\nb\xff"), b"\"a\\012b\\377\"".to_vec());
    }

    #[test]
    fn revs() {
        assert!(valid_rev("abcd"));
        assert!(valid_rev(EMPTY_TREE));
        for bad in ["abc", "ABCD", "--output=/etc/x", "HEAD", "abcd^", "a".repeat(41).as_str()] {
            assert!(!valid_rev(bad), "{bad}");
        }
    }
}
