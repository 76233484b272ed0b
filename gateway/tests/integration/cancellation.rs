//! State changes do not depend on the HTTP request staying alive (DESIGN §5). Each test sends a
//! change, waits until the store's writer has answered it, then drops the request (the client
//! hangs up, so the server drops the handler's future) and checks that memory and store agree:
//! the narrowed scope is refused, the deleted device is refused, the created child exists exactly
//! once, the redeemed code and the claimed pairing are usable.

use crate::common;

use std::time::Duration;

use agentkeys_gateway::client::DeviceKey;
use agentkeys_tests::wait_until;
use common::{PUBLIC_URL, Stack, Who, device, link, master, start};
use serde_json::{Value, json};

fn writes(stack: &Stack) -> u64 {
    stack.server.runtime().store().writer_counts().writes
}

/// Sends the request, waits until the store has answered one more write, then hangs up; returns
/// once the actor's turn that made the change has ended. A change to an actor's memory is applied
/// in the same turn just after its commit, and a concurrent request may still be answered from the
/// memory before it (the change has not been acknowledged yet, so that is linearizable); what the
/// tests check is that the change is neither lost nor undone because the caller went away.
async fn hang_up_after_commit(
    stack: &Stack,
    key: &DeviceKey,
    token: Option<&str>,
    method: &str,
    path: &str,
    body: Value,
) {
    let proof = key
        .proof(
            method,
            &format!("{PUBLIC_URL}{path}"),
            stack.now(),
            token,
            None,
        )
        .expect("proof");
    let mut request = stack
        .http
        .request(
            reqwest::Method::from_bytes(method.as_bytes()).expect("method"),
            format!("{}{path}", stack.base),
        )
        .header("dpop", proof)
        .json(&body);
    if let Some(token) = token {
        request = request.header("authorization", format!("DPoP {token}"));
    }
    let before = writes(stack);
    let sent = tokio::spawn(request.send());
    assert!(
        wait_until(|| writes(stack) > before, Duration::from_secs(10)).await,
        "the change was never written"
    );
    sent.abort();
    let _ = sent.await;
    let runtime = stack.server.runtime();
    assert!(
        wait_until(|| runtime.calls_in_flight() == 0, Duration::from_secs(10)).await,
        "the actor's turn never ended"
    );
}

/// Creates `label` under `boss` with `scopes` and links a fresh device to it.
async fn agent(stack: &Stack, boss: &Who, label: &str, scopes: &[&str]) -> Who {
    let body = json!({"label": label, "scopes": scopes});
    let (status, created) = boss.call(stack, "POST", "/v1/actors", Some(body)).await;
    assert_eq!(status, 201, "{created}");
    link(stack, boss, created["omni"].as_str().expect("omni")).await
}

async fn sign(stack: &Stack, who: &Who) -> (u16, Value) {
    let body = json!({"message": "hello"});
    who.call(stack, "POST", "/v1/sign/eip191", Some(body)).await
}

#[actix::test]
async fn a_narrowed_scope_holds_when_the_caller_hangs_up() {
    let dir = tempfile::tempdir().expect("tempdir");
    let stack = start(dir.path(), None).await;
    let boss = master(&stack, 91).await;
    let bot = agent(&stack, &boss, "bot", &["sign:eip191", "sign:eip712"]).await;
    assert_eq!(
        sign(&stack, &bot).await.0,
        200,
        "the agent's actor is active"
    );

    let path = format!("/v1/actors/{}/scopes", bot.omni);
    let body = json!({"scopes": ["sign:eip712"]});
    hang_up_after_commit(&stack, &boss.key, Some(&boss.token), "PUT", &path, body).await;

    for _ in 0..20 {
        let (status, answer) = sign(&stack, &bot).await;
        assert_eq!(
            (status, answer["error"].as_str()),
            (403, Some("scope_denied")),
            "{answer}"
        );
    }
    let (_, shown) = boss
        .call(&stack, "GET", &format!("/v1/actors/{}", bot.omni), None)
        .await;
    assert_eq!(shown["scopes"], json!(["sign:eip712"]));
}

