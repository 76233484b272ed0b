//! What a request on a node of a multi-node deployment asks the database, in one statement:
//! record the request's DPoP proof where every node sees it, and read the master's change
//! epoch (docs/multi-node.md, "Several active nodes").

use agentkeys_runtime::store::{StoreError, StoreKey, epochs::EPOCHS};

use crate::engine::{PgEngine, db};

/// A token bucket shared by every node: `burst` tokens refilled at `rate` per second.
#[derive(Debug, Clone, PartialEq)]
pub struct Bucket {
    /// Its name (`b:<binding id>`, `ip:<client address>`).
    pub key: String,
    /// Tokens per second.
    pub rate: f64,
    /// Tokens at most.
    pub burst: f64,
    /// Now, in ms since the epoch.
    pub now_ms: i64,
}

/// The answer of [`PgEngine::admit`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Admission {
    /// The tokens left in the request's bucket after it took one; below 0: refused (the proof
    /// was not recorded then).
    pub tokens: f64,
    /// `false` if any node recorded this proof before: a replay.
    pub fresh: bool,
    /// The master's change epoch (0 if its tree never changed).
    pub epoch: u64,
    /// When the database server started (ms since the epoch): a change means it restarted.
    pub started_ms: i64,
}

/// `b AS (…)`: takes a token from the bucket named by the parameter `$key`, `$rate` tokens a
/// second up to `$burst`, at `$now` (ms); `RETURNING tokens` (below 0: refused; a refused
/// request costs at most one token of debt).
macro_rules! take_token {
    ($key:literal, $rate:literal, $burst:literal, $now:literal) => {
        concat!(
            "b AS (INSERT INTO agentkeys_buckets AS t (key, tokens, at_ms, full_at_ms) ",
            "VALUES (",
            $key,
            ", ",
            $burst,
            "::float8 - 1, ",
            $now,
            "::int8, ",
            $now,
            "::int8 + (1000 / ",
            $rate,
            "::float8)::bigint) ",
            "ON CONFLICT (key) DO UPDATE SET ",
            "tokens = GREATEST(-1, LEAST(",
            $burst,
            "::float8, t.tokens + GREATEST(0, ",
            $now,
            "::int8 - t.at_ms) / 1000.0 * ",
            $rate,
            "::float8) - 1), ",
            "at_ms = GREATEST(t.at_ms, ",
            $now,
            "::int8), ",
            "full_at_ms = GREATEST(t.at_ms, ",
            $now,
            "::int8) + (((",
            $burst,
            "::float8 - GREATEST(-1, LEAST(",
            $burst,
            "::float8, t.tokens + GREATEST(0, ",
            $now,
            "::int8 - t.at_ms) / 1000.0 * ",
            $rate,
            "::float8) - 1)) * 1000) / ",
            $rate,
            "::float8)::bigint ",
            "RETURNING tokens)"
        )
    };
}

/// Take a token from the request's bucket; if there was one, record the proof (unless
/// present); read the epoch and the server's start time. Parameters: $1 proof key, $2 its
/// expiry, $3 the epochs table, $4 the master's key, $5 bucket, $6 rate, $7 burst, $8 now (ms).
const ADMIT: &str = concat!(
    "WITH ",
    take_token!("$5", "$6", "$7", "$8"),
    ", r AS (INSERT INTO agentkeys_replay (key, expires_at) ",
    "SELECT $1, $2 WHERE (SELECT tokens FROM b) >= 0 ",
    "ON CONFLICT (key) DO NOTHING RETURNING 1) ",
    "SELECT (SELECT tokens FROM b), EXISTS (SELECT 1 FROM r), ",
    "(SELECT value FROM agentkeys_kv WHERE tbl = $3 AND key = $4), ",
    "(extract(epoch FROM pg_postmaster_start_time()) * 1000)::bigint"
);

/// A token from one bucket: $1 bucket, $2 rate, $3 burst, $4 now (ms).
const TAKE_BUCKET: &str = concat!(
    "WITH ",
    take_token!("$1", "$2", "$3", "$4"),
    " SELECT tokens FROM b"
);

