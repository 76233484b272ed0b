//! The storage interface every table is read and written through, over either engine.
//!
//! Tables are typed (`TableDefinition<K, V>`) and offer what the domain needs: `get`, `insert`,
//! `remove`, ordered `range`s, `first`, `last`, `pop_first`, `len`. Two engines sit behind it:
//!
//! - **redb** (embedded, the default): the typed tables are redb's own, unchanged — the file
//!   format is exactly what it was before this interface existed;
//! - **a byte engine** ([`ByteTxn`], implemented by `agentkeys-pg` for PostgreSQL): every table
//!   is a set of (key, value) byte rows. Keys are written in an order-preserving encoding
//!   ([`StoreKey::encode_ordered`]), so comparing encodings byte by byte gives redb's order and a
//!   range is an index scan; the key's redb encoding is kept beside it to hand back typed keys.
//!   Values use redb's encodings on both engines.
//!
//! The semantics — every conditional write of the ledger — live in the `Mutation`s written
//! against this interface, so both engines share them by construction.

use std::borrow::Borrow;
use std::marker::PhantomData;
use std::ops::{Bound, RangeBounds};

use super::StoreError;
use super::commit_log::{self, CommitLog, Recorder};

pub use redb::Value;

/// A key type of a table: redb's key encoding plus an order-preserving one for byte engines.
///
/// `encode_ordered` must be prefix-free within a tuple and must order exactly as redb's
/// [`redb::Key::compare`] does (checked by the tests of this module for every key type used).
pub trait StoreKey: redb::Key + 'static {
    /// Appends the order-preserving encoding of `value` to `out`.
    fn encode_ordered(value: &Self::SelfType<'_>, out: &mut Vec<u8>);
}

impl<const N: usize> StoreKey for &'static [u8; N] {
    fn encode_ordered(value: &&[u8; N], out: &mut Vec<u8>) {
        out.extend_from_slice(&value[..]);
    }
}

impl StoreKey for u64 {
    fn encode_ordered(value: &u64, out: &mut Vec<u8>) {
        out.extend_from_slice(&value.to_be_bytes());
    }
}

impl StoreKey for u8 {
    fn encode_ordered(value: &u8, out: &mut Vec<u8>) {
        out.push(*value);
    }
}

/// Strings are byte-ordered (as Rust and redb compare them); a zero byte is escaped as
/// `00 ff` and the string ends with `00 00`, so no encoding is a prefix of another.
impl StoreKey for &'static str {
    fn encode_ordered(value: &&str, out: &mut Vec<u8>) {
        for &b in value.as_bytes() {
            out.push(b);
            if b == 0 {
                out.push(0xff);
            }
        }
        out.extend_from_slice(&[0, 0]);
    }
}

macro_rules! tuple_key {
    ($($t:ident $i:tt),+) => {
        impl<$($t: StoreKey),+> StoreKey for ($($t,)+) {
            fn encode_ordered(value: &Self::SelfType<'_>, out: &mut Vec<u8>) {
                $($t::encode_ordered(&value.$i, out);)+
            }
        }
    };
}

tuple_key!(A 0, B 1);
tuple_key!(A 0, B 1, C 2);
tuple_key!(A 0, B 1, C 2, D 3);
tuple_key!(A 0, B 1, C 2, D 3, E 4);

/// The order-preserving encoding of one key.
pub fn ordered_key<K: StoreKey>(key: &K::SelfType<'_>) -> Vec<u8> {
    let mut out = Vec::with_capacity(40);
    K::encode_ordered(key, &mut out);
    out
}

/// A table's name and types; `const`, like redb's.
pub struct TableDefinition<K: StoreKey, V: Value + 'static> {
    name: &'static str,
    _types: PhantomData<(K, V)>,
}

impl<K: StoreKey, V: Value + 'static> TableDefinition<K, V> {
    /// A table called `name` (unique in the store).
    pub const fn new(name: &'static str) -> Self {
        Self {
            name,
            _types: PhantomData,
        }
    }

    /// The table's name.
    pub const fn name(&self) -> &'static str {
        self.name
    }

    fn redb(&self) -> redb::TableDefinition<'static, K, V> {
        redb::TableDefinition::new(self.name)
    }
}

impl<K: StoreKey, V: Value + 'static> Clone for TableDefinition<K, V> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<K: StoreKey, V: Value + 'static> Copy for TableDefinition<K, V> {}

/// One row as a byte engine returns it: the key's redb encoding and the value.
pub type ByteRow = (Vec<u8>, Vec<u8>);

/// The rows of a byte-engine range, in key order (or reversed).
pub type ByteRange<'a> = Box<dyn Iterator<Item = Result<ByteRow, StoreError>> + 'a>;

