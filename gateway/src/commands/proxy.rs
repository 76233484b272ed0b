//! `agentkeys proxy --listen 127.0.0.1:PORT` (docs/credentials.md, "The injecting proxy"):
//! `http://127.0.0.1:PORT/<service>/<path>` is forwarded over HTTPS to the credential's stored
//! `inject.base_url` with `<path>` appended, the credential in the stored header. The process
//! that calls the proxy never holds the credential.
//!
//! Refused: a request without the bearer token of the 0600 token file written at start, with a
//! `Host` other than `127.0.0.1:PORT` / `localhost:PORT`, with an `Origin` header (browsers),
//! `CONNECT`, and absolute-form targets. No redirect is followed; bodies are capped both ways;
//! the credential is replaced by `[redacted]` wherever the upstream echoes it back. The value is
//! fetched with the profile's own session for each request (audited by the server), so the
//! answer `actor_revoked` stops the proxy at once: it then refuses everything and says why.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::{Context as _, bail};
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use subtle::ConstantTimeEq as _;
use zeroize::Zeroizing;

use super::local::{Refusal, Unread, random_token, read_capped, refuse, serve_until_interrupted};
use super::{Globals, session, write_private};
use crate::client::{Client, ClientError};
use crate::http::credentials::Value as CredentialValue;

/// Largest request or response body forwarded.
pub const MAX_BODY: usize = 10 << 20;
/// Longest wait for the upstream.
pub const UPSTREAM_TIMEOUT: Duration = Duration::from_secs(60);

/// Options of `agentkeys proxy`.
#[derive(Debug, Clone, clap::Args)]
pub struct ProxyArgs {
    /// A loopback address to listen on (port 0: any free port).
    #[arg(long, default_value = "127.0.0.1:8091")]
    pub listen: SocketAddr,
    /// Where the bearer token is written (0600) [default: <profile>/proxy.token].
    #[arg(long)]
    pub token_file: Option<PathBuf>,
    /// Trust this extra root certificate (PEM) for upstreams: for tests only.
    #[arg(long, hide = true)]
    pub test_ca_file: Option<PathBuf>,
}

struct Proxy {
    globals: Globals,
    client: Client,
    upstream: reqwest::Client,
    token: Zeroizing<String>,
    port: u16,
    revoked: AtomicBool,
}

/// Headers never forwarded in either direction (hop-by-hop, or the proxy's own).
const DROPPED: [&str; 12] = [
    "host",
    "authorization",
    "proxy-authorization",
    "origin",
    "cookie",
    "connection",
    "keep-alive",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "content-length",
];

/// `agentkeys proxy`: serves until interrupted.
pub async fn run(globals: &Globals, args: &ProxyArgs) -> anyhow::Result<()> {
    if !args.listen.ip().is_loopback() {
        bail!(
            "the proxy listens on loopback only (127.0.0.1 or ::1), not {}",
            args.listen
        );
    }
    let client = globals.client()?;
    // Fail early without a session.
    session(globals, &client).await?;
    let mut upstream = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(UPSTREAM_TIMEOUT)
        .connect_timeout(Duration::from_secs(10))
        .https_only(true);
    if let Some(path) = &args.test_ca_file {
        let pem = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
        upstream = upstream.add_root_certificate(
            reqwest::Certificate::from_pem(&pem)
                .context("--test-ca-file is not a PEM certificate")?,
        );
    }
    let upstream = upstream.build().context("cannot build the HTTPS client")?;
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    let addr = listener.local_addr()?;
    let token = random_token()?;
    let token_file = args
        .token_file
        .clone()
        .unwrap_or_else(|| globals.profile.join("proxy.token"));
    let _ = std::fs::remove_file(&token_file);
    write_private(&token_file, token.as_bytes())?;
    let proxy = Arc::new(Proxy {
        globals: globals.clone(),
        client,
        upstream,
        token,
        port: addr.port(),
        revoked: AtomicBool::new(false),
    });
    let app = axum::Router::new().fallback(handle).with_state(proxy);
    let announce = format!(
        "agentkeys proxy listening on http://{addr} (bearer token in {})",
        token_file.display()
    );
    let served = serve_until_interrupted(listener, app, announce).await;
    let _ = std::fs::remove_file(&token_file);
    served?;
    Ok(())
}

