//! Attacks from inside a namespace workspace that must fail.
//!
//! Each test is named after what it tries. It asserts that the attack failed (exit code, errno,
//! error text, the host unchanged) and, wherever one exists, runs a positive control showing
//! that the same observation would have caught a success (the owner can read what the attacker
//! cannot, the host listener really listens, the lister really sees extra descriptors, ...).
//!
//! Every test runs on its own state directory with its own workspace uids (see `common`), so
//! they run in parallel; each stops and destroys its workspaces at the end, also on failure.

mod common;

use std::collections::BTreeSet;
use std::io::ErrorKind;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{env, host_pid_alive, host_processes, Env, Out};
use warren_core::{Backend, Error, ExecRequest, Limits, State, TtySize, WorkspacePath, WorkspaceSpec};

/// Replaces each `@KEY@` marker in `template` (python and shell code is full of braces, so no
/// `format!`).
fn fill(template: &str, vars: &[(&str, String)]) -> String {
    let mut s = template.to_owned();
    for (k, v) in vars {
        let marker = format!("@{k}@");
        assert!(s.contains(&marker), "template has no {marker}");
        s = s.replace(&marker, v);
    }
    s
}

/// Python helpers shared by the attacks: `e(f)` runs `f` and names the errno it failed with
/// (`'ok'` if it did not), `c_err(r)` does the same for a libc return value.
const PY: &str = r#"
import ctypes, errno, os, socket, struct, sys
libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long
def e(f):
    try:
        f()
        return 'ok'
    except OSError as x:
        return errno.errorcode.get(x.errno, str(x.errno))
def c_err(r):
    if r != -1:
        return 'ok'
    n = ctypes.get_errno()
    return errno.errorcode.get(n, str(n))
"#;

fn py(body: &str) -> String {
    format!("{PY}\n{body}")
}

fn wp(p: &str) -> WorkspacePath {
    WorkspacePath::new(p).expect("valid workspace path")
}

fn assert_invalid_path<T: std::fmt::Debug>(what: &str, r: warren_core::Result<T>) {
    match r {
        Err(Error::InvalidPath { .. }) => {}
        other => panic!("ATTACK SUCCEEDED or failed for the wrong reason: {what} gave {other:?}, expected InvalidPath"),
    }
}

/// Starts `sleep 1000` in the background of `spec` and returns its host pid.
async fn background_sleep(env: &Env, spec: &WorkspaceSpec) -> i32 {
    env.sh(spec, "sleep 1000 </dev/null >/dev/null 2>&1 &").await.ok("starting a background sleep");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some((pid, _)) = host_processes(spec.uid).into_iter().find(|(_, cmd)| cmd == "sleep 1000") {
            return pid;
        }
        assert!(Instant::now() < deadline, "the background sleep of {} never showed on the host", spec.user);
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Runs setuid `bin` on the host as `uid` until it prompts for a password, and returns its
/// effective uid at that moment.
fn host_setuid_euid(uid: u32, bin: &str, args: &[&str]) -> u32 {
    use std::io::Read;
    use std::os::unix::process::CommandExt;
    let (r, w) = nix::unistd::pipe().expect("pipe");
    let mut child = std::process::Command::new(bin)
        .args(args)
        .uid(uid)
        .gid(uid)
        .current_dir("/")
        .stdin(std::process::Stdio::piped())
        .stdout(std::fs::File::from(w.try_clone().expect("dup")))
        .stderr(std::fs::File::from(w))
        .spawn()
        .expect("running a setuid binary on the host");
    let mut r = std::fs::File::from(r);
    let mut got = Vec::new();
    let mut buf = [0u8; 100];
    while !String::from_utf8_lossy(&got).contains("Password") {
        match r.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => got.extend_from_slice(&buf[..n]),
        }
    }
    let status = std::fs::read_to_string(format!("/proc/{}/status", child.id())).unwrap_or_default();
    let _ = child.kill();
    let _ = child.wait();
    assert!(
        String::from_utf8_lossy(&got).contains("Password"),
        "{bin} on the host did not prompt: {:?}",
        String::from_utf8_lossy(&got)
    );
    let uid_line = status.lines().find_map(|l| l.strip_prefix("Uid:")).expect("Uid line");
    uid_line.split_whitespace().nth(1).and_then(|e| e.parse().ok()).expect("euid")
}

