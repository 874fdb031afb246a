//! The relay never reaches its own host, on a host whose relay address is public.
//!
//! Two network namespaces (root only; names carry the test's PID and a counter, and a guard
//! deletes them on drop, failure included), joined by one veth:
//!
//! ```text
//!   client 44.0.0.2 ──── 44.0.0.1 relay host
//!                          turnd: UDP+TCP 0.0.0.0:3478 and 44.0.0.1:3479, admin 44.0.0.1:9641,
//!                                 relay IP 44.0.0.1, relay ports 50000-50099
//!                          services: UDP 44.0.0.1:7000, TCP 44.0.0.1:7001,
//!                                    UDP 127.0.0.1:7002, TCP 127.0.0.1:7003
//! ```
//!
//! 44.0.0.0/8 is outside every built-in deny range, as a cloud VM's public address is, and it
//! exists only inside the namespaces. turnd runs with `--allow-peer 127.0.0.0/8` (the laptop
//! demo's entry) to show that a broad allow does not reopen an own address.
//!
//! From the client namespace, with the raw test client over UDP and a raw STUN-over-TCP client
//! for RFC 6062: every own target — the TURN ports, the admin port, the services, 127.0.0.1 —
//! is refused. 127.0.0.1 (and 127.0.0.2: a wildcard listener makes all of loopback own) gets 403
//! on CreatePermission and ChannelBind. 44.0.0.1 is the relay IP, so a permission for it is
//! granted (other allocations' relayed addresses live there), but ChannelBind to a non-relay
//! port is 403, Send indications to those ports never arrive (the services log nothing, turnd
//! answers no Binding), datagrams and connections *from* them never reach the client, and
//! Connect to them is 403. Two clients still relay to each other's relayed addresses both ways:
//! UDP with Send/Data and channels, and RFC 6062 TCP allocations spliced end to end.
//!
//! The client code runs on a thread that has joined the client namespace (`setns`), so its
//! sockets live there; turnd and the services run under `ip netns exec`. Needs root, `ip`
//! (iproute2) and python3 (the services); a missing one fails the test, never skips it.

mod common;
mod raw;

use common::netns::{self, Namespaces, COMMAND_TIMEOUT};
use common::readings::{metrics_text, sum_samples};
use common::{require_tool, run_tool, Proc};
use raw::stream::*;
use raw::*;
use std::io::Write;
use std::net::{SocketAddr, UdpSocket};
use std::process::Command;
use std::time::Duration;

/// The relay host's public-looking address, and the client's.
const HOST: &str = "44.0.0.1";
const CLIENT: &str = "44.0.0.2";
/// turnd's wildcard listener port, and its listener on `HOST`.
const WILDCARD_PORT: u16 = 3478;
const TURN_PORT: u16 = 3479;
const ADMIN_PORT: u16 = 9641;
const RELAY_PORTS: &str = "50000-50099";
/// The host's services: UDP and TCP on `HOST`, UDP and TCP on 127.0.0.1.
const UDP_SERVICE: u16 = 7000;
const TCP_SERVICE: u16 = 7001;
const LO_UDP_SERVICE: u16 = 7002;
const LO_TCP_SERVICE: u16 = 7003;

/// The services: each datagram or connection they get is one line on stdout, which the test
/// reads at the end; nothing must have arrived. They exit by themselves after two minutes.
const SERVICES: &str = r#"
import selectors, socket, sys, time
sel = selectors.DefaultSelector()
def udp(host, port):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind((host, port)); s.setblocking(False)
    sel.register(s, selectors.EVENT_READ, ("udp", host, port))
def tcp(host, port):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((host, port)); s.listen(16); s.setblocking(False)
    sel.register(s, selectors.EVENT_READ, ("tcp", host, port))
