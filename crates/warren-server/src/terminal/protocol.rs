//! The terminal's WebSocket protocol (see `docs/terminal-protocol.md`): binary frames carry
//! terminal bytes both ways, text frames carry small JSON control messages.
//!
//! Everything a client can send is parsed here, into [`ClientMsg`] or a [`Violation`] that
//! names the close code and a reason. Nothing in this module panics on input.

use serde::{Deserialize, Serialize};

/// Longest text (control) frame a client may send, bytes.
pub const MAX_CONTROL_BYTES: usize = 4096;
/// Longest binary (terminal input) frame a client may send, bytes. Larger pastes are sent as
/// several frames.
pub const MAX_INPUT_FRAME: usize = 64 << 10;
/// Largest terminal, in columns and rows.
pub const MAX_COLS: u16 = 1000;
/// Largest terminal height.
pub const MAX_ROWS: u16 = 500;
/// Default size when a client gives none.
pub const DEFAULT_SIZE: (u16, u16) = (80, 24);

/// Close codes. 1000-1011 are the RFC 6455 ones; 4xxx mirror the HTTP statuses they resemble.
pub mod close {
    /// The shell exited (an `exit` message came first).
    pub const NORMAL: u16 = 1000;
    /// The server is shutting down.
    pub const GOING_AWAY: u16 = 1001;
    /// A frame was larger than the limit.
    pub const TOO_BIG: u16 = 1009;
    /// Malformed message, unknown type, a message out of order (e.g. binary before `attach`).
    pub const BAD_MESSAGE: u16 = 4400;
    /// No valid token (missing, invalid, expired) in the first message.
    pub const UNAUTHORIZED: u16 = 4401;
    /// The token is valid but names another user than the workspace's (and is not an admin's).
    pub const FORBIDDEN: u16 = 4403;
    /// No `auth` or `attach` within the time allowed.
    pub const TIMEOUT: u16 = 4408;
    /// Another connection attached to this session.
    pub const TAKEN_OVER: u16 = 4409;
    /// The session is gone: closed through the API, idle too long, or not re-attached in time.
    pub const GONE: u16 = 4410;
    /// Too many sessions for this user, or the user's rate limit.
    pub const TOO_MANY: u16 = 4429;
    /// The shell could not be started (the message says why).
    pub const INTERNAL: u16 = 4500;
}

/// A control message from the client.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum ClientMsg {
    /// The first message: the bearer token.
    Auth {
        /// A JWT, checked like the API's `Authorization: Bearer` header.
        token: String,
    },
    /// Open a new session (no `session`) or re-attach to one.
    Attach {
        /// The id of a session to re-attach to.
        #[serde(default)]
        session: Option<String>,
        /// Terminal width.
        #[serde(default)]
        cols: Option<u16>,
        /// Terminal height.
        #[serde(default)]
        rows: Option<u16>,
    },
    /// The terminal's size changed.
    Resize {
        /// Columns.
        cols: u16,
        /// Rows.
        rows: u16,
    },
    /// Liveness; answered with `pong` (echoing `id`).
    Ping {
        /// Echoed back.
        #[serde(default)]
        id: Option<u64>,
    },
    /// The client has processed `bytes` more bytes of terminal output (flow control).
    Ack {
        /// Bytes since the previous `ack`.
        bytes: u64,
    },
}

/// A control message to the client.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ServerMsg {
    /// Attached: the session's id (keep it to re-attach) and whether it was just started.
    /// With `new: false`, the screen and scrollback follow as binary frames.
    Session {
        /// Session id.
        id: String,
        /// The workspace owner.
        user: String,
        /// True for a fresh shell, false for a re-attach.
        new: bool,
        /// Output is paused when this many bytes are unacknowledged.
        window: u64,
    },
    /// The shell exited; the connection closes with 1000 next.
    Exit {
        /// Exit code (128 + signal when killed).
        code: i32,
        /// The signal that ended it, if any.
        #[serde(skip_serializing_if = "Option::is_none", default)]
        signal: Option<i32>,
    },
    /// Answer to `ping`.
    Pong {
        /// The ping's `id`.
        #[serde(skip_serializing_if = "Option::is_none", default)]
        id: Option<u64>,
    },
    /// Something went wrong; unless the code says otherwise a close follows.
    Error {
        /// Stable code: `unauthorized`, `forbidden`, `bad_message`, `session_not_found`,
        /// `too_many_sessions`, `rate_limited`, `taken_over`, `session_closed`, `idle_timeout`,
        /// `detached_timeout`, `shutting_down`, or an API error code (`not_found`, `conflict`, ...).
        code: String,
        /// What happened and what to do.
        message: String,
    },
}

