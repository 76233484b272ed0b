//! The routes a console needs besides the tree: a bounded search in a subtree, the size of a
//! subtree, and the audit chain head with the keys that verify it.

use crate::common;

use agentkeys_actors::signer::keys::verify_es256;
use common::{link, master, start};
use serde_json::{Value, json};

fn labels(page: &Value) -> Vec<String> {
    page["entries"]
        .as_array()
        .expect("entries")
        .iter()
        .map(|e| e["label"].as_str().expect("label").to_string())
        .collect()
}

#[actix::test]
async fn search_and_count_a_subtree_and_verify_the_audit_head() {
    let dir = tempfile::tempdir().expect("tempdir");
    let stack = start(dir.path(), None).await;
    let alice = master(&stack, 71).await;
    let create = |label: &str, parent: Option<&str>| {
        let mut body = json!({"label": label, "scopes": ["actors:create", "sign:eip191"]});
        if let Some(parent) = parent {
            body["parent"] = json!(parent);
        }
        body
    };
    let (_, ops) = alice
        .call(&stack, "POST", "/v1/actors", Some(create("ops", None)))
        .await;
    let ops_omni = ops["omni"].as_str().expect("omni").to_string();
    for label in ["bot-1", "bot-2"] {
        let (status, _) = alice
            .call(
                &stack,
                "POST",
                "/v1/actors",
                Some(create(label, Some(&ops_omni))),
            )
            .await;
        assert_eq!(status, 201);
    }
    let (_, side) = alice
        .call(&stack, "POST", "/v1/actors", Some(create("side", None)))
        .await;
    let side_omni = side["omni"].as_str().expect("omni").to_string();

    // By label part, depth-first, case ignored; by the start of an omni.
    let root = format!("/v1/actors/{}", alice.omni);
    let (status, found) = alice
        .call(&stack, "GET", &format!("{root}/search?q=BOT"), None)
        .await;
    assert_eq!(status, 200, "{found}");
    assert_eq!(labels(&found), ["bot-1", "bot-2"]);
    assert_eq!(found["entries"][0]["depth"], 2);
    assert!(found["next_cursor"].is_null());
    let prefix = &side_omni[..10];
    let (_, by_omni) = alice
        .call(&stack, "GET", &format!("{root}/search?q={prefix}"), None)
        .await;
    assert_eq!(labels(&by_omni), ["side"]);
    // One match per answer: the cursor continues the walk.
    let (_, first) = alice
        .call(&stack, "GET", &format!("{root}/search?q=o&limit=1"), None)
        .await;
    assert_eq!(labels(&first), ["ops"]);
    let cursor = first["next_cursor"].as_str().expect("more").to_string();
    let (_, second) = alice
        .call(
            &stack,
            "GET",
            &format!("{root}/search?q=o&limit=1&cursor={cursor}"),
            None,
        )
        .await;
    assert_eq!(labels(&second), ["bot-1"]);
    // Bounded input; another tree is not found; an agent searches only its own subtree.
    let (status, empty) = alice
        .call(&stack, "GET", &format!("{root}/search?q="), None)
        .await;
    assert_eq!(
        (status, empty["error"].as_str()),
        (400, Some("invalid_request"))
    );
    let long = "a".repeat(65);
    assert_eq!(
        alice
            .call(&stack, "GET", &format!("{root}/search?q={long}"), None)
            .await
            .0,
        400
    );
    let bob = master(&stack, 72).await;
    assert_eq!(
        bob.call(&stack, "GET", &format!("{root}/search?q=ops"), None)
            .await
            .0,
        404
    );
    let ops_agent = link(&stack, &alice, &ops_omni).await;
    let (_, mine) = ops_agent
        .call(
            &stack,
            "GET",
            &format!("/v1/actors/{ops_omni}/search?q=side"),
            None,
        )
        .await;
    assert!(labels(&mine).is_empty());

    // Sizes.
    let (status, size) = alice
        .call(&stack, "GET", &format!("{root}/count"), None)
        .await;
    assert_eq!(status, 200, "{size}");
    assert_eq!(
        (size["actors"].as_u64(), size["more"].as_bool()),
        (Some(5), Some(false))
    );
    let (_, ops_size) = ops_agent
        .call(&stack, "GET", &format!("/v1/actors/{ops_omni}/count"), None)
        .await;
    assert_eq!(ops_size["actors"], 3);

    // The head: signed by a published audit key, and the last row hashes to it.
    let (status, head) = alice.call(&stack, "GET", "/v1/audit/head", None).await;
    assert_eq!(status, 200, "{head}");
    let keys = head["keys"].as_array().expect("keys");
    let key = keys
        .iter()
        .find(|k| k["kid"] == head["kid"])
        .expect("the signing key is published");
    let bytes = |field: &str| {
        hex::decode(head[field].as_str().expect(field).trim_start_matches("0x")).expect("hex")
    };
    assert!(verify_es256(key, &bytes("message"), &bytes("signature")));
    let (_, rows) = alice
        .call(&stack, "GET", "/v1/audit?limit=1000", None)
        .await;
    let last = rows["rows"]
        .as_array()
        .expect("rows")
        .last()
        .expect("a row")
        .clone();
    assert_eq!(last["hash"], head["hash"]);
    assert_eq!(last["chain_seq"], head["length"]);
    assert_eq!(last["seq"], head["seq"]);
    stack.stop().await;
}
