//! Snapshots through the engine on real backends (dir always, ns when the host can run it),
//! real SQLite, real processes, in temporary state directories.
//!
//! Every test has its own state directory and uid range (slot), because the dir backend's `stop`
//! kills every process of a workspace's uid.

mod snapshot_support;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use snapshot_support::*;
use warren_backend_ns::NsBackend;
use warren_core::config::TimeOfDay;
use warren_core::{Backend, BackendKind, ExecEvent, State, UserId, WorkspacePath};
use warren_engine::{CreateOptions, Engine, SnapshotOptions, Trigger};

fn ns_available() -> bool {
    match NsBackend::probe() {
        Ok(()) => true,
        Err(why) => {
            eprintln!("SKIPPED on ns: the ns backend cannot run here: {why}");
            false
        }
    }
}

async fn kinds(engine: &Engine, u: &UserId) -> Vec<String> {
    engine.events(Some(u), 1000).await.expect("events").into_iter().map(|e| e.kind).collect()
}

async fn last_event(engine: &Engine, u: &UserId, kind: &str) -> serde_json::Value {
    let events = engine.events(Some(u), 1000).await.expect("events");
    events.into_iter().rev().find(|e| e.kind == kind).unwrap_or_else(|| panic!("no {kind} event")).detail
}

/// A workspace with text, binary, executable, empty, nested and symlinked files.
async fn fill(engine: &Engine, u: &UserId) {
    let out = engine
        .exec(
            u,
            sh("set -e; mkdir -p proj/src proj/docs/deep/er/still; echo 'fn main() {}' > proj/src/main.rs; \
                printf '#!/bin/sh\\necho run\\n' > proj/run.sh; chmod 755 proj/run.sh; : > empty; \
                echo notes > proj/docs/deep/er/still/notes.txt; ln -s proj/src/main.rs link; \
                ln -s /usr/bin/env abs-link; chmod 600 proj/src/main.rs"),
        )
        .await
        .expect("exec fill");
    assert_eq!(out.exit_code, 0, "{}", String::from_utf8_lossy(&out.stderr));
    let big = noise(3 << 20, 7);
    engine.write_file(u, &WorkspacePath::new("data/big.bin").expect("path"), big, 0o640).await.expect("write big");
}

