//! The EIP-4361 (SIWE) parser: anything it accepts prints back to text that parses to the
//! same message, and validation never panics.
#![no_main]

use agentkeys_actors::crypto::rfc3339;
use agentkeys_actors::crypto::siwe::{SiweExpectations, SiweMessage, is_siwe_for};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let _ = rfc3339::parse(text);
    let _ = is_siwe_for(text, "keys.example");
    if let Ok(message) = SiweMessage::parse(text) {
        let printed = message.to_text();
        let again = SiweMessage::parse(&printed).expect("printed message parses");
        assert_eq!(again, message, "parse(to_text(m)) != m");
        let _ = message.to_checksum_address();
        let _ = message.validate(&SiweExpectations {
            domain: "keys.example",
            uri: "https://keys.example",
            chains: &[1],
            now_ms: agentkeys_fuzz::NOW * 1000,
            skew_ms: 60_000,
        });
    }
});
