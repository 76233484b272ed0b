//! Labels, paths, omnis and scopes: what validates derives, and what parses prints back.
#![no_main]

use agentkeys_actors::crypto::omni::{child_omni, validate_label};
use agentkeys_actors::crypto::sr25519::path_labels;
use agentkeys_actors::scope;
use agentkeys_runtime::Omni;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let parent: Omni = format!("0x{}", "00".repeat(32)).parse().expect("omni");
    if validate_label(text).is_ok() {
        let child = child_omni(&parent, text).expect("a valid label derives");
        assert_ne!(child, parent);
    }
    if let Ok(labels) = path_labels(text) {
        for label in labels {
            assert!(validate_label(label).is_ok(), "path label {label:?} invalid");
        }
    }
    if let Ok(omni) = text.parse::<Omni>() {
        assert_eq!(omni.to_string().parse::<Omni>().expect("printed omni parses"), omni);
    }
    let _ = scope::validate(text);
    let scopes: Vec<String> = text.split('\n').map(str::to_string).collect();
    if let Ok(normal) = scope::normalize(&scopes) {
        assert_eq!(scope::normalize(&normal).expect("normal form is valid"), normal);
    }
});
