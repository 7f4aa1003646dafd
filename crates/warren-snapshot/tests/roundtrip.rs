//! Snapshots on local storage: round trips, the catalogue, retention, export/import, interop
//! with GNU tar and zstd, corrupt archives, recovery.

mod common;

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::*;
use warren_snapshot::{
    archive_key, extract_to, manifest_key, ArchiveOptions, CreateOptions, ExtractOptions, ImportOptions, LocalStorage,
    Manifest, SnapshotError, Snapshots, Storage, Trigger,
};

const OWNER: (u32, u32) = (2_000_123, 2_000_123);

fn ropts() -> ExtractOptions {
    ExtractOptions { owner: Some(OWNER), ..ExtractOptions::default() }
}

fn copts(trigger: Trigger) -> CreateOptions {
    CreateOptions { trigger, backend: "dir".into(), ..CreateOptions::default() }
}

#[test]
fn round_trip_is_byte_exact() {
    let env = Env::new();
    let u = user("u_123");
    let ws = env.ws("u_123");
    rich_tree(&ws);
    // Things that are not archived: a FIFO and a socket (skipped, counted).
    nix::unistd::mkfifo(&ws.join("fifo"), nix::sys::stat::Mode::from_bits_truncate(0o600)).expect("mkfifo");
    let _sock = std::os::unix::net::UnixListener::bind(ws.join("sock")).expect("bind socket");
    let mut before = tree(&ws);
    before.retain(|p, _| p != Path::new("fifo") && p != Path::new("sock"));

    let snaps = Snapshots::local(&env.state);
    let m = snaps.create(&u, &snap("snap_001"), &ws, &copts(Trigger::Manual)).expect("create");
    assert_eq!(m.skipped_entries, 2, "fifo and socket skipped");
    assert_eq!(m.entry_count as usize, before.len());
    let files = before.values().filter(|n| matches!(n, Node::File { .. })).count();
    assert_eq!(m.file_count as usize, files);
    let bytes: usize = before.values().map(|n| if let Node::File { data, .. } = n { data.len() } else { 0 }).sum();
    assert_eq!(m.unpacked_bytes as usize, bytes);
    assert_eq!(m.backend, "dir");
    let archive = env.state.join("snapshots/u_123/snap_001.tar.zst");
    assert_eq!(fs::metadata(&archive).expect("archive").len(), m.archive_bytes);
    assert_eq!(sha256_hex(&fs::read(&archive).expect("read")), m.sha256);
    assert!(env.state.join("snapshots/u_123/snap_001.json").exists());

    // Change everything, then restore.
    fs::write(ws.join("README.md"), b"changed").expect("write");
    fs::remove_dir_all(ws.join("src")).expect("rm");
    fs::write(ws.join("new-file"), b"new").expect("write");
    let stats = snaps.restore(&u, &snap("snap_001"), &ws, &ropts()).expect("restore");
    assert_eq!(stats.files as usize, files);
    let after = tree(&ws);
    assert_eq!(after, before, "restored tree is byte-exact: contents, modes, mtimes, symlinks");
    // Ownership: everything belongs to the workspace uid, the root is 0700.
    let root_meta = fs::metadata(&ws).expect("stat ws");
    assert_eq!((root_meta.uid(), root_meta.gid(), root_meta.mode() & 0o7777), (OWNER.0, OWNER.1, 0o700));
    for p in after.keys() {
        let md = fs::symlink_metadata(ws.join(p)).expect("lstat");
        assert_eq!((md.uid(), md.gid()), OWNER, "{}", p.display());
    }
    // No debris beside the workspace.
    let names: Vec<_> = fs::read_dir(&env.workspaces).expect("ls").map(|e| e.expect("e").file_name()).collect();
    assert_eq!(names, vec![std::ffi::OsString::from("u_123")]);
}

