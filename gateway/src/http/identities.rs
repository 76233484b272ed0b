//! A master's login identities (docs/login.md, "Several identities per master"): list, link
//! another one by completing its own ceremony under the master's session, and unlink (never the
//! last one; an unlinked identity logs into nothing afterwards).

use agentkeys_actors::crypto::omni::Identity;
use agentkeys_actors::crypto::rfc3339;
use agentkeys_actors::ledger::{LinkIdentity, UnlinkIdentity};
use agentkeys_runtime::store::Origin;
use axum::Json;
use axum::extract::State;
use axum::http::HeaderMap;
use serde::{Deserialize, Serialize};

use super::AppState;
use super::email::{EmailRequest, EmailStarted};
use super::error::{ApiError, ErrorCode};
use super::extract::{ApiJson, ApiPath, Authenticated};
use super::oauth2::{OAuthStart, OAuthStarted};
use super::pending::Requester;
use super::ratelimit::ClientIp;
use super::wallet::{StartRequest, StartResponse, VerifyRequest};

/// Only a master manages its identities.
fn master_only(auth: &Authenticated) -> Result<agentkeys_runtime::Omni, ApiError> {
    if auth.omni != auth.master {
        return Err(ApiError::new(
            ErrorCode::ScopeDenied,
            "only a master manages its login identities",
        ));
    }
    Ok(auth.master)
}

/// A link ceremony's starter: the master, and the session's key as the requester.
fn starter(
    auth: &Authenticated,
    client: &ClientIp,
) -> Result<(agentkeys_runtime::Omni, Requester), ApiError> {
    let master = master_only(auth)?;
    let by = Requester {
        ip: client.0,
        jkt: auth.claims.cnf.jkt.clone(),
    };
    Ok((master, by))
}

/// One identity.
#[derive(Debug, Deserialize, Serialize, utoipa::ToSchema)]
pub struct IdentityView {
    /// `evm`, `email`, `oauth2_google` or `oidc`.
    #[serde(rename = "type")]
    pub kind: String,
    /// The canonical value (`0x…` lowercase, the address, the `sub`, or `<issuer>#<sub>`).
    pub value: String,
    /// RFC 3339.
    pub linked_at: String,
    /// Whether the master was created with it (an email or OpenID master's anchor wallet is
    /// that identity's, for good).
    pub created_with: bool,
}

/// `GET /v1/identities`.
#[derive(Debug, Deserialize, Serialize, utoipa::ToSchema)]
pub struct IdentityList {
    /// The identities that log into this master.
    pub identities: Vec<IdentityView>,
}

/// The identities that log into the caller (a master).
#[utoipa::path(get, path = "/v1/identities", tag = "identities",
    params(
        ("Authorization" = String, Header, description = "DPoP <session_jwt>"),
        ("DPoP" = String, Header, description = "a proof with ath")),
    responses(
        (status = 200, description = "the identities", body = IdentityList),
        (status = 401, description = "invalid_token, invalid_dpop_proof, actor_revoked, binding_revoked", body = super::openapi::ErrorEnvelope),
        (status = 403, description = "scope_denied: not a master", body = super::openapi::ErrorEnvelope),
        (status = 503, description = "busy", body = super::openapi::ErrorEnvelope),
        (status = 500, description = "internal", body = super::openapi::ErrorEnvelope)))]
pub async fn list(
    State(state): State<AppState>,
    auth: Authenticated,
) -> Result<Json<IdentityList>, ApiError> {
    let master = master_only(&auth)?;
    let identities = state
        .ledger
        .identities(&master, auth.record.created_at)?
        .into_iter()
        .map(|i| IdentityView {
            kind: i.kind,
            value: i.value,
            linked_at: rfc3339::format(i64::try_from(i.linked_at.as_millis()).unwrap_or(i64::MAX)),
            created_with: i.created_with,
        })
        .collect();
    Ok(Json(IdentityList { identities }))
}

