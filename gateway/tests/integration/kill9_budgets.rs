//! Spends survive `kill -9`: the real `agentkeys serve` binary, signatures against a budget in
//! flight when it is killed, then, after a restart, the budget's counter equals exactly the
//! spends of the signature rows in the audit chain (they commit in one transaction), and
//! every acknowledged signature is among them.

use crate::common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use common::{ChildServer, client_for as connect, wallet};
use serde_json::{Value, json};

#[actix::test]
async fn spends_survive_kill_9_and_match_the_audit_rows() {
    let data = tempfile::tempdir().expect("tempdir");
    let listen = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .to_string();
    let base = format!("http://{listen}");
    let server = ChildServer::spawn_on(data.path(), &listen, &[], &[]).await;

    let master = connect(&base);
    let token = master
        .wallet_login(&wallet(0x5b), 1)
        .await
        .expect("login")
        .session_jwt;
    let bot: Value = master
        .post(
            "/v1/actors",
            &json!({"label": "bot", "scopes": ["sign:tx:1"]}),
            Some(&token),
        )
        .await
        .expect("create");
    let omni = bot["omni"].as_str().expect("omni").to_owned();
    let policy = json!({"tx": {"to": "any"},
        "budgets": [{"asset": "native", "chain": 1, "window_seconds": 86400, "max": "1000000000"}]});
    let _: Value = master
        .put(&format!("/v1/actors/{omni}/policy"), &policy, &token)
        .await
        .expect("policy");
    let code: Value = master
        .post(
            &format!("/v1/actors/{omni}/link-codes"),
            &json!({}),
            Some(&token),
        )
        .await
        .expect("code");
    let agent = Arc::new(connect(&base));
    let session: Value = agent
        .post("/v1/link/redeem", &json!({"code": code["code"]}), None)
        .await
        .expect("redeem");
    let agent_token = Arc::new(session["session_jwt"].as_str().expect("token").to_owned());

    // 64 signatures of 1000 wei each; the server dies after 16 are acknowledged.
    let acked = Arc::new(AtomicUsize::new(0));
    let kicked = Arc::new(tokio::sync::Notify::new());
    let requests: Vec<_> = (0..64u64)
        .map(|nonce| {
            let (agent, agent_token, acked, kicked) =
                (agent.clone(), agent_token.clone(), acked.clone(), kicked.clone());
            tokio::spawn(async move {
                let tx = json!({"tx": {"chain_id": 1, "nonce": nonce, "to": "0x1111111111111111111111111111111111111111",
                    "value": "1000", "gas_limit": 21000, "max_fee_per_gas": 0, "max_priority_fee_per_gas": 0}});
                let signed: Result<Value, _> = agent
                    .post("/v1/sign/transaction", &tx, Some(agent_token.as_str()))
                    .await;
                if signed.is_ok() && acked.fetch_add(1, Ordering::SeqCst) + 1 == 16 {
                    kicked.notify_one();
                }
            })
        })
        .collect();
    kicked.notified().await;
    server.kill().await;
    for r in requests {
        let _ = r.await;
    }
    let acknowledged = acked.load(Ordering::SeqCst);
    assert!(acknowledged >= 16);

    let server = ChildServer::spawn_on(data.path(), &listen, &[], &[]).await;
    let shown: Value = master
        .get(&format!("/v1/actors/{omni}/policy"), Some(&token))
        .await
        .expect("policy");
    let spent: u64 = shown["budgets"][0]["spent"]
        .as_str()
        .and_then(|s| s.parse().ok())
        .expect("spent");
    let rows: Value = master
        .get("/v1/audit?limit=1000", Some(&token))
        .await
        .expect("audit");
    let signatures: Vec<&Value> = rows["rows"]
        .as_array()
        .expect("rows")
        .iter()
        .filter(|r| r["operation"] == "sign_tx" && r["target"] == omni.as_str())
        .collect();
    let recorded: u64 = signatures
        .iter()
        .map(|r| {
            r["spend"][0]["amount"]
                .as_str()
                .and_then(|a| a.parse::<u64>().ok())
                .unwrap_or(0)
        })
        .sum();
    assert_eq!(spent, recorded, "the counter and the audit rows agree");
    assert_eq!(spent, signatures.len() as u64 * 1000);
    assert!(
        signatures.len() >= acknowledged,
        "{} rows for {acknowledged} acknowledged signatures",
        signatures.len()
    );
    server.kill().await;
}
