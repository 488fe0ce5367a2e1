//! `tickwire import` end to end: the real binary imports CSV, MetaTrader 4 and MetaTrader 5
//! tick and bar files (UTF-8, and UTF-16LE with a BOM as MT5 writes them) into a data
//! directory, then a real server serves what was imported: every row exactly once in the
//! namespace's history, candles equal to an independent aggregation of the same ticks, and
//! imported bars exactly as the file had them, across restarts. Interrupted imports (the
//! `--crash-after-batches` test hook between the log's fsync and the progress marker, and a
//! real SIGKILL mid-file) resume without a duplicate or a hole; a re-import does nothing.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::{
    collections::BTreeMap,
    os::unix::process::ExitStatusExt,
    path::{Path, PathBuf},
    process::{Command, Output, Stdio},
    str::FromStr,
    time::{Duration, Instant},
};

use common::{get_json, publish, wait_for, Server, Ws};
use serde_json::{json, Value};
use tickwire_candles::{aggregate, Candle, Decimal, PriceSource, Resolution, Tick};

/// 2024-01-02T10:00:00Z, Unix milliseconds.
const T0: i64 = 1_704_189_600_000;
const MIN: i64 = 60_000;

const FAST: &[(&str, &str)] = &[
    ("TICKWIRE_CANDLES__FLUSH_INTERVAL_MS", "30"),
    ("TICKWIRE_CANDLES__COMMIT_INTERVAL_MS", "50"),
];

/// Bars are built and committed asynchronously: how long to poll for them.
const WAIT: Duration = Duration::from_secs(20);

fn bin() -> PathBuf {
    // TICKWIRE_TEST_BIN runs the suite against another build (a before/after comparison).
    std::env::var_os("TICKWIRE_TEST_BIN")
        .unwrap_or_else(|| env!("CARGO_BIN_EXE_tickwire").into())
        .into()
}

fn import_cmd(data: &Path, file: &Path, args: &[&str]) -> Command {
    let mut cmd = Command::new(bin());
    cmd.arg("import")
        .arg(file)
        .arg("--data")
        .arg(data)
        .arg("--quiet")
        .args(args)
        .env("TICKWIRE_LOG", "warn")
        // Not a setting of the binary's: it would only print a warning about it.
        .env_remove("TICKWIRE_TEST_BIN");
    cmd
}

fn run_import(data: &Path, file: &Path, args: &[&str]) -> Output {
    import_cmd(data, file, args).output().unwrap()
}

