//! The ledger's effects on the runtime's tree writes (a create indexes the managed wallet and
//! is audited; a revocation tombstones the actor's bindings and is audited, in the marker's
//! transaction), and the audit log's batch hook.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};

use agentkeys_runtime::store::WriteTransaction;
use agentkeys_runtime::store::{
    BatchHook, CreateActor, CreateError, CreatePlan, Created, Lane, Mutation, Origin, Revocation,
    RevokeActor, RevokeError, RevokePlan, StoreError, Wake, WriteError,
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

/// The audit log's part of every batch: the heads of the chains the batch appended to are
/// written unsigned (keeping the signature of an earlier state) and, once it committed, sent to
/// the audit key to be signed off the writer thread; the signatures ride with the next batch
/// (which waits for them a little, see [`BatchHook::busy`]) or an empty one. After each commit
/// the event streams of the masters it appended to — and only those — are woken.
#[derive(Default)]
pub(super) struct AuditHook {
    signer: OnceLock<Arc<dyn HeadSigner>>,
    signatures: Arc<HeadSignatures>,
    /// One wake-up channel per master with an open stream (dropped when its last reader goes).
    masters: std::sync::Mutex<HashMap<Omni, tokio::sync::watch::Sender<u64>>>,
    /// Chain ends committed and not yet sent to be signed (see [`SIGN_EVERY`]).
    deferred: std::sync::Mutex<Deferred>,
}

/// The audit key signs the committed chain ends at most this often: a commit within this time of
/// the last signature request leaves its ends for the next request (made by a later commit or,
/// when the writer is idle, by [`BatchHook::tick`]), which signs each chain's newest end once.
/// Under load batches are further apart than this and each is signed as before; with one
/// request at a time it spares most requests a signature and its wake-ups (docs/audit.md).
pub(super) const SIGN_EVERY: std::time::Duration = std::time::Duration::from_millis(2);

/// See [`AuditHook::deferred`].
#[derive(Default)]
struct Deferred {
    /// The newest committed end of each chain waiting for a signature request.
    ends: Vec<(Omni, audit::HeadState)>,
    /// When the last signature request was sent.
    last_sent: Option<std::time::Instant>,
}

impl Deferred {
    /// Adds the ends a commit wrote (each newer than what it replaces).
    fn add(&mut self, ends: Vec<(Omni, audit::HeadState)>) {
        for (master, state) in ends {
            match self.ends.iter_mut().find(|(m, _)| *m == master) {
                Some(end) => end.1 = state,
                None => self.ends.push((master, state)),
            }
        }
    }

    /// When the waiting ends are to be sent (`None`: nothing waits).
    fn due(&self) -> Option<std::time::Instant> {
        if self.ends.is_empty() {
            return None;
        }
        Some(
            self.last_sent
                .map_or_else(std::time::Instant::now, |at| at + SIGN_EVERY),
        )
    }

    /// The ends to send at `now`, if they are due.
    fn take_due(&mut self, now: std::time::Instant) -> Vec<(Omni, audit::HeadState)> {
        if self.ends.is_empty() || self.last_sent.is_some_and(|at| at + SIGN_EVERY > now) {
            return Vec::new();
        }
        self.last_sent = Some(now);
        std::mem::take(&mut self.ends)
    }
}

/// Head signatures between the signer and the writer.
#[derive(Default)]
struct HeadSignatures {
    /// Made and not yet stored by a committed batch (oldest first).
    ready: std::sync::Mutex<Vec<audit::SignedHead>>,
    /// Requests sent to the signer and not answered yet.
    signing: AtomicUsize,
    /// Wakes the writer when an answer arrives.
    wake: OnceLock<Wake>,
}

impl HeadSignatures {
    fn ready(&self) -> std::sync::MutexGuard<'_, Vec<audit::SignedHead>> {
        // A poisoned list still holds whole signatures.
        self.ready
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The signer's answers for `states`.
    fn answered(
        &self,
        states: Vec<(Omni, audit::HeadState)>,
        answers: Vec<Result<(String, Vec<u8>), String>>,
    ) {
        let mut signed = Vec::with_capacity(states.len());
        for ((master, state), answer) in states.into_iter().zip(answers) {
            match answer {
                Ok((kid, signature)) => signed.push(audit::SignedHead {
                    master,
                    state,
                    kid,
                    signature,
                }),
                // The head stays pending: the next signature of this chain covers a later
                // state, and `Ledger::settle_audit_heads` signs whatever is left.
                Err(e) => tracing::error!(cause = %e, "audit head signing failed"),
            }
        }
        self.ready().extend(signed);
        self.signing.fetch_sub(1, Ordering::AcqRel);
        if let Some(wake) = self.wake.get() {
            wake.wake();
        }
    }
}

/// One request to the signer; answered exactly once (with nothing if the signer dropped it, so
/// the writer never waits for it forever).
struct SignatureRequest {
    signatures: Arc<HeadSignatures>,
    /// `None` once answered.
    states: Option<Vec<(Omni, audit::HeadState)>>,
}

impl SignatureRequest {
    fn answer(mut self, answers: Vec<Result<(String, Vec<u8>), String>>) {
        if let Some(states) = self.states.take() {
            self.signatures.answered(states, answers);
        }
    }
}

impl Drop for SignatureRequest {
    fn drop(&mut self) {
        if let Some(states) = self.states.take() {
            tracing::error!("the signer dropped an audit head signature request");
            self.signatures.answered(states, Vec::new());
        }
    }
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

    fn deferred(&self) -> std::sync::MutexGuard<'_, Deferred> {
        // A poisoned list still holds whole chain ends.
        self.deferred
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Omni, tokio::sync::watch::Sender<u64>>> {
        // A poisoned map still holds whole senders.
        self.masters
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// What the batch on this (writer) thread leaves for after its commit.
#[derive(Default)]
struct AfterCommit {
    /// The masters whose chains it appended to (their streams are woken).
    touched: Vec<Omni>,
    /// How many of the ready signatures it stored.
    stored: usize,
    /// The chain ends it wrote, to be signed.
    to_sign: Vec<(Omni, audit::HeadState)>,
    /// The pending heads it signed itself.
    settled: audit::SignNow,
}

thread_local! {
    static AFTER: std::cell::RefCell<AfterCommit> = std::cell::RefCell::new(AfterCommit::default());
}

impl BatchHook for AuditHook {
    fn batch_started(&self) {
        audit::take_sign_now();
        audit::begin_batch();
        AFTER.with(|a| *a.borrow_mut() = AfterCommit::default());
    }

    fn before_commit(&self, txn: &WriteTransaction, lane: Lane) -> Result<(), StoreError> {
        let ready = self.signatures.ready().clone();
        let written = audit::finish_batch(txn, &ready)?;
        let touched: Vec<Omni> = written.iter().map(|(m, _)| *m).collect();
        if !touched.is_empty() {
            // Other nodes wake their streams of these masters after the commit.
            let masters: Vec<[u8; 32]> = touched.iter().map(|m| *m.as_bytes()).collect();
            txn.announce(&masters)?;
        }
        let mut to_sign = written;
        // Asked to sign pending heads now (`SignPendingHeads`, never in the urgent lane): the
        // batch waits for those signatures and commits them.
        let mut settled = audit::take_sign_now();
        if settled != audit::SignNow::None
            && lane == Lane::Ordinary
            && let Some(signer) = self.signer.get()
        {
            audit::sign_heads(txn, signer.as_ref(), &settled)?;
            // What was just signed needs no signature after the commit.
            to_sign.retain(|(m, _)| !settled.covers(m));
        } else {
            settled = audit::SignNow::None;
        }
        AFTER.with(|a| {
            *a.borrow_mut() = AfterCommit {
                touched,
                stored: ready.len(),
                to_sign,
                settled,
            }
        });
        Ok(())
    }

    fn committed(&self) {
        let after = AFTER.with(|a| std::mem::take(&mut *a.borrow_mut()));
        if after.stored > 0 {
            let mut ready = self.signatures.ready();
            let stored = after.stored.min(ready.len());
            ready.drain(..stored);
        }
        {
            let mut deferred = self.deferred();
            // Ends this batch signed itself need no request of their own any more.
            deferred.ends.retain(|(m, _)| !after.settled.covers(m));
            deferred.add(after.to_sign);
        }
        self.tick();
        if !after.touched.is_empty() {
            // New rows of these chains are readable now: wake their masters' streams.
            self.wake(after.touched);
        }
    }

    fn attach(&self, wake: Wake) {
        let _ = self.signatures.wake.set(wake);
    }

    fn busy(&self) -> bool {
        self.signatures.signing.load(Ordering::Acquire) > 0
    }

    fn unwritten(&self) -> bool {
        !self.signatures.ready().is_empty()
    }

    fn due(&self) -> Option<std::time::Instant> {
        self.deferred().due()
    }

    /// Sends the committed ends to the audit key once they are due.
    fn tick(&self) {
        let Some(signer) = self.signer.get() else {
            return;
        };
        let ends = self.deferred().take_due(std::time::Instant::now());
        if ends.is_empty() {
            return;
        }
        self.signatures.signing.fetch_add(1, Ordering::AcqRel);
        let messages = ends
            .iter()
            .map(|(master, state)| state.message(master))
            .collect();
        let request = SignatureRequest {
            signatures: self.signatures.clone(),
            states: Some(ends),
        };
        signer.sign_heads_then(messages, Box::new(move |answers| request.answer(answers)));
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

/// A no-op write that makes its batch sign the pending head of one master (`Some`) or every
/// pending head (`None`), waiting for the signatures (see [`Ledger::settle_audit_heads`]).
pub(super) struct SignPendingHeads(pub Option<Omni>);

impl Mutation for SignPendingHeads {
    type Plan = ();
    type Output = ();
    type Rejection = std::convert::Infallible;

    fn check(
        self,
        _view: &WriteTransaction,
    ) -> Result<Result<(), std::convert::Infallible>, StoreError> {
        audit::sign_now(self.0);
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

#[cfg(test)]
mod tests {
    use super::*;

    fn end(length: u64) -> audit::HeadState {
        audit::HeadState {
            length,
            hash: [length as u8; 32],
            seq: length,
        }
    }

    #[test]
    fn chain_ends_are_sent_at_most_every_interval_newest_first() {
        let (a, b) = (Omni::from_bytes([1; 32]), Omni::from_bytes([2; 32]));
        let mut deferred = Deferred::default();
        assert_eq!(deferred.due(), None);
        let t0 = std::time::Instant::now();
        // Nothing sent yet: due at once.
        deferred.add(vec![(a, end(1))]);
        assert!(deferred.due().is_some_and(|due| due >= t0));
        assert_eq!(deferred.take_due(t0), vec![(a, end(1))]);
        assert_eq!(deferred.due(), None);
        // Within the interval: kept, only each chain's newest end.
        deferred.add(vec![(a, end(2)), (b, end(1))]);
        deferred.add(vec![(a, end(3))]);
        assert_eq!(deferred.due(), Some(t0 + SIGN_EVERY));
        assert!(deferred.take_due(t0 + SIGN_EVERY / 2).is_empty());
        assert_eq!(
            deferred.take_due(t0 + SIGN_EVERY),
            vec![(a, end(3)), (b, end(1))]
        );
        assert!(deferred.take_due(t0 + SIGN_EVERY * 3).is_empty());
    }
}
