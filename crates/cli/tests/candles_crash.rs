//! The candle store survives kill -9 in the middle of a stream: the server is killed while the
//! candle projection is still applying and committing bars, restarts from the positions and
//! aggregator snapshots it had committed (the test reads them from a copy of the store to
//! prove the restart really resumes mid-stream), replays the rest, takes the remaining input,
//! and ends with exactly the bars of an uninterrupted run of the same input: every resolution,
//! every field, as text.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::{str::FromStr, time::Duration};

use common::{get_json, publish, Server};
use serde_json::{json, Value};
use tickwire_candles::{aggregate, Decimal, PriceSource, Resolution, Tick};

/// 2024-01-01T00:00:00Z.
const T0: i64 = 1_704_067_200_000;
/// Rounds of input: each has a quote for AAA and BBB and, every other round, a trade for TTT,
/// 250 ms of event time apart, so the input spans 750 one-second bars.
const ROUNDS: usize = 3000;
/// Rounds per HTTP publish.
const PER_BATCH: usize = 100;
const QUOTE_SYMBOLS: [&str; 2] = ["AAA", "BBB"];
const TRADE_SYMBOL: &str = "TTT";

/// Commits every 20 ms, flushes every 30 ms: many commits while the input streams in.
const FAST: &[(&str, &str)] = &[
    ("TICKWIRE_CANDLES__FLUSH_INTERVAL_MS", "30"),
    ("TICKWIRE_CANDLES__COMMIT_INTERVAL_MS", "20"),
    ("TICKWIRE_LOG", "warn,tickwire_projection=info"),
];

/// How long the projection may take to reach the final bars.
const SETTLE: Duration = Duration::from_secs(60);

/// One published tick: namespace, symbol, event time, data.
struct Input {
    channel: String,
    symbol: &'static str,
    ts: i64,
    data: Value,
}

/// The whole input, in publication order: deterministic random walks, exact decimals.
fn input() -> Vec<Input> {
    let mut out = Vec::new();
    let mut x: u64 = 0x2545_F491_4F6C_DD1D;
    let mut step = || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let mut px = [110_000i64, 250_000, 20_000];
    for r in 0..ROUNDS {
        let ts = T0 + r as i64 * 250;
        for (k, sym) in QUOTE_SYMBOLS.iter().enumerate() {
            px[k] += (step() % 21) as i64 - 10;
            let bid = px[k];
            let ask = bid + 1 + (step() % 4) as i64;
            out.push(Input {
                channel: format!("quotes.{sym}"),
                symbol: sym,
                ts: ts + k as i64 * 10,
                data: json!({
                    "bid": format!("{}.{:05}", bid / 100_000, bid % 100_000),
                    "ask": format!("{}.{:05}", ask / 100_000, ask % 100_000),
                    "ts": ts + k as i64 * 10,
                }),
            });
        }
        if r % 2 == 0 {
            px[2] += (step() % 9) as i64 - 4;
            let size = 1 + step() % 500;
            out.push(Input {
                channel: format!("trades.{TRADE_SYMBOL}"),
                symbol: TRADE_SYMBOL,
                ts: ts + 50,
                data: json!({
                    "price": format!("{}.{:04}", px[2] / 10_000, px[2] % 10_000),
                    "size": size.to_string(),
                    "ts": ts + 50,
                }),
            });
        }
    }
    out
}

/// The input cut into publish batches.
fn batches(all: &[Input]) -> Vec<Vec<Value>> {
    let mut out: Vec<Vec<Value>> = Vec::new();
    let mut round_of = 0usize;
    let mut cur = Vec::new();
    for i in all {
        let r = ((i.ts - T0) / 250) as usize;
        if r / PER_BATCH != round_of && !cur.is_empty() {
            out.push(std::mem::take(&mut cur));
        }
        round_of = r / PER_BATCH;
        cur.push(json!({"channel": i.channel, "data": i.data}));
    }
    out.push(cur);
    out
}

/// Every resolution the server builds by default.
fn resolutions() -> Vec<Resolution> {
    Resolution::ALL.to_vec()
}