/// One transaction of a byte engine. Keys are order-preserving encodings
/// ([`StoreKey::encode_ordered`]); `native` is the same key in redb's encoding, stored beside
/// it and handed back by ranges. Writes take `&self`: several tables are open at once.
pub trait ByteTxn: Send {
    /// The value stored under `key`.
    fn get(&self, table: &'static str, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError>;
    /// The rows with keys within the bounds, in key order (descending when `reverse`).
    fn range(
        &self,
        table: &'static str,
        from: Bound<Vec<u8>>,
        to: Bound<Vec<u8>>,
        reverse: bool,
    ) -> Result<ByteRange<'_>, StoreError>;
    /// The number of rows.
    fn len(&self, table: &'static str) -> Result<u64, StoreError>;
    /// Inserts or replaces; returns the previous value.
    fn insert(
        &self,
        table: &'static str,
        key: &[u8],
        native: &[u8],
        value: &[u8],
    ) -> Result<Option<Vec<u8>>, StoreError>;
    /// Inserts or replaces when the previous value is not needed: an engine may keep it and
    /// send it with the transaction's next statement (every later read sees it).
    fn put(
        &self,
        table: &'static str,
        key: &[u8],
        native: &[u8],
        value: &[u8],
    ) -> Result<(), StoreError> {
        self.insert(table, key, native, value).map(|_| ())
    }
    /// Removes; returns the previous value.
    fn remove(&self, table: &'static str, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError>;
    /// Makes every write of the transaction durable, or fails with none of them.
    fn commit(self: Box<Self>) -> Result<(), StoreError>;
    /// Tells the other nodes sharing the engine, once the transaction commits, that `masters`
    /// have new audit rows (a no-op where nobody else listens).
    fn announce(&self, masters: &[[u8; 32]]) -> Result<(), StoreError> {
        let _ = masters;
        Ok(())
    }
    /// Discards every write of the transaction.
    fn abort(self: Box<Self>) -> Result<(), StoreError>;
}

/// A byte engine (PostgreSQL in `agentkeys-pg`): begins transactions of its own.
pub trait ByteEngine: Send + Sync + 'static {
    /// A write transaction. Write transactions are serialized — across every node sharing the
    /// engine — so each batch's conditions see every write committed before it.
    fn begin_write(&self) -> Result<Box<dyn ByteTxn>, StoreError>;
    /// A read-only transaction on one consistent snapshot.
    fn begin_read(&self) -> Result<Box<dyn ByteTxn>, StoreError>;
}

/// The engine a store runs on.
#[derive(Clone)]
pub enum Engine {
    /// One redb file (embedded).
    Redb {
        /// The open file.
        db: std::sync::Arc<redb::Database>,
        /// redb quick-repair on every commit.
        quick_repair: bool,
        /// The commit log that makes the writer's batches durable (`None`: each batch is a
        /// durable redb commit).
        log: Option<std::sync::Arc<CommitLog>>,
    },
    /// A byte engine.
    Bytes(std::sync::Arc<dyn ByteEngine>),
}

impl Engine {
    /// Begins a write transaction; on redb with a commit log, one whose commit is made durable
    /// by the log ([`commit_log`]).
    pub fn begin_write(&self) -> Result<WriteTransaction, StoreError> {
        match self {
            Engine::Redb {
                db,
                quick_repair,
                log,
            } => {
                let mut txn = db.begin_write().map_err(StoreError::from_redb)?;
                txn.set_quick_repair(*quick_repair);
                let logged = match log {
                    Some(log) => {
                        txn.set_durability(redb::Durability::None)
                            .map_err(StoreError::from_redb)?;
                        Some(Logged {
                            log: log.clone(),
                            recorder: Recorder::default(),
                        })
                    }
                    None => None,
                };
                Ok(WriteTransaction {
                    inner: Txn::Redb(txn),
                    logged,
                })
            }
            Engine::Bytes(engine) => engine.begin_write().map(WriteTransaction::bytes),
        }
    }

    /// The commit log's (checkpoints, bytes appended) so far (zeros without one).
    pub fn log_counts(&self) -> (u64, u64) {
        match self {
            Engine::Redb { log: Some(log), .. } => log.counts(),
            _ => (0, 0),
        }
    }

    /// Whether batches were logged since the last checkpoint.
    pub fn has_logged(&self) -> bool {
        matches!(self, Engine::Redb { log: Some(log), .. } if log.has_records())
    }

    /// Makes every commit so far durable in the redb file and starts the commit log over
    /// (nothing to do without one, or when nothing was logged since the last time).
    pub fn checkpoint(&self) -> Result<(), StoreError> {
        let Engine::Redb {
            db, log: Some(log), ..
        } = self
        else {
            return Ok(());
        };
        if !log.has_records() {
            return Ok(());
        }
        let txn = WriteTransaction::redb(db.begin_write().map_err(StoreError::from_redb)?);
        let last = log.last_seq()?;
        commit_log::store_seq(&txn, last)?;
        txn.commit()?;
        log.start_over(last)
    }

    /// Begins a read transaction.
    pub fn begin_read(&self) -> Result<ReadTransaction, StoreError> {
        match self {
            Engine::Redb { db, .. } => redb::ReadableDatabase::begin_read(db.as_ref())
                .map(ReadTransaction::redb)
                .map_err(StoreError::from_redb),
            Engine::Bytes(engine) => engine.begin_read().map(ReadTransaction::bytes),
        }
    }
}

#[allow(
    clippy::large_enum_variant,
    reason = "redb's transaction is the common case; boxing it would allocate per batch"
)]
enum Txn {
    Redb(redb::WriteTransaction),
    Bytes(Box<dyn ByteTxn>),
}

