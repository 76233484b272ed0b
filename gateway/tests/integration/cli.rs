//! The `agentkeys` binary as a user runs it: login with a key file and with an external
//! wallet, whoami, profiles, global flags on either side of the subcommand, and
//! `audit verify` through the admin socket and offline after the store file was edited.

use crate::common;

use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;
use std::time::Duration;

use redb::ReadableTable as _;

use agentkeys_actors::crypto::eip191::sign_message;
use agentkeys_actors::crypto::omni::master_omni;
use agentkeys_actors::crypto::wallet::WalletKey;
use agentkeys_gateway::config::{Config, Layer};
use agentkeys_gateway::serve;
use common::{CliStack, agentkeys, agentkeys_with_stdin, json};
use serde_json::Value;

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path)
        .expect("exists")
        .permissions()
        .mode()
        & 0o777
}

#[actix::test]
async fn login_whoami_profiles_and_audit_verify_through_the_binary() {
    let data = tempfile::tempdir().expect("tempdir");
    let home = tempfile::tempdir().expect("tempdir");
    let flags = Layer::default()
        .with("listen", "127.0.0.1:0")
        .with("metrics_listen", "off")
        .with("data_dir", data.path().display().to_string());
    let config = Config::resolve(&Layer::default(), &Layer::default(), &flags).expect("config");
    let server = serve::start(config).await.expect("starts");
    let connect = format!("http://{}", server.local_addr());
    let h = home.path();

    // A local key file signs the SIWE message.
    let secret = [0x42u8; 32];
    let wallet = WalletKey::from_secret(&secret).expect("key");
    let key_file = h.join("wallet.key");
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&key_file)
        .and_then(|mut f| {
            std::io::Write::write_all(&mut f, format!("0x{}\n", hex::encode(secret)).as_bytes())
        })
        .expect("key file");
    let key_path = key_file.display().to_string();
    let out = agentkeys(h, &connect, &["login", "wallet", "--key-file", &key_path]).await;
    assert!(out.ok, "{}", out.stderr);
    assert!(out.stdout.contains("logged in as master"), "{}", out.stdout);
    let profile = h.join(".agentkeys/default");
    assert_eq!(mode(&profile.join("session.json")), 0o600);
    assert_eq!(mode(&profile.join("device.jwk")), 0o600);

    let master = master_omni("agentkeys", &wallet.address().to_string()).expect("omni");
    // Global flags before and after the subcommand.
    for args in [["--json", "whoami"], ["whoami", "--json"]] {
        let me = json(&agentkeys(h, &connect, &args).await);
        assert_eq!(me["omni"], master.to_string());
        assert_eq!(me["anchor_wallet"], wallet.address().to_string());
    }
    let text = agentkeys(h, &connect, &["whoami"]).await;
    assert!(text.stdout.contains("anchor wallet"), "{}", text.stdout);

    // Another profile has no session: the error names the fix.
    let out = agentkeys(h, &connect, &["--profile", "other", "whoami"]).await;
    assert!(!out.ok);
    assert!(
        out.stderr.contains("agentkeys login wallet"),
        "{}",
        out.stderr
    );
    let out = agentkeys(h, &connect, &["whoami", "--profile", "../escape"]).await;
    assert!(
        !out.ok && out.stderr.contains("plain name"),
        "{}",
        out.stderr
    );

    // Two steps with an external wallet, in the other profile.
    let address = wallet.address().to_string();
    let challenge = json(
        &agentkeys(
            h,
            &connect,
            &[
                "login",
                "wallet",
                "--profile",
                "other",
                "--address",
                &address,
                "--print-message",
                "--json",
            ],
        )
        .await,
    );
    let message = challenge["message"].as_str().expect("message");
    let signature = sign_message(&wallet, message.as_bytes()).to_hex();
    let out = agentkeys(
        h,
        &connect,
        &[
            "--profile",
            "other",
            "login",
            "wallet",
            "--signature",
            &signature,
        ],
    )
    .await;
    assert!(out.ok, "{}", out.stderr);
    let me = json(&agentkeys(h, &connect, &["--profile", "other", "--json", "whoami"]).await);
    assert_eq!(me["omni"], master.to_string());
    assert_eq!(me["devices"], 2, "two profiles, two device bindings");

    // Audit verify through the running server's admin socket.
    let data_dir = data.path().display().to_string();
    let out = agentkeys(h, &connect, &["audit", "verify", "--data-dir", &data_dir]).await;
    assert!(out.ok, "{}\n{}", out.stdout, out.stderr);
    assert!(out.stdout.contains("intact"), "{}", out.stdout);
    server.stop(Duration::from_secs(5)).await.expect("stops");

    // Offline, after someone edited an audit row in the store file.
    let out = agentkeys(h, &connect, &["audit", "verify", "--data-dir", &data_dir]).await;
    assert!(out.ok, "offline on an intact file: {}", out.stderr);
    {
        let table: redb::TableDefinition<u64, &[u8]> = redb::TableDefinition::new("audit");
        let db = redb::Database::open(data.path().join(serve::STORE_FILE)).expect("open");
        let txn = db.begin_write().expect("write");
        {
            let mut rows = txn.open_table(table).expect("table");
            let mut row = rows.get(2).expect("get").expect("row").value().to_vec();
            let at = row.len() - 40;
            row[at] ^= 0x80;
            rows.insert(2, row.as_slice()).expect("insert");
        }
        txn.commit().expect("commit");
    }
    let out = agentkeys(h, &connect, &["audit", "verify", "--data-dir", &data_dir]).await;
    assert!(!out.ok);
    assert!(out.stdout.contains("PROBLEM"), "{}", out.stdout);
    assert!(out.stderr.contains("tampered"), "{}", out.stderr);
}

