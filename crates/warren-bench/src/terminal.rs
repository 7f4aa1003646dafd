//! The terminal rows: warren's browser terminal (an in-process `warren serve` on a loopback
//! port, the auto backend, the WebSocket protocol of `docs/terminal-protocol.md`) beside OpenSSH
//! to a loopback sshd this run starts itself, measured the same way:
//!
//! * **echo**: one keystroke to the login shell's prompt and back (bash's readline echoes it):
//!   the time from sending the byte to receiving its echo; `x` and backspace alternate, so the
//!   line stays short;
//! * **throughput**: `head -c 100M /dev/zero | base64` typed at the prompt; the time from Enter
//!   to the marker printed after it, and the bytes received in between (about 138 MiB).
//!
//! The warren client acknowledges output as the protocol asks (flow control on); the ssh client
//! reads its stdout as fast as it can.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::Message;
use warren_core::config::Config;
use warren_core::{BackendKind, UserId};
use warren_engine::{Engine, EngineOptions};
use warren_server::config::{AuthConfig, ServerConfig};
use warren_server::Server;

use crate::peers::Unavailable;
use crate::report::{Row, RowKind};
use crate::warren::Samples;

/// Row names.
pub const ECHO: &str = "terminal echo";
/// Throughput row.
pub const THROUGHPUT: &str = "terminal throughput";
/// The echo peer.
pub const SSH_ECHO: &str = "ssh echo";
/// The throughput peer.
pub const SSH_THROUGHPUT: &str = "ssh throughput";
/// The issue's target for the echo p99, ms.
const ECHO_P99_MS: f64 = 5.0;
/// The flood of the throughput rows: `head -c {MB}M /dev/zero | base64` (about 1.37 bytes of
/// output per byte), timed runs of it, per mode.
#[derive(Clone, Copy, Debug)]
pub struct Flood {
    /// Megabytes of zeros.
    pub mb: u64,
    /// Timed runs.
    pub runs: usize,
}

impl Flood {
    /// The full run's: 100 MiB, twice.
    pub const FULL: Flood = Flood { mb: 100, runs: 2 };
    /// `--quick`: 10 MiB, once.
    pub const QUICK: Flood = Flood { mb: 10, runs: 1 };

    fn command(self) -> String {
        format!("head -c {}M /dev/zero | base64", self.mb)
    }

    /// Fewest bytes of output a complete run delivers (base64 of `mb` MiB, minus a margin).
    fn min_bytes(self) -> u64 {
        (self.mb << 20) * 4 / 3 * 97 / 100
    }
}
const STEP: Duration = Duration::from_secs(20);
const FLOOD_LIMIT: Duration = Duration::from_secs(600);
const USER: &str = "u_bench_term";

/// What one side measured.
struct Side {
    echo: Result<Samples, Unavailable>,
    flood: Result<(Samples, u64), Unavailable>,
}

fn err(e: impl std::fmt::Display) -> Unavailable {
    Unavailable::Error(e.to_string())
}

