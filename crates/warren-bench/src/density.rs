//! Density: N idle ns workspaces running at once on this host, what each costs in host memory,
//! and what a cold cycle costs at that density against the same cycle on an empty host.
//!
//! The workspaces are started one after the other through the ns backend (the `Backend` trait,
//! as the other warren rows: backend cost only), with hand-built specs on uids
//! `UID_BASE + i`. Memory per workspace is reported four ways (see [`Memory`]); the headline is
//! the inits' proportional set size plus the growth of the kernel's unreclaimable memory (slab,
//! kernel stacks, page tables, per-cpu) and of shmem (the tmpfs roots), divided by N. It counts
//! what the workspaces pin and nothing the kernel can drop, and unlike `MemAvailable` it barely
//! moves when other jobs on the host allocate or free page cache.
//!
//! Every workspace is destroyed at the end, after an error and on SIGINT/SIGTERM.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;
use warren_backend_ns::{HelperCmd, NsBackend};
use warren_core::{Backend, ExecRequest, WorkspaceSpec};

use crate::stats::{fmt_ms, summarize, Summary};

/// Host uids of the density workspaces: `UID_BASE ..` (apart from every test's range).
pub const UID_BASE: u32 = 3_500_000;
/// The target: host memory per idle workspace, KiB.
pub const TARGET_KIB: f64 = 1024.0;
const OP_TIMEOUT: Duration = Duration::from_secs(60);

/// What to run.
#[derive(Clone, Debug)]
pub struct DensityArgs {
    /// Workspaces to keep running.
    pub n: usize,
    /// Timed cold cycles at zero and at density (after 2 warm-up ones).
    pub cycles: usize,
    /// Timed execs of `true` at density, spread over the running workspaces.
    pub execs: usize,
    /// First uid (default [`UID_BASE`]); `n + 1` uids from it are used.
    pub uid_base: u32,
}

/// `/proc/meminfo` fields, KiB.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct MemInfo {
    /// MemTotal.
    pub total: u64,
    /// MemAvailable.
    pub available: u64,
    /// Shmem (tmpfs pages).
    pub shmem: u64,
    /// SUnreclaim.
    pub slab_unreclaimable: u64,
    /// SReclaimable.
    pub slab_reclaimable: u64,
    /// KernelStack.
    pub kernel_stack: u64,
    /// PageTables.
    pub page_tables: u64,
    /// Percpu.
    pub percpu: u64,
}

impl MemInfo {
    /// Parses `/proc/meminfo` text.
    pub fn parse(text: &str) -> Self {
        let mut m = BTreeMap::new();
        for l in text.lines() {
            if let Some((k, v)) = l.split_once(':') {
                if let Some(n) = v.split_whitespace().next().and_then(|n| n.parse::<u64>().ok()) {
                    m.insert(k.trim().to_owned(), n);
                }
            }
        }
        let g = |k: &str| m.get(k).copied().unwrap_or(0);
        Self {
            total: g("MemTotal"),
            available: g("MemAvailable"),
            shmem: g("Shmem"),
            slab_unreclaimable: g("SUnreclaim"),
            slab_reclaimable: g("SReclaimable"),
            kernel_stack: g("KernelStack"),
            page_tables: g("PageTables"),
            percpu: g("Percpu"),
        }
    }

    /// Reads this host's.
    pub fn read() -> Self {
        Self::parse(&std::fs::read_to_string("/proc/meminfo").unwrap_or_default())
    }

    /// Memory in use: MemTotal - MemAvailable.
    pub fn used(&self) -> u64 {
        self.total.saturating_sub(self.available)
    }

    /// Kernel memory nothing can reclaim: unreclaimable slab, stacks, page tables, per-cpu.
    pub fn kernel_pinned(&self) -> u64 {
        self.slab_unreclaimable + self.kernel_stack + self.page_tables + self.percpu
    }
}

/// Bytes in use per slab cache (`active_objs * objsize` of `/proc/slabinfo`).
pub fn parse_slabinfo(text: &str) -> BTreeMap<String, u64> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.starts_with("slabinfo"))
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            let name = f.next()?;
            let active: u64 = f.next()?.parse().ok()?;
            let _total = f.next()?;
            let size: u64 = f.next()?.parse().ok()?;
            Some((name.to_owned(), active * size))
        })
        .collect()
}

