//! The signer pool over a real store and runtime: the lineage proof gates signing, signatures
//! verify, the SIWE guard holds, JWTs verify with the published JWK, nothing secret prints.

use agentkeys_actors::crypto::eip191::{hash_message, recover};
use agentkeys_actors::crypto::secret::MasterSecret;
use agentkeys_actors::crypto::sr25519;
use agentkeys_actors::signer::{KeySetName, SignerError, SignerHandle};
use agentkeys_runtime::{CallError, Omni, Runtime};
use agentkeys_tests::SignerStack;
use serde_json::json;

struct Setup {
    _dir: tempfile::TempDir,
    runtime: Runtime,
    signer: SignerHandle,
    master: Omni,
    agent: Omni,
}

async fn setup() -> Setup {
    let dir = tempfile::tempdir().expect("tempdir");
    let k3 = MasterSecret::from_bytes(core::array::from_fn(|i| i as u8));
    let stack = SignerStack::start(dir.path(), k3, 2);
    let master = Omni::from_bytes([0x4d; 32]);
    let agent = agentkeys_actors::crypto::omni::child_omni(&master, "hermes").expect("label");
    stack.create(master, None, "").await;
    stack.create(agent, Some(master), "hermes").await;
    Setup {
        _dir: dir,
        runtime: stack.runtime,
        signer: stack.signer,
        master,
        agent,
    }
}

#[actix::test]
async fn signing_needs_a_live_lineage_and_signatures_verify() {
    let s = setup().await;
    let account = s
        .signer
        .account(s.master, "//hermes".into())
        .await
        .expect("account");
    assert_eq!(account.omni, s.agent);

    let proof = s.runtime.check_live(&s.agent).expect("live");
    let sig = s
        .signer
        .sign_eip191(b"hello".to_vec(), proof)
        .await
        .expect("signed");
    assert_eq!(sig.address, account.wallet);
    assert_eq!(
        recover(&hash_message(b"hello"), &sig.signature),
        Ok(account.wallet)
    );

    let typed = json!({
        "types": {"Note": [{"name": "text", "type": "string"}]},
        "primaryType": "Note", "domain": {"name": "t", "chainId": 1}, "message": {"text": "hi"}
    });
    let proof = s.runtime.check_live(&s.agent).expect("live");
    let signed = s
        .signer
        .sign_typed_data(typed, proof)
        .await
        .expect("signed");
    assert_eq!(
        recover(&signed.digest, &signed.signature),
        Ok(account.wallet)
    );
    assert_eq!(signed.address, account.wallet);

    let tx = json!({"chain_id": 1, "nonce": 0, "gas_limit": 21000, "max_fee_per_gas": "30000000000",
                    "max_priority_fee_per_gas": "1000000000", "to": "0x1111111111111111111111111111111111111111", "value": "1"});
    let proof = s.runtime.check_live(&s.agent).expect("live");
    let signed_tx = s.signer.sign_transaction(tx, proof).await.expect("signed");
    assert_eq!(signed_tx.from, account.wallet);
    assert_eq!(signed_tx.raw[0], 0x02);

    let proof = s.runtime.check_live(&s.agent).expect("live");
    let sr_sig = s
        .signer
        .sign_sr25519("//hermes".into(), b"remark".to_vec(), proof)
        .await
        .expect("signed");
    assert_eq!(sr_sig.public, account.sr25519_public);
    assert!(sr25519::verify(
        &account.sr25519_public,
        b"remark",
        &sr_sig.signature
    ));

    // After revocation the runtime produces no proof, so the signer cannot be reached.
    s.runtime.revoke(s.agent).await.expect("revoked");
    assert!(matches!(
        s.runtime.check_live(&s.agent),
        Err(CallError::Revoked { .. })
    ));
}

