//! What the local servers of the CLI share (`proxy`, `daemon`, `mcp --listen`): the refusal
//! envelope, random bearer tokens, answers read with a cap, and serving until interrupted.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use zeroize::Zeroizing;

/// A refusal: the status and the error envelope (without a request id: the local servers have
/// none of their own).
pub(crate) struct Refusal {
    status: StatusCode,
    code: String,
    message: String,
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        let body = serde_json::json!({"error": self.code, "message": self.message});
        (self.status, axum::Json(body)).into_response()
    }
}

/// A refusal with `status`, `code` and `message`.
pub(crate) fn refuse(status: StatusCode, code: &str, message: &str) -> Refusal {
    Refusal {
        status,
        code: code.to_string(),
        message: message.to_string(),
    }
}

/// 256 random bits, base64url: a bearer token for a local server.
pub(crate) fn random_token() -> anyhow::Result<Zeroizing<String>> {
    let mut bytes = Zeroizing::new([0u8; 32]);
    aws_lc_rs::rand::fill(bytes.as_mut())
        .map_err(|_| anyhow::anyhow!("random generator failed"))?;
    Ok(Zeroizing::new(URL_SAFE_NO_PAD.encode(bytes.as_ref())))
}

/// Why an answer could not be read whole.
pub(crate) enum Unread {
    /// Over the cap.
    TooLarge,
    /// The connection broke off.
    Broken,
}

/// Reads an answer's body, refusing one over `max` bytes.
pub(crate) async fn read_capped(
    answer: &mut reqwest::Response,
    max: usize,
) -> Result<Vec<u8>, Unread> {
    let mut bytes = Vec::new();
    loop {
        match answer.chunk().await {
            Ok(Some(chunk)) if bytes.len() + chunk.len() <= max => {
                bytes.extend_from_slice(&chunk);
            }
            Ok(Some(_)) => return Err(Unread::TooLarge),
            Ok(None) => return Ok(bytes),
            Err(_) => return Err(Unread::Broken),
        }
    }
}

/// Says where `what` listens (one line on stdout, flushed, for scripts to read) and serves
/// `app` on `listener` until SIGINT.
pub(crate) async fn serve_until_interrupted(
    listener: tokio::net::TcpListener,
    app: axum::Router,
    announce: String,
) -> anyhow::Result<()> {
    println!("{announce}");
    use std::io::Write as _;
    let _ = std::io::stdout().flush();
    axum::serve(listener, app)
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await?;
    Ok(())
}
