//! Snapshots through the engine with `storage = "s3"`, against a real S3 protocol server the
//! test starts itself (`moto_server` on a free loopback port). Skipped, with the reason
//! printed, only when `moto_server` is not installed (`pip install 'moto[server]'`).
//!
//! One test in its own binary: it sets the AWS credential variables before any thread starts.

mod snapshot_support;

use snapshot_support::*;
use warren_backend_ns::NsBackend;
use warren_core::config::{S3Settings, SnapshotStorage};
use warren_core::{BackendKind, State, WorkspacePath};
use warren_engine::{CreateOptions, SnapshotOptions, Trigger};

#[test]
fn s3_storage_end_to_end() {
    let Some(moto) = Moto::start() else { return };
    // Credentials come from the environment, as in production (moto accepts any).
    std::env::set_var("AWS_ACCESS_KEY_ID", "testing");
    std::env::set_var("AWS_SECRET_ACCESS_KEY", "testing");
    moto.create_bucket("warren-engine");
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("runtime");
    let mut kinds = vec![(BackendKind::Dir, 20)];
    match NsBackend::probe() {
        Ok(()) => kinds.push((BackendKind::Ns, 21)),
        Err(why) => eprintln!("SKIPPED on ns: the ns backend cannot run here: {why}"),
    }
    for (kind, slot) in kinds {
        rt.block_on(flow(&moto, kind, slot));
    }
}

/// The objects under `snapshots/u_123/` (the S3 client blocks: off the async threads).
async fn object_keys(storage: &warren_snapshot::Snapshots) -> Vec<String> {
    let s = storage.clone();
    tokio::task::spawn_blocking(move || s.storage().list("snapshots/u_123/").expect("list objects"))
        .await
        .expect("join")
        .into_iter()
        .map(|o| o.key)
        .collect()
}

async fn flow(moto: &Moto, kind: BackendKind, slot: u32) {
    let mut env = new_env(kind, slot);
    env.cfg.snapshots.storage = SnapshotStorage::S3;
    env.cfg.snapshots.s3 = Some(S3Settings {
        endpoint: Some(format!("http://127.0.0.1:{}", moto.port)),
        bucket: "warren-engine".into(),
        prefix: format!("tenant/{kind}"),
        region: Some("us-east-1".into()),
        allow_http: true,
    });
    let engine = env.open().await;
    let storage = engine.snapshot_storage().expect("storage");
    assert!(storage.storage().describe().starts_with(&format!("s3://warren-engine/tenant/{kind}")));

    let u = user("u_123");
    let info = engine.create(&u, CreateOptions::default()).await.expect("create");
    engine.start(&u).await.expect("start");
    engine.exec(&u, sh("mkdir -p src && echo 'print(1)' > src/app.py && ln -s src/app.py app")).await.expect("exec");
    // 12 MiB that does not compress: the archive goes up in parts.
    engine.write_file(&u, &WorkspacePath::new("big.bin").expect("path"), noise(12 << 20, 5), 0o600).await.expect("big");
    let home = env.home("u_123");
    let before = tree(&home);

    let m =
        engine.snapshot_create(&u, Some(snap("snap_001")), SnapshotOptions::default()).await.expect("snapshot to S3");
    assert!(m.archive_bytes > 12 << 20);
    assert!(!env.state.join("snapshots").exists(), "nothing stored locally");
    let keys = object_keys(&storage).await;
    assert_eq!(keys, ["snapshots/u_123/snap_001.json", "snapshots/u_123/snap_001.tar.zst"]);

    engine.exec(&u, sh("echo changed > src/app.py; rm app big.bin")).await.expect("change");
    let r = engine.snapshot_restore(&u, &snap("snap_001")).await.expect("restore from S3");
    assert_eq!(tree(&home), before, "files are back from S3");
    owned_by(&home, info.uid).expect("owned by the workspace");
    assert_eq!(engine.status(&u).await.expect("status").state, State::Running);
    let list = engine.snapshot_list(&u).await.expect("list");
    assert_eq!(list.iter().map(|m| m.trigger).collect::<Vec<_>>(), [Trigger::PreRestore, Trigger::Manual]);
    assert_eq!(list[0].id, r.pre_restore.id);

    // Export to a file, import under another user, restore there.
    let file = env.tmp.path().join("export.tar.zst");
    engine.snapshot_export(&u, &snap("snap_001"), &file).await.expect("export");
    let other = user("u_456");
    engine.create(&other, CreateOptions::default()).await.expect("create other");
    engine.snapshot_import(&other, Some(snap("moved")), &file).await.expect("import into S3");
    engine.snapshot_restore(&other, &snap("moved")).await.expect("restore import");
    assert_eq!(
        std::fs::read(env.home("u_456").join("big.bin")).expect("big restored"),
        std::fs::read(home.join("big.bin")).expect("big")
    );

    // Delete: gone from the bucket.
    engine.snapshot_delete(&u, &r.pre_restore.id).await.expect("delete");
    let keys = object_keys(&storage).await;
    assert_eq!(keys, ["snapshots/u_123/snap_001.json", "snapshots/u_123/snap_001.tar.zst"]);
    for x in [&u, &other] {
        engine.destroy(x).await.expect("destroy");
    }
}
