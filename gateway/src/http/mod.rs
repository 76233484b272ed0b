//! The HTTP surface (axum): the error envelope, request ids, body limit and timeout on every
//! route; extractors whose rejections use the envelope.

pub mod actors;
pub mod approvals;
pub mod audit;
pub mod authz;
pub mod confirm;
mod console;
pub mod credentials;
pub mod crockford;
pub mod devices;
pub mod email;
pub mod error;
pub mod events;
pub mod extract;
mod health;
pub mod identities;
pub mod links;
pub mod metrics;
pub mod oauth2;
pub mod oidc;
pub mod openapi;
pub mod pairing;
pub mod pending;
pub mod policy;
mod process;
pub mod ratelimit;
pub mod request_id;
pub mod session;
pub mod sign;
pub mod tree;
pub mod useragent;
pub mod wallet;

use std::sync::Arc;
use std::time::Duration;

use agentkeys_actors::agent::AgentActor;
use agentkeys_actors::ledger::Registration;
use agentkeys_actors::master::MasterActor;
use agentkeys_actors::signer::SignerHandle;
use agentkeys_runtime::{Clock, Registry, Runtime};
use axum::Router;
use axum::extract::{DefaultBodyLimit, Request};
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::get;
use utoipa::OpenApi as _;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::auth::dpop::DpopVerifier;
use crate::auth::session::Sessions;
use error::{ApiError, ErrorCode};

/// Largest accepted request body.
pub const BODY_LIMIT: usize = 1 << 20;

/// What every handler can reach: one shared [`AppStateInner`] (a clone is one reference count,
/// not thirty — every middleware and extractor clones it per request).
#[derive(Clone)]
pub struct AppState(Arc<AppStateInner>);

impl AppState {
    /// Shares `inner` with every handler.
    pub fn new(inner: AppStateInner) -> Self {
        Self(Arc::new(inner))
    }
}

impl std::ops::Deref for AppState {
    type Target = AppStateInner;

    fn deref(&self) -> &AppStateInner {
        &self.0
    }
}

/// The fields of [`AppState`].
pub struct AppStateInner {
    /// The actor runtime.
    pub runtime: Runtime,
    /// The signer pool.
    pub signer: SignerHandle,
    /// The domain ledger (reads of devices and audit pages, logins).
    pub ledger: agentkeys_actors::ledger::Ledger,
    /// The configured public URL.
    pub public_url: String,
    /// host[:port] of the public URL.
    pub domain: String,
    /// The injected clock.
    pub clock: Arc<dyn Clock>,
    /// DPoP verification, replay cache and nonces.
    pub dpop: Arc<DpopVerifier>,
    /// With every node of a PostgreSQL deployment active: the one statement each authenticated
    /// request asks the database (shared replay state, the master's change epoch).
    pub cluster: Option<Arc<crate::cluster::Cluster>>,
    /// Outstanding SIWE challenges.
    pub challenges: Arc<wallet::Challenges>,
    /// Chains accepted for SIWE.
    pub siwe_chains: Arc<[u64]>,
    /// Session tokens (K1): minting and verification.
    pub sessions: Arc<Sessions>,
    /// Active master actors.
    pub masters: Registry<MasterActor>,
    /// Active agent actors.
    pub agents: Registry<AgentActor>,
    /// Who may create a new master.
    pub registration: Registration,
    /// The deployment's client id.
    pub client_id: String,
    /// How magic links are sent.
    pub mailer: crate::mail::Mailer,
    /// Pending email logins.
    pub email_logins: Arc<email::EmailLogins>,
    /// Pending logins through OpenID providers.
    pub oauth_logins: Arc<oauth2::OAuthLogins>,
    /// The configured OpenID providers.
    pub providers: Arc<crate::openid::Providers>,
    /// Per-IP and per-email limits of the unauthenticated routes.
    pub rate_limits: Arc<ratelimit::RateLimits>,
    /// Proxies whose forwarding headers name the client.
    pub trusted_proxies: Arc<[crate::config::IpNet]>,
    /// Open event streams per actor.
    pub event_streams: Arc<events::StreamCounts>,
    /// The public URL is on loopback (plain-http webhooks allowed).
    pub dev_mode: bool,
    /// Approval notices (webhook, email) for masters nobody is watching.
    pub notifier: crate::notify::Notifier,
    /// OIDC tokens in upstream's claim shape.
    pub oidc_legacy_claims: bool,
    /// OIDC key rotation.
    pub rotator: Arc<crate::rotation::Rotator>,
    /// Pending pairing requests.
    pub pairings: Arc<pairing::Pairings>,
    /// Lifetimes and per-client limits.
    pub limits: crate::config::Limits,
    /// Becomes `true` when the server stops: event streams end so the drain need not wait.
    pub stopping: tokio::sync::watch::Receiver<bool>,
}

