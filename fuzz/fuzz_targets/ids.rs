//! Ids: `UserId`, `SnapshotId` and `WorkspaceId` constructors (and their serde and `FromStr`
//! forms), `UserId::linux_username`.
//!
//! Invariants: no panic; every form agrees with `new`; an accepted id is one safe path
//! component (no `/`, NUL, `.` or `..`; a `WorkspacePath` of exactly that one name), at most 64
//! printable ASCII bytes, and survives a JSON round trip; a Linux user name is at most 32
//! bytes of `[a-z0-9_-]`, starts with a letter, is `u_...` or `w-` + 16 hex digits, and two
//! different ids never share one. The input is split at its first newline into two ids.
#![no_main]

use std::path::{Component, Path};
use std::str::FromStr;

use libfuzzer_sys::fuzz_target;
use warren_core::{SnapshotId, UserId, WorkspaceId, WorkspacePath};

fn safe_component(kind: &str, s: &str) {
    assert!(!s.is_empty() && s.len() <= 64, "{kind} {s:?}: length");
    assert!(s.bytes().all(|b| b.is_ascii_graphic()), "{kind} {s:?}: only printable ASCII");
    assert!(!s.contains('/') && s != "." && s != "..", "{kind} {s:?}: not a single safe name");
    let p = WorkspacePath::new(s).unwrap_or_else(|e| panic!("{kind} {s:?} is not a workspace path: {e}"));
    let comps: Vec<Component<'_>> = p.as_path().components().collect();
    assert_eq!(comps, vec![Component::Normal(s.as_ref())], "{kind} {s:?} is not exactly one path component");
    assert_eq!(Path::new(s).file_name().and_then(|n| n.to_str()), Some(s), "{kind} {s:?}: file name");
}

fn check_user(s: &str) -> Option<UserId> {
    let id = UserId::new(s);
    assert_eq!(id.is_ok(), UserId::from_str(s).is_ok(), "UserId::new and from_str disagree on {s:?}");
    let json = serde_json::to_string(s).expect("a string serialises");
    let via_serde: Result<UserId, _> = serde_json::from_str(&json);
    assert_eq!(id.is_ok(), via_serde.is_ok(), "UserId::new and serde disagree on {s:?}");
    let snap = SnapshotId::new(s);
    assert_eq!(id.is_ok(), snap.is_ok(), "user and snapshot ids follow the same rule: {s:?}");
    let id = id.ok()?;
    assert_eq!(id.as_str(), s);
    assert_eq!(via_serde.ok().as_ref(), Some(&id));
    assert_eq!(serde_json::to_string(&id).ok(), Some(json), "serialises as the plain string");
    safe_component("user id", s);
    assert!(s.as_bytes()[0].is_ascii_alphanumeric(), "user id {s:?} starts with a letter or digit");
    assert!(!s.contains(".."), "user id {s:?} contains '..'");
    let name = id.linux_username();
    assert!(!name.is_empty() && name.len() <= 32, "{s:?} -> {name:?}: Linux user names are at most 32 bytes");
    assert!(
        name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-'),
        "{s:?} -> {name:?}: only [a-z0-9_-]"
    );
    assert!(name.as_bytes()[0].is_ascii_lowercase(), "{s:?} -> {name:?}: starts with a letter");
    if let Some(hex) = name.strip_prefix("w-") {
        assert!(hex.len() == 16 && hex.bytes().all(|b| b.is_ascii_hexdigit()), "{s:?} -> {name:?}");
    } else {
        assert!(name.starts_with("u_") && name == s, "{s:?} -> {name:?}: only u_ ids are used as they are");
    }
    assert_eq!(id.linux_username(), name, "deterministic");
    assert_eq!(id.is_reserved(), UserId::RESERVED_PREFIXES.iter().any(|p| s.starts_with(p)));
    Some(id)
}

fn check_workspace(s: &str) {
    let Ok(id) = WorkspaceId::new(s) else { return };
    assert_eq!(id.as_str(), s);
    assert!(s.len() == 29 && s.starts_with("ws_"), "workspace id {s:?}");
    assert!(s[3..].bytes().all(|b| b"0123456789ABCDEFGHJKMNPQRSTVWXYZ".contains(&b)), "workspace id {s:?}");
    safe_component("workspace id", s);
    let back: WorkspaceId = serde_json::from_str(&serde_json::to_string(&id).expect("ser")).expect("round trip");
    assert_eq!(back, id);
}

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let (a, b) = text.split_once('\n').unwrap_or((&text, ""));
    let ua = check_user(a);
    let ub = check_user(b);
    check_workspace(a);
    check_workspace(b);
    if let (Some(ua), Some(ub)) = (ua, ub) {
        if ua != ub {
            assert_ne!(ua.linux_username(), ub.linux_username(), "{ua:?} and {ub:?} share a Linux user name");
        }
    }
});
