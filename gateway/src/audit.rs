//! `agentkeys audit verify`: checks every audit chain (row hashes, the chain index, the global
//! sequence, head signatures by the audit key) and compares with the marks of the last
//! successful run, kept in `<data>/audit-verify.json`, so a log cut back to an older, validly
//! signed head is still caught. Runs in the server when it is up (over the admin socket: the
//! store file is locked by the server), offline otherwise — on the redb file, or on the
//! PostgreSQL database with the audit keys unwrapped from it with K3.

use std::path::{Path, PathBuf};

use agentkeys_actors::ledger::Ledger;
use agentkeys_actors::ledger::{AuditReport, ChainMark};
use agentkeys_actors::signer::keys::verify_es256;
use agentkeys_actors::signer::public_jwks_on_disk;
use agentkeys_runtime::Omni;
use anyhow::Context as _;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

/// The marks file inside the data dir.
pub const MARKS_FILE: &str = "audit-verify.json";

#[derive(Debug, Serialize, Deserialize)]
struct Mark {
    master: String,
    length: u64,
    hash: String,
}

fn read_marks(path: &Path) -> anyhow::Result<Vec<ChainMark>> {
    // Only a missing file means "no earlier run"; any other read error would silently turn
    // off the detection of a chain cut back to an older signed head.
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => {
            return Err(e).with_context(|| {
                format!(
                    "cannot read the audit marks {}; fix its permissions (it must stay, or \
                     truncation of the log cannot be detected)",
                    path.display()
                )
            });
        }
    };
    let marks: Vec<Mark> = serde_json::from_str(&text)
        .with_context(|| format!("{} is not a marks file; move it away", path.display()))?;
    marks
        .into_iter()
        .map(|m| {
            let master: Omni = m.master.parse().context("marks file: bad omni")?;
            let hash = hex::decode(&m.hash)
                .ok()
                .and_then(|h| <[u8; 32]>::try_from(h).ok())
                .context("marks file: bad hash")?;
            Ok(ChainMark {
                master,
                length: m.length,
                hash,
            })
        })
        .collect()
}

fn write_marks(path: &Path, marks: &[ChainMark]) -> anyhow::Result<()> {
    let marks: Vec<Mark> = marks
        .iter()
        .map(|m| Mark {
            master: m.master.to_string(),
            length: m.length,
            hash: hex::encode(m.hash),
        })
        .collect();
    let tmp = path.with_extension("json.tmp");
    std::fs::write(&tmp, serde_json::to_vec_pretty(&marks)?)
        .with_context(|| format!("cannot write {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("cannot write {}", path.display()))
}

/// Where the store lives, so the audit keys and the marks can be found.
#[derive(Debug, Clone)]
pub struct AuditPaths {
    /// The data dir.
    pub data_dir: PathBuf,
}

impl AuditPaths {
    fn marks(&self) -> PathBuf {
        self.data_dir.join(MARKS_FILE)
    }
}

/// Verifies with `run` (in the server or on the file), then keeps the new marks if the log
/// is intact. Returns the answer printed by the CLI.
fn verify_with(
    paths: &AuditPaths,
    audit_keys: &[Value],
    run: impl FnOnce(&dyn Fn(&str, &[u8], &[u8]) -> bool, &[ChainMark]) -> anyhow::Result<AuditReport>,
) -> anyhow::Result<Value> {
    let check = |kid: &str, message: &[u8], signature: &[u8]| {
        audit_keys
            .iter()
            .any(|jwk| jwk["kid"] == kid && verify_es256(jwk, message, signature))
    };
    let last = read_marks(&paths.marks())?;
    let report = run(&check, &last)?;
    if report.problems.is_empty() {
        write_marks(&paths.marks(), &report.marks)?;
    }
    Ok(json!({
        "ok": report.problems.is_empty(),
        "chains": report.chains,
        "rows": report.rows,
        "problems": report.problems,
    }))
}

/// In the server: verify the open store against the public audit keys the signer publishes.
pub fn verify_running(
    ledger: &Ledger,
    audit_keys: &[Value],
    paths: &AuditPaths,
) -> anyhow::Result<Value> {
    verify_with(paths, audit_keys, |check, last| {
        Ok(ledger.verify_audit(check, last)?)
    })
}

/// Offline: verify the store file of a stopped server.
pub fn verify_offline(paths: &AuditPaths) -> anyhow::Result<Value> {
    let file = paths.data_dir.join(crate::serve::STORE_FILE);
    anyhow::ensure!(
        file.exists(),
        "no store at {}; give the server's --data-dir",
        file.display()
    );
    let keys_dir = paths.data_dir.join("keys").join("audit");
    let audit_keys = public_jwks_on_disk(&keys_dir)?;
    verify_with(paths, &audit_keys, |check, last| {
        Ledger::verify_file(&file, check, last).with_context(|| {
            format!(
                "cannot read {}; if the server runs, its admin socket must be reachable",
                file.display()
            )
        })
    })
}

/// Offline on PostgreSQL: the database of `config` (its deployment checked against K3), the
/// audit keys read from it and unwrapped with K3 (only their public parts are used).
pub async fn verify_offline_postgres(
    config: &crate::config::Config,
    settings: &agentkeys_pg::PgSettings,
    now: agentkeys_runtime::Timestamp,
) -> anyhow::Result<Value> {
    use agentkeys_actors::signer::KeySetName;
    use agentkeys_actors::signer::keys::{load_k3, load_stored_set};
    let k3 = load_k3(&config.k3_file)?;
    let identity = agentkeys_pg::NodeIdentity {
        client_id: config.client_id.clone(),
        k3_fingerprint: k3.fingerprint().0.to_vec(),
        node_name: "audit-verify".into(),
    };
    agentkeys_pg::PgStore::open(settings, &identity)
        .await
        .context("cannot open the PostgreSQL store")?;
    let options = agentkeys_runtime::store::StoreOptions {
        client_id: config.client_id.clone(),
        key_fingerprint: Some(k3.fingerprint().0.to_vec()),
        prepare: vec![agentkeys_actors::ledger::create_tables],
        ..Default::default()
    };
    let engine = std::sync::Arc::new(agentkeys_pg::PgEngine::new(settings)?);
    let store = agentkeys_runtime::store::Store::open_bytes(engine, &options, now)?;
    let stored = crate::keystore::read(&store)?;
    let audit_keys: Vec<Value> = load_stored_set(&k3, &stored, KeySetName::Audit)?
        .iter()
        .map(|k| k.public_jwk())
        .collect();
    let paths = AuditPaths {
        data_dir: config.data_dir.clone(),
    };
    let answer = verify_with(&paths, &audit_keys, |check, last| {
        Ok(agentkeys_actors::ledger::audit::verify(
            &store.read()?,
            check,
            last,
        )?)
    });
    store.close();
    answer
}

#[cfg(test)]
mod tests {
    use super::read_marks;

    #[test]
    fn a_missing_marks_file_is_a_first_run_and_an_unreadable_one_is_an_error() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("audit-marks.json");
        assert!(read_marks(&path).expect("missing: no marks").is_empty());
        // A directory in its place cannot be read: verification must not go on without it.
        std::fs::create_dir(&path).expect("dir");
        let err = read_marks(&path).expect_err("unreadable");
        assert!(
            format!("{err:#}").contains("cannot read the audit marks"),
            "{err:#}"
        );
    }
}
