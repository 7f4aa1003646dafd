//! What a workspace writes to its terminal, through the server's `vt100` emulator and the
//! replay a re-attaching browser gets (`terminal::emulator::replay`). A compromised workspace
//! controls these bytes completely.
//!
//! Invariants: no panic (parsing, resizing, building the replay, and parsing the replay on a
//! fresh terminal of the same size); the replay is bounded (the screen and the scrollback
//! cannot grow it without limit); and the fresh terminal shows the same text, cursor and
//! alternate-screen state.
//!
//! Input: two bytes of size, then output chunks separated by `\x00\xff` (each separator
//! applies a resize taken from the two bytes after it).
#![no_main]

use std::num::NonZeroU16;

use libfuzzer_sys::fuzz_target;
use warren_server::terminal::emulator::replay;

const SCROLLBACK: usize = 200;

fn nz(v: u16) -> NonZeroU16 {
    NonZeroU16::new(v.max(1)).unwrap_or(NonZeroU16::MIN)
}

fn size(b: &[u8]) -> (u16, u16) {
    let cols = 2 + u16::from(b.first().copied().unwrap_or(78)) % 160;
    let rows = 1 + u16::from(b.get(1).copied().unwrap_or(23)) % 60;
    (cols, rows)
}

fuzz_target!(|data: &[u8]| {
    if data.len() < 2 {
        return;
    }
    let (cols, rows) = size(&data[..2]);
    let mut p = vt100::Parser::new(nz(rows), nz(cols), SCROLLBACK);
    let mut rest = &data[2..];
    loop {
        match rest.windows(2).position(|w| w == b"\x00\xff") {
            Some(i) => {
                p.process(&rest[..i]);
                let after = &rest[i + 2..];
                let (c, r) = size(after);
                p.screen_mut().set_size(nz(r), nz(c));
                rest = after.get(2..).unwrap_or(&[]);
            }
            None => {
                p.process(rest);
                break;
            }
        }
    }
    let bytes = replay(&mut p);
    let (rows, cols) = p.screen().size();
    let cells = (usize::from(rows.get()) + SCROLLBACK) * usize::from(cols.get());
    // Generous: every cell with a full set of attributes and a 4-byte character.
    assert!(bytes.len() <= 64 * cells + 4096, "replay of {} bytes for {cells} cells", bytes.len());
    let mut fresh = vt100::Parser::new(rows, cols, SCROLLBACK);
    fresh.process(&bytes);
    assert_eq!(fresh.screen().alternate_screen(), p.screen().alternate_screen(), "alternate screen");
    assert_eq!(fresh.screen().contents(), p.screen().contents(), "screen text after a replay");
    assert_eq!(fresh.screen().cursor_position(), p.screen().cursor_position(), "cursor after a replay");
});
