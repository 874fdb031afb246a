//! The credentials a node serves, built from two layers: the TOML's (replaced on SIGHUP) and
//! the fleet store's (users, REST secrets and revocations, replaced by the store task when
//! Redis says they changed). Each change of either layer rebuilds the merged
//! [`Credentials`] from both, so a SIGHUP keeps the store's users and a store change keeps the
//! TOML's (`docs/cluster.md`).
//!
//! Sans-IO: plain data; the shell holds it under a lock and swaps the merged result into the
//! workers' [`Reloadable`](super::reloadable::Reloadable).

use super::auth::{Credentials, UserSecret};
use super::revocation::Revocations;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

/// What the store contributes. Empty without a store.
#[derive(Clone, Debug, Default)]
pub struct StorePart {
    /// Static users by name.
    pub users: HashMap<String, UserSecret>,
    /// REST secrets by name (ordered, so the merged list is the same on every rebuild).
    pub secrets: BTreeMap<String, String>,
    pub revoked: Arc<Revocations>,
}

/// The two layers.
#[derive(Clone, Debug)]
pub struct CredentialLayers {
    base: Credentials,
    store: StorePart,
}

impl CredentialLayers {
    /// The TOML's credentials alone.
    pub fn new(base: Credentials) -> CredentialLayers {
        CredentialLayers {
            base,
            store: StorePart::default(),
        }
    }

    /// Replaces the TOML's layer (SIGHUP).
    pub fn set_base(&mut self, base: Credentials) {
        self.base = base;
    }

    /// The store's layer, to replace a part of it.
    pub fn store_mut(&mut self) -> &mut StorePart {
        &mut self.store
    }

    pub fn store(&self) -> &StorePart {
        &self.store
    }

    /// The credentials to serve: the TOML's users, then the store's whose names the TOML does
    /// not hold; the TOML's secrets, then the store's; the store's revocations over all.
    pub fn merged(&self) -> Credentials {
        let s = &self.store;
        if s.users.is_empty() && s.secrets.is_empty() && s.revoked.is_empty() {
            return self.base.clone();
        }
        self.base
            .extended(&s.users, s.secrets.values())
            .with_revocations(s.revoked.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::auth::{long_term_key, AuthError};

    const NOW: u64 = 1_700_000_000;

    fn login(c: &Credentials, name: &str, realm: &str, password: &str) -> Result<(), AuthError> {
        let want = long_term_key(name, realm, password);
        c.authenticate(name, NOW, |k| *k == want).map(|_| ())
    }

    fn toml() -> Credentials {
        Credentials::new(
            "example.org",
            [("alice".to_string(), UserSecret::Password("toml-pw".into()))],
            ["toml-secret".to_string()],
        )
    }

    #[test]
    fn store_users_join_toml_users_and_the_toml_wins_a_clash() {
        let mut layers = CredentialLayers::new(toml());
        let store = layers.store_mut();
        store
            .users
            .insert("alice".into(), UserSecret::Password("store-pw".into()));
        store.users.insert(
            "bob".into(),
            UserSecret::Key(long_term_key("bob", "example.org", "bob-pw")),
        );
        let c = layers.merged();
        assert_eq!(login(&c, "alice", "example.org", "toml-pw"), Ok(()));
        assert_eq!(
            login(&c, "alice", "example.org", "store-pw"),
            Err(AuthError::BadIntegrity)
        );
        assert_eq!(login(&c, "bob", "example.org", "bob-pw"), Ok(()));
        assert_eq!(c.user_count(), 2);
    }

    #[test]
    fn a_new_toml_keeps_the_store_part_and_the_store_part_keeps_the_toml() {
        let mut layers = CredentialLayers::new(toml());
        layers
            .store_mut()
            .users
            .insert("bob".into(), UserSecret::Password("bob-pw".into()));
        // SIGHUP with a TOML that no longer has alice but has carol.
        layers.set_base(Credentials::new(
            "example.org",
            [("carol".to_string(), UserSecret::Password("c".into()))],
            [],
        ));
        let c = layers.merged();
        assert_eq!(login(&c, "bob", "example.org", "bob-pw"), Ok(()));
        assert_eq!(login(&c, "carol", "example.org", "c"), Ok(()));
        assert_eq!(
            login(&c, "alice", "example.org", "toml-pw"),
            Err(AuthError::UnknownUser)
        );
        // The store empties its users: the TOML's stay.
        layers.store_mut().users.clear();
        let c = layers.merged();
        assert_eq!(login(&c, "carol", "example.org", "c"), Ok(()));
        assert_eq!(
            login(&c, "bob", "example.org", "bob-pw"),
            Err(AuthError::UnknownUser)
        );
    }

    #[test]
    fn store_secrets_mint_rest_credentials_and_revocations_refuse_everyone_named() {
        use crate::core::auth::rest_api_password;
        let mut layers = CredentialLayers::new(toml());
        layers
            .store_mut()
            .secrets
            .insert("s1".into(), "store-secret".into());
        let name = format!("{}:dave", NOW + 60);
        let c = layers.merged();
        for secret in ["toml-secret", "store-secret"] {
            let pw = rest_api_password(secret.as_bytes(), &name);
            assert_eq!(login(&c, &name, "example.org", &pw), Ok(()), "{secret}");
        }
        layers.store_mut().revoked = Arc::new(Revocations::new([
            ("dave".to_string(), NOW + 1),
            ("alice".to_string(), crate::core::revocation::FOREVER),
        ]));
        let c = layers.merged();
        let pw = rest_api_password(b"store-secret", &name);
        assert_eq!(
            login(&c, &name, "example.org", &pw),
            Err(AuthError::Revoked)
        );
        // The TOML's own users are revoked too: revocation is over every layer.
        assert_eq!(
            login(&c, "alice", "example.org", "toml-pw"),
            Err(AuthError::Revoked)
        );
        // dave's revocation ends at NOW + 1.
        let want = long_term_key(&name, "example.org", &pw);
        assert!(c.authenticate(&name, NOW + 1, |k| *k == want).is_ok());
    }
}
