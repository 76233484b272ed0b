//! Device bindings: (actor, binding id) → the device key's thumbprint (jkt), label, times and a
//! tombstone. A session token names its binding (`bid`) and is valid only while that binding
//! is live; binding the same key again after a tombstone gets a new id, so old tokens stay dead.
//!
//! Encoding of a binding, version 1 (integers big-endian):
//!
//! ```text
//! u8  version = 1
//! u16 jkt length, jkt (RFC 7638 thumbprint, base64url)
//! u16 label length, label
//! u64 created_at (ms)
//! u64 last_used (ms; refreshed by session refresh, not by every request)
//! u8  tombstoned 0 | 1 (then u64 tombstoned_at)
//! ```

use agentkeys_runtime::store::{ReadableTable, TableDefinition, WriteTransaction};

use agentkeys_runtime::Omni;
use agentkeys_runtime::Timestamp;
use agentkeys_runtime::store::encoding::{Reader, put_bytes};
use agentkeys_runtime::store::{DecodeError, StoreError};

pub(crate) const DEVICES: TableDefinition<(&[u8; 32], u64), &[u8]> =
    TableDefinition::new("devices");
/// Live bindings by key: (jkt, omni) → binding id.
pub(crate) const DEVICE_KEYS: TableDefinition<(&str, &[u8; 32]), u64> =
    TableDefinition::new("device_keys");
pub(crate) const COUNTERS: TableDefinition<&str, u64> = TableDefinition::new("counters");

const BINDING_VERSION: u8 = 1;
/// Longest device label.
pub const MAX_DEVICE_LABEL: usize = 64;

/// One device binding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceBinding {
    /// The actor.
    pub omni: Omni,
    /// Binding id, unique in the store, never reused.
    pub bid: u64,
    /// RFC 7638 thumbprint of the device key.
    pub jkt: String,
    /// A name for people (e.g. `login`, `laptop`).
    pub label: String,
    /// When it was bound.
    pub created_at: Timestamp,
    /// Last session refresh (or creation).
    pub last_used: Timestamp,
    /// When it was deleted (its tokens died then).
    pub tombstoned_at: Option<Timestamp>,
}

impl DeviceBinding {
    /// Whether tokens naming this binding may be accepted.
    pub fn is_live(&self) -> bool {
        self.tombstoned_at.is_none()
    }

    fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(80 + self.jkt.len() + self.label.len());
        out.push(BINDING_VERSION);
        put_bytes(&mut out, self.jkt.as_bytes());
        put_bytes(&mut out, self.label.as_bytes());
        out.extend_from_slice(&self.created_at.as_millis().to_be_bytes());
        out.extend_from_slice(&self.last_used.as_millis().to_be_bytes());
        match self.tombstoned_at {
            None => out.push(0),
            Some(at) => {
                out.push(1);
                out.extend_from_slice(&at.as_millis().to_be_bytes());
            }
        }
        out
    }

    fn decode(omni: Omni, bid: u64, bytes: &[u8]) -> Result<Self, StoreError> {
        let mut r = Reader::new(bytes);
        let decoded = (|| {
            let version = r.u8()?;
            if version != BINDING_VERSION {
                return Err(DecodeError::Version(version));
            }
            let binding = DeviceBinding {
                omni,
                bid,
                jkt: r.string()?,
                label: r.string()?,
                created_at: Timestamp::from_millis(r.u64()?),
                last_used: Timestamp::from_millis(r.u64()?),
                tombstoned_at: match r.u8()? {
                    0 => None,
                    1 => Some(Timestamp::from_millis(r.u64()?)),
                    _ => return Err(DecodeError::Malformed(r.position() - 1)),
                },
            };
            r.finish().map(|()| binding)
        })();
        decoded.map_err(|e| StoreError::Corrupt(format!("device binding {bid}: {e}")))
    }
}

