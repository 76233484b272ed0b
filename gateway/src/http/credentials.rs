//! The credential vault over HTTP (docs/credentials.md): the master writes, actors whose
//! effective scopes include `cred:read:<service>` read. Values are sealed and opened in the
//! signer; this module holds a plaintext only while one request or response passes through it.

use agentkeys_actors::crypto::rfc3339;
use agentkeys_actors::crypto::vault::MAX_VALUE;
use agentkeys_actors::ledger::audit::op;
use agentkeys_actors::ledger::credentials::{
    DeleteCredential, Inject, PutCredential, VaultWriteError,
};
use agentkeys_actors::scope;
use agentkeys_actors::signer::messages::{VaultOpen, VaultSeal};
use agentkeys_runtime::store::{Origin, WriteError};
use axum::Json;
use axum::extract::State;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use super::AppState;
use super::error::{ApiError, ErrorCode};
use super::extract::{ApiJson, ApiPath, ApiQuery, Authenticated};

/// Longest description.
pub const MAX_DESCRIPTION: usize = 256;

fn invalid(message: impl Into<String>) -> ApiError {
    ApiError::new(ErrorCode::InvalidRequest, message)
}

fn service_name(service: &str) -> Result<(), ApiError> {
    if scope::is_service(service) {
        Ok(())
    } else {
        Err(invalid(
            "service must match ^[a-z0-9][a-z0-9._-]{0,63}$ (e.g. openai, github.com)",
        ))
    }
}

fn not_found(service: &str) -> ApiError {
    ApiError::new(
        ErrorCode::NotFound,
        format!("no credential {service:?} in this vault"),
    )
}

fn master_only(auth: &Authenticated) -> Result<(), ApiError> {
    if auth.omni != auth.master {
        return Err(ApiError::new(
            ErrorCode::ScopeDenied,
            "only the master writes its vault",
        ));
    }
    Ok(())
}

/// Headers the proxy may never set from a credential (they steer the request itself).
const RESERVED_HEADERS: [&str; 8] = [
    "host",
    "content-length",
    "transfer-encoding",
    "connection",
    "upgrade",
    "te",
    "trailer",
    "proxy-authorization",
];

/// Checks where a credential may be injected: an `https` base URL without credentials, query or
/// fragment; a header name that is a token and steers nothing; a template with one `{}`.
pub fn check_inject(inject: &Inject) -> Result<(), ApiError> {
    let url = reqwest::Url::parse(&inject.base_url)
        .map_err(|_| invalid("inject.base_url is not a URL"))?;
    let ok_url = url.scheme() == "https"
        && url.host_str().is_some()
        && url.username().is_empty()
        && url.password().is_none()
        && url.query().is_none()
        && url.fragment().is_none()
        && inject.base_url.len() <= 2048;
    if !ok_url {
        return Err(invalid(
            "inject.base_url must be an https URL without credentials, query or fragment, at most 2048 bytes",
        ));
    }
    let header = inject.header.to_ascii_lowercase();
    let token = !header.is_empty()
        && header.len() <= 64
        && header
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b));
    if !token || RESERVED_HEADERS.contains(&header.as_str()) {
        return Err(invalid(
            "inject.header must be a header name such as Authorization or X-Api-Key (not Host, Content-Length or a hop-by-hop header)",
        ));
    }
    let ok_template = inject.template.matches("{}").count() == 1
        && inject.template.len() <= 256
        && !inject.template.chars().any(char::is_control);
    if !ok_template {
        return Err(invalid(
            "inject.template must hold exactly one {} (e.g. \"Bearer {}\"), at most 256 characters, no control characters",
        ));
    }
    Ok(())
}

/// `PUT /v1/credentials/{service}` body.
#[derive(Deserialize, Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PutRequest {
    /// The value, base64 (standard, padded); at most 64 KiB decoded.
    pub value_b64: String,
    /// A note for people (at most 256 characters).
    pub description: Option<String>,
    /// Where the injecting proxy may use it.
    pub inject: Option<InjectView>,
}

