//! Virtual activation: actors are data until addressed.
//!
//! A [`Registry`] maps omnis to active actors of one type. The first message to an omni reads
//! its lineage from the store, spawns the actor with `start_in_arbiter` on the arbiter chosen
//! by the omni, registers it, and re-checks the revoked index. Concurrent first requests share
//! one activation (a per-omni `OnceCell`, replaced by the running actor once registered). Idle actors are passivated by
//! [`Registry::passivate_idle`]; revoked subtrees are stopped by the runtime.
//!
//! Callers hold an [`ActorHandle`], never a raw `Addr`. Actor types declare
//! [`supervised!`](crate::supervised) so every call runs under supervision.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::Ordering;
use std::sync::{Arc, RwLock, Weak};
use std::time::Duration;

use actix::{Actor, Addr, Context, Handler, Message};
use tokio::sync::OnceCell;

use crate::clock::Timestamp;
use crate::lifecycle::Lifecycle;
use crate::lifecycle::StopWatch;
use crate::omni::Omni;
use crate::runtime::{ActiveSet, Runtime};
use crate::store::{ActorKind, Lineage, Status, StoreError};
use crate::supervision::Supervised;

/// An actor type the registry can activate from its stored record.
pub trait VirtualActor: Actor<Context = Context<Self>> {
    /// What every actor of this type is built with besides its record (e.g. the signer's
    /// handle); given once to [`Registry::new`].
    type Deps: Clone + Send + Sync + 'static;

    /// Whether records of this kind are activated as this type.
    fn accepts(kind: ActorKind) -> bool;

    /// Builds the actor on its arbiter. Runs inside the actor's context.
    fn activate(activation: Activation, deps: Self::Deps, ctx: &mut Context<Self>) -> Self;
}

/// Everything an actor gets when it is activated.
pub struct Activation {
    /// Its records from the master down, read at activation.
    pub lineage: Lineage,
    /// The runtime's cache generation read before the lineage ([`Runtime::flush_caches`]).
    pub generation: u64,
    /// The check it runs before replying.
    pub guard: LineageGuard,
    /// The store (the tree; a higher layer reaches its own tables through its own types).
    pub store: Arc<crate::store::Store>,
    /// The runtime's clock.
    pub clock: Arc<dyn crate::Clock>,
    /// The actor's own entry of the runtime's scope index (only its owner may change it).
    pub scopes: ScopeSlot,
    /// Where it publishes what readers may see without a message ([`Registry::view`]).
    pub view: ViewSlot,
}

/// A value an actor publishes for readers that need not wait for its mailbox (the session
/// check of every request): immutable, replaced by the actor — and only by it — after each
/// change of what it shows and before that change is answered, so a reader that starts after
/// the answer sees the change. Read through [`Registry::view`], which offers it only while the
/// actor is active.
/// It lives in the actor's lifecycle cell, so it costs no allocation of its own.
#[derive(Clone)]
pub struct ViewSlot(Arc<Lifecycle>);

impl std::fmt::Debug for ViewSlot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ViewSlot")
            .field("published", &self.0.view.lock().is_ok_and(|v| v.is_some()))
            .finish()
    }
}

impl ViewSlot {
    /// Replaces the published value.
    pub fn publish<T: std::any::Any + Send + Sync>(&self, view: Arc<T>) {
        // A poisoned lock still holds a whole value (a plain assignment); replace it.
        *self
            .0
            .view
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(view);
    }
}

/// The one entry of the runtime's scope index that an actor owns: handed to it at activation,
/// so the stored scopes and the index change in the same mailbox turn of the same actor.
pub struct ScopeSlot {
    omni: Omni,
    runtime: Runtime,
}

impl std::fmt::Debug for ScopeSlot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ScopeSlot")
            .field("omni", &self.omni.short())
            .finish_non_exhaustive()
    }
}

impl ScopeSlot {
    /// Records the scopes just committed for the owning actor.
    pub fn set(&self, scopes: Vec<String>) {
        self.runtime.scopes().set(self.omni, scopes);
    }
}

