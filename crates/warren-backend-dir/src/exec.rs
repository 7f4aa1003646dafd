//! Running a command as the workspace's uid and pumping its stdio into an [`ExecHandle`].
//!
//! The command gets its own session (so its process group can be signalled as a whole), fresh
//! pipes (or a pty) whose parent ends are non-blocking and driven by tokio, and rlimits derived
//! from the workspace's limits. One task per command owns the child: it forwards output,
//! applies [`ExecControl`]s, kills the process group if the handle is dropped early, and after
//! the child exits drains whatever output is still buffered before sending the single
//! [`ExecEvent::Exit`]. It does not wait for background processes that keep the output open:
//! once the command itself has exited and the buffers are empty, the exec is over.

use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;

use nix::fcntl::{fcntl, FcntlArg, OFlag};
use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::unix::pipe::{Receiver, Sender};
use tokio::sync::mpsc;
use tracing::Instrument;
use warren_core::{
    Error, ExecControl, ExecEvent, ExecHandle, ExecRequest, ExitStatus, Result, WorkspacePath, WorkspaceSpec,
};
use warren_sys::spawn::{apply, Resource, SpawnOptions};

/// Bytes read from an output stream at a time (one event at most this big).
const CHUNK: usize = 64 << 10;

/// The end-of-file character written to a terminal when the caller closes stdin.
const VEOF: u8 = 0x04;

/// The rlimits a workspace's processes run with. See the crate docs for what each is worth.
pub(crate) fn rlimits(spec: &WorkspaceSpec) -> Vec<(Resource, u64)> {
    let l = &spec.limits;
    let mut r = vec![(Resource::Nofile, l.nofile), (Resource::Core, 0)];
    if let Some(p) = l.pids {
        r.push((Resource::Nproc, u64::from(p)));
    }
    if let Some(m) = l.memory_bytes {
        r.push((Resource::As, m));
    }
    if let Some(d) = l.disk_bytes {
        r.push((Resource::Fsize, d));
    }
    r
}

/// Resolves the request's working directory inside `home`: lexically with [`WorkspacePath`],
/// then on disk, refusing a symlink that leads out of the home.
pub(crate) fn resolve_cwd(home: &Path, cwd: Option<&str>) -> Result<PathBuf> {
    let Some(raw) = cwd else { return Ok(home.to_owned()) };
    let rel = WorkspacePath::new(raw)?;
    let real_home = std::fs::canonicalize(home)
        .map_err(|e| Error::io(format!("resolving the workspace home {}", home.display()), e))?;
    let dir = std::fs::canonicalize(real_home.join(rel.as_path())).map_err(|e| match e.kind() {
        io::ErrorKind::NotFound => Error::NotFound(format!("working directory {raw:?} in the workspace")),
        _ => Error::io(format!("resolving working directory {raw:?}"), e),
    })?;
    if !dir.starts_with(&real_home) {
        return Err(Error::InvalidPath {
            path: raw.to_owned(),
            reason: "resolves outside the workspace (through a symlink)".into(),
        });
    }
    if !dir.is_dir() {
        return Err(Error::InvalidPath { path: raw.to_owned(), reason: "is not a directory".into() });
    }
    Ok(dir)
}

fn set_nonblocking(fd: &OwnedFd, what: &str) -> Result<()> {
    let flags = fcntl(fd, FcntlArg::F_GETFL).map_err(|e| Error::errno(format!("reading the flags of {what}"), e))?;
    let flags = OFlag::from_bits_truncate(flags) | OFlag::O_NONBLOCK;
    fcntl(fd, FcntlArg::F_SETFL(flags)).map_err(|e| Error::errno(format!("making {what} non-blocking"), e))?;
    Ok(())
}

/// The read side of a pipe or pty master, driven by the runtime.
fn reader(fd: OwnedFd, what: &str) -> Result<Receiver> {
    set_nonblocking(&fd, what)?;
    Receiver::from_owned_fd_unchecked(fd).map_err(|e| Error::io(format!("registering {what} with the runtime"), e))
}

/// The write side of a pipe or pty master, driven by the runtime.
fn writer(fd: OwnedFd, what: &str) -> Result<Sender> {
    set_nonblocking(&fd, what)?;
    Sender::from_owned_fd_unchecked(fd).map_err(|e| Error::io(format!("registering {what} with the runtime"), e))
}

fn pipe(what: &str) -> Result<(OwnedFd, OwnedFd)> {
    nix::unistd::pipe2(OFlag::O_CLOEXEC).map_err(|e| Error::errno(format!("creating the {what} pipe"), e))
}

fn dup(fd: &OwnedFd) -> Result<Stdio> {
    Ok(Stdio::from(fd.try_clone().map_err(|e| Error::io("duplicating the terminal", e))?))
}

