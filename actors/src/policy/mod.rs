//! Signing policies (docs/policies.md): the document, the classification of a request, and the
//! evaluation of a request against every policy on the caller's lineage.
//!
//! Evaluation is pure and runs in the request's task. The budgets and the rate it finds are
//! checked and counted by the store's writer in the signature's own transaction
//! ([`crate::ledger::policies`]), the one place where every spend along a lineage meets.

pub mod classify;
pub mod document;

use std::sync::Arc;

use agentkeys_runtime::{Omni, Timestamp};

pub use classify::{OpKind, Operation, Spend};
pub use document::{Asset, Budget, Policy, PolicyDocument, PolicyError};

/// A policy as stored on an actor: who set it (`None`: the host operator) and when.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredPolicy {
    /// The compiled document.
    pub policy: Policy,
    /// The actor that set it; `None` for the operator (a master's own policy).
    pub set_by: Option<Omni>,
    /// When.
    pub set_at: Timestamp,
}

/// The policies on one lineage, root first, as of one version of the tree's policies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Effective {
    /// The tree's master.
    pub master: Omni,
    /// The master's policy version these were read at (the writer checks it is still current).
    pub version: u64,
    /// Each actor of the lineage that has a policy, with it (shared, never copied).
    pub policies: Vec<(Omni, Arc<StoredPolicy>)>,
}

impl Effective {
    /// Whether no policy applies (the request behaves as before policies existed).
    pub fn is_empty(&self) -> bool {
        self.policies.is_empty()
    }
}

/// A budget a request is counted against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Charge {
    /// The actor whose policy holds the budget (its whole subtree counts against it).
    pub owner: Omni,
    /// The budget.
    pub budget: Budget,
    /// What this request adds.
    pub amount: u128,
}

/// A rate limit a request is counted against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateCharge {
    /// The actor whose policy holds it.
    pub owner: Omni,
    /// The rolling window.
    pub window_seconds: u64,
    /// Most signatures in it.
    pub max: u64,
}

/// The policy's answer before any counter is read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Every policy allows it (budgets and rate still to be counted).
    Allowed,
    /// A rule of `owner`'s policy refuses it.
    Denied {
        /// Whose policy.
        owner: Omni,
        /// The rule, e.g. `tx.to`.
        rule: String,
    },
    /// A threshold of `owner`'s policy needs a person (the highest such owner on the lineage).
    Approval {
        /// Whose policy; deciders are its strict ancestors.
        owner: Omni,
        /// How long the request waits.
        ttl_seconds: u64,
    },
}

/// What a request must pass.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Evaluation {
    /// Allowed, denied, or waiting for approval.
    pub verdict: Verdict,
    /// Every budget on the lineage, with this request's amount (possibly 0).
    pub charges: Vec<Charge>,
    /// Every rate limit on the lineage.
    pub rates: Vec<RateCharge>,
}

impl Evaluation {
    /// The longest window counted (a retried request with the same digest within it counts
    /// once).
    pub fn window_seconds(&self) -> u64 {
        self.charges
            .iter()
            .map(|c| c.budget.window_seconds)
            .chain(self.rates.iter().map(|r| r.window_seconds))
            .max()
            .unwrap_or(0)
    }
}

