//! What master and agent actors share: the state each owns and the handlers of every message
//! that reads or changes it (generated for each actor type by [`principal_handlers!`]).
//!
//! **State** ([`PrincipalCore`]): the actor's record (omni, path, stored scopes), its entry of
//! the runtime's scope index (held only while it has descendants), and its device bindings.
//! **Reads**: [`CheckSession`] (binding live and of this key, lineage live; answers the
//! effective scopes, so a signed request needs one mailbox round trip) and [`Describe`].
//! **Changes**: [`CreateChild`], [`SetScopes`],
//! [`IssueLinkCode`], [`BindDevice`], [`UseBinding`] (a session refresh), [`DeleteBinding`],
//! and [`RecordAction`] (the audit row of a signature or token it obtained; it changes nothing
//! of the actor, so the gateway runs it on the published view while the actor is active:
//! [`record_action`]).
//!
//! Every change is submitted to the store's writer inside the handler, so it runs even if the
//! caller goes away. A change that alters the actor's memory ([`SetScopes`], [`BindDevice`],
//! [`UseBinding`], [`DeleteBinding`]) answers with an atomic future: the actor handles no other message until
//! the commit has returned and its memory is updated, and this does not depend on the caller
//! still waiting (the runtime counts the call in flight until the turn ends, so the actor is not
//! passivated in between). Memory and store cannot drift apart.
//!
//! The bindings are loaded at activation, as much of each as the session check needs (its id,
//! whether it is live, the SHA-256 of its key's thumbprint); [`Describe`] reads the rest from the
//! ledger. An unknown binding id triggers one reload (binding ids only grow, so a miss can only
//! mean "newer", e.g. a login's new binding).

mod error;
mod messages;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use actix::fut::{ActorFutureExt, wrap_future};
use actix::{Actor, AtomicResponse, Context};
use agentkeys_runtime::store::{ActorKind, ActorRecord, CreateActor};
use agentkeys_runtime::{
    Activation, CallError, Clock, LineageGuard, Runtime, ScopeSlot, Timestamp, ViewSlot,
};

pub use error::PrincipalError;
pub use messages::{
    AddDevice, Authorize, BindDevice, BoundDevice, CheckSession, ChildCreated, CreateChild,
    DeleteBinding, Describe, IssueLinkCode, NewDevice, PrincipalView, RecordAction, SessionCheck,
    SessionError, SetScopes, UseBinding,
};

use crate::crypto::omni::{child_omni, validate_label};
use crate::ledger::{
    self, BindingInUse, CreateAndBind, DeleteDevice, DeviceBinding, Ledger, NewActor,
    RedeemLinkCode, Redemption, RefreshSession,
};
use crate::signer::SignerHandle;

/// What every principal of a registry shares besides its record: one allocation that each
/// active actor points to, rather than a copy of each handle in every actor (docs/BENCHMARKS.md,
/// memory per active actor).
pub struct PrincipalDeps {
    /// Derives a new child's wallet (public data only).
    signer: SignerHandle,
    /// Where bindings, link codes and audit rows are written.
    ledger: Ledger,
    /// The runtime's clock.
    clock: Arc<dyn Clock>,
}

impl std::fmt::Debug for PrincipalDeps {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PrincipalDeps")
            .field("signer", &self.signer)
            .field("ledger", &self.ledger)
            .finish_non_exhaustive()
    }
}

impl PrincipalDeps {
    /// The dependencies of the principals of `runtime` (whose clock they read).
    pub fn new(runtime: &Runtime, signer: SignerHandle, ledger: Ledger) -> Arc<Self> {
        Arc::new(Self {
            signer,
            ledger,
            clock: runtime.clock().clone(),
        })
    }
}

/// A change submitted to the store; resolves after its commit.
pub type Change<T> = Pin<Box<dyn Future<Output = Result<T, PrincipalError>>>>;

/// The state both actor types hold.
pub struct PrincipalCore {
    /// What the actor shows: replaced, never changed in place, and published to `slot` after
    /// every change and before that change is answered.
    view: Arc<SessionView>,
    slot: ViewSlot,
    scopes: ScopeSlot,
    deps: Arc<PrincipalDeps>,
}

impl std::fmt::Debug for PrincipalCore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PrincipalCore")
            .field("omni", &self.view.omni().short())
            .field("bindings", &self.view.bindings.len())
            .finish_non_exhaustive()
    }
}

