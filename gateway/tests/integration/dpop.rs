//! DPoP verification: proofs built by npm `dpop` are accepted (at their own iat); each rule
//! refuses its violation, with proofs crafted here.

use crate::common;

use agentkeys_gateway::auth::dpop::{DpopError, DpopVerifier, ProofRequest, VerifiedProof};
use agentkeys_gateway::auth::replay::{Partition, Quota};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use common::Client;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

const URL: &str = "https://keys.example.com";
const NOW: i64 = 1_800_000_000;

fn vectors() -> Value {
    let path = format!("{}/tests/vectors/dpop.json", env!("CARGO_MANIFEST_DIR"));
    serde_json::from_str(&std::fs::read_to_string(path).expect("vectors")).expect("json")
}

/// Verifies and records, as the extractors do, charged to one binding with a large quota.
fn accept(
    verifier: &DpopVerifier,
    proof: &str,
    req: &ProofRequest<'_>,
) -> Result<VerifiedProof, DpopError> {
    let verified = verifier.verify(proof, req)?;
    let quota = Quota {
        soft: 1000,
        hard: 2000,
    };
    verifier.record(&verified, Partition::Binding(1), quota, req.now)?;
    Ok(verified)
}

fn request<'a>(
    method: &'a str,
    path: &'a str,
    token: Option<&'a str>,
    now: i64,
) -> ProofRequest<'a> {
    ProofRequest {
        method,
        public_url: URL,
        path,
        access_token: token,
        require_nonce: false,
        now,
    }
}

#[test]
fn proofs_from_npm_dpop_are_accepted_once() {
    let v = vectors();
    assert_eq!(v["public_url"], URL);
    let verifier = DpopVerifier::new(60);
    for vector in v["vectors"].as_array().expect("vectors") {
        let name = vector["name"].as_str().expect("name");
        let iat = vector["iat"].as_i64().expect("iat");
        let req = request(
            vector["method"].as_str().expect("method"),
            vector["path"].as_str().expect("path"),
            vector["token"].as_str(),
            iat + 5,
        );
        let proof = vector["proof"].as_str().expect("proof");
        let verified = accept(&verifier, proof, &req).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(
            verified.jkt,
            v["jkt"].as_str().expect("jkt"),
            "{name}: RFC 7638 thumbprints agree"
        );
        assert_eq!(
            accept(&verifier, proof, &req),
            Err(DpopError::Replayed),
            "{name}"
        );
    }
}

fn claims(jti: &str, method: &str, path: &str, iat: i64) -> Value {
    json!({"jti": jti, "htm": method, "htu": format!("{URL}{path}"), "iat": iat})
}

