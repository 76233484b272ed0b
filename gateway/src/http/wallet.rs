//! Wallet login, first step: `POST /v1/auth/wallet/start` issues a SIWE challenge bound to the
//! caller's device key (jkt), the address and the chain. Challenges live in memory with a TTL
//! and a global cap; with every node of a PostgreSQL deployment active they are also kept in the
//! database, so any node finishes a login another started, and exactly one node takes a
//! challenge.

use agentkeys_actors::crypto::eip191::Signature;
use agentkeys_actors::crypto::omni::master_omni;
use agentkeys_actors::crypto::rfc3339;
use agentkeys_actors::crypto::siwe::{SiweExpectations, SiweMessage};
use agentkeys_actors::crypto::wallet::Address;
use agentkeys_actors::ledger::Login;
use axum::Json;
use axum::extract::State;
use serde::{Deserialize, Serialize};

use super::AppState;
use super::error::{ApiError, ErrorCode};
use super::extract::{ApiJson, TokenlessDpop};
use super::pending::{Expiring, PendingMap};
use super::session::{SessionResponse, issue};
use crate::auth::session::{NewSession, Role};

/// How long a challenge may be answered.
pub const CHALLENGE_TTL_SECONDS: i64 = 600;
/// Allowed clock difference for SIWE `Issued At` / `Not Before`.
pub const SIWE_SKEW_MS: i64 = 60_000;

/// An issued challenge.
#[derive(Debug, Clone)]
pub struct Challenge {
    /// The device key that asked.
    pub jkt: String,
    /// The address that must sign.
    pub address: Address,
    /// The chain.
    pub chain_id: u64,
    /// The exact message to sign.
    pub message: String,
    /// The nonce inside it.
    pub nonce: String,
    /// Seconds since the epoch.
    pub expires_at: i64,
    /// Link mode: the master that asked to link the address (`None`: a login).
    pub link: Option<agentkeys_runtime::Omni>,
}

/// Outstanding challenges by request id and by nonce (single use: taken by the verify step).
pub type Challenges = PendingMap<String, Challenge>;

/// The kind of a challenge among the logins in progress a shared database keeps.
const SHARED_KIND: &str = "siwe";

/// A challenge as the shared database keeps it.
#[derive(Serialize, Deserialize)]
struct SharedChallenge {
    jkt: String,
    address: String,
    chain_id: u64,
    message: String,
    nonce: String,
    expires_at: i64,
    link: Option<String>,
}

impl From<&Challenge> for SharedChallenge {
    fn from(c: &Challenge) -> Self {
        Self {
            jkt: c.jkt.clone(),
            address: c.address.to_string(),
            chain_id: c.chain_id,
            message: c.message.clone(),
            nonce: c.nonce.clone(),
            expires_at: c.expires_at,
            link: c.link.map(|m| m.to_string()),
        }
    }
}

impl SharedChallenge {
    fn decode(bytes: &[u8]) -> Option<Challenge> {
        let c: Self = serde_json::from_slice(bytes).ok()?;
        Some(Challenge {
            jkt: c.jkt,
            address: c.address.parse().ok()?,
            chain_id: c.chain_id,
            message: c.message,
            nonce: c.nonce,
            expires_at: c.expires_at,
            link: match c.link {
                Some(m) => Some(m.parse().ok()?),
                None => None,
            },
        })
    }
}

/// [`take_challenge`] when the nodes share the database: the database decides who takes it
/// (this node's copy, if any, goes too).
async fn take_shared_challenge(
    state: &AppState,
    cluster: &crate::cluster::Cluster,
    key: ChallengeKey<'_>,
    jkt: &str,
    now: i64,
) -> Result<Result<Challenge, ChallengeRefusal>, ApiError> {
    let (id, nonce) = match key {
        ChallengeKey::RequestId(id) => (Some(id.to_string()), None),
        ChallengeKey::Nonce(nonce) => (None, Some(nonce.as_bytes().to_vec())),
    };
    let taken = cluster
        .engine()
        .take_pending(SHARED_KIND, id, nonce, jkt.to_string())
        .await?;
    let challenge = match taken {
        agentkeys_pg::Taken::Value(bytes) => SharedChallenge::decode(&bytes)
            .ok_or_else(|| ApiError::internal("a stored SIWE challenge is malformed"))?,
        agentkeys_pg::Taken::OtherOwner => return Ok(Err(ChallengeRefusal::OtherKey)),
        agentkeys_pg::Taken::Missing => return Ok(Err(ChallengeRefusal::Unknown)),
    };
    {
        let mut entries = state.challenges.lock();
        let local = entries.id_of(&challenge.nonce);
        if let Some(id) = local {
            entries.remove(&id, &challenge.nonce);
        }
    }
    Ok(if challenge.expires_at > now {
        Ok(challenge)
    } else {
        Err(ChallengeRefusal::Unknown)
    })
}

