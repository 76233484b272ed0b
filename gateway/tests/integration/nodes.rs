//! Three gateway processes' worth of nodes (three servers in this process, each with its own
//! data directory, runtime, caches and pool) on one PostgreSQL database with
//! `active_nodes = "all"`, behind one public URL: every node serves every actor, and what one
//! node commits is seen by a request on any other that starts after it returned.

use crate::common;

use std::path::Path;
use std::time::{Duration, Instant};

use crate::agents::sign;
use agentkeys_gateway::config::Layer;
use common::{Stack, Who, device, master};
use futures_util::future::join_all;
use serde_json::{Value, json};

/// Three nodes on one database (the first creates the deployment and its K3; the other two
/// start together with the same K3, serialized only by the start lock).
pub(crate) struct Nodes {
    pub(crate) nodes: Vec<Stack>,
    pub(crate) dirs: Vec<tempfile::TempDir>,
}

impl Nodes {
    pub(crate) async fn start() -> Self {
        Self::start_with(Layer::default()).await
    }

    /// Three nodes with `layer` added to their configuration.
    pub(crate) async fn start_with(layer: Layer) -> Self {
        let dirs: Vec<_> = (0..3)
            .map(|_| tempfile::tempdir().expect("tempdir"))
            .collect();
        let url = agentkeys_tests::engine::database_url(dirs[0].path());
        let layer = layer
            .with("store", url.as_str())
            .with("active_nodes", "all");
        let first = common::start_with(dirs[0].path(), layer.clone()).await;
        let k3 = dirs[0].path().join("keys/k3.key").display().to_string();
        let rest = join_all(dirs[1..].iter().map(|dir| {
            let layer = layer.clone().with("k3_file", k3.as_str());
            async move { common::start_with(dir.path(), layer).await }
        }))
        .await;
        let mut nodes = vec![first];
        nodes.extend(rest);
        Nodes { nodes, dirs }
    }

    pub(crate) fn dir(&self, i: usize) -> &Path {
        self.dirs[i].path()
    }

    pub(crate) async fn stop(self) {
        for node in self.nodes {
            node.stop().await;
        }
    }
}

const ALL: [&str; 3] = ["actors:create", "sign:eip191", "sign:eip712"];

fn error(answer: &(u16, Value)) -> (u16, &str) {
    (answer.0, answer.1["error"].as_str().unwrap_or("-"))
}

/// An agent `label` of `parent` created through `node`, joined through a link code redeemed on
/// `node` too; answers it and its binding id.
async fn agent(node: &Stack, parent: &Who, label: &str, scopes: &[&str]) -> (Who, u64) {
    let body = json!({"label": label, "scopes": scopes});
    let (status, created) = parent.call(node, "POST", "/v1/actors", Some(body)).await;
    assert_eq!(status, 201, "{created}");
    let omni = created["omni"].as_str().expect("omni");
    let (who, session) = common::link_session(node, parent, omni).await;
    let bid = session["binding_id"].as_u64().expect("binding id");
    (who, bid)
}

/// Signs through `stack` without pause until 20 requests started after `revoked_at` was set;
/// answers every request: (started after the revocation returned, status, body).
async fn sign_until_revoked(
    stack: &Stack,
    who: &Who,
    revoked_at: &std::sync::Mutex<Option<Instant>>,
) -> Vec<(bool, u16, Value)> {
    let mut seen = Vec::new();
    let mut after = 0;
    while after < 20 && seen.len() < 5_000 {
        let started = Instant::now();
        let (status, body) = sign(stack, who, "under revocation").await;
        let revoked = *revoked_at.lock().expect("lock");
        let started_after = revoked.is_some_and(|r| started > r);
        after += usize::from(started_after);
        seen.push((started_after, status, body));
    }
    seen
}

