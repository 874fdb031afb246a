//! The admin API's revocations (`docs/cluster.md#revocation`), answered by the store task:
//!
//! - `GET /revocations`: this node's revocations, JSON `{"revocations":[{"user":…,"until":…}]}`
//!   (`until` is a unix time, `null` for until removed);
//! - `POST /revocations?user=NAME[&for=DURATION]`: revoke on every node (DURATION as
//!   `turnd revoke --for`: 90s, 30m, 24h, 7d; none = until removed);
//! - `DELETE /revocations/NAME`: end a revocation.
//!
//! The request has no body (the admin listener reads none): parameters are in the query,
//! percent-encoded. Without `store`, 404.

use super::http::{Request, Response};
use crate::core::revocation::FOREVER;
use crate::store::link::{AskError, Request as StoreRequest};
use crate::store::Link;
use std::fmt::Write;

/// Answers `/revocations` and `/revocations/…`.
pub async fn answer(link: &Link, req: &Request) -> Response {
    let result = match (req.method.as_str(), req.path.strip_prefix("/revocations")) {
        ("GET" | "HEAD", Some("")) => link
            .ask(StoreRequest::List)
            .await
            .map(|list| json_response(200, &list)),
        ("POST", Some("")) => match revoke_params(&req.query) {
            Ok((user, until)) => link
                .ask(|reply| StoreRequest::Revoke {
                    user: user.clone(),
                    until,
                    reply,
                })
                .await
                .map(|r| match r {
                    Ok(()) => json_response(200, &[(user, until)]),
                    Err(e) => Response::text(503, format!("the store refused: {e}\n")),
                }),
            Err(why) => Ok(Response::text(400, format!("{why}\n"))),
        },
        ("DELETE", Some(name)) if name.len() > 1 => match percent_decode(&name[1..]) {
            Some(user) => link
                .ask(|reply| StoreRequest::Unrevoke { user, reply })
                .await
                .map(|r| match r {
                    Ok(true) => Response::text(200, "revocation removed\n"),
                    Ok(false) => Response::text(404, "no such revocation\n"),
                    Err(e) => Response::text(503, format!("the store refused: {e}\n")),
                }),
            None => Ok(Response::text(
                400,
                "the name is not valid percent-encoded UTF-8\n",
            )),
        },
        (_, Some("")) => Ok(Response::method_not_allowed("GET, HEAD, POST")),
        _ => Ok(Response::method_not_allowed("DELETE")),
    };
    match result {
        Ok(r) => r,
        Err(AskError::NoStore) => Response::text(404, "no store is configured (key `store`)\n"),
        Err(AskError::Busy) => Response::text(504, "the store task did not answer\n"),
    }
}

/// `user=NAME[&for=DURATION]` → the name and the unix time the revocation ends.
fn revoke_params(query: &str) -> Result<(String, u64), String> {
    let (mut user, mut until) = (None, FOREVER);
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let v = percent_decode(v).ok_or("a parameter is not valid percent-encoded UTF-8")?;
        match k {
            "user" => user = Some(v),
            "for" => {
                let d = crate::credentials::parse_ttl(&v)?;
                until = unix_now().saturating_add(d.as_secs());
            }
            _ => return Err(format!("unknown parameter `{k}`: use user= and for=")),
        }
    }
    let user = user.ok_or("give user=NAME")?;
    crate::store::revoked::check_name(&user)?;
    Ok((user, until))
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Decodes `%XX` escapes and `+` (a space); `None` for a bad escape or bytes not UTF-8.
pub fn percent_decode(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' => {
                let hex = std::str::from_utf8(b.get(i + 1..i + 3)?).ok()?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

fn json_response(status: u16, list: &[(String, u64)]) -> Response {
    let mut o = String::from("{\"revocations\":[");
    for (i, (user, until)) in list.iter().enumerate() {
        o.push_str(if i > 0 { ",{\"user\":" } else { "{\"user\":" });
        o.push_str(&serde_json::Value::from(user.as_str()).to_string());
        if *until == FOREVER {
            o.push_str(",\"until\":null}");
        } else {
            let _ = write!(o, ",\"until\":{until}}}");
        }
    }
    o.push_str("]}\n");
    Response {
        content_type: "application/json",
        ..Response::text(status, o)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parameters_are_percent_decoded_and_checked() {
        assert_eq!(percent_decode("a%3Ab+c"), Some("a:b c".into()));
        assert_eq!(percent_decode("%zz"), None);
        assert_eq!(percent_decode("%4"), None);
        assert_eq!(percent_decode("%ff"), None, "not UTF-8");
        assert_eq!(
            revoke_params("user=alice").unwrap(),
            ("alice".into(), FOREVER)
        );
        let (u, until) = revoke_params("for=90s&user=bob").unwrap();
        assert_eq!(u, "bob");
        assert!(until > unix_now() && until <= unix_now() + 90);
        assert!(revoke_params("").is_err());
        assert!(revoke_params("user=").is_err());
        assert!(revoke_params("user=a&for=soon").is_err());
        assert!(revoke_params("user=a&x=1").is_err());
    }

    #[test]
    fn json_lists_names_escaped_and_forever_as_null() {
        let r = json_response(200, &[("a\"b".into(), FOREVER), ("c".into(), 5)]);
        assert_eq!(
            r.body,
            "{\"revocations\":[{\"user\":\"a\\\"b\",\"until\":null},{\"user\":\"c\",\"until\":5}]}\n"
        );
    }

    #[test]
    fn without_a_store_the_routes_say_so() {
        let link = Link::default();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let req = |method: &str, path: &str, query: &str| Request {
            method: method.into(),
            path: path.into(),
            query: query.into(),
            accept: String::new(),
            authorization: String::new(),
        };
        let r = rt.block_on(answer(&link, &req("GET", "/revocations", "")));
        assert_eq!(r.status, 404);
        let r = rt.block_on(answer(&link, &req("POST", "/revocations", "")));
        assert_eq!(r.status, 400, "parameters are checked first");
        let r = rt.block_on(answer(&link, &req("PUT", "/revocations", "")));
        assert_eq!(r.status, 405);
    }
}
