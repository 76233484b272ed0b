//! Wallet login, device-bound sessions, refresh, whoami and the audit chain, end to end over
//! loopback HTTP with an injected clock; every rejection of DESIGN §7 and §10 with its code.

use crate::common;

use std::time::Duration;

use agentkeys_actors::crypto::eip191::sign_message;
use agentkeys_actors::crypto::omni::master_omni;
use agentkeys_actors::crypto::siwe::SiweMessage;
use agentkeys_actors::crypto::wallet::{WalletKey, derive_wallet};
use agentkeys_actors::signer::KeySetName;
use agentkeys_actors::signer::keys::load_k3;
use common::{PUBLIC_URL, device, start, wallet};
use serde_json::{Value, json};

#[actix::test]
async fn wallet_login_creates_the_master_and_a_bound_session() {
    let dir = tempfile::tempdir().expect("tempdir");
    let stack = start(dir.path(), None).await;
    let (key, alice) = (device(), wallet(7));
    let (status, session) = stack.login(&key, &alice).await;
    assert_eq!(status, 200, "{session}");
    let master = master_omni("agentkeys", &alice.address().to_string()).expect("omni");
    assert_eq!(session["omni"], master.to_string());
    assert_eq!(session["path"], "");
    assert_eq!(session["role"], "master");
    let token = session["session_jwt"].as_str().expect("token").to_string();

    let (status, me) = stack
        .call(&key, "GET", "/v1/whoami", None, Some(&token))
        .await;
    assert_eq!(status, 200, "{me}");
    assert_eq!(me["omni"], master.to_string());
    assert_eq!(me["master_omni"], master.to_string());
    assert_eq!(me["identity"]["type"], "evm");
    assert_eq!(me["anchor_wallet"], alice.address().to_string());
    let k3 = load_k3(&dir.path().join("keys/k3.key")).expect("k3");
    let managed = derive_wallet(&k3, &master).expect("wallet").address();
    assert_eq!(me["wallet"], managed.to_checksum());
    assert!(me["ss58"].as_str().is_some_and(|s| s.starts_with('5')));

    // A second login by the same key reuses the binding; the master exists once.
    let (status, again) = stack.login(&key, &alice).await;
    assert_eq!(status, 200, "{again}");
    assert_eq!(again["binding_id"], session["binding_id"]);
    let masters = stack
        .server
        .runtime()
        .store()
        .masters(None, 10)
        .expect("read");
    assert_eq!(masters, [master]);

    // Refresh after the token expired (it may, within the refresh window): the first try is
    // told to use a nonce, the retry with it gets a new token.
    stack.clock.advance(Duration::from_secs(1_000));
    let path = "/v1/session/refresh";
    let url = format!("{PUBLIC_URL}{path}");
    let proof = key
        .proof("POST", &url, stack.now(), Some(&token), None)
        .expect("proof");
    let (status, body, nonce) = stack
        .send("POST", path, Some(&json!({})), Some(&token), &proof)
        .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (401, Some("use_dpop_nonce"))
    );
    let nonce = nonce.expect("a DPoP-Nonce header");
    let proof = key
        .proof("POST", &url, stack.now(), Some(&token), Some(&nonce))
        .expect("proof");
    let (status, refreshed, _) = stack
        .send("POST", path, Some(&json!({})), Some(&token), &proof)
        .await;
    assert_eq!(status, 200, "{refreshed}");
    let fresh = refreshed["session_jwt"].as_str().expect("token");
    assert_ne!(fresh, token);
    let (status, body) = stack
        .call(&key, "GET", "/v1/whoami", None, Some(&token))
        .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (401, Some("invalid_token")),
        "expired"
    );
    let (status, _) = stack
        .call(&key, "GET", "/v1/whoami", None, Some(fresh))
        .await;
    assert_eq!(status, 200);

    // The audit chain holds create, device add, login, login, refresh, all signed.
    let rows = stack
        .server
        .ledger()
        .audit_rows(&master, 0, 100)
        .expect("rows");
    assert_eq!(rows.len(), 5);
    let audit_keys = common::key_set(&stack, dir.path(), KeySetName::Audit);
    let check = |kid: &str, message: &[u8], signature: &[u8]| {
        audit_keys.iter().any(|k| {
            k.kid() == kid
                && agentkeys_actors::signer::keys::verify_es256(&k.public_jwk(), message, signature)
        })
    };
    let report = stack
        .server
        .ledger()
        .verify_audit(&check, &[])
        .expect("verify");
    assert!(report.problems.is_empty(), "{:?}", report.problems);
    stack
        .server
        .stop(Duration::from_secs(5))
        .await
        .expect("stops");
}

