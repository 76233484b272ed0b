//! The DPoP replay cache (RFC 9449 §11.1), partitioned so that no client can use up the room
//! of another.
//!
//! Every recorded proof is a 16-byte hash of `(jti, jkt)` in one map, so a replay is caught
//! whoever sends it. Each entry also belongs to a **partition** — the device binding of an
//! authenticated request, or the client address of a request without a session — and each
//! partition has its own quota. A proof is recorded only after the request's rate limit
//! (per binding or per address) and, on authenticated routes, after the access token has been
//! verified and its `cnf.jkt` matched the proof key; so anonymous traffic can only spend its
//! address's quota, and nobody else's.
//!
//! An entry lives until the proof could no longer pass the `iat` check (`iat + skew`), or, if
//! the proof carries a server `DPoP-Nonce`, until that nonce expires, whichever comes first.
//! A partition's quota is sized from its rate limit and the entry lifetime
//! ([`ReplayCache::quota`]): a client within its rate never reaches it with current `iat`s.
//! Near the quota (proofs dated in the future live longer) the client is asked for a nonce
//! (`use_dpop_nonce`), which shortens its entries' lifetime; past twice the quota, that client
//! alone is told to slow down. Live entries are never evicted, and no answer depends on how
//! full other partitions are.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

use sha2::{Digest, Sha256};

/// Why a proof was not recorded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ReplayError {
    /// Seen before: a replay.
    #[error("this DPoP proof was already used")]
    Replayed,
    /// The partition is near its quota: send proofs with a server nonce.
    #[error("this client must include a fresh DPoP-Nonce")]
    NonceRequired,
    /// The partition is full of live entries even with nonces: this client must wait
    /// (seconds until its oldest entry expires).
    #[error("this client recorded too many DPoP proofs; slow down")]
    Full {
        /// Seconds until room frees up.
        retry_after: i64,
    },
}

/// Who an entry is charged to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Partition {
    /// An authenticated device binding (its id).
    Binding(u64),
    /// A client without a session: its address (IPv6 by /64).
    Address(std::net::IpAddr),
}

/// The quota of a partition, from its rate limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quota {
    /// Entries before a nonce is demanded.
    pub soft: usize,
    /// Entries before the client is refused.
    pub hard: usize,
}

/// One recorded proof.
type EntryKey = [u8; 16];

/// See the module documentation.
#[derive(Debug)]
pub struct ReplayCache {
    skew: i64,
    inner: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    /// Every live entry and its expiry (seconds).
    seen: HashMap<EntryKey, i64>,
    /// Entries by expiry second, with their partition, for purging in order.
    by_expiry: BTreeMap<i64, Vec<(EntryKey, Partition)>>,
    /// Live entries per partition.
    counts: HashMap<Partition, usize>,
}

impl State {
    fn purge(&mut self, now: i64) {
        while let Some(entry) = self.by_expiry.first_entry() {
            if *entry.key() >= now {
                break;
            }
            for (key, partition) in entry.remove() {
                self.seen.remove(&key);
                if let Some(n) = self.counts.get_mut(&partition) {
                    *n -= 1;
                    if *n == 0 {
                        self.counts.remove(&partition);
                    }
                }
            }
        }
    }

    /// Seconds until the oldest entry expires (at least 1).
    fn next_expiry(&self, now: i64) -> i64 {
        self.by_expiry
            .keys()
            .next()
            .map_or(1, |at| at.saturating_sub(now).max(1))
    }
}

impl ReplayCache {
    /// A cache for proofs accepted within `skew_seconds` of the server's time.
    pub fn new(skew_seconds: i64) -> Self {
        Self {
            skew: skew_seconds,
            inner: Mutex::new(State::default()),
        }
    }

    /// The quota of a partition limited to `burst` requests plus `rate` per second: what it
    /// can send while a proof dated now is live (`skew` seconds), plus a second of slack.
    pub fn quota(&self, rate: u64, burst: u64) -> Quota {
        let lifetime = u64::try_from(self.skew).unwrap_or(0).saturating_add(1);
        let soft = usize::try_from(burst.saturating_add(rate.saturating_mul(lifetime)))
            .unwrap_or(usize::MAX);
        Quota {
            soft,
            hard: soft.saturating_mul(2),
        }
    }

    /// The entry of a verified proof and its expiry (what [`record`](Self::record) keeps).
    pub fn entry(&self, proof: &super::dpop::VerifiedProof) -> (EntryKey, i64) {
        (
            Self::key(&proof.jti, &proof.jkt),
            self.expiry(proof.iat, proof.nonce_expires),
        )
    }

    fn expiry(&self, iat: i64, nonce_expires: Option<i64>) -> i64 {
        let expires = iat.saturating_add(self.skew);
        nonce_expires.map_or(expires, |n| n.min(expires))
    }

    fn key(jti: &str, jkt: &str) -> EntryKey {
        let mut h = Sha256::new();
        h.update(jti.as_bytes());
        h.update([0]);
        h.update(jkt.as_bytes());
        let mut out = [0u8; 16];
        out.copy_from_slice(&h.finalize()[..16]);
        out
    }

