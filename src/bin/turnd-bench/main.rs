//! `turnd-bench`: a load generator and meter for any TURN server over UDP on loopback.
//!
//! It opens `--clients` allocations, each with a peer socket of its own in this process,
//! binds channels (`--mode channel`) or uses Send/Data indications (`--mode send`), offers a
//! fixed load (`--rate`) or floods (`--flood`), and reports offered and delivered datagrams/s,
//! loss, round-trip p50/p99 and — with `--server-pid` — the server's CPU time per relayed
//! datagram and its RSS. `--setup-only N` instead measures the server's CPU and memory per
//! allocation. With `--server-pid` it also splits the server's CPU into user and system time
//! and counts its context switches (wake-ups), and it always reports its own CPU per datagram
//! (`generator_cpu_us_per_datagram`), to show it is not what limits a flood. Only loopback addresses are used; every loop is bounded in count and time.

mod batch;
mod client;
mod load;
mod null_server;
mod stats;

use anyhow::{bail, Context, Result};
use batch::Scratch;
use clap::{Parser, ValueEnum};
use client::{Client, Creds, FIRST_CHANNEL};
use load::{Flow, Mode, Offer};
use stats::{ProcSample, SplitPer};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

#[derive(Clone, Copy, Debug, ValueEnum)]
enum ModeArg {
    Channel,
    Send,
}

#[derive(Parser, Debug)]
#[command(
    name = "turnd-bench",
    about = "Load and measure a TURN server on loopback"
)]
struct Args {
    /// The TURN server (UDP), on loopback.
    #[arg(long, default_value = "127.0.0.1:3478")]
    server: SocketAddr,
    #[arg(long)]
    user: String,
    #[arg(long)]
    password: String,
    /// The realm to key the credentials with; the server's (from the first 401) when absent.
    #[arg(long)]
    realm: Option<String>,
    /// Client allocations carrying traffic.
    #[arg(long, default_value_t = 1)]
    clients: usize,
    #[arg(long, value_enum, default_value_t = ModeArg::Channel)]
    mode: ModeArg,
    /// Offered load: datagrams per second over all clients.
    #[arg(long, default_value_t = 10_000)]
    rate: u64,
    /// Flood instead of a fixed rate (at most --window datagrams in flight per client).
    #[arg(long)]
    flood: bool,
    #[arg(long, default_value_t = 64)]
    window: u64,
    /// Application payload bytes per datagram (at least 12).
    #[arg(long, default_value_t = 160)]
    size: usize,
    /// Seconds of offered load.
    #[arg(long, default_value_t = 5.0)]
    duration: f64,
    /// The server's PID, for CPU time per datagram and RSS from /proc.
    #[arg(long)]
    server_pid: Option<u32>,
    /// Only create N allocations (with a permission each), and measure CPU and RSS per
    /// allocation.
    #[arg(long)]
    setup_only: Option<usize>,
    /// With --setup-only: clients setting up side by side. Each step (Allocate, authenticated
    /// Allocate, CreatePermission) is sent for this many clients before their answers are
    /// awaited, as when a burst of clients arrives together; 1 is one client after another.
    #[arg(long, default_value_t = 1)]
    setup_concurrency: usize,
    /// Scale: before the load, open N more allocations (a permission each) and hold them,
    /// idle, while the --clients flows carry traffic; afterwards each is refreshed, and any
    /// that is gone counts as an error. Needs about N open files here and in the server.
    #[arg(long, default_value_t = 0)]
    hold: usize,
    /// Most datagrams per system call in the generator (1–64): a flow's burst is one
    /// `sendmmsg`, a readable socket is drained by `recvmmsg`. 1 is one call per datagram.
    #[arg(long, default_value_t = batch::MAX_BATCH)]
    batch: usize,
    /// Send the clients' bursts as plain `sendmmsg`, without UDP GSO.
    #[arg(long)]
    no_gso: bool,
    /// Let the peers echo a batch of one size as GSO sends too. Off by default: it makes the
    /// peer→server direction arrive in bursts of up to 64 at once as well, which favours a
    /// batching server more than a real peer would (see docs/performance.md).
    #[arg(long)]
    echo_gso: bool,
    /// The loopback address the client and peer sockets bind to. One address offers only the
    /// kernel's ephemeral ports (`net.ipv4.ip_local_port_range`, ~28,000 by default), so
    /// generators that together hold more allocations each take an address of their own.
    #[arg(long, default_value_t = IpAddr::V4(Ipv4Addr::LOCALHOST))]
    client_ip: IpAddr,
    /// Run no load: be the "null server" on this loopback address — the kernel work of
    /// allocations and relaying and next to nothing else, trusting every request (see
    /// null_server.rs); answers are signed with --user/--password in realm "bench".
    #[arg(long)]
    null_server: Option<SocketAddr>,
    /// No server: each client sends its ChannelData datagrams straight to its own peer socket,
    /// which echoes them back as usual — the generator's whole cost with a relay that costs
    /// nothing. benches/xdp.sh subtracts it from the machine's CPU under each server (the
    /// issue's "generator against an idle target"). Channel mode only; --server is not used.
    #[arg(long)]
    direct: bool,
    /// Print one JSON object instead of a table.
    #[arg(long)]
    json: bool,
    /// Also accept a --server and --client-ip in the private IPv4 ranges (RFC 1918), for a
    /// link between network namespaces on this host (benches/xdp.sh: the XDP fast path needs
    /// a real interface, not loopback). Still never a public address.
    #[arg(long)]
    namespace_link: bool,
}

