//! The runtime's own conditional writes: create an actor, mark one revoked.

use super::database::{ACTORS, CHILDREN, MASTERS, read_lineage, read_record};
use super::tables::{ReadableTable, WriteTransaction};
use super::writer::Mutation;
use super::{
    ActorKind, ActorRecord, MAX_DEPTH, MAX_LABEL_BYTES, Origin, Status, StoreError, StoredStatus,
};
use crate::clock::Timestamp;
use crate::omni::Omni;

/// Create an actor. The omni is derived by the caller (the runtime knows no crypto).
#[derive(Debug, Clone)]
pub struct CreateActor {
    /// The new actor's omni.
    pub omni: Omni,
    /// Its parent; `None` creates a master.
    pub parent: Option<Omni>,
    /// Its label under the parent (empty for a master).
    pub label: String,
    /// The creation time to record.
    pub created_at: Timestamp,
    /// Who asked (for a higher layer's audit row).
    pub origin: Origin,
    /// The scopes stored on the new actor (an existing actor must have the same).
    pub scopes: Vec<String>,
}

/// A successful create.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Created {
    /// The stored record.
    pub record: ActorRecord,
    /// `false` when the same actor already existed (idempotent retry).
    pub new: bool,
}

/// Why a create was refused (nothing was written).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CreateError {
    /// The parent does not exist.
    #[error("the parent does not exist")]
    ParentNotFound,
    /// The parent or one of its ancestors is revoked.
    #[error("the parent's lineage is revoked")]
    ParentRevoked {
        /// The revoked ancestor nearest the root.
        by: Omni,
        /// When it was revoked.
        at: Timestamp,
    },
    /// The same actor exists and is itself revoked: it cannot be created again (for an agent:
    /// its label under that parent is spent).
    #[error("this actor was revoked; it cannot be created again")]
    Revoked {
        /// When it was revoked.
        at: Timestamp,
    },
    /// Another actor holds this label under the parent (or the same label with other scopes).
    #[error("the label is taken under this parent")]
    LabelTaken,
    /// The omni exists with a different parent or label.
    #[error("the omni already names another actor")]
    OmniTaken,
    /// The tree would grow deeper than [`MAX_DEPTH`].
    #[error("the tree is limited to depth {MAX_DEPTH}")]
    TooDeep,
    /// A master has an empty label; an agent a non-empty label without `/`, at most 64 bytes.
    #[error("invalid label for this kind of actor")]
    InvalidLabel,
}

/// The plan a create's check produced.
#[derive(Debug)]
pub enum CreatePlan {
    /// Insert this record (and its children or masters entry).
    Insert {
        /// The new record.
        record: ActorRecord,
        /// The tree's master.
        master: Omni,
        /// Who asked.
        origin: Origin,
    },
    /// The same actor exists; write nothing.
    Existing(ActorRecord),
}

impl CreatePlan {
    /// The master of the tree the plan writes into (`None` for an existing actor).
    pub fn master(&self) -> Option<Omni> {
        match self {
            CreatePlan::Insert { master, .. } => Some(*master),
            CreatePlan::Existing(_) => None,
        }
    }
}

impl CreateActor {
    fn label_ok(&self) -> bool {
        match self.parent {
            None => self.label.is_empty(),
            Some(_) => {
                !self.label.is_empty()
                    && self.label.len() <= MAX_LABEL_BYTES
                    && !self.label.contains('/')
            }
        }
    }

    fn existing(
        &self,
        actors: &impl ReadableTable<&'static [u8; 32], &'static [u8]>,
        found: ActorRecord,
    ) -> Result<Result<CreatePlan, CreateError>, StoreError> {
        if found.parent != self.parent || found.label != self.label {
            return Ok(Err(CreateError::OmniTaken));
        }
        let same_scopes = {
            let (mut a, mut b) = (found.scopes.clone(), self.scopes.clone());
            a.sort();
            b.sort();
            a == b
        };
        let lineage = read_lineage(actors, &self.omni)?
            .ok_or_else(|| StoreError::Corrupt("record vanished inside a transaction".into()))?;
        Ok(match lineage.status() {
            Status::Active if !same_scopes => Err(CreateError::LabelTaken),
            Status::Active => Ok(CreatePlan::Existing(found)),
            Status::Revoked { by, at } if by == self.omni => Err(CreateError::Revoked { at }),
            Status::Revoked { by, at } => Err(CreateError::ParentRevoked { by, at }),
        })
    }
}

impl Mutation for CreateActor {
    type Plan = CreatePlan;
    type Output = Created;
    type Rejection = CreateError;

