//! The resource monitor: samples every running workspace (cpu %, memory, pids, disk), compares
//! each against the workspace's policy, and after a threshold stayed exceeded for the policy's
//! grace time applies its action (`warn`, `stop`, `kill`), recording a `monitor` event.
//!
//! The same numbers feed `warren stats`, the API's stats route and `/metrics`. CPU percent is
//! of one core (150 = one and a half cores busy), like `top`; the CPU threshold is a percentage
//! of the workspace's CPU limit (of every host core when it has none).
//!
//! Disk quota: no backend here has a filesystem quota under the home (ext4 without quotas, a
//! bind-mounted host directory in docker), so the disk limit is enforced by this monitor
//! (sampling the home's size) and by the engine refusing file writes through the API while the
//! workspace is over its limit.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::Serialize;
use serde_json::json;
use tracing::{info, warn};
use warren_core::monitor::{Action, MonitorPolicy, Resource};
use warren_core::{BackendKind, Error, Result, State, Stats, UserId, WorkspaceId};
use warren_store::NewEvent;

use crate::Engine;

/// One workspace's resource use against its limits.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Usage {
    /// Its owner.
    pub user: UserId,
    /// Its id.
    pub workspace_id: WorkspaceId,
    /// Its backend.
    pub backend: BackendKind,
    /// Its state on the host.
    pub state: State,
    /// CPU use over the last sampling window, percent of one core; `None` before a second sample.
    pub cpu_percent: Option<f64>,
    /// CPU limit, percent of one core (100 per core); `None`: no limit.
    pub cpu_limit_percent: Option<f64>,
    /// Memory in use, bytes.
    pub memory_bytes: u64,
    /// Memory limit, bytes.
    pub memory_limit_bytes: Option<u64>,
    /// Processes and threads.
    pub pids: u64,
    /// Pids limit.
    pub pids_limit: Option<u32>,
    /// Bytes of the workspace's files.
    pub disk_bytes: u64,
    /// Disk limit (quota), bytes.
    pub disk_limit_bytes: Option<u64>,
    /// Use of each limited resource, percent of its limit (cpu: of the CPU limit).
    pub percent: BTreeMap<Resource, f64>,
    /// Resources above the policy's threshold now.
    pub over: Vec<Resource>,
    /// The policy that applies.
    pub policy: MonitorPolicy,
}

/// What one monitor pass did to a workspace.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Enforcement {
    /// The workspace's owner.
    pub user: UserId,
    /// The action taken.
    pub action: Action,
    /// The resource that stayed over its threshold.
    pub resource: Resource,
    /// Its use, percent of its limit.
    pub percent: f64,
    /// The threshold.
    pub threshold: u32,
}

#[derive(Debug, Default)]
struct Track {
    /// The last CPU sample: when, and the cumulative CPU time then.
    cpu: Option<(Instant, u64)>,
    /// Since when each resource has been over its threshold.
    over_since: HashMap<Resource, Instant>,
    /// Resources whose current episode was already acted on (acted once per episode).
    acted: Vec<Resource>,
    /// The last disk sample: when, and the bytes then.
    disk: Option<(Instant, u64)>,
}

/// The monitor's memory between passes.
#[derive(Debug, Default)]
pub(crate) struct MonitorState {
    tracks: Mutex<HashMap<UserId, Track>>,
    /// The last sample of each workspace (what `/metrics` shows).
    last: Mutex<BTreeMap<UserId, Usage>>,
}

impl MonitorState {
    fn with<T>(&self, user: &UserId, f: impl FnOnce(&mut Track) -> T) -> T {
        let mut tracks = self.tracks.lock().unwrap_or_else(|p| p.into_inner());
        f(tracks.entry(user.clone()).or_default())
    }

    /// Drops the cached size of the user's home (after files were deleted).
    pub(crate) fn forget_disk(&self, user: &UserId) {
        self.with(user, |t| t.disk = None);
    }

    pub(crate) fn forget(&self, user: &UserId) {
        self.tracks.lock().unwrap_or_else(|p| p.into_inner()).remove(user);
    }