/// A write transaction: the writer's batch, shared by every mutation in it.
pub struct WriteTransaction {
    inner: Txn,
    /// On redb with a commit log: the log and what the transaction changed.
    logged: Option<Logged>,
}

struct Logged {
    log: std::sync::Arc<CommitLog>,
    recorder: Recorder,
}

impl WriteTransaction {
    /// Wraps a redb write transaction (committed as it is set: durable by default).
    pub fn redb(txn: redb::WriteTransaction) -> Self {
        Self {
            inner: Txn::Redb(txn),
            logged: None,
        }
    }

    /// Wraps a byte engine's transaction.
    pub fn bytes(txn: Box<dyn ByteTxn>) -> Self {
        Self {
            inner: Txn::Bytes(txn),
            logged: None,
        }
    }

    /// Whether this is a transaction of a store that several nodes share (a byte engine).
    pub fn is_shared(&self) -> bool {
        matches!(self.inner, Txn::Bytes(_))
    }

    /// Opens a table for reads and writes (redb creates it when missing).
    pub fn open_table<K: StoreKey, V: Value + 'static>(
        &self,
        def: TableDefinition<K, V>,
    ) -> Result<Table<'_, K, V>, StoreError> {
        let recorder = self.logged.as_ref().map(|l| &l.recorder);
        self.open_with(def, recorder)
    }

    /// [`open_table`](Self::open_table) whose writes the commit log does not record (the
    /// log's own bookkeeping in `meta`).
    pub(crate) fn open_table_unrecorded<K: StoreKey, V: Value + 'static>(
        &self,
        def: TableDefinition<K, V>,
    ) -> Result<Table<'_, K, V>, StoreError> {
        self.open_with(def, None)
    }

    fn open_with<'t, K: StoreKey, V: Value + 'static>(
        &'t self,
        def: TableDefinition<K, V>,
        recorder: Option<&'t Recorder>,
    ) -> Result<Table<'t, K, V>, StoreError> {
        let inner = match &self.inner {
            Txn::Redb(txn) => Inner::Redb(
                txn.open_table(def.redb()).map_err(StoreError::from_redb)?,
                recorder.map(|r| (r, def.name)),
            ),
            Txn::Bytes(txn) => Inner::Bytes(txn.as_ref(), def.name),
        };
        Ok(Table { inner })
    }

    /// See [`ByteTxn::announce`] (nothing on redb: one process).
    pub fn announce(&self, masters: &[[u8; 32]]) -> Result<(), StoreError> {
        match &self.inner {
            Txn::Redb(_) => Ok(()),
            Txn::Bytes(txn) => txn.announce(masters),
        }
    }

    /// Commits durably: redb with an fsync, or with the record of its changes synced in the
    /// commit log first ([`commit_log`]); a byte engine as its commit promises.
    pub fn commit(self) -> Result<(), StoreError> {
        let Some(Logged { log, recorder }) = &self.logged else {
            return match self.inner {
                Txn::Redb(txn) => txn.commit().map_err(StoreError::from_redb),
                Txn::Bytes(txn) => txn.commit(),
            };
        };
        let (log, changes) = (log.clone(), recorder.take());
        if changes.is_empty() {
            // Nothing to make durable (the tables themselves exist from the open).
            return self.commit_redb(None);
        }
        match log.next_seq(changes.len())? {
            Some(seq) => {
                commit_log::store_seq(&self, seq)?;
                log.append(seq, &changes)?;
                self.commit_redb(None).inspect_err(|_| log.fail())
            }
            None => {
                // The log is full: this batch is the checkpoint.
                let last = log.last_seq()?;
                commit_log::store_seq(&self, last)?;
                self.commit_redb(Some(redb::Durability::Immediate))?;
                log.start_over(last)
            }
        }
    }

    fn commit_redb(self, durability: Option<redb::Durability>) -> Result<(), StoreError> {
        let Txn::Redb(mut txn) = self.inner else {
            unreachable!("only redb transactions are logged")
        };
        if let Some(durability) = durability {
            txn.set_durability(durability)
                .map_err(StoreError::from_redb)?;
        }
        txn.commit().map_err(StoreError::from_redb)
    }

    /// Discards every write.
    pub fn abort(self) -> Result<(), StoreError> {
        match self.inner {
            Txn::Redb(txn) => txn.abort().map_err(StoreError::from_redb),
            Txn::Bytes(txn) => txn.abort(),
        }
    }
}

