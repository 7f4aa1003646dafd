//! The report: rows with their summaries, peer ratios and targets, as markdown and JSON.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::Serialize;

use crate::peers::Unavailable;
use crate::stats::{fmt_ms, summarize, Summary};
use crate::warren::Samples;

/// Whose numbers a row holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum RowKind {
    /// One of warren's backends.
    Warren,
    /// Another tool, for comparison.
    Peer,
}

/// A row as measured.
#[derive(Debug)]
pub struct Row {
    /// Row name.
    pub name: String,
    /// Warren or peer.
    pub kind: RowKind,
    /// What one iteration runs.
    pub command: String,
    /// The peer tool's version.
    pub version: Option<String>,
    /// Samples, or why there are none.
    pub outcome: Result<Samples, Unavailable>,
    /// Peers to compare with, in order of preference (warren rows).
    pub peers: Vec<&'static str>,
    /// Target for the p50, ms.
    pub target_p50_ms: Option<f64>,
    /// Target for the ratio peer p50 / warren p50 (warren this many times faster).
    pub target_speedup: Option<f64>,
    /// Bytes in and out, for rows that compress.
    pub sizes: Option<Sizes>,
    /// Target for the p99, ms.
    pub target_p99_ms: Option<f64>,
    /// A line for the notes below the table (e.g. a throughput in MB/s).
    pub note: Option<String>,
}

/// What a compressing row read and wrote.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct Sizes {
    /// Bytes of the files archived.
    pub input_bytes: u64,
    /// Bytes of the archive.
    pub output_bytes: u64,
}

impl Sizes {
    /// Input / output.
    pub fn ratio(self) -> f64 {
        self.input_bytes as f64 / self.output_bytes.max(1) as f64
    }
}

/// An archive this much larger than the peer's still counts as "the same compression".
const SAME_SIZE: f64 = 1.01;

/// The machine the run was on.
#[derive(Clone, Debug, Serialize)]
pub struct Host {
    /// Kernel release.
    pub kernel: String,
    /// CPU model.
    pub cpu: String,
    /// CPUs available to the run.
    pub cpus: usize,
    /// The ns backend's helper.
    pub ns_helper: String,
}

impl Host {
    /// Reads the host's facts from /proc.
    pub fn read(ns_helper: String) -> Self {
        let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default().trim().to_owned();
        let cpu = std::fs::read_to_string("/proc/cpuinfo")
            .unwrap_or_default()
            .lines()
            .find_map(|l| {
                l.strip_prefix("model name").and_then(|r| r.split_once(':')).map(|(_, v)| v.trim().to_owned())
            })
            .unwrap_or_else(|| "unknown".into());
        let cpus = std::thread::available_parallelism().map(usize::from).unwrap_or(0);
        Self { kernel, cpu, cpus, ns_helper }
    }
}

/// One row of the report.
#[derive(Clone, Debug, Serialize)]
pub struct RowReport {
    /// Row name.
    pub name: String,
    /// Warren or peer.
    pub kind: RowKind,
    /// What one iteration runs.
    pub command: String,
    /// The peer tool's version.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// `ok`, `skipped` or `error`.
    pub status: &'static str,
    /// Why a row is skipped or failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// Latency summary.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub summary: Option<Summary>,
    /// Per-step summaries of a cold cycle.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub steps: BTreeMap<String, Summary>,
    /// The peer compared with.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub peer: Option<String>,
    /// The peer's p50, ms.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub peer_p50_ms: Option<f64>,
    /// The peer's p99, ms.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub peer_p99_ms: Option<f64>,
    /// The peer's number of samples.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub peer_n: Option<usize>,
    /// Why the row has no peer numbers (`not installed`, `dockerd not running`, ...).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub peer_unavailable: Option<String>,
    /// Peer p50 / warren p50: above 1, warren is faster.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ratio: Option<f64>,
    /// Target for the p50, ms.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target_p50_ms: Option<f64>,
    /// Target for the ratio (peer/warren).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target_speedup: Option<f64>,
    /// Bytes archived and archive size.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sizes: Option<Sizes>,
    /// The peer's bytes archived and archive size.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub peer_sizes: Option<Sizes>,
    /// Target for the p99, ms.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target_p99_ms: Option<f64>,
    /// Extra facts of the row.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    /// `PASS` or `MISS` against the target.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub result: Option<&'static str>,
    /// Every timed sample, microseconds, in run order.
    pub samples_us: Vec<u64>,
}