/// The seed flow, as a new user would try it: snapshot, change files, restore, files back; the
/// pre-restore snapshot undoes the restore.
async fn seed_flow(kind: BackendKind, slot: u32) {
    let env = new_env(kind, slot);
    let engine = env.open().await;
    let u = user("u_123");
    let info = engine.create(&u, CreateOptions::default()).await.expect("create");
    engine.start(&u).await.expect("start");
    fill(&engine, &u).await;
    let home = env.home("u_123");
    let before = tree(&home);

    let m =
        engine.snapshot_create(&u, Some(snap("snap_001")), SnapshotOptions::default()).await.expect("snapshot_create");
    assert_eq!((m.id.as_str(), m.user.as_str(), m.trigger), ("snap_001", "u_123", Trigger::Manual));
    assert_eq!(m.backend, kind.as_str());
    let files = before.values().filter(|n| matches!(n, Node::File { .. })).count() as u64;
    assert!(files >= 5, "{before:?}");
    assert_eq!(m.file_count, files, "{m:?}");
    assert!(m.unpacked_bytes >= 3 << 20);
    assert!(env.state.join("snapshots/u_123/snap_001.tar.zst").is_file());
    assert!(env.state.join("snapshots/u_123/snap_001.json").is_file());
    let ev = last_event(&engine, &u, "snapshot_create").await;
    let expected = if kind == BackendKind::Ns { "freeze" } else { "stop_start" };
    assert_eq!(ev["quiesce"], expected, "{ev}");
    assert_eq!(engine.status(&u).await.expect("status").state, State::Running, "running after the snapshot");
    assert!(!env.state.join("run/snapshot/u_123.json").exists(), "marker removed");

    let err = engine.snapshot_create(&u, Some(snap("snap_001")), SnapshotOptions::default()).await.expect_err("dup");
    assert_eq!(err.code(), "already_exists", "{err}");
    assert_eq!(engine.status(&u).await.expect("status").state, State::Running);

    // Change and delete files.
    let out = engine
        .exec(&u, sh("echo changed > proj/src/main.rs; rm -r proj/docs; echo new > newfile; rm link"))
        .await
        .expect("exec change");
    assert_eq!(out.exit_code, 0);
    engine.delete_file(&u, &WorkspacePath::new("data/big.bin").expect("path"), false).await.expect("rm big");
    let changed = tree(&home);
    assert_ne!(changed, before);

    let r = engine.snapshot_restore(&u, &snap("snap_001")).await.expect("restore");
    assert_eq!(tree(&home), before, "files are back, byte-exact, with their modes");
    owned_by(&home, info.uid).expect("restored files belong to the workspace");
    assert!(r.restarted);
    assert_eq!((r.restored.id.as_str(), r.files), ("snap_001", files));
    assert_eq!(r.pre_restore.trigger, Trigger::PreRestore);
    assert_eq!(engine.status(&u).await.expect("status").state, State::Running);
    let out =
        engine.exec(&u, sh("cat proj/src/main.rs; ./proj/run.sh; test -e newfile || echo gone")).await.expect("exec");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "fn main() {}\nrun\ngone\n");
    let ids: Vec<(String, Trigger)> =
        engine.snapshot_list(&u).await.expect("list").into_iter().map(|m| (m.id.to_string(), m.trigger)).collect();
    assert_eq!(ids, [(r.pre_restore.id.to_string(), Trigger::PreRestore), ("snap_001".to_owned(), Trigger::Manual)]);
    let ev = last_event(&engine, &u, "snapshot_restore").await;
    assert_eq!(
        (ev["snapshot"].as_str(), ev["pre_restore"].as_str()),
        (Some("snap_001"), Some(r.pre_restore.id.as_str()))
    );

    // Undo: the pre-restore snapshot holds the changed state.
    let undo = engine.snapshot_restore(&u, &r.pre_restore.id).await.expect("undo");
    assert_eq!(tree(&home), changed, "undo brings the changed files back");
    assert_eq!(engine.snapshot_list(&u).await.expect("list").len(), 3);
    assert_eq!(undo.pre_restore.trigger, Trigger::PreRestore);
    // No restore debris beside the workspace, no markers.
    let names: Vec<String> = std::fs::read_dir(env.state.join("workspaces"))
        .expect("ls")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, ["u_123"]);

    // A restore of a stopped workspace leaves it stopped.
    engine.stop(&u).await.expect("stop");
    let r = engine.snapshot_restore(&u, &snap("snap_001")).await.expect("restore stopped");
    assert!(!r.restarted);
    assert_eq!(engine.status(&u).await.expect("status").state, State::Stopped);
    assert_eq!(tree(&home), before);
    engine.destroy(&u).await.expect("destroy");
    // Snapshots outlive the workspace.
    assert_eq!(engine.snapshot_list(&u).await.expect("list").len(), 4, "snap_001 and three pre-restore snapshots");
}

