//! The helper process and the workspace's init.
//!
//! `warren` starts the helper (a fresh, single-threaded process: `warren-nsinit` or `warren
//! __warren-ns-init`) with an [`InitConfig`]. The helper joins the workspace's cgroup, binds the
//! control socket, unshares mount, uts, ipc, cgroup, pid and (unless network was asked for) net
//! namespaces and forks. The child is pid 1 of the new pid namespace: it builds the root
//! filesystem, pivots, sets hostname and loopback, sets rlimits, drops to the workspace's uid
//! with no capabilities and `no_new_privs`, installs the seccomp filter, closes every other
//! descriptor and reports ready through a pipe. The helper prints the init's pid and exits.
//!
//! The init then serves exec requests: for each, it forks a child (safe: the init has one
//! thread) which starts a new session, takes the passed stdio (or a new pseudo-terminal from the
//! workspace's own devpts), changes directory and execs. The init reaps every process that
//! ends up as its child and reports exit statuses on the request's connection. A connection that
//! closes before its command ended gets the command's process group killed.

use std::collections::HashMap;
use std::ffi::{CString, OsString};
use std::io::{Read, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;

use nix::errno::Errno;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sched::{unshare, CloneFlags};
use nix::sys::resource::{setrlimit, Resource};
use nix::sys::signal::{kill, SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;
use warren_sys::fdio::{self, Recv};
use warren_sys::ns::ForkResult;

use crate::proto::{InitConfig, InitReport, Reply, Request};
use crate::rootfs;

/// Entry point of the helper. It takes no arguments and reads an [`InitConfig`] (JSON) on stdin.
pub fn helper_main(args: Vec<OsString>) -> ! {
    let code = match run_helper(args) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("warren-nsinit: {e}");
            1
        }
    };
    std::process::exit(code)
}

