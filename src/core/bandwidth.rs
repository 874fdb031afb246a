//! A token bucket in bytes per second: the per-allocation bandwidth cap on the relay path.
//!
//! Plain integers in the allocation, touched only by the worker that owns it: no lock, no
//! atomic, no allocation. Time is an argument, as everywhere in the core.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

/// The bucket holds at most a tenth of a second of traffic, but never less than one largest
/// UDP datagram, or a datagram that size could never pass.
const MIN_BURST: u64 = 65_536;

#[derive(Clone, Copy, Debug)]
pub struct TokenBucket {
    /// Bytes per second.
    rate: u64,
    burst: u64,
    tokens: u64,
    last: Instant,
}

impl TokenBucket {
    /// A full bucket refilling at `rate` bytes per second (rate > 0).
    pub fn new(rate: u64, now: Instant) -> TokenBucket {
        let burst = (rate / 10).max(MIN_BURST);
        TokenBucket {
            rate,
            burst,
            tokens: burst,
            last: now,
        }
    }

    /// Takes `bytes` if the bucket holds them; false (taking nothing) otherwise, and the
    /// datagram is dropped. Refills by the time since the last call; a refill of under one
    /// byte waits for the next call, so nothing is lost to rounding.
    pub fn take(&mut self, now: Instant, bytes: u64) -> bool {
        let elapsed = now.saturating_duration_since(self.last).as_nanos();
        let add = elapsed.saturating_mul(self.rate as u128) / 1_000_000_000;
        if add > 0 {
            self.tokens = (self.tokens as u128 + add).min(self.burst as u128) as u64;
            self.last = now;
        }
        if self.tokens >= bytes {
            self.tokens -= bytes;
            true
        } else {
            false
        }
    }
}

/// The `user_bandwidth` cap: one bucket shared by every allocation of a user, whichever
/// worker holds them. Lock-free: the generic cell rate algorithm keeps a single atomic, the
/// "theoretical arrival time" (nanoseconds since `epoch`) at which the bucket would be empty
/// again; a datagram of `bytes` pushes it `bytes / rate` later, and is refused when that would
/// put it more than the burst ahead of now. One compare-and-swap per datagram, on a cache line
/// only the workers relaying for this user touch.
#[derive(Debug)]
pub struct SharedBucket {
    rate: u64,
    burst_ns: u64,
    epoch: Instant,
    tat: AtomicU64,
}

impl SharedBucket {
    pub fn new(rate: u64, now: Instant) -> SharedBucket {
        let burst = (rate / 10).max(MIN_BURST);
        SharedBucket {
            rate,
            burst_ns: (burst as u128 * 1_000_000_000 / rate as u128) as u64,
            epoch: now,
            tat: AtomicU64::new(0),
        }
    }

    /// Like [`TokenBucket::take`], for the user's allocations together.
    pub fn take(&self, now: Instant, bytes: u64) -> bool {
        let now_ns = now.saturating_duration_since(self.epoch).as_nanos() as u64;
        let cost = (bytes as u128 * 1_000_000_000 / self.rate as u128) as u64;
        self.tat
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |tat| {
                let next = tat.max(now_ns).saturating_add(cost);
                (next - now_ns <= self.burst_ns).then_some(next)
            })
            .is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn starts_full_then_refills_at_the_rate() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(1_000_000, t0);
        // Burst: a tenth of a second.
        assert!(b.take(t0, 100_000));
        assert!(!b.take(t0, 1));
        // 10 ms later: 10,000 bytes.
        let t1 = t0 + Duration::from_millis(10);
        assert!(!b.take(t1, 10_001));
        assert!(b.take(t1, 10_000));
        assert!(!b.take(t1, 1));
    }

    #[test]
    fn never_holds_more_than_the_burst() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(1_000, t0);
        let later = t0 + Duration::from_secs(3600);
        assert!(b.take(later, MIN_BURST));
        assert!(!b.take(later, 1));
    }

    #[test]
    fn shared_bucket_matches_the_token_bucket() {
        let t0 = Instant::now();
        let rate = 1_000_000;
        let b = SharedBucket::new(rate, t0);
        assert!(b.take(t0, 100_000));
        assert!(!b.take(t0, 1_000));
        let t1 = t0 + Duration::from_millis(10);
        assert!(b.take(t1, 10_000));
        assert!(!b.take(t1, 1_000));
        let mut passed = 0u64;
        for i in 0..100_000u64 {
            if b.take(t1 + Duration::from_micros(100 * i), 1_000) {
                passed += 1_000;
            }
        }
        let expected = rate * 10;
        let err = (passed as f64 - expected as f64).abs() / expected as f64;
        assert!(err < 0.01, "passed {passed}, expected about {expected}");
    }

    #[test]
    fn long_run_rate_matches() {
        // 1,000-byte datagrams offered every 100 µs (10 MB/s) for 10 s into a 1 MB/s bucket.
        let t0 = Instant::now();
        let rate = 1_000_000;
        let mut b = TokenBucket::new(rate, t0);
        let mut passed = 0u64;
        for i in 0..100_000u64 {
            if b.take(t0 + Duration::from_micros(100 * i), 1_000) {
                passed += 1_000;
            }
        }
        let expected = rate * 10 + rate / 10;
        let err = (passed as f64 - expected as f64).abs() / expected as f64;
        assert!(err < 0.01, "passed {passed}, expected about {expected}");
    }
}
