//! Snapshot archives from raw bytes: `warren_snapshot::scan` (import) and `extract_to`
//! (restore) on hostile input. See `warren_fuzz::archive` for the invariants (no panic, scan
//! and extract agree, nothing written outside the staging directory, no debris, no setuid).
//!
//! Input: the first byte chooses the form. Even: the rest is a tar stream; its header
//! checksums are repaired (so mutations get past the tar parser's checksum test) and it is
//! compressed as a snapshot is. Odd: the rest is given as it is, as the compressed stream (zstd
//! frame parsing, window and bomb limits).
#![no_main]

use libfuzzer_sys::fuzz_target;
use warren_fuzz::{archive, tarfmt};

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else { return };
    if mode & 1 == 1 {
        archive::check(rest);
    } else {
        let mut tar = rest.to_vec();
        tarfmt::fix_checksums(&mut tar);
        archive::check(&archive::zst(&tar));
    }
});
