//! A reload replaced the peer filter (or the own-host set): what it now denies stops at once.
//!
//! Permissions and channels carry the filter's verdict from when they were installed, so the
//! relay path runs no filter per datagram. A reload that denies a network therefore has to
//! reach into the existing state, or relaying toward that network would go on until the
//! permission lapsed (up to 5 minutes, refreshed for ever by the client). The shell calls
//! [`Server::handle_peer_filter_changed`] on every worker right after it stores the new filter;
//! `handle_timeout` also notices a new filter on its own, within a second.
//!
//! - A permission whose IP is now denied is removed (no datagram passes either way); the
//!   others are re-marked own-host or not, as the new verdict says.
//! - A channel whose peer (address and port) is now refused ends at once and enters its
//!   cool-down (RFC 8656 §12), so its number is not rebound elsewhere while late ChannelData
//!   may still arrive.
//! - RFC 6062 peer connections to a refused peer: a Connect still connecting is answered 403,
//!   a connection waiting for its ConnectionBind is closed, and a TCP allocation with a
//!   spliced connection to one ends (the core cannot cut a splice on its own).
//!
//! The scan is O(allocations × their permissions and channels), on the control plane, once
//! per reload.

use crate::core::allocation::AllocationId;
use crate::core::channel::CHANNEL_COOLDOWN;
use crate::core::tcp_relay::{ConnState, ConnectionId, TcpRelayOutput};
use crate::core::{EndReason, Output, Server};
use crate::stun::ErrorCode;
use std::time::Instant;

impl Server {
    /// Applies the peer filter now in [`Shared`](crate::core::Shared) to every allocation of
    /// this worker (see the module docs). Idempotent: calling it with an unchanged filter
    /// changes nothing.
    pub fn handle_peer_filter_changed(&mut self, now: Instant) {
        let filter = self.shared.peer_filter.load();
        self.filter = filter.clone();
        let mut dropped = 0u64;
        let mut sweeps: Vec<AllocationId> = Vec::new();
        for a in self.allocations.iter_mut() {
            dropped += a.permissions.refilter(|ip| filter.verdict(ip)) as u64;
            if a.channels.revoke(now, |peer| filter.allows(peer)) {
                sweeps.push(a.id);
            }
        }
        self.counters.permissions = self.counters.permissions.saturating_sub(dropped);
        for id in sweeps {
            self.schedule_sweep(id, now + CHANNEL_COOLDOWN);
        }
        // Revoked channels and dropped permissions leave the kernel fast path at once.
        self.sync_fast_path_all(now);
        self.refilter_tcp_connections(now, |peer| filter.allows(peer));
    }

    /// The RFC 6062 part of [`Server::handle_peer_filter_changed`]: this worker's peer
    /// connections whose peer `keep` refuses.
    fn refilter_tcp_connections(
        &mut self,
        now: Instant,
        keep: impl Fn(std::net::SocketAddr) -> bool,
    ) {
        let owner = self.tcp_relay.tag;
        let shared = self.shared.clone();
        let mut refused: Vec<(AllocationId, ConnectionId, ConnState)> = Vec::new();
        for a in self.allocations.iter() {
            let (id, Some(tcp)) = (a.id, a.tcp()) else {
                continue;
            };
            for &cid in &tcp.connections {
                if let Some(c) = shared.tcp_connections.get(cid) {
                    if c.owner == owner && !keep(c.peer) {
                        refused.push((id, cid, c.state));
                    }
                }
            }
        }
        let mut ended: Vec<AllocationId> = Vec::new();
        for (id, cid, state) in refused {
            match state {
                ConnState::Connecting => self.refuse_connect(now, cid, ErrorCode::Forbidden),
                ConnState::Pending { .. } => {
                    if shared
                        .tcp_connections
                        .remove_if(cid, |c| c.owner == owner && c.alloc == id)
                        .is_some()
                    {
                        self.forget_connection(id, cid);
                        self.outputs
                            .push_back(Output::TcpRelay(TcpRelayOutput::CloseConnection {
                                id,
                                connection_id: cid,
                            }));
                    }
                }
                ConnState::Bound => {
                    if !ended.contains(&id) {
                        ended.push(id);
                    }
                }
            }
        }
        for id in ended {
            self.free_allocation(now, id, EndReason::PeerDenied);
        }
    }
}
