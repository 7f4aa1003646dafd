//! Warren's configuration file and settings: the TOML file as `warren` reads it (the core
//! `Config` without `[server]` and `[auth]`, then those two tables as `ServerConfig` and
//! `AuthConfig`), every `validate`, and the small parsers behind settings and environment
//! variables (`parse_duration`, `TimeOfDay`, `parse_listen`, `parse_bool`, `check_image`,
//! `apply_env`).
//!
//! Invariants: no panic; every accepted configuration survives a serialise-and-read round
//! trip unchanged (what `warren` would print, it reads back the same); the time settings of a
//! validated configuration can be added to `Instant::now()` (the server's deadlines) without
//! overflow; an accepted duration is at most 10^15 ms and prints back to itself; a time of day
//! is in range and prints back to itself; an accepted image name has only the allowed
//! characters.
//!
//! Input: the TOML text; each of its lines is also tried as a setting value and, when it
//! looks like `NAME=VALUE`, as an environment variable.
#![no_main]

use std::collections::HashMap;
use std::time::{Duration, Instant};

use libfuzzer_sys::fuzz_target;
use warren_core::config::{parse_duration, Config, TimeOfDay};
use warren_server::config::{apply_env, check_image, parse_bool, parse_listen, AuthConfig, ServerConfig};

fn round_trip<T: serde::Serialize + serde::de::DeserializeOwned + PartialEq + std::fmt::Debug>(what: &str, v: &T) {
    let json = serde_json::to_string(v).unwrap_or_else(|e| panic!("{what} {v:?} does not serialise: {e}"));
    let back: T = serde_json::from_str(&json)
        .unwrap_or_else(|e| panic!("{what} {v:?} printed as {json} does not read back: {e}"));
    assert_eq!(&back, v, "{what} changed in a round trip through {json}");
}

/// The server computes deadlines as `now + setting`; a validated setting must not overflow one.
fn check_deadlines(s: &ServerConfig) {
    let t = s.terminal();
    assert!(t.max_sessions >= 1);
    let now = Instant::now();
    for (name, d) in [
        ("terminal idle", t.idle),
        ("terminal reconnect", t.reconnect),
        ("request_timeout_secs", Duration::from_secs(s.request_timeout_secs)),
        ("exec_timeout_secs", Duration::from_secs(s.exec_timeout_secs)),
        ("max_exec_timeout_secs", Duration::from_secs(s.max_exec_timeout_secs)),
        ("shutdown_grace_secs", Duration::from_secs(s.shutdown_grace_secs)),
    ] {
        assert!(now.checked_add(d).is_some(), "a validated {name} of {d:?} overflows `now + {name}`");
    }
}

fn check_file(text: &str) {
    let Ok(mut table) = text.parse::<toml::Table>() else { return };
    let server = table.remove("server");
    let auth = table.remove("auth");
    if let Ok(cfg) = toml::Value::Table(table).try_into::<Config>() {
        round_trip("Config", &cfg);
        let _ = cfg.limits.validate();
        let _ = cfg.snapshots.validate();
        if let Some(d) = cfg.snapshots.idle_suspend_after {
            assert!(!d.is_zero(), "a zero idle time reads as off");
            assert!(Instant::now().checked_add(d).is_some(), "idle_suspend_after {d:?} overflows a deadline");
        }
    }
    if let Some(v) = server {
        if let Ok(s) = v.try_into::<ServerConfig>() {
            round_trip("ServerConfig", &s);
            if s.validate().is_ok() {
                check_deadlines(&s);
            }
        }
    }
    if let Some(v) = auth {
        if let Ok(a) = v.try_into::<AuthConfig>() {
            round_trip("AuthConfig", &a);
        }
    }
}

fn check_value(v: &str) {
    if let Ok(d) = parse_duration(v) {
        assert!(d <= Duration::from_millis(1_000_000_000_000_000), "{v:?} -> {d:?}");
        let again = parse_duration(&format!("{}ms", d.as_millis())).expect("a printed duration parses");
        assert_eq!(again, d, "{v:?}");
    }
    if let Ok(t) = v.parse::<TimeOfDay>() {
        assert!(t.hour <= 23 && t.minute <= 59, "{v:?} -> {t:?}");
        assert_eq!(t.to_string().parse::<TimeOfDay>().ok(), Some(t), "{v:?}");
        assert!(t.seconds() < 86_400);
    }
    if let Ok(addr) = parse_listen(v) {
        assert_eq!(parse_listen(&addr.to_string()).ok(), Some(addr), "{v:?}");
    }
    let _ = parse_bool("X", v);
    if check_image("CONTAINER_IMAGE", v).is_ok() {
        assert!(!v.is_empty() && v.len() <= 255);
        assert!(v.bytes().all(|b| b.is_ascii_alphanumeric() || b"./:_@-".contains(&b)), "{v:?}");
    }
}

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    check_file(&text);
    let mut env = HashMap::new();
    for line in text.lines().take(64) {
        check_value(line);
        if let Some((k, v)) = line.split_once('=') {
            env.insert(k.to_owned(), v.to_owned());
        }
    }
    if !env.is_empty() {
        let (mut s, mut a) = (ServerConfig::default(), AuthConfig::default());
        if apply_env(&mut s, &mut a, |k| env.get(k).cloned()).is_ok() {
            round_trip("ServerConfig from the environment", &s);
            if s.validate().is_ok() {
                check_deadlines(&s);
            }
        }
    }
});
