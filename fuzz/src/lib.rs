//! Shared pieces of the fuzz targets: a fixed ES256 test key (fuzzing only; it signs nothing
//! that leaves the fuzzer) so that targets can reach past signature checks, and the fixed
//! request every DPoP input is checked against.

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use serde_json::{Value, json};
use std::sync::OnceLock;

/// PKCS#8 of a P-256 key made for these targets only.
const TEST_KEY_PKCS8: &str = "308187020100301306072a8648ce3d020106082a8648ce3d030107046d306b0201010420516b06ad72daa8fac0168185bbba1c480e8a69df43bfe2590b434b9c7f1d7bf8a14403420004fa1b0b1296dab17b43cb9cde11faba2d3c33bc0ab645310cf62920ce7aa4857236a96a51da462037313f26bbf6b341a73da3e2edfd78c26fe91162252985cde9";

/// "Now" of every target, seconds since the epoch.
pub const NOW: i64 = 1_800_000_000;
/// The public URL of the fixed request.
pub const PUBLIC_URL: &str = "https://keys.example";
/// The access token presented with DPoP proofs.
pub const ACCESS_TOKEN: &str = "fuzz-access-token";

fn key() -> &'static EcdsaKeyPair {
    static KEY: OnceLock<EcdsaKeyPair> = OnceLock::new();
    KEY.get_or_init(|| {
        let hex = TEST_KEY_PKCS8;
        let der: Vec<u8> = (0..hex.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).expect("hex"))
            .collect();
        EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &der).expect("test key")
    })
}

/// The public JWK of the test key, with `kid` if given.
pub fn public_jwk(kid: Option<&str>) -> Value {
    let point = key().public_key().as_ref();
    let mut jwk = json!({
        "kty": "EC",
        "crv": "P-256",
        "x": B64.encode(&point[1..33]),
        "y": B64.encode(&point[33..65]),
    });
    if let Some(kid) = kid {
        jwk["kid"] = kid.into();
    }
    jwk
}

/// A compact JWS over `header` and `payload` (both raw bytes, base64url-encoded as they are),
/// signed with the test key.
pub fn sign_jws(header: &[u8], payload: &[u8]) -> String {
    let input = format!("{}.{}", B64.encode(header), B64.encode(payload));
    let sig = key()
        .sign(&SystemRandom::new(), input.as_bytes())
        .expect("sign");
    format!("{input}.{}", B64.encode(sig.as_ref()))
}

/// `ath` of [`ACCESS_TOKEN`].
pub fn ath() -> String {
    use aws_lc_rs::digest::{SHA256, digest};
    B64.encode(digest(&SHA256, ACCESS_TOKEN.as_bytes()).as_ref())
}
