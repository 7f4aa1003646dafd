//! Paths inside a workspace: `WorkspacePath::new` and its lexical invariants, then the same
//! path through `fs::Confined` (openat2 with RESOLVE_BENEATH) in a workspace full of symlinks
//! that lead out of it (`..`, absolute, into a sibling, magic links, loops).
//!
//! Invariants: no panic; `new` accepts exactly what the documented rule accepts (checked
//! byte by byte here: at most 4096 bytes, no NUL, not absolute, no `..` component, components
//! at most 255 bytes) and normalises to the non-empty, non-`.` components; an accepted path is
//! relative with only normal components, re-validates to itself, splits and joins back; and
//! whatever `Confined` does with it (read, open, list, stat, write, mkdir -p, rm -r) never
//! reads, lists or changes anything outside the workspace.
//!
//! Input: one op byte (read-only ops, write, mkdir, remove), then the path; a newline splits
//! off a second path for the join check.
#![no_main]

use std::ffi::OsStr;
use std::fs;
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};
use std::sync::{Mutex, OnceLock};

use libfuzzer_sys::fuzz_target;
use warren_core::fs::{Confined, WriteOptions};
use warren_core::WorkspacePath;

/// What `new` must do, restated byte-wise: `Some(normalised)` or `None` (refused).
fn expected(raw: &[u8]) -> Option<Vec<u8>> {
    if raw.len() > 4096 || raw.contains(&0) || raw.first() == Some(&b'/') {
        return None;
    }
    let mut out: Vec<&[u8]> = Vec::new();
    for c in raw.split(|b| *b == b'/') {
        match c {
            b"" | b"." => {}
            b".." => return None,
            c if c.len() > 255 => return None,
            c => out.push(c),
        }
    }
    Some(out.join(&b'/'))
}

fn check_lexical(raw: &[u8]) -> Option<WorkspacePath> {
    let got = WorkspacePath::new(OsStr::from_bytes(raw));
    let want = expected(raw);
    match (&got, &want) {
        (Ok(p), Some(w)) => assert_eq!(p.as_path().as_os_str().as_bytes(), &w[..], "normalised form of {raw:?}"),
        (Err(_), None) => {}
        _ => panic!("WorkspacePath::new({raw:?}) = {got:?}, the rule says {want:?}"),
    }
    let p = got.ok()?;
    let path = p.as_path();
    assert!(!path.is_absolute());
    for c in path.components() {
        match c {
            Component::Normal(n) => {
                let b = n.as_bytes();
                assert!(!b.is_empty() && b.len() <= 255 && !b.contains(&0) && !b.contains(&b'/'));
                assert!(b != b"." && b != b"..");
            }
            other => panic!("{raw:?} -> {p:?} has a {other:?} component"),
        }
    }
    assert_eq!(WorkspacePath::new(path).ok().as_ref(), Some(&p), "re-validating {p:?}");
    if let Ok(s) = std::str::from_utf8(raw) {
        // The string (serde) form round-trips for UTF-8 names.
        let back = WorkspacePath::try_from(String::from(p.clone())).expect("the string form validates");
        assert_eq!(back, p);
        assert_eq!(p.is_root(), p.to_string() == ".", "{s:?}");
    }
    match p.split() {
        None => assert!(p.is_root()),
        Some((parent, name)) => {
            let name = WorkspacePath::new(name).expect("the final name validates");
            assert_eq!(parent.join(&name), p, "split then join");
        }
    }
    Some(p)
}

/// A workspace `ws/` beside `outside/`, with symlinks that try to leave it.
struct Tree {
    base: PathBuf,
    ws: PathBuf,
    outside: PathBuf,
    confined: Confined,
    dirty: bool,
}

const INSIDE_NAMES: &[&str] =
    &["f", "d", "g", "e", "up", "out", "abs", "absout", "self", "loop", "dd", "magic", "dotdot", "ff", "written"];
const SECRET: &[u8] = b"SECRET outside the workspace";
const INSIDE: &[u8] = b"inside";

impl Tree {
    fn new() -> Self {
        let base = warren_fuzz::scratch_dir("paths");
        let (ws, outside) = (base.join("ws"), base.join("outside"));
        let r = fs::create_dir_all(&outside).and_then(|()| fs::write(outside.join("OUTSIDE_ONLY"), SECRET));
        if let Err(e) = r {
            panic!("setting up {}: {e}", outside.display());
        }
        Self { confined: Self::build(&ws, &outside), base, ws, outside, dirty: false }
    }

