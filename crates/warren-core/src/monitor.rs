//! The resource monitor's policy: thresholds per resource, how long they may be exceeded, and
//! what happens then. The engine samples and enforces; this module only defines the shape.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// What the monitor does when a workspace stays over a threshold for [`MonitorPolicy::grace`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    /// Record a `monitor` event (action `warn`) and log it; nothing else.
    #[default]
    Warn,
    /// Stop the workspace (every process killed, files kept); it stays stopped until started.
    Stop,
    /// Kill every process of the workspace and start it again empty (a reset; files kept).
    Kill,
}

impl Action {
    /// The config spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Warn => "warn",
            Action::Stop => "stop",
            Action::Kill => "kill",
        }
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Action {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "warn" => Ok(Self::Warn),
            "stop" => Ok(Self::Stop),
            "kill" => Ok(Self::Kill),
            other => {
                Err(Error::InvalidRequest(format!("unknown monitor action {other:?}: expected warn, stop or kill")))
            }
        }
    }
}

/// A resource the monitor watches.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Resource {
    /// CPU use, percent of the workspace's CPU limit (of one core when it has none).
    Cpu,
    /// Memory in use, percent of the memory limit.
    Memory,
    /// Processes and threads, percent of the pids limit.
    Pids,
    /// Bytes of the workspace's files, percent of the disk limit.
    Disk,
}

impl Resource {
    /// Every resource, in display order.
    pub const ALL: [Resource; 4] = [Resource::Cpu, Resource::Memory, Resource::Pids, Resource::Disk];

    /// The name used in events, metrics and the API.
    pub fn as_str(self) -> &'static str {
        match self {
            Resource::Cpu => "cpu",
            Resource::Memory => "memory",
            Resource::Pids => "pids",
            Resource::Disk => "disk",
        }
    }
}

impl fmt::Display for Resource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A workspace's monitor policy. Thresholds are percentages of the workspace's own limits; a
/// threshold of `None` (or a resource without a limit, but CPU) is not watched.
///
/// ```toml
/// [monitor]
/// interval_secs = 10   # how often `warren serve` samples running workspaces (0: off)
///
/// [monitor.policy]     # the default of new workspaces
/// action = "stop"      # warn | stop | kill
/// grace_secs = 30      # how long a threshold may stay exceeded before the action
/// cpu_percent = 95
/// memory_percent = 90
/// pids_percent = 90
/// disk_percent = 100
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MonitorPolicy {
    /// What happens when a threshold stays exceeded.
    pub action: Action,
    /// How long a threshold may stay exceeded before `action`, in seconds.
    pub grace_secs: u64,
    /// CPU threshold, percent of the CPU limit.
    pub cpu_percent: Option<u32>,
    /// Memory threshold, percent of the memory limit.
    pub memory_percent: Option<u32>,
    /// Pids threshold, percent of the pids limit.
    pub pids_percent: Option<u32>,
    /// Disk threshold, percent of the disk limit (the quota: 100 enforces it exactly).
    pub disk_percent: Option<u32>,
}

impl Default for MonitorPolicy {
    fn default() -> Self {
        Self {
            action: Action::Warn,
            grace_secs: 30,
            cpu_percent: Some(95),
            memory_percent: Some(90),
            pids_percent: Some(90),
            disk_percent: Some(100),
        }
    }
}

impl MonitorPolicy {
    /// The threshold of `r`, if it is watched.
    pub fn threshold(&self, r: Resource) -> Option<u32> {
        match r {
            Resource::Cpu => self.cpu_percent,
            Resource::Memory => self.memory_percent,
            Resource::Pids => self.pids_percent,
            Resource::Disk => self.disk_percent,
        }
    }

    /// How long a threshold may stay exceeded.
    pub fn grace(&self) -> Duration {
        Duration::from_secs(self.grace_secs)
    }

    /// Rejects thresholds that cannot work, naming the field.
    pub fn validate(&self) -> Result<()> {
        for r in Resource::ALL {
            if let Some(t) = self.threshold(r) {
                if !(1..=10_000).contains(&t) {
                    return Err(Error::InvalidRequest(format!("{r}_percent {t} must be between 1 and 10000")));
                }
            }
        }
        if self.grace_secs > 7 * 86_400 {
            return Err(Error::InvalidRequest(format!("grace_secs {} is more than a week", self.grace_secs)));
        }
        Ok(())
    }
}

/// The `[monitor]` table: the sampling interval and the default policy of new workspaces.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MonitorConfig {
    /// Seconds between samples of every running workspace (`warren serve` only); 0 switches
    /// the monitor off.
    pub interval_secs: u64,
    /// The policy of workspaces created without one of their own (`[monitor.policy]`).
    pub policy: MonitorPolicy,
}

impl Default for MonitorConfig {
    fn default() -> Self {
        Self { interval_secs: 10, policy: MonitorPolicy::default() }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policy_parses_and_validates() {
        let p: MonitorConfig =
            toml::from_str("interval_secs = 2\n[policy]\naction = \"kill\"\ngrace_secs = 5\nmemory_percent = 80\n")
                .expect("parse");
        assert_eq!(p.interval_secs, 2);
        assert_eq!(p.policy.action, Action::Kill);
        assert_eq!(p.policy.threshold(Resource::Memory), Some(80));
        assert_eq!(p.policy.threshold(Resource::Cpu), Some(95), "unset fields keep their defaults");
        p.policy.validate().expect("valid");
        let bad = MonitorPolicy { memory_percent: Some(0), ..MonitorPolicy::default() };
        assert!(bad.validate().expect_err("zero").to_string().contains("memory_percent"));
        assert!(toml::from_str::<MonitorConfig>("[policy]\naction = \"explode\"").is_err());
        assert!(toml::from_str::<MonitorConfig>("[policy]\nmemroy_percent = 3").is_err(), "typos are refused");
        assert_eq!("stop".parse::<Action>().expect("stop"), Action::Stop);
        assert!("STOP".parse::<Action>().is_err());
    }
}
