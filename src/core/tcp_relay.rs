//! TCP relay allocations (RFC 6062): the state the core keeps for them.
//!
//! A TCP allocation's relayed transport address is a TCP listening socket. Each connection
//! between the relay and a peer — opened by the server on a Connect request, or accepted from
//! a peer — gets a CONNECTION-ID. The client then opens a *new* connection to the server (the
//! client data connection) and sends ConnectionBind with that id; from then on the two
//! connections are spliced, raw bytes both ways.
//!
//! The data connection lands on whichever worker the kernel's `SO_REUSEPORT` hash picks, not
//! necessarily the one holding the allocation. So CONNECTION-IDs live in
//! [`Connections`], a map in [`Shared`](super::Shared) that every worker reads — on requests
//! only (Connect, ConnectionBind, a peer's connection, a timer), never per relayed byte. The
//! worker that owns the allocation (the *owner*) creates each entry; the worker that receives
//! the ConnectionBind claims it (`Pending` → `Bound`) and splices. Everything else — which
//! allocation a connection belongs to, the Connect transaction to answer, the deadlines —
//! stays in the owner's [`TcpRelayState`].

use super::bandwidth::SharedBucket;
use super::five_tuple::FiveTuple;
use super::ids::AllocationId;
pub use super::ids::ConnectionId;
use crate::stun::TransactionId;
use dashmap::DashMap;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// REQUESTED-TRANSPORT value for TCP (IANA protocol number 6).
pub const TCP: u8 = 6;
/// RFC 6062 §5.2: a Connect attempt times out after at least 30 seconds (447).
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);
/// RFC 6062 §5.2/§5.3: a peer connection with no ConnectionBind after 30 seconds is closed.
pub const BIND_TIMEOUT: Duration = Duration::from_secs(30);

/// Peer connections one TCP allocation may hold at once (connecting, waiting for a bind, or
/// spliced): each costs the server a socket, and RFC 6062 sets no bound of its own. Beyond it
/// a Connect gets 508 and a peer connecting in is closed.
pub const MAX_PEER_CONNECTIONS: usize = 64;

/// What every splice of one TCP allocation shares, on whichever worker it runs: the caps
/// that pace it and the bytes it relayed. A splice runs on the worker that took the
/// ConnectionBind, not necessarily the allocation's owner, and one allocation may have
/// splices on several workers at once, so its `allocation_bandwidth` cap is a
/// [`SharedBucket`] here rather than the owner's plain
/// [`TokenBucket`](super::bandwidth::TokenBucket), and its byte counts are atomics the owner reads for the
/// allocation's statistics. Touched once per chunk a splice copies (up to 16 KiB), never per
/// datagram.
#[derive(Debug, Default)]
pub struct SpliceShare {
    /// `allocation_bandwidth`, when set.
    bandwidth: Option<SharedBucket>,
    /// `user_bandwidth`: the very bucket the user's UDP allocations charge, when set.
    user_bandwidth: Option<Arc<SharedBucket>>,
    to_peer_bytes: AtomicU64,
    to_client_bytes: AtomicU64,
}

impl SpliceShare {
    pub fn new(
        bandwidth: Option<SharedBucket>,
        user_bandwidth: Option<Arc<SharedBucket>>,
    ) -> SpliceShare {
        SpliceShare {
            bandwidth,
            user_bandwidth,
            ..SpliceShare::default()
        }
    }

    /// Whether any cap applies: without one the splice never calls [`SpliceShare::pace`].
    pub fn is_capped(&self) -> bool {
        self.bandwidth.is_some() || self.user_bandwidth.is_some()
    }

    /// Charges `bytes` just read from one side to every cap and returns how long to hold
    /// them before writing them to the other side (and reading more): the longer of the two
    /// caps' waits. Both directions charge the same buckets.
    pub fn pace(&self, now: Instant, bytes: u64) -> Duration {
        let own = self
            .bandwidth
            .as_ref()
            .map_or(Duration::ZERO, |b| b.pace(now, bytes));
        let user = self
            .user_bandwidth
            .as_ref()
            .map_or(Duration::ZERO, |b| b.pace(now, bytes));
        own.max(user)
    }

    /// Adds `bytes` relayed towards the peer (`to_peer`) or the client.
    pub fn count(&self, to_peer: bool, bytes: u64) {
        let c = if to_peer {
            &self.to_peer_bytes
        } else {
            &self.to_client_bytes
        };
        c.fetch_add(bytes, Ordering::Relaxed);
    }

    /// Bytes relayed so far: (to the peers, to the client).
    pub fn bytes(&self) -> (u64, u64) {
        (
            self.to_peer_bytes.load(Ordering::Relaxed),
            self.to_client_bytes.load(Ordering::Relaxed),
        )
    }
}

/// Where a peer connection is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConnState {
    /// The server is connecting to the peer (Connect); the response waits for the result.
    Connecting,
    /// Connected (or accepted), waiting for the client's ConnectionBind until `expires`.
    Pending { expires: Instant },
    /// Bound to a client data connection: the shell splices them.
    Bound,
}

/// One peer connection, as every worker sees it.
#[derive(Clone, Debug)]
pub struct Connection {
    /// The owner core's tag ([`TcpRelayState::tag`]): allocation ids are per worker.
    pub owner: u64,
    pub alloc: AllocationId,
    /// The allocation's user: ConnectionBind must come from the same one (441).
    pub username: Box<str>,
    pub peer: SocketAddr,
    /// The client address of the allocation's control connection: a ConnectionBind may echo
    /// the nonce issued there (see `Server::connection_bind_nonce_owner`).
    pub control: SocketAddr,
    pub state: ConnState,
    /// Its allocation's caps and byte counts, for the splice.
    pub share: Arc<SpliceShare>,
}

