//! From a failure to advice: each way the probe can fail is mapped to a short code (stable,
//! for `--json` and scripts) and a sentence that names the fix.
//!
//! Pure functions of the failure and what the probe knew when it failed, so every mapping is
//! unit-tested without a server.

use super::client::TxError;
use super::transport::ConnectError;
use super::url::Transport;
use std::net::{IpAddr, SocketAddr};

/// A diagnosis: `code` for machines, `message` for people.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Diagnosis {
    pub code: &'static str,
    pub message: String,
}

fn d(code: &'static str, message: impl Into<String>) -> Diagnosis {
    Diagnosis {
        code,
        message: message.into(),
    }
}

/// Where the credentials came from, which changes what a 401 most likely means.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CredKind {
    None,
    /// `--user`/`--password` with a plain username.
    Static,
    /// A TURN REST username `<expiry>:<id>`, given as `--user` or minted from `--secret`.
    Rest {
        expiry: u64,
        minted: bool,
    },
}

impl CredKind {
    /// Recognises a REST username by its `<unix-expiry>:` prefix.
    pub fn of_username(username: &str, minted: bool) -> CredKind {
        match username.split_once(':').map(|(e, _)| e.parse::<u64>()) {
            Some(Ok(expiry)) => CredKind::Rest { expiry, minted },
            _ => CredKind::Static,
        }
    }
}

/// What the probe knew when it failed.
#[derive(Clone, Debug)]
pub struct Context {
    pub transport: Transport,
    pub server: Option<SocketAddr>,
    pub creds: CredKind,
    /// `--realm`, if given.
    pub realm_given: Option<String>,
    /// The realm the server announced in its 401.
    pub server_realm: Option<String>,
    /// Our relayed address, once allocated.
    pub relay: Option<SocketAddr>,
    /// This machine's clock, seconds since the Unix epoch.
    pub now_unix: u64,
}

/// How the probe failed.
#[derive(Clone, Debug)]
pub enum Failure {
    Resolve(String),
    Connect(ConnectErrorKind),
    /// A transaction of `step` failed.
    Tx {
        step: &'static str,
        err: TxError,
    },
    /// Every step worked but no payload came back.
    NoRoundTrip,
}

/// [`ConnectError`] without its non-`Clone` parts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ConnectErrorKind {
    Refused,
    Timeout,
    Certificate(String),
    Tls(String),
    Trust(String),
    Other(String),
}

impl From<ConnectError> for ConnectErrorKind {
    fn from(e: ConnectError) -> Self {
        match e {
            ConnectError::Refused => ConnectErrorKind::Refused,
            ConnectError::Timeout => ConnectErrorKind::Timeout,
            ConnectError::Certificate(s) => ConnectErrorKind::Certificate(s),
            ConnectError::Tls(s) => ConnectErrorKind::Tls(s),
            ConnectError::Trust(s) => ConnectErrorKind::Trust(s),
            ConnectError::Other(s) => ConnectErrorKind::Other(s),
        }
    }
}

/// How far an address reaches.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Scope {
    Loopback,
    /// RFC 1918, CGNAT (RFC 6598), link-local, IPv6 ULA and link-local.
    Private,
    Public,
}

pub fn scope(ip: IpAddr) -> Scope {
    match ip {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            if v4.is_loopback() {
                Scope::Loopback
            } else if v4.is_private()
                || v4.is_link_local()
                || v4.is_unspecified()
                || (o[0] == 100 && (o[1] & 0xC0) == 64)
            {
                Scope::Private
            } else {
                Scope::Public
            }
        }
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return scope(IpAddr::V4(v4));
            }
            let s = v6.segments();
            if v6.is_loopback() {
                Scope::Loopback
            } else if (s[0] & 0xFE00) == 0xFC00 || (s[0] & 0xFFC0) == 0xFE80 || v6.is_unspecified()
            {
                Scope::Private
            } else {
                Scope::Public
            }
        }
    }
}

