//! The admin socket with the real `agentkeys admin` command: list masters, status, revoke a
//! master (its subtree goes with it), lift a quarantine, refusals.

use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use agentkeys_gateway::config::{Config, Layer};
use agentkeys_gateway::serve;
use agentkeys_runtime::Omni;
use agentkeys_runtime::Timestamp;
use agentkeys_runtime::store::CreateActor;
use serde_json::Value;

async fn admin(data: &std::path::Path, args: &[&str]) -> (bool, Value, String) {
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_agentkeys"))
        .arg("admin")
        .arg("--data-dir")
        .arg(data)
        .args(args)
        .env_remove("AGENTKEYS_DATA_DIR")
        .output()
        .await
        .expect("runs");
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    let answer = serde_json::from_str(stdout.trim()).unwrap_or(Value::Null);
    (
        out.status.success(),
        answer,
        String::from_utf8_lossy(&out.stderr).to_string(),
    )
}

#[actix::test]
async fn the_host_administrator_lists_inspects_and_revokes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let flags = Layer::default()
        .with("listen", "127.0.0.1:0")
        .with("metrics_listen", "off")
        .with("data_dir", data.display().to_string());
    let server = serve::start(
        Config::resolve(&Layer::default(), &Layer::default(), &flags).expect("config"),
    )
    .await
    .expect("starts");
    let socket = data.join("admin.sock");
    assert_eq!(
        std::fs::metadata(&socket)
            .expect("socket")
            .permissions()
            .mode()
            & 0o777,
        0o600
    );

    let runtime = server.runtime();
    let (m1, m2, child) = (
        Omni::from_bytes([1; 32]),
        Omni::from_bytes([2; 32]),
        Omni::from_bytes([3; 32]),
    );
    let t = Timestamp::from_millis(0);
    for (omni, parent, label) in [(m1, None, ""), (m2, None, ""), (child, Some(m1), "bot")] {
        runtime
            .create(CreateActor {
                omni,
                parent,
                label: label.into(),
                created_at: t,
                origin: Default::default(),
                scopes: Vec::new(),
            })
            .await
            .expect("created");
    }

    let (ok, answer, _) = admin(&data, &["masters"]).await;
    assert!(ok, "{answer}");
    let listed: Vec<&str> = answer["masters"]
        .as_array()
        .expect("list")
        .iter()
        .filter_map(|m| m["omni"].as_str())
        .collect();
    assert_eq!(listed, vec![m1.to_string(), m2.to_string()]);

    let (ok, answer, _) = admin(&data, &["revoke", &m1.to_string()]).await;
    assert!(ok && answer["new"] == true, "{answer}");
    let (_, again, _) = admin(&data, &["revoke", &format!("0x{m1}")]).await;
    assert_eq!(again["new"], false, "idempotent, 0x accepted");
    let (ok, status, _) = admin(&data, &["status", &child.to_string()]).await;
    assert!(ok);
    assert_eq!(
        (status["status"].as_str(), status["revoked_by"].as_str()),
        (Some("revoked"), Some(m1.to_string().as_str()))
    );
    let (_, answer, _) = admin(
        &data,
        &["masters", "--limit", "1", "--after", &m1.to_string()],
    )
    .await;
    assert_eq!(answer["masters"][0]["status"], "active");

    let (ok, answer, _) = admin(&data, &["lift-quarantine", &m2.to_string()]).await;
    assert!(ok && answer["lifted"] == false, "{answer}");
    let (ok, answer, stderr) =
        admin(&data, &["revoke", &Omni::from_bytes([9; 32]).to_string()]).await;
    assert!(!ok && answer["error"] == "not_found", "{answer} {stderr}");
    let (ok, answer, _) = admin(&data, &["status", "nope"]).await;
    assert!(!ok && answer["error"] == "invalid_request", "{answer}");

    server.stop(Duration::from_secs(5)).await.expect("stops");
    assert!(!socket.exists(), "the socket is removed on shutdown");
    let (ok, _, stderr) = admin(&data, &["masters"]).await;
    assert!(
        !ok && stderr.contains("is `agentkeys serve` running"),
        "{stderr}"
    );
}