/// Slab caches that grew most from `a` to `b`: (name, KiB per workspace), largest first.
fn slab_growth(a: &BTreeMap<String, u64>, b: &BTreeMap<String, u64>, n: usize, top: usize) -> Vec<(String, f64)> {
    let mut v: Vec<(String, i128)> = b
        .iter()
        .map(|(k, after)| (k.clone(), i128::from(*after) - i128::from(a.get(k).copied().unwrap_or(0))))
        .filter(|(_, d)| *d > 0)
        .collect();
    v.sort_by_key(|y| std::cmp::Reverse(y.1));
    v.into_iter().take(top).map(|(k, d)| (k, kib(d / 1024, n))).collect()
}

/// `num_cgroups` of the memory controller in `/proc/cgroups` (live and dying ones alike).
pub fn memory_cgroups(text: &str) -> Option<u64> {
    text.lines().find_map(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        (f.first() == Some(&"memory")).then(|| f.get(2)?.parse().ok()).flatten()
    })
}

fn read_memory_cgroups() -> Option<u64> {
    memory_cgroups(&std::fs::read_to_string("/proc/cgroups").ok()?)
}

/// The `Pss:` line of `/proc/<pid>/smaps_rollup`, KiB.
pub fn parse_pss(text: &str) -> Option<u64> {
    text.lines().find_map(|l| l.strip_prefix("Pss:")).and_then(|v| v.split_whitespace().next()?.parse().ok())
}

/// Memory per workspace, KiB, four ways.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Memory {
    /// The headline: `pss + kernel + shmem` below.
    pub per_workspace_kib: f64,
    /// The inits' proportional set size (smaps_rollup `Pss`), mean: their private pages plus their
    /// share of the pages they share (the binary's text, libc).
    pub pss_kib: f64,
    /// Growth of the kernel's unreclaimable memory (SUnreclaim + KernelStack + PageTables +
    /// Percpu) / N: namespaces, mounts, cgroups, sockets, the inits' page tables and stacks.
    pub kernel_kib: f64,
    /// Growth of Shmem / N: the tmpfs root, `/tmp` and `/dev` of each workspace.
    pub shmem_kib: f64,
    /// Growth of MemTotal - MemAvailable / N: everything, reclaimable caches included, and
    /// whatever else the host did meanwhile (noisy on a shared machine).
    pub used_kib: f64,
    /// The workspace cgroups' memory usage, mean (v1 `memory.usage_in_bytes`, v2
    /// `memory.current`: what the workspace is charged for against its limit).
    pub cgroup_kib: f64,
    /// Growth of reclaimable slab / N (dentries, inodes): reported, not counted.
    pub slab_reclaimable_kib: f64,
    /// How many inits PSS could be read for.
    pub pss_read: usize,
    /// The slab caches that grew most while the workspaces ran, KiB per workspace (where the
    /// kernel part goes; other jobs on the host show up here too).
    pub slab_growth_kib: Vec<(String, f64)>,
    /// Memory cgroups the kernel keeps (live and dying; `/proc/cgroups`) before, running, after:
    /// a removed cgroup lingers while pages are still charged to it.
    pub memory_cgroups: [Option<u64>; 3],
}

/// Kernel limits that bound density, as read before the run.
#[derive(Clone, Debug, Default, Serialize)]
pub struct HostLimits {
    /// kernel.pid_max.
    pub pid_max: u64,
    /// Processes and threads running before the run.
    pub tasks_before: u64,
    /// kernel.threads-max.
    pub threads_max: u64,
    /// user.max_user_namespaces.
    pub max_user_namespaces: u64,
    /// user.max_pid_namespaces.
    pub max_pid_namespaces: u64,
    /// user.max_mnt_namespaces.
    pub max_mnt_namespaces: u64,
    /// fs.mount-max (per mount namespace).
    pub mount_max: u64,
    /// fs.file-max.
    pub file_max: u64,
    /// This process's RLIMIT_NOFILE (soft).
    pub nofile: u64,
    /// MemTotal, KiB.
    pub mem_total_kib: u64,
    /// Warnings: a limit below what N workspaces need.
    pub warnings: Vec<String>,
}