host = sys.argv[1]
udp(host, 7000); tcp(host, 7001); udp("127.0.0.1", 7002); tcp("127.0.0.1", 7003)
print("ready", flush=True)
end = time.time() + 120
while time.time() < end:
    for key, _ in sel.select(timeout=1):
        kind, h, p = key.data
        if kind == "udp":
            data, peer = key.fileobj.recvfrom(65536)
            print(f"GOT udp {h}:{p} from {peer} {len(data)} bytes", flush=True)
        else:
            conn, peer = key.fileobj.accept()
            print(f"GOT tcp {h}:{p} from {peer}", flush=True)
            conn.close()
"#;

/// The two namespaces with turnd and the services running in the relay host's.
struct Host {
    // Field order is drop order: the processes stop before their namespace goes.
    turnd: Proc,
    services: Proc,
    _ns: Namespaces,
    relay_ns: String,
    client_ns: String,
}

impl Host {
    fn new() -> Host {
        netns::require_root("own_host.rs", "network namespaces (`ip netns add`)");
        let python = require_tool("python3");
        let ns = Namespaces::create("own", &["relay", "cli"]);
        let (relay_ns, client_ns) = (ns.name("relay"), ns.name("cli"));
        netns::veth(&relay_ns, "eth0", &client_ns, "eth0");
        netns::address(&relay_ns, "eth0", &format!("{HOST}/24"));
        netns::address(&client_ns, "eth0", &format!("{CLIENT}/24"));

        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &relay_ns])
            .arg(&python)
            .args(["-u", "-c", SERVICES, HOST]);
        let mut services = Proc::spawn("services (relay netns)", cmd);
        services.wait_for_line("ready", COMMAND_TIMEOUT);

        let (turnd, _) = netns::spawn_turnd(
            &relay_ns,
            &[
                "--listen",
                &format!("0.0.0.0:{WILDCARD_PORT}"),
                "--listen",
                &format!("{HOST}:{TURN_PORT}"),
                "--relay-ip",
                HOST,
                "--relay-ports",
                RELAY_PORTS,
                "--realm",
                REALM,
                "--user",
                &format!("{}:{}", ALICE.0, ALICE.1),
                "--user",
                &format!("{}:{}", BOB.0, BOB.1),
                "--allow-peer",
                "127.0.0.0/8",
                "--workers",
                "2",
                "--metrics-listen",
                &format!("{HOST}:{ADMIN_PORT}"),
            ],
        );
        Host {
            turnd,
            services,
            _ns: ns,
            relay_ns,
            client_ns,
        }
    }

    /// Runs `f` on a thread inside the client namespace (sockets it makes live there).
    fn in_client<T: Send>(&self, f: impl FnOnce() -> T + Send) -> T {
        netns::run_in(&self.client_ns, f)
    }

    /// Sends one UDP datagram inside the relay host, from `HOST:from_port` to `to`.
    fn udp_from_host(&self, from_port: u16, to: SocketAddr) {
        let script = format!(
            "import socket; s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); \
             s.bind(('{HOST}', {from_port})); s.sendto(b'from the host', ('{}', {}))",
            to.ip(),
            to.port()
        );
        netns::in_ns(&self.relay_ns, "python3", &["-c", &script]);
    }

    /// Opens a TCP connection inside the relay host from `HOST:from_port` to `to`, holds it
    /// a second, then closes it.
    fn tcp_from_host(&self, from_port: u16, to: SocketAddr) {
        let script = format!(
            "import socket, time; s = socket.socket(); \
             s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); \
             s.bind(('{HOST}', {from_port})); s.settimeout(5); \
             s.connect(('{}', {})); time.sleep(1); s.close()",
            to.ip(),
            to.port()
        );
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.relay_ns, "python3", "-c", &script]);
        // The relay may close the connection at once (refused): either outcome is fine here.
        let _ = run_tool("tcp from the host", cmd, COMMAND_TIMEOUT);
    }
}

fn addr(ip: &str, port: u16) -> SocketAddr {
    SocketAddr::new(ip.parse().unwrap(), port)
}

