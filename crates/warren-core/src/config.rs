//! Configuration types shared by the engine, the server and the CLI.
//!
//! Read from a TOML file and overridden by `WARREN_*` environment variables by the binary;
//! this module only defines the shape and the defaults.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::backend::{BackendKind, Limits};

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
        }
    }
}
