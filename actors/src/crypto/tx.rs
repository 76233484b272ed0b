//! EIP-1559 (type 2) and legacy (EIP-155) transactions: RLP encoding, signing, hashing.

use serde::Deserialize;
use serde_json::Value;

use super::eip191::sign_hash;
use super::uint;
use super::wallet::{Address, WalletKey, keccak256};

/// A transaction request as clients send it (`chain_id` required). Integers may be JSON
/// numbers, decimal strings or `0x` hex strings.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TxRequest {
    /// 2 (EIP-1559, the default) or 0 (legacy with EIP-155 replay protection).
    #[serde(rename = "type", default)]
    pub kind: Option<u8>,
    /// The chain the transaction is valid on.
    pub chain_id: u64,
    /// Sender nonce.
    pub nonce: Value,
    /// Recipient; absent or null creates a contract.
    #[serde(default)]
    pub to: Option<String>,
    /// Wei to transfer.
    #[serde(default)]
    pub value: Option<Value>,
    /// Call data (`0x` hex).
    #[serde(default)]
    pub data: Option<String>,
    /// Gas limit.
    pub gas_limit: Value,
    /// EIP-1559 fee cap.
    #[serde(default)]
    pub max_fee_per_gas: Option<Value>,
    /// EIP-1559 tip.
    #[serde(default)]
    pub max_priority_fee_per_gas: Option<Value>,
    /// Legacy gas price.
    #[serde(default)]
    pub gas_price: Option<Value>,
    /// EIP-2930 access list (type 2 only).
    #[serde(default)]
    pub access_list: Vec<AccessItem>,
}

/// One entry of an access list.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AccessItem {
    /// Contract address.
    pub address: String,
    /// 32-byte storage keys.
    #[serde(default)]
    pub storage_keys: Vec<String>,
}

/// Why a transaction request is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TxError {
    /// A field is missing, malformed or out of range.
    #[error("invalid transaction field {field}: {reason}")]
    Field {
        /// The field.
        field: &'static str,
        /// What is wrong.
        reason: String,
    },
}

/// A transaction's fields encoded, and the hash its signature covers.
struct Unsigned {
    /// Type 2 (else legacy).
    typed: bool,
    hash: [u8; 32],
    payload: Vec<u8>,
}

/// A signed transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedTx {
    /// The raw signed transaction (`eth_sendRawTransaction` input).
    pub raw: Vec<u8>,
    /// `keccak256(raw)`.
    pub hash: [u8; 32],
    /// The signer.
    pub from: Address,
}

fn field(field: &'static str, reason: impl Into<String>) -> TxError {
    TxError::Field {
        field,
        reason: reason.into(),
    }
}

fn int(value: &Value, name: &'static str) -> Result<Vec<u8>, TxError> {
    let n = uint::parse_unsigned(value).map_err(|r| field(name, r))?;
    Ok(uint::minimal(&n).to_vec())
}

fn opt_int(value: Option<&Value>, name: &'static str) -> Result<Vec<u8>, TxError> {
    value.map_or(Ok(Vec::new()), |v| int(v, name))
}

fn hex_bytes(text: &str, name: &'static str) -> Result<Vec<u8>, TxError> {
    let bare = text
        .strip_prefix("0x")
        .ok_or_else(|| field(name, "expected 0x-prefixed hex"))?;
    hex::decode(bare).map_err(|_| field(name, "invalid hex"))
}

/// RLP item.
enum Rlp {
    Bytes(Vec<u8>),
    List(Vec<Rlp>),
}

fn rlp_length(len: usize, short: u8, out: &mut Vec<u8>) {
    if len <= 55 {
        out.push(short + len as u8);
    } else {
        let be = (len as u64).to_be_bytes();
        let bytes = uint::minimal(&be);
        out.push(short + 55 + bytes.len() as u8);
        out.extend_from_slice(bytes);
    }
}

