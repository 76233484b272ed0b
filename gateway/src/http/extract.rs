//! Extractors whose rejections use the error envelope (axum's own answer text/plain).

use axum::extract::rejection::JsonRejection;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use serde::de::DeserializeOwned;

use super::AppState;
use super::error::{ApiError, ErrorCode};
use agentkeys_actors::principal::{CheckSession, SessionError, SessionView};
use agentkeys_runtime::store::{ActorRecord, Origin};
use std::collections::BTreeSet;

use agentkeys_runtime::{LineageGuard, LiveProof, Omni};

use super::pending::Requester;
use crate::auth::dpop::{DpopError, ProofRequest, VerifiedProof};
use crate::auth::replay::Partition;
use crate::auth::session::{Role, SessionClaims};

/// A JSON body (`Content-Type: application/json`, at most 1 MiB).
#[derive(Debug)]
pub struct ApiJson<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        match axum::Json::<T>::from_request(req, state).await {
            Ok(axum::Json(value)) => Ok(Self(value)),
            Err(JsonRejection::MissingJsonContentType(_)) => Err(ApiError::new(
                ErrorCode::UnsupportedMediaType,
                "send the body as JSON with Content-Type: application/json",
            )),
            Err(JsonRejection::BytesRejection(e))
                if e.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE =>
            {
                Err(ApiError::new(
                    ErrorCode::PayloadTooLarge,
                    "the body is larger than 1 MiB",
                ))
            }
            Err(JsonRejection::JsonDataError(e)) => {
                Err(ApiError::new(ErrorCode::InvalidRequest, e.body_text()))
            }
            Err(JsonRejection::JsonSyntaxError(_)) => Err(ApiError::new(
                ErrorCode::InvalidRequest,
                "the body is not valid JSON",
            )),
            Err(e) => Err(ApiError::new(ErrorCode::InvalidRequest, e.body_text())),
        }
    }
}

/// Path parameters; a malformed one is `invalid_request` in the envelope.
#[derive(Debug)]
pub struct ApiPath<T>(pub T);

impl<T: DeserializeOwned + Send, S: Send + Sync> FromRequestParts<S> for ApiPath<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        axum::extract::Path::<T>::from_request_parts(parts, state)
            .await
            .map(|axum::extract::Path(value)| Self(value))
            .map_err(|e| ApiError::new(ErrorCode::InvalidRequest, e.body_text()))
    }
}

/// Query parameters; a malformed one is `invalid_request` in the envelope.
#[derive(Debug)]
pub struct ApiQuery<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for ApiQuery<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        axum::extract::Query::<T>::from_request_parts(parts, state)
            .await
            .map(|axum::extract::Query(value)| Self(value))
            .map_err(|e| ApiError::new(ErrorCode::InvalidRequest, e.body_text()))
    }
}

/// A verified DPoP proof on a request without an access token (login, redeem, pairing): the
/// key that starts a flow must be the key that finishes it. Recorded against the client's
/// address, after the address's rate limit (the middleware).
#[derive(Debug)]
pub struct TokenlessDpop(pub VerifiedProof, pub Requester);

impl FromRequestParts<AppState> for TokenlessDpop {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let proof = verify_proof(parts, state, None, false)?;
        let ip = parts
            .extensions
            .get::<super::ratelimit::ClientIp>()
            .map_or(std::net::IpAddr::from([0, 0, 0, 0]), |c| c.0);
        let limits = &state.limits;
        let quota = state.dpop.quota(limits.ip_rate_per_second, limits.ip_burst);
        let now = state.now_seconds();
        state
            .dpop
            .record(
                &proof,
                Partition::Address(super::ratelimit::client_key(ip)),
                quota,
                now,
            )
            .map_err(|e| dpop_error(e, state, now))?;
        let partition = Partition::Address(super::ratelimit::client_key(ip));
        record_shared(state, None, &proof, partition).await?;
        let by = Requester {
            ip,
            jkt: proof.jkt.clone(),
        };
        Ok(Self(proof, by))
    }
}

