//! The runtime: store, revoked index, arbiters and the registries of active actors.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock, Weak};
use std::time::{Duration, Instant};

use actix::{Arbiter, ArbiterHandle};
use tokio::sync::{Notify, oneshot};

use crate::clock::{Clock, Timestamp};
use crate::lifecycle::StopWatch;
use crate::omni::Omni;
use crate::store::{
    CreateActor, CreateError, Created, Lineage, Mutation, Origin, Revocation, RevokeActor,
    RevokeError, Status, Store, StoreError, WriteError,
};
use crate::supervision::{SupervisionConfig, SupervisionEvent, Supervisor};

/// Tunables of the runtime.
#[derive(Debug, Clone)]
pub struct RuntimeConfig {
    /// Arbiter threads for actors (default: one per core).
    pub arbiters: usize,
    /// An actor with no request for this long is passivated.
    pub idle_timeout: Duration,
    /// Calls in flight per actor before new calls fail at once with `Busy`.
    pub mailbox_capacity: usize,
    /// Restart intensity, backoff and quarantine.
    pub supervision: SupervisionConfig,
}

impl Default for RuntimeConfig {
    fn default() -> Self {
        Self {
            arbiters: std::thread::available_parallelism().map_or(2, |n| n.get()),
            idle_timeout: Duration::from_secs(300),
            mailbox_capacity: 256,
            supervision: SupervisionConfig::default(),
        }
    }
}

/// What a registry of active actors offers the runtime (implemented by [`crate::Registry`]).
pub(crate) trait ActiveSet: Send + Sync {
    /// Stops every active actor whose lineage contains `root`; returns how many.
    fn stop_subtree(&self, root: &Omni) -> usize;
    /// The deepest lineage among active actors (0 when none).
    fn max_depth(&self) -> usize;
    /// Stops every active actor whose lineage has `depth` records; returns their stop watches.
    fn stop_depth(&self, depth: usize) -> Vec<StopWatch>;
    /// How many actors are active.
    fn active(&self) -> usize;
}

/// The outcome of [`Runtime::revoke`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RevocationReceipt {
    /// The revoked actor.
    pub omni: Omni,
    /// When the marker committed (the earlier time on a repeated revoke).
    pub revoked_at: Timestamp,
    /// `false` if the actor was already revoked.
    pub new: bool,
    /// Active actors of the subtree told to stop.
    pub stopped: usize,
    /// Device bindings of the revoked actor tombstoned (descendants' die with their lineage).
    pub bindings_tombstoned: usize,
    /// Time from submission to the durable commit.
    pub commit_time: Duration,
}

/// Why the runtime could not start.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    /// Not called inside a running actix `System`.
    #[error("the runtime must be started inside an actix System")]
    NoSystem,
}

/// The shared runtime handle; cheap to clone.
#[derive(Clone)]
pub struct Runtime {
    inner: Arc<Inner>,
}

struct Inner {
    store: Arc<Store>,
    clock: Arc<dyn Clock>,
    revoked: crate::RevokedIndex,
    scopes: crate::ScopeIndex,
    arbiters: Vec<ArbiterHandle>,
    owned: Mutex<Vec<Arbiter>>,
    sets: RwLock<Vec<Weak<dyn ActiveSet>>>,
    supervisor: Supervisor,
    closing: AtomicBool,
    in_flight: AtomicUsize,
    drained: Notify,
    revocations: std::sync::atomic::AtomicU64,
    /// Moved by [`Runtime::flush_caches`]: state loaded under an older generation is loaded again.
    generation: std::sync::atomic::AtomicU64,
    config: RuntimeConfig,
}

/// What [`Runtime::shutdown`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShutdownReport {
    /// Calls still in flight when the drain period ended (0 when everything finished).
    pub abandoned_calls: usize,
    /// Actors told to stop (deepest first).
    pub stopped_actors: usize,
}

impl std::fmt::Debug for Runtime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runtime")
            .field("arbiters", &self.inner.arbiters.len())
            .finish_non_exhaustive()
    }
}

