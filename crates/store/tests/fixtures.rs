//! The candle store's frozen format (`tests/fixtures/candles-v1/candles.redb`, see
//! `tests/fixtures/README.md`), read with today's [`Store`].
//!
//! Written by the candle projection's checkpoint (its generator is
//! `regenerate_candles_fixture` in `crates/proj-candles/src/projection/fixtures.rs`, which also
//! restores a projection from it): closed bars of EURUSD (quotes, mid prices) and BTCUSD
//! (trades with sizes) at 1m and 5m, both symbols' aggregator snapshots, the positions of the
//! `quotes` and `trades` sources with their `@epoch:<ns>` keys, and the symbols table. Every
//! value is asserted exactly (decimals at their stored scale, snapshots byte for byte). A
//! failure here is a format change: version it, keep reading v1, and add `candles-v2`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use tickwire_candles::{Candle, Resolution};
use tickwire_store::Store;

/// 2025-01-01T00:00:00Z, Unix milliseconds.
const T0: i64 = 1_735_689_600_000;

fn fixture_file() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/candles-v1/candles.redb")
}

/// A copy (opening the store writes: it creates missing tables in a transaction).
fn open_copy() -> (tempfile::TempDir, Store) {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("candles.redb");
    std::fs::copy(fixture_file(), &path).unwrap();
    let store = Store::open(&path).unwrap();
    (tmp, store)
}

/// `start (ms after T0) open high low close volume ticks`, each decimal at its own scale.
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

fn bars(store: &Store, symbol: &str, res: Resolution) -> Vec<String> {
    store
        .bars(symbol, res, i64::MIN, i64::MAX, None)
        .unwrap()
        .iter()
        .map(bar_text)
        .collect()
}

#[test]
fn candles_v1_bars_read_exactly() {
    let (_tmp, store) = open_copy();
    assert_eq!(
        bars(&store, "EURUSD", Resolution::Min1),
        vec![
            "0 1.03510 1.03540 1.03510 1.03540 2 2",
            "60000 1.03490 1.03490 1.03490 1.03490 1 1",
            "120000 1.03610 1.03610 1.03610 1.03610 1 1",
        ]
    );
    assert_eq!(
        bars(&store, "EURUSD", Resolution::Min5),
        vec!["0 1.03510 1.03610 1.03490 1.03610 4 4"]
    );
    assert_eq!(
        bars(&store, "BTCUSD", Resolution::Min1),
        vec![
            "0 94000.5 94000.5 94000.5 94000.5 0.25 1",
            "60000 94010 94010 94010 94010 0.5 1",
            "180000 93990.25 93990.25 93990.25 93990.25 1.0 1",
        ]
    );
    assert_eq!(
        bars(&store, "BTCUSD", Resolution::Min5),
        vec!["0 94000.5 94010 93990.25 93990.25 1.75 3"]
    );
    // Keys are (symbol, resolution index, start): nothing under other resolutions, ranges and
    // "the last N" work on the stored keys.
    for res in Resolution::ALL {
        if res != Resolution::Min1 && res != Resolution::Min5 {
            assert!(bars(&store, "EURUSD", res).is_empty(), "{res:?}");
        }
    }
    let last = store
        .bars("EURUSD", Resolution::Min1, T0, T0 + 180_000, Some(1))
        .unwrap();
    assert_eq!(
        last.iter().map(bar_text).collect::<Vec<_>>(),
        vec!["120000 1.03610 1.03610 1.03610 1.03610 1 1"]
    );
    assert_eq!(
        store
            .last_start_before("BTCUSD", Resolution::Min1, T0 + 180_000)
            .unwrap(),
        Some(T0 + 60_000)
    );
}

#[test]
fn candles_v1_positions_symbols_and_snapshots_read_exactly() {
    let (_tmp, store) = open_copy();
    assert_eq!(
        store.positions().unwrap(),
        BTreeMap::from([
            ("@epoch:quotes".to_string(), 0x0123_4567_89ab_cdef),
            ("@epoch:trades".to_string(), 0xfedc_ba98_7654_3210),
            ("quotes".to_string(), 6),
            ("trades".to_string(), 4),
        ])
    );
    assert_eq!(
        store.symbols().unwrap(),
        vec![
            ("BTCUSD".to_string(), T0 + 15_000),
            ("EURUSD".to_string(), T0 + 10_000),
        ]
    );
    let snapshots: Vec<(String, String)> = store
        .snapshots()
        .unwrap()
        .into_iter()
        .map(|(symbol, bytes)| (symbol, String::from_utf8(bytes).unwrap()))
        .collect();
    assert_eq!(
        snapshots,
        vec![
            ("BTCUSD".to_string(), BTCUSD_SNAPSHOT.to_string()),
            ("EURUSD".to_string(), EURUSD_SNAPSHOT.to_string()),
        ]
    );
}

