//! Loading and attaching with aya (feature `xdp`). docs/xdp.md says why aya: it attaches
//! through a bpf_link in either mode, so the program goes with the process however it ends,
//! and it is pure Rust.

use super::Hook;
use crate::metrics::xdp::{Count, XdpSource, SLOTS};
use aya::maps::{HashMap, Map, MapData, PerCpuArray};
use aya::programs::{Xdp, XdpMode};
use aya::{Ebpf, Pod};
use std::os::fd::AsFd;
use std::sync::Arc;

/// `ebpf/turnd_xdp.c`, compiled by build.rs; aligned as aya's ELF parser needs.
static PROGRAM: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/turnd_xdp.o"));

/// What the hint after a load or attach failure says.
const NEEDS: &str = "it needs CAP_BPF and CAP_NET_ADMIN and a kernel of 5.18 or later with BTF";

/// `struct turnd_count` of the C program.
#[repr(C)]
#[derive(Clone, Copy, Default)]
struct CCount {
    packets: u64,
    bytes: u64,
}

// SAFETY: two u64 with no padding, the layout of the C struct; any bit pattern is valid.
unsafe impl Pod for CCount {}

/// The loaded program with its links. Dropping it closes every file descriptor, which
/// detaches the program from every interface.
pub(super) struct Loaded {
    /// Owns the program, its links and the maps not taken out.
    ebpf: Ebpf,
    /// The channel maps' and stats slots' `max_entries`.
    pub(super) max_channels: u32,
    counters: Arc<Counters>,
}

/// The per-CPU counter map, read by the scrape.
struct Counters {
    map: PerCpuArray<MapData, CCount>,
    interfaces: usize,
}

impl XdpSource for Counters {
    fn interfaces(&self) -> usize {
        self.interfaces
    }

    fn read(&self) -> Option<[Count; SLOTS]> {
        let mut out = [Count::default(); SLOTS];
        for (i, slot) in out.iter_mut().enumerate() {
            let per_cpu = self.map.get(&(i as u32), 0).ok()?;
            for c in per_cpu.iter() {
                slot.packets = slot.packets.wrapping_add(c.packets);
                slot.bytes = slot.bytes.wrapping_add(c.bytes);
            }
        }
        Some(out)
    }
}

/// An error and its sources on one line.
fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

impl Loaded {
    /// Loads the program, writes the listen ports and attaches it to every interface, each in
    /// the first of `hooks` that works. All or nothing: on an error everything loaded so far
    /// is dropped (detached) and the error says which interface and why.
    pub(super) fn attach(
        hooks: &[Hook],
        ports: &[u16],
        interfaces: &[String],
        max_channels: u32,
    ) -> Result<Loaded, String> {
        let mut ebpf = aya::EbpfLoader::new()
            .map_max_entries("turnd_chan_in", max_channels)
            .map_max_entries("turnd_chan_out", max_channels)
            .map_max_entries("turnd_alloc_stats", max_channels)
            .load(PROGRAM)
            .map_err(|e| format!("cannot load the program ({}); {NEEDS}", chain(&e)))?;
        {
            let map = ebpf
                .map_mut("turnd_ports")
                .ok_or("the program has no turnd_ports map")?;
            let mut map: HashMap<_, u16, u8> =
                HashMap::try_from(map).map_err(|e| format!("turnd_ports: {}", chain(&e)))?;
            for &port in ports {
                map.insert(port, 1, 0)
                    .map_err(|e| format!("turnd_ports: {}", chain(&e)))?;
            }
        }
        let program: &mut Xdp = ebpf
            .program_mut("turnd_xdp")
            .ok_or("the object has no turnd_xdp program")?
            .try_into()
            .map_err(|e: aya::programs::ProgramError| chain(&e))?;
        program
            .load()
            .map_err(|e| format!("the kernel refused the program ({}); {NEEDS}", chain(&e)))?;
        for iface in interfaces {
            let mut errors = Vec::new();
            let attached = hooks.iter().find(|&&hook| {
                let mode = match hook {
                    Hook::Native => XdpMode::Driver,
                    Hook::Generic => XdpMode::Skb,
                };
                match program.attach(iface, mode) {
                    Ok(_) => {
                        tracing::info!(interface = %iface, mode = hook.as_str(), "xdp: attached");
                        true
                    }
                    Err(e) => {
                        errors.push(format!("{}: {}", hook.as_str(), chain(&e)));
                        false
                    }
                }
            });
            if attached.is_none() {
                let errors = errors.join("; ");
                let hint = if errors.contains("busy") || errors.contains("exists") {
                    "; another XDP program holds the interface (turnd never replaces one)"
                } else if errors.contains("not permitted") {
                    "; it needs CAP_NET_ADMIN"
                } else {
                    ""
                };
                return Err(format!("cannot attach to {iface} ({errors}){hint}"));
            }
        }
        let map = ebpf
            .take_map("turnd_counters")
            .ok_or("the program has no turnd_counters map")?;
        let map =
            PerCpuArray::try_from(map).map_err(|e| format!("turnd_counters: {}", chain(&e)))?;
        Ok(Loaded {
            ebpf,
            max_channels,
            counters: Arc::new(Counters {
                map,
                interfaces: interfaces.len(),
            }),
        })
    }

    /// Fresh file descriptors for the fast path's maps (`turnd_chan_in`, `turnd_chan_out`,
    /// `turnd_alloc_stats`), for one worker.
    pub(super) fn dup_maps(&self) -> Result<(MapData, MapData, MapData), String> {
        let dup = |name: &str| -> Result<MapData, String> {
            let data = match self.ebpf.map(name) {
                Some(Map::HashMap(d) | Map::PerCpuArray(d)) => d,
                _ => {
                    return Err(format!(
                        "the program has no map {name} of the expected type"
                    ))
                }
            };
            let fd = data
                .fd()
                .as_fd()
                .try_clone_to_owned()
                .map_err(|e| format!("{name}: {e}"))?;
            MapData::from_fd(fd).map_err(|e| format!("{name}: {}", chain(&e)))
        };
        Ok((
            dup("turnd_chan_in")?,
            dup("turnd_chan_out")?,
            dup("turnd_alloc_stats")?,
        ))
    }

    pub(super) fn source(&self) -> Arc<dyn XdpSource> {
        self.counters.clone()
    }
}
