//! Key files under `<data>/keys/`: K3 (`k3.key`, 64 hex), and P-256 keys for sessions (K1),
//! OIDC (K2) and the audit chain, as PKCS#8 DER files named after their `kid`. Every file is
//! written 0600 and checked on load (the resolved file must not be readable by group or
//! others). A `kid` is looked up in memory, never used to build a path.

use std::fmt;
use std::fs;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use super::error::SignerError;
use crate::crypto::secret::MasterSecret;

/// A P-256 signing key (ES256). The key lives in aws-lc (freed with cleansing); the PKCS#8
/// bytes we read are zeroized; nothing is printed.
pub struct P256Key {
    pair: EcdsaKeyPair,
    kid: String,
}

impl fmt::Debug for P256Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("P256Key")
            .field("kid", &self.kid)
            .finish_non_exhaustive()
    }
}

impl P256Key {
    fn from_pkcs8(der: &[u8]) -> Result<Self, SignerError> {
        let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, der)
            .map_err(|_| SignerError::KeyFile("not a P-256 PKCS#8 key".into()))?;
        let kid = thumbprint(&pair);
        Ok(Self { pair, kid })
    }

    /// The key id: the RFC 7638 thumbprint of the public JWK.
    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// The public JWK (`kty`, `crv`, `x`, `y`, `kid`, `alg`, `use`).
    pub fn public_jwk(&self) -> Value {
        let (x, y) = coordinates(&self.pair);
        json!({"kty": "EC", "crv": "P-256", "x": x, "y": y, "kid": self.kid, "alg": "ES256", "use": "sig"})
    }

    /// ES256 over `message`: 64 bytes `r || s`.
    pub fn sign(&self, message: &[u8]) -> Result<Vec<u8>, SignerError> {
        self.pair
            .sign(&SystemRandom::new(), message)
            .map(|s| s.as_ref().to_vec())
            .map_err(|_| SignerError::Internal("ES256 signing failed"))
    }

    /// A compact JWS (`header.claims.signature`) with `alg: ES256` and this key's `kid` added
    /// to `header`.
    pub fn sign_jwt(&self, mut header: Value, claims: &Value) -> Result<String, SignerError> {
        header["alg"] = json!("ES256");
        header["kid"] = json!(self.kid);
        let mut token = String::with_capacity(512);
        token.push_str(&URL_SAFE_NO_PAD.encode(header.to_string()));
        token.push('.');
        token.push_str(&URL_SAFE_NO_PAD.encode(claims.to_string()));
        let sig = self.sign(token.as_bytes())?;
        token.push('.');
        token.push_str(&URL_SAFE_NO_PAD.encode(sig));
        Ok(token)
    }
}

fn coordinates(pair: &EcdsaKeyPair) -> (String, String) {
    // Uncompressed SEC1 point: 0x04 || X || Y.
    let point = pair.public_key().as_ref();
    (
        URL_SAFE_NO_PAD.encode(&point[1..33]),
        URL_SAFE_NO_PAD.encode(&point[33..65]),
    )
}

/// RFC 7638 thumbprint of an EC public key: SHA-256 of `{"crv","kty","x","y"}` in that order.
fn thumbprint(pair: &EcdsaKeyPair) -> String {
    let (x, y) = coordinates(pair);
    let canonical = format!(r#"{{"crv":"P-256","kty":"EC","x":"{x}","y":"{y}"}}"#);
    URL_SAFE_NO_PAD.encode(Sha256::digest(canonical.as_bytes()))
}

/// The keys of `set` among those a shared store holds, newest first, unwrapped with `k3` — the
/// stored counterpart of [`load_set`], for offline tools and tests.
pub fn load_stored_set(
    k3: &MasterSecret,
    stored: &[StoredKey],
    set: super::KeySetName,
) -> Result<Vec<P256Key>, SignerError> {
    unwrap_set(&k3.signing_key_kek(), stored, set)
}

/// The keys of `set` among `stored`, newest first, unwrapped with `kek`.
pub(crate) fn unwrap_set(
    kek: &[u8; 32],
    stored: &[StoredKey],
    set: super::KeySetName,
) -> Result<Vec<P256Key>, SignerError> {
    let mut mine: Vec<&StoredKey> = stored.iter().filter(|k| k.set == set).collect();
    mine.sort_by_key(|k| std::cmp::Reverse(k.created_ms));
    mine.into_iter().map(|k| k.unwrap(kek)).collect()
}

/// Generates a P-256 key; answers it with its PKCS#8 form (zeroized when dropped).
pub(crate) fn generate_key() -> Result<(P256Key, Zeroizing<Vec<u8>>), SignerError> {
    let der = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &SystemRandom::new())
        .map_err(|_| SignerError::Internal("P-256 key generation failed"))?;
    let der = Zeroizing::new(der.as_ref().to_vec());
    Ok((P256Key::from_pkcs8(&der)?, der))
}

