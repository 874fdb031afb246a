//! `--null-server`: the kernel's share of a TURN server's work, measured with nothing on top.
//!
//! Whatever a server's code does, the kernel work under it is fixed by the protocol. Setting up
//! a UDP allocation is three datagrams in and three out (the Allocate that draws the 401, the
//! authenticated Allocate, the CreatePermission) and one relay socket opened, bound and
//! registered for readiness; relaying is a datagram in and a datagram out per message, on the
//! relay socket of its allocation. On loopback each `sendto` also carries the receiver's path
//! and wake-up, so that work is charged to the server too.
//!
//! This server does that work and next to nothing else: it trusts every request (no credential
//! check, a fixed nonce), keeps only the relay sockets and their channels, and answers in the
//! event loop of a tuned server — `epoll_wait`, one `recvmmsg` per readable socket, one `sendto`
//! per datagram out. Measured like any server (`--setup-only`, or `turnutils_uclient` for
//! relaying), its CPU is the floor under every server's figure on this machine, and the floor
//! over coturn's figure is the smallest ratio to coturn that any server could reach here (see
//! `benches/compare.sh`, "kernel floor").
//!
//! Not a TURN server: it authenticates nobody and filters no peer. It only listens on loopback.

use crate::batch::{Scratch, MAX_BATCH};
use anyhow::{bail, Context, Result};
use socket2::{Domain, Socket, Type};
use std::collections::HashMap;
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use turnd::core::auth::long_term_key;
use turnd::stun::channel_data::{write_header, ChannelData};
use turnd::stun::{AttrType, Class, Message, MessageBuilder, MessageType, Method};

/// The realm of the 401; the key signing answers is derived from it.
const REALM: &str = "bench";

/// The epoll token of the listening socket; relay sockets use their slot index.
const LISTENER: u64 = u64::MAX;

/// How relay sockets are registered: edge-triggered reads, as tokio registers sockets.
const EDGE_READ: u32 = (libc::EPOLLIN | libc::EPOLLET) as u32;

/// The relay ports this server takes in turn (below the kernel's ephemeral range, and clear of
/// the ranges `benches/compare.sh` gives turnd and coturn). Like a real server it binds a port
/// it chose, so the kernel does not search for one and no `getsockname` is needed.
const RELAY_PORTS: std::ops::Range<u16> = 30_000..32_700;

/// One allocation: its relay socket, its client, and the peers of its channels.
struct Relay {
    sock: UdpSocket,
    port: u16,
    client: SocketAddr,
    channels: Vec<(u16, SocketAddr)>,
}

struct Null {
    listener: UdpSocket,
    ip: std::net::IpAddr,
    epoll: OwnedFd,
    relays: Vec<Option<Relay>>,
    by_client: HashMap<SocketAddr, usize>,
    next_port: u16,
    key: [u8; 16],
    out: Box<[u8; 2048]>,
}

