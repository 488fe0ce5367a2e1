//! The candle store's frozen format (`tests/fixtures/candles-v1/candles.redb`, see
//! `tests/fixtures/README.md`) restored by today's [`CandleProjection`], and the generator
//! that wrote it.
//!
//! The store holds what a checkpoint of this projection writes: closed bars at 1m and 5m,
//! each symbol's `Aggregator` snapshot (serde JSON), the positions of both sources with their
//! `@epoch:<ns>` keys, and the symbols table. `crates/store/tests/fixtures.rs` reads the same
//! file through the store alone. A failure here is a format change (of the store's tables, of
//! the snapshot, or of how positions and epochs are keyed): version it, keep reading v1, and
//! add `candles-v2` beside this fixture.

use std::path::{Path, PathBuf};

use tickwire_projection::Positions;

use super::*;
use crate::{CandleStats, SourceKind};

/// The fixture this module reads and `regenerate_candles_fixture` writes.
const CANDLES_FIXTURE: &str = "candles-v1";

/// 2025-01-01T00:00:00Z, Unix milliseconds.
const T0: i64 = 1_735_689_600_000;

fn fixture_file() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/fixtures")
        .join(CANDLES_FIXTURE)
        .join("candles.redb")
}

fn sources() -> Vec<(String, SourceKind)> {
    vec![
        ("quotes".to_string(), SourceKind::Quote),
        ("trades".to_string(), SourceKind::Trade),
    ]
}

/// The candle service of a server over the candle store at `store` (`[candles]` with 1m and
/// 5m bars, the rest default), as `crate::start` builds it but without starting a runner; the
/// hub it needs lives in `hub_dir`.
fn service(store: &Path, hub_dir: &Path) -> Arc<CandleService> {
    let config = CandlesConfig {
        resolutions: vec!["1m".into(), "5m".into()],
        ..CandlesConfig::default()
    };
    let hub = tickwire_hub::Hub::open(tickwire_hub::HubConfig::new(hub_dir)).unwrap();
    let store = Store::open(store).unwrap();
    let symbols = store.symbols().unwrap().into_iter().collect();
    Arc::new(CandleService {
        hub: Arc::new(hub),
        store: Arc::new(store),
        resolutions: config.parsed_resolutions().unwrap(),
        config,
        symbols: Arc::new(RwLock::new(symbols)),
        stats: Arc::new(CandleStats::default()),
        runner: parking_lot::Mutex::new(None),
    })
}

/// The positions the fixture's checkpoint stored.
fn positions() -> Positions {
    Positions {
        next: BTreeMap::from([("quotes".to_string(), 6), ("trades".to_string(), 4)]),
        epochs: BTreeMap::from([
            ("quotes".to_string(), Epoch(0x0123_4567_89ab_cdef)),
            ("trades".to_string(), Epoch(0xfedc_ba98_7654_3210)),
        ]),
    }
}

/// First-seen times the fixture's symbols table holds (the projection stamps the wall clock;
/// fixed here so the fixture is reproducible).
fn first_seen(symbol: &str) -> i64 {
    match symbol {
        "EURUSD" => T0 + 10_000,
        _ => T0 + 15_000,
    }
}

