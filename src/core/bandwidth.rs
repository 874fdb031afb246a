//! A token bucket in bytes per second: the per-allocation bandwidth cap on the relay path.
//!
//! Plain integers in the allocation, touched only by the worker that owns it: no lock, no
//! atomic, no allocation. Time is an argument, as everywhere in the core.
//!
//! Datagrams over a cap are dropped ([`TokenBucket::take`], [`SharedBucket::take`]); the
//! bytes of a spliced TCP relay connection are reliable and are paced instead
//! ([`SharedBucket::pace`]): charged, then held back for as long as the cap needs.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

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

    /// Charges `bytes` that will be sent whatever happens (a TCP relay's, which may not be
    /// dropped) and returns how long the sender must wait before sending them so that the
    /// rate stays under the cap: zero while the first half of the burst holds them.
    ///
    /// The charge is taken at once, even into debt: the bytes are already read and will be
    /// sent, and until the debt is paid [`SharedBucket::take`] refuses the datagrams of the
    /// bucket's other users, so the total stays under the cap. But a paced sender only ever
    /// spends the first half of the burst: it waits until the bucket is back to half full
    /// before its bytes go, where a datagram may use all of it. A datagram cannot wait — over
    /// the cap it is dropped — so without that half a bulk TCP splice, charging as soon as it
    /// is allowed, would leave its user's UDP allocations nothing; with it, datagrams below
    /// the cap pass and a splice gets the rest, and under a flood of both each gets a share
    /// (see `paced_and_dropped_traffic_share_the_cap`).
    ///
    /// A sender that waits before reading more runs the debt no further than the bytes it
    /// holds, so a wait is at most half the burst plus the refill time of what the bucket's
    /// paced senders hold (one chunk each).
    pub fn pace(&self, now: Instant, bytes: u64) -> Duration {
        let now_ns = now.saturating_duration_since(self.epoch).as_nanos() as u64;
        let cost = (bytes as u128 * 1_000_000_000 / self.rate as u128) as u64;
        let prev = self
            .tat
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |tat| {
                Some(tat.max(now_ns).saturating_add(cost))
            })
            // The closure always answers `Some`, so the update cannot fail; both arms hold
            // the value it replaced.
            .unwrap_or_else(|v| v);
        let next = prev.max(now_ns).saturating_add(cost);
        Duration::from_nanos((next - now_ns).saturating_sub(self.burst_ns / 2))
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
    fn pace_waits_once_half_the_burst_is_spent() {
        let t0 = Instant::now();
        let b = SharedBucket::new(1_000_000, t0);
        // Half the burst (a twentieth of a second) passes at once.
        assert_eq!(b.pace(t0, 50_000), Duration::ZERO);
        // 10,000 more bytes: 10 ms to wait.
        assert_eq!(b.pace(t0, 10_000), Duration::from_millis(10));
        // The other half is still there for datagrams.
        assert!(b.take(t0, 40_000));
        assert!(!b.take(t0, 1));
        // Paced bytes wait for the datagrams' debt too: 40 ms of it, then 10 ms of their own.
        assert_eq!(b.pace(t0, 10_000), Duration::from_millis(60));
        // Meanwhile datagrams are refused until the debt is paid, whichever path made it.
        assert!(!b.take(t0 + Duration::from_millis(10), 1));
        assert!(b.take(t0 + Duration::from_millis(30), 10_000));
    }

    #[test]
    fn paced_sender_holds_the_rate() {
        // A sender that reads 16 KiB, waits what `pace` says, and reads again: 10 s at 200 kB/s.
        let t0 = Instant::now();
        let rate = 200_000;
        let b = SharedBucket::new(rate, t0);
        let (mut now, mut sent) = (t0, 0u64);
        let end = t0 + Duration::from_secs(10);
        for _ in 0..1_000_000 {
            if now >= end {
                break;
            }
            now += b.pace(now, 16_384);
            sent += 16_384;
            now += Duration::from_micros(50);
        }
        let expected = rate * 10 + MIN_BURST / 2;
        let err = (sent as f64 - expected as f64).abs() / expected as f64;
        assert!(err < 0.01, "sent {sent}, expected about {expected}");
    }

    /// Simulates one user's TCP splice (16 KiB chunks, paced) and UDP allocation (1,000-byte
    /// datagrams, offered at `udp_rate`) on one 1 MB/s bucket for 10 s: (tcp, udp) bytes.
    fn share(udp_rate: u64) -> (u64, u64) {
        let t0 = Instant::now();
        let b = SharedBucket::new(1_000_000, t0);
        let (mut tcp, mut udp) = (0u64, 0u64);
        let mut tcp_wake = t0 + b.pace(t0, 16_384);
        let step = Duration::from_nanos(1_000 * 1_000_000_000 / udp_rate);
        let mut now = t0;
        let end = t0 + Duration::from_secs(10);
        // Bounded: 10 s in steps of one datagram's time (at most 100,000 steps).
        while now < end {
            while tcp_wake <= now {
                tcp += 16_384;
                tcp_wake += b.pace(tcp_wake, 16_384);
            }
            udp += 1_000 * u64::from(b.take(now, 1_000));
            now += step;
        }
        (tcp, udp)
    }

    #[test]
    fn paced_and_dropped_traffic_share_the_cap() {
        // Datagrams below the cap all pass; the splice gets the rest.
        let (tcp, udp) = share(200_000);
        assert_eq!(udp, 2_000_000);
        let total = (tcp + udp) as f64;
        assert!((total / 10e6 - 1.0).abs() < 0.02, "tcp {tcp} + udp {udp}");
        // A flood of datagrams does not starve the splice, nor the splice the datagrams.
        let (tcp, udp) = share(10_000_000);
        eprintln!("flood: tcp {tcp}, udp {udp}");
        let total = (tcp + udp) as f64;
        assert!((total / 10e6 - 1.0).abs() < 0.02, "tcp {tcp} + udp {udp}");
        assert!(tcp as f64 > 0.1 * total, "tcp {tcp} of {total}");
        assert!(udp as f64 > 0.1 * total, "udp {udp} of {total}");
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