    fn remember(&self, u: &Usage) {
        self.last.lock().unwrap_or_else(|p| p.into_inner()).insert(u.user.clone(), u.clone());
    }

    pub(crate) fn forget_usage(&self, user: &UserId) {
        self.last.lock().unwrap_or_else(|p| p.into_inner()).remove(user);
    }
}

/// How long a sample of a home's size stands in for measuring it again before a write.
pub const DISK_SAMPLE_TTL: Duration = Duration::from_secs(5);

fn host_cores() -> f64 {
    std::thread::available_parallelism().map_or(1.0, |n| n.get() as f64)
}

fn pct(used: f64, limit: f64) -> f64 {
    if limit <= 0.0 {
        0.0
    } else {
        (used * 100.0 / limit * 10.0).round() / 10.0
    }
}

impl Engine {
    /// The user's workspace's monitor policy: its own, else the configured default.
    pub async fn policy(&self, user: &UserId) -> Result<MonitorPolicy> {
        let u = user.clone();
        let own = self.db(move |s| s.policy(&u)).await?;
        Ok(own.unwrap_or_else(|| self.config().monitor.policy.clone()))
    }

    /// Sets the user's workspace's own monitor policy (`None`: the configured default again).
    #[tracing::instrument(skip_all, fields(user = %user))]
    pub async fn set_policy(&self, user: &UserId, policy: Option<MonitorPolicy>) -> Result<MonitorPolicy> {
        if let Some(p) = &policy {
            p.validate()?;
        }
        let (u, event) = (user.clone(), NewEvent::new("policy", json!({ "policy": policy })));
        let p = policy.clone();
        self.db(move |s| s.set_policy(&u, p.as_ref(), &event)).await?;
        self.monitor.forget(user);
        info!(policy = ?policy, "monitor policy set");
        self.policy(user).await
    }

    /// Resource use of the user's workspace against its limits. CPU percent needs two samples:
    /// if the monitor took none recently, this one samples twice, `window` apart.
    pub async fn usage(&self, user: &UserId, window: Duration) -> Result<Usage> {
        let (rec, backend) = self.lookup(user).await?;
        let state = backend.status(&crate::spec_of(&rec)).await?.state;
        self.usage_of(&rec, backend.as_ref(), state, window).await
    }

    /// [`Engine::usage`] of a workspace whose record, backend and state the caller has.
    async fn usage_of(
        &self,
        rec: &warren_store::WorkspaceRecord,
        backend: &dyn warren_core::Backend,
        state: State,
        window: Duration,
    ) -> Result<Usage> {
        let (user, spec) = (&rec.user, crate::spec_of(rec));
        let fresh = self.monitor.with(user, |t| t.cpu.is_some_and(|(at, _)| at.elapsed() < Duration::from_secs(60)));
        if state == State::Running && !fresh && !window.is_zero() {
            let first = backend.stats(&spec).await?;
            self.monitor.with(user, |t| t.cpu = Some((Instant::now(), first.cpu_usage_ns)));
            tokio::time::sleep(window).await;
        }
        let stats = backend.stats(&spec).await?;
        let policy = self.policy(user).await?;
        let usage = self.measure(rec, state, &stats, policy);
        self.monitor.remember(&usage);
        Ok(usage)
    }

    /// The last sample of every workspace the monitor (or a stats call) measured, by user: what
    /// `/metrics` exports without measuring anything itself.
    pub fn last_usage(&self) -> Vec<Usage> {
        self.monitor.last.lock().unwrap_or_else(|p| p.into_inner()).values().cloned().collect()
    }

    /// [`Engine::usage`] of every workspace (stopped ones show zeros), sampling the running
    /// ones together.
    pub async fn usage_all(&self, window: Duration) -> Result<Vec<Usage>> {
        let list = self.list_with_state().await?;
        if !window.is_zero() {
            for (rec, backend, state) in &list {
                if *state == State::Running {
                    if let Ok(st) = backend.stats(&crate::spec_of(rec)).await {
                        self.monitor.with(&rec.user, |t| t.cpu = Some((Instant::now(), st.cpu_usage_ns)));
                    }
                }
            }
            tokio::time::sleep(window).await;
        }
        let mut out = Vec::with_capacity(list.len());
        for (rec, backend, state) in &list {
            match self.usage_of(rec, backend.as_ref(), *state, Duration::ZERO).await {
                Ok(u) => out.push(u),
                Err(Error::NotFound(_)) => {} // destroyed meanwhile
                Err(e) => return Err(e),
            }
        }
        Ok(out)
    }

