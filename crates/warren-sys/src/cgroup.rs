//! cgroups v1 and v2 behind one type, picked at run time.
//!
//! * v2 (unified, `/sys/fs/cgroup/cgroup.controllers` exists): one directory
//!   `/sys/fs/cgroup/<name>`; limits in `memory.max`, `memory.swap.max`, `cpu.max`, `pids.max`;
//!   freeze with `cgroup.freeze`; kill with `cgroup.kill`.
//! * v1 (legacy or hybrid): one directory per controller hierarchy
//!   (`/sys/fs/cgroup/{memory,cpu,cpuacct,pids,freezer}/<name>`); limits in
//!   `memory.limit_in_bytes` (+ `memory.memsw.limit_in_bytes` when swap accounting is on),
//!   `cpu.cfs_quota_us`/`cpu.cfs_period_us`, `pids.max`; freeze with `freezer.state`; kill by
//!   freezing, signalling every member and thawing, until empty.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::{Result, SysError};

const ROOT: &str = "/sys/fs/cgroup";
const V1_CONTROLLERS: &[&str] = &["memory", "cpu", "cpuacct", "pids", "freezer"];
const CPU_PERIOD_US: u64 = 100_000;

/// Which cgroup layout the host has.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Version {
    /// Legacy or hybrid.
    V1,
    /// Unified.
    V2,
}

/// Detects the layout.
pub fn version() -> Version {
    if Path::new(ROOT).join("cgroup.controllers").exists() {
        Version::V2
    } else {
        Version::V1
    }
}

/// Limits to apply.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Limits {
    /// Memory, bytes (no swap on top).
    pub memory_bytes: Option<u64>,
    /// CPU in thousandths of a core.
    pub cpu_millis: Option<u32>,
    /// Max processes and threads.
    pub pids: Option<u32>,
}

/// Usage counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Usage {
    /// CPU time, nanoseconds.
    pub cpu_ns: u64,
    /// Memory in use, bytes: the cgroup's charge less its inactive file cache (the "working
    /// set" that `docker stats` and the kubelet report). Page cache the kernel can drop at once
    /// is not counted, so reading and writing big files does not look like a memory hog.
    pub memory_bytes: u64,
    /// Memory limit, if set.
    pub memory_limit: Option<u64>,
    /// Tasks.
    pub pids: u64,
    /// Times the memory limit was hit and a process was OOM-killed (v2: `oom_kill`; v1: `oom_kill` in memory.oom_control).
    pub oom_kills: u64,
}

/// One workspace's cgroup (a directory per hierarchy on v1, one on v2).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cgroup {
    version: Version,
    root: PathBuf,
    /// (controller, directory); on v2 the controller is "".
    dirs: Vec<(&'static str, PathBuf)>,
}

fn write(path: &Path, value: &str) -> Result<()> {
    std::fs::write(path, value).map_err(|e| SysError::io(format!("writing {value:?} to {}", path.display()), e))
}

fn read_u64(path: &Path) -> Option<u64> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// A cgroup's charge less its inactive file cache (0 when unknown).
pub fn working_set(usage: Option<u64>, inactive_file: Option<u64>) -> u64 {
    usage.unwrap_or(0).saturating_sub(inactive_file.unwrap_or(0))
}

fn keyed(path: &Path, key: &str) -> Option<u64> {
    let s = std::fs::read_to_string(path).ok()?;
    s.lines().find_map(|l| {
        let (k, v) = l.split_once(' ')?;
        (k == key).then(|| v.trim().parse().ok()).flatten()
    })
}

impl Cgroup {
    /// The cgroup `name` (a relative path such as `warren/ws_...`) on this host's layout,
    /// without creating it.
    pub fn open(name: &str) -> Result<Self> {
        Self::open_at(Path::new(ROOT), version(), name)
    }

