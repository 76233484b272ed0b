//! The credential vault over HTTP: round trip and versions, only masters write, grants down the
//! lineage and their narrowing at once, other masters see nothing, a tampered record returns
//! nothing, reads are audited, and no read that starts after `revoke` returned succeeds.

use crate::common;

use std::time::Instant;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use common::{Stack, Who, link, master, start};
use redb::ReadableTable as _;
use serde_json::{Value, json};

const SECRET: &str = "sk-live-7f3a9c1e5b2d4f6a8c0e";

async fn put(stack: &Stack, who: &Who, service: &str, value: &str) -> (u16, Value) {
    who.call(
        stack,
        "PUT",
        &format!("/v1/credentials/{service}"),
        Some(json!({
            "value_b64": STANDARD.encode(value),
            "description": "the team's key",
            "inject": {"base_url": "https://api.example.com/v1", "header": "Authorization", "template": "Bearer {}"},
        })),
    )
    .await
}

async fn read(stack: &Stack, who: &Who, path: &str) -> (u16, Value) {
    who.call(stack, "GET", path, None).await
}

fn value_of(body: &Value) -> String {
    let b64 = body["value_b64"].as_str().expect("a value");
    String::from_utf8(STANDARD.decode(b64).expect("base64")).expect("utf-8")
}

/// An agent `label` under `parent` with `scopes`, linked with a fresh key.
async fn agent(stack: &Stack, by: &Who, parent: &str, label: &str, scopes: &[&str]) -> Who {
    let (status, created) = by
        .call(
            stack,
            "POST",
            "/v1/actors",
            Some(json!({"label": label, "parent": parent, "scopes": scopes})),
        )
        .await;
    assert_eq!(status, 201, "{created}");
    link(stack, by, created["omni"].as_str().expect("omni")).await
}

