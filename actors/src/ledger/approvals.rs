//! Requests waiting for a person (docs/policies.md, "Approvals"): durable records, a pending
//! index per tree, and the conditional writes that decide them.
//!
//! An approval is used once: approving it checks in one transaction that it is still pending
//! and unexpired, counts the spend against every budget on the lineage, writes the decision
//! row and the signature row (with its spend), and stores the result the requester fetches.

use agentkeys_runtime::store::{ACTORS, Origin, Status, StoreError, read_lineage};
use agentkeys_runtime::store::{ReadableTable, TableDefinition, WriteTransaction};
use agentkeys_runtime::{Omni, Timestamp};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::audit::{self, AuditEntry, op};
use super::policies::{RecordPlan, RecordSigned, SpendError, SpendRefusal};
use agentkeys_runtime::store::Mutation;

pub(crate) const APPROVALS: TableDefinition<&[u8; 16], &[u8]> = TableDefinition::new("approvals");
/// (master, id) → expiry ms, for every pending approval of a tree.
pub(crate) const APPROVALS_PENDING: TableDefinition<(&[u8; 32], &[u8; 16]), u64> =
    TableDefinition::new("approvals_pending");

/// master → u64 version ‖ URL (empty: removed). The HMAC key derives from K3 and the version.
pub(crate) const APPROVAL_WEBHOOKS: TableDefinition<&[u8; 32], &[u8]> =
    TableDefinition::new("approval_webhooks");

/// Most pending approvals per tree (a flood of requests above a threshold cannot grow the
/// store without bound).
pub const MAX_PENDING_PER_TREE: usize = 256;
/// Largest request body kept with an approval.
pub const MAX_APPROVAL_BODY: usize = 64 * 1024;

/// Where an approval stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ApprovalStatus {
    /// Waiting for a decision.
    Pending,
    /// Approved; the result is stored.
    Approved,
    /// Denied.
    Denied,
    /// Not decided in time.
    Expired,
    /// The requester was revoked first.
    Cancelled,
}

impl ApprovalStatus {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            ApprovalStatus::Pending => "pending",
            ApprovalStatus::Approved => "approved",
            ApprovalStatus::Denied => "denied",
            ApprovalStatus::Expired => "expired",
            ApprovalStatus::Cancelled => "cancelled",
        }
    }
}

/// One spend, as an approval shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SpendSummary {
    /// `native` or the token address.
    pub asset: String,
    /// The chain.
    pub chain: u64,
    /// Base units, decimal.
    pub amount: String,
}

impl From<&crate::policy::Spend> for SpendSummary {
    fn from(s: &crate::policy::Spend) -> Self {
        SpendSummary {
            asset: s.asset.name(),
            chain: s.chain,
            amount: s.amount.to_string(),
        }
    }
}

/// A stored approval.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApprovalRecord {
    /// 16 random bytes, hex.
    pub id: String,
    /// The tree.
    #[serde(with = "omni_text")]
    pub master: Omni,
    /// The agent whose request waits.
    #[serde(with = "omni_text")]
    pub requester: Omni,
    /// The actor whose policy's threshold asked for a person (deciders are its strict
    /// ancestors).
    #[serde(with = "omni_text")]
    pub owner: Omni,
    /// The signing route.
    pub route: String,
    /// The request body as sent.
    pub body: Value,
    /// Where it stands.
    pub status: ApprovalStatus,
    /// When it was requested, ms.
    pub created_at: u64,
    /// When it expires, ms.
    pub expires_at: u64,
    /// Who decided (an omni, or `operator`).
    pub decided_by: Option<String>,
    /// When, ms.
    pub decided_at: Option<u64>,
    /// What the signing route would have answered (approved only).
    pub result: Option<Value>,
    /// What it spends.
    pub spends: Vec<SpendSummary>,
    /// The recipient or spender, if known.
    pub recipient: Option<String>,
}

impl ApprovalRecord {
    /// The id's bytes.
    pub fn key(&self) -> Option<[u8; 16]> {
        parse_id(&self.id)
    }

    /// The status as of `now` (a pending approval past its expiry reads as expired).
    pub fn status_at(&self, now: Timestamp) -> ApprovalStatus {
        if self.status == ApprovalStatus::Pending && now.as_millis() >= self.expires_at {
            ApprovalStatus::Expired
        } else {
            self.status
        }
    }

    /// The audit detail naming it: the id, zero-padded.
    pub fn detail(&self) -> [u8; 32] {
        let mut out = [0u8; 32];
        if let Some(k) = self.key() {
            out[..16].copy_from_slice(&k);
        }
        out
    }
}

