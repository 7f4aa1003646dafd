//! `warren snapshot ...`: take, restore, list, delete, pin, export and import snapshots.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use clap::Subcommand;
use serde::Serialize;
use warren_core::{SnapshotId, UserId};
use warren_engine::{Engine, Manifest, Progress, ProgressFn, SnapshotOptions, Trigger};

/// Snapshot subcommands.
#[derive(Debug, Subcommand)]
pub enum SnapshotCmd {
    /// Take a snapshot of a user's workspace (a running ns workspace keeps running; a dir one is
    /// stopped for the archive and started again).
    #[command(after_help = "\
Examples:
  warren snapshot create u_123 snap_001
  warren snapshot create u_123            # a generated, time-sortable id
  warren snapshot create u_123 release-1 --pin

Retention keeps the newest snapshots.keep (default 5) per user; pinned ones are extra.")]
    Create {
        /// The user.
        #[arg(value_parser = crate::parse_user)]
        user: UserId,
        /// The snapshot's id (1-64 of A-Z a-z 0-9 _ . -); default: generated.
        #[arg(value_parser = parse_snap)]
        snap: Option<SnapshotId>,
        /// Exempt it from retention.
        #[arg(long)]
        pin: bool,
    },
    /// Restore a snapshot into a user's workspace (the files it replaces are saved first as a
    /// pre_restore snapshot, so a restore can be undone).
    #[command(after_help = "\
Example:
  warren snapshot restore u_123 snap_001

The archive is verified and unpacked beside the workspace while it keeps running; then the
workspace is stopped, its files saved as a pre_restore snapshot, the unpacked tree swapped in
atomically, and the workspace started again if it was running.")]
    Restore {
        /// The user.
        #[arg(value_parser = crate::parse_user)]
        user: UserId,
        /// The snapshot.
        #[arg(value_parser = parse_snap)]
        snap: SnapshotId,
    },
    /// List a user's snapshots, newest first.
    #[command(after_help = "Examples:\n  warren snapshot list u_123\n  warren snapshot list u_123 --json")]
    List {
        /// The user.
        #[arg(value_parser = crate::parse_user)]
        user: UserId,
    },
    /// Delete a snapshot.
    #[command(after_help = "Example:\n  warren snapshot delete u_123 snap_001")]
    Delete {
        /// The user.
        #[arg(value_parser = crate::parse_user)]
        user: UserId,
        /// The snapshot.
        #[arg(value_parser = parse_snap)]
        snap: SnapshotId,
    },
    /// Pin a snapshot: retention never deletes it.
    #[command(after_help = "Example:\n  warren snapshot pin u_123 snap_001")]
    Pin {
        /// The user.
        #[arg(value_parser = crate::parse_user)]
        user: UserId,
        /// The snapshot.
        #[arg(value_parser = parse_snap)]
        snap: SnapshotId,
    },
    /// Unpin a snapshot.
    #[command(after_help = "Example:\n  warren snapshot unpin u_123 snap_001")]
    Unpin {
        /// The user.
        #[arg(value_parser = crate::parse_user)]
        user: UserId,
        /// The snapshot.
        #[arg(value_parser = parse_snap)]
        snap: SnapshotId,
    },
    /// Copy a snapshot to a plain .tar.zst file (readable with `zstd -dc FILE | tar -x`).
    #[command(after_help = "Example:\n  warren snapshot export u_123 snap_001 /tmp/u_123.tar.zst")]
    Export {
        /// The user.
        #[arg(value_parser = crate::parse_user)]
        user: UserId,
        /// The snapshot.
        #[arg(value_parser = parse_snap)]
        snap: SnapshotId,
        /// The file to write (must not exist).
        file: PathBuf,
    },
    /// Import a .tar.zst file as a snapshot (checked entry by entry, like a restore).
    #[command(after_help = "\
Examples:
  warren snapshot import u_456 /tmp/u_123.tar.zst moved
  warren snapshot restore u_456 moved")]
    Import {
        /// The user.
        #[arg(value_parser = crate::parse_user)]
        user: UserId,
        /// The .tar.zst file.
        file: PathBuf,
        /// The new snapshot's id; default: generated.
        #[arg(value_parser = parse_snap)]
        snap: Option<SnapshotId>,
    },
}

