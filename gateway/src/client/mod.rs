//! The one typed HTTP client of AgentKeys: every request carries a DPoP proof by the profile's
//! device key; a `use_dpop_nonce` answer is retried once with the server's nonce; failures come
//! back as the server's error code and message.

pub mod device;

use std::sync::{Arc, Mutex};

use agentkeys_runtime::{Clock, SystemClock};

use agentkeys_actors::crypto::eip191::sign_message;
use agentkeys_actors::crypto::wallet::WalletKey;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

pub use device::{DeviceKey, profile_dir};

use crate::http::email::{EmailRequest, EmailStarted, EmailStatus};
use crate::http::session::{SessionResponse, Whoami};
use crate::http::wallet::{StartRequest, StartResponse, VerifyRequest};

/// A failed call: the server's code (or a transport problem) and what to do.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The server answered with the error envelope.
    #[error("{code}: {message} (request {request_id})")]
    Api {
        /// The HTTP status.
        status: u16,
        /// The stable error code.
        code: String,
        /// The server's message.
        message: String,
        /// For the server's logs.
        request_id: String,
    },
    /// The gateway could not be reached or answered something that is not the API.
    #[error(
        "cannot talk to the gateway at {url}: {cause}; check --gateway and that the server runs"
    )]
    Transport {
        /// The URL.
        url: String,
        /// What failed.
        cause: String,
    },
}

impl ClientError {
    /// The error envelope (`{error, message, request_id}`) as the CLI prints it with `--json`.
    pub fn envelope(&self) -> serde_json::Value {
        match self {
            ClientError::Api {
                code,
                message,
                request_id,
                ..
            } => serde_json::json!({"error": code, "message": message, "request_id": request_id}),
            ClientError::Transport { .. } => {
                serde_json::json!({"error": "unreachable", "message": self.to_string()})
            }
        }
    }

    /// Whether the server refused the request (4xx) rather than failed (5xx) or was not reached.
    pub fn is_refusal(&self) -> bool {
        matches!(self, ClientError::Api { status, .. } if *status < 500)
    }
}

/// How a client reaches the gateway.
enum Via {
    /// Directly, signing a DPoP proof per request with the device key.
    Gateway {
        key: DeviceKey,
        nonce: Mutex<Option<String>>,
    },
    /// Through the profile's daemon on a Unix socket, which adds proof and session itself.
    Daemon,
}

/// A client for one gateway with one device key, or for the daemon that holds it.
pub struct Client {
    base: String,
    connect: Option<String>,
    http: reqwest::Client,
    via: Via,
    clock: Arc<dyn Clock>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("base", &self.base)
            .field("connect", &self.connect)
            .field("via_daemon", &matches!(self.via, Via::Daemon))
            .finish_non_exhaustive()
    }
}

/// The base URL of requests to a daemon (the host is not used: the socket is).
pub const DAEMON_BASE: &str = "http://agentkeys-daemon";

/// A raw request: method, path with query, body and its content type, extra headers.
#[derive(Debug, Clone)]
pub struct RawRequest {
    /// The method.
    pub method: reqwest::Method,
    /// The path and query, from `/v1/…`.
    pub path: String,
    /// The body with its content type.
    pub body: Option<(Vec<u8>, String)>,
    /// Further headers (e.g. `last-event-id`, `accept`).
    pub headers: Vec<(String, String)>,
}

impl Client {
    /// A client for the gateway at `base` (its `public_url`) signing with `key`.
    pub fn new(base: &str, key: DeviceKey) -> Self {
        Self {
            base: base.trim_end_matches('/').to_string(),
            connect: None,
            http: reqwest::Client::new(),
            via: Via::Gateway {
                key,
                nonce: Mutex::new(None),
            },
            clock: Arc::new(SystemClock),
        }
    }

    /// A client that sends every request to the daemon listening on `socket`.
    pub fn via_daemon(socket: &std::path::Path) -> anyhow::Result<Self> {
        let http = reqwest::Client::builder()
            .unix_socket(socket)
            .build()
            .map_err(|e| anyhow::anyhow!("cannot build the daemon client: {e}"))?;
        Ok(Self {
            base: DAEMON_BASE.into(),
            connect: None,
            http,
            via: Via::Daemon,
            clock: Arc::new(SystemClock),
        })
    }

