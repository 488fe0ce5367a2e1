//! The live candle driver: taps the quote and trade namespaces, keeps one
//! [`Aggregator`] per symbol, publishes conflated live bars on `candles.<SYMBOL>.<res>` and
//! persists closed bars in the candle store.
//!
//! # Threading and backpressure
//!
//! The driver runs on its own OS thread (it is CPU-bound: JSON parse, decimal parse and the
//! aggregator, 12 resolutions per tick) and drains the hub taps one writer batch at a time,
//! dropping each batch once applied (that frees its room in the tap). It never awaits the hub
//! inline:
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
    Aggregator, AggregatorConfig, BarView, Candle, ChangeKind, Decimal, PriceSource, Resolution,
    Tick, TickOutcome,
};
use tickwire_hub::{Channel, Hub, PublishRequest, Tap, TapBatch};
use tickwire_model::jsonlex::{object, scalar, skip_ws, string};
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
    /// Capacity of each tap (messages); a full tap makes the namespace writer wait. Every
    /// queued message is held in memory, so this bounds what a lagging candle builder can pin:
    /// 65,536 messages of 1 KB quotes was 70 MB of RSS in the stalled-client test; 8,192 still
    /// covers several writer batches, so ingest does not stall on a merely busy builder.
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
            // Every live bar of every symbol is republished each flush, through the log: at 200 ms
            // that was 60,000 writes/s per 1,000 symbols and the p99 tail of quote fan-out on 2
            // cores (bench/results/fanout.md). Once a second is what exchange kline streams
            // offer (Binance: 1-2 s); a chart's price line still follows the quotes live.
            flush_interval_ms: 1_000,
            commit_interval_ms: 1_000,
            close_delay_ms: 1_000,
            tap_capacity: 8_192,
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

/// The name of the channel a symbol's live bars of one resolution are published on:
/// `candles.<SYMBOL>.<res>`. The one place that spells it (driver, UDF, native API).
pub fn channel_name(symbol: &str, res: Resolution) -> String {
    format!("candles.{symbol}.{res}")
}

