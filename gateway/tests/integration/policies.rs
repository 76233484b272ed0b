//! Policies end to end over loopback HTTP: each rule, deny by default for each operation, the
//! setter rule, budgets that add up along the tree under concurrency (and survive a restart),
//! rate limits, retries counted once, and approvals with the decider rule.

use crate::common;

use std::time::Duration;

use agentkeys_gateway::config::Layer;
use common::{Stack, Who, link, master, start, start_with};
use serde_json::{Value, json};

pub(crate) const A: &str = "0x1111111111111111111111111111111111111111";
const B: &str = "0x2222222222222222222222222222222222222222";
const USDC: &str = "0xA0b86991c6218b36c1d19D4a2e9Eb0cE3606eB48";
pub(crate) const ETH: u128 = 1_000_000_000_000_000_000;

const SCOPES: [&str; 8] = [
    "actors:create",
    "sign:eip191",
    "sign:eip712",
    "sign:tx:1",
    "sign:tx:8453",
    "sign:sr25519",
    "policy:set",
    "approvals:decide",
];

fn error(answer: &(u16, Value)) -> (u16, String) {
    (
        answer.0,
        answer.1["error"].as_str().unwrap_or("-").to_owned(),
    )
}

/// Creates `label` under `parent` (or the caller) and links a device to it.
async fn agent(stack: &Stack, by: &Who, label: &str, parent: Option<&str>) -> Who {
    let mut body = json!({"label": label, "scopes": SCOPES});
    if let Some(p) = parent {
        body["parent"] = json!(p);
    }
    let (status, created) = by.call(stack, "POST", "/v1/actors", Some(body)).await;
    assert_eq!(status, 201, "{created}");
    link(stack, by, created["omni"].as_str().expect("omni")).await
}

pub(crate) async fn set_policy(stack: &Stack, by: &Who, on: &Who, policy: Value) -> (u16, Value) {
    by.call(
        stack,
        "PUT",
        &format!("/v1/actors/{}/policy", on.omni),
        Some(policy),
    )
    .await
}

/// A transaction on chain 1 that costs exactly `total` wei: value + 21,000 × 1 gwei.
pub(crate) fn tx(to: &str, total: u128, nonce: u64) -> Value {
    let fee = 21_000u128 * 1_000_000_000;
    json!({"tx": {"chain_id": 1, "nonce": nonce, "to": to, "value": (total - fee).to_string(),
        "gas_limit": 21000, "max_fee_per_gas": 1_000_000_000u64, "max_priority_fee_per_gas": 1}})
}

pub(crate) async fn sign_tx(stack: &Stack, who: &Who, body: Value) -> (u16, Value) {
    who.call(stack, "POST", "/v1/sign/transaction", Some(body))
        .await
}

/// A stack whose sessions outlive the windows the tests roll past.
async fn long_sessions(dir: &std::path::Path) -> Stack {
    start_with(dir, Layer::default().with("session_ttl_seconds", "86400")).await
}

