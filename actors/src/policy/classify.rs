//! What a signing request would do, as the policy sees it: the kind of operation, its chain and
//! counterparty, and what it spends (docs/policies.md, "What counts as spend").

use serde_json::Value;

use super::document::{Asset, PERMIT2};
use crate::crypto::tx::TxRequest;
use crate::crypto::uint;

/// The kind of signing operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpKind {
    /// A transaction.
    Tx,
    /// EIP-712 typed data.
    TypedData,
    /// An EIP-191 message that is not exactly 32 bytes of `message_hex`.
    Text,
    /// Exactly 32 bytes of `message_hex` (a hash).
    RawHash,
    /// An sr25519 signature.
    Sr25519,
}

/// One amount spent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Spend {
    /// What.
    pub asset: Asset,
    /// Where.
    pub chain: u64,
    /// How much, base units (saturating).
    pub amount: u128,
}

/// A classified request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Operation {
    /// The kind.
    pub kind: OpKind,
    /// The chain (`None`: messages and sr25519; typed data without `chainId`).
    pub chain: Option<u64>,
    /// The transaction's `to`, or the typed data's `verifyingContract`.
    pub to: Option<[u8; 20]>,
    /// A transaction with calldata: its first four bytes (`Some([..])`), or `Some(None)` when
    /// shorter than a selector. `None`: no calldata.
    pub call: Option<Option<[u8; 4]>>,
    /// The native `value` of a transaction.
    pub value: u128,
    /// Spends, one per asset (native includes the maximum fee).
    pub spends: Vec<Spend>,
    /// An unlimited token approval (ERC-20 ≥ 2^255, Permit2 at its maximum, DAI `allowed`).
    pub unlimited: bool,
    /// The token call or permit was one the classifier knows (see the module documentation).
    pub recognized_token_op: bool,
    /// The recipient or spender, for the approval event.
    pub recipient: Option<[u8; 20]>,
}

/// ERC-20 `transfer(address,uint256)`.
pub const TRANSFER: [u8; 4] = [0xa9, 0x05, 0x9c, 0xbb];
/// ERC-20 `transferFrom(address,address,uint256)`.
pub const TRANSFER_FROM: [u8; 4] = [0x23, 0xb8, 0x72, 0xdd];
/// ERC-20 `approve(address,uint256)`.
pub const APPROVE: [u8; 4] = [0x09, 0x5e, 0xa7, 0xb3];
/// `increaseAllowance(address,uint256)` (OpenZeppelin).
pub const INCREASE_ALLOWANCE: [u8; 4] = [0x39, 0x50, 0x93, 0x51];

fn saturate(n: &[u8; 32]) -> u128 {
    if n[..16].iter().any(|b| *b != 0) {
        u128::MAX
    } else {
        u128::from_be_bytes(n[16..].try_into().unwrap_or([0xff; 16]))
    }
}

fn unsigned(value: Option<&Value>) -> ([u8; 32], u128) {
    let raw = value
        .and_then(|v| uint::parse_unsigned(v).ok())
        .unwrap_or([0; 32]);
    (raw, saturate(&raw))
}

/// At or above 2^255.
fn huge(raw: &[u8; 32]) -> bool {
    raw[0] & 0x80 != 0
}

fn address_value(value: Option<&Value>) -> Option<[u8; 20]> {
    value
        .and_then(Value::as_str)
        .and_then(super::document::parse_address)
}

fn push(spends: &mut Vec<Spend>, asset: Asset, chain: u64, amount: u128) {
    match spends
        .iter_mut()
        .find(|s| s.asset == asset && s.chain == chain)
    {
        Some(s) => s.amount = s.amount.saturating_add(amount),
        None => spends.push(Spend {
            asset,
            chain,
            amount,
        }),
    }
}

