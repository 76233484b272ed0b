//! Device bindings of an actor: list, and delete (a tombstone; that binding's tokens die at
//! once). The actor itself or an ancestor; anyone else gets 404.

use agentkeys_actors::crypto::rfc3339;
use agentkeys_actors::ledger::DeviceBinding;
use agentkeys_actors::principal::DeleteBinding;
use agentkeys_runtime::Timestamp;
use agentkeys_runtime::store::Origin;
use axum::Json;
use axum::extract::State;
use serde::{Deserialize, Serialize};

use super::AppState;
use super::authz::target;
use super::error::ApiError;
use super::extract::{ApiPath, Authenticated};
use crate::auth::session::Role;

fn time(at: Timestamp) -> String {
    rfc3339::format(i64::try_from(at.as_millis()).unwrap_or(i64::MAX))
}

/// One binding as the API shows it (the key's thumbprint, never the key).
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct DeviceView {
    /// The binding id tokens name (`bid`).
    pub binding_id: u64,
    /// RFC 7638 thumbprint of the device key.
    pub jkt: String,
    /// A name for people.
    pub label: String,
    /// RFC 3339.
    pub created_at: String,
    /// Last session refresh (or creation).
    pub last_used: String,
    /// When it was deleted, if it was.
    pub deleted_at: Option<String>,
}

impl From<&DeviceBinding> for DeviceView {
    fn from(b: &DeviceBinding) -> Self {
        Self {
            binding_id: b.bid,
            jkt: b.jkt.clone(),
            label: b.label.clone(),
            created_at: time(b.created_at),
            last_used: time(b.last_used),
            deleted_at: b.tombstoned_at.map(time),
        }
    }
}

/// The device bindings of an actor.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct DeviceList {
    /// The actor.
    pub omni: String,
    /// Live and deleted bindings, oldest first.
    pub devices: Vec<DeviceView>,
}

/// Lists an actor's device bindings.
#[utoipa::path(get, path = "/v1/actors/{omni}/devices", tag = "devices",
    params(
        ("omni" = String, Path, description = "the actor"),
        ("Authorization" = String, Header, description = "DPoP <session_jwt>"),
        ("DPoP" = String, Header, description = "a proof with ath")),
    responses(
        (status = 200, description = "the bindings", body = DeviceList),
        (status = 401, description = "invalid_token, invalid_dpop_proof, actor_revoked, binding_revoked", body = super::openapi::ErrorEnvelope),
        (status = 404, description = "not_found (also other trees)", body = super::openapi::ErrorEnvelope),
        (status = 503, description = "busy", body = super::openapi::ErrorEnvelope),
        (status = 500, description = "internal", body = super::openapi::ErrorEnvelope)))]
pub async fn list(
    State(state): State<AppState>,
    auth: Authenticated,
    ApiPath(omni): ApiPath<String>,
) -> Result<Json<DeviceList>, ApiError> {
    let target = target(&state, &auth, &omni)?;
    let devices = state.ledger.devices(&target.omni)?;
    Ok(Json(DeviceList {
        omni: target.omni.to_string(),
        devices: devices.iter().map(DeviceView::from).collect(),
    }))
}

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
    ApiPath((omni, binding_id)): ApiPath<(String, u64)>,
) -> Result<Json<DeletedDevice>, ApiError> {
    let target = target(&state, &auth, &omni)?;
    let delete = DeleteBinding {
        bid: binding_id,
        origin: Origin::from(&auth),
    };
    let deleted = state
        .principal(Role::of(target.kind()), target.omni, delete)
        .await??;
    Ok(Json(DeletedDevice {
        omni: target.omni.to_string(),
        binding_id,
        deleted_at: deleted.tombstoned_at.map(time).unwrap_or_default(),
    }))
}
