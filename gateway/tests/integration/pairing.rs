//! Agent-initiated pairing end to end: a machine pairs and gets its session; a second claim of
//! a code fails; a claim onto an existing label adds a binding; a deleted device's token fails
//! at once; an expired pairing is refused.

use crate::common;

use std::time::Duration;

use agentkeys_gateway::client::DeviceKey;
use common::{Stack, Who, device, master, start};
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

/// A paired machine: its key, the claim's answer and its session.
struct Paired {
    key: DeviceKey,
    claimed: Value,
    token: String,
}

async fn claim(stack: &Stack, boss: &Who, body: Value) -> (u16, Value) {
    boss.call(stack, "POST", "/v1/pairing/claim", Some(body))
        .await
}

/// A machine asks, `boss` claims it as `label`, the machine polls its session.
async fn pair(stack: &Stack, boss: &Who, label: &str) -> Paired {
    let key = device();
    let started = pair_request(stack, &key).await;
    let body = json!({"code": started["code"], "label": label, "scopes": ["sign:eip191"]});
    let (status, claimed) = claim(stack, boss, body).await;
    assert_eq!(status, 200, "{claimed}");
    let (status, polled) = poll(stack, &key, &started["request_id"]).await;
    assert_eq!(
        (status, polled["status"].as_str()),
        (200, Some("claimed")),
        "{polled}"
    );
    let token = polled["session_jwt"].as_str().expect("session").to_string();
    Paired {
        key,
        claimed,
        token,
    }
}

#[actix::test]
async fn a_claimed_pairing_gives_the_agent_its_session() {
    let dir = tempfile::tempdir().expect("tempdir");
    let stack = start(dir.path(), None).await;
    let boss = master(&stack, 71).await;

    // The machine asks; the code and fingerprint are shown there.
    let machine = device();
    let started = pair_request(&stack, &machine).await;
    let code = started["code"].as_str().expect("code");
    assert_eq!(code.len(), 24, "100 bits in dashed groups");
    let fingerprint = started["fingerprint"].as_str().expect("fingerprint");
    assert_eq!(
        poll(&stack, &machine, &started["request_id"]).await.1["status"],
        "pending"
    );
    assert_eq!(
        poll(&stack, &device(), &started["request_id"]).await.0,
        404,
        "another key"
    );

    // The master claims: the answer shows the same fingerprint to cross-check.
    let body = json!({"code": code, "label": "worker", "scopes": ["sign:eip191"]});
    let (status, claimed) = claim(&stack, &boss, body).await;
    assert_eq!(status, 200, "{claimed}");
    assert_eq!(claimed["fingerprint"], fingerprint);
    assert_eq!(claimed["created"], true);
    assert_eq!(claimed["path"], "//worker");
    let (status, again) = claim(&stack, &boss, json!({"code": code, "label": "other"})).await;
    assert_eq!(
        (status, again["error"].as_str()),
        (409, Some("link_code_used"))
    );

    let (status, polled) = poll(&stack, &machine, &started["request_id"]).await;
    assert_eq!(status, 200, "{polled}");
    assert_eq!(polled["status"], "claimed");
    let paired = Who::from_session(machine, &polled);
    let body = json!({"message": "paired"});
    let (status, signed) = paired
        .call(&stack, "POST", "/v1/sign/eip191", Some(body))
        .await;
    assert_eq!(status, 200, "{signed}");
}

#[actix::test]
async fn a_second_machine_pairs_onto_the_label_and_is_deleted_alone() {
    let dir = tempfile::tempdir().expect("tempdir");
    let stack = start(dir.path(), None).await;
    let boss = master(&stack, 72).await;
    let a = pair(&stack, &boss, "worker").await;
    let b = pair(&stack, &boss, "worker").await;
    // One agent, two bindings.
    assert_eq!(
        (b.claimed["created"].as_bool(), b.claimed["omni"].as_str()),
        (Some(false), a.claimed["omni"].as_str())
    );
    let omni = a.claimed["omni"].as_str().expect("omni");
    let path = format!("/v1/actors/{omni}/devices");
    let (_, devices) = boss.call(&stack, "GET", &path, None).await;
    assert_eq!(devices["devices"].as_array().expect("list").len(), 2);

    // Deleting B's device kills B's token at once; A is untouched.
    let bid = b.claimed["binding_id"].as_u64().expect("bid");
    let path = format!("/v1/actors/{omni}/devices/{bid}");
    assert_eq!(boss.call(&stack, "DELETE", &path, None).await.0, 200);
    let (status, body) = stack
        .call(&b.key, "GET", "/v1/whoami", None, Some(&b.token))
        .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (401, Some("binding_revoked"))
    );
    let (status, _) = stack
        .call(&a.key, "GET", "/v1/whoami", None, Some(&a.token))
        .await;
    assert_eq!(status, 200);
}