    /// The cgroup `name` under a given hierarchy root and layout (v2: the cgroup2 mount; v1: the
    /// directory holding one mount per controller).
    pub fn open_at(root: &Path, version: Version, name: &str) -> Result<Self> {
        if name.is_empty() || name.split('/').any(|c| c.is_empty() || c == "." || c == "..") {
            return Err(SysError::Invalid(format!("bad cgroup name {name:?}")));
        }
        let dirs = match version {
            Version::V2 => vec![("", root.join(name))],
            Version::V1 => {
                let mut dirs: Vec<(&'static str, PathBuf)> = Vec::new();
                let mut seen = Vec::new();
                for c in V1_CONTROLLERS {
                    let h = root.join(c);
                    let Ok(real) = h.canonicalize() else { continue };
                    if !real.join("cgroup.procs").exists() || seen.contains(&real) {
                        continue;
                    }
                    seen.push(real);
                    dirs.push((c, h.join(name)));
                }
                if !dirs.iter().any(|(c, _)| *c == "pids") || !dirs.iter().any(|(c, _)| *c == "memory") {
                    return Err(SysError::Invalid(format!(
                        "cgroup v1: the memory and pids controllers must be mounted under {}",
                        root.display()
                    )));
                }
                dirs
            }
        };
        Ok(Self { version, root: root.to_owned(), dirs })
    }

    /// Creates the cgroup (and its parents) and applies `limits`. Existing directories are reused.
    pub fn create(name: &str, limits: &Limits) -> Result<Self> {
        Self::create_at(Path::new(ROOT), version(), name, limits)
    }

    /// [`Cgroup::create`] under a given hierarchy root.
    pub fn create_at(root: &Path, version: Version, name: &str, limits: &Limits) -> Result<Self> {
        let cg = Self::open_at(root, version, name)?;
        if cg.version == Version::V2 {
            enable_v2_controllers(&cg.root, &cg.dirs[0].1)?;
        }
        for (_, d) in &cg.dirs {
            std::fs::create_dir_all(d).map_err(|e| SysError::io(format!("creating cgroup {}", d.display()), e))?;
        }
        cg.set_limits(limits)?;
        Ok(cg)
    }

    /// The layout in use.
    pub fn version(&self) -> Version {
        self.version
    }

    fn dir(&self, controller: &str) -> Option<&Path> {
        self.dirs.iter().find(|(c, _)| self.version == Version::V2 || *c == controller).map(|(_, d)| d.as_path())
    }

    /// True if the cgroup directory exists.
    pub fn exists(&self) -> bool {
        self.dirs.iter().any(|(_, d)| d.exists())
    }

    /// Applies limits (`None` = unlimited).
    pub fn set_limits(&self, l: &Limits) -> Result<()> {
        match self.version {
            Version::V2 => {
                let d = &self.dirs[0].1;
                let cpu = l.cpu_millis.map(|m| format!("{} {CPU_PERIOD_US}", m as u64 * CPU_PERIOD_US / 1000));
                limit_v2(d, "memory.max", l.memory_bytes.map(|m| m.to_string()), "max")?;
                limit_v2(d, "memory.swap.max", l.memory_bytes.map(|_| "0".to_owned()), "max")?;
                limit_v2(d, "cpu.max", cpu, &format!("max {CPU_PERIOD_US}"))?;
                limit_v2(d, "pids.max", l.pids.map(|p| p.to_string()), "max")?;
            }
            Version::V1 => {
                if let Some(d) = self.dir("memory") {
                    let m = l.memory_bytes.map_or("-1".into(), |m| m.to_string());
                    // memsw must stay >= limit: raise memsw first when growing, set it after when shrinking.
                    let memsw = d.join("memory.memsw.limit_in_bytes");
                    if memsw.exists() {
                        let _ = write(&memsw, "-1");
                    }
                    write(&d.join("memory.limit_in_bytes"), &m)?;
                    if memsw.exists() {
                        write(&memsw, &m)?;
                    }
                }
                if let Some(d) = self.dir("cpu") {
                    write(&d.join("cpu.cfs_period_us"), &CPU_PERIOD_US.to_string())?;
                    let q = l.cpu_millis.map_or("-1".into(), |m| (m as u64 * CPU_PERIOD_US / 1000).to_string());
                    write(&d.join("cpu.cfs_quota_us"), &q)?;
                }
                if let Some(d) = self.dir("pids") {
                    write(&d.join("pids.max"), &l.pids.map_or("max".into(), |p| p.to_string()))?;
                }
            }
        }
        Ok(())
    }

    /// The `cgroup.procs` files a process must write its pid into to join.
    pub fn procs_files(&self) -> Vec<PathBuf> {
        self.dirs.iter().map(|(_, d)| d.join("cgroup.procs")).collect()
    }

    /// Moves `pid` into the cgroup.
    pub fn join(&self, pid: u32) -> Result<()> {
        for f in self.procs_files() {
            write(&f, &pid.to_string())?;
        }
        Ok(())
    }

    /// Pids currently in the cgroup.
    pub fn pids(&self) -> Vec<u32> {
        let Some((_, d)) = self.dirs.first() else { return vec![] };
        std::fs::read_to_string(d.join("cgroup.procs"))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.trim().parse().ok())
            .collect()
    }

