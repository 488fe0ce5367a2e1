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
use tickwire_model::{ByAlloc, Epoch, FieldSpans, Publication};
use tickwire_projection::{Fed, Positions, Projection, ProjectionError};
use tickwire_store::{Batch, Store};

use crate::{
    tick::{parse_tick_spanned, SourceKind},
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
    /// The same index by the channel's allocation, in front of `index`: the log reader, and the
    /// edges whose batches come through the append feed, hand out one `Channel` per name and
    /// thread ([`Channel::parse_cached`]), so a tick's lookup is an address hash, with no name
    /// hashed or compared (the name lookup's string compare alone was ~9 %
    /// of this thread under ingest). Bounded by [`BY_CHANNEL_MAX`]; it starts over when full.
    by_channel: ByAlloc<usize>,
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
            by_channel: ByAlloc::default(),
            symbols,
            sources,
            live_symbols: Vec::new(),
            pending: Batch::default(),
            dirty_symbols: Vec::new(),
            imported: HashMap::new(),
        }
    }

    fn apply(&mut self, source: usize, channel: &Channel, data: &[u8], log_ts: u64) {
        self.apply_spanned(source, channel, data, None, log_ts);
    }

    /// [`Self::apply`] with where the publish edge found the fields in `data`, if it did.
    fn apply_spanned(
        &mut self,
        source: usize,
        channel: &Channel,
        data: &[u8],
        spans: Option<&FieldSpans>,
        log_ts: u64,
    ) {
        let Some(&(_, kind)) = self.sources.get(source) else {
            return;
        };
        let Some(tick) = parse_tick_spanned(kind, data, spans, log_ts) else {
            self.svc.stats.bad_messages.fetch_add(1, Ordering::Relaxed);
            return;
        };
        let idx = match self.by_channel.get(&channel.alloc_id()) {
            Some(&(_, i)) => i,
            None => match self.symbol_index(channel, source) {
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
            tracing::debug!(symbol = %channel.name(), ts = tick.ts_ms, "tick later than the tolerance: dropped");
            return;
        }
        self.svc.stats.ticks.fetch_add(1, Ordering::Relaxed);
        st.mark_dirty(idx, &mut self.dirty_symbols);
    }

    /// The symbol index of `channel` by its name (registering the symbol on its first tick),
    /// remembered by the channel's allocation for the ticks that follow.
    #[cold]
    fn symbol_index(&mut self, channel: &Channel, source: usize) -> Option<usize> {
        let symbol = channel.name();
        let idx = match self.index.get(symbol) {
            Some(&i) => i,
            None => self.add_symbol(symbol, source)?,
        };
        if self.by_channel.len() >= BY_CHANNEL_MAX {
            self.by_channel.clear();
        }
        self.by_channel
            .insert(channel.alloc_id(), (channel.clone(), idx));
        Some(idx)
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

    /// Quotes and trades need no `msg_id`: the newest batches come from memory, not read back
    /// from the log (half of this thread's cost under ingest, bench/results/ingest.md).
    fn wants_feed(&self) -> bool {
        true
    }

    fn apply_fed(&mut self, source: usize, r: Fed<'_>) {
        self.apply_spanned(source, r.channel, r.data, r.spans, r.timestamp);
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

/// Channels [`CandleProjection::by_channel`] remembers before it starts over: well above the
/// symbols a server carries, and the log reader's own name cache is smaller (8,192).
const BY_CHANNEL_MAX: usize = 1 << 16;

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

mod driver_bench;
pub use driver_bench::DriverBench;

#[cfg(test)]
mod fixtures;

#[cfg(test)]
mod tests;