/// After the token is verified: the proof must be by the token's key (`cnf.jkt`); then the
/// binding's rate limit; only then is the proof recorded, against the binding. So a junk token
/// records nothing, and one binding cannot use the room of another.
pub fn bind_and_record(
    state: &AppState,
    proof: &VerifiedProof,
    claims: &SessionClaims,
) -> Result<(), ApiError> {
    if !constant_time_eq(proof.jkt.as_bytes(), claims.cnf.jkt.as_bytes()) {
        return Err(ApiError::new(
            ErrorCode::InvalidDpopProof,
            "the DPoP proof is signed by a key other than the one this token is bound to",
        ));
    }
    let now_ms = state.clock.now().as_millis();
    if let Err(wait) = state.rate_limits.bindings.take(claims.bid, now_ms) {
        return Err(ApiError::new(
            ErrorCode::RateLimited,
            "this device sent more requests than binding_rate_per_second allows; wait and retry",
        )
        .retry_after(wait));
    }
    let limits = &state.limits;
    let quota = state
        .dpop
        .quota(limits.binding_rate_per_second, limits.binding_burst);
    let now = state.now_seconds();
    state
        .dpop
        .record(proof, Partition::Binding(claims.bid), quota, now)
        .map_err(|e| dpop_error(e, state, now))
}

/// With every node of a PostgreSQL deployment active: records `proof` where every node sees it
/// (a proof replayed to another node is refused) and answers `master`'s change epoch. 0 on a
/// single node (its replay cache is the only one).
pub async fn record_shared(
    state: &AppState,
    master: Option<&agentkeys_runtime::Omni>,
    proof: &VerifiedProof,
    partition: Partition,
) -> Result<u64, ApiError> {
    let Some(cluster) = &state.cluster else {
        return Ok(0);
    };
    let limits = &state.limits;
    let (key, rate, burst) = match partition {
        Partition::Binding(bid) => (
            format!("b:{bid}"),
            limits.binding_rate_per_second,
            limits.binding_burst,
        ),
        Partition::Address(ip) => (
            format!("ip:{ip}"),
            limits.ip_rate_per_second,
            limits.ip_burst,
        ),
    };
    let bucket = agentkeys_pg::Bucket {
        key,
        rate: rate as f64,
        burst: burst as f64,
        now_ms: i64::try_from(state.clock.now().as_millis()).unwrap_or(i64::MAX),
    };
    cluster
        .admit(master, proof, state.dpop.replay_entry(proof), bucket)
        .await
}

/// Verifies the request's single DPoP header against the method, `public_url` + path, the
/// access token (`ath`) and, when required, a server nonce.
pub fn verify_proof(
    parts: &Parts,
    state: &AppState,
    access_token: Option<&str>,
    require_nonce: bool,
) -> Result<VerifiedProof, ApiError> {
    let mut values = parts.headers.get_all("dpop").iter();
    let (Some(value), None) = (values.next(), values.next()) else {
        return Err(ApiError::new(
            ErrorCode::InvalidDpopProof,
            "send exactly one DPoP header with a proof by your device key",
        ));
    };
    let proof = value
        .to_str()
        .map_err(|_| ApiError::new(ErrorCode::InvalidDpopProof, "the DPoP header is not ASCII"))?;
    let now = state.now_seconds();
    let request = ProofRequest {
        method: parts.method.as_str(),
        public_url: &state.public_url,
        path: parts.uri.path(),
        access_token,
        require_nonce,
        now,
    };
    state
        .dpop
        .verify(proof, &request)
        .map_err(|e| dpop_error(e, state, now))
}

/// The token of `Authorization: DPoP <token>` (a `Bearer` token is refused: sessions are
/// bound to a device key).
pub fn dpop_token(parts: &Parts) -> Result<String, ApiError> {
    let missing = || {
        ApiError::new(
            ErrorCode::InvalidToken,
            "send the session as Authorization: DPoP <session_jwt>; log in first if you have none",
        )
    };
    let mut values = parts
        .headers
        .get_all(axum::http::header::AUTHORIZATION)
        .iter();
    let (Some(value), None) = (values.next(), values.next()) else {
        return Err(missing());
    };
    let value = value.to_str().map_err(|_| missing())?;
    let (scheme, token) = value.split_once(' ').ok_or_else(missing)?;
    if !scheme.eq_ignore_ascii_case("dpop") || token.is_empty() || token.contains(' ') {
        return Err(missing());
    }
    Ok(token.to_string())
}

/// A request with a live, device-bound session: the DPoP proof (with `ath`) by the key named
/// in the token's `cnf.jkt`, a valid K1 token, a live binding and a live lineage.
#[derive(Debug)]
pub struct Authenticated {
    /// The verified claims.
    pub claims: SessionClaims,
    /// The actor's omni.
    pub omni: Omni,
    /// The master's omni.
    pub master: Omni,
    /// The actor's record as its actor holds it.
    pub record: ActorRecord,
    /// The lineage check's proof, until a signing route takes it.
    live: Option<LiveProof>,
    /// For the re-check just before a reply.
    pub guard: LineageGuard,
    /// Effective scopes at the check (`None`: a master, every scope).
    pub scopes: Option<BTreeSet<String>>,
    /// The policies on the lineage at the check.
    pub policies: std::sync::Arc<agentkeys_actors::policy::Effective>,
}

