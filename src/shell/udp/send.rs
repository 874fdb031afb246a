//! `sendmmsg` of one batch's datagrams, with UDP GSO for runs to one destination.

use super::{
    write_sockaddr, zeroed, RecvBatch, GSO_MAX_BYTES, GSO_MAX_SEGMENTS, RING, UDP_SEGMENT,
};
use std::io;
use std::net::SocketAddr;
use std::ops::Range;
use std::os::fd::RawFd;

/// One queued datagram: `slot[start..start + len]` of the receive ring, to `dest` from `fd`.
#[derive(Clone, Copy)]
struct Entry {
    fd: RawFd,
    dest: SocketAddr,
    /// Order of arrival, so sorting keeps each destination's datagrams in order.
    seq: u16,
    slot: u16,
    start: u32,
    len: u32,
}

/// Room for one control message carrying a `u16` (the GSO segment size), aligned for
/// `cmsghdr`.
#[repr(C, align(8))]
#[derive(Clone, Copy)]
struct Cmsg([u8; 32]);

/// The datagrams one receive batch produced, sent together by [`SendBatch::flush`].
///
/// Queued datagrams are not copied: they stay in the [`RecvBatch`] slots they were received
/// (and framed) in, and the flush points the kernel at them, so the ring must not be refilled
/// before the flush — which the borrow of the ring in `flush` enforces.
///
/// The flush sorts the queue by (socket, destination, arrival), which keeps every
/// destination's datagrams in order; each socket's run goes out with one `sendmmsg`, and in
/// it each run of datagrams to one destination whose sizes are equal (the last may be
/// shorter) is one message with a `UDP_SEGMENT` control message: one GSO super-packet that
/// the kernel splits back into the same datagrams.
pub struct SendBatch {
    entries: Vec<Entry>,
    hdrs: Box<[libc::mmsghdr]>,
    iovs: Box<[libc::iovec]>,
    names: Box<[libc::sockaddr_storage]>,
    cmsgs: Box<[Cmsg]>,
    /// Per message: its first iovec and how many datagrams (segments) it carries.
    spans: Box<[(u16, u16)]>,
    gso: bool,
    /// GSO messages sent, and datagrams in them (for tests and curiosity).
    stats: Stats,
}

/// What the sender did, counted since it was made.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    /// `sendmmsg` calls.
    pub calls: u64,
    /// Messages sent with a GSO segment size.
    pub gso_messages: u64,
    /// Datagrams carried by those messages.
    pub gso_datagrams: u64,
    /// Datagrams sent one by one after the kernel refused their GSO message.
    pub fallback_datagrams: u64,
}

impl SendBatch {
    /// Allocates room for [`RING`] datagrams once; `gso` says whether to try GSO at all.
    pub fn new(gso: bool) -> SendBatch {
        SendBatch {
            entries: Vec::with_capacity(RING),
            hdrs: (0..RING).map(|_| zeroed()).collect(),
            iovs: (0..RING).map(|_| zeroed()).collect(),
            names: (0..RING).map(|_| zeroed()).collect(),
            cmsgs: vec![Cmsg([0; 32]); RING].into_boxed_slice(),
            spans: vec![(0, 0); RING].into_boxed_slice(),
            gso,
            stats: Stats::default(),
        }
    }

    /// Whether GSO is still in use (the kernel may have refused it).
    pub fn gso(&self) -> bool {
        self.gso
    }

    pub fn stats(&self) -> Stats {
        self.stats
    }

    /// Queues `ring.slot(slot)[range]` to `dest` from `fd`. False (nothing queued) when the
    /// queue is full, which a caller that flushes after every receive never sees: one
    /// received datagram queues at most one.
    pub fn push(&mut self, fd: RawFd, dest: SocketAddr, slot: usize, range: Range<usize>) -> bool {
        if self.entries.len() == RING || slot >= RING {
            return false;
        }
        let seq = self.entries.len() as u16;
        self.entries.push(Entry {
            fd,
            dest,
            seq,
            slot: slot as u16,
            start: range.start as u32,
            len: range.len() as u32,
        });
        true
    }

    /// Datagrams queued.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True when nothing is queued.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Sends everything queued; returns how many datagrams the kernel refused (each is lost,
    /// as with a failed `sendto`: a full buffer, an unreachable peer).
    pub fn flush(&mut self, ring: &RecvBatch) -> usize {
        if self.entries.is_empty() {
            return 0;
        }
        // Unstable sort with the arrival index in the key: the order of a stable sort,
        // without the stable sort's scratch allocation.
        self.entries.sort_unstable_by_key(|e| (e.fd, e.dest, e.seq));
        let mut failed = 0;
        let mut i = 0;
        while i < self.entries.len() {
            let fd = self.entries[i].fd;
            let (msgs, next) = self.build(ring, i);
            failed += self.send_messages(fd, msgs);
            i = next;
        }
        self.entries.clear();
        failed
    }

