//! The agent actor: one per agent (any depth below a master).
//!
//! **Owns** the agent's record (omni, path, stored scopes, status), its entry of the runtime's
//! scope index (held only while it has descendants), its device bindings (what the session
//! check needs of them, cached; the ledger is the durable copy) and the link codes it issued
//! ([`PrincipalCore`]). **Takes** the principal messages ([`crate::principal`]), including
//! `SetScopes` from an ancestor, which narrows its whole subtree at once; a
//! [`CheckSession`](crate::principal::CheckSession) checks the lineage (revoked index) and the
//! binding, and answers the effective scopes — its own stored scopes intersected with its
//! ancestors', read from the runtime's scope index at check time — with the
//! [`LiveProof`](agentkeys_runtime::LiveProof) the signer needs.
//! Signing itself runs in the signer pool, outside this mailbox, so many signatures per agent
//! can be in flight and a slow one never blocks the next check. **Restart policy**: supervised;
//! a crash drops the actor and the next message activates it from the store. **Lost on
//! restart**: nothing (the cache is reloaded). Its wallet and sr25519 key are derived by the
//! signer on demand; the actor never holds key material.

use std::sync::Arc;

use actix::{Actor, Context};
use agentkeys_runtime::store::ActorKind;
use agentkeys_runtime::{Activation, VirtualActor};

use crate::principal::{PrincipalCore, PrincipalDeps};

/// One agent on the runtime.
#[derive(Debug)]
pub struct AgentActor {
    core: PrincipalCore,
}

impl Actor for AgentActor {
    type Context = Context<Self>;
}

impl VirtualActor for AgentActor {
    type Deps = Arc<PrincipalDeps>;

    fn accepts(kind: ActorKind) -> bool {
        kind == ActorKind::Agent
    }

    fn activate(
        activation: Activation,
        deps: Arc<PrincipalDeps>,
        _ctx: &mut Context<Self>,
    ) -> Self {
        AgentActor {
            core: PrincipalCore::activate(activation, deps),
        }
    }
}

crate::principal_handlers!(AgentActor);

#[cfg(test)]
mod tests {
    use super::*;

    /// An active agent is one tokio task whose future is actix's context with the actor inline.
    /// tokio aligns a task's cell to 128 bytes on x86-64 and aarch64 and adds 104 bytes of its
    /// own, so a future of up to 408 bytes takes a 512-byte allocation and one of 416 a 640-byte
    /// one (measured with tokio 1.54). Shared handles therefore live behind one `Arc`
    /// ([`PrincipalDeps`]); this keeps the next field from costing an active agent 128 bytes.
    #[test]
    fn an_active_agents_task_fits_a_512_byte_cell() {
        let future = std::mem::size_of::<actix::dev::ContextFut<AgentActor, Context<AgentActor>>>();
        assert!(future <= 408, "the actor's task future is {future} bytes");
    }
}
