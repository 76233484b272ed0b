//! The `agentkeys` command line (clap derive; doc comments are the help text).

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

/// AgentKeys: a key broker for AI agents.
#[derive(Debug, Parser)]
#[command(name = "agentkeys", version, about)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,

    /// More log output (-v: debug, -vv: trace); RUST_LOG overrides it.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,

    /// The gateway's public URL [default: http://127.0.0.1:8090].
    #[arg(long, global = true, env = "AGENTKEYS_GATEWAY")]
    pub gateway: Option<String>,

    /// The client profile: state in ~/.agentkeys/<profile>/ [default: default].
    #[arg(long, global = true, env = "AGENTKEYS_PROFILE")]
    pub profile: Option<String>,

    /// Print JSON with stable field names (see docs/cli.md).
    #[arg(long, global = true)]
    pub json: bool,

    /// Send session requests through the daemon on this socket (it must answer); by default
    /// a daemon answering on ~/.agentkeys/<profile>/daemon.sock is used when it runs.
    #[arg(long, global = true, env = "AGENTKEYS_DAEMON_SOCKET")]
    pub daemon_socket: Option<PathBuf>,

    /// Hold the device key in this process even if a daemon runs for the profile.
    #[arg(long, global = true, env = "AGENTKEYS_NO_DAEMON")]
    pub no_daemon: bool,

    /// Connect to this address while proofs keep naming --gateway (tunnels, tests).
    #[arg(long, global = true, hide = true, env = "AGENTKEYS_CONNECT")]
    pub connect: Option<String>,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the gateway and the actor runtime.
    Serve(ConfigArgs),
    /// Show or check the configuration.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Host administration over the local admin socket of a running server.
    Admin(AdminArgs),
    /// Master secret (K3) management and offline derivations.
    #[command(subcommand)]
    Keys(KeysCommand),
    /// Log in as a master (creates the account on first login).
    #[command(subcommand)]
    Login(LoginCommand),
    /// Show every identifier of the logged-in actor.
    Whoami,
    /// The audit log.
    #[command(subcommand)]
    Audit(AuditCommand),
    /// Agents: create, list, tree, show, revoke, scopes.
    #[command(subcommand)]
    Agent(AgentCommand),
    /// Link codes: issue one for an actor (on the machine that holds the session).
    #[command(subcommand, name = "link-code")]
    LinkCode(LinkCodeCommand),
    /// On the agent's machine: redeem a link code (read from a prompt or stdin, never argv).
    Link(LinkArgs),
    /// Sign as the logged-in actor (a request a policy holds for a person waits for the
    /// decision; --no-wait prints the approval id and exits).
    Sign(SignArgs),
    /// Approvals: list what you may decide, approve, deny; the master's webhook.
    #[command(subcommand)]
    Approvals(ApprovalsCommand),
    /// A master's login identities: list, link another (wallet, email, OpenID), unlink.
    #[command(subcommand)]
    Identity(IdentityCommand),
    /// The credential vault: set (the master), get, list, rm.
    #[command(subcommand)]
    Cred(CredCommand),
    /// Serve the injecting proxy on loopback: /<service>/<path> goes to the credential's stored
    /// base URL with the credential in its stored header.
    Proxy(crate::commands::proxy::ProxyArgs),
    /// On an agent machine: hold the device key and session for the profile and serve the
    /// gateway's API without DPoP on a 0600 Unix socket to local processes of allowed uids.
    Daemon(crate::commands::daemon::DaemonArgs),
    /// Serve the agent's tools to an MCP client: over stdio, or Streamable HTTP on loopback.
    Mcp(crate::commands::mcp::McpArgs),
    /// Agent-initiated pairing: request (agent machine), claim (master), poll (agent machine).
    #[command(subcommand)]
    Pair(PairCommand),
    /// Device bindings of an actor.
    #[command(subcommand)]
    Device(DeviceCommand),
    /// OIDC tokens for AWS and other relying parties.
    #[command(subcommand)]
    Oidc(OidcCommand),
    /// AWS credentials through AssumeRoleWithWebIdentity.
    #[command(subcommand)]
    Aws(AwsCommand),
    /// Run a command with AWS credentials of the logged-in actor in its environment.
    Run(RunArgs),
    /// Forget this profile's session (the device key stays, so the next login reuses its
    /// binding).
    Logout,
    /// Print a shell completion script: `agentkeys completions bash > /etc/bash_completion.d/agentkeys`.
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
}

