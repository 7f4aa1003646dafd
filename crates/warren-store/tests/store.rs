//! The store on real SQLite files in temporary directories.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::process::{Command, Stdio};

use serde_json::json;
use warren_core::{BackendKind, Limits, UserId, WorkspaceId};
use warren_store::{DesiredState, NewEvent, Store, StoreError, Timestamp, WorkspaceRecord, SCHEMA_VERSION};

const BASE: u32 = 2_000_000;
const COUNT: u32 = 1 << 30;

fn user(s: &str) -> UserId {
    UserId::new(s).expect("valid user id")
}

fn record(store: &Store, u: &UserId) -> WorkspaceRecord {
    let uid = store.allocate_uid(u, BASE, COUNT).expect("allocate uid");
    let now = Timestamp::now();
    WorkspaceRecord {
        user: u.clone(),
        workspace_id: WorkspaceId::generate(),
        uid,
        username: u.linux_username(),
        backend: BackendKind::Dir,
        desired_state: DesiredState::Stopped,
        limits: Limits::default(),
        network: false,
        image: None,
        created_at: now,
        updated_at: now,
    }
}

fn ev(kind: &str) -> NewEvent {
    NewEvent::new(kind, json!({}))
}

#[test]
fn migrates_an_empty_file_and_reopens() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("warren.db");
    let u = user("u_123");
    let rec = {
        let store = Store::open(&path).expect("open new store");
        assert_eq!(store.schema_version().expect("version"), SCHEMA_VERSION);
        store.integrity_check().expect("integrity");
        let rec = record(&store, &u);
        store.insert_workspace(&rec, &ev("create")).expect("insert");
        rec
    };
    // The file is private: workspace processes run as other uids on the same host.
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&path).expect("stat db").permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "db mode {mode:o}");

    let store = Store::open(&path).expect("reopen");
    assert_eq!(store.schema_version().expect("version"), SCHEMA_VERSION);
    let got = store.get_workspace(&u).expect("get").expect("present after reopen");
    assert_eq!(got, rec);
    assert_eq!(store.list_workspaces().expect("list"), vec![rec]);
    let journal: String = rusqlite::Connection::open(&path)
        .expect("raw open")
        .query_row("PRAGMA journal_mode", [], |r| r.get(0))
        .expect("journal mode");
    assert_eq!(journal.to_lowercase(), "wal");
}

#[test]
fn refuses_a_newer_schema() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("warren.db");
    drop(Store::open(&path).expect("open"));
    rusqlite::Connection::open(&path)
        .expect("raw open")
        .pragma_update(None, "user_version", SCHEMA_VERSION + 1)
        .expect("bump version");
    let err = Store::open(&path).expect_err("a newer schema must be refused");
    assert!(
        matches!(err, StoreError::TooNew { found, known, .. } if found == SCHEMA_VERSION + 1 && known == SCHEMA_VERSION)
    );
    let msg = err.to_string();
    assert!(msg.contains("newer") && msg.contains("upgrade warren"), "{msg}");
    let core: warren_core::Error = err.into();
    assert_eq!(core.code(), "internal");
}

#[test]
fn workspace_rows_and_events() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(dir.path().join("warren.db")).expect("open");
    let u = user("u_1");
    let rec = record(&store, &u);
    store.insert_workspace(&rec, &ev("create")).expect("insert");

    let again = WorkspaceRecord { workspace_id: WorkspaceId::generate(), ..rec.clone() };
    let err = store.insert_workspace(&again, &ev("create")).expect_err("second insert");
    assert!(matches!(err, StoreError::AlreadyExists(ref who) if who == &u), "{err}");
    assert_eq!(warren_core::Error::from(err).code(), "already_exists");

    let running = store.set_desired_state(&u, DesiredState::Running, &ev("start")).expect("set running");
    assert_eq!(running.desired_state, DesiredState::Running);
    assert!(running.updated_at >= rec.updated_at);
    assert_eq!(store.get_workspace(&u).expect("get").expect("present").desired_state, DesiredState::Running);

    let gone = store.delete_workspace(&u, &ev("destroy")).expect("delete");
    assert_eq!(gone.workspace_id, rec.workspace_id);
    assert!(store.get_workspace(&u).expect("get").is_none());
    let err = store.delete_workspace(&u, &ev("destroy")).expect_err("delete twice");
    assert_eq!(warren_core::Error::from(err).code(), "not_found");
    let err = store.set_desired_state(&u, DesiredState::Stopped, &ev("stop")).expect_err("no row");
    assert!(matches!(err, StoreError::NotFound(_)));

    let kinds: Vec<_> = store.events(Some(&u), 100).expect("events").into_iter().map(|e| e.kind).collect();
    assert_eq!(kinds, ["uid_allocated", "create", "start", "destroy"]);
    let last = store.events(None, 1).expect("events");
    assert_eq!(last.len(), 1);
    assert_eq!(last[0].kind, "destroy");
    assert_eq!(last[0].workspace_id.as_ref(), Some(&rec.workspace_id));
    let id = store.record_event(None, None, &NewEvent::new("note", json!({"x": 1}))).expect("record");
    let last = store.events(None, 1).expect("events");
    assert_eq!((last[0].id, last[0].detail.clone()), (id, json!({"x": 1})));
}

