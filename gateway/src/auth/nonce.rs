//! Server-issued `DPoP-Nonce` values (RFC 9449 §8): stateless, `window ‖ HMAC(secret, window)`,
//! accepted for the current and the previous window. On redb the secret is random per process,
//! so a restart invalidates outstanding nonces (clients retry with the new one); the nodes of a
//! deployment on PostgreSQL share one, derived from K3, so any node accepts another's nonce.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hkdf::Hkdf;
use sha2::Sha256;
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

/// Issues and checks nonces.
pub struct NonceIssuer {
    secret: Zeroizing<[u8; 32]>,
    window: i64,
}

impl std::fmt::Debug for NonceIssuer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NonceIssuer")
            .field("window", &self.window)
            .finish_non_exhaustive()
    }
}

impl NonceIssuer {
    /// A fresh random secret; nonces rotate every `window_seconds`.
    pub fn new(window_seconds: i64) -> Self {
        let mut secret = Zeroizing::new([0u8; 32]);
        // The OS random source failing is not recoverable for a key broker.
        aws_lc_rs::rand::fill(secret.as_mut())
            .unwrap_or_else(|_| panic!("the system random generator failed"));
        Self::with_secret(secret, window_seconds)
    }

    /// Nonces under a given secret (shared by the nodes of one deployment).
    pub fn with_secret(secret: Zeroizing<[u8; 32]>, window_seconds: i64) -> Self {
        Self {
            secret,
            window: window_seconds.max(1),
        }
    }

    fn mac(&self, window: i64) -> [u8; 32] {
        // HKDF-Extract is HMAC-SHA256(salt = secret, ikm = window).
        let (prk, _) = Hkdf::<Sha256>::extract(Some(self.secret.as_slice()), &window.to_be_bytes());
        let mut out = [0u8; 32];
        out.copy_from_slice(&prk);
        out
    }

    /// The nonce for the window containing `now` (seconds).
    pub fn issue(&self, now: i64) -> String {
        let window = now.div_euclid(self.window);
        let mut raw = window.to_be_bytes().to_vec();
        raw.extend_from_slice(&self.mac(window)[..16]);
        URL_SAFE_NO_PAD.encode(raw)
    }

    /// Whether `nonce` was issued by this process for the current or the previous window.
    pub fn is_valid(&self, nonce: &str, now: i64) -> bool {
        self.expires(nonce, now).is_some()
    }

    /// If `nonce` is valid at `now`, the last second it is accepted.
    pub fn expires(&self, nonce: &str, now: i64) -> Option<i64> {
        let raw = URL_SAFE_NO_PAD.decode(nonce).ok()?;
        if raw.len() != 24 {
            return None;
        }
        let mut w = [0u8; 8];
        w.copy_from_slice(&raw[..8]);
        let window = i64::from_be_bytes(w);
        let current = now.div_euclid(self.window);
        let fresh = window == current || Some(window) == current.checked_sub(1);
        (fresh && bool::from(self.mac(window)[..16].ct_eq(&raw[8..])))
            .then(|| (window + 2) * self.window - 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nonces_live_for_two_windows_and_cannot_be_forged() {
        let issuer = NonceIssuer::new(300);
        let n = issuer.issue(1000);
        assert!(issuer.is_valid(&n, 1000));
        assert!(issuer.is_valid(&n, 1000 + 300), "previous window");
        assert!(!issuer.is_valid(&n, 1000 + 600), "too old");
        assert!(
            !NonceIssuer::new(300).is_valid(&n, 1000),
            "another process's secret"
        );
        assert!(!issuer.is_valid("garbage", 1000));
        assert_eq!(
            issuer.expires(&n, 1000),
            Some(1499),
            "windows 900.. and 1200.."
        );
        assert_eq!(issuer.expires(&n, i64::MIN), None);
        let mut forged = URL_SAFE_NO_PAD.decode(&n).expect("b64");
        forged[23] ^= 1;
        assert!(!issuer.is_valid(&URL_SAFE_NO_PAD.encode(forged), 1000));
    }
}
