//! Temporary profiling harness (to be removed).
use std::io::{BufWriter, Write};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;
use warren_core::{SnapshotId, UserId};
use warren_snapshot::{ArchiveOptions, CreateOptions, ExtractOptions, LocalStorage, Snapshots};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let a: Vec<String> = std::env::args().skip(1).collect();
    let n: usize = a.get(3).and_then(|s| s.parse().ok()).unwrap_or(3);
    match a[0].as_str() {
        "create" => {
            for _ in 0..n {
                let out = PathBuf::from(&a[2]);
                let _ = std::fs::remove_file(&out);
                let t = Instant::now();
                let f = std::fs::File::create(&out)?;
                let (st, w) = warren_snapshot::write_archive(
                    &PathBuf::from(&a[1]),
                    BufWriter::with_capacity(1 << 20, f),
                    &ArchiveOptions::default(),
                )?;
                w.into_inner().map_err(|e| e.to_string())?.flush()?;
                eprintln!("create {:.3}s {} B", t.elapsed().as_secs_f64(), st.archive_bytes);
            }
        }
        "restore" => {
            let store = PathBuf::from(&a[2]).join("store");
            let snaps = Snapshots::new(Arc::new(LocalStorage::new(&store)));
            let (u, id) = (UserId::new("bench_snap")?, SnapshotId::new("bench")?);
            if snaps.get(&u, &id).is_err() {
                snaps.create(&u, &id, &PathBuf::from(&a[1]), &CreateOptions::default())?;
            }
            let target = PathBuf::from(&a[2]).join("restored");
            for _ in 0..n {
                let t = Instant::now();
                let p = snaps.prepare_restore(
                    &u,
                    &id,
                    &target,
                    &ExtractOptions { sync: false, ..ExtractOptions::default() },
                )?;
                eprintln!("restore {:.3}s {} files", t.elapsed().as_secs_f64(), p.stats().files);
                p.discard()?;
            }
        }
        _ => {}
    }
    Ok(())
}
