//! A worker's side of the fast path's maps (feature `xdp`): it carries out the core's
//! [`FastPath`] outputs as map updates, hands each allocation a stats slot, and folds the
//! slot's kernel counts into the allocation's stats when it ends.
//!
//! Every worker has its own file descriptors for the maps (duplicated at start-up), so
//! nothing here is shared between threads; updates are syscalls on the control path (a
//! ChannelBind, a sweep), never per datagram. The layouts mirror `ebpf/turnd_xdp.c`'s
//! structs byte for byte; both sides assert their sizes.

use super::slots::{Slot, SlotPool};
use crate::core::fast_path::{ChannelKey, FastPath};
use crate::core::{AllocationId, Relayed};
use aya::maps::{HashMap, Map, MapData, PerCpuArray, PerCpuValues};
use aya::Pod;
use std::net::{IpAddr, SocketAddr};
use std::time::Instant;

/// `struct turnd_chan_in_key`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(super) struct InKey {
    pub client_ip: [u8; 16],
    pub listen_ip: [u8; 16],
    pub client_port: [u8; 2],
    pub listen_port: [u8; 2],
    pub channel: u16,
    pub family: u8,
    pub pad: u8,
}

/// `struct turnd_chan_in_value`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(super) struct InValue {
    pub relay_ip: [u8; 16],
    pub peer_ip: [u8; 16],
    pub relay_port: [u8; 2],
    pub peer_port: [u8; 2],
    pub stats_slot: u32,
    pub expires_ns: u64,
    pub family: u8,
    pub dont_fragment: u8,
    pub pad: [u8; 6],
}

/// `struct turnd_chan_out_key`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(super) struct OutKey {
    pub relay_ip: [u8; 16],
    pub peer_ip: [u8; 16],
    pub relay_port: [u8; 2],
    pub peer_port: [u8; 2],
    pub family: u8,
    pub pad: [u8; 3],
}

/// `struct turnd_chan_out_value`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(super) struct OutValue {
    pub client_ip: [u8; 16],
    pub listen_ip: [u8; 16],
    pub client_port: [u8; 2],
    pub listen_port: [u8; 2],
    pub channel: u16,
    pub pad: u16,
    pub stats_slot: u32,
    pub pad2: u32,
    pub expires_ns: u64,
    pub family: u8,
    pub pad3: [u8; 7],
}

/// `struct turnd_alloc_stats`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(super) struct SlotStats {
    pub to_peer_packets: u64,
    pub to_peer_bytes: u64,
    pub to_client_packets: u64,
    pub to_client_bytes: u64,
}

const _: () = assert!(std::mem::size_of::<InKey>() == 40);
const _: () = assert!(std::mem::size_of::<InValue>() == 56);
const _: () = assert!(std::mem::size_of::<OutKey>() == 40);
const _: () = assert!(std::mem::size_of::<OutValue>() == 64);
const _: () = assert!(std::mem::size_of::<SlotStats>() == 32);

// SAFETY (all five): `repr(C)` structs of integers and byte arrays with every padding byte an
// explicit field, so they have no uninitialised bytes and any bit pattern is a valid value.
unsafe impl Pod for InKey {}
unsafe impl Pod for InValue {}
unsafe impl Pod for OutKey {}
unsafe impl Pod for OutValue {}
unsafe impl Pod for SlotStats {}

/// An address as the maps store it: 16 bytes (IPv4 in the first four), and 4 or 6.
fn ip_bytes(ip: IpAddr) -> ([u8; 16], u8) {
    let mut out = [0u8; 16];
    match ip {
        IpAddr::V4(v4) => {
            out[..4].copy_from_slice(&v4.octets());
            (out, 4)
        }
        IpAddr::V6(v6) => (v6.octets(), 6),
    }
}

fn port_bytes(a: SocketAddr) -> [u8; 2] {
    a.port().to_be_bytes()
}

/// `at` on the clock `bpf_ktime_get_ns` reads (CLOCK_MONOTONIC), which is also what
/// `Instant` reads on Linux; converted through a pair of readings taken now.
fn monotonic_ns(at: Instant) -> u64 {
    let now = Instant::now();
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes the timespec we own; CLOCK_MONOTONIC always exists.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    let now_ns = (ts.tv_sec as u64)
        .saturating_mul(1_000_000_000)
        .saturating_add(ts.tv_nsec as u64);
    if at >= now {
        now_ns.saturating_add((at - now).as_nanos() as u64)
    } else {
        now_ns.saturating_sub((now - at).as_nanos() as u64)
    }
}

