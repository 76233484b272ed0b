//! EIP-712 (v4, as `eth_signTypedData_v4` and ethers' `TypedDataEncoder`): type encoding,
//! struct hashing and the signing digest, with limits so hostile input stays cheap.
//!
//! Strictness: every field of a struct must be present in the value and no other key may be
//! (a key the signature does not cover would mislead the signer); numbers must fit their type;
//! `bytesN` values must be exactly N bytes. Recursive types are allowed (type encoding is
//! cycle-safe; values are bounded by depth).
//!
//! Work is bounded per document, not per value: each struct type's `typeHash` is computed once
//! per document, and a document may feed at most [`MAX_HASHED_BYTES`] to Keccak over at most
//! [`MAX_VALUES`] encoded values. [`TypedData::check_work`] measures both without hashing, so
//! the gateway refuses an oversized document before it reaches a signer thread.

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;

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
/// Most bytes one document feeds to Keccak (struct and array encodings, strings, bytes,
/// type encodings).
pub const MAX_HASHED_BYTES: u64 = 4 << 20;
/// Most values (atomic, struct or array) one document encodes.
pub const MAX_VALUES: u64 = 100_000;

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
        let (domain_separator, message_hash) = self.encode(&Encoder::new(&types, true))?;
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

    /// Validates the document's types and shape and measures its work without hashing: the
    /// bytes it would feed to Keccak, or `Limit` past [`MAX_HASHED_BYTES`] or [`MAX_VALUES`].
    /// Atomic values are checked only by [`TypedData::hash`].
    pub fn check_work(&self) -> Result<u64, TypedDataError> {
        let types = self.checked_types()?;
        let encoder = Encoder::new(&types, false);
        self.encode(&encoder)?;
        Ok(encoder.hashed.get())
    }

    /// `hashStruct` of the domain and of the message (none when the primary type is the
    /// domain).
    fn encode(
        &self,
        encoder: &Encoder<'_>,
    ) -> Result<([u8; 32], Option<[u8; 32]>), TypedDataError> {
        let domain = encoder.hash_struct(DOMAIN, &self.domain, &Path::Root("domain"), 0)?;
        if self.primary_type == DOMAIN {
            return Ok((domain, None));
        }
        if !encoder.types.contains_key(self.primary_type.as_str()) {
            return Err(TypedDataError::Type(self.primary_type.clone()));
        }
        let message =
            encoder.hash_struct(&self.primary_type, &self.message, &Path::Root("message"), 0)?;
        Ok((domain, Some(message)))
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

/// Where a value is, built only when an error names it.
enum Path<'a> {
    Root(&'static str),
    Field(&'a Path<'a>, &'a str),
    Index(&'a Path<'a>, usize),
}

impl fmt::Display for Path<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Path::Root(name) => f.write_str(name),
            Path::Field(parent, name) => write!(f, "{parent}.{name}"),
            Path::Index(parent, i) => write!(f, "{parent}[{i}]"),
        }
    }
}

/// Encodes one document: type hashes memoized, work counted against the limits; hashes only
/// when `hashing` (a dry run measures the same work without Keccak).
struct Encoder<'a> {
    types: &'a Types<'a>,
    hashing: bool,
    type_hashes: RefCell<HashMap<&'a str, [u8; 32]>>,
    hashed: Cell<u64>,
    values: Cell<u64>,
}

impl<'a> Encoder<'a> {
    fn new(types: &'a Types<'a>, hashing: bool) -> Self {
        Self {
            types,
            hashing,
            type_hashes: RefCell::new(HashMap::new()),
            hashed: Cell::new(0),
            values: Cell::new(0),
        }
    }

    /// Keccak of `data`, counted against [`MAX_HASHED_BYTES`].
    fn keccak(&self, data: &[u8]) -> Result<[u8; 32], TypedDataError> {
        let total = self
            .hashed
            .get()
            .saturating_add(u64::try_from(data.len()).unwrap_or(u64::MAX));
        if total > MAX_HASHED_BYTES {
            return Err(TypedDataError::Limit("more than 4 MiB to hash"));
        }
        self.hashed.set(total);
        Ok(if self.hashing {
            keccak256(data)
        } else {
            [0; 32]
        })
    }

