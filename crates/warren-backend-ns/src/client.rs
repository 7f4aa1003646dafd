//! warren's side of an exec: connect to the init, pass stdio, pump bytes, report the exit.

use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::net::UnixStream as StdUnixStream;
use std::path::Path;

use nix::fcntl::OFlag;
use tokio::io::unix::AsyncFd;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;
use tokio::sync::mpsc;
use warren_core::{Error, ExecControl, ExecEvent, ExecHandle, ExitStatus, Result};
use warren_sys::fdio::{self, Recv};

use crate::proto::{Reply, Request};

const CHUNK: usize = 64 << 10;

fn set_nonblocking(fd: &OwnedFd) -> Result<()> {
    let flags = nix::fcntl::fcntl(fd.as_fd(), nix::fcntl::FcntlArg::F_GETFL).map_err(|e| Error::errno("fcntl", e))?;
    let flags = OFlag::from_bits_truncate(flags) | OFlag::O_NONBLOCK;
    nix::fcntl::fcntl(fd.as_fd(), nix::fcntl::FcntlArg::F_SETFL(flags)).map_err(|e| Error::errno("fcntl", e))?;
    Ok(())
}

fn pipe() -> Result<(OwnedFd, OwnedFd)> {
    nix::unistd::pipe2(OFlag::O_CLOEXEC).map_err(|e| Error::errno("creating a pipe", e))
}

/// Starts `req` in the workspace whose init listens on `sock_path`.
pub async fn exec(sock_path: &Path, req: Request, workspace: String) -> Result<ExecHandle> {
    let tty = matches!(req, Request::Exec { tty: Some(_), .. });
    let stream = StdUnixStream::connect(sock_path).map_err(|e| {
        Error::Conflict(format!(
            "workspace {workspace} is not reachable ({e}); it may have been stopped: start it again"
        ))
    })?;
    let payload = serde_json::to_vec(&req).map_err(|e| Error::Internal(format!("encoding request: {e}")))?;
    let (ours, child_fds): (Vec<OwnedFd>, Vec<OwnedFd>) = if tty {
        (vec![], vec![])
    } else {
        let (in_r, in_w) = pipe()?;
        let (out_r, out_w) = pipe()?;
        let (err_r, err_w) = pipe()?;
        (vec![in_w, out_r, err_r], vec![in_r, out_w, err_w])
    };
    let borrowed: Vec<_> = child_fds.iter().map(|f| f.as_fd()).collect();
    fdio::send_frame(stream.as_fd(), &payload, &borrowed)
        .map_err(|e| Error::Internal(format!("workspace {workspace}: {e}")))?;
    drop(borrowed);
    drop(child_fds);
    let (reply, mut fds) = match fdio::recv_frame(stream.as_fd()) {
        Ok(Recv::Frame(b, fds)) => {
            let r: Reply = serde_json::from_slice(&b)
                .map_err(|e| Error::Internal(format!("bad reply from workspace init: {e}")))?;
            (r, fds)
        }
        Ok(Recv::Eof) => {
            return Err(Error::Conflict(format!("workspace {workspace} closed the connection; is it stopping?")))
        }
        Err(e) => return Err(Error::Internal(format!("workspace {workspace}: {e}"))),
    };
    match reply {
        Reply::Started { .. } => {}
        Reply::Error { message } => return Err(Error::InvalidRequest(message)),
        Reply::Exited { .. } => return Err(Error::Internal("workspace init replied out of order".into())),
    }
    stream.set_nonblocking(true).map_err(|e| Error::io("socket", e))?;
    let sock = UnixStream::from_std(stream).map_err(|e| Error::io("socket", e))?;

    let (ev_tx, ev_rx) = mpsc::channel(64);
    let (in_tx, in_rx) = mpsc::channel::<Vec<u8>>(16);
    let (ctl_tx, ctl_rx) = mpsc::channel(8);
    let io = if tty {
        let master = fds.pop().ok_or_else(|| Error::Internal("workspace init sent no terminal".into()))?;
        set_nonblocking(&master)?;
        let dup = master.try_clone().map_err(|e| Error::io("dup", e))?;
        Io { stdin: Some(afd(dup)?), stdout: Some(afd(master)?), stderr: None, tty: true }
    } else {
        let mut it = ours.into_iter();
        let (Some(i), Some(o), Some(e)) = (it.next(), it.next(), it.next()) else {
            return Err(Error::Internal("pipe set-up failed".into()));
        };
        for f in [&i, &o, &e] {
            set_nonblocking(f)?;
        }
        Io { stdin: Some(afd(i)?), stdout: Some(afd(o)?), stderr: Some(afd(e)?), tty: false }
    };
    tokio::spawn(pump(sock, io, ev_tx, in_rx, ctl_rx));
    Ok(ExecHandle { stdin: Some(in_tx), events: ev_rx, control: ctl_tx })
}

