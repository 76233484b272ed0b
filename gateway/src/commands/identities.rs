//! `agentkeys login oauth2` and `agentkeys identity …` (docs/cli.md).

use anyhow::bail;
use serde_json::json;

use super::agents::print;
use super::{Globals, explain, logged_in, session, show_email_code, wait_for, wallet_proof};
use crate::cli::{IdentityCommand, IdentityLinkCommand, LoginOAuth2Args};
use crate::client::Client;
use crate::http::confirm::LoginStatus;
use crate::http::email::{EmailRequest, EmailStarted};
use crate::http::identities::{IdentityList, Linked};
use crate::http::oauth2::{OAuthStart, OAuthStarted};

/// Opens `url` in a browser where this machine has one (a desktop session); never fails.
fn open_browser(url: &str) -> bool {
    let desktop = std::env::var_os("DISPLAY").is_some()
        || std::env::var_os("WAYLAND_DISPLAY").is_some()
        || cfg!(target_os = "macos");
    if !desktop {
        return false;
    }
    let opener = if cfg!(target_os = "macos") {
        "open"
    } else {
        "xdg-open"
    };
    std::process::Command::new(opener)
        .arg(url)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .is_ok()
}

/// Shows the provider URL and the code, opens a browser if asked and possible, then waits.
async fn run_provider_flow(
    globals: &Globals,
    client: &Client,
    args: &LoginOAuth2Args,
    started: OAuthStarted,
) -> anyhow::Result<LoginStatus> {
    if globals.json {
        eprintln!(
            "{}",
            json!({
                "authorization_url": started.authorization_url,
                "confirm_code": started.confirm_code,
                "request_id": started.request_id,
            })
        );
    } else {
        eprintln!(
            "Sign in with {} at:\n\n    {}\n\nthen enter this confirmation code on the page it sends you to:\n\n    {}\n",
            args.provider, started.authorization_url, started.confirm_code
        );
    }
    if !args.no_browser && open_browser(&started.authorization_url) && !globals.json {
        eprintln!("(opened in your browser)");
    }
    let path = format!("/v1/auth/oauth2/status/{}", started.request_id);
    wait_for(
        globals,
        &started.expires_at,
        args.poll_ms,
        "the provider sign-in",
        || client.get::<LoginStatus>(&path, None),
    )
    .await
}

/// `agentkeys login oauth2 --provider NAME`.
pub async fn login_oauth2(globals: &Globals, args: &LoginOAuth2Args) -> anyhow::Result<()> {
    let client = globals.direct_client()?;
    let started: OAuthStarted = client
        .post(
            "/v1/auth/oauth2/start",
            &OAuthStart {
                provider: args.provider.clone(),
            },
            None,
        )
        .await
        .map_err(explain)?;
    let status = run_provider_flow(globals, &client, args, started).await?;
    let Some(session) = status.session else {
        bail!("the server answered {} without a session", status.status);
    };
    logged_in(globals, session)
}

/// `agentkeys identity …`.
pub async fn identity(globals: &Globals, command: &IdentityCommand) -> anyhow::Result<()> {
    let client = globals.client()?;
    let stored = session(globals, &client).await?;
    let token = stored.session.session_jwt.as_str();
    match command {
        IdentityCommand::List => {
            let list: IdentityList = client
                .get("/v1/identities", Some(token))
                .await
                .map_err(explain)?;
            print(globals, &serde_json::to_value(&list)?, |_| {
                list.identities
                    .iter()
                    .map(|i| {
                        let created = if i.created_with {
                            "  (created the account)"
                        } else {
                            ""
                        };
                        format!("{}:{}  linked {}{created}", i.kind, i.value, i.linked_at)
                    })
                    .collect::<Vec<_>>()
                    .join("\n")
            });
            Ok(())
        }
        IdentityCommand::Unlink { identity } => {
            let Some((kind, value)) = identity.split_once(':') else {
                bail!("give the identity as TYPE:VALUE, e.g. email:bob@example.com");
            };
            let path = format!(
                "/v1/identities/{}/{}",
                encode_segment(kind),
                encode_segment(value)
            );
            let done: Linked = client.delete(&path, token).await.map_err(explain)?;
            report(globals, &done)
        }
        IdentityCommand::Link(IdentityLinkCommand::Wallet(args)) => {
            let Some(request) = wallet_proof(globals, &client, args, Some(token)).await? else {
                return Ok(());
            };
            let done: Linked = client
                .post("/v1/identities/wallet/verify", &request, Some(token))
                .await
                .map_err(explain)?;
            report(globals, &done)
        }
        IdentityCommand::Link(IdentityLinkCommand::Email(args)) => {
            let started: EmailStarted = client
                .post(
                    "/v1/identities/email/request",
                    &EmailRequest {
                        email: args.email.clone(),
                    },
                    Some(token),
                )
                .await
                .map_err(explain)?;
            show_email_code(globals, &args.email, &started);
            let path = format!("/v1/auth/email/status/{}", started.request_id);
            wait_for(
                globals,
                &started.expires_at,
                args.poll_ms,
                "the link to be opened",
                || client.get::<LoginStatus>(&path, None),
            )
            .await?;
            linked(globals, "email", args.email.trim())
        }
        IdentityCommand::Link(IdentityLinkCommand::Oauth2(args)) => {
            let started: OAuthStarted = client
                .post(
                    "/v1/identities/oauth2/start",
                    &OAuthStart {
                        provider: args.provider.clone(),
                    },
                    Some(token),
                )
                .await
                .map_err(explain)?;
            run_provider_flow(globals, &client, args, started).await?;
            linked(globals, "provider", &args.provider)
        }
    }
}

fn report(globals: &Globals, done: &Linked) -> anyhow::Result<()> {
    print(globals, &serde_json::to_value(done)?, |_| {
        format!("{} {}:{}", done.status, done.kind, done.value)
    });
    Ok(())
}

fn linked(globals: &Globals, what: &str, value: &str) -> anyhow::Result<()> {
    print(
        globals,
        &json!({"status": "linked", "via": what, "value": value}),
        |_| format!("linked ({what} {value}); `agentkeys identity list` shows it"),
    );
    Ok(())
}

/// Percent-encodes a path segment (everything but unreserved characters).
fn encode_segment(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}
