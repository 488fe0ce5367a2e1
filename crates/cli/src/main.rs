//! The `tickwire` command: `serve` runs the server; `pub`, `sub`, `tail`, `status` and
//! `backup` talk to a running one; `import`, `token`, `check-config` work offline; `bench` is
//! the load generator.

use std::{net::SocketAddr, path::PathBuf, process::ExitCode};

use clap::{CommandFactory, Parser, Subcommand};

mod alloc_tuning;
mod backup;
mod client;
mod fix_sim;
mod import;
mod pubsub;
mod sim;
mod status;
mod token;
use tickwire_server::{CliOverrides, Config};

#[derive(Parser)]
#[command(
    name = "tickwire",
    version,
    about = "Real-time market-data and messaging server"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the server (defaults: http 127.0.0.1:7700, data ./tickwire-data).
    Serve {
        /// HTTP listen address (REST, WebSocket, SSE, console).
        #[arg(long)]
        http: Option<SocketAddr>,
        /// Data directory.
        #[arg(long)]
        data: Option<PathBuf>,
        /// TOML configuration file; environment variables TICKWIRE_* and these flags override it.
        #[arg(long)]
        config: Option<PathBuf>,
        /// fsync policy: always | interval:<N>ms | never.
        #[arg(long)]
        fsync: Option<String>,
    },
    /// Import recorded ticks or bars (CSV, MetaTrader 4/5 exports) into a data directory.
    Import(import::ImportArgs),
    /// Publish simulated quotes to a running server.
    Sim(sim::SimArgs),
    /// Load generator: scenarios against Tickwire, nats-server, mosquitto (docs/benchmarks.md).
    Bench(tickwire_bench::BenchCli),
    /// A FIX 4.4 provider (acceptor) serving simulated quotes, for demos (docs/fix.md).
    FixSim(fix_sim::FixSimArgs),
    /// Mint a development JWT with the configured `[auth] jwt_hmac_secret` (docs/security.md).
    Token(token::TokenArgs),
    /// Publish to a running server: DATA, or one message per line of standard input.
    Pub(pubsub::PubArgs),
    /// Subscribe on a running server and print messages (pretty or NDJSON).
    Sub(pubsub::SubArgs),
    /// Print a channel's last messages, then follow it.
    Tail(pubsub::TailArgs),
    /// Health, readiness, namespaces, sessions and projection lag of a running server.
    Status(status::StatusArgs),
    /// Copy a running server's data directory, consistently, into a new directory.
    Backup(backup::BackupArgs),
    /// Check a configuration as `serve` would, without starting anything.
    CheckConfig(status::CheckConfigArgs),
    /// Print a shell completion script: `tickwire completions bash > /etc/bash_completion.d/tickwire`.
    Completions {
        /// bash, zsh, fish, elvish or powershell.
        shell: clap_complete::Shell,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("TICKWIRE_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    match cli.command {
        Command::Import(a) => import::run(a),
        Command::Sim(a) => sim::run(a),
        Command::Bench(b) => tickwire_bench::main(b),
        Command::FixSim(a) => fix_sim::main(a),
        Command::Token(a) => match token::run(a) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("tickwire token: {e}");
                ExitCode::from(2)
            }
        },
        Command::Pub(a) => pubsub::run_pub(a),
        Command::Sub(a) => pubsub::run_sub(a),
        Command::Tail(a) => pubsub::run_tail(a),
        Command::Status(a) => status::run(a),
        Command::Backup(a) => backup::run(a),
        Command::CheckConfig(a) => status::check_config(a),
        Command::Completions { shell } => {
            clap_complete::generate(
                shell,
                &mut Cli::command(),
                "tickwire",
                &mut std::io::stdout(),
            );
            ExitCode::SUCCESS
        }
        Command::Serve {
            http,
            data,
            config,
            fsync,
        } => {
            // Before anything starts: this may replace the process (same pid, same arguments).
            alloc_tuning::tune_or_continue();
            alloc_tuning::spawn_trimmer();
            let overrides = CliOverrides { http, data, fsync };
            let cfg = match Config::load(config.as_deref(), &overrides) {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("tickwire: {e}");
                    return ExitCode::from(2);
                }
            };
            let rt = match tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    eprintln!("tickwire: cannot start the runtime: {e}");
                    return ExitCode::FAILURE;
                }
            };
            match rt.block_on(tickwire_server::serve(cfg)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("tickwire: {e}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}
