//! The store on PostgreSQL (`TEST_POSTGRES_URL`, set by scripts/test.sh): the byte engine
//! behaves as redb does for every table operation, and stores of several nodes on one database
//! serialize their conditional writes.

mod common;

use std::ops::Bound;
use std::sync::Arc;

use agentkeys_pg::{NodeIdentity, PgEngine, PgSettings, PgStore};
use agentkeys_runtime::Omni;
use agentkeys_runtime::Timestamp;
use agentkeys_runtime::store::{
    CreateActor, CreateError, Engine, Origin, ReadableTable, RevokeActor, Status, Store,
    StoreOptions, TableDefinition, WriteTransaction,
};
use common::fresh_database;
use proptest::prelude::*;

/// A key with a string first, so encodings of different lengths and zero bytes meet.
const TABLE: TableDefinition<(&str, u64), u64> = TableDefinition::new("conformance");

#[derive(Debug, Clone)]
enum Op {
    Insert(String, u64, u64),
    /// An insert whose previous value is not asked for (buffered by the PostgreSQL engine).
    Put(String, u64, u64),
    Remove(String, u64),
    Get(String, u64),
    Range(Bound<(String, u64)>, Bound<(String, u64)>),
    First,
    Last,
    PopFirst,
    Len,
}

fn text() -> impl Strategy<Value = String> {
    proptest::collection::vec(prop_oneof!["", "a", "b", "\0", "é"], 0..3).prop_map(|p| p.concat())
}

fn key() -> impl Strategy<Value = (String, u64)> {
    (text(), prop_oneof![Just(0u64), Just(1), Just(u64::MAX)])
}

fn bound() -> impl Strategy<Value = Bound<(String, u64)>> {
    prop_oneof![
        Just(Bound::Unbounded),
        key().prop_map(Bound::Included),
        key().prop_map(Bound::Excluded),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (key(), any::<u64>()).prop_map(|((s, n), v)| Op::Insert(s, n, v)),
        3 => (key(), any::<u64>()).prop_map(|((s, n), v)| Op::Put(s, n, v)),
        1 => key().prop_map(|(s, n)| Op::Remove(s, n)),
        1 => key().prop_map(|(s, n)| Op::Get(s, n)),
        2 => (bound(), bound()).prop_map(|(a, b)| Op::Range(a, b)),
        1 => Just(Op::First),
        1 => Just(Op::Last),
        1 => Just(Op::PopFirst),
        1 => Just(Op::Len),
    ]
}

fn borrowed(bound: &Bound<(String, u64)>) -> Bound<(&str, u64)> {
    match bound {
        Bound::Included((s, n)) => Bound::Included((s.as_str(), *n)),
        Bound::Excluded((s, n)) => Bound::Excluded((s.as_str(), *n)),
        Bound::Unbounded => Bound::Unbounded,
    }
}

