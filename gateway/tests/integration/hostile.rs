//! Availability under hostile load, over real HTTP: each attack of the report, then the
//! legitimate requests that must still succeed.

use crate::common;

use std::time::Duration;

use agentkeys_gateway::client::DeviceKey;
use agentkeys_gateway::config::Layer;
use common::{PUBLIC_URL, Stack, answer, device, start, start_with, wallet};
use serde_json::{Value, json};

/// A logged-in master: its device key and session token.
async fn master(stack: &Stack, seed: u8) -> (DeviceKey, String) {
    let key = device();
    let (status, session) = stack.login(&key, &wallet(seed)).await;
    assert_eq!(status, 200, "{session}");
    (
        key,
        session["session_jwt"].as_str().expect("token").to_string(),
    )
}

/// A request with custom headers; answers status, headers and JSON body.
async fn raw(
    stack: &Stack,
    method: &str,
    path: &str,
    headers: &[(&str, String)],
    body: Option<&Value>,
) -> (u16, reqwest::header::HeaderMap, Value) {
    let method = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
    let mut request = stack.http.request(method, format!("{}{path}", stack.base));
    for (name, value) in headers {
        request = request.header(*name, value);
    }
    if let Some(body) = body {
        request = request.json(body);
    }
    let response = request.send().await.expect("sent");
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let body = response.json().await.unwrap_or(Value::Null);
    (status, headers, body)
}

#[actix::test]
async fn junk_tokens_record_nothing_and_lock_nobody_out() {
    let dir = tempfile::tempdir().expect("tempdir");
    let stack = start(dir.path(), None).await;
    let (alice, token) = master(&stack, 1).await;

    // The attack: a throw-away key, a junk token, fresh proofs with the matching `ath`.
    let attacker = device();
    let junk = "x";
    let url = format!("{PUBLIC_URL}/v1/whoami");
    let mut first = None;
    for _ in 0..300 {
        let proof = attacker
            .proof("GET", &url, stack.now(), Some(junk), None)
            .expect("proof");
        let (status, body, _) = stack
            .send("GET", "/v1/whoami", None, Some(junk), &proof)
            .await;
        assert_eq!(
            (status, body["error"].as_str()),
            (401, Some("invalid_token"))
        );
        first.get_or_insert(proof);
    }
    // The first junk proof was never recorded: sent again it is still judged by its token,
    // not refused as a replay (which would mean the anonymous flood filled the cache).
    let first = first.expect("sent");
    let (status, body, _) = stack
        .send("GET", "/v1/whoami", None, Some(junk), &first)
        .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (401, Some("invalid_token")),
        "{body}"
    );

    // Everyone else is served: whoami, signing, and a new login.
    let (status, me) = stack
        .call(&alice, "GET", "/v1/whoami", None, Some(&token))
        .await;
    assert_eq!(status, 200, "{me}");
    let (status, signed) = stack
        .call(
            &alice,
            "POST",
            "/v1/sign/eip191",
            Some(&json!({"message": "still here"})),
            Some(&token),
        )
        .await;
    assert_eq!(status, 200, "{signed}");
    let (_, bob_token) = master(&stack, 2).await;
    assert!(!bob_token.is_empty());

    // A valid token's proof is recorded: the same proof again is a replay.
    let proof = alice
        .proof("GET", &url, stack.now(), Some(&token), None)
        .expect("proof");
    assert_eq!(
        stack
            .send("GET", "/v1/whoami", None, Some(&token), &proof)
            .await
            .0,
        200
    );
    let (status, body, _) = stack
        .send("GET", "/v1/whoami", None, Some(&token), &proof)
        .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (401, Some("invalid_dpop_proof"))
    );
}

#[actix::test]
async fn each_binding_has_its_own_rate_and_honest_traffic_never_hits_a_global_cap() {
    let dir = tempfile::tempdir().expect("tempdir");
    let stack = start_with(
        dir.path(),
        Layer::default()
            .with("binding_rate_per_second", "5")
            .with("binding_burst", "5"),
    )
    .await;
    let (alice, alice_token) = master(&stack, 1).await;
    let (bob, bob_token) = master(&stack, 2).await;
    // The logins spent no binding tokens (they have no session yet).
    for _ in 0..5 {
        let (status, body) = stack
            .call(&alice, "GET", "/v1/whoami", None, Some(&alice_token))
            .await;
        assert_eq!(status, 200, "{body}");
    }
    let url = format!("{PUBLIC_URL}/v1/whoami");
    let proof = alice
        .proof("GET", &url, stack.now(), Some(&alice_token), None)
        .expect("proof");
    let (status, headers, body) = raw(
        &stack,
        "GET",
        "/v1/whoami",
        &[
            ("dpop", proof),
            ("authorization", format!("DPoP {alice_token}")),
        ],
        None,
    )
    .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (429, Some("rate_limited")),
        "{body}"
    );
    assert_eq!(headers["retry-after"], "1");
    // Another binding is not affected.
    let (status, _) = stack
        .call(&bob, "GET", "/v1/whoami", None, Some(&bob_token))
        .await;
    assert_eq!(status, 200);

    // Sustained at its rate for 80 seconds (400 requests, every proof recorded and live for
    // a minute): never refused, because the replay room is per binding and sized from the rate.
    for _ in 0..80 {
        stack.clock.advance(Duration::from_secs(1));
        for _ in 0..5 {
            let (status, body) = stack
                .call(&alice, "GET", "/v1/whoami", None, Some(&alice_token))
                .await;
            assert_eq!(status, 200, "{body}");
        }
    }
}