impl PgEngine {
    /// Records a DPoP proof (`replay_key`, live until `expires_at` in seconds) for every node
    /// and reads `master`'s change epoch (0 without one) — one round trip, on the engine's own
    /// runtime.
    pub async fn admit(
        &self,
        master: Option<&[u8; 32]>,
        replay_key: [u8; 16],
        expires_at: i64,
        bucket: Bucket,
    ) -> Result<Admission, StoreError> {
        let key = master.map(|master| {
            let mut key = Vec::with_capacity(32);
            <&[u8; 32] as StoreKey>::encode_ordered(&master, &mut key);
            key
        });
        let pool = self.pool().clone();
        let task = self.spawn(async move {
            let client = pool.get().await.map_err(StoreError::unreachable)?;
            let statement = client.prepare_cached(ADMIT).await.map_err(db)?;
            let rate = bucket.rate.max(f64::MIN_POSITIVE);
            let row = client
                .query_one(
                    &statement,
                    &[
                        &&replay_key[..],
                        &expires_at,
                        &EPOCHS.name(),
                        &key,
                        &bucket.key,
                        &rate,
                        &bucket.burst,
                        &bucket.now_ms,
                    ],
                )
                .await
                .map_err(db)?;
            let epoch = match row.get::<_, Option<Vec<u8>>>(2) {
                // redb's encoding of a u64: eight bytes, little-endian.
                Some(bytes) => u64::from_le_bytes(bytes.as_slice().try_into().map_err(|_| {
                    StoreError::Corrupt("a master's change epoch is not 8 bytes".into())
                })?),
                None => 0,
            };
            Ok(Admission {
                tokens: row.get(0),
                fresh: row.get(1),
                epoch,
                started_ms: row.get(3),
            })
        });
        task.await.unwrap_or(Err(StoreError::Closed))
    }

    /// Takes a token from a shared `bucket` (for quotas outside the request's statement);
    /// answers the tokens left (below 0: refused).
    pub async fn take_bucket(&self, bucket: Bucket) -> Result<f64, StoreError> {
        let pool = self.pool().clone();
        let task = self.spawn(async move {
            let client = pool.get().await.map_err(StoreError::unreachable)?;
            let statement = client.prepare_cached(TAKE_BUCKET).await.map_err(db)?;
            let rate = bucket.rate.max(f64::MIN_POSITIVE);
            let row = client
                .query_one(
                    &statement,
                    &[&bucket.key, &rate, &bucket.burst, &bucket.now_ms],
                )
                .await
                .map_err(db)?;
            Ok(row.get(0))
        });
        task.await.unwrap_or(Err(StoreError::Closed))
    }

    /// Forgets proofs whose lifetime ended before `now` and logins in progress that expired
    /// before `pending_before` (seconds); answers how many rows went.
    pub async fn purge_expired(&self, now: i64, pending_before: i64) -> Result<u64, StoreError> {
        let now_ms = now.saturating_mul(1000);
        let pool = self.pool().clone();
        let task = self.spawn(async move {
            let client = pool.get().await.map_err(StoreError::unreachable)?;
            let proofs = client
                .execute(
                    "DELETE FROM agentkeys_replay WHERE expires_at < $1",
                    &[&now],
                )
                .await
                .map_err(db)?;
            let logins = client
                .execute(
                    "DELETE FROM agentkeys_pending WHERE expires_at < $1",
                    &[&pending_before],
                )
                .await
                .map_err(db)?;
            let buckets = client
                .execute(
                    "DELETE FROM agentkeys_buckets WHERE full_at_ms < $1",
                    &[&now_ms],
                )
                .await
                .map_err(db)?;
            Ok(proofs + logins + buckets)
        });
        task.await.unwrap_or(Err(StoreError::Closed))
    }
}

/// A login in progress for [`PgEngine::put_pending`].
#[derive(Debug, Clone)]
pub struct NewPending {
    /// Its kind (`siwe`, `email`, `oauth2`, `pairing`).
    pub kind: &'static str,
    /// Its request id.
    pub id: String,
    /// Its second name.
    pub key: Vec<u8>,
    /// The DPoP key thumbprint that started it.
    pub owner: String,
    /// The client address that started it.
    pub client: String,
    /// What the flow keeps (sealed by the caller).
    pub value: Vec<u8>,
    /// When it expires (seconds).
    pub expires_at: i64,
    /// Now (seconds).
    pub now: i64,
    /// Live entries of the kind an owner, or a client, may hold.
    pub per_client: i64,
}

