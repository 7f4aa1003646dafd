//! Warren's core: the vocabulary every other crate speaks.
//!
//! * [`id`]: user, workspace and snapshot ids and the rules they obey.
//! * [`path`]: paths *inside* a workspace, validated lexically, and [`fs`]: file operations
//!   confined beneath a workspace directory by the kernel (`openat2(RESOLVE_BENEATH)`).
//! * [`backend`]: the one [`Backend`] trait every isolation backend implements, and its types.
//! * [`config`]: configuration types shared by the engine, server and CLI; [`monitor`]: the
//!   resource monitor's policy.
//! * [`error`]: the error enum all of the above return.
//! * [`time`]: timestamps (milliseconds since the epoch, RFC 3339 on the wire).

pub mod backend;
pub mod config;
pub mod error;
pub mod fs;
pub mod id;
pub mod monitor;
pub mod path;
pub mod time;

pub use backend::{
    Backend, BackendKind, Capabilities, ExecControl, ExecEvent, ExecHandle, ExecOutput, ExecRequest, ExitStatus,
    IsolationLevel, Limits, State, Stats, Status, TtySize, WorkspaceSpec,
};
pub use error::{Error, Result};
pub use id::{SnapshotId, UserId, WorkspaceId};
pub use path::WorkspacePath;
