//! The probe itself: the steps a WebRTC client's ICE agent takes with a TURN server, done
//! twice (a client and a "peer", each with its own connection and allocation) so data can go
//! out through one relay and come back through the other: client → relay A → relay B → peer,
//! and back.
//!
//! resolve → connect → Binding (reflexive address) → Allocate (401 challenge, then with
//! credentials) → the peer's connect and Allocate → CreatePermission each toward the other's
//! relayed address → payloads echoed with Send/Data indications → ChannelBind → payloads
//! echoed with ChannelData → Refresh with lifetime 0 to free both allocations.
//!
//! Each step is timed; the first that fails ends the probe, and its failure becomes the
//! diagnosis.

use super::client::{Credentials, Session, TxError, Via};
use super::diagnosis::{self, diagnose, ConnectErrorKind, Context, CredKind, Failure};
use super::report::{DiagnosisJson, Echo, Report, Step};
use super::transport::{self, Conn, Trust};
use super::url::{Scheme, ServerUrl, Transport};
use std::net::{SocketAddr, ToSocketAddrs};
use std::time::{Duration, Instant, SystemTime};

/// The channel numbers the client and the peer bind (RFC 8656 §12: 0x4000–0x4FFF).
const CLIENT_CHANNEL: u16 = 0x4000;
const PEER_CHANNEL: u16 = 0x4001;
/// How long one echoed payload may take to come back before it counts as lost.
const ECHO_WAIT: Duration = Duration::from_secs(2);

/// What to probe and how.
#[derive(Clone, Debug)]
pub struct Options {
    pub url: ServerUrl,
    pub creds: Option<Credentials>,
    /// The credentials were minted here from `--secret`.
    pub minted: bool,
    pub trust: Trust,
    /// Per transaction: how long to retransmit over UDP, or to wait over a stream.
    pub timeout: Duration,
    /// Payloads echoed per framing.
    pub count: u32,
}

struct Probe<'a> {
    o: &'a Options,
    report: Report,
    ctx: Context,
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl Probe<'_> {
    /// Runs `f` as step `name`: times it, records it, and on failure records the failed step.
    fn step<T>(
        &mut self,
        name: &'static str,
        f: impl FnOnce() -> Result<(T, String), Failure>,
    ) -> Result<T, Failure> {
        let t0 = Instant::now();
        let r = f();
        let ms = super::report::millis(t0.elapsed());
        let (ok, detail) = match &r {
            Ok((_, d)) => (true, d.clone()),
            Err(f) => (false, diagnose(f, &self.ctx).code.to_string()),
        };
        self.report.steps.push(Step {
            name,
            ok,
            ms,
            detail,
        });
        r.map(|(v, _)| v)
    }

    fn session(&self, conn: Conn) -> Session {
        Session::new(conn, self.o.creds.clone(), self.o.timeout)
    }
}

fn connect(o: &Options, server: SocketAddr) -> Result<Conn, Failure> {
    let timeout = o.timeout;
    let c = match o.url.transport {
        Transport::Udp => {
            Conn::udp(server).map_err(|e| transport::ConnectError::Other(e.to_string()))
        }
        Transport::Tcp => Conn::tcp(server, timeout),
        Transport::Tls => transport::tls_config(&o.trust)
            .and_then(|cfg| Conn::tls(server, &o.url.host, cfg, timeout)),
    };
    c.map_err(|e| Failure::Connect(ConnectErrorKind::from(e)))
}

fn tx(step: &'static str) -> impl Fn(TxError) -> Failure {
    move |err| Failure::Tx { step, err }
}

/// Runs the probe; never panics on what the server does, every failure ends in the report.
pub fn run(o: &Options) -> Report {
    let creds = match &o.creds {
        None => CredKind::None,
        Some(c) => CredKind::of_username(&c.username, o.minted),
    };
    let mut p = Probe {
        o,
        report: Report {
            url: o.url.to_string(),
            transport: o.url.transport.name(),
            ..Report::default()
        },
        ctx: Context {
            transport: o.url.transport,
            server: None,
            creds,
            realm_given: o.creds.as_ref().and_then(|c| c.realm.clone()),
            server_realm: None,
            relay: None,
            now_unix: unix_now(),
        },
    };
    let result = steps(&mut p);
    match result {
        Ok(()) => p.report.success = true,
        Err(f) => p.report.diagnosis = Some((&diagnose(&f, &p.ctx)).into()),
    }
    p.report
}

