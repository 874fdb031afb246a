//! What turnd tells its operator at start-up, in one screen.
//!
//! An operator who has just started turnd wants to know three things: what listens where,
//! which relay address clients will be told (the one that must be reachable from outside), and
//! whether anything is wrong — and if so, what to do about it. [`lines`] answers the first two
//! on stdout, one fact per line; [`warnings`] the third, each warning naming its fix, for the
//! log (stderr). Nothing is said twice.
//!
//! The `turnd listening udp|tcp|tls ADDR` and `turnd metrics http://ADDR` lines are a stable
//! interface: tests and scripts (`benches/scale.sh`) wait for them and parse the address after
//! the prefix, so nothing may follow the address on those lines.

use crate::core::peer_filter::PeerFilter;
use crate::core::RelayAddr;
use std::net::SocketAddr;

/// Room for the files a process holds besides relay sockets: listeners, the admin listener,
/// epoll and eventfds per worker, a few TCP clients. Measured at 29–31 in `benches/scale.sh`.
const OTHER_FILES: u64 = 64;

/// What start-up found, gathered from the configuration and the running server.
#[derive(Clone, Debug)]
pub struct Facts {
    /// The crate version.
    pub version: &'static str,
    pub workers: usize,
    pub realm: String,
    /// Static users (`[[users]]`, `--user`).
    pub users: usize,
    /// TURN REST API shared secrets (`auth_secrets`).
    pub auth_secrets: usize,
    /// Bound listeners, with the real ports when port 0 was asked for.
    pub udp: Vec<SocketAddr>,
    pub tcp: Vec<SocketAddr>,
    pub tls: Vec<SocketAddr>,
    /// The admin HTTP listener (`metrics_listen`).
    pub metrics: SocketAddr,
    /// Whether `admin_token` is set.
    pub admin_token: bool,
    /// Where relay sockets bind, and what clients are told.
    pub relays: Vec<RelayAddr>,
    /// `relay_ports` as `LOW-HIGH`, and how many ports that is per relay address.
    pub relay_ports: (String, u64),
    /// The soft open-file limit after raising it, when it could be read.
    pub open_files: Option<u64>,
    /// `userhash = true`.
    pub userhash: bool,
    /// This host's addresses and networks the peer filter refuses (but for the relay ports of
    /// the relay IPs).
    pub own_host: Vec<String>,
}

/// The widest summary line: it fits a terminal.
const WIDTH: usize = 100;

/// The start-up summary for stdout, one fact per line.
pub fn lines(f: &Facts) -> Vec<String> {
    let mut out = vec![format!(
        "turnd {}: {} worker{}, realm \"{}\", {} static user{}, {} REST API secret{}",
        f.version,
        f.workers,
        plural(f.workers),
        f.realm,
        f.users,
        plural(f.users),
        f.auth_secrets,
        plural(f.auth_secrets),
    )];
    for (transport, addrs) in [("udp", &f.udp), ("tcp", &f.tcp), ("tls", &f.tls)] {
        for a in addrs {
            out.push(format!("turnd listening {transport} {a}"));
        }
    }
    out.push(format!("turnd metrics http://{}", f.metrics));
    out.push(format!(
        "turnd admin: /metrics /healthz /readyz, and /allocations {}",
        if f.admin_token {
            "(needs the admin_token)"
        } else {
            "(open: no admin_token)"
        }
    ));
    for r in &f.relays {
        let told = if r.advertised == r.bind {
            format!("clients are told {}", r.advertised)
        } else {
            format!("clients are told {} (external_ips)", r.advertised)
        };
        out.push(format!(
            "turnd relay {} ports {}: {told}",
            r.bind, f.relay_ports.0
        ));
    }
    if !f.own_host.is_empty() {
        out.push(own_host_line(&f.own_host));
    }
    if let Some(n) = f.open_files {
        out.push(format!(
            "turnd open-file limit {n}: room for about {} allocations",
            n.saturating_sub(OTHER_FILES)
        ));
    }
    out
}

/// The own-host set on one line: as many addresses as fit in [`WIDTH`], then how many more
/// (all of them are logged at debug level).
fn own_host_line(own: &[String]) -> String {
    let mut line = String::from("turnd own host, never a peer but for the relay ports:");
    for (i, a) in own.iter().enumerate() {
        let rest = own.len() - i - 1;
        let tail = if rest > 0 {
            format!(" and {rest} more")
        } else {
            String::new()
        };
        if line.len() + 1 + a.len() + tail.len() > WIDTH {
            line.push_str(&format!(" and {} more", own.len() - i));
            return line;
        }
        line.push(' ');
        line.push_str(a);
    }
    line
}

