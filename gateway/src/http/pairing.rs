//! Agent-initiated pairing (DESIGN §11): the agent's machine asks for a code, a human claims it
//! from a session, the agent polls with the same key and receives its session.
//!
//! 1. `POST /v1/pairing/request` (DPoP proof, no token): a 100-bit code (shown like a link
//!    code) and the device key's fingerprint, both displayed on the agent's machine. Pending
//!    requests live in memory (600 s, global cap).
//! 2. `POST /v1/pairing/claim {code, label, parent?, scopes?}` (session): the claimer sees the
//!    same fingerprint in the answer and can cross-check it with the agent's screen. The agent is
//!    created — or, when the label exists and is live, found — and the requester's key bound, in
//!    one transaction. A code is claimed once.
//!
//!    Or `POST /v1/actors/{omni}/devices {code, label?}` (session; `agentkeys device add`): the
//!    requester's key becomes another device of `omni` itself — the caller or a descendant,
//!    never an actor above the caller (how a browser's console joins an operator's actor).
//! 3. `POST /v1/pairing/poll {request_id}` (DPoP proof by the requesting key): `pending`, then
//!    `claimed` with the session.

use agentkeys_actors::crypto::rfc3339;
use agentkeys_actors::principal::{AddDevice, ChildCreated, CreateChild, NewDevice};
use agentkeys_actors::scope;
use agentkeys_runtime::Omni;
use agentkeys_runtime::store::Origin;
use axum::Json;
use axum::extract::State;
use base64::Engine;
use serde::{Deserialize, Serialize};

use super::AppState;
use super::authz::{not_found, target};
use super::error::{ApiError, ErrorCode};
use super::extract::{ApiJson, ApiPath, Authenticated, TokenlessDpop};
use super::links::{binding_label, code_hash, normalize};
use super::pending::{Expiring, PendingMap};
use super::session::{SessionResponse, issue};
use crate::auth::session::{NewSession, Role};

/// How long a pairing request may be claimed.
pub const PAIRING_TTL_SECONDS: i64 = 600;

/// Where a pairing request stands.
#[derive(Debug, Clone)]
pub enum Claim {
    /// Waiting for a claim.
    Pending,
    /// A claim is being written.
    Claiming,
    /// Claimed: the agent and the binding the session names.
    Claimed {
        /// The agent.
        omni: Omni,
        /// Its master.
        master: Omni,
        /// Its path.
        path: String,
        /// The binding.
        bid: u64,
    },
}

/// One pairing request.
#[derive(Debug, Clone)]
pub struct Request {
    jkt: String,
    expires_at: i64,
    claim: Claim,
}

/// Pending pairing requests, by request id and by code hash.
pub type Pairings = PendingMap<[u8; 32], Request>;

impl Expiring for Request {
    fn expires_at(&self) -> i64 {
        self.expires_at
    }
}

/// A pairing request as a shared database keeps it.
#[derive(Serialize, Deserialize)]
struct StoredRequest {
    jkt: String,
    expires_at: i64,
    /// `pending`, `claiming`, or the claim: omni, master, path, bid.
    claim: Option<(String, String, String, u64)>,
    claiming: bool,
}

impl super::pending::SharedEntry for Request {
    fn encode(&self) -> Result<Vec<u8>, ApiError> {
        let (claim, claiming) = match &self.claim {
            Claim::Pending => (None, false),
            Claim::Claiming => (None, true),
            Claim::Claimed {
                omni,
                master,
                path,
                bid,
            } => (
                Some((omni.to_string(), master.to_string(), path.clone(), *bid)),
                false,
            ),
        };
        serde_json::to_vec(&StoredRequest {
            jkt: self.jkt.clone(),
            expires_at: self.expires_at,
            claim,
            claiming,
        })
        .map_err(ApiError::internal)
    }

    fn decode(bytes: &[u8]) -> Option<Self> {
        let s: StoredRequest = serde_json::from_slice(bytes).ok()?;
        let claim = match (s.claim, s.claiming) {
            (Some((omni, master, path, bid)), _) => Claim::Claimed {
                omni: omni.parse().ok()?,
                master: master.parse().ok()?,
                path,
                bid,
            },
            (None, true) => Claim::Claiming,
            (None, false) => Claim::Pending,
        };
        Some(Request {
            jkt: s.jkt,
            expires_at: s.expires_at,
            claim,
        })
    }

    fn owner(&self) -> &str {
        &self.jkt
    }
}

/// A device key's fingerprint as people compare it: 64 bits of its RFC 7638 thumbprint, hex in
/// groups of four.
pub fn fingerprint(jkt: &str) -> String {
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(jkt)
        .unwrap_or_default();
    hex::encode(bytes.get(..8).unwrap_or_default())
        .as_bytes()
        .chunks(4)
        .map(|c| String::from_utf8_lossy(c).into_owned())
        .collect::<Vec<_>>()
        .join("-")
}

