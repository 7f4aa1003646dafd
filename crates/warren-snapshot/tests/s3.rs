//! Snapshots on a real S3 protocol server that the tests start themselves: `moto_server`
//! (`pip install 'moto[server]'`). Skipped, with the reason printed, only when `moto_server`
//! is not installed.

mod common;

use std::fs;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::process::ExitStatusExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use common::*;
use warren_snapshot::{
    archive_key, CreateOptions, ExtractOptions, ImportOptions, S3Config, S3Storage, SnapshotError, Snapshots, Storage,
    Trigger,
};

const CHILD_ENV: &str = "WARREN_SNAPSHOT_S3_CHILD";

/// A `moto_server` on a free loopback port, killed (by its pid) when dropped.
struct Moto {
    child: Child,
    port: u16,
    _log: tempfile::NamedTempFile,
}

impl Moto {
    fn start() -> Option<Moto> {
        let Some(bin) = which("moto_server") else {
            eprintln!("SKIPPED: moto_server not found on PATH; install it with: pip install 'moto[server]'");
            return None;
        };
        let port = TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port();
        let log = tempfile::NamedTempFile::new().expect("log file");
        let child = Command::new(bin)
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdin(Stdio::null())
            .stdout(log.reopen().expect("log"))
            .stderr(log.reopen().expect("log"))
            .spawn()
            .expect("start moto_server");
        let mut moto = Moto { child, port, _log: log };
        let up = wait_until(60, || moto.http("GET", "/").map(|r| r.starts_with("HTTP/1.1 200")).unwrap_or(false));
        if !up {
            let mut s = String::new();
            let _ = fs::File::open(moto._log.path()).and_then(|mut f| f.read_to_string(&mut s));
            panic!("moto_server did not come up on port {port}: {s}");
        }
        if let Ok(Some(status)) = moto.child.try_wait() {
            panic!("moto_server exited: {status}");
        }
        Some(moto)
    }

    /// A bare HTTP/1.1 request (moto needs no signature for bucket creation).
    fn http(&self, method: &str, path: &str) -> std::io::Result<String> {
        let mut s = TcpStream::connect(("127.0.0.1", self.port))?;
        s.set_read_timeout(Some(Duration::from_secs(10)))?;
        write!(
            s,
            "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
            self.port
        )?;
        let mut out = String::new();
        s.read_to_string(&mut out)?;
        Ok(out)
    }

