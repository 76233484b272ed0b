//! Email magic-link login end to end with the log mailer: the link read from the outbox, the
//! interstitial page, the confirm code, the status poll; every failure with its code; rate
//! limits with and without a trusted proxy.

use crate::common;

use std::time::Duration;

use agentkeys_actors::crypto::omni::{Identity, identity_omni, master_omni};
use agentkeys_actors::crypto::wallet::derive_wallet;
use agentkeys_actors::signer::keys::load_k3;
use agentkeys_gateway::client::DeviceKey;
use agentkeys_gateway::config::Layer;
use common::{PUBLIC_URL, Stack, device, start, start_with, token_from_outbox};
use serde_json::{Value, json};

/// Asks for a link for `email` with `key`; returns the answer.
async fn ask(stack: &Stack, key: &DeviceKey, email: &str) -> (u16, Value) {
    stack
        .call(
            key,
            "POST",
            "/v1/auth/email/request",
            Some(&json!({ "email": email })),
            None,
        )
        .await
}

pub(crate) async fn post_verify(stack: &Stack, body: &Value) -> (u16, Value) {
    let response = stack
        .http
        .post(format!("{}/v1/auth/email/verify", stack.base))
        .json(body)
        .send()
        .await
        .expect("sent");
    let status = response.status().as_u16();
    (status, response.json().await.expect("json"))
}

async fn poll(stack: &Stack, key: &DeviceKey, request_id: &str) -> (u16, Value) {
    let path = format!("/v1/auth/email/status/{request_id}");
    stack.call(key, "GET", &path, None, None).await
}

fn code_of(started: &Value) -> String {
    started["confirm_code"].as_str().expect("code").to_string()
}

#[actix::test]
async fn magic_link_login_creates_the_email_master() {
    let dir = tempfile::tempdir().expect("tempdir");
    let stack = start(dir.path(), None).await;
    let key = device();
    let (status, started) = stack
        .call(
            &key,
            "POST",
            "/v1/auth/email/request",
            Some(&json!({"email": "  Alice@Example.COM "})),
            None,
        )
        .await;
    assert_eq!(status, 200, "{started}");
    let request_id = started["request_id"].as_str().expect("id").to_string();
    let code = code_of(&started);
    assert_eq!(code.len(), 7, "XXX-XXX: {code}");
    assert_eq!(poll(&stack, &key, &request_id).await.1["status"], "pending");
    let outbox_mode = std::fs::metadata(dir.path().join(format!("outbox/{request_id}.eml")))
        .map(|m| std::os::unix::fs::PermissionsExt::mode(&m.permissions()) & 0o777)
        .expect("file");
    assert_eq!(outbox_mode, 0o600);
    let token = token_from_outbox(dir.path(), &request_id);
    assert_eq!(token.len(), 43, "256 bits, base64url");

    // The interstitial: safe headers, no third-party assets; a scanner's GET consumes nothing.
    let page = stack
        .http
        .get(format!("{}/auth/email/landing", stack.base))
        .send()
        .await
        .expect("sent");
    assert_eq!(page.status(), 200);
    let headers = page.headers().clone();
    assert_eq!(headers["referrer-policy"], "no-referrer");
    assert_eq!(headers["x-frame-options"], "DENY");
    let csp = headers["content-security-policy"].to_str().expect("ascii");
    assert!(
        csp.contains("default-src 'none'") && !csp.contains("http"),
        "{csp}"
    );
    let html = page.text().await.expect("html");
    assert!(
        !html.contains("http://") && !html.contains("https://"),
        "no external assets"
    );
    assert!(html.contains("/v1/auth/email/verify"));

    // Without the code the page is told who asked, and nothing changes.
    let (status, described) = post_verify(&stack, &json!({ "token": token })).await;
    assert_eq!(status, 200, "{described}");
    assert_eq!(described["status"], "confirm");
    assert_eq!(described["email"], "alice@example.com");
    assert_eq!(described["requester_ip"], "127.0.0.1");
    // Another device key cannot poll this request.
    assert_eq!(poll(&stack, &device(), &request_id).await.0, 404);
    let (status, body) =
        post_verify(&stack, &json!({"token": token, "confirm_code": "ZZZ-ZZZ"})).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("invalid_confirm_code"))
    );
    // Codes are forgiving about case, dashes and I/L/O.
    let typed = code.replace('-', "").to_lowercase();
    let (status, body) = post_verify(&stack, &json!({"token": token, "confirm_code": typed})).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["status"], "verified");

    let (status, verified) = poll(&stack, &key, &request_id).await;
    assert_eq!(status, 200, "{verified}");
    assert_eq!(verified["status"], "verified");
    let k3 = load_k3(&dir.path().join("keys/k3.key")).expect("k3");
    let identity = identity_omni("agentkeys", Identity::Email("alice@example.com")).expect("id");
    let anchor = derive_wallet(&k3, &identity).expect("anchor").address();
    let master = master_omni("agentkeys", &anchor.to_string()).expect("omni");
    assert_eq!(verified["omni"], master.to_string());
    let token_jwt = verified["session_jwt"].as_str().expect("session");
    let (status, me) = stack
        .call(&key, "GET", "/v1/whoami", None, Some(token_jwt))
        .await;
    assert_eq!(status, 200, "{me}");
    assert_eq!(me["identity"]["type"], "email");
    assert_eq!(me["anchor_wallet"], anchor.to_string());
    // On request, an email master signs with its anchor wallet (where upstream users hold funds).
    let (status, signed) = stack
        .call(
            &key,
            "POST",
            "/v1/sign/eip191",
            Some(&json!({"message": "from the anchor", "wallet": "anchor"})),
            Some(token_jwt),
        )
        .await;
    assert_eq!(status, 200, "{signed}");
    assert_eq!(signed["address"], anchor.to_checksum());
    let (_, own) = stack
        .call(
            &key,
            "POST",
            "/v1/sign/eip191",
            Some(&json!({"message": "from W(omni)"})),
            Some(token_jwt),
        )
        .await;
    assert_eq!(own["address"], me["wallet"]);

    // The link works once.
    let (status, body) = post_verify(&stack, &json!({"token": token, "confirm_code": code})).await;
    assert_eq!((status, body["error"].as_str()), (410, Some("expired")));
    let (status, body) = post_verify(&stack, &json!({"token": "not-a-token"})).await;
    assert_eq!((status, body["error"].as_str()), (404, Some("not_found")));
    // The anchor wallet is managed: it can never sign a SIWE login.
    assert!(
        stack
            .server
            .ledger()
            .is_managed_wallet(&anchor.0)
            .expect("read")
    );
    stack
        .server
        .stop(Duration::from_secs(5))
        .await
        .expect("stops");
}

