//! Device bindings of an actor: deletion (a tombstone; the binding's tokens die at once).
//!
//! Authorization (DESIGN §8): the actor itself or an ancestor; any other caller gets 404.
//! Until agents exist, the caller is a master acting on itself.

use agentkeys_actors::crypto::rfc3339;
use agentkeys_actors::master::ReloadBindings;
use agentkeys_runtime::Omni;
use agentkeys_runtime::store::{BindingError, DeleteDevice, Origin, WriteError};
use axum::Json;
use axum::extract::{Path, State};
use serde::{Deserialize, Serialize};

use super::AppState;
use super::error::{ApiError, ErrorCode};
use super::extract::Authenticated;

/// A deleted binding.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct DeletedDevice {
    /// The actor.
    pub omni: String,
    /// The binding.
    pub binding_id: u64,
    /// When it was tombstoned (RFC 3339; the earlier time if it already was).
    pub deleted_at: String,
}

/// Tombstones one binding of an actor (idempotent).
#[utoipa::path(delete, path = "/v1/actors/{omni}/devices/{binding_id}", tag = "devices",
    params(
        ("omni" = String, Path, description = "the actor"),
        ("binding_id" = u64, Path, description = "the binding"),
        ("Authorization" = String, Header, description = "DPoP <session_jwt>"),
        ("DPoP" = String, Header, description = "a proof with ath")),
    responses(
        (status = 200, description = "deleted", body = DeletedDevice),
        (status = 401, description = "invalid_token, invalid_dpop_proof, actor_revoked, binding_revoked", body = super::openapi::ErrorEnvelope),
        (status = 404, description = "not_found (also actors of other trees)", body = super::openapi::ErrorEnvelope),
        (status = 503, description = "busy", body = super::openapi::ErrorEnvelope),
        (status = 500, description = "internal", body = super::openapi::ErrorEnvelope)))]
pub async fn delete(
    State(state): State<AppState>,
    auth: Authenticated,
    Path((omni, binding_id)): Path<(String, u64)>,
) -> Result<Json<DeletedDevice>, ApiError> {
    let not_found = || ApiError::new(ErrorCode::NotFound, "no such device binding");
    let target: Omni = omni.parse().map_err(|_| not_found())?;
    if target != auth.omni {
        return Err(not_found());
    }
    let deleted = state
        .runtime
        .store()
        .delete_device(DeleteDevice {
            omni: target,
            bid: binding_id,
            origin: Origin {
                actor: Some(auth.omni),
                request_id: state.request_id(),
            },
            at: state.clock.now(),
        })
        .await
        .map_err(|e| match e {
            WriteError::Rejected(BindingError::Revoked { .. }) => ApiError::new(
                ErrorCode::ActorRevoked,
                "this actor or one of its ancestors was revoked",
            ),
            WriteError::Rejected(_) => not_found(),
            WriteError::Store(e) => e.into(),
        })?;
    // The actor's cache must drop the binding before we answer: no later request may use it.
    if state.masters.is_active(&target) {
        state.masters.call(target, ReloadBindings).await??;
    }
    let at = deleted
        .binding
        .tombstoned_at
        .map_or(0, |t| i64::try_from(t.as_millis()).unwrap_or(i64::MAX));
    Ok(Json(DeletedDevice {
        omni: target.to_string(),
        binding_id,
        deleted_at: rfc3339::format(at),
    }))
}
