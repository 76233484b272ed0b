//! Approvals (docs/policies.md): a signing request above a policy's threshold waits for a
//! person. The requester gets 202 with the approval's id and polls it; deciders — strict
//! ancestors of the policy's owner holding `approvals:decide` (the operator, for a master's own
//! policy) — list, approve or deny. Approving re-checks scopes, policies and budgets at that
//! moment, signs, and counts the spend in the decision's own transaction.

use std::time::Duration;

use agentkeys_actors::ledger::approvals::{
    self, ApprovalError, ApprovalRecord, ApprovalStatus, DecideApproval, Decision, RequestApproval,
    SpendSummary,
};
use agentkeys_actors::ledger::audit::AuditEntry;
use agentkeys_actors::ledger::{RecordSigned, SpendCheck};
use agentkeys_actors::policy::{Verdict, evaluate};
use agentkeys_actors::principal::Authorize;
use agentkeys_actors::scope;
use agentkeys_runtime::store::{Origin, WriteError};
use agentkeys_runtime::{Omni, Timestamp};
use axum::Json;
use axum::extract::State;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::AppState;
use super::actors::time;
use super::error::{ApiError, ErrorCode};
use super::extract::{ApiPath, ApiQuery, Authenticated};
use super::sign::{Prepared, Route, Signatory};
use crate::auth::session::Role;

/// The 202 answer of a signing route whose request waits for a person.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct PendingView {
    /// `approval_required`.
    pub status: String,
    /// Poll `GET /v1/approvals/{approval_id}` with the same key.
    pub approval_id: String,
    /// When it expires unless decided.
    pub expires_at: String,
}

/// An approval as the API shows it.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ApprovalView {
    /// The id.
    pub id: String,
    /// `pending`, `approved`, `denied`, `expired` or `cancelled`.
    pub status: String,
    /// The agent whose request waits.
    pub agent: String,
    /// The actor whose policy asked for a person.
    pub policy_owner: String,
    /// The signing route.
    pub route: String,
    /// What it spends (`asset`, `chain`, `amount`).
    #[schema(value_type = Vec<Object>)]
    pub spends: Vec<SpendSummary>,
    /// The recipient or spender, if known.
    pub recipient: Option<String>,
    /// When it was asked.
    pub created_at: String,
    /// When it expires.
    pub expires_at: String,
    /// Who decided (an omni or `operator`).
    pub decided_by: Option<String>,
    /// Exactly the body the signing route would have answered (approved; the requester only).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub result: Option<Value>,
}

fn ms(at: u64) -> String {
    time(Timestamp::from_millis(at))
}

/// The status now: expiry is read at each look; a requester revoked first cancels it.
fn status_now(state: &AppState, record: &ApprovalRecord) -> Result<ApprovalStatus, ApiError> {
    let status = record.status_at(state.clock.now());
    if status == ApprovalStatus::Pending {
        let live = state
            .runtime
            .lineage(&record.requester)?
            .is_some_and(|l| matches!(l.status(), agentkeys_runtime::store::Status::Active));
        if !live {
            return Ok(ApprovalStatus::Cancelled);
        }
    }
    Ok(status)
}

/// The view of `record` (`with_result`: for its requester).
pub fn view(
    state: &AppState,
    record: &ApprovalRecord,
    with_result: bool,
) -> Result<ApprovalView, ApiError> {
    Ok(ApprovalView {
        id: record.id.clone(),
        status: status_now(state, record)?.as_str().into(),
        agent: record.requester.to_string(),
        policy_owner: record.owner.to_string(),
        route: record.route.clone(),
        spends: record.spends.clone(),
        recipient: record.recipient.clone(),
        created_at: ms(record.created_at),
        expires_at: ms(record.expires_at),
        decided_by: record.decided_by.clone(),
        result: if with_result {
            record.result.clone()
        } else {
            None
        },
    })
}

