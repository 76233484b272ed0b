//! The AgentKeys actor runtime.
//!
//! It owns the things every actor relies on and no actor may own: the redb [`store`] (the actor
//! tree, meta, and the group-commit writer that higher layers write their own tables through),
//! the [`RevokedIndex`] and [`ScopeIndex`], the arbiters actors run on, virtual activation and
//! supervision ([`Registry`]) and revocation ([`Runtime::revoke_with`]). It knows no crypto, no
//! domain and no HTTP.
//!
//! The guarantees and their linearization points are written down in
//! `docs/runtime-semantics.md`.

mod clock;
mod lifecycle;
pub use lifecycle::StopWatch;
mod omni;
mod registry;
mod revoked;
mod runtime;
mod scopes;
pub mod store;
mod supervision;

pub use clock::{Clock, ManualClock, SystemClock, Timestamp};
pub use omni::{Omni, OmniParseError};
pub use registry::{
    Activation, ActorHandle, CallError, LineageGuard, LiveProof, Registry, ScopeSlot, ViewSlot,
    VirtualActor,
};
pub use revoked::RevokedIndex;
pub use runtime::{RevocationReceipt, Runtime, RuntimeConfig, RuntimeError, ShutdownReport};
pub use scopes::ScopeIndex;
pub use supervision::{Crashed, Supervised, SupervisionConfig, SupervisionEvent};
