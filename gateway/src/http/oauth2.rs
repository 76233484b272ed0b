//! Login with an OpenID provider (Google or any other; docs/login.md).
//!
//! 1. The CLI calls `POST /v1/auth/oauth2/start {provider}` with a DPoP proof. The server keeps
//!    a pending request (TTL 600 s) bound to that key with a random `state` (only its SHA-256
//!    indexes it), `nonce` and PKCE verifier, and answers the provider's authorization URL and a
//!    confirm code; the CLI shows both.
//! 2. The provider redirects the browser to `GET /auth/oauth2/callback?code&state`. That GET only
//!    remembers the code and answers an interstitial page (like the email landing page) that
//!    shows who asked and asks for the confirm code: a link scanner consumes nothing, and a
//!    victim who completes a login someone else started cannot finish it without the code
//!    shown on the attacker's terminal.
//! 3. The page posts `{state, confirm_code}` to `POST /v1/auth/oauth2/confirm`. Only then is the
//!    code exchanged (PKCE, client secret) and the ID token validated; the login (or, in link
//!    mode, the link) is written, and `GET /v1/auth/oauth2/status/{request_id}`, polled by the
//!    same key, answers the session.

use agentkeys_actors::crypto::rfc3339;
use agentkeys_runtime::Omni;
use axum::Json;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::Response;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use super::AppState;
use super::confirm::{Confirm, Described, LoginStatus, Request, Stage, complete};
use super::error::{ApiError, ErrorCode};
use super::extract::{ApiJson, ApiPath, TokenlessDpop};
use super::pending::{PendingMap, Requester};
use crate::openid::OpenIdError;

/// How long a login may be completed.
pub const OAUTH2_TTL_SECONDS: i64 = 600;
/// Longest authorization code kept from a callback.
pub const MAX_CODE_LEN: usize = 4096;

/// What a pending provider login keeps.
#[derive(Clone)]
pub struct Flow {
    provider: String,
    nonce: String,
    verifier: Zeroizing<String>,
    /// The authorization code, once the provider redirected back.
    code: Option<Zeroizing<String>>,
}

impl std::fmt::Debug for Flow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Flow")
            .field("provider", &self.provider)
            .field("code", &self.code.as_ref().map(|_| "[redacted]"))
            .finish_non_exhaustive()
    }
}

/// One pending login (or link) through a provider.
pub type Pending = Request<Flow>;

/// A flow as a shared database keeps it (sealed, with the verifier and the code).
#[derive(Serialize, Deserialize)]
pub struct StoredFlow {
    provider: String,
    nonce: String,
    verifier: String,
    code: Option<String>,
}

impl super::confirm::StoredDetail for Flow {
    type Stored = StoredFlow;
    fn to_stored(&self) -> StoredFlow {
        StoredFlow {
            provider: self.provider.clone(),
            nonce: self.nonce.clone(),
            verifier: self.verifier.to_string(),
            code: self.code.as_ref().map(|c| c.to_string()),
        }
    }
    fn load(stored: StoredFlow) -> Option<Flow> {
        Some(Flow {
            provider: stored.provider,
            nonce: stored.nonce,
            verifier: Zeroizing::new(stored.verifier),
            code: stored.code.map(Zeroizing::new),
        })
    }
}

/// Pending provider logins, by request id and by the SHA-256 of `state`.
pub type OAuthLogins = PendingMap<[u8; 32], Pending>;

impl From<OpenIdError> for ApiError {
    fn from(e: OpenIdError) -> Self {
        match e {
            OpenIdError::Unavailable(m) => ApiError::new(ErrorCode::ProviderUnavailable, m),
            OpenIdError::InvalidToken(m) => ApiError::new(ErrorCode::InvalidIdToken, m),
        }
    }
}

fn random_b64<const N: usize>() -> Result<String, ApiError> {
    let mut bytes = Zeroizing::new([0u8; N]);
    aws_lc_rs::rand::fill(&mut *bytes)
        .map_err(|_| ApiError::internal("random generator failed"))?;
    Ok(URL_SAFE_NO_PAD.encode(*bytes))
}

fn state_hash(state: &str) -> [u8; 32] {
    Sha256::digest(state.as_bytes()).into()
}

