//! Budget counters in the store's writer: the rolling window and its granularity, `frees_at`,
//! retries counted once, the tree's policy version, and bounded storage under steady spending.

use std::sync::Arc;

use agentkeys_actors::ledger::policies::bucket_count;
use agentkeys_actors::ledger::{
    self, Ledger, RecordSigned, SpendCheck, SpendError, SpendRefusal, audit,
};
use agentkeys_actors::policy::{Asset, Budget, Charge};
use agentkeys_runtime::store::{Origin, StoreOptions, WriteError};
use agentkeys_runtime::{Omni, Timestamp};
use agentkeys_tests::{T0, omni_of};

fn ledger(dir: &std::path::Path) -> Ledger {
    let options = StoreOptions {
        prepare: vec![ledger::create_tables],
        ..StoreOptions::default()
    };
    let store = agentkeys_tests::engine::open_store(dir, &options, T0);
    Ledger::new(Arc::new(store)).expect("ledger")
}

fn at(seconds: u64) -> Timestamp {
    // T0 rounded down to a whole hour, so bucket edges are where the test expects them.
    let base = T0.as_millis() / 3_600_000 * 3_600_000;
    Timestamp::from_millis(base + seconds * 1000)
}

/// A signature by `owner` spending `amount` against one budget of `window` and `max`.
fn spend(
    owner: Omni,
    n: u64,
    amount: u128,
    window: u64,
    max: u128,
    when: Timestamp,
) -> RecordSigned {
    let mut entry = audit::AuditEntry::done(
        owner,
        Origin::default(),
        audit::op::SIGN_TX,
        owner,
        audit::detail_hash(&n.to_be_bytes()),
        when,
    );
    entry.spend = vec![agentkeys_actors::policy::Spend {
        asset: Asset::Native,
        chain: 1,
        amount,
    }];
    RecordSigned {
        check: Some(SpendCheck {
            master: owner,
            version: 0,
            charges: vec![Charge {
                owner,
                budget: Budget {
                    asset: Asset::Native,
                    chain: 1,
                    window_seconds: window,
                    max,
                },
                amount,
            }],
            rates: Vec::new(),
            digest: entry.detail,
            window_seconds: window,
        }),
        entry,
    }
}

#[tokio::test]
async fn a_spend_leaves_the_window_after_it_never_before() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ledger = ledger(dir.path());
    let owner = omni_of(None, "window");
    // Ten spends of 1 in the first ten seconds against 10 per 60 s.
    for n in 0..10 {
        let done = ledger
            .record_signed(spend(owner, n, 1, 60, 10, at(n)))
            .await;
        assert!(matches!(done, Ok(Ok(_))), "{done:?}");
    }
    let refused = ledger
        .record_signed(spend(owner, 10, 1, 60, 10, at(30)))
        .await;
    let Ok(Err(SpendRefusal::Budget(state))) = refused else {
        panic!("{refused:?}")
    };
    assert_eq!((state.spent, state.remaining), (10, 0));
    // The first spend (second 0, a 1 s bucket) counts until 0 + 1 + 60.
    assert_eq!(state.frees_at, Some(at(61)));
    assert!(matches!(
        ledger
            .record_signed(spend(owner, 11, 1, 60, 10, at(60)))
            .await,
        Ok(Err(SpendRefusal::Budget(_)))
    ));
    assert!(matches!(
        ledger
            .record_signed(spend(owner, 12, 1, 60, 10, at(61)))
            .await,
        Ok(Ok(_))
    ));
    // A retry of an acknowledged digest is recorded again (a row without a spend) and counted
    // once.
    assert!(matches!(
        ledger
            .record_signed(spend(owner, 12, 1, 60, 10, at(61)))
            .await,
        Ok(Ok(_))
    ));
    assert!(matches!(
        ledger
            .record_signed(spend(owner, 13, 1, 60, 10, at(61)))
            .await,
        Ok(Err(SpendRefusal::Budget(_)))
    ));
    // The signature rows' spends add up to what was counted: the retry's row has none.
    let rows = ledger.audit_rows(&owner, 0, 100).expect("rows");
    let signed: Vec<_> = rows
        .iter()
        .filter(|r| r.entry.op == audit::op::SIGN_TX)
        .collect();
    assert_eq!(signed.len(), 12);
    let total: u128 = signed
        .iter()
        .flat_map(|r| r.entry.spend.iter().map(|s| s.amount))
        .sum();
    assert_eq!(total, 11);
    assert!(signed[11].entry.spend.is_empty());
}
#[tokio::test]
async fn a_stale_policy_version_is_refused_before_anything_is_written() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ledger = ledger(dir.path());
    let owner = omni_of(None, "version");
    let mut stale = spend(owner, 0, 1, 60, 10, at(0));
    if let Some(check) = &mut stale.check {
        check.version = 7;
    }
    assert!(matches!(
        ledger.record_signed(stale).await,
        Err(WriteError::Rejected(SpendError::PolicyChanged))
    ));
    assert_eq!(bucket_count(ledger.store()).expect("count"), 0);
    assert!(ledger.audit_head(&owner).expect("head").is_none());
}

#[tokio::test]
async fn steady_spending_keeps_a_bounded_number_of_buckets() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ledger = ledger(dir.path());
    let owner = omni_of(None, "steady");
    // One spend every 2 s for three hours against a one-minute budget, 300 at a time (so the
    // writer folds them into few commits).
    for chunk in (0..3 * 3600 / 2).collect::<Vec<u64>>().chunks(300) {
        // Submitted on the call; awaited after, so the writer sees them together.
        let writes: Vec<_> = chunk
            .iter()
            .map(|n| ledger.record_signed(spend(owner, *n, 1, 60, u128::MAX - 1, at(2 * n))))
            .collect();
        for write in writes {
            let done = write.await;
            assert!(matches!(done, Ok(Ok(_))), "{done:?}");
        }
    }
    // 1 s buckets for about 2 min (one every 2 s), 1 min buckets for about 2 h, 1 h buckets
    // for the 3 h, and at most a few not yet pruned per series.
    let buckets = bucket_count(ledger.store()).expect("count");
    assert!(buckets <= 61 + 122 + 4 + 3 * 8, "{buckets} buckets");
}
