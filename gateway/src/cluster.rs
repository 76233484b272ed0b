//! A node of a deployment whose nodes share one PostgreSQL and serve at once
//! (`store = "postgres://…"`, `active_nodes = "all"`; docs/multi-node.md).
//!
//! Every authenticated request asks the database one statement ([`PgEngine::admit`]): the
//! request's DPoP proof is recorded where every node sees it (a proof replayed to another node
//! is refused), and the master's change epoch is read. The epoch goes with the session check to
//! the actor: a view or an actor that loaded its state at an older epoch loads it again before it
//! answers, so a revocation, a deleted device, narrowed scopes or a new policy committed through
//! any node is seen by every request that starts after that change returned. A node that cannot
//! reach the database refuses authenticated requests (`503 busy`): nothing cached may fail open.
//!
//! A proof issued before the database server (re)started is refused: the shared replay state is
//! not WAL-logged (it is emptied by a crash), so without this rule a proof seen before a crash
//! could be replayed after it. When a node sees the database's start time change (a restart, or
//! a failover to another server), it also flushes its caches ([`Runtime::flush_caches`]).

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use agentkeys_pg::PgEngine;
use agentkeys_runtime::{Omni, Runtime};

use crate::auth::dpop::VerifiedProof;
use crate::http::error::{ApiError, ErrorCode};

/// See the module documentation.
pub struct Cluster {
    engine: Arc<PgEngine>,
    runtime: Runtime,
    /// Seals the logins in progress kept in the database.
    pending_key: zeroize::Zeroizing<[u8; 32]>,
    /// The database server's start time (ms) this node saw last (0: none yet).
    started_ms: AtomicI64,
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster")
            .field("started_ms", &self.started_ms)
            .field("pending_key", &"<redacted>")
            .finish_non_exhaustive()
    }
}

impl Cluster {
    /// The request path of a node on `engine`.
    pub fn new(
        engine: Arc<PgEngine>,
        runtime: Runtime,
        pending_key: zeroize::Zeroizing<[u8; 32]>,
    ) -> Self {
        Self {
            engine,
            runtime,
            pending_key,
            started_ms: AtomicI64::new(0),
        }
    }

    /// Takes a token from the request's `bucket` and records `proof` (`entry`: its replay key
    /// and expiry) for every node, and answers `master`'s change epoch (0 for a request
    /// without a session), or why the request is refused.
    pub async fn admit(
        &self,
        master: Option<&Omni>,
        proof: &VerifiedProof,
        entry: ([u8; 16], i64),
        bucket: agentkeys_pg::Bucket,
    ) -> Result<u64, ApiError> {
        let (key, expires_at) = entry;
        let rate = bucket.rate;
        let admission = self
            .engine
            .admit(master.map(Omni::as_bytes), key, expires_at, bucket)
            .await?;
        if admission.tokens < 0.0 {
            let wait = (-admission.tokens / rate.max(f64::MIN_POSITIVE)).max(1.0);
            return Err(ApiError::new(
                ErrorCode::RateLimited,
                "this client sent more requests than its rate allows (counted on every node); \
                 wait and retry",
            )
            .retry_after(std::time::Duration::from_secs_f64(wait.min(3600.0))));
        }
        let seen = self.started_ms.swap(admission.started_ms, Ordering::SeqCst);
        if seen != 0 && seen != admission.started_ms {
            tracing::warn!("the database restarted or failed over: this node flushed its caches");
            self.runtime.flush_caches();
        }
        if proof.iat.saturating_mul(1000) < admission.started_ms {
            return Err(ApiError::new(
                ErrorCode::InvalidDpopProof,
                "this DPoP proof was issued before the database restarted; send a new one",
            ));
        }
        if !admission.fresh {
            return Err(ApiError::new(
                ErrorCode::InvalidDpopProof,
                crate::auth::dpop::DpopError::Replayed.to_string(),
            ));
        }
        Ok(admission.epoch)
    }

    /// Takes one of `per_hour` tokens (a bucket of that size refilled over an hour) from the
    /// shared bucket `key`; answers how long to wait when there is none.
    pub async fn take_hourly(
        &self,
        key: String,
        per_hour: u64,
        now_ms: u64,
    ) -> Result<Option<std::time::Duration>, ApiError> {
        let rate = per_hour.max(1) as f64 / 3600.0;
        let tokens = self
            .engine
            .take_bucket(agentkeys_pg::Bucket {
                key,
                rate,
                burst: per_hour as f64,
                now_ms: i64::try_from(now_ms).unwrap_or(i64::MAX),
            })
            .await?;
        Ok((tokens < 0.0)
            .then(|| std::time::Duration::from_secs_f64((-tokens / rate).clamp(1.0, 3600.0))))
    }

    /// The engine (logins in progress are kept there too).
    pub fn engine(&self) -> &PgEngine {
        &self.engine
    }

    /// Seals a login in progress of `kind` named `id` for the database (AES-256-GCM under a
    /// key HKDF derives from K3; kind and id as associated data).
    pub fn seal(&self, kind: &str, id: &str, plain: &[u8]) -> Result<Vec<u8>, ApiError> {
        agentkeys_actors::crypto::vault::seal(&self.pending_key, &pending_aad(kind, id), plain)
            .map_err(ApiError::internal)
    }

    /// The inverse of [`seal`](Self::seal); `None` for a value sealed for another kind or id,
    /// or under another K3.
    pub fn open(&self, kind: &str, id: &str, sealed: &[u8]) -> Option<zeroize::Zeroizing<Vec<u8>>> {
        agentkeys_actors::crypto::vault::open(&self.pending_key, &pending_aad(kind, id), sealed)
            .ok()
    }

    /// Forgets expired proofs and logins every minute (any node may; each deletes what has
    /// expired; logins are kept [`GRACE_SECONDS`](crate::http::pending::GRACE_SECONDS) longer,
    /// as in memory).
    pub async fn purge_every_minute(self: Arc<Self>, clock: Arc<dyn agentkeys_runtime::Clock>) {
        let mut tick = tokio::time::interval(std::time::Duration::from_secs(60));
        loop {
            tick.tick().await;
            let now = i64::try_from(clock.now().as_millis() / 1000).unwrap_or(i64::MAX);
            let pending_before = now.saturating_sub(crate::http::pending::GRACE_SECONDS);
            if let Err(e) = self.engine.purge_expired(now, pending_before).await {
                tracing::warn!(cause = %e, "cannot purge expired DPoP proofs and logins");
            }
        }
    }
}

fn pending_aad(kind: &str, id: &str) -> Vec<u8> {
    let mut aad = agentkeys_actors::crypto::labels::PENDING_AAD.to_vec();
    aad.extend_from_slice(kind.as_bytes());
    aad.push(0);
    aad.extend_from_slice(id.as_bytes());
    aad
}
