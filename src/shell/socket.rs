//! Socket set-up: `SO_REUSEPORT` listeners (one per worker on the same address, so the
//! kernel spreads clients over cores by their 4-tuple hash) and relay sockets.

use super::udp;
use socket2::{Domain, Protocol, Socket, Type};
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};

/// Binds `count` UDP sockets to `addr` with `SO_REUSEPORT`. With port 0, the first socket
/// picks the port and the rest join it, so tests can run on ephemeral ports.
pub fn bind_reuseport_group(
    addr: SocketAddr,
    count: usize,
    opts: &udp::Options,
) -> io::Result<Vec<std::net::UdpSocket>> {
    let mut out = Vec::with_capacity(count);
    let mut addr = addr;
    for _ in 0..count.max(1) {
        let s = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
        if addr.is_ipv6() {
            // Keep IPv4 and IPv6 listeners separate, as operators list them separately.
            s.set_only_v6(true)?;
        }
        s.set_nonblocking(true)?;
        set_buffers(&s, opts)?;
        if addr.port() == 0 {
            // An SO_REUSEPORT bind to port 0 may be handed a port another SO_REUSEPORT
            // socket of the same user already holds, and two servers would then split one
            // port's clients. Bind the first socket without it (the kernel then picks a port
            // nobody holds) and let the other workers join that port.
            s.bind(&addr.into())?;
            s.set_reuse_port(true)?;
        } else {
            s.set_reuse_port(true)?;
            s.bind(&addr.into())?;
        }
        let s: std::net::UdpSocket = s.into();
        addr = s.local_addr()?;
        out.push(s);
    }
    Ok(out)
}

/// Pending connections the kernel queues per TCP listener.
const TCP_BACKLOG: i32 = 1024;

/// Binds `count` TCP listeners to `addr` with `SO_REUSEPORT`, one per worker, like
/// [`bind_reuseport_group`]. For a `listen` address, `addr` carries a real port: with a UDP
/// port 0, the caller passes the port UDP was given, so both transports share it. A
/// `tls_listen` address may have port 0 (with `fresh`): the first listener picks the port and
/// the rest join it. `fresh` says that port was just
/// picked by the kernel for UDP: the first TCP socket then binds without `SO_REUSEPORT`, so
/// it fails (rather than joins) if another program's `SO_REUSEPORT` listener holds it.
pub fn bind_tcp_reuseport_group(
    addr: SocketAddr,
    count: usize,
    fresh: bool,
) -> io::Result<Vec<std::net::TcpListener>> {
    let mut out = Vec::with_capacity(count);
    let mut addr = addr;
    for i in 0..count.max(1) {
        let s = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
        if addr.is_ipv6() {
            s.set_only_v6(true)?;
        }
        s.set_nonblocking(true)?;
        // A restart must not wait for the old connections' TIME_WAIT.
        s.set_reuse_address(true)?;
        if fresh && i == 0 {
            s.bind(&addr.into())?;
            s.set_reuse_port(true)?;
        } else {
            s.set_reuse_port(true)?;
            s.bind(&addr.into())?;
        }
        s.listen(TCP_BACKLOG)?;
        let s: std::net::TcpListener = s.into();
        // With port 0 (TLS listeners have no UDP twin), the others join the port picked.
        addr = s.local_addr()?;
        out.push(s);
    }
    Ok(out)
}

/// Binds a relay socket. With `dont_fragment`, the DF bit is set on everything it sends
/// (RFC 8656 §7.2, DONT-FRAGMENT), via path-MTU discovery mode "do".
pub fn bind_relay(
    addr: SocketAddr,
    dont_fragment: bool,
    opts: &udp::Options,
) -> io::Result<std::net::UdpSocket> {
    let s = Socket::new(Domain::for_address(addr), relay_type(), Some(Protocol::UDP))?;
    if addr.is_ipv6() {
        s.set_only_v6(true)?;
    }
    #[cfg(not(target_os = "linux"))]
    s.set_nonblocking(true)?;
    set_buffers(&s, opts)?;
    if dont_fragment {
        set_dont_fragment(&s, addr.is_ipv6())?;
    }
    s.bind(&addr.into())?;
    Ok(s.into())
}

/// A non-blocking datagram socket type. On Linux `SOCK_NONBLOCK` makes it non-blocking in the
/// `socket` call itself, sparing the two `fcntl` calls of `set_nonblocking` on every
/// allocation's relay socket (an allocation set-up is a handful of system calls; these were two).
#[cfg(target_os = "linux")]
fn relay_type() -> Type {
    Type::DGRAM.nonblocking()
}

#[cfg(not(target_os = "linux"))]
fn relay_type() -> Type {
    Type::DGRAM
}

/// Applies `udp_recv_buffer` and `udp_send_buffer` (0 leaves the kernel's default). The
/// kernel silently caps a request at `net.core.rmem_max` / `net.core.wmem_max`, so the size
/// is read back and a shortfall logged, once per process (relay sockets open per allocation).
pub fn set_buffers(s: &Socket, opts: &udp::Options) -> io::Result<()> {
    static RCV_WARNED: AtomicBool = AtomicBool::new(false);
    static SND_WARNED: AtomicBool = AtomicBool::new(false);
    if opts.recv_buffer > 0 {
        let want = opts.recv_buffer as usize;
        s.set_recv_buffer_size(want)?;
        // Linux reports twice the size granted (it counts its bookkeeping too).
        let got = s.recv_buffer_size()? / 2;
        if got < want && !RCV_WARNED.swap(true, Ordering::Relaxed) {
            tracing::warn!(
                asked = want,
                granted = got,
                "udp_recv_buffer capped by the kernel: raise the sysctl net.core.rmem_max \
                 (see deploy/sysctl/99-turnd.conf)"
            );
        }
    }
    if opts.send_buffer > 0 {
        let want = opts.send_buffer as usize;
        s.set_send_buffer_size(want)?;
        let got = s.send_buffer_size()? / 2;
        if got < want && !SND_WARNED.swap(true, Ordering::Relaxed) {
            tracing::warn!(
                asked = want,
                granted = got,
                "udp_send_buffer capped by the kernel: raise the sysctl net.core.wmem_max \
                 (see deploy/sysctl/99-turnd.conf)"
            );
        }
    }
    Ok(())
}

#[cfg(target_os = "linux")]
fn set_dont_fragment(s: &Socket, v6: bool) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    let (level, name, value) = if v6 {
        (
            libc::IPPROTO_IPV6,
            libc::IPV6_MTU_DISCOVER,
            libc::IPV6_PMTUDISC_DO,
        )
    } else {
        (
            libc::IPPROTO_IP,
            libc::IP_MTU_DISCOVER,
            libc::IP_PMTUDISC_DO,
        )
    };
    // SAFETY: the fd is open for the lifetime of `s`, and the option value is a c_int whose
    // address and size are passed together.
    let rc = unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            level,
            name,
            &value as *const libc::c_int as *const libc::c_void,
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

#[cfg(not(target_os = "linux"))]
fn set_dont_fragment(_s: &Socket, _v6: bool) -> io::Result<()> {
    Err(io::Error::new(
        io::ErrorKind::Unsupported,
        "DONT-FRAGMENT needs Linux",
    ))
}