fn header_text(headers: &HeaderMap, name: header::HeaderName) -> Option<&str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// The checks before anything is fetched.
fn admit(proxy: &Proxy, request: &Request) -> Result<(), Refusal> {
    if proxy.revoked.load(Ordering::SeqCst) {
        return Err(refuse(
            StatusCode::UNAUTHORIZED,
            "actor_revoked",
            "this proxy's actor was revoked; it serves nothing more",
        ));
    }
    if request.method() == Method::CONNECT {
        return Err(refuse(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            "CONNECT is refused: this is not a forward proxy",
        ));
    }
    let uri = request.uri();
    if uri.scheme().is_some() || uri.authority().is_some() {
        return Err(refuse(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "absolute-form targets are refused; request /<service>/<path>",
        ));
    }
    let headers = request.headers();
    let host = header_text(headers, header::HOST).unwrap_or_default();
    let allowed = [
        format!("127.0.0.1:{}", proxy.port),
        format!("localhost:{}", proxy.port),
    ];
    if !allowed.iter().any(|h| h.eq_ignore_ascii_case(host)) {
        return Err(refuse(
            StatusCode::FORBIDDEN,
            "invalid_request",
            "the Host header must be 127.0.0.1:PORT or localhost:PORT",
        ));
    }
    if headers.contains_key(header::ORIGIN) {
        return Err(refuse(
            StatusCode::FORBIDDEN,
            "invalid_request",
            "requests with an Origin header (browsers) are refused",
        ));
    }
    let given = header_text(headers, header::AUTHORIZATION)
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or_default();
    if !bool::from(given.as_bytes().ct_eq(proxy.token.as_bytes())) {
        return Err(refuse(
            StatusCode::UNAUTHORIZED,
            "invalid_token",
            "give Authorization: Bearer <the token in the proxy's token file>",
        ));
    }
    Ok(())
}

/// The credential with its injection settings, fetched with the profile's session.
async fn credential(proxy: &Proxy, service: &str) -> Result<CredentialValue, Refusal> {
    let stored = session(&proxy.globals, &proxy.client)
        .await
        .map_err(|e| refuse(StatusCode::BAD_GATEWAY, "session", &format!("{e:#}")))?;
    let got = proxy
        .client
        .get::<CredentialValue>(
            &format!("/v1/credentials/{service}"),
            Some(&stored.session.session_jwt),
        )
        .await;
    match got {
        Ok(value) => Ok(value),
        Err(ClientError::Api {
            status,
            code,
            message,
            ..
        }) => {
            if code == "actor_revoked" || code == "binding_revoked" {
                proxy.revoked.store(true, Ordering::SeqCst);
                eprintln!("agentkeys proxy: {code}: {message}; refusing every request from now on");
            }
            let status = StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_GATEWAY);
            Err(refuse(status, &code, &message))
        }
        Err(e) => Err(refuse(
            StatusCode::BAD_GATEWAY,
            "unreachable",
            &e.to_string(),
        )),
    }
}

/// `base ‖ "/" ‖ rest ‖ ?query`, by appending; refused if the result names another origin.
fn target(base: &str, rest: &str, query: Option<&str>) -> Option<reqwest::Url> {
    let base_url = reqwest::Url::parse(base).ok()?;
    let mut text = format!("{}/{rest}", base.trim_end_matches('/'));
    if let Some(q) = query {
        text.push('?');
        text.push_str(q);
    }
    let url = reqwest::Url::parse(&text).ok()?;
    // Dot segments would climb out of the base path: the result must stay below it.
    let prefix = base_url.path().trim_end_matches('/');
    let below = url.path() == prefix || url.path().starts_with(&format!("{prefix}/"));
    let same = below
        && url.scheme() == "https"
        && url.host_str() == base_url.host_str()
        && url.port_or_known_default() == base_url.port_or_known_default()
        && url.username().is_empty()
        && url.password().is_none();
    same.then_some(url)
}

/// Replaces every occurrence of `secret` in `bytes` with `[redacted]`.
fn redact(bytes: &[u8], secret: &[u8]) -> Vec<u8> {
    if secret.is_empty() {
        return bytes.to_vec();
    }
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i..].starts_with(secret) {
            out.extend_from_slice(b"[redacted]");
            i += secret.len();
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    out
}

async fn handle(State(proxy): State<Arc<Proxy>>, request: Request) -> Response {
    match forward(&proxy, request).await {
        Ok(response) => response,
        Err(refused) => refused.into_response(),
    }
}