/// Waits (up to 10 s) until host pid `pid` is gone.
async fn wait_gone(pid: i32) -> bool {
    let deadline = Instant::now() + Duration::from_secs(10);
    while host_pid_alive(pid) {
        if Instant::now() > deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    true
}

// ---------------------------------------------------------------------------------------------
// 1. Other workspaces' files
// ---------------------------------------------------------------------------------------------

/// A knows B's home directory on the host (from `host_files`) and its path inside B; neither
/// exists in A's mount namespace.
#[tokio::test(flavor = "multi_thread")]
async fn attack_read_other_workspace_home() {
    let Some(env) = env() else { return };
    let a = env.workspace("attacker", 1, Limits::default()).await;
    let b = env.workspace("victim", 2, Limits::default()).await;
    env.sh(&b, "echo secret-of-victim > marker").await.ok("writing B's marker");
    let b_home = env.host_home(&b);
    // Positive controls: the host path is right, and the owner can read the file inside.
    assert_eq!(std::fs::read_to_string(b_home.join("marker")).expect("marker on the host"), "secret-of-victim\n");
    let own = env.sh(&b, "cat /home/victim/marker").await;
    assert_eq!(own.ok("B reading its own marker"), "secret-of-victim\n");

    for path in [b_home.join("marker").display().to_string(), "/home/victim/marker".to_owned()] {
        let out = env.sh(&a, &format!("cat '{path}'")).await;
        out.failed_with(&format!("A reading {path}"), "No such file or directory");
        assert!(!out.stdout.contains("secret"), "ATTACK SUCCEEDED: A read {path}: {out:?}");
    }
    for dir in [b_home.display().to_string(), env.state_dir().display().to_string()] {
        env.sh(&a, &format!("ls -a '{dir}'"))
            .await
            .failed_with(&format!("A listing {dir}"), "No such file or directory");
    }
    let homes = env.sh(&a, "ls -a /home").await;
    assert_eq!(homes.ok("listing /home"), ".\n..\nattacker\n", "A sees other homes");
    env.finish().await;
}

/// A writes to B's home by its host path and by its path inside B; nothing lands in B.
#[tokio::test(flavor = "multi_thread")]
async fn attack_write_other_workspace_home() {
    let Some(env) = env() else { return };
    let a = env.workspace("attacker", 3, Limits::default()).await;
    let b = env.workspace("victim", 4, Limits::default()).await;
    let b_home = env.host_home(&b);
    let bh = b_home.display();
    for script in [format!("echo evil > '{bh}/evil'"), "echo evil > /home/victim/evil".to_owned()] {
        env.sh(&a, &script).await.failed_with(&script, "Directory nonexistent");
    }
    // Re-creating the path inside A only writes to A's own /tmp (the state dir of this test
    // lives under the host's /tmp) or fails on the read-only root.
    env.sh(&a, &format!("mkdir -p '{bh}' && echo evil > '{bh}/evil'")).await;
    env.sh(&a, "mkdir -p /home/victim && echo evil > /home/victim/evil").await;
    assert!(!b_home.join("evil").exists(), "ATTACK SUCCEEDED: A created a file in B's home");
    env.sh(&b, "cat /home/victim/evil").await.failed_with("B looking for A's file", "No such file or directory");
    // Positive control: the same write from B lands where the check looks.
    env.sh(&b, "echo own > /home/victim/evil").await.ok("B writing its own home");
    assert_eq!(std::fs::read_to_string(b_home.join("evil")).expect("B's file"), "own\n");
    env.finish().await;
}

/// A searches the whole tree for B's marker file by name.
#[tokio::test(flavor = "multi_thread")]
async fn attack_find_other_workspace_marker() {
    let Some(env) = env() else { return };
    let a = env.workspace("attacker", 5, Limits::default()).await;
    let b = env.workspace("victim", 6, Limits::default()).await;
    let name = format!("warren-marker-{}", b.id);
    env.sh(&b, &format!("touch {name}")).await.ok("creating B's marker");
    let search = format!("find / -name {name} 2>/dev/null; true");
    // Positive control: the search finds the marker where it exists.
    let own = env.sh(&b, &search).await;
    assert_eq!(own.ok("B searching"), format!("/home/victim/{name}\n"));
    let out = env.sh(&a, &search).await;
    assert_eq!(out.ok("A searching"), "", "ATTACK SUCCEEDED: A found B's marker");
    env.finish().await;
}

/// A looks for B's files through `/proc/<pid>/root` of every process it can see.
#[tokio::test(flavor = "multi_thread")]
async fn attack_other_workspace_via_proc_root() {
    let Some(env) = env() else { return };
    let a = env.workspace("attacker", 7, Limits::default()).await;
    let b = env.workspace("victim", 8, Limits::default()).await;
    env.sh(&b, "echo secret-of-victim > marker").await.ok("writing B's marker");
    background_sleep(&env, &b).await;
    background_sleep(&env, &a).await;
    let bh = env.host_home(&b).display().to_string();
    let script = fill(
        "for p in /proc/[0-9]*; do cat $p/root/home/victim/marker $p/root@BH@/marker; done 2>/dev/null; \
         ls -d /proc/[0-9]*/root/home/* 2>/dev/null | sed 's|.*/root||' | sort -u",
        &[("BH", bh)],
    );
    // Positive control: through its own sleep's /proc/<pid>/root, B reaches its marker.
    let own = env.sh(&b, &script).await;
    assert!(own.stdout.contains("secret-of-victim"), "the /proc/*/root walk does not work at all: {own:?}");
    let out = env.sh(&a, &script).await;
    assert!(!out.stdout.contains("secret"), "ATTACK SUCCEEDED: A read B's marker via /proc/*/root: {out:?}");
    assert_eq!(out.stdout, "/home/attacker\n", "A sees more than its own home via /proc/*/root");
    env.finish().await;
}

// ---------------------------------------------------------------------------------------------
// 2. Processes
// ---------------------------------------------------------------------------------------------

/// A lists processes: it sees only its own pid namespace (its init and its commands), not
/// the host's processes nor B's sleep.
#[tokio::test(flavor = "multi_thread")]
async fn attack_list_host_and_other_processes() {
    let Some(env) = env() else { return };
    let a = env.workspace("attacker", 9, Limits::default()).await;
    let b = env.workspace("victim", 10, Limits::default()).await;
    background_sleep(&env, &b).await;
    // Positive control: the lister shows B's sleep inside B.
    let own = env.sh(&b, "ps -e -o comm=").await;
    assert!(own.ok("ps in B").lines().any(|l| l == "sleep"), "ps does not show B's own sleep: {own:?}");

    let ps = env.sh(&a, "ps -e -o pid=,comm=").await;
    let comms: BTreeSet<&str> = ps.ok("ps in A").lines().filter_map(|l| l.split_whitespace().nth(1)).collect();
    let allowed: BTreeSet<&str> = ["warren-nsinit", "sh", "ps"].into();
    assert!(comms.is_subset(&allowed), "ATTACK SUCCEEDED: A sees foreign processes: {ps:?}");
    assert!(ps.stdout.lines().count() <= 3, "A sees more than its init, sh and ps: {ps:?}");
    // init, sh, ls, grep, wc
    let pids = env.sh(&a, "ls /proc | grep -E '^[0-9]+$' | wc -l").await;
    assert!(
        pids.ok("counting /proc").trim().parse::<u32>().expect("a count") <= 5,
        "A's /proc shows foreign pids: {pids:?}"
    );

    let test_bin = std::env::current_exe().expect("own exe");
    let test_name = test_bin.file_name().expect("exe name").to_string_lossy().into_owned();
    let cmdlines = env.sh(&a, "cat /proc/[0-9]*/cmdline | tr '\\0' ' '").await;
    for needle in [test_name.as_str(), "sleep"] {
        assert!(!cmdlines.stdout.contains(needle), "ATTACK SUCCEEDED: A sees {needle:?} in /proc: {cmdlines:?}");
    }
    env.finish().await;
}

/// A tries to find and kill B's sleep, and to signal B's processes by their host pids.
#[tokio::test(flavor = "multi_thread")]
async fn attack_kill_other_workspace_processes() {
    let Some(env) = env() else { return };
    let a = env.workspace("attacker", 11, Limits::default()).await;
    let b = env.workspace("victim", 12, Limits::default()).await;
    let sleep_pid = background_sleep(&env, &b).await;
    let b_init = env.backend.status(&b).await.expect("status").pid.expect("B's init pid") as i32;
    let kill_sleeps = "n=0; for p in /proc/[0-9]*; do if [ \"$(cat $p/comm 2>/dev/null)\" = sleep ]; then \
                       kill -9 ${p#/proc/} && n=$((n+1)); fi; done; echo killed $n";

    let out = env.sh(&a, kill_sleeps).await;
    assert_eq!(out.ok("A hunting sleeps"), "killed 0\n");
    for pid in [sleep_pid, b_init] {
        env.sh(&a, &format!("kill -9 {pid}"))
            .await
            .failed_with(&format!("A killing host pid {pid}"), "No such process");
        let out = env.py(&a, &py(&format!("print(e(lambda: os.kill({pid}, 9)))"))).await;
        assert_eq!(out.ok("python kill"), "ESRCH\n", "A signalling host pid {pid}");
    }
    env.sh(&a, "kill -9 -1; echo survived").await; // everything A may signal: only its own
    assert!(host_pid_alive(sleep_pid), "ATTACK SUCCEEDED: B's sleep was killed from A");
    let st = env.backend.status(&b).await.expect("status");
    assert_eq!((st.state, st.pid), (State::Running, Some(b_init as u32)), "B's init was killed from A");
    env.assert_alive(&b).await;

    // Positive control: the same hunt inside B finds and kills the sleep.
    let own = env.sh(&b, kill_sleeps).await;
    assert_eq!(own.ok("B hunting its own sleep"), "killed 1\n");
    assert!(wait_gone(sleep_pid).await, "B's sleep survived B's own kill");
    env.finish().await;
}

/// The workspace tries to kill or stop its own init (pid 1 inside): the kernel drops signals
/// from inside a pid namespace that its init does not handle, so the workspace keeps running.
#[tokio::test(flavor = "multi_thread")]
async fn attack_kill_own_init() {
    let Some(env) = env() else { return };
    let a = env.workspace("attacker", 13, Limits::default()).await;
    let before = env.backend.status(&a).await.expect("status");
    let init = before.pid.expect("init pid") as i32;
    let out = env
        .sh(&a, "for s in KILL TERM INT HUP QUIT SEGV ABRT USR1 USR2 PIPE ALRM STOP; do kill -s $s 1; done; echo sent")
        .await;
    out.ok("signalling pid 1");
    env.py(&a, &py("os.kill(1, 9); os.kill(1, 19); print('sent')")).await.ok("python signalling pid 1");
    let after = env.backend.status(&a).await.expect("status");
    assert_eq!((after.state, after.pid), (State::Running, Some(init as u32)), "ATTACK SUCCEEDED: the init died");
    let stat = std::fs::read_to_string(format!("/proc/{init}/stat")).expect("init's stat");
    let state = stat.rsplit_once(") ").expect("stat format").1.chars().next();
    assert!(matches!(state, Some('S' | 'R')), "ATTACK SUCCEEDED: the init is stopped or dead: {stat}");
    env.assert_alive(&a).await;
    // Positive control: the same kill works on an ordinary process.
    let ctl = env.sh(&a, "sleep 100 & kill -s KILL $!; wait $!; echo rc $?").await;
    assert_eq!(ctl.ok("killing a sleep"), "rc 137\n");
    env.finish().await;
}

// ---------------------------------------------------------------------------------------------
// 3. Network
// ---------------------------------------------------------------------------------------------

/// A host service listens on 127.0.0.1; the workspace has its own loopback and cannot reach it.
#[tokio::test(flavor = "multi_thread")]
async fn attack_connect_host_loopback_listener() {
    let Some(env) = env() else { return };
    let a = env.workspace("attacker", 14, Limits::default()).await;
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("host listener");
    let port = listener.local_addr().expect("addr").port();
    listener.set_nonblocking(true).expect("nonblocking");
    // Positive control: the listener really accepts connections on the host.
    let _c = std::net::TcpStream::connect(("127.0.0.1", port)).expect("host connecting to its own listener");
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match listener.accept() {
            Ok(_) => break,
            Err(e) if e.kind() == ErrorKind::WouldBlock && Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(5))
            }
            Err(e) => panic!("the host listener accepts nothing: {e}"),
        }
    }
    let code = fill(
        r#"
P = @PORT@
# Positive control: loopback inside the workspace works (on a port other than P).
while True:
    srv = socket.socket()
    srv.bind(('127.0.0.1', 0))
    if srv.getsockname()[1] != P:
        break
    srv.close()
srv.listen(1)
cli = socket.create_connection(srv.getsockname(), timeout=5)
conn, _ = srv.accept()
cli.sendall(b'ping')
print('loopback', conn.recv(4).decode())
def attack():
    s = socket.socket()
    s.settimeout(5)
    s.connect(('127.0.0.1', P))
print('host', e(attack))
def attack6():
    s = socket.socket(socket.AF_INET6)
    s.settimeout(5)
    s.connect(('::ffff:127.0.0.1', P))
print('host6', e(attack6))
"#,
        &[("PORT", port.to_string())],
    );
    let out = env.py(&a, &py(&code)).await;
    out.ok("the connect attempts");
    assert_eq!(out.field("loopback"), "ping", "loopback inside does not work: {out:?}");
    assert_eq!(out.field("host"), "ECONNREFUSED", "ATTACK SUCCEEDED: reached the host's 127.0.0.1:{port}: {out:?}");
    assert_ne!(out.field("host6"), "ok", "ATTACK SUCCEEDED: reached the host's listener over v4-mapped v6: {out:?}");
    match listener.accept() {
        Err(e) if e.kind() == ErrorKind::WouldBlock => {}
        other => panic!("ATTACK SUCCEEDED: the host listener got a connection from the workspace: {other:?}"),
    }
    env.finish().await;
}

/// A host service listens on an abstract unix socket (scoped to the network namespace, like
/// many desktop and container daemons' sockets); the workspace cannot reach it.
#[tokio::test(flavor = "multi_thread")]
async fn attack_connect_host_abstract_unix_socket() {
    use std::os::linux::net::SocketAddrExt;
    use std::os::unix::net::{SocketAddr, UnixListener, UnixStream};
    let Some(env) = env() else { return };
    let a = env.workspace("attacker", 15, Limits::default()).await;
    let name = format!("warren-isolation-{}", a.id);
    let addr = SocketAddr::from_abstract_name(name.as_bytes()).expect("abstract address");
    let listener = UnixListener::bind_addr(&addr).expect("host abstract listener");
    listener.set_nonblocking(true).expect("nonblocking");
    // Positive control: the host can connect to it.
    UnixStream::connect_addr(&addr).expect("host connecting to its abstract socket");
    listener.accept().expect("the host listener accepts");
    let code = fill(
        "s = socket.socket(socket.AF_UNIX)\nprint('abstract', e(lambda: s.connect('\\0@NAME@')))",
        &[("NAME", name)],
    );
    let out = env.py(&a, &py(&code)).await;
    assert_eq!(out.field("abstract"), "ECONNREFUSED", "ATTACK SUCCEEDED: reached the host's abstract socket: {out:?}");
    match listener.accept() {
        Err(e) if e.kind() == ErrorKind::WouldBlock => {}
        other => panic!("ATTACK SUCCEEDED: the host's abstract socket got a connection: {other:?}"),
    }
    env.finish().await;
}

