//! Percentiles and means of latency samples.

use std::time::Duration;

use serde::Serialize;

/// Summary of one row's samples, in milliseconds.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Summary {
    /// Number of samples.
    pub n: usize,
    /// Median (nearest rank).
    pub p50_ms: f64,
    /// 99th percentile (nearest rank).
    pub p99_ms: f64,
    /// Arithmetic mean.
    pub mean_ms: f64,
    /// Fastest sample.
    pub min_ms: f64,
    /// Slowest sample.
    pub max_ms: f64,
}

/// Milliseconds in `d`, as a float rounded to the microsecond.
pub fn ms(d: Duration) -> f64 {
    (d.as_secs_f64() * 1e6).round() / 1e3
}

/// The nearest-rank percentile `p` (0 < p <= 100) of sorted samples; `None` when empty.
pub fn percentile(sorted: &[Duration], p: f64) -> Option<Duration> {
    if sorted.is_empty() {
        return None;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    Some(sorted[rank.clamp(1, sorted.len()) - 1])
}

/// Summarises samples; `None` when there are none.
pub fn summarize(samples: &[Duration]) -> Option<Summary> {
    let mut sorted = samples.to_vec();
    sorted.sort_unstable();
    let total: Duration = sorted.iter().sum();
    Some(Summary {
        n: sorted.len(),
        p50_ms: ms(percentile(&sorted, 50.0)?),
        p99_ms: ms(percentile(&sorted, 99.0)?),
        mean_ms: (ms(total) / sorted.len() as f64 * 1e3).round() / 1e3,
        min_ms: ms(*sorted.first()?),
        max_ms: ms(*sorted.last()?),
    })
}

/// A latency for a table cell: three significant-ish digits, in ms.
pub fn fmt_ms(v: f64) -> String {
    if v < 10.0 {
        format!("{v:.3} ms")
    } else if v < 100.0 {
        format!("{v:.2} ms")
    } else {
        format!("{v:.1} ms")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn us(v: &[u64]) -> Vec<Duration> {
        v.iter().map(|&x| Duration::from_micros(x)).collect()
    }

    #[test]
    fn nearest_rank_percentiles() {
        let s = us(&(1..=100).collect::<Vec<_>>());
        assert_eq!(percentile(&s, 50.0), Some(Duration::from_micros(50)));
        assert_eq!(percentile(&s, 99.0), Some(Duration::from_micros(99)));
        assert_eq!(percentile(&s, 100.0), Some(Duration::from_micros(100)));
        let one = us(&[7]);
        assert_eq!(percentile(&one, 50.0), Some(Duration::from_micros(7)));
        assert_eq!(percentile(&one, 99.0), Some(Duration::from_micros(7)));
        assert_eq!(percentile(&[], 50.0), None);
    }

    #[test]
    fn summary_sorts_and_averages() {
        let s = summarize(&us(&[3000, 1000, 2000])).expect("non-empty");
        assert_eq!(s.n, 3);
        assert_eq!(s.p50_ms, 2.0);
        assert_eq!(s.p99_ms, 3.0);
        assert_eq!(s.mean_ms, 2.0);
        assert_eq!(s.min_ms, 1.0);
        assert_eq!(s.max_ms, 3.0);
        assert!(summarize(&[]).is_none());
    }

    #[test]
    fn formats_by_magnitude() {
        assert_eq!(fmt_ms(0.51234), "0.512 ms");
        assert_eq!(fmt_ms(35.456), "35.46 ms");
        assert_eq!(fmt_ms(1234.56), "1234.6 ms");
    }
}
