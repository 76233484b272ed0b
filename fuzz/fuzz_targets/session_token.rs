//! Session (K1) access tokens: raw token text, or tokens signed with the test key over fuzzed
//! claims or a fuzzed header.
#![no_main]

use agentkeys_fuzz::{NOW, PUBLIC_URL, public_jwk, sign_jws};
use agentkeys_gateway::auth::session::{Lifetimes, Sessions};
use libfuzzer_sys::fuzz_target;
use serde_json::json;

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let token = match mode % 3 {
        0 => String::from_utf8_lossy(rest).into_owned(),
        1 => {
            let header = json!({"typ": "at+jwt", "alg": "ES256", "kid": "k1"});
            sign_jws(header.to_string().as_bytes(), rest)
        }
        _ => {
            let claims = json!({
                "iss": PUBLIC_URL, "sub": "agentkeys:actor:0x00", "aud": "agentkeys",
                "iat": NOW, "nbf": NOW, "exp": NOW + 900, "jti": "00",
                "cnf": {"jkt": "x"}, "bid": 1,
                "agentkeys": {"omni": "0x00", "role": "agent", "master_omni": "0x00", "path": "a"}
            });
            sign_jws(rest, claims.to_string().as_bytes())
        }
    };
    let sessions = Sessions::from_jwks(
        PUBLIC_URL,
        vec![public_jwk(Some("k1"))],
        Lifetimes {
            ttl: 900,
            refresh_max_age: 30 * 86_400,
            skew: 60,
        },
    );
    if let Ok(claims) = sessions.verify(&token, NOW) {
        assert!(claims.exp > NOW, "an expired token verified");
        assert_eq!(claims.iss, PUBLIC_URL);
        let _ = claims.omni();
        let _ = claims.master();
    }
    let _ = sessions.verify_for_refresh(&token, NOW);
});
