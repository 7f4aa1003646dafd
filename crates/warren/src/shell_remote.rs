//! `warren --url URL shell USER`: the server's terminal WebSocket (`docs/terminal-protocol.md`)
//! on the local terminal, like the local `warren shell`: stdin in raw mode, window size changes
//! passed on, the shell's exit code as ours.
//!
//! The token goes in the first message (never in the URL or argv). Output is acknowledged frame
//! by frame once written to stdout, so the server's flow-control window never fills up while we
//! keep up. Signals sent to the client (not typed: the terminal is raw) go on as the terminal
//! would send them: SIGINT as Ctrl-C and SIGQUIT as Ctrl-\ to the foreground job; SIGTERM and
//! SIGHUP end the session (its shell is killed through the API), as they end the local shell.
//! The server's terminal always runs a login shell in the home directory, so `--cwd`, `--env`
//! and a command are refused here.

use std::io::{IsTerminal, Write};
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use futures::{SinkExt, StreamExt};
use reqwest::Method;
use serde_json::json;
use tokio::signal::unix::{signal, SignalKind};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::{self, Message};
use warren_server::terminal::protocol::{ServerMsg, MAX_COLS, MAX_ROWS};

use crate::client::Client;
use crate::{term, ShellArgs};

type Socket = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// How long connecting (TCP and the WebSocket handshake) may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Runs a shell in `a.user`'s workspace through the server's terminal; returns its exit code.
pub(crate) async fn shell(client: &Client, a: ShellArgs) -> Result<i32> {
    if !std::io::stdin().is_terminal() {
        bail!("warren shell needs a terminal on stdin; for scripts use `warren exec USER -- CMD`");
    }
    if a.cwd.is_some() || !a.env.is_empty() || !a.argv.is_empty() {
        bail!(
            "--cwd, --env and a command are not available for warren shell with --url (the server's terminal \
             runs a login shell in the home directory): use `warren --url URL exec {} -- CMD`, or run warren \
             shell on the server host",
            a.user
        );
    }
    let mut url = client.url(&["v1", "workspaces", a.user.as_str(), "terminal"])?;
    let scheme = match url.scheme() {
        "http" => "ws",
        _ => bail!(
            "warren shell over --url speaks plain ws:// only (this build has no TLS for WebSockets): \
             give an http:// URL (for example through an SSH tunnel), or run warren shell on the server host"
        ),
    };
    url.set_scheme(scheme).map_err(|()| anyhow!("cannot make a WebSocket URL of {url}"))?;
    let shown = format!("GET {}", url.path());
    let unreachable = |e: &dyn std::fmt::Display| {
        let base = client.base().as_str().trim_end_matches('/').to_owned();
        anyhow!("cannot reach the warren server at {base} ({shown}): {e}; is `warren serve` running there?")
    };
    let (mut ws, _) = match tokio::time::timeout(CONNECT_TIMEOUT, tokio_tungstenite::connect_async(url.as_str())).await
    {
        Err(_) => return Err(unreachable(&format!("no answer within {} s", CONNECT_TIMEOUT.as_secs()))),
        Ok(Err(tungstenite::Error::Http(resp))) => {
            let body = resp.body().as_deref().map(String::from_utf8_lossy).unwrap_or_default();
            bail!("the server refused the terminal connection ({shown}): HTTP {}: {}", resp.status(), body.trim())
        }
        Ok(Err(e)) => return Err(unreachable(&e)),
        Ok(Ok(c)) => c,
    };

    let size = term::size().unwrap_or(warren_core::TtySize { rows: 24, cols: 80 });
    let (cols, rows) = clamp(size);
    send_json(&mut ws, json!({ "type": "auth", "token": client.token() })).await?;
    send_json(&mut ws, json!({ "type": "attach", "cols": cols, "rows": rows })).await?;
    let session = loop {
        match next_msg(&mut ws).await? {
            Incoming::Msg(ServerMsg::Session { id, .. }) => break id,
            Incoming::Msg(ServerMsg::Error { code, message }) => {
                return Err(refusal(&mut ws, &code, &message, "the server refused the terminal").await)
            }
            Incoming::Msg(_) => {}
            Incoming::Data(_) => bail!("the server sent terminal output before attaching the session"),
            Incoming::Closed(why) => bail!("the server closed the terminal before attaching: {why}"),
        }
    };
    tracing::debug!(%session, "terminal session attached");

    let raw = term::RawMode::enable()?;
    let code = attached(client, &a.user, &session, &mut ws).await;
    drop(raw);
    if code.is_ok() {
        // The remote shell's last line may not end with a newline; the local prompt should not
        // be glued to it.
        eprint!("\r");
    }
    code
}

