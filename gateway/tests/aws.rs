//! `agentkeys aws credentials` and `agentkeys run` end to end through the real aws-sdk-sts
//! against `moto_server` as the STS endpoint (moto does not check the token; the token itself is
//! checked with jose in tests/interop).

mod common;

use std::os::unix::fs::OpenOptionsExt;
use std::time::Duration;

use agentkeys_gateway::config::{Config, Layer};
use agentkeys_gateway::serve;
use common::{Moto, agentkeys, json};

const ROLE: &str = "arn:aws:iam::123456789012:role/agentkeys-test";

#[actix::test]
async fn credentials_and_run_through_sts() {
    let moto = Moto::start().await;
    let data = tempfile::tempdir().expect("tempdir");
    let home = tempfile::tempdir().expect("tempdir");
    let flags = Layer {
        listen: Some("127.0.0.1:0".into()),
        metrics_listen: Some("off".into()),
        data_dir: Some(data.path().display().to_string()),
        ..Layer::default()
    };
    let config = Config::resolve(&Layer::default(), &Layer::default(), &flags).expect("config");
    let server = serve::start(config).await.expect("starts");
    let connect = format!("http://{}", server.local_addr());
    let h = home.path();
    let key_file = h.join("wallet.key");
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&key_file)
        .and_then(|mut f| {
            std::io::Write::write_all(&mut f, format!("0x{}\n", "55".repeat(32)).as_bytes())
        })
        .expect("key file");
    let key_path = key_file.display().to_string();
    assert!(
        agentkeys(h, &connect, &["login", "wallet", "--key-file", &key_path])
            .await
            .ok
    );

    let creds = json(
        &agentkeys(
            h,
            &connect,
            &[
                "aws",
                "credentials",
                "--role-arn",
                ROLE,
                "--sts-endpoint",
                &moto.url,
            ],
        )
        .await,
    );
    assert_eq!(creds["Version"], 1);
    for field in [
        "AccessKeyId",
        "SecretAccessKey",
        "SessionToken",
        "Expiration",
    ] {
        assert!(
            creds[field].as_str().is_some_and(|v| !v.is_empty()),
            "{field}: {creds}"
        );
    }
    let out = agentkeys(
        h,
        &connect,
        &[
            "run", "--aws-role", ROLE, "--sts-endpoint", &moto.url, "--", "sh", "-c",
            "test -n \"$AWS_ACCESS_KEY_ID\" && test -n \"$AWS_SESSION_TOKEN\" && test \"$AWS_REGION\" = us-east-1 && exit 7",
        ],
    )
    .await;
    assert_eq!(
        out.code,
        Some(7),
        "the child's exit code comes back: {}",
        out.stderr
    );
    let token = json(&agentkeys(h, &connect, &["oidc", "token", "--json"]).await);
    assert_eq!(token["audience"], "sts.amazonaws.com");
    let out = agentkeys(
        h,
        &connect,
        &["aws", "credentials", "--role-arn", ROLE, "--duration", "60"],
    )
    .await;
    assert!(!out.ok && out.stderr.contains("900"), "{}", out.stderr);
    server.stop(Duration::from_secs(5)).await.expect("stops");
}
