//! OIDC for AWS STS (DESIGN §12): discovery, the JWKS of the OIDC key set (K2; session keys
//! never appear), and `POST /v1/oidc/token`.
//!
//! A token: ES256 by K2, `typ: JWT`, the K2 `kid`; `iss` = `public_url`, `sub` =
//! `agentkeys:actor:<omni>`, `aud` (default `sts.amazonaws.com`, never `agentkeys`), `iat`,
//! `nbf`, `exp` (TTL 300 s by default, 60 … 3,600), `jti`, and the AWS session-tags claim
//! `https://aws.amazon.com/tags` with `agentkeys_actor_omni`, `agentkeys_master_omni` and
//! `agentkeys_user_wallet` (bare lowercase hex; all transitive). AWS limits are enforced: at most
//! 50 tags, keys ≤ 128 and values ≤ 256 characters, the token ≤ 20,000 characters. With
//! `oidc_legacy_claims`, `sub` takes upstream's shape `agentkeys:agent:<user_wallet>` and the
//! two upstream claims are repeated at the top level, so existing trust policies keep working.

use agentkeys_actors::crypto::rfc3339;
use agentkeys_actors::ledger::audit::op;
use agentkeys_actors::scope;
use agentkeys_actors::signer::KeySetName;
use axum::Json;
use axum::extract::State;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::AppState;
use super::error::{ApiError, ErrorCode};
use super::extract::{ApiJson, Authenticated};

/// The default audience (AWS STS).
pub const DEFAULT_AUDIENCE: &str = "sts.amazonaws.com";
/// Default, shortest and longest token lifetime.
pub const TTL: (u64, u64, u64) = (300, 60, 3600);
/// AWS: longest web-identity token.
pub const MAX_TOKEN_CHARS: usize = 20_000;
/// How long clients may cache discovery and keys.
pub const CACHE_SECONDS: u64 = 300;

/// Applies due rotation steps (a failure is logged; the next request retries).
async fn advance_rotation(state: &AppState) {
    if let Err(e) = state.rotator.tick().await {
        tracing::error!(cause = %e, "oidc key rotation step failed");
    }
}

fn cached(body: Value) -> Response {
    let mut response = Json(body).into_response();
    if let Ok(v) = HeaderValue::from_str(&format!("public, max-age={CACHE_SECONDS}")) {
        response.headers_mut().insert(header::CACHE_CONTROL, v);
    }
    response
}

/// OpenID Provider metadata (what AWS IAM and OIDC clients read).
#[utoipa::path(get, path = "/.well-known/openid-configuration", tag = "oidc",
    responses((status = 200, description = "provider metadata", content_type = "application/json")))]
pub async fn discovery(State(state): State<AppState>) -> Response {
    let issuer = &state.public_url;
    cached(json!({
        "issuer": issuer,
        "jwks_uri": format!("{issuer}/.well-known/jwks.json"),
        "response_types_supported": ["id_token"],
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": ["ES256"],
        "claims_supported": ["iss", "sub", "aud", "iat", "nbf", "exp", "jti", "https://aws.amazon.com/tags"],
        "scopes_supported": ["openid"],
    }))
}

/// The public keys of the OIDC key set (never the session keys).
#[utoipa::path(get, path = "/.well-known/jwks.json", tag = "oidc",
    responses((status = 200, description = "JWK set", content_type = "application/json")))]
pub async fn jwks(State(state): State<AppState>) -> Response {
    advance_rotation(&state).await;
    cached(json!({ "keys": state.signer.public_jwks(KeySetName::Oidc) }))
}

/// `POST /v1/oidc/token` body.
#[derive(Debug, Default, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TokenRequest {
    /// The audience (default `sts.amazonaws.com`); the caller needs `oidc:<audience>`.
    pub audience: Option<String>,
    /// Lifetime in seconds (default 300, 60 … 3,600).
    pub ttl_seconds: Option<u64>,
}

/// A minted token.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct TokenResponse {
    /// The JWT (web identity token for `AssumeRoleWithWebIdentity`).
    pub jwt: String,
    /// RFC 3339.
    pub expiration: String,
    /// Its `aud`.
    pub audience: String,
    /// Its `sub`.
    pub sub: String,
}

