//! What the logins finished in a browser share (email magic links, OpenID providers): a confirm
//! code shown by the terminal that started the request and typed into the page that finishes
//! it, so a link someone else started cannot be completed by a victim who clicks it; the
//! request's description (who asked, from where, when); the outcome a login or a link writes;
//! and the status the starting key polls.

use agentkeys_actors::crypto::omni::{Identity, identity_omni, master_omni};
use agentkeys_actors::crypto::rfc3339;
use agentkeys_actors::ledger::{LinkIdentity, Login};
use agentkeys_runtime::Omni;
use axum::Json;
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::AppState;
use super::error::{ApiError, ErrorCode};
use super::pending::{Expiring, PendingMap, SharedKey};
use super::session::{SessionResponse, issue};
use crate::auth::session::{NewSession, Role};

/// Wrong confirm codes before a request is dropped.
pub const MAX_CODE_ATTEMPTS: u32 = 5;
/// Characters of a confirm code (Crockford base32: 30 bits).
pub const CONFIRM_CODE_LEN: usize = 6;

/// Where a request stands.
#[derive(Debug, Clone)]
pub enum Stage {
    /// Waiting for the code.
    Pending,
    /// The right code was given; the login is being written (the request is spent).
    Completing,
    /// Logged in: the master and the binding the status poll's session names.
    Verified {
        /// The master.
        master: Omni,
        /// The binding.
        bid: u64,
    },
    /// Linked to the master that asked.
    Linked,
    /// Refused at completion: the status poll answers this.
    Failed(ErrorCode, String),
}

/// The shared part of a request finished in a browser.
#[derive(Clone)]
pub struct Confirm {
    /// The DPoP key that started it (and polls).
    pub jkt: String,
    /// The code, canonical (no dash).
    code: String,
    /// The address that asked.
    pub requester_ip: String,
    /// A sanitized description of its program.
    pub user_agent: String,
    /// Seconds since the epoch.
    pub requested_at: i64,
    /// Seconds since the epoch.
    pub expires_at: i64,
    wrong_codes: u32,
    /// Where it stands.
    pub stage: Stage,
    /// Link mode: the master whose session started it (`None`: a login).
    pub link: Option<Omni>,
}

impl std::fmt::Debug for Confirm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Confirm")
            .field("jkt", &self.jkt)
            .field("code", &"[redacted]")
            .field("expires_at", &self.expires_at)
            .field("stage", &self.stage)
            .field("link", &self.link)
            .finish_non_exhaustive()
    }
}

/// A pending request finished in a browser: what its flow keeps (`detail`) and the shared part.
#[derive(Debug, Clone)]
pub struct Request<T> {
    /// What the flow keeps (an email address; a provider's state).
    pub detail: T,
    /// The shared part.
    pub confirm: Confirm,
}

impl<T> Expiring for Request<T> {
    fn expires_at(&self) -> i64 {
        self.confirm.expires_at
    }
}

/// A request as a shared database keeps it (sealed by the caller).
#[derive(Serialize, Deserialize)]
struct StoredRequest<D> {
    detail: D,
    jkt: String,
    code: String,
    requester_ip: String,
    user_agent: String,
    requested_at: i64,
    expires_at: i64,
    wrong_codes: u32,
    stage: StoredStage,
    link: Option<String>,
}

#[derive(Serialize, Deserialize)]
#[serde(tag = "stage", rename_all = "snake_case")]
enum StoredStage {
    Pending,
    Completing,
    Verified { master: String, bid: u64 },
    Linked,
    Failed { code: String, message: String },
}

/// What a flow keeps besides the shared part, as a shared database keeps it.
pub trait StoredDetail: Sized {
    /// Its stored form.
    type Stored: Serialize + serde::de::DeserializeOwned;
    /// To the stored form.
    fn to_stored(&self) -> Self::Stored;
    /// From the stored form.
    fn load(stored: Self::Stored) -> Option<Self>;
}

impl StoredDetail for String {
    type Stored = String;
    fn to_stored(&self) -> String {
        self.clone()
    }
    fn load(stored: String) -> Option<String> {
        Some(stored)
    }
}

