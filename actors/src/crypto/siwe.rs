//! Sign-In with Ethereum (EIP-4361): a strict parser and serializer of the message, its
//! validation against this gateway's expectations, and a detector of messages addressed to a
//! domain (used by the signer to refuse logins with a managed wallet).
//!
//! The nonce binding (server-issued, single use, bound to the device key, address and chain)
//! is the gateway's: [`SiweMessage::validate`] checks everything that is in the message itself.

use super::eip191::{Signature, hash_message, recover};
use super::labels;
use super::rfc3339;
use super::wallet::Address;

/// A parsed EIP-4361 message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SiweMessage {
    /// Optional scheme before the domain (`https`).
    pub scheme: Option<String>,
    /// host[:port] requesting the sign-in.
    pub domain: String,
    /// The signing account (EIP-55 checksummed in the message).
    pub address: Address,
    /// Optional human-readable statement (one line).
    pub statement: Option<String>,
    /// The subject of the signing (RFC 3986 URI).
    pub uri: String,
    /// Always `1`.
    pub version: String,
    /// EIP-155 chain id.
    pub chain_id: u64,
    /// At least 8 alphanumeric characters.
    pub nonce: String,
    /// As written in the message.
    pub issued_at: String,
    /// As written, if present.
    pub expiration_time: Option<String>,
    /// As written, if present.
    pub not_before: Option<String>,
    /// Optional request id.
    pub request_id: Option<String>,
    /// Optional resource URIs.
    pub resources: Vec<String>,
}

/// Why a SIWE message is refused. Each names what to fix.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SiweError {
    /// The text does not follow the EIP-4361 format.
    #[error("not an EIP-4361 message: {0}")]
    Format(String),
    /// The domain is not this gateway's.
    #[error("the message is for domain {found:?}, this gateway is {expected:?}")]
    Domain {
        /// In the message.
        found: String,
        /// Expected.
        expected: String,
    },
    /// The URI is not this gateway's public URL.
    #[error("the message URI {found:?} must be exactly {expected:?}")]
    Uri {
        /// In the message.
        found: String,
        /// Expected.
        expected: String,
    },
    /// The chain is not allowed.
    #[error("chain id {0} is not allowed here")]
    Chain(u64),
    /// Issued in the future beyond the allowed skew.
    #[error("the message is issued in the future")]
    NotYetIssued,
    /// Past its expiration time.
    #[error("the message has expired")]
    Expired,
    /// Before its not-before time.
    #[error("the message is not valid yet (not-before)")]
    NotYetValid,
    /// The signature does not recover to the message's address.
    #[error("the signature is not by the message's address")]
    Signature,
}

/// What this gateway expects of a SIWE message.
#[derive(Debug, Clone)]
pub struct SiweExpectations<'a> {
    /// host[:port] of `public_url`.
    pub domain: &'a str,
    /// `public_url` exactly.
    pub uri: &'a str,
    /// Allowed chain ids.
    pub chains: &'a [u64],
    /// Now, in milliseconds since the epoch.
    pub now_ms: i64,
    /// Allowed clock skew in milliseconds.
    pub skew_ms: i64,
}

fn format_err(what: impl Into<String>) -> SiweError {
    SiweError::Format(what.into())
}

/// Takes `prefix` off `line` or fails naming the expected line.
fn field<'a>(line: Option<&'a str>, prefix: &str) -> Result<&'a str, SiweError> {
    line.and_then(|l| l.strip_prefix(prefix))
        .ok_or_else(|| format_err(format!("expected a line starting with {prefix:?}")))
}

fn is_uri(s: &str) -> bool {
    // RFC 3986 scheme ":" rest; no whitespace or control characters.
    let Some((scheme, rest)) = s.split_once(':') else {
        return false;
    };
    let mut chars = scheme.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic())
        && chars.all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c))
        && !rest.is_empty()
        && !s.chars().any(|c| c.is_whitespace() || c.is_control())
}

