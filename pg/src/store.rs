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
