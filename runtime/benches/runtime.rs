//! Runtime benchmarks (release build). Figures and the commands that produced them go to
//! `docs/BENCHMARKS.md`.
//!
//! ```text
//! cargo bench -p agentkeys-runtime --bench runtime -- all        # every part, each in its own process
//! cargo bench -p agentkeys-runtime --bench runtime -- creates    # durable creates per second
//! cargo bench -p agentkeys-runtime --bench runtime -- revoke     # revoke latency vs subtree size
//! cargo bench -p agentkeys-runtime --bench runtime -- activation # activation latency
//! cargo bench -p agentkeys-runtime --bench runtime -- memory     # RSS per active agent actor
//! cargo bench -p agentkeys-runtime --bench runtime -- boot       # boot with 1M actors, after kill -9
//! ```
//!
//! Every figure is a median over repetitions, and each comes with a reference measured in the
//! same run on the same cores (an empty commit, a warm call), because this machine is shared.

#![allow(missing_docs, clippy::unwrap_used, reason = "benchmark binary")]

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::{Actor, Context, Handler, Message};
use agentkeys_runtime::store::{ActorKind, CreateActor, Store, StoreOptions};
use agentkeys_runtime::{
    Activation, Clock, LineageGuard, Omni, Registry, Runtime, RuntimeConfig, SystemClock,
    Timestamp, VirtualActor,
};

/// The allocator the `agentkeys` binary runs on, so that the memory figures are the product's.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect();
    let what = args.first().map(String::as_str).unwrap_or("all");
    match what {
        "all" => {
            for part in ["creates", "activation", "memory", "revoke", "boot"] {
                let status = Command::new(std::env::current_exe().unwrap())
                    .arg(part)
                    .status()
                    .unwrap();
                assert!(status.success(), "{part} failed");
            }
        }
        "creates" => on_system(creates()),
        "activation" => on_system(activation()),
        "memory" => on_system(memory()),
        "revoke" => on_system(revoke()),
        "boot" => boot(),
        "child-writer" => on_system(child_writer(PathBuf::from(&args[1]), args[2] == "quick")),
        other => panic!("unknown part {other}"),
    }
}

fn on_system<F: Future<Output = ()>>(fut: F) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    actix::System::with_tokio_rt(|| rt).block_on(fut);
}

// ---------------------------------------------------------------------------------------------
// A stand-in for the agent actor with realistic state: omni, path, scopes, two device bindings.

struct Binding {
    _id: [u8; 16],
    _jkt: [u8; 32],
    _label: String,
    _created: Timestamp,
    _last_used: Timestamp,
}

struct BenchAgent {
    omni: Omni,
    _path: String,
    _scopes: Vec<String>,
    _devices: Vec<Binding>,
    guard: LineageGuard,
}

impl Actor for BenchAgent {
    type Context = Context<Self>;
}

impl VirtualActor for BenchAgent {
    type Deps = ();

    fn accepts(_kind: ActorKind) -> bool {
        true
    }

    fn activate(a: Activation, _deps: (), _ctx: &mut Context<Self>) -> Self {
        let record = a.lineage.actor();
        let binding = |n: u8| Binding {
            _id: [n; 16],
            _jkt: [n; 32],
            _label: format!("laptop-{n}"),
            _created: record.created_at,
            _last_used: record.created_at,
        };
        BenchAgent {
            omni: record.omni,
            _path: record.path.clone(),
            _scopes: vec!["sign:eip191".into(), "oidc:sts.amazonaws.com".into()],
            _devices: vec![binding(1), binding(2)],
            guard: a.guard,
        }
    }
}

agentkeys_runtime::supervised!(BenchAgent);

#[derive(Clone, Message)]
#[rtype(result = "Omni")]
struct Ping;

impl Handler<Ping> for BenchAgent {
    type Result = actix::MessageResult<Ping>;

    fn handle(&mut self, _msg: Ping, _ctx: &mut Context<Self>) -> Self::Result {
        let _ = self.guard.check();
        actix::MessageResult(self.omni)
    }
}

/// The smallest actix actor, for the bare `send` reference.
struct RawActor;

impl Actor for RawActor {
    type Context = Context<Self>;
}

impl Handler<Ping> for RawActor {
    type Result = actix::MessageResult<Ping>;

    fn handle(&mut self, _msg: Ping, _ctx: &mut Context<Self>) -> Self::Result {
        actix::MessageResult(Omni::from_bytes([0; 32]))
    }
}

// ---------------------------------------------------------------------------------------------
// Helpers

#[path = "../tests/kit/mod.rs"]
mod kit;
use kit::{create as op, omni_of as omni};

