//! The domain ledger: the durable state of AgentKeys beyond the bare actor tree — device
//! bindings, identities and managed wallets, the registration allow-list, link codes, and the
//! audit chains with their hashing and signed heads.
//!
//! It lives in the runtime's redb file, on top of the runtime's group-commit writer: every
//! change here is a [`Mutation`] submitted through [`Store::submit`], so a change and its
//! audit row share one transaction with whatever else the batch holds, and the record layouts
//! are the ones earlier builds wrote. The tables are created when the store opens
//! ([`create_tables`] in [`StoreOptions::prepare`](agentkeys_runtime::store::StoreOptions)).
//!
//! [`Ledger`] is the one entry point: the actors write through it, the gateway reads pages
//! (devices, audit rows) and records logins through it.

pub mod accounts;
pub mod approvals;
pub mod audit;
pub mod credentials;
pub mod devices;
pub mod identities;
pub mod links;
pub mod policies;
mod tree;

use std::sync::Arc;

use agentkeys_runtime::store::ReadableTable;
use agentkeys_runtime::store::{
    Announced, Mutation, Origin, PendingWrite, RevokeError, Store, StoreError, WriteError,
};
use agentkeys_runtime::{Omni, RevocationReceipt, Runtime};

pub use accounts::{
    AppendAudit, BindingError, BindingInUse, DeleteDevice, LoggedIn, Login, LoginError,
    RefreshSession, Registration, SetAllowed,
};
pub use audit::{AuditEntry, AuditReport, AuditRow, ChainHead, ChainMark, HeadSigner};
pub use devices::DeviceBinding;
pub use identities::{IdentityError, LinkIdentity, LinkedIdentity, UnlinkIdentity};
pub use links::{
    BindKey, CreateAndBind, CreatedAndBound, IssueLinkCode, KeyBound, LinkError, RedeemLinkCode,
    Redemption, SetScopes,
};
pub use policies::{
    BudgetState, PolicyBook, PolicyChange, PolicyWriteError, RecordSigned, SetPolicy, Setter,
    SpendCheck, SpendError, SpendRefusal,
};
pub use tree::{NewActor, NewActorPlan, Revoke};

use tree::AuditHook;

/// The ledger's tables, visited when the store opens: created, so reads always find them, and
/// given what the commit log holds for them.
pub fn create_tables(
    tables: &mut agentkeys_runtime::store::TableSet<'_>,
) -> Result<(), StoreError> {
    visit_tables(tables)
}

/// Visits every table of the ledger (copies and checks between stores).
pub fn visit_tables(
    visitor: &mut impl agentkeys_runtime::store::TableVisitor,
) -> Result<(), StoreError> {
    visitor.visit(devices::DEVICES)?;
    visitor.visit(devices::DEVICE_KEYS)?;
    visitor.visit(devices::COUNTERS)?;
    visitor.visit(accounts::IDENTITIES)?;
    visitor.visit(accounts::MANAGED_WALLETS)?;
    visitor.visit(accounts::ALLOWLIST)?;
    visitor.visit(accounts::MASTER_IDENTITIES)?;
    visitor.visit(identities::IDENTITY_LINKS)?;
    visitor.visit(credentials::VAULT_KEYS)?;
    visitor.visit(credentials::CREDENTIALS)?;
    visitor.visit(credentials::CREDENTIAL_HEADS)?;
    visitor.visit(identities::IDENTITY_TOMBSTONES)?;
    visitor.visit(links::LINK_CODES)?;
    visitor.visit(links::LINK_CODES_BY_ACTOR)?;
    visitor.visit(links::SCOPES_SET_BY)?;
    visitor.visit(audit::AUDIT)?;
    visitor.visit(audit::AUDIT_CHAIN)?;
    visitor.visit(audit::AUDIT_HEADS)?;
    visitor.visit(audit::AUDIT_UNSIGNED)?;
    visitor.visit(approvals::APPROVALS)?;
    visitor.visit(approvals::APPROVALS_PENDING)?;
    visitor.visit(approvals::APPROVAL_WEBHOOKS)?;
    visitor.visit(policies::POLICIES)?;
    visitor.visit(policies::POLICY_VERSIONS)?;
    visitor.visit(policies::SPENDS)?;
    visitor.visit(policies::SPEND_DIGESTS)?;
    visitor.visit(policies::SPEND_DIGEST_EXPIRY)
}

/// The ledger over one store; cheap to clone.
#[derive(Clone)]
pub struct Ledger {
    store: Arc<Store>,
    audit: Arc<AuditHook>,
    policies: Arc<PolicyBook>,
}

