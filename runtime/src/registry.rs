//! Virtual activation: actors are data until addressed.
//!
//! A [`Registry`] maps omnis to active actors of one type. The first message to an omni reads
//! its lineage from the store, spawns the actor with `start_in_arbiter` on the arbiter chosen
//! by the omni, registers it, and re-checks the revoked index. Concurrent first requests share
//! one activation (a per-omni `OnceCell`). Idle actors are passivated by
//! [`Registry::passivate_idle`]; revoked subtrees are stopped by the runtime.
//!
//! Callers hold an [`ActorHandle`], never a raw `Addr`. Actor types declare
//! [`supervised!`](crate::supervised) so every call runs under supervision.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock, Weak};
use std::time::Duration;

use actix::fut::{ActorFutureExt, wrap_future};
use actix::{Actor, ActorContext, Addr, AsyncContext, Context, Handler, Message};
use tokio::sync::{OnceCell, oneshot, watch};

use crate::clock::Timestamp;
use crate::omni::Omni;
use crate::runtime::{ActiveSet, Runtime};
use crate::store::{ActorKind, Lineage, Status, StoreError};
use crate::supervision::Supervised;

/// An actor type the registry can activate from its stored record.
pub trait VirtualActor: Actor<Context = Context<Self>> {
    /// Whether records of this kind are activated as this type.
    fn accepts(kind: ActorKind) -> bool;

    /// Builds the actor on its arbiter. Runs inside the actor's context.
    fn activate(activation: Activation, ctx: &mut Context<Self>) -> Self;
}

/// Everything an actor gets when it is activated.
#[derive(Debug)]
pub struct Activation {
    /// Its records from the master down, read at activation.
    pub lineage: Lineage,
    /// The check it runs before replying.
    pub guard: LineageGuard,
}

/// An actor's lineage (root first) and the index it is checked against.
#[derive(Clone)]
pub struct LineageGuard {
    chain: Arc<[Omni]>,
    runtime: Runtime,
}

impl std::fmt::Debug for LineageGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LineageGuard")
            .field("depth", &self.chain.len())
            .finish_non_exhaustive()
    }
}

impl LineageGuard {
    /// `Err` with the revoked ancestor if the actor or any ancestor is revoked. O(depth).
    pub fn check(&self) -> Result<(), CallError> {
        match self.runtime.revoked().first_revoked(&self.chain) {
            None => Ok(()),
            Some((by, at)) => Err(CallError::Revoked { by, at }),
        }
    }

    /// The omnis from the master down to this actor.
    pub fn chain(&self) -> &[Omni] {
        &self.chain
    }
}

/// Why a call to an actor failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum CallError {
    /// No actor of this type has this omni.
    #[error("no such actor")]
    NotFound,
    /// The actor or an ancestor is revoked.
    #[error("the actor's lineage is revoked")]
    Revoked {
        /// The revoked actor nearest the root.
        by: Omni,
        /// When it was revoked.
        at: Timestamp,
    },
    /// The actor stopped before answering (passivated or revoked); safe to retry.
    #[error("the actor stopped before answering")]
    Stopped,
    /// The actor is restarting after a crash, or quarantined; retry after `retry_after`.
    #[error("the actor is unavailable (restarting or quarantined)")]
    Unavailable {
        /// How long until activation is allowed again.
        retry_after: Duration,
        /// Whether the restart intensity was exceeded (quarantine) rather than a backoff.
        quarantined: bool,
    },
    /// The actor has as many requests in flight as its mailbox allows.
    #[error("the actor is busy")]
    Busy,
    /// The runtime is shutting down and activates nothing new.
    #[error("the runtime is shutting down")]
    ShuttingDown,
    /// The store could not be read.
    #[error(transparent)]
    Store(#[from] StoreError),
}

