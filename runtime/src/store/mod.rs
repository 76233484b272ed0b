//! Durable state: one redb file, versioned records, and the group-commit writer.
//!
//! Tables (all keys fixed here; values are versioned encodings):
//!
//! | table | key | value |
//! |---|---|---|
//! | `actors` | omni (32 bytes) | [`ActorRecord`] |
//! | `children` | (parent omni, label) | child omni |
//! | `masters` | master omni | created_at (ms) |
//! | `meta` | name | bytes (`schema_version` u32 BE, `client_id` UTF-8, `created_at` u64 BE) |
//! | `devices`, `device_keys`, `counters` | see [`devices`] | device bindings |
//! | `identities`, `managed_wallets`, `allowlist` | see [`accounts`] | logins |
//! | `audit`, `audit_chain`, `audit_heads`, `audit_unsigned` | see [`audit`] | the audit log |
//!
//! Every operation of [`Storage`] is one transaction: reads take one read transaction, writes
//! go through the group-commit [`writer`] and share a write transaction with their batch.

pub mod accounts;
pub mod audit;
pub mod devices;
mod encoding;
pub mod links;
mod mutations;
mod record;
mod redb_store;
pub mod writer;

use std::sync::Arc;

pub use accounts::{
    AppendAudit, BindingError, BindingInUse, DeleteDevice, LoggedIn, Login, LoginError,
    RefreshSession, Registration, SetAllowed,
};
pub use audit::{AuditEntry, AuditReport, AuditRow, ChainHead, ChainMark, HeadSigner, Origin};
pub use devices::DeviceBinding;
pub use links::{
    CreateAndBind, CreatedAndBound, IssueLinkCode, LinkError, RedeemLinkCode, Redemption, SetScopes,
};
pub use mutations::{CreateActor, CreateError, Created, Revocation, RevokeActor, RevokeError};
pub use record::{ActorKind, ActorRecord, DecodeError, RECORD_VERSION, StoredStatus};
pub use redb_store::{RedbStore, StoreOptions};
pub use writer::{Mutation, PendingWrite, WriteError, WriterCounts};

use crate::clock::Timestamp;
use crate::omni::Omni;

/// The schema version this build reads and writes.
pub const SCHEMA_VERSION: u32 = 1;

/// The deepest a tree may grow (a master is depth 0). Keeps every lineage walk O(16).
pub const MAX_DEPTH: usize = 16;

/// The longest label the store accepts (the actors layer enforces the exact grammar).
pub const MAX_LABEL_BYTES: usize = 64;

/// A failure of the store itself (not of a write's condition).
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    /// The storage engine or the file system failed.
    #[error("storage failed: {0}")]
    Io(Arc<redb::Error>),
    /// A stored value cannot be read by this build.
    #[error("stored data is corrupt or from a newer version: {0}")]
    Corrupt(String),
    /// The store was closed (shutdown in progress).
    #[error("the store is closed")]
    Closed,
    /// The file was written with another schema version.
    #[error("the store has schema version {found}, this build needs {expected}; run the migration")]
    Schema {
        /// The version in the file.
        found: u32,
        /// The version this build needs.
        expected: u32,
    },
    /// The store was created with another master secret (K3): every wallet would differ.
    #[error(
        "the store belongs to the master secret with fingerprint {stored}, but the configured K3 \
         has fingerprint {configured}; restore the original K3 file (never generate a new one for \
         an existing store)"
    )]
    KeyMismatch {
        /// Fingerprint recorded in the store.
        stored: String,
        /// Fingerprint of the configured K3.
        configured: String,
    },
    /// The file belongs to another `client_id`, so every derived omni would differ.
    #[error(
        "the store was created with client_id {stored:?} but {configured:?} is configured; \
         set client_id back to {stored:?} (changing it changes every omni)"
    )]
    ClientIdMismatch {
        /// The value recorded at creation.
        stored: String,
        /// The value configured now.
        configured: String,
    },
}

impl StoreError {
    pub(crate) fn from_redb(e: impl Into<redb::Error>) -> Self {
        StoreError::Io(Arc::new(e.into()))
    }
}

/// Why a meta write was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MetaError {
    /// The name belongs to the store itself.
    #[error("meta value {0:?} is owned by the store")]
    Reserved(String),
}

/// The effective status of an actor, computed from its lineage.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// Neither the actor nor any ancestor is revoked.
    Active,
    /// The actor or an ancestor (`by`) was revoked at `at`.
    Revoked {
        /// The revoked actor nearest the root.
        by: Omni,
        /// When that revocation committed.
        at: Timestamp,
    },
}

/// A child entry of the `children` index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChildEntry {
    /// The label under the parent.
    pub label: String,
    /// The child's omni.
    pub omni: Omni,
}

/// The chain of records from a master down to one actor (root first).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lineage {
    records: Vec<ActorRecord>,
}

impl Lineage {
    pub(crate) fn new(records: Vec<ActorRecord>) -> Self {
        debug_assert!(!records.is_empty());
        Self { records }
    }

    /// The actor itself (the last record).
    pub fn actor(&self) -> &ActorRecord {
        // `new` is only called with at least one record.
        &self.records[self.records.len() - 1]
    }

    /// All records, root first.
    pub fn records(&self) -> &[ActorRecord] {
        &self.records
    }

    /// The omnis, root first.
    pub fn omnis(&self) -> Vec<Omni> {
        self.records.iter().map(|r| r.omni).collect()
    }

    /// The effective status: revoked by the revoked record nearest the root, if any.
    pub fn status(&self) -> Status {
        self.records
            .iter()
            .find_map(|r| r.revoked_at().map(|at| Status::Revoked { by: r.omni, at }))
            .unwrap_or(Status::Active)
    }
}