/// Starts `req` in the workspace whose home is `home` and returns its handle.
pub(crate) async fn start(spec: &WorkspaceSpec, home: &Path, req: ExecRequest) -> Result<ExecHandle> {
    req.validate()?;
    let cwd = resolve_cwd(home, req.cwd.as_deref())?;
    let home_str = home
        .to_str()
        .ok_or_else(|| Error::Internal(format!("workspace home {} is not valid UTF-8", home.display())))?;
    let env = req.environment(spec, home_str);
    let program = req.argv[0].clone();

    let mut cmd = tokio::process::Command::new(&program);
    cmd.args(&req.argv[1..]).env_clear().envs(env).current_dir(&cwd);
    let mut opts = SpawnOptions::new(spec.uid, spec.gid);
    opts.rlimits = rlimits(spec);
    opts.new_session = true;
    opts.controlling_tty = req.tty.is_some();

    // Parent ends: `out` (stdout, or the pty master), `err` (stderr; none with a pty) and
    // `input` (stdin, or the master again).
    let (out, err, input) = if let Some(size) = req.tty {
        let (master, slave) = warren_sys::pty::openpty(size.rows, size.cols)
            .map_err(|e| Error::Internal(format!("opening a pseudo-terminal: {e}")))?;
        // The workspace user owns its terminal, as after a login.
        std::os::unix::fs::fchown(&slave, Some(spec.uid), Some(spec.gid))
            .map_err(|e| Error::io("giving the terminal to the workspace user", e))?;
        cmd.stdin(dup(&slave)?).stdout(dup(&slave)?).stderr(Stdio::from(slave));
        let input =
            writer(master.try_clone().map_err(|e| Error::io("duplicating the pty master", e))?, "the pty master")?;
        (reader(master, "the pty master")?, None, input)
    } else {
        let (in_r, in_w) = pipe("stdin")?;
        let (out_r, out_w) = pipe("stdout")?;
        let (err_r, err_w) = pipe("stderr")?;
        cmd.stdin(Stdio::from(in_r)).stdout(Stdio::from(out_w)).stderr(Stdio::from(err_w));
        (reader(out_r, "the stdout pipe")?, Some(reader(err_r, "the stderr pipe")?), writer(in_w, "the stdin pipe")?)
    };
    apply(cmd.as_std_mut(), &opts);

    let spawned = cmd.spawn();
    // The command holds the child's ends of the pipes (or the pty slave): close them here, or
    // the output would never end.
    drop(cmd);
    let child = spawned.map_err(|e| spawn_error(spec, &program, &cwd, e))?;
    let pid = child.id().ok_or_else(|| Error::Internal(format!("{program:?} exited before its pid was known")))?;
    tracing::debug!(pid, program = %program, tty = req.tty.is_some(), "exec started");

    let (events_tx, events_rx) = mpsc::channel(64);
    let (control_tx, control_rx) = mpsc::channel(16);
    let (stdin_tx, stdin_rx) = mpsc::channel::<Vec<u8>>(16);
    let tty = req.tty.is_some();
    let writer = tokio::spawn(feed_stdin(input, stdin_rx, tty).in_current_span());
    let stdin = match req.stdin {
        // Bytes given up front (the sync exec passes them through the handle instead): feed
        // them, then close stdin.
        Some(bytes) => {
            tokio::spawn(async move {
                let _ = stdin_tx.send(bytes).await;
            });
            None
        }
        None => Some(stdin_tx),
    };
    let pump =
        Pump { child, pgid: Pid::from_raw(pid as i32), out, err, tty, events: events_tx, control: control_rx, writer };
    tokio::spawn(pump.run().instrument(tracing::info_span!("exec", pid)));
    Ok(ExecHandle { stdin, events: events_rx, control: control_tx })
}

fn spawn_error(spec: &WorkspaceSpec, program: &str, cwd: &Path, e: io::Error) -> Error {
    match (e.kind(), e.raw_os_error()) {
        (io::ErrorKind::NotFound, _) => {
            Error::NotFound(format!("program {program:?} (looked up in the workspace's PATH)"))
        }
        (io::ErrorKind::PermissionDenied, _) => Error::InvalidRequest(format!(
            "uid {} may not run {program:?} in {}: permission denied",
            spec.uid,
            cwd.display()
        )),
        (_, Some(nix::libc::EAGAIN)) => Error::Conflict(format!(
            "workspace of user {} has reached its process limit ({} processes); stop some first",
            spec.user,
            spec.limits.pids.map_or_else(|| "no".to_owned(), |p| p.to_string())
        )),
        _ => Error::io(format!("starting {program:?} in the workspace of user {}", spec.user), e),
    }
}

