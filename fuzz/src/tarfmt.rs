//! Writing tar streams byte by byte, hostile ones included (`..`, absolute names, any type
//! flag, sizes that lie), and repairing header checksums of mutated streams so the fuzzer's
//! changes reach the checks behind the tar parser's checksum test.

/// Size of a tar block.
pub const BLOCK: usize = 512;

fn round_up(n: usize) -> usize {
    n.div_ceil(BLOCK) * BLOCK
}

/// Writes `v` as a zero-padded octal number ending in NUL into `field`; too large values use
/// the GNU base-256 form (high bit set, big-endian).
fn put_num(field: &mut [u8], v: u64) {
    let digits = field.len() - 1;
    let text = format!("{v:0digits$o}");
    if text.len() <= digits {
        field[..digits].copy_from_slice(text.as_bytes());
        field[digits] = 0;
    } else {
        field.fill(0);
        let be = v.to_be_bytes();
        let n = field.len();
        field[n - 8..].copy_from_slice(&be);
        field[0] |= 0x80;
    }
}

/// Parses a numeric header field as the `tar` crate does (octal, or GNU base-256).
fn get_num(field: &[u8]) -> Option<u64> {
    if field.first().is_some_and(|b| b & 0x80 != 0) {
        let mut v: u64 = u64::from(field[0] & 0x7f);
        for b in &field[1..] {
            v = v.checked_mul(256)?.checked_add(u64::from(*b))?;
        }
        return Some(v);
    }
    let s = std::str::from_utf8(field).ok()?;
    let s = s.trim_matches(|c: char| c == '\0' || c == ' ');
    if s.is_empty() {
        return Some(0);
    }
    u64::from_str_radix(s, 8).ok()
}

/// Sets a header's checksum field from its other bytes.
pub fn set_checksum(h: &mut [u8]) {
    h[148..156].fill(b' ');
    let sum: u64 = h.iter().map(|b| u64::from(*b)).sum();
    let text = format!("{sum:06o}\0 ");
    h[148..156].copy_from_slice(&text.as_bytes()[..8]);
}

/// Walks a tar stream header by header (as far as it makes sense) and gives every header a
/// correct checksum.
pub fn fix_checksums(data: &mut [u8]) {
    let mut off = 0usize;
    while off + BLOCK <= data.len() {
        let h = &mut data[off..off + BLOCK];
        if h.iter().all(|b| *b == 0) {
            off += BLOCK;
            continue;
        }
        set_checksum(h);
        let size = get_num(&h[124..136]).unwrap_or(0);
        // Old GNU sparse headers may be followed by extension blocks.
        let mut extra = 0usize;
        if h[156] == b'S' && h[482] != 0 {
            extra = 1;
        }
        let Ok(size) = usize::try_from(size) else { return };
        let Some(next) = off.checked_add(BLOCK * (1 + extra)).and_then(|n| n.checked_add(round_up(size))) else {
            return;
        };
        off = next;
    }
}

/// A tar stream under construction.
#[derive(Debug, Default)]
pub struct TarWriter {
    out: Vec<u8>,
}

/// One header's fields.
#[derive(Debug, Clone, Copy)]
pub struct Header<'a> {
    /// Name bytes (cut to 100).
    pub name: &'a [u8],
    /// Type flag (`b'0'` file, `b'5'` directory, `b'2'` symlink, ...).
    pub typeflag: u8,
    /// Mode bits as stored (may include setuid and friends).
    pub mode: u64,
    /// Declared size.
    pub size: u64,
    /// Link name bytes (cut to 100).
    pub link: &'a [u8],
    /// Modification time.
    pub mtime: u64,
    /// Put `ustar\0` + `00` (POSIX) instead of the GNU magic.
    pub posix: bool,
}