/// Stores a pending approval for `prepared` (held by `owner`'s policy) and answers the 202.
pub async fn request(
    state: &AppState,
    who: &Signatory,
    origin: Origin,
    prepared: &Prepared,
    owner: Omni,
    ttl_seconds: u64,
) -> Result<PendingView, ApiError> {
    if prepared.body.to_string().len() > approvals::MAX_APPROVAL_BODY {
        return Err(ApiError::new(
            ErrorCode::InvalidRequest,
            "a request that needs approval is kept until decided; its body must be at most 64 KiB",
        ));
    }
    let mut id = [0u8; 16];
    aws_lc_rs::rand::fill(&mut id).map_err(|_| ApiError::internal("random generator failed"))?;
    let now = state.clock.now();
    let record = ApprovalRecord {
        id: hex::encode(id),
        master: who.master,
        requester: who.omni,
        owner,
        route: prepared.route.path().into(),
        body: prepared.body.clone(),
        status: ApprovalStatus::Pending,
        created_at: now.as_millis(),
        expires_at: now.as_millis() + ttl_seconds * 1000,
        decided_by: None,
        decided_at: None,
        result: None,
        spends: prepared.op.spends.iter().map(SpendSummary::from).collect(),
        recipient: prepared
            .op
            .recipient
            .map(|a| agentkeys_actors::crypto::wallet::Address(a).to_checksum()),
    };
    let record = state
        .ledger
        .request_approval(RequestApproval {
            record,
            origin,
            at: now,
        })
        .await?;
    state.notifier.notify(crate::notify::Notice {
        master: record.master,
        event: "approval_requested",
        approval: serde_json::to_value(view(state, &record, false)?).unwrap_or_default(),
    });
    Ok(PendingView {
        status: "approval_required".into(),
        approval_id: record.id,
        expires_at: ms(record.expires_at),
    })
}

impl From<WriteError<ApprovalError>> for ApiError {
    fn from(e: WriteError<ApprovalError>) -> Self {
        match e {
            WriteError::Rejected(ApprovalError::TooMany) => ApiError::new(
                ErrorCode::RateLimited,
                "this tree has too many requests waiting for approval; decide some first",
            )
            .retry_after(Duration::from_secs(60)),
            WriteError::Rejected(ApprovalError::NotFound) => super::authz::not_found(),
            WriteError::Rejected(ApprovalError::NotPending(status)) => ApiError::new(
                ErrorCode::ApprovalNotPending,
                format!("the approval is {}", status.as_str()),
            )
            .with_fields(json!({"status": status.as_str()})),
            WriteError::Rejected(ApprovalError::PolicyChanged) => ApiError::new(
                ErrorCode::Busy,
                "a policy of this tree changed while the approval was checked; retry",
            ),
            WriteError::Store(e) => e.into(),
        }
    }
}

/// Who decides.
#[derive(Debug, Clone, Copy)]
pub enum Decider {
    /// The host operator (a master's own policy).
    Operator,
    /// An actor.
    Actor(Omni),
}

/// Whether `decider` may decide `record`: a strict ancestor of the policy's owner (the
/// operator for anything; actors never for a master's own policy, nor for their own).
pub fn may_decide(
    state: &AppState,
    decider: Decider,
    record: &ApprovalRecord,
) -> Result<bool, ApiError> {
    match decider {
        Decider::Operator => Ok(true),
        Decider::Actor(me) => {
            if me == record.owner {
                return Ok(false);
            }
            Ok(state
                .runtime
                .lineage(&record.owner)?
                .is_some_and(|l| l.omnis().contains(&me)))
        }
    }
}

fn load(state: &AppState, id: &str) -> Result<ApprovalRecord, ApiError> {
    let key = approvals::parse_id(id).ok_or_else(super::authz::not_found)?;
    state
        .ledger
        .approval(&key)?
        .ok_or_else(super::authz::not_found)
}

