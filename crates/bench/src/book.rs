//! book: order-book deltas per second delivered through to subscribers (issue 17), at whatever
//! `[books] depth` the server runs with (bench/run.sh: 10 and 0, all levels).
//!
//! 1. A snapshot of `--levels` L levels a side is published to each `depth.<SYM>` of
//!    `--symbols` N books, and the run waits until the book projection serves every
//!    `book.<SYM>` (`GET /v1/latest`).
//! 2. `--clients` C WebSocket (JSON) subscribers subscribe to `--subs` K `book.<SYM>` channels
//!    each, and keep their books from the snapshot and deltas (docs/books.md, "Applying
//!    values"), verifying each value's checksum with their own code (not the server's).
//! 3. One HTTP publisher sends depth `updates`, one level change per message, open loop at
//!    `--rate` R updates/s: each sets the size of an existing level of a random book and side,
//!    half of them among the best 10 levels (so depth 10 has deltas to carry) and half beyond
//!    (levels a full-depth book carries and a depth-10 one does not). Nothing is added or
//!    deleted, so every book keeps its shape.
//! 4. After `--drain` seconds every subscriber's book must equal the server's
//!    (`GET /v1/latest/book.<SYM>`: same `seq`, same level texts in the same order).
//!
//! The size an update sets is its number plus one (update k is due at `start + k / R`), so a
//! delta tells which update each level it carries comes from: latency is arrival minus that
//! update's due time, per level, end to end (publish, projection with its flush interval,
//! fan-out). Snapshot sizes have a fractional part and are never timed.

use std::{
    collections::{BTreeMap, HashMap},
    sync::{
        atomic::{AtomicBool, AtomicUsize, Ordering},
        Arc, OnceLock,
    },
    time::{Duration, Instant},
};

use hdrhistogram::Histogram;
use serde::Deserialize;
use tokio::task::JoinSet;

use crate::{
    batch::Publisher,
    error::Result,
    msg::{now_micros, push_u64, symbol},
    open_loop::{wait_until, Schedule, PACE_US},
    proto::{http_get, ws_frame, Conn},
    stats::{histogram, Latency, Sampler},
    BenchError, RunArgs, RunResult, SubEncoding, Target,
};

/// Levels the server's checksum covers per side (docs/books.md, "The checksum").
const CHECKSUM_LEVELS: usize = 10;
/// The best levels half of the updates go to: depth 10, the default and the issue's row.
const TOP: usize = 10;
/// Snapshot messages per publish request (each is ~4 KB at 50 levels a side).
const SNAPSHOT_BATCH: usize = 50;
/// How long the projection may take to serve the first snapshots, and subscribers to be
/// confirmed.
const SETUP_TIMEOUT: Duration = Duration::from_secs(20);

/// Flags shared by the publisher, the subscribers and the window's clock.
#[derive(Default)]
struct BookPhase {
    measuring: AtomicBool,
    stop: AtomicBool,
    /// Subscribers whose every subscription the server confirmed.
    subscribed: AtomicUsize,
    /// The publisher's open-loop schedule (update k due at `start + k / rate`).
    schedule: OnceLock<Schedule>,
}

/// The price of level `j` (0: best) of a side, as text with 4 decimals, from integer ticks:
/// bids 99.9999, 99.9998, …; asks 100.0001, 100.0002, ….
fn price(bid: bool, j: usize) -> String {
    let ticks = if bid {
        1_000_000u64.saturating_sub(1 + j as u64)
    } else {
        1_000_001 + j as u64
    };
    format!("{}.{:04}", ticks / 10_000, ticks % 10_000)
}

/// splitmix64: a fixed-seed generator, so every run (and row) draws the same updates.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

/// Which level an update changes: half among the best [`TOP`], half beyond them.
fn pick_level(rng: &mut Rng, levels: usize) -> usize {
    if levels <= TOP || rng.next() & 1 == 0 {
        rng.below(levels.min(TOP))
    } else {
        TOP + rng.below(levels - TOP)
    }
}

