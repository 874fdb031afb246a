//! `turnd probe --nat-behaviour stun:HOST[:PORT]`: the NAT behaviour discovery of RFC 5780 §4.
//!
//! The server must have two IP addresses and two ports; it names the other pair in
//! OTHER-ADDRESS and answers from it when asked with CHANGE-REQUEST. Over one local UDP socket:
//!
//! - **Mapping** (§4.3). Test I: Binding to the primary address → mapped address M1 and
//!   OTHER-ADDRESS. Test II: Binding to the other IP, primary port → M2; M2 = M1 means
//!   endpoint-independent mapping. Otherwise test III: Binding to the other IP and other port →
//!   M3; M3 = M2 means address-dependent mapping, else address-and-port-dependent.
//! - **Filtering** (§4.4). Test II: Binding to the primary address asking for an answer from the
//!   other IP and port; an answer means endpoint-independent filtering. Otherwise test III:
//!   asking for an answer from the other port only; an answer means address-dependent
//!   filtering, none address-and-port-dependent.
//!
//! A server without RFC 5780 (no OTHER-ADDRESS in the answer to test I) is reported as such.

use super::client::config;
use super::diagnosis::Diagnosis;
use super::report::{DiagnosisJson, Step};
use super::url::{ServerUrl, Transport};
use crate::client::{Attr, Client, Event, Reply};
use serde::Serialize;
use std::fmt::Write;
use std::io;
use std::net::{SocketAddr, ToSocketAddrs, UdpSocket};
use std::time::{Duration, Instant};

/// CHANGE-REQUEST flags (RFC 5780 §7.2).
const CHANGE_IP: u32 = 0x4;
const CHANGE_PORT: u32 = 0x2;

#[derive(Clone, Debug, Default, Serialize)]
pub struct NatReport {
    pub url: String,
    pub server: Option<String>,
    pub local: Option<String>,
    pub mapped: Option<String>,
    pub other_address: Option<String>,
    pub response_origin: Option<String>,
    /// `endpoint-independent`, `address-dependent` or `address-and-port-dependent`.
    pub mapping: Option<&'static str>,
    pub filtering: Option<&'static str>,
    /// The mapped address equals the local one: no NAT between us and the server.
    pub nat: Option<bool>,
    pub steps: Vec<Step>,
    pub diagnosis: Option<DiagnosisJson>,
    pub success: bool,
}

impl NatReport {
    pub fn to_json(&self) -> String {
        // Invariant: strings, bools and vectors of them always serialise.
        serde_json::to_string(self).expect("report serialises")
    }

    pub fn to_text(&self) -> String {
        let mut o = String::new();
        let _ = writeln!(o, "NAT behaviour discovery (RFC 5780) against {}", self.url);
        for s in &self.steps {
            let _ = writeln!(
                o,
                "  {:4} {:<22} {:>9.1} ms  {}",
                if s.ok { "ok" } else { "--" },
                s.name,
                s.ms,
                s.detail
            );
        }
        for (label, v) in [
            ("local address", &self.local),
            ("mapped address", &self.mapped),
            ("other address", &self.other_address),
        ] {
            if let Some(v) = v {
                let _ = writeln!(o, "{label:>15}: {v}");
            }
        }
        if let Some(nat) = self.nat {
            let _ = writeln!(o, "{:>15}: {}", "NAT", if nat { "yes" } else { "no" });
        }
        if let (Some(m), Some(f)) = (self.mapping, self.filtering) {
            let _ = writeln!(o, "{:>15}: {m}", "mapping");
            let _ = writeln!(o, "{:>15}: {f}", "filtering");
        }
        if let Some(d) = &self.diagnosis {
            let _ = writeln!(o, "FAILED [{}]: {}", d.code, d.message);
        }
        o
    }
}

/// An answer to one Binding, and where it came from (with CHANGE-REQUEST, another address).
#[derive(Clone, Debug)]
struct Answer {
    reply: Reply,
    from: SocketAddr,
}