/// Unlinks an identity: it logs into nothing afterwards (a login with it is refused with
/// `identity_unlinked`). Never the last one.
#[utoipa::path(delete, path = "/v1/identities/{type}/{value}", tag = "identities",
    params(
        ("type" = String, Path, description = "evm, email, oauth2_google or oidc"),
        ("value" = String, Path, description = "the value, percent-encoded"),
        ("Authorization" = String, Header, description = "DPoP <session_jwt>"),
        ("DPoP" = String, Header, description = "a proof with ath")),
    responses(
        (status = 200, description = "unlinked", body = Linked),
        (status = 400, description = "invalid_request", body = super::openapi::ErrorEnvelope),
        (status = 401, description = "invalid_token, invalid_dpop_proof, actor_revoked, binding_revoked", body = super::openapi::ErrorEnvelope),
        (status = 403, description = "scope_denied: not a master", body = super::openapi::ErrorEnvelope),
        (status = 404, description = "not_found: not one of this master's identities", body = super::openapi::ErrorEnvelope),
        (status = 409, description = "last_identity", body = super::openapi::ErrorEnvelope),
        (status = 503, description = "busy", body = super::openapi::ErrorEnvelope),
        (status = 500, description = "internal", body = super::openapi::ErrorEnvelope)))]
pub async fn unlink(
    State(state): State<AppState>,
    auth: Authenticated,
    ApiPath((kind, value)): ApiPath<(String, String)>,
) -> Result<Json<Linked>, ApiError> {
    let master = master_only(&auth)?;
    let (kind, value) = Identity::of(&kind, &value)
        .and_then(|i| i.canonical())
        .map_err(|e| ApiError::new(ErrorCode::InvalidRequest, e.to_string()))?;
    state
        .ledger
        .unlink_identity(UnlinkIdentity {
            master,
            identity: (kind.to_string(), value.clone()),
            origin: Origin::from(&auth),
            at: state.clock.now(),
        })
        .await?;
    Ok(Json(Linked {
        status: "unlinked".into(),
        kind: kind.to_string(),
        value,
    }))
}

/// Starts linking a wallet: a SIWE challenge (same body as the login's) the wallet signs.
#[utoipa::path(post, path = "/v1/identities/wallet/start", tag = "identities",
    params(
        ("Authorization" = String, Header, description = "DPoP <session_jwt>"),
        ("DPoP" = String, Header, description = "a proof with ath")),
    request_body = StartRequest,
    responses(
        (status = 200, description = "the SIWE message to sign", body = StartResponse),
        (status = 400, description = "invalid_request, invalid_siwe", body = super::openapi::ErrorEnvelope),
        (status = 401, description = "invalid_token, invalid_dpop_proof, actor_revoked, binding_revoked", body = super::openapi::ErrorEnvelope),
        (status = 403, description = "scope_denied: not a master", body = super::openapi::ErrorEnvelope),
        (status = 429, description = "rate_limited", body = super::openapi::ErrorEnvelope),
        (status = 503, description = "busy", body = super::openapi::ErrorEnvelope),
        (status = 500, description = "internal", body = super::openapi::ErrorEnvelope)))]
pub async fn wallet_start(
    State(state): State<AppState>,
    auth: Authenticated,
    client: axum::Extension<ClientIp>,
    ApiJson(body): ApiJson<StartRequest>,
) -> Result<Json<StartResponse>, ApiError> {
    let (master, by) = starter(&auth, &client.0)?;
    super::wallet::challenge(&state, &body, by.jkt.clone(), &by, Some(master)).await
}

/// The outcome of a link or an unlink.
#[derive(Debug, Deserialize, Serialize, utoipa::ToSchema)]
pub struct Linked {
    /// `linked` (also when it was linked already) or `unlinked`.
    pub status: String,
    /// The identity type.
    #[serde(rename = "type")]
    pub kind: String,
    /// The canonical value.
    pub value: String,
}

/// Links a wallet: the signed challenge proves it (a managed wallet never links).
#[utoipa::path(post, path = "/v1/identities/wallet/verify", tag = "identities",
    params(
        ("Authorization" = String, Header, description = "DPoP <session_jwt>"),
        ("DPoP" = String, Header, description = "a proof with ath")),
    request_body = VerifyRequest,
    responses(
        (status = 200, description = "linked", body = Linked),
        (status = 400, description = "invalid_request, invalid_siwe", body = super::openapi::ErrorEnvelope),
        (status = 401, description = "invalid_token, invalid_dpop_proof, actor_revoked, binding_revoked", body = super::openapi::ErrorEnvelope),
        (status = 403, description = "scope_denied: not a master; managed_wallet", body = super::openapi::ErrorEnvelope),
        (status = 409, description = "identity_taken", body = super::openapi::ErrorEnvelope),
        (status = 503, description = "busy", body = super::openapi::ErrorEnvelope),
        (status = 500, description = "internal", body = super::openapi::ErrorEnvelope)))]
