//! `warren snapshot ...`: take, restore, list, delete, pin, export and import snapshots.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use clap::Subcommand;
use reqwest::Method;
use serde::Serialize;
use serde_json::json;
use warren_core::{SnapshotId, UserId};
use warren_engine::{Engine, Manifest, Progress, ProgressFn, SnapshotOptions, Trigger};
use warren_server::api::{RestoreResult, Snapshot};

use crate::client::{Body, Client};

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
            print_created(&m, how.as_deref(), json)?;
        }
        SnapshotCmd::Restore { user, snap } => {
            let bar = ProgressLine::new(format!("restoring {snap}"), None);
            let r = engine.snapshot_restore_with(&user, &snap, bar.callback()).await;
            bar.finish();
            let r = r?;
            let out = Restored {
                restored: r.restored,
                pre_restore: r.pre_restore,
                files: r.files,
                bytes: r.bytes,
                restarted: r.restarted,
            };
            print_restored(&user, &out, json)?;
        }
        SnapshotCmd::List { user } => print_list(&engine.snapshot_list(&user).await?, json)?,
        SnapshotCmd::Delete { user, snap } => {
            engine.snapshot_delete(&user, &snap).await?;
            print_deleted(&user, &snap, json)?;
        }
        SnapshotCmd::Pin { user, snap } => print_pinned(&engine.snapshot_pin(&user, &snap, true).await?, json)?,
        SnapshotCmd::Unpin { user, snap } => print_pinned(&engine.snapshot_pin(&user, &snap, false).await?, json)?,
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

/// Runs a snapshot subcommand through `warren serve` (`--url`): the same output as on the
/// local engine. Export and import move archive files on this host, so they stay local.
pub async fn run_remote(client: &Client, cmd: SnapshotCmd, json: bool) -> Result<i32> {
    let url = |user: &UserId, rest: &[&str]| {
        let mut segs = vec!["v1", "workspaces", user.as_str(), "snapshots"];
        segs.extend_from_slice(rest);
        client.url(&segs)
    };
    match cmd {
        SnapshotCmd::Create { user, snap, pin } => {
            let body = json!({ "id": snap.as_ref().map(SnapshotId::as_str), "pinned": pin });
            let s: Snapshot = client.get_json(Method::POST, url(&user, &[])?, Some(Body::Json(body))).await?;
            print_created(&manifest_of(s)?, None, json)?;
        }
        SnapshotCmd::Restore { user, snap } => {
            let r: RestoreResult =
                client.get_json(Method::POST, url(&user, &[snap.as_str(), "restore"])?, None).await?;
            let out = Restored {
                restored: manifest_of(r.restored)?,
                pre_restore: manifest_of(r.pre_restore)?,
                files: r.files,
                bytes: r.bytes,
                restarted: r.restarted,
            };
            print_restored(&user, &out, json)?;
        }
        SnapshotCmd::List { user } => {
            let list: Vec<Snapshot> = client.get_json(Method::GET, url(&user, &[])?, None).await?;
            print_list(&list.into_iter().map(manifest_of).collect::<Result<Vec<_>>>()?, json)?;
        }
        SnapshotCmd::Delete { user, snap } => {
            client.send(Method::DELETE, url(&user, &[snap.as_str()])?, None).await?;
            print_deleted(&user, &snap, json)?;
        }
        SnapshotCmd::Pin { user, snap } => {
            print_pinned(&remote_pin(client, url(&user, &[snap.as_str(), "pin"])?, true).await?, json)?
        }
        SnapshotCmd::Unpin { user, snap } => {
            print_pinned(&remote_pin(client, url(&user, &[snap.as_str(), "pin"])?, false).await?, json)?
        }
        SnapshotCmd::Export { .. } | SnapshotCmd::Import { .. } => anyhow::bail!(
            "snapshot export and import move archive files on the server's host: run them there, without --url"
        ),
    }
    Ok(0)
}

async fn remote_pin(client: &Client, url: reqwest::Url, pinned: bool) -> Result<Manifest> {
    let s: Snapshot = client.get_json(Method::POST, url, Some(Body::Json(json!({ "pinned": pinned })))).await?;
    manifest_of(s)
}

/// The API's view of a snapshot as the manifest it was made from (same fields, same JSON).
fn manifest_of(s: Snapshot) -> Result<Manifest> {
    let id = s.id.clone();
    serde_json::to_value(s)
        .and_then(serde_json::from_value)
        .with_context(|| format!("the server sent a snapshot {id:?} this client cannot read"))
}

/// What a restore did, for printing.
#[derive(Serialize)]
struct Restored {
    restored: Manifest,
    pre_restore: Manifest,
    files: u64,
    bytes: u64,
    restarted: bool,
}

fn print_created(m: &Manifest, quiesce: Option<&str>, json: bool) -> Result<()> {
    if json {
        return crate::print_json(m);
    }
    println!(
        "snapshot {} of {}: {} archive, {} files, {} unpacked{}",
        m.id,
        m.user,
        format_size(m.archive_bytes),
        m.file_count,
        format_size(m.unpacked_bytes),
        if m.pinned { ", pinned" } else { "" }
    );
    match quiesce {
        Some("freeze") => println!("the workspace kept running (frozen while it was archived)"),
        Some("stop_start") => println!(
            "the {} backend cannot freeze a workspace: it was stopped for the snapshot and started again",
            m.backend
        ),
        _ => {}
    }
    Ok(())
}

fn print_restored(user: &UserId, r: &Restored, json: bool) -> Result<()> {
    if json {
        return crate::print_json(r);
    }
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
    Ok(())
}

fn print_list(list: &[Manifest], json: bool) -> Result<()> {
    if json {
        crate::print_json(&list)
    } else {
        print_table(list)
    }
}

fn print_deleted(user: &UserId, snap: &SnapshotId, json: bool) -> Result<()> {
    if json {
        crate::print_json(&json!({ "deleted": snap, "user": user }))
    } else {
        println!("deleted snapshot {snap} of {user}");
        Ok(())
    }
}

fn print_pinned(m: &Manifest, json: bool) -> Result<()> {
    if json {
        crate::print_json(m)
    } else {
        println!("snapshot {} of {} is {}", m.id, m.user, if m.pinned { "pinned" } else { "not pinned" });
        Ok(())
    }
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
