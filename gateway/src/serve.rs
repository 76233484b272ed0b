//! `agentkeys serve`: boot order, the listener, graceful shutdown.
//!
//! Boot: data dir → store (schema and `client_id` checked) → runtime (arbiters) → listener.
//! Shutdown on SIGTERM or ctrl-c: stop accepting, let in-flight requests finish, then stop the
//! actors and arbiters and close the store (the writer commits what was submitted).

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use agentkeys_actors::ledger::{self, Ledger};
use agentkeys_actors::signer::{self, CurrentKids, KeyPlacement, KeySetName, SignerConfig, keys};
use agentkeys_runtime::store::{Store, StoreOptions};
use agentkeys_runtime::{Clock, Registry, Runtime, RuntimeConfig, SystemClock};
use anyhow::Context as _;
use tokio::sync::oneshot;

use crate::auth::dpop::DpopVerifier;
use crate::auth::session::{Lifetimes, Sessions};
use crate::config::{Config, StoreBackend};
use crate::http::{self, AppState, AppStateInner};

/// How long shutdown waits for requests and calls in flight.
pub const DRAIN: Duration = Duration::from_secs(10);

/// The file name of the store inside the data dir.
pub const STORE_FILE: &str = "agentkeys.redb";

/// A running server.
pub struct Server {
    public: Listener,
    metrics: Option<Listener>,
    admin: tokio::task::JoinHandle<()>,
    admin_socket: std::path::PathBuf,
    supervision_audit: tokio::task::JoinHandle<()>,
    mailer_check: tokio::task::JoinHandle<()>,
    provider_check: tokio::task::JoinHandle<()>,
    notifier: tokio::task::JoinHandle<()>,
    stopping: tokio::sync::watch::Sender<bool>,
    runtime: Runtime,
    ledger: Ledger,
    app: axum::Router,
    /// On PostgreSQL: what the node holds while it serves.
    _node: Option<PgNode>,
    /// On PostgreSQL: the node's background tasks (notifications, expired proofs).
    node_tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Server {
    /// The bound address of the public listener.
    pub fn local_addr(&self) -> SocketAddr {
        self.public.addr
    }

    /// The bound address of the metrics listener, if enabled.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics.as_ref().map(|m| m.addr)
    }

    /// The runtime behind the server.
    pub fn runtime(&self) -> &Runtime {
        &self.runtime
    }

    /// The public router with its state, for tests that call handlers without a socket
    /// (`tower::ServiceExt::oneshot`).
    pub fn app(&self) -> axum::Router {
        self.app.clone()
    }

    /// The domain ledger behind the server.
    pub fn ledger(&self) -> &Ledger {
        &self.ledger
    }

    /// Graceful stop: stop accepting, drain in-flight requests for at most `drain`, then the
    /// runtime's shutdown (drain calls, final group commit, actors deepest first, close store).
    pub async fn stop(self, drain: Duration) -> anyhow::Result<()> {
        // Event streams end first, so they do not hold the drain open.
        self.stopping.send_replace(true);
        let served = self.public.stop(drain).await;
        if let Some(metrics) = self.metrics {
            metrics.stop(drain).await?;
        }
        self.admin.abort();
        self.supervision_audit.abort();
        self.mailer_check.abort();
        self.provider_check.abort();
        self.notifier.abort();
        for task in &self.node_tasks {
            task.abort();
        }
        if let Err(e) = self.ledger.audit_supervision(&self.runtime).await {
            tracing::error!(cause = %e, "cannot audit the last supervision events");
        }
        let _ = std::fs::remove_file(&self.admin_socket);
        let report = self.runtime.shutdown(drain).await;
        tracing::info!(
            actors_stopped = report.stopped_actors,
            abandoned_calls = report.abandoned_calls,
            "shutdown complete"
        );
        served
    }
}

