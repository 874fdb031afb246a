//! Relay peer filter: which peer addresses a TURN allocation may send to.
//!
//! A TURN server is a proxy by design (RFC 8656): an authenticated client asks it to relay UDP
//! to an arbitrary peer. Without a filter that makes the server a way into the networks *behind*
//! it: loopback services, the cloud metadata endpoint (169.254.169.254), RFC 1918 back ends,
//! link-local neighbours — and the relay's own host. RFC 8656 lets a server refuse peer
//! addresses with 403 (Forbidden), and coturn shipped bugs where its restriction was bypassed:
//!
//! - CVE-2020-26262: `0.0.0.0`, `[::]` and `[::1]` were not caught by the loopback check, so
//!   relaying to them reached services listening on the server itself.
//! - CVE-2026-27624: IPv6 spellings of a private IPv4 address (IPv4-mapped `::ffff:10.0.0.1` and
//!   friends) were checked against the IPv6 rules only, so the IPv4 deny list never fired.
//!
//! This module therefore checks **every form** of an address: the address as given, and each
//! IPv4 address an IPv6 address embeds (see [`embedded_ipv4`](super::embedded_ipv4)). The
//! address is relayed only if all forms are allowed. The filter is on by default: a
//! [`PeerFilter::default`] with no configuration refuses every special-purpose range in
//! [`DEFAULT_DENY`].
//!
//! **Explicit entries and the built-in list.** Per form, the longest matching explicit entry
//! decides (allow or deny; a tie is denied). An explicit deny adds ranges (the operator's own
//! prefix). An explicit allow reopens a built-in range only when it is *at least as specific*
//! as the built-in entry that matches (prefix length >=): `127.0.0.0/8` opens loopback (the
//! laptop demo), `10.0.0.0/8` opens RFC 1918 back ends, `10.1.2.3` opens one of them, but
//! `0.0.0.0/0` opens nothing built-in, `::/0` does not open `::1`, and `169.0.0.0/8` does not
//! open `169.254.0.0/16` (the cloud metadata address). A broad allow written to let "the
//! internet" through can therefore never reach what the built-in list guards.
//!
//! **The relay's own host** ([`OwnHost`], built by the shell and replaced on SIGHUP with the
//! rest of the filter): a form that is an address of this host is refused even when the rules
//! above allow it, with one exception and one way out.
//!
//! - The exception: on a relay IP (bind or advertised) the relay port range stays open, minus
//!   turnd's own listening ports, so two clients of this relay reach each other's relayed
//!   addresses ([`PeerVerdict::RelayPortsOnly`]).
//! - The way out: an `allow_peers` entry that names the address *exactly* (a host route, /32 or
//!   /128, equal to it) reopens it whole. A broader entry never does: `127.0.0.0/8` opens
//!   loopback peers but not the relay's own `127.0.0.1`.
//!
//! **Permissions are per IP, the exception is per port.** RFC 8656 permissions name an IP
//! only, so the port rule is applied where a port is known, from a flag set when the permission
//! is installed (no filter runs per datagram):
//!
//! - CreatePermission: 403 for a [`PeerVerdict::Denied`] address. An own relay IP
//!   ([`PeerVerdict::RelayPortsOnly`]) gets its permission, marked *own-host*.
//! - ChannelBind: 403 for a denied address, and for an own relay IP on a port outside the
//!   relay range (the channel's port is known, so it is refused up front).
//! - Send indications, ChannelData and datagrams arriving on a relay socket: relayed only
//!   with a permission, and through an own-host permission only to or from a relay port; any
//!   other datagram is dropped (counted as "no permission"), so data to a refused port of the
//!   host never leaves the relay and data from one never reaches the client.
//! - RFC 6062: Connect gets 403 unless [`PeerFilter::allows`] the peer's address and port; a
//!   peer's inbound connection is closed unless the same holds.
//!
//! After a reload the core re-checks every permission, channel and TCP peer connection against
//! the new filter at once (`Server::handle_peer_filter_changed`).

use super::own_host::OwnHost;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::str::FromStr;

/// An IP network in CIDR notation (`10.0.0.0/8`, `fe80::/10`).
///
/// Invariant: `prefix` is at most 32 (IPv4) or 128 (IPv6) and the host bits of `addr` are
/// zero, so two `Cidr`s describing the same network compare equal.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Cidr {
    addr: IpAddr,
    prefix: u8,
}

impl Cidr {
    /// Builds a network from an address and a prefix length, clearing the host bits
    /// (`10.1.2.3/8` becomes `10.0.0.0/8`). Returns `None` if `prefix` is longer than the
    /// address family allows (32 for IPv4, 128 for IPv6).
    #[must_use]
    pub fn new(addr: IpAddr, prefix: u8) -> Option<Cidr> {
        let addr = match addr {
            IpAddr::V4(a) if prefix <= 32 => {
                IpAddr::V4(Ipv4Addr::from(u32::from(a) & v4_mask(prefix)))
            }
            IpAddr::V6(a) if prefix <= 128 => {
                IpAddr::V6(Ipv6Addr::from(u128::from(a) & v6_mask(prefix)))
            }
            _ => return None,
        };
        Some(Cidr { addr, prefix })
    }

    /// Whether `ip` lies inside this network. An IPv4 network never contains an IPv6 address
    /// and vice versa; embedded IPv4 is handled by [`PeerFilter`], not here.
    #[must_use]
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                u32::from(ip) & v4_mask(self.prefix) == u32::from(net)
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                u128::from(ip) & v6_mask(self.prefix) == u128::from(net)
            }
            _ => false,
        }
    }

    /// The network address (host bits cleared).
    #[must_use]
    pub fn addr(&self) -> IpAddr {
        self.addr
    }

    /// The prefix length in bits.
    #[must_use]
    pub fn prefix(&self) -> u8 {
        self.prefix
    }

    /// `const` constructor for the built-in list. The caller guarantees the invariant; a unit
    /// test checks every use against [`Cidr::new`].
    const fn v4(a: u8, b: u8, c: u8, d: u8, prefix: u8) -> Cidr {
        Cidr {
            addr: IpAddr::V4(Ipv4Addr::new(a, b, c, d)),
            prefix,
        }
    }

    /// `const` constructor for the built-in list; see [`Cidr::v4`].
    const fn v6(s: [u16; 8], prefix: u8) -> Cidr {
        let addr = Ipv6Addr::new(s[0], s[1], s[2], s[3], s[4], s[5], s[6], s[7]);
        Cidr {
            addr: IpAddr::V6(addr),
            prefix,
        }
    }
}

