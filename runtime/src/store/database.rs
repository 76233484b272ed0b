//! The redb store: the runtime's tables, meta, and the entry points of higher layers.

use std::ops::Bound;
use std::path::Path;
use std::sync::{Arc, RwLock};

use redb::Database;

use super::commit_log::TableSet;
use super::tables::{
    ByteEngine, Engine, ReadTransaction, ReadableTable, Table, TableDefinition, WriteTransaction,
};

use super::writer::{Announced, BatchHook, Lane, Mutation, PendingWrite, Writer, WriterCounts};
use super::{
    ActorRecord, ChildEntry, CreateActor, CreateError, Created, Lineage, MAX_DEPTH, MetaError,
    Revocation, RevokeActor, RevokeError, SCHEMA_VERSION, StoreError,
};
use crate::clock::Timestamp;
use crate::omni::Omni;

/// The actor records (higher layers read lineages inside their own mutations).
pub const ACTORS: TableDefinition<&[u8; 32], &[u8]> = TableDefinition::new("actors");
pub(crate) const CHILDREN: TableDefinition<(&[u8; 32], &str), &[u8; 32]> =
    TableDefinition::new("children");
pub(crate) const MASTERS: TableDefinition<&[u8; 32], u64> = TableDefinition::new("masters");
pub(crate) const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");

const META_SCHEMA: &str = "schema_version";
const META_CLIENT_ID: &str = "client_id";
const META_CREATED_AT: &str = "created_at";
const META_KEY_FINGERPRINT: &str = "k3_fingerprint";

/// How to open the store.
#[derive(Debug, Clone)]
pub struct StoreOptions {
    /// The deployment's `client_id`; recorded at creation and checked on every open.
    pub client_id: String,
    /// redb quick-repair: faster recovery after a crash, slower commits (see docs).
    pub quick_repair: bool,
    /// The fingerprint of the master secret the store's derived data belongs to: recorded when
    /// first given, refused when it differs later (`None`: not checked).
    pub key_fingerprint: Option<Vec<u8>>,
    /// redb's page cache, bytes. redb's own default (1 GiB) lets the process grow with every
    /// page written — every audit row — until it reaches that size.
    pub cache_bytes: usize,
    /// The longest a batch waits for writes on their way (adaptive group commit; see
    /// docs/runtime-semantics.md). Default 500 µs.
    pub linger: std::time::Duration,
    /// Visit a higher layer's tables when the store opens: they are created here, so read
    /// transactions always find them, and the commit log's changes to them are applied.
    pub prepare: Vec<TablePreparer>,
    /// On redb, make each batch durable with one record in a commit log beside the file
    /// (`<file>.log`) instead of a durable redb commit (docs/runtime-semantics.md, "The commit
    /// log"). Default on. A log left by an earlier run is recovered either way.
    pub commit_log: bool,
    /// How long the writer stays idle, with batches in the commit log, before it checkpoints
    /// them into the redb file. Default 1 s.
    pub checkpoint_idle: std::time::Duration,
}

/// Visits a higher layer's tables (see [`StoreOptions::prepare`]).
pub type TablePreparer = fn(&mut TableSet<'_>) -> Result<(), StoreError>;

/// The default page cache: the hot records (actors, bindings, indexes) of a large deployment
/// fit; audit rows are written once and rarely read back.
const DEFAULT_CACHE_BYTES: usize = 64 << 20;

impl Default for StoreOptions {
    fn default() -> Self {
        Self {
            client_id: "agentkeys".into(),
            quick_repair: false,
            key_fingerprint: None,
            cache_bytes: DEFAULT_CACHE_BYTES,
            linger: std::time::Duration::from_micros(500),
            prepare: Vec::new(),
            commit_log: true,
            checkpoint_idle: std::time::Duration::from_secs(1),
        }
    }
}

/// The store: one engine (a redb file, or PostgreSQL through a byte engine) and its group-commit
/// writer thread.
pub struct Store {
    /// `None` once closed; readers clone it so the file closes when the last one ends.
    engine: RwLock<Option<Engine>>,
    writer: Writer,
    shared: bool,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").finish_non_exhaustive()
    }
}

