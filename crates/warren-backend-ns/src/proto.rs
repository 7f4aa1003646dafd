//! What warren and a workspace's init say to each other.
//!
//! The helper reads an [`InitConfig`] (JSON) on stdin and prints an [`InitReport`].
//! After that, warren talks to the running init over a unix socket that only root can reach
//! (it lives in warren's run directory, outside the workspace's root): one connection per
//! command, frames of JSON ([`warren_sys::fdio`]), the command's stdio passed as descriptors.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// Everything the helper needs to build a workspace and become its init.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct InitConfig {
    /// Workspace id (for messages).
    pub workspace: String,
    /// Account name inside.
    pub username: String,
    /// Host uid = uid inside.
    pub uid: u32,
    /// Host gid = gid inside.
    pub gid: u32,
    /// The home directory on the host.
    pub home: PathBuf,
    /// Directory for the control socket and the root mount point.
    pub run_dir: PathBuf,
    /// `cgroup.procs` files to join before unsharing.
    pub cgroup_procs: Vec<PathBuf>,
    /// Keep the host network (no new network namespace).
    pub network: bool,
    /// RLIMIT_NOFILE.
    pub nofile: u64,
    /// RLIMIT_NPROC (per uid; the cgroup pids limit is the real bound).
    pub nproc: Option<u64>,
    /// RLIMIT_FSIZE, bytes.
    pub fsize: Option<u64>,
    /// Size of `/tmp` (tmpfs), bytes.
    pub tmp_bytes: u64,
    /// Put the workspace in its own user namespace: the workspace uid and gid map to themselves,
    /// the namespace's root maps to the host's `nobody` (65534), nothing else is mapped.
    #[serde(default)]
    pub userns: bool,
    /// A root filesystem directory on the host whose `/usr`, `/bin`, `/lib*` and `/etc` files
    /// the workspace gets instead of the host's (an image imported with `warren image import`).
    #[serde(default)]
    pub image: Option<PathBuf>,
}

/// Host uid/gid the root of a workspace's user namespace maps to (`nobody`/`nogroup`).
pub const USERNS_ROOT_HOST_ID: u32 = 65534;

/// What the helper prints when the init is ready.
#[derive(Clone, Copy, Debug, Serialize, Deserialize)]
pub struct InitReport {
    /// Host pid of the init.
    pub pid: u32,
    /// Its start time (clock ticks since boot), to tell it from a reused pid.
    pub start_time: u64,
}

/// A request to the init.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Request {
    /// Run a command. Without `tty`, three descriptors (stdin, stdout, stderr) ride along.
    Exec {
        /// Program and arguments.
        argv: Vec<String>,
        /// Complete environment.
        env: Vec<(String, String)>,
        /// Absolute working directory inside the workspace.
        cwd: String,
        /// Allocate a pseudo-terminal of (rows, cols).
        tty: Option<(u16, u16)>,
    },
    /// Signal the command's process group.
    Signal {
        /// Signal number.
        sig: i32,
    },
}

/// A reply from the init.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Reply {
    /// The command runs (pid inside the workspace). With a tty, the terminal's master rides along.
    Started {
        /// Pid inside the workspace.
        pid: i32,
    },
    /// The command ended.
    Exited {
        /// Exit code, or 128 + signal.
        code: i32,
        /// Killing signal.
        signal: Option<i32>,
    },
    /// The request failed.
    Error {
        /// Why.
        message: String,
    },
}
