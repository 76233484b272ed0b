//! The redb implementation of [`Storage`].

use std::ops::Bound;
use std::path::Path;
use std::sync::{Arc, RwLock};

use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition, WriteTransaction};

use super::accounts::{ALLOWLIST, IDENTITIES, MANAGED_WALLETS, MASTER_IDENTITIES};
use super::audit::{self, AUDIT, AUDIT_CHAIN, AUDIT_HEADS, AUDIT_UNSIGNED};
use super::devices::{self, COUNTERS, DEVICE_KEYS, DEVICES};
use super::writer::{Mutation, PendingWrite, Writer, WriterCounts};
use super::{
    ActorRecord, AppendAudit, AuditEntry, AuditReport, AuditRow, BindingError, BindingInUse,
    ChainHead, ChainMark, ChildEntry, CreateActor, CreateAndBind, CreateError, Created,
    CreatedAndBound, DeleteDevice, DeviceBinding, HeadSigner, IssueLinkCode, Lineage, LinkError,
    LoggedIn, Login, LoginError, MAX_DEPTH, MetaError, RedeemLinkCode, Redemption, RefreshSession,
    Revocation, RevokeActor, RevokeError, SCHEMA_VERSION, SetAllowed, SetScopes, Storage,
    StoreError,
};
use crate::clock::Timestamp;
use crate::omni::Omni;

pub(crate) const ACTORS: TableDefinition<&[u8; 32], &[u8]> = TableDefinition::new("actors");
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
}

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
        }
    }
}

/// The embedded store: one redb file and its group-commit writer thread.
pub struct RedbStore {
    /// `None` once closed; readers clone the `Arc` so the file closes when the last one ends.
    db: RwLock<Option<Arc<Database>>>,
    writer: Writer,
}

impl std::fmt::Debug for RedbStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedbStore").finish_non_exhaustive()
    }
}

impl RedbStore {
    /// Opens (or creates) the store at `path`, checks schema and `client_id`, starts the writer.
    pub fn open(path: &Path, options: &StoreOptions, now: Timestamp) -> Result<Self, StoreError> {
        let db = Database::builder()
            .set_cache_size(options.cache_bytes)
            .create(path)
            .map_err(StoreError::from_redb)?;
        let mut txn = db.begin_write().map_err(StoreError::from_redb)?;
        txn.set_quick_repair(options.quick_repair);
        init_or_check_meta(&txn, options, now)?;
        {
            txn.open_table(ACTORS).map_err(StoreError::from_redb)?;
            txn.open_table(CHILDREN).map_err(StoreError::from_redb)?;
            txn.open_table(MASTERS).map_err(StoreError::from_redb)?;
            create_tables(&txn)?;
        }
        txn.commit().map_err(StoreError::from_redb)?;
        let db = Arc::new(db);
        let writer = Writer::start(db.clone(), options.quick_repair)?;
        Ok(Self {
            db: RwLock::new(Some(db)),
            writer,
        })
    }

    fn db(&self) -> Result<Arc<Database>, StoreError> {
        self.db
            .read()
            .ok()
            .and_then(|db| db.clone())
            .ok_or(StoreError::Closed)
    }

    fn read_txn(&self) -> Result<redb::ReadTransaction, StoreError> {
        self.db()?.begin_read().map_err(StoreError::from_redb)
    }

    /// Verifies the audit log of a store file no process has open (`agentkeys audit verify`).
    /// A file left by a crash is repaired first, as the server's next start would (redb's
    /// repair rebuilds its allocator state from the last durable commit; committed data is not
    /// changed); a file a running server holds is refused.
    pub fn verify_file(
        path: &Path,
        check: audit::HeadCheck<'_>,
        last: &[ChainMark],
    ) -> Result<AuditReport, StoreError> {
        let db = match redb::ReadOnlyDatabase::open(path) {
            Err(redb::DatabaseError::RepairAborted) => {
                drop(Database::open(path).map_err(StoreError::from_redb)?);
                redb::ReadOnlyDatabase::open(path)
            }
            other => other,
        }
        .map_err(StoreError::from_redb)?;
        let txn = db.begin_read().map_err(StoreError::from_redb)?;
        audit::verify(&txn, check, last)
    }

    /// Submits any [`Mutation`]: the hook for tables owned by higher layers.
    pub fn submit<M: Mutation>(&self, op: M) -> PendingWrite<M::Output, M::Rejection> {
        self.writer.submit(op)
    }
}

