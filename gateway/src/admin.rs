//! The admin plane: a Unix socket `<data>/admin.sock` (0600, in the 0700 data dir) speaking
//! one JSON request per line and one JSON answer per line. Only the host's administrator (who
//! can open the file) reaches it; it is never on the network.
//!
//! Requests: `{"op":"masters","after"?,"limit"?}`, `{"op":"status","omni"}`,
//! `{"op":"revoke","omni"}` (any actor, masters included), `{"op":"lift-quarantine","omni"}`,
//! `{"op":"allow","action":"add"|"remove"|"list","entry"?}` (the registration allow-list),
//! `{"op":"policy","action":"set"|"show"|"remove","master","document"?}` (a master's own
//! policy), `{"op":"approvals","action":"list"|"approve"|"deny","id"?}` (approvals held by
//! masters' own policies).
//! Answers: `{"ok":true,...}` or `{"ok":false,"error":"<code>","message":"..."}`.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use agentkeys_actors::ledger::Ledger;
use agentkeys_actors::ledger::SetAllowed;
use agentkeys_actors::signer::KeySetName;
use agentkeys_runtime::store::{Origin, Status, WriteError};
use agentkeys_runtime::{Omni, Runtime};
use anyhow::Context as _;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};

use crate::http::AppState;
use crate::rotation::Rotator;

/// The socket's file name inside the data dir.
pub const SOCKET: &str = "admin.sock";

/// One admin request: the `agentkeys admin` subcommand and the JSON sent on the socket are
/// the same type.
#[derive(Debug, Clone, Deserialize, Serialize, clap::Subcommand)]
#[serde(tag = "op", rename_all = "kebab-case", deny_unknown_fields)]
pub enum AdminRequest {
    /// List masters in omni order with their status.
    Masters {
        /// Start after this omni (paging).
        #[arg(long)]
        after: Option<String>,
        /// At most this many (default 100, max 1000).
        #[arg(long)]
        limit: Option<usize>,
    },
    /// Show an actor's computed status.
    Status {
        /// The actor's omni.
        omni: String,
    },
    /// Revoke an actor and its whole subtree (masters too).
    Revoke {
        /// The actor's omni.
        omni: String,
    },
    /// End an actor's quarantine early.
    LiftQuarantine {
        /// The actor's omni.
        omni: String,
    },
    /// Verify the audit log (chains, signatures, and against the last verified run).
    AuditVerify,
    /// OIDC key rotation: `rotate-oidc` publishes the next key, `status` shows the state.
    Keys {
        /// rotate-oidc or status.
        #[arg(value_enum)]
        action: KeysAction,
    },
    /// A master's own policy (only the operator sets it): set --file, show, remove.
    Policy {
        /// set, show or remove.
        #[arg(value_enum)]
        action: PolicyAction,
        /// The master's omni.
        master: String,
        /// The policy document, JSON or TOML (`set`; read by the client, sent as `document`).
        #[arg(long)]
        #[serde(skip)]
        file: Option<PathBuf>,
        /// The document as sent on the socket.
        #[arg(skip)]
        #[serde(default, skip_serializing_if = "Option::is_none")]
        document: Option<Value>,
    },
    /// Approvals held by masters' own policies: list, approve ID, deny ID.
    Approvals {
        /// list, approve or deny.
        #[arg(value_enum)]
        action: ApprovalAction,
        /// The approval (approve, deny).
        id: Option<String>,
    },
    /// Copy the redb store of this (stopped) server into an empty PostgreSQL database and
    /// verify the copy; runs here, not on the server (docs/multi-node.md).
    Migrate {
        /// The database: `postgres://user@host[:port]/db[?sslmode=require]` (no password).
        #[arg(long)]
        to: String,
        /// A file with the database password (mode 0600).
        #[arg(long)]
        password_file: Option<PathBuf>,
        /// Extra PEM roots for the database server's certificate.
        #[arg(long)]
        ca_file: Option<PathBuf>,
    },
    /// Manage the registration allow-list (used when `registration = "allowlist"`).
    Allow {
        /// add, remove or list.
        #[arg(value_enum)]
        action: AllowAction,
        /// An EVM address (`0x…`) or an email address.
        entry: Option<String>,
    },
}

/// What `admin keys` does.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum KeysAction {
    /// Publish the next OIDC key; it signs after the switch delay, the old one retires later.
    RotateOidc,
    /// The rotation state (applies due steps first).
    Status,
}

/// What `admin policy` does.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum PolicyAction {
    /// Set (or replace) the master's policy from --file.
    Set,
    /// Show it, what it spends, and its budgets.
    Show,
    /// Remove it.
    Remove,
}

/// What `admin approvals` does.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum ApprovalAction {
    /// Pending approvals held by masters' own policies.
    List,
    /// Approve one.
    Approve,
    /// Deny one.
    Deny,
}

