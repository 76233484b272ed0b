//! The SES mailer against `moto_server`: readiness names the missing sender identity; once it
//! exists, a magic link goes out through aws-sdk-sesv2, is read back from moto, and completes
//! a login. The gateway runs as a child process with the AWS credentials in its environment.

use crate::common;

use aws_sdk_sesv2::config::{BehaviorVersion, Credentials, Region};
use common::{ChildServer, Moto, client_for};
use serde_json::{Value, json};

const SENDER: &str = "keys@agentkeys.test";

fn ses_args(moto: &Moto) -> Vec<String> {
    [
        "--mailer",
        "ses",
        "--mail-from",
        SENDER,
        "--ses-region",
        "us-east-1",
        "--ses-endpoint",
        &moto.url,
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

const AWS_ENV: [(&str, &str); 2] = [
    ("AWS_ACCESS_KEY_ID", "testing"),
    ("AWS_SECRET_ACCESS_KEY", "testing"),
];

async fn readiness(base: &str) -> (u16, Value) {
    let response = reqwest::get(format!("{base}/readyz")).await.expect("sent");
    let status = response.status().as_u16();
    (status, response.json().await.expect("json"))
}

fn mailer_check(ready: &Value) -> Value {
    ready["checks"]
        .as_array()
        .expect("checks")
        .iter()
        .find(|c| c["name"] == "mailer")
        .cloned()
        .expect("a mailer check")
}

#[actix::test]
async fn ses_mailer_sends_a_link_that_completes_a_login() {
    let moto = Moto::start().await;
    let data = tempfile::tempdir().expect("tempdir");
    let args = ses_args(&moto);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();

    // No sender identity yet: not ready, and the check says what to create.
    let server = ChildServer::spawn(data.path(), &args, &AWS_ENV).await;
    let (status, ready) = readiness(&server.base).await;
    assert_eq!(status, 503, "{ready}");
    let check = mailer_check(&ready);
    assert_eq!(check["ok"], false);
    let detail = check["detail"].as_str().expect("detail");
    assert!(
        detail.contains(SENDER) && detail.contains("create and verify"),
        "{detail}"
    );
    server.kill().await;

    // The operator creates the identity (here with the same SDK, against moto).
    let config = aws_sdk_sesv2::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new("us-east-1"))
        .endpoint_url(&moto.url)
        .credentials_provider(Credentials::new("testing", "testing", None, None, "test"))
        .build();
    aws_sdk_sesv2::Client::from_conf(config)
        .create_email_identity()
        .email_identity(SENDER)
        .send()
        .await
        .expect("identity created");

    let server = ChildServer::spawn(data.path(), &args, &AWS_ENV).await;
    let (status, ready) = readiness(&server.base).await;
    assert_eq!(status, 200, "{ready}");
    assert_eq!(mailer_check(&ready)["ok"], true);

    let client = client_for(&server.base);
    let started = client
        .email_request("frank@example.com")
        .await
        .expect("link sent");
    let sent = moto.data().await;
    let messages = sent["ses"]["Message"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let message = messages
        .iter()
        .find(|m| m.to_string().contains("frank@example.com"))
        .unwrap_or_else(|| panic!("moto received the message: {sent}"));
    assert_eq!(message["source"], SENDER);
    let body = message["body"].as_str().expect("body");
    let token = body
        .split("/auth/email/landing#t=")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .expect("the link in the body");
    let response = reqwest::Client::new()
        .post(format!("{}/v1/auth/email/verify", server.base))
        .json(&json!({"token": token, "confirm_code": started.confirm_code}))
        .send()
        .await
        .expect("sent");
    assert_eq!(response.status(), 200);
    let status = client
        .email_status(&started.request_id)
        .await
        .expect("status");
    assert_eq!(status.status, "verified");
    let session = status.session.expect("a session");
    let me = client.whoami(&session.session_jwt).await.expect("whoami");
    assert_eq!(me.identity.expect("identity").value, "frank@example.com");
    server.kill().await;
}
