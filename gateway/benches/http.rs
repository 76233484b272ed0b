//! HTTP load benchmark (`cargo bench -p agentkeys-gateway --bench http`): the release
//! `agentkeys serve` as a child process on loopback, driven by this process.
//!
//! - Signed EIP-191 requests with DPoP from several agents (each its own linked device key and
//!   session) at several concurrency levels; every proof is generated before the timed run, so
//!   the client spends its time on HTTP only. req/s, p50, p99.
//! - In the same run, the crypto floor: one ES256 verify (the DPoP proof, as the server checks
//!   it) + one secp256k1 EIP-191 signature, in a tight loop on the server's cores; the ratio of
//!   the server's rate to it. Beside it the independent floor, when a C compiler and the
//!   headers of OpenSSL and libsecp256k1 are present (`scripts/loadbench.sh` installs them):
//!   one P-256 verify with OpenSSL + one secp256k1 signature with libsecp256k1
//!   (`benches/floor.c`).
//! - Revocation commit latency while the highest concurrency level runs; link-code redemption
//!   latency and wallet (SIWE) login latency, unloaded.
//!
//! - With `LOADBENCH_POLICY=1`, instead of the levels: signed transactions at 64 in flight by
//!   agents at depth 3 (`//ops//team//bot-N`) with a budget on each of the three actors of
//!   their lineage, against the same agents of a second tree without policies, alternated in
//!   one run; the ratio of the two rates is the cost of the policy engine.
//!
//! - With `LOADBENCH_SOAK_SECONDS=600`, instead of the levels: a soak of that length at the
//!   highest concurrency, every proof made just before its request (so every `iat` is
//!   current), while a second client floods `GET /v1/whoami` with a junk token and fresh proofs
//!   (the replay-cache lock-out of the availability report). Honest throughput, p50/p99, the
//!   error count (must be 0), the flood's answers, and the server's RSS every 10 s.
//!
//! - With `LOADBENCH_DAEMON=1`, instead of the levels: the cost of the agent daemon. Signed
//!   EIP-191 requests by one master sent directly (this process signs each proof) and through
//!   an in-process `agentkeys daemon` on a Unix socket (the daemon signs), alternated in one run
//!   at 1 and 16 in flight; the ratio of the two rates.
//!
//! - With `LOADBENCH_SCALE=1`, the levels run twice: once as usual, then again after the server
//!   was stopped, 100,000 more masters with one session and nine agents each (1,000,000 stored
//!   actors, 100,000 sessions, every login audited) were written into its store, it was started
//!   again on the same address, and 1,000 more masters logged in and each holds an event stream
//!   open. Same agents, same requests: the two tables show what grows with actors, sessions and
//!   open streams.
//!
//! With two or more CPUs and `taskset` present, the server (and the floor) run on the last CPU
//! and this client on CPU 0, so the two do not compete (`LOADBENCH_PIN=0` turns that off: both
//! float over every core and the floor counts every core).
//!
//! `LOADBENCH_STORE=postgres` runs every server on PostgreSQL (a database of its own on the
//! cluster of `TEST_POSTGRES_URL`, e.g. from `scripts/pg.sh start`) instead of redb;
//! `LOADBENCH_ACTIVE_NODES=one` runs it in the standby mode (no per-request statement) instead
//! of the default, every node active.
//! `LOADBENCH_TAIL=1` prints, per run, where its slow requests are (percentiles, and each tenth
//! of the run's p50, p99 and requests over twice the median, and the 100 ms stretches where the
//! rate dipped or slow requests finished, with their wall-clock times) on stderr.
//! The server gets a clean environment; `MIMALLOC_*` variables are passed on to it.
//! `LOADBENCH_LEVELS=16,64` runs only those levels (the last one also carries the revocations)
//! and `LOADBENCH_REQUESTS=40000` sets the requests per run, e.g. to profile one long level.

use std::path::Path;
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use agentkeys_actors::crypto::eip191::sign_message;
use agentkeys_actors::crypto::wallet::WalletKey;
use agentkeys_gateway::client::{Client, DeviceKey};
use agentkeys_gateway::http::session::SessionResponse;
use serde_json::{Value, json};

const PUBLIC_URL: &str = "http://127.0.0.1:8090";
const AGENTS: usize = 8;
/// Agents revoked under load, one every REVOKE_EVERY completed requests (enough for a p50).
const SPARE: usize = 20;
const REVOKE_EVERY: usize = 350;
const LEVELS: [usize; 4] = [1, 4, 16, 64];
const RUNS: usize = 3;

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(0))
        .unwrap_or(0)
}

/// The levels to run: `LOADBENCH_LEVELS=64` (comma-separated) or [`LEVELS`].
fn levels() -> Vec<usize> {
    std::env::var("LOADBENCH_LEVELS")
        .ok()
        .map(|v| {
            v.split(',')
                .filter_map(|l| l.trim().parse().ok())
                .collect::<Vec<usize>>()
        })
        .filter(|l| !l.is_empty())
        .unwrap_or_else(|| LEVELS.to_vec())
}

/// Requests per run at `level`: `LOADBENCH_REQUESTS` (e.g. a long run to profile) or the default.
fn requests_per_run(level: usize) -> usize {
    std::env::var("LOADBENCH_REQUESTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(if level == 1 { 1_000 } else { 4_000 })
}

fn cpus() -> usize {
    std::thread::available_parallelism().map_or(1, usize::from)
}

/// The CPU the server and the floor run on, when pinning.
fn pinning() -> Option<usize> {
    let wanted = std::env::var("LOADBENCH_PIN").map_or(true, |v| v != "0");
    let taskset = std::process::Command::new("taskset")
        .arg("-V")
        .output()
        .is_ok_and(|o| o.status.success());
    (wanted && taskset && cpus() >= 2).then(|| cpus() - 1)
}

fn pinned(cpu: Option<usize>, program: &Path) -> tokio::process::Command {
    match cpu {
        Some(cpu) => {
            let mut c = tokio::process::Command::new("taskset");
            c.arg("-c").arg(cpu.to_string()).arg(program);
            c
        }
        None => tokio::process::Command::new(program),
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = (p * (sorted.len() - 1) as f64).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1e3)
}

// ---- the crypto floor (run in a child process on the server's cores) -------------------------

fn floor_child(threads: usize) {
    let per_thread: Vec<f64> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads).map(|_| s.spawn(floor_rate)).collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("floor thread"))
            .collect()
    });
    println!("{}", per_thread.iter().sum::<f64>());
}