/// Answers and relays on `listen` until the process is killed; answers are signed with the
/// long-term key of `user`/`password` in realm "bench", so clients that check them accept them.
/// With `namespace_link`, a private IPv4 address is accepted too (a link between network
/// namespaces of this host, benches/xdp.sh): it trusts everyone, so never a public one.
pub fn run(listen: SocketAddr, user: &str, password: &str, namespace_link: bool) -> Result<()> {
    let private = matches!(listen.ip(), std::net::IpAddr::V4(v4) if v4.is_private());
    let allowed = listen.ip().is_loopback() || (namespace_link && private);
    if !allowed {
        bail!("--null-server must listen on a loopback address");
    }
    let listener = UdpSocket::bind(listen).with_context(|| format!("bind {listen}"))?;
    listener.set_nonblocking(true)?;
    // SAFETY: epoll_create1 has no preconditions; a non-negative result is a new descriptor we
    // own (checked before it is wrapped).
    let epfd = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
    if epfd < 0 {
        return Err(std::io::Error::last_os_error()).context("epoll_create1");
    }
    let mut null = Null {
        listener,
        ip: listen.ip(),
        // SAFETY: epfd is a fresh descriptor owned by nobody else.
        epoll: unsafe { OwnedFd::from_raw_fd(epfd) },
        relays: Vec::new(),
        by_client: HashMap::new(),
        next_port: RELAY_PORTS.start,
        key: long_term_key(user, REALM, password),
        out: Box::new([0; 2048]),
    };
    // Level-triggered: a full batch leaves the listener readable and it is read again.
    null.register(
        null.listener.as_raw_fd(),
        libc::EPOLL_CTL_ADD,
        libc::EPOLLIN as u32,
        LISTENER,
    )?;
    eprintln!("null server on {}", null.listener.local_addr()?);
    let mut scratch = Scratch::new(MAX_BATCH, false);
    // SAFETY: all-zero bytes are a valid epoll_event.
    let mut events: [libc::epoll_event; 64] = unsafe { std::mem::zeroed() };
    loop {
        // SAFETY: `events` is valid for 64 entries for the duration of the call.
        let r = unsafe { libc::epoll_wait(null.epoll.as_raw_fd(), events.as_mut_ptr(), 64, -1) };
        if r < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e).context("epoll_wait");
        }
        for ev in &events[..r as usize] {
            let token = ev.u64;
            if token == LISTENER {
                let n = scratch.recv(null.listener.as_raw_fd(), true)?;
                for i in 0..n {
                    if let Some(from) = scratch.source(i) {
                        null.on_client(scratch.datagram(i), from)?;
                    }
                }
            } else {
                // Edge-triggered: read until a short batch, bounded by the socket's queue.
                let slot = token as usize;
                for _ in 0..1024 {
                    let Some(fd) = null.relays.get(slot).and_then(|r| r.as_ref()) else {
                        break;
                    };
                    let n = scratch.recv(fd.sock.as_raw_fd(), true)?;
                    for i in 0..n {
                        if let Some(from) = scratch.source(i) {
                            null.on_peer(slot, scratch.datagram(i), from)?;
                        }
                    }
                    if n < scratch.batch() {
                        break;
                    }
                }
            }
        }
    }
}

impl Null {
    /// A datagram from a client: ChannelData to relay, or a request to answer.
    fn on_client(&mut self, d: &[u8], from: SocketAddr) -> Result<()> {
        if ChannelData::is_channel_data(d) {
            if let (Ok(cd), Some(&slot)) = (ChannelData::parse(d), self.by_client.get(&from)) {
                if let Some(r) = &self.relays[slot] {
                    if let Some(&(_, peer)) = r.channels.iter().find(|(c, _)| *c == cd.channel) {
                        let _ = r.sock.send_to(cd.data, peer);
                    }
                }
            }
            return Ok(());
        }
        let Ok(m) = Message::parse(d) else {
            return Ok(());
        };
        let method = m.method();
        if m.class() == Class::Indication && method == Method::SEND {
            if let (Some(Ok(peer)), Some(data), Some(&slot)) =
                (m.xor_peer_address(), m.data(), self.by_client.get(&from))
            {
                if let Some(r) = &self.relays[slot] {
                    let _ = r.sock.send_to(data, peer);
                }
            }
            return Ok(());
        }
        if m.class() != Class::Request {
            return Ok(());
        }
        let id = m.transaction_id();
        if method == Method::ALLOCATE && !m.has_integrity() {
            let mut b = MessageBuilder::new(
                &mut self.out[..],
                MessageType::new(method, Class::ErrorResponse),
                id,
            )?;
            b.add_error_code(401, "Unauthorized")?;
            b.add(AttrType::REALM, REALM.as_bytes())?;
            b.add(AttrType::NONCE, b"null-server-nonce")?;
            let len = b.finish();
            self.listener.send_to(&self.out[..len], from)?;
            return Ok(());
        }
        // Work that changes state is done before the answer is built.
        let mut relayed = None;
        let mut lifetime = None;
        if method == Method::ALLOCATE {
            let slot = match self.by_client.get(&from) {
                Some(&slot) => slot,
                None => self.open_relay(from)?,
            };
            relayed = Some(SocketAddr::new(self.ip, self.relay_port(slot)?));
            lifetime = Some(600);
        } else if method == Method::REFRESH {
            let secs = match m.lifetime() {
                Some(Ok(s)) => s,
                _ => 600,
            };
            if secs == 0 {
                self.close_relay(from)?;
            }
            lifetime = Some(secs);
        } else if method == Method::CHANNEL_BIND {
            if let (Some(Ok(ch)), Some(Ok(peer)), Some(&slot)) = (
                m.channel_number(),
                m.xor_peer_address(),
                self.by_client.get(&from),
            ) {
                if let Some(r) = &mut self.relays[slot] {
                    r.channels.retain(|(c, _)| *c != ch);
                    r.channels.push((ch, peer));
                }
            }
        }
        let mut ok = MessageBuilder::new(
            &mut self.out[..],
            MessageType::new(method, Class::SuccessResponse),
            id,
        )?;
        if let Some(relayed) = relayed {
            ok.add_xor_address(AttrType::XOR_RELAYED_ADDRESS, &relayed)?;
        }
        if method == Method::ALLOCATE || method == Method::BINDING {
            ok.add_xor_address(AttrType::XOR_MAPPED_ADDRESS, &from)?;
        }
        if let Some(secs) = lifetime {
            ok.add_u32(AttrType::LIFETIME, secs)?;
        }
        if m.has_integrity() {
            ok.add_message_integrity(&self.key)?;
        }
        let len = ok.finish();
        self.listener.send_to(&self.out[..len], from)?;
        Ok(())
    }

