//! The gateway as an OpenID Connect relying party: login with Google or any OpenID provider
//! (docs/login.md). Authorization code flow with PKCE S256; the ID token is checked against the
//! provider's discovery document and JWKS with `jsonwebtoken`.
//!
//! Nothing a provider answers — codes, tokens, response bodies — is ever logged or put in an
//! error message; errors name the step that failed and, at most, the provider's OAuth error code.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, bail};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::jwk::{AlgorithmParameters, Jwk, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

/// Seconds a discovery document is reused before it is fetched again.
pub const DISCOVERY_TTL_SECONDS: i64 = 3600;
/// Least time between two JWKS fetches caused by an unknown `kid`.
pub const JWKS_REFRESH_SECONDS: i64 = 60;
/// Allowed clock difference for `exp` and `iat`.
pub const CLOCK_SKEW_SECONDS: i64 = 60;
/// Largest provider response read (discovery, JWKS, token).
pub const MAX_RESPONSE_BYTES: usize = 256 * 1024;
/// Longest wait for a provider.
pub const PROVIDER_TIMEOUT: Duration = Duration::from_secs(10);

/// The algorithms a provider may be allowed (asymmetric only: a shared-secret `HS*` token could
/// be forged by anyone holding the client secret, and `none` is never a signature).
const ASYMMETRIC: [Algorithm; 9] = [
    Algorithm::RS256,
    Algorithm::RS384,
    Algorithm::RS512,
    Algorithm::PS256,
    Algorithm::PS384,
    Algorithm::PS512,
    Algorithm::ES256,
    Algorithm::ES384,
    Algorithm::EdDSA,
];

/// How the identity of a provider's account is named (docs/keys-and-signer.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdentityType {
    /// Upstream's Google identity: value = `sub`.
    OAuth2Google,
    /// Any other provider: value = `<issuer>#<sub>`.
    Oidc,
}

impl IdentityType {
    /// The identity type string.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::OAuth2Google => agentkeys_actors::crypto::labels::IDENTITY_OAUTH2_GOOGLE,
            Self::Oidc => agentkeys_actors::crypto::labels::IDENTITY_OIDC,
        }
    }
}

/// How the token endpoint authenticates the client (RFC 6749 §2.3.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenAuth {
    /// HTTP Basic with the form-encoded id and secret.
    Basic,
    /// `client_id` and `client_secret` in the form body.
    Post,
}

/// One `[[oidc_providers]]` table as written in the configuration file.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ProviderFile {
    name: String,
    issuer: String,
    client_id: String,
    client_secret_file: PathBuf,
    scopes: Option<Vec<String>>,
    algorithms: Option<Vec<String>>,
    identity_type: Option<String>,
    token_endpoint_auth: Option<String>,
}

/// A validated provider configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProviderConfig {
    /// The name clients choose it by (`login oauth2 --provider NAME`).
    pub name: String,
    /// The issuer, compared exactly with the discovery document and every ID token.
    pub issuer: String,
    /// The client id registered at the provider (the ID token's `aud`).
    pub client_id: String,
    /// A 0600 file holding the client secret.
    pub client_secret_file: PathBuf,
    /// Scopes asked for (always including `openid`).
    pub scopes: Vec<String>,
    /// ID token algorithms accepted.
    pub algorithms: Vec<Algorithm>,
    /// How the account's identity is named.
    pub identity_type: IdentityType,
    /// How the token endpoint authenticates this client.
    pub token_auth: TokenAuth,
}

/// Google's issuer, the one `oauth2_google` providers are expected to have.
pub const GOOGLE_ISSUER: &str = "https://accounts.google.com";

