//! kill -9 loop over HTTP: the real `agentkeys serve` binary under mixed load (creates,
//! revokes, link-code issues and redemptions, EIP-191 signatures from linked devices), killed
//! with SIGKILL at a varying point while requests are in flight, then checked:
//!
//! - offline, before the restart: `agentkeys audit verify --data-dir` passes;
//! - after the restart: every acknowledged create is there; every acknowledged revocation is
//!   in force (the actor and its subtree read `revoked`, their devices' tokens are refused with
//!   `actor_revoked` and cannot sign); no actor whose revocation was never sent reads revoked;
//!   every acknowledged link code still redeems; every acknowledged redemption's token still
//!   works; the audit holds at least one signature row per acknowledged signature.
//!
//! `KILL9_CYCLES` sets the number of cycles (default 5, the CI run); `scripts/kill9.sh` runs 50
//! and prints the figures quoted in docs/BENCHMARKS.md.

use crate::common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use agentkeys_gateway::client::{Client, ClientError, DeviceKey};
use agentkeys_gateway::http::session::SessionResponse;
use common::{ChildServer, PUBLIC_URL, wallet};
use serde_json::{Value, json};

const WORKERS: usize = 6;

/// A small deterministic generator (xorshift64*), seeded per cycle and worker.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Self {
        Self(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1)
    }
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: usize) -> usize {
        usize::try_from(self.next() % n.max(1) as u64).unwrap_or(0)
    }
}

/// A device bound by an acknowledged redemption.
struct Linked {
    omni: String,
    client: Arc<Client>,
    token: String,
}

/// Everything the server acknowledged, and what was sent without an answer.
#[derive(Default)]
struct Ledger {
    /// omni → parent omni (the master's children have the master as parent).
    created: BTreeMap<String, String>,
    /// Revocations sent (acknowledged or not).
    revoke_sent: BTreeSet<String>,
    /// Revocations acknowledged.
    revoked: BTreeSet<String>,
    /// Link codes acknowledged and not yet redeemed: (omni, code).
    codes: Vec<(String, String)>,
    /// Devices bound by acknowledged redemptions.
    linked: Vec<Linked>,
    /// Acknowledged EIP-191 signatures per actor.
    signatures: BTreeMap<String, usize>,
    /// Acknowledged operations of the current cycle.
    acked: usize,
}

impl Ledger {
    /// The actor or one of its ancestors is in `set`.
    fn under(&self, omni: &str, set: &BTreeSet<String>) -> bool {
        let mut at = Some(omni);
        while let Some(o) = at {
            if set.contains(o) {
                return true;
            }
            at = self.created.get(o).map(String::as_str);
        }
        false
    }
    fn live(&self) -> Vec<String> {
        self.created
            .keys()
            .filter(|o| !self.under(o, &self.revoke_sent))
            .cloned()
            .collect()
    }
}

struct Master {
    client: Arc<Client>,
    token: String,
}

/// A client with a new device key.
fn connect(base: &str) -> Client {
    Client::new(PUBLIC_URL, DeviceKey::generate().expect("key")).connecting_to(base)
}

async fn login(base: &str) -> Master {
    let client = connect(base);
    let session = client.wallet_login(&wallet(0x5a), 1).await.expect("login");
    Master {
        client: Arc::new(client),
        token: session.session_jwt,
    }
}

fn api_code(result: Result<Value, ClientError>) -> String {
    match result {
        Ok(_) => "ok".into(),
        Err(ClientError::Api { code, .. }) => code,
        Err(e) => panic!("transport error against a running server: {e}"),
    }
}

