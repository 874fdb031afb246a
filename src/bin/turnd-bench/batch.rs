//! Batched UDP system calls for the generator, so that it costs little next to the server it
//! measures: `recvmmsg` drains a readable socket up to [`MAX_BATCH`] datagrams per call,
//! `sendmmsg` sends a burst (or echoes a batch back to where each datagram came from), and
//! with UDP GSO a burst of equal-size datagrams to one destination is a single send that the
//! kernel splits into separate datagrams — the server receives them one by one, as from any
//! client: on a client socket `UDP_SEGMENT` is set on the (connected) socket, on a peer socket
//! a batch to echo from one sender goes out with a `UDP_SEGMENT` control message.
//!
//! Every buffer lives in [`Scratch`], allocated once; the `mmsghdr`/`iovec` arrays are
//! re-pointed at it before each call (a few dozen stores), so nothing refers to memory that
//! could have moved and nothing is allocated per datagram.

use std::io;
use std::os::fd::RawFd;

/// Most datagrams one system call moves; also the most segments of one GSO send (the
/// kernel's `UDP_MAX_SEGMENTS` is 64 on older kernels, 128 on newer).
pub const MAX_BATCH: usize = 64;
/// Bytes per receive slot: above any datagram of this tool (payload ≤ 1400 plus a header).
pub const SLOT: usize = 2048;

/// Most bytes of one GSO send: the largest UDP payload (65,507 over IPv4), rounded down.
pub const GSO_MAX_BYTES: usize = 65_000;

/// `SOL_UDP` option / cmsg type of the GSO segment size (Linux 4.18+; not in every libc).
const UDP_SEGMENT: libc::c_int = 103;

/// Receive slots and the headers pointing at them, shared by every socket of the run.
pub struct Scratch {
    /// Most datagrams per call in this run (1–[`MAX_BATCH`]); 1 gives the unbatched
    /// generator, one system call per datagram, to compare with.
    batch: usize,
    bufs: Vec<u8>,
    iovs: Vec<libc::iovec>,
    hdrs: Vec<libc::mmsghdr>,
    addrs: Vec<libc::sockaddr_storage>,
    /// Echo a batch of equal-size datagrams from one sender as GSO sends (turned off for the
    /// run if the kernel refuses).
    gso_echo: bool,
    /// The contiguous copy of a batch a GSO echo sends.
    echo_buf: Vec<u8>,
    /// Room for one `UDP_SEGMENT` control message (8-aligned; CMSG_SPACE(2) is 24 bytes).
    cmsg: [u64; 4],
    /// What the send paths did, for the report: whether batching and GSO really happened.
    pub sends: SendCounts,
}

/// System calls that sent more than one datagram, by kind, and the datagrams they carried.
/// The report shows them so that a run (or a test) can tell that GSO and `sendmmsg` were
/// used, not only enabled: at a low rate every burst is one datagram, sent with a plain `send`.
#[derive(Clone, Copy, Debug, Default)]
pub struct SendCounts {
    /// Client bursts of two or more datagrams sent as one GSO `send`.
    pub gso_sends: u64,
    pub gso_datagrams: u64,
    /// Client bursts of two or more datagrams sent with one `sendmmsg`.
    pub mmsg_sends: u64,
    pub mmsg_datagrams: u64,
    /// Peer echoes of two or more datagrams sent as one GSO `sendmsg`.
    pub echo_gso_sends: u64,
    pub echo_gso_datagrams: u64,
}

impl Scratch {
    pub fn new(batch: usize, gso_echo: bool) -> Scratch {
        // SAFETY: iovec, mmsghdr and sockaddr_storage are plain C structs for which all-zero
        // bytes are a valid (empty) value.
        let zero_iov: libc::iovec = unsafe { std::mem::zeroed() };
        let zero_hdr: libc::mmsghdr = unsafe { std::mem::zeroed() };
        let zero_addr: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
        Scratch {
            batch: batch.clamp(1, MAX_BATCH),
            bufs: vec![0u8; MAX_BATCH * SLOT],
            iovs: vec![zero_iov; MAX_BATCH],
            hdrs: vec![zero_hdr; MAX_BATCH],
            addrs: vec![zero_addr; MAX_BATCH],
            gso_echo,
            echo_buf: vec![0u8; GSO_MAX_BYTES],
            cmsg: [0; 4],
            sends: SendCounts::default(),
        }
    }

