//! Model test of the domain ledger: random logins, agent creations, scope changes, link codes
//! issued and redeemed, device deletions, revocations and store reopenings, against a
//! `BTreeMap` reference. After every step the store agrees with the model on each actor's
//! bindings (key, live or deleted), its stored scopes, each master's identity and each code's
//! owner; refusals change nothing.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use agentkeys_actors::ledger::{
    self, DeleteDevice, IssueLinkCode, Ledger, Login, NewActor, RedeemLinkCode, Redemption,
    Registration, Revoke, SetScopes,
};
use agentkeys_runtime::store::{CreateActor, Origin, RevokeActor, StoreOptions, WriteError};
use agentkeys_runtime::{Omni, Timestamp};
use agentkeys_tests::{T0, omni_of};
use proptest::prelude::*;

const SCOPES: [&str; 3] = ["sign:eip191", "sign:eip712", "actors:create"];

#[derive(Debug, Clone)]
enum Op {
    Login {
        master: u8,
        key: u8,
    },
    CreateAgent {
        parent: usize,
        label: u8,
        scopes: u8,
    },
    SetScopes {
        actor: usize,
        scopes: u8,
    },
    Issue {
        actor: usize,
        code: u8,
    },
    Redeem {
        code: u8,
        key: u8,
    },
    Delete {
        actor: usize,
        binding: usize,
    },
    Revoke(usize),
    Reopen,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        2 => (0u8..2, 0u8..3).prop_map(|(master, key)| Op::Login { master, key }),
        3 => (any::<usize>(), 0u8..3, 0u8..8)
            .prop_map(|(parent, label, scopes)| Op::CreateAgent { parent, label, scopes }),
        2 => (any::<usize>(), 0u8..8).prop_map(|(actor, scopes)| Op::SetScopes { actor, scopes }),
        2 => (any::<usize>(), 0u8..4).prop_map(|(actor, code)| Op::Issue { actor, code }),
        3 => (0u8..4, 0u8..4).prop_map(|(code, key)| Op::Redeem { code, key }),
        2 => (any::<usize>(), any::<usize>()).prop_map(|(actor, binding)| Op::Delete { actor, binding }),
        1 => any::<usize>().prop_map(Op::Revoke),
        1 => Just(Op::Reopen),
    ]
}

fn scope_set(bits: u8) -> Vec<String> {
    let mut out: Vec<String> = SCOPES
        .iter()
        .enumerate()
        .filter(|(i, _)| bits & (1 << i) != 0)
        .map(|(_, s)| s.to_string())
        .collect();
    out.sort();
    out
}

fn jkt(key: u8) -> String {
    format!("key-{key}")
}

#[derive(Debug, Clone)]
struct Actor {
    parent: Option<Omni>,
    scopes: Vec<String>,
    revoked: bool,
    /// (key, live), in binding order.
    bindings: Vec<(String, bool)>,
}

#[derive(Default)]
struct Model {
    actors: BTreeMap<Omni, Actor>,
    order: Vec<Omni>,
    identities: BTreeMap<Omni, String>,
    /// code → (owner, redeemed by).
    codes: BTreeMap<u8, (Omni, Option<String>)>,
}

impl Model {
    fn pick(&self, i: usize) -> Option<Omni> {
        (!self.order.is_empty()).then(|| self.order[i % self.order.len()])
    }

    fn live(&self, omni: &Omni) -> bool {
        let mut at = Some(*omni);
        while let Some(o) = at {
            let actor = &self.actors[&o];
            if actor.revoked {
                return false;
            }
            at = actor.parent;
        }
        true
    }
}

fn open(dir: &Path) -> Ledger {
    let options = StoreOptions {
        prepare: vec![ledger::create_tables],
        ..StoreOptions::default()
    };
    let store = agentkeys_tests::engine::open_store(dir, &options, T0);
    Ledger::new(Arc::new(store)).expect("ledger")
}

fn at(step: usize) -> Timestamp {
    Timestamp::from_millis(T0.as_millis() + step as u64)
}

