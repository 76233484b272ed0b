//! The `agentkeys` binary.

use clap::Parser;

use agentkeys_gateway::cli::{
    AuditCommand, AwsCommand, Cli, Command, ConfigCommand, KeysCommand, LoginCommand,
};
use agentkeys_gateway::commands::{self, Globals, agents, aws, credentials, identities, policies};
use agentkeys_gateway::config;
use agentkeys_gateway::keys;
use agentkeys_gateway::serve;

/// mimalloc instead of the system allocator: fewer bytes per small object (an active actor is
/// about twenty of them) and no per-allocation header (docs/BENCHMARKS.md, "Fourth pass").
/// Built without transparent huge pages (the `no_thp` feature): zeroing a fresh huge page on
/// first touch held every request in flight for tens of milliseconds ("Eighth pass").
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    init_tracing(cli.verbose);
    if let Command::Run(args) = &cli.command {
        return run_command(&cli, args);
    }
    let json = cli.json;
    match dispatch(cli) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) => fail(&err, json),
    }
}

/// Reports a failure (the error envelope on stdout with `--json`, a message on stderr) and
/// returns its exit code: 1 local, 3 refused by the server, 4 server or network trouble.
fn fail(err: &anyhow::Error, json: bool) -> std::process::ExitCode {
    if json {
        println!("{}", commands::error_envelope(err));
    }
    eprintln!("agentkeys: error: {err:#}");
    std::process::ExitCode::from(commands::exit_code(err))
}

/// `agentkeys run`: the child's exit code is ours.
fn run_command(cli: &Cli, args: &agentkeys_gateway::cli::RunArgs) -> std::process::ExitCode {
    let result = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(anyhow::Error::from)
        .and_then(|runtime| {
            runtime.block_on(async { aws::run(&Globals::from_cli(cli)?, args).await })
        });
    result.unwrap_or_else(|err| fail(&err, cli.json))
}

/// Every command but `run`; the match is exhaustive, so a new command cannot be forgotten.
fn dispatch(cli: Cli) -> anyhow::Result<()> {
    let json = cli.json;
    match &cli.command {
        Command::Serve(args) => config::load(args).and_then(serve::run),
        Command::Config(ConfigCommand::Show { args }) => config::load(args).map(|c| {
            if json {
                println!("{}", c.show_json());
            } else {
                print!("{}", c.show());
            }
        }),
        Command::Config(ConfigCommand::Check(args)) => config::load(args).map(|c| {
            for warning in c.warnings() {
                eprintln!("warning: {warning}");
            }
            println!(
                "configuration is valid (public_url {}, dev mode: {})",
                c.public_url, c.dev_mode
            );
        }),
        Command::Admin(args) => admin(args),
        Command::Keys(KeysCommand::Init(args)) => keys::init((**args).clone()),
        Command::Keys(KeysCommand::Derive(args)) => keys::derive(args.clone(), json),
        Command::Completions { shell } => {
            let mut command = <Cli as clap::CommandFactory>::command();
            clap_complete::generate(*shell, &mut command, "agentkeys", &mut std::io::stdout());
            Ok(())
        }
        Command::Logout => commands::logout(&Globals::from_cli(&cli)?),
        Command::Login(_)
        | Command::Whoami
        | Command::Audit(_)
        | Command::Agent(_)
        | Command::LinkCode(_)
        | Command::Link(_)
        | Command::Sign(_)
        | Command::Approvals(_)
        | Command::Identity(_)
        | Command::Cred(_)
        | Command::Proxy(_)
        | Command::Daemon(_)
        | Command::Mcp(_)
        | Command::Pair(_)
        | Command::Device(_)
        | Command::Oidc(_)
        | Command::Aws(_)
        | Command::Run(_) => client_command(&cli),
    }
}

/// Commands that talk to a gateway (or read a stopped server's store) on a small runtime.
fn client_command(cli: &Cli) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        match &cli.command {
            Command::Login(LoginCommand::Wallet(args)) => {
                commands::login_wallet(&Globals::from_cli(cli)?, args).await
            }
            Command::Login(LoginCommand::Email(args)) => {
                commands::login_email(&Globals::from_cli(cli)?, args).await
            }
            Command::Login(LoginCommand::Oauth2(args)) => {
                identities::login_oauth2(&Globals::from_cli(cli)?, args).await
            }
            Command::Identity(command) => {
                identities::identity(&Globals::from_cli(cli)?, command).await
            }
            Command::Cred(command) => credentials::cred(&Globals::from_cli(cli)?, command).await,
            Command::Proxy(args) => commands::proxy::run(&Globals::from_cli(cli)?, args).await,
            Command::Daemon(args) => commands::daemon::run(&Globals::from_cli(cli)?, args).await,
            Command::Mcp(args) => commands::mcp::run(&Globals::from_cli(cli)?, args).await,
            Command::Whoami => commands::whoami(&Globals::from_cli(cli)?).await,
            Command::Audit(AuditCommand::Verify(args)) => {
                let config = config::load(args)?;
                commands::audit_verify(&config, cli.json).await
            }
            Command::Audit(AuditCommand::Tail { actor, limit }) => {
                agents::audit_tail(&Globals::from_cli(cli)?, actor.as_deref(), *limit).await
            }
            Command::Agent(command) => agents::agent(&Globals::from_cli(cli)?, command).await,
            Command::LinkCode(command) => {
                agents::link_code(&Globals::from_cli(cli)?, command).await
            }
            Command::Link(args) => agents::link(&Globals::from_cli(cli)?, args).await,
            Command::Sign(args) => agents::sign(&Globals::from_cli(cli)?, args).await,
            Command::Approvals(command) => {
                policies::approvals(&Globals::from_cli(cli)?, command).await
            }
            Command::Pair(command) => agents::pair(&Globals::from_cli(cli)?, command).await,
            Command::Device(command) => agents::device(&Globals::from_cli(cli)?, command).await,
            Command::Oidc(command) => aws::oidc(&Globals::from_cli(cli)?, command).await,
            Command::Aws(AwsCommand::Credentials { role_arn, assume }) => {
                aws::aws_credentials(&Globals::from_cli(cli)?, role_arn, assume).await
            }
            other => anyhow::bail!("internal: {other:?} is not a client command"),
        }
    })
}

fn init_tracing(verbose: u8) {
    let default = match verbose {
        0 => "info",
        1 => "debug",
        _ => "trace",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
}

fn admin(args: &agentkeys_gateway::cli::AdminArgs) -> anyhow::Result<()> {
    let config = config::load(&args.config)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    if let agentkeys_gateway::admin::AdminRequest::Migrate {
        to,
        password_file,
        ca_file,
    } = &args.command
    {
        let mut settings = agentkeys_pg::PgSettings::parse(to)?;
        if let Some(path) = password_file {
            settings = settings.with_password_file(path)?;
        }
        if let Some(path) = ca_file {
            settings = settings.with_ca_file(path);
        }
        let report = runtime.block_on(agentkeys_gateway::migrate::run(
            &config,
            to,
            &settings,
            &agentkeys_runtime::SystemClock,
        ))?;
        println!("{report}");
        return Ok(());
    }
    let request = args.command.clone().prepare()?;
    let answer = runtime.block_on(agentkeys_gateway::admin::call(&config.data_dir, &request))?;
    println!("{answer}");
    if answer["ok"] == serde_json::Value::Bool(true) {
        Ok(())
    } else {
        anyhow::bail!(
            "{}: {}",
            answer["error"].as_str().unwrap_or("error"),
            answer["message"].as_str().unwrap_or_default()
        )
    }
}
