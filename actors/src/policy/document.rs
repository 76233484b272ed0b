//! The policy document (docs/policies.md): parsed strictly (an unknown field is named in the
//! refusal), validated, and compiled into [`Policy`], the form the evaluator reads.
//!
//! Amounts are decimal strings in base units. Internally they are `u128`: an amount at or above
//! 2^128 counts as `u128::MAX`, which exceeds every budget (a budget's `max` must be below
//! 2^128).

use serde::{Deserialize, Deserializer, Serialize};

/// Largest accepted document, bytes.
pub const MAX_POLICY_BYTES: usize = 16 * 1024;
/// Most list entries (chains, recipients, calls, domains, budgets, thresholds) in one document.
pub const MAX_RULES: usize = 64;
/// Longest budget, rate or approval window: 31 days.
pub const MAX_WINDOW_SECONDS: u64 = 31 * 24 * 3600;
/// An approval's lifetime when the document does not say.
pub const DEFAULT_APPROVAL_TTL: u64 = 900;
/// Permit2's canonical address (the same on every chain).
pub const PERMIT2: [u8; 20] = hex_literal(b"000000000022d473030f116ddee9f6b43ac78ba3");

const fn hex_literal(text: &[u8; 40]) -> [u8; 20] {
    const fn nibble(c: u8) -> u8 {
        match c {
            b'0'..=b'9' => c - b'0',
            b'a'..=b'f' => c - b'a' + 10,
            _ => panic!("not lowercase hex"),
        }
    }
    let mut out = [0u8; 20];
    let mut i = 0;
    while i < 20 {
        out[i] = nibble(text[2 * i]) << 4 | nibble(text[2 * i + 1]);
        i += 1;
    }
    out
}

/// Why a document is refused (`invalid_policy`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct PolicyError(pub String);

/// `"any"` or a list.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum AnyOr<T> {
    /// Everything.
    Any(AnyWord),
    /// Only these.
    List(Vec<T>),
}

/// The word `any`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AnyWord {
    /// `"any"`.
    Any,
}

impl<'de, T: serde::de::DeserializeOwned> Deserialize<'de> for AnyOr<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        // Through `Value`, so a bad list entry keeps serde's own message (the field it names).
        let value = serde_json::Value::deserialize(d)?;
        match value {
            serde_json::Value::String(s) if s == "any" => Ok(AnyOr::Any(AnyWord::Any)),
            serde_json::Value::Array(_) => serde_json::from_value(value)
                .map(AnyOr::List)
                .map_err(serde::de::Error::custom),
            _ => Err(serde::de::Error::custom("expected \"any\" or a list")),
        }
    }
}

/// The document as sent (and as `GET` shows it).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyDocument {
    /// Chains any operation with a chain must be on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chains: Option<Vec<u64>>,
    /// Transactions (absent: none allowed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tx: Option<TxRules>,
    /// EIP-712 typed data (absent: none allowed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub typed_data: Option<TypedDataRules>,
    /// EIP-191 messages (absent: none allowed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub messages: Option<MessageRules>,
    /// sr25519 signatures.
    #[serde(default)]
    pub sr25519: bool,
    /// Rolling spend limits over the owner's subtree.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub budgets: Vec<BudgetRule>,
    /// Signatures per rolling window over the owner's subtree.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate: Option<RateRule>,
    /// Spends that need a person's approval.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approval: Option<ApprovalRules>,
}

/// `tx`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TxRules {
    /// Recipients (absent: none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to: Option<AnyOr<String>>,
    /// Contract calls allowed (absent: no calldata).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub calls: Option<AnyOr<CallRule>>,
    /// Largest native `value`, base units.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_value: Option<String>,
    /// Allow unlimited token approvals (default `false`).
    #[serde(default)]
    pub unlimited_approvals: bool,
}

/// One allowed call.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CallRule {
    /// The contract.
    pub to: String,
    /// The 4-byte function selector, `0x` + 8 hex.
    pub selector: String,
    /// For an ERC-20 `transfer`, `transferFrom`, `approve` or `increaseAllowance`: the only
    /// recipients (or spenders) allowed (absent: any).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recipients: Option<Vec<String>>,
}