/// The part of a principal's state that the session check of every request reads: the record,
/// the device bindings (a cache of the ledger) and the policies on the lineage. The actor
/// publishes it (`Registry::view`), so a request whose binding and policies are in it is checked
/// without a message to the actor — the same check, on the same state, that
/// [`CheckSession`] runs in the mailbox; anything the view lacks (a binding added by a login,
/// policies that changed since) goes to the actor, which loads it and publishes again.
#[derive(Debug, Clone)]
pub struct SessionView {
    record: OwnRecord,
    bindings: Bindings,
    effective: Option<Arc<crate::policy::Effective>>,
    guard: LineageGuard,
    /// The master's change epoch of the store read this view reflects (0 on redb).
    epoch: u64,
    /// The runtime's cache generation when it was loaded.
    generation: u64,
}

/// The actor's [`ActorRecord`] without the two omnis its lineage already holds (its own and its
/// parent's), its strings boxed: 80 bytes instead of 168, so the published view's allocation is
/// 160 bytes, not 256 (docs/BENCHMARKS.md, memory per active agent).
#[derive(Debug, Clone)]
struct OwnRecord {
    label: Box<str>,
    path: Box<str>,
    kind: ActorKind,
    status: agentkeys_runtime::store::StoredStatus,
    created_at: Timestamp,
    scopes: PackedScopes,
}

/// An actor's stored scopes in one allocation: each scope's length (4 bytes, little-endian),
/// then its bytes — 28 bytes for two scopes, where a list of strings took three allocations
/// (80 bytes; docs/BENCHMARKS.md, memory per active agent).
#[derive(Clone, Default)]
struct PackedScopes(Box<[u8]>);

impl PackedScopes {
    fn iter(&self) -> PackedIter<'_> {
        PackedIter(&self.0)
    }
}

impl From<Vec<String>> for PackedScopes {
    fn from(scopes: Vec<String>) -> Self {
        let mut out = Vec::with_capacity(scopes.iter().map(|s| 4 + s.len()).sum());
        for scope in &scopes {
            // A scope longer than 4 GiB cannot be stored; leaving it out only narrows.
            if let Ok(len) = u32::try_from(scope.len()) {
                out.extend_from_slice(&len.to_le_bytes());
                out.extend_from_slice(scope.as_bytes());
            }
        }
        Self(out.into_boxed_slice())
    }
}

impl std::fmt::Debug for PackedScopes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

/// The scopes of a [`PackedScopes`], in order.
#[derive(Clone)]
struct PackedIter<'a>(&'a [u8]);

impl<'a> Iterator for PackedIter<'a> {
    type Item = &'a str;

    fn next(&mut self) -> Option<&'a str> {
        let (len, rest) = self.0.split_first_chunk::<4>()?;
        let (scope, rest) = rest.split_at_checked(u32::from_le_bytes(*len) as usize)?;
        self.0 = rest;
        // Packed from strings, so always UTF-8.
        std::str::from_utf8(scope).ok()
    }
}

impl From<ActorRecord> for OwnRecord {
    fn from(r: ActorRecord) -> Self {
        Self {
            label: r.label.into_boxed_str(),
            path: r.path.into_boxed_str(),
            kind: r.kind,
            status: r.status,
            created_at: r.created_at,
            scopes: PackedScopes::from(r.scopes),
        }
    }
}

impl SessionView {
    /// The actor (the last of its lineage).
    fn omni(&self) -> agentkeys_runtime::Omni {
        self.guard.omni()
    }

    /// The whole record, its omnis taken from the lineage.
    fn record(&self) -> ActorRecord {
        let chain = self.guard.chain();
        let r = &self.record;
        ActorRecord {
            omni: self.omni(),
            parent: chain.len().checked_sub(2).map(|i| chain[i]),
            label: r.label.to_string(),
            path: r.path.to_string(),
            kind: r.kind,
            status: r.status,
            created_at: r.created_at,
            scopes: r.scopes.iter().map(str::to_owned).collect(),
        }
    }