/// Files are created with their final mode and chmodded only when the umask stripped bits:
/// modes the umask takes bits from come back exact too, for small files (written by the pool)
/// and large ones (streamed by the stream thread), and so do modes it leaves alone.
#[test]
fn modes_the_umask_strips_are_restored_exactly() {
    nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o027));
    let env = Env::new();
    let u = user("u_umask");
    let ws = env.ws("u_umask");
    let cases: [(&str, usize, u32); 8] = [
        ("small_666", 10, 0o666),
        ("small_777", 10, 0o777),
        ("small_604", 10, 0o604),
        ("small_600", 10, 0o600),
        ("small_000", 10, 0o000),
        ("large_777", 3 << 20, 0o777),
        ("large_646", (1 << 20) + 1, 0o646),
        ("large_640", 2 << 20, 0o640),
    ];
    for (i, (name, len, mode)) in cases.iter().enumerate() {
        let path = ws.join(name);
        fs::write(&path, noise(*len, i as u64)).expect("write");
        chmod(&path, *mode);
        set_mtime(&path, 1_600_000_000 + i as i64);
    }
    let before = tree(&ws);
    let snaps = Snapshots::local(&env.state);
    snaps.create(&u, &snap("s1"), &ws, &copts(Trigger::Manual)).expect("create");
    fs::remove_dir_all(&ws).expect("rm");
    snaps.restore(&u, &snap("s1"), &ws, &ropts()).expect("restore");
    assert_eq!(tree(&ws), before, "contents, modes and mtimes");
    for (name, _, mode) in cases {
        let got = fs::metadata(ws.join(name)).expect("stat").mode() & 0o7777;
        assert_eq!(got, mode, "{name}: {got:o}");
    }
}

#[test]
fn gnu_tar_and_zstd_read_our_archives() {
    let env = Env::new();
    let ws = env.ws("u_1");
    rich_tree(&ws);
    let before = tree(&ws);
    let snaps = Snapshots::local(&env.state);
    snaps.create(&user("u_1"), &snap("s1"), &ws, &copts(Trigger::Manual)).expect("create");
    let out = env.dir.path().join("by-gnu-tar");
    fs::create_dir(&out).expect("mkdir");
    let archive = env.state.join("snapshots/u_1/s1.tar.zst");
    let status = Command::new("sh")
        .arg("-c")
        .arg(format!("zstd -dc '{}' | tar -x -p -C '{}'", archive.display(), out.display()))
        .status()
        .expect("run zstd | tar");
    assert!(status.success(), "zstd -dc | tar -x failed");
    assert_eq!(tree(&out), before, "GNU tar extracts the same tree");
}

#[test]
fn seed_archives_made_by_tar_import_and_restore() {
    // The seed's format: `tar -cf - . | zstd -3` of the workspace (with `./` prefixes and a root entry).
    let env = Env::new();
    let src = env.dir.path().join("seed-ws");
    fs::create_dir(&src).expect("mkdir");
    rich_tree(&src);
    let before = tree(&src);
    let file = env.dir.path().join("seed.tar.zst");
    let status = Command::new("sh")
        .arg("-c")
        .arg(format!("tar -C '{}' -cf - . | zstd -q -3 -o '{}'", src.display(), file.display()))
        .status()
        .expect("run tar | zstd");
    assert!(status.success());
    let u = user("u_123");
    let snaps = Snapshots::local(&env.state);
    let m = snaps.import(&u, &snap("snap_seed"), &file, &ImportOptions::default()).expect("import");
    assert_eq!(m.trigger, Trigger::Import);
    assert_eq!(m.backend, "import");
    assert_eq!(m.archive_bytes, fs::metadata(&file).expect("stat").len());
    assert_eq!(m.sha256, sha256_hex(&fs::read(&file).expect("read")));
    assert_eq!(m.file_count as usize, before.values().filter(|n| matches!(n, Node::File { .. })).count());
    let ws = env.ws("u_123");
    snaps.restore(&u, &snap("snap_seed"), &ws, &ropts()).expect("restore");
    assert_eq!(tree(&ws), before);
}