impl Store {
    /// Opens (or creates) the store at `path`, checks schema and `client_id`, starts the writer.
    pub fn open(path: &Path, options: &StoreOptions, now: Timestamp) -> Result<Self, StoreError> {
        let db = Database::builder()
            .set_cache_size(options.cache_bytes)
            .create(path)
            .map_err(StoreError::from_redb)?;
        let log_path = log_path(path);
        let log = if options.commit_log || log_path.exists() {
            let log = super::commit_log::recover(&db, &log_path, &options.prepare)?;
            options.commit_log.then(|| Arc::new(log))
        } else {
            None
        };
        let engine = Engine::Redb {
            db: Arc::new(db),
            quick_repair: options.quick_repair,
            log,
        };
        Self::open_engine(engine, options, now)
    }

    /// Applies what a commit log left beside the redb file at `path` holds and the file lacks
    /// (the recovery of every open; a file a running server holds is refused by redb's lock).
    /// Tools that read the file directly run this first.
    pub fn recover_file(path: &Path, prepare: &[TablePreparer]) -> Result<(), StoreError> {
        let log_path = log_path(path);
        if !log_path.exists() {
            return Ok(());
        }
        let db = Database::open(path).map_err(StoreError::from_redb)?;
        super::commit_log::recover(&db, &log_path, prepare).map(drop)
    }

    /// Visits the runtime's own tables (`actors`, `children`, `masters`, `meta`).
    pub fn visit_tables(visitor: &mut impl super::TableVisitor) -> Result<(), StoreError> {
        visitor.visit(ACTORS)?;
        visitor.visit(CHILDREN)?;
        visitor.visit(MASTERS)?;
        visitor.visit(META)
    }

    /// Opens the store on a byte engine (PostgreSQL): the same checks, tables and writer.
    pub fn open_bytes(
        engine: Arc<dyn ByteEngine>,
        options: &StoreOptions,
        now: Timestamp,
    ) -> Result<Self, StoreError> {
        Self::open_engine(Engine::Bytes(engine), options, now)
    }

    fn open_engine(
        engine: Engine,
        options: &StoreOptions,
        now: Timestamp,
    ) -> Result<Self, StoreError> {
        let txn = engine.begin_write()?;
        init_or_check_meta(&txn, options, now)?;
        {
            let mut tables = TableSet::new(&txn);
            Self::visit_tables(&mut tables)?;
            for prepare in &options.prepare {
                prepare(&mut tables)?;
            }
        }
        txn.commit()?;
        let writer = Writer::start(engine.clone(), options.linger, options.checkpoint_idle)?;
        Ok(Self {
            shared: matches!(engine, Engine::Bytes(_)),
            engine: RwLock::new(Some(engine)),
            writer,
        })
    }

    fn engine(&self) -> Result<Engine, StoreError> {
        self.engine
            .read()
            .ok()
            .and_then(|engine| engine.clone())
            .ok_or(StoreError::Closed)
    }

    /// A read transaction (one snapshot) for a higher layer's reads.
    pub fn read(&self) -> Result<ReadTransaction, StoreError> {
        self.engine()?.begin_read()
    }

    fn read_txn(&self) -> Result<ReadTransaction, StoreError> {
        self.read()
    }

    /// Installs the hook run around every batch (once; `false` if one was installed already).
    pub fn set_batch_hook(&self, hook: std::sync::Arc<dyn BatchHook>) -> bool {
        self.writer.set_hook(hook)
    }

    /// Submits any [`Mutation`]: the hook for tables owned by higher layers.
    pub fn submit<M: Mutation>(&self, op: M) -> PendingWrite<M::Output, M::Rejection> {
        self.writer.submit(op, Lane::Ordinary)
    }

    /// Announces a write the caller will submit soon with
    /// [`submit_announced`](Self::submit_announced): until then, batches linger for it
    /// (bounded), so concurrent requests share a commit.
    pub fn announce(&self) -> Announced {
        self.writer.announce()
    }

