//! `agentkeys daemon` (docs/agents.md, "The daemon"): one process per profile on an agent
//! machine holds the device key and the session, refreshes the session before it expires, and
//! serves the gateway's own API paths over HTTP/1.1 on a Unix socket. A local process sends a
//! request without DPoP and without a token; the daemon adds both and forwards it. So the CLI,
//! `mcp`, `proxy` and `aws credentials` share one binding and one refresh, and none of them reads
//! the key file.
//!
//! The socket is 0600 and every request's peer uid (`SO_PEERCRED`) must be allowed (the
//! daemon's own uid unless `--allow-uid` names others). Under systemd socket activation the
//! socket comes from the service manager (`SocketUser=` the agent's user, `SocketMode=0600`), so
//! the daemon can run as another user than the agent.
//!
//! The daemon holds the profile's one event stream (`GET /v1/events`) and fans it out to its
//! local readers. A revocation — the stream's `closed` event with `actor_revoked` or
//! `binding_revoked`, the same code in any forwarded answer, or a refused refresh — stops it at
//! once: from then on every request is answered with that code and why.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use agentkeys_runtime::{Clock, SystemClock};
use anyhow::{Context as _, bail};
use axum::body::Body;
use axum::extract::connect_info::{ConnectInfo, Connected};
use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::serve::IncomingStream;
use serde::{Deserialize, Serialize};
use tokio::net::UnixListener;
use tokio::sync::{broadcast, watch};
use zeroize::Zeroizing;

use super::local::{Refusal, Unread, read_capped, refuse};
use super::{Globals, REFRESH_MARGIN_SECONDS, StoredSession, explain, save_session};
use crate::client::{Client, ClientError, RawRequest};
use crate::http::session::SessionResponse;

/// The socket's name in the profile directory.
pub const SOCKET: &str = "daemon.sock";
/// Largest request body a local client may send.
pub const MAX_REQUEST: usize = 2 << 20;
/// Largest answer forwarded back.
pub const MAX_ANSWER: usize = 16 << 20;
/// Local event readers at once.
pub const MAX_LOCAL_STREAMS: usize = 64;
/// Events kept for local readers that resume (`Last-Event-ID`) or start late.
pub const EVENT_BACKLOG: usize = 1024;
/// How often the refresher looks at the session's expiry.
const REFRESH_LOOK: Duration = Duration::from_secs(20);

/// Options of `agentkeys daemon`.
#[derive(Debug, Clone, clap::Args)]
pub struct DaemonArgs {
    /// The socket to serve on [default: ~/.agentkeys/<profile>/daemon.sock]; under systemd
    /// socket activation the passed socket is used instead.
    #[arg(long)]
    pub socket: Option<PathBuf>,
    /// A uid whose processes may use the daemon (repeatable) [default: the daemon's own].
    #[arg(long = "allow-uid")]
    pub allow_uid: Vec<u32>,
}

/// `GET /daemon/status`: what the daemon serves (never the token).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DaemonStatus {
    /// `serving` or `stopped`.
    pub state: String,
    /// Why it stopped: `actor_revoked`, `binding_revoked` or `invalid_token`.
    pub reason: Option<String>,
    /// What happened, for a person.
    pub message: Option<String>,
    /// The gateway it talks to.
    pub gateway: String,
    /// The session it holds, `session_jwt` always empty.
    pub session: SessionResponse,
    /// Refreshes since it started.
    pub refreshes: u64,
    /// Local event readers now.
    pub local_streams: usize,
}

/// One server-sent event as the daemon keeps it.
#[derive(Debug, Clone)]
struct LocalEvent {
    id: Option<u64>,
    event: String,
    data: String,
}

impl LocalEvent {
    fn sse(&self) -> Event {
        let mut event = Event::default().event(&self.event).data(&self.data);
        if let Some(id) = self.id {
            event = event.id(id.to_string());
        }
        event
    }
}

/// The peer of one local connection.
#[derive(Debug, Clone, Copy)]
pub struct Peer {
    uid: Option<u32>,
}