struct Live<A: VirtualActor> {
    omni: Omni,
    parent: Option<Omni>,
    addr: Addr<A>,
    guard: LineageGuard,
    registry: Weak<Inner<A>>,
    stop: Mutex<Option<oneshot::Sender<()>>>,
    crashed: AtomicBool,
    done: watch::Receiver<()>,
    last_used: AtomicU64,
    in_flight: AtomicUsize,
}

/// Resolves once an actor has stopped (its context was torn down).
#[derive(Debug, Clone)]
pub struct StopWatch(watch::Receiver<()>);

impl StopWatch {
    /// Waits until the actor has stopped.
    pub async fn stopped(mut self) {
        // The sender lives inside the actor's context; `changed` fails once it is dropped.
        while self.0.changed().await.is_ok() {}
    }
}

impl<A: VirtualActor> Live<A> {
    fn stop(&self) {
        if let Some(tx) = self.stop.lock().ok().and_then(|mut s| s.take()) {
            let _ = tx.send(());
        }
    }

    fn is_stopped(&self) -> bool {
        self.stop.lock().map(|s| s.is_none()).unwrap_or(true) || !self.addr.connected()
    }

    /// The actor's task ended although nobody told it to stop (a panic outside the handler
    /// body, e.g. in an answer future).
    fn crash_unexpected(&self) -> bool {
        self.stop.lock().map(|s| s.is_some()).unwrap_or(false)
    }
}

type Slot<A> = Arc<OnceCell<Arc<Live<A>>>>;

/// Active actors by omni plus, for each ancestor, its active descendants (for subtree stops).
struct Tree<A: VirtualActor> {
    live: HashMap<Omni, Arc<Live<A>>>,
    below: HashMap<Omni, HashSet<Omni>>,
}

impl<A: VirtualActor> Tree<A> {
    fn insert(&mut self, live: Arc<Live<A>>) {
        for ancestor in live.guard.chain.iter() {
            self.below.entry(*ancestor).or_default().insert(live.omni);
        }
        self.live.insert(live.omni, live);
    }

    fn remove(&mut self, omni: &Omni) -> Option<Arc<Live<A>>> {
        let live = self.live.remove(omni)?;
        for ancestor in live.guard.chain.iter() {
            if let Some(set) = self.below.get_mut(ancestor) {
                set.remove(omni);
                if set.is_empty() {
                    self.below.remove(ancestor);
                }
            }
        }
        Some(live)
    }
}

struct Inner<A: VirtualActor> {
    runtime: Runtime,
    slots: RwLock<HashMap<Omni, Slot<A>>>,
    tree: Mutex<Tree<A>>,
}

/// Active actors of type `A`; cheap to clone.
pub struct Registry<A: VirtualActor> {
    inner: Arc<Inner<A>>,
}

impl<A: VirtualActor> Clone for Registry<A> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
        }
    }
}

/// A typed handle to one active actor.
pub struct ActorHandle<A: VirtualActor> {
    live: Arc<Live<A>>,
}

impl<A: VirtualActor> Clone for ActorHandle<A> {
    fn clone(&self) -> Self {
        Self {
            live: self.live.clone(),
        }
    }
}

/// Counts one call against the actor's mailbox bound and the runtime's drain.
struct InFlight<'a> {
    actor: &'a AtomicUsize,
    runtime: &'a Runtime,
}

impl<'a> InFlight<'a> {
    fn enter(actor: &'a AtomicUsize, runtime: &'a Runtime) -> Result<Self, CallError> {
        let capacity = runtime.config().mailbox_capacity;
        if actor.fetch_add(1, Ordering::AcqRel) >= capacity {
            actor.fetch_sub(1, Ordering::AcqRel);
            return Err(CallError::Busy);
        }
        runtime.call_started();
        Ok(Self { actor, runtime })
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.actor.fetch_sub(1, Ordering::AcqRel);
        self.runtime.call_finished();
    }
}

impl<A: VirtualActor> ActorHandle<A> {
    /// The actor's omni.
    pub fn omni(&self) -> Omni {
        self.live.omni
    }

