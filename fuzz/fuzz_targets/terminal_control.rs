//! The browser terminal's WebSocket text frames: `terminal::protocol::parse_control`, the one
//! parser of everything a client sends besides terminal bytes, and the close-reason cutter.
//!
//! Invariants: no panic; a frame over 4 KiB is 1009 whatever it holds; any other refusal is
//! 4400 with a reason a close frame can carry (at most 123 bytes, a prefix on a character
//! boundary); an accepted message obeys the protocol's rules (sizes in range, cols and rows
//! together, session ids `t_` + 32 hex digits, a non-empty token).
#![no_main]

use libfuzzer_sys::fuzz_target;
use warren_server::terminal::protocol::{
    check_session_id, close, parse_control, ClientMsg, Violation, MAX_COLS, MAX_CONTROL_BYTES, MAX_ROWS,
};

fn size_ok(cols: u16, rows: u16) -> bool {
    (2..=MAX_COLS).contains(&cols) && (1..=MAX_ROWS).contains(&rows)
}

fuzz_target!(|data: &[u8]| {
    // WebSocket text frames are UTF-8 (the WebSocket layer refuses anything else).
    let text = String::from_utf8_lossy(data);
    match parse_control(&text) {
        Err(v) => {
            let want = if text.len() > MAX_CONTROL_BYTES { close::TOO_BIG } else { close::BAD_MESSAGE };
            assert_eq!(v.code, want, "{text:?} -> {v:?}");
            assert!(!v.reason.is_empty() && v.reason.len() <= 123, "{text:?} -> reason of {} bytes", v.reason.len());
        }
        Ok(msg) => {
            assert!(text.len() <= MAX_CONTROL_BYTES);
            match msg {
                ClientMsg::Auth { token } => assert!(!token.is_empty()),
                ClientMsg::Attach { session, cols, rows } => {
                    assert_eq!(cols.is_some(), rows.is_some(), "{text:?}");
                    if let (Some(c), Some(r)) = (cols, rows) {
                        assert!(size_ok(c, r), "{text:?}: attach with {c}x{r}");
                    }
                    if let Some(id) = session {
                        assert!(check_session_id(&id).is_ok(), "{text:?}");
                        assert!(id.len() == 34 && id.starts_with("t_"), "{text:?}: session id {id:?}");
                        assert!(id[2..].bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)));
                    }
                }
                ClientMsg::Resize { cols, rows } => assert!(size_ok(cols, rows), "{text:?}: resize to {cols}x{rows}"),
                ClientMsg::Ping { .. } | ClientMsg::Ack { .. } => {}
            }
        }
    }
    // Close reasons: any text, cut to what a close frame holds, on a character boundary.
    let v = Violation::new(close::BAD_MESSAGE, text.clone());
    assert!(v.reason.len() <= 123 && text.starts_with(&v.reason));
    assert!(text.len() <= 123 || v.reason.len() > 119, "cut more than a character's width: {}", v.reason.len());
});
