//! The worker's poller: level-triggered `epoll` over raw `libc`, and an `eventfd` to wake it.
//!
//! Level-triggered on purpose: a socket that still holds data after its one batch of this
//! turn is simply reported again on the next `epoll_wait`, so the iteration budget (one
//! `recvmmsg` per socket per turn) needs no list of sockets left ready, and the kernel's ready
//! list, which moves a reported socket to its tail, gives the round-robin between busy sockets.
//!
//! Every registration carries a [`Token`](super::token::Token) (a `u64` in the event's data):
//! the poller knows nothing of what the token means. A socket's registration goes away when
//! its fd is closed, as long as no other fd refers to the same open file; a socket handed to
//! another worker (an RFC 6062 parked peer) is removed with [`Poller::delete`] first.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::time::Duration;

/// Events read per `epoll_wait`. More ready sockets than this are reported on the next turn
/// (the kernel's ready list keeps them), so no socket waits more than a few turns.
const MAX_EVENTS: usize = 256;

/// What a registration waits for.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Interest {
    pub read: bool,
    pub write: bool,
}

impl Interest {
    pub const READ: Interest = Interest {
        read: true,
        write: false,
    };
    pub const NONE: Interest = Interest {
        read: false,
        write: false,
    };

    fn bits(self) -> u32 {
        let mut bits = 0;
        if self.read {
            bits |= libc::EPOLLIN | libc::EPOLLRDHUP;
        }
        if self.write {
            bits |= libc::EPOLLOUT;
        }
        bits as u32
    }
}

/// One reported event: the token and what the socket is ready for. Errors and hang-ups count
/// as both readable and writable, so the next read or write finds them.
#[derive(Clone, Copy, Debug)]
pub struct Ready {
    pub token: u64,
    pub read: bool,
    pub write: bool,
}

/// An `epoll` instance and the buffer its events are read into.
pub struct Poller {
    epoll: OwnedFd,
    events: Vec<libc::epoll_event>,
    len: usize,
}

impl Poller {
    pub fn new() -> io::Result<Poller> {
        // SAFETY: plain system call; the returned fd is checked and then owned.
        let fd = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(Poller {
            // SAFETY: `fd` was just opened and nothing else owns it.
            epoll: unsafe { OwnedFd::from_raw_fd(fd) },
            events: vec![libc::epoll_event { events: 0, u64: 0 }; MAX_EVENTS],
            len: 0,
        })
    }

    fn ctl(&self, op: libc::c_int, fd: RawFd, token: u64, interest: Interest) -> io::Result<()> {
        let mut ev = libc::epoll_event {
            events: interest.bits(),
            u64: token,
        };
        // SAFETY: `ev` is a valid epoll_event for the duration of the call.
        let rc = unsafe { libc::epoll_ctl(self.epoll.as_raw_fd(), op, fd, &mut ev) };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Registers `fd` under `token`.
    pub fn add(&self, fd: &impl AsRawFd, token: u64, interest: Interest) -> io::Result<()> {
        self.ctl(libc::EPOLL_CTL_ADD, fd.as_raw_fd(), token, interest)
    }

    /// Changes what `fd` waits for.
    pub fn modify(&self, fd: &impl AsRawFd, token: u64, interest: Interest) -> io::Result<()> {
        self.ctl(libc::EPOLL_CTL_MOD, fd.as_raw_fd(), token, interest)
    }

    /// Removes `fd` (before it moves to another worker; closing it is enough otherwise).
    pub fn delete(&self, fd: &impl AsRawFd) -> io::Result<()> {
        self.ctl(libc::EPOLL_CTL_DEL, fd.as_raw_fd(), 0, Interest::NONE)
    }

    /// Brings `fd`'s registration to `want`: adds, changes or — for no interest at all —
    /// removes it, since `epoll` reports errors and hang-ups whatever the interest, and a
    /// level-triggered hang-up on a socket with nothing to do (a paced splice) would be
    /// reported on every turn. `current` is what is registered (`None`: nothing).
    pub fn set(
        &self,
        fd: &impl AsRawFd,
        token: u64,
        want: Interest,
        current: &mut Option<Interest>,
    ) -> io::Result<()> {
        match *current {
            _ if want == Interest::NONE => {
                if current.is_some() {
                    *current = None;
                    self.delete(fd)?;
                }
            }
            None => {
                self.add(fd, token, want)?;
                *current = Some(want);
            }
            Some(c) if c != want => {
                self.modify(fd, token, want)?;
                *current = Some(want);
            }
            Some(_) => {}
        }
        Ok(())
    }

    /// Waits until something is ready or `timeout` passes (`None`: no limit); then
    /// [`Poller::ready`] yields the events. An interrupted wait yields none.
    pub fn wait(&mut self, timeout: Option<Duration>) -> io::Result<()> {
        let ms = match timeout {
            None => -1,
            // Rounded up, so a deadline 0.3 ms away is not polled for in a busy loop.
            Some(t) => t.as_micros().div_ceil(1000).min(libc::c_int::MAX as u128) as libc::c_int,
        };
        // SAFETY: `events` holds MAX_EVENTS initialised entries the kernel may write.
        let n = unsafe {
            libc::epoll_wait(
                self.epoll.as_raw_fd(),
                self.events.as_mut_ptr(),
                MAX_EVENTS as libc::c_int,
                ms,
            )
        };
        if n < 0 {
            self.len = 0;
            let e = io::Error::last_os_error();
            return if e.kind() == io::ErrorKind::Interrupted {
                Ok(())
            } else {
                Err(e)
            };
        }
        self.len = n as usize;
        Ok(())
    }

    /// The events of the last wait.
    pub fn ready(&self, i: usize) -> Option<Ready> {
        let ev = self.events[..self.len].get(i)?;
        let bits = ev.events as libc::c_int;
        let broken = bits & (libc::EPOLLERR | libc::EPOLLHUP) != 0;
        Some(Ready {
            token: ev.u64,
            read: broken || bits & (libc::EPOLLIN | libc::EPOLLRDHUP) != 0,
            write: broken || bits & libc::EPOLLOUT != 0,
        })
    }

    /// How many events the last wait returned.
    pub fn len(&self) -> usize {
        self.len
    }
}

/// Wakes a worker blocked in `epoll_wait` from another thread (admin requests, reloads,
/// shutdown): an `eventfd` registered on the worker's poller. Writes from many threads add up;
/// one read by the worker clears them all.
#[derive(Debug)]
pub struct Notifier {
    fd: OwnedFd,
}

impl Notifier {
    pub fn new() -> io::Result<Notifier> {
        // SAFETY: plain system call; the returned fd is checked and then owned.
        let fd = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(Notifier {
            // SAFETY: `fd` was just opened and nothing else owns it.
            fd: unsafe { OwnedFd::from_raw_fd(fd) },
        })
    }

