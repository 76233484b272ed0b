//! Group commit: one writer thread folds concurrent writes into one durable transaction (redb:
//! fsync'd; PostgreSQL: one transaction per batch, see `agentkeys-pg`).
//!
//! Rules (DESIGN §6):
//! - every [`Mutation`] first [`check`](Mutation::check)s its conditions against the batch's
//!   view (the open write transaction, which already holds the earlier writes of the batch) and
//!   writes nothing when it rejects; a rejection fails only that caller;
//! - an I/O error anywhere (begin, a write, the commit) fails every write of the batch;
//! - callers are answered only after the commit that holds their write has returned, and the
//!   commit is durable (redb's `Durability::Immediate`, an fsync; PostgreSQL's `COMMIT`) — so an
//!   acknowledged write is durable;
//! - the write runs whether or not the caller still waits: dropping a [`PendingWrite`] does not
//!   cancel it;
//! - writes submitted in the [`Lane::Urgent`] lane (revocations) go ahead of every queued
//!   ordinary write and commit in a batch of their own, without lingering.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc;
use std::task::{Context, Poll};
use std::thread::JoinHandle;

use super::tables::{Engine, WriteTransaction};
use tokio::sync::oneshot;

use super::StoreError;

/// What a higher layer runs around every batch, in the writer thread (e.g. the audit log signs
/// the heads of the chains the batch appended to, then wakes its readers).
pub trait BatchHook: Send + Sync + 'static {
    /// Before the batch's first write (nothing by default).
    fn batch_started(&self) {}
    /// After the batch's writes, before its commit; an error fails the whole batch. In an
    /// urgent batch ([`Lane::Urgent`]) it should do as little as it can. Nothing by default.
    fn before_commit(&self, _txn: &WriteTransaction, _lane: Lane) -> Result<(), StoreError> {
        Ok(())
    }
    /// After the batch committed.
    fn committed(&self);
    /// Receives, once when installed, what wakes the writer (e.g. when work the hook started
    /// outside the writer is done).
    fn attach(&self, _wake: Wake) {}
    /// Work the hook started after a commit is still running (e.g. signatures of the heads it
    /// committed): ordinary batches wait for it (at most [`HOOK_WAIT`]; an urgent write ends the
    /// wait), so its result rides with the next batch and writes arriving meanwhile share it.
    fn busy(&self) -> bool {
        false
    }
    /// The hook holds results for the store that no batch has written yet: when nothing else
    /// comes within [`HOOK_FLUSH`], the writer runs an empty batch for them.
    fn unwritten(&self) -> bool {
        false
    }
    /// When work the hook put off (e.g. head signatures, made at most every few milliseconds)
    /// is due: if the writer is idle then, it calls [`tick`](BatchHook::tick). A commit's
    /// [`committed`](BatchHook::committed) may do the work sooner.
    fn due(&self) -> Option<std::time::Instant> {
        None
    }
    /// Does the work put off until [`due`](BatchHook::due) (called on the writer thread, between
    /// batches).
    fn tick(&self) {}
}

/// The longest an ordinary batch waits for a [busy](BatchHook::busy) hook.
pub const HOOK_WAIT: std::time::Duration = std::time::Duration::from_millis(5);

/// How long a hook's [unwritten](BatchHook::unwritten) results wait for a batch to carry them
/// before the writer runs an empty one.
pub const HOOK_FLUSH: std::time::Duration = std::time::Duration::from_millis(5);

/// Wakes the writer thread (handed to the hook by [`BatchHook::attach`]).
#[derive(Clone)]
pub struct Wake(Inbox);

impl std::fmt::Debug for Wake {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Wake").finish_non_exhaustive()
    }
}

impl Wake {
    /// Makes the writer look at its queue and the hook again.
    pub fn wake(&self) {
        self.0.signal(Command::Wake);
    }
}

