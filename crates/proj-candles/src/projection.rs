//! The live candle projection: one [`Aggregator`] per symbol over the quote and trade
//! streams, conflated live bars derived for `candles.<SYMBOL>.<res>`, closed bars persisted in
//! the candle store. The projection runner (`tickwire-projection`) drives it: it restores the
//! aggregators and stream positions from the store, feeds every publication after them once,
//! publishes the derived live bars at low priority, and asks for a checkpoint (bars, snapshots
//! and positions in one store transaction) every `commit_interval_ms`.

use std::{
    collections::{BTreeMap, HashMap},
    sync::{atomic::Ordering, Arc},
};

use bytes::Bytes;
use parking_lot::RwLock;
use serde::Serialize;
use tickwire_candles::{
    Aggregator, AggregatorConfig, BarView, Candle, ChangeKind, Resolution, TickOutcome,
};
use tickwire_feed::names;
use tickwire_hub::{Channel, PublishRequest};
use tickwire_model::{Epoch, Publication};
use tickwire_projection::{Positions, Projection, ProjectionError};
use tickwire_store::{Batch, Store};

use crate::{
    tick::{parse_tick, SourceKind},
    CandleService, CandleStats, CandlesConfig, CandlesError,
};

/// The candle store's positions table holds each source's epoch beside its offset, under a
/// key no namespace can have (namespace names are letters, digits, `_` and `-`).
fn epoch_key(namespace: &str) -> String {
    format!("@epoch:{namespace}")
}

pub struct CandleProjection {
    svc: Arc<CandleService>,
    agg_config: AggregatorConfig,
    /// Symbol name → index into `symbols`: the ONE hash lookup a tick costs. Everything else
    /// per symbol (aggregator, lag, dirty flags, live slots) sits in `symbols[index]`, so a tick
    /// does not hash its symbol again per map and per resolution. foldhash, not SipHash: a
    /// 5-8 byte symbol per tick, and the candle microbench measured SipHash at ~5 % of the
    /// per-tick cost; its per-process random seed keeps precomputed collisions out.
    index: HashMap<String, usize, foldhash::fast::RandomState>,
    symbols: Vec<SymbolState>,
    /// The source namespaces, in the runner's source order.
    sources: Vec<(String, SourceKind)>,
    /// Symbols with a live bar changed or a bar closed since the last flush (each once: exactly
    /// those whose `live` or `finals` is not empty).
    live_symbols: Vec<usize>,
    /// Closed/corrected bars and new symbols waiting for the next commit.
    pending: Batch,
    /// Symbols whose aggregator changed since the last commit (each once, see `SymbolState::dirty`).
    dirty_symbols: Vec<usize>,
    /// Symbol → resolutions (bit [`Resolution::index`]) with bars imported from a bar file,
    /// as of the restore: the store keeps those bars over the ones built here, so a final of
    /// such a bar is published with the stored content (a subscriber ends with the stored
    /// bar). Imports run only while no server holds the data directory, so this cannot go
    /// stale while the projection runs.
    imported: HashMap<String, u16>,
}

/// Everything the driver keeps for one symbol.
struct SymbolState {
    name: String,
    agg: Aggregator,
    /// How far the symbol's event time runs behind the server clock (append time minus the
    /// tick's own time, as of its newest tick): the timer closes bars on this feed clock, so a
    /// replayed or back-dated feed is not cut off by the wall clock. `None` until a tick since
    /// the start (a restored aggregator waits for one).
    lag_ms: Option<i64>,
    /// The aggregator changed since the last commit (then the symbol is in `dirty_symbols`).
    dirty: bool,
    /// Live bars changed since the last flush, conflated: a bar changed by 10,000 ticks between
    /// two flushes is published once. Bit [`Resolution::index`] set: publish the aggregator's
    /// current live bar of that resolution, read at the flush, so a tick only sets a bit
    /// instead of building and storing 12 candles. That bar is exactly the one the last live
    /// change reported until it closes; when it closes first, `route` clears the bit and its
    /// final content goes to `finals`.
    live: u16,
    /// Bars that closed or were corrected since the last flush, with their final content, in
    /// order: each is published (flagged `final`, and `corrected` for a late-tick correction)
    /// before the next live bar of its series, so a subscriber ends with exactly the stored
    /// bar of every closed bar. A second change of the same bar replaces the first here.
    finals: Vec<Final>,
    /// `candles.<SYMBOL>.<res>` per resolution, built on the first flush that needs it.
    channels: [Option<Channel>; 12],
}