/// `typed_data`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TypedDataRules {
    /// Domains allowed.
    pub domains: AnyOr<DomainRule>,
}

/// One allowed EIP-712 domain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DomainRule {
    /// `domain.chainId`.
    pub chain_id: u64,
    /// `domain.verifyingContract`.
    pub verifying_contract: String,
}

/// `messages`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MessageRules {
    /// EIP-191 messages.
    #[serde(default)]
    pub text: bool,
    /// Also exactly 32 raw bytes (a hash: it could be anything, e.g. a transaction digest).
    #[serde(default)]
    pub raw_hash: bool,
}

/// One budget.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BudgetRule {
    /// `native` or a token contract address.
    pub asset: String,
    /// The chain.
    pub chain: u64,
    /// The rolling window.
    pub window_seconds: u64,
    /// Most spent within the window, base units.
    pub max: String,
}

/// `rate`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateRule {
    /// The rolling window.
    pub window_seconds: u64,
    /// Most signatures within it.
    pub max: u64,
}

/// `approval`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApprovalRules {
    /// A spend above any of these needs approval.
    pub above: Vec<Threshold>,
    /// How long a request waits for a decision.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl_seconds: Option<u64>,
}

/// One approval threshold.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Threshold {
    /// `native` or a token contract address.
    pub asset: String,
    /// The chain.
    pub chain: u64,
    /// Spends strictly above this need approval.
    pub amount: String,
}

/// What is spent: the chain's native coin or a token contract.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Asset {
    /// Ether (or the chain's native coin).
    Native,
    /// An ERC-20 token contract.
    Token([u8; 20]),
}

impl Asset {
    /// The 21-byte store key: `0` + zeros, or `1` + the address.
    pub fn key(&self) -> [u8; 21] {
        let mut out = [0u8; 21];
        if let Asset::Token(addr) = self {
            out[0] = 1;
            out[1..].copy_from_slice(addr);
        }
        out
    }

    /// From [`Asset::key`].
    pub fn from_key(key: &[u8; 21]) -> Option<Self> {
        match key[0] {
            0 => Some(Asset::Native),
            1 => Some(Asset::Token(key[1..].try_into().ok()?)),
            _ => None,
        }
    }

    /// `native`, or the EIP-55 address.
    pub fn name(&self) -> String {
        match self {
            Asset::Native => "native".into(),
            Asset::Token(a) => crate::crypto::wallet::Address(*a).to_checksum(),
        }
    }
}

/// A budget, compiled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Budget {
    /// What it limits.
    pub asset: Asset,
    /// On which chain.
    pub chain: u64,
    /// The rolling window.
    pub window_seconds: u64,
    /// The limit.
    pub max: u128,
}

/// The compiled policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    /// The document it came from.
    pub document: PolicyDocument,
    pub(crate) chains: Option<Vec<u64>>,
    pub(crate) tx: Option<CompiledTx>,
    pub(crate) domains: Option<Option<DomainList>>,
    pub(crate) messages: Option<MessageRules>,
    pub(crate) sr25519: bool,
    /// The budgets.
    pub budgets: Vec<Budget>,
    /// The rate limit.
    pub rate: Option<RateRule>,
    pub(crate) thresholds: Vec<(Asset, u64, u128)>,
    /// The approval lifetime, seconds.
    pub approval_ttl: u64,
}

/// Allowed EIP-712 domains: (chain id, verifying contract).
pub(crate) type DomainList = Vec<(u64, [u8; 20])>;
/// One allowed call, compiled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Call {
    pub(crate) to: [u8; 20],
    pub(crate) selector: [u8; 4],
    /// `None`: any recipient.
    pub(crate) recipients: Option<Vec<[u8; 20]>>,
}

/// Allowed calls.
pub(crate) type CallList = Vec<Call>;

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct CompiledTx {
    /// `None`: any.
    pub(crate) to: Option<Vec<[u8; 20]>>,
    /// `None`: no calldata; `Some(None)`: any.
    pub(crate) calls: Option<Option<CallList>>,
    pub(crate) max_value: Option<u128>,
    pub(crate) unlimited_approvals: bool,
}

