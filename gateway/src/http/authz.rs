//! The authorization matrix of DESIGN §8: the caller's relation to the target actor.
//!
//! | operation | self | ancestor | descendant / other tree |
//! |---|---|---|---|
//! | read record, tree, devices, audit | yes | yes | 404 |
//! | create a child | master, or agent with `actors:create` | same, under any live descendant | 404 |
//! | set scopes, claim pairing, revoke | no (403 `scope_denied`) | yes | 404 |
//! | issue link codes, delete devices | for itself | yes | 404 |
//! | sign, mint OIDC tokens | with the scope | no: act as yourself | — |
//!
//! Scopes are checked against the effective scopes the actor answered with the session check
//! ([`Authenticated::require_scope`]), so no request makes a second trip to the actor.
//!
//! A target in another tree (or a descendant acting upward, or an unknown omni) always answers
//! 404: omnis are derivable, so 403 would confirm that a label exists.

use agentkeys_runtime::Omni;
use agentkeys_runtime::store::Lineage;

use super::AppState;
use super::error::{ApiError, ErrorCode};
use super::extract::Authenticated;

/// How the caller stands to the target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Relation {
    /// The caller is the target.
    Itself,
    /// The caller is an ancestor of the target.
    Ancestor,
}

/// A target the caller may see, with its lineage as stored.
#[derive(Debug)]
pub struct Target {
    /// The target's omni.
    pub omni: Omni,
    /// Its lineage (root first).
    pub lineage: Lineage,
    /// The caller's relation to it.
    pub relation: Relation,
}

impl Target {
    /// Master or agent.
    pub fn kind(&self) -> agentkeys_runtime::store::ActorKind {
        self.lineage.actor().kind
    }
}

/// 404 for anything the caller may not see.
pub fn not_found() -> ApiError {
    ApiError::new(ErrorCode::NotFound, "no such actor in your tree")
}

/// Resolves `omni` (64 hex, `0x` accepted) to a target the caller is itself or an ancestor of.
pub fn target(state: &AppState, auth: &Authenticated, omni: &str) -> Result<Target, ApiError> {
    let omni: Omni = omni.parse().map_err(|_| not_found())?;
    let lineage = state.runtime.lineage(&omni)?.ok_or_else(not_found)?;
    let relation = if omni == auth.omni {
        Relation::Itself
    } else if lineage.omnis().contains(&auth.omni) {
        Relation::Ancestor
    } else {
        return Err(not_found());
    };
    Ok(Target {
        omni,
        lineage,
        relation,
    })
}

/// Refuses `self` for operations only an ancestor may do.
pub fn ancestor_only(target: &Target, what: &str) -> Result<(), ApiError> {
    match target.relation {
        Relation::Ancestor => Ok(()),
        Relation::Itself => Err(ApiError::new(
            ErrorCode::ScopeDenied,
            format!("an actor cannot {what} itself; ask an ancestor"),
        )),
    }
}
