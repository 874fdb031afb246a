//! The small value types of the configuration: [`PortRange`], [`ExternalIp`],
//! [`User`], [`LogFormat`], [`Amplification`], [`XdpMode`], each with the text form used in
//! the file, env vars and flags.

use std::fmt;
use std::net::IpAddr;
use std::num::IntErrorKind;
use std::str::FromStr;

use crate::core::auth::UserSecret;

/// Why a config value's text did not parse. The message quotes the text and
/// says what was expected, e.g. "`70000-80000` is not a port range LOW-HIGH
/// (number too large)".
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValueError(pub(crate) String);

impl fmt::Display for ValueError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ValueError {}

/// An inclusive range of UDP ports for relayed transport addresses, written
/// `LOW-HIGH` (`49152-65535`). A single port `N` means `N-N`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PortRange {
    pub low: u16,
    pub high: u16,
}

impl PortRange {
    /// RFC 8656 §5 suggests the IANA dynamic range for relayed addresses.
    pub const DEFAULT: PortRange = PortRange {
        low: 49152,
        high: 65535,
    };

    /// How many ports the range holds (at least 1).
    pub fn len(&self) -> usize {
        usize::from(self.high) - usize::from(self.low) + 1
    }

    /// Always false: a range holds at least one port. (For clippy's `len_without_is_empty`.)
    pub fn is_empty(&self) -> bool {
        false
    }

    pub fn contains(&self, port: u16) -> bool {
        (self.low..=self.high).contains(&port)
    }
}

impl Default for PortRange {
    fn default() -> Self {
        PortRange::DEFAULT
    }
}

impl FromStr for PortRange {
    type Err = ValueError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = |why: &str| ValueError(format!("`{s}` is not a port range LOW-HIGH ({why})"));
        let port = |text: &str| -> Result<u16, ValueError> {
            let text = text.trim();
            text.parse::<u16>().map_err(|e| match e.kind() {
                IntErrorKind::Empty => bad("a number is missing"),
                IntErrorKind::PosOverflow => bad("number too large"),
                _ => bad(&format!("`{text}` is not a port number")),
            })
        };
        let (low, high) = match s.split_once('-') {
            Some((low, high)) => (port(low)?, port(high)?),
            None => {
                let p = port(s)?;
                (p, p)
            }
        };
        if low == 0 {
            return Err(bad("port 0 is not a port; the lowest is 1"));
        }
        if low > high {
            return Err(bad(&format!("LOW {low} is greater than HIGH {high}")));
        }
        Ok(PortRange { low, high })
    }
}

impl fmt::Display for PortRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.low, self.high)
    }
}

/// How log lines are written (config key `log_format`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

impl LogFormat {
    pub fn as_str(self) -> &'static str {
        match self {
            LogFormat::Text => "text",
            LogFormat::Json => "json",
        }
    }
}

impl FromStr for LogFormat {
    type Err = ValueError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "text" => Ok(LogFormat::Text),
            "json" => Ok(LogFormat::Json),
            _ => Err(ValueError(format!(
                "`{s}` is not a log format: text or json"
            ))),
        }
    }
}

impl fmt::Display for LogFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Whether an unauthenticated request is answered when the answer is larger than the request
/// (config key `amplification`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Amplification {
    /// Answer it (the default: real clients' first Allocate is smaller than its 401).
    Allow,
    /// Drop it, so turnd never amplifies.
    Refuse,
}

impl FromStr for Amplification {
    type Err = ValueError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "allow" => Ok(Amplification::Allow),
            "refuse" => Ok(Amplification::Refuse),
            _ => Err(ValueError(format!("`{s}` is neither `allow` nor `refuse`"))),
        }
    }
}

impl fmt::Display for Amplification {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Amplification::Allow => "allow",
            Amplification::Refuse => "refuse",
        })
    }
}

/// The address to advertise to clients instead of a relay IP, for a server
/// behind 1:1 NAT (a cloud VM whose interface has a private address).
///
/// Written like coturn's `external-ip`: `PUBLIC/PRIVATE` means "relay IP
/// PRIVATE is reachable as PUBLIC"; a bare `PUBLIC` applies to every relay IP
/// of the same family that has no `PUBLIC/PRIVATE` entry of its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ExternalIp {
    pub public: IpAddr,
    pub private: Option<IpAddr>,
}

impl FromStr for ExternalIp {
    type Err = ValueError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = |why: String| {
            ValueError(format!(
                "`{s}` is not an external IP PUBLIC or PUBLIC/PRIVATE ({why})"
            ))
        };
        let ip = |text: &str| -> Result<IpAddr, ValueError> {
            let text = text.trim();
            let ip: IpAddr = text
                .parse()
                .map_err(|_| bad(format!("`{text}` is not an IP address")))?;
            if ip.is_unspecified() {
                return Err(bad(format!("{ip} is the unspecified address")));
            }
            Ok(ip)
        };
        let (public, private) = match s.split_once('/') {
            Some((public, private)) => (ip(public)?, Some(ip(private)?)),
            None => (ip(s)?, None),
        };
        if let Some(private) = private {
            if private.is_ipv4() != public.is_ipv4() {
                return Err(bad(format!(
                    "{public} and {private} are of different IP families"
                )));
            }
        }
        Ok(ExternalIp { public, private })
    }
}