    /// [`RecordAction`] for this actor: the lineage checked, the row (in the master's chain,
    /// with the spend checked and counted) submitted now, and the rest — its commit, then the
    /// lineage again — for the caller to await. It reads only the lineage guard, which the
    /// view shares with the actor, and changes nothing of the actor: the actor runs it in its
    /// turn, and the gateway runs it on the published view without the mailbox hop
    /// (docs/architecture.md).
    pub fn record_action(&self, store: &Ledger, at: Timestamp, msg: RecordAction) -> Detached<()> {
        if let Err(e) = self.guard.check() {
            return Detached(Box::pin(async move { Err(e.into()) }));
        }
        let mut entry = ledger::AuditEntry::done(
            self.guard.chain()[0],
            msg.origin,
            msg.op,
            self.omni(),
            msg.detail,
            at,
        );
        entry.spend = msg.spend;
        let write = store.record_announced(
            ledger::RecordSigned {
                entry,
                check: msg.check,
            },
            msg.announced.as_ref(),
        );
        let guard = self.guard.clone();
        Detached(Box::pin(async move {
            write
                .await
                .map_err(|e| match e {
                    agentkeys_runtime::store::WriteError::Store(e) => PrincipalError::Store(e),
                    agentkeys_runtime::store::WriteError::Rejected(
                        ledger::SpendError::PolicyChanged,
                    ) => PrincipalError::PolicyChanged,
                })?
                .map_err(|r| PrincipalError::Spend(Box::new(r)))?;
            guard.check()?;
            Ok(())
        }))
    }

    /// [`CheckSession`] answered from the view, or `None` when only the actor can answer (the
    /// binding is not in the view, or the tree's policies changed since it was published).
    pub fn check(
        &self,
        msg: &CheckSession,
        ledger: &Ledger,
    ) -> Option<Result<SessionCheck, SessionError>> {
        if self.stale(msg.min_epoch) {
            return None;
        }
        let binding = self.bindings.get(msg.bid)?;
        let master = self.guard.chain()[0];
        let effective = self
            .effective
            .as_ref()
            .filter(|e| e.version == ledger.policies().version(&master))?;
        Some(self.answer(Some(binding), &msg.jkt, effective.clone()))
    }

    /// Whether another node changed the tree since the view was loaded (the request read a
    /// newer epoch), or this node flushed its caches since.
    fn stale(&self, min_epoch: u64) -> bool {
        self.epoch < min_epoch || self.generation != self.guard.cache_generation()
    }

    /// Lineage live, binding live and of this key; the scopes as of now.
    fn answer(
        &self,
        binding: Option<&CachedBinding>,
        jkt: &str,
        policies: Arc<crate::policy::Effective>,
    ) -> Result<SessionCheck, SessionError> {
        let proof = self.guard.check().map_err(SessionError::Call)?;
        match binding {
            Some(b) if b.is_live() && b.is_of(jkt) => Ok(SessionCheck {
                record: self.record(),
                proof,
                guard: self.guard.clone(),
                scopes: self
                    .guard
                    .effective_scopes(self.record.scopes.iter())
                    .map_err(SessionError::Call)?,
                policies,
            }),
            Some(b) if b.is_live() => Err(SessionError::WrongKey),
            _ => Err(SessionError::BindingRevoked),
        }
    }
}

/// The device bindings an actor caches, sorted by binding id. A vector, not a `BTreeMap`: an
/// actor has a few bindings, and a map's first node reserves room for eleven (about 1.5 KB per
/// actor with one binding; docs/BENCHMARKS.md).
#[derive(Debug, Clone, Default)]
struct Bindings(Box<[CachedBinding]>);

/// What the session check needs of a [`DeviceBinding`]: its id, whether it is live, and the
/// SHA-256 of its key's thumbprint — 48 bytes and no string of its own, where the whole binding
/// took 120 and two strings (docs/BENCHMARKS.md, memory per active agent). The rest (label,
/// times) is read from the ledger when someone asks ([`Describe`]).
#[derive(Debug, Clone, PartialEq, Eq)]
struct CachedBinding {
    bid: u64,
    jkt: [u8; 32],
    live: bool,
}

impl CachedBinding {
    fn is_live(&self) -> bool {
        self.live
    }

    /// Whether the binding is of the key with this thumbprint.
    fn is_of(&self, jkt: &str) -> bool {
        thumbprint_digest(jkt) == self.jkt
    }
}

fn thumbprint_digest(jkt: &str) -> [u8; 32] {
    use sha2::Digest;
    sha2::Sha256::digest(jkt.as_bytes()).into()
}

impl From<&DeviceBinding> for CachedBinding {
    fn from(b: &DeviceBinding) -> Self {
        Self {
            bid: b.bid,
            jkt: thumbprint_digest(&b.jkt),
            live: b.is_live(),
        }
    }
}

