//! Envelope encryption of the credential vault (docs/credentials.md): AES-256-GCM (aws-lc-rs).
//!
//! A master's vault has one random 256-bit data key (DEK). It is stored only wrapped: encrypted
//! under a key-encryption key (KEK) that HKDF derives from K3 for that master and a KEK version
//! (`MasterSecret::vault_kek`), so a DEK can be re-wrapped under a new KEK version without K3
//! ever changing. Each credential value is encrypted under the DEK with an AAD that binds the
//! master, the service and the version, so a ciphertext moved to another master, service or
//! version does not decrypt. Both layers are `nonce (12) ‖ ciphertext ‖ tag (16)` with a random
//! nonce. All of this runs in the signer; data keys never leave it.

use agentkeys_runtime::Omni;
use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use zeroize::Zeroizing;

use super::labels;

/// Largest credential value.
pub const MAX_VALUE: usize = 64 * 1024;
/// The KEK version new data keys are wrapped under.
pub const CURRENT_KEK_VERSION: u32 = 1;
const TAG_LEN: usize = 16;

/// A data key as stored: the KEK version it is wrapped under and `nonce ‖ ct ‖ tag`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WrappedKey {
    /// The KEK version.
    pub kek_version: u32,
    /// The wrapped key.
    pub bytes: Vec<u8>,
}

impl WrappedKey {
    /// `u32 BE kek_version ‖ bytes`.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = self.kek_version.to_be_bytes().to_vec();
        out.extend_from_slice(&self.bytes);
        out
    }

    /// The inverse of [`WrappedKey::encode`].
    pub fn decode(bytes: &[u8]) -> Option<Self> {
        let (version, rest) = bytes.split_first_chunk::<4>()?;
        Some(Self {
            kek_version: u32::from_be_bytes(*version),
            bytes: rest.to_vec(),
        })
    }
}

/// Why a vault operation failed (no detail that could help an attacker).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum VaultError {
    /// Authentication failed: tampered ciphertext, wrong AAD, wrong key.
    #[error("the vault record does not authenticate")]
    Tampered,
    /// The value is over [`MAX_VALUE`].
    #[error("a credential value is at most 64 KiB")]
    TooLarge,
    /// The random generator failed.
    #[error("random generator failure")]
    Random,
}

fn key(bytes: &[u8; 32]) -> LessSafeKey {
    // A 32-byte key is always valid for AES-256-GCM.
    LessSafeKey::new(UnboundKey::new(&AES_256_GCM, bytes).expect("a 32-byte AES-256 key"))
}

/// AES-256-GCM with a random nonce: `nonce ‖ ciphertext ‖ tag`.
pub fn seal(key_bytes: &[u8; 32], aad: &[u8], plaintext: &[u8]) -> Result<Vec<u8>, VaultError> {
    let mut nonce = [0u8; NONCE_LEN];
    aws_lc_rs::rand::fill(&mut nonce).map_err(|_| VaultError::Random)?;
    let mut out = Vec::with_capacity(NONCE_LEN + plaintext.len() + TAG_LEN);
    out.extend_from_slice(&nonce);
    let mut body = plaintext.to_vec();
    key(key_bytes)
        .seal_in_place_append_tag(
            Nonce::assume_unique_for_key(nonce),
            Aad::from(aad),
            &mut body,
        )
        .map_err(|_| VaultError::Random)?;
    out.extend_from_slice(&body);
    Ok(out)
}

/// The inverse of [`seal`].
pub fn open(
    key_bytes: &[u8; 32],
    aad: &[u8],
    sealed: &[u8],
) -> Result<Zeroizing<Vec<u8>>, VaultError> {
    let (nonce, body) = sealed
        .split_first_chunk::<NONCE_LEN>()
        .ok_or(VaultError::Tampered)?;
    if body.len() < TAG_LEN {
        return Err(VaultError::Tampered);
    }
    let mut buffer = Zeroizing::new(body.to_vec());
    let plain_len = key(key_bytes)
        .open_in_place(
            Nonce::assume_unique_for_key(*nonce),
            Aad::from(aad),
            &mut buffer,
        )
        .map_err(|_| VaultError::Tampered)?
        .len();
    buffer.truncate(plain_len);
    Ok(buffer)
}

fn dek_aad(master: &Omni, kek_version: u32) -> Vec<u8> {
    let mut aad = labels::VAULT_DEK_AAD.to_vec();
    aad.extend_from_slice(master.as_bytes());
    aad.extend_from_slice(&kek_version.to_be_bytes());
    aad
}

