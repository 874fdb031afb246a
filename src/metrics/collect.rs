//! The scrape: sums every worker's [`WorkerMetrics`] and encodes the totals, with the relay
//! port pool, build info and process figures, through `prometheus-client`.
//!
//! Nothing is kept between scrapes: a [`Collector`] reads the workers' atomics on each
//! `encode`, so the relay path never touches a `prometheus-client` type.

use super::process;
use super::worker::{
    sum, ConnectionRefusal, RelayFamily, Snapshot, WorkerMetrics, DURATION_BUCKETS,
};
use crate::core::{CounterKey, DropReason, ResponseResult, Shared, Transport};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::info::Info;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::{Registry, Unit};
use std::fmt;
use std::sync::Arc;

/// Everything a scrape reads.
pub struct TurndCollector {
    pub workers: Vec<Arc<WorkerMetrics>>,
    /// For the relay port pool; `None` in unit tests.
    pub shared: Option<Arc<Shared>>,
    /// The XDP program's counters, when it is attached (docs/xdp.md).
    pub xdp: Option<Arc<dyn super::xdp::XdpSource>>,
}

impl fmt::Debug for TurndCollector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TurndCollector")
            .field("workers", &self.workers.len())
            .finish()
    }
}

pub(crate) type Labels<'a> = Vec<(&'static str, &'a str)>;

/// Writes one counter family: `(labels, value)` pairs under one descriptor.
pub(crate) fn counters(
    e: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    unit: Option<&Unit>,
    series: &[(Labels, u64)],
) -> fmt::Result {
    let mut m = e.encode_descriptor(name, help, unit, MetricType::Counter)?;
    for (labels, v) in series {
        ConstCounter::new(*v).encode(m.encode_family(labels)?)?;
    }
    Ok(())
}

fn gauges(
    e: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    unit: Option<&Unit>,
    series: &[(Labels, i64)],
) -> fmt::Result {
    let mut m = e.encode_descriptor(name, help, unit, MetricType::Gauge)?;
    for (labels, v) in series {
        ConstGauge::new(*v).encode(m.encode_family(labels)?)?;
    }
    Ok(())
}

pub(crate) fn gauge(
    e: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    unit: Option<&Unit>,
    v: i64,
) -> fmt::Result {
    let m = e.encode_descriptor(name, help, unit, MetricType::Gauge)?;
    ConstGauge::new(v).encode(m)
}

fn counter(
    e: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    unit: Option<&Unit>,
    v: u64,
) -> fmt::Result {
    let m = e.encode_descriptor(name, help, unit, MetricType::Counter)?;
    ConstCounter::new(v).encode(m)
}

pub(crate) fn count_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

impl Collector for TurndCollector {
    fn encode(&self, mut e: DescriptorEncoder) -> fmt::Result {
        let mut s = sum(self.workers.iter().map(|w| &**w));
        // What the kernel relayed is part of the totals: UDP clients' datagrams.
        if let Some(c) = self.xdp.as_ref().and_then(|x| x.read()) {
            let (to_peer, to_client) = super::xdp::relayed(&c);
            let udp = &mut s.core.relayed[Transport::Udp];
            udp.to_peer_packets += to_peer.packets;
            udp.to_peer_bytes += to_peer.bytes;
            udp.to_client_packets += to_client.packets;
            udp.to_client_bytes += to_client.bytes;
        }
        encode_snapshot(&s, &mut e)?;
        if let Some(shared) = &self.shared {
            // The pool's lock is taken by requests only, never by the relay path.
            let (in_use, free) = {
                let p = shared.ports.lock().unwrap_or_else(|e| e.into_inner());
                (p.in_use_total(), p.free())
            };
            gauge(
                &mut e,
                "turnd_relay_ports_in_use",
                "Relay ports allocated or reserved, over all relay addresses.",
                None,
                count_i64(in_use as u64),
            )?;
            gauge(
                &mut e,
                "turnd_relay_ports_free",
                "Relay ports free, over all relay addresses.",
                None,
                count_i64(free as u64),
            )?;
            // 1 from the first SIGTERM/SIGINT on: an alert can tell a node that is being
            // drained (expected, during a rollout) from one that stopped taking allocations.
            gauge(
                &mut e,
                "turnd_draining",
                "1 while draining after SIGTERM/SIGINT (new allocations refused), else 0.",
                None,
                i64::from(shared.quotas.is_draining()),
            )?;
        }
        let info = Info::new(vec![("version", env!("CARGO_PKG_VERSION"))]);
        let m = e.encode_descriptor(
            "turnd_build",
            "turnd's version (the value is always 1).",
            None,
            info.metric_type(),
        )?;
        info.encode(m)?;
        gauge(
            &mut e,
            "turnd_workers",
            "Worker threads relaying traffic.",
            None,
            count_i64(self.workers.len() as u64),
        )?;
        if let Some(xdp) = &self.xdp {
            super::xdp::encode(&**xdp, &s.xdp_skipped, &mut e)?;
        }
        process::encode(&mut e)
    }
}

/// [`counter`], [`counters`] and [`gauge`] for the other encoders of this module's families.
pub(crate) fn counter_pub(
    e: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    v: u64,
) -> fmt::Result {
    counter(e, name, help, None, v)
}

pub(crate) fn counters_pub(
    e: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    series: &[(Labels, u64)],
) -> fmt::Result {
    counters(e, name, help, None, series)
}

pub(crate) fn counters_bytes(
    e: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    series: &[(Labels, u64)],
) -> fmt::Result {
    counters(e, name, help, Some(&Unit::Bytes), series)
}

