//! Agents end to end over loopback HTTP: master → agent → sub-agent, devices joining through
//! link codes, signing with scopes narrowed down the lineage, the authorization matrix against
//! a second master, revocation of the middle of a tree (also after a restart).

use crate::common;

use std::time::Duration;

use agentkeys_actors::crypto::eip191::{Signature, hash_message, recover};
use agentkeys_actors::crypto::sr25519;
use agentkeys_gateway::client::DeviceKey;
use common::{Stack, Who, device, link, master, start};
use serde_json::{Value, json};

async fn create(
    stack: &Stack,
    who: &Who,
    label: &str,
    parent: Option<&str>,
    scopes: &[&str],
) -> (u16, Value) {
    let mut body = json!({"label": label, "scopes": scopes});
    if let Some(parent) = parent {
        body["parent"] = json!(parent);
    }
    who.call(stack, "POST", "/v1/actors", Some(body)).await
}

pub(crate) async fn sign(stack: &Stack, who: &Who, message: &str) -> (u16, Value) {
    who.call(
        stack,
        "POST",
        "/v1/sign/eip191",
        Some(json!({"message": message})),
    )
    .await
}

fn error(answer: &(u16, Value)) -> (u16, &str) {
    (answer.0, answer.1["error"].as_str().unwrap_or("-"))
}

const ALL: [&str; 5] = [
    "actors:create",
    "sign:eip191",
    "sign:eip712",
    "sign:tx:1",
    "sign:sr25519",
];