impl<T: StoredDetail> super::pending::SharedEntry for Request<T> {
    fn encode(&self) -> Result<Vec<u8>, ApiError> {
        let c = &self.confirm;
        let stage = match &c.stage {
            Stage::Pending => StoredStage::Pending,
            Stage::Completing => StoredStage::Completing,
            Stage::Verified { master, bid } => StoredStage::Verified {
                master: master.to_string(),
                bid: *bid,
            },
            Stage::Linked => StoredStage::Linked,
            Stage::Failed(code, message) => StoredStage::Failed {
                code: code.as_str().to_string(),
                message: message.clone(),
            },
        };
        serde_json::to_vec(&StoredRequest {
            detail: self.detail.to_stored(),
            jkt: c.jkt.clone(),
            code: c.code.clone(),
            requester_ip: c.requester_ip.clone(),
            user_agent: c.user_agent.clone(),
            requested_at: c.requested_at,
            expires_at: c.expires_at,
            wrong_codes: c.wrong_codes,
            stage,
            link: c.link.map(|m| m.to_string()),
        })
        .map_err(ApiError::internal)
    }

    fn decode(bytes: &[u8]) -> Option<Self> {
        let s: StoredRequest<T::Stored> = serde_json::from_slice(bytes).ok()?;
        let stage = match s.stage {
            StoredStage::Pending => Stage::Pending,
            StoredStage::Completing => Stage::Completing,
            StoredStage::Verified { master, bid } => Stage::Verified {
                master: master.parse().ok()?,
                bid,
            },
            StoredStage::Linked => Stage::Linked,
            StoredStage::Failed { code, message } => Stage::Failed(
                ErrorCode::ALL.into_iter().find(|c| c.as_str() == code)?,
                message,
            ),
        };
        Some(Request {
            detail: T::load(s.detail)?,
            confirm: Confirm {
                jkt: s.jkt,
                code: s.code,
                requester_ip: s.requester_ip,
                user_agent: s.user_agent,
                requested_at: s.requested_at,
                expires_at: s.expires_at,
                wrong_codes: s.wrong_codes,
                stage,
                link: match s.link {
                    Some(m) => Some(m.parse().ok()?),
                    None => None,
                },
            },
        })
    }

    fn owner(&self) -> &str {
        &self.confirm.jkt
    }
}

impl Confirm {
    /// A new request by `jkt` from `ip`, live for `ttl` seconds.
    pub fn new(
        jkt: String,
        ip: std::net::IpAddr,
        headers: &HeaderMap,
        now: i64,
        ttl: i64,
        link: Option<Omni>,
    ) -> Result<Self, ApiError> {
        Ok(Self {
            jkt,
            code: super::crockford::random(CONFIRM_CODE_LEN)?,
            requester_ip: ip.to_string(),
            user_agent: super::useragent::describe(
                headers
                    .get(header::USER_AGENT)
                    .and_then(|v| v.to_str().ok()),
            ),
            requested_at: now,
            expires_at: now + ttl,
            wrong_codes: 0,
            stage: Stage::Pending,
            link,
        })
    }

    /// The code as the terminal shows it (`ABC-DEF`).
    pub fn display_code(&self) -> String {
        format!("{}-{}", &self.code[..3], &self.code[3..])
    }

    /// Checks a typed code and spends the request (one redemption). Without a code, only
    /// checks the request is live and unused. A wrong code counts; the fifth ends the request.
    pub fn redeem(&mut self, typed: Option<&str>, now: i64) -> Result<(), ApiError> {
        if self.expires_at <= now {
            return Err(expired("this sign-in request expired; start again"));
        }
        if !matches!(self.stage, Stage::Pending) {
            return Err(expired("this sign-in request was already used"));
        }
        let Some(typed) = typed else {
            return Ok(());
        };
        let typed = super::crockford::normalize(typed);
        if !bool::from(typed.as_bytes().ct_eq(self.code.as_bytes())) {
            self.wrong_codes += 1;
            if self.wrong_codes >= MAX_CODE_ATTEMPTS {
                self.stage = Stage::Failed(
                    ErrorCode::Expired,
                    "too many wrong confirmation codes; start again".into(),
                );
            }
            return Err(ApiError::new(
                ErrorCode::InvalidConfirmCode,
                "the confirmation code does not match the one your terminal shows",
            ));
        }
        self.stage = Stage::Completing;
        Ok(())
    }

    /// `login` or `link`, for the page.
    pub fn mode(&self) -> &'static str {
        if self.link.is_some() { "link" } else { "login" }
    }
}

/// A request id: 16 random bytes as hex.
pub fn random_id() -> Result<String, ApiError> {
    let mut bytes = [0u8; 16];
    aws_lc_rs::rand::fill(&mut bytes).map_err(|_| ApiError::internal("random generator failed"))?;
    Ok(hex::encode(bytes))
}

/// A request whose time is up, used, or ended.
pub fn expired(message: &str) -> ApiError {
    ApiError::new(ErrorCode::Expired, message)
}

