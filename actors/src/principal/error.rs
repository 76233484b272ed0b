//! Why a principal refused a change (one enum for every message the principals take, so the
//! gateway maps each refusal to its API code in one place).

use agentkeys_runtime::store::{CreateError, StoreError, WriteError};

use crate::ledger::{BindingError, LinkError};
use agentkeys_runtime::{CallError, Omni, Timestamp};

use crate::signer::SignerError;

/// A refusal by a master or agent actor; nothing was changed unless stated.
#[derive(Debug, Clone, thiserror::Error)]
pub enum PrincipalError {
    /// The label breaks the label grammar.
    #[error("invalid label: {0}")]
    InvalidLabel(String),
    /// A scope is not one this system knows, or there are too many.
    #[error("invalid scopes: {0}")]
    InvalidScopes(String),
    /// No such actor (or a master asked to hold scopes).
    #[error("no such actor")]
    NotFound,
    /// The actor or an ancestor is revoked.
    #[error("the actor's lineage is revoked")]
    Revoked {
        /// The revoked actor nearest the root.
        by: Omni,
        /// When.
        at: Timestamp,
    },
    /// Another actor holds the label under this parent (or the same label with other scopes).
    #[error("the label is taken under this parent")]
    LabelTaken,
    /// The child with this label was revoked: the label is spent.
    #[error("an actor with this label was revoked here; a revoked label is spent")]
    LabelRevoked,
    /// The tree would grow deeper than the store allows.
    #[error("trees are limited to 16 levels below the master")]
    TooDeep,
    /// No such link code.
    #[error("no such link code")]
    NoSuchCode,
    /// The link code expired.
    #[error("the link code expired")]
    Expired,
    /// Too many outstanding link codes; the earliest expires in `retry_after_ms`.
    #[error("too many link codes are outstanding for this actor")]
    TooManyCodes {
        /// Milliseconds until the earliest outstanding code expires.
        retry_after_ms: u64,
    },
    /// A random code collided with an issued one; issue again.
    #[error("the code exists")]
    Collision,
    /// The link code was redeemed by another device key (an alert row was written).
    #[error("the link code was already used by another device key")]
    CodeUsed {
        /// The code's actor.
        omni: Omni,
    },
    /// No such device binding of this actor.
    #[error("no such device binding")]
    NoSuchBinding,
    /// The binding was deleted.
    #[error("the device binding was deleted")]
    BindingDeleted,
    /// The binding belongs to another device key.
    #[error("the binding belongs to another device key")]
    WrongKey,
    /// A setting made by an ancestor of the caller can be widened only by it or one above.
    #[error("this was narrowed by an ancestor of yours; only it or one above it may widen it")]
    SetAbove {
        /// Who set it.
        set_by: Omni,
    },
    /// A budget or rate limit refused the signature (its refusal row was written).
    #[error("refused by a budget or rate limit")]
    Spend(Box<crate::ledger::SpendRefusal>),
    /// A policy of the tree changed after the request was evaluated: evaluate it again.
    #[error("a policy of this tree changed while the request was checked")]
    PolicyChanged,
    /// The signer could not derive the child's wallet.
    #[error(transparent)]
    Signer(#[from] SignerError),
    /// The actor could not be reached, or is revoked.
    #[error(transparent)]
    Call(#[from] CallError),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<WriteError<CreateError>> for PrincipalError {
    fn from(e: WriteError<CreateError>) -> Self {
        match e {
            WriteError::Rejected(e) => match e {
                CreateError::ParentNotFound => PrincipalError::NotFound,
                CreateError::ParentRevoked { by, at } => PrincipalError::Revoked { by, at },
                CreateError::Revoked { .. } => PrincipalError::LabelRevoked,
                CreateError::LabelTaken | CreateError::OmniTaken => PrincipalError::LabelTaken,
                CreateError::TooDeep => PrincipalError::TooDeep,
                CreateError::InvalidLabel => PrincipalError::InvalidLabel(e.to_string()),
            },
            WriteError::Store(e) => e.into(),
        }
    }
}

impl From<WriteError<LinkError>> for PrincipalError {
    fn from(e: WriteError<LinkError>) -> Self {
        match e {
            WriteError::Rejected(e) => match e {
                LinkError::NotFound => PrincipalError::NotFound,
                LinkError::Expired => PrincipalError::Expired,
                LinkError::Revoked { by, at } => PrincipalError::Revoked { by, at },
                LinkError::TooMany { retry_after_ms } => {
                    PrincipalError::TooManyCodes { retry_after_ms }
                }
                LinkError::Collision => PrincipalError::Collision,
                LinkError::SetAbove { set_by } => PrincipalError::SetAbove { set_by },
            },
            WriteError::Store(e) => e.into(),
        }
    }
}

impl From<WriteError<BindingError>> for PrincipalError {
    fn from(e: WriteError<BindingError>) -> Self {
        match e {
            WriteError::Rejected(BindingError::Revoked { by, at }) => {
                PrincipalError::Revoked { by, at }
            }
            WriteError::Rejected(BindingError::Tombstoned) => PrincipalError::BindingDeleted,
            WriteError::Rejected(BindingError::WrongKey) => PrincipalError::WrongKey,
            WriteError::Rejected(BindingError::NotFound) => PrincipalError::NoSuchBinding,
            WriteError::Store(e) => e.into(),
        }
    }
}
