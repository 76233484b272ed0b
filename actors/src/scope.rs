//! Scopes (DESIGN §11): `area:action[:arg]`, exact match, no wildcards.
//!
//! | scope | grants |
//! |---|---|
//! | `sign:eip191` | EIP-191 `personal_sign` |
//! | `sign:eip712` | EIP-712 v4 typed data |
//! | `sign:sr25519` | sr25519 signatures |
//! | `sign:tx:<chain_id>` | transactions for that chain (decimal, no leading zeros) |
//! | `oidc:<audience>` | OIDC tokens for that audience (not `agentkeys`) |
//! | `actors:create` | creating children |
//! | `policy:set` | setting and removing the policies of descendants |
//! | `approvals:decide` | approving or denying requests that a descendant's policy holds for a person |
//! | `cred:read:<service>` | reading that credential of the master's vault (and using it through the proxy) |
//!
//! A master holds every scope. New agents hold none unless given. Effective scopes are the
//! intersection of the stored scopes along the lineage, computed at check time.

/// EIP-191 signing.
pub const SIGN_EIP191: &str = "sign:eip191";
/// EIP-712 signing.
pub const SIGN_EIP712: &str = "sign:eip712";
/// sr25519 signing.
pub const SIGN_SR25519: &str = "sign:sr25519";
/// Creating children.
pub const ACTORS_CREATE: &str = "actors:create";
/// Setting descendants' policies.
pub const POLICY_SET: &str = "policy:set";
/// Deciding approvals held by descendants' policies.
pub const APPROVALS_DECIDE: &str = "approvals:decide";
/// Most scopes stored on one actor.
pub const MAX_SCOPES: usize = 64;

/// The scope for transactions on `chain_id`.
pub fn sign_tx(chain_id: u64) -> String {
    format!("sign:tx:{chain_id}")
}

/// The scope for reading credential `service`.
pub fn cred_read(service: &str) -> String {
    format!("cred:read:{service}")
}

/// Whether `service` is a credential name: `^[a-z0-9][a-z0-9._-]{0,63}$`.
pub fn is_service(service: &str) -> bool {
    let bytes = service.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= 64
        && (bytes[0].is_ascii_lowercase() || bytes[0].is_ascii_digit())
        && bytes
            .iter()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(b))
}

/// The scope for OIDC tokens for `audience`.
pub fn oidc(audience: &str) -> String {
    format!("oidc:{audience}")
}

/// Why a scope is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "{0:?} is not a scope; use sign:eip191, sign:eip712, sign:sr25519, sign:tx:<chain_id>, oidc:<audience>, cred:read:<service>, actors:create, policy:set or approvals:decide"
)]
pub struct ScopeError(pub String);

/// Checks one scope against the grammar and the vocabulary.
pub fn validate(scope: &str) -> Result<(), ScopeError> {
    let bad = || ScopeError(scope.chars().take(80).collect());
    match scope {
        SIGN_EIP191 | SIGN_EIP712 | SIGN_SR25519 | ACTORS_CREATE | POLICY_SET
        | APPROVALS_DECIDE => return Ok(()),
        _ => {}
    }
    if let Some(chain) = scope.strip_prefix("sign:tx:") {
        let canonical = chain
            .parse::<u64>()
            .is_ok_and(|n| n.to_string() == chain && n > 0);
        return if canonical { Ok(()) } else { Err(bad()) };
    }
    if let Some(service) = scope.strip_prefix("cred:read:") {
        return if is_service(service) {
            Ok(())
        } else {
            Err(bad())
        };
    }
    if let Some(audience) = scope.strip_prefix("oidc:") {
        let ok = !audience.is_empty()
            && audience.len() <= 256
            && audience != "agentkeys"
            && audience.chars().all(|c| c.is_ascii_graphic());
        return if ok { Ok(()) } else { Err(bad()) };
    }
    Err(bad())
}

/// Validates a set of scopes and returns it sorted without duplicates.
pub fn normalize(scopes: &[String]) -> Result<Vec<String>, ScopeError> {
    if scopes.len() > MAX_SCOPES {
        return Err(ScopeError(format!(
            "{} scopes (at most {MAX_SCOPES})",
            scopes.len()
        )));
    }
    for scope in scopes {
        validate(scope)?;
    }
    let mut out = scopes.to_vec();
    out.sort();
    out.dedup();
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_vocabulary_and_nothing_else() {
        for good in [
            "sign:eip191",
            "sign:eip712",
            "sign:sr25519",
            "sign:tx:1",
            "sign:tx:8453",
            "oidc:sts.amazonaws.com",
            "actors:create",
            "policy:set",
            "approvals:decide",
        ] {
            assert_eq!(validate(good), Ok(()), "{good}");
        }
        for bad in [
            "",
            "sign:*",
            "sign:tx:",
            "sign:tx:01",
            "sign:tx:0",
            "sign:tx:x",
            "oidc:",
            "oidc:agentkeys",
            "oidc:a b",
            "actors:delete",
            "SIGN:EIP191",
            "sign:eip191 ",
        ] {
            assert!(validate(bad).is_err(), "{bad:?}");
        }
        let set = normalize(&["sign:tx:1".into(), "sign:eip191".into(), "sign:tx:1".into()])
            .expect("valid");
        assert_eq!(set, ["sign:eip191", "sign:tx:1"]);
    }
}
