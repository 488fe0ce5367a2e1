//! `tickwire fix-sim`: a FIX 4.4 provider serving simulated quotes, for demos of the FIX
//! initiator (docs/fix.md).

use std::{net::SocketAddr, path::PathBuf, process::ExitCode};

use tickwire_edge_fix::sim::{run_until_interrupted, SimConfig};

#[derive(clap::Args)]
pub struct FixSimArgs {
    /// FIX listen address.
    #[arg(long, default_value = "127.0.0.1:9878")]
    listen: SocketAddr,
    /// Our CompID (the initiator's TargetCompID); any client CompID may log on.
    #[arg(long, default_value = "FIXSIM")]
    comp_id: String,
    /// Comma-separated symbols.
    #[arg(long, default_value = "EURUSD,GBPUSD,USDJPY", value_delimiter = ',')]
    symbols: Vec<String>,
    /// Quote updates per second per symbol.
    #[arg(long, default_value_t = 5)]
    rate: u32,
    /// Directory for the simulator's private hub and sequence files (default: a temp dir).
    #[arg(long)]
    data: Option<PathBuf>,
    /// Serve FIX over TLS with this PEM certificate chain (with --tls-key).
    #[arg(long, requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// The PEM private key of --tls-cert.
    #[arg(long, requires = "tls_cert")]
    tls_key: Option<PathBuf>,
}

pub fn main(a: FixSimArgs) -> ExitCode {
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("tickwire fix-sim: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let cfg = SimConfig {
        listen: a.listen,
        comp_id: a.comp_id,
        symbols: a.symbols,
        rate: a.rate,
        data: a.data,
        tls: a.tls_cert.zip(a.tls_key),
    };
    match rt.block_on(run_until_interrupted(cfg)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("tickwire fix-sim: {e}");
            ExitCode::FAILURE
        }
    }
}