/// The whole report.
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    /// Format version of this JSON.
    pub format: u32,
    /// When the run started, UTC.
    pub started_utc: String,
    /// The same, seconds since the epoch.
    pub started_unix: u64,
    /// The machine.
    pub host: Host,
    /// Timed iterations per row.
    pub iterations: usize,
    /// Untimed iterations before them.
    pub warmup: usize,
    /// The rows, warren's first.
    pub rows: Vec<RowReport>,
    /// The API load test, when it ran.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub load: Option<crate::load::LoadReport>,
    /// Why the API load test did not run, when it was selected.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub load_error: Option<String>,
    /// The density measurement, when it ran.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub density: Option<crate::density::DensityReport>,
    /// Why the density measurement did not run, when it was selected.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub density_error: Option<String>,
    /// No row failed and no target was missed.
    pub clean: bool,
}

/// `YYYY-MM-DDTHH:MM:SSZ` of a Unix time.
pub fn utc(secs: u64) -> String {
    warren_core::time::Timestamp::from_millis(i64::try_from(secs).unwrap_or(i64::MAX).saturating_mul(1000))
        .to_rfc3339_seconds()
}

/// Summaries, peer ratios and target results of the measured rows.
pub fn build(rows: &[Row], host: Host, iterations: usize, warmup: usize, started: SystemTime) -> Report {
    let peer_summary = |name: &str| {
        rows.iter()
            .filter(|r| r.kind == RowKind::Peer && r.name == name)
            .find_map(|r| r.outcome.as_ref().ok().and_then(|s| summarize(&s.total)))
    };
    // Why peer `name` has no numbers.
    let peer_why = |name: &str| match rows.iter().find(|r| r.kind == RowKind::Peer && r.name == name) {
        None => "not run".to_owned(),
        Some(r) => match &r.outcome {
            Err(Unavailable::Skipped(m)) => m.clone(),
            Err(Unavailable::Error(m)) => format!("failed: {m}"),
            Ok(_) => "no samples".to_owned(),
        },
    };
    let mut clean = true;
    let mut out = Vec::new();
    for r in rows {
        let (status, message, summary, steps, samples_us) = match &r.outcome {
            Ok(s) => {
                let steps = s
                    .steps
                    .iter()
                    .filter_map(|(k, v)| summarize(v).map(|sum| ((*k).to_owned(), sum)))
                    .collect::<BTreeMap<_, _>>();
                let us = s.total.iter().map(|d| d.as_micros() as u64).collect();
                ("ok", None, summarize(&s.total), steps, us)
            }
            Err(Unavailable::Skipped(m)) => ("skipped", Some(m.clone()), None, BTreeMap::new(), vec![]),
            Err(Unavailable::Error(m)) => ("error", Some(m.clone()), None, BTreeMap::new(), vec![]),
        };
        let peer = r.peers.iter().find_map(|p| peer_summary(p).map(|v| ((*p).to_owned(), v)));
        let peer_unavailable = match (&peer, r.peers.first()) {
            (None, Some(first)) => Some(peer_why(first)),
            _ => None,
        };
        let ratio = match (&peer, &summary) {
            (Some((_, pp)), Some(s)) if s.p50_ms > 0.0 => Some(pp.p50_ms / s.p50_ms),
            _ => None,
        };
        let peer_sizes = peer.as_ref().and_then(|(name, _)| {
            rows.iter().find(|p| p.kind == RowKind::Peer && &p.name == name).and_then(|p| p.sizes)
        });
        let compression_ok = match (r.sizes, peer_sizes) {
            (Some(a), Some(b)) => a.output_bytes as f64 <= b.output_bytes as f64 * SAME_SIZE,
            _ => true,
        };
        let result = match (r.target_p50_ms, r.target_speedup, r.target_p99_ms) {
            (Some(t), _, _) => Some(match &summary {
                Some(s) if s.p50_ms <= t => "PASS",
                _ => "MISS",
            }),
            (None, Some(t), _) => Some(match ratio {
                Some(x) if x >= t && compression_ok => "PASS",
                _ => "MISS",
            }),
            (None, None, Some(t)) => Some(match &summary {
                Some(s) if s.p99_ms <= t => "PASS",
                _ => "MISS",
            }),
            (None, None, None) => None,
        };
        if status == "error" && r.kind == RowKind::Warren || result == Some("MISS") {
            clean = false;
        }
        out.push(RowReport {
            name: r.name.clone(),
            kind: r.kind,
            command: r.command.clone(),
            version: r.version.clone(),
            status,
            message,
            summary,
            steps,
            peer: peer.as_ref().map(|(n, _)| n.clone()).or_else(|| r.peers.first().map(|p| (*p).to_owned())),
            peer_p50_ms: peer.as_ref().map(|(_, v)| v.p50_ms),
            peer_p99_ms: peer.as_ref().map(|(_, v)| v.p99_ms),
            peer_n: peer.as_ref().map(|(_, v)| v.n),
            peer_unavailable,
            ratio,
            target_p50_ms: r.target_p50_ms,
            target_speedup: r.target_speedup,
            sizes: r.sizes,
            peer_sizes,
            target_p99_ms: r.target_p99_ms,
            note: r.note.clone(),
            result,
            samples_us,
        });
    }
    let started_unix = started.duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    Report {
        format: 2,
        started_utc: utc(started_unix),
        started_unix,
        host,
        iterations,
        warmup,
        rows: out,
        load: None,
        load_error: None,
        density: None,
        density_error: None,
        clean,
    }
}

