//! Secret types: zeroized on drop, printed as their type name only, never serialized.

use std::fmt;

use hkdf::Hkdf;
use sha2::Sha256;
use subtle::ConstantTimeEq;
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

use super::labels;

/// K3, the 32-byte master secret every wallet and sr25519 key derives from.
#[derive(Zeroize, ZeroizeOnDrop)]
pub struct MasterSecret([u8; 32]);

/// Why a K3 value is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SecretError {
    /// Not 64 hex characters.
    #[error("a K3 file holds exactly 64 hex characters (32 bytes); found {0} characters")]
    Length(usize),
    /// A character outside `0-9a-fA-F`.
    #[error("a K3 file holds only hex characters")]
    NotHex,
}

impl MasterSecret {
    /// Wraps raw bytes (the caller's copy should be zeroized).
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    /// Parses the file form: 64 hex characters, surrounding whitespace ignored.
    pub fn from_hex(text: &str) -> Result<Self, SecretError> {
        let text = text.trim();
        let bare = text.strip_prefix("0x").unwrap_or(text);
        if bare.len() != 64 {
            return Err(SecretError::Length(bare.len()));
        }
        let mut out = [0u8; 32];
        hex::decode_to_slice(bare, &mut out).map_err(|_| SecretError::NotHex)?;
        Ok(Self(out))
    }

    /// `HKDF-SHA256(K3, salt, master ‖ version bytes)`, 32 bytes: a per-master key nothing
    /// stores.
    fn per_master(
        &self,
        salt: &[u8],
        master: &agentkeys_runtime::Omni,
        version: &[u8],
    ) -> Zeroizing<[u8; 32]> {
        let mut info = Zeroizing::new(Vec::with_capacity(32 + version.len()));
        info.extend_from_slice(master.as_bytes());
        info.extend_from_slice(version);
        let mut out = Zeroizing::new([0u8; 32]);
        // 32 bytes is always a valid HKDF-SHA256 output length.
        let _ = Hkdf::<Sha256>::new(Some(salt), &self.0).expand(&info, out.as_mut());
        out
    }

    /// The HMAC key of `master`'s approval webhook, version `version` (a new version per
    /// `PUT /v1/approvals/webhook`, so setting it again rotates the key). Nothing is stored.
    pub(crate) fn webhook_key(
        &self,
        master: &agentkeys_runtime::Omni,
        version: u64,
    ) -> Zeroizing<[u8; 32]> {
        self.per_master(labels::WEBHOOK_SALT, master, &version.to_be_bytes())
    }

    /// The key-encryption key of `master`'s vault at `kek_version` (data keys are wrapped by it;
    /// nothing is stored).
    pub(crate) fn vault_kek(
        &self,
        master: &agentkeys_runtime::Omni,
        kek_version: u32,
    ) -> Zeroizing<[u8; 32]> {
        self.per_master(labels::VAULT_KEK_SALT, master, &kek_version.to_be_bytes())
    }

    /// The key that wraps the P-256 signing keys kept in a shared store (PostgreSQL): every
    /// node with this K3 unwraps them; nothing stores it.
    pub(crate) fn signing_key_kek(&self) -> Zeroizing<[u8; 32]> {
        self.deployment_key(labels::SIGNING_KEY_KEK_SALT)
    }

    /// The `DPoP-Nonce` key of a deployment whose nodes share a store: the same on every node
    /// with this K3; nothing stores it, and it cannot be turned back into K3.
    pub(crate) fn dpop_nonce_key(&self) -> Zeroizing<[u8; 32]> {
        self.deployment_key(labels::DPOP_NONCE_SALT)
    }

    /// The key that seals logins in progress (their PKCE verifiers, confirm codes) in a
    /// shared store; the same on every node with this K3.
    pub(crate) fn pending_key(&self) -> Zeroizing<[u8; 32]> {
        self.deployment_key(labels::PENDING_SALT)
    }

    /// `HKDF-SHA256(K3, salt)`, 32 bytes, no info.
    fn deployment_key(&self, salt: &[u8]) -> Zeroizing<[u8; 32]> {
        let mut out = Zeroizing::new([0u8; 32]);
        // 32 bytes is always a valid HKDF-SHA256 output length.
        let _ = Hkdf::<Sha256>::new(Some(salt), &self.0).expand(&[], out.as_mut());
        out
    }

