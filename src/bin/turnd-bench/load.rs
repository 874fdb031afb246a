//! The data side: every flow is a client allocation plus a peer socket in this process. The
//! client sends to the peer through the relay (ChannelData or Send indications), the peer
//! echoes each datagram back to the relayed address, and the client takes the round trip from
//! the send time written into the payload. One thread, non-blocking sockets, `ppoll`, and
//! buffers made once, so the tool stays cheap next to the server it measures; the system
//! calls are batched (`batch.rs`): a flow's burst is one `sendmmsg` (or one GSO `send`), and
//! a readable socket is drained with `recvmmsg`, the peers echoing with one `sendmmsg`.

use crate::batch::{self, Scratch, MAX_BATCH};
use crate::client::Client;
use crate::stats;
use anyhow::Result;
use std::net::UdpSocket;
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};
use turnd::client::data::{self, Relayed, Via};
use turnd::stun::{Message, TransactionId};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    Channel,
    Send,
}

/// How the load is offered.
#[derive(Clone, Copy, Debug)]
pub enum Offer {
    /// A fixed total rate in datagrams per second, spread round-robin over the flows.
    Rate(u64),
    /// As fast as the flows take it, with at most `window` datagrams in flight per flow.
    Flood { window: u64 },
}

pub struct Flow {
    pub client: Client,
    pub peer: UdpSocket,
    /// [`MAX_BATCH`] copies, back to back, of the datagram the client sends: ChannelData
    /// header or Send indication around the payload. A burst of k datagrams is the first k
    /// copies; only the timestamp inside each is rewritten per send.
    burst: Vec<u8>,
    /// Bytes per datagram.
    len: usize,
    /// Where the payload starts in each copy.
    payload_at: usize,
    /// The socket has UDP GSO for `len`-byte segments: a burst is one `send`.
    gso: bool,
    /// Most datagrams per burst: [`MAX_BATCH`], or fewer where a GSO send of them would
    /// exceed the largest UDP datagram.
    burst_cap: usize,
    sent: u64,
    received: u64,
    /// Datagrams given up as lost in flood mode (so the window reopens).
    forgiven: u64,
}

/// Payload layout: send time (ns since the run's start, u64) and the flow index (u32).
const STAMP_LEN: usize = 12;

impl Flow {
    pub fn new(
        client: Client,
        peer: UdpSocket,
        channel: u16,
        mode: Mode,
        size: usize,
        gso: bool,
    ) -> Result<Flow> {
        let peer_addr = peer.local_addr()?;
        let size = size.max(STAMP_LEN);
        let (template, payload_at) = match mode {
            Mode::Channel => {
                let mut t = vec![0u8; 4 + size];
                let n = data::encode_channel_data(&mut t, channel, &vec![0u8; size], false)?;
                t.truncate(n);
                (t, 4)
            }
            Mode::Send => {
                let mut t = vec![0u8; 20 + 12 + 4 + size + 3 + 8];
                let payload = vec![0xA5u8; size];
                let txid = TransactionId(rand::random());
                let n = data::encode_send(&mut t, txid, peer_addr, &payload)?;
                t.truncate(n);
                let at = Message::parse(&t)
                    .ok()
                    .and_then(|m| m.data_range())
                    .ok_or_else(|| anyhow::anyhow!("built a Send indication without DATA"))?
                    .start;
                (t, at)
            }
        };
        client.sock.set_nonblocking(true)?;
        peer.set_nonblocking(true)?;
        let len = template.len();
        let burst = template.repeat(MAX_BATCH);
        let gso = gso && batch::enable_gso(client.sock.as_raw_fd(), len);
        let burst_cap = if gso {
            (batch::GSO_MAX_BYTES / len).clamp(1, MAX_BATCH)
        } else {
            MAX_BATCH
        };
        Ok(Flow {
            client,
            peer,
            burst,
            len,
            payload_at,
            gso,
            burst_cap,
            sent: 0,
            received: 0,
            forgiven: 0,
        })
    }

    fn in_flight(&self) -> u64 {
        self.sent.saturating_sub(self.received + self.forgiven)
    }

    /// Whether this flow's bursts go out as GSO sends.
    pub fn gso(&self) -> bool {
        self.gso
    }