fn run_helper(args: Vec<OsString>) -> Result<(), String> {
    if !args.is_empty() {
        return Err("takes no arguments: it reads its config on stdin and is started by warren, not by hand".into());
    }
    let mut raw = String::new();
    std::io::stdin().read_to_string(&mut raw).map_err(|e| format!("reading config from stdin: {e}"))?;
    let cfg: InitConfig = serde_json::from_str(&raw).map_err(|e| format!("bad config on stdin: {e}"))?;
    let me = std::process::id().to_string();
    for f in &cfg.cgroup_procs {
        std::fs::write(f, &me).map_err(|e| format!("joining cgroup {}: {e}", f.display()))?;
    }
    let sock_path = cfg.run_dir.join("ctl.sock");
    let _ = std::fs::remove_file(&sock_path);
    let listener = UnixListener::bind(&sock_path).map_err(|e| format!("binding {}: {e}", sock_path.display()))?;
    std::fs::set_permissions(&sock_path, std::os::unix::fs::PermissionsExt::from_mode(0o600))
        .map_err(|e| format!("chmod {}: {e}", sock_path.display()))?;
    listener.set_nonblocking(true).map_err(|e| format!("socket: {e}"))?;
    let (ready_r, ready_w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(|e| format!("pipe: {e}"))?;

    if cfg.userns {
        // After entering the namespace this process is the host's `nobody`, which may traverse
        // (not list) the run directory to reach the mount point made for it here.
        use std::os::unix::fs::PermissionsExt;
        let root = cfg.run_dir.join("root");
        std::fs::create_dir_all(&root).map_err(|e| format!("creating {}: {e}", root.display()))?;
        for (d, mode) in [(&cfg.run_dir, 0o711), (&root, 0o755)] {
            std::fs::set_permissions(d, std::fs::Permissions::from_mode(mode))
                .map_err(|e| format!("chmod {}: {e}", d.display()))?;
        }
        enter_user_namespace(&cfg)?;
    }
    // Only the pid namespace is unshared here (it applies to the child we fork next); the child
    // unshares the rest itself, so this helper keeps the host's view of / and /proc.
    unshare(CloneFlags::CLONE_NEWPID).map_err(|e| format!("unshare(CLONE_NEWPID): {e}"))?;

    match warren_sys::ns::fork_single_threaded().map_err(|e| e.to_string())? {
        ForkResult::Child => {
            drop(ready_r);
            let mut w = std::fs::File::from(ready_w);
            match setup_init(&cfg, &listener, w.as_fd().as_raw_fd()) {
                Ok(()) => {
                    let _ = w.write_all(b"ok");
                    drop(w);
                    serve(listener)
                }
                Err(e) => {
                    let _ = w.write_all(e.as_bytes());
                    std::process::exit(1)
                }
            }
        }
        ForkResult::Parent { child } => {
            drop(ready_w);
            drop(listener);
            let mut msg = String::new();
            let _ = std::fs::File::from(ready_r).read_to_string(&mut msg);
            if msg != "ok" {
                let _ = kill(child, Signal::SIGKILL);
                return Err(if msg.is_empty() { "the workspace init died during set-up".into() } else { msg });
            }
            let pid = child.as_raw() as u32;
            let start_time = warren_sys::proc::stat(pid).ok_or("the workspace init vanished after set-up")?.start_time;
            let report = serde_json::to_string(&InitReport { pid, start_time }).map_err(|e| e.to_string())?;
            println!("{report}");
            Ok(())
        }
    }
}

/// Moves the helper into a new user namespace owned by it, with the workspace's uid and gid
/// mapped to themselves and the namespace's root mapped to the host's `nobody`; then becomes
/// that root (full capabilities inside the namespace, none outside). The maps are written by a
/// forked child still in the host namespace (a process cannot map ids of its own namespace).
fn enter_user_namespace(cfg: &InitConfig) -> Result<(), String> {
    use nix::unistd::{getppid, setresgid, setresuid, Gid, Uid};
    let (go_r, go_w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(|e| format!("pipe: {e}"))?;
    let (done_r, done_w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(|e| format!("pipe: {e}"))?;
    match warren_sys::ns::fork_single_threaded().map_err(|e| e.to_string())? {
        ForkResult::Child => {
            drop(go_w);
            drop(done_r);
            let mut b = [0u8; 1];
            let _ = std::fs::File::from(go_r).read(&mut b);
            let proc_dir = Path::new("/proc").join(getppid().as_raw().to_string());
            let root = crate::proto::USERNS_ROOT_HOST_ID;
            let r = std::fs::write(proc_dir.join("uid_map"), format!("0 {root} 1\n{u} {u} 1\n", u = cfg.uid)).and_then(
                |()| std::fs::write(proc_dir.join("gid_map"), format!("0 {root} 1\n{g} {g} 1\n", g = cfg.gid)),
            );
            let msg = match r {
                Ok(()) => "ok".to_owned(),
                Err(e) => format!("writing the user namespace's id maps: {e}"),
            };
            let _ = std::fs::File::from(done_w).write_all(msg.as_bytes());
            warren_sys::ns::exit_now(0)
        }
        ForkResult::Parent { child } => {
            drop(go_r);
            drop(done_w);
            let res = unshare(CloneFlags::CLONE_NEWUSER).map_err(|e| format!("unshare(CLONE_NEWUSER): {e}"));
            let _ = std::fs::File::from(go_w).write_all(b"g");
            let mut msg = String::new();
            let _ = std::fs::File::from(done_r).read_to_string(&mut msg);
            let _ = waitpid(child, None);
            res?;
            if msg != "ok" {
                return Err(if msg.is_empty() { "the id-map writer died".into() } else { msg });
            }
            setresgid(Gid::from_raw(0), Gid::from_raw(0), Gid::from_raw(0))
                .map_err(|e| format!("setresgid(0) in the user namespace: {e}"))?;
            setresuid(Uid::from_raw(0), Uid::from_raw(0), Uid::from_raw(0))
                .map_err(|e| format!("setresuid(0) in the user namespace: {e}"))?;
            Ok(())
        }
    }
}

/// Everything the init does as root before it drops privileges for good.
fn setup_init(cfg: &InitConfig, listener: &UnixListener, ready_fd: RawFd) -> Result<(), String> {
    let mut flags =
        CloneFlags::CLONE_NEWNS | CloneFlags::CLONE_NEWUTS | CloneFlags::CLONE_NEWIPC | CloneFlags::CLONE_NEWCGROUP;
    if !cfg.network {
        flags |= CloneFlags::CLONE_NEWNET;
    }
    unshare(flags).map_err(|e| format!("unshare: {e}"))?;
    rootfs::build_and_pivot(cfg)?;
    nix::unistd::sethostname(rootfs::hostname(cfg)).map_err(|e| format!("sethostname: {e}"))?;
    if !cfg.network {
        warren_sys::ns::loopback_up().map_err(|e| e.to_string())?;
    }
    let rl = |r: Resource, v: u64, what: &str| setrlimit(r, v, v).map_err(|e| format!("setrlimit {what}: {e}"));
    rl(Resource::RLIMIT_NOFILE, cfg.nofile, "NOFILE")?;
    rl(Resource::RLIMIT_CORE, 0, "CORE")?;
    if let Some(n) = cfg.nproc {
        rl(Resource::RLIMIT_NPROC, n, "NPROC")?;
    }
    if let Some(f) = cfg.fsize {
        rl(Resource::RLIMIT_FSIZE, f, "FSIZE")?;
    }
    // stdio of the init: /dev/null (the helper's pipes to warren must not stay open).
    let null =
        std::fs::OpenOptions::new().read(true).write(true).open("/dev/null").map_err(|e| format!("/dev/null: {e}"))?;
    for fd in 0..3 {
        warren_sys::ns::dup_onto(null.as_fd(), fd).map_err(|e| e.to_string())?;
    }
    drop(null);
    nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o022));
    let home = format!("/home/{}", cfg.username);
    nix::unistd::chdir(Path::new(&home)).map_err(|e| format!("chdir {home}: {e}"))?;
    warren_sys::caps::drop_to(cfg.uid, cfg.gid).map_err(|e| e.to_string())?;
    warren_sys::caps::set_non_dumpable().map_err(|e| e.to_string())?;
    let filters = warren_sys::seccomp::compile().map_err(|e| e.to_string())?;
    warren_sys::seccomp::install(&filters).map_err(|e| e.to_string())?;
    warren_sys::fdio::close_fds_from(3, &[listener.as_raw_fd(), ready_fd]).map_err(|e| e.to_string())?;
    Ok(())
}

struct Conn {
    stream: UnixStream,
    child: Option<Pid>,
}

/// The init's loop: accept requests, fork commands, reap, report.
fn serve(listener: UnixListener) -> ! {
    let mut mask = SigSet::empty();
    mask.add(Signal::SIGCHLD);
    let _ = mask.thread_block();
    let sfd = match SignalFd::with_flags(&mask, SfdFlags::SFD_NONBLOCK | SfdFlags::SFD_CLOEXEC) {
        Ok(s) => s,
        Err(_) => std::process::exit(1),
    };
    let mut conns: Vec<Conn> = Vec::new();
    let mut by_pid: HashMap<Pid, usize> = HashMap::new();
    loop {
        let (listen_ready, sig_ready, conn_ready) = {
            let mut fds =
                vec![PollFd::new(listener.as_fd(), PollFlags::POLLIN), PollFd::new(sfd.as_fd(), PollFlags::POLLIN)];
            for c in &conns {
                fds.push(PollFd::new(c.stream.as_fd(), PollFlags::POLLIN));
            }
            match poll(&mut fds, PollTimeout::NONE) {
                Ok(_) | Err(Errno::EINTR) => {}
                Err(_) => std::process::exit(1),
            }
            let ready = |f: &PollFd<'_>| f.revents().is_some_and(|r| !r.is_empty());
            (ready(&fds[0]), ready(&fds[1]), fds[2..].iter().map(ready).collect::<Vec<_>>())
        };
        if sig_ready {
            while let Ok(Some(_)) = sfd.read_signal() {}
            reap(&mut conns, &mut by_pid);
        }
        let mut closed = Vec::new();
        for (i, ready) in conn_ready.iter().enumerate() {
            if *ready && !handle(&mut conns, i, &mut by_pid) {
                closed.push(i);
            }
        }
        for i in closed.into_iter().rev() {
            let c = conns.remove(i);
            if let Some(pid) = c.child {
                // The client went away before the command ended: kill the command's group.
                let _ = kill(Pid::from_raw(-pid.as_raw()), Signal::SIGKILL);
                by_pid.remove(&pid);
            }
            // Reindex the remaining children.
            for idx in by_pid.values_mut() {
                if *idx > i {
                    *idx -= 1;
                }
            }
        }
        if listen_ready {
            while let Ok((stream, _)) = listener.accept() {
                if stream.set_nonblocking(false).is_ok() {
                    let _ = stream.set_read_timeout(Some(std::time::Duration::from_secs(5)));
                    conns.push(Conn { stream, child: None });
                }
            }
        }
    }
}

fn reap(conns: &mut [Conn], by_pid: &mut HashMap<Pid, usize>) {
    loop {
        let (pid, code, signal) = match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::Exited(pid, code)) => (pid, code, None),
            Ok(WaitStatus::Signaled(pid, sig, _)) => (pid, 128 + sig as i32, Some(sig as i32)),
            Ok(WaitStatus::StillAlive) | Err(_) => return,
            Ok(_) => continue,
        };
        if let Some(i) = by_pid.remove(&pid) {
            if let Some(c) = conns.get_mut(i) {
                c.child = None;
                let _ = send(c.stream.as_fd(), &Reply::Exited { code, signal }, &[]);
            }
        }
    }
}

