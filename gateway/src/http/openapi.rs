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

/// Adds the answers every handler shares through its extractors and middleware, where the
/// handler's annotation does not list them: 400 for malformed path or query parameters and
/// bodies, 413 and 415 for bodies, 429 for the rate limits (per address without a session,
/// per device binding with one). Run once on
/// the generated document (the API fuzzing of `scripts/apifuzz.sh` holds every answer to it).
pub fn add_shared_responses(api: &mut utoipa::openapi::OpenApi) {
    use utoipa::openapi::{ContentBuilder, Ref, RefOr, ResponseBuilder};
    let envelope = |description: &str| {
        RefOr::T(
            ResponseBuilder::new()
                .description(description)
                .content(
                    "application/json",
                    ContentBuilder::new()
                        .schema(Some(Ref::from_schema_name("ErrorEnvelope")))
                        .build(),
                )
                .build(),
        )
    };
    for (path, item) in &mut api.paths.paths {
        // Per address on the routes without a session, per device binding on the others.
        let limited = super::ratelimit::is_unauthenticated(path) || path.starts_with("/v1/");
        let operations = [
            item.get.as_mut(),
            item.put.as_mut(),
            item.post.as_mut(),
            item.delete.as_mut(),
        ];
        for operation in operations.into_iter().flatten() {
            let parameters =
                path.contains('{') || operation.parameters.as_ref().is_some_and(|p| !p.is_empty());
            let body = operation.request_body.is_some();
            let responses = &mut operation.responses.responses;
            let mut add = |status: &str, description: &str| {
                responses
                    .entry(status.to_string())
                    .or_insert_with(|| envelope(description));
            };
            if parameters || body {
                add("400", "invalid_request: a malformed parameter or body");
            }
            if body {
                add("413", "payload_too_large: the body is larger than 1 MiB");
                add(
                    "415",
                    "unsupported_media_type: the body must be JSON (Content-Type: application/json)",
                );
            }
            if limited {
                add(
                    "429",
                    "rate_limited: too many requests from this client address or device binding (Retry-After)",
                );
            }
        }
    }
}

/// The schema of a polled flow: `{status: "<pending>"}` until it completes, then
/// `{status: "<done>", …the session's fields}` (the Rust type flattens an optional session,
/// which utoipa would describe as "a session or null").
pub fn status_or_session(
    pending: &[&str],
    done: &str,
) -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
    use utoipa::openapi::Ref;
    use utoipa::openapi::schema::{AllOfBuilder, ObjectBuilder, OneOfBuilder, Type};
    let status = |values: &[&str]| {
        ObjectBuilder::new()
            .property(
                "status",
                ObjectBuilder::new()
                    .schema_type(Type::String)
                    .enum_values(Some(values.iter().map(|v| v.to_string()))),
            )
            .required("status")
    };
    OneOfBuilder::new()
        .item(status(pending))
        .item(
            AllOfBuilder::new()
                .item(Ref::from_schema_name("SessionResponse"))
                .item(status(&[done])),
        )
        .into()
}

/// Implements `ToSchema` for a polled-status type with [`status_or_session`].
macro_rules! status_or_session_schema {
    ($ty:ty, [$($pending:literal),+], $done:literal) => {
        impl utoipa::PartialSchema for $ty {
            fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
                super::openapi::status_or_session(&[$($pending),+], $done)
            }
        }

        impl utoipa::ToSchema for $ty {
            fn schemas(
                schemas: &mut Vec<(
                    String,
                    utoipa::openapi::RefOr<utoipa::openapi::schema::Schema>,
                )>,
            ) {
                schemas.push((
                    "SessionResponse".into(),
                    <super::session::SessionResponse as utoipa::PartialSchema>::schema(),
                ));
                <super::session::SessionResponse as utoipa::ToSchema>::schemas(schemas);
            }
        }
    };
}
pub(crate) use status_or_session_schema;
