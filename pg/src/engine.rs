//! The store's byte engine on PostgreSQL: the typed tables of `agentkeys_runtime::store` as rows
//! of `agentkeys_kv`, one PostgreSQL transaction per writer batch.
//!
//! - **Writes are serialized across nodes.** A write transaction begins by taking a
//!   transaction-level advisory lock, so batches of all nodes run one at a time and every
//!   conditional write (single-use codes, unique labels, parent live, budgets) sees every write
//!   committed before it, on any node — the order one redb writer gives one node. Its statements
//!   run at READ COMMITTED, so after the lock each sees the newest commits.
//! - **Reads are one snapshot** (`REPEATABLE READ, READ ONLY`).
//! - **Synchronous callers.** The store's interface is synchronous (the writer is a thread;
//!   reads happen in actors). Every statement runs as a task on the engine's own tokio runtime
//!   and the caller waits for its answer on a channel, so it works from any thread, also from
//!   inside another runtime.
//! - **A transaction never outlives its owner open:** one dropped without commit is rolled back
//!   before its connection returns to the pool.

use std::future::Future;
use std::ops::Bound;
use std::sync::Arc;

use agentkeys_runtime::store::{ByteEngine, ByteRange, ByteRow, ByteTxn, StoreError};
use deadpool_postgres::{Object, Pool};
use tokio_postgres::types::ToSql;

use crate::{PgError, PgSettings};

/// The advisory lock every write transaction takes ("agkwrite" in ASCII).
const WRITE_LOCK: i64 = 0x6167_6b77_7269_7465;

/// Rows fetched by a range's first round trip (many ranges are `first`, `last` or a short
/// `take`), and by every later one.
const FIRST_PAGE: i64 = 16;
const PAGE: i64 = 128;

/// The runtime the engine's statements (and its pool's connections) run on.
struct Exec {
    runtime: Option<tokio::runtime::Runtime>,
    handle: tokio::runtime::Handle,
}

impl Drop for Exec {
    fn drop(&mut self) {
        // Dropping a runtime blocks, which panics inside another runtime: let it go instead.
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

impl Exec {
    /// Runs `fut` on the engine's runtime and waits for it on this thread.
    fn run<T: Send + 'static>(
        &self,
        fut: impl Future<Output = Result<T, StoreError>> + Send + 'static,
    ) -> Result<T, StoreError> {
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        self.handle.spawn(async move {
            let _ = tx.send(fut.await);
        });
        rx.recv().unwrap_or(Err(StoreError::Closed))
    }
}

/// A write transaction: READ COMMITTED behind the deployment's write lock.
const BEGIN_WRITE: &str = "BEGIN ISOLATION LEVEL READ COMMITTED; \
                           SELECT pg_advisory_xact_lock(7018696705045001317)";
const _: () = assert!(WRITE_LOCK == 7_018_696_705_045_001_317);

/// The SQLSTATE a fenced write transaction raises when this node lost the active-node lock.
const FENCED: &str = "AK001";

/// A read transaction: one snapshot.
const BEGIN_READ: &str = "BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY";

/// The PostgreSQL engine of a store (see the module documentation).
pub struct PgEngine {
    pool: Pool,
    exec: Arc<Exec>,
    /// What begins a write transaction (with the fence, if any).
    begin_write: Arc<str>,
}

impl std::fmt::Debug for PgEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgEngine").finish_non_exhaustive()
    }
}

/// A statement's failure: no answer at all (a broken or closed connection) means unreachable;
/// the server's own error (a constraint, a syntax error) or a client-side one (a parameter of
/// the wrong type) is a store failure.
pub(crate) fn db(e: tokio_postgres::Error) -> StoreError {
    if e.code().is_some_and(|code| code.code() == FENCED) {
        return StoreError::Unreachable(Arc::new(std::io::Error::other(
            "this node is no longer the active node",
        )));
    }
    let io = std::error::Error::source(&e).is_some_and(|s| s.is::<std::io::Error>());
    if e.as_db_error().is_none() && (e.is_closed() || io) {
        StoreError::Unreachable(std::sync::Arc::new(e))
    } else {
        StoreError::io(e)
    }
}