/// A raw UDP client in the client namespace talking to `server`.
fn udp_client(server: SocketAddr, user: (&str, &str)) -> Client {
    let mut c = Client::new(server).with_user(user.0, user.1);
    c.sock = UdpSocket::bind((CLIENT, 0)).expect("bind the client socket");
    c
}

/// Every own-host target on the relay IP that is not a relay port: the TURN ports, the admin
/// listener, the services.
fn host_ports() -> [SocketAddr; 5] {
    [
        WILDCARD_PORT,
        TURN_PORT,
        ADMIN_PORT,
        UDP_SERVICE,
        TCP_SERVICE,
    ]
    .map(|p| addr(HOST, p))
}

/// Own addresses with no port open at all (a wildcard listener makes all of 127/8 own).
fn closed_addresses() -> [SocketAddr; 4] {
    [
        addr("127.0.0.1", LO_UDP_SERVICE),
        addr("127.0.0.1", LO_TCP_SERVICE),
        addr("127.0.0.2", LO_UDP_SERVICE),
        addr("0.0.0.0", UDP_SERVICE),
    ]
}

/// A STUN Binding request: had it reached a TURN port, an answer would come back.
fn binding_request() -> Vec<u8> {
    encode(msg_type(BINDING, REQUEST), new_txid(), &[], None, false)
}

/// The sum of turnd's `turnd_requests_total` series for `method`, scraped from the admin
/// listener.
fn requests(method: &str) -> f64 {
    let text = metrics_text(addr(HOST, ADMIN_PORT));
    sum_samples(
        &text,
        "turnd_requests_total",
        &format!("method=\"{method}\""),
    )
}

#[test]
fn the_relay_never_reaches_its_own_host() {
    let host = Host::new();
    let wildcard = addr(HOST, WILDCARD_PORT);
    let specific = addr(HOST, TURN_PORT);
    host.in_client(|| {
        udp_allocations(&host, wildcard, specific);
        tcp_allocations(&host, wildcard, specific);
        // The TURN ports answered no Binding: none of the requests sent through the relay
        // reached them.
        assert_eq!(requests("binding"), 0.0, "a Binding reached turnd");
    });
    let services = host.services.output();
    assert!(
        !services.contains("GOT"),
        "a service of the host was reached:\n{services}"
    );
    // turnd found the host's addresses (the wildcard listener made all of loopback own).
    let log = host.turnd.output();
    assert!(
        log.contains("own host") && log.contains("127.0.0.0/8"),
        "no own-host line in turnd's log:\n{log}"
    );
}

/// UDP allocations (A through the wildcard listener, B through the specific one).
fn udp_allocations(host: &Host, wildcard: SocketAddr, specific: SocketAddr) {
    let mut a = udp_client(wildcard, ALICE);
    let mut b = udp_client(specific, BOB);
    let relayed_a = a.allocate();
    let relayed_b = b.allocate();
    assert_eq!(relayed_a.ip(), HOST.parse::<std::net::IpAddr>().unwrap());

    // Own addresses with nothing open: 403 for both requests, whatever the port.
    for (i, target) in closed_addresses().into_iter().enumerate() {
        assert_error(&a.create_permission(&[target]), CREATE_PERMISSION, 403);
        assert_error(
            &a.channel_bind(0x4000 + i as u16, target),
            CHANNEL_BIND,
            403,
        );
    }

    // Two clients reach each other's relayed addresses, both ways: Send/Data...
    a.permit(relayed_b);
    b.permit(relayed_a);
    a.send_indication(relayed_b, b"a to b");
    assert_eq!(b.recv_data_indication(), (relayed_a, b"a to b".to_vec()));
    b.send_indication(relayed_a, b"b to a");
    assert_eq!(a.recv_data_indication(), (relayed_b, b"b to a".to_vec()));
    // ...and channels.
    a.bind_channel(0x4010, relayed_b);
    b.bind_channel(0x4010, relayed_a);
    a.send_channel_data(0x4010, b"cd a to b", false);
    assert_eq!(b.recv_channel_data(), (0x4010, b"cd a to b".to_vec()));
    b.send_channel_data(0x4010, b"cd b to a", false);
    assert_eq!(a.recv_channel_data(), (0x4010, b"cd b to a".to_vec()));

    // The relay IP's permission is there (B's relayed address is on it), yet its other ports
    // stay shut: ChannelBind 403, and Send indications (a Binding request for the TURN
    // ports) go nowhere.
    for (i, target) in host_ports().into_iter().enumerate() {
        assert_error(
            &a.channel_bind(0x4020 + i as u16, target),
            CHANNEL_BIND,
            403,
        );
        a.send_indication(target, &binding_request());
    }
    a.expect_silence("Send indications to the host's own ports");
    b.expect_silence("(B) while A sent to the host's own ports");

    // Datagrams from the host's own non-relay ports never reach the client.
    host.udp_from_host(UDP_SERVICE + 10, relayed_a);
    host.udp_from_host(WILDCARD_PORT + 10, relayed_a);
    a.expect_silence("datagrams from the host's own ports");
    // The pair still relays afterwards.
    a.send_channel_data(0x4010, b"still", false);
    assert_eq!(b.recv_channel_data(), (0x4010, b"still".to_vec()));
}