/// Runs both sides and returns the four rows.
pub fn rows(rt: &tokio::runtime::Runtime, state_dir: &Path, warmup: usize, n: usize, flood: Flood) -> Vec<Row> {
    eprintln!(
        "warren-bench: terminal echo and throughput ({n} keystrokes + {warmup} warm-up, {} floods of {} MiB)",
        flood.runs, flood.mb
    );
    let warren = rt
        .block_on(warren_side(state_dir.join("terminal"), warmup, n, flood))
        .unwrap_or_else(|e| Side { echo: Err(e.clone()), flood: Err(e) });
    eprintln!("warren-bench: ssh echo and throughput");
    let ssh = ssh_side(warmup, n, flood).unwrap_or_else(|e| Side { echo: Err(e.clone()), flood: Err(e) });
    let note = |f: &Result<(Samples, u64), Unavailable>| {
        f.as_ref().ok().map(|(s, bytes)| {
            let secs: f64 = s.total.iter().map(Duration::as_secs_f64).sum::<f64>() / s.total.len().max(1) as f64;
            format!(
                "{:.1} MB/s ({:.1} MB of output in {:.2} s on average over {} runs)",
                *bytes as f64 / 1e6 / secs.max(1e-9),
                *bytes as f64 / 1e6,
                secs,
                s.total.len()
            )
        })
    };
    let row = |name: &str, kind, command: &str, outcome, peers: Vec<&'static str>, p99, speedup, note| Row {
        name: name.to_owned(),
        kind,
        command: command.to_owned(),
        version: None,
        outcome,
        peers,
        target_p50_ms: None,
        target_speedup: speedup,
        sizes: None,
        target_p99_ms: p99,
        note,
    };
    let (warren_note, ssh_note) = (note(&warren.flood), note(&ssh.flood));
    let flood_cmd = format!("{} typed at the prompt; Enter to the marker after it", flood.command());
    vec![
        row(
            ECHO,
            RowKind::Warren,
            "one keystroke to bash's prompt over the terminal WebSocket and its echo back",
            warren.echo,
            vec![SSH_ECHO],
            Some(ECHO_P99_MS),
            None,
            None,
        ),
        row(
            THROUGHPUT,
            RowKind::Warren,
            &flood_cmd,
            warren.flood.map(|(s, _)| s),
            vec![SSH_THROUGHPUT],
            None,
            Some(1.0),
            warren_note,
        ),
        row(
            SSH_ECHO,
            RowKind::Peer,
            "one keystroke to bash's prompt over ssh -tt to a loopback sshd and its echo back",
            ssh.echo,
            vec![],
            None,
            None,
            None,
        ),
        row(SSH_THROUGHPUT, RowKind::Peer, &flood_cmd, ssh.flood.map(|(s, _)| s), vec![], None, None, ssh_note),
    ]
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// A terminal connection: auth, attach, then keystrokes and output.
struct Ws {
    ws: tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>,
    unacked: u64,
}

impl Ws {
    async fn open(addr: SocketAddr, token: &str) -> Result<Self, Unavailable> {
        let url = format!("ws://{addr}/v1/workspaces/me/terminal");
        let (ws, _) = tokio_tungstenite::connect_async(url).await.map_err(err)?;
        let mut c = Self { ws, unacked: 0 };
        c.text(serde_json::json!({"type": "auth", "token": token})).await?;
        c.text(serde_json::json!({"type": "attach", "cols": 80, "rows": 24})).await?;
        Ok(c)
    }

    async fn text(&mut self, v: serde_json::Value) -> Result<(), Unavailable> {
        self.ws.send(Message::text(v.to_string())).await.map_err(err)
    }

    async fn bytes(&mut self, b: &[u8]) -> Result<(), Unavailable> {
        self.ws.send(Message::binary(b.to_vec())).await.map_err(err)
    }

    /// The next output (acknowledged in 64 KiB steps); control messages are skipped, an error
    /// or a close is an error.
    async fn output(&mut self) -> Result<Vec<u8>, Unavailable> {
        loop {
            let m = tokio::time::timeout(STEP, self.ws.next())
                .await
                .map_err(|_| err(format!("no terminal output within {} s", STEP.as_secs())))?;
            match m {
                Some(Ok(Message::Binary(b))) => {
                    self.unacked += b.len() as u64;
                    if self.unacked >= 64 << 10 {
                        let n = std::mem::take(&mut self.unacked);
                        self.text(serde_json::json!({"type": "ack", "bytes": n})).await?;
                    }
                    return Ok(b.to_vec());
                }
                Some(Ok(Message::Text(t))) if t.contains("\"error\"") => {
                    return Err(err(format!("the server said {t}")))
                }
                Some(Ok(Message::Close(f))) => return Err(err(format!("the terminal closed: {f:?}"))),
                Some(Err(e)) => return Err(err(e)),
                None => return Err(err("the terminal connection ended")),
                Some(Ok(_)) => {}
            }
        }
    }
}

