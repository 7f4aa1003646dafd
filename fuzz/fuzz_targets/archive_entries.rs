//! Snapshot archives built entry by entry from structured input, so the fuzzer spends its
//! time on what matters: names with `..`, `.`, empty and absolute parts, long names (GNU
//! long-name records and PAX `path`), every entry type, symlinks into and out of the tree
//! followed by entries through them, duplicates, setuid modes and sizes that lie. The same
//! invariants as the `archive` target (`warren_fuzz::archive`).
#![no_main]

use libfuzzer_sys::arbitrary::{self, Arbitrary};
use libfuzzer_sys::fuzz_target;
use warren_fuzz::archive;
use warren_fuzz::tarfmt::{Header, TarWriter};

#[derive(Arbitrary, Debug)]
enum Part {
    A,
    B,
    Link,
    Dot,
    DotDot,
    Empty,
    Long,
    NonUtf8,
    Outside,
    Canary,
    Stage,
    Raw(Vec<u8>),
}

impl Part {
    fn bytes(&self) -> Vec<u8> {
        match self {
            Part::A => b"a".to_vec(),
            Part::B => b"b".to_vec(),
            Part::Link => b"link".to_vec(),
            Part::Dot => b".".to_vec(),
            Part::DotDot => b"..".to_vec(),
            Part::Empty => Vec::new(),
            Part::Long => vec![b'n'; 200],
            Part::NonUtf8 => b"\xff\xfe".to_vec(),
            Part::Outside => b"outside".to_vec(),
            Part::Canary => b"canary".to_vec(),
            Part::Stage => b"stage".to_vec(),
            Part::Raw(v) => v.clone(),
        }
    }
}

#[derive(Arbitrary, Debug)]
struct Name {
    absolute: bool,
    parts: Vec<Part>,
    trailing_slash: bool,
}

impl Name {
    fn bytes(&self) -> Vec<u8> {
        let mut out = Vec::new();
        if self.absolute {
            out.push(b'/');
        }
        let parts: Vec<Vec<u8>> = self.parts.iter().map(Part::bytes).collect();
        out.extend(parts.join(&b'/'));
        if self.trailing_slash {
            out.push(b'/');
        }
        out
    }
}

#[derive(Arbitrary, Debug)]
enum Type {
    File,
    Dir,
    Symlink,
    Hardlink,
    Char,
    Block,
    Fifo,
    Contiguous,
    GnuSparse,
    Other(u8),
}

impl Type {
    fn flag(&self) -> u8 {
        match self {
            Type::File => b'0',
            Type::Dir => b'5',
            Type::Symlink => b'2',
            Type::Hardlink => b'1',
            Type::Char => b'3',
            Type::Block => b'4',
            Type::Fifo => b'6',
            Type::Contiguous => b'7',
            Type::GnuSparse => b'S',
            Type::Other(b) => *b,
        }
    }
}

#[derive(Arbitrary, Debug)]
enum NameForm {
    /// In the header (cut to 100 bytes).
    Header,
    /// In a GNU long-name record.
    GnuLong,
    /// In a PAX `path` record.
    Pax,
}

#[derive(Arbitrary, Debug)]
struct Entry {
    name: Name,
    form: NameForm,
    kind: Type,
    mode: u16,
    link: Name,
    link_long: bool,
    data: Vec<u8>,
    /// Declared size minus the data's real length.
    size_lie: i8,
    mtime: u32,
    posix: bool,
    pax_extra: Option<(Vec<u8>, Vec<u8>)>,
}

#[derive(Arbitrary, Debug)]
struct Input {
    entries: Vec<Entry>,
    pax_global: Option<(Vec<u8>, Vec<u8>)>,
    trailing: Vec<u8>,
}

fuzz_target!(|input: Input| {
    let mut w = TarWriter::new();
    if let Some((k, v)) = &input.pax_global {
        w.pax(b'g', &[(k, v)]);
    }
    for e in input.entries.iter().take(64) {
        let name = e.name.bytes();
        let link = e.link.bytes();
        let mut pax: Vec<(&[u8], &[u8])> = Vec::new();
        if let NameForm::Pax = e.form {
            pax.push((b"path", &name));
        }
        if let Some((k, v)) = &e.pax_extra {
            pax.push((k, v));
        }
        if !pax.is_empty() {
            w.pax(b'x', &pax);
        }
        if let NameForm::GnuLong = e.form {
            w.gnu_long(b'L', &name);
        }
        if e.link_long {
            w.gnu_long(b'K', &link);
        }
        let size = (e.data.len() as i64 + i64::from(e.size_lie)).max(0) as u64;
        w.header(&Header {
            name: &name,
            typeflag: e.kind.flag(),
            mode: u64::from(e.mode),
            size,
            link: &link,
            mtime: u64::from(e.mtime),
            posix: e.posix,
        });
        w.data(&e.data);
    }
    let mut tar = w.finish();
    tar.extend_from_slice(&input.trailing);
    archive::check(&archive::zst(&tar));
});