#[actix::test]
async fn a_tree_of_agents_signs_narrows_and_is_revoked() {
    let dir = tempfile::tempdir().expect("tempdir");
    let stack = start(dir.path(), None).await;
    let alice = master(&stack, 31).await;

    // Create, and the idempotency rule.
    let (status, ops) = create(&stack, &alice, "ops", None, &ALL).await;
    assert_eq!(status, 201, "{ops}");
    assert_eq!(ops["path"], "//ops");
    assert_eq!(ops["status"], "active");
    let ops_omni = ops["omni"].as_str().expect("omni").to_string();
    assert_eq!(create(&stack, &alice, "ops", None, &ALL).await.0, 200);
    assert_eq!(
        error(&create(&stack, &alice, "ops", None, &["sign:eip191"]).await),
        (409, "label_taken")
    );
    assert_eq!(
        error(&create(&stack, &alice, "Bad_Label", None, &[]).await),
        (400, "invalid_label")
    );
    assert_eq!(
        error(&create(&stack, &alice, "x", None, &["sign:*"]).await),
        (400, "invalid_request")
    );
    let (status, side) = create(&stack, &alice, "side", None, &["sign:eip191"]).await;
    assert_eq!(status, 201, "{side}");

    // The agent joins from its own machine, then creates and links a sub-agent.
    let ops_agent = link(&stack, &alice, &ops_omni).await;
    assert_eq!(ops_agent.omni, ops_omni);
    let (status, bot) = create(&stack, &ops_agent, "bot-1", None, &["sign:eip191"]).await;
    assert_eq!(status, 201, "{bot}");
    assert_eq!(bot["path"], "//ops//bot-1");
    let bot_omni = bot["omni"].as_str().expect("omni").to_string();
    let bot_agent = link(&stack, &ops_agent, &bot_omni).await;
    let side_agent = link(&stack, &alice, side["omni"].as_str().expect("omni")).await;

    // whoami for an agent.
    let (status, me) = bot_agent.call(&stack, "GET", "/v1/whoami", None).await;
    assert_eq!(status, 200, "{me}");
    assert_eq!(
        (me["role"].as_str(), me["path"].as_str()),
        (Some("agent"), Some("//ops//bot-1"))
    );
    assert_eq!(me["parent"], ops_omni);

    // Signing, checked against the derived address; several signatures in flight at once.
    let (status, signed) = sign(&stack, &bot_agent, "hello from bot-1").await;
    assert_eq!(status, 200, "{signed}");
    assert_eq!(signed["address"], bot["wallet"]);
    let sig: Signature = signed["signature"]
        .as_str()
        .expect("sig")
        .parse()
        .expect("65 bytes");
    let signer = recover(&hash_message(b"hello from bot-1"), &sig).expect("recovers");
    assert_eq!(
        signer.to_checksum(),
        bot["wallet"].as_str().expect("wallet")
    );
    // sr25519 with the key of an agent granted it (ops): the answer names its public key and
    // address (one derivation in the signer), and the signature verifies with that key.
    let (status, sr) = ops_agent
        .call(
            &stack,
            "POST",
            "/v1/sign/sr25519",
            Some(json!({"message_hex": format!("0x{}", hex::encode(b"remark"))})),
        )
        .await;
    assert_eq!(status, 200, "{sr}");
    assert_eq!(
        (&sr["public"], &sr["ss58"]),
        (&ops["sr25519_public"], &ops["ss58"])
    );
    let bytes = |v: &Value| hex::decode(v.as_str().expect("hex").trim_start_matches("0x"));
    let public: [u8; 32] = bytes(&sr["public"]).expect("hex").try_into().expect("32");
    let signature: [u8; 64] = bytes(&sr["signature"])
        .expect("hex")
        .try_into()
        .expect("64");
    assert!(sr25519::verify(&public, b"remark", &signature));
    assert!(!sr25519::verify(&public, b"remark!", &signature));
    let messages: Vec<String> = (0..8).map(|i| format!("message {i}")).collect();
    let in_flight = join_all(messages.iter().map(|m| sign(&stack, &bot_agent, m))).await;
    assert!(in_flight.iter().all(|(status, _)| *status == 200));

    // Scopes: not granted; narrowing a parent narrows the sub-agent at once; restored.
    let typed = json!({"typed_data": {"types": {"Note": [{"name": "text", "type": "string"}]},
        "primaryType": "Note", "domain": {"name": "t", "chainId": 1}, "message": {"text": "hi"}}});
    assert_eq!(
        error(
            &bot_agent
                .call(&stack, "POST", "/v1/sign/eip712", Some(typed.clone()))
                .await
        ),
        (403, "scope_denied")
    );
    let (status, _) = ops_agent
        .call(&stack, "POST", "/v1/sign/eip712", Some(typed))
        .await;
    assert_eq!(status, 200);
    let scopes = |s: &[&str]| Some(json!({ "scopes": s }));
    let path = format!("/v1/actors/{ops_omni}/scopes");
    assert_eq!(
        alice
            .call(&stack, "PUT", &path, scopes(&["actors:create"]))
            .await
            .0,
        200
    );
    assert_eq!(
        error(&sign(&stack, &bot_agent, "narrowed").await),
        (403, "scope_denied")
    );
    assert_eq!(alice.call(&stack, "PUT", &path, scopes(&ALL)).await.0, 200);
    assert_eq!(sign(&stack, &bot_agent, "restored").await.0, 200);
    // An agent cannot widen or revoke itself.
    assert_eq!(
        error(&ops_agent.call(&stack, "PUT", &path, scopes(&ALL)).await),
        (403, "scope_denied")
    );
    let revoke_ops = format!("/v1/actors/{ops_omni}/revoke");
    assert_eq!(
        error(&ops_agent.call(&stack, "POST", &revoke_ops, None).await),
        (403, "scope_denied")
    );
    // A descendant cannot see upward.
    let master_path = format!("/v1/actors/{}", alice.omni);
    assert_eq!(
        error(&bot_agent.call(&stack, "GET", &master_path, None).await),
        (404, "not_found")
    );

    // An agent's SIWE-looking message for this gateway is refused before anything is
    // recorded: its master's audit chain does not grow.
    let chain_length = |head: Value| head["length"].as_u64().expect("length");
    let before = chain_length(alice.call(&stack, "GET", "/v1/audit/head", None).await.1);
    let siwe = "127.0.0.1:8090 wants you to sign in with your Ethereum account:\n0x0000000000000000000000000000000000000001\n\nURI: http://127.0.0.1:8090\nVersion: 1\nChain ID: 1\nNonce: abcdefgh12\nIssued At: 2026-01-01T00:00:00Z";
    assert_eq!(
        error(&sign(&stack, &bot_agent, siwe).await),
        (400, "invalid_request")
    );
    let after = chain_length(alice.call(&stack, "GET", "/v1/audit/head", None).await.1);
    assert_eq!(after, before);
    assert_eq!(sign(&stack, &bot_agent, "recorded").await.0, 200);
    let signed = chain_length(alice.call(&stack, "GET", "/v1/audit/head", None).await.1);
    assert_eq!(signed, before + 1);

    // The tree, paginated.
    let (status, page) = alice
        .call(
            &stack,
            "GET",
            &format!("/v1/actors/{}/tree?limit=2", alice.omni),
            None,
        )
        .await;
    assert_eq!(status, 200, "{page}");
    let paths: Vec<_> = page["entries"]
        .as_array()
        .expect("entries")
        .iter()
        .map(|e| e["path"].clone())
        .collect();
    assert_eq!(paths, [json!(""), json!("//ops")]);
    let cursor = page["next_cursor"].as_str().expect("more").to_string();
    let (_, next) = alice
        .call(
            &stack,
            "GET",
            &format!("/v1/actors/{}/tree?limit=2&cursor={cursor}", alice.omni),
            None,
        )
        .await;
    let paths: Vec<_> = next["entries"]
        .as_array()
        .expect("entries")
        .iter()
        .map(|e| e["path"].clone())
        .collect();
    assert_eq!(paths, [json!("//ops//bot-1"), json!("//side")]);
    assert!(next["next_cursor"].is_null());

    // Revoke the middle of the tree.
    let (status, receipt) = alice.call(&stack, "POST", &revoke_ops, None).await;
    assert_eq!(status, 200, "{receipt}");
    assert_eq!(
        (
            receipt["new"].as_bool(),
            receipt["revoked"].as_u64(),
            receipt["revoked_more"].as_bool()
        ),
        (Some(true), Some(2), Some(false))
    );
    assert_eq!(
        error(&sign(&stack, &bot_agent, "after").await),
        (401, "actor_revoked")
    );
    assert_eq!(
        error(&ops_agent.call(&stack, "GET", "/v1/whoami", None).await),
        (401, "actor_revoked")
    );
    assert_eq!(sign(&stack, &side_agent, "sibling is fine").await.0, 200);
    let (_, shown) = alice
        .call(&stack, "GET", &format!("/v1/actors/{bot_omni}"), None)
        .await;
    assert_eq!(
        (shown["status"].as_str(), shown["revoked_by"].as_str()),
        (Some("revoked"), Some(ops_omni.as_str()))
    );
    assert!(shown["revoked_at"].is_string());

    // After a restart: still revoked, and the label is spent.
    stack
        .server
        .stop(Duration::from_secs(5))
        .await
        .expect("stops");
    let stack = start(dir.path(), None).await;
    assert_eq!(
        error(&sign(&stack, &bot_agent, "after restart").await),
        (401, "actor_revoked")
    );
    assert_eq!(sign(&stack, &side_agent, "sibling still fine").await.0, 200);
    assert_eq!(
        error(&create(&stack, &alice, "ops", None, &ALL).await),
        (409, "label_revoked")
    );
    stack
        .server
        .stop(Duration::from_secs(5))
        .await
        .expect("stops");
}