    /// Sends `msg` and waits for the answer.
    ///
    /// Fails at once with `Busy` when the actor already has `mailbox_capacity` calls in flight.
    /// The handler runs under `catch_unwind`; a panic answers `Unavailable` and the actor is
    /// restarted from the store after its backoff. The lineage is checked again after the
    /// actor answered and before the answer is handed out, so no answer produced after a
    /// revocation committed reaches the caller.
    pub async fn call<M>(&self, msg: M) -> Result<M::Result, CallError>
    where
        A: Handler<Supervised<M>>,
        M: Message + Send + 'static,
        M::Result: Send,
    {
        let live = &self.live;
        let runtime = &live.guard.runtime;
        let _in_flight = InFlight::enter(&live.in_flight, runtime)?;
        let now = runtime.clock().now();
        live.last_used.fetch_max(now.as_millis(), Ordering::AcqRel);
        live.guard.check()?;
        let (envelope, answer) = Supervised::new(msg);
        live.addr.do_send(envelope);
        match answer.await {
            Ok(Ok(value)) => {
                live.guard.check()?;
                Ok(value)
            }
            // The handler panicked, or the actor's task died without being told to stop.
            Ok(Err(_)) => Err(self.crashed()),
            Err(_) if live.crash_unexpected() => Err(self.crashed()),
            Err(_) => Err(CallError::Stopped),
        }
    }

    fn crashed(&self) -> CallError {
        if let Some(registry) = self.live.registry.upgrade() {
            registry.crashed(&self.live);
        }
        let runtime = &self.live.guard.runtime;
        match runtime
            .supervisor()
            .admit(&self.live.omni, runtime.clock().now())
        {
            Err(unavailable) => unavailable,
            Ok(()) => CallError::Stopped,
        }
    }
}

impl<A: VirtualActor> Registry<A> {
    /// A registry of actors of type `A` on `runtime`.
    pub fn new(runtime: &Runtime) -> Self {
        let inner = Arc::new(Inner {
            runtime: runtime.clone(),
            slots: RwLock::new(HashMap::new()),
            tree: Mutex::new(Tree {
                live: HashMap::new(),
                below: HashMap::new(),
            }),
        });
        let weak: Weak<Inner<A>> = Arc::downgrade(&inner);
        let weak: Weak<dyn ActiveSet> = weak;
        runtime.register_set(weak);
        Self { inner }
    }

    /// The handle of `omni`, activating it if needed (exactly once under concurrent callers).
    pub async fn handle(&self, omni: Omni) -> Result<ActorHandle<A>, CallError> {
        // A handle from a slot whose actor was stopped meanwhile is discarded and retried;
        // the second activation reads the store again, so a revoked actor fails there.
        for _ in 0..3 {
            let slot = self.slot(&omni);
            let result = slot.get_or_try_init(|| async { self.activate(omni) }).await;
            match result {
                Ok(live) if !live.is_stopped() => return Ok(ActorHandle { live: live.clone() }),
                Ok(_) => self.forget(&omni, &slot),
                Err(e) => {
                    self.forget(&omni, &slot);
                    return Err(e);
                }
            }
        }
        Err(CallError::Stopped)
    }

    /// Activates `omni` if needed and calls it; retried once if the actor stopped first.
    pub async fn call<M>(&self, omni: Omni, msg: M) -> Result<M::Result, CallError>
    where
        A: Handler<Supervised<M>>,
        M: Message + Clone + Send + 'static,
        M::Result: Send,
    {
        match self.handle(omni).await?.call(msg.clone()).await {
            Err(CallError::Stopped) => self.handle(omni).await?.call(msg).await,
            other => other,
        }
    }