/// Checks everything acknowledged so far against a freshly started server; redeems the
/// acknowledged link codes. Returns the number of checks made.
async fn verify(master: &Master, ledger: &mut Ledger, base: &str) -> usize {
    let mut checks = 0;
    for omni in ledger.created.keys() {
        let actor: Value = master
            .client
            .get(&format!("/v1/actors/{omni}"), Some(&master.token))
            .await
            .unwrap_or_else(|e| panic!("acknowledged create {omni} lost: {e}"));
        let status = actor["status"].as_str().unwrap_or_default();
        if ledger.under(omni, &ledger.revoked) {
            assert_eq!(status, "revoked", "acknowledged revocation of {omni} lost");
        } else if !ledger.under(omni, &ledger.revoke_sent) {
            assert_eq!(status, "active", "{omni} revoked without a revocation sent");
        }
        checks += 1;
    }
    for linked in &ledger.linked {
        let whoami = linked
            .client
            .get::<Value>("/v1/whoami", Some(&linked.token))
            .await;
        let sign = linked
            .client
            .post::<_, Value>(
                "/v1/sign/eip191",
                &json!({"message": "after restart"}),
                Some(&linked.token),
            )
            .await;
        if ledger.under(&linked.omni, &ledger.revoked) {
            assert_eq!(api_code(whoami), "actor_revoked", "{}", linked.omni);
            assert_eq!(api_code(sign), "actor_revoked", "{}", linked.omni);
        } else if !ledger.under(&linked.omni, &ledger.revoke_sent) {
            assert_eq!(api_code(whoami), "ok", "linked device of {}", linked.omni);
            assert_eq!(api_code(sign), "ok", "linked device of {}", linked.omni);
            *ledger.signatures.entry(linked.omni.clone()).or_default() += 1;
        }
        checks += 2;
    }
    for (omni, code) in std::mem::take(&mut ledger.codes) {
        let client = connect(base);
        let redeemed: Result<SessionResponse, _> = client
            .post("/v1/link/redeem", &json!({"code": code}), None)
            .await;
        if !ledger.under(&omni, &ledger.revoke_sent) {
            let session =
                redeemed.unwrap_or_else(|e| panic!("acknowledged link code of {omni} lost: {e}"));
            ledger.linked.push(Linked {
                omni,
                client: Arc::new(client),
                token: session.session_jwt,
            });
        }
        checks += 1;
    }
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    let mut after = 0u64;
    loop {
        let page: Value = master
            .client
            .get(
                &format!("/v1/audit?after={after}&limit=1000"),
                Some(&master.token),
            )
            .await
            .expect("audit page");
        for row in page["rows"].as_array().expect("rows") {
            if row["op"] == 20 && row["outcome"] == "ok" {
                let actor = row["actor"].as_str().unwrap_or_default().to_string();
                *seen.entry(actor).or_default() += 1;
            }
        }
        match page["next_after"].as_u64() {
            Some(next) if next > after => after = next,
            _ => break,
        }
    }
    for (omni, acked) in &ledger.signatures {
        let rows = seen.get(omni).copied().unwrap_or(0);
        assert!(
            rows >= *acked,
            "{omni}: {acked} signatures acknowledged, {rows} audited"
        );
        checks += 1;
    }
    checks
}

/// Who a worker is and what it talks to.
struct Worker {
    id: usize,
    cycle: u64,
    base: String,
    master: Arc<Client>,
    master_token: String,
}

