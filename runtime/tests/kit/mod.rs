//! The runtime's test kit: a temporary store, a runtime on a manual clock, the smallest real
//! actor ([`Probe`]), deterministic omnis and [`wait_until`]. The runtime's own tests include it
//! as a module; `agentkeys-tests` re-exports it for the other crates' tests.

#![allow(dead_code, unreachable_pub, reason = "each test binary uses a subset")]

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use actix::{Actor, Context, Handler, Message};
use agentkeys_runtime::store::{ActorKind, CreateActor, Store, StoreOptions};
use agentkeys_runtime::{
    Activation, CallError, LineageGuard, ManualClock, Omni, Registry, Runtime, RuntimeConfig,
    Timestamp, VirtualActor,
};

/// How long test shutdowns wait for calls in flight.
pub const DRAIN: Duration = Duration::from_secs(5);

/// The start time of every manual clock in the tests.
pub const T0: Timestamp = Timestamp::from_millis(1_700_000_000_000);

/// A deterministic omni for (parent, label); masters use `parent = None`.
pub fn omni_of(parent: Option<&Omni>, label: &str) -> Omni {
    let mut out = [0u8; 32];
    for (i, chunk) in out.chunks_mut(8).enumerate() {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        (i, parent.map(|p| *p.as_bytes()), label).hash(&mut h);
        chunk.copy_from_slice(&h.finish().to_be_bytes());
    }
    Omni::from_bytes(out)
}

/// A runtime on a fresh store in a temporary directory, with a [`Probe`] registry.
pub struct Fixture {
    /// Keeps the directory alive as long as the fixture.
    pub dir: tempfile::TempDir,
    /// The clock every decision reads.
    pub clock: ManualClock,
    /// The runtime (two arbiters, 60 s idle timeout).
    pub runtime: Runtime,
    /// Probes on that runtime.
    pub registry: Registry<Probe>,
}

impl Fixture {
    /// Crashes `omni`'s actor until the default restart intensity (5 in 10 s) is exceeded,
    /// waiting out each backoff on the manual clock; the sixth crash quarantines it.
    pub async fn crash_into_quarantine(&self, omni: Omni) {
        for crash in 1..=6 {
            let answer = self.registry.call(omni, Panic).await;
            let quarantined = crash == 6;
            assert!(
                matches!(answer, Err(CallError::Unavailable { quarantined: q, .. }) if q == quarantined),
                "crash {crash}: {answer:?}"
            );
            if !quarantined {
                self.clock
                    .advance(Duration::from_millis(100 << (crash - 1)));
            }
        }
    }

    /// Starts everything; must run inside an actix `System`.
    pub fn new() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let clock = ManualClock::new(T0);
        let runtime = start_runtime(open_store(dir.path()), &clock);
        let registry = Registry::new(&runtime, ());
        Self {
            dir,
            clock,
            runtime,
            registry,
        }
    }
}

impl Default for Fixture {
    fn default() -> Self {
        Self::new()
    }
}

/// Opens (or creates) the store file in `dir`.
pub fn open_store(dir: &Path) -> Arc<Store> {
    Arc::new(
        Store::open(&dir.join("agentkeys.redb"), &StoreOptions::default(), T0)
            .expect("store opens"),
    )
}

/// Mailbox bound of the test runtimes.
pub const MAILBOX: usize = 8;

/// Starts a runtime with two arbiters, a 60 s idle timeout, mailboxes of [`MAILBOX`] calls and
/// the default supervision policy, on `clock`.
pub fn start_runtime(store: Arc<Store>, clock: &ManualClock) -> Runtime {
    let config = RuntimeConfig {
        arbiters: 2,
        idle_timeout: Duration::from_secs(60),
        mailbox_capacity: MAILBOX,
        ..RuntimeConfig::default()
    };
    Runtime::start(store, Arc::new(clock.clone()), config).expect("inside a System")
}

/// A create of `label` under `parent` (a master when `parent` is `None`).
pub fn create(parent: Option<&Omni>, label: &str) -> CreateActor {
    CreateActor {
        omni: omni_of(parent, label),
        parent: parent.copied(),
        label: if parent.is_some() {
            label.into()
        } else {
            String::new()
        },
        created_at: T0,
        origin: Default::default(),
        scopes: Vec::new(),
    }
}

