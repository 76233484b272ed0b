//! Short-lived anonymous state (DESIGN §6): SIWE challenges, email logins, pairing requests.
//! In memory, never in redb: entries by id plus an index by a secret-derived key (a nonce, a
//! token hash, a code hash), each with its own expiry, under a global cap. When the cap is
//! reached, expired entries are dropped first; if it is still full, new entries are refused
//! (503 `busy`) rather than evicting live ones.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::{Mutex, MutexGuard};

use super::error::{ApiError, ErrorCode};

/// What the map needs of an entry.
pub trait Expiring {
    /// Seconds since the epoch after which the entry is dead.
    fn expires_at(&self) -> i64;
}

/// The two maps, under one lock.
#[derive(Debug)]
pub struct Entries<K, V> {
    by_id: HashMap<String, V>,
    id_of: HashMap<K, String>,
}

impl<K: Hash + Eq, V> Entries<K, V> {
    /// The id an index key names.
    pub fn id_of(&self, key: &K) -> Option<String> {
        self.id_of.get(key).cloned()
    }

    /// An entry by id.
    pub fn get(&self, id: &str) -> Option<&V> {
        self.by_id.get(id)
    }

    /// An entry by id, to change it.
    pub fn get_mut(&mut self, id: &str) -> Option<&mut V> {
        self.by_id.get_mut(id)
    }

    /// Removes an entry and its index key.
    pub fn remove(&mut self, id: &str, key: &K) -> Option<V> {
        self.id_of.remove(key);
        self.by_id.remove(id)
    }

    /// Entries held.
    pub fn len(&self) -> usize {
        self.by_id.len()
    }

    /// Whether none is held.
    pub fn is_empty(&self) -> bool {
        self.by_id.is_empty()
    }
}

/// See the module documentation.
#[derive(Debug)]
pub struct PendingMap<K, V> {
    inner: Mutex<Entries<K, V>>,
    cap: usize,
    what: &'static str,
}

impl<K: Hash + Eq, V: Expiring> PendingMap<K, V> {
    /// An empty map of at most `cap` entries of `what` (for the refusal message).
    pub fn new(cap: usize, what: &'static str) -> Self {
        Self {
            inner: Mutex::new(Entries {
                by_id: HashMap::new(),
                id_of: HashMap::new(),
            }),
            cap,
            what,
        }
    }

    /// Locks both maps.
    pub fn lock(&self) -> MutexGuard<'_, Entries<K, V>> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Adds an entry under `id`, indexed by `key`; refuses when full of live entries.
    pub fn insert(&self, id: String, key: K, value: V, now: i64) -> Result<(), ApiError> {
        let mut entries = self.lock();
        if entries.by_id.len() >= self.cap {
            let Entries { by_id, id_of } = &mut *entries;
            by_id.retain(|_, v| v.expires_at() > now);
            id_of.retain(|_, id| by_id.contains_key(id));
        }
        if entries.by_id.len() >= self.cap {
            return Err(ApiError::new(
                ErrorCode::Busy,
                format!("too many {} outstanding; retry shortly", self.what),
            ));
        }
        entries.id_of.insert(key, id.clone());
        entries.by_id.insert(id, value);
        Ok(())
    }

    /// Entries held.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether none is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Entry(i64);

    impl Expiring for Entry {
        fn expires_at(&self) -> i64 {
            self.0
        }
    }

    #[test]
    fn full_of_live_entries_refuses_and_expired_ones_make_room() {
        let map: PendingMap<u8, Entry> = PendingMap::new(2, "things");
        map.insert("a".into(), 1, Entry(100), 0).expect("room");
        map.insert("b".into(), 2, Entry(10), 0).expect("room");
        let refused = map.insert("c".into(), 3, Entry(100), 5).expect_err("full");
        assert_eq!(refused.code(), ErrorCode::Busy);
        map.insert("c".into(), 3, Entry(100), 10)
            .expect("b expired");
        let entries = map.lock();
        assert_eq!(entries.id_of(&3).as_deref(), Some("c"));
        assert!(entries.id_of(&2).is_none() && entries.get("b").is_none());
        assert_eq!(entries.len(), 2);
    }
}