impl ProviderFile {
    /// Validates one table.
    pub fn validate(self) -> anyhow::Result<ProviderConfig> {
        let name = self.name;
        let ok_name = !name.is_empty()
            && name.len() <= 32
            && name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_');
        if !ok_name {
            bail!("oidc_providers: name {name:?} must be 1 to 32 of a-z, 0-9, '-' and '_'");
        }
        let issuer = self.issuer.trim_end_matches('/').to_string();
        let url = reqwest::Url::parse(&issuer)
            .with_context(|| format!("oidc_providers {name}: issuer {issuer:?} is not a URL"))?;
        let loopback = matches!(url.host_str(), Some("127.0.0.1" | "localhost" | "[::1]"));
        if !(url.scheme() == "https" || url.scheme() == "http" && loopback)
            || url.query().is_some()
            || url.fragment().is_some()
        {
            bail!(
                "oidc_providers {name}: issuer must be an https URL without query or fragment (http only on loopback)"
            );
        }
        if self.client_id.is_empty() || self.client_id.len() > 512 {
            bail!("oidc_providers {name}: client_id must be 1 to 512 characters");
        }
        let scopes = self.scopes.unwrap_or_else(|| vec!["openid".into()]);
        if !scopes.iter().any(|s| s == "openid")
            || scopes
                .iter()
                .any(|s| s.is_empty() || s.contains([' ', '"', '\\']))
        {
            bail!("oidc_providers {name}: scopes must include \"openid\" and hold no spaces");
        }
        let algorithms = match self.algorithms {
            None => vec![Algorithm::RS256, Algorithm::ES256],
            Some(names) => names
                .iter()
                .map(|n| {
                    n.parse::<Algorithm>()
                        .ok()
                        .filter(|a| ASYMMETRIC.contains(a))
                        .with_context(|| {
                            format!(
                                "oidc_providers {name}: algorithm {n:?} is not allowed; use RS256, RS384, RS512, PS256, PS384, PS512, ES256, ES384 or EdDSA"
                            )
                        })
                })
                .collect::<anyhow::Result<Vec<_>>>()?,
        };
        if algorithms.is_empty() {
            bail!("oidc_providers {name}: algorithms must not be empty");
        }
        let identity_type = match self.identity_type.as_deref() {
            None | Some("oidc") => IdentityType::Oidc,
            Some("oauth2_google") => IdentityType::OAuth2Google,
            Some(other) => {
                bail!(
                    "oidc_providers {name}: identity_type must be oidc or oauth2_google, not {other:?}"
                )
            }
        };
        let token_auth = match self.token_endpoint_auth.as_deref() {
            None | Some("client_secret_basic") => TokenAuth::Basic,
            Some("client_secret_post") => TokenAuth::Post,
            Some(other) => bail!(
                "oidc_providers {name}: token_endpoint_auth must be client_secret_basic or client_secret_post, not {other:?}"
            ),
        };
        Ok(ProviderConfig {
            name,
            issuer,
            client_id: self.client_id,
            client_secret_file: self.client_secret_file,
            scopes,
            algorithms,
            identity_type,
            token_auth,
        })
    }
}

impl ProviderConfig {
    /// What `config check` should point out (nothing fatal).
    pub fn warnings(&self) -> Vec<String> {
        let mut out = Vec::new();
        if self.identity_type == IdentityType::OAuth2Google && self.issuer != GOOGLE_ISSUER {
            out.push(format!(
                "oidc_providers {}: identity_type oauth2_google expects the issuer {GOOGLE_ISSUER}, not {}; its identities will not match upstream's Google users",
                self.name, self.issuer
            ));
        }
        out
    }

    /// The identity (`type`, value) of the account `sub` at this provider.
    pub fn identity(&self, sub: &str) -> (String, String) {
        let value = match self.identity_type {
            IdentityType::OAuth2Google => sub.to_string(),
            IdentityType::Oidc => format!("{}#{sub}", self.issuer),
        };
        (self.identity_type.as_str().to_string(), value)
    }
}

/// Reads a client secret: the file must not be readable by group or others.
pub fn read_secret(path: &Path) -> anyhow::Result<Zeroizing<String>> {
    use std::os::unix::fs::PermissionsExt as _;
    let mode = std::fs::metadata(path)
        .with_context(|| format!("cannot read the client secret file {}", path.display()))?
        .permissions()
        .mode();
    if mode & 0o077 != 0 {
        bail!(
            "the client secret file {} is readable by group or others (mode {:o}); run chmod 600 on it",
            path.display(),
            mode & 0o777
        );
    }
    let text = Zeroizing::new(
        std::fs::read_to_string(path)
            .with_context(|| format!("cannot read the client secret file {}", path.display()))?,
    );
    let secret = Zeroizing::new(text.trim().to_string());
    if secret.is_empty() {
        bail!("the client secret file {} is empty", path.display());
    }
    Ok(secret)
}

