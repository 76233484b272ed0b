//! Child process of the crash test: writes as fast as it can with concurrent tasks and prints
//! one line per acknowledged write, strictly after the acknowledgement:
//!
//! ```text
//! C <omni> <parent> <label>   a create was acknowledged
//! R <omni>                    a revocation was acknowledged
//! ```
//!
//! Usage: `crash-writer DATA_DIR CYCLE [--graceful]`. It never stops by itself: the crash test
//! SIGKILLs it; with `--graceful` it shuts the runtime down on SIGTERM (stop intake, drain,
//! final group commit, close the store) and exits 0.

use std::io::Write;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use agentkeys_runtime::store::Store;
use agentkeys_runtime::{Omni, Runtime, SystemClock};
use agentkeys_tests::{create, omni_of};

const WORKERS: usize = 8;

struct Shared {
    nodes: Vec<Omni>,
    rng: u64,
    next_label: u64,
}

impl Shared {
    fn next(&mut self) -> u64 {
        // xorshift64: reproducible per cycle, no dependency.
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        self.rng
    }
}

fn say(line: &str) {
    let mut out = std::io::stdout().lock();
    // If the parent is gone there is nobody to tell; the write itself stands.
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

fn main() {
    let mut args = std::env::args().skip(1);
    let (Some(dir), Some(cycle)) = (args.next(), args.next()) else {
        eprintln!("usage: crash-writer DATA_DIR CYCLE");
        std::process::exit(2);
    };
    let dir = PathBuf::from(dir);
    let cycle: u64 = cycle.parse().unwrap_or(0);
    let graceful = args.next().as_deref() == Some("--graceful");
    let tokio_rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    actix::System::with_tokio_rt(|| tokio_rt).block_on(run(dir, cycle, graceful));
}

async fn run(dir: PathBuf, cycle: u64, graceful: bool) {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("SIGTERM handler");
    let store = agentkeys_tests::open_store(&dir);
    let store: Arc<Store> = store;
    let runtime =
        Runtime::start(store, Arc::new(SystemClock), Default::default()).expect("inside a System");
    let name = format!("crash-m{cycle}");
    let master = omni_of(None, &name);
    runtime.create(create(None, &name)).await.expect("master");
    say(&format!("C {master} - -"));
    let shared = Arc::new(Mutex::new(Shared {
        nodes: vec![master],
        rng: 0x9e37_79b9_7f4a_7c15 ^ (cycle + 1),
        next_label: 0,
    }));
    let workers: Vec<_> = (0..WORKERS)
        .map(|_| tokio::spawn(work(runtime.clone(), shared.clone())))
        .collect();
    if graceful {
        term.recv().await;
        let report = runtime.shutdown(std::time::Duration::from_secs(10)).await;
        eprintln!("crash-writer: shut down: {report:?}");
        std::process::exit(0);
    }
    for w in workers {
        let _ = w.await;
    }
}

async fn work(runtime: Runtime, shared: Arc<Mutex<Shared>>) {
    // Intake stops with the shutdown; writes already submitted still commit and are reported.
    while !runtime.is_closing() {
        let (revoke, target, label) = {
            let mut s = shared.lock().expect("not poisoned");
            let roll = s.next();
            let pick = usize::try_from(s.next() % s.nodes.len() as u64).unwrap_or(0);
            s.next_label += 1;
            // One write in six revokes a non-master node.
            (
                roll.is_multiple_of(6) && pick > 0,
                s.nodes[pick],
                format!("c{}", s.next_label),
            )
        };
        if revoke {
            if runtime.revoke(target).await.is_ok() {
                say(&format!("R {target}"));
            }
        } else if let Ok(created) = runtime.create(create(Some(&target), &label)).await {
            say(&format!("C {} {target} {label}", created.record.omni));
            shared
                .lock()
                .expect("not poisoned")
                .nodes
                .push(created.record.omni);
        }
    }
}
