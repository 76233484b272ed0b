//! The P-256 key sets (K1, K2, the audit key) in the store, when the store is shared
//! (PostgreSQL): every node reads the same keys, wrapped by the signer under a key HKDF derives
//! from K3 (only the signer unwraps them). They live in the meta table as
//! `keys.stored.<set>.<kid>` = `created_ms ‖ wrapped`; an empty value marks a retired key.

use agentkeys_actors::signer::{KeySetName, SignerHandle, StoredKey};
use agentkeys_runtime::store::Store;
use anyhow::Context as _;

const PREFIX: &str = "keys.stored.";

fn name(set: KeySetName, kid: &str) -> String {
    format!("{PREFIX}{}.{kid}", set.dir_name())
}

/// The keys the store holds (retired ones left out).
pub fn read(store: &Store) -> anyhow::Result<Vec<StoredKey>> {
    let mut out = Vec::new();
    for (name, value) in store.meta_prefixed(PREFIX)? {
        if value.is_empty() {
            continue;
        }
        let rest = &name[PREFIX.len()..];
        let parsed = rest.split_once('.').and_then(|(set, kid)| {
            let set = KeySetName::ALL.into_iter().find(|s| s.dir_name() == set)?;
            StoredKey::decode(set, kid, &value)
        });
        out.push(parsed.with_context(|| format!("the stored key {name:?} is malformed"))?);
    }
    Ok(out)
}

/// Stores the keys the signer created since the last call (none when keys are files); run
/// before any of them signs.
pub async fn persist_new(store: &Store, signer: &SignerHandle) -> anyhow::Result<()> {
    store_all(store, &signer.take_new_keys()).await
}

/// Stores wrapped keys (durably, one write each).
pub async fn store_all(store: &Store, keys: &[StoredKey]) -> anyhow::Result<()> {
    for key in keys {
        store
            .set_meta(&name(key.set, &key.kid), key.encode())
            .await
            .with_context(|| format!("cannot store the key {}", key.kid))?;
    }
    Ok(())
}

/// Marks a retired key in the store (nothing when keys are files).
pub async fn retire(
    store: &Store,
    signer: &SignerHandle,
    set: KeySetName,
    kid: &str,
) -> anyhow::Result<()> {
    if signer.keys_stored() {
        store
            .set_meta(&name(set, kid), Vec::new())
            .await
            .with_context(|| format!("cannot mark the key {kid} retired"))?;
    }
    Ok(())
}