/// Where the candle store lives in a server data directory: the server, `tickwire import` (bar
/// files) and the driver bench must open the same file.
pub fn store_path(data_dir: &std::path::Path) -> PathBuf {
    data_dir.join("candles").join("candles.redb")
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
    let store = Arc::new(Store::open(&store_path(&data_dir)).map_err(store_err)?);
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
    // Live bars are published on a thread of their own at low priority, not on the server's
    // runtime: a flush checks some 12,000 publications at once (1,000 symbols × 12
    // resolutions every flush), and on a shared worker that burst delayed WebSocket pushes
    // queued behind it (the fan-out benchmark's p99 tail).
    let (pub_hub, pub_stats) = (hub.clone(), svc.stats.clone());
    std::thread::Builder::new()
        .name("tickwire-candle-pub".into())
        .spawn(move || {
            tickwire_hub::lower_thread_priority();
            match tokio::runtime::Builder::new_current_thread().build() {
                Ok(rt) => rt.block_on(publisher(pub_hub, pub_rx, pub_stats)),
                Err(e) => tracing::error!("live candle publisher cannot start its runtime: {e}"),
            }
        })
        .map_err(ServerError::Io)?;
    let mut driver = Driver::new(hub, svc.clone(), sources, aggs, pub_tx);
    std::thread::Builder::new()
        .name("tickwire-candles".into())
        .spawn(move || {
            // Candles are derived data: the quote path they are built from comes first.
            tickwire_hub::lower_thread_priority();
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
    rx: Tap,
    /// Next offset to process; anything below was already counted.
    next: u64,
}

struct Driver {
    hub: Arc<Hub>,
    svc: Arc<CandleService>,
    agg_config: AggregatorConfig,
    /// Symbol name → index into `symbols`: the ONE hash lookup a tick costs. Everything else
    /// per symbol (aggregator, lag, dirty flags, live slots) sits in `symbols[index]`, so a tick
    /// does not hash its symbol again per map and per resolution. foldhash, not SipHash: a
    /// 5-8 byte symbol per tick, and the candle microbench measured SipHash at ~5 % of the
    /// per-tick cost; its per-process random seed keeps precomputed collisions out.
    index: HashMap<String, usize, foldhash::fast::RandomState>,
    symbols: Vec<SymbolState>,
    sources: Vec<Source>,
    /// Symbols with a live bar changed since the last flush (each once: exactly those whose
    /// `live` or `closed_live` is not empty).
    live_symbols: Vec<usize>,
    /// Closed/corrected bars and new symbols waiting for the next commit.
    pending: Batch,
    /// Symbols whose aggregator changed since the last commit (each once, see `SymbolState::dirty`).
    dirty_symbols: Vec<usize>,
    pub_tx: mpsc::Sender<Vec<PublishRequest>>,
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
    /// change reported until it closes; when it closes first, `route` moves its final content
    /// to `closed_live` and clears the bit (after closing, only a correction could change it).
    live: u16,
    /// Live bars that closed before the flush published them: their content at closing,
    /// which is their content at their last live change. At most one per resolution, and
    /// never together with the same resolution's bit in `live`.
    closed_live: Vec<(Resolution, Candle)>,
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
            closed_live: Vec::new(),
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
            closed_live,
            ..
        } = self;
        let mut slots = LiveSlots { live, closed_live };
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
    let fields = match scan_fields(kind, data) {
        Scan::Fields(f) => f,
        Scan::Unusual => serde_fields(kind, data)?,
    };
    tick_from_fields(kind, fields, log_ms, dec)
}

/// The tick a message's fields make, with `dec` reading the decimals (and `log_ms` the time
/// when the message has no `ts`).
#[inline]
fn tick_from_fields(
    kind: SourceKind,
    fields: TickFields<'_>,
    log_ms: i64,
    dec: impl Fn(&[u8]) -> Option<Decimal>,
) -> Option<Tick> {
    let ts = fields.ts.unwrap_or(log_ms);
    match kind {
        SourceKind::Quote => match (fields.bid, fields.ask, fields.last) {
            (Some(b), Some(a), _) => Some(Tick::quote(ts, dec(b)?, dec(a)?)),
            // A quote that only carries a last price is a trade print without size.
            (_, _, Some(l)) => Some(Tick::trade(ts, dec(l)?, None)),
            _ => None,
        },
        SourceKind::Trade => {
            let size = match fields.size {
                Some(s) => Some(dec(s)?),
                None => None,
            };
            Some(Tick::trade(ts, dec(fields.price?)?, size))
        }
    }
}

/// A decimal from the bytes of a JSON string. Prices are nearly always plain `123.456` with few
/// digits: those become `Decimal::new(mantissa, scale)` directly (the same value and scale
/// `Decimal::from_str` gives, tested); anything else goes through `from_str`.
#[inline]
fn dec(b: &[u8]) -> Option<Decimal> {
    let mut mantissa: i64 = 0;
    let mut digits = 0u32;
    let mut scale: Option<u32> = None;
    for &c in b {
        match c {
            b'0'..=b'9' => {
                mantissa = mantissa * 10 + i64::from(c - b'0');
                digits += 1;
                if let Some(s) = &mut scale {
                    *s += 1;
                }
            }
            b'.' if scale.is_none() && digits > 0 => scale = Some(0),
            _ => return dec_slow(b),
        }
        // 18 digits always fit an i64.
        if digits > 18 {
            return dec_slow(b);
        }
    }
    // "" and "1." are whatever from_str says.
    if digits == 0 || scale == Some(0) {
        return dec_slow(b);
    }
    Some(Decimal::new(mantissa, scale.unwrap_or(0)))
}

#[cold]
fn dec_slow(b: &[u8]) -> Option<Decimal> {
    Decimal::from_str(std::str::from_utf8(b).ok()?).ok()
}

/// The fields a tick is made of, borrowed from the message. Quotes use `bid ask last ts`,
/// trades `price size ts`.
#[derive(Debug, Default, PartialEq)]
struct TickFields<'a> {
    bid: Option<&'a [u8]>,
    ask: Option<&'a [u8]>,
    last: Option<&'a [u8]>,
    price: Option<&'a [u8]>,
    size: Option<&'a [u8]>,
    ts: Option<i64>,
}

