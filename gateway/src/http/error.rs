//! The one error type of the HTTP API and its envelope:
//! `{"error": "<code>", "message": "<text>", "request_id": "<id>"}`.
//!
//! Every code has one status (`docs/api.md` lists them). Internal causes are logged with the
//! request id and never sent.

use std::time::Duration;

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::request_id;
use agentkeys_actors::ledger::{IdentityError, LoginError};
use agentkeys_runtime::store::{RevokeError, WriteError};

/// The stable error codes of the API.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
    /// 400: the request is malformed.
    InvalidRequest,
    /// 400: a label breaks the label rules.
    InvalidLabel,
    /// 400: typed data is malformed or over a limit.
    InvalidTypedData,
    /// 400: a SIWE message or its signature is refused.
    InvalidSiwe,
    /// 400: the email confirmation code does not match.
    InvalidConfirmCode,
    /// 400: a policy document is malformed or over a limit (the message names the field).
    InvalidPolicy,
    /// 401: the session token is missing or invalid.
    InvalidToken,
    /// 401: the DPoP proof is missing or invalid.
    InvalidDpopProof,
    /// 401: a fresh `DPoP-Nonce` is required.
    UseDpopNonce,
    /// 401: the actor or an ancestor is revoked.
    ActorRevoked,
    /// 401: the device binding is deleted.
    BindingRevoked,
    /// 403: a scope is missing.
    ScopeDenied,
    /// 403: managed wallets never log in.
    ManagedWallet,
    /// 403: registration is closed for this identity.
    RegistrationClosed,
    /// 403: a policy rule refuses the request (`rule` names it).
    PolicyDenied,
    /// 403: a budget would be exceeded (the budget's state is in the body).
    BudgetExceeded,
    /// 404: no such resource (also other trees).
    NotFound,
    /// 405: the route exists with another method.
    MethodNotAllowed,
    /// 409: the label is taken.
    LabelTaken,
    /// 409: the label was revoked.
    LabelRevoked,
    /// 409: the link code was used.
    LinkCodeUsed,
    /// 409: the approval was already decided, expired or cancelled.
    ApprovalNotPending,
    /// 409: the identity logs into another master.
    IdentityTaken,
    /// 409: the last identity of a master cannot be unlinked.
    LastIdentity,
    /// 403: the identity was unlinked from its master; it logs into nothing.
    IdentityUnlinked,
    /// 502: an OpenID provider could not be reached or refused the exchange.
    ProviderUnavailable,
    /// 502: an OpenID provider's ID token failed validation.
    InvalidIdToken,
    /// 410: expired.
    Expired,
    /// 413: the body is over 1 MiB.
    PayloadTooLarge,
    /// 415: the body is not JSON.
    UnsupportedMediaType,
    /// 429: rate limited.
    RateLimited,
    /// 503: too much in flight; retry.
    Busy,
    /// 503: the actor is restarting or quarantined.
    ActorUnavailable,
    /// 503: the signer is unavailable.
    SignerUnavailable,
    /// 500: an internal failure (no detail).
    Internal,
}