/// The claims of a token for the caller.
fn claims(
    state: &AppState,
    auth: &Authenticated,
    wallet: &str,
    audience: &str,
    now: i64,
    ttl: u64,
) -> Result<Value, ApiError> {
    let omni = auth.omni.to_string();
    let master = auth.master.to_string();
    let tags = [
        ("agentkeys_actor_omni", omni.as_str()),
        ("agentkeys_master_omni", master.as_str()),
        ("agentkeys_user_wallet", wallet),
    ];
    if tags.len() > 50 || tags.iter().any(|(k, v)| k.len() > 128 || v.len() > 256) {
        return Err(ApiError::internal("session tags over the AWS limits"));
    }
    let mut jti = [0u8; 16];
    aws_lc_rs::rand::fill(&mut jti).map_err(|_| ApiError::internal("random generator failed"))?;
    let principal_tags: serde_json::Map<String, Value> = tags
        .iter()
        .map(|(k, v)| ((*k).to_string(), json!([v])))
        .collect();
    let sub = if state.oidc_legacy_claims {
        format!("agentkeys:agent:{wallet}")
    } else {
        format!("agentkeys:actor:{omni}")
    };
    let mut claims = json!({
        "iss": state.public_url,
        "sub": sub,
        "aud": audience,
        "iat": now,
        "nbf": now,
        "exp": now + i64::try_from(ttl).unwrap_or(3600),
        "jti": hex::encode(jti),
        "https://aws.amazon.com/tags": {
            "principal_tags": principal_tags,
            "transitive_tag_keys": tags.iter().map(|(k, _)| *k).collect::<Vec<_>>(),
        },
    });
    if state.oidc_legacy_claims {
        claims["agentkeys_user_wallet"] = json!(wallet);
        claims["agentkeys_actor_omni"] = json!(omni);
    }
    Ok(claims)
}

/// Mints an OIDC token for the caller (`oidc:<audience>`); audited before the reply.
#[utoipa::path(post, path = "/v1/oidc/token", tag = "oidc",
    params(
        ("Authorization" = String, Header, description = "DPoP <session_jwt>"),
        ("DPoP" = String, Header, description = "a proof with ath")),
    request_body = TokenRequest,
    responses(
        (status = 200, description = "the token", body = TokenResponse),
        (status = 400, description = "invalid_request: audience or ttl", body = super::openapi::ErrorEnvelope),
        (status = 401, description = "invalid_token, invalid_dpop_proof, actor_revoked, binding_revoked", body = super::openapi::ErrorEnvelope),
        (status = 403, description = "scope_denied", body = super::openapi::ErrorEnvelope),
        (status = 503, description = "busy, actor_unavailable, signer_unavailable", body = super::openapi::ErrorEnvelope),
        (status = 500, description = "internal", body = super::openapi::ErrorEnvelope)))]
pub async fn token(
    State(state): State<AppState>,
    auth: Authenticated,
    ApiJson(body): ApiJson<TokenRequest>,
) -> Result<Json<TokenResponse>, ApiError> {
    let audience = body.audience.unwrap_or_else(|| DEFAULT_AUDIENCE.into());
    let needed = scope::oidc(&audience);
    scope::validate(&needed).map_err(|_| {
        ApiError::new(
            ErrorCode::InvalidRequest,
            "audience must be printable ASCII without spaces, at most 256 characters, and never agentkeys",
        )
    })?;
    let ttl = body.ttl_seconds.unwrap_or(TTL.0);
    if !(TTL.1..=TTL.2).contains(&ttl) {
        return Err(ApiError::new(
            ErrorCode::InvalidRequest,
            format!("ttl_seconds must be between {} and {}", TTL.1, TTL.2),
        ));
    }
    auth.require_scope(&needed)?;
    advance_rotation(&state).await;
    let account = state
        .signer
        .account(auth.master, auth.claims.agentkeys.path.clone())
        .await?;
    let wallet = account.wallet.to_string();
    let now = state.now_seconds();
    let claims = claims(&state, &auth, &wallet, &audience, now, ttl)?;
    let sub = claims["sub"].as_str().unwrap_or_default().to_string();
    let jwt = state
        .signer
        .sign_jwt(KeySetName::Oidc, json!({"typ": "JWT"}), claims)
        .await?;
    if jwt.len() > MAX_TOKEN_CHARS {
        return Err(ApiError::internal("token over the AWS size limit"));
    }
    super::sign::audited(&state, &auth, op::OIDC_TOKEN, jwt.as_bytes()).await?;
    Ok(Json(TokenResponse {
        jwt,
        expiration: rfc3339::format((now + i64::try_from(ttl).unwrap_or(3600)) * 1000),
        audience,
        sub,
    }))
}