#[tokio::test(flavor = "multi_thread")]
async fn seed_flow_on_dir() {
    seed_flow(BackendKind::Dir, 0).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn seed_flow_on_ns() {
    if ns_available() {
        seed_flow(BackendKind::Ns, 1).await;
    }
}

/// A running ns workspace is frozen, not stopped: the same init, a background process
/// survives, and the archive is one instant of a process writing all along.
#[tokio::test(flavor = "multi_thread")]
async fn snapshot_of_running_ns_workspace_keeps_it_running_and_is_consistent() {
    if !ns_available() {
        return;
    }
    let env = new_env(BackendKind::Ns, 2);
    let engine = env.open().await;
    let u = user("u_live");
    let info = engine.create(&u, CreateOptions::default()).await.expect("create");
    engine.start(&u).await.expect("start");
    let ns = NsBackend::new(&env.state, None).expect("ns backend");
    let spec = spec_of(&info);
    let pid_before = ns.status(&spec).await.expect("status").pid.expect("init pid");
    // A writer (at most 5 minutes: a failing test leaves no spinner behind) that keeps a and b in lock step (each replaced atomically): in any one instant
    // a == b or a == b + 1. The archive reads a, then 2000 files and 8 MiB (a_mid/,
    // sorted between them), then b, so a snapshot that is not of one instant sees b ahead of a.
    engine
        .write_file(&u, &WorkspacePath::new("a_mid/big").expect("path"), noise(8 << 20, 3), 0o644)
        .await
        .expect("big");
    let out = engine
        .exec(
            &u,
            sh("cd a_mid && for i in $(seq 1 2000); do echo $i > f$i; done; cd ..; echo 0 > a; echo 0 > b; setsid timeout 300 sh -c 'echo $$ > bg.pid; i=0; while :; do i=$((i+1)); \
                echo $i > a.tmp; mv a.tmp a; echo $i > b.tmp; mv b.tmp b; done' >/dev/null 2>&1 </dev/null &"),
        )
        .await
        .expect("start writer");
    assert_eq!(out.exit_code, 0);
    assert!(wait_until(30, || std::fs::read_to_string(env.home("u_live").join("a")).is_ok_and(|s| s.trim() != "0")));

    let mut seen = Vec::new();
    for i in 0..3 {
        let id = snap(&format!("live_{i}"));
        let m = engine.snapshot_create(&u, Some(id.clone()), SnapshotOptions::default()).await.expect("snapshot");
        assert_eq!(last_event(&engine, &u, "snapshot_create").await["quiesce"], "freeze");
        let file = env.tmp.path().join(format!("live_{i}.tar.zst"));
        engine.snapshot_export(&u, &id, &file).await.expect("export");
        let out = env.tmp.path().join(format!("x{i}"));
        let f = std::fs::File::open(&file).expect("open export");
        let eopts = warren_snapshot::ExtractOptions { sync: false, ..Default::default() };
        warren_snapshot::extract_to(std::io::BufReader::new(f), &out, &eopts).expect("extract");
        let read =
            |n: &str| -> u64 { std::fs::read_to_string(out.join(n)).expect("read").trim().parse().expect("number") };
        let (a, b) = (read("a"), read("b"));
        assert!(a == b || a == b + 1, "snapshot {i} is not one instant: a={a} b={b} ({m:?})");
        seen.push(a);
    }
    assert!(seen.windows(2).all(|w| w[0] <= w[1]), "the writer kept running between snapshots: {seen:?}");
    assert!(seen.last() > seen.first(), "the writer kept running between snapshots: {seen:?}");

    let pid_after = ns.status(&spec).await.expect("status").pid.expect("init pid");
    assert_eq!(pid_before, pid_after, "the same init: the workspace was never stopped");
    assert_eq!(frozen(&info.workspace_id), Some(false), "thawed");
    let out = engine.exec(&u, sh("kill -0 $(cat bg.pid) && echo alive")).await.expect("exec");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "alive\n", "the background process survived");
    let events = kinds(&engine, &u).await;
    assert!(!events.iter().any(|k| k == "stop"), "{events:?}");
    engine.destroy(&u).await.expect("destroy");
}

