//! Snapshot rows: warren's archiver and extractor beside `tar | zstd` on one generated
//! workspace, in the same run, iterations interleaved.
//!
//! The workspace: tens of thousands of small source-like files, a few large files (text logs,
//! incompressible media, half-empty database pages) and, when `git` is installed, a git
//! repository committing the small files (tens of thousands of loose objects more).
//!
//! * **snapshot create**: [`warren_snapshot::write_archive`] (the archiver
//!   `warren snapshot create` uses: parallel reads, multithreaded zstd level 3, SHA-256 on the
//!   way) into a file, against `tar -C ws -cf - . | zstd -3 -T0 -q -o FILE`.
//! * **snapshot restore**: [`Snapshots::prepare_restore`] (what `warren snapshot restore`
//!   runs before its swap: checksum verification of the whole archive, then the
//!   hostile-archive-safe extraction with parallel writes) of that archive, against
//!   `zstd -dc FILE | tar -x -C DIR`.
//!
//! Neither side makes its output durable: warren's real create also fsyncs the archive once and
//! its real restore syncs the file system once (`syncfs`), not timed here. The rows run on
//! `/dev/shm` (tmpfs) by default, `--snapshot-dir` elsewhere: on a disk, writeback and journal
//! costs of creating tens of thousands of files weigh on both sides alike and can swamp what the
//! tools themselves do.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use warren_core::{SnapshotId, UserId};
use warren_snapshot::{ArchiveOptions, CreateOptions, ExtractOptions, LocalStorage, Snapshots};

use crate::peers::{which, Unavailable};
use crate::report::{Row, RowKind, Sizes};
use crate::warren::Samples;

/// Row names.
pub const CREATE: &str = "snapshot create";
/// Row names.
pub const RESTORE: &str = "snapshot restore";
/// The create peer (no `|` in a row name: it is a markdown table cell).
pub const TAR_ZSTD: &str = "tar + zstd -3 -T0";
/// The restore peer.
pub const ZSTD_TAR: &str = "zstd -dc + tar -x";

/// The targets: peer time / warren time.
const CREATE_TARGET: f64 = 1.2;
const RESTORE_TARGET: f64 = 1.5;

/// What was generated.
#[derive(Debug, Clone)]
pub struct Workspace {
    /// Regular files.
    pub files: u64,
    /// Their bytes.
    pub bytes: u64,
    /// Whether a git repository is part of it.
    pub git: bool,
}

/// A small deterministic generator (xorshift64*).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }

    fn fill(&mut self, buf: &mut [u8]) {
        for chunk in buf.chunks_mut(8) {
            let v = self.next().to_le_bytes();
            chunk.copy_from_slice(&v[..chunk.len()]);
        }
    }
}

const WORDS: &[&str] = &[
    "fn", "let", "mut", "return", "if", "else", "match", "self", "impl", "struct", "pub", "use", "for", "in", "while",
    "loop", "break", "Result", "Option", "Some", "None", "Ok", "Err", "String", "Vec", "u64", "usize", "config",
    "request", "response", "handler", "buffer", "value", "count", "index", "error", "path", "user", "session", "token",
    "cache", "state", "event", "record", "query", "parse", "write", "read", "open", "close",
];

/// Source-like text of about `len` bytes.
fn text(rng: &mut Rng, len: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(len + 64);
    let mut col = 0;
    while out.len() < len {
        let w = WORDS[rng.below(WORDS.len() as u64) as usize];
        out.extend_from_slice(w.as_bytes());
        col += w.len();
        match rng.below(12) {
            0 => out.extend_from_slice(format!("_{}", rng.below(1000)).as_bytes()),
            1 => out.extend_from_slice(b"();"),
            2 => out.extend_from_slice(b" = "),
            3 => out.extend_from_slice(b" {"),
            _ => {}
        }
        if col > 60 || rng.below(10) == 0 {
            out.extend_from_slice(b"\n    ");
            col = 0;
        } else {
            out.push(b' ');
        }
    }
    out.truncate(len);
    out
}

