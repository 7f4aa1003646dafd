//! The host processes of a uid, read from `/proc` (the dir backend's workspaces, a user of the
//! docker pool).

use std::time::Duration;

use crate::{Result, SysError};

/// One live (not zombie) process of a uid.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcInfo {
    /// Its pid.
    pub pid: i32,
    /// Threads (each counts against `RLIMIT_NPROC`).
    pub threads: u64,
    /// user + system time of the process and of its waited-for children, clock ticks.
    pub cpu_ticks: u64,
    /// Resident set size, bytes.
    pub rss_bytes: u64,
}

/// Every live process whose real uid is `uid`. Processes that vanish while being read are
/// skipped; zombies are skipped (they run nothing and hold no memory).
pub fn processes_of(uid: u32) -> Vec<ProcInfo> {
    let Ok(rd) = std::fs::read_dir("/proc") else { return Vec::new() };
    let mut out = Vec::new();
    for ent in rd.flatten() {
        let Some(pid) = ent.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else { continue };
        if let Some(info) = read_proc(pid, uid) {
            out.push(info);
        }
    }
    out
}

fn read_proc(pid: i32, uid: u32) -> Option<ProcInfo> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| status.lines().find_map(|l| l.strip_prefix(name)).map(str::trim);
    let real_uid: u32 = field("Uid:")?.split_whitespace().next()?.parse().ok()?;
    if real_uid != uid {
        return None;
    }
    let state = field("State:")?;
    if state.starts_with('Z') || state.starts_with('X') {
        return None;
    }
    let threads = field("Threads:").and_then(|t| t.parse().ok()).unwrap_or(1);
    let rss_bytes =
        field("VmRSS:").and_then(|v| v.trim_end_matches("kB").trim().parse::<u64>().ok()).map_or(0, |kb| kb * 1024);
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may contain spaces and parentheses: parse after the last ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // `rest` starts at field 3 (state); utime, stime, cutime, cstime are fields 14 to 17.
    let tick = |n: usize| fields.get(n - 3).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    let cpu_ticks = tick(14) + tick(15) + tick(16) + tick(17);
    Some(ProcInfo { pid, threads, cpu_ticks, rss_bytes })
}

/// What the live processes of `uid` use together.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    /// CPU time of the live processes (and their waited-for children), nanoseconds.
    pub cpu_ns: u64,
    /// Resident memory, bytes.
    pub rss_bytes: u64,
    /// Threads.
    pub threads: u64,
}

/// The summed use of every live process of `uid`.
pub fn usage_of(uid: u32) -> Usage {
    let tick_ns = 1_000_000_000 / clock_ticks();
    processes_of(uid).iter().fold(Usage::default(), |u, p| Usage {
        cpu_ns: u.cpu_ns + p.cpu_ticks * tick_ns,
        rss_bytes: u.rss_bytes + p.rss_bytes,
        threads: u.threads + p.threads,
    })
}

/// Clock ticks per second of `/proc/*/stat` times.
pub fn clock_ticks() -> u64 {
    match nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK) {
        Ok(Some(t)) if t > 0 => t as u64,
        _ => 100,
    }
}

/// Kills every process of `uid` and waits until none is left (bounded: a process stuck in the
/// kernel for seconds makes this fail rather than hang).
pub fn kill_all(uid: u32) -> Result<()> {
    for round in 0u64..300 {
        crate::spawn::kill_all_of_uid(uid)?;
        let left = processes_of(uid);
        if left.is_empty() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis((round + 1).min(20) * 5));
    }
    let left: Vec<i32> = processes_of(uid).iter().map(|p| p.pid).collect();
    if left.is_empty() {
        return Ok(());
    }
    Err(SysError::Invalid(format!(
        "processes {left:?} of uid {uid} survived SIGKILL for about 30 seconds (stuck in the kernel?); try stopping again"
    )))
}
