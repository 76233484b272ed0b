//! The AgentKeys actor runtime.
//!
//! It owns the things every actor relies on and no actor may own: the redb [`store`] with its
//! group-commit writer, the [`RevokedIndex`], the arbiters actors run on, virtual activation
//! ([`Registry`]) and revocation ([`Runtime::revoke`]). It knows no crypto and no HTTP.
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
    Activation, ActorHandle, CallError, LineageGuard, LiveProof, Registry, ScopeSlot, VirtualActor,
};
pub use revoked::RevokedIndex;
pub use runtime::{RevocationReceipt, Runtime, RuntimeConfig, RuntimeError, ShutdownReport};
pub use scopes::ScopeIndex;
pub use supervision::{Crashed, Supervised, SupervisionConfig, SupervisionEvent};