/// Decides `id` as `decider` (after [`may_decide`]). Approving signs for the requester.
pub async fn decide(
    state: &AppState,
    id: &str,
    decider: Decider,
    origin: Origin,
    approve: bool,
) -> Result<ApprovalRecord, ApiError> {
    let record = load(state, id)?;
    let key = approvals::parse_id(id).ok_or_else(super::authz::not_found)?;
    let decided_by = match decider {
        Decider::Operator => "operator".to_owned(),
        Decider::Actor(o) => o.to_string(),
    };
    let now = state.clock.now();
    if !approve {
        let decided = state
            .ledger
            .decide_approval(DecideApproval {
                id: key,
                decided_by,
                origin,
                approve: None,
                at: now,
            })
            .await?;
        return match decided {
            Decision::Decided(r) => Ok(r),
            Decision::Refused(r) => Err(super::policy::refusal(r)),
        };
    }
    let status = status_now(state, &record)?;
    if status != ApprovalStatus::Pending {
        return Err(WriteError::Rejected(ApprovalError::NotPending(status)).into());
    }
    let lineage = state
        .runtime
        .lineage(&record.requester)?
        .ok_or_else(super::authz::not_found)?;
    let role = Role::of(lineage.actor().kind);
    let check = state
        .principal(role, record.requester, Authorize)
        .await?
        .map_err(|e| match e {
            agentkeys_runtime::CallError::Revoked { .. } => {
                WriteError::Rejected(ApprovalError::NotPending(ApprovalStatus::Cancelled)).into()
            }
            other => ApiError::from(other),
        })?;
    let who = Signatory {
        omni: record.requester,
        master: record.master,
        path: check.record.path.clone(),
    };
    let route: Route =
        serde_json::from_value(Value::String(record.route.clone())).map_err(ApiError::internal)?;
    let mut prepared = super::sign::prepare(state, &who, route, record.body.clone())?;
    prepared.approved = true;
    if let Some(scopes) = &check.scopes
        && !scopes.contains(&prepared.scope)
    {
        return Err(ApiError::new(
            ErrorCode::ScopeDenied,
            format!(
                "the agent's effective scopes no longer include {}",
                prepared.scope
            ),
        ));
    }
    let chain = check.guard.chain().to_vec();
    let mut effective = check.policies.clone();
    let mut evaluation = evaluate(&effective, &prepared.op, true);
    if let Verdict::Denied { owner, rule } = &evaluation.verdict {
        return Err(super::policy::deny(state, &who, origin, &prepared, *owner, rule).await);
    }
    let (result, signed) = super::sign::execute(state, &who, &prepared, check.proof).await?;
    let detail = agentkeys_actors::ledger::audit::detail_hash(&signed);
    for _ in 0..4 {
        let mut entry = AuditEntry::done(
            record.master,
            origin.clone(),
            prepared.route_code(),
            record.requester,
            detail,
            now,
        );
        entry.spend = prepared.op.spends.clone();
        let signed = RecordSigned {
            entry,
            check: Some(SpendCheck::of(&effective, &evaluation, detail)),
        };
        let outcome = state
            .ledger
            .decide_approval(DecideApproval {
                id: key,
                decided_by: decided_by.clone(),
                origin: origin.clone(),
                approve: Some((signed, result.clone())),
                at: now,
            })
            .await;
        match outcome {
            Ok(Decision::Decided(r)) => return Ok(r),
            Ok(Decision::Refused(r)) => return Err(super::policy::refusal(r)),
            Err(WriteError::Rejected(ApprovalError::PolicyChanged)) => {
                state.ledger.refresh_policies(&chain)?;
                effective = std::sync::Arc::new(state.ledger.policies().effective(&chain));
                evaluation = evaluate(&effective, &prepared.op, true);
                if evaluation.verdict != Verdict::Allowed {
                    break;
                }
            }
            Err(e) => return Err(e.into()),
        }
    }
    Err(ApiError::new(
        ErrorCode::Busy,
        "a policy of this tree changed while the approval was checked; retry",
    ))
}

/// `?state=`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
pub struct ListQuery {
    /// `pending` (the only state listed).
    pub state: Option<String>,
}

/// A page of approvals.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ApprovalList {
    /// What the caller may decide, oldest first.
    pub approvals: Vec<ApprovalView>,
}

/// The pending approvals the caller may decide.
#[utoipa::path(get, path = "/v1/approvals", tag = "approvals",
    params(
        ListQuery,
        ("Authorization" = String, Header, description = "DPoP <session_jwt>"),
        ("DPoP" = String, Header, description = "a proof with ath")),
    responses(
        (status = 200, description = "pending approvals", body = ApprovalList),
        (status = 400, description = "invalid_request: state other than pending", body = super::openapi::ErrorEnvelope),
        (status = 401, description = "invalid_token, invalid_dpop_proof, actor_revoked, binding_revoked", body = super::openapi::ErrorEnvelope),
        (status = 503, description = "busy", body = super::openapi::ErrorEnvelope),
        (status = 500, description = "internal", body = super::openapi::ErrorEnvelope)))]