impl Bindings {
    fn get(&self, bid: u64) -> Option<&CachedBinding> {
        self.0
            .binary_search_by_key(&bid, |b| b.bid)
            .ok()
            .map(|i| &self.0[i])
    }

    /// Adds `binding`, or replaces the one with its id.
    fn insert(&mut self, binding: CachedBinding) {
        match self.0.binary_search_by_key(&binding.bid, |b| b.bid) {
            Ok(i) => self.0[i] = binding,
            Err(i) => {
                let mut list = std::mem::take(&mut self.0).into_vec();
                list.insert(i, binding);
                self.0 = list.into_boxed_slice();
            }
        }
    }

    fn len(&self) -> usize {
        self.0.len()
    }
}

impl From<Vec<DeviceBinding>> for Bindings {
    fn from(bindings: Vec<DeviceBinding>) -> Self {
        let mut cached: Vec<CachedBinding> = bindings.iter().map(CachedBinding::from).collect();
        cached.sort_by_key(|b| b.bid);
        cached.dedup_by_key(|b| b.bid);
        Self(cached.into_boxed_slice())
    }
}

/// An actor built on a [`PrincipalCore`].
pub trait Principal: Actor<Context = Context<Self>> {
    /// Its core.
    fn core(&mut self) -> &mut PrincipalCore;
}

/// The answer to a change of the actor's memory: `change` is already submitted; `finish` applies
/// it to memory after the commit, in the same mailbox turn.
pub fn in_turn<A, W, T>(
    change: Change<W>,
    finish: fn(&mut PrincipalCore, W) -> T,
) -> AtomicResponse<A, Result<T, PrincipalError>>
where
    A: Principal,
    W: 'static,
    T: 'static,
{
    AtomicResponse::new(Box::pin(
        wrap_future::<_, A>(change)
            .map(move |result, act, _| result.map(|w| finish(act.core(), w))),
    ))
}

/// The rest of a change that needs nothing of the actor (its commit, then a lineage check),
/// handed to the caller to await: the commit then wakes the caller's task directly instead of
/// the actor's arbiter, which would only pass the answer on — one thread hand-off less on
/// every signed request (docs/runtime-semantics.md). The write is already submitted (in the
/// actor's turn, or on its published view: [`SessionView::record_action`]).
#[must_use = "the answer comes after the commit: await it"]
pub struct Detached<T>(Pin<Box<dyn Future<Output = Result<T, PrincipalError>> + Send>>);

impl<T> Future for Detached<T> {
    type Output = Result<T, PrincipalError>;

    fn poll(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Self::Output> {
        self.0.as_mut().poll(cx)
    }
}

impl<T> std::fmt::Debug for Detached<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Detached").finish_non_exhaustive()
    }
}

fn refused<T: 'static>(e: impl Into<PrincipalError>) -> Change<T> {
    let e = e.into();
    Box::pin(async move { Err(e) })
}

impl PrincipalCore {
    /// From an activation; loads the bindings (a failed read leaves the cache empty, and the
    /// first check reloads).
    pub fn activate(activation: Activation, deps: Arc<PrincipalDeps>) -> Self {
        if activation.guard.shared_store() {
            // Another node may have changed the tree's policies since this node's book loaded.
            let _ = deps.ledger.refresh_policies(activation.guard.chain());
        }
        let mut core = Self {
            view: Arc::new(SessionView {
                record: OwnRecord::from(activation.lineage.actor().clone()),
                bindings: Bindings::default(),
                effective: None,
                epoch: activation.lineage.epoch(),
                generation: activation.generation,
                guard: activation.guard,
            }),
            slot: activation.view,
            scopes: activation.scopes,
            deps,
        };
        let _ = core.reload();
        core
    }

    /// Changes the view (a copy, if a reader still holds the old one) and publishes it.
    fn change(&mut self, f: impl FnOnce(&mut SessionView)) {
        f(Arc::make_mut(&mut self.view));
        self.slot.publish(self.view.clone());
    }

    /// The cache takes `binding` (new, or replacing its id) and the view is published again,
    /// unless the cache already held it as it is.
    fn cache_binding(&mut self, binding: &DeviceBinding) {
        let cached = CachedBinding::from(binding);
        if self.view.bindings.get(cached.bid) != Some(&cached) {
            self.change(|v| v.bindings.insert(cached));
        }
    }