/// Activations per omni, across the whole test binary (omnis are unique per test).
static ACTIVATIONS: Mutex<Option<HashMap<Omni, usize>>> = Mutex::new(None);

/// How often `omni` was activated as a [`Probe`].
pub fn activations(omni: &Omni) -> usize {
    ACTIVATIONS
        .lock()
        .expect("not poisoned")
        .as_ref()
        .and_then(|m| m.get(omni).copied())
        .unwrap_or(0)
}

/// The smallest real actor: answers with its omni after the lineage check.
pub struct Probe {
    omni: Omni,
    guard: LineageGuard,
}

impl Actor for Probe {
    type Context = Context<Self>;
}

impl VirtualActor for Probe {
    type Deps = ();

    fn accepts(_kind: ActorKind) -> bool {
        true
    }

    fn activate(activation: Activation, _deps: (), _ctx: &mut Context<Self>) -> Self {
        let omni = activation.lineage.actor().omni;
        *ACTIVATIONS
            .lock()
            .expect("not poisoned")
            .get_or_insert_with(HashMap::new)
            .entry(omni)
            .or_default() += 1;
        Probe {
            omni,
            guard: activation.guard,
        }
    }
}

/// Asks a probe for its omni.
#[derive(Debug, Clone, Message)]
#[rtype(result = "Result<Omni, CallError>")]
pub struct Ping;

agentkeys_runtime::supervised!(Probe);

impl Handler<Ping> for Probe {
    type Result = Result<Omni, CallError>;

    fn handle(&mut self, _msg: Ping, _ctx: &mut Context<Self>) -> Self::Result {
        self.guard.check()?;
        Ok(self.omni)
    }
}

/// Test-only message: the handler panics (to exercise supervision).
#[derive(Debug, Clone, Message)]
#[rtype(result = "()")]
pub struct Panic;

impl Handler<Panic> for Probe {
    type Result = ();

    fn handle(&mut self, _msg: Panic, _ctx: &mut Context<Self>) {
        panic!("injected panic in {}", self.omni.short());
    }
}

/// Test-only message: answers only once a permit of the semaphore is available, so calls can
/// be held in flight.
#[derive(Debug, Clone, Message)]
#[rtype(result = "Omni")]
pub struct Hold(pub Arc<tokio::sync::Semaphore>);

impl Handler<Hold> for Probe {
    type Result = actix::ResponseFuture<Omni>;

    fn handle(&mut self, msg: Hold, _ctx: &mut Context<Self>) -> Self::Result {
        let omni = self.omni;
        Box::pin(async move {
            // A closed semaphore also releases the call.
            let _permit = msg.0.acquire().await;
            omni
        })
    }
}

/// Waits until `cond` holds, polling; fails after `limit` (no fixed sleeps in assertions).
pub async fn wait_until(mut cond: impl FnMut() -> bool, limit: Duration) -> bool {
    let deadline = tokio::time::Instant::now() + limit;
    while tokio::time::Instant::now() < deadline {
        if cond() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    cond()
}

/// Holds the writer inside a batch until released, so later writes queue up behind it.
struct Gate {
    entered: std::sync::mpsc::Sender<()>,
    release: std::sync::mpsc::Receiver<()>,
}

impl agentkeys_runtime::store::Mutation for Gate {
    type Plan = ();
    type Output = ();
    type Rejection = std::convert::Infallible;

    fn check(
        self,
        _view: &agentkeys_runtime::store::WriteTransaction,
    ) -> Result<Result<(), Self::Rejection>, agentkeys_runtime::store::StoreError> {
        let _ = self.entered.send(());
        let _ = self.release.recv();
        Ok(Ok(()))
    }

    fn apply(
        _plan: (),
        _txn: &agentkeys_runtime::store::WriteTransaction,
    ) -> Result<(), agentkeys_runtime::store::StoreError> {
        Ok(())
    }
}

/// Parks `store`'s writer inside a batch and returns once it is parked: no write commits until
/// the returned sender sends (or is dropped). The future is the gate's own write.
pub fn hold_writer(store: &Store) -> (std::sync::mpsc::Sender<()>, impl Future + use<>) {
    let (entered_tx, entered_rx) = std::sync::mpsc::channel();
    let (release_tx, release_rx) = std::sync::mpsc::channel();
    let pending = store.submit(Gate {
        entered: entered_tx,
        release: release_rx,
    });
    entered_rx.recv().expect("writer entered the gate");
    (release_tx, pending)
}
