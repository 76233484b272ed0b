//! The 32-byte account id of every actor, shown as 64 lowercase hex characters without `0x`.

use std::fmt;
use std::str::FromStr;

/// An actor's account id (omni): 32 bytes, displayed as bare lowercase hex.
///
/// Parsing accepts an optional `0x`/`0X` prefix and either case, so every boundary can
/// normalize what it receives; display never prints a prefix.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Omni([u8; 32]);

/// Why a string is not an omni.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OmniParseError {
    /// Not 64 hex characters after the optional `0x`.
    #[error("an omni is 64 hex characters (an optional 0x prefix is accepted), got {0} characters")]
    Length(usize),
    /// A character outside `0-9a-fA-F`.
    #[error("an omni contains only hex characters")]
    NotHex,
}

impl Omni {
    /// Wraps raw bytes.
    pub const fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    /// The raw 32 bytes.
    pub const fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// The bare lowercase hex form (64 characters).
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    /// A short form for logs: the first 8 hex characters.
    pub fn short(&self) -> String {
        hex::encode(&self.0[..4])
    }
}

impl FromStr for Omni {
    type Err = OmniParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bare = s
            .strip_prefix("0x")
            .or_else(|| s.strip_prefix("0X"))
            .unwrap_or(s);
        if bare.len() != 64 {
            return Err(OmniParseError::Length(bare.len()));
        }
        let mut out = [0u8; 32];
        hex::decode_to_slice(bare, &mut out).map_err(|_| OmniParseError::NotHex)?;
        Ok(Self(out))
    }
}

impl fmt::Display for Omni {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for Omni {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Omni({})", self.short())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEX: &str = "25264bfa70c1ca14236e31ca55e84dcba6aed6fb7d8663b748f21fafcc0ac59b";

    #[test]
    fn parse_normalizes_prefix_and_case() {
        let bare: Omni = HEX.parse().expect("bare hex parses");
        let prefixed: Omni = format!("0x{}", HEX.to_uppercase())
            .parse()
            .expect("0x form parses");
        assert_eq!(bare, prefixed);
        assert_eq!(prefixed.to_string(), HEX);
    }

    #[test]
    fn parse_rejects_bad_input() {
        assert_eq!("abc".parse::<Omni>(), Err(OmniParseError::Length(3)));
        let bad = format!("{}zz", &HEX[..62]);
        assert_eq!(bad.parse::<Omni>(), Err(OmniParseError::NotHex));
        assert!(format!("0x0x{}", &HEX[..62]).parse::<Omni>().is_err());
    }
}
