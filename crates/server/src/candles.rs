//! The live candle driver: taps the quote and trade namespaces, keeps one
//! [`Aggregator`] per symbol, publishes conflated live bars on `candles.<SYMBOL>.<res>` and
//! persists closed bars in the candle store.
//!
//! # Threading and backpressure
//!
//! The driver runs on its own OS thread (it is CPU-bound: JSON parse, decimal parse and 12
//! resolutions per tick) and drains the hub taps in batches. It never awaits the hub inline:
//! live bars are collected in a map keyed by series (so a bar changed by 10,000 ticks between
//! two flushes is published once), and every `flush_interval_ms` the map is handed to a
//! publisher task as ONE `Hub::publish` batch. When the publisher is still busy the map simply
//! keeps conflating until the next flush. Store commits (fsync) happen on the driver thread
//! every `commit_interval_ms`; the taps' buffers absorb the pause.
//!
//! # Exactly-once across restarts
//!
//! Each commit writes, atomically: the bars that closed or were corrected, a snapshot of every
//! aggregator that changed, and per namespace the next log offset to process. On start the
//! aggregators are restored from their snapshots and the logs are replayed from those offsets.
//! The taps are taken BEFORE the replay reads the logs, and every message below a namespace's
//! next offset is skipped, so a message stored while the replay runs is seen once, not zero or
//! two times. Replay merges the namespaces by log timestamp so a trade is not judged late only
//! because the quotes were replayed first.

use std::{
    collections::{BTreeMap, HashMap, VecDeque},
    path::PathBuf,
    str::FromStr,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    task::Poll,
    time::{Duration, Instant},
};

use bytes::Bytes;
use parking_lot::RwLock;
use serde::{Deserialize, Serialize};
use tickwire_candles::{
    Aggregator, AggregatorConfig, BarChange, Candle, ChangeKind, Decimal, PriceSource, Resolution,
    Tick,
};
use tickwire_hub::{Channel, Hub, Message, PublishRequest};
use tickwire_store::{Batch, Store};
use tokio::sync::mpsc;

use crate::ServerError;

/// The `[candles]` section of the server configuration (see docs/candles.md).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CandlesConfig {
    /// Build candles at all.
    pub enabled: bool,
    /// Resolutions to build, native (`1m`) or TradingView (`1`) names. Default: all 12.
    pub resolutions: Vec<String>,
    /// Price of quote-built bars: `bid`, `ask`, `mid` or `last` (trades only). Trades always
    /// win inside a bar that has any.
    pub price_source: PriceSource,
    /// Per-namespace override of `price_source`, keyed by the namespace a symbol's first tick
    /// came from.
    pub namespace_price_source: BTreeMap<String, PriceSource>,
    /// Namespaces whose messages are quotes (`bid`/`ask`, or `last` only).
    pub quote_namespaces: Vec<String>,
    /// Namespaces whose messages are trades (`price`, optional `size`).
    pub trade_namespaces: Vec<String>,
    /// A tick up to this much older than the newest one still corrects its bar.
    pub late_tolerance_ms: i64,
    /// How often changed live bars are published (one hub batch per flush).
    pub flush_interval_ms: u64,
    /// How often closed bars, snapshots and positions are committed to the store.
    pub commit_interval_ms: u64,
    /// Quiet symbols' bars close when the wall clock minus this passes their end.
    pub close_delay_ms: i64,
    /// Capacity of each tap (messages); a full tap makes the namespace writer wait.
    pub tap_capacity: usize,
    /// Exchange name shown by the UDF endpoints.
    pub exchange: String,
    /// Defaults for symbols without their own metadata.
    pub default_session: String,
    /// UDF `type` of symbols without their own (`forex`, `crypto`, `stock`, ...).
    pub default_type: String,
    /// Per-symbol metadata and overrides.
    pub symbols: BTreeMap<String, SymbolConfig>,
}

