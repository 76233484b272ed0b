//! `agentkeys admin migrate --to postgres://…`: a redb store with a tree, sessions and an OIDC
//! rotation in progress is copied into an empty database, verified, and served from it — the
//! same omnis, the same keys, the sessions issued before still valid. A running server's store
//! and a database that is not empty are refused.

use crate::common;

use agentkeys_gateway::config::{Config, Layer};
use agentkeys_runtime::SystemClock;
use common::{device, start_with, wallet};
use serde_json::json;

use crate::rotation::{kids, published};

fn config(dir: &std::path::Path) -> Config {
    let flags = Layer::default()
        .with("listen", "127.0.0.1:0")
        .with("metrics_listen", "off")
        .with("data_dir", dir.display().to_string());
    Config::resolve(&Layer::default(), &Layer::default(), &flags).expect("config")
}

#[actix::test]
async fn a_redb_store_moves_to_postgres_with_its_tree_keys_and_sessions() {
    let dir = tempfile::tempdir().expect("tempdir");
    let redb = Layer::default().with("store", "redb");
    let stack = start_with(dir.path(), redb).await;
    let key = device();
    let (status, session) = stack.login(&key, &wallet(5)).await;
    assert_eq!(status, 200, "{session}");
    let token = session["session_jwt"].as_str().expect("token").to_string();
    let (status, agent) = stack
        .call(
            &key,
            "POST",
            "/v1/actors",
            Some(&json!({"label": "bot", "scopes": ["sign:eip191"]})),
            Some(&token),
        )
        .await;
    assert_eq!(status, 201, "{agent}");
    let rotated = common::rotate_oidc(dir.path()).await;
    assert_eq!(rotated["ok"], true, "{rotated}");
    let keys_before = kids(&published(&stack).await);

    let url = agentkeys_tests::engine::database_url(dir.path());
    let settings = agentkeys_pg::PgSettings::parse(&url).expect("settings");
    let refused =
        agentkeys_gateway::migrate::run(&config(dir.path()), &url, &settings, &SystemClock).await;
    let message = format!("{:#}", refused.expect_err("the server holds the store"));
    assert!(message.contains("stop the server first"), "{message}");
    stack.stop().await;

    let report =
        agentkeys_gateway::migrate::run(&config(dir.path()), &url, &settings, &SystemClock)
            .await
            .expect("migrates");
    assert_eq!(report["ok"], true, "{report}");
    assert_eq!(report["tables"], 31, "{report}");
    assert_eq!(report["keys"], 4, "session, two OIDC keys, audit: {report}");
    assert!(
        report["audit_rows"].as_u64().expect("rows") >= 3,
        "{report}"
    );
    let again =
        agentkeys_gateway::migrate::run(&config(dir.path()), &url, &settings, &SystemClock).await;
    let message = format!("{:#}", again.expect_err("not empty"));
    assert!(message.contains("empty database"), "{message}");

    // Served from PostgreSQL: the same keys, the session issued by the redb server, the tree.
    let stack = start_with(dir.path(), Layer::default().with("store", url.as_str())).await;
    assert_eq!(kids(&published(&stack).await), keys_before);
    let (status, me) = stack
        .call(&key, "GET", "/v1/whoami", None, Some(&token))
        .await;
    assert_eq!(status, 200, "{me}");
    assert_eq!(me["omni"], session["omni"]);
    let (status, tree) = stack
        .call(
            &key,
            "GET",
            &format!("/v1/actors/{}", agent["omni"].as_str().expect("omni")),
            None,
            Some(&token),
        )
        .await;
    assert_eq!(status, 200, "{tree}");
    assert_eq!(tree["label"], "bot");
    stack.stop().await;
}