// `AsyncFd::new` is deprecated for arbitrary `AsRawFd` types; an `OwnedFd` is I/O-safe: the
// AsyncFd owns it until dropped, so nothing else can close or reuse the number meanwhile.
#[allow(deprecated)]
fn afd(fd: OwnedFd) -> Result<AsyncFd<OwnedFd>> {
    AsyncFd::new(fd).map_err(|e| Error::io("registering a descriptor", e))
}

struct Io {
    stdin: Option<AsyncFd<OwnedFd>>,
    stdout: Option<AsyncFd<OwnedFd>>,
    stderr: Option<AsyncFd<OwnedFd>>,
    tty: bool,
}

enum ReadOutcome {
    Data(Vec<u8>),
    Eof,
}

/// Reads what is there (at most `buf.len()` bytes, through the reused scratch `buf`: a terminal
/// gives a few KiB a read, and a fresh zeroed 64 KiB buffer per read cost more than the read).
async fn read_some(fd: &AsyncFd<OwnedFd>, buf: &mut [u8]) -> ReadOutcome {
    loop {
        let Ok(mut guard) = fd.readable().await else { return ReadOutcome::Eof };
        match guard.try_io(|inner| nix::unistd::read(inner.get_ref().as_fd(), buf).map_err(std::io::Error::from)) {
            Ok(Ok(0)) => return ReadOutcome::Eof,
            Ok(Ok(n)) => return ReadOutcome::Data(buf[..n].to_vec()),
            // EIO: the terminal's last holder went away.
            Ok(Err(_)) => return ReadOutcome::Eof,
            Err(_would_block) => continue,
        }
    }
}

/// Reads whatever is already buffered, without waiting.
fn drain_now(fd: &AsyncFd<OwnedFd>) -> Vec<u8> {
    let mut out = Vec::new();
    let mut buf = vec![0u8; CHUNK];
    loop {
        match nix::unistd::read(fd.get_ref().as_fd(), &mut buf) {
            Ok(0) | Err(_) => return out,
            Ok(n) => out.extend_from_slice(&buf[..n]),
        }
    }
}

async fn write_all(fd: &AsyncFd<OwnedFd>, mut data: &[u8]) -> bool {
    while !data.is_empty() {
        let Ok(mut guard) = fd.writable().await else { return false };
        match guard.try_io(|inner| nix::unistd::write(inner.get_ref(), data).map_err(std::io::Error::from)) {
            Ok(Ok(n)) => data = &data[n..],
            Ok(Err(_)) => return false,
            Err(_would_block) => continue,
        }
    }
    true
}

async fn read_reply(sock: &mut tokio::net::unix::OwnedReadHalf) -> Option<Reply> {
    let mut hdr = [0u8; 4];
    sock.read_exact(&mut hdr).await.ok()?;
    let len = u32::from_le_bytes(hdr) as usize;
    if len > fdio::MAX_FRAME {
        return None;
    }
    let mut b = vec![0u8; len];
    sock.read_exact(&mut b).await.ok()?;
    serde_json::from_slice(&b).ok()
}

