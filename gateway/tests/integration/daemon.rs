//! `agentkeys daemon`: two CLI processes sign through one daemon with one binding and without
//! the key file; the session refreshes across its expiry (injected clock, in process); another
//! uid is refused by the socket; more local event readers than the gateway's per-actor cap share
//! the daemon's one stream; a revocation stops the daemon's service and says why.

use crate::common;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use agentkeys_actors::crypto::eip191::{Signature, hash_message, recover};
use agentkeys_gateway::client::{Client, DeviceKey};
use agentkeys_gateway::commands::daemon::{self, DaemonStatus, Options};
use agentkeys_gateway::commands::{Globals, StoredSession};
use common::{CliStack, PUBLIC_URL, agentkeys, agentkeys_with_stdin, json, spawn_daemon};

fn profile(home: &Path, name: &str) -> PathBuf {
    home.join(".agentkeys").join(name)
}

/// A reqwest client speaking to the daemon's socket.
fn local(socket: &Path) -> reqwest::Client {
    reqwest::Client::builder()
        .unix_socket(socket)
        .build()
        .expect("client")
}

/// A master with an agent `bot` (EIP-191 allowed) linked in profile `bot`.
async fn master_and_bot(stack: &CliStack) -> String {
    stack.login(0x71).await;
    let (h, c) = (stack.home.path(), stack.connect.as_str());
    let created = json(
        &agentkeys(
            h,
            c,
            &["agent", "create", "bot", "--scope", "sign:eip191", "--json"],
        )
        .await,
    );
    let code = json(&agentkeys(h, c, &["link-code", "issue", "//bot", "--json"]).await);
    let out = agentkeys_with_stdin(
        h,
        c,
        &["--profile", "bot", "link"],
        &format!("{}\n", code["code"].as_str().expect("code")),
    )
    .await;
    assert!(out.ok, "{}", out.stderr);
    created["omni"].as_str().expect("omni").to_string()
}

#[actix::test]
async fn two_processes_sign_through_one_daemon_with_one_binding_and_no_key_file() {
    let stack = CliStack::start().await;
    let bot = master_and_bot(&stack).await;
    let (h, c) = (stack.home.path(), stack.connect.as_str());
    let (_daemon, _) = spawn_daemon(h, c, "bot", &[]).await;
    let dir = profile(h, "bot");
    use std::os::unix::fs::PermissionsExt as _;
    let mode = std::fs::metadata(dir.join(daemon::SOCKET))
        .expect("socket")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    // Take the key and the session away: the clients can only succeed through the daemon.
    let hidden = h.join("hidden");
    std::fs::create_dir(&hidden).expect("dir");
    for file in ["device.jwk", "session.json"] {
        std::fs::rename(dir.join(file), hidden.join(file)).expect("move");
    }
    let sign = |text: &'static str| async move {
        agentkeys(
            h,
            c,
            &["--profile", "bot", "--json", "sign", "message", text],
        )
        .await
    };
    let (a, b) = tokio::join!(sign("first process"), sign("second process"));
    let me = json(&agentkeys(h, c, &["--profile", "bot", "--json", "whoami"]).await);
    assert_eq!(me["omni"], bot.as_str());
    for (out, text) in [(a, "first process"), (b, "second process")] {
        let signed = json(&out);
        let hex_sig = signed["signature"].as_str().expect("signature");
        let mut bytes = [0u8; 65];
        hex::decode_to_slice(hex_sig.trim_start_matches("0x"), &mut bytes).expect("65 bytes");
        let address = recover(&hash_message(text.as_bytes()), &Signature(bytes)).expect("recovers");
        assert_eq!(
            address.to_string().to_lowercase(),
            me["wallet"].as_str().expect("wallet").to_lowercase()
        );
    }
    assert!(!dir.join("device.jwk").exists(), "no client created a key");
    let devices = json(&agentkeys(h, c, &["--profile", "bot", "--json", "device", "list"]).await);
    let live = devices["devices"]
        .as_array()
        .expect("devices")
        .iter()
        .filter(|d| d["deleted_at"].is_null())
        .count();
    assert_eq!(live, 1, "one binding for every process: {devices}");
    // Without the daemon (and without the key) the same command has nothing to sign with.
    let direct = agentkeys(
        h,
        c,
        &["--profile", "bot", "--no-daemon", "sign", "message", "x"],
    )
    .await;
    assert!(!direct.ok);
    // The session routes are the daemon's alone.
    let refused = local(&dir.join(daemon::SOCKET))
        .post(format!(
            "{}/v1/session/refresh",
            agentkeys_gateway::client::DAEMON_BASE
        ))
        .json(&serde_json::json!({}))
        .send()
        .await
        .expect("answer");
    assert_eq!(refused.status(), 403);
}

