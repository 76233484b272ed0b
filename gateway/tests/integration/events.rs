//! The event stream over real HTTP: a revocation reaches an ancestor's stream as soon as it
//! commits, the revoked subtree's own streams close, `Last-Event-ID` resumes, link-code alerts
//! show, and the per-actor cap holds. (The slot of a stream is freed when its response is
//! dropped, which the server sees at its next write at the latest: a heartbeat.)

use crate::common;

use std::time::{Duration, Instant};

use agentkeys_gateway::client::DeviceKey;
use common::{PUBLIC_URL, Stack, device, start, wallet};
use serde_json::{Value, json};

struct Who {
    key: DeviceKey,
    token: String,
    omni: String,
}

async fn master(stack: &Stack, seed: u8) -> Who {
    let key = device();
    let (status, session) = stack.login(&key, &wallet(seed)).await;
    assert_eq!(status, 200, "{session}");
    Who {
        key,
        token: session["session_jwt"].as_str().expect("token").into(),
        omni: session["omni"].as_str().expect("omni").into(),
    }
}

async fn call(stack: &Stack, who: &Who, method: &str, path: &str, body: Value) -> (u16, Value) {
    stack
        .call(&who.key, method, path, Some(&body), Some(&who.token))
        .await
}

/// Creates `label` under `parent` and links a fresh device to it.
async fn agent(stack: &Stack, by: &Who, parent: &str, label: &str) -> Who {
    let (status, created) = call(
        stack,
        by,
        "POST",
        "/v1/actors",
        json!({"label": label, "parent": parent}),
    )
    .await;
    assert_eq!(status, 201, "{created}");
    let omni = created["omni"].as_str().expect("omni").to_string();
    let (_, code) = call(
        stack,
        by,
        "POST",
        &format!("/v1/actors/{omni}/link-codes"),
        json!({}),
    )
    .await;
    let key = device();
    let (status, session) = stack
        .call(
            &key,
            "POST",
            "/v1/link/redeem",
            Some(&json!({"code": code["code"]})),
            None,
        )
        .await;
    assert_eq!(status, 200, "{session}");
    Who {
        key,
        token: session["session_jwt"].as_str().expect("token").into(),
        omni,
    }
}

/// One server-sent event.
#[derive(Debug, Clone)]
struct Sse {
    id: Option<String>,
    event: String,
    data: Value,
}

struct Stream {
    response: reqwest::Response,
    buffer: String,
}

impl Stream {
    async fn open(
        stack: &Stack,
        who: &Who,
        last_event_id: Option<&str>,
    ) -> Result<Self, (u16, Value)> {
        let proof = who
            .key
            .proof(
                "GET",
                &format!("{PUBLIC_URL}/v1/events"),
                stack.now(),
                Some(&who.token),
                None,
            )
            .expect("proof");
        let mut request = stack
            .http
            .get(format!("{}/v1/events", stack.base))
            .header("dpop", proof)
            .header("authorization", format!("DPoP {}", who.token));
        if let Some(id) = last_event_id {
            request = request.header("last-event-id", id);
        }
        let response = request.send().await.expect("sent");
        if response.status() != 200 {
            let status = response.status().as_u16();
            return Err((status, response.json().await.expect("envelope")));
        }
        Ok(Self {
            response,
            buffer: String::new(),
        })
    }

    /// The next event (heartbeat comments skipped); `None` when the stream ended.
    async fn next(&mut self) -> Option<Sse> {
        loop {
            if let Some(end) = self.buffer.find("\n\n") {
                let block: String = self.buffer.drain(..end + 2).collect();
                let mut event = Sse {
                    id: None,
                    event: "message".into(),
                    data: Value::Null,
                };
                let mut any = false;
                for line in block.lines() {
                    if let Some(v) = line.strip_prefix("id:") {
                        event.id = Some(v.trim().to_string());
                        any = true;
                    } else if let Some(v) = line.strip_prefix("event:") {
                        event.event = v.trim().to_string();
                        any = true;
                    } else if let Some(v) = line.strip_prefix("data:") {
                        event.data = serde_json::from_str(v.trim()).unwrap_or(Value::Null);
                        any = true;
                    }
                }
                if any {
                    return Some(event);
                }
                continue;
            }
            let chunk = tokio::time::timeout(Duration::from_secs(10), self.response.chunk())
                .await
                .expect("the stream answers within 10 s")
                .expect("read");
            self.buffer.push_str(&String::from_utf8_lossy(&chunk?));
        }
    }