/// One Binding transaction on an unconnected socket, carried out by the library's client:
/// retransmitted after 500 ms, 1 s, … until `timeout`; the answer may come from another
/// address than `to` (CHANGE-REQUEST). An error response is an answer too.
fn binding(
    sock: &UdpSocket,
    to: SocketAddr,
    change: u32,
    timeout: Duration,
) -> io::Result<Option<Answer>> {
    let mut c = Client::new(config(false, timeout), None, rand::random());
    let attrs = if change != 0 {
        vec![Attr::ChangeRequest(change)]
    } else {
        Vec::new()
    };
    // Invariant: a fresh client has no request in flight, and a Binding with SOFTWARE and
    // CHANGE-REQUEST is a few dozen bytes.
    c.binding(Instant::now(), attrs)
        .expect("a first request always starts");
    let mut rx = vec![0u8; 2048];
    let mut from = to;
    // Bounded: the client gives the transaction up by `timeout`, and every wait ends at its
    // next deadline.
    loop {
        while let Some(bytes) = c.poll_transmit() {
            sock.send_to(&bytes, to)?;
        }
        if let Some(e) = c.poll_event() {
            return Ok(match e {
                Event::Succeeded { reply, .. }
                | Event::Failed {
                    reply: Some(reply), ..
                } => Some(Answer { reply, from }),
                _ => None,
            });
        }
        let Some(deadline) = c.poll_timeout() else {
            return Ok(None);
        };
        let Some(left) = deadline
            .checked_duration_since(Instant::now())
            .filter(|d| !d.is_zero())
        else {
            c.handle_timeout(Instant::now());
            continue;
        };
        sock.set_read_timeout(Some(left))?;
        match sock.recv_from(&mut rx) {
            Ok((len, src)) => {
                from = src;
                c.handle_input(Instant::now(), &rx[..len]);
            }
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                c.handle_timeout(Instant::now())
            }
            // Unconnected sockets can still see ICMP errors on Linux for the last send.
            Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {}
            Err(e) => return Err(e),
        }
    }
}

fn fail(r: &mut NatReport, code: &'static str, message: String) {
    r.diagnosis = Some((&Diagnosis { code, message }).into());
}

/// Runs the RFC 5780 tests against `url` (UDP only).
pub fn run(url: &ServerUrl, timeout: Duration) -> NatReport {
    let mut r = NatReport {
        url: url.to_string(),
        ..NatReport::default()
    };
    if url.transport != Transport::Udp {
        fail(
            &mut r,
            "udp_only",
            "NAT behaviour discovery is over UDP: use stun:HOST[:PORT]".into(),
        );
        return r;
    }
    if let Err(e) = tests(url, timeout, &mut r) {
        fail(&mut r, "io", e.to_string());
    }
    r
}

fn timed<T>(
    r: &mut NatReport,
    name: &'static str,
    f: impl FnOnce() -> T,
    detail: impl Fn(&T) -> (bool, String),
) -> T {
    let t0 = Instant::now();
    let v = f();
    let (ok, d) = detail(&v);
    r.steps.push(Step {
        name,
        ok,
        ms: super::report::millis(t0.elapsed()),
        detail: d,
    });
    v
}

fn addr_of(answer: &Option<Answer>) -> Option<SocketAddr> {
    answer
        .as_ref()
        .filter(|a| a.reply.success)
        .and_then(|a| a.reply.mapped)
}

