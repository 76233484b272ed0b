//! Managed wallets `W(omni)` and EVM addresses.

use std::fmt;
use std::str::FromStr;

use agentkeys_runtime::Omni;
use hkdf::Hkdf;
use k256::ecdsa::{SigningKey, VerifyingKey};
use sha2::Sha256;
use sha3::{Digest, Keccak256};
use zeroize::Zeroizing;

use super::labels;
use super::secret::MasterSecret;

/// keccak-256.
pub fn keccak256(data: &[u8]) -> [u8; 32] {
    Keccak256::digest(data).into()
}

/// A 20-byte EVM address; displayed as `0x` + 40 lowercase hex.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Address(pub [u8; 20]);

/// Why text is not an address.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("an EVM address is 0x followed by 40 hex characters")]
pub struct AddressError;

impl Address {
    /// The address of a secp256k1 public key: `keccak256(X || Y)[12..]`.
    pub fn of(key: &VerifyingKey) -> Self {
        let point = key.to_sec1_point(false);
        let xy = &point.as_bytes()[1..];
        let hash = keccak256(xy);
        let mut out = [0u8; 20];
        out.copy_from_slice(&hash[12..]);
        Self(out)
    }

    /// The EIP-55 mixed-case form.
    pub fn to_checksum(&self) -> String {
        let lower = hex::encode(self.0);
        let hash = keccak256(lower.as_bytes());
        let mut out = String::with_capacity(42);
        out.push_str("0x");
        for (i, c) in lower.chars().enumerate() {
            let nibble = (hash[i / 2] >> (if i % 2 == 0 { 4 } else { 0 })) & 0x0f;
            out.push(if c.is_ascii_alphabetic() && nibble >= 8 {
                c.to_ascii_uppercase()
            } else {
                c
            });
        }
        out
    }
}

impl FromStr for Address {
    type Err = AddressError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bare = s
            .strip_prefix("0x")
            .or_else(|| s.strip_prefix("0X"))
            .unwrap_or(s);
        let mut out = [0u8; 20];
        if bare.len() != 40 {
            return Err(AddressError);
        }
        hex::decode_to_slice(bare, &mut out).map_err(|_| AddressError)?;
        Ok(Self(out))
    }
}

impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "0x{}", hex::encode(self.0))
    }
}

impl fmt::Debug for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Address({self})")
    }
}

/// A secp256k1 signing key (a managed wallet). Zeroized on drop, never printed.
pub struct WalletKey {
    key: SigningKey,
    address: Address,
}

impl fmt::Debug for WalletKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WalletKey")
            .field("address", &self.address)
            .finish_non_exhaustive()
    }
}

/// The wallet could not be derived.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("no valid secp256k1 scalar in 16 attempts")]
pub struct WalletError;

impl WalletKey {
    /// Wraps 32 secret bytes; `None` if they are not a valid secp256k1 scalar.
    pub fn from_secret(bytes: &[u8; 32]) -> Option<Self> {
        let key = SigningKey::from_slice(bytes).ok()?;
        let address = Address::of(key.verifying_key());
        Some(Self { key, address })
    }

    /// The wallet's address.
    pub fn address(&self) -> Address {
        self.address
    }

    pub(crate) fn signing_key(&self) -> &SigningKey {
        &self.key
    }
}

/// `W(omni)`: HKDF-SHA256 with ikm = K3, salt `agentkeys-signer-v0`,
/// info = `0x01 || "agentkeys-evm-wallet" || omni [|| retry]`, 32 bytes; retry bytes 1..=15 are
/// appended while the output is not a valid scalar.
pub fn derive_wallet(k3: &MasterSecret, omni: &Omni) -> Result<WalletKey, WalletError> {
    wallet_secret(k3, omni).map(|(_, key)| key)
}

fn wallet_secret(
    k3: &MasterSecret,
    omni: &Omni,
) -> Result<(Zeroizing<[u8; 32]>, WalletKey), WalletError> {
    let hk = Hkdf::<Sha256>::new(Some(labels::WALLET_SALT), k3.expose());
    for retry in 0..=labels::WALLET_MAX_RETRY {
        let mut info = Vec::with_capacity(1 + labels::WALLET_INFO.len() + 33);
        info.push(labels::WALLET_INFO_VERSION);
        info.extend_from_slice(labels::WALLET_INFO);
        info.extend_from_slice(omni.as_bytes());
        if retry > 0 {
            info.push(retry);
        }
        let mut okm = Zeroizing::new([0u8; 32]);
        hk.expand(&info, okm.as_mut())
            .unwrap_or_else(|_| unreachable!("32 bytes is a valid HKDF-SHA256 length"));
        if let Some(key) = WalletKey::from_secret(&okm) {
            return Ok((okm, key));
        }
    }
    Err(WalletError)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn k3_counting() -> MasterSecret {
        MasterSecret::from_bytes(core::array::from_fn(|i| i as u8))
    }

    #[test]
    fn managed_wallet_vector() {
        let omni = Omni::from_bytes([0xab; 32]);
        let (secret, key) = wallet_secret(&k3_counting(), &omni).expect("derives");
        assert_eq!(
            hex::encode(*secret),
            "751e0a5d7777363300ccfe7e001390a47ebbc3bb4cca5c30523ea77512cdb56c"
        );
        assert_eq!(
            key.address().to_string(),
            "0x384099f86f48b052da6535d608315dee069642f7"
        );
    }

    #[test]
    fn checksum_address_matches_eip55() {
        // The EIP-55 test vector.
        let a: Address = "0x5aaeb6053f3e94c9b9a09f33669435e7ef1beaed"
            .parse()
            .expect("valid");
        assert_eq!(
            a.to_checksum(),
            "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed"
        );
        assert!("0x12".parse::<Address>().is_err());
        assert!(format!("0x{}", "g".repeat(40)).parse::<Address>().is_err());
    }

    #[test]
    fn wallet_key_debug_shows_only_the_address() {
        let key = derive_wallet(&k3_counting(), &Omni::from_bytes([0xab; 32])).expect("derives");
        let shown = format!("{key:?}");
        assert!(
            shown.starts_with("WalletKey { address: Address(0x384099f8"),
            "{shown}"
        );
        assert!(!shown.contains("751e0a5d"));
    }
}
