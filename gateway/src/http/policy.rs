//! Policies over HTTP (docs/policies.md): set, remove and show an actor's policy, check a
//! request without signing, and the parts of a signing route that apply policies — the audited
//! refusal, and the signature's record with its spend (evaluated again if a policy changed in
//! between).

use std::sync::Arc;
use std::time::Duration;

use agentkeys_actors::ledger::audit::{self, AuditEntry, op};
use agentkeys_actors::ledger::{
    BudgetState, PolicyWriteError, SetPolicy, Setter, SpendCheck, SpendRefusal,
};
use agentkeys_actors::policy::{Effective, Evaluation, Policy, StoredPolicy, Verdict, evaluate};
use agentkeys_actors::principal::{PrincipalError, RecordAction};
use agentkeys_actors::scope;
use agentkeys_runtime::Omni;
use agentkeys_runtime::store::{Announced, Origin, WriteError};
use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::AppState;
use super::actors::time;
use super::authz::{ancestor_only, target};
use super::error::{ApiError, ErrorCode};
use super::extract::{ApiJson, ApiPath, Authenticated};
use super::sign::{Prepared, Route, Signatory};
use crate::auth::session::Role;

/// One budget or rate limit as the API shows it.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct BudgetView {
    /// The actor whose policy holds it.
    pub owner: String,
    /// `native`, a token address, or `signatures` for a rate limit.
    pub asset: String,
    /// The chain (0 for a rate limit).
    pub chain: u64,
    /// The rolling window.
    pub window_seconds: u64,
    /// The limit (decimal, base units).
    pub max: String,
    /// Counted in the window now.
    pub spent: String,
    /// What is left.
    pub remaining: String,
    /// When the oldest counted spend leaves the window (`null`: nothing counted).
    pub frees_at: Option<String>,
}

impl From<&BudgetState> for BudgetView {
    fn from(b: &BudgetState) -> Self {
        BudgetView {
            owner: b.owner.to_string(),
            asset: b.asset.map_or_else(|| "signatures".into(), |a| a.name()),
            chain: b.chain,
            window_seconds: b.window_seconds,
            max: b.max.to_string(),
            spent: b.spent.to_string(),
            remaining: b.remaining.to_string(),
            frees_at: b.frees_at.map(time),
        }
    }
}

/// The API error of a refusal by the counters.
pub fn refusal(refusal: SpendRefusal) -> ApiError {
    match refusal {
        SpendRefusal::Budget(b) => {
            let view = BudgetView::from(&b);
            ApiError::new(
                ErrorCode::BudgetExceeded,
                format!(
                    "this would exceed the {} budget of {} on chain {} ({} s window); {} remains",
                    view.asset, view.owner, view.chain, view.window_seconds, view.remaining
                ),
            )
            .with_fields(json!({
                "owner": view.owner, "asset": view.asset, "chain": view.chain,
                "window_seconds": view.window_seconds, "remaining": view.remaining,
                "frees_at": view.frees_at,
            }))
        }
        SpendRefusal::Rate(b) => {
            let view = BudgetView::from(&b);
            let wait_ms = b.frees_at.map_or(b.window_seconds * 1000, |free| {
                free.as_millis().saturating_sub(b.at.as_millis())
            });
            ApiError::new(
                ErrorCode::RateLimited,
                format!(
                    "the policy of {} allows {} signatures per {} s in its subtree",
                    view.owner, view.max, view.window_seconds
                ),
            )
            .with_fields(json!({"owner": view.owner, "window_seconds": view.window_seconds, "frees_at": view.frees_at}))
            .retry_after(Duration::from_millis(wait_ms.saturating_add(999)))
        }
    }
}

/// Which budget or rate limit `evaluation` would break, given their `states` now (the writer
/// decides for real; this is the read-only look of the check route and of a request about to
/// wait for a person).
pub fn over_limits(states: &[BudgetState], evaluation: &Evaluation) -> Option<SpendRefusal> {
    for c in evaluation.charges.iter().filter(|c| c.amount > 0) {
        let state = states.iter().find(|b| {
            b.owner == c.owner
                && b.asset == Some(c.budget.asset)
                && b.chain == c.budget.chain
                && b.window_seconds == c.budget.window_seconds
        });
        if let Some(b) = state
            && b.spent.saturating_add(c.amount) > b.max
        {
            return Some(SpendRefusal::Budget(*b));
        }
    }
    states
        .iter()
        .find(|b| b.asset.is_none() && b.spent >= b.max)
        .map(|b| SpendRefusal::Rate(*b))
}