    /// Announced writes not yet submitted (nor withdrawn).
    pub fn announced_writes(&self) -> usize {
        self.writer.announced()
    }

    /// [`submit`](Self::submit) of a write announced with [`announce`](Self::announce); the
    /// announcement ends just before the write reaches the writer.
    pub fn submit_announced<M: Mutation>(
        &self,
        op: M,
        announced: Option<&Announced>,
    ) -> PendingWrite<M::Output, M::Rejection> {
        if let Some(announced) = announced {
            announced.end();
        }
        self.writer.submit(op, Lane::Ordinary)
    }

    /// Submits a [`Mutation`] in the urgent lane ([`Lane::Urgent`]): ahead of queued writes, in
    /// a batch of its own.
    pub fn submit_urgent<M: Mutation>(&self, op: M) -> PendingWrite<M::Output, M::Rejection> {
        self.writer.submit(op, Lane::Urgent)
    }
}

/// The commit log beside the redb file at `path`: `<path>.log`.
pub fn log_path(path: &Path) -> std::path::PathBuf {
    let mut log = path.as_os_str().to_owned();
    log.push(".log");
    log.into()
}

fn init_or_check_meta(
    txn: &WriteTransaction,
    options: &StoreOptions,
    now: Timestamp,
) -> Result<(), StoreError> {
    let mut meta = txn.open_table(META)?;
    let schema = meta.get(META_SCHEMA)?.map(|v| v.value().to_vec());
    let Some(schema) = schema else {
        meta.insert(META_SCHEMA, SCHEMA_VERSION.to_be_bytes().as_slice())?;
        meta.insert(META_CLIENT_ID, options.client_id.as_bytes())?;
        meta.insert(META_CREATED_AT, now.as_millis().to_be_bytes().as_slice())?;
        return check_key_fingerprint(&mut meta, options);
    };
    let found = <[u8; 4]>::try_from(schema.as_slice())
        .map(u32::from_be_bytes)
        .map_err(|_| StoreError::Corrupt("meta schema_version".into()))?;
    if found != SCHEMA_VERSION {
        return Err(StoreError::Schema {
            found,
            expected: SCHEMA_VERSION,
        });
    }
    let stored = meta
        .get(META_CLIENT_ID)?
        .map(|v| String::from_utf8_lossy(v.value()).into_owned())
        .ok_or_else(|| StoreError::Corrupt("meta client_id missing".into()))?;
    if stored != options.client_id {
        return Err(StoreError::ClientIdMismatch {
            stored,
            configured: options.client_id.clone(),
        });
    }
    check_key_fingerprint(&mut meta, options)
}

fn check_key_fingerprint(
    meta: &mut Table<'_, &'static str, &'static [u8]>,
    options: &StoreOptions,
) -> Result<(), StoreError> {
    let Some(given) = &options.key_fingerprint else {
        return Ok(());
    };
    let stored = meta.get(META_KEY_FINGERPRINT)?.map(|v| v.value().to_vec());
    match stored {
        Some(stored) if &stored != given => Err(StoreError::KeyMismatch {
            stored: hex::encode(stored),
            configured: hex::encode(given),
        }),
        Some(_) => Ok(()),
        None => meta
            .insert(META_KEY_FINGERPRINT, given.as_slice())
            .map(|_| ()),
    }
}

/// Writes one settable meta value (names owned by the store itself are refused).
struct SetMeta {
    name: String,
    value: Vec<u8>,
}

impl Mutation for SetMeta {
    type Plan = SetMeta;
    type Output = ();
    type Rejection = MetaError;

    fn check(self, _view: &WriteTransaction) -> Result<Result<SetMeta, MetaError>, StoreError> {
        let reserved = [
            META_SCHEMA,
            META_CLIENT_ID,
            META_CREATED_AT,
            META_KEY_FINGERPRINT,
        ];
        if reserved.contains(&self.name.as_str()) {
            return Ok(Err(MetaError::Reserved(self.name)));
        }
        Ok(Ok(self))
    }