impl Runtime {
    /// Starts the arbiters. Must run inside an actix `System` (e.g. in `System::block_on`).
    pub fn start(
        store: Arc<Store>,
        clock: Arc<dyn Clock>,
        config: RuntimeConfig,
    ) -> Result<Self, RuntimeError> {
        if actix::System::try_current().is_none() {
            return Err(RuntimeError::NoSystem);
        }
        let owned: Vec<Arbiter> = (0..config.arbiters.max(1))
            .map(|_| Arbiter::new())
            .collect();
        let arbiters = owned.iter().map(Arbiter::handle).collect();
        Ok(Self {
            inner: Arc::new(Inner {
                store,
                clock,
                revoked: crate::RevokedIndex::default(),
                scopes: crate::ScopeIndex::default(),
                arbiters,
                owned: Mutex::new(owned),
                sets: RwLock::new(Vec::new()),
                supervisor: Supervisor::new(config.supervision.clone()),
                closing: AtomicBool::new(false),
                in_flight: AtomicUsize::new(0),
                drained: Notify::new(),
                revocations: std::sync::atomic::AtomicU64::new(0),
                generation: std::sync::atomic::AtomicU64::new(0),
                config,
            }),
        })
    }

    /// The store.
    pub fn store(&self) -> &Arc<Store> {
        &self.inner.store
    }

    /// The injected clock.
    pub fn clock(&self) -> &Arc<dyn Clock> {
        &self.inner.clock
    }

    /// Makes every actor load its state from the store again before it answers its next check,
    /// and empties the scope index (refilled from the store as lineages are read): what a node
    /// of a shared store does when the database restarted or failed over. The revoked index
    /// stays: a revocation is permanent.
    pub fn flush_caches(&self) {
        self.inner.generation.fetch_add(1, Ordering::SeqCst);
        self.inner.scopes.clear();
    }

    /// How many times the caches were flushed ([`flush_caches`](Self::flush_caches)).
    pub fn cache_generation(&self) -> u64 {
        self.inner.generation.load(Ordering::SeqCst)
    }

    /// The revoked index.
    pub fn revoked(&self) -> &crate::RevokedIndex {
        &self.inner.revoked
    }

    /// The configuration.
    pub fn config(&self) -> &RuntimeConfig {
        &self.inner.config
    }

    /// The arbiter that hosts `omni` (chosen by its first bytes).
    pub(crate) fn arbiter_for(&self, omni: &Omni) -> &ArbiterHandle {
        let mut first = [0u8; 8];
        first.copy_from_slice(&omni.as_bytes()[..8]);
        let n = self.inner.arbiters.len() as u64;
        let i = usize::try_from(u64::from_be_bytes(first) % n).unwrap_or(0);
        &self.inner.arbiters[i]
    }

    pub(crate) fn register_set(&self, set: Weak<dyn ActiveSet>) {
        // A poisoned lock still holds a consistent list (a push or a retain); dropping the
        // registry instead would leave its actors out of every revocation.
        let mut sets = self
            .inner
            .sets
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        sets.retain(|s| s.strong_count() > 0);
        sets.push(set);
    }

    fn sets(&self) -> Vec<Arc<dyn ActiveSet>> {
        self.inner
            .sets
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .iter()
            .filter_map(Weak::upgrade)
            .collect()
    }

    /// Reads an actor's lineage from the store and records its revoked ancestors in the index.
    pub fn lineage(&self, omni: &Omni) -> Result<Option<Lineage>, StoreError> {
        let lineage = self.inner.store.lineage(omni)?;
        if let Some(lineage) = &lineage {
            self.inner.revoked.fill_from(lineage);
            self.inner.scopes.fill_from(lineage);
        }
        Ok(lineage)
    }

