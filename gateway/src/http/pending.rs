//! Short-lived anonymous state (DESIGN §6): SIWE challenges, email logins, pairing requests.
//! In memory, never in redb: entries by id plus an index by a secret-derived key (a nonce, a
//! token hash, a code hash), each with its own expiry.
//!
//! With every node of a PostgreSQL deployment active, a map is **shared** ([`PendingMap::share`]):
//! each entry is also kept, sealed under a key derived from K3, in the database's
//! `agentkeys_pending` table, which is the truth. A step of a flow first brings this node's copy
//! up to date ([`PendingMap::pull`]), changes it in memory as on one node, then writes it back
//! with a compare-and-set on what it pulled ([`PendingMap::publish`]): of two nodes advancing
//! the same request from the same state, one wins and the other answers as if it had lost the
//! race on one node. The quotas below stay per node.
//!
//! Expired entries are kept [`GRACE_SECONDS`] longer, so a late poll is told `expired` rather
//! than `not_found`; they count against no quota.
//!
//! Fair by construction: every entry is charged to the client that asked for it — its address
//! (IPv6 by /64) and its DPoP key — and each of those may hold at most `pending_per_client`
//! outstanding entries of a kind (beyond: 429 `rate_limited` until its oldest one expires).
//! At the global cap (`pending_cap`), expired entries go first; if the map is still full, the
//! oldest entry of the client address holding the most is evicted, so a new client always
//! gets in and only the heaviest client loses anything.

use std::collections::{BTreeSet, HashMap};
use std::hash::Hash;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::Duration;

use super::error::{ApiError, ErrorCode};
use super::ratelimit::client_key;
use crate::config::Limits;

/// How long an expired entry is kept to answer `expired`.
pub const GRACE_SECONDS: i64 = 600;

/// What the map needs of an entry.
pub trait Expiring {
    /// Seconds since the epoch after which the entry is dead.
    fn expires_at(&self) -> i64;
}

/// An entry kept in a shared database: its encoding (sealed by the caller) and who started it.
pub trait SharedEntry: Sized {
    /// The bytes kept (before sealing).
    fn encode(&self) -> Result<Vec<u8>, ApiError>;
    /// The inverse of [`encode`](Self::encode).
    fn decode(bytes: &[u8]) -> Option<Self>;
    /// The DPoP key thumbprint that started it.
    fn owner(&self) -> &str;
}

/// An index key kept in a shared database.
pub trait SharedKey: Sized {
    /// Its bytes.
    fn to_bytes(&self) -> Vec<u8>;
    /// The inverse of [`to_bytes`](Self::to_bytes).
    fn from_bytes(bytes: &[u8]) -> Option<Self>;
}

impl SharedKey for [u8; 32] {
    fn to_bytes(&self) -> Vec<u8> {
        self.to_vec()
    }
    fn from_bytes(bytes: &[u8]) -> Option<Self> {
        bytes.try_into().ok()
    }
}

/// How a step names its entry.
#[derive(Debug, Clone, Copy)]
pub enum Name<'a, K> {
    /// By request id.
    Id(&'a str),
    /// By index key.
    Key(&'a K),
}

/// A shared map's database and its kind there.
struct Sharing {
    cluster: Arc<crate::cluster::Cluster>,
    kind: &'static str,
}

impl std::fmt::Debug for Sharing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sharing").field("kind", &self.kind).finish()
    }
}

/// Who asked for an entry.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Client {
    /// The client's address (IPv6 by /64).
    Address(IpAddr),
    /// The client's DPoP key thumbprint.
    Key(String),
}

/// The requester of a new entry: its address and its DPoP key.
#[derive(Debug, Clone)]
pub struct Requester {
    /// The client address (as the rate limiter sees it).
    pub ip: IpAddr,
    /// The DPoP key thumbprint.
    pub jkt: String,
}

impl Requester {
    fn clients(&self) -> [Client; 2] {
        [
            Client::Address(client_key(self.ip)),
            Client::Key(self.jkt.clone()),
        ]
    }
}