    fn reload(&mut self) -> Result<(), CallError> {
        let bindings = self.deps.ledger.devices(&self.view.omni())?;
        self.change(|v| v.bindings = Bindings::from(bindings));
        Ok(())
    }

    fn binding(&mut self, bid: u64) -> Result<Option<&CachedBinding>, CallError> {
        if self.view.bindings.get(bid).is_none() {
            self.reload()?;
        }
        Ok(self.view.bindings.get(bid))
    }

    fn master(&self) -> agentkeys_runtime::Omni {
        self.view.guard.chain()[0]
    }

    /// The policies on the lineage: rebuilt from the shared book only when the tree's policy
    /// version moved since the last request.
    fn policies(&mut self) -> Arc<crate::policy::Effective> {
        let book = self.deps.ledger.policies();
        let version = book.version(&self.master());
        match &self.view.effective {
            Some(e) if e.version == version => e.clone(),
            _ => {
                let e = book.shared_effective(self.view.guard.chain());
                self.change(|v| v.effective = Some(e.clone()));
                e
            }
        }
    }

    /// [`Authorize`]: the lineage check alone.
    pub fn authorize(&mut self) -> Result<SessionCheck, CallError> {
        let proof = self.view.guard.check()?;
        Ok(SessionCheck {
            record: self.view.record(),
            proof,
            guard: self.view.guard.clone(),
            scopes: self
                .view
                .guard
                .effective_scopes(self.view.record.scopes.iter())?,
            policies: self.policies(),
        })
    }

    /// Loads again everything the actor holds from the store — the lineage (and with it the
    /// revoked and scope indexes), its record, its bindings and the tree's policies — when the
    /// master's change epoch the request read is newer than what the view reflects: another
    /// node changed the tree (shared stores only; on redb both are 0).
    fn catch_up(&mut self, min_epoch: u64) -> Result<(), CallError> {
        if !self.view.stale(min_epoch) {
            return Ok(());
        }
        let generation = self.view.guard.cache_generation();
        let lineage = self.view.guard.reload()?;
        self.deps.ledger.refresh_policies(self.view.guard.chain())?;
        let bindings = self.deps.ledger.devices(&self.view.omni())?;
        self.change(|v| {
            v.record = OwnRecord::from(lineage.actor().clone());
            v.bindings = Bindings::from(bindings);
            v.effective = None;
            v.epoch = lineage.epoch();
            v.generation = generation;
        });
        Ok(())
    }

    /// [`CheckSession`]: lineage live, binding live and of this key.
    /// The same answer as [`SessionView::check`], after loading what the view lacked.
    pub fn check_session(&mut self, msg: &CheckSession) -> Result<SessionCheck, SessionError> {
        self.catch_up(msg.min_epoch).map_err(SessionError::Call)?;
        self.view.guard.check().map_err(SessionError::Call)?;
        let policies = self.policies();
        let binding = self.binding(msg.bid).map_err(SessionError::Call)?.cloned();
        self.view.answer(binding.as_ref(), &msg.jkt, policies)
    }

    /// [`Describe`]: the record, the bindings (from the ledger: the cache holds only what the
    /// session check needs), the effective scopes.
    pub fn describe(&mut self) -> Result<PrincipalView, CallError> {
        self.view.guard.check()?;
        let bindings = self.deps.ledger.devices(&self.view.omni())?;
        Ok(PrincipalView {
            record: self.view.record(),
            bindings,
            scopes: self
                .view
                .guard
                .effective_scopes(self.view.record.scopes.iter())?,
        })
    }