/// The outcome of [`PgEngine::take_pending`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Taken {
    /// Taken (deleted) by this call: its value.
    Value(Vec<u8>),
    /// Present, but started by another key (left in place).
    OtherOwner,
    /// Unknown or already taken.
    Missing,
}

/// Deletes the row of `owner` named by id or key, and says whether one of another owner exists
/// (both as of the statement's snapshot).
const TAKE: &str = "WITH d AS (DELETE FROM agentkeys_pending WHERE kind = $1 \
                    AND (id = $2 OR key = $3) AND owner = $4 RETURNING value) \
                    SELECT (SELECT value FROM d), EXISTS (SELECT 1 FROM agentkeys_pending \
                    WHERE kind = $1 AND (id = $2 OR key = $3))";

impl PgEngine {
    /// Keeps a login in progress where every node finds it (see migration 3) — unless its
    /// owner (key) or client (address) already holds `per_client` live ones of the kind
    /// (`false`; the counts and the insert are one statement).
    pub async fn put_pending(&self, entry: NewPending) -> Result<bool, StoreError> {
        let pool = self.pool().clone();
        let task = self.spawn(async move {
            let client = pool.get().await.map_err(StoreError::unreachable)?;
            let NewPending {
                kind,
                id,
                key,
                owner,
                client: by,
                value,
                expires_at,
                now,
                per_client,
            } = entry;
            client
                .execute(
                    "INSERT INTO agentkeys_pending \
                     (kind, id, key, owner, client, value, expires_at) \
                     SELECT $1, $2, $3, $4, $5, $6, $7 \
                     WHERE (SELECT count(*) FROM agentkeys_pending WHERE kind = $1 \
                     AND owner = $4 AND expires_at > $8) < $9 \
                     AND (SELECT count(*) FROM agentkeys_pending WHERE kind = $1 \
                     AND client = $5 AND expires_at > $8) < $9",
                    &[
                        &kind,
                        &id,
                        &key,
                        &owner,
                        &by,
                        &value,
                        &expires_at,
                        &now,
                        &per_client,
                    ],
                )
                .await
                .map(|n| n == 1)
                .map_err(db)
        });
        task.await.unwrap_or(Err(StoreError::Closed))
    }

    /// The login in progress of `kind` named by `id` or by `key`: (id, key, value).
    pub async fn get_pending(
        &self,
        kind: &'static str,
        id: Option<String>,
        key: Option<Vec<u8>>,
    ) -> Result<Option<(String, Vec<u8>, Vec<u8>)>, StoreError> {
        let pool = self.pool().clone();
        let task = self.spawn(async move {
            let client = pool.get().await.map_err(StoreError::unreachable)?;
            let row = client
                .query_opt(
                    "SELECT id, key, value FROM agentkeys_pending \
                     WHERE kind = $1 AND (id = $2 OR key = $3)",
                    &[&kind, &id, &key],
                )
                .await
                .map_err(db)?;
            Ok(row.map(|r| (r.get(0), r.get(1), r.get(2))))
        });
        task.await.unwrap_or(Err(StoreError::Closed))
    }

    /// Replaces the value of the login in progress `id` — only if it still holds `expected`,
    /// when given (a compare-and-set: of two nodes changing it from the same state, one wins).
    /// Answers whether it was replaced.
    pub async fn update_pending(
        &self,
        kind: &'static str,
        id: String,
        expected: Option<Vec<u8>>,
        value: Vec<u8>,
    ) -> Result<bool, StoreError> {
        let pool = self.pool().clone();
        let task = self.spawn(async move {
            let client = pool.get().await.map_err(StoreError::unreachable)?;
            client
                .execute(
                    "UPDATE agentkeys_pending SET value = $3 WHERE kind = $1 AND id = $2 \
                     AND ($4::bytea IS NULL OR value = $4)",
                    &[&kind, &id, &value, &expected],
                )
                .await
                .map(|n| n == 1)
                .map_err(db)
        });
        task.await.unwrap_or(Err(StoreError::Closed))
    }