fn read_num(p: &str) -> u64 {
    std::fs::read_to_string(p).ok().and_then(|s| s.split_whitespace().next()?.parse().ok()).unwrap_or(0)
}

impl HostLimits {
    /// Reads the limits and warns about those N workspaces would exceed.
    pub fn read(n: usize) -> Self {
        let tasks_before = std::fs::read_dir("/proc")
            .map(|rd| {
                rd.flatten()
                    .filter(|e| e.file_name().to_string_lossy().bytes().all(|b| b.is_ascii_digit()))
                    .map(|e| std::fs::read_dir(e.path().join("task")).map(|t| t.count() as u64).unwrap_or(1))
                    .sum()
            })
            .unwrap_or(0);
        let nofile =
            nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE).map(|(s, _)| s).unwrap_or(0);
        let mut l = Self {
            pid_max: read_num("/proc/sys/kernel/pid_max"),
            tasks_before,
            threads_max: read_num("/proc/sys/kernel/threads-max"),
            max_user_namespaces: read_num("/proc/sys/user/max_user_namespaces"),
            max_pid_namespaces: read_num("/proc/sys/user/max_pid_namespaces"),
            max_mnt_namespaces: read_num("/proc/sys/user/max_mnt_namespaces"),
            mount_max: read_num("/proc/sys/fs/mount-max"),
            file_max: read_num("/proc/sys/fs/file-max"),
            nofile,
            mem_total_kib: MemInfo::read().total,
            warnings: vec![],
        };
        let need = n as u64 + 64;
        for (name, have) in [
            ("kernel.pid_max minus running tasks", l.pid_max.saturating_sub(l.tasks_before)),
            ("kernel.threads-max minus running tasks", l.threads_max.saturating_sub(l.tasks_before)),
            ("user.max_user_namespaces", l.max_user_namespaces),
            ("user.max_pid_namespaces", l.max_pid_namespaces),
            ("user.max_mnt_namespaces", l.max_mnt_namespaces),
        ] {
            if have < need {
                l.warnings.push(format!("{name} is {have}: {n} workspaces need about {need}"));
            }
        }
        l
    }
}

/// The outcome of a density run.
#[derive(Clone, Debug, Default, Serialize)]
pub struct DensityReport {
    /// Workspaces asked for.
    pub target: usize,
    /// Workspaces running at the peak.
    pub running: usize,
    /// Where it broke, if it did: the workspace and the error.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub broke_at: Option<String>,
    /// Kernel limits read before the run.
    pub limits: HostLimits,
    /// /proc/meminfo before the first start.
    pub meminfo_before: MemInfo,
    /// ... with every workspace running.
    pub meminfo_running: MemInfo,
    /// ... after every workspace was destroyed.
    pub meminfo_after: MemInfo,
    /// Memory per workspace.
    pub memory: Memory,
    /// Each start of the ramp (`create` + `start`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ramp_start: Option<Summary>,
    /// p50 of the starts per tenth of the ramp (does start slow down as the host fills?), ms.
    pub ramp_start_p50_by_tenth_ms: Vec<f64>,
    /// Cold cycle (create + start + exec true + stop + destroy of one more workspace) on an empty host.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cold_cycle_zero: Option<Summary>,
    /// The same with `running` workspaces running.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cold_cycle_dense: Option<Summary>,
    /// Per-step p50s of the cycles, ms (`zero`/`dense` -> step -> p50).
    pub cycle_steps_p50_ms: BTreeMap<String, BTreeMap<String, f64>>,
    /// `exec true` in running workspaces at density.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exec_dense: Option<Summary>,
    /// Destroying each workspace at the end.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub teardown: Option<Summary>,
    /// Workspaces whose destroy failed.
    pub teardown_errors: Vec<String>,
    /// Stopped early by SIGINT/SIGTERM.
    pub interrupted: bool,
    /// Wall time of the whole run, seconds.
    pub total_secs: f64,
    /// `PASS` when every workspace ran and memory per workspace is within the target.
    pub result: &'static str,
    /// Other errors (a cold cycle or exec that failed).
    pub errors: Vec<String>,
    /// Cgroups of the workspaces still present after the teardown (should be none).
    pub leftover_cgroups: Vec<String>,
}