/// `POST /v1/auth/oauth2/start` body.
#[derive(Debug, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct OAuthStart {
    /// A configured provider's name (e.g. `google`).
    pub provider: String,
}

/// A started provider login.
#[derive(Debug, Deserialize, Serialize, utoipa::ToSchema)]
pub struct OAuthStarted {
    /// Poll `GET /v1/auth/oauth2/status/{request_id}` with the same device key.
    pub request_id: String,
    /// Open this in a browser.
    pub authorization_url: String,
    /// Show this to the user: the page after the provider asks for it.
    pub confirm_code: String,
    /// RFC 3339.
    pub expires_at: String,
}

/// Starts a login with an OpenID provider.
#[utoipa::path(post, path = "/v1/auth/oauth2/start", tag = "login",
    params(("DPoP" = String, Header, description = "a proof by the device key that will poll")),
    request_body = OAuthStart,
    responses(
        (status = 200, description = "open authorization_url; show confirm_code", body = OAuthStarted),
        (status = 400, description = "invalid_request: unknown provider", body = super::openapi::ErrorEnvelope),
        (status = 401, description = "invalid_dpop_proof", body = super::openapi::ErrorEnvelope),
        (status = 413, description = "payload_too_large", body = super::openapi::ErrorEnvelope),
        (status = 415, description = "unsupported_media_type", body = super::openapi::ErrorEnvelope),
        (status = 429, description = "rate_limited", body = super::openapi::ErrorEnvelope),
        (status = 502, description = "provider_unavailable: its discovery document cannot be read", body = super::openapi::ErrorEnvelope),
        (status = 503, description = "busy", body = super::openapi::ErrorEnvelope),
        (status = 500, description = "internal", body = super::openapi::ErrorEnvelope)))]
pub async fn start(
    State(state): State<AppState>,
    TokenlessDpop(_proof, by): TokenlessDpop,
    headers: HeaderMap,
    ApiJson(body): ApiJson<OAuthStart>,
) -> Result<Json<OAuthStarted>, ApiError> {
    begin(&state, &body.provider, by, &headers, None).await
}

/// Starts a provider ceremony: a login, or (`link`) a link to that master. Nothing is kept when
/// the provider cannot be reached.
pub async fn begin(
    state: &AppState,
    provider: &str,
    by: Requester,
    headers: &HeaderMap,
    link: Option<Omni>,
) -> Result<Json<OAuthStarted>, ApiError> {
    let Some(found) = state.providers.get(provider) else {
        let names = state.providers.names();
        return Err(ApiError::new(
            ErrorCode::InvalidRequest,
            if names.is_empty() {
                "no OpenID provider is configured on this gateway".to_string()
            } else {
                format!(
                    "unknown provider {provider:?}; this gateway offers {}",
                    names.join(", ")
                )
            },
        ));
    };
    let now = state.now_seconds();
    let oauth_state = random_b64::<32>()?;
    let nonce = random_b64::<32>()?;
    let request_id = super::confirm::random_id()?;
    let authorization = found
        .authorize(&redirect_uri(state), &oauth_state, &nonce, now)
        .await?;
    let confirm = Confirm::new(
        by.jkt.clone(),
        by.ip,
        headers,
        now,
        OAUTH2_TTL_SECONDS,
        link,
    )?;
    let started = OAuthStarted {
        request_id: request_id.clone(),
        authorization_url: authorization.url,
        confirm_code: confirm.display_code(),
        expires_at: rfc3339::format((now + OAUTH2_TTL_SECONDS) * 1000),
    };
    let pending = Pending {
        detail: Flow {
            provider: found.config.name.clone(),
            nonce,
            verifier: authorization.verifier,
            code: None,
        },
        confirm,
    };
    state
        .oauth_logins
        .insert_shared(request_id, state_hash(&oauth_state), pending, &by, now)
        .await?;
    Ok(Json(started))
}

/// Where providers send the browser back (register it at the provider).
pub fn redirect_uri(state: &AppState) -> String {
    format!("{}/auth/oauth2/callback", state.public_url)
}