impl std::fmt::Debug for Activation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Activation")
            .field("lineage", &self.lineage)
            .field("guard", &self.guard)
            .finish_non_exhaustive()
    }
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
    pub(crate) fn new(chain: Arc<[Omni]>, runtime: Runtime) -> Self {
        Self { chain, runtime }
    }

    /// `Err` with the revoked ancestor if the actor or any ancestor is revoked, else a
    /// [`LiveProof`] (the only way to obtain one). O(depth).
    pub fn check(&self) -> Result<LiveProof, CallError> {
        match self.runtime.revoked().first_revoked(&self.chain) {
            None => Ok(LiveProof {
                omni: self.omni(),
                master: self.chain[0],
            }),
            Some((by, at)) => Err(CallError::Revoked { by, at }),
        }
    }

    /// The omnis from the master down to this actor.
    pub fn chain(&self) -> &[Omni] {
        &self.chain
    }

    /// The guarded actor (the last of its chain).
    pub fn omni(&self) -> Omni {
        *self.omni_ref()
    }

    fn omni_ref(&self) -> &Omni {
        &self.chain[self.chain.len() - 1]
    }

    /// Reads the actor's lineage from the store again (one snapshot), recording what it shows
    /// in the revoked and scope indexes: what a node does when another node changed the tree
    /// (the master's change epoch moved past what this node loaded).
    pub fn reload(&self) -> Result<crate::store::Lineage, CallError> {
        self.runtime
            .lineage(&self.omni())?
            .ok_or(CallError::NotFound)
    }

    /// Whether the store is shared by several nodes (change epochs are in use).
    pub fn shared_store(&self) -> bool {
        self.runtime.store().is_shared()
    }

    /// The runtime's cache generation ([`Runtime::flush_caches`]).
    pub fn cache_generation(&self) -> u64 {
        self.runtime.cache_generation()
    }

    /// The actor's effective scopes now, given its own stored scopes (`own`, from its record):
    /// `None` for a master (every scope), else the intersection of the scopes stored along the
    /// lineage. Reads the lineage from the store only if the index lacks an ancestor.
    pub fn effective_scopes<'a>(
        &self,
        own: impl IntoIterator<Item = &'a str> + Clone,
    ) -> Result<Option<std::collections::BTreeSet<String>>, CallError> {
        match self.runtime.scopes().effective(&self.chain, own.clone()) {
            Ok(scopes) => Ok(scopes),
            Err(missing) => {
                // Reading the actor's lineage fills every ancestor's entry.
                let last = self.chain.last().copied().unwrap_or(missing);
                self.runtime.lineage(&last)?;
                self.runtime
                    .scopes()
                    .effective(&self.chain, own)
                    .map_err(|_| CallError::NotFound)
            }
        }
    }
}

/// Proof that one actor's lineage was found live by [`LineageGuard::check`]. It cannot be built
/// anywhere else, so an API that takes one (the signer's) cannot be reached without the check;
/// and it names its actor, so a proof for one actor cannot sign for another.
#[derive(Debug)]
pub struct LiveProof {
    omni: Omni,
    master: Omni,
}

impl LiveProof {
    /// The actor whose lineage was checked.
    pub fn omni(&self) -> Omni {
        self.omni
    }

    /// Its master (the root of the checked lineage).
    pub fn master(&self) -> Omni {
        self.master
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
    addr: Addr<A>,
    guard: LineageGuard,
    registry: Weak<Inner<A>>,
    lifecycle: Arc<Lifecycle>,
}

impl<A: VirtualActor> Drop for Live<A> {
    fn drop(&mut self) {
        // Nobody can reach the actor any more.
        self.lifecycle.request_stop();
    }
}

impl<A: VirtualActor> Live<A> {
    /// The actor's omni (the last of its chain).
    fn omni(&self) -> Omni {
        self.guard.omni()
    }

    /// Its parent's omni, `None` for a master.
    fn parent(&self) -> Option<Omni> {
        let chain = self.guard.chain();
        chain.len().checked_sub(2).map(|i| chain[i])
    }

    fn stop(&self) {
        self.lifecycle.request_stop();
    }

    fn is_stopped(&self) -> bool {
        self.lifecycle.stop_requested() || !self.addr.connected()
    }

