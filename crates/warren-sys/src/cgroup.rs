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
    /// Memory in use, bytes.
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
    /// (controller, directory); on v2 the controller is "".
    dirs: Vec<(&'static str, PathBuf)>,
}

fn write(path: &Path, value: &str) -> Result<()> {
    std::fs::write(path, value).map_err(|e| SysError::io(format!("writing {value:?} to {}", path.display()), e))
}

fn read_u64(path: &Path) -> Option<u64> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

fn keyed(path: &Path, key: &str) -> Option<u64> {
    let s = std::fs::read_to_string(path).ok()?;
    s.lines().find_map(|l| {
        let (k, v) = l.split_once(' ')?;
        (k == key).then(|| v.trim().parse().ok()).flatten()
    })
}

impl Cgroup {
    /// The cgroup `name` (a relative path such as `warren/ws_...`), without creating it.
    pub fn open(name: &str) -> Result<Self> {
        if name.is_empty() || name.split('/').any(|c| c.is_empty() || c == "." || c == "..") {
            return Err(SysError::Invalid(format!("bad cgroup name {name:?}")));
        }
        let version = version();
        let dirs = match version {
            Version::V2 => vec![("", Path::new(ROOT).join(name))],
            Version::V1 => {
                let mut dirs: Vec<(&'static str, PathBuf)> = Vec::new();
                let mut seen = Vec::new();
                for c in V1_CONTROLLERS {
                    let h = Path::new(ROOT).join(c);
                    let Ok(real) = h.canonicalize() else { continue };
                    if !real.join("cgroup.procs").exists() || seen.contains(&real) {
                        continue;
                    }
                    seen.push(real);
                    dirs.push((c, h.join(name)));
                }
                if !dirs.iter().any(|(c, _)| *c == "pids") || !dirs.iter().any(|(c, _)| *c == "memory") {
                    return Err(SysError::Invalid("cgroup v1: the memory and pids controllers must be mounted under /sys/fs/cgroup".into()));
                }
                dirs
            }
        };
        Ok(Self { version, dirs })
    }

    /// Creates the cgroup (and its parents) and applies `limits`. Existing directories are reused.
    pub fn create(name: &str, limits: &Limits) -> Result<Self> {
        let cg = Self::open(name)?;
        if cg.version == Version::V2 {
            enable_v2_controllers(&cg.dirs[0].1)?;
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
        self.dirs
            .iter()
            .find(|(c, _)| self.version == Version::V2 || *c == controller)
            .map(|(_, d)| d.as_path())
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
                write(&d.join("memory.max"), &l.memory_bytes.map_or("max".into(), |m| m.to_string()))?;
                if d.join("memory.swap.max").exists() {
                    write(&d.join("memory.swap.max"), "0")?;
                }
                let quota = l.cpu_millis.map_or("max".into(), |m| (m as u64 * CPU_PERIOD_US / 1000).to_string());
                write(&d.join("cpu.max"), &format!("{quota} {CPU_PERIOD_US}"))?;
                write(&d.join("pids.max"), &l.pids.map_or("max".into(), |p| p.to_string()))?;
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
                    memory_bytes: read_u64(&d.join("memory.current")).unwrap_or(0),
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
                    memory_bytes: mem.and_then(|d| read_u64(&d.join("memory.usage_in_bytes"))).unwrap_or(0),
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
                        return Err(SysError::Invalid(format!("cgroup {} did not {} in 5 s", d.display(), if frozen { "freeze" } else { "thaw" })));
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
                let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(*p as i32), nix::sys::signal::Signal::SIGKILL);
            }
            if frozen {
                let _ = self.freeze(false);
            }
            if Instant::now() > deadline {
                return Err(SysError::Invalid(format!("processes {pids:?} survived SIGKILL for 10 s")));
            }
            std::thread::sleep(Duration::from_millis(1));
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
                        std::thread::sleep(Duration::from_millis(1));
                    }
                    Err(e) => return Err(SysError::io(format!("removing cgroup {}", d.display()), e)),
                }
            }
        }
        Ok(())
    }
}

fn enable_v2_controllers(leaf: &Path) -> Result<()> {
    // Every ancestor between the root and the leaf must delegate the controllers.
    let mut ancestors: Vec<&Path> = leaf.ancestors().skip(1).take_while(|a| a.starts_with(ROOT)).collect();
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