pub(crate) fn gauge_pub(e: &mut DescriptorEncoder, name: &str, help: &str, v: i64) -> fmt::Result {
    gauge(e, name, help, None, v)
}

/// Encodes the summed worker counters.
pub(crate) fn encode_snapshot(s: &Snapshot, e: &mut DescriptorEncoder) -> fmt::Result {
    let c = &s.core;
    let mut active = Vec::new();
    let mut created = Vec::new();
    for transport in Transport::ALL {
        let t = transport.index();
        for &family in RelayFamily::ALL {
            let f = family.index();
            let labels = vec![("transport", transport.label()), ("family", family.label())];
            active.push((labels.clone(), count_i64(s.allocations_active(t, f))));
            created.push((labels, s.allocations_created[t][f]));
        }
    }
    gauges(
        e,
        "turnd_allocations_active",
        "Allocations open now, by client transport and relayed address family.",
        None,
        &active,
    )?;
    counters(
        e,
        "turnd_allocations_created",
        "Allocations created, by client transport and relayed address family.",
        None,
        &created,
    )?;

    let buckets: Vec<(f64, u64)> = DURATION_BUCKETS
        .iter()
        .copied()
        .chain([f64::MAX])
        .zip(s.durations.iter().copied())
        .collect();
    let count = s.durations.iter().sum();
    let mut m = e.encode_descriptor(
        "turnd_allocation_duration",
        "How long allocations lived, observed when each ends.",
        Some(&Unit::Seconds),
        MetricType::Histogram,
    )?;
    m.encode_histogram::<()>(s.duration_sum.as_secs_f64(), count, &buckets, None)?;

    let mut bytes = Vec::new();
    let mut datagrams = Vec::new();
    for (transport, r) in c.relayed.iter() {
        for (direction, packets, octets) in [
            ("client_to_peer", r.to_peer_packets, r.to_peer_bytes),
            ("peer_to_client", r.to_client_packets, r.to_client_bytes),
        ] {
            let labels = vec![("direction", direction), ("transport", transport.label())];
            datagrams.push((labels.clone(), packets));
            bytes.push((labels, octets));
        }
    }
    counters(
        e,
        "turnd_relayed",
        "Application payload bytes relayed (without ChannelData or STUN framing), by direction \
         and client transport.",
        Some(&Unit::Bytes),
        &bytes,
    )?;
    counters(
        e,
        "turnd_relayed_datagrams",
        "Datagrams relayed, by direction and client transport.",
        None,
        &datagrams,
    )?;

    gauge(
        e,
        "turnd_permissions_active",
        "Permissions installed now, over all allocations.",
        None,
        count_i64(c.permissions),
    )?;
    counter(
        e,
        "turnd_permissions_created",
        "Permissions installed for a peer address that had none.",
        None,
        c.permissions_created,
    )?;
    gauge(
        e,
        "turnd_channels_active",
        "Channel bindings held now, including those in their 5-minute cool-down.",
        None,
        count_i64(c.channels),
    )?;
    counter(
        e,
        "turnd_channels_created",
        "Channel bindings made for a channel number that had none.",
        None,
        c.channels_created,
    )?;

    let mut responses = Vec::new();
    for (method, row) in c.responses.iter() {
        for (result, &n) in row.iter() {
            // Only the combinations seen: 90 always-zero series would only cost storage.
            if n > 0 || result == ResponseResult::Success {
                let labels = vec![("method", method.label()), ("result", result.label())];
                responses.push((labels, n));
            }
        }
    }
    counters(
        e,
        "turnd_requests",
        "STUN/TURN requests answered, by method and result (success or the error code).",
        None,
        &responses,
    )?;
    let reasons: Vec<_> = c
        .auth_failure_reasons
        .iter()
        .map(|(reason, &v)| (vec![("reason", reason.label())], v))
        .collect();
    counters(
        e,
        "turnd_auth_failures",
        "Requests refused by authentication, by reason.",
        None,
        &reasons,
    )?;
    counter(
        e,
        "turnd_peers_denied",
        "CreatePermission or ChannelBind peers refused by the peer filter (403).",
        None,
        c.peers_denied,
    )?;
    counter(
        e,
        "turnd_tcp_relay_throttled",
        "Times a TCP relay splice held bytes back for allocation_bandwidth or user_bandwidth.",
        None,
        c.tcp_relay_throttled,
    )?;
    let refused: Vec<_> = ConnectionRefusal::ALL
        .iter()
        .zip(s.connections_refused)
        .map(|(reason, v)| (vec![("reason", reason.label())], v))
        .collect();
    counters(
        e,
        "turnd_connections_refused",
        "TCP and TLS connections closed as soon as they were accepted, by the limit they hit \
         (max_connections, or max_connections_per_source).",
        None,
        &refused,
    )?;
    let mut drops = Vec::new();
    for (reason, &n) in c.dropped.iter() {
        drops.push((vec![("reason", reason.label())], n));
        // The shell's own reasons follow the relay path's, where they have always been.
        if reason == DropReason::NoChannel {
            drops.push((vec![("reason", "send_error")], s.send_errors));
            drops.push((vec![("reason", "write_queue_full")], s.write_queue_full));
        }
    }
    counters(
        e,
        "turnd_datagrams_dropped",
        "Datagrams not relayed or answered, by reason.",
        None,
        &drops,
    )
}

/// A registry holding the collector; encode it with `prometheus_client::encoding::text`.
pub fn registry(collector: TurndCollector) -> Registry {
    let mut r = Registry::default();
    r.register_collector(Box::new(collector));
    r
}
