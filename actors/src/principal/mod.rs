//! What master and agent actors share: the record, the lineage guard, a cache of the device
//! bindings, and the handlers of [`CheckSession`] (which also answers the effective scopes, so
//! a signed request needs one mailbox round trip), [`Describe`] and [`ReloadBindings`]
//! (generated for each actor type by [`principal_handlers!`]).
//!
//! The bindings cache is loaded at activation; an unknown binding id triggers one reload
//! (binding ids only grow, so a miss can only mean "newer"), and whoever deletes a binding sends
//! [`ReloadBindings`] before answering.

mod messages;

use std::collections::BTreeMap;
use std::sync::Arc;

use agentkeys_runtime::store::{ActorRecord, DeviceBinding, Storage};
use agentkeys_runtime::{Activation, CallError, LineageGuard};

pub use messages::{
    CheckSession, Describe, PrincipalView, ReloadBindings, SessionCheck, SessionError,
};

/// The state both actor types hold.
pub struct PrincipalCore {
    record: ActorRecord,
    guard: LineageGuard,
    store: Arc<dyn Storage>,
    bindings: BTreeMap<u64, DeviceBinding>,
}

impl std::fmt::Debug for PrincipalCore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PrincipalCore")
            .field("omni", &self.record.omni.short())
            .field("bindings", &self.bindings.len())
            .finish_non_exhaustive()
    }
}

impl PrincipalCore {
    /// From an activation; loads the bindings (a failed read leaves the cache empty, and the
    /// first check reloads).
    pub fn activate(activation: Activation) -> Self {
        let mut core = Self {
            record: activation.lineage.actor().clone(),
            guard: activation.guard,
            store: activation.store,
            bindings: BTreeMap::new(),
        };
        let _ = core.reload();
        core
    }

    /// The actor's record as activated.
    pub fn record(&self) -> &ActorRecord {
        &self.record
    }

    /// Re-reads the bindings from the store.
    pub fn reload(&mut self) -> Result<(), CallError> {
        let bindings = self.store.devices(&self.record.omni)?;
        self.bindings = bindings.into_iter().map(|b| (b.bid, b)).collect();
        Ok(())
    }

    fn binding(&mut self, bid: u64) -> Result<Option<&DeviceBinding>, CallError> {
        if !self.bindings.contains_key(&bid) {
            self.reload()?;
        }
        Ok(self.bindings.get(&bid))
    }

    /// [`CheckSession`]: lineage live, binding live and of this key.
    pub fn check_session(&mut self, msg: &CheckSession) -> Result<SessionCheck, SessionError> {
        let proof = self.guard.check().map_err(SessionError::Call)?;
        let binding = self.binding(msg.bid).map_err(SessionError::Call)?;
        match binding {
            Some(b) if b.is_live() && b.jkt == msg.jkt => Ok(SessionCheck {
                record: self.record.clone(),
                proof,
                guard: self.guard.clone(),
                scopes: self.guard.effective_scopes().map_err(SessionError::Call)?,
            }),
            Some(b) if b.is_live() => Err(SessionError::WrongKey),
            _ => Err(SessionError::BindingRevoked),
        }
    }

    /// [`Describe`]: the stored record as it is now, the bindings, the effective scopes.
    pub fn describe(&mut self) -> Result<PrincipalView, CallError> {
        self.guard.check()?;
        let record = self
            .store
            .actor(&self.record.omni)?
            .unwrap_or_else(|| self.record.clone());
        Ok(PrincipalView {
            record,
            bindings: self.bindings.values().cloned().collect(),
            scopes: self.guard.effective_scopes()?,
        })
    }
}

/// Implements the principal messages for an actor type with a `core: PrincipalCore` field.
#[macro_export]
macro_rules! principal_handlers {
    ($actor:ty) => {
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

        impl ::actix::Handler<$crate::principal::ReloadBindings> for $actor {
            type Result = Result<(), ::agentkeys_runtime::CallError>;

            fn handle(
                &mut self,
                _msg: $crate::principal::ReloadBindings,
                _ctx: &mut ::actix::Context<Self>,
            ) -> Self::Result {
                self.core.reload()
            }
        }

        ::agentkeys_runtime::supervised!($actor);
    };
}