/// Runs `ops` in one transaction and writes down everything observable.
fn transcript(txn: &WriteTransaction, ops: &[Op]) -> Vec<String> {
    let mut table = txn.open_table(TABLE).expect("open");
    let row = |r: Option<(String, u64, u64)>| format!("{r:?}");
    ops.iter()
        .map(|op| match op {
            Op::Insert(s, n, v) => {
                format!(
                    "{:?}",
                    table
                        .insert((s.as_str(), *n), v)
                        .expect("insert")
                        .map(|g| g.value())
                )
            }
            Op::Put(s, n, v) => {
                table.put((s.as_str(), *n), v).expect("put");
                "put".to_string()
            }
            Op::Remove(s, n) => {
                format!(
                    "{:?}",
                    table
                        .remove((s.as_str(), *n))
                        .expect("remove")
                        .map(|g| g.value())
                )
            }
            Op::Get(s, n) => {
                format!(
                    "{:?}",
                    table.get((s.as_str(), *n)).expect("get").map(|g| g.value())
                )
            }
            Op::Range(from, to) => {
                // redb panics on a range whose start is after its end; so would a B-tree.
                if let (
                    Bound::Included(a) | Bound::Excluded(a),
                    Bound::Included(b) | Bound::Excluded(b),
                ) = (from, to)
                    && (a > b
                        || (a == b
                            && !(matches!(from, Bound::Included(_))
                                && matches!(to, Bound::Included(_)))))
                {
                    return "empty".into();
                }
                let rows: Vec<_> = table
                    .range::<(&str, u64)>((borrowed(from), borrowed(to)))
                    .expect("range")
                    .map(|r| {
                        let (k, v) = r.expect("row");
                        let (s, n) = k.value();
                        (s.to_owned(), n, v.value())
                    })
                    .collect();
                format!("{rows:?}")
            }
            Op::First | Op::Last => {
                let found = if matches!(op, Op::First) {
                    table.first()
                } else {
                    table.last()
                };
                row(found.expect("edge").map(|(k, v)| {
                    let (s, n) = k.value();
                    (s.to_owned(), n, v.value())
                }))
            }
            Op::PopFirst => row(table.pop_first().expect("pop").map(|(k, v)| {
                let (s, n) = k.value();
                (s.to_owned(), n, v.value())
            })),
            Op::Len => format!("{}", table.len().expect("len")),
        })
        .collect()
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

/// A migrated database and its settings.
fn database(name: &str) -> PgSettings {
    runtime().block_on(async {
        let settings = fresh_database(name).await;
        PgStore::open(&settings, &node("setup"))
            .await
            .expect("migrates");
        settings
    })
}

fn node(name: &str) -> NodeIdentity {
    NodeIdentity {
        client_id: "agentkeys".into(),
        k3_fingerprint: vec![0xab; 32],
        node_name: name.into(),
    }
}

#[test]
fn the_postgres_engine_answers_every_table_operation_as_redb_does() {
    let settings = database("conformance");
    let pg = Engine::Bytes(Arc::new(PgEngine::new(&settings).expect("engine")));
    let dir = tempfile::tempdir().expect("dir");
    let redb = Engine::Redb {
        db: Arc::new(redb::Database::create(dir.path().join("t.redb")).expect("redb")),
        quick_repair: false,
        log: None,
    };
    let config = ProptestConfig {
        cases: 24,
        failure_persistence: None,
        ..ProptestConfig::default()
    };
    proptest!(config, |(mut ops in proptest::collection::vec(op(), 1..48))| {
        // The whole table at the end: trailing buffered writes are observed too.
        ops.push(Op::Range(Bound::Unbounded, Bound::Unbounded));
        let mut seen = Vec::new();
        for engine in [&redb, &pg] {
            let txn = engine.begin_write().expect("begin");
            seen.push(transcript(&txn, &ops));
            // Every case starts from an empty table: aborting discards the writes.
            txn.abort().expect("abort");
        }
        prop_assert_eq!(&seen[0], &seen[1]);
    });
    // The aborted writes are gone; a committed one is read back through a snapshot.
    let txn = pg.begin_write().expect("begin");
    {
        let mut table = txn.open_table(TABLE).expect("open");
        table.insert(("k\0", 7), 9).expect("insert");
        // A buffered write sent by the commit itself.
        table.put(("p", 1), 5).expect("put");
    }
    txn.commit().expect("commit");
    let read = pg.begin_read().expect("read");
    let table = read.open_table(TABLE).expect("open");
    assert_eq!(table.len().expect("len"), 2);
    assert_eq!(
        table.get(("p", 1)).expect("get").map(|g| g.value()),
        Some(5)
    );
    assert_eq!(
        table.get(("k\0", 7)).expect("get").map(|g| g.value()),
        Some(9)
    );
}

fn omni(n: u8) -> Omni {
    Omni::from_bytes([n; 32])
}

fn create(parent: Option<Omni>, omni: Omni, label: &str) -> CreateActor {
    CreateActor {
        omni,
        parent,
        label: label.into(),
        created_at: Timestamp::from_millis(1_000),
        origin: Origin::default(),
        scopes: Vec::new(),
    }
}

fn open_node(settings: &PgSettings) -> Store {
    let engine = Arc::new(PgEngine::new(settings).expect("engine"));
    Store::open_bytes(
        engine,
        &StoreOptions::default(),
        Timestamp::from_millis(1_000),
    )
    .expect("the store opens on PostgreSQL")
}

#[test]
fn nodes_on_one_database_serialize_conditional_writes_and_see_each_others_revocations() {
    let settings = database("nodes");
    let nodes: Vec<Store> = (0..3).map(|_| open_node(&settings)).collect();
    let rt = runtime();
    rt.block_on(async {
        let master = omni(1);
        nodes[0]
            .create_actor(create(None, master, ""))
            .await
            .expect("a master");
        // 16 creates of one label with different omnis, spread over the nodes: one wins.
        let attempts: Vec<_> = (0..16u8)
            .map(|i| {
                nodes[usize::from(i) % 3].create_actor(create(Some(master), omni(10 + i), "bot"))
            })
            .collect();
        let mut won = 0;
        for attempt in attempts {
            match attempt.await {
                Ok(created) => {
                    assert!(created.new);
                    won += 1;
                }
                Err(e) => assert!(
                    matches!(
                        e,
                        agentkeys_runtime::store::WriteError::Rejected(CreateError::LabelTaken)
                    ),
                    "{e:?}"
                ),
            }
        }
        assert_eq!(won, 1, "exactly one create of the label commits");
        let children = nodes[2].children(&master, None, 10).expect("children");
        assert_eq!(children.len(), 1);
        let child = children[0].omni;

        // A revocation through one node is what every node reads next.
        nodes[1]
            .revoke_actor(RevokeActor {
                omni: master,
                at: Timestamp::from_millis(2_000),
                origin: Origin::default(),
            })
            .await
            .expect("revoked");
        for node in &nodes {
            let lineage = node.lineage(&child).expect("read").expect("exists");
            assert!(matches!(lineage.status(), Status::Revoked { by, .. } if by == master));
        }
        // And no node can create under the revoked tree.
        let refused = nodes[2]
            .create_actor(create(Some(master), omni(99), "late"))
            .await;
        assert!(matches!(
            refused,
            Err(agentkeys_runtime::store::WriteError::Rejected(
                CreateError::ParentRevoked { .. }
            ))
        ));
    });
    for node in &nodes {
        node.close();
    }
}

#[test]
fn an_unreachable_database_is_reported_as_unreachable_not_as_a_failed_write() {
    // Nothing listens on port 1 of loopback.
    let settings =
        PgSettings::parse("postgres://agentkeys@127.0.0.1:1/agentkeys").expect("settings");
    let engine = Engine::Bytes(Arc::new(PgEngine::new(&settings).expect("engine")));
    for attempt in [engine.begin_write().err(), engine.begin_read().err()] {
        assert!(
            matches!(
                attempt,
                Some(agentkeys_runtime::store::StoreError::Unreachable(_))
            ),
            "{attempt:?}"
        );
    }
}

#[test]
fn a_fenced_engine_commits_nothing_once_its_node_lost_the_active_lock() {
    let settings = database("fence");
    let rt = runtime();
    let lost = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let lock = rt.block_on(async {
        let pg = PgStore::open(&settings, &node("a")).await.expect("opens");
        let flag = lost.clone();
        pg.become_active(
            || {},
            move || flag.store(true, std::sync::atomic::Ordering::SeqCst),
        )
        .await
        .expect("active")
    });
    let engine = Engine::Bytes(Arc::new(
        PgEngine::new(&settings).expect("engine").fenced_by(&lock),
    ));
    let txn = engine.begin_write().expect("the active node writes");
    txn.open_table(TABLE)
        .expect("open")
        .insert(("a", 1), 1)
        .expect("insert");
    txn.commit().expect("commit");

    // The lock's session ends, as when its connection breaks: another node may become active.
    rt.block_on(async {
        let admin = PgStore::open(&settings, &node("admin"))
            .await
            .expect("opens");
        let client = admin.pool().get().await.expect("connection");
        // `pg_terminate_backend(pid, timeout)` waits until the session has ended.
        client
            .execute(
                "SELECT pg_terminate_backend($1, 5000)",
                &[&lock.backend_pid()],
            )
            .await
            .expect("terminated");
    });
    let refused = engine.begin_write().err();
    assert!(
        refused
            .as_ref()
            .is_some_and(|e| e.to_string().contains("no longer the active node")),
        "{refused:?}"
    );
    // The engine's connections stay usable (the failed transaction was rolled back), and the
    // node learns that it lost the lock.
    let read = engine.begin_read().expect("read");
    assert_eq!(read.open_table(TABLE).expect("open").len().expect("len"), 1);
    let noticed = rt.block_on(async {
        for _ in 0..1_000 {
            if lost.load(std::sync::atomic::Ordering::SeqCst) {
                return true;
            }
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
        false
    });
    assert!(noticed, "the watcher reports the lost lock");
}
