//! The DPoP replay cache: 16-byte hashes of `(jti, jkt)` in time buckets keyed by the proof's
//! `iat`, each kept until `iat + skew` has passed. Sized by configuration; when full it fails
//! closed (the caller answers 503 or demands a nonce) and never evicts a live entry.

use std::collections::{BTreeMap, HashSet};
use std::sync::Mutex;

use sha2::{Digest, Sha256};

/// Width of one bucket, seconds.
const BUCKET_SECONDS: i64 = 10;

/// Why a proof's `(jti, jkt)` was not recorded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ReplayError {
    /// Seen before: a replay.
    #[error("this DPoP proof was already used")]
    Replayed,
    /// The cache is full of live entries (fail closed).
    #[error("the DPoP replay cache is full")]
    Full,
}

/// See the module documentation.
#[derive(Debug)]
pub struct ReplayCache {
    capacity: usize,
    skew: i64,
    inner: Mutex<Buckets>,
}

#[derive(Debug, Default)]
struct Buckets {
    by_start: BTreeMap<i64, HashSet<[u8; 16]>>,
    len: usize,
}

impl ReplayCache {
    /// A cache of at most `capacity` live entries for a clock skew of `skew_seconds`.
    pub fn new(capacity: usize, skew_seconds: i64) -> Self {
        Self {
            capacity,
            skew: skew_seconds,
            inner: Mutex::new(Buckets::default()),
        }
    }

    fn key(jti: &str, jkt: &str) -> [u8; 16] {
        let mut h = Sha256::new();
        h.update(jti.as_bytes());
        h.update([0]);
        h.update(jkt.as_bytes());
        let mut out = [0u8; 16];
        out.copy_from_slice(&h.finalize()[..16]);
        out
    }

    /// Records `(jti, jkt)` of a proof issued at `iat` (already checked to be within the skew
    /// of `now`); refuses a replay, or fails closed when full.
    pub fn check_and_insert(
        &self,
        jti: &str,
        jkt: &str,
        iat: i64,
        now: i64,
    ) -> Result<(), ReplayError> {
        let key = Self::key(jti, jkt);
        let mut b = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        // Drop buckets whose every entry has passed iat + skew.
        let expired: Vec<i64> = b
            .by_start
            .keys()
            .take_while(|start| **start + BUCKET_SECONDS + self.skew < now)
            .copied()
            .collect();
        for start in expired {
            if let Some(set) = b.by_start.remove(&start) {
                b.len -= set.len();
            }
        }
        if b.by_start.values().any(|set| set.contains(&key)) {
            return Err(ReplayError::Replayed);
        }
        if b.len >= self.capacity {
            return Err(ReplayError::Full);
        }
        let start = iat.div_euclid(BUCKET_SECONDS) * BUCKET_SECONDS;
        b.by_start.entry(start).or_default().insert(key);
        b.len += 1;
        Ok(())
    }

    /// Live entries.
    pub fn len(&self) -> usize {
        self.inner.lock().map(|b| b.len).unwrap_or(0)
    }

    /// Whether no entry is live.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replays_are_refused_until_the_entry_expires() {
        let cache = ReplayCache::new(100, 60);
        assert_eq!(cache.check_and_insert("a", "k1", 1000, 1000), Ok(()));
        assert_eq!(
            cache.check_and_insert("a", "k1", 1000, 1030),
            Err(ReplayError::Replayed)
        );
        assert_eq!(
            cache.check_and_insert("a", "k2", 1000, 1030),
            Ok(()),
            "same jti, other key"
        );
        // After iat + skew (+ bucket width) the entry is gone; by then the iat check refuses it.
        assert_eq!(cache.check_and_insert("b", "k1", 1100, 1100), Ok(()));
        assert_eq!(cache.len(), 1);
    }

    #[test]
    fn full_cache_fails_closed_without_evicting_live_entries() {
        let cache = ReplayCache::new(2, 60);
        assert_eq!(cache.check_and_insert("a", "k", 1000, 1000), Ok(()));
        assert_eq!(cache.check_and_insert("b", "k", 1000, 1000), Ok(()));
        assert_eq!(
            cache.check_and_insert("c", "k", 1001, 1001),
            Err(ReplayError::Full)
        );
        assert_eq!(
            cache.check_and_insert("a", "k", 1000, 1001),
            Err(ReplayError::Replayed),
            "still live"
        );
        assert_eq!(
            cache.check_and_insert("c", "k", 1200, 1200),
            Ok(()),
            "room once expired"
        );
    }
}
