//! The kernel fast path relaying end to end (docs/xdp.md, steps 3–5): established channels go
//! through the XDP program both ways with nothing lost and every counter exact, in generic and
//! native mode, over IPv4 and IPv6; what the program does not know still works through user
//! space in the same run; deleting the allocation, a reload that denies the peer and the
//! allocation's end stop traffic at once; two clients of one server reach each other through
//! the hairpin; a channel beyond the maps' bound takes user space.
//!
//! Three namespaces, the relay between two links, so the program's FIB lookup picks another
//! interface and the frames leave with `bpf_redirect`:
//!
//! ```text
//!   cli 10.78.1.2, fd78:1::2 ── 10.78.1.1, fd78:1::1 relay 10.78.2.1, fd78:2::1 ── 10.78.2.2, fd78:2::2 peer
//!                              (listen)                (relay addresses)
//! ```
//!
//! The client is the library's own TURN client as turnd-bench drives it (one blocking socket);
//! ChannelData and Send indications are written by hand. Also coturn's turnutils_uclient and
//! turnutils_peer.
//!
//! Needs root, `ip`, coturn's turnutils, and a kernel with XDP links and BTF (5.18 or later); a
//! missing one fails the test, never skips it. Built only with `--features external,xdp`
//! (`.ci/run` does): the binary under test must carry the program.

mod common;

use common::netns::{self, ip, run_in, Namespaces, COMMAND_TIMEOUT};
use common::{http_body, http_get, require_tool, Proc};
use std::net::{SocketAddr, UdpSocket};
use std::process::Command;
use std::time::{Duration, Instant};

#[allow(dead_code)]
#[path = "../src/bin/turnd-bench/client.rs"]
mod bench_client;

use std::io::Write as _;

/// aiortc relay-only through the kernel path (`tests/xdp_relay/aiortc.rs`).
#[path = "xdp_relay/aiortc.rs"]
mod aiortc;

struct Relaying {
    ns: Namespaces,
    relay: String,
    cli: String,
    peer: String,
    /// Other turnd processes holding an XDP program on the client's and peer's veths
    /// (native mode: a veth only takes redirected frames when its peer runs XDP).
    _receivers: Vec<Proc>,
}

fn mac(ns: &str, dev: &str) -> String {
    let out = Command::new("ip")
        .args(["-n", ns, "-j", "link", "show", dev])
        .output()
        .expect("run ip");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("ip -j");
    v[0]["address"].as_str().expect("a MAC address").to_string()
}

fn relaying_topology(mode: &str) -> Relaying {
    netns::require_root("xdp.rs", "network namespaces and XDP programs");
    let ns = Namespaces::create("xdpr", &["relay", "cli", "peer"]);
    let (relay, cli, peer) = (ns.name("relay"), ns.name("cli"), ns.name("peer"));
    netns::veth(&relay, "veth-rc", &cli, "veth-c");
    netns::veth(&relay, "veth-rp", &peer, "veth-p");
    for (n, dev, v6) in [
        (&relay, "veth-rc", "fd78:1::1/64"),
        (&cli, "veth-c", "fd78:1::2/64"),
        (&relay, "veth-rp", "fd78:2::1/64"),
        (&peer, "veth-p", "fd78:2::2/64"),
    ] {
        ip(n, &format!("addr add {v6} dev {dev} nodad"));
    }
    netns::address(&relay, "veth-rc", "10.78.1.1/24");
    netns::address(&cli, "veth-c", "10.78.1.2/24");
    netns::address(&relay, "veth-rp", "10.78.2.1/24");
    netns::address(&peer, "veth-p", "10.78.2.2/24");
    // The FIB lookup needs forwarding on the ingress interfaces (docs/xdp.md), and a
    // neighbour entry to give a MAC address: static ones, so no datagram waits for ARP/ND.
    for key in [
        "net.ipv4.conf.all.forwarding=1",
        "net.ipv6.conf.all.forwarding=1",
    ] {
        netns::in_ns(&relay, "sysctl", &["-qw", key]);
    }
    let (mc, mp) = (mac(&cli, "veth-c"), mac(&peer, "veth-p"));
    for (addr, m, dev) in [
        ("10.78.1.2", &mc, "veth-rc"),
        ("fd78:1::2", &mc, "veth-rc"),
        ("10.78.2.2", &mp, "veth-rp"),
        ("fd78:2::2", &mp, "veth-rp"),
    ] {
        ip(
            &relay,
            &format!("neigh replace {addr} lladdr {m} dev {dev} nud permanent"),
        );
    }
    tx_checksum_off(&cli, "veth-c");
    tx_checksum_off(&peer, "veth-p");
    let mut receivers = Vec::new();
    if mode == "native" {
        for (n, addr) in [(&cli, "10.78.1.2:3479"), (&peer, "10.78.2.2:3479")] {
            let (p, _) =
                netns::spawn_turnd(n, &["--listen", addr, "--user", "a:b", "--xdp", "native"]);
            receivers.push(p);
        }
    }
    Relaying {
        ns,
        relay,
        cli,
        peer,
        _receivers: receivers,
    }
}

