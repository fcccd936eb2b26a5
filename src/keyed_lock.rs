//! Async locks by key (a volume id, a service/name, an instance id): one holder per key,
//! none across keys. Used by the volume manager and by the drivers that serialize their own
//! back-end calls.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// A guard on one key; the key is free again when it is dropped. It is owned, so it can be
/// moved into a blocking task that must keep the key held even if its caller stops waiting.
pub type KeyGuard = tokio::sync::OwnedMutexGuard<()>;

/// The map grows to this many keys before the ones nobody holds or waits for are dropped.
const PRUNE_AT: usize = 4096;

/// A set of async mutexes, one per key, made on first use.
#[derive(Default)]
pub struct KeyedLocks {
    map: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

impl std::fmt::Debug for KeyedLocks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyedLocks").finish_non_exhaustive()
    }
}

impl KeyedLocks {
    fn entry(&self, key: &str) -> Arc<tokio::sync::Mutex<()>> {
        let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        if map.len() > PRUNE_AT {
            // A lock with no clone outside the map is neither held nor waited for.
            map.retain(|_, m| Arc::strong_count(m) > 1);
        }
        match map.get(key) {
            Some(m) => m.clone(),
            None => map.entry(key.to_string()).or_default().clone(),
        }
    }

    /// Wait for `key` and hold it.
    pub async fn lock(&self, key: &str) -> KeyGuard {
        self.entry(key).lock_owned().await
    }

    /// Hold `key` if nobody holds it, else `None`.
    pub fn try_lock(&self, key: &str) -> Option<KeyGuard> {
        self.entry(key).try_lock_owned().ok()
    }

    /// Hold every key of `keys`, taken in sorted order so that two callers locking
    /// overlapping sets can never wait for each other.
    pub async fn lock_all(&self, mut keys: Vec<String>) -> Vec<KeyGuard> {
        keys.sort();
        keys.dedup();
        let mut guards = Vec::with_capacity(keys.len());
        for key in keys {
            guards.push(self.lock(&key).await);
        }
        guards
    }

    /// How many keys the map holds now (held, waited for, or not yet pruned).
    #[cfg(test)]
    fn len(&self) -> usize {
        self.map.lock().unwrap_or_else(|p| p.into_inner()).len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn one_holder_per_key_and_none_across_keys() {
        let locks = KeyedLocks::default();
        let a = locks.lock("a").await;
        assert!(
            locks.try_lock("a").is_none(),
            "a second holder of a held key"
        );
        let b = locks.try_lock("b");
        assert!(b.is_some(), "another key must not be blocked");
        drop(a);
        assert!(
            locks.try_lock("a").is_some(),
            "a dropped guard frees its key"
        );
    }

    #[tokio::test]
    async fn overlapping_sets_do_not_deadlock() {
        let locks = Arc::new(KeyedLocks::default());
        let mut tasks = Vec::new();
        for i in 0..50 {
            let locks = locks.clone();
            tasks.push(tokio::spawn(async move {
                let keys = if i % 2 == 0 {
                    vec!["x".to_string(), "y".to_string()]
                } else {
                    vec!["y".to_string(), "x".to_string()]
                };
                let _g = locks.lock_all(keys).await;
                tokio::task::yield_now().await;
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
    }

    #[tokio::test]
    async fn unheld_keys_are_pruned_and_held_ones_kept() {
        let locks = KeyedLocks::default();
        let held = locks.lock("held").await;
        for i in 0..3 * PRUNE_AT {
            drop(locks.lock(&format!("k{i}")).await);
            assert!(locks.len() <= PRUNE_AT + 2, "the map outgrew its bound");
        }
        // Pruning a held key would let a second holder in.
        assert!(locks.try_lock("held").is_none(), "a held key was pruned");
        drop(held);
        assert!(locks.try_lock("held").is_some());
    }
}