impl SymbolState {
    fn new(name: String, agg: Aggregator) -> SymbolState {
        SymbolState {
            name,
            agg,
            lag_ms: None,
            dirty: false,
            live: 0,
            finals: Vec::new(),
            channels: Default::default(),
        }
    }

    /// The aggregator, and the sink its changes go to ([`route`] over this symbol's other
    /// fields), borrowed apart so the aggregator can report while the sink records.
    #[inline]
    fn split<'s>(
        &'s mut self,
        idx: usize,
        live_symbols: &'s mut Vec<usize>,
        pending_bars: &'s mut Vec<(String, Resolution, Candle)>,
    ) -> (&'s mut Aggregator, impl FnMut(BarView<'_>) + 's) {
        let SymbolState {
            name,
            agg,
            live,
            finals,
            ..
        } = self;
        let mut slots = LiveSlots { live, finals };
        let sink =
            move |c: BarView<'_>| route(name, &mut slots, idx, c, live_symbols, pending_bars);
        (agg, sink)
    }

    /// Notes that symbol `idx`'s aggregator changed since the last commit (listed once).
    fn mark_dirty(&mut self, idx: usize, dirty_symbols: &mut Vec<usize>) {
        if !self.dirty {
            self.dirty = true;
            dirty_symbols.push(idx);
        }
    }
}

impl CandleProjection {
    /// A projection over `sources` (namespace and kind, in the runner's order) with the
    /// aggregators `aggs` restored.
    pub fn new(
        svc: Arc<CandleService>,
        sources: Vec<(String, SourceKind)>,
        aggs: HashMap<String, Aggregator>,
    ) -> CandleProjection {
        let mut index =
            HashMap::with_capacity_and_hasher(aggs.len(), foldhash::fast::RandomState::default());
        let mut symbols = Vec::with_capacity(aggs.len());
        for (name, agg) in aggs {
            index.insert(name.clone(), symbols.len());
            symbols.push(SymbolState::new(name, agg));
        }
        CandleProjection {
            agg_config: AggregatorConfig {
                resolutions: svc.resolutions.clone(),
                price_source: svc.config.price_source,
                late_tolerance_ms: svc.config.late_tolerance_ms,
            },
            svc,
            index,
            symbols,
            sources,
            live_symbols: Vec::new(),
            pending: Batch::default(),
            dirty_symbols: Vec::new(),
            imported: HashMap::new(),
        }
    }

    fn apply(&mut self, source: usize, channel: &Channel, data: &[u8], log_ts: u64) {
        let Some(&(_, kind)) = self.sources.get(source) else {
            return;
        };
        let Some(tick) = parse_tick(kind, data, log_ts) else {
            self.svc.stats.bad_messages.fetch_add(1, Ordering::Relaxed);
            return;
        };
        let symbol = channel.name();
        let idx = match self.index.get(symbol) {
            Some(&i) => i,
            None => match self.add_symbol(symbol, source) {
                Some(i) => i,
                None => return, // config was validated at start
            },
        };
        let Some(st) = self.symbols.get_mut(idx) else {
            return;
        };
        if st.agg.watermark().is_none_or(|wm| tick.ts_ms >= wm) {
            // In range: parse_tick refused the message otherwise.
            let log_ms = i64::try_from(log_ts / 1_000_000).unwrap_or(i64::MAX);
            st.lag_ms = Some(log_ms.saturating_sub(tick.ts_ms).max(0));
        }
        let (agg, sink) = st.split(idx, &mut self.live_symbols, &mut self.pending.bars);
        if let TickOutcome::Dropped { .. } = agg.update_with(&tick, sink) {
            self.svc.stats.late_dropped.fetch_add(1, Ordering::Relaxed);
            tracing::debug!(%symbol, ts = tick.ts_ms, "tick later than the tolerance: dropped");
            return;
        }
        self.svc.stats.ticks.fetch_add(1, Ordering::Relaxed);
        st.mark_dirty(idx, &mut self.dirty_symbols);
    }

