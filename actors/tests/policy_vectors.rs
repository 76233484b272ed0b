//! The policy classifier against requests built with ethers (tests/interop/gen-policy-vectors.mjs):
//! ERC-20 calls encoded with `Interface.encodeFunctionData`, EIP-2612, DAI and Permit2 typed
//! data. For each, the server must find the token, amount, recipient and unlimited flag that
//! ethers decodes, and hash the typed data to ethers' digest.

use agentkeys_actors::crypto::eip712::TypedData;
use agentkeys_actors::crypto::tx::TxRequest;
use agentkeys_actors::policy::document::{parse_address, parse_amount};
use agentkeys_actors::policy::{Asset, classify};
use serde_json::Value;

#[test]
fn requests_built_with_ethers_are_classified_as_ethers_decodes_them() {
    let vectors: Vec<Value> =
        serde_json::from_str(include_str!("vectors/policy.json")).expect("vectors");
    assert_eq!(vectors.len(), 14);
    for v in &vectors {
        let name = v["name"].as_str().expect("name");
        let op = match v["route"].as_str() {
            Some("/v1/sign/transaction") => {
                classify::transaction(&TxRequest::from_json(v["body"]["tx"].clone()).expect(name))
            }
            Some("/v1/sign/eip712") => {
                let document = &v["body"]["typed_data"];
                let digest = TypedData::from_json(document.clone())
                    .and_then(|td| td.hash())
                    .expect(name)
                    .digest;
                assert_eq!(
                    format!("0x{}", hex::encode(digest)),
                    v["digest"].as_str().expect("digest"),
                    "{name}: digest"
                );
                classify::typed_data(document)
            }
            other => panic!("{name}: route {other:?}"),
        };
        let expect = &v["expect"];
        assert!(op.recognized_token_op, "{name}");
        assert_eq!(
            op.unlimited,
            expect["unlimited"].as_bool().expect("flag"),
            "{name}"
        );
        assert_eq!(
            op.recipient,
            parse_address(expect["recipient"].as_str().expect("recipient")),
            "{name}"
        );
        let chain = expect["chain"].as_u64().expect("chain");
        let spent = |token: &str| {
            let asset = Asset::Token(parse_address(token).expect("token"));
            op.spends
                .iter()
                .find(|s| s.asset == asset && s.chain == chain)
                .map(|s| s.amount)
        };
        let amount = |text: &Value| parse_amount(text.as_str().expect("amount"));
        assert_eq!(
            spent(expect["token"].as_str().expect("token")),
            amount(&expect["amount"]),
            "{name}"
        );
        if let Some(also) = expect.get("also") {
            assert_eq!(
                spent(also["token"].as_str().expect("token")),
                amount(&also["amount"]),
                "{name}"
            );
        }
    }
}
