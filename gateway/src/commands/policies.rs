//! `agent policy …`, `approvals …`, and waiting for an approval after `sign`: the policy
//! commands, through the one typed client with the profile's device key and session.

use std::io::{IsTerminal, Write as _};
use std::time::Duration;

use anyhow::bail;
use serde_json::{Value, json};

use super::agents::print;
use super::{Globals, explain, read_document, session};
use crate::cli::{ApprovalsCommand, PolicyCommand, WebhookCommand};
use crate::client::Client;

/// How often a waiting `sign` asks for its approval.
const POLL: Duration = Duration::from_secs(2);

fn budgets_text(view: &Value) -> String {
    let mut lines = Vec::new();
    for b in view["budgets"].as_array().into_iter().flatten() {
        lines.push(format!(
            "budget  {} {} on chain {} per {} s: {} spent, {} left{}",
            b["owner"].as_str().map_or("?", |o| &o[..o.len().min(12)]),
            b["asset"].as_str().unwrap_or("?"),
            b["chain"],
            b["window_seconds"],
            b["spent"].as_str().unwrap_or("?"),
            b["remaining"].as_str().unwrap_or("?"),
            b["frees_at"]
                .as_str()
                .map(|t| format!(", frees at {t}"))
                .unwrap_or_default()
        ));
    }
    lines.join("\n")
}

fn policy_text(view: &Value) -> String {
    let mut out = match view["policy"].is_null() {
        true => "policy  (none)".to_owned(),
        false => format!(
            "policy  {} (set by {})",
            view["policy"],
            view["set_by"].as_str().unwrap_or("?")
        ),
    };
    for inherited in view["inherited"].as_array().into_iter().flatten() {
        out.push_str(&format!(
            "\ninherits from {}: {}",
            inherited["owner"].as_str().unwrap_or("?"),
            inherited["policy"]
        ));
    }
    let budgets = budgets_text(view);
    if !budgets.is_empty() {
        out.push('\n');
        out.push_str(&budgets);
    }
    out
}

/// `agentkeys agent policy …`.
pub async fn policy(globals: &Globals, command: &PolicyCommand) -> anyhow::Result<()> {
    let client = globals.client()?;
    let stored = session(globals, &client).await?;
    let token = stored.session.session_jwt.as_str();
    let (target, body) = match command {
        PolicyCommand::Set { target, file } => (Some(target), Some(read_document(file)?)),
        PolicyCommand::Show { target } => (target.as_ref(), None),
        PolicyCommand::Remove { target } => (Some(target), None),
    };
    let omni = super::agents::resolve(&stored, target.map(String::as_str))?;
    let path = format!("/v1/actors/{omni}/policy");
    let view: Value = match (command, body) {
        (PolicyCommand::Set { .. }, Some(body)) => client.put(&path, &body, token).await,
        (PolicyCommand::Remove { .. }, _) => client.delete(&path, token).await,
        _ => client.get(&path, Some(token)).await,
    }
    .map_err(explain)?;
    print(globals, &view, policy_text);
    Ok(())
}

fn approval_text(a: &Value) -> String {
    format!(
        "{}  {:<9} {} by {} → {} ({}) expires {}",
        a["id"].as_str().unwrap_or("?"),
        a["status"].as_str().unwrap_or("?"),
        a["route"].as_str().unwrap_or("?"),
        a["agent"].as_str().map_or("?", |o| &o[..o.len().min(12)]),
        a["recipient"].as_str().unwrap_or("-"),
        crate::notify::spends_text(&a["spends"]),
        a["expires_at"].as_str().unwrap_or("?"),
    )
}

/// `agentkeys approvals …`.
pub async fn approvals(globals: &Globals, command: &ApprovalsCommand) -> anyhow::Result<()> {
    let client = globals.client()?;
    let stored = session(globals, &client).await?;
    let token = stored.session.session_jwt.as_str();
    match command {
        ApprovalsCommand::List => {
            let list: Value = client
                .get("/v1/approvals?state=pending", Some(token))
                .await
                .map_err(explain)?;
            print(globals, &list, |l| {
                let lines: Vec<String> = l["approvals"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(approval_text)
                    .collect();
                if lines.is_empty() {
                    "(nothing waits for you)".into()
                } else {
                    lines.join("\n")
                }
            });
        }
        ApprovalsCommand::Show { id } => {
            let shown: Value = client
                .get(&format!("/v1/approvals/{id}"), Some(token))
                .await
                .map_err(explain)?;
            print(globals, &shown, approval_text);
        }
        ApprovalsCommand::Approve { id } | ApprovalsCommand::Deny { id } => {
            let verb = match command {
                ApprovalsCommand::Approve { .. } => "approve",
                _ => "deny",
            };
            let decided: Value = client
                .post(
                    &format!("/v1/approvals/{id}/{verb}"),
                    &json!({}),
                    Some(token),
                )
                .await
                .map_err(explain)?;
            print(globals, &decided, approval_text);
        }
        ApprovalsCommand::Webhook(command) => {
            let url = match command {
                WebhookCommand::Set { url } => Some(url.clone()),
                WebhookCommand::Remove => None,
            };
            let set: Value = client
                .put("/v1/approvals/webhook", &json!({ "url": url }), token)
                .await
                .map_err(explain)?;
            print(globals, &set, |s| match s["secret"].as_str() {
                Some(secret) => format!(
                    "webhook {} (version {})\nHMAC key (shown once; verify agentkeys-signature: v1=HMAC-SHA256(key, \"<agentkeys-timestamp>.<body>\")):\n{secret}",
                    s["url"].as_str().unwrap_or("?"),
                    s["version"]
                ),
                None => "webhook removed".into(),
            });
        }
    }
    Ok(())
}

/// After a signing route answered 202: prints the id (`no_wait`), or waits for the decision
/// with a progress line on stderr and returns the route's answer once approved.
pub async fn wait_for_approval(
    client: &Client,
    token: &str,
    pending: &Value,
    no_wait: bool,
    json_output: bool,
) -> anyhow::Result<Option<Value>> {
    let id = pending["approval_id"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    if no_wait {
        if json_output {
            println!("{pending}");
        } else {
            println!(
                "approval required: {id} (expires {})",
                pending["expires_at"].as_str().unwrap_or("?")
            );
        }
        return Ok(None);
    }
    let tty = std::io::stderr().is_terminal();
    let started = std::time::Instant::now();
    loop {
        let shown: Value = client
            .get(&format!("/v1/approvals/{id}"), Some(token))
            .await
            .map_err(explain)?;
        match shown["status"].as_str() {
            Some("pending") => {
                let line = format!(
                    "waiting for approval {id} ({} s, expires {})",
                    started.elapsed().as_secs(),
                    shown["expires_at"].as_str().unwrap_or("?")
                );
                if tty {
                    eprint!("\r{line}");
                } else if started.elapsed() < POLL {
                    eprintln!("{line}");
                }
                let _ = std::io::stderr().flush();
                tokio::time::sleep(POLL).await;
            }
            Some("approved") => {
                if tty {
                    eprintln!();
                }
                return Ok(Some(shown["result"].clone()));
            }
            other => {
                if tty {
                    eprintln!();
                }
                bail!("approval {id} was {}", other.unwrap_or("lost"));
            }
        }
    }
}
