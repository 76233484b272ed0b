//! Derivations and signatures, byte-compatible with upstream AgentKeys (DESIGN §3).
//!
//! Every domain-separation label lives in [`labels`]. Secret material lives only in
//! [`secret::MasterSecret`], [`wallet::WalletKey`] and [`sr25519::SrKey`], which zeroize on
//! drop and print nothing; only the signer holds them.

pub mod account;
pub mod eip191;
pub mod eip712;
pub mod labels;
pub mod omni;
pub mod rfc3339;
pub mod secret;
pub mod siwe;
pub mod sr25519;
pub mod tx;
pub(crate) mod uint;
pub mod vault;
pub mod wallet;
