//! Versioned schema migrations, applied in order under a session advisory lock, each in its
//! own transaction with its row in `agentkeys_schema`. Nodes starting together serialize on the
//! lock: the first applies what is missing, the others find it applied. A database with a newer
//! schema than this build knows is refused (an older build must never write to it).

use tokio_postgres::Client;

use crate::PgError;

/// One step of the schema.
#[derive(Debug, Clone, Copy)]
pub struct Migration {
    /// Its version (1, 2, … without gaps).
    pub version: u32,
    /// What it adds.
    pub name: &'static str,
    /// The statements.
    pub sql: &'static str,
}

/// Every migration this build knows, oldest first.
pub const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        name: "meta and node incarnations",
        sql: include_str!("../migrations/0001_meta_and_nodes.sql"),
    },
    Migration {
        version: 2,
        name: "the store's tables",
        sql: include_str!("../migrations/0002_tables.sql"),
    },
    Migration {
        version: 3,
        name: "shared short-lived state (DPoP proofs, logins in progress)",
        sql: include_str!("../migrations/0003_shared_state.sql"),
    },
];

/// The advisory lock key of migrations ("agkmigr" in ASCII).
const LOCK_KEY: i64 = 0x0061_676b_6d69_6772;

/// Brings the database to the newest schema this build knows; answers that version.
pub async fn migrate(client: &mut Client) -> Result<u32, PgError> {
    client
        .execute("SELECT pg_advisory_lock($1)", &[&LOCK_KEY])
        .await?;
    let applied = apply(client).await;
    // A session lock: released here, and by the server if the connection breaks first.
    let unlocked = client
        .execute("SELECT pg_advisory_unlock($1)", &[&LOCK_KEY])
        .await;
    let version = applied?;
    unlocked?;
    Ok(version)
}

/// The schema version of the database (`None`: never migrated).
pub async fn schema_version(client: &Client) -> Result<Option<u32>, PgError> {
    let exists: bool = client
        .query_one("SELECT to_regclass('agentkeys_schema') IS NOT NULL", &[])
        .await?
        .get(0);
    if !exists {
        return Ok(None);
    }
    let version: Option<i32> = client
        .query_one("SELECT max(version) FROM agentkeys_schema", &[])
        .await?
        .get(0);
    Ok(version.map(|v| u32::try_from(v).unwrap_or(0)))
}

async fn apply(client: &mut Client) -> Result<u32, PgError> {
    // Created only when missing (asked first: `IF NOT EXISTS` would log a notice at every start).
    let current = match schema_version(client).await? {
        Some(version) => version,
        None => {
            client
                .batch_execute(
                    "CREATE TABLE IF NOT EXISTS agentkeys_schema (
                         version    integer     PRIMARY KEY,
                         name       text        NOT NULL,
                         applied_at timestamptz NOT NULL DEFAULT now()
                     )",
                )
                .await?;
            0
        }
    };
    let known = MIGRATIONS.last().map_or(0, |m| m.version);
    if current > known {
        return Err(PgError::Schema {
            found: current,
            known,
        });
    }
    for m in MIGRATIONS.iter().filter(|m| m.version > current) {
        let tx = client.transaction().await?;
        tx.batch_execute(m.sql).await?;
        let version = i32::try_from(m.version).unwrap_or(i32::MAX);
        tx.execute(
            "INSERT INTO agentkeys_schema (version, name) VALUES ($1, $2)",
            &[&version, &m.name],
        )
        .await?;
        tx.commit().await?;
        tracing::info!(
            version = m.version,
            name = m.name,
            "schema migration applied"
        );
    }
    Ok(known)
}

#[cfg(test)]
mod tests {
    use super::MIGRATIONS;

    #[test]
    fn versions_start_at_one_without_gaps() {
        for (i, m) in MIGRATIONS.iter().enumerate() {
            assert_eq!(m.version as usize, i + 1, "{}", m.name);
        }
    }
}