#[actix::test]
async fn an_expired_pairing_cannot_be_claimed_or_polled() {
    let dir = tempfile::tempdir().expect("tempdir");
    let stack = start(dir.path(), None).await;
    let boss = master(&stack, 73).await;
    let machine = device();
    let started = pair_request(&stack, &machine).await;
    stack.clock.advance(Duration::from_secs(601));
    let body = json!({"code": started["code"], "label": "late"});
    let (status, body) = claim(&stack, &boss, body).await;
    assert_eq!((status, body["error"].as_str()), (410, Some("expired")));
    assert_eq!(poll(&stack, &machine, &started["request_id"]).await.0, 410);
}

#[actix::test]
async fn a_pairing_claimed_as_a_device_binds_the_claimers_own_actor_never_a_higher_one() {
    let dir = tempfile::tempdir().expect("tempdir");
    let stack = start(dir.path(), None).await;
    let boss = master(&stack, 74).await;
    let bot = pair(&stack, &boss, "bot").await;
    let bot = Who {
        key: bot.key,
        token: bot.token,
        omni: bot.claimed["omni"].as_str().expect("omni").into(),
    };

    // A browser asks; the master claims it as another device of itself.
    let browser = device();
    let started = pair_request(&stack, &browser).await;
    let path = format!("/v1/actors/{}/devices", boss.omni);
    let body = json!({"code": started["code"], "label": "console"});
    let (status, added) = boss.call(&stack, "POST", &path, Some(body.clone())).await;
    assert_eq!(status, 200, "{added}");
    assert_eq!(added["omni"], boss.omni.as_str());
    assert_eq!(added["created"], false);
    assert_eq!(added["fingerprint"], started["fingerprint"]);
    let (status, again) = boss.call(&stack, "POST", &path, Some(body)).await;
    assert_eq!(
        (status, again["error"].as_str()),
        (409, Some("link_code_used"))
    );

    // Its session is the master's, on a binding of its own, listed and audited.
    let (status, polled) = poll(&stack, &browser, &started["request_id"]).await;
    assert_eq!(status, 200, "{polled}");
    let session = Who::from_session(browser, &polled);
    assert_eq!(session.omni, boss.omni);
    assert_eq!(polled["binding_id"], added["binding_id"]);
    let (status, me) = session.call(&stack, "GET", "/v1/whoami", None).await;
    assert_eq!((status, me["role"].as_str()), (200, Some("master")), "{me}");
    let (_, devices) = boss.call(&stack, "GET", &path, None).await;
    let labels: Vec<&str> = devices["devices"]
        .as_array()
        .expect("devices")
        .iter()
        .filter_map(|d| d["label"].as_str())
        .collect();
    assert!(labels.contains(&"console"), "{devices}");
    let (_, audit) = boss.call(&stack, "GET", "/v1/audit?limit=100", None).await;
    assert!(
        audit["rows"]
            .as_array()
            .expect("rows")
            .iter()
            .any(|r| r["operation"] == "device_add"
                && r["detail"] != audit["rows"][1]["detail"]
                && r["target"] == boss.omni.as_str()),
        "{audit}"
    );

    // Deleting the binding stops the browser at once.
    let bid = added["binding_id"].as_u64().expect("bid");
    let (status, _) = boss
        .call(&stack, "DELETE", &format!("{path}/{bid}"), None)
        .await;
    assert_eq!(status, 200);
    let (status, stopped) = session.call(&stack, "GET", "/v1/whoami", None).await;
    assert_eq!(
        (status, stopped["error"].as_str()),
        (401, Some("binding_revoked"))
    );

    // An agent cannot claim a device for its master: the master is not in its subtree.
    let other = device();
    let started = pair_request(&stack, &other).await;
    let (status, refused) = bot
        .call(
            &stack,
            "POST",
            &path,
            Some(json!({"code": started["code"]})),
        )
        .await;
    assert_eq!(
        (status, refused["error"].as_str()),
        (404, Some("not_found"))
    );
    // Refused before the code was taken: the master can still claim it for the agent.
    let (status, added) = boss
        .call(
            &stack,
            "POST",
            &format!("/v1/actors/{}/devices", bot.omni),
            Some(json!({"code": started["code"]})),
        )
        .await;
    assert_eq!(
        (status, added["omni"].as_str()),
        (200, Some(bot.omni.as_str())),
        "{added}"
    );
}