/// Turns transmit checksum offload off on `dev` in `ns` (what `ethtool -K DEV tx off` does,
/// through the same ioctl). A veth otherwise hands its peer datagrams whose UDP checksum field
/// holds only the pseudo-header's partial sum, to be completed by "hardware" that never runs:
/// the stack accepts them as already checked, but the program's incremental update turns them
/// into datagrams with a wrong checksum. Frames from a real network carry full checksums.
fn tx_checksum_off(ns: &str, dev: &str) {
    #[repr(C)]
    struct EthtoolValue {
        cmd: u32,
        data: u32,
    }
    #[repr(C)]
    struct IfReq {
        name: [u8; 16],
        data: *mut libc::c_void,
        _pad: [u8; 16],
    }
    const ETHTOOL_STXCSUM: u32 = 0x17;
    run_in(ns, || {
        let sock = UdpSocket::bind("0.0.0.0:0").expect("a socket for the ioctl");
        let mut value = EthtoolValue {
            cmd: ETHTOOL_STXCSUM,
            data: 0,
        };
        let mut req = IfReq {
            name: [0; 16],
            data: (&mut value as *mut EthtoolValue).cast(),
            _pad: [0; 16],
        };
        req.name[..dev.len()].copy_from_slice(dev.as_bytes());
        use std::os::fd::AsRawFd;
        // SAFETY: SIOCETHTOOL with an ifreq whose data points at an ethtool_value we own,
        // both alive for the call.
        let rc = unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCETHTOOL, &mut req) };
        assert_eq!(
            rc,
            0,
            "ETHTOOL_STXCSUM {dev}: {}",
            std::io::Error::last_os_error()
        );
    });
}

/// turnd in the relay namespace with the peer filter in a file (so a reload can change it).
fn relaying_turnd(
    t: &Relaying,
    mode: &str,
    config: &std::path::Path,
    extra: &[&str],
) -> (Proc, SocketAddr) {
    relaying_turnd_with_env(t, mode, config, extra, &[])
}

/// [`relaying_turnd`] with `env` set for turnd (a debug build's test hooks).
fn relaying_turnd_with_env(
    t: &Relaying,
    mode: &str,
    config: &std::path::Path,
    extra: &[&str],
    env: &[(&str, &str)],
) -> (Proc, SocketAddr) {
    std::fs::write(
        config,
        "allow_peers = [\"10.78.2.0/24\", \"fd78:2::/64\"]\n",
    )
    .expect("write the config");
    let mut args = vec![
        "--config",
        config.to_str().expect("a UTF-8 path"),
        "--listen",
        "10.78.1.1:3478",
        "--listen",
        "[fd78:1::1]:3478",
        "--relay-ip",
        "10.78.2.1",
        "--relay-ip",
        "fd78:2::1",
        "--user",
        "alice:alice-pw",
        "--realm",
        "xdp.test",
        "--xdp",
        mode,
    ];
    args.extend_from_slice(extra);
    netns::spawn_turnd_with_env(&t.relay, env, &args)
}

fn channel_data(channel: u16, data: &[u8], pad: usize) -> Vec<u8> {
    let mut m = vec![(channel >> 8) as u8, channel as u8];
    m.extend_from_slice(&(data.len() as u16).to_be_bytes());
    m.extend_from_slice(data);
    m.extend(std::iter::repeat_n(0u8, pad));
    m
}

/// A Send indication (RFC 8656 §11.1) to `peer` with `data`: XOR-PEER-ADDRESS and DATA.
fn send_indication(peer: SocketAddr, data: &[u8]) -> Vec<u8> {
    const COOKIE: [u8; 4] = [0x21, 0x12, 0xa4, 0x42];
    let mut attrs = Vec::new();
    let xport = (peer.port() ^ 0x2112).to_be_bytes();
    let (family, xaddr): (u8, Vec<u8>) = match peer.ip() {
        std::net::IpAddr::V4(a) => (
            1,
            a.octets().iter().zip(COOKIE).map(|(b, k)| b ^ k).collect(),
        ),
        std::net::IpAddr::V6(_) => panic!("IPv4 peers only here"),
    };
    attrs.extend_from_slice(&[0x00, 0x12, 0x00, 8, 0, family]);
    attrs.extend_from_slice(&xport);
    attrs.extend_from_slice(&xaddr);
    attrs.extend_from_slice(&[0x00, 0x13]);
    attrs.extend_from_slice(&(data.len() as u16).to_be_bytes());
    attrs.extend_from_slice(data);
    attrs.extend(std::iter::repeat_n(0u8, (4 - data.len() % 4) % 4));
    let mut m = vec![0x00, 0x16];
    m.extend_from_slice(&(attrs.len() as u16).to_be_bytes());
    m.extend_from_slice(&COOKIE);
    m.extend_from_slice(&[9; 12]);
    m.extend_from_slice(&attrs);
    m
}