/// Imports and expects success; returns stdout.
fn import_ok(data: &Path, file: &Path, args: &[&str]) -> String {
    let out = run_import(data, file, args);
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "import of {} failed ({}): {}{stdout}",
        file.display(),
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// `text` as MetaTrader 5 writes it: UTF-16LE behind a byte order mark, CRLF lines.
fn utf16le_bom(text: &str) -> Vec<u8> {
    let mut out = vec![0xFF, 0xFE];
    for u in text.replace('\n', "\r\n").encode_utf16() {
        out.extend_from_slice(&u.to_le_bytes());
    }
    out
}

fn utf8_bom(text: &str) -> Vec<u8> {
    let mut out = vec![0xEF, 0xBB, 0xBF];
    out.extend_from_slice(text.as_bytes());
    out
}

fn dec(s: &str) -> Decimal {
    Decimal::from_str(s).unwrap()
}

/// `YYYY.MM.DD` and `HH:MM:SS.mmm` of a Unix ms time after T0 on 2024-01-02.
fn mt_time(ts: i64) -> (String, String) {
    let ms = ts - T0 + 10 * 3_600_000;
    assert!((0..14 * 3_600_000).contains(&ms), "stay on 2024-01-02");
    (
        "2024.01.02".to_string(),
        format!(
            "{:02}:{:02}:{:02}.{:03}",
            ms / 3_600_000,
            ms / 60_000 % 60,
            ms / 1000 % 60,
            ms % 1000
        ),
    )
}

/// One imported tick row as the log must hold it.
#[derive(Debug, Clone)]
struct Row {
    /// 1-based line in the file (the msg_id is `imp:<fp>:<line>`).
    line: u64,
    symbol: String,
    ts: i64,
    bid: Option<String>,
    ask: Option<String>,
    last: Option<String>,
    volume: Option<String>,
}

impl Row {
    /// The stored message's data: what was given, and the event time.
    fn data(&self) -> Value {
        let mut m = serde_json::Map::new();
        for (k, v) in [
            ("bid", &self.bid),
            ("ask", &self.ask),
            ("last", &self.last),
            ("volume", &self.volume),
        ] {
            if let Some(v) = v {
                m.insert(k.into(), json!(v));
            }
        }
        m.insert("ts".into(), json!(self.ts));
        Value::Object(m)
    }

    fn tick(&self) -> Tick {
        match (&self.bid, &self.ask, &self.last) {
            (Some(b), Some(a), _) => Tick::quote(self.ts, dec(b), dec(a)),
            (_, _, Some(l)) => Tick::trade(self.ts, dec(l), self.volume.as_deref().map(dec)),
            _ => unreachable!(),
        }
    }
}

/// Quotes every 700 ms for `n` rows from `start`, prices wandering by the row number.
fn quote_rows(symbol: &str, start: i64, n: u64, first_line: u64) -> Vec<Row> {
    (0..n)
        .map(|i| {
            let bid = 110_300 + (i * 37 % 90);
            Row {
                line: first_line + i,
                symbol: symbol.into(),
                ts: start + i as i64 * 700,
                bid: Some(format!("1.{bid:05}")),
                ask: Some(format!("1.{:05}", bid + 2 + i % 3)),
                last: None,
                volume: None,
            }
        })
        .collect()
}

/// CSV text: `timestamp,symbol,bid,ask,last,volume` per row (no header).
fn csv_lines(rows: &[Row]) -> String {
    let o = |v: &Option<String>| v.clone().unwrap_or_default();
    rows.iter()
        .map(|r| {
            format!(
                "{},{},{},{},{},{}\n",
                r.ts,
                r.symbol,
                o(&r.bid),
                o(&r.ask),
                o(&r.last),
                o(&r.volume)
            )
        })
        .collect()
}

const MT5_TICK_HEADER: &str = "<DATE>\t<TIME>\t<BID>\t<ASK>\t<LAST>\t<VOLUME>\t<FLAGS>\n";
const MT5_BAR_HEADER: &str =
    "<DATE>\t<TIME>\t<OPEN>\t<HIGH>\t<LOW>\t<CLOSE>\t<TICKVOL>\t<VOL>\t<SPREAD>\n";

/// An MT5 tick export of quote rows (header on line 1): a side that did not change is left
/// empty, as MetaTrader writes it, and the import carries the previous value.
fn mt5_ticks(rows: &[Row]) -> String {
    let mut out = MT5_TICK_HEADER.to_string();
    let mut prev: (Option<String>, Option<String>) = (None, None);
    for r in rows {
        let (d, t) = mt_time(r.ts);
        let bid = if prev.0 == r.bid {
            ""
        } else {
            r.bid.as_deref().unwrap()
        };
        let ask = if prev.1 == r.ask {
            ""
        } else {
            r.ask.as_deref().unwrap()
        };
        out.push_str(&format!("{d}\t{t}\t{bid}\t{ask}\t\t\t6\n"));
        prev = (r.bid.clone(), r.ask.clone());
    }
    out
}

/// Bars as a bar file gives them: open, high, low, close, tick volume.
fn file_bars(start: i64, spacing: i64, n: usize) -> Vec<Candle> {
    (0..n)
        .map(|i| {
            let o = 110_345 + 10 * i as i64;
            Candle {
                start_ms: start + i as i64 * spacing,
                open: Decimal::new(o, 5),
                high: Decimal::new(o + 45, 5),
                low: Decimal::new(o - 35, 5),
                close: Decimal::new(o + 15, 5),
                volume: Decimal::new(120 + i as i64, 0),
                ticks: 0,
            }
        })
        .collect()
}

fn mt5_bars(bars: &[Candle]) -> String {
    let mut out = MT5_BAR_HEADER.to_string();
    for b in bars {
        let (d, t) = mt_time(b.start_ms);
        let t = &t[..8];
        out.push_str(&format!(
            "{d}\t{t}\t{}\t{}\t{}\t{}\t{}\t0\t5\n",
            b.open, b.high, b.low, b.close, b.volume
        ));
    }
    out
}

fn mt4_bars(bars: &[Candle]) -> String {
    bars.iter()
        .map(|b| {
            let (d, t) = mt_time(b.start_ms);
            format!(
                "{d},{},{},{},{},{},{}\n",
                &t[..5],
                b.open,
                b.high,
                b.low,
                b.close,
                b.volume
            )
        })
        .collect()
}

fn write(dir: &Path, name: &str, bytes: impl AsRef<[u8]>) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, bytes).unwrap();
    p
}

