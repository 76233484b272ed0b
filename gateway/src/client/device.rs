//! The device key: a P-256 key born on the machine that uses it, stored in the profile
//! directory as `device.jwk` (a private JWK, 0600). It signs DPoP proofs; nothing else.

use std::fs;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};
use aws_lc_rs::encoding::AsBigEndian;
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

/// A device key; prints only its thumbprint.
pub struct DeviceKey {
    pair: EcdsaKeyPair,
}

impl std::fmt::Debug for DeviceKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeviceKey")
            .field("jkt", &self.thumbprint())
            .finish_non_exhaustive()
    }
}

/// `~/.agentkeys/<profile>/`: a plain profile name, no path separators.
pub fn profile_dir(home: &Path, profile: &str) -> anyhow::Result<PathBuf> {
    let valid = !profile.is_empty()
        && profile.len() <= 64
        && profile
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
        && profile != "."
        && profile != "..";
    if !valid {
        bail!(
            "profile {profile:?} must be a plain name (letters, digits, '-', '_', '.'), not a path"
        );
    }
    Ok(home.join(".agentkeys").join(profile))
}

impl DeviceKey {
    /// A fresh key in memory (`load_or_create` persists one).
    pub fn generate() -> anyhow::Result<Self> {
        let der =
            EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &SystemRandom::new())
                .map_err(|_| anyhow::anyhow!("cannot generate a P-256 key"))?;
        let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, der.as_ref())
            .map_err(|_| anyhow::anyhow!("cannot load the generated key"))?;
        Ok(Self { pair })
    }

    /// Loads the key of `dir`, or creates it (0600 in a 0700 directory) on first use.
    pub fn load_or_create(dir: &Path) -> anyhow::Result<Self> {
        let path = dir.join("device.jwk");
        if path.exists() {
            return Self::load(&path);
        }
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .with_context(|| format!("cannot create {}", dir.display()))?;
        let key = Self::generate()?;
        let private = key
            .pair
            .private_key()
            .as_be_bytes()
            .map_err(|_| anyhow::anyhow!("cannot export the device key"))?;
        let mut jwk = key.public_jwk();
        jwk["d"] = json!(B64.encode(private.as_ref()));
        let text = Zeroizing::new(jwk.to_string());
        let mut file = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
            .with_context(|| format!("cannot create {}", path.display()))?;
        file.write_all(text.as_bytes())
            .and_then(|()| file.sync_all())
            .with_context(|| format!("cannot write {}", path.display()))?;
        Ok(key)
    }

    fn load(path: &Path) -> anyhow::Result<Self> {
        let mode = fs::metadata(path)?.permissions().mode();
        if mode & 0o077 != 0 {
            bail!(
                "{} is readable by group or others; run: chmod 600 {}",
                path.display(),
                path.display()
            );
        }
        let text = Zeroizing::new(
            fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?,
        );
        let jwk: Value = serde_json::from_str(&text)
            .with_context(|| format!("{} is not a JWK", path.display()))?;
        let field = |name: &str| -> anyhow::Result<Zeroizing<Vec<u8>>> {
            let v = jwk[name]
                .as_str()
                .with_context(|| format!("{} lacks {name}", path.display()))?;
            Ok(Zeroizing::new(B64.decode(v).with_context(|| {
                format!("{} has a bad {name}", path.display())
            })?))
        };
        let (d, x, y) = (field("d")?, field("x")?, field("y")?);
        let mut point = vec![4u8];
        point.extend_from_slice(&x);
        point.extend_from_slice(&y);
        let pair = EcdsaKeyPair::from_private_key_and_public_key(
            &ECDSA_P256_SHA256_FIXED_SIGNING,
            &d,
            &point,
        )
        .map_err(|_| anyhow::anyhow!("{} does not hold a valid P-256 key pair", path.display()))?;
        Ok(Self { pair })
    }

    /// The public JWK.
    pub fn public_jwk(&self) -> Value {
        let p = self.pair.public_key().as_ref();
        json!({"kty": "EC", "crv": "P-256", "x": B64.encode(&p[1..33]), "y": B64.encode(&p[33..65])})
    }

    /// RFC 7638 thumbprint (the `jkt` the server binds), as the server computes it.
    pub fn thumbprint(&self) -> String {
        serde_json::from_value::<jsonwebtoken::jwk::Jwk>(self.public_jwk())
            .ok()
            .and_then(|jwk| {
                jwk.thumbprint(jsonwebtoken::jwk::ThumbprintHash::SHA256)
                    .ok()
            })
            .unwrap_or_default()
    }

    /// A DPoP proof for `method` on `htu`, with `ath` when a token is sent and the server's
    /// nonce when it asked for one.
    pub fn proof(
        &self,
        method: &str,
        htu: &str,
        now: i64,
        token: Option<&str>,
        nonce: Option<&str>,
    ) -> anyhow::Result<String> {
        let mut jti = [0u8; 16];
        aws_lc_rs::rand::fill(&mut jti).map_err(|_| anyhow::anyhow!("random generator failed"))?;
        let mut claims = json!({"jti": B64.encode(jti), "htm": method, "htu": htu, "iat": now});
        if let Some(token) = token {
            claims["ath"] = json!(B64.encode(Sha256::digest(token.as_bytes())));
        }
        if let Some(nonce) = nonce {
            claims["nonce"] = json!(nonce);
        }
        let header = json!({"typ": "dpop+jwt", "alg": "ES256", "jwk": self.public_jwk()});
        self.sign_jws(&header, &claims)
    }

    /// A compact ES256 JWS of `header` and `claims` as given (proofs use [`Self::proof`]).
    pub fn sign_jws(&self, header: &Value, claims: &Value) -> anyhow::Result<String> {
        let input = format!(
            "{}.{}",
            B64.encode(header.to_string()),
            B64.encode(claims.to_string())
        );
        let sig = self
            .pair
            .sign(&SystemRandom::new(), input.as_bytes())
            .map_err(|_| anyhow::anyhow!("signing failed"))?;
        Ok(format!("{input}.{}", B64.encode(sig.as_ref())))
    }
}
