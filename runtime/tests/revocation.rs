//! Revocation: durable marker, index, subtree stop, computed status, races, restarts.

mod kit;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use agentkeys_runtime::store::{CreateError, RevokeError, Status, WriteError};
use agentkeys_runtime::{CallError, Omni, Registry, Runtime};
use kit::{
    DRAIN, Fixture, Ping, Probe, T0, create, omni_of, open_store, start_runtime, wait_until,
};

/// master → {mid → {leaf0..leaf3}, side → {sib0..sib3}}
async fn build_tree(runtime: &Runtime, name: &str) -> (Omni, Omni, Vec<Omni>, Vec<Omni>) {
    let master = omni_of(None, name);
    runtime.create(create(None, name)).await.expect("master");
    let mid = omni_of(Some(&master), "mid");
    let side = omni_of(Some(&master), "side");
    runtime
        .create(create(Some(&master), "mid"))
        .await
        .expect("mid");
    runtime
        .create(create(Some(&master), "side"))
        .await
        .expect("side");
    let mut leaves = Vec::new();
    let mut siblings = Vec::new();
    for i in 0..4 {
        let label = format!("n{i}");
        runtime
            .create(create(Some(&mid), &label))
            .await
            .expect("leaf");
        runtime
            .create(create(Some(&side), &label))
            .await
            .expect("sibling");
        leaves.push(omni_of(Some(&mid), &label));
        siblings.push(omni_of(Some(&side), &label));
    }
    (master, mid, leaves, siblings)
}

#[actix::test]
async fn revoke_stops_the_active_subtree_and_status_is_computed() {
    let fx = Fixture::new();
    let (runtime, registry) = (&fx.runtime, &fx.registry);
    let (master, mid, leaves, siblings) = build_tree(runtime, "rv-master").await;
    for omni in leaves.iter().chain(&siblings).chain([&mid]) {
        registry
            .call(*omni, Ping)
            .await
            .expect("call")
            .expect("live");
    }
    assert_eq!(registry.active(), 9);

    let receipt = runtime.revoke(mid).await.expect("revoked");
    assert!(receipt.new);
    assert_eq!(receipt.revoked_at, T0);
    assert_eq!(receipt.stopped, 5, "mid and its four leaves");
    assert_eq!(registry.active(), 4, "siblings keep running");

    for leaf in &leaves {
        assert_eq!(
            runtime.status(leaf).expect("read"),
            Some(Status::Revoked { by: mid, at: T0 })
        );
        assert!(matches!(
            registry.call(*leaf, Ping).await,
            Err(CallError::Revoked { by, .. }) if by == mid
        ));
    }
    assert_eq!(runtime.status(&master).expect("read"), Some(Status::Active));
    for sibling in &siblings {
        assert_eq!(
            registry
                .call(*sibling, Ping)
                .await
                .expect("call")
                .expect("live"),
            *sibling
        );
    }
    runtime.shutdown(DRAIN).await;
}

#[actix::test]
async fn revoke_is_idempotent_and_blocks_creation_below() {
    let fx = Fixture::new();
    let (clock, runtime) = (&fx.clock, &fx.runtime);
    let (_master, mid, leaves, _) = build_tree(runtime, "idem-master").await;

    let first = runtime.revoke(mid).await.expect("revoked");
    clock.advance(Duration::from_secs(5));
    let again = runtime.revoke(mid).await.expect("repeat is fine");
    assert!(first.new && !again.new);
    assert_eq!(again.revoked_at, first.revoked_at, "the first time stands");

    assert!(matches!(
        runtime.create(create(Some(&leaves[0]), "deeper")).await,
        Err(WriteError::Rejected(CreateError::ParentRevoked { by, .. })) if by == mid
    ));
    let master = omni_of(None, "idem-master");
    assert!(matches!(
        runtime.create(create(Some(&master), "mid")).await,
        Err(WriteError::Rejected(CreateError::Revoked { .. }))
    ));
    assert!(matches!(
        runtime.revoke(omni_of(None, "nobody")).await,
        Err(WriteError::Rejected(RevokeError::NotFound))
    ));
    runtime.shutdown(DRAIN).await;
}

