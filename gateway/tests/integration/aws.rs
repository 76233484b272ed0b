//! `agentkeys aws credentials` and `agentkeys run` end to end through the real aws-sdk-sts
//! against `moto_server` as the STS endpoint (moto does not check the token; the token itself is
//! checked with jose in tests/interop).

use crate::common;

use common::{CliStack, Moto, agentkeys, json, spawn_daemon};

const ROLE: &str = "arn:aws:iam::123456789012:role/agentkeys-test";

#[actix::test]
async fn credentials_and_run_through_sts() {
    let moto = Moto::start().await;
    let stack = CliStack::start().await;
    stack.login(0x55).await;
    let (h, connect) = (stack.home.path(), stack.connect.clone());

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

    // As a credential_process through the daemon: the key and session files are not read.
    let (_daemon, _) = spawn_daemon(h, &connect, "default", &[]).await;
    let profile = h.join(".agentkeys").join("default");
    for file in ["device.jwk", "session.json"] {
        std::fs::rename(profile.join(file), h.join(file)).expect("move");
    }
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
    assert!(
        creds["SecretAccessKey"]
            .as_str()
            .is_some_and(|v| !v.is_empty())
    );
    assert!(!profile.join("device.jwk").exists(), "no client made a key");
    stack.stop().await;
}
