//! Test helpers: a DPoP client key (the product's `DeviceKey`) that also signs proofs with
//! arbitrary headers and claims, to violate each rule on purpose.

#![allow(dead_code, unreachable_pub, reason = "each test binary uses a subset")]

use agentkeys_gateway::client::DeviceKey;
use serde_json::{Value, json};

/// A device key for tests.
pub struct Client {
    key: DeviceKey,
}

impl Client {
    pub fn new() -> Self {
        Self {
            key: DeviceKey::generate().expect("key"),
        }
    }

    pub fn jwk(&self) -> Value {
        self.key.public_jwk()
    }

    pub fn sign(&self, header: &Value, claims: &Value) -> String {
        self.key.sign_jws(header, claims).expect("sign")
    }

    pub fn proof(&self, claims: Value) -> String {
        self.sign(
            &json!({"typ": "dpop+jwt", "alg": "ES256", "jwk": self.jwk()}),
            &claims,
        )
    }

    /// A proof for `method` on `url` issued at `iat` with a fresh jti.
    pub fn proof_for(&self, method: &str, url: &str, iat: i64) -> String {
        self.key.proof(method, url, iat, None, None).expect("proof")
    }
}