/// Everything at start-up an operator should act on, each with what to do about it.
pub fn warnings(f: &Facts) -> Vec<String> {
    let mut out = Vec::new();
    let public = PeerFilter::default();
    for r in &f.relays {
        // Clients told an address the default peer filter would refuse (loopback, private,
        // link-local…) cannot reach the relay from another network.
        if !public.is_allowed(r.advertised) {
            out.push(format!(
                "relay address {} is not public: clients on other networks cannot reach it; set \
                 external_ips to the public address (behind NAT or Docker), or relay_ips to a \
                 public address of this host",
                r.advertised
            ));
        }
    }
    if f.users == 0 && f.auth_secrets == 0 {
        out.push(
            "no static user and no auth_secrets: every Allocate will be refused (401); add a \
             [[users]] entry (--user NAME:PASSWORD) or a REST API secret (--auth-secret)"
                .to_string(),
        );
    }
    if f.userhash && f.auth_secrets > 0 {
        out.push(
            "userhash = true with auth_secrets: RFC 8489 clients using REST API credentials \
             will get 401 (a REST username cannot be found by its hash); set userhash = false"
                .to_string(),
        );
    }
    if !f.metrics.ip().is_loopback() && !f.admin_token {
        out.push(format!(
            "the admin listener {} is not on loopback and has no admin_token: whoever reaches \
             it can list and end allocations; set admin_token, or keep metrics_listen on \
             127.0.0.1 (and firewall the port)",
            f.metrics
        ));
    }
    if let Some(n) = f.open_files {
        let ports = f.relay_ports.1 * f.relays.len() as u64;
        let room = n.saturating_sub(OTHER_FILES);
        if room < ports {
            out.push(format!(
                "the open-file limit ({n}) allows about {room} allocations, fewer than the \
                 {ports} relay ports: raise the hard limit (LimitNOFILE= in systemd, --ulimit \
                 nofile= in Docker; turnd raises its soft limit to it), or narrow relay_ports"
            ));
        }
    }
    out
}

fn plural(n: usize) -> &'static str {
    if n == 1 {
        ""
    } else {
        "s"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn demo() -> Facts {
        Facts {
            version: "0.1.0",
            workers: 2,
            realm: "turnd.local".into(),
            users: 1,
            auth_secrets: 0,
            udp: vec!["127.0.0.1:3478".parse().unwrap()],
            tcp: vec!["127.0.0.1:3478".parse().unwrap()],
            tls: vec![],
            metrics: "127.0.0.1:9641".parse().unwrap(),
            admin_token: false,
            relays: vec![RelayAddr {
                bind: "127.0.0.1".parse().unwrap(),
                advertised: "127.0.0.1".parse().unwrap(),
            }],
            relay_ports: ("49152-65535".into(), 16384),
            open_files: Some(65536),
            userhash: false,
            own_host: vec!["0.0.0.0".into(), "127.0.0.1".into(), "::".into()],
        }
    }

    #[test]
    fn the_demo_says_where_it_listens_and_what_clients_are_told() {
        let l = lines(&demo());
        assert_eq!(
            l,
            [
                "turnd 0.1.0: 2 workers, realm \"turnd.local\", 1 static user, 0 REST API secrets",
                "turnd listening udp 127.0.0.1:3478",
                "turnd listening tcp 127.0.0.1:3478",
                "turnd metrics http://127.0.0.1:9641",
                "turnd admin: /metrics /healthz /readyz, and /allocations (open: no admin_token)",
                "turnd relay 127.0.0.1 ports 49152-65535: clients are told 127.0.0.1",
                "turnd own host, never a peer but for the relay ports: 0.0.0.0 127.0.0.1 ::",
                "turnd open-file limit 65536: room for about 65472 allocations",
            ]
        );
        // One screen.
        assert!(l.iter().all(|l| l.len() <= WIDTH), "{l:#?}");
    }

    #[test]
    fn a_long_own_host_set_is_cut_to_the_width_and_counted() {
        let own: Vec<String> = (0..40).map(|i| format!("2001:db8::{i:x}")).collect();
        let line = own_host_line(&own);
        assert!(line.len() <= WIDTH, "{line}");
        let shown = line.matches("2001:db8::").count();
        assert!(shown > 0, "{line}");
        assert!(
            line.ends_with(&format!(" and {} more", 40 - shown)),
            "{line}"
        );
    }

    #[test]
    fn a_loopback_relay_is_the_demos_only_warning_and_names_the_fix() {
        let w = warnings(&demo());
        assert_eq!(w.len(), 1, "{w:#?}");
        assert!(w[0].starts_with("relay address 127.0.0.1 is not public"));
        assert!(w[0].contains("external_ips") && w[0].contains("relay_ips"));
    }

    #[test]
    fn an_external_ip_is_what_clients_are_told_and_silences_the_warning() {
        let mut f = demo();
        f.relays[0] = RelayAddr {
            bind: "10.0.0.5".parse().unwrap(),
            advertised: "203.0.112.10".parse().unwrap(),
        };
        assert!(lines(&f).contains(
            &"turnd relay 10.0.0.5 ports 49152-65535: clients are told 203.0.112.10 (external_ips)"
                .to_string()
        ));
        assert!(warnings(&f).is_empty(), "{:#?}", warnings(&f));
    }

    #[test]
    fn every_other_warning_names_its_fix() {
        let mut f = demo();
        f.relays[0].advertised = "203.0.112.10".parse().unwrap();
        f.users = 0;
        f.metrics = "0.0.0.0:9641".parse().unwrap();
        f.open_files = Some(1024);
        let w = warnings(&f);
        assert_eq!(w.len(), 3, "{w:#?}");
        assert!(w[0].contains("every Allocate will be refused") && w[0].contains("--user"));
        assert!(w[1].contains("0.0.0.0:9641") && w[1].contains("set admin_token"));
        assert!(w[2].contains("about 960 allocations") && w[2].contains("LimitNOFILE"));
        f.users = 1;
        f.auth_secrets = 1;
        f.userhash = true;
        f.admin_token = true;
        f.open_files = None;
        let w = warnings(&f);
        assert_eq!(w.len(), 1, "{w:#?}");
        assert!(w[0].contains("set userhash = false"));
    }
}
