//! Omni derivations: identity omnis, master omnis and HDKD child omnis.

use agentkeys_runtime::Omni;
use sha2::{Digest, Sha256};

use super::labels;

/// The longest agent label.
pub const MAX_LABEL_LEN: usize = 32;

/// An identity a master logs in with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Identity<'a> {
    /// An EVM address (any case, with or without `0x`; normalized before hashing).
    Evm(&'a str),
    /// An email address (trimmed and lowercased before hashing).
    Email(&'a str),
    /// A Google account: the ID token's `sub` (upstream's `oauth2_google`), hashed as is.
    OAuth2Google(&'a str),
    /// An account at another OpenID provider: `<issuer>#<sub>`, hashed as is.
    Oidc(&'a str),
}

/// Longest `sub` or `<issuer>#<sub>` value accepted as an identity.
pub const MAX_SUBJECT_LEN: usize = 512;

impl<'a> Identity<'a> {
    /// Parses `type:value` (`evm:0x…`, `email:…`, `oauth2_google:<sub>`, `oidc:<issuer>#<sub>`).
    pub fn parse(text: &'a str) -> Result<Self, OmniError> {
        let (kind, value) = text.split_once(':').ok_or(OmniError::UnknownType)?;
        Self::of(kind, value)
    }

    /// The identity of a stored (`type`, `value`) pair.
    pub fn of(kind: &str, value: &'a str) -> Result<Self, OmniError> {
        match kind {
            labels::IDENTITY_EVM => Ok(Identity::Evm(value)),
            labels::IDENTITY_EMAIL => Ok(Identity::Email(value)),
            labels::IDENTITY_OAUTH2_GOOGLE => Ok(Identity::OAuth2Google(value)),
            labels::IDENTITY_OIDC => Ok(Identity::Oidc(value)),
            _ => Err(OmniError::UnknownType),
        }
    }

    /// The type and the canonical value, as stored and hashed.
    pub fn canonical(&self) -> Result<(&'static str, String), OmniError> {
        match *self {
            Identity::Evm(address) => Ok((labels::IDENTITY_EVM, normalize_address(address)?)),
            Identity::Email(email) => Ok((labels::IDENTITY_EMAIL, normalize_email(email)?)),
            Identity::OAuth2Google(sub) => Ok((labels::IDENTITY_OAUTH2_GOOGLE, subject(sub)?)),
            Identity::Oidc(value) => {
                let ok = value
                    .split_once('#')
                    .is_some_and(|(issuer, sub)| !issuer.is_empty() && !sub.is_empty());
                if !ok {
                    return Err(OmniError::InvalidSubject);
                }
                Ok((labels::IDENTITY_OIDC, subject(value)?))
            }
        }
    }
}

/// A `sub` (or `<issuer>#<sub>`) as given: non-empty, at most [`MAX_SUBJECT_LEN`] bytes, no
/// control characters. Never rewritten: providers compare it byte for byte.
fn subject(value: &str) -> Result<String, OmniError> {
    if value.is_empty() || value.len() > MAX_SUBJECT_LEN || value.chars().any(char::is_control) {
        return Err(OmniError::InvalidSubject);
    }
    Ok(value.to_string())
}

/// Why a label or an identity value is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OmniError {
    /// Labels match `^[a-z0-9-]{1,32}$` and do not start with `0x`.
    #[error("a label is 1 to 32 characters of a-z, 0-9 and '-', not starting with 0x")]
    InvalidLabel,
    /// An EVM address is 40 hex characters after an optional `0x`.
    #[error("an EVM address is 0x followed by 40 hex characters")]
    InvalidAddress,
    /// An email address needs one `@` with text on both sides.
    #[error("an email address needs text on both sides of one '@'")]
    InvalidEmail,
    /// A subject is 1 to 512 bytes without control characters (`oidc`: `<issuer>#<sub>`).
    #[error(
        "an OpenID subject is 1 to 512 bytes without control characters; oidc values are <issuer>#<sub>"
    )]
    InvalidSubject,
    /// The identity type is not one of evm, email, oauth2_google, oidc.
    #[error("an identity is type:value with type evm, email, oauth2_google or oidc")]
    UnknownType,
}

/// Checks an agent label: `^[a-z0-9-]{1,32}$`, not starting with `0x` (ambiguous in Substrate
/// tools, where `0x…` is read as hex bytes).
pub fn validate_label(label: &str) -> Result<(), OmniError> {
    let charset_ok = label
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if label.is_empty() || label.len() > MAX_LABEL_LEN || !charset_ok || label.starts_with("0x") {
        return Err(OmniError::InvalidLabel);
    }
    Ok(())
}

/// Normalizes an EVM address to `0x` + 40 lowercase hex.
pub fn normalize_address(address: &str) -> Result<String, OmniError> {
    let bare = address
        .strip_prefix("0x")
        .or_else(|| address.strip_prefix("0X"))
        .unwrap_or(address);
    if bare.len() != 40 || !bare.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(OmniError::InvalidAddress);
    }
    Ok(format!("0x{}", bare.to_ascii_lowercase()))
}