impl SiweMessage {
    /// Parses the exact EIP-4361 text (LF line endings, optional trailing newline).
    pub fn parse(text: &str) -> Result<Self, SiweError> {
        let text = text.strip_suffix('\n').unwrap_or(text);
        let mut lines = text.split('\n');
        let header = lines.next().unwrap_or_default();
        let origin = header
            .strip_suffix(labels::SIWE_HEADER_SUFFIX)
            .ok_or_else(|| format_err("the first line must end with ' wants you to sign in with your Ethereum account:'"))?;
        let (scheme, domain) = match origin.split_once("://") {
            Some((scheme, domain)) => (Some(scheme.to_string()), domain.to_string()),
            None => (None, origin.to_string()),
        };
        if domain.is_empty() || domain.contains(char::is_whitespace) || domain.contains('/') {
            return Err(format_err("invalid domain"));
        }
        let address_text = lines
            .next()
            .ok_or_else(|| format_err("missing address line"))?;
        let address: Address = address_text
            .parse()
            .map_err(|_| format_err("invalid address"))?;
        if address.to_checksum() != address_text {
            return Err(format_err("the address must be EIP-55 checksummed"));
        }
        if lines.next() != Some("") {
            return Err(format_err("expected an empty line after the address"));
        }
        let statement = match lines.next() {
            Some("") => None,
            Some(statement) if !statement.starts_with("URI: ") => {
                if lines.next() != Some("") {
                    return Err(format_err("expected an empty line after the statement"));
                }
                Some(statement.to_string())
            }
            _ => return Err(format_err("expected a statement or an empty line")),
        };
        let mut next = lines.next();
        let uri = field(next, "URI: ")?.to_string();
        if !is_uri(&uri) {
            return Err(format_err("URI is not an RFC 3986 URI"));
        }
        next = lines.next();
        let version = field(next, "Version: ")?.to_string();
        if version != "1" {
            return Err(format_err("Version must be 1"));
        }
        next = lines.next();
        let chain_text = field(next, "Chain ID: ")?;
        let chain_id = chain_text
            .parse::<u64>()
            .ok()
            .filter(|_| !chain_text.starts_with('0') || chain_text == "0")
            .ok_or_else(|| format_err("Chain ID must be a decimal integer"))?;
        next = lines.next();
        let nonce = field(next, "Nonce: ")?.to_string();
        if nonce.len() < 8 || !nonce.bytes().all(|b| b.is_ascii_alphanumeric()) {
            return Err(format_err(
                "Nonce must be at least 8 alphanumeric characters",
            ));
        }
        next = lines.next();
        let issued_at = field(next, "Issued At: ")?.to_string();
        rfc3339::parse(&issued_at)
            .ok_or_else(|| format_err("Issued At is not an RFC 3339 date-time"))?;
        let mut msg = SiweMessage {
            scheme,
            domain,
            address,
            statement,
            uri,
            version,
            chain_id,
            nonce,
            issued_at,
            expiration_time: None,
            not_before: None,
            request_id: None,
            resources: Vec::new(),
        };
        next = lines.next();
        if let Some(v) = next.and_then(|l| l.strip_prefix("Expiration Time: ")) {
            rfc3339::parse(v)
                .ok_or_else(|| format_err("Expiration Time is not an RFC 3339 date-time"))?;
            msg.expiration_time = Some(v.to_string());
            next = lines.next();
        }
        if let Some(v) = next.and_then(|l| l.strip_prefix("Not Before: ")) {
            rfc3339::parse(v)
                .ok_or_else(|| format_err("Not Before is not an RFC 3339 date-time"))?;
            msg.not_before = Some(v.to_string());
            next = lines.next();
        }
        if let Some(v) = next.and_then(|l| l.strip_prefix("Request ID: ")) {
            if v.contains(char::is_control) {
                return Err(format_err("invalid Request ID"));
            }
            msg.request_id = Some(v.to_string());
            next = lines.next();
        }
        if next == Some("Resources:") {
            for line in lines.by_ref() {
                let resource = line
                    .strip_prefix("- ")
                    .ok_or_else(|| format_err("resources are '- URI' lines"))?;
                if !is_uri(resource) {
                    return Err(format_err("a resource is not an RFC 3986 URI"));
                }
                msg.resources.push(resource.to_string());
            }
            next = None;
        }
        if next.is_some() || lines.next().is_some() {
            return Err(format_err("unexpected lines after the message"));
        }
        Ok(msg)
    }

