//! The archive harness: every input goes through [`warren_snapshot::scan`] (what an import
//! runs) and [`warren_snapshot::extract_to`] (what a restore runs) into a staging directory that
//! sits beside an `outside/` directory holding a canary, and these must hold:
//!
//! * no panic (either function);
//! * scan and extract agree: both accept with the same counts, or both refuse (an import that
//!   passes must restore, and the other way round);
//! * nothing outside the staging directory changed: the jail holds only `outside/` and the
//!   staging directory, `outside/` holds only the canary (same bytes, mode and mtime) and an
//!   empty directory;
//! * a refused archive leaves no staging directory; an accepted one holds exactly the counted
//!   files (with the counted bytes) and symlinks, at least the counted directories (parents no
//!   entry named are made too), nothing else, and no setuid, setgid or sticky bit anywhere.

use std::fs;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use warren_snapshot::{ArchiveLimits, ExtractOptions, ExtractStats};

/// The scratch layout.
#[derive(Debug)]
pub struct Jail {
    /// The jail: `outside/` and the staging directory.
    pub base: PathBuf,
    /// Must never change.
    pub outside: PathBuf,
    /// Where archives are extracted (absent between runs).
    pub stage: PathBuf,
    canary: (u32, i64, i64),
    dir: (u32, i64, i64),
}

const CANARY: &[u8] = b"canary: must never change";

fn meta_of(p: &Path) -> (u32, i64, i64) {
    match fs::symlink_metadata(p) {
        Ok(m) => (m.mode(), m.mtime(), m.mtime_nsec()),
        Err(e) => panic!("{} is gone: {e}", p.display()),
    }
}

impl Jail {
    fn new() -> Self {
        let base = crate::scratch_dir("archive");
        let outside = base.join("outside");
        let made = fs::create_dir_all(outside.join("dir")).and_then(|()| fs::write(outside.join("canary"), CANARY));
        if let Err(e) = made {
            panic!("fuzz harness: setting up {}: {e}", outside.display());
        }
        let _ = fs::set_permissions(outside.join("canary"), fs::Permissions::from_mode(0o644));
        let _ = fs::set_permissions(outside.join("dir"), fs::Permissions::from_mode(0o755));
        let canary = meta_of(&outside.join("canary"));
        let dir = meta_of(&outside.join("dir"));
        Self { stage: base.join("stage"), base, outside, canary, dir }
    }

    fn names(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = match fs::read_dir(dir) {
            Ok(rd) => rd.filter_map(|e| e.ok()).map(|e| e.file_name().to_string_lossy().into_owned()).collect(),
            Err(e) => panic!("listing {}: {e}", dir.display()),
        };
        v.sort();
        v
    }

    /// Asserts that nothing outside the staging directory changed.
    pub fn check_outside(&self) {
        let names = Self::names(&self.base);
        assert!(
            names.iter().all(|n| n == "outside" || n == "stage"),
            "something was written into the jail beside the staging directory: {names:?}"
        );
        assert_eq!(Self::names(&self.outside), vec!["canary", "dir"], "outside/ changed");
        assert!(Self::names(&self.outside.join("dir")).is_empty(), "outside/dir/ changed");
        let canary = self.outside.join("canary");
        assert_eq!(fs::read(&canary).ok().as_deref(), Some(CANARY), "the canary's content changed");
        assert_eq!(meta_of(&canary), self.canary, "the canary's mode or mtime changed");
        assert_eq!(meta_of(&self.outside.join("dir")), self.dir, "outside/dir's mode or mtime changed");
    }
}

/// The jail of this process.
pub fn jail() -> &'static Jail {
    static JAIL: OnceLock<Jail> = OnceLock::new();
    JAIL.get_or_init(Jail::new)
}

/// Extraction options for fuzzing: small caps so a bomb is refused quickly, no `syncfs`.
pub fn options() -> ExtractOptions {
    ExtractOptions {
        limits: ArchiveLimits {
            max_unpacked_bytes: Some(8 << 20),
            max_entries: 4096,
            max_metadata_bytes: 256 << 10,
            window_log_max: 24,
            ..ArchiveLimits::default()
        },
        threads: 2,
        sync: false,
        ..ExtractOptions::default()
    }
}

/// Counts what a tree holds (the root not included), asserting no special files and no
/// setuid/setgid/sticky bits.
fn count(dir: &Path, stats: &mut ExtractStats) {
    let rd = match fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) => panic!("listing {}: {e}", dir.display()),
    };
    for e in rd {
        let e = match e {
            Ok(e) => e,
            Err(err) => panic!("listing {}: {err}", dir.display()),
        };
        let p = e.path();
        let m = match fs::symlink_metadata(&p) {
            Ok(m) => m,
            Err(err) => panic!("stat {}: {err}", p.display()),
        };
        let ft = m.file_type();
        if ft.is_symlink() {
            stats.symlinks += 1;
            continue;
        }
        assert_eq!(
            m.mode() & 0o7000,
            0,
            "{} has mode {:o}: setuid/setgid/sticky must never be restored",
            p.display(),
            m.mode()
        );
        if ft.is_dir() {
            stats.dirs += 1;
            count(&p, stats);
        } else if ft.is_file() {
            stats.files += 1;
            stats.bytes += m.len();
        } else {
            panic!(
                "{} is a special file (fifo {}, socket {}, device {})",
                p.display(),
                ft.is_fifo(),
                ft.is_socket(),
                ft.is_block_device() || ft.is_char_device()
            );
        }
    }
}

/// Runs one `tar.zst` stream through scan and extract and checks every invariant.
pub fn check(zst: &[u8]) {
    let jail = jail();
    let opts = options();
    assert!(fs::symlink_metadata(&jail.stage).is_err(), "the staging directory of the previous run is still there");
    let scanned = warren_snapshot::scan(zst, &opts);
    let extracted = warren_snapshot::extract_to(zst, &jail.stage, &opts);
    jail.check_outside();
    match (&scanned, &extracted) {
        (Ok(a), Ok(b)) => assert_eq!(a, b, "scan and extract count differently"),
        (Err(_), Err(_)) => {}
        _ => panic!(
            "scan (import) and extract (restore) disagree about the same archive:\n  scan:    {scanned:?}\n  extract: {extracted:?}"
        ),
    }
    match extracted {
        Ok(stats) => {
            let mut seen = ExtractStats::default();
            count(&jail.stage, &mut seen);
            // Directories a later entry needed but no entry named are made too, uncounted.
            let counted = ExtractStats { dirs: stats.dirs, ..seen };
            assert!(
                counted == stats && seen.dirs >= stats.dirs,
                "the extracted tree ({seen:?}) does not hold what extract_to reported ({stats:?})"
            );
            if let Err(e) = fs::remove_dir_all(&jail.stage) {
                panic!("removing {}: {e}", jail.stage.display());
            }
        }
        Err(e) => {
            assert!(
                fs::symlink_metadata(&jail.stage).is_err(),
                "a refused archive left the staging directory behind ({e})"
            );
        }
    }
}

/// Compresses a tar stream as a snapshot is (one zstd frame; level 1 for speed).
pub fn zst(tar: &[u8]) -> Vec<u8> {
    match zstd::bulk::compress(tar, 1) {
        Ok(z) => z,
        Err(e) => panic!("zstd compression of {} bytes failed: {e}", tar.len()),
    }
}
