//! EIP-191 `personal_sign` (version 0x45): 65-byte `r || s || v` signatures, low-s, `v` 27/28 on
//! output; verification accepts `v` in {0, 1, 27, 28}.

use k256::ecdsa::{RecoveryId, Signature as EcdsaSignature, VerifyingKey};

use super::labels;
use super::wallet::{Address, WalletKey, keccak256};

/// A recoverable secp256k1 signature: `r || s || v`.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Signature(pub [u8; 65]);

impl Signature {
    /// `0x` + 130 hex characters.
    pub fn to_hex(&self) -> String {
        format!("0x{}", hex::encode(self.0))
    }

    /// The recovery id (0 or 1) from `v`.
    pub fn recovery_id(&self) -> Result<u8, SignatureError> {
        match self.0[64] {
            v @ (0 | 1) => Ok(v),
            v @ (27 | 28) => Ok(v - 27),
            v => Err(SignatureError::BadV(v)),
        }
    }
}

impl std::fmt::Debug for Signature {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Signature({})", self.to_hex())
    }
}

/// Why a signature could not be checked.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    /// Not 65 bytes of hex.
    #[error("a signature is 65 bytes: 0x followed by 130 hex characters")]
    Malformed,
    /// `v` outside {0, 1, 27, 28}.
    #[error("signature v must be 0, 1, 27 or 28, got {0}")]
    BadV(u8),
    /// r or s is not a valid scalar, or no key recovers.
    #[error("the signature does not recover to a public key")]
    Unrecoverable,
}

impl std::str::FromStr for Signature {
    type Err = SignatureError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bare = s.strip_prefix("0x").unwrap_or(s);
        let mut out = [0u8; 65];
        if bare.len() != 130 {
            return Err(SignatureError::Malformed);
        }
        hex::decode_to_slice(bare, &mut out).map_err(|_| SignatureError::Malformed)?;
        Ok(Self(out))
    }
}

/// `keccak256("\x19Ethereum Signed Message:\n" || len(message) || message)`.
pub fn hash_message(message: &[u8]) -> [u8; 32] {
    let mut data = Vec::with_capacity(message.len() + 32);
    data.extend_from_slice(labels::EIP191_PREFIX.as_bytes());
    data.extend_from_slice(message.len().to_string().as_bytes());
    data.extend_from_slice(message);
    keccak256(&data)
}

/// Signs a 32-byte digest (RFC 6979, low-s); `v` is 27 or 28.
pub fn sign_hash(key: &WalletKey, digest: &[u8; 32]) -> Signature {
    let (sig, recid) = key.signing_key().sign_prehash_recoverable(digest);
    let mut out = [0u8; 65];
    out[..64].copy_from_slice(&sig.to_bytes());
    out[64] = 27 + recid.to_byte();
    Signature(out)
}

/// Signs a message the way `personal_sign` does.
pub fn sign_message(key: &WalletKey, message: &[u8]) -> Signature {
    sign_hash(key, &hash_message(message))
}

/// The address that produced `signature` over `digest`. High-s signatures are refused
/// (EIP-2), as Ethereum verifiers do.
pub fn recover(digest: &[u8; 32], signature: &Signature) -> Result<Address, SignatureError> {
    let recid =
        RecoveryId::from_byte(signature.recovery_id()?).ok_or(SignatureError::Unrecoverable)?;
    let sig = EcdsaSignature::from_slice(&signature.0[..64])
        .map_err(|_| SignatureError::Unrecoverable)?;
    if sig.normalize_s() != sig {
        return Err(SignatureError::Unrecoverable);
    }
    let key = VerifyingKey::recover_from_prehash(digest, &sig, recid)
        .map_err(|_| SignatureError::Unrecoverable)?;
    Ok(Address::of(&key))
}

/// Whether `signature` over `message` (personal_sign) was made by `address`.
pub fn verify_message(message: &[u8], signature: &Signature, address: &Address) -> bool {
    recover(&hash_message(message), signature).is_ok_and(|a| a == *address)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::secret::MasterSecret;
    use crate::crypto::wallet::derive_wallet;
    use agentkeys_runtime::Omni;

    fn key() -> WalletKey {
        let k3 = MasterSecret::from_bytes(core::array::from_fn(|i| i as u8));
        derive_wallet(&k3, &Omni::from_bytes([0xab; 32])).expect("derives")
    }

    #[test]
    fn hash_matches_the_known_personal_sign_digest() {
        // keccak256("\x19Ethereum Signed Message:\n11hello world"), as ethers.hashMessage.
        assert_eq!(
            hex::encode(hash_message(b"hello world")),
            "d9eba16ed0ecae432b71fe008c98cc872bb4cc214d3220a36f365326cf807d68"
        );
    }

    #[test]
    fn signs_low_s_with_v_27_28_and_recovers() {
        let key = key();
        for msg in [&b"hello"[..], b"", &[0u8, 159, 255]] {
            let sig = sign_message(&key, msg);
            assert!(matches!(sig.0[64], 27 | 28));
            // low-s: s <= n/2, so its top bit is clear for secp256k1 half-order 0x7fff…
            assert!(sig.0[32] < 0x80);
            assert!(verify_message(msg, &sig, &key.address()));
            let mut v01 = sig;
            v01.0[64] -= 27;
            assert!(
                verify_message(msg, &v01, &key.address()),
                "v in {{0,1}} accepted"
            );
        }
    }

    #[test]
    fn tampering_fails() {
        let key = key();
        let sig = sign_message(&key, b"pay 1");
        assert!(!verify_message(b"pay 2", &sig, &key.address()));
        let mut bad = sig;
        bad.0[10] ^= 1;
        assert!(!verify_message(b"pay 1", &bad, &key.address()));
        let mut bad_v = sig;
        bad_v.0[64] = 29;
        assert_eq!(
            recover(&hash_message(b"pay 1"), &bad_v),
            Err(SignatureError::BadV(29))
        );
        assert_eq!(
            "0x1234".parse::<Signature>(),
            Err(SignatureError::Malformed)
        );
        assert_eq!(
            format!("0x{}", "zz".repeat(65)).parse::<Signature>(),
            Err(SignatureError::Malformed)
        );
    }
}