/// Metadata and overrides for one symbol.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SymbolConfig {
    pub description: Option<String>,
    /// TradingView `pricescale` (10^decimals). Default: from the symbol's quotes.
    pub pricescale: Option<u64>,
    /// TradingView session, e.g. `24x7` or `0930-1600`.
    pub session: Option<String>,
    #[serde(rename = "type")]
    pub kind: Option<String>,
    pub price_source: Option<PriceSource>,
}

impl Default for CandlesConfig {
    fn default() -> Self {
        CandlesConfig {
            enabled: true,
            resolutions: Resolution::ALL
                .iter()
                .map(|r| r.as_str().to_string())
                .collect(),
            price_source: PriceSource::Mid,
            namespace_price_source: BTreeMap::new(),
            quote_namespaces: vec!["quotes".into()],
            trade_namespaces: vec!["trades".into()],
            late_tolerance_ms: 5_000,
            flush_interval_ms: 200,
            commit_interval_ms: 1_000,
            close_delay_ms: 1_000,
            tap_capacity: 65_536,
            exchange: "Tickwire".into(),
            default_session: "24x7".into(),
            default_type: "forex".into(),
            symbols: BTreeMap::new(),
        }
    }
}

impl CandlesConfig {
    /// The configured resolutions, parsed.
    pub fn parsed_resolutions(&self) -> Result<Vec<Resolution>, ServerError> {
        let mut out = Vec::new();
        for r in &self.resolutions {
            let r = Resolution::parse(r)
                .map_err(|e| ServerError::Config(format!("candles.resolutions: {e}")))?;
            if !out.contains(&r) {
                out.push(r);
            }
        }
        if out.is_empty() {
            return Err(ServerError::Config(
                "candles.resolutions must name at least one resolution".into(),
            ));
        }
        Ok(out)
    }

    fn source_for(&self, symbol: &str, namespace: &str) -> PriceSource {
        self.symbols
            .get(symbol)
            .and_then(|s| s.price_source)
            .or_else(|| self.namespace_price_source.get(namespace).copied())
            .unwrap_or(self.price_source)
    }
}

/// Counters for health and metrics.
#[derive(Debug, Default)]
pub struct CandleStats {
    pub ticks: AtomicU64,
    pub bad_messages: AtomicU64,
    pub late_dropped: AtomicU64,
    pub bars_persisted: AtomicU64,
    pub live_published: AtomicU64,
    /// Messages replayed from the log at start.
    pub replayed: AtomicU64,
    /// 1 once the replay finished and live ticks flow.
    pub live: AtomicU64,
}

/// What the HTTP side (UDF, native candles API) needs: the store, symbol discovery and config.
pub struct CandleService {
    pub hub: Arc<Hub>,
    pub store: Arc<Store>,
    pub config: CandlesConfig,
    pub resolutions: Vec<Resolution>,
    /// Known symbols and their first-seen time (unix ms).
    pub symbols: Arc<RwLock<BTreeMap<String, i64>>>,
    pub stats: Arc<CandleStats>,
}

/// The payload of a `candles.<SYMBOL>.<res>` publication: the bar plus what it belongs to.
#[derive(Debug, Serialize, Deserialize)]
pub struct LiveBar {
    pub symbol: String,
    pub resolution: Resolution,
    #[serde(flatten)]
    pub candle: Candle,
}

