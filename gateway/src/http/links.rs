//! Link codes (DESIGN §11): how an agent on another machine gets its device key bound.
//!
//! A code is 100 random bits in Crockford base32, shown as five dashed groups of four
//! (`7K3D-QX9M-…`); input is normalized (case, dashes, spaces, `I`/`L` → `1`, `O` → `0`). Only
//! SHA-256 of the normalized code is stored. TTL 600 s by default (60 s … 86,400 s), at most 16
//! outstanding per actor. Redemption (DPoP proof, no token) consumes the code, binds the key and
//! writes the audit rows in one transaction; the same key again within the TTL gets a session
//! for the same binding; another key after use gets 409 `link_code_used` and leaves an alert row.

use agentkeys_actors::crypto::rfc3339;
use agentkeys_actors::principal::{BindDevice, IssueLinkCode, NewDevice, PrincipalError};
use agentkeys_runtime::Timestamp;
use agentkeys_runtime::store::Origin;
use axum::Json;
use axum::extract::State;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::AppState;
use super::authz::target;
use super::crockford;
use super::error::{ApiError, ErrorCode};
use super::extract::{ApiJson, ApiPath, Authenticated, TokenlessDpop};
use super::session::{SessionResponse, issue};
use crate::auth::session::{NewSession, Role};

/// Default lifetime.
pub const DEFAULT_TTL_SECONDS: u64 = 600;
/// Shortest and longest lifetime.
pub const TTL_RANGE: (u64, u64) = (60, 86_400);
/// Outstanding codes per actor.
pub const MAX_OUTSTANDING: usize = 16;
/// Characters of a code (5 bits each: 100 bits).
pub const CODE_CHARS: usize = 20;

/// The canonical form of a typed code, or `None` if it cannot be one.
pub fn normalize(typed: &str) -> Option<String> {
    let code = crockford::normalize(typed);
    crockford::is_code(&code, CODE_CHARS).then_some(code)
}

/// SHA-256 of a normalized code: what the store keeps.
pub fn code_hash(normalized: &str) -> [u8; 32] {
    Sha256::digest(normalized.as_bytes()).into()
}

/// A fresh 100-bit code (20 Crockford base32 characters).
pub fn new_code() -> Result<String, ApiError> {
    crockford::random(CODE_CHARS)
}

pub use super::crockford::dashed;

/// `POST /v1/actors/{omni}/link-codes` body.
#[derive(Debug, Default, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct IssueRequest {
    /// Lifetime in seconds (default 600, 60 … 86,400).
    pub ttl_seconds: Option<u64>,
}

/// An issued code: give it to the agent's machine (`agentkeys link`).
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct LinkCode {
    /// Five dashed groups of four Crockford base32 characters.
    pub code: String,
    /// RFC 3339.
    pub expires_at: String,
    /// The actor it binds a device to.
    pub omni: String,
    /// Its path.
    pub path: String,
}

/// Issues a one-time link code for an actor (itself or a descendant).
#[utoipa::path(post, path = "/v1/actors/{omni}/link-codes", tag = "link",
    params(
        ("omni" = String, Path, description = "the actor"),
        ("Authorization" = String, Header, description = "DPoP <session_jwt>"),
        ("DPoP" = String, Header, description = "a proof with ath")),
    request_body = IssueRequest,
    responses(
        (status = 200, description = "the code", body = LinkCode),
        (status = 400, description = "invalid_request: ttl out of range", body = super::openapi::ErrorEnvelope),
        (status = 401, description = "invalid_token, invalid_dpop_proof, actor_revoked, binding_revoked", body = super::openapi::ErrorEnvelope),
        (status = 404, description = "not_found (also other trees)", body = super::openapi::ErrorEnvelope),
        (status = 429, description = "rate_limited: 16 codes outstanding for this actor (Retry-After: until the earliest expires)", body = super::openapi::ErrorEnvelope),
        (status = 503, description = "busy", body = super::openapi::ErrorEnvelope),
        (status = 500, description = "internal", body = super::openapi::ErrorEnvelope)))]
pub async fn issue_code(
    State(state): State<AppState>,
    auth: Authenticated,
    ApiPath(omni): ApiPath<String>,
    ApiJson(body): ApiJson<IssueRequest>,
) -> Result<Json<LinkCode>, ApiError> {
    let target = target(&state, &auth, &omni)?;
    let ttl = body.ttl_seconds.unwrap_or(DEFAULT_TTL_SECONDS);
    if !(TTL_RANGE.0..=TTL_RANGE.1).contains(&ttl) {
        return Err(ApiError::new(
            ErrorCode::InvalidRequest,
            format!(
                "ttl_seconds must be between {} and {}",
                TTL_RANGE.0, TTL_RANGE.1
            ),
        ));
    }
    let expires_at = Timestamp::from_millis(state.clock.now().as_millis() + ttl * 1000);
    let code = new_code()?;
    let issue = IssueLinkCode {
        hash: code_hash(&code),
        expires_at,
        cap: MAX_OUTSTANDING,
        origin: Origin::from(&auth),
    };
    state
        .principal(Role::of(target.kind()), target.omni, issue)
        .await??;
    Ok(Json(LinkCode {
        code: dashed(&code),
        expires_at: rfc3339::format(i64::try_from(expires_at.as_millis()).unwrap_or(i64::MAX)),
        omni: target.omni.to_string(),
        path: target.lineage.actor().path.clone(),
    }))
}

