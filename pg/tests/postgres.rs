//! Against a real PostgreSQL (`TEST_POSTGRES_URL`, set by scripts/test.sh from scripts/pg.sh):
//! migrations under the advisory lock, the deployment check, node incarnations. Each test works
//! in a database of its own.

mod common;

use agentkeys_pg::{NodeIdentity, PgError, PgSettings, PgStore, migrate, schema_version};
use common::fresh_database;

fn node(name: &str) -> NodeIdentity {
    NodeIdentity {
        client_id: "agentkeys".into(),
        k3_fingerprint: vec![0xab; 32],
        node_name: name.into(),
    }
}

#[tokio::test]
async fn nodes_starting_together_apply_each_migration_once_and_get_distinct_incarnations() {
    let settings = fresh_database("together").await;
    let opens: Vec<_> = (0..8)
        .map(|i| {
            let settings = settings.clone();
            tokio::spawn(async move { PgStore::open(&settings, &node(&format!("n{i}"))).await })
        })
        .collect();
    let mut incarnations = Vec::new();
    for open in opens {
        let store = open.await.expect("joined").expect("opens");
        incarnations.push(store.incarnation());
    }
    incarnations.sort_unstable();
    incarnations.dedup();
    assert_eq!(incarnations.len(), 8, "one incarnation per start");

    let pool = settings.pool().expect("pool");
    let client = pool.get().await.expect("connection");
    let known = agentkeys_pg::MIGRATIONS.len() as u32;
    assert_eq!(schema_version(&client).await.expect("read"), Some(known));
    let rows: i64 = client
        .query_one("SELECT count(*) FROM agentkeys_schema", &[])
        .await
        .expect("count")
        .get(0);
    assert_eq!(rows, i64::from(known), "every migration recorded once");
}

#[tokio::test]
async fn migrating_again_changes_nothing() {
    let settings = fresh_database("again").await;
    let pool = settings.pool().expect("pool");
    let mut client = pool.get().await.expect("connection");
    assert_eq!(schema_version(&client).await.expect("read"), None);
    let first = migrate(&mut client).await.expect("migrates");
    let applied_at = applied(&client).await;
    assert_eq!(migrate(&mut client).await.expect("again"), first);
    let again = applied(&client).await;
    assert_eq!(applied_at, again, "nothing re-applied");
}

#[tokio::test]
async fn a_database_with_a_newer_schema_is_refused() {
    let settings = fresh_database("newer").await;
    PgStore::open(&settings, &node("old")).await.expect("opens");
    let pool = settings.pool().expect("pool");
    let client = pool.get().await.expect("connection");
    client
        .execute(
            "INSERT INTO agentkeys_schema (version, name) VALUES (99, 'from a newer build')",
            &[],
        )
        .await
        .expect("a newer build's row");
    drop(client);
    let err = PgStore::open(&settings, &node("old"))
        .await
        .expect_err("refused");
    assert!(
        matches!(err, PgError::Schema { found: 99, .. }),
        "refused: {err}"
    );
}

#[tokio::test]
async fn a_node_of_another_deployment_is_refused_and_changes_nothing() {
    let settings = fresh_database("deployment").await;
    PgStore::open(&settings, &node("first"))
        .await
        .expect("opens");

    let mut other_k3 = node("second");
    other_k3.k3_fingerprint = vec![0xcd; 32];
    let err = PgStore::open(&settings, &other_k3)
        .await
        .expect_err("refused");
    assert_eq!(mismatch(&err), "K3 fingerprint", "{err}");
    assert!(err.to_string().contains(&"ab".repeat(32)), "{err}");

    let mut other_client = node("third");
    other_client.client_id = "someone-else".into();
    let err = PgStore::open(&settings, &other_client)
        .await
        .expect_err("refused");
    assert_eq!(mismatch(&err), "client_id", "{err}");

    // The recorded values stand, and the first deployment's nodes still start.
    PgStore::open(&settings, &node("first-again"))
        .await
        .expect("the deployment's own node");
}

#[tokio::test]
async fn required_tls_never_falls_back_to_plain_text() {
    // The test cluster speaks no TLS: a node told to require it must not connect at all.
    let plain = fresh_database("tls").await;
    let url = std::env::var("TEST_POSTGRES_URL").expect("set");
    let (base, _) = url.rsplit_once('/').expect("a URL with a database");
    let db = format!("t_tls_{}", std::process::id());
    let required = PgSettings::parse(&format!("{base}/{db}?sslmode=require")).expect("settings");
    assert_eq!(required.tls(), agentkeys_pg::TlsMode::Verified);
    let err = PgStore::open(&required, &node("tls"))
        .await
        .expect_err("refused");
    assert!(
        matches!(err, PgError::Pool(_) | PgError::Config(_)),
        "refused before any statement: {err}"
    );
    // The same database over plain text (as configured for loopback) works.
    PgStore::open(&plain, &node("plain")).await.expect("opens");
}

/// When each migration was applied, by version.
async fn applied(client: &tokio_postgres::Client) -> Vec<std::time::SystemTime> {
    client
        .query(
            "SELECT applied_at FROM agentkeys_schema ORDER BY version",
            &[],
        )
        .await
        .expect("rows")
        .iter()
        .map(|r| r.get(0))
        .collect()
}

/// What a [`PgError::Mismatch`] is about (empty for any other error).
fn mismatch(err: &PgError) -> &'static str {
    match err {
        PgError::Mismatch { what, .. } => what,
        _ => "",
    }
}
