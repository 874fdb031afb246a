//! Where new credentials go in: the TOML's on SIGHUP ([`super::Server::reload`]) and the fleet
//! store's from the store task (`crate::store`). Both go through one lock that also swaps the
//! merged result into the workers, so two changes at once can never leave the older merge
//! in place (`docs/cluster.md`).

use crate::core::credential_layers::CredentialLayers;
use crate::core::Shared;
use std::sync::{Arc, Mutex};

/// The layers and the shared state the merged credentials are swapped into.
pub struct CredentialSink {
    layers: Mutex<CredentialLayers>,
    shared: Arc<Shared>,
}

impl CredentialSink {
    pub fn new(shared: Arc<Shared>) -> CredentialSink {
        let base = (*shared.credentials.load()).clone();
        CredentialSink {
            layers: Mutex::new(CredentialLayers::new(base)),
            shared,
        }
    }

    /// Changes a layer with `change`, then, if it says it changed anything, serves the merged
    /// credentials: requests from now on are checked against them (allocations keep relaying;
    /// their next request is checked). Returns what `change` said. The merge derives every
    /// store user's keys again (about 100 000 users a second or so in a debug build), so the
    /// store task calls this off its runtime (`spawn_blocking`) and only for a real change.
    pub fn update(&self, change: impl FnOnce(&mut CredentialLayers) -> bool) -> bool {
        // Invariant: nothing panics while holding the lock (field swaps and a merge that
        // only hashes and copies).
        let mut layers = self.layers.lock().unwrap_or_else(|e| e.into_inner());
        let changed = change(&mut layers);
        if changed {
            self.shared.credentials.store(layers.merged());
        }
        changed
    }

    /// The shared state (the REST username order, for matching a revoked user id).
    pub fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }
}