async fn apply(ledger: &mut Ledger, dir: &Path, model: &mut Model, step: usize, op: Op) {
    let now = at(step);
    match op {
        Op::Login { master, key } => {
            let identity = format!("0x{}", format!("{master:02x}").repeat(20));
            let omni = omni_of(None, &identity);
            let login = Login {
                master: omni,
                wallet: [0x80 | master; 20],
                identity: ("evm".into(), identity.clone()),
                signer: Some([master; 20]),
                anchor: None,
                registration: Registration::Open,
                jkt: jkt(key),
                device_label: "login".into(),
                request_id: String::new(),
                at: now,
            };
            let result = ledger.login(login).await;
            if model.actors.get(&omni).is_some_and(|a| a.revoked) {
                assert!(result.is_err(), "a revoked master cannot log in");
                return;
            }
            result.expect("login");
            let actor = model.actors.entry(omni).or_insert_with(|| Actor {
                parent: None,
                scopes: Vec::new(),
                revoked: false,
                bindings: Vec::new(),
            });
            if !actor
                .bindings
                .iter()
                .any(|(k, live)| *live && *k == jkt(key))
            {
                actor.bindings.push((jkt(key), true));
            }
            if !model.order.contains(&omni) {
                model.order.push(omni);
                model.identities.insert(omni, identity);
            }
        }
        Op::CreateAgent {
            parent,
            label,
            scopes,
        } => {
            let Some(parent) = model.pick(parent) else {
                return;
            };
            let label = format!("a{label}");
            let omni = omni_of(Some(&parent), &label);
            let scopes = scope_set(scopes);
            let create = NewActor {
                actor: CreateActor {
                    omni,
                    parent: Some(parent),
                    label,
                    created_at: now,
                    origin: Origin::default(),
                    scopes: scopes.clone(),
                },
                wallet: None,
            };
            let result = ledger.create(create).await;
            let allowed = model.live(&parent)
                && model
                    .actors
                    .get(&omni)
                    .is_none_or(|a| !a.revoked && a.scopes == scopes);
            assert_eq!(result.is_ok(), allowed, "{result:?}");
            if allowed && !model.actors.contains_key(&omni) {
                model.actors.insert(
                    omni,
                    Actor {
                        parent: Some(parent),
                        scopes,
                        revoked: false,
                        bindings: Vec::new(),
                    },
                );
                model.order.push(omni);
            }
        }
        Op::SetScopes { actor, scopes } => {
            let Some(omni) = model.pick(actor) else {
                return;
            };
            let scopes = scope_set(scopes);
            let result = ledger
                .set_scopes(SetScopes {
                    omni,
                    scopes: scopes.clone(),
                    origin: Origin::default(),
                    at: now,
                })
                .await;
            let allowed = model.live(&omni) && model.actors[&omni].parent.is_some();
            assert_eq!(result.is_ok(), allowed, "{result:?}");
            if allowed {
                model.actors.get_mut(&omni).expect("known").scopes = scopes;
            }
        }
        Op::Issue { actor, code } => {
            let Some(omni) = model.pick(actor) else {
                return;
            };
            let result = ledger
                .issue_link_code(IssueLinkCode {
                    omni,
                    hash: [code; 32],
                    at: now,
                    expires_at: Timestamp::from_millis(now.as_millis() + 600_000),
                    cap: 16,
                    origin: Origin::default(),
                })
                .await;
            let allowed = model.live(&omni) && !model.codes.contains_key(&code);
            assert_eq!(result.is_ok(), allowed, "{result:?}");
            if allowed {
                model.codes.insert(code, (omni, None));
            }
        }
        Op::Redeem { code, key } => {
            let Some((owner, used)) = model.codes.get(&code).cloned() else {
                assert_eq!(ledger.link_code_owner(&[code; 32]).expect("read"), None);
                return;
            };
            let result = ledger
                .redeem_link_code(RedeemLinkCode {
                    omni: owner,
                    hash: [code; 32],
                    jkt: jkt(key),
                    device_label: "link".into(),
                    at: now,
                    request_id: String::new(),
                })
                .await;
            if !model.live(&owner) {
                assert!(result.is_err(), "a revoked actor's code binds nothing");
                return;
            }
            let bindings = &mut model.actors.get_mut(&owner).expect("known").bindings;
            match (used, result) {
                (None, Ok(Redemption::Bound { new: true, .. })) => {
                    // A key already bound (live) to the actor keeps its binding.
                    if !bindings.iter().any(|(k, live)| *live && *k == jkt(key)) {
                        bindings.push((jkt(key), true));
                    }
                    model.codes.insert(code, (owner, Some(jkt(key))));
                }
                (
                    Some(by),
                    Ok(Redemption::Bound {
                        new: false,
                        binding,
                        ..
                    }),
                ) => {
                    assert_eq!(by, jkt(key));
                    assert_eq!(binding.jkt, by);
                }
                // The same key's binding was deleted since: the code is spent.
                (Some(by), Err(WriteError::Rejected(ledger::LinkError::Expired))) => {
                    assert_eq!(by, jkt(key));
                }
                (Some(by), Ok(Redemption::UsedByOther { .. })) => assert_ne!(by, jkt(key)),
                other => panic!("unexpected redemption {other:?}"),
            }
        }
        Op::Delete { actor, binding } => {
            let Some(omni) = model.pick(actor) else {
                return;
            };
            let bids: Vec<u64> = ledger
                .devices(&omni)
                .expect("read")
                .iter()
                .map(|b| b.bid)
                .collect();
            if bids.is_empty() {
                return;
            }
            let i = binding % bids.len();
            let result = ledger
                .delete_device(DeleteDevice {
                    omni,
                    bid: bids[i],
                    origin: Origin::default(),
                    at: now,
                })
                .await;
            let allowed = model.live(&omni);
            assert_eq!(result.is_ok(), allowed, "{result:?}");
            if allowed {
                model.actors.get_mut(&omni).expect("known").bindings[i].1 = false;
            }
        }
        Op::Revoke(i) => {
            let Some(omni) = model.pick(i) else { return };
            let revoke = Revoke(RevokeActor {
                omni,
                at: now,
                origin: Origin::default(),
            });
            let revocation = ledger.store().submit(revoke).await.expect("revoked");
            let actor = model.actors.get_mut(&omni).expect("known");
            assert_eq!(revocation.new, !actor.revoked);
            if !actor.revoked {
                actor.revoked = true;
                // Its own bindings are tombstoned with it.
                for binding in &mut actor.bindings {
                    binding.1 = false;
                }
            }
        }
        Op::Reopen => {
            ledger.store().close();
            *ledger = open(dir);
        }
    }
}