    fn slot(&self, omni: &Omni) -> Slot<A> {
        if let Some(slot) = self
            .inner
            .slots
            .read()
            .ok()
            .and_then(|s| s.get(omni).cloned())
        {
            return slot;
        }
        let mut slots = self
            .inner
            .slots
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        slots.entry(*omni).or_default().clone()
    }

    fn forget(&self, omni: &Omni, slot: &Slot<A>) {
        let mut slots = self
            .inner
            .slots
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if slots.get(omni).is_some_and(|s| Arc::ptr_eq(s, slot)) {
            slots.remove(omni);
        }
    }

    fn activate(&self, omni: Omni) -> Result<Arc<Live<A>>, CallError> {
        let runtime = &self.inner.runtime;
        if runtime.is_closing() {
            return Err(CallError::ShuttingDown);
        }
        let lineage = runtime.lineage(&omni)?.ok_or(CallError::NotFound)?;
        if let Status::Revoked { by, at } = lineage.status() {
            return Err(CallError::Revoked { by, at });
        }
        if !A::accepts(lineage.actor().kind) {
            return Err(CallError::NotFound);
        }
        runtime.supervisor().admit(&omni, runtime.clock().now())?;
        let parent = lineage.actor().parent;
        let guard = LineageGuard {
            chain: lineage.omnis().into(),
            runtime: runtime.clone(),
        };
        let (stop_tx, stop_rx) = oneshot::channel::<()>();
        let (done_tx, done) = watch::channel(());
        let activation = Activation {
            lineage,
            guard: guard.clone(),
        };
        let addr = A::start_in_arbiter(runtime.arbiter_for(&omni), move |ctx| {
            // Stop on the runtime's signal (or when the runtime drops the actor's entry),
            // independently of what waits in the mailbox.
            ctx.spawn(wrap_future::<_, A>(stop_rx).map(|_, _, ctx: &mut Context<A>| ctx.stop()));
            // Dropped with the context: tells `StopWatch`es that the actor has stopped.
            ctx.spawn(wrap_future::<_, A>(async move {
                let _alive = done_tx;
                std::future::pending::<()>().await
            }));
            A::activate(activation, ctx)
        });
        let live = Arc::new(Live {
            omni,
            parent,
            addr,
            guard,
            registry: Arc::downgrade(&self.inner),
            stop: Mutex::new(Some(stop_tx)),
            crashed: AtomicBool::new(false),
            done,
            last_used: AtomicU64::new(runtime.clock().now().as_millis()),
            in_flight: AtomicUsize::new(0),
        });
        self.lock_tree().insert(live.clone());
        // Re-check after registering: a revocation that committed before we registered is in
        // the index now; one that commits later finds us in the tree and stops us.
        if let Err(e) = live.guard.check() {
            self.lock_tree().remove(&omni);
            live.stop();
            return Err(e);
        }
        Ok(live)
    }

    fn lock_tree(&self) -> std::sync::MutexGuard<'_, Tree<A>> {
        self.inner
            .tree
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Passivates one actor if it is active and has no request in flight.
    pub fn passivate(&self, omni: &Omni) -> bool {
        let mut tree = self.lock_tree();
        let idle = tree
            .live
            .get(omni)
            .is_some_and(|l| l.in_flight.load(Ordering::Acquire) == 0);
        let live = if idle { tree.remove(omni) } else { None };
        drop(tree);
        live.map(|live| self.inner.drop_live(&live)).is_some()
    }

    /// Passivates every actor unused for the idle timeout as of `now`; returns how many.
    pub fn passivate_idle(&self, now: Timestamp) -> usize {
        let timeout = self.inner.runtime.config().idle_timeout;
        let idle: Vec<Omni> = self
            .lock_tree()
            .live
            .values()
            .filter(|l| {
                let last = Timestamp::from_millis(l.last_used.load(Ordering::Acquire));
                now.since(last) >= timeout && l.in_flight.load(Ordering::Acquire) == 0
            })
            .map(|l| l.omni)
            .collect();
        idle.iter().filter(|omni| self.passivate(omni)).count()
    }

