//! EIP-712 (v4, as `eth_signTypedData_v4` and ethers' `TypedDataEncoder`): type encoding,
//! struct hashing and the signing digest, with limits so hostile input stays cheap.
//!
//! Strictness: every field of a struct must be present in the value and no other key may be
//! (a key the signature does not cover would mislead the signer); numbers must fit their type;
//! `bytesN` values must be exactly N bytes. Recursive types are allowed (type encoding is
//! cycle-safe; values are bounded by depth).

use std::collections::{BTreeMap, BTreeSet};

use serde::Deserialize;
use serde_json::Value;

use super::labels;
use super::uint;
use super::wallet::keccak256;

/// Deepest nesting of structs and arrays in a value.
pub const MAX_DEPTH: usize = 16;
/// Most struct types in `types`.
pub const MAX_TYPES: usize = 64;
/// Most fields in one struct type.
pub const MAX_FIELDS: usize = 64;
/// Longest array.
pub const MAX_ARRAY_LEN: usize = 1024;

/// One field of a struct type.
#[derive(Debug, Clone, Deserialize)]
pub struct Field {
    /// Field name.
    pub name: String,
    /// Solidity type (`uint256`, `Person[]`, …).
    #[serde(rename = "type")]
    pub kind: String,
}

/// The `eth_signTypedData_v4` document.
#[derive(Debug, Clone, Deserialize)]
pub struct TypedData {
    /// Struct types by name (`EIP712Domain` optional: derived from `domain` if absent).
    pub types: BTreeMap<String, Vec<Field>>,
    /// The type of `message`.
    #[serde(rename = "primaryType")]
    pub primary_type: String,
    /// The domain values.
    pub domain: Value,
    /// The message values.
    #[serde(default)]
    pub message: Value,
}

/// Why typed data is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TypedDataError {
    /// The document is not valid JSON of the expected shape.
    #[error("typed data is not a valid EIP-712 document: {0}")]
    Shape(String),
    /// A limit was exceeded.
    #[error("typed data exceeds a limit: {0}")]
    Limit(&'static str),
    /// A type name or field type is not valid or not defined.
    #[error("invalid type {0:?}")]
    Type(String),
    /// A value does not match its type.
    #[error("invalid value for {field}: {reason}")]
    Value {
        /// Dotted path of the value.
        field: String,
        /// What is wrong.
        reason: String,
    },
}

/// The hashes of a typed-data document.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TypedDataHash {
    /// `hashStruct(EIP712Domain, domain)`.
    pub domain_separator: [u8; 32],
    /// `hashStruct(primaryType, message)`; `None` when the primary type is `EIP712Domain`.
    pub message_hash: Option<[u8; 32]>,
    /// `keccak256(0x1901 || domain_separator || message_hash)`: what is signed.
    pub digest: [u8; 32],
}

/// Struct types by name: (field name, field type) in order.
type Types<'a> = BTreeMap<&'a str, Vec<(&'a str, &'a str)>>;

const DOMAIN: &str = "EIP712Domain";
/// Domain fields in canonical order, with their types (used when `EIP712Domain` is absent).
const DOMAIN_FIELDS: [(&str, &str); 5] = [
    ("name", "string"),
    ("version", "string"),
    ("chainId", "uint256"),
    ("verifyingContract", "address"),
    ("salt", "bytes32"),
];

impl TypedData {
    /// Parses the JSON document.
    pub fn from_json(value: Value) -> Result<Self, TypedDataError> {
        serde_json::from_value(value).map_err(|e| TypedDataError::Shape(e.to_string()))
    }

