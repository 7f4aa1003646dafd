//! Inputs the fuzz targets (`fuzz/`) found, kept as tests of the public API.

use std::time::{Duration, Instant};

use warren_server::config::{apply_env, AuthConfig, ServerConfig, MAX_SECS};

/// A setting's name and how to set it.
type Setting = (&'static str, fn(&mut ServerConfig, u64));

/// `fuzz/corpus/config/regress-terminal-idle` and `regress-env-reconnect`: time settings near
/// `u64::MAX` passed `validate`, and a terminal session's deadline (`now + terminal_idle_secs`)
/// then panicked on overflow. Every `*_secs` setting is now bounded, naming the setting.
#[test]
fn time_settings_that_would_overflow_a_deadline_are_refused() {
    let cases: [Setting; 6] = [
        ("server.terminal_idle_secs", |s, v| s.terminal_idle_secs = v),
        ("server.terminal_reconnect_secs", |s, v| s.terminal_reconnect_secs = v),
        ("server.request_timeout_secs", |s, v| s.request_timeout_secs = v),
        ("server.exec_timeout_secs", |s, v| s.exec_timeout_secs = v),
        ("server.max_exec_timeout_secs", |s, v| s.max_exec_timeout_secs = v),
        ("server.shutdown_grace_secs", |s, v| s.shutdown_grace_secs = v),
    ];
    for (name, set) in cases {
        let mut s = ServerConfig::default();
        set(&mut s, u64::MAX);
        let e = s.validate().expect_err(name).to_string();
        assert!(e.contains(name) && e.contains("at most"), "{name}: {e}");
        // The bound itself is accepted and is a deadline that exists.
        set(&mut s, MAX_SECS);
        s.validate().unwrap_or_else(|e| panic!("{name} = MAX_SECS: {e}"));
        assert!(Instant::now().checked_add(Duration::from_secs(MAX_SECS)).is_some());
    }
    // The same through the environment.
    let (mut s, mut a) = (ServerConfig::default(), AuthConfig::default());
    apply_env(&mut s, &mut a, |k| (k == "WARREN_TERMINAL_RECONNECT_SECS").then(|| u64::MAX.to_string()))
        .expect("a number");
    let e = s.validate().expect_err("overflowing reconnect time").to_string();
    assert!(e.contains("terminal_reconnect_secs"), "{e}");
}
