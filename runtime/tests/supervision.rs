//! Supervision and mailbox bounds: a panic restarts only that actor; intensity exceeded →
//! quarantine → `Unavailable` → cool-down ends it; lift; revoke works on a quarantined actor;
//! `Busy` at capacity + 1; shutdown stops intake, drains, and stops actors deepest first.

mod kit;

use std::sync::Arc;
use std::time::Duration;

use agentkeys_runtime::store::Status;
use agentkeys_runtime::{CallError, Omni, Runtime, SupervisionEvent};
use kit::{DRAIN, Fixture, Hold, MAILBOX, Panic, Ping, activations, create, omni_of, wait_until};
use tokio::sync::Semaphore;

/// Arbiter index as the runtime picks it with two arbiters.
fn arbiter_of(omni: &Omni) -> u64 {
    let mut first = [0u8; 8];
    first.copy_from_slice(&omni.as_bytes()[..8]);
    u64::from_be_bytes(first) % 2
}

/// A master and two children that live on the same arbiter.
async fn same_arbiter_pair(runtime: &Runtime, name: &str) -> (Omni, Omni, Omni) {
    let master = omni_of(None, name);
    runtime.create(create(None, name)).await.expect("master");
    let mut labels = (0..).map(|i| format!("s{i}"));
    let first = labels.next().expect("label");
    let a = omni_of(Some(&master), &first);
    let second = labels
        .find(|l| arbiter_of(&omni_of(Some(&master), l)) == arbiter_of(&a))
        .expect("a label on the same arbiter");
    runtime
        .create(create(Some(&master), &first))
        .await
        .expect("a");
    runtime
        .create(create(Some(&master), &second))
        .await
        .expect("b");
    (master, a, omni_of(Some(&master), &second))
}

#[actix::test]
async fn a_panic_restarts_only_that_actor_after_its_backoff() {
    let fx = Fixture::new();
    let (runtime, registry, clock) = (&fx.runtime, &fx.registry, &fx.clock);
    let (master, a, sibling) = same_arbiter_pair(runtime, "panic-master").await;
    registry.call(a, Ping).await.expect("a").expect("live");
    registry
        .call(sibling, Ping)
        .await
        .expect("b")
        .expect("live");

    let answer = registry.call(a, Panic).await;
    assert!(
        matches!(answer, Err(CallError::Unavailable { quarantined: false, retry_after }) if retry_after == Duration::from_millis(100)),
        "{answer:?}"
    );
    // The sibling on the same arbiter keeps serving, and was not restarted.
    assert_eq!(
        registry
            .call(sibling, Ping)
            .await
            .expect("b")
            .expect("live"),
        sibling
    );
    assert_eq!(activations(&sibling), 1);
    // During the backoff the crashed actor is unavailable; afterwards it comes back from the store.
    assert!(matches!(
        registry.call(a, Ping).await,
        Err(CallError::Unavailable { .. })
    ));
    clock.advance(Duration::from_millis(100));
    assert_eq!(registry.call(a, Ping).await.expect("a").expect("live"), a);
    assert_eq!(activations(&a), 2);

    let (events, dropped) = runtime.drain_supervision_events();
    assert_eq!(dropped, 0);
    assert!(matches!(
        events.as_slice(),
        [SupervisionEvent::Restarting { omni, parent: Some(p), crashes: 1, .. }] if *omni == a && *p == master
    ));
    runtime.shutdown(DRAIN).await;
}

#[actix::test]
async fn intensity_exceeded_quarantines_until_the_cool_down_ends() {
    let fx = Fixture::new();
    let (runtime, registry, clock) = (&fx.runtime, &fx.registry, &fx.clock);
    let (master, a, _) = same_arbiter_pair(runtime, "quarantine-master").await;
    fx.crash_into_quarantine(a).await;
    assert!(runtime.is_quarantined(&a));
    let (events, _) = runtime.drain_supervision_events();
    assert!(matches!(
        events.last(),
        Some(SupervisionEvent::Quarantined { omni, parent: Some(p), .. }) if *omni == a && *p == master
    ));

    clock.advance(Duration::from_secs(59));
    assert!(matches!(
        registry.call(a, Ping).await,
        Err(CallError::Unavailable { quarantined: true, retry_after }) if retry_after <= Duration::from_secs(1)
    ));
    clock.advance(Duration::from_secs(1));
    assert!(!runtime.is_quarantined(&a));
    assert_eq!(registry.call(a, Ping).await.expect("a").expect("live"), a);
    runtime.shutdown(DRAIN).await;
}

#[actix::test]
async fn a_quarantine_can_be_lifted_early() {
    let fx = Fixture::new();
    let (runtime, registry) = (&fx.runtime, &fx.registry);
    let (master, a, _) = same_arbiter_pair(runtime, "lift-master").await;
    fx.crash_into_quarantine(a).await;
    assert!(runtime.lift_quarantine(&a));
    assert!(!runtime.lift_quarantine(&a), "lifting twice finds nothing");
    assert_eq!(registry.call(a, Ping).await.expect("a").expect("live"), a);
    // The quarantine and its lift are events for the audit layer (restarts are only logged).
    let (events, dropped) = runtime.drain_supervision_events();
    assert_eq!(dropped, 0);
    let kinds: Vec<_> = events
        .iter()
        .filter_map(|e| match e {
            SupervisionEvent::Quarantined { omni, parent, .. } if *omni == a => {
                Some(("quarantined", *parent))
            }
            SupervisionEvent::QuarantineLifted { omni, .. } if *omni == a => Some(("lifted", None)),
            _ => None,
        })
        .collect();
    assert_eq!(kinds, [("quarantined", Some(master)), ("lifted", None)]);
    runtime.shutdown(DRAIN).await;
}