/// One worker's operations until `stop`.
async fn work(
    me: Worker,
    ledger: Arc<Mutex<Ledger>>,
    stop: Arc<AtomicBool>,
    acked: Arc<AtomicUsize>,
    kick: Arc<tokio::sync::Notify>,
) -> usize {
    let Worker {
        id: worker,
        cycle,
        base,
        master,
        master_token,
    } = me;
    let mut rng = Rng::new(cycle * 31 + worker as u64 + 1);
    let mut n = 0;
    let ack = |ledger: &mut Ledger| {
        ledger.acked += 1;
        acked.fetch_add(1, Ordering::SeqCst);
        kick.notify_one();
    };
    while !stop.load(Ordering::SeqCst) {
        n += 1;
        let live = ledger.lock().expect("ledger").live();
        let roll = rng.below(10);
        let outcome: Result<(), ClientError> = match roll {
            0..=3 => {
                let parent = (!live.is_empty() && rng.below(3) == 0)
                    .then(|| live[rng.below(live.len())].clone());
                let label = format!("c{cycle}w{worker}n{n}");
                let mut body = json!({"label": label, "scopes": ["sign:eip191"]});
                if let Some(p) = &parent {
                    body["parent"] = p.clone().into();
                }
                match master
                    .post::<_, Value>("/v1/actors", &body, Some(&master_token))
                    .await
                {
                    Ok(actor) => {
                        let omni = actor["omni"].as_str().expect("omni").to_string();
                        let mut l = ledger.lock().expect("ledger");
                        let parent = actor["parent"].as_str().unwrap_or_default().to_string();
                        l.created.insert(omni, parent);
                        ack(&mut l);
                        Ok(())
                    }
                    Err(e) => Err(e),
                }
            }
            4 if live.len() > 4 => {
                let target = live[rng.below(live.len())].clone();
                ledger
                    .lock()
                    .expect("ledger")
                    .revoke_sent
                    .insert(target.clone());
                match master
                    .post::<_, Value>(
                        &format!("/v1/actors/{target}/revoke"),
                        &json!({}),
                        Some(&master_token),
                    )
                    .await
                {
                    Ok(_) => {
                        let mut l = ledger.lock().expect("ledger");
                        l.revoked.insert(target);
                        ack(&mut l);
                        Ok(())
                    }
                    Err(e) => Err(e),
                }
            }
            5 | 6 if !live.is_empty() => {
                let target = live[rng.below(live.len())].clone();
                match master
                    .post::<_, Value>(
                        &format!("/v1/actors/{target}/link-codes"),
                        &json!({}),
                        Some(&master_token),
                    )
                    .await
                {
                    Ok(issued) => {
                        let code = issued["code"].as_str().expect("code").to_string();
                        ack(&mut ledger.lock().expect("ledger"));
                        if roll == 6 {
                            ledger.lock().expect("ledger").codes.push((target, code));
                            Ok(())
                        } else {
                            let client = connect(&base);
                            match client
                                .post::<_, SessionResponse>(
                                    "/v1/link/redeem",
                                    &json!({"code": code}),
                                    None,
                                )
                                .await
                            {
                                Ok(session) => {
                                    let mut l = ledger.lock().expect("ledger");
                                    l.linked.push(Linked {
                                        omni: target,
                                        client: Arc::new(client),
                                        token: session.session_jwt,
                                    });
                                    ack(&mut l);
                                    Ok(())
                                }
                                Err(e) => {
                                    // Unknown outcome: the code may or may not be spent.
                                    Err(e)
                                }
                            }
                        }
                    }
                    Err(e) => Err(e),
                }
            }
            _ => {
                let pick = {
                    let l = ledger.lock().expect("ledger");
                    let usable: Vec<usize> = (0..l.linked.len())
                        .filter(|i| !l.under(&l.linked[*i].omni, &l.revoke_sent))
                        .collect();
                    (!usable.is_empty()).then(|| {
                        let i = usable[rng.below(usable.len())];
                        (
                            l.linked[i].omni.clone(),
                            l.linked[i].client.clone(),
                            l.linked[i].token.clone(),
                        )
                    })
                };
                match pick {
                    None => Ok(()),
                    Some((omni, client, token)) => {
                        match client
                            .post::<_, Value>(
                                "/v1/sign/eip191",
                                &json!({"message": format!("m{n}")}),
                                Some(&token),
                            )
                            .await
                        {
                            Ok(_) => {
                                let mut l = ledger.lock().expect("ledger");
                                *l.signatures.entry(omni).or_default() += 1;
                                ack(&mut l);
                                Ok(())
                            }
                            Err(e) => Err(e),
                        }
                    }
                }
            }
        };
        match outcome {
            Ok(()) => {}
            // A refusal while running (a target revoked by another worker meanwhile) is an
            // answer, not a lost write; a transport error means the server is gone.
            Err(ClientError::Api { code, message, .. }) => {
                assert!(
                    matches!(
                        code.as_str(),
                        "actor_revoked" | "not_found" | "label_revoked" | "rate_limited"
                    ),
                    "unexpected refusal under load: {code}: {message}"
                );
            }
            Err(ClientError::Transport { .. }) => return 1,
        }
    }
    0
}

