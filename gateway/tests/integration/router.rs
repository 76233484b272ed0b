//! Handlers called on the router itself (`tower::ServiceExt::oneshot`), no socket: the error
//! envelope of the router's own refusals and of the extractors, and the headers every answer
//! carries.

use crate::common;

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use serde_json::Value;
use tower::ServiceExt;

use common::{Stack, start};

async fn send(stack: &Stack, request: Request<Body>) -> (StatusCode, axum::http::HeaderMap, Value) {
    let response = stack.server.app().oneshot(request).await.expect("answered");
    let (parts, body) = response.into_parts();
    let bytes = axum::body::to_bytes(body, 1 << 20).await.expect("body");
    let json = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    (parts.status, parts.headers, json)
}

fn get(path: &str) -> Request<Body> {
    Request::get(path).body(Body::empty()).expect("request")
}

#[actix::test]
async fn the_router_answers_in_the_envelope_without_a_socket() {
    let dir = tempfile::tempdir().expect("tempdir");
    let stack = start(dir.path(), None).await;

    let (status, headers, body) = send(&stack, get("/healthz")).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(headers[header::CACHE_CONTROL], "no-store");
    assert!(headers.contains_key("x-request-id"));

    let (status, _, body) = send(&stack, get("/v1/no-such-route")).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (StatusCode::NOT_FOUND, Some("not_found"))
    );
    assert!(body["request_id"].as_str().is_some_and(|id| !id.is_empty()));

    let delete = Request::delete("/healthz")
        .body(Body::empty())
        .expect("request");
    let (status, _, body) = send(&stack, delete).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (StatusCode::METHOD_NOT_ALLOWED, Some("method_not_allowed"))
    );

    let create = Request::post("/v1/actors")
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(r#"{"label":"bot"}"#))
        .expect("request");
    let (status, _, body) = send(&stack, create).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (StatusCode::UNAUTHORIZED, Some("invalid_token"))
    );

    let redeem = Request::post("/v1/link/redeem")
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(r#"{"code":"0000-0000-0000-0000-0000"}"#))
        .expect("request");
    let (status, _, body) = send(&stack, redeem).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (StatusCode::UNAUTHORIZED, Some("invalid_dpop_proof"))
    );

    let (status, headers, _) = send(&stack, get("/.well-known/jwks.json")).await;
    assert_eq!(status, StatusCode::OK);
    assert_ne!(
        headers[header::CACHE_CONTROL],
        "no-store",
        "the key set may be cached"
    );
}
