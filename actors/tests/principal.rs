//! The principal actors own their state: a change sent to an actor completes — store and memory
//! together — even when its caller drops the call right after sending it; a lineage proof signs
//! only for the actor it names.

use std::collections::BTreeSet;
use std::time::Duration;

use agentkeys_actors::agent::AgentActor;
use agentkeys_actors::crypto::secret::MasterSecret;
use agentkeys_actors::ledger::audit::{AuditEntry, op};
use agentkeys_actors::master::MasterActor;
use agentkeys_actors::principal::{
    CheckSession, CreateChild, DeleteBinding, Describe, NewDevice, PrincipalDeps, PrincipalError,
    RecordAction, SessionError, SessionView, SetScopes, UseBinding, record_action,
};
use agentkeys_actors::signer::{KeySetName, SignerError};
use agentkeys_runtime::store::Origin;
use agentkeys_runtime::{CallError, Clock, Omni, Registry};
use agentkeys_tests::SignerStack;

struct Setup {
    _dir: tempfile::TempDir,
    stack: SignerStack,
    masters: Registry<MasterActor>,
    agents: Registry<AgentActor>,
    master: Omni,
}

async fn setup() -> Setup {
    let dir = tempfile::tempdir().expect("tempdir");
    let k3 = MasterSecret::from_bytes(core::array::from_fn(|i| i as u8));
    let stack = SignerStack::start(dir.path(), k3, 1);
    let master = Omni::from_bytes([0x4d; 32]);
    stack.create(master, None, "").await;
    let deps = PrincipalDeps::new(&stack.runtime, stack.signer.clone(), stack.ledger.clone());
    Setup {
        masters: Registry::new(&stack.runtime, deps.clone()),
        agents: Registry::new(&stack.runtime, deps),
        _dir: dir,
        stack,
        master,
    }
}

