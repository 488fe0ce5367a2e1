//! The `tickwire` command: `serve` runs the server, `bench` the load generator.

use std::{net::SocketAddr, path::PathBuf, process::ExitCode};

use clap::{Parser, Subcommand};

mod fix_sim;
mod import;
mod sim;
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
        Command::Serve {
            http,
            data,
            config,
            fsync,
        } => {
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
