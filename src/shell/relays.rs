//! An allocation's UDP relay sockets, indexed like the core's allocation slab, so finding the
//! socket for a forwarded datagram — or for a poller event — is an index, a generation check
//! and the peer's family rather than a hash. A leaf: the worker registers each socket on its
//! poller under [`Token::relay`](super::token::Token::relay).

use super::token::Token;
use crate::core::AllocationId;
use crate::stun::AddressFamily;
use std::net::{SocketAddr, UdpSocket};

/// An allocation's relay sockets, by family (0 IPv4, 1 IPv6): one for most allocations, two
/// for a dual one (ADDITIONAL-ADDRESS-FAMILY), each carrying the peers of its own family.
struct Relay {
    id: AllocationId,
    sockets: [Option<UdpSocket>; 2],
}

#[derive(Default)]
pub struct Relays {
    slots: Vec<Option<Relay>>,
}

impl Relays {
    /// The socket of allocation `id` that talks to `peer`'s family.
    pub fn socket(&self, id: AllocationId, peer: SocketAddr) -> Option<&UdpSocket> {
        self.family(id, peer.is_ipv6())
    }

    fn family(&self, id: AllocationId, ipv6: bool) -> Option<&UdpSocket> {
        let relay = self
            .slots
            .get(id.index as usize)?
            .as_ref()
            .filter(|r| r.id == id)?;
        relay.sockets[usize::from(ipv6)].as_ref()
    }

    /// The allocation and socket a relay token names, if it is still there.
    pub fn by_token(&self, token: Token, ipv6: bool) -> Option<(AllocationId, &UdpSocket)> {
        let relay = self.slots.get(token.index as usize)?.as_ref()?;
        if !token.names(relay.id) {
            return None;
        }
        Some((relay.id, relay.sockets[usize::from(ipv6)].as_ref()?))
    }

    /// Adds the socket bound to `bind`; a slot still holding an older generation's sockets
    /// is cleared first (dropping a socket closes it, which takes it off the poller).
    pub fn insert(&mut self, id: AllocationId, bind: SocketAddr, socket: UdpSocket) {
        let i = id.index as usize;
        if self.slots.len() <= i {
            self.slots.resize_with(i + 1, || None);
        }
        let slot = &mut self.slots[i];
        if slot.as_ref().is_none_or(|r| r.id != id) {
            *slot = Some(Relay {
                id,
                sockets: [None, None],
            });
        }
        if let Some(r) = slot {
            r.sockets[usize::from(bind.is_ipv6())] = Some(socket);
        }
    }

    /// Closes allocation `id`'s sockets: all, or the one of `family`.
    pub fn remove(&mut self, id: AllocationId, family: Option<AddressFamily>) {
        let Some(slot) = self.slots.get_mut(id.index as usize) else {
            return;
        };
        if slot.as_ref().is_none_or(|r| r.id != id) {
            return;
        }
        match family {
            None => *slot = None,
            Some(f) => {
                if let Some(r) = slot {
                    r.sockets[usize::from(f == AddressFamily::V6)] = None;
                }
            }
        }
    }
}