    /// Sends `k` datagrams now, in bursts of at most a batch each, stamped with the same send
    /// time. All count as sent: a datagram a full buffer dropped is loss, as on the wire.
    fn send(&mut self, k: u64, start: Instant, io: &mut Scratch) -> Result<()> {
        let mut left = k as usize;
        // Bounded: each round sends at least one datagram (batch ≥ 1).
        while left > 0 {
            let n = left.min(io.batch()).min(self.burst_cap);
            let ns = start.elapsed().as_nanos() as u64;
            for i in 0..n {
                let at = i * self.len + self.payload_at;
                self.burst[at..at + 8].copy_from_slice(&ns.to_be_bytes());
            }
            let fd = self.client.sock.as_raw_fd();
            io.send_burst(fd, &self.burst, self.len, n, self.gso)?;
            self.sent += n as u64;
            left -= n;
        }
        Ok(())
    }
}

/// What one run counted.
#[derive(Debug, Default)]
pub struct Counts {
    /// Datagrams the clients sent.
    pub sent: u64,
    /// Datagrams that reached the peers (client → peer direction relayed).
    pub peer_received: u64,
    /// Echoes that came back to the clients (peer → client direction relayed).
    pub client_received: u64,
    /// Round-trip times in microseconds, at most `rtt_cap` of them.
    pub rtt_us: Vec<u32>,
    /// How long datagrams were offered.
    pub send_window: Duration,
    /// This process's own CPU time over the run (offering plus draining), user and system,
    /// in microseconds (`getrusage`).
    pub generator_user_us: u64,
    pub generator_sys_us: u64,
    /// The run's wall-clock length, offering plus draining.
    pub wall: Duration,
}

/// Runs the load: offers for `duration`, then waits up to `drain` for the last echoes.
pub fn run(
    flows: &mut [Flow],
    mode: Mode,
    offer: Offer,
    duration: Duration,
    drain: Duration,
    rtt_cap: usize,
    io: &mut Scratch,
) -> Result<Counts> {
    let n = flows.len();
    let mut counts = Counts {
        rtt_us: Vec::with_capacity(rtt_cap),
        ..Counts::default()
    };
    let mut pfds: Vec<libc::pollfd> = flows
        .iter()
        .flat_map(|f| [f.client.sock.as_raw_fd(), f.peer.as_raw_fd()])
        .map(|fd| libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        })
        .collect();
    let cpu0 = stats::self_cpu_us();
    let start = Instant::now();
    let send_end = start + duration;
    let hard_end = send_end + drain;
    let mut next_flow = 0usize;
    let mut last_progress = start;

    // Bounded by time (hard_end) and, as a belt, by an iteration count far above any run.
    for _ in 0..u64::MAX / 2 {
        let now = Instant::now();
        if now >= hard_end {
            break;
        }
        let sending = now < send_end;
        if !sending && counts.client_received + total_forgiven(flows) >= counts.sent {
            break;
        }

        // Send what is due.
        let mut wait = Duration::from_millis(5);
        if sending {
            match offer {
                Offer::Rate(pps) => {
                    let elapsed = now - start;
                    let due = (pps as f64 * elapsed.as_secs_f64()) as u64;
                    // A burst is bounded so receiving is never starved for long. It is
                    // spread round-robin from `next_flow` on, as one datagram after another
                    // would be, and each flow sends its share in one batch.
                    let burst = due.saturating_sub(counts.sent).min(512);
                    if burst > 0 {
                        for (j, f) in flows.iter_mut().enumerate() {
                            f.send(share(burst, n, next_flow, j), start, io)?;
                        }
                        next_flow = (next_flow + (burst % n as u64) as usize) % n;
                        counts.sent += burst;
                    }
                    let next_due = Duration::from_secs_f64((counts.sent + 1) as f64 / pps as f64);
                    wait = next_due.saturating_sub(elapsed).min(wait);
                }
                Offer::Flood { window } => {
                    for f in flows.iter_mut() {
                        let k = window.saturating_sub(f.in_flight()).min(64);
                        f.send(k, start, io)?;
                        counts.sent += k;
                    }
                    wait = Duration::from_millis(20);
                }
            }
        }

        let ts = libc::timespec {
            tv_sec: wait.as_secs() as libc::time_t,
            tv_nsec: wait.subsec_nanos() as libc::c_long,
        };
        // SAFETY: pfds is a live, correctly sized array of pollfd for the duration of the call.
        let ready = unsafe {
            libc::ppoll(
                pfds.as_mut_ptr(),
                pfds.len() as libc::nfds_t,
                &ts,
                std::ptr::null(),
            )
        };
        if ready < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e.into());
        }
        if ready == 0 {
            // Nothing moved for a while: in flood mode give up on what is in flight.
            if matches!(offer, Offer::Flood { .. })
                && Instant::now() - last_progress > Duration::from_millis(50)
            {
                for f in flows.iter_mut() {
                    f.forgiven = f.sent - f.received;
                }
            }
            continue;
        }
        last_progress = Instant::now();
        for (i, p) in pfds.iter_mut().enumerate() {
            if p.revents == 0 {
                continue;
            }
            p.revents = 0;
            let f = &mut flows[i / 2];
            if i % 2 == 1 {
                counts.peer_received += echo(f, io);
            } else {
                receive(f, mode, io, start, &mut counts)?;
            }
        }
    }
    counts.send_window = duration.min(start.elapsed());
    counts.wall = start.elapsed();
    let cpu1 = stats::self_cpu_us();
    counts.generator_user_us = cpu1.0.saturating_sub(cpu0.0);
    counts.generator_sys_us = cpu1.1.saturating_sub(cpu0.1);
    Ok(counts)
}

