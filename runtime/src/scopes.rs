//! The process-wide scope index: `omni → scopes stored on it`, owned by the runtime next to the
//! revoked index, so that effective scopes — the intersection of the stored scopes along a
//! lineage — are computed at check time from memory, and narrowing a parent narrows every
//! descendant at once.
//!
//! It holds the agents that are *ancestors* of a lineage the runtime read: an actor's own
//! stored scopes are in its own record, which its actor holds, so a leaf agent — most of them —
//! costs the index nothing (docs/BENCHMARKS.md, memory per active agent). Filled lazily from
//! every lineage the runtime reads (an entry is only inserted if absent, so a stale read never
//! overwrites a newer value) and replaced by the owning actor, through its
//! [`ScopeSlot`](crate::ScopeSlot), in the mailbox turn that committed the change (whether or not
//! it had an entry: a descendant's lineage read from before the change must not fill in the old
//! scopes afterwards). On a store that several nodes share, each entry is labelled with the
//! master's change epoch of the read that filled it ([`crate::store::epochs`]) and a read of a
//! newer epoch replaces it: a change committed by another node reaches this index through the
//! next lineage read after it. The runtime knows no scope grammar: scopes are opaque strings
//! here.

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
    /// Records the stored scopes of every agent above the last actor of a lineage read from the
    /// store (the last one's are in its record), unless known from a read of the same or a newer
    /// epoch.
    pub fn fill_from(&self, lineage: &Lineage) {
        let epoch = lineage.epoch();
        let Some((_, ancestors)) = lineage.records().split_last() else {
            return;
        };
        let mut map = self.map.write().unwrap_or_else(|p| p.into_inner());
        for record in ancestors {
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

    /// The effective scopes of the last actor of `chain` (root first), whose own stored scopes
    /// are `own`: `Ok(None)` for a master (it holds every scope), `Ok(Some(set))` for an agent,
    /// `Err(omni)` if an agent above it is not in the index (read the lineage, then ask again).
    pub fn effective<'a>(
        &self,
        chain: &[Omni],
        own: impl IntoIterator<Item = &'a str>,
    ) -> Result<Option<BTreeSet<String>>, Omni> {
        let ancestors = match chain {
            [] | [_] => return Ok(None),
            [_master, ancestors @ .., _own] => ancestors,
        };
        let mut effective: BTreeSet<String> = own.into_iter().map(str::to_owned).collect();
        let map = self.map.read().unwrap_or_else(|p| p.into_inner());
        for omni in ancestors {
            let stored = &map.get(omni).ok_or(*omni)?.1;
            effective.retain(|s| stored.iter().any(|t| t == s));
        }
        Ok(Some(effective))
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

#[cfg(test)]
mod tests {
    use super::ScopeIndex;
    use crate::Timestamp;
    use crate::omni::Omni;
    use crate::store::{ActorKind, ActorRecord, Lineage, StoredStatus};

    fn record(n: u8, parent: Option<u8>, scopes: &[&str]) -> ActorRecord {
        ActorRecord {
            omni: Omni::from_bytes([n; 32]),
            parent: parent.map(|p| Omni::from_bytes([p; 32])),
            label: format!("a{n}"),
            path: String::new(),
            kind: if parent.is_some() {
                ActorKind::Agent
            } else {
                ActorKind::Master
            },
            status: StoredStatus::Active,
            created_at: Timestamp::from_millis(0),
            scopes: scopes.iter().map(|s| s.to_string()).collect(),
        }
    }

    fn set(list: &[&str]) -> Option<std::collections::BTreeSet<String>> {
        Some(list.iter().map(|s| s.to_string()).collect())
    }

    #[test]
    fn only_ancestors_are_held_and_own_scopes_come_from_the_caller() {
        let index = ScopeIndex::default();
        let (master, ops, bot) = (
            record(1, None, &[]),
            record(2, Some(1), &["a", "b", "c"]),
            record(3, Some(2), &["b", "c", "d"]),
        );
        let chain = [master.omni, ops.omni, bot.omni];
        assert_eq!(index.effective(&chain[..1], []), Ok(None), "a master");
        assert_eq!(
            index.effective(&chain, bot.scopes.iter().map(String::as_str)),
            Err(ops.omni)
        );

        index.fill_from(&Lineage::new(vec![master, ops.clone(), bot.clone()]));
        assert_eq!(index.len(), 1, "the leaf's own scopes are not held");
        assert_eq!(
            index.effective(&chain, bot.scopes.iter().map(String::as_str)),
            Ok(set(&["b", "c"]))
        );
        assert_eq!(
            index.effective(&chain[..2], ops.scopes.iter().map(String::as_str)),
            Ok(set(&["a", "b", "c"]))
        );

        // Narrowing the parent narrows the child at once; a lineage read from before the
        // change does not bring the old scopes back.
        index.set(ops.omni, vec!["c".into()]);
        index.fill_from(&Lineage::new(vec![record(1, None, &[]), ops, bot.clone()]));
        assert_eq!(
            index.effective(&chain, bot.scopes.iter().map(String::as_str)),
            Ok(set(&["c"]))
        );
    }
}
