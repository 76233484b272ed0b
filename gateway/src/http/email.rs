//! Email magic-link login (DESIGN §10).
//!
//! 1. The CLI calls `POST /v1/auth/email/request {email}` with a DPoP proof. The server keeps a
//!    pending request in memory (TTL 600 s, global cap) bound to the proof's key, mails a link
//!    whose URL fragment carries a 256-bit token (only its SHA-256 is kept), and answers
//!    `{request_id, confirm_code, expires_at}`; the CLI shows the code.
//! 2. The link opens `GET /auth/email/landing`: a page with no third-party assets that reads the
//!    token from the fragment (never sent in a GET, so link scanners consume nothing), shows the
//!    requester's IP address and a short description of its browser and system (never the raw
//!    `User-Agent`, which the requester chose), and asks for the code. Redemption is only by
//!    `POST /v1/auth/email/verify {token, confirm_code}`; the same POST without a code shows
//!    the request and changes nothing.
//! 3. The first verified login creates the master (anchor wallet `W(identity omni)`) and binds
//!    the requester's key; `GET /v1/auth/email/status/{request_id}`, polled with the same key,
//!    then answers the session.
//!
//! A logged-in master links an address to itself with the same ceremony started by
//! `POST /v1/identities/email/request` under its session; the poll then answers `linked`.

use agentkeys_actors::crypto::rfc3339;
use agentkeys_runtime::Omni;
use axum::Json;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::Response;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::AppState;
use super::confirm::{Confirm, Described, LoginStatus, Request, Stage, complete};
use super::error::{ApiError, ErrorCode};
use super::extract::{ApiJson, ApiPath, TokenlessDpop};
use super::pending::{PendingMap, Requester};
use crate::mail::MagicLink;

/// How long a request may be confirmed.
pub const EMAIL_TTL_SECONDS: i64 = 600;
pub use super::confirm::{CONFIRM_CODE_LEN, MAX_CODE_ATTEMPTS};

/// One pending email login (or link): the address.
pub type Pending = Request<String>;

/// Pending email logins, by request id and by token hash.
pub type EmailLogins = PendingMap<[u8; 32], Pending>;

fn random_bytes<const N: usize>() -> Result<[u8; N], ApiError> {
    let mut bytes = [0u8; N];
    aws_lc_rs::rand::fill(&mut bytes).map_err(|_| ApiError::internal("random generator failed"))?;
    Ok(bytes)
}

/// A typed confirm code in its canonical form: case, dashes and spaces ignored, `I`/`L` read as
/// `1` and `O` as `0` (Crockford).
pub fn normalize_code(typed: &str) -> String {
    super::crockford::normalize(typed)
}

/// Trims and lowercases an email address; refuses what is not one.
pub fn normalize_email(raw: &str) -> Result<String, ApiError> {
    let email = raw.trim().to_lowercase();
    let valid = email.len() <= 254
        && email.split_once('@').is_some_and(|(user, host)| {
            !user.is_empty() && host.contains('.') && !host.starts_with('.') && !host.contains('@')
        })
        && !email.chars().any(|c| c.is_whitespace() || c.is_control());
    if valid {
        Ok(email)
    } else {
        Err(ApiError::new(
            ErrorCode::InvalidRequest,
            "email must be an address like alice@example.com",
        ))
    }
}

/// `POST /v1/auth/email/request` body.
#[derive(Debug, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EmailRequest {
    /// The address to sign in as.
    pub email: String,
}

/// A started email login.
#[derive(Debug, Deserialize, Serialize, utoipa::ToSchema)]
pub struct EmailStarted {
    /// Poll `GET /v1/auth/email/status/{request_id}` with the same device key.
    pub request_id: String,
    /// Show this to the user: the landing page asks for it.
    pub confirm_code: String,
    /// RFC 3339.
    pub expires_at: String,
}

/// Mails a magic link and returns the code to show.
#[utoipa::path(post, path = "/v1/auth/email/request", tag = "login",
    params(("DPoP" = String, Header, description = "a proof by the device key that will poll")),
    request_body = EmailRequest,
    responses(
        (status = 200, description = "the link was sent", body = EmailStarted),
        (status = 400, description = "invalid_request", body = super::openapi::ErrorEnvelope),
        (status = 401, description = "invalid_dpop_proof", body = super::openapi::ErrorEnvelope),
        (status = 413, description = "payload_too_large", body = super::openapi::ErrorEnvelope),
        (status = 415, description = "unsupported_media_type", body = super::openapi::ErrorEnvelope),
        (status = 429, description = "rate_limited (per address and per email)", body = super::openapi::ErrorEnvelope),
        (status = 503, description = "busy; the mail could not be sent", body = super::openapi::ErrorEnvelope),
        (status = 500, description = "internal", body = super::openapi::ErrorEnvelope)))]
