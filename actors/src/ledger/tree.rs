//! The ledger's effects on the runtime's tree writes (a create indexes the managed wallet and
//! is audited; a revocation tombstones the actor's bindings and is audited, in the marker's
//! transaction), and the audit log's batch hook.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};

use agentkeys_runtime::store::WriteTransaction;
use agentkeys_runtime::store::{
    BatchHook, CreateActor, CreateError, CreatePlan, Created, Lane, Mutation, Origin, Revocation,
    RevokeActor, RevokeError, RevokePlan, StoreError, WriteError,
};
use agentkeys_runtime::{Omni, Runtime, SupervisionEvent};

use super::audit::{self, AuditEntry, HeadSigner, op};
use super::{Ledger, accounts, devices};

/// A create with its ledger effects: the managed wallet is indexed (it can never log in) and
/// an `actor.create` row joins the master's chain.
#[derive(Debug, Clone)]
pub struct NewActor {
    /// The tree write.
    pub actor: CreateActor,
    /// The actor's managed wallet address (`None`: not indexed).
    pub wallet: Option<[u8; 20]>,
}

/// What a [`NewActor`]'s check decided.
#[derive(Debug)]
pub struct NewActorPlan {
    plan: CreatePlan,
    wallet: Option<[u8; 20]>,
}

impl NewActorPlan {
    /// The master of the tree the plan writes into (`None` for an existing actor).
    pub fn master(&self) -> Option<agentkeys_runtime::Omni> {
        self.plan.master()
    }
}

impl Mutation for NewActor {
    type Plan = NewActorPlan;
    type Output = Created;
    type Rejection = CreateError;

    fn check(
        self,
        view: &WriteTransaction,
    ) -> Result<Result<NewActorPlan, CreateError>, StoreError> {
        let wallet = self.wallet;
        Ok(self
            .actor
            .check(view)?
            .map(|plan| NewActorPlan { plan, wallet }))
    }

    fn apply(plan: NewActorPlan, txn: &WriteTransaction) -> Result<Created, StoreError> {
        let effects = match &plan.plan {
            CreatePlan::Insert { master, origin, .. } => Some((*master, origin.clone())),
            CreatePlan::Existing(_) => None,
        };
        let created = CreateActor::apply(plan.plan, txn)?;
        if let Some((master, origin)) = effects {
            let record = &created.record;
            if let Some(wallet) = &plan.wallet {
                accounts::index_wallet(txn, wallet, &record.omni)?;
            }
            let row = AuditEntry::done(
                master,
                origin,
                op::ACTOR_CREATE,
                record.omni,
                [0; 32],
                record.created_at,
            );
            audit::append(txn, &row)?;
        }
        Ok(created)
    }
}

/// A revocation with its ledger effects: the actor's device bindings are tombstoned and an
/// `actor.revoke` row joins the master's chain, in the marker's transaction.
#[derive(Debug, Clone)]
pub struct Revoke(pub RevokeActor);

impl Mutation for Revoke {
    type Plan = RevokePlan;
    type Output = Revocation;
    type Rejection = RevokeError;

    fn check(self, view: &WriteTransaction) -> Result<Result<RevokePlan, RevokeError>, StoreError> {
        self.0.check(view)
    }

    fn apply(plan: RevokePlan, txn: &WriteTransaction) -> Result<Revocation, StoreError> {
        let (master, origin) = (plan.master, plan.origin.clone());
        let mut revocation = RevokeActor::apply(plan, txn)?;
        if revocation.new {
            let omni = revocation.record.omni;
            revocation.bindings_tombstoned =
                devices::tombstone_all(txn, &omni, revocation.revoked_at)?;
            let row = AuditEntry::done(
                master,
                origin,
                op::ACTOR_REVOKE,
                omni,
                [0; 32],
                revocation.revoked_at,
            );
            audit::append(txn, &row)?;
        }
        Ok(revocation)
    }
}

/// The audit log's part of every batch: heads of the chains the batch appended to are signed
/// before the commit (once a signer is set), and after it the event streams of those masters —
/// and only those — are woken.
#[derive(Default)]
pub(super) struct AuditHook {
    signer: OnceLock<Arc<dyn HeadSigner>>,
    /// An urgent batch appended rows whose heads no batch has signed yet.
    deferred: AtomicBool,
    /// One wake-up channel per master with an open stream (dropped when its last reader goes).
    masters: std::sync::Mutex<HashMap<Omni, tokio::sync::watch::Sender<u64>>>,
}

impl std::fmt::Debug for AuditHook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuditHook").finish_non_exhaustive()
    }
}

impl AuditHook {
    pub(super) fn set_signer(&self, signer: Arc<dyn HeadSigner>) {
        let _ = self.signer.set(signer);
    }