/// The reference reading of a message: serde into borrowed structs. `None` when the message
/// is not a valid tick (bad JSON, wrong types, escaped strings, duplicate fields, no `price`).
fn serde_fields(kind: SourceKind, data: &[u8]) -> Option<TickFields<'_>> {
    match kind {
        SourceKind::Quote => {
            let q: QuoteMsg<'_> = serde_json::from_slice(data).ok()?;
            Some(TickFields {
                bid: q.bid.map(str::as_bytes),
                ask: q.ask.map(str::as_bytes),
                last: q.last.map(str::as_bytes),
                ts: q.ts,
                ..TickFields::default()
            })
        }
        SourceKind::Trade => {
            let t: TradeMsg<'_> = serde_json::from_slice(data).ok()?;
            Some(TickFields {
                price: Some(t.price.as_bytes()),
                size: t.size.map(str::as_bytes),
                ts: t.ts,
                ..TickFields::default()
            })
        }
    }
}

enum Scan<'a> {
    /// The message is a flat object the scanner fully understood; these are its fields,
    /// exactly as [`serde_fields`] would read them.
    Fields(TickFields<'a>),
    /// Anything else (escapes, non-ASCII, nested values, a price field that is not a string,
    /// duplicate fields, invalid JSON...): ask serde, which decides.
    Unusual,
}

/// Fast path of [`parse_tick`]: serde_json was the biggest single cost of the candle driver
/// per quote. Feeds send flat objects of ASCII strings and numbers, which this reads in one
/// pass with the publish path's lexer (`tickwire_model::jsonlex`). It only accepts what it
/// can read exactly as serde does; everything else is [`Scan::Unusual`], so any valid JSON
/// still gets serde's answer (tested against it).
fn scan_fields(kind: SourceKind, data: &[u8]) -> Scan<'_> {
    let mut f = TickFields::default();
    let end = object(data, skip_ws(data, 0), |key, i| {
        let slot = match (kind, key) {
            (SourceKind::Quote, b"bid") => Some(&mut f.bid),
            (SourceKind::Quote, b"ask") => Some(&mut f.ask),
            (SourceKind::Quote, b"last") => Some(&mut f.last),
            (SourceKind::Trade, b"price") => Some(&mut f.price),
            (SourceKind::Trade, b"size") => Some(&mut f.size),
            _ => None,
        };
        if let Some(slot) = slot {
            // serde rejects a duplicate field; leave that (and non-strings) to it.
            let (v, end) = string(data, i).filter(|_| slot.is_none())?;
            *slot = Some(v);
            Some(end)
        } else if key == b"ts" {
            let (v, end) = integer(data, i).filter(|_| f.ts.is_none())?;
            f.ts = Some(v);
            Some(end)
        } else {
            // A field serde ignores: any scalar; nesting is left to serde.
            scalar(data, i)
        }
    });
    // Only whitespace may follow the object (serde's `from_slice` rule).
    match end {
        Some(end) if skip_ws(data, end) == data.len() => Scan::Fields(f),
        _ => Scan::Unusual,
    }
}

