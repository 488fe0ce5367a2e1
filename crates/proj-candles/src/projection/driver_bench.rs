//! [`DriverBench`]: the live projection's per-message path, for the criterion bench.

use super::*;

/// The real driver's per-message path (`apply`, then `flush`) without taps, timers, replay or
/// a publisher task, so a criterion bench can measure it on one core
/// (`crates/server/benches/candle_driver.rs`). Not an API: hidden, and free to change.
#[doc(hidden)]
pub struct DriverBench {
    pub(super) driver: CandleProjection,
}

impl DriverBench {
    /// A projection with the default `[candles]` config over a candle store in `data_dir`,
    /// fed as if from the `quotes` namespace.
    pub fn open(data_dir: &std::path::Path) -> Result<DriverBench, CandlesError> {
        let config = CandlesConfig::default();
        let hub = tickwire_hub::Hub::open(tickwire_hub::HubConfig::new(data_dir))
            .map_err(|e| CandlesError::Config(e.to_string()))?;
        let store = Store::open(&tickwire_model::DataDir::new(data_dir).candle_store())
            .map_err(|e| CandlesError::Config(e.to_string()))?;
        let svc = Arc::new(CandleService {
            hub: Arc::new(hub),
            store: Arc::new(store),
            resolutions: config.parsed_resolutions()?,
            config,
            symbols: Arc::new(RwLock::new(BTreeMap::new())),
            stats: Arc::new(CandleStats::default()),
            runner: parking_lot::Mutex::new(None),
        });
        let sources = vec![("quotes".to_string(), SourceKind::Quote)];
        Ok(DriverBench {
            driver: CandleProjection::new(svc, sources, HashMap::new()),
        })
    }

    /// Forgets every symbol's state, so a bench iteration can replay the same messages.
    pub fn reset(&mut self) {
        let svc = self.driver.svc.clone();
        let sources = std::mem::take(&mut self.driver.sources);
        svc.symbols.write().clear();
        self.driver = CandleProjection::new(svc, sources, HashMap::new());
    }

    /// One tapped quote message, exactly as the live loop applies it.
    pub fn apply(&mut self, channel: &Channel, data: &[u8], log_ts_nanos: u64) {
        self.driver.apply(0, channel, data, log_ts_nanos);
    }

    /// Publishes the conflated live bars as the live loop's flush does; returns how many.
    pub fn flush(&mut self) -> usize {
        let n = self.driver.flush().iter().map(Vec::len).sum();
        // Closed bars wait for a commit that the bench does not run.
        self.driver.pending = Batch::default();
        n
    }

    /// Ticks counted so far (a check that the bench's messages were not rejected).
    pub fn ticks(&self) -> u64 {
        self.driver.svc.stats.ticks.load(Ordering::Relaxed)
    }
}