#[actix::test]
async fn another_uid_is_refused() {
    let stack = CliStack::start().await;
    master_and_bot(&stack).await;
    let (h, c) = (stack.home.path(), stack.connect.as_str());
    // Allow a uid other than ours: our own requests must then be refused by SO_PEERCRED.
    let (_daemon, _) = spawn_daemon(h, c, "bot", &["--allow-uid", "4242421"]).await;
    let socket = profile(h, "bot").join(daemon::SOCKET);
    let status = local(&socket)
        .get(format!(
            "{}/daemon/status",
            agentkeys_gateway::client::DAEMON_BASE
        ))
        .send()
        .await
        .expect("answer");
    assert_eq!(status.status(), 403);
    let body: serde_json::Value = status.json().await.expect("json");
    assert_eq!(body["error"], "peer_not_allowed");
    let out = agentkeys(
        h,
        c,
        &["--profile", "bot", "--json", "sign", "message", "x"],
    )
    .await;
    assert_eq!(out.code, Some(3), "{} {}", out.stdout, out.stderr);
    assert!(out.stdout.contains("peer_not_allowed"), "{}", out.stdout);

    // As root: a process of another uid cannot even connect to the 0600 socket.
    use std::os::unix::fs::MetadataExt as _;
    if std::fs::metadata(h).expect("home").uid() == 0 {
        let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_agentkeys"))
            .args(["--json", "--daemon-socket"])
            .arg(&socket)
            .args(["sign", "message", "x"])
            .env_clear()
            .env("HOME", "/nonexistent")
            .uid(65534)
            .gid(65534)
            .output()
            .await
            .expect("runs");
        assert!(!out.status.success());
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(stdout.contains("unreachable"), "{stdout}");
    }
}

#[actix::test]
async fn a_revocation_stops_the_daemon_and_local_readers_share_its_one_stream() {
    let stack = CliStack::start().await;
    let bot = master_and_bot(&stack).await;
    let (h, c) = (stack.home.path(), stack.connect.as_str());
    let (_daemon, mut stderr) = spawn_daemon(h, c, "bot", &[]).await;
    let socket = profile(h, "bot").join(daemon::SOCKET);
    let client = local(&socket);
    // Six readers, more than the gateway's four streams per actor: the daemon holds one.
    let mut readers = Vec::new();
    for _ in 0..6 {
        let reader = client
            .get(format!(
                "{}/v1/events",
                agentkeys_gateway::client::DAEMON_BASE
            ))
            .send()
            .await
            .expect("stream");
        assert_eq!(reader.status(), 200);
        readers.push(reader);
    }
    let out = agentkeys(h, c, &["agent", "revoke", &bot]).await;
    assert!(out.ok, "{}", out.stderr);
    let said = tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            match stderr.next_line().await {
                Ok(Some(line)) if line.contains("stopped serving") => return line,
                Ok(Some(_)) => {}
                _ => panic!("the daemon ended without saying why"),
            }
        }
    })
    .await
    .expect("the daemon stops at the revocation");
    assert!(said.contains("actor_revoked"), "{said}");
    // Every reader saw the revocation and then the end, with the reason.
    for mut reader in readers {
        let mut text = String::new();
        while let Ok(Some(chunk)) = reader.chunk().await {
            text.push_str(&String::from_utf8_lossy(&chunk));
        }
        assert!(text.contains("event: actor_revoke"), "{text}");
        assert!(text.contains("event: closed"), "{text}");
        assert!(text.contains("actor_revoked"), "{text}");
    }
    let status: DaemonStatus = client
        .get(format!(
            "{}/daemon/status",
            agentkeys_gateway::client::DAEMON_BASE
        ))
        .send()
        .await
        .expect("status")
        .json()
        .await
        .expect("json");
    assert_eq!(status.state, "stopped");
    assert_eq!(status.reason.as_deref(), Some("actor_revoked"));
    let out = agentkeys(h, c, &["--profile", "bot", "sign", "message", "after"]).await;
    assert_eq!(out.code, Some(3));
    assert!(out.stderr.contains("actor_revoked"), "{}", out.stderr);
    assert!(
        out.stderr.contains("daemon stopped serving"),
        "{}",
        out.stderr
    );
}

