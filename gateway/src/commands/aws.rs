//! `oidc token`, `aws credentials`, `run`: the actor's OIDC token exchanged for AWS credentials
//! with `AssumeRoleWithWebIdentity` (aws-sdk-sts, an unsigned call: the token is the only
//! credential). Nothing is cached on disk: credentials live in this process and the child's
//! environment only.

use std::os::unix::ffi::OsStrExt as _;

use anyhow::{Context as _, bail};
use serde_json::{Value, json};

use super::{Globals, explain, session};
use crate::cli::{AssumeArgs, OidcCommand, RunArgs};

/// Mints an OIDC token for `audience`.
async fn mint(globals: &Globals, audience: &str, ttl: u64) -> anyhow::Result<Value> {
    let client = globals.client()?;
    let stored = session(globals, &client).await?;
    client
        .post(
            "/v1/oidc/token",
            &json!({"audience": audience, "ttl_seconds": ttl}),
            Some(&stored.session.session_jwt),
        )
        .await
        .map_err(explain)
}

/// `agentkeys oidc token`.
pub async fn oidc(globals: &Globals, command: &OidcCommand) -> anyhow::Result<()> {
    let OidcCommand::Token { audience, ttl } = command;
    let minted = mint(globals, audience, *ttl).await?;
    if globals.json {
        println!("{minted}");
    } else {
        println!("{}", minted["jwt"].as_str().unwrap_or_default());
    }
    Ok(())
}

/// AWS credentials for `role_arn`, as credential_process JSON.
pub async fn credentials(
    globals: &Globals,
    role_arn: &str,
    assume: &AssumeArgs,
) -> anyhow::Result<Value> {
    if !(900..=43_200).contains(&assume.duration) {
        bail!("--duration must be between 900 and 43200 seconds");
    }
    // The token only has to outlive the exchange.
    let minted = mint(globals, "sts.amazonaws.com", 300).await?;
    let token = minted["jwt"]
        .as_str()
        .context("the gateway returned no token")?;
    let mut config = aws_sdk_sts::Config::builder()
        .behavior_version(aws_sdk_sts::config::BehaviorVersion::latest())
        .region(aws_sdk_sts::config::Region::new(assume.region.clone()));
    if let Some(endpoint) = &assume.sts_endpoint {
        config = config.endpoint_url(endpoint);
    }
    let sts = aws_sdk_sts::Client::from_conf(config.build());
    let session_name = format!(
        "agentkeys-{}",
        minted["sub"]
            .as_str()
            .and_then(|s| s.rsplit(':').next())
            .unwrap_or("actor")
            .chars()
            .take(32)
            .collect::<String>()
    );
    let answer = sts
        .assume_role_with_web_identity()
        .role_arn(role_arn)
        .role_session_name(session_name)
        .web_identity_token(token)
        .duration_seconds(assume.duration)
        .send()
        .await
        .map_err(|e| {
            anyhow::anyhow!(
                "AssumeRoleWithWebIdentity for {role_arn} failed: {}\n  fix: check the role's trust policy (audience sts.amazonaws.com, sub, the OIDC provider for {}); see docs/aws.md",
                aws_sdk_sts::error::DisplayErrorContext(&e),
                globals.gateway
            )
        })?;
    let creds = answer
        .credentials()
        .context("STS answered without credentials")?;
    Ok(json!({
        "Version": 1,
        "AccessKeyId": creds.access_key_id(),
        "SecretAccessKey": creds.secret_access_key(),
        "SessionToken": creds.session_token(),
        "Expiration": creds.expiration().to_string(),
    }))
}

/// `agentkeys aws credentials`: prints the credential_process JSON.
pub async fn aws_credentials(
    globals: &Globals,
    role_arn: &str,
    assume: &AssumeArgs,
) -> anyhow::Result<()> {
    println!("{}", credentials(globals, role_arn, assume).await?);
    Ok(())
}

/// `agentkeys run [--aws-role ARN] [--cred ENV=service …] -- cmd args…`: the child gets
/// `AWS_*` and the named credentials in its environment; its exit code is ours.
pub async fn run(globals: &Globals, args: &RunArgs) -> anyhow::Result<std::process::ExitCode> {
    let (program, rest) = args
        .command
        .split_first()
        .context("give the command after --")?;
    let mut command = tokio::process::Command::new(program);
    command.args(rest);
    if let Some(role) = &args.aws_role {
        let creds = credentials(globals, role, &args.assume).await?;
        let text = |k: &str| creds[k].as_str().unwrap_or_default().to_string();
        command
            .env("AWS_ACCESS_KEY_ID", text("AccessKeyId"))
            .env("AWS_SECRET_ACCESS_KEY", text("SecretAccessKey"))
            .env("AWS_SESSION_TOKEN", text("SessionToken"))
            .env("AWS_CREDENTIAL_EXPIRATION", text("Expiration"))
            .env("AWS_REGION", &args.assume.region);
    }
    for (name, value) in super::credentials::for_env(globals, &args.cred).await? {
        command.env(name, std::ffi::OsStr::from_bytes(&value));
    }
    let status = command
        .status()
        .await
        .with_context(|| format!("cannot run {program}"))?;
    Ok(std::process::ExitCode::from(
        status
            .code()
            .and_then(|c| u8::try_from(c).ok())
            .unwrap_or(1),
    ))
}