    /// Usage counters.
    pub fn usage(&self) -> Usage {
        match self.version {
            Version::V2 => {
                let d = &self.dirs[0].1;
                Usage {
                    cpu_ns: keyed(&d.join("cpu.stat"), "usage_usec").unwrap_or(0) * 1000,
                    memory_bytes: working_set(
                        read_u64(&d.join("memory.current")),
                        keyed(&d.join("memory.stat"), "inactive_file"),
                    ),
                    memory_limit: read_u64(&d.join("memory.max")),
                    pids: read_u64(&d.join("pids.current")).unwrap_or(0),
                    oom_kills: keyed(&d.join("memory.events"), "oom_kill").unwrap_or(0),
                }
            }
            Version::V1 => {
                let mem = self.dir("memory");
                let limit = mem.and_then(|d| read_u64(&d.join("memory.limit_in_bytes"))).filter(|l| *l < (1 << 62));
                Usage {
                    cpu_ns: self.dir("cpuacct").and_then(|d| read_u64(&d.join("cpuacct.usage"))).unwrap_or(0),
                    memory_bytes: working_set(
                        mem.and_then(|d| read_u64(&d.join("memory.usage_in_bytes"))),
                        mem.and_then(|d| keyed(&d.join("memory.stat"), "total_inactive_file")),
                    ),
                    memory_limit: limit,
                    pids: self.dir("pids").and_then(|d| read_u64(&d.join("pids.current"))).unwrap_or(0),
                    oom_kills: mem.and_then(|d| keyed(&d.join("memory.oom_control"), "oom_kill")).unwrap_or(0),
                }
            }
        }
    }

    /// Freezes (true) or thaws (false) every process in the cgroup, waiting until done.
    pub fn freeze(&self, frozen: bool) -> Result<()> {
        let deadline = Instant::now() + Duration::from_secs(5);
        match self.version {
            Version::V2 => {
                let d = &self.dirs[0].1;
                write(&d.join("cgroup.freeze"), if frozen { "1" } else { "0" })?;
                while keyed(&d.join("cgroup.events"), "frozen") != Some(frozen as u64) {
                    if Instant::now() > deadline {
                        return Err(SysError::Invalid(format!(
                            "cgroup {} did not {} in 5 s",
                            d.display(),
                            if frozen { "freeze" } else { "thaw" }
                        )));
                    }
                    std::thread::sleep(Duration::from_micros(200));
                }
            }
            Version::V1 => {
                let Some(d) = self.dir("freezer") else {
                    return Err(SysError::Invalid("cgroup v1 freezer controller is not mounted".into()));
                };
                let want = if frozen { "FROZEN" } else { "THAWED" };
                loop {
                    write(&d.join("freezer.state"), want)?;
                    let now = std::fs::read_to_string(d.join("freezer.state")).unwrap_or_default();
                    if now.trim() == want {
                        break;
                    }
                    if Instant::now() > deadline {
                        return Err(SysError::Invalid(format!("cgroup {} did not reach {want} in 5 s", d.display())));
                    }
                    std::thread::sleep(Duration::from_micros(200));
                }
            }
        }
        Ok(())
    }

