//! The client commands (`login`, `whoami`, `audit verify`): one [`Client`] per command, the
//! profile's device key and session in `~/.agentkeys/<profile>/` (0600 files in a 0700
//! directory), a session refreshed before it expires.

use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use agentkeys_actors::crypto::wallet::WalletKey;
use anyhow::{Context as _, bail};
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::cli::{Cli, LoginEmailArgs, LoginWalletArgs};

pub mod agents;
pub mod aws;
pub mod credentials;
pub mod daemon;
pub mod identities;
mod local;
pub mod mcp;
pub mod policies;
pub mod proxy;
use crate::client::{Client, ClientError, DeviceKey, profile_dir};
use crate::http::confirm::LoginStatus;
use crate::http::email::EmailStarted;
use crate::http::session::{SessionResponse, Whoami};
use crate::http::wallet::{StartRequest, StartResponse, VerifyRequest};

/// The gateway used when neither `--gateway` nor `AGENTKEYS_GATEWAY` names one.
pub const DEFAULT_GATEWAY: &str = "http://127.0.0.1:8090";
/// A session this close to expiry is refreshed before use.
pub const REFRESH_MARGIN_SECONDS: i64 = 60;

/// The global options every client command reads.
#[derive(Debug, Clone)]
pub struct Globals {
    /// The gateway's public URL.
    pub gateway: String,
    /// Where to connect instead (tests, tunnels).
    pub connect: Option<String>,
    /// The profile's directory.
    pub profile: PathBuf,
    /// JSON output.
    pub json: bool,
    /// The daemon socket named by `--daemon-socket` (then it must answer).
    pub daemon_socket: Option<PathBuf>,
    /// `--no-daemon`: hold the key here even if a daemon runs.
    pub no_daemon: bool,
}

impl Globals {
    /// From the parsed command line and `$HOME`.
    pub fn from_cli(cli: &Cli) -> anyhow::Result<Self> {
        let home = std::env::var_os("HOME")
            .map(PathBuf::from)
            .context("HOME is not set; the profile lives in ~/.agentkeys/<profile>")?;
        let profile = cli.profile.as_deref().unwrap_or("default");
        Ok(Self {
            gateway: cli
                .gateway
                .clone()
                .unwrap_or_else(|| DEFAULT_GATEWAY.into())
                .trim_end_matches('/')
                .to_string(),
            connect: cli.connect.clone(),
            profile: profile_dir(&home, profile)?,
            json: cli.json,
            daemon_socket: cli.daemon_socket.clone(),
            no_daemon: cli.no_daemon,
        })
    }

    /// The daemon socket to use: the one named, or the profile's if a daemon answers there.
    pub fn daemon(&self) -> Option<PathBuf> {
        if self.no_daemon {
            return None;
        }
        if let Some(named) = &self.daemon_socket {
            return Some(named.clone());
        }
        let default = self.profile.join(daemon::SOCKET);
        std::os::unix::net::UnixStream::connect(&default)
            .is_ok()
            .then_some(default)
    }

    /// A client for commands that act with the session: through the profile's daemon when
    /// one runs (this process then never reads the key), directly otherwise.
    pub fn client(&self) -> anyhow::Result<Client> {
        match self.daemon() {
            Some(socket) => Client::via_daemon(&socket),
            None => self.direct_client(),
        }
    }

    /// A client holding the device key itself: logins, link codes, pairing, the daemon.
    pub fn direct_client(&self) -> anyhow::Result<Client> {
        let key = DeviceKey::load_or_create(&self.profile)?;
        let client = Client::new(&self.gateway, key);
        Ok(match &self.connect {
            Some(actual) => client.connecting_to(actual),
            None => client,
        })
    }
}

/// The session kept in `session.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StoredSession {
    /// The gateway it belongs to.
    pub gateway: String,
    /// What the server returned.
    #[serde(flatten)]
    pub session: SessionResponse,
}

/// A login started with `--print-message`, finished with `--signature`.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct PendingLogin {
    gateway: String,
    request_id: String,
    message: String,
}