    /// The next event named `name` (others skipped).
    async fn until(&mut self, name: &str) -> Sse {
        loop {
            let event = self
                .next()
                .await
                .unwrap_or_else(|| panic!("ended before {name}"));
            if event.event == name {
                return event;
            }
        }
    }
}

#[actix::test]
async fn revocations_reach_streams_and_close_the_revoked_ones() {
    let dir = tempfile::tempdir().expect("tempdir");
    let stack = start(dir.path(), None).await;
    let alice = master(&stack, 61).await;
    let ops = agent(&stack, &alice, &alice.omni.clone(), "ops").await;
    let bot = agent(&stack, &alice, &ops.omni.clone(), "bot-1").await;
    let side = agent(&stack, &alice, &alice.omni.clone(), "side").await;

    let mut watching = Stream::open(&stack, &alice, None).await.expect("opens");
    // The history so far: the master's and each agent's device bindings.
    let first = watching.until("device_add").await;
    assert_eq!(first.data["target"], alice.omni);
    let mut bot_stream = Stream::open(&stack, &bot, None).await.expect("opens");
    let mut side_stream = Stream::open(&stack, &side, None).await.expect("opens");

    let started = Instant::now();
    let (status, _) = call(
        &stack,
        &alice,
        "POST",
        &format!("/v1/actors/{}/revoke", ops.omni),
        json!({}),
    )
    .await;
    assert_eq!(status, 200);
    let revoked = watching.until("actor_revoke").await;
    let latency = started.elapsed();
    assert_eq!(revoked.data["target"], ops.omni);
    println!("revocation seen on the stream {latency:?} after the request was sent");
    // The figure (tens of ms) is reported, not asserted tightly: a shared machine is noisy.
    assert!(latency < Duration::from_secs(2), "{latency:?}");
    // The revoked subtree's own stream says why and ends.
    let closed = bot_stream.until("closed").await;
    assert_eq!(closed.data["reason"], "actor_revoked");
    assert!(bot_stream.next().await.is_none(), "the stream ended");
    // A sibling's stream stays open: an alert about the sibling's own code reaches it.
    let (_, code) = call(
        &stack,
        &alice,
        "POST",
        &format!("/v1/actors/{}/link-codes", side.omni),
        json!({}),
    )
    .await;
    let body = json!({"code": code["code"]});
    assert_eq!(
        stack
            .call(&device(), "POST", "/v1/link/redeem", Some(&body), None)
            .await
            .0,
        200
    );
    assert_eq!(
        stack
            .call(&device(), "POST", "/v1/link/redeem", Some(&body), None)
            .await
            .0,
        409
    );
    let alert = side_stream.until("link_code_reuse").await;
    assert_eq!(
        (
            alert.data["target"].as_str(),
            alert.data["outcome"].as_str()
        ),
        (Some(side.omni.as_str()), Some("refused"))
    );

    // Resume after the revocation: only later events arrive.
    let mut resumed = Stream::open(&stack, &alice, revoked.id.as_deref())
        .await
        .expect("opens");
    let next = resumed.next().await.expect("an event");
    assert!(
        next.id.as_deref().map(|i| i.parse::<u64>().expect("id"))
            > revoked.id.as_deref().map(|i| i.parse::<u64>().expect("id"))
    );
    assert_ne!(next.event, "actor_revoke");
    stack
        .server
        .stop(Duration::from_secs(5))
        .await
        .expect("stops");
}

#[actix::test]
async fn streams_per_actor_are_capped() {
    let dir = tempfile::tempdir().expect("tempdir");
    let stack = start(dir.path(), None).await;
    let alice = master(&stack, 62).await;
    let mut open = Vec::new();
    for _ in 0..4 {
        open.push(Stream::open(&stack, &alice, None).await.expect("opens"));
    }
    let refused = Stream::open(&stack, &alice, None)
        .await
        .err()
        .expect("capped");
    assert_eq!(
        (refused.0, refused.1["error"].as_str()),
        (429, Some("rate_limited"))
    );
    // Another actor's streams are counted separately.
    let bob = master(&stack, 63).await;
    assert!(Stream::open(&stack, &bob, None).await.is_ok());
    drop(open);
    stack
        .server
        .stop(Duration::from_secs(5))
        .await
        .expect("stops");
}