/// Operations per second of one ES256 verify (jsonwebtoken, as the DPoP check) plus one
/// EIP-191 signature with a cached wallet key: median of 7 batches.
fn floor_rate() -> f64 {
    use jsonwebtoken::{Algorithm, DecodingKey, Validation};
    let key = DeviceKey::generate().expect("key");
    let proof = key
        .proof(
            "POST",
            "http://x/v1/sign/eip191",
            now(),
            Some("token"),
            None,
        )
        .expect("proof");
    let header: Value = {
        use base64::Engine;
        let head = proof.split('.').next().expect("header");
        let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(head)
            .expect("b64");
        serde_json::from_slice(&bytes).expect("json")
    };
    let jwk: jsonwebtoken::jwk::Jwk = serde_json::from_value(header["jwk"].clone()).expect("jwk");
    let decoding = DecodingKey::from_jwk(&jwk).expect("key");
    let mut validation = Validation::new(Algorithm::ES256);
    validation.validate_exp = false;
    validation.validate_aud = false;
    validation.required_spec_claims.clear();
    let wallet = WalletKey::from_secret(&[9u8; 32]).expect("wallet");
    let mut batches = Vec::new();
    for _ in 0..7 {
        let n = 400;
        let start = Instant::now();
        for i in 0..n {
            let claims = jsonwebtoken::decode::<Value>(&proof, &decoding, &validation)
                .expect("verifies")
                .claims;
            std::hint::black_box(claims);
            let sig = sign_message(&wallet, format!("hello {i}").as_bytes());
            std::hint::black_box(sig);
        }
        batches.push(f64::from(n) / start.elapsed().as_secs_f64());
    }
    batches.sort_by(f64::total_cmp);
    batches[batches.len() / 2]
}

// ---- the server -------------------------------------------------------------------------------

struct Server {
    child: tokio::process::Child,
    base: String,
}

async fn start_server(data: &Path, cpu: Option<usize>) -> Server {
    start_server_on(data, cpu, "127.0.0.1:0").await
}

async fn start_server_on(data: &Path, cpu: Option<usize>, listen: &str) -> Server {
    // LOADBENCH_SERVER names another build of the server, for before/after runs of one change.
    let program = std::env::var_os("LOADBENCH_SERVER").map_or_else(
        || env!("CARGO_BIN_EXE_agentkeys").into(),
        std::path::PathBuf::from,
    );
    let mut command = pinned(cpu, &program);
    agentkeys_tests::child::serve(&mut command, data, listen)
        .env("RUST_LOG", "warn")
        .stderr(Stdio::null());
    // The server's environment is cleared; allocator settings (`MIMALLOC_PURGE_DELAY=-1`, …)
    // are passed on, for experiments with them.
    for (name, value) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("MIMALLOC_") {
            command.env(name, value);
        }
    }
    if std::env::var("LOADBENCH_SCALE").is_ok_and(|v| v == "1") {
        // The scale run logs a thousand masters in from this one address.
        command.env("AGENTKEYS_IP_BURST", "1000000");
    }
    if std::env::var("LOADBENCH_STORE").is_ok_and(|v| v == "postgres") {
        // A database of its own on the cluster of TEST_POSTGRES_URL (scripts/pg.sh start).
        command.env(
            "AGENTKEYS_STORE",
            agentkeys_tests::engine::database_url(data),
        );
        if let Ok(mode) = std::env::var("LOADBENCH_ACTIVE_NODES") {
            command.env("AGENTKEYS_ACTIVE_NODES", mode);
        }
    }
    let mut child = command.spawn().expect("agentkeys serve starts");
    let base = agentkeys_tests::child::listening(&mut child).await;
    Server { child, base }
}

struct Principal {
    client: Client,
    token: String,
}

async fn login(base: &str, owner: &WalletKey) -> (Principal, Duration) {
    let client = Client::new(PUBLIC_URL, DeviceKey::generate().expect("key")).connecting_to(base);
    let start = Instant::now();
    let session = client.wallet_login(owner, 1).await.expect("login");
    let took = start.elapsed();
    (
        Principal {
            client,
            token: session.session_jwt,
        },
        took,
    )
}

async fn create_agent(master: &Principal, label: &str) -> String {
    create_child(master, label, None, &["sign:eip191"]).await
}

async fn create_child(
    master: &Principal,
    label: &str,
    parent: Option<&str>,
    scopes: &[&str],
) -> String {
    let mut body = json!({"label": label, "scopes": scopes});
    if let Some(parent) = parent {
        body["parent"] = json!(parent);
    }
    let actor: Value = master
        .client
        .post("/v1/actors", &body, Some(&master.token))
        .await
        .expect("create");
    actor["omni"].as_str().expect("omni").to_string()
}

/// Issues a link code for `omni` and redeems it with a new key: the agent's principal and the
/// redemption's latency.
async fn link(base: &str, master: &Principal, omni: &str) -> (Principal, Duration) {
    let issued: Value = master
        .client
        .post(
            &format!("/v1/actors/{omni}/link-codes"),
            &json!({}),
            Some(&master.token),
        )
        .await
        .expect("link code");
    let client = Client::new(PUBLIC_URL, DeviceKey::generate().expect("key")).connecting_to(base);
    let start = Instant::now();
    let session: SessionResponse = client
        .post("/v1/link/redeem", &json!({"code": issued["code"]}), None)
        .await
        .expect("redeem");
    let took = start.elapsed();
    (
        Principal {
            client,
            token: session.session_jwt,
        },
        took,
    )
}

// ---- the load ---------------------------------------------------------------------------------

struct Prepared {
    token: String,
    proof: String,
    body: Vec<u8>,
}

const EIP191: &str = "/v1/sign/eip191";
const TX: &str = "/v1/sign/transaction";

fn prepare(agents: &[Principal], n: usize, salt: usize) -> Vec<Prepared> {
    prepare_on(
        agents,
        n,
        EIP191,
        |i| json!({"message": format!("load {salt} {i}")}),
    )
}

/// Transactions of 1 gwei each, every one with its own nonce (so its own digest).
fn prepare_tx(agents: &[Principal], n: usize, salt: usize) -> Vec<Prepared> {
    prepare_on(agents, n, TX, |i| {
        json!({"tx": {"chain_id": 1, "nonce": salt * 1_000_000 + i, "to": "0x1111111111111111111111111111111111111111",
            "value": "1000000000", "gas_limit": 21000, "max_fee_per_gas": "1", "max_priority_fee_per_gas": "1"}})
    })
}