/// Durable storage of the actor tree. Every method is exactly one transaction.
///
/// Writes are submitted to the group-commit writer and answered after the fsync'd commit that
/// holds them; dropping the returned [`PendingWrite`] does not cancel the write.
pub trait Storage: Send + Sync + 'static {
    /// One actor's record.
    fn actor(&self, omni: &Omni) -> Result<Option<ActorRecord>, StoreError>;

    /// The records from the master down to `omni`, read in one snapshot.
    fn lineage(&self, omni: &Omni) -> Result<Option<Lineage>, StoreError>;

    /// Children of `parent` in label order, starting after `after`, at most `limit`.
    fn children(
        &self,
        parent: &Omni,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<ChildEntry>, StoreError>;

    /// Masters in omni order, starting after `after`, at most `limit`.
    fn masters(&self, after: Option<&Omni>, limit: usize) -> Result<Vec<Omni>, StoreError>;

    /// Creates an actor (idempotent for the same omni, parent and label).
    fn create_actor(&self, op: CreateActor) -> PendingWrite<Created, CreateError>;

    /// Writes the durable revocation marker on one actor (idempotent).
    fn revoke_actor(&self, op: RevokeActor) -> PendingWrite<Revocation, RevokeError>;

    /// One device binding (live or tombstoned).
    fn device(&self, omni: &Omni, bid: u64) -> Result<Option<DeviceBinding>, StoreError>;

    /// The actor a link code (SHA-256 of the normalized code) was issued for.
    fn link_code_owner(&self, hash: &[u8; 32]) -> Result<Option<Omni>, StoreError>;

    /// Every device binding of an actor, in binding order.
    fn devices(&self, omni: &Omni) -> Result<Vec<DeviceBinding>, StoreError>;

    /// Whether `address` is the managed (or anchor) wallet of an actor here.
    fn is_managed_wallet(&self, address: &[u8; 20]) -> Result<bool, StoreError>;

    /// The identity (`type`, `value`) a master was created with.
    fn identity_of(&self, master: &Omni) -> Result<Option<(String, String)>, StoreError>;

    /// The registration allow-list, sorted.
    fn allowlist(&self) -> Result<Vec<String>, StoreError>;

    /// Rows of `master`'s audit chain after position `after`, at most `limit`.
    fn audit_rows(
        &self,
        master: &Omni,
        after: u64,
        limit: usize,
    ) -> Result<Vec<AuditRow>, StoreError>;

    /// The head of `master`'s audit chain.
    fn audit_head(&self, master: &Omni) -> Result<Option<ChainHead>, StoreError>;

    /// Verifies the whole audit log in one snapshot (see [`audit::verify`]).
    fn verify_audit(
        &self,
        check: audit::HeadCheck<'_>,
        last: &[ChainMark],
    ) -> Result<AuditReport, StoreError>;

    /// Logs in (creating the master the first time) and binds the device key.
    fn login(&self, op: Login) -> PendingWrite<LoggedIn, LoginError>;

    /// Checks a binding for a session refresh and records its use.
    fn refresh_session(&self, op: RefreshSession) -> PendingWrite<BindingInUse, BindingError>;

    /// Issues a link code.
    fn issue_link_code(&self, op: IssueLinkCode) -> PendingWrite<Timestamp, LinkError>;

    /// Redeems a link code.
    fn redeem_link_code(&self, op: RedeemLinkCode) -> PendingWrite<Redemption, LinkError>;

    /// Creates an actor (or finds its live label) and binds a device key, in one transaction.
    fn create_and_bind(&self, op: CreateAndBind) -> PendingWrite<CreatedAndBound, CreateError>;

    /// Sets an agent's stored scopes.
    fn set_scopes(&self, op: SetScopes) -> PendingWrite<ActorRecord, LinkError>;

    /// Tombstones a device binding.
    fn delete_device(&self, op: DeleteDevice) -> PendingWrite<BindingInUse, BindingError>;

    /// Appends one audit row; answers its global sequence after the commit.
    fn append_audit(&self, entry: AuditEntry) -> PendingWrite<u64, std::convert::Infallible>;

    /// Adds or removes a registration allow-list entry.
    fn set_allowed(&self, op: SetAllowed) -> PendingWrite<bool, std::convert::Infallible>;

    /// Installs the audit head signer and signs heads left unsigned before it ran.
    fn set_head_signer(
        &self,
        signer: Arc<dyn HeadSigner>,
    ) -> PendingWrite<(), std::convert::Infallible>;

    /// A receiver that changes after every commit that appended audit rows (event streams
    /// wait on it, then read the rows).
    fn audit_watch(&self) -> tokio::sync::watch::Receiver<u64>;

    /// Reads a value of the meta table.
    fn meta(&self, name: &str) -> Result<Option<Vec<u8>>, StoreError>;

    /// Writes a value of the meta table (e.g. key rotation state); the store's own names
    /// (`schema_version`, `client_id`, `created_at`, `k3_fingerprint`) are refused.
    fn set_meta(&self, name: &str, value: Vec<u8>) -> PendingWrite<(), MetaError>;

    /// Resolves once every write submitted before it has committed (an empty batch member).
    fn flush(&self) -> PendingWrite<(), std::convert::Infallible>;

    /// Reads the meta table in one transaction: proves the file is readable.
    fn check(&self) -> Result<(), StoreError>;

    /// Whether the writer thread is alive.
    fn writer_running(&self) -> bool;

    /// Writer counters.
    fn writer_counts(&self) -> WriterCounts;

    /// Commits what was submitted, stops the writer; later writes fail with `Closed`.
    fn close(&self);
}