#[actix::test]
async fn a_revocation_through_one_node_stops_signing_on_the_others_at_once() {
    let cluster = Nodes::start().await;
    let [a, b, c] = &cluster.nodes[..] else {
        unreachable!()
    };
    let alice = master(a, 41).await;
    let (ops, _) = agent(a, &alice, "ops", &ALL).await;
    // Every node has the agent active with its state cached.
    for node in [a, b, c] {
        assert_eq!(sign(node, &ops, "warm").await.0, 200);
    }

    // Agents sign through B and C without pause while the master revokes through A.
    let revoked_at = std::sync::Mutex::new(None::<Instant>);
    let revoke = async {
        // Let both loops sign a little first.
        tokio::time::sleep(Duration::from_millis(30)).await;
        let path = format!("/v1/actors/{}/revoke", ops.omni);
        let (status, body) = alice.call(a, "POST", &path, None).await;
        assert_eq!(status, 200, "{body}");
        *revoked_at.lock().expect("lock") = Some(Instant::now());
    };
    let (on_b, on_c, ()) = tokio::join!(
        sign_until_revoked(b, &ops, &revoked_at),
        sign_until_revoked(c, &ops, &revoked_at),
        revoke
    );
    for seen in [&on_b, &on_c] {
        let after: Vec<_> = seen.iter().filter(|(after, ..)| *after).collect();
        assert!(after.len() >= 20, "requests started after the revocation");
        for (_, status, body) in &after {
            assert_eq!(
                (*status, body["error"].as_str()),
                (401, Some("actor_revoked")),
                "a request that started after revoke returned: {body}"
            );
        }
        assert!(
            seen.iter()
                .any(|(after, status, _)| !after && *status == 200),
            "the loop signed before the revocation"
        );
    }
    cluster.stop().await;
}

#[actix::test]
async fn a_deleted_device_narrowed_scopes_and_a_policy_reach_every_node_at_once() {
    let cluster = Nodes::start().await;
    let [a, b, c] = &cluster.nodes[..] else {
        unreachable!()
    };
    let alice = master(a, 42).await;
    let (ops, _) = agent(b, &alice, "ops", &ALL).await;
    let (bot, bot_bid) = agent(c, &ops, "bot", &["sign:eip191"]).await;
    for node in [a, b, c] {
        assert_eq!(sign(node, &bot, "warm").await.0, 200);
    }

    // Narrowing the parent's scopes through A narrows the sub-agent on B and C.
    let path = format!("/v1/actors/{}/scopes", ops.omni);
    let narrowed = alice
        .call(a, "PUT", &path, Some(json!({"scopes": ["actors:create"]})))
        .await;
    assert_eq!(narrowed.0, 200, "{}", narrowed.1);
    for node in [b, c, a] {
        assert_eq!(
            error(&sign(node, &bot, "narrowed").await),
            (403, "scope_denied")
        );
    }
    // Restored through C: signing works again everywhere.
    let restored = alice
        .call(c, "PUT", &path, Some(json!({"scopes": ALL})))
        .await;
    assert_eq!(restored.0, 200, "{}", restored.1);
    for node in [a, b, c] {
        assert_eq!(sign(node, &bot, "restored").await.0, 200);
    }

    // A policy set through B that denies EIP-191 on ops's subtree applies on A and C at once.
    let policy_path = format!("/v1/actors/{}/policy", ops.omni);
    let policy = json!({"messages": {"text": false}});
    let set = alice.call(b, "PUT", &policy_path, Some(policy)).await;
    if set.0 == 200 {
        for node in [a, c] {
            let answer = sign(node, &bot, "denied").await;
            assert_eq!(answer.0, 403, "{}", answer.1);
        }
        let removed = alice.call(a, "DELETE", &policy_path, None).await;
        assert_eq!(removed.0, 200, "{}", removed.1);
        for node in [b, c] {
            assert_eq!(sign(node, &bot, "allowed").await.0, 200);
        }
    } else {
        panic!("the policy was refused: {}", set.1);
    }

    // The bot's device deleted through A: refused on B and C at once.
    let delete = format!("/v1/actors/{}/devices/{bot_bid}", bot.omni);
    let deleted = ops.call(a, "DELETE", &delete, None).await;
    assert_eq!(deleted.0, 200, "{}", deleted.1);
    for node in [b, c] {
        assert_eq!(
            error(&sign(node, &bot, "deleted").await),
            (401, "binding_revoked")
        );
    }
    cluster.stop().await;
}