/// A started pairing, shown on the agent's machine.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct PairingStarted {
    /// Poll with it.
    pub request_id: String,
    /// Give it to the person who claims (100 bits, dashed groups).
    pub code: String,
    /// This device key's fingerprint: the claimer must see the same.
    pub fingerprint: String,
    /// RFC 3339.
    pub expires_at: String,
}

/// Starts a pairing from the agent's machine.
#[utoipa::path(post, path = "/v1/pairing/request", tag = "pairing",
    params(("DPoP" = String, Header, description = "a proof by the agent's device key")),
    responses(
        (status = 200, description = "the code and fingerprint to show", body = PairingStarted),
        (status = 401, description = "invalid_dpop_proof", body = super::openapi::ErrorEnvelope),
        (status = 429, description = "rate_limited", body = super::openapi::ErrorEnvelope),
        (status = 503, description = "busy", body = super::openapi::ErrorEnvelope),
        (status = 500, description = "internal", body = super::openapi::ErrorEnvelope)))]
pub async fn request(
    State(state): State<AppState>,
    TokenlessDpop(proof, by): TokenlessDpop,
) -> Result<Json<PairingStarted>, ApiError> {
    let now = state.now_seconds();
    let code = super::links::new_code()?;
    let mut id = [0u8; 16];
    aws_lc_rs::rand::fill(&mut id).map_err(|_| ApiError::internal("random generator failed"))?;
    let request_id = hex::encode(id);
    let expires_at = now + PAIRING_TTL_SECONDS;
    state
        .pairings
        .insert_shared(
            request_id.clone(),
            code_hash(&code),
            Request {
                jkt: proof.jkt.clone(),
                expires_at,
                claim: Claim::Pending,
            },
            &by,
            now,
        )
        .await?;
    Ok(Json(PairingStarted {
        request_id,
        code: super::links::dashed(&code),
        fingerprint: fingerprint(&proof.jkt),
        expires_at: rfc3339::format(expires_at * 1000),
    }))
}

/// `POST /v1/pairing/claim` body.
#[derive(Debug, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ClaimRequest {
    /// The code the agent's machine shows.
    pub code: String,
    /// The agent's label under the parent (an existing live label gets another binding).
    pub label: String,
    /// The parent (default: the caller).
    pub parent: Option<String>,
    /// Scopes for a new agent.
    #[serde(default)]
    pub scopes: Vec<String>,
}

/// A claimed pairing.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Claimed {
    /// The agent.
    pub omni: String,
    /// Its path.
    pub path: String,
    /// The requesting key's fingerprint: compare it with the agent's screen.
    pub fingerprint: String,
    /// The new binding.
    pub binding_id: u64,
    /// Whether the agent was created (else a binding was added to the existing label).
    pub created: bool,
}

/// Claims a pairing code: creates (or finds) the agent and binds the requesting key.
#[utoipa::path(post, path = "/v1/pairing/claim", tag = "pairing",
    params(
        ("Authorization" = String, Header, description = "DPoP <session_jwt>"),
        ("DPoP" = String, Header, description = "a proof with ath")),
    request_body = ClaimRequest,
    responses(
        (status = 200, description = "claimed", body = Claimed),
        (status = 400, description = "invalid_request, invalid_label", body = super::openapi::ErrorEnvelope),
        (status = 401, description = "invalid_token, invalid_dpop_proof, actor_revoked, binding_revoked", body = super::openapi::ErrorEnvelope),
        (status = 403, description = "scope_denied: actors:create missing", body = super::openapi::ErrorEnvelope),
        (status = 404, description = "not_found: unknown code, or a parent outside the caller's subtree", body = super::openapi::ErrorEnvelope),
        (status = 409, description = "link_code_used: already claimed; label_revoked", body = super::openapi::ErrorEnvelope),
        (status = 410, description = "expired", body = super::openapi::ErrorEnvelope),
        (status = 429, description = "rate_limited", body = super::openapi::ErrorEnvelope),
        (status = 503, description = "busy, signer_unavailable", body = super::openapi::ErrorEnvelope),
        (status = 500, description = "internal", body = super::openapi::ErrorEnvelope)))]
pub async fn claim(
    State(state): State<AppState>,
    auth: Authenticated,
    ApiJson(body): ApiJson<ClaimRequest>,
) -> Result<Json<Claimed>, ApiError> {
    let parent_text = body.parent.clone().unwrap_or_else(|| auth.omni.to_string());
    let parent = target(&state, &auth, &parent_text)?;
    auth.require_scope(scope::ACTORS_CREATE)?;
    let (label, scopes, origin) = (body.label, body.scopes, Origin::from(&auth));
    let role = Role::of(parent.kind());
    claim_code(state, &body.code, move |state, jkt| async move {
        let create = CreateChild {
            label,
            scopes,
            device: Some(NewDevice {
                jkt,
                label: "pairing".into(),
            }),
            origin,
        };
        state
            .principal(role, parent.omni, create)
            .await
            .map_err(ApiError::from)
            .and_then(|created| created.map_err(ApiError::from))
    })
    .await
}

