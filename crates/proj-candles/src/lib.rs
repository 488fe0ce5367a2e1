//! Live candles as a projection: OHLCV bars at up to 12 resolutions built from the quote and
//! trade streams (`tickwire-candles` aggregates; this crate drives it through the projection
//! runner), closed bars in the candle store, live bars on `candles.<SYMBOL>.<res>`, and the
//! HTTP routes that serve them (TradingView UDF and the native `/v1/candles`).

mod config;
mod projection;
mod tick;
mod udf;

use std::{
    collections::{BTreeMap, HashMap},
    sync::{atomic::AtomicU64, Arc},
    time::Duration,
};

use parking_lot::{Mutex, RwLock};
use serde::{Deserialize, Serialize};
use tickwire_candles::{Candle, Resolution};
use tickwire_hub::Hub;
use tickwire_model::DataDir;
use tickwire_projection::{Runner, RunnerConfig, RunnerHandle};
use tickwire_store::Store;

pub use config::{CandlesConfig, SymbolConfig};
pub use projection::CandleProjection;
#[doc(hidden)]
pub use projection::DriverBench;
pub use tick::SourceKind;
pub use udf::{bars, routes, BarsError};

/// Why the candle projection could not start.
#[derive(Debug, thiserror::Error)]
pub enum CandlesError {
    #[error("candles: {0}")]
    Config(String),
    #[error(transparent)]
    Projection(#[from] tickwire_projection::ProjectionError),
}

/// Counters for health and metrics (the runner reports replay and lag).
#[derive(Debug, Default)]
pub struct CandleStats {
    pub ticks: AtomicU64,
    pub bad_messages: AtomicU64,
    pub late_dropped: AtomicU64,
    pub bars_persisted: AtomicU64,
    pub live_published: AtomicU64,
}

/// What the HTTP side (UDF, native candles API) needs: the store, symbol discovery and config;
/// and the running projection.
pub struct CandleService {
    pub hub: Arc<Hub>,
    pub store: Arc<Store>,
    pub config: CandlesConfig,
    pub resolutions: Vec<Resolution>,
    /// Known symbols and their first-seen time (unix ms).
    pub symbols: Arc<RwLock<BTreeMap<String, i64>>>,
    pub stats: Arc<CandleStats>,
    runner: Mutex<Option<RunnerHandle>>,
}

impl CandleService {
    /// Stops the projection after a last flush and checkpoint.
    pub fn stop(&self) {
        let handle = self.runner.lock().take();
        if let Some(mut h) = handle {
            h.stop();
        }
    }

    /// The runner's report (replay, lag), while it runs.
    pub fn runner_stats(&self) -> Option<Arc<tickwire_projection::RunnerStats>> {
        self.runner.lock().as_ref().map(|h| h.stats.clone())
    }
}

/// The payload of a `candles.<SYMBOL>.<res>` publication: the bar plus what it belongs to.
#[derive(Debug, Serialize, Deserialize)]
pub struct LiveBar {
    pub symbol: String,
    pub resolution: Resolution,
    /// The bar closed: this is its final content (as stored).
    #[serde(rename = "final", default, skip_serializing_if = "std::ops::Not::not")]
    pub closed: bool,
    /// A late tick corrected the closed bar.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub corrected: bool,
    #[serde(flatten)]
    pub candle: Candle,
}

/// Opens the candle store and starts the projection over the configured quote and trade
/// namespaces. `None` when candles are disabled.
pub fn start(
    hub: Arc<Hub>,
    config: &CandlesConfig,
    data: &DataDir,
) -> Result<Option<Arc<CandleService>>, CandlesError> {
    if !config.enabled {
        return Ok(None);
    }
    let resolutions = config.parsed_resolutions()?;
    if config.late_tolerance_ms < 0 {
        return Err(CandlesError::Config(
            "candles.late_tolerance_ms must be >= 0".into(),
        ));
    }
    let store_err = |e: tickwire_store::StoreError| CandlesError::Config(e.to_string());
    let store = Arc::new(Store::open(&data.candle_store()).map_err(store_err)?);
    let known: Vec<String> = hub.namespaces().into_iter().map(|n| n.name).collect();
    let mut sources = Vec::new();
    for (names, kind) in [
        (&config.quote_namespaces, SourceKind::Quote),
        (&config.trade_namespaces, SourceKind::Trade),
    ] {
        for ns in names {
            if !known.contains(ns) {
                return Err(CandlesError::Config(format!(
                    "namespace `{ns}` does not exist (known: {})",
                    known.join(", ")
                )));
            }
            sources.push((ns.clone(), kind));
        }
    }
    let symbols: BTreeMap<String, i64> = store.symbols().map_err(store_err)?.into_iter().collect();
    let svc = Arc::new(CandleService {
        hub: hub.clone(),
        store,
        config: config.clone(),
        resolutions,
        symbols: Arc::new(RwLock::new(symbols)),
        stats: Arc::new(CandleStats::default()),
        runner: Mutex::new(None),
    });
    let runner_config = RunnerConfig {
        sources: sources.iter().map(|(ns, _)| ns.clone()).collect(),
        flush_interval: Duration::from_millis(config.flush_interval_ms.max(10)),
        checkpoint_interval: Duration::from_millis(config.commit_interval_ms.max(10)),
    };
    let projection = CandleProjection::new(svc.clone(), sources, HashMap::new());
    let handle = Runner::spawn(hub, projection, runner_config)?;
    *svc.runner.lock() = Some(handle);
    Ok(Some(svc))
}