    /// The exact EIP-4361 text (what is signed).
    pub fn to_text(&self) -> String {
        let mut out = String::new();
        if let Some(scheme) = &self.scheme {
            out.push_str(scheme);
            out.push_str("://");
        }
        out.push_str(&self.domain);
        out.push_str(labels::SIWE_HEADER_SUFFIX);
        out.push('\n');
        out.push_str(&self.address.to_checksum());
        out.push_str("\n\n");
        if let Some(statement) = &self.statement {
            out.push_str(statement);
            out.push('\n');
        }
        out.push('\n');
        out.push_str(&format!(
            "URI: {}\nVersion: {}\nChain ID: {}\nNonce: {}\nIssued At: {}",
            self.uri, self.version, self.chain_id, self.nonce, self.issued_at
        ));
        for (name, value) in [
            ("Expiration Time", &self.expiration_time),
            ("Not Before", &self.not_before),
            ("Request ID", &self.request_id),
        ] {
            if let Some(v) = value {
                out.push_str(&format!("\n{name}: {v}"));
            }
        }
        if !self.resources.is_empty() {
            out.push_str("\nResources:");
            for r in &self.resources {
                out.push_str(&format!("\n- {r}"));
            }
        }
        out
    }

    /// The address as the message shows it (EIP-55).
    pub fn to_checksum_address(&self) -> String {
        self.address.to_checksum()
    }

    /// Checks domain, URI, chain and times against this gateway (not the nonce binding).
    pub fn validate(&self, expect: &SiweExpectations<'_>) -> Result<(), SiweError> {
        if !self.domain.eq_ignore_ascii_case(expect.domain) {
            return Err(SiweError::Domain {
                found: self.domain.clone(),
                expected: expect.domain.to_string(),
            });
        }
        if self.uri != expect.uri {
            return Err(SiweError::Uri {
                found: self.uri.clone(),
                expected: expect.uri.to_string(),
            });
        }
        if !expect.chains.contains(&self.chain_id) {
            return Err(SiweError::Chain(self.chain_id));
        }
        // Each time was checked to parse when the message was parsed.
        let time = |t: &str| rfc3339::parse(t).unwrap_or(i64::MAX);
        if time(&self.issued_at) > expect.now_ms + expect.skew_ms {
            return Err(SiweError::NotYetIssued);
        }
        if self
            .expiration_time
            .as_deref()
            .is_some_and(|t| time(t) <= expect.now_ms)
        {
            return Err(SiweError::Expired);
        }
        if self
            .not_before
            .as_deref()
            .is_some_and(|t| time(t) > expect.now_ms + expect.skew_ms)
        {
            return Err(SiweError::NotYetValid);
        }
        Ok(())
    }

    /// Checks an EOA `personal_sign` signature of `text` (the exact signed message) by the
    /// message's address.
    pub fn verify_signature(&self, text: &str, signature: &Signature) -> Result<(), SiweError> {
        match recover(&hash_message(text.as_bytes()), signature) {
            Ok(address) if address == self.address => Ok(()),
            _ => Err(SiweError::Signature),
        }
    }
}

/// [`is_siwe_for`] of a message given as bytes (only UTF-8 text can be an EIP-4361 message):
/// what a managed wallet refuses to EIP-191-sign.
pub fn is_login_for(message: &[u8], domain: &str) -> bool {
    std::str::from_utf8(message).is_ok_and(|text| is_siwe_for(text, domain))
}

/// Whether `text` is a SIWE message whose first line names `domain` (host[:port]), with or
/// without a scheme, ignoring case and surrounding whitespace.
pub fn is_siwe_for(text: &str, domain: &str) -> bool {
    let first = text
        .trim_start_matches(['\u{feff}', ' ', '\t', '\r', '\n'])
        .lines()
        .next()
        .unwrap_or("");
    let Some(named) = first.trim_end().strip_suffix(labels::SIWE_HEADER_SUFFIX) else {
        return false;
    };
    let named = named.trim();
    let host = named.split_once("://").map_or(named, |(_, rest)| rest);
    host.eq_ignore_ascii_case(domain.trim())
}

#[cfg(test)]
mod tests {
    use super::*;

    const MSG: &str = "127.0.0.1:8090 wants you to sign in with your Ethereum account:\n\
                       0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed\n\nURI: http://127.0.0.1:8090\n";