fn tests(url: &ServerUrl, timeout: Duration, r: &mut NatReport) -> io::Result<()> {
    let Some(server) = (url.host.as_str(), url.port).to_socket_addrs()?.next() else {
        fail(r, "resolve_failed", format!("{} has no address", url.host));
        return Ok(());
    };
    r.server = Some(server.to_string());
    // The local IP the route to the server uses, so "mapped = local" means no NAT; the socket
    // is bound to it (not to the wildcard) so its address is known.
    let local_ip = {
        let s = UdpSocket::bind(if server.is_ipv4() {
            "0.0.0.0:0"
        } else {
            "[::]:0"
        })?;
        s.connect(server)?;
        s.local_addr()?.ip()
    };
    let sock = UdpSocket::bind(SocketAddr::new(local_ip, 0))?;
    let local = sock.local_addr()?;
    r.local = Some(local.to_string());

    // Test I.
    let t1 = timed(
        r,
        "test_1",
        || binding(&sock, server, 0, timeout),
        |v| match v {
            Ok(Some(x)) if x.reply.success => (
                true,
                format!(
                    "mapped {}",
                    x.reply.mapped.map_or("?".into(), |a| a.to_string())
                ),
            ),
            Ok(Some(x)) => (false, format!("error {:?}", x.reply.error)),
            Ok(None) => (false, "no answer".into()),
            Err(e) => (false, e.to_string()),
        },
    )?;
    let Some(t1) = t1 else {
        fail(
            r,
            "udp_blocked",
            format!("no answer over UDP from {server}: UDP blocked, or no STUN server there"),
        );
        return Ok(());
    };
    let Some(m1) = addr_of(&Some(t1.clone())) else {
        fail(
            r,
            "error_response",
            format!("the Binding request was refused: {:?}", t1.reply.error),
        );
        return Ok(());
    };
    r.mapped = Some(m1.to_string());
    r.nat = Some(m1 != local);
    r.response_origin = t1.reply.response_origin.map(|a| a.to_string());
    let Some(other) = t1.reply.other_address else {
        fail(
            r,
            "no_rfc5780",
            "server does not support RFC 5780: no OTHER-ADDRESS in its Binding answer, so \
             mapping and filtering cannot be told (coturn does it with two listening IPs)"
                .into(),
        );
        return Ok(());
    };
    r.other_address = Some(other.to_string());
    if other.ip() == server.ip() || other.port() == server.port() {
        fail(
            r,
            "bad_other_address",
            format!("OTHER-ADDRESS {other} must differ from {server} in both IP and port"),
        );
        return Ok(());
    }

    // Mapping, tests II and III.
    let alt_ip = SocketAddr::new(other.ip(), server.port());
    let m2 = timed(
        r,
        "mapping_test_2",
        || binding(&sock, alt_ip, 0, timeout),
        |v| describe(v, alt_ip),
    )?;
    let Some(m2) = addr_of(&m2) else {
        fail(
            r,
            "no_answer",
            format!("no answer from the other address {alt_ip}"),
        );
        return Ok(());
    };
    r.mapping = Some(if m2 == m1 {
        "endpoint-independent"
    } else {
        let m3 = timed(
            r,
            "mapping_test_3",
            || binding(&sock, other, 0, timeout),
            |v| describe(v, other),
        )?;
        let Some(m3) = addr_of(&m3) else {
            fail(
                r,
                "no_answer",
                format!("no answer from the other address {other}"),
            );
            return Ok(());
        };
        if m3 == m2 {
            "address-dependent"
        } else {
            "address-and-port-dependent"
        }
    });

    // Filtering, tests II and III. No answer is an answer here, so these are not failures.
    let f2 = timed(
        r,
        "filtering_test_2",
        || binding(&sock, server, CHANGE_IP | CHANGE_PORT, timeout),
        |v| describe(v, server),
    )?;
    r.filtering = Some(if addr_of(&f2).is_some() {
        "endpoint-independent"
    } else {
        let f3 = timed(
            r,
            "filtering_test_3",
            || binding(&sock, server, CHANGE_PORT, timeout),
            |v| describe(v, server),
        )?;
        if addr_of(&f3).is_some() {
            "address-dependent"
        } else {
            "address-and-port-dependent"
        }
    });
    r.success = true;
    Ok(())
}

fn describe(v: &io::Result<Option<Answer>>, to: SocketAddr) -> (bool, String) {
    match v {
        Ok(Some(x)) if x.reply.success => (
            true,
            format!(
                "to {to}: mapped {}, answered from {}",
                x.reply.mapped.map_or("?".into(), |a| a.to_string()),
                x.from
            ),
        ),
        Ok(Some(x)) => (false, format!("to {to}: error {:?}", x.reply.error)),
        Ok(None) => (false, format!("to {to}: no answer")),
        Err(e) => (false, format!("to {to}: {e}")),
    }
}
