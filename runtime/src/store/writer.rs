//! Group commit: one writer thread folds concurrent writes into one fsync'd redb transaction.
//!
//! Rules (DESIGN §6):
//! - every [`Mutation`] first [`check`](Mutation::check)s its conditions against the batch's
//!   view (the open write transaction, which already holds the earlier writes of the batch) and
//!   writes nothing when it rejects; a rejection fails only that caller;
//! - an I/O error anywhere (begin, a write, the commit) fails every write of the batch;
//! - callers are answered only after the commit that holds their write has returned, and the
//!   commit is `Durability::Immediate` (fsync) — so an acknowledged write is durable;
//! - the write runs whether or not the caller still waits: dropping a [`PendingWrite`] does not
//!   cancel it.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::task::{Context, Poll};
use std::thread::JoinHandle;

use redb::{Database, WriteTransaction};
use tokio::sync::oneshot;

use super::StoreError;

/// What a higher layer runs around every batch, in the writer thread (e.g. the audit log signs
/// the heads of the chains the batch appended to, then wakes its readers).
pub trait BatchHook: Send + Sync + 'static {
    /// Before the batch's first write.
    fn batch_started(&self);
    /// After the batch's writes, before its commit; an error fails the whole batch.
    fn before_commit(&self, txn: &WriteTransaction) -> Result<(), StoreError>;
    /// After the batch committed.
    fn committed(&self);
}

type HookSlot = Arc<std::sync::OnceLock<Arc<dyn BatchHook>>>;

/// The most writes folded into one transaction.
pub(crate) const MAX_BATCH: usize = 4096;

/// The longest a batch waits for more writes when the previous one was larger.
const LINGER: std::time::Duration = std::time::Duration::from_micros(500);

/// The previous batch size from which a batch lingers.
const LINGER_FROM: usize = 4;

/// A conditional write, run inside the writer thread.
pub trait Mutation: Send + 'static {
    /// What [`check`](Self::check) decided to write.
    type Plan;
    /// The caller's answer on success.
    type Output: Send + 'static;
    /// Why the condition failed (e.g. the label is taken).
    type Rejection: Send + 'static;

    /// Validates against the batch's view. Must not write.
    fn check(
        self,
        view: &WriteTransaction,
    ) -> Result<Result<Self::Plan, Self::Rejection>, StoreError>;

    /// Writes the plan. Any error here fails the whole batch.
    fn apply(plan: Self::Plan, txn: &WriteTransaction) -> Result<Self::Output, StoreError>;
}

/// Why a submitted write did not happen.
#[derive(Debug, Clone, thiserror::Error)]
pub enum WriteError<R> {
    /// The mutation's own condition failed; nothing was written.
    #[error("rejected: {0}")]
    Rejected(R),
    /// The store failed (the whole batch was rolled back) or is closed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The answer to a submitted write; resolves after the commit that holds it.
///
/// Dropping it does not cancel the write.
#[derive(Debug)]
pub struct PendingWrite<T, R> {
    rx: oneshot::Receiver<Result<T, WriteError<R>>>,
}

impl<T, R> Future for PendingWrite<T, R> {
    type Output = Result<T, WriteError<R>>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        Pin::new(&mut self.rx)
            .poll(cx)
            .map(|r| r.unwrap_or(Err(WriteError::Store(StoreError::Closed))))
    }
}

/// Counters of the writer, for tests, metrics and benchmarks.
#[derive(Debug, Default)]
pub struct WriterStats {
    commits: AtomicU64,
    writes: AtomicU64,
    failed_batches: AtomicU64,
}

/// A snapshot of [`WriterStats`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WriterCounts {
    /// Transactions committed.
    pub commits: u64,
    /// Mutations answered (committed, rejected or failed).
    pub writes: u64,
    /// Batches that failed as a whole.
    pub failed_batches: u64,
}

