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
}
