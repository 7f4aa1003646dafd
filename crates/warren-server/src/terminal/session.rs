//! Terminal sessions: a login shell on a pseudo-terminal in a workspace, kept alive across
//! disconnects.
//!
//! Each session is one task (the "actor") that owns the shell's [`ExecHandle`] and is the only
//! reader of its output. It feeds every byte to the session's [`Emulator`] and to the attached
//! client, if one is, counting the bytes the client has not acknowledged: above the high-water
//! mark it stops reading the shell's output (the backend then stops reading the terminal, and
//! the shell blocks on its next write) until acknowledgements bring the count down to the
//! low-water mark. Memory per session is therefore bounded: the window, the channels between
//! backend and session, and the emulator.
//!
//! One client is attached at a time; a second attach takes the session over (the first gets
//! `taken_over`). A session ends when its shell exits, when it is closed (API or shutdown), when
//! nobody re-attached within `reconnect` after a disconnect, or after `idle` without input or
//! output; ending drops the exec handle, which kills the shell's process group.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;
use tracing::{debug, info, Instrument};
use warren_core::time::Timestamp;
use warren_core::{ExecControl, ExecEvent, ExecHandle, TtySize, UserId};

use super::emulator::Emulator;
use super::protocol::{close, ServerMsg, Violation};

/// Settings of the terminal sessions.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TerminalConfig {
    /// A disconnected session waits this long for its client to come back.
    pub reconnect: Duration,
    /// A session without input or output for this long is closed.
    pub idle: Duration,
    /// Sessions per user.
    pub max_sessions: usize,
    /// Scrollback lines kept for replay.
    pub scrollback: usize,
    /// Output pauses when this many bytes are unacknowledged.
    pub high_water: u64,
    /// ... and resumes when acknowledgements bring it down to this.
    pub low_water: u64,
}

impl Default for TerminalConfig {
    fn default() -> Self {
        Self {
            reconnect: Duration::from_secs(300),
            idle: Duration::from_secs(3600),
            max_sessions: 8,
            scrollback: super::emulator::SCROLLBACK_LINES,
            high_water: 1 << 20,
            low_water: 512 << 10,
        }
    }
}

/// What a connection receives from its session.
#[derive(Debug)]
pub enum Out {
    /// Terminal output (a binary frame).
    Data(Vec<u8>),
    /// A control message (a text frame).
    Msg(ServerMsg),
    /// Close the connection with this code and reason.
    Close(Violation),
}

/// What a connection or the API asks of a session.
#[derive(Debug)]
pub(crate) enum Cmd {
    Attach { conn: u64, out: mpsc::UnboundedSender<Out>, size: Option<(u16, u16)>, done: oneshot::Sender<()> },
    Detach { conn: u64 },
    Input { conn: u64, data: Vec<u8> },
    Resize { conn: u64, cols: u16, rows: u16 },
    Ack { conn: u64, bytes: u64 },
    Close { code: &'static str, message: String, close_code: u16 },
}

/// A session as the API lists it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct SessionInfo {
    /// Session id (`t_` + 32 hex digits).
    pub id: String,
    /// The workspace owner.
    pub user: String,
    /// When it started (RFC 3339).
    pub created_at: String,
    /// Last input or output (RFC 3339).
    pub last_activity: String,
    /// A client is connected now.
    pub attached: bool,
    /// Terminal width.
    pub cols: u16,
    /// Terminal height.
    pub rows: u16,
    /// Output bytes so far.
    pub output_bytes: u64,
    /// Output bytes the replay state skipped because output outran the emulator.
    pub replay_skipped_bytes: u64,
    /// The most output bytes a client ever had unacknowledged at once (flow control keeps this
    /// near the window).
    pub max_unacked_bytes: u64,
}

#[derive(Debug)]
struct Status {
    attached: bool,
    cols: u16,
    rows: u16,
    last_activity: SystemTime,
    output_bytes: u64,
}

