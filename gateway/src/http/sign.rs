//! Signing (DESIGN §11): the caller signs as itself, with the scope the operation needs.
//!
//! Each request: the actor authorizes (lineage live, effective scope) and returns the
//! `LiveProof`; the signer pool signs (outside the actor's mailbox, so many signatures per
//! agent can be in flight); the actor records the audit row (the message's SHA-256, never the
//! message) and, after its commit, checks the lineage once more; then the reply. A signature is never returned
//! before its audit row is durable, nor after the actor's revocation returned.

use agentkeys_actors::crypto::eip712::TypedData;
use agentkeys_actors::crypto::tx::TxRequest;
use agentkeys_actors::ledger::audit::{self, op};
use agentkeys_actors::principal::RecordAction;
use agentkeys_actors::scope;
use agentkeys_runtime::store::Origin;
use axum::Json;
use axum::extract::State;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::AppState;
use super::error::{ApiError, ErrorCode};
use super::extract::{ApiJson, Authenticated};

/// Has the caller's actor record the signature (or token) in its master's audit chain; answers
/// after that commit and a fresh lineage check.
pub(super) async fn audited(
    state: &AppState,
    auth: &Authenticated,
    code: u16,
    signed: &[u8],
) -> Result<(), ApiError> {
    let record = RecordAction {
        op: code,
        detail: audit::detail_hash(signed),
        origin: Origin::from(auth),
    };
    Ok(state.principal(auth.role(), auth.omni, record).await??)
}

/// `POST /v1/sign/eip191` body.
#[derive(Debug, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Eip191Request {
    /// UTF-8 text to sign (give this or `message_hex`).
    pub message: Option<String>,
    /// Bytes to sign, `0x` + hex.
    pub message_hex: Option<String>,
    /// `actor` (default: `W(omni)`), or `anchor`: an email-login master's anchor wallet.
    pub wallet: Option<String>,
}

/// A signature and the address that made it.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct SignatureResponse {
    /// 65 bytes `r || s || v` (`v` 27 or 28), `0x` + hex.
    pub signature: String,
    /// The signer (EIP-55).
    pub address: String,
}

fn hex_bytes(text: &str, what: &str) -> Result<Vec<u8>, ApiError> {
    text.strip_prefix("0x")
        .and_then(|h| hex::decode(h).ok())
        .ok_or_else(|| {
            ApiError::new(
                ErrorCode::InvalidRequest,
                format!("{what} must be 0x followed by hex"),
            )
        })
}

/// Which wallet signs an EIP-191 message: the caller's own (`None`), or, for an email-login
/// master, its anchor wallet (`Some(email)`; the signer checks the anchor belongs to the proof's
/// master).
fn anchor_email(
    state: &AppState,
    auth: &Authenticated,
    wallet: Option<&str>,
) -> Result<Option<String>, ApiError> {
    match wallet {
        None | Some("actor") => Ok(None),
        Some("anchor") => match state.ledger.identity_of(&auth.master)? {
            Some((kind, email)) if kind == "email" && auth.omni == auth.master => Ok(Some(email)),
            _ => Err(ApiError::new(
                ErrorCode::InvalidRequest,
                "only an email-login master has an anchor wallet to sign with",
            )),
        },
        Some(_) => Err(ApiError::new(
            ErrorCode::InvalidRequest,
            "wallet is actor or anchor",
        )),
    }
}

/// EIP-191 `personal_sign` with the caller's wallet (`sign:eip191`).
#[utoipa::path(post, path = "/v1/sign/eip191", tag = "sign",
    params(
        ("Authorization" = String, Header, description = "DPoP <session_jwt>"),
        ("DPoP" = String, Header, description = "a proof with ath")),
    request_body = Eip191Request,
    responses(
        (status = 200, description = "signed", body = SignatureResponse),
        (status = 400, description = "invalid_request: not exactly one of message and message_hex; a SIWE message for this gateway", body = super::openapi::ErrorEnvelope),
        (status = 401, description = "invalid_token, invalid_dpop_proof, actor_revoked, binding_revoked", body = super::openapi::ErrorEnvelope),
        (status = 403, description = "scope_denied", body = super::openapi::ErrorEnvelope),
        (status = 503, description = "busy, actor_unavailable, signer_unavailable", body = super::openapi::ErrorEnvelope),
        (status = 500, description = "internal", body = super::openapi::ErrorEnvelope)))]
