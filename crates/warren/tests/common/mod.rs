//! The fixture of the `warren` binary's integration tests: the real binary on a state directory,
//! config file and uid range of its own, with no backend, state directory, server, token, image or
//! docker host taken from the test's environment.
//!
//! Each test file owns a uid range (named in its header comment) and gives every fixture a
//! `uid_base` in it; a fixture's workspaces get the 1000 uids from there, because the dir backend's
//! `stop` kills every process of a workspace's uid.

// Every test binary compiles this module on its own and uses only some of it (image_cli has no
// `json`, serve no `with_stdin`, kill9 only `cmd_on`/`run_on`): without this, each would warn
// about the helpers the others use.
#![allow(dead_code)]

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};

/// Variables the binary reads that would send a test somewhere else (another state directory,
/// backend, server, token, image or docker daemon) or change its output (`WARREN_LOG`). A test
/// that wants one sets it on the command after `cmd`.
const CLEARED: [&str; 9] = [
    "WARREN_LOG",
    "WARREN_BACKEND",
    "WARREN_STATE_DIR",
    "WARREN_URL",
    "WARREN_TOKEN",
    "WARREN_LISTEN",
    "WARREN_CONTAINER_IMAGE",
    "CONTAINER_IMAGE",
    "DOCKER_HOST",
];

/// A state directory (`DIR/state`) and config file (`DIR/warren.toml`) in a directory of its own
/// (mode 0711, so workspace users can reach their homes below it).
pub struct Warren {
    /// Removes the directory when dropped; `None` for a directory that is kept (`Warren::kept`).
    _tmp: Option<tempfile::TempDir>,
    /// The directory that holds the state directory and the config: room for a test's own files.
    pub dir: PathBuf,
    pub state: PathBuf,
    pub config: PathBuf,
    /// `--backend` of `cmd`, when set with `on`.
    backend: Option<&'static str>,
}

impl Warren {
    /// Uids `uid_base..uid_base + 1000`; `extra` is appended to the config (TOML sections such as
    /// `"\n[snapshots]\nkeep = 5\n"`, or `""`). Removed with the fixture.
    pub fn new(uid_base: u32, extra: &str) -> Self {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path().to_path_buf();
        Self::in_dir(Some(tmp), dir, uid_base, extra)
    }

    /// Like `new`, in a directory named `PREFIX...` that is kept after the fixture (to look at
    /// after a failure); the test removes `dir` itself when it passes.
    pub fn kept(prefix: &str, uid_base: u32, extra: &str) -> Self {
        let dir = tempfile::Builder::new().prefix(prefix).tempdir().expect("tempdir").keep();
        Self::in_dir(None, dir, uid_base, extra)
    }

    fn in_dir(tmp: Option<tempfile::TempDir>, dir: PathBuf, uid_base: u32, extra: &str) -> Self {
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o711)).expect("chmod 0711");
        let config = dir.join("warren.toml");
        std::fs::write(&config, format!("uid_base = {uid_base}\nuid_count = 1000\n{extra}")).expect("write config");
        Self { _tmp: tmp, state: dir.join("state"), config, dir, backend: None }
    }

    /// `cmd` passes `--backend BACKEND`.
    pub fn on(mut self, backend: &'static str) -> Self {
        self.backend = Some(backend);
        self
    }

    /// `warren --state-dir S --config C [--backend B] ARGS...` with stdin from /dev/null (a test
    /// that feeds stdin sets its own) and the variables of `CLEARED` removed.
    pub fn cmd(&self, args: &[&str]) -> Command {
        match self.backend {
            Some(b) => self.cmd_on(b, args),
            None => self.base(args),
        }
    }

    /// `warren --state-dir S --config C --backend BACKEND ARGS...`, whatever `on` said.
    pub fn cmd_on(&self, backend: &str, args: &[&str]) -> Command {
        let mut c = self.base(&["--backend", backend]);
        c.args(args);
        c
    }

    fn base(&self, args: &[&str]) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_warren"));
        c.arg("--state-dir").arg(&self.state).arg("--config").arg(&self.config);
        c.args(args).stdin(Stdio::null());
        for v in CLEARED {
            c.env_remove(v);
        }
        c
    }

    pub fn run(&self, args: &[&str]) -> Output {
        self.cmd(args).output().expect("run warren")
    }

    pub fn run_on(&self, backend: &str, args: &[&str]) -> Output {
        self.cmd_on(backend, args).output().expect("run warren")
    }

    /// Runs and expects success; returns stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(out.status.success(), "warren {args:?} failed: {}", show(&out));
        String::from_utf8(out.stdout).expect("utf-8 stdout")
    }

    /// `ok` with `--json`, parsed.
    pub fn json(&self, args: &[&str]) -> serde_json::Value {
        let mut all = vec!["--json"];
        all.extend_from_slice(args);
        serde_json::from_str(&self.ok(&all)).expect("JSON output")
    }

    /// Runs with `input` on stdin.
    pub fn with_stdin(&self, args: &[&str], input: &[u8]) -> Output {
        let mut child =
            self.cmd(args).stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("spawn");
        child.stdin.take().expect("stdin").write_all(input).expect("write stdin");
        child.wait_with_output().expect("wait")
    }
}

/// An output for an assertion message: how it ended (exit code or signal), stdout and stderr.
pub fn show(out: &Output) -> String {
    format!(
        "{}\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}