impl std::fmt::Debug for Ledger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ledger").finish_non_exhaustive()
    }
}

impl Ledger {
    /// The ledger of `store` (opened with [`create_tables`]); installs the audit log's batch
    /// hook (head signing once a signer is set, and the wake-up of event streams) and loads
    /// every policy (a store whose policies cannot be read is refused: they would not apply).
    pub fn new(store: Arc<Store>) -> Result<Self, StoreError> {
        let policies = Arc::new(PolicyBook::load(&store)?);
        let audit = Arc::new(AuditHook::default());
        if !store.set_batch_hook(audit.clone()) {
            tracing::error!("the store already had a batch hook; audit heads stay unsigned");
        }
        Ok(Self {
            store,
            audit,
            policies,
        })
    }

    /// Wakes this node's event streams of `master`: another node appended to its audit chain.
    pub fn wake_streams(&self, master: Omni) {
        self.audit.wake([master]);
    }

    /// Wakes every event stream of this node (notifications from other nodes may have been
    /// missed).
    pub fn wake_all_streams(&self) {
        self.audit.wake_all();
    }

    /// The master's change epoch as of now (0 on redb; see
    /// [`agentkeys_runtime::store::epochs`]).
    pub fn epoch(&self, master: &Omni) -> Result<u64, StoreError> {
        if !self.store.is_shared() {
            return Ok(0);
        }
        agentkeys_runtime::store::epochs::read(&self.store.read()?, master)
    }

    /// Every policy, as the actors read them.
    pub fn policies(&self) -> &Arc<PolicyBook> {
        &self.policies
    }

    /// Sets or removes a policy; the book holds the change once this returns.
    pub async fn set_policy(
        &self,
        op: SetPolicy,
    ) -> Result<PolicyChange, WriteError<PolicyWriteError>> {
        let change = self.submit(op).await?;
        self.policies.apply(&change);
        Ok(change)
    }

    /// Records a signature with its spend (see [`RecordSigned`]).
    pub fn record_signed(
        &self,
        op: RecordSigned,
    ) -> PendingWrite<Result<u64, SpendRefusal>, SpendError> {
        self.record_announced(op, None)
    }

    /// Announces the audit row of a signature that is being computed, so that batches wait for
    /// it meanwhile (bounded; [`Store::announce`]); hand it to
    /// [`record_announced`](Self::record_announced).
    pub fn announce(&self) -> Announced {
        self.store.announce()
    }

    /// [`record_signed`](Self::record_signed) with the request's announcement, if any.
    pub fn record_announced(
        &self,
        op: RecordSigned,
        announced: Option<&Announced>,
    ) -> PendingWrite<Result<u64, SpendRefusal>, SpendError> {
        self.store.submit_announced(op, announced)
    }

    /// Stores a pending approval.
    pub fn request_approval(
        &self,
        op: approvals::RequestApproval,
    ) -> PendingWrite<approvals::ApprovalRecord, approvals::ApprovalError> {
        self.submit(op)
    }

    /// Decides a pending approval.
    pub fn decide_approval(
        &self,
        op: approvals::DecideApproval,
    ) -> PendingWrite<approvals::Decision, approvals::ApprovalError> {
        self.submit(op)
    }

    /// Sets or removes a master's approval webhook.
    pub fn set_webhook(
        &self,
        op: approvals::SetWebhook,
    ) -> PendingWrite<u64, std::convert::Infallible> {
        self.submit(op)
    }

    /// A master's approval webhook.
    pub fn webhook(&self, master: &Omni) -> Result<Option<approvals::Webhook>, StoreError> {
        let txn = self.store.read()?;
        let table = txn.open_table(approvals::APPROVAL_WEBHOOKS)?;
        approvals::read_webhook(&table, master)
    }

    /// One approval.
    pub fn approval(&self, id: &[u8; 16]) -> Result<Option<approvals::ApprovalRecord>, StoreError> {
        let txn = self.store.read()?;
        let table = txn.open_table(approvals::APPROVALS)?;
        approvals::read(&table, id)
    }

    /// The pending approvals of `master`'s tree (at most [`approvals::MAX_PENDING_PER_TREE`]).
    pub fn pending_approvals(
        &self,
        master: &Omni,
    ) -> Result<Vec<approvals::ApprovalRecord>, StoreError> {
        let m = master.as_bytes();
        self.pending_in(
            (m, &[0u8; 16])..=(m, &[0xffu8; 16]),
            approvals::MAX_PENDING_PER_TREE,
        )
    }

