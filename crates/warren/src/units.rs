//! Parsing of the human units the command line takes: sizes (`512M`), CPUs (`1.5`), durations
//! (`30s`), octal modes (`644`) and `KEY=VALUE` pairs.

use std::time::Duration;

/// A limit that may be switched off with `unlimited` (or `none`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limit<T>(pub Option<T>);

fn is_unlimited(s: &str) -> bool {
    matches!(s.to_ascii_lowercase().as_str(), "unlimited" | "none")
}

/// Splits `"1.5"` into whole and fractional parts of a decimal number, each all digits.
fn decimal(s: &str) -> Option<(&str, &str)> {
    let (whole, frac) = s.split_once('.').unwrap_or((s, ""));
    let digits = |x: &str| x.bytes().all(|b| b.is_ascii_digit());
    if (whole.is_empty() && frac.is_empty()) || !digits(whole) || !digits(frac) || (s.contains('.') && frac.is_empty())
    {
        return None;
    }
    Some((whole, frac))
}

/// `whole.frac * mult`, rounded down, exactly (no floating point).
fn scale(whole: &str, frac: &str, mult: u128) -> Option<u128> {
    let w: u128 = if whole.is_empty() { 0 } else { whole.parse().ok()? };
    let frac = &frac[..frac.len().min(18)];
    let f: u128 = if frac.is_empty() { 0 } else { frac.parse().ok()? };
    let den = 10u128.checked_pow(u32::try_from(frac.len()).ok()?)?;
    w.checked_mul(mult)?.checked_add(f.checked_mul(mult)? / den)
}

/// A size in bytes: a number with an optional binary unit, `K`, `M`, `G`, `T` (also written
/// `KB`, `KiB`, ..., any case); no unit means bytes. `1.5G` is allowed.
pub fn parse_size(s: &str) -> Result<u64, String> {
    let err = || {
        format!(
            "invalid size {s:?}: use a number with an optional unit K, M, G or T (powers of 1024), like 512M or 1.5G"
        )
    };
    let t = s.trim();
    let split = t.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let mult: u128 = match unit.to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        "t" | "tb" | "tib" => 1 << 40,
        _ => return Err(err()),
    };
    let (whole, frac) = decimal(num).ok_or_else(err)?;
    let v = scale(whole, frac, mult).ok_or_else(err)?;
    u64::try_from(v).map_err(|_| format!("size {s:?} is too large"))
}

/// [`parse_size`], or `unlimited`.
pub fn parse_size_limit(s: &str) -> Result<Limit<u64>, String> {
    if is_unlimited(s) {
        return Ok(Limit(None));
    }
    parse_size(s).map(|v| Limit(Some(v)))
}

/// CPUs as a decimal number of cores (`1.5`), returned in thousandths of a core; or `unlimited`.
pub fn parse_cpus(s: &str) -> Result<Limit<u32>, String> {
    if is_unlimited(s) {
        return Ok(Limit(None));
    }
    let err = || format!("invalid CPU count {s:?}: give cores as a decimal number, like 1 or 1.5 or 0.25");
    let (whole, frac) = decimal(s.trim()).ok_or_else(err)?;
    let millis = scale(whole, frac, 1000).ok_or_else(err)?;
    u32::try_from(millis).map(|m| Limit(Some(m))).map_err(|_| err())
}

/// A count (`256`), or `unlimited`.
pub fn parse_count(s: &str) -> Result<Limit<u32>, String> {
    if is_unlimited(s) {
        return Ok(Limit(None));
    }
    s.trim()
        .parse()
        .map(|n| Limit(Some(n)))
        .map_err(|_| format!("invalid number {s:?}: give a whole number or 'unlimited'"))
}

/// A duration: a number with a unit `ms`, `s`, `m` or `h` (no unit means seconds): `30s`,
/// `1.5m`, `500ms`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let err = || format!("invalid duration {s:?}: use a number with a unit ms, s, m or h, like 30s or 5m");
    let t = s.trim();
    let split = t.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let ms_per: u128 = match unit {
        "ms" => 1,
        "" | "s" => 1000,
        "m" => 60_000,
        "h" => 3_600_000,
        _ => return Err(err()),
    };
    let (whole, frac) = decimal(num).ok_or_else(err)?;
    let ms = scale(whole, frac, ms_per).ok_or_else(err)?;
    let ms = u64::try_from(ms).map_err(|_| err())?;
    if ms == 0 {
        return Err(format!("duration {s:?} must be more than zero"));
    }
    Ok(Duration::from_millis(ms))
}