/// The workspace looks for interfaces and routes and tries to reach a non-loopback address
/// (TEST-NET-1 / the v6 documentation prefix: no route exists inside, so no packet leaves) and
/// to open raw sockets.
#[tokio::test(flavor = "multi_thread")]
async fn attack_reach_network_beyond_loopback() {
    let Some(env) = env() else { return };
    let a = env.workspace("attacker", 16, Limits::default()).await;
    let ifaces = |dev: &str| -> BTreeSet<String> {
        dev.lines().skip(2).filter_map(|l| l.split_once(':')).map(|(n, _)| n.trim().to_owned()).collect()
    };
    let host_ifaces = ifaces(&std::fs::read_to_string("/proc/net/dev").expect("host /proc/net/dev"));
    assert!(host_ifaces.contains("lo"), "the host's /proc/net/dev parses: {host_ifaces:?}");
    let out = env.sh(&a, "cat /proc/net/dev").await;
    let inside: BTreeSet<String> = ifaces(out.ok("reading /proc/net/dev"));
    assert_eq!(
        inside,
        BTreeSet::from(["lo".to_owned()]),
        "ATTACK SUCCEEDED: the workspace sees interfaces (host has {host_ifaces:?})"
    );
    let link = env.sh(&a, "ip -o link | cut -d: -f2").await;
    assert_eq!(link.ok("ip link").trim(), "lo", "ip link shows more than lo");
    let route = env.sh(&a, "cat /proc/net/route").await;
    assert_eq!(route.ok("reading routes").lines().count(), 1, "ATTACK SUCCEEDED: the workspace has routes: {route:?}");
    let route6 = env.sh(&a, "ip -6 route show table all | grep -v ' dev lo ' ; true").await;
    assert_eq!(route6.ok("reading v6 routes"), "", "the workspace has v6 routes off loopback");

    let code = r#"
def tcp4():
    s = socket.socket(); s.settimeout(5); s.connect(('192.0.2.1', 80))
def tcp6():
    s = socket.socket(socket.AF_INET6); s.settimeout(5); s.connect(('2001:db8::1', 80))
def udp4():
    socket.socket(socket.AF_INET, socket.SOCK_DGRAM).sendto(b'x', ('192.0.2.1', 9))
def udp6():
    socket.socket(socket.AF_INET6, socket.SOCK_DGRAM).sendto(b'x', ('2001:db8::1', 9))
def bcast():
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
    s.sendto(b'x', ('255.255.255.255', 9))
print('tcp4', e(tcp4))
print('tcp6', e(tcp6))
print('udp4', e(udp4))
print('udp6', e(udp6))
print('bcast', e(bcast))
print('packet', e(lambda: socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0x0300)))
print('rawip', e(lambda: socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)))
"#;
    let out = env.py(&a, &py(code)).await;
    out.ok("the network attempts");
    for k in ["tcp4", "tcp6", "udp4", "udp6", "bcast"] {
        assert_eq!(out.field(k), "ENETUNREACH", "ATTACK SUCCEEDED? {k} did not fail as unreachable: {out:?}");
    }
    for k in ["packet", "rawip"] {
        assert_eq!(out.field(k), "EPERM", "ATTACK SUCCEEDED: {k} socket opened: {out:?}");
    }
    env.finish().await;
}

// ---------------------------------------------------------------------------------------------
// 4. Mounts and namespaces
// ---------------------------------------------------------------------------------------------

/// The workspace tries to mount a tmpfs, with mount(8) and with the raw syscalls.
#[tokio::test(flavor = "multi_thread")]
async fn attack_mount_filesystems() {
    let Some(env) = env() else { return };
    let a = env.workspace("attacker", 17, Limits::default()).await;
    let out = env
        .sh(
            &a,
            "mkdir /tmp/x && echo mkdir ok; before=$(wc -l < /proc/self/mountinfo); \
             mount -t tmpfs none /tmp/x; echo mount $?; mount --bind /tmp /tmp/x; echo bind $?; \
             echo mounts $before $(wc -l < /proc/self/mountinfo); \
             [ \"$(stat -c %d /tmp)\" = \"$(stat -c %d /tmp/x)\" ] && echo samefs yes",
        )
        .await;
    assert_eq!(out.field("mkdir"), "ok", "{out:?}");
    assert_ne!(out.field("mount"), "0", "ATTACK SUCCEEDED: mount -t tmpfs: {out:?}");
    assert_ne!(out.field("bind"), "0", "ATTACK SUCCEEDED: mount --bind: {out:?}");
    let counts: Vec<&str> = out.field("mounts").split(' ').collect();
    assert_eq!(counts[0], counts[1], "ATTACK SUCCEEDED: the mount table changed: {out:?}");
    assert_eq!(out.field("samefs"), "yes", "ATTACK SUCCEEDED: /tmp/x is a mount point: {out:?}");

    let code = fill(
        r#"
os.makedirs('/tmp/y', exist_ok=True)
print('mount', c_err(libc.mount(b'none', b'/tmp/y', b'tmpfs', 0, None)))
print('bind', c_err(libc.mount(b'/tmp', b'/tmp/y', None, 4096, None)))
print('remount', c_err(libc.mount(None, b'/', None, 32 | 4096, None)))
print('umount', c_err(libc.umount2(b'/proc', 2)))
print('fsopen', c_err(libc.syscall(ctypes.c_long(@FSOPEN@), b'tmpfs', 0)))
print('open_tree', c_err(libc.syscall(ctypes.c_long(@OPEN_TREE@), -100, b'/', 1)))
print('pivot_root', c_err(libc.syscall(ctypes.c_long(@PIVOT_ROOT@), b'/tmp', b'/tmp/y')))
"#,
        &[
            ("FSOPEN", libc::SYS_fsopen.to_string()),
            ("OPEN_TREE", libc::SYS_open_tree.to_string()),
            ("PIVOT_ROOT", libc::SYS_pivot_root.to_string()),
        ],
    );
    let out = env.py(&a, &py(&code)).await;
    for k in ["mount", "bind", "remount", "umount", "fsopen", "open_tree", "pivot_root"] {
        assert_eq!(out.field(k), "EPERM", "ATTACK SUCCEEDED? {k}: {out:?}");
    }
    env.finish().await;
}

/// The workspace tries to create namespaces (a user namespace would give it a root of its own
/// to mount with), with unshare(1), clone flags and clone3.
#[tokio::test(flavor = "multi_thread")]
async fn attack_unshare_namespaces() {
    let Some(env) = env() else { return };
    let a = env.workspace("attacker", 18, Limits::default()).await;
    for opt in ["-r", "-U", "-m", "-n", "-p -f", "-i", "-u", "-C", "-T"] {
        let out = env.sh(&a, &format!("unshare {opt} id -u")).await;
        out.failed_with(&format!("unshare {opt}"), "Operation not permitted");
    }
    let code = fill(
        r#"
def clone(flags):
    pid = libc.syscall(ctypes.c_long(@CLONE@), ctypes.c_ulong(flags | 17), None, None, None, None)
    if pid == 0:
        os._exit(7)
    if pid < 0:
        return c_err(-1)
    _, st = os.waitpid(pid, 0)
    return 'child-exit-%d' % os.waitstatus_to_exitcode(st)
print('plain', clone(0))
for name, flag in [('newuser', 0x10000000), ('newns', 0x20000), ('newnet', 0x40000000), ('newpid', 0x20000000),
                   ('newuts', 0x4000000), ('newipc', 0x8000000), ('newcgroup', 0x2000000)]:
    print(name, clone(flag))
print('clone3', c_err(libc.syscall(ctypes.c_long(@CLONE3@), None, ctypes.c_long(0))))
print('unshare', c_err(libc.unshare(0x10000000)))
print('unshare0', c_err(libc.unshare(0)))
fd = os.open('/proc/self/ns/net', os.O_RDONLY)
print('setns', c_err(libc.setns(fd, 0)))
"#,
        &[("CLONE", libc::SYS_clone.to_string()), ("CLONE3", libc::SYS_clone3.to_string())],
    );
    let out = env.py(&a, &py(&code)).await;
    // Positive control: a plain clone through the same path works.
    assert_eq!(out.field("plain"), "child-exit-7", "{out:?}");
    for k in ["newuser", "newns", "newnet", "newpid", "newuts", "newipc", "newcgroup", "unshare", "unshare0", "setns"] {
        assert_eq!(out.field(k), "EPERM", "ATTACK SUCCEEDED? {k}: {out:?}");
    }
    assert_eq!(out.field("clone3"), "ENOSYS", "clone3 is not answered ENOSYS (its flags cannot be filtered): {out:?}");
    env.finish().await;
}

// ---------------------------------------------------------------------------------------------
// 5. The host's root filesystem
// ---------------------------------------------------------------------------------------------

/// The workspace writes to `/usr/bin`, `/etc/passwd`, `/`, and touches a host binary.
#[tokio::test(flavor = "multi_thread")]
async fn attack_write_host_root() {
    let Some(env) = env() else { return };
    let a = env.workspace("attacker", 19, Limits::default()).await;
    let name = format!("warren-evil-{}", a.id);
    let passwd_before = std::fs::read("/etc/passwd").expect("host passwd");
    let py_before = std::fs::metadata("/usr/bin/python3").expect("host python3");
    let targets = [
        format!("/usr/bin/{name}"),
        format!("/etc/{name}"),
        format!("/{name}"),
        format!("/bin/{name}"),
        format!("/lib/{name}"),
    ];
    for t in &targets {
        assert!(!std::path::Path::new(t).exists(), "{t} exists on the host before the test");
    }
    let script = fill(
        "for f in /usr/bin/@N@ /etc/@N@ /@N@ /bin/@N@ /lib/@N@; do echo evil > $f && echo wrote $f; done; \
         echo evil >> /etc/passwd && echo wrote /etc/passwd; \
         mkdir /@N@.d && echo wrote mkdir; \
         rm /etc/hostname && echo wrote rm; \
         touch /usr/bin/python3 && echo wrote touch; \
         chmod 4777 /usr/bin/python3 && echo wrote chmod; \
         ln -s /tmp /usr/@N@ && echo wrote link; \
         echo own > $HOME/own && echo home ok; echo t > /tmp/t && echo tmp ok",
        &[("N", name.clone())],
    );
    let out = env.sh(&a, &script).await;
    assert!(!out.stdout.contains("wrote"), "ATTACK SUCCEEDED: {out:?}");
    assert!(out.stderr.contains("Read-only file system") || out.stderr.contains("Permission denied"), "{out:?}");
    // Positive control: the workspace can write where it is meant to.
    assert_eq!(out.field("home"), "ok", "{out:?}");
    assert_eq!(out.field("tmp"), "ok", "{out:?}");
    assert_eq!(std::fs::read_to_string(env.host_home(&a).join("own")).expect("own file on the host"), "own\n");
    for t in targets.iter().chain([&format!("/{name}.d"), &format!("/usr/{name}")]) {
        assert!(!std::path::Path::new(t).exists(), "ATTACK SUCCEEDED: {t} appeared on the host");
    }
    assert_eq!(
        std::fs::read("/etc/passwd").expect("host passwd"),
        passwd_before,
        "ATTACK SUCCEEDED: host /etc/passwd changed"
    );
    let py_after = std::fs::metadata("/usr/bin/python3").expect("host python3");
    assert_eq!(
        (py_before.mtime(), py_before.mode()),
        (py_after.mtime(), py_after.mode()),
        "ATTACK SUCCEEDED: host python3 changed"
    );
    env.finish().await;
}

