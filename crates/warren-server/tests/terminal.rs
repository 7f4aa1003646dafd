//! The browser terminal's WebSocket over a real socket, against a real server on an ephemeral
//! port with the dir backend: authentication, the protocol's errors, a shell round trip,
//! resize, Ctrl-C, `whoami` and `container-info`, flow control, re-attach with replay, and the
//! session API. Slots 100..=119 belong to this file.

mod common;

use std::time::Duration;

use common::*;
use futures::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};
use warren_server::config::{AuthConfig, ServerConfig};

const SECRET: &str = "terminal-tests-secret-0123456789abcdef";
/// Every wait is bounded by this.
const WAIT: Duration = Duration::from_secs(60);

struct Term {
    srv: TestServer,
    key: Signer,
}

impl Term {
    async fn start(slot: u32) -> Self {
        Self::with(slot, ServerConfig { rate_limit_rps: 0, ..ServerConfig::default() }).await
    }

    async fn with(slot: u32, server: ServerConfig) -> Self {
        let auth = AuthConfig { secret: Some(SECRET.into()), ..AuthConfig::default() };
        Self { srv: TestServer::start(slot, auth, server).await, key: Signer::hmac(SECRET.as_bytes()) }
    }

    fn token(&self, user: &str) -> String {
        self.key.token(&claims(user))
    }

    async fn raw(&self, user: &str) -> Client {
        let url = format!("{}/v1/workspaces/{user}/terminal", self.srv.url.replacen("http://", "ws://", 1));
        let (ws, _) = tokio::time::timeout(WAIT, tokio_tungstenite::connect_async(url))
            .await
            .expect("connect in time")
            .expect("WebSocket handshake");
        Client { ws, out: Vec::new(), unacked: 0, ack: true }
    }

    /// Connected, authenticated and attached (a new session when `session` is `None`).
    async fn attach(&self, user: &str, session: Option<&str>, size: (u16, u16)) -> (Client, Value) {
        let mut c = self.raw("me").await;
        c.json(json!({"type": "auth", "token": self.token(user)})).await;
        let mut attach = json!({"type": "attach", "cols": size.0, "rows": size.1});
        if let Some(id) = session {
            attach["session"] = json!(id);
        }
        c.json(attach).await;
        let s = c.msg("session").await;
        (c, s)
    }
}

struct Client {
    ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
    /// Terminal output received so far.
    out: Vec<u8>,
    unacked: u64,
    /// Acknowledge output as it arrives.
    ack: bool,
}

enum Got {
    Data,
    Msg(Value),
    Closed(u16, String),
}

impl Client {
    async fn json(&mut self, v: Value) {
        self.ws.send(Message::text(v.to_string())).await.expect("send text");
    }

    async fn type_in(&mut self, s: &str) {
        self.ws.send(Message::binary(s.as_bytes().to_vec())).await.expect("send binary");
    }

    async fn next(&mut self) -> Got {
        loop {
            let Ok(m) = tokio::time::timeout(WAIT, self.ws.next()).await else {
                return Got::Closed(0, format!("no message within {} s", WAIT.as_secs()));
            };
            match m {
                None => return Got::Closed(1006, "stream ended".into()),
                Some(Err(e)) => return Got::Closed(1006, e.to_string()),
                Some(Ok(Message::Binary(b))) => {
                    self.out.extend_from_slice(&b);
                    self.unacked += b.len() as u64;
                    if self.ack {
                        let n = std::mem::take(&mut self.unacked);
                        self.json(json!({"type": "ack", "bytes": n})).await;
                    }
                    return Got::Data;
                }
                Some(Ok(Message::Text(t))) => {
                    return Got::Msg(serde_json::from_str(t.as_str()).expect("server messages are JSON"))
                }
                Some(Ok(Message::Close(f))) => {
                    let (code, reason) =
                        f.map(|f| (u16::from(f.code), f.reason.to_string())).unwrap_or((1005, String::new()));
                    return Got::Closed(code, reason);
                }
                Some(Ok(_)) => {}
            }
        }
    }