impl std::fmt::Debug for PutRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PutRequest")
            .field("value_b64", &"[redacted]")
            .field("description", &self.description)
            .finish_non_exhaustive()
    }
}

/// Where the proxy may use a credential.
#[derive(Debug, Clone, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct InjectView {
    /// An `https` URL; proxied paths are appended to it.
    pub base_url: String,
    /// The header that carries the credential, e.g. `Authorization`.
    pub header: String,
    /// Its value with `{}` for the credential, e.g. `Bearer {}`.
    pub template: String,
}

impl From<InjectView> for Inject {
    fn from(v: InjectView) -> Self {
        Inject {
            base_url: v.base_url,
            header: v.header,
            template: v.template,
        }
    }
}

impl From<Inject> for InjectView {
    fn from(v: Inject) -> Self {
        InjectView {
            base_url: v.base_url,
            header: v.header,
            template: v.template,
        }
    }
}

/// A written version.
#[derive(Debug, Deserialize, Serialize, utoipa::ToSchema)]
pub struct Written {
    /// The service.
    pub service: String,
    /// The version written (or, for a delete, the last one).
    pub version: u64,
    /// The value's size in bytes (0 after a delete).
    pub size: u64,
    /// RFC 3339.
    pub updated_at: String,
}

/// Writes a new version of a credential (the master only).
#[utoipa::path(put, path = "/v1/credentials/{service}", tag = "credentials",
    params(
        ("service" = String, Path, description = "^[a-z0-9][a-z0-9._-]{0,63}$"),
        ("Authorization" = String, Header, description = "DPoP <session_jwt>"),
        ("DPoP" = String, Header, description = "a proof with ath")),
    request_body = PutRequest,
    responses(
        (status = 200, description = "the version written", body = Written),
        (status = 400, description = "invalid_request: service, value, description or inject", body = super::openapi::ErrorEnvelope),
        (status = 401, description = "invalid_token, invalid_dpop_proof, actor_revoked, binding_revoked", body = super::openapi::ErrorEnvelope),
        (status = 403, description = "scope_denied: not the master", body = super::openapi::ErrorEnvelope),
        (status = 503, description = "busy, signer_unavailable", body = super::openapi::ErrorEnvelope),
        (status = 500, description = "internal", body = super::openapi::ErrorEnvelope)))]
pub async fn put(
    State(state): State<AppState>,
    mut auth: Authenticated,
    ApiPath(service): ApiPath<String>,
    ApiJson(body): ApiJson<PutRequest>,
) -> Result<Json<Written>, ApiError> {
    master_only(&auth)?;
    service_name(&service)?;
    let value = Zeroizing::new(
        STANDARD
            .decode(body.value_b64.trim())
            .map_err(|_| invalid("value_b64 must be standard base64"))?,
    );
    drop(body.value_b64);
    if value.is_empty() || value.len() > MAX_VALUE {
        return Err(invalid("a credential value is 1 byte to 64 KiB"));
    }
    if let Some(d) = &body.description
        && (d.chars().count() > MAX_DESCRIPTION || d.chars().any(char::is_control))
    {
        return Err(invalid(
            "description is at most 256 characters without control characters",
        ));
    }
    let inject = body.inject.map(Inject::from);
    if let Some(inject) = &inject {
        check_inject(inject)?;
    }
    // A concurrent write may take the version (or create the data key) first: seal again.
    for _ in 0..4 {
        let (version, key) = state
            .ledger
            .next_credential_version(&auth.master, &service)?;
        let proof = auth.signing_proof(&scope::cred_read(&service))?;
        let sealed = state
            .signer
            .vault_seal(VaultSeal {
                proof,
                service: service.clone(),
                version,
                value: value.clone(),
                key,
            })
            .await?;
        let at = state.clock.now();
        let written = state
            .ledger
            .put_credential(PutCredential {
                master: auth.master,
                service: service.clone(),
                version,
                ciphertext: sealed.ciphertext,
                new_key: sealed.new_key,
                size: u64::try_from(value.len()).unwrap_or(u64::MAX),
                description: body.description.clone(),
                inject: inject.clone(),
                origin: Origin::from(&auth),
                at,
            })
            .await;
        match written {
            Ok(version) => {
                return Ok(Json(Written {
                    service,
                    version,
                    size: u64::try_from(value.len()).unwrap_or(u64::MAX),
                    updated_at: rfc3339::format(i64::try_from(at.as_millis()).unwrap_or(i64::MAX)),
                }));
            }
            Err(WriteError::Rejected(
                VaultWriteError::VersionTaken(_) | VaultWriteError::KeyExists,
            )) => continue,
            Err(e) => return Err(write_error(e, &service)),
        }
    }
    Err(ApiError::new(
        ErrorCode::Busy,
        "other writes of this credential kept winning; retry",
    ))
}

