//! Per-source rate limits for what the server answers before anyone authenticates: error
//! responses to unauthenticated requests (401, 438, 400, 420) and Binding responses.
//!
//! A spoofed flood must not be able to grow this table, so there is no per-source entry:
//! token buckets live in a fixed array, two rows of [`BUCKETS`], and a source is mapped to one
//! bucket per row by a keyed hash of its address (the idea of a count-min sketch). A request
//! is answered only if both of its buckets hold a token, and then takes one from each. Sources
//! that collide in one row share that bucket, but rarely in both, so an honest client is
//! limited by a flooder only when both its buckets are shared with flooders; the hash key is
//! random per worker, so an attacker cannot aim at a victim's buckets. Memory is fixed at
//! start-up whatever the traffic: 2 × 4096 × 12 bytes (96 KiB) per limiter.
//!
//! A source is an IPv4 address, or an IPv6 /64 (one host usually owns a whole /64, so
//! counting per address would let it rotate through 2^64 addresses). IPv4-mapped IPv6
//! addresses count as the IPv4 address.
//!
//! Each worker has its own limiters (no lock shared between cores). The kernel spreads one
//! source's 5-tuples over workers, so a source that uses several ports may get up to
//! `workers ×` the configured rate; one that uses a single port (every real client's first
//! request) gets exactly the rate.
//!
//! Sans-IO: time is an argument; the hash key is given by the caller.

use std::net::IpAddr;
use std::time::Instant;

/// Buckets per row (a power of two).
pub const BUCKETS: usize = 4096;
const ROWS: usize = 2;
/// Tokens are counted in thousandths, so a rate in tokens per second refills by `rate`
/// thousandths per millisecond.
const MILLI: u64 = 1000;

/// A rate limit: `per_second` tokens a second, at most `burst` saved up. `per_second == 0`
/// means no limit.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Rate {
    pub per_second: u32,
    pub burst: u32,
}

impl Rate {
    /// No limit.
    pub const UNLIMITED: Rate = Rate {
        per_second: 0,
        burst: 0,
    };

    pub fn is_unlimited(&self) -> bool {
        self.per_second == 0
    }
}

#[derive(Clone, Copy, Default)]
struct Bucket {
    /// Thousandths of a token.
    tokens: u32,
    /// Milliseconds since the limiter's epoch (wrapping) when `tokens` was last brought
    /// up to date.
    last: u32,
    /// Whether the bucket has been touched yet (an untouched bucket is full).
    used: bool,
}

/// A fixed-size table of token buckets indexed by a keyed hash of the source address.
pub struct RateLimiter {
    rate: Rate,
    key: u64,
    epoch: Instant,
    rows: Vec<[Bucket; BUCKETS]>,
}

impl std::fmt::Debug for RateLimiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RateLimiter")
            .field("rate", &self.rate)
            .finish()
    }
}

impl RateLimiter {
    /// A limiter for `rate`, hashing sources with `key` (random per worker). An unlimited
    /// rate allocates no table.
    pub fn new(rate: Rate, key: u64, now: Instant) -> RateLimiter {
        let rows = if rate.is_unlimited() {
            Vec::new()
        } else {
            vec![[Bucket::default(); BUCKETS]; ROWS]
        };
        RateLimiter {
            rate,
            key,
            epoch: now,
            rows,
        }
    }

    /// Bytes the table takes (fixed at creation).
    pub fn table_bytes(&self) -> usize {
        self.rows.len() * std::mem::size_of::<[Bucket; BUCKETS]>()
    }

    /// Whether a request from `source` may be answered at `now`; takes a token if so.
    pub fn allow(&mut self, now: Instant, source: IpAddr) -> bool {
        if self.rate.is_unlimited() {
            return true;
        }
        // Wrapping: the buckets only compare nearby times; a bucket idle for 49 days simply
        // looks idle for less, and is full either way.
        let now_ms = now.saturating_duration_since(self.epoch).as_millis() as u32;
        let capacity = u64::from(self.rate.burst.max(1)) * MILLI;
        let source = source_key(source);
        let mut index = [0usize; ROWS];
        let mut allowed = true;
        for (row, slot) in index.iter_mut().enumerate() {
            *slot = (mix(source ^ self.key.rotate_left(row as u32 * 29) ^ row as u64)
                % BUCKETS as u64) as usize;
            let b = &mut self.rows[row][*slot];
            let tokens = if b.used {
                let elapsed = u64::from(now_ms.wrapping_sub(b.last));
                (u64::from(b.tokens) + elapsed * u64::from(self.rate.per_second)).min(capacity)
            } else {
                capacity
            };
            // `tokens <= capacity <= u32::MAX * 1000` does not fit u32 for huge bursts:
            // saturate (a burst above 4 million is unlimited for any practical purpose).
            b.tokens = tokens.min(u64::from(u32::MAX)) as u32;
            b.last = now_ms;
            b.used = true;
            allowed &= u64::from(b.tokens) >= MILLI;
        }
        if allowed {
            for (row, slot) in index.iter().enumerate() {
                let b = &mut self.rows[row][*slot];
                b.tokens -= MILLI as u32;
            }
        }
        allowed
    }
}

