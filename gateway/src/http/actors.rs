//! Agents: create, read, tree, scopes, revoke (DESIGN §9, §11). Authorization: [`super::authz`].

use agentkeys_actors::crypto::rfc3339;
use agentkeys_actors::principal::{CreateChild, SetScopes};
use agentkeys_actors::scope;
use agentkeys_runtime::store::{ActorKind, ActorRecord, Origin, Status};
use agentkeys_runtime::{Omni, Timestamp};
use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};

use super::AppState;
use super::authz::{Relation, ancestor_only, target};
use super::error::{ApiError, ErrorCode};
use super::extract::{ApiJson, ApiPath, ApiQuery, Authenticated};
use crate::auth::session::Role;

/// An actor as the API shows it.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ActorView {
    /// 64 lowercase hex.
    pub omni: String,
    /// The label under its parent (`""` for a master).
    pub label: String,
    /// `""` for a master, `//a//b` below it.
    pub path: String,
    /// The parent's omni (`null` for a master).
    pub parent: Option<String>,
    /// The tree's master.
    pub master_omni: String,
    /// `master` or `agent`.
    pub role: String,
    /// `active`, `revoked` (itself or an ancestor) or `quarantined`.
    pub status: String,
    /// When the revocation that applies committed (RFC 3339), if revoked.
    pub revoked_at: Option<String>,
    /// The revoked actor that applies (itself or an ancestor), if revoked.
    pub revoked_by: Option<String>,
    /// Scopes stored on it (a master: `["*"]`, every scope).
    pub scopes: Vec<String>,
    /// The managed EVM wallet `W(omni)` (EIP-55).
    pub wallet: String,
    /// sr25519 public key, `0x` + 64 hex.
    pub sr25519_public: String,
    /// SS58 address (prefix 42).
    pub ss58: String,
    /// RFC 3339.
    pub created_at: String,
}

pub(super) fn time(at: Timestamp) -> String {
    rfc3339::format(i64::try_from(at.as_millis()).unwrap_or(i64::MAX))
}

/// Shapes `record` (with the status computed from its lineage) for the API.
pub async fn view(
    state: &AppState,
    record: &ActorRecord,
    master: Omni,
    status: Status,
) -> Result<ActorView, ApiError> {
    let account = state.signer.account(master, record.path.clone()).await?;
    let (status, revoked_at, revoked_by) = match status {
        Status::Revoked { by, at } => ("revoked", Some(time(at)), Some(by.to_string())),
        Status::Active if state.runtime.is_quarantined(&record.omni) => ("quarantined", None, None),
        Status::Active => ("active", None, None),
    };
    Ok(ActorView {
        omni: record.omni.to_string(),
        label: record.label.clone(),
        path: record.path.clone(),
        parent: record.parent.as_ref().map(Omni::to_string),
        master_omni: master.to_string(),
        role: match record.kind {
            ActorKind::Master => "master",
            ActorKind::Agent => "agent",
        }
        .into(),
        status: status.into(),
        revoked_at,
        revoked_by,
        scopes: match record.kind {
            ActorKind::Master => vec!["*".into()],
            ActorKind::Agent => record.scopes.clone(),
        },
        wallet: account.wallet.to_checksum(),
        sr25519_public: format!("0x{}", hex::encode(account.sr25519_public)),
        ss58: account.ss58,
        created_at: time(record.created_at),
    })
}

/// `POST /v1/actors` body.
#[derive(Debug, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateRequest {
    /// `^[a-z0-9-]{1,32}$`, not starting with `0x`.
    pub label: String,
    /// The parent's omni (default: the caller).
    pub parent: Option<String>,
    /// Scopes to store on the child (default: none).
    #[serde(default)]
    pub scopes: Vec<String>,
}

/// Creates a child; the same (parent, label, scopes) again answers 200 with the existing actor.
#[utoipa::path(post, path = "/v1/actors", tag = "actors",
    params(
        ("Authorization" = String, Header, description = "DPoP <session_jwt>"),
        ("DPoP" = String, Header, description = "a proof with ath")),
    request_body = CreateRequest,
    responses(
        (status = 201, description = "created", body = ActorView),
        (status = 200, description = "the same actor existed", body = ActorView),
        (status = 400, description = "invalid_request, invalid_label", body = super::openapi::ErrorEnvelope),
        (status = 401, description = "invalid_token, invalid_dpop_proof, actor_revoked, binding_revoked", body = super::openapi::ErrorEnvelope),
        (status = 403, description = "scope_denied: actors:create missing", body = super::openapi::ErrorEnvelope),
        (status = 404, description = "not_found: the parent is not in the caller's subtree", body = super::openapi::ErrorEnvelope),
        (status = 409, description = "label_taken, label_revoked", body = super::openapi::ErrorEnvelope),
        (status = 503, description = "busy, actor_unavailable, signer_unavailable", body = super::openapi::ErrorEnvelope),
        (status = 500, description = "internal", body = super::openapi::ErrorEnvelope)))]
