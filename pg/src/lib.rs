//! The PostgreSQL side of the multi-node store (issue 23; design and status in
//! docs/multi-node.md): connection settings with the password in a private file and TLS through
//! rustls ([`PgSettings`]), the connection pool, versioned schema migrations applied under an
//! advisory lock ([`migrate`]), and what a node checks and records when it starts
//! ([`PgStore::open`]: the deployment's `client_id` and K3 fingerprint, its incarnation).
//!
//! Nothing here serves requests yet: the domain's tables and the request path follow in the
//! next steps of the issue.

mod cluster;
mod config;
mod engine;
mod migrate;
mod store;

pub use cluster::{Admission, Bucket, Heard, NewPending, Taken, listen};
pub use config::{PgSettings, TlsMode};
pub use engine::PgEngine;
pub use migrate::{MIGRATIONS, Migration, migrate, schema_version};
pub use store::{ActiveLock, NodeIdentity, PgStore, StartupLock, deployment_recorded};

/// Why the PostgreSQL store could not be used.
#[derive(Debug, thiserror::Error)]
pub enum PgError {
    /// The connection settings are invalid.
    #[error("invalid PostgreSQL settings: {0}")]
    Config(String),
    /// The password file cannot be used.
    #[error("the PostgreSQL password file {path}: {why}")]
    Password {
        /// The file.
        path: String,
        /// What is wrong with it.
        why: String,
    },
    /// The database refused or failed a statement, or the connection broke.
    #[error("PostgreSQL: {0}")]
    Db(#[from] tokio_postgres::Error),
    /// No connection could be taken from the pool.
    #[error("PostgreSQL pool: {0}")]
    Pool(String),
    /// The database holds a schema newer than this build knows.
    #[error(
        "the database has schema version {found}, this build knows up to {known}; run a newer \
         build (never an older one) against this database"
    )]
    Schema {
        /// The version in the database.
        found: u32,
        /// The newest version this build knows.
        known: u32,
    },
    /// The database belongs to another deployment.
    #[error(
        "the database was created with {what} {stored}, but this node has {configured}; every \
         node of a deployment needs the same {what}"
    )]
    Mismatch {
        /// `client_id` or `K3 fingerprint`.
        what: &'static str,
        /// The recorded value (a fingerprint in hex).
        stored: String,
        /// This node's value.
        configured: String,
    },
}

impl From<deadpool_postgres::PoolError> for PgError {
    fn from(e: deadpool_postgres::PoolError) -> Self {
        PgError::Pool(e.to_string())
    }
}
