//! Signer benchmarks (release build): each operation bare (the crypto function) and through
//! the signer handle (the pool's queue hop, shared state, caches), medians of batch means.
//!
//! ```text
//! cargo bench -p agentkeys-actors --bench signer
//! ```

#![allow(missing_docs, clippy::unwrap_used, reason = "benchmark binary")]

use std::time::{Duration, Instant};

use agentkeys_actors::crypto::eip191;
use agentkeys_actors::crypto::eip712::TypedData;
use agentkeys_actors::crypto::omni::child_omni;
use agentkeys_actors::crypto::secret::MasterSecret;
use agentkeys_actors::crypto::sr25519;
use agentkeys_actors::crypto::tx::TxRequest;
use agentkeys_actors::crypto::wallet::derive_wallet;
use agentkeys_actors::signer::KeySetName;
use agentkeys_runtime::Omni;
use agentkeys_tests::SignerStack;
use serde_json::{Value, json};

const BATCH: usize = 50;
const BATCHES: usize = 21;

/// Median over batches of the mean time per call.
fn bare(mut f: impl FnMut(usize)) -> Duration {
    let mut means = Vec::with_capacity(BATCHES);
    let mut i = 0;
    for _ in 0..BATCHES {
        let t = Instant::now();
        for _ in 0..BATCH {
            f(i);
            i += 1;
        }
        means.push(t.elapsed() / BATCH as u32);
    }
    means.sort();
    means[BATCHES / 2]
}

async fn handle<F: Future<Output = ()>>(mut f: impl FnMut(usize) -> F) -> Duration {
    let mut means = Vec::with_capacity(BATCHES);
    let mut i = 0;
    for _ in 0..BATCHES {
        let t = Instant::now();
        for _ in 0..BATCH {
            f(i).await;
            i += 1;
        }
        means.push(t.elapsed() / BATCH as u32);
    }
    means.sort();
    means[BATCHES / 2]
}

fn mail() -> Value {
    json!({
        "types": {
            "Person": [{"name": "name", "type": "string"}, {"name": "wallet", "type": "address"}],
            "Mail": [{"name": "from", "type": "Person"}, {"name": "to", "type": "Person"}, {"name": "contents", "type": "string"}]
        },
        "primaryType": "Mail",
        "domain": {"name": "Ether Mail", "version": "1", "chainId": 1, "verifyingContract": "0xCcCCccccCCCCcCCCCCCcCcCccCcCCCcCcccccccC"},
        "message": {"from": {"name": "Cow", "wallet": "0xCD2a3d9F938E13CD947Ec05AbC7FE734Df8DD826"},
                    "to": {"name": "Bob", "wallet": "0xbBbBBBBbbBBBbbbBbbBbbbbBBbBbbbbBbBbbBBbB"}, "contents": "Hello, Bob!"}
    })
}

fn tx() -> Value {
    json!({"chain_id": 1, "nonce": 3, "to": "0x1111111111111111111111111111111111111111", "value": "1000",
           "gas_limit": 21000, "max_fee_per_gas": "30000000000", "max_priority_fee_per_gas": "1000000000"})
}

fn us(d: Duration) -> String {
    format!("{:.1} µs", d.as_secs_f64() * 1e6)
}

fn row(name: &str, b: Duration, h: Duration) {
    println!(
        "| {name} | {} | {} | {:.2} |",
        us(b),
        us(h),
        h.as_secs_f64() / b.as_secs_f64()
    );
}