pub async fn create(
    State(state): State<AppState>,
    auth: Authenticated,
    ApiJson(body): ApiJson<CreateRequest>,
) -> Result<(StatusCode, Json<ActorView>), ApiError> {
    let parent_text = body.parent.clone().unwrap_or_else(|| auth.omni.to_string());
    let parent = target(&state, &auth, &parent_text)?;
    auth.require_scope(scope::ACTORS_CREATE)?;
    let create = CreateChild {
        label: body.label,
        scopes: body.scopes,
        device: None,
        origin: Origin::from(&auth),
    };
    let created = state
        .principal(Role::of(parent.kind()), parent.omni, create)
        .await??;
    let shown = view(&state, &created.record, created.master, Status::Active).await?;
    let status = if created.new {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(shown)))
}

/// One actor, with its status computed from its lineage.
#[utoipa::path(get, path = "/v1/actors/{omni}", tag = "actors",
    params(
        ("omni" = String, Path, description = "the actor"),
        ("Authorization" = String, Header, description = "DPoP <session_jwt>"),
        ("DPoP" = String, Header, description = "a proof with ath")),
    responses(
        (status = 200, description = "the actor", body = ActorView),
        (status = 401, description = "invalid_token, invalid_dpop_proof, actor_revoked, binding_revoked", body = super::openapi::ErrorEnvelope),
        (status = 404, description = "not_found (also other trees)", body = super::openapi::ErrorEnvelope),
        (status = 503, description = "busy, signer_unavailable", body = super::openapi::ErrorEnvelope),
        (status = 500, description = "internal", body = super::openapi::ErrorEnvelope)))]
pub async fn show(
    State(state): State<AppState>,
    auth: Authenticated,
    ApiPath(omni): ApiPath<String>,
) -> Result<Json<ActorView>, ApiError> {
    let target = target(&state, &auth, &omni)?;
    let master = target.lineage.records()[0].omni;
    let status = target.lineage.status();
    Ok(Json(
        view(&state, target.lineage.actor(), master, status).await?,
    ))
}

/// `PUT /v1/actors/{omni}/scopes` body.
#[derive(Debug, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ScopesRequest {
    /// The new set (replaces the stored one).
    pub scopes: Vec<String>,
}

/// Sets an agent's stored scopes (an ancestor only); descendants narrow at once.
#[utoipa::path(put, path = "/v1/actors/{omni}/scopes", tag = "actors",
    params(
        ("omni" = String, Path, description = "the agent"),
        ("Authorization" = String, Header, description = "DPoP <session_jwt>"),
        ("DPoP" = String, Header, description = "a proof with ath")),
    request_body = ScopesRequest,
    responses(
        (status = 200, description = "the agent with its new scopes", body = ActorView),
        (status = 400, description = "invalid_request: not a scope", body = super::openapi::ErrorEnvelope),
        (status = 401, description = "invalid_token, invalid_dpop_proof, actor_revoked, binding_revoked", body = super::openapi::ErrorEnvelope),
        (status = 403, description = "scope_denied: an actor cannot set its own scopes", body = super::openapi::ErrorEnvelope),
        (status = 404, description = "not_found (also other trees)", body = super::openapi::ErrorEnvelope),
        (status = 503, description = "busy", body = super::openapi::ErrorEnvelope),
        (status = 500, description = "internal", body = super::openapi::ErrorEnvelope)))]
pub async fn set_scopes(
    State(state): State<AppState>,
    auth: Authenticated,
    ApiPath(omni): ApiPath<String>,
    ApiJson(body): ApiJson<ScopesRequest>,
) -> Result<Json<ActorView>, ApiError> {
    let target = target(&state, &auth, &omni)?;
    ancestor_only(&target, "set the scopes of")?;
    let set = SetScopes {
        scopes: body.scopes,
        origin: Origin::from(&auth),
    };
    let record = state
        .principal(Role::of(target.kind()), target.omni, set)
        .await??;
    let master = target.lineage.records()[0].omni;
    Ok(Json(view(&state, &record, master, Status::Active).await?))
}