fn list_len<T>(list: &Option<AnyOr<T>>) -> usize {
    match list {
        Some(AnyOr::List(v)) => v.len(),
        _ => 0,
    }
}

/// Parses `0x` + 40 hex (any case).
pub fn parse_address(text: &str) -> Option<[u8; 20]> {
    let bare = text.strip_prefix("0x")?;
    let bytes = hex::decode(bare).ok()?;
    bytes.try_into().ok()
}

/// Parses a decimal amount string (no sign, no exponent) into a `u128`, saturating at or above
/// 2^128.
pub fn parse_amount(text: &str) -> Option<u128> {
    if text.is_empty() || text.len() > 80 || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let mut n: u128 = 0;
    for b in text.bytes() {
        n = n.saturating_mul(10).saturating_add(u128::from(b - b'0'));
    }
    Some(n)
}

fn bad(field: impl std::fmt::Display, why: &str) -> PolicyError {
    PolicyError(format!("{field}: {why}"))
}

fn asset(text: &str, field: &str) -> Result<Asset, PolicyError> {
    if text == "native" {
        return Ok(Asset::Native);
    }
    parse_address(text)
        .map(Asset::Token)
        .ok_or_else(|| bad(field, "expected \"native\" or a 0x token address"))
}

fn amount(text: &str, field: &str) -> Result<u128, PolicyError> {
    parse_amount(text).ok_or_else(|| bad(field, "expected a decimal string in base units"))
}

fn window(seconds: u64, field: &str) -> Result<u64, PolicyError> {
    if (1..=MAX_WINDOW_SECONDS).contains(&seconds) {
        Ok(seconds)
    } else {
        Err(bad(
            field,
            "must be between 1 and 2678400 seconds (31 days)",
        ))
    }
}

fn chain(id: u64, field: &str) -> Result<u64, PolicyError> {
    if id == 0 {
        Err(bad(field, "chain ids start at 1"))
    } else {
        Ok(id)
    }
}

impl Policy {
    /// Parses and compiles a JSON document.
    pub fn from_json(bytes: &[u8]) -> Result<Self, PolicyError> {
        if bytes.len() > MAX_POLICY_BYTES {
            return Err(PolicyError(format!(
                "the document has {} bytes (at most {MAX_POLICY_BYTES})",
                bytes.len()
            )));
        }
        let document: PolicyDocument =
            serde_json::from_slice(bytes).map_err(|e| PolicyError(e.to_string()))?;
        Self::compile(document)
    }