    /// Fills messages for the run of entries from `start` that share its socket; returns the
    /// number of messages and the entry after the run.
    fn build(&mut self, ring: &RecvBatch, start: usize) -> (usize, usize) {
        let fd = self.entries[start].fd;
        let (mut m, mut k, mut i) = (0, 0, start);
        while i < self.entries.len() && self.entries[i].fd == fd {
            let first = self.entries[i];
            let seg = first.len as usize;
            self.iovs[k] = iovec(ring, &first);
            let mut count = 1;
            let mut total = seg;
            if self.gso && seg > 0 {
                while let Some(e) = self.entries.get(i + count) {
                    let len = e.len as usize;
                    if e.fd != fd
                        || e.dest != first.dest
                        || len > seg
                        || len == 0
                        || count == GSO_MAX_SEGMENTS
                        || total + len > GSO_MAX_BYTES
                    {
                        break;
                    }
                    self.iovs[k + count] = iovec(ring, e);
                    count += 1;
                    total += len;
                    if len < seg {
                        // Only the last segment may be shorter.
                        break;
                    }
                }
            }
            let namelen = write_sockaddr(&first.dest, &mut self.names[m]);
            let h = &mut self.hdrs[m].msg_hdr;
            h.msg_name = (&mut self.names[m] as *mut libc::sockaddr_storage).cast();
            h.msg_namelen = namelen;
            h.msg_iov = &mut self.iovs[k];
            h.msg_iovlen = count as _;
            h.msg_flags = 0;
            if count > 1 {
                let c = &mut self.cmsgs[m];
                write_segment_size(c, seg as u16);
                h.msg_control = c.0.as_mut_ptr().cast();
                // SAFETY: CMSG_SPACE only computes a size.
                h.msg_controllen = unsafe { libc::CMSG_SPACE(2) } as _;
            } else {
                h.msg_control = std::ptr::null_mut();
                h.msg_controllen = 0;
            }
            self.spans[m] = (k as u16, count as u16);
            m += 1;
            k += count;
            i += count;
        }
        (m, i)
    }

    /// Sends `msgs` prepared messages on `fd`, past any that fail; returns the datagrams lost.
    fn send_messages(&mut self, fd: RawFd, msgs: usize) -> usize {
        let mut failed = 0;
        let mut j = 0;
        // Each round sends at least one message or gives one up: at most `msgs` rounds
        // (plus interrupted ones).
        while j < msgs {
            self.stats.calls += 1;
            // SAFETY: headers j..msgs were filled by `build` with pointers into this
            // struct's boxed buffers and the ring the caller borrows for the flush.
            let rc = unsafe { libc::sendmmsg(fd, self.hdrs[j..].as_mut_ptr(), (msgs - j) as _, 0) };
            if rc > 0 {
                for s in &self.spans[j..j + rc as usize] {
                    if s.1 > 1 {
                        self.stats.gso_messages += 1;
                        self.stats.gso_datagrams += u64::from(s.1);
                    }
                }
                j += rc as usize;
                continue;
            }
            let err = io::Error::last_os_error();
            if err.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            let (first, count) = self.spans[j];
            if count > 1 && is_gso_refusal(&err) {
                if err.raw_os_error() != Some(libc::EINVAL) {
                    // The route's device cannot do it: stop trying on this worker.
                    self.gso = false;
                    tracing::warn!(error = %err, "UDP GSO refused by the kernel; sending datagrams one by one");
                }
                failed += self.send_each(fd, j, first as usize, count as usize);
            } else {
                failed += count as usize;
            }
            j += 1;
        }
        failed
    }

    /// Sends the segments of message `m` as datagrams of their own.
    fn send_each(&mut self, fd: RawFd, m: usize, first: usize, count: usize) -> usize {
        let h = &self.hdrs[m].msg_hdr;
        let mut failed = 0;
        for iov in &self.iovs[first..first + count] {
            self.stats.fallback_datagrams += 1;
            // SAFETY: the iovec points into the ring borrowed for the flush, and the name
            // into this struct's address buffer, with its length.
            let rc = unsafe {
                libc::sendto(
                    fd,
                    iov.iov_base,
                    iov.iov_len,
                    0,
                    h.msg_name as *const libc::sockaddr,
                    h.msg_namelen,
                )
            };
            if rc < 0 {
                failed += 1;
            }
        }
        failed
    }
}

fn iovec(ring: &RecvBatch, e: &Entry) -> libc::iovec {
    let slot = ring.slot(e.slot as usize);
    let start = (e.start as usize).min(slot.len());
    let end = (start + e.len as usize).min(slot.len());
    libc::iovec {
        // The kernel only reads through it (sendmmsg).
        iov_base: slot[start..end].as_ptr() as *mut libc::c_void,
        iov_len: end - start,
    }
}

/// Writes a `SOL_UDP`/`UDP_SEGMENT` control message carrying `size`.
fn write_segment_size(c: &mut Cmsg, size: u16) {
    let p = c.0.as_mut_ptr() as *mut libc::cmsghdr;
    // SAFETY: `Cmsg` is 8-aligned and 32 bytes, more than CMSG_SPACE(2) (24 on 64-bit
    // Linux), so the header and its 2 data bytes fit; CMSG_LEN/CMSG_DATA only compute.
    unsafe {
        (*p).cmsg_len = libc::CMSG_LEN(2) as _;
        (*p).cmsg_level = libc::SOL_UDP;
        (*p).cmsg_type = UDP_SEGMENT;
        std::ptr::write_unaligned(libc::CMSG_DATA(p) as *mut u16, size);
    }
}

/// Errors by which the kernel refuses a GSO send (rather than the datagrams themselves):
/// `EIO` (no checksum offload on the route's device), `ENOPROTOOPT`/`EOPNOTSUPP` (no GSO),
/// `EINVAL` (a segment larger than the route's MTU, or too many segments).
fn is_gso_refusal(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EIO | libc::ENOPROTOOPT | libc::EOPNOTSUPP | libc::EINVAL)
    )
}