impl DensityReport {
    /// Cold-cycle p50 at density / at zero.
    pub fn slowdown(&self) -> Option<f64> {
        match (&self.cold_cycle_zero, &self.cold_cycle_dense) {
            (Some(z), Some(d)) if z.p50_ms > 0.0 => Some(d.p50_ms / z.p50_ms),
            _ => None,
        }
    }

    /// A markdown section.
    pub fn markdown(&self) -> String {
        let m = &self.memory;
        let mut s = format!(
            "Density: {} of {} idle ns workspaces running{}: **{:.0} KiB per workspace** (target <= {:.0} KiB): **{}**\n\n",
            self.running,
            self.target,
            self.broke_at.as_deref().map(|b| format!(" (broke at {b})")).unwrap_or_default(),
            m.per_workspace_kib,
            TARGET_KIB,
            self.result
        );
        s.push_str("| memory per workspace | KiB |\n| --- | ---: |\n");
        for (k, v) in [
            ("**counted: init PSS + kernel unreclaimable + shmem**", m.per_workspace_kib),
            ("init PSS (smaps_rollup)", m.pss_kib),
            ("kernel unreclaimable growth (SUnreclaim + KernelStack + PageTables + Percpu) / N", m.kernel_kib),
            ("shmem growth / N (tmpfs roots)", m.shmem_kib),
            ("not counted: reclaimable slab growth / N (dentries, inodes)", m.slab_reclaimable_kib),
            ("cross-check: cgroup memory usage, mean", m.cgroup_kib),
            ("cross-check: MemTotal - MemAvailable growth / N (noisy: whole host)", m.used_kib),
        ] {
            s.push_str(&format!("| {k} | {v:.0} |\n"));
        }
        if !m.slab_growth_kib.is_empty() {
            let t: Vec<String> = m.slab_growth_kib.iter().map(|(k, v)| format!("{k} {v:.1}")).collect();
            s.push_str(&format!("\nSlab caches that grew most (KiB per workspace): {}.\n", t.join(", ")));
        }
        if let [Some(a), Some(b), Some(c)] = m.memory_cgroups {
            s.push_str(&format!(
                "Memory cgroups in the kernel (live and dying): {a} before, {b} running, {c} after the teardown.\n"
            ));
        }
        let after = &self.meminfo_after;
        let leak =
            |f: fn(&MemInfo) -> u64| (i128::from(f(after)) - i128::from(f(&self.meminfo_before))) as f64 / 1024.0;
        s.push_str(&format!(
            "After the teardown, against before the ramp: kernel unreclaimable {:+.1} MiB, in use (MemTotal - MemAvailable) {:+.1} MiB.\n",
            leak(MemInfo::kernel_pinned),
            leak(MemInfo::used)
        ));
        let cell = |x: &Option<Summary>| {
            x.as_ref()
                .map(|x| format!("{} | {} | {}", fmt_ms(x.p50_ms), fmt_ms(x.p99_ms), x.n))
                .unwrap_or("- | - | 0".into())
        };
        s.push_str("\n| at density | p50 | p99 | n |\n| --- | ---: | ---: | ---: |\n");
        s.push_str(&format!("| cold cycle, empty host | {} |\n", cell(&self.cold_cycle_zero)));
        s.push_str(&format!("| cold cycle, {} running | {} |\n", self.running, cell(&self.cold_cycle_dense)));
        s.push_str(&format!("| exec true, {} running | {} |\n", self.running, cell(&self.exec_dense)));
        s.push_str(&format!("| start during the ramp (create + start) | {} |\n", cell(&self.ramp_start)));
        s.push_str(&format!("| destroy at the end | {} |\n", cell(&self.teardown)));
        if let Some(x) = self.slowdown() {
            s.push_str(&format!("\nCold cycle p50 at density / on an empty host: {x:.2}x."));
        }
        if !self.ramp_start_p50_by_tenth_ms.is_empty() {
            let t: Vec<String> = self.ramp_start_p50_by_tenth_ms.iter().map(|v| format!("{v:.1}")).collect();
            s.push_str(&format!(" Start p50 per tenth of the ramp (ms): {}.", t.join(", ")));
        }
        for (k, steps) in &self.cycle_steps_p50_ms {
            let t: Vec<String> = steps.iter().map(|(n, v)| format!("{n} {v:.2}")).collect();
            s.push_str(&format!("\nCycle p50 by step ({k}, ms): {}.", t.join(", ")));
        }
        for w in &self.limits.warnings {
            s.push_str(&format!("\n- limit: {w}"));
        }
        for e in self.errors.iter().chain(&self.teardown_errors) {
            s.push_str(&format!("\n- error: {e}"));
        }
        for e in &self.leftover_cgroups {
            s.push_str(&format!("\n- left behind: cgroup {e}"));
        }
        if self.interrupted {
            s.push_str("\n- interrupted (SIGINT/SIGTERM): the numbers cover what ran");
        }
        s.push_str(&format!("\n\nTotal {:.1} s.\n", self.total_secs));
        s
    }
}