    /// Validates and hashes the document.
    pub fn hash(&self) -> Result<TypedDataHash, TypedDataError> {
        let types = self.checked_types()?;
        let encoder = Encoder { types: &types };
        let domain_separator = encoder.hash_struct(DOMAIN, &self.domain, "domain", 0)?;
        let message_hash = if self.primary_type == DOMAIN {
            None
        } else {
            if !types.contains_key(self.primary_type.as_str()) {
                return Err(TypedDataError::Type(self.primary_type.clone()));
            }
            Some(encoder.hash_struct(&self.primary_type, &self.message, "message", 0)?)
        };
        let mut preimage = Vec::with_capacity(66);
        preimage.extend_from_slice(&labels::EIP712_PREFIX);
        preimage.extend_from_slice(&domain_separator);
        if let Some(h) = &message_hash {
            preimage.extend_from_slice(h);
        }
        Ok(TypedDataHash {
            domain_separator,
            message_hash,
            digest: keccak256(&preimage),
        })
    }

    /// The struct types, with `EIP712Domain` derived from the domain when absent; checks limits,
    /// names and that every referenced type exists.
    fn checked_types(&self) -> Result<Types<'_>, TypedDataError> {
        if self.types.len() > MAX_TYPES {
            return Err(TypedDataError::Limit("more than 64 types"));
        }
        let mut types: Types<'_> = BTreeMap::new();
        for (name, fields) in &self.types {
            if !is_identifier(name) {
                return Err(TypedDataError::Type(name.clone()));
            }
            if fields.len() > MAX_FIELDS {
                return Err(TypedDataError::Limit("more than 64 fields in a type"));
            }
            let mut seen = BTreeSet::new();
            for f in fields {
                if !is_identifier(&f.name) || !seen.insert(f.name.as_str()) {
                    return Err(TypedDataError::Type(format!("{name}.{}", f.name)));
                }
            }
            types.insert(
                name,
                fields
                    .iter()
                    .map(|f| (f.name.as_str(), f.kind.as_str()))
                    .collect(),
            );
        }
        if !types.contains_key(DOMAIN) {
            let domain = self
                .domain
                .as_object()
                .ok_or_else(|| TypedDataError::Value {
                    field: "domain".into(),
                    reason: "expected an object".into(),
                })?;
            let fields = DOMAIN_FIELDS
                .iter()
                .filter(|(name, _)| domain.contains_key(*name))
                .map(|(n, t)| (*n, *t))
                .collect();
            types.insert(DOMAIN, fields);
        }
        for fields in types.values() {
            for (_, kind) in fields {
                let base = base_type(kind)?;
                if !is_atomic_or_dynamic(base) && !types.contains_key(base) {
                    return Err(TypedDataError::Type((*kind).to_string()));
                }
            }
        }
        Ok(types)
    }
}

/// Strips array suffixes: `Person[2][]` → `Person`. Checks suffix syntax and array sizes.
fn base_type(kind: &str) -> Result<&str, TypedDataError> {
    let mut rest = kind;
    while let Some(open) = rest.rfind('[') {
        let inside = rest[open..]
            .strip_prefix('[')
            .and_then(|s| s.strip_suffix(']'))
            .ok_or_else(|| TypedDataError::Type(kind.to_string()))?;
        if !inside.is_empty()
            && inside
                .parse::<usize>()
                .map_or(true, |n| n == 0 || n > MAX_ARRAY_LEN)
        {
            return Err(TypedDataError::Type(kind.to_string()));
        }
        rest = &rest[..open];
    }
    if rest.is_empty() || rest.contains(']') {
        return Err(TypedDataError::Type(kind.to_string()));
    }
    Ok(rest)
}

fn is_identifier(s: &str) -> bool {
    let mut chars = s.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == '$')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '$')
}

fn int_bits(kind: &str, prefix: &str) -> Option<u32> {
    let bits = kind.strip_prefix(prefix)?;
    let n: u32 = if bits.is_empty() {
        256
    } else {
        bits.parse().ok()?
    };
    (n.is_multiple_of(8) && (8..=256).contains(&n) && (bits.is_empty() || !bits.starts_with('0')))
        .then_some(n)
}

fn bytes_len(kind: &str) -> Option<usize> {
    let n: usize = kind.strip_prefix("bytes")?.parse().ok()?;
    (1..=32).contains(&n).then_some(n)
}

