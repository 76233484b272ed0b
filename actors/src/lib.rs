//! AgentKeys domain layer: derivations of identifiers and, as the product grows, the master,
//! agent, signer and mailer actors on top of `agentkeys-runtime`.

pub mod agent;
pub mod crypto;
pub mod master;
pub mod principal;
pub mod scope;
pub mod signer;