#[actix::test]
async fn iat_at_the_extremes_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let stack = start(dir.path(), None).await;
    let (alice, token) = master(&stack, 1).await;
    let url = format!("{PUBLIC_URL}/v1/whoami");
    for iat in [i64::MIN + stack.now(), i64::MIN, i64::MAX] {
        let proof = alice
            .proof("GET", &url, iat, Some(&token), None)
            .expect("proof");
        for _ in 0..2 {
            let (status, body, _) = stack
                .send("GET", "/v1/whoami", None, Some(&token), &proof)
                .await;
            assert_eq!(
                (status, body["error"].as_str()),
                (401, Some("invalid_dpop_proof")),
                "iat {iat}: {body}"
            );
        }
    }
    assert_eq!(
        stack
            .call(&alice, "GET", "/v1/whoami", None, Some(&token))
            .await
            .0,
        200
    );
}

#[actix::test]
async fn eip712_amplification_is_refused_before_the_signer() {
    let dir = tempfile::tempdir().expect("tempdir");
    let stack = start(dir.path(), None).await;
    let (alice, token) = master(&stack, 1).await;
    let attack = json!({"typed_data": agentkeys_tests::eip712_closure_document(59, 1024)});
    let (status, body) = stack
        .call(
            &alice,
            "POST",
            "/v1/sign/eip712",
            Some(&attack),
            Some(&token),
        )
        .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("invalid_typed_data")),
        "{body}"
    );
    assert!(
        body["message"]
            .as_str()
            .is_some_and(|m| m.contains("limit")),
        "{body}"
    );

    // A normal document still signs, and another user still logs in.
    let note = json!({"typed_data": {"types": {"Note": [{"name": "text", "type": "string"}]},
        "primaryType": "Note", "domain": {"name": "t", "chainId": 1}, "message": {"text": "hi"}}});
    let (status, body) = stack
        .call(&alice, "POST", "/v1/sign/eip712", Some(&note), Some(&token))
        .await;
    assert_eq!(status, 200, "{body}");
    master(&stack, 2).await;
}

/// Starts a wallet login as `ip` (behind the trusted proxy) with a fresh key.
async fn start_login(stack: &Stack, ip: &str, seed: u8) -> (u16, Value, DeviceKey) {
    let key = device();
    let url = format!("{PUBLIC_URL}/v1/auth/wallet/start");
    let proof = key
        .proof("POST", &url, stack.now(), None, None)
        .expect("proof");
    let body = json!({"address": wallet(seed).address().to_string(), "chain_id": 1});
    let (status, _, answer) = raw(
        stack,
        "POST",
        "/v1/auth/wallet/start",
        &[("dpop", proof), ("x-forwarded-for", ip.to_string())],
        Some(&body),
    )
    .await;
    (status, answer, key)
}

#[actix::test]
async fn a_few_addresses_cannot_fill_the_pending_logins() {
    let dir = tempfile::tempdir().expect("tempdir");
    let stack = start_with(
        dir.path(),
        Layer::default()
            .with("trusted_proxies", "127.0.0.1")
            .with("pending_per_client", "3")
            .with("pending_cap", "12"),
    )
    .await;
    // Four attacking addresses hold their share each: the map is full.
    for n in 1..=4 {
        let ip = format!("203.0.113.{n}");
        for _ in 0..3 {
            assert_eq!(start_login(&stack, &ip, 9).await.0, 200);
        }
        let (status, body, _) = start_login(&stack, &ip, 9).await;
        assert_eq!(
            (status, body["error"].as_str()),
            (429, Some("rate_limited")),
            "{body}"
        );
    }
    // An IPv6 client counts by its /64.
    for host in ["1", "2", "3"] {
        assert_eq!(
            start_login(&stack, &format!("2001:db8:0:1::{host}"), 9)
                .await
                .0,
            200
        );
    }
    let (status, _, _) = start_login(&stack, "2001:db8:0:1::ffff", 9).await;
    assert_eq!(status, 429, "same /64");

    // A newcomer at the cap is served (the heaviest client loses its oldest challenge), and
    // completes the login.
    let (status, challenge, key) = start_login(&stack, "198.51.100.7", 5).await;
    assert_eq!(status, 200, "{challenge}");
    let (status, session) = stack
        .call(
            &key,
            "POST",
            "/v1/auth/wallet/verify",
            Some(&answer(&challenge, &wallet(5))),
            None,
        )
        .await;
    assert_eq!(status, 200, "{session}");
}