fn cell(s: &str) -> String {
    s.replace('|', "\\|").replace('\n', " ")
}

/// At most `max` characters of `s`, with an ellipsis when cut.
fn short(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        s.to_owned()
    } else {
        format!("{}...", s.chars().take(max).collect::<String>())
    }
}

/// The report as markdown: a header line, the table, step breakdowns, peer versions, then the
/// API load test and density sections.
pub fn markdown(rep: &Report) -> String {
    let mut s = format!(
        "warren-bench {}: {} iterations (+{} warm-up) per row; kernel {}, {} CPUs ({}); ns helper: {}\n\n",
        rep.started_utc, rep.iterations, rep.warmup, rep.host.kernel, rep.host.cpus, rep.host.cpu, rep.host.ns_helper
    );
    s.push_str(
        "| row | n | p50 | p99 | peer | peer n | peer p50 | peer p99 | ratio (peer/warren p50) | target | result |\n",
    );
    s.push_str("| --- | ---: | ---: | ---: | --- | ---: | ---: | ---: | ---: | --- | --- |\n");
    for r in &rep.rows {
        let name = match r.kind {
            RowKind::Warren => format!("**{}**", r.name),
            RowKind::Peer => format!("peer: {}", r.name),
        };
        let dash = || "-".to_owned();
        let (n, p50, p99) = match (&r.summary, &r.message) {
            (Some(x), _) => (x.n.to_string(), fmt_ms(x.p50_ms), fmt_ms(x.p99_ms)),
            (None, Some(m)) if r.status == "skipped" => (dash(), format!("n/a ({})", cell(&short(m, 80))), dash()),
            (None, Some(m)) => (dash(), format!("{}: {}", r.status, cell(&short(m, 200))), dash()),
            (None, None) => (dash(), dash(), dash()),
        };
        let peer = r.peer.clone().unwrap_or_else(dash);
        let peer_n = r.peer_n.map(|n| n.to_string()).unwrap_or_else(dash);
        let peer_p50 = match (r.peer_p50_ms, &r.peer_unavailable) {
            (Some(v), _) => fmt_ms(v),
            (None, Some(why)) => format!("n/a ({})", cell(&short(why, 80))),
            (None, None) => dash(),
        };
        let peer_p99 = r.peer_p99_ms.map(fmt_ms).unwrap_or_else(dash);
        let ratio = r.ratio.map(|x| format!("{x:.2}x")).unwrap_or_else(dash);
        let target = match (r.target_p50_ms, r.target_speedup, r.target_p99_ms) {
            (Some(t), _, _) => format!("p50 <= {t} ms"),
            (None, Some(t), _) if r.sizes.is_some() => format!(">= {t}x, same or better compression"),
            (None, Some(t), _) => format!(">= {t}x"),
            (None, None, Some(t)) => format!("p99 <= {t} ms"),
            (None, None, None) => dash(),
        };
        let result = r.result.unwrap_or("-");
        s.push_str(&format!(
            "| {name} | {n} | {p50} | {p99} | {peer} | {peer_n} | {peer_p50} | {peer_p99} | {ratio} | {target} | {result} |\n"
        ));
    }
    let mut notes = Vec::new();
    for r in rep.rows.iter().filter(|r| r.steps.contains_key("cpu")) {
        if let (Some(c), Some(t)) = (r.steps.get("cpu"), &r.summary) {
            notes.push(format!(
                "- {}: {} timed iterations; CPU time (user + system, every thread and process) p50 {}, {:.2} cores busy on average",
                r.name,
                t.n,
                fmt_ms(c.p50_ms),
                c.mean_ms / t.mean_ms.max(1e-9)
            ));
        }
    }
    for r in rep.rows.iter().filter(|r| r.steps.keys().any(|k| k != "cpu")) {
        let parts = ["create", "start", "exec", "destroy"]
            .iter()
            .filter_map(|k| r.steps.get(*k).map(|x| format!("{k} {}", fmt_ms(x.p50_ms))))
            .collect::<Vec<_>>();
        notes.push(format!("- {} p50 by step: {}", r.name, parts.join(", ")));
    }
    for r in &rep.rows {
        if let Some(n) = &r.note {
            notes.push(format!("- {}: {n}", r.name));
        }
    }
    let mib = |b: u64| b as f64 / (1u64 << 20) as f64;
    for r in rep.rows.iter().filter(|r| r.sizes.is_some()) {
        let Some(s) = r.sizes else { continue };
        let mut line = format!(
            "- {}: {:.1} MiB archive of {:.1} MiB of files (compression ratio {:.2})",
            r.name,
            mib(s.output_bytes),
            mib(s.input_bytes),
            s.ratio()
        );
        if let (Some(p), Some(name)) = (r.peer_sizes, &r.peer) {
            line.push_str(&format!(
                "; {name}: {:.1} MiB (ratio {:.2}); warren's archive is {:.1}% {} the peer's",
                mib(p.output_bytes),
                p.ratio(),
                (s.output_bytes as f64 / p.output_bytes.max(1) as f64 - 1.0).abs() * 100.0,
                if s.output_bytes <= p.output_bytes { "smaller than" } else { "larger than" }
            ));
        }
        notes.push(line);
    }
    for r in rep.rows.iter().filter(|r| r.kind == RowKind::Peer) {
        let v = r.version.as_deref().map(|v| format!(" ({v})")).unwrap_or_default();
        notes.push(format!("- peer {}{v}: `{}`", r.name, r.command));
    }
    if !notes.is_empty() {
        s.push('\n');
        s.push_str(&notes.join("\n"));
        s.push('\n');
    }
    match (&rep.load, &rep.load_error) {
        (Some(l), _) => {
            s.push('\n');
            s.push_str(&l.markdown());
        }
        (None, Some(e)) => s.push_str(&format!("\nAPI load test: n/a ({})\n", cell(e))),
        (None, None) => {}
    }
    match (&rep.density, &rep.density_error) {
        (Some(d), _) => {
            s.push('\n');
            s.push_str(&d.markdown());
        }
        (None, Some(e)) => s.push_str(&format!("\nDensity: n/a ({})\n", cell(e))),
        (None, None) => {}
    }
    s
}