/// Both measurements over one output source: `send` types, `recv` returns the next output.
trait Terminal {
    async fn send(&mut self, b: &[u8]) -> Result<(), Unavailable>;
    async fn recv(&mut self) -> Result<Vec<u8>, Unavailable>;

    /// Waits for `needle` in the output (at most `limit` bytes looked back across reads).
    async fn until(&mut self, needle: &[u8]) -> Result<u64, Unavailable> {
        let mut tail: Vec<u8> = Vec::new();
        let mut total = 0u64;
        loop {
            let b = self.recv().await?;
            total += b.len() as u64;
            tail.extend_from_slice(&b);
            if find(&tail, needle).is_some() {
                return Ok(total);
            }
            let keep = needle.len();
            if tail.len() > keep {
                tail.drain(..tail.len() - keep);
            }
        }
    }

    async fn ready(&mut self) -> Result<(), Unavailable> {
        self.send(b"echo ready-$((20+22))\r").await?;
        self.until(b"ready-42").await.map(|_| ())
    }

    /// Keystroke round trips: `x`, then backspace, alternately.
    async fn echo(&mut self, warmup: usize, n: usize) -> Result<Samples, Unavailable> {
        let mut s = Samples::default();
        for i in 0..warmup + n {
            let (key, echo) = if i % 2 == 0 { (b'x', b'x') } else { (0x7f, 0x08) };
            let t = Instant::now();
            self.send(&[key]).await?;
            loop {
                if self.recv().await?.contains(&echo) {
                    break;
                }
            }
            if i >= warmup {
                s.total.push(t.elapsed());
            }
        }
        if (warmup + n) % 2 == 1 {
            self.send(&[0x7f]).await?;
            self.until(&[0x08]).await?;
        }
        Ok(s)
    }

    /// The flood's runs: time from Enter to the end marker, and the bytes received.
    async fn flood(&mut self, flood: Flood) -> Result<(Samples, u64), Unavailable> {
        let mut s = Samples::default();
        let mut bytes = 0;
        for run in 0..flood.runs {
            let (a, b) = (run + 10, run + 20);
            let t = Instant::now();
            self.send(format!("{}; echo end-$(({a}*{b}))\r", flood.command()).as_bytes()).await?;
            bytes = self.until(format!("end-{}", a * b).as_bytes()).await?;
            s.total.push(t.elapsed());
            if bytes < flood.min_bytes() {
                return Err(err(format!("only {bytes} bytes of output arrived")));
            }
        }
        Ok((s, bytes))
    }
}

impl Terminal for Ws {
    async fn send(&mut self, b: &[u8]) -> Result<(), Unavailable> {
        self.bytes(b).await
    }
    async fn recv(&mut self) -> Result<Vec<u8>, Unavailable> {
        self.output().await
    }
}