#[test]
fn every_rule_refuses_its_violation() {
    let verifier = DpopVerifier::new(60);
    let client = Client::new();
    let get = |token| request("GET", "/v1/whoami", token, NOW);

    let ok = client.proof(claims("j1", "GET", "/v1/whoami", NOW));
    assert!(accept(&verifier, &ok, &get(None)).is_ok());

    let cases: Vec<(&str, String, DpopError)> = vec![
        ("not a jwt", "abc".into(), DpopError::Malformed),
        ("wrong typ", client.sign(&json!({"typ": "JWT", "alg": "ES256", "jwk": client.jwk()}), &claims("j2", "GET", "/v1/whoami", NOW)), DpopError::Type),
        ("alg none", client.sign(&json!({"typ": "dpop+jwt", "alg": "none", "jwk": client.jwk()}), &claims("j3", "GET", "/v1/whoami", NOW)), DpopError::Algorithm),
        ("alg HS256", client.sign(&json!({"typ": "dpop+jwt", "alg": "HS256", "jwk": client.jwk()}), &claims("j4", "GET", "/v1/whoami", NOW)), DpopError::Algorithm),
        ("private jwk", {
            let mut jwk = client.jwk();
            jwk["d"] = json!("AAAA");
            client.sign(&json!({"typ": "dpop+jwt", "alg": "ES256", "jwk": jwk}), &claims("j5", "GET", "/v1/whoami", NOW))
        }, DpopError::Key),
        ("kid in header", client.sign(&json!({"typ": "dpop+jwt", "alg": "ES256", "jwk": client.jwk(), "kid": "k"}), &claims("j6", "GET", "/v1/whoami", NOW)), DpopError::Key),
        ("jku in header", client.sign(&json!({"typ": "dpop+jwt", "alg": "ES256", "jwk": client.jwk(), "jku": "https://x"}), &claims("j7", "GET", "/v1/whoami", NOW)), DpopError::Key),
        ("no jwk", client.sign(&json!({"typ": "dpop+jwt", "alg": "ES256"}), &claims("j8", "GET", "/v1/whoami", NOW)), DpopError::Key),
        ("another key's jwk", {
            let other = Client::new();
            client.sign(&json!({"typ": "dpop+jwt", "alg": "ES256", "jwk": other.jwk()}), &claims("j9", "GET", "/v1/whoami", NOW))
        }, DpopError::Signature),
        ("other method", client.proof(claims("j10", "POST", "/v1/whoami", NOW)), DpopError::Method),
        ("other url", client.proof(claims("j11", "GET", "/v1/actors", NOW)), DpopError::Url),
        ("other host", client.proof(json!({"jti": "j12", "htm": "GET", "htu": "https://evil.example/v1/whoami", "iat": NOW})), DpopError::Url),
        ("too old", client.proof(claims("j13", "GET", "/v1/whoami", NOW - 61)), DpopError::Time),
        ("from the future", client.proof(claims("j14", "GET", "/v1/whoami", NOW + 61)), DpopError::Time),
        ("ath without token", client.proof(json!({"jti": "j15", "htm": "GET", "htu": format!("{URL}/v1/whoami"), "iat": NOW, "ath": "x"})), DpopError::TokenHash),
        ("long jti", client.proof(claims(&"j".repeat(65), "GET", "/v1/whoami", NOW)), DpopError::Jti),
        ("no jti", client.proof(json!({"htm": "GET", "htu": format!("{URL}/v1/whoami"), "iat": NOW})), DpopError::Jti),
        ("replay", ok.clone(), DpopError::Replayed),
    ];
    for (name, proof, expected) in cases {
        assert_eq!(
            accept(&verifier, &proof, &get(None)),
            Err(expected),
            "{name}"
        );
    }

    // ath is required exactly when a token is presented, and must be the token's hash.
    let token = "header.payload.signature";
    let ath = B64.encode(Sha256::digest(token.as_bytes()));
    let missing = client.proof(claims("t1", "GET", "/v1/whoami", NOW));
    assert_eq!(
        accept(&verifier, &missing, &get(Some(token))),
        Err(DpopError::TokenHash)
    );
    let wrong = client.proof(json!({"jti": "t2", "htm": "GET", "htu": format!("{URL}/v1/whoami"), "iat": NOW, "ath": B64.encode(Sha256::digest(b"other"))}));
    assert_eq!(
        accept(&verifier, &wrong, &get(Some(token))),
        Err(DpopError::TokenHash)
    );
    let right = client.proof(json!({"jti": "t3", "htm": "GET", "htu": format!("{URL}/v1/whoami"), "iat": NOW, "ath": ath}));
    assert!(accept(&verifier, &right, &get(Some(token))).is_ok());
}

/// The segments of a compact JWS.
fn segments(proof: &str) -> Vec<String> {
    proof.split('.').map(str::to_string).collect()
}

#[test]
fn a_kept_key_checks_signatures_as_a_freshly_parsed_one_does() {
    let verifier = DpopVerifier::new(60);
    let client = Client::new();
    let get = request("GET", "/v1/whoami", None, NOW);
    let proof = |jti: &str| client.proof(claims(jti, "GET", "/v1/whoami", NOW));

    // A proof whose signature fails keeps nothing.
    let mut forged = segments(&proof("c0"));
    forged[2] = segments(&proof("c0b"))[2].clone();
    assert_eq!(
        accept(&verifier, &forged.join("."), &get),
        Err(DpopError::Signature)
    );
    assert_eq!(verifier.cached_keys(), 0);

    let first = accept(&verifier, &proof("c1"), &get).expect("first proof");
    assert_eq!(verifier.cached_keys(), 1);
    let second = accept(&verifier, &proof("c2"), &get).expect("second proof, kept key");
    assert_eq!(first.jkt, second.jkt, "the kept thumbprint is the key's");
    assert_eq!(verifier.cached_keys(), 1);

    // The kept header with claims it did not sign, with another key's signature, and with a
    // signature that is not 64 bytes: each refused as before.
    let mut swapped = segments(&proof("c3"));
    swapped[1] = segments(&proof("c4"))[1].clone();
    let other = Client::new();
    let mut stolen = segments(&proof("c5"));
    stolen[2] = segments(&other.proof(claims("c5", "GET", "/v1/whoami", NOW)))[2].clone();
    let mut short = segments(&proof("c6"));
    short[2] = B64.encode([7u8; 63]);
    for (name, forged) in [
        ("swapped claims", swapped),
        ("stolen signature", stolen),
        ("short signature", short),
    ] {
        assert_eq!(
            accept(&verifier, &forged.join("."), &get),
            Err(DpopError::Signature),
            "{name}"
        );
    }
    // Four segments with the kept header: refused, not read as a proof.
    let four = format!("{}.x", proof("c7"));
    assert_eq!(accept(&verifier, &four, &get), Err(DpopError::Signature));
    assert!(accept(&verifier, &proof("c8"), &get).is_ok());
}