/// Generates a P-256 key and writes it to `dir` (0600, named by a hash of its kid).
pub(crate) fn create_key(dir: &Path) -> Result<P256Key, SignerError> {
    let (key, der) = generate_key()?;
    write_secret(&key_path(dir, key.kid()), &der)?;
    Ok(key)
}

/// A P-256 signing key as a shared store keeps it: wrapped (AES-256-GCM) under a key HKDF
/// derives from K3, with the set and kid as associated data, so a row moved to another set or
/// kid does not unwrap. Only the signer wraps and unwraps.
#[derive(Clone, PartialEq, Eq)]
pub struct StoredKey {
    /// The set it belongs to.
    pub set: super::KeySetName,
    /// Its kid.
    pub kid: String,
    /// When it was created (ms): a set's keys are ordered newest first.
    pub created_ms: u64,
    /// `nonce ‖ ciphertext ‖ tag` of its PKCS#8 form.
    pub wrapped: Vec<u8>,
}

impl fmt::Debug for StoredKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StoredKey")
            .field("set", &self.set)
            .field("kid", &self.kid)
            .finish_non_exhaustive()
    }
}

impl StoredKey {
    /// The stored value: `created_ms (u64 BE) ‖ wrapped`.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = self.created_ms.to_be_bytes().to_vec();
        out.extend_from_slice(&self.wrapped);
        out
    }

    /// The inverse of [`StoredKey::encode`], for the key `kid` of `set`.
    pub fn decode(set: super::KeySetName, kid: &str, value: &[u8]) -> Option<Self> {
        let (created, wrapped) = value.split_first_chunk::<8>()?;
        Some(Self {
            set,
            kid: kid.to_string(),
            created_ms: u64::from_be_bytes(*created),
            wrapped: wrapped.to_vec(),
        })
    }

    fn aad(set: super::KeySetName, kid: &str) -> Vec<u8> {
        let mut aad = crate::crypto::labels::SIGNING_KEY_AAD.to_vec();
        aad.extend_from_slice(set.dir_name().as_bytes());
        aad.push(b'/');
        aad.extend_from_slice(kid.as_bytes());
        aad
    }

    /// Wraps a new key of `set`.
    pub(crate) fn wrap(
        kek: &[u8; 32],
        set: super::KeySetName,
        key: &P256Key,
        der: &[u8],
        created_ms: u64,
    ) -> Result<Self, SignerError> {
        let wrapped = crate::crypto::vault::seal(kek, &Self::aad(set, key.kid()), der)
            .map_err(|_| SignerError::Internal("wrapping a signing key failed"))?;
        Ok(Self {
            set,
            kid: key.kid().to_string(),
            created_ms,
            wrapped,
        })
    }

    /// Unwraps the key; refuses one whose kid is not the key's own.
    pub(crate) fn unwrap(&self, kek: &[u8; 32]) -> Result<P256Key, SignerError> {
        let der = crate::crypto::vault::open(kek, &Self::aad(self.set, &self.kid), &self.wrapped)
            .map_err(|_| {
            SignerError::KeyFile(format!(
                "the stored key {} does not unwrap with this K3",
                self.kid
            ))
        })?;
        let key = P256Key::from_pkcs8(&der)?;
        if key.kid() != self.kid {
            return Err(SignerError::KeyFile(format!(
                "the stored key {} holds another key",
                self.kid
            )));
        }
        Ok(key)
    }
}

/// Where the key `kid` of the set in `dir` lives.
pub(crate) fn key_path(dir: &Path, kid: &str) -> PathBuf {
    dir.join(format!(
        "{}.pk8",
        hex::encode(Sha256::digest(kid.as_bytes()))
    ))
}

/// Moves the key `kid` out of the set in `dir` into `dir/retired/` (kept, never loaded again).
pub(crate) fn retire_key_file(dir: &Path, kid: &str) -> Result<(), SignerError> {
    let from = key_path(dir, kid);
    let retired = dir.join("retired");
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&retired)
        .map_err(|e| SignerError::KeyFile(format!("{}: {e}", retired.display())))?;
    let to = retired.join(from.file_name().unwrap_or_default());
    fs::rename(&from, &to)
        .map_err(|e| SignerError::KeyFile(format!("cannot retire {}: {e}", from.display())))
}