impl AdminRequest {
    /// Reads what the client side must read before sending (a policy file).
    pub fn prepare(mut self) -> anyhow::Result<Self> {
        if let AdminRequest::Policy {
            file: Some(path),
            document,
            ..
        } = &mut self
        {
            *document = Some(crate::commands::read_document(path)?);
        }
        Ok(self)
    }
}

/// What `admin allow` does.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum AllowAction {
    /// Allow an identity to register.
    Add,
    /// Take it off the list (an existing master keeps its account).
    Remove,
    /// Print the list.
    List,
}

fn refuse(code: &str, message: impl Into<String>) -> Value {
    json!({"ok": false, "error": code, "message": message.into()})
}

fn omni(text: &str) -> Result<Omni, Value> {
    text.parse()
        .map_err(|e: agentkeys_runtime::OmniParseError| refuse("invalid_request", e.to_string()))
}

/// Answers one request.
pub async fn handle(state: &AppState, data_dir: &Path, request: AdminRequest) -> Value {
    let (runtime, ledger, rotator) = (&state.runtime, &state.ledger, state.rotator.as_ref());
    let result = match request {
        AdminRequest::Masters { after, limit } => {
            masters(runtime, after.as_deref(), limit.unwrap_or(100).min(1000))
        }
        AdminRequest::Status { omni: o } => status(runtime, &o),
        AdminRequest::Revoke { omni: o } => revoke(runtime, ledger, &o).await,
        AdminRequest::LiftQuarantine { omni: o } => {
            omni(&o).map(|o| json!({"ok": true, "lifted": runtime.lift_quarantine(&o)}))
        }
        AdminRequest::Allow { action, entry } => {
            allow(runtime, ledger, action, entry.as_deref()).await
        }
        AdminRequest::Keys { action } => keys(rotator, action).await,
        AdminRequest::Policy {
            action,
            master,
            document,
            ..
        } => policy(state, action, &master, document).await,
        AdminRequest::Approvals { action, id } => approvals(state, action, id.as_deref()).await,
        AdminRequest::Migrate { .. } => Err(refuse(
            "invalid_request",
            "migrate copies a stopped store: stop the server, then run `agentkeys admin migrate`",
        )),
        AdminRequest::AuditVerify => {
            let paths = crate::audit::AuditPaths {
                data_dir: data_dir.to_path_buf(),
            };
            // A walk of every chain: on a blocking thread, never on a tokio worker that serves
            // requests.
            let ledger = ledger.clone();
            let audit_keys = rotator.signer().public_jwks(KeySetName::Audit);
            tokio::task::spawn_blocking(move || {
                crate::audit::verify_running(&ledger, &audit_keys, &paths)
            })
            .await
            .map_err(|e| refuse("internal", format!("the verification task failed: {e}")))
            .and_then(|r| r.map_err(|e| refuse("internal", format!("{e:#}"))))
        }
    };
    result.unwrap_or_else(|refusal| refusal)
}

fn api_refusal(e: crate::http::error::ApiError) -> Value {
    refuse(e.code().as_str(), e.message())
}

async fn policy(
    state: &AppState,
    action: PolicyAction,
    master: &str,
    document: Option<Value>,
) -> Result<Value, Value> {
    let master = omni(master)?;
    let lineage = state
        .runtime
        .lineage(&master)
        .map_err(|e| refuse("internal", e.to_string()))?
        .filter(|l| l.records().len() == 1)
        .ok_or_else(|| refuse("not_found", "no such master"))?;
    let policy = match action {
        PolicyAction::Show => None,
        PolicyAction::Remove => Some(None),
        PolicyAction::Set => {
            let document = document.ok_or_else(|| refuse("invalid_request", "give --file"))?;
            Some(Some(
                crate::http::policy::parse(document.to_string().as_bytes()).map_err(api_refusal)?,
            ))
        }
    };
    if let Some(policy) = policy {
        state
            .ledger
            .set_policy(agentkeys_actors::ledger::SetPolicy {
                target: master,
                policy,
                by: agentkeys_actors::ledger::Setter::Operator,
                origin: Origin {
                    actor: None,
                    request_id: "admin".into(),
                },
                at: state.clock.now(),
            })
            .await
            .map_err(|e| api_refusal(e.into()))?;
    }
    let view = crate::http::policy::view(state, &lineage.omnis()).map_err(api_refusal)?;
    Ok(json!({"ok": true, "policy": view}))
}