fn write(path: &Path, data: &[u8]) -> Result<(), String> {
    if let Some(d) = path.parent() {
        std::fs::create_dir_all(d).map_err(|e| format!("creating {}: {e}", d.display()))?;
    }
    std::fs::write(path, data).map_err(|e| format!("writing {}: {e}", path.display()))
}

/// Generates the workspace under `ws` (which must not exist).
pub fn generate(ws: &Path, small_files: usize) -> Result<Workspace, String> {
    let mut rng = Rng(0x5EED_CAFE_F00D_1234);
    let (mut files, mut bytes) = (0u64, 0u64);
    // Small files: source-like text, 100 B to 16 KiB (log-uniform), 100 per directory.
    for i in 0..small_files {
        let dir = ws.join(format!("src/mod_{:03}/sub_{:02}", i / 1000, (i / 100) % 10));
        let len = (100f64 * 164f64.powf(rng.below(1000) as f64 / 1000.0)) as usize;
        let data = text(&mut rng, len);
        write(&dir.join(format!("file_{i:05}.rs")), &data)?;
        files += 1;
        bytes += data.len() as u64;
    }
    // Large files: a text log, incompressible media, half-empty database pages.
    let mut big = |name: &str, data: Vec<u8>| -> Result<(), String> {
        write(&ws.join(name), &data)?;
        files += 1;
        bytes += data.len() as u64;
        Ok(())
    };
    let mut log = Vec::with_capacity(48 << 20);
    let mut n = 0u64;
    while log.len() < 48 << 20 {
        n += 1;
        let line = format!(
            "2025-01-{:02}T{:02}:{:02}:{:02}.{:03}Z INFO request id={} user=u_{} path=/api/v1/items/{} status={} took={}ms\n",
            1 + n % 28,
            n / 3600 % 24,
            n / 60 % 60,
            n % 60,
            rng.below(1000),
            rng.next() % 1_000_000_000,
            rng.below(5000),
            rng.below(100_000),
            [200, 200, 200, 201, 404, 500][rng.below(6) as usize],
            rng.below(900)
        );
        log.extend_from_slice(line.as_bytes());
    }
    big("logs/app.log", log)?;
    let mut media = vec![0u8; 48 << 20];
    rng.fill(&mut media);
    big("assets/video.mp4", media)?;
    let mut db = vec![0u8; 32 << 20];
    for (i, page) in db.chunks_mut(4096).enumerate() {
        if i % 2 == 0 {
            rng.fill(&mut page[..2048]);
        }
    }
    big("data/app.db", db)?;
    // A git repository of the small files.
    let git = which("git").is_some() && {
        let run = |args: &[&str]| {
            Command::new("git")
                // gc.auto=0: a commit of 30,000 files would start a background gc that packs the
                // objects while the timed runs archive the tree (a moving target for both sides).
                .args(["-c", "user.name=bench", "-c", "user.email=bench@example.com", "-c", "init.defaultBranch=main"])
                .args(["-c", "gc.auto=0", "-c", "maintenance.auto=false"])
                .args(args)
                .current_dir(ws)
                .env("GIT_CONFIG_NOSYSTEM", "1")
                .env("HOME", ws)
                .output()
                .map(|o| o.status.success())
                .unwrap_or(false)
        };
        run(&["init", "-q"]) && run(&["add", "src"]) && run(&["commit", "-q", "-m", "the small files"])
    };
    if git {
        let (f, b) = count(&ws.join(".git"));
        files += f;
        bytes += b;
    }
    Ok(Workspace { files, bytes, git })
}

/// Regular files and their bytes under `dir`.
fn count(dir: &Path) -> (u64, u64) {
    let (mut f, mut b) = (0, 0);
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else { continue };
        for e in rd.flatten() {
            let Ok(md) = e.metadata() else { continue };
            if md.is_dir() {
                stack.push(e.path());
            } else if md.is_file() {
                f += 1;
                b += md.len();
            }
        }
    }
    (f, b)
}

