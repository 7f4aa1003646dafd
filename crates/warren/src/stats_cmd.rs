//! `warren stats` (resource use against limits) and `warren policy` (the resource monitor's
//! policy of a workspace), local and over `--url`.

use std::io::Write;
use std::time::Duration;

use anyhow::{bail, Result};
use clap::Args;
use reqwest::Method;
use serde_json::json;
use warren_core::monitor::{Action, MonitorPolicy};
use warren_core::UserId;
use warren_engine::Engine;
use warren_server::api::{PolicyBody, SetPolicy, StatsBody, Workspace};

use crate::client::{Body, Client};
use crate::{parse_user, print_json};

/// How long `warren stats` watches CPU use.
const WINDOW: Duration = Duration::from_millis(500);

/// `warren stats`.
#[derive(Debug, Args)]
pub struct StatsArgs {
    /// Only this user's workspace (default: every workspace).
    #[arg(value_parser = parse_user)]
    pub user: Option<UserId>,
}

/// `warren policy`.
#[derive(Debug, Args)]
pub struct PolicyArgs {
    /// The user.
    #[arg(value_parser = parse_user)]
    pub user: UserId,
    /// What happens when a threshold stays exceeded: warn, stop or kill.
    #[arg(long, value_parser = parse_action)]
    pub action: Option<Action>,
    /// Seconds a threshold may stay exceeded before the action.
    #[arg(long, value_name = "SECS")]
    pub grace: Option<u64>,
    /// CPU threshold, percent of the CPU limit (0: not watched).
    #[arg(long, value_name = "PERCENT")]
    pub cpu: Option<u32>,
    /// Memory threshold, percent of the memory limit (0: not watched).
    #[arg(long, value_name = "PERCENT")]
    pub memory: Option<u32>,
    /// Pids threshold, percent of the pids limit (0: not watched).
    #[arg(long, value_name = "PERCENT")]
    pub pids: Option<u32>,
    /// Disk threshold, percent of the disk limit (0: not watched; 100: the quota itself).
    #[arg(long, value_name = "PERCENT")]
    pub disk: Option<u32>,
    /// Go back to the configured default policy.
    #[arg(long, conflicts_with_all = ["action", "grace", "cpu", "memory", "pids", "disk"])]
    pub reset: bool,
}

fn parse_action(s: &str) -> Result<Action, String> {
    s.parse().map_err(|e: warren_core::Error| e.to_string())
}

impl PolicyArgs {
    fn changes(&self) -> bool {
        self.reset || self.any_flag()
    }

    /// `base` with the given flags applied.
    fn edit(&self, mut p: MonitorPolicy) -> MonitorPolicy {
        let pct = |v: Option<u32>, old: Option<u32>| match v {
            Some(0) => None,
            Some(n) => Some(n),
            None => old,
        };
        if let Some(a) = self.action {
            p.action = a;
        }
        if let Some(g) = self.grace {
            p.grace_secs = g;
        }
        p.cpu_percent = pct(self.cpu, p.cpu_percent);
        p.memory_percent = pct(self.memory, p.memory_percent);
        p.pids_percent = pct(self.pids, p.pids_percent);
        p.disk_percent = pct(self.disk, p.disk_percent);
        p
    }

    fn any_flag(&self) -> bool {
        self.action.is_some()
            || self.grace.is_some()
            || self.cpu.is_some()
            || self.memory.is_some()
            || self.pids.is_some()
            || self.disk.is_some()
    }
}

/// Runs `warren stats` on the engine.
pub async fn stats(engine: &Engine, a: StatsArgs, json: bool) -> Result<i32> {
    let rows: Vec<(String, StatsBody)> = match a.user {
        Some(u) => vec![(u.to_string(), engine.usage(&u, WINDOW).await?.into())],
        None => engine.usage_all(WINDOW).await?.into_iter().map(|u| (u.user.to_string(), u.into())).collect(),
    };
    print_stats(&rows, json)
}

/// Runs `warren stats` against a server.
pub async fn stats_remote(client: &Client, a: StatsArgs, json: bool) -> Result<i32> {
    let users: Vec<String> = match a.user {
        Some(u) => vec![u.to_string()],
        None => {
            let list: Vec<Workspace> = client.get_json(Method::GET, client.url(&["v1", "workspaces"])?, None).await?;
            list.into_iter().map(|w| w.user).collect()
        }
    };
    let mut rows = Vec::with_capacity(users.len());
    for u in users {
        let url = client.url(&["v1", "workspaces", &u, "stats"])?;
        rows.push((u, client.get_json::<StatsBody>(Method::GET, url, None).await?));
    }
    print_stats(&rows, json)
}

