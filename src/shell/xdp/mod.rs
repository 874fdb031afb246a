//! The kernel fast path's loader (docs/xdp.md): loads `ebpf/turnd_xdp.c`'s program, attaches
//! it to the interfaces in the mode the operator chose, and hands its counters to the scrape.
//!
//! The loading itself (`load.rs`, aya) is compiled only with the `xdp` feature. Without it, a
//! configuration that asks for XDP is refused in `native`/`generic` mode and runs in user
//! space in `auto` mode, each with one line saying so — the same as on a host without the
//! privileges or the kernel support.
//!
//! Detaching needs no code: the program is attached through a bpf_link held by the
//! [`Attached`] value, and the kernel tears the link down when its last file descriptor
//! closes — when `Attached` is dropped at shutdown, or when the process dies in any way, a
//! `kill -9` included. Nothing is pinned. (aya falls back to a netlink attach, which would
//! outlive a crash, only on kernels without XDP links, before 5.9; the program needs 5.18 for
//! `bpf_xdp_get_buff_len` and does not load there, so no run can leave one behind.)

#[cfg(feature = "xdp")]
mod load;
#[cfg(feature = "xdp")]
mod maps;
// Pure bookkeeping, tested without the feature too.
#[cfg_attr(not(feature = "xdp"), allow(dead_code))]
mod slots;

use crate::core::fast_path::FastPath;
use crate::core::{AllocationId, Relayed};
use crate::metrics::xdp::XdpSource;
use std::net::IpAddr;
use std::sync::Arc;

/// An XDP attach mode.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Hook {
    /// The driver's own hook (`XDP_FLAGS_DRV_MODE`).
    Native,
    /// The kernel's generic hook (`XDP_FLAGS_SKB_MODE`), which every interface has.
    Generic,
}

impl Hook {
    pub fn as_str(self) -> &'static str {
        match self {
            Hook::Native => "native",
            Hook::Generic => "generic",
        }
    }
}

/// What the operator asked for (`xdp`, `xdp_interfaces`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Options {
    /// The modes to try, in order; empty = XDP off.
    pub hooks: Vec<Hook>,
    /// Refuse to start when no mode can be had (`native`, `generic`); otherwise run in user
    /// space (`auto`).
    pub required: bool,
    /// Interfaces to attach to; empty = those that carry the relay (and listen) IPs.
    pub interfaces: Vec<String>,
    /// `max_entries` of the channel maps and of the stats slots (`xdp_max_channels`).
    pub max_channels: u32,
}

/// The program, attached: dropping it detaches it everywhere.
pub struct Attached {
    #[cfg(feature = "xdp")]
    inner: load::Loaded,
}

impl Attached {
    /// What the scrape reads.
    pub fn source(&self) -> Arc<dyn XdpSource> {
        #[cfg(feature = "xdp")]
        {
            self.inner.source()
        }
        #[cfg(not(feature = "xdp"))]
        {
            // Invariant: without the feature no `Attached` is ever made (`start` returns
            // `None` or an error), so this is never reached.
            unreachable!("no XDP program without the xdp feature")
        }
    }
}

impl Attached {
    /// Worker `index`'s (of `workers`) handles on the fast path's maps, with its share of the
    /// stats slots.
    pub fn worker(&self, index: usize, workers: usize) -> Result<WorkerFastPath, String> {
        #[cfg(feature = "xdp")]
        {
            let (chan_in, chan_out, stats) = self.inner.dup_maps()?;
            // Each worker its own range; with fewer slots than workers some get none, and
            // their channels stay in user space.
            let per = self.inner.max_channels / workers.max(1) as u32;
            let first = per * index as u32;
            let inner = maps::WorkerMaps::new(chan_in, chan_out, stats, first..first + per)?;
            Ok(WorkerFastPath { inner })
        }
        #[cfg(not(feature = "xdp"))]
        {
            let _ = (index, workers);
            unreachable!("no XDP program without the xdp feature")
        }
    }
}

/// A worker's side of the fast path: carries out the core's [`FastPath`] outputs on the
/// kernel's maps and folds the kernel's per-allocation counts into the allocation's stats.
pub struct WorkerFastPath {
    #[cfg(feature = "xdp")]
    inner: maps::WorkerMaps,
}

