//! The domain ledger in the runtime's store: logins, device bindings and the audit chain,
//! including tampering with the store file the way someone with write access to the disk would.

use std::path::Path;
use std::sync::Arc;

use agentkeys_actors::ledger::{
    self, BindingError, ChainMark, DeleteDevice, HeadSigner, Ledger, Login, LoginError,
    RefreshSession, Registration, Revoke, SetAllowed, audit,
};
use agentkeys_runtime::store::{Origin, RevokeActor, StoreOptions, WriteError};
use agentkeys_runtime::{Omni, Timestamp};
use agentkeys_tests::{T0, omni_of};
use redb::{ReadableTable, TableDefinition};

/// A stand-in for the audit key: a keyed SHA-256 (the real one is ES256 in the signer).
struct TestSigner;

fn mac(message: &[u8]) -> Vec<u8> {
    audit::detail_hash(&[b"test-key".as_slice(), message].concat()).to_vec()
}

impl HeadSigner for TestSigner {
    fn sign_head(&self, message: &[u8]) -> Result<(String, Vec<u8>), String> {
        Ok(("test".into(), mac(message)))
    }
}

fn check(kid: &str, message: &[u8], signature: &[u8]) -> bool {
    kid == "test" && mac(message) == signature
}

fn login(master: Omni, jkt: &str, registration: Registration) -> Login {
    Login {
        master,
        wallet: [0x11; 20],
        identity: ("evm".into(), format!("0x{}", "ab".repeat(20))),
        signer: Some([0xab; 20]),
        anchor: None,
        registration,
        jkt: jkt.into(),
        device_label: "login".into(),
        request_id: "req-1".into(),
        at: T0,
    }
}

fn at(ms: u64) -> Timestamp {
    Timestamp::from_millis(T0.as_millis() + ms)
}

/// A ledger on a new store in `dir`, without a head signer.
fn unsigned_store(dir: &Path) -> Ledger {
    let options = StoreOptions {
        prepare: vec![ledger::create_tables],
        ..StoreOptions::default()
    };
    let store = agentkeys_tests::engine::open_store(dir, &options, T0);
    Ledger::new(Arc::new(store)).expect("ledger")
}

async fn signed_store(dir: &Path) -> Ledger {
    store_signed_by(dir, Arc::new(TestSigner)).await
}

/// A ledger on a new store in `dir` whose heads `signer` signs.
async fn store_signed_by(dir: &Path, signer: Arc<dyn HeadSigner>) -> Ledger {
    let ledger = unsigned_store(dir);
    ledger
        .set_head_signer(signer)
        .await
        .expect("signer installed");
    ledger
}

#[tokio::test]
async fn login_creates_the_master_once_and_reuses_the_binding_of_the_same_key() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = signed_store(dir.path()).await;
    let master = omni_of(None, "alice");
    let first = store
        .login(login(master, "key-a", Registration::Open))
        .await
        .expect("first login");
    assert!(first.new_master && first.new_binding);
    let again = store
        .login(login(master, "key-a", Registration::Closed))
        .await
        .expect("an existing master logs in even when registration is closed");
    assert!(!again.new_master && !again.new_binding);
    assert_eq!(again.binding.bid, first.binding.bid);
    let other = store
        .login(login(master, "key-b", Registration::Closed))
        .await
        .expect("second device");
    assert_ne!(other.binding.bid, first.binding.bid);
    assert_eq!(store.devices(&master).expect("devices").len(), 2);
    // create, device add, login; login; device add, login
    let rows = store.audit_rows(&master, 0, 100).expect("rows");
    let ops: Vec<u16> = rows.iter().map(|r| r.entry.op).collect();
    assert_eq!(
        ops,
        [
            audit::op::ACTOR_CREATE,
            audit::op::DEVICE_ADD,
            audit::op::LOGIN,
            audit::op::LOGIN,
            audit::op::DEVICE_ADD,
            audit::op::LOGIN
        ]
    );
    assert!(rows.iter().all(|r| r.entry.origin.request_id == "req-1"));
    store.settle_audit_heads(None).await.expect("settled");
    let head = store.audit_head(&master).expect("read").expect("head");
    assert_eq!(head.length, 6);
    assert!(head.is_signed());
    assert!(check(&head.kid, &head.message(), &head.signature));
    let report = store.verify_audit(&check, &[]).expect("verify");
    assert!(report.problems.is_empty(), "{:?}", report.problems);
    assert_eq!((report.chains, report.rows), (1, 6));
}