impl PgEngine {
    /// An engine on the database of `settings` (migrated by [`PgStore::open`](crate::PgStore)
    /// first), with a pool and a runtime of its own: its connections live on that runtime, so
    /// callers on any thread — also inside another runtime — can wait for them.
    pub fn new(settings: &PgSettings) -> Result<Self, PgError> {
        let pool = settings.pool()?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("agentkeys-pg")
            .enable_all()
            .build()
            .map_err(|e| PgError::Pool(format!("the engine's runtime: {e}")))?;
        let handle = runtime.handle().clone();
        Ok(Self {
            pool,
            exec: Arc::new(Exec {
                runtime: Some(runtime),
                handle,
            }),
            begin_write: BEGIN_WRITE.into(),
        })
    }

    /// Fences every write transaction with `lock`: it fails unless the active-node lock is
    /// still held by `lock`'s session, so this node commits nothing once another node may be
    /// active (see [`PgStore::become_active`](crate::PgStore::become_active)).
    pub fn fenced_by(mut self, lock: &crate::ActiveLock) -> Self {
        let key = crate::store::ACTIVE_LOCK;
        self.begin_write = format!(
            "{BEGIN_WRITE}; DO $$ BEGIN IF NOT EXISTS (SELECT 1 FROM pg_locks \
             WHERE locktype = 'advisory' AND granted AND objsubid = 1 AND pid = {pid} \
             AND ((classid::bigint << 32) | objid::bigint) = {key}) THEN \
             RAISE EXCEPTION USING ERRCODE = '{FENCED}', MESSAGE = 'not the active node'; END IF; END $$",
            pid = lock.backend_pid(),
        )
        .into();
        self
    }

    pub(crate) fn pool(&self) -> &Pool {
        &self.pool
    }

    /// Runs `fut` on the engine's runtime (where its connections live).
    pub(crate) fn spawn<T: Send + 'static>(
        &self,
        fut: impl Future<Output = T> + Send + 'static,
    ) -> tokio::task::JoinHandle<T> {
        self.exec.handle.spawn(fut)
    }

    fn begin(&self, sql: Arc<str>) -> Result<Box<dyn ByteTxn>, StoreError> {
        let pool = self.pool.clone();
        let client = self.exec.run(async move {
            let client = pool
                .get()
                .await
                .map_err(|e| StoreError::Unreachable(std::sync::Arc::new(e)))?;
            if let Err(e) = client.batch_execute(&sql).await {
                // Never hand a connection back to the pool inside a failed transaction.
                let _ = client.batch_execute("ROLLBACK").await;
                return Err(db(e));
            }
            Ok(client)
        })?;
        Ok(Box::new(PgTxn {
            client: Some(Arc::new(client)),
            exec: self.exec.clone(),
            puts: Default::default(),
        }))
    }
}

impl ByteEngine for PgEngine {
    fn begin_write(&self) -> Result<Box<dyn ByteTxn>, StoreError> {
        self.begin(self.begin_write.clone())
    }

    fn begin_read(&self) -> Result<Box<dyn ByteTxn>, StoreError> {
        self.begin(BEGIN_READ.into())
    }
}

/// One transaction on one pooled connection.
struct PgTxn {
    /// `None` once committed or rolled back.
    client: Option<Arc<Object>>,
    exec: Arc<Exec>,
    /// Writes whose previous value nobody asked for ([`ByteTxn::put`]), by (table, key): sent
    /// as one statement before the transaction's next statement or its commit.
    puts: std::sync::Mutex<std::collections::BTreeMap<(&'static str, Vec<u8>), Put>>,
}

/// A buffered write: the key in redb's encoding and the value.
struct Put {
    native: Vec<u8>,
    value: Vec<u8>,
}

/// Writes the buffered rows in one statement (each key once: the buffer is a map).
const FLUSH: &str = "INSERT INTO agentkeys_kv (tbl, key, native, value) \
                     SELECT * FROM unnest($1::text[], $2::bytea[], $3::bytea[], $4::bytea[]) \
                     ON CONFLICT (tbl, key) DO UPDATE SET value = EXCLUDED.value";

impl PgTxn {
    fn client(&self) -> Result<Arc<Object>, StoreError> {
        self.client.clone().ok_or(StoreError::Closed)
    }

    /// One statement (prepared once per connection) with owned parameters, after the buffered
    /// writes.
    fn query(
        &self,
        sql: String,
        params: Vec<Box<dyn ToSql + Send + Sync>>,
    ) -> Result<Vec<tokio_postgres::Row>, StoreError> {
        let client = self.client()?;
        let flush = self.take_puts();
        self.exec.run(async move {
            let statement = client.prepare_cached(&sql).await.map_err(db)?;
            let refs: Vec<&(dyn ToSql + Sync)> = params
                .iter()
                .map(|p| p.as_ref() as &(dyn ToSql + Sync))
                .collect();
            if let Some(rows) = flush {
                flush_rows(&client, rows).await?;
            }
            client.query(&statement, &refs).await.map_err(db)
        })
    }