fn send(sock: BorrowedFd<'_>, reply: &Reply, fds: &[BorrowedFd<'_>]) -> bool {
    match serde_json::to_vec(reply) {
        Ok(b) => fdio::send_frame(sock, &b, fds).is_ok(),
        Err(_) => false,
    }
}

/// Handles one readable connection; false when it should be closed.
fn handle(conns: &mut [Conn], i: usize, by_pid: &mut HashMap<Pid, usize>) -> bool {
    let (frame, fds) = match fdio::recv_frame(conns[i].stream.as_fd()) {
        Ok(Recv::Frame(f, fds)) => (f, fds),
        Ok(Recv::Eof) | Err(_) => return false,
    };
    let req: Request = match serde_json::from_slice(&frame) {
        Ok(r) => r,
        Err(e) => {
            send(conns[i].stream.as_fd(), &Reply::Error { message: format!("bad request: {e}") }, &[]);
            return false;
        }
    };
    match req {
        Request::Signal { sig } => {
            if let (Some(pid), Ok(sig)) = (conns[i].child, Signal::try_from(sig)) {
                let _ = kill(Pid::from_raw(-pid.as_raw()), sig);
            }
            true
        }
        Request::Exec { argv, env, cwd, tty } => {
            if conns[i].child.is_some() {
                send(conns[i].stream.as_fd(), &Reply::Error { message: "one command per connection".into() }, &[]);
                return false;
            }
            match spawn(&argv, &env, &cwd, tty, fds) {
                Ok((pid, master)) => {
                    let sent = match &master {
                        Some(m) => send(conns[i].stream.as_fd(), &Reply::Started { pid: pid.as_raw() }, &[m.as_fd()]),
                        None => send(conns[i].stream.as_fd(), &Reply::Started { pid: pid.as_raw() }, &[]),
                    };
                    conns[i].child = Some(pid);
                    by_pid.insert(pid, i);
                    sent
                }
                Err(message) => {
                    send(conns[i].stream.as_fd(), &Reply::Error { message }, &[]);
                    false
                }
            }
        }
    }
}