    /// Kills every process in the cgroup and waits until it is empty.
    pub fn kill_all(&self) -> Result<()> {
        if !self.exists() {
            return Ok(());
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        if self.version == Version::V2 && self.dirs[0].1.join("cgroup.kill").exists() {
            write(&self.dirs[0].1.join("cgroup.kill"), "1")?;
        }
        loop {
            let pids = self.pids();
            if pids.is_empty() {
                return Ok(());
            }
            // Freeze so nobody forks between reading the list and the kill (v1 has no cgroup.kill).
            let frozen = self.freeze(true).is_ok();
            for p in &pids {
                let _ =
                    nix::sys::signal::kill(nix::unistd::Pid::from_raw(*p as i32), nix::sys::signal::Signal::SIGKILL);
            }
            if frozen {
                let _ = self.freeze(false);
            }
            if Instant::now() > deadline {
                return Err(SysError::Invalid(format!("processes {pids:?} survived SIGKILL for 10 s")));
            }
            std::thread::sleep(Duration::from_micros(200));
        }
    }

    /// Kills everything in it and removes the directories.
    pub fn destroy(&self) -> Result<()> {
        self.kill_all()?;
        let deadline = Instant::now() + Duration::from_secs(10);
        for (_, d) in &self.dirs {
            loop {
                match std::fs::remove_dir(d) {
                    Ok(()) => break,
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => break,
                    Err(e) if e.raw_os_error() == Some(libc::EBUSY) && Instant::now() < deadline => {
                        std::thread::sleep(Duration::from_micros(100));
                    }
                    Err(e) => return Err(SysError::io(format!("removing cgroup {}", d.display()), e)),
                }
            }
        }
        Ok(())
    }
}

/// Writes a v2 limit file. A limit that is set needs its controller (an error names it); an unset
/// one is reset to `unlimited` where the controller exists and skipped where it does not.
/// (`memory.swap.max` is absent without swap accounting: then there is no swap to forbid.)
fn limit_v2(dir: &Path, file: &str, value: Option<String>, unlimited: &str) -> Result<()> {
    let path = dir.join(file);
    let exists = path.exists();
    match value {
        Some(v) if exists => write(&path, &v),
        Some(_) if file == "memory.swap.max" => Ok(()),
        Some(_) => Err(SysError::Invalid(format!(
            "cgroup v2: {} is missing, so this limit cannot be enforced; enable the controller for warren's cgroup subtree",
            path.display()
        ))),
        None if exists => write(&path, unlimited),
        None => Ok(()),
    }
}

fn enable_v2_controllers(root: &Path, leaf: &Path) -> Result<()> {
    // Every ancestor between the root and the leaf must delegate the controllers.
    let mut ancestors: Vec<&Path> = leaf.ancestors().skip(1).take_while(|a| a.starts_with(root)).collect();
    ancestors.reverse();
    for a in ancestors {
        if !a.exists() {
            std::fs::create_dir_all(a).map_err(|e| SysError::io(format!("creating cgroup {}", a.display()), e))?;
        }
        let available = std::fs::read_to_string(a.join("cgroup.controllers")).unwrap_or_default();
        let enabled = std::fs::read_to_string(a.join("cgroup.subtree_control")).unwrap_or_default();
        for c in ["memory", "cpu", "pids"] {
            if available.split_whitespace().any(|x| x == c) && !enabled.split_whitespace().any(|x| x == c) {
                write(&a.join("cgroup.subtree_control"), &format!("+{c}"))?;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wait_dead(pid: u32) {
        for _ in 0..5000 {
            match crate::proc::stat(pid) {
                None => return,
                Some(st) if st.state == 'Z' => return,
                _ => std::thread::sleep(Duration::from_millis(1)),
            }
        }
        panic!("process {pid} survived");
    }

    fn exercise(cg: &Cgroup) {
        let mut child = std::process::Command::new("sleep").arg("1000").spawn().expect("spawn sleep");
        cg.join(child.id()).expect("join");
        assert_eq!(cg.pids(), vec![child.id()]);
        cg.freeze(true).expect("freeze");
        let st = crate::proc::stat(child.id()).expect("alive");
        assert!(st.state == 'D' || st.state == 'S' || st.state == 'T', "frozen task state {}", st.state);
        cg.freeze(false).expect("thaw");
        cg.kill_all().expect("kill");
        let _ = child.wait();
        wait_dead(child.id());
        assert!(cg.pids().is_empty());
        cg.destroy().expect("destroy");
        assert!(!cg.exists());
    }

    /// This host's layout (v1 on the development machines): limits land in the right files.
    #[test]
    fn host_layout_limits_and_lifecycle() {
        let name = format!("warren-test/sys-{}", std::process::id());
        let l = Limits { memory_bytes: Some(64 << 20), cpu_millis: Some(500), pids: Some(10) };
        let cg = Cgroup::create(&name, &l).expect("create");
        let u = cg.usage();
        assert_eq!(u.memory_limit, Some(64 << 20));
        match cg.version() {
            Version::V1 => {
                let d = cg.dir("pids").expect("pids");
                assert_eq!(std::fs::read_to_string(d.join("pids.max")).expect("read").trim(), "10");
                let c = cg.dir("cpu").expect("cpu");
                assert_eq!(std::fs::read_to_string(c.join("cpu.cfs_quota_us")).expect("read").trim(), "50000");
            }
            Version::V2 => {
                let d = &cg.dirs[0].1;
                assert_eq!(std::fs::read_to_string(d.join("cpu.max")).expect("read").trim(), "50000 100000");
            }
        }
        exercise(&cg);
    }

    /// The v2 code path on a cgroup2 mount, even on a hybrid host (where the v2 mount has no
    /// controllers: join, freeze, kill and destroy still work; a requested limit is refused).
    #[test]
    fn v2_code_path_on_the_unified_mount() {
        let root = if version() == Version::V2 { PathBuf::from(ROOT) } else { PathBuf::from("/sys/fs/cgroup/unified") };
        if !root.join("cgroup.procs").exists() {
            eprintln!("skipped: no cgroup2 mount at {}", root.display());
            return;
        }
        let name = format!("warren-test/v2-{}", std::process::id());
        let cg = Cgroup::create_at(&root, Version::V2, &name, &Limits::default()).expect("create");
        if !root.join("cgroup.controllers").exists()
            || !std::fs::read_to_string(root.join("cgroup.controllers")).unwrap_or_default().contains("pids")
        {
            let e = cg.set_limits(&Limits { pids: Some(10), ..Default::default() }).expect_err("no pids controller");
            assert!(e.to_string().contains("pids.max"), "{e}");
        }
        exercise(&cg);
        let _ = std::fs::remove_dir(root.join("warren-test"));
    }
}