#[actix::test]
async fn each_rule_refuses_and_unlisted_operations_are_denied() {
    let dir = tempfile::tempdir().expect("tempdir");
    let stack = start(dir.path(), None).await;
    let alice = master(&stack, 61).await;
    let bot = agent(&stack, &alice, "bot", None).await;

    // Before any policy: everything the scopes allow.
    assert_eq!(sign_tx(&stack, &bot, tx(B, ETH, 0)).await.0, 200);

    // A policy that names the field it does not know.
    let bad = set_policy(
        &stack,
        &alice,
        &bot,
        json!({"tx": {"to": "any", "value_cap": "1"}}),
    )
    .await;
    assert_eq!(error(&bad), (400, "invalid_policy".into()));
    assert!(
        bad.1["message"]
            .as_str()
            .unwrap_or("")
            .contains("value_cap"),
        "{}",
        bad.1
    );

    let policy = json!({
        "chains": [1],
        "tx": {"to": [A, USDC], "calls": [{"to": USDC, "selector": "0xa9059cbb"}], "max_value": "500000000000000000"},
        "messages": {"text": true},
    });
    let (status, shown) = set_policy(&stack, &alice, &bot, policy).await;
    assert_eq!(status, 200, "{shown}");
    assert_eq!(shown["set_by"], alice.omni);

    let denied = |answer: (u16, Value), rule: &str| {
        assert_eq!(
            error(&answer),
            (403, "policy_denied".into()),
            "{}",
            answer.1
        );
        assert_eq!(answer.1["rule"], rule, "{}", answer.1);
        assert_eq!(answer.1["owner"], bot.omni);
    };
    denied(sign_tx(&stack, &bot, tx(B, ETH / 10, 1)).await, "tx.to");
    assert_eq!(sign_tx(&stack, &bot, tx(A, ETH / 10, 1)).await.0, 200);
    denied(sign_tx(&stack, &bot, tx(A, ETH, 2)).await, "tx.max_value");
    let mut other_chain = tx(A, ETH / 10, 2);
    other_chain["tx"]["chain_id"] = json!(8453);
    denied(sign_tx(&stack, &bot, other_chain).await, "chains");
    // Calldata only where a call is listed.
    let mut call = tx(A, ETH / 10, 2);
    call["tx"]["data"] = json!("0xdeadbeef");
    denied(sign_tx(&stack, &bot, call).await, "tx.calls");
    let transfer = format!("0xa9059cbb{}{}{:064x}", "0".repeat(24), &A[2..], 5u64);
    let mut token = tx(USDC, 21_000 * 1_000_000_000, 2);
    token["tx"]["data"] = json!(transfer);
    assert_eq!(sign_tx(&stack, &bot, token).await.0, 200);

    // Deny by default for every other operation type.
    let text = bot
        .call(
            &stack,
            "POST",
            "/v1/sign/eip191",
            Some(json!({"message": "hello"})),
        )
        .await;
    assert_eq!(text.0, 200, "{}", text.1);
    let hash = format!("0x{}", "ab".repeat(32));
    denied(
        bot.call(
            &stack,
            "POST",
            "/v1/sign/eip191",
            Some(json!({"message_hex": hash})),
        )
        .await,
        "messages.raw_hash",
    );
    let typed = json!({"typed_data": {"types": {"EIP712Domain": [{"name": "chainId", "type": "uint256"}],
        "Mail": [{"name": "text", "type": "string"}]}, "primaryType": "Mail",
        "domain": {"chainId": 1}, "message": {"text": "hi"}}});
    denied(
        bot.call(&stack, "POST", "/v1/sign/eip712", Some(typed))
            .await,
        "typed_data",
    );
    denied(
        bot.call(
            &stack,
            "POST",
            "/v1/sign/sr25519",
            Some(json!({"message_hex": "0x01"})),
        )
        .await,
        "sr25519",
    );

    // The check route says the same without signing.
    let (status, check) = bot
        .call(
            &stack,
            "POST",
            "/v1/policy/check",
            Some(json!({"route": "/v1/sign/transaction", "body": tx(B, 1_000_000_000_000_000, 9)})),
        )
        .await;
    assert_eq!(status, 200, "{check}");
    assert_eq!(
        (check["decision"].as_str(), check["rule"].as_str()),
        (Some("denied"), Some("tx.to"))
    );

    // Each refusal is an audit row.
    let (_, rows) = alice
        .call(&stack, "GET", "/v1/audit?limit=1000", None)
        .await;
    let refused = rows["rows"]
        .as_array()
        .expect("rows")
        .iter()
        .filter(|r| r["operation"] == "policy_denied" && r["outcome"] == "refused")
        .count();
    assert_eq!(refused, 7, "{rows}");

    // Removing the policy restores the scopes alone.
    let (status, _) = alice
        .call(
            &stack,
            "DELETE",
            &format!("/v1/actors/{}/policy", bot.omni),
            None,
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(sign_tx(&stack, &bot, tx(B, ETH, 3)).await.0, 200);
}

#[actix::test]
async fn only_the_setter_or_above_changes_a_policy() {
    let dir = tempfile::tempdir().expect("tempdir");
    let stack = start(dir.path(), None).await;
    let alice = master(&stack, 62).await;
    let ops = agent(&stack, &alice, "ops", None).await;
    let bot = agent(&stack, &ops, "bot", Some(&ops.omni)).await;
    let open = json!({"tx": {"to": "any"}});

    assert_eq!(set_policy(&stack, &alice, &bot, open.clone()).await.0, 200);
    // ops is an ancestor of bot, but the master set this one.
    let removed = ops
        .call(
            &stack,
            "DELETE",
            &format!("/v1/actors/{}/policy", bot.omni),
            None,
        )
        .await;
    assert_eq!(
        error(&removed),
        (403, "scope_denied".into()),
        "{}",
        removed.1
    );
    assert_eq!(removed.1["set_by"], alice.omni);
    assert_eq!(
        error(&set_policy(&stack, &ops, &bot, json!({})).await).0,
        403
    );
    // Nobody sets its own policy (a master's is the operator's).
    assert_eq!(
        error(&set_policy(&stack, &ops, &ops, open.clone()).await).0,
        403
    );
    assert_eq!(
        error(&set_policy(&stack, &alice, &alice, open.clone()).await).0,
        403
    );
    // An agent without policy:set cannot set one.
    let (status, narrow) = alice
        .call(
            &stack,
            "PUT",
            &format!("/v1/actors/{}/scopes", ops.omni),
            Some(json!({"scopes": ["actors:create", "sign:tx:1"]})),
        )
        .await;
    assert_eq!(status, 200, "{narrow}");
    assert_eq!(
        error(&set_policy(&stack, &ops, &bot, open.clone()).await),
        (403, "scope_denied".into())
    );
    alice
        .call(
            &stack,
            "PUT",
            &format!("/v1/actors/{}/scopes", ops.omni),
            Some(json!({"scopes": SCOPES})),
        )
        .await;

    // The master removes its policy; now ops may set one, and the master may replace it.
    assert_eq!(
        alice
            .call(
                &stack,
                "DELETE",
                &format!("/v1/actors/{}/policy", bot.omni),
                None
            )
            .await
            .0,
        200
    );
    let (status, shown) = set_policy(&stack, &ops, &bot, open.clone()).await;
    assert_eq!(
        (status, shown["set_by"].as_str()),
        (200, Some(ops.omni.as_str()))
    );
    assert_eq!(set_policy(&stack, &alice, &bot, open.clone()).await.0, 200);

    // Scopes follow the same rule: narrowed by the master, bot's scopes can be narrowed
    // further by ops but widened only by the master.
    let scopes = |who: &'static str, list: Vec<&'static str>| {
        let (ops, alice, bot) = (&ops, &alice, &bot);
        let stack = &stack;
        async move {
            let by = if who == "ops" { ops } else { alice };
            by.call(
                stack,
                "PUT",
                &format!("/v1/actors/{}/scopes", bot.omni),
                Some(json!({"scopes": list})),
            )
            .await
        }
    };
    assert_eq!(
        scopes("alice", vec!["sign:tx:1", "sign:eip191"]).await.0,
        200
    );
    let widened = scopes("ops", vec!["sign:tx:1", "sign:eip191", "sign:eip712"]).await;
    assert_eq!(
        error(&widened),
        (403, "scope_denied".into()),
        "{}",
        widened.1
    );
    assert_eq!(widened.1["set_by"], alice.omni);
    assert_eq!(scopes("ops", vec!["sign:tx:1"]).await.0, 200);
    let again = scopes("ops", vec!["sign:tx:1", "sign:eip191"]).await;
    assert_eq!(
        error(&again).0,
        403,
        "the master's narrowing still binds ops"
    );
    assert_eq!(scopes("alice", SCOPES.to_vec()).await.0, 200);

    // The actor itself reads its policy and what it inherits.
    assert_eq!(
        set_policy(&stack, &alice, &ops, json!({"messages": {"text": true}}))
            .await
            .0,
        200
    );
    let (status, mine) = bot
        .call(
            &stack,
            "GET",
            &format!("/v1/actors/{}/policy", bot.omni),
            None,
        )
        .await;
    assert_eq!(status, 200, "{mine}");
    // Shown in canonical form: every default spelled out.
    assert_eq!(
        mine["policy"],
        json!({"tx": {"to": "any", "unlimited_approvals": false}, "sr25519": false})
    );
    assert_eq!(mine["inherited"][0]["owner"], ops.omni);
    // Not a sibling's or a stranger's.
    let mallory = master(&stack, 63).await;
    let (status, _) = mallory
        .call(
            &stack,
            "GET",
            &format!("/v1/actors/{}/policy", bot.omni),
            None,
        )
        .await;
    assert_eq!(status, 404);
}

#[actix::test]
async fn budgets_add_up_along_the_tree_and_hold_under_concurrency() {
    let dir = tempfile::tempdir().expect("tempdir");
    let stack = long_sessions(dir.path()).await;
    let alice = master(&stack, 64).await;
    let ops = agent(&stack, &alice, "ops", None).await;
    let bot1 = agent(&stack, &ops, "bot-1", Some(&ops.omni)).await;
    let bot2 = agent(&stack, &ops, "bot-2", Some(&ops.omni)).await;
    let budget = json!({"tx": {"to": "any"},
        "budgets": [{"asset": "native", "chain": 1, "window_seconds": 7200, "max": ETH.to_string()}]});
    assert_eq!(set_policy(&stack, &alice, &ops, budget).await.0, 200);

    // bot-1 also has a budget of its own (never reached here): a spend counts on every level.
    let own = json!({"tx": {"to": "any"},
        "budgets": [{"asset": "native", "chain": 1, "window_seconds": 7200, "max": (100 * ETH).to_string()}]});
    assert_eq!(set_policy(&stack, &ops, &bot1, own).await.0, 200);

    // 64 concurrent spends of 0.1 ETH (value + 21,000 × 1 gwei) by two bots against 1 ETH.
    let requests = (0..64u64).map(|n| {
        let who = if n % 2 == 0 { &bot1 } else { &bot2 };
        let stack = &stack;
        async move { (n, sign_tx(stack, who, tx(A, ETH / 10, n)).await) }
    });
    let answers = futures_util::future::join_all(requests).await;
    let ok: Vec<u64> = answers
        .iter()
        .filter(|(_, a)| a.0 == 200)
        .map(|(n, _)| *n)
        .collect();
    let over: Vec<&(u16, Value)> = answers
        .iter()
        .map(|(_, a)| a)
        .filter(|a| error(a) == (403, "budget_exceeded".into()))
        .collect();
    assert_eq!((ok.len(), over.len()), (10, 54), "{answers:?}");
    let refusal = &over[0].1;
    assert_eq!(refusal["owner"], ops.omni);
    assert_eq!(
        (refusal["asset"].as_str(), refusal["chain"].as_u64()),
        (Some("native"), Some(1))
    );
    assert_eq!(refusal["remaining"], "0");
    assert!(refusal["frees_at"].is_string());

    // bot-1 sees both budgets of its lineage: ops's full, its own holding its share.
    let (_, shown) = bot1
        .call(
            &stack,
            "GET",
            &format!("/v1/actors/{}/policy", bot1.omni),
            None,
        )
        .await;
    let budget_of = |owner: &str| {
        shown["budgets"]
            .as_array()
            .expect("budgets")
            .iter()
            .find(|b| b["owner"] == owner)
            .cloned()
            .expect("budget")
    };
    let ops_budget = budget_of(&ops.omni);
    assert_eq!(
        (
            ops_budget["spent"].as_str(),
            ops_budget["remaining"].as_str()
        ),
        (Some("1000000000000000000"), Some("0")),
        "{shown}"
    );
    let bot1_share = ok.iter().filter(|n| *n % 2 == 0).count() as u128;
    assert_eq!(
        budget_of(&bot1.omni)["spent"],
        (bot1_share * ETH / 10).to_string()
    );

    // An acknowledged request retried with the same digest is counted once: it is signed
    // again though the budget is full, and nothing more is spent.
    let (n, by) = (
        ok[0],
        if ok[0].is_multiple_of(2) {
            &bot1
        } else {
            &bot2
        },
    );
    assert_eq!(sign_tx(&stack, by, tx(A, ETH / 10, n)).await.0, 200);
    let (_, shown) = alice
        .call(
            &stack,
            "GET",
            &format!("/v1/actors/{}/policy", ops.omni),
            None,
        )
        .await;
    assert_eq!(shown["budgets"][0]["spent"], ETH.to_string(), "{shown}");

    // Replacing the policy keeps what was spent; a restart too.
    let wider = json!({"tx": {"to": "any"},
        "budgets": [{"asset": "native", "chain": 1, "window_seconds": 7200, "max": (2 * ETH).to_string()}]});
    assert_eq!(set_policy(&stack, &alice, &ops, wider).await.0, 200);
    stack
        .server
        .stop(Duration::from_secs(5))
        .await
        .expect("stops");
    let stack = start(dir.path(), None).await;
    let (_, shown) = alice
        .call(
            &stack,
            "GET",
            &format!("/v1/actors/{}/policy", ops.omni),
            None,
        )
        .await;
    assert_eq!(shown["budgets"][0]["spent"], ETH.to_string(), "{shown}");
    assert_eq!(sign_tx(&stack, &bot2, tx(A, ETH, 100)).await.0, 200);
    assert_eq!(
        error(&sign_tx(&stack, &bot2, tx(A, ETH / 10, 101)).await).1,
        "budget_exceeded"
    );

    // The window rolls: two hours (and one 1-minute bucket) later the spend is gone.
    stack.clock.advance(Duration::from_secs(7_200 + 61));
    assert_eq!(sign_tx(&stack, &bot2, tx(A, ETH / 10, 102)).await.0, 200);
}

#[actix::test]
async fn a_rate_limit_counts_the_subtree() {
    let dir = tempfile::tempdir().expect("tempdir");
    let stack = start(dir.path(), None).await;
    let alice = master(&stack, 65).await;
    let ops = agent(&stack, &alice, "ops", None).await;
    let bot = agent(&stack, &ops, "bot", Some(&ops.omni)).await;
    let rate = json!({"messages": {"text": true}, "rate": {"window_seconds": 60, "max": 3}});
    assert_eq!(set_policy(&stack, &alice, &ops, rate).await.0, 200);
    for (who, n) in [(&ops, 0), (&bot, 1), (&bot, 2)] {
        let (status, body) = who
            .call(
                &stack,
                "POST",
                "/v1/sign/eip191",
                Some(json!({"message": format!("m{n}")})),
            )
            .await;
        assert_eq!(status, 200, "{body}");
    }
    let limited = bot
        .call(
            &stack,
            "POST",
            "/v1/sign/eip191",
            Some(json!({"message": "m3"})),
        )
        .await;
    assert_eq!(
        error(&limited),
        (429, "rate_limited".into()),
        "{}",
        limited.1
    );
    assert_eq!(limited.1["owner"], ops.omni);
    stack.clock.advance(Duration::from_secs(61));
    let (status, _) = bot
        .call(
            &stack,
            "POST",
            "/v1/sign/eip191",
            Some(json!({"message": "m4"})),
        )
        .await;
    assert_eq!(status, 200);
}

async fn pending(stack: &Stack, who: &Who, nonce: u64) -> String {
    let (status, body) = sign_tx(stack, who, tx(A, 6 * ETH / 10, nonce)).await;
    assert_eq!(
        (status, body["status"].as_str()),
        (202, Some("approval_required")),
        "{body}"
    );
    assert!(body["expires_at"].is_string());
    body["approval_id"].as_str().expect("id").to_owned()
}

async fn approval(stack: &Stack, who: &Who, id: &str) -> Value {
    let (status, body) = who
        .call(stack, "GET", &format!("/v1/approvals/{id}"), None)
        .await;
    assert_eq!(status, 200, "{body}");
    body
}

#[actix::test]
async fn approvals_are_decided_above_the_policy_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let stack = long_sessions(dir.path()).await;
    let alice = master(&stack, 66).await;
    let ops = agent(&stack, &alice, "ops", None).await;
    let bot = agent(&stack, &ops, "bot", Some(&ops.omni)).await;
    let policy = json!({"tx": {"to": "any"},
        "budgets": [{"asset": "native", "chain": 1, "window_seconds": 3600, "max": ETH.to_string()}],
        "approval": {"above": [{"asset": "native", "chain": 1, "amount": (ETH / 2).to_string()}], "ttl_seconds": 600}});
    // On ops: its deciders are its strict ancestors — the master only.
    assert_eq!(set_policy(&stack, &alice, &ops, policy).await.0, 200);

    assert_eq!(
        sign_tx(&stack, &bot, tx(A, ETH / 10, 0)).await.0,
        200,
        "below the threshold"
    );
    let id = pending(&stack, &bot, 1).await;
    assert_eq!(approval(&stack, &bot, &id).await["status"], "pending");
    // A second request that fits the budget now (0.1 of 1 ETH is spent).
    let late = pending(&stack, &bot, 2).await;

    // ops created bot, but the threshold is in ops's own policy: ops cannot decide it.
    let (_, listed) = ops
        .call(&stack, "GET", "/v1/approvals?state=pending", None)
        .await;
    assert_eq!(
        listed["approvals"].as_array().map(Vec::len),
        Some(0),
        "{listed}"
    );
    let by_ops = ops
        .call(&stack, "POST", &format!("/v1/approvals/{id}/approve"), None)
        .await;
    assert_eq!(error(&by_ops), (403, "scope_denied".into()), "{}", by_ops.1);
    let by_bot = bot
        .call(&stack, "POST", &format!("/v1/approvals/{id}/approve"), None)
        .await;
    assert_eq!(by_bot.0, 403);

    // The master sees it and approves; the requester gets exactly the route's answer.
    let (_, listed) = alice
        .call(&stack, "GET", "/v1/approvals?state=pending", None)
        .await;
    let first = listed["approvals"]
        .as_array()
        .expect("list")
        .iter()
        .find(|a| a["id"] == id.as_str())
        .expect("listed");
    assert_eq!(first["agent"], bot.omni);
    assert_eq!(first["spends"][0]["amount"], (6 * ETH / 10).to_string());
    let (status, decided) = alice
        .call(&stack, "POST", &format!("/v1/approvals/{id}/approve"), None)
        .await;
    assert_eq!(
        (status, decided["status"].as_str()),
        (200, Some("approved")),
        "{decided}"
    );
    let done = approval(&stack, &bot, &id).await;
    assert_eq!(done["status"], "approved");
    let result = &done["result"];
    assert!(
        result["raw"]
            .as_str()
            .is_some_and(|r| r.starts_with("0x02")),
        "{done}"
    );
    assert!(result["hash"].is_string() && result["address"].is_string());
    // Used once.
    let again = alice
        .call(&stack, "POST", &format!("/v1/approvals/{id}/approve"), None)
        .await;
    assert_eq!(error(&again), (409, "approval_not_pending".into()));
    assert_eq!(again.1["status"], "approved");

    // Approving the second after the first spent the budget is refused (0.7 of 1 ETH is
    // spent); it stays pending, and a new request that would not fit is refused at once.
    let refused = alice
        .call(
            &stack,
            "POST",
            &format!("/v1/approvals/{late}/approve"),
            None,
        )
        .await;
    assert_eq!(
        error(&refused),
        (403, "budget_exceeded".into()),
        "{}",
        refused.1
    );
    assert_eq!(approval(&stack, &bot, &late).await["status"], "pending");
    let over = sign_tx(&stack, &bot, tx(A, 6 * ETH / 10, 9)).await;
    assert_eq!(error(&over), (403, "budget_exceeded".into()), "{}", over.1);

    // Denied.
    let (status, denied) = alice
        .call(&stack, "POST", &format!("/v1/approvals/{late}/deny"), None)
        .await;
    assert_eq!((status, denied["status"].as_str()), (200, Some("denied")));
    assert_eq!(approval(&stack, &bot, &late).await["status"], "denied");

    // Expired.
    stack.clock.advance(Duration::from_secs(3_700));
    let slow = pending(&stack, &bot, 3).await;
    stack.clock.advance(Duration::from_secs(601));
    assert_eq!(approval(&stack, &bot, &slow).await["status"], "expired");
    let expired = alice
        .call(
            &stack,
            "POST",
            &format!("/v1/approvals/{slow}/approve"),
            None,
        )
        .await;
    assert_eq!(error(&expired), (409, "approval_not_pending".into()));

    // The requester revoked: cancelled, and nothing can approve it.
    let doomed = pending(&stack, &bot, 4).await;
    let (status, _) = ops
        .call(
            &stack,
            "POST",
            &format!("/v1/actors/{}/revoke", bot.omni),
            None,
        )
        .await;
    assert_eq!(status, 200);
    let (_, listed) = alice
        .call(&stack, "GET", "/v1/approvals?state=pending", None)
        .await;
    assert_eq!(
        listed["approvals"].as_array().map(Vec::len),
        Some(0),
        "{listed}"
    );
    let cancelled = alice
        .call(
            &stack,
            "POST",
            &format!("/v1/approvals/{doomed}/approve"),
            None,
        )
        .await;
    assert_eq!(error(&cancelled), (409, "approval_not_pending".into()));
    assert_eq!(cancelled.1["status"], "cancelled");

    // Every request and decision is in the audit chain.
    let (_, rows) = alice
        .call(&stack, "GET", "/v1/audit?limit=1000", None)
        .await;
    let count = |name: &str| {
        rows["rows"]
            .as_array()
            .expect("rows")
            .iter()
            .filter(|r| r["operation"] == name)
            .count()
    };
    assert_eq!(
        (
            count("approval_requested"),
            count("approval_approved"),
            count("approval_denied"),
            count("budget_exceeded")
        ),
        (4, 1, 1, 2),
        "{rows}"
    );
}