/// The local address the kernel answers `client` from when a wildcard socket replies to it:
/// the source address of the route to it, found by connecting a UDP socket (no datagram is
/// sent). A client that sent to another address of this host (a multi-homed host) misses the
/// kernel's entry and is relayed in user space, as before. Three system calls, once per
/// allocation, on the control path.
fn answer_address(client: SocketAddr) -> Option<IpAddr> {
    let any: SocketAddr = if client.is_ipv4() {
        (std::net::Ipv4Addr::UNSPECIFIED, 0).into()
    } else {
        (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
    };
    let s = std::net::UdpSocket::bind(any).ok()?;
    s.connect(client).ok()?;
    let ip = s.local_addr().ok()?.ip();
    (!ip.is_unspecified()).then_some(ip)
}

/// The two keys of a channel.
pub(super) fn keys(k: &ChannelKey) -> (InKey, OutKey) {
    let (client_ip, family) = ip_bytes(k.client.client.ip());
    let (listen_ip, _) = ip_bytes(k.client.server.ip());
    let (relay_ip, _) = ip_bytes(k.relay.ip());
    let (peer_ip, _) = ip_bytes(k.peer.ip());
    (
        InKey {
            client_ip,
            listen_ip,
            client_port: port_bytes(k.client.client),
            listen_port: port_bytes(k.client.server),
            channel: k.channel,
            family,
            pad: 0,
        },
        OutKey {
            relay_ip,
            peer_ip,
            relay_port: port_bytes(k.relay),
            peer_port: port_bytes(k.peer),
            family: ip_bytes(k.peer.ip()).1,
            pad: [0; 3],
        },
    )
}

/// Why an install was not carried out (the channel then stays in user space).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Skipped {
    /// A cross-family channel (not relayed in the kernel yet), or a client of a wildcard
    /// listener this host has no route back to.
    NotRelayable,
    /// The worker's stats slots are all in use.
    NoSlot,
    /// A map refused the insert (full).
    MapFull,
}

/// A map from its data, typed by what the kernel says it is.
fn map(data: MapData) -> Result<Map, String> {
    Map::from_map_data(data).map_err(|e| e.to_string())
}

/// One worker's map handles and slots.
pub(super) struct WorkerMaps {
    chan_in: HashMap<MapData, InKey, InValue>,
    chan_out: HashMap<MapData, OutKey, OutValue>,
    stats: PerCpuArray<MapData, SlotStats>,
    /// This worker's range of stats slots, and beside each the address a wildcard
    /// listener's client is answered from (bounded by the range with them).
    slots: SlotPool,
    cpus: usize,
}

impl WorkerMaps {
    pub(super) fn new(
        chan_in: MapData,
        chan_out: MapData,
        stats: MapData,
        slots: std::ops::Range<u32>,
    ) -> Result<WorkerMaps, String> {
        let cpus = aya::util::nr_cpus().map_err(|(what, e)| format!("{what}: {e}"))?;
        Ok(WorkerMaps {
            chan_in: HashMap::try_from(map(chan_in)?).map_err(|e| e.to_string())?,
            chan_out: HashMap::try_from(map(chan_out)?).map_err(|e| e.to_string())?,
            stats: PerCpuArray::try_from(map(stats)?).map_err(|e| e.to_string())?,
            slots: SlotPool::new(slots),
            cpus,
        })
    }

    /// Carries out one output of the core.
    pub(super) fn apply(&mut self, f: FastPath) -> Result<(), Skipped> {
        match f {
            FastPath::Install {
                key,
                expires,
                dont_fragment,
            } => self.install(&key, expires, dont_fragment),
            FastPath::Remove(key) => {
                self.remove(&key);
                Ok(())
            }
        }
    }

    fn install(&mut self, k: &ChannelKey, expires: Instant, df: bool) -> Result<(), Skipped> {
        let relayable = !k.relay.ip().is_unspecified()
            && k.client.client.is_ipv4() == k.peer.is_ipv4()
            && k.client.server.is_ipv4() == k.relay.is_ipv4()
            && k.client.client.is_ipv4() == k.client.server.is_ipv4();
        if !relayable {
            return Err(Skipped::NotRelayable);
        }
        let slot = self.slot(k.id).ok_or(Skipped::NoSlot)?;
        let k = &self.resolved(k, true).ok_or(Skipped::NotRelayable)?;
        let (in_key, out_key) = keys(k);
        let expires_ns = monotonic_ns(expires);
        let in_value = InValue {
            relay_ip: out_key.relay_ip,
            peer_ip: out_key.peer_ip,
            relay_port: out_key.relay_port,
            peer_port: out_key.peer_port,
            stats_slot: slot,
            expires_ns,
            family: out_key.family,
            dont_fragment: u8::from(df),
            pad: [0; 6],
        };
        let out_value = OutValue {
            client_ip: in_key.client_ip,
            listen_ip: in_key.listen_ip,
            client_port: in_key.client_port,
            listen_port: in_key.listen_port,
            channel: k.channel,
            stats_slot: slot,
            expires_ns,
            family: in_key.family,
            ..OutValue::default()
        };
        let ok = self.chan_in.insert(in_key, in_value, 0).is_ok()
            && self.chan_out.insert(out_key, out_value, 0).is_ok();
        if !ok {
            self.remove(k);
            return Err(Skipped::MapFull);
        }
        Ok(())
    }

    fn remove(&mut self, k: &ChannelKey) {
        // A wildcard listener's client with no address found was never installed.
        let Some(k) = self.resolved(k, false) else {
            return;
        };
        let (in_key, out_key) = keys(&k);
        // Not there (never installed: skipped, or a map was full) is fine.
        let _ = self.chan_in.remove(&in_key);
        let _ = self.chan_out.remove(&out_key);
    }