    /// Checks `omni`'s lineage in the store and the index; the proof is what the signer takes.
    pub fn check_live(&self, omni: &Omni) -> Result<crate::LiveProof, crate::CallError> {
        let lineage = self.lineage(omni)?.ok_or(crate::CallError::NotFound)?;
        if let Status::Revoked { by, at } = lineage.status() {
            return Err(crate::CallError::Revoked { by, at });
        }
        crate::registry::LineageGuard::new(lineage.omnis().into(), self.clone()).check()
    }

    /// The effective status of an actor, computed on read (`None` if it does not exist).
    pub fn status(&self, omni: &Omni) -> Result<Option<Status>, StoreError> {
        Ok(self.lineage(omni)?.map(|l| l.status()))
    }

    /// The scope index (effective scopes are computed from it at check time).
    pub fn scopes(&self) -> &crate::ScopeIndex {
        &self.inner.scopes
    }

    /// Creates an actor durably. Runs to completion even if the returned future is dropped.
    pub async fn create(&self, op: CreateActor) -> Result<Created, WriteError<CreateError>> {
        self.inner.store.create_actor(op).await
    }

    /// Revokes `omni` and so its whole subtree, on behalf of the system (see [`Self::revoke_as`]).
    pub async fn revoke(&self, omni: Omni) -> Result<RevocationReceipt, WriteError<RevokeError>> {
        self.revoke_as(omni, Origin::default()).await
    }

    /// Revokes `omni` and so its whole subtree, writing the marker alone (see
    /// [`Self::revoke_with`]).
    pub async fn revoke_as(
        &self,
        omni: Omni,
        origin: Origin,
    ) -> Result<RevocationReceipt, WriteError<RevokeError>> {
        self.revoke_with(omni, origin, |op| op).await
    }

    /// Revokes `omni` and so its whole subtree; `wrap` lets a higher layer add its own effects
    /// to the marker's transaction (the ledger tombstones bindings and writes the audit row).
    ///
    /// Order: one durable write (the marker on `omni`), then the index entry, then every active
    /// actor of the subtree is told to stop, then the answer. The work runs on a detached task:
    /// dropping the returned future does not stop it, and repeating it is harmless.
    pub async fn revoke_with<M>(
        &self,
        omni: Omni,
        origin: Origin,
        wrap: impl FnOnce(RevokeActor) -> M,
    ) -> Result<RevocationReceipt, WriteError<RevokeError>>
    where
        M: Mutation<Output = Revocation, Rejection = RevokeError>,
    {
        let started = Instant::now();
        // The urgent lane: a revocation does not queue behind audit rows.
        let pending = self.inner.store.submit_urgent(wrap(RevokeActor {
            omni,
            at: self.inner.clock.now(),
            origin,
        }));
        let runtime = self.clone();
        let (tx, rx) = oneshot::channel();
        tokio::spawn(async move {
            let (answer, committed) = pending.answered_at().await;
            let answer = answer.map(|revocation| {
                // Submission to commit, in the writer; not the wake-up of this task.
                let commit_time = committed.saturating_duration_since(started);
                runtime.inner.revoked.insert(omni, revocation.revoked_at);
                let stopped = runtime.stop_subtree(&omni);
                if revocation.new {
                    runtime.inner.revocations.fetch_add(1, Ordering::Relaxed);
                }
                RevocationReceipt {
                    omni,
                    revoked_at: revocation.revoked_at,
                    new: revocation.new,
                    stopped,
                    bindings_tombstoned: revocation.bindings_tombstoned,
                    commit_time,
                }
            });
            let _ = tx.send(answer);
        });
        rx.await
            .unwrap_or(Err(WriteError::Store(StoreError::Closed)))
    }

    fn stop_subtree(&self, root: &Omni) -> usize {
        self.sets().iter().map(|set| set.stop_subtree(root)).sum()
    }

    /// Revocations committed by this process (repeats not counted).
    pub fn revocations(&self) -> u64 {
        self.inner.revocations.load(Ordering::Relaxed)
    }

    /// Active actors across all registries.
    pub fn active_actors(&self) -> usize {
        self.sets().iter().map(|set| set.active()).sum()
    }