/// Runs the futures concurrently on this task and returns their outputs in order.
async fn join_all<F: std::future::Future<Output = (u16, Value)>>(
    futures: impl Iterator<Item = F>,
) -> Vec<(u16, Value)> {
    let mut pinned: Vec<_> = futures.map(Box::pin).collect();
    let mut results: Vec<Option<(u16, Value)>> = vec![None; pinned.len()];
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (fut, slot) in pinned.iter_mut().zip(results.iter_mut()) {
            if slot.is_none() {
                match fut.as_mut().poll(cx) {
                    std::task::Poll::Ready(v) => *slot = Some(v),
                    std::task::Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            std::task::Poll::Pending
        } else {
            std::task::Poll::Ready(())
        }
    })
    .await;
    results.into_iter().flatten().collect()
}

#[actix::test]
async fn another_tree_gets_404_everywhere() {
    let dir = tempfile::tempdir().expect("tempdir");
    let stack = start(dir.path(), None).await;
    let alice = master(&stack, 41).await;
    let mallory = master(&stack, 42).await;
    let (_, ops) = create(&stack, &alice, "ops", None, &["sign:eip191"]).await;
    let ops = ops["omni"].as_str().expect("omni").to_string();
    let routes: Vec<(&str, String, Option<Value>)> = vec![
        ("GET", format!("/v1/actors/{ops}"), None),
        ("GET", format!("/v1/actors/{ops}/tree"), None),
        ("GET", format!("/v1/actors/{ops}/devices"), None),
        ("DELETE", format!("/v1/actors/{ops}/devices/1"), None),
        (
            "PUT",
            format!("/v1/actors/{ops}/scopes"),
            Some(json!({"scopes": []})),
        ),
        ("POST", format!("/v1/actors/{ops}/revoke"), None),
        (
            "POST",
            format!("/v1/actors/{ops}/link-codes"),
            Some(json!({})),
        ),
        (
            "POST",
            "/v1/actors".into(),
            Some(json!({"label": "x", "parent": ops})),
        ),
        ("GET", format!("/v1/actors/{}", alice.omni), None),
        ("POST", format!("/v1/actors/{}/revoke", alice.omni), None),
    ];
    for (method, path, body) in routes {
        let answer = mallory.call(&stack, method, &path, body).await;
        assert_eq!(
            error(&answer),
            (404, "not_found"),
            "{method} {path}: {}",
            answer.1
        );
    }
    // A master cannot be revoked through the API, not even by itself.
    let own = format!("/v1/actors/{}/revoke", alice.omni);
    assert_eq!(
        error(&alice.call(&stack, "POST", &own, None).await),
        (403, "scope_denied")
    );
    stack
        .server
        .stop(Duration::from_secs(5))
        .await
        .expect("stops");
}