/// A JSON integer at `d[i]` that fits an `i64` (what serde accepts for `ts`):
/// `-?(0|[1-9][0-9]*)` not followed by a fraction or exponent; its value and the index after it.
fn integer(d: &[u8], i: usize) -> Option<(i64, usize)> {
    let negative = d.get(i) == Some(&b'-');
    let digits = i + usize::from(negative);
    let n = d
        .get(digits..)?
        .iter()
        .take_while(|c| c.is_ascii_digit())
        .count();
    let end = digits + n;
    if n == 0
        || (d.get(digits) == Some(&b'0') && n > 1)
        || matches!(d.get(end), Some(b'.' | b'e' | b'E'))
    {
        return None;
    }
    // What `i64::from_str` gives (None on overflow), without its UTF-8 check and sign
    // parsing: the bytes are known ASCII digits. Negative values accumulate downwards so
    // `i64::MIN` parses.
    let mut v: i64 = 0;
    for &c in d.get(digits..end)? {
        let digit = i64::from(c - b'0');
        v = v.checked_mul(10)?;
        v = if negative {
            v.checked_sub(digit)?
        } else {
            v.checked_add(digit)?
        };
    }
    // serde_json reads `-0` as a float, which an `i64` field refuses.
    if v == 0 && negative {
        return None;
    }
    Some((v, end))
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
        let mut index =
            HashMap::with_capacity_and_hasher(aggs.len(), foldhash::fast::RandomState::default());
        let mut symbols = Vec::with_capacity(aggs.len());
        for (name, agg) in aggs {
            index.insert(name.clone(), symbols.len());
            symbols.push(SymbolState::new(name, agg));
        }
        Driver {
            hub,
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
        // Whole tap batches: each holds its share of the tap's capacity until it is dropped
        // here, after its messages were applied (the writer waits for that room).
        let mut batches: Vec<(usize, TapBatch)> = Vec::with_capacity(64);
        loop {
            let deadline = tokio::time::Instant::from_std(last_flush + flush_every);
            let got = tokio::time::timeout_at(deadline, self.recv_some(&mut batches)).await;
            if let Ok(false) = got {
                // Every tap closed: the hub shut down.
                self.flush();
                self.commit();
                return;
            }
            for (i, batch) in batches.drain(..) {
                for m in batch.iter() {
                    let p = &m.publication;
                    if p.offset < self.sources[i].next {
                        continue; // already counted by the replay
                    }
                    self.apply(i, &p.channel, &p.data, p.timestamp);
                    self.sources[i].next = p.offset + 1;
                }
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

    /// Waits for at least one tapped batch, then takes whatever else is ready, up to about
    /// 4,096 messages (a flush or commit is not put off for long). Returns false when every
    /// tap is closed.
    async fn recv_some(&mut self, out: &mut Vec<(usize, TapBatch)>) -> bool {
        let sources = &mut self.sources;
        std::future::poll_fn(|cx| {
            let mut open = 0;
            let mut messages: usize = out.iter().map(|(_, b)| b.len()).sum();
            for (i, s) in sources.iter_mut().enumerate() {
                loop {
                    if messages >= 4096 {
                        return Poll::Ready(true);
                    }
                    match s.rx.poll_recv(cx) {
                        Poll::Ready(Some(b)) => {
                            messages += b.len();
                            out.push((i, b));
                        }
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
        cfg.price_source = self
            .svc
            .config
            .source_for(symbol, &self.sources[source].namespace);
        let agg = Aggregator::new(cfg).ok()?;
        let idx = self.symbols.len();
        self.symbols.push(SymbolState::new(symbol.to_string(), agg));
        self.index.insert(symbol.to_string(), idx);
        let mut known = self.svc.symbols.write();
        if !known.contains_key(symbol) {
            let seen = now_ms();
            known.insert(symbol.to_string(), seen);
            self.pending.new_symbols.push((symbol.to_string(), seen));
        }
        Some(idx)
    }

    /// Closes the bars of symbols whose feed went quiet, by each feed's clock (wall clock
    /// minus its observed lag and `close_delay_ms`). Symbols without a tick since the start
    /// have no known lag and wait for one.
    fn close_quiet_bars(&mut self) {
        self.close_quiet_bars_at(now_ms().saturating_sub(self.svc.config.close_delay_ms));
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

    /// Hands the conflated live bars to the publisher as one batch, unless it is still busy.
    fn flush(&mut self) {
        if self.live_symbols.is_empty() {
            return;
        }
        // Busy publisher: keep conflating into the same slots (the next flush sends the newest
        // bars) without building a batch only to drop it.
        let permit = match self.pub_tx.try_reserve() {
            Ok(p) => p,
            Err(mpsc::error::TrySendError::Full(())) => return,
            Err(mpsc::error::TrySendError::Closed(())) => {
                for idx in self.live_symbols.drain(..) {
                    if let Some(st) = self.symbols.get_mut(idx) {
                        st.live = 0;
                        st.closed_live.clear();
                    }
                }
                return;
            }
        };
        let mut reqs = Vec::with_capacity(self.live_symbols.len() * 2);
        for idx in self.live_symbols.drain(..) {
            let Some(st) = self.symbols.get_mut(idx) else {
                continue;
            };
            let SymbolState {
                name,
                agg,
                live,
                closed_live,
                channels,
                ..
            } = st;
            let live = std::mem::take(live);
            let lazy = Resolution::ALL
                .into_iter()
                .filter(|r| live & (1 << r.index()) != 0)
                .filter_map(|r| Some((r, agg.live_bar(r)?)));
            // Borrowed apart: no per-symbol Vec of the bars between reading and publishing.
            for (res, candle) in closed_live.drain(..).chain(lazy) {
                let channel = match &channels[res.index()] {
                    Some(c) => c.clone(),
                    None => {
                        let Ok(c) = Channel::parse(&channel_name(name, res)) else {
                            continue;
                        };
                        channels[res.index()] = Some(c.clone());
                        c
                    }
                };
                let bar = LiveBarRef {
                    symbol: name,
                    resolution: res,
                    candle: &candle,
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
    }

    fn commit(&mut self) {
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
                    let Some(&idx) = self.index.get(&symbol) else {
                        continue;
                    };
                    if let Some(st) = self.symbols.get_mut(idx) {
                        st.mark_dirty(idx, &mut self.dirty_symbols);
                    }
                }
                self.pending.bars.splice(0..0, batch.bars);
                self.pending.new_symbols.splice(0..0, batch.new_symbols);
            }
        }
    }
}

/// The live-publication fields of one [`SymbolState`], borrowed together while its
/// aggregator (another field) reports changes.
struct LiveSlots<'a> {
    live: &'a mut u16,
    closed_live: &'a mut Vec<(Resolution, Candle)>,
}

/// Routes one change of symbol `idx` (`name`): a live bar is marked for the next flush, a
/// closed or corrected bar goes to the next commit. A free function over the pieces it touches
/// so the aggregator can stay borrowed while it reports (see [`SymbolState::split`]).
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
    if c.kind != ChangeKind::Live {
        return route_closed(name, slots, c, pending_bars);
    }
    // Listed once while it has anything to publish; a close only moves a bit of `live` to
    // `closed_live`, so only a live change can make a symbol listed.
    if *slots.live == 0 && slots.closed_live.is_empty() {
        live_symbols.push(idx);
    }
    *slots.live |= 1u16 << c.resolution.index();
    // A newer live bar replaces one that closed unpublished (latest wins).
    if !slots.closed_live.is_empty() {
        slots.closed_live.retain(|(r, _)| *r != c.resolution);
    }
}

/// [`route`] for a closed or corrected bar.
#[inline(never)]
fn route_closed(
    name: &str,
    slots: &mut LiveSlots<'_>,
    c: BarView<'_>,
    pending_bars: &mut Vec<(String, Resolution, Candle)>,
) {
    let bit = 1u16 << c.resolution.index();
    match c.kind {
        ChangeKind::Live => {}
        ChangeKind::Closed => {
            let candle = c.candle();
            // Only the newest bar closes, and a marked live bar is the newest: publish its
            // content as of now, because a later correction must not leak into the live
            // channel (it never did when the live bar was copied at every change).
            if *slots.live & bit != 0 {
                *slots.live &= !bit;
                slots.closed_live.push((c.resolution, candle.clone()));
            }
            pending_bars.push((name.to_string(), c.resolution, candle));
        }
        ChangeKind::Corrected => {
            pending_bars.push((name.to_string(), c.resolution, c.candle()));
        }
    }
}

/// [`LiveBar`] by reference, so a flush serializes without cloning the symbol and the bar.
#[derive(Serialize)]
struct LiveBarRef<'a> {
    symbol: &'a str,
    resolution: Resolution,
    #[serde(flatten)]
    candle: &'a Candle,
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
        let store =
            Store::open(&store_path(data_dir)).map_err(|e| ServerError::Config(e.to_string()))?;
        let svc = Arc::new(CandleService {
            hub: hub.clone(),
            store: Arc::new(store),
            resolutions: config.parsed_resolutions()?,
            config,
            symbols: Arc::new(RwLock::new(BTreeMap::new())),
            stats: Arc::new(CandleStats::default()),
        });
        // A tap nobody publishes into: the bench hands messages to `apply` itself.
        let rx = hub.tap("quotes", 1)?;
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

    /// A reproducible generator for the randomised tests (Knuth's MMIX LCG); each call
    /// returns the next state.
    fn lcg(seed: u64) -> impl FnMut() -> u64 {
        let mut state = seed;
        move || {
            state = state
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            state
        }
    }

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

    /// `parse_tick` through serde and `Decimal::from_str` alone: the reference the fast
    /// scanner and the fast decimals must agree with.
    fn parse_tick_serde(kind: SourceKind, data: &[u8], log_ts_nanos: u64) -> Option<Tick> {
        let log_ms = i64::try_from(log_ts_nanos / 1_000_000).ok()?;
        tick_from_fields(kind, serde_fields(kind, data)?, log_ms, dec_slow)
    }

    fn assert_same(kind: SourceKind, data: &[u8]) {
        let fast = parse_tick(kind, data, 7_000_000);
        let reference = parse_tick_serde(kind, data, 7_000_000);
        assert_eq!(
            fast,
            reference,
            "{kind:?} {:?}",
            String::from_utf8_lossy(data)
        );
        // The scale matters too: bars are published from the decimal text.
        if let (Some(a), Some(b)) = (fast, reference) {
            assert_eq!(format!("{a:?}"), format!("{b:?}"));
        }
    }

    const CORPUS: &[&str] = &[
        r#"{"bid":"1.2345","ask":"1.2347","ts":1795242936000}"#,
        r#"{"t":"1700000000000000","s":"12","bid":"1.08123","ask":"1.08125","pad":"xxxx"}"#,
        r#" { "bid" : "1.1" , "ask" : "1.2" } "#,
        "{\n\t\"bid\":\"1.1\",\r\n\"ask\":\"1.2\"}\n",
        r#"{"bid":"1.1","ask":"1.2","ts":-0}"#,
        r#"{"bid":"1.1","ask":"1.2","ts":0}"#,
        r#"{"bid":"1.1","ask":"1.2","ts":-5}"#,
        r#"{"bid":"1.1","ask":"1.2","ts":01}"#,
        r#"{"bid":"1.1","ask":"1.2","ts":1.0}"#,
        r#"{"bid":"1.1","ask":"1.2","ts":1e3}"#,
        r#"{"bid":"1.1","ask":"1.2","ts":"5"}"#,
        r#"{"bid":"1.1","ask":"1.2","ts":null}"#,
        r#"{"bid":"1.1","ask":"1.2","ts":9223372036854775807}"#,
        r#"{"bid":"1.1","ask":"1.2","ts":9223372036854775808}"#,
        r#"{"bid":"1.1","ask":"1.2","ts":-9223372036854775808}"#,
        r#"{"bid":"1.1","ask":"1.2","ts":1,"ts":2}"#,
        r#"{"bid":"1.1","bid":"1.3","ask":"1.2"}"#,
        r#"{"bid":"1.1","ask":null}"#,
        r#"{"bid":1.1,"ask":"1.2"}"#,
        r#"{"b\u0069d":"1.1","ask":"1.2"}"#,
        r#"{"bid":"1.\u0031","ask":"1.2"}"#,
        r#"{"bid":"1.1","ask":"1.2","x":{"y":[1,2]}}"#,
        r#"{"bid":"1.1","ask":"1.2","x":true}"#,
        r#"{"bid":"1.1","ask":"1.2","x":-1.5e-3}"#,
        r#"{"bid":"1.1","ask":"1.2","x":1.}"#,
        r#"{"bid":"1.1","ask":"1.2","x":"é"}"#,
        r#"{"bid":"1.1","ask":"1.2",}"#,
        r#"{"bid":"1.1","ask":"1.2"}x"#,
        r#"{"bid":"1.1","ask":"1.2"}}"#,
        r#"{"bid":"1.1" "ask":"1.2"}"#,
        r#"{"last":"3"}"#,
        r#"{"last":"3","bid":"1"}"#,
        r#"{"bid":"x","ask":"1"}"#,
        r#"{"bid":"","ask":"1"}"#,
        r#"{"price":"3","size":"0.5","ts":12}"#,
        r#"{"price":"3"}"#,
        r#"{"size":"3"}"#,
        r#"{"price":"3","size":null}"#,
        r#"{"price":"3","price":"4"}"#,
        r#"{}"#,
        r#"[]"#,
        r#""bid""#,
        "",
        "{",
    ];

    #[test]
    fn fast_decimals_match_from_str() {
        let mut cases: Vec<String> = [
            "0",
            "00",
            "0.0",
            "0.00000",
            "1",
            "1.",
            ".5",
            "1.5",
            "-1.5",
            "+1",
            "1e5",
            "1_0",
            "007.50",
            "1.2.3",
            "",
            " 1",
            "1 ",
            "123456789012345678",
            "1234567890123456789",
            "12345678901234567.8",
            "0.123456789012345678",
            "79228162514264337593543950335",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let mut rng = lcg(7);
        for _ in 0..20_000 {
            let state = rng();
            let v = state >> 20;
            let digits = v.to_string();
            let cut = (state % 25) as usize;
            let mut t = digits.clone();
            if cut < t.len() {
                t.insert(cut, '.');
            }
            cases.push(t);
        }
        for c in &cases {
            let want = Decimal::from_str(c).ok();
            let got = dec(c.as_bytes());
            assert_eq!(got, want, "{c:?}");
            // Same scale, not only the same value: bars are published from the decimal text.
            assert_eq!(format!("{got:?}"), format!("{want:?}"), "{c:?}");
        }
    }

    #[test]
    fn fast_scan_agrees_with_serde_on_edge_cases() {
        for kind in [SourceKind::Quote, SourceKind::Trade] {
            for m in CORPUS {
                assert_same(kind, m.as_bytes());
            }
        }
        // The common shapes do take the fast path.
        for m in &CORPUS[..3] {
            assert!(matches!(
                scan_fields(SourceKind::Quote, m.as_bytes()),
                Scan::Fields(_)
            ));
        }
    }

    /// Random mutations of real messages (bytes inserted, deleted or replaced with JSON-ish
    /// characters): the fast path must never answer differently from serde.
    #[test]
    fn fast_scan_agrees_with_serde_on_mutations() {
        let alphabet = b"{}[]:,\" \t\n\\0123456789-+.eEabdklstpricezun\x7f\xc3\xa9";
        let mut rng = lcg(42);
        let mut next = move |n: usize| ((rng() >> 33) as usize) % n;
        let mut fast_hits = 0;
        for _ in 0..200_000 {
            let base = CORPUS[next(3)].as_bytes();
            let mut m = base.to_vec();
            for _ in 0..1 + next(3) {
                let at = next(m.len() + 1);
                let c = alphabet[next(alphabet.len())];
                match next(3) {
                    0 => m.insert(at, c),
                    1 if at < m.len() => {
                        m.remove(at);
                    }
                    _ if at < m.len() => m[at] = c,
                    _ => m.push(c),
                }
            }
            for kind in [SourceKind::Quote, SourceKind::Trade] {
                if matches!(scan_fields(kind, &m), Scan::Fields(_)) {
                    fast_hits += 1;
                }
                assert_same(kind, &m);
            }
        }
        // Most mutants are still read by the fast path, so the comparison is not vacuous.
        assert!(fast_hits > 50_000, "{fast_hits}");
    }

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
                    bench.driver.flush();
                    let mut got: Vec<(String, String)> = Vec::new();
                    while let Ok(batch) = bench.published.try_recv() {
                        for r in batch {
                            got.push((
                                r.channel.to_string(),
                                String::from_utf8(r.data.to_vec()).unwrap(),
                            ));
                        }
                    }
                    got.sort();
                    let mut want: Vec<(String, String)> = std::mem::take(&mut eager)
                        .into_iter()
                        .map(|((symbol, resolution), candle)| {
                            let bar = LiveBar {
                                symbol: symbol.clone(),
                                resolution,
                                candle,
                            };
                            (
                                channel_name(&symbol, resolution),
                                serde_json::to_string(&bar).unwrap(),
                            )
                        })
                        .collect();
                    want.sort();
                    assert_eq!(got, want, "live bars at step {step}");
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