/// Creates the tables of the higher layers so read transactions always find them.
fn create_tables(txn: &WriteTransaction) -> Result<(), StoreError> {
    txn.open_table(DEVICES).map_err(StoreError::from_redb)?;
    txn.open_table(DEVICE_KEYS).map_err(StoreError::from_redb)?;
    txn.open_table(COUNTERS).map_err(StoreError::from_redb)?;
    txn.open_table(IDENTITIES).map_err(StoreError::from_redb)?;
    txn.open_table(MANAGED_WALLETS)
        .map_err(StoreError::from_redb)?;
    txn.open_table(ALLOWLIST).map_err(StoreError::from_redb)?;
    txn.open_table(MASTER_IDENTITIES)
        .map_err(StoreError::from_redb)?;
    txn.open_table(super::links::LINK_CODES)
        .map_err(StoreError::from_redb)?;
    txn.open_table(super::links::LINK_CODES_BY_ACTOR)
        .map_err(StoreError::from_redb)?;
    txn.open_table(AUDIT).map_err(StoreError::from_redb)?;
    txn.open_table(AUDIT_CHAIN).map_err(StoreError::from_redb)?;
    txn.open_table(AUDIT_HEADS).map_err(StoreError::from_redb)?;
    txn.open_table(AUDIT_UNSIGNED)
        .map_err(StoreError::from_redb)?;
    Ok(())
}

