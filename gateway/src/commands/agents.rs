//! `agent …`, `link-code issue`, `link`, `sign …`, `audit tail`: the agent commands, all through
//! the one typed client with the profile's device key and session.

use std::io::{BufRead, IsTerminal, Read, Write};
use std::path::Path;

use agentkeys_actors::crypto::omni::path_omni;
use anyhow::{Context as _, bail};
use serde_json::{Value, json};

use super::{Globals, StoredSession, explain, save_session, session};
use crate::cli::{AgentCommand, LinkArgs, LinkCodeCommand, SignArgs, SignCommand};
use crate::client::Client;

/// Resolves a target: an omni, or a path below the session's master (`//ops//bot-1`).
pub(crate) fn resolve(stored: &StoredSession, target: Option<&str>) -> anyhow::Result<String> {
    let Some(target) = target else {
        return Ok(stored.session.omni.clone());
    };
    if target.starts_with("//") {
        let master = stored
            .session
            .master_omni
            .parse()
            .context("the session names no master")?;
        return Ok(path_omni(&master, target)
            .with_context(|| format!("{target:?} is not a path like //ops//bot-1"))?
            .to_string());
    }
    let omni: agentkeys_runtime::Omni = target
        .parse()
        .with_context(|| format!("{target:?} is neither an omni (64 hex) nor a path (//label)"))?;
    Ok(omni.to_string())
}

pub(crate) fn print(globals: &Globals, value: &Value, text: impl FnOnce(&Value) -> String) {
    if globals.json {
        println!("{value}");
    } else {
        println!("{}", text(value));
    }
}

fn describe_actor(v: &Value) -> String {
    let s = |k: &str| v[k].as_str().unwrap_or("").to_string();
    let path = if s("path").is_empty() {
        "(master)".into()
    } else {
        s("path")
    };
    let mut out = format!(
        "omni            {}\npath            {path}\nstatus          {}",
        s("omni"),
        s("status")
    );
    if let Some(at) = v["revoked_at"].as_str() {
        out.push_str(&format!(" at {at} (by {})", s("revoked_by")));
    }
    let scopes: Vec<&str> = v["scopes"]
        .as_array()
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    out.push_str(&format!(
        "\nscopes          {}\nwallet          {}\nsr25519 public  {}\nss58            {}",
        if scopes.is_empty() {
            "(none)".into()
        } else {
            scopes.join(" ")
        },
        s("wallet"),
        s("sr25519_public"),
        s("ss58")
    ));
    out
}

