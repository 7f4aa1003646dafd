//! Namespaces and process creation for the namespace backend.
//!
//! Most namespace work (unshare, mount, pivot_root, sethostname) is safe through `nix` and is
//! done by the backend; what needs `unsafe` lives here: forking, and bringing up loopback.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use nix::errno::Errno;
pub use nix::unistd::ForkResult;

use crate::{Result, SysError};

/// Forks, but only if the calling process has exactly one thread, so that the child may run
/// arbitrary code (allocate, take locks) before it execs or for ever, as a workspace's init.
pub fn fork_single_threaded() -> Result<ForkResult> {
    let threads = crate::proc::thread_count();
    if threads != 1 {
        return Err(SysError::Invalid(format!(
            "refusing to fork a process with {threads} threads: the child could deadlock; fork from the single-threaded helper"
        )));
    }
    // SAFETY: the process has one thread (checked above, and nothing here starts threads), so
    // no lock can be held by another thread at the moment of the fork and the child may run any code.
    unsafe { nix::unistd::fork() }.map_err(|e| SysError::errno("fork", e))
}

/// Brings the loopback interface of the current network namespace up.
pub fn loopback_up() -> Result<()> {
    // SAFETY: plain socket(2); the result is checked before use and owned right away.
    let raw = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if raw < 0 {
        return Err(SysError::errno("opening a socket to configure loopback", Errno::last()));
    }
    // SAFETY: `raw` is a fresh descriptor we own.
    let sock = unsafe { OwnedFd::from_raw_fd(raw) };
    // SAFETY: ifreq is plain old data; all-zero is a valid value.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (d, s) in req.ifr_name.iter_mut().zip(b"lo\0") {
        *d = *s as libc::c_char;
    }
    // SAFETY: SIOCGIFFLAGS reads the interface name from `req` and writes its flags into it.
    if unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCGIFFLAGS, &mut req) } < 0 {
        return Err(SysError::errno("reading loopback flags", Errno::last()));
    }
    // SAFETY: the flags member of the union was just written by the kernel.
    unsafe {
        req.ifr_ifru.ifru_flags |= (libc::IFF_UP | libc::IFF_RUNNING) as libc::c_short;
    }
    // SAFETY: SIOCSIFFLAGS reads `req`, which is fully initialised.
    if unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCSIFFLAGS, &req) } < 0 {
        return Err(SysError::errno("bringing loopback up", Errno::last()));
    }
    Ok(())
}

/// Resets every signal disposition to default and unblocks all signals (for a child about to
/// exec, which must not inherit its parent's blocked SIGCHLD or ignored SIGPIPE).
pub fn reset_signals() -> Result<()> {
    use nix::sys::signal::{sigaction, SaFlags, SigAction, SigHandler, SigSet, Signal};
    for sig in Signal::iterator() {
        if matches!(sig, Signal::SIGKILL | Signal::SIGSTOP) {
            continue;
        }
        let dfl = SigAction::new(SigHandler::SigDfl, SaFlags::empty(), SigSet::empty());
        // SAFETY: installing SIG_DFL has no handler code to be unsound.
        let _ = unsafe { sigaction(sig, &dfl) };
    }
    SigSet::all().thread_unblock().map_err(|e| SysError::errno("unblocking signals", e))
}

/// Makes `fd` the controlling terminal of the calling process (which must be a session leader).
pub fn set_controlling_tty(fd: std::os::fd::BorrowedFd<'_>) -> Result<()> {
    // SAFETY: TIOCSCTTY takes an integer argument; `fd` is a valid open descriptor.
    if unsafe { libc::ioctl(fd.as_raw_fd(), libc::TIOCSCTTY, 0) } < 0 {
        return Err(SysError::errno("setting the controlling terminal", Errno::last()));
    }
    Ok(())
}

/// Sets the calling process's parent-death signal.
pub fn die_with_parent(sig: libc::c_int) -> Result<()> {
    // SAFETY: integer-only prctl.
    if unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, sig as libc::c_ulong, 0, 0, 0) } < 0 {
        return Err(SysError::errno("setting the parent-death signal", Errno::last()));
    }
    Ok(())
}

/// Makes descriptor number `target` a copy of `fd` (dup2). Used in a freshly forked child to
/// install stdio; `target` must not be a descriptor some Rust object still owns.
pub fn dup_onto(fd: std::os::fd::BorrowedFd<'_>, target: std::os::fd::RawFd) -> Result<()> {
    // SAFETY: dup2 onto 0..=2 in a child that is about to exec; nothing in this process owns
    // those numbers as an OwnedFd (the init's stdio is /dev/null, not wrapped).
    let r = unsafe { libc::dup2(fd.as_raw_fd(), target) };
    if r < 0 {
        return Err(SysError::errno(format!("dup2 onto fd {target}"), Errno::last()));
    }
    Ok(())
}

/// Ends the process at once, without running exit handlers or flushing buffers inherited
/// from the parent (for a forked child whose exec failed).
pub fn exit_now(code: i32) -> ! {
    // SAFETY: _exit never returns and touches no user-space state.
    unsafe { libc::_exit(code) }
}
