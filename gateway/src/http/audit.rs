//! `GET /v1/audit`: the audit rows of the caller's subtree (a master: its whole chain; an
//! agent: rows whose target is itself or a descendant), oldest first, paged by chain position.

use std::collections::HashMap;

use agentkeys_actors::crypto::rfc3339;
use agentkeys_actors::ledger::audit::{op, outcome};
use agentkeys_actors::ledger::{AuditRow, ChainHead};
use agentkeys_runtime::Omni;
use axum::Json;
use axum::extract::State;
use serde::{Deserialize, Serialize};

use super::AppState;
use super::authz::target;
use super::error::ApiError;
use super::extract::{ApiQuery, Authenticated};

/// `?actor=&after=&limit=`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
pub struct AuditQuery {
    /// Only rows whose target is this actor (in the caller's subtree).
    pub actor: Option<String>,
    /// Rows after this chain position (the `next_after` of the previous page).
    pub after: Option<u64>,
    /// Rows per page (default 100, at most 1000).
    pub limit: Option<usize>,
}

/// One row.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct AuditRowView {
    /// Global sequence (also the event id of the event stream).
    pub seq: u64,
    /// Position in the master's chain.
    pub chain_seq: u64,
    /// RFC 3339.
    pub at: String,
    /// Who acted (`null`: the host admin or the system).
    pub actor: Option<String>,
    /// The stable operation code.
    pub op: u16,
    /// Its name.
    pub operation: String,
    /// The actor acted upon.
    pub target: Option<String>,
    /// `ok` or `refused`.
    pub outcome: String,
    /// The request id.
    pub request_id: String,
    /// SHA-256 of the message, token or key concerned (`0x` + hex; zeros if none).
    pub detail: String,
    /// The row's chain hash.
    pub hash: String,
    /// What a signature spent (`asset`, `chain`, `amount`); absent when nothing.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schema(value_type = Vec<Object>)]
    pub spend: Vec<agentkeys_actors::ledger::approvals::SpendSummary>,
}

/// A page of rows.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct AuditPage {
    /// The chain.
    pub master_omni: String,
    /// Rows, oldest first.
    pub rows: Vec<AuditRowView>,
    /// Pass as `after` for the next page; absent at the end of the chain.
    pub next_after: Option<u64>,
}

/// The name of an operation code.
pub fn operation_name(code: u16) -> &'static str {
    match code {
        op::ACTOR_CREATE => "actor_create",
        op::ACTOR_REVOKE => "actor_revoke",
        op::SCOPES_SET => "scopes_set",
        op::LOGIN => "login",
        op::SESSION_REFRESH => "session_refresh",
        op::SIGN_EIP191 => "sign_eip191",
        op::SIGN_EIP712 => "sign_eip712",
        op::SIGN_TX => "sign_tx",
        op::SIGN_SR25519 => "sign_sr25519",
        op::OIDC_TOKEN => "oidc_token",
        op::LINK_CODE_ISSUE => "link_code_issue",
        op::LINK_CODE_REDEEM => "link_code_redeem",
        op::LINK_CODE_REUSE => "link_code_reuse",
        op::DEVICE_ADD => "device_add",
        op::DEVICE_REVOKE => "device_revoke",
        op::QUARANTINE => "quarantine",
        op::QUARANTINE_LIFTED => "quarantine_lifted",
        op::POLICY_SET => "policy_set",
        op::POLICY_REMOVE => "policy_remove",
        op::POLICY_DENIED => "policy_denied",
        op::BUDGET_EXCEEDED => "budget_exceeded",
        op::RATE_LIMITED => "rate_limited",
        op::APPROVAL_REQUESTED => "approval_requested",
        op::APPROVAL_APPROVED => "approval_approved",
        op::APPROVAL_DENIED => "approval_denied",
        op::APPROVAL_WEBHOOK_SET => "approval_webhook_set",
        op::IDENTITY_LINK => "identity_link",
        op::IDENTITY_UNLINK => "identity_unlink",
        op::CRED_SET => "cred_set",
        op::CRED_DELETE => "cred_delete",
        op::CRED_READ => "cred_read",
        _ => "unknown",
    }
}

/// The API view of a row.
pub fn row_view(row: &AuditRow) -> AuditRowView {
    let e = &row.entry;
    AuditRowView {
        seq: row.seq,
        chain_seq: row.chain_seq,
        at: rfc3339::format(i64::try_from(e.at.as_millis()).unwrap_or(i64::MAX)),
        actor: e.origin.actor.as_ref().map(Omni::to_string),
        op: e.op,
        operation: operation_name(e.op).into(),
        target: e.target.as_ref().map(Omni::to_string),
        outcome: if e.outcome == outcome::OK {
            "ok"
        } else {
            "refused"
        }
        .into(),
        request_id: e.origin.request_id.clone(),
        detail: format!("0x{}", hex::encode(e.detail)),
        hash: format!("0x{}", hex::encode(row.hash)),
        spend: e
            .spend
            .iter()
            .map(agentkeys_actors::ledger::approvals::SpendSummary::from)
            .collect(),
    }
}

/// Audit rows of the caller's subtree.
#[utoipa::path(get, path = "/v1/audit", tag = "audit",
    params(
        AuditQuery,
        ("Authorization" = String, Header, description = "DPoP <session_jwt>"),
        ("DPoP" = String, Header, description = "a proof with ath")),
    responses(
        (status = 200, description = "a page", body = AuditPage),
        (status = 401, description = "invalid_token, invalid_dpop_proof, actor_revoked, binding_revoked", body = super::openapi::ErrorEnvelope),
        (status = 404, description = "not_found: actor outside the caller's subtree", body = super::openapi::ErrorEnvelope),
        (status = 503, description = "busy", body = super::openapi::ErrorEnvelope),
        (status = 500, description = "internal", body = super::openapi::ErrorEnvelope)))]