/// What a revocation did.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct RevokeResponse {
    /// The revoked actor.
    pub omni: String,
    /// When the revocation committed (the first time, on a repeat).
    pub revoked_at: String,
    /// `false` if it was already revoked.
    pub new: bool,
    /// Actors of the subtree now revoked (itself included), counted up to
    /// [`REVOKE_COUNT_LIMIT`].
    pub revoked: u64,
    /// The subtree has more actors than `revoked` counts (all of them are revoked; the tree
    /// route pages through them).
    pub revoked_more: bool,
    /// Active actors of the subtree stopped.
    pub stopped: usize,
    /// Device bindings of the actor tombstoned (descendants die with their lineage).
    pub bindings_tombstoned: usize,
    /// From submission to the durable commit, milliseconds.
    pub commit_ms: f64,
}

/// Descendants counted in a revocation's answer (the revocation itself covers all of them).
pub const REVOKE_COUNT_LIMIT: u64 = 1000;

/// Revokes an actor and its whole subtree at once, durably (an ancestor only; masters only
/// through the host's admin socket).
#[utoipa::path(post, path = "/v1/actors/{omni}/revoke", tag = "actors",
    params(
        ("omni" = String, Path, description = "the actor"),
        ("Authorization" = String, Header, description = "DPoP <session_jwt>"),
        ("DPoP" = String, Header, description = "a proof with ath")),
    responses(
        (status = 200, description = "revoked", body = RevokeResponse),
        (status = 401, description = "invalid_token, invalid_dpop_proof, actor_revoked, binding_revoked", body = super::openapi::ErrorEnvelope),
        (status = 403, description = "scope_denied: an actor cannot revoke itself", body = super::openapi::ErrorEnvelope),
        (status = 404, description = "not_found (also other trees)", body = super::openapi::ErrorEnvelope),
        (status = 503, description = "busy", body = super::openapi::ErrorEnvelope),
        (status = 500, description = "internal", body = super::openapi::ErrorEnvelope)))]
pub async fn revoke(
    State(state): State<AppState>,
    auth: Authenticated,
    ApiPath(omni): ApiPath<String>,
) -> Result<Json<RevokeResponse>, ApiError> {
    let target = target(&state, &auth, &omni)?;
    ancestor_only(&target, "revoke")?;
    let receipt = state
        .ledger
        .revoke(&state.runtime, target.omni, Origin::from(&auth))
        .await?;
    let (revoked, revoked_more) = super::tree::count(&state, &target.omni, REVOKE_COUNT_LIMIT)?;
    Ok(Json(RevokeResponse {
        omni: target.omni.to_string(),
        revoked_at: time(receipt.revoked_at),
        new: receipt.new,
        revoked,
        revoked_more,
        stopped: receipt.stopped,
        bindings_tombstoned: receipt.bindings_tombstoned,
        commit_ms: receipt.commit_time.as_secs_f64() * 1000.0,
    }))
}

/// `?cursor=&limit=` of the tree.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
pub struct TreeQuery {
    /// The `next_cursor` of the previous page.
    pub cursor: Option<String>,
    /// Entries per page (default 100, at most 1000).
    pub limit: Option<usize>,
}

/// A page of the subtree (depth-first, labels in order), each entry with its computed status.
#[utoipa::path(get, path = "/v1/actors/{omni}/tree", tag = "actors",
    params(
        ("omni" = String, Path, description = "the subtree's root"),
        TreeQuery,
        ("Authorization" = String, Header, description = "DPoP <session_jwt>"),
        ("DPoP" = String, Header, description = "a proof with ath")),
    responses(
        (status = 200, description = "a page", body = super::tree::TreePage),
        (status = 400, description = "invalid_request: bad cursor", body = super::openapi::ErrorEnvelope),
        (status = 401, description = "invalid_token, invalid_dpop_proof, actor_revoked, binding_revoked", body = super::openapi::ErrorEnvelope),
        (status = 404, description = "not_found (also other trees)", body = super::openapi::ErrorEnvelope),
        (status = 503, description = "busy", body = super::openapi::ErrorEnvelope),
        (status = 500, description = "internal", body = super::openapi::ErrorEnvelope)))]
pub async fn tree(
    State(state): State<AppState>,
    auth: Authenticated,
    ApiPath(omni): ApiPath<String>,
    ApiQuery(query): ApiQuery<TreeQuery>,
) -> Result<Json<super::tree::TreePage>, ApiError> {
    let target = target(&state, &auth, &omni)?;
    let limit = query.limit.unwrap_or(100).clamp(1, 1000);
    Ok(Json(super::tree::page(
        &state,
        &target.lineage,
        query.cursor.as_deref(),
        limit,
    )?))
}

