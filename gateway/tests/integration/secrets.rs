//! Secret-leak test: a real `agentkeys serve` at trace log level runs every flow that handles a
//! secret — wallet and email login, link codes, pairing, signing, OIDC tokens, refused
//! attempts — and neither its log nor any error body contains K3, a private key, a session or
//! OIDC token, a link or pairing code, an email token or a confirm code.

use crate::common;

use std::io::Read;

use agentkeys_actors::crypto::eip191::sign_message;
use agentkeys_gateway::client::{Client, ClientError};
use agentkeys_gateway::http::wallet::VerifyRequest;
use common::{PUBLIC_URL, device, wallet};
use serde_json::{Value, json};

struct Server {
    child: tokio::process::Child,
    base: String,
    log: std::path::PathBuf,
}

async fn serve(data: &std::path::Path) -> Server {
    let log = data.join("server.log");
    let file = std::fs::File::create(&log).expect("log file");
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_agentkeys"));
    agentkeys_tests::child::serve(&mut command, data, "127.0.0.1:0")
        .arg("-vv")
        .env("RUST_LOG", "trace")
        .stderr(file);
    let mut child = command.spawn().expect("starts");
    let base = agentkeys_tests::child::listening(&mut child).await;
    Server { child, base, log }
}

fn client(base: &str) -> Client {
    Client::new(PUBLIC_URL, device()).connecting_to(base)
}

/// Every secret the flows handled, and every error body they saw.
#[derive(Default)]
struct Seen {
    secrets: Vec<(String, String)>,
    error_bodies: Vec<String>,
}

impl Seen {
    fn secret(&mut self, what: &str, value: &str) {
        assert!(value.len() >= 7, "{what} is too short to search for");
        self.secrets.push((what.to_string(), value.to_string()));
    }

    fn refused<T: std::fmt::Debug>(&mut self, answer: Result<T, ClientError>) {
        match answer {
            Err(ClientError::Api { message, .. }) => self.error_bodies.push(message),
            other => panic!("expected a refusal, got {other:?}"),
        }
    }
}