#[actix::test]
async fn the_session_is_refreshed_across_its_expiry_once_for_all_callers() {
    let dir = tempfile::tempdir().expect("tempdir");
    let stack = common::start(dir.path(), None).await;
    let clock: Arc<dyn agentkeys_runtime::Clock> = Arc::new(stack.clock.clone());
    let home = tempfile::tempdir().expect("home");
    let profile_dir = profile(home.path(), "default");
    let key = DeviceKey::load_or_create(&profile_dir).expect("key");
    let direct = Client::new(PUBLIC_URL, key)
        .connecting_to(&stack.base)
        .with_clock(clock.clone());
    let wallet = common::wallet(0x72);
    let session = direct.wallet_login(&wallet, 1).await.expect("login");
    let first_expiry = session.expires_at.clone();
    let stored = StoredSession {
        gateway: PUBLIC_URL.into(),
        session,
    };
    std::fs::write(
        profile_dir.join("session.json"),
        serde_json::to_vec(&stored).expect("json"),
    )
    .expect("write");
    let globals = Globals {
        gateway: PUBLIC_URL.into(),
        connect: Some(stack.base.clone()),
        profile: profile_dir.clone(),
        json: true,
        daemon_socket: None,
        no_daemon: false,
    };
    let running = daemon::start(
        &globals,
        Options {
            socket: None,
            allow_uid: Vec::new(),
            clock: clock.clone(),
        },
    )
    .await
    .expect("daemon");
    let through = Client::via_daemon(&profile_dir.join(daemon::SOCKET)).expect("client");
    let me: serde_json::Value = through.get("/v1/whoami", None).await.expect("whoami");
    assert_eq!(me["omni"], stored.session.omni.as_str());
    assert_eq!(running.status().await.refreshes, 0);

    // Past the expiry: the next callers wait on one refresh and go on.
    let expires_ms = agentkeys_actors::crypto::rfc3339::parse(&first_expiry).expect("time");
    let now_ms = stack.now() * 1000;
    stack.clock.advance(Duration::from_millis(
        u64::try_from(expires_ms - now_ms + 5_000).expect("ahead"),
    ));
    let body = serde_json::json!({"message": "after expiry"});
    let (a, b) = tokio::join!(
        through.post::<_, serde_json::Value>("/v1/sign/eip191", &body, None),
        through.get::<serde_json::Value>("/v1/whoami", None)
    );
    a.expect("signed after the expiry");
    b.expect("whoami after the expiry");
    let status = running.status().await;
    assert_eq!(status.refreshes, 1, "one refresh for both callers");
    assert_eq!(status.state, "serving");
    assert!(
        status.session.session_jwt.is_empty(),
        "the token never leaves"
    );
    let saved: StoredSession =
        serde_json::from_slice(&std::fs::read(profile_dir.join("session.json")).expect("read"))
            .expect("json");
    assert_ne!(
        saved.session.expires_at, first_expiry,
        "the refreshed session is saved"
    );
    running.shutdown().await.expect("stops");
    assert!(
        !profile_dir.join(daemon::SOCKET).exists(),
        "the socket is removed"
    );
    stack.stop().await;
}