    /// Sends requests to `actual` (e.g. a test server's bound address) while proofs keep naming
    /// the public URL.
    pub fn connecting_to(mut self, actual: &str) -> Self {
        self.connect = Some(actual.trim_end_matches('/').to_string());
        self
    }

    /// Takes the proofs' `iat` from `clock` (tests with an injected clock).
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// Whether requests go through a daemon (which holds key and session).
    pub fn is_daemon(&self) -> bool {
        matches!(self.via, Via::Daemon)
    }

    /// The device key (e.g. to sign proofs ahead of time); none through a daemon.
    pub fn key(&self) -> Option<&DeviceKey> {
        match &self.via {
            Via::Gateway { key, .. } => Some(key),
            Via::Daemon => None,
        }
    }

    /// The device key's thumbprint (empty through a daemon).
    pub fn jkt(&self) -> String {
        self.key().map(DeviceKey::thumbprint).unwrap_or_default()
    }

    fn now(&self) -> i64 {
        i64::try_from(self.clock.now().as_millis() / 1000).unwrap_or(i64::MAX)
    }

    /// POSTs `body` to `path`, with a DPoP proof (and `token` if given).
    pub async fn post<B: Serialize, T: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
        token: Option<&str>,
    ) -> Result<T, ClientError> {
        self.send(reqwest::Method::POST, path, Some(body), token)
            .await
    }

    /// PUTs `body` to `path` with a DPoP proof and the session.
    pub async fn put<B: Serialize, T: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
        token: &str,
    ) -> Result<T, ClientError> {
        self.send(reqwest::Method::PUT, path, Some(body), Some(token))
            .await
    }

    /// DELETEs `path` with a DPoP proof and the session.
    pub async fn delete<T: DeserializeOwned>(
        &self,
        path: &str,
        token: &str,
    ) -> Result<T, ClientError> {
        self.send::<(), T>(reqwest::Method::DELETE, path, None, Some(token))
            .await
    }

    /// GETs `path` with a DPoP proof (and `token` if given).
    pub async fn get<T: DeserializeOwned>(
        &self,
        path: &str,
        token: Option<&str>,
    ) -> Result<T, ClientError> {
        self.send::<(), T>(reqwest::Method::GET, path, None, token)
            .await
    }

    /// One call with a JSON answer: see [`Client::raw`].
    async fn send<B: Serialize, T: DeserializeOwned>(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&B>,
        token: Option<&str>,
    ) -> Result<T, ClientError> {
        let body = match body {
            Some(b) => Some((
                serde_json::to_vec(b).map_err(|e| self.transport(path, e.to_string()))?,
                "application/json".to_string(),
            )),
            None => None,
        };
        let request = RawRequest {
            method,
            path: path.to_string(),
            body,
            headers: Vec::new(),
        };
        let response = self.raw(&request, token).await?;
        let status = response.status();
        let body: Value = response
            .json()
            .await
            .map_err(|e| self.transport(path, format!("HTTP {status}: {e}")))?;
        if status.is_success() {
            return serde_json::from_value(body).map_err(|e| self.transport(path, e.to_string()));
        }
        Err(ClientError::Api {
            status: status.as_u16(),
            code: body["error"].as_str().unwrap_or("unknown").to_string(),
            message: body["message"].as_str().unwrap_or_default().to_string(),
            request_id: body["request_id"].as_str().unwrap_or_default().to_string(),
        })
    }

    fn transport(&self, path: &str, cause: String) -> ClientError {
        ClientError::Transport {
            url: format!("{}{}", self.base, path),
            cause,
        }
    }

    /// One request, answered as it came (any status, the body unread): a fresh proof per
    /// attempt and one retry with the server's `DPoP-Nonce` when it answers `use_dpop_nonce`.
    /// Through a daemon neither proof nor token is sent: the daemon adds both.
    pub async fn raw(
        &self,
        request: &RawRequest,
        token: Option<&str>,
    ) -> Result<reqwest::Response, ClientError> {
        let path = request.path.as_str();
        let url = format!("{}{}", self.base, path);
        let target = format!("{}{}", self.connect.as_deref().unwrap_or(&self.base), path);
        for attempt in 0..2 {
            let mut outgoing = self.http.request(request.method.clone(), &target);
            if let Some((body, content_type)) = &request.body {
                outgoing = outgoing
                    .header("content-type", content_type)
                    .body(body.clone());
            }
            for (name, value) in &request.headers {
                outgoing = outgoing.header(name, value);
            }
            let Via::Gateway { key, nonce } = &self.via else {
                return outgoing
                    .send()
                    .await
                    .map_err(|e| self.transport(path, e.to_string()));
            };
            let current = nonce.lock().ok().and_then(|n| n.clone());
            let proof = key
                .proof(
                    request.method.as_str(),
                    &url,
                    self.now(),
                    token,
                    current.as_deref(),
                )
                .map_err(|e| self.transport(path, e.to_string()))?;
            outgoing = outgoing.header("dpop", proof);
            if let Some(token) = token {
                outgoing = outgoing.header("authorization", format!("DPoP {token}"));
            }
            let response = outgoing
                .send()
                .await
                .map_err(|e| self.transport(path, e.to_string()))?;
            let headers = response.headers();
            if let (Some(n), Ok(mut slot)) = (
                headers.get("dpop-nonce").and_then(|v| v.to_str().ok()),
                nonce.lock(),
            ) {
                *slot = Some(n.to_string());
            }
            let wants_nonce = headers
                .get("www-authenticate")
                .and_then(|v| v.to_str().ok())
                .is_some_and(|v| v.contains("use_dpop_nonce"));
            if wants_nonce && attempt == 0 {
                continue;
            }
            return Ok(response);
        }
        Err(self.transport(path, "the server kept asking for a new DPoP nonce".into()))
    }

    /// `POST /v1/auth/wallet/verify`.
    pub async fn wallet_verify(
        &self,
        request: &VerifyRequest,
    ) -> Result<SessionResponse, ClientError> {
        self.post("/v1/auth/wallet/verify", request, None).await
    }

    /// `POST /v1/session/refresh` with the current (possibly expired) token.
    pub async fn refresh(&self, token: &str) -> Result<SessionResponse, ClientError> {
        self.post("/v1/session/refresh", &serde_json::json!({}), Some(token))
            .await
    }

    /// `POST /v1/auth/email/request`.
    pub async fn email_request(&self, email: &str) -> Result<EmailStarted, ClientError> {
        self.post(
            "/v1/auth/email/request",
            &EmailRequest {
                email: email.to_string(),
            },
            None,
        )
        .await
    }

    /// `GET /v1/auth/email/status/{request_id}`.
    pub async fn email_status(&self, request_id: &str) -> Result<EmailStatus, ClientError> {
        self.get(&format!("/v1/auth/email/status/{request_id}"), None)
            .await
    }

    /// `GET /v1/whoami`.
    pub async fn whoami(&self, token: &str) -> Result<Whoami, ClientError> {
        self.get("/v1/whoami", Some(token)).await
    }

    /// Starts a SIWE login for `wallet` and signs the server's message with it: the request
    /// for [`Client::wallet_verify`].
    pub async fn wallet_signed_challenge(
        &self,
        wallet: &WalletKey,
        chain_id: u64,
    ) -> Result<VerifyRequest, ClientError> {
        let challenge = self
            .wallet_start(&wallet.address().to_string(), chain_id)
            .await?;
        let signature = sign_message(wallet, challenge.message.as_bytes());
        Ok(VerifyRequest {
            message: None,
            request_id: Some(challenge.request_id),
            signature: signature.to_hex(),
        })
    }

    /// A whole wallet login with a key held here: start, sign, verify.
    pub async fn wallet_login(
        &self,
        wallet: &WalletKey,
        chain_id: u64,
    ) -> Result<SessionResponse, ClientError> {
        let request = self.wallet_signed_challenge(wallet, chain_id).await?;
        self.wallet_verify(&request).await
    }

    /// `POST /v1/auth/wallet/start`.
    pub async fn wallet_start(
        &self,
        address: &str,
        chain_id: u64,
    ) -> Result<StartResponse, ClientError> {
        self.post(
            "/v1/auth/wallet/start",
            &StartRequest {
                address: address.to_string(),
                chain_id,
            },
            None,
        )
        .await
    }
}