/// Every message of `channel`, page by page.
async fn history(srv: &Server, channel: &str) -> Vec<Value> {
    let mut out = Vec::new();
    let mut from = 0u64;
    loop {
        let page = get_json(
            srv,
            &format!("/v1/history/{channel}?from={from}&limit=1000"),
        )
        .await;
        let msgs = page["messages"]
            .as_array()
            .unwrap_or_else(|| panic!("{page}"));
        out.extend(msgs.iter().cloned());
        let next = page["next"].as_u64().unwrap();
        if next <= from {
            return out;
        }
        from = next;
    }
}

/// The file line of an imported message (`imp:<fp>:<line>`).
fn line_of(m: &Value) -> u64 {
    let id = m["msg_id"]
        .as_str()
        .unwrap_or_else(|| panic!("no msg_id: {m}"));
    assert!(id.starts_with("imp:"), "{id}");
    id.rsplit(':').next().unwrap().parse().unwrap()
}

/// The history of `symbol` in `quotes` is exactly `rows`: each once, in file order, with its
/// data; answers the file lines found, for a failure message that shows holes and doubles.
async fn assert_log_holds_exactly(srv: &Server, symbol: &str, rows: &[Row]) {
    let msgs = history(srv, &format!("quotes.{symbol}")).await;
    let got: Vec<u64> = msgs.iter().map(line_of).collect();
    let want: Vec<u64> = rows.iter().map(|r| r.line).collect();
    if got != want {
        let mut seen = BTreeMap::new();
        for l in &got {
            *seen.entry(*l).or_insert(0) += 1;
        }
        let doubles: Vec<_> = seen
            .iter()
            .filter(|(_, n)| **n > 1)
            .map(|(l, _)| *l)
            .collect();
        let holes: Vec<_> = want.iter().filter(|l| !seen.contains_key(l)).collect();
        panic!(
            "{symbol}: {} messages for {} rows; lines twice or more: {:?}; lines missing: {:?}",
            got.len(),
            want.len(),
            &doubles[..doubles.len().min(10)],
            &holes[..holes.len().min(10)]
        );
    }
    for (m, r) in msgs.iter().zip(rows) {
        assert_eq!(m["data"], r.data(), "{symbol} line {}", r.line);
    }
}

fn candle_json(c: &Candle) -> Value {
    json!({
        "start_ms": c.start_ms,
        "open": c.open.to_string(),
        "high": c.high.to_string(),
        "low": c.low.to_string(),
        "close": c.close.to_string(),
        "volume": c.volume.to_string(),
        "ticks": c.ticks,
    })
}

fn candles_path(symbol: &str, res: &str) -> String {
    format!("/v1/candles/{symbol}?res={res}&from=0&to=4102444800000&limit=1000")
}