fn quote(at_ms: i64, bid: &str, ask: &str) -> String {
    format!(r#"{{"bid":"{bid}","ask":"{ask}","ts":{}}}"#, T0 + at_ms)
}

fn trade(at_ms: i64, price: &str, size: &str) -> String {
    format!(
        r#"{{"price":"{price}","size":"{size}","ts":{}}}"#,
        T0 + at_ms
    )
}

/// What the fixture's projection applied: source index, channel, event time (ms after
/// `T0`) and data; each appended 20 ms after its event time. Six quotes of EURUSD (mid prices)
/// and four trades of BTCUSD over five and a half minutes: 1m bars close each minute, the first
/// 5m bar closes at 00:05.
fn publications() -> Vec<(usize, &'static str, i64, String)> {
    let q = |at: i64, bid: &str, ask: &str| (0, "quotes.EURUSD", at, quote(at, bid, ask));
    let t = |at: i64, price: &str, size: &str| (1, "trades.BTCUSD", at, trade(at, price, size));
    vec![
        q(10_000, "1.03500", "1.03520"),
        t(15_000, "94000.5", "0.25"),
        q(50_000, "1.03530", "1.03550"),
        q(70_000, "1.03480", "1.03500"),
        t(75_000, "94010", "0.5"),
        q(130_000, "1.03600", "1.03620"),
        t(200_000, "93990.25", "1.0"),
        q(310_000, "1.03650", "1.03670"),
        t(305_000, "94100", "0.1"),
        q(320_000, "1.03640", "1.03660"),
    ]
}

/// Unix nanoseconds of `at_ms` after `T0`: the append time the log stamps.
fn log_ts(at_ms: i64) -> u64 {
    u64::try_from(T0 + at_ms).unwrap() * 1_000_000
}

/// Feeds `publications` through a projection over the store at `store` and checkpoints it.
fn write_candles_fixture(store: &Path) {
    let hub_dir = tempfile::tempdir().unwrap();
    let svc = service(store, hub_dir.path());
    let mut p = CandleProjection::new(svc, sources(), HashMap::new());
    for (source, channel, at, data) in publications() {
        let channel = Channel::parse(channel).unwrap();
        p.apply(source, &channel, data.as_bytes(), log_ts(at + 20));
    }
    for (symbol, seen) in &mut p.pending.new_symbols {
        *seen = first_seen(symbol);
    }
    p.checkpoint(&positions()).unwrap();
}

/// `start_ms open high low close volume ticks`, with each decimal at its own scale.
fn bar_text(c: &Candle) -> String {
    format!(
        "{} {} {} {} {} {} {}",
        c.start_ms - T0,
        c.open,
        c.high,
        c.low,
        c.close,
        c.volume,
        c.ticks
    )
}

/// The index of `symbol`'s state in the projection.
fn slot(p: &CandleProjection, symbol: &str) -> usize {
    *p.index.get(symbol).unwrap()
}

#[test]
fn candles_v1_restores_positions_and_working_aggregators() {
    let tmp = tempfile::tempdir().unwrap();
    let store = tmp.path().join("candles.redb");
    std::fs::copy(fixture_file(), &store).unwrap();
    let hub_dir = tempfile::tempdir().unwrap();
    let svc = service(&store, hub_dir.path());
    assert_eq!(
        svc.symbols.read().clone(),
        BTreeMap::from([
            ("BTCUSD".to_string(), T0 + 15_000),
            ("EURUSD".to_string(), T0 + 10_000),
        ])
    );
    let mut p = CandleProjection::new(svc.clone(), sources(), HashMap::new());
    // An unreadable snapshot would make restore start over with no positions.
    assert_eq!(p.restore().unwrap(), positions());
    assert_eq!(p.symbols.len(), 2);

    let stored: BTreeMap<String, Vec<u8>> = svc.store.snapshots().unwrap().into_iter().collect();
    let eur = slot(&p, "EURUSD");
    let btc = slot(&p, "BTCUSD");
    for (idx, symbol) in [(eur, "EURUSD"), (btc, "BTCUSD")] {
        let agg = &p.symbols[idx].agg;
        // Today's snapshot of the restored aggregator is the v1 snapshot, byte for byte.
        assert_eq!(
            String::from_utf8(serde_json::to_vec(agg).unwrap()).unwrap(),
            String::from_utf8(stored[symbol].clone()).unwrap(),
            "{symbol}"
        );
        assert_eq!(
            agg.resolutions().collect::<Vec<_>>(),
            vec![Resolution::Min1, Resolution::Min5]
        );
    }
    let agg = &p.symbols[eur].agg;
    assert_eq!(agg.watermark(), Some(T0 + 320_000));
    assert_eq!(agg.stats().applied, 6);
    let live = |agg: &Aggregator, r| bar_text(&agg.live_bar(r).unwrap());
    assert_eq!(
        live(agg, Resolution::Min1),
        "300000 1.03660 1.03660 1.03650 1.03650 2 2"
    );
    assert_eq!(
        live(agg, Resolution::Min5),
        "300000 1.03660 1.03660 1.03650 1.03650 2 2"
    );
    let agg = &p.symbols[btc].agg;
    assert_eq!(agg.watermark(), Some(T0 + 305_000));
    assert_eq!(
        live(agg, Resolution::Min1),
        "300000 94100 94100 94100 94100 0.1 1"
    );

    // The restored aggregators go on: a quote later in the same 5m bucket extends the
    // restored live bars; one in the next minute closes the restored 1m bar, and the
    // checkpoint persists it beside the v1 bars.
    let eurusd = Channel::parse("quotes.EURUSD").unwrap();
    p.apply(
        0,
        &eurusd,
        quote(330_000, "1.03700", "1.03720").as_bytes(),
        log_ts(330_020),
    );
    let derived: BTreeMap<String, String> = p
        .flush()
        .into_iter()
        .flatten()
        .map(|r| {
            let bar: crate::LiveBar = serde_json::from_slice(&r.data).unwrap();
            (r.channel.to_string(), bar_text(&bar.candle))
        })
        .collect();
    assert_eq!(
        derived,
        BTreeMap::from([
            (
                "candles.EURUSD.1m".to_string(),
                "300000 1.03660 1.03710 1.03650 1.03710 3 3".to_string()
            ),
            (
                "candles.EURUSD.5m".to_string(),
                "300000 1.03660 1.03710 1.03650 1.03710 3 3".to_string()
            ),
        ])
    );
    p.apply(
        0,
        &eurusd,
        quote(365_000, "1.03710", "1.03730").as_bytes(),
        log_ts(365_020),
    );
    let mut next = positions();
    next.next.insert("quotes".into(), 8);
    p.checkpoint(&next).unwrap();
    let min1: Vec<String> = svc
        .store
        .bars("EURUSD", Resolution::Min1, i64::MIN, i64::MAX, None)
        .unwrap()
        .iter()
        .map(bar_text)
        .collect();
    assert_eq!(
        min1,
        vec![
            "0 1.03510 1.03540 1.03510 1.03540 2 2",
            "60000 1.03490 1.03490 1.03490 1.03490 1 1",
            "120000 1.03610 1.03610 1.03610 1.03610 1 1",
            "300000 1.03660 1.03710 1.03650 1.03710 3 3",
        ]
    );
    assert_eq!(svc.store.positions().unwrap()["quotes"], 8);
}

/// Writes `tests/fixtures/candles-v1/candles.redb` with today's code. Not run in CI: run it
/// only when deliberately adding a new format version, after pointing `CANDLES_FIXTURE` at a
/// NEW directory (`candles-v2`) and keeping tests that read `candles-v1`; never overwrite a
/// committed fixture (it refuses to write into a directory that exists):
///
/// `cargo test -p tickwire-proj-candles --lib -- --ignored regenerate_candles_fixture`
#[test]
#[ignore = "writes tests/fixtures; run only when adding a new format version"]
fn regenerate_candles_fixture() {
    let file = fixture_file();
    let dir = file.parent().unwrap();
    assert!(
        !dir.exists(),
        "{} exists: fixtures are frozen; write a new version beside it",
        dir.display()
    );
    write_candles_fixture(&file);
    println!("wrote {}", file.display());
}

/// Everything a store holds for the fixture's symbols: positions, symbols, snapshots and
/// every bar (as [`bar_text`]) per symbol and resolution.
type Contents = (
    BTreeMap<String, u64>,
    Vec<(String, i64)>,
    Vec<(String, Vec<u8>)>,
    Vec<(String, Resolution, Vec<String>)>,
);

fn contents(store: &Store) -> Contents {
    let mut bars = Vec::new();
    for symbol in ["BTCUSD", "EURUSD"] {
        for res in [Resolution::Min1, Resolution::Min5] {
            let all = store.bars(symbol, res, i64::MIN, i64::MAX, None).unwrap();
            bars.push((symbol.to_string(), res, all.iter().map(bar_text).collect()));
        }
    }
    (
        store.positions().unwrap(),
        store.symbols().unwrap(),
        store.snapshots().unwrap(),
        bars,
    )
}

/// Today's projection still writes what `candles-v1` holds: the same positions, symbols,
/// snapshot bytes and bars. redb's pages are not compared byte for byte: their layout is
/// redb's (the file opening at all is the check on it); the tables and the values in them are
/// ours. When this fails the projection writes a new format: version it, keep reading v1, and
/// add `candles-v2`.
#[test]
fn todays_projection_still_writes_candles_v1() {
    let tmp = tempfile::tempdir().unwrap();
    let fresh = tmp.path().join("fresh.redb");
    write_candles_fixture(&fresh);
    let frozen = tmp.path().join("frozen.redb");
    std::fs::copy(fixture_file(), &frozen).unwrap();
    assert_eq!(
        contents(&Store::open(&fresh).unwrap()),
        contents(&Store::open(&frozen).unwrap())
    );
}
