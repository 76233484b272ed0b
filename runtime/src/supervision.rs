//! Supervision: restart intensity, backoff and quarantine, decided per omni.
//!
//! A panic in a handler (caught by [`Supervised`]) or an unexpected stop of an actor's task
//! counts as a crash. The crashed actor is dropped from its registry; it is restarted from the
//! store by the next message once its backoff has passed (virtual activation is the restart).
//! More than `max_restarts` crashes within `window` put the omni in quarantine for `cooldown`:
//! activation answers [`CallError::Unavailable`] until then, or until
//! [`Runtime::lift_quarantine`](crate::Runtime::lift_quarantine). Quarantine lives in memory.
//! Each decision is recorded as a [`SupervisionEvent`] for the audit layer to drain.

use std::collections::{HashMap, VecDeque};
use std::panic::AssertUnwindSafe;
use std::sync::Mutex;
use std::time::Duration;

use actix::dev::MessageResponse;
use actix::fut::{ActorFutureExt, wrap_future};
use actix::{ActorContext, AsyncContext, Context, Handler, Message};
use tokio::sync::oneshot;

use crate::clock::Timestamp;
use crate::omni::Omni;
use crate::registry::{CallError, InFlight, VirtualActor};

/// Restart policy (defaults: 5 restarts in 10 s, then 60 s of quarantine).
#[derive(Debug, Clone)]
pub struct SupervisionConfig {
    /// Crashes tolerated within `window` before quarantine.
    pub max_restarts: usize,
    /// The window over which crashes are counted.
    pub window: Duration,
    /// How long a quarantine lasts unless lifted.
    pub cooldown: Duration,
    /// Backoff after the first crash; doubles with each crash in the window.
    pub backoff: Duration,
    /// The longest backoff.
    pub max_backoff: Duration,
}

impl Default for SupervisionConfig {
    fn default() -> Self {
        Self {
            max_restarts: 5,
            window: Duration::from_secs(10),
            cooldown: Duration::from_secs(60),
            backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(5),
        }
    }
}

/// What supervision decided, for the audit layer and the parent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SupervisionEvent {
    /// The actor crashed and will be restarted from the store after `backoff`.
    Restarting {
        /// The crashed actor.
        omni: Omni,
        /// Its parent (told through this event), `None` for a master.
        parent: Option<Omni>,
        /// Crashes within the window, this one included.
        crashes: usize,
        /// When the next activation is allowed.
        backoff: Duration,
        /// When it crashed.
        at: Timestamp,
    },
    /// The restart intensity was exceeded.
    Quarantined {
        /// The quarantined actor.
        omni: Omni,
        /// Its parent (told through this event), `None` for a master.
        parent: Option<Omni>,
        /// When the quarantine ends by itself.
        until: Timestamp,
        /// When it was decided.
        at: Timestamp,
    },
    /// A quarantine was lifted by the host administrator before its end.
    QuarantineLifted {
        /// The actor.
        omni: Omni,
        /// When.
        at: Timestamp,
    },
}

#[derive(Debug, Default)]
struct Record {
    crashes: VecDeque<Timestamp>,
    blocked_until: Timestamp,
    quarantined: bool,
}

/// Most events kept for the audit layer before the oldest are dropped (and counted).
const EVENT_BACKLOG: usize = 10_000;

#[derive(Debug, Default)]
pub(crate) struct Supervisor {
    config: SupervisionConfig,
    records: Mutex<HashMap<Omni, Record>>,
    events: Mutex<(VecDeque<SupervisionEvent>, u64)>,
}

impl Supervisor {
    pub(crate) fn new(config: SupervisionConfig) -> Self {
        Self {
            config,
            ..Self::default()
        }
    }

    fn push(&self, event: SupervisionEvent) {
        tracing::warn!(?event, "supervision");
        let mut events = self.events.lock().unwrap_or_else(|p| p.into_inner());
        if events.0.len() >= EVENT_BACKLOG {
            events.0.pop_front();
            events.1 += 1;
        }
        events.0.push_back(event);
    }