#[actix::test]
async fn the_webhook_is_signed_and_retried() {
    use std::sync::{Arc, Mutex};
    // A receiver that fails twice, then accepts.
    let seen: Arc<Mutex<Vec<(axum::http::HeaderMap, String)>>> = Arc::default();
    let app = {
        let seen = seen.clone();
        axum::Router::new().route(
            "/hook",
            axum::routing::post(move |headers: axum::http::HeaderMap, body: String| {
                let seen = seen.clone();
                async move {
                    let mut seen = seen.lock().expect("lock");
                    seen.push((headers, body));
                    if seen.len() < 3 {
                        axum::http::StatusCode::INTERNAL_SERVER_ERROR
                    } else {
                        axum::http::StatusCode::NO_CONTENT
                    }
                }
            }),
        )
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let hook = format!("http://{}/hook", listener.local_addr().expect("addr"));
    tokio::spawn(async move { axum::serve(listener, app).await });

    let dir = tempfile::tempdir().expect("tempdir");
    let stack = start_with(dir.path(), Layer::default().with("webhook_backoff_ms", "1")).await;
    let alice = master(&stack, 67).await;
    let bot = agent(&stack, &alice, "bot", None).await;
    let refused = bot
        .call(
            &stack,
            "PUT",
            "/v1/approvals/webhook",
            Some(json!({"url": hook})),
        )
        .await;
    assert_eq!(error(&refused), (403, "scope_denied".into()));
    let bad = alice
        .call(
            &stack,
            "PUT",
            "/v1/approvals/webhook",
            Some(json!({"url": "ftp://x"})),
        )
        .await;
    assert_eq!(error(&bad), (400, "invalid_request".into()));
    let (status, set) = alice
        .call(
            &stack,
            "PUT",
            "/v1/approvals/webhook",
            Some(json!({"url": hook})),
        )
        .await;
    assert_eq!(status, 200, "{set}");
    let secret = hex::decode(set["secret"].as_str().expect("secret")).expect("hex");
    assert_eq!(secret.len(), 32);

    let policy = json!({"tx": {"to": "any"},
        "approval": {"above": [{"asset": "native", "chain": 1, "amount": "0"}]}});
    assert_eq!(set_policy(&stack, &alice, &bot, policy).await.0, 200);
    let id = pending(&stack, &bot, 0).await;

    let arrived = agentkeys_tests::wait_until(
        || seen.lock().expect("lock").len() >= 3,
        Duration::from_secs(10),
    )
    .await;
    assert!(arrived, "three deliveries");
    let deliveries = seen.lock().expect("lock").clone();
    assert_eq!(deliveries.len(), 3, "two failures, then success; no more");
    let (headers, body) = &deliveries[2];
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .expect(name)
            .to_owned()
    };
    let timestamp = header("agentkeys-timestamp");
    let key = aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, &secret);
    let expected = aws_lc_rs::hmac::sign(&key, format!("{timestamp}.{body}").as_bytes());
    assert_eq!(
        header("agentkeys-signature"),
        format!("v1={}", hex::encode(expected.as_ref()))
    );
    assert_eq!(
        deliveries[0].1, *body,
        "each retry sends the same signed body"
    );
    let event: Value = serde_json::from_str(body).expect("json");
    assert_eq!(event["event"], "approval_requested");
    assert_eq!(event["approval"]["id"], id.as_str());
    assert_eq!(event["approval"]["agent"], bot.omni);
    assert!(event["approval"].get("result").is_none());

    // Setting it again rotates the key.
    let (_, again) = alice
        .call(
            &stack,
            "PUT",
            "/v1/approvals/webhook",
            Some(json!({"url": hook})),
        )
        .await;
    assert_eq!(again["version"], 2);
    assert_ne!(again["secret"], set["secret"]);
}