async fn forward(proxy: &Proxy, request: Request) -> Result<Response, Refusal> {
    admit(proxy, &request)?;
    let path = request.uri().path().trim_start_matches('/').to_string();
    let query = request.uri().query().map(String::from);
    let (service, rest) = path.split_once('/').unwrap_or((path.as_str(), ""));
    if !agentkeys_actors::scope::is_service(service) {
        return Err(refuse(
            StatusCode::NOT_FOUND,
            "not_found",
            "request /<service>/<path> with a credential's service name",
        ));
    }
    let got = credential(proxy, service).await?;
    let value = match STANDARD.decode(got.value_b64.as_bytes()) {
        Ok(v) => Zeroizing::new(v),
        Err(_) => {
            return Err(refuse(
                StatusCode::BAD_GATEWAY,
                "internal",
                "the server sent a bad value",
            ));
        }
    };
    let Some(inject) = got.inject else {
        return Err(refuse(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "this credential has no inject settings; the master sets them with cred set --inject-…",
        ));
    };
    let Some(url) = target(&inject.base_url, rest, query.as_deref()) else {
        return Err(refuse(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "this path would leave the credential's base URL",
        ));
    };
    let Ok(text) = std::str::from_utf8(&value) else {
        return Err(refuse(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "this credential is not text and cannot go into a header",
        ));
    };
    let injected = Zeroizing::new(inject.template.replace("{}", text));
    let Ok(mut injected_value) = HeaderValue::from_str(&injected) else {
        return Err(refuse(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "this credential cannot be a header value",
        ));
    };
    injected_value.set_sensitive(true);
    let Ok(injected_name) = HeaderName::from_bytes(inject.header.as_bytes()) else {
        return Err(refuse(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "bad inject header",
        ));
    };
    let (parts, body) = request.into_parts();
    let Ok(body) = axum::body::to_bytes(body, MAX_BODY).await else {
        return Err(refuse(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            "the request body is over 10 MiB",
        ));
    };
    let mut outgoing = proxy.upstream.request(parts.method.clone(), url);
    for (name, v) in &parts.headers {
        if !DROPPED.contains(&name.as_str()) && *name != injected_name {
            outgoing = outgoing.header(name, v);
        }
    }
    outgoing = outgoing.header(injected_name, injected_value);
    let answer = match outgoing.body(body).send().await {
        Ok(answer) => answer,
        Err(e) => {
            let message = format!("the upstream cannot be reached: {}", e.without_url());
            return Err(refuse(
                StatusCode::BAD_GATEWAY,
                "upstream_unreachable",
                &message,
            ));
        }
    };
    let status = answer.status();
    let mut headers = HeaderMap::new();
    for (name, v) in answer.headers() {
        if DROPPED.contains(&name.as_str()) || name == header::SET_COOKIE {
            continue;
        }
        let clean = redact(v.as_bytes(), text.as_bytes());
        if let Ok(v) = HeaderValue::from_bytes(&clean) {
            headers.append(name.clone(), v);
        }
    }
    let mut answer = answer;
    let collected = match read_capped(&mut answer, MAX_BODY).await {
        Ok(bytes) => bytes,
        Err(Unread::TooLarge) => {
            return Err(refuse(
                StatusCode::BAD_GATEWAY,
                "upstream_too_large",
                "the upstream's answer is over 10 MiB",
            ));
        }
        Err(Unread::Broken) => {
            return Err(refuse(
                StatusCode::BAD_GATEWAY,
                "upstream_unreachable",
                "the upstream's answer broke off",
            ));
        }
    };
    let mut response = Response::new(Body::from(redact(&collected, text.as_bytes())));
    *response.status_mut() = status;
    *response.headers_mut() = headers;
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_appended_never_resolved() {
        let base = "https://api.example.com/v1";
        let url = |rest: &str| target(base, rest, None).map(|u| u.to_string());
        assert_eq!(
            url("chat").as_deref(),
            Some("https://api.example.com/v1/chat")
        );
        assert_eq!(
            url("/evil.example/x").as_deref(),
            Some("https://api.example.com/v1//evil.example/x")
        );
        assert_eq!(url("../../admin"), None, "dot segments never climb out");
        assert_eq!(url("%2e%2e/admin"), None, "nor their percent-encoded form");
        assert_eq!(
            target(base, "x", Some("a=1&b=2"))
                .map(|u| u.to_string())
                .as_deref(),
            Some("https://api.example.com/v1/x?a=1&b=2")
        );
        assert_eq!(url("@evil.example/"), url("@evil.example/"));
        let at = url("@evil.example/").expect("same origin");
        assert!(at.starts_with("https://api.example.com/"), "{at}");
    }

    #[test]
    fn echoed_credentials_are_redacted() {
        assert_eq!(
            redact(b"key=sk-1 again sk-1.", b"sk-1"),
            b"key=[redacted] again [redacted].".to_vec()
        );
        assert_eq!(redact(b"nothing", b"sk-1"), b"nothing".to_vec());
    }
}
