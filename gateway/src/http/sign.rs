//! Signing (DESIGN §11): the caller signs as itself, with the scope the operation needs.
//!
//! Each request: the actor authorizes (lineage live, effective scope) and returns the
//! `LiveProof` with the policies on its lineage; the request is classified and evaluated
//! against every policy (denied, waiting for a person's approval, or allowed); the signer pool
//! signs (outside the actor's mailbox, so many signatures per agent can be in flight); the
//! audit row is recorded (the message's SHA-256, never the message; on the actor's published
//! view, `agentkeys_actors::principal::record_action`) with the spend,
//! checked and counted against every budget on the lineage in the row's transaction, and,
//! after its commit, checks the lineage once more; then the reply. When the row's bytes are
//! known before the signature (EIP-191 with the caller's wallet, sr25519), the row is recorded
//! while the signer signs (docs/architecture.md). A signature is never returned before its
//! audit row and spend are durable, nor over a budget, nor after the actor's revocation
//! returned.

use agentkeys_actors::crypto::eip712::TypedData;
use agentkeys_actors::crypto::siwe::is_login_for;
use agentkeys_actors::crypto::sr25519;
use agentkeys_actors::crypto::tx::TxRequest;
use agentkeys_actors::ledger::audit::{self, op};
use agentkeys_actors::policy::{Operation, Verdict, classify, evaluate};
use agentkeys_actors::principal::RecordAction;
use agentkeys_actors::scope;
use agentkeys_actors::signer::SignerError;
use agentkeys_runtime::store::Origin;
use agentkeys_runtime::{LiveProof, Omni};
use axum::Json;
use axum::extract::State;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::AppState;
use super::error::{ApiError, ErrorCode};
use super::extract::{ApiJson, Authenticated};

/// Has the caller's actor record a token it obtained (no policy applies to tokens) in its
/// master's audit chain; answers after that commit and a fresh lineage check.
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
        spend: Vec::new(),
        check: None,
        announced: None,
    };
    Ok(state.record_action(auth.role(), auth.omni, record).await?)
}

/// The four signing routes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Route {
    /// `/v1/sign/eip191`.
    #[serde(rename = "/v1/sign/eip191")]
    Eip191,
    /// `/v1/sign/eip712`.
    #[serde(rename = "/v1/sign/eip712")]
    Eip712,
    /// `/v1/sign/transaction`.
    #[serde(rename = "/v1/sign/transaction")]
    Transaction,
    /// `/v1/sign/sr25519`.
    #[serde(rename = "/v1/sign/sr25519")]
    Sr25519,
}

impl Route {
    /// The route's path.
    pub fn path(self) -> &'static str {
        match self {
            Route::Eip191 => "/v1/sign/eip191",
            Route::Eip712 => "/v1/sign/eip712",
            Route::Transaction => "/v1/sign/transaction",
            Route::Sr25519 => "/v1/sign/sr25519",
        }
    }

    fn code(self) -> u16 {
        match self {
            Route::Eip191 => op::SIGN_EIP191,
            Route::Eip712 => op::SIGN_EIP712,
            Route::Transaction => op::SIGN_TX,
            Route::Sr25519 => op::SIGN_SR25519,
        }
    }
}

/// Who a signature is made for (the caller, or the requester of an approved request).
#[derive(Debug, Clone)]
pub struct Signatory {
    /// The actor.
    pub omni: Omni,
    /// Its master.
    pub master: Omni,
    /// Its derivation path.
    pub path: String,
}

/// A signing request, parsed and classified, not yet signed.
#[derive(Debug, Clone)]
pub struct Prepared {
    /// The route.
    pub route: Route,
    /// The body as sent (kept with a pending approval).
    pub body: Value,
    /// The scope the route needs.
    pub scope: String,
    /// What it would do, as the policy sees it.
    pub op: Operation,
    /// A person approved it (its thresholds are decided).
    pub approved: bool,
    action: Action,
}

impl Prepared {
    /// The audit operation code of the signature.
    pub fn route_code(&self) -> u16 {
        self.route.code()
    }

    /// The bytes the audit row will name, when they are known before the signature: the
    /// message of an EIP-191 signature with the caller's own wallet, or of an sr25519 one —
    /// requests the signer cannot refuse once prepared. `None`: the row names what the signer
    /// makes (an EIP-712 digest, a signed transaction) or the signer checks more (an anchor).
    fn detail_before_signing(&self) -> Option<&[u8]> {
        match &self.action {
            Action::Eip191 {
                message,
                anchor: None,
            }
            | Action::Sr25519(message) => Some(message),
            Action::Eip191 {
                anchor: Some(_), ..
            }
            | Action::Eip712(_)
            | Action::Transaction(_) => None,
        }
    }

