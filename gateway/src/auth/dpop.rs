//! DPoP proof verification (RFC 9449 §4.3) with the rules of DESIGN §7:
//! `typ` `dpop+jwt`; `alg` ES256 only; the header's `jwk` a public P-256 key (no `d`, no
//! `jku`/`x5u`/`kid` in the header); signature; `htm`; `htu` equal to the configured public URL
//! plus the route path (never built from `Host`; query and fragment ignored as the RFC says);
//! `iat` within ±skew; `ath` present exactly when a token is presented; the nonce when one is
//! required; `jti` at most 64 bytes. Verifying records nothing: the caller records `(jti, jkt)`
//! with [`DpopVerifier::record`] once the request has passed its rate limit and, with a token,
//! once the token is verified and bound to this key (see `replay`).
//!
//! A client's proofs all carry the same header (`typ`, `alg`, its `jwk`), so the key of a header
//! that passed every check is kept parsed, with its thumbprint, keyed by the header's exact
//! base64url segment: later proofs skip the header's decoding, the key's parsing and the
//! thumbprint, and go straight to the signature. The cache is bounded ([`KEY_CACHE`] headers,
//! emptied when full) and filled only by proofs whose signature verified.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED, ParsedPublicKey};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::jwk::{Jwk, ThumbprintHash};
use serde::Deserialize;
use serde_json::Value;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::nonce::NonceIssuer;
use super::replay::{Partition, Quota, ReplayCache, ReplayError};

/// How long a server nonce is accepted: its window and the next (so 15–30 s).
pub const NONCE_WINDOW_SECONDS: i64 = 15;

/// Longest accepted `jti`.
pub const MAX_JTI: usize = 64;

/// Proof headers whose parsed key is kept (see the module documentation).
pub const KEY_CACHE: usize = 10_000;

/// Longest proof header kept in the cache (a P-256 `jwk` header is about 250 bytes).
const MAX_CACHED_HEADER: usize = 1024;

/// Why a proof is refused (each maps to `invalid_dpop_proof`, except where noted).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DpopError {
    /// Not a compact JWS with a JSON header.
    #[error("the DPoP proof is not a well-formed JWT")]
    Malformed,
    /// `typ` is not `dpop+jwt`.
    #[error("the DPoP proof must have typ dpop+jwt")]
    Type,
    /// `alg` is not allowed.
    #[error("the DPoP proof algorithm must be ES256")]
    Algorithm,
    /// The embedded key is missing, private, of the wrong kind, or the header points elsewhere.
    #[error("the DPoP proof must embed a public P-256 jwk and no jku, x5u or kid")]
    Key,
    /// The signature does not verify with the embedded key.
    #[error("the DPoP proof signature does not verify")]
    Signature,
    /// `htm` does not match the request method.
    #[error("the DPoP proof is for another method")]
    Method,
    /// `htu` does not match the public URL and path.
    #[error("the DPoP proof is for another URL")]
    Url,
    /// `iat` outside the allowed skew.
    #[error("the DPoP proof iat is too far from the server's time")]
    Time,
    /// `ath` missing, present without a token, or not the token's hash.
    #[error("the DPoP proof ath does not match the access token")]
    TokenHash,
    /// `jti` missing or longer than 64 bytes.
    #[error("the DPoP proof jti is missing or too long")]
    Jti,
    /// The proof was used before.
    #[error("the DPoP proof was already used")]
    Replayed,
    /// A server nonce is required and missing or stale (`use_dpop_nonce` + a fresh `DPoP-Nonce`).
    #[error("a fresh DPoP-Nonce is required")]
    UseNonce,
    /// This client recorded too many proofs (its replay partition is full even with nonces).
    #[error("this client sent too many DPoP proofs; slow down")]
    TooMany {
        /// Seconds until room frees up.
        retry_after: i64,
    },
}

/// What a verified proof establishes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedProof {
    /// RFC 7638 thumbprint (SHA-256, base64url) of the proof key: compare with `cnf.jkt`.
    pub jkt: String,
    /// The proof's `jti`.
    pub jti: String,
    /// The proof's `iat`.
    pub iat: i64,
    /// When the proof's server nonce stops being accepted, if it carries a valid one.
    pub nonce_expires: Option<i64>,
}

/// The request a proof must match.
#[derive(Debug, Clone)]
pub struct ProofRequest<'a> {
    /// HTTP method.
    pub method: &'a str,
    /// The configured public URL (no trailing slash).
    pub public_url: &'a str,
    /// The route path, e.g. `/v1/whoami`.
    pub path: &'a str,
    /// The access token presented with the proof, if any.
    pub access_token: Option<&'a str>,
    /// Whether this request needs a server nonce.
    pub require_nonce: bool,
    /// Now, seconds since the epoch.
    pub now: i64,
}