fn prepare_on(
    agents: &[Principal],
    n: usize,
    route: &str,
    body: impl Fn(usize) -> Value,
) -> Vec<Prepared> {
    let url = format!("{PUBLIC_URL}{route}");
    let at = now();
    (0..n)
        .map(|i| {
            let agent = &agents[i % agents.len()];
            Prepared {
                token: agent.token.clone(),
                proof: agent
                    .client
                    .key()
                    .expect("a direct client")
                    .proof("POST", &url, at, Some(&agent.token), None)
                    .expect("proof"),
                body: serde_json::to_vec(&body(i)).expect("json"),
            }
        })
        .collect()
}

/// CPU time the process `pid` has used so far (all its threads, user and system), from
/// `/proc/<pid>/stat` in clock ticks of 1/100 s. Unlike a rate, CPU per request does not move
/// when another process takes the server's core for a while, so two builds compare better.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which may contain spaces) in parentheses: utime is the
    // 12th, stime the 13th.
    let after = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let fields: Vec<u64> = after
        .split_whitespace()
        .skip(11)
        .take(2)
        .filter_map(|f| f.parse().ok())
        .collect();
    fields.iter().sum::<u64>() as f64 / 100.0
}

/// The store writer's (commits, writes, commit log checkpoints, KiB logged) so far, from the
/// `store_writer` entry of `/readyz` (zeros for what an older build does not report).
async fn store_counts(http: &reqwest::Client, base: &str) -> [u64; 4] {
    let ready: Value = http
        .get(format!("{base}/readyz"))
        .send()
        .await
        .expect("readyz")
        .json()
        .await
        .expect("readyz json");
    let detail = ready["checks"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["name"] == "store_writer"))
        .and_then(|c| c["detail"].as_str())
        .expect("store_writer check");
    let mut numbers = [0; 4];
    for (n, word) in numbers
        .iter_mut()
        .zip(detail.split(' ').filter_map(|w| w.parse().ok()))
    {
        *n = word;
    }
    numbers
}

struct RunResult {
    rate: f64,
    p50: Duration,
    p99: Duration,
    errors: usize,
}

/// One signed request; whether it succeeded (the body is read to the end).
async fn sign_once(
    http: &reqwest::Client,
    url: &str,
    token: &str,
    proof: &str,
    body: Vec<u8>,
) -> bool {
    let response = http
        .post(url)
        .header("authorization", format!("DPoP {token}"))
        .header("dpop", proof)
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await;
    match response {
        Ok(resp) => {
            let status = resp.status();
            let _ = resp.bytes().await;
            status.is_success()
        }
        Err(_) => false,
    }
}

/// Sends every prepared request with `concurrency` in flight; `progress` counts completions.
async fn run(
    http: &reqwest::Client,
    base: &str,
    requests: Vec<Prepared>,
    concurrency: usize,
    progress: Arc<AtomicUsize>,
) -> RunResult {
    run_on(http, base, EIP191, requests, concurrency, progress).await
}

async fn run_on(
    http: &reqwest::Client,
    base: &str,
    route: &str,
    requests: Vec<Prepared>,
    concurrency: usize,
    progress: Arc<AtomicUsize>,
) -> RunResult {
    let n = requests.len();
    let requests = Arc::new(requests);
    let next = Arc::new(AtomicUsize::new(0));
    let url = format!("{base}{route}");
    let start = Instant::now();
    let tasks: Vec<_> = (0..concurrency)
        .map(|_| {
            let (http, requests, next, url, progress) = (
                http.clone(),
                requests.clone(),
                next.clone(),
                url.clone(),
                progress.clone(),
            );
            tokio::spawn(async move {
                let mut latencies = Vec::new();
                let mut errors = 0;
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(r) = requests.get(i) else { break };
                    let sent = Instant::now();
                    let ok = sign_once(&http, &url, &r.token, &r.proof, r.body.clone()).await;
                    latencies.push((sent.duration_since(start), sent.elapsed()));
                    if !ok {
                        errors += 1;
                    }
                    progress.fetch_add(1, Ordering::Relaxed);
                }
                (latencies, errors)
            })
        })
        .collect();
    let mut timed = Vec::with_capacity(n);
    let mut errors = 0;
    for task in tasks {
        let (l, e) = task.await.expect("load task");
        timed.extend(l);
        errors += e;
    }
    let wall = start.elapsed();
    if std::env::var("LOADBENCH_TAIL").is_ok_and(|v| v == "1") {
        let median = tail_report(&mut timed, wall);
        timeline(&timed, median, start, wall);
    }
    let mut latencies: Vec<Duration> = timed.into_iter().map(|(_, l)| l).collect();
    latencies.sort();
    RunResult {
        rate: n as f64 / wall.as_secs_f64(),
        p50: percentile(&latencies, 0.50),
        p99: percentile(&latencies, 0.99),
        errors,
    }
}

/// With `LOADBENCH_TAIL=1`: where the slow requests of a run are, on stderr — percentiles, and
/// for each tenth of the run (by send time) its p50, p99 and how many took over twice the run's
/// median. Answers the run's median.
fn tail_report(timed: &mut [(Duration, Duration)], wall: Duration) -> Duration {
    let mut all: Vec<Duration> = timed.iter().map(|(_, l)| *l).collect();
    all.sort();
    let median = percentile(&all, 0.5);
    eprintln!(
        "tail: p50 {} p90 {} p99 {} p99.9 {} max {}",
        ms(median),
        ms(percentile(&all, 0.9)),
        ms(percentile(&all, 0.99)),
        ms(percentile(&all, 0.999)),
        ms(percentile(&all, 1.0))
    );
    timed.sort();
    let tenth = wall / 10;
    for d in 0..10u32 {
        let mut part: Vec<Duration> = timed
            .iter()
            .filter(|(at, _)| *at >= tenth * d && *at < tenth * (d + 1))
            .map(|(_, l)| *l)
            .collect();
        part.sort();
        let slow = part.iter().filter(|l| **l > median * 2).count();
        eprintln!(
            "tail: tenth {d}: {} requests, p50 {} p99 {}, {slow} over 2x the median",
            part.len(),
            ms(percentile(&part, 0.5)),
            ms(percentile(&part, 0.99))
        );
    }
    median
}

