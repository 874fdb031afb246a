//! Every configuration key, declared once.
//!
//! Each entry below is one key: its doc comment (the first paragraph a one-line summary), its
//! `Config` field and type, its default, its flag and the flag's value name, how it is parsed,
//! and whether SIGHUP applies it. From this table come the [`Config`] struct and its `Default`,
//! the [`ConfigArgs`] flags (`turnd --help` shows the doc comments, grouped by section), the
//! `TURND_<KEY>` variables, the TOML keys, `turnd check-config`'s output, `docs/configuration.md`
//! and `config/turnd.toml`.
//!
//! An entry reads:
//!
//! ```text
//! /// Summary, one line.
//! ///
//! /// More paragraphs, for --help, docs/configuration.md and config/turnd.toml.
//! #[arg(value_delimiter = ',')]          // optional: more clap settings for the flag
//! field: Type = default_expr => {
//!     flag: arg_field "VALUE", parse: one(parse_fn), sighup: restart,
//!     example: r#"["..."]"#,
//! },
//! ```
//!
//! - `flag`: the `ConfigArgs` field (the flag is `--arg-field`) and the flag's value name,
//!   which also names the type in the reference.
//! - `parse`: `one`, `switch`, `list` (each with a parser) or `users`; see below.
//! - `sighup`: `applied` if SIGHUP applies a new value, else `restart`.
//! - Then, optionally, [`Key`](super::declare::Key) fields by name: `example` (a TOML value for
//!   `config/turnd.toml` and the reference), `shown_default` (the default in words, where the
//!   value would not read well), `render` (to redact a secret).
//!
//! `one` is a single value, `switch` a single value the file may give as a TOML boolean, `list`
//! several (a TOML array, a comma-separated variable, a repeated flag), `users` the `[[users]]`
//! tables. `parse_fn` turns one text value into the field's type (or into one item of a list),
//! with a message saying what was expected; the message is prefixed with the key and where the
//! value came from. They are in `parse.rs`.
//!
//! # Adding a key
//!
//! 1. Add an entry below, in the section it belongs to. If no parser in `parse.rs` fits, add
//!    one there (`fn(&str) -> Result<T, String>`); a type with `FromStr` can use
//!    `parse::from_str`. A new field type needs a `TomlValue` impl in `render.rs` (most are
//!    there already).
//! 2. Use the field where it takes effect (usually `src/shell/setup.rs` → `CoreConfig`, or the
//!    shell). If SIGHUP should apply it (`sighup: applied`), `Server::reload` must do so.
//! 3. Run `UPDATE_CONFIG_DOCS=1 cargo test --lib config::` to regenerate
//!    `docs/configuration.md` and `config/turnd.toml`, and commit them; without it the
//!    `generated_files_are_up_to_date` test fails and says so. Rules that span keys
//!    (`default_lifetime <= max_lifetime`) are ordinary code in `build.rs`'s `cross_checks`.
//!
//! Nothing else lists the keys: the flag, variable, file key, check-config line, reference entry
//! and example-file entry all follow. `tests_cli.rs` sets every key by flag and by variable and
//! needs a sample value for the new key.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;

use crate::core::auth::{RestUsernameOrder, DEFAULT_REST_MAX_TTL};
use crate::core::peer_filter::Cidr;
use crate::core::rate_limit::Rate;

use super::declare::config_keys;
use super::parse::*;
use super::render::{quote, redacted_list};
use super::types::{Amplification, ExternalIp, LogFormat, PortRange, User, XdpMode};
use super::REDACTED;

/// Default `udp_coalesce`: 200 µs. Under a steady load it halved turnd's CPU per relayed
/// datagram on the development machine (README, Performance) for at most 0.2 ms more per hop,
/// far below what a call's jitter buffer absorbs; an idle or lightly loaded worker never waits.
pub const DEFAULT_UDP_COALESCE_US: u32 = 200;

/// The hand-written start of `docs/configuration.md`: what holds for every key.
#[cfg(test)]
pub(crate) const INTRO: &str = "\
Settings come from, lowest precedence first: built-in defaults, the TOML file given by `--config \
FILE` (or the variable `TURND_CONFIG`), `TURND_<KEY>` environment variables, and flags. A source \
that sets a key replaces the value below it, lists included: `--listen X` means \"listen on X \
only\", whatever the file said.

