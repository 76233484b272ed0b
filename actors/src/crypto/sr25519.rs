//! sr25519 accounts (schnorrkel), compatible with Substrate tools: a master's root mini secret
//! from K3, hard junctions encoded as sp-core's `DeriveJunction::from(&str)`, SS58 addresses,
//! and signatures in the `substrate` context.

use std::fmt;

use agentkeys_runtime::Omni;
use blake2::digest::consts::{U32, U64};
use blake2::{Blake2b, Digest};
use hkdf::Hkdf;
use schnorrkel::derive::ChainCode;
use schnorrkel::{ExpansionMode, Keypair, MiniSecretKey, PublicKey, Signature};
use sha2::Sha256;
use zeroize::Zeroizing;

use super::labels;
use super::omni::{OmniError, validate_label};
use super::secret::MasterSecret;

/// An sr25519 key pair. Zeroized on drop (schnorrkel), never printed.
pub struct SrKey(Keypair);

impl fmt::Debug for SrKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SrKey")
            .field("public", &hex::encode(self.public()))
            .finish_non_exhaustive()
    }
}

impl SrKey {
    /// The 32-byte public key.
    pub fn public(&self) -> [u8; 32] {
        self.0.public.to_bytes()
    }

    /// Signs `message` in the Substrate context (64 bytes).
    pub fn sign(&self, message: &[u8]) -> [u8; 64] {
        self.0
            .sign_simple(labels::SUBSTRATE_CONTEXT, message)
            .to_bytes()
    }
}

/// Verifies a Substrate-context sr25519 signature.
pub fn verify(public: &[u8; 32], message: &[u8], signature: &[u8; 64]) -> bool {
    let (Ok(public), Ok(signature)) = (
        PublicKey::from_bytes(public),
        Signature::from_bytes(signature),
    ) else {
        return false;
    };
    public
        .verify_simple(labels::SUBSTRATE_CONTEXT, message, &signature)
        .is_ok()
}

/// The root mini secret of a master:
/// `HKDF-SHA256(ikm=K3, salt="agentkeys-sr25519-v1", info=master omni, L=32)`. Whoever holds K3
/// can compute it; no command prints it.
pub(crate) fn root_seed(k3: &MasterSecret, master: &Omni) -> Zeroizing<[u8; 32]> {
    let mut out = Zeroizing::new([0u8; 32]);
    Hkdf::<Sha256>::new(Some(labels::SR25519_ROOT_SALT), k3.expose())
        .expand(master.as_bytes(), out.as_mut())
        .unwrap_or_else(|_| unreachable!("32 bytes is a valid HKDF-SHA256 length"));
    out
}

/// The chain code of a hard junction, as sp-core's `DeriveJunction::from(&str)`: a label that
/// parses as `u64` is its SCALE (little-endian) encoding, any other its SCALE string encoding;
/// zero-padded to 32 bytes, or blake2b-256 of the encoding when longer.
pub fn junction_chain_code(label: &str) -> [u8; 32] {
    let encoded = match label.parse::<u64>() {
        Ok(n) => n.to_le_bytes().to_vec(),
        Err(_) => {
            let mut e = compact_len(label.len());
            e.extend_from_slice(label.as_bytes());
            e
        }
    };
    let mut cc = [0u8; 32];
    if encoded.len() > 32 {
        cc.copy_from_slice(&Blake2b::<U32>::digest(&encoded));
    } else {
        cc[..encoded.len()].copy_from_slice(&encoded);
    }
    cc
}

/// SCALE compact encoding of a length.
fn compact_len(n: usize) -> Vec<u8> {
    match n {
        0..=0x3f => vec![(n as u8) << 2],
        0x40..=0x3fff => ((n as u16) << 2 | 0b01).to_le_bytes().to_vec(),
        0x4000..=0x3fff_ffff => ((n as u32) << 2 | 0b10).to_le_bytes().to_vec(),
        _ => {
            let bytes = (n as u64).to_le_bytes();
            let len = 8 - (n as u64).leading_zeros() as usize / 8;
            let mut out = vec![((len as u8 - 4) << 2) | 0b11];
            out.extend_from_slice(&bytes[..len]);
            out
        }
    }
}

/// Follows hard junctions from a mini secret seed (as `0x<seed>//a//b` in subkey).
fn derive_from_seed(seed: &[u8; 32], labels: &[&str]) -> SrKey {
    // A 32-byte slice is always a valid mini secret.
    let mut mini = MiniSecretKey::from_bytes(seed).unwrap_or_else(|_| unreachable!("32 bytes"));
    for label in labels {
        let cc = ChainCode(junction_chain_code(label));
        mini = mini
            .hard_derive_mini_secret_key(Some(cc), b"", ExpansionMode::Ed25519)
            .0;
    }
    SrKey(mini.expand_to_keypair(ExpansionMode::Ed25519))
}