pub async fn list(
    State(state): State<AppState>,
    auth: Authenticated,
    ApiQuery(query): ApiQuery<AuditQuery>,
) -> Result<Json<AuditPage>, ApiError> {
    let only = match &query.actor {
        Some(omni) => Some(target(&state, &auth, omni)?.omni),
        None => None,
    };
    let limit = query.limit.unwrap_or(100).clamp(1, 1000);
    let mut after = query.after.unwrap_or(0);
    let store = &state.ledger;
    let mut in_subtree: HashMap<Omni, bool> = HashMap::new();
    let mut rows = Vec::new();
    let mut end = false;
    // Scan forward in batches until the page is full or the chain ends.
    while rows.len() < limit && !end {
        let batch = store.audit_rows(&auth.master, after, 1000)?;
        end = batch.len() < 1000;
        for row in batch {
            after = row.chain_seq;
            let target = row.entry.target;
            let visible = match (only, target) {
                (Some(only), Some(t)) => t == only,
                (Some(_), None) => false,
                (None, _) if auth.omni == auth.master => true,
                (None, Some(t)) => *match in_subtree.get(&t) {
                    Some(known) => known,
                    None => {
                        let inside = state
                            .runtime
                            .lineage(&t)?
                            .is_some_and(|l| l.omnis().contains(&auth.omni));
                        in_subtree.entry(t).or_insert(inside)
                    }
                },
                (None, None) => false,
            };
            if visible {
                rows.push(row_view(&row));
                if rows.len() == limit {
                    end = false;
                    break;
                }
            }
        }
    }
    let next_after = (rows.len() == limit).then_some(after);
    Ok(Json(AuditPage {
        master_omni: auth.master.to_string(),
        rows,
        next_after,
    }))
}

/// The caller's master's audit chain head and the audit keys that sign heads.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct AuditHead {
    /// The master whose chain it is.
    pub master: String,
    /// Rows in the chain up to the signed head (its last row's `chain_seq`): the chain's end
    /// when the request came (a head waiting for its signature is signed first); 0 with no
    /// row yet.
    pub length: u64,
    /// That row's hash (`0x` + hex).
    pub hash: String,
    /// That row's global sequence.
    pub seq: u64,
    /// The audit key that signed the head; empty with no row yet.
    pub kid: String,
    /// ES256 `r ‖ s` (`0x` + hex) over `message`; empty while unsigned.
    pub signature: String,
    /// The signed bytes (`0x` + hex): `"agentkeys-audit-head-v1" ‖ master ‖ u64 BE length ‖
    /// hash ‖ u64 BE seq`.
    pub message: String,
    /// The audit public keys (JWK, ES256): verify `signature` with the one named by `kid`.
    #[schema(value_type = Vec<Object>)]
    pub keys: Vec<serde_json::Value>,
}

/// The head of the caller's master's audit chain, signed by the audit key, with the audit
/// public keys: a client verifies the signature, then that the rows it shows hash forward to
/// `hash` (each row's `hash` is `SHA-256(previous hash ‖ its encoding)`; docs/audit.md).
#[utoipa::path(get, path = "/v1/audit/head", tag = "audit",
    params(
        ("Authorization" = String, Header, description = "DPoP <session_jwt>"),
        ("DPoP" = String, Header, description = "a proof with ath")),
    responses(
        (status = 200, description = "the head and the keys", body = AuditHead),
        (status = 401, description = "invalid_token, invalid_dpop_proof, actor_revoked, binding_revoked", body = super::openapi::ErrorEnvelope),
        (status = 503, description = "busy", body = super::openapi::ErrorEnvelope),
        (status = 500, description = "internal", body = super::openapi::ErrorEnvelope)))]
pub async fn head(
    State(state): State<AppState>,
    auth: Authenticated,
) -> Result<Json<AuditHead>, ApiError> {
    let keys = state
        .signer
        .public_jwks(agentkeys_actors::signer::KeySetName::Audit);
    let read = || -> Result<ChainHead, ApiError> {
        Ok(state
            .ledger
            .audit_head(&auth.master)?
            .unwrap_or_else(|| ChainHead::empty(auth.master)))
    };
    let mut head = read()?;
    if head.length > 0 && !head.is_signed() {
        // Its signature is on its way (or was never made): sign and store it now.
        state
            .ledger
            .settle_audit_heads(Some(auth.master))
            .await
            .map_err(|e| match e {
                agentkeys_runtime::store::WriteError::Store(e) => ApiError::from(e),
                agentkeys_runtime::store::WriteError::Rejected(never) => match never {},
            })?;
        head = read()?;
    }
    // The signed state (the end, unless rows arrived after the settling).
    let signed = head.signed_state();
    let hex = |bytes: &[u8]| {
        if bytes.is_empty() {
            String::new()
        } else {
            format!("0x{}", hex::encode(bytes))
        }
    };
    Ok(Json(AuditHead {
        master: auth.master.to_string(),
        length: signed.length,
        hash: format!("0x{}", hex::encode(signed.hash)),
        seq: signed.seq,
        kid: head.kid.clone(),
        signature: hex(&head.signature),
        message: hex(&head.signed_message()),
        keys,
    }))
}