impl Rlp {
    fn encode(&self, out: &mut Vec<u8>) {
        match self {
            Rlp::Bytes(b) if b.len() == 1 && b[0] < 0x80 => out.push(b[0]),
            Rlp::Bytes(b) => {
                rlp_length(b.len(), 0x80, out);
                out.extend_from_slice(b);
            }
            Rlp::List(items) => {
                let mut payload = Vec::new();
                for item in items {
                    item.encode(&mut payload);
                }
                rlp_length(payload.len(), 0xc0, out);
                out.extend_from_slice(&payload);
            }
        }
    }

    #[cfg(test)]
    fn to_vec(&self) -> Vec<u8> {
        let mut out = Vec::new();
        self.encode(&mut out);
        out
    }
}

impl TxRequest {
    /// Parses the JSON request.
    pub fn from_json(value: Value) -> Result<Self, TxError> {
        serde_json::from_value(value).map_err(|e| field("tx", e.to_string()))
    }

    fn common(&self) -> Result<[Rlp; 4], TxError> {
        let to = match self.to.as_deref() {
            None | Some("") => Vec::new(),
            Some(t) => t
                .parse::<Address>()
                .map_err(|e| field("to", e.to_string()))?
                .0
                .to_vec(),
        };
        let data = self
            .data
            .as_deref()
            .map_or(Ok(Vec::new()), |d| hex_bytes(d, "data"))?;
        Ok([
            Rlp::Bytes(int(&self.gas_limit, "gas_limit")?),
            Rlp::Bytes(to),
            Rlp::Bytes(opt_int(self.value.as_ref(), "value")?),
            Rlp::Bytes(data),
        ])
    }

    /// Checks every field as signing would, without a key (a request held for approval is
    /// checked before it waits).
    pub fn check(&self) -> Result<(), TxError> {
        self.unsigned().map(drop)
    }

    /// The fields' RLP payload and the hash to sign.
    fn unsigned(&self) -> Result<Unsigned, TxError> {
        if self.chain_id == 0 {
            return Err(field("chain_id", "must be a positive chain id"));
        }
        let chain = uint::minimal(&self.chain_id.to_be_bytes()).to_vec();
        let nonce = Rlp::Bytes(int(&self.nonce, "nonce")?);
        let [gas_limit, to, value, data] = self.common()?;
        match self.kind.unwrap_or(2) {
            2 => {
                if self.gas_price.is_some() {
                    return Err(field(
                        "gas_price",
                        "not used by type 2; set max_fee_per_gas",
                    ));
                }
                let max_fee = self
                    .max_fee_per_gas
                    .as_ref()
                    .ok_or_else(|| field("max_fee_per_gas", "required for type 2"))?;
                let tip = self
                    .max_priority_fee_per_gas
                    .as_ref()
                    .ok_or_else(|| field("max_priority_fee_per_gas", "required for type 2"))?;
                let fields = [
                    Rlp::Bytes(chain),
                    nonce,
                    Rlp::Bytes(int(tip, "max_priority_fee_per_gas")?),
                    Rlp::Bytes(int(max_fee, "max_fee_per_gas")?),
                    gas_limit,
                    to,
                    value,
                    data,
                    self.access_list()?,
                ];
                let payload = payload_of(&fields);
                let mut preimage = vec![0x02];
                preimage.extend(list(&payload));
                Ok(Unsigned {
                    typed: true,
                    hash: keccak256(&preimage),
                    payload,
                })
            }
            0 => {
                if self.max_fee_per_gas.is_some()
                    || self.max_priority_fee_per_gas.is_some()
                    || !self.access_list.is_empty()
                {
                    return Err(field(
                        "type",
                        "legacy transactions take gas_price and no access list",
                    ));
                }
                let price = self
                    .gas_price
                    .as_ref()
                    .ok_or_else(|| field("gas_price", "required for type 0"))?;
                let fields = [
                    nonce,
                    Rlp::Bytes(int(price, "gas_price")?),
                    gas_limit,
                    to,
                    value,
                    data,
                ];
                let payload = payload_of(&fields);
                // EIP-155: the signed preimage carries (chain_id, 0, 0).
                let mut preimage = payload.clone();
                for item in [
                    Rlp::Bytes(chain),
                    Rlp::Bytes(Vec::new()),
                    Rlp::Bytes(Vec::new()),
                ] {
                    item.encode(&mut preimage);
                }
                Ok(Unsigned {
                    typed: false,
                    hash: keccak256(&list(&preimage)),
                    payload,
                })
            }
            other => Err(field(
                "type",
                format!("type {other} is not supported; use 2 or 0"),
            )),
        }
    }