    pub(super) fn watch(&self, master: Omni) -> tokio::sync::watch::Receiver<u64> {
        self.lock()
            .entry(master)
            .or_insert_with(|| tokio::sync::watch::Sender::new(0))
            .subscribe()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Omni, tokio::sync::watch::Sender<u64>>> {
        // A poisoned map still holds whole senders.
        self.masters
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

thread_local! {
    /// The masters whose chains the batch on this (writer) thread appended to; read after its
    /// commit.
    static SIGNAL: std::cell::RefCell<Vec<Omni>> = const { std::cell::RefCell::new(Vec::new()) };
}

impl BatchHook for AuditHook {
    fn batch_started(&self) {
        audit::take_appended();
        audit::begin_batch();
        SIGNAL.with(|s| s.borrow_mut().clear());
    }

    fn before_commit(&self, txn: &WriteTransaction, lane: Lane) -> Result<(), StoreError> {
        let signer = self.signer.get().map(|s| s.as_ref());
        // A revocation's batch does not wait for a signature: its heads are written unsigned
        // and pending, and the ordinary batch the writer runs after it signs them.
        let urgent = lane == Lane::Urgent;
        // The heads this batch appended to, once each; without a signer they stay in the
        // unsigned set until a batch runs with one.
        let touched = audit::finish_batch(txn, if urgent { None } else { signer })?;
        if !touched.is_empty() {
            // Other nodes wake their streams of these masters after the commit.
            let masters: Vec<[u8; 32]> = touched.iter().map(|m| *m.as_bytes()).collect();
            txn.announce(&masters)?;
        }
        SIGNAL.with(|s| *s.borrow_mut() = touched);
        let appended = audit::take_appended();
        if urgent {
            if appended {
                self.deferred.store(true, Ordering::Relaxed);
            }
            return Ok(());
        }
        if !appended && !self.deferred.load(Ordering::Relaxed) {
            return Ok(());
        }
        match signer {
            // Heads left unsigned by earlier batches (urgent ones, ones without a signer, or
            // from before a restart).
            Some(signer) => {
                audit::sign_heads(txn, signer)?;
                self.deferred.store(false, Ordering::Relaxed);
                Ok(())
            }
            None => Ok(()),
        }
    }

    fn committed(&self) {
        let touched = SIGNAL.with(|s| std::mem::take(&mut *s.borrow_mut()));
        if touched.is_empty() {
            return;
        }
        // New rows of these chains are readable now: wake their masters' streams.
        self.wake(touched);
    }
}

impl AuditHook {
    /// Wakes the streams of `masters` (and forgets the channels nobody reads any more).
    pub(super) fn wake(&self, masters: impl IntoIterator<Item = Omni>) {
        let mut channels = self.lock();
        for master in masters {
            if let Some(sender) = channels.get(&master) {
                if sender.receiver_count() == 0 {
                    channels.remove(&master);
                } else {
                    sender.send_modify(|n| *n += 1);
                }
            }
        }
    }

    /// Wakes every open stream (after notifications may have been missed).
    pub(super) fn wake_all(&self) {
        let masters: Vec<Omni> = self.lock().keys().copied().collect();
        self.wake(masters);
    }
}

/// A no-op write that makes its batch sign every head left unsigned.
pub(super) struct SignPendingHeads;

impl Mutation for SignPendingHeads {
    type Plan = ();
    type Output = ();
    type Rejection = std::convert::Infallible;

    fn check(
        self,
        _view: &WriteTransaction,
    ) -> Result<Result<(), std::convert::Infallible>, StoreError> {
        audit::mark_appended();
        Ok(Ok(()))
    }

    fn apply(_plan: (), _txn: &WriteTransaction) -> Result<(), StoreError> {
        Ok(())
    }
}

/// See [`Ledger::audit_supervision`].
pub(super) async fn audit_supervision(
    ledger: &Ledger,
    runtime: &Runtime,
) -> Result<usize, StoreError> {
    let (events, dropped) = runtime.drain_supervision_events();
    if dropped > 0 {
        tracing::warn!(
            dropped,
            "supervision events were dropped before being audited"
        );
    }
    let mut pending = Vec::new();
    for event in events {
        let (omni, code, at) = match event {
            SupervisionEvent::Quarantined { omni, at, .. } => (omni, op::QUARANTINE, at),
            SupervisionEvent::QuarantineLifted { omni, at } => (omni, op::QUARANTINE_LIFTED, at),
            SupervisionEvent::Restarting { .. } => continue,
        };
        let Some(lineage) = runtime.lineage(&omni)? else {
            continue;
        };
        let origin = Origin {
            actor: None,
            request_id: "supervisor".into(),
        };
        let master = lineage.records()[0].omni;
        let entry = AuditEntry::done(master, origin, code, omni, [0; 32], at);
        pending.push(ledger.append_audit(entry));
    }
    let written = pending.len();
    for write in pending {
        write.await.map_err(|e| match e {
            WriteError::Store(e) => e,
            WriteError::Rejected(never) => match never {},
        })?;
    }
    Ok(written)
}