fn spec(uid_base: u32, i: usize) -> Result<WorkspaceSpec, String> {
    let uid = uid_base.checked_add(u32::try_from(i).map_err(|e| e.to_string())?).ok_or("uid overflow")?;
    crate::warren::spec(&format!("dens_{i:05}"), uid)
}

async fn step<T>(what: &str, f: impl std::future::Future<Output = warren_core::Result<T>>) -> Result<T, String> {
    match tokio::time::timeout(OP_TIMEOUT, f).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(format!("{what}: {e}")),
        Err(_) => Err(format!("{what}: no answer within {} s", OP_TIMEOUT.as_secs())),
    }
}

fn true_req() -> ExecRequest {
    ExecRequest { timeout: Some(Duration::from_secs(30)), ..ExecRequest::new(["/bin/true"]) }
}

const STEPS: [&str; 5] = ["create", "start", "exec", "stop", "destroy"];

/// Cold cycles of workspace `spec` (a fresh id each time): create, start, exec true, stop, destroy.
async fn cycles(
    b: &dyn Backend,
    uid: u32,
    user: &str,
    warmup: usize,
    n: usize,
    stop: &AtomicBool,
) -> Result<(Vec<Duration>, BTreeMap<String, f64>), String> {
    let mut total = Vec::new();
    let mut by_step: BTreeMap<&str, Vec<Duration>> = BTreeMap::new();
    for i in 0..warmup + n {
        if stop.load(Ordering::Relaxed) {
            break;
        }
        let spec = crate::warren::spec(user, uid)?;
        let mut t = [Duration::ZERO; 5];
        let run = async {
            let s = Instant::now();
            step("create", b.create(&spec)).await?;
            t[0] = s.elapsed();
            let s = Instant::now();
            step("start", b.start(&spec)).await?;
            t[1] = s.elapsed();
            let s = Instant::now();
            let out = step("exec", b.exec(&spec, true_req())).await?;
            t[2] = s.elapsed();
            if out.exit_code != 0 {
                return Err(format!("exec true ended with {}", out.exit_code));
            }
            let s = Instant::now();
            step("stop", b.stop(&spec)).await?;
            t[3] = s.elapsed();
            let s = Instant::now();
            step("destroy", b.destroy(&spec)).await?;
            t[4] = s.elapsed();
            Ok::<_, String>(())
        };
        if let Err(e) = run.await {
            let _ = tokio::time::timeout(OP_TIMEOUT, b.destroy(&spec)).await;
            return Err(format!("cold cycle {}: {e}", i + 1));
        }
        if i >= warmup {
            total.push(t.iter().sum());
            for (k, d) in STEPS.iter().zip(t) {
                by_step.entry(k).or_default().push(d);
            }
        }
    }
    let p50 = by_step.iter().filter_map(|(k, v)| summarize(v).map(|s| ((*k).to_owned(), s.p50_ms))).collect();
    Ok((total, p50))
}

fn kib(delta: i128, n: usize) -> f64 {
    (delta as f64 / n.max(1) as f64 * 10.0).round() / 10.0
}