async fn warren_side(state: PathBuf, warmup: usize, n: usize, flood: Flood) -> Result<Side, Unavailable> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::create_dir_all(&state).map_err(err)?;
    std::fs::set_permissions(&state, std::fs::Permissions::from_mode(0o711)).map_err(err)?;
    let cfg = Config {
        state_dir: state,
        backend: BackendKind::Auto,
        uid_base: 2_997_000,
        uid_count: 1000,
        ..Config::default()
    };
    let engine = Arc::new(Engine::open(cfg, EngineOptions::default()).await.map_err(err)?);
    let mut raw = [0u8; 32];
    getrandom(&mut raw);
    let secret: String = raw.iter().map(|b| format!("{b:02x}")).collect();
    let auth = AuthConfig { secret: Some(secret), ..AuthConfig::default() };
    let server = Server::new(engine.clone(), ServerConfig { rate_limit_rps: 0, ..ServerConfig::default() }, &auth)
        .await
        .map_err(err)?;
    let user = UserId::new(USER).map_err(err)?;
    let token = server
        .authenticator()
        .mint(&user, false, Duration::from_secs(3600))
        .ok_or_else(|| err("the server cannot mint tokens"))?
        .map_err(err)?;
    let listener = tokio::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await.map_err(err)?;
    let addr = listener.local_addr().map_err(err)?;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(server.serve(listener, async move {
        let _ = stopped.await;
    }));
    eprintln!("warren-bench: terminal on the {} backend", engine.backend_kind());
    let measured = async {
        let mut c = tokio::time::timeout(STEP, Ws::open(addr, &token)).await.map_err(|_| err("attach timed out"))??;
        c.ready().await?;
        let echo = c.echo(warmup, n).await;
        let flood = match &echo {
            Ok(_) => tokio::time::timeout(FLOOD_LIMIT, c.flood(flood))
                .await
                .unwrap_or_else(|_| Err(err("the flood timed out"))),
            Err(e) => Err(e.clone()),
        };
        let _ = c.ws.close(None).await;
        Ok::<_, Unavailable>(Side { echo, flood })
    }
    .await;
    let _ = stop.send(());
    let _ = task.await;
    if let Err(e) = engine.destroy(&user).await {
        eprintln!("warren-bench: destroying the terminal workspace: {e}");
    }
    measured
}

fn getrandom(buf: &mut [u8]) {
    // The bench needs no strong secret (a loopback server for one run), but take one anyway.
    if let Ok(mut f) = std::fs::File::open("/dev/urandom") {
        let _ = f.read_exact(buf);
    }
}

// -------------------------------------------------------------------------------------------
// The ssh side

fn which(tool: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/sbin"), PathBuf::from("/sbin")])
        .map(|d| d.join(tool))
        .find(|p| p.is_file())
}

/// A loopback sshd of this run, and its keys.
struct Sshd {
    child: Child,
    dir: tempfile::TempDir,
    port: u16,
}

impl Drop for Sshd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn run(cmd: &mut Command) -> Result<(), Unavailable> {
    let out = cmd.stdin(Stdio::null()).output().map_err(err)?;
    if out.status.success() {
        Ok(())
    } else {
        Err(err(format!("{cmd:?}: {}", String::from_utf8_lossy(&out.stderr).trim())))
    }
}

