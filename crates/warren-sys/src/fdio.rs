//! Framed messages with file descriptors over unix stream sockets, and fd hygiene.
//!
//! A frame is a 4-byte little-endian length and that many bytes; descriptors ride on the first
//! byte of the frame (`SCM_RIGHTS`). The kernel never merges data across a boundary that carries
//! descriptors, so a reader that reads one frame at a time gets them with the right frame.

use std::io::IoSlice;
use std::io::IoSliceMut;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

use nix::errno::Errno;
use nix::sys::socket::{recvmsg, sendmsg, ControlMessage, ControlMessageOwned, MsgFlags};

use crate::{Result, SysError};

/// Largest frame accepted.
pub const MAX_FRAME: usize = 1 << 20;
/// Most descriptors in one frame.
pub const MAX_FDS: usize = 4;

/// Sends one frame with `fds` attached. Blocks until it is written (frames are small).
pub fn send_frame(sock: BorrowedFd<'_>, payload: &[u8], fds: &[BorrowedFd<'_>]) -> Result<()> {
    if payload.len() > MAX_FRAME {
        return Err(SysError::Invalid(format!("frame of {} bytes is over the {MAX_FRAME}-byte limit", payload.len())));
    }
    let len = (payload.len() as u32).to_le_bytes();
    let raw: Vec<RawFd> = fds.iter().map(|f| f.as_raw_fd()).collect();
    let cmsgs = if raw.is_empty() { vec![] } else { vec![ControlMessage::ScmRights(&raw)] };
    let mut sent = 0usize;
    let total = 4 + payload.len();
    while sent < total {
        let (a, b): (&[u8], &[u8]) = if sent < 4 { (&len[sent..], payload) } else { (&[], &payload[sent - 4..]) };
        let iov = [IoSlice::new(a), IoSlice::new(b)];
        let c: &[ControlMessage<'_>] = if sent == 0 { &cmsgs } else { &[] };
        match sendmsg::<()>(sock.as_raw_fd(), &iov, c, MsgFlags::MSG_NOSIGNAL, None) {
            Ok(n) => sent += n,
            Err(Errno::EINTR) => continue,
            Err(Errno::EAGAIN) => {
                let mut pfd = [nix::poll::PollFd::new(sock, nix::poll::PollFlags::POLLOUT)];
                let _ = nix::poll::poll(&mut pfd, nix::poll::PollTimeout::from(1000u16));
            }
            Err(e) => return Err(SysError::errno("sending a frame", e)),
        }
    }
    Ok(())
}

/// Outcome of reading a frame from a non-blocking socket.
#[derive(Debug)]
pub enum Recv {
    /// A whole frame and its descriptors.
    Frame(Vec<u8>, Vec<OwnedFd>),
    /// The peer closed the connection cleanly between frames.
    Eof,
}

/// Reads one frame, blocking (polling a non-blocking socket) until it is complete.
pub fn recv_frame(sock: BorrowedFd<'_>) -> Result<Recv> {
    let mut fds = Vec::new();
    let mut hdr = [0u8; 4];
    let mut got = 0;
    while got < 4 {
        match recv_some(sock, &mut hdr[got..], &mut fds)? {
            0 if got == 0 => return Ok(Recv::Eof),
            0 => return Err(SysError::Invalid("connection closed in the middle of a frame header".into())),
            n => got += n,
        }
    }
    let len = u32::from_le_bytes(hdr) as usize;
    if len > MAX_FRAME {
        return Err(SysError::Invalid(format!("peer sent a {len}-byte frame, over the {MAX_FRAME}-byte limit")));
    }
    let mut buf = vec![0u8; len];
    let mut got = 0;
    while got < len {
        match recv_some(sock, &mut buf[got..], &mut fds)? {
            0 => return Err(SysError::Invalid("connection closed in the middle of a frame".into())),
            n => got += n,
        }
    }
    Ok(Recv::Frame(buf, fds))
}

fn recv_some(sock: BorrowedFd<'_>, buf: &mut [u8], fds: &mut Vec<OwnedFd>) -> Result<usize> {
    loop {
        let mut cmsg = nix::cmsg_space!([RawFd; MAX_FDS]);
        let mut iov = [IoSliceMut::new(buf)];
        match recvmsg::<()>(sock.as_raw_fd(), &mut iov, Some(&mut cmsg), MsgFlags::MSG_CMSG_CLOEXEC) {
            Ok(msg) => {
                for c in msg.cmsgs().map_err(|e| SysError::errno("reading control messages", e))? {
                    if let ControlMessageOwned::ScmRights(rfds) = c {
                        for fd in rfds {
                            // SAFETY: SCM_RIGHTS just installed `fd` in our table; nobody else owns it.
                            fds.push(unsafe { OwnedFd::from_raw_fd(fd) });
                        }
                    }
                }
                if msg.flags.contains(MsgFlags::MSG_CTRUNC) {
                    return Err(SysError::Invalid(format!("peer sent more than {MAX_FDS} descriptors")));
                }
                return Ok(msg.bytes);
            }
            Err(Errno::EINTR) => continue,
            Err(Errno::EAGAIN) => {
                let mut pfd = [nix::poll::PollFd::new(sock, nix::poll::PollFlags::POLLIN)];
                let _ = nix::poll::poll(&mut pfd, nix::poll::PollTimeout::NONE);
            }
            Err(e) => return Err(SysError::errno("receiving a frame", e)),
        }
    }
}

/// Closes every descriptor numbered `from` or above, except those in `keep`.
pub fn close_fds_from(from: RawFd, keep: &[RawFd]) -> Result<()> {
    let mut keep: Vec<RawFd> = keep.iter().copied().filter(|k| *k >= from).collect();
    keep.sort_unstable();
    let mut lo = from;
    for k in keep.iter().copied().chain(std::iter::once(RawFd::MAX)) {
        if k > lo {
            let hi = if k == RawFd::MAX { u32::MAX } else { (k - 1) as u32 };
            // SAFETY: close_range only closes descriptors; the ones the caller still needs are
            // excluded by construction, and no Rust object outlives this for the closed ones
            // because callers use this right before exec or in a freshly forked init.
            let r = unsafe { libc::syscall(libc::SYS_close_range, lo as u32, hi, 0u32) };
            if r != 0 {
                return Err(SysError::errno("closing inherited descriptors", Errno::last()));
            }
        }
        lo = k.saturating_add(1);
    }
    Ok(())
}