impl WriterStats {
    pub(crate) fn snapshot(&self) -> WriterCounts {
        WriterCounts {
            commits: self.commits.load(Ordering::Relaxed),
            writes: self.writes.load(Ordering::Relaxed),
            failed_batches: self.failed_batches.load(Ordering::Relaxed),
        }
    }
}

trait Job: Send {
    fn run(&mut self, txn: &WriteTransaction) -> Result<(), StoreError>;
    fn finish(self: Box<Self>, committed: Result<(), StoreError>);
}

struct MutationJob<M: Mutation> {
    op: Option<M>,
    outcome: Option<Result<M::Output, M::Rejection>>,
    reply: oneshot::Sender<Result<M::Output, WriteError<M::Rejection>>>,
}

impl<M: Mutation> Job for MutationJob<M> {
    fn run(&mut self, txn: &WriteTransaction) -> Result<(), StoreError> {
        let Some(op) = self.op.take() else {
            return Ok(());
        };
        self.outcome = Some(match op.check(txn)? {
            Ok(plan) => Ok(M::apply(plan, txn)?),
            Err(rejection) => Err(rejection),
        });
        Ok(())
    }

    fn finish(self: Box<Self>, committed: Result<(), StoreError>) {
        let answer = match (committed, self.outcome) {
            (Err(e), _) => Err(WriteError::Store(e)),
            (Ok(()), Some(Ok(out))) => Ok(out),
            (Ok(()), Some(Err(rejection))) => Err(WriteError::Rejected(rejection)),
            (Ok(()), None) => Err(WriteError::Store(StoreError::Closed)),
        };
        // The caller may have stopped waiting; the write stands either way.
        let _ = self.reply.send(answer);
    }
}

enum Command {
    Write(Box<dyn Job>),
    Close,
}

/// The handle to the writer thread.
pub(crate) struct Writer {
    tx: std::sync::Mutex<Option<mpsc::Sender<Command>>>,
    thread: std::sync::Mutex<Option<JoinHandle<()>>>,
    stats: Arc<WriterStats>,
    hook: HookSlot,
}

impl Writer {
    pub(crate) fn start(db: Arc<Database>, quick_repair: bool) -> Result<Self, StoreError> {
        let (tx, rx) = mpsc::channel();
        let stats = Arc::new(WriterStats::default());
        let thread_stats = stats.clone();
        let hook = HookSlot::default();
        let thread_hook = hook.clone();
        let thread = std::thread::Builder::new()
            .name("agentkeys-store-writer".into())
            .spawn(move || {
                let batch = BatchEnv {
                    db: &db,
                    quick_repair,
                    hook: &thread_hook,
                };
                writer_loop(&batch, &rx, &thread_stats);
            })
            .map_err(|e| StoreError::Io(Arc::new(e.into())))?;
        Ok(Self {
            tx: std::sync::Mutex::new(Some(tx)),
            thread: std::sync::Mutex::new(Some(thread)),
            stats,
            hook,
        })
    }

    /// Installs the batch hook (once; `false` if one was installed already).
    pub(crate) fn set_hook(&self, hook: Arc<dyn BatchHook>) -> bool {
        self.hook.set(hook).is_ok()
    }

    pub(crate) fn submit<M: Mutation>(&self, op: M) -> PendingWrite<M::Output, M::Rejection> {
        let (reply, rx) = oneshot::channel();
        let job = Box::new(MutationJob {
            op: Some(op),
            outcome: None,
            reply,
        });
        let sender = self.tx.lock().ok().and_then(|guard| guard.clone());
        if let Some(sender) = sender {
            // A send error means the writer has stopped; the job (and its reply) is dropped,
            // so the caller sees `StoreError::Closed`.
            let _ = sender.send(Command::Write(job));
        }
        PendingWrite { rx }
    }

    pub(crate) fn stats(&self) -> WriterCounts {
        self.stats.snapshot()
    }

    pub(crate) fn is_running(&self) -> bool {
        self.thread
            .lock()
            .ok()
            .is_some_and(|t| t.as_ref().is_some_and(|t| !t.is_finished()))
    }

