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

use agentkeys_actors::crypto::omni::{Identity, identity_omni, master_omni};
use agentkeys_actors::crypto::rfc3339;
use agentkeys_actors::ledger::{LoggedIn, Login};
use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::AppState;
use super::error::{ApiError, ErrorCode};
use super::extract::{ApiJson, ApiPath, TokenlessDpop};
use super::pending::{Expiring, PendingMap};
use super::ratelimit::ClientIp;
use super::session::{SessionResponse, issue};
use crate::auth::session::{NewSession, Role};
use crate::mail::MagicLink;

/// How long a request may be confirmed.
pub const EMAIL_TTL_SECONDS: i64 = 600;
/// Wrong confirm codes before a request is dropped.
pub const MAX_CODE_ATTEMPTS: u32 = 5;
/// Characters of a confirm code (Crockford base32: 30 bits).
pub const CONFIRM_CODE_LEN: usize = 6;

/// Where a request stands.
#[derive(Debug, Clone)]
enum State_ {
    Pending,
    /// The right code was given; the login is being written (the link is spent).
    Completing,
    /// Verified: the master and the binding the status poll's session names.
    Verified {
        master: agentkeys_runtime::Omni,
        bid: u64,
    },
    /// Refused at verification (e.g. registration closed): the status poll answers this.
    Failed(ErrorCode, String),
}

/// One pending email login.
#[derive(Debug, Clone)]
pub struct Pending {
    email: String,
    jkt: String,
    token_hash: [u8; 32],
    confirm_code: String,
    requester_ip: String,
    user_agent: String,
    expires_at: i64,
    wrong_codes: u32,
    state: State_,
}

/// Pending email logins, by request id and by token hash.
pub type EmailLogins = PendingMap<[u8; 32], Pending>;

impl Expiring for Pending {
    fn expires_at(&self) -> i64 {
        self.expires_at
    }
}

fn random_bytes<const N: usize>() -> Result<[u8; N], ApiError> {
    let mut bytes = [0u8; N];
    aws_lc_rs::rand::fill(&mut bytes).map_err(|_| ApiError::internal("random generator failed"))?;
    Ok(bytes)
}

fn confirm_code() -> Result<String, ApiError> {
    super::crockford::random(CONFIRM_CODE_LEN)
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
    TokenlessDpop(proof, by): TokenlessDpop,
    client: axum::Extension<ClientIp>,
    headers: HeaderMap,
    ApiJson(body): ApiJson<EmailRequest>,
) -> Result<Json<EmailStarted>, ApiError> {
    let email = normalize_email(&body.email)?;
    let now_ms = state.clock.now().as_millis();
    if let Err(wait) = state.rate_limits.emails.take(&email, client.0.0, now_ms) {
        return Err(ApiError::new(
            ErrorCode::RateLimited,
            "too many sign-in links for this address in the last hour; wait before asking again",
        )
        .retry_after(wait));
    }
    let now = state.now_seconds();
    let token = URL_SAFE_NO_PAD.encode(random_bytes::<32>()?);
    let request_id = hex::encode(random_bytes::<16>()?);
    let code = confirm_code()?;
    let user_agent = super::useragent::describe(
        headers
            .get(header::USER_AGENT)
            .and_then(|v| v.to_str().ok()),
    );
    let pending = Pending {
        email: email.clone(),
        jkt: proof.jkt,
        token_hash: Sha256::digest(token.as_bytes()).into(),
        confirm_code: code.clone(),
        requester_ip: client.0.0.to_string(),
        user_agent: user_agent.clone(),
        expires_at: now + EMAIL_TTL_SECONDS,
        wrong_codes: 0,
        state: State_::Pending,
    };
    let message = MagicLink {
        to: email,
        link: format!("{}/auth/email/landing#t={token}", state.public_url),
        requester: format!("{}, {user_agent}", client.0.0),
        request_id: request_id.clone(),
    };
    let token_hash = pending.token_hash;
    state
        .email_logins
        .insert(request_id.clone(), token_hash, pending, &by, now)?;
    if let Err(e) = state.mailer.send(&message).await {
        state.email_logins.lock().remove(&request_id, &token_hash);
        return Err(ApiError::new(
            ErrorCode::Busy,
            "the sign-in link could not be sent; retry later",
        )
        .with_cause(e));
    }
    Ok(Json(EmailStarted {
        request_id,
        confirm_code: format!("{}-{}", &code[..3], &code[3..]),
        expires_at: rfc3339::format((now + EMAIL_TTL_SECONDS) * 1000),
    }))
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
    /// `confirm` (the request, awaiting the code) or `verified`.
    pub status: String,
    /// The address signing in.
    pub email: String,
    /// The IP address that asked for the link.
    pub requester_ip: String,
    /// Its user agent.
    pub user_agent: String,
}