/// Why a provider step failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OpenIdError {
    /// The provider cannot be reached or answered something unusable.
    #[error("{0}")]
    Unavailable(String),
    /// The ID token failed validation.
    #[error("{0}")]
    InvalidToken(String),
}

/// What the authorization request carries, to be kept until the callback.
pub struct Authorization {
    /// Where the browser goes.
    pub url: String,
    /// The PKCE verifier (kept server-side).
    pub verifier: Zeroizing<String>,
}

impl std::fmt::Debug for Authorization {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authorization")
            .field("url", &self.url)
            .field("verifier", &"[redacted]")
            .finish()
    }
}

/// The validated claims of an ID token that matter here.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    /// The subject.
    pub sub: String,
}

/// The subset of a discovery document used.
#[derive(Debug, Clone, Deserialize)]
struct Discovery {
    issuer: String,
    authorization_endpoint: String,
    token_endpoint: String,
    jwks_uri: String,
}

#[derive(Debug, Default)]
struct Cache {
    discovery: Option<(Discovery, i64)>,
    keys: Vec<Jwk>,
    /// When the JWKS was last fetched (0: never).
    keys_at: i64,
}

/// The reachability of a provider as last seen (for `/readyz`, information only).
#[derive(Debug, Clone, Default, serde::Serialize, utoipa::ToSchema)]
pub struct Reachability {
    /// The provider's name.
    pub name: String,
    /// `ok`, `unknown` or what failed.
    pub discovery: String,
    /// `ok`, `unknown` or what failed.
    pub jwks: String,
    /// When it was last checked (seconds since the epoch; 0: never).
    pub checked_at: i64,
}

/// One provider at run time: its configuration, client secret and caches.
pub struct Provider {
    /// The configuration.
    pub config: ProviderConfig,
    secret: Zeroizing<String>,
    http: reqwest::Client,
    cache: tokio::sync::Mutex<Cache>,
    seen: std::sync::Mutex<Reachability>,
}

impl std::fmt::Debug for Provider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Provider")
            .field("name", &self.config.name)
            .field("issuer", &self.config.issuer)
            .finish_non_exhaustive()
    }
}

fn unavailable(what: &str, name: &str) -> OpenIdError {
    OpenIdError::Unavailable(format!("the provider {name} {what}; try again later"))
}

/// Reads at most [`MAX_RESPONSE_BYTES`] of a response body.
async fn bounded_body(mut response: reqwest::Response) -> Option<Zeroizing<Vec<u8>>> {
    let mut body = Zeroizing::new(Vec::new());
    while let Some(chunk) = response.chunk().await.ok()? {
        if body.len() + chunk.len() > MAX_RESPONSE_BYTES {
            return None;
        }
        body.extend_from_slice(&chunk);
    }
    Some(body)
}

/// Random bytes as base64url.
fn random_b64(n: usize) -> Result<String, OpenIdError> {
    let mut bytes = Zeroizing::new(vec![0u8; n]);
    aws_lc_rs::rand::fill(&mut bytes)
        .map_err(|_| OpenIdError::Unavailable("random generator failed".into()))?;
    Ok(URL_SAFE_NO_PAD.encode(&*bytes))
}

/// `application/x-www-form-urlencoded` of `pairs`.
fn form(pairs: &[(&str, &str)]) -> String {
    let mut url = reqwest::Url::parse("form:").expect("a constant URL");
    url.query_pairs_mut().extend_pairs(pairs);
    url.query().unwrap_or_default().to_string()
}

impl Provider {
    /// A provider with its secret read; nothing is fetched yet.
    pub fn new(config: ProviderConfig, secret: Zeroizing<String>) -> anyhow::Result<Self> {
        let http = reqwest::Client::builder()
            .timeout(PROVIDER_TIMEOUT)
            .connect_timeout(Duration::from_secs(5))
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .context("cannot build the HTTP client for OpenID providers")?;
        let seen = Reachability {
            name: config.name.clone(),
            discovery: "unknown".into(),
            jwks: "unknown".into(),
            checked_at: 0,
        };
        Ok(Self {
            config,
            secret,
            http,
            cache: tokio::sync::Mutex::new(Cache::default()),
            seen: std::sync::Mutex::new(seen),
        })
    }