    /// SHA-256 of the body as sent (a refusal's audit row names it; computed only then).
    pub fn digest(&self) -> [u8; 32] {
        audit::detail_hash(self.body.to_string().as_bytes())
    }
}

#[derive(Debug, Clone)]
enum Action {
    Eip191 {
        message: Vec<u8>,
        anchor: Option<(String, String)>,
    },
    Eip712(Value),
    Transaction(Value),
    Sr25519(Vec<u8>),
}

fn bad(message: impl Into<String>) -> ApiError {
    ApiError::new(ErrorCode::InvalidRequest, message)
}

/// Parses `body` for `route` (exactly as the route itself does) and classifies it.
pub fn prepare(
    state: &AppState,
    who: &Signatory,
    route: Route,
    body: Value,
) -> Result<Prepared, ApiError> {
    let parse = |e: serde_json::Error| bad(e.to_string());
    let (scope, op, action) = match route {
        Route::Eip191 => {
            let req: Eip191Request = serde_json::from_value(body.clone()).map_err(parse)?;
            let (message, from_hex) = match (req.message, req.message_hex) {
                (Some(text), None) => (text.into_bytes(), false),
                (None, Some(hex)) => (hex_bytes(&hex, "message_hex")?, true),
                _ => return Err(bad("give exactly one of message and message_hex")),
            };
            // The signer refuses it too; refused here, it never costs an audit row.
            if is_login_for(&message, &state.domain) {
                return Err(SignerError::ManagedWalletLogin.into());
            }
            let anchor = anchor_identity(state, who, req.wallet.as_deref())?;
            (
                scope::SIGN_EIP191.to_owned(),
                classify::message(&message, from_hex),
                Action::Eip191 { message, anchor },
            )
        }
        Route::Eip712 => {
            let req: Eip712Request = serde_json::from_value(body.clone()).map_err(parse)?;
            // The same walk as the signer's, without hashing: an oversized document never
            // reaches a signer thread.
            TypedData::from_json(req.typed_data.clone())
                .and_then(|td| td.check_work())
                .map_err(|e| ApiError::new(ErrorCode::InvalidTypedData, e.to_string()))?;
            (
                scope::SIGN_EIP712.to_owned(),
                classify::typed_data(&req.typed_data),
                Action::Eip712(req.typed_data),
            )
        }
        Route::Transaction => {
            let req: TxSignRequest = serde_json::from_value(body.clone()).map_err(parse)?;
            let request = TxRequest::from_json(req.tx.clone())
                .and_then(|r| r.check().map(|()| r))
                .map_err(|e| bad(e.to_string()))?;
            (
                scope::sign_tx(request.chain_id),
                classify::transaction(&request),
                Action::Transaction(req.tx),
            )
        }
        Route::Sr25519 => {
            let req: Sr25519Request = serde_json::from_value(body.clone()).map_err(parse)?;
            (
                scope::SIGN_SR25519.to_owned(),
                classify::sr25519(),
                Action::Sr25519(hex_bytes(&req.message_hex, "message_hex")?),
            )
        }
    };
    Ok(Prepared {
        route,
        body,
        scope,
        op,
        approved: false,
        action,
    })
}

/// Signs a prepared request with `proof`; answers the route's response body and the bytes
/// whose SHA-256 goes into the audit row.
pub async fn execute(
    state: &AppState,
    who: &Signatory,
    action: &Prepared,
    proof: LiveProof,
) -> Result<(Value, Vec<u8>), ApiError> {
    match &action.action {
        Action::Eip191 { message, anchor } => {
            let signed = match anchor {
                None => state.signer.sign_eip191(message.clone(), proof).await?,
                Some(identity) => {
                    state
                        .signer
                        .sign_eip191_as_anchor(identity.clone(), message.clone(), proof)
                        .await?
                }
            };
            let body = SignatureResponse {
                signature: signed.signature.to_hex(),
                address: signed.address.to_checksum(),
            };
            Ok((
                serde_json::to_value(&body).map_err(ApiError::internal)?,
                message.clone(),
            ))
        }
        Action::Eip712(typed) => {
            let signed = state.signer.sign_typed_data(typed.clone(), proof).await?;
            let body = TypedSignatureResponse {
                signature: signed.signature.to_hex(),
                address: signed.address.to_checksum(),
                digest: format!("0x{}", hex::encode(signed.digest)),
            };
            Ok((
                serde_json::to_value(&body).map_err(ApiError::internal)?,
                signed.digest.to_vec(),
            ))
        }
        Action::Transaction(tx) => {
            let signed = state.signer.sign_transaction(tx.clone(), proof).await?;
            let body = SignedTxResponse {
                raw: format!("0x{}", hex::encode(&signed.raw)),
                hash: format!("0x{}", hex::encode(signed.hash)),
                address: signed.from.to_checksum(),
            };
            Ok((
                serde_json::to_value(&body).map_err(ApiError::internal)?,
                signed.raw,
            ))
        }
        Action::Sr25519(message) => {
            let signed = state
                .signer
                .sign_sr25519(who.path.clone(), message.clone(), proof)
                .await?;
            let body = Sr25519Response {
                signature: format!("0x{}", hex::encode(signed.signature)),
                public: format!("0x{}", hex::encode(signed.public)),
                ss58: sr25519::ss58(&signed.public, sr25519::GENERIC_SUBSTRATE),
            };
            Ok((
                serde_json::to_value(&body).map_err(ApiError::internal)?,
                message.clone(),
            ))
        }
    }
}

