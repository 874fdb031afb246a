//! RFC 6062 TCP relay I/O: each TCP allocation's listening socket, the peer connections it
//! accepts or the core asks to open, and the splice of a peer connection with the client's
//! data connection. The core decides everything (`TcpRelayOutput`); this file only does it.
//!
//! **Across workers.** The client's data connection is accepted by whichever worker the
//! kernel's `SO_REUSEPORT` hash picks, usually not the one holding the allocation (the
//! *owner*). So the owner does not keep a peer connection in its own runtime while it waits
//! for a ConnectionBind: it deregisters the stream (`into_std`) and *parks* it in
//! [`ParkedPeers`], a map shared by all workers, keyed by CONNECTION-ID. The worker whose core
//! accepts the ConnectionBind takes the stream out, registers it with its own runtime and
//! splices it with the data connection — the peer stream moves, the data connection stays.
//! Bytes a peer sends meanwhile wait in the kernel's receive buffer (RFC 6062 asks the
//! server to buffer them; the socket does, bounded by its buffer). Parked streams and
//! splices carry a `watch` receiver of their allocation: when the owner drops the sender (the
//! allocation ended) every splice of that allocation ends, on whatever worker it runs.
//!
//! The splice is not the per-datagram hot path of UDP relaying: it copies through two
//! bounded buffers per connection and counts bytes into the splicing worker's counters and
//! into its allocation's [`SpliceShare`] (the allocation's own statistics).
//!
//! **Bandwidth caps.** `allocation_bandwidth` and `user_bandwidth` hold for spliced bytes too,
//! both directions charging the same buckets (the user's is the one their UDP allocations
//! charge). TCP is reliable, so nothing is dropped: each chunk read is charged, and when the
//! caps say so the pump sleeps for the refill time before writing it and reading the next
//! (leaving datagrams, which cannot wait, half of each bucket's burst).
//! Meanwhile the kernel's buffers fill and TCP flow control slows the sender — back-pressure.
//! Without a cap the pump only tests two `Option`s per chunk.

use super::worker::{Shared, Worker};
use crate::core::tcp_relay::{ConnectionId, SpliceShare, TcpRelayOutput};
use crate::core::{AllocationId, FiveTuple, RelayOpenError, Transport};
use dashmap::DashMap;
use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// Each direction of a splice copies through a buffer of this size.
const SPLICE_BUF: usize = 16 * 1024;
/// Pending connections a relay listener queues.
const LISTEN_BACKLOG: u32 = 128;
/// After an accept error (fds exhausted, …), wait before trying again rather than spin.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// A peer connection waiting for its ConnectionBind, out of any runtime.
#[derive(Debug)]
pub struct Parked {
    stream: std::net::TcpStream,
    /// Ends (the sender is dropped) when the allocation ends.
    closed: watch::Receiver<()>,
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

/// What a worker holds of one of its TCP allocations.
struct AllocIo {
    listener: JoinHandle<()>,
    /// Dropped when the allocation ends: every parked stream and splice holds a receiver.
    closed: watch::Sender<()>,
    connecting: HashMap<ConnectionId, JoinHandle<()>>,
    /// Ids this worker parked (some may have been taken by a splice since).
    parked: Vec<ConnectionId>,
}

/// One worker's TCP allocations.
pub(super) struct TcpRelays {
    allocs: HashMap<AllocationId, AllocIo>,
    parked: Arc<ParkedPeers>,
}

impl TcpRelays {
    pub(super) fn new(parked: Arc<ParkedPeers>) -> TcpRelays {
        TcpRelays {
            allocs: HashMap::new(),
            parked,
        }
    }

    /// Parks `stream` under `cid` for a ConnectionBind on any worker.
    fn park(&mut self, id: AllocationId, cid: ConnectionId, stream: TcpStream) -> bool {
        let Some(a) = self.allocs.get_mut(&id) else {
            return false;
        };
        let Ok(stream) = stream.into_std() else {
            return false;
        };
        let map = &self.parked.map;
        a.parked.retain(|c| map.contains_key(c));
        a.parked.push(cid);
        let closed = a.closed.subscribe();
        map.insert(cid, Parked { stream, closed });
        true
    }

    /// Aborts the attempt of `cid`, or closes its parked stream.
    fn close_connection(&mut self, id: AllocationId, cid: ConnectionId) {
        self.parked.map.remove(&cid);
        if let Some(a) = self.allocs.get_mut(&id) {
            a.parked.retain(|&c| c != cid);
            if let Some(task) = a.connecting.remove(&cid) {
                task.abort();
            }
        }
    }

