//! RFC 6062 TCP relay sockets of one worker: each TCP allocation's listening socket, the peer
//! connections the core asks to open (non-blocking connects in progress), and the peer
//! connections parked for a ConnectionBind. A leaf: the worker registers the sockets, calls
//! the core and carries out its `TcpRelayOutput`s with these.
//!
//! **Across workers.** The client's data connection is accepted by whichever worker the
//! kernel's `SO_REUSEPORT` hash picks, usually not the one holding the allocation (the
//! *owner*). So the owner does not keep a peer connection on its poller while it waits for a
//! ConnectionBind: it removes the socket from its poller and *parks* it in [`ParkedPeers`], a
//! map shared by all workers, keyed by CONNECTION-ID. The worker whose core accepts the
//! ConnectionBind takes the socket out, registers it on its own poller and splices it with
//! the data connection (`splice.rs`) — the peer socket moves, the data connection stays.
//! Bytes a peer sends meanwhile wait in the kernel's receive buffer (RFC 6062 asks the server
//! to buffer them; the socket does, bounded by its buffer). Parked sockets and splices carry
//! their allocation's `closed` flag: when the owner sets it (the allocation ended) every
//! splice of that allocation ends, on whatever worker it runs, at its next event or within
//! the worker's one-second tick.

use super::poller::{Interest, Poller};
use super::token::{Kind, Token};
use crate::core::tcp_relay::ConnectionId;
use crate::core::AllocationId;
use dashmap::DashMap;
use socket2::{Domain, Protocol, SockAddr, Socket, Type};
use std::collections::HashMap;
use std::io;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// Pending connections a relay listener queues.
const LISTEN_BACKLOG: i32 = 128;

/// A peer connection waiting for its ConnectionBind, on no worker's poller.
#[derive(Debug)]
pub struct Parked {
    pub stream: TcpStream,
    /// Set when the allocation ends.
    pub closed: Arc<AtomicBool>,
}

/// Parked peer connections of every worker, by CONNECTION-ID.
///
/// Bounded by the core: an entry exists only for a peer connection the core accepted, at most
/// `MAX_PEER_CONNECTIONS` (64) per TCP allocation, each TCP allocation needing a live control
/// connection (so at most 64 × `max_connections`, and 64 × `max_connections_per_source` for
/// one source); an entry leaves when its ConnectionBind takes it, when the core closes it
/// (no ConnectionBind within 30 s, RFC 6062 §5.3) or when its allocation ends. Each holds a
/// socket, whose unread bytes wait in the kernel's receive buffer, not here.
#[derive(Debug, Default)]
pub struct ParkedPeers {
    map: DashMap<ConnectionId, Parked>,
}

impl ParkedPeers {
    /// Takes the parked connection `cid` (a ConnectionBind on any worker).
    pub fn take(&self, cid: ConnectionId) -> Option<Parked> {
        self.map.remove(&cid).map(|(_, p)| p)
    }
}

/// What a worker holds of one of its TCP allocations.
struct AllocIo {
    id: AllocationId,
    listener: TcpListener,
    /// Set when the allocation ends: every parked socket and splice holds it.
    closed: Arc<AtomicBool>,
    /// Ids this worker parked (some may have been taken by a splice since).
    parked: Vec<ConnectionId>,
}

/// A connection to a peer in progress.
pub struct Connecting {
    pub id: AllocationId,
    pub stream: TcpStream,
}

/// One worker's TCP allocations.
pub struct TcpRelays {
    /// By the allocation's slot index, as the core numbers them.
    allocs: Vec<Option<AllocIo>>,
    connecting: HashMap<ConnectionId, Connecting>,
    parked: Arc<ParkedPeers>,
}

impl TcpRelays {
    pub fn new(parked: Arc<ParkedPeers>) -> TcpRelays {
        TcpRelays {
            allocs: Vec::new(),
            connecting: HashMap::new(),
            parked,
        }
    }

    pub fn parked(&self) -> &ParkedPeers {
        &self.parked
    }

    fn alloc(&self, id: AllocationId) -> Option<&AllocIo> {
        self.allocs
            .get(id.index as usize)?
            .as_ref()
            .filter(|a| a.id == id)
    }