#[test]
fn export_then_import_round_trips() {
    let env = Env::new();
    let u = user("u_1");
    let ws = env.ws("u_1");
    rich_tree(&ws);
    let before = tree(&ws);
    let snaps = Snapshots::local(&env.state);
    let m = snaps.create(&u, &snap("s1"), &ws, &copts(Trigger::Manual)).expect("create");
    let out = env.dir.path().join("export.tar.zst");
    let em = snaps.export(&u, &snap("s1"), &out).expect("export");
    assert_eq!(em, m);
    assert_eq!(sha256_hex(&fs::read(&out).expect("read")), m.sha256);
    // Import under another user (a move between hosts), restore there.
    let u2 = user("u_2");
    let im =
        snaps.import(&u2, &snap("moved"), &out, &ImportOptions { pinned: true, ..Default::default() }).expect("import");
    assert_eq!(
        (im.sha256.as_str(), im.archive_bytes, im.unpacked_bytes),
        (m.sha256.as_str(), m.archive_bytes, m.unpacked_bytes)
    );
    assert_eq!((im.file_count, im.entry_count), (m.file_count, m.entry_count));
    assert!(im.pinned);
    let ws2 = env.ws("u_2");
    snaps.restore(&u2, &snap("moved"), &ws2, &ropts()).expect("restore");
    assert_eq!(tree(&ws2), before);
    // Importing over an existing id is refused.
    let e = snaps.import(&u2, &snap("moved"), &out, &ImportOptions::default()).expect_err("exists");
    assert!(matches!(e, SnapshotError::Core(warren_core::Error::AlreadyExists(_))), "{e}");
    // Exporting a missing snapshot says so.
    let e = snaps.export(&u, &snap("nope"), &out).expect_err("missing");
    assert!(matches!(e, SnapshotError::Core(warren_core::Error::NotFound(_))), "{e}");
}

#[test]
fn list_get_delete_and_ids() {
    let env = Env::new();
    let u = user("u_1");
    let ws = env.ws("u_1");
    fs::write(ws.join("f"), b"1").expect("write");
    let snaps = Snapshots::local(&env.state);
    assert!(snaps.list(&u).expect("list").is_empty());
    let a = snaps.create(&u, &snap("snap_001"), &ws, &copts(Trigger::Manual)).expect("a");
    std::thread::sleep(Duration::from_millis(5));
    let gen = warren_core::SnapshotId::generate();
    let b =
        snaps.create(&u, &gen, &ws, &CreateOptions { parent: Some(a.id.clone()), ..copts(Trigger::Idle) }).expect("b");
    assert_eq!(b.parent.as_ref(), Some(&a.id));
    let e = snaps.create(&u, &snap("snap_001"), &ws, &copts(Trigger::Manual)).expect_err("duplicate id");
    assert!(matches!(e, SnapshotError::Core(warren_core::Error::AlreadyExists(_))), "{e}");
    let ids: Vec<_> = snaps.list(&u).expect("list").into_iter().map(|m| m.id).collect();
    assert_eq!(ids, vec![gen.clone(), a.id.clone()], "newest first");
    assert_eq!(snaps.get(&u, &a.id).expect("get"), a);
    assert!(snaps.list(&user("u_other")).expect("list other").is_empty());
    // An archive without a manifest is not a snapshot.
    let st = LocalStorage::new(&env.state);
    st.put(&archive_key(&u, &snap("orphan")), b"junk").expect("put");
    assert_eq!(snaps.list(&u).expect("list").len(), 2);
    // A manifest written by hand in format 1 (as first released) is listed.
    let v1 = format!(
        r#"{{"format_version":1,"id":"old","user":"u_1","created":"2020-01-01T00:00:00Z","trigger":"daily",
        "archive_bytes":4,"unpacked_bytes":0,"file_count":0,"sha256":"{}","backend":"ns"}}"#,
        sha256_hex(b"junk")
    );
    st.put(&archive_key(&u, &snap("old")), b"junk").expect("put");
    st.put(&manifest_key(&u, &snap("old")), v1.as_bytes()).expect("put");
    let listed = snaps.list(&u).expect("list");
    assert_eq!(listed.len(), 3);
    assert_eq!(listed[2].id.as_str(), "old");
    assert_eq!(listed[2].trigger, Trigger::Daily);
    // Delete: gone from the list, files gone.
    snaps.delete(&u, &a.id).expect("delete");
    assert!(!env.state.join("snapshots/u_1/snap_001.json").exists());
    assert!(!env.state.join("snapshots/u_1/snap_001.tar.zst").exists());
    let e = snaps.delete(&u, &a.id).expect_err("twice");
    assert!(matches!(e, SnapshotError::Core(warren_core::Error::NotFound(_))), "{e}");
    let e = snaps.restore(&u, &a.id, &ws, &ropts()).expect_err("restore deleted");
    assert!(matches!(e, SnapshotError::Core(warren_core::Error::NotFound(_))), "{e}");
    // Pinning round-trips through the manifest.
    assert!(snaps.set_pinned(&u, &gen, true).expect("pin").pinned);
    assert!(snaps.get(&u, &gen).expect("get").pinned);
}