    /// Closes the listener, attempts and parked streams of allocation `id`; dropping its
    /// `closed` sender ends its splices.
    fn close(&mut self, id: AllocationId) {
        let Some(a) = self.allocs.remove(&id) else {
            return;
        };
        a.listener.abort();
        for task in a.connecting.values() {
            task.abort();
        }
        for cid in &a.parked {
            self.parked.map.remove(cid);
        }
    }
}

impl Worker {
    /// Executes one [`TcpRelayOutput`].
    pub(super) fn tcp_relay_output(&mut self, out: TcpRelayOutput) {
        match out {
            TcpRelayOutput::Listen { id, bind } => {
                let result = self.listen(id, bind);
                self.core.handle_relay_opened(Instant::now(), id, result);
            }
            TcpRelayOutput::Connect {
                id,
                connection_id,
                bind,
                peer,
            } => {
                let worker = self.self_handle();
                let task = tokio::task::spawn_local(connect(worker, id, connection_id, bind, peer));
                match self.tcp_relays.allocs.get_mut(&id) {
                    Some(a) => {
                        a.connecting.insert(connection_id, task);
                    }
                    None => task.abort(),
                }
            }
            TcpRelayOutput::CloseConnection { id, connection_id } => {
                self.tcp_relays.close_connection(id, connection_id)
            }
            TcpRelayOutput::Splice {
                data,
                connection_id,
            } => {
                if let Some(c) = self.conns.get(&data) {
                    c.start_splice(connection_id);
                }
            }
            TcpRelayOutput::Close { id } => self.tcp_relays.close(id),
        }
    }

    fn listen(&mut self, id: AllocationId, bind: SocketAddr) -> Result<(), RelayOpenError> {
        let listener = reusable_socket(bind)
            .and_then(|s| s.listen(LISTEN_BACKLOG))
            .map_err(|e| {
                if e.kind() == io::ErrorKind::AddrInUse {
                    RelayOpenError::AddrInUse
                } else {
                    tracing::warn!(%bind, error = %e, "cannot open tcp relay listener");
                    RelayOpenError::Other
                }
            })?;
        let task = tokio::task::spawn_local(accept(self.self_handle(), id, listener));
        let (closed, _) = watch::channel(());
        let io = AllocIo {
            listener: task,
            closed,
            connecting: HashMap::new(),
            parked: Vec::new(),
        };
        if let Some(old) = self.tcp_relays.allocs.insert(id, io) {
            old.listener.abort();
        }
        Ok(())
    }
}

/// A TCP socket bound to `bind` that other sockets may bind too: the listener and every
/// outgoing connection of an allocation share its relayed address (RFC 6062 §5.2).
fn reusable_socket(bind: SocketAddr) -> io::Result<TcpSocket> {
    let s = if bind.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    s.set_reuseaddr(true)?;
    s.set_reuseport(true)?;
    s.bind(bind)?;
    Ok(s)
}

/// Accepts peers on a TCP allocation's listener; the core says which to keep.
async fn accept(worker: Shared, id: AllocationId, listener: TcpListener) {
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(v) => v,
            Err(_) => {
                tokio::time::sleep(ACCEPT_BACKOFF).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let mut w = worker.borrow_mut();
        // Dropping the stream (no permission) closes it.
        if let Some(cid) = w.core.handle_peer_inbound(Instant::now(), id, peer) {
            w.tcp_relays.park(id, cid, stream);
        }
        w.drain_outputs();
    }
}

/// Connects to `peer` from the relayed address for a Connect request.
async fn connect(
    worker: Shared,
    id: AllocationId,
    cid: ConnectionId,
    bind: SocketAddr,
    peer: SocketAddr,
) {
    let result = match reusable_socket(bind) {
        Ok(s) => s.connect(peer).await,
        Err(e) => Err(e),
    };
    let mut w = worker.borrow_mut();
    if let Some(a) = w.tcp_relays.allocs.get_mut(&id) {
        a.connecting.remove(&cid);
    }
    let now = Instant::now();
    match result {
        // Parked before the core answers, since its answer names the id.
        Ok(stream) => {
            let _ = stream.set_nodelay(true);
            if !w.tcp_relays.park(id, cid, stream) {
                w.core.handle_peer_connect_failed(now, cid);
            } else if !w.core.handle_peer_connected(now, cid) {
                w.tcp_relays.close_connection(id, cid);
            }
        }
        Err(_) => w.core.handle_peer_connect_failed(now, cid),
    }
    w.drain_outputs();
}

/// Splices the client data connection `client` (whose ConnectionBind bound `cid`) with the
/// parked peer connection: first `to_client` (the ConnectionBind response, still queued) and
/// `to_peer` (bytes the client sent after its ConnectionBind), then raw bytes both ways until
/// both sides have closed, either fails, or the allocation ends.
pub(super) async fn splice<S>(
    worker: &Shared,
    client: S,
    ft: FiveTuple,
    cid: ConnectionId,
    to_client: &[u8],
    to_peer: &[u8],
) where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let (parked, share) = {
        let w = worker.borrow();
        let parked = w.tcp_relays.parked.map.remove(&cid).map(|(_, p)| p);
        (parked, w.core.splice_share(cid))
    };
    // No share: the connection is no longer bound (its allocation ended meanwhile).
    if let (Some(p), Some(share)) = (parked, share) {
        let s = Splice {
            worker,
            transport: ft.transport,
            share: &share,
        };
        let _ = run_splice(&s, client, p, to_client, to_peer).await;
    }
    let mut w = worker.borrow_mut();
    w.core.handle_data_connection_closed(cid);
    w.drain_outputs();
}