    /// Deletes the login in progress `id`.
    pub async fn delete_pending(&self, kind: &'static str, id: String) -> Result<(), StoreError> {
        let pool = self.pool().clone();
        let task = self.spawn(async move {
            let client = pool.get().await.map_err(StoreError::unreachable)?;
            client
                .execute(
                    "DELETE FROM agentkeys_pending WHERE kind = $1 AND id = $2",
                    &[&kind, &id],
                )
                .await
                .map(|_| ())
                .map_err(db)
        });
        task.await.unwrap_or(Err(StoreError::Closed))
    }

    /// Takes (exactly once, whichever node asks) the login in progress of `owner` named by
    /// `id` or by `key`; one of another owner is left in place.
    pub async fn take_pending(
        &self,
        kind: &'static str,
        id: Option<String>,
        key: Option<Vec<u8>>,
        owner: String,
    ) -> Result<Taken, StoreError> {
        let pool = self.pool().clone();
        let task = self.spawn(async move {
            let client = pool.get().await.map_err(StoreError::unreachable)?;
            let statement = client.prepare_cached(TAKE).await.map_err(db)?;
            let row = client
                .query_one(&statement, &[&kind, &id, &key, &owner])
                .await
                .map_err(db)?;
            Ok(
                match (row.get::<_, Option<Vec<u8>>>(0), row.get::<_, bool>(1)) {
                    (Some(value), _) => Taken::Value(value),
                    (None, true) => Taken::OtherOwner,
                    (None, false) => Taken::Missing,
                },
            )
        });
        task.await.unwrap_or(Err(StoreError::Closed))
    }
}

/// The `LISTEN` channel on which write transactions announce the masters they appended audit
/// rows for.
pub(crate) const CHANNEL: &str = "agentkeys_audit";

pub(crate) fn hex(bytes: &[u8; 32]) -> String {
    use std::fmt::Write;
    bytes.iter().fold(String::with_capacity(64), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

fn unhex(s: &str) -> Option<[u8; 32]> {
    let bytes = s.as_bytes();
    if bytes.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, pair) in bytes.chunks(2).enumerate() {
        out[i] = u8::from_str_radix(std::str::from_utf8(pair).ok()?, 16).ok()?;
    }
    Some(out)
}

/// What a node hears from the others.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Heard {
    /// A master's audit chain grew (through any node).
    Appended([u8; 32]),
    /// The listening connection was (re)established: notifications may have been missed.
    Reconnected,
}

/// Listens for the masters other nodes appended audit rows for, calling `heard` for each (and
/// with [`Heard::Reconnected`] after every (re)connection, when anything may have been missed).
/// Runs until the returned task is aborted; a broken connection is re-opened after a second.
pub fn listen(
    settings: &crate::PgSettings,
    heard: impl Fn(Heard) + Send + Sync + 'static,
) -> Result<tokio::task::JoinHandle<()>, crate::PgError> {
    let connector = settings.connector()?;
    let heard = std::sync::Arc::new(heard);
    Ok(tokio::spawn(async move {
        loop {
            match connector.listen(CHANNEL, heard.clone()).await {
                Ok(()) => {}
                Err(e) => tracing::warn!(cause = %e, "the notification connection failed"),
            }
            tokio::time::sleep(std::time::Duration::from_secs(1)).await;
        }
    }))
}

/// Forwards the notifications of one connection until it breaks.
pub(crate) async fn forward<S, T>(
    client: tokio_postgres::Client,
    mut connection: tokio_postgres::Connection<S, T>,
    channel: &str,
    heard: std::sync::Arc<dyn Fn(Heard) + Send + Sync>,
) -> Result<(), crate::PgError>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let pump = tokio::spawn(async move {
        loop {
            match std::future::poll_fn(|cx| connection.poll_message(cx)).await {
                Some(Ok(tokio_postgres::AsyncMessage::Notification(n))) => {
                    let _ = tx.send(Ok(n.payload().to_string()));
                }
                Some(Ok(_)) => {}
                Some(Err(e)) => {
                    let _ = tx.send(Err(e));
                    return;
                }
                None => return,
            }
        }
    });
    let listening = client.batch_execute(&format!("LISTEN {channel}")).await;
    if let Err(e) = listening {
        pump.abort();
        return Err(e.into());
    }
    heard(Heard::Reconnected);
    while let Some(message) = rx.recv().await {
        match message {
            Ok(payload) => {
                for master in payload.split(',').filter_map(unhex) {
                    heard(Heard::Appended(master));
                }
            }
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}