/// Describes the request of a token (no code) or redeems it (with the right code, once).
#[utoipa::path(post, path = "/v1/auth/email/verify", tag = "login",
    request_body = EmailVerify,
    responses(
        (status = 200, description = "described, or verified", body = EmailVerified),
        (status = 400, description = "invalid_request, invalid_confirm_code", body = super::openapi::ErrorEnvelope),
        (status = 403, description = "registration_closed", body = super::openapi::ErrorEnvelope),
        (status = 401, description = "actor_revoked", body = super::openapi::ErrorEnvelope),
        (status = 404, description = "not_found: no such link", body = super::openapi::ErrorEnvelope),
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
    let (id, pending) = take_for_verify(&state, &token_hash, body.confirm_code.as_deref(), now)?;
    let describe = |status: &str| EmailVerified {
        status: status.into(),
        email: pending.email.clone(),
        requester_ip: pending.requester_ip.clone(),
        user_agent: pending.user_agent.clone(),
    };
    if body.confirm_code.is_none() {
        return Ok(Json(describe("confirm")));
    }
    let outcome = login(&state, &pending).await;
    let mut maps = state.email_logins.lock();
    let Some(slot) = maps.get_mut(&id) else {
        return Err(expired("this sign-in request expired; start again"));
    };
    match outcome {
        Ok(logged_in) => {
            slot.state = State_::Verified {
                master: logged_in.record.omni,
                bid: logged_in.binding.bid,
            };
            Ok(Json(describe("verified")))
        }
        Err(e) => {
            slot.state = State_::Failed(e.code(), e.message().to_string());
            Err(e)
        }
    }
}

fn expired(message: &str) -> ApiError {
    ApiError::new(ErrorCode::Expired, message)
}

/// Finds the request of a token; with a code, checks it and marks the token used (a wrong
/// code counts; too many drop the request). Returns the request id and a copy.
fn take_for_verify(
    state: &AppState,
    token_hash: &[u8; 32],
    code: Option<&str>,
    now: i64,
) -> Result<(String, Pending), ApiError> {
    let mut maps = state.email_logins.lock();
    let Some(id) = maps.id_of(token_hash) else {
        return Err(ApiError::new(
            ErrorCode::NotFound,
            "this sign-in link is unknown; ask for a new one",
        ));
    };
    let Some(pending) = maps.get_mut(&id) else {
        return Err(expired("this sign-in request expired; start again"));
    };
    if pending.expires_at <= now {
        return Err(expired("this sign-in link expired; start again"));
    }
    if !matches!(pending.state, State_::Pending) {
        return Err(expired("this sign-in link was already used"));
    }
    let Some(code) = code else {
        return Ok((id, pending.clone()));
    };
    let typed = normalize_code(code);
    if !bool::from(typed.as_bytes().ct_eq(pending.confirm_code.as_bytes())) {
        pending.wrong_codes += 1;
        if pending.wrong_codes >= MAX_CODE_ATTEMPTS {
            pending.state = State_::Failed(
                ErrorCode::Expired,
                "too many wrong confirmation codes; start again".into(),
            );
        }
        return Err(ApiError::new(
            ErrorCode::InvalidConfirmCode,
            "the confirmation code does not match the one your terminal shows",
        ));
    }
    // Used from here on, whatever the login's outcome: one redemption per link.
    pending.state = State_::Completing;
    Ok((id, pending.clone()))
}

/// The first login of an address creates its master (anchor wallet `W(identity omni)`).
async fn login(state: &AppState, pending: &Pending) -> Result<LoggedIn, ApiError> {
    let identity = identity_omni(&state.client_id, Identity::Email(&pending.email))
        .map_err(ApiError::internal)?;
    let anchor = state.signer.account(identity, String::new()).await?.wallet;
    let master = master_omni(&state.client_id, &anchor.to_string()).map_err(ApiError::internal)?;
    let wallet = state.signer.account(master, String::new()).await?.wallet;
    let logged_in = state
        .ledger
        .login(Login {
            master,
            wallet: wallet.0,
            identity: ("email".into(), pending.email.clone()),
            signer: None,
            anchor: Some(anchor.0),
            registration: state.registration,
            jkt: pending.jkt.clone(),
            device_label: "login".into(),
            request_id: state.request_id(),
            at: state.clock.now(),
        })
        .await?;
    if logged_in.new_master {
        tracing::info!(master = %master, "new master registered by email login");
    }
    Ok(logged_in)
}

