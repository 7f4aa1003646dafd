//! Spawning host processes as another uid, with rlimits, a new session and a controlling
//! terminal; and killing every process of a uid at once.
//!
//! [`apply`] configures a [`std::process::Command`] (or the one inside a
//! `tokio::process::Command`, via `as_std_mut`): std itself switches to the gid and uid (and,
//! because the parent is root, drops the supplementary groups first), then a `pre_exec` hook runs
//! in the child, after the uid switch and right before `execve`. The hook only makes
//! async-signal-safe system calls and never allocates: `sigaction` (every signal back to its
//! default disposition, so signals the parent ignores are not ignored by the child), `setsid`,
//! `ioctl(TIOCSCTTY)`, `setrlimit`, `prctl`.
//!
//! Because the hook runs after the switch to the unprivileged uid, a limit cannot be raised above
//! the hard limit the parent already has; such a request is clamped down to that hard limit (the
//! stricter value wins).

use std::io;
use std::os::unix::process::CommandExt;
use std::process::Command;

use crate::{Result, SysError};

/// A resource limit (`setrlimit(2)`); the value is set as both the soft and the hard limit.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Resource {
    /// `RLIMIT_NPROC`: processes and threads of the *real uid* (all of its processes count).
    Nproc,
    /// `RLIMIT_NOFILE`: open file descriptors per process.
    Nofile,
    /// `RLIMIT_CORE`: core dump size, bytes.
    Core,
    /// `RLIMIT_AS`: virtual address space per process, bytes.
    As,
    /// `RLIMIT_FSIZE`: largest file a process may write, bytes.
    Fsize,
    /// `RLIMIT_CPU`: CPU time per process, seconds.
    Cpu,
    /// `RLIMIT_STACK`: stack size, bytes.
    Stack,
    /// `RLIMIT_MEMLOCK`: locked memory, bytes.
    Memlock,
}

/// The type glibc's `setrlimit` takes the resource as.
#[cfg(target_env = "gnu")]
type RawResource = libc::__rlimit_resource_t;
/// The type other libcs' `setrlimit` takes the resource as.
#[cfg(not(target_env = "gnu"))]
type RawResource = libc::c_int;

impl Resource {
    fn raw(self) -> RawResource {
        match self {
            Resource::Nproc => libc::RLIMIT_NPROC,
            Resource::Nofile => libc::RLIMIT_NOFILE,
            Resource::Core => libc::RLIMIT_CORE,
            Resource::As => libc::RLIMIT_AS,
            Resource::Fsize => libc::RLIMIT_FSIZE,
            Resource::Cpu => libc::RLIMIT_CPU,
            Resource::Stack => libc::RLIMIT_STACK,
            Resource::Memlock => libc::RLIMIT_MEMLOCK,
        }
    }
}

/// How to start a process. `no_new_privs` is always set in the child: setuid binaries do not
/// raise its privileges.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SpawnOptions {
    /// The uid the process runs as (real, effective and saved).
    pub uid: u32,
    /// The gid the process runs as; supplementary groups are dropped.
    pub gid: u32,
    /// Resource limits, each set as soft and hard limit.
    pub rlimits: Vec<(Resource, u64)>,
    /// Start a new session (and process group) led by the process: signal the whole group with
    /// `killpg(pid, ..)`.
    pub new_session: bool,
    /// Make fd 0 (which must be a terminal, e.g. a pty slave) the controlling terminal of the
    /// new session. Requires `new_session`.
    pub controlling_tty: bool,
    /// Send `SIGKILL` to the process when the *thread* that spawned it exits (`PR_SET_PDEATHSIG`).
    /// Only meaningful when spawning from a thread that lives as long as the parent process.
    pub die_with_parent: bool,
}

impl SpawnOptions {
    /// Options running as `uid`:`gid` with nothing else set.
    pub fn new(uid: u32, gid: u32) -> Self {
        Self { uid, gid, rlimits: Vec::new(), new_session: false, controlling_tty: false, die_with_parent: false }
    }
}