/// The sr25519 key of the actor at `path` (`""` for the master, `//ops//bot-1` below it).
pub fn derive_actor(k3: &MasterSecret, master: &Omni, path: &str) -> Result<SrKey, OmniError> {
    let labels = path_labels(path)?;
    Ok(derive_from_seed(&root_seed(k3, master), &labels))
}

/// Splits and validates a path: `""` → none; `//a//b` → `["a", "b"]`.
pub fn path_labels(path: &str) -> Result<Vec<&str>, OmniError> {
    if path.is_empty() {
        return Ok(Vec::new());
    }
    let rest = path
        .strip_prefix(labels::HDKD_JUNCTION)
        .ok_or(OmniError::InvalidLabel)?;
    let parts: Vec<&str> = rest.split(labels::HDKD_JUNCTION).collect();
    for label in &parts {
        validate_label(label)?;
    }
    Ok(parts)
}

/// The SS58 prefix of generic Substrate, the one every account's address uses here.
pub const GENERIC_SUBSTRATE: u16 = 42;

/// The SS58 address of a public key for a network prefix ([`GENERIC_SUBSTRATE`] here).
pub fn ss58(public: &[u8; 32], prefix: u16) -> String {
    let mut data = match prefix {
        0..=63 => vec![prefix as u8],
        _ => {
            let p = prefix & 0x3fff;
            vec![
                (((p & 0b1111_1100) >> 2) as u8) | 0b0100_0000,
                ((p >> 8) as u8) | (((p & 0b11) as u8) << 6),
            ]
        }
    };
    data.extend_from_slice(public);
    let mut hasher = Blake2b::<U64>::new();
    hasher.update(labels::SS58_CHECKSUM_PREFIX);
    hasher.update(&data);
    let checksum = hasher.finalize();
    data.extend_from_slice(&checksum[..2]);
    bs58::encode(data).into_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEV_SEED: &str = "fac7959dbfe72f052e5a0c3c8d6530f202b02fd8f9f5ca3580ec8deb7797479e";

    fn dev_seed() -> [u8; 32] {
        let mut seed = [0u8; 32];
        hex::decode_to_slice(DEV_SEED, &mut seed).expect("hex");
        seed
    }

    #[test]
    fn alice_and_bob_from_the_dev_seed() {
        let alice = derive_from_seed(&dev_seed(), &["Alice"]);
        assert_eq!(
            hex::encode(alice.public()),
            "d43593c715fdd31c61141abd04a99fd6822c8558854ccde39a5684e7a56da27d"
        );
        assert_eq!(
            ss58(&alice.public(), 42),
            "5GrwvaEF5zXb26Fz9rcQpDWS57CtERHpNehXCPcNoHGKutQY"
        );
        let bob = derive_from_seed(&dev_seed(), &["Bob"]);
        assert_eq!(
            hex::encode(bob.public()),
            "8eaf04151687736326c9fea17e25fc5287613693c912909cb226aa4794f26a48"
        );
    }

    #[test]
    fn junction_encodings() {
        // Numeric label: SCALE u64.
        let mut n42 = [0u8; 32];
        n42[0] = 42;
        assert_eq!(junction_chain_code("42"), n42);
        // Short string: compact length then bytes, zero-padded.
        let mut alice = [0u8; 32];
        alice[0] = 0x14;
        alice[1..6].copy_from_slice(b"Alice");
        assert_eq!(junction_chain_code("Alice"), alice);
        // 32 characters encode to 33 bytes: hashed.
        let long = "a".repeat(32);
        let mut enc = vec![128u8];
        enc.extend_from_slice(long.as_bytes());
        assert_eq!(
            junction_chain_code(&long).to_vec(),
            Blake2b::<U32>::digest(&enc).to_vec()
        );
        assert_eq!(compact_len(64), vec![0x01, 0x01]);
    }

    #[test]
    fn signatures_verify_and_tampering_fails() {
        let key = derive_from_seed(&dev_seed(), &["Alice"]);
        let sig = key.sign(b"remark");
        assert!(verify(&key.public(), b"remark", &sig));
        assert!(!verify(&key.public(), b"remark!", &sig));
        let mut bad = sig;
        bad[3] ^= 1;
        assert!(!verify(&key.public(), b"remark", &bad));
    }

    #[test]
    fn paths_are_validated() {
        assert_eq!(path_labels(""), Ok(vec![]));
        assert_eq!(path_labels("//ops//bot-1"), Ok(vec!["ops", "bot-1"]));
        assert!(path_labels("ops").is_err());
        assert!(path_labels("//0xabc").is_err());
        assert!(path_labels("//Bad").is_err());
    }

    #[test]
    fn debug_is_redacted() {
        let key = derive_from_seed(&dev_seed(), &["Alice"]);
        let shown = format!("{key:?}");
        assert!(shown.starts_with("SrKey { public: \"d43593c7"), "{shown}");
    }
}
