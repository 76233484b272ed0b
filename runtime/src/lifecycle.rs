//! The link between the runtime and one running actor, in one small allocation and one item
//! in the actor's context: a stop request and a stopped signal, the calls in flight, the time
//! of the last use, the crash flag, and the value the actor publishes for readers.

use std::any::Any;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context as TaskContext, Poll, Waker};

use actix::{Actor, ActorContext, ActorFuture, AsyncContext, Context};
use tokio::sync::Notify;

#[derive(Default)]
pub(crate) struct Lifecycle {
    stop_requested: AtomicBool,
    stopped: AtomicBool,
    /// Set once when the actor is found crashed (so the supervisor hears of it once).
    pub(crate) crashed: AtomicBool,
    /// Calls admitted and not yet handled (the mailbox bound; nothing passivates while > 0).
    /// 32 bits, beside the flags: with the view behind a `Mutex`, not an `RwLock`, the cell is
    /// 96 bytes and its allocation 112, not 128 (docs/BENCHMARKS.md, memory per active agent).
    pub(crate) in_flight: AtomicU32,
    /// The last use, in clock milliseconds (idle passivation).
    pub(crate) last_used: AtomicU64,
    /// What the actor published for readers ([`crate::ViewSlot`]); held for a pointer copy.
    pub(crate) view: Mutex<Option<Arc<dyn Any + Send + Sync>>>,
    waker: Mutex<Option<Waker>>,
    done: Notify,
}

impl std::fmt::Debug for Lifecycle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lifecycle")
            .field("stop_requested", &self.stop_requested)
            .field("stopped", &self.stopped)
            .field("in_flight", &self.in_flight)
            .finish_non_exhaustive()
    }
}

impl Lifecycle {
    /// A lifecycle last used at `now_ms`.
    pub(crate) fn new(now_ms: u64) -> Self {
        Self {
            last_used: AtomicU64::new(now_ms),
            ..Self::default()
        }
    }

    /// What the actor published, if it is a `T`.
    pub(crate) fn published<T: Any + Send + Sync>(&self) -> Option<Arc<T>> {
        let view = self
            .view
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone();
        view?.downcast::<T>().ok()
    }

    /// Records a use at `now_ms` (never moves the time back).
    pub(crate) fn touch(&self, now_ms: u64) {
        self.last_used.fetch_max(now_ms, Ordering::AcqRel);
    }

    /// Asks the actor to stop; takes effect when its context next polls, whatever waits in
    /// its mailbox.
    pub(crate) fn request_stop(&self) {
        if !self.stop_requested.swap(true, Ordering::AcqRel) {
            let waker = self.waker.lock().ok().and_then(|mut w| w.take());
            if let Some(waker) = waker {
                waker.wake();
            }
        }
    }

    pub(crate) fn stop_requested(&self) -> bool {
        self.stop_requested.load(Ordering::Acquire)
    }

    /// Installs the lifeline into a new actor's context.
    pub(crate) fn attach<A: Actor<Context = Context<A>>>(self: &Arc<Self>, ctx: &mut Context<A>) {
        ctx.spawn(Lifeline(self.clone()));
    }
}

/// Resolves once an actor has stopped (its context was torn down).
#[derive(Debug, Clone)]
pub struct StopWatch(pub(crate) Arc<Lifecycle>);

impl StopWatch {
    /// Waits until the actor has stopped.
    pub async fn stopped(self) {
        loop {
            let notified = self.0.done.notified();
            if self.0.stopped.load(Ordering::Acquire) {
                return;
            }
            notified.await;
        }
    }
}

/// Lives in the actor's context until it is torn down: stops the actor on request, and says
/// "stopped" when dropped (by a normal stop, a passivation, or a panic that ends the task).
struct Lifeline(Arc<Lifecycle>);

impl<A: Actor<Context = Context<A>>> ActorFuture<A> for Lifeline {
    type Output = ();

    fn poll(
        self: Pin<&mut Self>,
        _act: &mut A,
        ctx: &mut Context<A>,
        task: &mut TaskContext<'_>,
    ) -> Poll<()> {
        if let Ok(mut waker) = self.0.waker.lock() {
            *waker = Some(task.waker().clone());
        }
        if self.0.stop_requested() {
            ctx.stop();
        }
        // Never completes: the context drops it on teardown.
        Poll::Pending
    }
}

impl Drop for Lifeline {
    fn drop(&mut self) {
        self.0.stopped.store(true, Ordering::Release);
        self.0.done.notify_waiters();
    }
}
