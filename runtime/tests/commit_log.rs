//! The commit log (runtime/src/store/commit_log.rs): what a crash leaves on disk — both files
//! copied while the store runs, between batches — recovers every answered batch; the redb file
//! alone lacks them (so the log did the work); a full log checkpoints; a torn last record is
//! dropped; a store file restored without its log is refused.

mod kit;

use std::convert::Infallible;
use std::path::{Path, PathBuf};
use std::time::Duration;

use agentkeys_runtime::store::{
    Mutation, Origin, ReadableTable, RevokeActor, Store, StoreError, StoreOptions, TableDefinition,
    TableSet, TableVisitor, WriteTransaction, log_path,
};
use agentkeys_runtime::{Omni, Timestamp};
use kit::{create, omni_of};

const FILE: &str = "agentkeys.redb";
const BIG: TableDefinition<u64, &[u8]> = TableDefinition::new("test_big");

fn big_table(tables: &mut TableSet<'_>) -> Result<(), StoreError> {
    tables.visit(BIG)
}

/// No idle checkpoint during a test: what is in the log stays there until the test says.
fn options(commit_log: bool) -> StoreOptions {
    StoreOptions {
        commit_log,
        checkpoint_idle: Duration::from_secs(3600),
        prepare: vec![big_table],
        ..StoreOptions::default()
    }
}

fn open(dir: &Path, commit_log: bool) -> Result<Store, StoreError> {
    Store::open(
        &dir.join(FILE),
        &options(commit_log),
        Timestamp::from_millis(1),
    )
}

/// The disk image of a crash now: the redb file and (when `with_log`) its log, copied into a
/// new directory.
fn crash_image(dir: &Path, with_log: bool) -> (tempfile::TempDir, PathBuf) {
    let image = tempfile::tempdir().expect("tempdir");
    let file = dir.join(FILE);
    std::fs::copy(&file, image.path().join(FILE)).expect("copy the store file");
    if with_log {
        std::fs::copy(log_path(&file), log_path(&image.path().join(FILE))).expect("copy the log");
    }
    let path = image.path().to_path_buf();
    (image, path)
}

/// Writes `value` under `key` in [`BIG`].
struct Big(u64, Vec<u8>);

impl Mutation for Big {
    type Plan = Self;
    type Output = ();
    type Rejection = Infallible;

    fn check(self, _view: &WriteTransaction) -> Result<Result<Self, Infallible>, StoreError> {
        Ok(Ok(self))
    }

    fn apply(plan: Self, txn: &WriteTransaction) -> Result<(), StoreError> {
        txn.open_table(BIG)?.put(plan.0, plan.1.as_slice())
    }
}

fn big_rows(store: &Store) -> Vec<(u64, Vec<u8>)> {
    let txn = store.read().expect("read");
    let table = txn.open_table(BIG).expect("table");
    table
        .iter()
        .expect("iter")
        .map(|row| {
            let (k, v) = row.expect("row");
            (k.value(), v.value().to_vec())
        })
        .collect()
}

fn exists(store: &Store, omni: &Omni) -> bool {
    store.lineage(omni).expect("lineage").is_some()
}

#[tokio::test]
async fn answered_batches_survive_a_crash_through_the_log_and_not_without_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(dir.path(), true).expect("opens");
    let master = omni_of(None, "log-master");
    store
        .create_actor(create(None, "log-master"))
        .await
        .expect("master");
    let mut children = Vec::new();
    for i in 0..20 {
        let label = format!("c{i}");
        store
            .create_actor(create(Some(&master), &label))
            .await
            .expect("child");
        children.push(omni_of(Some(&master), &label));
    }
    let revoked = store
        .revoke_actor(RevokeActor {
            omni: children[3],
            at: Timestamp::from_millis(5),
            origin: Origin::default(),
        })
        .await
        .expect("revoked");
    assert!(revoked.new);

    let (_bare, bare) = crash_image(dir.path(), false);
    let (_image, image) = crash_image(dir.path(), true);

    // The file alone is at its last durable commit, from the open: none of the batches.
    let alone = open(&bare, false).expect("the file alone opens");
    assert!(!exists(&alone, &master), "the file alone has the batches");
    alone.close();

    let recovered = open(&image, true).expect("recovers");
    assert!(exists(&recovered, &master));
    for child in &children {
        assert!(exists(&recovered, child), "child {child} lost");
    }
    let lineage = recovered
        .lineage(&children[3])
        .expect("read")
        .expect("child");
    assert!(
        lineage.actor().revoked_at().is_some(),
        "the revocation was lost"
    );
    // It goes on writing after the recovery, and a clean close leaves the file complete.
    recovered
        .create_actor(create(Some(&master), "after"))
        .await
        .expect("a write after recovery");
    recovered.close();
    drop(recovered);
    std::fs::remove_file(log_path(&image.join(FILE))).expect("remove the log");
    let closed = open(&image, false).expect("reopens without its log");
    assert!(exists(&closed, &omni_of(Some(&master), "after")));
    assert!(exists(&closed, &children[19]));
    closed.close();

    store.close();
}

