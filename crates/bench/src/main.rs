//! `tickwire-bench`: the load generator on its own, the same as `tickwire bench`, for machines
//! where only the generator is needed.

use clap::Parser;

#[derive(Parser)]
#[command(name = "tickwire-bench", version, about = "Tickwire load generator")]
struct Cli {
    #[command(flatten)]
    bench: tickwire_bench::BenchCli,
}

fn main() -> std::process::ExitCode {
    tickwire_bench::main(Cli::parse().bench)
}
