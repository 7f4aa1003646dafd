//! Rough timings of warren's snapshot create/restore against `tar | zstd` on a directory.
//!
//! `cargo run --release -p warren-snapshot --example snapbench -- DIR [SCRATCH]`
//! (SCRATCH defaults to a temp dir on the same file system as /tmp).

use std::path::PathBuf;
use std::process::Command;
use std::time::Instant;

use warren_core::{SnapshotId, UserId};
use warren_snapshot::{CreateOptions, ExtractOptions, Snapshots};

fn sh(cmd: &str) -> f64 {
    let t = Instant::now();
    let ok = Command::new("sh").arg("-c").arg(cmd).status().map(|s| s.success()).unwrap_or(false);
    assert!(ok, "{cmd} failed");
    t.elapsed().as_secs_f64()
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1).peekable();
    if args.peek().map(String::as_str) == Some("--archive-only") {
        // `snapbench --archive-only DIR OUT`: just write the archive (for CPU-time comparisons).
        args.next();
        let src = PathBuf::from(args.next().ok_or("DIR")?);
        let out = std::fs::File::create(args.next().ok_or("OUT")?)?;
        let (stats, _) = warren_snapshot::write_archive(&src, out, &warren_snapshot::ArchiveOptions::default())?;
        println!("{} bytes", stats.archive_bytes);
        return Ok(());
    }
    let src = PathBuf::from(args.next().ok_or("usage: snapbench DIR [SCRATCH]")?);
    let scratch = match args.next() {
        Some(s) => PathBuf::from(s),
        None => std::env::temp_dir().join(format!("snapbench-{}", std::process::id())),
    };
    std::fs::create_dir_all(&scratch)?;
    let state = scratch.join("state");
    let ws = scratch.join("ws");
    let snaps = Snapshots::local(&state);
    let (u, id) = (UserId::new("bench")?, SnapshotId::generate());
    // Warm the page cache.
    sh(&format!("tar -C '{}' -cf - . > /dev/null", src.display()));
    let t = Instant::now();
    let m = snaps.create(&u, &id, &src, &CreateOptions::default())?;
    let create = t.elapsed().as_secs_f64();
    let tarzst = scratch.join("ref.tar.zst");
    let ref_create = sh(&format!("tar -C '{}' -cf - . | zstd -q -3 -T0 -f -o '{}'", src.display(), tarzst.display()));
    let ref_size = std::fs::metadata(&tarzst)?.len();
    sh("sync");
    let t = Instant::now();
    snaps.restore(&u, &id, &ws, &ExtractOptions { sync: false, ..ExtractOptions::default() })?;
    let restore = t.elapsed().as_secs_f64();
    sh("sync");
    let out = scratch.join("ref-out");
    let _ = std::fs::remove_dir_all(&out);
    std::fs::create_dir_all(&out)?;
    let ref_restore = sh(&format!("zstd -q -dc '{}' | tar -x -C '{}'", tarzst.display(), out.display()));
    sh("sync");
    let t = Instant::now();
    snaps.restore(&u, &id, &ws, &ExtractOptions::default())?;
    let restore_over = t.elapsed().as_secs_f64();
    std::fs::remove_dir_all(&ws)?;
    sh("sync");
    let t = Instant::now();
    snaps.restore(&u, &id, &ws, &ExtractOptions::default())?;
    let restore_sync = t.elapsed().as_secs_f64();
    std::fs::remove_dir_all(&out)?;
    std::fs::create_dir_all(&out)?;
    sh("sync");
    let ref_restore_sync = sh(&format!("zstd -q -dc '{}' | tar -x -C '{}' && sync", tarzst.display(), out.display()));
    println!("files {} entries {} unpacked {} B", m.file_count, m.entry_count, m.unpacked_bytes);
    println!(
        "create : warren {create:.3}s ({} B)   tar|zstd -3 -T0 {ref_create:.3}s ({ref_size} B)   speedup {:.2}x",
        m.archive_bytes,
        ref_create / create
    );
    println!(
        "restore (no sync): warren {restore:.3}s   zstd -dc|tar -x {ref_restore:.3}s   speedup {:.2}x",
        ref_restore / restore
    );
    println!("restore (durable, over an existing workspace, old tree deleted): warren {restore_over:.3}s");
    println!("restore (durable): warren {restore_sync:.3}s   zstd -dc|tar -x && sync {ref_restore_sync:.3}s   speedup {:.2}x", ref_restore_sync / restore_sync);
    std::fs::remove_dir_all(&scratch)?;
    Ok(())
}