enum ReadTxn {
    Redb(redb::ReadTransaction),
    Bytes(Box<dyn ByteTxn>),
}

/// A read transaction: one consistent snapshot.
pub struct ReadTransaction {
    inner: ReadTxn,
}

impl ReadTransaction {
    /// Wraps a redb read transaction.
    pub fn redb(txn: redb::ReadTransaction) -> Self {
        Self {
            inner: ReadTxn::Redb(txn),
        }
    }

    /// Wraps a byte engine's (read-only) transaction.
    pub fn bytes(txn: Box<dyn ByteTxn>) -> Self {
        Self {
            inner: ReadTxn::Bytes(txn),
        }
    }

    /// Whether this is a transaction of a store that several nodes share (a byte engine).
    pub fn is_shared(&self) -> bool {
        matches!(self.inner, ReadTxn::Bytes(_))
    }

    /// Opens a table for reads.
    pub fn open_table<K: StoreKey, V: Value + 'static>(
        &self,
        def: TableDefinition<K, V>,
    ) -> Result<ReadOnlyTable<'_, K, V>, StoreError> {
        let inner = match &self.inner {
            ReadTxn::Redb(txn) => {
                Inner::RedbRead(txn.open_table(def.redb()).map_err(StoreError::from_redb)?)
            }
            ReadTxn::Bytes(txn) => Inner::Bytes(txn.as_ref(), def.name),
        };
        Ok(ReadOnlyTable(Table { inner }))
    }
}

enum Inner<'t, K: StoreKey, V: Value + 'static> {
    /// With the commit log's recorder and the table's name.
    Redb(redb::Table<'t, K, V>, Option<(&'t Recorder, &'static str)>),
    RedbRead(redb::ReadOnlyTable<K, V>),
    Bytes(&'t dyn ByteTxn, &'static str),
}

/// A table open in a write transaction.
pub struct Table<'t, K: StoreKey, V: Value + 'static> {
    inner: Inner<'t, K, V>,
}

/// A table open in a read transaction.
pub struct ReadOnlyTable<'t, K: StoreKey, V: Value + 'static>(Table<'t, K, V>);

/// A value (or key) read from a table.
pub enum AccessGuard<'a, V: Value + 'static> {
    /// Borrowed from redb's page.
    Redb(redb::AccessGuard<'a, V>),
    /// Copied out of a byte engine.
    Owned(Vec<u8>, PhantomData<&'a V>),
}

impl<V: Value + 'static> AccessGuard<'_, V> {
    /// The decoded value.
    pub fn value(&self) -> V::SelfType<'_> {
        match self {
            AccessGuard::Redb(guard) => guard.value(),
            AccessGuard::Owned(bytes, _) => V::from_bytes(bytes),
        }
    }

    fn owned(bytes: Vec<u8>) -> Self {
        AccessGuard::Owned(bytes, PhantomData)
    }
}

/// A pair of guards: one row.
pub type Row<'a, K, V> = (AccessGuard<'a, K>, AccessGuard<'a, V>);

/// The rows of a range, in key order.
pub struct Range<'a, K: StoreKey, V: Value + 'static> {
    inner: RangeInner<'a, K, V>,
}

#[allow(
    clippy::large_enum_variant,
    reason = "redb's range is the common case; boxing it would allocate per range"
)]
enum RangeInner<'a, K: StoreKey, V: Value + 'static> {
    Redb(redb::Range<'a, K, V>),
    Bytes(ByteRange<'a>),
}

impl<'a, K: StoreKey, V: Value + 'static> Iterator for Range<'a, K, V> {
    type Item = Result<Row<'a, K, V>, StoreError>;

    fn next(&mut self) -> Option<Self::Item> {
        match &mut self.inner {
            RangeInner::Redb(range) => range.next().map(|row| {
                row.map(|(k, v)| (AccessGuard::Redb(k), AccessGuard::Redb(v)))
                    .map_err(StoreError::from_redb)
            }),
            RangeInner::Bytes(rows) => rows
                .next()
                .map(|row| row.map(|(k, v)| (AccessGuard::owned(k), AccessGuard::owned(v)))),
        }
    }
}

fn redb_get<'g, K: StoreKey, V: Value + 'static>(
    table: &'g impl redb::ReadableTable<K, V>,
    key: &K::SelfType<'_>,
) -> Result<Option<AccessGuard<'g, V>>, StoreError> {
    table
        .get(key)
        .map(|found| found.map(AccessGuard::Redb))
        .map_err(StoreError::from_redb)
}

fn redb_edge<'g, K: StoreKey, V: Value + 'static>(
    table: &'g impl redb::ReadableTable<K, V>,
    last: bool,
) -> Result<Option<Row<'g, K, V>>, StoreError> {
    let row = if last { table.last() } else { table.first() };
    row.map(|row| row.map(|(k, v)| (AccessGuard::Redb(k), AccessGuard::Redb(v))))
        .map_err(StoreError::from_redb)
}