fn init_or_check_meta(
    txn: &WriteTransaction,
    options: &StoreOptions,
    now: Timestamp,
) -> Result<(), StoreError> {
    let mut meta = txn.open_table(META).map_err(StoreError::from_redb)?;
    let schema = meta
        .get(META_SCHEMA)
        .map_err(StoreError::from_redb)?
        .map(|v| v.value().to_vec());
    let Some(schema) = schema else {
        meta.insert(META_SCHEMA, SCHEMA_VERSION.to_be_bytes().as_slice())
            .map_err(StoreError::from_redb)?;
        meta.insert(META_CLIENT_ID, options.client_id.as_bytes())
            .map_err(StoreError::from_redb)?;
        meta.insert(META_CREATED_AT, now.as_millis().to_be_bytes().as_slice())
            .map_err(StoreError::from_redb)?;
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
        .get(META_CLIENT_ID)
        .map_err(StoreError::from_redb)?
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
    meta: &mut redb::Table<&str, &[u8]>,
    options: &StoreOptions,
) -> Result<(), StoreError> {
    let Some(given) = &options.key_fingerprint else {
        return Ok(());
    };
    let stored = meta
        .get(META_KEY_FINGERPRINT)
        .map_err(StoreError::from_redb)?
        .map(|v| v.value().to_vec());
    match stored {
        Some(stored) if &stored != given => Err(StoreError::KeyMismatch {
            stored: hex::encode(stored),
            configured: hex::encode(given),
        }),
        Some(_) => Ok(()),
        None => meta
            .insert(META_KEY_FINGERPRINT, given.as_slice())
            .map(|_| ())
            .map_err(StoreError::from_redb),
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
        let mut meta = txn.open_table(META).map_err(StoreError::from_redb)?;
        meta.insert(plan.name.as_str(), plan.value.as_slice())
            .map(|_| ())
            .map_err(StoreError::from_redb)
    }
}

/// A no-op write: answered after the commit of its batch, so after every earlier write. With
/// `sign_heads`, the writer also signs every audit head left unsigned in that batch.
struct Flush {
    sign_heads: bool,
}

impl Mutation for Flush {
    type Plan = ();
    type Output = ();
    type Rejection = std::convert::Infallible;

    fn check(
        self,
        _view: &WriteTransaction,
    ) -> Result<Result<(), std::convert::Infallible>, StoreError> {
        if self.sign_heads {
            audit::mark_appended();
        }
        Ok(Ok(()))
    }

    fn apply(_plan: (), _txn: &WriteTransaction) -> Result<(), StoreError> {
        Ok(())
    }
}

/// Reads one record from any readable `actors` table (a snapshot or the batch's view).
pub(crate) fn read_record(
    actors: &impl ReadableTable<&'static [u8; 32], &'static [u8]>,
    omni: &Omni,
) -> Result<Option<ActorRecord>, StoreError> {
    let Some(value) = actors.get(omni.as_bytes()).map_err(StoreError::from_redb)? else {
        return Ok(None);
    };
    ActorRecord::decode(*omni, value.value())
        .map(Some)
        .map_err(|e| StoreError::Corrupt(format!("actor {}: {e}", omni.short())))
}

/// Walks from `omni` up to its master (at most `MAX_DEPTH + 1` records), root first.
pub(crate) fn read_lineage(
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

impl Storage for RedbStore {
    fn actor(&self, omni: &Omni) -> Result<Option<ActorRecord>, StoreError> {
        let txn = self.read_txn()?;
        let actors = txn.open_table(ACTORS).map_err(StoreError::from_redb)?;
        read_record(&actors, omni)
    }

    fn lineage(&self, omni: &Omni) -> Result<Option<Lineage>, StoreError> {
        let txn = self.read_txn()?;
        let actors = txn.open_table(ACTORS).map_err(StoreError::from_redb)?;
        read_lineage(&actors, omni)
    }

    fn children(
        &self,
        parent: &Omni,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<ChildEntry>, StoreError> {
        let txn = self.read_txn()?;
        let table = txn.open_table(CHILDREN).map_err(StoreError::from_redb)?;
        let p = parent.as_bytes();
        let start = match after {
            Some(label) => Bound::Excluded((p, label)),
            None => Bound::Included((p, "")),
        };
        let range = table
            .range::<(&[u8; 32], &str)>((start, Bound::Unbounded))
            .map_err(StoreError::from_redb)?;
        let mut out = Vec::new();
        for entry in range {
            if out.len() >= limit {
                break;
            }
            let (key, value) = entry.map_err(StoreError::from_redb)?;
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

    fn masters(&self, after: Option<&Omni>, limit: usize) -> Result<Vec<Omni>, StoreError> {
        let txn = self.read_txn()?;
        let table = txn.open_table(MASTERS).map_err(StoreError::from_redb)?;
        let start = match after {
            Some(omni) => Bound::Excluded(omni.as_bytes()),
            None => Bound::Unbounded,
        };
        let range = table
            .range::<&[u8; 32]>((start, Bound::Unbounded))
            .map_err(StoreError::from_redb)?;
        let mut out = Vec::new();
        for entry in range.take(limit) {
            let (key, _) = entry.map_err(StoreError::from_redb)?;
            out.push(Omni::from_bytes(*key.value()));
        }
        Ok(out)
    }

    fn create_actor(&self, op: CreateActor) -> PendingWrite<Created, CreateError> {
        self.writer.submit(op)
    }

    fn revoke_actor(&self, op: RevokeActor) -> PendingWrite<Revocation, RevokeError> {
        self.writer.submit(op)
    }

    fn device(&self, omni: &Omni, bid: u64) -> Result<Option<DeviceBinding>, StoreError> {
        let txn = self.read_txn()?;
        let table = txn.open_table(DEVICES).map_err(StoreError::from_redb)?;
        devices::read_binding(&table, omni, bid)
    }

    fn link_code_owner(&self, hash: &[u8; 32]) -> Result<Option<Omni>, StoreError> {
        let txn = self.read_txn()?;
        let table = txn
            .open_table(super::links::LINK_CODES)
            .map_err(StoreError::from_redb)?;
        super::links::code_owner(&table, hash)
    }

    fn devices(&self, omni: &Omni) -> Result<Vec<DeviceBinding>, StoreError> {
        let txn = self.read_txn()?;
        let table = txn.open_table(DEVICES).map_err(StoreError::from_redb)?;
        devices::read_bindings(&table, omni)
    }

    fn is_managed_wallet(&self, address: &[u8; 20]) -> Result<bool, StoreError> {
        let txn = self.read_txn()?;
        let table = txn
            .open_table(MANAGED_WALLETS)
            .map_err(StoreError::from_redb)?;
        Ok(table.get(address).map_err(StoreError::from_redb)?.is_some())
    }

    fn identity_of(&self, master: &Omni) -> Result<Option<(String, String)>, StoreError> {
        let txn = self.read_txn()?;
        let table = txn
            .open_table(MASTER_IDENTITIES)
            .map_err(StoreError::from_redb)?;
        let value = table
            .get(master.as_bytes())
            .map_err(StoreError::from_redb)?;
        Ok(value.and_then(|v| {
            v.value()
                .split_once(':')
                .map(|(t, v)| (t.to_owned(), v.to_owned()))
        }))
    }

    fn allowlist(&self) -> Result<Vec<String>, StoreError> {
        let txn = self.read_txn()?;
        let table = txn.open_table(ALLOWLIST).map_err(StoreError::from_redb)?;
        let mut out = Vec::new();
        for entry in table.iter().map_err(StoreError::from_redb)? {
            let (key, _) = entry.map_err(StoreError::from_redb)?;
            out.push(key.value().to_owned());
        }
        Ok(out)
    }

    fn audit_rows(
        &self,
        master: &Omni,
        after: u64,
        limit: usize,
    ) -> Result<Vec<AuditRow>, StoreError> {
        let txn = self.read_txn()?;
        let chain = txn.open_table(AUDIT_CHAIN).map_err(StoreError::from_redb)?;
        let rows = txn.open_table(AUDIT).map_err(StoreError::from_redb)?;
        audit::chain_rows(&chain, &rows, master, after, limit)
    }

    fn audit_head(&self, master: &Omni) -> Result<Option<ChainHead>, StoreError> {
        let txn = self.read_txn()?;
        let heads = txn.open_table(AUDIT_HEADS).map_err(StoreError::from_redb)?;
        let value = heads
            .get(master.as_bytes())
            .map_err(StoreError::from_redb)?;
        value
            .map(|v| ChainHead::decode(*master, v.value()))
            .transpose()
    }

    fn verify_audit(
        &self,
        check: audit::HeadCheck<'_>,
        last: &[ChainMark],
    ) -> Result<AuditReport, StoreError> {
        audit::verify(&self.read_txn()?, check, last)
    }

    fn login(&self, op: Login) -> PendingWrite<LoggedIn, LoginError> {
        self.writer.submit(op)
    }

    fn refresh_session(&self, op: RefreshSession) -> PendingWrite<BindingInUse, BindingError> {
        self.writer.submit(op)
    }

    fn issue_link_code(&self, op: IssueLinkCode) -> PendingWrite<Timestamp, LinkError> {
        self.writer.submit(op)
    }

    fn redeem_link_code(&self, op: RedeemLinkCode) -> PendingWrite<Redemption, LinkError> {
        self.writer.submit(op)
    }

    fn create_and_bind(&self, op: CreateAndBind) -> PendingWrite<CreatedAndBound, CreateError> {
        self.writer.submit(op)
    }

    fn set_scopes(&self, op: SetScopes) -> PendingWrite<ActorRecord, LinkError> {
        self.writer.submit(op)
    }

    fn delete_device(&self, op: DeleteDevice) -> PendingWrite<BindingInUse, BindingError> {
        self.writer.submit(op)
    }

    fn append_audit(&self, entry: AuditEntry) -> PendingWrite<u64, std::convert::Infallible> {
        self.writer.submit(AppendAudit(entry))
    }

    fn set_allowed(&self, op: SetAllowed) -> PendingWrite<bool, std::convert::Infallible> {
        self.writer.submit(op)
    }

    fn set_head_signer(
        &self,
        signer: Arc<dyn HeadSigner>,
    ) -> PendingWrite<(), std::convert::Infallible> {
        self.writer.set_head_signer(signer);
        self.writer.submit(Flush { sign_heads: true })
    }

    fn audit_watch(&self) -> tokio::sync::watch::Receiver<u64> {
        self.writer.audit_watch()
    }

    fn meta(&self, name: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let txn = self.read_txn()?;
        let table = txn.open_table(META).map_err(StoreError::from_redb)?;
        let value = table.get(name).map_err(StoreError::from_redb)?;
        Ok(value.map(|v| v.value().to_vec()))
    }

    fn set_meta(&self, name: &str, value: Vec<u8>) -> PendingWrite<(), MetaError> {
        self.writer.submit(SetMeta {
            name: name.to_string(),
            value,
        })
    }

    fn flush(&self) -> PendingWrite<(), std::convert::Infallible> {
        self.writer.submit(Flush { sign_heads: false })
    }

    fn check(&self) -> Result<(), StoreError> {
        let txn = self.read_txn()?;
        let meta = txn.open_table(META).map_err(StoreError::from_redb)?;
        meta.get(META_SCHEMA)
            .map_err(StoreError::from_redb)?
            .map(|_| ())
            .ok_or_else(|| StoreError::Corrupt("meta schema_version missing".into()))
    }

    fn writer_running(&self) -> bool {
        self.writer.is_running()
    }

    fn writer_counts(&self) -> WriterCounts {
        self.writer.stats()
    }

    fn close(&self) {
        self.writer.close();
        if let Ok(mut db) = self.db.write() {
            db.take();
        }
    }
}