    fn measure(&self, rec: &warren_store::WorkspaceRecord, state: State, st: &Stats, policy: MonitorPolicy) -> Usage {
        let l = &rec.limits;
        let now = Instant::now();
        let cpu_percent = self.monitor.with(&rec.user, |t| {
            t.disk = Some((now, st.disk_bytes));
            let prev = t.cpu.replace((now, st.cpu_usage_ns));
            match prev {
                Some((at, ns)) if state == State::Running && now > at && st.cpu_usage_ns >= ns => {
                    let wall = now.duration_since(at).as_nanos() as f64;
                    Some(((st.cpu_usage_ns - ns) as f64 * 100.0 / wall * 10.0).round() / 10.0)
                }
                _ => None,
            }
        });
        let cpu_limit_percent = l.cpu_millis.map(|m| f64::from(m) / 10.0);
        let memory_limit_bytes = st.memory_limit_bytes.or(l.memory_bytes);
        let mut percent = BTreeMap::new();
        if let Some(c) = cpu_percent {
            percent.insert(Resource::Cpu, pct(c, cpu_limit_percent.unwrap_or(100.0 * host_cores())));
        }
        if let Some(m) = memory_limit_bytes {
            percent.insert(Resource::Memory, pct(st.memory_bytes as f64, m as f64));
        }
        if let Some(p) = l.pids {
            percent.insert(Resource::Pids, pct(st.pids as f64, f64::from(p)));
        }
        if let Some(d) = l.disk_bytes {
            percent.insert(Resource::Disk, pct(st.disk_bytes as f64, d as f64));
        }
        let over = percent
            .iter()
            .filter(|(r, v)| policy.threshold(**r).is_some_and(|t| **v >= f64::from(t)))
            .filter(|(r, _)| state == State::Running || **r == Resource::Disk)
            .map(|(r, _)| *r)
            .collect();
        Usage {
            user: rec.user.clone(),
            workspace_id: rec.workspace_id.clone(),
            backend: rec.backend,
            state,
            cpu_percent,
            cpu_limit_percent,
            memory_bytes: st.memory_bytes,
            memory_limit_bytes,
            pids: st.pids,
            pids_limit: l.pids,
            disk_bytes: st.disk_bytes,
            disk_limit_bytes: l.disk_bytes,
            percent,
            over,
            policy,
        }
    }

    /// One monitor pass over every running workspace: sample, compare, and act on thresholds
    /// exceeded for longer than the grace time (once per episode: a workspace must come back
    /// under a threshold before the same resource triggers again). Returns what it did.
    pub async fn monitor_tick(&self) -> Result<Vec<Enforcement>> {
        let mut done = Vec::new();
        for (rec, backend, state) in self.list_with_state().await? {
            if state != State::Running {
                self.monitor.forget(&rec.user);
                self.monitor.forget_usage(&rec.user);
                continue;
            }
            let usage = match self.usage_of(&rec, backend.as_ref(), state, Duration::ZERO).await {
                Ok(u) => u,
                Err(Error::NotFound(_)) => continue,
                Err(e) => {
                    warn!(user = %rec.user, error = %e, "monitor: sampling failed");
                    continue;
                }
            };
            let now = Instant::now();
            let due = self.monitor.with(&rec.user, |t| {
                t.over_since.retain(|r, _| usage.over.contains(r));
                t.acted.retain(|r| usage.over.contains(r));
                let mut due = None;
                for r in &usage.over {
                    let since = *t.over_since.entry(*r).or_insert(now);
                    if due.is_none() && !t.acted.contains(r) && now.duration_since(since) >= usage.policy.grace() {
                        t.acted.push(*r);
                        due = Some(*r);
                    }
                }
                due
            });
            let Some(resource) = due else { continue };
            let enforcement = Enforcement {
                user: rec.user.clone(),
                action: usage.policy.action,
                resource,
                percent: usage.percent.get(&resource).copied().unwrap_or(0.0),
                threshold: usage.policy.threshold(resource).unwrap_or(0),
            };
            if let Err(e) = self.enforce(&enforcement, &usage).await {
                warn!(user = %rec.user, error = %e, "monitor: applying the policy failed");
                continue;
            }
            done.push(enforcement);
        }
        Ok(done)
    }