/// `agentkeys agent …`.
pub async fn agent(globals: &Globals, command: &AgentCommand) -> anyhow::Result<()> {
    let client = globals.client()?;
    let stored = session(globals, &client).await?;
    let token = stored.session.session_jwt.as_str();
    match command {
        AgentCommand::Policy(command) => super::policies::policy(globals, command).await?,
        AgentCommand::Create {
            label,
            parent,
            scopes,
        } => {
            let parent = resolve(&stored, parent.as_deref())?;
            let body = json!({"label": label, "parent": parent, "scopes": scopes});
            let created: Value = client
                .post("/v1/actors", &body, Some(token))
                .await
                .map_err(explain)?;
            print(globals, &created, describe_actor);
        }
        AgentCommand::Show { target } => {
            let omni = resolve(&stored, Some(target))?;
            let shown: Value = client
                .get(&format!("/v1/actors/{omni}"), Some(token))
                .await
                .map_err(explain)?;
            print(globals, &shown, describe_actor);
        }
        AgentCommand::List { target } => {
            let entries = walk(
                &client,
                token,
                &resolve(&stored, target.as_deref())?,
                1000,
                1,
            )
            .await?;
            print(globals, &json!({ "entries": entries }), |_| {
                tree_text(&entries)
            });
        }
        AgentCommand::Tree { target, page } => {
            let omni = resolve(&stored, target.as_deref())?;
            let entries = walk(&client, token, &omni, (*page).clamp(1, 1000), usize::MAX).await?;
            print(globals, &json!({ "entries": entries }), |_| {
                tree_text(&entries)
            });
        }
        AgentCommand::Revoke { target } => {
            let omni = resolve(&stored, Some(target))?;
            let receipt: Value = client
                .post(
                    &format!("/v1/actors/{omni}/revoke"),
                    &json!({}),
                    Some(token),
                )
                .await
                .map_err(explain)?;
            print(globals, &receipt, |r| {
                let more = if r["revoked_more"].as_bool() == Some(true) {
                    " or more"
                } else {
                    ""
                };
                format!(
                    "revoked {}{more} actor(s) under {} at {} (commit {:.2} ms, {} stopped)",
                    r["revoked"],
                    omni,
                    r["revoked_at"].as_str().unwrap_or(""),
                    r["commit_ms"].as_f64().unwrap_or(0.0),
                    r["stopped"]
                )
            });
        }
        AgentCommand::Scopes {
            target,
            set,
            add,
            remove,
        } => {
            let omni = resolve(&stored, Some(target))?;
            let path = format!("/v1/actors/{omni}");
            let new_set = match set {
                Some(scopes) => Some(scopes.clone()),
                None if add.is_empty() && remove.is_empty() => None,
                None => {
                    let current: Value = client.get(&path, Some(token)).await.map_err(explain)?;
                    Some(changed_scopes(&current["scopes"], add, remove))
                }
            };
            let shown: Value = match new_set {
                Some(scopes) => client
                    .put(
                        &format!("{path}/scopes"),
                        &json!({ "scopes": scopes }),
                        token,
                    )
                    .await
                    .map_err(explain)?,
                None => client.get(&path, Some(token)).await.map_err(explain)?,
            };
            print(
                globals,
                &json!({"omni": omni, "scopes": shown["scopes"]}),
                |v| {
                    let scopes: Vec<&str> = v["scopes"]
                        .as_array()
                        .map(|a| a.iter().filter_map(Value::as_str).collect())
                        .unwrap_or_default();
                    if scopes.is_empty() {
                        "(none)".into()
                    } else {
                        scopes.join("\n")
                    }
                },
            );
        }
    }
    Ok(())
}

/// Follows the tree's cursors; keeps entries at most `max_depth` below the root (root
/// excluded when `max_depth` is 1: the children).
async fn walk(
    client: &Client,
    token: &str,
    omni: &str,
    page: usize,
    max_depth: usize,
) -> anyhow::Result<Vec<Value>> {
    let mut entries = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let mut path = format!("/v1/actors/{omni}/tree?limit={page}");
        if let Some(c) = &cursor {
            path.push_str(&format!("&cursor={}", c.replace('/', "%2F")));
        }
        let answer: Value = client.get(&path, Some(token)).await.map_err(explain)?;
        for entry in answer["entries"].as_array().into_iter().flatten() {
            let depth = entry["depth"].as_u64().unwrap_or(0) as usize;
            let wanted = if max_depth == 1 {
                depth == 1
            } else {
                depth <= max_depth
            };
            if wanted {
                entries.push(entry.clone());
            }
        }
        match answer["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_string()),
            None => return Ok(entries),
        }
    }
}

