//! The process-wide revoked index: `omni → revoked_at`, owned by the runtime.
//!
//! It answers "is this actor or any ancestor revoked?" in O(depth) for a lineage the caller
//! already holds. It is filled lazily: every activation walks the actor's ancestors in the store
//! and records the revoked ones here, and every revocation records its target after the commit.
//! Entries are never removed: a revocation is permanent.

use std::collections::HashMap;
use std::sync::RwLock;

use crate::clock::Timestamp;
use crate::omni::Omni;
use crate::store::Lineage;

/// See the module documentation.
#[derive(Debug, Default)]
pub struct RevokedIndex {
    map: RwLock<HashMap<Omni, Timestamp>>,
}

impl RevokedIndex {
    /// Records a committed revocation; the earliest time wins.
    pub fn insert(&self, omni: Omni, at: Timestamp) {
        let mut map = self
            .map
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        map.entry(omni)
            .and_modify(|t| *t = (*t).min(at))
            .or_insert(at);
    }

    /// Records every revoked record of a lineage read from the store.
    pub fn fill_from(&self, lineage: &Lineage) {
        for record in lineage.records() {
            if let Some(at) = record.revoked_at() {
                self.insert(record.omni, at);
            }
        }
    }

    /// The first revoked omni of `chain` (root first) and its time, if any. O(len(chain)).
    pub fn first_revoked(&self, chain: &[Omni]) -> Option<(Omni, Timestamp)> {
        let map = self
            .map
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        chain
            .iter()
            .find_map(|omni| map.get(omni).map(|at| (*omni, *at)))
    }

    /// How many revoked omnis the index holds.
    pub fn len(&self) -> usize {
        self.map.read().map(|m| m.len()).unwrap_or(0)
    }

    /// Whether the index is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn o(b: u8) -> Omni {
        Omni::from_bytes([b; 32])
    }

    #[test]
    fn finds_the_revoked_ancestor_nearest_the_root() {
        let index = RevokedIndex::default();
        assert_eq!(index.first_revoked(&[o(1), o(2), o(3)]), None);
        index.insert(o(3), Timestamp::from_millis(30));
        index.insert(o(2), Timestamp::from_millis(20));
        assert_eq!(
            index.first_revoked(&[o(1), o(2), o(3)]),
            Some((o(2), Timestamp::from_millis(20)))
        );
        assert_eq!(index.first_revoked(&[o(1), o(4)]), None);
    }

    #[test]
    fn keeps_the_earliest_time() {
        let index = RevokedIndex::default();
        index.insert(o(1), Timestamp::from_millis(50));
        index.insert(o(1), Timestamp::from_millis(70));
        index.insert(o(1), Timestamp::from_millis(40));
        assert_eq!(
            index.first_revoked(&[o(1)]),
            Some((o(1), Timestamp::from_millis(40)))
        );
        assert_eq!(index.len(), 1);
    }
}
