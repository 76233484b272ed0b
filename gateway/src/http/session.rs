//! Sessions: the answer every login returns, `POST /v1/session/refresh` and `GET /v1/whoami`.

use agentkeys_actors::crypto::omni::{Identity as IdentityKind, identity_omni};
use agentkeys_actors::crypto::rfc3339;
use agentkeys_actors::principal::{Describe, PrincipalError, UseBinding};
use agentkeys_runtime::{Omni, Timestamp};
use axum::Json;
use axum::extract::State;
use axum::http::request::Parts;
use serde::{Deserialize, Serialize};

use super::AppState;
use super::error::{ApiError, ErrorCode};
use super::extract::{Authenticated, bind_and_record, dpop_token, verify_proof};
use crate::auth::session::{NewSession, Role};

/// A session: what logins, refresh and (later) link redemption return. `Debug` hides the token.
#[derive(Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct SessionResponse {
    /// The ES256 session token; send it as `Authorization: DPoP <session_jwt>`.
    pub session_jwt: String,
    /// RFC 3339.
    pub expires_at: String,
    /// The actor's omni.
    pub omni: String,
    /// `""` for a master, `//a//b` for agents.
    pub path: String,
    /// The tree's master.
    pub master_omni: String,
    /// `master` or `agent`.
    pub role: String,
    /// The device binding the token names.
    pub binding_id: u64,
}

impl std::fmt::Debug for SessionResponse {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionResponse")
            .field("session_jwt", &"[redacted]")
            .field("expires_at", &self.expires_at)
            .field("omni", &self.omni)
            .field("path", &self.path)
            .field("role", &self.role)
            .field("binding_id", &self.binding_id)
            .finish_non_exhaustive()
    }
}

/// Mints a session for `session` and shapes the answer.
pub async fn issue(state: &AppState, session: NewSession) -> Result<SessionResponse, ApiError> {
    let (session_jwt, exp) = state
        .sessions
        .mint(&state.signer, &session, state.now_seconds())
        .await?;
    Ok(SessionResponse {
        session_jwt,
        expires_at: rfc3339::format(exp * 1000),
        omni: session.omni.to_string(),
        path: session.path,
        master_omni: session.master.to_string(),
        role: session.role.as_str().into(),
        binding_id: session.bid,
    })
}

/// The refresh request: the old token and a nonce-carrying proof by the bound key.
#[derive(Debug)]
pub struct RefreshAuth {
    claims: crate::auth::session::SessionClaims,
    jkt: String,
}

impl axum::extract::FromRequestParts<AppState> for RefreshAuth {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let token = dpop_token(parts)?;
        let proof = verify_proof(parts, state, Some(&token), true)?;
        let claims = state
            .sessions
            .verify_for_refresh(&token, state.now_seconds())
            .map_err(|e| ApiError::new(ErrorCode::InvalidToken, e.to_string()))?;
        bind_and_record(state, &proof, &claims)?;
        let master = claims
            .master()
            .map_err(|e| ApiError::new(ErrorCode::InvalidToken, e.to_string()))?;
        let partition = crate::auth::replay::Partition::Binding(claims.bid);
        super::extract::record_shared(state, Some(&master), &proof, partition).await?;
        Ok(Self {
            claims,
            jkt: proof.jkt,
        })
    }
}

/// A fresh token for a live binding. The old token may have expired (up to 30 days after it
/// was issued); the proof must carry a server-issued `DPoP-Nonce`.
#[utoipa::path(post, path = "/v1/session/refresh", tag = "session",
    params(
        ("Authorization" = String, Header, description = "DPoP <the old session_jwt>"),
        ("DPoP" = String, Header, description = "a proof with ath and a server nonce")),
    responses(
        (status = 200, description = "a new session", body = SessionResponse),
        (status = 401, description = "invalid_token, invalid_dpop_proof, use_dpop_nonce (with a DPoP-Nonce header), actor_revoked, binding_revoked", body = super::openapi::ErrorEnvelope),
        (status = 503, description = "busy", body = super::openapi::ErrorEnvelope),
        (status = 500, description = "internal", body = super::openapi::ErrorEnvelope)))]