fn sh(script: &str) -> Result<Duration, String> {
    let t = Instant::now();
    let out = Command::new("sh").arg("-c").arg(script).output().map_err(|e| format!("running sh: {e}"))?;
    let took = t.elapsed();
    if !out.status.success() {
        return Err(format!("`{script}` failed: {}", String::from_utf8_lossy(&out.stderr).trim()));
    }
    Ok(took)
}

/// CPU time (user + system) used so far by this process (all its threads) or by its waited-for
/// children (and theirs).
fn cpu(who: nix::sys::resource::UsageWho) -> Duration {
    match nix::sys::resource::getrusage(who) {
        Ok(u) => {
            let tv = |t: nix::sys::time::TimeVal| {
                Duration::new(u64::try_from(t.tv_sec()).unwrap_or(0), u32::try_from(t.tv_usec()).unwrap_or(0) * 1000)
            };
            tv(u.user_time()) + tv(u.system_time())
        }
        Err(_) => Duration::ZERO,
    }
}

const SELF: nix::sys::resource::UsageWho = nix::sys::resource::UsageWho::RUSAGE_SELF;
const CHILDREN: nix::sys::resource::UsageWho = nix::sys::resource::UsageWho::RUSAGE_CHILDREN;

fn size_of(p: &Path) -> Result<u64, String> {
    std::fs::metadata(p).map(|m| m.len()).map_err(|e| format!("stat {}: {e}", p.display()))
}

fn remove(p: &Path) {
    let _ = std::fs::remove_dir_all(p);
    let _ = std::fs::remove_file(p);
}

/// Measured samples of the four rows.
struct Measured {
    create: Samples,
    tar_zstd: Samples,
    restore: Samples,
    zstd_tar: Samples,
    ours_bytes: u64,
    peer_bytes: u64,
}

fn measure(ws: &Path, scratch: &Path, warmup: usize, n: usize) -> Result<Measured, String> {
    let archive = scratch.join("ours.tar.zst");
    let peer_archive = scratch.join("peer.tar.zst");
    let q = |p: &Path| format!("'{}'", p.display());
    let mut m = Measured {
        create: Samples::default(),
        tar_zstd: Samples::default(),
        restore: Samples::default(),
        zstd_tar: Samples::default(),
        ours_bytes: 0,
        peer_bytes: 0,
    };
    for i in 0..warmup + n {
        remove(&archive);
        let (c, t) = (cpu(SELF), Instant::now());
        let f = File::create(&archive).map_err(|e| format!("creating {}: {e}", archive.display()))?;
        let (stats, w) =
            warren_snapshot::write_archive(ws, BufWriter::with_capacity(1 << 20, f), &ArchiveOptions::default())
                .map_err(|e| format!("warren archive: {e}"))?;
        w.into_inner().map_err(|e| format!("writing the archive: {e}"))?.flush().map_err(|e| e.to_string())?;
        let (took, used) = (t.elapsed(), cpu(SELF).saturating_sub(c));
        m.ours_bytes = stats.archive_bytes;
        remove(&peer_archive);
        let pc = cpu(CHILDREN);
        let peer = sh(&format!("tar -C {} -cf - . | zstd -3 -T0 -q -f -o {}", q(ws), q(&peer_archive)))?;
        let peer_used = cpu(CHILDREN).saturating_sub(pc);
        m.peer_bytes = size_of(&peer_archive)?;
        if i >= warmup {
            m.create.total.push(took);
            m.create.steps.entry("cpu").or_default().push(used);
            m.tar_zstd.total.push(peer);
            m.tar_zstd.steps.entry("cpu").or_default().push(peer_used);
        }
    }
    // Restore: the same archive (warren's) for both, kept in a local snapshot store.
    let store = scratch.join("store");
    let snaps = Snapshots::new(Arc::new(LocalStorage::new(&store)));
    let (user, id) =
        (UserId::new("bench_snap").map_err(|e| e.to_string())?, SnapshotId::new("bench").map_err(|e| e.to_string())?);
    let manifest = snaps.create(&user, &id, ws, &CreateOptions::default()).map_err(|e| format!("snapshot: {e}"))?;
    let stored = store.join(format!("snapshots/{user}/{id}.tar.zst"));
    let target = scratch.join("restored");
    let peer_target = scratch.join("peer-restored");
    let eopts = ExtractOptions { sync: false, ..ExtractOptions::default() };
    for i in 0..warmup + n {
        remove(&target);
        let (c, t) = (cpu(SELF), Instant::now());
        let prepared = snaps.prepare_restore(&user, &id, &target, &eopts).map_err(|e| format!("restore: {e}"))?;
        let (took, used) = (t.elapsed(), cpu(SELF).saturating_sub(c));
        if prepared.stats().files != manifest.file_count {
            return Err(format!("restored {} files of {}", prepared.stats().files, manifest.file_count));
        }
        prepared.discard().map_err(|e| e.to_string())?;
        remove(&peer_target);
        std::fs::create_dir(&peer_target).map_err(|e| format!("mkdir: {e}"))?;
        let pc = cpu(CHILDREN);
        let peer = sh(&format!("zstd -dc {} | tar -x -C {}", q(&stored), q(&peer_target)))?;
        let peer_used = cpu(CHILDREN).saturating_sub(pc);
        if i >= warmup {
            m.restore.total.push(took);
            m.restore.steps.entry("cpu").or_default().push(used);
            m.zstd_tar.total.push(peer);
            m.zstd_tar.steps.entry("cpu").or_default().push(peer_used);
        }
    }
    remove(&peer_target);
    Ok(m)
}