    /// `k` with a wildcard listen address replaced by the address the kernel answers the
    /// client from: the one found for the allocation before (kept beside its stats slot, so
    /// every later install and removal uses the same keys), or (`find`, once it holds a slot)
    /// a new one. `None`: no address (never installed, or no route to the client).
    fn resolved(&mut self, k: &ChannelKey, find: bool) -> Option<ChannelKey> {
        if !k.client.server.ip().is_unspecified() {
            return Some(*k);
        }
        let ip = match self.slots.answered_from(k.id) {
            Some(ip) => ip,
            None if find => {
                let ip = answer_address(k.client.client)?;
                self.slots.keep_answered_from(k.id, ip).then_some(ip)?
            }
            None => return None,
        };
        let mut k = *k;
        k.client.server.set_ip(ip);
        Some(k)
    }

    /// The allocation's slot, handed out (and zeroed) on its first install.
    fn slot(&mut self, id: AllocationId) -> Option<u32> {
        match self.slots.get(id)? {
            Slot::Held(s) => Some(s),
            Slot::New(s) => {
                // Zeroed when handed out rather than when freed: a datagram the program was
                // still counting for the previous owner as it ended lands in neither's stats,
                // not in this one's.
                let zeroed = PerCpuValues::try_from(vec![SlotStats::default(); self.cpus])
                    .ok()
                    .is_some_and(|zero| self.stats.set(s, zero, 0).is_ok());
                if !zeroed {
                    self.slots.undo(id);
                    return None;
                }
                Some(s)
            }
        }
    }

    /// Allocation `id` ended (every entry of it was removed before): its slot's counts, summed
    /// over the CPUs, are added to `stats`, and the slot goes back to the free list.
    pub(super) fn allocation_ended(&mut self, id: AllocationId, stats: &mut Relayed) {
        if let Some(s) = self.slots.release(id) {
            self.add_slot(s, stats);
        }
    }

    /// What the kernel has relayed so far for allocation `id`, added to `stats` (nothing when
    /// it has no slot). One map read, for the admin view and the usage report — never per
    /// datagram.
    pub(super) fn add_so_far(&self, id: AllocationId, stats: &mut Relayed) {
        if let Some(s) = self.slots.of(id) {
            self.add_slot(s, stats);
        }
    }

    /// Adds slot `s`'s counts, summed over the CPUs, to `stats`. A failed read adds nothing:
    /// the counts are kept in the map and read again at the allocation's end.
    fn add_slot(&self, s: u32, stats: &mut Relayed) {
        if let Ok(per_cpu) = self.stats.get(&s, 0) {
            for c in per_cpu.iter() {
                stats.to_peer_packets += c.to_peer_packets;
                stats.to_peer_bytes += c.to_peer_bytes;
                stats.to_client_packets += c.to_client_packets;
                stats.to_client_bytes += c.to_client_bytes;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::FiveTuple;

    #[test]
    fn keys_store_addresses_as_the_packet_carries_them() {
        let k = ChannelKey {
            id: AllocationId {
                index: 1,
                generation: 0,
            },
            client: FiveTuple::udp(
                "192.0.2.7:40000".parse().unwrap(),
                "10.0.0.1:3478".parse().unwrap(),
            ),
            channel: 0x4001,
            relay: "10.0.0.1:50000".parse().unwrap(),
            peer: "198.51.100.9:9".parse().unwrap(),
        };
        let (i, o) = keys(&k);
        assert_eq!(&i.client_ip[..4], &[192, 0, 2, 7]);
        assert_eq!(&i.client_ip[4..], &[0; 12]);
        assert_eq!(i.client_port, [0x9c, 0x40]);
        assert_eq!(i.listen_port, [0x0d, 0x96]);
        assert_eq!((i.channel, i.family), (0x4001, 4));
        assert_eq!(&o.relay_ip[..4], &[10, 0, 0, 1]);
        assert_eq!(o.relay_port, [0xc3, 0x50]);
        assert_eq!(o.peer_port, [0, 9]);
        let v6 = ip_bytes("2001:db8::1".parse().unwrap());
        assert_eq!((v6.0[0], v6.0[15], v6.1), (0x20, 1, 6));
    }

    #[test]
    fn a_wildcard_listener_answers_from_the_route_s_source() {
        // Loopback: the route to 127.0.0.1 leaves from 127.0.0.1, as a wildcard socket's
        // reply to a loopback client would.
        assert_eq!(
            answer_address("127.0.0.1:9".parse().unwrap()),
            Some("127.0.0.1".parse().unwrap())
        );
        assert_eq!(
            answer_address("127.0.0.2:9".parse().unwrap()),
            Some("127.0.0.1".parse().unwrap())
        );
    }

    #[test]
    fn monotonic_ns_follows_instant() {
        let now = Instant::now();
        let later = now + std::time::Duration::from_secs(300);
        let d = monotonic_ns(later) - monotonic_ns(now);
        // Two readings each: allow a millisecond of scheduling between them.
        assert!((299_999_000_000..=300_001_000_000).contains(&d), "{d}");
    }
}