fn normalize_email(email: &str) -> Result<String, OmniError> {
    let email = email.trim().to_lowercase();
    match email.split_once('@') {
        Some((local, domain))
            if !local.is_empty() && !domain.is_empty() && !domain.contains('@') =>
        {
            Ok(email)
        }
        _ => Err(OmniError::InvalidEmail),
    }
}

/// `SHA256(client_id || type || value)` with the value in canonical form.
pub fn identity_omni(client_id: &str, identity: Identity<'_>) -> Result<Omni, OmniError> {
    let (kind, value) = identity.canonical()?;
    let mut hasher = Sha256::new();
    hasher.update(client_id.as_bytes());
    hasher.update(kind.as_bytes());
    hasher.update(value.as_bytes());
    Ok(Omni::from_bytes(hasher.finalize().into()))
}

/// The omni of the master anchored to `anchor_wallet` (its own wallet for SIWE, the managed
/// wallet of its login identity for email): `SHA256(client_id || "evm" || wallet_lowercase)`.
pub fn master_omni(client_id: &str, anchor_wallet: &str) -> Result<Omni, OmniError> {
    identity_omni(client_id, Identity::Evm(anchor_wallet))
}

/// `SHA256("agentkeys-hdkd-v1" || parent || "//" || label)`.
pub fn child_omni(parent: &Omni, label: &str) -> Result<Omni, OmniError> {
    validate_label(label)?;
    let mut hasher = Sha256::new();
    hasher.update(labels::HDKD_CHILD);
    hasher.update(parent.as_bytes());
    hasher.update(labels::HDKD_JUNCTION.as_bytes());
    hasher.update(label.as_bytes());
    Ok(Omni::from_bytes(hasher.finalize().into()))
}

/// Follows a path such as `//ops//bot-1` down from `root`.
pub fn path_omni(root: &Omni, path: &str) -> Result<Omni, OmniError> {
    let rest = path
        .strip_prefix(labels::HDKD_JUNCTION)
        .ok_or(OmniError::InvalidLabel)?;
    rest.split(labels::HDKD_JUNCTION)
        .try_fold(*root, |parent, label| child_omni(&parent, label))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(o: Omni) -> String {
        o.to_string()
    }

    #[test]
    fn identity_omni_vector() {
        let o = identity_omni("agentkeys", Identity::Email("test@litentry.org")).expect("valid");
        assert_eq!(
            hex(o),
            "25264bfa70c1ca14236e31ca55e84dcba6aed6fb7d8663b748f21fafcc0ac59b"
        );
        let messy =
            identity_omni("agentkeys", Identity::Email("  Test@Litentry.ORG ")).expect("valid");
        assert_eq!(o, messy);
    }

    #[test]
    fn master_and_child_vectors() {
        let master =
            master_omni("agentkeys", "0x7c41e8a3b5d2f0c694a1d8e2b37f5a09c6e4d21b").expect("valid");
        assert_eq!(
            hex(master),
            "a8fde0c55de542e2c7e151cefa670697569fefc4abf784b9a732f5ac3b5d81d9"
        );
        let upper =
            master_omni("agentkeys", "0x7C41E8A3B5D2F0C694A1D8E2B37F5A09C6E4D21B").expect("valid");
        assert_eq!(master, upper);
        let hermes = child_omni(&master, "hermes").expect("valid");
        assert_eq!(
            hex(hermes),
            "a152e6b37b01bc48b609efbb32e33055eb2cb555f60166784a1b81020a54f7a1"
        );
        assert_eq!(path_omni(&master, "//hermes"), Ok(hermes));
    }

    #[test]
    fn nested_paths_compose() {
        let root = Omni::from_bytes([9; 32]);
        let ops = child_omni(&root, "ops").expect("valid");
        let bot = child_omni(&ops, "bot-1").expect("valid");
        assert_eq!(path_omni(&root, "//ops//bot-1"), Ok(bot));
        assert_ne!(child_omni(&root, "bot-1"), Ok(bot));
    }

    #[test]
    fn labels_are_validated() {
        for ok in ["a", "bot-1", "42", "x".repeat(32).as_str(), "-"] {
            assert_eq!(validate_label(ok), Ok(()), "{ok}");
        }
        for bad in [
            "",
            "Bot",
            "a_b",
            "a/b",
            "0xabc",
            "é",
            &"x".repeat(33),
            "a b",
        ] {
            assert_eq!(validate_label(bad), Err(OmniError::InvalidLabel), "{bad:?}");
        }
        let root = Omni::from_bytes([1; 32]);
        assert!(path_omni(&root, "ops").is_err());
        assert!(path_omni(&root, "//ops//").is_err());
    }

    #[test]
    fn identities_are_validated() {
        assert_eq!(
            identity_omni("agentkeys", Identity::Evm("0x12")),
            Err(OmniError::InvalidAddress)
        );
        assert_eq!(
            identity_omni("agentkeys", Identity::Email("nobody")),
            Err(OmniError::InvalidEmail)
        );
        assert_eq!(
            identity_omni("agentkeys", Identity::Email("a@b@c")),
            Err(OmniError::InvalidEmail)
        );
    }
}