/// `agentkeys oidc …`
#[derive(Debug, Subcommand)]
pub enum OidcCommand {
    /// Mint a token (needs the scope oidc:<audience>).
    Token {
        /// The audience.
        #[arg(long, default_value = "sts.amazonaws.com")]
        audience: String,
        /// Lifetime in seconds (60 … 3600).
        #[arg(long, default_value_t = 300)]
        ttl: u64,
    },
}

/// Where and how to assume a role.
#[derive(Debug, Clone, Args)]
pub struct AssumeArgs {
    /// Session duration in seconds (900 … 43200).
    #[arg(long, default_value_t = 900)]
    pub duration: i32,
    /// The STS region.
    #[arg(long, default_value = "us-east-1", env = "AWS_REGION")]
    pub region: String,
    /// An STS endpoint URL (a VPC endpoint, or a test server).
    #[arg(long, env = "AGENTKEYS_STS_ENDPOINT")]
    pub sts_endpoint: Option<String>,
}

/// `agentkeys aws …`
#[derive(Debug, Subcommand)]
pub enum AwsCommand {
    /// Print credentials as credential_process JSON (Version 1).
    Credentials {
        /// The role to assume.
        #[arg(long)]
        role_arn: String,
        /// STS options.
        #[command(flatten)]
        assume: AssumeArgs,
    },
}

/// Options of `agentkeys run`.
#[derive(Debug, Clone, Args)]
pub struct RunArgs {
    /// The role whose credentials go into AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY and
    /// AWS_SESSION_TOKEN.
    #[arg(long, required_unless_present = "cred")]
    pub aws_role: Option<String>,
    /// `ENV=service`: the vault credential `service` goes into the child's variable ENV
    /// (repeatable; needs cred:read:<service>).
    #[arg(long = "cred", value_name = "ENV=SERVICE")]
    pub cred: Vec<String>,
    /// STS options.
    #[command(flatten)]
    pub assume: AssumeArgs,
    /// The command and its arguments (after --).
    #[arg(last = true, required = true)]
    pub command: Vec<String>,
}

/// `agentkeys pair …`
#[derive(Debug, Subcommand)]
pub enum PairCommand {
    /// On the agent's machine: show a pairing code and this device's fingerprint, then wait.
    Request {
        /// Only print the code; poll later with `pair poll`.
        #[arg(long)]
        no_wait: bool,
    },
    /// Where you are logged in: claim a code (compare the fingerprint shown with the agent's).
    Claim {
        /// The code the agent's machine shows.
        code: String,
        /// The agent's label (an existing live label gets another device).
        #[arg(long)]
        label: String,
        /// The parent (default: yourself).
        #[arg(long)]
        parent: Option<Target>,
        /// Scopes for a new agent (repeat).
        #[arg(long = "scope")]
        scopes: Vec<String>,
    },
    /// On the agent's machine: wait for the claim of the last request and store the session.
    Poll,
}

/// `agentkeys device …`
#[derive(Debug, Subcommand)]
pub enum DeviceCommand {
    /// The device bindings of an actor (default: yourself).
    List {
        /// The actor.
        target: Option<Target>,
    },
    /// Claim a pairing code shown by another device (a browser's console, another machine) as
    /// another device of yourself or of --target (compare the fingerprint with its screen).
    Add {
        /// The code the new device shows.
        code: String,
        /// The actor that gains the device (default: yourself; never one above you).
        #[arg(long)]
        target: Option<Target>,
        /// The binding's name (default `pairing`).
        #[arg(long)]
        label: Option<String>,
    },
    /// Delete a binding: its tokens stop working at once.
    Revoke {
        /// The actor.
        target: Target,
        /// The binding id (from `device list`).
        binding_id: u64,
    },
}

