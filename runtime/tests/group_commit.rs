//! Group commit: batching, per-write conditions inside a batch, whole-batch failure, durability.

mod kit;

use std::convert::Infallible;
use std::sync::mpsc;

use agentkeys_runtime::Timestamp;
use agentkeys_runtime::store::WriteTransaction;
use agentkeys_runtime::store::{
    CreateError, MAX_BATCH, Mutation, Origin, RevokeActor, Store, StoreError, StoreOptions,
    WriteError,
};
use kit::{create, hold_writer, omni_of, open_store};

/// Fails in `apply`, as an I/O error would.
struct FailingWrite;

impl Mutation for FailingWrite {
    type Plan = ();
    type Output = ();
    type Rejection = Infallible;

    fn check(self, _view: &WriteTransaction) -> Result<Result<(), Infallible>, StoreError> {
        Ok(Ok(()))
    }

    fn apply(_plan: (), _txn: &WriteTransaction) -> Result<(), StoreError> {
        Err(StoreError::Corrupt("injected write failure".into()))
    }
}

#[tokio::test]
async fn concurrent_writers_share_commits_and_are_durable() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open_store(dir.path());
    let master = new_master(&store, "gc-master").await;

    let before = store.writer_counts();
    let (release, gate) = hold_writer(&store);
    let pending: Vec<_> = (0..64)
        .map(|i| store.create_actor(create(Some(&master), &format!("w{i}"))))
        .collect();
    release.send(()).expect("release");
    gate.await;
    let tasks: Vec<_> = pending.into_iter().map(tokio::spawn).collect();
    for task in tasks {
        let created = task.await.expect("joined").expect("committed");
        assert!(created.new);
    }
    let after = store.writer_counts();
    let commits = after.commits - before.commits;
    assert!(commits < 64, "64 writes took {commits} commits");
    assert!(commits <= 2, "gate + one batch expected, got {commits}");

    store.close();
    drop(store);
    let reopened = open_store(dir.path());
    let children = reopened.children(&master, None, 1000).expect("read");
    assert_eq!(
        children.len(),
        64,
        "every acknowledged write survives a reopen"
    );
}

/// A store whose batches wait up to a minute for announced writes: long enough that a test
/// never depends on the machine's speed.
fn open_lingering(dir: &std::path::Path) -> std::sync::Arc<Store> {
    let options = StoreOptions {
        linger: std::time::Duration::from_secs(60),
        ..StoreOptions::default()
    };
    std::sync::Arc::new(
        Store::open(&dir.join("agentkeys.redb"), &options, kit::T0).expect("store opens"),
    )
}

#[tokio::test]
async fn a_batch_waits_for_an_announced_write_and_commits_it_with_the_others() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open_lingering(dir.path());
    let master = new_master(&store, "announce-master").await;

    let (release, gate) = hold_writer(&store);
    let before = store.writer_counts();
    let announced = store.announce();
    let early = store.create_actor(create(Some(&master), "early"));
    release.send(()).expect("release");
    gate.await;
    // The writer holds `early` and waits for the announced write (a minute at most).
    let late = store.submit_announced(create(Some(&master), "late"), Some(&announced));
    assert_eq!(
        store.announced_writes(),
        0,
        "submitting ends the announcement"
    );
    assert!(early.await.expect("early commits").new);
    assert!(late.await.expect("late commits").new);
    assert_eq!(
        store.writer_counts().commits - before.commits,
        2,
        "the gate's batch, then one batch holding the early write and the announced one"
    );
}

#[tokio::test]
async fn a_lone_announced_write_does_not_wait_for_itself() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open_lingering(dir.path());
    let announced = store.announce();
    let write = store.submit_announced(create(None, "alone"), Some(&announced));
    // With a one-minute linger, only an announcement that outlived its submission could make
    // this take long.
    let created = tokio::time::timeout(std::time::Duration::from_secs(30), write)
        .await
        .expect("answered without lingering")
        .expect("commits");
    assert!(created.new);
}

#[tokio::test]
async fn a_batch_stops_waiting_when_the_announced_write_is_withdrawn() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open_lingering(dir.path());
    let (release, gate) = hold_writer(&store);
    let announced = store.announce();
    let write = store.create_actor(create(None, "waiting"));
    release.send(()).expect("release");
    gate.await;
    // The writer holds the write and waits for the announced one (a minute at most); the
    // request that announced it fails instead.
    drop(announced);
    let created = tokio::time::timeout(std::time::Duration::from_secs(30), write)
        .await
        .expect("committed without waiting out the linger")
        .expect("commits");
    assert!(created.new);
}