/// Waits until `/v1/candles` of `symbol` at `res` is exactly `want` (decimal strings at their
/// own scale, volumes, tick counts); fails with the last answer.
async fn assert_candles(srv: &Server, symbol: &str, res: &str, want: &[Candle]) {
    let want: Vec<Value> = want.iter().map(candle_json).collect();
    let deadline = Instant::now() + WAIT;
    loop {
        let v = get_json(srv, &candles_path(symbol, res)).await;
        if v["candles"].as_array() == Some(&want) {
            return;
        }
        if Instant::now() > deadline {
            panic!(
                "{symbol} {res} candles:\n got  {}\n want {}",
                v["candles"],
                Value::Array(want)
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn reference(rows: &[Row], res: Resolution) -> Vec<Candle> {
    let ticks: Vec<Tick> = rows.iter().map(Row::tick).collect();
    aggregate(&ticks, res, PriceSource::Mid)
}

/// The progress marker of the one import in `data`.
fn marker(data: &Path) -> Value {
    let mut found = Vec::new();
    for e in std::fs::read_dir(data.join("imports")).unwrap() {
        let p = e.unwrap().path();
        if p.extension().is_some_and(|x| x == "json") {
            found.push(p);
        }
    }
    assert_eq!(found.len(), 1, "{found:?}");
    serde_json::from_slice(&std::fs::read(&found[0]).unwrap()).unwrap()
}

/// CSV (UTF-8 with a BOM and no header, UTF-16LE with a BOM and a header) and MT5 ticks
/// (UTF-16LE with a BOM): every row in the log once with its data, candles equal to an
/// aggregation of the same ticks, and importing the files again changes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tick_files_in_utf8_and_utf16_import_once_and_build_candles() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    // Line 1 is a data row: a BOM in front of it must not make it look like a header.
    let bom8 = quote_rows("BOMQ", T0 + 5_000, 200, 1);
    let f_bom8 = write(dir.path(), "bom8.csv", utf8_bom(&csv_lines(&bom8)));
    let u16rows = quote_rows("WIDEQ", T0 + 1_000, 300, 2);
    let f_u16 = write(
        dir.path(),
        "wide.csv",
        utf16le_bom(&format!(
            "timestamp,symbol,bid,ask,last,volume\n{}",
            csv_lines(&u16rows)
        )),
    );
    let mt5rows = quote_rows("MT5T", T0 + 250, 400, 2);
    let f_mt5 = write(
        dir.path(),
        "ticks.mt5.txt",
        utf16le_bom(&mt5_ticks(&mt5rows)),
    );

    let out = import_ok(&data, &f_bom8, &["--format", "csv"]);
    assert!(
        out.contains("imported 200 rows") && out.contains("UTF-8 with BOM"),
        "{out}"
    );
    let out = import_ok(&data, &f_u16, &["--format", "csv"]);
    assert!(
        out.contains("imported 300 rows") && out.contains("UTF-16LE"),
        "{out}"
    );
    let out = import_ok(&data, &f_mt5, &["--format", "mt5", "--symbol", "MT5T"]);
    assert!(
        out.contains("imported 400 rows") && out.contains("UTF-16LE"),
        "{out}"
    );

    let mut srv = Server::start(&data, &[], FAST);
    for (symbol, rows) in [("BOMQ", &bom8), ("WIDEQ", &u16rows), ("MT5T", &mt5rows)] {
        assert_log_holds_exactly(&srv, symbol, rows).await;
        for (res, r) in [("1m", Resolution::Min1), ("1h", Resolution::Hour1)] {
            assert_candles(&srv, symbol, res, &reference(rows, r)).await;
        }
    }
    srv.terminate();

    // Again, offline: every marker is complete, nothing is appended.
    for (f, args) in [
        (&f_bom8, vec!["--format", "csv"]),
        (&f_u16, vec!["--format", "csv"]),
        (&f_mt5, vec!["--format", "mt5", "--symbol", "MT5T"]),
    ] {
        let out = import_ok(&data, f, &args);
        assert!(out.contains("nothing to do"), "{out}");
    }
    let srv = Server::start(&data, &[], FAST);
    for (symbol, rows) in [("BOMQ", &bom8), ("WIDEQ", &u16rows), ("MT5T", &mt5rows)] {
        assert_log_holds_exactly(&srv, symbol, rows).await;
        assert_candles(&srv, symbol, "1m", &reference(rows, Resolution::Min1)).await;
    }
}

/// A CSV row with only `last` and `volume` is a trade of that size: bars sum the sizes
/// exactly instead of counting ticks.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn csv_volume_is_the_size_of_last_only_rows() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let sizes = ["0.25", "1.5", "0.000001", "3", "12.125", "0.5", "7"];
    let rows: Vec<Row> = sizes
        .iter()
        .enumerate()
        .map(|(i, v)| Row {
            line: i as u64 + 2,
            symbol: "LASTV".into(),
            ts: T0 + i as i64 * 20_000,
            bid: None,
            ask: None,
            last: Some(format!("42.{}", 10 + i)),
            volume: Some(v.to_string()),
        })
        .collect();
    let f = write(
        dir.path(),
        "trades.csv",
        format!("timestamp,symbol,bid,ask,last,volume\n{}", csv_lines(&rows)),
    );
    import_ok(&data, &f, &["--format", "csv"]);
    let srv = Server::start(&data, &[], FAST);
    assert_log_holds_exactly(&srv, "LASTV", &rows).await;
    let want = reference(&rows, Resolution::Min1);
    assert_eq!(want[0].volume, dec("1.750001"), "the reference sums sizes");
    assert_candles(&srv, "LASTV", "1m", &want).await;
}

/// MT5 (UTF-16LE with a BOM) and MT4 bar files: the store serves the file's bars exactly,
/// volume included, after a clean restart and after a kill -9.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bar_files_are_served_as_imported_across_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let m1 = file_bars(T0, MIN, 6);
    let f5 = write(dir.path(), "bars.mt5.txt", utf16le_bom(&mt5_bars(&m1)));
    let out = import_ok(&data, &f5, &["--format", "mt5", "--symbol", "MT5B"]);
    assert!(out.contains("bars stored at 1m"), "{out}");
    let m5 = file_bars(T0, 5 * MIN, 4);
    let f4 = write(dir.path(), "bars.mt4.csv", mt4_bars(&m5));
    let out = import_ok(&data, &f4, &["--format", "mt4", "--symbol", "MT4B"]);
    assert!(out.contains("bars stored at 5m"), "{out}");

    let mut srv = Server::start(&data, &[], FAST);
    assert_candles(&srv, "MT5B", "1m", &m1).await;
    assert_candles(&srv, "MT4B", "5m", &m5).await;
    srv.terminate();
    let mut srv = Server::start(&data, &[], FAST);
    assert_candles(&srv, "MT5B", "1m", &m1).await;
    assert_candles(&srv, "MT4B", "5m", &m5).await;
    srv.kill9();
    let srv = Server::start(&data, &[], FAST);
    assert_candles(&srv, "MT5B", "1m", &m1).await;
    assert_candles(&srv, "MT4B", "5m", &m5).await;
}

/// Issue 14 #7: ticks imported first, then a bar file over the same minutes. The server
/// replays the ticks at its next start; the imported 1m bars stay exactly as the file had
/// them (the later import wins), while resolutions the file did not have are built from the
/// ticks. UTF-8 files, so an older build imports them too and shows its own behaviour.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn imported_bars_stay_when_the_ticks_were_imported_before_them() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    // Three ticks in each of the first three minutes.
    let rows: Vec<Row> = (0..9)
        .flat_map(|i| {
            let mut r = quote_rows("EURUSD", T0 + (i / 3) * MIN + (i % 3) * 10_000, 1, 0);
            r[0].line = i as u64 + 2;
            r[0].bid = Some(format!("1.{:05}", 110_350 + i));
            r[0].ask = Some(format!("1.{:05}", 110_352 + i));
            r
        })
        .collect();
    let ticks = write(dir.path(), "ticks.mt5.txt", mt5_ticks(&rows));
    import_ok(&data, &ticks, &["--format", "mt5", "--symbol", "EURUSD"]);
    let bars = file_bars(T0, MIN, 5);
    let bar_file = write(dir.path(), "bars.mt5.txt", mt5_bars(&bars));
    import_ok(&data, &bar_file, &["--format", "mt5", "--symbol", "EURUSD"]);

    let mut srv = Server::start(&data, &[], FAST);
    // The ticks were replayed: the 5m bar is theirs...
    assert_candles(&srv, "EURUSD", "5m", &reference(&rows, Resolution::Min5)).await;
    // ...and the 1m bars are the file's, not three-tick bars rebuilt from them.
    assert_candles(&srv, "EURUSD", "1m", &bars).await;
    srv.terminate();
    let srv = Server::start(&data, &[], FAST);
    assert_candles(&srv, "EURUSD", "1m", &bars).await;
    assert_candles(&srv, "EURUSD", "5m", &reference(&rows, Resolution::Min5)).await;
}

