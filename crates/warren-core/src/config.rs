//! Configuration types shared by the engine, the server and the CLI.
//!
//! Read from a TOML file and overridden by `WARREN_*` environment variables by the binary;
//! this module only defines the shape and the defaults.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::backend::{BackendKind, Limits};
use crate::error::{Error, Result};
use crate::monitor::MonitorConfig;

/// Warren's configuration.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Where workspaces, state and snapshots live.
    pub state_dir: PathBuf,
    /// Which backend (`auto` picks the strongest this host supports).
    pub backend: BackendKind,
    /// Default limits for new workspaces.
    pub limits: Limits,
    /// Give new workspaces network access beyond loopback (off by default).
    pub network: bool,
    /// First host uid handed to workspaces; each user gets a fixed uid in
    /// `uid_base .. uid_base + uid_count`.
    pub uid_base: u32,
    /// Size of the uid range.
    pub uid_count: u32,
    /// Snapshots: retention, storage and automatic triggers (the `[snapshots]` table).
    pub snapshots: SnapshotConfig,
    /// The resource monitor (the `[monitor]` table).
    pub monitor: MonitorConfig,
    /// The docker backend's pooled mode (the `[pool]` table; the seed's `USE_CONTAINERS`).
    pub pool: PoolConfig,
    /// How `docker` and `pool` containers are built (the `[docker]` table).
    pub docker: DockerConfig,
    /// The image workspaces run (the seed's `CONTAINER_IMAGE`): a docker tag for `docker` and
    /// `pool`; for `ns`, the root filesystem `warren image import` unpacked under
    /// `{state_dir}/images/`. `None`: docker's default image, the host's programs on `ns`.
    pub image: Option<String>,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            state_dir: PathBuf::from("/var/lib/warren"),
            backend: BackendKind::Auto,
            limits: Limits::default(),
            network: false,
            uid_base: 2_000_000,
            uid_count: 1 << 30,
            snapshots: SnapshotConfig::default(),
            monitor: MonitorConfig::default(),
            pool: PoolConfig::default(),
            docker: DockerConfig::default(),
            image: None,
        }
    }
}

/// Checks an image name (a docker tag like `warren-workspace:latest` or `library/python:3.11`).
pub fn check_image_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 200
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b"._:/-@".contains(&b))
        && !name.contains("..")
        && !name.starts_with(['/', '.', '-', ':']);
    if ok {
        Ok(())
    } else {
        Err(Error::InvalidRequest(format!(
            "image name {name:?} is not valid: use a docker-style tag (letters, digits, . _ : / - @), like warren-workspace:latest"
        )))
    }
}

/// Where `warren image import` unpacks image `name` for the `ns` backend:
/// `{state_dir}/images/{name, '/' and ':' as '_'}/rootfs`.
pub fn image_rootfs(state_dir: &std::path::Path, name: &str) -> Result<PathBuf> {
    check_image_name(name)?;
    let dir: String = name.chars().map(|c| if c == '/' || c == ':' { '_' } else { c }).collect();
    Ok(state_dir.join("images").join(dir).join("rootfs"))
}

/// The `[pool]` table: many users share a few containers (the seed's pooled mode).
///
/// ```toml
/// [pool]
/// enabled = true            # USE_CONTAINERS=true: new workspaces go to the pool
/// max_containers = 10       # MAX_CONTAINERS
/// users_per_container = 20  # USERS_PER_CONTAINER
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PoolConfig {
    /// New workspaces are placed in the shared container pool (backend `pool`).
    pub enabled: bool,
    /// Most containers in the pool.
    pub max_containers: u32,
    /// Most users placed in one container.
    pub users_per_container: u32,
}

impl Default for PoolConfig {
    fn default() -> Self {
        Self { enabled: false, max_containers: 10, users_per_container: 20 }
    }
}