/// Configures `cmd` to run with `opts`: uid and gid through std, everything else in a
/// `pre_exec` hook. Call it once per command (each call adds another hook).
pub fn apply(cmd: &mut Command, opts: &SpawnOptions) {
    cmd.uid(opts.uid).gid(opts.gid);
    // Everything the hook needs is computed here, in the parent: the child must not allocate.
    let rlimits: Vec<(RawResource, libc::rlim_t)> =
        opts.rlimits.iter().map(|&(r, v)| (r.raw(), v as libc::rlim_t)).collect();
    let new_session = opts.new_session;
    let controlling_tty = opts.controlling_tty && opts.new_session;
    let die_with_parent = opts.die_with_parent;
    let parent = std::process::id() as libc::pid_t;
    let hook =
        move || -> io::Result<()> { child_setup(new_session, controlling_tty, &rlimits, die_with_parent, parent) };
    // SAFETY: the hook runs in the forked child of a possibly multi-threaded parent, where only
    // async-signal-safe functions may be called. `child_setup` makes raw system calls only
    // (signal, setsid, ioctl, getrlimit, setrlimit, prctl, getppid), reads the already-built `rlimits`
    // slice without allocating, and reports failure with `io::Error::last_os_error()`, which
    // does not allocate either.
    unsafe {
        cmd.pre_exec(hook);
    }
}

/// The child side of [`apply`]. Async-signal-safe: no allocation, no locks.
fn child_setup(
    new_session: bool,
    controlling_tty: bool,
    rlimits: &[(RawResource, libc::rlim_t)],
    die_with_parent: bool,
    parent: libc::pid_t,
) -> io::Result<()> {
    // Signals the parent ignores (a daemon started under `nohup`, a test runner in a background
    // job) would stay ignored across exec; handlers are reset by exec anyway. Start clean.
    for sig in 1..=64 {
        if sig != libc::SIGKILL && sig != libc::SIGSTOP {
            // SAFETY: signal() with SIG_DFL installs no handler; libc's internal signals (32,
            // 33) refuse the change with EINVAL, which is ignored.
            unsafe { libc::signal(sig, libc::SIG_DFL) };
        }
    }
    if new_session {
        // SAFETY: setsid has no memory-safety preconditions.
        if unsafe { libc::setsid() } < 0 {
            return Err(io::Error::last_os_error());
        }
    }
    if controlling_tty {
        // SAFETY: TIOCSCTTY takes an integer argument (0: do not steal the terminal from
        // another session); fd 0 belongs to this process.
        if unsafe { libc::ioctl(0, libc::TIOCSCTTY, 0) } < 0 {
            return Err(io::Error::last_os_error());
        }
    }
    for &(resource, value) in rlimits {
        let want = libc::rlimit { rlim_cur: value, rlim_max: value };
        // SAFETY: `want` is a valid rlimit that outlives the call.
        if unsafe { libc::setrlimit(resource, &want) } == 0 {
            continue;
        }
        let err = io::Error::last_os_error();
        if err.raw_os_error() != Some(libc::EPERM) {
            return Err(err);
        }
        // Above the inherited hard limit, which an unprivileged process cannot raise: clamp.
        let mut old = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
        // SAFETY: `old` is a valid, writable rlimit.
        if unsafe { libc::getrlimit(resource, &mut old) } < 0 {
            return Err(io::Error::last_os_error());
        }
        let v = value.min(old.rlim_max);
        let clamped = libc::rlimit { rlim_cur: v, rlim_max: v };
        // SAFETY: `clamped` is a valid rlimit that outlives the call.
        if unsafe { libc::setrlimit(resource, &clamped) } < 0 {
            return Err(io::Error::last_os_error());
        }
    }
    // SAFETY: PR_SET_NO_NEW_PRIVS takes integer arguments only.
    if unsafe {
        libc::prctl(
            libc::PR_SET_NO_NEW_PRIVS,
            1 as libc::c_ulong,
            0 as libc::c_ulong,
            0 as libc::c_ulong,
            0 as libc::c_ulong,
        )
    } < 0
    {
        return Err(io::Error::last_os_error());
    }
    if die_with_parent {
        // SAFETY: PR_SET_PDEATHSIG takes integer arguments only.
        if unsafe {
            libc::prctl(
                libc::PR_SET_PDEATHSIG,
                libc::SIGKILL as libc::c_ulong,
                0 as libc::c_ulong,
                0 as libc::c_ulong,
                0 as libc::c_ulong,
            )
        } < 0
        {
            return Err(io::Error::last_os_error());
        }
        // The parent may have died before the prctl: then nobody would send the signal.
        // SAFETY: getppid has no preconditions.
        if unsafe { libc::getppid() } != parent {
            return Err(io::Error::from_raw_os_error(libc::ESRCH));
        }
    }
    Ok(())
}

/// `_LINUX_CAPABILITY_VERSION_3`.
const CAP_VERSION_3: u32 = 0x2008_0522;

#[repr(C)]
struct CapHeader {
    version: u32,
    pid: libc::c_int,
}