#[test]
fn a_workspace_needs_its_users_uid() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(dir.path().join("warren.db")).expect("open");
    let now = Timestamp::now();
    let mut rec = WorkspaceRecord {
        user: user("u_x"),
        workspace_id: WorkspaceId::generate(),
        uid: BASE,
        username: "u_x".into(),
        backend: BackendKind::Dir,
        desired_state: DesiredState::Stopped,
        limits: Limits::default(),
        network: true,
        image: Some("python:3.11".into()),
        created_at: now,
        updated_at: now,
    };
    let err = store.insert_workspace(&rec, &ev("create")).expect_err("no allocation");
    assert!(err.to_string().contains("no uid allocation"), "{err}");
    let uid = store.allocate_uid(&rec.user, BASE, COUNT).expect("allocate");
    rec.uid = uid + 1;
    let err = store.insert_workspace(&rec, &ev("create")).expect_err("wrong uid");
    assert!(err.to_string().contains("allocation is"), "{err}");
    rec.uid = uid;
    store.insert_workspace(&rec, &ev("create")).expect("right uid");
    let back = store.get_workspace(&rec.user).expect("get").expect("present");
    assert_eq!(back.image.as_deref(), Some("python:3.11"), "a workspace's own image is kept");
    assert!(store.get_workspace(&rec.user).expect("get").expect("present").network);
    assert!(store.events(Some(&rec.user), 10).expect("events").iter().all(|e| e.kind != "failed"));
}

#[test]
fn uids_are_deterministic_stable_and_distinct() {
    let dir = tempfile::tempdir().expect("tempdir");
    let a = Store::open(dir.path().join("a.db")).expect("open a");
    let b = Store::open(dir.path().join("b.db")).expect("open b");
    let u = user("user_2NfXabc");
    let uid = a.allocate_uid(&u, BASE, COUNT).expect("allocate");
    let expected = BASE + u32::try_from(u.stable_hash() % u64::from(COUNT)).expect("fits");
    assert_eq!(uid, expected);
    assert_eq!(b.allocate_uid(&u, BASE, COUNT).expect("allocate in b"), uid, "same user, same store contents");
    assert_eq!(a.allocate_uid(&u, BASE, COUNT).expect("again"), uid, "existing allocation returned");
    assert_eq!(a.uid_of(&u).expect("uid_of"), Some(uid));

    // A tiny range: every user still gets a distinct uid in range, by probing, until it is full.
    let small = Store::open(dir.path().join("small.db")).expect("open small");
    let users: Vec<UserId> = (0..4).map(|i| user(&format!("u_{i}"))).collect();
    let uids: HashSet<u32> = users.iter().map(|u| small.allocate_uid(u, 100, 4).expect("allocate small")).collect();
    assert_eq!(uids, (100..104).collect::<HashSet<_>>());
    let err = small.allocate_uid(&user("u_9"), 100, 4).expect_err("full");
    assert!(matches!(err, StoreError::UidRangeExhausted { .. }), "{err}");
    // Allocations survive destroying the workspace (they are never released).
    let rec = record(&small, &users[0]);
    small.insert_workspace(&rec, &ev("create")).expect("insert");
    small.delete_workspace(&users[0], &ev("destroy")).expect("delete");
    assert_eq!(small.allocate_uid(&users[0], 100, 4).expect("same uid again"), rec.uid);

    for (base, count) in [(0, 10), (10, 0), (u32::MAX - 5, 10)] {
        let err = a.allocate_uid(&u, base, count).expect_err("bad range");
        assert_eq!(warren_core::Error::from(err).code(), "invalid_request");
    }
}