    /// Most datagrams per call.
    pub fn batch(&self) -> usize {
        self.batch
    }

    /// Datagram `i` of the last [`Scratch::recv`].
    pub fn datagram(&self, i: usize) -> &[u8] {
        let len = (self.hdrs[i].msg_len as usize).min(SLOT);
        &self.bufs[i * SLOT..i * SLOT + len]
    }

    /// The sender of datagram `i` of the last [`Scratch::recv`] made `with_addr`.
    pub fn source(&self, i: usize) -> Option<std::net::SocketAddr> {
        let len = self.hdrs[i].msg_hdr.msg_namelen;
        // SAFETY: the kernel wrote a sockaddr of `len` (≤ its size) bytes into addrs[i].
        let addr = unsafe { socket2::SockAddr::new(self.addrs[i], len) };
        addr.as_socket()
    }

    /// Points header `i` at slot `i` (whole slot) and, if `with_addr`, at address `i`.
    fn point(&mut self, i: usize, len: usize, with_addr: bool) {
        self.iovs[i] = libc::iovec {
            iov_base: self.bufs[i * SLOT..].as_mut_ptr().cast(),
            iov_len: len,
        };
        let h = &mut self.hdrs[i].msg_hdr;
        h.msg_iov = &mut self.iovs[i];
        h.msg_iovlen = 1;
        h.msg_control = std::ptr::null_mut();
        h.msg_controllen = 0;
        h.msg_flags = 0;
        if with_addr {
            h.msg_name = (&mut self.addrs[i] as *mut libc::sockaddr_storage).cast();
            h.msg_namelen = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
        } else {
            h.msg_name = std::ptr::null_mut();
            h.msg_namelen = 0;
        }
        self.hdrs[i].msg_len = 0;
    }

    /// One `recvmmsg` without waiting: how many datagrams arrived (0 when none was queued).
    /// `with_addr` keeps each sender's address, for [`Scratch::echo`].
    pub fn recv(&mut self, fd: RawFd, with_addr: bool) -> io::Result<usize> {
        for i in 0..self.batch {
            self.point(i, SLOT, with_addr);
        }
        // SAFETY: the first `batch` (≤ MAX_BATCH) headers, each pointing at its own live iovec, slot of
        // SLOT bytes and (when asked) sockaddr_storage; all outlive the call.
        let n = unsafe {
            libc::recvmmsg(
                fd,
                self.hdrs.as_mut_ptr(),
                self.batch as libc::c_uint,
                libc::MSG_DONTWAIT,
                std::ptr::null_mut(),
            )
        };
        if n >= 0 {
            return Ok(n as usize);
        }
        match io::Error::last_os_error() {
            e if e.kind() == io::ErrorKind::WouldBlock => Ok(0),
            e => Err(e),
        }
    }