/// Flow `j`'s part of a fixed-rate burst of `burst` datagrams dealt round-robin over `n`
/// flows starting at flow `next`: what one-at-a-time sending would have given each.
fn share(burst: u64, n: usize, next: usize, j: usize) -> u64 {
    let n64 = n as u64;
    let extra = (burst % n64) as usize;
    burst / n64 + u64::from((j + n - next) % n < extra)
}

fn total_forgiven(flows: &[Flow]) -> u64 {
    flows.iter().map(|f| f.forgiven).sum()
}

/// Most datagrams taken from one readable socket per wake-up, so one busy socket cannot
/// starve the others (4 batches of 64; 256 calls with `--batch 1`, as before batching).
const DRAIN_MAX: usize = 256;

/// The peer side: echo every datagram back to where it came from (the relayed address).
fn echo(f: &mut Flow, io: &mut Scratch) -> u64 {
    let fd = f.peer.as_raw_fd();
    let mut n = 0;
    for _ in 0..DRAIN_MAX / io.batch() {
        let got = match io.recv(fd, true) {
            Ok(got) => got,
            Err(_) => break,
        };
        n += got as u64;
        // What a full send buffer drops comes back as loss.
        let _ = io.echo(fd, got);
        if got < io.batch() {
            break;
        }
    }
    n
}

/// The client side: ChannelData or Data indications carrying an echo.
fn receive(
    f: &mut Flow,
    mode: Mode,
    io: &mut Scratch,
    start: Instant,
    c: &mut Counts,
) -> Result<()> {
    let fd = f.client.sock.as_raw_fd();
    for _ in 0..DRAIN_MAX / io.batch() {
        let got = match io.recv(fd, false) {
            Ok(got) => got,
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => break,
            Err(e) => return Err(e.into()),
        };
        let now_ns = start.elapsed().as_nanos() as u64;
        for i in 0..got {
            let d = io.datagram(i);
            // Allocation-free: the decoder borrows the datagram.
            let payload = match (mode, data::decode(d)) {
                (
                    Mode::Channel,
                    Some(Relayed {
                        via: Via::Channel(_),
                        data,
                    }),
                )
                | (
                    Mode::Send,
                    Some(Relayed {
                        via: Via::Peer(_),
                        data,
                    }),
                ) if data.len() >= STAMP_LEN => data,
                _ => continue,
            };
            let mut stamp = [0u8; 8];
            stamp.copy_from_slice(&payload[..8]);
            let sent_ns = u64::from_be_bytes(stamp);
            f.received += 1;
            c.client_received += 1;
            if c.rtt_us.len() < c.rtt_us.capacity() {
                c.rtt_us
                    .push((now_ns.saturating_sub(sent_ns) / 1000).min(u32::MAX as u64) as u32);
            }
        }
        if got < io.batch() {
            break;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::share;

    #[test]
    fn bursts_are_dealt_round_robin() {
        for n in 1..6usize {
            for next in 0..n {
                for burst in 0..20u64 {
                    let parts: Vec<u64> = (0..n).map(|j| share(burst, n, next, j)).collect();
                    assert_eq!(parts.iter().sum::<u64>(), burst, "{n} {next} {burst}");
                    // One at a time from `next` on: flow next+i (mod n) gets the i-th datagram.
                    let mut expect = vec![0u64; n];
                    for i in 0..burst as usize {
                        expect[(next + i) % n] += 1;
                    }
                    assert_eq!(parts, expect, "{n} {next} {burst}");
                }
            }
        }
    }
}
