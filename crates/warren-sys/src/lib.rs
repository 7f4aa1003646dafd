//! The only crate in warren allowed `unsafe`. Everything here is a small, safe wrapper over a
//! Linux primitive; each `unsafe` block says why it is sound.
//!
//! | module | what |
//! | --- | --- |
//! | [`spawn`] | spawning host processes as another uid with rlimits, a new session and a controlling terminal |
//! | [`pty`] | pseudo-terminal pairs and window sizes |
//! | [`ns`] | namespaces, mounts, `pivot_root`, hostname, loopback, fork in a single-threaded process |
//! | [`caps`] | capability dropping, `no_new_privs`, dumpable |
//! | [`seccomp`] | the seccomp deny-list every workspace process runs under |
//! | [`cgroup`] | cgroup v1 and v2: create, limit, join, stats, freeze, kill |
//! | [`fdio`] | fd hygiene and passing fds over unix sockets |
//! | [`proc`] | reading `/proc/<pid>` safely (start times, to tell a pid from its reuse) |

pub mod caps;
pub mod cgroup;
pub mod fdio;
pub mod ns;
pub mod proc;
pub mod pty;
pub mod seccomp;
pub mod spawn;
pub mod uidprocs;

/// Errors from system calls, with what was being done.
#[derive(Debug, thiserror::Error)]
pub enum SysError {
    /// A system call failed.
    #[error("{what}: {errno}")]
    Errno {
        /// What was being done.
        what: String,
        /// The errno.
        errno: nix::errno::Errno,
    },
    /// An I/O error.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// A precondition did not hold.
    #[error("{0}")]
    Invalid(String),
}

impl SysError {
    /// An errno with context.
    pub fn errno(what: impl Into<String>, errno: nix::errno::Errno) -> Self {
        SysError::Errno { what: what.into(), errno }
    }
    /// An I/O error with context.
    pub fn io(what: impl Into<String>, source: std::io::Error) -> Self {
        SysError::Io { what: what.into(), source }
    }
}

/// Result alias.
pub type Result<T, E = SysError> = std::result::Result<T, E>;