/// What the writer is woken by while a batch lingers. Waiting for anything (nothing queued),
/// the writer blocks on its channel and every command wakes it; while a batch lingers it
/// parks instead, and a submitter wakes it only when the linger should end: an urgent write, a
/// wake or close, or the write that completes what the batch waits for (the count published in
/// `wake_busy` / `wake_quiet`). Two cores showed why: woken for every write of a lingering
/// batch, the writer switched ~10 times per commit (docs/BENCHMARKS.md, fourteenth pass).
#[derive(Debug)]
struct Doorbell {
    /// Ordinary writes sent so far (counted just after each send).
    sent: AtomicU64,
    /// Urgent writes, wakes and the close sent so far (counted just after each send).
    signals: AtomicU64,
    /// While a batch lingers: the `sent` count at which to wake the writer while announced
    /// writes are outstanding (the batch is full then). `u64::MAX` while it does not linger.
    wake_busy: AtomicU64,
    /// The same when no announced write is outstanding (the batch has what the previous one
    /// had).
    wake_quiet: AtomicU64,
    /// Outstanding [`Announced`] writes.
    announced: Arc<AtomicUsize>,
    writer: std::sync::OnceLock<std::thread::Thread>,
}

impl Doorbell {
    fn new(announced: Arc<AtomicUsize>) -> Self {
        Self {
            sent: AtomicU64::new(0),
            signals: AtomicU64::new(0),
            wake_busy: AtomicU64::new(u64::MAX),
            wake_quiet: AtomicU64::new(u64::MAX),
            announced,
            writer: std::sync::OnceLock::new(),
        }
    }

    fn lingering(&self) -> bool {
        self.wake_quiet.load(Ordering::SeqCst) != u64::MAX
    }

    /// The `sent` count at which a lingering writer wants to be woken, given the outstanding
    /// announcements.
    fn wake_at(&self) -> u64 {
        if self.announced.load(Ordering::SeqCst) > 0 {
            self.wake_busy.load(Ordering::SeqCst)
        } else {
            self.wake_quiet.load(Ordering::SeqCst)
        }
    }

    /// Wakes a lingering writer whose wait is over (after a write or an announcement's end).
    fn ring_if_due(&self) {
        if self.sent.load(Ordering::SeqCst) >= self.wake_at() {
            self.ring();
        }
    }

    fn ring(&self) {
        if let Some(writer) = self.writer.get() {
            writer.unpark();
        }
    }
}

/// The sending side of the writer's channel with its doorbell.
#[derive(Clone)]
struct Inbox {
    tx: mpsc::Sender<Command>,
    bell: Arc<Doorbell>,
}

impl Inbox {
    /// Sends a command that must end a linger (an urgent write, a wake, the close).
    fn signal(&self, command: Command) {
        // A send error means the writer has stopped (see `write`).
        let _ = self.tx.send(command);
        self.bell.signals.fetch_add(1, Ordering::SeqCst);
        if self.bell.lingering() {
            self.bell.ring();
        }
    }

    /// Sends an ordinary write.
    fn write(&self, job: Box<dyn Job>) {
        // A send error means the writer has stopped; the job (and its reply) is dropped, so
        // the caller sees `StoreError::Closed`.
        let _ = self.tx.send(Command::Write(job, Lane::Ordinary));
        self.bell.sent.fetch_add(1, Ordering::SeqCst);
        self.bell.ring_if_due();
    }
}

type HookSlot = Arc<std::sync::OnceLock<Arc<dyn BatchHook>>>;

/// The most writes folded into one transaction.
pub const MAX_BATCH: usize = 4096;

/// The previous batch size from which a batch lingers.
const LINGER_FROM: usize = 4;

/// A write a caller has announced and will submit soon (e.g. the audit row of a signature that
/// is being computed): while any is outstanding, a batch lingers for it (never longer than
/// `StoreOptions::linger`), so concurrent requests share a commit instead of each paying one.
/// It ends once, when [`Store::submit_announced`](super::Store::submit_announced) is
/// about to hand the write to the writer (so a lone request never waits for itself) or when
/// its last clone is dropped (the request failed first; then a batch waiting only for it is
/// woken at once).
/// Clones share it (a message may be kept for a retry).
#[derive(Debug, Clone)]
pub struct Announced(Arc<AnnouncedWrite>);

struct AnnouncedWrite {
    count: Arc<AtomicUsize>,
    open: AtomicBool,
    /// Wakes a lingering writer when the announcement is withdrawn.
    writer: Option<Inbox>,
}

impl std::fmt::Debug for AnnouncedWrite {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AnnouncedWrite")
            .field("open", &self.open)
            .finish_non_exhaustive()
    }
}

impl AnnouncedWrite {
    /// Ends it; answers whether this was the last open announcement.
    fn end(&self) -> bool {
        self.open.swap(false, Ordering::SeqCst) && self.count.fetch_sub(1, Ordering::SeqCst) == 1
    }
}