/// The other order: bars first, then ticks for two of their minutes. Ticks imported for a
/// bar win: those two bars are rebuilt from the ticks, the others stay the file's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ticks_imported_after_bars_rebuild_the_bars_they_fall_in() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let bars = file_bars(T0, MIN, 5);
    let bar_file = write(dir.path(), "bars.mt5.txt", utf16le_bom(&mt5_bars(&bars)));
    import_ok(&data, &bar_file, &["--format", "mt5", "--symbol", "GBPUSD"]);
    let rows = quote_rows("GBPUSD", T0 + MIN + 1_000, 120, 1);
    assert!(
        rows.last().unwrap().ts < T0 + 3 * MIN,
        "minutes 1 and 2 only"
    );
    let ticks = write(dir.path(), "ticks.csv", csv_lines(&rows));
    import_ok(&data, &ticks, &["--format", "csv"]);

    let mut srv = Server::start(&data, &[], FAST);
    let built = reference(&rows, Resolution::Min1);
    let want = vec![
        bars[0].clone(),
        built[0].clone(),
        built[1].clone(),
        bars[3].clone(),
        bars[4].clone(),
    ];
    assert_candles(&srv, "GBPUSD", "1m", &want).await;
    srv.terminate();
    let srv = Server::start(&data, &[], FAST);
    assert_candles(&srv, "GBPUSD", "1m", &want).await;
}