impl ServerMsg {
    /// An `error` message.
    pub fn error(code: impl Into<String>, message: impl Into<String>) -> Self {
        ServerMsg::Error { code: code.into(), message: message.into() }
    }

    /// The JSON text of this message.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_else(|_| r#"{"type":"error","code":"internal","message":"?"}"#.into())
    }
}

/// Why a connection is being closed: a close code and a reason (at most 123 bytes, as a close
/// frame allows).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Violation {
    /// Close code (see [`close`]).
    pub code: u16,
    /// Reason, for people.
    pub reason: String,
}

impl Violation {
    /// A violation with `code` and `reason` (cut to 123 bytes on a character boundary).
    pub fn new(code: u16, reason: impl Into<String>) -> Self {
        let mut reason = reason.into();
        if reason.len() > 123 {
            let mut end = 123;
            while !reason.is_char_boundary(end) {
                end -= 1;
            }
            reason.truncate(end);
        }
        Self { code, reason }
    }

    /// 4400 with `reason`.
    pub fn bad(reason: impl Into<String>) -> Self {
        Self::new(close::BAD_MESSAGE, reason)
    }
}

/// Parses a text frame.
pub fn parse_control(text: &str) -> Result<ClientMsg, Violation> {
    if text.len() > MAX_CONTROL_BYTES {
        return Err(Violation::new(
            close::TOO_BIG,
            format!("control message of {} bytes; the limit is {MAX_CONTROL_BYTES}", text.len()),
        ));
    }
    let msg: ClientMsg = serde_json::from_str(text).map_err(|e| {
        let what = e.to_string();
        if what.contains("unknown variant") {
            Violation::bad(format!("unknown message type: {what}"))
        } else {
            Violation::bad(format!("malformed control message: {what}"))
        }
    })?;
    match &msg {
        ClientMsg::Resize { cols, rows } => check_size(*cols, *rows)?,
        ClientMsg::Attach { cols, rows, session } => {
            if cols.is_some() != rows.is_some() {
                return Err(Violation::bad("attach: give both cols and rows, or neither"));
            }
            if let (Some(c), Some(r)) = (cols, rows) {
                check_size(*c, *r)?;
            }
            if let Some(id) = session {
                check_session_id(id)?;
            }
        }
        ClientMsg::Auth { token } if token.is_empty() => return Err(Violation::bad("auth: the token is empty")),
        _ => {}
    }
    Ok(msg)
}

/// A terminal size within limits.
pub fn check_size(cols: u16, rows: u16) -> Result<(), Violation> {
    if !(2..=MAX_COLS).contains(&cols) || !(1..=MAX_ROWS).contains(&rows) {
        return Err(Violation::bad(format!(
            "terminal size {cols}x{rows} is out of range: cols 2..={MAX_COLS}, rows 1..={MAX_ROWS}"
        )));
    }
    Ok(())
}

/// Session ids are `t_` and 32 lowercase hex digits.
pub fn check_session_id(id: &str) -> Result<(), Violation> {
    let ok = id.len() == 34
        && id.starts_with("t_")
        && id.bytes().skip(2).all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
    if ok {
        Ok(())
    } else {
        Err(Violation::bad("attach: session ids look like t_ and 32 hex digits"))
    }
}