    /// Whether every arbiter thread is still running.
    pub fn arbiters_alive(&self) -> bool {
        self.inner
            .owned
            .lock()
            .map(|owned| owned.iter().all(|a| a.handle().spawn(async {})))
            .unwrap_or(false)
    }

    /// Stops all actors, deepest first: each level has stopped (or `limit` passed) before the
    /// next one up is told.
    async fn stop_leaf_first(&self, limit: Duration) -> usize {
        let sets = self.sets();
        let deepest = sets.iter().map(|s| s.max_depth()).max().unwrap_or(0);
        let mut stopped = 0;
        for depth in (1..=deepest).rev() {
            let watches: Vec<StopWatch> = sets.iter().flat_map(|s| s.stop_depth(depth)).collect();
            stopped += watches.len();
            let all = async {
                for watch in watches {
                    watch.stopped().await;
                }
            };
            if tokio::time::timeout(limit, all).await.is_err() {
                tracing::warn!(depth, "actors did not stop in time");
            }
        }
        stopped
    }

    pub(crate) fn supervisor(&self) -> &Supervisor {
        &self.inner.supervisor
    }

    /// Whether `omni` is quarantined now (restart intensity exceeded).
    pub fn is_quarantined(&self, omni: &Omni) -> bool {
        self.inner
            .supervisor
            .is_quarantined(omni, self.inner.clock.now())
    }

    /// Ends a quarantine early (host administrator); `false` if `omni` was not quarantined.
    pub fn lift_quarantine(&self, omni: &Omni) -> bool {
        self.inner.supervisor.lift(omni, self.inner.clock.now())
    }

    /// Takes the supervision events recorded since the last call (oldest first), and how many
    /// were dropped because nobody drained them in time.
    pub fn drain_supervision_events(&self) -> (Vec<SupervisionEvent>, u64) {
        self.inner.supervisor.drain_events()
    }

    /// Whether shutdown has begun (no new activations).
    pub fn is_closing(&self) -> bool {
        self.inner.closing.load(Ordering::Acquire)
    }

    pub(crate) fn call_started(&self) {
        self.inner.in_flight.fetch_add(1, Ordering::AcqRel);
    }

    pub(crate) fn call_finished(&self) {
        if self.inner.in_flight.fetch_sub(1, Ordering::AcqRel) == 1 && self.is_closing() {
            self.inner.drained.notify_waiters();
        }
    }

    /// Calls in flight across all actors.
    pub fn calls_in_flight(&self) -> usize {
        self.inner.in_flight.load(Ordering::Acquire)
    }

    /// Shuts down in order: stop intake (no new activations), drain calls in flight for at most
    /// `drain`, finish the group commit, stop actors deepest first, stop the arbiters, close
    /// the store. Idempotent.
    pub async fn shutdown(&self, drain: Duration) -> ShutdownReport {
        self.inner.closing.store(true, Ordering::Release);
        let drained = async {
            loop {
                let notified = self.inner.drained.notified();
                if self.calls_in_flight() == 0 {
                    break;
                }
                notified.await;
            }
        };
        let _ = tokio::time::timeout(drain, drained).await;
        let abandoned_calls = self.calls_in_flight();
        if let Err(e) = self.inner.store.flush().await {
            tracing::error!(cause = %e, "final group commit failed");
        }
        let stopped_actors = self.stop_leaf_first(drain).await;
        let owned = self.inner.owned.lock().map_or_else(
            |poisoned| std::mem::take(&mut *poisoned.into_inner()),
            |mut owned| std::mem::take(&mut *owned),
        );
        for arbiter in &owned {
            arbiter.stop();
        }
        let joined = tokio::task::spawn_blocking(move || {
            owned.into_iter().all(|arbiter| arbiter.join().is_ok())
        })
        .await;
        if !matches!(joined, Ok(true)) {
            tracing::error!("an arbiter thread panicked");
        }
        self.inner.store.close();
        ShutdownReport {
            abandoned_calls,
            stopped_actors,
        }
    }
}
