//! Hostile archives, one test each. Every archive is planted in the store with a manifest
//! that matches it (so the checksum passes and the extraction defences are what stop it),
//! then restored over a workspace. Each test asserts the specific rejection, that the
//! workspace is untouched, that nothing outside the staging directory was written (the
//! sentinel directory and the whole temp tree outside the store are compared), that no staging
//! debris is left, and that `import` refuses the same file for the same reason.

mod common;

use std::fs;
use std::time::Duration;

use common::*;
use tar::EntryType;
use warren_snapshot::{ArchiveLimits, ExtractOptions, ImportOptions, Rejection, SnapshotError, Snapshots};

/// Restores `archive` over a populated workspace and checks the outcome as described above.
fn assert_rejected(archive: Vec<u8>, limits: ArchiveLimits, expect: impl Fn(&Rejection) -> bool) {
    let env = Env::new();
    let u = user("u_1");
    let ws = env.ws("u_1");
    fs::write(ws.join("precious"), b"user data").expect("write");
    fs::create_dir(ws.join("sub")).expect("mkdir");
    fs::write(ws.join("sub/notes"), b"more data").expect("write");
    let id = snap("hostile");
    plant_snapshot(&env.state, &u, &id, &archive);
    let before = env.outside_snapshots();

    let snaps = Snapshots::local(&env.state);
    let opts = ExtractOptions { owner: Some((2_000_001, 2_000_001)), limits, ..ExtractOptions::default() };
    let err = snaps.restore(&u, &id, &ws, &opts).expect_err("a hostile archive must be rejected");
    let reason = err.rejection().unwrap_or_else(|| panic!("expected a rejection, got: {err}"));
    assert!(expect(reason), "unexpected rejection: {err}");
    let msg = err.to_string();
    assert!(msg.contains("rejected") && msg.contains("nothing was restored"), "clear message: {msg}");
    assert_eq!(warren_core::Error::from(err).code(), "invalid_request");

    // Nothing changed outside the store: workspace, sentinel, and no staging debris.
    assert_eq!(env.outside_snapshots(), before, "the restore wrote outside its staging directory or left debris");
    assert_eq!(fs::read(env.sentinel.join("canary")).expect("canary"), b"untouched");
    assert_eq!(fs::read(ws.join("precious")).expect("precious"), b"user data");

    // Import checks the same rules without writing any tree.
    let file = env.dir.path().join("hostile.tar.zst");
    fs::write(&file, &archive).expect("write");
    let ierr = snaps
        .import(&u, &snap("imported"), &file, &ImportOptions { limits, ..ImportOptions::default() })
        .expect_err("import must refuse a hostile archive");
    let ireason = ierr.rejection().unwrap_or_else(|| panic!("import: expected a rejection, got: {ierr}"));
    assert!(expect(ireason), "import: unexpected rejection: {ierr}");
    assert!(snaps.get(&u, &snap("imported")).is_err(), "no snapshot from a refused import");
    assert_eq!(snaps.cleanup_orphans(Duration::ZERO).expect("cleanup"), 0, "refused import left no debris");
}

fn defaults() -> ArchiveLimits {
    ArchiveLimits::default()
}

#[test]
fn path_traversal() {
    let mut t = RawTar::new();
    t.file(b"ok.txt", b"fine");
    t.file(b"../escaped.txt", b"pwned");
    assert_rejected(t.zst(), defaults(), |r| *r == Rejection::PathTraversal);
    let mut t = RawTar::new();
    t.dir(b"a/");
    t.file(b"a/../../../sentinel/canary", b"pwned");
    assert_rejected(t.zst(), defaults(), |r| *r == Rejection::PathTraversal);
}

#[test]
fn absolute_path() {
    let mut t = RawTar::new();
    t.file(b"/tmp/warren-absolute-path-test", b"pwned");
    assert_rejected(t.zst(), defaults(), |r| *r == Rejection::AbsolutePath);
    assert!(!std::path::Path::new("/tmp/warren-absolute-path-test").exists());
}

#[test]
fn symlink_then_write_through_it() {
    // A symlink to a directory inside the archive, then a file "through" it.
    let mut t = RawTar::new();
    t.dir(b"real/");
    t.symlink(b"link", b"real");
    t.file(b"link/file", b"through the link");
    assert_rejected(t.zst(), defaults(), |r| *r == Rejection::ThroughSymlink);
    // A symlink to ".", then a file through it.
    let mut t = RawTar::new();
    t.symlink(b"dot", b".");
    t.file(b"dot/file", b"x");
    assert_rejected(t.zst(), defaults(), |r| *r == Rejection::ThroughSymlink);
}