/// Retention keeps the newest `keep` unpinned snapshots and every pinned one; a restore's
/// pre-restore snapshot deletes nothing when it is taken.
#[tokio::test(flavor = "multi_thread")]
async fn retention_keeps_five_with_pins_exempt() {
    let env = new_env(BackendKind::Dir, 3);
    assert_eq!(env.cfg.snapshots.keep, 5, "the default");
    let engine = env.open().await;
    let u = user("u_ret");
    engine.create(&u, CreateOptions::default()).await.expect("create");
    engine.write_file(&u, &WorkspacePath::new("f").expect("path"), b"1".to_vec(), 0o644).await.expect("write");
    let pinned = SnapshotOptions { pinned: true, ..SnapshotOptions::default() };
    engine.snapshot_create(&u, Some(snap("keeper")), pinned).await.expect("pinned");
    for i in 1..=7 {
        tokio::time::sleep(Duration::from_millis(3)).await;
        engine.snapshot_create(&u, Some(snap(&format!("s{i:02}"))), SnapshotOptions::default()).await.expect("create");
    }
    let ids = |list: Vec<warren_engine::Manifest>| list.into_iter().map(|m| m.id.to_string()).collect::<Vec<_>>();
    assert_eq!(ids(engine.snapshot_list(&u).await.expect("list")), ["s07", "s06", "s05", "s04", "s03", "keeper"]);
    let ev = last_event(&engine, &u, "snapshot_create").await;
    assert_eq!(ev["retention_deleted"], serde_json::json!(["s02"]));

    // A restore adds its pre-restore snapshot without deleting any.
    tokio::time::sleep(Duration::from_millis(3)).await;
    let r = engine.snapshot_restore(&u, &snap("s05")).await.expect("restore");
    let pre = r.pre_restore.id.to_string();
    assert_eq!(
        ids(engine.snapshot_list(&u).await.expect("list")),
        [pre.as_str(), "s07", "s06", "s05", "s04", "s03", "keeper"]
    );
    // The next snapshot applies retention to all of them.
    tokio::time::sleep(Duration::from_millis(3)).await;
    engine.snapshot_create(&u, Some(snap("s08")), SnapshotOptions::default()).await.expect("create");
    assert_eq!(
        ids(engine.snapshot_list(&u).await.expect("list")),
        ["s08", pre.as_str(), "s07", "s06", "s05", "keeper"]
    );
    // Unpinned, the old one goes with the next snapshot.
    let m = engine.snapshot_pin(&u, &snap("keeper"), false).await.expect("unpin");
    assert!(!m.pinned);
    tokio::time::sleep(Duration::from_millis(3)).await;
    engine.snapshot_create(&u, Some(snap("s09")), SnapshotOptions::default()).await.expect("create");
    assert_eq!(ids(engine.snapshot_list(&u).await.expect("list")), ["s09", "s08", pre.as_str(), "s07", "s06"]);
    // Delete; pin events recorded.
    engine.snapshot_delete(&u, &snap("s06")).await.expect("delete");
    assert_eq!(engine.snapshot_delete(&u, &snap("s06")).await.expect_err("twice").code(), "not_found");
    let k = kinds(&engine, &u).await;
    assert!(k.contains(&"snapshot_unpin".to_owned()) && k.contains(&"snapshot_delete".to_owned()), "{k:?}");

    // keep = 1 never deletes the only (newest) one.
    let cfg = warren_core::config::Config {
        snapshots: warren_core::config::SnapshotConfig { keep: 1, ..Default::default() },
        ..env.cfg.clone()
    };
    let one = Engine::open(cfg, warren_engine::EngineOptions::default()).await.expect("open keep=1");
    tokio::time::sleep(Duration::from_millis(3)).await;
    one.snapshot_create(&u, Some(snap("only")), SnapshotOptions::default()).await.expect("create");
    assert_eq!(ids(one.snapshot_list(&u).await.expect("list")), ["only"]);
    engine.destroy(&u).await.expect("destroy");
}