pub async fn wallet_verify(
    State(state): State<AppState>,
    auth: Authenticated,
    ApiJson(body): ApiJson<VerifyRequest>,
) -> Result<Json<Linked>, ApiError> {
    let master = master_only(&auth)?;
    let address =
        super::wallet::check_siwe(&state, &body, &auth.claims.cnf.jkt, Some(master)).await?;
    let value = address.to_string();
    state
        .ledger
        .link_identity(LinkIdentity {
            master,
            identity: ("evm".into(), value.clone()),
            wallet: Some(address.0),
            origin: Origin::from(&auth),
            at: state.clock.now(),
        })
        .await?;
    Ok(Json(Linked {
        status: "linked".into(),
        kind: "evm".into(),
        value,
    }))
}

/// Starts linking an email address: a magic link and a confirm code, as for a login; poll
/// `GET /v1/auth/email/status/{request_id}` with this session's key until `linked`.
#[utoipa::path(post, path = "/v1/identities/email/request", tag = "identities",
    params(
        ("Authorization" = String, Header, description = "DPoP <session_jwt>"),
        ("DPoP" = String, Header, description = "a proof with ath")),
    request_body = EmailRequest,
    responses(
        (status = 200, description = "the link was sent", body = EmailStarted),
        (status = 400, description = "invalid_request", body = super::openapi::ErrorEnvelope),
        (status = 401, description = "invalid_token, invalid_dpop_proof, actor_revoked, binding_revoked", body = super::openapi::ErrorEnvelope),
        (status = 403, description = "scope_denied: not a master", body = super::openapi::ErrorEnvelope),
        (status = 429, description = "rate_limited", body = super::openapi::ErrorEnvelope),
        (status = 503, description = "busy; the mail could not be sent", body = super::openapi::ErrorEnvelope),
        (status = 500, description = "internal", body = super::openapi::ErrorEnvelope)))]
pub async fn email_request(
    State(state): State<AppState>,
    auth: Authenticated,
    client: axum::Extension<ClientIp>,
    headers: HeaderMap,
    ApiJson(body): ApiJson<EmailRequest>,
) -> Result<Json<EmailStarted>, ApiError> {
    let (master, by) = starter(&auth, &client.0)?;
    super::email::start(&state, &body.email, by, &headers, Some(master)).await
}

/// Starts linking an account at an OpenID provider: open `authorization_url`, give the confirm
/// code on the page after the provider; poll `GET /v1/auth/oauth2/status/{request_id}` with
/// this session's key until `linked`.
#[utoipa::path(post, path = "/v1/identities/oauth2/start", tag = "identities",
    params(
        ("Authorization" = String, Header, description = "DPoP <session_jwt>"),
        ("DPoP" = String, Header, description = "a proof with ath")),
    request_body = OAuthStart,
    responses(
        (status = 200, description = "open authorization_url; show confirm_code", body = OAuthStarted),
        (status = 400, description = "invalid_request: unknown provider", body = super::openapi::ErrorEnvelope),
        (status = 401, description = "invalid_token, invalid_dpop_proof, actor_revoked, binding_revoked", body = super::openapi::ErrorEnvelope),
        (status = 403, description = "scope_denied: not a master", body = super::openapi::ErrorEnvelope),
        (status = 429, description = "rate_limited", body = super::openapi::ErrorEnvelope),
        (status = 502, description = "provider_unavailable", body = super::openapi::ErrorEnvelope),
        (status = 503, description = "busy", body = super::openapi::ErrorEnvelope),
        (status = 500, description = "internal", body = super::openapi::ErrorEnvelope)))]
pub async fn oauth2_start(
    State(state): State<AppState>,
    auth: Authenticated,
    client: axum::Extension<ClientIp>,
    headers: HeaderMap,
    ApiJson(body): ApiJson<OAuthStart>,
) -> Result<Json<OAuthStarted>, ApiError> {
    let (master, by) = starter(&auth, &client.0)?;
    super::oauth2::begin(&state, &body.provider, by, &headers, Some(master)).await
}