/// The relayed address a client got is useless to peers on the internet when the server was
/// reached on a public address but advertises a private (or loopback) one: the server is
/// behind NAT (or in Docker) and does not know its public address.
pub fn relay_is_private(ctx: &Context) -> bool {
    match (ctx.server, ctx.relay) {
        (Some(s), Some(r)) => scope(s.ip()) == Scope::Public && scope(r.ip()) != Scope::Public,
        _ => false,
    }
}

fn relay_private_diagnosis(ctx: &Context) -> Diagnosis {
    let relay = ctx.relay.map(|r| r.ip().to_string()).unwrap_or_default();
    let server = ctx.server.map(|s| s.ip().to_string()).unwrap_or_default();
    d(
        "relay_private",
        format!(
            "the relayed address {relay} is private while the server is reached at public \
             {server}: peers cannot reach it. The server is behind NAT: set external_ip \
             (turnd --external-ip PUBLIC[/PRIVATE], coturn --external-ip)"
        ),
    )
}

/// Turns a failure into advice.
pub fn diagnose(f: &Failure, ctx: &Context) -> Diagnosis {
    match f {
        Failure::Resolve(e) => d(
            "resolve_failed",
            format!("cannot resolve the host name: {e}; check the URL and DNS"),
        ),
        Failure::Connect(c) => connect(c, ctx),
        Failure::NoRoundTrip if relay_is_private(ctx) => relay_private_diagnosis(ctx),
        Failure::NoRoundTrip => d(
            "no_round_trip",
            "the allocations, permissions and channels were granted but no data came back \
             through the relay: a firewall in front of the server's relay ports \
             (relay_ports, UDP)?",
        ),
        Failure::Tx { step, err } => tx(step, err, ctx),
    }
}

fn connect(c: &ConnectErrorKind, ctx: &Context) -> Diagnosis {
    let at = ctx.server.map(|s| s.to_string()).unwrap_or_default();
    match c {
        ConnectErrorKind::Refused => d(
            "tcp_refused",
            format!(
                "TCP connection to {at} refused: nothing listens there (is the server running, \
                 on this port, with TCP{}?)",
                if ctx.transport == Transport::Tls {
                    " and tls_listen"
                } else {
                    ""
                }
            ),
        ),
        ConnectErrorKind::Timeout => d(
            "tcp_timeout",
            format!("no answer to the TCP connection to {at}: a firewall drops it, or the address is wrong"),
        ),
        ConnectErrorKind::Certificate(e) => d(
            "tls_certificate",
            format!(
                "the server's TLS certificate was not accepted ({e}): for a private CA pass \
                 --ca FILE, for a self-signed test server --insecure; browsers need a \
                 certificate valid for the URL's host name"
            ),
        ),
        ConnectErrorKind::Tls(e) => d(
            "tls_failed",
            format!("the TLS handshake with {at} failed: {e} (is it a TLS port: tls_listen?)"),
        ),
        ConnectErrorKind::Trust(e) => d("tls_trust", format!("cannot load trust anchors: {e}")),
        ConnectErrorKind::Other(e) => d("connect_failed", format!("cannot connect to {at}: {e}")),
    }
}