/// A signing route's answer: the signature, or 202 with the approval it waits for.
#[derive(Debug)]
pub enum Signed {
    /// 200 with the route's body.
    Done(Value),
    /// 202 `{status: "approval_required", approval_id, expires_at}`.
    Pending(super::approvals::PendingView),
}

impl axum::response::IntoResponse for Signed {
    fn into_response(self) -> axum::response::Response {
        match self {
            Signed::Done(v) => Json(v).into_response(),
            Signed::Pending(p) => (axum::http::StatusCode::ACCEPTED, Json(p)).into_response(),
        }
    }
}

/// Everything a signing route does after parsing: scope, policy (deny, approval, or allow),
/// the signature, and its audit row with the spend counted in one transaction.
async fn sign_route(
    state: &AppState,
    auth: &mut Authenticated,
    route: Route,
    body: Value,
) -> Result<Signed, ApiError> {
    let who = Signatory {
        omni: auth.omni,
        master: auth.master,
        path: auth.claims.agentkeys.path.clone(),
    };
    let prepared = prepare(state, &who, route, body)?;
    let proof = auth.signing_proof(&prepared.scope)?;
    let origin = Origin::from(&*auth);
    let effective = auth.policies.clone();
    let evaluation = evaluate(&effective, &prepared.op, false);
    match &evaluation.verdict {
        Verdict::Allowed => {}
        Verdict::Denied { owner, rule } => {
            return Err(super::policy::deny(state, &who, origin, &prepared, *owner, rule).await);
        }
        Verdict::Approval { owner, ttl_seconds } => {
            super::policy::precheck(state, &who, &origin, &prepared, &effective, &evaluation)
                .await?;
            let pending =
                super::approvals::request(state, &who, origin, &prepared, *owner, *ttl_seconds)
                    .await?;
            return Ok(Signed::Pending(pending));
        }
    }
    // The audit row will follow (or go with) the signature: batches wait for it (bounded).
    let announced = state.ledger.announce();
    let chain = auth.guard.chain().to_vec();
    let role = auth.role();
    let (who, prepared, chain) = (&who, &prepared, &chain);
    let record = |signed: Vec<u8>| async move {
        super::policy::record(
            state,
            who,
            role,
            origin,
            prepared,
            &signed,
            effective,
            evaluation,
            chain,
            Some(announced),
        )
        .await
    };
    match prepared.detail_before_signing() {
        // The row names the message itself and the signer is not behind: the row commits while
        // the signer signs, and the reply waits for both (docs/architecture.md, "The audit row
        // beside the signature").
        Some(message) if state.signer.starts_now() => {
            let message = message.to_vec();
            let (signature, recorded) =
                tokio::join!(execute(state, who, prepared, proof), record(message));
            recorded?;
            Ok(Signed::Done(signature?.0))
        }
        _ => {
            let (response, signed) = execute(state, who, prepared, proof).await?;
            record(signed).await?;
            Ok(Signed::Done(response))
        }
    }
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

/// Which wallet signs an EIP-191 message: the caller's own (`None`), or, for a master created
/// by an email or OpenID login, its anchor wallet (`Some(identity)`; the signer checks the
/// anchor belongs to the proof's master).
fn anchor_identity(
    state: &AppState,
    who: &Signatory,
    wallet: Option<&str>,
) -> Result<Option<(String, String)>, ApiError> {
    match wallet {
        None | Some("actor") => Ok(None),
        Some("anchor") => match state.ledger.identity_of(&who.master)? {
            Some(identity) if identity.0 != "evm" && who.omni == who.master => Ok(Some(identity)),
            _ => Err(ApiError::new(
                ErrorCode::InvalidRequest,
                "only a master created by an email or OpenID login has an anchor wallet to sign with",
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
        (status = 202, description = "approval_required: a policy threshold needs a person; poll GET /v1/approvals/{id}", body = super::approvals::PendingView),
        (status = 400, description = "invalid_request: not exactly one of message and message_hex; a SIWE message for this gateway", body = super::openapi::ErrorEnvelope),
        (status = 401, description = "invalid_token, invalid_dpop_proof, actor_revoked, binding_revoked", body = super::openapi::ErrorEnvelope),
        (status = 403, description = "scope_denied, policy_denied (with rule), budget_exceeded (with the budget)", body = super::openapi::ErrorEnvelope),
        (status = 429, description = "rate_limited (also a policy's rate limit), with Retry-After", body = super::openapi::ErrorEnvelope),
        (status = 503, description = "busy, actor_unavailable, signer_unavailable", body = super::openapi::ErrorEnvelope),
        (status = 500, description = "internal", body = super::openapi::ErrorEnvelope)))]
pub async fn eip191(
    State(state): State<AppState>,
    mut auth: Authenticated,
    ApiJson(body): ApiJson<Eip191Request>,
) -> Result<Signed, ApiError> {
    let body = serde_json::to_value(body).map_err(ApiError::internal)?;
    sign_route(&state, &mut auth, Route::Eip191, body).await
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
        (status = 202, description = "approval_required: a policy threshold needs a person; poll GET /v1/approvals/{id}", body = super::approvals::PendingView),
        (status = 400, description = "invalid_request, invalid_typed_data", body = super::openapi::ErrorEnvelope),
        (status = 401, description = "invalid_token, invalid_dpop_proof, actor_revoked, binding_revoked", body = super::openapi::ErrorEnvelope),
        (status = 403, description = "scope_denied, policy_denied (with rule), budget_exceeded (with the budget)", body = super::openapi::ErrorEnvelope),
        (status = 429, description = "rate_limited (also a policy's rate limit), with Retry-After", body = super::openapi::ErrorEnvelope),
        (status = 503, description = "busy, actor_unavailable, signer_unavailable", body = super::openapi::ErrorEnvelope),
        (status = 500, description = "internal", body = super::openapi::ErrorEnvelope)))]
pub async fn eip712(
    State(state): State<AppState>,
    mut auth: Authenticated,
    ApiJson(body): ApiJson<Eip712Request>,
) -> Result<Signed, ApiError> {
    let body = serde_json::to_value(body).map_err(ApiError::internal)?;
    sign_route(&state, &mut auth, Route::Eip712, body).await
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
        (status = 202, description = "approval_required: a policy threshold needs a person; poll GET /v1/approvals/{id}", body = super::approvals::PendingView),
        (status = 400, description = "invalid_request", body = super::openapi::ErrorEnvelope),
        (status = 401, description = "invalid_token, invalid_dpop_proof, actor_revoked, binding_revoked", body = super::openapi::ErrorEnvelope),
        (status = 403, description = "scope_denied, policy_denied (with rule), budget_exceeded (with the budget)", body = super::openapi::ErrorEnvelope),
        (status = 429, description = "rate_limited (also a policy's rate limit), with Retry-After", body = super::openapi::ErrorEnvelope),
        (status = 503, description = "busy, actor_unavailable, signer_unavailable", body = super::openapi::ErrorEnvelope),
        (status = 500, description = "internal", body = super::openapi::ErrorEnvelope)))]