/// The AAD of a credential value: master, service and version.
pub fn value_aad(master: &Omni, service: &str, version: u64) -> Vec<u8> {
    let mut aad = labels::VAULT_VALUE_AAD.to_vec();
    aad.extend_from_slice(master.as_bytes());
    // Services are at most 64 bytes (checked by the caller); the length keeps the layout
    // unambiguous anyway.
    aad.push(u8::try_from(service.len()).unwrap_or(u8::MAX));
    aad.extend_from_slice(service.as_bytes());
    aad.extend_from_slice(&version.to_be_bytes());
    aad
}

/// A fresh data key for `master`, wrapped under `kek`.
pub fn new_data_key(
    kek: &[u8; 32],
    master: &Omni,
    kek_version: u32,
) -> Result<WrappedKey, VaultError> {
    let mut dek = Zeroizing::new([0u8; 32]);
    aws_lc_rs::rand::fill(dek.as_mut()).map_err(|_| VaultError::Random)?;
    Ok(WrappedKey {
        kek_version,
        bytes: seal(kek, &dek_aad(master, kek_version), dek.as_ref())?,
    })
}

/// Unwraps `master`'s data key.
pub fn unwrap_data_key(
    kek: &[u8; 32],
    master: &Omni,
    wrapped: &WrappedKey,
) -> Result<Zeroizing<[u8; 32]>, VaultError> {
    let plain = open(kek, &dek_aad(master, wrapped.kek_version), &wrapped.bytes)?;
    let mut dek = Zeroizing::new([0u8; 32]);
    if plain.len() != 32 {
        return Err(VaultError::Tampered);
    }
    dek.copy_from_slice(&plain);
    Ok(dek)
}

/// Encrypts a credential value under the data key.
pub fn seal_value(dek: &[u8; 32], aad: &[u8], value: &[u8]) -> Result<Vec<u8>, VaultError> {
    if value.len() > MAX_VALUE {
        return Err(VaultError::TooLarge);
    }
    seal(dek, aad, value)
}

/// Decrypts a credential value.
pub fn open_value(
    dek: &[u8; 32],
    aad: &[u8],
    sealed: &[u8],
) -> Result<Zeroizing<Vec<u8>>, VaultError> {
    open(dek, aad, sealed)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn omni(b: u8) -> Omni {
        Omni::from_bytes([b; 32])
    }

    #[test]
    fn values_round_trip_and_any_change_is_refused() {
        let kek = [7u8; 32];
        let wrapped = new_data_key(&kek, &omni(1), 1).expect("key");
        assert_eq!(WrappedKey::decode(&wrapped.encode()), Some(wrapped.clone()));
        let dek = unwrap_data_key(&kek, &omni(1), &wrapped).expect("unwrap");
        let aad = value_aad(&omni(1), "openai", 3);
        let sealed = seal_value(&dek, &aad, b"sk-secret").expect("seal");
        assert!(!sealed.windows(9).any(|w| w == b"sk-secret"));
        assert_eq!(
            open_value(&dek, &aad, &sealed).expect("open").as_slice(),
            b"sk-secret"
        );
        // Another master, service or version: the AAD differs.
        for other in [
            value_aad(&omni(2), "openai", 3),
            value_aad(&omni(1), "openai2", 3),
            value_aad(&omni(1), "openai", 4),
        ] {
            assert_eq!(open_value(&dek, &other, &sealed), Err(VaultError::Tampered));
        }
        // A flipped bit anywhere.
        for i in 0..sealed.len() {
            let mut bad = sealed.clone();
            bad[i] ^= 1;
            assert_eq!(
                open_value(&dek, &aad, &bad),
                Err(VaultError::Tampered),
                "byte {i}"
            );
        }
        assert_eq!(
            open_value(&dek, &aad, &sealed[..10]),
            Err(VaultError::Tampered)
        );
        // The data key is bound to its master and KEK version.
        assert!(unwrap_data_key(&kek, &omni(2), &wrapped).is_err());
        let mut moved = wrapped.clone();
        moved.kek_version = 2;
        assert!(unwrap_data_key(&kek, &omni(1), &moved).is_err());
        assert!(unwrap_data_key(&[8u8; 32], &omni(1), &wrapped).is_err());
        assert_eq!(
            seal_value(&dek, &aad, &vec![0u8; MAX_VALUE + 1]),
            Err(VaultError::TooLarge)
        );
    }
}
