//! `recvmmsg` into a ring of preallocated buffers.

use super::{read_sockaddr, zeroed, RING};
use crate::core::{PEER_HEADROOM, PEER_TAILROOM};
use std::io;
use std::net::SocketAddr;
use std::ops::Range;
use std::os::fd::RawFd;

/// One slot: headroom for the ChannelData or Data-indication header the core writes in front
/// of a peer's payload, the largest UDP payload, and tailroom for padding.
pub const SLOT_LEN: usize = PEER_HEADROOM + 65_536 + PEER_TAILROOM;

/// Up to [`RING`] datagrams read with one `recvmmsg`. Every datagram lands at
/// [`PEER_HEADROOM`] in its own slot, so a peer datagram can be framed for the client in
/// place and a client datagram is simply the slot's payload.
///
/// The headers point into the boxed buffers, which never move (a `Box`'s heap block stays
/// put when the box itself moves), so the pointers are set once in [`RecvBatch::new`].
pub struct RecvBatch {
    bufs: Box<[u8]>,
    hdrs: Box<[libc::mmsghdr]>,
    iovs: Box<[libc::iovec]>,
    names: Box<[libc::sockaddr_storage]>,
    /// Datagrams held from the last [`RecvBatch::recv`].
    len: usize,
}

impl Default for RecvBatch {
    fn default() -> Self {
        Self::new()
    }
}

impl RecvBatch {
    /// Allocates the ring once ([`RING`] × [`SLOT_LEN`] bytes of address space; the kernel
    /// backs only the pages datagrams touch).
    pub fn new() -> RecvBatch {
        let mut b = RecvBatch {
            bufs: vec![0u8; RING * SLOT_LEN].into_boxed_slice(),
            hdrs: (0..RING).map(|_| zeroed()).collect(),
            iovs: (0..RING).map(|_| zeroed()).collect(),
            names: (0..RING).map(|_| zeroed()).collect(),
            len: 0,
        };
        for i in 0..RING {
            let payload = i * SLOT_LEN + PEER_HEADROOM;
            b.iovs[i] = libc::iovec {
                iov_base: b.bufs[payload..].as_mut_ptr().cast(),
                iov_len: SLOT_LEN - PEER_HEADROOM - PEER_TAILROOM,
            };
            let h = &mut b.hdrs[i].msg_hdr;
            h.msg_name = (&mut b.names[i] as *mut libc::sockaddr_storage).cast();
            h.msg_iov = &mut b.iovs[i];
            h.msg_iovlen = 1;
        }
        b.reset(RING);
        b
    }

    /// Restores what the kernel overwrote in the first `n` headers.
    fn reset(&mut self, n: usize) {
        for h in &mut self.hdrs[..n] {
            h.msg_hdr.msg_namelen = std::mem::size_of::<libc::sockaddr_storage>() as _;
            h.msg_hdr.msg_flags = 0;
            h.msg_len = 0;
        }
    }

    /// Reads as many datagrams as wait on `fd`, up to [`RING`], with one non-blocking
    /// `recvmmsg`; the datagrams of the previous call are gone. `WouldBlock` when none waits.
    pub fn recv(&mut self, fd: RawFd) -> io::Result<usize> {
        self.reset(self.len);
        self.len = 0;
        // SAFETY: `hdrs` holds RING headers whose name and iovec pointers point into this
        // struct's boxed buffers, valid and exclusively borrowed for the call.
        let rc = unsafe {
            libc::recvmmsg(
                fd,
                self.hdrs.as_mut_ptr(),
                RING as libc::c_uint,
                libc::MSG_DONTWAIT,
                std::ptr::null_mut(),
            )
        };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        self.len = rc as usize;
        Ok(self.len)
    }

    /// Datagrams held.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True when no datagram is held.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Datagram `i`: its source, its whole slot (headroom included) and where its payload
    /// lies in the slot. `None` past the datagrams held or for a source that is not IP.
    pub fn get_mut(&mut self, i: usize) -> Option<(SocketAddr, &mut [u8], Range<usize>)> {
        if i >= self.len {
            return None;
        }
        let from = read_sockaddr(&self.names[i])?;
        let n = (self.hdrs[i].msg_len as usize).min(self.iovs[i].iov_len);
        let slot = &mut self.bufs[i * SLOT_LEN..(i + 1) * SLOT_LEN];
        Some((from, slot, PEER_HEADROOM..PEER_HEADROOM + n))
    }

    /// Slot `i` (headroom included), for the sender.
    pub fn slot(&self, i: usize) -> &[u8] {
        &self.bufs[i * SLOT_LEN..(i + 1) * SLOT_LEN]
    }
}