/// The state of a request, for the device key that made it.
#[derive(Debug, Deserialize, Serialize)]
pub struct EmailStatus {
    /// `pending` or `verified`.
    pub status: String,
    /// The session, once verified.
    #[serde(flatten)]
    pub session: Option<SessionResponse>,
}

super::openapi::status_or_session_schema!(EmailStatus, "pending", "verified");

/// Polled by the requesting device key: `pending`, then `verified` with a session.
#[utoipa::path(get, path = "/v1/auth/email/status/{request_id}", tag = "login",
    params(
        ("request_id" = String, Path, description = "from email/request"),
        ("DPoP" = String, Header, description = "a proof by the key that asked")),
    responses(
        (status = 200, description = "pending or verified (with the session)", body = EmailStatus),
        (status = 401, description = "invalid_dpop_proof, actor_revoked", body = super::openapi::ErrorEnvelope),
        (status = 403, description = "registration_closed", body = super::openapi::ErrorEnvelope),
        (status = 404, description = "not_found (also another device key's request)", body = super::openapi::ErrorEnvelope),
        (status = 410, description = "expired", body = super::openapi::ErrorEnvelope),
        (status = 429, description = "rate_limited", body = super::openapi::ErrorEnvelope),
        (status = 503, description = "busy", body = super::openapi::ErrorEnvelope),
        (status = 500, description = "internal", body = super::openapi::ErrorEnvelope)))]
pub async fn status(
    State(state): State<AppState>,
    TokenlessDpop(proof, _): TokenlessDpop,
    ApiPath(request_id): ApiPath<String>,
) -> Result<Json<EmailStatus>, ApiError> {
    let now = state.now_seconds();
    let found = {
        let maps = state.email_logins.lock();
        maps.get(&request_id)
            .filter(|p| p.jkt == proof.jkt)
            .map(|p| (p.state.clone(), p.expires_at))
    };
    let Some((current, expires_at)) = found else {
        return Err(ApiError::new(
            ErrorCode::NotFound,
            "no such sign-in request",
        ));
    };
    if expires_at <= now {
        return Err(expired("this sign-in request expired; start again"));
    }
    match current {
        State_::Pending | State_::Completing => Ok(Json(EmailStatus {
            status: "pending".into(),
            session: None,
        })),
        State_::Failed(code, message) => Err(ApiError::new(code, message)),
        State_::Verified { master, bid } => {
            let session = NewSession {
                omni: master,
                role: Role::Master,
                master,
                path: String::new(),
                jkt: proof.jkt,
                bid,
            };
            Ok(Json(EmailStatus {
                status: "verified".into(),
                session: Some(issue(&state, session).await?),
            }))
        }
    }
}

/// The interstitial page's script (inline; allowed by its hash in the CSP).
const LANDING_SCRIPT: &str = include_str!("landing.js");
/// The page around it.
const LANDING_HTML: &str = include_str!("landing.html");

/// The landing page of the magic link: shows who asked and takes the code; redeems by POST.
#[utoipa::path(get, path = "/auth/email/landing", tag = "login",
    responses(
        (status = 200, description = "the interstitial page (text/html)", content_type = "text/html"),
        (status = 429, description = "rate_limited", body = super::openapi::ErrorEnvelope)))]
pub async fn landing() -> Response {
    // CSP hashes are standard base64.
    let hash =
        base64::engine::general_purpose::STANDARD.encode(Sha256::digest(LANDING_SCRIPT.as_bytes()));
    let csp = format!(
        "default-src 'none'; script-src 'sha256-{hash}'; style-src 'unsafe-inline'; \
         connect-src 'self'; form-action 'none'; frame-ancestors 'none'; base-uri 'none'"
    );
    let page = LANDING_HTML.replace("/*SCRIPT*/", LANDING_SCRIPT);
    let mut response = page.into_response();
    let headers = response.headers_mut();
    let set = |headers: &mut HeaderMap, name: header::HeaderName, value: &str| {
        if let Ok(v) = HeaderValue::from_str(value) {
            headers.insert(name, v);
        }
    };
    set(headers, header::CONTENT_TYPE, "text/html; charset=utf-8");
    set(headers, header::CONTENT_SECURITY_POLICY, &csp);
    set(headers, header::REFERRER_POLICY, "no-referrer");
    set(headers, header::X_FRAME_OPTIONS, "DENY");
    set(headers, header::X_CONTENT_TYPE_OPTIONS, "nosniff");
    set(headers, header::CACHE_CONTROL, "no-store");
    response
}
