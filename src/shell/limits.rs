//! Connection limits at accept, shared by every worker: `max_connections` (the whole server)
//! and `max_connections_per_source` (one source address).
//!
//! Both are checked when a TCP or TLS connection is accepted, before anything is read from
//! it or allocated for it: a refused connection is closed at once and costs nothing more.
//! Without the per-source limit one address could open `max_connections` idle connections
//! and lock every other client out of TCP and TLS until `unauthenticated_timeout` closed
//! them — and open them again.
//!
//! A *source* is an IPv4 address, or an IPv6 /64: one subscriber is usually given a whole
//! /64, so counting single IPv6 addresses would let one host use 2^64 of them. An
//! IPv4-mapped IPv6 address (a dual-stack `[::]` listener's IPv4 clients) counts as the IPv4
//! address it maps, not as the one /64 all of them share.
//!
//! The per-source table holds one entry per source with an open connection, removed when
//! its count falls to zero: at most one entry per open connection, so at most
//! `max_connections` entries. It is touched at accept and at close only, never per frame,
//! so one mutex for all workers costs nothing on the relay path.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// What one source is counted as: an IPv4 address, or the first 64 bits of an IPv6 one.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Source {
    V4(u32),
    V6(u64),
}

impl Source {
    pub fn of(ip: IpAddr) -> Source {
        match ip.to_canonical() {
            IpAddr::V4(v4) => Source::V4(u32::from(v4)),
            IpAddr::V6(v6) => Source::V6((u128::from(v6) >> 64) as u64),
        }
    }
}

/// Why a connection was refused at accept; the metric's `reason` label comes from it.
pub use crate::metrics::worker::ConnectionRefusal as Refusal;

/// Open connections by source, across all workers.
#[derive(Debug, Default)]
pub struct PerSource {
    /// 0 = no limit (the table is then not kept at all).
    max: usize,
    open: Mutex<HashMap<Source, u32>>,
}

/// A table emptied below a quarter of its capacity gives memory back above this many entries.
const SHRINK_ABOVE: usize = 1024;

impl PerSource {
    pub fn new(max: usize) -> PerSource {
        PerSource {
            max,
            open: Mutex::default(),
        }
    }

    /// Counts one more connection from `source`, unless it already holds `max`.
    fn take(&self, source: Source) -> bool {
        if self.max == 0 {
            return true;
        }
        // A poisoned lock still holds consistent counts: no code path panics mid-update.
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        let n = open.entry(source).or_insert(0);
        if *n as usize >= self.max {
            return false;
        }
        *n += 1;
        true
    }

    /// Gives back one connection of `source`; the entry goes when its count reaches zero.
    fn give_back(&self, source: Source) {
        if self.max == 0 {
            return;
        }
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = open.get_mut(&source) {
            *n -= 1;
            if *n == 0 {
                open.remove(&source);
                // After a flood from many sources, the table's memory goes back too.
                let len = open.len();
                if open.capacity() > SHRINK_ABOVE && len * 4 < open.capacity() {
                    open.shrink_to(len * 2);
                }
            }
        }
    }