#[test]
fn retention_keeps_last_n_and_pinned_and_never_the_only_one() {
    let env = Env::new();
    let u = user("u_1");
    let ws = env.ws("u_1");
    fs::write(ws.join("f"), b"1").expect("write");
    let snaps = Snapshots::local(&env.state);
    let mut ids = Vec::new();
    for i in 0..8 {
        let id = snap(&format!("s{i}"));
        let pinned = i == 1;
        snaps.create(&u, &id, &ws, &CreateOptions { pinned, ..copts(Trigger::Daily) }).expect("create");
        ids.push(id);
        std::thread::sleep(Duration::from_millis(3));
    }
    let deleted = snaps.apply_retention(&u, 5).expect("retention");
    assert_eq!(deleted, vec![ids[2].clone(), ids[0].clone()], "oldest unpinned beyond 5 go, newest first");
    let left: Vec<_> = snaps.list(&u).expect("list").into_iter().map(|m| m.id.to_string()).collect();
    assert_eq!(left, vec!["s7", "s6", "s5", "s4", "s3", "s1"]);
    // keep = 0 still keeps one: the only unpinned snapshot is never deleted.
    snaps.apply_retention(&u, 0).expect("retention 0");
    let left: Vec<_> = snaps.list(&u).expect("list").into_iter().map(|m| m.id.to_string()).collect();
    assert_eq!(left, vec!["s7", "s1"]);
    snaps.apply_retention(&u, 0).expect("again");
    assert_eq!(snaps.list(&u).expect("list").len(), 2);
    // Only pinned ones: nothing to do.
    snaps.set_pinned(&u, &snap("s7"), true).expect("pin");
    assert!(snaps.apply_retention(&u, 1).expect("retention").is_empty());
}

#[test]
fn cleanup_orphans_removes_debris_only() {
    let env = Env::new();
    let u = user("u_1");
    let ws = env.ws("u_1");
    fs::write(ws.join("f"), b"1").expect("write");
    let snaps = Snapshots::local(&env.state);
    snaps.create(&u, &snap("keep"), &ws, &copts(Trigger::Manual)).expect("create");
    let dir = env.state.join("snapshots/u_1");
    fs::write(dir.join("orphan.tar.zst"), b"archive without manifest").expect("write");
    fs::write(dir.join(".half.tar.zst.tmp-abcdef"), b"partial").expect("write");
    fs::write(dir.join(".keep.json.tmp-123456"), b"{").expect("write");
    // Young debris is left alone (a create may be writing it right now).
    assert_eq!(snaps.cleanup_orphans(Duration::from_secs(3600)).expect("cleanup"), 0);
    assert_eq!(snaps.cleanup_orphans(Duration::ZERO).expect("cleanup"), 3);
    let mut left: Vec<_> =
        fs::read_dir(&dir).expect("ls").map(|e| e.expect("e").file_name().into_string().expect("utf8")).collect();
    left.sort();
    assert_eq!(left, vec!["keep.json", "keep.tar.zst"]);
    snaps.verify(&u, &snap("keep")).expect("still intact");
}