pub async fn list(
    State(state): State<AppState>,
    auth: Authenticated,
    ApiQuery(query): ApiQuery<ListQuery>,
) -> Result<Json<ApprovalList>, ApiError> {
    if query.state.as_deref().is_some_and(|s| s != "pending") {
        return Err(ApiError::new(
            ErrorCode::InvalidRequest,
            "only state=pending is listed; fetch a decided approval by its id",
        ));
    }
    let mut approvals = Vec::new();
    if auth.require_scope(scope::APPROVALS_DECIDE).is_ok() {
        for record in state.ledger.pending_approvals(&auth.master)? {
            if may_decide(&state, Decider::Actor(auth.omni), &record)?
                && status_now(&state, &record)? == ApprovalStatus::Pending
            {
                approvals.push(view(&state, &record, false)?);
            }
        }
    }
    Ok(Json(ApprovalList { approvals }))
}

/// One approval: for its requester (with the result once approved) or a decider.
#[utoipa::path(get, path = "/v1/approvals/{id}", tag = "approvals",
    params(
        ("id" = String, Path, description = "the approval"),
        ("Authorization" = String, Header, description = "DPoP <session_jwt>"),
        ("DPoP" = String, Header, description = "a proof with ath")),
    responses(
        (status = 200, description = "the approval", body = ApprovalView),
        (status = 401, description = "invalid_token, invalid_dpop_proof, actor_revoked, binding_revoked", body = super::openapi::ErrorEnvelope),
        (status = 404, description = "not_found (also someone else's)", body = super::openapi::ErrorEnvelope),
        (status = 503, description = "busy", body = super::openapi::ErrorEnvelope),
        (status = 500, description = "internal", body = super::openapi::ErrorEnvelope)))]
pub async fn show(
    State(state): State<AppState>,
    auth: Authenticated,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<ApprovalView>, ApiError> {
    let record = load(&state, &id)?;
    if record.requester == auth.omni {
        return Ok(Json(view(&state, &record, true)?));
    }
    if record.master == auth.master
        && auth.require_scope(scope::APPROVALS_DECIDE).is_ok()
        && may_decide(&state, Decider::Actor(auth.omni), &record)?
    {
        return Ok(Json(view(&state, &record, false)?));
    }
    Err(super::authz::not_found())
}

async fn decide_route(
    state: &AppState,
    auth: &Authenticated,
    id: &str,
    approve: bool,
) -> Result<Json<ApprovalView>, ApiError> {
    let record = load(state, id)?;
    if record.master != auth.master {
        return Err(super::authz::not_found());
    }
    if record.requester == auth.omni || !may_decide(state, Decider::Actor(auth.omni), &record)? {
        return Err(ApiError::new(
            ErrorCode::ScopeDenied,
            "only a strict ancestor of the actor whose policy asked may decide this approval",
        ));
    }
    auth.require_scope(scope::APPROVALS_DECIDE)?;
    let decided = decide(
        state,
        id,
        Decider::Actor(auth.omni),
        Origin::from(auth),
        approve,
    )
    .await?;
    Ok(Json(view(state, &decided, false)?))
}

/// Approves: re-checks scopes, policies and budgets now, signs for the requester, counts the
/// spend; the requester fetches the result.
#[utoipa::path(post, path = "/v1/approvals/{id}/approve", tag = "approvals",
    params(
        ("id" = String, Path, description = "the approval"),
        ("Authorization" = String, Header, description = "DPoP <session_jwt>"),
        ("DPoP" = String, Header, description = "a proof with ath")),
    responses(
        (status = 200, description = "approved", body = ApprovalView),
        (status = 401, description = "invalid_token, invalid_dpop_proof, actor_revoked, binding_revoked", body = super::openapi::ErrorEnvelope),
        (status = 403, description = "scope_denied (not a decider), policy_denied, budget_exceeded", body = super::openapi::ErrorEnvelope),
        (status = 404, description = "not_found", body = super::openapi::ErrorEnvelope),
        (status = 409, description = "approval_not_pending (with status)", body = super::openapi::ErrorEnvelope),
        (status = 429, description = "rate_limited (a policy's rate limit)", body = super::openapi::ErrorEnvelope),
        (status = 503, description = "busy", body = super::openapi::ErrorEnvelope),
        (status = 500, description = "internal", body = super::openapi::ErrorEnvelope)))]
