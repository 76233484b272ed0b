//! The OpenAPI document, generated from the handlers' annotations, served at
//! `GET /openapi.json`.

use serde::Serialize;
use utoipa::OpenApi;

/// The error envelope of every failure (`docs/api.md` lists the codes).
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ErrorEnvelope {
    /// The stable code, e.g. `invalid_dpop_proof`.
    pub error: String,
    /// What went wrong and how to fix it.
    pub message: String,
    /// Equals the `x-request-id` header.
    pub request_id: String,
}

/// The document's root.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "AgentKeys",
        description = "A key broker for AI agents. Errors use ErrorEnvelope; every response carries x-request-id."
    ),
    components(schemas(ErrorEnvelope))
)]
pub struct ApiDoc;