// ---------------------------------------------------------------------------------------------
// 6. /proc, descriptors, symlinks, the control socket
// ---------------------------------------------------------------------------------------------

/// The workspace reaches into its init (which runs the host's helper binary and holds the
/// control socket) through `/proc/1/{root,cwd,fd,environ,exe,...}`: the init is non-dumpable.
#[tokio::test(flavor = "multi_thread")]
async fn attack_read_init_via_proc1() {
    let Some(env) = env() else { return };
    let a = env.workspace("attacker", 20, Limits::default()).await;
    let probe =
        "probe() { p=$1; for d in root/ cwd/ fd/ fdinfo/; do ls /proc/$p/$d >/dev/null 2>&1 && echo open $d; done; \
                 for f in environ maps auxv mountinfo; do cat /proc/$p/$f >/dev/null 2>&1 && echo open $f; done; \
                 for l in exe root cwd; do readlink /proc/$p/$l >/dev/null 2>&1 && echo open link-$l; done; }; ";
    let all: BTreeSet<&str> = [
        "root/",
        "cwd/",
        "fd/",
        "fdinfo/",
        "environ",
        "maps",
        "auxv",
        "mountinfo",
        "link-exe",
        "link-root",
        "link-cwd",
    ]
    .into();
    let opened = |o: &Out| -> BTreeSet<String> {
        o.stdout.lines().filter_map(|l| l.strip_prefix("open ")).map(str::to_owned).collect()
    };
    // Positive control: the probe opens all of these for the shell itself.
    let own = env.sh(&a, &format!("{probe} probe $$")).await;
    let own_set = opened(&own);
    assert_eq!(
        own_set.iter().map(String::as_str).collect::<BTreeSet<_>>(),
        all,
        "the probe does not work on an own process: {own:?}"
    );
    let out = env.sh(&a, &format!("{probe} probe 1")).await;
    let mut leaked = opened(&out);
    // mountinfo of pid 1 is the workspace's own mount table (no ptrace check); it is the same
    // as the shell's.
    leaked.remove("mountinfo");
    assert!(leaked.is_empty(), "ATTACK SUCCEEDED: opened /proc/1/{leaked:?}: {out:?}");
    for f in ["mem", "stack", "syscall", "environ"] {
        let o = env.sh(&a, &format!("cat /proc/1/{f}")).await;
        assert_ne!(o.code, 0, "ATTACK SUCCEEDED: read /proc/1/{f}: {o:?}");
        assert!(o.stdout.is_empty(), "ATTACK SUCCEEDED: read /proc/1/{f}: {o:?}");
    }
    env.finish().await;
}

/// The workspace opens the running binaries for writing through `/proc/self/exe` and
/// `/proc/1/exe` (CVE-2019-5736 style: overwrite the host's helper binary or a host tool).
#[tokio::test(flavor = "multi_thread")]
async fn attack_overwrite_proc_self_exe() {
    let Some(env) = env() else { return };
    let a = env.workspace("attacker", 21, Limits::default()).await;
    let helper = std::path::PathBuf::from(env!("CARGO_BIN_EXE_warren-nsinit"));
    let helper_before = std::fs::read(&helper).expect("helper binary");
    let python = std::fs::canonicalize("/usr/bin/python3").expect("python3");
    let python_before = std::fs::read(&python).expect("python3 binary");
    let code = r#"
print('read', e(lambda: open('/proc/self/exe', 'rb').read(4)))
print('self', e(lambda: open('/proc/self/exe', 'r+b')))
print('selfa', e(lambda: open('/proc/self/exe', 'ab')))
print('init', e(lambda: open('/proc/1/exe', 'r+b')))
print('initr', e(lambda: open('/proc/1/exe', 'rb')))
"#;
    let out = env.py(&a, &py(code)).await;
    out.ok("the open attempts");
    // Positive control: opening for reading works, so the failures are about writing.
    assert_eq!(out.field("read"), "ok", "{out:?}");
    for k in ["self", "selfa", "init", "initr"] {
        let r = out.field(k);
        assert!(["EACCES", "ETXTBSY", "EROFS", "EPERM"].contains(&r), "ATTACK SUCCEEDED: {k} gave {r}: {out:?}");
    }
    let sh = env.sh(&a, "echo x >> /proc/self/exe && echo wrote").await;
    assert!(!sh.stdout.contains("wrote"), "ATTACK SUCCEEDED: {sh:?}");
    assert!(
        std::fs::read(&helper).expect("helper binary") == helper_before,
        "ATTACK SUCCEEDED: the helper binary changed"
    );
    assert!(std::fs::read(&python).expect("python3") == python_before, "ATTACK SUCCEEDED: host python3 changed");
    env.finish().await;
}

/// The workspace looks for descriptors leaked by warren or the init (the control socket, the
/// helper's pipes): a command has exactly stdin, stdout and stderr.
#[tokio::test(flavor = "multi_thread")]
async fn attack_use_leaked_fds() {
    let Some(env) = env() else { return };
    let a = env.workspace("attacker", 22, Limits::default()).await;
    let code = r#"
fds = lambda: ' '.join(sorted(os.listdir('/proc/self/fd'), key=int))
print('fds', fds())
for fd in (0, 1, 2):
    print('fd%d' % fd, os.readlink('/proc/self/fd/%d' % fd).split(':')[0])
f = open('/proc/self/status')
print('fds2', fds())
"#;
    let out = env.py(&a, &py(code)).await;
    out.ok("listing fds");
    assert_eq!(out.field("fds"), "0 1 2 3", "ATTACK SUCCEEDED: leaked descriptors (3 is the lister's own): {out:?}");
    // Positive control: an extra open descriptor shows.
    assert_eq!(out.field("fds2"), "0 1 2 3 4", "{out:?}");
    for fd in ["fd0", "fd1", "fd2"] {
        assert_eq!(out.field(fd), "pipe", "{out:?}");
    }
    let sh = env.sh(&a, "ls /proc/self/fd | tr '\\n' ' '").await;
    assert_eq!(sh.ok("ls fds"), "0 1 2 3 ", "ATTACK SUCCEEDED: leaked descriptors in sh: {sh:?}");
    // With a terminal.
    let req =
        ExecRequest { tty: Some(TtySize { rows: 24, cols: 80 }), ..ExecRequest::new(["python3", "-c", &py(code)]) };
    let tty = env.exec(&a, req).await;
    let tty = Out { stdout: tty.stdout.replace('\r', ""), ..tty };
    assert_eq!(tty.field("fds"), "0 1 2 3", "ATTACK SUCCEEDED: leaked descriptors with a tty: {tty:?}");
    assert_eq!(tty.field("fd0"), "/dev/pts/0", "{tty:?}");
    env.finish().await;
}