    /// [`CreateChild`]: derives the child's omni and wallet, then creates it (and binds the
    /// device, if any) in one transaction. The parent's memory does not change.
    pub fn create_child(&self, msg: CreateChild) -> Change<ChildCreated> {
        if let Err(e) = self.view.guard.check() {
            return refused(e);
        }
        if let Err(e) = validate_label(&msg.label) {
            return refused(PrincipalError::InvalidLabel(e.to_string()));
        }
        let scopes = match crate::scope::normalize(&msg.scopes) {
            Ok(scopes) => scopes,
            Err(e) => return refused(PrincipalError::InvalidScopes(e.to_string())),
        };
        let omni = match child_omni(&self.view.omni(), &msg.label) {
            Ok(omni) => omni,
            Err(e) => return refused(PrincipalError::InvalidLabel(e.to_string())),
        };
        let master = self.master();
        let path = format!("{}//{}", self.view.record.path, msg.label);
        let parent = self.view.omni();
        let (ledger, signer, now) = (
            self.deps.ledger.clone(),
            self.deps.signer.clone(),
            self.deps.clock.now(),
        );
        Box::pin(async move {
            let wallet = signer.account(master, path).await?.wallet;
            let create = NewActor {
                actor: CreateActor {
                    omni,
                    parent: Some(parent),
                    label: msg.label,
                    created_at: now,
                    origin: msg.origin,
                    scopes,
                },
                wallet: Some(wallet.0),
            };
            match msg.device {
                None => {
                    let created = ledger.create(create).await?;
                    Ok(ChildCreated {
                        record: created.record,
                        master,
                        new: created.new,
                        binding: None,
                    })
                }
                Some(device) => {
                    let bound = ledger
                        .create_and_bind(CreateAndBind {
                            create,
                            jkt: device.jkt,
                            device_label: device.label,
                        })
                        .await?;
                    Ok(ChildCreated {
                        record: bound.record,
                        master: bound.master,
                        new: bound.created,
                        binding: Some(bound.binding),
                    })
                }
            }
        })
    }

    /// [`SetScopes`], first half: validates and submits.
    pub fn set_scopes(&self, msg: SetScopes) -> Change<ActorRecord> {
        if self.view.record.kind == ActorKind::Master {
            return refused(PrincipalError::NotFound);
        }
        let scopes = match crate::scope::normalize(&msg.scopes) {
            Ok(scopes) => scopes,
            Err(e) => return refused(PrincipalError::InvalidScopes(e.to_string())),
        };
        let write = self.deps.ledger.set_scopes(ledger::SetScopes {
            omni: self.view.omni(),
            scopes,
            origin: msg.origin,
            at: self.deps.clock.now(),
        });
        Box::pin(async move { Ok(write.await?) })
    }

    /// [`SetScopes`], second half, after the commit: the record and the scope index.
    pub fn scopes_set(&mut self, record: ActorRecord) -> ActorRecord {
        self.scopes.set(record.scopes.clone());
        self.change(|v| v.record = OwnRecord::from(record.clone()));
        record
    }

    /// [`IssueLinkCode`]: the store keeps the hash; the actor's memory does not change.
    pub fn issue_link_code(&self, msg: IssueLinkCode) -> Change<Timestamp> {
        let write = self.deps.ledger.issue_link_code(ledger::IssueLinkCode {
            omni: self.view.omni(),
            hash: msg.hash,
            at: self.deps.clock.now(),
            expires_at: msg.expires_at,
            cap: msg.cap,
            origin: msg.origin,
        });
        Box::pin(async move { Ok(write.await?) })
    }

    /// [`BindDevice`], first half: consumes the code and binds the key in one transaction.
    pub fn bind_device(&self, msg: BindDevice) -> Change<BoundDevice> {
        let write = self.deps.ledger.redeem_link_code(RedeemLinkCode {
            omni: self.view.omni(),
            hash: msg.hash,
            jkt: msg.device.jkt,
            device_label: msg.device.label,
            at: self.deps.clock.now(),
            request_id: msg.request_id,
        });
        Box::pin(async move {
            match write.await? {
                Redemption::Bound {
                    record,
                    master,
                    binding,
                    ..
                } => Ok(BoundDevice {
                    record: *record,
                    master,
                    binding: *binding,
                }),
                Redemption::UsedByOther { omni, .. } => Err(PrincipalError::CodeUsed { omni }),
            }
        })
    }

    /// [`AddDevice`], first half: binds the key in one transaction.
    pub fn add_device(&self, msg: AddDevice) -> Change<BoundDevice> {
        let write = self.deps.ledger.bind_key(ledger::BindKey {
            omni: self.view.omni(),
            jkt: msg.device.jkt,
            device_label: msg.device.label,
            origin: msg.origin,
            at: self.deps.clock.now(),
        });
        Box::pin(async move {
            let bound = write.await?;
            Ok(BoundDevice {
                record: bound.record,
                master: bound.master,
                binding: bound.binding,
            })
        })
    }

    /// [`BindDevice`] and [`AddDevice`], second half: the new binding joins the cache.
    pub fn device_bound(&mut self, bound: BoundDevice) -> BoundDevice {
        self.cache_binding(&bound.binding);
        bound
    }