    /// How the provider looked when last used or checked.
    pub fn reachability(&self) -> Reachability {
        self.seen.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn note(&self, discovery: Option<&str>, jwks: Option<&str>, now: i64) {
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(d) = discovery {
            seen.discovery = d.to_string();
        }
        if let Some(j) = jwks {
            seen.jwks = j.to_string();
        }
        seen.checked_at = now;
    }

    /// Whether `endpoint` may be called: https, or http when the issuer itself is loopback http.
    fn endpoint_ok(&self, endpoint: &str) -> bool {
        reqwest::Url::parse(endpoint).is_ok_and(|u| {
            u.scheme() == "https"
                || (u.scheme() == "http" && self.config.issuer.starts_with("http://"))
        })
    }

    async fn get_json<T: serde::de::DeserializeOwned>(&self, url: &str) -> Option<T> {
        let response = self
            .http
            .get(url)
            .header(reqwest::header::ACCEPT, "application/json")
            .send()
            .await
            .ok()?;
        if !response.status().is_success() {
            return None;
        }
        let body = bounded_body(response).await?;
        serde_json::from_slice(&body).ok()
    }

    async fn discovery(&self, cache: &mut Cache, now: i64) -> Result<Discovery, OpenIdError> {
        if let Some((d, at)) = &cache.discovery
            && now - at < DISCOVERY_TTL_SECONDS
        {
            return Ok(d.clone());
        }
        let name = &self.config.name;
        let url = format!("{}/.well-known/openid-configuration", self.config.issuer);
        let Some(found) = self.get_json::<Discovery>(&url).await else {
            self.note(Some("unreachable or not a discovery document"), None, now);
            return Err(unavailable("cannot be reached (discovery)", name));
        };
        let endpoints = [
            &found.authorization_endpoint,
            &found.token_endpoint,
            &found.jwks_uri,
        ];
        if found.issuer != self.config.issuer || !endpoints.iter().all(|e| self.endpoint_ok(e)) {
            self.note(Some("issuer or endpoints do not match"), None, now);
            return Err(unavailable(
                "publishes a discovery document for another issuer or insecure endpoints",
                name,
            ));
        }
        self.note(Some("ok"), None, now);
        cache.discovery = Some((found.clone(), now));
        Ok(found)
    }

    async fn fetch_keys(&self, cache: &mut Cache, now: i64) -> Result<(), OpenIdError> {
        let discovery = self.discovery(cache, now).await?;
        cache.keys_at = now;
        // Keys of kinds this build cannot read are skipped, not fatal for the others.
        #[derive(Deserialize)]
        struct AnySet {
            keys: Vec<serde_json::Value>,
        }
        match self.get_json::<AnySet>(&discovery.jwks_uri).await {
            Some(set) => {
                cache.keys = set
                    .keys
                    .into_iter()
                    .filter_map(|k| serde_json::from_value::<Jwk>(k).ok())
                    .collect();
                self.note(None, Some("ok"), now);
                Ok(())
            }
            None => {
                self.note(None, Some("unreachable or not a JWK set"), now);
                Err(unavailable("cannot be reached (keys)", &self.config.name))
            }
        }
    }

    /// Fetches the discovery document and the keys again (the readiness check, every few
    /// minutes); failures are only recorded.
    pub async fn check(&self, now: i64) {
        let mut cache = self.cache.lock().await;
        cache.discovery = None;
        let _ = self.fetch_keys(&mut cache, now).await;
    }

    /// Starts an authorization: the URL with `state`, `nonce` and the PKCE S256 challenge.
    pub async fn authorize(
        &self,
        redirect_uri: &str,
        state: &str,
        nonce: &str,
        now: i64,
    ) -> Result<Authorization, OpenIdError> {
        let discovery = {
            let mut cache = self.cache.lock().await;
            self.discovery(&mut cache, now).await?
        };
        // 32 random bytes: a 43-character verifier (RFC 7636 §4.1).
        let verifier = Zeroizing::new(random_b64(32)?);
        let challenge = URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()));
        let mut url = reqwest::Url::parse(&discovery.authorization_endpoint).map_err(|_| {
            unavailable("publishes a bad authorization endpoint", &self.config.name)
        })?;
        url.query_pairs_mut().extend_pairs([
            ("response_type", "code"),
            ("client_id", self.config.client_id.as_str()),
            ("redirect_uri", redirect_uri),
            ("scope", self.config.scopes.join(" ").as_str()),
            ("state", state),
            ("nonce", nonce),
            ("code_challenge", challenge.as_str()),
            ("code_challenge_method", "S256"),
        ]);
        Ok(Authorization {
            url: url.into(),
            verifier,
        })
    }

    /// Exchanges an authorization code and validates the ID token it yields.
    pub async fn exchange(
        &self,
        code: &str,
        verifier: &str,
        redirect_uri: &str,
        nonce: &str,
        now: i64,
    ) -> Result<Verified, OpenIdError> {
        let name = &self.config.name;
        let discovery = {
            let mut cache = self.cache.lock().await;
            self.discovery(&mut cache, now).await?
        };
        let mut pairs = vec![
            ("grant_type", "authorization_code"),
            ("code", code),
            ("redirect_uri", redirect_uri),
            ("code_verifier", verifier),
        ];
        let mut request = self.http.post(&discovery.token_endpoint);
        match self.config.token_auth {
            TokenAuth::Post => {
                pairs.push(("client_id", &self.config.client_id));
                pairs.push(("client_secret", &self.secret));
            }
            TokenAuth::Basic => {
                // RFC 6749 §2.3.1: both parts form-encoded before Basic.
                let user = form(&[("u", &self.config.client_id)]);
                let pass = Zeroizing::new(form(&[("p", &self.secret)]));
                let credentials = Zeroizing::new(format!("{}:{}", &user[2..], &pass[2..]));
                let encoded = Zeroizing::new(
                    base64::engine::general_purpose::STANDARD.encode(credentials.as_bytes()),
                );
                request = request.header(
                    reqwest::header::AUTHORIZATION,
                    format!("Basic {}", encoded.as_str()),
                );
            }
        }
        let body = Zeroizing::new(form(&pairs));
        let response = request
            .header(
                reqwest::header::CONTENT_TYPE,
                "application/x-www-form-urlencoded",
            )
            .header(reqwest::header::ACCEPT, "application/json")
            .body(body.as_str().to_string())
            .send()
            .await
            .map_err(|_| unavailable("cannot be reached (token endpoint)", name))?;
        let status = response.status();
        let Some(bytes) = bounded_body(response).await else {
            return Err(unavailable("sent an unreadable token response", name));
        };
        #[derive(Deserialize)]
        struct TokenResponse {
            id_token: Option<String>,
            error: Option<String>,
        }
        let parsed: Option<TokenResponse> = serde_json::from_slice(&bytes).ok();
        let Some(parsed) = parsed.filter(|_| status.is_success()) else {
            // Only the OAuth error code, and only when it looks like one.
            let code = serde_json::from_slice::<TokenResponse>(&bytes)
                .ok()
                .and_then(|t| t.error)
                .filter(|e| {
                    e.len() <= 40 && e.bytes().all(|b| b.is_ascii_lowercase() || b == b'_')
                });
            return Err(OpenIdError::Unavailable(match code {
                Some(code) => format!("the provider {name} refused the code ({code}); start again"),
                None => format!("the provider {name} refused the code; start again"),
            }));
        };
        let Some(id_token) = parsed.id_token.map(Zeroizing::new) else {
            return Err(OpenIdError::InvalidToken(format!(
                "the provider {name} returned no ID token (is the openid scope allowed?)"
            )));
        };
        self.validate(&id_token, nonce, now).await
    }

    /// Validates an ID token; an unknown `kid` fetches the keys again (at most once a minute).
    pub async fn validate(
        &self,
        token: &str,
        nonce: &str,
        now: i64,
    ) -> Result<Verified, OpenIdError> {
        let mut cache = self.cache.lock().await;
        if cache.keys_at == 0 {
            self.fetch_keys(&mut cache, now).await?;
        }
        let expect = Expect {
            issuer: &self.config.issuer,
            client_id: &self.config.client_id,
            nonce,
            algorithms: &self.config.algorithms,
            now,
        };
        match validate_id_token(token, &cache.keys, &expect) {
            Err(Invalid::UnknownKey) if now - cache.keys_at >= JWKS_REFRESH_SECONDS => {
                self.fetch_keys(&mut cache, now).await?;
                validate_id_token(token, &cache.keys, &expect).map_err(Invalid::into_error)
            }
            other => other.map_err(Invalid::into_error),
        }
    }
}