#[tokio::test]
async fn registration_policy_and_managed_wallets_refuse_without_writing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = signed_store(dir.path()).await;
    let master = omni_of(None, "bob");
    let refused = store.login(login(master, "k", Registration::Closed)).await;
    assert!(matches!(
        refused,
        Err(WriteError::Rejected(LoginError::RegistrationClosed))
    ));
    let refused = store
        .login(login(master, "k", Registration::Allowlist))
        .await;
    assert!(matches!(
        refused,
        Err(WriteError::Rejected(LoginError::RegistrationClosed))
    ));
    assert!(store.store().actor(&master).expect("read").is_none());
    let entry = format!("0x{}", "ab".repeat(20));
    store
        .set_allowed(SetAllowed {
            entry: entry.clone(),
            allowed: true,
            at: T0,
        })
        .await
        .expect("allowed");
    assert_eq!(store.allowlist().expect("list"), [entry]);
    store
        .login(login(master, "k", Registration::Allowlist))
        .await
        .expect("allow-listed identity registers");
    // The master's own managed wallet ([0x11; 20]) may never sign a login.
    assert!(store.is_managed_wallet(&[0x11; 20]).expect("read"));
    let mut by_managed = login(omni_of(None, "carol"), "k2", Registration::Open);
    by_managed.signer = Some([0x11; 20]);
    assert!(matches!(
        store.login(by_managed).await,
        Err(WriteError::Rejected(LoginError::ManagedWallet))
    ));
    assert!(
        store
            .store()
            .actor(&omni_of(None, "carol"))
            .expect("read")
            .is_none()
    );
}

#[tokio::test]
async fn revocation_and_deletion_kill_bindings_for_refresh() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = signed_store(dir.path()).await;
    let master = omni_of(None, "dave");
    let a = store
        .login(login(master, "key-a", Registration::Open))
        .await
        .expect("login a");
    let b = store
        .login(login(master, "key-b", Registration::Open))
        .await
        .expect("login b");
    let refresh = |bid: u64, jkt: &str| RefreshSession {
        omni: master,
        bid,
        jkt: jkt.into(),
        request_id: "r".into(),
        at: at(1_000),
    };
    let used = store
        .refresh_session(refresh(a.binding.bid, "key-a"))
        .await
        .expect("live binding refreshes");
    assert_eq!(used.binding.last_used, at(1_000));
    assert!(matches!(
        store.refresh_session(refresh(a.binding.bid, "key-b")).await,
        Err(WriteError::Rejected(BindingError::WrongKey))
    ));
    store
        .delete_device(DeleteDevice {
            omni: master,
            bid: a.binding.bid,
            origin: Origin::default(),
            at: at(2_000),
        })
        .await
        .expect("deleted");
    assert!(matches!(
        store.refresh_session(refresh(a.binding.bid, "key-a")).await,
        Err(WriteError::Rejected(BindingError::Tombstoned))
    ));
    // Logging in again with key a gets a new binding id: old tokens stay dead.
    let again = store
        .login(login(master, "key-a", Registration::Open))
        .await
        .expect("relogin");
    assert!(again.new_binding && again.binding.bid != a.binding.bid);
    let revoked = store
        .store()
        .submit(Revoke(RevokeActor {
            omni: master,
            at: at(3_000),
            origin: Origin::default(),
        }))
        .await
        .expect("revoked");
    assert_eq!(revoked.bindings_tombstoned, 2);
    assert!(
        store
            .devices(&master)
            .expect("devices")
            .iter()
            .all(|d| !d.is_live())
    );
    assert!(matches!(
        store.refresh_session(refresh(b.binding.bid, "key-b")).await,
        Err(WriteError::Rejected(BindingError::Revoked { .. }))
    ));
    assert!(matches!(
        store
            .login(login(master, "key-c", Registration::Open))
            .await,
        Err(WriteError::Rejected(LoginError::Revoked { .. }))
    ));
    let report = store.verify_audit(&check, &[]).expect("verify");
    assert!(report.problems.is_empty(), "{:?}", report.problems);
}

