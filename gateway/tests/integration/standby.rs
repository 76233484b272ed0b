//! Two nodes on one PostgreSQL database with `active_nodes = "one"`, one active at a time: the
//! second waits as a standby
//! and, when the first stops, takes over with the same keys (K1, K2 with a rotation in
//! progress, the audit key — all kept wrapped in the database), so sessions issued by the
//! first keep working and the published JWKS does not change.

use crate::common;

use crate::rotation::{kids, published};
use agentkeys_gateway::config::Layer;
use common::{device, start_with, wallet};
use serde_json::json;

/// Sessions waiting for an advisory lock in the database of `url`.
async fn waiting_for_locks(url: &str) -> i64 {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .expect("connects");
    actix::spawn(async move {
        let _ = connection.await;
    });
    client
        .query_one(
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted \
             AND database = (SELECT oid FROM pg_database WHERE datname = current_database())",
            &[],
        )
        .await
        .expect("query")
        .get(0)
}

#[actix::test]
async fn a_standby_takes_over_with_the_same_keys_and_the_sessions_stay_valid() {
    let (a_dir, b_dir) = (
        tempfile::tempdir().expect("a"),
        tempfile::tempdir().expect("b"),
    );
    let url = agentkeys_tests::engine::database_url(a_dir.path());
    let layer = Layer::default()
        .with("store", url.as_str())
        .with("active_nodes", "one")
        .with("oidc_switch_delay_seconds", "3600");
    let a = start_with(a_dir.path(), layer.clone()).await;
    let key = device();
    let (status, session) = a.login(&key, &wallet(7)).await;
    assert_eq!(status, 200, "{session}");
    let token = session["session_jwt"].as_str().expect("token").to_string();
    // A rotation in progress: the next OIDC key is published, not signing yet.
    let rotated = common::rotate_oidc(a_dir.path()).await;
    assert_eq!(rotated["ok"], true, "{rotated}");
    let keys_of_a = kids(&published(&a).await);
    assert_eq!(keys_of_a.len(), 2);

    // The second node has its own data directory and the same K3; it waits while A is active.
    let b_layer = layer.with(
        "k3_file",
        a_dir.path().join("keys/k3.key").display().to_string(),
    );
    let b_dir_path = b_dir.path().to_path_buf();
    let b = actix::spawn(async move { start_with(&b_dir_path, b_layer).await });
    let mut waited = false;
    for _ in 0..2_500 {
        if waiting_for_locks(&url).await == 1 {
            waited = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(4)).await;
    }
    assert!(waited, "the second node waits for the active-node lock");
    assert!(!b.is_finished(), "a standby does not serve");

    a.stop().await;
    let b = b.await.expect("the standby starts");
    assert_eq!(
        kids(&published(&b).await),
        keys_of_a,
        "the same keys on the new active node"
    );
    // The session A issued is accepted by B (the same K1 and the device binding in the
    // database), and B signs with the OIDC key A was signing with.
    let (status, minted) = b
        .call(
            &key,
            "POST",
            "/v1/oidc/token",
            Some(&json!({"ttl_seconds": 600})),
            Some(&token),
        )
        .await;
    assert_eq!(status, 200, "{minted}");
    b.stop().await;
}