fn steps(p: &mut Probe<'_>) -> Result<(), Failure> {
    let url = p.o.url.clone();
    let server = p.step("resolve", || {
        let addrs: Vec<SocketAddr> = (url.host.as_str(), url.port)
            .to_socket_addrs()
            .map_err(|e| Failure::Resolve(e.to_string()))?
            .collect();
        let first = *addrs
            .first()
            .ok_or_else(|| Failure::Resolve("no address".into()))?;
        Ok((first, format!("{} → {first}", url.host)))
    })?;
    p.ctx.server = Some(server);
    p.report.server = Some(server.to_string());

    let o = p.o;
    let conn = p.step("connect", || {
        let c = connect(o, server)?;
        let local = c.local_addr();
        Ok((c, format!("{} from {local}", url.transport.name())))
    })?;
    let mut a = p.session(conn);

    let mapped = p.step("binding", || {
        let r = a.binding().map_err(tx("binding"))?;
        let m = r.mapped.ok_or(Failure::Tx {
            step: "binding",
            err: TxError::Malformed("Binding success without XOR-MAPPED-ADDRESS".into()),
        })?;
        Ok((m, format!("reflexive {m}")))
    })?;
    p.report.reflexive = Some(mapped.to_string());
    if url.scheme == Scheme::Stun {
        p.report.software = a.software.clone();
        return Ok(());
    }

    let relay_a = p.step("allocate", || {
        let r = a.allocate().map_err(tx("allocate"))?;
        // Invariant: the client fails an Allocate success without XOR-RELAYED-ADDRESS.
        let relay = r.relayed().expect("checked by the client");
        Ok((
            relay,
            format!(
                "relayed {relay}, lifetime {} s, realm \"{}\"",
                r.lifetime.unwrap_or(0),
                a.realm.as_deref().unwrap_or("")
            ),
        ))
    });
    p.ctx.server_realm = a.realm.clone();
    p.report.realm = a.realm.clone();
    p.report.software = a.software.clone();
    let relay_a = relay_a?;
    p.ctx.relay = Some(relay_a);
    p.report.relay = Some(relay_a.to_string());
    if diagnosis::relay_is_private(&p.ctx) {
        let f = Failure::NoRoundTrip;
        p.report.warnings.push((&diagnose(&f, &p.ctx)).into());
    }

    let result = with_peer(p, &mut a, server, relay_a);
    // Best effort: free the client's allocation whatever happened after it was made.
    let _ = p.step("refresh", || {
        a.perform(|c, now| c.refresh(now, Some(0)))
            .map_err(tx("refresh"))?;
        Ok(((), "client allocation freed (lifetime 0)".into()))
    });
    result
}

/// Everything that needs the second allocation.
fn with_peer(
    p: &mut Probe<'_>,
    a: &mut Session,
    server: SocketAddr,
    relay_a: SocketAddr,
) -> Result<(), Failure> {
    let o = p.o;
    let conn = p.step("peer_connect", || {
        let c = connect(o, server)?;
        let local = c.local_addr();
        Ok((c, format!("second client from {local}")))
    })?;
    let mut b = p.session(conn);
    let relay_b = p.step("peer_allocate", || {
        let r = b.allocate().map_err(tx("peer_allocate"))?;
        // Invariant: the client fails an Allocate success without XOR-RELAYED-ADDRESS.
        let relay = r.relayed().expect("checked by the client");
        Ok((relay, format!("peer relayed {relay}")))
    })?;
    p.report.peer_relay = Some(relay_b.to_string());
    let result = relay_both_ways(p, a, &mut b, relay_a, relay_b);
    let _ = p.step("peer_refresh", || {
        b.perform(|c, now| c.refresh(now, Some(0)))
            .map_err(tx("refresh"))?;
        Ok(((), "peer allocation freed (lifetime 0)".into()))
    });
    result
}

fn relay_both_ways(
    p: &mut Probe<'_>,
    a: &mut Session,
    b: &mut Session,
    relay_a: SocketAddr,
    relay_b: SocketAddr,
) -> Result<(), Failure> {
    p.step("create_permission", || {
        a.perform(|c, now| c.create_permission(now, &[relay_b]))
            .map_err(tx("create_permission"))?;
        b.perform(|c, now| c.create_permission(now, &[relay_a]))
            .map_err(tx("create_permission"))?;
        Ok(((), format!("{} ↔ {}", relay_a.ip(), relay_b.ip())))
    })?;

    let count = p.o.count;
    let echo_sd = p.step("send_data", || {
        let e = echo(
            count,
            a,
            b,
            |s, d| s.send_indication(relay_b, d),
            |s, d| s.send_indication(relay_a, d),
            |via| via == Via::Peer(relay_a),
            |via| via == Via::Peer(relay_b),
        )?;
        let detail = format!("{}/{} echoed via Send/Data indications", e.received, e.sent);
        Ok((e, detail))
    });
    let echo_sd = echo_sd?;
    let (sd_ok, sd_loss) = judge_echo("Send/Data indications", &echo_sd);
    p.report.send_data = echo_sd;
    p.report.warnings.extend(sd_loss);
    if !sd_ok {
        if let Some(s) = p.report.steps.last_mut() {
            s.ok = false;
        }
        return Err(Failure::NoRoundTrip);
    }

    p.step("channel_bind", || {
        a.perform(|c, now| c.channel_bind(now, CLIENT_CHANNEL, relay_b))
            .map_err(tx("channel_bind"))?;
        b.perform(|c, now| c.channel_bind(now, PEER_CHANNEL, relay_a))
            .map_err(tx("channel_bind"))?;
        Ok((
            (),
            format!("{CLIENT_CHANNEL:#06x} → {relay_b}, {PEER_CHANNEL:#06x} → {relay_a}"),
        ))
    })?;

    let echo_cd = p.step("channel_data", || {
        let e = echo(
            count,
            a,
            b,
            |s, d| s.send_channel_data(CLIENT_CHANNEL, d),
            |s, d| s.send_channel_data(PEER_CHANNEL, d),
            |via| via == Via::Channel(PEER_CHANNEL),
            |via| via == Via::Channel(CLIENT_CHANNEL),
        )?;
        let detail = format!("{}/{} echoed via ChannelData", e.received, e.sent);
        Ok((e, detail))
    })?;
    let (cd_ok, cd_loss) = judge_echo("ChannelData", &echo_cd);
    p.report.channel_data = echo_cd;
    p.report.warnings.extend(cd_loss);
    if !cd_ok {
        if let Some(s) = p.report.steps.last_mut() {
            s.ok = false;
        }
        return Err(Failure::NoRoundTrip);
    }
    Ok(())
}

