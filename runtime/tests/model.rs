//! Model test: random create / revoke / activate / passivate / reopen sequences against a
//! `BTreeMap` reference. Invariants: no revoked actor is active; descendants of revoked actors
//! report revoked (by the revoked ancestor nearest the root); labels are unique per parent.

mod kit;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use agentkeys_runtime::store::{CreateError, Status, Store, WriteError};
use agentkeys_runtime::{CallError, ManualClock, Omni, Registry, Runtime, Timestamp};
use kit::{DRAIN, Ping, Probe, T0, create, omni_of, open_store, start_runtime};
use proptest::prelude::*;

#[derive(Debug, Clone)]
enum Op {
    CreateMaster(u8),
    CreateChild { parent: usize, label: u8 },
    Revoke(usize),
    Activate(usize),
    Passivate(usize),
    Reopen,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        1 => (0u8..2).prop_map(Op::CreateMaster),
        5 => (any::<usize>(), 0u8..3).prop_map(|(parent, label)| Op::CreateChild { parent, label }),
        2 => any::<usize>().prop_map(Op::Revoke),
        4 => any::<usize>().prop_map(Op::Activate),
        2 => any::<usize>().prop_map(Op::Passivate),
        1 => Just(Op::Reopen),
    ]
}

#[derive(Debug, Clone)]
struct Node {
    parent: Option<Omni>,
    label: String,
    revoked_at: Option<Timestamp>,
}

/// The reference: every actor by omni, in creation order for index-based picks.
#[derive(Default)]
struct Model {
    nodes: BTreeMap<Omni, Node>,
    order: Vec<Omni>,
}

impl Model {
    fn pick(&self, i: usize) -> Option<Omni> {
        (!self.order.is_empty()).then(|| self.order[i % self.order.len()])
    }

    /// The revoked ancestor nearest the root (or the node itself).
    fn status(&self, omni: &Omni) -> Status {
        let mut chain = vec![*omni];
        while let Some(parent) = self.nodes[chain.last().expect("non-empty")].parent {
            chain.push(parent);
        }
        chain
            .iter()
            .rev()
            .find_map(|o| {
                self.nodes[o]
                    .revoked_at
                    .map(|at| Status::Revoked { by: *o, at })
            })
            .unwrap_or(Status::Active)
    }
}

struct System {
    dir: tempfile::TempDir,
    store: Arc<Store>,
    runtime: Runtime,
    registry: Registry<Probe>,
    clock: ManualClock,
}

impl System {
    fn open(dir: tempfile::TempDir, clock: ManualClock) -> Self {
        let store = open_store(dir.path());
        let runtime = start_runtime(store.clone(), &clock);
        let registry = Registry::new(&runtime, ());
        Self {
            dir,
            store,
            runtime,
            registry,
            clock,
        }
    }

    async fn reopen(self) -> Self {
        self.runtime.shutdown(DRAIN).await;
        let Self { dir, clock, .. } = self;
        Self::open(dir, clock)
    }
}

