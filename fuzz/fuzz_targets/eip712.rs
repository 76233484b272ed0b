//! EIP-712 typed data: parsing and hashing arbitrary JSON never panics, and hashing is
//! deterministic.
#![no_main]

use agentkeys_actors::crypto::eip712::TypedData;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(value) = serde_json::from_slice::<serde_json::Value>(data) else {
        return;
    };
    if let Ok(typed) = TypedData::from_json(value) {
        if let Ok(first) = typed.hash() {
            let second = typed.hash().expect("hashed once, hashes again");
            assert_eq!(format!("{first:?}"), format!("{second:?}"));
        }
    }
});