#[actix::test]
async fn values_round_trip_by_version_and_only_masters_write() {
    let dir = tempfile::tempdir().expect("tempdir");
    let stack = start(dir.path(), None).await;
    let alice = master(&stack, 81).await;
    let (status, written) = put(&stack, &alice, "openai", SECRET).await;
    assert_eq!(status, 200, "{written}");
    assert_eq!(written["version"], 1);
    assert_eq!(written["size"], SECRET.len());
    let (status, v2) = put(&stack, &alice, "openai", "sk-second").await;
    assert_eq!((status, &v2["version"]), (200, &json!(2)), "{v2}");
    let (status, newest) = read(&stack, &alice, "/v1/credentials/openai").await;
    assert_eq!(status, 200, "{newest}");
    assert_eq!(value_of(&newest), "sk-second");
    assert_eq!(newest["inject"]["template"], "Bearer {}");
    let (status, old) = read(&stack, &alice, "/v1/credentials/openai?version=1").await;
    assert_eq!(status, 200, "{old}");
    assert_eq!(value_of(&old), SECRET);
    let (status, missing) = read(&stack, &alice, "/v1/credentials/openai?version=9").await;
    assert_eq!(status, 404, "{missing}");
    // The list never shows values.
    let (status, list) = read(&stack, &alice, "/v1/credentials").await;
    assert_eq!(status, 200);
    assert_eq!(list["credentials"][0]["service"], "openai");
    assert_eq!(list["credentials"][0]["version"], 2);
    assert_eq!(
        list["credentials"][0]["inject_base_url"],
        "https://api.example.com/v1"
    );
    assert!(!list.to_string().contains("sk-"), "{list}");

    // Agents read with a grant, never write.
    let bot = agent(&stack, &alice, &alice.omni, "bot", &["cred:read:openai"]).await;
    let (status, got) = read(&stack, &bot, "/v1/credentials/openai").await;
    assert_eq!((status, value_of(&got)), (200, "sk-second".to_string()));
    let (status, body) = put(&stack, &bot, "openai", "mine").await;
    assert_eq!(
        (status, &body["error"]),
        (403, &json!("scope_denied")),
        "{body}"
    );
    let (status, body) = bot
        .call(&stack, "DELETE", "/v1/credentials/openai", None)
        .await;
    assert_eq!(
        (status, &body["error"]),
        (403, &json!("scope_denied")),
        "{body}"
    );
    // Another service needs its own grant; the list shows only what the agent may read.
    let (status, _) = put(&stack, &alice, "github", "ghp_x").await;
    assert_eq!(status, 200);
    let (status, body) = read(&stack, &bot, "/v1/credentials/github").await;
    assert_eq!(
        (status, &body["error"]),
        (403, &json!("scope_denied")),
        "{body}"
    );
    let (_, list) = read(&stack, &bot, "/v1/credentials").await;
    assert_eq!(
        list["credentials"].as_array().expect("list").len(),
        1,
        "{list}"
    );
    // Bad input.
    let (status, body) = alice
        .call(
            &stack,
            "PUT",
            "/v1/credentials/Bad..Name",
            Some(json!({"value_b64": "eA=="})),
        )
        .await;
    assert_eq!(status, 400, "{body}");
    for inject in [
        json!({"base_url": "http://api.example.com", "header": "Authorization", "template": "Bearer {}"}),
        json!({"base_url": "https://u:p@api.example.com", "header": "Authorization", "template": "{}"}),
        json!({"base_url": "https://api.example.com", "header": "Host", "template": "{}"}),
        json!({"base_url": "https://api.example.com", "header": "X-Key", "template": "no placeholder"}),
    ] {
        let (status, body) = alice
            .call(
                &stack,
                "PUT",
                "/v1/credentials/x",
                Some(json!({"value_b64": "eA==", "inject": inject})),
            )
            .await;
        assert_eq!(status, 400, "{inject}: {body}");
    }
    // Reads are audited (by the reader), and are events.
    let (_, audit) = read(&stack, &alice, "/v1/audit").await;
    let rows = audit["rows"].as_array().expect("rows");
    assert!(
        rows.iter()
            .any(|r| r["operation"] == "cred_read" && r["actor"] == json!(bot.omni)),
        "{audit}"
    );
    assert!(
        !audit.to_string().contains("sk-"),
        "no value in the audit rows"
    );
    // Deleted: gone, for everyone.
    let (status, _) = alice
        .call(&stack, "DELETE", "/v1/credentials/openai", None)
        .await;
    assert_eq!(status, 200);
    let (status, _) = read(&stack, &bot, "/v1/credentials/openai").await;
    assert_eq!(status, 404);
    let (status, _) = read(&stack, &alice, "/v1/credentials/openai?version=1").await;
    assert_eq!(status, 404);
    stack.stop().await;
}