    /// [`DeleteBinding`], first half: the tombstone.
    pub fn delete_binding(&self, msg: DeleteBinding) -> Change<DeviceBinding> {
        let write = self.deps.ledger.delete_device(DeleteDevice {
            omni: self.view.omni(),
            bid: msg.bid,
            origin: msg.origin,
            at: self.deps.clock.now(),
        });
        Box::pin(async move { Ok(write.await?.binding) })
    }

    /// [`RecordAction`], run on the actor's view ([`SessionView::record_action`]).
    pub fn record_action(&self, msg: RecordAction) -> Detached<()> {
        self.view
            .record_action(&self.deps.ledger, self.deps.clock.now(), msg)
    }

    /// [`UseBinding`], first half: checks the binding and records its use.
    pub fn use_binding(&self, msg: UseBinding) -> Change<BindingInUse> {
        let write = self.deps.ledger.refresh_session(RefreshSession {
            omni: self.view.omni(),
            bid: msg.bid,
            jkt: msg.jkt,
            request_id: msg.request_id,
            at: self.deps.clock.now(),
        });
        Box::pin(async move { Ok(write.await?) })
    }

    /// [`UseBinding`], second half: the binding as the cache holds it (unchanged, for a use
    /// of a live binding: nothing is published again).
    pub fn binding_used(&mut self, used: BindingInUse) -> BindingInUse {
        self.cache_binding(&used.binding);
        used
    }

    /// [`DeleteBinding`], second half: the cache holds the tombstone.
    pub fn binding_deleted(&mut self, binding: DeviceBinding) -> DeviceBinding {
        self.cache_binding(&binding);
        binding
    }
}

/// Records what the actor `omni` of `registry` obtained (the audit row of a signature or
/// token, its spend checked and counted) and answers after the row's commit and a fresh
/// lineage check. An active actor's published view runs it where the caller is
/// ([`SessionView::record_action`], what the actor itself runs on [`RecordAction`]: it changes
/// nothing of the actor, so the mailbox hop would only pass it on); an actor not active is
/// sent the message, which activates it (its lineage read from the store).
pub async fn record_action<A>(
    registry: &agentkeys_runtime::Registry<A>,
    omni: agentkeys_runtime::Omni,
    ledger: &Ledger,
    clock: &dyn Clock,
    msg: RecordAction,
) -> Result<(), PrincipalError>
where
    A: agentkeys_runtime::VirtualActor
        + actix::Handler<agentkeys_runtime::Supervised<RecordAction>>,
{
    let recorded = match registry.view::<SessionView>(&omni) {
        Some(view) => view.record_action(ledger, clock.now(), msg),
        None => registry.call(omni, msg).await?,
    };
    recorded.await
}