fn tree_text(entries: &[Value]) -> String {
    entries
        .iter()
        .map(|e| {
            let depth = e["depth"].as_u64().unwrap_or(0) as usize;
            let label = e["label"]
                .as_str()
                .filter(|l| !l.is_empty())
                .unwrap_or("(root)");
            let status = e["status"].as_str().unwrap_or("");
            format!(
                "{}{label}  {}  {status}",
                "  ".repeat(depth),
                e["omni"].as_str().unwrap_or("")
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// `agentkeys link-code issue TARGET`.
pub async fn link_code(globals: &Globals, command: &LinkCodeCommand) -> anyhow::Result<()> {
    let LinkCodeCommand::Issue { target, ttl } = command;
    let client = globals.client()?;
    let stored = session(globals, &client).await?;
    let omni = resolve(&stored, Some(target))?;
    let code: Value = client
        .post(
            &format!("/v1/actors/{omni}/link-codes"),
            &json!({ "ttl_seconds": ttl }),
            Some(&stored.session.session_jwt),
        )
        .await
        .map_err(explain)?;
    print(globals, &code, |c| {
        format!(
            "{}\n\nOn the agent's machine run `agentkeys link` and enter this code (valid until {}).",
            c["code"].as_str().unwrap_or(""),
            c["expires_at"].as_str().unwrap_or("")
        )
    });
    Ok(())
}

/// `agentkeys link`: reads the code from a prompt (a terminal) or stdin, never from argv, so
/// it stays out of shell history and process lists.
pub async fn link(globals: &Globals, args: &LinkArgs) -> anyhow::Result<()> {
    let stdin = std::io::stdin();
    let mut code = String::new();
    if stdin.is_terminal() {
        eprint!("link code: ");
        std::io::stderr().flush()?;
        stdin.lock().read_line(&mut code)?;
    } else {
        stdin.lock().take(256).read_to_string(&mut code)?;
    }
    let code = code.trim();
    if code.is_empty() {
        bail!("no link code given; pipe it in or type it at the prompt");
    }
    let client = globals.direct_client()?;
    let session: crate::http::session::SessionResponse = client
        .post(
            "/v1/link/redeem",
            &json!({"code": code, "label": args.label}),
            None,
        )
        .await
        .map_err(explain)?;
    let stored = save_session(globals, session)?;
    if globals.json {
        println!("{}", serde_json::to_string(&stored.session)?);
    } else {
        println!(
            "linked: this device now acts as {} ({}), profile {}",
            stored.session.omni,
            stored.session.path,
            globals.profile.display()
        );
    }
    Ok(())
}

fn read_json(file: &Path) -> anyhow::Result<Value> {
    let text = if file == Path::new("-") {
        let mut text = String::new();
        std::io::stdin().read_to_string(&mut text)?;
        text
    } else {
        std::fs::read_to_string(file).with_context(|| format!("cannot read {}", file.display()))?
    };
    serde_json::from_str(&text).with_context(|| format!("{} is not JSON", file.display()))
}

/// `agentkeys sign …`.
pub async fn sign(globals: &Globals, args: &SignArgs) -> anyhow::Result<()> {
    let client = globals.client()?;
    let stored = session(globals, &client).await?;
    let token = Some(stored.session.session_jwt.as_str());
    let (path, body) = match &args.command {
        SignCommand::Message { text, hex, anchor } => {
            let mut body = match (text, hex) {
                (Some(text), None) => json!({ "message": text }),
                (_, Some(hex)) => json!({ "message_hex": hex }),
                (None, None) => bail!("give the text or --hex"),
            };
            if *anchor {
                body["wallet"] = json!("anchor");
            }
            ("/v1/sign/eip191", body)
        }
        SignCommand::TypedData { file } => {
            ("/v1/sign/eip712", json!({ "typed_data": read_json(file)? }))
        }
        SignCommand::Tx { file } => ("/v1/sign/transaction", json!({ "tx": read_json(file)? })),
        SignCommand::Sr25519 { hex } => ("/v1/sign/sr25519", json!({ "message_hex": hex })),
    };
    let mut signed: Value = client.post(path, &body, token).await.map_err(explain)?;
    if signed["status"] == "approval_required" {
        let token = stored.session.session_jwt.as_str();
        match super::policies::wait_for_approval(
            &client,
            token,
            &signed,
            args.no_wait,
            globals.json,
        )
        .await?
        {
            Some(result) => signed = result,
            None => return Ok(()),
        }
    }
    print(globals, &signed, |s| {
        let mut lines = Vec::new();
        for key in [
            "signature",
            "raw",
            "hash",
            "digest",
            "address",
            "public",
            "ss58",
        ] {
            if let Some(v) = s[key].as_str() {
                lines.push(format!("{key:<10} {v}"));
            }
        }
        lines.join("\n")
    });
    Ok(())
}

/// `agentkeys audit tail`.
pub async fn audit_tail(
    globals: &Globals,
    actor: Option<&str>,
    limit: usize,
) -> anyhow::Result<()> {
    let client = globals.client()?;
    let stored = session(globals, &client).await?;
    let actor = actor.map(|a| resolve(&stored, Some(a))).transpose()?;
    let mut rows: Vec<Value> = Vec::new();
    let mut after = 0u64;
    loop {
        let mut path = format!("/v1/audit?after={after}&limit=1000");
        if let Some(a) = &actor {
            path.push_str(&format!("&actor={a}"));
        }
        let page: Value = client
            .get(&path, Some(&stored.session.session_jwt))
            .await
            .map_err(explain)?;
        rows.extend(page["rows"].as_array().cloned().unwrap_or_default());
        if rows.len() > limit {
            rows.drain(..rows.len() - limit);
        }
        match page["next_after"].as_u64() {
            Some(next) => after = next,
            None => break,
        }
    }
    if globals.json {
        println!("{}", json!({ "rows": rows }));
        return Ok(());
    }
    for r in &rows {
        println!(
            "{:>6} {} {:<18} {:<7} target {} by {} (request {})",
            r["seq"],
            r["at"].as_str().unwrap_or(""),
            r["operation"].as_str().unwrap_or(""),
            r["outcome"].as_str().unwrap_or(""),
            short(r["target"].as_str()),
            short(r["actor"].as_str()),
            r["request_id"].as_str().unwrap_or("")
        );
    }
    Ok(())
}

fn short(omni: Option<&str>) -> String {
    omni.map_or_else(|| "admin".into(), |o| o.chars().take(12).collect())
}

/// A pairing started on this machine, kept in the profile until claimed.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct PendingPairing {
    gateway: String,
    request_id: String,
}

/// `agentkeys pair …`.
pub async fn pair(globals: &Globals, command: &crate::cli::PairCommand) -> anyhow::Result<()> {
    use crate::cli::PairCommand;
    let client = globals.direct_client()?;
    let pending_path = globals.profile.join("pending-pairing.json");
    match command {
        PairCommand::Request { no_wait } => {
            let started: Value = client
                .post("/v1/pairing/request", &json!({}), None)
                .await
                .map_err(explain)?;
            let pending = PendingPairing {
                gateway: globals.gateway.clone(),
                request_id: started["request_id"].as_str().unwrap_or_default().into(),
            };
            super::write_private(&pending_path, &serde_json::to_vec(&pending)?)?;
            if globals.json {
                eprintln!("{started}");
            } else {
                eprintln!(
                    "pairing code:   {}\nthis device:    {}\n\nWhere you are logged in, run:\n  agentkeys pair claim {} --label <name>\nand check that it shows the same device fingerprint.",
                    started["code"].as_str().unwrap_or(""),
                    started["fingerprint"].as_str().unwrap_or(""),
                    started["code"].as_str().unwrap_or("")
                );
            }
            if *no_wait {
                return Ok(());
            }
            poll_pairing(globals, &client, &pending.request_id).await
        }
        PairCommand::Poll => {
            let pending: PendingPairing = serde_json::from_slice(
                &std::fs::read(&pending_path)
                    .context("no pairing in progress; run `agentkeys pair request` first")?,
            )?;
            poll_pairing(globals, &client, &pending.request_id).await
        }
        PairCommand::Claim {
            code,
            label,
            parent,
            scopes,
        } => {
            let stored = session(globals, &client).await?;
            let parent = resolve(&stored, parent.as_deref())?;
            let body = json!({"code": code, "label": label, "parent": parent, "scopes": scopes});
            let claimed: Value = client
                .post(
                    "/v1/pairing/claim",
                    &body,
                    Some(&stored.session.session_jwt),
                )
                .await
                .map_err(explain)?;
            print(globals, &claimed, |c| {
                format!(
                    "{} {} ({})\ndevice fingerprint {} — it must match the agent's screen; if not, run `agentkeys device revoke {} {}`",
                    if c["created"] == json!(true) {
                        "created"
                    } else {
                        "added a device to"
                    },
                    c["path"].as_str().unwrap_or(""),
                    c["omni"].as_str().unwrap_or(""),
                    c["fingerprint"].as_str().unwrap_or(""),
                    c["path"].as_str().unwrap_or(""),
                    c["binding_id"]
                )
            });
            Ok(())
        }
    }
}

async fn poll_pairing(globals: &Globals, client: &Client, request_id: &str) -> anyhow::Result<()> {
    let mut tick = tokio::time::interval(std::time::Duration::from_secs(2));
    loop {
        tick.tick().await;
        let status: crate::http::pairing::PairingStatus = client
            .post(
                "/v1/pairing/poll",
                &json!({ "request_id": request_id }),
                None,
            )
            .await
            .map_err(explain)?;
        if let Some(session) = status.session {
            let _ = std::fs::remove_file(globals.profile.join("pending-pairing.json"));
            let stored = save_session(globals, session)?;
            if globals.json {
                println!("{}", serde_json::to_string(&stored.session)?);
            } else {
                println!(
                    "paired: this device now acts as {} ({})",
                    stored.session.omni, stored.session.path
                );
            }
            return Ok(());
        }
    }
}

/// `agentkeys device …`.
pub async fn device(globals: &Globals, command: &crate::cli::DeviceCommand) -> anyhow::Result<()> {
    use crate::cli::DeviceCommand;
    let client = globals.client()?;
    let stored = session(globals, &client).await?;
    let token = stored.session.session_jwt.as_str();
    match command {
        DeviceCommand::List { target } => {
            let omni = resolve(&stored, target.as_deref())?;
            let list: Value = client
                .get(&format!("/v1/actors/{omni}/devices"), Some(token))
                .await
                .map_err(explain)?;
            print(globals, &list, |l| {
                l["devices"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|d| {
                        format!(
                            "{:>4}  {:<10} created {}  last used {}{}",
                            d["binding_id"],
                            d["label"].as_str().unwrap_or(""),
                            d["created_at"].as_str().unwrap_or(""),
                            d["last_used"].as_str().unwrap_or(""),
                            d["deleted_at"]
                                .as_str()
                                .map(|t| format!("  DELETED {t}"))
                                .unwrap_or_default()
                        )
                    })
                    .collect::<Vec<_>>()
                    .join("\n")
            });
        }
        DeviceCommand::Add {
            code,
            target,
            label,
        } => {
            let omni = resolve(&stored, target.as_deref())?;
            let body = json!({"code": code, "label": label});
            let added: Value = client
                .post(&format!("/v1/actors/{omni}/devices"), &body, Some(token))
                .await
                .map_err(explain)?;
            print(globals, &added, |a| {
                format!(
                    "added binding {} to {} ({})\ndevice fingerprint {} — it must match the new device's screen; if not, run `agentkeys device revoke {} {}`",
                    a["binding_id"],
                    a["path"].as_str().unwrap_or(""),
                    a["omni"].as_str().unwrap_or(""),
                    a["fingerprint"].as_str().unwrap_or(""),
                    a["omni"].as_str().unwrap_or(""),
                    a["binding_id"]
                )
            });
        }
        DeviceCommand::Revoke { target, binding_id } => {
            let omni = resolve(&stored, Some(target))?;
            let deleted: Value = client
                .delete(&format!("/v1/actors/{omni}/devices/{binding_id}"), token)
                .await
                .map_err(explain)?;
            print(globals, &deleted, |d| {
                format!(
                    "deleted binding {} at {}",
                    d["binding_id"],
                    d["deleted_at"].as_str().unwrap_or("")
                )
            });
        }
    }
    Ok(())
}

/// The stored scopes with `add` added and `remove` removed (order kept, no duplicates).
fn changed_scopes(current: &Value, add: &[String], remove: &[String]) -> Vec<String> {
    let mut scopes: Vec<String> = current
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(String::from)
                .collect()
        })
        .unwrap_or_default();
    for scope in add {
        if !scopes.contains(scope) {
            scopes.push(scope.clone());
        }
    }
    scopes.retain(|s| !remove.contains(s));
    scopes
}

#[cfg(test)]
mod tests {
    use super::changed_scopes;
    use serde_json::json;

    #[test]
    fn add_and_remove_change_the_stored_set() {
        let current = json!(["sign:eip191", "sign:eip712"]);
        let add = [
            "oidc:sts.amazonaws.com".to_string(),
            "sign:eip191".to_string(),
        ];
        let remove = ["sign:eip712".to_string()];
        assert_eq!(
            changed_scopes(&current, &add, &remove),
            ["sign:eip191", "oidc:sts.amazonaws.com"]
        );
        assert!(changed_scopes(&json!(null), &[], &[]).is_empty());
    }
}