#[test]
fn symlink_pointing_outside_then_followed_by_a_later_entry() {
    // The link's target is the real sentinel directory of the test environment; entries
    // after it try to write into it and to overwrite the canary.
    let env = Env::new();
    let target = env.sentinel.as_os_str().as_encoded_bytes().to_vec();
    for later in [&b"escape/pwned"[..], b"escape/canary", b"escape/sub/deeper"] {
        let mut t = RawTar::new();
        t.symlink(b"escape", &target);
        t.file(later, b"pwned");
        assert_rejected(t.zst(), defaults(), |r| *r == Rejection::ThroughSymlink);
    }
    // A directory entry through it, too.
    let mut t = RawTar::new();
    t.symlink(b"escape", &target);
    t.dir(b"escape/newdir/");
    assert_rejected(t.zst(), defaults(), |r| *r == Rejection::ThroughSymlink);
    assert_eq!(fs::read_dir(&env.sentinel).expect("ls").count(), 1);
    // A relative symlink climbing out, then a file through it.
    let mut t = RawTar::new();
    t.symlink(b"up", b"../../../../../../../../tmp");
    t.file(b"up/warren-pwned", b"x");
    assert_rejected(t.zst(), defaults(), |r| *r == Rejection::ThroughSymlink);
    assert!(!std::path::Path::new("/tmp/warren-pwned").exists());
}

#[test]
fn file_over_a_symlink_does_not_follow_it() {
    // A symlink to the sentinel's canary, then a regular file of the same name: refused as a
    // duplicate (O_EXCL never follows the link), the canary is untouched.
    let env = Env::new();
    let target = env.sentinel.join("canary").into_os_string().into_encoded_bytes();
    let mut t = RawTar::new();
    t.symlink(b"canary", &target);
    t.file(b"canary", b"overwritten through the link");
    assert_rejected(t.zst(), defaults(), |r| *r == Rejection::Duplicate);
    assert_eq!(fs::read(env.sentinel.join("canary")).expect("canary"), b"untouched");
}

#[test]
fn hardlink_to_outside() {
    let mut t = RawTar::new();
    t.link(EntryType::Link, b"passwd", b"/etc/passwd");
    assert_rejected(t.zst(), defaults(), |r| *r == Rejection::Hardlink);
    // Hard links are refused even when they stay inside.
    let mut t = RawTar::new();
    t.file(b"a", b"data");
    t.link(EntryType::Link, b"b", b"a");
    assert_rejected(t.zst(), defaults(), |r| *r == Rejection::Hardlink);
}

#[test]
fn device_node() {
    for ty in [EntryType::Char, EntryType::Block] {
        let mut t = RawTar::new();
        let mut h = t.header(b"dev/sda", ty, 0o666, 0);
        h.set_device_major(8).expect("major");
        h.set_device_minor(0).expect("minor");
        t.append(h, b"");
        assert_rejected(t.zst(), defaults(), |r| *r == Rejection::DeviceNode);
    }
}

#[test]
fn fifo() {
    let mut t = RawTar::new();
    let h = t.header(b"pipe", EntryType::Fifo, 0o644, 0);
    t.append(h, b"");
    assert_rejected(t.zst(), defaults(), |r| *r == Rejection::Fifo);
}

#[test]
fn setuid_file() {
    let mut t = RawTar::new();
    t.file_mode(b"suid-shell", b"#!/bin/sh\n", 0o4755);
    assert_rejected(t.zst(), defaults(), |r| matches!(r, Rejection::SetuidSetgid { mode: 0o4755 }));
    let mut t = RawTar::new();
    let h = t.header(b"sgid-dir/", EntryType::Directory, 0o2775, 0);
    t.append(h, b"");
    assert_rejected(t.zst(), defaults(), |r| matches!(r, Rejection::SetuidSetgid { .. }));
}

#[test]
fn bomb_by_size() {
    // Real data: 2 MiB of zeros against a 1 MiB cap.
    let mut t = RawTar::new();
    t.file(b"zeros", &vec![0u8; 2 << 20]);
    let limits = ArchiveLimits { max_unpacked_bytes: Some(1 << 20), ..defaults() };
    assert_rejected(t.zst(), limits, |r| matches!(r, Rejection::TooLarge { cap, .. } if *cap == 1 << 20));
    // Declared only: a header claiming 6 GiB, caught before any data is read, with the
    // default cap (max(512 MiB, 20 x archive)).
    let mut t = RawTar::new();
    let h = t.header(b"huge", EntryType::Regular, 0o644, 6 << 30);
    t.append_raw(h, &[0u8; 4096]);
    assert_rejected(t.zst(), defaults(), |r| matches!(r, Rejection::TooLarge { declared, .. } if *declared == 6 << 30));
    // Many files that add up.
    let mut t = RawTar::new();
    for i in 0..5 {
        t.file(format!("part{i}").as_bytes(), &vec![1u8; 300 * 1024]);
    }
    let limits = ArchiveLimits { max_unpacked_bytes: Some(1 << 20), ..defaults() };
    assert_rejected(t.zst(), limits, |r| matches!(r, Rejection::TooLarge { .. }));
}