#[derive(Debug)]
struct Slot<K, V> {
    value: V,
    key: K,
    clients: [Client; 2],
}

/// The maps, under one lock.
#[derive(Debug)]
pub struct Entries<K, V> {
    by_id: HashMap<String, Slot<K, V>>,
    id_of: HashMap<K, String>,
    /// Outstanding entries per client, by expiry.
    by_client: HashMap<Client, BTreeSet<(i64, String)>>,
    /// Every entry by expiry.
    by_expiry: BTreeSet<(i64, String)>,
}

impl<K: Hash + Eq + Clone, V: Expiring> Entries<K, V> {
    /// The id an index key names.
    pub fn id_of(&self, key: &K) -> Option<String> {
        self.id_of.get(key).cloned()
    }

    /// An entry by id.
    pub fn get(&self, id: &str) -> Option<&V> {
        self.by_id.get(id).map(|s| &s.value)
    }

    /// An entry by id, to change it.
    pub fn get_mut(&mut self, id: &str) -> Option<&mut V> {
        self.by_id.get_mut(id).map(|s| &mut s.value)
    }

    /// Removes an entry and its index key.
    pub fn remove(&mut self, id: &str, key: &K) -> Option<V> {
        let slot = self.by_id.get(id)?;
        if slot.key != *key {
            self.id_of.remove(key);
        }
        self.take(id)
    }

    /// Removes an entry with everything that indexes it.
    fn take(&mut self, id: &str) -> Option<V> {
        let slot = self.by_id.remove(id)?;
        self.id_of.remove(&slot.key);
        let at = (slot.value.expires_at(), id.to_string());
        self.by_expiry.remove(&at);
        for client in &slot.clients {
            if let Some(set) = self.by_client.get_mut(client) {
                set.remove(&at);
                if set.is_empty() {
                    self.by_client.remove(client);
                }
            }
        }
        Some(slot.value)
    }

    /// Drops every entry dead at `now`.
    fn purge(&mut self, now: i64) {
        while let Some((at, id)) = self.by_expiry.first().cloned() {
            if at > now {
                break;
            }
            self.take(&id);
        }
    }

    /// Puts an entry read from the shared database in place of this node's copy (charged to its
    /// owner's key, never to an address).
    fn put_pulled(&mut self, id: String, key: K, value: V, owner: &str) {
        self.take(&id);
        let clients = [
            Client::Key(owner.to_string()),
            Client::Key(owner.to_string()),
        ];
        self.place(id, key, value, clients);
    }

    /// Adds an entry with every index (the caller made room).
    fn place(&mut self, id: String, key: K, value: V, clients: [Client; 2]) {
        let at = (value.expires_at(), id.clone());
        for client in &clients {
            self.by_client
                .entry(client.clone())
                .or_default()
                .insert(at.clone());
        }
        self.by_expiry.insert(at);
        self.id_of.insert(key.clone(), id.clone());
        self.by_id.insert(
            id,
            Slot {
                value,
                key,
                clients,
            },
        );
    }