/// Attached: keystrokes to the server, output to stdout, until the shell exits.
async fn attached(client: &Client, user: &warren_core::UserId, session: &str, ws: &mut Socket) -> Result<i32> {
    let mut winch = signal(SignalKind::window_change()).context("watching SIGWINCH")?;
    let mut int = signal(SignalKind::interrupt()).context("watching SIGINT")?;
    let mut quit = signal(SignalKind::quit()).context("watching SIGQUIT")?;
    let mut term_sig = signal(SignalKind::terminate()).context("watching SIGTERM")?;
    let mut hup = signal(SignalKind::hangup()).context("watching SIGHUP")?;
    let mut input = forward_stdin();
    let mut typing = true;
    let mut stdout = std::io::stdout();
    loop {
        let ended = tokio::select! {
            m = next_msg(ws) => m?,
            keys = input.recv(), if typing => {
                match keys {
                    Some(b) => send(ws, Message::binary(b)).await?,
                    // Our stdin ended (the terminal went away): nothing more to type.
                    None => typing = false,
                }
                continue;
            }
            _ = winch.recv() => {
                if let Some(size) = term::size() {
                    let (cols, rows) = clamp(size);
                    send_json(ws, json!({ "type": "resize", "cols": cols, "rows": rows })).await?;
                }
                continue;
            }
            _ = int.recv() => { send(ws, Message::binary(vec![3u8])).await?; continue; }
            _ = quit.recv() => { send(ws, Message::binary(vec![0x1cu8])).await?; continue; }
            _ = term_sig.recv() => return end_session(client, user, session, ws, 15).await,
            _ = hup.recv() => return end_session(client, user, session, ws, 1).await,
        };
        match ended {
            Incoming::Data(b) => {
                if let Err(e) = stdout.write_all(&b).and_then(|()| stdout.flush()) {
                    return Err(anyhow!(e).context("writing the terminal's output to stdout"));
                }
                // Processed: acknowledge it, or the server stops sending after its window.
                send_json(ws, json!({ "type": "ack", "bytes": b.len() })).await?;
            }
            Incoming::Msg(ServerMsg::Exit { code, .. }) => {
                // The server closes with 1000 next; answer its close, briefly.
                let _ = tokio::time::timeout(Duration::from_secs(2), ws.close(None)).await;
                return Ok(code);
            }
            Incoming::Msg(ServerMsg::Error { code, message }) => {
                return Err(refusal(ws, &code, &message, "the terminal session ended").await)
            }
            Incoming::Msg(_) => {}
            Incoming::Closed(why) => {
                bail!("the terminal connection ended before the shell exited: {why} (the session was {session})")
            }
        }
    }
}

/// SIGTERM or SIGHUP: closes the session (its shell is killed) and returns 128 + the signal.
async fn end_session(
    client: &Client,
    user: &warren_core::UserId,
    session: &str,
    ws: &mut Socket,
    sig: i32,
) -> Result<i32> {
    let url = client.url(&["v1", "workspaces", user.as_str(), "terminal", "sessions", session])?;
    if let Err(e) = client.send(Method::DELETE, url, None).await {
        tracing::warn!(error = %format!("{e:#}"), %session, "closing the terminal session failed");
    }
    let _ = tokio::time::timeout(Duration::from_secs(2), ws.close(None)).await;
    Ok(128 + sig)
}

/// What the server sent.
enum Incoming {
    /// Terminal output.
    Data(Vec<u8>),
    /// A control message.
    Msg(ServerMsg),
    /// The connection ended; why, for people.
    Closed(String),
}

/// The next frame that matters (WebSocket pings and pongs are skipped).
async fn next_msg(ws: &mut Socket) -> Result<Incoming> {
    loop {
        return Ok(match ws.next().await {
            Some(Ok(Message::Binary(b))) => Incoming::Data(b.to_vec()),
            Some(Ok(Message::Text(t))) => Incoming::Msg(
                serde_json::from_str(t.as_str())
                    .with_context(|| format!("the server sent a control message this client does not know: {t}"))?,
            ),
            Some(Ok(Message::Close(frame))) => Incoming::Closed(describe_close(frame.as_ref())),
            Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => continue,
            Some(Err(e)) => Incoming::Closed(format!("the connection failed: {e}")),
            None => Incoming::Closed("the connection closed".to_owned()),
        });
    }
}

fn describe_close(frame: Option<&CloseFrame>) -> String {
    match frame {
        Some(f) if f.code == CloseCode::Normal && f.reason.is_empty() => "closed normally".to_owned(),
        Some(f) => format!("close code {}: {}", u16::from(f.code), f.reason.as_str()),
        None => "closed without a code".to_owned(),
    }
}

/// The error for an `error` message from the server (a close follows it, which this waits for
/// briefly so the server sees an orderly end).
async fn refusal(ws: &mut Socket, code: &str, message: &str, what: &str) -> anyhow::Error {
    let _ = tokio::time::timeout(Duration::from_secs(2), async {
        while let Some(Ok(m)) = ws.next().await {
            if matches!(m, Message::Close(_)) {
                break;
            }
        }
    })
    .await;
    match code {
        "unauthorized" => {
            anyhow!("the server refused the token: {message} (set WARREN_TOKEN; on the server host: warren token USER)")
        }
        _ => anyhow!("{what}: {message}"),
    }
}

async fn send(ws: &mut Socket, m: Message) -> Result<()> {
    ws.send(m).await.context("sending to the server's terminal (the connection broke)")
}

async fn send_json(ws: &mut Socket, v: serde_json::Value) -> Result<()> {
    send(ws, Message::text(v.to_string())).await
}

/// The size within the protocol's limits (the server closes the connection on others).
fn clamp(size: warren_core::TtySize) -> (u16, u16) {
    (size.cols.clamp(2, MAX_COLS), size.rows.clamp(1, MAX_ROWS))
}

/// Reads stdin on a thread of its own, in frames the server accepts (at most
/// `MAX_INPUT_FRAME` bytes); the channel closes at end of file.
fn forward_stdin() -> tokio::sync::mpsc::Receiver<Vec<u8>> {
    let (tx, rx) = tokio::sync::mpsc::channel(16);
    crate::forward_stdin(tx);
    rx
}