/// Idle suspension driven by `tick_triggers` with a clock the test sets: snapshot + stop, then
/// the next exec resumes the workspace; a running command keeps it awake; an explicit stop is
/// not resumed.
#[tokio::test(flavor = "multi_thread")]
async fn idle_trigger_suspends_and_exec_resumes() {
    let mut env = new_env(BackendKind::Dir, 4);
    env.cfg.snapshots.idle_suspend_after = Some(Duration::from_secs(30 * 60));
    let engine = env.open().await;
    let u = user("u_idle");
    engine.create(&u, CreateOptions::default()).await.expect("create");
    engine.start(&u).await.expect("start");
    engine.exec(&u, sh("echo kept > f")).await.expect("exec");
    let t0 = SystemTime::now();

    assert_eq!(engine.tick_triggers(t0 + Duration::from_secs(10 * 60)).await.expect("tick"), Default::default());
    assert_eq!(engine.status(&u).await.expect("status").state, State::Running);

    // A command still running keeps it awake.
    let mut h = engine.exec_stream(&u, sh("echo started; sleep 600")).await.expect("exec_stream");
    assert_eq!(h.events.recv().await, Some(ExecEvent::Stdout(b"started\n".to_vec())));
    let r = engine.tick_triggers(t0 + Duration::from_secs(31 * 60)).await.expect("tick busy");
    assert!(r.idle_suspended.is_empty(), "{r:?}");
    drop(h); // kills it; the engine notices in its own time
    let mut r = Default::default();
    for _ in 0..1000 {
        r = engine.tick_triggers(t0 + Duration::from_secs(31 * 60)).await.expect("tick idle");
        if !r.idle_suspended.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let r: warren_engine::TickReport = r;
    assert_eq!(r.idle_suspended.len(), 1, "{r:?}");
    let (who, id) = &r.idle_suspended[0];
    assert_eq!(who, &u);
    assert_eq!(engine.status(&u).await.expect("status").state, State::Stopped);
    let m = engine.snapshot_get(&u, id).await.expect("idle snapshot");
    assert_eq!(m.trigger, Trigger::Idle);
    let ev = last_event(&engine, &u, "idle_suspend").await;
    assert_eq!(ev["snapshot"], id.as_str());
    assert!(ev["idle_for_s"].as_u64().expect("idle_for_s") >= 30 * 60);

    // Next use resumes it transparently.
    let out = engine.exec(&u, sh("cat f")).await.expect("exec resumes");
    assert_eq!(out.stdout, b"kept\n");
    assert_eq!(engine.status(&u).await.expect("status").state, State::Running);
    let k = kinds(&engine, &u).await;
    assert_eq!(k.iter().filter(|k| *k == "resume").count(), 1, "{k:?}");
    // Not suspended any more: a tick soon after does nothing.
    let r = engine.tick_triggers(SystemTime::now() + Duration::from_secs(60)).await.expect("tick");
    assert!(r.idle_suspended.is_empty(), "{r:?}");

    // Suspended again, then resumed by exec_stream.
    let r = engine.tick_triggers(SystemTime::now() + Duration::from_secs(40 * 60)).await.expect("tick");
    assert_eq!(r.idle_suspended.len(), 1, "{r:?}");
    let mut h = engine.exec_stream(&u, sh("cat f")).await.expect("exec_stream resumes");
    assert_eq!(h.events.recv().await, Some(ExecEvent::Stdout(b"kept\n".to_vec())));

    // An explicit stop stays stopped.
    engine.stop(&u).await.expect("stop");
    let err = engine.exec(&u, sh("true")).await.expect_err("stopped on purpose");
    assert_eq!(err.code(), "conflict", "{err}");
    let r = engine.tick_triggers(SystemTime::now() + Duration::from_secs(40 * 60)).await.expect("tick");
    assert_eq!(r, Default::default(), "a stopped workspace is not suspended again");
    engine.destroy(&u).await.expect("destroy");
}

/// Daily snapshots with a clock the test sets: once per slot, for running or recently used
/// workspaces, caught up once after missed slots.
#[tokio::test(flavor = "multi_thread")]
async fn daily_trigger_once_per_slot() {
    // The slot: the top of the hour two hours from now, so "now" lies within the day before
    // the first fake slot and before the second.
    let now = SystemTime::now().duration_since(UNIX_EPOCH).expect("clock").as_secs();
    let first = now - now % 3600 + 2 * 3600;
    let hour = u8::try_from(first % 86_400 / 3600).expect("hour");
    let mut env = new_env(BackendKind::Dir, 5);
    env.cfg.snapshots.daily_at = Some(TimeOfDay { hour, minute: 0 });
    let engine = env.open().await;
    let (run, cold) = (user("u_run"), user("u_cold"));
    engine.create(&run, CreateOptions::default()).await.expect("create");
    engine.start(&run).await.expect("start");
    engine.exec(&run, sh("echo x > f")).await.expect("exec");
    engine.create(&cold, CreateOptions::default()).await.expect("create");

    let at = |secs: u64| UNIX_EPOCH + Duration::from_secs(first + secs);
    let (h, d) = (3600, 86_400);
    let users = |v: &[(UserId, warren_core::SnapshotId)]| {
        let mut u: Vec<String> = v.iter().map(|(u, _)| u.to_string()).collect();
        u.sort();
        u
    };

    // Half an hour past the first slot: both (the cold one was created since the slot before).
    let r = engine.tick_triggers(at(h / 2)).await.expect("tick");
    assert_eq!(users(&r.daily), ["u_cold", "u_run"], "{r:?}");
    assert!(r.failed.is_empty(), "{r:?}");
    for (u, id) in &r.daily {
        assert_eq!(engine.snapshot_get(u, id).await.expect("daily snapshot").trigger, Trigger::Daily);
    }
    assert_eq!(engine.status(&run).await.expect("status").state, State::Running, "started again after");
    // Same slot: nothing more, also from a new engine (the slot is kept in the store).
    assert_eq!(engine.tick_triggers(at(h)).await.expect("tick"), Default::default());
    let again = env.open().await;
    assert_eq!(again.tick_triggers(at(d - 60)).await.expect("tick"), Default::default());
    // The next slot: only the running one (the cold one was not used since the first slot).
    let r = engine.tick_triggers(at(d + 60)).await.expect("tick");
    assert_eq!(users(&r.daily), ["u_run"], "{r:?}");
    // Days missed: caught up once.
    let r = engine.tick_triggers(at(8 * d + 9 * h)).await.expect("tick");
    assert_eq!(users(&r.daily), ["u_run"], "{r:?}");
    assert_eq!(engine.tick_triggers(at(8 * d + 10 * h)).await.expect("tick"), Default::default());
    assert_eq!(engine.snapshot_list(&run).await.expect("list").len(), 3);
    assert_eq!(engine.snapshot_list(&cold).await.expect("list").len(), 1);
    for u in [&run, &cold] {
        engine.destroy(u).await.expect("destroy");
    }
}

/// A failed restore (archive damaged in storage, missing snapshot) leaves the workspace as it
/// was: same files, still running, no pre-restore snapshot, no debris.
#[tokio::test(flavor = "multi_thread")]
async fn failed_restore_leaves_the_workspace_untouched() {
    let env = new_env(BackendKind::Dir, 6);
    let engine = env.open().await;
    let u = user("u_bad");
    engine.create(&u, CreateOptions::default()).await.expect("create");
    engine.start(&u).await.expect("start");
    fill(&engine, &u).await;
    engine.snapshot_create(&u, Some(snap("good")), SnapshotOptions::default()).await.expect("snapshot");
    engine.exec(&u, sh("echo later > later")).await.expect("exec");
    let home = env.home("u_bad");
    let before = tree(&home);

    let err = engine.snapshot_restore(&u, &snap("nope")).await.expect_err("missing");
    assert_eq!(err.code(), "not_found", "{err}");
    let archive = env.state.join("snapshots/u_bad/good.tar.zst");
    let mut bytes = std::fs::read(&archive).expect("read archive");
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xff;
    std::fs::write(&archive, &bytes).expect("damage archive");
    let err = engine.snapshot_restore(&u, &snap("good")).await.expect_err("damaged");
    assert!(err.to_string().contains("does not match its manifest"), "{err}");

    assert_eq!(tree(&home), before);
    assert_eq!(engine.status(&u).await.expect("status").state, State::Running);
    assert_eq!(engine.snapshot_list(&u).await.expect("list").len(), 1, "no pre-restore snapshot");
    let names: Vec<String> = std::fs::read_dir(env.state.join("workspaces"))
        .expect("ls")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, ["u_bad"]);
    assert!(!kinds(&engine, &u).await.contains(&"snapshot_restore".to_owned()));
    engine.destroy(&u).await.expect("destroy");
}

