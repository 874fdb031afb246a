//! `turnd credentials` mints what the server accepts: the username in the server's order
//! (`<expiry>:<user>` by default), and no TTL beyond its `rest_max_ttl` (7 days by default).

use std::process::{Command, Output};

fn credentials(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_turnd"))
        .args(args)
        .env_remove("TURND_CONFIG")
        .output()
        .expect("run turnd credentials")
}

fn username(out: &Output) -> String {
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines()
        .find_map(|l| l.strip_prefix("username:"))
        .map(|v| v.trim().to_string())
        .unwrap_or_else(|| panic!("no username line in:\n{text}"))
}

fn expiry_then_user(name: &str, user: &str) -> bool {
    name.split_once(':')
        .is_some_and(|(e, u)| u == user && !e.is_empty() && e.bytes().all(|b| b.is_ascii_digit()))
}

#[test]
fn mints_expiry_first_by_default_up_to_seven_days() {
    let name = username(&credentials(&[
        "credentials",
        "--secret",
        "s",
        "--user",
        "42",
        "--ttl",
        "7d",
    ]));
    assert!(expiry_then_user(&name, "42"), "{name}");
}

#[test]
fn refuses_a_ttl_beyond_the_cap() {
    let out = credentials(&["credentials", "--secret", "s", "--ttl", "8d"]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("rest_max_ttl (604800 s)"), "{err}");
    assert!(out.stdout.is_empty(), "nothing minted: {out:?}");
    // The cap is the server's: the same flags and variables set it.
    let out = credentials(&[
        "--rest-max-ttl",
        "3600",
        "credentials",
        "--secret",
        "s",
        "--ttl",
        "2h",
    ]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    // 0 = no cap.
    username(&credentials(&[
        "--rest-max-ttl",
        "0",
        "credentials",
        "--secret",
        "s",
        "--ttl",
        "3650d",
    ]));
}

#[test]
fn mints_user_first_when_the_server_reads_it_so() {
    let name = username(&credentials(&[
        "--rest-username-order",
        "user-first",
        "credentials",
        "--secret",
        "s",
        "--user",
        "alice",
        "--ttl",
        "1h",
    ]));
    let (user, expiry) = name.rsplit_once(':').unwrap();
    assert_eq!(user, "alice");
    assert!(expiry.bytes().all(|b| b.is_ascii_digit()), "{name}");
}