/// Opens the store, takes the taps and starts the driver thread. `None` when disabled.
pub fn start(
    hub: Arc<Hub>,
    config: &CandlesConfig,
    data_dir: PathBuf,
) -> Result<Option<Arc<CandleService>>, ServerError> {
    if !config.enabled {
        return Ok(None);
    }
    let resolutions = config.parsed_resolutions()?;
    if config.late_tolerance_ms < 0 {
        return Err(ServerError::Config(
            "candles.late_tolerance_ms must be >= 0".into(),
        ));
    }
    let store_err = |e: tickwire_store::StoreError| ServerError::Config(e.to_string());
    let store =
        Arc::new(Store::open(&data_dir.join("candles").join("candles.redb")).map_err(store_err)?);
    // Taps first, replay second: see the module docs.
    let mut sources = Vec::new();
    let known: Vec<String> = hub.namespaces().into_iter().map(|n| n.name).collect();
    for (names, kind) in [
        (&config.quote_namespaces, SourceKind::Quote),
        (&config.trade_namespaces, SourceKind::Trade),
    ] {
        for ns in names {
            if !known.contains(ns) {
                return Err(ServerError::Config(format!(
                    "candles: namespace `{ns}` does not exist (known: {})",
                    known.join(", ")
                )));
            }
            let rx = hub.tap(ns, config.tap_capacity)?;
            sources.push(Source {
                namespace: ns.clone(),
                kind,
                rx,
                next: 0,
            });
        }
    }
    let positions = store.positions().map_err(store_err)?;
    for s in &mut sources {
        s.next = positions.get(&s.namespace).copied().unwrap_or(0);
    }
    let mut aggs = HashMap::new();
    for (symbol, snap) in store.snapshots().map_err(store_err)? {
        match serde_json::from_slice::<Aggregator>(&snap) {
            Ok(a) => {
                aggs.insert(symbol, a);
            }
            Err(e) => {
                // An unreadable snapshot (older format): the only safe restart is a full rebuild.
                tracing::warn!(%symbol, "candle snapshot unreadable ({e}); rebuilding every series from the log");
                aggs.clear();
                for s in &mut sources {
                    s.next = 0;
                }
                break;
            }
        }
    }
    let symbols: BTreeMap<String, i64> = store.symbols().map_err(store_err)?.into_iter().collect();
    let svc = Arc::new(CandleService {
        hub: hub.clone(),
        store: store.clone(),
        config: config.clone(),
        resolutions: resolutions.clone(),
        symbols: Arc::new(RwLock::new(symbols)),
        stats: Arc::new(CandleStats::default()),
    });
    let (pub_tx, pub_rx) = mpsc::channel::<Vec<PublishRequest>>(2);
    tokio::runtime::Handle::current().spawn(publisher(hub.clone(), pub_rx, svc.stats.clone()));
    let mut driver = Driver::new(hub, svc.clone(), sources, aggs, pub_tx);
    std::thread::Builder::new()
        .name("tickwire-candles".into())
        .spawn(move || {
            driver.replay();
            // Its own runtime: the server's may shut down first, and timers of a runtime that is
            // shutting down panic instead of returning.
            match tokio::runtime::Builder::new_current_thread()
                .enable_time()
                .build()
            {
                Ok(rt) => rt.block_on(driver.run_live()),
                Err(e) => tracing::error!("candle driver cannot start its runtime: {e}"),
            }
        })
        .map_err(ServerError::Io)?;
    Ok(Some(svc))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SourceKind {
    Quote,
    Trade,
}

struct Source {
    namespace: String,
    kind: SourceKind,
    rx: mpsc::Receiver<Arc<Message>>,
    /// Next offset to process; anything below was already counted.
    next: u64,
}

struct Driver {
    hub: Arc<Hub>,
    svc: Arc<CandleService>,
    agg_config: AggregatorConfig,
    aggs: HashMap<String, Aggregator>,
    sources: Vec<Source>,
    /// Live bars changed since the last flush, conflated by series (symbol, then resolution,
    /// so a tick for a known symbol looks it up by `&str` without allocating a key).
    live: HashMap<String, HashMap<Resolution, Candle>>,
    /// Closed/corrected bars and new symbols waiting for the next commit.
    pending: Batch,
    /// Symbols whose aggregator changed since the last commit.
    dirty: std::collections::HashSet<String>,
    /// Per symbol, how far its event time runs behind the server clock (append time minus the
    /// tick's own time, as of its newest tick): the timer closes bars on this feed clock, so a
    /// replayed or back-dated feed is not cut off by the wall clock.
    lag_ms: HashMap<String, i64>,
    changes: Vec<BarChange>,
    pub_tx: mpsc::Sender<Vec<PublishRequest>>,
}

#[derive(Deserialize)]
struct QuoteMsg<'a> {
    #[serde(borrow, default)]
    bid: Option<&'a str>,
    #[serde(borrow, default)]
    ask: Option<&'a str>,
    #[serde(borrow, default)]
    last: Option<&'a str>,
    #[serde(default)]
    ts: Option<i64>,
}