impl PoolConfig {
    /// Rejects sizes that cannot work, naming the setting.
    pub fn validate(&self) -> Result<()> {
        if !(1..=1000).contains(&self.max_containers) {
            return Err(Error::InvalidRequest(format!(
                "pool.max_containers (MAX_CONTAINERS) {} must be between 1 and 1000",
                self.max_containers
            )));
        }
        if !(1..=10_000).contains(&self.users_per_container) {
            return Err(Error::InvalidRequest(format!(
                "pool.users_per_container (USERS_PER_CONTAINER) {} must be between 1 and 10000",
                self.users_per_container
            )));
        }
        Ok(())
    }
}

/// The `[docker]` table: how the `docker` and `pool` backends build their containers.
///
/// ```toml
/// [docker]
/// read_only_root = true  # the image's files read-only, with a tmpfs /tmp (default)
/// tmp_size = "256m"      # size of that /tmp: a number with k, m or g (it counts as memory)
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DockerConfig {
    /// Mount the container's root filesystem read-only, with a tmpfs `/tmp`.
    pub read_only_root: bool,
    /// Size of the tmpfs `/tmp` (`256m`, `1g`, `65536k`).
    pub tmp_size: String,
}

impl Default for DockerConfig {
    fn default() -> Self {
        Self { read_only_root: true, tmp_size: "256m".to_owned() }
    }
}

impl DockerConfig {
    /// Rejects a `tmp_size` that is not a size, naming the setting.
    pub fn validate(&self) -> Result<()> {
        let digits = self.tmp_size.trim_end_matches(['k', 'm', 'g']);
        let suffixes = self.tmp_size.len() - digits.len();
        if digits.is_empty() || digits.len() > 12 || suffixes > 1 || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return Err(Error::InvalidRequest(format!(
                "docker.tmp_size {:?} is not a size: use a number of bytes with k, m or g, like \"256m\"",
                self.tmp_size
            )));
        }
        Ok(())
    }
}

/// The `[snapshots]` table.
///
/// ```toml
/// [snapshots]
/// keep = 5                    # newest snapshots kept per user (pinned ones are extra)
/// storage = "s3"              # "local" (default: {state_dir}/snapshots) or "s3"
/// idle_suspend_after = "30m"  # snapshot and stop a workspace idle this long ("0" or absent: off)
/// daily_at = "03:00"          # a daily snapshot at this UTC time (absent: off)
///
/// [snapshots.s3]              # credentials: AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY
/// bucket = "warren"
/// prefix = "prod"
/// endpoint = "http://127.0.0.1:9000"
/// region = "us-east-1"
/// allow_http = true
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SnapshotConfig {
    /// How many of a user's newest unpinned snapshots retention keeps (at least 1).
    pub keep: usize,
    /// Where snapshots are kept.
    pub storage: SnapshotStorage,
    /// The S3-compatible store, when `storage = "s3"`.
    pub s3: Option<S3Settings>,
    /// Snapshot (trigger `idle`) and stop a running workspace after this long without activity;
    /// `None` (or `"0"` in the file) switches idle suspension off.
    #[serde(with = "opt_duration")]
    pub idle_suspend_after: Option<Duration>,
    /// Take a `daily` snapshot of every running or recently used workspace at this time of
    /// day, UTC; `None` switches it off.
    pub daily_at: Option<TimeOfDay>,
}

impl Default for SnapshotConfig {
    fn default() -> Self {
        Self { keep: 5, storage: SnapshotStorage::Local, s3: None, idle_suspend_after: None, daily_at: None }
    }
}

impl SnapshotConfig {
    /// Rejects settings that cannot work, with a message naming the setting.
    pub fn validate(&self) -> Result<()> {
        if self.keep == 0 {
            return Err(Error::InvalidRequest("snapshots.keep must be at least 1".into()));
        }
        if self.storage == SnapshotStorage::S3 {
            match &self.s3 {
                Some(s3) if !s3.bucket.is_empty() => {}
                _ => {
                    return Err(Error::InvalidRequest(
                        "snapshots.storage is \"s3\" but no bucket is set: add a [snapshots.s3] table with a bucket"
                            .into(),
                    ))
                }
            }
        }
        Ok(())
    }
}