    #[test]
    fn detects_messages_for_our_domain_only() {
        assert!(is_siwe_for(MSG, "127.0.0.1:8090"));
        assert!(is_siwe_for(
            &format!(
                "\n  {}",
                MSG.replace("127.0.0.1:8090 wants", "HTTP://127.0.0.1:8090 wants")
            ),
            "127.0.0.1:8090"
        ));
        assert!(!is_siwe_for(MSG, "example.com"));
        assert!(!is_siwe_for("hello 127.0.0.1:8090", "127.0.0.1:8090"));
        assert!(!is_siwe_for("", "127.0.0.1:8090"));
    }
}

#[cfg(test)]
mod validation_tests {
    use super::*;

    fn message() -> SiweMessage {
        SiweMessage {
            scheme: None,
            domain: "127.0.0.1:8090".into(),
            address: "0x5aaeb6053f3e94c9b9a09f33669435e7ef1beaed"
                .parse()
                .expect("address"),
            statement: None,
            uri: "http://127.0.0.1:8090".into(),
            version: "1".into(),
            chain_id: 1,
            nonce: "abcdefgh12".into(),
            issued_at: "2026-11-29T10:00:00Z".into(),
            expiration_time: Some("2026-11-29T10:45:00Z".into()),
            not_before: None,
            request_id: None,
            resources: vec![],
        }
    }

    fn expect(now: &str) -> SiweExpectations<'static> {
        SiweExpectations {
            domain: "127.0.0.1:8090",
            uri: "http://127.0.0.1:8090",
            chains: &[1],
            now_ms: rfc3339::parse(now).expect("time"),
            skew_ms: 60_000,
        }
    }

    #[test]
    fn every_rule_is_enforced() {
        let m = message();
        assert_eq!(m.validate(&expect("2026-11-29T10:01:00Z")), Ok(()));
        assert_eq!(
            m.validate(&expect("2026-11-29T09:59:30Z")),
            Ok(()),
            "within skew"
        );
        assert_eq!(
            m.validate(&expect("2026-11-29T09:58:00Z")),
            Err(SiweError::NotYetIssued)
        );
        assert_eq!(
            m.validate(&expect("2026-11-29T10:45:00Z")),
            Err(SiweError::Expired)
        );
        let mut other = m.clone();
        other.domain = "evil.example".into();
        assert!(matches!(
            other.validate(&expect("2026-11-29T10:01:00Z")),
            Err(SiweError::Domain { .. })
        ));
        let mut other = m.clone();
        other.uri = "http://127.0.0.1:8090/".into();
        assert!(matches!(
            other.validate(&expect("2026-11-29T10:01:00Z")),
            Err(SiweError::Uri { .. })
        ));
        let mut other = m.clone();
        other.chain_id = 5;
        assert_eq!(
            other.validate(&expect("2026-11-29T10:01:00Z")),
            Err(SiweError::Chain(5))
        );
        let mut other = m;
        other.not_before = Some("2026-11-29T10:30:00Z".into());
        assert_eq!(
            other.validate(&expect("2026-11-29T10:01:00Z")),
            Err(SiweError::NotYetValid)
        );
    }

    #[test]
    fn malformed_text_is_refused() {
        let good = message().to_text();
        assert_eq!(
            SiweMessage::parse(&good).map(|m| m.to_text()),
            Ok(good.clone())
        );
        let cases = [
            good.replace(
                "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed",
                "0x5aaeb6053f3e94c9b9a09f33669435e7ef1beaed",
            ),
            good.replace("Version: 1", "Version: 2"),
            good.replace("Nonce: abcdefgh12", "Nonce: short"),
            good.replace("Chain ID: 1", "Chain ID: one"),
            good.replace("Issued At: 2026-11-29T10:00:00Z", "Issued At: yesterday"),
            good.replace("URI: http://127.0.0.1:8090", "URI: not a uri"),
            good.replace(" wants you", " wants"),
            format!("{good}\nExtra: line"),
            good.replace("\n\n\nURI", "\n\nURI"),
            String::new(),
        ];
        for bad in cases {
            assert!(
                matches!(SiweMessage::parse(&bad), Err(SiweError::Format(_))),
                "{bad:?}"
            );
        }
    }
}