#[test]
fn corrupt_truncated_and_mismatched_archives_fail_clearly() {
    let env = Env::new();
    let u = user("u_1");
    let ws = env.ws("u_1");
    rich_tree(&ws);
    let before = tree(&ws);
    let snaps = Snapshots::local(&env.state);
    let m = snaps.create(&u, &snap("s1"), &ws, &copts(Trigger::Manual)).expect("create");
    let path = env.state.join("snapshots/u_1/s1.tar.zst");
    let good = fs::read(&path).expect("read");

    // A flipped byte in the middle.
    let mut bad = good.clone();
    let mid = bad.len() / 2;
    bad[mid] ^= 0x5a;
    fs::write(&path, &bad).expect("write");
    let e = snaps.restore(&u, &snap("s1"), &ws, &ropts()).expect_err("corrupt");
    assert!(matches!(e, SnapshotError::ChecksumMismatch { .. }), "{e}");
    assert!(e.to_string().contains("does not match its manifest"), "{e}");
    assert!(matches!(snaps.verify(&u, &snap("s1")), Err(SnapshotError::ChecksumMismatch { .. })));
    assert_eq!(tree(&ws), before, "workspace untouched");

    // Truncated.
    fs::write(&path, &good[..good.len() / 3]).expect("write");
    let e = snaps.restore(&u, &snap("s1"), &ws, &ropts()).expect_err("truncated");
    assert!(e.to_string().contains("truncated"), "{e}");
    assert_eq!(tree(&ws), before);

    // The manifest's checksum does not match the (intact) archive.
    fs::write(&path, &good).expect("write");
    let mut mm = m.clone();
    mm.sha256 = "0".repeat(64);
    LocalStorage::new(&env.state).put(&manifest_key(&u, &snap("s1")), &mm.to_json()).expect("put");
    let e = snaps.restore(&u, &snap("s1"), &ws, &ropts()).expect_err("mismatch");
    assert!(matches!(e, SnapshotError::ChecksumMismatch { .. }), "{e}");
    assert_eq!(warren_core::Error::from(e).code(), "internal");
    assert_eq!(tree(&ws), before);
    let names: Vec<_> = fs::read_dir(&env.workspaces).expect("ls").map(|e| e.expect("e").file_name()).collect();
    assert_eq!(names.len(), 1, "no staging debris: {names:?}");

    // Without a manifest to check against, extraction itself detects damage.
    let staging = env.dir.path().join("staging");
    let e = extract_to(&bad[..], &staging, &ExtractOptions::default()).expect_err("corrupt stream");
    assert!(matches!(e, SnapshotError::Corrupt(_)), "{e}");
    assert!(!staging.exists(), "staging removed");
    let e = extract_to(&good[..good.len() - 100], &staging, &ExtractOptions::default()).expect_err("truncated stream");
    assert!(matches!(e, SnapshotError::Corrupt(_)), "{e}");
    assert!(!staging.exists());
    let e = extract_to(&b"not zstd at all"[..], &staging, &ExtractOptions::default()).expect_err("garbage");
    assert!(matches!(e, SnapshotError::Corrupt(_)), "{e}");
    assert!(!staging.exists());
    for empty in [Vec::new(), zstd::encode_all(&b""[..], 3).expect("zstd of nothing")] {
        let e = extract_to(&empty[..], &staging, &ExtractOptions::default()).expect_err("empty");
        assert!(matches!(e, SnapshotError::Corrupt(_)), "{e}");
        assert!(!staging.exists());
    }
    // A plain (uncompressed) tar is not a tar.zst.
    let mut plain = tar::Builder::new(Vec::new());
    plain.append_data(&mut tar::Header::new_ustar(), "a", &b""[..]).expect("append");
    let plain = plain.into_inner().expect("tar");
    let e = extract_to(&plain[..], &staging, &ExtractOptions::default()).expect_err("plain tar");
    assert!(matches!(e, SnapshotError::Corrupt(_)), "{e}");
    // And import refuses the damaged file, leaving nothing behind.
    let file = env.dir.path().join("bad.tar.zst");
    fs::write(&file, &bad).expect("write");
    let e = snaps.import(&u, &snap("imp"), &file, &ImportOptions::default()).expect_err("import corrupt");
    assert!(matches!(e, SnapshotError::Corrupt(_)), "{e}");
    assert!(snaps.get(&u, &snap("imp")).is_err());
    assert_eq!(snaps.cleanup_orphans(Duration::ZERO).expect("cleanup"), 0, "import left no debris");
}