/// What both directions of one splice count into.
struct Splice<'a> {
    worker: &'a Shared,
    transport: Transport,
    share: &'a SpliceShare,
}

impl Splice<'_> {
    /// Waits, when a cap says so, before `bytes` just read are passed on.
    async fn pace(&self, bytes: usize) {
        if bytes == 0 || !self.share.is_capped() {
            return;
        }
        let wait = self.share.pace(Instant::now(), bytes as u64);
        if wait.is_zero() {
            return;
        }
        {
            let mut w = self.worker.borrow_mut();
            w.core.count_splice_throttled();
        }
        // Bounded: a wait is at most half the bucket's burst plus the refill time of one
        // chunk per pump charging the bucket (see `SharedBucket::pace`); it ends early only
        // when the whole splice is dropped (the allocation ended).
        tokio::time::sleep(wait).await;
    }

    /// Adds bytes passed on to the worker's relayed counters (published) and to the
    /// allocation's.
    fn count(&self, to_peer: bool, bytes: usize) {
        self.share.count(to_peer, bytes as u64);
        let (p, c) = if to_peer { (bytes, 0) } else { (0, bytes) };
        let mut w = self.worker.borrow_mut();
        w.core
            .count_stream_relayed(self.transport, p as u64, c as u64);
        w.drain_outputs();
    }
}

async fn run_splice<S>(
    s: &Splice<'_>,
    mut client: S,
    parked: Parked,
    to_client: &[u8],
    to_peer: &[u8],
) -> io::Result<()>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let Parked { stream, mut closed } = parked;
    let mut peer = TcpStream::from_std(stream)?;
    client.write_all(to_client).await?;
    client.flush().await?;
    s.pace(to_peer.len()).await;
    peer.write_all(to_peer).await?;
    s.count(true, to_peer.len());
    let (mut client_r, mut client_w) = tokio::io::split(client);
    let (mut peer_r, mut peer_w) = peer.split();
    let up = pump(s, &mut client_r, &mut peer_w, true);
    let down = pump(s, &mut peer_r, &mut client_w, false);
    tokio::select! {
        r = async { tokio::try_join!(up, down) } => r.map(|_| ()),
        // The allocation ended: its sender is gone.
        _ = closed.changed() => Ok(()),
    }
}

/// Copies one direction until EOF, which it passes on as a write shutdown (the other
/// direction goes on until its own EOF). Under a cap it waits between reading a chunk and
/// writing it, so it reads no faster than the cap allows.
async fn pump<R, W>(s: &Splice<'_>, from: &mut R, to: &mut W, to_peer: bool) -> io::Result<()>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut buf = vec![0u8; SPLICE_BUF];
    loop {
        let n = from.read(&mut buf).await?;
        if n == 0 {
            to.shutdown().await?;
            return Ok(());
        }
        s.pace(n).await;
        to.write_all(&buf[..n]).await?;
        // TLS buffers records until flushed; for TCP this is a no-op.
        to.flush().await?;
        s.count(to_peer, n);
    }
}