/// What one framing's echoes say. The relay path works both ways as soon as one payload made
/// the whole round trip (client → relay A → relay B → peer, and back): that is what the step
/// and the exit code require. Fewer than all of them back is still a working path — loss on
/// the way, not a refusal — so the probe passes but says so in a warning (`echo_loss`, with
/// the count), for a monitor to see without failing on one lost datagram. None back is
/// [`Failure::NoRoundTrip`]: false, no warning.
fn judge_echo(framing: &str, e: &Echo) -> (bool, Option<DiagnosisJson>) {
    if e.received == 0 {
        return (false, None);
    }
    let lost = e.sent.saturating_sub(e.received);
    let warning = (lost > 0).then(|| DiagnosisJson {
        code: "echo_loss",
        message: format!(
            "{lost} of {} payloads sent via {framing} did not come back within {} s each: \
             data flows through the relay, but something on the path loses some of it",
            e.sent,
            ECHO_WAIT.as_secs()
        ),
    });
    (true, warning)
}

/// Sends `count` payloads from `a`, waits for each at `b`, sends it back, and waits for it at
/// `a`. `at_b`/`at_a` say whether a payload arrived the expected way (from the expected relay
/// or on the expected channel). Bounded: each wait is at most [`ECHO_WAIT`].
#[allow(clippy::too_many_arguments)]
fn echo(
    count: u32,
    a: &mut Session,
    b: &mut Session,
    send_a: impl Fn(&mut Session, &[u8]) -> Result<(), TxError>,
    send_b: impl Fn(&mut Session, &[u8]) -> Result<(), TxError>,
    at_b: impl Fn(Via) -> bool,
    at_a: impl Fn(Via) -> bool,
) -> Result<Echo, Failure> {
    let mut e = Echo::default();
    for i in 0..count {
        let payload = format!("turnd-probe {i} {:016x}", rand::random::<u64>());
        let t0 = Instant::now();
        send_a(a, payload.as_bytes()).map_err(tx("echo"))?;
        e.sent += 1;
        if !wait_for(b, payload.as_bytes(), &at_b)? {
            continue;
        }
        send_b(b, payload.as_bytes()).map_err(tx("echo"))?;
        if wait_for(a, payload.as_bytes(), &at_a)? {
            e.received += 1;
            e.rtt_ms.push(super::report::millis(t0.elapsed()));
        }
    }
    Ok(e)
}

/// Waits for `payload` to arrive at `s` the expected way; other payloads (late echoes of
/// earlier ones) are skipped. Bounded by [`ECHO_WAIT`].
fn wait_for(s: &mut Session, payload: &[u8], ok: &impl Fn(Via) -> bool) -> Result<bool, Failure> {
    let deadline = Instant::now() + ECHO_WAIT;
    // Bounded: every `recv_data` waits at most until the deadline.
    while let Some(r) = s.recv_data(deadline).map_err(tx("echo"))? {
        if r.data == payload && ok(r.via) {
            return Ok(true);
        }
    }
    Ok(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn echo(sent: u32, received: u32) -> Echo {
        Echo {
            sent,
            received,
            rtt_ms: vec![1.0; received as usize],
        }
    }

    #[test]
    fn every_echo_back_passes_without_a_warning() {
        let (ok, warning) = judge_echo("ChannelData", &echo(5, 5));
        assert!(ok);
        assert!(warning.is_none());
    }

    #[test]
    fn one_echo_back_of_five_passes_and_warns_with_the_count() {
        let (ok, warning) = judge_echo("ChannelData", &echo(5, 1));
        assert!(ok, "one round trip shows the path works both ways");
        let w = warning.expect("a warning for the four lost");
        assert_eq!(w.code, "echo_loss");
        assert!(
            w.message
                .starts_with("4 of 5 payloads sent via ChannelData"),
            "{}",
            w.message
        );
    }

    #[test]
    fn no_echo_back_fails() {
        let (ok, warning) = judge_echo("Send/Data indications", &echo(5, 0));
        assert!(!ok);
        assert!(
            warning.is_none(),
            "the failure's diagnosis says it, not a warning"
        );
    }
}