    /// The file form (64 lowercase hex characters), in a zeroizing string.
    pub(crate) fn to_hex(&self) -> Zeroizing<String> {
        Zeroizing::new(hex::encode(self.0))
    }

    /// A fresh random K3 from the operating system.
    pub fn generate() -> Self {
        let mut bytes = [0u8; 32];
        aws_lc_rs::rand::fill(&mut bytes).unwrap_or_else(|_| {
            // The OS random source failing is not recoverable for a key broker.
            panic!("the system random generator failed")
        });
        Self(bytes)
    }

    pub(crate) fn expose(&self) -> &[u8; 32] {
        &self.0
    }

    /// `HKDF-SHA256(ikm=K3, salt="agentkeys-k3-fingerprint-v1", info="", L=16)`: identifies a
    /// K3 without revealing it; recorded in the store when it is created.
    pub fn fingerprint(&self) -> Fingerprint {
        let mut out = [0u8; 16];
        Hkdf::<Sha256>::new(Some(labels::K3_FINGERPRINT_SALT), &self.0)
            .expand(&[], &mut out)
            .unwrap_or_else(|_| unreachable!("16 bytes is a valid HKDF-SHA256 length"));
        Fingerprint(out)
    }
}

impl fmt::Debug for MasterSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MasterSecret").finish_non_exhaustive()
    }
}

/// The public fingerprint of a K3 (16 bytes).
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Fingerprint(pub [u8; 16]);

impl Fingerprint {
    /// Constant-time comparison.
    pub fn matches(&self, other: &Fingerprint) -> bool {
        self.0.ct_eq(&other.0).into()
    }
}

impl fmt::Display for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl fmt::Debug for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Fingerprint({self})")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn per_master_keys_are_hkdf_of_master_and_version() {
        let k3 = MasterSecret::from_bytes([0x11; 32]);
        let master = agentkeys_runtime::Omni::from_bytes([0x22; 32]);
        let expand = |salt: &[u8], info: &[u8]| {
            let mut out = [0u8; 32];
            Hkdf::<Sha256>::new(Some(salt), &[0x11; 32])
                .expand(info, &mut out)
                .expect("32 bytes");
            out
        };
        let mut info = [0x22u8; 36].to_vec();
        info[32..].copy_from_slice(&1u32.to_be_bytes());
        assert_eq!(
            *k3.vault_kek(&master, 1),
            expand(b"agentkeys-vault-kek-v1", &info)
        );
        let mut info = [0x22u8; 40].to_vec();
        info[32..].copy_from_slice(&7u64.to_be_bytes());
        assert_eq!(
            *k3.webhook_key(&master, 7),
            expand(b"agentkeys-approval-webhook-v1", &info)
        );
        assert_ne!(*k3.vault_kek(&master, 1), *k3.vault_kek(&master, 2));
    }

    #[test]
    fn debug_is_redacted() {
        let k3 = MasterSecret::from_bytes([0x5a; 32]);
        let shown = format!("{k3:?}");
        assert_eq!(shown, "MasterSecret { .. }");
        assert!(!shown.contains("5a"));
    }

    #[test]
    fn parses_the_file_form_and_refuses_bad_input() {
        let hex64 = "00".repeat(31) + "ff";
        let k3 = MasterSecret::from_hex(&format!("{hex64}\n")).expect("valid");
        assert_eq!(k3.expose()[31], 0xff);
        assert_eq!(k3.to_hex().as_str(), hex64);
        assert_eq!(
            MasterSecret::from_hex("abcd").err(),
            Some(SecretError::Length(4))
        );
        assert_eq!(
            MasterSecret::from_hex(&"zz".repeat(32)).err(),
            Some(SecretError::NotHex)
        );
    }

    #[test]
    fn fingerprint_is_stable_and_distinguishes_keys() {
        let a = MasterSecret::from_bytes(core::array::from_fn(|i| i as u8));
        let b = MasterSecret::from_bytes([7; 32]);
        assert!(a.fingerprint().matches(&a.fingerprint()));
        assert!(!a.fingerprint().matches(&b.fingerprint()));
        assert_eq!(a.fingerprint().to_string().len(), 32);
    }
}
