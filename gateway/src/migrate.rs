//! `agentkeys admin migrate --to postgres://…`: copies the redb store of a stopped server into an
//! empty PostgreSQL database and verifies the copy (docs/multi-node.md).
//!
//! Every table of the runtime and the ledger is copied row by row in one PostgreSQL transaction,
//! then compared row by row with the file; the key sets of `<data>/keys/` are wrapped with K3
//! and stored (retired keys stay behind); the audit chains of the copy are verified with the
//! audit key. The file's data is not changed (opening it runs the store's usual checks):
//! pointing `store` back at redb undoes the migration.

use std::sync::Arc;

use agentkeys_actors::ledger;
use agentkeys_actors::signer::keys::{load_k3, load_set, load_stored_set, stored_from_files};
use agentkeys_actors::signer::{KeySetName, P256Key};
use agentkeys_runtime::Clock;
use agentkeys_runtime::store::{
    Engine, ReadTransaction, StoreError, StoreKey, TableDefinition, TableVisitor, WriteTransaction,
    copy_rows, first_difference, tables::Value,
};
use agentkeys_runtime::store::{Store, StoreOptions};
use anyhow::{Context as _, bail, ensure};
use serde_json::{Value as Json, json};

use crate::config::Config;

struct Copy<'a> {
    from: &'a ReadTransaction,
    to: &'a WriteTransaction,
    tables: usize,
    rows: u64,
}

impl TableVisitor for Copy<'_> {
    fn visit<K: StoreKey, V: Value + 'static>(
        &mut self,
        def: TableDefinition<K, V>,
    ) -> Result<(), StoreError> {
        self.rows += copy_rows(self.from, self.to, def)?;
        self.tables += 1;
        Ok(())
    }
}

struct Compare<'a> {
    file: &'a ReadTransaction,
    copy: &'a ReadTransaction,
    differences: Vec<String>,
}

impl TableVisitor for Compare<'_> {
    fn visit<K: StoreKey, V: Value + 'static>(
        &mut self,
        def: TableDefinition<K, V>,
    ) -> Result<(), StoreError> {
        if let Some(difference) = first_difference(self.file, self.copy, def)? {
            self.differences.push(difference);
        }
        Ok(())
    }
}

fn every_table(visitor: &mut impl TableVisitor) -> Result<(), StoreError> {
    Store::visit_tables(visitor)?;
    ledger::visit_tables(visitor)
}

fn kids(keys: &[P256Key]) -> Vec<String> {
    keys.iter().map(|k| k.kid().to_string()).collect()
}

/// Runs the migration; answers the report printed by the command.
pub async fn run(
    config: &Config,
    to: &str,
    settings: &agentkeys_pg::PgSettings,
    clock: &dyn Clock,
) -> anyhow::Result<Json> {
    let file = config.data_dir.join(crate::serve::STORE_FILE);
    ensure!(
        file.exists(),
        "no store at {}; give the server's --data-dir",
        file.display()
    );
    let k3 = load_k3(&config.k3_file)?;
    let options = StoreOptions {
        client_id: config.client_id.clone(),
        key_fingerprint: Some(k3.fingerprint().0.to_vec()),
        prepare: vec![ledger::create_tables],
        ..StoreOptions::default()
    };
    // redb holds the file exclusively: this fails while a server has it open.
    let source = Store::open(&file, &options, clock.now()).with_context(|| {
        format!(
            "cannot open {}; stop the server first (the migration copies a stopped store)",
            file.display()
        )
    })?;
    let identity = agentkeys_pg::NodeIdentity {
        client_id: config.client_id.clone(),
        k3_fingerprint: k3.fingerprint().0.to_vec(),
        node_name: "migration".into(),
    };
    let pg = agentkeys_pg::PgStore::open(settings, &identity).await?;
    let rows: i64 = pg
        .pool()
        .get()
        .await?
        .query_one("SELECT count(*) FROM agentkeys_kv", &[])
        .await?
        .get(0);
    if rows != 0 {
        bail!("the database already holds a store ({rows} rows); migrate into an empty database");
    }
    let engine = Engine::Bytes(Arc::new(agentkeys_pg::PgEngine::new(settings)?));

    // 1. Every table, in one transaction.
    let snapshot = source.read()?;
    let txn = engine.begin_write()?;
    let mut copy = Copy {
        from: &snapshot,
        to: &txn,
        tables: 0,
        rows: 0,
    };
    every_table(&mut copy)?;
    let (tables, copied) = (copy.tables, copy.rows);
    txn.commit()?;

    // 2. Row by row against the file.
    let mut compare = Compare {
        file: &snapshot,
        copy: &engine.begin_read()?,
        differences: Vec::new(),
    };
    every_table(&mut compare)?;
    if !compare.differences.is_empty() {
        bail!(
            "the copy differs from the file: {}",
            compare.differences.join("; ")
        );
    }
    drop(snapshot);
    source.close();

    // 3. The key sets, wrapped, through a store on the copy; read back and unwrapped.
    let keys_dir = config.data_dir.join("keys");
    let stored = stored_from_files(&k3, &keys_dir)?;
    let Engine::Bytes(bytes) = engine else {
        unreachable!("a PostgreSQL engine")
    };
    let copy = Store::open_bytes(bytes, &options, clock.now())?;
    crate::keystore::store_all(&copy, &stored).await?;
    let back = crate::keystore::read(&copy)?;
    for set in KeySetName::ALL {
        let files = kids(&load_set(&keys_dir.join(set.dir_name()))?);
        let unwrapped = kids(&load_stored_set(&k3, &back, set)?);
        ensure!(
            files == unwrapped,
            "the {} keys read back from the database differ from the files",
            set.dir_name()
        );
    }

    // 4. The audit chains of the copy.
    let audit_keys = agentkeys_actors::signer::public_jwks_on_disk(&keys_dir.join("audit"))?;
    let check = |kid: &str, message: &[u8], signature: &[u8]| {
        audit_keys.iter().any(|k| {
            k["kid"] == kid && agentkeys_actors::signer::keys::verify_es256(k, message, signature)
        })
    };
    let report = ledger::audit::verify(&copy.read()?, &check, &[])?;
    copy.close();
    ensure!(
        report.problems.is_empty(),
        "the audit chains of the copy do not verify: {}",
        report.problems.join("; ")
    );
    Ok(json!({
        "ok": true,
        "tables": tables,
        "rows": copied,
        "keys": stored.len(),
        "audit_chains": report.chains,
        "audit_rows": report.rows,
        "next": format!(
            "set store = \"{to}\" on every node (the data in {} is unchanged)",
            file.display()
        ),
    }))
}