pub async fn refresh(
    State(state): State<AppState>,
    auth: RefreshAuth,
) -> Result<Json<SessionResponse>, ApiError> {
    let invalid =
        |e: crate::auth::session::TokenError| ApiError::new(ErrorCode::InvalidToken, e.to_string());
    let omni = auth.claims.omni().map_err(invalid)?;
    let role = auth.claims.agentkeys.role;
    let use_binding = UseBinding {
        bid: auth.claims.bid,
        jkt: auth.jkt.clone(),
        request_id: state.request_id(),
    };
    let used = match state.principal(role, omni, use_binding).await? {
        Err(PrincipalError::NoSuchBinding) => Err(ApiError::new(
            ErrorCode::InvalidToken,
            "the token names no binding of this key",
        )),
        other => other.map_err(ApiError::from),
    }?;
    if Role::of(used.record.kind) != role {
        return Err(ApiError::new(
            ErrorCode::InvalidToken,
            "the token's role does not match its actor",
        ));
    }
    let session = NewSession {
        omni,
        role,
        master: used.master,
        path: used.record.path.clone(),
        jkt: auth.jkt,
        bid: used.binding.bid,
    };
    Ok(Json(issue(&state, session).await?))
}

/// Every identifier of the caller.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Whoami {
    /// The actor's omni.
    pub omni: String,
    /// `master` or `agent`.
    pub role: String,
    /// `""` for a master.
    pub path: String,
    /// The parent's omni (`null` for a master).
    pub parent: Option<String>,
    /// The tree's master.
    pub master_omni: String,
    /// The actor's managed EVM wallet `W(omni)` (EIP-55).
    pub wallet: String,
    /// sr25519 public key, `0x` + 64 hex.
    pub sr25519_public: String,
    /// SS58 address of that key.
    pub ss58: String,
    /// The login identity of the master: `{type, value}` (`evm` or `email`).
    pub identity: Option<Identity>,
    /// The wallet the master's omni derives from: the user's own (SIWE) or, for an email
    /// login, the managed anchor wallet.
    pub anchor_wallet: Option<String>,
    /// `active` (a revoked actor cannot call this).
    pub status: String,
    /// The caller's device binding.
    pub binding_id: u64,
    /// Live device bindings of the actor.
    pub devices: usize,
    /// When the current token expires (RFC 3339).
    pub session_expires_at: String,
    /// When the actor was created (RFC 3339).
    pub created_at: String,
}

/// A login identity.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Identity {
    /// `evm` or `email`.
    #[serde(rename = "type")]
    pub kind: String,
    /// The address.
    pub value: String,
}

/// The caller's identifiers.
#[utoipa::path(get, path = "/v1/whoami", tag = "session",
    params(
        ("Authorization" = String, Header, description = "DPoP <session_jwt>"),
        ("DPoP" = String, Header, description = "a proof with ath")),
    responses(
        (status = 200, description = "who the caller is", body = Whoami),
        (status = 401, description = "invalid_token, invalid_dpop_proof, actor_revoked, binding_revoked", body = super::openapi::ErrorEnvelope),
        (status = 503, description = "busy, actor_unavailable, signer_unavailable", body = super::openapi::ErrorEnvelope),
        (status = 500, description = "internal", body = super::openapi::ErrorEnvelope)))]
pub async fn whoami(
    State(state): State<AppState>,
    auth: Authenticated,
) -> Result<Json<Whoami>, ApiError> {
    let view = state.principal(auth.role(), auth.omni, Describe).await??;
    let account = state
        .signer
        .account(auth.master, view.record.path.clone())
        .await?;
    let identity = state.ledger.identity_of(&auth.master)?;
    let anchor_wallet = match &identity {
        Some((kind, value)) if kind == "evm" => Some(value.clone()),
        Some((kind, value)) if kind == "email" => {
            let id = identity_omni(&state.client_id, IdentityKind::Email(value))
                .map_err(ApiError::internal)?;
            Some(
                state
                    .signer
                    .account(id, String::new())
                    .await?
                    .wallet
                    .to_string(),
            )
        }
        _ => None,
    };
    Ok(Json(Whoami {
        omni: auth.omni.to_string(),
        role: auth.claims.agentkeys.role.as_str().into(),
        path: view.record.path.clone(),
        parent: view.record.parent.as_ref().map(Omni::to_string),
        master_omni: auth.master.to_string(),
        wallet: account.wallet.to_checksum(),
        sr25519_public: format!("0x{}", hex::encode(account.sr25519_public)),
        ss58: account.ss58,
        identity: identity.map(|(kind, value)| Identity { kind, value }),
        anchor_wallet,
        status: "active".into(),
        binding_id: auth.claims.bid,
        devices: view.bindings.iter().filter(|b| b.is_live()).count(),
        session_expires_at: rfc3339::format(auth.claims.exp * 1000),
        created_at: format_time(view.record.created_at),
    }))
}

fn format_time(at: Timestamp) -> String {
    rfc3339::format(i64::try_from(at.as_millis()).unwrap_or(i64::MAX))
}