/// Ticks published live (not imported) never replace an imported bar: not the live bar a
/// restart restores (shown over the stored bar before), not when that bar closes; and the
/// bar's final on `candles.<SYM>.1m` carries the stored, imported content.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_ticks_do_not_replace_imported_bars() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut srv = Server::start(&data, &[], FAST);
    let live: Vec<Value> = (0..3)
        .map(|i| {
            json!({"channel":"quotes.LIVE","data":{
                "bid": format!("1.1035{}", i), "ask": format!("1.1035{}", i + 2),
                "ts": T0 + 2 * MIN + i * 5_000}})
        })
        .collect();
    let (st, body) = publish(&srv, &Value::Array(live)).await;
    assert_eq!(st, 200, "{body}");
    wait_for(&srv, &candles_path("LIVE", "1m"), WAIT, |v| {
        v["candles"][0]["ticks"] == 3
    })
    .await;
    srv.terminate();

    // The file's last bar is the minute the restored live bar is in.
    let bars = file_bars(T0, MIN, 3);
    let f = write(dir.path(), "bars.mt5.txt", utf16le_bom(&mt5_bars(&bars)));
    import_ok(&data, &f, &["--format", "mt5", "--symbol", "LIVE"]);
    let mut srv = Server::start(&data, &[], FAST);
    assert_candles(&srv, "LIVE", "1m", &bars).await;

    // A later tick closes the restored three-tick bar of minute 2: the store keeps the file's.
    let mut ws = Ws::connect(&srv.ws_url("")).await;
    let r = ws
        .cmd(json!({"op":"subscribe","channel":"candles.LIVE.1m"}))
        .await;
    assert_eq!(r["ok"], true, "{r}");
    let (st, body) = publish(
        &srv,
        &json!({"channel":"quotes.LIVE","data":{"bid":"1.2","ask":"1.2","ts": T0 + 5 * MIN}}),
    )
    .await;
    assert_eq!(st, 200, "{body}");
    let fin = loop {
        let p = ws.push().await;
        if p["data"]["final"] == true && p["data"]["start_ms"] == T0 + 2 * MIN {
            break p;
        }
    };
    let want = candle_json(&bars[2]);
    for k in ["open", "high", "low", "close", "volume"] {
        assert_eq!(fin["data"][k], want[k], "final {k}: {fin}");
    }
    // The new minute's bar is there, the file's three are unchanged.
    let v = wait_for(&srv, &candles_path("LIVE", "1m"), WAIT, |v| {
        v["candles"].as_array().is_some_and(|c| c.len() == 4)
    })
    .await;
    let first3: Vec<Value> = bars.iter().map(candle_json).collect();
    assert_eq!(v["candles"].as_array().unwrap()[..3], first3[..], "{v}");
    assert_eq!(v["candles"][3]["start_ms"], T0 + 5 * MIN, "{v}");
    // And in the store, after the checkpoint a clean stop takes.
    drop(ws);
    srv.terminate();
    let srv = Server::start(&data, &[], FAST);
    let v = get_json(&srv, &candles_path("LIVE", "1m")).await;
    assert_eq!(v["candles"].as_array().unwrap()[..3], first3[..], "{v}");
}

