//! `agentkeys mcp` (docs/agents.md, "The MCP server"): the logged-in actor's tools for an MCP
//! client, built on the official Rust SDK (`rmcp`). Over stdio by default; with
//! `--listen 127.0.0.1:PORT` over Streamable HTTP at `/mcp`, where every request needs the
//! bearer token of a 0600 file, a loopback `Host`, and no foreign `Origin` (DNS rebinding).
//!
//! Each tool maps to one gateway route: its input schema is that route's request body (taken
//! from the OpenAPI annotations), its text result is the route's JSON answer. Refusals are tool
//! errors whose text is the gateway's error envelope (`budget_exceeded` with what remains,
//! `policy_denied`, `approval_required` with its id, `actor_revoked`), so the model can explain
//! them. Requests go through the profile's daemon when it runs. No tool answers key material,
//! credential values or tokens: the routes it calls never return them, and the session token
//! is scrubbed from every result besides.

use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, bail};
use axum::extract::{Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use rmcp::model::{
    CallToolRequestParams, CallToolResponse, CallToolResult, ContentBlock, Implementation,
    JsonObject, ListToolsResult, PaginatedRequestParams, ServerCapabilities, ServerConfig, Tool,
};
use rmcp::service::RequestContext;
use rmcp::{ErrorData, RoleServer, ServerHandler, ServiceExt as _};
use serde_json::{Value, json};
use subtle::ConstantTimeEq as _;
use zeroize::Zeroizing;

use super::local::{random_token, refuse, serve_until_interrupted};
use super::{Globals, session, write_private};
use crate::client::{Client, ClientError, RawRequest};

/// The longest one `approval_status` call waits for a decision.
pub const APPROVAL_WAIT: Duration = Duration::from_secs(50);
/// Largest upstream answer `http_request` hands to the model.
pub const MAX_HTTP_ANSWER: usize = 1 << 20;

/// Options of `agentkeys mcp`.
#[derive(Debug, Clone, clap::Args)]
pub struct McpArgs {
    /// Serve Streamable HTTP at http://ADDR/mcp on this loopback address instead of stdio.
    #[arg(long)]
    pub listen: Option<SocketAddr>,
    /// The bearer token file for --listen (0600; created with a random token if missing)
    /// [default: ~/.agentkeys/<profile>/mcp.token].
    #[arg(long)]
    pub token_file: Option<PathBuf>,
    /// A credential service `http_request` may reach through the injecting proxy (repeatable;
    /// without any the tool is not offered).
    #[arg(long = "service")]
    pub services: Vec<String>,
    /// The running `agentkeys proxy` that `http_request` goes through.
    #[arg(long, default_value = "http://127.0.0.1:8091")]
    pub proxy_url: String,
    /// The proxy's token file [default: ~/.agentkeys/<profile>/proxy.token].
    #[arg(long)]
    pub proxy_token_file: Option<PathBuf>,
    /// How long one approval_status call waits at most, in seconds (at most 50).
    #[arg(long, default_value_t = 50, hide = true)]
    pub approval_wait_seconds: u64,
}

struct Inner {
    globals: Globals,
    client: Client,
    services: Vec<String>,
    proxy_url: String,
    proxy_token_file: PathBuf,
    http: reqwest::Client,
    approval_wait: Duration,
}

/// The tool server (cheap to clone: one per HTTP session).
#[derive(Clone)]
pub struct Tools {
    inner: Arc<Inner>,
}

/// A route answer as a tool result: the JSON text, marked as an error when refused.
fn result(text: String, is_error: bool) -> CallToolResult {
    if is_error {
        CallToolResult::error(vec![ContentBlock::text(text)])
    } else {
        CallToolResult::success(vec![ContentBlock::text(text)])
    }
}

fn tool_error(code: &str, message: &str) -> CallToolResult {
    result(json!({"error": code, "message": message}).to_string(), true)
}

/// The JSON schema of a request body type, with every `$ref` inlined (MCP wants one
/// self-contained object schema).
fn body_schema<T: utoipa::ToSchema>() -> JsonObject {
    let mut parts = Vec::new();
    T::schemas(&mut parts);
    let defs: serde_json::Map<String, Value> = parts
        .into_iter()
        .map(|(name, schema)| (name, serde_json::to_value(schema).unwrap_or_default()))
        .collect();
    let mut root = serde_json::to_value(T::schema()).unwrap_or_default();
    inline(&mut root, &defs, 0);
    object(root)
}

fn object(value: Value) -> JsonObject {
    match value {
        Value::Object(mut map) => {
            map.entry("type").or_insert_with(|| json!("object"));
            map
        }
        _ => JsonObject::from_iter([("type".to_string(), json!("object"))]),
    }
}

fn inline(value: &mut Value, defs: &serde_json::Map<String, Value>, depth: usize) {
    if depth > 16 {
        return;
    }
    match value {
        Value::Object(map) => {
            let target = map
                .get("$ref")
                .and_then(Value::as_str)
                .and_then(|r| r.rsplit('/').next())
                .and_then(|name| defs.get(name));
            if let Some(target) = target {
                *value = target.clone();
                inline(value, defs, depth + 1);
                return;
            }
            for v in map.values_mut() {
                inline(v, defs, depth + 1);
            }
        }
        Value::Array(items) => items.iter_mut().for_each(|v| inline(v, defs, depth + 1)),
        _ => {}
    }
}

fn no_input() -> JsonObject {
    object(json!({"type": "object", "properties": {}, "additionalProperties": false}))
}

impl Tools {
    /// The tools of `globals`' profile (through its daemon when one runs).
    pub fn new(globals: &Globals, args: &McpArgs) -> anyhow::Result<Self> {
        for service in &args.services {
            if !agentkeys_actors::scope::is_service(service) {
                bail!("--service {service:?} is not a credential service name");
            }
        }
        Ok(Self {
            inner: Arc::new(Inner {
                client: globals.client()?,
                globals: globals.clone(),
                services: args.services.clone(),
                proxy_url: args.proxy_url.trim_end_matches('/').to_string(),
                proxy_token_file: args
                    .proxy_token_file
                    .clone()
                    .unwrap_or_else(|| globals.profile.join("proxy.token")),
                http: reqwest::Client::builder()
                    .redirect(reqwest::redirect::Policy::none())
                    .timeout(Duration::from_secs(90))
                    .build()?,
                approval_wait: Duration::from_secs(args.approval_wait_seconds.min(50)),
            }),
        })
    }

    async fn token(&self) -> Result<Zeroizing<String>, CallToolResult> {
        match session(&self.inner.globals, &self.inner.client).await {
            Ok(stored) => Ok(Zeroizing::new(stored.session.session_jwt)),
            Err(e) => Err(match super::client_error(&e) {
                Some(ClientError::Api { code, message, .. }) => tool_error(code, message),
                _ => tool_error("no_session", &format!("{e:#}")),
            }),
        }
    }

    /// Calls one route; the answer as it came, or a tool error.
    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<(u16, Value), CallToolResult> {
        let token = self.token().await?;
        let request = RawRequest {
            method,
            path: path.to_string(),
            body: body.map(|b| (b.to_string().into_bytes(), "application/json".to_string())),
            headers: Vec::new(),
        };
        let token = (!token.is_empty()).then_some(token);
        let response = self
            .inner
            .client
            .raw(&request, token.as_deref().map(String::as_str))
            .await
            .map_err(|e| tool_error("unreachable", &e.to_string()))?;
        let status = response.status().as_u16();
        let text = response
            .text()
            .await
            .map_err(|e| tool_error("unreachable", &e.to_string()))?;
        // Belt and braces: no route answers the session token, and none may leak through here.
        let text = match &token {
            Some(t) if text.contains(t.as_str()) => text.replace(t.as_str(), "[redacted]"),
            _ => text,
        };
        let value: Value = serde_json::from_str(&text).unwrap_or(Value::String(text));
        Ok((status, value))
    }

    /// A route call as a tool result: 2xx JSON as text; a held request (`approval_required`)
    /// and every refusal as a tool error carrying the code.
    async fn route(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&Value>,
    ) -> CallToolResult {
        match self.call(method, path, body).await {
            Err(refused) => refused,
            Ok((status, answer)) if (200..300).contains(&status) => {
                if answer["status"] == "approval_required" {
                    let mut held = answer.clone();
                    held["error"] = json!("approval_required");
                    held["message"] = json!(
                        "a person must approve this request; call approval_status with the approval_id to wait for the decision"
                    );
                    return result(held.to_string(), true);
                }
                result(answer.to_string(), false)
            }
            Ok((_, answer)) => result(answer.to_string(), true),
        }
    }

    async fn whoami(&self) -> Result<Value, CallToolResult> {
        match self.call(reqwest::Method::GET, "/v1/whoami", None).await? {
            (200, me) => Ok(me),
            (_, refused) => Err(result(refused.to_string(), true)),
        }
    }

    /// What the model should know about its limits: identity, scopes, policy and budgets.
    async fn limits(&self) -> String {
        let Ok(me) = self.whoami().await else {
            return "The limits could not be read now (the session may be gone).".into();
        };
        let omni = me["omni"].as_str().unwrap_or_default();
        let mut text = format!(
            "You act as {} {} with EVM wallet {}.",
            me["role"].as_str().unwrap_or("actor"),
            omni,
            me["wallet"].as_str().unwrap_or("?")
        );
        if let Ok((200, actor)) = self
            .call(reqwest::Method::GET, &format!("/v1/actors/{omni}"), None)
            .await
        {
            let scopes: Vec<&str> = actor["scopes"]
                .as_array()
                .map(|s| s.iter().filter_map(Value::as_str).collect())
                .unwrap_or_default();
            text.push_str(&format!(" Effective scopes: {}.", scopes.join(", ")));
        }
        if let Ok((200, policy)) = self
            .call(
                reqwest::Method::GET,
                &format!("/v1/actors/{omni}/policy"),
                None,
            )
            .await
        {
            let own = policy["policy"].is_object();
            let inherited = policy["inherited"].as_array().map_or(0, Vec::len);
            text.push_str(&format!(
                " Signing policies: {} of your own, {inherited} inherited from ancestors.",
                if own { "one" } else { "none" }
            ));
            for b in policy["budgets"].as_array().into_iter().flatten() {
                text.push_str(&format!(
                    " Budget of {}: {} {} on chain {} per {} s, {} remaining.",
                    b["owner"].as_str().unwrap_or("?"),
                    b["max"].as_str().unwrap_or("?"),
                    b["asset"].as_str().unwrap_or("?"),
                    b["chain"],
                    b["window_seconds"],
                    b["remaining"].as_str().unwrap_or("?"),
                ));
            }
        }
        text.push_str(
            " A request over a budget fails with budget_exceeded; one a policy forbids with policy_denied; one above an approval threshold returns approval_required with an approval_id: then call approval_status and tell your user a person must decide.",
        );
        text
    }

    fn tools(&self, limits: &str) -> Vec<Tool> {
        use crate::http::policy::CheckRequest;
        use crate::http::sign::{Eip191Request, Eip712Request, TxSignRequest};
        let mut tools = vec![
            Tool::new(
                "whoami",
                format!(
                    "Who this agent is: omni, role, wallet, sr25519 account, session expiry. {limits}"
                ),
                no_input(),
            ),
            Tool::new(
                "sign_message",
                format!(
                    "Sign a message with EIP-191 (personal_sign) by this agent's wallet (POST /v1/sign/eip191). {limits}"
                ),
                body_schema::<Eip191Request>(),
            ),
            Tool::new(
                "sign_typed_data",
                format!(
                    "Sign EIP-712 typed data by this agent's wallet (POST /v1/sign/eip712); permits and orders are checked against the policies. {limits}"
                ),
                body_schema::<Eip712Request>(),
            ),
            Tool::new(
                "sign_transaction",
                format!(
                    "Sign an EVM transaction (POST /v1/sign/transaction): returns the signed raw transaction and its hash; it is never broadcast. {limits}"
                ),
                body_schema::<TxSignRequest>(),
            ),
            Tool::new(
                "check_policy",
                format!(
                    "Ask whether a signing request would be allowed, denied or need approval, without signing or spending (POST /v1/policy/check). {limits}"
                ),
                body_schema::<CheckRequest>(),
            ),
            Tool::new(
                "approval_status",
                "Wait (at most 50 s per call) for a person's decision on an approval_required request; answers the approval, with the signing result once approved, or status pending with the id: call again.",
                object(json!({
                    "type": "object",
                    "properties": {"approval_id": {"type": "string", "description": "from approval_required"}},
                    "required": ["approval_id"],
                    "additionalProperties": false
                })),
            ),
            Tool::new(
                "list_credentials",
                "The names of the stored credentials this agent may use (never their values).",
                no_input(),
            ),
        ];
        if !self.inner.services.is_empty() {
            tools.push(Tool::new(
                "http_request",
                format!(
                    "Call a configured service's HTTP API through the credential-injecting proxy: the credential is added on the way and never shown to you. Services: {}.",
                    self.inner.services.join(", ")
                ),
                object(json!({
                    "type": "object",
                    "properties": {
                        "service": {"type": "string", "enum": self.inner.services},
                        "method": {"type": "string", "enum": ["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD"]},
                        "path": {"type": "string", "description": "appended to the service's base URL, e.g. /user"},
                        "headers": {"type": "object", "additionalProperties": {"type": "string"}},
                        "body": {"type": "string"}
                    },
                    "required": ["service", "method", "path"],
                    "additionalProperties": false
                })),
            ));
        }
        tools
    }

    async fn approval_status(&self, args: &JsonObject) -> CallToolResult {
        let Some(id) = args.get("approval_id").and_then(Value::as_str) else {
            return tool_error("invalid_request", "give approval_id");
        };
        if id.is_empty()
            || !id
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            return tool_error("invalid_request", "approval_id is not an approval id");
        }
        let deadline = tokio::time::Instant::now() + self.inner.approval_wait;
        let mut pause = Duration::from_millis(250);
        loop {
            let answer = match self
                .call(reqwest::Method::GET, &format!("/v1/approvals/{id}"), None)
                .await
            {
                Err(refused) => return refused,
                Ok((200, answer)) => answer,
                Ok((_, refused)) => return result(refused.to_string(), true),
            };
            if answer["status"] != "pending" {
                return result(answer.to_string(), false);
            }
            if tokio::time::Instant::now() + pause > deadline {
                let waiting = json!({
                    "status": "pending",
                    "approval_id": id,
                    "expires_at": answer["expires_at"],
                    "message": "no decision yet; call approval_status again"
                });
                return result(waiting.to_string(), false);
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_secs(2));
        }
    }

    async fn list_credentials(&self) -> CallToolResult {
        match self
            .call(reqwest::Method::GET, "/v1/credentials", None)
            .await
        {
            Err(refused) => refused,
            Ok((200, list)) => {
                let names: Vec<Value> = list["credentials"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|c| json!({"service": c["service"]}))
                    .collect();
                result(json!({ "credentials": names }).to_string(), false)
            }
            Ok((_, refused)) => result(refused.to_string(), true),
        }
    }

    async fn http_request(&self, args: &JsonObject) -> CallToolResult {
        let text = |k: &str| args.get(k).and_then(Value::as_str).unwrap_or_default();
        let service = text("service");
        if !self.inner.services.iter().any(|s| s == service) {
            return tool_error(
                "service_not_configured",
                &format!(
                    "only these services are configured: {}",
                    self.inner.services.join(", ")
                ),
            );
        }
        let Ok(method) = reqwest::Method::from_bytes(text("method").as_bytes()) else {
            return tool_error("invalid_request", "method must be an HTTP method");
        };
        if method == reqwest::Method::CONNECT {
            return tool_error("invalid_request", "CONNECT is not proxied");
        }
        let path = text("path");
        if !path.starts_with('/') || path.contains("://") {
            return tool_error(
                "invalid_request",
                "path must start with / and stay on the service",
            );
        }
        let token = match std::fs::read_to_string(&self.inner.proxy_token_file) {
            Ok(t) => Zeroizing::new(t.trim().to_string()),
            Err(_) => {
                return tool_error(
                    "proxy_unavailable",
                    "the injecting proxy's token file cannot be read: is `agentkeys proxy` running?",
                );
            }
        };
        let mut outgoing = self
            .inner
            .http
            .request(method, format!("{}/{service}{path}", self.inner.proxy_url))
            .bearer_auth(token.as_str());
        if let Some(Value::Object(headers)) = args.get("headers") {
            for (name, value) in headers {
                let lower = name.to_ascii_lowercase();
                if matches!(
                    lower.as_str(),
                    "authorization" | "host" | "cookie" | "origin"
                ) {
                    continue;
                }
                if let Some(value) = value.as_str() {
                    outgoing = outgoing.header(name, value);
                }
            }
        }
        if let Some(body) = args.get("body").and_then(Value::as_str) {
            outgoing = outgoing.body(body.to_string());
        }
        let mut answer = match outgoing.send().await {
            Ok(answer) => answer,
            Err(e) => {
                return tool_error(
                    "proxy_unavailable",
                    &format!("the injecting proxy cannot be reached: {}", e.without_url()),
                );
            }
        };
        let status = answer.status().as_u16();
        let content_type = answer
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string();
        let mut bytes = Vec::new();
        while let Ok(Some(chunk)) = answer.chunk().await {
            let room = MAX_HTTP_ANSWER.saturating_sub(bytes.len());
            bytes.extend_from_slice(&chunk[..chunk.len().min(room)]);
            if room < chunk.len() {
                break;
            }
        }
        let body = String::from_utf8_lossy(&bytes).into_owned();
        result(
            json!({"status": status, "content_type": content_type, "body": body}).to_string(),
            status >= 400,
        )
    }
}

