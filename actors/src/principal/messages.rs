//! Messages every principal (master or agent actor) takes: the session check and description
//! it answers from memory, and the changes to the state it owns.

use actix::Message;
use agentkeys_runtime::store::{ActorRecord, Origin};

use crate::ledger::{BindingInUse, DeviceBinding};
use agentkeys_runtime::{Omni, Timestamp};
use std::collections::BTreeSet;

use agentkeys_runtime::{CallError, LineageGuard, LiveProof};

use super::PrincipalError;

/// Is the binding `bid` live and bound to `jkt`, and is the master's lineage live?
#[derive(Debug, Clone, Message)]
#[rtype(result = "Result<SessionCheck, SessionError>")]
pub struct CheckSession {
    /// The token's `bid`.
    pub bid: u64,
    /// The proof key's thumbprint (already checked equal to the token's `cnf.jkt`).
    pub jkt: String,
    /// The master's change epoch the request read from a shared store (0 on redb): state the
    /// actor loaded at an older epoch is loaded again before it answers.
    pub min_epoch: u64,
}

/// A session that passed every check of the actor.
#[derive(Debug)]
pub struct SessionCheck {
    /// The actor's record.
    pub record: ActorRecord,
    /// The lineage check's proof (what the signer takes).
    pub proof: LiveProof,
    /// For the re-check just before a reply.
    pub guard: LineageGuard,
    /// Effective scopes now (`None`: a master, every scope).
    pub scopes: Option<BTreeSet<String>>,
    /// The policies on the lineage now (shared with every actor that inherits them).
    pub policies: std::sync::Arc<crate::policy::Effective>,
}

/// The lineage check alone, without a session: what a signature made on the actor's behalf
/// after a person approved it needs (the actor's scopes and policies are checked again).
#[derive(Debug, Clone, Message)]
#[rtype(result = "Result<SessionCheck, CallError>")]
pub struct Authorize;