#[actix::test]
async fn sixteen_clients_redeem_one_code_and_exactly_one_binds() {
    let dir = tempfile::tempdir().expect("tempdir");
    let stack = start(dir.path(), None).await;
    let alice = master(&stack, 51).await;
    let (_, ops) = create(&stack, &alice, "ops", None, &[]).await;
    let ops = ops["omni"].as_str().expect("omni").to_string();
    let (_, code) = alice
        .call(
            &stack,
            "POST",
            &format!("/v1/actors/{ops}/link-codes"),
            Some(json!({"ttl_seconds": 120})),
        )
        .await;
    let keys: Vec<DeviceKey> = (0..16).map(|_| device()).collect();
    let body = json!({"code": code["code"].as_str().expect("code").to_lowercase()});
    let answers = join_all(
        keys.iter()
            .map(|k| stack.call(k, "POST", "/v1/link/redeem", Some(&body), None)),
    )
    .await;
    let winners: Vec<usize> = answers
        .iter()
        .enumerate()
        .filter(|(_, a)| a.0 == 200)
        .map(|(i, _)| i)
        .collect();
    assert_eq!(winners.len(), 1, "{answers:?}");
    assert!(
        answers
            .iter()
            .filter(|a| a.0 != 200)
            .all(|a| error(a) == (409, "link_code_used"))
    );
    // The winner may retry and gets the same binding; the devices list has exactly one.
    let again = stack
        .call(
            &keys[winners[0]],
            "POST",
            "/v1/link/redeem",
            Some(&body),
            None,
        )
        .await;
    assert_eq!(again.0, 200);
    assert_eq!(again.1["binding_id"], answers[winners[0]].1["binding_id"]);
    let (_, devices) = alice
        .call(&stack, "GET", &format!("/v1/actors/{ops}/devices"), None)
        .await;
    assert_eq!(devices["devices"].as_array().expect("list").len(), 1);
    // Each refused key left an alert row in the master's chain.
    let master: agentkeys_runtime::Omni = alice.omni.parse().expect("omni");
    let alerts = stack
        .server
        .ledger()
        .audit_rows(&master, 0, 1000)
        .expect("rows")
        .iter()
        .filter(|r| r.entry.op == agentkeys_actors::ledger::audit::op::LINK_CODE_REUSE)
        .count();
    assert_eq!(alerts, 15);
    // Unknown and expired codes.
    let unknown = json!({"code": "0000-0000-0000-0000-0000"});
    assert_eq!(
        error(
            &stack
                .call(&device(), "POST", "/v1/link/redeem", Some(&unknown), None)
                .await
        ),
        (404, "not_found")
    );
    let (_, code) = alice
        .call(
            &stack,
            "POST",
            &format!("/v1/actors/{ops}/link-codes"),
            Some(json!({"ttl_seconds": 60})),
        )
        .await;
    stack.clock.advance(Duration::from_secs(61));
    let late = json!({"code": code["code"]});
    assert_eq!(
        error(
            &stack
                .call(&device(), "POST", "/v1/link/redeem", Some(&late), None)
                .await
        ),
        (410, "expired")
    );
    stack
        .server
        .stop(Duration::from_secs(5))
        .await
        .expect("stops");
}