    /// A datagram from a peer on relay `slot`: ChannelData to the client when the peer has a
    /// channel, else a Data indication.
    fn on_peer(&mut self, slot: usize, d: &[u8], from: SocketAddr) -> Result<()> {
        let Some(r) = &self.relays[slot] else {
            return Ok(());
        };
        let len = if let Some(&(ch, _)) = r.channels.iter().find(|(_, p)| *p == from) {
            let Some(frame) = self.out.get_mut(..4 + d.len()) else {
                return Ok(());
            };
            write_header(frame, ch, d.len() as u16);
            frame[4..].copy_from_slice(d);
            4 + d.len()
        } else {
            let mut b = MessageBuilder::new(
                &mut self.out[..],
                MessageType::new(Method::DATA, Class::Indication),
                turnd::stun::TransactionId([0; 12]),
            )?;
            b.add_xor_address(AttrType::XOR_PEER_ADDRESS, &from)?;
            b.add(AttrType::DATA, d)?;
            b.finish()
        };
        let _ = self.listener.send_to(&self.out[..len], r.client);
        Ok(())
    }

    /// Opens a relay socket on the next free port of [`RELAY_PORTS`] for `client`; its slot.
    fn open_relay(&mut self, client: SocketAddr) -> Result<usize> {
        for _ in RELAY_PORTS {
            let addr = SocketAddr::new(self.ip, self.next_port);
            self.next_port = if self.next_port + 1 < RELAY_PORTS.end {
                self.next_port + 1
            } else {
                RELAY_PORTS.start
            };
            let s = Socket::new(Domain::for_address(addr), Type::DGRAM.nonblocking(), None)?;
            match s.bind(&addr.into()) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => continue,
                Err(e) => return Err(e.into()),
            }
            let sock: UdpSocket = s.into();
            let slot = match self.relays.iter().position(Option::is_none) {
                Some(free) => free,
                None => {
                    self.relays.push(None);
                    self.relays.len() - 1
                }
            };
            self.register(
                sock.as_raw_fd(),
                libc::EPOLL_CTL_ADD,
                EDGE_READ,
                slot as u64,
            )?;
            self.relays[slot] = Some(Relay {
                sock,
                port: addr.port(),
                client,
                channels: Vec::new(),
            });
            self.by_client.insert(client, slot);
            return Ok(slot);
        }
        bail!("every relay port is taken")
    }

    fn relay_port(&self, slot: usize) -> Result<u16> {
        match &self.relays[slot] {
            Some(r) => Ok(r.port),
            None => bail!("no relay in slot {slot}"),
        }
    }

    fn close_relay(&mut self, client: SocketAddr) -> Result<()> {
        if let Some(slot) = self.by_client.remove(&client) {
            if let Some(r) = self.relays[slot].take() {
                self.register(r.sock.as_raw_fd(), libc::EPOLL_CTL_DEL, EDGE_READ, 0)?;
            }
        }
        Ok(())
    }

    /// Adds a descriptor to (or removes it from) the epoll set, as an event-driven server must.
    fn register(&self, fd: i32, op: libc::c_int, events: u32, token: u64) -> Result<()> {
        let mut ev = libc::epoll_event { events, u64: token };
        // SAFETY: both descriptors are open for the duration of the call and `ev` is a valid
        // epoll_event.
        let r = unsafe { libc::epoll_ctl(self.epoll.as_raw_fd(), op, fd, &mut ev) };
        if r < 0 {
            return Err(std::io::Error::last_os_error()).context("epoll_ctl");
        }
        Ok(())
    }
}