/// Forks and execs one command. Returns its pid and, for a tty, the terminal's master.
fn spawn(
    argv: &[String],
    env: &[(String, String)],
    cwd: &str,
    tty: Option<(u16, u16)>,
    fds: Vec<OwnedFd>,
) -> Result<(Pid, Option<OwnedFd>), String> {
    let cargv: Vec<CString> =
        argv.iter().map(|a| CString::new(a.as_bytes())).collect::<Result<_, _>>().map_err(|_| "NUL in argv")?;
    let cenv: Vec<CString> = env
        .iter()
        .map(|(k, v)| CString::new(format!("{k}={v}")))
        .collect::<Result<_, _>>()
        .map_err(|_| "NUL in env")?;
    let path = env.iter().find(|(k, _)| k == "PATH").map_or("/usr/bin:/bin", |(_, v)| v.as_str());
    let candidates: Vec<CString> = if argv[0].contains('/') {
        vec![cargv[0].clone()]
    } else {
        path.split(':')
            .filter(|d| !d.is_empty())
            .filter_map(|d| CString::new(format!("{d}/{}", argv[0])).ok())
            .collect()
    };
    let (master, slave) = match tty {
        Some((rows, cols)) => {
            // Opens /dev/ptmx of the workspace's own devpts instance.
            let (m, s) = warren_sys::pty::openpty(rows, cols).map_err(|e| e.to_string())?;
            (Some(m), Some(s))
        }
        None => {
            if fds.len() != 3 {
                return Err(format!("expected 3 descriptors for stdio, got {}", fds.len()));
            }
            (None, None)
        }
    };
    match warren_sys::ns::fork_single_threaded().map_err(|e| e.to_string())? {
        ForkResult::Parent { child } => Ok((child, master)),
        ForkResult::Child => {
            let code = exec_child(&cargv, &cenv, &candidates, cwd, slave.as_ref(), &fds);
            warren_sys::ns::exit_now(code)
        }
    }
}