/// What an ID token must match.
#[derive(Debug, Clone, Copy)]
pub struct Expect<'a> {
    /// The issuer, exactly.
    pub issuer: &'a str,
    /// The provider's client id (`aud`, and `azp` when present).
    pub client_id: &'a str,
    /// The nonce of this login.
    pub nonce: &'a str,
    /// Accepted algorithms.
    pub algorithms: &'a [Algorithm],
    /// Now (seconds since the epoch).
    pub now: i64,
}

/// Why an ID token was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Invalid {
    /// No key of the set matches the token's `kid` (the set may be stale).
    UnknownKey,
    /// Anything else (the text names the check).
    Refused(String),
}

impl Invalid {
    fn into_error(self) -> OpenIdError {
        OpenIdError::InvalidToken(match self {
            Invalid::UnknownKey => {
                "the ID token is signed with a key the provider does not publish".into()
            }
            Invalid::Refused(why) => format!("the ID token was refused: {why}"),
        })
    }
}

fn refused(why: impl Into<String>) -> Invalid {
    Invalid::Refused(why.into())
}

#[derive(Debug, Deserialize)]
struct IdClaims {
    #[serde(default)]
    sub: String,
    #[serde(default)]
    aud: Audience,
    azp: Option<String>,
    exp: Option<i64>,
    iat: Option<i64>,
    nonce: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(untagged)]