    /// Records a crash and decides backoff or quarantine.
    pub(crate) fn crashed(&self, omni: Omni, parent: Option<Omni>, now: Timestamp) {
        let c = &self.config;
        let event = {
            let mut records = self.records.lock().unwrap_or_else(|p| p.into_inner());
            let record = records.entry(omni).or_default();
            while record
                .crashes
                .front()
                .is_some_and(|t| now.since(*t) >= c.window)
            {
                record.crashes.pop_front();
            }
            record.crashes.push_back(now);
            let crashes = record.crashes.len();
            if crashes > c.max_restarts {
                let until = now.plus(c.cooldown);
                record.blocked_until = until;
                record.quarantined = true;
                SupervisionEvent::Quarantined {
                    omni,
                    parent,
                    until,
                    at: now,
                }
            } else {
                let shift = u32::try_from(crashes - 1).unwrap_or(u32::MAX).min(16);
                let backoff = c.backoff.saturating_mul(1 << shift).min(c.max_backoff);
                record.blocked_until = now.plus(backoff);
                SupervisionEvent::Restarting {
                    omni,
                    parent,
                    crashes,
                    backoff,
                    at: now,
                }
            }
        };
        self.push(event);
    }

    /// `Err(Unavailable)` while the omni is backing off or quarantined.
    /// A record whose block has ended and whose crashes have all left the window is dropped
    /// here, so the table holds only omnis that crashed recently.
    pub(crate) fn admit(&self, omni: &Omni, now: Timestamp) -> Result<(), CallError> {
        let mut records = self.records.lock().unwrap_or_else(|p| p.into_inner());
        match records.get(omni) {
            Some(r) if r.blocked_until > now => Err(CallError::Unavailable {
                retry_after: r.blocked_until.since(now),
                quarantined: r.quarantined,
            }),
            Some(r)
                if r.crashes
                    .back()
                    .is_none_or(|t| now.since(*t) >= self.config.window) =>
            {
                records.remove(omni);
                Ok(())
            }
            _ => Ok(()),
        }
    }

    /// How many omnis have a crash record.
    #[cfg(test)]
    fn tracked(&self) -> usize {
        self.records.lock().map(|r| r.len()).unwrap_or(0)
    }

    /// Whether `omni` is in quarantine now.
    pub(crate) fn is_quarantined(&self, omni: &Omni, now: Timestamp) -> bool {
        let records = self.records.lock().unwrap_or_else(|p| p.into_inner());
        records
            .get(omni)
            .is_some_and(|r| r.quarantined && r.blocked_until > now)
    }

    /// Ends a quarantine (and its crash history) early; `false` if there was none.
    pub(crate) fn lift(&self, omni: &Omni, now: Timestamp) -> bool {
        let lifted = {
            let mut records = self.records.lock().unwrap_or_else(|p| p.into_inner());
            let quarantined = records
                .get(omni)
                .is_some_and(|r| r.quarantined && r.blocked_until > now);
            if quarantined {
                records.remove(omni);
            }
            quarantined
        };
        if lifted {
            self.push(SupervisionEvent::QuarantineLifted {
                omni: *omni,
                at: now,
            });
        }
        lifted
    }

    /// Takes the recorded events (oldest first) and how many were dropped for lack of room.
    pub(crate) fn drain_events(&self) -> (Vec<SupervisionEvent>, u64) {
        let mut events = self.events.lock().unwrap_or_else(|p| p.into_inner());
        let dropped = std::mem::take(&mut events.1);
        (events.0.drain(..).collect(), dropped)
    }
}

/// The envelope every call travels in: runs the actor's `Handler<M>` under `catch_unwind`.
///
/// Actors opt in with [`supervised!`](crate::supervised), which implements
/// `Handler<Supervised<M>>` for every message the actor handles.
pub struct Supervised<M: Message> {
    msg: M,
    reply: Reply<M::Result>,
}

/// Where the answer goes, with the call's in-flight count: both are released only when the
/// actor has finished the message (answered, or dropped it unhandled).
struct Reply<T> {
    tx: oneshot::Sender<Result<T, Crashed>>,
    in_flight: InFlight,
}

impl<T> Reply<T> {
    fn send(self, value: Result<T, Crashed>) {
        // The call leaves the count before its caller can wake and send the next one, so a
        // caller that keeps one call in flight never sees its own previous call as `Busy`.
        let Self { tx, in_flight } = self;
        drop(in_flight);
        let _ = tx.send(value);
    }
}

/// The handler panicked; the actor is being stopped.
#[derive(Debug, Clone, Copy)]
pub struct Crashed;

impl<M: Message> Message for Supervised<M> {
    type Result = ();
}