    /// The actor's task ended although nobody told it to stop (a panic outside the handler
    /// body, e.g. in an answer future).
    fn crash_unexpected(&self) -> bool {
        !self.lifecycle.stop_requested()
    }
}

/// A registry entry: an activation in progress (shared by concurrent first callers), or a
/// running actor. Entries are kept in a set keyed by the omni they hold (`Borrow<Omni>`), so the
/// table's bucket is one tagged pointer, not the omni beside it (32 bytes less per active
/// actor's bucket; docs/BENCHMARKS.md).
enum Slot<A: VirtualActor> {
    Activating(Arc<Pending<A>>),
    Active(Arc<Live<A>>),
}

/// An activation in progress: whoever comes first activates, the others wait on the cell.
struct Pending<A: VirtualActor> {
    omni: Omni,
    cell: OnceCell<Arc<Live<A>>>,
}

impl<A: VirtualActor> std::borrow::Borrow<Omni> for Slot<A> {
    fn borrow(&self) -> &Omni {
        match self {
            Slot::Activating(pending) => &pending.omni,
            Slot::Active(live) => live.guard.omni_ref(),
        }
    }
}

impl<A: VirtualActor> PartialEq for Slot<A> {
    fn eq(&self, other: &Self) -> bool {
        std::borrow::Borrow::<Omni>::borrow(self) == std::borrow::Borrow::<Omni>::borrow(other)
    }
}

impl<A: VirtualActor> Eq for Slot<A> {}

impl<A: VirtualActor> std::hash::Hash for Slot<A> {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        std::borrow::Borrow::<Omni>::borrow(self).hash(state);
    }
}

/// What a lookup found.
enum Found<A: VirtualActor> {
    Activating(Arc<Pending<A>>),
    Active(Arc<Live<A>>),
}

/// An active actor in its ancestors' sets, compared by identity: a pointer instead of a
/// 32-byte omni per ancestor (every active actor is in as many sets as it has ancestors).
struct Member<A: VirtualActor>(Arc<Live<A>>);

impl<A: VirtualActor> PartialEq for Member<A> {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

impl<A: VirtualActor> Eq for Member<A> {}

impl<A: VirtualActor> std::hash::Hash for Member<A> {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        std::ptr::hash(Arc::as_ptr(&self.0), state);
    }
}

/// Entries by omni, plus, for each ancestor, its active descendants (for subtree stops).
/// One lock guards both so that registration and a subtree scan cannot miss each other.
struct State<A: VirtualActor> {
    slots: HashSet<Slot<A>>,
    below: HashMap<Omni, HashSet<Member<A>>>,
    active: usize,
}

impl<A: VirtualActor> State<A> {
    fn live(&self, omni: &Omni) -> Option<&Arc<Live<A>>> {
        match self.slots.get(omni) {
            Some(Slot::Active(live)) => Some(live),
            _ => None,
        }
    }

    fn lives(&self) -> impl Iterator<Item = &Arc<Live<A>>> {
        self.slots.iter().filter_map(|slot| match slot {
            Slot::Active(live) => Some(live),
            Slot::Activating(_) => None,
        })
    }

    /// The strict ancestors of an actor (its chain without itself).
    fn ancestors(live: &Live<A>) -> &[Omni] {
        let chain = live.guard.chain();
        &chain[..chain.len().saturating_sub(1)]
    }

    fn register(&mut self, live: Arc<Live<A>>) {
        for ancestor in Self::ancestors(&live) {
            self.below
                .entry(*ancestor)
                .or_default()
                .insert(Member(live.clone()));
        }
        match self.slots.replace(Slot::Active(live)) {
            Some(Slot::Active(old)) => self.forget_member(&old),
            _ => self.active += 1,
        }
    }

    /// Takes an actor out of its ancestors' sets.
    fn forget_member(&mut self, live: &Arc<Live<A>>) {
        let member = Member(live.clone());
        for ancestor in Self::ancestors(live) {
            if let Some(set) = self.below.get_mut(ancestor) {
                set.remove(&member);
                if set.is_empty() {
                    self.below.remove(ancestor);
                } else {
                    shrink_sparse(set.len(), set.capacity(), |n| set.shrink_to(n));
                }
            }
        }
        shrink_sparse(self.below.len(), self.below.capacity(), |n| {
            self.below.shrink_to(n);
        });
    }