fn b64(value: &Value) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(value.to_string())
}

fn claims_of(token: &str) -> Value {
    use base64::Engine;
    let part = token.split('.').nth(1).expect("claims");
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(part)
        .expect("b64");
    serde_json::from_slice(&bytes).expect("json")
}

fn hs256(header: &Value, claims: &Value) -> String {
    let input = format!("{}.{}", b64(header), b64(claims));
    let key = aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, b"guessable");
    let tag = aws_lc_rs::hmac::sign(&key, input.as_bytes());
    use base64::Engine;
    format!(
        "{input}.{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(tag.as_ref())
    )
}

#[actix::test]
async fn forged_misused_and_dead_tokens_are_refused_with_their_codes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let stack = start(dir.path(), None).await;
    let (key, other_key) = (device(), device());
    let (status, session) = stack.login(&key, &wallet(9)).await;
    assert_eq!(status, 200, "{session}");
    let token = session["session_jwt"].as_str().expect("token").to_string();
    let claims = claims_of(&token);
    let k1 = common::key_set(&stack, dir.path(), KeySetName::Session);
    let k2 = common::key_set(&stack, dir.path(), KeySetName::Oidc);
    let now = stack.now();
    let whoami = format!("{PUBLIC_URL}/v1/whoami");

    let mut wrong_aud = claims.clone();
    wrong_aud["aud"] = json!("sts.amazonaws.com");
    let mut oidc_claims = claims.clone();
    oidc_claims["aud"] = json!("sts.amazonaws.com");
    let forged: Vec<(&str, String)> = vec![
        (
            "alg none",
            format!(
                "{}.{}.",
                b64(&json!({"alg": "none", "typ": "at+jwt"})),
                b64(&claims)
            ),
        ),
        (
            "HS256",
            hs256(
                &json!({"alg": "HS256", "typ": "at+jwt", "kid": k1[0].kid()}),
                &claims,
            ),
        ),
        (
            "unknown kid",
            other_key
                .sign_jws(
                    &json!({"alg": "ES256", "typ": "at+jwt", "kid": "not-a-k1-key"}),
                    &claims,
                )
                .expect("sign"),
        ),
        (
            "wrong aud",
            k1[0]
                .sign_jwt(json!({"typ": "at+jwt"}), &wrong_aud)
                .expect("sign"),
        ),
        (
            "an OIDC-style token (K2, typ JWT)",
            k2[0]
                .sign_jwt(json!({"typ": "JWT"}), &oidc_claims)
                .expect("sign"),
        ),
        (
            "an OIDC key posing as a session",
            k2[0]
                .sign_jwt(json!({"typ": "at+jwt"}), &claims)
                .expect("sign"),
        ),
    ];
    for (what, forged) in forged {
        let (status, body) = stack
            .call(&key, "GET", "/v1/whoami", None, Some(&forged))
            .await;
        assert_eq!(
            (status, body["error"].as_str()),
            (401, Some("invalid_token")),
            "{what}: {body}"
        );
    }

    // Proof problems with a valid token.
    let proof = key
        .proof("GET", &whoami, now, Some(&token), None)
        .expect("proof");
    let (status, _, _) = stack
        .send("GET", "/v1/whoami", None, Some(&token), &proof)
        .await;
    assert_eq!(status, 200);
    let proofs: Vec<(&str, String)> = vec![
        ("a replayed proof", proof),
        (
            "a proof for another URL",
            key.proof(
                "GET",
                &format!("{PUBLIC_URL}/v1/other"),
                now,
                Some(&token),
                None,
            )
            .expect("proof"),
        ),
        (
            "a proof for another method",
            key.proof("POST", &whoami, now, Some(&token), None)
                .expect("proof"),
        ),
        (
            "a proof by a key other than cnf.jkt",
            other_key
                .proof("GET", &whoami, now, Some(&token), None)
                .expect("proof"),
        ),
        (
            "a proof without ath",
            key.proof("GET", &whoami, now, None, None).expect("proof"),
        ),
    ];
    for (what, proof) in proofs {
        let (status, body, _) = stack
            .send("GET", "/v1/whoami", None, Some(&token), &proof)
            .await;
        assert_eq!(
            (status, body["error"].as_str()),
            (401, Some("invalid_dpop_proof")),
            "{what}: {body}"
        );
    }
    let (status, body) = stack.call(&key, "GET", "/v1/whoami", None, None).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (401, Some("invalid_token"))
    );

    // A tombstoned binding: its token dies at once, even before it expires.
    let omni = session["omni"].as_str().expect("omni");
    let bid = session["binding_id"].as_u64().expect("bid");
    let path = format!("/v1/actors/{omni}/devices/{bid}");
    let (status, body) = stack.call(&key, "DELETE", &path, None, Some(&token)).await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = stack
        .call(&key, "GET", "/v1/whoami", None, Some(&token))
        .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (401, Some("binding_revoked"))
    );
    // Logging in again with the same key gets a new binding; the old token stays dead.
    let (status, again) = stack.login(&key, &wallet(9)).await;
    assert_eq!(status, 200, "{again}");
    assert_ne!(again["binding_id"], session["binding_id"]);
    let (status, body) = stack
        .call(&key, "GET", "/v1/whoami", None, Some(&token))
        .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (401, Some("binding_revoked"))
    );
    let fresh = again["session_jwt"].as_str().expect("token");
    let (status, _) = stack
        .call(&key, "GET", "/v1/whoami", None, Some(fresh))
        .await;
    assert_eq!(status, 200);

    // Revoking the master (host admin) kills its sessions at once.
    stack
        .server
        .runtime()
        .revoke(omni.parse().expect("omni"))
        .await
        .expect("revoked");
    let (status, body) = stack
        .call(&key, "GET", "/v1/whoami", None, Some(fresh))
        .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (401, Some("actor_revoked"))
    );
    let (status, body) = stack.login(&key, &wallet(9)).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (401, Some("actor_revoked"))
    );
    stack
        .server
        .stop(Duration::from_secs(5))
        .await
        .expect("stops");
}