const AUDIT: TableDefinition<u64, &[u8]> = TableDefinition::new("audit");
const AUDIT_HEADS: TableDefinition<&[u8; 32], &[u8]> = TableDefinition::new("audit_heads");

/// Writes a store with two masters' chains, closes it, returns its path and the marks.
async fn written_store(dir: &Path) -> (std::path::PathBuf, Vec<ChainMark>) {
    let store = signed_store(dir).await;
    for (i, name) in ["erin", "frank"].into_iter().enumerate() {
        for key in ["k1", "k2", "k3"] {
            let mut op = login(omni_of(None, name), key, Registration::Open);
            op.wallet = [u8::try_from(i).expect("small"); 20];
            store.login(op).await.expect("login");
        }
    }
    let report = store.verify_audit(&check, &[]).expect("verify");
    assert!(report.problems.is_empty(), "{:?}", report.problems);
    store.store().close();
    (dir.join("agentkeys.redb"), report.marks)
}

fn edit(path: &Path, f: impl FnOnce(&redb::WriteTransaction)) {
    let db = redb::Database::open(path).expect("open the file directly");
    let txn = db.begin_write().expect("write");
    f(&txn);
    txn.commit().expect("commit");
}

fn problems(path: &Path, marks: &[ChainMark]) -> Vec<String> {
    Ledger::verify_file(path, &check, marks)
        .expect("verify")
        .problems
}

#[tokio::test]
async fn verify_detects_a_modified_row() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (path, marks) = written_store(dir.path()).await;
    assert!(problems(&path, &marks).is_empty());
    edit(&path, |txn| {
        let mut rows = txn.open_table(AUDIT).expect("table");
        let mut row = rows.get(3).expect("get").expect("row 3").value().to_vec();
        // The request id's last byte: a plausible, well-formed edit.
        let at = row.len() - 33;
        row[at] ^= 0x01;
        rows.insert(3, row.as_slice()).expect("insert");
    });
    let found = problems(&path, &marks);
    assert!(
        found.iter().any(|p| p.contains("was modified")),
        "{found:?}"
    );
}

#[tokio::test]
async fn verify_detects_a_deleted_row() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (path, marks) = written_store(dir.path()).await;
    edit(&path, |txn| {
        txn.open_table(AUDIT)
            .expect("table")
            .remove(2)
            .expect("remove");
    });
    let found = problems(&path, &marks);
    assert!(found.iter().any(|p| p.contains("deleted")), "{found:?}");
}

#[tokio::test]
async fn verify_detects_truncation_even_with_an_older_valid_head() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = signed_store(dir.path()).await;
    let master = omni_of(None, "grace");
    store
        .login(login(master, "k1", Registration::Open))
        .await
        .expect("login");
    // Keep the validly signed head of a 3-row chain, as an attacker could.
    store.settle_audit_heads(None).await.expect("settled");
    let old_head = read_head(&store, &master);
    store
        .login(login(master, "k2", Registration::Open))
        .await
        .expect("login");
    let marks = store.verify_audit(&check, &[]).expect("verify").marks;
    store.store().close();
    let path = dir.path().join("agentkeys.redb");
    edit(&path, |txn| {
        let mut rows = txn.open_table(AUDIT).expect("rows");
        let mut chain = txn
            .open_table::<(&[u8; 32], u64), u64>(TableDefinition::new("audit_chain"))
            .expect("chain");
        for seq in 4..=5 {
            rows.remove(seq).expect("remove row");
            chain
                .remove((master.as_bytes(), seq))
                .expect("remove index");
        }
        txn.open_table(AUDIT_HEADS)
            .expect("heads")
            .insert(master.as_bytes(), old_head.as_slice())
            .expect("restore old head");
    });
    // Without memory of the last run the cut is self-consistent...
    assert!(problems(&path, &[]).is_empty());
    // ...but against the marks of the last verified run it is caught.
    let found = problems(&path, &marks);
    assert!(found.iter().any(|p| p.contains("truncated")), "{found:?}");
}

