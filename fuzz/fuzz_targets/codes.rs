//! Typed codes: link codes, email confirm codes, email addresses and pairing fingerprints.
#![no_main]

use agentkeys_gateway::http::{email, links, pairing};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Some(code) = links::normalize(text) {
        assert_eq!(code.len(), links::CODE_CHARS);
        assert_eq!(links::normalize(&code).as_deref(), Some(code.as_str()));
        assert_eq!(links::code_hash(&code), links::code_hash(&code));
    }
    let confirm = email::normalize_code(text);
    assert_eq!(email::normalize_code(&confirm), confirm);
    if let Ok(address) = email::normalize_email(text) {
        assert_eq!(email::normalize_email(&address).ok().as_deref(), Some(address.as_str()));
    }
    let _ = pairing::fingerprint(text);
});