#[derive(Deserialize)]
struct TradeMsg<'a> {
    #[serde(borrow)]
    price: &'a str,
    #[serde(borrow, default)]
    size: Option<&'a str>,
    #[serde(default)]
    ts: Option<i64>,
}

/// Turns a stored message into a tick. Event time: the message's own `ts` (unix ms, as import
/// writes it) when present, else the server's append time.
fn parse_tick(kind: SourceKind, data: &[u8], log_ts_nanos: u64) -> Option<Tick> {
    let log_ms = i64::try_from(log_ts_nanos / 1_000_000).ok()?;
    let dec = |s: &str| Decimal::from_str(s).ok();
    match kind {
        SourceKind::Quote => {
            let q: QuoteMsg<'_> = serde_json::from_slice(data).ok()?;
            let ts = q.ts.unwrap_or(log_ms);
            match (q.bid, q.ask, q.last) {
                (Some(b), Some(a), _) => Some(Tick::quote(ts, dec(b)?, dec(a)?)),
                // A quote that only carries a last price is a trade print without size.
                (_, _, Some(l)) => Some(Tick::trade(ts, dec(l)?, None)),
                _ => None,
            }
        }
        SourceKind::Trade => {
            let t: TradeMsg<'_> = serde_json::from_slice(data).ok()?;
            let size = match t.size {
                Some(s) => Some(dec(s)?),
                None => None,
            };
            Some(Tick::trade(t.ts.unwrap_or(log_ms), dec(t.price)?, size))
        }
    }
}