    /// Removes `omni` if it is active (and, with `only`, if it is that very actor).
    fn remove(&mut self, omni: &Omni, only: Option<&Live<A>>) -> Option<Arc<Live<A>>> {
        let same = |live: &Arc<Live<A>>| only.is_none_or(|o| std::ptr::eq(Arc::as_ptr(live), o));
        if !self.live(omni).is_some_and(same) {
            return None;
        }
        let Some(Slot::Active(live)) = self.slots.take(omni) else {
            return None;
        };
        shrink_sparse(self.slots.len(), self.slots.capacity(), |n| {
            self.slots.shrink_to(n);
        });
        self.active -= 1;
        self.forget_member(&live);
        Some(live)
    }
}

/// A table that fell to a quarter of its capacity gives back half of it: after a burst of
/// activations is passivated, idle actors cost their store rows only, not the table room the
/// burst needed (each shrink rehashes what is left, at most once per halving: O(1) amortized).
fn shrink_sparse(len: usize, capacity: usize, shrink_to: impl FnOnce(usize)) {
    if capacity > 64 && len < capacity / 4 {
        shrink_to(len * 2);
    }
}

struct Inner<A: VirtualActor> {
    runtime: Runtime,
    deps: A::Deps,
    state: RwLock<State<A>>,
}