impl Drop for AnnouncedWrite {
    fn drop(&mut self) {
        if self.end()
            && let Some(writer) = &self.writer
        {
            // Withdrawn (never submitted): a batch may be waiting for it.
            writer.signal(Command::Wake);
        }
    }
}

impl Announced {
    fn new(count: &Arc<AtomicUsize>, writer: Option<Inbox>) -> Self {
        count.fetch_add(1, Ordering::SeqCst);
        Self(Arc::new(AnnouncedWrite {
            count: count.clone(),
            open: AtomicBool::new(true),
            writer,
        }))
    }

    /// Ends the announcement (idempotent).
    pub fn end(&self) {
        self.0.end();
    }
}

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

/// Which queue a write waits in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lane {
    /// In submission order, folded into shared batches (adaptive group commit).
    Ordinary,
    /// Ahead of every queued ordinary write, in a batch of its own that commits at once: for
    /// writes whose latency matters more than their cost (revocations). An urgent write may be
    /// ordered before ordinary writes submitted earlier whose callers were not answered yet.
    Urgent,
}

type Answer<T, R> = (Result<T, WriteError<R>>, std::time::Instant);

/// The answer to a submitted write; resolves after the commit that holds it.
///
/// Dropping it does not cancel the write.
#[derive(Debug)]
pub struct PendingWrite<T, R> {
    rx: oneshot::Receiver<Answer<T, R>>,
}

impl<T, R> PendingWrite<T, R> {
    /// The answer together with the moment the writer gave it (just after the commit that holds
    /// the write, or when it failed): commit latency without the waiting task's wake-up.
    pub async fn answered_at(self) -> (Result<T, WriteError<R>>, std::time::Instant) {
        self.rx.await.unwrap_or_else(|_| {
            (
                Err(WriteError::Store(StoreError::Closed)),
                std::time::Instant::now(),
            )
        })
    }
}

impl<T, R> Future for PendingWrite<T, R> {
    type Output = Result<T, WriteError<R>>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        Pin::new(&mut self.rx).poll(cx).map(|r| match r {
            Ok((answer, _)) => answer,
            Err(_) => Err(WriteError::Store(StoreError::Closed)),
        })
    }
}

/// Counters of the writer, for tests, metrics and benchmarks.
#[derive(Debug, Default)]
pub struct WriterStats {
    commits: AtomicU64,
    writes: AtomicU64,
    failed_batches: AtomicU64,
    linger_looks: AtomicU64,
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
    /// Checkpoints of the commit log (durable redb commits after which it starts over).
    pub checkpoints: u64,
    /// Bytes appended to the commit log (whole pages).
    pub log_bytes: u64,
    /// Times a lingering batch's writer looked at its queue again (after a wake-up, a timeout,
    /// or at once when the wait was over): a few per batch, neither one per write that joins
    /// it nor a spin (see `Doorbell`).
    pub linger_looks: u64,
}

impl WriterStats {
    pub(crate) fn snapshot(&self) -> WriterCounts {
        WriterCounts {
            commits: self.commits.load(Ordering::Relaxed),
            writes: self.writes.load(Ordering::Relaxed),
            failed_batches: self.failed_batches.load(Ordering::Relaxed),
            checkpoints: 0,
            log_bytes: 0,
            linger_looks: self.linger_looks.load(Ordering::Relaxed),
        }
    }
}

trait Job: Send {
    /// Whether it is a caller's write (counted in [`WriterCounts::writes`]).
    fn is_write(&self) -> bool {
        true
    }
    fn run(&mut self, txn: &WriteTransaction) -> Result<(), StoreError>;
    fn finish(self: Box<Self>, committed: Result<(), StoreError>, at: std::time::Instant);
}

struct MutationJob<M: Mutation> {
    op: Option<M>,
    outcome: Option<Result<M::Output, M::Rejection>>,
    reply: oneshot::Sender<Answer<M::Output, M::Rejection>>,
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

    fn finish(self: Box<Self>, committed: Result<(), StoreError>, at: std::time::Instant) {
        let answer = match (committed, self.outcome) {
            (Err(e), _) => Err(WriteError::Store(e)),
            (Ok(()), Some(Ok(out))) => Ok(out),
            (Ok(()), Some(Err(rejection))) => Err(WriteError::Rejected(rejection)),
            (Ok(()), None) => Err(WriteError::Store(StoreError::Closed)),
        };
        // The caller may have stopped waiting; the write stands either way.
        let _ = self.reply.send((answer, at));
    }
}