pub async fn eip191(
    State(state): State<AppState>,
    mut auth: Authenticated,
    ApiJson(body): ApiJson<Eip191Request>,
) -> Result<Json<SignatureResponse>, ApiError> {
    let message = match (body.message, body.message_hex) {
        (Some(text), None) => text.into_bytes(),
        (None, Some(hex)) => hex_bytes(&hex, "message_hex")?,
        _ => {
            return Err(ApiError::new(
                ErrorCode::InvalidRequest,
                "give exactly one of message and message_hex",
            ));
        }
    };
    let anchor = anchor_email(&state, &auth, body.wallet.as_deref())?;
    let proof = auth.signing_proof(scope::SIGN_EIP191)?;
    let digest_input = message.clone();
    let signed = match anchor {
        None => state.signer.sign_eip191(message, proof).await?,
        Some(email) => {
            state
                .signer
                .sign_eip191_as_anchor(email, message, proof)
                .await?
        }
    };
    audited(&state, &auth, op::SIGN_EIP191, &digest_input).await?;
    Ok(Json(SignatureResponse {
        signature: signed.signature.to_hex(),
        address: signed.address.to_checksum(),
    }))
}

/// `POST /v1/sign/eip712` body.
#[derive(Debug, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Eip712Request {
    /// An EIP-712 v4 document `{types, primaryType, domain, message}`.
    pub typed_data: Value,
}

/// A typed-data signature.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct TypedSignatureResponse {
    /// 65 bytes, `0x` + hex.
    pub signature: String,
    /// The signer (EIP-55).
    pub address: String,
    /// The EIP-712 digest that was signed, `0x` + hex.
    pub digest: String,
}

/// EIP-712 v4 with the caller's wallet (`sign:eip712`); validated and its work measured here
/// before the signer (at most 100,000 values and 4 MiB hashed per document).
#[utoipa::path(post, path = "/v1/sign/eip712", tag = "sign",
    params(
        ("Authorization" = String, Header, description = "DPoP <session_jwt>"),
        ("DPoP" = String, Header, description = "a proof with ath")),
    request_body = Eip712Request,
    responses(
        (status = 200, description = "signed", body = TypedSignatureResponse),
        (status = 400, description = "invalid_request, invalid_typed_data", body = super::openapi::ErrorEnvelope),
        (status = 401, description = "invalid_token, invalid_dpop_proof, actor_revoked, binding_revoked", body = super::openapi::ErrorEnvelope),
        (status = 403, description = "scope_denied", body = super::openapi::ErrorEnvelope),
        (status = 503, description = "busy, actor_unavailable, signer_unavailable", body = super::openapi::ErrorEnvelope),
        (status = 500, description = "internal", body = super::openapi::ErrorEnvelope)))]
pub async fn eip712(
    State(state): State<AppState>,
    mut auth: Authenticated,
    ApiJson(body): ApiJson<Eip712Request>,
) -> Result<Json<TypedSignatureResponse>, ApiError> {
    // The same walk as the signer's, without hashing: an oversized document never reaches a
    // signer thread.
    TypedData::from_json(body.typed_data.clone())
        .and_then(|td| td.check_work())
        .map_err(|e| ApiError::new(ErrorCode::InvalidTypedData, e.to_string()))?;
    let proof = auth.signing_proof(scope::SIGN_EIP712)?;
    let signed = state.signer.sign_typed_data(body.typed_data, proof).await?;
    audited(&state, &auth, op::SIGN_EIP712, &signed.digest).await?;
    Ok(Json(TypedSignatureResponse {
        signature: signed.signature.to_hex(),
        address: signed.address.to_checksum(),
        digest: format!("0x{}", hex::encode(signed.digest)),
    }))
}

/// `POST /v1/sign/transaction` body.
#[derive(Debug, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TxSignRequest {
    /// An EIP-1559 (`type` 2, default) or legacy (`type` 0) request; `chain_id` required.
    pub tx: Value,
}

