//! The data side: every flow is a client allocation plus a peer socket in this process. The
//! client sends to the peer through the relay (ChannelData or Send indications), the peer
//! echoes each datagram back to the relayed address, and the client takes the round trip from
//! the send time written into the payload. One thread, non-blocking sockets, `ppoll`, and
//! buffers made once, so the tool stays cheap next to the server it measures.

use crate::client::Client;
use anyhow::Result;
use std::net::UdpSocket;
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};
use turnd::stun::{AttrType, Class, Message, MessageBuilder, MessageType, Method, TransactionId};

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
    /// The datagram the client sends: ChannelData header or Send indication around the
    /// payload. Only the timestamp inside is rewritten per send.
    template: Vec<u8>,
    /// Where the payload starts in `template`.
    payload_at: usize,
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
    ) -> Result<Flow> {
        let peer_addr = peer.local_addr()?;
        let size = size.max(STAMP_LEN);
        let (template, payload_at) = match mode {
            Mode::Channel => {
                let mut t = vec![0u8; 4 + size];
                turnd::stun::channel_data::write_header(&mut t, channel, size as u16);
                (t, 4)
            }
            Mode::Send => {
                let mut t = vec![0u8; 20 + 12 + 4 + size + 3 + 8];
                let payload = vec![0xA5u8; size];
                let mut b = MessageBuilder::new(
                    &mut t,
                    MessageType::new(Method::SEND, Class::Indication),
                    TransactionId(rand::random()),
                )?;
                b.add_xor_address(AttrType::XOR_PEER_ADDRESS, &peer_addr)?;
                b.add(AttrType::DATA, &payload)?;
                let n = b.finish();
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
        Ok(Flow {
            client,
            peer,
            template,
            payload_at,
            sent: 0,
            received: 0,
            forgiven: 0,
        })
    }

    fn in_flight(&self) -> u64 {
        self.sent.saturating_sub(self.received + self.forgiven)
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
}

/// Runs the load: offers for `duration`, then waits up to `drain` for the last echoes.
pub fn run(
    flows: &mut [Flow],
    mode: Mode,
    offer: Offer,
    duration: Duration,
    drain: Duration,
    rtt_cap: usize,
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
    let mut buf = vec![0u8; 65536];
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
                    // A burst is bounded so receiving is never starved for long.
                    let mut burst = 0;
                    while counts.sent < due && burst < 512 {
                        let f = &mut flows[next_flow];
                        next_flow = (next_flow + 1) % n;
                        send_one(f, start)?;
                        counts.sent += 1;
                        burst += 1;
                    }
                    let next_due = Duration::from_secs_f64((counts.sent + 1) as f64 / pps as f64);
                    wait = next_due.saturating_sub(elapsed).min(wait);
                }
                Offer::Flood { window } => {
                    for f in flows.iter_mut() {
                        let mut burst = 0;
                        while f.in_flight() < window && burst < 64 {
                            send_one(f, start)?;
                            counts.sent += 1;
                            burst += 1;
                        }
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
                counts.peer_received += echo(f, &mut buf);
            } else {
                receive(f, mode, &mut buf, start, &mut counts)?;
            }
        }
    }
    counts.send_window = duration.min(start.elapsed());
    Ok(counts)
}

fn total_forgiven(flows: &[Flow]) -> u64 {
    flows.iter().map(|f| f.forgiven).sum()
}

fn send_one(f: &mut Flow, start: Instant) -> Result<()> {
    let ns = start.elapsed().as_nanos() as u64;
    let at = f.payload_at;
    f.template[at..at + 8].copy_from_slice(&ns.to_be_bytes());
    f.sent += 1;
    match f.client.sock.send(&f.template) {
        Ok(_) => Ok(()),
        // A full socket buffer is a lost datagram, as on the wire; the count shows it.
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// The peer side: echo every datagram back to where it came from (the relayed address).
fn echo(f: &mut Flow, buf: &mut [u8]) -> u64 {
    let mut n = 0;
    for _ in 0..256 {
        match f.peer.recv_from(buf) {
            Ok((len, from)) => {
                n += 1;
                let _ = f.peer.send_to(&buf[..len], from);
            }
            Err(_) => break,
        }
    }
    n
}

/// The client side: ChannelData or Data indications carrying an echo.
fn receive(f: &mut Flow, mode: Mode, buf: &mut [u8], start: Instant, c: &mut Counts) -> Result<()> {
    for _ in 0..256 {
        let len = match f.client.sock.recv(buf) {
            Ok(len) => len,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => break,
            Err(e) => return Err(e.into()),
        };
        let payload = match mode {
            Mode::Channel if len >= 4 + STAMP_LEN && buf[0] & 0xC0 == 0x40 => &buf[4..len],
            Mode::Send => match Message::parse(&buf[..len]).ok().and_then(|m| m.data()) {
                Some(d) if d.len() >= STAMP_LEN => d,
                _ => continue,
            },
            _ => continue,
        };
        let mut stamp = [0u8; 8];
        stamp.copy_from_slice(&payload[..8]);
        let sent_ns = u64::from_be_bytes(stamp);
        let now_ns = start.elapsed().as_nanos() as u64;
        f.received += 1;
        c.client_received += 1;
        if c.rtt_us.len() < c.rtt_us.capacity() {
            c.rtt_us
                .push((now_ns.saturating_sub(sent_ns) / 1000).min(u32::MAX as u64) as u32);
        }
    }
    Ok(())
}