/// An empty write: makes the writer run a batch (see [`BatchHook::before_commit`]).
struct Nudge;

impl Job for Nudge {
    fn is_write(&self) -> bool {
        false
    }

    fn run(&mut self, _txn: &WriteTransaction) -> Result<(), StoreError> {
        Ok(())
    }

    fn finish(self: Box<Self>, _committed: Result<(), StoreError>, _at: std::time::Instant) {}
}

enum Command {
    Write(Box<dyn Job>, Lane),
    /// Re-evaluate the linger (an announcement was withdrawn).
    Wake,
    Close,
}

/// The handle to the writer thread.
pub(crate) struct Writer {
    tx: std::sync::Mutex<Option<Inbox>>,
    /// Outstanding [`Announced`] writes.
    announced: Arc<AtomicUsize>,
    thread: std::sync::Mutex<Option<JoinHandle<()>>>,
    stats: Arc<WriterStats>,
    hook: HookSlot,
}

impl Writer {
    pub(crate) fn start(
        engine: Engine,
        linger: std::time::Duration,
        checkpoint_idle: std::time::Duration,
    ) -> Result<Self, StoreError> {
        let (tx, rx) = mpsc::channel();
        let stats = Arc::new(WriterStats::default());
        let thread_stats = stats.clone();
        let hook = HookSlot::default();
        let thread_hook = hook.clone();
        let announced = Arc::new(AtomicUsize::new(0));
        let bell = Arc::new(Doorbell::new(announced.clone()));
        let thread_bell = bell.clone();
        let thread = std::thread::Builder::new()
            .name("agentkeys-store-writer".into())
            .spawn(move || {
                let _ = thread_bell.writer.set(std::thread::current());
                let batch = BatchEnv {
                    engine: &engine,
                    linger,
                    checkpoint_idle,
                    hook: &thread_hook,
                    bell: &thread_bell,
                };
                writer_loop(&batch, &rx, &thread_stats);
            })
            .map_err(StoreError::io)?;
        Ok(Self {
            tx: std::sync::Mutex::new(Some(Inbox { tx, bell })),
            announced,
            thread: std::sync::Mutex::new(Some(thread)),
            stats,
            hook,
        })
    }

    /// Announces a write that will be submitted soon (see [`Announced`]).
    pub(crate) fn announce(&self) -> Announced {
        let writer = self.tx.lock().ok().and_then(|guard| guard.clone());
        Announced::new(&self.announced, writer)
    }

    pub(crate) fn announced(&self) -> usize {
        self.announced.load(Ordering::Acquire)
    }

    /// Installs the batch hook (once; `false` if one was installed already).
    pub(crate) fn set_hook(&self, hook: Arc<dyn BatchHook>) -> bool {
        let wake = self.tx.lock().ok().and_then(|guard| guard.clone());
        if self.hook.set(hook.clone()).is_err() {
            return false;
        }
        if let Some(tx) = wake {
            hook.attach(Wake(tx));
        }
        true
    }

    pub(crate) fn submit<M: Mutation>(
        &self,
        op: M,
        lane: Lane,
    ) -> PendingWrite<M::Output, M::Rejection> {
        let (reply, rx) = oneshot::channel();
        let job = Box::new(MutationJob {
            op: Some(op),
            outcome: None,
            reply,
        });
        let inbox = self.tx.lock().ok().and_then(|guard| guard.clone());
        if let Some(inbox) = inbox {
            match lane {
                Lane::Ordinary => inbox.write(job),
                // A send error: as in `Inbox::write`.
                Lane::Urgent => inbox.signal(Command::Write(job, lane)),
            }
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
        if let Some(inbox) = self.tx.lock().ok().and_then(|mut guard| guard.take()) {
            inbox.signal(Command::Close);
        }
        let thread = self.thread.lock().ok().and_then(|mut guard| guard.take());
        if thread.is_some_and(|t| t.join().is_err()) {
            tracing::error!("store writer thread panicked");
        }
    }
}

/// What every batch needs.
struct BatchEnv<'a> {
    engine: &'a Engine,
    linger: std::time::Duration,
    /// See `StoreOptions::checkpoint_idle`.
    checkpoint_idle: std::time::Duration,
    hook: &'a HookSlot,
    bell: &'a Doorbell,
}