impl WorkerFastPath {
    /// Carries out one fast-path output. An install that cannot be carried out (a
    /// cross-family channel, no route back to a wildcard listener's client, no free stats
    /// slot, a full map) leaves that
    /// channel in user space, which relays it as always; it is counted in `metrics`
    /// (`turnd_xdp_installs_skipped_total`) and logged at debug level.
    pub fn apply(&mut self, f: FastPath, metrics: &crate::metrics::WorkerMetrics) {
        #[cfg(feature = "xdp")]
        if let Err(why) = self.inner.apply(f) {
            let reason = match why {
                maps::Skipped::NotRelayable => 0,
                maps::Skipped::NoSlot => 1,
                maps::Skipped::MapFull => 2,
            };
            metrics.xdp_install_skipped(reason);
            tracing::debug!(?why, ?f, "xdp: channel stays in user space");
        }
        #[cfg(not(feature = "xdp"))]
        let _ = (f, metrics);
    }

    /// Adds what the kernel has relayed so far for the live allocation `id` to `stats`, so
    /// the admin view (`/allocations`) and the store's usage report see kernel traffic while
    /// a call lasts, not only when it ends.
    pub fn add_so_far(&self, id: AllocationId, stats: &mut Relayed) {
        #[cfg(feature = "xdp")]
        self.inner.add_so_far(id, stats);
        #[cfg(not(feature = "xdp"))]
        let _ = (id, stats);
    }

    /// Allocation `id` ended: adds what the kernel relayed for it to `stats`.
    pub fn allocation_ended(&mut self, id: AllocationId, stats: &mut Relayed) {
        #[cfg(feature = "xdp")]
        self.inner.allocation_ended(id, stats);
        #[cfg(not(feature = "xdp"))]
        let _ = (id, stats);
    }
}

/// Loads and attaches the program as `opts` says. `ports` are the UDP listen ports, `ips` the
/// relay and listen IPs whose interfaces are the default ones. `Ok(None)`: XDP is off, or
/// `auto` could not have it (logged once, with why).
pub fn start(opts: &Options, ports: &[u16], ips: &[IpAddr]) -> anyhow::Result<Option<Attached>> {
    if opts.hooks.is_empty() {
        return Ok(None);
    }
    let interfaces = if opts.interfaces.is_empty() {
        super::discover::interfaces_of(ips)
    } else {
        opts.interfaces.clone()
    };
    match attach(opts, ports, &interfaces) {
        Ok(a) => Ok(Some(a)),
        Err(why) if opts.required => anyhow::bail!("xdp: {why}"),
        Err(why) => {
            tracing::warn!("xdp = \"auto\": relaying in user space only: {why}");
            Ok(None)
        }
    }
}

#[cfg(feature = "xdp")]
fn attach(opts: &Options, ports: &[u16], interfaces: &[String]) -> Result<Attached, String> {
    if interfaces.is_empty() {
        return Err(no_interfaces());
    }
    let inner = load::Loaded::attach(&opts.hooks, ports, interfaces, opts.max_channels)?;
    for iface in interfaces {
        warn_if_not_forwarding(iface);
    }
    Ok(Attached { inner })
}

/// The kernel's FIB lookup from XDP answers "forwarding disabled" unless the ingress
/// interface forwards, and then every datagram takes the user-space path (counted under
/// `turnd_xdp_passed_total{reason="fib"}`). turnd changes no sysctl; it says so once.
#[cfg(feature = "xdp")]
fn warn_if_not_forwarding(iface: &str) {
    for (family, path) in [
        (
            "ipv4",
            format!("/proc/sys/net/ipv4/conf/{iface}/forwarding"),
        ),
        (
            "ipv6",
            format!("/proc/sys/net/ipv6/conf/{iface}/forwarding"),
        ),
    ] {
        if std::fs::read_to_string(&path).is_ok_and(|v| v.trim() == "0") {
            tracing::warn!(
                interface = %iface,
                "xdp: {family} forwarding is off on {iface} ({path} is 0): the kernel fast path \
                 cannot look up routes for {family} and relays nothing of it (docs/xdp.md, \
                 Forwarding)"
            );
        }
    }
}

#[cfg(not(feature = "xdp"))]
fn attach(_: &Options, _: &[u16], _: &[String]) -> Result<Attached, String> {
    Err(
        "this turnd was built without the `xdp` feature (cargo build --features xdp; the \
         release image has it)"
            .into(),
    )
}

#[cfg(feature = "xdp")]
fn no_interfaces() -> String {
    "no interface carries the relay or listen IPs (wildcard addresses?): name them in \
     xdp_interfaces"
        .into()
}