/// `POST /v1/auth/email/request` for the victim's address, as `ip` with `user_agent`.
async fn email_request(stack: &Stack, ip: &str, user_agent: &str) -> (u16, Value) {
    let key = device();
    let url = format!("{PUBLIC_URL}/v1/auth/email/request");
    let proof = key
        .proof("POST", &url, stack.now(), None, None)
        .expect("proof");
    let headers = [
        ("dpop", proof),
        ("x-forwarded-for", ip.to_string()),
        ("user-agent", user_agent.to_string()),
    ];
    let body = json!({"email": "victim@example.com"});
    let (status, _, answer) = raw(
        stack,
        "POST",
        "/v1/auth/email/request",
        &headers,
        Some(&body),
    )
    .await;
    (status, answer)
}

#[actix::test]
async fn email_links_are_shared_fairly_and_never_carry_the_requesters_text() {
    let dir = tempfile::tempdir().expect("tempdir");
    let stack = start_with(
        dir.path(),
        Layer::default().with("trusted_proxies", "127.0.0.1"),
    )
    .await;
    let phishing = "Your account is locked: visit https://evil.example/unlock";
    // The attacker spends only its own share.
    for _ in 0..5 {
        assert_eq!(email_request(&stack, "203.0.113.66", phishing).await.0, 200);
    }
    let (status, body) = email_request(&stack, "203.0.113.66", phishing).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (429, Some("rate_limited")),
        "{body}"
    );
    // The victim can still sign in from its own address.
    let firefox = "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0";
    let (status, started) = email_request(&stack, "198.51.100.20", firefox).await;
    assert_eq!(status, 200, "{started}");

    // No mail carries the requester's header text; it names a browser from a fixed list.
    let outbox: Vec<String> = std::fs::read_dir(dir.path().join("outbox"))
        .expect("outbox")
        .map(|e| std::fs::read_to_string(e.expect("entry").path()).expect("mail"))
        .collect();
    assert_eq!(outbox.len(), 6);
    assert!(
        outbox
            .iter()
            .all(|m| !m.contains("evil") && !m.contains("locked"))
    );
    assert!(outbox.iter().any(|m| m.contains("Firefox on Linux")));
    assert!(outbox.iter().any(|m| m.contains("unknown client")));

    // Nobody can mail-bomb the address: at most 20 links an hour, whoever asks.
    for n in 1..=14 {
        let _ = email_request(&stack, &format!("192.0.2.{n}"), firefox).await;
    }
    let (status, body) = email_request(&stack, "192.0.2.200", firefox).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (429, Some("rate_limited")),
        "{body}"
    );
    stack.clock.advance(Duration::from_secs(3600));
    assert_eq!(email_request(&stack, "192.0.2.200", firefox).await.0, 200);
}

#[actix::test]
async fn token_answers_are_not_cached() {
    let dir = tempfile::tempdir().expect("tempdir");
    let stack = start(dir.path(), None).await;
    let key = device();
    let challenge = stack.challenge(&key, &wallet(1)).await;
    let url = format!("{PUBLIC_URL}/v1/auth/wallet/verify");
    let proof = key
        .proof("POST", &url, stack.now(), None, None)
        .expect("proof");
    let (status, headers, session) = raw(
        &stack,
        "POST",
        "/v1/auth/wallet/verify",
        &[("dpop", proof)],
        Some(&answer(&challenge, &wallet(1))),
    )
    .await;
    assert_eq!(status, 200, "{session}");
    assert_eq!(headers["cache-control"], "no-store");
    let token = session["session_jwt"].as_str().expect("token");
    let url = format!("{PUBLIC_URL}/v1/oidc/token");
    let proof = key
        .proof("POST", &url, stack.now(), Some(token), None)
        .expect("proof");
    let (status, headers, minted) = raw(
        &stack,
        "POST",
        "/v1/oidc/token",
        &[("dpop", proof), ("authorization", format!("DPoP {token}"))],
        Some(&json!({})),
    )
    .await;
    assert_eq!(status, 200, "{minted}");
    assert_eq!(headers["cache-control"], "no-store");
}