    fn bucket(&self, name: &str) -> S3Config {
        let r = self.http("PUT", &format!("/{name}")).expect("create bucket");
        assert!(r.starts_with("HTTP/1.1 200"), "create bucket: {r}");
        S3Config {
            bucket: name.into(),
            prefix: "warren/test".into(),
            endpoint: Some(format!("http://127.0.0.1:{}", self.port)),
            region: Some("us-east-1".into()),
            allow_http: true,
            access_key_id: Some("testing".into()),
            secret_access_key: Some("testing".into()),
            part_size: 5 << 20,
            upload_concurrency: 2,
        }
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn copts(trigger: Trigger) -> CreateOptions {
    CreateOptions { trigger, backend: "ns".into(), ..CreateOptions::default() }
}

#[test]
fn s3_create_list_restore_export_import_retention_delete() {
    let Some(moto) = Moto::start() else { return };
    let cfg = moto.bucket("snapshots");
    let storage = Arc::new(S3Storage::new(cfg.clone()).expect("s3 storage"));
    assert!(storage.describe().starts_with("s3://snapshots/warren/test"), "{}", storage.describe());
    let snaps = Snapshots::new(storage.clone());
    let env = Env::new();
    let u = user("u_123");
    let ws = env.ws("u_123");
    rich_tree(&ws);
    // 12 MiB that does not compress: the archive goes up in three 5 MiB parts or more.
    write_file(&ws.join("big/incompressible"), &noise(12 << 20, 99));
    let before = tree(&ws);

    let m1 = snaps.create(&u, &snap("snap_001"), &ws, &copts(Trigger::Manual)).expect("create on S3");
    assert!(m1.archive_bytes > 12 << 20, "multipart-sized archive: {}", m1.archive_bytes);
    let objects = storage.list("snapshots/u_123/").expect("list objects");
    let keys: Vec<&str> = objects.iter().map(|o| o.key.as_str()).collect();
    assert_eq!(keys, vec!["snapshots/u_123/snap_001.json", "snapshots/u_123/snap_001.tar.zst"]);
    assert_eq!(objects[1].size, m1.archive_bytes);
    snaps.verify(&u, &snap("snap_001")).expect("verify");

    // Restore, byte-exact, with no download left behind.
    fs::write(ws.join("README.md"), b"changed").expect("write");
    fs::remove_dir_all(ws.join("src")).expect("rm");
    snaps.restore(&u, &snap("snap_001"), &ws, &ExtractOptions::default()).expect("restore from S3");
    assert_eq!(tree(&ws), before);
    assert_eq!(names(&env.workspaces), vec!["u_123"]);

    // More snapshots, listed newest first; retention keeps the last 2 and the pinned one.
    fs::remove_file(ws.join("big/incompressible")).expect("rm");
    for (i, pinned) in [(2, true), (3, false), (4, false), (5, false)] {
        std::thread::sleep(Duration::from_millis(5));
        let opts = CreateOptions { pinned, ..copts(Trigger::Daily) };
        snaps.create(&u, &snap(&format!("snap_00{i}")), &ws, &opts).expect("create");
    }
    let ids = |s: &Snapshots| s.list(&u).expect("list").into_iter().map(|m| m.id.to_string()).collect::<Vec<_>>();
    assert_eq!(ids(&snaps), vec!["snap_005", "snap_004", "snap_003", "snap_002", "snap_001"]);
    let deleted = snaps.apply_retention(&u, 2).expect("retention");
    assert_eq!(deleted.iter().map(|d| d.to_string()).collect::<Vec<_>>(), vec!["snap_003", "snap_001"]);
    assert_eq!(ids(&snaps), vec!["snap_005", "snap_004", "snap_002"]);
    assert_eq!(storage.list("snapshots/u_123/").expect("list").len(), 6, "archives deleted with their manifests");

    // Export to a plain file, import under another user, restore there.
    let file = env.dir.path().join("export.tar.zst");
    let m5 = snaps.export(&u, &snap("snap_005"), &file).expect("export");
    assert_eq!(sha256_hex(&fs::read(&file).expect("read")), m5.sha256);
    let u2 = user("u_456");
    let im = snaps.import(&u2, &snap("moved"), &file, &ImportOptions::default()).expect("import to S3");
    assert_eq!((im.sha256.as_str(), im.file_count), (m5.sha256.as_str(), m5.file_count));
    let ws2 = env.ws("u_456");
    snaps.restore(&u2, &snap("moved"), &ws2, &ExtractOptions::default()).expect("restore import");
    assert_eq!(without_dir_mtimes(tree(&ws2)), without_dir_mtimes(tree(&ws)));

    // A tampered archive fails its checksum; the workspace is untouched, no debris.
    let ws_before = tree(&ws);
    storage.put(&archive_key(&u, &snap("snap_004")), b"not the archive").expect("tamper");
    let e = snaps.restore(&u, &snap("snap_004"), &ws, &ExtractOptions::default()).expect_err("tampered");
    assert!(matches!(e, SnapshotError::ChecksumMismatch { .. }), "{e}");
    assert_eq!(tree(&ws), ws_before);
    assert_eq!(names(&env.workspaces), vec!["u_123", "u_456"]);

    // An archive without a manifest is not listed and is removed by the orphan cleanup.
    let mut w = storage.writer(&archive_key(&u, &snap("orphan"))).expect("writer");
    w.write_all(b"half a snapshot").expect("write");
    w.finish().expect("finish");
    assert_eq!(ids(&snaps), vec!["snap_005", "snap_004", "snap_002"]);
    assert_eq!(snaps.cleanup_orphans(Duration::from_secs(3600)).expect("young"), 0);
    assert_eq!(snaps.cleanup_orphans(Duration::ZERO).expect("cleanup"), 1);
    assert!(storage.get(&archive_key(&u, &snap("orphan"))).expect("get").is_none());

    // Delete: manifest and archive gone.
    snaps.delete(&u, &snap("snap_002")).expect("delete");
    let e = snaps.get(&u, &snap("snap_002")).expect_err("gone");
    assert!(matches!(e, SnapshotError::Core(warren_core::Error::NotFound(_))), "{e}");
    assert!(storage.get(&archive_key(&u, &snap("snap_002"))).expect("get").is_none());
    // An aborted upload leaves nothing visible.
    let mut w = storage.writer(&archive_key(&u, &snap("aborted"))).expect("writer");
    w.write_all(&noise(6 << 20, 1)).expect("write a part");
    w.abort();
    assert!(storage.get(&archive_key(&u, &snap("aborted"))).expect("get").is_none());
    // The prefix keeps other users' and other tenants' keys apart.
    let other = S3Storage::new(S3Config { prefix: "someone-else".into(), ..cfg }).expect("other prefix");
    assert!(other.list("snapshots/").expect("list").is_empty());
}

#[test]
fn s3_storage_works_from_spawn_blocking_and_drops_in_async_code() {
    let Some(moto) = Moto::start() else { return };
    let cfg = moto.bucket("asyncbucket");
    let env = Env::new();
    let ws = env.ws("u_1");
    fs::write(ws.join("f"), b"hello").expect("write");
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
    let ws2 = ws.clone();
    let listed = rt.block_on(async move {
        let snaps = Snapshots::new(Arc::new(S3Storage::new(cfg).expect("s3")));
        let s = snaps.clone();
        let n = tokio::task::spawn_blocking(move || {
            s.create(&user("u_1"), &snap("s1"), &ws2, &copts(Trigger::Manual)).expect("create");
            s.list(&user("u_1")).expect("list").len()
        })
        .await
        .expect("join");
        drop(snaps); // dropping the storage (and its runtime) inside async code must not panic
        n
    });
    assert_eq!(listed, 1);
}

/// Child: creates snapshots on S3 until killed (config from the environment).
#[test]
fn child_s3_create_loop() {
    let Ok(job) = std::env::var(CHILD_ENV) else { return };
    let (port, ws) = job.split_once('|').expect("port|ws");
    let cfg = S3Config {
        bucket: "killbucket".into(),
        prefix: "warren/test".into(),
        endpoint: Some(format!("http://127.0.0.1:{port}")),
        region: Some("us-east-1".into()),
        allow_http: true,
        access_key_id: Some("testing".into()),
        secret_access_key: Some("testing".into()),
        part_size: 5 << 20,
        upload_concurrency: 2,
    };
    let snaps = Snapshots::new(Arc::new(S3Storage::new(cfg).expect("s3")));
    for i in 0.. {
        snaps.create(&user("u_1"), &snap(&format!("s{i}")), &PathBuf::from(ws), &copts(Trigger::Idle)).expect("create");
    }
}

#[test]
fn s3_kill_9_during_create_lists_no_partial_snapshot() {
    let Some(moto) = Moto::start() else { return };
    let cfg = moto.bucket("killbucket");
    let env = Env::new();
    let ws = env.ws("u_1");
    write_file(&ws.join("blob"), &noise(24 << 20, 5));
    small_files_tree(&ws, 500, "s3kill");
    let storage = Arc::new(S3Storage::new(cfg).expect("s3"));
    let snaps = Snapshots::new(storage.clone());
    let u = user("u_1");
    let mut child = Command::new(std::env::current_exe().expect("exe"))
        .args(["--exact", "child_s3_create_loop", "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, format!("{}|{}", moto.port, ws.display()))
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn child");
    assert!(wait_until(180, || snaps.list(&u).map(|l| l.len() >= 2).unwrap_or(false)), "child made no snapshots");
    std::thread::sleep(Duration::from_millis(150)); // somewhere inside the next upload
    child.kill().expect("SIGKILL");
    assert_eq!(child.wait().expect("wait").signal(), Some(9));
    let listed = snaps.list(&u).expect("list");
    for m in &listed {
        snaps.verify(&u, &m.id).unwrap_or_else(|e| panic!("listed snapshot {} is partial: {e}", m.id));
    }
    snaps.cleanup_orphans(Duration::ZERO).expect("cleanup");
    let keys: Vec<String> = storage.list("snapshots/").expect("list").into_iter().map(|o| o.key).collect();
    let mut expected: Vec<String> = listed
        .iter()
        .flat_map(|m| [format!("snapshots/u_1/{}.json", m.id), format!("snapshots/u_1/{}.tar.zst", m.id)])
        .collect();
    expected.sort();
    assert_eq!(keys, expected, "only complete snapshots remain after cleanup");
    let restored = env.ws("u_check");
    snaps.restore(&u, &listed[0].id, &restored, &ExtractOptions::default()).expect("restore newest");
    assert_eq!(tree(&restored), tree(&ws));
}

fn names(dir: &std::path::Path) -> Vec<String> {
    let mut v: Vec<String> =
        fs::read_dir(dir).expect("ls").map(|e| e.expect("e").file_name().into_string().expect("utf8")).collect();
    v.sort();
    v
}