    fn apply(plan: SetMeta, txn: &WriteTransaction) -> Result<(), StoreError> {
        let mut meta = txn.open_table(META)?;
        meta.insert(plan.name.as_str(), plan.value.as_slice())
            .map(|_| ())
    }
}

/// A no-op write: answered after the commit of its batch, so after every earlier write.
struct Flush;

impl Mutation for Flush {
    type Plan = ();
    type Output = ();
    type Rejection = std::convert::Infallible;

    fn check(
        self,
        _view: &WriteTransaction,
    ) -> Result<Result<(), std::convert::Infallible>, StoreError> {
        Ok(Ok(()))
    }

    fn apply(_plan: (), _txn: &WriteTransaction) -> Result<(), StoreError> {
        Ok(())
    }
}

/// Reads one record from any readable `actors` table (a snapshot or the batch's view).
pub fn read_record(
    actors: &impl ReadableTable<&'static [u8; 32], &'static [u8]>,
    omni: &Omni,
) -> Result<Option<ActorRecord>, StoreError> {
    let Some(value) = actors.get(omni.as_bytes())? else {
        return Ok(None);
    };
    ActorRecord::decode(*omni, value.value())
        .map(Some)
        .map_err(|e| StoreError::Corrupt(format!("actor {}: {e}", omni.short())))
}

/// Walks from `omni` up to its master (at most `MAX_DEPTH + 1` records), root first.
pub fn read_lineage(
    actors: &impl ReadableTable<&'static [u8; 32], &'static [u8]>,
    omni: &Omni,
) -> Result<Option<Lineage>, StoreError> {
    let Some(mut record) = read_record(actors, omni)? else {
        return Ok(None);
    };
    let mut chain = Vec::with_capacity(4);
    loop {
        let parent = record.parent;
        chain.push(record);
        let Some(parent) = parent else { break };
        if chain.len() > MAX_DEPTH {
            return Err(StoreError::Corrupt(format!(
                "lineage of {} deeper than {MAX_DEPTH}",
                omni.short()
            )));
        }
        record = read_record(actors, &parent)?.ok_or_else(|| {
            StoreError::Corrupt(format!("parent {} of an actor is missing", parent.short()))
        })?;
    }
    chain.reverse();
    Ok(Some(Lineage::new(chain)))
}

// The runtime's reads and writes; every method is exactly one transaction. Writes are
// answered after the fsync'd commit that holds them; dropping a `PendingWrite` does not cancel
// the write.
impl Store {
    /// One actor's record.
    pub fn actor(&self, omni: &Omni) -> Result<Option<ActorRecord>, StoreError> {
        let txn = self.read_txn()?;
        let actors = txn.open_table(ACTORS)?;
        read_record(&actors, omni)
    }

    /// The records from the master down to `omni`, read in one snapshot (with the master's
    /// change epoch of that snapshot, on a shared store).
    pub fn lineage(&self, omni: &Omni) -> Result<Option<Lineage>, StoreError> {
        let txn = self.read_txn()?;
        let actors = txn.open_table(ACTORS)?;
        let Some(mut lineage) = read_lineage(&actors, omni)? else {
            return Ok(None);
        };
        lineage.epoch = super::epochs::read(&txn, &lineage.master())?;
        Ok(Some(lineage))
    }

    /// Whether several nodes may share this store (a byte engine such as PostgreSQL).
    pub fn is_shared(&self) -> bool {
        self.shared
    }

