//! Messages every principal (master or agent actor) takes.

use actix::Message;
use agentkeys_runtime::store::{ActorRecord, DeviceBinding};
use std::collections::BTreeSet;

use agentkeys_runtime::{CallError, LineageGuard, LiveProof};

/// Is the binding `bid` live and bound to `jkt`, and is the master's lineage live?
#[derive(Debug, Clone, Message)]
#[rtype(result = "Result<SessionCheck, SessionError>")]
pub struct CheckSession {
    /// The token's `bid`.
    pub bid: u64,
    /// The proof key's thumbprint (already checked equal to the token's `cnf.jkt`).
    pub jkt: String,
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
}

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

/// Re-reads the bindings from the store (sent after a binding changed).
#[derive(Debug, Clone, Message)]
#[rtype(result = "Result<(), CallError>")]
pub struct ReloadBindings;