#[actix::test]
async fn bad_input_is_refused_with_clear_errors() {
    let s = setup().await;
    let siwe = "127.0.0.1:8090 wants you to sign in with your Ethereum account:\n0x0000000000000000000000000000000000000000\n";
    let proof = s.runtime.check_live(&s.agent).expect("live");
    assert_eq!(
        s.signer.sign_eip191(siwe.as_bytes().to_vec(), proof).await,
        Err(SignerError::ManagedWalletLogin)
    );
    let other = siwe.replace("127.0.0.1:8090", "app.example.com");
    let proof = s.runtime.check_live(&s.agent).expect("live");
    assert!(
        s.signer
            .sign_eip191(other.into_bytes(), proof)
            .await
            .is_ok(),
        "other domains are plain text"
    );

    let proof = s.runtime.check_live(&s.agent).expect("live");
    let err = s
        .signer
        .sign_typed_data(
            json!({"types": {}, "primaryType": "X", "domain": {}}),
            proof,
        )
        .await;
    assert!(matches!(err, Err(SignerError::TypedData(_))), "{err:?}");
    let proof = s.runtime.check_live(&s.agent).expect("live");
    let err = s.signer.sign_transaction(json!({"nonce": 0}), proof).await;
    assert!(matches!(err, Err(SignerError::Tx(_))), "{err:?}");
    assert!(matches!(
        s.signer.account(s.master, "//0xbad".into()).await,
        Err(SignerError::Account(_))
    ));
}

#[actix::test]
async fn jwts_verify_with_the_published_key_and_sets_stay_apart() {
    let s = setup().await;
    let claims = json!({"sub": "agentkeys:actor:x", "aud": "agentkeys", "exp": 4_000_000_000u64});
    let token = s
        .signer
        .sign_jwt(
            KeySetName::Session,
            json!({"typ": "at+jwt"}),
            claims.clone(),
        )
        .await
        .expect("jwt");
    let session = s.signer.public_jwks(KeySetName::Session);
    let oidc = s.signer.public_jwks(KeySetName::Oidc);
    assert_eq!(session.len(), 1);
    assert_ne!(
        session[0]["kid"], oidc[0]["kid"],
        "K1 and K2 are different keys"
    );
    assert!(session[0].get("d").is_none(), "public only");

    let header = jsonwebtoken::decode_header(&token).expect("header");
    assert_eq!(header.kid.as_deref(), session[0]["kid"].as_str());
    let jwk: jsonwebtoken::jwk::Jwk = serde_json::from_value(session[0].clone()).expect("jwk");
    let key = jsonwebtoken::DecodingKey::from_jwk(&jwk).expect("decoding key");
    let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::ES256);
    validation.set_audience(&["agentkeys"]);
    let data =
        jsonwebtoken::decode::<serde_json::Value>(&token, &key, &validation).expect("verifies");
    assert_eq!(data.claims, claims);
    // The RFC 7638 thumbprint is the kid.
    let thumb = jwk
        .thumbprint(jsonwebtoken::jwk::ThumbprintHash::SHA256)
        .expect("thumbprint");
    assert_eq!(Some(thumb.as_str()), session[0]["kid"].as_str());

    // A token signed by K2 does not verify with K1.
    let oidc_token = s
        .signer
        .sign_jwt(KeySetName::Oidc, json!({}), claims)
        .await
        .expect("jwt");
    assert!(jsonwebtoken::decode::<serde_json::Value>(&oidc_token, &key, &validation).is_err());
}

#[actix::test]
async fn nothing_secret_is_printed() {
    let s = setup().await;
    let shown = format!("{:?} {:?}", s.signer, s.signer.k3_fingerprint());
    assert!(!shown.contains("000102030405"), "{shown}");
    assert!(shown.contains("SignerHandle"));
    assert_eq!(s.signer.health().replaced, 0);
}

#[actix::test]
async fn a_panicking_signer_thread_is_replaced_and_reported() {
    let s = setup().await;
    assert_eq!(s.signer.inject_panic().await, Err(SignerError::Unavailable));
    assert_eq!(s.signer.health().replaced, 1);
    // Both pool threads keep serving.
    for _ in 0..4 {
        let proof = s.runtime.check_live(&s.agent).expect("live");
        s.signer
            .sign_eip191(b"after".to_vec(), proof)
            .await
            .expect("still signing");
    }
    assert_eq!(s.signer.health().threads, 2);
}