impl TarWriter {
    /// An empty stream.
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends a header block.
    pub fn header(&mut self, h: &Header<'_>) {
        let mut b = [0u8; BLOCK];
        let n = h.name.len().min(100);
        b[..n].copy_from_slice(&h.name[..n]);
        put_num(&mut b[100..108], h.mode);
        put_num(&mut b[108..116], 0);
        put_num(&mut b[116..124], 0);
        put_num(&mut b[124..136], h.size);
        put_num(&mut b[136..148], h.mtime);
        b[156] = h.typeflag;
        let n = h.link.len().min(100);
        b[157..157 + n].copy_from_slice(&h.link[..n]);
        if h.posix {
            b[257..263].copy_from_slice(b"ustar\0");
            b[263..265].copy_from_slice(b"00");
        } else {
            b[257..265].copy_from_slice(b"ustar  \0");
        }
        set_checksum(&mut b);
        self.out.extend_from_slice(&b);
    }

    /// Appends data, padded to a whole block.
    pub fn data(&mut self, d: &[u8]) {
        self.out.extend_from_slice(d);
        let pad = round_up(d.len()) - d.len();
        self.out.extend(std::iter::repeat_n(0u8, pad));
    }

    /// A GNU long-name (`b'L'`) or long-link (`b'K'`) record for the next header.
    pub fn gnu_long(&mut self, kind: u8, value: &[u8]) {
        let mut v = value.to_vec();
        v.push(0);
        self.header(&Header {
            name: b"././@LongLink",
            typeflag: kind,
            mode: 0o644,
            size: v.len() as u64,
            link: b"",
            mtime: 0,
            posix: false,
        });
        self.data(&v);
    }

    /// A PAX extended header (`b'x'`, for the next entry) or global one (`b'g'`).
    pub fn pax(&mut self, kind: u8, records: &[(&[u8], &[u8])]) {
        let mut body = Vec::new();
        for (k, v) in records {
            // "LEN KEY=VALUE\n" where LEN counts itself.
            let rest = k.len() + v.len() + 3;
            let mut len = rest + 1;
            while len.to_string().len() + rest != len {
                len = len.to_string().len() + rest;
            }
            body.extend_from_slice(len.to_string().as_bytes());
            body.push(b' ');
            body.extend_from_slice(k);
            body.push(b'=');
            body.extend_from_slice(v);
            body.push(b'\n');
        }
        self.header(&Header {
            name: b"pax_header",
            typeflag: kind,
            mode: 0o644,
            size: body.len() as u64,
            link: b"",
            mtime: 0,
            posix: true,
        });
        self.data(&body);
    }

    /// Raw bytes (a mutated block, garbage between entries).
    pub fn raw(&mut self, d: &[u8]) {
        self.out.extend_from_slice(d);
    }

    /// The end-of-archive marker (two zero blocks) and the stream.
    pub fn finish(mut self) -> Vec<u8> {
        self.out.extend(std::iter::repeat_n(0u8, 2 * BLOCK));
        self.out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_tar_crate_reads_what_we_write() {
        let mut w = TarWriter::new();
        w.header(&Header { name: b"a.txt", typeflag: b'0', mode: 0o644, size: 2, link: b"", mtime: 1, posix: false });
        w.data(b"hi");
        w.gnu_long(b'L', &[b'x'; 300]);
        w.header(&Header { name: b"ignored", typeflag: b'5', mode: 0o755, size: 0, link: b"", mtime: 1, posix: false });
        w.pax(b'x', &[(b"path", b"p/q")]);
        w.header(&Header { name: b"x", typeflag: b'2', mode: 0o777, size: 0, link: b"a.txt", mtime: 1, posix: true });
        let mut bytes = w.finish();
        fix_checksums(&mut bytes);
        let mut a = tar::Archive::new(&bytes[..]);
        let names: Vec<Vec<u8>> =
            a.entries().expect("entries").map(|e| e.expect("entry").path_bytes().into_owned()).collect();
        assert_eq!(names, vec![b"a.txt".to_vec(), vec![b'x'; 300], b"p/q".to_vec()]);
    }
}
