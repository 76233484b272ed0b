//! Session tokens (DESIGN §7): short-lived ES256 JWTs signed by K1, bound to a device key
//! (`cnf.jkt`) and to one device binding (`bid`).
//!
//! Header `typ: at+jwt`, `alg: ES256`, a K1 `kid`. Claims: `iss` (public URL), `sub`
//! (`agentkeys:actor:<omni>`), `aud` (`agentkeys`, a value no OIDC token carries), `iat`, `nbf`,
//! `exp`, `jti`, `cnf.jkt`, `bid`, `agentkeys {omni, role, master_omni, path}`.
//!
//! Verification (RFC 8725): the header is read first; `typ` must be `at+jwt`, `alg` must be
//! ES256 (no `none`, no HS*), the `kid` must name a K1 key held in memory (never a path); then
//! the signature, `iss`, `aud`, and the times against the injected clock. Verified tokens are
//! cached by their SHA-256 until they expire (the cache is emptied when full), so the signature
//! check runs once per token, not once per request.

use std::collections::HashMap;
use std::sync::Mutex;

use agentkeys_actors::signer::{KeySetName, SignerError, SignerHandle};
use agentkeys_runtime::Omni;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

/// The fixed audience of session tokens.
pub const SESSION_AUDIENCE: &str = "agentkeys";
/// Verified tokens remembered.
pub const VERIFIED_CACHE: usize = 100_000;

/// How long tokens live and how much clock difference they tolerate (configuration keys
/// `session_ttl_seconds`, `refresh_max_age_seconds`, `dpop_skew_seconds`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lifetimes {
    /// Session token lifetime.
    pub ttl: i64,
    /// How old (by `iat`) a token may be and still be refreshed.
    pub refresh_max_age: i64,
    /// Allowed clock difference for `iat` / `nbf`.
    pub skew: i64,
}

impl Lifetimes {
    /// The lifetimes of a configuration's limits.
    pub fn of(limits: &crate::config::Limits) -> Self {
        Self {
            ttl: limits.session_ttl_seconds,
            refresh_max_age: limits.refresh_max_age_seconds,
            skew: limits.dpop_skew_seconds,
        }
    }
}

/// The role of the token's actor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// The root of a tree.
    Master,
    /// An agent.
    Agent,
}

impl Role {
    /// The role of a stored actor.
    pub fn of(kind: agentkeys_runtime::store::ActorKind) -> Self {
        match kind {
            agentkeys_runtime::store::ActorKind::Master => Role::Master,
            agentkeys_runtime::store::ActorKind::Agent => Role::Agent,
        }
    }

    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Master => "master",
            Role::Agent => "agent",
        }
    }
}

/// `cnf`: the confirmation key's thumbprint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Confirmation {
    /// RFC 7638 thumbprint of the device key.
    pub jkt: String,
}

/// The `agentkeys` claim.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ActorClaim {
    /// The actor's omni (64 lowercase hex).
    pub omni: String,
    /// Master or agent.
    pub role: Role,
    /// The tree's master.
    pub master_omni: String,
    /// `""` for a master, `//a//b` for agents.
    pub path: String,
}

/// Every claim of a session token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionClaims {
    /// The public URL.
    pub iss: String,
    /// `agentkeys:actor:<omni>`.
    pub sub: String,
    /// `agentkeys`.
    pub aud: String,
    /// Issued at (seconds).
    pub iat: i64,
    /// Not before (seconds).
    pub nbf: i64,
    /// Expires (seconds).
    pub exp: i64,
    /// Unique id.
    pub jti: String,
    /// The device key.
    pub cnf: Confirmation,
    /// The device binding.
    pub bid: u64,
    /// The actor.
    pub agentkeys: ActorClaim,
}

impl SessionClaims {
    /// The actor's omni.
    pub fn omni(&self) -> Result<Omni, TokenError> {
        self.agentkeys.omni.parse().map_err(|_| TokenError::Claims)
    }

    /// The master's omni.
    pub fn master(&self) -> Result<Omni, TokenError> {
        self.agentkeys
            .master_omni
            .parse()
            .map_err(|_| TokenError::Claims)
    }
}