impl std::fmt::Debug for AppState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppState")
            .field("public_url", &self.public_url)
            .finish_non_exhaustive()
    }
}

impl AppState {
    /// Sends a principal message to the master or agent actor `omni`.
    pub async fn principal<M>(
        &self,
        role: crate::auth::session::Role,
        omni: agentkeys_runtime::Omni,
        msg: M,
    ) -> Result<M::Result, agentkeys_runtime::CallError>
    where
        MasterActor: actix::Handler<agentkeys_runtime::Supervised<M>>,
        AgentActor: actix::Handler<agentkeys_runtime::Supervised<M>>,
        M: actix::Message + Clone + Send + 'static,
        M::Result: Send,
    {
        match role {
            crate::auth::session::Role::Master => self.masters.call(omni, msg).await,
            crate::auth::session::Role::Agent => self.agents.call(omni, msg).await,
        }
    }

    /// Records what the actor `omni` obtained (the audit row of a signature or token) and
    /// answers after its commit and a fresh lineage check, on the actor's published view when
    /// it is active (`agentkeys_actors::principal::record_action`).
    pub async fn record_action(
        &self,
        role: crate::auth::session::Role,
        omni: agentkeys_runtime::Omni,
        msg: agentkeys_actors::principal::RecordAction,
    ) -> Result<(), agentkeys_actors::principal::PrincipalError> {
        use agentkeys_actors::principal::record_action;
        let (ledger, clock) = (&self.ledger, self.clock.as_ref());
        match role {
            crate::auth::session::Role::Master => {
                record_action(&self.masters, omni, ledger, clock, msg).await
            }
            crate::auth::session::Role::Agent => {
                record_action(&self.agents, omni, ledger, clock, msg).await
            }
        }
    }

    /// The request id of the current request (for audit rows).
    pub fn request_id(&self) -> String {
        request_id::current().unwrap_or_default()
    }

    /// Now, in seconds since the epoch, from the injected clock.
    pub fn now_seconds(&self) -> i64 {
        i64::try_from(self.clock.now().as_millis() / 1000).unwrap_or(i64::MAX)
    }
}

/// The public router; `metrics` collects its request metrics.
pub fn router(state: AppState, metrics: Arc<metrics::HttpMetrics>) -> Router {
    let (routes, mut api) = OpenApiRouter::with_openapi(openapi::ApiDoc::openapi())
        .routes(routes!(health::healthz))
        .routes(routes!(health::readyz))
        .routes(routes!(wallet::start))
        .routes(routes!(wallet::verify))
        .routes(routes!(session::refresh))
        .routes(routes!(session::whoami))
        .routes(routes!(devices::delete))
        .routes(routes!(devices::list))
        .routes(routes!(actors::create))
        .routes(routes!(actors::show))
        .routes(routes!(actors::tree))
        .routes(routes!(actors::search))
        .routes(routes!(actors::count))
        .routes(routes!(actors::set_scopes))
        .routes(routes!(actors::revoke))
        .routes(routes!(links::issue_code))
        .routes(routes!(links::redeem))
        .routes(routes!(sign::eip191))
        .routes(routes!(sign::eip712))
        .routes(routes!(sign::transaction))
        .routes(routes!(sign::sr25519))
        .routes(routes!(policy::put, policy::delete, policy::get))
        .routes(routes!(policy::check))
        .routes(routes!(approvals::list))
        .routes(routes!(approvals::webhook))
        .routes(routes!(approvals::show))
        .routes(routes!(approvals::approve))
        .routes(routes!(approvals::deny))
        .routes(routes!(audit::list))
        .routes(routes!(audit::head))
        .routes(routes!(events::events))
        .routes(routes!(pairing::request))
        .routes(routes!(pairing::claim))
        .routes(routes!(pairing::add_device))
        .routes(routes!(pairing::poll))
        .routes(routes!(oidc::discovery))
        .routes(routes!(oidc::jwks))
        .routes(routes!(oidc::token))
        .routes(routes!(email::request))
        .routes(routes!(email::verify))
        .routes(routes!(email::status))
        .routes(routes!(email::landing))
        .routes(routes!(oauth2::start))
        .routes(routes!(oauth2::callback))
        .routes(routes!(oauth2::confirm))
        .routes(routes!(oauth2::status))
        .routes(routes!(identities::list))
        .routes(routes!(identities::unlink))
        .routes(routes!(identities::wallet_start))
        .routes(routes!(identities::wallet_verify))
        .routes(routes!(identities::email_request))
        .routes(routes!(identities::oauth2_start))
        .routes(routes!(credentials::list))
        .routes(routes!(
            credentials::put,
            credentials::get,
            credentials::delete
        ))
        .split_for_parts();
    openapi::add_shared_responses(&mut api);
    let api = Arc::new(api);
    routes
        .route(
            "/openapi.json",
            get(move || async move { axum::Json(api.as_ref().clone()) }),
        )
        .route("/console", get(console::page))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .layer(middleware::from_fn_with_state(
            Front {
                state: state.clone(),
                metrics,
            },
            front,
        ))
        .with_state(state)
}