    /// The buffered writes as the flush statement's four arrays, emptying the buffer.
    #[allow(clippy::type_complexity)]
    fn take_puts(&self) -> Option<(Vec<&'static str>, Vec<Vec<u8>>, Vec<Vec<u8>>, Vec<Vec<u8>>)> {
        let puts = std::mem::take(&mut *self.puts.lock().unwrap_or_else(|p| p.into_inner()));
        if puts.is_empty() {
            return None;
        }
        let mut rows = (
            Vec::with_capacity(puts.len()),
            Vec::with_capacity(puts.len()),
            Vec::with_capacity(puts.len()),
            Vec::with_capacity(puts.len()),
        );
        for ((table, key), put) in puts {
            rows.0.push(table);
            rows.1.push(key);
            rows.2.push(put.native);
            rows.3.push(put.value);
        }
        Some(rows)
    }

    fn finish(&mut self, sql: &'static str) -> Result<(), StoreError> {
        let flush = if sql == "COMMIT" {
            self.take_puts()
        } else {
            self.puts.lock().unwrap_or_else(|p| p.into_inner()).clear();
            None
        };
        let client = self.client.take().ok_or(StoreError::Closed)?;
        self.exec.run(async move {
            if let Some(rows) = flush {
                flush_rows(&client, rows).await?;
            }
            client.batch_execute(sql).await.map_err(db)
        })
    }
}

/// Sends buffered writes.
#[allow(clippy::type_complexity)]
async fn flush_rows(
    client: &Object,
    rows: (Vec<&'static str>, Vec<Vec<u8>>, Vec<Vec<u8>>, Vec<Vec<u8>>),
) -> Result<(), StoreError> {
    let statement = client.prepare_cached(FLUSH).await.map_err(db)?;
    client
        .execute(&statement, &[&rows.0, &rows.1, &rows.2, &rows.3])
        .await
        .map(|_| ())
        .map_err(db)
}

impl Drop for PgTxn {
    fn drop(&mut self) {
        // Never hand a connection back to the pool inside a transaction.
        if let Some(client) = self.client.take() {
            self.exec.handle.spawn(async move {
                if let Err(e) = client.batch_execute("ROLLBACK").await {
                    tracing::warn!(cause = %e, "rolling back an abandoned transaction failed");
                }
            });
        }
    }
}

fn owned(bytes: &[u8]) -> Box<dyn ToSql + Send + Sync> {
    Box::new(bytes.to_vec())
}

fn table(name: &'static str) -> Box<dyn ToSql + Send + Sync> {
    Box::new(name)
}

fn single_value(rows: Vec<tokio_postgres::Row>) -> Option<Vec<u8>> {
    rows.into_iter().next().map(|row| row.get::<_, Vec<u8>>(0))
}

impl ByteTxn for PgTxn {
    fn get(&self, name: &'static str, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        self.query(
            "SELECT value FROM agentkeys_kv WHERE tbl = $1 AND key = $2".into(),
            vec![table(name), owned(key)],
        )
        .map(single_value)
    }

    fn range(
        &self,
        name: &'static str,
        from: Bound<Vec<u8>>,
        to: Bound<Vec<u8>>,
        reverse: bool,
    ) -> Result<ByteRange<'_>, StoreError> {
        Ok(Box::new(PgRange {
            txn: self,
            table: name,
            from,
            to,
            reverse,
            page: std::collections::VecDeque::new(),
            fetched: false,
            done: false,
        }))
    }

    fn len(&self, name: &'static str) -> Result<u64, StoreError> {
        let rows = self.query(
            "SELECT count(*) FROM agentkeys_kv WHERE tbl = $1".into(),
            vec![table(name)],
        )?;
        let count: i64 = rows.first().map_or(0, |row| row.get(0));
        Ok(u64::try_from(count).unwrap_or(0))
    }