/// Completes a confirmed request for the proven `identity` (`type`, canonical value): a login
/// (the first creates the master, anchored to `W(identity omni)`) or, in link mode, a link.
pub async fn complete(
    state: &AppState,
    confirm: &Confirm,
    identity: (String, String),
) -> Result<Stage, ApiError> {
    if let Some(master) = confirm.link {
        state
            .ledger
            .link_identity(LinkIdentity {
                master,
                identity,
                wallet: None,
                origin: agentkeys_runtime::store::Origin {
                    actor: Some(master),
                    request_id: state.request_id(),
                },
                at: state.clock.now(),
            })
            .await?;
        return Ok(Stage::Linked);
    }
    let parsed = Identity::of(&identity.0, &identity.1)
        .map_err(|e| ApiError::new(ErrorCode::InvalidRequest, e.to_string()))?;
    let id_omni = identity_omni(&state.client_id, parsed)
        .map_err(|e| ApiError::new(ErrorCode::InvalidRequest, e.to_string()))?;
    let anchor = state.signer.account(id_omni, String::new()).await?.wallet;
    let master = master_omni(&state.client_id, &anchor.to_string()).map_err(ApiError::internal)?;
    let wallet = state.signer.account(master, String::new()).await?.wallet;
    let kind = identity.0.clone();
    let logged_in = state
        .ledger
        .login(Login {
            master,
            wallet: wallet.0,
            identity,
            signer: None,
            anchor: Some(anchor.0),
            registration: state.registration,
            jkt: confirm.jkt.clone(),
            device_label: "login".into(),
            request_id: state.request_id(),
            at: state.clock.now(),
        })
        .await?;
    if logged_in.new_master {
        tracing::info!(master = %logged_in.record.omni, kind = %kind, "new master registered");
    }
    Ok(Stage::Verified {
        master: logged_in.record.omni,
        bid: logged_in.binding.bid,
    })
}

/// Records the outcome of a completion on the request `id` (if it is still held), for every
/// node on a shared map.
pub async fn record<K: std::hash::Hash + Eq + Clone + SharedKey, T: StoredDetail>(
    map: &PendingMap<K, Request<T>>,
    id: &str,
    outcome: &Result<Stage, ApiError>,
) -> Result<(), ApiError> {
    {
        let mut entries = map.lock();
        let Some(slot) = entries.get_mut(id) else {
            return Err(expired("this sign-in request expired; start again"));
        };
        slot.confirm.stage = match outcome {
            Ok(stage) => stage.clone(),
            Err(e) => Stage::Failed(e.code(), e.message().to_string()),
        };
    }
    // The request was taken (`Completing`) by this node's compare-and-set: nobody else
    // changes it now.
    map.publish(id, None).await?;
    Ok(())
}

/// One redemption step of a request named by `key` (a typed code, or none to describe it):
/// brings this node's copy up to date, runs [`Confirm::redeem`] and, when a code was typed
/// (the request changes either way: spent, or one wrong code more), writes it back for every
/// node with a compare-and-set. `check` may refuse the step first (changing nothing). Answers
/// the id and a copy of the request after the step.
pub async fn redeem_step<K: std::hash::Hash + Eq + Clone + SharedKey, T: StoredDetail + Clone>(
    map: &PendingMap<K, Request<T>>,
    key: &K,
    typed: Option<&str>,
    now: i64,
    unknown: ApiError,
    check: impl FnOnce(&Request<T>) -> Result<(), ApiError>,
) -> Result<(String, Request<T>), ApiError> {
    let seen = map.pull(super::pending::Name::Key(key)).await?;
    let (id, redeemed, request) = {
        let mut entries = map.lock();
        let Some(id) = entries.id_of(key) else {
            return Err(unknown);
        };
        let Some(request) = entries.get_mut(&id) else {
            return Err(expired("this sign-in request expired; start again"));
        };
        check(request)?;
        let redeemed = request.confirm.redeem(typed, now);
        (id, redeemed, request.clone())
    };
    if typed.is_some() && !map.publish(&id, seen).await? {
        return Err(expired("this sign-in request was already used"));
    }
    redeemed.map(|()| (id, request))
}

/// The state of a request, for the device key that made it.
#[derive(Debug, Deserialize, Serialize)]
pub struct LoginStatus {
    /// `pending`, `linked` (link mode) or `verified` (with a session).
    pub status: String,
    /// The session, once verified.
    #[serde(flatten)]
    pub session: Option<SessionResponse>,
}

super::openapi::status_or_session_schema!(LoginStatus, ["pending", "linked"], "verified");