/// Two snapshots of one user at once are serialised by the user's lock; both succeed.
#[tokio::test(flavor = "multi_thread")]
async fn concurrent_snapshots_of_one_user_are_serialised() {
    let env = new_env(BackendKind::Dir, 7);
    let (e1, e2) = (env.open().await, env.open().await);
    let u = user("u_conc");
    e1.create(&u, CreateOptions::default()).await.expect("create");
    e1.start(&u).await.expect("start");
    fill(&e1, &u).await;
    let (a, b) = tokio::join!(
        e1.snapshot_create(&u, None, SnapshotOptions::default()),
        e2.snapshot_create(&u, None, SnapshotOptions::default())
    );
    let (a, b) = (a.expect("first"), b.expect("second"));
    assert_ne!(a.id, b.id);
    assert_eq!(a.sha256, b.sha256, "the same files, archived one after the other");
    assert_eq!(e1.status(&u).await.expect("status").state, State::Running);
    assert_eq!(e1.snapshot_list(&u).await.expect("list").len(), 2);
    e1.destroy(&u).await.expect("destroy");
}

/// A workspace left frozen (a snapshot process killed between freeze and thaw) is thawed when
/// an engine opens.
#[tokio::test(flavor = "multi_thread")]
async fn frozen_leftover_is_thawed_on_open() {
    if !ns_available() {
        return;
    }
    let env = new_env(BackendKind::Ns, 8);
    let info = {
        let engine = env.open().await;
        let u = user("u_frozen");
        let info = engine.create(&u, CreateOptions::default()).await.expect("create");
        engine.start(&u).await.expect("start");
        info
    };
    let ns = NsBackend::new(&env.state, None).expect("ns backend");
    ns.freeze(&spec_of(&info), true).await.expect("freeze behind warren's back");
    assert_eq!(frozen(&info.workspace_id), Some(true));
    let engine = env.open().await;
    assert_eq!(frozen(&info.workspace_id), Some(false), "thawed on open");
    let out = engine.exec(&info.user, sh("echo ok")).await.expect("exec");
    assert_eq!(out.stdout, b"ok\n");
    engine.destroy(&info.user).await.expect("destroy");
}