    /// The next control message of `kind` (output on the way is kept).
    async fn msg(&mut self, kind: &str) -> Value {
        loop {
            match self.next().await {
                Got::Msg(m) if m["type"] == kind => return m,
                Got::Msg(m) if m["type"] == "error" => panic!("expected {kind}, got {m}"),
                Got::Closed(code, reason) => panic!("expected {kind}, the connection closed: {code} {reason}"),
                _ => {}
            }
        }
    }

    /// Waits until the output after byte `from` contains `needle`; returns where it ends.
    async fn until(&mut self, from: usize, needle: &str) -> usize {
        loop {
            if let Some(at) = find(&self.out[from.min(self.out.len())..], needle.as_bytes()) {
                return from + at + needle.len();
            }
            if let Got::Closed(code, reason) = self.next().await {
                panic!(
                    "waiting for {needle:?}: closed {code} {reason}; output: {}",
                    String::from_utf8_lossy(&self.out)
                );
            }
        }
    }

    /// Runs a command line and waits for the text it prints (not its echo: give a needle the
    /// shell computes, like `$((6*7))`).
    async fn run(&mut self, line: &str, needle: &str) -> usize {
        let from = self.out.len();
        self.type_in(&format!("{line}\r")).await;
        self.until(from, needle).await
    }

