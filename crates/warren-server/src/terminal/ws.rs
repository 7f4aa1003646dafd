//! One WebSocket connection: authenticate (first message), attach (second), then pump bytes and
//! control messages between the socket and the session until either side ends.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, State};
use axum::response::Response;
use tokio::sync::{mpsc, oneshot};
use tracing::{debug, warn, Instrument};
use warren_core::{Error, UserId};
use warren_engine::CreateOptions;

use super::protocol::{close, parse_control, ClientMsg, ServerMsg, Violation, DEFAULT_SIZE, MAX_INPUT_FRAME};
use super::session::{Cmd, Out, Session};
use super::shell;
use crate::auth::Principal;
use crate::error::ApiError;
use crate::AppState;

/// Time allowed for each of the `auth` and `attach` messages.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Output frames are merged up to this size when several are waiting.
const MAX_OUT_FRAME: usize = 256 << 10;
/// Frames up to this size are read whole and then checked against the protocol's limits (so
/// the close is orderly, with 1009); larger ones break the connection where they are.
const MAX_READ_FRAME: usize = 1 << 20;

/// `GET /v1/workspaces/{user}/terminal`: the terminal WebSocket (see `docs/terminal-protocol.md`).
#[utoipa::path(get, path = "/v1/workspaces/{user}/terminal", tag = "terminal",
    params(("user" = String, Path, description = "the owner, or `me`")),
    responses(
        (status = 101, description = "WebSocket upgrade. No Authorization header: the first message is \
            `{\"type\":\"auth\",\"token\":\"<JWT>\"}`, the second `{\"type\":\"attach\",\"session\"?,\"cols\"?,\"rows\"?}`; \
            then binary frames carry terminal bytes both ways and text frames JSON control messages \
            (docs/terminal-protocol.md)"),
        (status = 400, description = "not a WebSocket upgrade request"),
    ))]
pub async fn terminal_ws(State(s): State<AppState>, Path(user): Path<String>, ws: WebSocketUpgrade) -> Response {
    ws.max_message_size(MAX_READ_FRAME).max_frame_size(MAX_READ_FRAME).on_upgrade(move |socket| {
        let conn = s.terminals.conn_id();
        let span = tracing::info_span!("terminal_ws", conn, target = %user);
        Conn { s, raw_user: user, ws: socket, id: conn }.run().instrument(span)
    })
}

struct Conn {
    s: AppState,
    raw_user: String,
    ws: WebSocket,
    id: u64,
}

/// Why a handshake step ended the connection.
enum Stop {
    /// Close with this code and reason (after an `error` message with `code` and the reason).
    Close(&'static str, Violation),
    /// The client went away.
    Gone,
}

impl From<Violation> for Stop {
    fn from(v: Violation) -> Self {
        Stop::Close("bad_message", v)
    }
}

impl Conn {
    async fn run(mut self) {
        let (user, principal) = match self.handshake().await {
            Ok(p) => p,
            Err(Stop::Close(code, v)) => return self.refuse(code, v).await,
            Err(Stop::Gone) => return,
        };
        let (out_tx, out_rx) = mpsc::unbounded_channel();
        let session = match self.attach(&user, &principal, out_tx).await {
            Ok(s) => s,
            Err(Stop::Close(code, v)) => return self.refuse(code, v).await,
            Err(Stop::Gone) => return,
        };
        self.pump(session, out_rx).await;
    }

    /// Sends an `error` message, then closes.
    async fn refuse(&mut self, code: &str, v: Violation) {
        debug!(code, close = v.code, reason = %v.reason, "refusing the terminal connection");
        let _ = self.ws.send(Message::Text(ServerMsg::error(code, v.reason.clone()).to_json().into())).await;
        self.close(v).await;
    }

    /// Sends a close frame and waits (briefly) for the client's, so it sees the code.
    async fn close(&mut self, v: Violation) {
        let frame = CloseFrame { code: v.code, reason: v.reason.into() };
        if self.ws.send(Message::Close(Some(frame))).await.is_err() {
            return;
        }
        let _ = tokio::time::timeout(Duration::from_secs(2), async {
            while let Some(Ok(m)) = self.ws.recv().await {
                if matches!(m, Message::Close(_)) {
                    break;
                }
            }
        })
        .await;
    }

