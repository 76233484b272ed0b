//! AgentKeys domain layer: derivations of identifiers and, as the product grows, the master,
//! agent, signer and mailer actors on top of `agentkeys-runtime`.

pub mod crypto;
pub mod master;
pub mod signer;
