//! TCP allocations (RFC 6062 §5.1): what differs from a UDP one when it is made, and what
//! happens to its peer connections when their deadlines pass or the allocation ends.

use crate::core::allocation::AllocationKind;
use crate::core::five_tuple::FiveTuple;
use crate::core::ids::{AllocationId, ConnectionId};
use crate::core::tcp_relay::{ConnState, TcpRelayOutput};
use crate::core::timer::TimerKind;
use crate::core::{Output, Server};
use crate::stun::{AttrType, ErrorCode, Message};
use std::net::SocketAddr;
use std::time::Instant;

impl Server {
    /// RFC 6062 §5.1: a TCP allocation needs a TCP or TLS control connection, and takes none
    /// of DONT-FRAGMENT, EVEN-PORT and RESERVATION-TOKEN (all about UDP datagrams or port
    /// pairs); each breach is a 400.
    pub(crate) fn check_tcp_allocate(from: FiveTuple, msg: &Message) -> Result<(), ErrorCode> {
        if !from.transport.is_stream() {
            return Err(ErrorCode::BadRequest);
        }
        let udp_only = [
            AttrType::DONT_FRAGMENT,
            AttrType::EVEN_PORT,
            AttrType::RESERVATION_TOKEN,
        ];
        if udp_only.iter().any(|&t| msg.has(t)) {
            return Err(ErrorCode::BadRequest);
        }
        Ok(())
    }

    /// What the shell must open for allocation `id`: a UDP relay socket, or for a TCP
    /// allocation a TCP listener.
    pub(crate) fn open_relay_output(
        &self,
        id: AllocationId,
        bind: SocketAddr,
        dont_fragment: bool,
    ) -> Output {
        if self.is_tcp_allocation(id) {
            Output::TcpRelay(TcpRelayOutput::Listen { id, bind })
        } else {
            Output::OpenRelay {
                id,
                bind,
                dont_fragment,
            }
        }
    }

    /// Whether allocation `id` is a TCP allocation of this worker.
    pub fn is_tcp_allocation(&self, id: AllocationId) -> bool {
        self.allocations.get(id).is_some_and(|a| a.is_tcp())
    }

    /// A peer connection's deadline: a Connect still unanswered gets 447 (RFC 6062 §5.2); a
    /// connection still waiting for its ConnectionBind is closed (§5.2, §5.3). A deadline
    /// that no longer applies (connected since, bound, gone) does nothing.
    pub(crate) fn tcp_connection_timeout(&mut self, now: Instant, cid: ConnectionId) {
        if self.tcp_relay.connecting.contains_key(&cid) {
            let still_connecting = self
                .shared
                .tcp_connections
                .get(cid)
                .is_some_and(|c| c.state == ConnState::Connecting);
            if still_connecting {
                self.fail_connect(now, cid);
                return;
            }
        }
        let owner = self.tcp_relay.tag;
        let expired = self.shared.tcp_connections.remove_if(cid, |c| {
            c.owner == owner && matches!(c.state, ConnState::Pending { expires } if expires <= now)
        });
        if let Some(c) = expired {
            self.forget_connection(c.alloc, cid);
            self.outputs
                .push_back(Output::TcpRelay(TcpRelayOutput::CloseConnection {
                    id: c.alloc,
                    connection_id: cid,
                }));
        }
    }

    /// How many peer connections allocation `id` holds, after dropping those that ended on
    /// another worker (and their deadlines).
    pub(crate) fn live_connections(&mut self, id: AllocationId) -> usize {
        let shared = self.shared.clone();
        let Some(tcp) = self.allocations.get_mut(id).and_then(|a| a.tcp_mut()) else {
            return 0;
        };
        let ids = &mut tcp.connections;
        let timers = &mut self.timers;
        ids.retain(|&cid| {
            let live = shared.tcp_connections.get(cid).is_some();
            if !live {
                timers.cancel(TimerKind::TcpConnection(cid));
            }
            live
        });
        ids.len()
    }

    /// Drops `cid` from allocation `alloc`'s list, with its deadline: every pending
    /// connection deadline belongs to a connection some allocation's list holds.
    pub(crate) fn forget_connection(&mut self, alloc: AllocationId, cid: ConnectionId) {
        if let Some(tcp) = self.allocations.get_mut(alloc).and_then(|a| a.tcp_mut()) {
            tcp.connections.retain(|&i| i != cid);
        }
        self.timers.cancel(TimerKind::TcpConnection(cid));
    }

    /// Allocation `id`, of `kind`, ended (or failed to open) and left the table: if it was a
    /// TCP allocation, its peer connections are forgotten everywhere and the shell closes its
    /// listener and every peer and data connection (RFC 6062 §5.5: they do not outlive the
    /// allocation).
    pub(crate) fn tcp_allocation_ended(&mut self, id: AllocationId, kind: &AllocationKind) {
        let AllocationKind::Tcp(tcp) = kind else {
            return;
        };
        let owner = self.tcp_relay.tag;
        for &cid in &tcp.connections {
            self.shared
                .tcp_connections
                .remove_if(cid, |c| c.owner == owner && c.alloc == id);
            self.tcp_relay.connecting.remove(&cid);
            self.timers.cancel(TimerKind::TcpConnection(cid));
        }
        self.outputs
            .push_back(Output::TcpRelay(TcpRelayOutput::Close { id }));
    }
}
