//! `turnd credentials`: mint TURN REST API credentials the way an application backend would,
//! so an operator can test a deployment (or paste a working `iceServers` entry) without
//! writing code.
//!
//! The scheme (draft-uberti-behave-turn-rest-00, as coturn and turnd implement it): the
//! username is `<unix-expiry>:<user-id>` (`<user-id>:<unix-expiry>` when the server is
//! configured with `rest_username_order = "user-first"`), the password
//! `base64(HMAC-SHA1(secret, username))`. A TTL beyond the server's `rest_max_ttl` is refused
//! here, since the server would refuse the credentials.

use crate::core::auth::{rest_api_password, RestUsernameOrder};
use std::time::Duration;

#[derive(Debug, Clone, clap::Args)]
pub struct CredentialsArgs {
    /// The shared secret, as in the server's `auth_secrets` (or TURND_AUTH_SECRETS's first entry)
    #[arg(long, value_name = "SECRET")]
    pub secret: Option<String>,
    /// The user id put after the expiry in the username
    #[arg(long, value_name = "ID", default_value = "turnd")]
    pub user: String,
    /// How long the credentials stay valid: 3600, 90s, 30m, 24h, 7d
    #[arg(long, value_name = "DURATION", default_value = "24h", value_parser = parse_ttl)]
    pub ttl: Duration,
    /// Host (and optional :port) clients reach the server at, for the iceServers URLs
    #[arg(long, value_name = "HOST[:PORT]", default_value = "localhost:3478")]
    pub host: String,
    /// Print only the iceServers JSON
    #[arg(long)]
    pub json: bool,
}

/// Minted credentials.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Minted {
    pub username: String,
    pub password: String,
    pub expires: u64,
}

/// Mints credentials for `user`, valid `ttl` from `unix_now`, with the username written in
/// `order` (the server's `rest_username_order`; [`RestUsernameOrder::default`] is the draft's
/// `<unix-expiry>:<user-id>`).
pub fn mint(
    secret: &str,
    user: &str,
    ttl: Duration,
    unix_now: u64,
    order: RestUsernameOrder,
) -> Minted {
    let expires = unix_now.saturating_add(ttl.as_secs());
    let username = order.username(expires, user);
    let password = rest_api_password(secret.as_bytes(), &username);
    Minted {
        username,
        password,
        expires,
    }
}

/// Refuses a `ttl` longer than the server's `rest_max_ttl` (seconds, 0 = no cap): the server
/// would answer such credentials with 401 as expiring too far ahead.
pub fn check_ttl(ttl: Duration, max_ttl: u64) -> Result<(), String> {
    if max_ttl != 0 && ttl.as_secs() > max_ttl {
        return Err(format!(
            "a TTL of {} s is longer than rest_max_ttl ({max_ttl} s): the server would refuse \
             these credentials (401, counted as expiry_too_far); ask for a shorter --ttl, or \
             raise rest_max_ttl (0 = no cap)",
            ttl.as_secs()
        ));
    }
    Ok(())
}

/// Parses `3600`, `90s`, `30m`, `24h`, `7d`.
pub fn parse_ttl(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (digits, unit) = match s.char_indices().find(|(_, c)| !c.is_ascii_digit()) {
        Some((i, _)) => s.split_at(i),
        None => (s, "s"),
    };
    let n: u64 = digits
        .parse()
        .map_err(|_| format!("`{s}` is not a duration like 3600, 30m, 24h or 7d"))?;
    let mult = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return Err(format!("`{s}`: unit must be s, m, h or d")),
    };
    if n == 0 {
        return Err("a TTL of 0 gives credentials that are already expired".into());
    }
    n.checked_mul(mult)
        .map(Duration::from_secs)
        .ok_or_else(|| format!("`{s}` is too long"))
}