#[derive(Deserialize)]
struct Claims {
    jti: Option<String>,
    htm: Option<String>,
    htu: Option<String>,
    iat: Option<i64>,
    ath: Option<String>,
    nonce: Option<String>,
}

/// The key of a proof header that passed every check, parsed once.
struct ProofKey {
    key: ParsedPublicKey,
    /// RFC 7638 thumbprint of the key.
    jkt: String,
}

/// Verifies DPoP proofs; shared by every route.
pub struct DpopVerifier {
    skew: i64,
    replay: ReplayCache,
    nonces: NonceIssuer,
    /// Header segment → its checked, parsed key.
    keys: Mutex<HashMap<Box<str>, Arc<ProofKey>>>,
}

impl std::fmt::Debug for DpopVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DpopVerifier")
            .field("skew", &self.skew)
            .finish_non_exhaustive()
    }
}

impl DpopVerifier {
    /// A verifier allowing `skew_seconds` of clock difference.
    pub fn new(skew_seconds: i64) -> Self {
        Self {
            skew: skew_seconds,
            replay: ReplayCache::new(skew_seconds),
            nonces: NonceIssuer::new(NONCE_WINDOW_SECONDS),
            keys: Mutex::new(HashMap::new()),
        }
    }

    /// A verifier whose nonces use `secret` (the nodes of one deployment share it).
    pub fn with_nonce_secret(skew_seconds: i64, secret: zeroize::Zeroizing<[u8; 32]>) -> Self {
        Self {
            nonces: NonceIssuer::with_secret(secret, NONCE_WINDOW_SECONDS),
            ..Self::new(skew_seconds)
        }
    }

    /// The shared replay state's key of a proof and the second until which it must be kept
    /// (the proof fails its `iat` check, or its nonce, after that).
    pub fn replay_entry(&self, proof: &VerifiedProof) -> ([u8; 16], i64) {
        self.replay.entry(proof)
    }

    /// The replay quota of a client limited to `rate` per second with `burst`.
    pub fn quota(&self, rate: u64, burst: u64) -> Quota {
        self.replay.quota(rate, burst)
    }

    /// Records a verified proof, charged to `partition`: a replay, a full partition (demand a
    /// nonce) or an exhausted one (slow down) is refused.
    pub fn record(
        &self,
        proof: &VerifiedProof,
        partition: Partition,
        quota: Quota,
        now: i64,
    ) -> Result<(), DpopError> {
        self.replay
            .record(
                (&proof.jti, &proof.jkt, proof.iat),
                proof.nonce_expires,
                partition,
                quota,
                now,
            )
            .map_err(|e| match e {
                ReplayError::Replayed => DpopError::Replayed,
                ReplayError::NonceRequired => DpopError::UseNonce,
                ReplayError::Full { retry_after } => DpopError::TooMany { retry_after },
            })
    }

    /// Live recorded proofs of `partition` (for tests and metrics).
    pub fn recorded(&self, partition: Partition) -> usize {
        self.replay.used(partition)
    }

    /// A fresh `DPoP-Nonce` value.
    pub fn nonce(&self, now: i64) -> String {
        self.nonces.issue(now)
    }

    /// Runs every check of the module documentation, the cheap ones before the signature.
    /// Records nothing.
    pub fn verify(&self, proof: &str, req: &ProofRequest<'_>) -> Result<VerifiedProof, DpopError> {
        let mut parts = proof.split('.');
        let (Some(header), Some(payload), Some(signature), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            // Not three segments: the header's rules first (as for any proof), then the
            // signature, which cannot verify.
            let first = proof.split('.').next().unwrap_or_default();
            return Err(parse_header(first).err().unwrap_or(DpopError::Signature));
        };
        let (key, cached) = match self.cached_key(header) {
            Some(key) => (key, true),
            None => (Arc::new(parse_header(header)?), false),
        };
        let signature = URL_SAFE_NO_PAD
            .decode(signature)
            .map_err(|_| DpopError::Signature)?;
        // The signing input is the proof up to its last dot.
        let signed = &proof[..header.len() + 1 + payload.len()];
        key.key
            .verify_sig(signed.as_bytes(), &signature)
            .map_err(|_| DpopError::Signature)?;
        let claims: Claims = URL_SAFE_NO_PAD
            .decode(payload)
            .ok()
            .and_then(|bytes| serde_json::from_slice(&bytes).ok())
            .ok_or(DpopError::Signature)?;
        if !cached {
            self.keep_key(header, key.clone());
        }

        if claims.htm.as_deref() != Some(req.method) {
            return Err(DpopError::Method);
        }
        let htu = claims.htu.as_deref().ok_or(DpopError::Url)?;
        let htu = htu.split(['?', '#']).next().unwrap_or_default();
        if htu != format!("{}{}", req.public_url, req.path) {
            return Err(DpopError::Url);
        }
        let iat = claims.iat.ok_or(DpopError::Time)?;
        // Checked: an `iat` near i64::MIN or MAX must not wrap into the window.
        let off = req.now.checked_sub(iat).map(i64::unsigned_abs);
        if off.is_none_or(|off| off > self.skew.unsigned_abs()) {
            return Err(DpopError::Time);
        }
        match (req.access_token, claims.ath.as_deref()) {
            (None, None) => {}
            (Some(token), Some(ath)) => {
                let expected = URL_SAFE_NO_PAD.encode(Sha256::digest(token.as_bytes()));
                if !bool::from(expected.as_bytes().ct_eq(ath.as_bytes())) {
                    return Err(DpopError::TokenHash);
                }
            }
            _ => return Err(DpopError::TokenHash),
        }
        let nonce_expires = claims
            .nonce
            .as_deref()
            .and_then(|n| self.nonces.expires(n, req.now));
        if req.require_nonce && nonce_expires.is_none() {
            return Err(DpopError::UseNonce);
        }
        let jti = claims
            .jti
            .filter(|j| !j.is_empty() && j.len() <= MAX_JTI)
            .ok_or(DpopError::Jti)?;
        Ok(VerifiedProof {
            jkt: key.jkt.clone(),
            jti,
            iat,
            nonce_expires,
        })
    }

