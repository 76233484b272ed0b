//! Parsers of untrusted input never panic and refuse what they cannot read: SIWE text,
//! labels and paths, signatures, typed data and transaction JSON.

use agentkeys_actors::crypto::eip191::Signature;
use agentkeys_actors::crypto::eip712::TypedData;
use agentkeys_actors::crypto::omni::{path_omni, validate_label};
use agentkeys_actors::crypto::siwe::SiweMessage;
use agentkeys_actors::crypto::tx::TxRequest;
use agentkeys_runtime::Omni;
use proptest::prelude::*;

const SIWE: &str = "127.0.0.1:8090 wants you to sign in with your Ethereum account:\n\
0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed\n\nHi\n\nURI: http://127.0.0.1:8090\nVersion: 1\n\
Chain ID: 1\nNonce: abcdefgh12\nIssued At: 2026-11-29T10:00:00Z\nResources:\n- https://a.b/c";

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn siwe_parser_survives_mutations(cut in 0usize..400, insert in "[\\PC\n]{0,8}") {
        let at = cut.min(SIWE.len());
        let at = (0..=at).rev().find(|i| SIWE.is_char_boundary(*i)).unwrap_or(0);
        let mutated = format!("{}{}{}", &SIWE[..at], insert, &SIWE[at..]);
        if let Ok(m) = SiweMessage::parse(&mutated) {
            // Whatever parses serializes back to exactly what was parsed.
            prop_assert_eq!(m.to_text(), mutated.strip_suffix('\n').unwrap_or(&mutated));
        }
    }

    #[test]
    fn labels_paths_and_signatures_never_panic(s in "\\PC{0,80}") {
        let _ = validate_label(&s);
        let _ = path_omni(&Omni::from_bytes([1; 32]), &s);
        let _ = s.parse::<Signature>();
        let _ = s.parse::<Omni>();
    }

    #[test]
    fn json_inputs_never_panic(s in "[\\[\\]{}\",:0-9a-zA-Z_ .-]{0,200}") {
        if let Ok(value) = serde_json::from_str::<serde_json::Value>(&s) {
            if let Ok(td) = TypedData::from_json(value.clone()) {
                let _ = td.hash();
            }
            let _ = TxRequest::from_json(value);
        }
    }
}

/// The amplification of the availability report: `typeHash` is computed once per type per
/// document, and the document's total work is bounded, so it is refused by the dry run before
/// any hashing.
#[test]
fn eip712_work_is_bounded_per_document() {
    use agentkeys_actors::crypto::eip712::{MAX_HASHED_BYTES, TypedDataError};
    let attack = agentkeys_tests::eip712_closure_document(59, 1024);
    assert!(
        serde_json::to_vec(&attack).expect("json").len() < 1 << 20,
        "fits in a body"
    );
    let td = TypedData::from_json(attack).expect("parses");
    assert!(matches!(td.check_work(), Err(TypedDataError::Limit(_))));
    assert!(matches!(td.hash(), Err(TypedDataError::Limit(_))));

    // A smaller document of the same shape is fine: each type is encoded once.
    let td =
        TypedData::from_json(agentkeys_tests::eip712_closure_document(4, 1024)).expect("parses");
    let work = td.check_work().expect("within the limits");
    assert!(work < MAX_HASHED_BYTES);
    let hashed = td.hash().expect("hashes");
    let again = td.hash().expect("hashes");
    assert_eq!(hashed, again, "deterministic");
}