/// Refuses a request that waits for a person when a budget or rate limit would refuse it
/// anyway (audited like the writer's refusals).
pub async fn precheck(
    state: &AppState,
    who: &Signatory,
    origin: &Origin,
    prepared: &Prepared,
    effective: &Effective,
    evaluation: &Evaluation,
) -> Result<(), ApiError> {
    let states = state.ledger.budgets(effective, state.clock.now())?;
    let Some(over) = over_limits(&states, evaluation) else {
        return Ok(());
    };
    let code = match over {
        SpendRefusal::Budget(_) => op::BUDGET_EXCEEDED,
        SpendRefusal::Rate(_) => op::RATE_LIMITED,
    };
    let row = AuditEntry::refused(
        who.master,
        origin.clone(),
        code,
        who.omni,
        prepared.digest(),
        state.clock.now(),
    );
    audit_row(state, row).await?;
    Err(refusal(over))
}

async fn audit_row(state: &AppState, row: AuditEntry) -> Result<(), ApiError> {
    state.ledger.append_audit(row).await.map_err(|e| match e {
        WriteError::Store(e) => ApiError::from(e),
        WriteError::Rejected(never) => match never {},
    })?;
    Ok(())
}

/// Audits a policy refusal and answers its error.
pub async fn deny(
    state: &AppState,
    who: &Signatory,
    origin: Origin,
    prepared: &Prepared,
    owner: Omni,
    rule: &str,
) -> ApiError {
    let row = AuditEntry::refused(
        who.master,
        origin,
        op::POLICY_DENIED,
        who.omni,
        prepared.digest(),
        state.clock.now(),
    );
    if let Err(e) = audit_row(state, row).await {
        return e;
    }
    ApiError::new(
        ErrorCode::PolicyDenied,
        format!("the policy of {owner} does not allow this ({rule})"),
    )
    .with_fields(json!({"rule": rule, "owner": owner.to_string()}))
}

/// Has the signatory's actor record the signature with its spend; if a policy of the tree
/// changed since `evaluation`, evaluates again with the new policies (a request they no
/// longer allow is refused with `busy`, so its retry gets the new answer).
#[allow(clippy::too_many_arguments)]
pub async fn record(
    state: &AppState,
    who: &Signatory,
    role: Role,
    origin: Origin,
    prepared: &Prepared,
    signed: &[u8],
    mut effective: Arc<Effective>,
    mut evaluation: Evaluation,
    chain: &[Omni],
    announced: Option<Announced>,
) -> Result<(), ApiError> {
    let detail = audit::detail_hash(signed);
    for _ in 0..4 {
        let check = SpendCheck::of(&effective, &evaluation, detail);
        let msg = RecordAction {
            op: prepared.route_code(),
            detail,
            origin: origin.clone(),
            spend: prepared.op.spends.clone(),
            check: Some(check),
            announced: announced.clone(),
        };
        match state.record_action(role, who.omni, msg).await {
            Ok(()) => return Ok(()),
            Err(PrincipalError::PolicyChanged) => {
                state.ledger.refresh_policies(chain)?;
                effective = Arc::new(state.ledger.policies().effective(chain));
                evaluation = evaluate(&effective, &prepared.op, prepared.approved);
                if evaluation.verdict != Verdict::Allowed {
                    break;
                }
            }
            Err(e) => return Err(e.into()),
        }
    }
    Err(ApiError::new(
        ErrorCode::Busy,
        "a policy of this tree changed while the request was checked; retry",
    ))
}

/// `GET /v1/actors/{omni}/policy`.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct PolicyView {
    /// The actor's own policy (`null`: none).
    #[schema(value_type = Option<Object>)]
    pub policy: Option<Value>,
    /// Who set it: an omni, `operator`, or `null`.
    pub set_by: Option<String>,
    /// The policies of its ancestors, root first (each applies too).
    pub inherited: Vec<InheritedView>,
    /// Every budget and rate limit on the lineage, now.
    pub budgets: Vec<BudgetView>,
}

/// An ancestor's policy.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct InheritedView {
    /// The ancestor.
    pub owner: String,
    /// Who set it.
    pub set_by: String,
    /// The document.
    #[schema(value_type = Object)]
    pub policy: Value,
}

fn setter_name(set_by: Option<Omni>) -> String {
    set_by.map_or_else(|| "operator".into(), |o| o.to_string())
}

fn document(stored: &StoredPolicy) -> Value {
    serde_json::to_value(&stored.policy.document).unwrap_or(Value::Null)
}

