//! The fleet store's metrics (`turnd_store_*`, docs/metrics.md), read from the store task's
//! [`Status`](crate::store::link::Status) on each scrape. Without a store, no series at all.

use crate::store::Link;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;
use std::fmt;
use std::sync::atomic::Ordering;
use std::sync::Arc;

#[derive(Debug)]
pub struct StoreCollector(pub Arc<Link>);

fn gauge(e: &mut DescriptorEncoder, name: &str, help: &str, v: i64) -> fmt::Result {
    ConstGauge::new(v).encode(e.encode_descriptor(name, help, None, MetricType::Gauge)?)
}

impl Collector for StoreCollector {
    fn encode(&self, mut e: DescriptorEncoder) -> fmt::Result {
        if !self.0.enabled() {
            return Ok(());
        }
        let s = &self.0.status;
        let n = |a: &std::sync::atomic::AtomicU64| {
            i64::try_from(a.load(Ordering::Relaxed)).unwrap_or(i64::MAX)
        };
        gauge(
            &mut e,
            "turnd_store_up",
            "1 when the last command to the fleet store (Redis) succeeded, else 0.",
            i64::from(s.up.load(Ordering::Relaxed)),
        )?;
        ConstCounter::new(s.reconnects.load(Ordering::Relaxed)).encode(e.encode_descriptor(
            "turnd_store_reconnects",
            "Times the store's pub/sub connection was made again after it was lost.",
            None,
            MetricType::Counter,
        )?)?;
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        gauge(
            &mut e,
            "turnd_store_resync_age_seconds",
            "Seconds since the cached store users, secrets and revocations were last read whole.",
            i64::try_from(now.saturating_sub(s.synced_unix.load(Ordering::Relaxed)))
                .unwrap_or(i64::MAX),
        )?;
        gauge(
            &mut e,
            "turnd_store_users",
            "Static users cached from the store (the TOML's not counted).",
            n(&s.users),
        )?;
        gauge(
            &mut e,
            "turnd_store_secrets",
            "REST secrets cached from the store.",
            n(&s.secrets),
        )?;
        gauge(
            &mut e,
            "turnd_store_revoked",
            "Users and REST user ids revoked now.",
            n(&s.revoked),
        )?;
        gauge(
            &mut e,
            "turnd_store_skipped",
            "Store entries left out by the last read: invalid, or over a bound.",
            n(&s.skipped),
        )
    }
}
