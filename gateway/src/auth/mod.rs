//! Authentication building blocks: DPoP proofs (RFC 9449), their replay cache and the
//! server's `DPoP-Nonce` values.

pub mod dpop;
pub mod nonce;
pub mod replay;
pub mod session;