enum Audience {
    #[default]
    None,
    Many(Vec<String>),
    One(serde::de::IgnoredAny),
}

/// Checks an ID token (OpenID Connect Core §3.1.3.7) against `keys`: algorithm allowed, a key
/// of the set by `kid` whose type fits, signature, `iss` exact, `aud` contains the client id
/// (and `azp`, required with several audiences, equals it), `exp` and `iat` within the skew,
/// `nonce` equal.
pub fn validate_id_token(
    token: &str,
    keys: &[Jwk],
    expect: &Expect<'_>,
) -> Result<Verified, Invalid> {
    let header = jsonwebtoken::decode_header(token)
        .map_err(|_| refused("it is not a signed JWT with a known algorithm"))?;
    if !expect.algorithms.contains(&header.alg) {
        return Err(refused(format!(
            "algorithm {:?} is not allowed for this provider",
            header.alg
        )));
    }
    let usable = |jwk: &&Jwk| {
        let fits = match &jwk.algorithm {
            AlgorithmParameters::RSA(_) => matches!(
                header.alg,
                Algorithm::RS256
                    | Algorithm::RS384
                    | Algorithm::RS512
                    | Algorithm::PS256
                    | Algorithm::PS384
                    | Algorithm::PS512
            ),
            AlgorithmParameters::EllipticCurve(_) => {
                matches!(header.alg, Algorithm::ES256 | Algorithm::ES384)
            }
            AlgorithmParameters::OctetKeyPair(_) => header.alg == Algorithm::EdDSA,
            _ => false,
        };
        let for_signing = !matches!(
            jwk.common.public_key_use,
            Some(PublicKeyUse::Encryption) | Some(PublicKeyUse::Other(_))
        );
        let same_alg = jwk
            .common
            .key_algorithm
            .is_none_or(|a| format!("{a:?}") == format!("{:?}", header.alg));
        fits && for_signing && same_alg
    };
    let candidates: Vec<&Jwk> = keys
        .iter()
        .filter(usable)
        .filter(|jwk| match &header.kid {
            Some(kid) => jwk.common.key_id.as_deref() == Some(kid.as_str()),
            None => true,
        })
        .collect();
    let jwk = match (candidates.as_slice(), &header.kid) {
        ([one], _) => *one,
        ([], _) => return Err(Invalid::UnknownKey),
        (_, _) => {
            return Err(refused(
                "the token names no key and the provider publishes several",
            ));
        }
    };
    let key = DecodingKey::from_jwk(jwk).map_err(|_| refused("the provider's key is unusable"))?;
    let mut validation = Validation::new(header.alg);
    validation.set_issuer(&[expect.issuer]);
    validation.set_audience(&[expect.client_id]);
    validation.set_required_spec_claims(&["exp", "iat", "iss", "aud", "sub"]);
    validation.validate_exp = false;
    validation.validate_nbf = false;
    let data = jsonwebtoken::decode::<IdClaims>(token, &key, &validation).map_err(|e| {
        use jsonwebtoken::errors::ErrorKind as K;
        refused(match e.kind() {
            K::InvalidSignature => "bad signature",
            K::InvalidIssuer => "wrong issuer",
            K::InvalidAudience => "wrong audience",
            K::MissingRequiredClaim(_) => "a required claim is missing",
            _ => "malformed or unverifiable",
        })
    })?;
    let claims = data.claims;
    let (Some(exp), Some(iat)) = (claims.exp, claims.iat) else {
        return Err(refused("a required claim is missing"));
    };
    if exp <= expect.now - CLOCK_SKEW_SECONDS {
        return Err(refused("expired"));
    }
    if iat > expect.now + CLOCK_SKEW_SECONDS {
        return Err(refused("issued in the future"));
    }
    let several = matches!(&claims.aud, Audience::Many(a) if a.len() > 1);
    match &claims.azp {
        Some(azp) if azp != expect.client_id => return Err(refused("wrong authorized party")),
        None if several => return Err(refused("several audiences and no authorized party")),
        _ => {}
    }
    let nonce_ok = claims.nonce.as_deref().is_some_and(|n| {
        bool::from(subtle::ConstantTimeEq::ct_eq(
            n.as_bytes(),
            expect.nonce.as_bytes(),
        ))
    });
    if !nonce_ok {
        return Err(refused("the nonce is missing or belongs to another login"));
    }
    if claims.sub.is_empty() || claims.sub.len() > 255 || claims.sub.chars().any(char::is_control) {
        return Err(refused("the subject is not 1 to 255 printable characters"));
    }
    Ok(Verified { sub: claims.sub })
}