    /// Sends the first `n` datagrams of the last [`Scratch::recv`] (made `with_addr`) back to
    /// their senders: as GSO sends when they all have one size and one sender (a peer socket
    /// hears only its flow's relayed address), else with one `sendmmsg`. Returns how many
    /// went out. A full send buffer drops the rest, as the wire would.
    pub fn echo(&mut self, fd: RawFd, n: usize) -> io::Result<usize> {
        let n = n.min(self.batch);
        if self.gso_echo && n > 1 && self.one_size_one_sender(n) {
            match self.echo_gso(fd, n) {
                Ok(sent) => return Ok(sent),
                // The kernel or device has no UDP GSO: sendmmsg from now on.
                Err(e)
                    if matches!(
                        e.raw_os_error(),
                        Some(libc::EIO | libc::EINVAL | libc::ENOPROTOOPT | libc::EOPNOTSUPP)
                    ) =>
                {
                    self.gso_echo = false
                }
                Err(e) => return Err(e),
            }
        }
        for i in 0..n {
            // The receive left msg_len (the datagram) and msg_namelen (the sender) in place.
            self.iovs[i].iov_len = self.hdrs[i].msg_len as usize;
        }
        // SAFETY: the first n headers still point at their live slot, iovec and address from
        // the receive; the kernel only reads them.
        let sent = unsafe {
            libc::sendmmsg(
                fd,
                self.hdrs.as_mut_ptr(),
                n as libc::c_uint,
                libc::MSG_DONTWAIT,
            )
        };
        dropped_is_zero(sent as i64)
    }

    /// Whether the first `n` received datagrams share one length and one IPv4 sender.
    fn one_size_one_sender(&self, n: usize) -> bool {
        let v4 = |i: usize| -> Option<(u16, u32)> {
            let a = &self.addrs[i];
            if a.ss_family != libc::AF_INET as libc::sa_family_t {
                return None;
            }
            // SAFETY: ss_family says AF_INET, so the storage holds a sockaddr_in, which is
            // smaller than sockaddr_storage and no more aligned.
            let sin = unsafe { &*(a as *const libc::sockaddr_storage).cast::<libc::sockaddr_in>() };
            Some((sin.sin_port, sin.sin_addr.s_addr))
        };
        let (len, from) = (self.hdrs[0].msg_len, v4(0));
        from.is_some() && len > 0 && (1..n).all(|i| self.hdrs[i].msg_len == len && v4(i) == from)
    }

    /// Echoes `n` datagrams of one size to their one sender as GSO sends (`UDP_SEGMENT` in a
    /// control message), each at most [`GSO_MAX_BYTES`]; returns how many went out.
    fn echo_gso(&mut self, fd: RawFd, n: usize) -> io::Result<usize> {
        let len = (self.hdrs[0].msg_len as usize).min(SLOT);
        let per_send = (GSO_MAX_BYTES / len).max(1);
        let mut done = 0;
        // Bounded: each round takes at least one datagram.
        while done < n {
            let k = (n - done).min(per_send);
            for j in 0..k {
                let from = (done + j) * SLOT;
                self.echo_buf[j * len..(j + 1) * len].copy_from_slice(&self.bufs[from..from + len]);
            }
            let mut iov = libc::iovec {
                iov_base: self.echo_buf.as_mut_ptr().cast(),
                iov_len: k * len,
            };
            // SAFETY: all-zero is a valid msghdr; every pointer set below is live for the call.
            let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
            msg.msg_name = (&mut self.addrs[0] as *mut libc::sockaddr_storage).cast();
            msg.msg_namelen = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
            msg.msg_iov = &mut iov;
            msg.msg_iovlen = 1;
            msg.msg_control = self.cmsg.as_mut_ptr().cast();
            // SAFETY: CMSG_SPACE only computes a size.
            msg.msg_controllen = unsafe { libc::CMSG_SPACE(2) } as _;
            // SAFETY: `cmsg` is 8-aligned and 32 bytes, more than CMSG_SPACE(2), so
            // CMSG_FIRSTHDR is non-null and the header plus 2 data bytes fit.
            unsafe {
                let c = libc::CMSG_FIRSTHDR(&msg);
                (*c).cmsg_len = libc::CMSG_LEN(2) as _;
                (*c).cmsg_level = libc::SOL_UDP;
                (*c).cmsg_type = UDP_SEGMENT;
                std::ptr::write_unaligned(libc::CMSG_DATA(c).cast::<u16>(), len as u16);
            }
            // SAFETY: msg and everything it points at are live for the call.
            let r = unsafe { libc::sendmsg(fd, &msg, libc::MSG_DONTWAIT) };
            if r < 0 {
                let e = io::Error::last_os_error();
                if e.kind() == io::ErrorKind::WouldBlock || done > 0 {
                    // A full buffer drops the rest of this batch (and a failure after a
                    // first send must not make the caller send that part again).
                    return Ok(done);
                }
                return Err(e);
            }
            if k > 1 {
                self.sends.echo_gso_sends += 1;
                self.sends.echo_gso_datagrams += k as u64;
            }
            done += k;
        }
        Ok(done)
    }

