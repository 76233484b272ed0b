//! Memory per active agent actor — the real one (`AgentActor`), not a stand-in: 100,000 agents
//! at depth 2, each with one device binding, under a master whose policy (a budget, a rate
//! limit, an approval threshold) they all inherit. Each is activated the way a signed request
//! activates it (`CheckSession` with its binding), which loads its bindings and the effective
//! policies into the view it publishes. RSS is read before and after the last 99,000
//! activations (the first 1,000 warm the allocator and the arbiters).
//!
//! ```text
//! cargo bench -p agentkeys-actors --bench memory
//! ```

#![allow(missing_docs, clippy::unwrap_used, reason = "benchmark binary")]

use agentkeys_actors::agent::AgentActor;
use agentkeys_actors::crypto::secret::MasterSecret;
use agentkeys_actors::ledger::{CreateAndBind, NewActor, SetPolicy, Setter};
use agentkeys_actors::policy::Policy;
use agentkeys_actors::principal::{CheckSession, PrincipalDeps};
use agentkeys_runtime::store::{CreateActor, Origin};
use agentkeys_runtime::{Omni, Registry};
use agentkeys_tests::{SignerStack, T0, omni_of};

/// The allocator the `agentkeys` binary runs on, so that the figure is the product's.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const AGENTS: usize = 100_000;
const WARM: usize = 1_000;
const GROUP: usize = 1_000;

/// A typical master policy (docs/policies.md): chains, a daily native budget, a rate limit and
/// an approval threshold.
const POLICY: &[u8] = br#"{"chains": [1, 8453],
 "tx": {"to": "any", "calls": "any", "max_value": "100000000000000000"},
 "messages": {"text": true, "raw_hash": false},
 "budgets": [{"asset": "native", "chain": 1, "window_seconds": 86400, "max": "1000000000000000000"}],
 "rate": {"window_seconds": 60, "max": 120},
 "approval": {"above": [{"asset": "native", "chain": 1, "amount": "500000000000000000"}], "ttl_seconds": 900}}"#;

fn rss_bytes() -> usize {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let kib: usize = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap();
    kib * 1024
}

fn jkt(i: usize) -> String {
    // The length of a real RFC 7638 thumbprint (43 base64url characters).
    format!("{i:0>43}")
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    actix::System::with_tokio_rt(|| rt).block_on(run());
}

async fn run() {
    let dir = tempfile::tempdir().unwrap();
    let k3 = MasterSecret::from_bytes(core::array::from_fn(|i| i as u8));
    let stack = SignerStack::start(dir.path(), k3, 1);
    let master = omni_of(None, "memory-master");
    stack.create(master, None, "").await;
    stack
        .ledger
        .set_policy(SetPolicy {
            target: master,
            policy: Some(Policy::from_json(POLICY).unwrap()),
            by: Setter::Operator,
            origin: Origin::default(),
            at: T0,
        })
        .await
        .unwrap();
    let store = stack.ledger.store().clone();
    let groups: Vec<Omni> = (0..AGENTS / GROUP)
        .map(|g| omni_of(Some(&master), &format!("g{g}")))
        .collect();
    for (g, group) in groups.iter().enumerate() {
        stack.create(*group, Some(master), &format!("g{g}")).await;
    }
    let agent = |i: usize| omni_of(Some(&groups[i / GROUP]), &format!("a{i}"));
    let mut bids = Vec::with_capacity(AGENTS);
    for chunk in (0..AGENTS).collect::<Vec<_>>().chunks(1024) {
        let pending: Vec<_> = chunk
            .iter()
            .map(|&i| {
                store.submit(CreateAndBind {
                    create: NewActor {
                        actor: CreateActor {
                            omni: agent(i),
                            parent: Some(groups[i / GROUP]),
                            label: format!("a{i}"),
                            created_at: T0,
                            origin: Origin::default(),
                            scopes: vec!["sign:eip191".into(), "sign:tx:1".into()],
                        },
                        wallet: None,
                    },
                    jkt: jkt(i),
                    device_label: format!("laptop-{i}"),
                })
            })
            .collect();
        for p in pending {
            bids.push(p.await.unwrap().binding.bid);
        }
    }
    let deps = PrincipalDeps::new(&stack.runtime, stack.signer.clone(), stack.ledger.clone());
    let agents = Registry::<AgentActor>::new(&stack.runtime, deps);
    let check = |i: usize| CheckSession {
        bid: bids[i],
        jkt: jkt(i),
        min_epoch: 0,
    };
    for i in 0..WARM {
        agents.call(agent(i), check(i)).await.unwrap().unwrap();
    }
    let before = rss_bytes();
    for i in WARM..AGENTS {
        let checked = agents.call(agent(i), check(i)).await.unwrap().unwrap();
        drop(checked);
    }
    let after = rss_bytes();
    let per = (after - before) as f64 / (AGENTS - WARM) as f64;
    println!("## memory per active agent actor (the real AgentActor)");
    println!(
        "{} agents active at depth 2, one device binding each, a master policy inherited; RSS \
         grew {:.1} MiB for the last {}: {:.0} bytes per active agent (mimalloc, as the binary)",
        agents.active(),
        (after - before) as f64 / f64::from(1 << 20),
        AGENTS - WARM,
        per
    );
    stack
        .runtime
        .shutdown(std::time::Duration::from_secs(30))
        .await;
}
