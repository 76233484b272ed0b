//! What a node does with the database when it starts: migrate, check that the database belongs
//! to this deployment, and register its incarnation.

use deadpool_postgres::Pool;

use crate::{PgError, PgSettings, migrate};

/// Who a node is, as far as the database checks it.
#[derive(Debug, Clone)]
pub struct NodeIdentity {
    /// The deployment's `client_id` (every omni depends on it).
    pub client_id: String,
    /// The fingerprint of the node's K3 (every wallet depends on it).
    pub k3_fingerprint: Vec<u8>,
    /// A name for operators (host name or configured node name); not unique.
    pub node_name: String,
}

/// A node's handle on the database.
#[derive(Debug, Clone)]
pub struct PgStore {
    pool: Pool,
    incarnation: i64,
}

impl PgStore {
    /// Migrates the schema (under the advisory lock), checks or records the deployment's
    /// `client_id` and K3 fingerprint (the first node records them; a node with other values is
    /// refused, as a redb store refuses them), and registers a new incarnation of this node.
    pub async fn open(settings: &PgSettings, identity: &NodeIdentity) -> Result<Self, PgError> {
        let pool = settings.pool()?;
        let mut client = pool.get().await?;
        migrate(&mut client).await?;
        check_meta(
            &client,
            "client_id",
            "client_id",
            identity.client_id.as_bytes(),
            |v| String::from_utf8_lossy(v).into_owned(),
        )
        .await?;
        check_meta(
            &client,
            "k3_fingerprint",
            "K3 fingerprint",
            &identity.k3_fingerprint,
            hex,
        )
        .await?;
        let incarnation: i64 = client
            .query_one(
                "INSERT INTO agentkeys_nodes (node_name) VALUES ($1) RETURNING incarnation",
                &[&identity.node_name],
            )
            .await?
            .get(0);
        tracing::info!(incarnation, node = %identity.node_name, "registered with PostgreSQL");
        drop(client);
        Ok(Self { pool, incarnation })
    }

    /// This node's incarnation (new at every start).
    pub fn incarnation(&self) -> i64 {
        self.incarnation
    }

    /// The connection pool.
    pub fn pool(&self) -> &Pool {
        &self.pool
    }

    /// Becomes the deployment's active node: takes the active-node lock (a session advisory
    /// lock on a connection of its own), waiting while another node holds it — this node is a
    /// standby until then; `waiting` is called once if it has to wait (`active_nodes = "one"`,
    /// the standby mode; by default every node serves, docs/multi-node.md). Every write
    /// transaction of an engine fenced by the lock
    /// ([`PgEngine::fenced_by`](crate::PgEngine::fenced_by)) checks that the lock is still this
    /// node's, so no write commits once another node may be active. If the lock's connection
    /// breaks, `lost` runs (the server exits: fail closed; its supervisor restarts it as a
    /// standby).
    pub async fn become_active(
        &self,
        waiting: impl FnOnce(),
        lost: impl FnOnce() + Send + 'static,
    ) -> Result<ActiveLock, PgError> {
        // Taken out of the pool: the lock must never go back to it with the connection, and
        // closing the connection releases the lock.
        let client = deadpool_postgres::Object::take(self.pool.get().await?);
        let got: bool = client
            .query_one("SELECT pg_try_advisory_lock($1)", &[&ACTIVE_LOCK])
            .await?
            .get(0);
        if !got {
            waiting();
            client
                .execute("SELECT pg_advisory_lock($1)", &[&ACTIVE_LOCK])
                .await?;
        }
        let backend_pid: i32 = client
            .query_one("SELECT pg_backend_pid()", &[])
            .await?
            .get(0);
        tracing::info!(
            incarnation = self.incarnation,
            "this node is the active node"
        );
        let watcher = tokio::spawn(async move {
            loop {
                tokio::time::sleep(std::time::Duration::from_secs(1)).await;
                if let Err(e) = client.simple_query("SELECT 1").await {
                    tracing::error!(
                        cause = %e,
                        "lost the connection that holds the active-node lock"
                    );
                    lost();
                    return;
                }
            }
        });
        Ok(ActiveLock {
            watcher,
            backend_pid,
        })
    }
}

impl PgStore {
    /// Serializes the start of nodes serving at once: held (on a connection of its own) from
    /// before the store opens until this node's key sets are stored, so nodes starting together
    /// on an empty database do not each create their own keys — the second finds the first's.
    /// Dropping the guard releases it.
    pub async fn startup_lock(&self) -> Result<StartupLock, PgError> {
        let client = deadpool_postgres::Object::take(self.pool.get().await?);
        client
            .execute("SELECT pg_advisory_lock($1)", &[&STARTUP_LOCK])
            .await?;
        Ok(StartupLock { _client: client })
    }
}

/// See [`PgStore::startup_lock`].
pub struct StartupLock {
    _client: deadpool_postgres::ClientWrapper,
}

impl std::fmt::Debug for StartupLock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StartupLock").finish_non_exhaustive()
    }
}

/// The start lock of nodes serving at once ("agkstart" in ASCII).
const STARTUP_LOCK: i64 = 0x6167_6b73_7461_7274;

/// The active-node lock ("agkactiv" in ASCII).
pub(crate) const ACTIVE_LOCK: i64 = 0x6167_6b61_6374_6976;

/// Held while this node is the active node; dropping it releases the lock (the connection
/// closes).
#[derive(Debug)]
pub struct ActiveLock {
    watcher: tokio::task::JoinHandle<()>,
    backend_pid: i32,
}

impl ActiveLock {
    /// The server process (backend) of the lock's session.
    pub fn backend_pid(&self) -> i32 {
        self.backend_pid
    }
}

impl Drop for ActiveLock {
    fn drop(&mut self) {
        self.watcher.abort();
    }
}

/// Whether a deployment is recorded in the database (its K3 fingerprint), read without
/// changing anything: a node in dev mode may generate a K3 only for a new deployment.
pub async fn deployment_recorded(settings: &PgSettings) -> Result<bool, PgError> {
    let client = settings.pool()?.get().await?;
    let exists: bool = client
        .query_one("SELECT to_regclass('agentkeys_meta') IS NOT NULL", &[])
        .await?
        .get(0);
    if !exists {
        return Ok(false);
    }
    Ok(client
        .query_opt(
            "SELECT 1 FROM agentkeys_meta WHERE name = 'k3_fingerprint'",
            &[],
        )
        .await?
        .is_some())
}

/// Records `value` under `name` unless a value is there, then compares (races between nodes
/// starting together end with the first insert; the others compare against it).
async fn check_meta(
    client: &tokio_postgres::Client,
    name: &str,
    what: &'static str,
    value: &[u8],
    show: fn(&[u8]) -> String,
) -> Result<(), PgError> {
    client
        .execute(
            "INSERT INTO agentkeys_meta (name, value) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING",
            &[&name, &value],
        )
        .await?;
    let stored: Vec<u8> = client
        .query_one("SELECT value FROM agentkeys_meta WHERE name = $1", &[&name])
        .await?
        .get(0);
    if stored != value {
        return Err(PgError::Mismatch {
            what,
            stored: show(&stored),
            configured: show(value),
        });
    }
    Ok(())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