/// `?q=&cursor=&limit=` of a search.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
pub struct SearchQuery {
    /// Part of a label (ASCII case ignored) or the start of an omni (hex); 1 to 64 characters.
    pub q: String,
    /// The `next_cursor` of the previous answer.
    pub cursor: Option<String>,
    /// Matches per answer (default 20, at most 100).
    pub limit: Option<usize>,
}

/// Nodes one search answer reads at most (the walk resumes from `next_cursor`).
pub const SEARCH_SCAN: usize = 5_000;

/// Searches a subtree by label or omni: depth-first, each match with its computed status. One
/// answer reads at most [`SEARCH_SCAN`] actors (on a blocking thread, not an async worker); a
/// `next_cursor` continues the walk, even when this answer found nothing.
#[utoipa::path(get, path = "/v1/actors/{omni}/search", tag = "actors",
    params(
        ("omni" = String, Path, description = "the subtree's root"),
        SearchQuery,
        ("Authorization" = String, Header, description = "DPoP <session_jwt>"),
        ("DPoP" = String, Header, description = "a proof with ath")),
    responses(
        (status = 200, description = "the matches, and where to continue", body = super::tree::TreePage),
        (status = 400, description = "invalid_request: empty or long query, bad cursor", body = super::openapi::ErrorEnvelope),
        (status = 401, description = "invalid_token, invalid_dpop_proof, actor_revoked, binding_revoked", body = super::openapi::ErrorEnvelope),
        (status = 404, description = "not_found (also other trees)", body = super::openapi::ErrorEnvelope),
        (status = 503, description = "busy", body = super::openapi::ErrorEnvelope),
        (status = 500, description = "internal", body = super::openapi::ErrorEnvelope)))]
pub async fn search(
    State(state): State<AppState>,
    auth: Authenticated,
    ApiPath(omni): ApiPath<String>,
    ApiQuery(query): ApiQuery<SearchQuery>,
) -> Result<Json<super::tree::TreePage>, ApiError> {
    let target = target(&state, &auth, &omni)?;
    let q = query.q.trim().to_string();
    if q.is_empty() || q.chars().count() > 64 {
        return Err(ApiError::new(
            ErrorCode::InvalidRequest,
            "q must be 1 to 64 characters",
        ));
    }
    let limit = query.limit.unwrap_or(20).clamp(1, 100);
    let walk = tokio::task::spawn_blocking(move || {
        super::tree::search(
            &state,
            &target.lineage,
            &q,
            query.cursor.as_deref(),
            limit,
            SEARCH_SCAN,
        )
    });
    Ok(Json(walk.await.map_err(|_| {
        ApiError::internal("the search task failed")
    })??))
}

/// The size of a subtree.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct SubtreeSize {
    /// The subtree's root.
    pub omni: String,
    /// Actors in it, itself included, counted up to [`COUNT_LIMIT`].
    pub actors: u64,
    /// It has more actors than `actors` counts.
    pub more: bool,
}

/// Actors a count reads at most.
pub const COUNT_LIMIT: u64 = 100_000;

/// Counts a subtree (what a revocation of its root would stop), on a blocking thread so no
/// async worker waits for the walk; at most [`COUNT_LIMIT`] actors are read.
#[utoipa::path(get, path = "/v1/actors/{omni}/count", tag = "actors",
    params(
        ("omni" = String, Path, description = "the subtree's root"),
        ("Authorization" = String, Header, description = "DPoP <session_jwt>"),
        ("DPoP" = String, Header, description = "a proof with ath")),
    responses(
        (status = 200, description = "the count", body = SubtreeSize),
        (status = 401, description = "invalid_token, invalid_dpop_proof, actor_revoked, binding_revoked", body = super::openapi::ErrorEnvelope),
        (status = 404, description = "not_found (also other trees)", body = super::openapi::ErrorEnvelope),
        (status = 503, description = "busy", body = super::openapi::ErrorEnvelope),
        (status = 500, description = "internal", body = super::openapi::ErrorEnvelope)))]
pub async fn count(
    State(state): State<AppState>,
    auth: Authenticated,
    ApiPath(omni): ApiPath<String>,
) -> Result<Json<SubtreeSize>, ApiError> {
    let target = target(&state, &auth, &omni)?;
    let root = target.omni;
    let walk = tokio::task::spawn_blocking(move || super::tree::count(&state, &root, COUNT_LIMIT));
    let (actors, more) = walk
        .await
        .map_err(|_| ApiError::internal("the count task failed"))??;
    Ok(Json(SubtreeSize {
        omni: root.to_string(),
        actors,
        more,
    }))
}

/// Whether the caller may act on `target` for an operation allowed on itself.
pub fn self_or_ancestor(relation: Relation) -> bool {
    matches!(relation, Relation::Itself | Relation::Ancestor)
}