/// What [`front`] needs.
#[derive(Clone)]
struct Front {
    state: AppState,
    metrics: Arc<metrics::HttpMetrics>,
}

/// Everything that wraps every request, in one layer (one future and one state clone per
/// request instead of five): the request id (task-local, log span, `x-request-id`), the client
/// address and the per-IP limit of the unauthenticated routes, the timeout, the request
/// metrics, and `Cache-Control: no-store`.
async fn front(
    axum::extract::State(front): axum::extract::State<Front>,
    mut request: Request,
    next: Next,
) -> Response {
    let id = request_id::fresh();
    let span = tracing::info_span!("request", request_id = %id, method = %request.method(), path = %request.uri().path());
    let method = metrics::method_label(request.method());
    let route = metrics::route_label(&request);
    let started = std::time::Instant::now();
    let served = async {
        match ratelimit::admit(&front.state, &mut request) {
            Err(refused) => axum::response::IntoResponse::into_response(refused),
            Ok(()) => timeout(&front.state, request, next).await,
        }
    };
    let mut response =
        request_id::scope(id.clone(), tracing::Instrument::instrument(served, span)).await;
    front.metrics.record(
        method,
        route,
        response.status().as_u16(),
        started.elapsed().as_secs_f64(),
    );
    no_store(&mut response);
    if let Ok(value) = axum::http::HeaderValue::from_str(&id) {
        response.headers_mut().insert("x-request-id", value);
    }
    response
}

/// `Cache-Control: no-store` on every answer that does not set its own (RFC 6749 §5.1: token
/// responses must not be cached; nothing else a key broker answers should be either). The
/// discovery document and the JWKS set their own `max-age`.
fn no_store(response: &mut Response) {
    response
        .headers_mut()
        .entry(axum::http::header::CACHE_CONTROL)
        .or_insert(axum::http::HeaderValue::from_static("no-store"));
}

async fn not_found() -> ApiError {
    ApiError::new(ErrorCode::NotFound, "no such route")
}

async fn method_not_allowed() -> ApiError {
    ApiError::new(
        ErrorCode::MethodNotAllowed,
        "this route does not take that method",
    )
}

async fn timeout(state: &AppState, request: Request, next: Next) -> Response {
    // Event streams live as long as their token; they end themselves.
    if request.uri().path() == "/v1/events" {
        return next.run(request).await;
    }
    let limit = Duration::from_secs(state.limits.request_timeout_seconds);
    match tokio::time::timeout(limit, next.run(request)).await {
        Ok(response) => response,
        Err(_) => axum::response::IntoResponse::into_response(
            ApiError::new(ErrorCode::Busy, "the request took too long; retry")
                .retry_after(Duration::from_secs(1)),
        ),
    }
}
