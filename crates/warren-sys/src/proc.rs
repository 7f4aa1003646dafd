//! Reading `/proc/<pid>`: a pid plus its start time names one process for good (pids are reused).

use std::path::Path;

/// What `/proc/<pid>/stat` says about a process.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProcStat {
    /// State letter (`R`, `S`, `Z`, ...).
    pub state: char,
    /// Parent pid.
    pub ppid: u32,
    /// Start time in clock ticks since boot.
    pub start_time: u64,
}

/// Parses `/proc/<pid>/stat`; `None` if the process does not exist.
pub fn stat(pid: u32) -> Option<ProcStat> {
    let s = std::fs::read_to_string(Path::new("/proc").join(pid.to_string()).join("stat")).ok()?;
    parse_stat(&s)
}

fn parse_stat(s: &str) -> Option<ProcStat> {
    // The command name may hold spaces and parentheses: fields start after the last ')'.
    let rest = &s[s.rfind(')')? + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    Some(ProcStat {
        state: f.first()?.chars().next()?,
        ppid: f.get(1)?.parse().ok()?,
        start_time: f.get(19)?.parse().ok()?,
    })
}

/// True if `pid` is alive (not a zombie) and started at `start_time`.
pub fn is_alive(pid: u32, start_time: u64) -> bool {
    matches!(stat(pid), Some(st) if st.start_time == start_time && st.state != 'Z' && st.state != 'X')
}

/// Number of threads of the calling process.
pub fn thread_count() -> usize {
    std::fs::read_dir("/proc/self/task").map(|d| d.count()).unwrap_or(usize::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_odd_names() {
        let s = "42 (a) b (c)) S 1 42 42 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 12345 1000 10";
        let st = parse_stat(s).expect("parses");
        assert_eq!(st.state, 'S');
        assert_eq!(st.ppid, 1);
        assert_eq!(st.start_time, 12345);
        let me = stat(std::process::id()).expect("self");
        assert!(is_alive(std::process::id(), me.start_time));
        assert!(!is_alive(std::process::id(), me.start_time + 1));
    }
}

/// Kills the process `pid` that started at `start_time` and waits up to `timeout` for it to
/// exit; true if it is gone. Race-free against pid reuse: the signal goes through a pidfd opened
/// and then checked against the start time, so it can only reach that process.
pub fn kill_and_wait(pid: u32, start_time: u64, timeout: std::time::Duration) -> bool {
    use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
    if !is_alive(pid, start_time) {
        return true;
    }
    // SAFETY: pidfd_open takes a pid and flags and returns a new descriptor or -1.
    let raw = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0 as libc::c_uint) };
    if raw < 0 {
        // The process is gone already (ESRCH), or the kernel predates pidfds (< 5.3).
        return !is_alive(pid, start_time);
    }
    // SAFETY: the kernel just returned this descriptor to us; nothing else owns it.
    let fd = unsafe { OwnedFd::from_raw_fd(raw as i32) };
    // The pid may have been reused between the check above and pidfd_open: check again, now
    // that the descriptor pins the process it names.
    if !is_alive(pid, start_time) {
        return true;
    }
    // SAFETY: pidfd_send_signal takes the pidfd, a signal number, a null siginfo and flags 0.
    let r = unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            fd.as_raw_fd(),
            libc::SIGKILL,
            std::ptr::null::<libc::siginfo_t>(),
            0,
        )
    };
    if r < 0 {
        return !is_alive(pid, start_time);
    }
    let deadline = std::time::Instant::now() + timeout;
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        let ms = u16::try_from(left.as_millis()).unwrap_or(u16::MAX);
        let mut pfd = [nix::poll::PollFd::new(fd.as_fd(), nix::poll::PollFlags::POLLIN)];
        let _ = nix::poll::poll(&mut pfd, nix::poll::PollTimeout::from(ms));
        if !is_alive(pid, start_time) {
            return true;
        }
        if left.is_zero() {
            return false;
        }
    }
}

#[cfg(test)]
mod kill_tests {
    use super::*;

    #[test]
    fn kills_only_the_named_process() {
        let mut child = std::process::Command::new("sleep").arg("1000").spawn().expect("spawn");
        let pid = child.id();
        let st = stat(pid).expect("alive").start_time;
        // A wrong start time names another process that had this pid: "gone", and nothing is killed.
        assert!(kill_and_wait(pid, st + 1, std::time::Duration::from_millis(50)));
        assert!(is_alive(pid, st), "a start-time mismatch must not kill");
        assert!(kill_and_wait(pid, st, std::time::Duration::from_secs(5)));
        let _ = child.wait();
    }
}