/// `{"snapshot":[…]}` with `levels` a side; sizes `j + 1.5` (fractional: never timed).
fn snapshot_message(bids: &[String], asks: &[String]) -> Vec<u8> {
    let mut out = Vec::with_capacity(64 * (bids.len() + asks.len()) + 16);
    out.extend_from_slice(br#"{"snapshot":["#);
    let mut first = true;
    for (side, prices) in [("bid", bids), ("ask", asks)] {
        for (j, p) in prices.iter().enumerate() {
            if !std::mem::take(&mut first) {
                out.push(b',');
            }
            out.extend_from_slice(br#"{"side":""#);
            out.extend_from_slice(side.as_bytes());
            out.extend_from_slice(br#"","price":""#);
            out.extend_from_slice(p.as_bytes());
            out.extend_from_slice(br#"","size":""#);
            push_u64(&mut out, j as u64 + 1);
            out.extend_from_slice(br#".5"}"#);
        }
    }
    out.extend_from_slice(b"]}");
    out
}

/// One book value as the subscriber reads it (docs/books.md, "Values").
#[derive(Deserialize)]
struct BookValue<'a> {
    #[serde(default)]
    snapshot: bool,
    seq: u64,
    #[serde(default)]
    prev: Option<u64>,
    checksum: u32,
    #[serde(default)]
    depth: Option<u32>,
    #[serde(borrow)]
    bids: Vec<(&'a str, &'a str)>,
    #[serde(borrow)]
    asks: Vec<(&'a str, &'a str)>,
}

/// A push: `{"ch":"book.S0001","offset":…,"ts":…,"data":{…}}`.
#[derive(Deserialize)]
struct Push<'a> {
    #[serde(borrow)]
    ch: &'a str,
    #[serde(borrow)]
    data: BookValue<'a>,
}

/// `GET /v1/latest/<channel>`: `{"channel","offset","ts","data"}`.
#[derive(Deserialize)]
struct LatestAnswer<'a> {
    #[serde(borrow)]
    data: BookValue<'a>,
}

/// A price as an ordering key: the exact decimal scaled to 18 places (prices with more places,
/// or with more than 20 integer digits, are refused: this run never publishes them). Books
/// key levels by value, so `"1.10"` and `"1.1"` are one level, as the server keys them.
fn price_key(s: &str) -> Option<u128> {
    let (int, frac) = s.split_once('.').unwrap_or((s, ""));
    if int.is_empty() && frac.is_empty()
        || int.len() > 20
        || frac.len() > 18
        || !int.bytes().chain(frac.bytes()).all(|b| b.is_ascii_digit())
    {
        return None;
    }
    let mut v: u128 = 0;
    for b in int.bytes() {
        v = v * 10 + u128::from(b - b'0');
    }
    for k in 0..18 {
        let d = frac.as_bytes().get(k).map_or(0, |b| b - b'0');
        v = v * 10 + u128::from(d);
    }
    Some(v)
}

/// Any spelling of zero deletes a level.
fn is_zero(size: &str) -> bool {
    size.bytes().all(|b| b == b'0' || b == b'.')
}

/// A subscriber's copy of one book.
#[derive(Default)]
struct Held {
    seq: u64,
    /// By price key; the best bid is the last.
    bids: BTreeMap<u128, (String, String)>,
    /// By price key; the best ask is the first.
    asks: BTreeMap<u128, (String, String)>,
}

impl Held {
    fn set(&mut self, bid: bool, levels: &[(&str, &str)]) -> std::result::Result<(), String> {
        let side = if bid { &mut self.bids } else { &mut self.asks };
        for &(p, s) in levels {
            let k = price_key(p).ok_or_else(|| format!("price {p:?} is not a decimal"))?;
            if is_zero(s) {
                side.remove(&k);
            } else {
                side.insert(k, (p.to_string(), s.to_string()));
            }
        }
        Ok(())
    }

    fn bids(&self) -> impl Iterator<Item = &(String, String)> {
        self.bids.values().rev()
    }

    fn asks(&self) -> impl Iterator<Item = &(String, String)> {
        self.asks.values()
    }

    /// docs/books.md, "The checksum": written here from the document, not taken from the
    /// server's crate, so a server that computes it wrongly does not check itself.
    fn checksum(&self) -> u32 {
        let mut h = crc32fast::Hasher::new();
        let mut put = |t: &str| {
            let digits = t.bytes().filter(|&b| b != b'.').skip_while(|&b| b == b'0');
            for b in digits {
                h.update(&[b]);
            }
        };
        for (p, s) in self.asks().take(CHECKSUM_LEVELS) {
            put(p);
            put(s);
        }
        for (p, s) in self.bids().take(CHECKSUM_LEVELS) {
            put(p);
            put(s);
        }
        h.finalize()
    }

    /// Whether this is the book of `v` (a snapshot, as `latest` answers): same sequence number,
    /// same levels with the same texts, best first.
    fn equals(&self, v: &BookValue<'_>) -> bool {
        fn same<'a>(
            mine: impl Iterator<Item = &'a (String, String)>,
            theirs: &[(&str, &str)],
        ) -> bool {
            let mine: Vec<&(String, String)> = mine.collect();
            mine.len() == theirs.len()
                && mine
                    .iter()
                    .zip(theirs)
                    .all(|(m, t)| m.0 == t.0 && m.1 == t.1)
        }
        self.seq == v.seq && same(self.bids(), &v.bids) && same(self.asks(), &v.asks)
    }
}

/// What a subscriber holds of one channel.
enum BookState {
    /// No snapshot yet.
    Waiting,
    Held(Held),
    /// A delta did not follow the book held: a real client would subscribe again; this one
    /// counts the gap and stops applying until a snapshot comes, so it cannot converge.
    Broken,
}

struct SubOutcome {
    /// Symbol → the book at the end.
    books: HashMap<usize, BookState>,
    /// Deltas (not snapshots) received while measuring.
    deltas: u64,
    /// Levels those deltas carried.
    levels: u64,
    /// Bytes of the pushes counted in `deltas`.
    bytes: u64,
    hist: Histogram<u64>,
    gaps: u64,
    mismatches: u64,
    snapshots: u64,
    /// `depth` of the snapshots seen (the server's `[books] depth`), if any came.
    depth: Option<u32>,
}

impl SubOutcome {
    /// Nothing received yet; each of `symbols` waits for its snapshot.
    fn waiting_for(symbols: &[usize]) -> SubOutcome {
        SubOutcome {
            books: symbols.iter().map(|&s| (s, BookState::Waiting)).collect(),
            deltas: 0,
            levels: 0,
            bytes: 0,
            hist: histogram(),
            gaps: 0,
            mismatches: 0,
            snapshots: 0,
            depth: None,
        }
    }
}

/// Symbol index of `book.S0042`.
fn symbol_of(ch: &str) -> Option<usize> {
    ch.strip_prefix("book.S")?.parse().ok()
}

fn symbols_of(a: &RunArgs, i: usize) -> Vec<usize> {
    let n = a.symbols.max(1);
    let k = a.subs.clamp(1, n);
    (0..k).map(|j| (i * k + j) % n).collect()
}

async fn subscriber(
    mut conn: Conn,
    phase: Arc<BookPhase>,
    symbols: Vec<usize>,
) -> Result<SubOutcome> {
    let mut out = Vec::new();
    for (id, &s) in symbols.iter().enumerate() {
        let cmd = format!(
            r#"{{"id":{id},"op":"subscribe","channel":"book.{}"}}"#,
            symbol(s)
        );
        ws_frame(&mut out, cmd.as_bytes());
    }
    conn.send(&out).await?;
    let mut o = SubOutcome::waiting_for(&symbols);
    let mut acked = 0usize;
    while !phase.stop.load(Ordering::Acquire) {
        let measuring = phase.measuring.load(Ordering::Relaxed);
        let sched = phase.schedule.get().copied();
        let mut now = 0u64;
        let mut bad: Option<String> = None;
        let read = conn.read_some(usize::MAX, |m: &[u8]| {
            if bad.is_some() {
                return;
            }
            if !m.starts_with(br#"{"ch":"#) {
                // A reply to one of the subscribe commands.
                if memchr::memmem::find(m, br#""ok":true"#).is_some() {
                    acked += 1;
                    if acked == symbols.len() {
                        phase.subscribed.fetch_add(1, Ordering::AcqRel);
                    }
                } else {
                    bad = Some(format!("subscribe refused: {}", String::from_utf8_lossy(m)));
                }
                return;
            }
            if now == 0 {
                // One clock read per socket read, once the bytes are in.
                now = now_micros();
            }
            match apply(&mut o, m, measuring, sched, now) {
                Ok(()) => {}
                Err(e) => bad = Some(e),
            }
        });
        match tokio::time::timeout(Duration::from_millis(200), read).await {
            Ok(Ok(true)) => {}
            Ok(Ok(false)) => {
                return Err(BenchError::proto(
                    "tickwire-ws",
                    "the server closed a book subscriber",
                ))
            }
            Ok(Err(e)) => {
                if phase.stop.load(Ordering::Acquire) {
                    break;
                }
                return Err(e);
            }
            Err(_) => continue,
        }
        if let Some(e) = bad {
            return Err(BenchError::proto("tickwire-ws", e));
        }
    }
    Ok(o)
}

/// Applies one push to the subscriber's books (docs/books.md, "Applying values") and counts it.
fn apply(
    o: &mut SubOutcome,
    m: &[u8],
    measuring: bool,
    sched: Option<Schedule>,
    now: u64,
) -> std::result::Result<(), String> {
    let p: Push<'_> = serde_json::from_slice(m)
        .map_err(|e| format!("book push {e}: {}", String::from_utf8_lossy(m)))?;
    let sym = symbol_of(p.ch).ok_or_else(|| format!("a push on {}", p.ch))?;
    let v = p.data;
    let state = o
        .books
        .get_mut(&sym)
        .ok_or_else(|| format!("a push on {}, not subscribed", p.ch))?;
    if v.snapshot {
        o.snapshots += 1;
        o.depth = v.depth.or(o.depth);
        let mut h = Held {
            seq: v.seq,
            ..Held::default()
        };
        h.set(true, &v.bids)?;
        h.set(false, &v.asks)?;
        if h.checksum() != v.checksum {
            o.mismatches += 1;
        }
        *state = BookState::Held(h);
        return Ok(());
    }
    if measuring {
        o.deltas += 1;
        o.levels += (v.bids.len() + v.asks.len()) as u64;
        o.bytes += m.len() as u64;
        if let Some(s) = sched {
            // Integer sizes are update numbers plus one (snapshot sizes end in .5).
            for (_, size) in v.bids.iter().chain(&v.asks) {
                let k = size
                    .parse::<u64>()
                    .ok()
                    .and_then(|n| n.checked_sub(1))
                    .filter(|&k| k < s.limit);
                if let Some(k) = k {
                    let _ = o.hist.record(now.saturating_sub(s.due_us(k)).max(1));
                }
            }
        }
    }
    match state {
        BookState::Held(h) if v.prev == Some(h.seq) => {
            h.set(true, &v.bids)?;
            h.set(false, &v.asks)?;
            h.seq = v.seq;
            if h.checksum() != v.checksum {
                o.mismatches += 1;
            }
        }
        BookState::Broken => {}
        _ => {
            o.gaps += 1;
            *state = BookState::Broken;
        }
    }
    Ok(())
}

/// Publishes the snapshots, then the updates open loop at `--rate`; returns updates sent while
/// measuring. Runs on its own thread (see the fanout publisher).
async fn publish(a: &RunArgs, phase: &BookPhase, total: Duration) -> Result<u64> {
    let mut p = Publisher::connect(a.target, a.addr, a.encoding)
        .await?
        .with_prefix("depth.");
    let levels = a.levels.max(1);
    let bids: Vec<String> = (0..levels).map(|j| price(true, j)).collect();
    let asks: Vec<String> = (0..levels).map(|j| price(false, j)).collect();
    let nsym = a.symbols.max(1);
    let mut rng = Rng(0x7469_636b_7769_7265);
    let mut msg = Vec::with_capacity(128);
    let start = Instant::now();
    let sched = Schedule::starting_now(0, a.rate, nsym as u64, a.max_messages, total);
    let _ = phase.schedule.set(sched);
    let mut k = 0u64;
    let mut measured = 0u64;
    let mut woke_us = 0u64;
    while start.elapsed() < total && k < sched.limit {
        let due = sched.due_by(now_micros()).saturating_sub(k);
        if due == 0 {
            // Woken when the next update is due, as the fan-out publisher is (not on tokio's
            // 1 ms timer tick, which made every update 1-2 ms late before it was sent).
            let at = sched.due_us(k).max(woke_us + PACE_US);
            wait_until(&mut p, at).await?;
            woke_us = at;
            continue;
        }
        let n = due.min(a.batch.max(1) as u64).min(sched.limit - k);
        for _ in 0..n {
            let sym = rng.below(nsym);
            let bid = rng.next() & 1 == 0;
            let j = pick_level(&mut rng, levels);
            msg.clear();
            msg.extend_from_slice(br#"{"updates":[{"action":"change","side":""#);
            msg.extend_from_slice(if bid { b"bid" } else { b"ask" });
            msg.extend_from_slice(br#"","price":""#);
            msg.extend_from_slice(if bid { &bids[j] } else { &asks[j] }.as_bytes());
            msg.extend_from_slice(br#"","size":""#);
            push_u64(&mut msg, k + 1);
            msg.extend_from_slice(br#""}]}"#);
            p.add(sym, &msg);
            k += 1;
        }
        p.flush().await?;
        if phase.measuring.load(Ordering::Relaxed) {
            measured += n;
        }
    }
    Ok(measured)
}

/// Publishes every book's snapshot and waits until the projection serves each `book.<SYM>`.
async fn seed_books(a: &RunArgs) -> Result<()> {
    let mut p = Publisher::connect(a.target, a.addr, a.encoding)
        .await?
        .with_prefix("depth.");
    let levels = a.levels.max(1);
    let bids: Vec<String> = (0..levels).map(|j| price(true, j)).collect();
    let asks: Vec<String> = (0..levels).map(|j| price(false, j)).collect();
    let snap = snapshot_message(&bids, &asks);
    for sym in 0..a.symbols.max(1) {
        p.add(sym, &snap);
        if p.pending() >= SNAPSHOT_BATCH {
            p.flush().await?;
        }
    }
    p.flush().await?;
    let deadline = Instant::now() + SETUP_TIMEOUT;
    for sym in 0..a.symbols.max(1) {
        loop {
            let path = format!("/v1/latest/book.{}", symbol(sym));
            // 404 until the projection's first flush after the snapshot (20 ms by default).
            if let Ok(body) = http_get(a.addr, &path).await {
                let l: LatestAnswer<'_> = serde_json::from_str(&body)?;
                if l.data.bids.first().map(|b| b.0) == bids.first().map(String::as_str) {
                    break;
                }
            }
            if Instant::now() > deadline {
                return Err(BenchError::Timeout(format!(
                    "{path} never served the published snapshot: is the book projection on?"
                )));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    Ok(())
}

pub async fn book(a: &RunArgs) -> Result<RunResult> {
    if a.target != Target::TickwireWs || a.sub_encoding != SubEncoding::Json {
        return Err(BenchError::Usage(
            "book runs against tickwire-ws with JSON WebSocket subscribers".into(),
        ));
    }
    if a.rate == 0 {
        return Err(BenchError::Usage(
            "book publishes open loop: --rate must be above 0".into(),
        ));
    }
    seed_books(a).await?;
    let phase = Arc::new(BookPhase::default());
    let mut set = JoinSet::new();
    for i in 0..a.clients {
        let c = Conn::connect(Target::TickwireWs, a.addr, None).await?;
        set.spawn(subscriber(c, phase.clone(), symbols_of(a, i)));
    }
    let deadline = Instant::now() + SETUP_TIMEOUT;
    while phase.subscribed.load(Ordering::Acquire) < a.clients {
        if Instant::now() > deadline {
            return Err(BenchError::Timeout(
                "book subscriptions not confirmed".into(),
            ));
        }
        // A subscriber that failed ends its task: report its error rather than wait.
        if let Some(Ok(Err(e))) = set.try_join_next() {
            return Err(e);
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let total = Duration::from_secs_f64(a.warmup + a.duration);
    let (warm, dur, pid) = (
        Duration::from_secs_f64(a.warmup),
        Duration::from_secs_f64(a.duration),
        a.server_pid,
    );
    let ph = phase.clone();
    let window = tokio::spawn(async move {
        tokio::time::sleep(warm).await;
        let s = Sampler::start(pid, Duration::from_millis(250));
        ph.measuring.store(true, Ordering::Release);
        let t0 = Instant::now();
        tokio::time::sleep(dur).await;
        ph.measuring.store(false, Ordering::Release);
        let measured_s = t0.elapsed().as_secs_f64();
        (s.stop().await, measured_s)
    });
    let (a2, ph2) = (a.clone(), phase.clone());
    let publisher = std::thread::spawn(move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(BenchError::io("publisher runtime"))?
            .block_on(publish(&a2, &ph2, total))
    });
    let published = tokio::task::spawn_blocking(move || publisher.join())
        .await
        .map_err(|e| BenchError::proto("bench", e.to_string()))?
        .map_err(|_| BenchError::proto("bench", "publisher thread panicked"))??;
    let (server, measured_s) = window
        .await
        .map_err(|e| BenchError::proto("bench", e.to_string()))?;
    // The projection flushes every 20 ms; then every subscriber must hold the server's book.
    tokio::time::sleep(Duration::from_secs_f64(a.drain.clamp(0.0, 60.0))).await;
    phase.stop.store(true, Ordering::Release);
    let mut subs = Vec::with_capacity(a.clients);
    while let Some(r) = set.join_next().await {
        subs.push(r.map_err(|e| BenchError::proto("bench", e.to_string()))??);
    }
    let mut latest: HashMap<usize, String> = HashMap::new();
    for s in subs.iter().flat_map(|o| o.books.keys()) {
        if !latest.contains_key(s) {
            let body = http_get(a.addr, &format!("/v1/latest/book.{}", symbol(*s))).await?;
            latest.insert(*s, body);
        }
    }
    let mut parsed: HashMap<usize, BookValue<'_>> = HashMap::new();
    for (s, body) in &latest {
        let l: LatestAnswer<'_> = serde_json::from_str(body)?;
        parsed.insert(*s, l.data);
    }
    let mut r = RunResult::new(a);
    let mut hist = histogram();
    let (mut deltas, mut levels, mut bytes, mut gaps, mut mismatches, mut snapshots) =
        (0u64, 0u64, 0u64, 0u64, 0u64, 0u64);
    let (mut converged, mut depth) = (0usize, None);
    for o in &subs {
        deltas += o.deltas;
        levels += o.levels;
        bytes += o.bytes;
        gaps += o.gaps;
        mismatches += o.mismatches;
        snapshots += o.snapshots;
        depth = depth.or(o.depth);
        let _ = hist.add(&o.hist);
        let all = o.books.iter().all(|(s, st)| match (st, parsed.get(s)) {
            (BookState::Held(h), Some(v)) => h.equals(v),
            _ => false,
        });
        converged += usize::from(all);
    }
    r.measured_s = measured_s;
    r.published_per_s = published as f64 / measured_s;
    r.delivered_per_s = deltas as f64 / measured_s;
    r.mb_per_s = bytes as f64 / measured_s / 1e6;
    r.latency = Latency::of(&hist);
    r.server = server;
    r.extra.insert(
        "converged".into(),
        converged as f64 / subs.len().max(1) as f64,
    );
    r.extra.insert("gaps".into(), gaps as f64);
    r.extra
        .insert("checksum_mismatches".into(), mismatches as f64);
    r.extra.insert(
        "levels_per_delta".into(),
        levels as f64 / deltas.max(1) as f64,
    );
    r.extra
        .insert("server_depth".into(), depth.map_or(f64::NAN, f64::from));
    r.extra.insert("snapshots".into(), snapshots as f64);
    Ok(r)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prices_are_exact_decimals_ordered_by_value() {
        assert_eq!(price(true, 0), "99.9999");
        assert_eq!(price(true, 9), "99.9990");
        assert_eq!(price(false, 0), "100.0001");
        assert_eq!(price_key("1.10"), price_key("1.1"));
        assert!(price_key("1.10001") > price_key("1.1"));
        assert!(price_key("100.0001") > price_key("99.9999"));
        assert_eq!(price_key("1.x"), None);
        assert_eq!(price_key(""), None);
    }

    #[test]
    fn checksum_matches_the_documented_example() {
        // docs/books.md: bids [["1.1","5"]], asks [["1.12","3"],["1.2","3"]] -> 1082956473.
        let mut h = Held::default();
        h.set(true, &[("1.1", "5")]).unwrap();
        h.set(false, &[("1.12", "3"), ("1.2", "3")]).unwrap();
        assert_eq!(h.checksum(), 1_082_956_473);
    }

    #[test]
    fn deltas_apply_in_sequence_and_a_gap_breaks_the_book() {
        let mut o = SubOutcome::waiting_for(&[1]);
        let snap = br#"{"ch":"book.S0001","offset":1,"ts":1,"snapshot":true,"data":{"snapshot":true,"seq":41,"checksum":1082956473,"depth":10,"bids":[["1.1","5"]],"asks":[["1.12","3"],["1.2","3"]]}}"#;
        apply(&mut o, snap, true, None, 1).unwrap();
        // Delete 1.1, add 1.09 (the checksum field is the server's; ours is counted).
        let mut want = Held::default();
        want.set(true, &[("1.09", "2")]).unwrap();
        want.set(false, &[("1.12", "3"), ("1.2", "3")]).unwrap();
        let delta = format!(
            r#"{{"ch":"book.S0001","offset":2,"ts":2,"data":{{"seq":42,"prev":41,"checksum":{},"bids":[["1.1","0"],["1.09","2"]],"asks":[]}}}}"#,
            want.checksum()
        );
        apply(&mut o, delta.as_bytes(), true, None, 2).unwrap();
        assert_eq!((o.gaps, o.mismatches, o.deltas, o.levels), (0, 0, 1, 2));
        match &o.books[&1] {
            BookState::Held(h) => assert_eq!(h.seq, 42),
            _ => panic!("book not held"),
        }
        let late = br#"{"ch":"book.S0001","offset":3,"ts":3,"data":{"seq":45,"prev":44,"checksum":0,"bids":[],"asks":[]}}"#;
        apply(&mut o, late, true, None, 3).unwrap();
        apply(&mut o, late, true, None, 3).unwrap();
        assert_eq!(o.gaps, 1, "one gap, then the book waits for a snapshot");
        assert!(matches!(o.books[&1], BookState::Broken));
    }

    #[test]
    fn updates_go_half_to_the_best_ten_levels() {
        let mut rng = Rng(1);
        let picks: Vec<usize> = (0..10_000).map(|_| pick_level(&mut rng, 50)).collect();
        let top = picks.iter().filter(|&&j| j < TOP).count();
        assert!((4_500..=5_500).contains(&top), "{top}");
        assert!(picks.iter().all(|&j| j < 50));
        assert!(picks.contains(&49));
        let mut rng = Rng(1);
        assert!((0..100).all(|_| pick_level(&mut rng, 5) < 5));
    }

    #[test]
    fn snapshot_message_is_the_depth_form() {
        let m = snapshot_message(&[price(true, 0)], &[price(false, 0)]);
        let v: serde_json::Value = serde_json::from_slice(&m).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"snapshot":[
                {"side":"bid","price":"99.9999","size":"1.5"},
                {"side":"ask","price":"100.0001","size":"1.5"}]})
        );
    }
}