/// A session, as the registry and connections hold it.
#[derive(Debug)]
pub struct Session {
    /// Its id.
    pub id: String,
    /// The workspace owner.
    pub user: UserId,
    created: SystemTime,
    tx: mpsc::Sender<Cmd>,
    status: Mutex<Status>,
    emu: Arc<Emulator>,
    /// Largest number of unacknowledged bytes seen (for tests of the flow control).
    max_unacked: AtomicU64,
}

impl Session {
    /// How the API shows it.
    pub fn info(&self) -> SessionInfo {
        let st = self.status.lock().unwrap_or_else(|p| p.into_inner());
        SessionInfo {
            id: self.id.clone(),
            user: self.user.to_string(),
            created_at: Timestamp::from_system_time(self.created).to_string(),
            last_activity: Timestamp::from_system_time(st.last_activity).to_string(),
            attached: st.attached,
            cols: st.cols,
            rows: st.rows,
            output_bytes: st.output_bytes,
            replay_skipped_bytes: self.emu.skipped(),
            max_unacked_bytes: self.max_unacked(),
        }
    }

    /// The most output that was ever unacknowledged by a client at once, bytes.
    pub fn max_unacked(&self) -> u64 {
        self.max_unacked.load(Ordering::Relaxed)
    }

    pub(crate) async fn send(&self, cmd: Cmd) -> bool {
        self.tx.send(cmd).await.is_ok()
    }

    fn set_status(&self, f: impl FnOnce(&mut Status)) {
        f(&mut self.status.lock().unwrap_or_else(|p| p.into_inner()));
    }
}

/// Every live session of the server.
#[derive(Debug)]
pub struct Terminals {
    /// Settings.
    pub cfg: TerminalConfig,
    sessions: Mutex<HashMap<String, Arc<Session>>>,
    next_conn: AtomicU64,
    /// Set once when the server starts listening (the development sign-in needs loopback).
    pub(crate) local_addr: OnceLock<SocketAddr>,
    shutdown: watch::Sender<bool>,
}

impl Terminals {
    /// An empty registry.
    pub fn new(cfg: TerminalConfig) -> Arc<Self> {
        Arc::new(Self {
            cfg,
            sessions: Mutex::new(HashMap::new()),
            next_conn: AtomicU64::new(1),
            local_addr: OnceLock::new(),
            shutdown: watch::channel(false).0,
        })
    }