/// Opens the ns backend on `state`, or says why it cannot run here.
pub fn backend(state: &Path) -> Result<NsBackend, String> {
    NsBackend::probe().map_err(|why| format!("the ns backend cannot run here: {why}"))?;
    let helper = HelperCmd::locate().map_err(|e| format!("finding the ns helper: {e}"))?;
    NsBackend::new(state, Some(helper)).map_err(|e| format!("opening the ns backend: {e}"))
}

/// Runs the density measurement on the ns backend at `state` (a fresh directory).
pub async fn run(args: &DensityArgs, state: &Path, stop: Arc<AtomicBool>) -> Result<DensityReport, String> {
    let started = Instant::now();
    let b: Arc<dyn Backend> = Arc::new(backend(state)?);
    let n = args.n;
    let mut rep = DensityReport { target: n, limits: HostLimits::read(n), ..Default::default() };
    for w in &rep.limits.warnings {
        eprintln!("warren-bench density: warning: {w}");
    }
    let extra_uid = args.uid_base.saturating_add(u32::try_from(n).unwrap_or(u32::MAX));

    eprintln!("warren-bench density: cold cycles on an empty host ({} + 2 warm-up)", args.cycles);
    match cycles(&*b, extra_uid, "dens_cycle", 2, args.cycles, &stop).await {
        Ok((t, steps)) => {
            rep.cold_cycle_zero = summarize(&t);
            rep.cycle_steps_p50_ms.insert("empty host".into(), steps);
        }
        Err(e) => rep.errors.push(format!("empty host: {e}")),
    }

    rep.meminfo_before = MemInfo::read();
    let slab_before = parse_slabinfo(&std::fs::read_to_string("/proc/slabinfo").unwrap_or_default());
    let cgroups_before = read_memory_cgroups();
    let mut specs: Vec<WorkspaceSpec> = Vec::with_capacity(n);
    let mut starts = Vec::with_capacity(n);
    eprintln!("warren-bench density: starting {n} workspaces");
    let ramp = async {
        for i in 0..n {
            if stop.load(Ordering::Relaxed) {
                break;
            }
            let s = spec(args.uid_base, i)?;
            specs.push(s.clone());
            let t = Instant::now();
            let r = async {
                step("create", b.create(&s)).await?;
                step("start", b.start(&s)).await
            }
            .await;
            match r {
                Ok(_) => starts.push(t.elapsed()),
                Err(e) => return Err(format!("workspace {} of {n}: {e}", i + 1)),
            }
            if (i + 1).is_multiple_of(100) {
                eprintln!("warren-bench density: {} running", i + 1);
            }
        }
        Ok::<_, String>(())
    };
    if let Err(e) = ramp.await {
        eprintln!("warren-bench density: broke at {e}");
        rep.broke_at = Some(e);
    }
    rep.running = starts.len();
    rep.ramp_start = summarize(&starts);
    if starts.len() >= 10 {
        rep.ramp_start_p50_by_tenth_ms =
            starts.chunks(starts.len().div_ceil(10)).filter_map(|c| summarize(c).map(|s| s.p50_ms)).collect();
    }

    if rep.running > 0 && !stop.load(Ordering::Relaxed) {
        // Let the inits settle (their pages touched, deferred frees done) before measuring.
        tokio::time::sleep(Duration::from_secs(2)).await;
        rep.meminfo_running = MemInfo::read();
        let slab_running = parse_slabinfo(&std::fs::read_to_string("/proc/slabinfo").unwrap_or_default());
        let cgroups_running = read_memory_cgroups();
        let running = &specs[..rep.running];
        let (mut pss, mut pss_read, mut cgroup) = (0u64, 0usize, 0u64);
        for s in running {
            if let Ok(st) = b.status(s).await {
                if let Some(pid) = st.pid {
                    if let Some(p) =
                        std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).ok().as_deref().and_then(parse_pss)
                    {
                        pss += p;
                        pss_read += 1;
                    }
                }
            }
            if let Ok(st) = b.stats(s).await {
                cgroup += st.memory_bytes / 1024;
            }
        }
        let (a, z) = (&rep.meminfo_before, &rep.meminfo_running);
        let d = |f: fn(&MemInfo) -> u64| i128::from(f(z)) - i128::from(f(a));
        let r = rep.running;
        let mut m = Memory {
            pss_kib: kib(i128::from(pss), pss_read),
            kernel_kib: kib(d(MemInfo::kernel_pinned), r),
            shmem_kib: kib(d(|m| m.shmem), r),
            used_kib: kib(d(MemInfo::used), r),
            cgroup_kib: kib(i128::from(cgroup), r),
            slab_reclaimable_kib: kib(d(|m| m.slab_reclaimable), r),
            pss_read,
            slab_growth_kib: slab_growth(&slab_before, &slab_running, rep.running, 8),
            memory_cgroups: [cgroups_before, cgroups_running, None],
            ..Default::default()
        };
        m.per_workspace_kib = ((m.pss_kib + m.kernel_kib.max(0.0) + m.shmem_kib.max(0.0)) * 10.0).round() / 10.0;
        rep.memory = m;

        eprintln!("warren-bench density: cold cycles with {} running", rep.running);
        match cycles(&*b, extra_uid, "dens_cycle", 2, args.cycles, &stop).await {
            Ok((t, steps)) => {
                rep.cold_cycle_dense = summarize(&t);
                rep.cycle_steps_p50_ms.insert(format!("{} running", rep.running), steps);
            }
            Err(e) => rep.errors.push(format!("at density: {e}")),
        }
        let mut ex = Vec::new();
        for k in 0..args.execs {
            if stop.load(Ordering::Relaxed) {
                break;
            }
            let s = &running[(k * 7919) % running.len()];
            let t = Instant::now();
            match step("exec", b.exec(s, true_req())).await {
                Ok(o) if o.exit_code == 0 => ex.push(t.elapsed()),
                Ok(o) => rep.errors.push(format!("exec true in {} ended with {}", s.user, o.exit_code)),
                Err(e) => rep.errors.push(format!("exec in {}: {e}", s.user)),
            }
        }
        rep.exec_dense = summarize(&ex);
    }

    eprintln!("warren-bench density: destroying {} workspaces", specs.len());
    let mut downs = Vec::with_capacity(specs.len());
    for s in &specs {
        let t = Instant::now();
        match step("destroy", b.destroy(s)).await {
            Ok(()) => downs.push(t.elapsed()),
            Err(e) => rep.teardown_errors.push(format!("{}: {e}", s.user)),
        }
    }
    rep.teardown = summarize(&downs);
    let ids: Vec<String> = specs.iter().map(|s| s.id.to_string()).collect();
    rep.leftover_cgroups = leftover_cgroups(&ids).iter().map(|p| p.display().to_string()).collect();
    tokio::time::sleep(Duration::from_secs(1)).await;
    rep.meminfo_after = MemInfo::read();
    rep.memory.memory_cgroups[2] = read_memory_cgroups();
    rep.interrupted = stop.load(Ordering::Relaxed);
    rep.total_secs = (started.elapsed().as_secs_f64() * 10.0).round() / 10.0;
    rep.result = if rep.running == n
        && rep.broke_at.is_none()
        && rep.memory.per_workspace_kib > 0.0
        && rep.memory.per_workspace_kib <= TARGET_KIB
        && rep.errors.is_empty()
        && rep.teardown_errors.is_empty()
        && rep.leftover_cgroups.is_empty()
    {
        "PASS"
    } else {
        "MISS"
    };
    Ok(rep)
}