/// One HTTP listener with graceful shutdown.
struct Listener {
    addr: SocketAddr,
    shutdown: oneshot::Sender<()>,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl Listener {
    async fn spawn(addr: SocketAddr, app: axum::Router) -> anyhow::Result<Self> {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("cannot listen on {addr}"))?;
        let addr = listener.local_addr()?;
        let (shutdown, stop_rx) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            axum::serve(
                listener,
                app.into_make_service_with_connect_info::<SocketAddr>(),
            )
            .with_graceful_shutdown(async {
                let _ = stop_rx.await;
            })
            .await
        });
        Ok(Self {
            addr,
            shutdown,
            task,
        })
    }

    /// Stops accepting and waits for in-flight requests, at most `drain`.
    async fn stop(mut self, drain: Duration) -> anyhow::Result<()> {
        let _ = self.shutdown.send(());
        match tokio::time::timeout(drain, &mut self.task).await {
            Ok(joined) => joined
                .context("the HTTP task failed")?
                .context("the HTTP server failed"),
            Err(_) => {
                tracing::warn!(
                    drain_seconds = drain.as_secs(),
                    "requests still running after the drain period; closing them"
                );
                self.task.abort();
                Ok(())
            }
        }
    }
}

/// Starts the store, runtime and listener. Must run inside an actix `System`.
pub async fn start(config: Config) -> anyhow::Result<Server> {
    start_with_clock(config, Arc::new(SystemClock)).await
}