    fn check(self, view: &WriteTransaction) -> Result<Result<CreatePlan, CreateError>, StoreError> {
        if !self.label_ok() {
            return Ok(Err(CreateError::InvalidLabel));
        }
        let actors = view.open_table(ACTORS)?;
        if let Some(found) = read_record(&actors, &self.omni)? {
            return self.existing(&actors, found);
        }
        let Some(parent) = self.parent else {
            let master = self.omni;
            return Ok(Ok(self.into_plan(ActorKind::Master, String::new(), master)));
        };
        let Some(lineage) = read_lineage(&actors, &parent)? else {
            return Ok(Err(CreateError::ParentNotFound));
        };
        if let Status::Revoked { by, at } = lineage.status() {
            return Ok(Err(CreateError::ParentRevoked { by, at }));
        }
        if lineage.records().len() > MAX_DEPTH {
            return Ok(Err(CreateError::TooDeep));
        }
        let children = view.open_table(CHILDREN)?;
        let taken = children
            .get((parent.as_bytes(), self.label.as_str()))?
            .is_some();
        if taken {
            return Ok(Err(CreateError::LabelTaken));
        }
        let path = format!("{}//{}", lineage.actor().path, self.label);
        let master = lineage.records()[0].omni;
        Ok(Ok(self.into_plan(ActorKind::Agent, path, master)))
    }

    fn apply(plan: CreatePlan, txn: &WriteTransaction) -> Result<Created, StoreError> {
        let record = match plan {
            CreatePlan::Existing(record) => return Ok(Created { record, new: false }),
            CreatePlan::Insert { record, .. } => record,
        };
        insert_record(txn, &record)?;
        Ok(Created { record, new: true })
    }
}

/// Writes a new record with its `children` or `masters` entry.
pub fn insert_record(txn: &WriteTransaction, record: &ActorRecord) -> Result<(), StoreError> {
    txn.open_table(ACTORS)?
        .insert(record.omni.as_bytes(), record.encode().as_slice())?;
    if let Some(parent) = &record.parent {
        txn.open_table(CHILDREN)?.insert(
            (parent.as_bytes(), record.label.as_str()),
            record.omni.as_bytes(),
        )?;
    } else {
        txn.open_table(MASTERS)?
            .insert(record.omni.as_bytes(), record.created_at.as_millis())?;
    }
    Ok(())
}

impl CreateActor {
    fn into_plan(self, kind: ActorKind, path: String, master: Omni) -> CreatePlan {
        CreatePlan::Insert {
            record: ActorRecord {
                omni: self.omni,
                parent: self.parent,
                label: self.label,
                path,
                kind,
                status: StoredStatus::Active,
                created_at: self.created_at,
                scopes: self.scopes,
            },
            master,
            origin: self.origin,
        }
    }
}

/// Write the durable revocation marker on one actor, in one transaction. O(1) in the size of
/// its subtree. A higher layer wraps it to add its own effects to the same transaction (the
/// ledger tombstones the actor's device bindings and audits it).
#[derive(Debug, Clone)]
pub struct RevokeActor {
    /// The actor to revoke.
    pub omni: Omni,
    /// The time to record.
    pub at: Timestamp,
    /// Who asked (for a higher layer's audit row).
    pub origin: Origin,
}

/// A committed (or already present) revocation marker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Revocation {
    /// The revoked actor's record (status `Revoked`).
    pub record: ActorRecord,
    /// When it was revoked (the earlier time if it already was).
    pub revoked_at: Timestamp,
    /// `false` when the marker already existed (idempotent retry).
    pub new: bool,
    /// Device bindings of the actor itself tombstoned by this revocation (set by the layer
    /// that owns bindings; 0 for the bare tree).
    pub bindings_tombstoned: usize,
}

/// Why a revocation was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RevokeError {
    /// No such actor.
    #[error("no such actor")]
    NotFound,
}

/// What a revocation's check decided.
#[derive(Debug)]
pub struct RevokePlan {
    /// The marker (already present when `revocation.new` is `false`).
    pub revocation: Revocation,
    /// The tree's master.
    pub master: Omni,
    /// Who asked.
    pub origin: Origin,
}

impl Mutation for RevokeActor {
    type Plan = RevokePlan;
    type Output = Revocation;
    type Rejection = RevokeError;

    fn check(self, view: &WriteTransaction) -> Result<Result<RevokePlan, RevokeError>, StoreError> {
        let actors = view.open_table(ACTORS)?;
        let Some(lineage) = read_lineage(&actors, &self.omni)? else {
            return Ok(Err(RevokeError::NotFound));
        };
        let master = lineage.records()[0].omni;
        let mut record = lineage.actor().clone();
        let revocation = match record.revoked_at() {
            Some(at) => Revocation {
                record,
                revoked_at: at,
                new: false,
                bindings_tombstoned: 0,
            },
            None => {
                record.status = StoredStatus::Revoked { at: self.at };
                Revocation {
                    record,
                    revoked_at: self.at,
                    new: true,
                    bindings_tombstoned: 0,
                }
            }
        };
        Ok(Ok(RevokePlan {
            revocation,
            master,
            origin: self.origin,
        }))
    }

    fn apply(plan: RevokePlan, txn: &WriteTransaction) -> Result<Revocation, StoreError> {
        let revocation = plan.revocation;
        if revocation.new {
            super::epochs::touch(&plan.master);
            let record = &revocation.record;
            let mut actors = txn.open_table(ACTORS)?;
            actors.insert(record.omni.as_bytes(), record.encode().as_slice())?;
        }
        Ok(revocation)
    }
}