/// Why a session is refused by the actor.
#[derive(Debug, Clone, thiserror::Error)]
pub enum SessionError {
    /// The binding was deleted (or never existed).
    #[error("the device binding of this token was deleted")]
    BindingRevoked,
    /// The binding belongs to another key.
    #[error("the token's binding belongs to another device key")]
    WrongKey,
    /// Revoked, unavailable, or the store failed.
    #[error(transparent)]
    Call(#[from] CallError),
}

/// The record and the bindings, for `whoami` and `GET /v1/actors/{omni}`.
#[derive(Debug, Clone, Message)]
#[rtype(result = "Result<PrincipalView, CallError>")]
pub struct Describe;

/// What [`Describe`] answers.
#[derive(Debug, Clone)]
pub struct PrincipalView {
    /// The record.
    pub record: ActorRecord,
    /// Every binding, live or tombstoned.
    pub bindings: Vec<DeviceBinding>,
    /// Effective scopes (`None`: a master, every scope).
    pub scopes: Option<BTreeSet<String>>,
}

/// Creates a child of this actor (or finds it: the same label with the same scopes is the same
/// actor), optionally binding a device key to it in the same transaction (a pairing claim).
#[derive(Debug, Clone, Message)]
#[rtype(result = "Result<ChildCreated, PrincipalError>")]
pub struct CreateChild {
    /// The child's label (`^[a-z0-9-]{1,32}$`, not starting with `0x`).
    pub label: String,
    /// Scopes to store on a new child (validated and sorted here).
    pub scopes: Vec<String>,
    /// A device key to bind to the child.
    pub device: Option<NewDevice>,
    /// Who asked.
    pub origin: Origin,
}

/// A device key to bind.
#[derive(Debug, Clone)]
pub struct NewDevice {
    /// RFC 7638 thumbprint of the key.
    pub jkt: String,
    /// The binding's name for people.
    pub label: String,
}

/// What [`CreateChild`] did.
#[derive(Debug, Clone)]
pub struct ChildCreated {
    /// The child as stored.
    pub record: ActorRecord,
    /// The tree's master.
    pub master: Omni,
    /// `false` when the child existed (an idempotent retry, or a pairing onto a live label).
    pub new: bool,
    /// The binding made, if a device was asked for.
    pub binding: Option<DeviceBinding>,
}

/// Replaces the scopes stored on this agent; its effective scopes and its whole subtree's
/// narrow before the answer.
#[derive(Debug, Clone, Message)]
#[rtype(result = "Result<ActorRecord, PrincipalError>")]
pub struct SetScopes {
    /// The new set (validated and sorted here).
    pub scopes: Vec<String>,
    /// Who asked.
    pub origin: Origin,
}

/// Issues a one-time link code for this actor; the store keeps only its hash.
#[derive(Debug, Clone, Message)]
#[rtype(result = "Result<Timestamp, PrincipalError>")]
pub struct IssueLinkCode {
    /// SHA-256 of the normalized code.
    pub hash: [u8; 32],
    /// When it expires.
    pub expires_at: Timestamp,
    /// Most codes outstanding for this actor.
    pub cap: usize,
    /// Who asked.
    pub origin: Origin,
}

/// Binds a device key to this actor by redeeming one of its link codes.
#[derive(Debug, Clone, Message)]
#[rtype(result = "Result<BoundDevice, PrincipalError>")]
pub struct BindDevice {
    /// SHA-256 of the normalized code.
    pub hash: [u8; 32],
    /// The key to bind.
    pub device: NewDevice,
    /// The request id for the audit rows.
    pub request_id: String,
}

/// Binds another device key to this actor (a pairing claimed by one of its devices or an
/// ancestor's): the key's live binding if it has one.
#[derive(Debug, Clone, Message)]
#[rtype(result = "Result<BoundDevice, PrincipalError>")]
pub struct AddDevice {
    /// The key to bind.
    pub device: NewDevice,
    /// Who asked.
    pub origin: Origin,
}

/// A device key bound to an actor.
#[derive(Debug, Clone)]
pub struct BoundDevice {
    /// The actor.
    pub record: ActorRecord,
    /// Its master.
    pub master: Omni,
    /// The binding (the earlier one when the same key redeemed the code before).
    pub binding: DeviceBinding,
}

/// Deletes (tombstones) one of this actor's device bindings; its tokens stop working before
/// the answer. Idempotent.
#[derive(Debug, Clone, Message)]
#[rtype(result = "Result<DeviceBinding, PrincipalError>")]
pub struct DeleteBinding {
    /// The binding.
    pub bid: u64,
    /// Who asked.
    pub origin: Origin,
}

/// Records the use of a binding for a session refresh: the binding must be live and of this
/// key, the lineage live. The cache keeps the new `last_used`.
#[derive(Debug, Clone, Message)]
#[rtype(result = "Result<BindingInUse, PrincipalError>")]
pub struct UseBinding {
    /// The binding the old token named.
    pub bid: u64,
    /// The caller's key thumbprint.
    pub jkt: String,
    /// The request id for the audit row.
    pub request_id: String,
}

/// Records an action this actor took outside its mailbox (a signature, an OIDC token) as a row
/// of its master's audit chain, with its spend checked and counted against every budget on the
/// lineage in the row's transaction; answers after the row's commit and a fresh lineage check,
/// so nothing is handed out unaudited, over budget, or after a revocation returned. The actor
/// submits the row in its turn and answers with the rest for the caller to await; while the
/// actor is active, the same runs on its published view without this message
/// ([`super::record_action`]).
#[derive(Debug, Clone, Message)]
#[rtype(result = "super::Detached<()>")]
pub struct RecordAction {
    /// The audit operation code.
    pub op: u16,
    /// SHA-256 of what was signed (never the content).
    pub detail: [u8; 32],
    /// Who asked.
    pub origin: Origin,
    /// What the signature spends (recorded in the row).
    pub spend: Vec<crate::policy::Spend>,
    /// The budgets and rate limits to check and count (`None`: no policy check, e.g. a token).
    pub check: Option<crate::ledger::SpendCheck>,
    /// The request's announcement of this write (`Ledger::announce`), so that batches
    /// wait for it while it is on its way; ends when the write is submitted.
    pub announced: Option<agentkeys_runtime::store::Announced>,
}