/// [`start`] with an injected clock (tests move time by hand).
pub async fn start_with_clock(config: Config, clock: Arc<dyn Clock>) -> anyhow::Result<Server> {
    create_data_dir(&config.data_dir)?;
    let store_path = config.data_dir.join(STORE_FILE);
    let store_exists = match &config.store {
        StoreBackend::Redb => store_path.exists(),
        StoreBackend::Postgres { settings, .. } => agentkeys_pg::deployment_recorded(settings)
            .await
            .context("cannot reach the PostgreSQL store")?,
    };
    let (k3, generated) = keys::obtain_k3(&config.k3_file, config.dev_mode, store_exists)?;
    if generated {
        tracing::warn!(
            k3_file = %config.k3_file.display(),
            fingerprint = %k3.fingerprint(),
            "DEV MODE: generated a new master secret K3; every wallet derives from it — back it up, \
             and use `agentkeys keys init` for a non-loopback public_url"
        );
    }
    let options = StoreOptions {
        client_id: config.client_id.clone(),
        key_fingerprint: Some(k3.fingerprint().0.to_vec()),
        cache_bytes: usize::try_from(config.limits.store_cache_mib << 20).unwrap_or(usize::MAX),
        prepare: vec![ledger::create_tables],
        ..StoreOptions::default()
    };
    let (store, node) = match &config.store {
        StoreBackend::Redb => (
            Store::open(&store_path, &options, clock.now())
                .with_context(|| format!("cannot open the store {}", store_path.display()))?,
            None,
        ),
        StoreBackend::Postgres {
            settings,
            node_name,
            all_active,
        } => {
            let (store, node) =
                open_postgres(settings, node_name, *all_active, &options, &clock).await?;
            (store, Some(node))
        }
    };
    let recorded = recorded_kids(&store)?;
    let store = Arc::new(store);
    let ledger = Ledger::new(store.clone()).context("cannot read the policies in the store")?;
    let runtime = Runtime::start(store, clock, RuntimeConfig::default())?;
    let keys = match &config.store {
        StoreBackend::Redb => KeyPlacement::Files(config.data_dir.join("keys")),
        StoreBackend::Postgres { .. } => {
            KeyPlacement::Stored(crate::keystore::read(runtime.store())?)
        }
    };
    let signer = signer::start(
        SignerConfig {
            keys,
            client_id: config.client_id.clone(),
            siwe_domain: config.domain.clone(),
            threads: runtime.config().arbiters,
        },
        k3,
        &recorded,
    )?;
    crate::keystore::persist_new(runtime.store(), &signer).await?;
    record_kids(runtime.store().as_ref(), &recorded, &signer.current_kids()).await?;
    if let Some(node) = &node {
        // This node's keys are stored: the next node to start finds them.
        drop(node.starting.lock().map(|mut s| s.take()));
    }
    ledger
        .set_head_signer(signer.audit_head_signer())
        .await
        .map_err(|e| anyhow::anyhow!("cannot sign pending audit heads: {e}"))?;
    let providers = Arc::new(crate::openid::Providers::load(&config.oidc_providers)?);
    let provider_check = tokio::spawn(check_providers_every_five_minutes(
        providers.clone(),
        runtime.clock().clone(),
    ));
    let mailer = crate::mail::Mailer::new(&config.mailer).await;
    mailer.refresh_readiness().await;
    let mailer_check = tokio::spawn(check_mailer_every_minute(mailer.clone()));
    let event_streams = Arc::new(http::events::StreamCounts::default());
    let (notifier, notifier_task) = crate::notify::Notifier::start(
        ledger.clone(),
        signer.clone(),
        mailer.clone(),
        runtime.clock().clone(),
        Duration::from_millis(config.limits.webhook_backoff_ms),
        event_streams.clone(),
    );
    let rotator = Arc::new(crate::rotation::Rotator::load(
        signer.clone(),
        runtime.store().clone(),
        runtime.clock().clone(),
        Duration::from_secs(config.oidc_switch_delay_seconds),
    )?);
    rotator.tick().await?;
    let (stopping, stopping_rx) = tokio::sync::watch::channel(false);
    let principal_deps =
        agentkeys_actors::principal::PrincipalDeps::new(&runtime, signer.clone(), ledger.clone());
    let dpop = Arc::new(match &node {
        // Every node of the deployment accepts the nonces of every other.
        Some(_) => DpopVerifier::with_nonce_secret(
            config.limits.dpop_skew_seconds,
            signer.dpop_nonce_key(),
        ),
        None => DpopVerifier::new(config.limits.dpop_skew_seconds),
    });
    let cluster = node.as_ref().and_then(|n| n.engine.clone()).map(|engine| {
        Arc::new(crate::cluster::Cluster::new(
            engine,
            runtime.clone(),
            signer.pending_key(),
        ))
    });
    let mut node_tasks = Vec::new();
    if let (Some(cluster), StoreBackend::Postgres { settings, .. }) = (&cluster, &config.store) {
        node_tasks.push(tokio::spawn(
            cluster.clone().purge_every_minute(runtime.clock().clone()),
        ));
        let (ledger, runtime) = (ledger.clone(), runtime.clone());
        node_tasks.push(agentkeys_pg::listen(settings, move |heard| match heard {
            agentkeys_pg::Heard::Appended(master) => {
                ledger.wake_streams(agentkeys_runtime::Omni::from_bytes(master));
            }
            agentkeys_pg::Heard::Reconnected => {
                // Whatever changed while this node was not listening is loaded again.
                runtime.flush_caches();
                ledger.wake_all_streams();
            }
        })?);
    }
    let state = AppState::new(AppStateInner {
        stopping: stopping_rx,
        sessions: Arc::new(Sessions::new(
            &config.public_url,
            &signer,
            Lifetimes::of(&config.limits),
        )),
        ledger: ledger.clone(),
        masters: Registry::new(&runtime, principal_deps.clone()),
        agents: Registry::new(&runtime, principal_deps),
        registration: config.registration,
        client_id: config.client_id.clone(),
        mailer: mailer.clone(),
        email_logins: Arc::new(http::email::EmailLogins::new(
            &config.limits,
            "email logins",
        )),
        oauth_logins: Arc::new(http::oauth2::OAuthLogins::new(
            &config.limits,
            "provider logins",
        )),
        providers: providers.clone(),
        rate_limits: Arc::new(http::ratelimit::RateLimits::new(&config.limits)),
        trusted_proxies: config.trusted_proxies.clone().into(),
        event_streams,
        notifier,
        dev_mode: config.dev_mode,
        pairings: Arc::new(http::pairing::Pairings::new(
            &config.limits,
            "pairing requests",
        )),
        oidc_legacy_claims: config.oidc_legacy_claims,
        rotator: rotator.clone(),
        runtime: runtime.clone(),
        signer,
        public_url: config.public_url.clone(),
        domain: config.domain.clone(),
        clock: runtime.clock().clone(),
        dpop,
        cluster: cluster.clone(),
        challenges: Arc::new(http::wallet::Challenges::new(
            &config.limits,
            "login challenges",
        )),
        siwe_chains: config.siwe_chains.clone().into(),
        limits: config.limits,
    });
    if let Some(cluster) = &cluster {
        // Logins and pairings any node may finish (SIWE challenges are shared by wallet.rs).
        state.email_logins.share(cluster.clone(), "email");
        state.oauth_logins.share(cluster.clone(), "oauth2");
        state.pairings.share(cluster.clone(), "pairing");
    }
    let metrics = Arc::new(http::metrics::HttpMetrics::default());
    let admin = crate::admin::listen(&config.data_dir, state.clone()).await?;
    let app = http::router(state.clone(), metrics.clone());
    let public = Listener::spawn(config.listen, app.clone()).await?;
    let metrics = match config.metrics_listen {
        Some(addr) => Some(Listener::spawn(addr, http::metrics::router(state, metrics)).await?),
        None => None,
    };
    tracing::info!(
        addr = %public.addr,
        metrics = ?metrics.as_ref().map(|m| m.addr),
        public_url = %config.public_url,
        data_dir = %config.data_dir.display(),
        "listening"
    );
    let supervision_audit = tokio::spawn(audit_supervision_every_second(
        runtime.clone(),
        ledger.clone(),
    ));
    Ok(Server {
        public,
        metrics,
        admin,
        supervision_audit,
        mailer_check,
        provider_check,
        notifier: notifier_task,
        stopping,
        admin_socket: config.data_dir.join(crate::admin::SOCKET),
        runtime,
        ledger,
        app,
        _node: node,
        node_tasks,
    })
}