/// RFC 6062 TCP allocations (T1 through the wildcard listener, T2 through the specific one).
fn tcp_allocations(host: &Host, wildcard: SocketAddr, specific: SocketAddr) {
    let mut t1 = StreamClient::connect(wildcard).with_user(ALICE);
    let mut t2 = StreamClient::connect(specific).with_user(BOB);
    let relayed_1 = t1.allocate_tcp();
    let relayed_2 = t2.allocate_tcp();
    for target in closed_addresses() {
        let r = t1.request(CREATE_PERMISSION, &[peer(target)]);
        assert_error(&r, CREATE_PERMISSION, 403);
        assert_error(&t1.request(CONNECT, &[peer(target)]), CONNECT, 403);
    }
    // The relay IP: the permission is granted, Connect to the host's own ports is not — the
    // admin listener's /allocations among them.
    let r = t1.request(CREATE_PERMISSION, &[peer(relayed_2)]);
    assert_success(&r, CREATE_PERMISSION);
    let r = t2.request(CREATE_PERMISSION, &[peer(relayed_1)]);
    assert_success(&r, CREATE_PERMISSION);
    for target in host_ports() {
        assert_error(&t1.request(CONNECT, &[peer(target)]), CONNECT, 403);
    }
    // A connection from a non-relay port of the host is closed, never announced.
    host.tcp_from_host(TCP_SERVICE + 10, relayed_1);
    assert!(
        t1.recv_for(Duration::from_secs(1)).is_none(),
        "a connection from the host's own port was announced"
    );

    // T1 connects to T2's relayed address: announced to T2, bound by both, spliced.
    let cid_1 = t1.connect_peer(relayed_2);
    let attempt = t2.recv_for(STREAM_WAIT).expect("a ConnectionAttempt");
    assert_eq!(
        (attempt.method(), attempt.class()),
        (CONNECTION_ATTEMPT, INDICATION)
    );
    let from = attempt.xor_address(A_XOR_PEER_ADDRESS).expect("peer");
    assert_eq!(from, relayed_1, "connects from T1's relayed address");
    let cid_2 = attempt.u32_attr(A_CONNECTION_ID).expect("CONNECTION-ID");
    let mut d1 = StreamClient::connect(wildcard).with_user(ALICE).bind(cid_1);
    let mut d2 = StreamClient::connect(specific).with_user(BOB).bind(cid_2);
    d1.write_all(b"t1 to t2").unwrap();
    assert_eq!(read_exactly(&d2, 8), b"t1 to t2");
    d2.write_all(b"t2 to t1").unwrap();
    assert_eq!(read_exactly(&d1, 8), b"t2 to t1");
}