mod omni_text {
    use agentkeys_runtime::Omni;
    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(omni: &Omni, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(omni)
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Omni, D::Error> {
        String::deserialize(d)?
            .parse()
            .map_err(|_| serde::de::Error::custom("not an omni"))
    }
}

/// Parses a 32-hex-character id.
pub fn parse_id(text: &str) -> Option<[u8; 16]> {
    hex::decode(text).ok()?.try_into().ok()
}

fn encode(record: &ApprovalRecord) -> Result<Vec<u8>, StoreError> {
    serde_json::to_vec(record).map_err(|e| StoreError::Corrupt(format!("approval: {e}")))
}

pub(crate) fn decode(bytes: &[u8]) -> Result<ApprovalRecord, StoreError> {
    serde_json::from_slice(bytes).map_err(|e| StoreError::Corrupt(format!("approval: {e}")))
}

/// Reads one approval.
pub(crate) fn read(
    table: &impl ReadableTable<&'static [u8; 16], &'static [u8]>,
    id: &[u8; 16],
) -> Result<Option<ApprovalRecord>, StoreError> {
    table.get(id)?.map(|v| decode(v.value())).transpose()
}

/// Why an approval write is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ApprovalError {
    /// The tree has [`MAX_PENDING_PER_TREE`] pending approvals.
    #[error("this tree has too many requests waiting for approval")]
    TooMany,
    /// No such approval.
    #[error("no such approval")]
    NotFound,
    /// It was decided, expired or cancelled.
    #[error("the approval is {}", .0.as_str())]
    NotPending(ApprovalStatus),
    /// A policy of the tree changed after the approval was evaluated.
    #[error("a policy of this tree changed; evaluate again")]
    PolicyChanged,
}

/// Stores a new pending approval and its `approval.requested` row.
#[derive(Debug, Clone)]
pub struct RequestApproval {
    /// The record (status pending).
    pub record: ApprovalRecord,
    /// The request.
    pub origin: Origin,
    /// Now.
    pub at: Timestamp,
}

fn expire_pending(
    txn: &WriteTransaction,
    master: &Omni,
    now: Timestamp,
) -> Result<usize, StoreError> {
    let mut pending = txn.open_table(APPROVALS_PENDING)?;
    let m = master.as_bytes();
    let mut expired = Vec::new();
    let mut live = 0;
    for entry in pending.range((m, &[0u8; 16])..=(m, &[0xffu8; 16]))? {
        let (k, v) = entry?;
        if v.value() <= now.as_millis() {
            expired.push(*k.value().1);
        } else {
            live += 1;
        }
    }
    let mut table = txn.open_table(APPROVALS)?;
    for id in expired {
        pending.remove((m, &id))?;
        if let Some(mut record) = read(&table, &id)? {
            record.status = ApprovalStatus::Expired;
            table.insert(&id, encode(&record)?.as_slice())?;
        }
    }
    Ok(live)
}

impl Mutation for RequestApproval {
    type Plan = RequestApproval;
    type Output = ApprovalRecord;
    type Rejection = ApprovalError;

    fn check(self, view: &WriteTransaction) -> Result<Result<Self, ApprovalError>, StoreError> {
        let pending = view.open_table(APPROVALS_PENDING)?;
        let m = self.record.master.as_bytes();
        let now = self.at.as_millis();
        let live = pending
            .range((m, &[0u8; 16])..=(m, &[0xffu8; 16]))?
            .filter(|e| e.as_ref().is_ok_and(|(_, v)| v.value() > now))
            .take(MAX_PENDING_PER_TREE)
            .count();
        if live >= MAX_PENDING_PER_TREE {
            return Ok(Err(ApprovalError::TooMany));
        }
        Ok(Ok(self))
    }

    fn apply(plan: Self, txn: &WriteTransaction) -> Result<ApprovalRecord, StoreError> {
        let record = plan.record;
        expire_pending(txn, &record.master, plan.at)?;
        let id = record
            .key()
            .ok_or_else(|| StoreError::Corrupt("approval id".into()))?;
        txn.open_table(APPROVALS)?
            .insert(&id, encode(&record)?.as_slice())?;
        txn.open_table(APPROVALS_PENDING)?
            .insert((record.master.as_bytes(), &id), record.expires_at)?;
        audit::append(
            txn,
            &AuditEntry::done(
                record.master,
                plan.origin,
                op::APPROVAL_REQUESTED,
                record.requester,
                record.detail(),
                plan.at,
            ),
        )?;
        Ok(record)
    }
}

/// Decides a pending approval: a denial, or an approval with the signature's record (its
/// spend checked and counted) and result.
#[derive(Debug, Clone)]
pub struct DecideApproval {
    /// The approval.
    pub id: [u8; 16],
    /// Who decides (an omni, or `operator`).
    pub decided_by: String,
    /// The decider as the audit row's actor.
    pub origin: Origin,
    /// `Some`: approve, with the signature's record and the route's answer.
    pub approve: Option<(RecordSigned, Value)>,
    /// Now.
    pub at: Timestamp,
}

#[doc(hidden)]
#[derive(Debug)]
pub struct DecidePlan {
    op: DecideApproval,
    record: ApprovalRecord,
    signature: Option<RecordPlan>,
}

/// What a decision did.
#[derive(Debug, Clone)]
pub enum Decision {
    /// Decided; the record as stored.
    Decided(ApprovalRecord),
    /// The counters refused the approved signature (the refusal row was written; the approval
    /// stays pending).
    Refused(SpendRefusal),
}