/// The writes taken off the channel and not yet committed, by lane.
#[derive(Default)]
struct Queued {
    urgent: VecDeque<Box<dyn Job>>,
    ordinary: VecDeque<Box<dyn Job>>,
    /// Ordinary writes taken off the channel so far (compare `Doorbell::sent`).
    received: u64,
    closing: bool,
}

impl Queued {
    fn take(&mut self, command: Result<Command, ()>) {
        match command {
            Ok(Command::Write(job, Lane::Urgent)) => self.urgent.push_back(job),
            Ok(Command::Write(job, Lane::Ordinary)) => {
                self.received += 1;
                self.ordinary.push_back(job);
            }
            Ok(Command::Wake) => {}
            Ok(Command::Close) | Err(()) => self.closing = true,
        }
    }

    /// Moves everything already submitted off the channel (without waiting); once closing,
    /// also the writes that raced with the close, so no accepted write is dropped.
    fn drain(&mut self, rx: &mpsc::Receiver<Command>) {
        loop {
            match rx.try_recv() {
                Ok(command) => self.take(Ok(command)),
                Err(mpsc::TryRecvError::Empty) => break,
                Err(mpsc::TryRecvError::Disconnected) => {
                    self.closing = true;
                    break;
                }
            }
        }
    }

    fn is_empty(&self) -> bool {
        self.urgent.is_empty() && self.ordinary.is_empty()
    }
}

fn writer_loop(env: &BatchEnv<'_>, rx: &mpsc::Receiver<Command>, stats: &WriterStats) {
    let mut queued = Queued::default();
    let mut expected = 1;
    let hook = || env.hook.get();
    loop {
        if queued.is_empty() {
            if queued.closing {
                checkpoint(env.engine);
                return;
            }
            idle(&mut queued, hook(), env, rx);
        }
        queued.drain(rx);
        if queued.is_empty() {
            // A wake-up with nothing to write (or the close).
            continue;
        }
        if !queued.urgent.is_empty() {
            // The urgent lane: alone, first, at once.
            let n = queued.urgent.len().min(MAX_BATCH);
            commit_batch(env, queued.urgent.drain(..n).collect(), Lane::Urgent, stats);
            continue;
        }
        let more_coming = |queued: &Queued| {
            env.bell.announced.load(Ordering::SeqCst) > 0
                || (expected >= LINGER_FROM && queued.ordinary.len() < expected)
        };
        let busy = || hook().is_some_and(|h| h.busy());
        if !queued.closing && (more_coming(&queued) || busy()) {
            // Adaptive group commit: wait a little (never longer than the linger) for writes that
            // are on their way instead of paying a commit for a few. They are on their way when
            // a caller announced one (a signature being computed), or probably when the
            // previous batch was larger (from LINGER_FROM: one or two requests at a time, whose
            // writes sometimes share a batch, never wait for each other on a guess). While the
            // hook's own work runs (the previous batch's head signatures), the batch waits for it
            // too (at most HOOK_WAIT), so it carries the result. An urgent write ends the wait
            // and goes first.
            //
            // Meanwhile the writer is woken only when the wait should end (see `Doorbell`),
            // not by every write that joins the batch.
            let now = std::time::Instant::now();
            let (linger_until, hook_until) = (now + env.linger, now + HOOK_WAIT);
            let bell = env.bell;
            let mut seen = bell.signals.load(Ordering::SeqCst);
            queued.drain(rx);
            while queued.ordinary.len() < MAX_BATCH && queued.urgent.is_empty() && !queued.closing {
                let now = std::time::Instant::now();
                let (until, for_hook) = match (
                    more_coming(&queued) && now < linger_until,
                    busy() && now < hook_until,
                ) {
                    (_, true) => (hook_until, true),
                    (true, false) => (linger_until, false),
                    (false, false) => break,
                };
                // Publish what ends the wait, then look once more: a submitter after the
                // publication rings, one before it is seen here. While the hook's work runs,
                // only its wake (a signal) or a full batch ends the wait.
                let len = queued.ordinary.len() as u64;
                let full = queued.received + MAX_BATCH as u64 - len;
                let as_before = if for_hook {
                    full
                } else if expected >= LINGER_FROM {
                    queued.received + (expected as u64).saturating_sub(len)
                } else {
                    queued.received
                };
                bell.wake_busy.store(full, Ordering::SeqCst);
                bell.wake_quiet.store(as_before, Ordering::SeqCst);
                let signals = bell.signals.load(Ordering::SeqCst);
                if signals == seen && bell.sent.load(Ordering::SeqCst) < bell.wake_at() {
                    std::thread::park_timeout(until.saturating_duration_since(now));
                }
                stats.linger_looks.fetch_add(1, Ordering::Relaxed);
                seen = bell.signals.load(Ordering::SeqCst);
                queued.drain(rx);
            }
            bell.wake_busy.store(u64::MAX, Ordering::SeqCst);
            bell.wake_quiet.store(u64::MAX, Ordering::SeqCst);
            if !queued.urgent.is_empty() {
                continue;
            }
        }
        let n = queued.ordinary.len().min(MAX_BATCH);
        expected = n.max(1);
        if n > 0 {
            commit_batch(
                env,
                queued.ordinary.drain(..n).collect(),
                Lane::Ordinary,
                stats,
            );
        }
    }
}