/// In the forked child: set up stdio, session, cwd; exec. Returns an exit code on failure.
fn exec_child(
    argv: &[CString],
    env: &[CString],
    candidates: &[CString],
    cwd: &str,
    slave: Option<&OwnedFd>,
    fds: &[OwnedFd],
) -> i32 {
    let _ = warren_sys::ns::reset_signals();
    let _ = nix::unistd::setsid();
    if let Some(slave) = slave {
        let _ = warren_sys::ns::set_controlling_tty(slave.as_fd());
        for fd in 0..3 {
            let _ = warren_sys::ns::dup_onto(slave.as_fd(), fd);
        }
    } else {
        for (fd, src) in fds.iter().enumerate() {
            let _ = warren_sys::ns::dup_onto(src.as_fd(), fd as RawFd);
        }
    }
    let _ = warren_sys::fdio::close_fds_from(3, &[]);
    let mut err = std::io::stderr();
    if let Err(e) = nix::unistd::chdir(Path::new(cwd)) {
        let _ = writeln!(err, "warren: cannot enter directory {cwd}: {e}");
        return 126;
    }
    let mut last = Errno::ENOENT;
    for c in candidates {
        match nix::unistd::execve(c, argv, env) {
            Err(Errno::ENOENT) | Err(Errno::ENOTDIR) => {}
            Err(e) => last = e,
            Ok(never) => match never {},
        }
    }
    let name = argv.first().map(|a| a.to_string_lossy().into_owned()).unwrap_or_default();
    if last == Errno::ENOENT {
        let _ = writeln!(err, "warren: {name}: command not found");
        127
    } else {
        let _ = writeln!(err, "warren: {name}: {last}");
        126
    }
}
