//! A data directory written by an earlier build (before the domain ledger moved out of the
//! runtime crate) opens unchanged: the same master omni for the same wallet, the same tree,
//! wallets, device bindings and audit chain, and the audit log verifies.
//!
//! The fixture in `tests/fixtures/store-v1/` was written by `write_the_fixture`. That test is
//! ignored because it writes a new fixture rather than checking one; `scripts/store-fixture.sh
//! DIR` runs it.

use crate::common;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use common::{Stack, link, master, start};
use serde_json::{Value, json};

fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/store-v1")
}

/// Copies the fixture (git keeps no modes: key files get 0600, folders 0700 again).
fn copy(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("dir");
    std::fs::set_permissions(to, std::fs::Permissions::from_mode(0o700)).expect("mode");
    for entry in std::fs::read_dir(from).expect("fixture") {
        let entry = entry.expect("entry");
        let target = to.join(entry.file_name());
        if entry.file_type().expect("type").is_dir() {
            copy(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).expect("copy");
            std::fs::set_permissions(&target, std::fs::Permissions::from_mode(0o600))
                .expect("mode");
        }
    }
}

async fn get(stack: &Stack, who: &common::Who, path: &str) -> Value {
    let (status, body) = who.call(stack, "GET", path, None).await;
    assert_eq!(status, 200, "{path}: {body}");
    body
}

/// What the fixture holds, as the API shows it.
async fn describe(stack: &Stack, boss: &common::Who, ops: &str) -> Value {
    let tree = get(stack, boss, &format!("/v1/actors/{}/tree", boss.omni)).await;
    let entries: Vec<Value> = tree["entries"]
        .as_array()
        .expect("entries")
        .iter()
        .map(|e| json!({"label": e["label"], "path": e["path"], "status": e["status"], "omni": e["omni"]}))
        .collect();
    let agent = get(stack, boss, &format!("/v1/actors/{ops}")).await;
    let devices = get(stack, boss, &format!("/v1/actors/{ops}/devices")).await;
    let jkts: Vec<Value> = devices["devices"]
        .as_array()
        .expect("devices")
        .iter()
        .map(|d| d["jkt"].clone())
        .collect();
    json!({
        "master": boss.omni,
        "tree": entries,
        "ops": {"omni": ops, "wallet": agent["wallet"], "ss58": agent["ss58"], "scopes": agent["scopes"], "jkts": jkts},
    })
}

#[actix::test]
#[ignore = "writes a fixture instead of checking one: run by scripts/store-fixture.sh"]
async fn write_the_fixture() {
    let dir = PathBuf::from(std::env::var("AGENTKEYS_WRITE_FIXTURE").expect("a target dir"));
    let stack = start(&dir, None).await;
    let boss = master(&stack, 77).await;
    let body = json!({"label": "ops", "scopes": ["actors:create", "sign:eip191"]});
    let (status, ops) = boss.call(&stack, "POST", "/v1/actors", Some(body)).await;
    assert_eq!(status, 201, "{ops}");
    let ops = ops["omni"].as_str().expect("omni").to_string();
    let agent = link(&stack, &boss, &ops).await;
    let body = json!({"label": "bot-1", "scopes": ["sign:eip191"]});
    let (status, _) = agent.call(&stack, "POST", "/v1/actors", Some(body)).await;
    assert_eq!(status, 201);
    let body = json!({"message": "written before the split"});
    let (status, _) = agent
        .call(&stack, "POST", "/v1/sign/eip191", Some(body))
        .await;
    assert_eq!(status, 200);
    let (status, gone) = boss
        .call(&stack, "POST", "/v1/actors", Some(json!({"label": "gone"})))
        .await;
    assert_eq!(status, 201);
    let path = format!("/v1/actors/{}/revoke", gone["omni"].as_str().expect("omni"));
    assert_eq!(boss.call(&stack, "POST", &path, None).await.0, 200);
    let mut expected = describe(&stack, &boss, &ops).await;
    let audit = get(&stack, &boss, "/v1/audit?limit=1000").await;
    expected["audit_rows"] = json!(audit["rows"].as_array().map(Vec::len));
    stack
        .server
        .stop(std::time::Duration::from_secs(5))
        .await
        .expect("stopped");
    std::fs::write(
        dir.join("expected.json"),
        serde_json::to_vec_pretty(&expected).expect("json"),
    )
    .expect("written");
}

#[actix::test]
async fn a_store_written_by_an_earlier_build_opens_unchanged() {
    let dir = tempfile::tempdir().expect("tempdir");
    copy(&fixture(), dir.path());
    let expected: Value = serde_json::from_slice(
        &std::fs::read(dir.path().join("expected.json")).expect("expected.json"),
    )
    .expect("json");
    let stack = start(dir.path(), None).await;
    let boss = master(&stack, 77).await;
    assert_eq!(
        boss.omni, expected["master"],
        "the same wallet is the same master"
    );
    let ops = expected["ops"]["omni"].as_str().expect("omni");
    let mut now = describe(&stack, &boss, ops).await;
    let audit = get(&stack, &boss, "/v1/audit?limit=1000").await;
    let rows = audit["rows"].as_array().expect("rows").len();
    // This login appended its own rows after the fixture's.
    assert!(rows > expected["audit_rows"].as_u64().expect("n") as usize);
    now["audit_rows"] = expected["audit_rows"].clone();
    assert_eq!(now, expected);
    let verify = agentkeys_gateway::admin::AdminRequest::AuditVerify;
    let verified = agentkeys_gateway::admin::call(dir.path(), &verify)
        .await
        .expect("verified");
    assert_eq!(verified["ok"], true, "{verified}");
}