pub async fn request(
    State(state): State<AppState>,
    TokenlessDpop(_proof, by): TokenlessDpop,
    headers: HeaderMap,
    ApiJson(body): ApiJson<EmailRequest>,
) -> Result<Json<EmailStarted>, ApiError> {
    start(&state, &body.email, by, &headers, None).await
}

/// Starts an email ceremony: a login, or (`link`) a link to that master.
pub async fn start(
    state: &AppState,
    email: &str,
    by: Requester,
    headers: &HeaderMap,
    link: Option<Omni>,
) -> Result<Json<EmailStarted>, ApiError> {
    let ip = by.ip;
    let email = normalize_email(email)?;
    let now_ms = state.clock.now().as_millis();
    let too_many = |wait| {
        ApiError::new(
            ErrorCode::RateLimited,
            "too many sign-in links for this address in the last hour; wait before asking again",
        )
        .retry_after(wait)
    };
    state
        .rate_limits
        .emails
        .take(&email, ip, now_ms)
        .map_err(too_many)?;
    if let Some(cluster) = &state.cluster {
        // Counted on every node too: the same numbers per hour, as token buckets.
        let limits = &state.limits;
        let client = super::ratelimit::client_key(ip);
        for (key, per_hour) in [
            (format!("mail:{email}"), limits.email_links_per_hour_ceiling),
            (
                format!("mail:{email}:{client}"),
                limits.email_links_per_hour,
            ),
        ] {
            let wait = cluster.take_hourly(key, per_hour, now_ms).await?;
            if let Some(wait) = wait {
                return Err(too_many(wait));
            }
        }
    }
    let now = state.now_seconds();
    let token = URL_SAFE_NO_PAD.encode(random_bytes::<32>()?);
    let request_id = super::confirm::random_id()?;
    let confirm = Confirm::new(by.jkt.clone(), ip, headers, now, EMAIL_TTL_SECONDS, link)?;
    let message = MagicLink {
        to: email.clone(),
        link: format!("{}/auth/email/landing#t={token}", state.public_url),
        requester: format!("{ip}, {}", confirm.user_agent),
        request_id: request_id.clone(),
    };
    let started = EmailStarted {
        request_id: request_id.clone(),
        confirm_code: confirm.display_code(),
        expires_at: rfc3339::format((now + EMAIL_TTL_SECONDS) * 1000),
    };
    let token_hash: [u8; 32] = Sha256::digest(token.as_bytes()).into();
    let pending = Pending {
        detail: email,
        confirm,
    };
    state
        .email_logins
        .insert_shared(request_id.clone(), token_hash, pending, &by, now)
        .await?;
    if let Err(e) = state.mailer.send(&message).await {
        state.email_logins.lock().remove(&request_id, &token_hash);
        state.email_logins.publish(&request_id, None).await?;
        return Err(ApiError::new(
            ErrorCode::Busy,
            "the sign-in link could not be sent; retry later",
        )
        .with_cause(e));
    }
    Ok(Json(started))
}

/// `POST /v1/auth/email/verify` body.
#[derive(Debug, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EmailVerify {
    /// The token from the link's fragment.
    pub token: String,
    /// The code the requesting terminal shows; without it the request is only described.
    pub confirm_code: Option<String>,
}

/// What the landing page shows, or the outcome.
#[derive(Debug, Deserialize, Serialize, utoipa::ToSchema)]
pub struct EmailVerified {
    /// The address signing in (or being linked).
    pub email: String,
    /// The request.
    #[serde(flatten)]
    pub request: Described,
}