/// With `LOADBENCH_TAIL=1`: the run in 100 ms bins by completion time — the bins whose
/// completions fall a fifth below the run's mean rate or that finish requests over twice the
/// median — each with its wall-clock start (Unix ms), to line up with a server profile
/// (`perf record -k CLOCK_REALTIME`).
fn timeline(timed: &[(Duration, Duration)], median: Duration, start: Instant, wall: Duration) {
    const BIN: Duration = Duration::from_millis(100);
    let bins = usize::try_from(wall.as_millis() / BIN.as_millis()).unwrap_or(0) + 1;
    let mut done = vec![0usize; bins];
    let mut slow = vec![0usize; bins];
    let mut worst = vec![Duration::ZERO; bins];
    for (at, latency) in timed {
        let end = *at + *latency;
        let b = usize::try_from(end.as_millis() / BIN.as_millis())
            .unwrap_or(0)
            .min(bins - 1);
        done[b] += 1;
        worst[b] = worst[b].max(*latency);
        if *latency > median * 2 {
            slow[b] += 1;
        }
    }
    // The last bin is partial; the mean is over the full ones.
    let full = bins.saturating_sub(1).max(1);
    let mean = done[..full].iter().sum::<usize>() as f64 / full as f64;
    let started = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .saturating_sub(start.elapsed());
    for b in 0..full {
        if (done[b] as f64) < mean * 0.8 || slow[b] > 0 {
            let at = started + BIN * u32::try_from(b).unwrap_or(u32::MAX);
            eprintln!(
                "tail: bin {b} (unix {} ms): {} done (mean {mean:.0}), {} over 2x the median, worst {}",
                at.as_millis(),
                done[b],
                slow[b],
                ms(worst[b])
            );
        }
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == "--floor-child") {
        let threads = args.get(i + 1).and_then(|t| t.parse().ok()).unwrap_or(1);
        floor_child(threads);
        return;
    }
    let total = cpus();
    let cpu = pinning();
    if cpu.is_some() {
        // This client (every thread it will start) on CPU 0.
        let pid = std::process::id().to_string();
        let status = std::process::Command::new("taskset")
            .args(["-a", "-p", "-c", "0", &pid])
            .stdout(Stdio::null())
            .status()
            .expect("taskset");
        assert!(status.success(), "taskset failed");
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(if cpu.is_some() { 1 } else { total })
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(bench(cpu, total));
}

async fn bench(cpu: Option<usize>, total: usize) {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    std::fs::create_dir(&data).expect("data dir");
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o700)).expect("0700");
    }
    let mut server = start_server(&data, cpu).await;
    let base = server.base.clone();
    match cpu {
        Some(c) => println!("server and floor pinned to CPU {c}, client to CPU 0 ({total} CPUs)"),
        None => println!("unpinned: server, client and floor share {total} CPUs"),
    }

    if std::env::var("LOADBENCH_DAEMON").is_ok_and(|v| v == "1") {
        daemon_cost(&base).await;
        let _ = server.child.kill().await;
        return;
    }

    if std::env::var("LOADBENCH_POLICY").is_ok_and(|v| v == "1") {
        let http = reqwest::Client::builder()
            .pool_max_idle_per_host(256)
            .build()
            .expect("http client");
        policy_cost(&http, &base).await;
        let _ = server.child.kill().await;
        return;
    }

    // Logins (each a new device key and binding for the same wallet). The unauthenticated
    // routes share a per-IP budget of 60 requests (then 1/s): 21 logins (42 requests) and 16
    // redemptions stay inside it.
    let owner = WalletKey::from_secret(&[0x42; 32]).expect("wallet");
    let mut login_times = Vec::new();
    let (master, _) = login(&base, &owner).await;
    for _ in 0..20 {
        login_times.push(login(&base, &owner).await.1);
    }
    login_times.sort();

    // Agents, and link redemptions (the first binding of each agent carries the load).
    let mut agents = Vec::new();
    let mut redeem_times = Vec::new();
    for a in 0..AGENTS {
        let omni = create_agent(&master, &format!("load-{a}")).await;
        let (agent, took) = link(&base, &master, &omni).await;
        redeem_times.push(took);
        redeem_times.push(link(&base, &master, &omni).await.1);
        agents.push(agent);
    }
    redeem_times.sort();
    let mut spares = Vec::new();
    for s in 0..SPARE {
        spares.push(create_agent(&master, &format!("spare-{s}")).await);
    }

    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(256)
        .build()
        .expect("http client");
    // Warm-up.
    let warm = run(
        &http,
        &base,
        prepare(&agents, 500, 0),
        16,
        Arc::new(AtomicUsize::new(0)),
    )
    .await;
    assert_eq!(warm.errors, 0, "warm-up requests failed");

    if let Some(seconds) = std::env::var("LOADBENCH_SOAK_SECONDS")
        .ok()
        .and_then(|s| s.parse::<u64>().ok())
        .filter(|s| *s > 0)
    {
        let pid = server.child.id().expect("server pid");
        soak(&http, &base, agents, pid, Duration::from_secs(seconds)).await;
        let _ = server.child.kill().await;
        return;
    }

    let mut salt = 1;
    let pid = server.child.id().expect("server pid");
    let scale = std::env::var("LOADBENCH_SCALE").is_ok_and(|v| v == "1");
    if scale {
        println!("\n### before growing the store (the bench's own actors only)");
    }
    let floors = Floors::new(cpu, total);
    level_table(&http, &base, pid, &agents, &floors, &mut salt).await;
    let _streams = if scale {
        let streams = grow(&mut server, &data, cpu, &http, &agents, &mut salt).await;
        let pid = server.child.id().expect("server pid");
        level_table(&http, &base, pid, &agents, &floors, &mut salt).await;
        println!("server RSS after the levels: {} MiB", rss_kib(pid) / 1024);
        streams
    } else {
        Vec::new()
    };

    // Revocations while the top level runs: one each time another REVOKE_EVERY requests complete.
    let top = *levels().last().expect("levels");
    let progress = Arc::new(AtomicUsize::new(0));
    let requests = prepare(&agents, 8_000, salt);
    let load = {
        let (http, base, progress) = (http.clone(), base.clone(), progress.clone());
        tokio::spawn(async move { run(&http, &base, requests, top, progress).await })
    };
    let mut revoke_times = Vec::new();
    let mut commit_ms = Vec::new();
    for (i, omni) in spares.iter().enumerate() {
        while progress.load(Ordering::Relaxed) < (i + 1) * REVOKE_EVERY {
            tokio::task::yield_now().await;
        }
        let start = Instant::now();
        let answer: Value = master
            .client
            .post(
                &format!("/v1/actors/{omni}/revoke"),
                &json!({}),
                Some(&master.token),
            )
            .await
            .expect("revoke");
        revoke_times.push(start.elapsed());
        commit_ms.push(answer["commit_ms"].as_f64().unwrap_or(f64::NAN));
    }
    let loaded = load.await.expect("load");
    assert_eq!(loaded.errors, 0, "requests failed during revocations");
    revoke_times.sort();
    commit_ms.sort_by(f64::total_cmp);

    println!(
        "\nrevocation under load ({top} in flight, {:.0} req/s meanwhile): request p50 {} (max {}), \
         server-reported commit p50 {:.2} ms (max {:.2} ms), {} revocations",
        loaded.rate,
        ms(percentile(&revoke_times, 0.5)),
        ms(*revoke_times.last().expect("some")),
        commit_ms[commit_ms.len() / 2],
        commit_ms[commit_ms.len() - 1],
        revoke_times.len(),
    );
    println!(
        "link-code redemption, unloaded: p50 {}, max {} ({} redemptions)",
        ms(percentile(&redeem_times, 0.5)),
        ms(percentile(&redeem_times, 1.0)),
        redeem_times.len()
    );
    println!(
        "wallet login (start + client signature + verify), unloaded: p50 {}, max {} ({} logins)",
        ms(percentile(&login_times, 0.5)),
        ms(percentile(&login_times, 1.0)),
        login_times.len()
    );
    let _ = server.child.kill().await;
}