/// The provider's redirect.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
pub struct Callback {
    /// The authorization code.
    code: Option<String>,
    /// The request's state.
    state: Option<String>,
    /// The provider's refusal (e.g. `access_denied`).
    error: Option<String>,
    /// Its description (never shown: the provider's text).
    #[allow(dead_code)]
    error_description: Option<String>,
    /// Issuer identification (RFC 9207), ignored.
    #[allow(dead_code)]
    iss: Option<String>,
    /// Scopes granted, ignored.
    #[allow(dead_code)]
    scope: Option<String>,
}

/// The provider's redirect: remembers the code (nothing is exchanged or granted) and answers
/// the page that asks for the confirm code.
#[utoipa::path(get, path = "/auth/oauth2/callback", tag = "login",
    params(Callback),
    responses(
        (status = 200, description = "the interstitial page (text/html)", content_type = "text/html"),
        (status = 429, description = "rate_limited", body = super::openapi::ErrorEnvelope)))]
pub async fn callback(
    State(state): State<AppState>,
    query: Result<axum::extract::Query<Callback>, axum::extract::rejection::QueryRejection>,
) -> Response {
    if let Ok(axum::extract::Query(query)) = query
        && let Some(oauth_state) = &query.state
    {
        let now = state.now_seconds();
        let key = state_hash(oauth_state);
        // On a shared map: this node's copy up to date first, the change written back after.
        let seen = match state
            .oauth_logins
            .pull(super::pending::Name::Key(&key))
            .await
        {
            Ok(seen) => seen,
            Err(_) => return super::confirm::landing_page("oauth2"),
        };
        let changed = {
            let mut changed = None;
            let mut entries = state.oauth_logins.lock();
            if let Some(id) = entries.id_of(&key)
                && let Some(pending) = entries.get_mut(&id)
                && matches!(pending.confirm.stage, Stage::Pending)
                && pending.confirm.expires_at > now
            {
                changed = Some(id);
                match (&query.code, &query.error) {
                    (_, Some(_)) => {
                        pending.confirm.stage = Stage::Failed(
                            ErrorCode::ProviderUnavailable,
                            format!(
                                "the provider {} did not sign you in; start again",
                                pending.detail.provider
                            ),
                        );
                    }
                    (Some(code), None) if !code.is_empty() && code.len() <= MAX_CODE_LEN => {
                        // The latest redirect wins (a person may go back and sign in again).
                        pending.detail.code = Some(Zeroizing::new(code.clone()));
                    }
                    _ => {}
                }
            }
            changed
        };
        if let Some(id) = changed {
            // Lost to another node's change of the same request: the page asks again.
            let _ = state.oauth_logins.publish(&id, seen).await;
        }
    }
    super::confirm::landing_page("oauth2")
}

/// `POST /v1/auth/oauth2/confirm` body.
#[derive(Debug, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct OAuthConfirm {
    /// The `state` from the callback's query.
    pub state: String,
    /// The code the requesting terminal shows; without it the request is only described.
    pub confirm_code: Option<String>,
}

/// What the page shows, or the outcome.
#[derive(Debug, Deserialize, Serialize, utoipa::ToSchema)]
pub struct OAuthConfirmed {
    /// The provider's name.
    pub provider: String,
    /// The request.
    #[serde(flatten)]
    pub request: Described,
}

/// Describes a request (no code) or completes it (with the right code, once): only now is the
/// authorization code exchanged and the ID token validated.
#[utoipa::path(post, path = "/v1/auth/oauth2/confirm", tag = "login",
    request_body = OAuthConfirm,
    responses(
        (status = 200, description = "described, or verified (linked in link mode)", body = OAuthConfirmed),
        (status = 400, description = "invalid_request (the provider has not redirected back), invalid_confirm_code", body = super::openapi::ErrorEnvelope),
        (status = 401, description = "actor_revoked", body = super::openapi::ErrorEnvelope),
        (status = 403, description = "registration_closed, identity_unlinked", body = super::openapi::ErrorEnvelope),
        (status = 404, description = "not_found: no such request", body = super::openapi::ErrorEnvelope),
        (status = 409, description = "identity_taken (link mode)", body = super::openapi::ErrorEnvelope),
        (status = 410, description = "expired: used, expired, or too many wrong codes", body = super::openapi::ErrorEnvelope),
        (status = 413, description = "payload_too_large", body = super::openapi::ErrorEnvelope),
        (status = 415, description = "unsupported_media_type", body = super::openapi::ErrorEnvelope),
        (status = 429, description = "rate_limited", body = super::openapi::ErrorEnvelope),
        (status = 502, description = "provider_unavailable, invalid_id_token", body = super::openapi::ErrorEnvelope),
        (status = 503, description = "busy, signer_unavailable", body = super::openapi::ErrorEnvelope),
        (status = 500, description = "internal", body = super::openapi::ErrorEnvelope)))]
