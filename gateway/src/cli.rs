//! The `agentkeys` command line (clap derive; doc comments are the help text).

use std::net::SocketAddr;
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
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the gateway and the actor runtime.
    Serve(ServeArgs),
    /// Master secret (K3) management and offline derivations.
    #[command(subcommand)]
    Keys(KeysCommand),
}

/// `agentkeys keys …`
#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Create the master secret K3 (refuses if one exists: a new K3 changes every wallet).
    Init(KeysInitArgs),
    /// Offline: print omni, path, wallet, sr25519 public key and SS58 of an actor. Prints no
    /// seeds.
    Derive(KeysDeriveArgs),
}

/// Options of `agentkeys keys init`.
#[derive(Debug, Clone, Args)]
pub struct KeysInitArgs {
    /// Data directory; K3 goes to `<data-dir>/keys/k3.key` unless --k3-file is given.
    #[arg(long, env = "AGENTKEYS_DATA_DIR", default_value = "./agentkeys-data")]
    pub data_dir: PathBuf,
    /// Where to write K3 (64 hex characters, mode 0600).
    #[arg(long, env = "AGENTKEYS_K3_FILE")]
    pub k3_file: Option<PathBuf>,
}

/// Options of `agentkeys keys derive`.
#[derive(Debug, Clone, Args)]
pub struct KeysDeriveArgs {
    /// The K3 file (64 hex characters, mode 0600).
    #[arg(long)]
    pub k3_file: PathBuf,
    /// The login identity of the master: `email:alice@example.com` or `evm:0xabc…`.
    #[arg(long, conflicts_with = "master", required_unless_present = "master")]
    pub identity: Option<String>,
    /// The master's omni, if known.
    #[arg(long)]
    pub master: Option<String>,
    /// Path below the master, e.g. `//ops//bot-1` (default: the master itself).
    #[arg(long, default_value = "")]
    pub path: String,
    /// The deployment's client_id.
    #[arg(long, env = "AGENTKEYS_CLIENT_ID", default_value = "agentkeys")]
    pub client_id: String,
    /// Print JSON (stable field names) instead of text.
    #[arg(long, global = true)]
    pub json: bool,
}

/// Options of `agentkeys serve`.
#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    /// Address of the public listener.
    #[arg(long, env = "AGENTKEYS_LISTEN", default_value = "127.0.0.1:8090")]
    pub listen: SocketAddr,

    /// Directory of the store and keys (created 0700 if missing).
    #[arg(long, env = "AGENTKEYS_DATA_DIR", default_value = "./agentkeys-data")]
    pub data_dir: PathBuf,

    /// The URL clients use to reach this gateway; DPoP `htu`, token `iss` and links are built
    /// from it, never from the Host header. A loopback URL means dev mode.
    #[arg(
        long,
        env = "AGENTKEYS_PUBLIC_URL",
        default_value = "http://127.0.0.1:8090"
    )]
    pub public_url: String,

    /// The K3 file (default `<data-dir>/keys/k3.key`).
    #[arg(long, env = "AGENTKEYS_K3_FILE")]
    pub k3_file: Option<PathBuf>,
}
