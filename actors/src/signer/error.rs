//! Errors of the signer.

use crate::crypto::account::AccountError;
use crate::crypto::eip712::TypedDataError;
use crate::crypto::omni::OmniError;
use crate::crypto::tx::TxError;

/// Why the signer refused or failed. Messages never contain secret material.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignerError {
    /// A key file is missing, unreadable, malformed or too open.
    #[error("key file: {0}")]
    KeyFile(String),
    /// K3 is missing where it is required.
    #[error(
        "no master secret (K3) at {0}; create one with `agentkeys keys init` (it is generated \
         automatically only in dev mode, for a new store)"
    )]
    MissingK3(String),
    /// The message is an EIP-4361 login for this gateway: a managed wallet never logs in.
    #[error(
        "refusing to sign a Sign-In with Ethereum message for this gateway with a managed wallet"
    )]
    ManagedWalletLogin,
    /// A label or path is invalid.
    #[error(transparent)]
    Path(#[from] OmniError),
    /// The account could not be derived.
    #[error(transparent)]
    Account(#[from] AccountError),
    /// The typed data is invalid.
    #[error(transparent)]
    TypedData(#[from] TypedDataError),
    /// The transaction is invalid.
    #[error(transparent)]
    Tx(#[from] TxError),
    /// The proof does not allow this key (a proof names the one actor it was made for).
    #[error("not authorized: {0}")]
    NotAuthorized(&'static str),
    /// A vault record does not authenticate (tampered ciphertext or AAD): nothing is returned.
    #[error("the stored credential does not authenticate; it was not returned")]
    Tampered,
    /// A signer thread panicked while serving this request; it was replaced.
    #[error("the signer failed on this request; retry")]
    Unavailable,
    /// An internal failure without detail.
    #[error("signer failure: {0}")]
    Internal(&'static str),
}