impl Expiring for Challenge {
    fn expires_at(&self) -> i64 {
        self.expires_at
    }
}

/// How a verify request names its challenge.
#[derive(Debug, Clone, Copy)]
pub enum ChallengeKey<'a> {
    /// The `request_id` from `wallet/start`.
    RequestId(&'a str),
    /// The nonce inside a message built by the client.
    Nonce(&'a str),
}

/// Why a challenge cannot be taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChallengeRefusal {
    /// Unknown, already used or expired.
    Unknown,
    /// Issued to another device key (left in place for its owner).
    OtherKey,
}

/// Takes the challenge named by `key` if it was issued to `jkt` and is live at `now` (single
/// use). A challenge of another key is left in place, so nobody can burn it.
pub fn take_challenge(
    challenges: &Challenges,
    key: ChallengeKey<'_>,
    jkt: &str,
    now: i64,
) -> Result<Challenge, ChallengeRefusal> {
    let mut entries = challenges.lock();
    let id = match key {
        ChallengeKey::RequestId(id) => id.to_string(),
        ChallengeKey::Nonce(nonce) => entries
            .id_of(&nonce.to_string())
            .ok_or(ChallengeRefusal::Unknown)?,
    };
    let challenge = entries.get(&id).ok_or(ChallengeRefusal::Unknown)?;
    if challenge.jkt != jkt {
        return Err(ChallengeRefusal::OtherKey);
    }
    let nonce = challenge.nonce.clone();
    let challenge = entries
        .remove(&id, &nonce)
        .ok_or(ChallengeRefusal::Unknown)?;
    // An expired challenge is dropped as well; either way it is gone.
    if challenge.expires_at > now {
        Ok(challenge)
    } else {
        Err(ChallengeRefusal::Unknown)
    }
}

/// `POST /v1/auth/wallet/start` body.
#[derive(Debug, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StartRequest {
    /// The EOA that will sign (`0x` + 40 hex, any case).
    pub address: String,
    /// The chain to sign for (in the allow-list).
    pub chain_id: u64,
}

/// The challenge.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct StartResponse {
    /// Pass back to `wallet/verify`.
    pub request_id: String,
    /// The exact EIP-4361 text to sign.
    pub message: String,
    /// The nonce inside the message.
    pub nonce: String,
    /// RFC 3339.
    pub expires_at: String,
}

fn random_alphanumeric(n: usize) -> Result<String, ApiError> {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    let mut out = String::with_capacity(n);
    let mut bytes = [0u8; 64];
    while out.len() < n {
        aws_lc_rs::rand::fill(&mut bytes)
            .map_err(|_| ApiError::internal("random generator failed"))?;
        // Rejection sampling: bytes below 248 = 4 × 62 map uniformly onto the alphabet.
        for b in bytes.iter().filter(|b| **b < 248).take(n - out.len()) {
            out.push(char::from(ALPHABET[usize::from(*b) % ALPHABET.len()]));
        }
    }
    Ok(out)
}

/// Issues a challenge bound to the caller's key, the address and the chain.
#[utoipa::path(post, path = "/v1/auth/wallet/start", tag = "login",
    params(("DPoP" = String, Header, description = "a DPoP proof by the device key")),
    request_body = StartRequest,
    responses(
        (status = 200, description = "the SIWE message to sign", body = StartResponse),
        (status = 400, description = "invalid_request, invalid_siwe (chain not allowed)", body = super::openapi::ErrorEnvelope),
        (status = 401, description = "invalid_dpop_proof", body = super::openapi::ErrorEnvelope),
        (status = 413, description = "payload_too_large", body = super::openapi::ErrorEnvelope),
        (status = 415, description = "unsupported_media_type", body = super::openapi::ErrorEnvelope),
        (status = 429, description = "rate_limited: too many requests or challenges outstanding from this client", body = super::openapi::ErrorEnvelope),
        (status = 503, description = "busy", body = super::openapi::ErrorEnvelope),
        (status = 500, description = "internal", body = super::openapi::ErrorEnvelope)))]
pub async fn start(
    State(state): State<AppState>,
    TokenlessDpop(proof, by): TokenlessDpop,
    ApiJson(body): ApiJson<StartRequest>,
) -> Result<Json<StartResponse>, ApiError> {
    challenge(&state, &body, proof.jkt, &by, None).await
}