/// The channel and JSON data of a hub log record (format owned by `tickwire_hub::record`).
fn decode_record(rec: &tickwire_log::Record) -> Option<(Channel, Bytes)> {
    tickwire_hub::record::decode(rec).map(|p| (p.channel, p.data))
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

impl Driver {
    fn new(
        hub: Arc<Hub>,
        svc: Arc<CandleService>,
        sources: Vec<Source>,
        aggs: HashMap<String, Aggregator>,
        pub_tx: mpsc::Sender<Vec<PublishRequest>>,
    ) -> Driver {
        Driver {
            hub,
            agg_config: AggregatorConfig {
                resolutions: svc.resolutions.clone(),
                price_source: svc.config.price_source,
                late_tolerance_ms: svc.config.late_tolerance_ms,
            },
            svc,
            aggs,
            sources,
            live: HashMap::new(),
            pending: Batch::default(),
            dirty: std::collections::HashSet::new(),
            lag_ms: HashMap::new(),
            changes: Vec::new(),
            pub_tx,
        }
    }

    /// Rebuilds from each namespace's stored position to the end of its log, merging the
    /// namespaces by append time.
    fn replay(&mut self) {
        let started = Instant::now();
        let mut readers: Vec<(
            usize,
            tickwire_log::LogReader,
            VecDeque<tickwire_log::Record>,
            bool,
        )> = Vec::new();
        for (i, s) in self.sources.iter().enumerate() {
            if let Some(r) = self.hub.log_reader(&s.namespace) {
                readers.push((i, r, VecDeque::new(), false));
            }
        }
        let mut count = 0u64;
        loop {
            // Refill empty buffers; a reader that returns nothing is finished.
            for (i, reader, buf, done) in &mut readers {
                if buf.is_empty() && !*done {
                    let from = self.sources[*i].next.max(reader.start_offset());
                    match reader.read(from, 8192, 8 << 20) {
                        Ok(recs) if !recs.is_empty() => buf.extend(recs),
                        Ok(_) => *done = true,
                        Err(e) => {
                            tracing::error!(namespace = %self.sources[*i].namespace, "candle replay stopped: {e}");
                            *done = true;
                        }
                    }
                }
            }
            let pick = readers
                .iter()
                .enumerate()
                .filter_map(|(k, (_, _, buf, _))| buf.front().map(|r| (k, r.timestamp)))
                .min_by_key(|(_, ts)| *ts)
                .map(|(k, _)| k);
            let Some(k) = pick else { break };
            let Some((i, rec)) = readers
                .get_mut(k)
                .and_then(|(i, _, buf, _)| buf.pop_front().map(|r| (*i, r)))
            else {
                break;
            };
            if rec.offset < self.sources[i].next {
                continue;
            }
            if let Some((channel, data)) = decode_record(&rec) {
                self.apply(i, &channel, &data, rec.timestamp);
            } else {
                self.svc.stats.bad_messages.fetch_add(1, Ordering::Relaxed);
            }
            self.sources[i].next = rec.offset + 1;
            count += 1;
            if count.is_multiple_of(1_000_000) {
                self.commit();
            }
        }
        self.commit();
        self.svc.stats.replayed.store(count, Ordering::Relaxed);
        if count > 0 {
            tracing::info!(
                messages = count,
                secs = started.elapsed().as_secs_f64(),
                "candles rebuilt from the log"
            );
        }
    }

    async fn run_live(mut self) {
        self.svc.stats.live.store(1, Ordering::Relaxed);
        let flush_every = Duration::from_millis(self.svc.config.flush_interval_ms.max(10));
        let commit_every = Duration::from_millis(self.svc.config.commit_interval_ms.max(10));
        let mut last_flush = Instant::now();
        let mut last_commit = Instant::now();
        let mut batch: Vec<(usize, Arc<Message>)> = Vec::with_capacity(4096);
        loop {
            let deadline = tokio::time::Instant::from_std(last_flush + flush_every);
            let got = tokio::time::timeout_at(deadline, self.recv_some(&mut batch)).await;
            if let Ok(false) = got {
                // Every tap closed: the hub shut down.
                self.flush();
                self.commit();
                return;
            }
            for (i, m) in batch.drain(..) {
                let p = &m.publication;
                if p.offset < self.sources[i].next {
                    continue; // already counted by the replay
                }
                self.apply(i, &p.channel, &p.data, p.timestamp);
                self.sources[i].next = p.offset + 1;
            }
            if last_flush.elapsed() >= flush_every {
                self.close_quiet_bars();
                self.flush();
                last_flush = Instant::now();
            }
            if last_commit.elapsed() >= commit_every {
                self.commit();
                last_commit = Instant::now();
            }
        }
    }

    /// Waits for at least one tapped message, then takes whatever else is ready (bounded).
    /// Returns false when every tap is closed.
    async fn recv_some(&mut self, out: &mut Vec<(usize, Arc<Message>)>) -> bool {
        let sources = &mut self.sources;
        std::future::poll_fn(|cx| {
            let mut open = 0;
            for (i, s) in sources.iter_mut().enumerate() {
                loop {
                    if out.len() >= 4096 {
                        return Poll::Ready(true);
                    }
                    match s.rx.poll_recv(cx) {
                        Poll::Ready(Some(m)) => out.push((i, m)),
                        Poll::Ready(None) => break,
                        Poll::Pending => {
                            open += 1;
                            break;
                        }
                    }
                }
            }
            if !out.is_empty() {
                Poll::Ready(true)
            } else if open == 0 {
                Poll::Ready(false)
            } else {
                Poll::Pending
            }
        })
        .await
    }

    fn apply(&mut self, source: usize, channel: &Channel, data: &[u8], log_ts: u64) {
        let kind = self.sources[source].kind;
        let Some(tick) = parse_tick(kind, data, log_ts) else {
            self.svc.stats.bad_messages.fetch_add(1, Ordering::Relaxed);
            return;
        };
        let symbol = channel.name();
        if !self.aggs.contains_key(symbol) {
            let mut cfg = self.agg_config.clone();
            cfg.price_source = self
                .svc
                .config
                .source_for(symbol, &self.sources[source].namespace);
            let Ok(agg) = Aggregator::new(cfg) else {
                return; // config was validated at start
            };
            self.aggs.insert(symbol.to_string(), agg);
            let mut known = self.svc.symbols.write();
            if !known.contains_key(symbol) {
                known.insert(symbol.to_string(), now_ms());
                self.pending
                    .new_symbols
                    .push((symbol.to_string(), now_ms()));
            }
        }
        let Some(agg) = self.aggs.get_mut(symbol) else {
            return;
        };
        if agg.watermark().is_none_or(|wm| tick.ts_ms >= wm) {
            let log_ms = i64::try_from(log_ts / 1_000_000).unwrap_or(i64::MAX);
            let lag = log_ms.saturating_sub(tick.ts_ms).max(0);
            match self.lag_ms.get_mut(symbol) {
                Some(l) => *l = lag,
                None => {
                    self.lag_ms.insert(symbol.to_string(), lag);
                }
            }
        }
        let before = agg.late_dropped();
        agg.update_into(&tick, &mut self.changes);
        if agg.late_dropped() > before {
            self.svc.stats.late_dropped.fetch_add(1, Ordering::Relaxed);
            tracing::debug!(%symbol, ts = tick.ts_ms, "tick later than the tolerance: dropped");
            return;
        }
        self.svc.stats.ticks.fetch_add(1, Ordering::Relaxed);
        if !self.dirty.contains(symbol) {
            self.dirty.insert(symbol.to_string());
        }
        let changes = std::mem::take(&mut self.changes);
        for c in &changes {
            self.route(symbol, c);
        }
        self.changes = changes;
        self.changes.clear();
    }

    fn route(&mut self, symbol: &str, c: &BarChange) {
        match c.kind {
            ChangeKind::Live => {
                let per_symbol = match self.live.get_mut(symbol) {
                    Some(m) => m,
                    None => self.live.entry(symbol.to_string()).or_default(),
                };
                per_symbol.insert(c.resolution, c.candle.clone());
            }
            ChangeKind::Closed | ChangeKind::Corrected => {
                self.pending
                    .bars
                    .push((symbol.to_string(), c.resolution, c.candle.clone()));
            }
        }
    }

    /// Closes the bars of symbols whose feed went quiet, by each feed's clock (wall clock
    /// minus its observed lag and `close_delay_ms`). Symbols without a tick since the start
    /// have no known lag and wait for one.
    fn close_quiet_bars(&mut self) {
        let wall = now_ms().saturating_sub(self.svc.config.close_delay_ms);
        let mut out = Vec::new();
        let mut closed: Vec<(String, BarChange)> = Vec::new();
        for (symbol, agg) in &mut self.aggs {
            let Some(lag) = self.lag_ms.get(symbol) else {
                continue;
            };
            let now = wall.saturating_sub(*lag);
            // Only aggregators whose watermark is behind `now` can close anything.
            if agg.watermark().is_some_and(|wm| wm < now) {
                agg.close_until_into(now, &mut out);
                if !out.is_empty() {
                    closed.extend(out.drain(..).map(|c| (symbol.clone(), c)));
                }
            }
        }
        for (symbol, c) in closed {
            self.dirty.insert(symbol.clone());
            self.route(&symbol, &c);
        }
    }

    /// Hands the conflated live bars to the publisher as one batch, unless it is still busy.
    fn flush(&mut self) {
        if self.live.is_empty() {
            return;
        }
        // Busy publisher: keep conflating into the same map (the next flush sends the newest
        // bars) without building a batch only to drop it.
        let permit = match self.pub_tx.try_reserve() {
            Ok(p) => p,
            Err(mpsc::error::TrySendError::Full(())) => return,
            Err(mpsc::error::TrySendError::Closed(())) => {
                self.live.clear();
                return;
            }
        };
        let mut reqs = Vec::with_capacity(self.live.len());
        for (symbol, per_symbol) in &self.live {
            for (res, candle) in per_symbol {
                let Ok(channel) = Channel::parse(&format!("candles.{symbol}.{res}")) else {
                    continue;
                };
                let bar = LiveBar {
                    symbol: symbol.clone(),
                    resolution: *res,
                    candle: candle.clone(),
                };
                let Ok(data) = serde_json::to_vec(&bar) else {
                    continue;
                };
                reqs.push(PublishRequest {
                    channel,
                    msg_id: None,
                    data: Bytes::from(data),
                });
            }
        }
        permit.send(reqs);
        self.live.clear();
    }

    fn commit(&mut self) {
        let mut batch = std::mem::take(&mut self.pending);
        for symbol in self.dirty.drain() {
            if let Some(agg) = self.aggs.get(&symbol) {
                if let Ok(snap) = serde_json::to_vec(agg) {
                    batch.snapshots.push((symbol, snap));
                }
            }
        }
        for s in &self.sources {
            batch.positions.push((s.namespace.clone(), s.next));
        }
        let bars = batch.bars.len() as u64;
        match self.svc.store.commit(&batch) {
            Ok(()) => {
                self.svc
                    .stats
                    .bars_persisted
                    .fetch_add(bars, Ordering::Relaxed);
            }
            Err(e) => {
                // Keep the work: the next commit retries it, positions do not move past it.
                tracing::error!("candle store commit failed: {e}");
                batch.positions.clear();
                for (symbol, _) in batch.snapshots.drain(..) {
                    self.dirty.insert(symbol);
                }
                self.pending.bars.splice(0..0, batch.bars);
                self.pending.new_symbols.splice(0..0, batch.new_symbols);
            }
        }
    }
}

/// The real driver's per-message path (`apply`, then `flush`) without taps, timers, replay or
/// a publisher task, so a criterion bench can measure it on one core
/// (`crates/server/benches/candle_driver.rs`). Not an API: hidden, and free to change.
#[doc(hidden)]
pub struct DriverBench {
    driver: Driver,
    published: mpsc::Receiver<Vec<PublishRequest>>,
}

impl DriverBench {
    /// A driver with the default `[candles]` config over a hub and candle store in `data_dir`
    /// (which must be empty: the hub takes its lock), fed as if from the `quotes` namespace.
    pub fn open(data_dir: &std::path::Path) -> Result<DriverBench, ServerError> {
        let config = CandlesConfig::default();
        let hub = Arc::new(Hub::open(tickwire_hub::HubConfig::new(data_dir))?);
        let store = Store::open(&data_dir.join("candles").join("candles.redb"))
            .map_err(|e| ServerError::Config(e.to_string()))?;
        let svc = Arc::new(CandleService {
            hub: hub.clone(),
            store: Arc::new(store),
            resolutions: config.parsed_resolutions()?,
            config,
            symbols: Arc::new(RwLock::new(BTreeMap::new())),
            stats: Arc::new(CandleStats::default()),
        });
        // A tap nobody feeds: the bench hands messages to `apply` itself.
        let (_tx, rx) = mpsc::channel(1);
        let sources = vec![Source {
            namespace: "quotes".into(),
            kind: SourceKind::Quote,
            rx,
            next: 0,
        }];
        let (pub_tx, published) = mpsc::channel(2);
        Ok(DriverBench {
            driver: Driver::new(hub, svc, sources, HashMap::new(), pub_tx),
            published,
        })
    }

    /// Forgets every symbol's state, so a bench iteration can replay the same messages.
    pub fn reset(&mut self) {
        let (hub, svc, pub_tx) = (
            self.driver.hub.clone(),
            self.driver.svc.clone(),
            self.driver.pub_tx.clone(),
        );
        let sources = std::mem::take(&mut self.driver.sources);
        svc.symbols.write().clear();
        self.driver = Driver::new(hub, svc, sources, HashMap::new(), pub_tx);
    }

    /// One tapped quote message, exactly as the live loop applies it.
    pub fn apply(&mut self, channel: &Channel, data: &[u8], log_ts_nanos: u64) {
        self.driver.apply(0, channel, data, log_ts_nanos);
    }

    /// Publishes the conflated live bars as the live loop's flush does; returns how many.
    pub fn flush(&mut self) -> usize {
        self.driver.flush();
        let mut n = 0;
        while let Ok(batch) = self.published.try_recv() {
            n += batch.len();
        }
        // Closed bars wait for a commit that the bench does not run.
        self.driver.pending = Batch::default();
        n
    }

    /// Ticks counted so far (a check that the bench's messages were not rejected).
    pub fn ticks(&self) -> u64 {
        self.driver.svc.stats.ticks.load(Ordering::Relaxed)
    }
}

async fn publisher(
    hub: Arc<Hub>,
    mut rx: mpsc::Receiver<Vec<PublishRequest>>,
    stats: Arc<CandleStats>,
) {
    while let Some(reqs) = rx.recv().await {
        let n = reqs.len() as u64;
        let mut failed = 0;
        for r in hub.publish(reqs).await {
            if let Err(e) = r {
                failed += 1;
                if failed == 1 {
                    tracing::warn!("publishing a live candle failed: {e}");
                }
            }
        }
        stats
            .live_published
            .fetch_add(n - failed, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticks_from_messages() {
        let q = parse_tick(
            SourceKind::Quote,
            br#"{"bid":"1.1","ask":"1.2","ts":5}"#,
            9_000_000,
        )
        .unwrap();
        assert_eq!(q, Tick::quote(5, Decimal::new(11, 1), Decimal::new(12, 1)));
        let l = parse_tick(SourceKind::Quote, br#"{"last":"3"}"#, 9_000_000).unwrap();
        assert_eq!(l, Tick::trade(9, Decimal::new(3, 0), None));
        let t = parse_tick(
            SourceKind::Trade,
            br#"{"price":"3","size":"0.5"}"#,
            9_000_000,
        )
        .unwrap();
        assert_eq!(
            t,
            Tick::trade(9, Decimal::new(3, 0), Some(Decimal::new(5, 1)))
        );
        assert!(parse_tick(SourceKind::Quote, br#"{"bid":"1"}"#, 0).is_none());
        assert!(parse_tick(SourceKind::Trade, br#"{"price":"x"}"#, 0).is_none());
    }

    #[test]
    fn config_defaults_and_overrides() {
        let mut c = CandlesConfig::default();
        assert_eq!(c.parsed_resolutions().unwrap().len(), 12);
        c.namespace_price_source
            .insert("quotes".into(), PriceSource::Bid);
        c.symbols.insert(
            "BTCUSD".into(),
            SymbolConfig {
                price_source: Some(PriceSource::Last),
                ..Default::default()
            },
        );
        assert_eq!(c.source_for("EURUSD", "quotes"), PriceSource::Bid);
        assert_eq!(c.source_for("BTCUSD", "quotes"), PriceSource::Last);
        assert_eq!(c.source_for("EURUSD", "other"), PriceSource::Mid);
        c.resolutions = vec!["7m".into()];
        assert!(c.parsed_resolutions().is_err());
    }
}
