//! `tickwire fix-sim`: a FIX 4.4 market-data provider for demos. It is Tickwire's own acceptor
//! over a private, throw-away hub that a random walk publishes quotes into, so what a demo
//! initiator sees is exactly what a downstream client of a real server would see.

use std::{net::SocketAddr, path::PathBuf, sync::Arc, time::Duration};

use bytes::Bytes;
use tickwire_hub::{Channel, FsyncPolicy, Hub, HubConfig, PublishRequest};

use tickwire_model::DataDir;

use crate::FixEdgeError;
use crate::{acceptor, config::AcceptorConfig, FixRegistry};

/// What the simulator serves.
#[derive(Debug, Clone)]
pub struct SimConfig {
    pub listen: SocketAddr,
    /// Our CompID; any client CompID may log on.
    pub comp_id: String,
    pub symbols: Vec<String>,
    /// Quote updates per second per symbol.
    pub rate: u32,
    /// Where the private hub and sequence files go; a temporary directory if `None`.
    pub data: Option<PathBuf>,
    /// Serve FIX over TLS with this certificate and key (PEM).
    pub tls: Option<(PathBuf, PathBuf)>,
}

/// A small deterministic generator (xorshift64*): demo prices need no cryptographic quality.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
}

/// A price in units of 10^-5, printed exactly.
fn px(units: u64) -> String {
    format!("{}.{:05}", units / 100_000, units % 100_000)
}

/// Runs until SIGINT.
pub async fn run_until_interrupted(cfg: SimConfig) -> Result<(), FixEdgeError> {
    run(cfg, async {
        let _ = tokio::signal::ctrl_c().await;
    })
    .await
}

/// Runs until `shutdown` resolves. Prints `fix-sim listening on <addr>` once bound.
pub async fn run(
    cfg: SimConfig,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), FixEdgeError> {
    let (dir, temporary) = match &cfg.data {
        Some(d) => (d.clone(), false),
        None => (
            std::env::temp_dir().join(format!("tickwire-fix-sim-{}", std::process::id())),
            true,
        ),
    };
    std::fs::create_dir_all(&dir)?;
    let mut hc = HubConfig::new(dir.join("hub"));
    hc.fsync = FsyncPolicy::Never;
    let hub = Arc::new(
        tokio::task::spawn_blocking(move || Hub::open(hc))
            .await
            .map_err(|e| FixEdgeError::Config(format!("opening the simulator's hub: {e}")))??,
    );
    let mut chans = Vec::new();
    for s in &cfg.symbols {
        chans.push(
            Channel::parse(&tickwire_feed::names::quotes(s))
                .map_err(|e| FixEdgeError::Config(format!("symbol {s:?}: {e}")))?,
        );
    }
    let ac = AcceptorConfig {
        listen: cfg.listen.to_string(),
        sender_comp_id: cfg.comp_id.clone(),
        allowed_comp_ids: vec!["*".into()],
        ..AcceptorConfig::default()
    };
    let tls = match &cfg.tls {
        Some((cert, key)) => {
            let store = tickwire_tls::CertStore::new(Duration::from_secs(10));
            Some(store.acceptor(&store.load(cert, key)?, "fix", &[])?)
        }
        None => None,
    };
    let cancel = tokio_util::sync::CancellationToken::new();
    let gateway = tickwire_gateway::Gateway::new(hub.clone(), Default::default())
        .map_err(FixEdgeError::Config)?;
    let addr = acceptor::spawn(
        gateway,
        ac,
        DataDir::new(&dir),
        FixRegistry::default(),
        cancel.clone(),
        tls,
    )
    .await?;
    println!(
        "fix-sim listening on {addr} as {}{}",
        cfg.comp_id,
        if cfg.tls.is_some() { " (TLS)" } else { "" }
    );
    println!("  symbols: {}", cfg.symbols.join(","));

    let seed = tickwire_model::clock::now_nanos() | 1;
    let mut rng = Rng(seed);
    // Start each symbol somewhere between 0.5 and 2.0.
    let mut mids: Vec<u64> = chans
        .iter()
        .map(|_| 50_000 + rng.next() % 150_000)
        .collect();
    let period = Duration::from_secs_f64(1.0 / f64::from(cfg.rate.max(1)));
    let mut tick = tokio::time::interval(period);
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            _ = tick.tick() => {}
        }
        let mut reqs = Vec::with_capacity(chans.len());
        for (ch, mid) in chans.iter().zip(mids.iter_mut()) {
            // ±3 pips, never below 1.00000 - 0.99 worth of pips.
            let step = rng.next() % 7;
            *mid = (*mid + step).saturating_sub(3).max(1_000);
            let spread = 1 + rng.next() % 3;
            let data = serde_json::json!({
                "bid": px(*mid),
                "ask": px(*mid + spread),
                "bid_size": format!("{}", 100_000 * (1 + rng.next() % 10)),
                "ask_size": format!("{}", 100_000 * (1 + rng.next() % 10)),
            });
            reqs.push(PublishRequest {
                channel: ch.clone(),
                msg_id: None,
                data: Bytes::from(data.to_string()),
            });
        }
        for r in hub.publish(reqs).await {
            if let Err(e) = r {
                tracing::warn!("fix-sim: publish failed: {e}");
            }
        }
    }
    cancel.cancel();
    hub.shutdown().await;
    if temporary {
        let _ = std::fs::remove_dir_all(&dir);
    }
    Ok(())
}