#[test]
fn nonces_are_demanded_when_required_and_near_a_clients_quota() {
    let verifier = DpopVerifier::new(60);
    let client = Client::new();
    let mut req = request("POST", "/v1/session/refresh", None, NOW);
    req.require_nonce = true;
    let without = client.proof(claims("n1", "POST", "/v1/session/refresh", NOW));
    assert_eq!(
        accept(&verifier, &without, &req).err(),
        Some(DpopError::UseNonce)
    );
    let nonce = verifier.nonce(NOW);
    let with = client.proof(json!({"jti": "n2", "htm": "POST", "htu": format!("{URL}/v1/session/refresh"), "iat": NOW, "nonce": nonce}));
    assert!(accept(&verifier, &with, &req).is_ok());
    let stale = client.proof(json!({"jti": "n3", "htm": "POST", "htu": format!("{URL}/v1/session/refresh"), "iat": NOW, "nonce": "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"}));
    assert_eq!(
        accept(&verifier, &stale, &req).err(),
        Some(DpopError::UseNonce)
    );

    // A client at its quota is asked for a nonce; other clients are not affected.
    let quota = Quota { soft: 1, hard: 2 };
    let get = request("GET", "/v1/whoami", None, NOW);
    let me = Partition::Binding(7);
    let record = |jti: &str, nonce: Option<&str>, who: Partition| {
        let mut c = claims(jti, "GET", "/v1/whoami", NOW);
        if let Some(n) = nonce {
            c["nonce"] = json!(n);
        }
        let verified = verifier.verify(&client.proof(c), &get)?;
        verifier.record(&verified, who, quota, NOW)
    };
    assert_eq!(record("f1", None, me), Ok(()));
    assert_eq!(
        record("f2", None, me),
        Err(DpopError::UseNonce),
        "at the quota: a nonce"
    );
    assert_eq!(
        record("f3", None, Partition::Binding(8)),
        Ok(()),
        "another client"
    );
    let nonce = verifier.nonce(NOW);
    assert_eq!(record("f4", Some(&nonce), me), Ok(()), "with the nonce");
    assert!(
        matches!(
            record("f5", Some(&nonce), me),
            Err(DpopError::TooMany { .. })
        ),
        "past twice the quota: only this client slows down"
    );
    assert_eq!(verifier.recorded(me), 2);
}

#[test]
fn iat_at_the_extremes_is_refused_without_overflow() {
    let verifier = DpopVerifier::new(60);
    let client = Client::new();
    let get = request("GET", "/v1/whoami", None, NOW);
    for iat in [
        i64::MIN,
        i64::MIN + NOW,
        i64::MIN + 1,
        i64::MAX,
        i64::MAX - NOW,
        -NOW,
        0,
    ] {
        let proof = client.proof(claims(&format!("x{iat}"), "GET", "/v1/whoami", iat));
        assert_eq!(
            verifier.verify(&proof, &get),
            Err(DpopError::Time),
            "iat {iat}"
        );
    }
    // The edges of the window are inclusive.
    for iat in [NOW - 60, NOW + 60] {
        let proof = client.proof(claims(&format!("e{iat}"), "GET", "/v1/whoami", iat));
        assert!(verifier.verify(&proof, &get).is_ok(), "iat {iat}");
    }
}
