//! The local terminal: raw mode for `warren shell`, restored on drop, and its size.

use std::io::IsTerminal;
use std::os::fd::AsFd;

use anyhow::{Context, Result};
use nix::sys::termios::{cfmakeraw, tcgetattr, tcsetattr, SetArg, Termios};
use warren_core::TtySize;

/// Puts stdin's terminal into raw mode; dropping it restores the settings it found.
#[derive(Debug)]
pub struct RawMode {
    saved: Termios,
}

impl RawMode {
    /// Switches stdin to raw mode (no echo, no line editing, no signals from keys: they all go
    /// to the remote terminal).
    pub fn enable() -> Result<Self> {
        let stdin = std::io::stdin();
        let saved = tcgetattr(stdin.as_fd()).context("reading the terminal's settings")?;
        let mut raw = saved.clone();
        cfmakeraw(&mut raw);
        tcsetattr(stdin.as_fd(), SetArg::TCSANOW, &raw).context("switching the terminal to raw mode")?;
        Ok(Self { saved })
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        // TCSADRAIN: output already written (the remote shell's last words) is shown first.
        if let Err(e) = tcsetattr(std::io::stdin().as_fd(), SetArg::TCSADRAIN, &self.saved) {
            eprintln!("warren: could not restore the terminal's settings ({e}); run `reset`");
        }
    }
}

/// The size of the terminal on stdout (or stdin), if either is one.
pub fn size() -> Option<TtySize> {
    let from = |fd: std::os::fd::BorrowedFd<'_>| warren_sys::pty::winsize(fd).ok();
    let stdout = std::io::stdout();
    let stdin = std::io::stdin();
    let (rows, cols) = if stdout.is_terminal() {
        from(stdout.as_fd())
    } else if stdin.is_terminal() {
        from(stdin.as_fd())
    } else {
        None
    }?;
    (rows > 0 && cols > 0).then_some(TtySize { rows, cols })
}
