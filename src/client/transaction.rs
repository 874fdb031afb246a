//! When a request is sent again, and when it is given up (RFC 8489 §6.2).
//!
//! Over UDP a request is retransmitted after RTO, then after 2·RTO, 4·RTO … until Rc
//! transmissions have gone out; the transaction fails Rm·RTO after the last one. With the
//! RFC's defaults (RTO 500 ms, Rc 7, Rm 16) that is sends at 0, 0.5, 1.5, 3.5, 7.5, 15.5 and
//! 31.5 s and failure at 39.5 s. Over TCP and TLS the transport retransmits, so the request
//! is sent once and fails after Ti (39.5 s) without an answer (§6.2.2).

use std::time::{Duration, Instant};

/// How a client retransmits. [`Timing::RFC8489`] is the RFC's recommendation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timing {
    /// The first retransmission timeout (RTO), doubled after each transmission.
    pub rto: Duration,
    /// Rc: the most transmissions of one request over UDP.
    pub rc: u32,
    /// Rm: after the last transmission, wait Rm·RTO (the first RTO) for the answer.
    pub rm: u32,
    /// Ti: how long a request sent over a stream waits for its answer.
    pub stream_timeout: Duration,
    /// Whatever the schedule says, give a transaction up this long after its first
    /// transmission (a command-line `--timeout`). `None`: the schedule alone decides.
    pub give_up_after: Option<Duration>,
}

impl Timing {
    pub const RFC8489: Timing = Timing {
        rto: Duration::from_millis(500),
        rc: 7,
        rm: 16,
        stream_timeout: Duration::from_millis(39_500),
        give_up_after: None,
    };

    /// Retransmit from 500 ms doubling for as long as `limit`, and wait as long over a
    /// stream: "try for this long", as a command-line tool's `--timeout` means it.
    pub fn for_at_most(limit: Duration) -> Timing {
        Timing {
            rc: u32::MAX,
            stream_timeout: limit,
            give_up_after: Some(limit),
            ..Timing::RFC8489
        }
    }
}

impl Default for Timing {
    fn default() -> Timing {
        Timing::RFC8489
    }
}

/// Where one transaction is in its schedule.
#[derive(Clone, Copy, Debug)]
pub struct Schedule {
    /// Transmissions so far.
    pub sent: u32,
    /// When to send again; `None` once no retransmission is left (or over a stream).
    pub next_send: Option<Instant>,
    /// The RTO to wait after the next transmission.
    rto: Duration,
    /// When the transaction fails without an answer.
    pub deadline: Instant,
}

impl Schedule {
    /// The schedule of a request first sent at `now`.
    pub fn start(t: &Timing, stream: bool, now: Instant) -> Schedule {
        let cap = t.give_up_after.map(|d| now + d);
        let at_most = |i: Instant| cap.map_or(i, |c| c.min(i));
        if stream {
            return Schedule {
                sent: 1,
                next_send: None,
                rto: t.rto,
                deadline: at_most(now + t.stream_timeout),
            };
        }
        let mut s = Schedule {
            sent: 1,
            next_send: None,
            rto: t.rto,
            deadline: at_most(now + t.rto.saturating_mul(t.rm.max(1))),
        };
        if t.rc > 1 {
            s.next_send = Some(now + t.rto);
            s.rto = t.rto.saturating_mul(2);
            // Until the last transmission the deadline is only the cap.
            s.deadline = cap.unwrap_or(far_future(now));
        }
        s
    }

    /// Records the retransmission due at `now` (call when `next_send <= now`).
    pub fn retransmitted(&mut self, t: &Timing, now: Instant) {
        self.sent += 1;
        if self.sent >= t.rc {
            self.next_send = None;
            let last = now + t.rto.saturating_mul(t.rm.max(1));
            self.deadline = self.deadline.min(last);
        } else {
            self.next_send = Some(now + self.rto);
            self.rto = self.rto.saturating_mul(2);
        }
    }

    /// The earliest instant something is due.
    pub fn wake_at(&self) -> Instant {
        self.next_send
            .map_or(self.deadline, |n| n.min(self.deadline))
    }
}

/// An instant no schedule reaches (a year on), without overflowing `Instant`.
fn far_future(now: Instant) -> Instant {
    now + Duration::from_secs(365 * 86_400)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs a schedule without an answer; returns the send times and the failure time, in ms.
    fn run(t: &Timing, stream: bool) -> (Vec<u128>, u128) {
        let t0 = Instant::now();
        let mut s = Schedule::start(t, stream, t0);
        let mut sends = vec![0];
        // Bounded: every pass either retransmits (at most Rc times) or ends.
        for _ in 0..1000 {
            let now = s.wake_at();
            if now >= s.deadline {
                return (sends, (s.deadline - t0).as_millis());
            }
            s.retransmitted(t, now);
            sends.push((now - t0).as_millis());
        }
        panic!("the schedule never ended");
    }

    #[test]
    fn rfc8489_udp_schedule() {
        let (sends, end) = run(&Timing::RFC8489, false);
        assert_eq!(sends, [0, 500, 1500, 3500, 7500, 15500, 31500]);
        assert_eq!(end, 39500);
    }

    #[test]
    fn streams_send_once_and_wait_ti() {
        let (sends, end) = run(&Timing::RFC8489, true);
        assert_eq!(sends, [0]);
        assert_eq!(end, 39500);
    }

    #[test]
    fn a_limit_cuts_the_schedule() {
        let (sends, end) = run(&Timing::for_at_most(Duration::from_secs(5)), false);
        assert_eq!(sends, [0, 500, 1500, 3500]);
        assert_eq!(end, 5000);
        let (sends, end) = run(&Timing::for_at_most(Duration::from_secs(5)), true);
        assert_eq!((sends, end), (vec![0], 5000));
    }

    #[test]
    fn one_transmission_waits_rm_rto() {
        let t = Timing {
            rc: 1,
            ..Timing::RFC8489
        };
        assert_eq!(run(&t, false), (vec![0], 8000));
        let t = Timing {
            rto: Duration::from_millis(1500),
            rc: 4,
            rm: 1,
            ..Timing::RFC8489
        };
        assert_eq!(run(&t, false), (vec![0, 1500, 4500, 10500], 12000));
    }
}