/// An export of `n` quote rows over three symbols, UTF-16LE with a BOM and a header, with
/// blank lines and bad rows among them; the good rows by symbol, and how many are bad.
fn mixed_csv(dir: &Path, n: u64) -> (PathBuf, BTreeMap<String, Vec<Row>>, u64) {
    let mut text = String::from("timestamp,symbol,bid,ask,last,volume\n");
    let mut good: BTreeMap<String, Vec<Row>> = BTreeMap::new();
    let mut bad = 0;
    let mut line = 1;
    for i in 0..n {
        line += 1;
        let symbol = ["AAA", "BBB", "CCC"][(i % 3) as usize];
        if i % 97 == 50 {
            text.push_str(&format!("{},{symbol},x,1.1,,\n", T0 + i as i64));
            bad += 1;
            continue;
        }
        if i % 89 == 3 {
            text.push('\n');
            continue;
        }
        let mut r = quote_rows(symbol, T0 + i as i64 * 100, 1, line).remove(0);
        r.bid = Some(format!("1.{:05}", 100_000 + i));
        r.ask = Some(format!("1.{:05}", 100_003 + i));
        text.push_str(&csv_lines(std::slice::from_ref(&r)));
        good.entry(symbol.to_string()).or_default().push(r);
    }
    (write(dir, "mixed.csv", utf16le_bom(&text)), good, bad)
}

/// Issue 21 #2: killed between the log's fsync and the progress marker, twice, then resumed:
/// every good row is in the log exactly once, the totals count each row once, and importing
/// the file again (or a copy of it) does nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_between_log_fsync_and_marker_resumes_without_duplicates_or_holes() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let (file, good, bad) = mixed_csv(dir.path(), 2_000);
    let good_total: usize = good.values().map(Vec::len).sum();
    let small = ["--format", "csv", "--batch-rows", "300"];

    let crash = |after: &str| {
        let out = run_import(
            &data,
            &file,
            &[&small[..], &["--crash-after-batches", after][..]].concat(),
        );
        assert_eq!(
            out.status.signal(),
            Some(6),
            "the hook aborts: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let m = marker(&data);
        assert_eq!(m["complete"], false, "{m}");
        m
    };
    // Batches 1-3 durable, the marker at batch 2: the log is ahead of the marker.
    let m = crash("3");
    let after_first = m["lines_done"].as_u64().unwrap();
    assert!(after_first > 300, "{m}");
    // The resumed run is killed the same way: 2 more batches, its marker after the first.
    let m = crash("2");
    assert!(m["lines_done"].as_u64().unwrap() > after_first, "{m}");
    let out = import_ok(&data, &file, &small);
    assert!(
        out.contains(&format!("imported {good_total} rows"))
            && out.contains(&format!("{bad} bad rows")),
        "totals count each row once: {out}"
    );
    let m = marker(&data);
    assert_eq!(
        (&m["complete"], &m["rows"], &m["bad"]),
        (&json!(true), &json!(good_total), &json!(bad)),
        "{m}"
    );
    let out = import_ok(&data, &file, &small);
    assert!(out.contains("nothing to do"), "{out}");
    // A copy under another name is the same file (fingerprinted by content).
    let copy = dir.path().join("copy-of-mixed.csv");
    std::fs::copy(&file, &copy).unwrap();
    let out = import_ok(&data, &copy, &small);
    assert!(out.contains("nothing to do"), "{out}");

    let srv = Server::start(&data, &[], FAST);
    for (symbol, rows) in &good {
        assert_log_holds_exactly(&srv, symbol, rows).await;
    }
}