#[actix::test]
async fn a_masters_own_policy_is_the_operators() {
    use agentkeys_gateway::admin::{AdminRequest, ApprovalAction, PolicyAction, call};
    let dir = tempfile::tempdir().expect("tempdir");
    let stack = start(dir.path(), None).await;
    let alice = master(&stack, 68).await;
    let bot = agent(&stack, &alice, "bot", None).await;
    let policy = json!({"tx": {"to": "any"},
        "approval": {"above": [{"asset": "native", "chain": 1, "amount": "1000"}]}});
    let set = call(
        dir.path(),
        &AdminRequest::Policy {
            action: PolicyAction::Set,
            master: alice.omni.clone(),
            file: None,
            document: Some(policy),
        },
    )
    .await
    .expect("admin");
    assert_eq!(
        (set["ok"].as_bool(), set["policy"]["set_by"].as_str()),
        (Some(true), Some("operator")),
        "{set}"
    );
    // The master cannot lift it, nor decide what it holds.
    let removed = alice
        .call(
            &stack,
            "DELETE",
            &format!("/v1/actors/{}/policy", alice.omni),
            None,
        )
        .await;
    assert_eq!(error(&removed).0, 403);
    // It binds the whole tree: the agent's spend waits for the operator.
    let id = pending(&stack, &bot, 0).await;
    let (_, listed) = alice
        .call(&stack, "GET", "/v1/approvals?state=pending", None)
        .await;
    assert_eq!(
        listed["approvals"].as_array().map(Vec::len),
        Some(0),
        "{listed}"
    );
    let by_master = alice
        .call(&stack, "POST", &format!("/v1/approvals/{id}/approve"), None)
        .await;
    assert_eq!(error(&by_master), (403, "scope_denied".into()));
    let listed = call(
        dir.path(),
        &AdminRequest::Approvals {
            action: ApprovalAction::List,
            id: None,
        },
    )
    .await
    .expect("admin");
    assert_eq!(listed["approvals"][0]["id"], id.as_str(), "{listed}");
    let approved = call(
        dir.path(),
        &AdminRequest::Approvals {
            action: ApprovalAction::Approve,
            id: Some(id.clone()),
        },
    )
    .await
    .expect("admin");
    assert_eq!(approved["approval"]["status"], "approved", "{approved}");
    assert_eq!(approved["approval"]["decided_by"], "operator");
    assert!(approval(&stack, &bot, &id).await["result"]["raw"].is_string());
}

#[actix::test]
async fn a_pending_approval_survives_a_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let stack = start(dir.path(), None).await;
    let alice = master(&stack, 69).await;
    let bot = agent(&stack, &alice, "bot", None).await;
    let policy = json!({"tx": {"to": "any"},
        "approval": {"above": [{"asset": "native", "chain": 1, "amount": "1000"}]}});
    assert_eq!(set_policy(&stack, &alice, &bot, policy).await.0, 200);
    let id = pending(&stack, &bot, 0).await;
    stack
        .server
        .stop(Duration::from_secs(5))
        .await
        .expect("stops");

    let stack = start(dir.path(), None).await;
    assert_eq!(approval(&stack, &bot, &id).await["status"], "pending");
    let (status, decided) = alice
        .call(&stack, "POST", &format!("/v1/approvals/{id}/approve"), None)
        .await;
    assert_eq!(
        (status, decided["status"].as_str()),
        (200, Some("approved")),
        "{decided}"
    );
    assert!(approval(&stack, &bot, &id).await["result"]["raw"].is_string());
}