    /// Commits everything already submitted, then stops the thread. Later writes get `Closed`.
    pub(crate) fn close(&self) {
        if let Some(tx) = self.tx.lock().ok().and_then(|mut guard| guard.take()) {
            let _ = tx.send(Command::Close);
        }
        let thread = self.thread.lock().ok().and_then(|mut guard| guard.take());
        if thread.is_some_and(|t| t.join().is_err()) {
            tracing::error!("store writer thread panicked");
        }
    }
}

/// What every batch needs.
struct BatchEnv<'a> {
    db: &'a Database,
    quick_repair: bool,
    hook: &'a HookSlot,
}

fn writer_loop(env: &BatchEnv<'_>, rx: &mpsc::Receiver<Command>, stats: &WriterStats) {
    let mut closing = false;
    let mut expected = 1;
    while !closing {
        let mut batch: Vec<Box<dyn Job>> = Vec::new();
        match rx.recv() {
            Ok(Command::Write(job)) => batch.push(job),
            Ok(Command::Close) | Err(_) => closing = true,
        }
        while !closing && batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(Command::Write(job)) => batch.push(job),
                Ok(Command::Close) => closing = true,
                Err(_) => break,
            }
        }
        if !closing && expected >= LINGER_FROM && batch.len() < expected {
            // Adaptive group commit: the previous batch was larger, so more writes are probably
            // on their way; wait for them a little (never longer than LINGER) instead of paying
            // a commit for a few. Below LINGER_FROM (one or two requests at a time, whose
            // writes sometimes share a batch) nothing waits.
            let deadline = std::time::Instant::now() + LINGER;
            while batch.len() < expected {
                let left = deadline.saturating_duration_since(std::time::Instant::now());
                match rx.recv_timeout(left) {
                    Ok(Command::Write(job)) => batch.push(job),
                    Ok(Command::Close) | Err(mpsc::RecvTimeoutError::Disconnected) => {
                        closing = true;
                        break;
                    }
                    Err(mpsc::RecvTimeoutError::Timeout) => break,
                }
            }
        }
        expected = batch.len().min(MAX_BATCH);
        if closing {
            // Drain what was submitted before close so no accepted write is dropped.
            while let Ok(Command::Write(job)) = rx.try_recv() {
                batch.push(job);
            }
        }
        if !batch.is_empty() {
            commit_batch(env, batch, stats);
        }
    }
}

fn commit_batch(env: &BatchEnv<'_>, mut batch: Vec<Box<dyn Job>>, stats: &WriterStats) {
    let outcome = run_batch(env, &mut batch);
    match &outcome {
        Ok(()) => {
            stats.commits.fetch_add(1, Ordering::Relaxed);
        }
        Err(e) => {
            stats.failed_batches.fetch_add(1, Ordering::Relaxed);
            tracing::error!(cause = %e, writes = batch.len(), "store batch failed");
        }
    }
    stats
        .writes
        .fetch_add(batch.len() as u64, Ordering::Relaxed);
    for job in batch {
        job.finish(outcome.clone());
    }
}

fn run_batch(env: &BatchEnv<'_>, batch: &mut [Box<dyn Job>]) -> Result<(), StoreError> {
    let mut txn = env.db.begin_write().map_err(StoreError::from_redb)?;
    txn.set_quick_repair(env.quick_repair);
    let hook = env.hook.get();
    if let Some(hook) = hook {
        hook.batch_started();
    }
    let mut outcome = batch.iter_mut().try_for_each(|job| job.run(&txn));
    if outcome.is_ok()
        && let Some(hook) = hook
    {
        outcome = hook.before_commit(&txn);
    }
    if let Err(e) = outcome {
        // Dropping an uncommitted transaction aborts it; abort explicitly to surface errors.
        if let Err(abort) = txn.abort() {
            tracing::error!(cause = %abort, "store abort failed");
        }
        return Err(e);
    }
    txn.commit().map_err(StoreError::from_redb)?;
    if let Some(hook) = hook {
        hook.committed();
    }
    Ok(())
}