    /// Validates and compiles a parsed document.
    pub fn compile(document: PolicyDocument) -> Result<Self, PolicyError> {
        let d = &document;
        let rules = d.chains.as_ref().map_or(0, Vec::len)
            + d.tx.as_ref().map_or(0, |t| {
                let recipients = match &t.calls {
                    Some(AnyOr::List(v)) => v
                        .iter()
                        .map(|c| c.recipients.as_ref().map_or(0, Vec::len))
                        .sum(),
                    _ => 0,
                };
                list_len(&t.to) + list_len(&t.calls) + recipients
            })
            + d.typed_data.as_ref().map_or(0, |t| match &t.domains {
                AnyOr::List(v) => v.len(),
                AnyOr::Any(_) => 0,
            })
            + d.budgets.len()
            + d.approval.as_ref().map_or(0, |a| a.above.len());
        if rules > MAX_RULES {
            return Err(PolicyError(format!(
                "the document has {rules} rules (at most {MAX_RULES})"
            )));
        }
        let chains = match &d.chains {
            Some(list) => Some(
                list.iter()
                    .enumerate()
                    .map(|(i, c)| chain(*c, &format!("chains[{i}]")))
                    .collect::<Result<Vec<_>, _>>()?,
            ),
            None => None,
        };
        let tx = match &d.tx {
            None => None,
            Some(t) => Some(CompiledTx {
                to: match &t.to {
                    None => Some(Vec::new()),
                    Some(AnyOr::Any(_)) => None,
                    Some(AnyOr::List(v)) => Some(
                        v.iter()
                            .enumerate()
                            .map(|(i, a)| {
                                parse_address(a)
                                    .ok_or_else(|| bad(format!("tx.to[{i}]"), "not an address"))
                            })
                            .collect::<Result<_, _>>()?,
                    ),
                },
                calls: match &t.calls {
                    None => None,
                    Some(AnyOr::Any(_)) => Some(None),
                    Some(AnyOr::List(v)) => Some(Some(
                        v.iter()
                            .enumerate()
                            .map(|(i, c)| {
                                let to = parse_address(&c.to).ok_or_else(|| {
                                    bad(format!("tx.calls[{i}].to"), "not an address")
                                })?;
                                let selector = c
                                    .selector
                                    .strip_prefix("0x")
                                    .and_then(|h| hex::decode(h).ok())
                                    .and_then(|b| <[u8; 4]>::try_from(b).ok())
                                    .ok_or_else(|| {
                                        bad(
                                            format!("tx.calls[{i}].selector"),
                                            "expected 0x + 8 hex characters",
                                        )
                                    })?;
                                let recipients = match &c.recipients {
                                    None => None,
                                    Some(list) => Some(
                                        list.iter()
                                            .enumerate()
                                            .map(|(j, a)| {
                                                parse_address(a).ok_or_else(|| {
                                                    bad(
                                                        format!("tx.calls[{i}].recipients[{j}]"),
                                                        "not an address",
                                                    )
                                                })
                                            })
                                            .collect::<Result<_, _>>()?,
                                    ),
                                };
                                Ok(Call {
                                    to,
                                    selector,
                                    recipients,
                                })
                            })
                            .collect::<Result<_, PolicyError>>()?,
                    )),
                },
                max_value: t
                    .max_value
                    .as_deref()
                    .map(|v| amount(v, "tx.max_value"))
                    .transpose()?,
                unlimited_approvals: t.unlimited_approvals,
            }),
        };
        let domains = match &d.typed_data {
            None => None,
            Some(TypedDataRules {
                domains: AnyOr::Any(_),
            }) => Some(None),
            Some(TypedDataRules {
                domains: AnyOr::List(v),
            }) => Some(Some(
                v.iter()
                    .enumerate()
                    .map(|(i, dom)| {
                        let field = format!("typed_data.domains[{i}]");
                        Ok((
                            chain(dom.chain_id, &format!("{field}.chain_id"))?,
                            parse_address(&dom.verifying_contract).ok_or_else(|| {
                                bad(format!("{field}.verifying_contract"), "not an address")
                            })?,
                        ))
                    })
                    .collect::<Result<_, PolicyError>>()?,
            )),
        };
        let mut budgets = Vec::with_capacity(d.budgets.len());
        for (i, b) in d.budgets.iter().enumerate() {
            let field = format!("budgets[{i}]");
            let budget = Budget {
                asset: asset(&b.asset, &format!("{field}.asset"))?,
                chain: chain(b.chain, &format!("{field}.chain"))?,
                window_seconds: window(b.window_seconds, &format!("{field}.window_seconds"))?,
                max: amount(&b.max, &format!("{field}.max"))?,
            };
            if budget.max == u128::MAX {
                return Err(bad(format!("{field}.max"), "must be below 2^128 - 1"));
            }
            if budgets.iter().any(|o: &Budget| {
                (o.asset, o.chain, o.window_seconds)
                    == (budget.asset, budget.chain, budget.window_seconds)
            }) {
                return Err(bad(field, "the same asset, chain and window twice"));
            }
            budgets.push(budget);
        }
        if let Some(rate) = &d.rate {
            window(rate.window_seconds, "rate.window_seconds")?;
            if rate.max == 0 {
                return Err(bad("rate.max", "must be at least 1"));
            }
        }
        let mut thresholds = Vec::new();
        let mut approval_ttl = DEFAULT_APPROVAL_TTL;
        if let Some(a) = &d.approval {
            for (i, t) in a.above.iter().enumerate() {
                let field = format!("approval.above[{i}]");
                thresholds.push((
                    asset(&t.asset, &format!("{field}.asset"))?,
                    chain(t.chain, &format!("{field}.chain"))?,
                    amount(&t.amount, &format!("{field}.amount"))?,
                ));
            }
            if let Some(ttl) = a.ttl_seconds {
                if !(60..=86_400).contains(&ttl) {
                    return Err(bad(
                        "approval.ttl_seconds",
                        "must be between 60 and 86400 seconds",
                    ));
                }
                approval_ttl = ttl;
            }
        }
        Ok(Policy {
            chains,
            tx,
            domains,
            messages: d.messages,
            sr25519: d.sr25519,
            budgets,
            rate: d.rate,
            thresholds,
            approval_ttl,
            document,
        })
    }