async fn approvals(
    state: &AppState,
    action: ApprovalAction,
    id: Option<&str>,
) -> Result<Value, Value> {
    use crate::http::approvals::{Decider, decide, view};
    let origin = Origin {
        actor: None,
        request_id: "admin".into(),
    };
    let decided = match (action, id) {
        (ApprovalAction::List, _) => {
            let pending = state
                .ledger
                .all_pending_approvals(1000)
                .map_err(|e| refuse("internal", e.to_string()))?;
            let mut out = Vec::new();
            for record in pending.iter().filter(|r| r.owner == r.master) {
                out.push(view(state, record, false).map_err(api_refusal)?);
            }
            return Ok(json!({"ok": true, "approvals": out}));
        }
        (_, None) => return Err(refuse("invalid_request", "give the approval id")),
        (action, Some(id)) => decide(
            state,
            id,
            Decider::Operator,
            origin,
            matches!(action, ApprovalAction::Approve),
        )
        .await
        .map_err(api_refusal)?,
    };
    let shown = view(state, &decided, false).map_err(api_refusal)?;
    Ok(json!({"ok": true, "approval": shown}))
}

fn masters(runtime: &Runtime, after: Option<&str>, limit: usize) -> Result<Value, Value> {
    let after = after.map(omni).transpose()?;
    let list = runtime
        .store()
        .masters(after.as_ref(), limit)
        .map_err(|e| refuse("internal", e.to_string()))?;
    let rows: Vec<Value> = list
        .iter()
        .map(|m| {
            let status = runtime.status(m).ok().flatten();
            json!({"omni": m.to_string(), "status": status_name(status)})
        })
        .collect();
    Ok(json!({"ok": true, "masters": rows}))
}

fn status_name(status: Option<Status>) -> &'static str {
    match status {
        Some(Status::Active) => "active",
        Some(Status::Revoked { .. }) => "revoked",
        None => "unknown",
    }
}

fn status(runtime: &Runtime, text: &str) -> Result<Value, Value> {
    let o = omni(text)?;
    match runtime
        .status(&o)
        .map_err(|e| refuse("internal", e.to_string()))?
    {
        None => Err(refuse("not_found", "no such actor")),
        Some(Status::Active) => Ok(
            json!({"ok": true, "omni": o.to_string(), "status": if runtime.is_quarantined(&o) { "quarantined" } else { "active" }}),
        ),
        Some(Status::Revoked { by, at }) => Ok(
            json!({"ok": true, "omni": o.to_string(), "status": "revoked",
            "revoked_by": by.to_string(), "revoked_at": agentkeys_actors::crypto::rfc3339::format(at.as_millis() as i64)}),
        ),
    }
}

async fn keys(rotator: &Rotator, action: KeysAction) -> Result<Value, Value> {
    let answer = match action {
        KeysAction::RotateOidc => rotator.begin().await.map(|_| ()),
        KeysAction::Status => Ok(()),
    };
    if let Err(e) = answer {
        return Err(refuse("conflict", e.to_string()));
    }
    match rotator.status().await {
        Ok(mut status) => {
            status["ok"] = json!(true);
            Ok(status)
        }
        Err(e) => Err(refuse("internal", e.to_string())),
    }
}

/// An allow-list entry in its one stored form: a lowercase `0x` address or a lowercase email.
pub fn allow_entry(text: &str) -> Result<String, String> {
    let text = text.trim();
    // An OpenID identity: the list holds its value, as a login looks it up.
    for kind in ["oauth2_google", "oidc"] {
        if let Some(value) = text.strip_prefix(kind).and_then(|v| v.strip_prefix(':')) {
            return agentkeys_actors::crypto::omni::Identity::of(kind, value)
                .and_then(|i| i.canonical())
                .map(|(_, value)| value)
                .map_err(|e| e.to_string());
        }
    }
    if text.starts_with("0x") || text.starts_with("0X") {
        return agentkeys_actors::crypto::omni::normalize_address(text).map_err(|e| e.to_string());
    }
    let email = text.to_lowercase();
    match email.split_once('@') {
        Some((user, host))
            if !user.is_empty() && host.contains('.') && !email.contains(char::is_whitespace) =>
        {
            Ok(email)
        }
        _ => Err(format!(
            "{text:?} is neither an EVM address (0x + 40 hex), an email address, oauth2_google:<sub> nor oidc:<issuer>#<sub>"
        )),
    }
}

async fn allow(
    runtime: &Runtime,
    ledger: &Ledger,
    action: AllowAction,
    entry: Option<&str>,
) -> Result<Value, Value> {
    let store = ledger;
    let allowed = match (action, entry) {
        (AllowAction::List, _) => {
            let list = store
                .allowlist()
                .map_err(|e| refuse("internal", e.to_string()))?;
            return Ok(json!({"ok": true, "allowlist": list}));
        }
        (_, None) => {
            return Err(refuse(
                "invalid_request",
                "give the address or email to allow",
            ));
        }
        (AllowAction::Add, Some(_)) => true,
        (AllowAction::Remove, Some(_)) => false,
    };
    let entry = allow_entry(entry.unwrap_or_default()).map_err(|e| refuse("invalid_request", e))?;
    let changed = store
        .set_allowed(SetAllowed {
            entry: entry.clone(),
            allowed,
            at: runtime.clock().now(),
        })
        .await
        .map_err(|e| refuse("internal", e.to_string()))?;
    Ok(json!({"ok": true, "entry": entry, "allowed": allowed, "changed": changed}))
}