    fn cached_key(&self, header: &str) -> Option<Arc<ProofKey>> {
        self.key_cache().get(header).cloned()
    }

    fn keep_key(&self, header: &str, key: Arc<ProofKey>) {
        if header.len() > MAX_CACHED_HEADER {
            return;
        }
        let mut keys = self.key_cache();
        if keys.len() >= KEY_CACHE {
            keys.clear();
        }
        keys.insert(header.into(), key);
    }

    fn key_cache(&self) -> std::sync::MutexGuard<'_, HashMap<Box<str>, Arc<ProofKey>>> {
        self.keys
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Proof headers whose parsed key is kept (for tests).
    pub fn cached_keys(&self) -> usize {
        self.key_cache().len()
    }
}

/// The header's rules (`typ`, `alg`, where the key comes from).
fn check_header(header: &serde_json::Map<String, Value>) -> Result<(), DpopError> {
    if header.get("typ").and_then(Value::as_str) != Some("dpop+jwt") {
        return Err(DpopError::Type);
    }
    if header.get("alg").and_then(Value::as_str) != Some("ES256") {
        return Err(DpopError::Algorithm);
    }
    if ["jku", "x5u", "x5c", "kid"]
        .iter()
        .any(|k| header.get(*k).is_some())
    {
        return Err(DpopError::Key);
    }
    Ok(())
}

/// Checks a header segment and parses its key: a public P-256 `jwk` and nothing else.
fn parse_header(segment: &str) -> Result<ProofKey, DpopError> {
    let header = decode_segment(segment)?;
    check_header(&header)?;
    let jwk_value = header.get("jwk").ok_or(DpopError::Key)?;
    let jwk_object = jwk_value.as_object().ok_or(DpopError::Key)?;
    if jwk_object.contains_key("d")
        || jwk_object.get("kty").and_then(Value::as_str) != Some("EC")
        || jwk_object.get("crv").and_then(Value::as_str) != Some("P-256")
    {
        return Err(DpopError::Key);
    }
    let jwk: Jwk = serde_json::from_value(jwk_value.clone()).map_err(|_| DpopError::Key)?;
    let coordinate = |name: &str| -> Result<Vec<u8>, DpopError> {
        jwk_object
            .get(name)
            .and_then(Value::as_str)
            .and_then(|c| URL_SAFE_NO_PAD.decode(c).ok())
            .filter(|c| c.len() == 32)
            .ok_or(DpopError::Key)
    };
    // SEC 1 uncompressed point: 04 || x || y.
    let mut point = Vec::with_capacity(65);
    point.push(4);
    point.extend_from_slice(&coordinate("x")?);
    point.extend_from_slice(&coordinate("y")?);
    let key = ParsedPublicKey::new(&ECDSA_P256_SHA256_FIXED, &point).map_err(|_| DpopError::Key)?;
    let jkt = jwk
        .thumbprint(ThumbprintHash::SHA256)
        .map_err(|_| DpopError::Key)?;
    Ok(ProofKey { key, jkt })
}

fn decode_segment(segment: &str) -> Result<serde_json::Map<String, Value>, DpopError> {
    let bytes = URL_SAFE_NO_PAD
        .decode(segment)
        .map_err(|_| DpopError::Malformed)?;
    match serde_json::from_slice(&bytes) {
        Ok(Value::Object(map)) => Ok(map),
        _ => Err(DpopError::Malformed),
    }
}