#[test]
fn restore_creates_a_missing_workspace_and_recovers_leftovers() {
    let env = Env::new();
    let u = user("u_1");
    let ws = env.ws("u_1");
    rich_tree(&ws);
    let before = tree(&ws);
    let snaps = Snapshots::local(&env.state);
    snaps.create(&u, &snap("s1"), &ws, &copts(Trigger::Manual)).expect("create");
    fs::remove_dir_all(&ws).expect("rm ws");
    // Leftovers of an interrupted restore (a staging tree, an old tree, a download).
    for name in [".u_1.restore-staging-aaaa", ".u_1.restore-staging-bbbb", ".u_1.restore-download-cccc"] {
        fs::create_dir_all(env.workspaces.join(name).join("x/y")).expect("mkdir");
        fs::write(env.workspaces.join(name).join("x/y/z"), b"debris").expect("write");
    }
    fs::create_dir_all(env.workspaces.join(".u_10.restore-staging-zzzz")).expect("another user's");
    snaps.restore(&u, &snap("s1"), &ws, &ropts()).expect("restore into missing workspace");
    assert_eq!(tree(&ws), before);
    let mut names: Vec<_> = fs::read_dir(&env.workspaces)
        .expect("ls")
        .map(|e| e.expect("e").file_name().into_string().expect("utf8"))
        .collect();
    names.sort();
    assert_eq!(names, vec![".u_10.restore-staging-zzzz", "u_1"], "u_1's debris removed, u_10's left alone");
    assert_eq!(warren_snapshot::recover(&env.workspaces.join("u_10")).expect("recover u_10"), 1);
}

#[test]
fn prepared_restore_can_be_discarded() {
    let env = Env::new();
    let u = user("u_1");
    let ws = env.ws("u_1");
    fs::write(ws.join("a"), b"old").expect("write");
    let snaps = Snapshots::local(&env.state);
    snaps.create(&u, &snap("s1"), &ws, &copts(Trigger::Manual)).expect("create");
    fs::write(ws.join("a"), b"new").expect("write");
    let p = snaps.prepare_restore(&u, &snap("s1"), &ws, &ropts()).expect("prepare");
    assert_eq!(fs::read(p.staging().join("a")).expect("staged"), b"old");
    assert_eq!(fs::read(ws.join("a")).expect("ws"), b"new", "workspace untouched until swap_in");
    let staging = p.staging().to_path_buf();
    p.discard().expect("discard");
    assert!(!staging.exists());
    {
        let p = snaps.prepare_restore(&u, &snap("s1"), &ws, &ropts()).expect("prepare");
        let staging = p.staging().to_path_buf();
        drop(p);
        assert!(!staging.exists(), "dropping discards");
    }
    let p = snaps.prepare_restore(&u, &snap("s1"), &ws, &ropts()).expect("prepare");
    assert_eq!(p.manifest().id.as_str(), "s1");
    p.swap_in().expect("swap");
    assert_eq!(fs::read(ws.join("a")).expect("ws"), b"old");
}

#[test]
fn create_refuses_trees_it_could_not_restore() {
    let env = Env::new();
    let u = user("u_1");
    let ws = env.ws("u_1");
    let snaps = Snapshots::local(&env.state);
    // A non-UTF-8 name.
    let bad = std::ffi::OsStr::new(std::str::from_utf8(b"ok").expect("utf8"));
    fs::write(ws.join(bad), b"fine").expect("write");
    use std::os::unix::ffi::OsStrExt;
    fs::write(ws.join(std::ffi::OsStr::from_bytes(b"latin1-\xe9t\xe9")), b"x").expect("write");
    let e = snaps.create(&u, &snap("s1"), &ws, &copts(Trigger::Manual)).expect_err("non-utf8");
    assert!(e.to_string().contains("not valid UTF-8") && e.to_string().contains("rename"), "{e}");
    assert!(snaps.list(&u).expect("list").is_empty());
    assert_eq!(snaps.cleanup_orphans(Duration::ZERO).expect("cleanup"), 0, "the aborted write left nothing");
    fs::remove_file(ws.join(std::ffi::OsStr::from_bytes(b"latin1-\xe9t\xe9"))).expect("rm");
    // Deeper than the limit.
    let mut deep = ws.clone();
    for _ in 0..10 {
        deep.push("d");
    }
    fs::create_dir_all(&deep).expect("mkdir");
    let mut o = copts(Trigger::Manual);
    o.archive.limits.max_depth = 5;
    let e = snaps.create(&u, &snap("s1"), &ws, &o).expect_err("too deep");
    assert!(e.to_string().contains("levels deep"), "{e}");
    // More entries than the limit.
    let mut o = copts(Trigger::Manual);
    o.archive.limits.max_entries = 3;
    let e = snaps.create(&u, &snap("s1"), &ws, &o).expect_err("too many");
    assert!(e.to_string().contains("more than 3 entries"), "{e}");
    // Within limits it works.
    snaps.create(&u, &snap("s1"), &ws, &copts(Trigger::Manual)).expect("create");
}

