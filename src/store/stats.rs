//! What the store's report task says about itself on `/metrics`: what it had to drop, how far
//! behind its writes are, what the quota snapshot holds. Atomics written by the report task,
//! read by a scrape; registered only when a store is configured.

use crate::metrics::collect::{count_i64, counters, gauge, Labels};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::DescriptorEncoder;
use prometheus_client::registry::Unit;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};

/// What was dropped, by kind ([`Dropped::label`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dropped {
    /// A usage delta (one user's counters for one hour) that did not fit the buffer while
    /// the store was slow or down.
    Usage,
    /// An allocation start/end event that did not fit the buffer.
    Events,
    /// An ended allocation a worker's log had no room for: its last counters since the
    /// previous report are lost.
    Ended,
}

impl Dropped {
    pub const ALL: [Dropped; 3] = [Dropped::Usage, Dropped::Events, Dropped::Ended];

    pub fn label(self) -> &'static str {
        match self {
            Dropped::Usage => "usage",
            Dropped::Events => "events",
            Dropped::Ended => "ended",
        }
    }
}

/// The report task's figures.
#[derive(Debug, Default)]
pub struct StoreStats {
    dropped: [AtomicU64; 3],
    /// Age in seconds of the oldest usage delta or event not yet written (0 = none waiting).
    lag_seconds: AtomicU64,
    /// Allocations the other live nodes hold, as the last quota snapshot says.
    others_total: AtomicU64,
}

impl StoreStats {
    pub fn add_dropped(&self, what: Dropped, n: u64) {
        self.dropped[what as usize].fetch_add(n, Ordering::Relaxed);
    }

    pub fn dropped(&self, what: Dropped) -> u64 {
        self.dropped[what as usize].load(Ordering::Relaxed)
    }

    pub fn set_lag(&self, seconds: u64) {
        self.lag_seconds.store(seconds, Ordering::Relaxed);
    }

    pub fn set_others_total(&self, n: u32) {
        self.others_total.store(n.into(), Ordering::Relaxed);
    }
}

/// The collector a scrape reads [`StoreStats`] through.
#[derive(Debug)]
pub struct StoreCollector(pub std::sync::Arc<StoreStats>);

impl Collector for StoreCollector {
    fn encode(&self, mut e: DescriptorEncoder) -> fmt::Result {
        let s = &self.0;
        let series: Vec<(Labels, u64)> = Dropped::ALL
            .iter()
            .map(|&d| (vec![("what", d.label())], s.dropped(d)))
            .collect();
        counters(
            &mut e,
            "turnd_store_dropped",
            "What the store's report task dropped: usage deltas and events beyond its buffer \
             while the store was slow or down, ended allocations beyond a worker's log.",
            None,
            &series,
        )?;
        gauge(
            &mut e,
            "turnd_store_lag",
            "Age of the oldest usage delta or event not yet written to the store (0: none).",
            Some(&Unit::Seconds),
            count_i64(s.lag_seconds.load(Ordering::Relaxed)),
        )?;
        gauge(
            &mut e,
            "turnd_store_quota_others",
            "Allocations the other live nodes of the fleet hold, as this node's last quota \
             snapshot says (0 without a snapshot: the node counts alone).",
            None,
            count_i64(s.others_total.load(Ordering::Relaxed)),
        )
    }
}