/// Reads a JSON or TOML document (by extension; `-` is stdin, JSON).
pub fn read_document(path: &Path) -> anyhow::Result<serde_json::Value> {
    use std::io::Read as _;
    let text = if path == Path::new("-") {
        let mut text = String::new();
        std::io::stdin().read_to_string(&mut text)?;
        text
    } else {
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?
    };
    if path.extension().is_some_and(|e| e == "toml") {
        let value: toml::Value =
            toml::from_str(&text).with_context(|| format!("{} is not TOML", path.display()))?;
        Ok(serde_json::to_value(value)?)
    } else {
        serde_json::from_str(&text).with_context(|| format!("{} is not JSON", path.display()))
    }
}

pub(crate) fn write_private(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    use std::io::Write;
    let tmp = path.with_extension("tmp");
    let _ = std::fs::remove_file(&tmp);
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .with_context(|| format!("cannot write {}", tmp.display()))?;
    file.write_all(bytes)?;
    file.sync_all()?;
    std::fs::rename(&tmp, path).with_context(|| format!("cannot write {}", path.display()))
}

fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> anyhow::Result<Option<T>> {
    match std::fs::read(path) {
        Ok(bytes) => Ok(Some(serde_json::from_slice(&bytes).with_context(|| {
            format!("{} is damaged; delete it and log in again", path.display())
        })?)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("cannot read {}", path.display())),
    }
}

pub(crate) fn save_session(
    globals: &Globals,
    session: SessionResponse,
) -> anyhow::Result<StoredSession> {
    let stored = StoredSession {
        gateway: globals.gateway.clone(),
        session,
    };
    write_private(
        &globals.profile.join("session.json"),
        &serde_json::to_vec_pretty(&stored)?,
    )?;
    Ok(stored)
}

/// A failed call with what to do about it; the CLI's exit code and `--json` envelope come
/// from the client error inside.
#[derive(Debug)]
pub struct Explained {
    /// The failure.
    pub error: ClientError,
    /// What to do (may be empty).
    pub fix: &'static str,
}

impl std::fmt::Display for Explained {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.fix.is_empty() {
            write!(f, "{}", self.error)
        } else {
            write!(f, "{}\n  fix: {}", self.error, self.fix)
        }
    }
}

impl std::error::Error for Explained {}

/// Maps a client error to a message that names the fix.
pub(crate) fn explain(e: ClientError) -> anyhow::Error {
    let fix = match &e {
        ClientError::Api { code, .. } => match code.as_str() {
            "actor_revoked" => "this identity was revoked; ask whoever controls its tree",
            "binding_revoked" => "this device was removed; log in again",
            "invalid_token" => "the session is no longer valid; log in again",
            "registration_closed" => "ask the operator to run `agentkeys admin allow add <you>`",
            "managed_wallet" => "log in with your own wallet, not one AgentKeys manages",
            "invalid_siwe" => "start the login again",
            "expired" => "start again (ask for a new code)",
            "scope_denied" => "ask an ancestor to grant the scope (agent scopes TARGET --add …)",
            "not_found" => "check the omni or path: only your own subtree is visible",
            "label_taken" => "choose another label, or repeat with the same scopes",
            "label_revoked" => "a revoked label is spent; choose another",
            "link_code_used" => {
                "the code was used by another device: revoke that device and issue a new code"
            }
            "rate_limited" => "wait a while (see Retry-After) and try again",
            _ => "",
        },
        ClientError::Transport { .. } => "",
    };
    anyhow::Error::new(Explained { error: e, fix })
}

/// The client error behind a CLI failure, if the failure was a call.
pub fn client_error(err: &anyhow::Error) -> Option<&ClientError> {
    err.chain().find_map(|cause| {
        cause
            .downcast_ref::<Explained>()
            .map(|e| &e.error)
            .or_else(|| cause.downcast_ref::<ClientError>())
    })
}