    /// Registers a symbol on its first tick (its price source is decided by the namespace it
    /// came from); `None` if its aggregator cannot be built.
    #[cold]
    fn add_symbol(&mut self, symbol: &str, source: usize) -> Option<usize> {
        let mut cfg = self.agg_config.clone();
        let namespace = self.sources.get(source).map_or("", |s| s.0.as_str());
        cfg.price_source = self.svc.config.source_for(symbol, namespace);
        let agg = Aggregator::new(cfg).ok()?;
        let idx = self.symbols.len();
        self.symbols.push(SymbolState::new(symbol.to_string(), agg));
        self.index.insert(symbol.to_string(), idx);
        let mut known = self.svc.symbols.write();
        if !known.contains_key(symbol) {
            let seen = tickwire_model::clock::now_millis_i64();
            known.insert(symbol.to_string(), seen);
            self.pending.new_symbols.push((symbol.to_string(), seen));
        }
        Some(idx)
    }

    /// Closes the bars of symbols whose feed went quiet, by each feed's clock (wall clock
    /// minus its observed lag and `close_delay_ms`). Symbols without a tick since the start
    /// have no known lag and wait for one.
    fn close_quiet_bars(&mut self, now_ms: i64) {
        self.close_quiet_bars_at(now_ms.saturating_sub(self.svc.config.close_delay_ms));
    }

    /// [`Driver::close_quiet_bars`] with the clock given (wall clock minus `close_delay_ms`).
    fn close_quiet_bars_at(&mut self, wall: i64) {
        for (idx, st) in self.symbols.iter_mut().enumerate() {
            let Some(lag) = st.lag_ms else {
                continue;
            };
            let now = wall.saturating_sub(lag);
            // Only aggregators whose watermark is behind `now` can close anything.
            if st.agg.watermark().is_some_and(|wm| wm < now) {
                let any = {
                    let (agg, mut sink) =
                        st.split(idx, &mut self.live_symbols, &mut self.pending.bars);
                    let mut any = false;
                    agg.close_until_with(now, |c| {
                        any = true;
                        sink(c);
                    });
                    any
                };
                if any {
                    st.mark_dirty(idx, &mut self.dirty_symbols);
                }
            }
        }
    }

    /// What changed since the last call, as groups to publish one after the other: first the
    /// final content of every bar that closed or was corrected (one round per group, so each
    /// group has at most one value per channel: the hub hands a state channel's subscribers
    /// only the newest value of a write batch), then the conflated live bars.
    fn flush(&mut self) -> Vec<Vec<PublishRequest>> {
        if self.live_symbols.is_empty() {
            return Vec::new();
        }
        let mut rounds: Vec<Vec<PublishRequest>> = Vec::new();
        let mut live_reqs = Vec::with_capacity(self.live_symbols.len() * 2);
        for idx in self.live_symbols.drain(..) {
            let Some(st) = self.symbols.get_mut(idx) else {
                continue;
            };
            if let Some(&marked) = self.imported.get(&st.name) {
                for f in &mut st.finals {
                    if marked & (1 << f.resolution.index()) != 0 {
                        match self
                            .svc
                            .store
                            .imported_bar(&st.name, f.resolution, f.candle.start_ms)
                        {
                            Ok(Some(stored)) => f.candle = stored,
                            Ok(None) => {}
                            Err(e) => {
                                tracing::warn!(symbol = %st.name, error = %e, "candle store: cannot read an imported bar")
                            }
                        }
                    }
                }
            }
            let SymbolState {
                name,
                agg,
                live,
                finals,
                channels,
                ..
            } = st;
            let mut channel_of = |res: Resolution| -> Option<Channel> {
                if let Some(c) = &channels[res.index()] {
                    return Some(c.clone());
                }
                let c = Channel::parse(&names::candles(name, res)).ok()?;
                channels[res.index()] = Some(c.clone());
                Some(c)
            };
            // Per series, its finals in order; more than MAX_FINAL_ROUNDS (a replay after a
            // restart, or a burst) keep the newest, the older ones being in the store.
            let mut per_res = [0usize; 12];
            for f in finals.iter() {
                per_res[f.resolution.index()] += 1;
            }
            let mut seen = [0usize; 12];
            for f in finals.drain(..) {
                let k = f.resolution.index();
                seen[k] += 1;
                let skip = per_res[k].saturating_sub(MAX_FINAL_ROUNDS);
                if seen[k] <= skip {
                    continue;
                }
                let round = seen[k] - skip - 1;
                let Some(channel) = channel_of(f.resolution) else {
                    continue;
                };
                let bar = LiveBarRef {
                    symbol: name,
                    resolution: f.resolution,
                    closed: true,
                    corrected: f.corrected,
                    candle: &f.candle,
                };
                let Ok(data) = serde_json::to_vec(&bar) else {
                    continue;
                };
                if rounds.len() <= round {
                    rounds.resize_with(round + 1, Vec::new);
                }
                rounds[round].push(PublishRequest {
                    channel,
                    msg_id: None,
                    data: Bytes::from(data),
                });
            }
            let live = std::mem::take(live);
            for res in Resolution::ALL
                .into_iter()
                .filter(|r| live & (1 << r.index()) != 0)
            {
                let Some(candle) = agg.live_bar(res) else {
                    continue;
                };
                let Some(channel) = channel_of(res) else {
                    continue;
                };
                let bar = LiveBarRef {
                    symbol: name,
                    resolution: res,
                    closed: false,
                    corrected: false,
                    candle: &candle,
                };
                let Ok(data) = serde_json::to_vec(&bar) else {
                    continue;
                };
                live_reqs.push(PublishRequest {
                    channel,
                    msg_id: None,
                    data: Bytes::from(data),
                });
            }
        }
        if !live_reqs.is_empty() {
            rounds.push(live_reqs);
        }
        rounds
    }

