//! Extractors whose rejections use the error envelope (axum's own answer text/plain).

use axum::extract::rejection::JsonRejection;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use serde::de::DeserializeOwned;

use super::AppState;
use super::error::{ApiError, ErrorCode};
use crate::auth::dpop::{DpopError, ProofRequest, VerifiedProof};

/// A JSON body (`Content-Type: application/json`, at most 1 MiB).
#[derive(Debug)]
pub struct ApiJson<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        match axum::Json::<T>::from_request(req, state).await {
            Ok(axum::Json(value)) => Ok(Self(value)),
            Err(JsonRejection::MissingJsonContentType(_)) => Err(ApiError::new(
                ErrorCode::UnsupportedMediaType,
                "send the body as JSON with Content-Type: application/json",
            )),
            Err(JsonRejection::BytesRejection(e))
                if e.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE =>
            {
                Err(ApiError::new(
                    ErrorCode::PayloadTooLarge,
                    "the body is larger than 1 MiB",
                ))
            }
            Err(JsonRejection::JsonDataError(e)) => {
                Err(ApiError::new(ErrorCode::InvalidRequest, e.body_text()))
            }
            Err(JsonRejection::JsonSyntaxError(_)) => Err(ApiError::new(
                ErrorCode::InvalidRequest,
                "the body is not valid JSON",
            )),
            Err(e) => Err(ApiError::new(ErrorCode::InvalidRequest, e.body_text())),
        }
    }
}

/// A verified DPoP proof on a request without an access token (login, redeem, pairing): the
/// key that starts a flow must be the key that finishes it.
#[derive(Debug)]
pub struct TokenlessDpop(pub VerifiedProof);

impl FromRequestParts<AppState> for TokenlessDpop {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let mut values = parts.headers.get_all("dpop").iter();
        let (Some(value), None) = (values.next(), values.next()) else {
            return Err(ApiError::new(
                ErrorCode::InvalidDpopProof,
                "send exactly one DPoP header with a proof by your device key",
            ));
        };
        let proof = value.to_str().map_err(|_| {
            ApiError::new(ErrorCode::InvalidDpopProof, "the DPoP header is not ASCII")
        })?;
        let now = state.now_seconds();
        let request = ProofRequest {
            method: parts.method.as_str(),
            public_url: &state.public_url,
            path: parts.uri.path(),
            access_token: None,
            require_nonce: false,
            now,
        };
        state
            .dpop
            .verify(proof, &request)
            .map(Self)
            .map_err(|e| dpop_error(e, state, now))
    }
}

/// Maps a DPoP failure to its code (a nonce demand carries a fresh nonce).
pub fn dpop_error(e: DpopError, state: &AppState, now: i64) -> ApiError {
    match e {
        DpopError::UseNonce => ApiError::new(ErrorCode::UseDpopNonce, e.to_string())
            .with_dpop_nonce(state.dpop.nonce(now)),
        DpopError::Busy => ApiError::new(ErrorCode::Busy, e.to_string()),
        other => ApiError::new(ErrorCode::InvalidDpopProof, other.to_string()),
    }
}