/// A target actor: an omni (64 hex) or a path below your master (`//ops//bot-1`).
pub type Target = String;

/// `agentkeys agent …`
#[derive(Debug, Subcommand)]
pub enum AgentCommand {
    /// Create a child (of yourself, or of --parent).
    Create {
        /// `^[a-z0-9-]{1,32}$`.
        label: String,
        /// The parent (default: yourself).
        #[arg(long)]
        parent: Option<Target>,
        /// A scope to store on it (repeat): sign:eip191, sign:eip712, sign:sr25519,
        /// sign:tx:<chain_id>, oidc:<audience>, actors:create.
        #[arg(long = "scope")]
        scopes: Vec<String>,
    },
    /// The children of an actor (default: yourself).
    List {
        /// The actor.
        target: Option<Target>,
    },
    /// The whole subtree, page by page.
    Tree {
        /// The root (default: yourself).
        target: Option<Target>,
        /// Entries per request.
        #[arg(long, default_value_t = 100)]
        page: usize,
    },
    /// One actor's record.
    Show {
        /// The actor.
        target: Target,
    },
    /// Revoke an actor and its whole subtree.
    Revoke {
        /// The actor.
        target: Target,
    },
    /// An actor's signing policy: set --file (JSON or TOML), show, remove.
    #[command(subcommand)]
    Policy(PolicyCommand),
    /// Show an actor's stored scopes; --set replaces them, --add and --remove change them.
    Scopes {
        /// The actor.
        target: Target,
        /// The new set (repeat; give --set with no value to clear).
        #[arg(long = "set", num_args = 0.., conflicts_with_all = ["add", "remove"])]
        set: Option<Vec<String>>,
        /// Scopes to add to the stored set (repeat).
        #[arg(long = "add")]
        add: Vec<String>,
        /// Scopes to remove from the stored set (repeat).
        #[arg(long = "remove")]
        remove: Vec<String>,
    },
}

/// `agentkeys agent policy …`
#[derive(Debug, Subcommand)]
pub enum PolicyCommand {
    /// Set (or replace) the policy of TARGET from a JSON or TOML file (docs/policies.md).
    Set {
        /// The actor (a strict descendant of yours).
        target: Target,
        /// The document: `.toml` is read as TOML, anything else as JSON (- for stdin).
        #[arg(long)]
        file: PathBuf,
    },
    /// TARGET's policy, the policies it inherits, and every budget on its lineage.
    Show {
        /// The actor (default: yourself).
        target: Option<Target>,
    },
    /// Remove the policy of TARGET.
    Remove {
        /// The actor.
        target: Target,
    },
}

/// `agentkeys approvals …`
#[derive(Debug, Subcommand)]
pub enum ApprovalsCommand {
    /// Pending approvals you may decide.
    List,
    /// One approval (yours, or one you may decide).
    Show {
        /// The approval id.
        id: String,
    },
    /// Approve: the request is signed now, within the budgets left now.
    Approve {
        /// The approval id.
        id: String,
    },
    /// Deny.
    Deny {
        /// The approval id.
        id: String,
    },
    /// The master's approval webhook.
    #[command(subcommand)]
    Webhook(WebhookCommand),
}

/// `agentkeys approvals webhook …`
#[derive(Debug, Subcommand)]
pub enum WebhookCommand {
    /// POST approval requests to URL (https); prints the HMAC key once.
    Set {
        /// The URL.
        url: String,
    },
    /// Stop posting.
    Remove,
}