#[test]
fn concurrent_allocations_across_connections_are_distinct() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("warren.db");
    drop(Store::open(&path).expect("create"));
    let handles: Vec<_> = (0..4)
        .map(|t| {
            let path = path.clone();
            std::thread::spawn(move || {
                let store = Store::open(&path).expect("open");
                (0..10)
                    .map(|i| {
                        let u = user(&format!("u_{}", i % 5 + t * 5));
                        (u.clone(), store.allocate_uid(&u, 500, 20).expect("allocate"))
                    })
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    let mut by_user: HashMap<UserId, u32> = HashMap::new();
    for h in handles {
        for (u, uid) in h.join().expect("thread") {
            assert_eq!(*by_user.entry(u).or_insert(uid), uid, "a user's uid never changes");
        }
    }
    let uids: HashSet<u32> = by_user.values().copied().collect();
    assert_eq!(uids.len(), 20, "20 users, 20 distinct uids: {by_user:?}");
    assert!(uids.iter().all(|u| (500..520).contains(u)));
}

const CHILD_ENV: &str = "WARREN_STORE_TEST_CHILD_DB";

/// Not a test on its own: the child process of `kill_9_mid_write_leaves_a_consistent_db`, which
/// writes until it is killed. Without the variable it does nothing.
#[test]
fn kill_child_writer() {
    let Some(path) = std::env::var_os(CHILD_ENV) else { return };
    let store = Store::open(Path::new(&path)).expect("child open");
    for i in 0u64.. {
        let u = user(&format!("u_{i}"));
        let rec = record(&store, &u);
        store.insert_workspace(&rec, &NewEvent::new("create", json!({ "i": i }))).expect("insert");
        store.set_desired_state(&u, DesiredState::Running, &ev("start")).expect("start");
        if i % 3 == 0 {
            store.delete_workspace(&u, &ev("destroy")).expect("delete");
        }
    }
}

#[test]
fn kill_9_mid_write_leaves_a_consistent_db() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("warren.db");
    drop(Store::open(&path).expect("create"));
    let exe = std::env::current_exe().expect("test binary");
    for round in 0..3 {
        let mut child = Command::new(&exe)
            .args(["--exact", "kill_child_writer", "--nocapture", "--test-threads=1"])
            .env(CHILD_ENV, &path)
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn writer");
        // Let it write for a while (until it has made progress this round), then SIGKILL it.
        let reader = Store::open(&path).expect("reader");
        let before = reader.events(None, 1).expect("events").first().map(|e| e.id).unwrap_or(0);
        loop {
            let now = reader.events(None, 1).expect("events").first().map(|e| e.id).unwrap_or(0);
            if now >= before + 40 {
                break;
            }
            assert!(child.try_wait().expect("try_wait").is_none(), "writer exited early in round {round}");
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        child.kill().expect("SIGKILL the writer");
        let status = child.wait().expect("wait");
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(status.signal(), Some(9), "killed by SIGKILL");
        drop(reader);
        check_consistent(&path);
        let store = Store::open(&path).expect("reopen");
        let rows = store.list_workspaces().expect("list");
        for r in rows {
            // The next round's writer starts again at u_0: make room for it.
            store.delete_workspace(&r.user, &ev("destroy")).expect("clean up between rounds");
        }
    }
}

/// No half-written change: every row has its allocation and its `create` event, every `create`
/// event has its row or a `destroy` event, every `start` event its row in `running` or a destroy.
fn check_consistent(path: &Path) {
    let store = Store::open(path).expect("reopen after kill -9");
    store.integrity_check().expect("integrity_check ok");
    let rows: HashMap<WorkspaceId, WorkspaceRecord> =
        store.list_workspaces().expect("list").into_iter().map(|r| (r.workspace_id.clone(), r)).collect();
    let events = store.events(None, usize::MAX).expect("events");
    let of = |kind: &str| -> HashSet<WorkspaceId> {
        events.iter().filter(|e| e.kind == kind).filter_map(|e| e.workspace_id.clone()).collect()
    };
    let (created, started, destroyed) = (of("create"), of("start"), of("destroy"));
    for (id, r) in &rows {
        assert!(created.contains(id), "row {id} without its create event");
        assert_eq!(store.uid_of(&r.user).expect("uid_of"), Some(r.uid), "row {id} without its allocation");
        assert_eq!(
            r.desired_state == DesiredState::Running,
            started.contains(id),
            "row {id}: desired state and start event disagree"
        );
    }
    for id in &created {
        assert!(rows.contains_key(id) || destroyed.contains(id), "create event of {id} without its row");
    }
    for id in &destroyed {
        assert!(!rows.contains_key(id), "destroyed {id} still has a row");
    }
    let allocated: HashSet<UserId> =
        events.iter().filter(|e| e.kind == "uid_allocated").filter_map(|e| e.user.clone()).collect();
    for r in rows.values() {
        assert!(allocated.contains(&r.user), "allocation of {} without its event", r.user);
    }
}

#[test]
fn workspace_activity_is_kept_and_goes_with_the_workspace() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(dir.path().join("warren.db")).expect("open");
    let u = user("u_act");
    // Nothing recorded for a user without a workspace, and no error.
    store.touch_activity(&u, Timestamp::from_millis(5)).expect("touch without workspace");
    assert_eq!(store.activity(&u).expect("activity"), warren_store::Activity::default());
    store.insert_workspace(&record(&store, &u), &ev("create")).expect("insert");
    store.touch_activity(&u, Timestamp::from_millis(2_000)).expect("touch");
    store.touch_activity(&u, Timestamp::from_millis(1_000)).expect("an older touch");
    store.set_suspended(&u, true, Some(&ev("idle_suspend"))).expect("suspend");
    store.set_last_daily(&u, Timestamp::from_millis(3_000)).expect("daily");
    let a = store.activity(&u).expect("activity");
    assert_eq!(a.last_activity, Some(Timestamp::from_millis(2_000)), "the later time is kept");
    assert!(a.suspended);
    assert_eq!(a.last_daily, Some(Timestamp::from_millis(3_000)));
    assert_eq!(store.events(Some(&u), 1).expect("events")[0].kind, "idle_suspend");
    store.set_suspended(&u, false, None).expect("resume");
    assert!(!store.activity(&u).expect("activity").suspended);
    store.delete_workspace(&u, &ev("destroy")).expect("delete");
    assert_eq!(store.activity(&u).expect("activity"), warren_store::Activity::default(), "deleted with it");
    store.integrity_check().expect("integrity");
}

#[test]
fn monitor_policies_are_kept_per_workspace_and_go_with_it() {
    use warren_core::monitor::{Action, MonitorPolicy};
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(dir.path().join("w.db")).expect("open");
    let u = user("u_policy");
    let policy = MonitorPolicy { action: Action::Kill, memory_percent: Some(50), ..MonitorPolicy::default() };
    let err = store.set_policy(&u, Some(&policy), &ev("policy")).expect_err("no workspace yet");
    assert!(matches!(err, StoreError::NotFound(_)), "{err:?}");
    store.insert_workspace(&record(&store, &u), &ev("create")).expect("insert");
    assert_eq!(store.policy(&u).expect("read"), None, "no policy of its own yet");
    store.set_policy(&u, Some(&policy), &ev("policy")).expect("set");
    assert_eq!(store.policy(&u).expect("read"), Some(policy.clone()));
    assert_eq!(store.events(Some(&u), 1).expect("events")[0].kind, "policy");
    store.set_policy(&u, None, &ev("policy")).expect("clear");
    assert_eq!(store.policy(&u).expect("read"), None);
    store.set_policy(&u, Some(&policy), &ev("policy")).expect("set again");
    store.delete_workspace(&u, &ev("destroy")).expect("delete");
    store.insert_workspace(&record(&store, &u), &ev("create")).expect("recreate");
    assert_eq!(store.policy(&u).expect("read"), None, "a destroyed workspace's policy goes with it");
}