#[test]
fn archives_are_deterministic_and_progress_is_reported() {
    let env = Env::new();
    let ws = env.ws("u_1");
    small_files_tree(&ws, 3000, "det");
    let seen = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let s2 = std::sync::Arc::clone(&seen);
    let opts = ArchiveOptions {
        progress: Some(std::sync::Arc::new(move |p: warren_snapshot::Progress| {
            s2.fetch_max(p.entries, std::sync::atomic::Ordering::Relaxed);
        })),
        ..ArchiveOptions::default()
    };
    let (a, va) = warren_snapshot::write_archive(&ws, Vec::new(), &opts).expect("archive a");
    let (b, vb) =
        warren_snapshot::write_archive(&ws, Vec::new(), &ArchiveOptions { threads: 1, ..ArchiveOptions::default() })
            .expect("archive b");
    assert_eq!(a.entry_count, 3000 + 37);
    assert_eq!(seen.load(std::sync::atomic::Ordering::Relaxed), a.entry_count, "final progress report");
    // Same tar stream whatever the thread count: compare decompressed bytes.
    let ta = zstd::decode_all(&va[..]).expect("decode a");
    let tb = zstd::decode_all(&vb[..]).expect("decode b");
    assert!(ta == tb, "tar stream is deterministic");
    assert_eq!((a.file_count, a.unpacked_bytes), (b.file_count, b.unpacked_bytes));
    // And entries are in sorted depth-first order.
    let mut ar = tar::Archive::new(&ta[..]);
    let paths: Vec<Vec<u8>> =
        ar.entries().expect("entries").map(|e| e.expect("entry").path_bytes().into_owned()).collect();
    let mut sorted = paths.clone();
    sorted.sort();
    assert_eq!(paths, sorted);
    assert!(paths.iter().all(|p| !p.starts_with(b"./") && !p.starts_with(b"/")));
}

#[test]
fn manifest_file_is_the_documented_json() {
    let env = Env::new();
    let u = user("u_1");
    let ws = env.ws("u_1");
    fs::write(ws.join("f"), b"hello").expect("write");
    let snaps = Snapshots::local(&env.state);
    let m = snaps.create(&u, &snap("s1"), &ws, &copts(Trigger::PreRestore)).expect("create");
    let raw = fs::read(env.state.join("snapshots/u_1/s1.json")).expect("read");
    let v: serde_json::Value = serde_json::from_slice(&raw).expect("json");
    assert_eq!(v["format_version"], 1);
    assert_eq!(v["id"], "s1");
    assert_eq!(v["user"], "u_1");
    assert_eq!(v["trigger"], "pre_restore");
    assert_eq!(v["pinned"], false);
    assert_eq!(v["file_count"], 1);
    assert_eq!(v["unpacked_bytes"], 5);
    assert_eq!(v["backend"], "dir");
    assert!(v["parent"].is_null());
    let created = v["created"].as_str().expect("created");
    assert!(created.ends_with('Z') && created.len() == 24, "{created}");
    assert_eq!(Manifest::from_json(&raw).expect("parse"), m);
    // Snapshots directories are for root only.
    let mode = fs::metadata(env.state.join("snapshots/u_1")).expect("stat").mode() & 0o777;
    assert_eq!(mode, 0o700);
}

#[test]
fn empty_workspace_round_trips() {
    let env = Env::new();
    let u = user("u_1");
    let ws = env.ws("u_1");
    let snaps = Snapshots::local(&env.state);
    let m = snaps.create(&u, &snap("empty"), &ws, &copts(Trigger::Manual)).expect("create");
    assert_eq!((m.file_count, m.entry_count, m.unpacked_bytes), (0, 0, 0));
    fs::write(ws.join("later"), b"x").expect("write");
    snaps.restore(&u, &snap("empty"), &ws, &ropts()).expect("restore");
    assert!(tree(&ws).is_empty());
}