async fn revoke(runtime: &Runtime, ledger: &Ledger, text: &str) -> Result<Value, Value> {
    let o = omni(text)?;
    let origin = Origin {
        actor: None,
        request_id: format!("admin-{}", runtime.clock().now().as_millis()),
    };
    match ledger.revoke(runtime, o, origin).await {
        Ok(r) => Ok(
            json!({"ok": true, "omni": o.to_string(), "new": r.new, "stopped": r.stopped,
            "revoked_at": agentkeys_actors::crypto::rfc3339::format(r.revoked_at.as_millis() as i64),
            "commit_ms": r.commit_time.as_secs_f64() * 1000.0}),
        ),
        Err(WriteError::Rejected(_)) => Err(refuse("not_found", "no such actor")),
        Err(WriteError::Store(e)) => Err(refuse("internal", e.to_string())),
    }
}

/// Binds the socket (replacing a stale one), restricts it to 0600, and serves until dropped.
pub async fn listen(
    data_dir: &Path,
    state: AppState,
) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    let path = data_dir.join(SOCKET);
    if path.exists() {
        if UnixStream::connect(&path).await.is_ok() {
            anyhow::bail!(
                "{} is in use: another agentkeys serve runs on this data dir",
                path.display()
            );
        }
        std::fs::remove_file(&path)
            .with_context(|| format!("cannot remove the stale {}", path.display()))?;
    }
    let listener =
        UnixListener::bind(&path).with_context(|| format!("cannot bind {}", path.display()))?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))
        .with_context(|| format!("cannot restrict {}", path.display()))?;
    let data_dir = data_dir.to_path_buf();
    Ok(tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let state = state.clone();
            let data_dir = data_dir.clone();
            tokio::spawn(async move {
                let serving = serve_connection(stream, &state, &data_dir);
                if let Err(e) = serving.await {
                    tracing::debug!(cause = %e, "admin connection ended");
                }
            });
        }
    }))
}

async fn serve_connection(
    stream: UnixStream,
    state: &AppState,
    data_dir: &Path,
) -> std::io::Result<()> {
    let (read, mut write) = stream.into_split();
    let mut lines = BufReader::new(read).lines();
    while let Some(line) = lines.next_line().await? {
        let answer = match serde_json::from_str::<AdminRequest>(&line) {
            Ok(request) => {
                tracing::info!(request = %line, "admin request");
                handle(state, data_dir, request).await
            }
            Err(e) => refuse("invalid_request", e.to_string()),
        };
        write.write_all(format!("{answer}\n").as_bytes()).await?;
    }
    Ok(())
}

/// Client side: sends one request to the socket of `data_dir` and returns the answer.
pub async fn call(data_dir: &Path, request: &AdminRequest) -> anyhow::Result<Value> {
    let request = serde_json::to_string(request)?;
    let path: PathBuf = data_dir.join(SOCKET);
    let stream = UnixStream::connect(&path).await.with_context(|| {
        format!("cannot reach {}: is `agentkeys serve` running with this --data-dir, and are you its user?", path.display())
    })?;
    let (read, mut write) = stream.into_split();
    write.write_all(format!("{request}\n").as_bytes()).await?;
    write.shutdown().await?;
    let line = BufReader::new(read)
        .lines()
        .next_line()
        .await?
        .context("the server closed the admin connection without answering")?;
    Ok(serde_json::from_str(&line)?)
}

#[cfg(test)]
mod allow_tests {
    use super::allow_entry;

    #[test]
    fn allow_entries_are_canonical_identity_values() {
        assert_eq!(
            allow_entry(" 0xAbCdEf0123456789aBcDeF0123456789AbCdEf01 ").as_deref(),
            Ok("0xabcdef0123456789abcdef0123456789abcdef01")
        );
        assert_eq!(
            allow_entry("Alice@Example.com").as_deref(),
            Ok("alice@example.com")
        );
        assert_eq!(
            allow_entry("oauth2_google:110169484474386276334").as_deref(),
            Ok("110169484474386276334")
        );
        assert_eq!(
            allow_entry("oidc:https://id.example.com#00u1").as_deref(),
            Ok("https://id.example.com#00u1")
        );
        assert!(allow_entry("oidc:no-subject").is_err());
        assert!(allow_entry("nothing").is_err());
    }
}