async fn pump(
    sock: UnixStream,
    mut io: Io,
    ev: mpsc::Sender<ExecEvent>,
    mut stdin_rx: mpsc::Receiver<Vec<u8>>,
    mut ctl: mpsc::Receiver<ExecControl>,
) {
    let (mut sock_r, mut sock_w) = sock.into_split();
    // The init's reply arrives on its own task: reading a frame is not cancel-safe inside select!.
    let (exit_tx, mut exit_rx) = tokio::sync::oneshot::channel();
    let reader = tokio::spawn(async move {
        let status = match read_reply(&mut sock_r).await {
            Some(Reply::Exited { code, signal }) => ExitStatus { code, signal },
            // The init went away (the workspace was stopped): report it like a SIGKILL.
            _ => ExitStatus { code: 137, signal: Some(9) },
        };
        let _ = exit_tx.send(status);
        sock_r
    });
    // Stdin is written on its own task, so a command that only reads once its output was taken
    // (`cat` of a large input) never deadlocks against us.
    let stdin_fd = io.stdin.take();
    let tty = io.tty;
    let writer = tokio::spawn(async move {
        let Some(fd) = stdin_fd else { return };
        while let Some(b) = stdin_rx.recv().await {
            if !write_all(&fd, &b).await && !tty {
                return;
            }
        }
        if tty {
            // Closing the master would hang up the terminal; send EOF (^D) instead.
            let _ = write_all(&fd, &[4]).await;
            std::future::pending::<()>().await;
        }
        // Dropping `fd` closes the command's stdin.
    });
    let mut ctl_open = true;
    let (mut out_buf, mut err_buf) = (vec![0u8; CHUNK], vec![0u8; CHUNK]);
    let exit = loop {
        tokio::select! {
            r = async { read_some(io.stdout.as_ref().expect("guarded"), &mut out_buf).await }, if io.stdout.is_some() => match r {
                ReadOutcome::Data(b) => if ev.send(ExecEvent::Stdout(b)).await.is_err() { break None },
                ReadOutcome::Eof => io.stdout = None,
            },
            r = async { read_some(io.stderr.as_ref().expect("guarded"), &mut err_buf).await }, if io.stderr.is_some() => match r {
                ReadOutcome::Data(b) => if ev.send(ExecEvent::Stderr(b)).await.is_err() { break None },
                ReadOutcome::Eof => io.stderr = None,
            },
            c = ctl.recv(), if ctl_open => match c {
                Some(ExecControl::Resize(sz)) => {
                    if let Some(fd) = io.stdout.as_ref().filter(|_| io.tty) {
                        let _ = warren_sys::pty::set_winsize(fd.get_ref().as_fd(), sz.rows, sz.cols);
                    }
                }
                Some(ExecControl::Signal(sig)) => {
                    let Ok(b) = serde_json::to_vec(&Request::Signal { sig }) else { continue };
                    let mut frame = (b.len() as u32).to_le_bytes().to_vec();
                    frame.extend_from_slice(&b);
                    let _ = sock_w.write_all(&frame).await;
                }
                None => ctl_open = false,
            },
            st = &mut exit_rx => break st.ok(),
            _ = ev.closed() => break None,
        }
    };
    writer.abort();
    let Some(exit) = exit else {
        // The caller dropped the handle: closing both halves of the socket kills the command.
        reader.abort();
        return;
    };
    // Output written just before the exit is already buffered: take it without waiting for
    // more (a background process may hold the pipe open for ever). A terminal's output passes
    // through the line discipline asynchronously: give it a moment to reach the master.
    if io.tty {
        if let Some(fd) = io.stdout.as_ref() {
            let deadline = tokio::time::Instant::now() + std::time::Duration::from_millis(200);
            while let Ok(ReadOutcome::Data(b)) = tokio::time::timeout_at(deadline, read_some(fd, &mut out_buf)).await {
                if ev.send(ExecEvent::Stdout(b)).await.is_err() {
                    return;
                }
            }
        }
    } else {
        for (fd, is_err) in [(io.stdout.as_ref(), false), (io.stderr.as_ref(), true)] {
            if let Some(fd) = fd {
                let b = drain_now(fd);
                if !b.is_empty() {
                    let e = if is_err { ExecEvent::Stderr(b) } else { ExecEvent::Stdout(b) };
                    if ev.send(e).await.is_err() {
                        return;
                    }
                }
            }
        }
    }
    let _ = ev.send(ExecEvent::Exit(exit)).await;
    drop(sock_w);
    if let Ok(r) = reader.await {
        drop(r);
    }
}
