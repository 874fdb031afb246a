//! What a poller registration stands for, packed into the `u64` the kernel hands back with
//! each event: a kind, an index and a generation. For a relay socket the index and generation
//! are those of the core's [`AllocationId`] (and the kind says the family), so finding the
//! socket of an event is an index into the worker's table and a generation check — the same
//! index the core already keeps, and one registration per relay socket, not a task.
//!
//! The generation is kept to its low 28 bits: enough to tell a slot's current occupant from
//! one that left since the event was read (an event and the reuse of its slot are at most one
//! turn apart).

use crate::core::AllocationId;

const KIND_BITS: u32 = 4;
const INDEX_BITS: u32 = 32;
const GENERATION_MASK: u32 = (1 << (64 - KIND_BITS - INDEX_BITS)) - 1;

/// The kinds of registration a worker has.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// The worker's [`Notifier`](super::poller::Notifier).
    Wake = 0,
    /// A UDP listener: index in the worker's list.
    Udp = 1,
    /// A TCP or TLS listener: index in the worker's list.
    Listener = 2,
    /// An allocation's IPv4 relay socket.
    RelayV4 = 3,
    /// An allocation's IPv6 relay socket.
    RelayV6 = 4,
    /// A client connection (TCP or TLS): its slot in the worker's connection table.
    Conn = 5,
    /// The peer side of a splice whose client side is connection slot `index`.
    SplicePeer = 6,
    /// A TCP allocation's listening socket (RFC 6062): the allocation's index.
    RelayListener = 7,
    /// An outgoing peer connection in progress (RFC 6062 Connect): its CONNECTION-ID.
    Connecting = 8,
}

impl Kind {
    fn from_bits(bits: u64) -> Option<Kind> {
        Some(match bits {
            0 => Kind::Wake,
            1 => Kind::Udp,
            2 => Kind::Listener,
            3 => Kind::RelayV4,
            4 => Kind::RelayV6,
            5 => Kind::Conn,
            6 => Kind::SplicePeer,
            7 => Kind::RelayListener,
            8 => Kind::Connecting,
            _ => return None,
        })
    }
}

/// A decoded token.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Token {
    pub kind: Kind,
    pub index: u32,
    /// Low bits of the generation (see the module doc); 0 where there is none.
    pub generation: u32,
}

impl Token {
    pub fn new(kind: Kind, index: u32, generation: u32) -> Token {
        Token {
            kind,
            index,
            generation: generation & GENERATION_MASK,
        }
    }

    /// The token of allocation `id`'s relay socket of one family.
    pub fn relay(id: AllocationId, ipv6: bool) -> Token {
        let kind = if ipv6 { Kind::RelayV6 } else { Kind::RelayV4 };
        Token::new(kind, id.index, id.generation)
    }

    /// Whether this token still names allocation `id` (same slot, same generation).
    pub fn names(&self, id: AllocationId) -> bool {
        self.index == id.index && self.generation == id.generation & GENERATION_MASK
    }

    pub fn pack(self) -> u64 {
        (self.kind as u64)
            | (u64::from(self.index) << KIND_BITS)
            | (u64::from(self.generation) << (KIND_BITS + INDEX_BITS))
    }

    pub fn unpack(bits: u64) -> Option<Token> {
        Some(Token {
            kind: Kind::from_bits(bits & ((1 << KIND_BITS) - 1))?,
            index: (bits >> KIND_BITS) as u32,
            generation: (bits >> (KIND_BITS + INDEX_BITS)) as u32,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_round_trips_and_names_its_allocation() {
        let id = AllocationId {
            index: u32::MAX,
            generation: 0xFFFF_FFFF,
        };
        let t = Token::relay(id, true);
        let back = Token::unpack(t.pack()).unwrap();
        assert_eq!(back, t);
        assert_eq!(back.kind, Kind::RelayV6);
        assert!(back.names(id));
        assert!(!back.names(AllocationId {
            index: u32::MAX,
            generation: 0xFFFF_FFFE
        }));
        assert!(Token::unpack(15).is_none());
    }
}