/// One table of the levels: each run alone, the floor measured before and after each level.
async fn level_table(
    http: &reqwest::Client,
    base: &str,
    pid: u32,
    agents: &[Principal],
    floors: &Floors,
    salt: &mut usize,
) {
    // The floors are measured before and after each level (the machine is shared: its speed
    // drifts); each level's ratios use the mean of the two measurements around it.
    let mut floor_before = floors.measure().await;
    println!(
        "\ncrypto floor = one ES256 verify + one EIP-191 signature (k256), in a loop on the server's cores;\n\
         independent floor = one P-256 verify (OpenSSL) + one secp256k1 signature (libsecp256k1), the same way\n"
    );
    println!(
        "| in flight | requests | req/s (median of {RUNS}) | p50 | p99 | floor around it (/s) | ÷ floor | independent floor around it (/s) | ÷ independent floor | writes per commit | server CPU per request | floor ÷ CPU per request | client's share of its core |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|---|");
    let mut logs = Vec::new();
    for level in levels() {
        let n = requests_per_run(level);
        let mut results = Vec::new();
        let store_before = store_counts(http, base).await;
        let mut server_cpu = Vec::new();
        let (mut client_cpu, mut client_wall) = (0.0, 0.0);
        for _ in 0..RUNS {
            let requests = prepare(agents, n, *salt);
            *salt += 1;
            let (own, started) = (cpu_seconds(std::process::id()), Instant::now());
            let server_before = cpu_seconds(pid);
            let r = run(http, base, requests, level, Arc::new(AtomicUsize::new(0))).await;
            server_cpu.push((cpu_seconds(pid) - server_before) / n as f64);
            client_cpu += cpu_seconds(std::process::id()) - own;
            client_wall += started.elapsed().as_secs_f64();
            assert_eq!(r.errors, 0, "requests failed at {level} in flight");
            results.push(r);
        }
        server_cpu.sort_by(f64::total_cmp);
        let store_after = store_counts(http, base).await;
        results.sort_by(|a, b| a.rate.total_cmp(&b.rate));
        let m = &results[results.len() / 2];
        let floor_after = floors.measure().await;
        let floor = f64::midpoint(floor_before.0, floor_after.0);
        let independent = match (floor_before.1, floor_after.1) {
            (Some(b), Some(a)) => {
                let mid = f64::midpoint(b, a);
                (format!("{b:.0}, {a:.0}"), format!("{:.2}", m.rate / mid))
            }
            _ => ("—".to_string(), "—".to_string()),
        };
        // The median run's server CPU per request (ticks of 10 ms: runs of a few seconds).
        let per_request = server_cpu[server_cpu.len() / 2];
        println!(
            "| {level} | {n} | {:.0} | {} | {} | {:.0}, {:.0} | {:.2} | {} | {} | {:.1} | {:.0} µs | {:.2} | {:.2} |",
            m.rate,
            ms(m.p50),
            ms(m.p99),
            floor_before.0,
            floor_after.0,
            m.rate / floor,
            independent.0,
            independent.1,
            (store_after[1] - store_before[1]) as f64
                / (store_after[0] - store_before[0]).max(1) as f64,
            per_request * 1e6,
            1.0 / floor / per_request,
            client_cpu / client_wall,
        );
        floor_before = floor_after;
        let commits = (store_after[0] - store_before[0]).max(1);
        logs.push(format!(
            "store at {level} in flight: {commits} commits, {} commit log checkpoints, {:.1} KiB \
             logged per commit",
            store_after[2] - store_before[2],
            (store_after[3] - store_before[3]) as f64 / commits as f64
        ));
    }
    println!();
    for line in logs {
        println!("{line}");
    }
}

// ---- the scale run (LOADBENCH_SCALE=1) --------------------------------------------------------

/// Masters written offline, each with one session (device binding) and AGENTS_EACH agents.
const SCALE_MASTERS: usize = 100_000;
const SCALE_AGENTS_EACH: usize = 9;
/// Masters that log in over HTTP and hold one event stream open each.
const SCALE_STREAMS: usize = 1_000;

/// Stops the server, writes SCALE_MASTERS masters with one session and SCALE_AGENTS_EACH agents
/// each into its store (1,000,000 stored actors, 100,000 sessions, each login audited), starts
/// it again on the same address, logs SCALE_STREAMS other masters in and opens one event stream
/// for each. Answers the streams' reading tasks (they end when the server closes them).
async fn grow(
    server: &mut Server,
    data: &Path,
    cpu: Option<usize>,
    http: &reqwest::Client,
    agents: &[Principal],
    salt: &mut usize,
) -> Vec<tokio::task::JoinHandle<()>> {
    let listen = server.base.trim_start_matches("http://").to_string();
    let pid = server.child.id().expect("server pid").to_string();
    let status = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .expect("kill");
    assert!(status.success(), "SIGTERM");
    server.child.wait().await.expect("server stops");
    let started = Instant::now();
    let actors = populate(&data.join(agentkeys_gateway::serve::STORE_FILE)).await;
    println!(
        "\n### after growing the store: {SCALE_MASTERS} more masters with one session each, \
         {actors} stored actors in all (written offline in {:.0} s), {SCALE_STREAMS} open event streams",
        started.elapsed().as_secs_f64()
    );
    *server = start_server_on(data, cpu, &listen).await;
    // The first batch signs the heads the offline logins left unsigned.
    let warm = run(
        http,
        &server.base,
        prepare(agents, 500, *salt),
        16,
        Arc::new(AtomicUsize::new(0)),
    )
    .await;
    *salt += 1;
    assert_eq!(warm.errors, 0, "warm-up requests failed after the restart");
    open_streams(&server.base).await
}