/// The workspace plants symlinks to the host's root, to the init's root, to `/etc/shadow`, out
/// via `..`, and to B's host path, then has warren (root) read, list, write and delete through
/// them with the file API. Inside, the same links only reach the workspace's own root.
#[tokio::test(flavor = "multi_thread")]
async fn attack_symlink_out_through_file_api() {
    let Some(env) = env() else { return };
    let a = env.workspace("attacker", 23, Limits::default()).await;
    let b = env.workspace("victim", 24, Limits::default()).await;
    env.sh(&b, "echo secret-of-victim > marker").await.ok("B's marker");
    let b_home = env.host_home(&b);
    let name = format!("warren-evil-{}", a.id);
    let script = fill(
        "ln -s / hostroot && ln -s /proc/1/root r1 && ln -s /etc/shadow shadow && ln -s ../../../../../../../.. up && \
         ln -s '@BH@' bhome && ln -s /etc etcdir && ln -s /tmp tmpdir && echo inner > real.txt && ln -s real.txt link.txt && \
         mkdir d && ln -s ../real.txt d/up.txt && echo planted",
        &[("BH", b_home.display().to_string())],
    );
    env.sh(&a, &script).await.ok("planting links");
    let be = &env.backend;
    // Positive controls: links that stay inside work, and B's marker is readable by B's owner.
    assert_eq!(be.read_file(&a, &wp("link.txt")).await.expect("read via inner link"), b"inner\n");
    assert_eq!(be.read_file(&a, &wp("d/up.txt")).await.expect("read via inner ../ link"), b"inner\n");
    assert_eq!(be.read_file(&b, &wp("marker")).await.expect("B's marker"), b"secret-of-victim\n");

    for p in
        ["hostroot/etc/shadow", "hostroot/etc/passwd", "r1/etc/hostname", "shadow", "up/etc/passwd", "bhome/marker"]
    {
        assert_invalid_path(&format!("read_file {p}"), be.read_file(&a, &wp(p)).await);
    }
    for p in ["hostroot", "hostroot/etc", "r1", "up", "bhome", "etcdir"] {
        assert_invalid_path(&format!("list_files {p}"), be.list_files(&a, &wp(p)).await);
    }
    assert_invalid_path(
        "write_file etcdir",
        be.write_file(&a, &wp(&format!("etcdir/{name}")), b"evil".to_vec(), 0o644).await,
    );
    assert_invalid_path("write_file bhome", be.write_file(&a, &wp("bhome/evil"), b"evil".to_vec(), 0o644).await);
    assert_invalid_path("make_dir tmpdir", be.make_dir(&a, &wp(&format!("tmpdir/{name}/x"))).await);
    assert_invalid_path("delete_file bhome/marker", be.delete_file(&a, &wp("bhome/marker"), false).await);
    assert_invalid_path("delete_file up/tmp", be.delete_file(&a, &wp(&format!("up/tmp/{name}")), true).await);
    assert!(!std::path::Path::new("/etc").join(&name).exists(), "ATTACK SUCCEEDED: wrote into host /etc");
    assert!(!std::path::Path::new("/tmp").join(&name).exists(), "ATTACK SUCCEEDED: created a dir in host /tmp");
    assert!(!b_home.join("evil").exists(), "ATTACK SUCCEEDED: wrote into B's home");
    assert!(b_home.join("marker").exists(), "ATTACK SUCCEEDED: deleted B's marker");

    // Inside, the links resolve in the workspace's own root.
    let host_name = std::fs::read_to_string("/proc/sys/kernel/hostname").expect("host hostname");
    let inside = env.sh(&a, "cat hostroot/etc/hostname").await;
    assert_eq!(inside.ok("reading through hostroot inside"), "attacker\n");
    assert_ne!(inside.stdout, host_name);
    env.sh(&a, "ls r1/").await.failed_with("listing /proc/1/root via a link", "Permission denied");
    env.sh(&a, "cat bhome/marker").await.failed_with("reading B via a link", "No such file or directory");
    env.sh(&a, "cat shadow").await.failed_with("reading /etc/shadow via a link", "No such file or directory");
    env.finish().await;
}

/// The workspace looks for the init's control socket (root-only, outside the workspace's
/// root) by name, in `/proc/net/unix`, and by its host path.
#[tokio::test(flavor = "multi_thread")]
async fn attack_reach_control_socket() {
    let Some(env) = env() else { return };
    let a = env.workspace("attacker", 25, Limits::default()).await;
    let sock = env.run_dir(&a).join("ctl.sock");
    // Positive controls: the socket exists on the host, and the host's socket table names it.
    assert!(std::fs::symlink_metadata(&sock).expect("ctl.sock on the host").file_type().is_socket());
    let host_unix = std::fs::read_to_string("/proc/net/unix").expect("host /proc/net/unix");
    assert!(host_unix.contains(&*sock.to_string_lossy()), "the host's /proc/net/unix does not list {}", sock.display());
    let found =
        env.sh(&a, "find / \\( -name ctl.sock -o -name init.json -o -name hostname \\) 2>/dev/null; true").await;
    let found: Vec<&str> = found.ok("searching").lines().collect();
    // Positive control: the search finds files by name (the workspace's /etc/hostname).
    assert!(found.contains(&"/etc/hostname"), "find is broken: {found:?}");
    assert!(
        !found.iter().any(|f| f.ends_with("/ctl.sock") || f.ends_with("/init.json")),
        "ATTACK SUCCEEDED: {found:?}"
    );
    let table = env.sh(&a, "cat /proc/net/unix").await;
    assert!(
        !table.ok("reading /proc/net/unix").contains("ctl.sock"),
        "ATTACK SUCCEEDED: the workspace sees the control socket: {table:?}"
    );
    let code = fill(
        "s = socket.socket(socket.AF_UNIX)\nprint('connect', e(lambda: s.connect('@SOCK@')))",
        &[("SOCK", sock.display().to_string())],
    );
    let out = env.py(&a, &py(&code)).await;
    assert_eq!(out.field("connect"), "ENOENT", "ATTACK SUCCEEDED: connected to the control socket: {out:?}");
    env.finish().await;
}

// ---------------------------------------------------------------------------------------------
// 7. Terminal injection
// ---------------------------------------------------------------------------------------------

/// In a tty exec, the workspace pushes bytes into its terminal's input with TIOCSTI (also with
/// the request number's upper 32 bits set, which the kernel ignores) and uses TIOCLINUX.
#[tokio::test(flavor = "multi_thread")]
async fn attack_tiocsti_inject_into_terminal() {
    let Some(env) = env() else { return };
    let a = env.workspace("attacker", 26, Limits::default()).await;
    let code = r#"
import fcntl, termios
print('isatty', os.isatty(0))
print('winsize', '%dx%d' % struct.unpack('HHHH', fcntl.ioctl(0, termios.TIOCGWINSZ, b'\0' * 8))[:2])
print('tiocsti', e(lambda: fcntl.ioctl(0, termios.TIOCSTI, b'x')))
print('tiocsti1', e(lambda: fcntl.ioctl(1, termios.TIOCSTI, b'x')))
print('tioclinux', e(lambda: fcntl.ioctl(0, 0x541C, b'\x06')))
c = ctypes.c_char(b'x')
libc.ioctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_void_p]
print('tiocsti64', c_err(libc.ioctl(0, (1 << 32) | termios.TIOCSTI, ctypes.byref(c))))
print('tioclinux64', c_err(libc.ioctl(0, (1 << 32) | 0x541C, ctypes.byref(ctypes.c_char(b'\x06')))))
"#;
    let req =
        ExecRequest { tty: Some(TtySize { rows: 24, cols: 80 }), ..ExecRequest::new(["python3", "-c", &py(code)]) };
    let out = env.exec(&a, req).await;
    let out = Out { stdout: out.stdout.replace('\r', ""), ..out };
    // Positive control: fd 0 is the terminal and other ioctls on it work.
    assert_eq!(out.field("isatty"), "True", "{out:?}");
    assert_eq!(out.field("winsize"), "24x80", "{out:?}");
    for k in ["tiocsti", "tiocsti1", "tioclinux", "tiocsti64", "tioclinux64"] {
        assert_eq!(out.field(k), "EPERM", "ATTACK SUCCEEDED? {k}: {out:?}");
    }
    env.finish().await;
}

// ---------------------------------------------------------------------------------------------
// 8. Privileges
// ---------------------------------------------------------------------------------------------