#[test]
fn bomb_by_entry_count() {
    let mut t = RawTar::new();
    for i in 0..101 {
        t.file(format!("f{i}").as_bytes(), b"");
    }
    let limits = ArchiveLimits { max_entries: 100, ..defaults() };
    assert_rejected(t.zst(), limits, |r| *r == Rejection::TooManyEntries { max: 100 });
}

#[test]
fn deep_paths() {
    let deep = "a/".repeat(200) + "file";
    let mut t = RawTar::new();
    t.file(deep.as_bytes(), b"deep");
    assert_rejected(t.zst(), defaults(), |r| matches!(r, Rejection::TooDeep { depth: 201, max: 128 }));
}

#[test]
fn very_long_names() {
    let mut t = RawTar::new();
    t.file("n".repeat(300).as_bytes(), b"x");
    assert_rejected(t.zst(), defaults(), |r| *r == Rejection::NameTooLong { len: 300 });
    let long = ("p".repeat(200) + "/").repeat(25);
    let mut t = RawTar::new();
    t.file(long.as_bytes(), b"x");
    assert_rejected(t.zst(), defaults(), |r| matches!(r, Rejection::PathTooLong { len: 5025 }));
}

#[test]
fn metadata_bomb_in_a_long_name_record() {
    // A GNU long-name record of 8 MiB (the `tar` crate would read it whole into memory).
    let mut t = RawTar::new();
    t.long(b'L', &vec![b'a'; 8 << 20]);
    t.file(b"x", b"x");
    assert_rejected(t.zst(), defaults(), |r| matches!(r, Rejection::MetadataTooLarge { .. }));
}

#[test]
fn duplicate_entries() {
    let mut t = RawTar::new();
    t.file(b"same", b"first");
    t.file(b"same", b"second");
    assert_rejected(t.zst(), defaults(), |r| *r == Rejection::Duplicate);
    let mut t = RawTar::new();
    t.dir(b"d/");
    t.dir(b"d/");
    assert_rejected(t.zst(), defaults(), |r| *r == Rejection::Duplicate);
    let mut t = RawTar::new();
    t.dir(b"d/");
    t.file(b"d", b"file over dir");
    assert_rejected(t.zst(), defaults(), |r| *r == Rejection::Duplicate);
}

#[test]
fn sparse_file_with_huge_declared_size() {
    // A GNU sparse entry storing 512 bytes but declaring a 4 GiB file.
    let mut t = RawTar::new();
    let mut h = t.header(b"sparse", EntryType::GNUSparse, 0o644, 512);
    let real: u64 = 4 << 30;
    {
        let g = h.as_gnu_mut().expect("gnu header");
        octal(&mut g.realsize, real);
        octal(&mut g.sparse[0].offset, real - 512);
        octal(&mut g.sparse[0].numbytes, 512);
    }
    t.append(h, &[7u8; 512]);
    assert_rejected(t.zst(), defaults(), |r| matches!(r, Rejection::TooLarge { declared, .. } if *declared == real));
}

#[test]
fn pax_sparse_is_refused() {
    let mut t = RawTar::new();
    t.pax(&[("GNU.sparse.major", b"1"), ("GNU.sparse.minor", b"0"), ("GNU.sparse.realsize", b"99999999999")]);
    t.file(b"GNUSparseFile.0/data", &[0u8; 512]);
    assert_rejected(t.zst(), defaults(), |r| matches!(r, Rejection::UnsupportedFormat(_)));
}

#[test]
fn non_utf8_names() {
    let mut t = RawTar::new();
    t.file(b"caf\xe9.txt", b"latin-1 name");
    assert_rejected(t.zst(), defaults(), |r| *r == Rejection::NonUtf8Name);
    // Also through a PAX path record.
    let mut t = RawTar::new();
    t.pax(&[("path", b"ok/\xff\xfe")]);
    t.file(b"placeholder", b"x");
    assert_rejected(t.zst(), defaults(), |r| *r == Rejection::NonUtf8Name);
}

#[test]
fn pax_path_override_cannot_escape() {
    // The ustar name is harmless; the PAX record (which wins) traverses.
    let mut t = RawTar::new();
    t.pax(&[("path", b"../../pax-escape")]);
    t.file(b"harmless", b"x");
    assert_rejected(t.zst(), defaults(), |r| *r == Rejection::PathTraversal);
}