/// Why a token is refused (all `invalid_token`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// Not a compact JWS with a readable header.
    #[error("the token is not a well-formed JWT")]
    Malformed,
    /// `typ` is not `at+jwt` (e.g. an OIDC token).
    #[error("the token is not a session token (typ must be at+jwt)")]
    Type,
    /// `alg` other than ES256 (`none`, HS256, …).
    #[error("the token algorithm must be ES256")]
    Algorithm,
    /// The `kid` names no session key.
    #[error("the token is signed by a key this gateway does not use for sessions")]
    UnknownKey,
    /// The signature does not verify.
    #[error("the token signature does not verify")]
    Signature,
    /// `iss`, `aud`, `sub` or the `agentkeys` claim is wrong.
    #[error("the token was not issued by this gateway for sessions")]
    Claims,
    /// Past `exp`.
    #[error("the token has expired; refresh it")]
    Expired,
    /// Before `nbf` / `iat` beyond the skew.
    #[error("the token is not valid yet")]
    NotYetValid,
    /// Too old to refresh.
    #[error("the token is too old to refresh; log in again")]
    TooOld,
}

/// What a new session carries.
#[derive(Debug, Clone)]
pub struct NewSession {
    /// The actor.
    pub omni: Omni,
    /// Master or agent.
    pub role: Role,
    /// The tree's master.
    pub master: Omni,
    /// The actor's path.
    pub path: String,
    /// The device key thumbprint.
    pub jkt: String,
    /// The binding.
    pub bid: u64,
}

/// Mints and verifies session tokens.
pub struct Sessions {
    issuer: String,
    lifetimes: Lifetimes,
    keys: HashMap<String, DecodingKey>,
    verified: Mutex<HashMap<[u8; 32], SessionClaims>>,
}

impl std::fmt::Debug for Sessions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sessions")
            .field("issuer", &self.issuer)
            .field("keys", &self.keys.len())
            .finish_non_exhaustive()
    }
}

impl Sessions {
    /// Verifies against the K1 public keys of `signer`; `issuer` is the public URL.
    pub fn new(issuer: &str, signer: &SignerHandle, lifetimes: Lifetimes) -> Self {
        Self::from_jwks(issuer, signer.public_jwks(KeySetName::Session), lifetimes)
    }

    /// Verifies against the given public JWKs (those without a usable `kid` are skipped).
    pub fn from_jwks(issuer: &str, jwks: Vec<serde_json::Value>, lifetimes: Lifetimes) -> Self {
        let keys = jwks
            .into_iter()
            .filter_map(|jwk| {
                let kid = jwk.get("kid")?.as_str()?.to_string();
                let jwk: jsonwebtoken::jwk::Jwk = serde_json::from_value(jwk).ok()?;
                Some((kid, DecodingKey::from_jwk(&jwk).ok()?))
            })
            .collect();
        Self {
            issuer: issuer.to_string(),
            lifetimes,
            keys,
            verified: Mutex::new(HashMap::new()),
        }
    }

    /// Signs a new token (K1, in the signer); returns it and its expiry (seconds).
    pub async fn mint(
        &self,
        signer: &SignerHandle,
        session: &NewSession,
        now: i64,
    ) -> Result<(String, i64), SignerError> {
        let mut jti = [0u8; 16];
        aws_lc_rs::rand::fill(&mut jti).map_err(|_| SignerError::Internal("random failed"))?;
        let exp = now.saturating_add(self.lifetimes.ttl);
        let claims = SessionClaims {
            iss: self.issuer.clone(),
            sub: format!("agentkeys:actor:{}", session.omni),
            aud: SESSION_AUDIENCE.into(),
            iat: now,
            nbf: now,
            exp,
            jti: hex::encode(jti),
            cnf: Confirmation {
                jkt: session.jkt.clone(),
            },
            bid: session.bid,
            agentkeys: ActorClaim {
                omni: session.omni.to_string(),
                role: session.role,
                master_omni: session.master.to_string(),
                path: session.path.clone(),
            },
        };
        let claims = serde_json::to_value(&claims)
            .map_err(|_| SignerError::Internal("claims do not serialize"))?;
        let token = signer
            .sign_jwt(KeySetName::Session, json!({"typ": "at+jwt"}), claims)
            .await?;
        Ok((token, exp))
    }