/// The exit code of a failure: 3 refused by the server (4xx), 4 server or network trouble
/// (5xx, unreachable), 1 anything local (no session, unreadable file). Usage errors exit 2
/// from clap before a command runs.
pub fn exit_code(err: &anyhow::Error) -> u8 {
    match client_error(err) {
        Some(e) if e.is_refusal() => 3,
        Some(_) => 4,
        None => 1,
    }
}

/// What `--json` prints on stdout for a failure: the server's envelope, or one of the same
/// shape (`unreachable`, `local_error`).
pub fn error_envelope(err: &anyhow::Error) -> serde_json::Value {
    match client_error(err) {
        Some(e) => e.envelope(),
        None => serde_json::json!({"error": "local_error", "message": format!("{err:#}")}),
    }
}

/// The profile's session, refreshed first if it is about to expire.
pub async fn session(globals: &Globals, client: &Client) -> anyhow::Result<StoredSession> {
    if client.is_daemon() {
        return daemon::session(client).await;
    }
    let path = globals.profile.join("session.json");
    let Some(stored) = read_json::<StoredSession>(&path)? else {
        bail!(
            "no session in {}; run `agentkeys login wallet` first",
            globals.profile.display()
        );
    };
    if stored.gateway != globals.gateway {
        bail!(
            "the session in {} belongs to {}, not {}; use --profile or log in again",
            globals.profile.display(),
            stored.gateway,
            globals.gateway
        );
    }
    let expires = agentkeys_actors::crypto::rfc3339::parse(&stored.session.expires_at)
        .map_or(0, |ms| ms / 1000);
    if expires - now() > REFRESH_MARGIN_SECONDS {
        return Ok(stored);
    }
    let fresh = client
        .refresh(&stored.session.session_jwt)
        .await
        .map_err(explain)?;
    save_session(globals, fresh)
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

fn read_wallet_key(path: &Path) -> anyhow::Result<WalletKey> {
    let mode = std::fs::metadata(path)
        .with_context(|| format!("cannot read {}", path.display()))?
        .permissions()
        .mode();
    if mode & 0o077 != 0 {
        bail!(
            "{} is readable by group or others; run: chmod 600 {}",
            path.display(),
            path.display()
        );
    }
    let text = Zeroizing::new(std::fs::read_to_string(path)?);
    let hex_text = text.trim().trim_start_matches("0x");
    let mut bytes = Zeroizing::new([0u8; 32]);
    hex::decode_to_slice(hex_text, bytes.as_mut_slice()).with_context(|| {
        format!(
            "{} must hold a secp256k1 private key: 0x followed by 64 hex characters",
            path.display()
        )
    })?;
    WalletKey::from_secret(&bytes).with_context(|| format!("{} is not a valid key", path.display()))
}

/// The signed SIWE request of `agentkeys login wallet` (no `token`) or of `identity link
/// wallet` (the master's session `token`): signed here with --key-file, or in two steps with
/// any wallet. `None` after step one (the message was printed).
pub async fn wallet_proof(
    globals: &Globals,
    client: &Client,
    args: &LoginWalletArgs,
    token: Option<&str>,
) -> anyhow::Result<Option<VerifyRequest>> {
    let (start_path, pending_name, command) = match token {
        None => (
            "/v1/auth/wallet/start",
            "pending-login.json",
            "login wallet",
        ),
        Some(_) => (
            "/v1/identities/wallet/start",
            "pending-link.json",
            "identity link wallet",
        ),
    };
    let pending_path = globals.profile.join(pending_name);
    let start = |address: String| async move {
        client
            .post::<_, StartResponse>(
                start_path,
                &StartRequest {
                    address,
                    chain_id: args.chain_id,
                },
                token,
            )
            .await
            .map_err(explain)
    };
    if let Some(key_file) = &args.key_file {
        let wallet = read_wallet_key(key_file)?;
        let challenge = start(wallet.address().to_string()).await?;
        let signature =
            agentkeys_actors::crypto::eip191::sign_message(&wallet, challenge.message.as_bytes());
        return Ok(Some(VerifyRequest {
            message: None,
            request_id: Some(challenge.request_id),
            signature: signature.to_hex(),
        }));
    }
    if args.print_message {
        let challenge = start(args.address.clone().unwrap_or_default()).await?;
        let pending = PendingLogin {
            gateway: globals.gateway.clone(),
            request_id: challenge.request_id.clone(),
            message: challenge.message.clone(),
        };
        write_private(&pending_path, &serde_json::to_vec_pretty(&pending)?)?;
        if globals.json {
            println!("{}", serde_json::to_string(&challenge)?);
        } else {
            println!("{}", challenge.message);
            eprintln!(
                "\nsign the message above with personal_sign, then run:\n  agentkeys {command} --signature 0x…"
            );
        }
        return Ok(None);
    }
    let Some(signature) = &args.signature else {
        bail!("give --key-file FILE, or --address 0x… --print-message and later --signature 0x…");
    };
    let Some(pending) = read_json::<PendingLogin>(&pending_path)? else {
        bail!("nothing in progress; run `agentkeys {command} --address 0x… --print-message` first");
    };
    let _ = std::fs::remove_file(&pending_path);
    Ok(Some(VerifyRequest {
        message: None,
        request_id: Some(pending.request_id),
        signature: signature.trim().to_string(),
    }))
}

/// `agentkeys login wallet`.
pub async fn login_wallet(globals: &Globals, args: &LoginWalletArgs) -> anyhow::Result<()> {
    let client = globals.direct_client()?;
    let Some(request) = wallet_proof(globals, &client, args, None).await? else {
        return Ok(());
    };
    let session = client.wallet_verify(&request).await.map_err(explain)?;
    logged_in(globals, session)
}

/// Saves a new session and says so.
pub fn logged_in(globals: &Globals, session: SessionResponse) -> anyhow::Result<()> {
    let stored = save_session(globals, session)?;
    if globals.json {
        println!("{}", serde_json::to_string(&stored.session)?);
    } else {
        println!(
            "logged in as master {} (session until {}, profile {})",
            stored.session.omni,
            stored.session.expires_at,
            globals.profile.display()
        );
    }
    Ok(())
}

/// Polls a login or link started elsewhere (email, provider) until it completes, with a
/// progress line; answers the final status.
pub async fn wait_for<F, Fut>(
    globals: &Globals,
    expires_at: &str,
    poll_ms: u64,
    waiting_for: &str,
    mut poll: F,
) -> anyhow::Result<LoginStatus>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<LoginStatus, ClientError>>,
{
    use std::io::Write as _;
    let deadline =
        agentkeys_actors::crypto::rfc3339::parse(expires_at).map_or(now() + 600, |ms| ms / 1000);
    let begun = std::time::Instant::now();
    let mut tick = tokio::time::interval(std::time::Duration::from_millis(poll_ms.max(10)));
    let done = loop {
        tick.tick().await;
        let status = poll().await.map_err(explain)?;
        if status.status != "pending" {
            break status;
        }
        if now() > deadline {
            bail!("the request expired unfinished; start again");
        }
        if !globals.json {
            eprint!(
                "\rwaiting for {waiting_for}… {}s ",
                begun.elapsed().as_secs()
            );
            let _ = std::io::stderr().flush();
        }
    };
    if !globals.json {
        eprintln!();
    }
    Ok(done)
}

/// `agentkeys login email ADDR`.
pub async fn login_email(globals: &Globals, args: &LoginEmailArgs) -> anyhow::Result<()> {
    let client = globals.direct_client()?;
    let started = client.email_request(&args.email).await.map_err(explain)?;
    show_email_code(globals, &args.email, &started);
    let status = wait_for(
        globals,
        &started.expires_at,
        args.poll_ms,
        "the link to be opened",
        || client.email_status(&started.request_id),
    )
    .await?;
    let Some(session) = status.session else {
        bail!("the server answered {} without a session", status.status);
    };
    logged_in(globals, session)
}

/// Tells the person where the link went and which code to enter.
pub fn show_email_code(globals: &Globals, email: &str, started: &EmailStarted) {
    if globals.json {
        eprintln!(
            "{}",
            serde_json::json!({"confirm_code": started.confirm_code, "request_id": started.request_id})
        );
    } else {
        eprintln!(
            "We emailed a sign-in link to {}.\nOpen it and enter this confirmation code:\n\n    {}\n",
            email.trim(),
            started.confirm_code
        );
    }
}

/// `agentkeys logout`: removes the profile's session file. The device key stays (a new login
/// reuses its binding); the token itself stays valid until it expires, at most
/// `session_ttl_seconds` — to stop a device now, delete its binding (`device revoke`).
pub fn logout(globals: &Globals) -> anyhow::Result<()> {
    let path = globals.profile.join("session.json");
    let removed = match std::fs::remove_file(&path) {
        Ok(()) => true,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => false,
        Err(e) => return Err(e).with_context(|| format!("cannot remove {}", path.display())),
    };
    if globals.json {
        println!("{}", serde_json::json!({ "logged_out": removed }));
    } else if removed {
        println!("logged out (profile {})", globals.profile.display());
    } else {
        println!("no session in profile {}", globals.profile.display());
    }
    Ok(())
}

/// `agentkeys whoami`.
pub async fn whoami(globals: &Globals) -> anyhow::Result<()> {
    let client = globals.client()?;
    let stored = session(globals, &client).await?;
    let me: Whoami = client
        .whoami(&stored.session.session_jwt)
        .await
        .map_err(explain)?;
    if globals.json {
        println!("{}", serde_json::to_string(&me)?);
        return Ok(());
    }
    let path = if me.path.is_empty() {
        "(master)"
    } else {
        &me.path
    };
    println!("omni            {}", me.omni);
    println!("role            {}", me.role);
    println!("path            {path}");
    println!("master omni     {}", me.master_omni);
    println!("wallet          {}  (managed by AgentKeys)", me.wallet);
    println!("sr25519 public  {}", me.sr25519_public);
    println!("ss58            {}", me.ss58);
    if let Some(identity) = &me.identity {
        println!("login identity  {}:{}", identity.kind, identity.value);
    }
    if let Some(anchor) = &me.anchor_wallet {
        println!("anchor wallet   {anchor}  (the master omni derives from it)");
    }
    println!(
        "devices         {} live (this one: binding {})",
        me.devices, me.binding_id
    );
    println!("session until   {}", me.session_expires_at);
    Ok(())
}

/// `agentkeys audit verify`: in the server if its admin socket answers, offline otherwise (on
/// the redb file, or on the PostgreSQL database of `store`).
pub async fn audit_verify(config: &crate::config::Config, json_output: bool) -> anyhow::Result<()> {
    let data_dir = config.data_dir.as_path();
    let socket = data_dir.join(crate::admin::SOCKET);
    let answer = if socket.exists() && tokio::net::UnixStream::connect(&socket).await.is_ok() {
        crate::admin::call(data_dir, &crate::admin::AdminRequest::AuditVerify).await?
    } else if let crate::config::StoreBackend::Postgres { settings, .. } = &config.store {
        let now = agentkeys_runtime::Clock::now(&agentkeys_runtime::SystemClock);
        crate::audit::verify_offline_postgres(config, settings, now).await?
    } else {
        crate::audit::verify_offline(&crate::audit::AuditPaths {
            data_dir: data_dir.to_path_buf(),
        })?
    };
    if json_output {
        println!("{answer}");
    } else {
        println!(
            "{} chains, {} rows",
            answer["chains"].as_u64().unwrap_or(0),
            answer["rows"].as_u64().unwrap_or(0)
        );
        for problem in answer["problems"].as_array().into_iter().flatten() {
            println!("PROBLEM: {}", problem.as_str().unwrap_or_default());
        }
    }
    if answer["ok"] == serde_json::Value::Bool(true) {
        if !json_output {
            println!("the audit log is intact");
        }
        Ok(())
    } else if answer.get("problems").is_some() {
        bail!("the audit log was tampered with (see the problems above)")
    } else {
        bail!(
            "{}: {}",
            answer["error"].as_str().unwrap_or("error"),
            answer["message"].as_str().unwrap_or_default()
        )
    }
}
