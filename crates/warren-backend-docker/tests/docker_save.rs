//! `docker save` archives flattened into a root filesystem (`save::flatten_docker_save`), on
//! archives built here by hand (no docker needed): both layouts, whiteouts, a zstd layer, and
//! hostile archives that must not write outside the destination.

use std::collections::BTreeSet;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};
use tar::{EntryType, Header};
use warren_backend_docker::image::{detect, SourceKind};
use warren_backend_docker::save::{flatten_docker_save, DockerSave, FlattenedImage};

const MTIME: u64 = 1_600_000_000;

/// A layer member.
enum E<'a> {
    Dir(&'a str, u32),
    File(&'a str, &'a [u8], u32),
    Sym(&'a str, &'a str),
    Hard(&'a str, &'a str),
}

/// A header with `name` and `link` written straight into their fields: tar's setters refuse the
/// `..` and absolute names hostile archives have.
fn header(name: &str, link: &str, ty: EntryType, size: u64, mode: u32) -> Header {
    let mut h = Header::new_gnu();
    {
        let g = h.as_gnu_mut().expect("gnu header");
        g.name[..name.len()].copy_from_slice(name.as_bytes());
        g.linkname[..link.len()].copy_from_slice(link.as_bytes());
    }
    h.set_entry_type(ty);
    h.set_size(size);
    h.set_mode(mode);
    h.set_mtime(MTIME);
    h.set_uid(1234);
    h.set_gid(2345);
    h.set_cksum();
    h
}

fn layer(entries: &[E]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for e in entries {
        let (h, data): (Header, &[u8]) = match e {
            E::Dir(p, m) => (header(p, "", EntryType::Directory, 0, *m), b""),
            E::File(p, d, m) => (header(p, "", EntryType::Regular, d.len() as u64, *m), d),
            E::Sym(p, t) => (header(p, t, EntryType::Symlink, 0, 0o777), b""),
            E::Hard(p, t) => (header(p, t, EntryType::Link, 0, 0o644), b""),
        };
        b.append(&h, data).expect("append");
    }
    b.into_inner().expect("finish the layer")
}

/// A member of the outer archive.
enum Outer {
    Data(String, Vec<u8>),
    Link(String, String),
}

fn outer(path: &Path, members: &[Outer]) {
    let mut b = tar::Builder::new(std::fs::File::create(path).expect("create the archive"));
    for m in members {
        match m {
            Outer::Data(name, data) => b
                .append(&header(name, "", EntryType::Regular, data.len() as u64, 0o644), data.as_slice())
                .expect("append"),
            Outer::Link(name, to) => {
                b.append(&header(name, to, EntryType::Symlink, 0, 0o777), &b""[..]).expect("append")
            }
        }
    }
    b.finish().expect("finish the archive");
}

#[derive(Clone, Copy, Debug)]
enum Layout {
    /// `<id>/layer.tar`, `manifest.json` last (docker < 25).
    Classic,
    /// `blobs/sha256/<hex>`, `manifest.json` first (docker >= 25).
    Oci,
}

fn hex(data: &[u8]) -> String {
    Sha256::digest(data).iter().map(|b| format!("{b:02x}")).collect()
}