impl ErrorCode {
    /// Every code, for documentation and tests.
    pub const ALL: [ErrorCode; 35] = [
        Self::InvalidRequest,
        Self::InvalidLabel,
        Self::InvalidTypedData,
        Self::InvalidSiwe,
        Self::InvalidConfirmCode,
        Self::InvalidPolicy,
        Self::PolicyDenied,
        Self::BudgetExceeded,
        Self::ApprovalNotPending,
        Self::IdentityTaken,
        Self::LastIdentity,
        Self::IdentityUnlinked,
        Self::ProviderUnavailable,
        Self::InvalidIdToken,
        Self::InvalidToken,
        Self::InvalidDpopProof,
        Self::UseDpopNonce,
        Self::ActorRevoked,
        Self::BindingRevoked,
        Self::ScopeDenied,
        Self::ManagedWallet,
        Self::RegistrationClosed,
        Self::NotFound,
        Self::MethodNotAllowed,
        Self::LabelTaken,
        Self::LabelRevoked,
        Self::LinkCodeUsed,
        Self::Expired,
        Self::PayloadTooLarge,
        Self::UnsupportedMediaType,
        Self::RateLimited,
        Self::Busy,
        Self::ActorUnavailable,
        Self::SignerUnavailable,
        Self::Internal,
    ];

    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::InvalidRequest => "invalid_request",
            Self::InvalidLabel => "invalid_label",
            Self::InvalidTypedData => "invalid_typed_data",
            Self::InvalidSiwe => "invalid_siwe",
            Self::InvalidConfirmCode => "invalid_confirm_code",
            Self::InvalidPolicy => "invalid_policy",
            Self::PolicyDenied => "policy_denied",
            Self::BudgetExceeded => "budget_exceeded",
            Self::ApprovalNotPending => "approval_not_pending",
            Self::IdentityTaken => "identity_taken",
            Self::LastIdentity => "last_identity",
            Self::IdentityUnlinked => "identity_unlinked",
            Self::ProviderUnavailable => "provider_unavailable",
            Self::InvalidIdToken => "invalid_id_token",
            Self::InvalidToken => "invalid_token",
            Self::InvalidDpopProof => "invalid_dpop_proof",
            Self::UseDpopNonce => "use_dpop_nonce",
            Self::ActorRevoked => "actor_revoked",
            Self::BindingRevoked => "binding_revoked",
            Self::ScopeDenied => "scope_denied",
            Self::ManagedWallet => "managed_wallet",
            Self::RegistrationClosed => "registration_closed",
            Self::NotFound => "not_found",
            Self::MethodNotAllowed => "method_not_allowed",
            Self::LabelTaken => "label_taken",
            Self::LabelRevoked => "label_revoked",
            Self::LinkCodeUsed => "link_code_used",
            Self::Expired => "expired",
            Self::PayloadTooLarge => "payload_too_large",
            Self::UnsupportedMediaType => "unsupported_media_type",
            Self::RateLimited => "rate_limited",
            Self::Busy => "busy",
            Self::ActorUnavailable => "actor_unavailable",
            Self::SignerUnavailable => "signer_unavailable",
            Self::Internal => "internal",
        }
    }

    /// The HTTP status.
    pub fn status(self) -> StatusCode {
        use ErrorCode::*;
        match self {
            InvalidRequest | InvalidLabel | InvalidTypedData | InvalidSiwe | InvalidConfirmCode
            | InvalidPolicy => StatusCode::BAD_REQUEST,
            InvalidToken | InvalidDpopProof | UseDpopNonce | ActorRevoked | BindingRevoked => {
                StatusCode::UNAUTHORIZED
            }
            ScopeDenied | ManagedWallet | RegistrationClosed | PolicyDenied | BudgetExceeded
            | IdentityUnlinked => StatusCode::FORBIDDEN,
            NotFound => StatusCode::NOT_FOUND,
            MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            LabelTaken | LabelRevoked | LinkCodeUsed | ApprovalNotPending | IdentityTaken
            | LastIdentity => StatusCode::CONFLICT,
            Expired => StatusCode::GONE,
            PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            RateLimited => StatusCode::TOO_MANY_REQUESTS,
            Busy | ActorUnavailable | SignerUnavailable => StatusCode::SERVICE_UNAVAILABLE,
            ProviderUnavailable | InvalidIdToken => StatusCode::BAD_GATEWAY,
            Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

/// An API error: a code, a message for the client, and optionally a retry hint, a fresh DPoP
/// nonce, and an internal cause that is logged, never sent.
#[derive(Debug)]
pub struct ApiError {
    code: ErrorCode,
    message: String,
    retry_after: Option<Duration>,
    dpop_nonce: Option<String>,
    cause: Option<String>,
    extra: Option<Box<serde_json::Map<String, serde_json::Value>>>,
}

impl ApiError {
    /// An error with a client-facing message.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
            retry_after: None,
            dpop_nonce: None,
            cause: None,
            extra: None,
        }
    }

    /// Adds fields to the envelope (e.g. the `rule` of `policy_denied`); the envelope's own
    /// fields win over any of the same name.
    pub fn with_fields(mut self, fields: serde_json::Value) -> Self {
        if let serde_json::Value::Object(map) = fields {
            self.extra.get_or_insert_with(Default::default).extend(map);
        }
        self
    }

    /// A 500 whose cause is logged only.
    pub fn internal(cause: impl std::fmt::Display) -> Self {
        let mut e = Self::new(ErrorCode::Internal, "internal error");
        e.cause = Some(cause.to_string());
        e
    }

    /// Adds `Retry-After`.
    pub fn retry_after(mut self, after: Duration) -> Self {
        self.retry_after = Some(after);
        self
    }

    /// Adds a fresh `DPoP-Nonce` header.
    pub fn with_dpop_nonce(mut self, nonce: String) -> Self {
        self.dpop_nonce = Some(nonce);
        self
    }

    /// The code.
    pub fn code(&self) -> ErrorCode {
        self.code
    }

    /// The client-facing message.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// Attaches an internal cause: logged with the request id, never sent.
    pub fn with_cause(mut self, cause: impl std::fmt::Display) -> Self {
        self.cause = Some(cause.to_string());
        self
    }
}