#[actix::test]
async fn grants_follow_the_lineage_and_other_masters_see_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let stack = start(dir.path(), None).await;
    let alice = master(&stack, 82).await;
    let (status, _) = put(&stack, &alice, "openai", SECRET).await;
    assert_eq!(status, 200);
    let ops = agent(
        &stack,
        &alice,
        &alice.omni,
        "ops",
        &["actors:create", "cred:read:openai"],
    )
    .await;
    let worker = agent(&stack, &ops, &ops.omni, "worker", &["cred:read:openai"]).await;
    let (status, got) = read(&stack, &worker, "/v1/credentials/openai").await;
    assert_eq!((status, value_of(&got)), (200, SECRET.to_string()));
    // Narrowing the parent narrows the child at once.
    let (status, body) = alice
        .call(
            &stack,
            "PUT",
            &format!("/v1/actors/{}/scopes", ops.omni),
            Some(json!({"scopes": ["actors:create"]})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = read(&stack, &worker, "/v1/credentials/openai").await;
    assert_eq!(
        (status, &body["error"]),
        (403, &json!("scope_denied")),
        "{body}"
    );
    // Another master: its vault has no such credential, and it cannot name alice's.
    let bob = master(&stack, 83).await;
    let (status, body) = read(&stack, &bob, "/v1/credentials/openai").await;
    assert_eq!(
        (status, &body["error"]),
        (404, &json!("not_found")),
        "{body}"
    );
    let (_, list) = read(&stack, &bob, "/v1/credentials").await;
    assert_eq!(list["credentials"], json!([]));
    stack.stop().await;
}

#[actix::test]
async fn a_tampered_record_returns_nothing_and_the_file_holds_no_plaintext() {
    let dir = tempfile::tempdir().expect("tempdir");
    let stack = start(dir.path(), None).await;
    let alice = master(&stack, 84).await;
    let (status, _) = put(&stack, &alice, "openai", SECRET).await;
    assert_eq!(status, 200);
    let key = alice.key;
    let token = alice.token;
    stack.stop().await;
    let path = dir.path().join("agentkeys.redb");
    let raw = std::fs::read(&path).expect("store file");
    assert!(
        !raw.windows(SECRET.len()).any(|w| w == SECRET.as_bytes()),
        "the store file holds no plaintext"
    );
    {
        let table: redb::TableDefinition<(&[u8; 32], &str, u64), &[u8]> =
            redb::TableDefinition::new("credentials");
        let db = redb::Database::open(&path).expect("open");
        let txn = db.begin_write().expect("txn");
        {
            let mut t = txn.open_table(table).expect("table");
            let (k, mut v) = {
                let mut it = t.iter().expect("iter");
                let (k, v) = it.next().expect("a record").expect("read");
                (k.value().0.to_owned(), v.value().to_vec())
            };
            let last = v.len() - 1;
            v[last] ^= 1;
            t.insert((&k, "openai", 1), v.as_slice()).expect("write");
        }
        txn.commit().expect("commit");
    }
    let stack = start(dir.path(), None).await;
    let (status, body) = stack
        .call(&key, "GET", "/v1/credentials/openai", None, Some(&token))
        .await;
    assert_eq!(
        (status, &body["error"]),
        (500, &json!("internal")),
        "{body}"
    );
    assert!(body.get("value_b64").is_none());
    stack.stop().await;
}

#[actix::test]
async fn no_read_that_starts_after_revoke_returned_succeeds() {
    let dir = tempfile::tempdir().expect("tempdir");
    let stack = std::sync::Arc::new(start(dir.path(), None).await);
    let alice = master(&stack, 85).await;
    let (status, _) = put(&stack, &alice, "openai", SECRET).await;
    assert_eq!(status, 200);
    let bot =
        std::sync::Arc::new(agent(&stack, &alice, &alice.omni, "bot", &["cred:read:openai"]).await);
    let readers: Vec<_> = (0..4)
        .map(|_| {
            let (stack, bot) = (stack.clone(), bot.clone());
            actix::spawn(async move {
                let mut seen = Vec::new();
                for _ in 0..60 {
                    let began = Instant::now();
                    let (status, _) = read(&stack, &bot, "/v1/credentials/openai").await;
                    seen.push((began, status));
                }
                seen
            })
        })
        .collect();
    let (status, _) = read(&stack, &bot, "/v1/credentials/openai").await;
    assert_eq!(status, 200, "reads succeed before the revocation");
    let (status, revoked) = alice
        .call(
            &stack,
            "POST",
            &format!("/v1/actors/{}/revoke", bot.omni),
            None,
        )
        .await;
    let returned = Instant::now();
    assert_eq!(status, 200, "{revoked}");
    let mut after = 0;
    for reader in readers {
        for (began, status) in reader.await.expect("reader") {
            if began > returned {
                after += 1;
                assert_ne!(status, 200, "a read begun after revoke returned succeeded");
            }
        }
    }
    let (status, body) = read(&stack, &bot, "/v1/credentials/openai").await;
    assert_eq!(
        (status, &body["error"]),
        (401, &json!("actor_revoked")),
        "{body}"
    );
    assert!(after > 0 || status == 401);
    if let Ok(stack) = std::sync::Arc::try_unwrap(stack) {
        stack.stop().await;
    }
}