/// Where snapshots are kept.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SnapshotStorage {
    /// `{state_dir}/snapshots/` on local disk.
    #[default]
    Local,
    /// An S3-compatible bucket (`[snapshots.s3]`).
    S3,
}

/// An S3-compatible store. Credentials come from the environment (`AWS_ACCESS_KEY_ID`,
/// `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`), never from the file.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct S3Settings {
    /// The endpoint URL of a non-AWS store (`http://127.0.0.1:9000`); absent for AWS.
    pub endpoint: Option<String>,
    /// The bucket.
    pub bucket: String,
    /// A key prefix inside the bucket (`""` for none).
    pub prefix: String,
    /// The region (default: `AWS_REGION`, else `us-east-1`).
    pub region: Option<String>,
    /// Allow a plain `http://` endpoint (local test servers).
    pub allow_http: bool,
}

/// A time of day, UTC, written `HH:MM`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TimeOfDay {
    /// 0-23.
    pub hour: u8,
    /// 0-59.
    pub minute: u8,
}

impl TimeOfDay {
    /// Seconds after midnight.
    pub fn seconds(self) -> u64 {
        u64::from(self.hour) * 3600 + u64::from(self.minute) * 60
    }
}

impl std::str::FromStr for TimeOfDay {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        let bad = || Error::InvalidRequest(format!("invalid time of day {s:?}: write it as HH:MM (UTC), like 03:00"));
        let (h, m) = s.trim().split_once(':').ok_or_else(bad)?;
        let two = |x: &str| (1..=2).contains(&x.len()) && x.bytes().all(|b| b.is_ascii_digit());
        if !two(h) || m.len() != 2 || !two(m) {
            return Err(bad());
        }
        let (hour, minute) = (h.parse::<u8>().map_err(|_| bad())?, m.parse::<u8>().map_err(|_| bad())?);
        if hour > 23 || minute > 59 {
            return Err(bad());
        }
        Ok(Self { hour, minute })
    }
}

impl fmt::Display for TimeOfDay {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:02}:{:02}", self.hour, self.minute)
    }
}

impl Serialize for TimeOfDay {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for TimeOfDay {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// A duration written for people: a number with a unit `ms`, `s`, `m`, `h` or `d` (no unit:
/// seconds), like `30m`, `1.5h`, `90s`. Zero is allowed (callers read it as "off").
pub fn parse_duration(s: &str) -> Result<Duration> {
    let bad = || {
        Error::InvalidRequest(format!("invalid duration {s:?}: use a number with a unit ms, s, m, h or d, like 30m"))
    };
    let t = s.trim();
    let split = t.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let per_ms: f64 = match unit.trim() {
        "ms" => 1.0,
        "" | "s" => 1e3,
        "m" => 60e3,
        "h" => 3600e3,
        "d" => 86_400e3,
        _ => return Err(bad()),
    };
    if num.is_empty() || num.matches('.').count() > 1 {
        return Err(bad());
    }
    let n: f64 = num.parse().map_err(|_| bad())?;
    let ms = (n * per_ms).round();
    if !ms.is_finite() || !(0.0..=1e15).contains(&ms) {
        return Err(bad());
    }
    Ok(Duration::from_millis(ms as u64))
}

/// `Option<Duration>` as a human string (`"30m"`), or a number of seconds; zero reads as `None`.
mod opt_duration {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        Secs(u64),
        Text(String),
    }