    /// Opens allocation `id`'s listening socket at `bind` and registers it.
    pub fn listen(
        &mut self,
        poller: &Poller,
        id: AllocationId,
        bind: SocketAddr,
    ) -> io::Result<()> {
        let s = reusable_socket(bind)?;
        s.listen(LISTEN_BACKLOG)?;
        let listener: TcpListener = s.into();
        poller.add(
            &listener,
            Token::new(Kind::RelayListener, id.index, id.generation).pack(),
            Interest::READ,
        )?;
        let i = id.index as usize;
        if self.allocs.len() <= i {
            self.allocs.resize_with(i + 1, || None);
        }
        // An older generation's entry in the slot is dropped: its sockets close.
        self.allocs[i] = Some(AllocIo {
            id,
            listener,
            closed: Arc::default(),
            parked: Vec::new(),
        });
        Ok(())
    }

    /// The listener behind a `RelayListener` token.
    pub fn listener(&self, token: Token) -> Option<(AllocationId, &TcpListener)> {
        let a = self.allocs.get(token.index as usize)?.as_ref()?;
        token.names(a.id).then_some((a.id, &a.listener))
    }

    /// Starts connecting from `bind` to `peer` for a Connect request and registers the
    /// socket to hear when it is done.
    pub fn connect(
        &mut self,
        poller: &Poller,
        id: AllocationId,
        cid: ConnectionId,
        bind: SocketAddr,
        peer: SocketAddr,
    ) -> io::Result<()> {
        if self.alloc(id).is_none() {
            return Err(io::ErrorKind::NotFound.into());
        }
        let s = reusable_socket(bind)?;
        match s.connect(&SockAddr::from(peer)) {
            Ok(()) => {}
            Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => {}
            Err(e) => return Err(e),
        }
        let stream: TcpStream = s.into();
        poller.add(
            &stream,
            Token::new(Kind::Connecting, cid, 0).pack(),
            Interest {
                read: false,
                write: true,
            },
        )?;
        self.connecting.insert(cid, Connecting { id, stream });
        Ok(())
    }

    /// Takes the finished attempt `cid` off the poller: the stream when it connected.
    pub fn connected(
        &mut self,
        poller: &Poller,
        cid: ConnectionId,
    ) -> Option<(AllocationId, io::Result<TcpStream>)> {
        let c = self.connecting.remove(&cid)?;
        let _ = poller.delete(&c.stream);
        let result = match c.stream.take_error() {
            Ok(None) => c.stream.peer_addr().map(|_| c.stream),
            Ok(Some(e)) | Err(e) => Err(e),
        };
        Some((c.id, result))
    }

    /// Parks `stream` under `cid` for a ConnectionBind on any worker (it is on no poller).
    pub fn park(&mut self, id: AllocationId, cid: ConnectionId, stream: TcpStream) -> bool {
        let Some(a) = self
            .allocs
            .get_mut(id.index as usize)
            .and_then(Option::as_mut)
            .filter(|a| a.id == id)
        else {
            return false;
        };
        let map = &self.parked.map;
        a.parked.retain(|c| map.contains_key(c));
        a.parked.push(cid);
        map.insert(
            cid,
            Parked {
                stream,
                closed: a.closed.clone(),
            },
        );
        true
    }

    /// Aborts the attempt of `cid`, or closes its parked stream.
    pub fn close_connection(&mut self, id: AllocationId, cid: ConnectionId) {
        self.parked.map.remove(&cid);
        self.connecting.remove(&cid);
        if let Some(a) = self
            .allocs
            .get_mut(id.index as usize)
            .and_then(Option::as_mut)
            .filter(|a| a.id == id)
        {
            a.parked.retain(|&c| c != cid);
        }
    }

    /// Closes the listener, attempts and parked streams of allocation `id`, and flags its
    /// splices to end.
    pub fn close(&mut self, id: AllocationId) {
        let Some(slot) = self.allocs.get_mut(id.index as usize) else {
            return;
        };
        if slot.as_ref().is_none_or(|a| a.id != id) {
            return;
        }
        let Some(a) = slot.take() else {
            return;
        };
        a.closed.store(true, Ordering::Relaxed);
        self.connecting.retain(|_, c| c.id != id);
        for cid in &a.parked {
            self.parked.map.remove(cid);
        }
    }
}

/// A non-blocking TCP socket bound to `bind` that other sockets may bind too: the listener
/// and every outgoing connection of an allocation share its relayed address (RFC 6062 §5.2).
fn reusable_socket(bind: SocketAddr) -> io::Result<Socket> {
    let s = Socket::new(
        Domain::for_address(bind),
        Type::STREAM.nonblocking(),
        Some(Protocol::TCP),
    )?;
    if bind.is_ipv6() {
        s.set_only_v6(true)?;
    }
    s.set_reuse_address(true)?;
    s.set_reuse_port(true)?;
    s.set_nodelay(true)?;
    s.bind(&bind.into())?;
    Ok(s)
}
