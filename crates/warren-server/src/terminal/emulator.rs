//! The terminal state kept per session, so that a re-attaching client gets the screen and the
//! scrollback back: a `vt100` emulator fed with everything the shell writes.
//!
//! Output reaches the client first; the emulator catches up on a blocking worker thread, so
//! a slow emulator never slows the terminal down. The emulator parses some 15-25 MB/s, less
//! than a pseudo-terminal can produce; when its backlog grows past [`Emulator::skip_at`] it
//! drops the oldest part of the backlog and keeps the newest [`Emulator::keep`] bytes (cut at a
//! line end). `keep` is at least twice what the screen and scrollback can show, so for text
//! output the replay is the same as without skipping (what was dropped would have scrolled out of
//! the scrollback anyway); only a mode change inside the dropped part (colours, the alternate
//! screen) can be missed. [`Emulator::skipped`] counts the dropped bytes.
//!
//! [`replay`] turns the emulator's state into bytes that rebuild it on an empty terminal:
//! a reset, the scrollback lines, the screen (with colours and the cursor), the alternate
//! screen if a full-screen program is running, and the input modes.

use std::collections::VecDeque;
use std::num::NonZeroU16;
use std::sync::{Arc, Mutex, MutexGuard};

/// Lines of scrollback the emulator keeps.
pub const SCROLLBACK_LINES: usize = 2000;

enum Item {
    Data(Vec<u8>),
    Resize(u16, u16),
}

#[derive(Default)]
struct Pending {
    items: VecDeque<Item>,
    bytes: usize,
    /// A worker is running (or scheduled).
    worker: bool,
    skipped: u64,
    /// The latest size, for the skipping rule.
    size: (u16, u16),
}

/// A session's emulator and the output it has yet to process.
pub struct Emulator {
    /// Lock order: `parser` before `pending`.
    parser: Mutex<vt100::Parser>,
    pending: Mutex<Pending>,
    scrollback: usize,
}

impl std::fmt::Debug for Emulator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Emulator").field("scrollback", &self.scrollback).finish_non_exhaustive()
    }
}

