//! Fixtures shared by the test suites: the runtime's kit (a temporary store, a runtime on a
//! manual clock, the smallest real actor, deterministic omnis, [`wait_until`]) and, on top of it,
//! the signer stack and documents the gateway tests share.

#[path = "../../runtime/tests/kit/mod.rs"]
mod kit;

pub mod engine;

use std::path::Path;
use std::sync::Arc;

use agentkeys_runtime::store::{CreateActor, Store, StoreOptions};
use agentkeys_runtime::{ManualClock, Omni, Runtime, RuntimeConfig};
pub use kit::*;

/// A store, a runtime and the signer pool in one directory, for tests, benches and the interop
/// producer: `k3`'s fingerprint is pinned in the store, the SIWE domain is `127.0.0.1:8090`.
pub struct SignerStack {
    /// The runtime over the store.
    pub runtime: Runtime,
    /// The domain ledger in the same store.
    pub ledger: agentkeys_actors::ledger::Ledger,
    /// The clock the runtime reads (starts at [`T0`]).
    pub clock: ManualClock,
    /// The signer pool.
    pub signer: agentkeys_actors::signer::SignerHandle,
}

impl SignerStack {
    /// Starts everything in `dir`; must run inside an actix `System`.
    pub fn start(
        dir: &Path,
        k3: agentkeys_actors::crypto::secret::MasterSecret,
        threads: usize,
    ) -> Self {
        let options = StoreOptions {
            key_fingerprint: Some(k3.fingerprint().0.to_vec()),
            prepare: vec![agentkeys_actors::ledger::create_tables],
            ..StoreOptions::default()
        };
        let store =
            Arc::new(Store::open(&dir.join("agentkeys.redb"), &options, T0).expect("store opens"));
        let ledger = agentkeys_actors::ledger::Ledger::new(store.clone()).expect("ledger");
        let config = RuntimeConfig {
            arbiters: 1,
            ..RuntimeConfig::default()
        };
        let clock = ManualClock::new(T0);
        let runtime =
            Runtime::start(store, Arc::new(clock.clone()), config).expect("inside a System");
        let signer = agentkeys_actors::signer::start(
            agentkeys_actors::signer::SignerConfig {
                keys: agentkeys_actors::signer::KeyPlacement::Files(dir.join("keys")),
                client_id: "agentkeys".into(),
                siwe_domain: "127.0.0.1:8090".into(),
                threads,
            },
            k3,
            &agentkeys_actors::signer::CurrentKids::default(),
        )
        .expect("signer starts");
        Self {
            runtime,
            ledger,
            clock,
            signer,
        }
    }

    /// Creates an actor (a master when `parent` is `None`) with a given omni.
    pub async fn create(&self, omni: Omni, parent: Option<Omni>, label: &str) {
        self.runtime
            .create(CreateActor {
                omni,
                parent,
                label: label.to_string(),
                created_at: T0,
                origin: Default::default(),
                scopes: Vec::new(),
            })
            .await
            .expect("created");
    }
}

/// An EIP-712 document of the availability report's amplification shape: `rows` × `per_row`
/// instances of a struct whose dependency closure is 60 types of 64 fields.
pub fn eip712_closure_document(rows: usize, per_row: usize) -> serde_json::Value {
    use serde_json::json;
    let mut types = serde_json::Map::new();
    for t in 0..60 {
        let fields: Vec<_> = (0..64)
            .map(|f| json!({"name": format!("f{f}"), "type": format!("T{}[]", (t + f) % 60)}))
            .collect();
        types.insert(format!("T{t}"), json!(fields));
    }
    types.insert("S".into(), json!([{"name": "x", "type": "T0[]"}]));
    types.insert("M".into(), json!([{"name": "a", "type": "S[][]"}]));
    let row: Vec<_> = (0..per_row).map(|_| json!({"x": []})).collect();
    let rows: Vec<_> = (0..rows).map(|_| json!(row)).collect();
    json!({"types": types, "primaryType": "M", "domain": {"name": "x"}, "message": {"a": rows}})
}

/// `agentkeys serve` as a child process: the one way the test suites and benches start it.
pub mod child {
    use std::path::Path;

    use tokio::io::AsyncBufReadExt;

    /// What `agentkeys serve` prints on stdout once its public listener is bound, before the
    /// address.
    pub const LISTENING: &str = "agentkeys listening on ";

    /// Adds `serve` on `listen` (metrics off) with `data_dir`, a clean environment whose `HOME`
    /// is the data dir, stdout piped (for [`listening`]), killed when dropped. Callers add their
    /// own flags, environment and stderr.
    pub fn serve<'a>(
        command: &'a mut tokio::process::Command,
        data_dir: &Path,
        listen: &str,
    ) -> &'a mut tokio::process::Command {
        command
            .args(["serve", "--listen", listen, "--metrics-listen", "off"])
            .arg("--data-dir")
            .arg(data_dir)
            .env_clear()
            .env("HOME", data_dir)
            .stdout(std::process::Stdio::piped())
            .kill_on_drop(true)
    }

    /// Reads the child's stdout until the listening line; returns the address it names.
    pub async fn listening(child: &mut tokio::process::Child) -> String {
        let stdout = child.stdout.take().expect("stdout is piped");
        let mut lines = tokio::io::BufReader::new(stdout).lines();
        while let Some(line) = lines.next_line().await.expect("read") {
            if let Some(addr) = line.strip_prefix(LISTENING) {
                return addr.trim().to_string();
            }
        }
        panic!("agentkeys serve exited before listening");
    }
}