impl Connected<IncomingStream<'_, UnixListener>> for Peer {
    fn connect_info(stream: IncomingStream<'_, UnixListener>) -> Self {
        Peer {
            uid: stream.io().peer_cred().ok().map(|c| c.uid()),
        }
    }
}

struct Daemon {
    globals: Globals,
    client: Client,
    clock: Arc<dyn Clock>,
    session: tokio::sync::Mutex<StoredSession>,
    refreshes: AtomicU64,
    stopped: Mutex<Option<(String, String)>>,
    stop_signal: watch::Sender<Option<String>>,
    events: broadcast::Sender<LocalEvent>,
    backlog: Mutex<VecDeque<LocalEvent>>,
    streams: AtomicUsize,
    allowed: Vec<u32>,
}

/// The codes that end the daemon's service.
fn fatal(code: &str) -> bool {
    matches!(code, "actor_revoked" | "binding_revoked")
}

impl Daemon {
    fn now(&self) -> i64 {
        i64::try_from(self.clock.now().as_millis() / 1000).unwrap_or(i64::MAX)
    }

    fn stopped(&self) -> Option<(String, String)> {
        self.stopped
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Stops serving for good and says why (once).
    fn stop(&self, code: &str, why: &str) {
        let mut stopped = self.stopped.lock().unwrap_or_else(|p| p.into_inner());
        if stopped.is_some() {
            return;
        }
        let message = format!(
            "the daemon stopped serving: {why}; stop it (and ask whoever controls this tree)"
        );
        eprintln!("agentkeys daemon: {code}: {message}");
        tracing::warn!(code, "the daemon stopped serving");
        *stopped = Some((code.to_string(), message));
        drop(stopped);
        self.stop_signal.send_replace(Some(code.to_string()));
    }

    fn refusal_if_stopped(&self) -> Result<(), Refusal> {
        match self.stopped() {
            Some((code, message)) => Err(refuse(StatusCode::FORBIDDEN, &code, &message)),
            None => Ok(()),
        }
    }

    fn admit(&self, peer: Peer) -> Result<(), Refusal> {
        match peer.uid {
            Some(uid) if self.allowed.contains(&uid) => Ok(()),
            _ => Err(refuse(
                StatusCode::FORBIDDEN,
                "peer_not_allowed",
                "this user may not use the daemon; the daemon's operator allows users with --allow-uid",
            )),
        }
    }

    /// The session token, refreshed first when it is about to expire (one refresh for all
    /// callers: they wait on the lock). A refused refresh stops the daemon.
    async fn token(&self) -> Result<Zeroizing<String>, Refusal> {
        self.refusal_if_stopped()?;
        let mut stored = self.session.lock().await;
        let expires = agentkeys_actors::crypto::rfc3339::parse(&stored.session.expires_at)
            .map_or(0, |ms| ms / 1000);
        if expires - self.now() <= REFRESH_MARGIN_SECONDS {
            match self.client.refresh(&stored.session.session_jwt).await {
                Ok(fresh) => {
                    *stored = save_session(&self.globals, fresh).map_err(|e| {
                        refuse(
                            StatusCode::INTERNAL_SERVER_ERROR,
                            "local_error",
                            &format!("cannot save the refreshed session: {e:#}"),
                        )
                    })?;
                    self.refreshes.fetch_add(1, Ordering::SeqCst);
                }
                Err(ClientError::Api {
                    status,
                    code,
                    message,
                    ..
                }) => {
                    if (400..500).contains(&status) {
                        let code = if fatal(&code) {
                            code
                        } else {
                            "invalid_token".into()
                        };
                        self.stop(&code, &format!("the session cannot be renewed ({message})"));
                    }
                    return Err(self.refusal_if_stopped().err().unwrap_or_else(|| {
                        refuse(StatusCode::BAD_GATEWAY, "unreachable", &message)
                    }));
                }
                Err(e @ ClientError::Transport { .. }) => {
                    return Err(refuse(
                        StatusCode::BAD_GATEWAY,
                        "unreachable",
                        &e.to_string(),
                    ));
                }
            }
        }
        Ok(Zeroizing::new(stored.session.session_jwt.clone()))
    }

    async fn status(&self) -> DaemonStatus {
        let stored = self.session.lock().await;
        let stopped = self.stopped();
        let mut session = stored.session.clone();
        session.session_jwt = String::new();
        DaemonStatus {
            state: if stopped.is_some() {
                "stopped"
            } else {
                "serving"
            }
            .into(),
            reason: stopped.as_ref().map(|s| s.0.clone()),
            message: stopped.map(|s| s.1),
            gateway: stored.gateway.clone(),
            session,
            refreshes: self.refreshes.load(Ordering::SeqCst),
            local_streams: self.streams.load(Ordering::SeqCst),
        }
    }

    /// Keeps an event from the gateway for local readers.
    fn publish(&self, event: LocalEvent) {
        let mut backlog = self.backlog.lock().unwrap_or_else(|p| p.into_inner());
        if backlog.len() == EVENT_BACKLOG {
            backlog.pop_front();
        }
        backlog.push_back(event.clone());
        drop(backlog);
        let _ = self.events.send(event);
    }
}

/// Paths a local client may not use through the daemon: they create or renew sessions for
/// the daemon's key, which only the daemon holds.
fn reserved(path: &str) -> bool {
    path.starts_with("/v1/auth/")
        || path.starts_with("/v1/session/")
        || matches!(
            path,
            "/v1/link/redeem" | "/v1/pairing/request" | "/v1/pairing/poll"
        )
}

async fn forward(
    State(daemon): State<Arc<Daemon>>,
    ConnectInfo(peer): ConnectInfo<Peer>,
    request: Request,
) -> Response {
    match forwarded(&daemon, peer, request).await {
        Ok(response) => response,
        Err(refused) => refused.into_response(),
    }
}

async fn forwarded(daemon: &Daemon, peer: Peer, request: Request) -> Result<Response, Refusal> {
    daemon.admit(peer)?;
    daemon.refusal_if_stopped()?;
    let path = request.uri().path();
    if !path.starts_with("/v1/") {
        return Err(refuse(
            StatusCode::NOT_FOUND,
            "not_found",
            "the daemon serves the gateway's /v1/ paths and /daemon/status",
        ));
    }
    if reserved(path) {
        return Err(refuse(
            StatusCode::FORBIDDEN,
            "invalid_request",
            "logins, link codes, pairing and refreshes are not served through the daemon: it holds the one session of this profile",
        ));
    }
    let path = request
        .uri()
        .path_and_query()
        .map_or_else(|| path.to_string(), |p| p.as_str().to_string());
    let token = daemon.token().await?;
    let (parts, body) = request.into_parts();
    let Ok(body) = axum::body::to_bytes(body, MAX_REQUEST).await else {
        return Err(refuse(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            "the request body is over 2 MiB",
        ));
    };
    let content_type = parts
        .headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("application/json")
        .to_string();
    let raw = RawRequest {
        method: parts.method.clone(),
        path,
        body: (!body.is_empty()).then(|| (body.to_vec(), content_type)),
        headers: Vec::new(),
    };
    let mut answer = match daemon.client.raw(&raw, Some(&token)).await {
        Ok(answer) => answer,
        Err(e) => {
            return Err(refuse(
                StatusCode::BAD_GATEWAY,
                "unreachable",
                &e.to_string(),
            ));
        }
    };
    let status = answer.status();
    let mut headers = HeaderMap::new();
    for name in [header::CONTENT_TYPE, header::RETRY_AFTER, header::LOCATION] {
        if let Some(v) = answer.headers().get(&name) {
            headers.insert(name, v.clone());
        }
    }
    let bytes = match read_capped(&mut answer, MAX_ANSWER).await {
        Ok(bytes) => bytes,
        Err(Unread::TooLarge) => {
            return Err(refuse(
                StatusCode::BAD_GATEWAY,
                "unreachable",
                "the gateway's answer is over 16 MiB",
            ));
        }
        Err(Unread::Broken) => {
            return Err(refuse(
                StatusCode::BAD_GATEWAY,
                "unreachable",
                "the gateway's answer broke off",
            ));
        }
    };
    if status.is_client_error()
        && let Ok(envelope) = serde_json::from_slice::<serde_json::Value>(&bytes)
        && let Some(code) = envelope["error"].as_str()
        && fatal(code)
    {
        daemon.stop(code, "the gateway refused this actor");
    }
    let mut response = Response::new(Body::from(bytes));
    *response.status_mut() = status;
    *response.headers_mut() = headers;
    Ok(response)
}

async fn status(
    State(daemon): State<Arc<Daemon>>,
    ConnectInfo(peer): ConnectInfo<Peer>,
) -> Response {
    if let Err(refused) = daemon.admit(peer) {
        return refused.into_response();
    }
    axum::Json(daemon.status().await).into_response()
}

/// One local reader: the backlog it asked for, then live events, until the daemon stops.
struct Reader {
    daemon: Arc<Daemon>,
    backlog: VecDeque<LocalEvent>,
    live: broadcast::Receiver<LocalEvent>,
    stop: watch::Receiver<Option<String>>,
    last: Option<u64>,
    done: bool,
}

impl Drop for Reader {
    fn drop(&mut self) {
        self.daemon.streams.fetch_sub(1, Ordering::SeqCst);
    }
}

fn closed(reason: &str) -> Event {
    Event::default()
        .event("closed")
        .data(serde_json::json!({ "reason": reason }).to_string())
}

impl Reader {
    async fn next(mut self) -> Option<(Result<Event, Infallible>, Self)> {
        if self.done {
            return None;
        }
        if let Some(event) = self.backlog.pop_front() {
            self.last = event.id.or(self.last);
            return Some((Ok(event.sse()), self));
        }
        loop {
            let stopped = self.stop.borrow().clone();
            if let Some(reason) = stopped {
                self.done = true;
                return Some((Ok(closed(&reason)), self));
            }
            tokio::select! {
                got = self.live.recv() => match got {
                    Ok(event) => {
                        if event.id.is_some() && event.id <= self.last {
                            continue;
                        }
                        self.last = event.id.or(self.last);
                        return Some((Ok(event.sse()), self));
                    }
                    Err(broadcast::error::RecvError::Lagged(_)) => {
                        // Too slow: end the stream; the reader resumes with Last-Event-ID.
                        self.done = true;
                        return Some((Ok(closed("lagged")), self));
                    }
                    Err(broadcast::error::RecvError::Closed) => return None,
                },
                changed = self.stop.changed() => {
                    if changed.is_err() {
                        return None;
                    }
                }
            }
        }
    }
}

async fn local_events(
    State(daemon): State<Arc<Daemon>>,
    ConnectInfo(peer): ConnectInfo<Peer>,
    headers: HeaderMap,
) -> Response {
    if let Err(refused) = daemon
        .admit(peer)
        .and_then(|()| daemon.refusal_if_stopped())
    {
        return refused.into_response();
    }
    let after = match headers.get("last-event-id") {
        None => None,
        Some(v) => match v.to_str().ok().and_then(|s| s.trim().parse::<u64>().ok()) {
            Some(after) => Some(after),
            None => {
                return refuse(
                    StatusCode::BAD_REQUEST,
                    "invalid_request",
                    "Last-Event-ID must be an event id",
                )
                .into_response();
            }
        },
    };
    if daemon.streams.fetch_add(1, Ordering::SeqCst) >= MAX_LOCAL_STREAMS {
        daemon.streams.fetch_sub(1, Ordering::SeqCst);
        return refuse(
            StatusCode::TOO_MANY_REQUESTS,
            "rate_limited",
            &format!("at most {MAX_LOCAL_STREAMS} local event readers; close one"),
        )
        .into_response();
    }
    let live = daemon.events.subscribe();
    let backlog: VecDeque<LocalEvent> = daemon
        .backlog
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .iter()
        .filter(|e| after.is_none_or(|a| e.id.is_some_and(|id| id > a)))
        .cloned()
        .collect();
    let reader = Reader {
        stop: daemon.stop_signal.subscribe(),
        daemon,
        backlog,
        live,
        last: after,
        done: false,
    };
    Sse::new(futures_util::stream::unfold(reader, Reader::next))
        .keep_alive(KeepAlive::new().interval(crate::http::events::HEARTBEAT))
        .into_response()
}

/// Splits finished server-sent events off the front of `buffer`.
fn parse_events(buffer: &mut String) -> Vec<LocalEvent> {
    let mut out = Vec::new();
    while let Some(end) = buffer.find("\n\n") {
        let block: String = buffer.drain(..end + 2).collect();
        let (mut id, mut event, mut data) = (None, String::new(), Vec::new());
        for line in block.lines() {
            let (field, value) = line.split_once(':').unwrap_or((line, ""));
            let value = value.strip_prefix(' ').unwrap_or(value);
            match field {
                "id" => id = value.parse().ok(),
                "event" => event = value.to_string(),
                "data" => data.push(value),
                _ => {}
            }
        }
        if !event.is_empty() || !data.is_empty() {
            out.push(LocalEvent {
                id,
                event: if event.is_empty() {
                    "message".into()
                } else {
                    event
                },
                data: data.join("\n"),
            });
        }
    }
    out
}

/// Holds the profile's one event stream and fans it out; reconnects after the gateway ends it
/// (token expiry, restarts) with `Last-Event-ID`; a revocation stops the daemon.
async fn follow(daemon: Arc<Daemon>, mut shutdown: watch::Receiver<bool>) {
    let mut last: Option<u64> = None;
    let mut backoff = Duration::from_millis(250);
    loop {
        if *shutdown.borrow() || daemon.stopped().is_some() {
            return;
        }
        let attempt = async {
            let token = daemon.token().await.ok()?;
            let mut headers = vec![("accept".to_string(), "text/event-stream".to_string())];
            if let Some(id) = last {
                headers.push(("last-event-id".into(), id.to_string()));
            }
            let request = RawRequest {
                method: reqwest::Method::GET,
                path: "/v1/events".into(),
                body: None,
                headers,
            };
            daemon.client.raw(&request, Some(&token)).await.ok()
        };
        let response = tokio::select! {
            r = attempt => r,
            _ = shutdown.changed() => return,
        };
        let mut response = match response {
            Some(r) if r.status().is_success() => r,
            other => {
                if let Some(r) = other {
                    let envelope: serde_json::Value = r.json().await.unwrap_or_default();
                    if let Some(code) = envelope["error"].as_str()
                        && fatal(code)
                    {
                        daemon.stop(code, "the gateway refused this actor's event stream");
                        return;
                    }
                }
                tokio::select! {
                    () = tokio::time::sleep(backoff) => {}
                    _ = shutdown.changed() => return,
                }
                backoff = (backoff * 2).min(Duration::from_secs(30));
                continue;
            }
        };
        let mut buffer = String::new();
        loop {
            let chunk = tokio::select! {
                c = response.chunk() => c,
                _ = shutdown.changed() => return,
            };
            let Ok(Some(chunk)) = chunk else { break };
            buffer.push_str(&String::from_utf8_lossy(&chunk));
            for event in parse_events(&mut buffer) {
                if event.event == "closed" {
                    let reason: serde_json::Value =
                        serde_json::from_str(&event.data).unwrap_or_default();
                    if let Some(code) = reason["reason"].as_str()
                        && fatal(code)
                    {
                        daemon.stop(code, "the gateway's event stream reported it");
                        return;
                    }
                    continue;
                }
                last = event.id.or(last);
                daemon.publish(event);
            }
        }
    }
}

/// A running daemon (see [`start`]).
pub struct Running {
    daemon: Arc<Daemon>,
    /// Where it listens (none under socket activation).
    pub socket: Option<PathBuf>,
    shutdown: watch::Sender<bool>,
    served: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl Running {
    /// What `GET /daemon/status` answers.
    pub async fn status(&self) -> DaemonStatus {
        self.daemon.status().await
    }

    /// Stops serving, removes the socket, and waits for the server to end.
    pub async fn shutdown(self) -> anyhow::Result<()> {
        self.shutdown.send_replace(true);
        let served = self.served.await;
        if let Some(socket) = &self.socket {
            let _ = std::fs::remove_file(socket);
        }
        served.context("the daemon's server panicked")??;
        Ok(())
    }
}

/// Options of [`start`].
pub struct Options {
    /// The socket path (`None`: the profile's `daemon.sock`).
    pub socket: Option<PathBuf>,
    /// Allowed peer uids (empty: the daemon's own).
    pub allow_uid: Vec<u32>,
    /// The clock for expiry decisions and proofs (tests inject one).
    pub clock: Arc<dyn Clock>,
}

/// A listener from systemd socket activation, if one was passed.
fn activated() -> anyhow::Result<Option<UnixListener>> {
    let mut fds = listenfd::ListenFd::from_env();
    if fds.len() == 0 {
        return Ok(None);
    }
    let Some(listener) = fds
        .take_unix_listener(0)
        .context("the passed socket is not a Unix stream socket")?
    else {
        return Ok(None);
    };
    listener.set_nonblocking(true)?;
    Ok(Some(UnixListener::from_std(listener)?))
}

/// Binds `path` (0600), replacing a stale socket but never a live daemon's.
fn bind(path: &Path) -> anyhow::Result<UnixListener> {
    if path.exists() {
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            bail!(
                "a daemon already serves on {}; stop it first",
                path.display()
            );
        }
        std::fs::remove_file(path)
            .with_context(|| format!("cannot remove the stale socket {}", path.display()))?;
    }
    let listener =
        UnixListener::bind(path).with_context(|| format!("cannot listen on {}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    Ok(listener)
}

/// Starts the daemon for `globals`' profile: loads the key and the session (refreshing it if
/// due), binds the socket and serves until [`Running::shutdown`].
pub async fn start(globals: &Globals, options: Options) -> anyhow::Result<Running> {
    let key_path = globals.profile.join("device.jwk");
    if !key_path.exists() {
        bail!(
            "no device key in {}; log in (or redeem a link code) with this profile first",
            globals.profile.display()
        );
    }
    let mut direct = globals.clone();
    direct.no_daemon = true;
    let client = direct.direct_client()?.with_clock(options.clock.clone());
    let stored = super::session(&direct, &client).await?;
    let (events, _) = broadcast::channel(256);
    let (stop_signal, _) = watch::channel(None);
    let (listener, socket) = match activated()? {
        Some(listener) => (listener, None),
        None => {
            let path = options
                .socket
                .clone()
                .unwrap_or_else(|| globals.profile.join(SOCKET));
            (bind(&path)?, Some(path))
        }
    };
    let allowed = if options.allow_uid.is_empty() {
        let Some(path) = &socket else {
            bail!("under socket activation name the agent's uid with --allow-uid");
        };
        vec![std::fs::metadata(path)?.uid()]
    } else {
        options.allow_uid.clone()
    };
    let daemon = Arc::new(Daemon {
        globals: direct,
        client,
        clock: options.clock,
        session: tokio::sync::Mutex::new(stored),
        refreshes: AtomicU64::new(0),
        stopped: Mutex::new(None),
        stop_signal,
        events,
        backlog: Mutex::new(VecDeque::new()),
        streams: AtomicUsize::new(0),
        allowed,
    });
    let (shutdown, watch_shutdown) = watch::channel(false);
    tokio::spawn(follow(daemon.clone(), watch_shutdown.clone()));
    tokio::spawn(refresher(daemon.clone(), watch_shutdown.clone()));
    let app = axum::Router::new()
        .route("/daemon/status", axum::routing::get(status))
        .route("/v1/events", axum::routing::get(local_events))
        .fallback(forward)
        .with_state(daemon.clone());
    let mut until = watch_shutdown;
    let served = tokio::spawn(async move {
        axum::serve(listener, app.into_make_service_with_connect_info::<Peer>())
            .with_graceful_shutdown(async move {
                let _ = until.wait_for(|stop| *stop).await;
            })
            .await
    });
    Ok(Running {
        daemon,
        socket,
        shutdown,
        served,
    })
}

/// Refreshes the session ahead of its expiry even when no request comes.
async fn refresher(daemon: Arc<Daemon>, mut shutdown: watch::Receiver<bool>) {
    loop {
        tokio::select! {
            () = tokio::time::sleep(REFRESH_LOOK) => {}
            _ = shutdown.changed() => return,
        }
        if daemon.stopped().is_some() {
            return;
        }
        let _ = daemon.token().await;
    }
}

/// `agentkeys daemon`: serves until interrupted (SIGINT or SIGTERM).
pub async fn run(globals: &Globals, args: &DaemonArgs) -> anyhow::Result<()> {
    let running = start(
        globals,
        Options {
            socket: args.socket.clone(),
            allow_uid: args.allow_uid.clone(),
            clock: Arc::new(SystemClock),
        },
    )
    .await?;
    let status = running.status().await;
    let place = running.socket.as_ref().map_or_else(
        || "the activated socket".to_string(),
        |p| p.display().to_string(),
    );
    println!(
        "agentkeys daemon serving {} {} on {place}",
        status.session.role, status.session.omni
    );
    use std::io::Write as _;
    let _ = std::io::stdout().flush();
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = terminate.recv() => {}
    }
    running.shutdown().await
}

/// The session as the CLI sees it through a daemon: its fields with an empty token.
pub(crate) async fn session(client: &Client) -> anyhow::Result<StoredSession> {
    let status: DaemonStatus = client.get("/daemon/status", None).await.map_err(explain)?;
    if status.state != "serving" {
        return Err(explain(ClientError::Api {
            status: 403,
            code: status.reason.unwrap_or_else(|| "actor_revoked".into()),
            message: status.message.unwrap_or_default(),
            request_id: String::new(),
        }));
    }
    Ok(StoredSession {
        gateway: status.gateway,
        session: status.session,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_are_split_at_blank_lines_and_comments_ignored() {
        let mut buffer = String::from(
            ": heartbeat\n\nid: 7\nevent: actor_revoke\ndata: {\"a\":1}\n\nevent: closed\ndata: {\"reason\":\"x\"}\n\nid: 9\nda",
        );
        let events = parse_events(&mut buffer);
        assert_eq!(events.len(), 2);
        assert_eq!(events[0].id, Some(7));
        assert_eq!(events[0].event, "actor_revoke");
        assert_eq!(events[0].data, "{\"a\":1}");
        assert_eq!(events[1].event, "closed");
        assert_eq!(
            buffer, "id: 9\nda",
            "an unfinished event waits for the rest"
        );
    }

    #[test]
    fn debug_output_hides_the_session_token() {
        let session = SessionResponse {
            session_jwt: "eyJ.secret-token.sig".into(),
            expires_at: "2026-01-01T00:00:00.000Z".into(),
            omni: "ab".into(),
            path: String::new(),
            master_omni: "ab".into(),
            role: "master".into(),
            binding_id: 1,
        };
        let stored = StoredSession {
            gateway: "http://127.0.0.1:8090".into(),
            session,
        };
        let shown = format!("{stored:?}");
        assert!(!shown.contains("secret-token"), "{shown}");
        assert!(shown.contains("[redacted]"), "{shown}");
    }

    #[test]
    fn session_routes_are_reserved_to_the_daemon() {
        for path in [
            "/v1/auth/wallet/start",
            "/v1/session/refresh",
            "/v1/link/redeem",
            "/v1/pairing/poll",
        ] {
            assert!(reserved(path), "{path}");
        }
        for path in ["/v1/sign/eip191", "/v1/whoami", "/v1/pairing/claim"] {
            assert!(!reserved(path), "{path}");
        }
    }
}