fn start_sshd() -> Result<Sshd, Unavailable> {
    let sshd = which("sshd").ok_or_else(|| Unavailable::Skipped("sshd not installed (openssh-server)".into()))?;
    let keygen = which("ssh-keygen").ok_or_else(|| Unavailable::Skipped("ssh-keygen not installed".into()))?;
    which("ssh").ok_or_else(|| Unavailable::Skipped("ssh not installed (openssh-client)".into()))?;
    let dir = tempfile::Builder::new().prefix("warren-bench-sshd-").tempdir().map_err(err)?;
    let d = dir.path();
    for key in ["host", "user"] {
        run(Command::new(&keygen).args(["-q", "-t", "ed25519", "-N", "", "-f"]).arg(d.join(key)))?;
    }
    std::fs::copy(d.join("user.pub"), d.join("authorized_keys")).map_err(err)?;
    // sshd's privilege separation directory.
    std::fs::create_dir_all("/run/sshd").map_err(err)?;
    let port = {
        let l = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).map_err(err)?;
        l.local_addr().map_err(err)?.port()
    };
    let config = format!(
        "Port {port}\nListenAddress 127.0.0.1\nHostKey {host}\nAuthorizedKeysFile {auth}\nPermitRootLogin prohibit-password\n\
         PasswordAuthentication no\nKbdInteractiveAuthentication no\nUsePAM no\nStrictModes no\nPidFile none\n\
         PrintMotd no\nPrintLastLog no\nUseDNS no\nMaxSessions 200\nMaxStartups 200:30:400\nAcceptEnv SHLVL\n",
        host = d.join("host").display(),
        auth = d.join("authorized_keys").display()
    );
    std::fs::write(d.join("sshd_config"), config).map_err(err)?;
    let log = std::fs::File::create(d.join("sshd.log")).map_err(err)?;
    let child = Command::new(&sshd)
        .arg("-D")
        .arg("-e")
        .arg("-f")
        .arg(d.join("sshd_config"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .map_err(err)?;
    let s = Sshd { child, dir, port };
    let deadline = Instant::now() + Duration::from_secs(10);
    while TcpStream::connect((Ipv4Addr::LOCALHOST, port)).is_err() {
        if Instant::now() > deadline {
            let log = std::fs::read_to_string(s.dir.path().join("sshd.log")).unwrap_or_default();
            return Err(err(format!("sshd did not listen on 127.0.0.1:{port} within 10 s: {}", log.trim())));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(s)
}

/// `ssh -tt` to the loopback sshd: a login shell on a remote terminal, stdin and stdout piped.
struct Ssh {
    child: Child,
    stdin: std::process::ChildStdin,
    rx: tokio::sync::mpsc::Receiver<Vec<u8>>,
}

impl Drop for Ssh {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `ssh` with the options of every connection to the loopback sshd (port, key, no host key
/// checks, batch mode); the destination comes last, from the caller.
fn ssh_cmd(sshd: &Sshd) -> Command {
    ssh_cmd_with(sshd, &[])
}

/// [`ssh_cmd`] with more `-o` options.
fn ssh_cmd_with(sshd: &Sshd, options: &[&str]) -> Command {
    let mut c = Command::new("ssh");
    c.arg("-p")
        .arg(sshd.port.to_string())
        .arg("-i")
        .arg(sshd.dir.path().join("user"))
        .args(["-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null", "-o", "LogLevel=ERROR"])
        .args(["-o", "BatchMode=yes", "-o", "Compression=no"]);
    for o in options {
        c.args(["-o", o]);
    }
    c
}

impl Ssh {
    fn open(sshd: &Sshd) -> Result<Self, Unavailable> {
        let mut child = ssh_cmd(sshd)
            .arg("-tt")
            .arg("root@127.0.0.1")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .map_err(err)?;
        let stdin = child.stdin.take().ok_or_else(|| err("no stdin"))?;
        let mut stdout = child.stdout.take().ok_or_else(|| err("no stdout"))?;
        let (tx, rx) = tokio::sync::mpsc::channel(64);
        std::thread::spawn(move || {
            let mut buf = vec![0u8; 64 << 10];
            loop {
                match stdout.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        if tx.blocking_send(buf[..n].to_vec()).is_err() {
                            break;
                        }
                    }
                }
            }
        });
        Ok(Self { child, stdin, rx })
    }
}

impl Terminal for Ssh {
    async fn send(&mut self, b: &[u8]) -> Result<(), Unavailable> {
        self.stdin.write_all(b).and_then(|()| self.stdin.flush()).map_err(err)
    }
    async fn recv(&mut self) -> Result<Vec<u8>, Unavailable> {
        match tokio::time::timeout(STEP, self.rx.recv()).await {
            Ok(Some(b)) => Ok(b),
            Ok(None) => Err(err("ssh ended")),
            Err(_) => Err(err(format!("no ssh output within {} s", STEP.as_secs()))),
        }
    }
}

fn ssh_side(warmup: usize, n: usize, flood: Flood) -> Result<Side, Unavailable> {
    let sshd = start_sshd()?;
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(err)?;
    rt.block_on(async {
        let mut ssh = Ssh::open(&sshd)?;
        tokio::time::timeout(STEP, ssh.ready()).await.map_err(|_| err("ssh login timed out"))??;
        let echo = ssh.echo(warmup, n).await;
        let flood = match &echo {
            Ok(_) => tokio::time::timeout(FLOOD_LIMIT, ssh.flood(flood))
                .await
                .unwrap_or_else(|_| Err(err("the flood timed out"))),
            Err(e) => Err(e.clone()),
        };
        let _ = ssh.send(b"exit\r").await;
        Ok(Side { echo, flood })
    })
}

// -------------------------------------------------------------------------------------------
// The API exec row's peer

/// The ssh control masters of [`ssh_exec`], stopped on drop.
struct Masters(Vec<Child>);

impl Drop for Masters {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// The API load test's peer: `n` commands over OpenSSH to a loopback sshd, `concurrency` at once,
/// each worker with an authenticated connection of its own (a control master; each command is
/// `ssh -S CTL root@127.0.0.1 CMD`, a new session on it, as each API exec is a new request on a
/// kept-alive HTTP connection), `true` and `echo load-i` alternately, each checked. Returns every
/// command's wall time and the wall time of all of them.
pub fn ssh_exec(n: usize, concurrency: usize) -> Result<(Samples, Duration), Unavailable> {
    use std::sync::atomic::{AtomicUsize, Ordering};
    // The remote shell runs `CMD` without sourcing root's ~/.bashrc (Debian's bash sources it for
    // sshd's commands unless SHLVL says it is nested): what a host's rc files do is not ssh's
    // cost (on the development VM, pyenv's set-up there takes 0.4 s).
    let ssh_cmd = |s: &Sshd| ssh_cmd_with(s, &["SetEnv=SHLVL=1"]);
    let sshd = start_sshd()?;
    let workers = concurrency.clamp(1, n.max(1));
    let ctl = |w: usize| sshd.dir.path().join(format!("ctl-{w}"));
    let mut masters = Masters(Vec::with_capacity(workers));
    for w in 0..workers {
        let child = ssh_cmd(&sshd)
            .args(["-M", "-N", "-S"])
            .arg(ctl(w))
            .arg("root@127.0.0.1")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(err)?;
        masters.0.push(child);
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    for w in 0..workers {
        loop {
            let ok = ssh_cmd(&sshd)
                .arg("-S")
                .arg(ctl(w))
                .args(["-O", "check", "root@127.0.0.1"])
                .stdin(Stdio::null())
                .stderr(Stdio::null())
                .output()
                .is_ok_and(|o| o.status.success());
            if ok {
                break;
            }
            if Instant::now() > deadline {
                return Err(err(format!("{workers} ssh control masters did not come up within 60 s")));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    let next = AtomicUsize::new(0);
    let started = Instant::now();
    let results: Vec<Result<Vec<Duration>, String>> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..workers)
            .map(|w| {
                let (next, sshd, ctl, ssh_cmd) = (&next, &sshd, ctl(w), &ssh_cmd);
                scope.spawn(move || {
                    let mut took = Vec::new();
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        if i >= n {
                            return Ok(took);
                        }
                        let (argv, expected) = crate::load::exec_of(i);
                        let t = Instant::now();
                        let out = ssh_cmd(sshd)
                            .arg("-S")
                            .arg(&ctl)
                            .arg("root@127.0.0.1")
                            .arg(argv.join(" "))
                            .stdin(Stdio::null())
                            .output()
                            .map_err(|e| format!("starting ssh: {e}"))?;
                        took.push(t.elapsed());
                        if !out.status.success() || out.stdout != expected.as_bytes() {
                            return Err(format!(
                                "ssh command {i} ({}) ended with {}; stdout {:?}, stderr {:?}",
                                argv.join(" "),
                                out.status,
                                String::from_utf8_lossy(&out.stdout),
                                String::from_utf8_lossy(&out.stderr).trim()
                            ));
                        }
                    }
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap_or_else(|_| Err("an ssh worker panicked".into()))).collect()
    });
    let wall = started.elapsed();
    drop(masters);
    let mut s = Samples::default();
    for r in results {
        s.total.extend(r.map_err(err)?);
    }
    Ok((s, wall))
}