/// A signed transaction.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct SignedTxResponse {
    /// `eth_sendRawTransaction` input, `0x` + hex.
    pub raw: String,
    /// `keccak256(raw)`.
    pub hash: String,
    /// The sender (EIP-55).
    pub address: String,
}

/// Signs a transaction with the caller's wallet (`sign:tx:<chain_id>`).
#[utoipa::path(post, path = "/v1/sign/transaction", tag = "sign",
    params(
        ("Authorization" = String, Header, description = "DPoP <session_jwt>"),
        ("DPoP" = String, Header, description = "a proof with ath")),
    request_body = TxSignRequest,
    responses(
        (status = 200, description = "signed", body = SignedTxResponse),
        (status = 400, description = "invalid_request", body = super::openapi::ErrorEnvelope),
        (status = 401, description = "invalid_token, invalid_dpop_proof, actor_revoked, binding_revoked", body = super::openapi::ErrorEnvelope),
        (status = 403, description = "scope_denied", body = super::openapi::ErrorEnvelope),
        (status = 503, description = "busy, actor_unavailable, signer_unavailable", body = super::openapi::ErrorEnvelope),
        (status = 500, description = "internal", body = super::openapi::ErrorEnvelope)))]
pub async fn transaction(
    State(state): State<AppState>,
    mut auth: Authenticated,
    ApiJson(body): ApiJson<TxSignRequest>,
) -> Result<Json<SignedTxResponse>, ApiError> {
    let request = TxRequest::from_json(body.tx.clone())
        .map_err(|e| ApiError::new(ErrorCode::InvalidRequest, e.to_string()))?;
    let proof = auth.signing_proof(&scope::sign_tx(request.chain_id))?;
    let signed = state.signer.sign_transaction(body.tx, proof).await?;
    audited(&state, &auth, op::SIGN_TX, &signed.raw).await?;
    Ok(Json(SignedTxResponse {
        raw: format!("0x{}", hex::encode(&signed.raw)),
        hash: format!("0x{}", hex::encode(signed.hash)),
        address: signed.from.to_checksum(),
    }))
}

/// `POST /v1/sign/sr25519` body.
#[derive(Debug, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Sr25519Request {
    /// The bytes to sign, `0x` + hex.
    pub message_hex: String,
}

/// An sr25519 signature.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Sr25519Response {
    /// 64 bytes, `0x` + hex (Substrate signing context).
    pub signature: String,
    /// The public key, `0x` + hex.
    pub public: String,
    /// Its SS58 address.
    pub ss58: String,
}

/// sr25519 with the caller's key (`sign:sr25519`).
#[utoipa::path(post, path = "/v1/sign/sr25519", tag = "sign",
    params(
        ("Authorization" = String, Header, description = "DPoP <session_jwt>"),
        ("DPoP" = String, Header, description = "a proof with ath")),
    request_body = Sr25519Request,
    responses(
        (status = 200, description = "signed", body = Sr25519Response),
        (status = 400, description = "invalid_request", body = super::openapi::ErrorEnvelope),
        (status = 401, description = "invalid_token, invalid_dpop_proof, actor_revoked, binding_revoked", body = super::openapi::ErrorEnvelope),
        (status = 403, description = "scope_denied", body = super::openapi::ErrorEnvelope),
        (status = 503, description = "busy, actor_unavailable, signer_unavailable", body = super::openapi::ErrorEnvelope),
        (status = 500, description = "internal", body = super::openapi::ErrorEnvelope)))]
pub async fn sr25519(
    State(state): State<AppState>,
    mut auth: Authenticated,
    ApiJson(body): ApiJson<Sr25519Request>,
) -> Result<Json<Sr25519Response>, ApiError> {
    let message = hex_bytes(&body.message_hex, "message_hex")?;
    let proof = auth.signing_proof(scope::SIGN_SR25519)?;
    let path = auth.claims.agentkeys.path.clone();
    let signature = state
        .signer
        .sign_sr25519(path.clone(), message.clone(), proof)
        .await?;
    audited(&state, &auth, op::SIGN_SR25519, &message).await?;
    let account = state.signer.account(auth.master, path).await?;
    Ok(Json(Sr25519Response {
        signature: format!("0x{}", hex::encode(signature)),
        public: format!("0x{}", hex::encode(account.sr25519_public)),
        ss58: account.ss58,
    }))
}
