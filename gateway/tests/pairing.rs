//! Agent-initiated pairing end to end: two agent machines (two device keys), one master; a
//! second claim of a code fails; a claim onto an existing label adds a binding; a deleted
//! device's token fails at once.

mod common;

use std::time::Duration;

use agentkeys_gateway::client::DeviceKey;
use common::{Stack, device, start, wallet};
use serde_json::{Value, json};

async fn pair_request(stack: &Stack, key: &DeviceKey) -> Value {
    let (status, started) = stack
        .call(key, "POST", "/v1/pairing/request", Some(&json!({})), None)
        .await;
    assert_eq!(status, 200, "{started}");
    started
}

async fn poll(stack: &Stack, key: &DeviceKey, request_id: &Value) -> (u16, Value) {
    stack
        .call(
            key,
            "POST",
            "/v1/pairing/poll",
            Some(&json!({ "request_id": request_id })),
            None,
        )
        .await
}

#[actix::test]
async fn agents_pair_from_their_own_machines() {
    let dir = tempfile::tempdir().expect("tempdir");
    let stack = start(dir.path(), None).await;
    let master_key = device();
    let (_, session) = stack.login(&master_key, &wallet(71)).await;
    let token = session["session_jwt"].as_str().expect("token").to_string();
    let claim = |body: Value| {
        let (key, token) = (&master_key, token.clone());
        let stack = &stack;
        async move {
            stack
                .call(key, "POST", "/v1/pairing/claim", Some(&body), Some(&token))
                .await
        }
    };

    // Machine A asks; the code and fingerprint are shown there.
    let machine_a = device();
    let started = pair_request(&stack, &machine_a).await;
    let code = started["code"].as_str().expect("code");
    assert_eq!(code.len(), 24, "100 bits in dashed groups");
    let fingerprint = started["fingerprint"].as_str().expect("fingerprint");
    assert_eq!(
        poll(&stack, &machine_a, &started["request_id"]).await.1["status"],
        "pending"
    );
    assert_eq!(
        poll(&stack, &device(), &started["request_id"]).await.0,
        404,
        "another key"
    );

    // The master claims: the answer shows the same fingerprint to cross-check.
    let (status, claimed) =
        claim(json!({"code": code, "label": "worker", "scopes": ["sign:eip191"]})).await;
    assert_eq!(status, 200, "{claimed}");
    assert_eq!(claimed["fingerprint"], fingerprint);
    assert_eq!(claimed["created"], true);
    assert_eq!(claimed["path"], "//worker");
    let (status, again) = claim(json!({"code": code, "label": "other"})).await;
    assert_eq!(
        (status, again["error"].as_str()),
        (409, Some("link_code_used"))
    );

    let (status, polled) = poll(&stack, &machine_a, &started["request_id"]).await;
    assert_eq!(status, 200, "{polled}");
    assert_eq!(polled["status"], "claimed");
    let token_a = polled["session_jwt"].as_str().expect("session").to_string();
    let (status, signed) = stack
        .call(
            &machine_a,
            "POST",
            "/v1/sign/eip191",
            Some(&json!({"message": "paired"})),
            Some(&token_a),
        )
        .await;
    assert_eq!(status, 200, "{signed}");

    // Machine B claims onto the existing label: one agent, two bindings.
    let machine_b = device();
    let started_b = pair_request(&stack, &machine_b).await;
    let (status, claimed_b) = claim(json!({"code": started_b["code"], "label": "worker"})).await;
    assert_eq!(status, 200, "{claimed_b}");
    assert_eq!(
        (claimed_b["created"].as_bool(), claimed_b["omni"].as_str()),
        (Some(false), claimed["omni"].as_str())
    );
    let (_, polled_b) = poll(&stack, &machine_b, &started_b["request_id"]).await;
    let token_b = polled_b["session_jwt"]
        .as_str()
        .expect("session")
        .to_string();
    let omni = claimed["omni"].as_str().expect("omni");
    let (_, devices) = stack
        .call(
            &master_key,
            "GET",
            &format!("/v1/actors/{omni}/devices"),
            None,
            Some(&token),
        )
        .await;
    assert_eq!(devices["devices"].as_array().expect("list").len(), 2);

    // Deleting B's device kills B's token at once; A is untouched.
    let bid = claimed_b["binding_id"].as_u64().expect("bid");
    let (status, _) = stack
        .call(
            &master_key,
            "DELETE",
            &format!("/v1/actors/{omni}/devices/{bid}"),
            None,
            Some(&token),
        )
        .await;
    assert_eq!(status, 200);
    let (status, body) = stack
        .call(&machine_b, "GET", "/v1/whoami", None, Some(&token_b))
        .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (401, Some("binding_revoked"))
    );
    assert_eq!(
        stack
            .call(&machine_a, "GET", "/v1/whoami", None, Some(&token_a))
            .await
            .0,
        200
    );

    // An expired pairing.
    let machine_c = device();
    let started_c = pair_request(&stack, &machine_c).await;
    stack.clock.advance(Duration::from_secs(601));
    let (status, body) = claim(json!({"code": started_c["code"], "label": "late"})).await;
    assert_eq!((status, body["error"].as_str()), (410, Some("expired")));
    assert_eq!(
        poll(&stack, &machine_c, &started_c["request_id"]).await.0,
        410
    );
    stack
        .server
        .stop(Duration::from_secs(5))
        .await
        .expect("stops");
}