    /// Evicts the oldest entry of the client address holding the most; `false` if none.
    fn evict_from_heaviest(&mut self) -> bool {
        let heaviest = self
            .by_client
            .iter()
            .filter(|(c, _)| matches!(c, Client::Address(_)))
            .max_by_key(|(_, set)| set.len())
            .and_then(|(_, set)| set.first().map(|(_, id)| id.clone()));
        heaviest.is_some_and(|id| self.take(&id).is_some())
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
    per_client: usize,
    what: &'static str,
    sharing: OnceLock<Sharing>,
}

/// An entry as [`PendingMap::keep_shared`] writes it to the database.
#[derive(Debug)]
pub struct SharedRow {
    /// The kind.
    pub kind: &'static str,
    /// The request id.
    pub id: String,
    /// The index key's bytes.
    pub key_bytes: Vec<u8>,
    /// The DPoP key thumbprint that started it.
    pub owner: String,
    /// What is kept (sealed, or free of secrets).
    pub value: Vec<u8>,
    /// Seconds since the epoch.
    pub expires_at: i64,
}

impl<K: Hash + Eq + Clone, V: Expiring> PendingMap<K, V> {
    /// Writes an entry this node just inserted (as `id`, `key`) to the shared database, unless
    /// its key or its address already holds `pending_per_client` live entries of the kind on
    /// the whole deployment (429 `rate_limited`); on any refusal or failure this node drops
    /// its copy too.
    pub async fn keep_shared(
        &self,
        cluster: &crate::cluster::Cluster,
        row: SharedRow,
        key: &K,
        by: &Requester,
        now: i64,
    ) -> Result<(), ApiError> {
        let id = row.id.clone();
        let stored = cluster
            .engine()
            .put_pending(agentkeys_pg::NewPending {
                kind: row.kind,
                id: row.id,
                key: row.key_bytes,
                owner: row.owner,
                client: client_key(by.ip).to_string(),
                value: row.value,
                expires_at: row.expires_at,
                now,
                per_client: i64::try_from(self.per_client).unwrap_or(i64::MAX),
            })
            .await;
        let refusal = match stored {
            Ok(true) => return Ok(()),
            Ok(false) => ApiError::new(
                ErrorCode::RateLimited,
                format!(
                    "this client has {} {} outstanding on this deployment; finish or let one \
                     expire first",
                    self.per_client, self.what
                ),
            )
            .retry_after(Duration::from_secs(60)),
            Err(e) => e.into(),
        };
        self.lock().remove(&id, key);
        Err(refusal)
    }
}

impl<K: Hash + Eq + Clone, V: Expiring> PendingMap<K, V> {
    /// An empty map of `what` (for messages) with the caps of `limits`.
    pub fn new(limits: &Limits, what: &'static str) -> Self {
        Self::with_caps(
            usize::try_from(limits.pending_cap).unwrap_or(usize::MAX),
            usize::try_from(limits.pending_per_client).unwrap_or(usize::MAX),
            what,
        )
    }

    /// An empty map of at most `cap` entries, `per_client` per client.
    pub fn with_caps(cap: usize, per_client: usize, what: &'static str) -> Self {
        Self {
            inner: Mutex::new(Entries {
                by_id: HashMap::new(),
                id_of: HashMap::new(),
                by_client: HashMap::new(),
                by_expiry: BTreeSet::new(),
            }),
            cap: cap.max(1),
            per_client: per_client.max(1),
            what,
            sharing: OnceLock::new(),
        }
    }

    /// Locks the maps.
    pub fn lock(&self) -> MutexGuard<'_, Entries<K, V>> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Adds an entry under `id`, indexed by `key`, charged to `by`: refused when that client
    /// already holds its share; at the global cap the heaviest client loses its oldest entry.
    pub fn insert(
        &self,
        id: String,
        key: K,
        value: V,
        by: &Requester,
        now: i64,
    ) -> Result<(), ApiError> {
        let mut entries = self.lock();
        entries.purge(now.saturating_sub(GRACE_SECONDS));
        let clients = by.clients();
        for client in &clients {
            let Some(set) = entries.by_client.get(client) else {
                continue;
            };
            let live = set
                .range((now.saturating_add(1), String::new())..)
                .map(|(at, _)| *at);
            let oldest = live.clone().next().unwrap_or(now);
            let held = live.count();
            if held >= self.per_client {
                let wait = u64::try_from(oldest.saturating_sub(now))
                    .unwrap_or(0)
                    .max(1);
                return Err(ApiError::new(
                    ErrorCode::RateLimited,
                    format!(
                        "this client has {held} {} outstanding; finish or let one expire first",
                        self.what
                    ),
                )
                .retry_after(Duration::from_secs(wait)));
            }
        }
        if entries.by_id.len() >= self.cap {
            entries.purge(now);
        }
        while entries.by_id.len() >= self.cap && entries.evict_from_heaviest() {}
        entries.place(id, key, value, clients);
        Ok(())
    }