/// Implements the principal messages for an actor type with a `core: PrincipalCore` field.
#[macro_export]
macro_rules! principal_handlers {
    ($actor:ty) => {
        impl $crate::principal::Principal for $actor {
            fn core(&mut self) -> &mut $crate::principal::PrincipalCore {
                &mut self.core
            }
        }

        impl ::actix::Handler<$crate::principal::CheckSession> for $actor {
            type Result = Result<$crate::principal::SessionCheck, $crate::principal::SessionError>;

            fn handle(
                &mut self,
                msg: $crate::principal::CheckSession,
                _ctx: &mut ::actix::Context<Self>,
            ) -> Self::Result {
                self.core.check_session(&msg)
            }
        }

        impl ::actix::Handler<$crate::principal::Authorize> for $actor {
            type Result = Result<$crate::principal::SessionCheck, ::agentkeys_runtime::CallError>;

            fn handle(
                &mut self,
                _msg: $crate::principal::Authorize,
                _ctx: &mut ::actix::Context<Self>,
            ) -> Self::Result {
                self.core.authorize()
            }
        }

        impl ::actix::Handler<$crate::principal::Describe> for $actor {
            type Result = Result<$crate::principal::PrincipalView, ::agentkeys_runtime::CallError>;

            fn handle(
                &mut self,
                _msg: $crate::principal::Describe,
                _ctx: &mut ::actix::Context<Self>,
            ) -> Self::Result {
                self.core.describe()
            }
        }

        $crate::principal_handlers!(@detached $actor, CreateChild, $crate::principal::ChildCreated, create_child);
        $crate::principal_handlers!(@detached $actor, IssueLinkCode, ::agentkeys_runtime::Timestamp, issue_link_code);
        impl ::actix::Handler<$crate::principal::RecordAction> for $actor {
            type Result = ::actix::MessageResult<$crate::principal::RecordAction>;

            fn handle(
                &mut self,
                msg: $crate::principal::RecordAction,
                _ctx: &mut ::actix::Context<Self>,
            ) -> Self::Result {
                ::actix::MessageResult(self.core.record_action(msg))
            }
        }
        $crate::principal_handlers!(@in_turn $actor, SetScopes, ::agentkeys_runtime::store::ActorRecord, set_scopes, scopes_set);
        $crate::principal_handlers!(@in_turn $actor, BindDevice, $crate::principal::BoundDevice, bind_device, device_bound);
        $crate::principal_handlers!(@in_turn $actor, AddDevice, $crate::principal::BoundDevice, add_device, device_bound);
        $crate::principal_handlers!(@in_turn $actor, UseBinding, $crate::ledger::BindingInUse, use_binding, binding_used);
        $crate::principal_handlers!(@in_turn $actor, DeleteBinding, $crate::ledger::DeviceBinding, delete_binding, binding_deleted);

        ::agentkeys_runtime::supervised!($actor);
    };
    (@detached $actor:ty, $msg:ident, $out:ty, $start:ident) => {
        impl ::actix::Handler<$crate::principal::$msg> for $actor {
            type Result = ::actix::ResponseFuture<Result<$out, $crate::principal::PrincipalError>>;

            fn handle(
                &mut self,
                msg: $crate::principal::$msg,
                _ctx: &mut ::actix::Context<Self>,
            ) -> Self::Result {
                self.core.$start(msg)
            }
        }
    };
    (@in_turn $actor:ty, $msg:ident, $out:ty, $start:ident, $finish:ident) => {
        impl ::actix::Handler<$crate::principal::$msg> for $actor {
            type Result = ::actix::AtomicResponse<Self, Result<$out, $crate::principal::PrincipalError>>;

            fn handle(
                &mut self,
                msg: $crate::principal::$msg,
                _ctx: &mut ::actix::Context<Self>,
            ) -> Self::Result {
                $crate::principal::in_turn(
                    self.core.$start(msg),
                    $crate::principal::PrincipalCore::$finish,
                )
            }
        }
    };
}

#[cfg(test)]
mod tests {
    use super::Bindings;
    use crate::ledger::DeviceBinding;
    use agentkeys_runtime::{Omni, Timestamp};

    fn binding(bid: u64, jkt: &str) -> DeviceBinding {
        DeviceBinding {
            omni: Omni::from_bytes([1; 32]),
            bid,
            jkt: jkt.into(),
            label: format!("device-{bid}"),
            created_at: Timestamp::from_millis(bid),
            last_used: Timestamp::from_millis(bid),
            tombstoned_at: None,
        }
    }

    /// The published view is one allocation per active actor (with `Arc`'s two counts):
    /// 160 bytes, two size classes below the 256 it took with the whole record in it.
    #[test]
    fn the_published_view_fits_160_bytes() {
        let size = std::mem::size_of::<super::SessionView>() + 16;
        assert!(size <= 160, "the view's allocation is {size} bytes");
    }

    #[test]
    fn packed_scopes_give_back_what_was_packed() {
        for scopes in [
            vec![],
            vec!["sign:eip191".to_string(), "sign:tx:1".to_string()],
            vec![String::new(), "ü with spaces".to_string(), "x".repeat(300)],
        ] {
            let packed = super::PackedScopes::from(scopes.clone());
            assert_eq!(packed.iter().collect::<Vec<_>>(), scopes);
        }
        let two = super::PackedScopes::from(vec!["sign:eip191".into(), "sign:tx:1".into()]);
        assert_eq!(two.0.len(), 28, "one allocation: lengths and bytes");
    }

    #[test]
    fn bindings_stay_sorted_and_an_insert_replaces_the_same_id() {
        let mut b = Bindings::from(vec![binding(7, "g"), binding(2, "b"), binding(5, "e")]);
        b.insert((&binding(3, "c")).into());
        b.insert((&binding(9, "i")).into());
        b.insert((&binding(5, "e2")).into());
        let ids: Vec<u64> = b.0.iter().map(|d| d.bid).collect();
        assert_eq!(ids, [2, 3, 5, 7, 9]);
        assert!(b.get(5).is_some_and(|d| d.is_of("e2") && !d.is_of("e")));
        assert!(b.get(4).is_none());
        assert_eq!(b.len(), 5);
    }
}