/// BTCUSD's aggregator snapshot (serde JSON of `tickwire_candles::Aggregator`): the live 1m
/// and 5m bars after the trade at 00:05:05.
const BTCUSD_SNAPSHOT: &str = concat!(
    r#"{"source":"mid","tolerance_ms":5000,"series":["#,
    r#"{"resolution":"1m","bars":[{"start":1735689900000,"end":1735689960000,"acc":{"Trades":"#,
    r#"{"ohlc":{"open":"94100","open_ts":1735689905000,"high":"94100","low":"94100","#,
    r#""close":"94100","close_ts":1735689905000,"count":1},"size_sum":"0.1","any_size":true}}}]},"#,
    r#"{"resolution":"5m","bars":[{"start":1735689900000,"end":1735690200000,"acc":{"Trades":"#,
    r#"{"ohlc":{"open":"94100","open_ts":1735689905000,"high":"94100","low":"94100","#,
    r#""close":"94100","close_ts":1735689905000,"count":1},"size_sum":"0.1","any_size":true}}}]}],"#,
    r#""watermark":1735689905000,"#,
    r#""stats":{"applied":4,"late_applied":0,"late_dropped":0,"ignored":0}}"#,
);

/// EURUSD's aggregator snapshot: the live 1m and 5m bars after the quotes at 00:05:10 and
/// 00:05:20.
const EURUSD_SNAPSHOT: &str = concat!(
    r#"{"source":"mid","tolerance_ms":5000,"series":["#,
    r#"{"resolution":"1m","bars":[{"start":1735689900000,"end":1735689960000,"acc":{"Quotes":"#,
    r#"{"open":"1.03660","open_ts":1735689910000,"high":"1.03660","low":"1.03650","#,
    r#""close":"1.03650","close_ts":1735689920000,"count":2}}}]},"#,
    r#"{"resolution":"5m","bars":[{"start":1735689900000,"end":1735690200000,"acc":{"Quotes":"#,
    r#"{"open":"1.03660","open_ts":1735689910000,"high":"1.03660","low":"1.03650","#,
    r#""close":"1.03650","close_ts":1735689920000,"count":2}}}]}],"#,
    r#""watermark":1735689920000,"#,
    r#""stats":{"applied":6,"late_applied":0,"late_dropped":0,"ignored":0}}"#,
);

#[test]
fn candles_v1_snapshots_restore_as_aggregators() {
    let (_tmp, store) = open_copy();
    for (symbol, bytes) in store.snapshots().unwrap() {
        let agg: tickwire_candles::Aggregator = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(
            agg.resolutions().collect::<Vec<_>>(),
            vec![Resolution::Min1, Resolution::Min5],
            "{symbol}"
        );
        // Today's serializer writes the restored aggregator back to the same bytes.
        assert_eq!(serde_json::to_vec(&agg).unwrap(), bytes, "{symbol}");
    }
}

#[test]
fn candles_v1_store_keeps_working() {
    let (tmp, store) = open_copy();
    let mut batch = tickwire_store::Batch::default();
    batch.positions.push(("quotes".into(), 7));
    batch.new_symbols.push(("EURUSD".into(), 0));
    store.commit(&batch).unwrap();
    drop(store);
    let store = Store::open(&tmp.path().join("candles.redb")).unwrap();
    assert_eq!(store.positions().unwrap()["quotes"], 7);
    // First-seen times are kept from the first sighting, v1's included.
    assert_eq!(
        store.symbols().unwrap()[1],
        ("EURUSD".to_string(), T0 + 10_000)
    );
}

/// The imported-bar tables came after v1: a v1 store opens with none marked, its
/// projection-built bars can be replaced by imported ones, and those then stay.
#[test]
fn candles_v1_store_takes_imported_bars() {
    let (_tmp, store) = open_copy();
    assert!(store.imported_series().unwrap().is_empty());
    assert_eq!(
        store.imported_bar("EURUSD", Resolution::Min1, T0).unwrap(),
        None
    );
    let stored = store
        .bars("EURUSD", Resolution::Min1, T0, T0 + 1, None)
        .unwrap();
    let mut imported = stored[0].clone();
    imported.volume = 120.into();
    imported.ticks = 0;
    let mut batch = tickwire_store::Batch::default();
    batch
        .imported_bars
        .push(("EURUSD".into(), Resolution::Min1, imported.clone()));
    store.commit(&batch).unwrap();
    let mut batch = tickwire_store::Batch::default();
    batch
        .bars
        .push(("EURUSD".into(), Resolution::Min1, stored[0].clone()));
    store.commit(&batch).unwrap();
    assert_eq!(
        store
            .bars("EURUSD", Resolution::Min1, T0, T0 + 1, None)
            .unwrap(),
        vec![imported.clone()]
    );
    assert_eq!(
        store.imported_bar("EURUSD", Resolution::Min1, T0).unwrap(),
        Some(imported)
    );
    assert_eq!(
        store.imported_series().unwrap(),
        vec![("EURUSD".to_string(), Resolution::Min1)]
    );
}