/// A `docker save` archive of `images` (tags, layers) at `path`.
fn save(path: &Path, layout: Layout, images: &[(&[&str], Vec<Vec<u8>>)]) {
    let mut members = Vec::new();
    let mut seen = BTreeSet::new();
    let mut manifest = Vec::new();
    for (tags, layers) in images {
        let mut names = Vec::new();
        for l in layers {
            let name = match layout {
                Layout::Classic => format!("{}/layer.tar", hex(l)),
                Layout::Oci => format!("blobs/sha256/{}", hex(l)),
            };
            if seen.insert(name.clone()) {
                members.push(Outer::Data(name.clone(), l.clone()));
            }
            names.push(name);
        }
        let config = serde_json::to_vec(&serde_json::json!({"architecture": "amd64", "os": "linux"})).expect("json");
        let config_name = match layout {
            Layout::Classic => format!("{}.json", hex(&config)),
            Layout::Oci => format!("blobs/sha256/{}", hex(&config)),
        };
        if seen.insert(config_name.clone()) {
            members.push(Outer::Data(config_name.clone(), config));
        }
        manifest.push(serde_json::json!({"Config": config_name, "RepoTags": tags, "Layers": names}));
    }
    let manifest = Outer::Data("manifest.json".into(), serde_json::to_vec(&manifest).expect("json"));
    match layout {
        Layout::Classic => members.push(manifest),
        Layout::Oci => {
            members.insert(0, manifest);
            members.insert(0, Outer::Data("oci-layout".into(), br#"{"imageLayoutVersion":"1.0.0"}"#.to_vec()));
        }
    }
    outer(path, &members);
}

/// A scratch area: `jail/dest` is unpacked into, `jail/outside/victim` must never change, and
/// nothing else may appear in `jail`.
struct Jail {
    _tmp: tempfile::TempDir,
    archive: PathBuf,
    jail: PathBuf,
    dest: PathBuf,
    outside: PathBuf,
}

impl Jail {
    fn new() -> Self {
        let tmp = tempfile::tempdir().expect("tempdir");
        let jail = tmp.path().join("jail");
        let outside = jail.join("outside");
        std::fs::create_dir_all(&outside).expect("mkdir");
        std::fs::write(outside.join("victim"), "victim").expect("victim");
        Self { archive: tmp.path().join("saved.tar"), dest: jail.join("dest"), jail, outside, _tmp: tmp }
    }

    fn flatten(&self, tag: Option<&str>) -> warren_core::Result<FlattenedImage> {
        flatten_docker_save(&self.archive, &self.dest, tag)
    }

    /// Nothing was written outside `dest`.
    fn assert_contained(&self) {
        let names = |d: &Path| -> BTreeSet<String> {
            std::fs::read_dir(d)
                .expect("list")
                .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
                .collect()
        };
        let jail = names(&self.jail);
        assert!(jail.iter().all(|n| n == "dest" || n == "outside"), "the jail holds {jail:?}");
        assert_eq!(names(&self.outside), BTreeSet::from(["victim".to_owned()]));
        assert_eq!(std::fs::read_to_string(self.outside.join("victim")).expect("victim"), "victim");
        assert_eq!(std::fs::metadata(self.outside.join("victim")).expect("victim").nlink(), 1, "hard-linked");
        let parent = self.jail.parent().expect("parent");
        assert_eq!(names(parent), BTreeSet::from(["jail".to_owned(), "saved.tar".to_owned()]));
    }
}

fn walk(root: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(root).expect("list") {
        let p = e.expect("entry").path();
        out.push(p.clone());
        if std::fs::symlink_metadata(&p).expect("lstat").is_dir() {
            walk(&p, out);
        }
    }
}

fn am_root() -> bool {
    let probe = tempfile::NamedTempFile::new().expect("tempfile");
    probe.as_file().metadata().expect("stat").uid() == 0
}

fn mode(p: &Path) -> u32 {
    std::fs::symlink_metadata(p).expect("lstat").permissions().mode() & 0o7777
}

#[test]
fn layers_apply_with_whiteouts_in_both_layouts() {
    let lower = layer(&[
        E::Dir("etc", 0o755),
        E::File("etc/keep", b"keep", 0o640),
        E::File("etc/gone", b"gone", 0o644),
        E::Dir("opq", 0o750),
        E::File("opq/old", b"old", 0o644),
        E::Dir("opq/sub", 0o755),
        E::File("opq/sub/deep", b"deep", 0o644),
        E::Dir("gonedir", 0o755),
        E::File("gonedir/f", b"f", 0o644),
        E::Dir("bin", 0o755),
        E::File("bin/sh", b"#!shell", 0o755),
        E::Sym("bin/link", "sh"),
        E::Dir("ro", 0o555),
        E::File("ro/inside", b"inside", 0o444),
    ]);
    let upper = layer(&[
        // Added before the opaque marker of the same layer: still kept.
        E::File("opq/new", b"new", 0o600),
        E::File("opq/.wh..wh..opq", b"", 0o644),
        E::File("etc/.wh.gone", b"", 0o644),
        E::File(".wh.gonedir", b"", 0o644),
        E::File("./etc/added", b"added", 0o644),
        E::Hard("etc/hard", "etc/keep"),
        E::File("ro/.wh..wh.plnk", b"", 0o644),
    ]);
    for layout in [Layout::Classic, Layout::Oci] {
        let j = Jail::new();
        save(&j.archive, layout, &[(&["img:1"], vec![lower.clone(), upper.clone()])]);
        assert_eq!(detect(&j.archive).expect("detect"), SourceKind::DockerSave);
        let got = j.flatten(None).unwrap_or_else(|e| panic!("{layout:?}: {e}"));
        assert_eq!(got, FlattenedImage { tags: vec!["img:1".into()], layers: 2 }, "{layout:?}");
        let d = &j.dest;
        let read = |p: &str| std::fs::read_to_string(d.join(p)).unwrap_or_else(|e| panic!("{layout:?} {p}: {e}"));
        assert_eq!(read("etc/keep"), "keep");
        assert_eq!(read("etc/added"), "added");
        assert_eq!(read("opq/new"), "new");
        assert_eq!(read("ro/inside"), "inside");
        assert_eq!(read("bin/sh"), "#!shell");
        for gone in ["etc/gone", "opq/old", "opq/sub", "gonedir"] {
            assert!(std::fs::symlink_metadata(d.join(gone)).is_err(), "{layout:?}: {gone} was whited out");
        }
        assert_eq!(std::fs::read_link(d.join("bin/link")).expect("symlink"), Path::new("sh"));
        assert_eq!(mode(&d.join("etc/keep")), 0o640);
        assert_eq!(mode(&d.join("opq/new")), 0o600);
        assert_eq!(mode(&d.join("opq")), 0o750);
        assert_eq!(mode(&d.join("ro")), 0o555, "a read-only directory is filled, then made read-only");
        assert_eq!(mode(&d.join("bin/sh")), 0o755);
        let keep = std::fs::metadata(d.join("etc/keep")).expect("stat");
        assert_eq!(keep.mtime(), MTIME as i64);
        assert_eq!(std::fs::metadata(d.join("etc/hard")).expect("stat").ino(), keep.ino(), "a hard link");
        if am_root() {
            assert_eq!((keep.uid(), keep.gid()), (1234, 2345), "owners kept");
        }
        let mut all = Vec::new();
        walk(d, &mut all);
        let wh: Vec<_> = all.iter().filter(|p| p.to_string_lossy().contains(".wh.")).collect();
        assert!(wh.is_empty(), "{layout:?}: whiteout files in the result: {wh:?}");
        j.assert_contained();
    }
}

#[test]
fn a_duplicate_classic_layer_is_a_symlink_member() {
    let j = Jail::new();
    let l = layer(&[E::File("hello", b"hi", 0o644)]);
    let manifest = serde_json::json!([{"Config": "c.json", "RepoTags": ["dup:1"], "Layers": ["bbb/layer.tar"]}]);
    outer(
        &j.archive,
        &[
            Outer::Data("aaa/layer.tar".into(), l),
            Outer::Link("bbb/layer.tar".into(), "../aaa/layer.tar".into()),
            Outer::Data("c.json".into(), b"{}".to_vec()),
            Outer::Data("manifest.json".into(), serde_json::to_vec(&manifest).expect("json")),
        ],
    );
    j.flatten(None).expect("flatten");
    assert_eq!(std::fs::read_to_string(j.dest.join("hello")).expect("hello"), "hi");
}

#[test]
fn zstd_layers_are_read_and_gzip_ones_refused_clearly() {
    let j = Jail::new();
    let plain = layer(&[E::Dir("data", 0o755), E::File("data/a", b"from the plain layer", 0o644)]);
    let zst = zstd::encode_all(layer(&[E::File("data/b", b"from the zstd layer", 0o644)]).as_slice(), 3).expect("zstd");
    save(&j.archive, Layout::Oci, &[(&["z:1"], vec![plain, zst])]);
    j.flatten(Some("z:1")).expect("flatten");
    assert_eq!(std::fs::read_to_string(j.dest.join("data/a")).expect("a"), "from the plain layer");
    assert_eq!(std::fs::read_to_string(j.dest.join("data/b")).expect("b"), "from the zstd layer");

    let j = Jail::new();
    let gz = [&[0x1f, 0x8b, 0x08, 0x00][..], &[0u8; 60][..]].concat();
    let name = format!("blobs/sha256/{}", hex(&gz));
    save(&j.archive, Layout::Oci, &[(&["gz:1"], vec![gz])]);
    let e = j.flatten(None).expect_err("a gzip layer").to_string();
    assert!(e.contains("gzip") && e.contains(&name) && e.contains("docker save"), "{e}");
    assert!(!j.dest.join("data").exists());
    j.assert_contained();
}

#[test]
fn absolute_and_dotdot_member_paths_are_refused() {
    // Were they honoured, each would land in the jail (seen by `assert_contained`), not elsewhere on the host.
    for bad in ["../x", "{outside}/abs-x", "a/../../x", "./../outside/victim"] {
        let j = Jail::new();
        let bad = &*bad.replace("{outside}", j.outside.to_str().expect("utf-8"));
        save(
            &j.archive,
            Layout::Classic,
            &[(&["h:1"], vec![layer(&[E::Dir("a", 0o755), E::File(bad, b"pwned", 0o644)])])],
        );
        let e = j.flatten(None).expect_err(bad).to_string();
        assert!(e.contains(bad.trim_start_matches("./")) && e.contains("refused"), "{bad}: {e}");
        j.assert_contained();
    }
}

#[test]
fn symlinks_planted_by_a_layer_are_resolved_inside_dest() {
    let j = Jail::new();
    let out = j.outside.to_str().expect("utf-8").to_owned();
    let victim = format!("{out}/victim");
    // Were the symlinks followed on the host, every write would land in `outside` (seen by
    // `assert_contained`), never elsewhere on the host.
    let (via_root, via_climb) = (format!("root{out}/via-root"), format!("climb{out}/via-climb"));
    let lower = layer(&[
        E::Sym("abs", &out),
        E::Sym("root", "/"),
        E::Sym("climb", "../../../../../../../../../../../../../../../.."),
        E::Sym("f", &victim),
        // Planted and written through in the same layer.
        E::Sym("same", &out),
        E::File("same/same-layer", b"same", 0o644),
    ]);
    let upper = layer(&[
        E::File("abs/pwned", b"pwned", 0o644),
        E::File(&via_root, b"via-root", 0o644),
        E::File(&via_climb, b"via-climb", 0o644),
        E::File("f", b"replaced", 0o644),
        E::File("abs/.wh.victim", b"", 0o644),
    ]);
    save(&j.archive, Layout::Oci, &[(&["s:1"], vec![lower, upper])]);
    j.flatten(None).expect("flatten");
    j.assert_contained();
    let inside = j.dest.join(out.trim_start_matches('/'));
    assert_eq!(std::fs::read_to_string(inside.join("pwned")).expect("pwned"), "pwned");
    assert_eq!(std::fs::read_to_string(inside.join("same-layer")).expect("same"), "same");
    assert_eq!(std::fs::read_to_string(inside.join("via-root")).expect("via-root"), "via-root");
    assert_eq!(std::fs::read_to_string(inside.join("via-climb")).expect("via-climb"), "via-climb");
    let f = std::fs::symlink_metadata(j.dest.join("f")).expect("f");
    assert!(f.is_file(), "the symlink was replaced, not written through");
    assert_eq!(std::fs::read_to_string(j.dest.join("f")).expect("f"), "replaced");
}

#[test]
fn hard_links_must_stay_inside_dest() {
    // The last one goes through a symlink to `outside` planted by the same layer.
    for target in ["/etc/passwd", "../outside/victim", "s/victim"] {
        let j = Jail::new();
        let out = j.outside.to_str().expect("utf-8");
        save(&j.archive, Layout::Classic, &[(&["l:1"], vec![layer(&[E::Sym("s", out), E::Hard("h", target)])])]);
        let e = j.flatten(None).expect_err(target).to_string();
        assert!(e.contains("hard link") && e.contains(target), "{target}: {e}");
        assert!(std::fs::symlink_metadata(j.dest.join("h")).is_err(), "{target}");
        j.assert_contained();
    }
}

#[test]
fn a_manifest_naming_a_missing_layer_is_refused_before_writing() {
    let j = Jail::new();
    let l = layer(&[E::File("first", b"1", 0o644)]);
    let manifest =
        serde_json::json!([{"Config": "c.json", "RepoTags": ["m:1"], "Layers": ["aaa/layer.tar", "nope/layer.tar"]}]);
    outer(
        &j.archive,
        &[
            Outer::Data("aaa/layer.tar".into(), l),
            Outer::Data("manifest.json".into(), serde_json::to_vec(&manifest).expect("json")),
        ],
    );
    let e = j.flatten(None).expect_err("a missing layer").to_string();
    assert!(e.contains("nope/layer.tar"), "{e}");
    assert!(!j.dest.exists(), "nothing written");
    j.assert_contained();
}

#[test]
fn several_images_need_a_tag() {
    let j = Jail::new();
    let a = layer(&[E::File("which", b"a", 0o644)]);
    let b = layer(&[E::File("which", b"b", 0o644)]);
    save(&j.archive, Layout::Oci, &[(&["a:1"], vec![a]), (&["b:1", "b:latest"], vec![b])]);
    let save = DockerSave::open(&j.archive).expect("open");
    assert_eq!(save.images(), vec![vec!["a:1".to_owned()], vec!["b:1".to_owned(), "b:latest".to_owned()]]);
    for want in [None, Some("c:1")] {
        let e = j.flatten(want).expect_err("no choice").to_string();
        assert!(e.contains("2 images") && e.contains("a:1") && e.contains("b:1, b:latest"), "{e}");
        assert!(!j.dest.exists());
    }
    let got = j.flatten(Some("b:latest")).expect("flatten b");
    assert_eq!(got.tags, vec!["b:1".to_owned(), "b:latest".to_owned()]);
    assert_eq!(std::fs::read_to_string(j.dest.join("which")).expect("which"), "b");
}

#[test]
fn oversized_or_missing_manifests_are_refused() {
    let j = Jail::new();
    let big = vec![b' '; (warren_backend_docker::save::MAX_MANIFEST_BYTES + 1) as usize];
    outer(&j.archive, &[Outer::Data("manifest.json".into(), big)]);
    let e = j.flatten(None).expect_err("too big").to_string();
    assert!(e.contains("manifest.json") && e.contains("bytes"), "{e}");

    outer(&j.archive, &[Outer::Data("etc/passwd".into(), b"root:x:0:0::/:/bin/sh\n".to_vec())]);
    let e = j.flatten(None).expect_err("no manifest").to_string();
    assert!(e.contains("no manifest.json"), "{e}");
    assert!(!j.dest.exists());
}
