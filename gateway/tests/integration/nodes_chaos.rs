//! Several active nodes when things break: `kill -9` of one node under load (the real binary;
//! the others keep serving and nothing acknowledged is lost), and PostgreSQL itself crashed and
//! restarted under load (a cluster of the test's own: nodes recover without a restart of their
//! own, nothing acknowledged is lost, no revoked actor works, and no proof from before the
//! crash is accepted again).

use crate::common;

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use agentkeys_gateway::client::{Client, ClientError, DeviceKey};
use common::{ChildServer, PUBLIC_URL, wallet};
use futures_util::future::join_all;
use serde_json::{Value, json};

/// What the nodes acknowledged.
#[derive(Default)]
struct Acked {
    created: BTreeSet<String>,
    signatures: usize,
}

/// The same device key loaded once per node (each client talks to one node).
fn clients(key_dir: &Path, bases: &[String]) -> Vec<Arc<Client>> {
    bases
        .iter()
        .map(|base| {
            let key = DeviceKey::load_or_create(key_dir).expect("device key");
            Arc::new(Client::new(PUBLIC_URL, key).connecting_to(base))
        })
        .collect()
}

/// Creates an agent or signs through `client` until `stop`; records what was acknowledged.
/// Answers (acknowledged, refused with an API error, transport failures).
async fn load(
    client: Arc<Client>,
    token: String,
    node: usize,
    acked: Arc<Mutex<Acked>>,
    stop: Arc<AtomicBool>,
) -> (usize, Vec<String>, usize) {
    let (mut ok, mut refused, mut transport) = (0, Vec::new(), 0);
    let mut n = 0u64;
    while !stop.load(Ordering::SeqCst) {
        n += 1;
        let answer: Result<Value, ClientError> = if n.is_multiple_of(3) {
            let body = json!({"label": format!("n{node}x{n}"), "scopes": ["sign:eip191"]});
            client.post("/v1/actors", &body, Some(&token)).await
        } else {
            let body = json!({"message": format!("node {node} #{n}")});
            client.post("/v1/sign/eip191", &body, Some(&token)).await
        };
        match answer {
            Ok(value) => {
                ok += 1;
                let mut acked = acked.lock().expect("acked");
                match value["omni"].as_str() {
                    Some(omni) => {
                        acked.created.insert(omni.to_string());
                    }
                    None => acked.signatures += 1,
                }
            }
            Err(ClientError::Api { code, .. }) => refused.push(code),
            Err(_) => {
                transport += 1;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }
    (ok, refused, transport)
}

/// Every acknowledged create is there (read through `client`) and the audit holds at least one
/// signature row per acknowledged signature.
async fn verify(client: &Client, token: &str, acked: &Acked) {
    for omni in &acked.created {
        let actor: Value = client
            .get(&format!("/v1/actors/{omni}"), Some(token))
            .await
            .unwrap_or_else(|e| panic!("acknowledged create {omni} lost: {e}"));
        assert_eq!(actor["status"], "active");
    }
    let signatures = signature_rows(async |after| {
        client
            .get(&format!("/v1/audit?after={after}&limit=1000"), Some(token))
            .await
            .expect("audit page")
    })
    .await;
    assert!(
        signatures >= acked.signatures,
        "{} signatures acknowledged, {signatures} audited",
        acked.signatures
    );
}

/// Waits (polling, at most `limit`) until `done` holds.
async fn wait_until<F: std::future::Future<Output = bool>>(
    limit: Duration,
    mut done: impl FnMut() -> F,
) -> bool {
    let deadline = tokio::time::Instant::now() + limit;
    while tokio::time::Instant::now() < deadline {
        if done().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

#[actix::test]
async fn kill_9_of_one_node_under_load_the_others_keep_serving_and_lose_nothing() {
    let dirs: Vec<_> = (0..4)
        .map(|_| tempfile::tempdir().expect("tempdir"))
        .collect();
    let url = agentkeys_tests::engine::database_url(dirs[0].path());
    let k3 = dirs[0].path().join("keys/k3.key").display().to_string();
    let env = |first: bool| {
        let mut env = vec![
            ("AGENTKEYS_STORE", url.clone()),
            ("AGENTKEYS_ACTIVE_NODES", "all".to_string()),
            ("AGENTKEYS_BINDING_RATE_PER_SECOND", "100000".to_string()),
            ("AGENTKEYS_BINDING_BURST", "100000".to_string()),
        ];
        if !first {
            env.push(("AGENTKEYS_K3_FILE", k3.clone()));
        }
        env
    };
    let spawn = |i: usize| {
        let env = env(i == 0);
        let dir = dirs[i].path().to_path_buf();
        async move {
            let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
            ChildServer::spawn(&dir, &[], &env).await
        }
    };
    let first = spawn(0).await;
    let mut rest = join_all([spawn(1), spawn(2)]).await;
    let third = rest.pop().expect("third");
    let second = rest.pop().expect("second");
    let bases = vec![first.base.clone(), second.base.clone(), third.base.clone()];
    let nodes = clients(dirs[3].path(), &bases);
    let session = nodes[0]
        .wallet_login(&wallet(0x61), 1)
        .await
        .expect("login");
    let token = session.session_jwt;

    let acked = Arc::new(Mutex::new(Acked::default()));
    let stop = Arc::new(AtomicBool::new(false));
    let workers: Vec<_> = (0..3)
        .map(|i| {
            tokio::spawn(load(
                nodes[i].clone(),
                token.clone(),
                i,
                acked.clone(),
                stop.clone(),
            ))
        })
        .collect();
    let acked_so_far = || acked.lock().expect("acked").signatures;
    assert!(
        wait_until(Duration::from_secs(60), || async { acked_so_far() >= 60 }).await,
        "the load runs"
    );
    second.kill().await;
    let at_kill = acked_so_far();
    assert!(
        wait_until(Duration::from_secs(60), || async {
            acked_so_far() >= at_kill + 60
        })
        .await,
        "the other nodes keep serving after the kill"
    );
    stop.store(true, Ordering::SeqCst);
    let results: Vec<_> = join_all(workers)
        .await
        .into_iter()
        .map(|r| r.expect("worker"))
        .collect();
    for i in [0, 2] {
        let (ok, refused, transport) = &results[i];
        assert!(*ok > 0, "node {i} served");
        assert!(
            refused.is_empty() && *transport == 0,
            "node {i} failed requests: {refused:?}, {transport} transport errors"
        );
    }
    let acked = std::mem::take(&mut *acked.lock().expect("acked"));
    verify(&nodes[2], &token, &acked).await;
    first.kill().await;
    third.kill().await;
}

/// A PostgreSQL cluster of the test's own (scripts/pg.sh with its own state file), stopped when
/// dropped.
struct OwnCluster {
    state: std::path::PathBuf,
    url: String,
}

impl OwnCluster {
    fn script() -> std::path::PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/pg.sh")
    }

    fn run(state: &Path, command: &str) -> String {
        let out = std::process::Command::new("bash")
            .arg(Self::script())
            .arg(command)
            .env("PG_STATE", state)
            .output()
            .expect("pg.sh runs");
        assert!(
            out.status.success(),
            "pg.sh {command}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout)
            .expect("utf-8")
            .trim()
            .to_string()
    }

    fn start(dir: &Path) -> Self {
        let state = dir.join("pg-state");
        let url = Self::run(&state, "start");
        Self { state, url }
    }
}

impl Drop for OwnCluster {
    fn drop(&mut self) {
        Self::run(&self.state, "stop");
    }
}

#[actix::test]
async fn a_postgres_crash_under_load_is_survived_without_node_restarts() {
    let dirs: Vec<_> = (0..3)
        .map(|_| tempfile::tempdir().expect("tempdir"))
        .collect();
    let cluster = OwnCluster::start(dirs[2].path());
    let layer = agentkeys_gateway::config::Layer::default()
        .with("store", cluster.url.as_str())
        .with("active_nodes", "all")
        .with("binding_rate_per_second", "100000")
        .with("binding_burst", "100000");
    let a = common::start_with(dirs[0].path(), layer.clone()).await;
    let k3 = dirs[0].path().join("keys/k3.key").display().to_string();
    let b = common::start_with(dirs[1].path(), layer.with("k3_file", k3.as_str())).await;
    // Proofs carry whole seconds: date them past the second in which the new cluster started
    // (one second ahead of real time is well within the accepted skew).
    for node in [&a, &b] {
        node.clock.advance(Duration::from_secs(1));
    }
    let alice = common::master(&a, 0x62).await;
    let body = json!({"label": "ops", "scopes": ["sign:eip191"]});
    let (status, ops) = alice.call(&a, "POST", "/v1/actors", Some(body)).await;
    assert_eq!(status, 201, "{ops}");
    let ops_omni = ops["omni"].as_str().expect("omni").to_string();
    let ops_agent = common::link(&a, &alice, &ops_omni).await;
    assert_eq!(sign(&b, &ops_agent).await.0, 200);
    // A proof used before the crash, to be replayed after it.
    let proof = alice.proof(&b, "GET", "/v1/whoami");
    let (status, _, _) = b
        .send("GET", "/v1/whoami", None, Some(&alice.token), &proof)
        .await;
    assert_eq!(status, 200);
    let proof_second = agentkeys_runtime::Clock::now(&b.clock).as_millis() / 1000;

    // Signing through both nodes while PostgreSQL crashes and comes back.
    let acked = Mutex::new(0usize);
    let stop = AtomicBool::new(false);
    let signing = |node: &'static str| {
        let (acked, stop, alice) = (&acked, &stop, &alice);
        let stack = if node == "a" { &a } else { &b };
        async move {
            let mut errors = BTreeSet::new();
            while !stop.load(Ordering::SeqCst) {
                let (status, body) = sign(stack, alice).await;
                if status == 200 {
                    *acked.lock().expect("acked") += 1;
                } else {
                    errors.insert((status, body["error"].as_str().unwrap_or("-").to_string()));
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
            errors
        }
    };
    let chaos = async {
        let count = || *acked.lock().expect("acked");
        assert!(wait_until(Duration::from_secs(30), || async { count() >= 40 }).await);
        // The database starts again in a later second than the proof's (proofs carry whole
        // seconds; on a fast machine the 40 signatures take less than that).
        let wall_second = || {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .expect("after 1970")
                .as_secs()
        };
        assert!(
            wait_until(Duration::from_secs(5), || async {
                wall_second() > proof_second
            })
            .await
        );
        // Crashed (`pg_ctl stop -m immediate`: the replay table is emptied) and started again.
        let crash = tokio::task::spawn_blocking({
            let state = cluster.state.clone();
            move || OwnCluster::run(&state, "restart")
        });
        crash.await.expect("restart");
        let after = count();
        assert!(
            wait_until(Duration::from_secs(60), || async { count() >= after + 40 }).await,
            "both nodes sign again after the crash, without restarting"
        );
        stop.store(true, Ordering::SeqCst);
    };
    let (errors_a, errors_b, ()) = tokio::join!(signing("a"), signing("b"), chaos);
    // While the database was down the nodes refused (fail closed) with `busy`; proofs dated
    // (in whole seconds) no later than the second the server started again are refused as
    // possibly seen before the crash. Nothing else.
    for errors in [&errors_a, &errors_b] {
        assert!(
            errors
                .iter()
                .all(|(status, code)| (*status, code.as_str()) == (503, "busy")
                    || (*status, code.as_str()) == (401, "invalid_dpop_proof")),
            "{errors:?}"
        );
    }

    // The proof from before the crash is refused on both nodes (the replay table was emptied
    // by the crash; the proof predates the server's start).
    for node in [&a, &b] {
        let (status, body, _) = node
            .send("GET", "/v1/whoami", None, Some(&alice.token), &proof)
            .await;
        assert_eq!(
            (status, body["error"].as_str()),
            (401, Some("invalid_dpop_proof")),
            "{body}"
        );
    }
    // A revocation through A after the crash is in force on B at once.
    let revoked = alice
        .call(&a, "POST", &format!("/v1/actors/{ops_omni}/revoke"), None)
        .await;
    assert_eq!(revoked.0, 200, "{}", revoked.1);
    assert_eq!(sign(&b, &ops_agent).await.0, 401);
    // Nothing acknowledged was lost.
    let audited = audited_signatures(&b, &alice).await;
    let acked = *acked.lock().expect("acked");
    assert!(audited >= acked, "{acked} acknowledged, {audited} audited");
    a.stop().await;
    b.stop().await;
    drop(cluster);
}

async fn sign(stack: &common::Stack, who: &common::Who) -> (u16, Value) {
    // The node's injected clock follows real time here: the database's start time is real.
    let real = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("time")
        .as_secs();
    let behind = real.saturating_sub(u64::try_from(stack.now()).expect("positive"));
    stack.clock.advance(Duration::from_secs(behind));
    who.call(
        stack,
        "POST",
        "/v1/sign/eip191",
        Some(json!({"message": "through a crash"})),
    )
    .await
}

async fn audited_signatures(stack: &common::Stack, who: &common::Who) -> usize {
    signature_rows(async |after| {
        let path = format!("/v1/audit?after={after}&limit=1000");
        let (status, page) = who.call(stack, "GET", &path, None).await;
        assert_eq!(status, 200, "{page}");
        page
    })
    .await
}

/// The acknowledged signature rows (op 20, ok) of a master's audit, read page by page.
async fn signature_rows(page_after: impl AsyncFn(u64) -> Value) -> usize {
    let (mut after, mut count) = (0u64, 0usize);
    loop {
        let page = page_after(after).await;
        count += page["rows"]
            .as_array()
            .expect("rows")
            .iter()
            .filter(|r| r["op"] == 20 && r["outcome"] == "ok")
            .count();
        match page["next_after"].as_u64() {
            Some(next) if next > after => after = next,
            _ => break,
        }
    }
    count
}