#[actix::test]
async fn a_dropped_revoke_future_still_revokes() {
    let fx = Fixture::new();
    let (runtime, registry) = (&fx.runtime, &fx.registry);
    let (_master, mid, leaves, _) = build_tree(runtime, "drop-master").await;
    registry
        .call(leaves[0], Ping)
        .await
        .expect("call")
        .expect("live");

    // Poll once so the work is submitted, then drop the caller's future.
    let fut = runtime.revoke(mid);
    let _ = tokio::time::timeout(Duration::ZERO, fut).await;
    let status = runtime.clone();
    assert!(
        wait_until(
            || matches!(status.status(&leaves[0]), Ok(Some(Status::Revoked { .. }))),
            Duration::from_secs(10)
        )
        .await
    );
    assert!(wait_until(|| !registry.is_active(&leaves[0]), Duration::from_secs(10)).await);
    runtime.shutdown(DRAIN).await;
}

#[actix::test]
async fn revocation_survives_a_restart() {
    let fx = Fixture::new();
    let (clock, runtime) = (&fx.clock, &fx.runtime);
    let (_master, mid, leaves, siblings) = build_tree(runtime, "restart-master").await;
    runtime.revoke(mid).await.expect("revoked");
    runtime.shutdown(DRAIN).await;

    let runtime = start_runtime(open_store(fx.dir.path()), clock);
    let registry = Registry::<Probe>::new(&runtime, ());
    assert!(runtime.revoked().is_empty(), "the index fills lazily");
    assert!(matches!(
        registry.call(leaves[2], Ping).await,
        Err(CallError::Revoked { by, .. }) if by == mid
    ));
    assert_eq!(
        registry
            .call(siblings[2], Ping)
            .await
            .expect("call")
            .expect("live"),
        siblings[2]
    );
    runtime.shutdown(DRAIN).await;
}

/// Tasks hammer the leaves while the middle node is revoked. Every request sent after `revoke`
/// returned must fail; the siblings' requests must all succeed.
#[actix::test]
async fn no_request_sent_after_revoke_returned_succeeds() {
    let fx = Fixture::new();
    let (runtime, registry) = (&fx.runtime, &fx.registry);
    let (_master, mid, leaves, siblings) = build_tree(runtime, "race-master").await;

    let revoked = Arc::new(AtomicBool::new(false));
    let after = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for (target, under_mid) in leaves
        .iter()
        .map(|l| (*l, true))
        .chain(siblings.iter().map(|s| (*s, false)))
    {
        for _ in 0..2 {
            let (registry, revoked, after) = (registry.clone(), revoked.clone(), after.clone());
            tasks.push(tokio::spawn(async move {
                let mut checked_after = 0;
                // Bounded: stop once 50 requests were sent after the revocation returned.
                for _ in 0..100_000 {
                    let sent_after = revoked.load(Ordering::SeqCst);
                    let answer = registry.call(target, Ping).await;
                    let ok = matches!(answer, Ok(Ok(_)));
                    if !under_mid {
                        assert!(ok, "a sibling failed: {answer:?}");
                    } else if sent_after {
                        assert!(!ok, "a request sent after revoke returned succeeded");
                    }
                    if sent_after {
                        checked_after += 1;
                        after.fetch_add(1, Ordering::Relaxed);
                        if checked_after >= 50 {
                            break;
                        }
                    }
                }
                checked_after
            }));
        }
    }
    // Let the hammering start before revoking.
    let a = after.clone();
    let _ = wait_until(
        || a.load(Ordering::Relaxed) > 0 || registry.active() >= 8,
        Duration::from_secs(10),
    )
    .await;
    runtime.revoke(mid).await.expect("revoked");
    revoked.store(true, Ordering::SeqCst);
    for task in tasks {
        assert_eq!(task.await.expect("task"), 50);
    }
    runtime.shutdown(DRAIN).await;
}