fn redb_range<'g, 'a, K: StoreKey, V: Value + 'static, KR>(
    table: &'g impl redb::ReadableTable<K, V>,
    range: impl RangeBounds<KR> + 'a,
) -> Result<Range<'g, K, V>, StoreError>
where
    KR: Borrow<K::SelfType<'a>> + 'a,
{
    table
        .range(range)
        .map(|inner| Range {
            inner: RangeInner::Redb(inner),
        })
        .map_err(StoreError::from_redb)
}

fn redb_len(table: &impl redb::ReadableTableMetadata) -> Result<u64, StoreError> {
    table.len().map_err(StoreError::from_redb)
}

fn bytes_edge<'g, K: StoreKey, V: Value + 'static>(
    txn: &'g dyn ByteTxn,
    table: &'static str,
    last: bool,
) -> Result<Option<Row<'g, K, V>>, StoreError> {
    let mut rows = txn.range(table, Bound::Unbounded, Bound::Unbounded, last)?;
    rows.next()
        .transpose()
        .map(|row| row.map(|(k, v)| (AccessGuard::owned(k), AccessGuard::owned(v))))
}

/// The reads of a table, open in either kind of transaction.
pub trait ReadableTable<K: StoreKey, V: Value + 'static> {
    /// The value under `key`.
    fn get<'a>(
        &self,
        key: impl Borrow<K::SelfType<'a>>,
    ) -> Result<Option<AccessGuard<'_, V>>, StoreError>;

    /// The rows with keys in `range`, in key order.
    fn range<'a, KR>(
        &self,
        range: impl RangeBounds<KR> + 'a,
    ) -> Result<Range<'_, K, V>, StoreError>
    where
        KR: Borrow<K::SelfType<'a>> + 'a;

    /// Every row, in key order.
    fn iter(&self) -> Result<Range<'_, K, V>, StoreError>;

    /// The row with the smallest key.
    fn first(&self) -> Result<Option<Row<'_, K, V>>, StoreError>;

    /// The row with the largest key.
    fn last(&self) -> Result<Option<Row<'_, K, V>>, StoreError>;

    /// The number of rows.
    fn len(&self) -> Result<u64, StoreError>;

    /// Whether the table has no rows.
    fn is_empty(&self) -> Result<bool, StoreError> {
        Ok(self.len()? == 0)
    }
}