/// Writes of a lingering batch do not wake the writer one by one (it parks); what ends the
/// wait must still wake it at once. Each case below would otherwise sit out the one-minute
/// linger.
#[tokio::test]
async fn a_lingering_batch_ends_when_it_holds_as_many_writes_as_the_one_before() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open_lingering(dir.path());
    let master = new_master(&store, "bell-master").await;
    one_batch_of_children(&store, &master, "a", 8).await;
    // No announcement outstanding: the next batch waits for eight writes (the previous batch's
    // size), and the eighth ends the wait.
    let before = store.writer_counts();
    let second: Vec<_> = (0..8)
        .map(|i| store.create_actor(create(Some(&master), &format!("b{i}"))))
        .collect();
    let answered = tokio::time::timeout(std::time::Duration::from_secs(30), answers(second))
        .await
        .expect("the eighth write ended the linger");
    assert!(answered.into_iter().all(|a| a.expect("committed").new));
    assert_eq!(store.writer_counts().commits - before.commits, 1);
}

#[tokio::test]
async fn writes_joining_a_lingering_batch_do_not_wake_the_writer_one_by_one() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open_lingering(dir.path());
    let master = new_master(&store, "quiet-master").await;
    let (release, gate) = hold_writer(&store);
    let announced = store.announce();
    let first = store.create_actor(create(Some(&master), "first"));
    release.send(()).expect("release");
    gate.await;
    // The writer holds `first` and lingers for the announced write; a hundred more join.
    let before = store.writer_counts();
    let joining: Vec<_> = (0..100)
        .map(|i| store.create_actor(create(Some(&master), &format!("j{i}"))))
        .collect();
    let last = store.submit_announced(create(Some(&master), "last"), Some(&announced));
    assert!(first.await.expect("first").new);
    assert!(
        answers(joining)
            .await
            .into_iter()
            .all(|a| a.expect("joined").new)
    );
    assert!(last.await.expect("last").new);
    let after = store.writer_counts();
    assert_eq!(
        after.commits - before.commits,
        1,
        "one batch for all of them"
    );
    assert!(
        after.linger_looks - before.linger_looks <= 3,
        "looked {} times for 101 writes",
        after.linger_looks - before.linger_looks
    );
}

#[tokio::test]
async fn an_urgent_write_ends_a_linger_that_waits_for_an_announced_write() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open_lingering(dir.path());
    let master = new_master(&store, "urgent-master").await;
    store
        .create_actor(create(Some(&master), "existing"))
        .await
        .expect("child");
    let (release, gate) = hold_writer(&store);
    let announced = store.announce();
    let waiting = store.create_actor(create(Some(&master), "waiting"));
    release.send(()).expect("release");
    gate.await;
    // The writer holds `waiting` and lingers for the announced write; the revocation goes
    // first, at once.
    let revoke = store.revoke_actor(RevokeActor {
        omni: omni_of(Some(&master), "existing"),
        at: Timestamp::from_millis(5),
        origin: Origin::default(),
    });
    let revoked = tokio::time::timeout(std::time::Duration::from_secs(30), revoke)
        .await
        .expect("the urgent write did not wait out the linger");
    assert!(revoked.expect("revoked").new);
    drop(announced);
    assert!(waiting.await.expect("commits").new);
}

#[tokio::test]
async fn a_full_batch_commits_while_announced_writes_are_outstanding() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open_lingering(dir.path());
    let master = new_master(&store, "full-master").await;
    let announced = store.announce();
    let before = store.writer_counts();
    let writes: Vec<_> = (0..MAX_BATCH)
        .map(|i| store.create_actor(create(Some(&master), &format!("f{i}"))))
        .collect();
    let answered = tokio::time::timeout(std::time::Duration::from_secs(30), answers(writes))
        .await
        .expect("a full batch does not wait for the announced write");
    assert!(answered.into_iter().all(|a| a.expect("committed").new));
    assert_eq!(
        store.writer_counts().commits - before.commits,
        1,
        "the writes fill one batch, which commits without the announced write"
    );
    drop(announced);
}

/// A master, created and committed.
async fn new_master(store: &Store, label: &str) -> agentkeys_runtime::Omni {
    store
        .create_actor(create(None, label))
        .await
        .expect("master");
    omni_of(None, label)
}

/// `n` children of `master` (labels `prefix0`…), queued behind a held writer so that they
/// commit in one batch (the previous batch's size for the next one), all answered.
async fn one_batch_of_children(
    store: &Store,
    master: &agentkeys_runtime::Omni,
    prefix: &str,
    n: usize,
) {
    let (release, gate) = hold_writer(store);
    let pending: Vec<_> = (0..n)
        .map(|i| store.create_actor(create(Some(master), &format!("{prefix}{i}"))))
        .collect();
    release.send(()).expect("release");
    gate.await;
    for write in answers(pending).await {
        assert!(write.expect("committed").new);
    }
}