    /// Sends `count` datagrams of `len` bytes laid out back to back in `burst` on a *connected*
    /// socket: one `send` of the whole run when `gso` (the socket has `UDP_SEGMENT` = `len`),
    /// else one `sendmmsg`. Returns how many went out; a full send buffer or a refused
    /// destination drops the rest, counted later as loss.
    /// (The receive headers are reused: a burst is sent before the next receive.)
    pub fn send_burst(
        &mut self,
        fd: RawFd,
        burst: &[u8],
        len: usize,
        count: usize,
        gso: bool,
    ) -> io::Result<usize> {
        let count = count.min(self.batch).min(burst.len() / len.max(1));
        if count == 0 {
            return Ok(0);
        }
        if gso || count == 1 {
            // SAFETY: the pointer and length describe the live slice `burst[..count * len]`.
            let r =
                unsafe { libc::send(fd, burst.as_ptr().cast(), count * len, libc::MSG_DONTWAIT) };
            let sent = dropped_is_zero(r as i64)?;
            if sent == 0 {
                return Ok(0);
            }
            if count > 1 {
                self.sends.gso_sends += 1;
                self.sends.gso_datagrams += count as u64;
            }
            return Ok(count);
        }
        for i in 0..count {
            self.iovs[i] = libc::iovec {
                // sendmmsg only reads through iov_base; the *mut is the C signature's.
                iov_base: burst[i * len..].as_ptr() as *mut libc::c_void,
                iov_len: len,
            };
            let h = &mut self.hdrs[i].msg_hdr;
            h.msg_name = std::ptr::null_mut();
            h.msg_namelen = 0;
            h.msg_iov = &mut self.iovs[i];
            h.msg_iovlen = 1;
            h.msg_control = std::ptr::null_mut();
            h.msg_controllen = 0;
            h.msg_flags = 0;
        }
        // SAFETY: the first `count` headers point at live iovecs over `burst`; the socket is
        // connected, so no address is needed.
        let r = unsafe {
            libc::sendmmsg(
                fd,
                self.hdrs.as_mut_ptr(),
                count as libc::c_uint,
                libc::MSG_DONTWAIT,
            )
        };
        let sent = dropped_is_zero(r as i64)?;
        if sent > 1 {
            self.sends.mmsg_sends += 1;
            self.sends.mmsg_datagrams += sent as u64;
        }
        Ok(sent)
    }
}

/// A system call's count, with a full buffer (`EAGAIN`) or an ICMP-refused destination
/// (`ECONNREFUSED`) as nothing sent: both are loss, which the run counts.
fn dropped_is_zero(r: i64) -> io::Result<usize> {
    if r >= 0 {
        return Ok(r as usize);
    }
    match io::Error::last_os_error() {
        e if e.kind() == io::ErrorKind::WouldBlock
            || e.kind() == io::ErrorKind::ConnectionRefused =>
        {
            Ok(0)
        }
        e => Err(e),
    }
}

/// Turns UDP GSO on for a connected client socket sending `len`-byte datagrams: a `send` of
/// k × `len` bytes then leaves as k datagrams. False when the kernel refuses (before 4.18).
pub fn enable_gso(fd: RawFd, len: usize) -> bool {
    let size: libc::c_int = len as libc::c_int;
    // SAFETY: a c_int option value, passed by pointer with its size.
    let r = unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_UDP,
            UDP_SEGMENT,
            (&size as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    r == 0
}