/// The configured providers by name.
#[derive(Debug, Clone, Default)]
pub struct Providers(BTreeMap<String, Arc<Provider>>);

impl Providers {
    /// Reads each provider's client secret.
    pub fn load(configs: &[ProviderConfig]) -> anyhow::Result<Self> {
        let mut out = BTreeMap::new();
        for config in configs {
            let secret = read_secret(&config.client_secret_file)
                .with_context(|| format!("oidc_providers {}", config.name))?;
            out.insert(
                config.name.clone(),
                Arc::new(Provider::new(config.clone(), secret)?),
            );
        }
        Ok(Self(out))
    }

    /// A provider by name.
    pub fn get(&self, name: &str) -> Option<&Arc<Provider>> {
        self.0.get(name)
    }

    /// Every provider.
    pub fn iter(&self) -> impl Iterator<Item = &Arc<Provider>> {
        self.0.values()
    }

    /// The names, for messages.
    pub fn names(&self) -> Vec<&str> {
        self.0.keys().map(String::as_str).collect()
    }
}

/// Parses the `oidc_providers` array of a configuration file.
pub fn parse_file_tables(value: &toml::Value) -> anyhow::Result<Vec<ProviderConfig>> {
    let tables: Vec<ProviderFile> = value
        .clone()
        .try_into()
        .context("oidc_providers must be an array of tables ([[oidc_providers]])")?;
    let mut out: Vec<ProviderConfig> = Vec::new();
    for table in tables {
        let config = table.validate()?;
        if out.iter().any(|c| c.name == config.name) {
            bail!("oidc_providers: the name {:?} is used twice", config.name);
        }
        out.push(config);
    }
    Ok(out)
}

#[cfg(test)]
mod tests;