/// Most round-trip samples kept (4 MB).
const RTT_CAP: usize = 1 << 20;
/// Most allocations one run opens.
const MAX_ALLOCATIONS: usize = 100_000;

fn main() -> Result<()> {
    let a = Args::parse();
    if let Some(listen) = a.null_server {
        return null_server::run(listen, &a.user, &a.password, a.namespace_link);
    }
    // --hold and --setup-only need a socket per allocation.
    let _ = turnd::shell::raise_nofile_limit();
    let local = |ip: IpAddr| {
        ip.is_loopback() || (a.namespace_link && matches!(ip, IpAddr::V4(v4) if v4.is_private()))
    };
    if !local(a.server.ip()) {
        bail!(
            "--server must be a loopback address (this tool only loads loopback; with \
             --namespace-link, a private IPv4 address too)"
        );
    }
    if !local(a.client_ip) || a.client_ip.is_ipv4() != a.server.is_ipv4() {
        bail!("--client-ip must be a loopback address of the --server's family");
    }
    if a.size > 1400 {
        bail!("--size must be at most 1400");
    }
    if !(1..=batch::MAX_BATCH).contains(&a.batch) {
        bail!("--batch must be 1–{}", batch::MAX_BATCH);
    }
    if !(0.0..=3600.0).contains(&a.duration) {
        bail!("--duration must be 0–3600 s");
    }
    let creds = Creds {
        realm: a.realm.clone(),
        ..Creds::new(&a.user, &a.password)
    };
    match a.setup_only {
        Some(n) => setup_only(&a, &creds, n),
        None => traffic(&a, &creds),
    }
}

/// The server's user/system/wake-up split per unit between two samples.
fn split(before: Option<ProcSample>, after: Option<ProcSample>, units: u64) -> Option<SplitPer> {
    let (b, e) = (before?, after?);
    stats::split_per(b.split, e.split, units, stats::clock_ticks_per_sec())
}

fn sample(pid: Option<u32>) -> Result<Option<ProcSample>> {
    pid.map(stats::sample).transpose()
}