/// Bytes for people: `166 B`, `12KiB`, `1.5GiB`.
fn format_size(bytes: u64) -> String {
    let s = crate::units::format_size(bytes);
    if s.ends_with(|c: char| c.is_ascii_digit()) {
        format!("{s} B")
    } else {
        format!("{s}iB")
    }
}

fn parse_snap(s: &str) -> Result<SnapshotId, String> {
    SnapshotId::new(s).map_err(|e| e.to_string())
}

/// Runs a snapshot subcommand on the local engine.
pub async fn run(engine: &Engine, cmd: SnapshotCmd, json: bool) -> Result<i32> {
    match cmd {
        SnapshotCmd::Create { user, snap, pin } => {
            let bar = ProgressLine::new(format!("snapshot of {user}"), None);
            let opts = SnapshotOptions { trigger: Trigger::Manual, pinned: pin, progress: bar.callback() };
            let m = engine.snapshot_create(&user, snap, opts).await;
            bar.finish();
            let m = m?;
            let how = quiesce_of(engine, &user, &m).await;
            if json {
                crate::print_json(&m)?;
            } else {
                println!(
                    "snapshot {} of {}: {} archive, {} files, {} unpacked{}",
                    m.id,
                    m.user,
                    format_size(m.archive_bytes),
                    m.file_count,
                    format_size(m.unpacked_bytes),
                    if m.pinned { ", pinned" } else { "" }
                );
                match how.as_deref() {
                    Some("freeze") => println!("the workspace kept running (frozen while it was archived)"),
                    Some("stop_start") => println!(
                        "the {} backend cannot freeze a workspace: it was stopped for the snapshot and started again",
                        m.backend
                    ),
                    _ => {}
                }
            }
        }
        SnapshotCmd::Restore { user, snap } => {
            let bar = ProgressLine::new(format!("restoring {snap}"), None);
            let r = engine.snapshot_restore_with(&user, &snap, bar.callback()).await;
            bar.finish();
            let r = r?;
            if json {
                #[derive(Serialize)]
                struct Out<'a> {
                    restored: &'a Manifest,
                    pre_restore: &'a Manifest,
                    files: u64,
                    bytes: u64,
                    restarted: bool,
                }
                crate::print_json(&Out {
                    restored: &r.restored,
                    pre_restore: &r.pre_restore,
                    files: r.files,
                    bytes: r.bytes,
                    restarted: r.restarted,
                })?;
            } else {
                println!(
                    "restored {} into the workspace of {user}: {} files, {}{}",
                    r.restored.id,
                    r.files,
                    format_size(r.bytes),
                    if r.restarted { " (workspace started again)" } else { "" }
                );
                println!(
                    "the files it replaced are snapshot {} (pre_restore); undo with: warren snapshot restore {user} {}",
                    r.pre_restore.id, r.pre_restore.id
                );
            }
        }
        SnapshotCmd::List { user } => {
            let list = engine.snapshot_list(&user).await?;
            if json {
                crate::print_json(&list)?;
            } else {
                print_table(&list)?;
            }
        }
        SnapshotCmd::Delete { user, snap } => {
            engine.snapshot_delete(&user, &snap).await?;
            if json {
                crate::print_json(&serde_json::json!({ "deleted": snap, "user": user }))?;
            } else {
                println!("deleted snapshot {snap} of {user}");
            }
        }
        SnapshotCmd::Pin { user, snap } => pin(engine, &user, &snap, true, json).await?,
        SnapshotCmd::Unpin { user, snap } => pin(engine, &user, &snap, false, json).await?,
        SnapshotCmd::Export { user, snap, file } => {
            let m = engine.snapshot_export(&user, &snap, &file).await?;
            if json {
                crate::print_json(&serde_json::json!({ "snapshot": m, "file": file }))?;
            } else {
                println!("exported {} of {user} to {} ({})", m.id, file.display(), format_size(m.archive_bytes));
            }
        }
        SnapshotCmd::Import { user, file, snap } => {
            let m = engine
                .snapshot_import(&user, snap, &file)
                .await
                .with_context(|| format!("importing {}", file.display()))?;
            if json {
                crate::print_json(&m)?;
            } else {
                println!(
                    "imported {} as snapshot {} of {user}: {} files, {} unpacked",
                    file.display(),
                    m.id,
                    m.file_count,
                    format_size(m.unpacked_bytes)
                );
            }
        }
    }
    Ok(0)
}