/// Malformed path and query parameters get the error envelope (found by the API fuzzing:
/// axum's own rejections were text/plain).
#[actix::test]
async fn malformed_parameters_get_the_error_envelope() {
    let dir = tempfile::tempdir().expect("tempdir");
    let stack = start(dir.path(), None).await;
    let alice = master(&stack, 32).await;
    let omni = alice.omni.clone();
    for path in [
        format!("/v1/actors/{omni}/tree?limit=-1"),
        format!("/v1/actors/{omni}/tree?limit=x"),
        "/v1/audit?limit=-1".to_string(),
        "/v1/audit?after=z".to_string(),
    ] {
        // `send` parses the body as JSON: a text/plain answer fails here.
        let answer = alice.call(&stack, "GET", &path, None).await;
        assert_eq!(error(&answer), (400, "invalid_request"), "{path}");
    }
    let answer = alice
        .call(
            &stack,
            "DELETE",
            &format!("/v1/actors/{omni}/devices/-1"),
            None,
        )
        .await;
    assert_eq!(error(&answer), (400, "invalid_request"));
    // Nothing changed: the caller's binding still works.
    let (status, _) = alice.call(&stack, "GET", "/v1/whoami", None).await;
    assert_eq!(status, 200);
    stack
        .server
        .stop(Duration::from_secs(5))
        .await
        .expect("stops");
}

/// At most 16 link codes outstanding per actor: the 17th is `rate_limited` (a quota of the
/// caller's, not an overloaded server), and issuing works again once one expires.
#[actix::test]
async fn outstanding_link_codes_are_capped_per_actor() {
    let dir = tempfile::tempdir().expect("tempdir");
    let stack = start(dir.path(), None).await;
    let alice = master(&stack, 33).await;
    let path = format!("/v1/actors/{}/link-codes", alice.omni);
    for ttl in [60].into_iter().chain(std::iter::repeat_n(600, 15)) {
        let (status, body) = alice
            .call(&stack, "POST", &path, Some(json!({"ttl_seconds": ttl})))
            .await;
        assert_eq!(status, 200, "{body}");
    }
    let refused = alice.call(&stack, "POST", &path, Some(json!({}))).await;
    assert_eq!(error(&refused), (429, "rate_limited"));
    stack.clock.advance(Duration::from_secs(61));
    let (status, body) = alice.call(&stack, "POST", &path, Some(json!({}))).await;
    assert_eq!(status, 200, "the expired code no longer counts: {body}");
    stack
        .server
        .stop(Duration::from_secs(5))
        .await
        .expect("stops");
}

#[actix::test]
async fn a_revocation_answer_counts_at_most_a_thousand_actors() {
    use agentkeys_actors::ledger::NewActor;
    use agentkeys_runtime::store::CreateActor;
    let dir = tempfile::tempdir().expect("tempdir");
    let stack = start(dir.path(), None).await;
    let boss = master(&stack, 31).await;
    let (status, team) = create(&stack, &boss, "team", None, &[]).await;
    assert_eq!(status, 201, "{team}");
    let team: agentkeys_runtime::Omni = team["omni"].as_str().expect("omni").parse().expect("omni");
    // 1,000 children under the team, written through the ledger in one go (group commit).
    let ledger = stack.server.ledger();
    let writes: Vec<_> = (0..1000)
        .map(|i| {
            let label = format!("w{i}");
            ledger.create(NewActor {
                actor: CreateActor {
                    omni: agentkeys_actors::crypto::omni::child_omni(&team, &label).expect("omni"),
                    parent: Some(team),
                    label,
                    created_at: agentkeys_runtime::Clock::now(&stack.clock),
                    origin: Default::default(),
                    scopes: Vec::new(),
                },
                wallet: None,
            })
        })
        .collect();
    for write in writes {
        write.await.expect("created");
    }
    let path = format!("/v1/actors/{team}/revoke");
    let (status, receipt) = boss.call(&stack, "POST", &path, None).await;
    assert_eq!(status, 200, "{receipt}");
    // The team and 1,000 children: the answer counts 1,000 and says there are more.
    assert_eq!(receipt["revoked"], 1000);
    assert_eq!(receipt["revoked_more"], true);
    let path = format!("/v1/actors/{team}/tree?limit=1000");
    let (_, page) = boss.call(&stack, "GET", &path, None).await;
    let entries = page["entries"].as_array().expect("entries");
    assert!(
        entries.iter().all(|e| e["status"] == "revoked"),
        "every one is revoked"
    );
    assert!(
        page["next_cursor"].is_string(),
        "the tree pages on past 1,000"
    );
}