fn scopes(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

/// Creates `bot` under the master (through the master's actor) with a device bound to it.
async fn bot(s: &Setup, list: &[&str]) -> (Omni, u64) {
    let create = CreateChild {
        label: "bot".into(),
        scopes: scopes(list),
        device: Some(NewDevice {
            jkt: "key-1".into(),
            label: "laptop".into(),
        }),
        origin: Origin::default(),
    };
    let created = s
        .masters
        .call(s.master, create)
        .await
        .expect("delivered")
        .expect("created");
    assert!(created.new);
    let binding = created.binding.expect("bound");
    (created.record.omni, binding.bid)
}

/// The agent's view, as its actor holds it.
async fn describe(s: &Setup, omni: Omni) -> agentkeys_actors::principal::PrincipalView {
    s.agents
        .call(omni, Describe)
        .await
        .expect("call")
        .expect("view")
}

/// Sends `msg` and drops the call while the change is still unanswered: the store's writer is
/// held, so the change cannot commit (and so cannot be answered) before the drop.
async fn send_and_hang_up<M>(s: &Setup, omni: Omni, msg: M)
where
    AgentActor: actix::Handler<agentkeys_runtime::Supervised<M>>,
    M: actix::Message + Clone + Send + 'static,
    M::Result: Send,
{
    let (release, gate) = agentkeys_tests::hold_writer(s.stack.runtime.store());
    let call = s.agents.call(omni, msg);
    assert!(
        actix::clock::timeout(Duration::ZERO, call).await.is_err(),
        "the call was answered while the store could not commit"
    );
    release.send(()).expect("release the writer");
    gate.await;
}

#[actix::test]
async fn a_scope_change_completes_when_its_caller_drops_the_call() {
    let s = setup().await;
    let (omni, bid) = bot(&s, &["sign:eip191", "sign:eip712"]).await;
    let check = CheckSession {
        bid,
        jkt: "key-1".into(),
        min_epoch: 0,
    };
    let before = s.agents.call(omni, check.clone()).await.expect("call");
    assert_eq!(before.expect("live").scopes.map(|s| s.len()), Some(2));

    let narrow = SetScopes {
        scopes: scopes(&["sign:eip712"]),
        origin: Origin::default(),
    };
    send_and_hang_up(&s, omni, narrow).await;

    // The next message is handled after the change's turn: store and memory agree.
    let view = describe(&s, omni).await;
    let narrowed: BTreeSet<String> = ["sign:eip712".to_string()].into();
    assert_eq!(view.scopes, Some(narrowed.clone()));
    assert_eq!(view.record.scopes, scopes(&["sign:eip712"]));
    let stored = s.stack.runtime.store().actor(&omni).expect("read");
    assert_eq!(stored.expect("exists").scopes, scopes(&["sign:eip712"]));
    let after = s
        .agents
        .call(omni, check)
        .await
        .expect("call")
        .expect("live");
    assert_eq!(after.scopes, Some(narrowed));
}

/// The published view's answer to `check`, read the way the gateway reads it.
fn from_view(s: &Setup, omni: Omni, check: &CheckSession) -> Option<Result<(), SessionError>> {
    let view = s.agents.view::<SessionView>(&omni)?;
    view.check(check, &s.stack.ledger)
        .map(|answer| answer.map(|_| ()))
}

#[actix::test]
async fn the_published_view_answers_as_the_actor_does_and_follows_every_change() {
    let s = setup().await;
    let (omni, bid) = bot(&s, &["sign:eip191", "sign:eip712"]).await;
    let check = CheckSession {
        bid,
        jkt: "key-1".into(),
        min_epoch: 0,
    };
    // Not active yet: nothing published, the actor must answer.
    assert!(s.agents.view::<SessionView>(&omni).is_none());
    let by_actor = s.agents.call(omni, check.clone()).await.expect("call");
    assert!(by_actor.is_ok());
    let view = s.agents.view::<SessionView>(&omni).expect("published");
    let by_view = view.check(&check, &s.stack.ledger).expect("answers");
    assert_eq!(by_view.expect("live").scopes.map(|s| s.len()), Some(2));

    // Another key, or a binding the view has never seen (a login adds bindings through the
    // ledger): the first is refused from the view, the second goes to the actor.
    let other_key = CheckSession {
        bid,
        jkt: "key-2".into(),
        min_epoch: 0,
    };
    assert!(matches!(
        from_view(&s, omni, &other_key),
        Some(Err(SessionError::WrongKey))
    ));
    let unseen = CheckSession {
        bid: bid + 1,
        jkt: "key-1".into(),
        min_epoch: 0,
    };
    assert!(from_view(&s, omni, &unseen).is_none());

    // A narrowed scope is in the next answer from the view.
    let narrow = SetScopes {
        scopes: scopes(&["sign:eip712"]),
        origin: Origin::default(),
    };
    let _ = s
        .agents
        .call(omni, narrow)
        .await
        .expect("call")
        .expect("set");
    let view = s.agents.view::<SessionView>(&omni).expect("published");
    let narrowed = view.check(&check, &s.stack.ledger).expect("answers");
    assert_eq!(narrowed.expect("live").scopes.map(|s| s.len()), Some(1));

    // Once a deletion has been answered, the view refuses the binding.
    let delete = DeleteBinding {
        bid,
        origin: Origin::default(),
    };
    let _ = s
        .agents
        .call(omni, delete)
        .await
        .expect("call")
        .expect("deleted");
    assert!(matches!(
        from_view(&s, omni, &check),
        Some(Err(SessionError::BindingRevoked))
    ));
}

#[actix::test]
async fn a_revoked_actor_is_refused_by_its_view() {
    let s = setup().await;
    let (omni, bid) = bot(&s, &["sign:eip191"]).await;
    let check = CheckSession {
        bid,
        jkt: "key-1".into(),
        min_epoch: 0,
    };
    let _ = s.agents.call(omni, check.clone()).await.expect("call");
    let view = s.agents.view::<SessionView>(&omni).expect("published");
    s.stack.runtime.revoke(omni).await.expect("revoked");
    // A reader that still holds the view from before the revocation is refused by the
    // lineage check the view runs; a new reader finds no view (the actor stopped).
    assert!(matches!(
        view.check(&check, &s.stack.ledger),
        Some(Err(SessionError::Call(_)))
    ));
    assert!(!matches!(from_view(&s, omni, &check), Some(Ok(()))));
}

/// The audit row of an EIP-191 signature whose detail is `detail` repeated (no policy applies).
fn signed(detail: u8) -> RecordAction {
    RecordAction {
        op: op::SIGN_EIP191,
        detail: [detail; 32],
        origin: Origin::default(),
        spend: Vec::new(),
        check: None,
        announced: None,
    }
}

/// The signature rows of the master's chain, oldest first.
fn signature_rows(s: &Setup) -> Vec<AuditEntry> {
    let rows = s.stack.ledger.audit_rows(&s.master, 0, 1000);
    rows.expect("read")
        .into_iter()
        .map(|r| r.entry)
        .filter(|e| e.op == op::SIGN_EIP191)
        .collect()
}

/// A bot that may sign, active, with the view its actor published.
async fn active_bot(s: &Setup) -> (Omni, std::sync::Arc<SessionView>) {
    let (omni, _) = bot(s, &["sign:eip191"]).await;
    let _ = describe(s, omni).await;
    (
        omni,
        s.agents.view::<SessionView>(&omni).expect("published"),
    )
}

#[actix::test]
async fn an_active_actors_view_records_the_row_its_actor_records() {
    let s = setup().await;
    let (omni, view) = active_bot(&s).await;
    let (ledger, clock) = (&s.stack.ledger, &s.stack.clock);

    // Through the actor's mailbox, then on its published view, then through the entry point
    // the gateway uses: on the view while the actor is active, else through the actor.
    let by_actor = s.agents.call(omni, signed(1)).await.expect("delivered");
    by_actor.await.expect("recorded by the actor");
    let on_view = view.record_action(ledger, clock.now(), signed(2));
    on_view.await.expect("recorded on the view");
    record_action(&s.agents, omni, ledger, clock, signed(3))
        .await
        .expect("recorded");
    assert!(s.agents.passivate(&omni));
    assert!(s.agents.view::<SessionView>(&omni).is_none());
    record_action(&s.agents, omni, ledger, clock, signed(4))
        .await
        .expect("recorded through the actor");
    assert!(
        s.agents.view::<SessionView>(&omni).is_some(),
        "the message activated the actor"
    );

    let rows = signature_rows(&s);
    let details: Vec<u8> = rows.iter().map(|e| e.detail[0]).collect();
    assert_eq!(details, [1, 2, 3, 4]);
    assert_eq!((rows[0].master, rows[0].target), (s.master, Some(omni)));
    for row in &rows[1..] {
        let same = AuditEntry {
            detail: rows[0].detail,
            ..row.clone()
        };
        assert_eq!(same, rows[0], "the same row, whichever way it came");
    }
}

#[actix::test]
async fn a_view_held_across_a_revocation_records_nothing() {
    let s = setup().await;
    let (omni, view) = active_bot(&s).await;
    let (ledger, clock) = (&s.stack.ledger, &s.stack.clock);
    s.stack.runtime.revoke(omni).await.expect("revoked");

    // A request that read the view before the revocation returned is refused before its row
    // is submitted; one that starts after finds no view, and the actor is not activated.
    let held = view.record_action(ledger, clock.now(), signed(1)).await;
    assert!(
        matches!(held, Err(PrincipalError::Call(CallError::Revoked { by, .. })) if by == omni),
        "{held:?}"
    );
    let after = record_action(&s.agents, omni, ledger, clock, signed(2)).await;
    assert!(
        matches!(after, Err(PrincipalError::Call(CallError::Revoked { by, .. })) if by == omni),
        "{after:?}"
    );
    assert!(signature_rows(&s).is_empty());
}

#[actix::test]
async fn a_deleted_binding_is_refused_when_its_caller_drops_the_call() {
    let s = setup().await;
    let (omni, bid) = bot(&s, &["sign:eip191"]).await;
    let check = CheckSession {
        bid,
        jkt: "key-1".into(),
        min_epoch: 0,
    };
    assert!(
        s.agents
            .call(omni, check.clone())
            .await
            .expect("call")
            .is_ok()
    );

    let delete = DeleteBinding {
        bid,
        origin: Origin::default(),
    };
    send_and_hang_up(&s, omni, delete).await;

    let refused = s.agents.call(omni, check).await.expect("call");
    assert!(
        matches!(refused, Err(SessionError::BindingRevoked)),
        "{refused:?}"
    );
    let stored = s.stack.ledger.device(&omni, bid).expect("read");
    assert!(stored.expect("exists").tombstoned_at.is_some());
}

#[actix::test]
async fn a_binding_use_completes_when_its_caller_drops_the_call() {
    let s = setup().await;
    let (omni, bid) = bot(&s, &["sign:eip191"]).await;
    assert!(s.agents.call(omni, Describe).await.expect("call").is_ok());
    s.stack.clock.advance(Duration::from_secs(60));

    let used = UseBinding {
        bid,
        jkt: "key-1".into(),
        request_id: "refresh".into(),
    };
    send_and_hang_up(&s, omni, used).await;

    // The next message is handled after the use's turn: the use is stored, and the actor still
    // takes the binding as live and of the same key.
    let view = describe(&s, omni).await;
    let shown = view.bindings.iter().find(|b| b.bid == bid).expect("shown");
    let stored = s
        .stack
        .ledger
        .device(&omni, bid)
        .expect("read")
        .expect("stored");
    assert_eq!(shown.last_used, stored.last_used);
    assert!(stored.last_used > stored.created_at, "the use was recorded");
    let check = CheckSession {
        bid,
        jkt: "key-1".into(),
        min_epoch: 0,
    };
    let checked = s.agents.call(omni, check).await.expect("call");
    assert!(checked.is_ok(), "{checked:?}");

    // Another key cannot use the binding; nothing changes.
    let other = UseBinding {
        bid,
        jkt: "key-2".into(),
        request_id: "refresh".into(),
    };
    let refused = s.agents.call(omni, other).await.expect("call");
    assert!(
        matches!(refused, Err(PrincipalError::WrongKey)),
        "{refused:?}"
    );
}

#[actix::test]
async fn a_proof_signs_only_for_the_actor_it_names() {
    let s = setup().await;
    let (omni, _) = bot(&s, &["sign:sr25519"]).await;
    let proof = s.stack.runtime.check_live(&omni).expect("live");
    assert_eq!((proof.omni(), proof.master()), (omni, s.master));
    // (whose proof, which sr25519 path, allowed): a proof signs with its own actor's key only.
    for (prover, path, allowed) in [
        (omni, "", false),
        (omni, "//bot", true),
        (s.master, "", true),
        (s.master, "//bot", false),
    ] {
        let proof = s.stack.runtime.check_live(&prover).expect("live");
        let signed = s
            .stack
            .signer
            .sign_sr25519(path.into(), b"x".to_vec(), proof)
            .await;
        match signed {
            Ok(_) => assert!(
                allowed,
                "{path:?} signed with the proof of {}",
                prover.short()
            ),
            Err(SignerError::NotAuthorized(_)) => assert!(!allowed, "{path:?} refused"),
            Err(e) => panic!("{e:?}"),
        }
    }
    // An agent's proof, or a master that is not the anchor's, cannot use an anchor wallet.
    for prover in [omni, s.master] {
        let proof = s.stack.runtime.check_live(&prover).expect("live");
        let anchor = s
            .stack
            .signer
            .sign_eip191_as_anchor(
                ("email".into(), "a@example.com".into()),
                b"x".to_vec(),
                proof,
            )
            .await;
        assert!(
            matches!(anchor, Err(SignerError::NotAuthorized(_))),
            "{anchor:?}"
        );
    }
}

#[actix::test]
async fn the_audit_key_signs_heads_through_messages_and_nothing_else() {
    let s = setup().await;
    let heads = s.stack.signer.audit_head_signer();
    // The store's writer is a plain thread that blocks on the answer; so is this one (the
    // actix thread keeps running, as it does in the server).
    let thread = std::thread::spawn(move || {
        let mut head = agentkeys_actors::ledger::audit::HEAD_LABEL.to_vec();
        head.extend_from_slice(b"a chain head");
        (heads.sign_head(&head), heads.sign_head(b"a wallet message"))
    });
    let finished = agentkeys_tests::wait_until(|| thread.is_finished(), Duration::from_secs(10));
    assert!(finished.await, "the head signer answered");
    let signed = thread.join().expect("thread");
    let (kid, signature) = signed.0.expect("a head is signed");
    assert_eq!(kid, s.stack.signer.current_kid(KeySetName::Audit));
    assert_eq!(signature.len(), 64);
    assert!(signed.1.is_err(), "anything else is refused");

    // Key management runs on the signer's threads: add, switch, retire.
    let kid = s
        .stack
        .signer
        .add_key(KeySetName::Oidc)
        .await
        .expect("added");
    let old = s.stack.signer.current_kid(KeySetName::Oidc);
    assert!(
        s.stack
            .signer
            .retire_key(KeySetName::Oidc, &old)
            .await
            .is_err(),
        "the signing key stays"
    );
    s.stack
        .signer
        .use_key(KeySetName::Oidc, &kid)
        .await
        .expect("switched");
    s.stack
        .signer
        .retire_key(KeySetName::Oidc, &old)
        .await
        .expect("retired");
    let published = s.stack.signer.public_jwks(KeySetName::Oidc);
    assert_eq!(published.len(), 1);
    assert_eq!(published[0]["kid"], kid.as_str());
}

#[actix::test]
async fn agents_under_the_same_policies_share_one_effective_set_until_a_policy_changes() {
    use std::sync::Arc;

    let s = setup().await;
    let (a, b, c) = (
        Omni::from_bytes([0xa1; 32]),
        Omni::from_bytes([0xb2; 32]),
        Omni::from_bytes([0xc3; 32]),
    );
    s.stack.create(a, Some(s.master), "a").await;
    s.stack.create(b, Some(s.master), "b").await;
    s.stack.create(c, Some(s.master), "c").await;
    let ledger = &s.stack.ledger;
    put_policy(
        ledger,
        s.master,
        br#"{"rate": {"window_seconds": 60, "max": 10}}"#,
    )
    .await;
    put_policy(ledger, c, br#"{"sr25519": false}"#).await;
    let book = ledger.policies();
    let of_a = book.shared_effective(&[s.master, a]);
    let of_b = book.shared_effective(&[s.master, b]);
    let of_c = book.shared_effective(&[s.master, c]);
    assert!(Arc::ptr_eq(&of_a, &of_b), "the same policies: one set");
    assert_eq!(of_a.policies.len(), 1);
    assert!(!Arc::ptr_eq(&of_a, &of_c), "c has a policy of its own");
    assert_eq!(of_c.policies.len(), 2);

    put_policy(
        ledger,
        s.master,
        br#"{"rate": {"window_seconds": 60, "max": 20}}"#,
    )
    .await;
    let after = book.shared_effective(&[s.master, a]);
    assert!(!Arc::ptr_eq(&of_a, &after), "a change builds a new set");
    assert!(after.version > of_a.version);
    assert!(Arc::ptr_eq(&after, &book.shared_effective(&[s.master, b])));
}

/// Sets `doc` as `target`'s policy, as the host operator.
async fn put_policy(ledger: &agentkeys_actors::ledger::Ledger, target: Omni, doc: &[u8]) {
    use agentkeys_actors::ledger::{SetPolicy, Setter};
    ledger
        .set_policy(SetPolicy {
            target,
            policy: Some(agentkeys_actors::policy::Policy::from_json(doc).expect("policy")),
            by: Setter::Operator,
            origin: Origin::default(),
            at: agentkeys_tests::T0,
        })
        .await
        .expect("policy set");
}