    fn build(ws: &Path, outside: &Path) -> Confined {
        let _ = fs::remove_dir_all(ws);
        let r = (|| -> std::io::Result<()> {
            use std::os::unix::fs::symlink;
            fs::create_dir_all(ws.join("d/e"))?;
            fs::write(ws.join("f"), INSIDE)?;
            fs::write(ws.join("d/g"), INSIDE)?;
            symlink("../..", ws.join("d/up"))?;
            symlink("../outside", ws.join("out"))?;
            symlink("/", ws.join("abs"))?;
            symlink(outside, ws.join("absout"))?;
            symlink(".", ws.join("self"))?;
            symlink("loop", ws.join("loop"))?;
            symlink("d", ws.join("dd"))?;
            symlink("/proc/self/root", ws.join("magic"))?;
            symlink("..", ws.join("dotdot"))?;
            symlink("f", ws.join("ff"))?;
            Ok(())
        })();
        if let Err(e) = r {
            panic!("setting up {}: {e}", ws.display());
        }
        Confined::open(ws, None).unwrap_or_else(|e| panic!("opening {}: {e}", ws.display()))
    }

    fn check_outside(&self) {
        let mut names: Vec<_> = fs::read_dir(&self.base)
            .expect("list base")
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(names, vec!["outside", "ws"], "something was created beside the workspace");
        let names: Vec<_> = fs::read_dir(&self.outside)
            .expect("list outside")
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, vec!["OUTSIDE_ONLY"], "outside/ changed");
        assert_eq!(fs::read(self.outside.join("OUTSIDE_ONLY")).ok().as_deref(), Some(SECRET), "outside file changed");
    }
}

fn tree() -> &'static Mutex<Tree> {
    static T: OnceLock<Mutex<Tree>> = OnceLock::new();
    T.get_or_init(|| Mutex::new(Tree::new()))
}

fn check_confined(op: u8, p: &WorkspacePath) {
    let mut t = tree().lock().unwrap_or_else(|e| e.into_inner());
    if t.dirty {
        t.confined = Tree::build(&t.ws, &t.outside);
        t.dirty = false;
    }
    let kind = op % 4;
    if kind > 0 {
        t.dirty = true;
    }
    let c = &t.confined;
    match kind {
        0 => {
            if let Ok(data) = c.read(p, 1 << 16) {
                assert_ne!(data, SECRET, "read {p:?} returned a file outside the workspace");
            }
            if let Ok((f, _)) = c.open_read(p) {
                let real = fs::read_link(format!("/proc/self/fd/{}", f.as_raw_fd())).expect("fd path");
                assert!(real.starts_with(&t.ws), "open_read {p:?} opened {}", real.display());
            }
            if let Ok(list) = c.list(p) {
                for e in list {
                    assert!(
                        INSIDE_NAMES.contains(&e.name.as_str()),
                        "list {p:?} shows {:?}, not in the workspace",
                        e.name
                    );
                }
            }
            let _ = c.stat(p);
        }
        1 => {
            let _ = c.write(p, b"written", WriteOptions { mode: 0o7777, create_parents: true });
        }
        2 => {
            let _ = c.mkdir(p, true);
        }
        _ => {
            let _ = c.remove(p, true);
        }
    }
    t.check_outside();
}

fuzz_target!(|data: &[u8]| {
    let Some((&op, rest)) = data.split_first() else { return };
    let (a, b) = match rest.iter().position(|b| *b == b'\n') {
        Some(i) => (&rest[..i], Some(&rest[i + 1..])),
        None => (rest, None),
    };
    let pa = check_lexical(a);
    if let Some(p) = &pa {
        check_confined(op, p);
    }
    if let Some(b) = b {
        let pb = check_lexical(b);
        if let (Some(pa), Some(pb)) = (pa, pb) {
            // Joining two valid paths keeps the lexical rules (only the total length may grow).
            let j = pa.join(&pb);
            match WorkspacePath::new(j.as_path()) {
                Ok(again) => assert_eq!(again, j),
                Err(e) => assert!(j.as_path().as_os_str().len() > 4096, "join {pa:?} + {pb:?} = {j:?}: {e}"),
            }
        }
    }
});