impl Mutation for DecideApproval {
    type Plan = DecidePlan;
    type Output = Decision;
    type Rejection = ApprovalError;

    fn check(
        self,
        view: &WriteTransaction,
    ) -> Result<Result<DecidePlan, ApprovalError>, StoreError> {
        let table = view.open_table(APPROVALS)?;
        let Some(record) = read(&table, &self.id)? else {
            return Ok(Err(ApprovalError::NotFound));
        };
        let status = record.status_at(self.at);
        if status != ApprovalStatus::Pending {
            return Ok(Err(ApprovalError::NotPending(status)));
        }
        let actors = view.open_table(ACTORS)?;
        let live = read_lineage(&actors, &record.requester)?
            .is_some_and(|l| matches!(l.status(), Status::Active));
        if !live {
            return Ok(Err(ApprovalError::NotPending(ApprovalStatus::Cancelled)));
        }
        let signature = match &self.approve {
            None => None,
            Some((signed, _)) => match signed.clone().plan_in(view)? {
                Ok(plan) => Some(plan),
                Err(SpendError::PolicyChanged) => return Ok(Err(ApprovalError::PolicyChanged)),
            },
        };
        Ok(Ok(DecidePlan {
            op: self,
            record,
            signature,
        }))
    }

    fn apply(plan: DecidePlan, txn: &WriteTransaction) -> Result<Decision, StoreError> {
        let DecidePlan {
            op,
            mut record,
            signature,
        } = plan;
        if let Some(signature) = signature
            && let Err(refusal) = RecordSigned::apply(signature, txn)?
        {
            return Ok(Decision::Refused(refusal));
        }
        let (status, code) = match &op.approve {
            Some((_, result)) => {
                record.result = Some(result.clone());
                (ApprovalStatus::Approved, op::APPROVAL_APPROVED)
            }
            None => (ApprovalStatus::Denied, op::APPROVAL_DENIED),
        };
        record.status = status;
        record.decided_by = Some(op.decided_by);
        record.decided_at = Some(op.at.as_millis());
        txn.open_table(APPROVALS)?
            .insert(&op.id, encode(&record)?.as_slice())?;
        txn.open_table(APPROVALS_PENDING)?
            .remove((record.master.as_bytes(), &op.id))?;
        audit::append(
            txn,
            &AuditEntry::done(
                record.master,
                op.origin,
                code,
                record.requester,
                record.detail(),
                op.at,
            ),
        )?;
        Ok(Decision::Decided(record))
    }
}

/// A master's approval webhook.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Webhook {
    /// Where events are posted.
    pub url: String,
    /// The key version (each set bumps it, so the key rotates).
    pub version: u64,
}

fn decode_webhook(bytes: &[u8]) -> Result<Webhook, StoreError> {
    let (version, url) = bytes
        .split_first_chunk::<8>()
        .ok_or_else(|| StoreError::Corrupt("approval webhook".into()))?;
    Ok(Webhook {
        version: u64::from_be_bytes(*version),
        url: String::from_utf8(url.to_vec())
            .map_err(|_| StoreError::Corrupt("approval webhook".into()))?,
    })
}

/// Reads `master`'s webhook (`None`: none set).
pub(crate) fn read_webhook(
    table: &impl ReadableTable<&'static [u8; 32], &'static [u8]>,
    master: &Omni,
) -> Result<Option<Webhook>, StoreError> {
    let found = table
        .get(master.as_bytes())?
        .map(|v| decode_webhook(v.value()))
        .transpose()?;
    Ok(found.filter(|w| !w.url.is_empty()))
}

/// Sets (or, with an empty URL, removes) a master's webhook; answers the new version.
#[derive(Debug, Clone)]
pub struct SetWebhook {
    /// The master.
    pub master: Omni,
    /// The URL (validated by the caller), or empty.
    pub url: String,
    /// The request.
    pub origin: Origin,
    /// Now.
    pub at: Timestamp,
}

impl Mutation for SetWebhook {
    type Plan = SetWebhook;
    type Output = u64;
    type Rejection = std::convert::Infallible;

    fn check(
        self,
        _view: &WriteTransaction,
    ) -> Result<Result<Self, std::convert::Infallible>, StoreError> {
        Ok(Ok(self))
    }

    fn apply(plan: Self, txn: &WriteTransaction) -> Result<u64, StoreError> {
        let mut table = txn.open_table(APPROVAL_WEBHOOKS)?;
        let previous = table
            .get(plan.master.as_bytes())?
            .map(|v| decode_webhook(v.value()))
            .transpose()?
            .map_or(0, |w| w.version);
        let version = previous + 1;
        let mut value = version.to_be_bytes().to_vec();
        value.extend_from_slice(plan.url.as_bytes());
        table.insert(plan.master.as_bytes(), value.as_slice())?;
        audit::append(
            txn,
            &AuditEntry::done(
                plan.master,
                plan.origin,
                op::APPROVAL_WEBHOOK_SET,
                plan.master,
                audit::detail_hash(plan.url.as_bytes()),
                plan.at,
            ),
        )?;
        Ok(version)
    }
}
