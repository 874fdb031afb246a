//! Binding the extra sockets of RFC 5780 NAT behaviour discovery.
//!
//! For each pair (primary `listen` address A1:P1, alternate A2:P2) the server must also send
//! and receive on A1:P2, A2:P1 and A2:P2. Each becomes one more `SO_REUSEPORT` UDP listener
//! per worker: the worker serves it like any listener and sends each answer from the listener
//! whose address the core names as the source, so the worker needs no code of its own for
//! discovery. The core answers only Binding on these three addresses.

use super::{socket, udp};
use crate::core::nat_discovery::NatPair;
use anyhow::{bail, Context};
use std::io;
use std::net::{SocketAddr, UdpSocket};

/// Tries for a P2 free on both IPs when the operator gives port 0.
const PORT_ATTEMPTS: usize = 16;

/// The pairs with real ports, and per worker the sockets of their three extra addresses.
pub struct Bound {
    pub pairs: Vec<NatPair>,
    pub per_worker: Vec<Vec<UdpSocket>>,
}

/// Binds the extra addresses of every `(listen index, alternate)` pair; `listen` holds the
/// bound listen addresses (real ports), in the order of the `listen` key.
pub fn bind(
    pairs: &[(usize, SocketAddr)],
    listen: &[SocketAddr],
    workers: usize,
    opts: &udp::Options,
) -> anyhow::Result<Bound> {
    let mut bound = Bound {
        pairs: Vec::new(),
        per_worker: (0..workers).map(|_| Vec::new()).collect(),
    };
    for &(index, alternate) in pairs {
        // Invariant: the config check paired each alternate with an existing listen index.
        let primary = *listen
            .get(index)
            .context("nat_discovery_listen: no listen address to pair with")?;
        let (pair, groups) = bind_pair(primary, alternate, workers, opts)?;
        tracing::info!(
            primary = %pair.primary,
            alternate = %pair.alternate,
            "RFC 5780 NAT behaviour discovery"
        );
        bound.pairs.push(pair);
        for group in groups {
            for (w, s) in group.into_iter().enumerate() {
                bound.per_worker[w].push(s);
            }
        }
    }
    Ok(bound)
}

/// Binds A2:P2, A1:P2 and A2:P1. With P2 = 0, the kernel picks P2 on A2 and the other two
/// must get it too; on a clash another port is tried.
fn bind_pair(
    primary: SocketAddr,
    alternate: SocketAddr,
    workers: usize,
    opts: &udp::Options,
) -> anyhow::Result<(NatPair, [Vec<UdpSocket>; 3])> {
    let any_port = alternate.port() == 0;
    for _ in 0..PORT_ATTEMPTS {
        let a2p2 = socket::bind_reuseport_group(alternate, workers, opts)
            .with_context(|| format!("cannot listen on udp {alternate} (nat_discovery_listen)"))?;
        let alternate = a2p2[0].local_addr()?;
        if alternate.port() == primary.port() {
            if any_port {
                continue;
            }
            bail!("nat_discovery_listen {alternate}: the port must differ from {primary}'s");
        }
        let a1p2 = SocketAddr::new(primary.ip(), alternate.port());
        let a2p1 = SocketAddr::new(alternate.ip(), primary.port());
        let result = socket::bind_reuseport_group(a1p2, workers, opts)
            .and_then(|g1| socket::bind_reuseport_group(a2p1, workers, opts).map(|g2| (g1, g2)));
        match result {
            Ok((g1, g2)) => {
                let pair = NatPair { primary, alternate };
                return Ok((pair, [a2p2, g1, g2]));
            }
            Err(e) if any_port && e.kind() == io::ErrorKind::AddrInUse => continue,
            Err(e) => {
                return Err(e).with_context(|| {
                    format!("cannot listen on udp {a1p2} and {a2p1} (nat_discovery_listen)")
                })
            }
        }
    }
    bail!("nat_discovery_listen {alternate}: no port free on both IPs after {PORT_ATTEMPTS} tries")
}
