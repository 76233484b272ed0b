//! Per-master change epochs: how nodes sharing one store (PostgreSQL) know that what they
//! cached about a tree is out of date.
//!
//! Every write batch that changes something a node caches about a tree — a revocation, a
//! binding, scopes, a policy, an identity — marks the tree's master ([`touch`], called by the
//! mutation's `apply` on the writer thread); before the batch commits, the writer adds one to
//! the epoch of every master it marked, in the same transaction ([`write_bumps`]). A read of a
//! lineage on a shared store returns the master's epoch from the same snapshot
//! (`Lineage::epoch`), so whatever a node builds from that read is labelled with the epoch it
//! reflects; a request compares the label with the epoch it reads from the database and has the
//! actor reload when the label is older.
//!
//! On redb (one process, one writer, every change applied to memory in the turn that committed
//! it) nothing is marked or written: epochs stay 0.

use std::cell::RefCell;
use std::collections::BTreeSet;

use super::StoreError;
use super::tables::{ReadTransaction, ReadableTable, TableDefinition, WriteTransaction};
use crate::omni::Omni;

/// `master → epoch` (written on shared stores only).
pub const EPOCHS: TableDefinition<&[u8; 32], u64> = TableDefinition::new("master_epochs");

thread_local! {
    /// Masters marked by the batch in progress on this (writer) thread.
    static TOUCHED: RefCell<BTreeSet<[u8; 32]>> = const { RefCell::new(BTreeSet::new()) };
}

/// Marks `master`'s tree as changed by the batch in progress (a no-op outside the writer).
pub fn touch(master: &Omni) {
    TOUCHED.with(|t| t.borrow_mut().insert(*master.as_bytes()));
}

/// Forgets the marks of an earlier (aborted) batch.
pub(crate) fn begin_batch() {
    TOUCHED.with(|t| t.borrow_mut().clear());
}

/// Adds one to the epoch of every master the batch marked (shared stores only).
pub(crate) fn write_bumps(txn: &WriteTransaction) -> Result<(), StoreError> {
    let touched = TOUCHED.with(|t| std::mem::take(&mut *t.borrow_mut()));
    if touched.is_empty() || !txn.is_shared() {
        return Ok(());
    }
    let mut table = txn.open_table(EPOCHS)?;
    for master in &touched {
        let epoch = table.get(master)?.map_or(0, |v| v.value());
        table.insert(master, epoch + 1)?;
    }
    Ok(())
}

/// `master`'s epoch as of `txn`'s snapshot (0 on redb, or if nothing was ever marked).
pub fn read(txn: &ReadTransaction, master: &Omni) -> Result<u64, StoreError> {
    if !txn.is_shared() {
        return Ok(0);
    }
    Ok(txn
        .open_table(EPOCHS)?
        .get(master.as_bytes())?
        .map_or(0, |v| v.value()))
}