/// Pairs of (name, value) printed as a table or as JSON; `None` values print as "-"/null.
struct Report(Vec<(&'static str, Option<f64>)>);

impl Report {
    fn print(&self, json: bool) {
        if json {
            let body: Vec<String> = self
                .0
                .iter()
                .map(|(k, v)| match v {
                    Some(v) if v.is_finite() => format!("\"{k}\":{v}"),
                    _ => format!("\"{k}\":null"),
                })
                .collect();
            println!("{{{}}}", body.join(","));
        } else {
            for (k, v) in &self.0 {
                match v {
                    Some(v) => println!("{k:<32} {v:>14.3}"),
                    None => println!("{k:<32} {:>14}", "-"),
                }
            }
        }
    }
}

fn traffic(a: &Args, creds: &Creds) -> Result<()> {
    if a.clients == 0 || a.clients > 4096 {
        bail!("--clients must be 1–4096");
    }
    if !a.flood && a.rate == 0 {
        bail!("--rate must be positive");
    }
    let mode = match a.mode {
        ModeArg::Channel => Mode::Channel,
        ModeArg::Send => Mode::Send,
    };
    if a.direct && (mode != Mode::Channel || a.hold > 0) {
        bail!("--direct takes neither --mode send nor --hold");
    }
    let held = hold(a, creds)?;
    let mut flows = Vec::with_capacity(a.clients);
    for i in 0..a.clients {
        let peer = UdpSocket::bind(SocketAddr::new(a.client_ip, 0))?;
        let peer_addr = peer.local_addr()?;
        let channel = FIRST_CHANNEL;
        let c = if a.direct {
            Client::direct(peer_addr, a.client_ip)?
        } else {
            let mut c = Client::allocate(a.server, a.client_ip, creds)
                .with_context(|| format!("client {i}"))?;
            match mode {
                Mode::Channel => c.channel_bind(channel, peer_addr)?,
                Mode::Send => c.create_permission(peer_addr)?,
            }
            c
        };
        flows.push(Flow::new(c, peer, channel, mode, a.size, !a.no_gso)?);
    }
    let offer = if a.flood {
        Offer::Flood { window: a.window }
    } else {
        Offer::Rate(a.rate)
    };
    let gso = flows.iter().all(|f| f.gso());
    let mut io = Scratch::new(a.batch, a.echo_gso);
    let before = sample(a.server_pid)?;
    let counts = load::run(
        &mut flows,
        mode,
        offer,
        Duration::from_secs_f64(a.duration),
        Duration::from_millis(500),
        RTT_CAP,
        &mut io,
    )?;
    let after = sample(a.server_pid)?;
    let fds = a.server_pid.and_then(stats::open_fds);
    for f in flows.iter_mut().filter(|_| !a.direct) {
        // Best effort: a server that lost the allocation already is no error here.
        f.client.sock.set_nonblocking(false)?;
        let _ = f.client.release();
    }
    let (held_count, held_setup_per_s) = (held.clients.len(), held.setup_per_s);
    let hold_errors = held.finish();

    let mut rtt = counts.rtt_us;
    rtt.sort_unstable();
    let relayed = counts.peer_received + counts.client_received;
    let w = counts.send_window;
    let cpu = match (before, after) {
        (Some(b), Some(e)) => stats::cpu_us_per(b, e, relayed),
        _ => None,
    };
    let split = split(before, after, relayed);
    let gen_us = (counts.generator_user_us + counts.generator_sys_us) as f64;
    let per = |us: u64| (relayed > 0).then(|| us as f64 / relayed as f64);
    Report(vec![
        ("clients", Some(a.clients as f64)),
        ("offered_pps", Some(stats::rate(counts.sent, w))),
        (
            "relayed_to_peer_pps",
            Some(stats::rate(counts.peer_received, w)),
        ),
        (
            "delivered_round_trip_pps",
            Some(stats::rate(counts.client_received, w)),
        ),
        ("relayed_both_directions_pps", Some(stats::rate(relayed, w))),
        (
            "loss_pct",
            Some(stats::loss_pct(counts.sent, counts.client_received)),
        ),
        ("rtt_p50_us", stats::percentile(&rtt, 50.0).map(f64::from)),
        ("rtt_p99_us", stats::percentile(&rtt, 99.0).map(f64::from)),
        ("server_cpu_us_per_datagram", cpu),
        ("server_rss_kb", after.map(|s| s.rss_bytes as f64 / 1024.0)),
        ("server_user_us_per_datagram", split.map(|p| p.user_us)),
        ("server_sys_us_per_datagram", split.map(|p| p.sys_us)),
        ("server_wakeups_per_datagram", split.map(|p| p.wakeups)),
        (
            "generator_cpu_us_per_datagram",
            per(counts.generator_user_us + counts.generator_sys_us),
        ),
        (
            "generator_user_us_per_datagram",
            per(counts.generator_user_us),
        ),
        (
            "generator_sys_us_per_datagram",
            per(counts.generator_sys_us),
        ),
        (
            "generator_cpu_pct",
            Some(100.0 * gen_us / 1e6 / counts.wall.as_secs_f64().max(1e-9)),
        ),
        ("generator_batch", Some(a.batch as f64)),
        ("generator_gso", Some(f64::from(u8::from(gso)))),
        ("generator_echo_gso", Some(f64::from(u8::from(a.echo_gso)))),
        // What the send paths really did (`batch::SendCounts`): GSO and sendmmsg calls that
        // carried two or more datagrams, and how many they carried.
        ("generator_gso_sends", Some(io.sends.gso_sends as f64)),
        (
            "generator_gso_datagrams",
            Some(io.sends.gso_datagrams as f64),
        ),
        ("generator_mmsg_sends", Some(io.sends.mmsg_sends as f64)),
        (
            "generator_mmsg_datagrams",
            Some(io.sends.mmsg_datagrams as f64),
        ),
        (
            "generator_echo_gso_sends",
            Some(io.sends.echo_gso_sends as f64),
        ),
        (
            "generator_echo_gso_datagrams",
            Some(io.sends.echo_gso_datagrams as f64),
        ),
        // The counts behind the rates above, for exact comparisons.
        ("sent", Some(counts.sent as f64)),
        ("peer_received", Some(counts.peer_received as f64)),
        ("client_received", Some(counts.client_received as f64)),
        ("held_allocations", Some(held_count as f64)),
        ("held_setup_per_s", held_setup_per_s),
        ("held_errors", Some(hold_errors as f64)),
        ("server_open_fds", fds.map(|n| n as f64)),
    ])
    .print(a.json);
    if hold_errors > 0 {
        bail!("{hold_errors} held allocations were lost or refused");
    }
    Ok(())
}

/// The idle allocations of `--hold`.
struct Held {
    clients: Vec<Client>,
    setup_per_s: Option<f64>,
}

impl Held {
    /// Refreshes every held allocation (proving it is still there), then releases it;
    /// returns how many failed.
    fn finish(mut self) -> usize {
        let mut errors = 0;
        for c in &mut self.clients {
            if c.refresh(600).is_err() {
                errors += 1;
            }
            let _ = c.release();
        }
        errors
    }
}

fn hold(a: &Args, creds: &Creds) -> Result<Held> {
    if a.hold > MAX_ALLOCATIONS {
        bail!("--hold must be at most {MAX_ALLOCATIONS}");
    }
    let peer = UdpSocket::bind(SocketAddr::new(a.client_ip, 0))?;
    let peer_addr = peer.local_addr()?;
    let t0 = Instant::now();
    let mut clients = Vec::with_capacity(a.hold);
    for i in 0..a.hold {
        let mut c = Client::allocate(a.server, a.client_ip, creds)
            .with_context(|| format!("held allocation {i}"))?;
        c.create_permission(peer_addr)
            .with_context(|| format!("held allocation {i}"))?;
        clients.push(c);
    }
    let setup_per_s = (a.hold > 0).then(|| stats::rate(a.hold as u64, t0.elapsed()));
    Ok(Held {
        clients,
        setup_per_s,
    })
}

fn setup_only(a: &Args, creds: &Creds, n: usize) -> Result<()> {
    if n == 0 || n > MAX_ALLOCATIONS {
        bail!("--setup-only must be 1–{MAX_ALLOCATIONS}");
    }
    if !(1..=1000).contains(&a.setup_concurrency) {
        bail!("--setup-concurrency must be 1–1000");
    }
    // One peer socket stands for every allocation's peer: only the permission matters here.
    let peer = UdpSocket::bind(SocketAddr::new(a.client_ip, 0))?;
    let peer_addr = peer.local_addr()?;
    let before = sample(a.server_pid)?;
    let t0 = Instant::now();
    let mut clients = Vec::with_capacity(n);
    let k = a.setup_concurrency;
    while clients.len() < n {
        let i = clients.len();
        if k == 1 {
            let mut c = Client::allocate(a.server, a.client_ip, creds)
                .with_context(|| format!("allocation {i}"))?;
            c.create_permission(peer_addr)
                .with_context(|| format!("allocation {i}"))?;
            clients.push(c);
        } else {
            let wave = k.min(n - i);
            clients.extend(
                Client::allocate_many(a.server, a.client_ip, creds, wave, peer_addr)
                    .with_context(|| format!("allocations {i}–{}", i + wave - 1))?,
            );
        }
    }
    let setup_time = t0.elapsed();
    let after = sample(a.server_pid)?;
    // Hold them a moment so lazily allocated memory shows in RSS.
    std::thread::sleep(Duration::from_secs(1));
    let held = sample(a.server_pid)?;
    let mut released = 0u64;
    for c in &mut clients {
        if c.release().is_ok() {
            released += 1;
        }
    }
    let cpu = match (before, after) {
        (Some(b), Some(e)) => stats::cpu_us_per(b, e, n as u64),
        _ => None,
    };
    let split = split(before, after, n as u64);
    let rss_per = match (before, held) {
        (Some(b), Some(h)) => Some((h.rss_bytes as f64 - b.rss_bytes as f64) / n as f64 / 1024.0),
        _ => None,
    };
    Report(vec![
        ("allocations", Some(n as f64)),
        ("setup_concurrency", Some(k as f64)),
        ("setup_per_s", Some(stats::rate(n as u64, setup_time))),
        ("server_cpu_us_per_allocation", cpu),
        ("server_rss_kb_per_allocation", rss_per),
        ("server_user_us_per_allocation", split.map(|p| p.user_us)),
        ("server_sys_us_per_allocation", split.map(|p| p.sys_us)),
        ("server_wakeups_per_allocation", split.map(|p| p.wakeups)),
        (
            "server_rss_kb_before",
            before.map(|s| s.rss_bytes as f64 / 1024.0),
        ),
        (
            "server_rss_kb_held",
            held.map(|s| s.rss_bytes as f64 / 1024.0),
        ),
        ("released", Some(released as f64)),
    ])
    .print(a.json);
    Ok(())
}