Lists are TOML arrays of strings in the file (a lone string is a list of one), comma-separated in \
a variable (`TURND_LISTEN=127.0.0.1:3478,[::1]:3478`, `TURND_USERS=alice:pw1,bob:pw2`), and a \
repeated flag on the command line (`--listen A --listen B`). An empty variable sets an empty list.

Unknown keys are an error, not ignored: a key in the file or a `TURND_*` variable that names no \
setting stops start-up, with the closest known name, so a typo cannot silently leave a setting at \
its default. Every problem is reported at once, each naming its key and where the value came from \
(the file, a variable or a flag).

`turnd check-config --config FILE` validates everything start-up would and prints the effective \
configuration, secrets redacted. On SIGHUP turnd reloads the configuration from the same sources: \
keys marked *applied* take effect at once; the others keep their running value until the next \
start, and turnd logs which of them changed. The annotated example is \
[`config/turnd.toml`](../config/turnd.toml).";

config_keys! {
    /// Where turnd accepts clients.
    section "Listening" {
        /// Addresses serving STUN and TURN, over UDP and TCP on the same port.
        ///
        /// 3478 is the standard port; port 0 picks a free one. The default takes every IPv4
        /// interface; add `[::]:3478` (or a specific IPv6 address) to serve IPv6 clients too.
        #[arg(value_delimiter = ',')]
        listen: Vec<SocketAddr> = vec![SocketAddr::from(([0, 0, 0, 0], 3478))] => {
            flag: listen "IP:PORT", parse: list(socket_addr), sighup: restart,
        },

        /// Addresses serving TURN over TLS (`turns:` URLs); empty means no TLS.
        ///
        /// Each address has its own port: 5349 is the standard one, and 443 gets through
        /// firewalls that let only HTTPS out (a port below 1024 needs CAP_NET_BIND_SERVICE); port
        /// 0 picks a free one. Needs `tls_cert` and `tls_key`. The TLS handshake must finish
        /// within `unauthenticated_timeout`. ALPN "stun.turn" and "stun.nat-discovery" (RFC 7443)
        /// are accepted, as are clients sending none.
        tls_listen: Vec<SocketAddr> = Vec::new() => {
            flag: tls_listen "IP:PORT", parse: list(socket_addr), sighup: restart,
            example: r#"["0.0.0.0:5349", "0.0.0.0:443"]"#,
        },

        /// PEM certificate chain for TLS, leaf first (Let's Encrypt's `fullchain.pem`).
        ///
        /// It is loaded at start-up (a file that does not load stops it), and again on SIGHUP or
        /// when the file changes (checked every 2 s), so a renewed certificate is served without
        /// a restart and without dropping connections; a new pair that does not load is logged
        /// and the old one stays in use. A new file *name* waits for a restart.
        tls_cert: Option<PathBuf> = None => {
            flag: tls_cert "FILE", parse: one(path), sighup: restart,
            example: r#""/etc/letsencrypt/live/turn.example.com/fullchain.pem""#,
        },

        /// PEM private key of `tls_cert` (PKCS#8, PKCS#1 or SEC1).
        ///
        /// It is reloaded with the certificate, as `tls_cert` describes.
        tls_key: Option<PathBuf> = None => {
            flag: tls_key "FILE", parse: one(path), sighup: restart,
            example: r#""/etc/letsencrypt/live/turn.example.com/privkey.pem""#,
        },

        /// RFC 5780 NAT behaviour discovery: a second address IP2:P2; empty (the default) is off.
        ///
        /// It is paired with the first `listen` address of its family (IP1:P1), which must name a
        /// specific IP, and turnd also listens on IP1:P2, IP2:P1 and IP2:P2 over UDP. Binding
        /// answers then carry OTHER-ADDRESS (IP2:P2) and RESPONSE-ORIGIN and come from the
        /// address CHANGE-REQUEST asks for, so clients (`turnutils_natdiscovery`, `stunclient`)
        /// can classify their NAT. Only Binding is served on the three extra addresses; TURN
        /// stays on the listen address. At most one per IP family.
        nat_discovery_listen: Vec<SocketAddr> = Vec::new() => {
            flag: nat_discovery_listen "IP:PORT", parse: list(socket_addr), sighup: restart,
            example: r#"["203.0.113.2:3479"]"#,
        },
    }

    /// The addresses peers send to: each allocation holds one port on one of these IPs.
    section "Relayed addresses" {
        /// Local IPs relayed addresses are allocated on; empty means the listen IPs.
        ///
        /// For a wildcard listener (`0.0.0.0`, `[::]`) the address of the default route's
        /// interface is used, of both families when the host has both. Set it when the host has
        /// several addresses and relaying must use a particular one. One IPv4 and one IPv6
        /// address (e.g. `["192.0.2.10", "2001:db8::10"]`) let clients ask for both in one
        /// allocation (ADDITIONAL-ADDRESS-FAMILY).
        #[arg(value_delimiter = ',')]
        relay_ips: Vec<IpAddr> = Vec::new() => {
            flag: relay_ip "IP", parse: list(relay_ip), sighup: restart,
            shown_default: "the listen IPs",
        },

        /// UDP ports relayed addresses are taken from, `LOW-HIGH` (a single port N is N-N).
        ///
        /// Each allocation holds one port, so the size of the range caps the number of
        /// allocations per relay IP. Narrow it to match a firewall rule (and open exactly this
        /// range); the default is the IANA dynamic range, as RFC 8656 suggests.
        relay_ports: PortRange = PortRange::DEFAULT => {
            flag: relay_ports "LOW-HIGH", parse: one(from_str::<PortRange>), sighup: restart,
        },

        /// Public addresses advertised instead of relay IPs, behind 1:1 NAT.
        ///
        /// On a typical cloud VM (or in Docker) the interface has a private address while the
        /// world sees a public one, and clients must be told the public one in
        /// XOR-RELAYED-ADDRESS. `PUBLIC` applies to every relay IP of its family that has no
        /// entry of its own; `PUBLIC/PRIVATE` applies to relay IP `PRIVATE` only. Not needed on a
        /// laptop or on a host with a public IP.
        #[arg(value_delimiter = ',')]
        external_ips: Vec<ExternalIp> = Vec::new() => {
            flag: external_ip "PUBLIC[/PRIVATE]", parse: list(from_str::<ExternalIp>),
            sighup: restart,
            example: r#"["203.0.113.10/10.0.0.5"]"#,
        },
    }

    /// Who may allocate: static users (long-term credentials, RFC 8489 §9.2) and TURN REST API
    /// secrets. SIGHUP applies new ones; allocations already made keep running.
    section "Credentials" {
        /// The realm clients see in 401 responses and mix into their credentials.
        ///
        /// A user's key is MD5(name:realm:password), so changing the realm invalidates every
        /// precomputed user `key`: choose it once; your domain is the usual choice. At most 127
        /// characters, without `"`, `\` or control characters.
        realm: String = "turnd".to_string() => {
            flag: realm "REALM", parse: one(realm), sighup: applied,
        },

        /// Static users, each with a password or a key.
        ///
        /// In the file, a list of tables with `name` and exactly one of `password` (the password
        /// itself) or `key`: 32 hex digits, MD5(name:realm:password), so the file need not hold
        /// the password (`echo -n 'alice:turnd.local:alice-password' | md5sum`). The tables may
        /// also be written as `[[users]]` sections at the end of the file. As a flag or
        /// variable, `NAME:PASSWORD`, split at the first `:`. A flag is visible in `ps`: prefer
        /// the file for real passwords.
        users: Vec<User> = Vec::new() => {
            flag: user "NAME:PASSWORD", parse: users, sighup: applied,
        },

        /// Shared secrets for TURN REST API (time-limited) credentials.
        ///
        /// Your web app hands each client the username `EXPIRY:ID` and the password
        /// base64(HMAC-SHA1(secret, username)), so no per-user setup is needed here (`turnd
        /// credentials` mints such a pair). List several to rotate without downtime: add the new
        /// one, switch the app over, then remove the old one. Keep them out of version control,
        /// e.g. in `TURND_AUTH_SECRETS` in the service's environment.
        auth_secrets: Vec<String> = Vec::new() => {
            flag: auth_secret "SECRET", parse: list(secret), sighup: applied,
            example: r#"["change-me-to-a-long-random-string"]"#,
            render: |c| Some(redacted_list(&c.auth_secrets)),
        },

        /// Where a TURN REST API username carries its expiry: `expiry-first` or `user-first`.
        ///
        /// `expiry-first` (the default) reads `EXPIRY:ID` (or a bare `EXPIRY`), as the TURN REST
        /// API draft and coturn do; `user-first` reads `ID:EXPIRY`, for an application that mints
        /// it that way. Only the configured position is read, so a numeric ID can never pass for
        /// an expiry.
        rest_username_order: RestUsernameOrder = RestUsernameOrder::ExpiryFirst => {
            flag: rest_username_order "expiry-first|user-first",
            parse: one(rest_username_order), sighup: applied,
        },

        /// The furthest ahead of now, in seconds, a REST username's expiry may lie; 0 = no cap.
        ///
        /// A username valid for longer is refused like an expired one (401, counted as
        /// `turnd_auth_failures_total{reason="expiry_too_far"}`), so a backend bug cannot mint a
        /// credential that outlives every secret rotation. The default is 7 days.
        rest_max_ttl: u32 = DEFAULT_REST_MAX_TTL as u32 => {
            flag: rest_max_ttl "SECONDS", parse: one(max_ttl), sighup: applied,
        },

        /// `true` sets RFC 8489's "Username anonymity" bit: clients then send USERHASH.
        ///
        /// RFC 8489 clients send SHA-256(username:realm) instead of the username. Only static
        /// users can be found by their hash (not TURN REST API usernames), so leave it off with
        /// `auth_secrets`.
        userhash: bool = false => {
            flag: userhash "true|false", parse: switch(boolean), sighup: restart,
        },

        /// Seconds a NONCE is accepted before a 438 (Stale Nonce) makes the client retry.
        ///
        /// Shorter limits replay of captured requests, at the cost of more round trips.
        nonce_lifetime: u32 = 600 => {
            flag: nonce_lifetime "SECONDS", parse: one(seconds), sighup: restart,
        },
    }

    /// By default turnd refuses to relay to loopback, private, link-local (including the cloud
    /// metadata address) and other special-purpose addresses, so that the relay cannot be used to
    /// reach machines inside your network. These two keys adjust that; where entries overlap,
    /// the most specific network wins. A denied peer gets 403 on CreatePermission and
    /// ChannelBind; Send indications to it are dropped.
    ///
    /// The built-in filter denies 0.0.0.0/8, 10/8, 100.64/10, 127/8, 169.254/16, 172.16/12,
    /// 192.0.0/24, 192.0.2/24, 192.88.99/24, 192.168/16, 198.18/15, 198.51.100/24, 203.0.113/24,
    /// 224/4, 240/4, ::, ::1, 100::/64, 2001:db8::/32, fc00::/7, fec0::/10, fe80::/10, ff00::/8,
    /// and any IPv6 address embedding a denied IPv4 address (`::ffff:a.b.c.d`, `::a.b.c.d`,
    /// `64:ff9b::/96`, `64:ff9b:1::/48`, `2002::/16`, Teredo).
    section "Peer filter" {
        /// Peer networks relayed to even though the built-in filter denies them.
        ///
        /// Each is `ADDR/PREFIX` or a single IP; for example media servers on 10.0.0.0/8. An
        /// entry opens a built-in range only if it is at least as specific as that range, so
        /// `0.0.0.0/0` or `::/0` opens none of them and `169.0.0.0/8` does not open the cloud
        /// metadata range 169.254.0.0/16.
        ///
        /// This host itself is never a peer: every address turnd listens, relays or advertises
        /// on, and every address of the host's interfaces, is refused on every port except the
        /// relay ports of the relay IPs (so two clients of this server still reach each other's
        /// relayed addresses). Only an entry naming one of those addresses exactly (for example
        /// `127.0.0.1`) reopens it, on every port.
        #[arg(value_delimiter = ',')]
        allow_peers: Vec<Cidr> = Vec::new() => {
            flag: allow_peer "CIDR", parse: list(cidr), sighup: applied,
            example: r#"["10.0.0.0/8"]"#,
        },

        /// Peer networks never relayed to, in addition to the built-in ones.
        ///
        /// Each is `ADDR/PREFIX` or a single IP; for example your own public prefix.
        #[arg(value_delimiter = ',')]
        deny_peers: Vec<Cidr> = Vec::new() => {
            flag: deny_peer "CIDR", parse: list(cidr), sighup: applied,
            example: r#"["198.51.100.0/24"]"#,
        },
    }

    /// How long allocations live, and how many each user and the server hold.
    section "Allocations" {
        /// Allocation lifetime, seconds, when the client asks for none (RFC 8656: 10 minutes).
        ///
        /// At most `max_lifetime`.
        default_lifetime: u32 = 600 => {
            flag: default_lifetime "SECONDS", parse: one(seconds), sighup: restart,
        },

        /// The longest allocation lifetime granted, seconds.
        ///
        /// Clients refresh before expiry; a longer lifetime lets a vanished client keep its port
        /// longer.
        max_lifetime: u32 = 3600 => {
            flag: max_lifetime "SECONDS", parse: one(seconds), sighup: restart,
        },

        /// Most allocations one user (a static user, or a REST API user id) holds at once; 0 =
        /// no limit.
        ///
        /// Beyond it Allocate gets 486 (Allocation Quota Reached), so one client cannot take
        /// every relay port. A REST user's credentials of every expiry count together (the
        /// user id part of `expiry:user-id`), so minting more credentials buys no more
        /// allocations. With `store`, counted across every node sharing it.
        user_quota: u32 = 0 => {
            flag: user_quota "N", parse: one(count), sighup: restart,
            example: "10",
        },

        /// Most allocations the whole server holds at once; 0 = no limit.
        ///
        /// Beyond it Allocate gets 486, or 300 (Try Alternate) when `alternate_servers` is set.
        total_quota: u32 = 0 => {
            flag: total_quota "N", parse: one(count), sighup: restart,
        },

        /// Most permissions one allocation holds, at most 4096; 0 means 4096.
        ///
        /// A CreatePermission or ChannelBind that needs more gets 508 (Insufficient Capacity).
        /// Every client with a credential is held to it, so there is no "no limit".
        max_permissions: u32 = 256 => {
            flag: max_permissions "N", parse: one(per_allocation), sighup: restart,
        },

        /// Most channel bindings one allocation holds, those cooling down included, at most
        /// 4096; 0 means 4096.
        ///
        /// Beyond it ChannelBind gets 508 (Insufficient Capacity).
        max_channels: u32 = 256 => {
            flag: max_channels "N", parse: one(per_allocation), sighup: restart,
        },

        /// Other TURN servers an Allocate is sent to (300 Try Alternate) when this one is full.
        ///
        /// When this server is draining, full (`total_quota`) or out of relay ports, a new
        /// allocation gets a signed 300 Try Alternate naming one of these of the client's family
        /// (picked at random), and one of the other family if listed, instead of 508 or 486. A
        /// user over `user_quota` still gets 486; this server's own address is never named. Each
        /// needs a real IP and port.
        alternate_servers: Vec<SocketAddr> = Vec::new() => {
            flag: alternate_server "IP:PORT", parse: list(socket_addr), sighup: restart,
            example: r#"["203.0.113.20:3478"]"#,
        },
    }

    /// Caps on relayed payload bytes per second, both directions together. UDP datagrams beyond
    /// a cap are dropped (and counted, `reason="bandwidth"`); RFC 6062 TCP relay data is paced by
    /// back-pressure instead.
    section "Bandwidth" {
        /// Relayed bytes per second one allocation may carry; 0 = no cap.
        ///
        /// A token bucket in the allocation (burst: a tenth of a second, at least 64 KiB), so no
        /// lock.
        allocation_bandwidth: u32 = 0 => {
            flag: allocation_bandwidth "BYTES_PER_S", parse: one(count), sighup: restart,
        },

        /// Relayed bytes per second all of one user's allocations may carry together; 0 = no cap.
        ///
        /// Counted on every worker, UDP and TCP relay alike, in one lock-free bucket per user (a
        /// REST API user id), touched only by the workers relaying for that user.
        user_bandwidth: u32 = 0 => {
            flag: user_bandwidth "BYTES_PER_S", parse: one(count), sighup: restart,
        },
    }

    /// What a client without credentials, or a spoofed source, can make turnd do.
    section "Unauthenticated traffic" {
        /// `allow` answers unauthenticated requests even with a larger answer; `refuse` drops them.
        ///
        /// Answers to unauthenticated requests (401, 438, 400, 420) can be larger than the
        /// request. With `refuse` such requests are dropped, so turnd never amplifies; but real
        /// clients' first Allocate (28-60 bytes) is smaller than a 401, so refuse only when your
        /// clients pad their first request (e.g. with SOFTWARE) to at least ~120 bytes. Binding
        /// answers are always sent (12 bytes over the request for IPv4, 24 for IPv6).
        amplification: Amplification = Amplification::Allow => {
            flag: amplification "allow|refuse", parse: one(from_str::<Amplification>),
            sighup: restart,
        },

        /// Per source, unauthenticated error answers a second: `RATE[/BURST]`; 0 = no limit.
        ///
        /// Counted per source address (IPv4, or IPv6 /64) and worker, for 401, 438, 400 and 420
        /// answers; a bare RATE means a burst of twice the rate. Over the limit requests are
        /// dropped, so a spoofed flood gets its victim a trickle, not one answer per request.
        /// The tables have a fixed size: a flood cannot grow memory.
        unauthenticated_rate: Rate = Rate { per_second: 20, burst: 40 } => {
            flag: unauthenticated_rate "RATE[/BURST]", parse: one(rate), sighup: restart,
        },

        /// Per source, Binding answers a second: `RATE[/BURST]`; 0 = no limit.
        ///
        /// Counted like `unauthenticated_rate`.
        binding_rate: Rate = Rate { per_second: 50, burst: 100 } => {
            flag: binding_rate "RATE[/BURST]", parse: one(rate), sighup: restart,
        },

        /// Most TCP and TLS connections the server holds at once; 0 = no limit.
        ///
        /// More are closed as soon as they are accepted.
        max_connections: u32 = 10_000 => {
            flag: max_connections "N", parse: one(count), sighup: restart,
        },

        /// Most TCP and TLS connections one source holds at once; 0 = no limit.
        ///
        /// A source is one IPv4 address, or one IPv6 /64 (what one subscriber is usually given),
        /// counted across all workers. More from that source are closed as soon as they are
        /// accepted and counted in `turnd_connections_refused_total{reason="per_source"}`. The
        /// default is far above what an office behind one NAT address opens (a WebRTC client
        /// holds one TURN connection per call, two during an ICE restart), and one source can
        /// take at most a tenth of the default `max_connections`: the rest stays for everyone
        /// else.
        max_connections_per_source: u32 = 1_000 => {
            flag: max_connections_per_source "N", parse: one(count), sighup: restart,
        },

        /// Seconds a TCP or TLS connection may stay open without an allocation.
        ///
        /// Counted before its first Allocate succeeds and again after its allocation ends, so
        /// idle (slowloris) clients cannot hold connections; the TLS handshake must finish
        /// within it too.
        unauthenticated_timeout: u32 = 10 => {
            flag: unauthenticated_timeout "SECONDS", parse: one(seconds), sighup: restart,
        },

        /// Largest frame (STUN message or padded ChannelData) accepted on a TCP connection, bytes.
        ///
        /// It bounds each connection's read buffer; from 512 to 65552, the largest STUN message.
        max_frame_size: u32 = crate::stun::framing::MAX_FRAME_LEN as u32 => {
            flag: max_frame_size "BYTES", parse: one(frame_size), sighup: restart,
        },
    }

    /// How turnd uses the host's cores and its UDP sockets.
    section "Workers and sockets" {
        /// Worker threads, each with its own sockets and allocations; 0 = one per CPU core.
        ///
        /// Lower it to leave cores for other services on the same host. At most 1024.
        workers: usize = 0 => {
            flag: workers "N", parse: one(workers), sighup: restart,
        },

        /// `SO_RCVBUF` of the UDP listening and relay sockets, bytes; 0 = the kernel's default.
        ///
        /// Bursts of video overflow small buffers as loss. The kernel caps the size at the sysctl
        /// `net.core.rmem_max` (turnd warns when it did); `deploy/sysctl/99-turnd.conf` raises it.
        udp_recv_buffer: u32 = 0 => {
            flag: udp_recv_buffer "BYTES", parse: one(buffer), sighup: restart,
            example: "4194304",
        },

        /// `SO_SNDBUF` of the UDP listening and relay sockets, bytes; 0 = the kernel's default.
        ///
        /// The kernel caps the size at the sysctl `net.core.wmem_max` (turnd warns when it did);
        /// `deploy/sysctl/99-turnd.conf` raises it.
        udp_send_buffer: u32 = 0 => {
            flag: udp_send_buffer "BYTES", parse: one(buffer), sighup: restart,
            example: "4194304",
        },

        /// Microseconds a busy worker waits before blocking, to share one wake-up; 0 = off.
        ///
        /// A worker that relayed at least two datagrams per window over the last millisecond
        /// waits this long before blocking, so the datagrams arriving meanwhile share one wake-up
        /// and one `recvmmsg`/`sendmmsg`: less CPU per datagram under load, for at most one
        /// window more latency per hop. An idle or lightly loaded worker never waits. At most
        /// 5000.
        udp_coalesce: u32 = DEFAULT_UDP_COALESCE_US => {
            flag: udp_coalesce "MICROSECONDS", parse: one(coalesce), sighup: restart,
        },
    }

    /// The kernel fast path (docs/xdp.md): an XDP program that relays established channels'
    /// ChannelData without the sockets. Needs a build with the `xdp` feature (the release
    /// image has it), CAP_BPF and CAP_NET_ADMIN.
    section "Kernel fast path (XDP)" {
        /// Attach turnd's XDP program: `off`, `auto`, `native` or `generic`.
        ///
        /// `auto` tries the driver's native hook, then the generic one, and otherwise runs in
        /// user space with one warning line. `native` and `generic` refuse to start, in one
        /// line saying why, when the mode cannot be had (no CAP_BPF/CAP_NET_ADMIN, a kernel
        /// without XDP links, another program on the interface, a build without the `xdp`
        /// feature). The program is detached when turnd exits, and a crashed run's program is
        /// removed at the next start. Everything it does not relay takes the user-space path.
        xdp: XdpMode = XdpMode::Off => {
            flag: xdp "off|auto|native|generic", parse: one(from_str::<XdpMode>),
            sighup: restart,
        },

        /// Interfaces to attach the XDP program to; empty = those that carry the relay IPs.
        ///
        /// With a wildcard relay address, or clients arriving on an interface that carries no
        /// relay IP, name the interfaces here.
        xdp_interfaces: Vec<String> = Vec::new() => {
            flag: xdp_interface "NAME", parse: list(interface), sighup: restart,
            example: r#"["eth0"]"#,
        },

        /// Most channels relayed in the kernel at once, and allocations with kernel entries.
        ///
        /// Sizes the program's maps (both directions, and the per-allocation counters, split
        /// evenly between the workers). Beyond it a channel is relayed by user space as usual.
        /// Each entry costs about 250 bytes of locked kernel memory, the counters 32 bytes per
        /// CPU. At most 1048576.
        xdp_max_channels: u32 = 65536 => {
            flag: xdp_max_channels "N", parse: one(xdp_entries), sighup: restart,
        },
    }

    /// Logging, the admin HTTP listener and shutdown.
    section "Operations" {
        /// Log filter: `trace`, `debug`, `info`, `warn`, `error` or `off`, or a directive list.
        ///
        /// A tracing directive list looks like `turnd=debug,info`. `debug` shows every request:
        /// too much for a busy production relay.
        log_level: String = "info".to_string() => {
            flag: log_level "FILTER", parse: one(log_level), sighup: applied,
        },

        /// Log lines on stderr as `text`, or as `json`: one JSON object per line.
        ///
        /// JSON lines, for log shippers, carry `timestamp`, `level`, `message`, `target` and the
        /// event's own fields, e.g. `user`, `client`, `relay`, `to_peer_bytes` when an allocation
        /// ends.
        log_format: LogFormat = LogFormat::Text => {
            flag: log_format "text|json", parse: one(from_str::<LogFormat>), sighup: restart,
        },

        /// The SOFTWARE attribute in authenticated responses; "" sends none.
        ///
        /// The default, `turnd/<version>`, tells clients the version; "" hides it. At most 127
        /// characters.
        software: Option<String> = Some(concat!("turnd/", env!("CARGO_PKG_VERSION")).into()) => {
            flag: software "TEXT", parse: one(software), sighup: restart,
            shown_default: "`turnd/<version>`",
            example: r#""""#,
        },

        /// The admin HTTP listener: `/metrics`, `/healthz`, `/readyz` and the admin API.
        ///
        /// Only the admin API can ask for a token (`admin_token`), so keep it on loopback or a
        /// private network. Port 0 picks a free port.
        metrics_listen: SocketAddr = SocketAddr::from(([127, 0, 0, 1], 9641)) => {
            flag: metrics_listen "IP:PORT", parse: one(socket_addr), sighup: restart,
        },

        /// Bearer token the admin API (`/allocations`) requires; "" = none.
        ///
        /// With a token, `GET /allocations` and `DELETE /allocations/ID` need `Authorization:
        /// Bearer TOKEN` (else 401); without one they are open to whoever reaches
        /// `metrics_listen`. `/metrics`, `/healthz` and `/readyz` never need it.
        admin_token: Option<String> = None => {
            flag: admin_token "TOKEN", parse: one(admin_token), sighup: restart,
            example: r#""change-me""#,
            render: |c| Some(quote(c.admin_token.as_ref().map_or("", |_| REDACTED))),
        },

        /// Seconds allocations may keep relaying after SIGTERM/SIGINT before turnd exits.
        ///
        /// On the first signal `/readyz` turns 503 and new allocations are refused (508) while
        /// existing ones keep relaying; turnd exits when the last one ends or after this many
        /// seconds, whichever is first. A second signal exits at once.
        drain_timeout: u32 = 30 => {
            flag: drain_timeout "SECONDS", parse: one(seconds), sighup: restart,
        },
    }

    /// A Redis (or Valkey) shared by a fleet of nodes: users, revocation, quotas and usage
    /// accounting across nodes (a draft, see docs/cluster.md).
    section "Shared store" {
        /// The fleet's Redis: `redis://HOST:PORT/DB`, or `rediss://…` for TLS; "" = none.
        ///
        /// With a store, the node also serves the users and REST secrets kept in it (beside the
        /// TOML's, which win on a name clash), refuses the users revoked in it and ends their
        /// allocations, updated within about a second of a change; it registers itself and its
        /// allocations there, counts `user_quota`/`total_quota` across every node sharing it,
        /// and adds its usage to the store's hour and day buckets (docs/cluster.md). The relay
        /// path never waits for it, and the node starts and relays whether or not Redis
        /// answers. A password in the URL (`redis://:PASSWORD@HOST`) is shown redacted; better,
        /// give it with `store_password_file` or `TURND_STORE_PASSWORD`.
        store: Option<String> = None => {
            flag: store "URL", parse: one(store_url), sighup: restart,
            example: r#""redis://127.0.0.1:6379/0""#,
            render: |c| Some(quote(&c.store.as_deref().map_or(String::new(), store_url_redacted))),
        },

        /// A file holding the store's password (its first line); "" = none.
        ///
        /// Used when the `store` URL holds no password. The environment variable
        /// `TURND_STORE_PASSWORD` gives it too (the file wins). Read at start-up and by each
        /// `turnd users|secrets|revoke` command; never printed.
        store_password_file: Option<PathBuf> = None => {
            flag: store_password_file "FILE", parse: one(path), sighup: restart,
            example: r#""/run/secrets/redis-password""#,
        },

        /// A PEM file of the CA certificates a `rediss://` store's certificate is checked
        /// against, instead of the system's roots; "" = the system's roots.
        ///
        /// For a store whose certificate a private CA signed. One or more `CERTIFICATE`
        /// blocks; a file that cannot be read or holds none stops start-up (exit 2), as do
        /// `turnd users|secrets|revoke|allocations`. Read at start-up by every store
        /// connection (the sync and report tasks, the fleet view) and by each command.
        store_ca_file: Option<PathBuf> = None => {
            flag: store_ca_file "FILE", parse: one(path), sighup: restart,
            example: r#""/etc/turnd/redis-ca.pem""#,
        },

        /// A PEM certificate (chain) this node shows a `rediss://` store that asks for
        /// client certificates (mutual TLS, Redis's `tls-auth-clients yes`); "" = none.
        ///
        /// Needs `store_key_file`. Read at start-up and by each store command, like
        /// `store_ca_file`.
        store_cert_file: Option<PathBuf> = None => {
            flag: store_cert_file "FILE", parse: one(path), sighup: restart,
            example: r#""/etc/turnd/redis-client.pem""#,
        },

        /// The PEM private key of `store_cert_file` (PKCS#8, PKCS#1 or SEC1); "" = none.
        store_key_file: Option<PathBuf> = None => {
            flag: store_key_file "FILE", parse: one(path), sighup: restart,
            example: r#""/etc/turnd/redis-client-key.pem""#,
        },

        /// Most store users (and most revocations) a node keeps in memory.
        ///
        /// Entries beyond are left out, logged and counted (`turnd_store_skipped`). Whoever can
        /// write to Redis is trusted no further than the TOML's author: a store holding
        /// millions of entries must not take the node's memory.
        store_max_users: u32 = 100_000 => {
            flag: store_max_users "N", parse: one(count), sighup: restart,
        },

        /// This node's name in the fleet's store; "" = `hostname:pid:start-unix`.
        ///
        /// Names the node's keys in the store (`turnd:node:NAME`, its allocation and quota
        /// counts) and its entries in the fleet view. Two running nodes must not share one:
        /// the default is unique per process; a fixed name (say the pod's) makes a restarted
        /// node take its keys back at once instead of leaving them to expire with their lease.
        node_id: Option<String> = None => {
            flag: node_id "NAME", parse: one(node_id), sighup: restart,
            example: r#""turn-eu-1""#,
            render: |c| Some(quote(c.node_id.as_deref().unwrap_or(""))),
        },
    }
}
