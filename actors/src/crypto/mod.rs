//! Derivations, byte-compatible with upstream AgentKeys (DESIGN §3).
//!
//! Every domain-separation label lives in [`labels`].

pub mod labels;
pub mod omni;