    async fn enforce(&self, e: &Enforcement, usage: &Usage) -> Result<()> {
        warn!(
            user = %e.user,
            workspace = %usage.workspace_id,
            resource = %e.resource,
            percent = e.percent,
            threshold = e.threshold,
            action = %e.action,
            "monitor: {} at {}% of its limit (threshold {}%) for {} s: {}",
            e.resource,
            e.percent,
            e.threshold,
            usage.policy.grace_secs,
            e.action
        );
        match e.action {
            Action::Warn => {}
            Action::Stop => {
                self.stop(&e.user).await?;
                self.monitor.forget(&e.user);
            }
            Action::Kill => {
                self.stop(&e.user).await?;
                self.monitor.forget(&e.user);
                self.start(&e.user).await?;
            }
        }
        let detail = json!({
            "action": e.action,
            "resource": e.resource,
            "percent": e.percent,
            "threshold": e.threshold,
            "grace_secs": usage.policy.grace_secs,
            "memory_bytes": usage.memory_bytes,
            "pids": usage.pids,
            "disk_bytes": usage.disk_bytes,
            "cpu_percent": usage.cpu_percent,
        });
        self.audit(Some(&e.user), "monitor", detail).await
    }

    /// Runs [`Engine::monitor_tick`] every `[monitor] interval_secs` until the task is dropped
    /// (`warren serve` spawns it); returns at once when the interval is 0.
    pub async fn run_monitor(&self) {
        let secs = self.config().monitor.interval_secs;
        if secs == 0 {
            info!("resource monitor off ([monitor] interval_secs = 0)");
            return;
        }
        info!(interval_secs = secs, "resource monitor on");
        let mut every = tokio::time::interval(Duration::from_secs(secs));
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            every.tick().await;
            if let Err(e) = self.monitor_tick().await {
                warn!(error = %e, "monitor pass failed");
            }
        }
    }

    /// Refuses a write of `extra` bytes through the API that would take the workspace over its
    /// disk limit. The size of the home is the monitor's sample when it is younger than
    /// [`DISK_SAMPLE_TTL`], else measured now.
    pub(crate) async fn check_disk_quota(
        &self,
        rec: &warren_store::WorkspaceRecord,
        backend: &std::sync::Arc<dyn warren_core::Backend>,
        extra: u64,
    ) -> Result<()> {
        let Some(limit) = rec.limits.disk_bytes else { return Ok(()) };
        let cached = self.monitor.with(&rec.user, |t| t.disk.filter(|(at, _)| at.elapsed() < DISK_SAMPLE_TTL));
        let used = match cached {
            Some((_, used)) => used,
            None => {
                let Some(files) = backend.host_files(&crate::spec_of(rec)) else { return Ok(()) };
                let used =
                    warren_core::backend::blocking(move || Ok(warren_core::backend::disk_usage(&files.dir))).await?;
                self.monitor.with(&rec.user, |t| t.disk = Some((Instant::now(), used)));
                used
            }
        };
        if used.saturating_add(extra) > limit {
            return Err(Error::Exhausted(format!(
                "disk quota of the workspace of user {}: {used} bytes used + {extra} to write > limit {limit} bytes; \
                 delete files or raise the disk limit",
                rec.user
            )));
        }
        // Count the write against the sample until the next one (an overwrite counts in full:
        // the check errs on the safe side).
        self.monitor.with(&rec.user, |t| {
            if let Some((at, u)) = t.disk {
                t.disk = Some((at, u.saturating_add(extra)));
            }
        });
        Ok(())
    }
}