    /// Signs with `key`.
    pub fn sign(&self, key: &WalletKey) -> Result<SignedTx, TxError> {
        let Unsigned {
            typed,
            hash,
            mut payload,
        } = self.unsigned()?;
        let sig = sign_hash(key, &hash);
        let raw = if typed {
            // y parity as an RLP integer: 0 is the empty string, not a 0x00 byte.
            Rlp::Bytes(uint::minimal(&[sig.0[64] - 27]).to_vec()).encode(&mut payload);
            push_rs(&sig.0, &mut payload);
            let mut raw = vec![0x02];
            raw.extend(list(&payload));
            raw
        } else {
            let v = u128::from(self.chain_id) * 2 + 35 + u128::from(sig.0[64] - 27);
            Rlp::Bytes(uint::minimal(&v.to_be_bytes()).to_vec()).encode(&mut payload);
            push_rs(&sig.0, &mut payload);
            list(&payload)
        };
        Ok(SignedTx {
            hash: keccak256(&raw),
            raw,
            from: key.address(),
        })
    }

    fn access_list(&self) -> Result<Rlp, TxError> {
        let mut access = Vec::with_capacity(self.access_list.len());
        for item in &self.access_list {
            let address = item
                .address
                .parse::<Address>()
                .map_err(|e| field("access_list", e.to_string()))?;
            let mut keys = Vec::with_capacity(item.storage_keys.len());
            for k in &item.storage_keys {
                let key = hex_bytes(k, "access_list")?;
                if key.len() != 32 {
                    return Err(field("access_list", "storage keys are 32 bytes"));
                }
                keys.push(Rlp::Bytes(key));
            }
            access.push(Rlp::List(vec![
                Rlp::Bytes(address.0.to_vec()),
                Rlp::List(keys),
            ]));
        }
        Ok(Rlp::List(access))
    }
}

fn payload_of(items: &[Rlp]) -> Vec<u8> {
    let mut payload = Vec::new();
    for item in items {
        item.encode(&mut payload);
    }
    payload
}

/// An RLP list around an encoded payload.
fn list(payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(payload.len() + 9);
    rlp_length(payload.len(), 0xc0, &mut out);
    out.extend_from_slice(payload);
    out
}

