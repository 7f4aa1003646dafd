//! Inputs the fuzz targets (`fuzz/`) found, kept as tests of the public API.

use std::time::Duration;

use warren_core::config::{parse_duration, SnapshotConfig};

/// `fuzz/corpus/config/regress-idle-secs`: `idle_suspend_after` given as a number of seconds
/// was taken as it was, while the same value as text is refused (over 10^15 ms); so a
/// configuration warren accepted printed as `"9000000000000s"`, which it could not read back.
/// Both forms now go through `parse_duration`.
#[test]
fn idle_suspend_after_in_seconds_has_the_range_of_the_text_form() {
    for too_big in ["9000000000000", "18446744073709551615"] {
        let json = format!(r#"{{"idle_suspend_after":{too_big}}}"#);
        let e = serde_json::from_str::<SnapshotConfig>(&json).expect_err(too_big).to_string();
        assert!(e.contains("invalid duration"), "{too_big}: {e}");
        assert!(parse_duration(too_big).is_err(), "the text form refuses {too_big} too");
    }
    // The largest accepted value round-trips through its printed form.
    let c: SnapshotConfig = serde_json::from_str(r#"{"idle_suspend_after":1000000000000}"#).expect("in range");
    assert_eq!(c.idle_suspend_after, Some(Duration::from_secs(1_000_000_000_000)));
    let back: SnapshotConfig = serde_json::from_str(&serde_json::to_string(&c).expect("print")).expect("read back");
    assert_eq!(back, c);
    // Zero still means off.
    let off: SnapshotConfig = serde_json::from_str(r#"{"idle_suspend_after":0}"#).expect("zero");
    assert_eq!(off.idle_suspend_after, None);
}
