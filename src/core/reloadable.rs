//! A value the control plane can replace at run time (SIGHUP reload: credentials, the peer
//! filter) while workers keep reading it on requests. Readers take a brief read lock to clone
//! an `Arc`, so a request sees either the old value or the new one, whole; the relay path never
//! reads one.

use std::sync::{Arc, RwLock};

#[derive(Debug)]
pub struct Reloadable<T>(RwLock<Arc<T>>);

impl<T> Reloadable<T> {
    pub fn new(value: T) -> Reloadable<T> {
        Reloadable(RwLock::new(Arc::new(value)))
    }

    /// The current value.
    pub fn load(&self) -> Arc<T> {
        // Invariant: nothing panics while holding the lock (a clone or a pointer swap).
        self.0.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Replaces the value; readers holding the old one keep it until they drop it.
    pub fn store(&self, value: T) {
        *self.0.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(value);
    }
}

impl<T: Default> Default for Reloadable<T> {
    fn default() -> Self {
        Reloadable::new(T::default())
    }
}

impl<T> From<T> for Reloadable<T> {
    fn from(value: T) -> Self {
        Reloadable::new(value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn readers_keep_the_value_they_loaded() {
        let r = Reloadable::new(1);
        let old = r.load();
        r.store(2);
        assert_eq!((*old, *r.load()), (1, 2));
    }
}