async fn apply(sys: System, model: &mut Model, op: &Op) -> System {
    sys.clock.advance(std::time::Duration::from_millis(7));
    match op {
        Op::CreateMaster(k) => {
            let name = format!("m{k}");
            let omni = omni_of(None, &name);
            let answer = sys.runtime.create(create(None, &name)).await;
            match model.nodes.get(&omni).map(|n| n.revoked_at) {
                Some(Some(_)) => assert!(
                    matches!(
                        answer,
                        Err(WriteError::Rejected(CreateError::Revoked { .. }))
                    ),
                    "{answer:?}"
                ),
                Some(None) => assert!(!answer.expect("existing").new),
                None => {
                    assert!(answer.expect("created").new);
                    model.nodes.insert(
                        omni,
                        Node {
                            parent: None,
                            label: String::new(),
                            revoked_at: None,
                        },
                    );
                    model.order.push(omni);
                }
            }
        }
        Op::CreateChild { parent, label } => {
            let Some(parent) = model.pick(*parent) else {
                return sys;
            };
            let label = format!("l{label}");
            let omni = omni_of(Some(&parent), &label);
            let answer = sys.runtime.create(create(Some(&parent), &label)).await;
            match (
                model.status(&parent),
                model.nodes.get(&omni).map(|n| n.revoked_at),
            ) {
                (Status::Revoked { by, .. }, _) => assert!(
                    matches!(answer, Err(WriteError::Rejected(CreateError::ParentRevoked { by: b, .. })) if b == by),
                    "{answer:?}"
                ),
                (Status::Active, Some(Some(_))) => assert!(
                    matches!(
                        answer,
                        Err(WriteError::Rejected(CreateError::Revoked { .. }))
                    ),
                    "{answer:?}"
                ),
                (Status::Active, Some(None)) => assert!(!answer.expect("existing").new),
                (Status::Active, None) => {
                    assert!(answer.expect("created").new);
                    model.nodes.insert(
                        omni,
                        Node {
                            parent: Some(parent),
                            label,
                            revoked_at: None,
                        },
                    );
                    model.order.push(omni);
                }
            }
        }
        Op::Revoke(i) => {
            let Some(omni) = model.pick(*i) else {
                return sys;
            };
            let receipt = sys.runtime.revoke(omni).await.expect("revoke");
            let node = model.nodes.get_mut(&omni).expect("known");
            assert_eq!(receipt.new, node.revoked_at.is_none());
            node.revoked_at.get_or_insert(receipt.revoked_at);
            assert_eq!(Some(receipt.revoked_at), node.revoked_at);
        }
        Op::Activate(i) => {
            let Some(omni) = model.pick(*i) else {
                return sys;
            };
            let answer = sys.registry.call(omni, Ping).await;
            match model.status(&omni) {
                Status::Active => assert_eq!(answer.expect("delivered").expect("live"), omni),
                Status::Revoked { by, at } => assert!(
                    matches!(answer, Err(CallError::Revoked { by: b, at: t }) if b == by && t == at),
                    "{answer:?}"
                ),
            }
        }
        Op::Passivate(i) => {
            let Some(omni) = model.pick(*i) else {
                return sys;
            };
            let was_active = sys.registry.is_active(&omni);
            assert_eq!(sys.registry.passivate(&omni), was_active);
            assert!(!sys.registry.is_active(&omni));
        }
        Op::Reopen => return sys.reopen().await,
    }
    sys
}

fn check_invariants(sys: &System, model: &Model) {
    let mut labels: BTreeMap<Omni, BTreeSet<String>> = BTreeMap::new();
    for (omni, node) in &model.nodes {
        let expected = model.status(omni);
        assert_eq!(
            sys.runtime.status(omni).expect("read"),
            Some(expected),
            "status of {omni:?}"
        );
        if sys.registry.is_active(omni) {
            assert_eq!(expected, Status::Active, "a revoked actor is active");
        }
        if let Some(parent) = node.parent {
            assert!(
                labels.entry(parent).or_default().insert(node.label.clone()),
                "duplicate label"
            );
        }
    }
    for (parent, expected) in labels {
        let stored: Vec<_> = sys.store.children(&parent, None, 100).expect("read");
        let stored_labels: BTreeSet<_> = stored.iter().map(|c| c.label.clone()).collect();
        assert_eq!(
            stored_labels.len(),
            stored.len(),
            "labels unique per parent"
        );
        assert_eq!(stored_labels, expected);
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn runtime_matches_model(ops in prop::collection::vec(op(), 1..40)) {
        actix::System::new().block_on(async move {
            let dir = tempfile::tempdir().expect("tempdir");
            let mut sys = System::open(dir, ManualClock::new(T0));
            let mut model = Model::default();
            for op in &ops {
                sys = apply(sys, &mut model, op).await;
                check_invariants(&sys, &model);
            }
            sys.runtime.shutdown(DRAIN).await;
        });
    }
}