    /// The document as canonical JSON (what the store keeps).
    pub fn to_json(&self) -> String {
        serde_json::to_string(&self.document).unwrap_or_else(|_| "{}".into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_issue_example_compiles() {
        let doc = br#"{"chains": [1, 8453],
          "tx": {"to": ["0x1111111111111111111111111111111111111111"],
                 "calls": [{"to": "0xA0b86991c6218b36c1d19D4a2e9Eb0cE3606eB48", "selector": "0xa9059cbb"}],
                 "max_value": "100000000000000000", "unlimited_approvals": false},
          "typed_data": {"domains": "any"},
          "messages": {"text": true, "raw_hash": false},
          "sr25519": false,
          "budgets": [{"asset": "native", "chain": 1, "window_seconds": 86400, "max": "1000000000000000000"},
                      {"asset": "0xA0b86991c6218b36c1d19D4a2e9Eb0cE3606eB48", "chain": 1, "window_seconds": 86400, "max": "500000000"}],
          "rate": {"window_seconds": 60, "max": 120},
          "approval": {"above": [{"asset": "native", "chain": 1, "amount": "500000000000000000"}], "ttl_seconds": 900}}"#;
        let p = Policy::from_json(doc).expect("valid");
        assert_eq!(p.budgets.len(), 2);
        assert_eq!(p.budgets[0].max, 1_000_000_000_000_000_000);
        assert_eq!(p.domains, Some(None));
        let again = Policy::from_json(p.to_json().as_bytes()).expect("round trip");
        assert_eq!(again, p);
    }

    #[test]
    fn refusals_name_the_field() {
        for (doc, needle) in [
            (r#"{"chainz": [1]}"#, "chainz"),
            (r#"{"tx": {"too": "any"}}"#, "too"),
            (r#"{"tx": {"to": ["0x12"]}}"#, "tx.to[0]"),
            (r#"{"tx": {"to": "all"}}"#, "any"),
            (
                r#"{"budgets": [{"asset": "native", "chain": 1, "window_seconds": 0, "max": "1"}]}"#,
                "budgets[0].window_seconds",
            ),
            (
                r#"{"budgets": [{"asset": "native", "chain": 1, "window_seconds": 5, "max": "1e18"}]}"#,
                "budgets[0].max",
            ),
            (
                r#"{"tx": {"calls": [{"to": "0x1111111111111111111111111111111111111111", "selector": "0xa9"}]}}"#,
                "tx.calls[0].selector",
            ),
            (r#"{"rate": {"window_seconds": 60, "max": 0}}"#, "rate.max"),
            (
                r#"{"typed_data": {"domains": [{"chain_id": 1, "verifying_contract": "0x1", "salt": 1}]}}"#,
                "salt",
            ),
        ] {
            let e = Policy::from_json(doc.as_bytes()).expect_err(doc);
            assert!(e.0.contains(needle), "{doc}: {e}");
        }
        let chains: Vec<String> = (1..=65).map(|i| i.to_string()).collect();
        let many = format!("{{\"chains\": [{}]}}", chains.join(","));
        assert!(Policy::from_json(many.as_bytes()).is_err());
        let big = format!("{{\"chains\": [1]{}}}", " ".repeat(MAX_POLICY_BYTES));
        assert!(Policy::from_json(big.as_bytes()).is_err());
    }

    #[test]
    fn amounts_saturate_and_permit2_is_canonical() {
        assert_eq!(parse_amount("0"), Some(0));
        assert_eq!(parse_amount(&"9".repeat(60)), Some(u128::MAX));
        assert_eq!(parse_amount("-1"), None);
        assert_eq!(parse_amount("0x10"), None);
        assert_eq!(
            hex::encode(PERMIT2),
            "000000000022d473030f116ddee9f6b43ac78ba3"
        );
    }
}
