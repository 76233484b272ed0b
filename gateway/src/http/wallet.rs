//! Wallet login, first step: `POST /v1/auth/wallet/start` issues a SIWE challenge bound to the
//! caller's device key (jkt), the address and the chain. Challenges live in memory with a TTL
//! and a global cap.

use std::collections::HashMap;
use std::sync::Mutex;

use agentkeys_actors::crypto::rfc3339;
use agentkeys_actors::crypto::siwe::SiweMessage;
use agentkeys_actors::crypto::wallet::Address;
use axum::Json;
use axum::extract::State;
use serde::{Deserialize, Serialize};

use super::AppState;
use super::error::{ApiError, ErrorCode};
use super::extract::{ApiJson, TokenlessDpop};

/// How long a challenge may be answered.
pub const CHALLENGE_TTL_SECONDS: i64 = 600;
/// Most outstanding challenges.
pub const CHALLENGE_CAP: usize = 10_000;

/// An issued challenge.
#[derive(Debug, Clone)]
pub struct Challenge {
    /// The device key that asked.
    pub jkt: String,
    /// The address that must sign.
    pub address: Address,
    /// The chain.
    pub chain_id: u64,
    /// The exact message to sign.
    pub message: String,
    /// Seconds since the epoch.
    pub expires_at: i64,
}

/// Outstanding challenges by request id (single use: taken by the verify step).
#[derive(Debug, Default)]
pub struct Challenges {
    by_id: Mutex<HashMap<String, Challenge>>,
}

impl Challenges {
    fn insert(&self, request_id: String, challenge: Challenge, now: i64) -> Result<(), ApiError> {
        let mut map = self.by_id.lock().unwrap_or_else(|p| p.into_inner());
        if map.len() >= CHALLENGE_CAP {
            map.retain(|_, c| c.expires_at > now);
        }
        if map.len() >= CHALLENGE_CAP {
            return Err(ApiError::new(
                ErrorCode::Busy,
                "too many login challenges outstanding; retry shortly",
            ));
        }
        map.insert(request_id, challenge);
        Ok(())
    }

    /// Takes a challenge (single use); `None` if unknown.
    pub fn take(&self, request_id: &str) -> Option<Challenge> {
        self.by_id
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(request_id)
    }

    /// Outstanding challenges.
    pub fn len(&self) -> usize {
        self.by_id.lock().map(|m| m.len()).unwrap_or(0)
    }

    /// Whether none is outstanding.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// `POST /v1/auth/wallet/start` body.
#[derive(Debug, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StartRequest {
    /// The EOA that will sign (`0x` + 40 hex, any case).
    pub address: String,
    /// The chain to sign for (in the allow-list).
    pub chain_id: u64,
}

/// The challenge.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct StartResponse {
    /// Pass back to `wallet/verify`.
    pub request_id: String,
    /// The exact EIP-4361 text to sign.
    pub message: String,
    /// The nonce inside the message.
    pub nonce: String,
    /// RFC 3339.
    pub expires_at: String,
}

fn random_alphanumeric(n: usize) -> Result<String, ApiError> {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    let mut out = String::with_capacity(n);
    let mut bytes = [0u8; 64];
    while out.len() < n {
        aws_lc_rs::rand::fill(&mut bytes)
            .map_err(|_| ApiError::internal("random generator failed"))?;
        // Rejection sampling: bytes below 248 = 4 × 62 map uniformly onto the alphabet.
        for b in bytes.iter().filter(|b| **b < 248).take(n - out.len()) {
            out.push(char::from(ALPHABET[usize::from(*b) % ALPHABET.len()]));
        }
    }
    Ok(out)
}

/// Issues a challenge bound to the caller's key, the address and the chain.
#[utoipa::path(post, path = "/v1/auth/wallet/start", tag = "login",
    params(("DPoP" = String, Header, description = "a DPoP proof by the device key")),
    request_body = StartRequest,
    responses(
        (status = 200, description = "the SIWE message to sign", body = StartResponse),
        (status = 400, description = "invalid_request, invalid_siwe (chain not allowed)", body = super::openapi::ErrorEnvelope),
        (status = 401, description = "invalid_dpop_proof", body = super::openapi::ErrorEnvelope),
        (status = 413, description = "payload_too_large", body = super::openapi::ErrorEnvelope),
        (status = 415, description = "unsupported_media_type", body = super::openapi::ErrorEnvelope),
        (status = 503, description = "busy: too many challenges or DPoP proofs outstanding", body = super::openapi::ErrorEnvelope),
        (status = 500, description = "internal", body = super::openapi::ErrorEnvelope)))]
pub async fn start(
    State(state): State<AppState>,
    TokenlessDpop(proof): TokenlessDpop,
    ApiJson(body): ApiJson<StartRequest>,
) -> Result<Json<StartResponse>, ApiError> {
    let address: Address = body.address.parse().map_err(|_| {
        ApiError::new(
            ErrorCode::InvalidRequest,
            "address must be 0x followed by 40 hex characters",
        )
    })?;
    if !state.siwe_chains.contains(&body.chain_id) {
        return Err(ApiError::new(
            ErrorCode::InvalidSiwe,
            format!(
                "chain_id {} is not accepted here; allowed: {:?}",
                body.chain_id, state.siwe_chains
            ),
        ));
    }
    let now_ms = state.clock.now().as_millis() as i64;
    let now = now_ms / 1000;
    // 17 characters of 62: 101 bits.
    let nonce = random_alphanumeric(17)?;
    let request_id = random_alphanumeric(22)?;
    let expires_at = now + CHALLENGE_TTL_SECONDS;
    let message = SiweMessage {
        scheme: None,
        domain: state.domain.clone(),
        address,
        statement: Some("Sign in to AgentKeys.".into()),
        uri: state.public_url.clone(),
        version: "1".into(),
        chain_id: body.chain_id,
        nonce: nonce.clone(),
        issued_at: rfc3339::format(now_ms),
        expiration_time: Some(rfc3339::format(expires_at * 1000)),
        not_before: None,
        request_id: Some(request_id.clone()),
        resources: Vec::new(),
    }
    .to_text();
    state.challenges.insert(
        request_id.clone(),
        Challenge {
            jkt: proof.jkt,
            address,
            chain_id: body.chain_id,
            message: message.clone(),
            expires_at,
        },
        now,
    )?;
    Ok(Json(StartResponse {
        request_id,
        message,
        nonce,
        expires_at: rfc3339::format(expires_at * 1000),
    }))
}