    /// Runs [`passivate_idle`](Self::passivate_idle) every `every` until the registry is dropped.
    pub fn spawn_idle_sweeper(&self, every: Duration) -> tokio::task::JoinHandle<()> {
        let weak = Arc::downgrade(&self.inner);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            loop {
                tick.tick().await;
                let Some(inner) = weak.upgrade() else { break };
                let registry = Registry { inner };
                let now = registry.inner.runtime.clock().now();
                let n = registry.passivate_idle(now);
                if n > 0 {
                    tracing::debug!(passivated = n, "idle actors passivated");
                }
            }
        })
    }

    /// A watch that resolves when the active actor `omni` has stopped (`None` if not active).
    pub fn stop_watch(&self, omni: &Omni) -> Option<StopWatch> {
        self.lock_tree()
            .live
            .get(omni)
            .map(|l| StopWatch(l.done.clone()))
    }

    /// Whether `omni` is active in this registry.
    pub fn is_active(&self, omni: &Omni) -> bool {
        self.lock_tree().live.contains_key(omni)
    }

    /// How many actors of this type are active.
    pub fn active(&self) -> usize {
        self.lock_tree().live.len()
    }
}

impl<A: VirtualActor> Inner<A> {
    /// Drops a crashed actor (once) and tells the supervisor.
    fn crashed(&self, live: &Live<A>) {
        if live.crashed.swap(true, Ordering::AcqRel) {
            return;
        }
        {
            let mut tree = self
                .tree
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            if tree
                .live
                .get(&live.omni)
                .is_some_and(|l| std::ptr::eq(Arc::as_ptr(l), live))
            {
                tree.remove(&live.omni);
            }
        }
        self.drop_live(live);
        let now = self.runtime.clock().now();
        self.runtime
            .supervisor()
            .crashed(live.omni, live.parent, now);
    }

    fn drop_live(&self, live: &Live<A>) {
        let mut slots = self
            .slots
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let same = slots
            .get(&live.omni)
            .and_then(|slot| slot.get())
            .is_some_and(|l| std::ptr::eq(Arc::as_ptr(l), live));
        if same {
            slots.remove(&live.omni);
        }
        drop(slots);
        live.stop();
    }

    fn take_all(&self, omnis: Vec<Omni>) -> Vec<Arc<Live<A>>> {
        let mut tree = self
            .tree
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        omnis.iter().filter_map(|o| tree.remove(o)).collect()
    }
}

impl<A: VirtualActor> ActiveSet for Inner<A> {
    fn stop_subtree(&self, root: &Omni) -> usize {
        let below: Vec<Omni> = {
            let tree = self
                .tree
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            tree.below
                .get(root)
                .map(|set| set.iter().copied().collect())
                .unwrap_or_default()
        };
        let victims = self.take_all(below);
        for live in &victims {
            // Drop the slot whatever it holds: a later activation reads the store and fails.
            if let Ok(mut slots) = self.slots.write() {
                slots.remove(&live.omni);
            }
            live.stop();
        }
        victims.len()
    }

    fn max_depth(&self) -> usize {
        let tree = self
            .tree
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        tree.live
            .values()
            .map(|l| l.guard.chain.len())
            .max()
            .unwrap_or(0)
    }

    fn stop_depth(&self, depth: usize) -> Vec<StopWatch> {
        let at_depth: Vec<Omni> = {
            let tree = self
                .tree
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            tree.live
                .values()
                .filter(|l| l.guard.chain.len() == depth)
                .map(|l| l.omni)
                .collect()
        };
        let victims = self.take_all(at_depth);
        victims
            .iter()
            .map(|live| {
                self.drop_live(live);
                StopWatch(live.done.clone())
            })
            .collect()
    }

    fn active(&self) -> usize {
        self.tree.lock().map(|t| t.live.len()).unwrap_or(0)
    }
}