/// An 8 MB receive buffer (SO_RCVBUFFORCE: the test is root), so a burst of N datagrams
/// waits in the socket rather than being dropped there. Frames relayed by generic XDP become
/// socket buffers with a larger truesize than the stack's own, so the default buffer holds
/// only about 50 of the burst: loss at the receiver that would say nothing about the relay.
fn big_receive_buffer(sock: &UdpSocket) {
    use std::os::fd::AsRawFd;
    let size: libc::c_int = 8 << 20;
    // SAFETY: setsockopt on a socket we own, with a c_int the size we pass.
    let rc = unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVBUFFORCE,
            (&size as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    assert_eq!(rc, 0, "SO_RCVBUFFORCE: {}", std::io::Error::last_os_error());
}

/// Up to `n` datagrams from `sock`, each within `wait` of the last.
fn receive(sock: &UdpSocket, n: usize, wait: Duration) -> Vec<Vec<u8>> {
    sock.set_read_timeout(Some(wait)).expect("timeout");
    let mut out = Vec::new();
    let mut buf = [0u8; 2048];
    // Bounded: n datagrams, or the first wait that passes without one.
    while out.len() < n {
        match sock.recv(&mut buf) {
            Ok(k) => out.push(buf[..k].to_vec()),
            Err(_) => break,
        }
    }
    out
}

/// The kernel path carries established channels both ways with nothing lost, counted exactly;
/// what it does not know still works through user space in the same run; deleting the
/// allocation and a reload that denies the peer stop traffic at once.
fn relays_in_the_kernel(mode: &str) {
    const N: usize = 200;
    let t = relaying_topology(mode);
    let _ = (&t.ns, &t.cli);
    let scratch = common::ScratchDir::new("xdp-relay");
    let config = scratch.path().join("turnd.toml");
    let (turnd, admin) = relaying_turnd(&t, mode, &config, &[]);
    let admin_metric = |series: &str| metric(&t, admin, series);
    let to_peer_xdp = "turnd_xdp_relayed_datagrams_total{direction=\"client_to_peer\"}";
    let to_client_xdp = "turnd_xdp_relayed_datagrams_total{direction=\"peer_to_client\"}";
    let to_peer_all =
        "turnd_relayed_datagrams_total{direction=\"client_to_peer\",transport=\"udp\"}";
    let to_client_all =
        "turnd_relayed_datagrams_total{direction=\"peer_to_client\",transport=\"udp\"}";
    let mut sent = 0u64;
    // Datagrams relayed through user space (the Send indication).
    let mut user = 0u64;
    for (server, local, peer_ip) in [
        ("10.78.1.1:3478", "10.78.1.2", "10.78.2.2"),
        ("[fd78:1::1]:3478", "fd78:1::2", "fd78:2::2"),
    ] {
        let server: SocketAddr = server.parse().unwrap();
        let peer_sock = run_in(&t.peer, || {
            UdpSocket::bind(SocketAddr::new(peer_ip.parse().unwrap(), 0)).expect("peer socket")
        });
        let peer = peer_sock.local_addr().unwrap();
        big_receive_buffer(&peer_sock);
        let creds = bench_client::Creds::new("alice", "alice-pw");
        let mut c = run_in(&t.cli, || {
            let family = if peer.is_ipv4() {
                turnd::stun::AddressFamily::V4
            } else {
                turnd::stun::AddressFamily::V6
            };
            let mut c = bench_client::Client::allocate_with(
                server,
                local.parse().unwrap(),
                &creds,
                &[turnd::client::Attr::RequestedAddressFamily(family)],
            )
            .expect("Allocate");
            c.channel_bind(0x4000, peer).expect("ChannelBind");
            c
        });
        big_receive_buffer(&c.sock);
        // Client → peer: N ChannelData, odd sizes padded or not, all arrive intact.
        for i in 0..N {
            let data = vec![i as u8; 1 + i % 97];
            c.sock
                .send(&channel_data(
                    0x4000,
                    &data,
                    if i % 2 == 0 {
                        0
                    } else {
                        (4 - data.len() % 4) % 4
                    },
                ))
                .expect("send ChannelData");
        }
        let got = receive(&peer_sock, N, Duration::from_secs(2));
        if got.len() != N {
            let snmp = Command::new("ip")
                .args(["netns", "exec", &t.peer, "cat", "/proc/net/snmp"])
                .output()
                .unwrap();
            eprintln!("peer snmp:\n{}", String::from_utf8_lossy(&snmp.stdout));
            let lens: Vec<usize> = got.iter().map(|d| d.len()).collect();
            eprintln!("got lens {lens:?}");
        }
        assert_eq!(
            got.len(),
            N,
            "received; metrics:\n{}",
            http_body(&run_in(&t.relay, || http_get(admin, "/metrics")))
                .lines()
                .filter(|l| l.contains("xdp") || l.contains("relayed") || l.contains("dropped"))
                .collect::<Vec<_>>()
                .join("\n")
        );
        for (i, d) in got.iter().enumerate() {
            assert_eq!(d, &vec![i as u8; 1 + i % 97], "datagram {i}");
        }
        // Peer → client: N datagrams, framed as ChannelData on channel 0x4000.
        for i in 0..N {
            peer_sock
                .send_to(&vec![(i * 7) as u8; 1 + i % 89], c.relay)
                .expect("send to the relayed address");
        }
        let got = receive(&c.sock, N, Duration::from_secs(2));
        assert_eq!(got.len(), N);
        for (i, d) in got.iter().enumerate() {
            assert_eq!(
                d,
                &channel_data(0x4000, &vec![(i * 7) as u8; 1 + i % 89], 0)
            );
        }
        sent += N as u64;
        // All of it in the kernel, and the totals count it once.
        assert_eq!(admin_metric(to_peer_xdp), Some(sent));
        assert_eq!(admin_metric(to_client_xdp), Some(sent));
        assert_eq!(admin_metric(to_peer_all), Some(sent + user));
        assert_eq!(admin_metric(to_client_all), Some(sent));
        // While the allocation lasts, the admin view (and the store's usage report, which is
        // computed from the same list) already holds what the kernel relayed for it.
        let list = http_body(&run_in(&t.relay, || http_get(admin, "/allocations"))).to_string();
        let list: serde_json::Value = serde_json::from_str(&list).expect("JSON");
        let mine = list["allocations"]
            .as_array()
            .expect("a list")
            .iter()
            .find(|a| a["relay"] == c.relay.to_string())
            .unwrap_or_else(|| panic!("no allocation for {} in {list}", c.relay));
        let live = |k: &str| mine[k].as_u64();
        assert_eq!(
            (
                live("client_to_peer_datagrams"),
                live("client_to_peer_bytes"),
                live("peer_to_client_datagrams"),
                live("peer_to_client_bytes"),
            ),
            (
                Some(N as u64),
                Some((0..N).map(|i| 1 + i % 97).sum::<usize>() as u64),
                Some(N as u64),
                Some((0..N).map(|i| 1 + i % 89).sum::<usize>() as u64),
            ),
            "{mine}"
        );

        if peer.is_ipv4() {
            // A Send indication goes through user space, in the same run.
            c.sock
                .send(&send_indication(peer, b"via send"))
                .expect("send");
            assert_eq!(
                receive(&peer_sock, 1, Duration::from_secs(2)),
                [b"via send".to_vec()]
            );
            user += 1;
            assert_eq!(admin_metric(to_peer_xdp), Some(sent));
            assert_eq!(admin_metric(to_peer_all), Some(sent + user));
            // Deleting the allocation stops both directions at once: the entries are gone
            // before the answer to the Refresh is sent.
            run_in(&t.cli, || c.release()).expect("Refresh 0");
            c.sock
                .send(&channel_data(0x4000, b"late", 0))
                .expect("send");
            peer_sock.send_to(b"late", c.relay).expect("send");
            assert!(receive(&peer_sock, 1, Duration::from_millis(300)).is_empty());
            assert!(receive(&c.sock, 1, Duration::from_millis(300)).is_empty());
            assert_eq!(admin_metric(to_peer_xdp), Some(sent));
            assert_eq!(admin_metric(to_client_xdp), Some(sent));
            // The allocation's own stats hold what the kernel relayed for it: its slot is
            // read into the end-of-allocation event (the log line here).
            let want = format!(
                "to_peer_packets={} to_peer_bytes={} to_client_packets={N}",
                N + 1,
                (0..N).map(|i| 1 + i % 97).sum::<usize>() + b"via send".len(),
            );
            let deadline = Instant::now() + COMMAND_TIMEOUT;
            // Bounded: one look per 20 ms until the deadline.
            while !turnd.output().contains(&want) {
                assert!(
                    Instant::now() < deadline,
                    "no `{want}` in:\n{}",
                    turnd.output()
                );
                std::thread::sleep(Duration::from_millis(20));
            }
        } else {
            // A reload that denies the peer stops the channel at once: once turnd says it
            // reloaded, every worker has taken the entries out.
            let mut f = std::fs::OpenOptions::new()
                .append(true)
                .open(&config)
                .expect("open the config");
            writeln!(f, "deny_peers = [\"fd78:2::2/128\"]").expect("write");
            drop(f);
            netns::run("kill", &["-HUP", &turnd.id().to_string()]);
            let deadline = Instant::now() + COMMAND_TIMEOUT;
            // Bounded: one look per 20 ms until the deadline.
            while !turnd.output().contains("configuration reloaded") {
                assert!(Instant::now() < deadline, "no reload: {}", turnd.output());
                std::thread::sleep(Duration::from_millis(20));
            }
            c.sock
                .send(&channel_data(0x4000, b"late", 0))
                .expect("send");
            peer_sock.send_to(b"late", c.relay).expect("send");
            assert!(receive(&peer_sock, 1, Duration::from_millis(300)).is_empty());
            assert!(receive(&c.sock, 1, Duration::from_millis(300)).is_empty());
            assert_eq!(admin_metric(to_peer_xdp), Some(sent));
            assert_eq!(admin_metric(to_client_xdp), Some(sent));
        }
    }
    drop(turnd);
    drop(t);
}

#[test]
fn generic_mode_relays_in_the_kernel() {
    relays_in_the_kernel("generic");
}

#[test]
fn native_mode_relays_in_the_kernel() {
    relays_in_the_kernel("native");
}

/// A number after `key` in `line` (`tot_send_msgs=100,` → 100).
fn number_after(line: &str, key: &str) -> Option<u64> {
    let rest = &line[line.find(key)? + key.len()..];
    rest.split(|c: char| !c.is_ascii_digit())
        .next()?
        .parse()
        .ok()
}

/// Runs `turnutils_uclient` from the client namespace against turnd on the relay with an
/// echo peer (`turnutils_peer`) in the peer namespace; asserts every message came back, and
/// returns how many it sent.
fn uclient(t: &Relaying, flags: &[&str]) -> u64 {
    let uclient = require_tool("turnutils_uclient");
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", &t.cli])
        .arg(uclient)
        .arg("-v")
        .args(flags)
        .args([
            "-u",
            "alice",
            "-w",
            "alice-pw",
            "-e",
            "10.78.2.2",
            "-r",
            "3480",
        ])
        .args([
            "-n",
            "100",
            "-m",
            "2",
            "-l",
            "170",
            "-p",
            "3478",
            "10.78.1.1",
        ]);
    let (status, out) = common::run_tool("turnutils_uclient", cmd, Duration::from_secs(60));
    assert!(
        status.success(),
        "turnutils_uclient {flags:?}: {status}\n{out}"
    );
    let totals = out
        .lines()
        .rev()
        .find(|l| l.contains("tot_send_msgs=") && !l.contains("msz="))
        .unwrap_or_else(|| panic!("no totals:\n{out}"));
    let lost = out
        .lines()
        .rev()
        .find(|l| l.contains("Total lost packets"))
        .unwrap_or_else(|| panic!("no losses line:\n{out}"));
    let sent = number_after(totals, "tot_send_msgs=").expect("sent");
    assert_eq!(number_after(totals, "tot_recv_msgs="), Some(sent), "{out}");
    assert_eq!(number_after(lost, "Total lost packets "), Some(0), "{out}");
    sent
}

/// coturn's own client in channel mode through the kernel path: nothing lost, every echo
/// relayed by the kernel, each datagram counted once; then a TCP client in the same run goes
/// through user space.
#[test]
fn turnutils_uclient_channels_go_through_the_kernel() {
    let t = relaying_topology("generic");
    let scratch = common::ScratchDir::new("xdp-uclient");
    let (_turnd, admin) = relaying_turnd(&t, "generic", &scratch.path().join("turnd.toml"), &[]);
    let mut peer = Command::new("ip");
    peer.args(["netns", "exec", &t.peer])
        .arg(require_tool("turnutils_peer"))
        .args(["-L", "10.78.2.2", "-p", "3480"]);
    let _peer = Proc::spawn("turnutils_peer", peer);
    // Up once it echoes a probe (bounded: 50 probes, 100 ms each).
    let up = run_in(&t.peer, || {
        let probe = UdpSocket::bind("10.78.2.2:0").expect("probe");
        probe
            .set_read_timeout(Some(Duration::from_millis(100)))
            .expect("timeout");
        let mut buf = [0u8; 64];
        (0..50).any(|_| {
            let _ = probe.send_to(b"probe", "10.78.2.2:3480");
            probe.recv(&mut buf).is_ok_and(|n| &buf[..n] == b"probe")
        })
    });
    assert!(up, "turnutils_peer did not echo");
    let metric = |series: &str| metric(&t, admin, series).unwrap_or(0);
    let sent = uclient(&t, &[]);
    assert!(sent > 0);
    let (xdp_up, xdp_down) = (
        metric("turnd_xdp_relayed_datagrams_total{direction=\"client_to_peer\"}"),
        metric("turnd_xdp_relayed_datagrams_total{direction=\"peer_to_client\"}"),
    );
    let (all_up, all_down) = (
        metric("turnd_relayed_datagrams_total{direction=\"client_to_peer\",transport=\"udp\"}"),
        metric("turnd_relayed_datagrams_total{direction=\"peer_to_client\",transport=\"udp\"}"),
    );
    let dump = || {
        let raw = run_in(&t.relay, || http_get(admin, "/metrics"));
        http_body(&raw)
            .lines()
            .filter(|l| l.starts_with("turnd_xdp") || l.starts_with("turnd_relayed"))
            .collect::<Vec<_>>()
            .join("\n")
    };
    // Every echo came back through the kernel (the channel is bound before the peer
    // answers). Towards the peer uclient sends Send indications until its ChannelBind is
    // answered, and how many depends on timing: those take user space, the rest the kernel,
    // and the total counts each once.
    assert_eq!((all_up, all_down), (sent, sent), "{}", dump());
    assert_eq!(xdp_down, sent, "{}", dump());
    assert!(xdp_up <= all_up, "{}", dump());
    // A TCP client: ChannelData framed in a stream, relayed by user space only.
    let sent_tcp = uclient(&t, &["-t"]);
    assert!(sent_tcp > 0);
    assert_eq!(
        metric("turnd_xdp_relayed_datagrams_total{direction=\"client_to_peer\"}"),
        xdp_up
    );
    assert!(
        metric("turnd_relayed_datagrams_total{direction=\"client_to_peer\",transport=\"tcp\"}")
            >= sent_tcp
    );
}

/// The kernel's maps are bounded (`xdp_max_channels`): a channel that finds them full is
/// relayed by user space, as if there were no fast path, and nothing is lost.
#[test]
fn channels_beyond_the_maps_bound_take_user_space() {
    let t = relaying_topology("generic");
    let scratch = common::ScratchDir::new("xdp-bound");
    let (_turnd, admin) = relaying_turnd(
        &t,
        "generic",
        &scratch.path().join("turnd.toml"),
        &["--xdp-max-channels", "2", "--workers", "1"],
    );
    let peers: Vec<UdpSocket> = (0..3)
        .map(|_| {
            let s = run_in(&t.peer, || {
                UdpSocket::bind("10.78.2.2:0").expect("peer socket")
            });
            big_receive_buffer(&s);
            s
        })
        .collect();
    let creds = bench_client::Creds::new("alice", "alice-pw");
    let c = run_in(&t.cli, || {
        let mut c = bench_client::Client::allocate(
            "10.78.1.1:3478".parse().unwrap(),
            "10.78.1.2".parse().unwrap(),
            &creds,
        )
        .expect("Allocate");
        for (i, p) in peers.iter().enumerate() {
            c.channel_bind(0x4000 + i as u16, p.local_addr().unwrap())
                .expect("ChannelBind");
        }
        c
    });
    for round in 0..10u8 {
        for i in 0..3u16 {
            c.sock
                .send(&channel_data(0x4000 + i, &[round, i as u8], 0))
                .expect("send");
        }
    }
    for (i, p) in peers.iter().enumerate() {
        let got = receive(p, 10, Duration::from_secs(2));
        let want: Vec<Vec<u8>> = (0..10u8).map(|r| vec![r, i as u8]).collect();
        assert_eq!(got, want, "channel {i}");
    }
    let raw = run_in(&t.relay, || http_get(admin, "/metrics"));
    let value = |series: &str| {
        http_body(&raw).lines().find_map(|l| {
            let (name, v) = l.rsplit_once(' ')?;
            (name == series).then(|| v.parse::<u64>().ok())?
        })
    };
    // Two channels fit the maps; the third's install was refused and user space relays it.
    assert_eq!(
        value("turnd_xdp_relayed_datagrams_total{direction=\"client_to_peer\"}"),
        Some(20)
    );
    assert_eq!(
        value("turnd_relayed_datagrams_total{direction=\"client_to_peer\",transport=\"udp\"}"),
        Some(30)
    );
    assert_eq!(
        value("turnd_xdp_passed_total{reason=\"no_entry\"}"),
        Some(10)
    );
    assert_eq!(
        value("turnd_xdp_installs_skipped_total{reason=\"map_full\"}"),
        Some(1)
    );
}

/// Two clients of this relay talking through it, each with a channel to the other's relayed
/// address (what two relay-only WebRTC peers on one TURN server do): the kernel carries each
/// datagram from one client to the other in one step, and counts it once in each direction,
/// as the user-space path would.
fn hairpins_in_the_kernel(mode: &str) {
    const N: usize = 100;
    let t = relaying_topology(mode);
    let scratch = common::ScratchDir::new("xdp-hairpin");
    let (turnd, admin) = relaying_turnd(&t, mode, &scratch.path().join("turnd.toml"), &[]);
    let server: SocketAddr = "10.78.1.1:3478".parse().unwrap();
    let creds = bench_client::Creds::new("alice", "alice-pw");
    let (a, b) = run_in(&t.cli, || {
        let local = "10.78.1.2".parse().unwrap();
        let mut a = bench_client::Client::allocate(server, local, &creds).expect("Allocate A");
        let mut b = bench_client::Client::allocate(server, local, &creds).expect("Allocate B");
        a.channel_bind(0x4001, b.relay).expect("ChannelBind A→B");
        b.channel_bind(0x4002, a.relay).expect("ChannelBind B→A");
        (a, b)
    });
    big_receive_buffer(&a.sock);
    big_receive_buffer(&b.sock);
    for i in 0..N {
        let data = vec![i as u8; 1 + i % 61];
        a.sock
            .send(&channel_data(0x4001, &data, (4 - data.len() % 4) % 4))
            .expect("send A");
        b.sock
            .send(&channel_data(0x4002, &data, 0))
            .expect("send B");
    }
    let at_b = receive(&b.sock, N, Duration::from_secs(2));
    let at_a = receive(&a.sock, N, Duration::from_secs(2));
    assert_eq!((at_a.len(), at_b.len()), (N, N), "{}", turnd.output());
    for i in 0..N {
        let data = vec![i as u8; 1 + i % 61];
        assert_eq!(at_b[i], channel_data(0x4002, &data, 0), "A→B {i}");
        assert_eq!(at_a[i], channel_data(0x4001, &data, 0), "B→A {i}");
    }
    let raw = run_in(&t.relay, || http_get(admin, "/metrics"));
    let value = |series: &str| {
        http_body(&raw).lines().find_map(|l| {
            let (name, v) = l.rsplit_once(' ')?;
            (name == series).then(|| v.parse::<u64>().ok())?
        })
    };
    let both = Some(2 * N as u64);
    for direction in ["client_to_peer", "peer_to_client"] {
        assert_eq!(
            value(&format!(
                "turnd_xdp_relayed_datagrams_total{{direction=\"{direction}\"}}"
            )),
            both,
            "{direction}"
        );
        assert_eq!(
            value(&format!(
                "turnd_relayed_datagrams_total{{direction=\"{direction}\",transport=\"udp\"}}"
            )),
            both,
            "{direction}"
        );
    }
}

#[test]
fn generic_mode_hairpins_between_two_clients_in_the_kernel() {
    hairpins_in_the_kernel("generic");
}

#[test]
fn native_mode_hairpins_between_two_clients_in_the_kernel() {
    hairpins_in_the_kernel("native");
}

/// One series' value from turnd's `/metrics` in the relay namespace; `None` when absent.
fn metric(t: &Relaying, admin: SocketAddr, series: &str) -> Option<u64> {
    let raw = run_in(&t.relay, || http_get(admin, "/metrics"));
    http_body(&raw).lines().find_map(|l| {
        let (name, value) = l.rsplit_once(' ')?;
        (name == series).then(|| value.parse::<u64>().ok())?
    })
}

/// A peer socket in `peer` and alice's allocation from `cli` over IPv4 with channel 0x4000
/// bound to it.
fn channel_to_a_peer(t: &Relaying) -> (UdpSocket, SocketAddr, bench_client::Client) {
    let peer_sock = run_in(&t.peer, || {
        UdpSocket::bind("10.78.2.2:0").expect("peer socket")
    });
    let peer = peer_sock.local_addr().unwrap();
    let creds = bench_client::Creds::new("alice", "alice-pw");
    let c = run_in(&t.cli, || {
        let mut c = bench_client::Client::allocate(
            "10.78.1.1:3478".parse().unwrap(),
            "10.78.1.2".parse().unwrap(),
            &creds,
        )
        .expect("Allocate");
        c.channel_bind(0x4000, peer).expect("ChannelBind");
        c
    });
    (peer_sock, peer, c)
}

/// An allocation that reaches its end stops relaying in the kernel: its entries carry that
/// deadline (the program passes traffic past it up even before the removal), and its end
/// removes them. With a 2-second lifetime: once turnd has logged the allocation's end, a
/// datagram either way goes nowhere, and the kernel's counters stand still.
#[test]
fn an_allocation_at_its_end_stops_in_the_kernel() {
    let t = relaying_topology("generic");
    let scratch = common::ScratchDir::new("xdp-expiry");
    let (turnd, admin) = relaying_turnd(
        &t,
        "generic",
        &scratch.path().join("turnd.toml"),
        &["--default-lifetime", "2", "--max-lifetime", "2"],
    );
    let (peer_sock, _, c) = channel_to_a_peer(&t);
    c.sock
        .send(&channel_data(0x4000, b"alive", 0))
        .expect("send");
    assert_eq!(
        receive(&peer_sock, 1, Duration::from_secs(2)),
        [b"alive".to_vec()]
    );
    let xdp = |series: &str| metric(&t, admin, series);
    let to_peer = "turnd_xdp_relayed_datagrams_total{direction=\"client_to_peer\"}";
    assert_eq!(xdp(to_peer), Some(1));
    // Bounded: one look per 50 ms, for at most COMMAND_TIMEOUT (the lifetime is 2 s).
    let deadline = Instant::now() + COMMAND_TIMEOUT;
    while !turnd.output().contains("reason=\"expired\"") {
        assert!(Instant::now() < deadline, "no expiry: {}", turnd.output());
        std::thread::sleep(Duration::from_millis(50));
    }
    c.sock
        .send(&channel_data(0x4000, b"late", 0))
        .expect("send");
    peer_sock.send_to(b"late", c.relay).expect("send");
    assert!(receive(&peer_sock, 1, Duration::from_millis(300)).is_empty());
    assert!(receive(&c.sock, 1, Duration::from_millis(300)).is_empty());
    assert_eq!(xdp(to_peer), Some(1));
}

/// A channel that reaches its expiry stops in the kernel: its entries carry the binding's
/// deadline (the program passes traffic past it up even before the removal) and its expiry
/// removes them, exactly as user space stops using it. Channels last 10 minutes (RFC 8656 §12),
/// so turnd runs with the debug build's hook `TURND_TEST_CHANNEL_LIFETIME=2`. Once the admin
/// view lists the channel no more, a ChannelData on it goes nowhere and a datagram from the
/// peer still arrives, through user space, as a Data indication (the permission lasts 5
/// minutes); the kernel's counters stand still.
fn a_channel_at_its_expiry_stops_in_the_kernel(mode: &str) {
    let t = relaying_topology(mode);
    let scratch = common::ScratchDir::new("xdp-channel-expiry");
    let (_turnd, admin) = relaying_turnd_with_env(
        &t,
        mode,
        &scratch.path().join("turnd.toml"),
        &[],
        &[("TURND_TEST_CHANNEL_LIFETIME", "2")],
    );
    let (peer_sock, peer, c) = channel_to_a_peer(&t);
    let get = |path: &str| http_body(&run_in(&t.relay, || http_get(admin, path))).to_string();
    let metric = |series: &str| metric(&t, admin, series);
    let to_peer = "turnd_xdp_relayed_datagrams_total{direction=\"client_to_peer\"}";
    let to_client = "turnd_xdp_relayed_datagrams_total{direction=\"peer_to_client\"}";
    c.sock
        .send(&channel_data(0x4000, b"alive", 0))
        .expect("send");
    assert_eq!(
        receive(&peer_sock, 1, Duration::from_secs(2)),
        [b"alive".to_vec()]
    );
    peer_sock.send_to(b"back", c.relay).expect("send");
    assert_eq!(
        receive(&c.sock, 1, Duration::from_secs(2)),
        [channel_data(0x4000, b"back", 0)]
    );
    assert_eq!((metric(to_peer), metric(to_client)), (Some(1), Some(1)));
    // Bounded: one look per 50 ms, for at most COMMAND_TIMEOUT (the lifetime is 2 s).
    let deadline = Instant::now() + COMMAND_TIMEOUT;
    loop {
        let list = get("/allocations");
        if list.contains("\"channels\":[]") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the channel never expired: {list}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    c.sock
        .send(&channel_data(0x4000, b"late", 0))
        .expect("send");
    assert!(receive(&peer_sock, 1, Duration::from_millis(300)).is_empty());
    peer_sock.send_to(b"as data", c.relay).expect("send");
    let got = receive(&c.sock, 1, Duration::from_secs(2));
    assert_eq!(got.len(), 1, "the peer's datagram did not arrive");
    match turnd::client::data::decode(&got[0]) {
        Some(turnd::client::data::Relayed {
            via: turnd::client::data::Via::Peer(from),
            data,
        }) => assert_eq!((from, data), (peer, &b"as data"[..])),
        other => panic!("not a Data indication from the peer: {other:?}"),
    }
    assert_eq!((metric(to_peer), metric(to_client)), (Some(1), Some(1)));
}

#[test]
fn generic_mode_channel_expiry_stops_in_the_kernel() {
    a_channel_at_its_expiry_stops_in_the_kernel("generic");
}

#[test]
fn native_mode_channel_expiry_stops_in_the_kernel() {
    a_channel_at_its_expiry_stops_in_the_kernel("native");
}

/// A wildcard listener (`0.0.0.0:3478`, as the shipped Compose and Kubernetes examples have)
/// still gets the kernel path: the entries answer each client from the address of the route to
/// it, which is the address it sent to, as the wildcard socket's own replies are. (Clients
/// reach this relay on another link than its relay address's, so both are named.) ChannelData
/// both ways goes through the kernel, and the client's connected socket only takes the
/// answers because they come from the address it sent to.
#[test]
fn a_wildcard_listener_relays_in_the_kernel() {
    let t = relaying_topology("generic");
    let (_turnd, admin) = netns::spawn_turnd(
        &t.relay,
        &[
            "--listen",
            "0.0.0.0:3478",
            "--relay-ip",
            "10.78.2.1",
            "--allow-peer",
            "10.78.2.0/24",
            "--user",
            "alice:alice-pw",
            "--realm",
            "xdp.test",
            "--xdp",
            "generic",
            // A wildcard names no interface: the default is those of the relay IPs only.
            "--xdp-interface",
            "veth-rc",
            "--xdp-interface",
            "veth-rp",
        ],
    );
    let (peer_sock, _, c) = channel_to_a_peer(&t);
    for i in 0..10u8 {
        c.sock
            .send(&channel_data(0x4000, &[i; 20], 0))
            .expect("send");
        assert_eq!(
            receive(&peer_sock, 1, Duration::from_secs(2)),
            [vec![i; 20]]
        );
        peer_sock.send_to(&[i; 30], c.relay).expect("send");
        assert_eq!(
            receive(&c.sock, 1, Duration::from_secs(2)),
            [channel_data(0x4000, &[i; 30], 0)]
        );
    }
    let xdp = |d: &str| {
        metric(
            &t,
            admin,
            &format!("turnd_xdp_relayed_datagrams_total{{direction=\"{d}\"}}"),
        )
    };
    assert_eq!(
        (xdp("client_to_peer"), xdp("peer_to_client")),
        (Some(10), Some(10))
    );
}