    /// Commits closed bars, changed snapshots, new symbols and `positions` in one store
    /// transaction. On failure the work stays pending for the next commit.
    fn commit(&mut self, positions: &Positions) -> Result<(), ProjectionError> {
        let mut batch = std::mem::take(&mut self.pending);
        for idx in self.dirty_symbols.drain(..) {
            let Some(st) = self.symbols.get_mut(idx) else {
                continue;
            };
            st.dirty = false;
            if let Ok(snap) = serde_json::to_vec(&st.agg) {
                batch.snapshots.push((st.name.clone(), snap));
            }
        }
        for (ns, next) in &positions.next {
            batch.positions.push((ns.clone(), *next));
        }
        for (ns, epoch) in &positions.epochs {
            batch.positions.push((epoch_key(ns), epoch.0));
        }
        let bars = batch.bars.len() as u64;
        match self.svc.store.commit(&batch) {
            Ok(()) => {
                self.svc
                    .stats
                    .bars_persisted
                    .fetch_add(bars, Ordering::Relaxed);
                Ok(())
            }
            Err(e) => {
                // Keep the work: the next commit retries it, positions do not move past it.
                batch.positions.clear();
                for (symbol, _) in batch.snapshots.drain(..) {
                    let Some(&idx) = self.index.get(&symbol) else {
                        continue;
                    };
                    if let Some(st) = self.symbols.get_mut(idx) {
                        st.mark_dirty(idx, &mut self.dirty_symbols);
                    }
                }
                self.pending.bars.splice(0..0, batch.bars);
                self.pending.new_symbols.splice(0..0, batch.new_symbols);
                Err(ProjectionError::state("candles", e))
            }
        }
    }
}

impl Projection for CandleProjection {
    fn name(&self) -> &str {
        "candles"
    }

    fn restore(&mut self) -> Result<Positions, ProjectionError> {
        let store_err = |e: tickwire_store::StoreError| ProjectionError::state("candles", e);
        let stored = self.svc.store.positions().map_err(store_err)?;
        let mut positions = Positions::default();
        for (key, v) in stored {
            match key.strip_prefix("@epoch:") {
                Some(ns) => {
                    positions.epochs.insert(ns.to_string(), Epoch(v));
                }
                None => {
                    positions.next.insert(key, v);
                }
            }
        }
        let mut aggs = HashMap::new();
        for (symbol, snap) in self.svc.store.snapshots().map_err(store_err)? {
            match serde_json::from_slice::<Aggregator>(&snap) {
                Ok(a) => {
                    aggs.insert(symbol, a);
                }
                Err(e) => {
                    // An unreadable snapshot (older format): the only safe restart is a full
                    // rebuild.
                    tracing::warn!(%symbol, "candle snapshot unreadable ({e}); rebuilding every series from the log");
                    aggs.clear();
                    positions = Positions::default();
                    break;
                }
            }
        }
        let mut imported: HashMap<String, u16> = HashMap::new();
        for (symbol, res) in self.svc.store.imported_series().map_err(store_err)? {
            *imported.entry(symbol).or_default() |= 1 << res.index();
        }
        let sources = std::mem::take(&mut self.sources);
        *self = CandleProjection::new(self.svc.clone(), sources, aggs);
        self.imported = imported;
        Ok(positions)
    }