    /// The next control message before attaching (pings are answered here).
    async fn next_control(&mut self, what: &str) -> Result<ClientMsg, Stop> {
        let deadline = tokio::time::Instant::now() + HANDSHAKE_TIMEOUT;
        loop {
            let msg = match tokio::time::timeout_at(deadline, self.ws.recv()).await {
                Err(_) => {
                    return Err(Stop::Close(
                        "timeout",
                        Violation::new(
                            close::TIMEOUT,
                            format!("no {what} message within {} s", HANDSHAKE_TIMEOUT.as_secs()),
                        ),
                    ))
                }
                Ok(None | Some(Err(_))) => return Err(Stop::Gone),
                Ok(Some(Ok(m))) => m,
            };
            match msg {
                Message::Text(t) => match parse_control(t.as_str())? {
                    ClientMsg::Ping { id } => {
                        if self.ws.send(Message::Text(ServerMsg::Pong { id }.to_json().into())).await.is_err() {
                            return Err(Stop::Gone);
                        }
                    }
                    m => return Ok(m),
                },
                Message::Binary(_) => {
                    return Err(Violation::bad(format!(
                        "binary frame before {what}: terminal data is accepted only once attached"
                    ))
                    .into())
                }
                Message::Close(_) => return Err(Stop::Gone),
                Message::Ping(_) | Message::Pong(_) => {}
            }
        }
    }

    /// `auth`: the token, the target user, the rate limit.
    async fn handshake(&mut self) -> Result<(UserId, Principal), Stop> {
        let token = match self.next_control("auth").await? {
            ClientMsg::Auth { token } => token,
            _ => return Err(Violation::bad("the first message must be {\"type\":\"auth\",\"token\":\"<JWT>\"}").into()),
        };
        let principal = self
            .s
            .auth
            .verify(&token)
            .await
            .map_err(|e| Stop::Close("unauthorized", Violation::new(close::UNAUTHORIZED, e.message)))?;
        let user = principal.target(&self.raw_user).map_err(|e| {
            let code = if e.status.as_u16() == 403 { close::FORBIDDEN } else { close::BAD_MESSAGE };
            Stop::Close(e.code, Violation::new(code, e.message))
        })?;
        if !self.s.limiter.allow(&principal.user) {
            return Err(Stop::Close(
                "rate_limited",
                Violation::new(close::TOO_MANY, "too many requests for this user: retry after a second"),
            ));
        }
        Ok((user, principal))
    }

    /// `attach`: to an existing session of `user`, or a new one. An unknown session id gets an
    /// `error` (`session_not_found`) and the client may send another `attach`.
    async fn attach(
        &mut self,
        user: &UserId,
        principal: &Principal,
        out: mpsc::UnboundedSender<Out>,
    ) -> Result<Arc<Session>, Stop> {
        loop {
            let ClientMsg::Attach { session, cols, rows } = self.next_control("attach").await? else {
                return Err(
                    Violation::bad("after auth, send {\"type\":\"attach\"} (optionally with a session id)").into()
                );
            };
            let size = cols.zip(rows);
            let Some(id) = session else {
                return self.open(user, principal, size.unwrap_or(DEFAULT_SIZE), out).await;
            };
            if let Some(sess) = self.s.terminals.get(user, &id) {
                let (done, ready) = oneshot::channel();
                if sess.send(Cmd::Attach { conn: self.id, out: out.clone(), size, done }).await && ready.await.is_ok() {
                    debug!(session = %id, "re-attached");
                    return Ok(sess);
                }
            }
            let msg = ServerMsg::error(
                "session_not_found",
                format!(
                    "no session {id} of user {user} (it ended or timed out); attach without a session id to start one"
                ),
            );
            if self.ws.send(Message::Text(msg.to_json().into())).await.is_err() {
                return Err(Stop::Gone);
            }
        }
    }

    /// A new session: creates the workspace if the user has none, starts it, starts the shell.
    async fn open(
        &mut self,
        user: &UserId,
        principal: &Principal,
        size: (u16, u16),
        out: mpsc::UnboundedSender<Out>,
    ) -> Result<Arc<Session>, Stop> {
        let t = &self.s.terminals;
        if t.count(user) >= t.cfg.max_sessions {
            return Err(Stop::Close(
                "too_many_sessions",
                Violation::new(
                    close::TOO_MANY,
                    format!("user {user} has {} terminal sessions, the most allowed; close one", t.cfg.max_sessions),
                ),
            ));
        }
        let failed = |e: Error| {
            let api = ApiError::from(e);
            Stop::Close(
                api.code,
                Violation::new(close::INTERNAL, format!("starting the shell failed: {}", api.message)),
            )
        };
        let engine = &self.s.engine;
        match engine.status(user).await {
            Ok(_) => {}
            Err(Error::NotFound(_)) => {
                tracing::info!(by = %principal.user, "creating the workspace for a terminal");
                match engine.create(user, CreateOptions::default()).await {
                    Ok(_) | Err(Error::AlreadyExists(_)) => {}
                    Err(e) => return Err(failed(e)),
                }
                let detail =
                    serde_json::json!({ "by": principal.user.as_str(), "admin": principal.admin, "route": "terminal" });
                if let Err(e) = engine.audit(Some(user), "api", detail).await {
                    warn!(error = %e, "recording the audit event failed");
                }
            }
            Err(e) => return Err(failed(e)),
        }
        let info = engine.ensure_running(user).await.map_err(failed)?;
        let id = super::protocol::new_session_id().map_err(failed)?;
        let exec = engine.exec_stream(user, shell::request(&info, &id, size)).await.map_err(failed)?;
        tracing::info!(session = %id, by = %principal.user, "terminal session opened");
        Ok(self.s.terminals.start(id, user.clone(), exec, size, self.id, out))
    }

