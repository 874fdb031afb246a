//! The fleet view (docs/cluster.md): every live node's allocations as the nodes registered
//! them in the store (`turnd:allocs:{node}`), for the admin API's `/fleet/allocations` and
//! `turnd allocations --store …`; and ending a user's allocations everywhere by publishing
//! `user NAME` on `turnd:kill`, which every node's store task acts on.

use super::counts::live_nodes;
use super::keys;
use crate::metrics::http::{Request, Response};
use redis::aio::{ConnectionLike, ConnectionManager};
use redis::Value;

/// At most this many allocations are listed over the whole fleet (the rest are left out and
/// the answer says so): the store's content is bounded like any input.
pub const MAX_LISTED: usize = 100_000;

/// One live node and its registered allocations.
#[derive(Debug, Default)]
pub struct FleetNode {
    pub node: String,
    /// `turnd:node:{node}`'s JSON (`null` if it was not JSON).
    pub info: serde_json::Value,
    /// Each allocation's JSON object, sorted by id.
    pub allocations: Vec<serde_json::Value>,
}

/// What [`read`] found.
#[derive(Debug, Default)]
pub struct Fleet {
    pub nodes: Vec<FleetNode>,
    /// Entries left out: not JSON objects, another user's when filtering, or beyond
    /// [`MAX_LISTED`].
    pub skipped: usize,
    pub truncated: bool,
}

/// Every live node's allocations (of `user` only, when given). Three round trips.
pub async fn read(conn: &mut impl ConnectionLike, user: Option<&str>) -> redis::RedisResult<Fleet> {
    let nodes = live_nodes(conn, None, keys::allocs).await?;
    let mut fleet = Fleet::default();
    if nodes.is_empty() {
        return Ok(fleet);
    }
    // A hash that alone holds more than can be listed is not read (its entries count as
    // skipped): the reply is bounded before it is read.
    let mut p = redis::pipe();
    let mut total: u64 = 0;
    let nodes: Vec<String> = nodes
        .into_iter()
        .map(|(n, len)| {
            if len > MAX_LISTED as u64 || total + len > 2 * MAX_LISTED as u64 {
                fleet.skipped += len as usize;
                fleet.truncated = true;
                p.get(keys::node(&n)).cmd("ECHO").arg("");
            } else {
                total += len;
                p.get(keys::node(&n)).hgetall(keys::allocs(&n));
            }
            n
        })
        .collect();
    let answers: Vec<Value> = p.query_async(conn).await?;
    let mut answers = answers.into_iter();
    let mut listed = 0;
    for node in nodes {
        let (Some(info), Some(allocs)) = (answers.next(), answers.next()) else {
            break;
        };
        let info: Option<String> = redis::from_redis_value(info).unwrap_or_default();
        let info = info
            .and_then(|s| serde_json::from_str(&s).ok())
            .unwrap_or(serde_json::Value::Null);
        let pairs: Vec<(String, String)> = redis::from_redis_value(allocs).unwrap_or_default();
        let mut allocations = Vec::new();
        for (_, value) in pairs {
            let Ok(v @ serde_json::Value::Object(_)) = serde_json::from_str(&value) else {
                fleet.skipped += 1;
                continue;
            };
            if user.is_some_and(|u| v.get("user").and_then(|x| x.as_str()) != Some(u)) {
                continue;
            }
            if listed >= MAX_LISTED {
                fleet.truncated = true;
                continue;
            }
            listed += 1;
            allocations.push(v);
        }
        allocations.sort_by(|a, b| {
            a.get("id")
                .map(|x| x.to_string())
                .cmp(&b.get("id").map(|x| x.to_string()))
        });
        fleet.nodes.push(FleetNode {
            node,
            info,
            allocations,
        });
    }
    Ok(fleet)
}

/// The JSON body of `GET /fleet/allocations`.
pub fn to_json(fleet: &Fleet) -> String {
    let nodes: Vec<serde_json::Value> = fleet
        .nodes
        .iter()
        .map(|n| {
            serde_json::json!({
                "node": n.node,
                "info": n.info,
                "allocations": n.allocations,
            })
        })
        .collect();
    let mut s = serde_json::json!({
        "nodes": nodes,
        "skipped": fleet.skipped,
        "truncated": fleet.truncated,
    })
    .to_string();
    s.push('\n');
    s
}

/// Asks every node to end `user`'s allocations: publishes `user NAME` on `turnd:kill`.
/// Returns how many subscribers (nodes' store tasks) received it.
pub async fn end_user(conn: &mut impl ConnectionLike, user: &str) -> redis::RedisResult<u64> {
    redis::cmd("PUBLISH")
        .arg(keys::KILL)
        .arg(format!("user {user}"))
        .query_async(conn)
        .await
}

/// The value of `name` in a query string (`a=1&user=x%20y`), percent-decoded; `None` when
/// absent or not UTF-8 once decoded.
pub fn query_param(query: &str, name: &str) -> Option<String> {
    let raw = query
        .split('&')
        .find_map(|kv| kv.strip_prefix(name)?.strip_prefix('='))?;
    let bytes = raw.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = bytes.get(i + 1..i + 3)?;
                if !hex.iter().all(u8::is_ascii_hexdigit) {
                    return None;
                }
                let hex = std::str::from_utf8(hex).ok()?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 2;
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8(out).ok()
}