    /// Children of `parent` in label order, starting after `after`, at most `limit`.
    pub fn children(
        &self,
        parent: &Omni,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<ChildEntry>, StoreError> {
        let txn = self.read_txn()?;
        let table = txn.open_table(CHILDREN)?;
        let p = parent.as_bytes();
        let start = match after {
            Some(label) => Bound::Excluded((p, label)),
            None => Bound::Included((p, "")),
        };
        let range = table.range::<(&[u8; 32], &str)>((start, Bound::Unbounded))?;
        let mut out = Vec::new();
        for entry in range {
            if out.len() >= limit {
                break;
            }
            let (key, value) = entry?;
            let (key_parent, label) = key.value();
            if key_parent != p {
                break;
            }
            out.push(ChildEntry {
                label: label.to_owned(),
                omni: Omni::from_bytes(*value.value()),
            });
        }
        Ok(out)
    }

    /// Masters in omni order, starting after `after`, at most `limit`.
    pub fn masters(&self, after: Option<&Omni>, limit: usize) -> Result<Vec<Omni>, StoreError> {
        let txn = self.read_txn()?;
        let table = txn.open_table(MASTERS)?;
        let start = match after {
            Some(omni) => Bound::Excluded(omni.as_bytes()),
            None => Bound::Unbounded,
        };
        let range = table.range::<&[u8; 32]>((start, Bound::Unbounded))?;
        let mut out = Vec::new();
        for entry in range.take(limit) {
            let (key, _) = entry?;
            out.push(Omni::from_bytes(*key.value()));
        }
        Ok(out)
    }

    /// Creates an actor (idempotent for the same omni, parent, label and scopes).
    pub fn create_actor(&self, op: CreateActor) -> PendingWrite<Created, CreateError> {
        self.writer.submit(op, Lane::Ordinary)
    }

    /// Writes the durable revocation marker on one actor (idempotent).
    pub fn revoke_actor(&self, op: RevokeActor) -> PendingWrite<Revocation, RevokeError> {
        self.writer.submit(op, Lane::Urgent)
    }

    /// Reads a value of the meta table.
    pub fn meta(&self, name: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let txn = self.read_txn()?;
        let table = txn.open_table(META)?;
        let value = table.get(name)?;
        Ok(value.map(|v| v.value().to_vec()))
    }

    /// The values of the meta table whose names start with `prefix`, in name order.
    pub fn meta_prefixed(&self, prefix: &str) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        let txn = self.read_txn()?;
        let table = txn.open_table(META)?;
        let mut out = Vec::new();
        for entry in table.range::<&str>(prefix..)? {
            let (name, value) = entry?;
            let name = name.value();
            if !name.starts_with(prefix) {
                break;
            }
            out.push((name.to_string(), value.value().to_vec()));
        }
        Ok(out)
    }

    /// Writes a value of the meta table (e.g. key rotation state); the store's own names
    /// (`schema_version`, `client_id`, `created_at`, `k3_fingerprint`) are refused.
    pub fn set_meta(&self, name: &str, value: Vec<u8>) -> PendingWrite<(), MetaError> {
        self.writer.submit(
            SetMeta {
                name: name.to_string(),
                value,
            },
            Lane::Ordinary,
        )
    }

    /// Resolves once every write submitted before it has committed (an empty batch member).
    pub fn flush(&self) -> PendingWrite<(), std::convert::Infallible> {
        self.writer.submit(Flush, Lane::Ordinary)
    }

    /// Reads the meta table in one transaction: proves the file is readable.
    pub fn check(&self) -> Result<(), StoreError> {
        let txn = self.read_txn()?;
        let meta = txn.open_table(META)?;
        meta.get(META_SCHEMA)?
            .map(|_| ())
            .ok_or_else(|| StoreError::Corrupt("meta schema_version missing".into()))
    }

    /// Whether the writer thread is alive.
    pub fn writer_running(&self) -> bool {
        self.writer.is_running()
    }

    /// Writer counters.
    pub fn writer_counts(&self) -> WriterCounts {
        let (checkpoints, log_bytes) = self.engine().map_or((0, 0), |e| e.log_counts());
        WriterCounts {
            checkpoints,
            log_bytes,
            ..self.writer.stats()
        }
    }

    /// Commits what was submitted, stops the writer; later writes fail with `Closed`.
    pub fn close(&self) {
        self.writer.close();
        if let Ok(mut engine) = self.engine.write() {
            engine.take();
        }
    }
}