fn write_error(e: WriteError<VaultWriteError>, service: &str) -> ApiError {
    match e {
        WriteError::Rejected(VaultWriteError::NotFound) => not_found(service),
        WriteError::Rejected(refusal @ VaultWriteError::TooMany) => invalid(refusal.to_string()),
        WriteError::Rejected(_) => ApiError::new(ErrorCode::Busy, "a concurrent write; retry"),
        WriteError::Store(e) => e.into(),
    }
}

/// `GET /v1/credentials/{service}` query.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct ReadQuery {
    /// A kept version (default: the newest).
    pub version: Option<u64>,
}

/// A credential's value.
#[derive(Deserialize, Serialize, utoipa::ToSchema)]
pub struct Value {
    /// The service.
    pub service: String,
    /// The version read.
    pub version: u64,
    /// The value, base64.
    pub value_b64: String,
    /// Where the proxy may use it.
    pub inject: Option<InjectView>,
    /// The note.
    pub description: Option<String>,
}

impl std::fmt::Debug for Value {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Value")
            .field("service", &self.service)
            .field("version", &self.version)
            .field("value_b64", &"[redacted]")
            .finish_non_exhaustive()
    }
}

/// Reads a credential (`cred:read:<service>`; masters hold every scope). Audited before the
/// reply; a revoked actor reads nothing from the moment `revoke` returned.
#[utoipa::path(get, path = "/v1/credentials/{service}", tag = "credentials",
    params(
        ("service" = String, Path, description = "the service"),
        ReadQuery,
        ("Authorization" = String, Header, description = "DPoP <session_jwt>"),
        ("DPoP" = String, Header, description = "a proof with ath")),
    responses(
        (status = 200, description = "the value", body = Value),
        (status = 400, description = "invalid_request", body = super::openapi::ErrorEnvelope),
        (status = 401, description = "invalid_token, invalid_dpop_proof, actor_revoked, binding_revoked", body = super::openapi::ErrorEnvelope),
        (status = 403, description = "scope_denied: the effective scopes lack cred:read:<service>", body = super::openapi::ErrorEnvelope),
        (status = 404, description = "not_found: no such credential or version", body = super::openapi::ErrorEnvelope),
        (status = 503, description = "busy, actor_unavailable, signer_unavailable", body = super::openapi::ErrorEnvelope),
        (status = 500, description = "internal (also a record that does not authenticate: nothing is returned)", body = super::openapi::ErrorEnvelope)))]
pub async fn get(
    State(state): State<AppState>,
    mut auth: Authenticated,
    ApiPath(service): ApiPath<String>,
    ApiQuery(query): ApiQuery<ReadQuery>,
) -> Result<Json<Value>, ApiError> {
    service_name(&service)?;
    let needed = scope::cred_read(&service);
    auth.require_scope(&needed)?;
    let stored = state
        .ledger
        .credential(&auth.master, &service, query.version)?
        .ok_or_else(|| not_found(&service))?;
    let proof = auth.signing_proof(&needed)?;
    let value = state
        .signer
        .vault_open(VaultOpen {
            proof,
            service: service.clone(),
            version: stored.version,
            ciphertext: stored.ciphertext,
            key: stored.key,
        })
        .await?;
    let detail = format!("{service}:{}", stored.version);
    super::sign::audited(&state, &auth, op::CRED_READ, detail.as_bytes()).await?;
    Ok(Json(Value {
        service,
        version: stored.version,
        value_b64: STANDARD.encode(value.as_slice()),
        inject: stored.head.inject.map(InjectView::from),
        description: stored.head.description,
    }))
}