/// `POST /v1/actors/{omni}/devices` body.
#[derive(Debug, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AddDeviceRequest {
    /// The code the new device shows (`POST /v1/pairing/request`).
    pub code: String,
    /// The binding's name for people (default `pairing`; 1 to 64 printable characters).
    pub label: Option<String>,
}

/// Claims a pairing code as another device of an actor: the requesting key is bound to the
/// actor itself (never to an actor above it), audited, listed and revocable like any device.
#[utoipa::path(post, path = "/v1/actors/{omni}/devices", tag = "devices",
    params(
        ("omni" = String, Path, description = "the actor (the caller or a descendant)"),
        ("Authorization" = String, Header, description = "DPoP <session_jwt>"),
        ("DPoP" = String, Header, description = "a proof with ath")),
    request_body = AddDeviceRequest,
    responses(
        (status = 200, description = "bound; compare the fingerprint with the device's screen", body = Claimed),
        (status = 400, description = "invalid_request", body = super::openapi::ErrorEnvelope),
        (status = 401, description = "invalid_token, invalid_dpop_proof, actor_revoked, binding_revoked", body = super::openapi::ErrorEnvelope),
        (status = 404, description = "not_found: unknown code, or an actor outside the caller's subtree", body = super::openapi::ErrorEnvelope),
        (status = 409, description = "link_code_used: already claimed", body = super::openapi::ErrorEnvelope),
        (status = 410, description = "expired", body = super::openapi::ErrorEnvelope),
        (status = 429, description = "rate_limited", body = super::openapi::ErrorEnvelope),
        (status = 503, description = "busy", body = super::openapi::ErrorEnvelope),
        (status = 500, description = "internal", body = super::openapi::ErrorEnvelope)))]
pub async fn add_device(
    State(state): State<AppState>,
    auth: Authenticated,
    ApiPath(omni): ApiPath<String>,
    ApiJson(body): ApiJson<AddDeviceRequest>,
) -> Result<Json<Claimed>, ApiError> {
    let target = target(&state, &auth, &omni)?;
    let label = binding_label(body.label, "pairing")?;
    let origin = Origin::from(&auth);
    let role = Role::of(target.kind());
    claim_code(state, &body.code, move |state, jkt| async move {
        let add = AddDevice {
            device: NewDevice { jkt, label },
            origin,
        };
        let bound = state.principal(role, target.omni, add).await??;
        Ok(ChildCreated {
            record: bound.record,
            master: bound.master,
            new: false,
            binding: Some(bound.binding),
        })
    })
    .await
}

/// Takes the pairing of `code` (one claim per code, on every node: a compare-and-set in a
/// shared database), binds its key with `bind`, and records the outcome; the pairing is pending
/// again if the binding fails.
async fn claim_code<F, Fut>(state: AppState, code: &str, bind: F) -> Result<Json<Claimed>, ApiError>
where
    F: FnOnce(AppState, String) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = Result<ChildCreated, ApiError>> + Send + 'static,
{
    let code = normalize(code)
        .ok_or_else(|| ApiError::new(ErrorCode::InvalidRequest, "not a pairing code"))?;
    let now = state.now_seconds();
    // Take the request (one claim per code, on every node: a compare-and-set in a shared
    // database); it is put back if the claim fails.
    let seen = state
        .pairings
        .pull(super::pending::Name::Key(&code_hash(&code)))
        .await?;
    let (request_id, request) = {
        let mut maps = state.pairings.lock();
        let id = maps
            .id_of(&code_hash(&code))
            .ok_or_else(|| ApiError::new(ErrorCode::NotFound, "no such pairing code"))?;
        let request = maps.get_mut(&id).ok_or_else(not_found)?;
        if request.expires_at <= now {
            return Err(ApiError::new(
                ErrorCode::Expired,
                "this pairing code expired",
            ));
        }
        if !matches!(request.claim, Claim::Pending) {
            return Err(ApiError::new(
                ErrorCode::LinkCodeUsed,
                "this pairing code was already claimed",
            ));
        }
        let copy = request.clone();
        request.claim = Claim::Claiming;
        (id, copy)
    };
    if !state.pairings.publish(&request_id, seen).await? {
        return Err(ApiError::new(
            ErrorCode::LinkCodeUsed,
            "this pairing code was already claimed",
        ));
    }
    // The claim and the pairing's state change together on a task of their own: a caller that
    // hangs up cannot leave the pairing `Claiming` with the binding committed.
    let claim = tokio::spawn(async move {
        let outcome = bind(state.clone(), request.jkt.clone()).await;
        let answer = settle(&state, &request_id, &request.jkt, outcome);
        if let Err(e) = state.pairings.publish(&request_id, None).await {
            tracing::warn!(
                cause = e.message(),
                "the pairing's outcome could not be shared with the other nodes"
            );
        }
        answer
    });
    claim
        .await
        .map_err(|_| ApiError::internal("the pairing claim task failed"))?
}

