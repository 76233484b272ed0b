//! Transaction requests: parsing and signing arbitrary JSON never panics; a signed
//! transaction hashes to its `hash` and is signed by the key that signed it.
#![no_main]

use agentkeys_actors::crypto::tx::TxRequest;
use agentkeys_actors::crypto::wallet::{WalletKey, keccak256};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(value) = serde_json::from_slice::<serde_json::Value>(data) else {
        return;
    };
    let Ok(request) = TxRequest::from_json(value) else {
        return;
    };
    let key = WalletKey::from_secret(&[7u8; 32]).expect("valid scalar");
    if let Ok(signed) = request.sign(&key) {
        assert!(!signed.raw.is_empty());
        assert_eq!(keccak256(&signed.raw), signed.hash);
        assert_eq!(signed.from, key.address());
    }
});