fn check(ledger: &Ledger, model: &Model) {
    for (omni, actor) in &model.actors {
        let stored: Vec<(String, bool)> = ledger
            .devices(omni)
            .expect("read")
            .iter()
            .map(|b| (b.jkt.clone(), b.is_live()))
            .collect();
        assert_eq!(stored, actor.bindings, "bindings of {}", omni.short());
        let record = ledger.store().actor(omni).expect("read").expect("exists");
        assert_eq!(record.scopes, actor.scopes, "scopes of {}", omni.short());
        assert_eq!(record.revoked_at().is_some(), actor.revoked);
    }
    for (master, identity) in &model.identities {
        let stored = ledger.identity_of(master).expect("read");
        assert_eq!(stored, Some(("evm".to_string(), identity.clone())));
    }
    for (code, (owner, _)) in &model.codes {
        assert_eq!(
            ledger.link_code_owner(&[*code; 32]).expect("read"),
            Some(*owner)
        );
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn ledger_matches_model(ops in proptest::collection::vec(op(), 1..40)) {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("rt");
        let dir = tempfile::tempdir().expect("tempdir");
        let mut ledger = open(dir.path());
        let mut model = Model::default();
        runtime.block_on(async {
            for (step, op) in ops.into_iter().enumerate() {
                apply(&mut ledger, dir.path(), &mut model, step + 1, op).await;
                check(&ledger, &model);
            }
        });
        ledger.store().close();
    }
}