/// Minimal JSON string escaping for the snippet (usernames and passwords are ASCII here,
/// but a user id may contain anything).
fn json_str(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// The `iceServers` array for `host`, over UDP and TCP.
pub fn ice_servers_json(m: &Minted, host: &str) -> String {
    let host = if host.parse::<std::net::Ipv6Addr>().is_ok() {
        format!("[{host}]:3478")
    } else if host.contains(':') {
        // `name:port` or `[v6]:port`: the port is given.
        host.to_string()
    } else {
        format!("{host}:3478")
    };
    format!(
        "{{\"iceServers\":[{{\"urls\":[{},{}],\"username\":{},\"credential\":{}}}]}}",
        json_str(&format!("turn:{host}?transport=udp")),
        json_str(&format!("turn:{host}?transport=tcp")),
        json_str(&m.username),
        json_str(&m.password)
    )
}

/// A UTC timestamp `YYYY-MM-DDTHH:MM:SSZ` for `unix` seconds (civil-from-days, proleptic
/// Gregorian), so the output says when the credentials stop working.
pub fn utc(unix: u64) -> String {
    let days = (unix / 86_400) as i64;
    let secs = unix % 86_400;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        secs / 3600,
        secs % 3600 / 60,
        secs % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mints_the_rest_api_scheme() {
        // Expected password computed with:
        // printf %s '1700086400:alice' | openssl dgst -binary -sha1 -hmac north | base64
        // python3 -c "import hmac,hashlib,base64; print(base64.b64encode(hmac.new(b'north',
        //   b'1700086400:alice', hashlib.sha1).digest()).decode())"
        // (and the same two for 'alice:1700086400').
        let day = Duration::from_secs(86_400);
        let m = mint("north", "alice", day, 1_700_000_000, Default::default());
        assert_eq!(m.username, "1700086400:alice");
        assert_eq!(m.expires, 1_700_086_400);
        // Answers computed outside this code (the two commands above agree); comparing with
        // `rest_api_password` itself would pass whatever that function computed.
        assert_eq!(m.password, "SXua5ne/+mDhiHTp0pQJzRO4ESg=");
        let m = mint(
            "north",
            "alice",
            day,
            1_700_000_000,
            RestUsernameOrder::UserFirst,
        );
        assert_eq!(m.username, "alice:1700086400");
        assert_eq!(m.password, "gY6OKnTo0pfuyBpk7QnHUFzOaCY=");
    }

    #[test]
    fn minted_credentials_authenticate_within_the_cap_only() {
        use crate::core::auth::{long_term_key, AuthError, Credentials, RestPolicy};
        let now = 1_700_000_000;
        for order in [RestUsernameOrder::ExpiryFirst, RestUsernameOrder::UserFirst] {
            let creds =
                Credentials::new("r", [], ["north".to_string()]).with_rest_policy(RestPolicy {
                    order,
                    max_ttl: 604_800,
                });
            for (ttl, ok) in [(604_800, true), (604_801, false)] {
                let ttl = Duration::from_secs(ttl);
                assert_eq!(check_ttl(ttl, 604_800).is_ok(), ok);
                let m = mint("north", "alice", ttl, now, order);
                let key = long_term_key(&m.username, "r", &m.password);
                let got = creds.authenticate(&m.username, now, |k| *k == key);
                assert_eq!(got.is_ok(), ok, "{order:?} {ttl:?}");
                if !ok {
                    assert_eq!(got, Err(AuthError::ExpiryTooFar));
                }
            }
        }
        let msg = check_ttl(Duration::from_secs(30 * 86_400), 604_800).unwrap_err();
        assert!(msg.contains("rest_max_ttl (604800 s)"), "{msg}");
        assert!(
            check_ttl(Duration::from_secs(u64::MAX), 0).is_ok(),
            "0 = no cap"
        );
    }

    #[test]
    fn ttl_forms() {
        assert_eq!(parse_ttl("3600"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse_ttl("90s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_ttl("30m"), Ok(Duration::from_secs(1800)));
        assert_eq!(parse_ttl("24h"), Ok(Duration::from_secs(86_400)));
        assert_eq!(parse_ttl("7d"), Ok(Duration::from_secs(604_800)));
        assert!(parse_ttl("0").is_err());
        assert!(parse_ttl("1w").is_err());
        assert!(parse_ttl("h").is_err());
        assert!(parse_ttl("99999999999999999999d").is_err());
    }

    #[test]
    fn utc_dates() {
        assert_eq!(utc(0), "1970-01-01T00:00:00Z");
        assert_eq!(utc(1_700_000_000), "2023-11-14T22:13:20Z");
        assert_eq!(utc(951_782_400), "2000-02-29T00:00:00Z");
    }

    #[test]
    fn json_snippet() {
        let m = Minted {
            username: "1:a\"b".into(),
            password: "p/w=".into(),
            expires: 1,
        };
        assert_eq!(
            ice_servers_json(&m, "turn.example.com"),
            "{\"iceServers\":[{\"urls\":[\"turn:turn.example.com:3478?transport=udp\",\
             \"turn:turn.example.com:3478?transport=tcp\"],\"username\":\"1:a\\\"b\",\"credential\":\"p/w=\"}]}"
        );
        assert!(ice_servers_json(&m, "h:5349").contains("turn:h:5349?transport=udp"));
        assert!(ice_servers_json(&m, "::1").contains("turn:[::1]:3478?transport=tcp"));
    }
}
