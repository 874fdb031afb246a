//! `--null-server`: the kernel's share of an allocation, measured with nothing else on top.
//!
//! Setting up a UDP allocation costs any server, whatever its code, the same system work:
//! receiving and answering three requests (the Allocate that draws the 401, the authenticated
//! Allocate, the CreatePermission), and opening, binding and registering for readiness one relay
//! socket. On loopback each answer's `sendto` also carries the client's receive path and its
//! wake-up, so that work is charged to the server too. This server does exactly that work and
//! nothing more — no credential check, no state but the relay sockets, canned answers — in the
//! same event loop a tuned server has: `epoll_wait`, then `recvmmsg` until a short batch, one
//! `sendto` per answer. Its CPU per allocation,
//! measured by `--setup-only` like any server's, is the floor under every server's figure on this
//! machine, so the floor over coturn's figure is the smallest ratio to coturn any server could
//! reach here (see `benches/compare.sh`, row (d) "kernel floor").
//!
//! Not a TURN server: it relays nothing and trusts every request. It answers only on loopback.

use crate::batch::{Scratch, MAX_BATCH};
use anyhow::{bail, Context, Result};
use socket2::{Domain, Socket, Type};
use std::collections::HashMap;
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use turnd::stun::{AttrType, Class, Message, MessageBuilder, MessageType, Method};

/// Answers requests on `listen` until the process is killed.
pub fn run(listen: SocketAddr) -> Result<()> {
    if !listen.ip().is_loopback() {
        bail!("--null-server must listen on a loopback address");
    }
    let sock = UdpSocket::bind(listen).with_context(|| format!("bind {listen}"))?;
    // SAFETY: epoll_create1 has no preconditions; a non-negative result is a new descriptor we
    // own (checked before it is wrapped).
    let epfd = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
    if epfd < 0 {
        return Err(std::io::Error::last_os_error()).context("epoll_create1");
    }
    // SAFETY: epfd is a fresh descriptor owned by nobody else.
    let epoll = unsafe { OwnedFd::from_raw_fd(epfd) };
    let mut relays: HashMap<SocketAddr, UdpSocket> = HashMap::new();
    let mut scratch = Scratch::new(MAX_BATCH, false);
    let mut ports = Ports {
        ip: listen.ip(),
        next: RELAY_PORTS.start,
    };
    let mut out = [0u8; 512];
    sock.set_nonblocking(true)?;
    // Level-triggered: a short batch has drained the socket, a full one is read again.
    register(&epoll, &sock, libc::EPOLL_CTL_ADD, libc::EPOLLIN as u32)?;
    eprintln!("null server on {}", sock.local_addr()?);
    // SAFETY: all-zero bytes are a valid epoll_event.
    let mut events: [libc::epoll_event; 8] = unsafe { std::mem::zeroed() };
    loop {
        // SAFETY: `events` is valid for 8 entries for the duration of the call.
        let r = unsafe { libc::epoll_wait(epoll.as_raw_fd(), events.as_mut_ptr(), 8, -1) };
        if r < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e).context("epoll_wait");
        }
        let n = scratch.recv(sock.as_raw_fd(), true)?;
        for i in 0..n {
            if let Some(from) = scratch.source(i) {
                let d = scratch.datagram(i);
                answer(&sock, &epoll, &mut relays, &mut ports, d, from, &mut out)?;
            }
        }
    }
}

/// Answers one request from `from`.
fn answer(
    sock: &UdpSocket,
    epoll: &OwnedFd,
    relays: &mut HashMap<SocketAddr, UdpSocket>,
    ports: &mut Ports,
    datagram: &[u8],
    from: SocketAddr,
    out: &mut [u8],
) -> Result<()> {
    {
        let Ok(m) = Message::parse(datagram) else {
            return Ok(());
        };
        if m.class() != Class::Request {
            return Ok(());
        }
        let method = m.method();
        let id = m.transaction_id();
        let authenticated = m.has_integrity();
        let len = if method == Method::ALLOCATE && !authenticated {
            let mut b = MessageBuilder::new(
                &mut *out,
                MessageType::new(method, Class::ErrorResponse),
                id,
            )?;
            b.add_error_code(401, "Unauthorized")?;
            b.add(AttrType::REALM, b"bench")?;
            b.add(AttrType::NONCE, b"null-server-nonce")?;
            b.finish()
        } else {
            let mut ok = MessageBuilder::new(
                &mut *out,
                MessageType::new(method, Class::SuccessResponse),
                id,
            )?;
            if method == Method::ALLOCATE {
                let (relay, addr) = ports.open()?;
                register(epoll, &relay, libc::EPOLL_CTL_ADD, EDGE_READ)?;
                ok.add_xor_address(AttrType::XOR_RELAYED_ADDRESS, &addr)?;
                ok.add_xor_address(AttrType::XOR_MAPPED_ADDRESS, &from)?;
                ok.add_u32(AttrType::LIFETIME, 600)?;
                relays.insert(from, relay);
            } else if method == Method::REFRESH && m.lifetime() == Some(Ok(0)) {
                if let Some(relay) = relays.remove(&from) {
                    register(epoll, &relay, libc::EPOLL_CTL_DEL, EDGE_READ)?;
                }
                ok.add_u32(AttrType::LIFETIME, 0)?;
            }
            ok.finish()
        };
        sock.send_to(&out[..len], from)?;
    }
    Ok(())
}

/// The relay ports this server takes in turn (below the kernel's ephemeral range, and clear of
/// the ranges `benches/compare.sh` gives turnd and coturn). Like a real server it binds a port
/// it chose, so the kernel does not search for one and no `getsockname` is needed.
const RELAY_PORTS: std::ops::Range<u16> = 30_000..32_700;

struct Ports {
    ip: std::net::IpAddr,
    next: u16,
}

impl Ports {
    /// A non-blocking UDP socket bound to the next free port of [`RELAY_PORTS`], and its address.
    fn open(&mut self) -> Result<(UdpSocket, SocketAddr)> {
        for _ in RELAY_PORTS {
            let addr = SocketAddr::new(self.ip, self.next);
            self.next = if self.next + 1 < RELAY_PORTS.end {
                self.next + 1
            } else {
                RELAY_PORTS.start
            };
            let s = Socket::new(Domain::for_address(addr), Type::DGRAM.nonblocking(), None)?;
            match s.bind(&addr.into()) {
                Ok(()) => return Ok((s.into(), addr)),
                Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => continue,
                Err(e) => return Err(e.into()),
            }
        }
        bail!("every relay port is taken")
    }
}

/// How a relay socket is registered: edge-triggered reads, as tokio registers sockets.
const EDGE_READ: u32 = (libc::EPOLLIN | libc::EPOLLET) as u32;

/// Adds `sock` to (or removes it from) the epoll set, as an event-driven server must.
fn register(epoll: &OwnedFd, sock: &UdpSocket, op: libc::c_int, events: u32) -> Result<()> {
    let fd = sock.as_raw_fd();
    let mut ev = libc::epoll_event {
        events,
        u64: fd as u64,
    };
    // SAFETY: both descriptors are open for the duration of the call and `ev` is a valid
    // epoll_event.
    let r = unsafe { libc::epoll_ctl(epoll.as_raw_fd(), op, fd, &mut ev) };
    if r < 0 {
        return Err(std::io::Error::last_os_error()).context("epoll_ctl");
    }
    Ok(())
}
