//! Batched UDP I/O for the relay path (issue 5): `recvmmsg` into a per-worker ring of
//! preallocated buffers, and `sendmmsg` of everything one batch produced, with UDP GSO
//! (`UDP_SEGMENT`) where consecutive datagrams to one destination have the same size.
//!
//! Why: a relayed datagram used to cost the kernel a `recvfrom`, a `recvfrom` that answered
//! `EAGAIN`, and a `sendto`, each a full syscall; the per-syscall cost, not turnd's own code,
//! dominated the CPU per datagram. Here one readiness costs one `recvmmsg` (the worker's
//! level-triggered poller reports a socket again while it holds datagrams, so no call is spent
//! only to hear `EAGAIN`) and one `sendmmsg` per destination
//! socket, and a run of equal-sized datagrams to one client (media) leaves as one GSO
//! super-packet that the kernel segments as late as possible.
//!
//! Raw `libc` rather than `quinn-udp`: quinn-udp sends one `Transmit` (one destination) per
//! `sendmsg`, so a batch that fans out to many clients or peers would still cost one syscall
//! per destination; `sendmmsg` here takes the whole batch of one socket at once. Nothing here
//! allocates after construction: the ring, the message headers, the address and control
//! buffers are sized once for [`RING`] datagrams.
//!
//! Degrading: `recvmmsg`/`sendmmsg` exist on every Linux turnd supports. GSO is probed once
//! ([`gso_supported`]); a GSO send the kernel refuses with `EIO`, `ENOPROTOOPT` or
//! `EOPNOTSUPP` (no checksum offload on the route's device, an old kernel) turns GSO off for
//! that worker, logged once, and the datagrams go out one by one; `EINVAL` (a segment larger
//! than the route's MTU) sends that one group one by one. The hidden environment variable
//! `TURND_UDP_GSO=off` turns GSO off, so tests can force the fallback (read by config, which
//! hands the shell [`Options::gso`]).

mod recv;
mod send;
#[cfg(test)]
mod tests;

pub use recv::RecvBatch;
pub use send::SendBatch;

use std::mem;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};

/// Datagrams read with one `recvmmsg`, and so at most sent with one flush.
pub const RING: usize = 64;

/// `setsockopt(SOL_UDP, UDP_SEGMENT)` / the cmsg type that carries a GSO segment size
/// (linux/udp.h; not in the `libc` crate for glibc targets).
const UDP_SEGMENT: libc::c_int = 103;
/// Most segments one GSO send may carry (linux/udp.h `UDP_MAX_SEGMENTS`).
const GSO_MAX_SEGMENTS: usize = 64;
/// Most bytes one GSO send may carry: an IPv4 datagram's limit (65,535 minus IP and UDP
/// headers), with margin for IPv6 extension headers.
const GSO_MAX_BYTES: usize = 65_000;

/// What the operator and the environment chose for the UDP sockets.
#[derive(Debug, Clone, Copy, Default)]
pub struct Options {
    /// `SO_RCVBUF` in bytes (0: the kernel's default).
    pub recv_buffer: u32,
    /// `SO_SNDBUF` in bytes (0: the kernel's default).
    pub send_buffer: u32,
    /// Use UDP GSO for runs of equal-sized datagrams to one destination (as the operator
    /// wants it; the shell also asks [`gso_supported`]).
    pub gso: bool,
    /// `udp_coalesce`: the window a busy worker waits before blocking (`None`: never waits).
    pub coalesce: Option<std::time::Duration>,
}

/// Probes the kernel once for UDP GSO (Linux 4.18+), as quinn-udp does: set `UDP_SEGMENT`
/// on a throw-away socket.
pub fn gso_supported() -> bool {
    static SUPPORTED: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *SUPPORTED.get_or_init(|| {
        let Ok(s) = std::net::UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)) else {
            return false;
        };
        set_int_opt(&s, libc::SOL_UDP, UDP_SEGMENT, 1200).is_ok()
    })
}

/// `setsockopt` with an `int` value.
pub(crate) fn set_int_opt(
    fd: &impl std::os::fd::AsRawFd,
    level: libc::c_int,
    name: libc::c_int,
    value: libc::c_int,
) -> std::io::Result<()> {
    // SAFETY: the fd is open for the lifetime of the borrow, and the value is a c_int whose
    // address and size are passed together.
    let rc = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            level,
            name,
            &value as *const libc::c_int as *const libc::c_void,
            mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// Writes `addr` as a C socket address into `out`; returns its length.
fn write_sockaddr(addr: &SocketAddr, out: &mut libc::sockaddr_storage) -> libc::socklen_t {
    match addr {
        SocketAddr::V4(a) => {
            // SAFETY: sockaddr_storage is larger than and aligned for sockaddr_in.
            let sin = unsafe { &mut *(out as *mut _ as *mut libc::sockaddr_in) };
            sin.sin_family = libc::AF_INET as libc::sa_family_t;
            sin.sin_port = a.port().to_be();
            sin.sin_addr = libc::in_addr {
                s_addr: u32::from_ne_bytes(a.ip().octets()),
            };
            sin.sin_zero = [0; 8];
            mem::size_of::<libc::sockaddr_in>() as libc::socklen_t
        }
        SocketAddr::V6(a) => {
            // SAFETY: sockaddr_storage is larger than and aligned for sockaddr_in6.
            let sin6 = unsafe { &mut *(out as *mut _ as *mut libc::sockaddr_in6) };
            sin6.sin6_family = libc::AF_INET6 as libc::sa_family_t;
            sin6.sin6_port = a.port().to_be();
            sin6.sin6_flowinfo = a.flowinfo();
            sin6.sin6_addr = libc::in6_addr {
                s6_addr: a.ip().octets(),
            };
            sin6.sin6_scope_id = a.scope_id();
            mem::size_of::<libc::sockaddr_in6>() as libc::socklen_t
        }
    }
}

/// Reads a C socket address the kernel wrote; `None` for a family other than IPv4/IPv6.
fn read_sockaddr(s: &libc::sockaddr_storage) -> Option<SocketAddr> {
    match s.ss_family as libc::c_int {
        libc::AF_INET => {
            // SAFETY: the kernel wrote a sockaddr_in (family AF_INET) into the storage.
            let sin = unsafe { &*(s as *const _ as *const libc::sockaddr_in) };
            let ip = Ipv4Addr::from(sin.sin_addr.s_addr.to_ne_bytes());
            Some(SocketAddr::V4(SocketAddrV4::new(
                ip,
                u16::from_be(sin.sin_port),
            )))
        }
        libc::AF_INET6 => {
            // SAFETY: the kernel wrote a sockaddr_in6 (family AF_INET6) into the storage.
            let sin6 = unsafe { &*(s as *const _ as *const libc::sockaddr_in6) };
            Some(SocketAddr::V6(SocketAddrV6::new(
                Ipv6Addr::from(sin6.sin6_addr.s6_addr),
                u16::from_be(sin6.sin6_port),
                sin6.sin6_flowinfo,
                sin6.sin6_scope_id,
            )))
        }
        _ => None,
    }
}

/// The plain C structs of this module, for which all-zero bytes are a valid value.
trait Zeroable {}
impl Zeroable for libc::mmsghdr {}
impl Zeroable for libc::iovec {}
impl Zeroable for libc::sockaddr_storage {}

/// An all-zero value of a C struct (message headers, addresses), filled in later.
fn zeroed<T: Zeroable>() -> T {
    // SAFETY: `Zeroable` is implemented only for C structs of integers and raw pointers,
    // for which all-zero bytes (null pointers, zero lengths) are a valid value.
    unsafe { mem::zeroed() }
}