impl ServerHandler for Tools {
    fn get_info(&self) -> ServerConfig {
        let mut info = ServerConfig::default();
        info.capabilities = ServerCapabilities::builder().enable_tools().build();
        info.server_info = Implementation::new("agentkeys", env!("CARGO_PKG_VERSION"));
        info.instructions = Some(
            "AgentKeys signs for this agent within the scopes, policies and budgets its owners set. Refusals are tool errors with a stable code (budget_exceeded, policy_denied, approval_required, actor_revoked); explain them to your user. No tool reveals keys, tokens or credential values."
                .into(),
        );
        info
    }

    async fn list_tools(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, ErrorData> {
        let limits = self.limits().await;
        Ok(ListToolsResult::with_all_items(self.tools(&limits)))
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        _context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, ErrorData> {
        let args = request.arguments.unwrap_or_default();
        let body = Value::Object(args.clone());
        let post = reqwest::Method::POST;
        let done = match request.name.as_ref() {
            "whoami" => match self.whoami().await {
                Ok(me) => result(me.to_string(), false),
                Err(refused) => refused,
            },
            "sign_message" => self.route(post, "/v1/sign/eip191", Some(&body)).await,
            "sign_typed_data" => self.route(post, "/v1/sign/eip712", Some(&body)).await,
            "sign_transaction" => self.route(post, "/v1/sign/transaction", Some(&body)).await,
            "check_policy" => self.route(post, "/v1/policy/check", Some(&body)).await,
            "approval_status" => self.approval_status(&args).await,
            "list_credentials" => self.list_credentials().await,
            "http_request" if !self.inner.services.is_empty() => self.http_request(&args).await,
            other => {
                return Err(ErrorData::invalid_params(
                    format!("no tool named {other}"),
                    None,
                ));
            }
        };
        Ok(done.into())
    }
}

/// Reads the HTTP bearer token from `path` (0600), or creates it with a random one.
fn bearer_token(path: &Path) -> anyhow::Result<Zeroizing<String>> {
    match std::fs::metadata(path) {
        Ok(meta) => {
            if meta.permissions().mode() & 0o077 != 0 {
                bail!(
                    "{} is readable by group or others; run: chmod 600 {}",
                    path.display(),
                    path.display()
                );
            }
            let token = Zeroizing::new(
                std::fs::read_to_string(path)
                    .with_context(|| format!("cannot read {}", path.display()))?
                    .trim()
                    .to_string(),
            );
            if token.len() < 32 {
                bail!(
                    "{} must hold a token of at least 32 characters",
                    path.display()
                );
            }
            Ok(token)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let token = random_token()?;
            write_private(path, token.as_bytes())?;
            Ok(token)
        }
        Err(e) => Err(e).with_context(|| format!("cannot read {}", path.display())),
    }
}

struct Gate {
    token: Zeroizing<String>,
    hosts: [String; 2],
}

/// Admits only requests with the bearer token, a loopback `Host` naming this port, and no
/// foreign `Origin` (a browser's cross-site request — `Sec-Fetch-Site: cross-site` or
/// `same-site` — must carry one, and it never matches).
async fn gate(State(gate): State<Arc<Gate>>, request: Request, next: Next) -> Response {
    let headers = request.headers();
    let text = |name: header::HeaderName| headers.get(name).and_then(|v| v.to_str().ok());
    let host_ok = text(header::HOST).is_some_and(|h| gate.hosts.iter().any(|ok| ok == h));
    if !host_ok {
        return refuse(
            StatusCode::FORBIDDEN,
            "invalid_host",
            "the Host header must name this loopback address",
        )
        .into_response();
    }
    let origin_ok = match text(header::ORIGIN) {
        Some(origin) => gate.hosts.iter().any(|h| origin == format!("http://{h}")),
        None => !matches!(
            text(header::HeaderName::from_static("sec-fetch-site")),
            Some("cross-site" | "same-site")
        ),
    };
    if !origin_ok {
        return refuse(
            StatusCode::FORBIDDEN,
            "invalid_origin",
            "requests from other origins are refused",
        )
        .into_response();
    }
    let presented = text(header::AUTHORIZATION)
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or_default();
    if !bool::from(presented.as_bytes().ct_eq(gate.token.as_bytes())) {
        return refuse(
            StatusCode::UNAUTHORIZED,
            "invalid_token",
            "send Authorization: Bearer <the token in the mcp token file>",
        )
        .into_response();
    }
    next.run(request).await
}

/// `agentkeys mcp`: serves until the client leaves (stdio) or until interrupted (HTTP).
pub async fn run(globals: &Globals, args: &McpArgs) -> anyhow::Result<()> {
    let tools = Tools::new(globals, args)?;
    // Fail early, and say why, without a session.
    session(globals, &tools.inner.client).await?;
    let Some(listen) = args.listen else {
        let running = tools
            .serve(rmcp::transport::stdio())
            .await
            .context("the MCP client did not initialize")?;
        running.waiting().await?;
        return Ok(());
    };
    if !listen.ip().is_loopback() {
        bail!("the MCP server listens on loopback only, not {listen}");
    }
    let token_file = args
        .token_file
        .clone()
        .unwrap_or_else(|| globals.profile.join("mcp.token"));
    let token = bearer_token(&token_file)?;
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("cannot listen on {listen}"))?;
    let addr = listener.local_addr()?;
    let hosts = [
        format!("127.0.0.1:{}", addr.port()),
        format!("localhost:{}", addr.port()),
    ];
    let origins: Vec<String> = hosts.iter().map(|h| format!("http://{h}")).collect();
    let config = rmcp::transport::streamable_http_server::StreamableHttpServerConfig::default()
        .with_allowed_hosts(hosts.iter().cloned())
        .with_allowed_origins(origins);
    let service = rmcp::transport::streamable_http_server::StreamableHttpService::new(
        move || Ok(tools.clone()),
        Arc::new(
            rmcp::transport::streamable_http_server::session::local::LocalSessionManager::default(),
        ),
        config,
    );
    let gate = Arc::new(Gate { token, hosts });
    let app = axum::Router::new()
        .nest_service("/mcp", service)
        .layer(axum::middleware::from_fn_with_state(gate, self::gate));
    let announce = format!(
        "agentkeys mcp listening on http://{addr}/mcp (bearer token in {})",
        token_file.display()
    );
    serve_until_interrupted(listener, app, announce).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn body_schemas_are_self_contained_objects() {
        let schema = body_schema::<crate::http::sign::Eip712Request>();
        assert_eq!(schema["type"], "object");
        let text = serde_json::to_string(&schema).expect("json");
        assert!(!text.contains("$ref"), "{text}");
        let eip191 = body_schema::<crate::http::sign::Eip191Request>();
        assert!(eip191["properties"]["message"].is_object(), "{eip191:?}");
    }
}