/// Every answer, in order (the writes were submitted when the futures were made).
async fn answers<F: std::future::Future>(futures: Vec<F>) -> Vec<F::Output> {
    let mut out = Vec::with_capacity(futures.len());
    for f in futures {
        out.push(f.await);
    }
    out
}

#[tokio::test]
async fn an_announcement_ends_once_whether_submitted_or_dropped() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open_store(dir.path());
    let first = store.announce();
    let copy = first.clone();
    let second = store.announce();
    assert_eq!(store.announced_writes(), 2, "clones share one announcement");
    drop(first);
    assert_eq!(store.announced_writes(), 2, "a clone still holds it");
    drop(copy);
    assert_eq!(store.announced_writes(), 1, "withdrawn with its last clone");
    second.end();
    second.end();
    drop(second);
    assert_eq!(store.announced_writes(), 0, "ended exactly once");
}

#[tokio::test]
async fn a_conflict_inside_one_batch_fails_only_its_own_write() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open_store(dir.path());
    let master = new_master(&store, "conflict-master").await;

    let (release, gate) = hold_writer(&store);
    let before = store.writer_counts();
    let first = store.create_actor(create(Some(&master), "x"));
    // Same (parent, label), another omni: must lose against the first inside the batch.
    let mut rival = create(Some(&master), "x");
    rival.omni = omni_of(Some(&master), "x-rival");
    let second = store.create_actor(rival);
    let other = store.create_actor(create(Some(&master), "y"));
    release.send(()).expect("release");
    gate.await;

    assert!(first.await.expect("first wins").new);
    assert!(matches!(
        second.await,
        Err(WriteError::Rejected(CreateError::LabelTaken))
    ));
    assert!(other.await.expect("unrelated write commits").new);
    let commits = store.writer_counts().commits - before.commits;
    assert_eq!(
        commits, 2,
        "the gate's batch and one batch for the three writes"
    );
    let labels: Vec<_> = store
        .children(&master, None, 10)
        .expect("read")
        .into_iter()
        .map(|c| (c.label, c.omni))
        .collect();
    assert_eq!(
        labels,
        vec![
            ("x".to_string(), omni_of(Some(&master), "x")),
            ("y".to_string(), omni_of(Some(&master), "y")),
        ]
    );
}

#[tokio::test]
async fn a_failed_write_fails_the_whole_batch_and_writes_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open_store(dir.path());
    let master = new_master(&store, "fail-master").await;

    let (release, gate) = hold_writer(&store);
    let a = store.create_actor(create(Some(&master), "a"));
    let failing = store.submit(FailingWrite);
    let b = store.create_actor(create(Some(&master), "b"));
    release.send(()).expect("release");
    gate.await;

    assert!(matches!(a.await, Err(WriteError::Store(_))));
    assert!(matches!(failing.await, Err(WriteError::Store(_))));
    assert!(matches!(b.await, Err(WriteError::Store(_))));
    assert!(store.children(&master, None, 10).expect("read").is_empty());
    assert_eq!(store.writer_counts().failed_batches, 1);

    // The writer keeps serving after a failed batch.
    assert!(
        store
            .create_actor(create(Some(&master), "a"))
            .await
            .expect("retry")
            .new
    );
}

#[tokio::test]
async fn writes_after_close_fail_with_closed_and_dropped_futures_still_commit() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open_store(dir.path());
    let master = omni_of(None, "close-master");
    // Submitted and never awaited: the write still happens.
    drop(store.create_actor(create(None, "close-master")));
    store.close();
    assert!(matches!(
        store.create_actor(create(Some(&master), "late")).await,
        Err(WriteError::Store(StoreError::Closed))
    ));
    drop(store);
    let reopened = open_store(dir.path());
    assert!(reopened.actor(&master).expect("read").is_some());
}

#[tokio::test]
async fn a_lone_write_after_a_large_batch_still_commits_on_its_own() {
    // After a large batch the writer lingers (adaptive group commit) for more writes; a write
    // that gets no company must still be committed, once the short wait runs out.
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open_store(dir.path());
    let master = new_master(&store, "linger-master").await;
    one_batch_of_children(&store, &master, "l", 32).await;
    let before = store.writer_counts();
    let lone = store
        .create_actor(create(Some(&master), "alone"))
        .await
        .expect("the lone write commits");
    assert!(lone.new);
    assert_eq!(store.writer_counts().commits - before.commits, 1);
}