    /// Skips everything up to the close frame; returns its code and reason (and the last `error`).
    async fn closed(&mut self) -> (u16, String, Option<Value>) {
        let mut err = None;
        loop {
            match self.next().await {
                Got::Closed(code, reason) => return (code, reason, err),
                Got::Msg(m) if m["type"] == "error" => err = Some(m),
                _ => {}
            }
        }
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_happens_before_a_valid_auth() {
    let t = Term::start(100).await;
    // Terminal data before auth.
    let mut c = t.raw("me").await;
    c.ws.send(Message::binary(b"ls\r".to_vec())).await.expect("send");
    let (code, reason, _) = c.closed().await;
    assert_eq!(code, 4400, "{reason}");
    assert!(reason.contains("binary frame before auth"), "{reason}");

    // Not JSON, an unknown type, a control message of the wrong kind, an oversized one.
    for (text, code, needle) in [
        ("hello".to_owned(), 4400, "malformed"),
        (r#"{"type":"shutdown"}"#.to_owned(), 4400, "unknown message type"),
        (r#"{"type":"attach"}"#.to_owned(), 4400, "first message must be"),
        (format!(r#"{{"type":"auth","token":"{}"}}"#, "x".repeat(5000)), 1009, "limit"),
    ] {
        let mut c = t.raw("me").await;
        c.ws.send(Message::text(text.clone())).await.expect("send");
        let (got, reason, err) = c.closed().await;
        assert_eq!(got, code, "{text:.40}: {reason}");
        assert!(reason.contains(needle), "{text:.40}: {reason}");
        assert_eq!(err.map(|e| e["code"].clone()), Some(json!("bad_message")));
    }

    // Bad tokens: 4401 with the reason.
    for token in ["not-a-jwt", &Signer::hmac(b"another-secret-another-secret-xx").token(&claims("u_a"))] {
        let mut c = t.raw("me").await;
        c.json(json!({"type": "auth", "token": token})).await;
        let (code, reason, err) = c.closed().await;
        assert_eq!(code, 4401, "{reason}");
        assert_eq!(err.expect("an error message first")["code"], "unauthorized");
    }

    // A valid token for another user's workspace: 4403.
    let mut c = t.raw("u_victim").await;
    c.json(json!({"type": "auth", "token": t.token("u_intruder")})).await;
    let (code, reason, err) = c.closed().await;
    assert_eq!(code, 4403, "{reason}");
    assert_eq!(err.expect("an error message first")["code"], "forbidden");
    // ... and nothing was created for it.
    assert!(t.srv.engine.status(&warren_core::UserId::new("u_victim").expect("id")).await.is_err());

    // After auth, binary before attach is refused too; a frame over the limit is 1009.
    let mut c = t.raw("me").await;
    c.json(json!({"type": "auth", "token": t.token("u_a")})).await;
    c.ws.send(Message::binary(b"x".to_vec())).await.expect("send");
    assert_eq!(c.closed().await.0, 4400);
    let (mut c, _) = t.attach("u_a", None, (80, 24)).await;
    c.ws.send(Message::binary(vec![b'a'; 200_000])).await.expect("send");
    let (code, reason, _) = c.closed().await;
    assert_eq!(code, 1009, "{reason}");
    assert!(reason.contains("200000 bytes"), "{reason}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shell_in_the_workspace_with_resize_ctrl_c_and_info() {
    let t = Term::start(101).await;
    let (mut c, s) = t.attach("u_term", None, (80, 24)).await;
    assert_eq!((s["new"].as_bool(), s["user"].as_str()), (Some(true), Some("u_term")));
    assert!(s["id"].as_str().is_some_and(|id| id.starts_with("t_")), "{s}");
    assert_eq!(s["window"], 1 << 20);

    // Round trip, as the workspace user, in the home, UTF-8 intact.
    c.run("echo hi-$((40+2))", "hi-42").await;
    let at = c.run("whoami; echo who-$((1+1))", "who-2").await;
    assert!(find(&c.out[..at], b"u_term\r\n").is_some(), "{}", String::from_utf8_lossy(&c.out));
    let from = c.out.len();
    c.run("pwd; echo é日本-$((2+2))", "é日本-4").await;
    let home = t.srv.state.join("workspaces/u_term");
    assert!(find(&c.out[from..], home.to_string_lossy().as_bytes()).is_some(), "pwd is the home");

    // container-info.
    let from = c.out.len();
    c.type_in("container-info\r").await;
    let end = c.until(from, "session:    t_").await;
    let text = String::from_utf8_lossy(&c.out[from..end]).into_owned();
    for needle in
        ["user:       u_term", "username:   u_term", "backend:    dir", "limits:     memory 512 MiB", "workspace:  "]
    {
        assert!(text.contains(needle), "{needle:?} in {text}");
    }

    // Resize reaches the terminal.
    c.json(json!({"type": "resize", "cols": 100, "rows": 30})).await;
    let mut sized = false;
    for _ in 0..50 {
        // The resize travels beside the input; wait for it to land (it does at once in practice).
        let from = c.out.len();
        let end = c.run("stty size; echo sized-$((3+3))", "sized-6").await;
        if find(&c.out[from..end], b"30 100\r\n").is_some() {
            sized = true;
            break;
        }
    }
    assert!(sized, "stty size never showed 30 100: {}", String::from_utf8_lossy(&c.out));

    // Ctrl-C reaches the foreground job, not the shell.
    c.run("sh -c 'echo started-$((2+5)); exec sleep 100'", "started-7").await;
    c.type_in("\x03").await;
    c.run("echo alive-$((4+4))", "alive-8").await;

    // The session is listed; `exit` ends it with its code.
    let token = t.token("u_term");
    let (status, list) = t.srv.get("/v1/workspaces/me/terminal/sessions", &token).await;
    assert_eq!(status, 200, "{list}");
    assert_eq!(list.as_array().map(Vec::len), Some(1), "{list}");
    assert_eq!((list[0]["attached"].as_bool(), list[0]["cols"].as_u64()), (Some(true), Some(100)));
    c.type_in("exit 3\r").await;
    let m = c.msg("exit").await;
    assert_eq!(m["code"], 3);
    assert_eq!(c.closed().await.0, 1000);
    let (_, list) = t.srv.get("/v1/workspaces/me/terminal/sessions", &token).await;
    assert_eq!(list, json!([]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconnecting_replays_the_screen_and_the_api_closes_sessions() {
    let t = Term::start(102).await;
    let (mut c, s) = t.attach("u_back", None, (80, 24)).await;
    let id = s["id"].as_str().expect("id").to_owned();
    c.run("for i in $(seq 1 60); do echo line-$i; done; echo marker-$((1+2))", "marker-3").await;
    c.run("cd /tmp; echo moved-$((5+5))", "moved-10").await;
    drop(c); // the connection breaks without a close frame

    // A second session of the same user is independent.
    let (mut other, s2) = t.attach("u_back", None, (80, 24)).await;
    assert_ne!(s2["id"], json!(id));
    other.run("echo other-$((7*6))", "other-42").await;

    // Re-attach: same shell (still in /tmp), the screen and scrollback come back first.
    let (mut c, s) = t.attach("u_back", Some(&id), (80, 24)).await;
    assert_eq!((s["id"].as_str(), s["new"].as_bool()), (Some(id.as_str()), Some(false)));
    let mut screen = vt100::Parser::new(
        std::num::NonZeroU16::new(24).expect("rows"),
        std::num::NonZeroU16::new(80).expect("cols"),
        2000,
    );
    // The replay is everything up to the new prompt's state; then the shell is live again.
    let replay_end = c.run("echo still-$((2*4)); pwd", "still-8").await;
    screen.process(&c.out[..replay_end]);
    let text = screen.screen().contents();
    assert!(text.contains("marker-3") && text.contains("moved-10"), "{text}");
    screen.screen_mut().set_scrollback(usize::MAX);
    let top = screen.screen().contents();
    assert!(top.contains("line-1\n") || top.contains("line-2\n"), "scrollback: {top}");
    c.until(replay_end, "/tmp").await;

    // An unknown session id gets an error, and the connection may attach anew.
    let mut d = t.raw("me").await;
    d.json(json!({"type": "auth", "token": t.token("u_back")})).await;
    d.json(json!({"type": "attach", "session": "t_00000000000000000000000000000000"})).await;
    let e = d.msg("error").await;
    assert_eq!(e["code"], "session_not_found");
    d.json(json!({"type": "attach"})).await;
    assert_eq!(d.msg("session").await["new"], true);

    // Another user cannot attach to this session.
    let (mut stranger, _) = t.attach("u_stranger", None, (80, 24)).await;
    stranger.json(json!({"type": "attach", "session": id})).await;
    assert_eq!(stranger.closed().await.0, 4400, "attach comes once");
    let mut s3 = t.raw("me").await;
    s3.json(json!({"type": "auth", "token": t.token("u_stranger")})).await;
    s3.json(json!({"type": "attach", "session": id})).await;
    assert_eq!(s3.msg("error").await["code"], "session_not_found");

    // Taking over: the first connection hears of it.
    let (mut c2, _) = t.attach("u_back", Some(&id), (80, 24)).await;
    let (code, _, err) = c.closed().await;
    assert_eq!((code, err.map(|e| e["code"].clone())), (4409, Some(json!("taken_over"))));

    // The API lists three sessions of u_back and closes one; its client gets 4410.
    let token = t.token("u_back");
    let (_, list) = t.srv.get("/v1/workspaces/me/terminal/sessions", &token).await;
    assert_eq!(list.as_array().map(Vec::len), Some(3), "{list}");
    let (status, _) = t.srv.get("/v1/workspaces/u_back/terminal/sessions", &t.token("u_stranger")).await;
    assert_eq!(status, 403);
    let del = |tok: String, path: String| {
        let srv = &t.srv;
        async move { srv.call(reqwest::Method::DELETE, &path, Some(&tok), None).await.0 }
    };
    assert_eq!(del(t.token("u_stranger"), format!("/v1/workspaces/me/terminal/sessions/{id}")).await, 404);
    assert_eq!(del(token.clone(), format!("/v1/workspaces/me/terminal/sessions/{id}")).await, 204);
    let (code, _, err) = c2.closed().await;
    assert_eq!((code, err.map(|e| e["code"].clone())), (4410, Some(json!("session_closed"))));
    let (_, list) = t.srv.get("/v1/workspaces/me/terminal/sessions", &token).await;
    assert_eq!(list.as_array().map(Vec::len), Some(2), "{list}");
    drop(other);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_through_a_real_shell_stays_within_the_window() {
    let t = Term::start(103).await;
    let (mut c, _) = t.attach("u_flood", None, (80, 24)).await;
    c.run("echo ready-$((1+1))", "ready-2").await;
    // Acknowledge only when the server must have paused (a full window outstanding).
    c.ack = false;
    let total = 20_000_000usize;
    let from = c.out.len();
    c.type_in(&format!("echo S$((1+1)); head -c {total} /dev/zero | tr '\\0' A; echo E$((1+1))\r")).await;
    let mut acks = 0;
    loop {
        if let Got::Closed(code, reason) = c.next().await {
            panic!("closed: {code} {reason}");
        }
        if c.unacked > 1 << 20 {
            let n = std::mem::take(&mut c.unacked);
            c.json(json!({"type": "ack", "bytes": n})).await;
            acks += 1;
        }
        if c.out.len() > from + total && find(&c.out[c.out.len().saturating_sub(64)..], b"E2").is_some() {
            break;
        }
    }
    let start = from + find(&c.out[from..], b"S2\r\n").expect("start marker") + 4;
    let end = start + find(&c.out[start..], b"E2\r\n").expect("end marker");
    assert_eq!(c.out[start..end].iter().filter(|b| **b == b'A').count(), total);
    assert!(acks > 12, "{acks}");
    let (_, list) = t.srv.get("/v1/workspaces/me/terminal/sessions", &t.token("u_flood")).await;
    let max = list[0]["max_unacked_bytes"].as_u64().expect("max_unacked_bytes");
    assert!(max > 512 << 10 && max <= (1 << 20) + (64 << 10), "{max}");
    // Polite close: the session stays for a re-attach.
    c.ws.close(Some(CloseFrame { code: CloseCode::Normal, reason: "bye".into() })).await.expect("close");
}

/// Polls `f` (every 50 ms, at most `WAIT`) until it is true.
async fn eventually(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while !f() {
        assert!(tokio::time::Instant::now() < deadline, "{what} within {} s", WAIT.as_secs());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn detached_and_idle_sessions_end_and_their_shells_die() {
    let cfg = ServerConfig {
        rate_limit_rps: 0,
        terminal_reconnect_secs: 1,
        terminal_idle_secs: 3,
        ..ServerConfig::default()
    };
    let t = Term::with(104, cfg).await;
    let token = t.token("u_idle");

    // Detached: gone after the reconnect time, with its shell.
    let (mut c, s) = t.attach("u_idle", None, (80, 24)).await;
    let id = s["id"].as_str().expect("id").to_owned();
    let end = c.run("echo \"pid-$$-$((1+1))\"", "-2\r\n").await;
    let text = String::from_utf8_lossy(&c.out[..end]).into_owned();
    let pid: u32 = text
        .rsplit("pid-")
        .next()
        .and_then(|t| t.split('-').next())
        .and_then(|p| p.parse().ok())
        .expect("the shell's pid");
    assert!(std::path::Path::new(&format!("/proc/{pid}")).exists());
    drop(c);
    let list = || {
        let (srv, token) = (&t.srv, token.clone());
        async move { srv.get("/v1/workspaces/me/terminal/sessions", &token).await.1 }
    };
    let deadline = tokio::time::Instant::now() + WAIT;
    while list().await.as_array().is_some_and(|l| l.iter().any(|s| s["id"] == json!(id))) {
        assert!(tokio::time::Instant::now() < deadline, "the detached session ended");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    eventually("the shell was killed", || {
        std::fs::read_to_string(format!("/proc/{pid}/stat")).map_or(true, |st| st.contains(") Z "))
    })
    .await;
    let mut late = t.raw("me").await;
    late.json(json!({"type": "auth", "token": token})).await;
    late.json(json!({"type": "attach", "session": id})).await;
    assert_eq!(late.msg("error").await["code"], "session_not_found");

    // Idle while attached: the client hears why.
    let (mut c, _) = t.attach("u_idle", None, (80, 24)).await;
    c.run("echo idle-$((3*3))", "idle-9").await;
    let (code, reason, err) = c.closed().await;
    assert_eq!(code, 4410, "{reason}");
    assert_eq!(err.expect("an error first")["code"], "idle_timeout");
}