pub async fn transaction(
    State(state): State<AppState>,
    mut auth: Authenticated,
    ApiJson(body): ApiJson<TxSignRequest>,
) -> Result<Signed, ApiError> {
    let body = serde_json::to_value(body).map_err(ApiError::internal)?;
    sign_route(&state, &mut auth, Route::Transaction, body).await
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
        (status = 202, description = "approval_required: a policy threshold needs a person; poll GET /v1/approvals/{id}", body = super::approvals::PendingView),
        (status = 400, description = "invalid_request", body = super::openapi::ErrorEnvelope),
        (status = 401, description = "invalid_token, invalid_dpop_proof, actor_revoked, binding_revoked", body = super::openapi::ErrorEnvelope),
        (status = 403, description = "scope_denied, policy_denied (with rule), budget_exceeded (with the budget)", body = super::openapi::ErrorEnvelope),
        (status = 429, description = "rate_limited (also a policy's rate limit), with Retry-After", body = super::openapi::ErrorEnvelope),
        (status = 503, description = "busy, actor_unavailable, signer_unavailable", body = super::openapi::ErrorEnvelope),
        (status = 500, description = "internal", body = super::openapi::ErrorEnvelope)))]
pub async fn sr25519(
    State(state): State<AppState>,
    mut auth: Authenticated,
    ApiJson(body): ApiJson<Sr25519Request>,
) -> Result<Signed, ApiError> {
    let body = serde_json::to_value(body).map_err(ApiError::internal)?;
    sign_route(&state, &mut auth, Route::Sr25519, body).await
}