impl<K: StoreKey, V: Value + 'static> ReadableTable<K, V> for Table<'_, K, V> {
    fn get<'a>(
        &self,
        key: impl Borrow<K::SelfType<'a>>,
    ) -> Result<Option<AccessGuard<'_, V>>, StoreError> {
        match &self.inner {
            Inner::Redb(t, _) => redb_get(t, key.borrow()),
            Inner::RedbRead(t) => redb_get(t, key.borrow()),
            Inner::Bytes(txn, name) => Ok(txn
                .get(name, &ordered_key::<K>(key.borrow()))?
                .map(AccessGuard::owned)),
        }
    }

    fn range<'a, KR>(&self, range: impl RangeBounds<KR> + 'a) -> Result<Range<'_, K, V>, StoreError>
    where
        KR: Borrow<K::SelfType<'a>> + 'a,
    {
        match &self.inner {
            Inner::Redb(t, _) => redb_range(t, range),
            Inner::RedbRead(t) => redb_range(t, range),
            Inner::Bytes(txn, name) => {
                // The bounds only live for this call; their encodings are owned.
                let from = ordered_bound_any::<K, KR>(range.start_bound());
                let to = ordered_bound_any::<K, KR>(range.end_bound());
                Ok(Range {
                    inner: RangeInner::Bytes(txn.range(name, from, to, false)?),
                })
            }
        }
    }

    fn iter(&self) -> Result<Range<'_, K, V>, StoreError> {
        match &self.inner {
            Inner::Redb(t, _) => redb::ReadableTable::iter(t)
                .map(|inner| Range {
                    inner: RangeInner::Redb(inner),
                })
                .map_err(StoreError::from_redb),
            Inner::RedbRead(t) => redb::ReadableTable::iter(t)
                .map(|inner| Range {
                    inner: RangeInner::Redb(inner),
                })
                .map_err(StoreError::from_redb),
            Inner::Bytes(txn, name) => Ok(Range {
                inner: RangeInner::Bytes(txn.range(
                    name,
                    Bound::Unbounded,
                    Bound::Unbounded,
                    false,
                )?),
            }),
        }
    }

    fn first(&self) -> Result<Option<Row<'_, K, V>>, StoreError> {
        self.edge(false)
    }

    fn last(&self) -> Result<Option<Row<'_, K, V>>, StoreError> {
        self.edge(true)
    }

    fn len(&self) -> Result<u64, StoreError> {
        match &self.inner {
            Inner::Redb(t, _) => redb_len(t),
            Inner::RedbRead(t) => redb_len(t),
            Inner::Bytes(txn, name) => txn.len(name),
        }
    }

    fn is_empty(&self) -> Result<bool, StoreError> {
        match &self.inner {
            // A byte engine counts rows to answer `len`; one row answers this.
            Inner::Bytes(..) => Ok(self.first()?.is_none()),
            _ => Ok(self.len()? == 0),
        }
    }
}

fn ordered_bound_any<'a, K: StoreKey, KR: Borrow<K::SelfType<'a>> + 'a>(
    bound: Bound<&KR>,
) -> Bound<Vec<u8>> {
    match bound {
        Bound::Included(k) => Bound::Included(ordered_key::<K>(k.borrow())),
        Bound::Excluded(k) => Bound::Excluded(ordered_key::<K>(k.borrow())),
        Bound::Unbounded => Bound::Unbounded,
    }
}

impl<'t, K: StoreKey, V: Value + 'static> Table<'t, K, V> {
    fn edge(&self, last: bool) -> Result<Option<Row<'_, K, V>>, StoreError> {
        match &self.inner {
            Inner::Redb(t, _) => redb_edge(t, last),
            Inner::RedbRead(t) => redb_edge(t, last),
            Inner::Bytes(txn, name) => bytes_edge(*txn, name, last),
        }
    }

    /// Inserts or replaces the value under `key`; returns the previous one.
    /// [`insert`](Self::insert) without the previous value, which lets a byte engine send the
    /// write together with the transaction's next statement.
    pub fn put<'k, 'v>(
        &mut self,
        key: impl Borrow<K::SelfType<'k>>,
        value: impl Borrow<V::SelfType<'v>>,
    ) -> Result<(), StoreError> {
        match &mut self.inner {
            Inner::Bytes(txn, name) => {
                let key = key.borrow();
                let native = K::as_bytes(key);
                let value = V::as_bytes(value.borrow());
                txn.put(
                    name,
                    &ordered_key::<K>(key),
                    native.as_ref(),
                    value.as_ref(),
                )
            }
            _ => self.insert(key, value).map(|_| ()),
        }
    }

    /// Inserts or replaces; answers the previous value.
    pub fn insert<'k, 'v>(
        &mut self,
        key: impl Borrow<K::SelfType<'k>>,
        value: impl Borrow<V::SelfType<'v>>,
    ) -> Result<Option<AccessGuard<'_, V>>, StoreError> {
        match &mut self.inner {
            Inner::Redb(t, recorder) => {
                let (key, value) = (key.borrow(), value.borrow());
                if let Some((recorder, name)) = recorder {
                    recorder.put(name, K::as_bytes(key).as_ref(), V::as_bytes(value).as_ref());
                }
                t.insert(key, value)
                    .map(|old| old.map(AccessGuard::Redb))
                    .map_err(StoreError::from_redb)
            }
            Inner::RedbRead(_) => Err(read_only()),
            Inner::Bytes(txn, name) => {
                let key = key.borrow();
                let native = K::as_bytes(key);
                let value = V::as_bytes(value.borrow());
                Ok(txn
                    .insert(
                        name,
                        &ordered_key::<K>(key),
                        native.as_ref(),
                        value.as_ref(),
                    )?
                    .map(AccessGuard::owned))
            }
        }
    }

    /// Removes the row under `key`; returns its value.
    pub fn remove<'a>(
        &mut self,
        key: impl Borrow<K::SelfType<'a>>,
    ) -> Result<Option<AccessGuard<'_, V>>, StoreError> {
        match &mut self.inner {
            Inner::Redb(t, recorder) => {
                let key = key.borrow();
                if let Some((recorder, name)) = recorder {
                    recorder.remove(name, K::as_bytes(key).as_ref());
                }
                t.remove(key)
                    .map(|old| old.map(AccessGuard::Redb))
                    .map_err(StoreError::from_redb)
            }
            Inner::RedbRead(_) => Err(read_only()),
            Inner::Bytes(txn, name) => Ok(txn
                .remove(name, &ordered_key::<K>(key.borrow()))?
                .map(AccessGuard::owned)),
        }
    }

    /// Removes and returns the row with the smallest key.
    pub fn pop_first(&mut self) -> Result<Option<Row<'_, K, V>>, StoreError> {
        match &mut self.inner {
            Inner::Redb(t, recorder) => {
                let row = t.pop_first().map_err(StoreError::from_redb)?;
                if let (Some((recorder, name)), Some((key, _))) = (recorder, &row) {
                    recorder.remove(name, K::as_bytes(&key.value()).as_ref());
                }
                Ok(row.map(|(k, v)| (AccessGuard::Redb(k), AccessGuard::Redb(v))))
            }
            Inner::RedbRead(_) => Err(read_only()),
            Inner::Bytes(txn, name) => {
                let Some((native, value)) = txn
                    .range(name, Bound::Unbounded, Bound::Unbounded, false)?
                    .next()
                    .transpose()?
                else {
                    return Ok(None);
                };
                let key = ordered_key::<K>(&K::from_bytes(&native));
                txn.remove(name, &key)?;
                Ok(Some((
                    AccessGuard::owned(native),
                    AccessGuard::owned(value),
                )))
            }
        }
    }
}

