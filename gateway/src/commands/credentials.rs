//! `agentkeys cred …` and the credentials of `agentkeys run --cred` (docs/credentials.md). A
//! value is read from a file or stdin, never from argv, and is printed only by `cred get`.

use std::io::Read as _;

use anyhow::{Context as _, bail};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use zeroize::Zeroizing;

use super::agents::print;
use super::{Globals, explain, session};
use crate::cli::CredCommand;
use crate::http::credentials::{InjectView, List, PutRequest, Value, Written};

/// Reads a credential value: a file (0600 or stricter is the caller's business) or stdin.
fn read_value(file: Option<&std::path::Path>, stdin: bool) -> anyhow::Result<Zeroizing<Vec<u8>>> {
    let mut value = Zeroizing::new(Vec::new());
    match (file, stdin) {
        (Some(path), _) => {
            std::fs::File::open(path)
                .and_then(|mut f| f.read_to_end(&mut value))
                .with_context(|| format!("cannot read {}", path.display()))?;
        }
        (None, true) => {
            std::io::stdin()
                .read_to_end(&mut value)
                .context("cannot read standard input")?;
        }
        (None, false) => {
            bail!("give the value with --file PATH or --stdin (never on the command line)")
        }
    }
    // One trailing newline (from `echo` or an editor) is not part of a key.
    if value.last() == Some(&b'\n') {
        value.pop();
        if value.last() == Some(&b'\r') {
            value.pop();
        }
    }
    Ok(value)
}

/// `agentkeys cred …`.
pub async fn cred(globals: &Globals, command: &CredCommand) -> anyhow::Result<()> {
    let client = globals.client()?;
    let stored = session(globals, &client).await?;
    let token = stored.session.session_jwt.as_str();
    match command {
        CredCommand::Set {
            service,
            file,
            stdin,
            description,
            inject_base_url,
            inject_header,
            inject_template,
        } => {
            let value = read_value(file.as_deref(), *stdin)?;
            let inject = inject_base_url.as_ref().map(|base_url| InjectView {
                base_url: base_url.clone(),
                header: inject_header.clone().unwrap_or_default(),
                template: inject_template.clone().unwrap_or_default(),
            });
            let body = PutRequest {
                value_b64: STANDARD.encode(value.as_slice()),
                description: description.clone(),
                inject,
            };
            let written: Written = client
                .put(&format!("/v1/credentials/{service}"), &body, token)
                .await
                .map_err(explain)?;
            print(globals, &serde_json::to_value(&written)?, |_| {
                format!(
                    "stored {} version {} ({} bytes)",
                    written.service, written.version, written.size
                )
            });
        }
        CredCommand::Get { service, version } => {
            let path = match version {
                Some(v) => format!("/v1/credentials/{service}?version={v}"),
                None => format!("/v1/credentials/{service}"),
            };
            let got: Value = client.get(&path, Some(token)).await.map_err(explain)?;
            let value = Zeroizing::new(
                STANDARD
                    .decode(got.value_b64.as_bytes())
                    .context("the server sent a value that is not base64")?,
            );
            use std::io::Write as _;
            let mut out = std::io::stdout().lock();
            out.write_all(&value)?;
            if std::io::IsTerminal::is_terminal(&out) {
                out.write_all(b"\n")?;
            }
        }
        CredCommand::List => {
            let list: List = client
                .get("/v1/credentials", Some(token))
                .await
                .map_err(explain)?;
            print(globals, &serde_json::to_value(&list)?, |_| {
                list.credentials
                    .iter()
                    .map(|c| {
                        format!(
                            "{}  v{}  {} bytes  {}{}",
                            c.service,
                            c.version,
                            c.size,
                            c.updated_at,
                            c.inject_base_url
                                .as_deref()
                                .map(|u| format!("  → {u}"))
                                .unwrap_or_default()
                        )
                    })
                    .collect::<Vec<_>>()
                    .join("\n")
            });
        }
        CredCommand::Rm { service } => {
            let done: Written = client
                .delete(&format!("/v1/credentials/{service}"), token)
                .await
                .map_err(explain)?;
            print(globals, &serde_json::to_value(&done)?, |_| {
                format!("deleted {} (last version {})", done.service, done.version)
            });
        }
    }
    Ok(())
}

/// The values of `--cred ENV=service` pairs, read with the profile's session.
pub async fn for_env(
    globals: &Globals,
    pairs: &[String],
) -> anyhow::Result<Vec<(String, Zeroizing<Vec<u8>>)>> {
    if pairs.is_empty() {
        return Ok(Vec::new());
    }
    let client = globals.client()?;
    let stored = session(globals, &client).await?;
    let mut out = Vec::new();
    for pair in pairs {
        let Some((name, service)) = pair.split_once('=') else {
            bail!("--cred takes ENV=service, e.g. OPENAI_API_KEY=openai");
        };
        let valid_name = !name.is_empty()
            && !name.starts_with(|c: char| c.is_ascii_digit())
            && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
        if !valid_name {
            bail!("--cred {pair:?}: {name:?} is not an environment variable name");
        }
        let got: Value = client
            .get(
                &format!("/v1/credentials/{service}"),
                Some(&stored.session.session_jwt),
            )
            .await
            .map_err(explain)?;
        let value = Zeroizing::new(
            STANDARD
                .decode(got.value_b64.as_bytes())
                .context("the server sent a value that is not base64")?,
        );
        if value.contains(&0) {
            bail!(
                "the credential {service} holds a NUL byte and cannot go into an environment variable"
            );
        }
        out.push((name.to_string(), value));
    }
    Ok(out)
}