/// Netmask for an IPv4 prefix; `checked_shl` makes /0 (a shift by 32) yield 0 without panicking.
fn v4_mask(prefix: u8) -> u32 {
    u32::MAX
        .checked_shl(32u32.saturating_sub(u32::from(prefix)))
        .unwrap_or(0)
}

/// Netmask for an IPv6 prefix; see [`v4_mask`].
fn v6_mask(prefix: u8) -> u128 {
    u128::MAX
        .checked_shl(128u32.saturating_sub(u32::from(prefix)))
        .unwrap_or(0)
}

/// Why a string is not a valid [`Cidr`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CidrParseError {
    /// The part before `/` is not an IPv4 or IPv6 address.
    BadAddress,
    /// The part after `/` is empty or not a decimal number.
    BadPrefix,
    /// The prefix is longer than the address family allows.
    PrefixTooLong {
        /// The longest valid prefix for the family: 32 or 128.
        max: u8,
    },
}

impl fmt::Display for CidrParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CidrParseError::BadAddress => f.write_str("invalid CIDR: not an IPv4 or IPv6 address"),
            CidrParseError::BadPrefix => {
                f.write_str("invalid CIDR: prefix length after '/' must be a decimal number")
            }
            CidrParseError::PrefixTooLong { max } => {
                let family = if *max == 32 { "IPv4" } else { "IPv6" };
                write!(
                    f,
                    "invalid CIDR: prefix length too long for {family} (max {max})"
                )
            }
        }
    }
}

impl std::error::Error for CidrParseError {}

impl FromStr for Cidr {
    type Err = CidrParseError;

    /// Parses `addr/prefix` or a bare address (a host route: /32 or /128). Host bits are
    /// cleared, as in [`Cidr::new`]. No whitespace is accepted; trim first.
    fn from_str(s: &str) -> Result<Cidr, CidrParseError> {
        let (addr, prefix) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let addr: IpAddr = addr.parse().map_err(|_| CidrParseError::BadAddress)?;
        let max: u8 = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            // Only plain digits: `u8::from_str` would also accept "+8".
            Some(p) if p.is_empty() || !p.bytes().all(|b| b.is_ascii_digit()) => {
                return Err(CidrParseError::BadPrefix)
            }
            // All digits: a parse failure can only be overflow, i.e. far too long.
            Some(p) => match p.parse::<u32>() {
                Ok(n) if n <= u32::from(max) => u8::try_from(n).unwrap_or(max),
                _ => return Err(CidrParseError::PrefixTooLong { max }),
            },
        };
        Cidr::new(addr, prefix).ok_or(CidrParseError::PrefixTooLong { max })
    }
}

impl fmt::Display for Cidr {
    /// Always `addr/prefix`, so the output parses back to an equal `Cidr`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

/// The built-in deny list, as text (for documentation, logs and config dumps). It is applied to
/// every form of a peer address unless an explicit allow entry at least as specific as the
/// matching built-in entry covers that form.
/// [`default_deny`] gives the same list parsed; a test checks the two agree.
pub const DEFAULT_DENY: &[&str] = &[
    "0.0.0.0/8", // "this network" (RFC 791/1122); 0.0.0.0 reaches the server itself (CVE-2020-26262)
    "10.0.0.0/8", // private (RFC 1918)
    "100.64.0.0/10", // carrier-grade NAT shared space (RFC 6598)
    "127.0.0.0/8", // loopback (RFC 1122)
    "169.254.0.0/16", // link-local (RFC 3927), incl. cloud metadata 169.254.169.254
    "172.16.0.0/12", // private (RFC 1918)
    "192.0.0.0/24", // IETF protocol assignments (RFC 6890)
    "192.0.2.0/24", // TEST-NET-1 documentation (RFC 5737)
    "192.88.99.0/24", // deprecated 6to4 relay anycast (RFC 7526)
    "192.168.0.0/16", // private (RFC 1918)
    "198.18.0.0/15", // benchmarking (RFC 2544)
    "198.51.100.0/24", // TEST-NET-2 documentation (RFC 5737)
    "203.0.113.0/24", // TEST-NET-3 documentation (RFC 5737)
    "224.0.0.0/4", // multicast (RFC 5771): a relay must not amplify into groups
    "240.0.0.0/4", // reserved (RFC 1112), incl. limited broadcast 255.255.255.255 (RFC 919)
    "::/128",    // unspecified; like 0.0.0.0 it reaches the server itself (CVE-2020-26262)
    "::1/128",   // loopback (RFC 4291)
    "100::/64",  // discard-only (RFC 6666)
    "2001:db8::/32", // documentation (RFC 3849)
    "fc00::/7",  // unique local (RFC 4193)
    "fec0::/10", // deprecated site-local (RFC 3879)
    "fe80::/10", // link-local (RFC 4291)
    "ff00::/8",  // multicast (RFC 4291)
];

/// Number of entries in the built-in deny list.
pub const DEFAULT_DENY_LEN: usize = 23;

/// [`DEFAULT_DENY`] as networks, in a `static` so the hot path never parses or allocates.
static DEFAULT_DENY_CIDRS: [Cidr; DEFAULT_DENY_LEN] = [
    Cidr::v4(0, 0, 0, 0, 8),
    Cidr::v4(10, 0, 0, 0, 8),
    Cidr::v4(100, 64, 0, 0, 10),
    Cidr::v4(127, 0, 0, 0, 8),
    Cidr::v4(169, 254, 0, 0, 16),
    Cidr::v4(172, 16, 0, 0, 12),
    Cidr::v4(192, 0, 0, 0, 24),
    Cidr::v4(192, 0, 2, 0, 24),
    Cidr::v4(192, 88, 99, 0, 24),
    Cidr::v4(192, 168, 0, 0, 16),
    Cidr::v4(198, 18, 0, 0, 15),
    Cidr::v4(198, 51, 100, 0, 24),
    Cidr::v4(203, 0, 113, 0, 24),
    Cidr::v4(224, 0, 0, 0, 4),
    Cidr::v4(240, 0, 0, 0, 4),
    Cidr::v6([0, 0, 0, 0, 0, 0, 0, 0], 128),
    Cidr::v6([0, 0, 0, 0, 0, 0, 0, 1], 128),
    Cidr::v6([0x100, 0, 0, 0, 0, 0, 0, 0], 64),
    Cidr::v6([0x2001, 0xdb8, 0, 0, 0, 0, 0, 0], 32),
    Cidr::v6([0xfc00, 0, 0, 0, 0, 0, 0, 0], 7),
    Cidr::v6([0xfec0, 0, 0, 0, 0, 0, 0, 0], 10),
    Cidr::v6([0xfe80, 0, 0, 0, 0, 0, 0, 0], 10),
    Cidr::v6([0xff00, 0, 0, 0, 0, 0, 0, 0], 8),
];

/// The built-in deny list as networks; see [`DEFAULT_DENY`] for what each entry is and why.
#[must_use]
pub fn default_deny() -> [Cidr; DEFAULT_DENY_LEN] {
    DEFAULT_DENY_CIDRS
}

/// The outcome of checking one peer address; ordered from most to least refused, so the
/// verdict of an address is the least of its forms'.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum PeerVerdict {
    /// Some form is denied: answer 403 (Forbidden) (RFC 8656).
    Denied,
    /// A form is a relay IP of this host: only its relay ports may be reached (another
    /// allocation's relayed address); a permission for it is marked own-host.
    RelayPortsOnly,
    /// Every form of the address is allowed, on every port: relay.
    Allowed,
}

