//! Request ids: a random id per request, in the `x-request-id` response header and in every
//! error envelope, and on the request's log lines.

use axum::extract::Request;
use axum::http::HeaderValue;
use axum::middleware::Next;
use axum::response::Response;
use tracing::Instrument;

tokio::task_local! {
    static REQUEST_ID: String;
}

/// The id of the request being served on this task, if any.
pub fn current() -> Option<String> {
    REQUEST_ID.try_with(Clone::clone).ok()
}

fn fresh() -> String {
    let mut bytes = [0u8; 12];
    // An id only needs to be unique; fall back to the clock if the RNG fails.
    if aws_lc_rs::rand::fill(&mut bytes).is_err() {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default();
        bytes.copy_from_slice(&nanos.to_be_bytes()[4..]);
    }
    hex::encode(bytes)
}

/// Middleware: assigns the id, runs the request inside it, adds the header.
pub async fn assign(request: Request, next: Next) -> Response {
    let id = fresh();
    let span = tracing::info_span!("request", request_id = %id, method = %request.method(), path = %request.uri().path());
    let mut response = REQUEST_ID
        .scope(id.clone(), next.run(request).instrument(span))
        .await;
    if let Ok(value) = HeaderValue::from_str(&id) {
        response.headers_mut().insert("x-request-id", value);
    }
    response
}
