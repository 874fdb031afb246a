//! The fleet's shared store (issue 17; the design is `docs/cluster.md`): a Redis or Valkey that
//! several turnd nodes share for users, revocation, quotas and usage accounting.
//!
//! Only the first pieces exist: opening the connection ([`connect`]) and reading static users
//! ([`users`]). Nothing here is ever called from a worker: the design has one task per process
//! own the connection, swap resolved state into the workers the way a SIGHUP reload swaps
//! credentials, and drain counts the workers hand out through channels, so no datagram waits for
//! Redis.

pub mod connect;
pub mod counts;
pub mod fleet;
pub mod keys;
pub mod node;
pub mod report;
pub mod stats;
pub mod usage;
pub mod users;

pub use connect::{connect, ConnectError};
pub use node::node_id;
pub use users::{read_users, StoreUsers, USERS_KEY};