fn print_stats(rows: &[(String, StatsBody)], json: bool) -> Result<i32> {
    if json {
        let v: Vec<_> = rows.iter().map(|(u, s)| json!({ "user": u, "stats": s })).collect();
        print_json(&v)?;
        return Ok(0);
    }
    let mut out = std::io::stdout().lock();
    writeln!(out, "{:<24} {:<8} {:>7} {:>22} {:>11} {:>18}  OVER", "USER", "STATE", "CPU%", "MEMORY", "PIDS", "DISK")?;
    for (user, s) in rows {
        let of = |used: String, limit: Option<String>, key: &str| match (limit, s.percent.get(key)) {
            (Some(l), Some(p)) => format!("{used}/{l} {p:.0}%"),
            (Some(l), None) => format!("{used}/{l}"),
            (None, _) => used,
        };
        let cpu = s.cpu_percent.map_or_else(|| "-".to_owned(), |c| format!("{c:.1}"));
        let mem = of(size(s.memory_bytes), s.memory_limit_bytes.map(size), "memory");
        let pids = of(s.pids.to_string(), s.pids_limit.map(|p| p.to_string()), "pids");
        let disk = of(size(s.disk_bytes), s.disk_limit_bytes.map(size), "disk");
        let over = if s.over.is_empty() { "-".to_owned() } else { s.over.join(",") };
        let state = format!("{:?}", s.state).to_ascii_lowercase();
        writeln!(out, "{user:<24} {state:<8} {cpu:>7} {mem:>22} {pids:>11} {disk:>18}  {over}")?;
    }
    Ok(0)
}

fn size(b: u64) -> String {
    const UNITS: [&str; 5] = ["B", "K", "M", "G", "T"];
    let (mut v, mut i) = (b as f64, 0);
    while v >= 1024.0 && i < UNITS.len() - 1 {
        v /= 1024.0;
        i += 1;
    }
    if i == 0 {
        format!("{b}B")
    } else {
        format!("{v:.1}{}", UNITS[i])
    }
}

/// Runs `warren policy` on the engine.
pub async fn policy(engine: &Engine, a: PolicyArgs, json: bool) -> Result<i32> {
    engine.status(&a.user).await?;
    let p = if a.reset {
        engine.set_policy(&a.user, None).await?
    } else if a.changes() {
        let new = a.edit(engine.policy(&a.user).await?);
        engine.set_policy(&a.user, Some(new)).await?
    } else {
        engine.policy(&a.user).await?
    };
    print_policy(&p.into(), json)
}

/// Runs `warren policy` against a server (changing it needs an admin token).
pub async fn policy_remote(client: &Client, a: PolicyArgs, json: bool) -> Result<i32> {
    let url = client.url(&["v1", "workspaces", a.user.as_str(), "policy"])?;
    let current: PolicyBody = client.get_json(Method::GET, url.clone(), None).await?;
    if !a.changes() {
        return print_policy(&current, json);
    }
    let body = if a.reset {
        SetPolicy { policy: None }
    } else {
        let base = MonitorPolicy::try_from(current)?;
        SetPolicy { policy: Some(a.edit(base).into()) }
    };
    let Ok(v) = serde_json::to_value(&body) else { bail!("encoding the policy failed") };
    let p: PolicyBody = client.get_json(Method::PUT, url, Some(Body::Json(v))).await?;
    print_policy(&p, json)
}

fn print_policy(p: &PolicyBody, json: bool) -> Result<i32> {
    if json {
        print_json(p)?;
        return Ok(0);
    }
    let t = |v: Option<u32>| v.map_or_else(|| "off".to_owned(), |n| format!("{n}%"));
    println!(
        "action {} after {} s over a threshold; cpu {}, memory {}, pids {}, disk {} (of the workspace's limits)",
        p.action,
        p.grace_secs,
        t(p.cpu_percent),
        t(p.memory_percent),
        t(p.pids_percent),
        t(p.disk_percent)
    );
    Ok(0)
}