/// Describes the request of a token (no code) or redeems it (with the right code, once).
#[utoipa::path(post, path = "/v1/auth/email/verify", tag = "login",
    request_body = EmailVerify,
    responses(
        (status = 200, description = "described, or verified (linked in link mode)", body = EmailVerified),
        (status = 400, description = "invalid_request, invalid_confirm_code", body = super::openapi::ErrorEnvelope),
        (status = 403, description = "registration_closed, identity_unlinked, managed_wallet", body = super::openapi::ErrorEnvelope),
        (status = 401, description = "actor_revoked", body = super::openapi::ErrorEnvelope),
        (status = 404, description = "not_found: no such link", body = super::openapi::ErrorEnvelope),
        (status = 409, description = "identity_taken (link mode)", body = super::openapi::ErrorEnvelope),
        (status = 410, description = "expired: used, expired, or too many wrong codes", body = super::openapi::ErrorEnvelope),
        (status = 413, description = "payload_too_large", body = super::openapi::ErrorEnvelope),
        (status = 415, description = "unsupported_media_type", body = super::openapi::ErrorEnvelope),
        (status = 429, description = "rate_limited", body = super::openapi::ErrorEnvelope),
        (status = 503, description = "busy, signer_unavailable", body = super::openapi::ErrorEnvelope),
        (status = 500, description = "internal", body = super::openapi::ErrorEnvelope)))]
pub async fn verify(
    State(state): State<AppState>,
    ApiJson(body): ApiJson<EmailVerify>,
) -> Result<Json<EmailVerified>, ApiError> {
    let token_hash: [u8; 32] = Sha256::digest(body.token.trim().as_bytes()).into();
    let now = state.now_seconds();
    let (id, pending) = super::confirm::redeem_step(
        &state.email_logins,
        &token_hash,
        body.confirm_code.as_deref(),
        now,
        ApiError::new(
            ErrorCode::NotFound,
            "this sign-in link is unknown; ask for a new one",
        ),
        |_| Ok(()),
    )
    .await?;
    let describe = |status: &str| EmailVerified {
        email: pending.detail.clone(),
        request: Described::of(&pending.confirm, status),
    };
    if body.confirm_code.is_none() {
        return Ok(Json(describe("confirm")));
    }
    let identity = ("email".to_string(), pending.detail.clone());
    let outcome = complete(&state, &pending.confirm, identity).await;
    super::confirm::record(&state.email_logins, &id, &outcome).await?;
    match outcome? {
        Stage::Linked => Ok(Json(describe("linked"))),
        _ => Ok(Json(describe("verified"))),
    }
}

/// The state of a request (kept under its historical name).
pub type EmailStatus = LoginStatus;

/// Polled by the requesting device key: `pending`, then `verified` with a session (`linked`
/// in link mode).
#[utoipa::path(get, path = "/v1/auth/email/status/{request_id}", tag = "login",
    params(
        ("request_id" = String, Path, description = "from email/request"),
        ("DPoP" = String, Header, description = "a proof by the key that asked")),
    responses(
        (status = 200, description = "pending, linked, or verified (with the session)", body = LoginStatus),
        (status = 401, description = "invalid_dpop_proof, actor_revoked", body = super::openapi::ErrorEnvelope),
        (status = 403, description = "registration_closed, identity_unlinked", body = super::openapi::ErrorEnvelope),
        (status = 404, description = "not_found (also another device key's request)", body = super::openapi::ErrorEnvelope),
        (status = 409, description = "identity_taken (link mode)", body = super::openapi::ErrorEnvelope),
        (status = 410, description = "expired", body = super::openapi::ErrorEnvelope),
        (status = 429, description = "rate_limited", body = super::openapi::ErrorEnvelope),
        (status = 503, description = "busy", body = super::openapi::ErrorEnvelope),
        (status = 500, description = "internal", body = super::openapi::ErrorEnvelope)))]
pub async fn status(
    State(state): State<AppState>,
    TokenlessDpop(proof, _): TokenlessDpop,
    ApiPath(request_id): ApiPath<String>,
) -> Result<Json<LoginStatus>, ApiError> {
    super::confirm::poll(&state, &state.email_logins, &request_id, proof.jkt).await
}

/// The landing page of the magic link: shows who asked and takes the code; redeems by POST.
#[utoipa::path(get, path = "/auth/email/landing", tag = "login",
    responses(
        (status = 200, description = "the interstitial page (text/html)", content_type = "text/html"),
        (status = 429, description = "rate_limited", body = super::openapi::ErrorEnvelope)))]
pub async fn landing() -> Response {
    super::confirm::landing_page("email")
}