fn tx(step: &str, err: &TxError, ctx: &Context) -> Diagnosis {
    match err {
        TxError::NoAnswer { sent } if ctx.transport == Transport::Udp => d(
            "udp_blocked",
            format!(
                "no answer over UDP to the {step} request ({sent} transmissions): UDP blocked \
                 on the way, or no server there? try ?transport=tcp"
            ),
        ),
        TxError::NoAnswer { .. } => d(
            "no_answer",
            format!("the server accepted the connection but did not answer the {step} request"),
        ),
        TxError::Unreachable => d(
            "udp_unreachable",
            "the server's host answered ICMP port unreachable: nothing listens on that UDP \
             port (server down, or UDP not enabled); try ?transport=tcp",
        ),
        TxError::Closed => d(
            "connection_closed",
            format!("the server closed the connection during {step}"),
        ),
        TxError::NeedCredentials => d(
            "no_credentials",
            "the server asks for credentials: give --user and --password, or --secret",
        ),
        TxError::Rejected { realm } => rejected(realm, ctx),
        TxError::Error { code: 403, .. }
            if matches!(step, "create_permission" | "channel_bind") && relay_is_private(ctx) =>
        {
            relay_private_diagnosis(ctx)
        }
        TxError::Error { code: 403, .. }
            if matches!(step, "create_permission" | "channel_bind") =>
        {
            d(
                "peer_denied",
                "peer denied by the server's filter (403): the peer is in a network the server \
                 does not relay to (turnd allow_peers / deny_peers; coturn --allow-loopback-peers, \
                 --denied-peer-ip)",
            )
        }
        TxError::Error { code: 486, .. } => d(
            "quota",
            "allocation quota reached (486): the user or server holds too many allocations \
             (turnd user_quota / total_quota; coturn --user-quota / --total-quota)",
        ),
        TxError::Error { code: 508, .. } => d(
            "capacity",
            "the server has no capacity (508): relay ports exhausted, or it is draining",
        ),
        TxError::Error { code, reason, .. } => {
            d("error_response", format!("{step} refused: {code} {reason}"))
        }
        TxError::Malformed(e) => d("bad_response", format!("{step}: {e}")),
        TxError::Io(e) => d("io", format!("{step}: {e}")),
    }
}