    fn apply(&mut self, source: usize, p: &Publication) {
        self.apply(source, &p.channel, &p.data, p.timestamp);
    }

    fn tick(&mut self, now_ms: i64) {
        self.close_quiet_bars(now_ms);
    }

    fn derived(&mut self) -> Vec<Vec<PublishRequest>> {
        let out = self.flush();
        let n: usize = out.iter().map(Vec::len).sum();
        self.svc
            .stats
            .live_published
            .fetch_add(n as u64, Ordering::Relaxed);
        out
    }

    fn checkpoint(&mut self, positions: &Positions) -> Result<(), ProjectionError> {
        self.commit(positions)
    }
}

/// Most rounds of final bars one flush publishes per series (see [`CandleProjection::flush`]).
const MAX_FINAL_ROUNDS: usize = 16;

/// A bar that closed (or was corrected) since the last flush, with its final content.
struct Final {
    resolution: Resolution,
    candle: Candle,
    corrected: bool,
}

/// The live-publication fields of one [`SymbolState`], borrowed together while its
/// aggregator (another field) reports changes.
struct LiveSlots<'a> {
    live: &'a mut u16,
    finals: &'a mut Vec<Final>,
}

/// Routes one change of symbol `idx` (`name`): a live bar is marked for the next flush, a
/// closed or corrected bar goes to the next commit and to the finals of the next flush. A free
/// function over the pieces it touches so the aggregator can stay borrowed while it reports
/// (see [`SymbolState::split`]).
///
/// The live case (up to 12 per tick) is inlined into the aggregator's loop; the rest, once per
/// bar at most, is out of line ([`route_closed`]).
#[inline(always)]
fn route(
    name: &str,
    slots: &mut LiveSlots<'_>,
    idx: usize,
    c: BarView<'_>,
    live_symbols: &mut Vec<usize>,
    pending_bars: &mut Vec<(String, Resolution, Candle)>,
) {
    // Listed once while it has anything to publish.
    if *slots.live == 0 && slots.finals.is_empty() {
        live_symbols.push(idx);
    }
    if c.kind != ChangeKind::Live {
        return route_closed(name, slots, c, pending_bars);
    }
    *slots.live |= 1u16 << c.resolution.index();
}

/// [`route`] for a closed or corrected bar.
#[inline(never)]
fn route_closed(
    name: &str,
    slots: &mut LiveSlots<'_>,
    c: BarView<'_>,
    pending_bars: &mut Vec<(String, Resolution, Candle)>,
) {
    let candle = c.candle();
    let corrected = match c.kind {
        ChangeKind::Live => return,
        // Only the newest bar closes, and a marked live bar is the newest: its final content
        // goes out as a final, and the live bit must not publish the next bar's content for it.
        ChangeKind::Closed => {
            *slots.live &= !(1u16 << c.resolution.index());
            false
        }
        ChangeKind::Corrected => true,
    };
    let same_bar = slots
        .finals
        .iter_mut()
        .find(|f| f.resolution == c.resolution && f.candle.start_ms == candle.start_ms);
    match same_bar {
        Some(f) => {
            f.candle = candle.clone();
            f.corrected |= corrected;
        }
        None => slots.finals.push(Final {
            resolution: c.resolution,
            candle: candle.clone(),
            corrected,
        }),
    }
    pending_bars.push((name.to_string(), c.resolution, candle));
}

/// [`LiveBar`] by reference, so a flush serializes without cloning the symbol and the bar.
#[derive(Serialize)]
struct LiveBarRef<'a> {
    symbol: &'a str,
    resolution: Resolution,
    /// The bar's final content (it closed); absent while it is live.
    #[serde(rename = "final", skip_serializing_if = "std::ops::Not::not")]
    closed: bool,
    /// A late tick corrected the closed bar.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    corrected: bool,
    #[serde(flatten)]
    candle: &'a Candle,
}