/// The same for an MT5 tick export in UTF-16LE: the resumed run must also rebuild the bid and
/// ask that MetaTrader leaves out when they did not change, from the lines it skips.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mt5_ticks_resume_after_a_crash_with_the_carried_prices() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut rows = quote_rows("XAUUSD", T0, 900, 2);
    // Long runs where only one side moves, across the batch boundaries.
    for (i, r) in rows.iter_mut().enumerate() {
        let step = (i / 7) as u64;
        r.bid = Some(format!("2050.{:02}", step % 100));
        r.ask = Some(format!("2050.{:02}", (step + i as u64 % 2) % 100 + 1));
    }
    let f = write(dir.path(), "xau.mt5.txt", utf16le_bom(&mt5_ticks(&rows)));
    let args = [
        "--format",
        "mt5",
        "--symbol",
        "XAUUSD",
        "--batch-rows",
        "100",
    ];
    let out = run_import(
        &data,
        &f,
        &[&args[..], &["--crash-after-batches", "4"][..]].concat(),
    );
    assert_eq!(out.status.signal(), Some(6), "{out:?}");
    let out = import_ok(&data, &f, &args);
    assert!(out.contains("imported 900 rows"), "{out}");
    let srv = Server::start(&data, &[], FAST);
    assert_log_holds_exactly(&srv, "XAUUSD", &rows).await;
    assert_candles(&srv, "XAUUSD", "1m", &reference(&rows, Resolution::Min1)).await;
}

/// A real SIGKILL somewhere in the middle of a file (not at a chosen point), then a resumed
/// import: every row exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn import_killed_mid_file_resumes_without_duplicates_or_holes() {
    let dir = tempfile::tempdir().unwrap();
    let rows = quote_rows("KILL", T0, 30_000, 1);
    let f = write(dir.path(), "big.csv", csv_lines(&rows));
    let args = ["--format", "csv", "--batch-rows", "50"];
    // On a fast disk a descheduled test thread may only look again once the import is done:
    // then it tries again with a new data directory, and fails if it never caught one midway.
    let mut killed_in = None;
    for attempt in 0..5 {
        let data = dir.path().join(format!("data-{attempt}"));
        let mut child = import_cmd(&data, &f, &args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        // Kill once a few batches are durable, while the import is still running.
        let deadline = Instant::now() + WAIT;
        loop {
            let progressed = std::fs::read_dir(data.join("imports"))
                .ok()
                .and_then(|mut d| d.next())
                .and_then(|e| std::fs::read(e.ok()?.path()).ok())
                .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
                .is_some_and(|m| m["lines_done"].as_u64().unwrap_or(0) >= 500);
            if progressed || child.try_wait().unwrap().is_some() {
                break;
            }
            assert!(Instant::now() < deadline, "import made no progress");
            std::thread::sleep(Duration::from_millis(2));
        }
        let _ = child.kill();
        let status = child.wait().unwrap();
        if status.signal() == Some(9) && marker(&data)["complete"] == false {
            killed_in = Some(data);
            break;
        }
    }
    let data = killed_in.expect("five imports finished before they could be killed midway");
    let out = import_ok(&data, &f, &args);
    assert!(out.contains("imported 30000 rows"), "{out}");
    let srv = Server::start(&data, &[], FAST);
    assert_log_holds_exactly(&srv, "KILL", &rows).await;
}

/// Issue 14 #7: a missing file is reported as missing, naming it, even while a server holds
/// the data directory's lock (the file is checked first); so is a directory.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_paths_are_named_before_the_data_dir_is_opened() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let missing = dir.path().join("no-such-export.csv");
    let check = |path: &Path, want: &str| {
        let out = run_import(&data, path, &["--format", "csv"]);
        let err = String::from_utf8_lossy(&out.stderr).to_string();
        assert_eq!(out.status.code(), Some(1), "{err}");
        assert!(
            err.contains(&path.display().to_string()) && err.contains(want),
            "names {} and says {want:?}: {err}",
            path.display()
        );
        assert!(!err.to_lowercase().contains("lock"), "{err}");
    };
    check(&missing, "No such file");
    assert!(!data.exists(), "nothing was created for a missing file");
    check(dir.path(), "is a directory");
    let _srv = Server::start(&data, &[], FAST);
    check(&missing, "No such file");
    check(dir.path(), "is a directory");
}