/// Writes the scale run's masters, sessions and agents; answers the number of stored actors.
async fn populate(path: &Path) -> usize {
    use agentkeys_actors::ledger::{self, Ledger, Login, Registration};
    use agentkeys_runtime::store::{CreateActor, Store, StoreOptions};
    use agentkeys_runtime::{Omni, Timestamp};
    use base64::Engine;
    use sha2::{Digest, Sha256};

    let options = StoreOptions {
        prepare: vec![ledger::create_tables],
        ..StoreOptions::default()
    };
    let at = Timestamp::from_millis(u64::try_from(now()).expect("positive") * 1000);
    let store = Arc::new(Store::open(path, &options, at).expect("open the stopped store"));
    let ledger = Ledger::new(store.clone()).expect("ledger");
    let digest = |parts: &[&[u8]]| -> [u8; 32] {
        let mut h = Sha256::new();
        for p in parts {
            h.update(p);
        }
        h.finalize().into()
    };
    let master_of = |m: usize| Omni::from_bytes(digest(&[b"scale-master", &m.to_le_bytes()]));
    const IN_FLIGHT: usize = 2048;
    let ids: Vec<usize> = (0..SCALE_MASTERS).collect();
    for wave in ids.chunks(IN_FLIGHT) {
        let pending: Vec<_> = wave
            .iter()
            .map(|&m| {
                let key = digest(&[b"scale-key", &m.to_le_bytes()]);
                let wallet: [u8; 20] = key[..20].try_into().expect("20 bytes");
                ledger.login(Login {
                    master: master_of(m),
                    wallet,
                    identity: ("evm".into(), format!("0x{}", hex::encode(&key[12..]))),
                    signer: None,
                    anchor: None,
                    registration: Registration::Open,
                    jkt: base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(key),
                    device_label: "scale".into(),
                    request_id: format!("scale-{m}"),
                    at,
                })
            })
            .collect();
        for login in pending {
            login.await.expect("an offline login");
        }
    }
    let agents: Vec<(usize, usize)> = (0..SCALE_MASTERS)
        .flat_map(|m| (0..SCALE_AGENTS_EACH).map(move |a| (m, a)))
        .collect();
    for wave in agents.chunks(IN_FLIGHT) {
        let pending: Vec<_> = wave
            .iter()
            .map(|&(m, a)| {
                let parent = master_of(m);
                let label = format!("agent-{a}");
                store.create_actor(CreateActor {
                    omni: Omni::from_bytes(digest(&[parent.as_bytes(), label.as_bytes()])),
                    parent: Some(parent),
                    label,
                    created_at: at,
                    origin: Default::default(),
                    scopes: vec!["sign:eip191".into()],
                })
            })
            .collect();
        for create in pending {
            create.await.expect("an offline create");
        }
    }
    let actors = {
        let txn = store.read().expect("read");
        agentkeys_runtime::store::ReadableTable::len(
            &txn.open_table(agentkeys_runtime::store::ACTORS)
                .expect("actors"),
        )
        .expect("count")
    };
    drop(ledger);
    store.close();
    usize::try_from(actors).expect("count")
}

/// Logs SCALE_STREAMS masters in over HTTP and opens one event stream for each.
async fn open_streams(base: &str) -> Vec<tokio::task::JoinHandle<()>> {
    let streams = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()
        .expect("stream client");
    let url = format!("{PUBLIC_URL}/v1/events");
    let mut tasks = Vec::with_capacity(SCALE_STREAMS);
    for i in 0..SCALE_STREAMS {
        let mut secret = [0x51; 32];
        secret[..8].copy_from_slice(&(i as u64 + 1).to_le_bytes());
        let owner = WalletKey::from_secret(&secret).expect("wallet");
        let (master, _) = login(base, &owner).await;
        let proof = master
            .client
            .key()
            .expect("a direct client")
            .proof("GET", &url, now(), Some(&master.token), None)
            .expect("proof");
        let mut response = streams
            .get(format!("{base}/v1/events"))
            .header("authorization", format!("DPoP {}", master.token))
            .header("dpop", proof)
            .header("accept", "text/event-stream")
            .send()
            .await
            .expect("an event stream");
        assert!(
            response.status().is_success(),
            "event stream {i}: {}",
            response.status()
        );
        tasks.push(tokio::spawn(async move {
            while let Ok(Some(_)) = response.chunk().await {}
        }));
    }
    tasks
}

/// Two trees of one master each: `//ops//team//bot-N` with a budget on ops, team and each bot
/// (large enough never to refuse), and the same without policies. Transactions at 64 in
/// flight, alternating between the trees; medians of each and their ratio.
async fn policy_cost(http: &reqwest::Client, base: &str) {
    const BOTS: usize = 4;
    const ROUNDS: usize = 5;
    const N: usize = 4_000;
    let scopes = ["actors:create", "sign:tx:1"];
    let budget = |max: &str| {
        json!({"tx": {"to": "any"},
            "budgets": [{"asset": "native", "chain": 1, "window_seconds": 86400, "max": max}]})
    };
    let mut trees = Vec::new();
    for (seed, with_policy) in [(0x43u8, true), (0x44u8, false)] {
        let owner = WalletKey::from_secret(&[seed; 32]).expect("wallet");
        let (master, _) = login(base, &owner).await;
        let ops = create_child(&master, "ops", None, &scopes).await;
        let team = create_child(&master, "team", Some(&ops), &scopes).await;
        let mut bots = Vec::new();
        let mut owners = vec![ops.clone(), team.clone()];
        for b in 0..BOTS {
            let bot = create_child(&master, &format!("bot-{b}"), Some(&team), &scopes).await;
            owners.push(bot.clone());
            bots.push(link(base, &master, &bot).await.0);
        }
        if with_policy {
            for omni in &owners {
                let _: Value = master
                    .client
                    .put(
                        &format!("/v1/actors/{omni}/policy"),
                        &budget("1000000000000000000000000"),
                        &master.token,
                    )
                    .await
                    .expect("policy");
            }
        }
        trees.push(bots);
    }
    let mut salt = 1;
    let mut rates = [Vec::new(), Vec::new()];
    for _ in 0..ROUNDS {
        for (t, bots) in trees.iter().enumerate() {
            let requests = prepare_tx(bots, N, salt);
            salt += 1;
            let r = run_on(http, base, TX, requests, 64, Arc::new(AtomicUsize::new(0))).await;
            assert_eq!(r.errors, 0, "transactions failed");
            rates[t].push((r.rate, r.p50, r.p99));
        }
    }
    for r in &mut rates {
        r.sort_by(|a, b| a.0.total_cmp(&b.0));
    }
    let median = |r: &[(f64, Duration, Duration)]| r[r.len() / 2];
    let (with, without) = (median(&rates[0]), median(&rates[1]));
    println!(
        "
signed transactions at 64 in flight, agents at depth 3 ({BOTS} bots), median of {ROUNDS} alternating runs of {N}:"
    );
    println!("| lineage | req/s | p50 | p99 |");
    println!("|---|---|---|---|");
    println!(
        "| three budgets (ops, team, bot) | {:.0} | {} | {} |",
        with.0,
        ms(with.1),
        ms(with.2)
    );
    println!(
        "| no policy | {:.0} | {} | {} |",
        without.0,
        ms(without.1),
        ms(without.2)
    );
    println!(
        "cost of the policy engine: {:.1} % of throughput",
        (1.0 - with.0 / without.0) * 100.0
    );
}