/// A 401 to an authenticated request: which of the credential's parts is most likely wrong.
fn rejected(server_realm: &str, ctx: &Context) -> Diagnosis {
    if let Some(given) = &ctx.realm_given {
        if given != server_realm {
            return d(
                "realm_mismatch",
                format!(
                    "realm mismatch: the server's realm is \"{server_realm}\" but you gave \
                     --realm \"{given}\"; the key MD5(user:realm:password) differs"
                ),
            );
        }
    }
    match ctx.creds {
        CredKind::Rest { expiry, minted } if expiry <= ctx.now_unix => d(
            "rest_expired",
            format!(
                "credentials rejected: the REST username expired at {} (this machine's clock \
                 says {}); mint fresh credentials{}",
                crate::credentials::utc(expiry),
                crate::credentials::utc(ctx.now_unix),
                if minted {
                    " and check this machine's clock"
                } else {
                    ""
                }
            ),
        ),
        CredKind::Rest { expiry, minted } => d(
            "rest_rejected",
            format!(
                "credentials rejected: {}check the shared secret (turnd auth_secrets, coturn \
                 static-auth-secret) and that the clocks are in sync (the username expires at {}; \
                 a server whose clock is ahead of that refuses it)",
                if minted {
                    "if using --secret, "
                } else {
                    "a REST username: "
                },
                crate::credentials::utc(expiry)
            ),
        ),
        _ => d(
            "bad_credentials",
            format!(
                "bad credentials: the server (realm \"{server_realm}\") refused the user name \
                 or password (401 to a request with MESSAGE-INTEGRITY)"
            ),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx() -> Context {
        Context {
            transport: Transport::Udp,
            server: Some("198.51.1.1:3478".parse().unwrap()),
            creds: CredKind::Static,
            realm_given: None,
            server_realm: Some("r".into()),
            relay: None,
            now_unix: 1_700_000_000,
        }
    }

    fn code(f: Failure, c: &Context) -> &'static str {
        diagnose(&f, c).code
    }

    fn tx(step: &'static str, err: TxError) -> Failure {
        Failure::Tx { step, err }
    }

    fn rejected() -> TxError {
        TxError::Rejected { realm: "r".into() }
    }

    fn forbidden() -> TxError {
        TxError::Error {
            code: 403,
            reason: "Forbidden".into(),
            authenticated: true,
        }
    }

    #[test]
    fn scopes() {
        for (ip, s) in [
            ("127.0.0.1", Scope::Loopback),
            ("::1", Scope::Loopback),
            ("10.1.2.3", Scope::Private),
            ("172.16.0.1", Scope::Private),
            ("192.168.1.1", Scope::Private),
            ("100.64.0.1", Scope::Private),
            ("169.254.169.254", Scope::Private),
            ("fd00::1", Scope::Private),
            ("fe80::1", Scope::Private),
            ("::ffff:10.0.0.1", Scope::Private),
            ("8.8.8.8", Scope::Public),
            ("2606:4700::1", Scope::Public),
            ("100.128.0.1", Scope::Public),
        ] {
            assert_eq!(scope(ip.parse().unwrap()), s, "{ip}");
        }
    }

    #[test]
    fn transport_failures() {
        let mut c = ctx();
        let no_answer = TxError::NoAnswer { sent: 4 };
        assert_eq!(code(tx("binding", no_answer.clone()), &c), "udp_blocked");
        assert!(diagnose(&tx("binding", no_answer.clone()), &c)
            .message
            .contains("?transport=tcp"));
        assert_eq!(
            code(tx("binding", TxError::Unreachable), &c),
            "udp_unreachable"
        );
        c.transport = Transport::Tcp;
        assert_eq!(code(tx("binding", no_answer), &c), "no_answer");
        assert_eq!(
            code(Failure::Connect(ConnectErrorKind::Refused), &c),
            "tcp_refused"
        );
        assert_eq!(
            code(Failure::Connect(ConnectErrorKind::Timeout), &c),
            "tcp_timeout"
        );
        let cert = Failure::Connect(ConnectErrorKind::Certificate("UnknownIssuer".into()));
        let m = diagnose(&cert, &c);
        assert_eq!(m.code, "tls_certificate");
        assert!(m.message.contains("--insecure") && m.message.contains("--ca"));
        assert_eq!(code(Failure::Resolve("x".into()), &c), "resolve_failed");
    }

    #[test]
    fn credential_failures() {
        let mut c = ctx();
        assert_eq!(code(tx("allocate", rejected()), &c), "bad_credentials");
        c.realm_given = Some("other".into());
        assert_eq!(code(tx("allocate", rejected()), &c), "realm_mismatch");
        c.realm_given = Some("r".into());
        assert_eq!(code(tx("allocate", rejected()), &c), "bad_credentials");
        c.realm_given = None;
        c.creds = CredKind::Rest {
            expiry: c.now_unix + 3600,
            minted: true,
        };
        let m = diagnose(&tx("allocate", rejected()), &c);
        assert_eq!(m.code, "rest_rejected");
        assert!(m.message.contains("--secret") && m.message.contains("clocks"));
        c.creds = CredKind::Rest {
            expiry: c.now_unix - 1,
            minted: false,
        };
        assert_eq!(code(tx("allocate", rejected()), &c), "rest_expired");
        assert_eq!(
            code(tx("allocate", TxError::NeedCredentials), &c),
            "no_credentials"
        );
    }

    #[test]
    fn rest_usernames_are_recognised() {
        assert_eq!(
            CredKind::of_username("1700000000:alice", false),
            CredKind::Rest {
                expiry: 1_700_000_000,
                minted: false
            }
        );
        assert_eq!(CredKind::of_username("alice", false), CredKind::Static);
        assert_eq!(CredKind::of_username("al:ice", false), CredKind::Static);
    }

    #[test]
    fn peer_and_relay_failures() {
        let mut c = ctx();
        assert_eq!(
            code(tx("create_permission", forbidden()), &c),
            "peer_denied"
        );
        assert_eq!(code(tx("channel_bind", forbidden()), &c), "peer_denied");
        assert_eq!(code(tx("allocate", forbidden()), &c), "error_response");
        c.relay = Some("10.0.0.5:50000".parse().unwrap());
        assert!(relay_is_private(&c));
        let m = diagnose(&tx("create_permission", forbidden()), &c);
        assert_eq!(m.code, "relay_private");
        assert!(m.message.contains("external_ip"));
        assert_eq!(code(Failure::NoRoundTrip, &c), "relay_private");
        // A server reached on loopback or a private address may hand out such relays.
        c.server = Some("10.0.0.5:3478".parse().unwrap());
        assert!(!relay_is_private(&c));
        assert_eq!(code(Failure::NoRoundTrip, &c), "no_round_trip");
        let quota = TxError::Error {
            code: 486,
            reason: String::new(),
            authenticated: true,
        };
        assert_eq!(code(tx("allocate", quota), &c), "quota");
    }
}