    /// Pending approvals of every tree, at most `limit` (the operator's list).
    pub fn all_pending_approvals(
        &self,
        limit: usize,
    ) -> Result<Vec<approvals::ApprovalRecord>, StoreError> {
        self.pending_in::<std::ops::RangeFull>(.., limit)
    }

    fn pending_in<'a, R>(
        &self,
        range: R,
        limit: usize,
    ) -> Result<Vec<approvals::ApprovalRecord>, StoreError>
    where
        R: std::ops::RangeBounds<(&'a [u8; 32], &'a [u8; 16])> + 'a,
    {
        let txn = self.store.read()?;
        let pending = txn.open_table(approvals::APPROVALS_PENDING)?;
        let table = txn.open_table(approvals::APPROVALS)?;
        let mut out = Vec::new();
        for entry in pending.range(range)?.take(limit) {
            let (k, _) = entry?;
            if let Some(record) = approvals::read(&table, k.value().1)? {
                out.push(record);
            }
        }
        Ok(out)
    }

    /// Re-reads `chain`'s policies from the latest commit (after a [`SpendError::PolicyChanged`]).
    pub fn refresh_policies(&self, chain: &[Omni]) -> Result<(), StoreError> {
        self.policies.refresh(&self.store, chain)
    }

    /// The state of every budget and rate limit of `effective` at `now`.
    pub fn budgets(
        &self,
        effective: &crate::policy::Effective,
        now: agentkeys_runtime::Timestamp,
    ) -> Result<Vec<BudgetState>, StoreError> {
        let txn = self.store.read()?;
        let spends = txn.open_table(policies::SPENDS)?;
        let mut out = Vec::new();
        for (owner, stored) in &effective.policies {
            for b in &stored.policy.budgets {
                out.push(policies::read_budget(
                    &spends,
                    owner,
                    Some(b.asset),
                    b.chain,
                    b.window_seconds,
                    b.max,
                    now,
                )?);
            }
            if let Some(rate) = stored.policy.rate {
                out.push(policies::read_budget(
                    &spends,
                    owner,
                    None,
                    0,
                    rate.window_seconds,
                    u128::from(rate.max),
                    now,
                )?);
            }
        }
        Ok(out)
    }

    /// The store underneath.
    pub fn store(&self) -> &Arc<Store> {
        &self.store
    }

    fn submit<M: Mutation>(&self, op: M) -> PendingWrite<M::Output, M::Rejection> {
        self.store.submit(op)
    }

    /// Creates an actor with its ledger effects (managed-wallet index, audit row).
    pub fn create(
        &self,
        op: NewActor,
    ) -> PendingWrite<agentkeys_runtime::store::Created, agentkeys_runtime::store::CreateError>
    {
        self.submit(op)
    }

    /// Revokes `omni` (and so its subtree) through the runtime, tombstoning its bindings and
    /// auditing it in the same transaction as the marker.
    pub async fn revoke(
        &self,
        runtime: &Runtime,
        omni: Omni,
        origin: Origin,
    ) -> Result<RevocationReceipt, WriteError<RevokeError>> {
        runtime.revoke_with(omni, origin, Revoke).await
    }

    /// One device binding (live or tombstoned).
    pub fn device(&self, omni: &Omni, bid: u64) -> Result<Option<DeviceBinding>, StoreError> {
        let txn = self.store.read()?;
        let table = txn.open_table(devices::DEVICES)?;
        devices::read_binding(&table, omni, bid)
    }

    /// Every device binding of an actor, in binding order.
    pub fn devices(&self, omni: &Omni) -> Result<Vec<DeviceBinding>, StoreError> {
        let txn = self.store.read()?;
        let table = txn.open_table(devices::DEVICES)?;
        devices::read_bindings(&table, omni)
    }

    /// The actor a link code (SHA-256 of the normalized code) was issued for.
    pub fn link_code_owner(&self, hash: &[u8; 32]) -> Result<Option<Omni>, StoreError> {
        let txn = self.store.read()?;
        let table = txn.open_table(links::LINK_CODES)?;
        links::code_owner(&table, hash)
    }

    /// Whether `address` is the managed (or anchor) wallet of an actor here.
    pub fn is_managed_wallet(&self, address: &[u8; 20]) -> Result<bool, StoreError> {
        let txn = self.store.read()?;
        let table = txn.open_table(accounts::MANAGED_WALLETS)?;
        Ok(table.get(address)?.is_some())
    }

    /// The identity (`type`, `value`) a master was created with.
    pub fn identity_of(&self, master: &Omni) -> Result<Option<(String, String)>, StoreError> {
        let txn = self.store.read()?;
        let table = txn.open_table(accounts::MASTER_IDENTITIES)?;
        let value = table.get(master.as_bytes())?;
        Ok(value.and_then(|v| {
            v.value()
                .split_once(':')
                .map(|(t, v)| (t.to_owned(), v.to_owned()))
        }))
    }

    /// The identities that log into `master` now (the one it was created with first).
    pub fn identities(
        &self,
        master: &Omni,
        created_at: agentkeys_runtime::Timestamp,
    ) -> Result<Vec<LinkedIdentity>, StoreError> {
        let txn = self.store.read()?;
        identities::list(
            &txn.open_table(accounts::IDENTITIES)?,
            &txn.open_table(accounts::MASTER_IDENTITIES)?,
            &txn.open_table(identities::IDENTITY_LINKS)?,
            master,
            created_at,
        )
    }

    /// Links a proven identity to a master (`false`: it was linked already).
    pub fn link_identity(&self, op: LinkIdentity) -> PendingWrite<bool, IdentityError> {
        self.submit(op)
    }

    /// Unlinks and tombstones an identity (never the last one).
    pub fn unlink_identity(&self, op: UnlinkIdentity) -> PendingWrite<(), IdentityError> {
        self.submit(op)
    }

    /// A sealed version (`None`: the newest) of `master`'s live credential `service`.
    pub fn credential(
        &self,
        master: &Omni,
        service: &str,
        version: Option<u64>,
    ) -> Result<Option<credentials::Stored>, StoreError> {
        credentials::stored(&self.store.read()?, master, service, version)
    }

    /// The live credentials of `master`'s vault, in name order.
    pub fn credentials(&self, master: &Omni) -> Result<Vec<credentials::Listed>, StoreError> {
        let txn = self.store.read()?;
        let heads = txn.open_table(credentials::CREDENTIAL_HEADS)?;
        let mut all = credentials::list(&heads, master)?;
        all.retain(|c| c.head.deleted_at.is_none());
        Ok(all)
    }

    /// The next version of `service` and `master`'s data key, to seal a write with.
    pub fn next_credential_version(
        &self,
        master: &Omni,
        service: &str,
    ) -> Result<(u64, Option<crate::crypto::vault::WrappedKey>), StoreError> {
        credentials::next_version(&self.store.read()?, master, service)
    }

    /// Stores a sealed credential version.
    pub fn put_credential(
        &self,
        op: credentials::PutCredential,
    ) -> PendingWrite<u64, credentials::VaultWriteError> {
        self.submit(op)
    }

    /// Deletes a credential and its versions.
    pub fn delete_credential(
        &self,
        op: credentials::DeleteCredential,
    ) -> PendingWrite<u64, credentials::VaultWriteError> {
        self.submit(op)
    }

    /// The registration allow-list, sorted.
    pub fn allowlist(&self) -> Result<Vec<String>, StoreError> {
        let txn = self.store.read()?;
        let table = txn.open_table(accounts::ALLOWLIST)?;
        let mut out = Vec::new();
        for entry in table.iter()? {
            let (key, _) = entry?;
            out.push(key.value().to_owned());
        }
        Ok(out)
    }

    /// Rows of `master`'s audit chain after position `after`, at most `limit`.
    pub fn audit_rows(
        &self,
        master: &Omni,
        after: u64,
        limit: usize,
    ) -> Result<Vec<AuditRow>, StoreError> {
        let txn = self.store.read()?;
        let chain = txn.open_table(audit::AUDIT_CHAIN)?;
        let rows = txn.open_table(audit::AUDIT)?;
        audit::chain_rows(&chain, &rows, master, after, limit)
    }

    /// The head of `master`'s audit chain.
    pub fn audit_head(&self, master: &Omni) -> Result<Option<ChainHead>, StoreError> {
        let txn = self.store.read()?;
        let heads = txn.open_table(audit::AUDIT_HEADS)?;
        let value = heads.get(master.as_bytes())?;
        value
            .map(|v| ChainHead::decode(*master, v.value()))
            .transpose()
    }

    /// Verifies the whole audit log in one snapshot (see [`audit::verify`]).
    pub fn verify_audit(
        &self,
        check: audit::HeadCheck<'_>,
        last: &[ChainMark],
    ) -> Result<AuditReport, StoreError> {
        audit::verify(&self.store.read()?, check, last)
    }

    /// Verifies the audit log of a store file no process has open (`agentkeys audit verify`).
    /// A file left by a crash is repaired first, as the server's next start would (redb's
    /// repair rebuilds its allocator state from the last durable commit; committed data is not
    /// changed), and given the batches its commit log holds; a file a running server holds is
    /// refused.
    pub fn verify_file(
        path: &std::path::Path,
        check: audit::HeadCheck<'_>,
        last: &[ChainMark],
    ) -> Result<AuditReport, StoreError> {
        agentkeys_runtime::store::Store::recover_file(path, &[create_tables])?;
        let db = match redb::ReadOnlyDatabase::open(path) {
            Err(redb::DatabaseError::RepairAborted) => {
                drop(redb::Database::open(path).map_err(StoreError::from_redb)?);
                redb::ReadOnlyDatabase::open(path)
            }
            other => other,
        }
        .map_err(StoreError::from_redb)?;
        let txn = redb::ReadableDatabase::begin_read(&db).map_err(StoreError::from_redb)?;
        audit::verify(
            &agentkeys_runtime::store::ReadTransaction::redb(txn),
            check,
            last,
        )
    }

    /// Logs in (creating the master the first time) and binds the device key.
    pub fn login(&self, op: Login) -> PendingWrite<LoggedIn, LoginError> {
        self.submit(op)
    }

    /// Checks a binding for a session refresh and records its use.
    pub fn refresh_session(&self, op: RefreshSession) -> PendingWrite<BindingInUse, BindingError> {
        self.submit(op)
    }

    /// Issues a link code.
    pub fn issue_link_code(
        &self,
        op: IssueLinkCode,
    ) -> PendingWrite<agentkeys_runtime::Timestamp, LinkError> {
        self.submit(op)
    }

    /// Redeems a link code.
    pub fn redeem_link_code(&self, op: RedeemLinkCode) -> PendingWrite<Redemption, LinkError> {
        self.submit(op)
    }

    /// Creates an actor (or finds its live label) and binds a device key, in one transaction.
    pub fn create_and_bind(
        &self,
        op: CreateAndBind,
    ) -> PendingWrite<CreatedAndBound, agentkeys_runtime::store::CreateError> {
        self.submit(op)
    }

    /// Binds a device key to an existing live actor.
    pub fn bind_key(&self, op: BindKey) -> PendingWrite<KeyBound, LinkError> {
        self.submit(op)
    }

    /// Sets an agent's stored scopes.
    pub fn set_scopes(
        &self,
        op: SetScopes,
    ) -> PendingWrite<agentkeys_runtime::store::ActorRecord, LinkError> {
        self.submit(op)
    }

    /// Tombstones a device binding.
    pub fn delete_device(&self, op: DeleteDevice) -> PendingWrite<BindingInUse, BindingError> {
        self.submit(op)
    }

    /// Appends one audit row; answers its global sequence after the commit.
    pub fn append_audit(&self, entry: AuditEntry) -> PendingWrite<u64, std::convert::Infallible> {
        self.submit(AppendAudit(entry))
    }

    /// Adds or removes a registration allow-list entry.
    pub fn set_allowed(&self, op: SetAllowed) -> PendingWrite<bool, std::convert::Infallible> {
        self.submit(op)
    }

    /// Installs the audit head signer and signs heads left unsigned before it ran.
    pub fn set_head_signer(
        &self,
        signer: Arc<dyn HeadSigner>,
    ) -> PendingWrite<(), std::convert::Infallible> {
        self.audit.set_signer(signer);
        self.settle_audit_heads(None)
    }

    /// Signs the pending head of `master` (`None`: every pending head) now and stores the
    /// signature: once it resolves, that head, as committed before the call, is signed at its
    /// end (without a signer: nothing changes). Heads are otherwise signed just after their
    /// batch commits and stored with the next batch (docs/audit.md); this is for readers that
    /// need the signature of the latest head.
    pub fn settle_audit_heads(
        &self,
        master: Option<Omni>,
    ) -> PendingWrite<(), std::convert::Infallible> {
        self.submit(tree::SignPendingHeads(master))
    }

    /// A receiver that changes after every commit that appended rows to `master`'s audit chain
    /// (its event streams wait on it, then read the rows); commits of other trees do not wake
    /// it.
    pub fn audit_watch(&self, master: Omni) -> tokio::sync::watch::Receiver<u64> {
        self.audit.watch(master)
    }

    /// Drains the runtime's supervision events and writes an audit row, in the actor's master's
    /// chain, for every quarantine and every early lift (restarts are only logged). Returns the
    /// rows written. The gateway calls it every second; tests call it directly.
    pub async fn audit_supervision(&self, runtime: &Runtime) -> Result<usize, StoreError> {
        tree::audit_supervision(self, runtime).await
    }
}