fn nz(v: u16) -> NonZeroU16 {
    NonZeroU16::new(v.max(1)).unwrap_or(NonZeroU16::MIN)
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Emulator {
    /// An emulator of `cols` x `rows` with `scrollback` lines of history.
    pub fn new(cols: u16, rows: u16, scrollback: usize) -> Arc<Self> {
        Arc::new(Self {
            parser: Mutex::new(vt100::Parser::new(nz(rows), nz(cols), scrollback)),
            pending: Mutex::new(Pending { size: (cols, rows), ..Pending::default() }),
            scrollback,
        })
    }

    /// Bytes kept when the backlog is cut: twice what screen and scrollback can hold, at least
    /// 256 KiB, at most 8 MiB.
    pub fn keep(&self, cols: u16, rows: u16) -> usize {
        (usize::from(cols) * (usize::from(rows) + self.scrollback) * 2).clamp(256 << 10, 8 << 20)
    }

    /// The backlog size at which it is cut.
    pub fn skip_at(&self, cols: u16, rows: u16) -> usize {
        self.keep(cols, rows) * 4
    }

    /// Bytes dropped unprocessed so far.
    pub fn skipped(&self) -> u64 {
        lock(&self.pending).skipped
    }

    /// Queues output; starts a worker to process it unless one runs.
    pub fn push(self: &Arc<Self>, data: &[u8]) {
        if data.is_empty() {
            return;
        }
        let start = {
            let mut p = lock(&self.pending);
            p.items.push_back(Item::Data(data.to_vec()));
            p.bytes += data.len();
            let (cols, rows) = p.size;
            if p.bytes > self.skip_at(cols, rows) {
                let keep = self.keep(cols, rows);
                cut(&mut p, keep);
            }
            !std::mem::replace(&mut p.worker, true)
        };
        if start {
            let me = self.clone();
            // The runtime's blocking pool; without a runtime (unit tests), a thread.
            match tokio::runtime::Handle::try_current() {
                Ok(h) => {
                    h.spawn_blocking(move || me.work());
                }
                Err(_) => {
                    std::thread::spawn(move || me.work());
                }
            }
        }
    }

    /// Queues a resize, in order with the output.
    pub fn resize(&self, cols: u16, rows: u16) {
        let mut p = lock(&self.pending);
        p.items.push_back(Item::Resize(cols, rows));
        p.size = (cols, rows);
    }

    fn work(&self) {
        loop {
            let mut parser = lock(&self.parser);
            let batch = {
                let mut p = lock(&self.pending);
                if p.items.is_empty() {
                    p.worker = false;
                    return;
                }
                p.bytes = 0;
                std::mem::take(&mut p.items)
            };
            apply(&mut parser, batch);
        }
    }

    /// Processes everything queued, then returns the bytes that rebuild the terminal (see
    /// [`replay`]). Blocking: call it off the async runtime.
    pub fn catch_up_and_replay(&self) -> Vec<u8> {
        let mut parser = lock(&self.parser);
        let batch = {
            let mut p = lock(&self.pending);
            p.bytes = 0;
            std::mem::take(&mut p.items)
        };
        apply(&mut parser, batch);
        replay(&mut parser)
    }

    /// Processes everything queued and runs `f` on the emulator (tests and diagnostics).
    pub fn with_parser<T>(&self, f: impl FnOnce(&mut vt100::Parser) -> T) -> T {
        let mut parser = lock(&self.parser);
        let batch = {
            let mut p = lock(&self.pending);
            p.bytes = 0;
            std::mem::take(&mut p.items)
        };
        apply(&mut parser, batch);
        f(&mut parser)
    }
}

fn apply(parser: &mut vt100::Parser, batch: VecDeque<Item>) {
    for item in batch {
        match item {
            Item::Data(d) => parser.process(&d),
            Item::Resize(c, r) => parser.set_size(nz(r), nz(c)),
        }
    }
}

/// Drops the oldest queued output until at most about `keep` bytes are left, starting after a
/// line end where there is one near the cut. Resizes in the dropped part are kept.
fn cut(p: &mut Pending, keep: usize) {
    let mut drop_bytes = p.bytes.saturating_sub(keep);
    let mut kept = VecDeque::with_capacity(p.items.len());
    let mut last_resize = None;
    let mut dropped = 0usize;
    for item in std::mem::take(&mut p.items) {
        match item {
            Item::Resize(c, r) if drop_bytes > 0 => last_resize = Some((c, r)),
            Item::Data(d) if drop_bytes > 0 => {
                if d.len() <= drop_bytes {
                    drop_bytes -= d.len();
                    dropped += d.len();
                } else {
                    // Start the kept part after the next line end within 4 KiB, if any.
                    let mut at = drop_bytes;
                    if let Some(nl) = d[at..].iter().take(4096).position(|b| *b == b'\n') {
                        at += nl + 1;
                    }
                    dropped += at;
                    drop_bytes = 0;
                    if at < d.len() {
                        if let Some((c, r)) = last_resize.take() {
                            kept.push_back(Item::Resize(c, r));
                        }
                        kept.push_back(Item::Data(d[at..].to_vec()));
                    }
                }
            }
            other => {
                if let Some((c, r)) = last_resize.take() {
                    kept.push_back(Item::Resize(c, r));
                }
                kept.push_back(other);
            }
        }
    }
    if let Some((c, r)) = last_resize {
        kept.push_back(Item::Resize(c, r));
    }
    p.items = kept;
    p.bytes -= dropped;
    p.skipped += dropped as u64;
    tracing::debug!(dropped, kept = p.bytes, "terminal emulator fell behind: skipped the oldest output");
}

/// Bytes that rebuild `parser`'s terminal on an empty one of the same size: `ESC c` (reset),
/// the scrollback as lines, enough line feeds to push them into the new terminal's history,
/// the screen, then, if a full-screen program has the alternate screen, that screen, and the
/// input modes (application cursor and keypad, bracketed paste, mouse reporting).
pub fn replay(parser: &mut vt100::Parser) -> Vec<u8> {
    let mut out = String::from("\x1bc");
    if parser.screen().alternate_screen() {
        // The primary screen as it is beneath the full-screen program: a copy switched back.
        let (rows, cols) = parser.screen().size();
        let mut primary = vt100::Parser::new(rows, cols, 0);
        *primary.screen_mut() = parser.screen().clone();
        primary.process(b"\x1b[?47l");
        write_primary(&mut primary, &mut out);
        out.push_str("\x1b[?1049h");
        out.push_str(&parser.screen().contents_formatted());
    } else {
        write_primary(parser, &mut out);
    }
    out.push_str(&parser.screen().input_mode_formatted());
    out.into_bytes()
}

fn write_primary(p: &mut vt100::Parser, out: &mut String) {
    let (rows, cols) = p.screen().size();
    let rows = usize::from(rows.get());
    let total = p.screen().scrollback_len();
    let mut offset = total;
    let mut last_wrapped = false;
    while offset > 0 {
        p.screen_mut().set_scrollback(offset);
        let take = offset.min(rows);
        let screen = p.screen();
        for (i, row) in screen.rows_formatted(0, cols.get()).take(take).enumerate() {
            out.push_str("\x1b[m");
            out.push_str(&row);
            last_wrapped = u16::try_from(i).is_ok_and(|i| screen.row_wrapped(i));
            if !last_wrapped {
                out.push_str("\r\n");
            }
        }
        offset -= take;
    }
    p.screen_mut().set_scrollback(0);
    if total > 0 {
        // The last scrollback lines are on the new terminal's screen still: scroll them into
        // its history before drawing the screen over it (one line feed more when the last one
        // wraps onto the screen, as it ended without a line end).
        out.push_str(&"\n".repeat(rows.saturating_sub(1) + usize::from(last_wrapped)));
    }
    out.push_str(&p.screen().contents_formatted());
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every line the parser holds: scrollback oldest first, then the screen.
    fn all_lines(p: &mut vt100::Parser) -> Vec<String> {
        let rows = usize::from(p.screen().size().0.get());
        let cols = p.screen().size().1.get();
        let total = p.screen().scrollback_len();
        let mut lines = Vec::new();
        let mut offset = total;
        while offset > 0 {
            p.screen_mut().set_scrollback(offset);
            let take = offset.min(rows);
            lines.extend(p.screen().rows(0, cols).take(take));
            offset -= take;
        }
        p.screen_mut().set_scrollback(0);
        lines.extend(p.screen().rows(0, cols));
        lines
    }

    fn fresh(rows: u16, cols: u16) -> vt100::Parser {
        vt100::Parser::new(nz(rows), nz(cols), SCROLLBACK_LINES)
    }

    fn assert_same(a: &mut vt100::Parser, b: &mut vt100::Parser) {
        assert_eq!(a.screen().contents_formatted(), b.screen().contents_formatted(), "screen with attributes");
        assert_eq!(a.screen().cursor_position(), b.screen().cursor_position(), "cursor");
        assert_eq!(a.screen().alternate_screen(), b.screen().alternate_screen(), "alternate screen");
        assert_eq!(a.screen().input_mode_formatted(), b.screen().input_mode_formatted(), "input modes");
        assert_eq!(a.screen().scrollback_len(), b.screen().scrollback_len(), "scrollback length");
        assert_eq!(all_lines(a), all_lines(b), "scrollback and screen lines");
    }

    fn session_output() -> Vec<u8> {
        let mut out = Vec::new();
        for i in 0..300 {
            out.extend_from_slice(
                format!("\x1b[1;3{}mline {i}\x1b[0m plain é 日本 {}\r\n", i % 8, "x".repeat(i % 97)).as_bytes(),
            );
        }
        // A wrapped line longer than two rows, then a prompt with the cursor after it.
        out.extend_from_slice("w".repeat(170).as_bytes());
        out.extend_from_slice(b"\r\n\x1b[32muser@ws\x1b[0m:~$ echo hi");
        out
    }

    #[test]
    fn replay_rebuilds_screen_scrollback_and_cursor() {
        let mut a = fresh(24, 80);
        a.process(&session_output());
        assert!(a.screen().scrollback_len() > 100);
        let bytes = replay(&mut a);
        let mut b = fresh(24, 80);
        b.process(&bytes);
        assert_same(&mut a, &mut b);
        assert_eq!(a.screen().scrollback(), 0, "the source is back at the live view");
    }

    #[test]
    fn replay_of_an_empty_and_a_short_terminal() {
        for input in [&b""[..], b"$ ", b"one\r\ntwo\r\n$ \x1b[?2004h\x1b[?1h\x1b="] {
            let mut a = fresh(10, 40);
            a.process(input);
            let mut b = fresh(10, 40);
            b.process(&replay(&mut a));
            assert_same(&mut a, &mut b);
        }
    }

    #[test]
    fn replay_restores_a_full_screen_program_and_what_is_beneath() {
        let mut a = fresh(24, 80);
        a.process(&session_output());
        // vim-like: alternate screen, clear, draw, mouse and bracketed paste on.
        a.process(b"\x1b[?1049h\x1b[H\x1b[2J\x1b[7m status \x1b[m\x1b[5;10Hhello\x1b[?1000h\x1b[?2004h");
        let mut b = fresh(24, 80);
        b.process(&replay(&mut a));
        assert!(b.screen().alternate_screen());
        assert_same(&mut a, &mut b);
        // Leaving the program shows the same primary screen on both.
        a.process(b"\x1b[?1049l");
        b.process(b"\x1b[?1049l");
        assert_eq!(a.screen().contents(), b.screen().contents());
        assert_eq!(a.screen().cursor_position(), b.screen().cursor_position());
    }

    #[test]
    fn the_worker_processes_everything_in_order_with_resizes() {
        let emu = Emulator::new(80, 24, SCROLLBACK_LINES);
        let mut reference = fresh(24, 80);
        for i in 0..2000 {
            let line = format!("row {i}\r\n");
            emu.push(line.as_bytes());
            reference.process(line.as_bytes());
            if i == 1000 {
                emu.resize(100, 30);
                reference.set_size(nz(30), nz(100));
            }
        }
        let mut replayed = fresh(30, 100);
        replayed.process(&emu.catch_up_and_replay());
        emu.with_parser(|p| assert_same(p, &mut reference));
        assert_same(&mut reference, &mut replayed);
        assert_eq!(emu.skipped(), 0);
    }

    #[test]
    fn a_flood_is_cut_to_the_newest_output_at_a_line_end() {
        let emu = Emulator::new(80, 24, 100);
        let mut p = lock(&emu.pending);
        let keep = emu.keep(80, 24);
        for i in 0..(keep / 10) * 5 {
            p.items.push_back(Item::Data(format!("{i:09}\n").into_bytes()));
            p.bytes += 10;
        }
        p.items.push_back(Item::Resize(90, 20));
        p.items.push_back(Item::Data(b"tail\n".to_vec()));
        p.bytes += 5;
        let before = p.bytes;
        cut(&mut p, keep);
        assert!(p.bytes <= keep && p.bytes + 10 > keep, "{} kept of {before}", p.bytes);
        assert_eq!(p.skipped as usize + p.bytes, before);
        match p.items.front() {
            Some(Item::Data(d)) => assert_eq!(d.len(), 10, "starts at a line start"),
            _ => panic!("starts with data"),
        }
        assert!(matches!(p.items.iter().rev().nth(1), Some(Item::Resize(90, 20))), "the resize is kept");
    }
}