/// Answers the poll of request `id` by the key `jkt`: `pending`, `linked`, a refusal, or a
/// session bound to that key.
pub async fn poll<K: std::hash::Hash + Eq + Clone + SharedKey, T: StoredDetail>(
    state: &AppState,
    map: &PendingMap<K, Request<T>>,
    id: &str,
    jkt: String,
) -> Result<Json<LoginStatus>, ApiError> {
    let now = state.now_seconds();
    map.pull(super::pending::Name::Id(id)).await?;
    let found = {
        let entries = map.lock();
        entries
            .get(id)
            .map(|r| &r.confirm)
            .filter(|c| c.jkt == jkt)
            .map(|c| (c.stage.clone(), c.expires_at))
    };
    let Some((stage, expires_at)) = found else {
        return Err(ApiError::new(
            ErrorCode::NotFound,
            "no such sign-in request",
        ));
    };
    if expires_at <= now {
        return Err(expired("this sign-in request expired; start again"));
    }
    let status = |status: &str| LoginStatus {
        status: status.into(),
        session: None,
    };
    match stage {
        Stage::Pending | Stage::Completing => Ok(Json(status("pending"))),
        Stage::Linked => Ok(Json(status("linked"))),
        Stage::Failed(code, message) => Err(ApiError::new(code, message)),
        Stage::Verified { master, bid } => {
            let session = NewSession {
                omni: master,
                role: Role::Master,
                master,
                path: String::new(),
                jkt,
                bid,
            };
            Ok(Json(LoginStatus {
                status: "verified".into(),
                session: Some(issue(state, session).await?),
            }))
        }
    }
}

/// A request as the page describes it before asking for the code.
#[derive(Debug, Deserialize, Serialize, utoipa::ToSchema)]
pub struct Described {
    /// `confirm` (awaiting the code), `verified` (logged in) or `linked`.
    pub status: String,
    /// `login`, or `link` (adds the identity to an existing account).
    pub mode: String,
    /// The IP address that asked.
    pub requester_ip: String,
    /// Its browser and system, sanitized.
    pub user_agent: String,
    /// When it asked (RFC 3339).
    pub requested_at: String,
}

impl Described {
    /// The description of `confirm` with `status`.
    pub fn of(confirm: &Confirm, status: &str) -> Self {
        Self {
            status: status.into(),
            mode: confirm.mode().into(),
            requester_ip: confirm.requester_ip.clone(),
            user_agent: confirm.user_agent.clone(),
            requested_at: rfc3339::format(confirm.requested_at.saturating_mul(1000)),
        }
    }
}

/// The interstitial page's script (inline; allowed by its hash in the CSP).
const LANDING_SCRIPT: &str = include_str!("landing.js");
/// The page around it.
const LANDING_HTML: &str = include_str!("landing.html");

/// The interstitial page for `flow` (`email` or `oauth2`): shows who asked and takes the code;
/// completes by POST. No third-party assets, no referrer, no framing, nothing cached.
pub fn landing_page(flow: &str) -> Response {
    // CSP hashes are standard base64.
    let hash = csp_hash(LANDING_SCRIPT);
    let csp = format!(
        "default-src 'none'; script-src 'sha256-{hash}'; style-src 'unsafe-inline'; \
         connect-src 'self'; form-action 'none'; frame-ancestors 'none'; base-uri 'none'"
    );
    let page = LANDING_HTML
        .replace("/*SCRIPT*/", LANDING_SCRIPT)
        .replace("{{FLOW}}", flow);
    hardened_html(page, &csp)
}

/// The base64 SHA-256 of an inline script or style, as a CSP hash source names it.
pub fn csp_hash(inline: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(Sha256::digest(inline.as_bytes()))
}

/// An HTML page with `csp`, no referrer, no framing, no sniffing and nothing cached.
pub fn hardened_html(page: String, csp: &str) -> Response {
    let mut response = page.into_response();
    let headers = response.headers_mut();
    let set = |headers: &mut HeaderMap, name: header::HeaderName, value: &str| {
        if let Ok(v) = HeaderValue::from_str(value) {
            headers.insert(name, v);
        }
    };
    set(headers, header::CONTENT_TYPE, "text/html; charset=utf-8");
    set(headers, header::CONTENT_SECURITY_POLICY, csp);
    set(headers, header::REFERRER_POLICY, "no-referrer");
    set(headers, header::X_FRAME_OPTIONS, "DENY");
    set(headers, header::X_CONTENT_TYPE_OPTIONS, "nosniff");
    set(headers, header::CACHE_CONTROL, "no-store");
    response
}