#[actix::test]
async fn expired_requests_and_guessed_codes_fail() {
    let dir = tempfile::tempdir().expect("tempdir");
    let stack = start(dir.path(), None).await;
    let key = device();
    let (_, started) = ask(&stack, &key, "bob@example.com").await;
    let id = started["request_id"].as_str().expect("id").to_string();
    let token = token_from_outbox(dir.path(), &id);
    stack.clock.advance(Duration::from_secs(601));
    let (status, body) = post_verify(
        &stack,
        &json!({"token": token, "confirm_code": code_of(&started)}),
    )
    .await;
    assert_eq!((status, body["error"].as_str()), (410, Some("expired")));
    assert_eq!(poll(&stack, &key, &id).await.0, 410);

    let (_, started) = ask(&stack, &key, "bob@example.com").await;
    let id = started["request_id"].as_str().expect("id").to_string();
    let token = token_from_outbox(dir.path(), &id);
    for _ in 0..5 {
        let (status, _) =
            post_verify(&stack, &json!({"token": token, "confirm_code": "000-000"})).await;
        assert_eq!(status, 400);
    }
    let (status, body) = post_verify(
        &stack,
        &json!({"token": token, "confirm_code": code_of(&started)}),
    )
    .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (410, Some("expired")),
        "burned after 5 guesses"
    );
    assert_eq!(poll(&stack, &key, &id).await.0, 410);
    stack
        .server
        .stop(Duration::from_secs(5))
        .await
        .expect("stops");
}

#[actix::test]
async fn closed_registration_is_reported_to_the_page_and_the_poller() {
    let dir = tempfile::tempdir().expect("tempdir");
    let stack = start(dir.path(), Some("closed")).await;
    let key = device();
    let (_, started) = ask(&stack, &key, "carol@example.com").await;
    let id = started["request_id"].as_str().expect("id").to_string();
    let token = token_from_outbox(dir.path(), &id);
    let (status, body) = post_verify(
        &stack,
        &json!({"token": token, "confirm_code": code_of(&started)}),
    )
    .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (403, Some("registration_closed"))
    );
    let (status, body) = poll(&stack, &key, &id).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (403, Some("registration_closed"))
    );
    stack
        .server
        .stop(Duration::from_secs(5))
        .await
        .expect("stops");
}

#[actix::test]
async fn five_links_per_address_per_hour() {
    let dir = tempfile::tempdir().expect("tempdir");
    let stack = start(dir.path(), None).await;
    let key = device();
    for _ in 0..5 {
        assert_eq!(ask(&stack, &key, "dave@example.com").await.0, 200);
    }
    let proof = key
        .proof(
            "POST",
            &format!("{PUBLIC_URL}/v1/auth/email/request"),
            stack.now(),
            None,
            None,
        )
        .expect("proof");
    let response = stack
        .http
        .post(format!("{}/v1/auth/email/request", stack.base))
        .header("dpop", proof)
        .json(&json!({"email": "Dave@example.com"}))
        .send()
        .await
        .expect("sent");
    assert_eq!(response.status(), 429);
    let retry: u64 = response.headers()["retry-after"]
        .to_str()
        .expect("ascii")
        .parse()
        .expect("seconds");
    assert!(retry > 3_000 && retry <= 3_600, "{retry}");
    assert_eq!(ask(&stack, &key, "erin@example.com").await.0, 200);
    stack.clock.advance(Duration::from_secs(3_600));
    assert_eq!(ask(&stack, &key, "dave@example.com").await.0, 200);
    stack
        .server
        .stop(Duration::from_secs(5))
        .await
        .expect("stops");
}

