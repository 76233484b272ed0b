//! What the PostgreSQL tests share.

use agentkeys_pg::PgSettings;

/// A fresh, empty database on the test cluster; answers its settings.
pub(crate) async fn fresh_database(name: &str) -> PgSettings {
    let admin_url = std::env::var("TEST_POSTGRES_URL").unwrap_or_else(|_| {
        panic!(
            "TEST_POSTGRES_URL is not set; run scripts/test.sh, which starts a throwaway \
             PostgreSQL cluster (scripts/pg.sh)"
        )
    });
    let (client, connection) = tokio_postgres::connect(&admin_url, tokio_postgres::NoTls)
        .await
        .expect("the test cluster answers");
    tokio::spawn(connection);
    let db = format!("t_{name}_{}", std::process::id());
    for statement in [
        format!("DROP DATABASE IF EXISTS {db}"),
        format!("CREATE DATABASE {db}"),
    ] {
        client
            .batch_execute(&statement)
            .await
            .expect("a fresh database");
    }
    let (base, _) = admin_url.rsplit_once('/').expect("a URL with a database");
    PgSettings::parse(&format!("{base}/{db}"))
        .expect("settings")
        .with_pool_size(4)
}