#[actix::test]
async fn revoking_a_quarantined_actor_works() {
    let fx = Fixture::new();
    let (runtime, registry) = (&fx.runtime, &fx.registry);
    let (_, a, _) = same_arbiter_pair(runtime, "rq-master").await;
    fx.crash_into_quarantine(a).await;
    let receipt = runtime.revoke(a).await.expect("revoked while quarantined");
    assert!(receipt.new);
    assert!(matches!(runtime.status(&a), Ok(Some(Status::Revoked { by, .. })) if by == a));
    // Revocation wins over quarantine, and lifting the quarantine does not bring it back.
    assert!(matches!(
        registry.call(a, Ping).await,
        Err(CallError::Revoked { .. })
    ));
    runtime.lift_quarantine(&a);
    assert!(matches!(
        registry.call(a, Ping).await,
        Err(CallError::Revoked { .. })
    ));
    runtime.shutdown(DRAIN).await;
}

#[actix::test]
async fn a_full_mailbox_answers_busy_at_once() {
    let fx = Fixture::new();
    let (runtime, registry) = (&fx.runtime, &fx.registry);
    let (_, a, _) = same_arbiter_pair(runtime, "busy-master").await;
    let gate = Arc::new(Semaphore::new(0));
    let held: Vec<_> = (0..MAILBOX)
        .map(|_| {
            let (registry, gate) = (registry.clone(), gate.clone());
            actix::spawn(async move { registry.call(a, Hold(gate)).await })
        })
        .collect();
    assert!(
        wait_until(
            || runtime.calls_in_flight() == MAILBOX,
            Duration::from_secs(10)
        )
        .await
    );

    // Capacity + 1: refused at once, without waiting for the held calls.
    assert!(matches!(registry.call(a, Ping).await, Err(CallError::Busy)));

    gate.add_permits(MAILBOX);
    for call in held {
        assert_eq!(call.await.expect("joined").expect("answered"), a);
    }
    assert_eq!(registry.call(a, Ping).await.expect("a").expect("live"), a);
    runtime.shutdown(DRAIN).await;
}

#[actix::test]
async fn shutdown_stops_intake_drains_calls_and_stops_deepest_first() {
    let fx = Fixture::new();
    let (runtime, registry) = (&fx.runtime, &fx.registry);
    let (master, a, sibling) = same_arbiter_pair(runtime, "shutdown-master").await;
    let leaf = omni_of(Some(&a), "leaf");
    runtime
        .create(create(Some(&a), "leaf"))
        .await
        .expect("leaf");
    for omni in [master, a, leaf] {
        registry
            .call(omni, Ping)
            .await
            .expect("call")
            .expect("live");
    }
    let watches: Vec<_> = [leaf, a, master]
        .iter()
        .map(|o| registry.stop_watch(o).expect("active"))
        .collect();

    let gate = Arc::new(Semaphore::new(0));
    let held = {
        let (registry, gate) = (registry.clone(), gate.clone());
        actix::spawn(async move { registry.call(leaf, Hold(gate)).await })
    };
    assert!(wait_until(|| runtime.calls_in_flight() == 1, Duration::from_secs(10)).await);
    let shutdown = {
        let runtime = runtime.clone();
        actix::spawn(async move { runtime.shutdown(DRAIN).await })
    };
    // Intake is closed: nothing new activates while the held call drains.
    assert!(wait_until(|| runtime.is_closing(), Duration::from_secs(10)).await);
    let refused = registry.call(sibling, Ping).await;
    assert!(
        matches!(refused, Err(CallError::ShuttingDown)),
        "{refused:?}"
    );
    gate.add_permits(1);
    assert_eq!(
        held.await.expect("joined").expect("drained, not dropped"),
        leaf
    );
    let report = shutdown.await.expect("joined");
    assert_eq!(report.abandoned_calls, 0);
    assert_eq!(report.stopped_actors, 3);
    for watch in watches {
        watch.stopped().await;
    }
    assert!(
        !runtime.store().writer_running(),
        "the store is closed last"
    );
}

#[actix::test]
async fn shutdown_drain_is_bounded() {
    let fx = Fixture::new();
    let (runtime, registry) = (&fx.runtime, &fx.registry);
    let (_, a, _) = same_arbiter_pair(runtime, "bounded-master").await;
    let gate = Arc::new(Semaphore::new(0));
    let held = {
        let (registry, gate) = (registry.clone(), gate.clone());
        actix::spawn(async move { registry.call(a, Hold(gate)).await })
    };
    assert!(wait_until(|| runtime.calls_in_flight() == 1, Duration::from_secs(10)).await);
    let report = runtime.shutdown(Duration::from_millis(20)).await;
    assert_eq!(report.abandoned_calls, 1);
    let abandoned = held.await.expect("joined");
    // The abandoned call is retried once by `Registry::call`, which now refuses.
    assert!(
        matches!(abandoned, Err(CallError::ShuttingDown)),
        "{abandoned:?}"
    );
}