/// Verifies an ES256 signature (`r || s`, 64 bytes) with a public P-256 JWK.
pub fn verify_es256(jwk: &Value, message: &[u8], signature: &[u8]) -> bool {
    let coordinate = |name: &str| {
        jwk.get(name)
            .and_then(Value::as_str)
            .and_then(|s| URL_SAFE_NO_PAD.decode(s).ok())
            .filter(|b| b.len() == 32)
    };
    let (Some(x), Some(y)) = (coordinate("x"), coordinate("y")) else {
        return false;
    };
    if jwk.get("crv").and_then(Value::as_str) != Some("P-256") {
        return false;
    }
    let point = [[4u8].as_slice(), &x, &y].concat();
    aws_lc_rs::signature::UnparsedPublicKey::new(
        &aws_lc_rs::signature::ECDSA_P256_SHA256_FIXED,
        point,
    )
    .verify(message, signature)
    .is_ok()
}

/// The keys of the set stored in `dir`, newest first; creates nothing. For offline tools
/// on the host (`agentkeys audit verify`) and tests; the server reads keys only in the signer.
pub fn load_set(dir: &Path) -> Result<Vec<P256Key>, SignerError> {
    load_or_create_set(dir, false)
}

/// Refuses a secret file that group or others may read, naming the fix.
pub(crate) fn check_permissions(path: &Path) -> Result<(), SignerError> {
    let resolved = fs::canonicalize(path)
        .map_err(|e| SignerError::KeyFile(format!("{}: {e}", path.display())))?;
    let mode = fs::metadata(&resolved)
        .map_err(|e| SignerError::KeyFile(format!("{}: {e}", resolved.display())))?
        .permissions()
        .mode();
    if mode & 0o077 != 0 {
        return Err(SignerError::KeyFile(format!(
            "{} is readable by group or others (mode {:o}); run: chmod 600 {}",
            resolved.display(),
            mode & 0o777,
            resolved.display()
        )));
    }
    Ok(())
}

/// Writes a new secret file with mode 0600; refuses to overwrite.
pub(crate) fn write_secret(path: &Path, bytes: &[u8]) -> Result<(), SignerError> {
    if let Some(dir) = path.parent() {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|e| SignerError::KeyFile(format!("{}: {e}", dir.display())))?;
    }
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| SignerError::KeyFile(format!("cannot create {}: {e}", path.display())))?;
    file.write_all(bytes)
        .and_then(|()| file.sync_all())
        .map_err(|e| SignerError::KeyFile(format!("cannot write {}: {e}", path.display())))
}

/// Reads K3 from its file after the permission check.
pub fn load_k3(path: &Path) -> Result<MasterSecret, SignerError> {
    check_permissions(path)?;
    let text = Zeroizing::new(
        fs::read_to_string(path)
            .map_err(|e| SignerError::KeyFile(format!("{}: {e}", path.display())))?,
    );
    MasterSecret::from_hex(&text)
        .map_err(|e| SignerError::KeyFile(format!("{}: {e}", path.display())))
}

/// Creates a new K3 file (refuses if one exists). Returns the secret.
pub fn create_k3(path: &Path) -> Result<MasterSecret, SignerError> {
    let k3 = MasterSecret::generate();
    let mut text = k3.to_hex();
    text.push('\n');
    write_secret(path, text.as_bytes())?;
    Ok(k3)
}

/// K3 for a server: the file if it exists; otherwise a new one only in dev mode and only for
/// a new store (a new K3 for an existing store would silently change every wallet). Returns
/// the secret and whether it was just generated.
pub fn obtain_k3(
    path: &Path,
    dev_mode: bool,
    store_exists: bool,
) -> Result<(MasterSecret, bool), SignerError> {
    if path.exists() {
        return load_k3(path).map(|k3| (k3, false));
    }
    if dev_mode && !store_exists {
        return create_k3(path).map(|k3| (k3, true));
    }
    Err(SignerError::MissingK3(path.display().to_string()))
}

/// The key files of one key set (`session`, `oidc`, `audit`): loads every `*.pk8` in its
/// directory, creating one key when there is none and `create` is set. Returns the keys,
/// newest file first.
pub(crate) fn load_or_create_set(dir: &Path, create: bool) -> Result<Vec<P256Key>, SignerError> {
    let files = read_set_files(dir)?;
    if files.is_empty() && create {
        return Ok(vec![create_key(dir)?]);
    }
    files
        .iter()
        .map(|(_, der)| P256Key::from_pkcs8(der))
        .collect()
}

/// A key file's modification time and PKCS#8 bytes.
type KeyFile = (std::time::SystemTime, Zeroizing<Vec<u8>>);