/// Writes what the caller sends to the command's stdin; closes it (or, on a terminal, types
/// end-of-file) when the caller drops the sender.
async fn feed_stdin(mut fd: Sender, mut rx: mpsc::Receiver<Vec<u8>>, tty: bool) {
    while let Some(chunk) = rx.recv().await {
        if let Err(e) = fd.write_all(&chunk).await {
            tracing::debug!(error = %e, "stdin closed by the command");
            return;
        }
    }
    if tty {
        let _ = fd.write_all(&[VEOF]).await;
    }
}

/// A read: some bytes, or the end of the stream (EOF, an error, or `EIO` from a pty whose
/// slave closed).
async fn read_some(fd: &mut Receiver, buf: &mut [u8]) -> Option<usize> {
    loop {
        match fd.read(buf).await {
            Ok(0) => return None,
            Ok(n) => return Some(n),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return None,
        }
    }
}

/// Reads what is buffered right now, without waiting for more. Reads the fd directly rather
/// than through the runtime, whose readiness flags may not have caught up yet.
fn drain_now(fd: &Receiver, buf: &mut [u8], mut sink: impl FnMut(&[u8])) {
    loop {
        match nix::unistd::read(fd.as_fd(), buf) {
            Ok(0) => return,
            Ok(n) => sink(&buf[..n]),
            Err(nix::errno::Errno::EINTR) => {}
            Err(_) => return, // EAGAIN: empty for now; EIO: the pty slave is closed
        }
    }
}

struct Pump {
    child: tokio::process::Child,
    pgid: Pid,
    out: Receiver,
    err: Option<Receiver>,
    tty: bool,
    events: mpsc::Sender<ExecEvent>,
    control: mpsc::Receiver<ExecControl>,
    writer: tokio::task::JoinHandle<()>,
}

impl Pump {
    fn kill(&self) {
        if let Err(e) = killpg(self.pgid, Signal::SIGKILL) {
            tracing::debug!(error = %e, "killing the process group");
        }
    }

    async fn run(mut self) {
        let mut out_buf = vec![0u8; CHUNK];
        let mut err_buf = vec![0u8; CHUNK];
        let (mut out_open, mut err_open, mut control_open) = (true, self.err.is_some(), true);
        let status = loop {
            tokio::select! {
                biased;
                _ = self.events.closed() => {
                    tracing::debug!("exec handle dropped: killing the process group");
                    self.kill();
                    let _ = self.child.wait().await;
                    self.writer.abort();
                    return;
                }
                n = read_some(&mut self.out, &mut out_buf), if out_open => match n {
                    Some(n) => {
                        if self.events.send(ExecEvent::Stdout(out_buf[..n].to_vec())).await.is_err() {
                            continue; // handled by `closed` above
                        }
                    }
                    None => out_open = false,
                },
                n = async { match &mut self.err { Some(fd) => read_some(fd, &mut err_buf).await, None => None } }, if err_open => match n {
                    Some(n) => {
                        if self.events.send(ExecEvent::Stderr(err_buf[..n].to_vec())).await.is_err() {
                            continue;
                        }
                    }
                    None => err_open = false,
                },
                ctl = self.control.recv(), if control_open => match ctl {
                    Some(ExecControl::Signal(sig)) => self.signal(sig),
                    Some(ExecControl::Resize(size)) => {
                        if self.tty {
                            if let Err(e) = warren_sys::pty::set_winsize(self.out.as_fd(), size.rows, size.cols) {
                                tracing::warn!(error = %e, "resizing the terminal");
                            }
                        }
                    }
                    None => control_open = false,
                },
                st = self.child.wait() => break st,
            }
        };
        // Everything the command wrote before it exited is in the pipe (or pty) buffers now.
        let mut tail = Vec::new();
        if out_open {
            drain_now(&self.out, &mut out_buf, |b| tail.push(ExecEvent::Stdout(b.to_vec())));
        }
        if let (Some(err), true) = (&self.err, err_open) {
            drain_now(err, &mut err_buf, |b| tail.push(ExecEvent::Stderr(b.to_vec())));
        }
        self.writer.abort();
        let exit = match status {
            Ok(st) => match st.signal() {
                Some(sig) => ExitStatus { code: 128 + sig, signal: Some(sig) },
                None => ExitStatus { code: st.code().unwrap_or(-1), signal: None },
            },
            Err(e) => {
                tracing::warn!(error = %e, "waiting for the command");
                ExitStatus { code: -1, signal: None }
            }
        };
        tracing::debug!(code = exit.code, signal = exit.signal, "exec ended");
        for ev in tail {
            if self.events.send(ev).await.is_err() {
                return;
            }
        }
        let _ = self.events.send(ExecEvent::Exit(exit)).await;
    }

    fn signal(&self, sig: i32) {
        match Signal::try_from(sig) {
            Ok(s) => {
                if let Err(e) = killpg(self.pgid, s) {
                    tracing::debug!(error = %e, sig, "signalling the process group");
                }
            }
            Err(_) => tracing::warn!(sig, "ignoring an unknown signal number"),
        }
    }
}