/// A SIWE message for `wallet` with the challenge's nonce, changed by `edit`, signed.
fn signed_variant(
    challenge: &Value,
    wallet: &WalletKey,
    edit: impl FnOnce(&mut SiweMessage),
) -> Value {
    let mut message =
        SiweMessage::parse(challenge["message"].as_str().expect("message")).expect("parses");
    edit(&mut message);
    let text = message.to_text();
    let signature = sign_message(wallet, text.as_bytes()).to_hex();
    json!({"message": text, "signature": signature})
}

#[actix::test]
async fn siwe_rejections_each_have_their_code_and_write_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let stack = start(dir.path(), None).await;
    let (key, other_key, w) = (device(), device(), wallet(5));
    let verify = "/v1/auth/wallet/verify";
    let in_past = |m: &mut SiweMessage| {
        m.expiration_time = Some(agentkeys_actors::crypto::rfc3339::format(
            (stack.now() - 5) * 1000,
        ));
    };
    type Edit<'a> = Box<dyn FnOnce(&mut SiweMessage) + 'a>;
    let cases: Vec<(&str, Edit<'_>)> = vec![
        (
            "wrong domain",
            Box::new(|m| m.domain = "evil.example".into()),
        ),
        (
            "wrong URI",
            Box::new(|m| m.uri = "http://127.0.0.1:9999".into()),
        ),
        ("wrong chain", Box::new(|m| m.chain_id = 5)),
        ("expired", Box::new(in_past)),
        (
            "issued in the future",
            Box::new(|m| {
                m.issued_at = agentkeys_actors::crypto::rfc3339::format((stack.now() + 600) * 1000)
            }),
        ),
    ];
    for (what, edit) in cases {
        let challenge = stack.challenge(&key, &w).await;
        let body = signed_variant(&challenge, &w, edit);
        let (status, answer) = stack.call(&key, "POST", verify, Some(&body), None).await;
        assert_eq!(
            (status, answer["error"].as_str()),
            (400, Some("invalid_siwe")),
            "{what}: {answer}"
        );
    }
    // Signed by another wallet than the message's address.
    let challenge = stack.challenge(&key, &w).await;
    let mut body = signed_variant(&challenge, &w, |_| {});
    body["signature"] = json!(
        sign_message(
            &wallet(6),
            body["message"].as_str().expect("text").as_bytes()
        )
        .to_hex()
    );
    let (status, answer) = stack.call(&key, "POST", verify, Some(&body), None).await;
    assert_eq!(
        (status, answer["error"].as_str()),
        (400, Some("invalid_siwe"))
    );
    // A foreign nonce (issued to another device key) is refused and not burned...
    let challenge = stack.challenge(&key, &w).await;
    let body = signed_variant(&challenge, &w, |_| {});
    let (status, answer) = stack
        .call(&other_key, "POST", verify, Some(&body), None)
        .await;
    assert_eq!(
        (status, answer["error"].as_str()),
        (400, Some("invalid_siwe")),
        "{answer}"
    );
    // ...so its owner can still use it, once.
    let (status, answer) = stack.call(&key, "POST", verify, Some(&body), None).await;
    assert_eq!(status, 200, "{answer}");
    let (status, answer) = stack.call(&key, "POST", verify, Some(&body), None).await;
    assert_eq!(
        (status, answer["error"].as_str()),
        (400, Some("invalid_siwe")),
        "reused nonce: {answer}"
    );
    // A nonce the server never issued.
    let mut body = signed_variant(&challenge, &w, |m| m.nonce = "abcdefgh12345678x".into());
    body["signature"] =
        json!(sign_message(&w, body["message"].as_str().expect("text").as_bytes()).to_hex());
    let (status, answer) = stack.call(&key, "POST", verify, Some(&body), None).await;
    assert_eq!(
        (status, answer["error"].as_str()),
        (400, Some("invalid_siwe"))
    );
    // An expired challenge.
    let challenge = stack.challenge(&key, &w).await;
    stack.clock.advance(Duration::from_secs(601));
    let body = json!({"request_id": challenge["request_id"],
        "signature": sign_message(&w, challenge["message"].as_str().expect("m").as_bytes()).to_hex()});
    let (status, answer) = stack.call(&key, "POST", verify, Some(&body), None).await;
    assert_eq!(
        (status, answer["error"].as_str()),
        (400, Some("invalid_siwe"))
    );

    // A managed wallet (the master's own W(omni)) never logs in.
    let master = master_omni("agentkeys", &w.address().to_string()).expect("omni");
    let k3 = load_k3(&dir.path().join("keys/k3.key")).expect("k3");
    let managed = derive_wallet(&k3, &master).expect("wallet");
    let (status, answer) = stack.login(&key, &managed).await;
    assert_eq!(
        (status, answer["error"].as_str()),
        (403, Some("managed_wallet")),
        "{answer}"
    );
    assert_eq!(
        stack
            .server
            .runtime()
            .store()
            .masters(None, 10)
            .expect("read"),
        [master]
    );
    stack
        .server
        .stop(Duration::from_secs(5))
        .await
        .expect("stops");
}

