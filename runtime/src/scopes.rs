//! The process-wide scope index: `omni → scopes stored on it`, owned by the runtime next to the
//! revoked index, so that effective scopes — the intersection of the stored scopes along a
//! lineage — are computed at check time from memory, and narrowing a parent narrows every
//! descendant at once.
//!
//! Filled lazily from every lineage the runtime reads (an entry is only inserted if absent, so a
//! stale read never overwrites a newer value) and replaced by the owning actor, through its
//! [`ScopeSlot`](crate::ScopeSlot), in the mailbox turn that committed the change. On a store
//! that several nodes share, each entry is labelled with the master's change epoch of the read
//! that filled it ([`crate::store::epochs`]) and a read of a newer epoch replaces it: a change
//! committed by another node reaches this index through the next lineage read after it. The runtime
//! knows no scope grammar: scopes are opaque strings here.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, RwLock};

use crate::omni::Omni;
use crate::store::{ActorKind, Lineage};

/// See the module documentation.
#[derive(Debug, Default)]
pub struct ScopeIndex {
    map: RwLock<HashMap<Omni, Entry>>,
}

/// The master's change epoch of the read that filled an entry (0 on redb), and the scopes.
type Entry = (u64, Arc<[String]>);

impl ScopeIndex {
    /// Records the stored scopes of every agent of a lineage read from the store, unless known
    /// from a read of the same or a newer epoch.
    pub fn fill_from(&self, lineage: &Lineage) {
        let epoch = lineage.epoch();
        let mut map = self.map.write().unwrap_or_else(|p| p.into_inner());
        for record in lineage.records() {
            if record.kind == ActorKind::Agent {
                match map.get_mut(&record.omni) {
                    Some(entry) if entry.0 >= epoch => {}
                    Some(entry) => *entry = (epoch, record.scopes.clone().into()),
                    None => {
                        map.insert(record.omni, (epoch, record.scopes.clone().into()));
                    }
                }
            }
        }
    }

    /// Replaces the scopes of `omni` (after a committed change; only through its actor's slot).
    /// The label stays: the change moved the master's epoch past it, so the next request's check
    /// reads the lineage again on a shared store.
    pub(crate) fn set(&self, omni: Omni, scopes: Vec<String>) {
        let mut map = self.map.write().unwrap_or_else(|p| p.into_inner());
        let epoch = map.get(&omni).map_or(0, |e| e.0);
        map.insert(omni, (epoch, scopes.into()));
    }

    /// The effective scopes of the last actor of `chain` (root first): `Ok(None)` for a master
    /// (it holds every scope), `Ok(Some(set))` for an agent, `Err(omni)` if an agent of the chain
    /// is not in the index (read its lineage, then ask again).
    pub fn effective(&self, chain: &[Omni]) -> Result<Option<BTreeSet<String>>, Omni> {
        let map = self.map.read().unwrap_or_else(|p| p.into_inner());
        let mut effective: Option<BTreeSet<String>> = None;
        for omni in chain.iter().skip(1) {
            let stored = &map.get(omni).ok_or(*omni)?.1;
            effective = Some(match effective {
                None => stored.iter().cloned().collect(),
                Some(set) => set
                    .into_iter()
                    .filter(|s| stored.iter().any(|t| t == s))
                    .collect(),
            });
        }
        Ok(effective)
    }

    /// Forgets every entry (refilled from lineage reads).
    pub(crate) fn clear(&self) {
        self.map.write().unwrap_or_else(|p| p.into_inner()).clear();
    }

    /// Entries held.
    pub fn len(&self) -> usize {
        self.map.read().map(|m| m.len()).unwrap_or(0)
    }

    /// Whether the index is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