fn rule_of(policy: &Policy, op: &Operation) -> Option<&'static str> {
    use document::CompiledTx;
    let chain_bound = matches!(op.kind, OpKind::Tx | OpKind::TypedData);
    if let Some(chains) = &policy.chains
        && chain_bound
        && !op.chain.is_some_and(|c| chains.contains(&c))
    {
        return Some("chains");
    }
    let unlimited_ok = policy.tx.as_ref().is_some_and(|t| t.unlimited_approvals);
    let budgeted_token = |addr: [u8; 20]| {
        policy
            .budgets
            .iter()
            .any(|b| b.asset == Asset::Token(addr) && Some(b.chain) == op.chain)
    };
    match op.kind {
        OpKind::Tx => {
            let Some(CompiledTx {
                to,
                calls,
                max_value,
                ..
            }) = &policy.tx
            else {
                return Some("tx");
            };
            let to_ok = match (to, op.to) {
                (None, _) => true,
                (Some(list), Some(addr)) => list.contains(&addr),
                (Some(_), None) => false,
            };
            if !to_ok {
                return Some("tx.to");
            }
            if let Some(call) = op.call {
                let ok = match calls {
                    None => false,
                    Some(None) => true,
                    Some(Some(list)) => match (op.to, call) {
                        (Some(to), Some(sel)) => list.iter().any(|c| {
                            c.to == to
                                && c.selector == sel
                                && c.recipients.as_ref().is_none_or(|allowed| {
                                    op.recognized_token_op
                                        && op.recipient.is_some_and(|r| allowed.contains(&r))
                                })
                        }),
                        _ => false,
                    },
                };
                if !ok {
                    return Some("tx.calls");
                }
            }
            if max_value.is_some_and(|max| op.value > max) {
                return Some("tx.max_value");
            }
            if op.unlimited && !unlimited_ok {
                return Some("tx.unlimited_approvals");
            }
            if op.to.is_some_and(budgeted_token) && !op.recognized_token_op {
                return Some("budgets.unrecognized");
            }
        }
        OpKind::TypedData => {
            let Some(domains) = &policy.domains else {
                return Some("typed_data");
            };
            if let Some(list) = domains {
                let ok = match (op.chain, op.to) {
                    (Some(c), Some(to)) => list.contains(&(c, to)),
                    _ => false,
                };
                if !ok {
                    return Some("typed_data.domains");
                }
            }
            if op.unlimited && !unlimited_ok {
                return Some("tx.unlimited_approvals");
            }
            let permit2 = op.to == Some(document::PERMIT2) && !policy.budgets.is_empty();
            if (permit2 || op.to.is_some_and(budgeted_token)) && !op.recognized_token_op {
                return Some("budgets.unrecognized");
            }
        }
        OpKind::Text | OpKind::RawHash => {
            let Some(rules) = policy.messages else {
                return Some("messages");
            };
            if !rules.text {
                return Some("messages.text");
            }
            if op.kind == OpKind::RawHash && !rules.raw_hash {
                return Some("messages.raw_hash");
            }
        }
        OpKind::Sr25519 => {
            if !policy.sr25519 {
                return Some("sr25519");
            }
        }
    }
    None
}