pub async fn confirm(
    State(state): State<AppState>,
    ApiJson(body): ApiJson<OAuthConfirm>,
) -> Result<Json<OAuthConfirmed>, ApiError> {
    let now = state.now_seconds();
    let typed = body.confirm_code.as_deref();
    let (id, pending) = super::confirm::redeem_step(
        &state.oauth_logins,
        &state_hash(body.state.trim()),
        typed,
        now,
        ApiError::new(
            ErrorCode::NotFound,
            "this sign-in request is unknown; start again from your terminal",
        ),
        |pending| {
            if typed.is_some() && pending.detail.code.is_none() {
                return Err(ApiError::new(
                    ErrorCode::InvalidRequest,
                    "the provider has not sent you back here yet; finish signing in there first",
                ));
            }
            Ok(())
        },
    )
    .await?;
    let describe = |status: &str| OAuthConfirmed {
        provider: pending.detail.provider.clone(),
        request: Described::of(&pending.confirm, status),
    };
    if body.confirm_code.is_none() {
        return Ok(Json(describe("confirm")));
    }
    let outcome = finish(&state, &pending, now).await;
    super::confirm::record(&state.oauth_logins, &id, &outcome).await?;
    match outcome? {
        Stage::Linked => Ok(Json(describe("linked"))),
        _ => Ok(Json(describe("verified"))),
    }
}

/// Exchanges the code, validates the ID token, and writes the login or the link.
async fn finish(state: &AppState, pending: &Pending, now: i64) -> Result<Stage, ApiError> {
    let flow = &pending.detail;
    let provider = state.providers.get(&flow.provider).ok_or_else(|| {
        ApiError::internal("a pending login names a provider no longer configured")
    })?;
    let code = flow
        .code
        .as_ref()
        .ok_or_else(|| ApiError::internal("confirmed without a code"))?;
    let verified = provider
        .exchange(code, &flow.verifier, &redirect_uri(state), &flow.nonce, now)
        .await?;
    complete(
        state,
        &pending.confirm,
        provider.config.identity(&verified.sub),
    )
    .await
}

/// Polled by the requesting device key: `pending`, then `verified` with a session (`linked`
/// in link mode).
#[utoipa::path(get, path = "/v1/auth/oauth2/status/{request_id}", tag = "login",
    params(
        ("request_id" = String, Path, description = "from oauth2/start"),
        ("DPoP" = String, Header, description = "a proof by the key that asked")),
    responses(
        (status = 200, description = "pending, linked, or verified (with the session)", body = LoginStatus),
        (status = 401, description = "invalid_dpop_proof, actor_revoked", body = super::openapi::ErrorEnvelope),
        (status = 403, description = "registration_closed, identity_unlinked", body = super::openapi::ErrorEnvelope),
        (status = 404, description = "not_found (also another device key's request)", body = super::openapi::ErrorEnvelope),
        (status = 409, description = "identity_taken (link mode)", body = super::openapi::ErrorEnvelope),
        (status = 410, description = "expired", body = super::openapi::ErrorEnvelope),
        (status = 429, description = "rate_limited", body = super::openapi::ErrorEnvelope),
        (status = 502, description = "provider_unavailable, invalid_id_token", body = super::openapi::ErrorEnvelope),
        (status = 503, description = "busy", body = super::openapi::ErrorEnvelope),
        (status = 500, description = "internal", body = super::openapi::ErrorEnvelope)))]
pub async fn status(
    State(state): State<AppState>,
    TokenlessDpop(proof, _): TokenlessDpop,
    ApiPath(request_id): ApiPath<String>,
) -> Result<Json<LoginStatus>, ApiError> {
    super::confirm::poll(&state, &state.oauth_logins, &request_id, proof.jkt).await
}