/// The view of `omni`'s policies (its lineage `chain`, root first).
pub fn view(state: &AppState, chain: &[Omni]) -> Result<PolicyView, ApiError> {
    let effective = state.ledger.policies().effective(chain);
    let omni = chain.last().copied();
    let own = effective
        .policies
        .iter()
        .find(|(o, _)| Some(*o) == omni)
        .map(|(_, p)| p.clone());
    let budgets = state.ledger.budgets(&effective, state.clock.now())?;
    Ok(PolicyView {
        policy: own.as_deref().map(document),
        set_by: own.as_ref().map(|p| setter_name(p.set_by)),
        inherited: effective
            .policies
            .iter()
            .filter(|(o, _)| Some(*o) != omni)
            .map(|(o, p)| InheritedView {
                owner: o.to_string(),
                set_by: setter_name(p.set_by),
                policy: document(p),
            })
            .collect(),
        budgets: budgets.iter().map(BudgetView::from).collect(),
    })
}

impl From<WriteError<PolicyWriteError>> for ApiError {
    fn from(e: WriteError<PolicyWriteError>) -> Self {
        match e {
            WriteError::Rejected(PolicyWriteError::NotFound) => super::authz::not_found(),
            WriteError::Rejected(PolicyWriteError::Revoked { .. }) => ApiError::new(
                ErrorCode::ActorRevoked,
                "this actor or one of its ancestors was revoked",
            ),
            WriteError::Rejected(e @ PolicyWriteError::NotAncestor) => {
                ApiError::new(ErrorCode::ScopeDenied, e.to_string())
            }
            WriteError::Rejected(PolicyWriteError::SetAbove { set_by }) => ApiError::new(
                ErrorCode::ScopeDenied,
                "this policy was set by an ancestor of yours; only it or one above it may change it",
            )
            .with_fields(json!({"set_by": setter_name(set_by)})),
            WriteError::Store(e) => e.into(),
        }
    }
}

/// Parses a policy body (`invalid_policy` names the field).
pub fn parse(body: &[u8]) -> Result<Policy, ApiError> {
    Policy::from_json(body).map_err(|e| ApiError::new(ErrorCode::InvalidPolicy, e.to_string()))
}

async fn change(
    state: &AppState,
    auth: &Authenticated,
    omni: &str,
    policy: Option<Policy>,
) -> Result<Json<PolicyView>, ApiError> {
    let target = target(state, auth, omni)?;
    ancestor_only(&target, "set the policy of")?;
    auth.require_scope(scope::POLICY_SET)?;
    state
        .ledger
        .set_policy(SetPolicy {
            target: target.omni,
            policy,
            by: Setter::Actor(auth.omni),
            origin: Origin::from(auth),
            at: state.clock.now(),
        })
        .await?;
    Ok(Json(view(state, &target.lineage.omnis())?))
}

/// Sets the policy of an actor (a strict ancestor holding `policy:set`; a policy set higher
/// up only by its setter or above).
#[utoipa::path(put, path = "/v1/actors/{omni}/policy", tag = "policies",
    params(
        ("omni" = String, Path, description = "the actor"),
        ("Authorization" = String, Header, description = "DPoP <session_jwt>"),
        ("DPoP" = String, Header, description = "a proof with ath")),
    request_body(content = Object, description = "the policy document (docs/policies.md)"),
    responses(
        (status = 200, description = "the actor's policies now", body = PolicyView),
        (status = 400, description = "invalid_policy (names the field)", body = super::openapi::ErrorEnvelope),
        (status = 401, description = "invalid_token, invalid_dpop_proof, actor_revoked, binding_revoked", body = super::openapi::ErrorEnvelope),
        (status = 403, description = "scope_denied: not a strict ancestor, no policy:set, or set by an ancestor of the caller", body = super::openapi::ErrorEnvelope),
        (status = 404, description = "not_found (also other trees)", body = super::openapi::ErrorEnvelope),
        (status = 503, description = "busy", body = super::openapi::ErrorEnvelope),
        (status = 500, description = "internal", body = super::openapi::ErrorEnvelope)))]
pub async fn put(
    State(state): State<AppState>,
    auth: Authenticated,
    ApiPath(omni): ApiPath<String>,
    body: Bytes,
) -> Result<Json<PolicyView>, ApiError> {
    let policy = parse(&body)?;
    change(&state, &auth, &omni, Some(policy)).await
}

/// Removes the policy of an actor (same rules as setting it; idempotent).
#[utoipa::path(delete, path = "/v1/actors/{omni}/policy", tag = "policies",
    params(
        ("omni" = String, Path, description = "the actor"),
        ("Authorization" = String, Header, description = "DPoP <session_jwt>"),
        ("DPoP" = String, Header, description = "a proof with ath")),
    responses(
        (status = 200, description = "the actor's policies now", body = PolicyView),
        (status = 401, description = "invalid_token, invalid_dpop_proof, actor_revoked, binding_revoked", body = super::openapi::ErrorEnvelope),
        (status = 403, description = "scope_denied", body = super::openapi::ErrorEnvelope),
        (status = 404, description = "not_found (also other trees)", body = super::openapi::ErrorEnvelope),
        (status = 503, description = "busy", body = super::openapi::ErrorEnvelope),
        (status = 500, description = "internal", body = super::openapi::ErrorEnvelope)))]
