//! A peer connects to a TCP allocation's relayed address (RFC 6062 §5.3): with a permission
//! for its IP the connection waits for a ConnectionBind and the client is told with a
//! ConnectionAttempt indication; without one it is closed.

use crate::core::allocation::{AllocationId, State};
use crate::core::tcp_relay::{
    ConnState, Connection, ConnectionId, BIND_TIMEOUT, MAX_PEER_CONNECTIONS,
};
use crate::core::timer::TimerKind;
use crate::core::Server;
use crate::stun::{AttrType, Class, MessageBuilder, MessageType, Method, TransactionId};
use std::net::SocketAddr;
use std::time::Instant;

impl Server {
    /// A peer at `peer` connected to the listener of TCP allocation `id`. Returns the
    /// CONNECTION-ID to keep the stream under (the shell must store it before draining the
    /// outputs, which carry the ConnectionAttempt), or `None`: close the connection.
    pub fn handle_peer_inbound(
        &mut self,
        now: Instant,
        id: AllocationId,
        peer: SocketAddr,
    ) -> Option<ConnectionId> {
        if self.live_connections(id) >= MAX_PEER_CONNECTIONS {
            return None;
        }
        let a = self.allocations.get(id)?;
        // Only a TCP allocation has a listener for a peer to connect to.
        let tcp = a.tcp()?;
        if a.state != State::Active || a.expires <= now {
            return None;
        }
        // The filter too, with the peer's port: it may have been reloaded since the permission
        // was installed, and from the host's own address only a relay port (another TCP
        // allocation connecting from its relayed address) may connect in.
        if !a.permissions.allows_peer(peer, now, self.filter.own_host())
            || !self.shared.peer_filter.load().allows(peer)
        {
            return None;
        }
        let (five_tuple, username) = (a.five_tuple, a.username.clone());
        let share = tcp.splice.clone();
        let expires = now + BIND_TIMEOUT;
        let conn = Connection {
            owner: self.tcp_relay.tag,
            alloc: id,
            username,
            peer,
            control: five_tuple.client,
            state: ConnState::Pending { expires },
            share,
        };
        let shared = self.shared.clone();
        let cid = shared.tcp_connections.insert(|| self.random(), conn);
        if let Some(tcp) = self.allocations.get_mut(id).and_then(|a| a.tcp_mut()) {
            tcp.connections.push(cid);
        }
        self.timers.push(expires, TimerKind::TcpConnection(cid));
        let mut txid = [0u8; 12];
        txid[..8].copy_from_slice(&self.random().to_be_bytes());
        txid[8..].copy_from_slice(&(self.random() as u32).to_be_bytes());
        let mut buf = [0u8; 64];
        let ty = MessageType::new(Method::CONNECTION_ATTEMPT, Class::Indication);
        let len = MessageBuilder::new(&mut buf, ty, TransactionId(txid)).and_then(|mut b| {
            b.add_u32(AttrType::CONNECTION_ID, cid)?;
            b.add_xor_address(AttrType::XOR_PEER_ADDRESS, &peer)?;
            Ok(b.finish())
        });
        // Invariant: 20 + 8 + 24 bytes at most (IPv6 peer) fit the 64-byte buffer.
        let len = len.unwrap_or(0);
        self.transmit(five_tuple, buf[..len].to_vec());
        Some(cid)
    }
}