/// `agentkeys link-code …`
#[derive(Debug, Subcommand)]
pub enum LinkCodeCommand {
    /// Issue a one-time code that binds a device to TARGET.
    Issue {
        /// The actor.
        target: Target,
        /// Lifetime in seconds (60 … 86400).
        #[arg(long, default_value_t = 600)]
        ttl: u64,
    },
}

/// Options of `agentkeys link`.
#[derive(Debug, Clone, Args)]
pub struct LinkArgs {
    /// A name for this device's binding.
    #[arg(long, default_value = "link")]
    pub label: String,
}

/// `agentkeys sign [--no-wait] …`
#[derive(Debug, Args)]
pub struct SignArgs {
    /// When a policy holds the request for a person: print the approval id and exit 0
    /// instead of waiting for the decision.
    #[arg(long, global = true)]
    pub no_wait: bool,
    /// What to sign.
    #[command(subcommand)]
    pub command: SignCommand,
}

/// `agentkeys sign …`
#[derive(Debug, Subcommand)]
pub enum SignCommand {
    /// EIP-191 personal_sign of TEXT, or of --hex bytes.
    Message {
        /// The text.
        #[arg(conflicts_with = "hex", required_unless_present = "hex")]
        text: Option<String>,
        /// Bytes instead, 0x + hex.
        #[arg(long)]
        hex: Option<String>,
        /// Sign with an email master's anchor wallet.
        #[arg(long)]
        anchor: bool,
    },
    /// EIP-712 v4 typed data from a JSON file (- for stdin).
    TypedData {
        /// The file.
        file: PathBuf,
    },
    /// A transaction request from a JSON file (- for stdin); chain_id required.
    Tx {
        /// The file.
        file: PathBuf,
    },
    /// sr25519 over --hex bytes.
    Sr25519 {
        /// 0x + hex.
        #[arg(long)]
        hex: String,
    },
}

/// `agentkeys login …`
#[derive(Debug, Subcommand)]
pub enum LoginCommand {
    /// Sign in with Ethereum: with a local key file, or in two steps with any wallet
    /// (`--address A --print-message`, then `--signature S`).
    Wallet(LoginWalletArgs),
    /// Email magic link: shows a confirmation code, waits while you open the link and enter it.
    Email(LoginEmailArgs),
    /// An OpenID provider (Google, Okta, …): prints the URL and a confirmation code, opens a
    /// browser where one exists, waits while you sign in there and enter the code.
    Oauth2(LoginOAuth2Args),
}

/// Options of `agentkeys login oauth2` and `identity link oauth2`.
#[derive(Debug, Clone, Args)]
pub struct LoginOAuth2Args {
    /// The provider's name on this gateway (e.g. google).
    #[arg(long)]
    pub provider: String,
    /// Only print the URL; do not try to open a browser.
    #[arg(long)]
    pub no_browser: bool,
    /// Milliseconds between status polls.
    #[arg(long, default_value_t = 2000, hide = true)]
    pub poll_ms: u64,
}

/// `agentkeys cred …` (the master's vault).
#[derive(Debug, Subcommand)]
pub enum CredCommand {
    /// Store a new version (the master only). The value comes from a file or stdin, never argv.
    Set {
        /// The service, e.g. openai.
        service: String,
        /// Read the value from this file.
        #[arg(long, conflicts_with = "stdin")]
        file: Option<PathBuf>,
        /// Read the value from standard input.
        #[arg(long)]
        stdin: bool,
        /// A note for people.
        #[arg(long)]
        description: Option<String>,
        /// Where the proxy may use it: an https base URL.
        #[arg(long, requires_all = ["inject_header", "inject_template"])]
        inject_base_url: Option<String>,
        /// The header that carries it, e.g. Authorization.
        #[arg(long, requires = "inject_base_url")]
        inject_header: Option<String>,
        /// The header's value, {} for the credential, e.g. "Bearer {}".
        #[arg(long, requires = "inject_base_url")]
        inject_template: Option<String>,
    },
    /// Print a credential's value on stdout (needs cred:read:<service>).
    Get {
        /// The service.
        service: String,
        /// A kept version (default: the newest).
        #[arg(long)]
        version: Option<u64>,
    },
    /// The credentials you may read (never values).
    List,
    /// Delete a credential with all its versions (the master only).
    Rm {
        /// The service.
        service: String,
    },
}