#[tokio::test]
async fn a_full_log_checkpoints_and_a_torn_last_record_is_dropped() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(dir.path(), true).expect("opens");
    let value = |i: u64| vec![i as u8; 1 << 19];
    // 512 KiB each: the log (4 MiB) holds 7, so 20 take two checkpoints on the way.
    for i in 0..20 {
        store.submit(Big(i, value(i))).await.expect("written");
    }
    let (_bare, bare) = crash_image(dir.path(), false);
    let (_image, image) = crash_image(dir.path(), true);
    store.close();

    let alone = open(&bare, false).expect("the file alone opens");
    let durable = big_rows(&alone).len();
    assert!(
        (1..20).contains(&durable),
        "the checkpoint made {durable} of 20 durable in the file"
    );
    alone.close();

    // Tear the last record: the highest page that starts a record of the log's generation.
    let log = log_path(&image.join(FILE));
    let mut bytes = std::fs::read(&log).expect("read the log");
    let generation = bytes[8..24].to_vec();
    let last = (0..bytes.len() / 4096)
        .map(|page| page * 4096)
        .filter(|&at| bytes[at..at + 4] == *b"AKCL" && bytes[at + 8..at + 24] == generation[..])
        .max()
        .expect("a record");
    bytes[last + 4096 + 17] ^= 1;
    std::fs::write(&log, &bytes).expect("write the log");

    let recovered = open(&image, true).expect("recovers");
    let rows = big_rows(&recovered);
    assert_eq!(rows.len(), 19, "all but the torn last batch");
    for (i, (key, v)) in rows.iter().enumerate() {
        assert_eq!(*key, i as u64);
        assert!(*v == value(i as u64), "row {i} differs");
    }
    recovered.close();
}

#[tokio::test]
async fn a_store_file_restored_without_its_log_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let write = |store: &Store, from: u64, to: u64| {
        let pending: Vec<_> = (from..to).map(|i| store.submit(Big(i, vec![1]))).collect();
        async move {
            for p in pending {
                p.await.expect("written");
            }
        }
    };
    let store = open(dir.path(), true).expect("opens");
    write(&store, 0, 5).await;
    store.close();
    drop(store);
    let (_old, old) = crash_image(dir.path(), false);

    let store = open(dir.path(), true).expect("reopens");
    write(&store, 5, 10).await;
    store.close();
    drop(store);
    let store = open(dir.path(), true).expect("reopens");
    write(&store, 10, 12).await;
    // The old file with the newest log: the batches between them are in neither.
    std::fs::copy(log_path(&dir.path().join(FILE)), log_path(&old.join(FILE)))
        .expect("copy the log");
    store.close();
    match open(&old, true) {
        Err(StoreError::Corrupt(why)) => assert!(why.contains("restored"), "{why}"),
        other => panic!("opened: {:?}", other.map(|_| ())),
    }
}

#[tokio::test]
async fn a_damaged_batch_number_in_the_store_file_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(dir.path(), true).expect("opens");
    store.submit(Big(1, vec![1])).await.expect("written");
    store.close();
    drop(store);
    {
        let db = redb::Database::open(dir.path().join(FILE)).expect("redb");
        let txn = db.begin_write().expect("txn");
        txn.open_table(redb::TableDefinition::<&str, &[u8]>::new("meta"))
            .expect("meta")
            .insert("commit_log_seq", [1u8, 2, 3].as_slice())
            .expect("damaged");
        txn.commit().expect("commit");
    }
    match open(dir.path(), true) {
        Err(StoreError::Corrupt(why)) => assert!(why.contains("commit_log_seq"), "{why}"),
        other => panic!("opened: {:?}", other.map(|_| ())),
    }
}