async fn audit_verify(data: &Path) {
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_agentkeys"))
        .args(["audit", "verify", "--json", "--data-dir"])
        .arg(data)
        .env_clear()
        .env("HOME", data)
        .output()
        .await
        .expect("audit verify runs");
    let report: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|_| {
        panic!(
            "audit verify: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    assert!(out.status.success() && report["ok"] == true, "{report}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_writes_survive_kill_9_under_mixed_load() {
    let cycles: u64 = std::env::var("KILL9_CYCLES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5);
    let data = tempfile::tempdir().expect("tempdir");
    // One address for every restart, so the clients (and their device keys) carry over.
    let listen = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .to_string();
    let base = format!("http://{listen}");
    // On PostgreSQL every restart is another node: two data directories take turns, with the
    // same K3 and database, so the state and keys that survive come from the database alone.
    let postgres = agentkeys_tests::engine::on_postgres();
    let other = tempfile::tempdir().expect("tempdir");
    let node_env: Vec<(&str, String)> = if postgres {
        vec![
            (
                "AGENTKEYS_STORE",
                agentkeys_tests::engine::database_url(data.path()),
            ),
            (
                "AGENTKEYS_K3_FILE",
                data.path().join("keys/k3.key").display().to_string(),
            ),
        ]
    } else {
        Vec::new()
    };
    let env: Vec<(&str, &str)> = node_env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let spawn = |cycle: u64| {
        let dir = if postgres && cycle % 2 == 1 {
            other.path()
        } else {
            data.path()
        };
        ChildServer::spawn_on(dir, &listen, &[], &env)
    };
    let mut ledger = Ledger::default();
    let mut master: Option<Master> = None;
    let (mut restart_ms, mut ops, mut checks, mut cut) = (Vec::new(), 0, 0, 0);
    for cycle in 0..=cycles {
        let started = Instant::now();
        let server = spawn(cycle).await;
        restart_ms.push(started.elapsed().as_secs_f64() * 1e3);
        let master = match &master {
            Some(m) => m,
            None => master.insert(login(&base).await),
        };
        checks += verify(master, &mut ledger, &base).await;
        if cycle == cycles {
            // The last kill is checked too; then stop.
            server.kill().await;
            break;
        }

        // Mixed load; the kill comes after a varying number of acknowledged operations.
        let target = 20 + Rng::new(cycle + 1000).below(80);
        let shared = Arc::new(Mutex::new(std::mem::take(&mut ledger)));
        let stop = Arc::new(AtomicBool::new(false));
        let acked = Arc::new(AtomicUsize::new(0));
        let kick = Arc::new(tokio::sync::Notify::new());
        let workers: Vec<_> = (0..WORKERS)
            .map(|w| {
                tokio::spawn(work(
                    Worker {
                        id: w,
                        cycle,
                        base: base.clone(),
                        master: master.client.clone(),
                        master_token: master.token.clone(),
                    },
                    shared.clone(),
                    stop.clone(),
                    acked.clone(),
                    kick.clone(),
                ))
            })
            .collect();
        while acked.load(Ordering::SeqCst) < target {
            tokio::time::timeout(Duration::from_secs(60), kick.notified())
                .await
                .expect("the load makes progress");
        }
        server.kill().await;
        stop.store(true, Ordering::SeqCst);
        for worker in workers {
            cut += worker
                .await
                .expect("worker ends without a failed assertion");
        }
        ledger = Arc::into_inner(shared)
            .expect("workers done")
            .into_inner()
            .expect("ledger");
        ops += ledger.acked;
        ledger.acked = 0;

        if !postgres {
            // Offline verification reads the redb file (on PostgreSQL: issue 23, step 5).
            audit_verify(data.path()).await;
        }
    }
    restart_ms.sort_by(f64::total_cmp);
    println!(
        "kill9: {cycles} cycles, {ops} acknowledged operations, {cut} requests cut by the kills, \
         {checks} checks after restarts; \
         {} actors, {} revocations acknowledged, {} linked devices; restart (spawn to listening) \
         median {:.1} ms, max {:.1} ms",
        ledger.created.len(),
        ledger.revoked.len(),
        ledger.linked.len(),
        restart_ms[restart_ms.len() / 2],
        restart_ms[restart_ms.len() - 1],
    );
}