fn read_only() -> StoreError {
    StoreError::Corrupt("a write to a table opened for reading".into())
}

impl<K: StoreKey, V: Value + 'static> ReadableTable<K, V> for ReadOnlyTable<'_, K, V> {
    fn get<'a>(
        &self,
        key: impl Borrow<K::SelfType<'a>>,
    ) -> Result<Option<AccessGuard<'_, V>>, StoreError> {
        self.0.get(key)
    }

    fn range<'a, KR>(&self, range: impl RangeBounds<KR> + 'a) -> Result<Range<'_, K, V>, StoreError>
    where
        KR: Borrow<K::SelfType<'a>> + 'a,
    {
        self.0.range(range)
    }

    fn iter(&self) -> Result<Range<'_, K, V>, StoreError> {
        self.0.iter()
    }

    fn first(&self) -> Result<Option<Row<'_, K, V>>, StoreError> {
        self.0.first()
    }

    fn last(&self) -> Result<Option<Row<'_, K, V>>, StoreError> {
        self.0.last()
    }

    fn len(&self) -> Result<u64, StoreError> {
        self.0.len()
    }

    fn is_empty(&self) -> Result<bool, StoreError> {
        self.0.is_empty()
    }
}

/// Visits table definitions with their types (the tables of a store, for copies and checks).
pub trait TableVisitor {
    /// Called once per table.
    fn visit<K: StoreKey, V: Value + 'static>(
        &mut self,
        def: TableDefinition<K, V>,
    ) -> Result<(), StoreError>;
}

/// Copies every row of `def` from `from` into `to`; answers the number of rows.
pub fn copy_rows<K: StoreKey, V: Value + 'static>(
    from: &ReadTransaction,
    to: &WriteTransaction,
    def: TableDefinition<K, V>,
) -> Result<u64, StoreError> {
    let source = from.open_table(def)?;
    let mut target = to.open_table(def)?;
    let mut rows = 0;
    for row in source.iter()? {
        let (key, value) = row?;
        target.insert(key.value(), value.value())?;
        rows += 1;
    }
    Ok(rows)
}

