//! Pseudo-terminal pairs and window sizes.
//!
//! [`openpty`] opens `/dev/ptmx` with `O_CLOEXEC` from the start (no window in which a
//! concurrently spawned process could inherit it) and gets the slave with `TIOCGPTPEER`, which
//! opens it through the master instead of by path (falling back to the path on kernels older
//! than 4.13). Both ends are close-on-exec; give the slave to a child as its stdio (std dups it
//! onto fds 0-2, which clears the flag there) and make it the controlling terminal with
//! [`crate::spawn::SpawnOptions::controlling_tty`].
//!
//! Reading the master returns `EIO` once every copy of the slave is closed: treat it as the end
//! of output.

use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};

use nix::fcntl::OFlag;
use nix::pty::{grantpt, posix_openpt, ptsname_r, unlockpt};
use nix::sys::stat::Mode;

use crate::{Result, SysError};

/// Opens a new pseudo-terminal of `rows` x `cols`; returns `(master, slave)`, both close-on-exec
/// and neither a controlling terminal of this process.
pub fn openpty(rows: u16, cols: u16) -> Result<(OwnedFd, OwnedFd)> {
    let flags = OFlag::O_RDWR | OFlag::O_NOCTTY | OFlag::O_CLOEXEC;
    let master = posix_openpt(flags).map_err(|e| SysError::errno("opening /dev/ptmx", e))?;
    grantpt(&master).map_err(|e| SysError::errno("grantpt on a new pty", e))?;
    unlockpt(&master).map_err(|e| SysError::errno("unlockpt on a new pty", e))?;
    // SAFETY: TIOCGPTPEER takes the open flags as an integer argument and returns a new fd.
    let peer = unsafe { libc::ioctl(master.as_raw_fd(), libc::TIOCGPTPEER, flags.bits()) };
    let slave = if peer >= 0 {
        // SAFETY: the ioctl just returned this fd, open and owned by nobody else.
        unsafe { OwnedFd::from_raw_fd(peer) }
    } else {
        let errno = nix::errno::Errno::last();
        if !matches!(errno, nix::errno::Errno::EINVAL | nix::errno::Errno::ENOTTY) {
            return Err(SysError::errno("opening the slave of a new pty", errno));
        }
        let name = ptsname_r(&master).map_err(|e| SysError::errno("ptsname of a new pty", e))?;
        nix::fcntl::open(name.as_str(), flags, Mode::empty())
            .map_err(|e| SysError::errno(format!("opening pty slave {name}"), e))?
    };
    let master = OwnedFd::from(master);
    set_winsize(&slave, rows, cols)?;
    Ok((master, slave))
}

/// Sets the window size of the terminal `fd` (either end of a pty); the terminal's foreground
/// process group gets `SIGWINCH`.
pub fn set_winsize(fd: impl AsFd, rows: u16, cols: u16) -> Result<()> {
    let ws = libc::winsize { ws_row: rows, ws_col: cols, ws_xpixel: 0, ws_ypixel: 0 };
    // SAFETY: TIOCSWINSZ reads a `winsize` through the pointer, which is valid for the call.
    let r = unsafe { libc::ioctl(fd.as_fd().as_raw_fd(), libc::TIOCSWINSZ, &ws as *const libc::winsize) };
    if r < 0 {
        return Err(SysError::errno("setting a terminal's window size", nix::errno::Errno::last()));
    }
    Ok(())
}

/// The window size `(rows, cols)` of the terminal `fd`.
pub fn winsize(fd: impl AsFd) -> Result<(u16, u16)> {
    let mut ws = libc::winsize { ws_row: 0, ws_col: 0, ws_xpixel: 0, ws_ypixel: 0 };
    // SAFETY: TIOCGWINSZ writes a `winsize` through the pointer, which is valid and writable.
    let r = unsafe { libc::ioctl(fd.as_fd().as_raw_fd(), libc::TIOCGWINSZ, &mut ws as *mut libc::winsize) };
    if r < 0 {
        return Err(SysError::errno("reading a terminal's window size", nix::errno::Errno::last()));
    }
    Ok((ws.ws_row, ws.ws_col))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spawn::{apply, SpawnOptions};
    use std::io::Read;
    use std::process::{Command, Stdio};

    fn is_cloexec(fd: &OwnedFd) -> bool {
        let flags = nix::fcntl::fcntl(fd, nix::fcntl::FcntlArg::F_GETFD).expect("F_GETFD");
        nix::fcntl::FdFlag::from_bits_truncate(flags).contains(nix::fcntl::FdFlag::FD_CLOEXEC)
    }

    /// Reads the master until `EIO` (every slave closed).
    fn read_all(master: OwnedFd) -> String {
        let mut f = std::fs::File::from(master);
        let mut out = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            match f.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => out.extend_from_slice(&buf[..n]),
                Err(e) if e.raw_os_error() == Some(libc::EIO) => break,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => panic!("reading the pty: {e}"),
            }
        }
        String::from_utf8_lossy(&out).into_owned()
    }

    #[test]
    fn sizes_and_flags() {
        let (master, slave) = openpty(24, 80).expect("openpty");
        assert!(is_cloexec(&master) && is_cloexec(&slave));
        assert_eq!(winsize(&slave).expect("size"), (24, 80));
        set_winsize(&master, 50, 132).expect("resize");
        assert_eq!(winsize(&slave).expect("size"), (50, 132));
        assert!(nix::unistd::isatty(&slave).expect("isatty"));
    }

    #[test]
    fn a_child_gets_a_controlling_terminal() {
        let uid = 2_000_005;
        let (master, slave) = openpty(33, 101).expect("openpty");
        let mut cmd = Command::new("/bin/sh");
        cmd.arg("-c")
            .arg("tty; stty size; test -t 0 && echo interactive; id -u; echo $$ $(cut -d' ' -f8 /proc/$$/stat)");
        cmd.current_dir("/").env_clear().env("PATH", "/usr/bin:/bin");
        let io = |fd: &OwnedFd| Stdio::from(fd.try_clone().expect("dup"));
        cmd.stdin(io(&slave)).stdout(io(&slave)).stderr(io(&slave));
        let mut opts = SpawnOptions::new(uid, uid);
        opts.new_session = true;
        opts.controlling_tty = true;
        apply(&mut cmd, &opts);
        let mut child = cmd.spawn().expect("spawn");
        drop(cmd);
        drop(slave);
        let out = read_all(master);
        assert!(child.wait().expect("wait").success(), "{out}");
        let lines: Vec<&str> = out.lines().map(|l| l.trim_end_matches('\r')).collect();
        assert!(lines[0].starts_with("/dev/pts/"), "{out}");
        assert_eq!(lines[1], "33 101", "{out}");
        assert_eq!(lines[2], "interactive", "{out}");
        assert_eq!(lines[3], uid.to_string(), "{out}");
        // The terminal's foreground process group (field 8 of stat) is the shell's own.
        let ids: Vec<&str> = lines[4].split(' ').collect();
        assert_eq!(ids[0], ids[1], "{out}");
    }
}