fn read_head(store: &Ledger, master: &Omni) -> Vec<u8> {
    let head = store.audit_head(master).expect("read").expect("head");
    assert_eq!(head.length, 3);
    assert!(head.is_signed());
    head.encode()
}

#[test]
fn rows_round_trip_through_the_pinned_encoding() {
    let entry = audit::AuditEntry {
        master: omni_of(None, "m"),
        origin: Origin {
            actor: Some(omni_of(None, "a")),
            request_id: "abc".into(),
        },
        op: audit::op::SIGN_EIP191,
        target: None,
        outcome: audit::outcome::OK,
        detail: [7; 32],
        at: T0,
        spend: Vec::new(),
    };
    let encoding = entry.encode(9, 4);
    assert_eq!(encoding[0], 1, "version byte");
    assert_eq!(&encoding[1..9], &9u64.to_be_bytes());
    let hash = audit::detail_hash(&[[0u8; 32].as_slice(), &encoding].concat());
    let stored = [encoding.as_slice(), &hash].concat();
    let row = audit::AuditRow::decode(&stored).expect("decodes");
    assert_eq!((row.seq, row.chain_seq), (9, 4));
    assert_eq!(row.entry, entry);
    assert_eq!(row.compute_hash(&[0; 32]), hash);
    assert!(audit::AuditRow::decode(&stored[..stored.len() - 1]).is_err());

    // A row with a spend is version 2 and keeps it.
    let spent = audit::AuditEntry {
        spend: vec![
            agentkeys_actors::policy::Spend {
                asset: agentkeys_actors::policy::Asset::Native,
                chain: 1,
                amount: 21_000,
            },
            agentkeys_actors::policy::Spend {
                asset: agentkeys_actors::policy::Asset::Token([0xab; 20]),
                chain: 8453,
                amount: u128::MAX,
            },
        ],
        ..entry
    };
    let encoding = spent.encode(10, 5);
    assert_eq!(encoding[0], 2, "version byte");
    let stored = [encoding.as_slice(), &[0u8; 32]].concat();
    assert_eq!(
        audit::AuditRow::decode(&stored).expect("decodes").entry,
        spent
    );
}

/// Every head the store holds, as (master, kid).
fn head_kids(store: &Ledger, masters: &[Omni]) -> Vec<String> {
    masters
        .iter()
        .map(|m| store.audit_head(m).expect("read").expect("head").kid)
        .collect()
}