/// Issues a SIWE challenge for a login or (`link`) for linking the address to that master.
pub async fn challenge(
    state: &AppState,
    body: &StartRequest,
    jkt: String,
    by: &super::pending::Requester,
    link: Option<agentkeys_runtime::Omni>,
) -> Result<Json<StartResponse>, ApiError> {
    let address: Address = body.address.parse().map_err(|_| {
        ApiError::new(
            ErrorCode::InvalidRequest,
            "address must be 0x followed by 40 hex characters",
        )
    })?;
    if !state.siwe_chains.contains(&body.chain_id) {
        return Err(ApiError::new(
            ErrorCode::InvalidSiwe,
            format!(
                "chain_id {} is not accepted here; allowed: {:?}",
                body.chain_id, state.siwe_chains
            ),
        ));
    }
    let now_ms = state.clock.now().as_millis() as i64;
    let now = now_ms / 1000;
    // 17 characters of 62: 101 bits.
    let nonce = random_alphanumeric(17)?;
    let request_id = random_alphanumeric(22)?;
    let expires_at = now + CHALLENGE_TTL_SECONDS;
    let statement = match link {
        None => "Sign in to AgentKeys.",
        Some(_) => "Link this wallet to my AgentKeys account.",
    };
    let message = SiweMessage {
        scheme: None,
        domain: state.domain.clone(),
        address,
        statement: Some(statement.into()),
        uri: state.public_url.clone(),
        version: "1".into(),
        chain_id: body.chain_id,
        nonce: nonce.clone(),
        issued_at: rfc3339::format(now_ms),
        expiration_time: Some(rfc3339::format(expires_at * 1000)),
        not_before: None,
        request_id: Some(request_id.clone()),
        resources: Vec::new(),
    }
    .to_text();
    let issued = Challenge {
        jkt,
        address,
        chain_id: body.chain_id,
        message: message.clone(),
        nonce: nonce.clone(),
        expires_at,
        link,
    };
    let shared = (
        issued.jkt.clone(),
        serde_json::to_vec(&SharedChallenge::from(&issued)),
    );
    // Charged to this node's quotas (the caps are per node), then kept for every node.
    state
        .challenges
        .insert(request_id.clone(), nonce.clone(), issued, by, now)?;
    if let Some(cluster) = &state.cluster {
        let (owner, value) = (shared.0, shared.1.map_err(ApiError::internal)?);
        let row = super::pending::SharedRow {
            kind: SHARED_KIND,
            id: request_id.clone(),
            key_bytes: nonce.as_bytes().to_vec(),
            owner,
            value,
            expires_at,
        };
        state
            .challenges
            .keep_shared(cluster, row, &nonce, by, now)
            .await?;
    }
    Ok(Json(StartResponse {
        request_id,
        message,
        nonce,
        expires_at: rfc3339::format(expires_at * 1000),
    }))
}

/// `POST /v1/auth/wallet/verify` body: the signed message (as built by the client, carrying a
/// server nonce) or the `request_id` of the server's message, and the signature.
#[derive(Debug, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct VerifyRequest {
    /// The exact EIP-4361 text that was signed (give this or `request_id`).
    pub message: Option<String>,
    /// The `request_id` from `wallet/start` when the server's message was signed as is.
    pub request_id: Option<String>,
    /// `personal_sign` signature, `0x` + 130 hex.
    pub signature: String,
}

fn invalid_siwe(message: impl Into<String>) -> ApiError {
    ApiError::new(ErrorCode::InvalidSiwe, message)
}