/// The cgroups named `warren/<id>` of `specs` that still exist (after a run: should be none).
pub fn leftover_cgroups(ids: &[String]) -> Vec<PathBuf> {
    let mut left = Vec::new();
    for root in ["/sys/fs/cgroup/memory", "/sys/fs/cgroup/pids", "/sys/fs/cgroup"] {
        for id in ids {
            let p = Path::new(root).join("warren").join(id);
            if p.is_dir() {
                left.push(p);
            }
        }
    }
    left
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn meminfo_and_pss_parse() {
        let m = MemInfo::parse(
            "MemTotal:       24684000 kB\nMemFree:   100 kB\nMemAvailable:   23900000 kB\nShmem:   8000 kB\n\
             SReclaimable:  5 kB\nSUnreclaim:   300 kB\nKernelStack:  20 kB\nPageTables:   40 kB\nPercpu:  7 kB\n",
        );
        assert_eq!(m.used(), 784_000);
        assert_eq!(m.kernel_pinned(), 367);
        assert_eq!((m.shmem, m.slab_reclaimable), (8000, 5));
        assert_eq!(MemInfo::parse("garbage"), MemInfo::default());
        assert_eq!(parse_pss("Rss:  10 kB\nPss:                 123 kB\nPss_Anon: 3 kB\n"), Some(123));
        assert_eq!(parse_pss("Rss: 1 kB\n"), None);
        let slab = parse_slabinfo(
            "slabinfo - version: 2.1\n# name <active_objs> ...\nmnt_cache 354 357 384 21 2 : tunables 0 0 0\n\
             kmalloc-1k 100 200 1024 16 4 : tunables 0 0 0\n",
        );
        assert_eq!(slab.get("mnt_cache"), Some(&(354 * 384)));
        let mut more = slab.clone();
        more.insert("kmalloc-1k".into(), 100 * 1024 + 10 * 1024 * 1024);
        more.insert("new".into(), 2048 * 1024);
        assert_eq!(slab_growth(&slab, &more, 1024, 8), vec![("kmalloc-1k".into(), 10.0), ("new".into(), 2.0)]);
        assert_eq!(
            memory_cgroups("#subsys_name\thierarchy\tnum_cgroups\tenabled\ncpu\t1\t11\t1\nmemory\t4\t1082\t1\n"),
            Some(1082)
        );
        assert!(read_memory_cgroups().is_some());
        let live = MemInfo::read();
        assert!(live.total > 0 && live.available > 0 && live.kernel_pinned() > 0, "{live:?}");
        let own = std::fs::read_to_string("/proc/self/smaps_rollup").expect("smaps_rollup");
        assert!(parse_pss(&own).is_some_and(|p| p > 0));
    }

    /// A small density run on the real ns backend: every workspace runs, memory is measured,
    /// and nothing is left behind (processes, cgroups, homes).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_small_density_run_measures_and_cleans_up() {
        if !nix::unistd::geteuid().is_root() {
            panic!("this test needs root (the ns backend): run it as root, as CI does");
        }
        let dir = tempfile::Builder::new().prefix("wbd-").tempdir().expect("tempdir");
        std::fs::set_permissions(dir.path(), std::os::unix::fs::PermissionsExt::from_mode(0o711)).expect("chmod");
        let args = DensityArgs { n: 5, cycles: 2, execs: 5, uid_base: UID_BASE };
        let rep = run(&args, dir.path(), Arc::new(AtomicBool::new(false))).await.expect("runs");
        assert_eq!(rep.running, 5, "{rep:?}");
        assert!(rep.broke_at.is_none() && rep.errors.is_empty() && rep.teardown_errors.is_empty(), "{rep:?}");
        assert_eq!(rep.memory.pss_read, 5);
        assert!(rep.memory.pss_kib > 0.0 && rep.memory.cgroup_kib > 0.0, "{:?}", rep.memory);
        assert_eq!(rep.cold_cycle_zero.as_ref().map(|s| s.n), Some(2));
        assert_eq!(rep.cold_cycle_dense.as_ref().map(|s| s.n), Some(2));
        assert_eq!(rep.exec_dense.as_ref().map(|s| s.n), Some(5));
        assert_eq!(rep.teardown.as_ref().map(|s| s.n), Some(5));
        let homes = std::fs::read_dir(dir.path().join("workspaces")).expect("workspaces dir").count();
        assert_eq!(homes, 0, "every home is removed");
        let runs = std::fs::read_dir(dir.path().join("run/ns")).expect("run dir").count();
        assert_eq!(runs, 0, "every run directory is removed");
        let md = rep.markdown();
        assert!(md.contains("Density: 5 of 5 idle ns workspaces running"), "{md}");
        assert!(rep.leftover_cgroups.is_empty(), "{:?}", rep.leftover_cgroups);
        assert!(crate::mounts_below(dir.path()).is_empty());
    }
}