/// Logins of `masters` × `keys`, submitted at once so the writer folds them into batches.
async fn concurrent_logins(store: &Ledger, masters: &[Omni], keys: usize) {
    let mut tasks = Vec::new();
    for (i, master) in masters.iter().enumerate() {
        for k in 0..keys {
            let mut op = login(*master, &format!("key-{i}-{k}"), Registration::Open);
            let n = u8::try_from(i).expect("small");
            op.wallet = [n; 20];
            op.signer = Some([0xa0 + n; 20]);
            op.identity = ("evm".into(), format!("0x{}", hex::encode([0xa0 + n; 20])));
            let store = store.clone();
            tasks.push(tokio::spawn(async move { store.login(op).await }));
        }
    }
    for task in tasks {
        task.await.expect("joined").expect("login");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rows_appended_in_one_batch_chain_up_and_each_head_is_signed_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = signed_store(dir.path()).await;
    let masters: Vec<Omni> = ["gina", "hal", "ivy"]
        .into_iter()
        .map(|n| omni_of(None, n))
        .collect();
    concurrent_logins(&store, &masters, 40).await;
    let counts = store.store().writer_counts();
    assert!(
        counts.commits < counts.writes,
        "the logins shared batches: {counts:?}"
    );
    let report = store.verify_audit(&check, &[]).expect("verify");
    assert!(report.problems.is_empty(), "{:?}", report.problems);
    assert_eq!(report.chains, 3);
    // The first login of a master writes 3 rows (create, device, login), every other one 2
    // (device, login).
    assert_eq!(report.rows, 3 * (3 + 39 * 2));
    store.settle_audit_heads(None).await.expect("settled");
    assert_eq!(head_kids(&store, &masters), vec!["test"; 3]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batches_without_a_signer_leave_heads_unsigned_until_one_runs_with_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = unsigned_store(dir.path());
    let masters = [omni_of(None, "jo"), omni_of(None, "kim")];
    concurrent_logins(&store, &masters, 10).await;
    assert_eq!(head_kids(&store, &masters), vec![String::new(); 2]);
    // Unsigned heads are pending, not problems; the chains are whole.
    let report = store.verify_audit(&check, &[]).expect("verify");
    assert!(report.problems.is_empty(), "{:?}", report.problems);
    assert_eq!(report.rows, 2 * (3 + 9 * 2));

    store
        .set_head_signer(Arc::new(TestSigner))
        .await
        .expect("signer installed");
    assert_eq!(head_kids(&store, &masters), vec!["test"; 2]);
    let report = store.verify_audit(&check, &[]).expect("verify");
    assert!(report.problems.is_empty(), "{:?}", report.problems);
}

#[tokio::test]
async fn a_commit_wakes_the_streams_of_its_own_masters_only() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = signed_store(dir.path()).await;
    let (lee, max) = (omni_of(None, "lee"), omni_of(None, "max"));
    let mut watch_lee = store.audit_watch(lee);
    let mut watch_max = store.audit_watch(max);
    let mut op = login(lee, "key-lee", Registration::Open);
    op.wallet = [7; 20];
    store.login(op).await.expect("login");
    assert!(watch_lee.has_changed().expect("open"), "lee's rows are new");
    assert!(
        !watch_max.has_changed().expect("open"),
        "max has no new rows"
    );
    watch_lee.mark_unchanged();

    // A reader that goes away stops costing anything; the others still wake.
    drop(watch_lee);
    let mut op = login(max, "key-max", Registration::Open);
    op.wallet = [8; 20];
    op.signer = Some([0xcd; 20]);
    op.identity = ("evm".into(), format!("0x{}", "cd".repeat(20)));
    store.login(op).await.expect("login");
    assert!(watch_max.has_changed().expect("open"));
    watch_max.mark_unchanged();
    let mut op = login(lee, "key-lee-2", Registration::Open);
    op.wallet = [7; 20];
    store.login(op).await.expect("login");
    assert!(!watch_max.has_changed().expect("open"));
}

/// Signs like [`TestSigner`] only while allowed; otherwise fails (and so fails its batch).
struct GatedSigner(std::sync::atomic::AtomicBool);

impl HeadSigner for GatedSigner {
    fn sign_head(&self, message: &[u8]) -> Result<(String, Vec<u8>), String> {
        if self.0.load(std::sync::atomic::Ordering::SeqCst) {
            TestSigner.sign_head(message)
        } else {
            Err("signing is not allowed now".into())
        }
    }
}

#[tokio::test]
async fn a_revocation_commits_even_while_the_signer_refuses_and_settling_signs_its_head_later() {
    let dir = tempfile::tempdir().expect("tempdir");
    let signer = Arc::new(GatedSigner(std::sync::atomic::AtomicBool::new(true)));
    let store = store_signed_by(dir.path(), signer.clone()).await;
    let master = omni_of(None, "lou");
    store
        .login(login(master, "key-l", Registration::Open))
        .await
        .expect("login");
    // Were the revocation's batch to sign its head, the signer's refusal would fail it.
    signer.0.store(false, std::sync::atomic::Ordering::SeqCst);
    let revoked = store
        .store()
        .submit_urgent(Revoke(RevokeActor {
            omni: master,
            at: at(1_000),
            origin: Origin::default(),
        }))
        .await
        .expect("the urgent batch commits without a signature");
    assert!(revoked.new);
    // Its head's signature, asked for after the commit, was refused: the head is pending,
    // still carrying the login's signature of the earlier state, and nothing is wrong.
    store.store().flush().await.expect("flushed");
    let head = store.audit_head(&master).expect("read").expect("head");
    assert!(!head.is_signed());
    assert!(check(&head.kid, &head.signed_message(), &head.signature));
    let report = store.verify_audit(&check, &[]).expect("verify");
    assert!(report.problems.is_empty(), "{:?}", report.problems);
    // Once the signer signs again, settling signs the end.
    signer.0.store(true, std::sync::atomic::Ordering::SeqCst);
    store.settle_audit_heads(None).await.expect("settled");
    let head = store.audit_head(&master).expect("read").expect("head");
    assert!(head.is_signed());
    assert!(check(&head.kid, &head.message(), &head.signature));
    let report = store.verify_audit(&check, &[]).expect("verify");
    assert!(report.problems.is_empty(), "{:?}", report.problems);
}

/// Holds every asynchronous signature request until the test releases it, then signs like
/// [`TestSigner`]: the writer's batches must not wait for it.
#[derive(Default)]
struct HeldSigner(std::sync::Mutex<Vec<(Vec<Vec<u8>>, audit::HeadsSigned)>>);

impl HeadSigner for HeldSigner {
    fn sign_head(&self, message: &[u8]) -> Result<(String, Vec<u8>), String> {
        TestSigner.sign_head(message)
    }

    fn sign_heads_then(&self, messages: Vec<Vec<u8>>, done: audit::HeadsSigned) {
        self.0.lock().expect("lock").push((messages, done));
    }
}

impl HeldSigner {
    /// Answers the oldest `n` held requests (at most); answers how many there were.
    fn release(&self, n: usize) -> usize {
        let held: Vec<_> = {
            let mut all = self.0.lock().expect("lock");
            let n = n.min(all.len());
            all.drain(..n).collect()
        };
        let count = held.len();
        for (messages, done) in held {
            done(messages.iter().map(|m| TestSigner.sign_head(m)).collect());
        }
        count
    }
}

#[tokio::test]
async fn commits_do_not_wait_for_head_signatures_and_an_earlier_signed_state_verifies() {
    let dir = tempfile::tempdir().expect("tempdir");
    let signer = Arc::new(HeldSigner::default());
    let store = store_signed_by(dir.path(), signer.clone()).await;
    let master = omni_of(None, "mia");
    // Both logins commit while their heads' signatures are held.
    store
        .login(login(master, "key-1", Registration::Open))
        .await
        .expect("login");
    let first = store.audit_head(&master).expect("read").expect("head");
    assert_eq!((first.length, first.signature.len()), (3, 0));
    store
        .login(login(master, "key-2", Registration::Open))
        .await
        .expect("the next batch commits without the earlier signature");
    let report = store.verify_audit(&check, &[]).expect("verify");
    assert!(
        report.problems.is_empty(),
        "pending, not problems: {:?}",
        report.problems
    );
    // The first head's signature arrives late; the next batch stores it as the signed earlier
    // state of a chain that has moved on.
    assert_eq!(signer.release(1), 1);
    store.store().flush().await.expect("flushed");
    let head = store.audit_head(&master).expect("read").expect("head");
    assert_eq!(head.length, 5);
    assert!(!head.is_signed());
    assert_eq!(head.signed_state(), first.state());
    assert!(check(&head.kid, &head.signed_message(), &head.signature));
    let report = store.verify_audit(&check, &[]).expect("verify");
    assert!(report.problems.is_empty(), "{:?}", report.problems);
    // The second arrives while nothing else is written: the writer stores it by itself (an
    // empty batch a few milliseconds later), and the end is signed.
    let commits = store.store().writer_counts().commits;
    assert_eq!(signer.release(1), 1);
    // The writer counts a commit just after it is visible (on PostgreSQL a reader can see the
    // signed head first): wait for both.
    let stored = || {
        store.store().writer_counts().commits > commits
            && store
                .audit_head(&master)
                .expect("read")
                .is_some_and(|h| h.is_signed())
    };
    assert!(agentkeys_tests::wait_until(stored, std::time::Duration::from_secs(10)).await);
    assert_eq!(store.store().writer_counts().commits, commits + 1);
    let head = store.audit_head(&master).expect("read").expect("head");
    assert!(check(&head.kid, &head.message(), &head.signature));
}

/// A head whose signed earlier state the chain never went through (redb only: the file is
/// edited directly).
#[tokio::test]
async fn verify_detects_a_signed_state_the_chain_never_went_through() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = signed_store(dir.path()).await;
    let master = omni_of(None, "pia");
    store
        .login(login(master, "key-1", Registration::Open))
        .await
        .expect("login");
    store.settle_audit_heads(None).await.expect("settled");
    let head = store.audit_head(&master).expect("read").expect("head");
    let forged = audit::HeadState {
        length: 2,
        hash: [0xee; 32],
        seq: 2,
    };
    let mut bad = head.clone();
    bad.signed = Some(forged);
    bad.signature = TestSigner
        .sign_head(&forged.message(&master))
        .expect("sign")
        .1;
    store.store().close();
    let path = dir.path().join("agentkeys.redb");
    assert!(problems(&path, &[]).is_empty());
    edit(&path, |txn| {
        txn.open_table(AUDIT_HEADS)
            .expect("heads")
            .insert(master.as_bytes(), bad.encode().as_slice())
            .expect("forge");
    });
    let found = problems(&path, &[]);
    assert!(
        found.iter().any(|p| p.contains("not a state of the chain")),
        "{found:?}"
    );
}