/// Writes `data` to `path` atomically (a temporary file beside it, fsynced, renamed over it),
/// creating the parent directory.
pub fn write_atomic(path: &Path, data: &[u8]) -> Result<(), String> {
    use std::io::Write;
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
    let mut tmp = tempfile::NamedTempFile::new_in(dir).map_err(|e| format!("writing into {}: {e}", dir.display()))?;
    tmp.write_all(data)
        .and_then(|()| tmp.as_file().sync_all())
        .map_err(|e| format!("writing {}: {e}", path.display()))?;
    tmp.persist(path).map_err(|e| format!("writing {}: {e}", path.display()))?;
    // A results file others can read (the temporary file was 0600).
    let _ = std::fs::set_permissions(path, std::os::unix::fs::PermissionsExt::from_mode(0o644));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn samples(ms: &[u64]) -> Samples {
        Samples { total: ms.iter().map(|&m| Duration::from_millis(m)).collect(), steps: BTreeMap::new() }
    }

    fn host() -> Host {
        Host { kernel: "k".into(), cpu: "c".into(), cpus: 2, ns_helper: "h".into() }
    }

    #[test]
    fn utc_dates() {
        assert_eq!(utc(0), "1970-01-01T00:00:00Z");
        assert_eq!(utc(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(utc(1_700_000_000), "2023-11-14T22:13:20Z");
    }

    #[test]
    fn ratios_targets_and_failures() {
        let rows = vec![
            Row {
                name: "ns cold cycle".into(),
                kind: RowKind::Warren,
                command: "c".into(),
                version: None,
                outcome: Ok(samples(&[2, 2, 4])),
                peers: vec!["runc run", "bwrap"],
                target_p50_ms: Some(5.0),
                target_speedup: None,
                sizes: None,
                target_p99_ms: None,
                note: None,
            },
            Row {
                name: "ns exec".into(),
                kind: RowKind::Warren,
                command: "e".into(),
                version: None,
                outcome: Err(Unavailable::Error("boom | bang".into())),
                peers: vec!["bwrap"],
                target_p50_ms: Some(1.5),
                target_speedup: None,
                sizes: None,
                target_p99_ms: None,
                note: None,
            },
            Row {
                name: "runc run".into(),
                kind: RowKind::Peer,
                command: "runc".into(),
                version: None,
                outcome: Err(Unavailable::Skipped("not installed".into())),
                peers: vec![],
                target_p50_ms: None,
                target_speedup: None,
                sizes: None,
                target_p99_ms: None,
                note: None,
            },
            Row {
                name: "bwrap".into(),
                kind: RowKind::Peer,
                command: "bwrap".into(),
                version: Some("bubblewrap 0.8.0".into()),
                outcome: Ok(samples(&[6, 6, 6])),
                peers: vec![],
                target_p50_ms: None,
                target_speedup: None,
                sizes: None,
                target_p99_ms: None,
                note: None,
            },
        ];
        let mut rows = rows;
        for (name, kind, outcome, peers) in [
            ("docker exec", RowKind::Warren, Ok(samples(&[60, 60, 60])), vec!["docker exec"]),
            ("docker exec", RowKind::Peer, Err(Unavailable::Skipped("dockerd not running".into())), vec![]),
        ] {
            rows.push(Row {
                name: name.into(),
                kind,
                command: "d".into(),
                version: None,
                outcome,
                peers,
                target_p50_ms: None,
                target_speedup: None,
                sizes: None,
                target_p99_ms: None,
                note: None,
            });
        }
        let rep = build(&rows, host(), 3, 0, UNIX_EPOCH);
        let cold = &rep.rows[0];
        assert_eq!(cold.peer.as_deref(), Some("bwrap"), "falls back past the skipped runc");
        assert_eq!(cold.ratio, Some(3.0));
        assert_eq!(cold.result, Some("PASS"));
        assert_eq!(cold.samples_us, vec![2000, 2000, 4000]);
        assert_eq!(rep.rows[1].result, Some("MISS"));
        assert!(!rep.clean);
        let md = markdown(&rep);
        assert!(
            md.contains(
                "| **ns cold cycle** | 3 | 2.000 ms | 4.000 ms | bwrap | 3 | 6.000 ms | 6.000 ms | 3.00x | p50 <= 5 ms | PASS |"
            ),
            "{md}"
        );
        assert!(md.contains("error: boom \\| bang"), "{md}");
        assert!(md.contains("| peer: runc run | - | n/a (not installed) | - |"), "{md}");
        assert!(md.contains("| **ns exec** | - | error: boom \\| bang | - | bwrap | 3 | 6.000 ms |"), "{md}");
        assert!(
            md.contains("| **docker exec** | 3 | 60.00 ms | 60.00 ms | docker exec | - | n/a (dockerd not running) | - | - | - | - |"),
            "a missing peer is n/a with its reason, not a failure: {md}"
        );
        assert_eq!(rep.rows[4].peer_unavailable.as_deref(), Some("dockerd not running"));
        assert!(rep.rows[4].result.is_none());
        let json = serde_json::to_value(&rep).expect("serialises");
        assert_eq!(json["rows"][2]["status"], "skipped");
        assert_eq!(json["rows"][0]["peer_p99_ms"], 6.0);
        assert_eq!(json["rows"][0]["peer_n"], 3);
    }

    #[test]
    fn speedup_targets_need_the_speed_and_the_compression() {
        let row = |name: &str, kind, ms: &[u64], peers: Vec<&'static str>, target, out: u64| Row {
            name: name.into(),
            kind,
            command: "c".into(),
            version: None,
            outcome: Ok(samples(ms)),
            peers,
            target_p50_ms: None,
            target_speedup: target,
            sizes: Some(Sizes { input_bytes: 1000, output_bytes: out }),
            target_p99_ms: None,
            note: None,
        };
        let rows = vec![
            row("snapshot create", RowKind::Warren, &[10, 10, 10], vec!["tar"], Some(1.2), 300),
            row("slow", RowKind::Warren, &[11, 11, 11], vec!["tar"], Some(1.2), 300),
            row("big", RowKind::Warren, &[5, 5, 5], vec!["tar"], Some(1.2), 310),
            row("tar", RowKind::Peer, &[13, 13, 13], vec![], None, 305),
        ];
        let rep = build(&rows, host(), 3, 0, UNIX_EPOCH);
        assert_eq!(rep.rows[0].result, Some("PASS"), "1.3x and a smaller archive");
        assert_eq!(rep.rows[1].result, Some("MISS"), "1.18x is below 1.2x");
        assert_eq!(rep.rows[2].result, Some("MISS"), "fast, but the archive is 1.6% larger");
        assert_eq!(rep.rows[0].peer_sizes, Some(Sizes { input_bytes: 1000, output_bytes: 305 }));
        let md = markdown(&rep);
        assert!(md.contains("| >= 1.2x, same or better compression | PASS |"), "{md}");
        assert!(md.contains("- snapshot create: 0.0 MiB archive of 0.0 MiB of files (compression ratio 3.33); tar: 0.0 MiB (ratio 3.28); warren's archive is 1.6% smaller than the peer's"), "{md}");
    }
}