/// `agentkeys identity …` (a master's login identities).
#[derive(Debug, Subcommand)]
pub enum IdentityCommand {
    /// The identities that log into this master.
    List,
    /// Link another identity by completing its ceremony; afterwards it logs into this master.
    #[command(subcommand)]
    Link(IdentityLinkCommand),
    /// Unlink an identity (TYPE:VALUE, e.g. email:bob@example.com); a later login with it is
    /// refused. Never the last one.
    Unlink {
        /// `evm:0x…`, `email:…`, `oauth2_google:<sub>` or `oidc:<issuer>#<sub>`.
        identity: String,
    },
}

/// `agentkeys identity link …`
#[derive(Debug, Subcommand)]
pub enum IdentityLinkCommand {
    /// A wallet, by SIWE: with a local key file, or in two steps with any wallet.
    Wallet(LoginWalletArgs),
    /// An email address, by magic link and confirmation code.
    Email(LoginEmailArgs),
    /// An account at an OpenID provider.
    Oauth2(LoginOAuth2Args),
}

/// Options of `agentkeys login email`.
#[derive(Debug, Clone, Args)]
pub struct LoginEmailArgs {
    /// The address to sign in as.
    pub email: String,
    /// Milliseconds between status polls.
    #[arg(long, default_value_t = 2000, hide = true)]
    pub poll_ms: u64,
}

/// Options of `agentkeys login wallet`.
#[derive(Debug, Clone, Args)]
pub struct LoginWalletArgs {
    /// A secp256k1 private key file (`0x` + 64 hex, mode 0600) that signs the login.
    #[arg(long, conflicts_with_all = ["print_message", "signature"])]
    pub key_file: Option<PathBuf>,
    /// Step 1 with an external wallet: print the message to sign for --address.
    #[arg(long, requires = "address", conflicts_with = "signature")]
    pub print_message: bool,
    /// The wallet address (with --print-message).
    #[arg(long)]
    pub address: Option<String>,
    /// Step 2 with an external wallet: the signature (`0x` + 130 hex) of the printed message.
    #[arg(long)]
    pub signature: Option<String>,
    /// The chain id to sign for.
    #[arg(long, default_value_t = 1)]
    pub chain_id: u64,
}

/// `agentkeys audit …`
#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Verify every audit chain; through the running server's admin socket, or offline on the
    /// store file of a stopped server. Exit 1 if anything was modified, deleted or truncated.
    Verify(Box<ConfigArgs>),
    /// The newest audit rows of your subtree (oldest first).
    Tail {
        /// Only rows about this actor.
        #[arg(long)]
        actor: Option<String>,
        /// How many.
        #[arg(long, default_value_t = 20)]
        limit: usize,
    },
}

/// `agentkeys keys …`
#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Create the master secret K3 (refuses if one exists: a new K3 changes every wallet).
    Init(Box<ConfigArgs>),
    /// Offline: print omni, path, wallet, sr25519 public key and SS58 of an actor. Prints no
    /// seeds.
    Derive(KeysDeriveArgs),
}