/// Export and import round trip, into another user's workspace.
#[tokio::test(flavor = "multi_thread")]
async fn export_import_round_trip() {
    let env = new_env(BackendKind::Dir, 9);
    let engine = env.open().await;
    let (a, b) = (user("u_from"), user("u_to"));
    engine.create(&a, CreateOptions::default()).await.expect("create");
    engine.start(&a).await.expect("start");
    fill(&engine, &a).await;
    let m = engine.snapshot_create(&a, Some(snap("s1")), SnapshotOptions::default()).await.expect("snapshot");
    let file = env.tmp.path().join("s1.tar.zst");
    let e = engine.snapshot_export(&a, &snap("s1"), &file).await.expect("export");
    assert_eq!(e.sha256, m.sha256);
    let err = engine.snapshot_export(&a, &snap("s1"), &file).await.expect_err("exists");
    assert_eq!(err.code(), "already_exists");
    let to = engine.create(&b, CreateOptions::default()).await.expect("create");
    let im = engine.snapshot_import(&b, Some(snap("moved")), &file).await.expect("import");
    assert_eq!((im.trigger, im.file_count, im.sha256.as_str()), (Trigger::Import, m.file_count, m.sha256.as_str()));
    engine.snapshot_restore(&b, &snap("moved")).await.expect("restore import");
    let strip = |t: std::collections::BTreeMap<std::path::PathBuf, Node>| {
        t.into_iter()
            .map(|(p, n)| {
                let n = match n {
                    Node::Dir { mode, .. } => Node::Dir { mode, uid: 0 },
                    Node::File { mode, mtime, data, .. } => Node::File { mode, uid: 0, mtime, data },
                    Node::Symlink { target, .. } => Node::Symlink { uid: 0, target },
                    Node::Other => Node::Other,
                };
                (p, n)
            })
            .collect::<Vec<_>>()
    };
    assert_eq!(strip(tree(&env.home("u_to"))), strip(tree(&env.home("u_from"))));
    owned_by(&env.home("u_to"), to.uid).expect("owned by the importing user's uid");
    // A file that is not an archive is refused and leaves no snapshot.
    let junk = env.tmp.path().join("junk.tar.zst");
    std::fs::write(&junk, b"not zstd").expect("write junk");
    assert!(engine.snapshot_import(&b, Some(snap("junk")), &junk).await.is_err());
    assert!(engine.snapshot_get(&b, &snap("junk")).await.is_err());
    for u in [&a, &b] {
        engine.destroy(u).await.expect("destroy");
    }
}