/// Where the rows work: `dir` if given, else `/dev/shm` when it is a tmpfs (so this machine's
/// disk writeback does not decide the race: both sides write the same bytes), else the
/// temporary directory. Returns the directory and its file system's name.
fn scratch_parent(dir: Option<&Path>) -> (std::path::PathBuf, String) {
    let fs_of = |p: &Path| -> String {
        let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap_or_default();
        let canon = p.canonicalize().unwrap_or_else(|_| p.to_path_buf());
        mounts
            .lines()
            .filter_map(|l| {
                let mut f = l.split(' ');
                let (_, at, fs) = (f.next()?, f.next()?, f.next()?);
                canon.starts_with(at).then(|| (at.len(), fs.to_owned()))
            })
            .max()
            .map_or_else(|| "unknown".to_owned(), |(_, fs)| fs)
    };
    if let Some(d) = dir {
        return (d.to_path_buf(), fs_of(d));
    }
    let shm = Path::new("/dev/shm");
    if shm.is_dir() && fs_of(shm) == "tmpfs" {
        return (shm.to_path_buf(), "tmpfs".to_owned());
    }
    let tmp = std::env::temp_dir();
    let fs = fs_of(&tmp);
    (tmp, fs)
}

/// The four rows (two warren, two peers), or the reason none could run in each, on a workspace of
/// `small_files` small files (30,000 in the full run) beside the large ones.
pub fn rows(dir: Option<&Path>, warmup: usize, n: usize, small_files: usize) -> Vec<Row> {
    let (parent, fs) = scratch_parent(dir);
    let facts = |w: &Workspace| {
        format!(
            "{} files, {} MiB{}, on {fs}",
            w.files,
            w.bytes >> 20,
            if w.git { ", git repository included" } else { ", no git (not installed)" }
        )
    };
    let mk = |name: &str, kind, command: String, outcome, peers: Vec<&'static str>, target, sizes| Row {
        name: name.to_owned(),
        kind,
        command,
        version: None,
        outcome,
        peers,
        target_p50_ms: None,
        target_speedup: target,
        sizes,
        target_p99_ms: None,
        note: None,
    };
    let result = (|| -> Result<(Workspace, Measured), Unavailable> {
        for tool in ["tar", "zstd"] {
            if which(tool).is_none() {
                return Err(Unavailable::Skipped(format!("not installed ({tool} not found in PATH)")));
            }
        }
        let scratch = tempfile::Builder::new()
            .prefix("warren-bench-snapshot-")
            .tempdir_in(&parent)
            .map_err(|e| Unavailable::Error(format!("creating a scratch directory: {e}")))?;
        let ws = scratch.path().join("ws");
        eprintln!("warren-bench: generating the snapshot workspace");
        let w = generate(&ws, small_files).map_err(Unavailable::Error)?;
        eprintln!("warren-bench: snapshot rows on {} ({n} iterations + {warmup} warm-up)", facts(&w));
        let m = measure(&ws, scratch.path(), warmup, n).map_err(Unavailable::Error)?;
        Ok((w, m))
    })();
    let (w, m) = match result {
        Ok(v) => v,
        Err(e) => {
            return vec![
                mk(
                    CREATE,
                    RowKind::Warren,
                    "warren archive".into(),
                    Err(e.clone()),
                    vec![TAR_ZSTD],
                    Some(CREATE_TARGET),
                    None,
                ),
                mk(
                    RESTORE,
                    RowKind::Warren,
                    "warren restore".into(),
                    Err(e),
                    vec![ZSTD_TAR],
                    Some(RESTORE_TARGET),
                    None,
                ),
            ]
        }
    };
    let about = facts(&w);
    let tar_version = version("tar");
    let zstd_version = version("zstd");
    let ours = Sizes { input_bytes: w.bytes, output_bytes: m.ours_bytes };
    let peer = Sizes { input_bytes: w.bytes, output_bytes: m.peer_bytes };
    let mut rows = vec![
        mk(
            CREATE,
            RowKind::Warren,
            format!("archive the workspace ({about}) as warren snapshot create does: parallel reads, zstd -3 on every core, SHA-256; no fsync"),
            Ok(m.create),
            vec![TAR_ZSTD],
            Some(CREATE_TARGET),
            Some(ours),
        ),
        mk(
            RESTORE,
            RowKind::Warren,
            format!("verify (SHA-256 of the whole archive) and extract it, as warren snapshot restore does before its swap; no syncfs ({about})"),
            Ok(m.restore),
            vec![ZSTD_TAR],
            Some(RESTORE_TARGET),
            None,
        ),
        mk(TAR_ZSTD, RowKind::Peer, "tar -C ws -cf - . | zstd -3 -T0 -q -o FILE".into(), Ok(m.tar_zstd), vec![], None, Some(peer)),
        mk(ZSTD_TAR, RowKind::Peer, "zstd -dc FILE | tar -x -C DIR (warren's archive)".into(), Ok(m.zstd_tar), vec![], None, None),
    ];
    rows[2].version = Some(format!("{tar_version}; {zstd_version}"));
    rows[3].version = Some(format!("{zstd_version}; {tar_version}"));
    rows
}

fn version(prog: &str) -> String {
    Command::new(prog)
        .arg("--version")
        .output()
        .ok()
        .and_then(|o| String::from_utf8_lossy(&o.stdout).lines().next().map(|l| l.trim().to_owned()))
        .unwrap_or_else(|| prog.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generates_a_small_workspace() {
        let dir = tempfile::tempdir().expect("tempdir");
        let ws = dir.path().join("ws");
        let w = generate(&ws, 300).expect("generate");
        assert!(w.files >= 303, "{w:?}");
        assert!(w.bytes > 128 << 20, "{w:?}");
        assert!(ws.join("src/mod_000/sub_02/file_00250.rs").is_file());
        assert_eq!(w.git, which("git").is_some());
        let m = measure(&ws, dir.path(), 0, 1).expect("measure");
        assert!(m.ours_bytes > 0 && m.peer_bytes > 0);
        assert_eq!((m.create.total.len(), m.restore.total.len()), (1, 1));
    }
}