/// Options of `agentkeys keys derive`.
#[derive(Debug, Clone, Args)]
pub struct KeysDeriveArgs {
    /// The K3 file (64 hex characters, mode 0600).
    #[arg(long)]
    pub k3_file: PathBuf,
    /// The login identity of the master: `email:alice@example.com`, `evm:0xabc…`,
    /// `oauth2_google:<sub>` or `oidc:<issuer>#<sub>`.
    #[arg(long, conflicts_with = "master", required_unless_present = "master")]
    pub identity: Option<String>,
    /// The master's omni, if known.
    #[arg(long)]
    pub master: Option<String>,
    /// Path below the master, e.g. `//ops//bot-1` (default: the master itself).
    #[arg(long, default_value = "")]
    pub path: String,
    /// The deployment's client_id.
    #[arg(long, default_value = "agentkeys")]
    pub client_id: String,
}

/// Configuration flags shared by `serve`, `config` and `keys init`. Each overrides the same key
/// of the config file and of its `AGENTKEYS_*` variable.
#[derive(Debug, Clone, Default, Args)]
pub struct ConfigArgs {
    /// TOML configuration file (also `AGENTKEYS_CONFIG`).
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Address of the public listener [default: 127.0.0.1:8090].
    #[arg(long)]
    pub listen: Option<String>,
    /// Directory of the store and keys, created 0700 [default: ./agentkeys-data].
    #[arg(long)]
    pub data_dir: Option<String>,
    /// The URL clients use to reach this gateway; DPoP `htu`, token `iss` and links are built
    /// from it, never from the Host header. A loopback URL means dev mode
    /// [default: http://127.0.0.1:8090].
    #[arg(long)]
    pub public_url: Option<String>,
    /// The deployment's client id, part of every omni; fixed once the store exists
    /// [default: agentkeys].
    #[arg(long)]
    pub client_id: Option<String>,
    /// The K3 file [default: <data-dir>/keys/k3.key].
    #[arg(long)]
    pub k3_file: Option<String>,
    /// The Prometheus listener (`off` disables it) [default: 127.0.0.1:9464].
    #[arg(long)]
    pub metrics_listen: Option<String>,
    /// Who may create a master: open, allowlist (managed with `agentkeys admin allow`) or
    /// closed [default: open in dev mode, else allowlist].
    #[arg(long)]
    pub registration: Option<String>,
    /// How magic links are sent: log (files in <data-dir>/outbox) or ses [default: log].
    #[arg(long)]
    pub mailer: Option<String>,
    /// The sender address of magic links [default: agentkeys@localhost].
    #[arg(long)]
    pub mail_from: Option<String>,
    /// The SES region [default: us-east-1].
    #[arg(long)]
    pub ses_region: Option<String>,
    /// An SES endpoint URL (a VPC endpoint, or a test server).
    #[arg(long)]
    pub ses_endpoint: Option<String>,
    /// Proxies whose X-Forwarded-For names the client: comma-separated IPs or CIDRs
    /// [default: none, the peer address is the client].
    #[arg(long)]
    pub trusted_proxies: Option<String>,
    /// OIDC tokens in upstream's claim shape for existing trust policies: true or false
    /// [default: false].
    #[arg(long)]
    pub oidc_legacy_claims: Option<String>,
    /// Seconds between publishing the next OIDC key and signing with it [default: 86400].
    #[arg(long)]
    pub oidc_switch_delay_seconds: Option<String>,
    /// Any configuration key, as KEY=VALUE (repeatable); the keys and their types are in
    /// docs/configuration.md, e.g. `--set siwe_chains=1,84532 --set dpop_skew_seconds=30`.
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub set: Vec<String>,
}

/// `agentkeys admin …`
#[derive(Debug, Args)]
pub struct AdminArgs {
    /// The configuration inputs (the data dir locates the socket).
    #[command(flatten)]
    pub config: ConfigArgs,
    /// What to do.
    #[command(subcommand)]
    pub command: crate::admin::AdminRequest,
}

/// `agentkeys config …`
#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Print the effective configuration with the source of each value.
    Show {
        /// The configuration inputs.
        #[command(flatten)]
        args: ConfigArgs,
    },
    /// Validate the configuration; exit 1 with the problem if it is invalid.
    Check(ConfigArgs),
}