/// Decides which peer addresses allocations may relay to. See the module docs for the rules.
///
/// `Default` is the secure configuration: no explicit entries, built-in deny list in force.
/// It knows no own-host set: the shell adds one with [`PeerFilter::with_own_host`].
#[derive(Clone, Debug, Default)]
pub struct PeerFilter {
    allow: Vec<Cidr>,
    deny: Vec<Cidr>,
    own: OwnHost,
}

impl PeerFilter {
    /// A filter with the operator's explicit `allow` and `deny` entries on top of the built-in
    /// list. Write allow entries for IPv4 targets in IPv4 form (`127.0.0.0/8`): the embedded
    /// IPv4 of `::ffff:127.0.0.1` is checked as IPv4, so allowing only `::ffff:127.0.0.0/104`
    /// would still leave `127.0.0.1` denied by the built-in list.
    #[must_use]
    pub fn new(allow: Vec<Cidr>, deny: Vec<Cidr>) -> PeerFilter {
        PeerFilter {
            allow,
            deny,
            own: OwnHost::default(),
        }
    }

    /// The same filter, refusing the addresses of `own` as well (see the module docs).
    #[must_use]
    pub fn with_own_host(self, own: OwnHost) -> PeerFilter {
        PeerFilter { own, ..self }
    }

    /// The explicit allow entries.
    #[must_use]
    pub fn allow(&self) -> &[Cidr] {
        &self.allow
    }

    /// The explicit deny entries.
    #[must_use]
    pub fn deny(&self) -> &[Cidr] {
        &self.deny
    }

    /// The own-host set.
    #[must_use]
    pub fn own_host(&self) -> &OwnHost {
        &self.own
    }

    /// Whether every port of `ip` may be reached ([`PeerVerdict::Allowed`]). A relay IP of
    /// this host is not: use [`PeerFilter::verdict`] or [`PeerFilter::allows`] where a port or
    /// a permission is in play.
    #[must_use]
    pub fn is_allowed(&self, ip: IpAddr) -> bool {
        self.verdict(ip) == PeerVerdict::Allowed
    }

    /// Whether `peer`, address and port, may be reached: [`PeerVerdict::Allowed`], or
    /// [`PeerVerdict::RelayPortsOnly`] on a relay port.
    #[must_use]
    pub fn allows(&self, peer: SocketAddr) -> bool {
        match self.verdict(peer.ip()) {
            PeerVerdict::Allowed => true,
            PeerVerdict::RelayPortsOnly => self.own.is_relay_port(peer.port()),
            PeerVerdict::Denied => false,
        }
    }

    /// The verdict for `ip`: the least of its forms' (the address itself and every IPv4
    /// address it embeds). Called on requests (CreatePermission, ChannelBind, Connect, a
    /// peer's TCP connection), never per datagram; it does not allocate: a scan over the
    /// explicit entries and the static list, and a binary search of the own-host set.
    #[must_use]
    pub fn verdict(&self, ip: IpAddr) -> PeerVerdict {
        let mut v = self.form_verdict(ip);
        if let IpAddr::V6(v6) = ip {
            for v4 in Self::embedded_ipv4(v6) {
                v = v.min(self.form_verdict(IpAddr::V4(v4)));
            }
        }
        v
    }

    /// The verdict for one form: the explicit entries and the built-in list, then the own-host
    /// set unless an allow entry names the form exactly.
    fn form_verdict(&self, ip: IpAddr) -> PeerVerdict {
        if !self.form_allowed(ip) {
            PeerVerdict::Denied
        } else if !self.own.contains(ip) || self.allows_exactly(ip) {
            PeerVerdict::Allowed
        } else if self.own.is_relay_ip(ip) {
            PeerVerdict::RelayPortsOnly
        } else {
            PeerVerdict::Denied
        }
    }

    /// Whether an allow entry is the host route of `ip` (/32 or /128, equal to it): the only
    /// entry that reopens an own address.
    fn allows_exactly(&self, ip: IpAddr) -> bool {
        let host = if ip.is_ipv4() { 32 } else { 128 };
        self.allow.iter().any(|c| c.prefix == host && c.addr == ip)
    }

    /// The explicit entries and the built-in list for one form: the longest matching explicit
    /// entry decides (a tie between allow and deny denies); an allow reopens a built-in range
    /// only when it is at least as specific as the longest built-in entry matching.
    fn form_allowed(&self, ip: IpAddr) -> bool {
        let longest = |list: &[Cidr]| {
            list.iter()
                .filter(|c| c.contains(ip))
                .map(|c| c.prefix)
                .max()
        };
        let builtin = longest(&DEFAULT_DENY_CIDRS);
        match (longest(&self.allow), longest(&self.deny)) {
            (Some(allow), Some(deny)) if allow <= deny => false,
            (Some(allow), _) => builtin.is_none_or(|b| allow >= b),
            (None, Some(_)) => false,
            (None, None) => builtin.is_none(),
        }
    }