    pub fn serialize<S: Serializer>(v: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match v {
            Some(d) if d.subsec_millis() == 0 => s.serialize_str(&format!("{}s", d.as_secs())),
            Some(d) => s.serialize_str(&format!("{}ms", d.as_millis())),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        let d = match Option::<Raw>::deserialize(d)? {
            None => return Ok(None),
            // Through the same parser as the text form, so both have the same range.
            Some(Raw::Secs(n)) => super::parse_duration(&n.to_string()).map_err(serde::de::Error::custom)?,
            Some(Raw::Text(t)) => super::parse_duration(&t).map_err(serde::de::Error::custom)?,
        };
        Ok((!d.is_zero()).then_some(d))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_and_times() {
        assert_eq!(parse_duration("30m").expect("30m"), Duration::from_secs(1800));
        assert_eq!(parse_duration("1.5h").expect("1.5h"), Duration::from_secs(5400));
        assert_eq!(parse_duration("90").expect("90"), Duration::from_secs(90));
        assert_eq!(parse_duration("0").expect("0"), Duration::ZERO);
        for bad in ["", "m", "1x", "-1s", "1..2s"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
        assert_eq!("03:00".parse::<TimeOfDay>().expect("time"), TimeOfDay { hour: 3, minute: 0 });
        assert_eq!("3:05".parse::<TimeOfDay>().expect("time").to_string(), "03:05");
        for bad in ["24:00", "03:60", "3", "03:0", "aa:bb", ""] {
            assert!(bad.parse::<TimeOfDay>().is_err(), "{bad}");
        }
    }

    #[test]
    fn snapshot_section_defaults_and_round_trip() {
        let c = SnapshotConfig::default();
        assert_eq!((c.keep, c.storage, c.idle_suspend_after, c.daily_at), (5, SnapshotStorage::Local, None, None));
        c.validate().expect("defaults are valid");
        let s3 = SnapshotConfig { storage: SnapshotStorage::S3, ..SnapshotConfig::default() };
        assert!(s3.validate().expect_err("no bucket").to_string().contains("bucket"));
        let json = r#"{"keep":3,"storage":"s3","idle_suspend_after":"30m","daily_at":"03:00",
                       "s3":{"bucket":"b","endpoint":"http://127.0.0.1:9000","allow_http":true}}"#;
        let c: SnapshotConfig = serde_json_from(json);
        assert_eq!(c.keep, 3);
        assert_eq!(c.idle_suspend_after, Some(Duration::from_secs(1800)));
        assert_eq!(c.daily_at, Some(TimeOfDay { hour: 3, minute: 0 }));
        assert_eq!(c.s3.as_ref().map(|s| s.bucket.as_str()), Some("b"));
        c.validate().expect("valid");
        let off: SnapshotConfig = serde_json_from(r#"{"idle_suspend_after":"0"}"#);
        assert_eq!(off.idle_suspend_after, None);
        let secs: SnapshotConfig = serde_json_from(r#"{"idle_suspend_after":600}"#);
        assert_eq!(secs.idle_suspend_after, Some(Duration::from_secs(600)));
    }

    #[test]
    fn docker_section_defaults_and_sizes() {
        let d = DockerConfig::default();
        assert!(d.read_only_root);
        d.validate().expect("defaults are valid");
        let c: Config = serde_json_from(r#"{"docker":{"read_only_root":false,"tmp_size":"1g"}}"#);
        assert_eq!(c.docker, DockerConfig { read_only_root: false, tmp_size: "1g".to_owned() });
        for good in ["65536", "512k", "256m", "2g"] {
            DockerConfig { tmp_size: good.to_owned(), ..d.clone() }.validate().expect(good);
        }
        for bad in ["", "m", "1mm", "-1m", "1,size=9g", "1 m", "1t", "9999999999999g"] {
            let e = DockerConfig { tmp_size: bad.to_owned(), ..d.clone() }.validate().expect_err(bad);
            assert!(e.to_string().contains("docker.tmp_size"), "{e}");
        }
    }

    fn serde_json_from<T: serde::de::DeserializeOwned>(json: &str) -> T {
        serde_json::from_str(json).expect("valid config JSON")
    }
}