    fn insert(
        &self,
        name: &'static str,
        key: &[u8],
        native: &[u8],
        value: &[u8],
    ) -> Result<Option<Vec<u8>>, StoreError> {
        // Every part of the statement sees the snapshot before it: `old` is the previous value.
        self.query(
            "WITH old AS (SELECT value FROM agentkeys_kv WHERE tbl = $1 AND key = $2), \
             put AS (INSERT INTO agentkeys_kv (tbl, key, native, value) VALUES ($1, $2, $3, $4) \
                     ON CONFLICT (tbl, key) DO UPDATE SET value = EXCLUDED.value) \
             SELECT value FROM old"
                .into(),
            vec![table(name), owned(key), owned(native), owned(value)],
        )
        .map(single_value)
    }

    fn put(
        &self,
        name: &'static str,
        key: &[u8],
        native: &[u8],
        value: &[u8],
    ) -> Result<(), StoreError> {
        self.puts.lock().unwrap_or_else(|p| p.into_inner()).insert(
            (name, key.to_vec()),
            Put {
                native: native.to_vec(),
                value: value.to_vec(),
            },
        );
        Ok(())
    }

    fn remove(&self, name: &'static str, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        self.query(
            "DELETE FROM agentkeys_kv WHERE tbl = $1 AND key = $2 RETURNING value".into(),
            vec![table(name), owned(key)],
        )
        .map(single_value)
    }

    fn commit(mut self: Box<Self>) -> Result<(), StoreError> {
        self.finish("COMMIT")
    }

    fn announce(&self, masters: &[[u8; 32]]) -> Result<(), StoreError> {
        // A notification is delivered when (and only if) the transaction commits; its payload
        // is limited to 8,000 bytes, so masters go 100 (6,500 bytes of hex) to a notification.
        let payloads: Vec<String> = masters
            .chunks(100)
            .map(|chunk| {
                chunk
                    .iter()
                    .map(crate::cluster::hex)
                    .collect::<Vec<_>>()
                    .join(",")
            })
            .collect();
        self.query(
            format!(
                "SELECT pg_notify('{}', p) FROM unnest($1::text[]) p",
                crate::cluster::CHANNEL
            ),
            vec![Box::new(payloads)],
        )
        .map(|_| ())
    }

    fn abort(mut self: Box<Self>) -> Result<(), StoreError> {
        self.finish("ROLLBACK")
    }
}

/// A range read page by page (`PAGE` rows per round trip) in key order.
struct PgRange<'a> {
    txn: &'a PgTxn,
    table: &'static str,
    from: Bound<Vec<u8>>,
    to: Bound<Vec<u8>>,
    reverse: bool,
    page: std::collections::VecDeque<(Vec<u8>, ByteRow)>,
    fetched: bool,
    done: bool,
}

impl PgRange<'_> {
    fn fetch(&mut self) -> Result<(), StoreError> {
        let mut sql = String::from("SELECT key, native, value FROM agentkeys_kv WHERE tbl = $1");
        let mut params = vec![table(self.table)];
        for (bound, lower) in [(&self.from, true), (&self.to, false)] {
            let (op, key) = match (bound, lower) {
                (Bound::Included(k), true) => (">=", k),
                (Bound::Excluded(k), true) => (">", k),
                (Bound::Included(k), false) => ("<=", k),
                (Bound::Excluded(k), false) => ("<", k),
                (Bound::Unbounded, _) => continue,
            };
            params.push(owned(key));
            sql.push_str(&format!(" AND key {op} ${}", params.len()));
        }
        let order = if self.reverse { "DESC" } else { "ASC" };
        let limit = if self.fetched { PAGE } else { FIRST_PAGE };
        self.fetched = true;
        sql.push_str(&format!(" ORDER BY key {order} LIMIT {limit}"));
        let rows = self.txn.query(sql, params)?;
        if rows.len() < usize::try_from(limit).unwrap_or(0) {
            self.done = true;
        }
        for row in rows {
            let key: Vec<u8> = row.get(0);
            self.page.push_back((key, (row.get(1), row.get(2))));
        }
        // The next page starts after the last row of this one.
        if let Some((last, _)) = self.page.back() {
            if self.reverse {
                self.to = Bound::Excluded(last.clone());
            } else {
                self.from = Bound::Excluded(last.clone());
            }
        }
        Ok(())
    }
}

impl Iterator for PgRange<'_> {
    type Item = Result<ByteRow, StoreError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.page.is_empty()
            && !self.done
            && let Err(e) = self.fetch()
        {
            self.done = true;
            return Some(Err(e));
        }
        self.page.pop_front().map(|(_, row)| Ok(row))
    }
}