fn is_atomic_or_dynamic(kind: &str) -> bool {
    matches!(kind, "address" | "bool" | "string" | "bytes")
        || int_bits(kind, "uint").is_some()
        || int_bits(kind, "int").is_some()
        || bytes_len(kind).is_some()
}

struct Encoder<'a> {
    types: &'a Types<'a>,
}

impl Encoder<'_> {
    /// `encodeType`: the primary type then its dependencies in name order (cycle-safe).
    fn encode_type(&self, primary: &str) -> String {
        let mut deps = BTreeSet::new();
        let mut stack = vec![primary];
        while let Some(name) = stack.pop() {
            for (_, kind) in self.types.get(name).into_iter().flatten() {
                let base = base_type(kind).unwrap_or(kind);
                if self.types.contains_key(base) && base != primary && deps.insert(base) {
                    stack.push(base);
                }
            }
        }
        std::iter::once(primary)
            .chain(deps)
            .map(|name| {
                let fields: Vec<String> = self.types[name]
                    .iter()
                    .map(|(n, k)| format!("{k} {n}"))
                    .collect();
                format!("{name}({})", fields.join(","))
            })
            .collect()
    }

    fn hash_struct(
        &self,
        name: &str,
        value: &Value,
        path: &str,
        depth: usize,
    ) -> Result<[u8; 32], TypedDataError> {
        // Depth is checked by `encode_value`, the only recursive caller.
        let fields = &self.types[name];
        let object = value
            .as_object()
            .ok_or_else(|| bad(path, "expected an object"))?;
        if let Some(extra) = object.keys().find(|k| !fields.iter().any(|(n, _)| n == k)) {
            return Err(bad(&format!("{path}.{extra}"), "not a field of the type"));
        }
        let mut data = Vec::with_capacity(32 * (fields.len() + 1));
        data.extend_from_slice(&keccak256(self.encode_type(name).as_bytes()));
        for (field, kind) in fields {
            let at = format!("{path}.{field}");
            let v = object.get(*field).ok_or_else(|| bad(&at, "missing"))?;
            data.extend_from_slice(&self.encode_value(kind, v, &at, depth + 1)?);
        }
        Ok(keccak256(&data))
    }

    fn encode_value(
        &self,
        kind: &str,
        value: &Value,
        path: &str,
        depth: usize,
    ) -> Result<[u8; 32], TypedDataError> {
        if depth > MAX_DEPTH {
            return Err(TypedDataError::Limit("nesting deeper than 16"));
        }
        if let Some(open) = kind.rfind('[') {
            let (inner, suffix) = kind.split_at(open);
            let items = value
                .as_array()
                .ok_or_else(|| bad(path, "expected an array"))?;
            if items.len() > MAX_ARRAY_LEN {
                return Err(TypedDataError::Limit("array longer than 1024"));
            }
            let fixed = &suffix[1..suffix.len() - 1];
            if !fixed.is_empty() && fixed.parse::<usize>().ok() != Some(items.len()) {
                return Err(bad(
                    path,
                    &format!("expected {fixed} items, got {}", items.len()),
                ));
            }
            let mut data = Vec::with_capacity(32 * items.len());
            for (i, item) in items.iter().enumerate() {
                data.extend_from_slice(&self.encode_value(
                    inner,
                    item,
                    &format!("{path}[{i}]"),
                    depth + 1,
                )?);
            }
            return Ok(keccak256(&data));
        }
        if self.types.contains_key(kind) {
            return self.hash_struct(kind, value, path, depth);
        }
        encode_atomic(kind, value, path)
    }
}

fn bad(path: &str, reason: &str) -> TypedDataError {
    TypedDataError::Value {
        field: path.to_string(),
        reason: reason.to_string(),
    }
}