#[actix::test]
async fn sixteen_redemptions_of_one_code_over_three_nodes_bind_exactly_one_device() {
    let cluster = Nodes::start().await;
    let nodes = &cluster.nodes;
    let alice = master(&nodes[0], 43).await;
    let body = json!({"label": "ops", "scopes": ["sign:eip191"]});
    let (status, created) = alice
        .call(&nodes[1], "POST", "/v1/actors", Some(body))
        .await;
    assert_eq!(status, 201, "{created}");
    let omni = created["omni"].as_str().expect("omni");
    let path = format!("/v1/actors/{omni}/link-codes");
    let (status, code) = alice.call(&nodes[2], "POST", &path, Some(json!({}))).await;
    assert_eq!(status, 200, "{code}");
    let redeem = json!({"code": code["code"]});
    let answers = join_all((0..16).map(|i| {
        let (node, key, redeem) = (&nodes[i % 3], device(), redeem.clone());
        async move {
            node.call(&key, "POST", "/v1/link/redeem", Some(&redeem), None)
                .await
        }
    }))
    .await;
    let bound = answers.iter().filter(|(status, _)| *status == 200).count();
    assert_eq!(bound, 1, "{answers:?}");
    for (status, body) in answers.iter().filter(|(status, _)| *status != 200) {
        assert!(
            *status == 409 || *status == 410 || *status == 400,
            "{status} {body}"
        );
    }
    // One device is listed, on every node.
    for node in nodes {
        let (status, devices) = alice
            .call(node, "GET", &format!("/v1/actors/{omni}/devices"), None)
            .await;
        assert_eq!(status, 200, "{devices}");
        let live = devices["devices"]
            .as_array()
            .expect("devices")
            .iter()
            .filter(|d| d["revoked_at"].is_null())
            .count();
        assert_eq!(live, 1, "{devices}");
    }
    cluster.stop().await;
}

#[actix::test]
async fn a_proof_used_on_one_node_is_refused_by_the_others_and_nonces_are_shared() {
    let cluster = Nodes::start().await;
    let [a, b, c] = &cluster.nodes[..] else {
        unreachable!()
    };
    let alice = master(a, 44).await;
    let proof = alice.proof(a, "GET", "/v1/whoami");
    let (status, _, _) = a
        .send("GET", "/v1/whoami", None, Some(&alice.token), &proof)
        .await;
    assert_eq!(status, 200);
    for node in [b, c] {
        let (status, body, _) = node
            .send("GET", "/v1/whoami", None, Some(&alice.token), &proof)
            .await;
        assert_eq!(
            (status, body["error"].as_str()),
            (401, Some("invalid_dpop_proof")),
            "{body}"
        );
    }
    // A nonce one node issued is accepted by another: the session refresh demands one.
    let refresh_url = format!("{}/v1/session/refresh", common::PUBLIC_URL);
    let first = alice
        .key
        .proof("POST", &refresh_url, a.now(), Some(&alice.token), None)
        .expect("proof");
    let (status, body, nonce) = a
        .send(
            "POST",
            "/v1/session/refresh",
            None,
            Some(&alice.token),
            &first,
        )
        .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (401, Some("use_dpop_nonce"))
    );
    let nonce = nonce.expect("a nonce");
    let with_nonce = alice
        .key
        .proof(
            "POST",
            &refresh_url,
            b.now(),
            Some(&alice.token),
            Some(&nonce),
        )
        .expect("proof");
    let (status, body, _) = b
        .send(
            "POST",
            "/v1/session/refresh",
            None,
            Some(&alice.token),
            &with_nonce,
        )
        .await;
    assert_eq!(status, 200, "{body}");
    cluster.stop().await;
}

#[actix::test]
async fn an_oidc_rotation_begun_on_one_node_is_published_by_every_node() {
    let cluster = Nodes::start().await;
    let before: Vec<_> = join_all(
        cluster
            .nodes
            .iter()
            .map(|n| async { crate::rotation::kids(&crate::rotation::published(n).await) }),
    )
    .await;
    assert!(before.iter().all(|k| *k == before[0] && k.len() == 1));
    let rotated = common::rotate_oidc(cluster.dir(0)).await;
    assert_eq!(rotated["ok"], true, "{rotated}");
    for node in &cluster.nodes {
        // Each node reads what others did at most once a second (of its clock).
        node.clock.advance(Duration::from_secs(2));
        let keys = crate::rotation::kids(&crate::rotation::published(node).await);
        assert_eq!(keys.len(), 2, "{keys:?}");
        assert!(keys.contains(&before[0][0]));
    }
    // After the switch delay (24 h by default) every node signs with the new key.
    let new_kid = crate::rotation::kids(&crate::rotation::published(&cluster.nodes[0]).await)
        .into_iter()
        .find(|k| *k != before[0][0])
        .expect("the new key");
    for (i, node) in cluster.nodes.iter().enumerate() {
        node.clock.advance(Duration::from_secs(25 * 3600));
        let who = master(node, 50 + u8::try_from(i).expect("small")).await;
        let (status, minted) = who
            .call(
                node,
                "POST",
                "/v1/oidc/token",
                Some(json!({"ttl_seconds": 600})),
            )
            .await;
        assert_eq!(status, 200, "{minted}");
        let jwt = minted["jwt"].as_str().expect("jwt");
        assert_eq!(crate::rotation::kid_of(jwt), new_kid);
    }
    cluster.stop().await;
}