#[tokio::test]
async fn a_revocation_goes_ahead_of_queued_writes_in_a_batch_of_its_own() {
    // The urgent lane: a revocation submitted after ordinary writes already queued commits
    // first, alone; so a child create queued before it sees the revoked parent.
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open_store(dir.path());
    let master = new_master(&store, "lane-master").await;
    let (release, gate) = hold_writer(&store);
    let queued: Vec<_> = (0..16)
        .map(|i| store.create_actor(create(Some(&master), &format!("q{i}"))))
        .collect();
    let revoke = store.revoke_actor(RevokeActor {
        omni: master,
        at: Timestamp::from_millis(5),
        origin: Origin::default(),
    });
    let before = store.writer_counts();
    release.send(()).expect("release");
    gate.await;
    let (revoked, revoked_at) = revoke.answered_at().await;
    assert!(revoked.expect("revoked").new);
    let mut last_create = revoked_at;
    for write in queued {
        let (answer, at) = write.answered_at().await;
        assert!(
            matches!(
                answer,
                Err(WriteError::Rejected(CreateError::ParentRevoked { .. }))
            ),
            "a create queued before the revocation must commit after it: {answer:?}"
        );
        assert!(at >= revoked_at);
        last_create = last_create.max(at);
    }
    assert!(
        last_create > revoked_at,
        "the creates had a batch of their own"
    );
    // The gate's batch, the revocation alone, then the queued creates.
    assert_eq!(store.writer_counts().commits - before.commits, 3);
}

/// A hook that puts work off after every commit and reports when it does it.
struct PuttingOff {
    due: std::sync::Mutex<Option<std::time::Instant>>,
    ticked: std::sync::Mutex<mpsc::Sender<()>>,
}

impl agentkeys_runtime::store::BatchHook for PuttingOff {
    fn committed(&self) {
        *self.due.lock().expect("due") =
            Some(std::time::Instant::now() + std::time::Duration::from_millis(1));
    }

    fn due(&self) -> Option<std::time::Instant> {
        *self.due.lock().expect("due")
    }

    fn tick(&self) {
        let due = self.due.lock().expect("due").take();
        assert!(
            due.is_some_and(|due| due <= std::time::Instant::now()),
            "ticked early"
        );
        let _ = self.ticked.lock().expect("ticked").send(());
    }
}

/// A hook whose work, started after every commit, runs until the test says it is done.
struct BusyAfterCommit {
    busy: std::sync::atomic::AtomicBool,
}

impl agentkeys_runtime::store::BatchHook for BusyAfterCommit {
    fn committed(&self) {
        self.busy.store(true, std::sync::atomic::Ordering::SeqCst);
    }

    fn busy(&self) -> bool {
        self.busy.load(std::sync::atomic::Ordering::SeqCst)
    }
}

#[tokio::test]
async fn a_batch_waiting_for_the_hook_sleeps_instead_of_spinning() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open_store(dir.path());
    let hook = std::sync::Arc::new(BusyAfterCommit {
        busy: std::sync::atomic::AtomicBool::new(false),
    });
    assert!(store.set_batch_hook(hook.clone()));
    store
        .create_actor(create(None, "hook-master"))
        .await
        .expect("committed");
    // The hook is busy now and never says it is done: the next batch waits for it (HOOK_WAIT
    // at most), with no announcement outstanding and a lone write queued.
    let before = store.writer_counts();
    let write = store.create_actor(create(None, "after-hook"));
    assert!(write.await.expect("committed after the wait").new);
    let looks = store.writer_counts().linger_looks - before.linger_looks;
    assert!(
        (1..=3).contains(&looks),
        "the writer looked {looks} times while it waited for the hook"
    );
}

#[tokio::test]
async fn work_a_hook_put_off_runs_when_due_without_a_batch_of_its_own() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open_store(dir.path());
    let (ticked_tx, ticked) = mpsc::channel();
    let hook = std::sync::Arc::new(PuttingOff {
        due: std::sync::Mutex::new(None),
        ticked: std::sync::Mutex::new(ticked_tx),
    });
    assert!(store.set_batch_hook(hook.clone()));
    store
        .create_actor(create(None, "putting-off"))
        .await
        .expect("committed");
    let before = store.writer_counts();
    // The idle writer calls `tick` once it is due; nothing else wakes it meanwhile.
    ticked
        .recv_timeout(std::time::Duration::from_secs(30))
        .expect("the put-off work ran");
    assert_eq!(
        agentkeys_runtime::store::BatchHook::due(hook.as_ref()),
        None
    );
    assert_eq!(
        store.writer_counts().commits,
        before.commits,
        "no empty batch for it"
    );
    store.close();
}