    /// Sources with an open connection (entries in the table).
    #[cfg(test)]
    pub fn sources(&self) -> usize {
        self.open.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    /// Open connections of `ip`'s source.
    #[cfg(test)]
    pub fn count(&self, ip: IpAddr) -> u32 {
        let open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        open.get(&Source::of(ip)).copied().unwrap_or(0)
    }
}

/// Connection limits shared by every worker of a server.
#[derive(Clone, Debug)]
pub struct Limits {
    /// 0 = no limit.
    pub max_connections: usize,
    /// Open connections across all workers.
    pub open: Arc<AtomicUsize>,
    /// Open connections per source, and `max_connections_per_source`.
    pub per_source: Arc<PerSource>,
    pub unauthenticated_timeout: Duration,
    pub max_frame: usize,
    /// RFC 6062 peer connections waiting for a ConnectionBind on any worker.
    pub parked: Arc<super::tcp_relay::ParkedPeers>,
}

/// One connection's place in `max_connections` and in its source's count, given back when
/// the connection ends (the slot is dropped).
#[derive(Debug)]
pub struct Slot {
    open: Arc<AtomicUsize>,
    per_source: Arc<PerSource>,
    source: Source,
}

impl Slot {
    /// A slot for a connection from `ip`, or why there is none.
    pub fn take(limits: &Limits, ip: IpAddr) -> Result<Slot, Refusal> {
        let source = Source::of(ip);
        if !limits.per_source.take(source) {
            return Err(Refusal::PerSource);
        }
        let before = limits.open.fetch_add(1, Ordering::Relaxed);
        if limits.max_connections != 0 && before >= limits.max_connections {
            limits.open.fetch_sub(1, Ordering::Relaxed);
            limits.per_source.give_back(source);
            return Err(Refusal::MaxConnections);
        }
        Ok(Slot {
            open: limits.open.clone(),
            per_source: limits.per_source.clone(),
            source,
        })
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.open.fetch_sub(1, Ordering::Relaxed);
        self.per_source.give_back(self.source);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(max: usize, per_source: usize) -> Limits {
        Limits {
            max_connections: max,
            open: Arc::default(),
            per_source: Arc::new(PerSource::new(per_source)),
            unauthenticated_timeout: Duration::from_secs(10),
            max_frame: 65_552,
            parked: Arc::default(),
        }
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn a_source_is_an_ipv4_address_or_an_ipv6_64() {
        assert_eq!(Source::of(ip("192.0.2.1")), Source::of(ip("192.0.2.1")));
        assert_ne!(Source::of(ip("192.0.2.1")), Source::of(ip("192.0.2.2")));
        // One /64: one source, whatever the interface identifier.
        assert_eq!(
            Source::of(ip("2001:db8:1:2::1")),
            Source::of(ip("2001:db8:1:2:ffff:ffff:ffff:ffff"))
        );
        assert_ne!(
            Source::of(ip("2001:db8:1:2::1")),
            Source::of(ip("2001:db8:1:3::1"))
        );
        // IPv4 clients of a dual-stack listener arrive IPv4-mapped: each is its own source,
        // not one /64 (::ffff:0:0/96 lies within ::/64) shared by every IPv4 client.
        assert_eq!(
            Source::of(ip("::ffff:192.0.2.1")),
            Source::of(ip("192.0.2.1"))
        );
        assert_ne!(
            Source::of(ip("::ffff:192.0.2.1")),
            Source::of(ip("::ffff:192.0.2.2"))
        );
    }

    #[test]
    fn a_source_at_its_limit_is_refused_and_others_are_not() {
        let l = limits(10, 3);
        let a = ip("192.0.2.1");
        let held: Vec<Slot> = (0..3).map(|_| Slot::take(&l, a).unwrap()).collect();
        assert_eq!(Slot::take(&l, a).unwrap_err(), Refusal::PerSource);
        // The same /64 is the same source.
        let v6: Vec<Slot> = (1..=3)
            .map(|i| Slot::take(&l, ip(&format!("2001:db8::{i}"))).unwrap())
            .collect();
        assert_eq!(
            Slot::take(&l, ip("2001:db8::ff")).unwrap_err(),
            Refusal::PerSource
        );
        // Another source still gets in; a refused attempt took no global slot.
        let b = Slot::take(&l, ip("192.0.2.2")).unwrap();
        assert_eq!(l.open.load(Ordering::Relaxed), 7);
        assert_eq!(l.per_source.count(a), 3);
        // A closed connection frees its source's place.
        drop(held);
        assert_eq!(l.per_source.count(a), 0);
        assert!(Slot::take(&l, a).is_ok());
        drop((v6, b));
        assert_eq!(l.open.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn max_connections_refusals_give_the_source_place_back() {
        let l = limits(2, 5);
        let a = Slot::take(&l, ip("192.0.2.1")).unwrap();
        let b = Slot::take(&l, ip("192.0.2.2")).unwrap();
        assert_eq!(
            Slot::take(&l, ip("192.0.2.3")).unwrap_err(),
            Refusal::MaxConnections
        );
        // The refused source left no entry behind.
        assert_eq!(l.per_source.sources(), 2);
        assert_eq!(l.per_source.count(ip("192.0.2.3")), 0);
        drop((a, b));
        assert_eq!(l.per_source.sources(), 0);
    }

    /// The table's bound: one entry per source with an open connection, none once they
    /// close, and its memory given back after a flood from many sources.
    #[test]
    fn the_table_holds_only_sources_with_open_connections() {
        let l = limits(0, 1);
        let slots: Vec<Slot> = (0..5000u32)
            .map(|i| Slot::take(&l, IpAddr::from((0x0a00_0000u32 + i).to_be_bytes())).unwrap())
            .collect();
        assert_eq!(l.per_source.sources(), 5000);
        drop(slots);
        assert_eq!(l.per_source.sources(), 0);
        let cap = l.per_source.open.lock().unwrap().capacity();
        assert!(
            cap <= SHRINK_ABOVE * 2,
            "capacity {cap} kept after the flood"
        );
    }

    #[test]
    fn zero_means_no_per_source_limit_and_no_table() {
        let l = limits(0, 0);
        let slots: Vec<Slot> = (0..2000)
            .map(|_| Slot::take(&l, ip("192.0.2.1")).unwrap())
            .collect();
        assert_eq!(l.per_source.sources(), 0);
        assert_eq!(l.open.load(Ordering::Relaxed), 2000);
        drop(slots);
        assert_eq!(l.open.load(Ordering::Relaxed), 0);
    }
}