    /// Records `(jti, jkt)` of a proof issued at `iat` (already checked to be within the skew
    /// of `now`), charged to `partition`. `nonce_expires` is when the proof's server nonce
    /// stops being accepted, if it carries one.
    pub fn record(
        &self,
        proof: (&str, &str, i64),
        nonce_expires: Option<i64>,
        partition: Partition,
        quota: Quota,
        now: i64,
    ) -> Result<(), ReplayError> {
        let (jti, jkt, iat) = proof;
        let key = Self::key(jti, jkt);
        let expires = self.expiry(iat, nonce_expires);
        let mut state = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        state.purge(now);
        if state.seen.contains_key(&key) {
            return Err(ReplayError::Replayed);
        }
        let used = state.counts.get(&partition).copied().unwrap_or(0);
        if used >= quota.hard {
            return Err(ReplayError::Full {
                retry_after: state.next_expiry(now),
            });
        }
        if used >= quota.soft && nonce_expires.is_none() {
            return Err(ReplayError::NonceRequired);
        }
        state.seen.insert(key, expires);
        state
            .by_expiry
            .entry(expires)
            .or_default()
            .push((key, partition));
        *state.counts.entry(partition).or_default() += 1;
        Ok(())
    }

    /// Live entries.
    pub fn len(&self) -> usize {
        self.inner.lock().map(|s| s.seen.len()).unwrap_or(0)
    }

    /// Whether no entry is live.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Live entries of one partition.
    pub fn used(&self, partition: Partition) -> usize {
        self.inner
            .lock()
            .map(|s| s.counts.get(&partition).copied().unwrap_or(0))
            .unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ME: Partition = Partition::Binding(1);
    const QUOTA: Quota = Quota { soft: 2, hard: 4 };

    fn addr(last: u8) -> Partition {
        Partition::Address(std::net::IpAddr::from([192, 0, 2, last]))
    }

    #[test]
    fn replays_are_refused_until_the_entry_expires() {
        let cache = ReplayCache::new(60);
        let big = cache.quota(100, 100);
        assert_eq!(cache.record(("a", "k1", 1000), None, ME, big, 1000), Ok(()));
        assert_eq!(
            cache.record(("a", "k1", 1000), None, ME, big, 1030),
            Err(ReplayError::Replayed)
        );
        assert_eq!(
            cache.record(("a", "k1", 1000), None, addr(1), big, 1030),
            Err(ReplayError::Replayed),
            "caught whoever replays it"
        );
        assert_eq!(
            cache.record(("a", "k2", 1000), None, ME, big, 1030),
            Ok(()),
            "same jti, other key"
        );
        // After iat + skew the entry is gone; by then the iat check refuses the proof.
        assert_eq!(cache.record(("b", "k1", 1100), None, ME, big, 1100), Ok(()));
        assert_eq!(cache.len(), 1);
        assert_eq!(cache.used(ME), 1);
    }

    #[test]
    fn a_full_partition_asks_for_a_nonce_then_refuses_only_its_own_client() {
        let cache = ReplayCache::new(60);
        assert_eq!(
            cache.record(("a", "k", 1000), None, ME, QUOTA, 1000),
            Ok(())
        );
        assert_eq!(
            cache.record(("b", "k", 1000), None, ME, QUOTA, 1000),
            Ok(())
        );
        assert_eq!(
            cache.record(("c", "k", 1000), None, ME, QUOTA, 1000),
            Err(ReplayError::NonceRequired)
        );
        // Another client is not affected by this one's use.
        assert_eq!(
            cache.record(("c", "j", 1000), None, addr(2), QUOTA, 1000),
            Ok(())
        );
        // With a nonce, entries live until the nonce expires.
        assert_eq!(
            cache.record(("c", "k", 1000), Some(1010), ME, QUOTA, 1000),
            Ok(())
        );
        assert_eq!(
            cache.record(("d", "k", 1000), Some(1010), ME, QUOTA, 1000),
            Ok(())
        );
        assert_eq!(
            cache.record(("e", "k", 1000), Some(1010), ME, QUOTA, 1000),
            Err(ReplayError::Full { retry_after: 10 })
        );
        assert_eq!(
            cache.record(("a", "k", 1000), None, ME, QUOTA, 1005),
            Err(ReplayError::Replayed),
            "still live: never evicted"
        );
        // The nonce-bound entries leave first.
        assert_eq!(
            cache.record(("e", "k", 1011), Some(1030), ME, QUOTA, 1011),
            Ok(())
        );
        assert_eq!(cache.used(ME), 3);
    }

    #[test]
    fn the_quota_covers_a_client_at_its_rate() {
        let cache = ReplayCache::new(60);
        let quota = cache.quota(10, 20);
        assert_eq!(quota.soft, 20 + 10 * 61);
        // A client sending 10 proofs a second, each dated now, for five minutes.
        for second in 0..300i64 {
            for i in 0..10 {
                let jti = format!("{second}-{i}");
                let now = 10_000 + second;
                assert_eq!(cache.record((&jti, "k", now), None, ME, quota, now), Ok(()));
            }
        }
        assert!(cache.used(ME) <= quota.soft);
    }
}