/// Compares `def` in two snapshots row by row (keys and values in redb's encodings, in key
/// order): `None` when equal, else the first difference.
pub fn first_difference<K: StoreKey, V: Value + 'static>(
    a: &ReadTransaction,
    b: &ReadTransaction,
    def: TableDefinition<K, V>,
) -> Result<Option<String>, StoreError> {
    let (left, right) = (a.open_table(def)?, b.open_table(def)?);
    let encoded = |row: Option<Result<Row<'_, K, V>, StoreError>>| {
        row.transpose().map(|row| {
            row.map(|(k, v)| {
                (
                    K::as_bytes(&k.value()).as_ref().to_vec(),
                    V::as_bytes(&v.value()).as_ref().to_vec(),
                )
            })
        })
    };
    let (mut left_rows, mut right_rows) = (left.iter()?, right.iter()?);
    for at in 0u64.. {
        match (encoded(left_rows.next())?, encoded(right_rows.next())?) {
            (None, None) => return Ok(None),
            (l, r) if l == r => continue,
            (l, r) => {
                let show = |row: Option<(Vec<u8>, Vec<u8>)>| {
                    row.map_or("nothing".to_string(), |(k, _)| {
                        format!("key {}", hex::encode(k))
                    })
                };
                return Ok(Some(format!(
                    "table {}: row {at} differs ({} vs {})",
                    def.name(),
                    show(l),
                    show(r)
                )));
            }
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use std::cmp::Ordering;

    use proptest::prelude::*;

    use super::*;

    /// The encoding orders as redb compares, for one key type.
    fn same_order<K: StoreKey>(a: &K::SelfType<'_>, b: &K::SelfType<'_>) -> Result<(), String> {
        let (na, nb) = (K::as_bytes(a), K::as_bytes(b));
        let redb_order = K::compare(na.as_ref(), nb.as_ref());
        let ours = ordered_key::<K>(a).cmp(&ordered_key::<K>(b));
        if redb_order == ours {
            Ok(())
        } else {
            Err(format!(
                "{a:?} vs {b:?}: redb {redb_order:?}, encoding {ours:?}"
            ))
        }
    }

    // Few distinct symbols, so equal prefixes, zero bytes and multi-byte characters are common.
    fn text() -> impl Strategy<Value = String> {
        proptest::collection::vec(prop_oneof!["", "a", "b", "\0", "\u{ff}", "é", "/"], 0..5)
            .prop_map(|parts| parts.concat())
    }

    fn bytes32() -> impl Strategy<Value = [u8; 32]> {
        proptest::collection::vec(prop_oneof![Just(0u8), Just(1), Just(255)], 2).prop_map(|v| {
            let mut out = [0u8; 32];
            out[0] = v[0];
            out[31] = v[1];
            out
        })
    }

    fn number() -> impl Strategy<Value = u64> {
        prop_oneof![
            Just(0u64),
            Just(1),
            Just(255),
            Just(256),
            Just(u64::MAX),
            any::<u64>()
        ]
    }

    proptest! {
        #[test]
        fn strings_order_as_redb_compares(a in text(), b in text()) {
            same_order::<&str>(&a.as_str(), &b.as_str()).map_err(TestCaseError::fail)?;
        }

        #[test]
        fn numbers_and_arrays_order_as_redb_compares(a in number(), b in number(), x in bytes32(), y in bytes32()) {
            same_order::<u64>(&a, &b).map_err(TestCaseError::fail)?;
            same_order::<&[u8; 32]>(&&x, &&y).map_err(TestCaseError::fail)?;
        }

        #[test]
        fn tuples_order_as_redb_compares(
            (a, b) in (text(), text()),
            (c, d) in (text(), text()),
            (x, y) in (bytes32(), bytes32()),
            (m, n) in (number(), number()),
        ) {
            same_order::<(&str, &str)>(&(a.as_str(), b.as_str()), &(c.as_str(), d.as_str()))
                .map_err(TestCaseError::fail)?;
            same_order::<(&[u8; 32], &str)>(&(&x, a.as_str()), &(&y, c.as_str()))
                .map_err(TestCaseError::fail)?;
            same_order::<(&str, &[u8; 32])>(&(a.as_str(), &x), &(c.as_str(), &y))
                .map_err(TestCaseError::fail)?;
            same_order::<(&[u8; 32], &str, &str)>(&(&x, a.as_str(), b.as_str()), &(&y, c.as_str(), d.as_str()))
                .map_err(TestCaseError::fail)?;
            same_order::<(&[u8; 32], &str, u64)>(&(&x, a.as_str(), m), &(&y, c.as_str(), n))
                .map_err(TestCaseError::fail)?;
            same_order::<(u64, &[u8; 32], &[u8; 32])>(&(m, &x, &y), &(n, &y, &x))
                .map_err(TestCaseError::fail)?;
            same_order::<(&[u8; 32], u64, u8, u64)>(&(&x, m, 1, n), &(&y, n, 1, m))
                .map_err(TestCaseError::fail)?;
        }
    }

    #[test]
    fn no_string_encoding_is_a_prefix_of_another() {
        let a = ordered_key::<&str>(&"a");
        let b = ordered_key::<&str>(&"a\0");
        assert!(!b.starts_with(&a) && !a.starts_with(&b));
        assert_eq!(
            ordered_key::<(&str, &str)>(&("a", "b"))
                .cmp(&ordered_key::<(&str, &str)>(&("a\0", ""))),
            Ordering::Less
        );
    }
}
