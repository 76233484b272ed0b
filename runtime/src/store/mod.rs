//! Durable state: one engine (a redb file, or a byte engine such as PostgreSQL behind the same
//! typed tables, see [`tables`]), versioned records, and the group-commit writer.
//!
//! The runtime's tables (all keys fixed here; values are versioned encodings):
//!
//! | table | key | value |
//! |---|---|---|
//! | `actors` | omni (32 bytes) | [`ActorRecord`] |
//! | `children` | (parent omni, label) | child omni |
//! | `masters` | master omni | created_at (ms) |
//! | `meta` | name | bytes (`schema_version` u32 BE, `client_id` UTF-8, `created_at` u64 BE) |
//!
//! Higher layers keep their own tables in the same store (the domain ledger of
//! `agentkeys-actors`: devices, identities, link codes, the audit log). They create them when the
//! store opens ([`StoreOptions::prepare`]), read them through [`Store::read`], write them with
//! their own [`Mutation`]s through [`Store::submit`] — in the same group commit as the
//! tree's writes — and may run a [`BatchHook`] around every batch. Every read is one read
//! transaction; every write shares a write transaction with its batch.

pub mod commit_log;
mod database;
pub mod encoding;
pub mod epochs;
mod mutations;
mod record;
pub mod tables;
pub mod writer;

use std::sync::Arc;

pub use commit_log::TableSet;
pub use database::{
    ACTORS, Store, StoreOptions, TablePreparer, log_path, read_lineage, read_record,
};
pub use mutations::{
    CreateActor, CreateError, CreatePlan, Created, Revocation, RevokeActor, RevokeError,
    RevokePlan, insert_record,
};
pub use record::{ActorKind, ActorRecord, DecodeError, RECORD_VERSION, StoredStatus};
pub use tables::{
    AccessGuard, ByteEngine, ByteRange, ByteRow, ByteTxn, Engine, ReadOnlyTable, ReadTransaction,
    ReadableTable, StoreKey, Table, TableDefinition, TableVisitor, WriteTransaction, copy_rows,
    first_difference,
};
pub use writer::{
    Announced, BatchHook, HOOK_FLUSH, HOOK_WAIT, Lane, MAX_BATCH, Mutation, PendingWrite, Wake,
    WriteError, WriterCounts,
};

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
    Io(Arc<dyn std::error::Error + Send + Sync>),
    /// A stored value cannot be read by this build.
    #[error("stored data is corrupt or from a newer version: {0}")]
    Corrupt(String),
    /// The store was closed (shutdown in progress).
    #[error("the store is closed")]
    Closed,
    /// A database server could not be reached (connection refused or broken): nothing was
    /// written; a retry may succeed.
    #[error("the database is unreachable: {0}")]
    Unreachable(Arc<dyn std::error::Error + Send + Sync>),
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
    /// Wraps an error of the storage engine.
    pub fn from_redb(e: impl Into<redb::Error>) -> Self {
        StoreError::Io(Arc::new(e.into()))
    }

    /// The engine cannot be reached (no connection, or it broke).
    pub fn unreachable(e: impl std::error::Error + Send + Sync + 'static) -> Self {
        Self::Unreachable(Arc::new(e))
    }

    /// A storage failure with `e` as its cause.
    pub fn io(e: impl std::error::Error + Send + Sync + 'static) -> Self {
        StoreError::Io(Arc::new(e))
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
    epoch: u64,
}

impl Lineage {
    /// A lineage from its records, root first (at least one).
    pub fn new(records: Vec<ActorRecord>) -> Self {
        debug_assert!(!records.is_empty());
        Self { records, epoch: 0 }
    }

    /// The master's change epoch in the snapshot the lineage was read from (0 on redb; see
    /// [`epochs`]).
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// The master (the first record).
    pub fn master(&self) -> Omni {
        self.records[0].omni
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

/// Who asked and under which request; every change that writes an audit row carries one.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Origin {
    /// The acting actor; `None` for the host admin or the system itself.
    pub actor: Option<Omni>,
    /// The request id (HTTP `x-request-id` or the admin command's id).
    pub request_id: String,
}