impl<A: VirtualActor> Inner<A> {
    fn read(&self) -> std::sync::RwLockReadGuard<'_, State<A>> {
        self.state
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, State<A>> {
        self.state
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Removes and stops every actor of `omnis` that is active.
    fn stop_all_of(&self, omnis: impl IntoIterator<Item = Omni>) -> Vec<Arc<Live<A>>> {
        let victims: Vec<_> = {
            let mut state = self.write();
            omnis
                .into_iter()
                .filter_map(|o| state.remove(&o, None))
                .collect()
        };
        for live in &victims {
            live.stop();
        }
        victims
    }

    /// Drops a crashed actor (once) and tells the supervisor.
    fn crashed(&self, live: &Live<A>) {
        if live.lifecycle.crashed.swap(true, Ordering::AcqRel) {
            return;
        }
        self.write().remove(&live.omni(), Some(live));
        live.stop();
        let now = self.runtime.clock().now();
        self.runtime
            .supervisor()
            .crashed(live.omni(), live.parent(), now);
    }
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

/// Counts one call against the actor's mailbox bound and the runtime's drain, from its
/// admission until the actor has finished handling it (the guard travels in the envelope), so
/// an actor is never passivated with a message queued or a turn in progress, even when its
/// caller has gone.
pub(crate) struct InFlight {
    actor: Arc<Lifecycle>,
    runtime: Runtime,
}

impl InFlight {
    fn enter(actor: &Arc<Lifecycle>, runtime: &Runtime) -> Result<Self, CallError> {
        let capacity = runtime.config().mailbox_capacity;
        if actor.in_flight.fetch_add(1, Ordering::AcqRel) as usize >= capacity {
            actor.in_flight.fetch_sub(1, Ordering::AcqRel);
            return Err(CallError::Busy);
        }
        runtime.call_started();
        Ok(Self {
            actor: actor.clone(),
            runtime: runtime.clone(),
        })
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.actor.in_flight.fetch_sub(1, Ordering::AcqRel);
        self.runtime.call_finished();
    }
}

impl<A: VirtualActor> ActorHandle<A> {
    /// The actor's omni.
    pub fn omni(&self) -> Omni {
        self.live.omni()
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
        let in_flight = InFlight::enter(&live.lifecycle, runtime)?;
        live.lifecycle.touch(runtime.clock().now().as_millis());
        live.guard.check()?;
        let (envelope, answer) = Supervised::new(msg, in_flight);
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
            .admit(&self.live.omni(), runtime.clock().now())
        {
            Err(unavailable) => unavailable,
            Ok(()) => CallError::Stopped,
        }
    }
}

impl<A: VirtualActor> Registry<A> {
    /// A registry of actors of type `A` on `runtime`; every activation gets a clone of `deps`.
    pub fn new(runtime: &Runtime, deps: A::Deps) -> Self {
        let inner = Arc::new(Inner {
            runtime: runtime.clone(),
            deps,
            state: RwLock::new(State {
                slots: HashSet::new(),
                below: HashMap::new(),
                active: 0,
            }),
        });
        let weak: Weak<Inner<A>> = Arc::downgrade(&inner);
        let weak: Weak<dyn ActiveSet> = weak;
        runtime.register_set(weak);
        Self { inner }
    }

    /// The handle of `omni`, activating it if needed (exactly once under concurrent callers).
    pub async fn handle(&self, omni: Omni) -> Result<ActorHandle<A>, CallError> {
        // An actor found stopped (passivated, revoked or crashed meanwhile) is dropped and
        // looked up again; the next activation reads the store, so a revoked actor fails there.
        for _ in 0..3 {
            let pending = match self.find(&omni) {
                Found::Active(live) if !live.is_stopped() => return Ok(ActorHandle { live }),
                Found::Active(live) => {
                    self.inner.write().remove(&omni, Some(&live));
                    continue;
                }
                Found::Activating(pending) => pending,
            };
            match pending
                .cell
                .get_or_try_init(|| async { self.activate(omni) })
                .await
            {
                Ok(live) if !live.is_stopped() => return Ok(ActorHandle { live: live.clone() }),
                Ok(live) => {
                    self.inner.write().remove(&omni, Some(live));
                }
                Err(e) => {
                    self.forget_activation(&pending);
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

    fn find(&self, omni: &Omni) -> Found<A> {
        match self.inner.read().slots.get(omni) {
            Some(Slot::Active(live)) => return Found::Active(live.clone()),
            Some(Slot::Activating(pending)) => return Found::Activating(pending.clone()),
            None => {}
        }
        let mut state = self.inner.write();
        match state.slots.get(omni) {
            Some(Slot::Active(live)) => Found::Active(live.clone()),
            Some(Slot::Activating(pending)) => Found::Activating(pending.clone()),
            None => {
                let pending = Arc::new(Pending {
                    omni: *omni,
                    cell: OnceCell::new(),
                });
                state.slots.insert(Slot::Activating(pending.clone()));
                Found::Activating(pending)
            }
        }
    }

    /// What the active actor `omni` published ([`ViewSlot`]), without a message and without
    /// activating it: `None` when it is not active (or stopping, or crashed) or has published
    /// nothing of type `T` yet — then ask it. Counts as a use (it keeps the actor from being
    /// passivated as idle). The caller still checks the lineage: a view says nothing about
    /// revocations.
    pub fn view<T: std::any::Any + Send + Sync>(&self, omni: &Omni) -> Option<Arc<T>> {
        let live = match self.inner.read().slots.get(omni) {
            Some(Slot::Active(live)) => live.clone(),
            _ => return None,
        };
        if live.is_stopped() || live.lifecycle.crashed.load(Ordering::Acquire) {
            return None;
        }
        live.lifecycle
            .touch(self.inner.runtime.clock().now().as_millis());
        live.lifecycle.published::<T>()
    }

    fn forget_activation(&self, pending: &Arc<Pending<A>>) {
        let mut state = self.inner.write();
        if matches!(state.slots.get(&pending.omni), Some(Slot::Activating(p)) if Arc::ptr_eq(p, pending))
        {
            state.slots.remove(&pending.omni);
        }
    }

    fn activate(&self, omni: Omni) -> Result<Arc<Live<A>>, CallError> {
        let runtime = &self.inner.runtime;
        if runtime.is_closing() {
            return Err(CallError::ShuttingDown);
        }
        let generation = runtime.cache_generation();
        let lineage = runtime.lineage(&omni)?.ok_or(CallError::NotFound)?;
        if let Status::Revoked { by, at } = lineage.status() {
            return Err(CallError::Revoked { by, at });
        }
        if !A::accepts(lineage.actor().kind) {
            return Err(CallError::NotFound);
        }
        runtime.supervisor().admit(&omni, runtime.clock().now())?;
        let guard = LineageGuard {
            chain: lineage.omnis().into(),
            runtime: runtime.clone(),
        };
        let lifecycle = Arc::new(Lifecycle::new(runtime.clock().now().as_millis()));
        let lifeline = lifecycle.clone();
        let activation = Activation {
            view: ViewSlot(lifecycle.clone()),
            lineage,
            generation,
            guard: guard.clone(),
            store: runtime.store().clone(),
            clock: runtime.clock().clone(),
            scopes: ScopeSlot {
                omni,
                runtime: runtime.clone(),
            },
        };
        let deps = self.inner.deps.clone();
        let addr = A::start_in_arbiter(runtime.arbiter_for(&omni), move |ctx| {
            // Stops the actor on the runtime's request, independently of its mailbox.
            lifeline.attach(ctx);
            A::activate(activation, deps, ctx)
        });
        let live = Arc::new(Live {
            addr,
            guard,
            registry: Arc::downgrade(&self.inner),
            lifecycle,
        });
        self.inner.write().register(live.clone());
        // Re-check after registering: a revocation that committed before we registered is in
        // the index now; one that commits later finds us registered and stops us.
        if let Err(e) = live.guard.check() {
            self.inner.write().remove(&omni, Some(&live));
            live.stop();
            return Err(e);
        }
        Ok(live)
    }

    /// Passivates one actor if it is active and has no request in flight.
    pub fn passivate(&self, omni: &Omni) -> bool {
        let removed = {
            let mut state = self.inner.write();
            let idle = state
                .live(omni)
                .is_some_and(|l| l.lifecycle.in_flight.load(Ordering::Acquire) == 0);
            if idle { state.remove(omni, None) } else { None }
        };
        removed.map(|live| live.stop()).is_some()
    }

    /// Passivates every actor unused for the idle timeout as of `now`; returns how many.
    pub fn passivate_idle(&self, now: Timestamp) -> usize {
        let timeout = self.inner.runtime.config().idle_timeout;
        let idle: Vec<Omni> = self
            .inner
            .read()
            .lives()
            .filter(|l| {
                let cell = &l.lifecycle;
                let last = Timestamp::from_millis(cell.last_used.load(Ordering::Acquire));
                now.since(last) >= timeout && cell.in_flight.load(Ordering::Acquire) == 0
            })
            .map(|l| l.omni())
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
        self.inner
            .read()
            .live(omni)
            .map(|l| StopWatch(l.lifecycle.clone()))
    }

    /// Whether `omni` is active in this registry.
    pub fn is_active(&self, omni: &Omni) -> bool {
        self.inner.read().live(omni).is_some()
    }

    /// How many actors of this type are active.
    pub fn active(&self) -> usize {
        self.inner.read().active
    }

    /// How many entries the registry's table has room for without growing: it gives room back
    /// when it falls to a quarter, so a passivated burst leaves no table behind.
    pub fn capacity(&self) -> usize {
        self.inner.read().slots.capacity()
    }
}

impl<A: VirtualActor> ActiveSet for Inner<A> {
    fn stop_subtree(&self, root: &Omni) -> usize {
        let targets: Vec<Omni> = {
            let state = self.read();
            let below = state
                .below
                .get(root)
                .into_iter()
                .flatten()
                .map(|m| m.0.omni());
            state
                .live(root)
                .map(|l| l.omni())
                .into_iter()
                .chain(below)
                .collect()
        };
        self.stop_all_of(targets).len()
    }

    fn max_depth(&self) -> usize {
        self.read()
            .lives()
            .map(|l| l.guard.chain().len())
            .max()
            .unwrap_or(0)
    }

    fn stop_depth(&self, depth: usize) -> Vec<StopWatch> {
        let at_depth: Vec<Omni> = self
            .read()
            .lives()
            .filter(|l| l.guard.chain().len() == depth)
            .map(|l| l.omni())
            .collect();
        self.stop_all_of(at_depth)
            .iter()
            .map(|live| StopWatch(live.lifecycle.clone()))
            .collect()
    }

    fn active(&self) -> usize {
        self.read().active
    }
}