/// The PKCS#8 key files of the set in `dir` (each checked to be private), newest first, with
/// their modification times; none when the directory does not exist.
fn read_set_files(dir: &Path) -> Result<Vec<KeyFile>, SignerError> {
    let mut files: Vec<(std::time::SystemTime, PathBuf)> = match fs::read_dir(dir) {
        Ok(entries) => entries
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == "pk8"))
            .map(|p| {
                (
                    fs::metadata(&p)
                        .and_then(|m| m.modified())
                        .unwrap_or(std::time::UNIX_EPOCH),
                    p,
                )
            })
            .collect(),
        Err(_) => Vec::new(),
    };
    files.sort_by_key(|(modified, _)| std::cmp::Reverse(*modified));
    files
        .into_iter()
        .map(|(modified, path)| {
            check_permissions(&path)?;
            let der = Zeroizing::new(
                fs::read(&path)
                    .map_err(|e| SignerError::KeyFile(format!("{}: {e}", path.display())))?,
            );
            Ok((modified, der))
        })
        .collect()
}

/// The key sets kept as files under `keys_dir` (`session/`, `oidc/`, `audit/`; retired keys
/// left out), wrapped for a shared store with `k3` — what `agentkeys admin migrate` copies.
pub fn stored_from_files(
    k3: &MasterSecret,
    keys_dir: &Path,
) -> Result<Vec<StoredKey>, SignerError> {
    let kek = k3.signing_key_kek();
    let mut out = Vec::new();
    for set in super::KeySetName::ALL {
        for (modified, der) in read_set_files(&keys_dir.join(set.dir_name()))? {
            let key = P256Key::from_pkcs8(&der)?;
            let created_ms = modified
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
            out.push(StoredKey::wrap(&kek, set, &key, &der, created_ms)?);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn p256_keys_print_only_their_kid_and_files_are_0600() {
        let dir = tempfile::tempdir().expect("tempdir");
        let keys = load_or_create_set(&dir.path().join("session"), true).expect("created");
        assert_eq!(keys.len(), 1);
        let shown = format!("{:?}", keys[0]);
        assert_eq!(shown, format!("P256Key {{ kid: {:?}, .. }}", keys[0].kid()));
        let jwk = keys[0].public_jwk();
        assert!(jwk.get("d").is_none());
        let file = fs::read_dir(dir.path().join("session"))
            .expect("dir")
            .next()
            .expect("one file")
            .expect("entry");
        assert_eq!(
            file.metadata().expect("meta").permissions().mode() & 0o777,
            0o600
        );
        // Loading again finds the same key, by content (the kid is not a path).
        let again = load_or_create_set(&dir.path().join("session"), true).expect("loaded");
        assert_eq!(again[0].kid(), keys[0].kid());
        // A group-readable key file is refused with the fix.
        fs::set_permissions(file.path(), fs::Permissions::from_mode(0o640)).expect("chmod");
        let err = load_or_create_set(&dir.path().join("session"), true).expect_err("refused");
        assert!(err.to_string().contains("chmod 600"), "{err}");
    }

    #[test]
    fn stored_keys_unwrap_only_with_the_same_k3_set_and_kid_and_never_print_their_bytes() {
        use crate::signer::KeySetName;
        let k3 = MasterSecret::from_hex(&"11".repeat(32)).expect("k3");
        let other = MasterSecret::from_hex(&"22".repeat(32)).expect("k3");
        let (key, der) = generate_key().expect("key");
        let stored =
            StoredKey::wrap(&k3.signing_key_kek(), KeySetName::Oidc, &key, &der, 7).expect("wrap");
        assert!(
            !stored
                .wrapped
                .windows(der.len())
                .any(|w| w == der.as_slice())
        );
        let shown = format!("{stored:?}");
        assert!(
            !shown.contains("wrapped") && shown.contains(key.kid()),
            "{shown}"
        );
        let decoded =
            StoredKey::decode(KeySetName::Oidc, key.kid(), &stored.encode()).expect("decode");
        assert_eq!(decoded, stored);
        let loaded = load_stored_set(&k3, std::slice::from_ref(&decoded), KeySetName::Oidc)
            .expect("unwraps");
        assert_eq!(loaded[0].kid(), key.kid());
        assert!(
            load_stored_set(&k3, std::slice::from_ref(&decoded), KeySetName::Session)
                .expect("none")
                .is_empty()
        );
        // Another K3, another set or another kid: the row does not unwrap.
        assert!(load_stored_set(&other, std::slice::from_ref(&decoded), KeySetName::Oidc).is_err());
        let moved = StoredKey {
            set: KeySetName::Session,
            ..decoded.clone()
        };
        assert!(load_stored_set(&k3, &[moved], KeySetName::Session).is_err());
        let renamed = StoredKey {
            kid: "someone-else".into(),
            ..decoded
        };
        assert!(load_stored_set(&k3, &[renamed], KeySetName::Oidc).is_err());
    }
}