#[actix::test]
async fn concurrent_spends_through_every_node_never_overshoot_a_budget() {
    use crate::policies::{A, ETH, set_policy, sign_tx, tx};
    let cluster = Nodes::start().await;
    let nodes = &cluster.nodes;
    let alice = master(&nodes[0], 45).await;
    let (ops, _) = agent(&nodes[1], &alice, "ops", &["actors:create", "sign:tx:1"]).await;
    let budget = json!({"tx": {"to": "any"},
        "budgets": [{"asset": "native", "chain": 1, "window_seconds": 7200, "max": ETH.to_string()}]});
    let set = set_policy(&nodes[2], &alice, &ops, budget).await;
    assert_eq!(set.0, 200, "{}", set.1);
    // 48 spends of 0.1 ETH against 1 ETH, spread over the three nodes.
    let answers = join_all((0..48u64).map(|n| {
        let (node, ops) = (&nodes[usize::try_from(n % 3).expect("small")], &ops);
        async move { sign_tx(node, ops, tx(A, ETH / 10, n)).await }
    }))
    .await;
    let ok = answers.iter().filter(|a| a.0 == 200).count();
    let over = answers
        .iter()
        .filter(|a| error(a) == (403, "budget_exceeded"))
        .count();
    assert_eq!((ok, over), (10, 38), "{answers:?}");
    cluster.stop().await;
}

#[actix::test]
async fn an_event_stream_on_one_node_shows_what_another_node_did() {
    let cluster = Nodes::start().await;
    let [a, b, _] = &cluster.nodes[..] else {
        unreachable!()
    };
    let alice = master(a, 46).await;
    let proof = alice.proof(b, "GET", "/v1/events");
    let mut stream = reqwest::Client::new()
        .get(format!("{}/v1/events", b.base))
        .header("authorization", format!("DPoP {}", alice.token))
        .header("dpop", proof)
        .send()
        .await
        .expect("stream");
    assert_eq!(stream.status(), 200);
    // An agent revoked through A: B's stream shows it (woken by A's notification).
    let body = json!({"label": "seen-elsewhere", "scopes": ["sign:eip191"]});
    let (status, created) = alice.call(a, "POST", "/v1/actors", Some(body)).await;
    assert_eq!(status, 201, "{created}");
    let omni = created["omni"].as_str().expect("omni").to_string();
    let revoked = alice
        .call(a, "POST", &format!("/v1/actors/{omni}/revoke"), None)
        .await;
    assert_eq!(revoked.0, 200, "{}", revoked.1);
    let mut text = String::new();
    let found = tokio::time::timeout(Duration::from_secs(10), async {
        while let Some(chunk) = stream.chunk().await.expect("chunk") {
            text.push_str(&String::from_utf8_lossy(&chunk));
            if text.contains("actor_revoke") && text.contains(&omni) {
                return true;
            }
        }
        false
    })
    .await;
    assert_eq!(found, Ok(true), "{text}");
    drop(stream);
    cluster.stop().await;
}

#[actix::test]
async fn a_wallet_login_started_on_one_node_is_finished_on_another_exactly_once() {
    let cluster = Nodes::start().await;
    let [a, b, c] = &cluster.nodes[..] else {
        unreachable!()
    };
    let (key, owner) = (device(), common::wallet(47));
    let challenge = a.challenge(&key, &owner).await;
    let body = common::answer(&challenge, &owner);
    // Another device key cannot finish it (and does not burn it).
    let other = b
        .call(
            &device(),
            "POST",
            "/v1/auth/wallet/verify",
            Some(&body),
            None,
        )
        .await;
    assert_eq!(error(&other), (400, "invalid_siwe"), "{}", other.1);
    // Finished on B and on C at once: exactly one session.
    let verify = |node: &'static str| {
        let stack = if node == "b" { b } else { c };
        stack.call(&key, "POST", "/v1/auth/wallet/verify", Some(&body), None)
    };
    let (on_b, on_c) = tokio::join!(verify("b"), verify("c"));
    let mut statuses = [on_b.0, on_c.0];
    statuses.sort_unstable();
    assert_eq!(statuses, [200, 400], "{} / {}", on_b.1, on_c.1);
    let session = if on_b.0 == 200 { on_b.1 } else { on_c.1 };
    let who = Who::from_session(key, &session);
    let (status, me) = who.call(a, "GET", "/v1/whoami", None).await;
    assert_eq!(status, 200, "{me}");
    assert_eq!(me["role"], "master");
    cluster.stop().await;
}