/// The workspace runs the host's setuid-root binaries and asks for uid 0 directly.
#[tokio::test(flavor = "multi_thread")]
async fn attack_gain_root_via_setuid_binaries() {
    let Some(env) = env() else { return };
    let a = env.workspace("attacker", 27, Limits::default()).await;
    for bin in ["/bin/mount", "/usr/bin/su", "/usr/bin/newgrp"] {
        let md = std::fs::metadata(bin).expect("setuid binary on the host");
        assert!(
            md.mode() & 0o4000 != 0 && md.uid() == 0,
            "{bin} is not setuid root on this host: the test proves nothing"
        );
    }
    // newgrp (setuid root) prompts for a password as euid 0 and waits: its euid is observable.
    let code = r#"
import subprocess
p = subprocess.Popen(['/usr/bin/newgrp', 'root'], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
got = b''
while b'Password' not in got:
    chunk = os.read(p.stdout.fileno(), 100)
    if not chunk:
        break
    got += chunk
print('prompt', b'Password' in got)
print('uids', ' '.join(open('/proc/%d/status' % p.pid).read().split('Uid:')[1].split('\n')[0].split()))
p.kill()
p.wait()
"#;
    let out = env.py(&a, &py(code)).await;
    assert_eq!(out.field("prompt"), "True", "newgrp did not reach its password prompt: {out:?}");
    let id = a.uid.to_string();
    assert_eq!(
        out.field("uids"),
        [id.as_str(); 4].join(" "),
        "ATTACK SUCCEEDED: setuid newgrp ran with root ids: {out:?}"
    );
    // Positive control: on the host, an unprivileged user (nobody: newgrp wants a passwd entry)
    // running the same binary is euid 0 at the prompt.
    assert_eq!(
        host_setuid_euid(65534, "/usr/bin/newgrp", &["root"]),
        0,
        "the host does not honour setuid: the test proves nothing"
    );

    let out = env
        .sh(&a, "mkdir -p /tmp/m; /bin/mount -t tmpfs none /tmp/m; echo rc $?; grep -c ' /tmp/m ' /proc/self/mountinfo")
        .await;
    assert_ne!(out.field("rc"), "0", "ATTACK SUCCEEDED: setuid mount mounted: {out:?}");
    let su = env.sh(&a, "/usr/bin/su -c 'id -u' root </dev/null").await;
    assert_ne!(su.code, 0, "ATTACK SUCCEEDED: su: {su:?}");
    assert!(!su.stdout.lines().any(|l| l.trim() == "0"), "ATTACK SUCCEEDED: su ran as root: {su:?}");

    let code = r#"
print('setuid', e(lambda: os.setuid(0)))
print('seteuid', e(lambda: os.seteuid(0)))
print('setresuid', e(lambda: os.setresuid(0, 0, 0)))
print('setgid', e(lambda: os.setgid(0)))
print('setgroups', e(lambda: os.setgroups([0])))
print('ids', *os.getresuid(), *os.getresgid(), *os.getgroups())
print(open('/proc/self/status').read().replace('\t', ' '))
"#;
    let out = env.py(&a, &py(code)).await;
    out.ok("the privilege attempts");
    for k in ["setuid", "seteuid", "setresuid", "setgid", "setgroups"] {
        assert_eq!(out.field(k), "EPERM", "ATTACK SUCCEEDED: {k}: {out:?}");
    }
    assert_eq!(out.field("ids"), [id.as_str(); 7].join(" "), "{out:?}");
    for cap in ["CapInh:", "CapPrm:", "CapEff:", "CapBnd:", "CapAmb:"] {
        assert_eq!(out.field(cap).trim(), "0000000000000000", "{cap} is not empty: {out:?}");
    }
    assert_eq!(out.field("NoNewPrivs:").trim(), "1", "{out:?}");
    assert_eq!(out.field("Seccomp:").trim(), "2", "{out:?}");
    env.finish().await;
}

// ---------------------------------------------------------------------------------------------
// 9, 10. Resource exhaustion
// ---------------------------------------------------------------------------------------------

/// A fork bomb under `pids = 64`: bounded by the pids limit, ended by the exec timeout; the
/// workspace and its neighbour keep working, and `stop` leaves no process of its uid.
#[tokio::test(flavor = "multi_thread")]
async fn attack_fork_bomb() {
    let Some(env) = env() else { return };
    let a = env.workspace("attacker", 28, Limits { pids: Some(64), ..Limits::default() }).await;
    let b = env.workspace("neighbour", 29, Limits::default()).await;
    let req = ExecRequest {
        timeout: Some(Duration::from_secs(3)),
        ..ExecRequest::new(["sh", "-c", "b() { b | b & }; b; sleep 60"])
    };
    let (backend, spec) = (Arc::clone(&env.backend), a.clone());
    let bomb = tokio::spawn(async move { backend.exec(&spec, req).await });
    let mut max_pids = 0;
    let mut neighbour_checked = false;
    while !bomb.is_finished() {
        max_pids = max_pids.max(env.backend.stats(&a).await.expect("stats").pids);
        if !neighbour_checked && max_pids >= 32 {
            // The neighbour works while the bomb runs.
            env.assert_alive(&b).await;
            neighbour_checked = true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let out: Out = bomb.await.expect("bomb task").expect("bomb exec").into();
    eprintln!(
        "fork bomb: at most {max_pids} pids seen, neighbour checked during the bomb: {neighbour_checked}, {out:?}"
    );
    assert!(max_pids <= 64, "ATTACK SUCCEEDED: {max_pids} pids in a workspace limited to 64");
    // Positive control: the bomb really ran into the limit.
    assert!(out.stderr.contains("fork"), "the fork bomb never hit the limit: {out:?} (max {max_pids} pids)");
    env.assert_alive(&b).await;
    // The workspace recovers once the bomb's process group is killed.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let r = env.backend.exec(&a, ExecRequest::new(["echo", "ok"])).await;
        match r {
            Ok(o) if o.exit_code == 0 && o.stdout == b"ok\n" => break,
            other => assert!(Instant::now() < deadline, "the workspace did not recover from the bomb: {other:?}"),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(env.backend.status(&a).await.expect("status").state, State::Running);
    env.finish().await; // stops both and asserts no process of either uid is left
}

/// A memory hog under `memory = 64 MiB` is killed (or gets MemoryError); the neighbour and the
/// workspace itself keep working; usage never exceeds the limit.
#[tokio::test(flavor = "multi_thread")]
async fn attack_memory_hog() {
    let Some(env) = env() else { return };
    const LIMIT: u64 = 64 << 20;
    let a = env.workspace("attacker", 30, Limits { memory_bytes: Some(LIMIT), ..Limits::default() }).await;
    let b = env.workspace("neighbour", 31, Limits::default()).await;
    let code = "a = []\nfor i in range(32):\n    a.append(b'\\x01' * (16 << 20))\n    print('mib', (i + 1) * 16, flush=True)\nprint('survived', flush=True)\n";
    let (backend, spec) = (Arc::clone(&env.backend), a.clone());
    let hog = tokio::spawn(async move {
        backend
            .exec(
                &spec,
                ExecRequest { timeout: Some(Duration::from_secs(30)), ..ExecRequest::new(["python3", "-c", code]) },
            )
            .await
    });
    let mut max_mem = 0;
    while !hog.is_finished() {
        let s = env.backend.stats(&a).await.expect("stats");
        assert_eq!(s.memory_limit_bytes, Some(LIMIT), "{s:?}");
        max_mem = max_mem.max(s.memory_bytes);
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let out: Out = hog.await.expect("hog task").expect("hog exec").into();
    eprintln!("memory hog: at most {max_mem} bytes seen, {out:?}");
    assert!(!out.stdout.contains("survived"), "ATTACK SUCCEEDED: allocated 512 MiB under a 64 MiB limit: {out:?}");
    let killed = out.code == 137 && out.signal == Some(9);
    assert!(killed || out.stderr.contains("MemoryError"), "the hog ended some other way: {out:?}");
    // Positive control: the hog did allocate before it was stopped.
    let last: u64 =
        out.stdout.lines().filter_map(|l| l.strip_prefix("mib ")).filter_map(|n| n.parse().ok()).max().unwrap_or(0);
    assert!(last >= 16, "the hog never allocated anything: {out:?}");
    assert!(last <= 64, "ATTACK SUCCEEDED: the hog held {last} MiB: {out:?}");
    assert!(max_mem <= LIMIT, "ATTACK SUCCEEDED: usage {max_mem} above the limit {LIMIT}");
    env.assert_alive(&b).await;
    env.assert_alive(&a).await;
    env.finish().await;
}

// ---------------------------------------------------------------------------------------------
// 11. Everything else
// ---------------------------------------------------------------------------------------------

/// The workspace ptraces its init (and reads its memory with process_vm_readv).
#[tokio::test(flavor = "multi_thread")]
async fn attack_ptrace_init() {
    let Some(env) = env() else { return };
    let a = env.workspace("attacker", 32, Limits::default()).await;
    let code = r#"
import subprocess
libc.ptrace.argtypes = [ctypes.c_long, ctypes.c_long, ctypes.c_void_p, ctypes.c_void_p]
libc.ptrace.restype = ctypes.c_long
ATTACH, DETACH, SEIZE = 16, 17, 0x4206
print('attach1', c_err(libc.ptrace(ATTACH, 1, None, None)))
print('seize1', c_err(libc.ptrace(SEIZE, 1, None, None)))
class iovec(ctypes.Structure):
    _fields_ = [('base', ctypes.c_void_p), ('len', ctypes.c_size_t)]
buf = ctypes.create_string_buffer(8)
local = iovec(ctypes.cast(buf, ctypes.c_void_p), 8)
remote = iovec(0x400000, 8)
print('vmread1', c_err(libc.process_vm_readv(1, ctypes.byref(local), 1, ctypes.byref(remote), 1, 0)))
# Positive control: ptrace itself works on an ordinary child.
child = subprocess.Popen(['sleep', '30'])
r = c_err(libc.ptrace(ATTACH, child.pid, None, None))
print('attachchild', r)
if r == 'ok':
    os.waitpid(child.pid, 0)
    libc.ptrace(DETACH, child.pid, None, None)
child.kill()
child.wait()
"#;
    let out = env.py(&a, &py(code)).await;
    out.ok("the ptrace attempts");
    assert_eq!(out.field("attachchild"), "ok", "ptrace does not work at all here: {out:?}");
    for k in ["attach1", "seize1", "vmread1"] {
        assert_eq!(out.field(k), "EPERM", "ATTACK SUCCEEDED: {k}: {out:?}");
    }
    env.assert_alive(&a).await;
    env.finish().await;
}

/// The workspace renames the host with sethostname(2), hostname(1) and /proc/sys.
#[tokio::test(flavor = "multi_thread")]
async fn attack_set_hostname() {
    let Some(env) = env() else { return };
    let a = env.workspace("attacker", 33, Limits::default()).await;
    let host_before = std::fs::read_to_string("/proc/sys/kernel/hostname").expect("host hostname");
    let out = env
        .sh(
            &a,
            "echo before $(hostname); hostname evil-host; echo cmd $?; echo evil-host > /proc/sys/kernel/hostname; \
             echo proc $?; echo evil > /proc/sys/kernel/domainname; echo domain $?; echo after $(hostname)",
        )
        .await;
    // Positive control: the workspace has its own UTS namespace (its own name, not the host's).
    assert_eq!(out.field("before"), "attacker", "{out:?}");
    assert_ne!(format!("{}\n", out.field("before")), host_before);
    for k in ["cmd", "proc", "domain"] {
        assert_ne!(out.field(k), "0", "ATTACK SUCCEEDED: {k}: {out:?}");
    }
    assert_eq!(out.field("after"), "attacker", "ATTACK SUCCEEDED: hostname changed: {out:?}");
    let code = "print('sethostname', c_err(libc.sethostname(b'evil', 4)))\nprint('setdomainname', c_err(libc.setdomainname(b'evil', 4)))";
    let out = env.py(&a, &py(code)).await;
    assert_eq!(out.field("sethostname"), "EPERM", "ATTACK SUCCEEDED: {out:?}");
    assert_eq!(out.field("setdomainname"), "EPERM", "ATTACK SUCCEEDED: {out:?}");
    assert_eq!(std::fs::read_to_string("/proc/sys/kernel/hostname").expect("host hostname"), host_before);
    env.finish().await;
}

/// The workspace creates device nodes (a raw disk, /dev/mem) with mknod.
#[tokio::test(flavor = "multi_thread")]
async fn attack_mknod_device() {
    let Some(env) = env() else { return };
    let a = env.workspace("attacker", 34, Limits::default()).await;
    let code = r#"
import stat
print('chr', e(lambda: os.mknod('/tmp/mem', stat.S_IFCHR | 0o666, os.makedev(1, 1))))
print('blk', e(lambda: os.mknod(os.path.expanduser('~/sda'), stat.S_IFBLK | 0o666, os.makedev(8, 0))))
print('fifo', e(lambda: os.mkfifo('/tmp/fifo')))
"#;
    let out = env.py(&a, &py(code)).await;
    // Positive control: mknod's harmless sibling works.
    assert_eq!(out.field("fifo"), "ok", "{out:?}");
    assert_eq!(out.field("chr"), "EPERM", "ATTACK SUCCEEDED: {out:?}");
    assert_eq!(out.field("blk"), "EPERM", "ATTACK SUCCEEDED: {out:?}");
    env.sh(&a, "mknod /tmp/null c 1 3").await.failed_with("mknod(1)", "Operation not permitted");
    assert!(!env.host_home(&a).join("sda").exists(), "ATTACK SUCCEEDED: a block device in the home");
    env.finish().await;
}

/// The workspace chroots (the first step of classic chroot breakouts).
#[tokio::test(flavor = "multi_thread")]
async fn attack_chroot() {
    let Some(env) = env() else { return };
    let a = env.workspace("attacker", 35, Limits::default()).await;
    let out = env
        .py(&a, &py("print('chroot', e(lambda: os.chroot('/tmp')))\nprint('chdir', e(lambda: os.chdir('/tmp')))"))
        .await;
    assert_eq!(out.field("chdir"), "ok", "{out:?}");
    assert_eq!(out.field("chroot"), "EPERM", "ATTACK SUCCEEDED: {out:?}");
    env.sh(&a, "chroot / true").await.failed_with("chroot(1)", "Operation not permitted");
    env.finish().await;
}

/// The workspace goes for kernel interfaces: /sys (cgroups, devices), /proc/kcore,
/// /proc/keys, core_pattern (runs a program as root on the host), sysrq, drop_caches, /dev.
#[tokio::test(flavor = "multi_thread")]
async fn attack_kernel_interfaces() {
    let Some(env) = env() else { return };
    let a = env.workspace("attacker", 36, Limits::default()).await;
    let core_before = std::fs::read_to_string("/proc/sys/kernel/core_pattern").expect("host core_pattern");
    // Positive controls: the host has what is hidden inside.
    assert!(std::path::Path::new("/sys/fs/cgroup").is_dir());
    let host_kcore = std::path::Path::new("/proc/kcore").exists();

    let out = env.sh(&a, "ls /sys").await;
    out.failed_with("listing /sys", "No such file or directory");
    let out = env
        .sh(
            &a,
            "echo kcore $(cat /proc/kcore 2>/dev/null | wc -c); echo keys $(cat /proc/keys 2>/dev/null | wc -c); \
             echo '|/tmp/x' > /proc/sys/kernel/core_pattern; echo core $?; \
             echo h > /proc/sysrq-trigger; echo sysrq $?; \
             echo 1 > /proc/sys/vm/drop_caches; echo drop $?; \
             touch /dev/evil; echo devtouch $?; \
             echo dev $(ls -A /dev); \
             echo cgroup $(cut -d: -f3 /proc/self/cgroup | sort -u)",
        )
        .await;
    // (This host's kernel may have no /proc/kcore at all: then it is absent inside too.)
    assert_eq!(out.field("kcore"), "0", "ATTACK SUCCEEDED: read kernel memory (host has kcore: {host_kcore}): {out:?}");
    assert_eq!(out.field("keys"), "0", "{out:?}");
    for k in ["core", "sysrq", "drop", "devtouch"] {
        assert_ne!(out.field(k), "0", "ATTACK SUCCEEDED: {k}: {out:?}");
    }
    let dev: BTreeSet<&str> = out.field("dev").split(' ').collect();
    let allowed: BTreeSet<&str> =
        ["null", "zero", "full", "random", "urandom", "tty", "pts", "ptmx", "shm", "fd", "stdin", "stdout", "stderr"]
            .into();
    assert!(
        dev.is_subset(&allowed),
        "ATTACK SUCCEEDED: extra devices in /dev: {:?}",
        dev.difference(&allowed).collect::<Vec<_>>()
    );
    assert_eq!(out.field("cgroup"), "/", "the workspace sees host cgroup paths: {out:?}");
    assert_eq!(std::fs::read_to_string("/proc/sys/kernel/core_pattern").expect("host core_pattern"), core_before);
    env.finish().await;
}

/// The workspace calls the syscalls the seccomp filter denies (keyrings, bpf, perf events,
/// userfaultfd, io_uring, open_by_handle_at, modules, syslog, ...) with harmless arguments
/// that would not fail with EPERM without the filter.
#[tokio::test(flavor = "multi_thread")]
async fn attack_denied_syscalls() {
    let Some(env) = env() else { return };
    let a = env.workspace("attacker", 37, Limits::default()).await;
    let calls: Vec<(&str, i64, &str)> = vec![
        ("keyctl", libc::SYS_keyctl, "0, -3, 0"),
        ("add_key", libc::SYS_add_key, "0, 0, 0, 0, 0"),
        ("request_key", libc::SYS_request_key, "0, 0, 0, 0"),
        ("bpf", libc::SYS_bpf, "0, 0, 0"),
        ("perf_event_open", libc::SYS_perf_event_open, "0, 0, -1, -1, 0"),
        ("userfaultfd", libc::SYS_userfaultfd, "0"),
        ("io_uring_setup", libc::SYS_io_uring_setup, "1, 0"),
        ("io_uring_enter", libc::SYS_io_uring_enter, "-1, 0, 0, 0, 0, 0"),
        ("open_by_handle_at", libc::SYS_open_by_handle_at, "-1, 0, 0"),
        ("init_module", libc::SYS_init_module, "0, 0, 0"),
        ("finit_module", libc::SYS_finit_module, "-1, 0, 0"),
        ("syslog", libc::SYS_syslog, "10, 0, 0"),
        ("unshare", libc::SYS_unshare, "0"),
        ("setns", libc::SYS_setns, "-1, 0"),
        ("swapon", libc::SYS_swapon, "0, 0"),
        ("clock_settime", libc::SYS_clock_settime, "0, 0"),
        ("move_mount", libc::SYS_move_mount, "-1, 0, -1, 0, 0"),
    ];
    let mut body = String::from(
        "def sc(name, nr, *args):\n    r = libc.syscall(ctypes.c_long(nr), *[ctypes.c_long(x) for x in args])\n    print(name, c_err(r))\n",
    );
    // Positive controls: the ctypes path works (getpid) and reports errnos other than EPERM
    // (uname of a null pointer).
    body.push_str(&format!("print('getpid', libc.syscall(ctypes.c_long({})) > 0)\n", libc::SYS_getpid));
    body.push_str(&format!("sc('uname', {}, 0)\n", libc::SYS_uname));
    for (name, nr, args) in &calls {
        body.push_str(&format!("sc('{name}', {nr}, {args})\n"));
    }
    let out = env.py(&a, &py(&body)).await;
    out.ok("the syscalls");
    assert_eq!(out.field("getpid"), "True", "{out:?}");
    assert_eq!(out.field("uname"), "EFAULT", "{out:?}");
    for (name, _, _) in &calls {
        assert_eq!(out.field(name), "EPERM", "ATTACK SUCCEEDED? {name} was not denied: {out:?}");
    }
    env.finish().await;
}

/// The workspace reads its environment for secrets of warren's process: a command gets only
/// the fixed variables and the ones its request set.
#[tokio::test(flavor = "multi_thread")]
async fn attack_read_host_environment() {
    let Some(env) = env() else { return };
    let a = env.workspace("attacker", 38, Limits::default()).await;
    let req = ExecRequest {
        env: vec![("CANARY".into(), "set-by-request".into())],
        ..ExecRequest::new(["python3", "-c", "import os\nfor k in sorted(os.environ): print(k, os.environ[k])"])
    };
    let out = env.exec(&a, req).await;
    let keys: BTreeSet<&str> = out.ok("printing env").lines().filter_map(|l| l.split(' ').next()).collect();
    // Positive control: a variable given in the request shows.
    assert_eq!(out.field("CANARY"), "set-by-request", "{out:?}");
    let expected: BTreeSet<&str> =
        ["PATH", "HOME", "USER", "LOGNAME", "SHELL", "LANG", "WARREN_USER", "WARREN_WORKSPACE", "CANARY", "LC_CTYPE"]
            .into();
    assert!(
        keys.is_subset(&expected),
        "ATTACK SUCCEEDED: leaked variables {:?}",
        keys.difference(&expected).collect::<Vec<_>>()
    );
    env.finish().await;
}

/// The workspace gives its files to root or another workspace's uid (to plant files owned by
/// someone else), and tries the setuid bit on its own file.
#[tokio::test(flavor = "multi_thread")]
async fn attack_chown_to_other_uid() {
    let Some(env) = env() else { return };
    let a = env.workspace("attacker", 39, Limits::default()).await;
    let other = common::uid(40);
    let code = fill(
        r#"
open('f', 'w').write('x')
print('own', e(lambda: os.chown('f', @UID@, @UID@)))
print('root', e(lambda: os.chown('f', 0, -1)))
print('rootgrp', e(lambda: os.chown('f', -1, 0)))
print('other', e(lambda: os.chown('f', @OTHER@, @OTHER@)))
"#,
        &[("UID", a.uid.to_string()), ("OTHER", other.to_string())],
    );
    let out = env.py(&a, &py(&code)).await;
    // Positive control: chown to itself succeeds.
    assert_eq!(out.field("own"), "ok", "{out:?}");
    for k in ["root", "rootgrp", "other"] {
        // EPERM without a user namespace; in one, ids it does not map are EINVAL. Both refuse.
        assert!(matches!(out.field(k), "EPERM" | "EINVAL"), "ATTACK SUCCEEDED: {k}: {out:?}");
    }
    let md = std::fs::metadata(env.host_home(&a).join("f")).expect("f on the host");
    assert_eq!((md.uid(), md.gid()), (a.uid, a.gid), "ATTACK SUCCEEDED: f changed owner on the host");
    // setuid on an own file sticks as a mode bit, but the home is nosuid: exec does not honour it.
    let st = env.sh(&a, "cp /usr/bin/id ./myid && chmod 4755 ./myid && ./myid -u").await;
    assert_eq!(st.ok("running an own setuid copy").trim(), a.uid.to_string(), "{st:?}");
    env.finish().await;
}

/// The workspace hard-links host files it can see (a setuid binary, host configuration) into
/// its home, where warren's file API (running as root) would read them: links across mounts
/// fail, also through `/proc/self/fd`.
#[tokio::test(flavor = "multi_thread")]
async fn attack_hardlink_host_files_into_home() {
    let Some(env) = env() else { return };
    let a = env.workspace("attacker", 41, Limits::default()).await;
    let out = env
        .sh(
            &a,
            "for f in /usr/bin/su /usr/bin/python3.11 /etc/ssl/openssl.cnf /etc/passwd /etc/hostname; do \
             ln $f ./hl-$(basename $f) && echo linked $f; done; echo own > own && ln own own2 && echo own linked",
        )
        .await;
    // Positive control: hard links inside the home work.
    assert_eq!(out.field("own"), "linked", "{out:?}");
    assert!(!out.stdout.contains("linked /"), "ATTACK SUCCEEDED: {out:?}");
    assert!(out.stderr.contains("Invalid cross-device link"), "{out:?}");
    let code = r#"
fd = os.open('/usr/bin/su', os.O_RDONLY)
print('fdlink', e(lambda: os.link('/proc/self/fd/%d' % fd, 'hl-fd', follow_symlinks=True)))
"#;
    let out = env.py(&a, &py(code)).await;
    assert!(["EXDEV", "ENOENT", "EPERM"].contains(&out.field("fdlink")), "ATTACK SUCCEEDED: {out:?}");
    let names: Vec<String> = std::fs::read_dir(env.host_home(&a))
        .expect("home")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        !names.iter().any(|n| n.starts_with("hl-")),
        "ATTACK SUCCEEDED: host files linked into the home: {names:?}"
    );
    env.finish().await;
}

/// The workspace plants symlinks to the host root and to B's host path in its home, then lets
/// warren (root) measure it (`stats`) and remove it (`destroy`): neither follows the links.
#[tokio::test(flavor = "multi_thread")]
async fn attack_symlinks_at_stats_and_destroy() {
    let Some(env) = env() else { return };
    let a = env.workspace("attacker", 42, Limits::default()).await;
    let b = env.workspace("victim", 43, Limits::default()).await;
    env.sh(&b, "echo secret-of-victim > marker").await.ok("B's marker");
    let b_home = env.host_home(&b);
    let script = fill(
        "ln -s / rootlink && ln -s '@BH@' blink && ln -s '@BH@/marker' bmarker && ln -s /proc/1/root r1 && \
         mkdir -p d/e && ln -s '@BH@' d/e/blink && head -c 4194304 /dev/urandom > big && echo planted",
        &[("BH", b_home.display().to_string())],
    );
    env.sh(&a, &script).await.ok("planting links");
    let st = env.backend.stats(&a).await.expect("stats");
    // Positive control: the 4 MiB file counts; the host root behind `rootlink` does not.
    assert!(st.disk_bytes >= 4 << 20, "disk usage misses the big file: {st:?}");
    assert!(st.disk_bytes < 16 << 20, "ATTACK SUCCEEDED: disk usage followed a symlink out of the home: {st:?}");
    let a_home = env.host_home(&a);
    env.backend.stop(&a).await.expect("stop");
    env.backend.destroy(&a).await.expect("destroy");
    assert!(!a_home.exists(), "A's home survived destroy");
    assert_eq!(
        std::fs::read_to_string(b_home.join("marker")).expect("ATTACK SUCCEEDED: destroying A removed B's marker"),
        "secret-of-victim\n"
    );
    assert!(std::path::Path::new("/usr/bin/python3").exists(), "ATTACK SUCCEEDED: destroy followed the link to /");
    env.assert_alive(&b).await;
    env.finish().await;
}

/// The workspace leaves daemons behind (setsid, double fork, ignoring SIGTERM/SIGHUP) and
/// hopes they outlive `stop`.
#[tokio::test(flavor = "multi_thread")]
async fn attack_outlive_stop() {
    let Some(env) = env() else { return };
    let a = env.workspace("attacker", 44, Limits::default()).await;
    env.sh(&a, "setsid sh -c 'trap \"\" HUP TERM INT; exec sleep 1000' </dev/null >/dev/null 2>&1 &")
        .await
        .ok("daemon 1");
    let code = r#"
if os.fork() == 0:
    os.setsid()
    if os.fork() == 0:
        import signal
        for s in (signal.SIGHUP, signal.SIGTERM, signal.SIGINT):
            signal.signal(s, signal.SIG_IGN)
        fd = os.open('/dev/null', os.O_RDWR)
        for i in (0, 1, 2):
            os.dup2(fd, i)
        os.execvp('sleep', ['sleep', '1001'])
    os._exit(0)
os.wait()
"#;
    env.py(&a, &py(code)).await.ok("daemon 2");
    // Positive control: both daemons run on the host under the workspace's uid.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let procs = host_processes(a.uid);
        if procs.iter().any(|(_, c)| c == "sleep 1000") && procs.iter().any(|(_, c)| c == "sleep 1001") {
            break;
        }
        assert!(Instant::now() < deadline, "the daemons never showed on the host: {procs:?}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    env.backend.stop(&a).await.expect("stop");
    common::assert_no_processes(a.uid);
    assert_eq!(env.backend.status(&a).await.expect("status").state, State::Stopped);
    env.finish().await;
}

/// The host has SysV message queues and shared memory; the workspace (own IPC namespace)
/// cannot see or attach them.
#[tokio::test(flavor = "multi_thread")]
async fn attack_host_sysv_ipc() {
    struct Ipc(Vec<(&'static str, String)>);
    impl Drop for Ipc {
        fn drop(&mut self) {
            for (kind, id) in &self.0 {
                let _ = std::process::Command::new("ipcrm").args([kind, id.as_str()]).output();
            }
        }
    }
    let Some(env) = env() else { return };
    let a = env.workspace("attacker", 45, Limits::default()).await;
    let make = |args: &[&str]| -> String {
        let out = std::process::Command::new("ipcmk").args(args).output().expect("ipcmk");
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(out.status.success(), "ipcmk {args:?}: {text}");
        text.rsplit(':').next().expect("id").trim().to_owned()
    };
    let mut ipc = Ipc(vec![]);
    let q = make(&["-Q", "-p", "0666"]);
    ipc.0.push(("-q", q.clone()));
    let m = make(&["-M", "4096", "-p", "0666"]);
    ipc.0.push(("-m", m.clone()));
    // Positive control: the host sees both (world-accessible: only the namespace keeps them out).
    for (kind, id) in [("-q", &q), ("-m", &m)] {
        let out = std::process::Command::new("ipcs").args([kind, "-i", id]).output().expect("ipcs");
        assert!(out.status.success(), "the host does not see its own IPC object {kind} {id}");
    }
    let listing = env.sh(&a, "ipcs -q -m").await;
    assert!(
        !listing.ok("ipcs").lines().any(|l| l.starts_with("0x")),
        "ATTACK SUCCEEDED: the workspace sees host IPC: {listing:?}"
    );
    let code = fill(
        r#"
buf = ctypes.create_string_buffer(512)
libc.shmat.restype = ctypes.c_void_p
print('msgctl', c_err(libc.msgctl(@Q@, 2, buf)))
print('msgsnd', c_err(libc.msgsnd(@Q@, b'\1\0\0\0\0\0\0\0x', 1, 0o4000)))
r = libc.shmat(@M@, None, 0)
print('shmat', 'ok' if r not in (None, ctypes.c_void_p(-1).value) else c_err(-1))
"#,
        &[("Q", q.clone()), ("M", m.clone())],
    );
    let out = env.py(&a, &py(&code)).await;
    for k in ["msgctl", "msgsnd", "shmat"] {
        assert_eq!(out.field(k), "EINVAL", "ATTACK SUCCEEDED: {k} on a host IPC object: {out:?}");
    }
    drop(ipc);
    env.finish().await;
}

/// The workspace reads its init's command line, hoping for the host paths and uid of the
/// set-up (state dir, helper binary, control socket). The config travels on stdin, not argv.
#[tokio::test(flavor = "multi_thread")]
async fn attack_read_init_cmdline_for_host_paths() {
    let Some(env) = env() else { return };
    let a = env.workspace("attacker", 60, Limits::default()).await;
    let out = env.sh(&a, "tr '\\0' ' ' < /proc/1/cmdline; echo; tr '\\0' ' ' < /proc/$$/cmdline").await;
    let text = out.ok("reading cmdlines");
    // Positive control: our own command line is readable, so the init's would be too.
    assert!(text.contains("/proc/$$/cmdline") || text.contains("sh -c"), "{out:?}");
    let state = env.state_dir().to_string_lossy().into_owned();
    assert!(!text.contains(&state), "ATTACK SUCCEEDED: the init's cmdline shows the state dir: {text}");
    assert!(!text.contains("run_dir") && !text.contains("cgroup"), "ATTACK SUCCEEDED: init config in cmdline: {text}");
    env.finish().await;
}

/// With user namespaces (on by default where the kernel allows them), nothing inside the
/// workspace maps to host root: even a kernel bug that made a process "root" inside would
/// leave it the host's `nobody`.
#[tokio::test(flavor = "multi_thread")]
async fn attack_root_inside_is_not_host_root() {
    let Some(env) = env() else { return };
    if !warren_backend_ns::userns_supported() || std::env::var_os("WARREN_NS_USERNS").is_some_and(|v| v == "0") {
        eprintln!("skipped: user namespaces are off on this host");
        return;
    }
    let a = env.workspace("attacker", 61, Limits::default()).await;
    let out = env.sh(&a, "cat /proc/self/uid_map /proc/self/gid_map; readlink /proc/self/ns/user").await;
    let text = out.ok("reading id maps");
    let host_ns = std::fs::read_link("/proc/self/ns/user").expect("host user ns");
    // Positive control: the host's own map does contain host root.
    let host_map = std::fs::read_to_string("/proc/self/uid_map").expect("host map");
    assert!(host_map.split_whitespace().nth(1) == Some("0"), "host map {host_map}");
    assert!(
        !text.contains(&host_ns.to_string_lossy().into_owned()),
        "workspace shares the host user namespace: {text}"
    );
    for line in text.lines().filter(|l| l.split_whitespace().count() == 3) {
        let f: Vec<&str> = line.split_whitespace().collect();
        assert_ne!(f[1], "0", "ATTACK SUCCEEDED: host id 0 is mapped inside: {text}");
        assert_eq!(f[2], "1", "only single ids are mapped: {text}");
    }
    env.finish().await;
}