/// The real driver's per-message path (`apply`, then `flush`) without taps, timers, replay or
/// a publisher task, so a criterion bench can measure it on one core
/// (`crates/server/benches/candle_driver.rs`). Not an API: hidden, and free to change.
#[doc(hidden)]
pub struct DriverBench {
    driver: CandleProjection,
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

#[cfg(test)]
mod fixtures;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tick::tests::lcg;
    use crate::LiveBar;
    use tickwire_candles::Decimal;

    /// The live slots (a bit per resolution, bars read at the flush) publish exactly what the
    /// former eager copies published: the bar as of its last live change, per series, once per
    /// flush; and closed/corrected bars are the aggregator's changes, in order. Random ticks
    /// for 3 symbols with late ticks (within and beyond the tolerance), jumps, quiet-bar
    /// closes and flushes in between, checked against an eager reference over `update_into`.
    #[test]
    fn lazy_live_slots_publish_what_eager_copies_did() {
        let dir = tempfile::tempdir().unwrap();
        let mut bench = DriverBench::open(dir.path()).unwrap();
        let cfg = bench.driver.agg_config.clone();
        let syms = ["AAA", "BBB", "CCC"];
        let channels: Vec<Channel> = syms
            .iter()
            .map(|s| Channel::parse(&format!("quotes.{s}")).unwrap())
            .collect();
        let mut shadow: Vec<Aggregator> = syms
            .iter()
            .map(|_| Aggregator::new(cfg.clone()).unwrap())
            .collect();
        let mut lags: Vec<Option<i64>> = vec![None; syms.len()];
        let mut eager: BTreeMap<(String, Resolution), Candle> = BTreeMap::new();
        let mut closed: Vec<(String, Resolution, Candle)> = Vec::new();
        let mut rng = lcg(1);
        let mut next = move |n: u64| (rng() >> 33) % n;
        let mut ts: i64 = 1_704_067_200_000;
        let mut flushes = 0;
        for step in 0..20_000 {
            match next(100) {
                0..=84 => {
                    let s = next(3) as usize;
                    ts += next(700) as i64;
                    // Mostly in order; some late within the 5 s tolerance, some beyond it.
                    let t = match next(20) {
                        0 => ts - next(5_000) as i64,
                        1 => ts - 6_000 - next(5_000) as i64,
                        _ => ts,
                    };
                    let bid = 100_000 + next(50) as i64;
                    let data = format!(
                        r#"{{"bid":"{}","ask":"{}","ts":{t}}}"#,
                        Decimal::new(bid, 5),
                        Decimal::new(bid + 1 + next(3) as i64, 5)
                    );
                    // Appended at `ts`: in-order ticks have lag 0, late ones more.
                    bench.apply(&channels[s], data.as_bytes(), (ts as u64) * 1_000_000);
                    let tick = parse_tick(SourceKind::Quote, data.as_bytes(), 0).unwrap();
                    if shadow[s].watermark().is_none_or(|wm| t >= wm) {
                        lags[s] = Some(ts - t);
                    }
                    let mut out = Vec::new();
                    shadow[s].update_into(&tick, &mut out);
                    for c in out {
                        match c.kind {
                            ChangeKind::Live => {
                                eager.insert((syms[s].to_string(), c.resolution), c.candle);
                            }
                            _ => closed.push((syms[s].to_string(), c.resolution, c.candle)),
                        }
                    }
                }
                85..=94 => {
                    // Quiet-bar close on each symbol's feed clock (wall minus its lag); a symbol
                    // without a tick yet is skipped.
                    let wall = ts + next(3_000) as i64;
                    bench.driver.close_quiet_bars_at(wall);
                    for (s, agg) in shadow.iter_mut().enumerate() {
                        let Some(lag) = lags[s] else { continue };
                        let now = wall - lag;
                        if agg.watermark().is_some_and(|wm| wm < now) {
                            for c in agg.close_until(now) {
                                closed.push((syms[s].to_string(), c.resolution, c.candle));
                            }
                        }
                    }
                }
                _ => {
                    let groups = bench.driver.flush();
                    let text = |r: &PublishRequest| {
                        (
                            r.channel.to_string(),
                            String::from_utf8(r.data.to_vec()).unwrap(),
                        )
                    };
                    // Every group but the last holds finals, at most one per channel.
                    let (live_group, final_groups): (Vec<PublishRequest>, &[Vec<PublishRequest>]) =
                        match groups.split_last() {
                            Some((last, rest))
                                if last.iter().all(|r| {
                                    !String::from_utf8_lossy(&r.data).contains("\"final\"")
                                }) =>
                            {
                                (last.clone(), rest)
                            }
                            _ => (Vec::new(), &groups[..]),
                        };
                    for g in final_groups {
                        let mut chans: Vec<String> =
                            g.iter().map(|r| r.channel.to_string()).collect();
                        let n = chans.len();
                        chans.sort();
                        chans.dedup();
                        assert_eq!(
                            chans.len(),
                            n,
                            "one value per channel per group at step {step}"
                        );
                    }
                    // Live: the newest live change of each series whose bar is still live.
                    let mut got: Vec<(String, String)> = live_group.iter().map(text).collect();
                    got.sort();
                    let mut want: Vec<(String, String)> = std::mem::take(&mut eager)
                        .into_iter()
                        .filter(|((symbol, resolution), candle)| {
                            let s = syms.iter().position(|x| x == symbol).unwrap();
                            shadow[s]
                                .live_bar(*resolution)
                                .is_some_and(|l| l.start_ms == candle.start_ms)
                        })
                        .map(|((symbol, resolution), candle)| {
                            let bar = LiveBar {
                                symbol: symbol.clone(),
                                resolution,
                                closed: false,
                                corrected: false,
                                candle,
                            };
                            (
                                names::candles(&symbol, resolution),
                                serde_json::to_string(&bar).unwrap(),
                            )
                        })
                        .collect();
                    want.sort();
                    assert_eq!(got, want, "live bars at step {step}");
                    // Finals: every closed or corrected bar, in order per series, its last
                    // content (a bar changed twice before the flush is published once).
                    let mut got_finals: Vec<(String, String, i64, String)> = Vec::new();
                    for g in final_groups {
                        for r in g {
                            let bar: LiveBar = serde_json::from_slice(&r.data).unwrap();
                            assert!(bar.closed);
                            got_finals.push((
                                bar.symbol.clone(),
                                bar.resolution.to_string(),
                                bar.candle.start_ms,
                                serde_json::to_string(&bar.candle).unwrap(),
                            ));
                        }
                    }
                    let mut want_finals: Vec<(String, String, i64, String)> = Vec::new();
                    for (sym, res, c) in &closed {
                        let key = (sym.clone(), res.to_string(), c.start_ms);
                        want_finals.retain(|w| (w.0.clone(), w.1.clone(), w.2) != key);
                        want_finals.push((
                            sym.clone(),
                            res.to_string(),
                            c.start_ms,
                            serde_json::to_string(c).unwrap(),
                        ));
                    }
                    // At most MAX_FINAL_ROUNDS per series: the newest (the rest are stored).
                    let mut kept: Vec<(String, String, i64, String)> = Vec::new();
                    for (k, w) in want_finals.iter().enumerate() {
                        let newer_same_series = want_finals[k + 1..]
                            .iter()
                            .filter(|o| o.0 == w.0 && o.1 == w.1)
                            .count();
                        if newer_same_series < MAX_FINAL_ROUNDS {
                            kept.push(w.clone());
                        }
                    }
                    let mut want_finals = kept;
                    got_finals.sort_by(|a, b| (&a.0, &a.1, a.2).cmp(&(&b.0, &b.1, b.2)));
                    want_finals.sort_by(|a, b| (&a.0, &a.1, a.2).cmp(&(&b.0, &b.1, b.2)));
                    assert_eq!(got_finals, want_finals, "finals at step {step}");
                    // Per symbol in order; across symbols the order is not part of the contract
                    // (the store upserts by key; the driver once iterated a HashMap).
                    let mut pending = std::mem::take(&mut bench.driver.pending.bars);
                    pending.sort_by(|a, b| a.0.cmp(&b.0));
                    closed.sort_by(|a, b| a.0.cmp(&b.0));
                    assert_eq!(
                        pending,
                        std::mem::take(&mut closed),
                        "closed at step {step}"
                    );
                    flushes += 1;
                }
            }
        }
        assert!(flushes > 100);
    }
}
