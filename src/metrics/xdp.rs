//! The XDP program's counters (docs/xdp.md), as the scrape reads them.
//!
//! The program counts per CPU in its `turnd_counters` map, one slot per value of
//! `enum turnd_counter` in `ebpf/turnd_xdp.c` (append-only: the numbers are the map's
//! contract). The shell's loader sums the CPUs' slots when asked; this module names them and
//! encodes them. It is compiled with or without the `xdp` feature: without it no source is
//! ever given and nothing is encoded.

use prometheus_client::encoding::DescriptorEncoder;
use std::fmt;

/// Slots of `turnd_counters`, in `enum turnd_counter`'s order.
pub const SLOTS: usize = 15;

/// The C enum's values.
pub mod slot {
    pub const SEEN: usize = 0;
    pub const PASS_NOT_IP: usize = 1;
    pub const PASS_NOT_UDP: usize = 2;
    pub const PASS_OTHER_PORT: usize = 3;
    pub const PASS_NOT_CHANNELDATA: usize = 4;
    pub const PASS_BAD_LENGTH: usize = 5;
    pub const CHANNELDATA_V4: usize = 6;
    pub const CHANNELDATA_V6: usize = 7;
    pub const RELAYED_TO_PEER: usize = 8;
    pub const RELAYED_TO_CLIENT: usize = 9;
    pub const PASS_NO_ENTRY: usize = 10;
    pub const PASS_EXPIRED: usize = 11;
    pub const PASS_FIB: usize = 12;
    pub const PASS_UNSUPPORTED: usize = 13;
    pub const RELAYED_HAIRPIN: usize = 14;
}

/// One slot summed over the CPUs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Count {
    pub packets: u64,
    pub bytes: u64,
}

/// What the loader gives the scrape: the attached program's counters.
pub trait XdpSource: Send + Sync {
    /// The interfaces the program is attached to.
    fn interfaces(&self) -> usize;
    /// Every slot summed over the CPUs; `None` when the map could not be read (the scrape
    /// then leaves the counters out rather than report zeros).
    fn read(&self) -> Option<[Count; SLOTS]>;
}

/// Why the program passed a packet up, as the `reason` label says it, with its slot.
const PASSED: [(&str, usize); 9] = [
    ("not_ip", slot::PASS_NOT_IP),
    ("not_udp", slot::PASS_NOT_UDP),
    ("other_port", slot::PASS_OTHER_PORT),
    ("not_channeldata", slot::PASS_NOT_CHANNELDATA),
    ("bad_length", slot::PASS_BAD_LENGTH),
    ("no_entry", slot::PASS_NO_ENTRY),
    ("expired", slot::PASS_EXPIRED),
    ("fib", slot::PASS_FIB),
    ("unsupported", slot::PASS_UNSUPPORTED),
];

/// The kernel's relayed datagrams and payload bytes, (client → peer, peer → client): added
/// to `turnd_relayed_*{transport="udp"}` so those stay the totals, and shown on their own as
/// `turnd_xdp_relayed_*`. A hairpin (one allocation of this host to another) is one datagram
/// the user-space path would count in both directions, so it is counted in both here too.
pub fn relayed(c: &[Count; SLOTS]) -> (Count, Count) {
    let h = c[slot::RELAYED_HAIRPIN];
    let add = |a: Count| Count {
        packets: a.packets + h.packets,
        bytes: a.bytes + h.bytes,
    };
    (
        add(c[slot::RELAYED_TO_PEER]),
        add(c[slot::RELAYED_TO_CLIENT]),
    )
}

/// Why a worker did not carry out an install (the `reason` label), in the order the shell
/// counts them (`WorkerMetrics::xdp_install_skipped`).
pub const SKIPPED: [&str; 3] = ["not_relayable", "no_slot", "map_full"];

/// Encodes the XDP families from `source`, and the workers' skipped installs.
pub(crate) fn encode(
    source: &dyn XdpSource,
    skipped: &[u64; SKIPPED.len()],
    e: &mut DescriptorEncoder,
) -> fmt::Result {
    let series: Vec<_> = SKIPPED
        .iter()
        .zip(skipped)
        .map(|(&reason, &n)| (vec![("reason", reason)], n))
        .collect();
    super::collect::counters_pub(
        e,
        "turnd_xdp_installs_skipped",
        "Channels the core handed to the kernel fast path that stayed in user space, by reason.",
        &series,
    )?;
    super::collect::gauge_pub(
        e,
        "turnd_xdp_interfaces",
        "Interfaces turnd's XDP program is attached to (0: user space only).",
        source.interfaces() as i64,
    )?;
    let Some(c) = source.read() else {
        return Ok(());
    };
    super::collect::counter_pub(
        e,
        "turnd_xdp_packets",
        "Frames the XDP program saw on its interfaces, whatever their kind.",
        c[slot::SEEN].packets,
    )?;
    let passed: Vec<_> = PASSED
        .iter()
        .map(|&(reason, i)| (vec![("reason", reason)], c[i].packets))
        .collect();
    super::collect::counters_pub(
        e,
        "turnd_xdp_passed",
        "Frames the XDP program passed up to the kernel's stack as not its to relay, by reason.",
        &passed,
    )?;
    let (to_peer, to_client) = relayed(&c);
    let directions = |f: fn(&Count) -> u64| {
        vec![
            (vec![("direction", "client_to_peer")], f(&to_peer)),
            (vec![("direction", "peer_to_client")], f(&to_client)),
        ]
    };
    super::collect::counters_pub(
        e,
        "turnd_xdp_relayed_datagrams",
        "Datagrams the XDP program relayed in the kernel, by direction (also counted in \
         turnd_relayed_datagrams_total).",
        &directions(|c| c.packets),
    )?;
    super::collect::counters_bytes(
        e,
        "turnd_xdp_relayed",
        "Application payload bytes the XDP program relayed in the kernel, by direction (also \
         counted in turnd_relayed_bytes_total).",
        &directions(|c| c.bytes),
    )?;
    super::collect::counters_pub(
        e,
        "turnd_xdp_channeldata",
        "Well-formed ChannelData to a listen port the XDP program saw, by IP family.",
        &[
            (vec![("family", "ipv4")], c[slot::CHANNELDATA_V4].packets),
            (vec![("family", "ipv6")], c[slot::CHANNELDATA_V6].packets),
        ],
    )
}