    /// The IPv4 addresses an IPv6 address embeds, i.e. where a packet sent to it may really end
    /// up; see [`embedded_ipv4`](super::embedded_ipv4) for the forms. At most
    /// [`MAX_EMBEDDED`](super::embedded_ipv4::MAX_EMBEDDED); no heap.
    pub fn embedded_ipv4(ip: Ipv6Addr) -> impl Iterator<Item = Ipv4Addr> {
        super::embedded_ipv4::embedded_ipv4(ip)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn v4(s: &str) -> Ipv4Addr {
        s.parse().unwrap()
    }

    fn v6(s: &str) -> Ipv6Addr {
        s.parse().unwrap()
    }

    fn cidr(s: &str) -> Cidr {
        s.parse().unwrap()
    }

    fn filter(allow: &[&str], deny: &[&str]) -> PeerFilter {
        let parse = |l: &[&str]| l.iter().map(|s| cidr(s)).collect();
        PeerFilter::new(parse(allow), parse(deny))
    }

    fn embedded(s: &str) -> Vec<Ipv4Addr> {
        PeerFilter::embedded_ipv4(v6(s)).collect()
    }

    /// First, last and a middle address of a network.
    fn sample(c: &Cidr) -> [IpAddr; 3] {
        match c.addr() {
            IpAddr::V4(a) => {
                let first = u32::from(a);
                let last = first | !v4_mask(c.prefix());
                let mid = first + (last - first) / 2;
                [first, last, mid].map(|n| IpAddr::V4(Ipv4Addr::from(n)))
            }
            IpAddr::V6(a) => {
                let first = u128::from(a);
                let last = first | !v6_mask(c.prefix());
                let mid = first + (last - first) / 2;
                [first, last, mid].map(|n| IpAddr::V6(Ipv6Addr::from(n)))
            }
        }
    }

    /// Every IPv6 spelling of `target` that embeds it, each with the raw form not on the
    /// built-in list. Teredo pairs it with a public partner address.
    fn bypass_forms(target: Ipv4Addr) -> Vec<(&'static str, Ipv6Addr)> {
        let n = u32::from(target);
        let (hi, lo) = ((n >> 16) as u16, n as u16);
        let (nhi, nlo) = ((!n >> 16) as u16, !n as u16);
        let mut forms = vec![
            ("mapped", target.to_ipv6_mapped()),
            ("translated", Ipv6Addr::new(0, 0, 0, 0, 0xffff, 0, hi, lo)),
            ("nat64", Ipv6Addr::new(0x64, 0xff9b, 0, 0, 0, 0, hi, lo)),
            (
                "nat64-local/96",
                Ipv6Addr::new(0x64, 0xff9b, 1, 0, 0, 0, hi, lo),
            ),
            (
                "nat64-local/96-subnet",
                Ipv6Addr::new(0x64, 0xff9b, 1, 0xab, 0xcd, 0, hi, lo),
            ),
            // The target at the /48, /56 and /64 places of RFC 6052 §2.2 (u octet zero).
            ("nat64-local/48", local_use_at(48, target)),
            ("nat64-local/56", local_use_at(56, target)),
            ("nat64-local/64", local_use_at(64, target)),
            ("6to4", Ipv6Addr::new(0x2002, hi, lo, 0, 0, 0, 0, 1)),
            (
                "6to4-subnet",
                Ipv6Addr::new(0x2002, hi, lo, 0x42, 1, 2, 3, 4),
            ),
            // Server 8.8.8.8 (public) is checked as well; client 8.8.4.4 inverted is f7f7:fbfb.
            (
                "teredo-server",
                Ipv6Addr::new(0x2001, 0, hi, lo, 0, 0xffff, 0xf7f7, 0xfbfb),
            ),
            (
                "teredo-client",
                Ipv6Addr::new(0x2001, 0, 0x0808, 0x0808, 0x8000, 0xffff, nhi, nlo),
            ),
        ];
        if n > 1 {
            forms.push(("compatible", Ipv6Addr::new(0, 0, 0, 0, 0, 0, hi, lo)));
        }
        forms
    }

    /// An address under `64:ff9b:1::/48` whose RFC 6052 reading at `len` (48, 56 or 64) is
    /// `target`; the bits around it are zero.
    fn local_use_at(len: u8, target: Ipv4Addr) -> Ipv6Addr {
        let t = u128::from(u32::from(target));
        // `len - 48` bits of subnet (zero) follow the /48; the 32 target bits then skip the u
        // octet (bits 64..71).
        let before_u = 64 - u32::from(len); // target bits before bit 64
        let high = t >> (32 - before_u);
        let low = t & ((1u128 << (32 - before_u)) - 1);
        let base = u128::from(v6("64:ff9b:1::"));
        let after_u = 32 - before_u; // target bits from bit 72 on
        Ipv6Addr::from(base | (high << 64) | (low << (56 - after_u)))
    }

    const PRIVATE_TARGETS: &[&str] = &[
        "0.0.0.0",
        "0.0.0.2",
        "10.0.0.1",
        "100.64.0.1",
        "127.0.0.1",
        "127.255.255.254",
        "169.254.169.254",
        "172.16.0.1",
        "172.31.255.255",
        "192.0.0.8",
        "192.0.2.1",
        "192.88.99.1",
        "192.168.1.1",
        "198.18.0.1",
        "198.51.100.1",
        "203.0.113.1",
        "224.0.0.1",
        "239.255.255.250",
        "240.0.0.1",
        "255.255.255.255",
    ];

    #[test]
    fn default_list_text_matches_static() {
        assert_eq!(DEFAULT_DENY.len(), DEFAULT_DENY_LEN);
        let parsed: Vec<Cidr> = DEFAULT_DENY.iter().map(|s| cidr(s)).collect();
        assert_eq!(parsed, default_deny().to_vec());
        for (text, c) in DEFAULT_DENY.iter().zip(default_deny()) {
            // The const constructors bypass masking: check the invariant holds.
            assert_eq!(Cidr::new(c.addr(), c.prefix()), Some(c), "{text}");
            assert_eq!(c.to_string(), *text);
        }
    }

    #[test]
    fn every_default_range_denied_at_first_last_and_middle() {
        let f = PeerFilter::default();
        for c in default_deny() {
            for a in sample(&c) {
                assert!(c.contains(a), "{c} {a}");
                assert!(!f.is_allowed(a), "{a} in {c} must be denied by default");
                assert_eq!(f.verdict(a), PeerVerdict::Denied);
                if let IpAddr::V4(a4) = a {
                    for (name, form) in bypass_forms(a4) {
                        assert!(!f.is_allowed(IpAddr::V6(form)), "{name} {form} of {a}");
                    }
                }
            }
            // Allowing exactly the range lets all of it through.
            let open = PeerFilter::new(vec![c], vec![]);
            for a in sample(&c) {
                assert!(open.is_allowed(a), "{a} with allow {c}");
            }
        }
    }

    #[test]
    fn well_known_special_addresses_denied() {
        let f = PeerFilter::default();
        for a in [
            "0.0.0.0",
            "127.0.0.1",
            "169.254.169.254",
            "255.255.255.255",
            "::",
            "::1",
            "fe80::1",
            "fec0::1",
            "fd00::1",
            "fc00::1",
            "ff02::1",
            "ff05::1:3",
            "2001:db8::1",
            "100::1",
        ] {
            assert!(!f.is_allowed(ip(a)), "{a}");
        }
    }

    #[test]
    fn addresses_just_outside_default_ranges_allowed() {
        let f = PeerFilter::default();
        for a in [
            "1.0.0.0",
            "9.255.255.255",
            "11.0.0.0",
            "100.63.255.255",
            "100.128.0.0",
            "126.255.255.255",
            "128.0.0.0",
            "169.253.255.255",
            "169.255.0.0",
            "172.15.255.255",
            "172.32.0.0",
            "192.0.1.0",
            "192.0.3.0",
            "192.88.98.255",
            "192.88.100.0",
            "192.167.255.255",
            "192.169.0.0",
            "198.17.255.255",
            "198.20.0.0",
            "198.51.99.255",
            "198.51.101.0",
            "203.0.112.255",
            "203.0.114.0",
            "223.255.255.255",
            "100:0:0:1::",
            "2001:db7:ffff:ffff:ffff:ffff:ffff:ffff",
            "2001:db9::",
            "fbff:ffff:ffff:ffff:ffff:ffff:ffff:ffff",
            "fe00::",
            "fe7f:ffff:ffff:ffff:ffff:ffff:ffff:ffff",
        ] {
            assert!(f.is_allowed(ip(a)), "{a}");
        }
    }

    #[test]
    fn public_addresses_allowed_by_default() {
        let f = PeerFilter::default();
        for a in [
            "8.8.8.8",
            "1.1.1.1",
            "93.184.216.34",
            "2607:f8b0::1",
            "2606:4700:4700::1111",
            "2a00:1450:4001:82a::200e",
            // IPv6 spellings of public IPv4 are fine too.
            "::ffff:8.8.8.8",
            "::8.8.8.8",
            "64:ff9b::808:808",
            // Under the local-use NAT64 prefix every RFC 6052 reading is 8.8.8.8.
            "64:ff9b:1:808:8:808:808:808",
            "2002:808:808::1",
            "2001:0:808:808:8000:ffff:f7f7:fbfb",
        ] {
            assert!(f.is_allowed(ip(a)), "{a}");
            assert_eq!(f.verdict(ip(a)), PeerVerdict::Allowed);
        }
    }

    #[test]
    fn bypass_forms_denied_by_default_and_allowed_only_with_the_embedded_address() {
        let default = PeerFilter::default();
        let unrelated = filter(&["198.51.100.0/24"], &[]);
        for t in PRIVATE_TARGETS {
            let target = v4(t);
            let exact = filter(&[&format!("{t}/32")], &[]);
            assert!(!default.is_allowed(IpAddr::V4(target)), "{t}");
            assert!(exact.is_allowed(IpAddr::V4(target)), "{t}");
            for (name, form) in bypass_forms(target) {
                let a = IpAddr::V6(form);
                assert!(
                    PeerFilter::embedded_ipv4(form).any(|e| e == target),
                    "{name} {form} must embed {t}"
                );
                assert!(
                    !default.is_allowed(a),
                    "{name} {form} ({t}) allowed by default"
                );
                if target != v4("198.51.100.1") {
                    assert!(
                        !unrelated.is_allowed(a),
                        "{name} {form} ({t}) allowed by unrelated"
                    );
                }
                // A local-use NAT64 address has other readings (zeros around the target, so
                // 0.x.x.x): allowing the target alone opens it only when they are the target
                // too.
                let others_open = PeerFilter::embedded_ipv4(form)
                    .all(|e| e == target || exact.is_allowed(IpAddr::V4(e)));
                assert_eq!(
                    exact.is_allowed(a),
                    others_open,
                    "{name} {form} ({t}) with allow {t}"
                );
                if !name.starts_with("nat64-local") {
                    assert!(others_open, "{name} {form} has one reading");
                }
            }
        }
    }

    #[test]
    fn teredo_requires_both_server_and_client_allowed() {
        // Server 10.0.0.1, client 192.168.1.1 (inverted: 3f57:fefe).
        let a = ip("2001:0:a00:1:0:0:3f57:fefe");
        assert_eq!(
            embedded("2001:0:a00:1:0:0:3f57:fefe"),
            [v4("10.0.0.1"), v4("192.168.1.1")]
        );
        assert!(!PeerFilter::default().is_allowed(a));
        assert!(!filter(&["10.0.0.0/8"], &[]).is_allowed(a));
        assert!(!filter(&["192.168.0.0/16"], &[]).is_allowed(a));
        assert!(filter(&["10.0.0.0/8", "192.168.0.0/16"], &[]).is_allowed(a));
    }

    #[test]
    fn allow_loopback_covers_mapped_loopback() {
        let f = filter(&["127.0.0.0/8"], &[]);
        assert!(f.is_allowed(ip("127.0.0.1")));
        assert!(f.is_allowed(ip("::ffff:127.0.0.1")));
        assert!(f.is_allowed(ip("64:ff9b::7f00:1")));
        // IPv6 loopback and other private ranges are untouched.
        assert!(!f.is_allowed(ip("::1")));
        assert!(!f.is_allowed(ip("10.0.0.1")));
        assert!(!f.is_allowed(ip("::ffff:10.0.0.1")));
    }

    #[test]
    fn allow_ipv6_loopback_alone() {
        let f = filter(&["::1"], &[]);
        assert!(f.is_allowed(ip("::1")));
        assert!(!f.is_allowed(ip("::")));
        assert!(!f.is_allowed(ip("127.0.0.1")));
    }

    #[test]
    fn allow_in_mapped_form_only_does_not_open_ipv4() {
        // Every form must pass; the embedded 127.0.0.1 is still on the built-in list.
        let f = filter(&["::ffff:127.0.0.0/104"], &[]);
        assert!(!f.is_allowed(ip("::ffff:127.0.0.1")));
        assert!(!f.is_allowed(ip("127.0.0.1")));
    }

    #[test]
    fn most_specific_entry_wins() {
        let f = filter(&["10.1.2.3"], &["10.0.0.0/8"]);
        assert!(f.is_allowed(ip("10.1.2.3")));
        assert!(f.is_allowed(ip("::ffff:10.1.2.3")));
        assert!(!f.is_allowed(ip("10.1.2.4")));
        assert!(!f.is_allowed(ip("::ffff:10.1.2.4")));

        let f = filter(&["10.0.0.0/8"], &["10.1.0.0/16"]);
        assert!(f.is_allowed(ip("10.2.0.1")));
        assert!(!f.is_allowed(ip("10.1.0.1")));
        assert!(!f.is_allowed(ip("64:ff9b::a01:1")));
        assert!(f.is_allowed(ip("64:ff9b::a02:1")));

        // Three levels, entries in any order.
        let f = filter(
            &["10.1.2.0/24", "10.0.0.0/8"],
            &["10.1.0.0/16", "10.1.2.128/25"],
        );
        assert!(f.is_allowed(ip("10.9.9.9")));
        assert!(!f.is_allowed(ip("10.1.9.9")));
        assert!(f.is_allowed(ip("10.1.2.1")));
        assert!(!f.is_allowed(ip("10.1.2.200")));
    }

    #[test]
    fn tie_between_allow_and_deny_is_denied() {
        let f = filter(&["10.0.0.0/8", "8.8.8.8"], &["10.0.0.0/8", "8.8.8.8/32"]);
        assert!(!f.is_allowed(ip("10.0.0.1")));
        assert!(!f.is_allowed(ip("8.8.8.8")));
        assert!(f.is_allowed(ip("8.8.4.4")));
    }

    #[test]
    fn explicit_deny_covers_public_ranges_in_every_form() {
        let f = filter(&[], &["8.8.8.0/24", "2607:f8b0::/32"]);
        for a in [
            "8.8.8.8",
            "::ffff:8.8.8.8",
            "::8.8.8.8",
            "64:ff9b::808:808",
            "2002:808:808::1",
            "2001:0:808:808:0:0:f7f7:fbfb",
            "2607:f8b0::1",
        ] {
            assert!(!f.is_allowed(ip(a)), "{a}");
        }
        assert!(f.is_allowed(ip("8.8.4.4")));
        assert!(f.is_allowed(ip("2606:4700::1")));
        // The built-in list still applies beside explicit denies.
        assert!(!f.is_allowed(ip("127.0.0.1")));
    }

    #[test]
    fn builtin_deny_yields_only_to_an_allow_at_least_as_specific() {
        // Wider than every built-in entry: opens none of them.
        let f = filter(&["0.0.0.0/0", "::/0"], &[]);
        for a in [
            "127.0.0.1",
            "10.0.0.1",
            "169.254.169.254",
            "::ffff:10.0.0.1",
            "::1",
            "::",
            "fe80::1",
            "fd00::1",
        ] {
            assert!(!f.is_allowed(ip(a)), "{a} opened by a /0");
        }
        assert!(f.is_allowed(ip("8.8.8.8")) && f.is_allowed(ip("2606:4700::1")));
        // Equal length opens the range (the laptop demo's 127.0.0.0/8, SFU back ends on 10/8).
        let f = filter(&["127.0.0.0/8", "10.0.0.0/8"], &[]);
        assert!(f.is_allowed(ip("127.0.0.1")) && f.is_allowed(ip("127.9.9.9")));
        assert!(f.is_allowed(ip("10.1.2.3")) && f.is_allowed(ip("::ffff:10.1.2.3")));
        // Longer opens just that part.
        let f = filter(&["169.254.169.254/32", "fe80::/64"], &[]);
        assert!(f.is_allowed(ip("169.254.169.254")));
        assert!(!f.is_allowed(ip("169.254.169.253")));
        assert!(f.is_allowed(ip("fe80::1")) && !f.is_allowed(ip("fe80:0:0:1::1")));
        // Shorter does not: 169.0.0.0/8 leaves the metadata range shut, opens the rest.
        let f = filter(&["169.0.0.0/8", "100.0.0.0/8", "fc00::/6"], &[]);
        assert!(!f.is_allowed(ip("169.254.169.254")));
        assert!(f.is_allowed(ip("169.1.1.1")));
        assert!(!f.is_allowed(ip("100.64.0.1")) && f.is_allowed(ip("100.1.1.1")));
        assert!(!f.is_allowed(ip("fd00::1")));
        // The longest matching allow is the one that counts.
        let f = filter(&["0.0.0.0/0", "127.0.0.0/8"], &[]);
        assert!(f.is_allowed(ip("127.0.0.1")) && !f.is_allowed(ip("10.0.0.1")));
        // An explicit deny still beats a shorter allow, and the built-in list a shorter one.
        let f = filter(&["10.0.0.0/8"], &["10.1.0.0/16"]);
        assert!(!f.is_allowed(ip("10.1.0.1")) && f.is_allowed(ip("10.2.0.1")));
        // Family-specific: an IPv4 allow does not open IPv6 ranges.
        let f = filter(&["127.0.0.0/8"], &[]);
        assert!(!f.is_allowed(ip("fe80::1")) && !f.is_allowed(ip("::1")));
    }

    #[test]
    fn local_use_nat64_needs_every_reading_allowed() {
        // Readings: /48 10.10.11.11, /56 10.11.11.12, /64 11.11.12.12, /96 12.12.13.13.
        let a = ip("64:ff9b:1:a0a:b:b0c:c0c:d0d");
        assert!(!PeerFilter::default().is_allowed(a));
        assert!(!filter(&["10.10.11.11"], &[]).is_allowed(a));
        assert!(filter(&["10.0.0.0/8"], &[]).is_allowed(a));
        // Each reading is checked: denying any one of them refuses the address.
        for r in ["10.10.11.11", "10.11.11.12", "11.11.12.12", "12.12.13.13"] {
            assert!(!filter(&["10.0.0.0/8"], &[r]).is_allowed(a), "{r}");
        }
        // The usual /96 spelling reads as 0.0.0.0 at /48: refused even for a public target,
        // since the relay does not know the length of the operator's NAT64 prefix.
        assert!(!PeerFilter::default().is_allowed(ip("64:ff9b:1::808:808")));
        assert!(!filter(&["8.8.8.8"], &[]).is_allowed(ip("64:ff9b:1::808:808")));
        // The well-known prefix has one reading (/96).
        assert!(PeerFilter::default().is_allowed(ip("64:ff9b::808:808")));
        // A private target at each place a local-use prefix may put it is refused.
        for t in ["10.0.0.1", "127.0.0.1", "169.254.169.254", "192.168.1.1"] {
            for len in [48, 56, 64] {
                let form = IpAddr::V6(local_use_at(len, v4(t)));
                assert!(
                    !PeerFilter::default().is_allowed(form),
                    "/{len} {form} ({t})"
                );
            }
        }
    }

    /// A host at 44.0.0.1 (public, on its interface) listening on 44.0.0.1:3478 and the admin
    /// listener on 44.0.0.1:9641, relaying on 44.0.0.1 and the private 10.0.0.5 advertised as
    /// 44.0.0.2, relay ports 49152-65535; loopback and a second public address 44.0.0.9 on its
    /// interfaces.
    fn own_host(wildcard: bool) -> OwnHost {
        use super::super::own_host::{HostAddrs, InterfaceAddr};
        use super::super::RelayAddr;
        let listen = if wildcard {
            "0.0.0.0:3478"
        } else {
            "44.0.0.1:3478"
        };
        let iface = |a: &str, prefix, loopback| InterfaceAddr {
            ip: ip(a),
            prefix,
            loopback,
        };
        OwnHost::new(&HostAddrs {
            listeners: vec![listen.parse().unwrap(), "44.0.0.1:9641".parse().unwrap()],
            relays: vec![
                RelayAddr {
                    bind: ip("44.0.0.1"),
                    advertised: ip("44.0.0.1"),
                },
                RelayAddr {
                    bind: ip("10.0.0.5"),
                    advertised: ip("44.0.0.2"),
                },
            ],
            relay_ports: (49152, 65535),
            interfaces: vec![
                iface("127.0.0.1", 8, true),
                iface("::1", 128, true),
                iface("44.0.0.1", 24, false),
                iface("44.0.0.9", 24, false),
                iface("10.0.0.5", 24, false),
                iface("2606:4700::5", 64, false),
            ],
        })
    }

    fn sa(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn own_addresses_are_refused_except_relay_ports_on_relay_ips() {
        let f = filter(&["10.0.0.0/8", "127.0.0.0/8"], &[]).with_own_host(own_host(false));
        // Relay IPs, bind and advertised: their relay ports only.
        for a in [
            "44.0.0.1",
            "44.0.0.2",
            "10.0.0.5",
            "::ffff:44.0.0.1",
            "64:ff9b::2c00:1",
        ] {
            assert_eq!(f.verdict(ip(a)), PeerVerdict::RelayPortsOnly, "{a}");
            assert!(!f.is_allowed(ip(a)), "{a}");
        }
        assert!(f.allows(sa("44.0.0.1:49152")) && f.allows(sa("44.0.0.2:65535")));
        assert!(f.allows(sa("[::ffff:44.0.0.1]:50000")));
        for p in [
            "44.0.0.1:3478",
            "44.0.0.1:9641",
            "44.0.0.1:22",
            "44.0.0.2:49151",
        ] {
            assert!(!f.allows(sa(p)), "{p}");
        }
        // Other own addresses: no port at all, whatever allow_peers says about their range.
        for a in [
            "44.0.0.9",
            "127.0.0.1",
            "::1",
            "0.0.0.0",
            "::",
            "2606:4700::5",
        ] {
            assert_eq!(f.verdict(ip(a)), PeerVerdict::Denied, "{a}");
            assert!(!f.allows(SocketAddr::new(ip(a), 50000)), "{a}");
        }
        // Every embedded form of an own address is own too.
        for a in [
            "::ffff:44.0.0.9",
            "::ffff:0:44.0.0.9",
            "64:ff9b::2c00:9",
            "2002:2c00:9::1",
        ] {
            assert_eq!(f.verdict(ip(a)), PeerVerdict::Denied, "{a}");
        }
        // Not own: the rules as before (127.0.0.2 is in the allowed 127/8, no wildcard).
        for a in ["44.0.0.3", "127.0.0.2", "10.0.0.6", "8.8.8.8"] {
            assert_eq!(f.verdict(ip(a)), PeerVerdict::Allowed, "{a}");
        }
        // Without allow_peers the built-in list still refuses a private relay IP outright.
        let plain = PeerFilter::default().with_own_host(own_host(false));
        assert_eq!(plain.verdict(ip("10.0.0.5")), PeerVerdict::Denied);
        assert_eq!(plain.verdict(ip("44.0.0.1")), PeerVerdict::RelayPortsOnly);
        // An explicit deny beats the exception.
        let denied = filter(&[], &["44.0.0.0/24"]).with_own_host(own_host(false));
        assert_eq!(denied.verdict(ip("44.0.0.1")), PeerVerdict::Denied);
    }

    #[test]
    fn wildcard_listener_makes_all_of_loopback_own() {
        let f = filter(&["127.0.0.0/8"], &[]).with_own_host(own_host(true));
        for a in [
            "127.0.0.1",
            "127.0.0.2",
            "127.255.255.254",
            "::ffff:127.0.0.3",
        ] {
            assert_eq!(f.verdict(ip(a)), PeerVerdict::Denied, "{a}");
        }
        // The interfaces' addresses are own with or without a wildcard.
        assert_eq!(f.verdict(ip("44.0.0.9")), PeerVerdict::Denied);
    }

    #[test]
    fn only_an_exact_allow_reopens_an_own_address() {
        let own = || own_host(true);
        // Broader entries never do.
        for broad in ["44.0.0.0/24", "44.0.0.8/31", "0.0.0.0/0", "44.0.0.9/31"] {
            let f = filter(&[broad], &[]).with_own_host(own());
            assert_eq!(f.verdict(ip("44.0.0.9")), PeerVerdict::Denied, "{broad}");
            assert!(!f.allows(sa("44.0.0.1:22")), "{broad}");
        }
        let f = filter(&["127.0.0.0/8", "::/0"], &[]).with_own_host(own());
        assert_eq!(f.verdict(ip("127.0.0.2")), PeerVerdict::Denied);
        assert_eq!(f.verdict(ip("2606:4700::5")), PeerVerdict::Denied);
        // A host route equal to the address reopens it, whole (every port), and only it.
        let f = filter(
            &["44.0.0.9", "44.0.0.1/32", "127.0.0.0/8", "127.0.0.2"],
            &[],
        )
        .with_own_host(own());
        assert_eq!(f.verdict(ip("44.0.0.9")), PeerVerdict::Allowed);
        assert_eq!(f.verdict(ip("::ffff:44.0.0.9")), PeerVerdict::Allowed);
        assert!(f.allows(sa("44.0.0.1:22")));
        assert_eq!(f.verdict(ip("127.0.0.2")), PeerVerdict::Allowed);
        assert_eq!(f.verdict(ip("127.0.0.3")), PeerVerdict::Denied);
        assert_eq!(f.verdict(ip("44.0.0.2")), PeerVerdict::RelayPortsOnly);
        // The exact entry still has to pass the built-in list and the explicit denies.
        let f = filter(&["10.0.0.5"], &["10.0.0.5/32"]).with_own_host(own());
        assert_eq!(f.verdict(ip("10.0.0.5")), PeerVerdict::Denied);
        let f = filter(&["::1"], &[]).with_own_host(own());
        assert_eq!(f.verdict(ip("::1")), PeerVerdict::Allowed);
    }

    #[test]
    fn mapped_verdict_equals_ipv4_verdict() {
        // Deterministic sweep: with IPv4-only rules, every embedding form of an address gets
        // the same verdict as the address itself.
        let filters = [
            PeerFilter::default(),
            filter(&["10.1.0.0/16", "127.0.0.1"], &["8.0.0.0/7", "10.1.1.0/24"]),
        ];
        let mut x: u32 = 0x1234_5678;
        for _ in 0..20_000 {
            x = x.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            let t = Ipv4Addr::from(x);
            for f in &filters {
                let want = f.is_allowed(IpAddr::V4(t));
                for (name, form) in bypass_forms(t) {
                    if name.starts_with("teredo") || name.starts_with("nat64-local") {
                        continue; // the partner address, or the other readings, are checked too
                    }
                    assert_eq!(f.is_allowed(IpAddr::V6(form)), want, "{name} {form} vs {t}");
                }
            }
        }
    }

    #[test]
    fn verdict_agrees_with_is_allowed_and_default_is_empty() {
        let f = PeerFilter::default();
        assert!(f.allow().is_empty() && f.deny().is_empty());
        let g = filter(&["10.0.0.0/8"], &["8.8.8.8"]);
        assert_eq!(g.allow(), [cidr("10.0.0.0/8")]);
        assert_eq!(g.deny(), [cidr("8.8.8.8/32")]);
        for a in ["10.0.0.1", "8.8.8.8", "8.8.4.4", "::1", "::ffff:10.0.0.1"] {
            let want = if g.is_allowed(ip(a)) {
                PeerVerdict::Allowed
            } else {
                PeerVerdict::Denied
            };
            assert_eq!(g.verdict(ip(a)), want, "{a}");
        }
    }

    #[test]
    fn cidr_parse_and_display_round_trip() {
        for (text, shown, prefix) in [
            ("10.0.0.0/8", "10.0.0.0/8", 8),
            ("::1/128", "::1/128", 128),
            ("fe80::/10", "fe80::/10", 10),
            ("127.0.0.1", "127.0.0.1/32", 32),
            ("::1", "::1/128", 128),
            ("0.0.0.0/0", "0.0.0.0/0", 0),
            ("::/0", "::/0", 0),
            ("10.1.2.3/8", "10.0.0.0/8", 8),
            ("fdff::1/7", "fc00::/7", 7),
            ("::ffff:10.0.0.1", "::ffff:10.0.0.1/128", 128),
            ("2001:DB8::/32", "2001:db8::/32", 32),
            ("10.0.0.0/08", "10.0.0.0/8", 8),
        ] {
            let c = cidr(text);
            assert_eq!(c.prefix(), prefix, "{text}");
            assert_eq!(c.to_string(), shown, "{text}");
            assert_eq!(cidr(&c.to_string()), c, "{text}");
        }
    }

    #[test]
    fn cidr_parse_errors() {
        use CidrParseError::*;
        for (text, err) in [
            ("", BadAddress),
            ("/8", BadAddress),
            ("foo", BadAddress),
            ("10.0.0/8", BadAddress),
            ("256.0.0.0/8", BadAddress),
            (" 10.0.0.0/8", BadAddress),
            ("fe80::1%eth0", BadAddress),
            ("[::1]/128", BadAddress),
            ("10.0.0.0/", BadPrefix),
            ("10.0.0.0/+8", BadPrefix),
            ("10.0.0.0/-1", BadPrefix),
            ("10.0.0.0/ 8", BadPrefix),
            ("10.0.0.0/8 ", BadPrefix),
            ("10.0.0.0/8/8", BadPrefix),
            ("10.0.0.0/x", BadPrefix),
            ("10.0.0.0/33", PrefixTooLong { max: 32 }),
            ("10.0.0.0/255", PrefixTooLong { max: 32 }),
            ("10.0.0.0/99999999999999999999", PrefixTooLong { max: 32 }),
            ("::/129", PrefixTooLong { max: 128 }),
            ("::/256", PrefixTooLong { max: 128 }),
        ] {
            assert_eq!(text.parse::<Cidr>(), Err(err), "{text:?}");
        }
        assert!(BadAddress.to_string().contains("address"));
        assert!(BadPrefix.to_string().contains("prefix"));
        let long = PrefixTooLong { max: 32 }.to_string();
        assert!(long.contains("too long") && long.contains("IPv4") && long.contains("32"));
        let long6 = PrefixTooLong { max: 128 }.to_string();
        assert!(long6.contains("IPv6") && long6.contains("128"));
        let _: &dyn std::error::Error = &BadAddress;
    }

    #[test]
    fn cidr_new_masks_host_bits_and_rejects_long_prefixes() {
        let c = Cidr::new(ip("10.1.2.3"), 8).unwrap();
        assert_eq!(c, Cidr::new(ip("10.0.0.0"), 8).unwrap());
        assert_eq!(c.addr(), ip("10.0.0.0"));
        assert_eq!(
            Cidr::new(ip("172.31.255.255"), 12).unwrap().addr(),
            ip("172.16.0.0")
        );
        assert_eq!(Cidr::new(ip("fe80::1"), 10).unwrap().addr(), ip("fe80::"));
        assert_eq!(
            Cidr::new(ip("febf:ffff::1"), 10).unwrap().addr(),
            ip("fe80::")
        );
        assert_eq!(Cidr::new(ip("1.2.3.4"), 0).unwrap().addr(), ip("0.0.0.0"));
        assert_eq!(Cidr::new(ip("ffff::1"), 0).unwrap().addr(), ip("::"));
        assert_eq!(Cidr::new(ip("1.2.3.4"), 32).unwrap().addr(), ip("1.2.3.4"));
        assert_eq!(Cidr::new(ip("::1"), 128).unwrap().addr(), ip("::1"));
        assert_eq!(Cidr::new(ip("1.2.3.4"), 33), None);
        assert_eq!(Cidr::new(ip("::1"), 129), None);
        assert_eq!(Cidr::new(ip("::1"), 255), None);
    }

    #[test]
    fn cidr_contains_boundaries_and_family() {
        let c = cidr("172.16.0.0/12");
        assert!(c.contains(ip("172.16.0.0")));
        assert!(c.contains(ip("172.31.255.255")));
        assert!(!c.contains(ip("172.32.0.0")));
        assert!(!c.contains(ip("172.15.255.255")));
        assert!(cidr("0.0.0.0/0").contains(ip("255.255.255.255")));
        assert!(!cidr("0.0.0.0/0").contains(ip("::1")));
        assert!(!cidr("0.0.0.0/0").contains(ip("::ffff:1.2.3.4")));
        assert!(cidr("::/0").contains(ip("ffff::1")));
        assert!(!cidr("::/0").contains(ip("1.2.3.4")));
        assert!(cidr("1.2.3.4").contains(ip("1.2.3.4")));
        assert!(!cidr("1.2.3.4").contains(ip("1.2.3.5")));
        assert!(cidr("fc00::/7").contains(ip("fdff:ffff:ffff:ffff:ffff:ffff:ffff:ffff")));
        assert!(!cidr("fc00::/7").contains(ip("fe00::")));
    }
}