impl fmt::Display for ExternalIp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.private {
            Some(private) => write!(f, "{}/{}", self.public, private),
            None => write!(f, "{}", self.public),
        }
    }
}

/// A long-term-credential user (RFC 8489 §9.2): a name and either the
/// password or the precomputed key MD5(name:realm:password).
///
/// `Debug` never prints the secret, so a `{:?}` of the config is safe to log.
pub struct User {
    pub name: String,
    pub secret: UserSecret,
}

impl User {
    /// The longest USERNAME RFC 8489 §14.3 allows, in bytes.
    pub const MAX_NAME_BYTES: usize = 512;

    pub fn with_password(name: impl Into<String>, password: impl Into<String>) -> Self {
        User {
            name: name.into(),
            secret: UserSecret::Password(password.into()),
        }
    }

    pub fn with_key(name: impl Into<String>, key: [u8; 16]) -> Self {
        User {
            name: name.into(),
            secret: UserSecret::Key(key),
        }
    }

    /// Whether the secret is a password (as opposed to a precomputed key).
    pub fn has_password(&self) -> bool {
        matches!(self.secret, UserSecret::Password(_))
    }
}

/// `NAME:PASSWORD`, split at the first `:` (passwords may contain `:`), the
/// form used by `--user` and `TURND_USERS`.
impl FromStr for User {
    type Err = ValueError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.split_once(':') {
            Some((name, password)) => Ok(User::with_password(name, password)),
            None => Err(ValueError(format!(
                "`{}` is not a user NAME:PASSWORD (there is no `:`)",
                redact_after_colon(s)
            ))),
        }
    }
}

/// Hides what could be a password in an error message. Without a `:` there is
/// no telling name from password, so all of it is hidden.
fn redact_after_colon(s: &str) -> String {
    match s.split_once(':') {
        Some((name, _)) => format!("{name}:<redacted>"),
        None => "<redacted>".to_string(),
    }
}

// `UserSecret` comes from the core and may not derive these, so they are
// written out by hand. Clone and PartialEq are exact; Debug redacts.
impl Clone for User {
    fn clone(&self) -> Self {
        let secret = match &self.secret {
            UserSecret::Password(p) => UserSecret::Password(p.clone()),
            UserSecret::Key(k) => UserSecret::Key(*k),
            UserSecret::Keys { md5, sha256 } => UserSecret::Keys {
                md5: *md5,
                sha256: *sha256,
            },
        };
        User {
            name: self.name.clone(),
            secret,
        }
    }
}

impl PartialEq for User {
    fn eq(&self, other: &Self) -> bool {
        self.name == other.name
            && match (&self.secret, &other.secret) {
                (UserSecret::Password(a), UserSecret::Password(b)) => a == b,
                (UserSecret::Key(a), UserSecret::Key(b)) => a == b,
                (
                    UserSecret::Keys { md5: a, sha256: x },
                    UserSecret::Keys { md5: b, sha256: y },
                ) => a == b && x == y,
                _ => false,
            }
    }
}

impl Eq for User {}

impl fmt::Debug for User {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let secret = match self.secret {
            UserSecret::Password(_) => "Password(<redacted>)",
            UserSecret::Key(_) => "Key(<redacted>)",
            UserSecret::Keys { .. } => "Keys(<redacted>)",
        };
        f.debug_struct("User")
            .field("name", &self.name)
            .field("secret", &format_args!("{secret}"))
            .finish()
    }
}

/// Whether and how turnd attaches its XDP program (config key `xdp`; docs/xdp.md).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum XdpMode {
    /// No XDP: every datagram goes through the sockets (the default).
    Off,
    /// Native, else generic, else user space with one warning line.
    Auto,
    /// The driver's own XDP hook; turnd refuses to start without it.
    Native,
    /// The kernel's generic (skb) hook, which every interface has; refused as above.
    Generic,
}

impl XdpMode {
    pub fn as_str(self) -> &'static str {
        match self {
            XdpMode::Off => "off",
            XdpMode::Auto => "auto",
            XdpMode::Native => "native",
            XdpMode::Generic => "generic",
        }
    }
}

impl FromStr for XdpMode {
    type Err = ValueError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "off" => Ok(XdpMode::Off),
            "auto" => Ok(XdpMode::Auto),
            "native" => Ok(XdpMode::Native),
            "generic" => Ok(XdpMode::Generic),
            _ => Err(ValueError(format!(
                "`{s}` is not an XDP mode: off, auto, native or generic"
            ))),
        }
    }
}

impl fmt::Display for XdpMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}