/// A transaction (already parsed by the signing route).
pub fn transaction(tx: &TxRequest) -> Operation {
    let chain = tx.chain_id;
    let to = tx.to.as_deref().and_then(super::document::parse_address);
    let data = tx
        .data
        .as_deref()
        .and_then(|d| d.strip_prefix("0x"))
        .and_then(|h| hex::decode(h).ok())
        .unwrap_or_default();
    let (_, value) = unsigned(tx.value.as_ref());
    let (_, gas) = unsigned(Some(&tx.gas_limit));
    let price = if tx.kind == Some(0) {
        tx.gas_price.as_ref()
    } else {
        tx.max_fee_per_gas.as_ref()
    };
    let (_, price) = unsigned(price);
    let mut spends = Vec::new();
    push(
        &mut spends,
        Asset::Native,
        chain,
        value.saturating_add(gas.saturating_mul(price)),
    );
    let mut op = Operation {
        kind: OpKind::Tx,
        chain: Some(chain),
        to,
        call: (!data.is_empty()).then(|| data.get(..4).and_then(|s| s.try_into().ok())),
        value,
        spends,
        unlimited: false,
        recognized_token_op: false,
        recipient: to,
    };
    if let (Some(token), Some(Some(selector))) = (to, op.call) {
        let word = |i: usize| -> Option<[u8; 32]> {
            data.get(4 + 32 * i..4 + 32 * (i + 1))?.try_into().ok()
        };
        let addr = |w: [u8; 32]| -> [u8; 20] { w[12..].try_into().unwrap_or([0; 20]) };
        let (party, amount) = match selector {
            TRANSFER | APPROVE | INCREASE_ALLOWANCE if data.len() == 4 + 64 => {
                (word(0).map(addr), word(1))
            }
            TRANSFER_FROM if data.len() == 4 + 96 => (word(1).map(addr), word(2)),
            _ => (None, None),
        };
        if let Some(raw) = amount {
            op.recognized_token_op = true;
            op.recipient = party;
            op.unlimited = huge(&raw);
            push(&mut op.spends, Asset::Token(token), chain, saturate(&raw));
        }
    }
    op
}

/// EIP-712 typed data (already validated by the signing route).
pub fn typed_data(document: &Value) -> Operation {
    let domain = document.get("domain");
    let chain = domain
        .and_then(|d| d.get("chainId"))
        .and_then(|c| uint::parse_unsigned(c).ok())
        .map(|raw| u64::try_from(saturate(&raw)).unwrap_or(u64::MAX));
    let contract = address_value(domain.and_then(|d| d.get("verifyingContract")));
    let primary = document
        .get("primaryType")
        .and_then(Value::as_str)
        .unwrap_or("");
    let message = document.get("message").cloned().unwrap_or(Value::Null);
    let mut op = Operation {
        chain,
        to: contract,
        ..Operation::bare(OpKind::TypedData)
    };
    let (Some(contract), Some(chain)) = (contract, chain) else {
        return op;
    };
    let spender = address_value(message.get("spender"));
    if contract == PERMIT2 {
        // Permit2: the tokens are in the message; its amounts are uint160.
        let max160 = {
            let mut m = [0u8; 32];
            m[12..].fill(0xff);
            m
        };
        let mut entries: Vec<(&Value, &str)> = Vec::new();
        let (list, amount_field, recognized) = match primary {
            "PermitSingle" => (message.get("details"), "amount", true),
            "PermitBatch" => (message.get("details"), "amount", true),
            "PermitTransferFrom"
            | "PermitBatchTransferFrom"
            | "PermitWitnessTransferFrom"
            | "PermitBatchWitnessTransferFrom" => (message.get("permitted"), "amount", true),
            _ => (None, "amount", false),
        };
        match list {
            Some(Value::Array(items)) => entries.extend(items.iter().map(|i| (i, amount_field))),
            Some(item @ Value::Object(_)) => entries.push((item, amount_field)),
            _ => {}
        }
        if !recognized || entries.is_empty() {
            return op;
        }
        for (item, field) in entries {
            let Some(token) = address_value(item.get("token")) else {
                return op;
            };
            let (raw, amount) = unsigned(item.get(field));
            op.unlimited |= raw >= max160;
            push(&mut op.spends, Asset::Token(token), chain, amount);
        }
        op.recognized_token_op = true;
        op.recipient = spender.or_else(|| address_value(message.get("to")));
        return op;
    }
    if primary == "Permit" {
        if let Some(allowed) = message.get("allowed").and_then(Value::as_bool) {
            // DAI-style: `allowed: true` is an unlimited approval, `false` revokes.
            op.unlimited = allowed;
            let amount = if allowed { u128::MAX } else { 0 };
            push(&mut op.spends, Asset::Token(contract), chain, amount);
            op.recognized_token_op = true;
        } else if message.get("value").is_some() {
            let (raw, amount) = unsigned(message.get("value"));
            op.unlimited = huge(&raw);
            push(&mut op.spends, Asset::Token(contract), chain, amount);
            op.recognized_token_op = true;
        }
        op.recipient = spender;
    }
    op
}

impl Operation {
    /// An operation of `kind` with no chain, counterparty or spend.
    fn bare(kind: OpKind) -> Self {
        Operation {
            kind,
            chain: None,
            to: None,
            call: None,
            value: 0,
            spends: Vec::new(),
            unlimited: false,
            recognized_token_op: false,
            recipient: None,
        }
    }
}