/// Waits for the next command while nothing is queued. The hook's unwritten results ride with
/// the next batch if one comes within [`HOOK_FLUSH`], else an empty batch writes them; work it
/// put off runs when due if no batch came first; after `StoreOptions::checkpoint_idle` with
/// batches in the commit log, the writer checkpoints.
fn idle(
    queued: &mut Queued,
    hook: Option<&Arc<dyn BatchHook>>,
    env: &BatchEnv<'_>,
    rx: &mpsc::Receiver<Command>,
) {
    let engine = env.engine;
    let now = std::time::Instant::now();
    let flush = hook
        .is_some_and(|h| h.unwritten())
        .then(|| now + HOOK_FLUSH);
    let due = hook.and_then(|h| h.due());
    let checkpoint_at = engine.has_logged().then(|| now + env.checkpoint_idle);
    let Some(until) = flush.into_iter().chain(due).chain(checkpoint_at).min() else {
        queued.take(rx.recv().map_err(|_| ()));
        return;
    };
    match rx.recv_timeout(until.saturating_duration_since(now)) {
        Ok(command) => queued.take(Ok(command)),
        Err(mpsc::RecvTimeoutError::Disconnected) => queued.closing = true,
        Err(mpsc::RecvTimeoutError::Timeout) => {
            let now = std::time::Instant::now();
            match hook {
                Some(hook) if due.is_some_and(|due| due <= now) => hook.tick(),
                _ if flush.is_some_and(|flush| flush <= now) => {
                    queued.ordinary.push_back(Box::new(Nudge));
                }
                _ => checkpoint(engine),
            }
        }
    }
}

/// A checkpoint of the commit log; a failure is logged (the log keeps the batches, and the
/// next checkpoint or the next start recovers them).
fn checkpoint(engine: &Engine) {
    if let Err(e) = engine.checkpoint() {
        tracing::error!(cause = %e, "store checkpoint failed");
    }
}

fn commit_batch(env: &BatchEnv<'_>, mut batch: Vec<Box<dyn Job>>, lane: Lane, stats: &WriterStats) {
    let outcome = run_batch(env, &mut batch, lane);
    match &outcome {
        Ok(()) => {
            stats.commits.fetch_add(1, Ordering::Relaxed);
        }
        Err(e) => {
            stats.failed_batches.fetch_add(1, Ordering::Relaxed);
            tracing::error!(cause = %e, writes = batch.len(), "store batch failed");
        }
    }
    let writes = batch.iter().filter(|job| job.is_write()).count();
    stats.writes.fetch_add(writes as u64, Ordering::Relaxed);
    let at = std::time::Instant::now();
    for job in batch {
        job.finish(outcome.clone(), at);
    }
}

fn run_batch(env: &BatchEnv<'_>, batch: &mut [Box<dyn Job>], lane: Lane) -> Result<(), StoreError> {
    let txn = env.engine.begin_write()?;
    super::epochs::begin_batch();
    let hook = env.hook.get();
    if let Some(hook) = hook {
        hook.batch_started();
    }
    let mut outcome = batch
        .iter_mut()
        .try_for_each(|job| job.run(&txn))
        .and_then(|()| super::epochs::write_bumps(&txn));
    if outcome.is_ok()
        && let Some(hook) = hook
    {
        outcome = hook.before_commit(&txn, lane);
    }
    if let Err(e) = outcome {
        // Dropping an uncommitted transaction aborts it; abort explicitly to surface errors.
        if let Err(abort) = txn.abort() {
            tracing::error!(cause = %abort, "store abort failed");
        }
        return Err(e);
    }
    txn.commit()?;
    if let Some(hook) = hook {
        hook.committed();
    }
    Ok(())
}