/// A fresh store holding one master: (its directory, the store, the master's omni).
async fn store_with_master(quick_repair: bool) -> (tempfile::TempDir, Arc<Store>, Omni) {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), quick_repair);
    store.create_actor(op(None, "m")).await.unwrap();
    (dir, store, omni(None, "m"))
}

/// Creates of `n` children of `master` labelled `{prefix}{i}`.
fn children(master: &Omni, prefix: &str, n: usize) -> Vec<CreateActor> {
    (0..n)
        .map(|i| op(Some(master), &format!("{prefix}{i}")))
        .collect()
}

fn open(dir: &Path, quick_repair: bool) -> Arc<Store> {
    let options = StoreOptions {
        quick_repair,
        ..StoreOptions::default()
    };
    Arc::new(Store::open(&dir.join("agentkeys.redb"), &options, SystemClock.now()).unwrap())
}

fn start(store: Arc<Store>) -> Runtime {
    let config = RuntimeConfig {
        idle_timeout: Duration::from_secs(3600),
        ..RuntimeConfig::default()
    };
    Runtime::start(store, Arc::new(SystemClock), config).unwrap()
}

/// Creates `ops` with at most `window` writes in flight; returns the elapsed time.
async fn create_all(store: &Arc<Store>, ops: Vec<CreateActor>, window: usize) -> Duration {
    let started = Instant::now();
    let ops = Arc::new(std::sync::Mutex::new(ops));
    let tasks: Vec<_> = (0..window)
        .map(|_| {
            let (store, ops) = (store.clone(), ops.clone());
            tokio::spawn(async move {
                loop {
                    let next = ops.lock().unwrap().pop();
                    let Some(next) = next else { break };
                    store.create_actor(next).await.unwrap();
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    started.elapsed()
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

fn us(d: Duration) -> String {
    format!("{:.1} µs", d.as_secs_f64() * 1e6)
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1e3)
}

async fn empty_commit(store: &Arc<Store>) -> Duration {
    let mut v = Vec::new();
    for _ in 0..21 {
        let t = Instant::now();
        store.flush().await.unwrap();
        v.push(t.elapsed());
    }
    median(v)
}

fn rss_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap();
    let pages: u64 = statm.split_whitespace().nth(1).unwrap().parse().unwrap();
    pages * 4096
}

// ---------------------------------------------------------------------------------------------
// Parts

async fn creates() {
    println!("## creates (durable, runtime level, group commit)");
    println!("| writes in flight | creates | time | creates/s | writes per commit |");
    println!("|---|---|---|---|---|");
    for (window, n) in [(1usize, 2_000usize), (64, 50_000), (1024, 200_000)] {
        let (_dir, store, master) = store_with_master(false).await;
        let ops: Vec<_> = children(&master, "a", n);
        let before = store.writer_counts();
        let took = create_all(&store, ops, window).await;
        let after = store.writer_counts();
        let commits = (after.commits - before.commits).max(1);
        println!(
            "| {window} | {n} | {:.2} s | {:.0} | {:.1} |",
            took.as_secs_f64(),
            n as f64 / took.as_secs_f64(),
            n as f64 / commits as f64
        );
        store.close();
    }
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), false);
    println!(
        "\nreference: empty commit (fsync) median {}",
        us(empty_commit(&store).await)
    );
    store.close();
    println!("\n| quick_repair | 1 in flight: time per create | 1024 in flight: creates/s |");
    println!("|---|---|---|");
    for quick in [false, true] {
        let (_dir, store, master) = store_with_master(quick).await;
        let ops: Vec<_> = children(&master, "a", 1000);
        let single = create_all(&store, ops, 1).await;
        let ops: Vec<_> = children(&master, "b", 100_000);
        let grouped = create_all(&store, ops, 1024).await;
        println!(
            "| {quick} | {} | {:.0} |",
            us(single / 1000),
            100_000.0 / grouped.as_secs_f64()
        );
        store.close();
    }
}

async fn activation() {
    let n = 10_000;
    let (_dir, store, master) = store_with_master(false).await;
    let ops: Vec<_> = children(&master, "a", n);
    create_all(&store, ops, 256).await;
    let runtime = start(store);
    let registry = Registry::<BenchAgent>::new(&runtime, ());
    let mut cold = Vec::with_capacity(n);
    for i in 0..n {
        let target = omni(Some(&master), &format!("a{i}"));
        let t = Instant::now();
        registry.call(target, Ping).await.unwrap();
        cold.push(t.elapsed());
    }
    let mut warm = Vec::with_capacity(n);
    for i in 0..n {
        let target = omni(Some(&master), &format!("a{i}"));
        let t = Instant::now();
        registry.call(target, Ping).await.unwrap();
        warm.push(t.elapsed());
    }
    // Reference: a bare actix `send` round trip to an actor on an arbiter, same caller.
    let arbiter = actix::Arbiter::new();
    let raw = RawActor::start_in_arbiter(&arbiter.handle(), |_| RawActor);
    let mut bare = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        raw.send(Ping).await.unwrap();
        bare.push(t.elapsed());
    }
    arbiter.stop();
    cold.sort();
    warm.sort();
    bare.sort();
    println!("## activation ({n} actors, first call = store read + spawn + register + call)");
    println!("| | p50 | p99 |");
    println!("|---|---|---|");
    println!(
        "| first call (activation) | {} | {} |",
        us(percentile(&cold, 0.5)),
        us(percentile(&cold, 0.99))
    );
    println!(
        "| warm call (reference) | {} | {} |",
        us(percentile(&warm, 0.5)),
        us(percentile(&warm, 0.99))
    );
    println!(
        "| bare actix send to an arbiter (reference) | {} | {} |",
        us(percentile(&bare, 0.5)),
        us(percentile(&bare, 0.99))
    );
    println!(
        "activation costs {:.1}× a warm call at p50; a warm call costs {:.2}× a bare actix send",
        percentile(&cold, 0.5).as_secs_f64() / percentile(&warm, 0.5).as_secs_f64(),
        percentile(&warm, 0.5).as_secs_f64() / percentile(&bare, 0.5).as_secs_f64()
    );
    runtime.shutdown(Duration::from_secs(10)).await;
}

async fn memory() {
    let n = 100_000;
    let (_dir, store, master) = store_with_master(false).await;
    let groups: Vec<_> = (0..n / 1000)
        .map(|g| op(Some(&master), &format!("g{g}")))
        .collect();
    create_all(&store, groups, 64).await;
    let ops: Vec<_> = (0..n)
        .map(|i| {
            op(
                Some(&omni(Some(&master), &format!("g{}", i / 1000))),
                &format!("a{i}"),
            )
        })
        .collect();
    create_all(&store, ops, 1024).await;
    let runtime = start(store);
    let registry = Registry::<BenchAgent>::new(&runtime, ());
    // Warm up allocator pools and the arbiters with a first batch, then measure the rest.
    let target = |i: usize| {
        omni(
            Some(&omni(Some(&master), &format!("g{}", i / 1000))),
            &format!("a{i}"),
        )
    };
    for i in 0..1000 {
        registry.call(target(i), Ping).await.unwrap();
    }
    let before = rss_bytes();
    for i in 1000..n {
        registry.call(target(i), Ping).await.unwrap();
    }
    let after = rss_bytes();
    let per = (after - before) as f64 / (n - 1000) as f64;
    println!("## memory per active agent actor (omni, path, scopes, two device bindings)");
    println!(
        "{} actors active at depth 3; RSS grew {:.1} MiB for the last {}: {:.0} bytes per active actor \
         (actor + context + mailbox + registry entries; mimalloc, as the binary)",
        registry.active(),
        (after - before) as f64 / (1 << 20) as f64,
        n - 1000,
        per
    );
    runtime.shutdown(Duration::from_secs(30)).await;
}

/// Small commits between a subtree's bulk creation and its revocation.
const SETTLE: usize = 3;

async fn revoke() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), false);
    let runtime = start(store.clone());
    let registry = Registry::<BenchAgent>::new(&runtime, ());
    let master = omni(None, "m");
    store.create_actor(op(None, "m")).await.unwrap();
    // Start from a store of realistic size so that every subtree size meets a B-tree of about
    // the same depth: the comparison is then about the subtree alone.
    let filler: Vec<_> = children(&master, "f", 300_000);
    create_all(&store, filler, 1024).await;
    let reference = empty_commit(&store).await;
    println!(
        "## revoke (subtree: mid → groups of 100 → leaves; 10% of descendants active; store prefilled with 300k actors)"
    );
    println!(
        "reference: empty commit median {} (same run)",
        us(reference)
    );
    println!(
        "| descendants | active | revoke commit (median) | ÷ empty commit | all active stopped (median) | reps |"
    );
    println!("|---|---|---|---|---|---|");
    // The last row repeats the first after the store has grown: the control for store size.
    for (row, (size, reps)) in [
        (1usize, 7usize),
        (1_000, 7),
        (10_000, 5),
        (100_000, 3),
        (1, 7),
    ]
    .into_iter()
    .enumerate()
    {
        let mut commits = Vec::new();
        let mut stops = Vec::new();
        let mut active = 0;
        for rep in 0..reps {
            let mid_label = format!("mid-{row}-{rep}");
            let mid = omni(Some(&master), &mid_label);
            store
                .create_actor(op(Some(&master), &mid_label))
                .await
                .unwrap();
            let groups = size.div_ceil(100);
            let leaves_per_group = size.min(100);
            let group_ops: Vec<_> = (0..groups)
                .map(|g| op(Some(&mid), &format!("g{g}")))
                .collect();
            let mut descendants: Vec<Omni> = group_ops.iter().map(|o| o.omni).collect();
            create_all(&store, group_ops, 64).await;
            let mut leaf_ops = Vec::new();
            for g in 0..groups {
                let group = omni(Some(&mid), &format!("g{g}"));
                for l in 0..leaves_per_group {
                    leaf_ops.push(op(Some(&group), &format!("l{l}")));
                }
            }
            descendants.extend(leaf_ops.iter().map(|o| o.omni));
            create_all(&store, leaf_ops, 1024).await;
            // Activate every tenth descendant.
            let targets: Vec<Omni> = descendants.iter().step_by(10).copied().collect();
            for t in &targets {
                registry.call(*t, Ping).await.unwrap();
            }
            active = targets.len();
            let watches: Vec<_> = targets
                .iter()
                .filter_map(|t| registry.stop_watch(t))
                .collect();
            // Settle the store after the bulk creates: redb releases the pages those commits
            // freed during the following non-empty commits; pay that with a few small writes
            // instead of charging it to the revoke.
            for k in 0..SETTLE {
                let label = format!("settle-{row}-{rep}-{k}");
                store.create_actor(op(Some(&master), &label)).await.unwrap();
            }
            let t = Instant::now();
            let receipt = runtime.revoke(mid).await.unwrap();
            for w in watches {
                w.stopped().await;
            }
            stops.push(t.elapsed());
            commits.push(receipt.commit_time);
            assert_eq!(receipt.stopped, active);
        }
        let commit = median(commits);
        println!(
            "| {size} | {active} | {} | {:.2} | {} | {reps} |",
            us(commit),
            commit.as_secs_f64() / reference.as_secs_f64(),
            ms(median(stops))
        );
    }
    runtime.shutdown(Duration::from_secs(30)).await;
}