    /// Verifies a token for a request at `now` (every rule, times included).
    pub fn verify(&self, token: &str, now: i64) -> Result<SessionClaims, TokenError> {
        let claims = self.verify_signed(token)?;
        if claims.exp <= now {
            return Err(TokenError::Expired);
        }
        let latest = now.saturating_add(self.lifetimes.skew);
        if claims.nbf > latest || claims.iat > latest {
            return Err(TokenError::NotYetValid);
        }
        Ok(claims)
    }

    /// Verifies a token presented for refresh: it may have expired, but it must have been
    /// issued at most `refresh_max_age` ago.
    pub fn verify_for_refresh(&self, token: &str, now: i64) -> Result<SessionClaims, TokenError> {
        let claims = self.verify_signed(token)?;
        if claims.iat > now.saturating_add(self.lifetimes.skew) {
            return Err(TokenError::NotYetValid);
        }
        if claims.iat < now.saturating_sub(self.lifetimes.refresh_max_age) {
            return Err(TokenError::TooOld);
        }
        Ok(claims)
    }

    /// Header, signature and fixed claims (not the times); cached once verified.
    fn verify_signed(&self, token: &str) -> Result<SessionClaims, TokenError> {
        let digest: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        if let Some(claims) = self.cache().get(&digest) {
            return Ok(claims.clone());
        }
        let claims = self.verify_uncached(token)?;
        let mut cache = self.cache();
        if cache.len() >= VERIFIED_CACHE {
            cache.clear();
        }
        cache.insert(digest, claims.clone());
        Ok(claims)
    }

    fn cache(&self) -> std::sync::MutexGuard<'_, HashMap<[u8; 32], SessionClaims>> {
        self.verified.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn verify_uncached(&self, token: &str) -> Result<SessionClaims, TokenError> {
        let header = raw_header(token)?;
        if header.get("typ").and_then(Value::as_str) != Some("at+jwt") {
            return Err(TokenError::Type);
        }
        if header.get("alg").and_then(Value::as_str) != Some("ES256") {
            return Err(TokenError::Algorithm);
        }
        if ["jku", "x5u", "jwk", "crit"]
            .iter()
            .any(|k| header.get(k).is_some())
        {
            return Err(TokenError::Malformed);
        }
        let kid = header.get("kid").and_then(Value::as_str);
        let key = kid
            .and_then(|kid| self.keys.get(kid))
            .ok_or(TokenError::UnknownKey)?;
        let mut validation = Validation::new(Algorithm::ES256);
        // Times are checked against the injected clock by the callers.
        validation.validate_exp = false;
        validation.validate_nbf = false;
        validation.required_spec_claims.clear();
        validation.set_audience(&[SESSION_AUDIENCE]);
        validation.set_issuer(&[&self.issuer]);
        let data = jsonwebtoken::decode::<SessionClaims>(token, key, &validation).map_err(|e| {
            use jsonwebtoken::errors::ErrorKind;
            match e.kind() {
                ErrorKind::InvalidSignature => TokenError::Signature,
                ErrorKind::InvalidAudience | ErrorKind::InvalidIssuer => TokenError::Claims,
                _ => TokenError::Malformed,
            }
        })?;
        let claims = data.claims;
        if claims.sub != format!("agentkeys:actor:{}", claims.agentkeys.omni)
            || claims.omni().is_err()
            || claims.master().is_err()
        {
            return Err(TokenError::Claims);
        }
        Ok(claims)
    }
}

/// The JOSE header of a compact JWS, read without trusting it.
fn raw_header(token: &str) -> Result<Value, TokenError> {
    use base64::Engine;
    let mut parts = token.split('.');
    let (Some(header), Some(_), Some(_), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(TokenError::Malformed);
    };
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(header)
        .map_err(|_| TokenError::Malformed)?;
    serde_json::from_slice::<Value>(&bytes)
        .ok()
        .filter(Value::is_object)
        .ok_or(TokenError::Malformed)
}