async fn pin(engine: &Engine, user: &UserId, snap: &SnapshotId, pinned: bool, json: bool) -> Result<()> {
    let m = engine.snapshot_pin(user, snap, pinned).await?;
    if json {
        crate::print_json(&m)?;
    } else {
        println!("snapshot {} of {user} is {}", m.id, if m.pinned { "pinned" } else { "not pinned" });
    }
    Ok(())
}

/// How the engine kept the workspace still for snapshot `m` (from its event).
async fn quiesce_of(engine: &Engine, user: &UserId, m: &Manifest) -> Option<String> {
    let events = engine.events(Some(user), 20).await.ok()?;
    events
        .iter()
        .rev()
        .find(|e| e.kind == "snapshot_create" && e.detail["snapshot"] == m.id.as_str())
        .and_then(|e| e.detail["quiesce"].as_str().map(str::to_owned))
}

fn print_table(list: &[Manifest]) -> Result<()> {
    let mut out = std::io::stdout().lock();
    writeln!(out, "{:<32} {:<19}  {:<11} {:>8} {:>8}  PINNED", "ID", "CREATED", "TRIGGER", "SIZE", "FILES")?;
    for m in list {
        let created = m.created.to_string();
        let created = created.get(..19).unwrap_or(&created).replace('T', " ");
        writeln!(
            out,
            "{:<32} {:<19}  {:<11} {:>8} {:>8}  {}",
            m.id.as_str(),
            created,
            m.trigger.as_str(),
            format_size(m.archive_bytes),
            m.file_count,
            if m.pinned { "yes" } else { "-" }
        )?;
    }
    Ok(())
}

/// A progress line on stderr, drawn only when stderr is a terminal.
struct ProgressLine {
    state: Option<Arc<Mutex<LineState>>>,
}

struct LineState {
    label: String,
    started: Instant,
    drawn: Option<Instant>,
    total: Option<u64>,
}

impl ProgressLine {
    fn new(label: String, total: Option<u64>) -> Self {
        let state = std::io::stderr()
            .is_terminal()
            .then(|| Arc::new(Mutex::new(LineState { label, started: Instant::now(), drawn: None, total })));
        Self { state }
    }

    fn callback(&self) -> Option<ProgressFn> {
        let state = self.state.clone()?;
        Some(Arc::new(move |p: Progress| {
            let mut s = state.lock().unwrap_or_else(|e| e.into_inner());
            let now = Instant::now();
            if s.drawn.is_some_and(|d| now.duration_since(d) < Duration::from_millis(100)) {
                return;
            }
            s.drawn = Some(now);
            let secs = now.duration_since(s.started).as_secs_f64().max(0.001);
            let rate = format_size((p.bytes as f64 / secs) as u64);
            let total = p.total_bytes.or(s.total);
            let pct = match total {
                Some(t) if t > 0 => format!(" {:>3}%", (p.bytes.saturating_mul(100) / t).min(100)),
                _ => String::new(),
            };
            let mut err = std::io::stderr().lock();
            let _ =
                write!(err, "\r\x1b[K{}:{pct} {} in {} entries, {rate}/s", s.label, format_size(p.bytes), p.entries);
            let _ = err.flush();
        }))
    }

    fn finish(&self) {
        if let Some(s) = &self.state {
            let s = s.lock().unwrap_or_else(|e| e.into_inner());
            if s.drawn.is_some() {
                let mut err = std::io::stderr().lock();
                let _ = write!(err, "\r\x1b[K");
                let _ = err.flush();
            }
        }
    }
}