#[test]
fn root_entry_must_be_a_directory() {
    let mut t = RawTar::new();
    t.symlink(b"./", b"/etc");
    t.file(b"passwd", b"x");
    assert_rejected(t.zst(), defaults(), |r| *r == Rejection::RootNotDirectory);
}

#[test]
fn entries_under_a_file_are_refused() {
    // Whether the file is already on disk when its "child" arrives (parent is not a directory)
    // or not yet (the file then collides with the directory made for the child), it fails.
    let mut t = RawTar::new();
    t.file(b"plain", b"x");
    t.file(b"plain/child", b"x");
    assert_rejected(t.zst(), defaults(), |r| matches!(r, Rejection::ParentNotDirectory | Rejection::Duplicate));
    // Through a symlink to a file: refused as a write through a symlink.
    let mut t = RawTar::new();
    t.file(b"plain", b"x");
    t.symlink(b"zzz", b"plain");
    t.file(b"zzz/child", b"x");
    assert_rejected(t.zst(), defaults(), |r| *r == Rejection::ThroughSymlink);
}

#[test]
fn zstd_window_beyond_the_cap_is_refused() {
    // A frame that needs a 1 GiB window (zstd --long=30): refused before any allocation.
    let mut t = RawTar::new();
    t.file(b"a", &noise(64 * 1024, 3));
    let tar_bytes = t.tar();
    let mut enc = zstd::stream::write::Encoder::new(Vec::new(), 3).expect("encoder");
    enc.window_log(30).expect("window_log");
    enc.long_distance_matching(true).expect("ldm");
    enc.set_pledged_src_size(None).expect("no pledge");
    std::io::Write::write_all(&mut enc, &tar_bytes).expect("compress");
    let archive = enc.finish().expect("finish");
    let env = Env::new();
    let staging = env.dir.path().join("staging");
    let e = warren_snapshot::extract_to(&archive[..], &staging, &ExtractOptions::default()).expect_err("window");
    assert!(matches!(e, SnapshotError::Corrupt(_)), "{e}");
    assert!(!staging.exists());
    // The same archive is fine when the cap allows it.
    let limits = ArchiveLimits { window_log_max: 31, ..ArchiveLimits::default() };
    warren_snapshot::extract_to(&archive[..], &staging, &ExtractOptions { limits, ..ExtractOptions::default() })
        .expect("a larger window cap accepts it");
    assert_eq!(fs::read(staging.join("a")).expect("read"), noise(64 * 1024, 3));
}

#[test]
fn trailing_garbage_after_the_archive_is_refused() {
    let mut t = RawTar::new();
    t.file(b"a", b"a");
    let mut tar_bytes = t.tar();
    tar_bytes.extend(std::iter::repeat_n(0x41u8, 2 << 20));
    let archive = zstd::encode_all(&tar_bytes[..], 3).expect("zstd");
    let env = Env::new();
    let staging = env.dir.path().join("staging");
    let e = warren_snapshot::extract_to(&archive[..], &staging, &ExtractOptions::default()).expect_err("garbage");
    assert!(matches!(e, SnapshotError::Corrupt(_)), "{e}");
    assert!(!staging.exists());
}

#[test]
fn a_benign_archive_passes_the_same_harness() {
    // Control: the harness itself does not reject good archives (implicit parents, `./`
    // prefixes, a root entry, a PAX global header, a symlink pointing anywhere).
    let mut t = RawTar::new();
    let h = t.header(b"pax_global_header", EntryType::XGlobalHeader, 0o644, 0);
    t.append(h, b"");
    t.dir(b"./");
    t.file(b"./implicit/parent/file", b"x");
    t.dir(b"./implicit/");
    t.symlink(b"./py", b"/usr/bin/python3");
    t.file_mode(b"./sticky", b"x", 0o1755);
    let archive = t.zst();
    let env = Env::new();
    let staging = env.dir.path().join("staging");
    let stats = warren_snapshot::extract_to(&archive[..], &staging, &ExtractOptions::default()).expect("benign");
    assert_eq!((stats.files, stats.dirs, stats.symlinks), (2, 1, 1));
    assert_eq!(fs::read_link(staging.join("py")).expect("link"), std::path::Path::new("/usr/bin/python3"));
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        fs::metadata(staging.join("sticky")).expect("stat").permissions().mode() & 0o7777,
        0o755,
        "sticky bit dropped"
    );
    assert_eq!(fs::metadata(staging.join("implicit/parent")).expect("stat").permissions().mode() & 0o7777, 0o755);
}