#[actix::test]
async fn closed_and_allowlist_registration_refuse_new_masters() {
    let dir = tempfile::tempdir().expect("tempdir");
    let stack = start(dir.path(), Some("closed")).await;
    let (status, answer) = stack.login(&device(), &wallet(3)).await;
    assert_eq!(
        (status, answer["error"].as_str()),
        (403, Some("registration_closed"))
    );
    assert!(
        stack
            .server
            .runtime()
            .store()
            .masters(None, 10)
            .expect("read")
            .is_empty()
    );
    stack
        .server
        .stop(Duration::from_secs(5))
        .await
        .expect("stops");

    let stack = start(dir.path(), Some("allowlist")).await;
    let (status, answer) = stack.login(&device(), &wallet(3)).await;
    assert_eq!(
        (status, answer["error"].as_str()),
        (403, Some("registration_closed"))
    );
    let allowed = agentkeys_gateway::admin::call(
        dir.path(),
        &agentkeys_gateway::admin::AdminRequest::Allow {
            action: agentkeys_gateway::admin::AllowAction::Add,
            entry: Some(wallet(3).address().to_checksum()),
        },
    )
    .await
    .expect("admin answers");
    assert_eq!(allowed["ok"], true, "{allowed}");
    let (status, answer) = stack.login(&device(), &wallet(3)).await;
    assert_eq!(status, 200, "{answer}");
    stack
        .server
        .stop(Duration::from_secs(5))
        .await
        .expect("stops");
}

#[actix::test]
async fn siwe_chains_are_configurable() {
    let dir = tempfile::tempdir().expect("tempdir");
    let stack = common::start_with(
        dir.path(),
        agentkeys_gateway::config::Layer::default().with("siwe_chains", "1,84532"),
    )
    .await;
    let key = common::device();
    let address = common::wallet(3).address().to_string();
    let (status, challenge) = stack
        .call(
            &key,
            "POST",
            "/v1/auth/wallet/start",
            Some(&json!({"address": address, "chain_id": 84532})),
            None,
        )
        .await;
    assert_eq!(status, 200, "{challenge}");
    assert!(
        challenge["message"]
            .as_str()
            .is_some_and(|m| m.contains("Chain ID: 84532"))
    );
    let (status, body) = stack
        .call(
            &key,
            "POST",
            "/v1/auth/wallet/start",
            Some(&json!({"address": address, "chain_id": 5})),
            None,
        )
        .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("invalid_siwe")),
        "{body}"
    );
}
