//! The credential vault of each master (docs/credentials.md): sealed values by version, the
//! current head of each service, and the master's wrapped data key. Values are stored only as
//! the signer sealed them; nothing here can decrypt them.
//!
//! | table | key | value |
//! |---|---|---|
//! | `vault_keys` | master omni | `u32 BE KEK version ‖ wrapped data key` |
//! | `credentials` | (master, service, version) | `nonce ‖ ciphertext ‖ tag` |
//! | `credential_heads` | (master, service) | JSON [`CredentialHead`] |
//!
//! Versions count up per service; the newest [`KEPT_VERSIONS`] are kept. A delete removes every
//! sealed version and marks the head deleted, so numbering never repeats.

use agentkeys_runtime::store::{ReadableTable, TableDefinition, WriteTransaction};
use serde::{Deserialize, Serialize};

use super::audit::{self, AuditEntry, Origin, op};
use crate::crypto::vault::WrappedKey;
use agentkeys_runtime::store::{Mutation, StoreError};
use agentkeys_runtime::{Omni, Timestamp};

pub(crate) const VAULT_KEYS: TableDefinition<&[u8; 32], &[u8]> = TableDefinition::new("vault_keys");
pub(crate) const CREDENTIALS: TableDefinition<(&[u8; 32], &str, u64), &[u8]> =
    TableDefinition::new("credentials");
pub(crate) const CREDENTIAL_HEADS: TableDefinition<(&[u8; 32], &str), &[u8]> =
    TableDefinition::new("credential_heads");

/// Most services in one vault.
pub const MAX_SERVICES: usize = 1024;
/// Versions kept per service (older ones are dropped when a new one is written).
pub const KEPT_VERSIONS: u64 = 32;

/// Where the injecting proxy may use a credential (stored with it, never chosen by an agent).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Inject {
    /// The `https` URL requests are forwarded to (paths are appended).
    pub base_url: String,
    /// The header that carries the credential.
    pub header: String,
    /// The header's value, `{}` standing for the credential (e.g. `Bearer {}`).
    pub template: String,
}

/// The current state of one service.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CredentialHead {
    /// The newest version (counting survives deletes).
    pub version: u64,
    /// The value's size in bytes.
    pub size: u64,
    /// A note for people.
    pub description: Option<String>,
    /// Where the proxy may use it.
    pub inject: Option<Inject>,
    /// When the newest version was written (ms).
    pub updated_at: u64,
    /// When it was deleted (ms), if it was.
    pub deleted_at: Option<u64>,
}

/// A listed credential.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listed {
    /// The service.
    pub service: String,
    /// Its head.
    pub head: CredentialHead,
}

/// A sealed version with what reading it needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stored {
    /// The version.
    pub version: u64,
    /// `nonce ‖ ciphertext ‖ tag`.
    pub ciphertext: Vec<u8>,
    /// The master's wrapped data key.
    pub key: WrappedKey,
    /// The head (description, inject).
    pub head: CredentialHead,
}

fn decode_head(bytes: &[u8]) -> Result<CredentialHead, StoreError> {
    serde_json::from_slice(bytes).map_err(|e| StoreError::Corrupt(format!("credential head: {e}")))
}

/// The master's wrapped data key.
pub fn vault_key(
    table: &impl ReadableTable<&'static [u8; 32], &'static [u8]>,
    master: &Omni,
) -> Result<Option<WrappedKey>, StoreError> {
    let Some(bytes) = table.get(master.as_bytes())? else {
        return Ok(None);
    };
    WrappedKey::decode(bytes.value())
        .map(Some)
        .ok_or_else(|| StoreError::Corrupt("vault key".into()))
}

/// A live credential's head.
pub fn head(
    table: &impl ReadableTable<(&'static [u8; 32], &'static str), &'static [u8]>,
    master: &Omni,
    service: &str,
) -> Result<Option<CredentialHead>, StoreError> {
    table
        .get((master.as_bytes(), service))?
        .map(|v| decode_head(v.value()))
        .transpose()
}