/// Requests with `concurrency` in flight through `client` (direct with `token`, or through a
/// daemon with none): rate, p50, p99.
async fn through_client(
    client: Arc<Client>,
    token: Option<Arc<String>>,
    n: usize,
    concurrency: usize,
) -> RunResult {
    let next = Arc::new(AtomicUsize::new(0));
    let start = Instant::now();
    let tasks: Vec<_> = (0..concurrency)
        .map(|_| {
            let (client, token, next) = (client.clone(), token.clone(), next.clone());
            tokio::spawn(async move {
                let (mut latencies, mut errors) = (Vec::new(), 0);
                while next.fetch_add(1, Ordering::Relaxed) < n {
                    let sent = Instant::now();
                    let r: Result<Value, _> = client
                        .post(
                            EIP191,
                            &json!({"message": "daemon cost"}),
                            token.as_deref().map(String::as_str),
                        )
                        .await;
                    latencies.push(sent.elapsed());
                    errors += usize::from(r.is_err());
                }
                (latencies, errors)
            })
        })
        .collect();
    let (mut latencies, mut errors) = (Vec::with_capacity(n), 0);
    for task in tasks {
        let (l, e) = task.await.expect("task");
        latencies.extend(l);
        errors += e;
    }
    let wall = start.elapsed();
    latencies.sort();
    RunResult {
        rate: n as f64 / wall.as_secs_f64(),
        p50: percentile(&latencies, 0.50),
        p99: percentile(&latencies, 0.99),
        errors,
    }
}

async fn daemon_cost(base: &str) {
    use agentkeys_gateway::commands::daemon;
    const ROUNDS: usize = 5;
    let home = tempfile::tempdir().expect("home");
    let profile = home.path().join("profile");
    let key = DeviceKey::load_or_create(&profile).expect("key");
    let direct = Client::new(PUBLIC_URL, key).connecting_to(base);
    let owner = WalletKey::from_secret(&[0x45; 32]).expect("wallet");
    let session = direct.wallet_login(&owner, 1).await.expect("login");
    let token = Arc::new(session.session_jwt.clone());
    let stored = agentkeys_gateway::commands::StoredSession {
        gateway: PUBLIC_URL.into(),
        session,
    };
    std::fs::write(
        profile.join("session.json"),
        serde_json::to_vec(&stored).expect("json"),
    )
    .expect("session file");
    let globals = agentkeys_gateway::commands::Globals {
        gateway: PUBLIC_URL.into(),
        connect: Some(base.to_string()),
        profile: profile.clone(),
        json: false,
        daemon_socket: None,
        no_daemon: false,
    };
    let running = daemon::start(
        &globals,
        daemon::Options {
            socket: None,
            allow_uid: Vec::new(),
            clock: Arc::new(agentkeys_runtime::SystemClock),
        },
    )
    .await
    .expect("daemon");
    let direct = Arc::new(direct);
    let through = Arc::new(Client::via_daemon(&profile.join(daemon::SOCKET)).expect("client"));
    println!(
        "\nsigned EIP-191 requests, direct vs through the daemon, median of {ROUNDS} alternating runs:"
    );
    println!("| in flight | path | req/s | p50 | p99 |");
    println!("|---|---|---|---|---|");
    for (level, n) in [(1usize, 400usize), (16, 3_000)] {
        let mut rates = [Vec::new(), Vec::new()];
        for _ in 0..ROUNDS {
            let d = through_client(direct.clone(), Some(token.clone()), n, level).await;
            let t = through_client(through.clone(), None, n, level).await;
            assert_eq!(d.errors + t.errors, 0, "requests failed");
            rates[0].push((d.rate, d.p50, d.p99));
            rates[1].push((t.rate, t.p50, t.p99));
        }
        for r in &mut rates {
            r.sort_by(|a, b| a.0.total_cmp(&b.0));
        }
        let median = |r: &[(f64, Duration, Duration)]| r[r.len() / 2];
        let (d, t) = (median(&rates[0]), median(&rates[1]));
        for (name, r) in [("direct", d), ("daemon", t)] {
            println!(
                "| {level} | {name} | {:.0} | {} | {} |",
                r.0,
                ms(r.1),
                ms(r.2)
            );
        }
        println!("daemon / direct at {level} in flight: {:.2}", t.0 / d.0);
    }
    running.shutdown().await.expect("daemon stops");
}

/// The k256-based floor and the independent one, measured on the server's cores.
struct Floors {
    cpu: Option<usize>,
    total: usize,
    /// The built `benches/floor.c`, if it could be built here.
    independent: Option<std::path::PathBuf>,
}

impl Floors {
    fn new(cpu: Option<usize>, total: usize) -> Self {
        let independent = match build_independent_floor() {
            Ok(path) => Some(path),
            Err(why) => {
                println!(
                    "independent floor not measured: {why} (scripts/loadbench.sh installs a C compiler, OpenSSL's and libsecp256k1's headers)"
                );
                None
            }
        };
        Self {
            cpu,
            total,
            independent,
        }
    }