    /// Entries held.
    pub fn len(&self) -> usize {
        self.lock().len()
    }
}

impl<K: Hash + Eq + Clone + SharedKey, V: Expiring + SharedEntry> PendingMap<K, V> {
    /// Keeps the entries in the shared database of `cluster` as well, under `kind` (see the
    /// module documentation).
    pub fn share(&self, cluster: Arc<crate::cluster::Cluster>, kind: &'static str) {
        let _ = self.sharing.set(Sharing { cluster, kind });
    }

    /// [`insert`](Self::insert), and on a shared map the entry written to the database too (if
    /// that fails, it is not kept here either).
    pub async fn insert_shared(
        &self,
        id: String,
        key: K,
        value: V,
        by: &Requester,
        now: i64,
    ) -> Result<(), ApiError> {
        let shared = match self.sharing.get() {
            Some(s) => Some((
                s,
                value.owner().to_string(),
                value.encode()?,
                value.expires_at(),
            )),
            None => None,
        };
        self.insert(id.clone(), key.clone(), value, by, now)?;
        let Some((s, owner, plain, expires_at)) = shared else {
            return Ok(());
        };
        let sealed = match s.cluster.seal(s.kind, &id, &plain) {
            Ok(sealed) => sealed,
            Err(e) => {
                self.lock().remove(&id, &key);
                return Err(e);
            }
        };
        let row = SharedRow {
            kind: s.kind,
            id,
            key_bytes: key.to_bytes(),
            owner,
            value: sealed,
            expires_at,
        };
        self.keep_shared(&s.cluster, row, &key, by, now).await
    }

    /// On a shared map: replaces this node's copy of the entry `name` with the database's (or
    /// drops it if the database has none); answers the stored bytes seen, for
    /// [`publish`](Self::publish). `None` on a map of one node.
    pub async fn pull(&self, name: Name<'_, K>) -> Result<Option<Vec<u8>>, ApiError> {
        let Some(s) = self.sharing.get() else {
            return Ok(None);
        };
        let (id, key) = match name {
            Name::Id(id) => (Some(id.to_string()), None),
            Name::Key(key) => (None, Some(key.to_bytes())),
        };
        let found = s
            .cluster
            .engine()
            .get_pending(s.kind, id.clone(), key.clone())
            .await?;
        let malformed =
            || ApiError::internal("a login in progress kept in the database is malformed");
        let mut entries = self.lock();
        match found {
            Some((id, key, sealed)) => {
                let value = s
                    .cluster
                    .open(s.kind, &id, &sealed)
                    .and_then(|plain| V::decode(&plain))
                    .ok_or_else(malformed)?;
                let key = K::from_bytes(&key).ok_or_else(malformed)?;
                let owner = value.owner().to_string();
                entries.put_pulled(id, key, value, &owner);
                Ok(Some(sealed))
            }
            None => {
                let local = match (id, key) {
                    (Some(id), _) => Some(id),
                    (None, Some(key)) => K::from_bytes(&key).and_then(|k| entries.id_of(&k)),
                    (None, None) => None,
                };
                if let Some(id) = local {
                    entries.take(&id);
                }
                Ok(None)
            }
        }
    }

    /// On a shared map: writes this node's copy of `id` to the database — only if the database
    /// still holds `seen` (from [`pull`](Self::pull)), when given — or deletes it there if this
    /// node no longer holds it. Answers `false` when another node changed it first (this
    /// node's change is then not kept). `true` on a map of one node.
    pub async fn publish(&self, id: &str, seen: Option<Vec<u8>>) -> Result<bool, ApiError> {
        let Some(s) = self.sharing.get() else {
            return Ok(true);
        };
        let plain = {
            let entries = self.lock();
            entries.get(id).map(SharedEntry::encode).transpose()?
        };
        let engine = s.cluster.engine();
        match plain {
            Some(plain) => {
                let sealed = s.cluster.seal(s.kind, id, &plain)?;
                let written = engine
                    .update_pending(s.kind, id.to_string(), seen, sealed)
                    .await?;
                if !written {
                    // Not this node's change: the next step pulls what won.
                    let mut entries = self.lock();
                    entries.take(id);
                }
                Ok(written)
            }
            None => {
                engine.delete_pending(s.kind, id.to_string()).await?;
                Ok(true)
            }
        }
    }
}

impl<K: Hash + Eq + Clone, V: Expiring> PendingMap<K, V> {
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