fn encode_atomic(kind: &str, value: &Value, path: &str) -> Result<[u8; 32], TypedDataError> {
    let mut out = [0u8; 32];
    match kind {
        "string" => {
            let s = value
                .as_str()
                .ok_or_else(|| bad(path, "expected a string"))?;
            return Ok(keccak256(s.as_bytes()));
        }
        "bytes" => return Ok(keccak256(&hex_value(value, path)?)),
        "bool" => {
            out[31] = u8::from(
                value
                    .as_bool()
                    .ok_or_else(|| bad(path, "expected true or false"))?,
            );
        }
        "address" => {
            let bytes = hex_value(value, path)?;
            if bytes.len() != 20 {
                return Err(bad(path, "an address is 20 bytes"));
            }
            out[12..].copy_from_slice(&bytes);
        }
        _ => {
            if let Some(n) = bytes_len(kind) {
                let bytes = hex_value(value, path)?;
                if bytes.len() != n {
                    return Err(bad(path, &format!("expected exactly {n} bytes")));
                }
                out[..n].copy_from_slice(&bytes);
            } else if let Some(bits) = int_bits(kind, "uint") {
                let (negative, magnitude) = uint::parse(value).map_err(|r| bad(path, r))?;
                if negative && magnitude != [0; 32] {
                    return Err(bad(path, "negative value for an unsigned type"));
                }
                if uint::bit_length(&magnitude) > bits {
                    return Err(bad(path, &format!("does not fit in {bits} bits")));
                }
                out = magnitude;
            } else if let Some(bits) = int_bits(kind, "int") {
                let (negative, magnitude) = uint::parse(value).map_err(|r| bad(path, r))?;
                let used = uint::bit_length(&magnitude);
                // Range: -2^(bits-1) ..= 2^(bits-1) - 1.
                let fits = if negative {
                    used < bits || (used == bits && is_power_of_two(&magnitude))
                } else {
                    used < bits
                };
                if !fits {
                    return Err(bad(path, &format!("does not fit in int{bits}")));
                }
                out = if negative {
                    twos_complement(&magnitude)
                } else {
                    magnitude
                };
            } else {
                return Err(TypedDataError::Type(kind.to_string()));
            }
        }
    }
    Ok(out)
}

fn hex_value(value: &Value, path: &str) -> Result<Vec<u8>, TypedDataError> {
    let s = value
        .as_str()
        .ok_or_else(|| bad(path, "expected 0x-prefixed hex"))?;
    let bare = s
        .strip_prefix("0x")
        .ok_or_else(|| bad(path, "expected 0x-prefixed hex"))?;
    hex::decode(bare).map_err(|_| bad(path, "invalid hex"))
}

fn is_power_of_two(n: &[u8; 32]) -> bool {
    n.iter().map(|b| b.count_ones()).sum::<u32>() == 1
}

