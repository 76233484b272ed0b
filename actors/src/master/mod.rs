//! The master actor: one per human account, the root of a tree.
//!
//! **Owns** the master's record, its device bindings (cached; the ledger is the durable copy)
//! and the link codes it issued ([`PrincipalCore`]). **Takes** the principal messages
//! ([`crate::principal`]): session checks and descriptions, and every change to that state —
//! children it creates, link codes, device bindings (redeemed, used, deleted), the audit rows of
//! what it signs. A master holds every scope and has no stored scopes to change.
//! **Restart policy**: supervised by the runtime; a crash drops the actor and the next message
//! activates it again from the store. **Lost on restart**: nothing; the cache is reloaded at
//! activation.

use std::sync::Arc;

use actix::{Actor, Context};
use agentkeys_runtime::store::ActorKind;
use agentkeys_runtime::{Activation, VirtualActor};

use crate::principal::{PrincipalCore, PrincipalDeps};

/// One master account on the runtime.
#[derive(Debug)]
pub struct MasterActor {
    core: PrincipalCore,
}

impl Actor for MasterActor {
    type Context = Context<Self>;
}

impl VirtualActor for MasterActor {
    type Deps = Arc<PrincipalDeps>;

    fn accepts(kind: ActorKind) -> bool {
        kind == ActorKind::Master
    }

    fn activate(
        activation: Activation,
        deps: Arc<PrincipalDeps>,
        _ctx: &mut Context<Self>,
    ) -> Self {
        MasterActor {
            core: PrincipalCore::activate(activation, deps),
        }
    }
}

crate::principal_handlers!(MasterActor);