/// Evaluates `op` against every policy of `effective`. With `approved`, thresholds are taken
/// as decided (the re-check when a person approves).
pub fn evaluate(effective: &Effective, op: &Operation, approved: bool) -> Evaluation {
    let mut denied = None;
    let mut approval = None;
    let mut charges = Vec::new();
    let mut rates = Vec::new();
    for (owner, stored) in &effective.policies {
        let policy = &stored.policy;
        if denied.is_none()
            && let Some(rule) = rule_of(policy, op)
        {
            denied = Some(Verdict::Denied {
                owner: *owner,
                rule: rule.to_owned(),
            });
        }
        let spent = |asset: Asset, chain: u64| {
            op.spends
                .iter()
                .filter(|s| s.asset == asset && s.chain == chain)
                .map(|s| s.amount)
                .fold(0u128, u128::saturating_add)
        };
        for budget in &policy.budgets {
            charges.push(Charge {
                owner: *owner,
                budget: *budget,
                amount: spent(budget.asset, budget.chain),
            });
        }
        if let Some(rate) = policy.rate {
            rates.push(RateCharge {
                owner: *owner,
                window_seconds: rate.window_seconds,
                max: rate.max,
            });
        }
        if !approved
            && approval.is_none()
            && policy
                .thresholds
                .iter()
                .any(|(asset, chain, above)| spent(*asset, *chain) > *above)
        {
            approval = Some(Verdict::Approval {
                owner: *owner,
                ttl_seconds: policy.approval_ttl,
            });
        }
    }
    Evaluation {
        verdict: denied.or(approval).unwrap_or(Verdict::Allowed),
        charges,
        rates,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn effective(docs: &[serde_json::Value]) -> Effective {
        Effective {
            master: Omni::from_bytes([1; 32]),
            version: 1,
            policies: docs
                .iter()
                .enumerate()
                .map(|(i, d)| {
                    (
                        Omni::from_bytes([i as u8 + 1; 32]),
                        Arc::new(StoredPolicy {
                            policy: Policy::from_json(d.to_string().as_bytes()).expect("policy"),
                            set_by: None,
                            set_at: Timestamp::from_millis(0),
                        }),
                    )
                })
                .collect(),
        }
    }

    fn rule(e: &Evaluation) -> Option<&str> {
        match &e.verdict {
            Verdict::Denied { rule, .. } => Some(rule),
            _ => None,
        }
    }

    #[test]
    fn deny_by_default_for_each_operation() {
        let empty = effective(&[json!({})]);
        let tx = classify::transaction(
            &crate::crypto::tx::TxRequest::from_json(
                json!({"chain_id": 1, "nonce": 0, "to": "0x1111111111111111111111111111111111111111", "gas_limit": 1}),
            )
            .expect("tx"),
        );
        assert_eq!(rule(&evaluate(&empty, &tx, false)), Some("tx"));
        let td = classify::typed_data(&json!({"primaryType": "Mail", "domain": {"chainId": 1}}));
        assert_eq!(rule(&evaluate(&empty, &td, false)), Some("typed_data"));
        let text = classify::message(b"hi", false);
        assert_eq!(rule(&evaluate(&empty, &text, false)), Some("messages"));
        let hash = classify::message(&[0; 32], true);
        let texts = effective(&[json!({"messages": {"text": true}})]);
        assert_eq!(
            rule(&evaluate(&texts, &hash, false)),
            Some("messages.raw_hash")
        );
        assert_eq!(rule(&evaluate(&texts, &text, false)), None);
        assert_eq!(
            rule(&evaluate(&empty, &classify::sr25519(), false)),
            Some("sr25519")
        );
        let none = Effective {
            policies: Vec::new(),
            ..empty
        };
        assert_eq!(evaluate(&none, &tx, false).verdict, Verdict::Allowed);
    }

    #[test]
    fn every_policy_on_the_lineage_must_allow() {
        let tx = classify::transaction(
            &crate::crypto::tx::TxRequest::from_json(
                json!({"chain_id": 1, "nonce": 0, "to": "0x1111111111111111111111111111111111111111", "value": "10", "gas_limit": 1, "max_fee_per_gas": 1}),
            )
            .expect("tx"),
        );
        let open = json!({"tx": {"to": "any"}, "budgets": [{"asset": "native", "chain": 1, "window_seconds": 60, "max": "100"}]});
        let narrow = json!({"chains": [8453], "tx": {"to": "any"}});
        let e = evaluate(&effective(&[open.clone(), narrow]), &tx, false);
        assert_eq!(rule(&e), Some("chains"));
        let capped = json!({"tx": {"to": "any", "max_value": "9"}});
        assert_eq!(
            rule(&evaluate(&effective(&[open.clone(), capped]), &tx, false)),
            Some("tx.max_value")
        );
        let e = evaluate(&effective(&[open.clone(), open]), &tx, false);
        assert_eq!(e.verdict, Verdict::Allowed);
        assert_eq!(e.charges.len(), 2);
        assert!(e.charges.iter().all(|c| c.amount == 11));
        assert_eq!(e.window_seconds(), 60);
    }

    #[test]
    fn a_call_rule_can_name_the_recipients() {
        let usdc = "0xa0b86991c6218b36c1d19d4a2e9eb0ce3606eb48";
        let policy = json!({"tx": {"to": [usdc], "calls": [{"to": usdc, "selector": "0xa9059cbb",
            "recipients": ["0x1111111111111111111111111111111111111111"]}]}});
        let transfer = |to: &str| {
            let data = format!("0xa9059cbb{}{}{:064x}", "0".repeat(24), to, 5u64);
            classify::transaction(
                &crate::crypto::tx::TxRequest::from_json(
                    json!({"chain_id": 1, "nonce": 0, "to": usdc, "data": data, "gas_limit": 1}),
                )
                .expect("tx"),
            )
        };
        let e = effective(&[policy]);
        assert_eq!(
            evaluate(&e, &transfer(&"11".repeat(20)), false).verdict,
            Verdict::Allowed
        );
        assert_eq!(
            rule(&evaluate(&e, &transfer(&"22".repeat(20)), false)),
            Some("tx.calls")
        );
    }

    #[test]
    fn thresholds_ask_the_highest_owner() {
        let tx = classify::transaction(
            &crate::crypto::tx::TxRequest::from_json(
                json!({"chain_id": 1, "nonce": 0, "to": "0x1111111111111111111111111111111111111111", "value": "10", "gas_limit": 0}),
            )
            .expect("tx"),
        );
        let ask = json!({"tx": {"to": "any"}, "approval": {"above": [{"asset": "native", "chain": 1, "amount": "5"}]}});
        let e = evaluate(
            &effective(&[json!({"tx": {"to": "any"}}), ask.clone(), ask]),
            &tx,
            false,
        );
        assert_eq!(
            e.verdict,
            Verdict::Approval {
                owner: Omni::from_bytes([2; 32]),
                ttl_seconds: 900
            }
        );
        let e = evaluate(&effective(&[json!({"tx": {"to": "any"}})]), &tx, true);
        assert_eq!(e.verdict, Verdict::Allowed);
    }
}