    /// (k256-based floor, independent floor), operations per second.
    async fn measure(&self) -> (f64, Option<f64>) {
        let own = floor(self.cpu, self.total).await;
        let Some(program) = &self.independent else {
            return (own, None);
        };
        // Pinned: one process on the server's core; else one per core, summed.
        let copies = if self.cpu.is_some() { 1 } else { self.total };
        let children: Vec<_> = (0..copies)
            .map(|_| {
                pinned(self.cpu, program)
                    .stdout(Stdio::piped())
                    .spawn()
                    .expect("independent floor")
            })
            .collect();
        let mut sum = 0.0;
        for child in children {
            let out = child.wait_with_output().await.expect("independent floor");
            assert!(out.status.success(), "independent floor failed");
            sum += String::from_utf8_lossy(&out.stdout)
                .trim()
                .parse::<f64>()
                .expect("independent floor rate");
        }
        (own, Some(sum))
    }
}

/// Compiles `benches/floor.c` into the target directory.
fn build_independent_floor() -> Result<std::path::PathBuf, String> {
    let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/floor.c");
    let program = Path::new(env!("CARGO_TARGET_TMPDIR")).join("independent-floor");
    let out = std::process::Command::new("cc")
        .arg("-O2")
        .arg("-o")
        .arg(&program)
        .arg(&source)
        .args(["-lcrypto", "-lsecp256k1"])
        .output()
        .map_err(|e| format!("no C compiler ({e})"))?;
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        let first = err.lines().next().unwrap_or("").to_string();
        return Err(format!("benches/floor.c did not build: {first}"));
    }
    Ok(program)
}

async fn floor(cpu: Option<usize>, total: usize) -> f64 {
    let threads = if cpu.is_some() { 1 } else { total };
    let exe = std::env::current_exe().expect("own path");
    let out = pinned(cpu, &exe)
        .arg("--floor-child")
        .arg(threads.to_string())
        .output()
        .await
        .expect("floor child");
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .expect("floor rate")
}

// ---- the soak ---------------------------------------------------------------------------------

/// Resident memory of `pid`, KiB.
fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

/// CPU seconds this process has used (user + system).
fn own_cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map_or(Vec::new(), |(_, rest)| rest.split_whitespace().collect());
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // utime and stime are fields 14 and 15 of the line, 12 and 13 after the command.
    (ticks(11) + ticks(12)) / 100.0
}

async fn soak(
    http: &reqwest::Client,
    base: &str,
    agents: Vec<Principal>,
    pid: u32,
    length: Duration,
) {
    const SIGNERS: usize = 64;
    const FLOODERS: usize = 8;
    let agents = Arc::new(agents);
    let deadline = Instant::now() + length;
    let cpu_start = own_cpu_seconds();
    let started = Instant::now();
    let signers: Vec<_> = (0..SIGNERS)
        .map(|t| {
            let (http, agents) = (http.clone(), agents.clone());
            let url = format!("{base}/v1/sign/eip191");
            let htu = format!("{PUBLIC_URL}/v1/sign/eip191");
            tokio::spawn(async move {
                let (mut latencies, mut errors, mut i) = (Vec::new(), 0usize, 0usize);
                while Instant::now() < deadline {
                    let agent = &agents[(t + i) % agents.len()];
                    i += 1;
                    let proof = agent
                        .client
                        .key()
                        .expect("a direct client")
                        .proof("POST", &htu, now(), Some(&agent.token), None)
                        .expect("proof");
                    let body = format!("{{\"message\":\"soak {t} {i}\"}}");
                    let sent = Instant::now();
                    let ok = sign_once(&http, &url, &agent.token, &proof, body.into_bytes()).await;
                    latencies.push(sent.elapsed());
                    errors += usize::from(!ok);
                }
                (latencies, errors)
            })
        })
        .collect();
    let flooders: Vec<_> = (0..FLOODERS)
        .map(|_| {
            let http = http.clone();
            let url = format!("{base}/v1/whoami");
            let htu = format!("{PUBLIC_URL}/v1/whoami");
            tokio::spawn(async move {
                let key = DeviceKey::generate().expect("key");
                let mut statuses = std::collections::BTreeMap::<u16, usize>::new();
                while Instant::now() < deadline {
                    let proof = key
                        .proof("GET", &htu, now(), Some("x"), None)
                        .expect("proof");
                    let status = match http
                        .get(&url)
                        .header("authorization", "DPoP x")
                        .header("dpop", proof)
                        .send()
                        .await
                    {
                        Ok(r) => {
                            let status = r.status().as_u16();
                            let _ = r.bytes().await;
                            status
                        }
                        Err(_) => 0,
                    };
                    *statuses.entry(status).or_default() += 1;
                }
                statuses
            })
        })
        .collect();
    let mut rss = vec![rss_kib(pid)];
    while Instant::now() < deadline {
        tokio::time::sleep(Duration::from_secs(10).min(deadline - Instant::now())).await;
        rss.push(rss_kib(pid));
    }
    let mut latencies = Vec::new();
    let mut errors = 0;
    for task in signers {
        let (l, e) = task.await.expect("signer");
        latencies.extend(l);
        errors += e;
    }
    let mut flood = std::collections::BTreeMap::<u16, usize>::new();
    for task in flooders {
        for (status, n) in task.await.expect("flooder") {
            *flood.entry(status).or_default() += n;
        }
    }
    let wall = started.elapsed().as_secs_f64();
    let client_cpu = (own_cpu_seconds() - cpu_start) / wall;
    latencies.sort();
    let flood_total: usize = flood.values().sum();
    // Proofs stay recorded for a minute and the store's page cache fills in the first minutes:
    // compare from the third minute on.
    let (first, last) = (rss[18.min(rss.len() - 1)], *rss.last().expect("sampled"));
    let max = rss.iter().copied().max().unwrap_or(0);
    println!(
        "\nsoak, {:.0} s: honest signed EIP-191 {} requests = {:.0} req/s ({SIGNERS} in flight, fresh proofs), \
         p50 {}, p99 {}, errors {errors}",
        wall,
        latencies.len(),
        latencies.len() as f64 / wall,
        ms(percentile(&latencies, 0.5)),
        ms(percentile(&latencies, 0.99)),
    );
    println!(
        "flood: {flood_total} junk-token requests = {:.0} req/s ({FLOODERS} in flight), answers {flood:?}",
        flood_total as f64 / wall
    );
    println!(
        "server RSS: {} MiB after 3 min, {} MiB at the end, max {} MiB (samples every 10 s: {:?} KiB)",
        first / 1024,
        last / 1024,
        max / 1024,
        rss
    );
    println!("client CPU share (of one core): {client_cpu:.2}");
}