fn main() {
    let k3 = MasterSecret::from_bytes([7; 32]);
    let master = Omni::from_bytes([0x4d; 32]);
    let agent = child_omni(&master, "hermes").unwrap();
    let key = derive_wallet(&k3, &agent).unwrap();
    let typed = TypedData::from_json(mail()).unwrap();
    let tx_req = TxRequest::from_json(tx()).unwrap();

    let b_wallet_cold = bare(|i| {
        let omni = Omni::from_bytes([(i % 251) as u8; 32]);
        let _ = derive_wallet(&k3, &omni).unwrap();
    });
    let b_eip191 = bare(|_| {
        let _ = eip191::sign_message(&key, b"hello agentkeys");
    });
    let b_eip191_cold = bare(|i| {
        let omni = Omni::from_bytes([(i % 251) as u8; 32]);
        let _ = eip191::sign_message(&derive_wallet(&k3, &omni).unwrap(), b"hello agentkeys");
    });
    let b_es256 = {
        use aws_lc_rs::rand::SystemRandom;
        use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair};
        let rng = SystemRandom::new();
        let der = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).unwrap();
        let pair =
            EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, der.as_ref()).unwrap();
        let input = [b'x'; 300];
        bare(|_| {
            let _ = pair.sign(&rng, &input).unwrap();
        })
    };
    let b_eip712 = bare(|_| {
        let d = typed.hash().unwrap().digest;
        let _ = eip191::sign_hash(&key, &d);
    });
    let b_tx = bare(|_| {
        let _ = tx_req.sign(&key).unwrap();
    });
    let b_sr = bare(|_| {
        let _ = sr25519::derive_actor(&k3, &master, "//hermes")
            .unwrap()
            .sign(b"remark");
    });

    let dir = tempfile::tempdir().unwrap();
    actix::System::new().block_on(async move {
        let stack = SignerStack::start(dir.path(), MasterSecret::from_bytes([7; 32]), 2);
        stack.create(master, None, "").await;
        stack.create(agent, Some(master), "hermes").await;
        let (runtime, signer) = (stack.runtime, stack.signer);
        let jwk: jsonwebtoken::jwk::Jwk = serde_json::from_value(signer.public_jwks(KeySetName::Session)[0].clone()).unwrap();
        let decoding = jsonwebtoken::DecodingKey::from_jwk(&jwk).unwrap();
        let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::ES256);
        validation.set_audience(&["agentkeys"]);
        let claims = json!({"sub": "agentkeys:actor:x", "aud": "agentkeys", "exp": 4_000_000_000u64});

        let proof_only = bare(|_| {
            let _ = runtime.check_live(&agent).unwrap();
        });
        let h_wallet_cold = handle(|i| {
            let s = signer.clone();
            async move {
                let m = Omni::from_bytes([(i % 200) as u8 + 1; 32]);
                let _ = s.account(m, String::new()).await.unwrap();
            }
        })
        .await;
        let h_eip191 = handle(|_| {
            let (s, p) = (signer.clone(), runtime.check_live(&agent).unwrap());
            async move {
                s.sign_eip191(b"hello agentkeys".to_vec(), p).await.unwrap();
            }
        })
        .await;
        let h_eip712 = handle(|_| {
            let (s, p) = (signer.clone(), runtime.check_live(&agent).unwrap());
            async move {
                s.sign_typed_data(mail(), p).await.unwrap();
            }
        })
        .await;
        let h_tx = handle(|_| {
            let (s, p) = (signer.clone(), runtime.check_live(&agent).unwrap());
            async move {
                s.sign_transaction(tx(), p).await.unwrap();
            }
        })
        .await;
        let h_sr = handle(|_| {
            let (s, p) = (signer.clone(), runtime.check_live(&agent).unwrap());
            async move {
                s.sign_sr25519("//hermes".into(), b"remark".to_vec(), p).await.unwrap();
            }
        })
        .await;
        let token = signer.sign_jwt(KeySetName::Session, json!({"typ": "at+jwt"}), claims.clone()).await.unwrap();
        let h_es256 = handle(|_| {
            let (s, c) = (signer.clone(), claims.clone());
            async move {
                s.sign_jwt(KeySetName::Session, json!({"typ": "at+jwt"}), c).await.unwrap();
            }
        })
        .await;
        let b_verify = bare(|_| {
            let _ = jsonwebtoken::decode::<Value>(&token, &decoding, &validation).unwrap();
        });
        // Throughput with many requests in flight: what a loaded gateway sees.
        let n = 4000;
        let t = Instant::now();
        let tasks: Vec<_> = (0..64)
            .map(|_| {
                let (s, r) = (signer.clone(), runtime.clone());
                actix::spawn(async move {
                    for _ in 0..n / 64 {
                        let p = r.check_live(&agent).unwrap();
                        s.sign_eip191(b"hello agentkeys".to_vec(), p).await.unwrap();
                    }
                })
            })
            .collect();
        for task in tasks {
            task.await.unwrap();
        }
        let per_sec = (n / 64 * 64) as f64 / t.elapsed().as_secs_f64();

        println!("## signer (2 pool threads; handle = the pool's queue round trip from one caller)");
        println!("| operation | bare | through the handle | handle ÷ bare |");
        println!("|---|---|---|---|");
        row("wallet derivation, cold (HKDF + scalar + address)", b_wallet_cold, h_wallet_cold);
        row("EIP-191 sign, wallet cached (the handle caches wallets)", b_eip191, h_eip191);
        println!("| EIP-191 sign with a cold wallet derivation | {} | — | — |", us(b_eip191_cold));
        row("EIP-712 hash + sign (Mail)", b_eip712, h_eip712);
        row("EIP-1559 transaction sign", b_tx, h_tx);
        row("sr25519 derive //hermes + sign", b_sr, h_sr);
        row("ES256 sign (bare: aws-lc over 300 bytes; handle: a K1 JWT)", b_es256, h_es256);
        println!("| ES256 JWT verify (jsonwebtoken, aws-lc) | {} | — | — |", us(b_verify));
        println!(
            "\nthroughput, 64 EIP-191 requests in flight through the handle: {per_sec:.0}/s; \
             floor from the bare figure on 2 threads: {:.0}/s (ratio {:.2})",
            2.0 / b_eip191.as_secs_f64(),
            per_sec / (2.0 / b_eip191.as_secs_f64())
        );
        println!("\nreference: the lineage proof (`check_live`: one store read + index check), included in every handle row: {}", us(proof_only));
        println!("note: `account` through the handle derives wallet + sr25519 (the handle row is not only the wallet)");
        runtime.shutdown(Duration::from_secs(5)).await;
    });
    eip712_at_the_limits();
}