#[tokio::test]
async fn settling_signs_and_stores_the_pending_heads_asked_for() {
    let dir = tempfile::tempdir().expect("tempdir");
    let signer = Arc::new(HeldSigner::default());
    let store = store_signed_by(dir.path(), signer.clone()).await;
    let (ned, ola) = (omni_of(None, "ned"), omni_of(None, "ola"));
    for (i, master) in [ned, ola].into_iter().enumerate() {
        let n = u8::try_from(i).expect("small") + 1;
        let mut op = login(master, "key-1", Registration::Open);
        op.wallet = [n; 20];
        op.signer = Some([0xb0 + n; 20]);
        op.identity = ("evm".into(), format!("0x{}", hex::encode([0xb0 + n; 20])));
        store.login(op).await.expect("login");
    }
    let signed = |m: &Omni| store.audit_head(m).expect("read").expect("head");
    // The held asynchronous requests never answer; settling one master signs its head in the
    // batch itself, and only its head.
    store.settle_audit_heads(Some(ned)).await.expect("settled");
    let head = signed(&ned);
    assert!(head.is_signed());
    assert!(check(&head.kid, &head.message(), &head.signature));
    assert!(!signed(&ola).is_signed());
    // Settling everything signs the rest.
    store.settle_audit_heads(None).await.expect("settled");
    assert!(signed(&ola).is_signed());
    // Late answers for the same states change nothing.
    assert_eq!(signer.release(2), 2);
    store.store().flush().await.expect("flushed");
    assert_eq!(signed(&ned), head);
    let report = store.verify_audit(&check, &[]).expect("verify");
    assert!(report.problems.is_empty(), "{:?}", report.problems);
}