#[repr(C)]
#[derive(Clone, Copy)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

/// Sends `SIGKILL` to every process whose real or saved uid is `uid`, in one `kill(-1, SIGKILL)`
/// made by a short-lived child running as `uid` with no capabilities.
///
/// The kernel signals all of them under one lock, so a process cannot escape by forking while
/// it happens. The processes may take a moment to die after this returns; callers that need them
/// gone wait for that (e.g. by scanning `/proc`). `uid` 0 is refused.
pub fn kill_all_of_uid(uid: u32) -> Result<()> {
    if uid == 0 {
        return Err(SysError::Invalid("refusing to kill every process of uid 0".into()));
    }
    // SAFETY: the child of fork in a multi-threaded process may only make async-signal-safe
    // calls; it makes raw system calls only (setresuid, capset, getuid, geteuid, kill) on stack
    // data and leaves with `_exit`, never returning into Rust code.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(SysError::io(format!("forking to kill the processes of uid {uid}"), io::Error::last_os_error()));
    }
    if pid == 0 {
        // SAFETY: child of fork; see above. `kill_child` never returns.
        unsafe { kill_child(uid) }
    }
    let pid = nix::unistd::Pid::from_raw(pid);
    let status = loop {
        match nix::sys::wait::waitpid(pid, None) {
            Ok(s) => break s,
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => return Err(SysError::errno(format!("waiting for the killer of uid {uid}"), e)),
        }
    };
    match status {
        nix::sys::wait::WaitStatus::Exited(_, 0) => Ok(()),
        nix::sys::wait::WaitStatus::Exited(_, 1) => {
            Err(SysError::Invalid(format!("could not switch to uid {uid} to kill its processes")))
        }
        other => Err(SysError::Invalid(format!("killing the processes of uid {uid} failed: {other:?}"))),
    }
}