    /// Counts one encoded value against [`MAX_VALUES`].
    fn count_value(&self) -> Result<(), TypedDataError> {
        let n = self.values.get() + 1;
        if n > MAX_VALUES {
            return Err(TypedDataError::Limit("more than 100000 values"));
        }
        self.values.set(n);
        Ok(())
    }

    /// `typeHash` of a struct type, computed once per document.
    fn type_hash(&self, name: &'a str) -> Result<[u8; 32], TypedDataError> {
        if let Some(h) = self.type_hashes.borrow().get(name) {
            return Ok(*h);
        }
        let h = self.keccak(self.encode_type(name).as_bytes())?;
        self.type_hashes.borrow_mut().insert(name, h);
        Ok(h)
    }

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
        path: &Path<'_>,
        depth: usize,
    ) -> Result<[u8; 32], TypedDataError> {
        // Depth is checked by `encode_value`, the only recursive caller.
        let (name, fields) = self
            .types
            .get_key_value(name)
            .ok_or_else(|| TypedDataError::Type(name.to_string()))?;
        let object = value
            .as_object()
            .ok_or_else(|| bad(path, "expected an object"))?;
        // Field names are unique and every one must be present: then a longer object has a
        // key the signature would not cover (found only on that error path).
        if object.len() > fields.len() {
            let extra = object
                .keys()
                .find(|k| !fields.iter().any(|(n, _)| n == k))
                .map_or("?", String::as_str);
            return Err(bad(&Path::Field(path, extra), "not a field of the type"));
        }
        let mut data = Vec::with_capacity(32 * (fields.len() + 1));
        data.extend_from_slice(&self.type_hash(name)?);
        for (field, kind) in fields {
            let at = Path::Field(path, field);
            let v = object.get(*field).ok_or_else(|| bad(&at, "missing"))?;
            data.extend_from_slice(&self.encode_value(kind, v, &at, depth + 1)?);
        }
        self.keccak(&data)
    }

    fn encode_value(
        &self,
        kind: &str,
        value: &Value,
        path: &Path<'_>,
        depth: usize,
    ) -> Result<[u8; 32], TypedDataError> {
        if depth > MAX_DEPTH {
            return Err(TypedDataError::Limit("nesting deeper than 16"));
        }
        self.count_value()?;
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
                    &Path::Index(path, i),
                    depth + 1,
                )?);
            }
            return self.keccak(&data);
        }
        if self.types.contains_key(kind) {
            return self.hash_struct(kind, value, path, depth);
        }
        match kind {
            "string" => {
                let s = value
                    .as_str()
                    .ok_or_else(|| bad(path, "expected a string"))?;
                self.keccak(s.as_bytes())
            }
            "bytes" if !self.hashing => {
                let hex = value.as_str().map_or(0, str::len);
                self.keccak(&vec![0; hex / 2])
            }
            "bytes" => self.keccak(&hex_value(value, path)?),
            // The dry run measures work; the values themselves are checked when hashing.
            _ if !self.hashing => Ok([0; 32]),
            _ => encode_atomic(kind, value, path),
        }
    }
}

fn bad(path: &dyn fmt::Display, reason: &str) -> TypedDataError {
    TypedDataError::Value {
        field: path.to_string(),
        reason: reason.to_string(),
    }
}

/// The fixed-size types (strings and dynamic bytes are hashed by the encoder).
fn encode_atomic(
    kind: &str,
    value: &Value,
    path: &dyn fmt::Display,
) -> Result<[u8; 32], TypedDataError> {
    let mut out = [0u8; 32];
    match kind {
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

fn hex_value(value: &Value, path: &dyn fmt::Display) -> Result<Vec<u8>, TypedDataError> {
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
        let enc = |kind: &str, v: Value| encode_atomic(kind, &v, &"x");
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