    fn map(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<Session>>> {
        self.sessions.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A number for a new connection.
    pub fn conn_id(&self) -> u64 {
        self.next_conn.fetch_add(1, Ordering::Relaxed)
    }

    /// The session `id` if it belongs to `user`.
    pub fn get(&self, user: &UserId, id: &str) -> Option<Arc<Session>> {
        self.map().get(id).filter(|s| &s.user == user).cloned()
    }

    /// The user's sessions, oldest first.
    pub fn list(&self, user: &UserId) -> Vec<Arc<Session>> {
        let mut v: Vec<_> = self.map().values().filter(|s| &s.user == user).cloned().collect();
        v.sort_by_key(|s| s.created);
        v
    }

    /// How many sessions `user` has.
    pub fn count(&self, user: &UserId) -> usize {
        self.map().values().filter(|s| &s.user == user).count()
    }

    /// Closes a session (its shell is killed); false if there is no such session of `user`.
    pub async fn close(&self, user: &UserId, id: &str, code: &'static str, message: &str) -> bool {
        let Some(s) = self.get(user, id) else { return false };
        self.map().remove(id);
        s.send(Cmd::Close { code, message: message.to_owned(), close_code: close::GONE }).await;
        true
    }

    /// Closes every session (server shutdown): clients get `shutting_down` and 1001.
    pub async fn shutdown(&self) {
        let _ = self.shutdown.send(true);
        let all: Vec<_> = self.map().drain().map(|(_, s)| s).collect();
        for s in all {
            s.send(Cmd::Close {
                code: "shutting_down",
                message: "the server is shutting down; the shell was ended".into(),
                close_code: close::GOING_AWAY,
            })
            .await;
        }
    }

    /// Completes when the server starts shutting down.
    pub fn shutting_down(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        let mut rx = self.shutdown.subscribe();
        async move {
            let _ = rx.wait_for(|s| *s).await;
        }
    }

    /// Starts a session around a running shell and attaches the connection `conn` (whose
    /// output goes to `out`) before any output is read.
    pub(crate) fn start(
        self: &Arc<Self>,
        id: String,
        user: UserId,
        exec: ExecHandle,
        size: (u16, u16),
        conn: u64,
        out: mpsc::UnboundedSender<Out>,
    ) -> Arc<Session> {
        let (tx, rx) = mpsc::channel(64);
        let emu = Emulator::new(size.0, size.1, self.cfg.scrollback);
        let now = SystemTime::now();
        let session = Arc::new(Session {
            id: id.clone(),
            user: user.clone(),
            created: now,
            tx,
            status: Mutex::new(Status {
                attached: true,
                cols: size.0,
                rows: size.1,
                last_activity: now,
                output_bytes: 0,
            }),
            emu: emu.clone(),
            max_unacked: AtomicU64::new(0),
        });
        self.map().insert(id.clone(), session.clone());
        let actor = Actor {
            session: session.clone(),
            registry: Arc::downgrade(self),
            cfg: self.cfg.clone(),
            emu,
            client: Some(Client { conn, out, unacked: 0 }),
            paused: false,
            input: VecDeque::new(),
            input_bytes: 0,
            resize: None,
            size,
            last_activity: Instant::now(),
            detached_since: None,
            last_words: Vec::new(),
        };
        let span = tracing::info_span!("terminal", session = %id, user = %user);
        tokio::spawn(actor.run(exec, rx).instrument(span));
        session
    }
}

struct Client {
    conn: u64,
    out: mpsc::UnboundedSender<Out>,
    unacked: u64,
}

/// Input waiting for room in the shell's stdin channel is bounded by this.
const MAX_QUEUED_INPUT: usize = 1 << 20;

struct Actor {
    session: Arc<Session>,
    registry: std::sync::Weak<Terminals>,
    cfg: TerminalConfig,
    emu: Arc<Emulator>,
    client: Option<Client>,
    paused: bool,
    input: VecDeque<Vec<u8>>,
    input_bytes: usize,
    resize: Option<TtySize>,
    size: (u16, u16),
    last_activity: Instant,
    detached_since: Option<Instant>,
    /// What the client gets when the session ends.
    last_words: Vec<Out>,
}

enum Flow {
    Continue,
    End,
}

impl Actor {
    async fn run(mut self, exec: ExecHandle, mut rx: mpsc::Receiver<Cmd>) {
        let ExecHandle { stdin, mut events, control } = exec;
        info!("terminal session started");
        self.send(Out::Msg(ServerMsg::Session {
            id: self.session.id.clone(),
            user: self.session.user.to_string(),
            new: true,
            window: self.cfg.high_water,
        }));
        loop {
            let deadline = self.deadline();
            let flow = tokio::select! {
                ev = events.recv(), if !self.paused => self.event(ev),
                cmd = rx.recv() => match cmd {
                    Some(cmd) => self.command(cmd, stdin.as_ref(), &control).await,
                    None => Flow::End,
                },
                permit = async { match &stdin { Some(s) => s.reserve().await, None => std::future::pending().await } },
                    if !self.input.is_empty() && self.resize.is_none() => {
                    match (permit, self.input.pop_front()) {
                        (Ok(p), Some(data)) => {
                            self.input_bytes -= data.len();
                            p.send(data);
                        }
                        _ => self.input.clear(),
                    }
                    Flow::Continue
                }
                permit = control.reserve(), if self.resize.is_some() => {
                    if let (Ok(p), Some(size)) = (permit, self.resize.take()) {
                        p.send(ExecControl::Resize(size));
                    }
                    Flow::Continue
                }
                () = tokio::time::sleep_until(deadline) => self.timed_out(),
            };
            if matches!(flow, Flow::End) {
                break;
            }
        }
        if let Some(reg) = self.registry.upgrade() {
            let mut map = reg.map();
            if map.get(&self.session.id).is_some_and(|s| Arc::ptr_eq(s, &self.session)) {
                map.remove(&self.session.id);
            }
        }
        // The client hears of the end once the session is out of the registry.
        for out in std::mem::take(&mut self.last_words) {
            self.send(out);
        }
        // Dropping `events` (the exec handle) kills the shell's process group if it still runs.
        drop(events);
        info!("terminal session ended");
    }

    fn send(&self, out: Out) {
        if let Some(c) = &self.client {
            let _ = c.out.send(out);
        }
    }

    fn deadline(&self) -> Instant {
        let idle = self.last_activity + self.cfg.idle;
        match self.detached_since {
            Some(t) => idle.min(t + self.cfg.reconnect),
            None => idle,
        }
    }

    fn timed_out(&mut self) -> Flow {
        let now = Instant::now();
        if now < self.deadline() {
            return Flow::Continue;
        }
        let (code, msg) = if self.detached_since.is_some_and(|t| now >= t + self.cfg.reconnect) {
            (
                "detached_timeout",
                format!("nobody re-attached within {} s; the shell was ended", self.cfg.reconnect.as_secs()),
            )
        } else {
            ("idle_timeout", format!("no input or output for {} s; the shell was ended", self.cfg.idle.as_secs()))
        };
        info!(reason = code, "closing the terminal session");
        self.last_words =
            vec![Out::Msg(ServerMsg::error(code, msg.clone())), Out::Close(Violation::new(close::GONE, msg))];
        Flow::End
    }

    fn event(&mut self, ev: Option<ExecEvent>) -> Flow {
        match ev {
            Some(ExecEvent::Stdout(b) | ExecEvent::Stderr(b)) => {
                self.output(b);
                Flow::Continue
            }
            Some(ExecEvent::Exit(st)) => {
                debug!(code = st.code, "the shell exited");
                self.last_words = vec![
                    Out::Msg(ServerMsg::Exit { code: st.code, signal: st.signal }),
                    Out::Close(Violation::new(close::NORMAL, format!("the shell exited with code {}", st.code))),
                ];
                Flow::End
            }
            None => {
                self.send(Out::Msg(ServerMsg::error("internal", "the shell's output ended without an exit status")));
                self.send(Out::Close(Violation::new(
                    close::INTERNAL,
                    "the shell's output ended without an exit status",
                )));
                Flow::End
            }
        }
    }

    fn output(&mut self, b: Vec<u8>) {
        self.last_activity = Instant::now();
        self.emu.push(&b);
        let n = b.len() as u64;
        self.session.set_status(|s| {
            s.output_bytes += n;
            s.last_activity = SystemTime::now();
        });
        if let Some(c) = &mut self.client {
            c.unacked += n;
            self.session.max_unacked.fetch_max(c.unacked, Ordering::Relaxed);
            if c.unacked > self.cfg.high_water {
                self.paused = true;
            }
            if c.out.send(Out::Data(b)).is_err() {
                // The connection went away without a detach (it will send one, or has).
                self.paused = false;
            }
        }
    }

    fn is_current(&self, conn: u64) -> bool {
        self.client.as_ref().is_some_and(|c| c.conn == conn)
    }

    fn detach(&mut self) {
        self.client = None;
        self.paused = false;
        self.detached_since = Some(Instant::now());
        self.session.set_status(|s| s.attached = false);
    }

    async fn command(
        &mut self,
        cmd: Cmd,
        stdin: Option<&mpsc::Sender<Vec<u8>>>,
        control: &mpsc::Sender<ExecControl>,
    ) -> Flow {
        match cmd {
            Cmd::Attach { conn, out, size, done } => {
                if let Some(old) = self.client.take() {
                    let _ = old
                        .out
                        .send(Out::Msg(ServerMsg::error("taken_over", "another connection attached to this session")));
                    let _ = old.out.send(Out::Close(Violation::new(
                        close::TAKEN_OVER,
                        "another connection attached to this session",
                    )));
                }
                if let Some((cols, rows)) = size {
                    self.set_size(cols, rows);
                }
                let emu = self.emu.clone();
                let replay = tokio::task::spawn_blocking(move || emu.catch_up_and_replay()).await.unwrap_or_default();
                self.client = Some(Client { conn, out, unacked: 0 });
                self.detached_since = None;
                self.paused = false;
                self.last_activity = Instant::now();
                self.session.set_status(|s| s.attached = true);
                self.send(Out::Msg(ServerMsg::Session {
                    id: self.session.id.clone(),
                    user: self.session.user.to_string(),
                    new: false,
                    window: self.cfg.high_water,
                }));
                if let Some(c) = &mut self.client {
                    c.unacked = replay.len() as u64;
                    self.paused = c.unacked > self.cfg.high_water;
                }
                self.send(Out::Data(replay));
                let _ = done.send(());
                debug!(conn, "re-attached");
                Flow::Continue
            }
            Cmd::Detach { conn } => {
                if self.is_current(conn) {
                    debug!(conn, "detached");
                    self.detach();
                }
                Flow::Continue
            }
            Cmd::Input { conn, data } => {
                if !self.is_current(conn) || data.is_empty() {
                    return Flow::Continue;
                }
                self.last_activity = Instant::now();
                if let Some(tx) = stdin {
                    // Input typed after a resize waits until the resize is on its way, so a
                    // command reads the new size.
                    if self.input.is_empty() && self.resize.is_none() {
                        match tx.try_send(data) {
                            Ok(()) => return Flow::Continue,
                            Err(mpsc::error::TrySendError::Full(d)) => self.queue_input(d),
                            Err(mpsc::error::TrySendError::Closed(_)) => {}
                        }
                    } else {
                        self.queue_input(data);
                    }
                }
                Flow::Continue
            }
            Cmd::Resize { conn, cols, rows } => {
                if self.is_current(conn) {
                    self.set_size(cols, rows);
                    if let Some(size) = self.resize {
                        if control.try_send(ExecControl::Resize(size)).is_ok() {
                            self.resize = None;
                        }
                    }
                }
                Flow::Continue
            }
            Cmd::Ack { conn, bytes } => {
                if !self.is_current(conn) {
                    return Flow::Continue;
                }
                let high = self.cfg.high_water;
                let low = self.cfg.low_water;
                let Some(c) = &mut self.client else { return Flow::Continue };
                match c.unacked.checked_sub(bytes) {
                    Some(left) => {
                        c.unacked = left;
                        if self.paused && left <= low {
                            self.paused = false;
                        } else if left > high {
                            self.paused = true;
                        }
                    }
                    None => {
                        let why = format!("ack of {bytes} bytes, but only {} are unacknowledged", c.unacked);
                        self.send(Out::Msg(ServerMsg::error("bad_message", why.clone())));
                        self.send(Out::Close(Violation::bad(why)));
                        self.detach();
                    }
                }
                Flow::Continue
            }
            Cmd::Close { code, message, close_code } => {
                self.last_words = vec![
                    Out::Msg(ServerMsg::error(code, message.clone())),
                    Out::Close(Violation::new(close_code, message)),
                ];
                Flow::End
            }
        }
    }

    fn queue_input(&mut self, data: Vec<u8>) {
        if self.input_bytes + data.len() > MAX_QUEUED_INPUT {
            tracing::warn!(bytes = data.len(), "the shell is not reading its input; dropping input");
            return;
        }
        self.input_bytes += data.len();
        self.input.push_back(data);
    }

    fn set_size(&mut self, cols: u16, rows: u16) {
        if (cols, rows) == self.size {
            return;
        }
        debug!(cols, rows, "resize");
        self.size = (cols, rows);
        self.resize = Some(TtySize { rows, cols });
        self.emu.resize(cols, rows);
        self.session.set_status(|s| {
            s.cols = cols;
            s.rows = rows;
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicU64;

    /// A shell stand-in behind the real `ExecHandle` contract: it writes `total` bytes in 64 KiB
    /// chunks (what the backends read at once), then exits.
    fn producer(total: u64, produced: Arc<AtomicU64>) -> ExecHandle {
        let (ev_tx, events) = mpsc::channel(64);
        let (stdin, _stdin_rx) = mpsc::channel(16);
        let (control, _control_rx) = mpsc::channel(16);
        tokio::spawn(async move {
            let _keep = (_stdin_rx, _control_rx);
            let mut left = total;
            while left > 0 {
                let n = left.min(64 << 10);
                if ev_tx.send(ExecEvent::Stdout(vec![b'x'; n as usize])).await.is_err() {
                    return;
                }
                produced.fetch_add(n, Ordering::SeqCst);
                left -= n;
            }
            let _ = ev_tx.send(ExecEvent::Exit(warren_core::ExitStatus { code: 0, signal: None })).await;
        });
        ExecHandle { stdin: Some(stdin), events, control }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_slow_client_keeps_buffered_output_bounded() {
        const TOTAL: u64 = 50_000_000;
        let reg = Terminals::new(TerminalConfig::default());
        let (high, low) = (reg.cfg.high_water, reg.cfg.low_water);
        let produced = Arc::new(AtomicU64::new(0));
        let (out_tx, mut out) = mpsc::unbounded_channel();
        let user = UserId::new("u_flow").expect("user");
        let session = reg.start("t_flow".into(), user, producer(TOTAL, produced.clone()), (80, 24), 1, out_tx);
        // The slowest client the protocol allows: it acknowledges only once the server must
        // have stopped (a full window outstanding), so every window goes through pause and
        // resume.
        let (mut received, mut unacked, mut acks, mut exit) = (0u64, 0u64, 0u32, None);
        let mut worst_backlog = 0u64;
        while let Some(o) =
            tokio::time::timeout(Duration::from_secs(60), out.recv()).await.expect("output keeps coming")
        {
            match o {
                Out::Data(d) => {
                    received += d.len() as u64;
                    unacked += d.len() as u64;
                    if unacked > high {
                        // The server is paused now: what the shell has written beyond what this
                        // client got is bounded by the channels, not by the 50 MB.
                        worst_backlog = worst_backlog.max(produced.load(Ordering::SeqCst) - received);
                        session.send(Cmd::Ack { conn: 1, bytes: unacked }).await;
                        unacked = 0;
                        acks += 1;
                    }
                }
                Out::Msg(ServerMsg::Exit { code, .. }) => exit = Some(code),
                Out::Msg(_) => {}
                Out::Close(v) => {
                    assert_eq!(v.code, close::NORMAL, "{v:?}");
                    break;
                }
            }
        }
        assert_eq!((received, exit), (TOTAL, Some(0)));
        let chunk = 64 << 10;
        // Each acknowledgement covers one window (more than `high`, at most a chunk more).
        assert!(u64::from(acks) + 1 >= TOTAL / (high + chunk), "{acks} windows");
        assert!(session.max_unacked() <= high + chunk, "{} unacknowledged at most", session.max_unacked());
        assert!(session.max_unacked() > low, "the window was used");
        // The events channel (64 chunks), the chunk in the shell's hands, the window.
        assert!(worst_backlog <= 66 * chunk + high, "{worst_backlog} bytes buffered");
        assert!(reg.list(&UserId::new("u_flow").expect("user")).is_empty(), "an ended session is gone");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn acking_more_than_was_sent_closes_the_connection() {
        let reg = Terminals::new(TerminalConfig::default());
        let (out_tx, mut out) = mpsc::unbounded_channel();
        let user = UserId::new("u_ack").expect("user");
        let session = reg.start("t_ack".into(), user, producer(1000, Arc::default()), (80, 24), 7, out_tx);
        let mut got = 0;
        while got < 1000 {
            if let Some(Out::Data(d)) = out.recv().await {
                got += d.len();
            }
        }
        session.send(Cmd::Ack { conn: 7, bytes: 1001 }).await;
        loop {
            match tokio::time::timeout(Duration::from_secs(10), out.recv()).await.expect("an answer") {
                Some(Out::Close(v)) => {
                    // Either the ack violation or, if the producer's exit won the race, the exit.
                    assert!(v.code == close::BAD_MESSAGE || v.code == close::NORMAL, "{v:?}");
                    if v.code == close::BAD_MESSAGE {
                        assert!(v.reason.contains("1001"), "{v:?}");
                    }
                    break;
                }
                Some(_) => {}
                None => panic!("closed without a close"),
            }
        }
    }
}
