//! The HTTP surface (axum).

mod health;

use agentkeys_actors::signer::SignerHandle;
use agentkeys_runtime::Runtime;
use axum::Router;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Json};
use axum::routing::get;

/// What every handler can reach.
#[derive(Clone, Debug)]
pub struct AppState {
    /// The actor runtime.
    pub runtime: Runtime,
    /// The signer pool.
    pub signer: SignerHandle,
    /// The configured public URL.
    pub public_url: String,
}

/// The public router.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz))
        .fallback(not_found)
        .with_state(state)
}

async fn not_found() -> impl IntoResponse {
    (
        StatusCode::NOT_FOUND,
        Json(serde_json::json!({
            "error": "not_found",
            "message": "no such route",
        })),
    )
}