/// Permission bits in octal (`644`, `0755`).
pub fn parse_mode(s: &str) -> Result<u32, String> {
    let m = u32::from_str_radix(s.trim(), 8)
        .map_err(|_| format!("invalid mode {s:?}: give octal permission bits like 644"))?;
    if m > 0o777 {
        return Err(format!("mode {s:?} has bits beyond 777: only permission bits are allowed"));
    }
    Ok(m)
}

/// `KEY=VALUE`.
pub fn parse_env(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_owned(), v.to_owned())),
        _ => Err(format!("invalid environment variable {s:?}: write it as KEY=VALUE")),
    }
}

/// A size for people: `512M`, `1.5G`, `100K`, `42` (bytes).
pub fn format_size(bytes: u64) -> String {
    for (unit, shift) in [("T", 40), ("G", 30), ("M", 20), ("K", 10)] {
        let size = 1u64 << shift;
        if bytes >= size {
            let tenths = (u128::from(bytes) * 10 / u128::from(size)) as u64;
            return if tenths.is_multiple_of(10) {
                format!("{}{unit}", tenths / 10)
            } else {
                format!("{}.{}{unit}", tenths / 10, tenths % 10)
            };
        }
    }
    bytes.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("512M"), Ok(512 << 20));
        assert_eq!(parse_size("1G"), Ok(1 << 30));
        assert_eq!(parse_size("1g"), Ok(1 << 30));
        assert_eq!(parse_size("1GiB"), Ok(1 << 30));
        assert_eq!(parse_size("2gb"), Ok(2 << 30));
        assert_eq!(parse_size("1.5G"), Ok(3 << 29));
        assert_eq!(parse_size("100K"), Ok(102_400));
        assert_eq!(parse_size("4096"), Ok(4096));
        assert_eq!(parse_size("10B"), Ok(10));
        assert_eq!(parse_size(" 64M "), Ok(64 << 20));
        assert_eq!(parse_size("0.5K"), Ok(512));
        assert_eq!(parse_size("2T"), Ok(2 << 40));
        for bad in ["", "M", "12X", "1.2.3G", "-1G", "1 G", ".", "1.G", "G1", "99999999999T"] {
            let e = parse_size(bad).expect_err(bad);
            assert!(e.contains(&format!("{bad:?}")), "{e}");
        }
        assert_eq!(parse_size_limit("unlimited"), Ok(Limit(None)));
        assert_eq!(parse_size_limit("1M"), Ok(Limit(Some(1 << 20))));
    }

    #[test]
    fn cpus_counts_durations_modes_env() {
        assert_eq!(parse_cpus("1.5"), Ok(Limit(Some(1500))));
        assert_eq!(parse_cpus("2"), Ok(Limit(Some(2000))));
        assert_eq!(parse_cpus("0.25"), Ok(Limit(Some(250))));
        assert_eq!(parse_cpus("none"), Ok(Limit(None)));
        assert!(parse_cpus("1,5").is_err());
        assert!(parse_cpus("-1").is_err());
        assert_eq!(parse_count("256"), Ok(Limit(Some(256))));
        assert!(parse_count("2.5").is_err());
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("30"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("1.5m"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("2h"), Ok(Duration::from_secs(7200)));
        assert!(parse_duration("0s").is_err());
        assert!(parse_duration("5 min").is_err());
        assert_eq!(parse_mode("644"), Ok(0o644));
        assert_eq!(parse_mode("0755"), Ok(0o755));
        assert!(parse_mode("4755").is_err());
        assert!(parse_mode("9").is_err());
        assert_eq!(parse_env("A=b=c"), Ok(("A".into(), "b=c".into())));
        assert_eq!(parse_env("A="), Ok(("A".into(), String::new())));
        assert!(parse_env("A").is_err());
        assert!(parse_env("=x").is_err());
    }

    #[test]
    fn formats_sizes() {
        assert_eq!(format_size(512 << 20), "512M");
        assert_eq!(format_size(3 << 29), "1.5G");
        assert_eq!(format_size(1000), "1000");
        assert_eq!(format_size(2 << 30), "2G");
    }
}
