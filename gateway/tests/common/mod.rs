//! Test helpers: a DPoP client key that signs proofs with arbitrary headers and claims.

#![allow(dead_code, unreachable_pub, reason = "each test binary uses a subset")]

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use serde_json::{Value, json};

/// A P-256 key that signs proofs with arbitrary headers and claims.
pub struct Client {
    pair: EcdsaKeyPair,
}

impl Client {
    pub fn new() -> Self {
        let der =
            EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &SystemRandom::new())
                .expect("key");
        Self {
            pair: EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, der.as_ref())
                .expect("key"),
        }
    }

    pub fn jwk(&self) -> Value {
        let p = self.pair.public_key().as_ref();
        json!({"kty": "EC", "crv": "P-256", "x": B64.encode(&p[1..33]), "y": B64.encode(&p[33..65])})
    }

    pub fn sign(&self, header: &Value, claims: &Value) -> String {
        let input = format!(
            "{}.{}",
            B64.encode(header.to_string()),
            B64.encode(claims.to_string())
        );
        let sig = self
            .pair
            .sign(&SystemRandom::new(), input.as_bytes())
            .expect("sign");
        format!("{input}.{}", B64.encode(sig.as_ref()))
    }

    pub fn proof(&self, claims: Value) -> String {
        self.sign(
            &json!({"typ": "dpop+jwt", "alg": "ES256", "jwk": self.jwk()}),
            &claims,
        )
    }

    /// A proof for `method` on `url` issued at `iat` with a fresh jti.
    pub fn proof_for(&self, method: &str, url: &str, iat: i64) -> String {
        let mut jti = [0u8; 12];
        aws_lc_rs::rand::fill(&mut jti).expect("rng");
        self.proof(json!({"jti": B64.encode(jti), "htm": method, "htu": url, "iat": iat}))
    }
}