#[actix::test]
async fn an_email_login_and_a_pairing_cross_nodes_and_wrong_codes_count_everywhere() {
    let cluster = Nodes::start().await;
    let [a, b, c] = &cluster.nodes[..] else {
        unreachable!()
    };
    // The terminal asks node A; the link is opened on B; the terminal polls C.
    let key = device();
    let (status, started) = a
        .call(
            &key,
            "POST",
            "/v1/auth/email/request",
            Some(&json!({"email": "carol@example.com"})),
            None,
        )
        .await;
    assert_eq!(status, 200, "{started}");
    let request_id = started["request_id"].as_str().expect("id").to_string();
    let code = started["confirm_code"].as_str().expect("code").to_string();
    let token = common::token_from_outbox(cluster.dir(0), &request_id);
    let status_path = format!("/v1/auth/email/status/{request_id}");
    let (status, pending) = c.call(&key, "GET", &status_path, None, None).await;
    assert_eq!((status, pending["status"].as_str()), (200, Some("pending")));
    let (status, described) = crate::email::post_verify(b, &json!({"token": token})).await;
    assert_eq!(
        (status, described["status"].as_str()),
        (200, Some("confirm"))
    );
    // Wrong codes typed on different nodes add up: the fifth ends the request everywhere.
    let wrong = json!({"token": token, "confirm_code": "ZZZ-ZZZ"});
    for node in [a, b, c, a] {
        assert_eq!(
            error(&crate::email::post_verify(node, &wrong).await),
            (400, "invalid_confirm_code")
        );
    }
    let right = json!({"token": token, "confirm_code": code});
    let (status, verified) = crate::email::post_verify(b, &right).await;
    assert_eq!(status, 200, "{verified}");
    assert_eq!(verified["status"], "verified");
    let (status, session) = c.call(&key, "GET", &status_path, None, None).await;
    assert_eq!(
        (status, session["status"].as_str()),
        (200, Some("verified"))
    );
    let carol = Who::from_session(key, &session);
    // Used: no node takes the link again.
    assert_eq!(error(&crate::email::post_verify(a, &right).await).0, 410);

    // A pairing asked on A, claimed through B by carol, polled on C.
    let machine = device();
    let (status, pairing) = a
        .call(
            &machine,
            "POST",
            "/v1/pairing/request",
            Some(&json!({})),
            None,
        )
        .await;
    assert_eq!(status, 200, "{pairing}");
    let claim = json!({"code": pairing["code"], "label": "paired", "scopes": ["sign:eip191"]});
    let (first, second) = tokio::join!(
        carol.call(b, "POST", "/v1/pairing/claim", Some(claim.clone())),
        carol.call(c, "POST", "/v1/pairing/claim", Some(claim.clone()))
    );
    let mut statuses = [first.0, second.0];
    statuses.sort_unstable();
    assert_eq!(statuses[0], 200, "{} / {}", first.1, second.1);
    assert_ne!(
        statuses[1], 200,
        "one claim per code: {} / {}",
        first.1, second.1
    );
    let poll = json!({"request_id": pairing["request_id"]});
    let (status, polled) = c
        .call(&machine, "POST", "/v1/pairing/poll", Some(&poll), None)
        .await;
    assert_eq!(
        (status, polled["status"].as_str()),
        (200, Some("claimed")),
        "{polled}"
    );
    let paired = Who::from_session(machine, &polled);
    assert_eq!(sign(a, &paired, "paired across nodes").await.0, 200);
    cluster.stop().await;
}

#[actix::test]
async fn a_device_rate_is_counted_across_nodes() {
    // Three requests at once, then one a second — in total, whichever nodes they reach.
    let layer = Layer::default()
        .with("binding_rate_per_second", "1")
        .with("binding_burst", "3");
    let cluster = Nodes::start_with(layer).await;
    let nodes = &cluster.nodes;
    let alice = master(&nodes[0], 48).await;
    // The login took nothing from the binding's bucket; the clocks stand still here.
    let mut answers = Vec::new();
    for i in 0..9 {
        answers.push(alice.call(&nodes[i % 3], "GET", "/v1/whoami", None).await);
    }
    let ok = answers.iter().filter(|a| a.0 == 200).count();
    let limited: Vec<_> = answers.iter().filter(|a| a.0 == 429).collect();
    assert_eq!((ok, limited.len()), (3, 6), "{answers:?}");
    assert_eq!(limited[0].1["error"], "rate_limited");
    cluster.stop().await;
}