/// The part of a source address that identifies it: the IPv4 address, or the IPv6 /64.
fn source_key(ip: IpAddr) -> u64 {
    match ip {
        IpAddr::V4(v4) => u64::from(u32::from(v4)) | 1 << 63,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => u64::from(u32::from(v4)) | 1 << 63,
            None => {
                let o = v6.octets();
                // The /64 prefix; the top bit cleared so it never equals an IPv4 key.
                u64::from_be_bytes([o[0], o[1], o[2], o[3], o[4], o[5], o[6], o[7]]) >> 1
            }
        },
    }
}

/// splitmix64's finaliser: a cheap, well-mixing bijection.
fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{Ipv4Addr, Ipv6Addr};
    use std::time::Duration;

    fn v4(a: u8, b: u8) -> IpAddr {
        IpAddr::V4(Ipv4Addr::new(198, 51, a, b))
    }

    fn rate(per_second: u32, burst: u32) -> Rate {
        Rate { per_second, burst }
    }

    #[test]
    fn unlimited_allows_everything_and_holds_no_table() {
        let t0 = Instant::now();
        let mut l = RateLimiter::new(Rate::UNLIMITED, 1, t0);
        assert_eq!(l.table_bytes(), 0);
        assert!((0..10_000).all(|_| l.allow(t0, v4(0, 1))));
    }

    #[test]
    fn burst_then_refill_at_the_rate() {
        let t0 = Instant::now();
        let mut l = RateLimiter::new(rate(10, 5), 42, t0);
        let ip = v4(0, 1);
        assert_eq!((0..20).filter(|_| l.allow(t0, ip)).count(), 5);
        // 10 per second: one token every 100 ms.
        assert!(!l.allow(t0 + Duration::from_millis(99), ip));
        assert!(l.allow(t0 + Duration::from_millis(100), ip));
        assert!(!l.allow(t0 + Duration::from_millis(150), ip));
        // A long idle period refills to the burst, not beyond.
        let later = t0 + Duration::from_secs(3600);
        assert_eq!((0..20).filter(|_| l.allow(later, ip)).count(), 5);
    }

    #[test]
    fn sources_are_independent() {
        let t0 = Instant::now();
        let mut l = RateLimiter::new(rate(1, 3), 7, t0);
        assert_eq!((0..10).filter(|_| l.allow(t0, v4(0, 1))).count(), 3);
        assert_eq!((0..10).filter(|_| l.allow(t0, v4(0, 2))).count(), 3);
    }

    #[test]
    fn ipv6_counts_per_64_and_mapped_v4_as_v4() {
        let t0 = Instant::now();
        let mut l = RateLimiter::new(rate(1, 2), 9, t0);
        let a = IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 1, 2, 0, 0, 0, 1));
        let b = IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 1, 2, 0xffff, 1, 2, 3));
        assert!(l.allow(t0, a) && l.allow(t0, b));
        assert!(!l.allow(t0, a) && !l.allow(t0, b));
        let mapped = IpAddr::V6(Ipv4Addr::new(198, 51, 0, 9).to_ipv6_mapped());
        assert!(l.allow(t0, v4(0, 9)) && l.allow(t0, mapped));
        assert!(!l.allow(t0, v4(0, 9)));
    }

    #[test]
    fn a_spoofed_flood_does_not_grow_the_table_and_spares_most_honest_sources() {
        let t0 = Instant::now();
        let mut l = RateLimiter::new(rate(5, 10), 0x1234_5678, t0);
        let bytes = l.table_bytes();
        // 200,000 spoofed sources, one request each, then 1,000 more requests from
        // each of 20 flooders.
        let mut allowed = 0usize;
        for i in 0..200_000u32 {
            let ip = IpAddr::V4(Ipv4Addr::from(0x0A00_0000 + i));
            allowed += usize::from(l.allow(t0, ip));
        }
        assert_eq!(l.table_bytes(), bytes);
        // Each spoofed address is new, but they share buckets: far fewer than 200,000 pass.
        assert!(allowed <= 2 * BUCKETS * 10, "{allowed}");
        for f in 0..20u8 {
            let n = (0..1000).filter(|_| l.allow(t0, v4(1, f))).count();
            assert!(n <= 10, "flooder {f} got {n}");
        }
        // Later, honest sources get their burst back: the table is as good as new.
        let later = t0 + Duration::from_secs(10);
        let honest_ok = (0..100u8).filter(|&h| l.allow(later, v4(2, h))).count();
        assert_eq!(honest_ok, 100);
    }
}
