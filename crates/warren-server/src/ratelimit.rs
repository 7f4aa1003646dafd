//! A token bucket per user: `burst` requests at once, refilled at `rps` per second.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Instant;

use warren_core::UserId;

/// Per-user token buckets.
#[derive(Debug)]
pub struct RateLimiter {
    rps: f64,
    burst: f64,
    buckets: Mutex<HashMap<UserId, Bucket>>,
}

#[derive(Clone, Copy, Debug)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

/// Buckets kept before idle (full) ones are dropped.
const PRUNE_AT: usize = 10_000;

impl RateLimiter {
    /// `rps` = 0 switches the limiter off.
    pub fn new(rps: u32, burst: u32) -> Self {
        Self { rps: f64::from(rps), burst: f64::from(burst.max(1)), buckets: Mutex::new(HashMap::new()) }
    }

    /// Takes one token of `user`'s bucket; false when it is empty.
    pub fn allow(&self, user: &UserId) -> bool {
        self.allow_at(user, Instant::now())
    }

    fn allow_at(&self, user: &UserId, now: Instant) -> bool {
        if self.rps <= 0.0 {
            return true;
        }
        let mut buckets = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        if buckets.len() >= PRUNE_AT && !buckets.contains_key(user) {
            let (rps, burst) = (self.rps, self.burst);
            buckets.retain(|_, b| b.tokens + now.saturating_duration_since(b.at).as_secs_f64() * rps < burst);
        }
        let b = buckets.entry(user.clone()).or_insert(Bucket { tokens: self.burst, at: now });
        let refill = now.saturating_duration_since(b.at).as_secs_f64() * self.rps;
        b.tokens = (b.tokens + refill).min(self.burst);
        b.at = now;
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn burst_then_refill_per_user() {
        let rl = RateLimiter::new(2, 3);
        let (a, b) = (UserId::new("a").expect("id"), UserId::new("b").expect("id"));
        let t0 = Instant::now();
        assert!((0..3).all(|_| rl.allow_at(&a, t0)));
        assert!(!rl.allow_at(&a, t0), "bucket of a is empty");
        assert!(rl.allow_at(&b, t0), "b has its own bucket");
        assert!(rl.allow_at(&a, t0 + Duration::from_millis(500)), "one token back after 1/rps");
        assert!(!rl.allow_at(&a, t0 + Duration::from_millis(500)));
        assert!(RateLimiter::new(0, 0).allow_at(&a, t0), "0 rps is off");
    }
}
