//! Detects EIP-4361 (Sign-In with Ethereum) text addressed to a given domain, so the signer can
//! refuse to EIP-191-sign a login to this gateway with a managed wallet.

use super::labels;

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