/// `agentkeys audit verify` run offline (no server answers) on the database of `url`: success,
/// standard output, standard error.
fn verify_offline(dir: &Path, k3: &Path, url: &str) -> (bool, String, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_agentkeys"))
        .args(["--json", "audit", "verify", "--data-dir"])
        .arg(dir)
        .arg("--k3-file")
        .arg(k3)
        .args(["--set", &format!("store={url}")])
        .env_clear()
        .env("HOME", dir)
        .output()
        .expect("agentkeys runs");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[actix::test]
async fn the_audit_written_by_three_nodes_verifies_offline_and_a_changed_row_is_caught() {
    let cluster = Nodes::start().await;
    let alice = master(&cluster.nodes[0], 49).await;
    let (ops, _) = agent(&cluster.nodes[1], &alice, "ops", &ALL).await;
    for node in &cluster.nodes {
        assert_eq!(sign(node, &ops, "audited").await.0, 200);
    }
    let url = agentkeys_tests::engine::database_url(cluster.dir(0));
    let k3 = cluster.dir(0).join("keys/k3.key");
    let dirs = cluster.dirs;
    for node in cluster.nodes {
        node.stop().await;
    }
    let (ok, out, err) = verify_offline(dirs[2].path(), &k3, &url);
    assert!(ok, "{out}{err}");
    let answer: Value = serde_json::from_str(out.trim()).expect("json");
    assert_eq!(answer["ok"], true, "{answer}");
    assert!(answer["rows"].as_u64().expect("rows") >= 5, "{answer}");

    // One byte of one audit row changed in the database: caught.
    let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .expect("connects");
    actix::spawn(async move {
        let _ = connection.await;
    });
    let changed = client
        .execute(
            "UPDATE agentkeys_kv SET value = overlay(value PLACING '\\xff'::bytea FROM 12 FOR 1) \
             WHERE tbl = 'audit' AND key = (SELECT key FROM agentkeys_kv WHERE tbl = 'audit' \
             ORDER BY key DESC LIMIT 1)",
            &[],
        )
        .await
        .expect("update");
    assert_eq!(changed, 1);
    let (ok, out, err) = verify_offline(dirs[2].path(), &k3, &url);
    assert!(!ok, "a changed row must be caught: {out}{err}");
    let first = out.lines().next().unwrap_or_default();
    let answer: Value = serde_json::from_str(first).unwrap_or_else(|e| panic!("{e}: {out}"));
    assert_eq!(answer["ok"], false, "{answer}");
    assert!(
        !answer["problems"].as_array().expect("problems").is_empty(),
        "{answer}"
    );
}

#[actix::test]
async fn magic_links_for_one_address_are_counted_across_nodes() {
    let layer = Layer::default()
        .with("email_links_per_hour", "2")
        .with("email_links_per_hour_ceiling", "3");
    let cluster = Nodes::start_with(layer).await;
    let body = json!({"email": "dave@example.com"});
    let mut statuses = Vec::new();
    for node in cluster.nodes.iter().chain(cluster.nodes.iter()) {
        let (status, _) = node
            .call(
                &device(),
                "POST",
                "/v1/auth/email/request",
                Some(&body),
                None,
            )
            .await;
        statuses.push(status);
    }
    // This client's share is 2 links an hour in total, whichever nodes it asks.
    assert_eq!(statuses, [200, 200, 429, 429, 429, 429]);
    cluster.stop().await;
}

#[actix::test]
async fn a_clients_logins_in_progress_are_capped_on_the_whole_deployment() {
    let cluster = Nodes::start_with(Layer::default().with("pending_per_client", "2")).await;
    let machine = device();
    let mut statuses = Vec::new();
    for node in &cluster.nodes {
        let (status, _) = node
            .call(
                &machine,
                "POST",
                "/v1/pairing/request",
                Some(&json!({})),
                None,
            )
            .await;
        statuses.push(status);
    }
    // Two outstanding pairings for this key (and address), whichever nodes it asked.
    assert_eq!(statuses, [200, 200, 429]);
    cluster.stop().await;
}