/// Every service of a vault (deleted ones included; the caller filters), in name order.
pub fn list(
    table: &impl ReadableTable<(&'static [u8; 32], &'static str), &'static [u8]>,
    master: &Omni,
) -> Result<Vec<Listed>, StoreError> {
    let m = master.as_bytes();
    let mut out = Vec::new();
    for entry in table.range((m, "")..)? {
        let (key, value) = entry?;
        let (owner, service) = key.value();
        if owner != m {
            break;
        }
        out.push(Listed {
            service: service.to_owned(),
            head: decode_head(value.value())?,
        });
    }
    Ok(out)
}

/// A sealed version (`None`: the newest) of a live credential.
pub fn stored(
    txn: &agentkeys_runtime::store::ReadTransaction,
    master: &Omni,
    service: &str,
    version: Option<u64>,
) -> Result<Option<Stored>, StoreError> {
    let heads = txn.open_table(CREDENTIAL_HEADS)?;
    let Some(head) = head(&heads, master, service)?.filter(|h| h.deleted_at.is_none()) else {
        return Ok(None);
    };
    let version = version.unwrap_or(head.version);
    let values = txn.open_table(CREDENTIALS)?;
    let Some(ciphertext) = values
        .get((master.as_bytes(), service, version))?
        .map(|v| v.value().to_vec())
    else {
        return Ok(None);
    };
    let keys = txn.open_table(VAULT_KEYS)?;
    let key =
        vault_key(&keys, master)?.ok_or_else(|| StoreError::Corrupt("no vault key".into()))?;
    Ok(Some(Stored {
        version,
        ciphertext,
        key,
        head,
    }))
}

/// Why a vault write was refused (nothing was written).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VaultWriteError {
    /// Another write took this version first (seal again for the next one).
    #[error("another write took version {0} first")]
    VersionTaken(u64),
    /// The master has a data key now (seal again with it).
    #[error("the vault has a data key now")]
    KeyExists,
    /// The vault holds [`MAX_SERVICES`] services.
    #[error("a vault holds at most {MAX_SERVICES} services")]
    TooMany,
    /// No such live credential.
    #[error("no such credential")]
    NotFound,
}

/// Stores a sealed version (the next one) of a service.
#[derive(Debug, Clone)]
pub struct PutCredential {
    /// The master.
    pub master: Omni,
    /// The service.
    pub service: String,
    /// The version it was sealed for: the head's + 1.
    pub version: u64,
    /// `nonce ‖ ciphertext ‖ tag`.
    pub ciphertext: Vec<u8>,
    /// A data key made for this write (the master had none).
    pub new_key: Option<WrappedKey>,
    /// The value's size.
    pub size: u64,
    /// A note for people.
    pub description: Option<String>,
    /// Where the proxy may use it.
    pub inject: Option<Inject>,
    /// Who asked.
    pub origin: Origin,
    /// Now.
    pub at: Timestamp,
}

/// The next version to seal for `service` and the data key to seal it with, read now (a write
/// re-checks both).
pub fn next_version(
    txn: &agentkeys_runtime::store::ReadTransaction,
    master: &Omni,
    service: &str,
) -> Result<(u64, Option<WrappedKey>), StoreError> {
    let heads = txn.open_table(CREDENTIAL_HEADS)?;
    let version = head(&heads, master, service)?.map_or(0, |h| h.version) + 1;
    let keys = txn.open_table(VAULT_KEYS)?;
    Ok((version, vault_key(&keys, master)?))
}

fn detail(service: &str, version: u64) -> [u8; 32] {
    audit::detail_hash(format!("{service}:{version}").as_bytes())
}

impl Mutation for PutCredential {
    type Plan = PutCredential;
    type Output = u64;
    type Rejection = VaultWriteError;