/// The slowest EIP-712 documents that pass the limits and fit in a 1 MiB body: the time one
/// holds a signer thread (hash) and the gateway's dry run (check_work).
fn eip712_at_the_limits() {
    let wide: Vec<Value> = (0..64)
        .map(|f| json!({"name": format!("f{f}"), "type": "uint256"}))
        .collect();
    let instance: serde_json::Map<String, Value> =
        (0..64).map(|f| (format!("f{f}"), json!(0))).collect();
    let rows: Vec<Value> = (0..2)
        .map(|_| {
            json!(
                (0..750)
                    .map(|_| Value::Object(instance.clone()))
                    .collect::<Vec<_>>()
            )
        })
        .collect();
    let doc = json!({
        "types": {"W": wide, "M": [{"name": "a", "type": "W[][]"}]},
        "primaryType": "M", "domain": {"name": "x"}, "message": {"a": rows}
    });
    let bytes = serde_json::to_vec(&doc).unwrap().len();
    let td = TypedData::from_json(doc).unwrap();
    let mut hash_times = Vec::new();
    let mut check_times = Vec::new();
    for _ in 0..9 {
        let t = Instant::now();
        td.check_work().unwrap();
        check_times.push(t.elapsed());
        let t = Instant::now();
        td.hash().unwrap();
        hash_times.push(t.elapsed());
    }
    hash_times.sort();
    check_times.sort();
    println!(
        "\nEIP-712 near the limits ({bytes} bytes, {} values): hash {:.1} ms, dry run {:.1} ms (medians of 9)",
        1 + 2 + 1500 * 65,
        hash_times[4].as_secs_f64() * 1000.0,
        check_times[4].as_secs_f64() * 1000.0
    );
}