async fn run_flows(base: &str, data: &std::path::Path, seen: &mut Seen) {
    // Wallet login.
    let master = client(base);
    let w = wallet(101);
    let challenge = master
        .wallet_start(&w.address().to_string(), 1)
        .await
        .expect("start");
    let session = master
        .wallet_verify(&VerifyRequest {
            message: None,
            request_id: Some(challenge.request_id.clone()),
            signature: sign_message(&w, challenge.message.as_bytes()).to_hex(),
        })
        .await
        .expect("login");
    let token = session.session_jwt.clone();
    seen.secret("master session", &token);
    seen.refused(
        master
            .wallet_verify(&VerifyRequest {
                message: None,
                request_id: Some(challenge.request_id),
                signature: "0x00".into(),
            })
            .await,
    );

    // An agent, a link code, a redemption, a reuse by another key, signing, an OIDC token.
    let created: Value = master
        .post(
            "/v1/actors",
            &json!({"label": "ops", "scopes": ["sign:eip191", "oidc:sts.amazonaws.com", "cred:read:leaky"]}),
            Some(&token),
        )
        .await
        .expect("create");
    let omni = created["omni"].as_str().expect("omni");
    let code: Value = master
        .post(
            &format!("/v1/actors/{omni}/link-codes"),
            &json!({}),
            Some(&token),
        )
        .await
        .expect("code");
    let code = code["code"].as_str().expect("code").to_string();
    seen.secret("link code", &code);
    seen.secret("link code (normalized)", &code.replace('-', ""));
    let agent = client(base);
    let agent_session: Value = agent
        .post("/v1/link/redeem", &json!({ "code": code }), None)
        .await
        .expect("redeem");
    let agent_token = agent_session["session_jwt"]
        .as_str()
        .expect("token")
        .to_string();
    seen.secret("agent session", &agent_token);
    seen.refused(
        client(base)
            .post::<_, Value>("/v1/link/redeem", &json!({ "code": code }), None)
            .await,
    );
    let _: Value = agent
        .post(
            "/v1/sign/eip191",
            &json!({"message": "hello"}),
            Some(&agent_token),
        )
        .await
        .expect("sign");
    let oidc: Value = agent
        .post("/v1/oidc/token", &json!({}), Some(&agent_token))
        .await
        .expect("oidc");
    seen.secret("oidc token", oidc["jwt"].as_str().expect("jwt"));
    // A credential: written by the master, read by the agent, refused where it must be.
    let value = "sk-leak-canary-5e1d9b7c3a";
    use base64::Engine as _;
    let value_b64 = base64::engine::general_purpose::STANDARD.encode(value);
    seen.secret("credential value", value);
    seen.secret("credential value (base64)", &value_b64);
    let _: Value = master
        .put(
            "/v1/credentials/leaky",
            &json!({"value_b64": value_b64, "inject": {"base_url": "https://api.example.com", "header": "X-Api-Key", "template": "{}"}}),
            &token,
        )
        .await
        .expect("put");
    let got: Value = agent
        .get("/v1/credentials/leaky", Some(&agent_token))
        .await
        .expect("read");
    assert_eq!(got["value_b64"], value_b64);
    seen.refused(
        agent
            .put::<_, Value>(
                "/v1/credentials/leaky",
                &json!({"value_b64": value_b64}),
                &agent_token,
            )
            .await,
    );
    seen.refused(
        agent
            .get::<Value>("/v1/credentials/leaky?version=7", Some(&agent_token))
            .await,
    );
    let refreshed = agent.refresh(&agent_token).await.expect("refresh");
    seen.secret("refreshed session", &refreshed.session_jwt);
    // A stolen token with another key.
    seen.refused(client(base).whoami(&agent_token).await);

    // Pairing.
    let machine = client(base);
    let started: Value = machine
        .post("/v1/pairing/request", &json!({}), None)
        .await
        .expect("pair");
    let pair_code = started["code"].as_str().expect("code").to_string();
    seen.secret("pairing code", &pair_code);
    let _: Value = master
        .post(
            "/v1/pairing/claim",
            &json!({"code": pair_code, "label": "paired"}),
            Some(&token),
        )
        .await
        .expect("claim");
    seen.refused(
        master
            .post::<_, Value>(
                "/v1/pairing/claim",
                &json!({"code": pair_code, "label": "again"}),
                Some(&token),
            )
            .await,
    );

    // Email login with the log mailer: the token only in the outbox file.
    let emailer = client(base);
    let email = emailer
        .email_request("leak@example.com")
        .await
        .expect("request");
    seen.secret("confirm code", &email.confirm_code);
    let mut mail = String::new();
    std::fs::File::open(data.join(format!("outbox/{}.eml", email.request_id)))
        .and_then(|mut f| f.read_to_string(&mut mail))
        .expect("outbox");
    let email_token = mail
        .split("#t=")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .expect("token")
        .to_string();
    seen.secret("email token", &email_token);
    let http = reqwest::Client::new();
    let wrong = http
        .post(format!("{base}/v1/auth/email/verify"))
        .json(&json!({"token": email_token, "confirm_code": "ZZZ-ZZZ"}))
        .send()
        .await
        .expect("sent");
    seen.error_bodies.push(wrong.text().await.expect("body"));
    let ok = http
        .post(format!("{base}/v1/auth/email/verify"))
        .json(&json!({"token": email_token, "confirm_code": email.confirm_code}))
        .send()
        .await
        .expect("sent");
    assert_eq!(ok.status(), 200);
    let status = emailer
        .email_status(&email.request_id)
        .await
        .expect("status");
    seen.secret(
        "email session",
        &status.session.expect("session").session_jwt,
    );
}

#[actix::test]
async fn no_secret_reaches_the_log_or_an_error_body() {
    let data = tempfile::tempdir().expect("tempdir");
    let mut server = serve(data.path()).await;
    let mut seen = Seen::default();
    run_flows(&server.base, data.path(), &mut seen).await;

    let k3 = std::fs::read_to_string(data.path().join("keys/k3.key")).expect("k3");
    seen.secret("K3", k3.trim());
    for set in ["session", "oidc", "audit"] {
        for entry in std::fs::read_dir(data.path().join("keys").join(set)).expect("dir") {
            let path = entry.expect("entry").path();
            if path.extension().is_some_and(|e| e == "pk8") {
                let der = std::fs::read(&path).expect("key");
                use base64::Engine;
                seen.secret(&format!("{set} key (hex)"), &hex::encode(&der));
                seen.secret(
                    &format!("{set} key (base64)"),
                    &base64::engine::general_purpose::STANDARD.encode(&der),
                );
            }
        }
    }
    server.child.kill().await.expect("stopped");
    let log = std::fs::read_to_string(&server.log).expect("log");
    assert!(
        log.contains(" TRACE ") && log.contains("request{request_id="),
        "trace logging was on: {log}"
    );
    assert!(seen.error_bodies.len() >= 5);
    for (what, secret) in &seen.secrets {
        assert!(
            !log.contains(secret.as_str()),
            "{what} appears in the server log"
        );
        for body in &seen.error_bodies {
            assert!(
                !body.contains(secret.as_str()),
                "{what} appears in an error body: {body}"
            );
        }
    }
}