/// Every worker's peer connections, by CONNECTION-ID.
#[derive(Debug, Default)]
pub struct Connections {
    map: DashMap<ConnectionId, Connection>,
}

impl Connections {
    /// Inserts `conn` under a fresh non-zero id drawn from `random`.
    pub(crate) fn insert(&self, mut random: impl FnMut() -> u64, conn: Connection) -> ConnectionId {
        // Bounded in practice: the map holds far fewer than 2^32 ids, so a draw collides
        // rarely; zero is skipped so an all-zero attribute never names a connection.
        loop {
            let id = random() as u32;
            if id == 0 {
                continue;
            }
            if let dashmap::Entry::Vacant(v) = self.map.entry(id) {
                v.insert(conn);
                return id;
            }
        }
    }

    pub fn get(&self, id: ConnectionId) -> Option<Connection> {
        self.map.get(&id).map(|c| c.clone())
    }

    /// The [`SpliceShare`] of bound connection `id`, for its splice; `None` once it is gone
    /// (its allocation ended) or when it is not bound.
    pub fn share(&self, id: ConnectionId) -> Option<Arc<SpliceShare>> {
        let c = self.map.get(&id)?;
        (c.state == ConnState::Bound).then(|| c.share.clone())
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// Sets the state of `id` if `owner` owns it; false when it is gone.
    pub(crate) fn set_state(&self, id: ConnectionId, owner: u64, state: ConnState) -> bool {
        match self.map.get_mut(&id) {
            Some(mut c) if c.owner == owner => {
                c.state = state;
                true
            }
            _ => false,
        }
    }

    /// Removes `id` when `f` says so, atomically with respect to other workers.
    pub(crate) fn remove_if(
        &self,
        id: ConnectionId,
        f: impl FnOnce(&Connection) -> bool,
    ) -> Option<Connection> {
        self.map.remove_if(&id, |_, c| f(c)).map(|(_, c)| c)
    }

    /// Claims `id` for a ConnectionBind by `username` at `now`: `Pending` → `Bound`. The
    /// check and the change happen under the entry's lock, so a bind timer firing on the
    /// owner's worker at the same moment cannot also close it.
    pub(crate) fn claim(
        &self,
        id: ConnectionId,
        username: &str,
        now: Instant,
    ) -> Result<(), ClaimError> {
        let mut c = self.map.get_mut(&id).ok_or(ClaimError::Unknown)?;
        match c.state {
            ConnState::Pending { expires } if expires > now => {}
            _ => return Err(ClaimError::Unknown),
        }
        if &*c.username != username {
            return Err(ClaimError::WrongUser);
        }
        c.state = ConnState::Bound;
        Ok(())
    }
}

/// Why a ConnectionBind cannot claim a CONNECTION-ID.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ClaimError {
    /// No such id, or not waiting for a bind (connecting, bound already, or past 30 s): 400.
    Unknown,
    /// Another user's connection: 441.
    WrongUser,
}

/// A Connect request waiting for the shell's connection attempt.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Connecting {
    pub alloc: AllocationId,
    pub txid: TransactionId,
    pub fingerprint: bool,
}

/// What one worker's core keeps of its TCP allocations beyond each allocation's own
/// [`TcpAllocation`](super::allocation::TcpAllocation).
#[derive(Debug)]
pub(crate) struct TcpRelayState {
    /// Unique per core in this process, so entries in [`Connections`] name their owner.
    pub tag: u64,
    pub connecting: HashMap<ConnectionId, Connecting>,
}

impl Default for TcpRelayState {
    fn default() -> Self {
        static NEXT_TAG: AtomicU64 = AtomicU64::new(1);
        TcpRelayState {
            tag: NEXT_TAG.fetch_add(1, Ordering::Relaxed),
            connecting: HashMap::new(),
        }
    }
}

/// TCP relay work for the shell (inside [`Output::TcpRelay`](super::Output::TcpRelay)).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TcpRelayOutput {
    /// Open the TCP listening socket of a TCP allocation at `bind` and report the result with
    /// [`Server::handle_relay_opened`](super::Server::handle_relay_opened), as for
    /// `OpenRelay`. It must let the same address be bound again for outgoing connections
    /// (`SO_REUSEADDR` + `SO_REUSEPORT`): RFC 6062 §5.2 connects from the relayed address.
    Listen { id: AllocationId, bind: SocketAddr },
    /// Connect from `bind` to `peer`, then report with
    /// [`Server::handle_peer_connected`](super::Server::handle_peer_connected) (keeping the
    /// stream under `connection_id` first) or
    /// [`Server::handle_peer_connect_failed`](super::Server::handle_peer_connect_failed).
    Connect {
        id: AllocationId,
        connection_id: ConnectionId,
        bind: SocketAddr,
        peer: SocketAddr,
    },
    /// Give up on a peer connection that is still connecting or waiting for its
    /// ConnectionBind: abort the attempt, close the stream.
    CloseConnection {
        id: AllocationId,
        connection_id: ConnectionId,
    },
    /// The client connection `data` bound `connection_id`: once the ConnectionBind response
    /// queued before this is written, splice it with the peer connection, raw bytes both ways,
    /// and report its end with
    /// [`Server::handle_data_connection_closed`](super::Server::handle_data_connection_closed).
    Splice {
        data: FiveTuple,
        connection_id: ConnectionId,
    },
    /// The TCP allocation ended: close its listener and every peer and data connection.
    Close { id: AllocationId },
}