pub async fn delete(
    State(state): State<AppState>,
    auth: Authenticated,
    ApiPath(omni): ApiPath<String>,
) -> Result<Json<PolicyView>, ApiError> {
    change(&state, &auth, &omni, None).await
}

/// The policy of an actor, those it inherits, and every budget on its lineage (the actor
/// itself or an ancestor).
#[utoipa::path(get, path = "/v1/actors/{omni}/policy", tag = "policies",
    params(
        ("omni" = String, Path, description = "the actor"),
        ("Authorization" = String, Header, description = "DPoP <session_jwt>"),
        ("DPoP" = String, Header, description = "a proof with ath")),
    responses(
        (status = 200, description = "the policies", body = PolicyView),
        (status = 401, description = "invalid_token, invalid_dpop_proof, actor_revoked, binding_revoked", body = super::openapi::ErrorEnvelope),
        (status = 404, description = "not_found (also other trees)", body = super::openapi::ErrorEnvelope),
        (status = 503, description = "busy", body = super::openapi::ErrorEnvelope),
        (status = 500, description = "internal", body = super::openapi::ErrorEnvelope)))]
pub async fn get(
    State(state): State<AppState>,
    auth: Authenticated,
    ApiPath(omni): ApiPath<String>,
) -> Result<Json<PolicyView>, ApiError> {
    let target = target(&state, &auth, &omni)?;
    Ok(Json(view(&state, &target.lineage.omnis())?))
}

/// `POST /v1/policy/check` body.
#[derive(Debug, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CheckRequest {
    /// The signing route.
    #[schema(value_type = String)]
    pub route: Route,
    /// Its body.
    #[schema(value_type = Object)]
    pub body: Value,
}

/// What a request would meet.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct CheckResponse {
    /// `allowed`, `denied` or `approval_required`.
    pub decision: String,
    /// The refusing rule (`scope`, `budgets`, `rate`, or a policy rule such as `tx.to`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rule: Option<String>,
    /// Every budget and rate limit on the lineage, now.
    pub budgets: Vec<BudgetView>,
}

/// Evaluates a signing request against the caller's scopes, policies and budgets without
/// signing or spending.
#[utoipa::path(post, path = "/v1/policy/check", tag = "policies",
    params(
        ("Authorization" = String, Header, description = "DPoP <session_jwt>"),
        ("DPoP" = String, Header, description = "a proof with ath")),
    request_body = CheckRequest,
    responses(
        (status = 200, description = "the decision", body = CheckResponse),
        (status = 400, description = "invalid_request: not a signing route or its body is malformed", body = super::openapi::ErrorEnvelope),
        (status = 401, description = "invalid_token, invalid_dpop_proof, actor_revoked, binding_revoked", body = super::openapi::ErrorEnvelope),
        (status = 503, description = "busy", body = super::openapi::ErrorEnvelope),
        (status = 500, description = "internal", body = super::openapi::ErrorEnvelope)))]
pub async fn check(
    State(state): State<AppState>,
    auth: Authenticated,
    ApiJson(request): ApiJson<CheckRequest>,
) -> Result<Json<CheckResponse>, ApiError> {
    let who = Signatory {
        omni: auth.omni,
        master: auth.master,
        path: auth.claims.agentkeys.path.clone(),
    };
    let prepared = super::sign::prepare(&state, &who, request.route, request.body)?;
    let evaluation = evaluate(&auth.policies, &prepared.op, false);
    let budgets = state.ledger.budgets(&auth.policies, state.clock.now())?;
    let over = evaluation.charges.iter().any(|c| {
        c.amount > 0
            && budgets.iter().any(|b| {
                b.owner == c.owner
                    && b.asset == Some(c.budget.asset)
                    && b.chain == c.budget.chain
                    && b.window_seconds == c.budget.window_seconds
                    && b.spent.saturating_add(c.amount) > b.max
            })
    });
    let rate_full = budgets
        .iter()
        .any(|b| b.asset.is_none() && b.spent >= b.max);
    let (decision, rule) = if auth.require_scope(&prepared.scope).is_err() {
        ("denied", Some("scope".to_owned()))
    } else {
        match evaluation.verdict {
            Verdict::Denied { rule, .. } => ("denied", Some(rule)),
            _ if over => ("denied", Some("budgets".to_owned())),
            _ if rate_full => ("denied", Some("rate".to_owned())),
            Verdict::Approval { .. } => ("approval_required", None),
            Verdict::Allowed => ("allowed", None),
        }
    };
    Ok(Json(CheckResponse {
        decision: decision.into(),
        rule,
        budgets: budgets.iter().map(BudgetView::from).collect(),
    }))
}
