//! AgentKeys domain layer on top of `agentkeys-runtime`: derivations of identifiers and
//! signatures (`crypto`), the domain ledger in the runtime's store (`ledger`), the master and
//! agent actors that own their state (`principal`, `master`, `agent`), and the signer pool that
//! holds every key (`signer`).

pub mod agent;
pub mod crypto;
pub mod ledger;
pub mod master;
pub mod policy;
pub mod principal;
pub mod scope;
pub mod signer;