impl<M> Supervised<M>
where
    M: Message + Send + 'static,
    M::Result: Send,
{
    pub(crate) fn new(
        msg: M,
        in_flight: InFlight,
    ) -> (Self, oneshot::Receiver<Result<M::Result, Crashed>>) {
        let (tx, rx) = oneshot::channel();
        let reply = Reply { tx, in_flight };
        (Self { msg, reply }, rx)
    }

    /// Runs `act`'s handler for the message. A panic in the handler body answers `Crashed` and
    /// stops the actor (its state may be half-changed); the registry restarts it from the store.
    /// An answer that is a future is forwarded when it resolves.
    pub fn run<A>(self, act: &mut A, ctx: &mut Context<A>)
    where
        A: VirtualActor + Handler<M>,
    {
        let Self { msg, reply } = self;
        let (tx, mut rx) = oneshot::channel();
        let outcome = std::panic::catch_unwind(AssertUnwindSafe(|| {
            let response = <A as Handler<M>>::handle(act, msg, ctx);
            response.handle(ctx, Some(tx));
        }));
        if outcome.is_err() {
            reply.send(Err(Crashed));
            ctx.stop();
            return;
        }
        match rx.try_recv() {
            Ok(value) => reply.send(Ok(value)),
            Err(oneshot::error::TryRecvError::Empty) => {
                ctx.spawn(wrap_future::<_, A>(rx).map(move |value, _, _| {
                    if let Ok(value) = value {
                        reply.send(Ok(value));
                    }
                }));
            }
            Err(oneshot::error::TryRecvError::Closed) => {}
        }
    }
}

/// Implements `Handler<Supervised<M>>` for an actor, so the registry can call it under
/// supervision. One line per actor type: `agentkeys_runtime::supervised!(AgentActor);`
#[macro_export]
macro_rules! supervised {
    ($actor:ty) => {
        impl<M> ::actix::Handler<$crate::Supervised<M>> for $actor
        where
            M: ::actix::Message + Send + 'static,
            M::Result: Send,
            $actor: ::actix::Handler<M>,
        {
            type Result = ();

            fn handle(
                &mut self,
                envelope: $crate::Supervised<M>,
                ctx: &mut ::actix::Context<Self>,
            ) {
                envelope.run(self, ctx)
            }
        }
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(ms: u64) -> Timestamp {
        Timestamp::from_millis(ms)
    }

    #[test]
    fn backoff_doubles_then_quarantine_then_lift() {
        let sup = Supervisor::new(SupervisionConfig::default());
        let omni = Omni::from_bytes([3; 32]);
        sup.crashed(omni, None, at(0));
        assert!(matches!(
            sup.admit(&omni, at(50)),
            Err(CallError::Unavailable {
                quarantined: false,
                ..
            })
        ));
        assert!(sup.admit(&omni, at(100)).is_ok());
        for t in 1..5 {
            sup.crashed(omni, None, at(t * 1000));
        }
        // Fifth crash: backoff 100 ms × 2^4 = 1.6 s.
        assert!(sup.admit(&omni, at(4000 + 1599)).is_err());
        assert!(sup.admit(&omni, at(4000 + 1600)).is_ok());
        sup.crashed(omni, None, at(6000));
        assert!(sup.is_quarantined(&omni, at(6000)));
        assert!(matches!(
            sup.admit(&omni, at(65_999)),
            Err(CallError::Unavailable {
                quarantined: true,
                ..
            })
        ));
        assert!(
            sup.admit(&omni, at(66_000)).is_ok(),
            "the cool-down ends it"
        );
        assert!(!sup.lift(&omni, at(66_000)), "nothing left to lift");

        sup.crashed(omni, None, at(70_000));
        assert_eq!(sup.tracked(), 1);
        assert!(
            sup.admit(&omni, at(75_000)).is_ok(),
            "backoff over, crash still in the window"
        );
        assert_eq!(sup.tracked(), 1);
        assert!(sup.admit(&omni, at(80_000)).is_ok());
        assert_eq!(sup.tracked(), 0, "forgotten once the window has passed");
        let (events, dropped) = sup.drain_events();
        assert_eq!(dropped, 0);
        assert!(matches!(events[5], SupervisionEvent::Quarantined { .. }));
        // Crashes older than the window no longer count.
        assert!(matches!(
            events[6],
            SupervisionEvent::Restarting { crashes: 1, .. }
        ));
    }

    #[test]
    fn lift_ends_a_quarantine_early() {
        let config = SupervisionConfig {
            max_restarts: 1,
            ..SupervisionConfig::default()
        };
        let sup = Supervisor::new(config);
        let omni = Omni::from_bytes([4; 32]);
        sup.crashed(omni, None, at(0));
        sup.crashed(omni, None, at(1));
        assert!(sup.is_quarantined(&omni, at(2)));
        assert!(sup.lift(&omni, at(2)));
        assert!(sup.admit(&omni, at(2)).is_ok());
        let (events, _) = sup.drain_events();
        assert!(matches!(
            events.last(),
            Some(SupervisionEvent::QuarantineLifted { .. })
        ));
    }
}