impl Authenticated {
    /// Master or agent.
    pub fn role(&self) -> Role {
        self.claims.agentkeys.role
    }

    /// `scope_denied` unless the caller's effective scopes include `scope` (masters hold all).
    pub fn require_scope(&self, scope: &str) -> Result<(), ApiError> {
        match &self.scopes {
            Some(scopes) if !scopes.contains(scope) => Err(ApiError::new(
                ErrorCode::ScopeDenied,
                format!("this actor's effective scopes lack {scope}; ask an ancestor to grant it"),
            )),
            _ => Ok(()),
        }
    }

    /// Checks `scope` and hands out the lineage proof the signer takes (once per request).
    pub fn signing_proof(&mut self, scope: &str) -> Result<LiveProof, ApiError> {
        self.require_scope(scope)?;
        match self.live.take() {
            Some(proof) => Ok(proof),
            None => Ok(self.guard.check()?),
        }
    }
}

impl From<&Authenticated> for Origin {
    /// The caller and the current request, for the audit row of a change it asks for.
    fn from(auth: &Authenticated) -> Self {
        Origin {
            actor: Some(auth.omni),
            request_id: super::request_id::current().unwrap_or_default(),
        }
    }
}

impl FromRequestParts<AppState> for Authenticated {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let token = dpop_token(parts)?;
        let proof = verify_proof(parts, state, Some(&token), false)?;
        let claims = state
            .sessions
            .verify(&token, state.now_seconds())
            .map_err(|e| ApiError::new(ErrorCode::InvalidToken, e.to_string()))?;
        bind_and_record(state, &proof, &claims)?;
        authorize(state, claims, &proof).await
    }
}

/// The actor's own checks, after [`bind_and_record`]: role, binding and lineage. With every
/// node of a PostgreSQL deployment active, first the one statement to the database: the proof
/// recorded for every node, the master's change epoch read (the check loads again whatever
/// was loaded at an older one).
async fn authorize(
    state: &AppState,
    claims: SessionClaims,
    proof: &VerifiedProof,
) -> Result<Authenticated, ApiError> {
    let invalid =
        |e: crate::auth::session::TokenError| ApiError::new(ErrorCode::InvalidToken, e.to_string());
    let omni = claims.omni().map_err(invalid)?;
    let master = claims.master().map_err(invalid)?;
    let role = claims.agentkeys.role;
    if (role == Role::Master) != (omni == master) {
        return Err(ApiError::new(
            ErrorCode::InvalidToken,
            "the token's role does not match its actor",
        ));
    }
    let min_epoch =
        record_shared(state, Some(&master), proof, Partition::Binding(claims.bid)).await?;
    let msg = CheckSession {
        bid: claims.bid,
        jkt: claims.cnf.jkt.clone(),
        min_epoch,
    };
    // The actor's published view answers when it can (no mailbox round trip); else the actor.
    let view = match role {
        Role::Master => state.masters.view::<SessionView>(&omni),
        Role::Agent => state.agents.view::<SessionView>(&omni),
    };
    let check = match view.and_then(|v| v.check(&msg, &state.ledger)) {
        Some(answer) => answer,
        None => state.principal(role, omni, msg).await?,
    };
    let check = check.map_err(|e| match e {
        SessionError::BindingRevoked => ApiError::new(
            ErrorCode::BindingRevoked,
            "this device's binding was deleted; link the device again",
        ),
        SessionError::WrongKey => ApiError::new(
            ErrorCode::InvalidToken,
            "the token's binding belongs to another device key",
        ),
        SessionError::Call(e) => e.into(),
    })?;
    Ok(Authenticated {
        claims,
        omni,
        master,
        record: check.record,
        live: Some(check.proof),
        guard: check.guard,
        scopes: check.scopes,
        policies: check.policies,
    })
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    use subtle::ConstantTimeEq;
    a.len() == b.len() && bool::from(a.ct_eq(b))
}

/// Maps a DPoP failure to its code (a nonce demand carries a fresh nonce).
pub fn dpop_error(e: DpopError, state: &AppState, now: i64) -> ApiError {
    match e {
        DpopError::UseNonce => ApiError::new(ErrorCode::UseDpopNonce, e.to_string())
            .with_dpop_nonce(state.dpop.nonce(now)),
        DpopError::TooMany { retry_after } => ApiError::new(ErrorCode::RateLimited, e.to_string())
            .retry_after(std::time::Duration::from_secs(retry_after.unsigned_abs())),
        other => ApiError::new(ErrorCode::InvalidDpopProof, other.to_string()),
    }
}