/// The forked child of [`kill_all_of_uid`].
///
/// # Safety
/// Must only be called in a freshly forked child; it never returns.
unsafe fn kill_child(uid: u32) -> ! {
    let u = uid as libc::c_long;
    // A raw syscall, not glibc's setresuid, which would try to broadcast to threads that do
    // not exist in this child.
    // SAFETY: setresuid takes integers only.
    let ok = unsafe { libc::syscall(libc::SYS_setresuid, u, u, u) } == 0;
    // Belt and braces: make sure no capability (CAP_KILL above all) survived the switch.
    let mut hdr = CapHeader { version: CAP_VERSION_3, pid: 0 };
    let data = [CapData { effective: 0, permitted: 0, inheritable: 0 }; 2];
    // SAFETY: `hdr` and `data` are valid version-3 capset arguments living on this stack.
    let caps_clear = unsafe { libc::syscall(libc::SYS_capset, &mut hdr as *mut CapHeader, data.as_ptr()) } == 0;
    // SAFETY: getuid and geteuid have no preconditions.
    let is_uid = unsafe { libc::getuid() == uid && libc::geteuid() == uid };
    if !(ok && caps_clear && is_uid) {
        // Never reach kill(-1) with any privilege left: it would hit every process on the host.
        // SAFETY: _exit has no preconditions and does not run destructors or atexit handlers.
        unsafe { libc::_exit(1) }
    }
    // SAFETY: kill has no memory-safety preconditions; as an unprivileged uid, -1 reaches only
    // the processes this uid may signal, i.e. its own.
    let r = unsafe { libc::kill(-1, libc::SIGKILL) };
    let code = if r == 0 || io::Error::last_os_error().raw_os_error() == Some(libc::ESRCH) { 0 } else { 2 };
    // SAFETY: see above.
    unsafe { libc::_exit(code) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Stdio;

    const UID: u32 = 2_000_001;

    fn run(opts: &SpawnOptions, script: &str) -> std::process::Output {
        let mut cmd = Command::new("/bin/sh");
        cmd.arg("-c").arg(script).current_dir("/").env_clear().env("PATH", "/usr/bin:/bin");
        apply(&mut cmd, opts);
        cmd.stdin(Stdio::null()).output().expect("spawn sh")
    }

    #[test]
    fn runs_as_the_uid_without_groups() {
        let out = run(&SpawnOptions::new(UID, UID), "id -u; id -g; id -G");
        assert!(out.status.success(), "{out:?}");
        assert_eq!(String::from_utf8_lossy(&out.stdout), format!("{UID}\n{UID}\n{UID}\n"));
    }

    #[test]
    fn sets_rlimits_no_new_privs_and_session() {
        let mut opts = SpawnOptions::new(UID + 1, UID + 1);
        opts.rlimits = vec![(Resource::Nofile, 77), (Resource::Core, 0), (Resource::Nproc, 50)];
        opts.new_session = true;
        opts.die_with_parent = true;
        let out = run(
            &opts,
            "ulimit -n; ulimit -c; grep 'Max processes' /proc/$$/limits | tr -s ' ' | cut -d' ' -f3,4; \
             grep NoNewPrivs /proc/$$/status; echo $$ $(cut -d' ' -f6 /proc/$$/stat)",
        );
        assert!(out.status.success(), "{out:?}");
        let text = String::from_utf8_lossy(&out.stdout);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(&lines[..3], ["77", "0", "50 50"], "{text}");
        assert!(lines[3].ends_with("\t1"), "{text}");
        // The shell leads its session: its pid is the session id (field 6 of stat).
        let ids: Vec<&str> = lines[4].split(' ').collect();
        assert_eq!(ids[0], ids[1], "{text}");
    }

    #[test]
    fn signals_ignored_by_the_parent_are_not_ignored_by_the_child() {
        let mut cmd = Command::new("/bin/sh");
        cmd.arg("-c").arg("grep SigIgn /proc/self/status").current_dir("/");
        // Stand-in for a parent that ignores SIGINT and SIGHUP (this hook runs before `apply`'s).
        // SAFETY: signal() is async-signal-safe and SIG_IGN installs no handler.
        unsafe {
            cmd.pre_exec(|| {
                libc::signal(libc::SIGINT, libc::SIG_IGN);
                libc::signal(libc::SIGHUP, libc::SIG_IGN);
                Ok(())
            });
        }
        apply(&mut cmd, &SpawnOptions::new(UID + 4, UID + 4));
        let out = cmd.stdin(Stdio::null()).output().expect("spawn");
        let text = String::from_utf8_lossy(&out.stdout);
        let mask = u64::from_str_radix(text.trim().trim_start_matches("SigIgn:").trim(), 16).expect("a hex mask");
        // Standard signals (1-31) are all back to default; libc's reserved real-time signals
        // (32, 33) cannot be changed through libc and are left as the parent had them.
        assert_eq!(mask & 0x7fff_ffff, 0, "{text}");
    }

    #[test]
    fn a_limit_above_the_hard_limit_is_clamped() {
        let mut opts = SpawnOptions::new(UID + 2, UID + 2);
        opts.rlimits = vec![(Resource::Nofile, u64::MAX - 1)];
        let out = run(&opts, "ulimit -Hn");
        assert!(out.status.success(), "{out:?}");
        let hard: u64 = String::from_utf8_lossy(&out.stdout).trim().parse().expect("a number");
        let (_, parent_hard) =
            nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE).expect("getrlimit");
        assert_eq!(hard, parent_hard);
    }

    #[test]
    fn kills_every_process_of_a_uid() {
        let uid = UID + 3;
        let mut cmd = Command::new("/bin/sh");
        cmd.arg("-c").arg("sleep 1000 & sleep 1000 & echo started; wait").current_dir("/");
        apply(&mut cmd, &SpawnOptions::new(uid, uid));
        let mut child = cmd.stdout(Stdio::piped()).spawn().expect("spawn");
        let mut line = String::new();
        std::io::BufRead::read_line(&mut std::io::BufReader::new(child.stdout.take().expect("stdout")), &mut line)
            .expect("read");
        assert_eq!(line, "started\n");
        kill_all_of_uid(uid).expect("kill");
        let status = child.wait().expect("wait");
        assert_eq!(std::os::unix::process::ExitStatusExt::signal(&status), Some(libc::SIGKILL));
        // Nothing of the uid is left (the sleeps are reaped by init once their shell died).
        for _ in 0..1000 {
            if !any_process_of(uid) {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        assert!(!any_process_of(uid));
        // With nothing left to kill it still succeeds.
        kill_all_of_uid(uid).expect("kill again");
        assert!(kill_all_of_uid(0).is_err());
    }

    fn any_process_of(uid: u32) -> bool {
        std::fs::read_dir("/proc").expect("proc").flatten().any(|e| {
            let status = std::fs::read_to_string(e.path().join("status")).unwrap_or_default();
            let alive = !status.lines().any(|l| l.starts_with("State:") && (l.contains("Z") || l.contains("X")));
            alive
                && status
                    .lines()
                    .find(|l| l.starts_with("Uid:"))
                    .and_then(|l| l.split_whitespace().nth(1))
                    .is_some_and(|u| u == uid.to_string())
        })
    }
}