#[actix::test]
async fn a_deleted_device_stays_deleted_when_the_caller_hangs_up() {
    let dir = tempfile::tempdir().expect("tempdir");
    let stack = start(dir.path(), None).await;
    let boss = master(&stack, 92).await;
    let bot = agent(&stack, &boss, "bot", &["sign:eip191"]).await;
    assert_eq!(sign(&stack, &bot).await.0, 200);
    let (_, devices) = boss
        .call(
            &stack,
            "GET",
            &format!("/v1/actors/{}/devices", bot.omni),
            None,
        )
        .await;
    let bid = devices["devices"][0]["binding_id"].as_u64().expect("bid");

    let path = format!("/v1/actors/{}/devices/{bid}", bot.omni);
    hang_up_after_commit(
        &stack,
        &boss.key,
        Some(&boss.token),
        "DELETE",
        &path,
        json!(null),
    )
    .await;

    for _ in 0..20 {
        let (status, answer) = sign(&stack, &bot).await;
        assert_eq!(
            (status, answer["error"].as_str()),
            (401, Some("binding_revoked")),
            "{answer}"
        );
    }
}

#[actix::test]
async fn a_created_child_exists_once_when_the_caller_hangs_up() {
    let dir = tempfile::tempdir().expect("tempdir");
    let stack = start(dir.path(), None).await;
    let boss = master(&stack, 93).await;
    let body = json!({"label": "once", "scopes": ["sign:eip191"]});
    hang_up_after_commit(
        &stack,
        &boss.key,
        Some(&boss.token),
        "POST",
        "/v1/actors",
        body.clone(),
    )
    .await;

    let (status, again) = boss.call(&stack, "POST", "/v1/actors", Some(body)).await;
    assert_eq!(status, 200, "the retry finds the child: {again}");
    let (_, tree) = boss
        .call(
            &stack,
            "GET",
            &format!("/v1/actors/{}/tree", boss.omni),
            None,
        )
        .await;
    let labels: Vec<&str> = tree["entries"]
        .as_array()
        .expect("entries")
        .iter()
        .filter_map(|a| a["label"].as_str())
        .filter(|l| *l == "once")
        .collect();
    assert_eq!(labels, ["once"], "{tree}");
}

#[actix::test]
async fn a_redeemed_code_binds_once_when_the_caller_hangs_up() {
    let dir = tempfile::tempdir().expect("tempdir");
    let stack = start(dir.path(), None).await;
    let boss = master(&stack, 94).await;
    let (_, created) = boss
        .call(
            &stack,
            "POST",
            "/v1/actors",
            Some(json!({"label": "bot", "scopes": ["sign:eip191"]})),
        )
        .await;
    let omni = created["omni"].as_str().expect("omni");
    let (_, code) = boss
        .call(
            &stack,
            "POST",
            &format!("/v1/actors/{omni}/link-codes"),
            Some(json!({})),
        )
        .await;
    let key = device();
    let body = json!({"code": code["code"]});
    hang_up_after_commit(&stack, &key, None, "POST", "/v1/link/redeem", body.clone()).await;

    // The same key again gets a session for the binding the lost answer made.
    let (status, session) = stack
        .call(&key, "POST", "/v1/link/redeem", Some(&body), None)
        .await;
    assert_eq!(status, 200, "{session}");
    let bot = Who::from_session(key, &session);
    assert_eq!(sign(&stack, &bot).await.0, 200);
    let (_, devices) = boss
        .call(&stack, "GET", &format!("/v1/actors/{omni}/devices"), None)
        .await;
    assert_eq!(
        devices["devices"].as_array().map(Vec::len),
        Some(1),
        "{devices}"
    );
}

#[actix::test]
async fn a_pairing_claim_completes_when_the_caller_hangs_up() {
    let dir = tempfile::tempdir().expect("tempdir");
    let stack = start(dir.path(), None).await;
    let boss = master(&stack, 95).await;
    let agent_key = device();
    let (status, started) = stack
        .call(
            &agent_key,
            "POST",
            "/v1/pairing/request",
            Some(&json!({})),
            None,
        )
        .await;
    assert_eq!(status, 200, "{started}");
    let body = json!({"code": started["code"], "label": "paired", "scopes": ["sign:eip191"]});
    hang_up_after_commit(
        &stack,
        &boss.key,
        Some(&boss.token),
        "POST",
        "/v1/pairing/claim",
        body,
    )
    .await;

    let poll = json!({"request_id": started["request_id"]});
    // The claim settles on its own task right after the commit; poll until it shows.
    let mut answer = (0, json!(null));
    for _ in 0..100 {
        answer = stack
            .call(&agent_key, "POST", "/v1/pairing/poll", Some(&poll), None)
            .await;
        if answer.1["status"] == "claimed" {
            break;
        }
        tokio::task::yield_now().await;
    }
    assert_eq!(answer.1["status"], "claimed", "{}", answer.1);
    let paired = Who::from_session(agent_key, &answer.1);
    assert_eq!(sign(&stack, &paired).await.0, 200);
}
