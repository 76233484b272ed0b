//! The master actor: one per human account, the root of a tree.
//!
//! **Owns** the master's record and a cache of its device bindings (the store is the source
//! of truth). **Takes** [`CheckSession`] (is this token's binding live, and is the lineage live?),
//! [`Describe`] (record and bindings for `whoami`) and [`ReloadBindings`] (after a binding was
//! added or deleted). **Restart policy**: supervised by the runtime; a crash drops the actor and
//! the next message activates it again from the store. **Lost on restart**: nothing; the cache
//! is reloaded at activation.

mod messages;

use std::collections::BTreeMap;
use std::sync::Arc;

use actix::{Actor, Context, Handler};
use agentkeys_runtime::store::{ActorKind, ActorRecord, DeviceBinding, Storage};
use agentkeys_runtime::{Activation, CallError, LineageGuard, VirtualActor, supervised};

pub use messages::{
    CheckSession, Describe, MasterView, ReloadBindings, SessionCheck, SessionError,
};

/// One master account on the runtime.
pub struct MasterActor {
    record: ActorRecord,
    guard: LineageGuard,
    store: Arc<dyn Storage>,
    bindings: BTreeMap<u64, DeviceBinding>,
}

impl std::fmt::Debug for MasterActor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MasterActor")
            .field("omni", &self.record.omni.short())
            .finish_non_exhaustive()
    }
}

impl Actor for MasterActor {
    type Context = Context<Self>;
}

impl VirtualActor for MasterActor {
    fn accepts(kind: ActorKind) -> bool {
        kind == ActorKind::Master
    }

    fn activate(activation: Activation, _ctx: &mut Context<Self>) -> Self {
        let mut actor = MasterActor {
            record: activation.lineage.actor().clone(),
            guard: activation.guard,
            store: activation.store,
            bindings: BTreeMap::new(),
        };
        // A failed read leaves the cache empty; `CheckSession` reloads on a miss.
        let _ = actor.reload();
        actor
    }
}

supervised!(MasterActor);

impl MasterActor {
    fn reload(&mut self) -> Result<(), CallError> {
        let bindings = self.store.devices(&self.record.omni)?;
        self.bindings = bindings.into_iter().map(|b| (b.bid, b)).collect();
        Ok(())
    }

    fn binding(&mut self, bid: u64) -> Result<Option<&DeviceBinding>, CallError> {
        if !self.bindings.contains_key(&bid) {
            // Binding ids only grow: an unknown one may be newer than the cache.
            self.reload()?;
        }
        Ok(self.bindings.get(&bid))
    }
}

impl Handler<CheckSession> for MasterActor {
    type Result = Result<SessionCheck, SessionError>;

    fn handle(&mut self, msg: CheckSession, _ctx: &mut Context<Self>) -> Self::Result {
        let proof = self.guard.check().map_err(SessionError::Call)?;
        let binding = self.binding(msg.bid).map_err(SessionError::Call)?;
        match binding {
            Some(b) if b.is_live() && b.jkt == msg.jkt => Ok(SessionCheck {
                record: self.record.clone(),
                proof,
            }),
            Some(b) if b.is_live() => Err(SessionError::WrongKey),
            _ => Err(SessionError::BindingRevoked),
        }
    }
}

impl Handler<Describe> for MasterActor {
    type Result = Result<MasterView, CallError>;

    fn handle(&mut self, _msg: Describe, _ctx: &mut Context<Self>) -> Self::Result {
        self.guard.check()?;
        Ok(MasterView {
            record: self.record.clone(),
            bindings: self.bindings.values().cloned().collect(),
        })
    }
}

impl Handler<ReloadBindings> for MasterActor {
    type Result = Result<(), CallError>;

    fn handle(&mut self, _msg: ReloadBindings, _ctx: &mut Context<Self>) -> Self::Result {
        self.reload()
    }
}