/// Appends r and s (as minimal integers) of a 65-byte signature.
fn push_rs(sig: &[u8; 65], payload: &mut Vec<u8>) {
    Rlp::Bytes(uint::minimal(&sig[..32]).to_vec()).encode(payload);
    Rlp::Bytes(uint::minimal(&sig[32..64]).to_vec()).encode(payload);
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn rlp_matches_the_spec_examples() {
        assert_eq!(
            Rlp::Bytes(b"dog".to_vec()).to_vec(),
            [0x83, b'd', b'o', b'g']
        );
        assert_eq!(Rlp::List(vec![]).to_vec(), [0xc0]);
        assert_eq!(Rlp::Bytes(vec![]).to_vec(), [0x80]);
        assert_eq!(Rlp::Bytes(vec![0x0f]).to_vec(), [0x0f]);
        assert_eq!(Rlp::Bytes(vec![0x04, 0x00]).to_vec(), [0x82, 0x04, 0x00]);
        let lorem = b"Lorem ipsum dolor sit amet, consectetur adipisicing elit".to_vec();
        let enc = Rlp::Bytes(lorem.clone()).to_vec();
        assert_eq!(&enc[..2], &[0xb8, 0x38]);
        assert_eq!(&enc[2..], lorem.as_slice());
        let cat_dog = Rlp::List(vec![
            Rlp::Bytes(b"cat".to_vec()),
            Rlp::Bytes(b"dog".to_vec()),
        ])
        .to_vec();
        assert_eq!(
            cat_dog,
            [0xc8, 0x83, b'c', b'a', b't', 0x83, b'd', b'o', b'g']
        );
    }

    /// Splits the top-level items of an RLP list payload (test helper, no nesting needed).
    fn items(mut payload: &[u8]) -> Vec<&[u8]> {
        let mut out = Vec::new();
        while let Some(&b) = payload.first() {
            let (start, len) = match b {
                0x00..=0x7f => (0, 1),
                0x80..=0xb7 => (1, usize::from(b - 0x80)),
                0xc0..=0xf7 => (1, usize::from(b - 0xc0)),
                _ => {
                    let n = usize::from(if b >= 0xf8 { b - 0xf7 } else { b - 0xb7 });
                    let len = payload[1..=n]
                        .iter()
                        .fold(0usize, |acc, x| acc * 256 + usize::from(*x));
                    (1 + n, len)
                }
            };
            out.push(&payload[start..start + len]);
            payload = &payload[start + len..];
        }
        out
    }

    #[test]
    fn signature_integers_are_canonical() {
        let k3 = crate::crypto::secret::MasterSecret::from_bytes([3; 32]);
        let key = crate::crypto::wallet::derive_wallet(
            &k3,
            &agentkeys_runtime::Omni::from_bytes([4; 32]),
        )
        .expect("key");
        let mut parities = std::collections::BTreeSet::new();
        for nonce in 0..16 {
            let req = json!({"chain_id": 1, "nonce": nonce, "gas_limit": 21000, "max_fee_per_gas": 1, "max_priority_fee_per_gas": 1});
            let signed = TxRequest::from_json(req)
                .expect("parses")
                .sign(&key)
                .expect("signs");
            let body = &signed.raw[1..];
            let payload_start = if body[0] <= 0xf7 {
                1
            } else {
                1 + usize::from(body[0] - 0xf7)
            };
            let fields = items(&body[payload_start..]);
            assert_eq!(fields.len(), 12);
            let parity = fields[9];
            assert!(
                parity.is_empty() || parity == [1],
                "y parity {parity:?} is a canonical integer"
            );
            parities.insert(parity.to_vec());
            assert_ne!(fields[10].first(), Some(&0), "r has no leading zero");
            assert_ne!(fields[11].first(), Some(&0), "s has no leading zero");
        }
        assert_eq!(parities.len(), 2, "both parities were exercised");
    }

    #[test]
    fn bad_requests_are_refused() {
        let base = json!({"chain_id": 1, "nonce": 0, "gas_limit": 21000, "max_fee_per_gas": 1, "max_priority_fee_per_gas": 1});
        assert!(
            TxRequest::from_json(json!({"nonce": 0, "gas_limit": 1})).is_err(),
            "chain_id required"
        );
        let mut extra = base.clone();
        extra["gasLimit"] = json!(1);
        assert!(
            TxRequest::from_json(extra).is_err(),
            "unknown fields refused"
        );
        let mut bad_to = base.clone();
        bad_to["to"] = json!("0x12");
        let k3 = crate::crypto::secret::MasterSecret::from_bytes([1; 32]);
        let key = crate::crypto::wallet::derive_wallet(
            &k3,
            &agentkeys_runtime::Omni::from_bytes([2; 32]),
        )
        .expect("key");
        assert!(
            TxRequest::from_json(bad_to)
                .expect("parses")
                .sign(&key)
                .is_err()
        );
        let mut legacy_with_tip = base.clone();
        legacy_with_tip["type"] = json!(0);
        legacy_with_tip["gas_price"] = json!(1);
        assert!(
            TxRequest::from_json(legacy_with_tip)
                .expect("parses")
                .sign(&key)
                .is_err()
        );
        assert!(
            TxRequest::from_json(base)
                .expect("parses")
                .sign(&key)
                .is_ok()
        );
    }
}
