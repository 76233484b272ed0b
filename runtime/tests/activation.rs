//! Virtual activation: on first message, exactly once, passivation, no scan at boot.

mod kit;

use std::time::Duration;

use agentkeys_runtime::{CallError, Clock, ManualClock, Registry};
use kit::{
    DRAIN, Fixture, Ping, Probe, T0, activations, create, omni_of, open_store, start_runtime,
};

#[actix::test]
async fn concurrent_first_requests_activate_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open_store(dir.path());
    let clock = ManualClock::new(T0);
    let runtime = start_runtime(store.clone(), &clock);
    let registry = Registry::<Probe>::new(&runtime, ());
    let master = omni_of(None, "once-master");
    let agent = omni_of(Some(&master), "once");
    runtime
        .create(create(None, "once-master"))
        .await
        .expect("master");
    runtime
        .create(create(Some(&master), "once"))
        .await
        .expect("agent");

    assert!(
        !registry.is_active(&agent),
        "actors are data until addressed"
    );
    // First requests from several OS threads at once, released together by a barrier.
    let barrier = std::sync::Barrier::new(8);
    std::thread::scope(|scope| {
        for _ in 0..8 {
            let (registry, barrier) = (registry.clone(), &barrier);
            scope.spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("runtime");
                barrier.wait();
                for _ in 0..4 {
                    let answer = rt.block_on(registry.call(agent, Ping));
                    assert_eq!(answer.expect("delivered").expect("live"), agent);
                }
            });
        }
    });
    assert_eq!(activations(&agent), 1);
    assert_eq!(registry.active(), 1);
    runtime.shutdown(DRAIN).await;
}

#[actix::test]
async fn unknown_omni_is_not_found_and_leaves_nothing_behind() {
    let fx = Fixture::new();
    let (runtime, registry) = (&fx.runtime, &fx.registry);
    let ghost = omni_of(None, "ghost");
    assert!(matches!(
        registry.call(ghost, Ping).await,
        Err(CallError::NotFound)
    ));
    assert_eq!(registry.active(), 0);
    runtime.shutdown(DRAIN).await;
}

#[actix::test]
async fn idle_actors_passivate_by_the_injected_clock_and_reactivate() {
    let fx = Fixture::new();
    let (clock, runtime, registry) = (&fx.clock, &fx.runtime, &fx.registry);
    let master = omni_of(None, "idle-master");
    let (a, b) = (omni_of(Some(&master), "a"), omni_of(Some(&master), "b"));
    runtime
        .create(create(None, "idle-master"))
        .await
        .expect("master");
    runtime.create(create(Some(&master), "a")).await.expect("a");
    runtime.create(create(Some(&master), "b")).await.expect("b");

    registry.call(a, Ping).await.expect("a").expect("live");
    clock.advance(Duration::from_secs(40));
    registry.call(b, Ping).await.expect("b").expect("live");
    clock.advance(Duration::from_secs(30));
    // a idle 70 s (> 60 s timeout), b idle 30 s.
    assert_eq!(registry.passivate_idle(clock.now()), 1);
    assert!(!registry.is_active(&a));
    assert!(registry.is_active(&b));

    assert_eq!(registry.call(a, Ping).await.expect("a").expect("live"), a);
    assert_eq!(
        activations(&a),
        2,
        "a passivated actor comes back from the store"
    );
    runtime.shutdown(DRAIN).await;
}

#[actix::test]
async fn a_passivated_burst_leaves_no_table_room_behind() {
    let fx = Fixture::new();
    let (clock, runtime, registry) = (&fx.clock, &fx.runtime, &fx.registry);
    let master = omni_of(None, "burst-master");
    runtime
        .create(create(None, "burst-master"))
        .await
        .expect("master");
    let pending: Vec<_> = (0..300)
        .map(|i| runtime.create(create(Some(&master), &format!("n{i}"))))
        .collect();
    for p in pending {
        let omni = p.await.expect("created").record.omni;
        registry
            .call(omni, Ping)
            .await
            .expect("call")
            .expect("live");
    }
    assert_eq!(registry.active(), 300);
    assert!(registry.capacity() >= 300);

    clock.advance(Duration::from_secs(3600));
    assert_eq!(registry.passivate_idle(clock.now()), 300);
    assert_eq!(registry.active(), 0);
    assert!(
        registry.capacity() <= 64,
        "room for {} entries is left",
        registry.capacity()
    );
    runtime.shutdown(DRAIN).await;
}

#[actix::test]
async fn boot_reads_nothing_until_an_actor_is_addressed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open_store(dir.path());
    let master = omni_of(None, "boot-master");
    let pending: Vec<_> = std::iter::once(create(None, "boot-master"))
        .chain((0..200).map(|i| create(Some(&master), &format!("n{i}"))))
        .map(|op| store.create_actor(op))
        .collect();
    for p in pending {
        p.await.expect("created");
    }
    store.close();
    drop(store);

    let clock = ManualClock::new(T0);
    let runtime = start_runtime(open_store(dir.path()), &clock);
    let registry = Registry::<Probe>::new(&runtime, ());
    assert_eq!(runtime.active_actors(), 0);
    assert!(runtime.revoked().is_empty());
    let n7 = omni_of(Some(&master), "n7");
    assert_eq!(
        registry.call(n7, Ping).await.expect("n7").expect("live"),
        n7
    );
    assert_eq!(runtime.active_actors(), 1);
    runtime.shutdown(DRAIN).await;
}
