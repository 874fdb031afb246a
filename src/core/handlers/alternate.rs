//! ALTERNATE-SERVER (RFC 8489 §10, §14.15): an Allocate this server cannot take — it is
//! draining, its relay ports are used up, or it holds `total_quota` allocations — is answered
//! with 300 Try Alternate naming another server, instead of 508 or 486.
//!
//! Loop safety: only Allocate is redirected, and only for the server's own capacity (a user
//! over their own quota gets 486: another server would not change their limit). The list
//! never yields the address the request reached, nor any other address of this server: one
//! config file listing every node of a cluster is the usual way to deploy, and a node listening
//! on a wildcard (`0.0.0.0:3478`, where a UDP request's server address is the wildcard itself)
//! must still recognise its own entry. The own-host set of the peer filter knows every
//! listener, every address of the host's interfaces and every advertised address
//! ([`OwnHost::is_own_listener`](crate::core::own_host::OwnHost::is_own_listener)), so a
//! misconfigured list cannot send a client back to where it is. A ping-pong between two full
//! servers is ended by the client, which RFC 8489 §10 tells to ignore a redirect to a server it
//! tried in the last five minutes; the server keeps no per-client state to do it (stateless,
//! as every unauthenticated path is).
//! The answer follows authentication, so it is signed like any other (§10 allows it; the
//! client can trust the redirect).

use crate::core::five_tuple::FiveTuple;
use crate::core::reply::Responder;
use crate::core::Server;
use crate::stun::{AttrType, ErrorCode};
use std::net::SocketAddr;

impl Server {
    /// The 300 answer for `from`, or None when no alternate fits (the caller then sends its
    /// 486 or 508). The first ALTERNATE-SERVER is of the request's family (required), picked
    /// at random among those listed so load spreads; a second of the other family follows
    /// when one is configured (RFC 8489 §10: SHOULD).
    pub(crate) fn try_alternate(&mut self, from: FiveTuple, r: &Responder) -> Option<Vec<u8>> {
        let shared = self.shared.clone();
        let list = &shared.config.alternate_servers;
        let filter = shared.peer_filter.load();
        let own = filter.own_host();
        let usable = |a: &&SocketAddr| **a != from.server && !own.is_own_listener(**a);
        let same: Vec<SocketAddr> = list
            .iter()
            .filter(usable)
            .filter(|a| a.is_ipv4() == from.client.is_ipv4())
            .copied()
            .collect();
        if same.is_empty() {
            return None;
        }
        let other = list
            .iter()
            .filter(usable)
            .find(|a| a.is_ipv4() != from.client.is_ipv4())
            .copied();
        let first = same[(self.random() % same.len() as u64) as usize];
        Some(r.error(ErrorCode::TryAlternate, |b| {
            b.add_address(AttrType::ALTERNATE_SERVER, &first)?;
            if let Some(o) = other {
                b.add_address(AttrType::ALTERNATE_SERVER, &o)?;
            }
            Ok(())
        }))
    }
}
