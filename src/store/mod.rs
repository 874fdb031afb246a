//! The fleet's shared store (issue 17; the design is `docs/cluster.md`): a Redis or Valkey that
//! several turnd nodes share for users, secrets, revocation, quotas and usage accounting.
//!
//! Nothing here is ever called from a worker: one task per process ([`sync`]) owns the
//! connection and swaps what it reads into the workers the way a SIGHUP reload swaps
//! credentials, so no datagram waits for Redis. [`spawn`] is the one entry point `main` calls;
//! `turnd users|secrets|revoke` ([`cli`]) write to the store from the command line.

pub mod cli;
pub mod connect;
pub mod counts;
pub mod fleet;
pub mod keys;
pub mod link;
pub mod node;
pub mod report;
pub mod revoked;
pub mod secrets;
pub mod stats;
pub mod sync;
pub mod usage;
pub mod users;
pub mod write;

pub use connect::{connect, ConnectError};
pub use link::Link;
pub use node::node_id;
pub use users::{read_users, StoreUsers, USERS_KEY};

/// The store a configuration names, checked before the server starts (a password file that
/// or a CA file that cannot be read stops start-up, like a bad certificate); `None` without `store`.
pub struct Store(sync::Settings);

impl Store {
    pub fn from_config(cfg: &crate::config::Config) -> Result<Option<Store>, String> {
        let Some(url) = &cfg.store else {
            return Ok(None);
        };
        let client = connect::client(url, &connect::StoreFiles::of(cfg))?;
        Ok(Some(Store(sync::Settings {
            client,
            max_users: cfg.store_max_users as usize,
            node_id: node_id().to_string(),
        })))
    }
}

/// Starts the store task on `rt` (the runtime that waits for signals) for a running server.
/// Without a store (`None`), nothing: turnd behaves as before.
pub fn spawn(store: Option<Store>, rt: &tokio::runtime::Handle, server: &crate::shell::Server) {
    if let Some(Store(settings)) = store {
        tracing::info!(node = %settings.node_id, "store: starting the store task");
        sync::start(rt, settings, server.store_parts());
    }
}