impl From<agentkeys_runtime::CallError> for ApiError {
    fn from(e: agentkeys_runtime::CallError) -> Self {
        use agentkeys_runtime::CallError;
        match e {
            CallError::NotFound => ApiError::new(ErrorCode::NotFound, "no such actor"),
            CallError::Revoked { .. } => ApiError::new(
                ErrorCode::ActorRevoked,
                "this actor or one of its ancestors was revoked",
            ),
            CallError::Unavailable { retry_after, .. } => ApiError::new(
                ErrorCode::ActorUnavailable,
                "the actor is restarting after a failure; retry",
            )
            .retry_after(retry_after),
            CallError::Busy | CallError::Stopped => {
                ApiError::new(ErrorCode::Busy, "the actor is busy; retry")
            }
            CallError::ShuttingDown => {
                ApiError::new(ErrorCode::Busy, "the server is shutting down; retry")
            }
            CallError::Store(e) => ApiError::internal(e),
        }
    }
}

impl From<agentkeys_actors::principal::PrincipalError> for ApiError {
    fn from(e: agentkeys_actors::principal::PrincipalError) -> Self {
        use agentkeys_actors::principal::PrincipalError as E;
        let message = e.to_string();
        match e {
            E::InvalidLabel(_) => ApiError::new(ErrorCode::InvalidLabel, message),
            E::InvalidScopes(_) => ApiError::new(ErrorCode::InvalidRequest, message),
            E::NotFound | E::NoSuchBinding => super::authz::not_found(),
            E::BindingDeleted => ApiError::new(
                ErrorCode::BindingRevoked,
                "this device's binding was deleted; link the device again",
            ),
            E::WrongKey => ApiError::new(
                ErrorCode::InvalidToken,
                "the token names no binding of this key",
            ),
            E::NoSuchCode => ApiError::new(ErrorCode::NotFound, message),
            E::Revoked { .. } => ApiError::new(
                ErrorCode::ActorRevoked,
                "this actor or one of its ancestors was revoked",
            ),
            E::LabelTaken => ApiError::new(
                ErrorCode::LabelTaken,
                "this label is taken under that parent (with other scopes); choose another",
            ),
            E::LabelRevoked => ApiError::new(ErrorCode::LabelRevoked, message),
            E::TooDeep => ApiError::new(ErrorCode::InvalidRequest, message),
            E::Expired => ApiError::new(
                ErrorCode::Expired,
                "the link code expired; ask for a new one",
            ),
            E::TooManyCodes { retry_after_ms } => ApiError::new(
                ErrorCode::RateLimited,
                "too many link codes are outstanding for this actor; retry when one expires",
            )
            .retry_after(Duration::from_millis(retry_after_ms.saturating_add(999))),
            E::Collision => {
                ApiError::new(ErrorCode::Busy, "retry").retry_after(Duration::from_secs(1))
            }
            E::CodeUsed { omni } => {
                tracing::warn!(actor = %omni, "a used link code was presented by another device key");
                ApiError::new(
                    ErrorCode::LinkCodeUsed,
                    "this link code was already used by another device; ask for a new one",
                )
            }
            E::SetAbove { set_by } => ApiError::new(ErrorCode::ScopeDenied, message)
                .with_fields(json!({"set_by": set_by.to_string()})),
            E::Spend(refusal) => super::policy::refusal(*refusal),
            E::PolicyChanged => ApiError::new(
                ErrorCode::Busy,
                "a policy of this tree changed while the request was checked; retry",
            ),
            E::Signer(e) => e.into(),
            E::Call(e) => e.into(),
            E::Store(e) => e.into(),
        }
    }
}

impl From<WriteError<LoginError>> for ApiError {
    fn from(e: WriteError<LoginError>) -> Self {
        match e {
            WriteError::Rejected(LoginError::ManagedWallet) => ApiError::new(
                ErrorCode::ManagedWallet,
                "this address is a wallet managed by this gateway; managed wallets never log in",
            ),
            WriteError::Rejected(LoginError::RegistrationClosed) => ApiError::new(
                ErrorCode::RegistrationClosed,
                "registration is closed for this identity; ask the operator to add it with `agentkeys admin allow add`",
            ),
            WriteError::Rejected(LoginError::Revoked { .. }) => ApiError::new(
                ErrorCode::ActorRevoked,
                "this account was revoked by the operator",
            ),
            WriteError::Rejected(LoginError::NotMaster) => {
                ApiError::internal("login omni names an agent")
            }
            WriteError::Rejected(LoginError::IdentityUnlinked) => ApiError::new(
                ErrorCode::IdentityUnlinked,
                "this identity was unlinked from its account; sign in with one of the account's other identities",
            ),
            WriteError::Store(e) => e.into(),
        }
    }
}