/// The admin API's side of the fleet view: a connection of the admin listener's runtime,
/// made lazily (the listener answers `/metrics` whatever the store's state).
pub struct FleetApi {
    conn: ConnectionManager,
}

impl FleetApi {
    /// For the store `client`; must be called inside the admin listener's runtime.
    pub fn new(client: redis::Client) -> anyhow::Result<FleetApi> {
        Ok(FleetApi {
            conn: super::connect::connect_client(client)?,
        })
    }

    /// `GET /fleet/allocations[?user=NAME]` lists; `DELETE /fleet/allocations?user=NAME` ends
    /// that user's allocations on every node. 503 when the store does not answer.
    pub async fn answer(&self, req: &Request) -> Response {
        let user = query_param(&req.query, "user");
        let mut conn = self.conn.clone();
        match req.method.as_str() {
            "GET" | "HEAD" => match read(&mut conn, user.as_deref()).await {
                Ok(fleet) => Response {
                    content_type: "application/json",
                    ..Response::text(200, to_json(&fleet))
                },
                Err(e) => {
                    Response::text(503, format!("the store did not answer: {:?}\n", e.kind()))
                }
            },
            "DELETE" => {
                let Some(user) = user.filter(|u| !u.is_empty()) else {
                    return Response::text(400, "DELETE /fleet/allocations needs ?user=NAME\n");
                };
                match end_user(&mut conn, &user).await {
                    Ok(n) => Response::text(
                        200,
                        format!("asked {n} node(s) to end the allocations of that user\n"),
                    ),
                    Err(e) => {
                        Response::text(503, format!("the store did not answer: {:?}\n", e.kind()))
                    }
                }
            }
            _ => Response::method_not_allowed("GET, HEAD, DELETE"),
        }
    }
}

/// `turnd allocations`: lists allocations across the fleet, or ends a user's.
#[derive(Debug, Clone, clap::Args)]
pub struct AllocationsArgs {
    /// The fleet's store (default: the configuration's `store`)
    #[arg(long, value_name = "URL")]
    pub store: Option<String>,
    /// Only this user's allocations (a static user's name, or a REST username)
    #[arg(long, value_name = "NAME")]
    pub user: Option<String>,
    /// End the --user's allocations on every node (publishes `user NAME` on turnd:kill)
    #[arg(long, requires = "user")]
    pub end: bool,
    /// Print the JSON the admin API's /fleet/allocations answers
    #[arg(long)]
    pub json: bool,
}

/// Runs `turnd allocations` against `url`; the process's exit status.
pub fn main(args: &AllocationsArgs, client: redis::Client) -> u8 {
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("turnd allocations: {e}");
            return 1;
        }
    };
    rt.block_on(async {
        let mut conn = match super::connect::connect_client(client) {
            Ok(c) => c,
            Err(e) => {
                eprintln!("turnd allocations: {e}");
                return 2;
            }
        };
        if args.end {
            let user = args.user.as_deref().unwrap_or_default();
            return match end_user(&mut conn, user).await {
                Ok(n) => {
                    println!("asked {n} node(s) to end the allocations of {user}");
                    0
                }
                Err(e) => {
                    eprintln!(
                        "turnd allocations: the store did not answer: {:?}",
                        e.kind()
                    );
                    1
                }
            };
        }
        match read(&mut conn, args.user.as_deref()).await {
            Ok(fleet) if args.json => {
                print!("{}", to_json(&fleet));
                0
            }
            Ok(fleet) => {
                print!("{}", to_text(&fleet));
                0
            }
            Err(e) => {
                eprintln!(
                    "turnd allocations: the store did not answer: {:?}",
                    e.kind()
                );
                1
            }
        }
    })
}

/// One line per allocation: node, id, user, client, relayed addresses, start (unix).
pub fn to_text(fleet: &Fleet) -> String {
    let mut out = String::from("NODE\tID\tUSER\tCLIENT\tRELAYED\tSTARTED\n");
    let field = |v: &serde_json::Value, k: &str| match v.get(k) {
        Some(serde_json::Value::String(s)) => s.clone(),
        Some(serde_json::Value::Array(a)) => a
            .iter()
            .filter_map(|x| x.as_str())
            .collect::<Vec<_>>()
            .join(","),
        Some(other) => other.to_string(),
        None => String::new(),
    };
    for n in &fleet.nodes {
        for a in &n.allocations {
            out.push_str(&format!(
                "{}\t{}\t{}\t{}\t{}\t{}\n",
                n.node,
                field(a, "id"),
                field(a, "user").escape_debug(),
                field(a, "client"),
                field(a, "relayed"),
                field(a, "start"),
            ));
        }
    }
    out.push_str(&format!(
        "{} node(s), {} allocation(s)\n",
        fleet.nodes.len(),
        fleet
            .nodes
            .iter()
            .map(|n| n.allocations.len())
            .sum::<usize>()
    ));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_params_are_found_and_decoded() {
        assert_eq!(query_param("user=alice", "user").as_deref(), Some("alice"));
        assert_eq!(
            query_param("x=1&user=1700000000%3Acarol+b", "user").as_deref(),
            Some("1700000000:carol b")
        );
        assert_eq!(query_param("username=a", "user"), None);
        assert_eq!(query_param("user=%zz", "user"), None);
        assert_eq!(query_param("user=%4", "user"), None);
        assert_eq!(query_param("user=%ff", "user"), None, "not UTF-8");
        assert_eq!(query_param("", "user"), None);
    }
}