#[actix::test]
async fn login_email_shows_the_code_polls_and_stores_the_session() {
    use tokio::io::AsyncBufReadExt;
    let data = tempfile::tempdir().expect("tempdir");
    let home = tempfile::tempdir().expect("tempdir");
    let flags = Layer::default()
        .with("listen", "127.0.0.1:0")
        .with("metrics_listen", "off")
        .with("data_dir", data.path().display().to_string());
    let config = Config::resolve(&Layer::default(), &Layer::default(), &flags).expect("config");
    let server = serve::start(config).await.expect("starts");
    let connect = format!("http://{}", server.local_addr());
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_agentkeys"))
        .args(["login", "email", "grace@example.com", "--poll-ms", "20"])
        .env_clear()
        .env("HOME", home.path())
        .env("AGENTKEYS_CONNECT", &connect)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("runs");
    let stderr = child.stderr.take().expect("stderr");
    let mut lines = tokio::io::BufReader::new(stderr).lines();
    let mut code = None;
    while let Some(line) = lines.next_line().await.expect("read") {
        let trimmed = line.trim();
        if trimmed.len() == 7 && trimmed.as_bytes()[3] == b'-' {
            code = Some(trimmed.to_string());
            break;
        }
    }
    let code = code.expect("the CLI shows the confirmation code");
    // The user opens the mail (the log mailer's outbox) and enters the code on the page.
    let outbox = data.path().join("outbox");
    let mail = std::fs::read_dir(&outbox)
        .expect("outbox")
        .filter_map(Result::ok)
        .map(|e| std::fs::read_to_string(e.path()).expect("mail"))
        .find(|m| m.contains("grace@example.com"))
        .expect("the link was mailed");
    let token = mail
        .split("#t=")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .expect("token");
    let verified = reqwest::Client::new()
        .post(format!("{connect}/v1/auth/email/verify"))
        .json(&serde_json::json!({"token": token, "confirm_code": code}))
        .send()
        .await
        .expect("sent");
    assert_eq!(verified.status(), 200);
    // Collect the progress lines while the CLI finishes.
    let rest = tokio::spawn(async move {
        let mut text = String::new();
        while let Ok(Some(line)) = lines.next_line().await {
            text.push_str(&line);
            text.push('\n');
        }
        text
    });
    let out = child.wait_with_output().await.expect("exits");
    let progress = rest.await.expect("collected");
    assert!(out.status.success(), "{progress}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("logged in as master"), "{stdout}");
    let me = json(&agentkeys(home.path(), &connect, &["whoami", "--json"]).await);
    assert_eq!(me["identity"]["type"], "email");
    assert_eq!(me["identity"]["value"], "grace@example.com");
    server.stop(Duration::from_secs(5)).await.expect("stops");
}

#[actix::test]
async fn agents_link_sign_scopes_audit_and_revoke_through_the_binary() {
    let stack = CliStack::start().await;
    stack.login(0x77).await;
    let (h, connect) = (stack.home.path(), stack.connect.clone());

    let created = json(
        &agentkeys(
            h,
            &connect,
            &[
                "agent",
                "create",
                "ops",
                "--scope",
                "sign:eip191",
                "--scope",
                "actors:create",
                "--json",
            ],
        )
        .await,
    );
    assert_eq!(created["path"], "//ops");
    let code = json(&agentkeys(h, &connect, &["link-code", "issue", "//ops", "--json"]).await);
    let code = code["code"].as_str().expect("code");
    // The agent's machine: another profile; the code comes on stdin, never argv.
    let out = agentkeys_with_stdin(
        h,
        &connect,
        &["--profile", "ops", "link"],
        &format!("{code}\n"),
    )
    .await;
    assert!(out.ok, "{}", out.stderr);
    assert!(out.stdout.contains("//ops"), "{}", out.stdout);
    let signed = json(
        &agentkeys(
            h,
            &connect,
            &["--profile", "ops", "sign", "message", "hello", "--json"],
        )
        .await,
    );
    assert_eq!(signed["address"], created["wallet"]);
    let sig: agentkeys_actors::crypto::eip191::Signature = signed["signature"]
        .as_str()
        .expect("sig")
        .parse()
        .expect("sig");
    let signer = agentkeys_actors::crypto::eip191::recover(
        &agentkeys_actors::crypto::eip191::hash_message(b"hello"),
        &sig,
    )
    .expect("recover");
    assert_eq!(
        signer.to_checksum(),
        created["wallet"].as_str().expect("wallet")
    );

    let tree = json(&agentkeys(h, &connect, &["agent", "tree", "--json", "--page", "1"]).await);
    let paths: Vec<_> = tree["entries"]
        .as_array()
        .expect("entries")
        .iter()
        .map(|e| e["path"].clone())
        .collect();
    assert_eq!(paths, [serde_json::json!(""), serde_json::json!("//ops")]);
    let list = json(&agentkeys(h, &connect, &["agent", "list", "--json"]).await);
    assert_eq!(list["entries"].as_array().expect("entries").len(), 1);

    // Clearing the scopes takes effect at once; the error names the fix.
    assert!(
        agentkeys(h, &connect, &["agent", "scopes", "//ops", "--set"])
            .await
            .ok
    );
    let out = agentkeys(
        h,
        &connect,
        &["--profile", "ops", "sign", "message", "denied"],
    )
    .await;
    assert!(
        !out.ok && out.stderr.contains("scope_denied") && out.stderr.contains("fix:"),
        "{}",
        out.stderr
    );

    let tail = json(&agentkeys(h, &connect, &["audit", "tail", "--json", "--limit", "50"]).await);
    let ops: Vec<&str> = tail["rows"]
        .as_array()
        .expect("rows")
        .iter()
        .filter_map(|r| r["operation"].as_str())
        .collect();
    for expected in [
        "actor_create",
        "link_code_issue",
        "link_code_redeem",
        "sign_eip191",
        "scopes_set",
    ] {
        assert!(ops.contains(&expected), "{expected} in {ops:?}");
    }
    let out = agentkeys(h, &connect, &["agent", "revoke", "//ops"]).await;
    assert!(
        out.ok && out.stdout.contains("revoked 1 actor"),
        "{}{}",
        out.stdout,
        out.stderr
    );
    let out = agentkeys(h, &connect, &["--profile", "ops", "whoami"]).await;
    assert!(
        !out.ok && out.stderr.contains("actor_revoked"),
        "{}",
        out.stderr
    );
    stack.stop().await;
}

#[actix::test]
async fn pairing_between_two_profiles() {
    let stack = CliStack::start().await;
    stack.login(0x77).await;
    let (h, connect) = (stack.home.path(), stack.connect.clone());

    // The agent's machine (profile "worker") asks; it shows a code and its fingerprint.
    let out = agentkeys(
        h,
        &connect,
        &[
            "--profile",
            "worker",
            "pair",
            "request",
            "--no-wait",
            "--json",
        ],
    )
    .await;
    assert!(out.ok, "{}", out.stderr);
    let started: Value = out
        .stderr
        .lines()
        .find_map(|l| serde_json::from_str(l).ok())
        .expect("the request as JSON on stderr");
    let code = started["code"].as_str().expect("code");
    // The master claims and sees the same fingerprint.
    let claimed = json(
        &agentkeys(
            h,
            &connect,
            &[
                "pair",
                "claim",
                code,
                "--label",
                "worker",
                "--scope",
                "sign:eip191",
                "--json",
            ],
        )
        .await,
    );
    assert_eq!(claimed["fingerprint"], started["fingerprint"]);
    let again = agentkeys(h, &connect, &["pair", "claim", code, "--label", "other"]).await;
    assert!(
        !again.ok && again.stderr.contains("link_code_used"),
        "{}",
        again.stderr
    );
    // The agent's machine receives its session and acts as the agent.
    let polled = agentkeys(h, &connect, &["--profile", "worker", "pair", "poll"]).await;
    assert!(
        polled.ok && polled.stdout.contains("//worker"),
        "{}{}",
        polled.stdout,
        polled.stderr
    );
    let me = json(&agentkeys(h, &connect, &["--profile", "worker", "whoami", "--json"]).await);
    assert_eq!(me["path"], "//worker");
    let devices = json(&agentkeys(h, &connect, &["device", "list", "//worker", "--json"]).await);
    assert_eq!(devices["devices"].as_array().expect("list").len(), 1);
    stack.stop().await;
}

#[actix::test]
async fn exit_codes_json_errors_completions_logout_and_scope_edits() {
    let stack = CliStack::start().await;
    // Local: no session yet.
    let out = stack.run(&["whoami"]).await;
    assert_eq!(out.code, Some(1), "{}", out.stderr);
    let out = stack.run(&["whoami", "--json"]).await;
    let envelope: Value = serde_json::from_str(out.stdout.trim()).expect("envelope on stdout");
    assert_eq!(envelope["error"], "local_error");
    // Usage: clap's own code; an unknown command never exits 0.
    assert_eq!(stack.run(&["no-such-command"]).await.code, Some(2));

    stack.login(0x55).await;
    let created = json(
        &stack
            .run(&["agent", "create", "bot", "--scope", "sign:eip191", "--json"])
            .await,
    );
    assert_eq!(created["path"], "//bot");
    // Scope edits keep the rest of the set.
    let scopes = json(
        &stack
            .run(&[
                "agent",
                "scopes",
                "//bot",
                "--add",
                "sign:eip712",
                "--add",
                "sign:eip191",
                "--json",
            ])
            .await,
    );
    assert_eq!(
        scopes["scopes"],
        serde_json::json!(["sign:eip191", "sign:eip712"])
    );
    let scopes = json(
        &stack
            .run(&[
                "agent",
                "scopes",
                "//bot",
                "--remove",
                "sign:eip191",
                "--json",
            ])
            .await,
    );
    assert_eq!(scopes["scopes"], serde_json::json!(["sign:eip712"]));

    // Refused by the server: 3, and the server's envelope with --json.
    let out = stack.run(&["agent", "show", "//nobody", "--json"]).await;
    assert_eq!(out.code, Some(3), "{}", out.stderr);
    let envelope: Value = serde_json::from_str(out.stdout.trim()).expect("envelope on stdout");
    assert_eq!(envelope["error"], "not_found");
    assert!(
        envelope["request_id"]
            .as_str()
            .is_some_and(|r| !r.is_empty())
    );

    // Unreachable: 4.
    let unreachable = agentkeys(
        stack.home.path(),
        "http://127.0.0.1:9",
        &["whoami", "--json"],
    )
    .await;
    assert_eq!(unreachable.code, Some(4), "{}", unreachable.stderr);
    let envelope: Value = serde_json::from_str(unreachable.stdout.trim()).expect("envelope");
    assert_eq!(envelope["error"], "unreachable");

    // Completions and logout.
    let out = stack.run(&["completions", "bash"]).await;
    assert!(out.ok && out.stdout.contains("agentkeys"), "{}", out.stderr);
    let out = json(&stack.run(&["logout", "--json"]).await);
    assert_eq!(out["logged_out"], true);
    assert_eq!(
        stack.run(&["whoami"]).await.code,
        Some(1),
        "the session is gone"
    );
    let out = json(&stack.run(&["logout", "--json"]).await);
    assert_eq!(out["logged_out"], false);
    stack.stop().await;
}

#[actix::test]
async fn policies_and_approvals_through_the_binary() {
    let stack = CliStack::start().await;
    stack.login(0x79).await;
    let (h, connect) = (stack.home.path(), stack.connect.clone());
    let created = json(
        &agentkeys(
            h,
            &connect,
            &["agent", "create", "ops", "--scope", "sign:tx:1", "--json"],
        )
        .await,
    );
    assert_eq!(created["path"], "//ops");
    let code = json(&agentkeys(h, &connect, &["link-code", "issue", "//ops", "--json"]).await);
    let out = agentkeys_with_stdin(
        h,
        &connect,
        &["--profile", "ops", "link"],
        &format!("{}\n", code["code"].as_str().expect("code")),
    )
    .await;
    assert!(out.ok, "{}", out.stderr);

    // A TOML policy: any recipient, a person above 1000 wei.
    let policy = h.join("policy.toml");
    std::fs::write(
        &policy,
        "[tx]\nto = \"any\"\n\n[[approval.above]]\nasset = \"native\"\nchain = 1\namount = \"1000\"\n",
    )
    .expect("write");
    let set = json(
        &agentkeys(
            h,
            &connect,
            &[
                "agent",
                "policy",
                "set",
                "//ops",
                "--file",
                &policy.display().to_string(),
                "--json",
            ],
        )
        .await,
    );
    assert_eq!(set["policy"]["tx"]["to"], "any", "{set}");
    let shown = json(
        &agentkeys(
            h,
            &connect,
            &["--profile", "ops", "agent", "policy", "show", "--json"],
        )
        .await,
    );
    assert_eq!(shown["policy"], set["policy"]);

    let tx = |nonce: u64| {
        let path = h.join(format!("tx-{nonce}.json"));
        std::fs::write(
            &path,
            serde_json::json!({"chain_id": 1, "nonce": nonce, "to": "0x1111111111111111111111111111111111111111",
                "value": "5000", "gas_limit": 21000, "max_fee_per_gas": 0, "max_priority_fee_per_gas": 0})
            .to_string(),
        )
        .expect("write");
        path.display().to_string()
    };
    // --no-wait: the id, exit 0.
    let first = json(
        &agentkeys(
            h,
            &connect,
            &[
                "--profile",
                "ops",
                "sign",
                "tx",
                &tx(0),
                "--no-wait",
                "--json",
            ],
        )
        .await,
    );
    let first_id = first["approval_id"].as_str().expect("id").to_owned();

    // Waiting: the master approves while the agent's command waits, which then prints the
    // signed transaction.
    let waiting = tokio::process::Command::new(env!("CARGO_BIN_EXE_agentkeys"))
        .args(["--profile", "ops", "sign", "tx", &tx(1), "--json"])
        .env_clear()
        .env("HOME", h)
        .env("AGENTKEYS_CONNECT", &connect)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("runs");
    let second_id = loop {
        let listed = json(&agentkeys(h, &connect, &["approvals", "list", "--json"]).await);
        let other = listed["approvals"]
            .as_array()
            .expect("list")
            .iter()
            .filter_map(|a| a["id"].as_str())
            .find(|id| *id != first_id)
            .map(str::to_owned);
        if let Some(id) = other {
            break id;
        }
    };
    let approved =
        json(&agentkeys(h, &connect, &["approvals", "approve", &second_id, "--json"]).await);
    assert_eq!(approved["status"], "approved");
    let out = waiting.wait_with_output().await.expect("exits");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let signed: Value = serde_json::from_slice(&out.stdout).expect("json");
    assert!(
        signed["raw"]
            .as_str()
            .is_some_and(|r| r.starts_with("0x02")),
        "{signed}"
    );

    let denied = json(&agentkeys(h, &connect, &["approvals", "deny", &first_id, "--json"]).await);
    assert_eq!(denied["status"], "denied");
    stack.stop().await;
}

#[actix::test]
async fn identities_link_list_and_unlink_through_the_binary() {
    let stack = CliStack::start().await;
    let alice = stack.login(61).await;
    // A second wallet by key file.
    let bob = stack.key_file(62);
    let out = json(
        &stack
            .run(&["identity", "link", "wallet", "--key-file", &bob, "--json"])
            .await,
    );
    assert_eq!(out["status"], "linked");
    // A third in two steps, as with any external wallet.
    let carol = WalletKey::from_secret(&[63; 32]).expect("key");
    let address = carol.address().to_string();
    let challenge = json(
        &stack
            .run(&[
                "identity",
                "link",
                "wallet",
                "--address",
                &address,
                "--print-message",
                "--json",
            ])
            .await,
    );
    let message = challenge["message"].as_str().expect("message");
    assert!(message.contains("Link this wallet"), "{message}");
    let signature = sign_message(&carol, message.as_bytes()).to_hex();
    let out = json(
        &stack
            .run(&[
                "identity",
                "link",
                "wallet",
                "--signature",
                &signature,
                "--json",
            ])
            .await,
    );
    assert_eq!(out["value"], address);
    let list = json(&stack.run(&["identity", "list", "--json"]).await);
    let values: Vec<&str> = list["identities"]
        .as_array()
        .expect("list")
        .iter()
        .map(|i| i["value"].as_str().expect("value"))
        .collect();
    let bob_address = WalletKey::from_secret(&[62; 32])
        .expect("key")
        .address()
        .to_string();
    assert_eq!(
        values,
        [alice.address().to_string(), bob_address.clone(), address]
    );
    let out = stack
        .run(&["identity", "unlink", &format!("evm:{bob_address}")])
        .await;
    assert!(out.ok, "{}", out.stderr);
    assert!(out.stdout.contains("unlinked"), "{}", out.stdout);
    let text = stack.run(&["identity", "list"]).await;
    assert!(
        text.stdout.contains("(created the account)"),
        "{}",
        text.stdout
    );
    assert!(!text.stdout.contains(&bob_address), "{}", text.stdout);
    stack.stop().await;
}

#[actix::test]
async fn credentials_set_from_stdin_get_list_run_and_rm_through_the_binary() {
    let stack = CliStack::start().await;
    stack.login(91).await;
    let home = stack.home.path();
    let out = agentkeys_with_stdin(
        home,
        &stack.connect,
        &[
            "cred",
            "set",
            "openai",
            "--stdin",
            "--description",
            "team key",
        ],
        "sk-cli-value\n",
    )
    .await;
    assert!(out.ok, "{}", out.stderr);
    assert!(out.stdout.contains("version 1"), "{}", out.stdout);
    // Never from argv: without --file or --stdin it refuses.
    let out = stack.run(&["cred", "set", "openai"]).await;
    assert_eq!(out.code, Some(1), "{}", out.stderr);
    let list = json(&stack.run(&["cred", "list", "--json"]).await);
    assert_eq!(list["credentials"][0]["service"], "openai");
    assert_eq!(list["credentials"][0]["size"], 12);
    assert!(!list.to_string().contains("sk-cli-value"));
    let out = stack.run(&["cred", "get", "openai"]).await;
    assert_eq!(out.stdout, "sk-cli-value", "{}", out.stderr);
    // run --cred: the child sees the value in its environment; its exit code is ours.
    let out = stack
        .run(&[
            "run",
            "--cred",
            "OPENAI_API_KEY=openai",
            "--",
            "/bin/sh",
            "-c",
            "test \"$OPENAI_API_KEY\" = sk-cli-value && exit 7",
        ])
        .await;
    assert_eq!(out.code, Some(7), "{}", out.stderr);
    let out = stack
        .run(&["run", "--cred", "1BAD=openai", "--", "/bin/true"])
        .await;
    assert_eq!(out.code, Some(1), "{}", out.stderr);
    let out = stack.run(&["cred", "rm", "openai"]).await;
    assert!(out.ok, "{}", out.stderr);
    let out = stack.run(&["cred", "get", "openai"]).await;
    assert_eq!(out.code, Some(3), "refused by the server: {}", out.stderr);
    stack.stop().await;
}
