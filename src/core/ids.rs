//! The small identifiers several parts of the core pass around, in a leaf module that imports
//! nothing else of the core (as quinn-proto's `shared.rs`): the allocation table, the timers,
//! the RFC 6062 connection map and the shell all name allocations and connections without
//! importing one another for it.

/// A handle to an allocation: a slot index plus a generation, so a late datagram on a relay
/// socket that belonged to a freed allocation never reaches the slot's next occupant.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct AllocationId {
    pub index: u32,
    pub generation: u32,
}

/// The 32-bit CONNECTION-ID of an RFC 6062 peer connection (RFC 6062 §6.2.1). Unique among
/// every worker's connections ([`Connections`](super::tcp_relay::Connections)), never 0.
pub type ConnectionId = u32;

/// The 8-byte RESERVATION-TOKEN (RFC 8656 §18.9) naming a port an EVEN-PORT Allocate with the
/// R bit set aside for a later Allocate.
pub type ReservationToken = [u8; 8];

#[cfg(test)]
mod tests {
    /// The module is a leaf: it imports nothing, so any part of the core (or the shell) can
    /// name an id without pulling in another module, and no two modules import each other
    /// for one.
    #[test]
    fn imports_nothing() {
        let source = include_str!("ids.rs");
        let imports = source
            .lines()
            .filter(|l| l.trim_start().starts_with("use "))
            .count();
        assert_eq!(imports, 0);
    }
}