    /// Attached: socket to session and back.
    async fn pump(mut self, session: Arc<Session>, mut out: mpsc::UnboundedReceiver<Out>) {
        let conn = self.id;
        let mut held: Option<Out> = None;
        let end = loop {
            let next = match held.take() {
                Some(o) => Some(o),
                None => tokio::select! {
                    m = self.ws.recv() => {
                        match self.incoming(&session, m).await {
                            Ok(()) => continue,
                            Err(v) => break v,
                        }
                    }
                    o = out.recv() => o,
                },
            };
            match next {
                Some(Out::Data(mut data)) => {
                    // Merge what else is waiting into one frame.
                    while data.len() < MAX_OUT_FRAME {
                        match out.try_recv() {
                            Ok(Out::Data(more)) => data.extend_from_slice(&more),
                            Ok(other) => {
                                held = Some(other);
                                break;
                            }
                            Err(_) => break,
                        }
                    }
                    if self.ws.send(Message::Binary(data.into())).await.is_err() {
                        break None;
                    }
                }
                Some(Out::Msg(m)) => {
                    if self.ws.send(Message::Text(m.to_json().into())).await.is_err() {
                        break None;
                    }
                }
                Some(Out::Close(v)) => {
                    // The session ended or let go of this connection: no detach needed.
                    self.close(v).await;
                    return;
                }
                None => {
                    break Some(Violation::new(close::GONE, "the session ended"));
                }
            }
        };
        session.send(Cmd::Detach { conn }).await;
        if let Some(v) = end {
            if v.code != close::NORMAL {
                let _ = self
                    .ws
                    .send(Message::Text(ServerMsg::error("bad_message", v.reason.clone()).to_json().into()))
                    .await;
            }
            self.close(v).await;
        }
    }

    /// One message from the client while attached; `Err(Some(v))` closes with `v`, `Err(None)`
    /// means the client is gone.
    async fn incoming(
        &mut self,
        session: &Session,
        m: Option<Result<Message, axum::Error>>,
    ) -> Result<(), Option<Violation>> {
        let conn = self.id;
        match m {
            None => Err(None),
            Some(Err(e)) => {
                debug!(error = %e, "terminal connection failed");
                Err(None)
            }
            Some(Ok(Message::Binary(b))) if b.len() > MAX_INPUT_FRAME => Err(Some(Violation::new(
                close::TOO_BIG,
                format!("input frame of {} bytes; the limit is {MAX_INPUT_FRAME}: split it", b.len()),
            ))),
            Some(Ok(Message::Binary(b))) => {
                session.send(Cmd::Input { conn, data: b.to_vec() }).await;
                Ok(())
            }
            Some(Ok(Message::Text(t))) => match parse_control(t.as_str()) {
                Ok(ClientMsg::Resize { cols, rows }) => {
                    session.send(Cmd::Resize { conn, cols, rows }).await;
                    Ok(())
                }
                Ok(ClientMsg::Ack { bytes }) => {
                    session.send(Cmd::Ack { conn, bytes }).await;
                    Ok(())
                }
                Ok(ClientMsg::Ping { id }) => {
                    match self.ws.send(Message::Text(ServerMsg::Pong { id }.to_json().into())).await {
                        Ok(()) => Ok(()),
                        Err(_) => Err(None),
                    }
                }
                Ok(ClientMsg::Auth { .. } | ClientMsg::Attach { .. }) => {
                    Err(Some(Violation::bad("already attached: auth and attach come once, first")))
                }
                Err(v) => Err(Some(v)),
            },
            Some(Ok(Message::Close(_))) => Err(None),
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => Ok(()),
        }
    }
}