/// Writes forever (for the kill -9 part of `boot`).
async fn child_writer(dir: PathBuf, quick: bool) {
    let store = open(&dir, quick);
    let master = omni(None, "writer");
    let _ = store.create_actor(op(None, "writer")).await;
    println!("ready");
    let mut i = 0u64;
    loop {
        let batch: Vec<_> = (0..256)
            .map(|j| op(Some(&master), &format!("w{}", i * 256 + j)))
            .collect();
        create_all(&store, batch, 256).await;
        i += 1;
    }
}

fn boot() {
    const N: usize = 1_000_000;
    let dir = tempfile::tempdir().unwrap();
    let build = Instant::now();
    on_system(async {
        let store = open(dir.path(), false);
        let masters: Vec<_> = (0..1000).map(|m| op(None, &format!("m{m}"))).collect();
        create_all(&store, masters, 64).await;
        let ops: Vec<_> = (0..N - 1000)
            .map(|i| {
                op(
                    Some(&omni(None, &format!("m{}", i % 1000))),
                    &format!("a{i}"),
                )
            })
            .collect();
        create_all(&store, ops, 1024).await;
        store.close();
    });
    let size = std::fs::metadata(dir.path().join("agentkeys.redb"))
        .unwrap()
        .len();
    println!("## boot with {N} stored actors");
    println!(
        "built in {:.1} s; file {:.0} MiB",
        build.elapsed().as_secs_f64(),
        size as f64 / (1 << 20) as f64
    );
    let clean: Vec<_> = (0..5).map(|_| time_boot(dir.path(), false)).collect();
    println!("| case | boot (open store + start runtime), median |");
    println!("|---|---|");
    println!("| clean shutdown | {} |", ms(median(clean)));
    for quick in [false, true] {
        let mut after_kill = Vec::new();
        for _ in 0..3 {
            kill_writer(dir.path(), quick);
            after_kill.push(time_boot(dir.path(), quick));
        }
        println!(
            "| after kill -9, quick_repair={quick} | {} |",
            ms(median(after_kill))
        );
    }
}

fn time_boot(dir: &Path, quick: bool) -> Duration {
    let mut took = Duration::ZERO;
    on_system(async {
        let t = Instant::now();
        let store = open(dir, quick);
        let runtime = start(store);
        took = t.elapsed();
        runtime.shutdown(Duration::from_secs(5)).await;
    });
    took
}

fn kill_writer(dir: &Path, quick: bool) {
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "child-writer",
            dir.to_str().unwrap(),
            if quick { "quick" } else { "full" },
        ])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(child.stdout.take().unwrap()),
        &mut line,
    )
    .unwrap();
    assert_eq!(line.trim(), "ready");
    // Let it commit for a while so the kill lands mid-write.
    std::thread::sleep(Duration::from_millis(500));
    child.kill().unwrap();
    child.wait().unwrap();
}