/// A new random session id.
pub fn new_session_id() -> Result<String, warren_core::Error> {
    let mut raw = [0u8; 16];
    getrandom::fill(&mut raw)
        .map_err(|e| warren_core::Error::Internal(format!("no randomness for a session id: {e}")))?;
    Ok(format!("t_{}", raw.iter().map(|b| format!("{b:02x}")).collect::<String>()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn well_formed_messages_parse() {
        assert_eq!(parse_control(r#"{"type":"auth","token":"a.b.c"}"#), Ok(ClientMsg::Auth { token: "a.b.c".into() }));
        assert_eq!(
            parse_control(r#"{"type":"attach"}"#),
            Ok(ClientMsg::Attach { session: None, cols: None, rows: None })
        );
        let id = new_session_id().expect("id");
        assert!(check_session_id(&id).is_ok(), "{id}");
        assert_eq!(
            parse_control(&format!(r#"{{"type":"attach","session":"{id}","cols":120,"rows":40}}"#)),
            Ok(ClientMsg::Attach { session: Some(id), cols: Some(120), rows: Some(40) })
        );
        assert_eq!(
            parse_control(r#"{"type":"resize","cols":100,"rows":30}"#),
            Ok(ClientMsg::Resize { cols: 100, rows: 30 })
        );
        assert_eq!(parse_control(r#"{"type":"ping"}"#), Ok(ClientMsg::Ping { id: None }));
        assert_eq!(parse_control(r#"{"type":"ping","id":7}"#), Ok(ClientMsg::Ping { id: Some(7) }));
        assert_eq!(parse_control(r#"{"type":"ack","bytes":65536}"#), Ok(ClientMsg::Ack { bytes: 65536 }));
    }

    #[test]
    fn malformed_messages_are_violations_with_codes() {
        let cases: &[(&str, u16, &str)] = &[
            ("", close::BAD_MESSAGE, "malformed"),
            ("not json", close::BAD_MESSAGE, "malformed"),
            ("[1,2]", close::BAD_MESSAGE, "malformed"),
            ("{}", close::BAD_MESSAGE, "malformed"),
            (r#"{"type":"launch_missiles"}"#, close::BAD_MESSAGE, "unknown message type"),
            (r#"{"type":"resize","cols":"80","rows":24}"#, close::BAD_MESSAGE, "malformed"),
            (r#"{"type":"resize","cols":80}"#, close::BAD_MESSAGE, "malformed"),
            (r#"{"type":"resize","cols":0,"rows":24}"#, close::BAD_MESSAGE, "out of range"),
            (r#"{"type":"resize","cols":70000,"rows":24}"#, close::BAD_MESSAGE, "malformed"),
            (r#"{"type":"resize","cols":80,"rows":24,"extra":1}"#, close::BAD_MESSAGE, "malformed"),
            (r#"{"type":"ack","bytes":-1}"#, close::BAD_MESSAGE, "malformed"),
            (r#"{"type":"auth","token":""}"#, close::BAD_MESSAGE, "empty"),
            (r#"{"type":"auth"}"#, close::BAD_MESSAGE, "malformed"),
            (r#"{"type":"attach","cols":80}"#, close::BAD_MESSAGE, "both"),
            (r#"{"type":"attach","session":"../../etc"}"#, close::BAD_MESSAGE, "session ids"),
            ("{\"type\":\"ping\"", close::BAD_MESSAGE, "malformed"),
        ];
        for (text, code, needle) in cases {
            let v = parse_control(text).expect_err(text);
            assert_eq!(v.code, *code, "{text}: {v:?}");
            assert!(v.reason.contains(needle), "{text}: {v:?}");
            assert!(v.reason.len() <= 123, "{text}: reason too long for a close frame");
        }
        let big = format!(r#"{{"type":"auth","token":"{}"}}"#, "x".repeat(MAX_CONTROL_BYTES));
        assert_eq!(parse_control(&big).expect_err("oversized").code, close::TOO_BIG);
    }

    #[test]
    fn reasons_are_cut_on_character_boundaries() {
        let v = Violation::new(close::BAD_MESSAGE, "é".repeat(100));
        assert!(v.reason.len() <= 123 && v.reason.chars().all(|c| c == 'é'), "{}", v.reason.len());
    }

    #[test]
    fn server_messages_serialise_as_documented() {
        let s = ServerMsg::Session { id: "t_1".into(), user: "u_1".into(), new: true, window: 262144 };
        assert_eq!(s.to_json(), r#"{"type":"session","id":"t_1","user":"u_1","new":true,"window":262144}"#);
        assert_eq!(ServerMsg::Exit { code: 0, signal: None }.to_json(), r#"{"type":"exit","code":0}"#);
        assert_eq!(ServerMsg::Pong { id: Some(3) }.to_json(), r#"{"type":"pong","id":3}"#);
        assert_eq!(
            ServerMsg::error("unauthorized", "bad token").to_json(),
            r#"{"type":"error","code":"unauthorized","message":"bad token"}"#
        );
    }
}