/// The bars an independent batch aggregation makes of the same ticks, as `/v1/candles` writes
/// them: what both runs must reach.
fn reference(all: &[Input]) -> Vec<(String, Resolution, Value)> {
    let mut out = Vec::new();
    for sym in QUOTE_SYMBOLS.iter().chain([&TRADE_SYMBOL]) {
        let ticks: Vec<Tick> = all
            .iter()
            .filter(|i| i.symbol == *sym)
            .map(|i| {
                let d = |k: &str| Decimal::from_str(i.data[k].as_str().unwrap()).unwrap();
                if i.channel.starts_with("trades.") {
                    Tick::trade(i.ts, d("price"), Some(d("size")))
                } else {
                    Tick::quote(i.ts, d("bid"), d("ask"))
                }
            })
            .collect();
        for res in resolutions() {
            let bars = aggregate(&ticks, res, PriceSource::Mid);
            out.push((sym.to_string(), res, serde_json::to_value(bars).unwrap()));
        }
    }
    out
}

/// Every symbol's bars at every resolution, as the server answers `/v1/candles`.
async fn bars(srv: &Server, symbols: &[&str]) -> Vec<(String, Resolution, Value)> {
    let mut out = Vec::new();
    for sym in symbols {
        for res in resolutions() {
            let v = get_json(srv, &format!("/v1/candles/{sym}?res={res}&limit=20000")).await;
            out.push((sym.to_string(), res, v["candles"].clone()));
        }
    }
    out
}