/// An EIP-191 message.
pub fn message(bytes: &[u8], from_hex: bool) -> Operation {
    Operation::bare(if from_hex && bytes.len() == 32 {
        OpKind::RawHash
    } else {
        OpKind::Text
    })
}

/// An sr25519 signature.
pub fn sr25519() -> Operation {
    Operation::bare(OpKind::Sr25519)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const TOKEN: &str = "0xA0b86991c6218b36c1d19D4a2e9Eb0cE3606eB48";

    fn tx(v: Value) -> Operation {
        transaction(&TxRequest::from_json(v).expect("tx"))
    }

    #[test]
    fn native_spend_is_value_plus_the_maximum_fee() {
        let op = tx(
            json!({"chain_id": 1, "nonce": 0, "to": TOKEN, "value": "1000",
            "gas_limit": 21000, "max_fee_per_gas": 10}),
        );
        assert_eq!(
            op.spends,
            vec![Spend {
                asset: Asset::Native,
                chain: 1,
                amount: 211_000
            }]
        );
        let legacy = tx(json!({"type": 0, "chain_id": 1, "nonce": 0, "to": TOKEN,
            "gas_limit": 2, "gas_price": 3}));
        assert_eq!(legacy.spends[0].amount, 6);
        assert_eq!(legacy.call, None);
    }

    #[test]
    fn erc20_calls_spend_the_token() {
        let to = format!("{}{}", "0".repeat(24), "11".repeat(20));
        let transfer = format!("0xa9059cbb{to}{:064x}", 5_000_000u64);
        let op =
            tx(json!({"chain_id": 1, "nonce": 0, "to": TOKEN, "data": transfer, "gas_limit": 1}));
        let token = Asset::Token(super::super::document::parse_address(TOKEN).expect("addr"));
        assert!(op.recognized_token_op);
        assert_eq!(
            op.spends[1],
            Spend {
                asset: token,
                chain: 1,
                amount: 5_000_000
            }
        );
        assert_eq!(op.recipient, Some([0x11; 20]));
        let unlimited = format!("0x095ea7b3{to}{}", "f".repeat(64));
        let op =
            tx(json!({"chain_id": 1, "nonce": 0, "to": TOKEN, "data": unlimited, "gas_limit": 1}));
        assert!(op.unlimited);
        assert_eq!(op.spends[1].amount, u128::MAX);
        let other = tx(
            json!({"chain_id": 1, "nonce": 0, "to": TOKEN, "data": "0xdeadbeef", "gas_limit": 1}),
        );
        assert!(!other.recognized_token_op);
        assert_eq!(other.call, Some(Some([0xde, 0xad, 0xbe, 0xef])));
    }

    #[test]
    fn permits_spend_their_tokens() {
        let eip2612 = json!({"primaryType": "Permit", "domain": {"chainId": 1, "verifyingContract": TOKEN},
            "message": {"owner": TOKEN, "spender": "0x1111111111111111111111111111111111111111", "value": "7", "nonce": 0, "deadline": 1}});
        let op = typed_data(&eip2612);
        assert!(op.recognized_token_op && !op.unlimited);
        assert_eq!(op.spends[0].amount, 7);
        let dai = json!({"primaryType": "Permit", "domain": {"chainId": "1", "verifyingContract": TOKEN},
            "message": {"holder": TOKEN, "spender": TOKEN, "nonce": 0, "expiry": 0, "allowed": true}});
        assert!(typed_data(&dai).unlimited);
        let permit2 = json!({"primaryType": "PermitBatch",
            "domain": {"chainId": 8453, "verifyingContract": "0x000000000022D473030F116dDEE9F6B43aC78BA3"},
            "message": {"details": [{"token": TOKEN, "amount": "3", "expiration": 0, "nonce": 0},
                                     {"token": "0x1111111111111111111111111111111111111111", "amount": "1461501637330902918203684832716283019655932542975", "expiration": 0, "nonce": 0}],
                        "spender": TOKEN, "sigDeadline": 0}});
        let op = typed_data(&permit2);
        assert!(op.recognized_token_op && op.unlimited);
        assert_eq!(op.spends.len(), 2);
        assert_eq!(op.chain, Some(8453));
        let unknown = json!({"primaryType": "Mail", "domain": {"chainId": 1, "verifyingContract": "0x000000000022D473030F116dDEE9F6B43aC78BA3"}, "message": {}});
        assert!(!typed_data(&unknown).recognized_token_op);
    }
}