fn twos_complement(n: &[u8; 32]) -> [u8; 32] {
    let mut out = [0u8; 32];
    let mut carry = 1u16;
    for i in (0..32).rev() {
        let v = u16::from(!n[i]) + carry;
        out[i] = (v & 0xff) as u8;
        carry = v >> 8;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn mail() -> Value {
        json!({
            "types": {
                "EIP712Domain": [
                    {"name": "name", "type": "string"},
                    {"name": "version", "type": "string"},
                    {"name": "chainId", "type": "uint256"},
                    {"name": "verifyingContract", "type": "address"}
                ],
                "Person": [{"name": "name", "type": "string"}, {"name": "wallet", "type": "address"}],
                "Mail": [
                    {"name": "from", "type": "Person"},
                    {"name": "to", "type": "Person"},
                    {"name": "contents", "type": "string"}
                ]
            },
            "primaryType": "Mail",
            "domain": {
                "name": "Ether Mail", "version": "1", "chainId": 1,
                "verifyingContract": "0xCcCCccccCCCCcCCCCCCcCcCccCcCCCcCcccccccC"
            },
            "message": {
                "from": {"name": "Cow", "wallet": "0xCD2a3d9F938E13CD947Ec05AbC7FE734Df8DD826"},
                "to": {"name": "Bob", "wallet": "0xbBbBBBBbbBBBbbbBbbBbbbbBBbBbbbbBbBbbBBbB"},
                "contents": "Hello, Bob!"
            }
        })
    }

    #[test]
    fn the_eip_mail_example() {
        let td = TypedData::from_json(mail()).expect("parses");
        let h = td.hash().expect("hashes");
        // Values published in EIP-712.
        assert_eq!(
            hex::encode(h.domain_separator),
            "f2cee375fa42b42143804025fc449deafd50cc031ca257e0b194a650a912090f"
        );
        assert_eq!(
            hex::encode(h.message_hash.expect("message")),
            "c52c0ee5d84264471806290a3f2c4cecfc5490626bf912d01f240d7a274b371e"
        );
        assert_eq!(
            hex::encode(h.digest),
            "be609aee343fb3c4b28e1df9e632fca64fcfaede20f02e86244efddf30957bd2"
        );
    }

    #[test]
    fn recursive_types_encode_without_looping() {
        let doc = json!({
            "types": {"Node": [{"name": "value", "type": "uint8"}, {"name": "children", "type": "Node[]"}]},
            "primaryType": "Node",
            "domain": {"name": "t"},
            "message": {"value": 1, "children": [{"value": 2, "children": []}]}
        });
        TypedData::from_json(doc)
            .expect("parses")
            .hash()
            .expect("hashes");
    }

    #[test]
    fn limits_and_bad_values_are_refused() {
        let mut doc = mail();
        doc["message"]["extra"] = json!(1);
        assert!(matches!(
            TypedData::from_json(doc).expect("parses").hash(),
            Err(TypedDataError::Value { .. })
        ));
        let mut doc = mail();
        doc["message"]["to"]["wallet"] = json!("0x1234");
        assert!(matches!(
            TypedData::from_json(doc).expect("parses").hash(),
            Err(TypedDataError::Value { .. })
        ));
        let mut doc = mail();
        doc["types"]["Mail"][2]["type"] = json!("Unknown");
        assert!(matches!(
            TypedData::from_json(doc).expect("parses").hash(),
            Err(TypedDataError::Type(_))
        ));
        // Deep nesting.
        let mut value = json!({"value": 1, "children": []});
        for _ in 0..20 {
            value = json!({"value": 1, "children": [value]});
        }
        let doc = json!({
            "types": {"Node": [{"name": "value", "type": "uint8"}, {"name": "children", "type": "Node[]"}]},
            "primaryType": "Node", "domain": {}, "message": value
        });
        assert_eq!(
            TypedData::from_json(doc).expect("parses").hash(),
            Err(TypedDataError::Limit("nesting deeper than 16"))
        );
        assert!(TypedData::from_json(json!({"types": 1})).is_err());
    }

    #[test]
    fn integers_respect_their_width() {
        let enc = |kind: &str, v: Value| encode_atomic(kind, &v, "x");
        assert!(enc("uint8", json!(255)).is_ok());
        assert!(enc("uint8", json!(256)).is_err());
        assert!(enc("uint8", json!(-1)).is_err());
        let mut minus_128 = [0xffu8; 32];
        minus_128[31] = 0x80;
        assert_eq!(enc("int8", json!(-128)).expect("fits"), minus_128);
        assert!(enc("int8", json!(-129)).is_err());
        assert!(enc("int8", json!(127)).is_ok());
        assert!(enc("int8", json!(128)).is_err());
        assert_eq!(enc("int256", json!("-1")).expect("fits"), [0xff; 32]);
        assert!(enc("uint256", json!("0x".to_string() + &"f".repeat(64))).is_ok());
        assert!(enc("uint256", json!("0x1".to_string() + &"0".repeat(64))).is_err());
        assert!(enc("uint256", json!(1.5)).is_err());
        assert!(enc("bytes4", json!("0x01020304")).is_ok());
        assert!(enc("bytes4", json!("0x010203")).is_err());
    }
}