/// Waits until the server's bars equal `want`; returns them. On timeout, fails with the first
/// series that differs.
async fn settle(
    srv: &Server,
    symbols: &[&str],
    want: &[(String, Resolution, Value)],
    what: &str,
) -> String {
    let deadline = tokio::time::Instant::now() + SETTLE;
    loop {
        let got = bars(srv, symbols).await;
        if got == want {
            return serde_json::to_string(&got.iter().map(|(_, _, v)| v).collect::<Vec<_>>())
                .unwrap();
        }
        if tokio::time::Instant::now() > deadline {
            let (g, w) = got.iter().zip(want).find(|(g, w)| g != w).unwrap();
            let (gb, wb) = (g.2.as_array().unwrap(), w.2.as_array().unwrap());
            let i = (0..gb.len().max(wb.len()))
                .find(|&i| gb.get(i) != wb.get(i))
                .unwrap_or(0);
            panic!(
                "{what}: {} {} never reached the reference bars ({} bars, {} wanted); first \
                 difference at bar {i}:\n got  {:?}\n want {:?}",
                g.0,
                g.1,
                gb.len(),
                wb.len(),
                gb.get(i),
                wb.get(i)
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Publishes `batch` and checks it was acknowledged whole.
async fn publish_batch(srv: &Server, batch: &[Value]) {
    let (s, v) = publish(srv, &Value::Array(batch.to_vec())).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["results"].as_array().map(Vec::len), Some(batch.len()));
}

/// What the candle store held when the server died: the next offset per namespace and how
/// many aggregator snapshots. Read from a copy, so the server's own crash recovery of the file
/// is what the restart exercises.
fn stored_checkpoint(data: &std::path::Path, scratch: &std::path::Path) -> (u64, u64, usize) {
    let store = tickwire_model::DataDir::new(data).candle_store();
    let copy = scratch.join("candles-copy.redb");
    std::fs::copy(&store, &copy).unwrap();
    let s = tickwire_store::Store::open(&copy).unwrap();
    let pos = s.positions().unwrap();
    let snaps = s.snapshots().unwrap().len();
    drop(s);
    std::fs::remove_file(&copy).unwrap();
    (
        pos.get("quotes").copied().unwrap_or(0),
        pos.get("trades").copied().unwrap_or(0),
        snaps,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bars_after_kill9_mid_commit_equal_an_uninterrupted_run() {
    let all = input();
    let batches = batches(&all);
    let want = reference(&all);
    let quotes_in = |n: usize| -> (u64, u64) {
        let (mut q, mut t) = (0, 0);
        for b in &batches[..n] {
            for i in b {
                if i["channel"].as_str().unwrap().starts_with("quotes.") {
                    q += 1;
                } else {
                    t += 1;
                }
            }
        }
        (q, t)
    };

    // The uninterrupted run.
    let dir = tempfile::tempdir().unwrap();
    let srv = Server::start(&dir.path().join("straight"), &[], FAST);
    for b in &batches {
        publish_batch(&srv, b).await;
    }
    let symbols = [QUOTE_SYMBOLS[0], QUOTE_SYMBOLS[1], TRADE_SYMBOL];
    let straight = settle(&srv, &symbols, &want, "uninterrupted run").await;
    drop(srv);

    // The interrupted run: kill -9 right after an acknowledged batch, while the projection is
    // still applying and committing what came before. A kill that found nothing committed
    // yet, or everything, would not test resuming from a checkpoint: try another moment.
    let mut resumed = None;
    for (attempt, kill_after) in [12usize, 8, 18, 5, 24].into_iter().enumerate() {
        let data = dir.path().join(format!("crash-{attempt}"));
        let mut srv = Server::start(&data, &[], FAST);
        for b in &batches[..kill_after] {
            publish_batch(&srv, b).await;
        }
        srv.kill9();
        let (acked_q, acked_t) = quotes_in(kill_after);
        let (pos_q, pos_t, snaps) = stored_checkpoint(&data, dir.path());
        eprintln!(
            "attempt {attempt}: killed after {kill_after} batches ({acked_q} quotes, {acked_t} \
             trades acknowledged); store had quotes@{pos_q} trades@{pos_t}, {snaps} snapshots"
        );
        let mid = pos_q > 0 && pos_q + pos_t < acked_q + acked_t && snaps > 0;
        if mid {
            resumed = Some((data, kill_after, acked_q + acked_t - pos_q - pos_t));
            break;
        }
    }
    let (data, kill_after, to_replay) =
        resumed.expect("no kill landed while the candle store was mid-stream");

    // Restart: the projection restores the snapshots and replays from the stored positions
    // (it says how many messages it replayed), then takes the rest of the input.
    let log = data.with_extension("stderr.log");
    let log_before = std::fs::metadata(&log).map_or(0, |m| m.len()) as usize;
    let srv = Server::start(&data, &[], FAST);
    let deadline = tokio::time::Instant::now() + SETTLE;
    let replayed = loop {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        let found = text.get(log_before..).unwrap_or("").lines().find_map(|l| {
            if !(l.contains("projection caught up") && l.contains("projection=candles")) {
                return None;
            }
            l.split("messages=")
                .nth(1)?
                .split_whitespace()
                .next()?
                .parse::<u64>()
                .ok()
        });
        if let Some(n) = found {
            break n;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the candle projection never reported catching up after the restart"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(
        replayed, to_replay,
        "the restart replays exactly what the store had not committed"
    );
    for b in &batches[kill_after..] {
        publish_batch(&srv, b).await;
    }
    let crashed = settle(&srv, &symbols, &want, "run killed mid-stream").await;
    assert_eq!(crashed, straight, "bars after kill -9 and restart");
    // A last look: nothing more arrives later (a duplicate replay would change the bars).
    tokio::time::sleep(Duration::from_millis(500)).await;
    let again = bars(&srv, &symbols).await;
    assert!(again == want, "the bars changed after settling");
}

/// A real-time feed (event time = now) killed with a backlog the candle store never committed,
/// restarted after a downtime longer than `close_delay_ms + late_tolerance_ms`: the replay
/// must keep every tick. (The quiet-bar timer used to run on the wall clock during the replay,
/// closed every bar up to now after the first slice, and refused the rest of the replay as
/// late: 4,096 of 40,000 ticks survived.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replay_after_downtime_keeps_every_tick() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("rt");
    // Nothing committed before the kill (the whole stream is replayed, in many slices), timers
    // between every slice, and a late tolerance the downtime below is well past.
    let env: &[(&str, &str)] = &[
        ("TICKWIRE_CANDLES__FLUSH_INTERVAL_MS", "10"),
        ("TICKWIRE_CANDLES__COMMIT_INTERVAL_MS", "600000"),
        ("TICKWIRE_CANDLES__CLOSE_DELAY_MS", "100"),
        ("TICKWIRE_CANDLES__LATE_TOLERANCE_MS", "2000"),
    ];
    const DOWNTIME: Duration = Duration::from_secs(3);
    let mut srv = Server::start(&data, &[], env);
    let mut ticks = Vec::new();
    for b in 0..20u64 {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as i64;
        let batch: Vec<Value> = (0..1000)
            .map(|i| {
                let bid = format!("1.{:05}", 10_000 + (b * 1000 + i) % 7919);
                let d = Decimal::from_str(&bid).unwrap();
                ticks.push(Tick::quote(now, d, d));
                json!({"channel":"quotes.RT","data":{"bid":bid,"ask":bid,"ts":now}})
            })
            .collect();
        publish_batch(&srv, &batch).await;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    srv.kill9();
    std::thread::sleep(DOWNTIME);
    let srv = Server::start(&data, &[], env);
    let want: Vec<(String, Resolution, Value)> = resolutions()
        .into_iter()
        .map(|res| {
            let bars = aggregate(&ticks, res, PriceSource::Mid);
            ("RT".to_string(), res, serde_json::to_value(bars).unwrap())
        })
        .collect();
    settle(&srv, &["RT"], &want, "replay after downtime").await;
}