    fn from(ip: [u8; 4], jkt: &str) -> Requester {
        Requester {
            ip: IpAddr::from(ip),
            jkt: jkt.into(),
        }
    }

    #[test]
    fn each_client_holds_at_most_its_share() {
        let map: PendingMap<u8, Entry> = PendingMap::with_caps(100, 2, "things");
        let a = from([192, 0, 2, 1], "ka");
        map.insert("1".into(), 1, Entry(100), &a, 0).expect("room");
        map.insert("2".into(), 2, Entry(50), &from([192, 0, 2, 1], "kb"), 0)
            .expect("room");
        let refused = map
            .insert("3".into(), 3, Entry(100), &from([192, 0, 2, 1], "kc"), 0)
            .expect_err("the address holds two");
        assert_eq!(refused.code(), ErrorCode::RateLimited);
        // The same key from another address is refused too once it holds two.
        map.insert("4".into(), 4, Entry(100), &from([192, 0, 2, 9], "ka"), 0)
            .expect("room");
        let refused = map
            .insert("5".into(), 5, Entry(100), &from([192, 0, 2, 8], "ka"), 0)
            .expect_err("the key holds two");
        assert_eq!(refused.code(), ErrorCode::RateLimited);
        // Expired entries stop counting, and are kept a while to answer `expired`.
        map.insert("6".into(), 6, Entry(100), &from([192, 0, 2, 1], "kd"), 51)
            .expect("2 expired");
        assert!(map.lock().get("2").is_some());
        map.insert(
            "7".into(),
            7,
            Entry(1000),
            &from([192, 0, 2, 7], "ke"),
            50 + GRACE_SECONDS,
        )
        .expect("room");
        let entries = map.lock();
        assert!(entries.get("2").is_none() && entries.id_of(&2).is_none());
        assert_eq!(entries.len(), 4);
    }

    #[test]
    fn at_the_cap_the_heaviest_client_makes_room() {
        let map: PendingMap<u8, Entry> = PendingMap::with_caps(4, 3, "things");
        for (i, jkt) in ["a", "b", "c"].iter().enumerate() {
            let id = u8::try_from(i).expect("small");
            map.insert(
                id.to_string(),
                id,
                Entry(100 + i64::from(id)),
                &from([10, 0, 0, 1], jkt),
                0,
            )
            .expect("room");
        }
        map.insert("7".into(), 7, Entry(100), &from([10, 0, 0, 2], "d"), 0)
            .expect("room");
        // Full: a newcomer gets in, and the heavy client loses its oldest entry.
        map.insert("8".into(), 8, Entry(100), &from([10, 0, 0, 3], "e"), 0)
            .expect("a newcomer is never refused at the cap");
        let entries = map.lock();
        assert_eq!(entries.len(), 4);
        assert!(
            entries.get("0").is_none(),
            "the heaviest client's oldest went"
        );
        assert!(entries.get("7").is_some() && entries.get("8").is_some());
        assert_eq!(entries.id_of(&0), None);
    }

    #[test]
    fn remove_clears_every_index() {
        let map: PendingMap<u8, Entry> = PendingMap::with_caps(10, 1, "things");
        let a = from([192, 0, 2, 1], "ka");
        map.insert("1".into(), 1, Entry(100), &a, 0).expect("room");
        assert!(map.lock().remove("1", &1).is_some());
        map.insert("2".into(), 2, Entry(100), &a, 0)
            .expect("the share is free again");
        assert_eq!(map.len(), 1);
    }
}