    fn check(
        self,
        view: &WriteTransaction,
    ) -> Result<Result<PutCredential, VaultWriteError>, StoreError> {
        let heads = view.open_table(CREDENTIAL_HEADS)?;
        let current = head(&heads, &self.master, &self.service)?;
        let expected = current.as_ref().map_or(0, |h| h.version) + 1;
        if self.version != expected {
            return Ok(Err(VaultWriteError::VersionTaken(self.version)));
        }
        let keys = view.open_table(VAULT_KEYS)?;
        let has_key = vault_key(&keys, &self.master)?.is_some();
        if has_key == self.new_key.is_some() {
            // A fresh key where one exists, or none where none exists: the sealing raced.
            return Ok(Err(VaultWriteError::KeyExists));
        }
        if current.is_none() && list(&heads, &self.master)?.len() >= MAX_SERVICES {
            return Ok(Err(VaultWriteError::TooMany));
        }
        Ok(Ok(self))
    }

    fn apply(op: PutCredential, txn: &WriteTransaction) -> Result<u64, StoreError> {
        let m = op.master.as_bytes();
        if let Some(key) = &op.new_key {
            txn.open_table(VAULT_KEYS)?
                .insert(m, key.encode().as_slice())?;
        }
        let mut values = txn.open_table(CREDENTIALS)?;
        values.insert(
            (m, op.service.as_str(), op.version),
            op.ciphertext.as_slice(),
        )?;
        if op.version > KEPT_VERSIONS {
            values.remove((m, op.service.as_str(), op.version - KEPT_VERSIONS))?;
        }
        drop(values);
        let head = CredentialHead {
            version: op.version,
            size: op.size,
            description: op.description.clone(),
            inject: op.inject.clone(),
            updated_at: op.at.as_millis(),
            deleted_at: None,
        };
        let encoded = serde_json::to_vec(&head).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        txn.open_table(CREDENTIAL_HEADS)?
            .insert((m, op.service.as_str()), encoded.as_slice())?;
        audit::append(
            txn,
            &AuditEntry::done(
                op.master,
                op.origin,
                op::CRED_SET,
                op.master,
                detail(&op.service, op.version),
                op.at,
            ),
        )?;
        Ok(op.version)
    }
}

/// Deletes a credential: every sealed version goes, the head is marked deleted.
#[derive(Debug, Clone)]
pub struct DeleteCredential {
    /// The master.
    pub master: Omni,
    /// The service.
    pub service: String,
    /// Who asked.
    pub origin: Origin,
    /// Now.
    pub at: Timestamp,
}

impl Mutation for DeleteCredential {
    type Plan = (DeleteCredential, CredentialHead);
    type Output = u64;
    type Rejection = VaultWriteError;

    fn check(
        self,
        view: &WriteTransaction,
    ) -> Result<Result<Self::Plan, VaultWriteError>, StoreError> {
        let heads = view.open_table(CREDENTIAL_HEADS)?;
        match head(&heads, &self.master, &self.service)? {
            Some(h) if h.deleted_at.is_none() => Ok(Ok((self, h))),
            _ => Ok(Err(VaultWriteError::NotFound)),
        }
    }

    fn apply(plan: Self::Plan, txn: &WriteTransaction) -> Result<u64, StoreError> {
        let (op, mut head) = plan;
        let m = op.master.as_bytes();
        let mut values = txn.open_table(CREDENTIALS)?;
        for version in head.version.saturating_sub(KEPT_VERSIONS - 1).max(1)..=head.version {
            values.remove((m, op.service.as_str(), version))?;
        }
        head.deleted_at = Some(op.at.as_millis());
        head.size = 0;
        head.inject = None;
        head.description = None;
        let encoded = serde_json::to_vec(&head).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        txn.open_table(CREDENTIAL_HEADS)?
            .insert((m, op.service.as_str()), encoded.as_slice())?;
        audit::append(
            txn,
            &AuditEntry::done(
                op.master,
                op.origin,
                op::CRED_DELETE,
                op.master,
                detail(&op.service, head.version),
                op.at,
            ),
        )?;
        Ok(head.version)
    }
}

/// The audit detail of reading `service` at `version`.
pub fn read_detail(service: &str, version: u64) -> [u8; 32] {
    detail(service, version)
}
