//! Produces signatures and identifiers through the real signer pool (store, runtime, lineage
//! proof, signer) for a test K3, as JSON on stdout. `tests/interop/` checks them with ethers and
//! @polkadot, and recomputes every identifier independently.
//!
//! Usage: `interop-outputs > outputs.json`

use agentkeys_actors::crypto::omni::{Identity, child_omni, identity_omni, master_omni};
use agentkeys_actors::crypto::secret::MasterSecret;
use agentkeys_actors::crypto::wallet::derive_wallet;
use agentkeys_tests::SignerStack;
use serde_json::{Value, json};

const K3_HEX: &str = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";

fn main() {
    let out = actix::System::new().block_on(produce());
    println!("{}", serde_json::to_string_pretty(&out).expect("json"));
}

async fn produce() -> Value {
    let dir = tempfile::tempdir().expect("tempdir");
    let k3 = MasterSecret::from_hex(K3_HEX).expect("k3");
    let identity =
        identity_omni("agentkeys", Identity::Email("test@litentry.org")).expect("identity");
    let anchor = derive_wallet(&k3, &identity).expect("anchor").address();
    let master = master_omni("agentkeys", &anchor.to_string()).expect("master");
    let stack = SignerStack::start(dir.path(), k3, 2);
    let (runtime, signer) = (&stack.runtime, &stack.signer);
    stack.create(master, None, "").await;
    let hermes = child_omni(&master, "hermes").expect("label");
    let ops = child_omni(&master, "ops").expect("label");
    let bot = child_omni(&ops, "bot-1").expect("label");
    stack.create(hermes, Some(master), "hermes").await;
    stack.create(ops, Some(master), "ops").await;
    stack.create(bot, Some(ops), "bot-1").await;

    let mut actors = Vec::new();
    for path in ["", "//hermes", "//ops//bot-1"] {
        let a = signer
            .account(master, path.to_string())
            .await
            .expect("account");
        actors.push(
            json!({"path": path, "omni": a.omni.to_string(), "wallet": a.wallet.to_string(),
                           "sr25519_public": hex::encode(a.sr25519_public), "ss58": a.ss58}),
        );
    }

    let message = "hello from hermes\nline two";
    let proof = runtime.check_live(&hermes).expect("live");
    let eip191 = signer
        .sign_eip191(message.as_bytes().to_vec(), proof)
        .await
        .expect("eip191");

    let typed = json!({
        "types": {
            "EIP712Domain": [{"name": "name", "type": "string"}, {"name": "version", "type": "string"},
                             {"name": "chainId", "type": "uint256"}, {"name": "verifyingContract", "type": "address"}],
            "Person": [{"name": "name", "type": "string"}, {"name": "wallet", "type": "address"}],
            "Mail": [{"name": "from", "type": "Person"}, {"name": "to", "type": "Person[]"}, {"name": "contents", "type": "string"},
                     {"name": "amount", "type": "int64"}, {"name": "tag", "type": "bytes8"}]
        },
        "primaryType": "Mail",
        "domain": {"name": "Ether Mail", "version": "1", "chainId": 1, "verifyingContract": "0xCcCCccccCCCCcCCCCCCcCcCccCcCCCcCcccccccC"},
        "message": {"from": {"name": "Cow", "wallet": "0xCD2a3d9F938E13CD947Ec05AbC7FE734Df8DD826"},
                    "to": [{"name": "Bob", "wallet": "0xbBbBBBBbbBBBbbbBbbBbbbbBBbBbbbbBbBbbBBbB"}],
                    "contents": "Hello, Bob!", "amount": "-42", "tag": "0x0102030405060708"}
    });
    let proof = runtime.check_live(&bot).expect("live");
    let eip712 = signer
        .sign_typed_data(typed.clone(), proof)
        .await
        .expect("eip712");

    let mut txs = Vec::new();
    for tx in [
        json!({"chain_id": 1, "nonce": 7, "to": "0x1111111111111111111111111111111111111111", "value": "1000000000000000000",
               "gas_limit": 21000, "max_fee_per_gas": "30000000000", "max_priority_fee_per_gas": "1500000000"}),
        json!({"chain_id": 8453, "nonce": "0x10", "to": "0x2222222222222222222222222222222222222222", "value": 0,
               "data": "0xa9059cbb", "gas_limit": "100000", "max_fee_per_gas": 2, "max_priority_fee_per_gas": 1,
               "access_list": [{"address": "0x3333333333333333333333333333333333333333",
                                "storage_keys": ["0x0000000000000000000000000000000000000000000000000000000000000001"]}]}),
        json!({"type": 0, "chain_id": 56, "nonce": 0, "to": "0x4444444444444444444444444444444444444444", "value": "5",
               "gas_limit": 21000, "gas_price": "5000000000"}),
        json!({"chain_id": 1, "nonce": 1, "data": "0x6080604052", "gas_limit": 500000, "max_fee_per_gas": 10, "max_priority_fee_per_gas": 1}),
    ] {
        let proof = runtime.check_live(&hermes).expect("live");
        let signed = signer
            .sign_transaction(tx.clone(), proof)
            .await
            .expect("tx");
        txs.push(json!({"request": tx, "raw": format!("0x{}", hex::encode(&signed.raw)),
                        "hash": format!("0x{}", hex::encode(signed.hash)), "from": signed.from.to_string()}));
    }

    let sr_message = b"agentkeys sr25519 interop";
    let proof = runtime.check_live(&bot).expect("live");
    let sr = signer
        .sign_sr25519("//ops//bot-1".into(), sr_message.to_vec(), proof)
        .await
        .expect("sr25519");

    json!({
        "k3": K3_HEX,
        "email": "test@litentry.org",
        "anchor_wallet": anchor.to_string(),
        "master_omni": master.to_string(),
        "actors": actors,
        "eip191": {"message": message, "signature": eip191.signature.to_hex(), "signer_path": "//hermes"},
        "eip712": {"typed_data": typed, "signature": eip712.signature.to_hex(),
                   "digest": format!("0x{}", hex::encode(eip712.digest)), "address": eip712.address.to_string()},
        "transactions": txs,
        "sr25519": {"path": "//ops//bot-1", "message_hex": hex::encode(sr_message), "signature": hex::encode(sr.signature)}
    })
}