/// What a node on PostgreSQL holds while it serves.
struct PgNode {
    /// With one active node: the active-node lock (released when the server is dropped).
    _active: Option<agentkeys_pg::ActiveLock>,
    /// With every node active: the start lock, released once the key sets are stored.
    starting: std::sync::Mutex<Option<agentkeys_pg::StartupLock>>,
    /// With every node active: the engine, for the request path's one statement.
    engine: Option<Arc<agentkeys_pg::PgEngine>>,
}

/// The store on PostgreSQL: migrate and check the deployment; with one active node, wait to
/// become it; then open the store on the engine.
async fn open_postgres(
    settings: &agentkeys_pg::PgSettings,
    node_name: &str,
    all_active: bool,
    options: &StoreOptions,
    clock: &Arc<dyn Clock>,
) -> anyhow::Result<(Store, PgNode)> {
    let identity = agentkeys_pg::NodeIdentity {
        client_id: options.client_id.clone(),
        k3_fingerprint: options.key_fingerprint.clone().unwrap_or_default(),
        node_name: node_name.to_string(),
    };
    let pg = agentkeys_pg::PgStore::open(settings, &identity)
        .await
        .context("cannot open the PostgreSQL store")?;
    if all_active {
        tracing::info!(
            incarnation = pg.incarnation(),
            "every node serves (active_nodes = \"all\")"
        );
        let starting = pg.startup_lock().await?;
        let engine = Arc::new(agentkeys_pg::PgEngine::new(settings)?);
        let store = Store::open_bytes(engine.clone(), options, clock.now())
            .context("cannot open the store on PostgreSQL")?;
        let node = PgNode {
            _active: None,
            starting: std::sync::Mutex::new(Some(starting)),
            engine: Some(engine),
        };
        return Ok((store, node));
    }
    let active = pg
        .become_active(
            || {
                tracing::warn!(
                    "another node is the active node; this node waits as a standby and takes \
                     over when it stops"
                );
            },
            || {
                tracing::error!("exiting so that two nodes never serve at once");
                std::process::exit(75);
            },
        )
        .await
        .context("cannot take the active-node lock")?;
    let engine = agentkeys_pg::PgEngine::new(settings)?.fenced_by(&active);
    let store = Store::open_bytes(Arc::new(engine), options, clock.now())
        .context("cannot open the store on PostgreSQL")?;
    let node = PgNode {
        _active: Some(active),
        starting: std::sync::Mutex::new(None),
        engine: None,
    };
    Ok((store, node))
}