/// Checks a SIWE login (or, with `link`, a link to that master): the challenge (live, single
/// use, this device key, this purpose), the message (domain, URI, chain, times, address) and
/// the EOA signature. Writes nothing.
pub async fn check_siwe(
    state: &AppState,
    body: &VerifyRequest,
    jkt: &str,
    link: Option<agentkeys_runtime::Omni>,
) -> Result<Address, ApiError> {
    if body.message.is_some() == body.request_id.is_some() {
        return Err(ApiError::new(
            ErrorCode::InvalidRequest,
            "give exactly one of message and request_id",
        ));
    }
    let signature: Signature = body
        .signature
        .parse()
        .map_err(|_| invalid_siwe("signature must be 0x followed by 130 hex characters"))?;
    let now_ms = state.clock.now().as_millis() as i64;
    let now = now_ms / 1000;
    let taken = async |key| {
        let taken = match &state.cluster {
            Some(cluster) => take_shared_challenge(state, cluster, key, jkt, now).await?,
            None => take_challenge(&state.challenges, key, jkt, now),
        };
        taken.map_err(|refusal| match refusal {
            ChallengeRefusal::Unknown => {
                invalid_siwe("the nonce is unknown, used or expired; start again with wallet/start")
            }
            ChallengeRefusal::OtherKey => invalid_siwe(
                "the nonce was issued to another device key; start again with wallet/start",
            ),
        })
    };
    let (challenge, text) = match (&body.message, &body.request_id) {
        (Some(text), None) => {
            let parsed = SiweMessage::parse(text).map_err(|e| invalid_siwe(e.to_string()))?;
            (
                taken(ChallengeKey::Nonce(&parsed.nonce)).await?,
                text.clone(),
            )
        }
        (None, Some(id)) => {
            let challenge = taken(ChallengeKey::RequestId(id)).await?;
            let text = challenge.message.clone();
            (challenge, text)
        }
        _ => {
            return Err(ApiError::new(
                ErrorCode::InvalidRequest,
                "give exactly one of message and request_id",
            ));
        }
    };
    if challenge.link != link {
        return Err(invalid_siwe(
            "the challenge was issued for another purpose (login or link); start again",
        ));
    }
    let message = SiweMessage::parse(&text).map_err(|e| invalid_siwe(e.to_string()))?;
    if message.address != challenge.address || message.chain_id != challenge.chain_id {
        return Err(invalid_siwe(
            "the message's address or chain differs from the challenge's",
        ));
    }
    if message.nonce != challenge.nonce {
        return Err(invalid_siwe(
            "the message's nonce differs from the challenge's",
        ));
    }
    message
        .validate(&SiweExpectations {
            domain: &state.domain,
            uri: &state.public_url,
            chains: &state.siwe_chains,
            now_ms,
            skew_ms: SIWE_SKEW_MS,
        })
        .map_err(|e| invalid_siwe(e.to_string()))?;
    message
        .verify_signature(&text, &signature)
        .map_err(|e| invalid_siwe(e.to_string()))?;
    Ok(message.address)
}

/// Verifies a SIWE login; the first login of an address creates its master durably. Returns a
/// session bound to the caller's device key.
#[utoipa::path(post, path = "/v1/auth/wallet/verify", tag = "login",
    params(("DPoP" = String, Header, description = "a proof by the device key that started the login")),
    request_body = VerifyRequest,
    responses(
        (status = 200, description = "a session", body = super::session::SessionResponse),
        (status = 400, description = "invalid_request, invalid_siwe", body = super::openapi::ErrorEnvelope),
        (status = 401, description = "invalid_dpop_proof, actor_revoked", body = super::openapi::ErrorEnvelope),
        (status = 403, description = "managed_wallet, registration_closed", body = super::openapi::ErrorEnvelope),
        (status = 413, description = "payload_too_large", body = super::openapi::ErrorEnvelope),
        (status = 415, description = "unsupported_media_type", body = super::openapi::ErrorEnvelope),
        (status = 503, description = "busy, signer_unavailable", body = super::openapi::ErrorEnvelope),
        (status = 500, description = "internal", body = super::openapi::ErrorEnvelope)))]
pub async fn verify(
    State(state): State<AppState>,
    TokenlessDpop(proof, _): TokenlessDpop,
    ApiJson(body): ApiJson<VerifyRequest>,
) -> Result<Json<SessionResponse>, ApiError> {
    let address = check_siwe(&state, &body, &proof.jkt, None).await?;
    let lowercase = address.to_string();
    let master = master_omni(&state.client_id, &lowercase).map_err(ApiError::internal)?;
    let account = state.signer.account(master, String::new()).await?;
    let login = Login {
        master,
        wallet: account.wallet.0,
        identity: ("evm".into(), lowercase),
        signer: Some(address.0),
        anchor: None,
        registration: state.registration,
        jkt: proof.jkt.clone(),
        device_label: "login".into(),
        request_id: state.request_id(),
        at: state.clock.now(),
    };
    let logged_in = state.ledger.login(login).await?;
    if logged_in.new_master {
        tracing::info!(master = %master, "new master registered by wallet login");
    }
    // A linked identity logs into the master it is bound to.
    let master = logged_in.record.omni;
    let session = NewSession {
        omni: master,
        role: Role::Master,
        master,
        path: String::new(),
        jkt: proof.jkt,
        bid: logged_in.binding.bid,
    };
    Ok(Json(issue(&state, session).await?))
}