/// Sends unauthenticated requests as `forwarded_for` until one is limited; returns how many
/// passed.
async fn burst(stack: &Stack, forwarded_for: &str) -> usize {
    for passed in 0..200 {
        let status = stack
            .http
            .get(format!("{}/auth/email/landing", stack.base))
            .header("x-forwarded-for", forwarded_for)
            .send()
            .await
            .expect("sent")
            .status();
        if status == 429 {
            return passed;
        }
    }
    200
}

#[actix::test]
async fn per_ip_limits_believe_forwarding_headers_only_from_trusted_proxies() {
    let dir = tempfile::tempdir().expect("tempdir");
    let direct = start(dir.path(), None).await;
    // Without a trusted proxy the header is the client's own claim: ignored.
    assert_eq!(burst(&direct, "203.0.113.1").await, 60);
    assert_eq!(
        burst(&direct, "203.0.113.2").await,
        0,
        "same peer, same bucket"
    );
    direct
        .server
        .stop(Duration::from_secs(5))
        .await
        .expect("stops");

    let dir = tempfile::tempdir().expect("tempdir");
    let proxied = start_with(
        dir.path(),
        Layer::default().with("trusted_proxies", "127.0.0.1"),
    )
    .await;
    assert_eq!(burst(&proxied, "203.0.113.1").await, 60);
    assert_eq!(burst(&proxied, "203.0.113.2").await, 60, "another client");
    // Time refills the bucket (the injected clock).
    proxied.clock.advance(Duration::from_secs(5));
    assert_eq!(burst(&proxied, "203.0.113.1").await, 5);
    proxied
        .server
        .stop(Duration::from_secs(5))
        .await
        .expect("stops");
}

#[actix::test]
async fn an_email_master_is_mailed_when_a_request_waits_for_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let stack = start(dir.path(), None).await;
    // An email master.
    let key = device();
    let (_, started) = ask(&stack, &key, "carol@example.com").await;
    let request_id = started["request_id"].as_str().expect("id").to_string();
    let token = token_from_outbox(dir.path(), &request_id);
    let verify = json!({"token": token, "confirm_code": code_of(&started)});
    assert_eq!(post_verify(&stack, &verify).await.0, 200);
    let (_, session) = poll(&stack, &key, &request_id).await;
    let carol = common::Who::from_session(key, &session);
    // Its agent, under a policy that asks above 1000 wei.
    let (status, bot) = carol
        .call(
            &stack,
            "POST",
            "/v1/actors",
            Some(json!({"label": "bot", "scopes": ["sign:tx:1"]})),
        )
        .await;
    assert_eq!(status, 201, "{bot}");
    let bot = common::link(&stack, &carol, bot["omni"].as_str().expect("omni")).await;
    let policy = json!({"tx": {"to": "any"},
        "approval": {"above": [{"asset": "native", "chain": 1, "amount": "1000"}]}});
    let (status, _) = carol
        .call(
            &stack,
            "PUT",
            &format!("/v1/actors/{}/policy", bot.omni),
            Some(policy),
        )
        .await;
    assert_eq!(status, 200);
    let tx = json!({"tx": {"chain_id": 1, "nonce": 0, "to": "0x1111111111111111111111111111111111111111",
        "value": "5000", "gas_limit": 21000, "max_fee_per_gas": 0, "max_priority_fee_per_gas": 0}});
    let (status, pending) = bot
        .call(&stack, "POST", "/v1/sign/transaction", Some(tx))
        .await;
    assert_eq!(status, 202, "{pending}");
    let id = pending["approval_id"].as_str().expect("id").to_string();

    let mail_path = dir.path().join("outbox").join(format!("approval-{id}.eml"));
    assert!(
        agentkeys_tests::wait_until(|| mail_path.exists(), Duration::from_secs(10)).await,
        "the approval mail is in the outbox"
    );
    let mail = std::fs::read_to_string(&mail_path).expect("mail");
    assert!(
        mail.starts_with("From: ") && mail.contains("To: carol@example.com"),
        "{mail}"
    );
    assert!(mail.contains(&bot.omni), "{mail}");
    assert!(
        mail.contains(&format!("agentkeys approvals approve {id}")),
        "{mail}"
    );
    assert!(mail.contains("5000 native on chain 1"), "{mail}");
    assert!(
        !mail.contains("http://") && !mail.contains("https://"),
        "no link: {mail}"
    );
}
