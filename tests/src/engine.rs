//! Which storage engine a test's store runs on: redb (the default), or PostgreSQL when
//! `TEST_STORE=postgres` (scripts/test.sh runs the ledger's suites a second time that way, on
//! the throwaway cluster whose URL is in `TEST_POSTGRES_URL`).

use std::path::Path;
use std::sync::Arc;

use agentkeys_pg::{NodeIdentity, PgEngine, PgSettings, PgStore};
use agentkeys_runtime::Timestamp;
use agentkeys_runtime::store::{Store, StoreOptions};

/// Whether this run's stores are on PostgreSQL.
pub fn on_postgres() -> bool {
    std::env::var("TEST_STORE").is_ok_and(|v| v == "postgres")
}

/// Opens the test store of `dir`: the redb file `agentkeys.redb` in it, or on PostgreSQL a
/// database named after `dir` (created when missing), so opening the same `dir` again opens
/// the same data — as a restart would.
pub fn open_store(dir: &Path, options: &StoreOptions, now: Timestamp) -> Store {
    if !on_postgres() {
        return Store::open(&dir.join("agentkeys.redb"), options, now).expect("the store opens");
    }
    let settings = database_for(dir, options);
    let engine = PgEngine::new(&settings).expect("the PostgreSQL engine starts");
    Store::open_bytes(Arc::new(engine), options, now).expect("the store opens on PostgreSQL")
}

/// The migrated database of `dir` on the test cluster.
fn database_for(dir: &Path, options: &StoreOptions) -> PgSettings {
    let settings = PgSettings::parse(&database_url(dir))
        .expect("settings")
        .with_pool_size(8);
    let identity = NodeIdentity {
        client_id: options.client_id.clone(),
        k3_fingerprint: options.key_fingerprint.clone().unwrap_or_default(),
        node_name: "test".into(),
    };
    on_own_runtime(async move {
        PgStore::open(&settings, &identity)
            .await
            .expect("the database migrates");
        settings
    })
}

/// The URL of the database of `dir` on the test cluster (`store = "…"` for a server's
/// configuration), created when missing.
pub fn database_url(dir: &Path) -> String {
    let admin_url = std::env::var("TEST_POSTGRES_URL")
        .expect("TEST_STORE=postgres needs TEST_POSTGRES_URL (scripts/test.sh sets both)");
    let name = format!("t_{}", hash_name(dir));
    on_own_runtime(async move {
        let (client, connection) = tokio_postgres::connect(&admin_url, tokio_postgres::NoTls)
            .await
            .expect("the test cluster answers");
        tokio::spawn(connection);
        let exists = client
            .query_opt("SELECT 1 FROM pg_database WHERE datname = $1", &[&name])
            .await
            .expect("query")
            .is_some();
        if !exists {
            client
                .batch_execute(&format!("CREATE DATABASE {name}"))
                .await
                .expect("a database for the test");
        }
        let (base, _) = admin_url.rsplit_once('/').expect("a URL with a database");
        format!("{base}/{name}")
    })
}

/// Runs `fut` on a runtime of its own, on a thread of its own: the caller may be inside a
/// runtime already.
fn on_own_runtime<T: Send + 'static>(
    fut: impl std::future::Future<Output = T> + Send + 'static,
) -> T {
    std::thread::spawn(move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime")
            .block_on(fut)
    })
    .join()
    .expect("database set-up")
}

/// A database name from a path: 16 hex digits of a stable hash.
fn hash_name(dir: &Path) -> String {
    // FNV-1a: stable across runs and builds (std's hasher is not).
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in dir.as_os_str().as_encoded_bytes() {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{h:016x}")
}