/// `POST /v1/link/redeem` body.
#[derive(Debug, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RedeemRequest {
    /// The code, as typed (case, dashes and I/L/O forgiven).
    pub code: String,
    /// A name for this device's binding (default `link`).
    pub label: Option<String>,
}

/// Binds the caller's device key to the code's actor and returns its session.
#[utoipa::path(post, path = "/v1/link/redeem", tag = "link",
    params(("DPoP" = String, Header, description = "a proof by the device key to bind")),
    request_body = RedeemRequest,
    responses(
        (status = 200, description = "the agent's session", body = SessionResponse),
        (status = 400, description = "invalid_request: not a code", body = super::openapi::ErrorEnvelope),
        (status = 401, description = "invalid_dpop_proof, actor_revoked", body = super::openapi::ErrorEnvelope),
        (status = 404, description = "not_found: no such code", body = super::openapi::ErrorEnvelope),
        (status = 409, description = "link_code_used: redeemed by another key", body = super::openapi::ErrorEnvelope),
        (status = 410, description = "expired", body = super::openapi::ErrorEnvelope),
        (status = 413, description = "payload_too_large", body = super::openapi::ErrorEnvelope),
        (status = 415, description = "unsupported_media_type", body = super::openapi::ErrorEnvelope),
        (status = 429, description = "rate_limited", body = super::openapi::ErrorEnvelope),
        (status = 503, description = "busy, signer_unavailable", body = super::openapi::ErrorEnvelope),
        (status = 500, description = "internal", body = super::openapi::ErrorEnvelope)))]
pub async fn redeem(
    State(state): State<AppState>,
    TokenlessDpop(proof, _): TokenlessDpop,
    ApiJson(body): ApiJson<RedeemRequest>,
) -> Result<Json<SessionResponse>, ApiError> {
    let code = normalize(&body.code).ok_or_else(|| {
        ApiError::new(
            ErrorCode::InvalidRequest,
            "a link code is 20 characters in dashed groups, like 7K3D-QX9M-2B8F-WN4T-H6CR",
        )
    })?;
    let label = binding_label(body.label, "link")?;
    let no_such_code = || ApiError::new(ErrorCode::NotFound, "no such link code");
    let hash = code_hash(&code);
    let owner = state
        .ledger
        .link_code_owner(&hash)?
        .ok_or_else(no_such_code)?;
    let lineage = state.runtime.lineage(&owner)?.ok_or_else(no_such_code)?;
    let role = Role::of(lineage.actor().kind);
    let bind = BindDevice {
        hash,
        device: NewDevice {
            jkt: proof.jkt.clone(),
            label,
        },
        request_id: state.request_id(),
    };
    let bound = match state.principal(role, owner, bind).await? {
        Err(PrincipalError::NotFound) => return Err(no_such_code()),
        other => other?,
    };
    let session = NewSession {
        omni: bound.record.omni,
        role,
        master: bound.master,
        path: bound.record.path.clone(),
        jkt: proof.jkt,
        bid: bound.binding.bid,
    };
    Ok(Json(issue(&state, session).await?))
}

/// A device binding's name for people: `label`, or `default` when absent; 1 to 64 printable
/// characters.
pub fn binding_label(label: Option<String>, default: &str) -> Result<String, ApiError> {
    let label = label.unwrap_or_else(|| default.into());
    if label.is_empty() || label.len() > 64 || label.chars().any(char::is_control) {
        return Err(ApiError::new(
            ErrorCode::InvalidRequest,
            "label must be 1 to 64 printable characters",
        ));
    }
    Ok(label)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_100_bits_and_typing_is_forgiven() {
        let code = new_code().expect("random");
        assert_eq!(code.len(), 20);
        let shown = dashed(&code);
        assert_eq!(shown.len(), 24);
        assert_eq!(normalize(&shown).as_deref(), Some(code.as_str()));
        assert_eq!(
            normalize(&shown.to_lowercase()).as_deref(),
            Some(code.as_str())
        );
        assert_eq!(
            normalize("ilo0-1111-2222-3333-4444").as_deref(),
            Some("11001111222233334444")
        );
        assert_eq!(
            normalize("UUUU-1111-2222-3333-4444"),
            None,
            "U is not Crockford"
        );
        assert_eq!(normalize("1111-2222"), None);
    }
}