#[actix::test]
async fn approval_requests_reach_those_who_may_decide_them() {
    let dir = tempfile::tempdir().expect("tempdir");
    let stack = start(dir.path(), None).await;
    let alice = master(&stack, 71).await;
    let ops = agent(&stack, &alice, &alice.omni.clone(), "ops").await;
    let (status, _) = call(
        &stack,
        &alice,
        "PUT",
        &format!("/v1/actors/{}/scopes", ops.omni),
        json!({"scopes": ["actors:create", "sign:tx:1", "approvals:decide"]}),
    )
    .await;
    assert_eq!(status, 200);
    let bot = agent(&stack, &alice, &ops.omni.clone(), "bot").await;
    call(
        &stack,
        &alice,
        "PUT",
        &format!("/v1/actors/{}/scopes", bot.omni),
        json!({"scopes": ["sign:tx:1"]}),
    )
    .await;
    // The threshold is in ops's own policy: only the master decides it.
    let policy = json!({"tx": {"to": "any"},
        "approval": {"above": [{"asset": "native", "chain": 1, "amount": "1000"}]}});
    let (status, _) = call(
        &stack,
        &alice,
        "PUT",
        &format!("/v1/actors/{}/policy", ops.omni),
        policy,
    )
    .await;
    assert_eq!(status, 200);

    let mut alice_stream = Stream::open(&stack, &alice, None).await.expect("opens");
    let mut ops_stream = Stream::open(&stack, &ops, None).await.expect("opens");
    let tx = json!({"tx": {"chain_id": 1, "nonce": 0, "to": "0x1111111111111111111111111111111111111111",
        "value": "5000", "gas_limit": 21000, "max_fee_per_gas": 0, "max_priority_fee_per_gas": 0}});
    let (status, pending) = call(&stack, &bot, "POST", "/v1/sign/transaction", tx).await;
    assert_eq!(status, 202, "{pending}");
    let id = pending["approval_id"].as_str().expect("id").to_owned();

    let requested = alice_stream.until("approval_requested").await;
    let approval = &requested.data["approval"];
    assert_eq!(approval["id"], id.as_str());
    assert_eq!(approval["agent"], bot.omni);
    assert_eq!(approval["route"], "/v1/sign/transaction");
    assert_eq!(
        approval["recipient"],
        "0x1111111111111111111111111111111111111111"
    );
    assert_eq!(approval["spends"][0]["amount"], "5000");

    let (status, _) = call(
        &stack,
        &alice,
        "POST",
        &format!("/v1/approvals/{id}/deny"),
        json!({}),
    )
    .await;
    assert_eq!(status, 200);
    // ops sees the decision about its subtree, never the request it may not decide.
    loop {
        let event = ops_stream.next().await.expect("open");
        assert_ne!(event.event, "approval_requested", "{:?}", event.data);
        if event.event == "approval_denied" {
            assert_eq!(event.data["approval"]["status"], "denied");
            break;
        }
    }
}

#[actix::test]
async fn identity_links_and_unlinks_reach_the_master_stream() {
    let dir = tempfile::tempdir().expect("tempdir");
    let stack = start(dir.path(), None).await;
    let alice = master(&stack, 71).await;
    let mut stream = Stream::open(&stack, &alice, None).await.expect("stream");
    let bob = common::wallet(72);
    let (status, linked) = stack.link_wallet(&alice.key, &alice.token, &bob).await;
    assert_eq!(status, 200, "{linked}");
    let event = stream.until("identity_link").await;
    assert_eq!(event.data["target"], alice.omni.as_str());
    let path = format!("/v1/identities/evm/{}", bob.address());
    let (status, _) = call(&stack, &alice, "DELETE", &path, Value::Null).await;
    assert_eq!(status, 200);
    let event = stream.until("identity_unlink").await;
    assert_eq!(event.data["operation"], "identity_unlink");
    drop(stream);
    stack.stop().await;
}