/// Records a claim's outcome in the pairing: claimed, or pending again after a failure.
fn settle(
    state: &AppState,
    request_id: &str,
    jkt: &str,
    outcome: Result<ChildCreated, ApiError>,
) -> Result<Json<Claimed>, ApiError> {
    let mut maps = state.pairings.lock();
    let Some(slot) = maps.get_mut(request_id) else {
        return Err(ApiError::new(ErrorCode::Expired, "this pairing expired"));
    };
    let created = match outcome {
        Ok(ChildCreated {
            binding: Some(binding),
            record,
            master,
            new,
        }) => (record, master, binding, new),
        Ok(_) => {
            slot.claim = Claim::Pending;
            return Err(ApiError::internal("the claim bound no device"));
        }
        Err(e) => {
            slot.claim = Claim::Pending;
            return Err(e);
        }
    };
    let (record, master, binding, new) = created;
    slot.claim = Claim::Claimed {
        omni: record.omni,
        master,
        path: record.path.clone(),
        bid: binding.bid,
    };
    Ok(Json(Claimed {
        omni: record.omni.to_string(),
        path: record.path,
        fingerprint: fingerprint(jkt),
        binding_id: binding.bid,
        created: new,
    }))
}

/// `POST /v1/pairing/poll` body.
#[derive(Debug, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PollRequest {
    /// From `pairing/request`.
    pub request_id: String,
}

/// The state of a pairing, for the key that asked.
#[derive(Debug, Serialize, Deserialize)]
pub struct PairingStatus {
    /// `pending` or `claimed`.
    pub status: String,
    /// The session, once claimed.
    #[serde(flatten)]
    pub session: Option<SessionResponse>,
}

super::openapi::status_or_session_schema!(PairingStatus, ["pending"], "claimed");

/// Polled by the requesting key: `pending`, then `claimed` with the agent's session.
#[utoipa::path(post, path = "/v1/pairing/poll", tag = "pairing",
    params(("DPoP" = String, Header, description = "a proof by the key that asked")),
    request_body = PollRequest,
    responses(
        (status = 200, description = "pending or claimed", body = PairingStatus),
        (status = 401, description = "invalid_dpop_proof", body = super::openapi::ErrorEnvelope),
        (status = 404, description = "not_found (also another key's request)", body = super::openapi::ErrorEnvelope),
        (status = 410, description = "expired", body = super::openapi::ErrorEnvelope),
        (status = 429, description = "rate_limited", body = super::openapi::ErrorEnvelope),
        (status = 503, description = "busy", body = super::openapi::ErrorEnvelope),
        (status = 500, description = "internal", body = super::openapi::ErrorEnvelope)))]
pub async fn poll(
    State(state): State<AppState>,
    TokenlessDpop(proof, _): TokenlessDpop,
    ApiJson(body): ApiJson<PollRequest>,
) -> Result<Json<PairingStatus>, ApiError> {
    let now = state.now_seconds();
    state
        .pairings
        .pull(super::pending::Name::Id(&body.request_id))
        .await?;
    let found = {
        let maps = state.pairings.lock();
        maps.get(&body.request_id)
            .filter(|r| r.jkt == proof.jkt)
            .map(|r| (r.claim.clone(), r.expires_at))
    };
    let Some((claim, expires_at)) = found else {
        return Err(ApiError::new(
            ErrorCode::NotFound,
            "no such pairing request",
        ));
    };
    match claim {
        Claim::Claimed {
            omni,
            master,
            path,
            bid,
        } if bid != 0 => {
            // A device added to a master (`POST /v1/actors/{omni}/devices`) acts as the master.
            let role = if omni == master {
                Role::Master
            } else {
                Role::Agent
            };
            let session = NewSession {
                omni,
                role,
                master,
                path,
                jkt: proof.jkt,
                bid,
            };
            Ok(Json(PairingStatus {
                status: "claimed".into(),
                session: Some(issue(&state, session).await?),
            }))
        }
        _ if expires_at <= now => Err(ApiError::new(
            ErrorCode::Expired,
            "this pairing expired; start again",
        )),
        _ => Ok(Json(PairingStatus {
            status: "pending".into(),
            session: None,
        })),
    }
}