/// One listed credential (never its value).
#[derive(Debug, Deserialize, Serialize, utoipa::ToSchema)]
pub struct Listed {
    /// The service.
    pub service: String,
    /// The newest version.
    pub version: u64,
    /// Its size in bytes.
    pub size: u64,
    /// The note.
    pub description: Option<String>,
    /// Where the proxy may send it.
    pub inject_base_url: Option<String>,
    /// RFC 3339.
    pub updated_at: String,
}

/// `GET /v1/credentials`.
#[derive(Debug, Deserialize, Serialize, utoipa::ToSchema)]
pub struct List {
    /// In name order.
    pub credentials: Vec<Listed>,
}

/// The credentials the caller may read (the master: all), without values.
#[utoipa::path(get, path = "/v1/credentials", tag = "credentials",
    params(
        ("Authorization" = String, Header, description = "DPoP <session_jwt>"),
        ("DPoP" = String, Header, description = "a proof with ath")),
    responses(
        (status = 200, description = "the credentials", body = List),
        (status = 401, description = "invalid_token, invalid_dpop_proof, actor_revoked, binding_revoked", body = super::openapi::ErrorEnvelope),
        (status = 503, description = "busy", body = super::openapi::ErrorEnvelope),
        (status = 500, description = "internal", body = super::openapi::ErrorEnvelope)))]
pub async fn list(
    State(state): State<AppState>,
    auth: Authenticated,
) -> Result<Json<List>, ApiError> {
    let credentials = state
        .ledger
        .credentials(&auth.master)?
        .into_iter()
        .filter(|c| auth.require_scope(&scope::cred_read(&c.service)).is_ok())
        .map(|c| Listed {
            service: c.service,
            version: c.head.version,
            size: c.head.size,
            description: c.head.description,
            inject_base_url: c.head.inject.map(|i| i.base_url),
            updated_at: rfc3339::format(i64::try_from(c.head.updated_at).unwrap_or(i64::MAX)),
        })
        .collect();
    Ok(Json(List { credentials }))
}

/// Deletes a credential with every version (the master only).
#[utoipa::path(delete, path = "/v1/credentials/{service}", tag = "credentials",
    params(
        ("service" = String, Path, description = "the service"),
        ("Authorization" = String, Header, description = "DPoP <session_jwt>"),
        ("DPoP" = String, Header, description = "a proof with ath")),
    responses(
        (status = 200, description = "deleted", body = Written),
        (status = 400, description = "invalid_request", body = super::openapi::ErrorEnvelope),
        (status = 401, description = "invalid_token, invalid_dpop_proof, actor_revoked, binding_revoked", body = super::openapi::ErrorEnvelope),
        (status = 403, description = "scope_denied: not the master", body = super::openapi::ErrorEnvelope),
        (status = 404, description = "not_found", body = super::openapi::ErrorEnvelope),
        (status = 503, description = "busy", body = super::openapi::ErrorEnvelope),
        (status = 500, description = "internal", body = super::openapi::ErrorEnvelope)))]
pub async fn delete(
    State(state): State<AppState>,
    auth: Authenticated,
    ApiPath(service): ApiPath<String>,
) -> Result<Json<Written>, ApiError> {
    master_only(&auth)?;
    service_name(&service)?;
    let at = state.clock.now();
    let version = state
        .ledger
        .delete_credential(DeleteCredential {
            master: auth.master,
            service: service.clone(),
            origin: Origin::from(&auth),
            at,
        })
        .await
        .map_err(|e| write_error(e, &service))?;
    Ok(Json(Written {
        service,
        version,
        size: 0,
        updated_at: rfc3339::format(i64::try_from(at.as_millis()).unwrap_or(i64::MAX)),
    }))
}