    /// Makes the worker's next (or current) wait return.
    pub fn wake(&self) {
        let one: u64 = 1;
        // SAFETY: writes 8 bytes from a valid u64. A full counter (2^64 - 2 wake-ups not yet
        // read) fails with EAGAIN, and the worker is awake then anyway.
        unsafe {
            libc::write(
                self.fd.as_raw_fd(),
                (&one as *const u64).cast(),
                std::mem::size_of::<u64>(),
            );
        }
    }

    /// Clears the wake-ups (the worker, before it looks at what they announced).
    pub fn clear(&self) {
        let mut n: u64 = 0;
        // SAFETY: reads at most 8 bytes into a valid u64; EAGAIN when there is nothing.
        unsafe {
            libc::read(
                self.fd.as_raw_fd(),
                (&mut n as *mut u64).cast(),
                std::mem::size_of::<u64>(),
            );
        }
    }
}

impl AsRawFd for Notifier {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

/// A [`Notifier`] as a `std::task::Waker`, so a channel with async wake-ups (the admin API's)
/// can wake the worker's loop without a runtime.
impl std::task::Wake for Notifier {
    fn wake(self: std::sync::Arc<Self>) {
        Notifier::wake(&self);
    }

    fn wake_by_ref(self: &std::sync::Arc<Self>) {
        Notifier::wake(self);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::UdpSocket;

    #[test]
    fn a_socket_is_reported_while_it_holds_data_and_a_notifier_wakes_the_wait() {
        let mut p = Poller::new().unwrap();
        let a = UdpSocket::bind("127.0.0.1:0").unwrap();
        let b = UdpSocket::bind("127.0.0.1:0").unwrap();
        p.add(&a, 7, Interest::READ).unwrap();
        let n = Notifier::new().unwrap();
        p.add(&n, 9, Interest::READ).unwrap();
        p.wait(Some(Duration::ZERO)).unwrap();
        assert_eq!(p.len(), 0);
        b.send_to(b"x", a.local_addr().unwrap()).unwrap();
        // Level-triggered: reported on every wait until read.
        for _ in 0..2 {
            p.wait(Some(Duration::from_secs(5))).unwrap();
            assert_eq!(p.len(), 1);
            let r = p.ready(0).unwrap();
            assert!(r.token == 7 && r.read);
        }
        let mut buf = [0u8; 8];
        a.recv(&mut buf).unwrap();
        n.wake();
        n.wake();
        p.wait(Some(Duration::from_secs(5))).unwrap();
        assert_eq!(p.ready(0).unwrap().token, 9);
        n.clear();
        p.wait(Some(Duration::ZERO)).unwrap();
        assert_eq!(p.len(), 0);
    }
}
