//! DPoP proof parsing and checking (RFC 9449): raw proof text, or proofs signed with the test
//! key over fuzzed claims or a fuzzed header, so the checks after the signature are reached.
#![no_main]

use agentkeys_fuzz::{ACCESS_TOKEN, NOW, PUBLIC_URL, ath, public_jwk, sign_jws};
use agentkeys_gateway::auth::dpop::{DpopVerifier, ProofRequest};
use agentkeys_gateway::auth::replay::Partition;
use libfuzzer_sys::fuzz_target;
use serde_json::json;

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let proof = match mode % 3 {
        0 => String::from_utf8_lossy(rest).into_owned(),
        1 => {
            let header = json!({"typ": "dpop+jwt", "alg": "ES256", "jwk": public_jwk(None)});
            sign_jws(header.to_string().as_bytes(), rest)
        }
        _ => {
            let claims = json!({
                "htm": "POST", "htu": format!("{PUBLIC_URL}/v1/whoami"), "iat": NOW,
                "jti": "fuzz-jti", "ath": ath(),
            });
            sign_jws(rest, claims.to_string().as_bytes())
        }
    };
    let verifier = DpopVerifier::new(60);
    let request = ProofRequest {
        method: "POST",
        public_url: PUBLIC_URL,
        path: "/v1/whoami",
        access_token: (mode & 8 == 0).then_some(ACCESS_TOKEN),
        require_nonce: mode & 4 != 0,
        now: NOW,
    };
    if let Ok(verified) = verifier.verify(&proof, &request) {
        assert!(
            verified.iat.checked_sub(NOW).is_some_and(|d| d.abs() <= 60),
            "iat outside the window"
        );
        let quota = verifier.quota(10, 10);
        let me = Partition::Binding(1);
        assert!(verifier.record(&verified, me, quota, NOW).is_ok());
        let again = verifier.verify(&proof, &request).expect("verifies again");
        assert!(
            verifier.record(&again, Partition::Binding(2), quota, NOW).is_err(),
            "the same proof was recorded twice"
        );
    }
});