pub async fn approve(
    State(state): State<AppState>,
    auth: Authenticated,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<ApprovalView>, ApiError> {
    decide_route(&state, &auth, &id, true).await
}

/// Denies.
#[utoipa::path(post, path = "/v1/approvals/{id}/deny", tag = "approvals",
    params(
        ("id" = String, Path, description = "the approval"),
        ("Authorization" = String, Header, description = "DPoP <session_jwt>"),
        ("DPoP" = String, Header, description = "a proof with ath")),
    responses(
        (status = 200, description = "denied", body = ApprovalView),
        (status = 401, description = "invalid_token, invalid_dpop_proof, actor_revoked, binding_revoked", body = super::openapi::ErrorEnvelope),
        (status = 403, description = "scope_denied (not a decider)", body = super::openapi::ErrorEnvelope),
        (status = 404, description = "not_found", body = super::openapi::ErrorEnvelope),
        (status = 409, description = "approval_not_pending (with status)", body = super::openapi::ErrorEnvelope),
        (status = 503, description = "busy", body = super::openapi::ErrorEnvelope),
        (status = 500, description = "internal", body = super::openapi::ErrorEnvelope)))]
pub async fn deny(
    State(state): State<AppState>,
    auth: Authenticated,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<ApprovalView>, ApiError> {
    decide_route(&state, &auth, &id, false).await
}

/// `PUT /v1/approvals/webhook` body.
#[derive(Debug, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct WebhookRequest {
    /// `https://…` (`http://` only in dev mode); `null` removes the webhook.
    pub url: Option<String>,
}

/// The webhook as set, with its key (shown this once).
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct WebhookView {
    /// The URL (`null`: removed).
    pub url: Option<String>,
    /// The key version (each set rotates the key).
    pub version: u64,
    /// The HMAC-SHA256 key, hex: `agentkeys-signature: v1=<hex HMAC of "<timestamp>.<body>">`.
    /// Shown once; set the webhook again to rotate it.
    pub secret: Option<String>,
}

/// Longest webhook URL.
pub const MAX_WEBHOOK_URL: usize = 2048;

/// Sets the master's approval webhook (masters only): events are POSTed there, signed, when
/// nobody watches the master's event stream.
#[utoipa::path(put, path = "/v1/approvals/webhook", tag = "approvals",
    params(
        ("Authorization" = String, Header, description = "DPoP <session_jwt>"),
        ("DPoP" = String, Header, description = "a proof with ath")),
    request_body = WebhookRequest,
    responses(
        (status = 200, description = "set; the key is shown once", body = WebhookView),
        (status = 400, description = "invalid_request: not an https URL", body = super::openapi::ErrorEnvelope),
        (status = 401, description = "invalid_token, invalid_dpop_proof, actor_revoked, binding_revoked", body = super::openapi::ErrorEnvelope),
        (status = 403, description = "scope_denied: not a master", body = super::openapi::ErrorEnvelope),
        (status = 503, description = "busy", body = super::openapi::ErrorEnvelope),
        (status = 500, description = "internal", body = super::openapi::ErrorEnvelope)))]
pub async fn webhook(
    State(state): State<AppState>,
    auth: Authenticated,
    super::extract::ApiJson(body): super::extract::ApiJson<WebhookRequest>,
) -> Result<Json<WebhookView>, ApiError> {
    if auth.omni != auth.master {
        return Err(ApiError::new(
            ErrorCode::ScopeDenied,
            "only a master sets its approval webhook",
        ));
    }
    if let Some(url) = &body.url {
        let parsed = reqwest::Url::parse(url)
            .ok()
            .filter(|_| url.len() <= MAX_WEBHOOK_URL);
        let ok = parsed.is_some_and(|u| {
            u.host_str().is_some()
                && u.username().is_empty()
                && u.password().is_none()
                && (u.scheme() == "https" || (u.scheme() == "http" && state.dev_mode))
        });
        if !ok {
            return Err(ApiError::new(
                ErrorCode::InvalidRequest,
                "the webhook must be an https URL without credentials (http only in dev mode), at most 2048 bytes",
            ));
        }
    }
    let version = state
        .ledger
        .set_webhook(approvals::SetWebhook {
            master: auth.master,
            url: body.url.clone().unwrap_or_default(),
            origin: Origin::from(&auth),
            at: state.clock.now(),
        })
        .await
        .map_err(|e| match e {
            WriteError::Store(e) => ApiError::from(e),
            WriteError::Rejected(never) => match never {},
        })?;
    let secret = match &body.url {
        Some(_) => Some(hex::encode(
            state
                .signer
                .webhook_secret(auth.master, version)
                .await?
                .as_ref(),
        )),
        None => None,
    };
    Ok(Json(WebhookView {
        url: body.url,
        version,
        secret,
    }))
}