impl From<WriteError<IdentityError>> for ApiError {
    fn from(e: WriteError<IdentityError>) -> Self {
        let refusal = match e {
            WriteError::Rejected(refusal) => refusal,
            WriteError::Store(e) => return e.into(),
        };
        let message = refusal.to_string();
        match refusal {
            IdentityError::Taken => ApiError::new(
                ErrorCode::IdentityTaken,
                "this identity already signs in to another account; unlink it there first",
            ),
            IdentityError::ManagedWallet => ApiError::new(
                ErrorCode::ManagedWallet,
                "this address is a wallet managed by this gateway; managed wallets are never login identities",
            ),
            IdentityError::TooMany => ApiError::new(ErrorCode::InvalidRequest, message),
            IdentityError::NotFound => ApiError::new(ErrorCode::NotFound, message),
            IdentityError::Last => ApiError::new(
                ErrorCode::LastIdentity,
                "this is the account's last identity; link another one before unlinking it",
            ),
            IdentityError::NotLive => ApiError::new(ErrorCode::ActorRevoked, message),
        }
    }
}

impl From<WriteError<RevokeError>> for ApiError {
    fn from(e: WriteError<RevokeError>) -> Self {
        match e {
            WriteError::Rejected(RevokeError::NotFound) => super::authz::not_found(),
            WriteError::Store(e) => e.into(),
        }
    }
}

impl From<agentkeys_actors::signer::SignerError> for ApiError {
    fn from(e: agentkeys_actors::signer::SignerError) -> Self {
        use agentkeys_actors::signer::SignerError;
        match e {
            SignerError::Unavailable => ApiError::new(
                ErrorCode::SignerUnavailable,
                "the signer is unavailable; retry",
            ),
            SignerError::ManagedWalletLogin | SignerError::NotAuthorized(_) => {
                ApiError::new(ErrorCode::InvalidRequest, e.to_string())
            }
            SignerError::Path(_) => ApiError::new(ErrorCode::InvalidLabel, e.to_string()),
            SignerError::TypedData(_) => ApiError::new(ErrorCode::InvalidTypedData, e.to_string()),
            SignerError::Tx(_) => ApiError::new(ErrorCode::InvalidRequest, e.to_string()),
            other => ApiError::internal(other),
        }
    }
}

impl From<agentkeys_runtime::store::StoreError> for ApiError {
    fn from(e: agentkeys_runtime::store::StoreError) -> Self {
        use agentkeys_runtime::store::StoreError;
        match e {
            StoreError::Closed => {
                ApiError::new(ErrorCode::Busy, "the server is shutting down; retry")
            }
            StoreError::Unreachable(cause) => {
                let mut error = ApiError::new(ErrorCode::Busy, "the store is unreachable; retry");
                error.cause = Some(cause.to_string());
                error
            }
            other => ApiError::internal(other),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let request_id = request_id::current().unwrap_or_default();
        if let Some(cause) = &self.cause {
            tracing::error!(request_id = %request_id, code = self.code.as_str(), cause = %cause, "request failed");
        }
        let mut body = self.extra.map(|b| *b).unwrap_or_default();
        body.insert("error".into(), json!(self.code.as_str()));
        body.insert("message".into(), json!(self.message));
        body.insert("request_id".into(), json!(request_id));
        let body = serde_json::Value::Object(body);
        let mut response = (self.code.status(), axum::Json(body)).into_response();
        let headers = response.headers_mut();
        let retry = self.retry_after.or(match self.code.status() {
            StatusCode::SERVICE_UNAVAILABLE | StatusCode::TOO_MANY_REQUESTS => {
                Some(Duration::from_secs(1))
            }
            _ => None,
        });
        if let Some(after) = retry {
            let secs = after.as_secs().max(1).to_string();
            if let Ok(v) = HeaderValue::from_str(&secs) {
                headers.insert(header::RETRY_AFTER, v);
            }
        }
        if matches!(
            self.code,
            ErrorCode::InvalidDpopProof | ErrorCode::UseDpopNonce
        ) {
            let value = format!("DPoP algs=\"ES256\", error=\"{}\"", self.code.as_str());
            if let Ok(v) = HeaderValue::from_str(&value) {
                headers.insert(header::WWW_AUTHENTICATE, v);
            }
        }
        if let Some(nonce) = self.dpop_nonce.and_then(|n| HeaderValue::from_str(&n).ok()) {
            headers.insert("dpop-nonce", nonce);
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn docs_api_lists_every_code_with_its_status() {
        let doc = include_str!("../../../docs/api.md");
        for code in ErrorCode::ALL {
            let row = format!("| `{}` | {} |", code.as_str(), code.status().as_u16());
            assert!(doc.contains(&row), "docs/api.md lacks {row}");
        }
        let rows = doc
            .lines()
            .filter(|l| {
                l.starts_with("| `") && l.contains(" | 4")
                    || l.starts_with("| `") && l.contains(" | 5")
            })
            .count();
        assert_eq!(rows, ErrorCode::ALL.len(), "no undocumented extra rows");
    }
}