/// Fetches each OpenID provider's discovery document and keys every five minutes (for
/// `/readyz`, information only; the keys are refreshed on demand as well).
async fn check_providers_every_five_minutes(
    providers: Arc<crate::openid::Providers>,
    clock: Arc<dyn Clock>,
) {
    let mut tick = tokio::time::interval(Duration::from_secs(300));
    loop {
        tick.tick().await;
        let now = i64::try_from(clock.now().as_millis() / 1000).unwrap_or(i64::MAX);
        for provider in providers.iter() {
            provider.check(now).await;
        }
    }
}

/// Re-checks the mailer's readiness (SES: the sender identity) every minute.
async fn check_mailer_every_minute(mailer: crate::mail::Mailer) {
    let mut tick = tokio::time::interval(Duration::from_secs(60));
    tick.tick().await;
    loop {
        tick.tick().await;
        mailer.refresh_readiness().await;
    }
}

/// Writes the audit rows of quarantines (and lifts) as they happen.
async fn audit_supervision_every_second(runtime: Runtime, ledger: Ledger) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tick.tick().await;
        if let Err(e) = ledger.audit_supervision(&runtime).await {
            tracing::error!(cause = %e, "cannot audit supervision events");
        }
    }
}

/// The signing kid of each key set as recorded in the store.
fn recorded_kids(store: &Store) -> anyhow::Result<CurrentKids> {
    let mut kids = CurrentKids::default();
    for (set, name) in CurrentKids::META_NAMES {
        let value = store
            .meta(name)?
            .map(|v| String::from_utf8_lossy(&v).into_owned());
        match set {
            KeySetName::Session => kids.session = value,
            KeySetName::Oidc => kids.oidc = value,
            KeySetName::Audit => kids.audit = value,
        }
    }
    Ok(kids)
}

/// Records the signing kids the first time (the rotation state lives in the store).
async fn record_kids(
    store: &Store,
    recorded: &CurrentKids,
    current: &CurrentKids,
) -> anyhow::Result<()> {
    for (set, name) in CurrentKids::META_NAMES {
        if recorded.get(set) != current.get(set) {
            let kid = current.get(set).unwrap_or_default();
            store
                .set_meta(name, kid.as_bytes().to_vec())
                .await
                .map_err(|e| anyhow::anyhow!("cannot record the current {name}: {e}"))?;
        }
    }
    Ok(())
}

/// Runs the server until SIGTERM or ctrl-c (builds the tokio runtime and the actix System).
pub fn run(config: Config) -> anyhow::Result<()> {
    let tokio_rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("agentkeys-io")
        .build()
        .context("cannot build the tokio runtime")?;
    let system = actix::System::with_tokio_rt(|| tokio_rt);
    system.block_on(async move {
        // Handlers first: a SIGTERM sent as soon as the listener is up must not kill the
        // process with the default action.
        let signals = Signals::install()?;
        let server = start(config).await?;
        // A stable line for scripts and tests that need the bound port.
        println!("agentkeys listening on http://{}", server.local_addr());
        signals.wait().await;
        tracing::info!("shutdown requested");
        server.stop(DRAIN).await
    })
}

/// SIGTERM and SIGINT (ctrl-c) handlers, installed before anything starts.
struct Signals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
}

impl Signals {
    fn install() -> anyhow::Result<Self> {
        use tokio::signal::unix::{SignalKind, signal};
        Ok(Self {
            term: signal(SignalKind::terminate()).context("cannot install the SIGTERM handler")?,
            int: signal(SignalKind::interrupt()).context("cannot install the SIGINT handler")?,
        })
    }

    async fn wait(mut self) {
        tokio::select! {
            _ = self.term.recv() => {},
            _ = self.int.recv() => {},
        }
    }
}

fn create_data_dir(dir: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    if !dir.exists() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .with_context(|| format!("cannot create the data dir {}", dir.display()))?;
    }
    let mode = std::fs::metadata(dir)
        .with_context(|| format!("cannot read the data dir {}", dir.display()))?
        .permissions()
        .mode();
    if mode & 0o077 != 0 {
        tracing::warn!(
            data_dir = %dir.display(),
            mode = format!("{:o}", mode & 0o777),
            "the data dir is readable by group or others; run chmod 700 on it"
        );
    }
    Ok(())
}
