//! Every public identifier of one actor, derived from K3.

use agentkeys_runtime::Omni;

use super::omni::{OmniError, path_omni};
use super::secret::MasterSecret;
use super::sr25519;
use super::wallet::{Address, WalletError, derive_wallet};

/// Every public identifier of one actor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Account {
    /// The actor's omni.
    pub omni: Omni,
    /// Its path (`""` for the master).
    pub path: String,
    /// Its managed wallet `W(omni)`.
    pub wallet: Address,
    /// Its sr25519 public key.
    pub sr25519_public: [u8; 32],
    /// Its SS58 address (prefix 42).
    pub ss58: String,
}

/// Why an account could not be derived.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AccountError {
    /// The path is invalid.
    #[error(transparent)]
    Path(#[from] OmniError),
    /// No valid wallet scalar (astronomically unlikely).
    #[error(transparent)]
    Wallet(#[from] WalletError),
}

/// The identifiers of the actor at `path` (`""` or `//a//b`) under `master`.
pub fn derive(k3: &MasterSecret, master: &Omni, path: &str) -> Result<Account, AccountError> {
    let omni = if path.is_empty() {
        *master
    } else {
        path_omni(master, path)?
    };
    let sr = sr25519::derive_actor(k3, master, path)?;
    Ok(Account {
        omni,
        path: path.to_string(),
        wallet: derive_wallet(k3, &omni)?.address(),
        sr25519_public: sr.public(),
        ss58: sr25519::ss58(&sr.public(), sr25519::GENERIC_SUBSTRATE),
    })
}
