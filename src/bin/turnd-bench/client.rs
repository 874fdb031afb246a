//! The control side of one benchmark client: Allocate (answering the 401 challenge), a
//! permission or a channel for its peer, and a Refresh with lifetime 0 at the end — the
//! library's sans-IO client (`turnd::client`) driven over one blocking UDP socket.

use anyhow::{anyhow, bail, Context, Result};
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::time::{Duration, Instant};
use turnd::client::{self, CommandError, Config, Credentials, Reply, RequestId, Timing};

/// The first channel number (RFC 8656 §12: 0x4000–0x4FFF).
pub const FIRST_CHANNEL: u16 = 0x4000;

/// Credentials as given on the command line; the realm may be learned from the first 401.
pub type Creds = Credentials;

/// Four transmissions, 1.5 s, 3 s and 6 s apart, and 1.5 s for the last answer: on loopback a
/// lost request means a server too busy to answer, and retransmitting faster would only add
/// to what the run measures.
const TIMING: Timing = Timing {
    rto: Duration::from_millis(1500),
    rc: 4,
    rm: 1,
    stream_timeout: Duration::from_secs(6),
    give_up_after: None,
};

/// Datagrams a client may skip while waiting for one answer (late duplicates, relayed data
/// after a run): the wait is bounded by time too, this bounds it in count.
const MAX_SKIPPED: usize = 4096;

/// One client allocation: its socket (connected to the server), the relayed address, and the
/// TURN client that signs its requests.
pub struct Client {
    pub sock: UdpSocket,
    pub relay: SocketAddr,
    turn: client::Client,
}

impl Client {
    /// A socket on `local` (an ephemeral port) connected to `server`, and a client for it.
    fn open(server: SocketAddr, local: IpAddr, creds: &Creds) -> Result<Client> {
        let sock = UdpSocket::bind(SocketAddr::new(local, 0))?;
        sock.connect(server)?;
        let config = Config {
            timing: TIMING,
            fingerprint: true,
            ..Config::new(client::Transport::Udp)
        };
        Ok(Client {
            relay: sock.peer_addr()?,
            sock,
            turn: client::Client::new(config, Some(creds.clone()), rand::random()),
        })
    }

    /// A socket on `local` connected straight to `peer`, with no server and no allocation:
    /// `--direct`, the generator against an idle target (its datagrams go to its own peer
    /// sockets, which echo them back, so it does all of its own sending and receiving and the
    /// relay in between costs nothing).
    pub fn direct(peer: SocketAddr, local: IpAddr) -> Result<Client> {
        Client::open(peer, local, &Creds::new("direct", "direct"))
    }

    /// Opens a socket on `local` and allocates a UDP relay on `server`.
    pub fn allocate(server: SocketAddr, local: IpAddr, creds: &Creds) -> Result<Client> {
        Client::allocate_with(server, local, creds, &[])
    }

    /// [`Client::allocate`] with `extra` attributes (REQUESTED-ADDRESS-FAMILY,
    /// DONT-FRAGMENT, ...).
    pub fn allocate_with(
        server: SocketAddr,
        local: IpAddr,
        creds: &Creds,
        extra: &[client::Attr],
    ) -> Result<Client> {
        let mut c = Client::open(server, local, creds)?;
        let ok = c.run(|t, now| t.allocate(now, extra.to_vec()))?;
        c.allocated(&ok)?;
        Ok(c)
    }

    /// `k` allocations with a permission for `peer` each, set up side by side: every step
    /// (Allocate, authenticated Allocate, CreatePermission) is sent for all `k` clients before
    /// any answer is awaited — a burst of clients arriving together, where a server can batch.
    pub fn allocate_many(
        server: SocketAddr,
        local: IpAddr,
        creds: &Creds,
        k: usize,
        peer: SocketAddr,
    ) -> Result<Vec<Client>> {
        let mut clients = (0..k)
            .map(|_| Client::open(server, local, creds))
            .collect::<Result<Vec<_>>>()?;
        let oks = wave(&mut clients, |t, now| t.allocate(now, Vec::new()))?;
        for (c, ok) in clients.iter_mut().zip(&oks) {
            c.allocated(ok)?;
        }
        wave(&mut clients, |t, now| t.create_permission(now, &[peer]))
            .context("CreatePermission")?;
        Ok(clients)
    }

    /// Takes the relayed address from an Allocate success (the client checked it is there).
    fn allocated(&mut self, ok: &Reply) -> Result<()> {
        self.relay = ok
            .relayed()
            .ok_or_else(|| anyhow!("Allocate success without XOR-RELAYED-ADDRESS"))?;
        Ok(())
    }