/// Reads one binding from any readable `devices` table.
pub(crate) fn read_binding(
    devices: &impl ReadableTable<(&'static [u8; 32], u64), &'static [u8]>,
    omni: &Omni,
    bid: u64,
) -> Result<Option<DeviceBinding>, StoreError> {
    let value = devices.get((omni.as_bytes(), bid))?;
    value
        .map(|v| DeviceBinding::decode(*omni, bid, v.value()))
        .transpose()
}

/// Every binding of `omni` (live and tombstoned), in binding order.
pub(crate) fn read_bindings(
    devices: &impl ReadableTable<(&'static [u8; 32], u64), &'static [u8]>,
    omni: &Omni,
) -> Result<Vec<DeviceBinding>, StoreError> {
    let o = omni.as_bytes();
    let mut out = Vec::new();
    for entry in devices.range((o, 0)..=(o, u64::MAX))? {
        let (key, value) = entry?;
        out.push(DeviceBinding::decode(*omni, key.value().1, value.value())?);
    }
    Ok(out)
}

/// The live binding of key `jkt` on `omni`, read inside a write transaction.
pub(crate) fn live_binding_of_key(
    txn: &WriteTransaction,
    omni: &Omni,
    jkt: &str,
) -> Result<Option<DeviceBinding>, StoreError> {
    let keys = txn.open_table(DEVICE_KEYS)?;
    let Some(bid) = keys.get((jkt, omni.as_bytes()))?.map(|v| v.value()) else {
        return Ok(None);
    };
    let devices = txn.open_table(DEVICES)?;
    read_binding(&devices, omni, bid)
}

/// Binds `jkt` to `omni` with a fresh binding id (the caller checked there is no live one).
pub(crate) fn insert_binding(
    txn: &WriteTransaction,
    omni: &Omni,
    jkt: &str,
    label: &str,
    at: Timestamp,
) -> Result<DeviceBinding, StoreError> {
    let bid = next_counter(txn, "binding_id")?;
    let binding = DeviceBinding {
        omni: *omni,
        bid,
        jkt: jkt.to_owned(),
        label: label.to_owned(),
        created_at: at,
        last_used: at,
        tombstoned_at: None,
    };
    txn.open_table(DEVICES)?
        .insert((omni.as_bytes(), bid), binding.encode().as_slice())?;
    txn.open_table(DEVICE_KEYS)?
        .insert((jkt, omni.as_bytes()), bid)?;
    Ok(binding)
}

/// Rewrites a binding (last use, tombstone); a tombstone also drops the key's live entry.
pub(crate) fn update_binding(
    txn: &WriteTransaction,
    binding: &DeviceBinding,
) -> Result<(), StoreError> {
    txn.open_table(DEVICES)?.insert(
        (binding.omni.as_bytes(), binding.bid),
        binding.encode().as_slice(),
    )?;
    if !binding.is_live() {
        txn.open_table(DEVICE_KEYS)?
            .remove((binding.jkt.as_str(), binding.omni.as_bytes()))?;
    }
    Ok(())
}

/// Tombstones every live binding of `omni`; returns how many.
pub(crate) fn tombstone_all(
    txn: &WriteTransaction,
    omni: &Omni,
    at: Timestamp,
) -> Result<usize, StoreError> {
    let live: Vec<DeviceBinding> = {
        let devices = txn.open_table(DEVICES)?;
        read_bindings(&devices, omni)?
            .into_iter()
            .filter(DeviceBinding::is_live)
            .collect()
    };
    for mut binding in live.iter().cloned() {
        binding.tombstoned_at = Some(at);
        update_binding(txn, &binding)?;
    }
    Ok(live.len())
}

/// Increments and returns a named counter (first value 1).
pub(crate) fn next_counter(txn: &WriteTransaction, name: &str) -> Result<u64, StoreError> {
    let mut counters = txn.open_table(COUNTERS)?;
    let next = counters.get(name)?.map_or(0, |v| v.value()) + 1;
    counters.insert(name, next)?;
    Ok(next)
}