    /// One request, carried out to its answer.
    fn run(
        &mut self,
        start: impl Fn(&mut client::Client, Instant) -> Result<RequestId, CommandError>,
    ) -> Result<Reply> {
        let mut r = wave(std::slice::from_mut(self), start)?;
        // Invariant: `wave` answers every client it was given.
        Ok(r.pop().expect("one reply per client"))
    }

    /// Sends what the TURN client has queued.
    fn flush(&mut self) -> Result<()> {
        while let Some(bytes) = self.turn.poll_transmit() {
            self.sock.send(&bytes)?;
        }
        Ok(())
    }

    /// Waits until request `id` is answered (`Some`) or the client has something new to send
    /// (`None`: a signed request after a 401, a retransmission), feeding it what arrives and
    /// the time. Bounded by the client's deadline and by [`MAX_SKIPPED`] datagrams.
    fn step(&mut self, id: RequestId) -> Result<Option<Reply>> {
        let mut buf = [0u8; 1500];
        for _ in 0..MAX_SKIPPED {
            if let Some(e) = self.turn.poll_event() {
                if e.request() == Some(id) {
                    let method = match &e {
                        client::Event::Succeeded { method, .. }
                        | client::Event::Failed { method, .. } => method.name(),
                        client::Event::ConnectionAttempt { .. } => "",
                    };
                    return e
                        .into_result()
                        .map(Some)
                        .map_err(|f| anyhow!("{method} refused: {f}"));
                }
                continue;
            }
            if self.turn.has_output() {
                return Ok(None);
            }
            let deadline = self
                .turn
                .poll_timeout()
                .ok_or_else(|| anyhow!("the request ended without an answer"))?;
            let now = Instant::now();
            if deadline <= now {
                self.turn.handle_timeout(now);
                continue;
            }
            self.sock.set_read_timeout(Some(deadline - now))?;
            match self.sock.recv(&mut buf) {
                Ok(n) => {
                    // Relayed data (an echo after a run) is not this request's business.
                    let _ = self.turn.handle_input(Instant::now(), &buf[..n]);
                }
                Err(e)
                    if e.kind() == std::io::ErrorKind::WouldBlock
                        || e.kind() == std::io::ErrorKind::TimedOut =>
                {
                    self.turn.handle_timeout(Instant::now())
                }
                Err(e) => return Err(e.into()),
            }
        }
        bail!("{MAX_SKIPPED} datagrams and none of them the answer")
    }

    pub fn create_permission(&mut self, peer: SocketAddr) -> Result<()> {
        self.run(|t, now| t.create_permission(now, &[peer]))
            .context("CreatePermission")?;
        Ok(())
    }

    pub fn channel_bind(&mut self, channel: u16, peer: SocketAddr) -> Result<()> {
        self.run(|t, now| t.channel_bind(now, channel, peer))
            .context("ChannelBind")?;
        Ok(())
    }

    /// Refreshes the allocation for `lifetime` seconds: succeeds only while it is alive.
    pub fn refresh(&mut self, lifetime: u32) -> Result<()> {
        self.run(|t, now| t.refresh(now, Some(lifetime)))
            .context("Refresh")?;
        Ok(())
    }

    /// Ends the allocation (Refresh, LIFETIME 0), so repetitions do not pile up allocations.
    pub fn release(&mut self) -> Result<()> {
        self.run(|t, now| t.refresh(now, Some(0)))
            .context("Refresh 0")?;
        Ok(())
    }
}

/// The same request from every client, side by side: in each round every client's queued
/// datagrams are sent before any answer is awaited (as a burst of clients arriving together
/// would send them), then each client is waited on in turn until it is answered or has more to
/// send (a signed request after the 401, a retransmission). Answers come back in the clients'
/// order. Bounded: every round moves every unanswered client one step (an answer or a
/// timeout), and the TURN client ends each request by its deadline.
fn wave(
    clients: &mut [Client],
    start: impl Fn(&mut client::Client, Instant) -> Result<RequestId, CommandError>,
) -> Result<Vec<Reply>> {
    let now = Instant::now();
    let ids = clients
        .iter_mut()
        .map(|c| start(&mut c.turn, now))
        .collect::<Result<Vec<_>, _>>()?;
    let mut answers: Vec<Option<Reply>> = vec![None; clients.len()];
    for _round in 0..64 {
        for c in clients.iter_mut() {
            c.flush()?;
        }
        if answers.iter().all(Option::is_some) {
            return Ok(answers.into_iter().flatten().collect());
        }
        for ((c, id), a) in clients.iter_mut().zip(&ids).zip(&mut answers) {
            if a.is_none() {
                *a = c.step(*id)?;
            }
        }
    }
    bail!("requests still unanswered after 64 rounds")
}
