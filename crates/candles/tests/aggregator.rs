//! Behaviour of the live aggregator through its public API.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::str::FromStr;

use tickwire_candles::{
    aggregate, Aggregator, AggregatorConfig, BarChange, Candle, CandleError, ChangeKind, Decimal,
    PriceSource, Resolution, Tick, TickOutcome,
};

const MIN: i64 = 60_000;
/// 2024-01-01 00:00:00 UTC, a Monday.
const T0: i64 = 1_704_067_200_000;

fn d(s: &str) -> Decimal {
    Decimal::from_str(s).unwrap()
}

fn q(ts: i64, bid: &str, ask: &str) -> Tick {
    Tick::quote(ts, d(bid), d(ask))
}

fn t(ts: i64, price: &str, size: Option<&str>) -> Tick {
    Tick::trade(ts, d(price), size.map(d))
}

fn agg(resolutions: &[Resolution], source: PriceSource, tolerance: i64) -> Aggregator {
    Aggregator::new(AggregatorConfig {
        resolutions: resolutions.to_vec(),
        price_source: source,
        late_tolerance_ms: tolerance,
    })
    .unwrap()
}

fn candle(start_ms: i64, ohlc: [&str; 4], volume: &str, ticks: u64) -> Candle {
    Candle {
        start_ms,
        open: d(ohlc[0]),
        high: d(ohlc[1]),
        low: d(ohlc[2]),
        close: d(ohlc[3]),
        volume: d(volume),
        ticks,
    }
}

fn kinds(changes: &[BarChange]) -> Vec<(Resolution, ChangeKind, i64)> {
    changes
        .iter()
        .map(|c| (c.resolution, c.kind, c.candle.start_ms))
        .collect()
}

#[test]
fn config_is_validated() {
    let bad = AggregatorConfig {
        late_tolerance_ms: -1,
        ..AggregatorConfig::default()
    };
    assert!(matches!(
        Aggregator::new(bad),
        Err(CandleError::InvalidConfig(_))
    ));
    let empty = AggregatorConfig {
        resolutions: vec![],
        ..AggregatorConfig::default()
    };
    assert!(matches!(
        Aggregator::new(empty),
        Err(CandleError::InvalidConfig(_))
    ));
    let dup = AggregatorConfig {
        resolutions: vec![Resolution::Min1, Resolution::Min1, Resolution::Sec1],
        ..AggregatorConfig::default()
    };
    let a = Aggregator::new(dup).unwrap();
    assert_eq!(
        a.resolutions().collect::<Vec<_>>(),
        [Resolution::Min1, Resolution::Sec1]
    );
}

#[test]
fn quotes_build_bars_from_the_chosen_source() {
    let ticks = [
        q(T0, "1.0", "1.2"),
        q(T0 + 1, "0.9", "1.5"),
        q(T0 + 2, "1.1", "1.3"),
    ];
    let cases = [
        (PriceSource::Bid, ["1.0", "1.1", "0.9", "1.1"]),
        (PriceSource::Ask, ["1.2", "1.5", "1.2", "1.3"]),
        (PriceSource::Mid, ["1.1", "1.2", "1.1", "1.2"]),
    ];
    for (source, ohlc) in cases {
        let mut a = agg(&[Resolution::Min1], source, 0);
        for tick in &ticks {
            a.update(tick);
        }
        // Quote bars: volume is the number of quotes.
        assert_eq!(
            a.live_bar(Resolution::Min1),
            Some(candle(T0, ohlc, "3", 3)),
            "{source:?}"
        );
    }
}

#[test]
fn trades_override_quotes_within_a_bar() {
    let mut a = agg(&[Resolution::Min1], PriceSource::Mid, 0);
    a.update(&q(T0, "1.0", "1.2"));
    a.update(&q(T0 + 1, "5.0", "5.2"));
    // The first trade discards the bar's quote data: the bar restarts from the trade.
    let up = a.update(&t(T0 + 2, "1.15", Some("2")));
    assert_eq!(
        up.changes[0].candle,
        candle(T0, ["1.15", "1.15", "1.15", "1.15"], "2", 1)
    );
    // Later quotes in a trade bar change nothing and are not reported.
    let up = a.update(&q(T0 + 3, "9", "9"));
    assert_eq!(up.outcome, TickOutcome::Applied);
    assert!(up.changes.is_empty());
    a.update(&t(T0 + 4, "1.10", Some("3")));
    assert_eq!(
        a.live_bar(Resolution::Min1),
        Some(candle(T0, ["1.15", "1.15", "1.10", "1.10"], "5", 2))
    );
    // The next bucket has only quotes, so it is a quote bar again (the rule is per bar).
    a.update(&q(T0 + MIN, "2.0", "2.2"));
    assert_eq!(
        a.live_bar(Resolution::Min1),
        Some(candle(T0 + MIN, ["2.1", "2.1", "2.1", "2.1"], "1", 1))
    );
}

#[test]
fn last_source_ignores_quotes_entirely() {
    let mut a = agg(&[Resolution::Min1], PriceSource::Last, 0);
    let up = a.update(&q(T0, "1.0", "1.2"));
    assert_eq!(up.outcome, TickOutcome::Ignored);
    assert!(up.changes.is_empty());
    assert_eq!(a.watermark(), None, "ignored quotes must not move time");
    assert_eq!(a.live_bar(Resolution::Min1), None);
    a.update(&t(T0 + 5, "1.3", None));
    a.update(&q(T0 + 6, "7", "7"));
    assert_eq!(
        a.live_bar(Resolution::Min1),
        Some(candle(T0, ["1.3", "1.3", "1.3", "1.3"], "1", 1))
    );
    assert_eq!(a.stats().ignored, 2);
}

#[test]
fn volume_is_sum_of_sizes_when_any_trade_has_one_else_tick_count() {
    let mut a = agg(&[Resolution::Min1], PriceSource::Last, 0);
    a.update(&t(T0, "10", None));
    a.update(&t(T0 + 1, "11", None));
    assert_eq!(a.live_bar(Resolution::Min1).unwrap().volume, d("2"));
    // One sized trade switches the bar to size volume; unsized trades then add 0.
    a.update(&t(T0 + 2, "12", Some("0.5")));
    a.update(&t(T0 + 3, "12", None));
    let bar = a.live_bar(Resolution::Min1).unwrap();
    assert_eq!((bar.volume, bar.ticks), (d("0.5"), 4));
}

#[test]
fn later_bucket_closes_the_bar_and_gaps_stay_gaps() {
    let mut a = agg(&[Resolution::Min1, Resolution::Min5], PriceSource::Bid, 0);
    let up = a.update(&q(T0 + 10, "1", "2"));
    assert_eq!(
        kinds(&up.changes),
        [
            (Resolution::Min1, ChangeKind::Live, T0),
            (Resolution::Min5, ChangeKind::Live, T0)
        ]
    );
    // Two empty minutes later: the 1m bar closes (reported before the new live bars), and no
    // bar appears for the empty minutes.
    let up = a.update(&q(T0 + 3 * MIN + 1, "3", "4"));
    assert_eq!(
        kinds(&up.changes),
        [
            (Resolution::Min1, ChangeKind::Closed, T0),
            (Resolution::Min1, ChangeKind::Live, T0 + 3 * MIN),
            (Resolution::Min5, ChangeKind::Live, T0),
        ]
    );
    assert_eq!(
        up.changes[0].candle,
        candle(T0, ["1", "1", "1", "1"], "1", 1)
    );
    assert_eq!(
        up.changes[2].candle,
        candle(T0, ["1", "3", "1", "3"], "2", 2)
    );
}

#[test]
fn close_until_closes_ended_buckets_once() {
    let mut a = agg(&[Resolution::Sec1, Resolution::Min1], PriceSource::Bid, 0);
    a.update(&q(T0 + 500, "1", "2"));
    assert!(
        a.close_until(T0 + 999).is_empty(),
        "bucket has not ended yet"
    );
    let closed = a.close_until(T0 + 1_000);
    assert_eq!(kinds(&closed), [(Resolution::Sec1, ChangeKind::Closed, T0)]);
    assert_eq!(a.live_bar(Resolution::Sec1), None);
    assert!(a.live_bar(Resolution::Min1).is_some());
    assert!(
        a.close_until(T0 + 2_000).is_empty(),
        "closed bars are reported once"
    );
    assert!(
        a.close_until(T0).is_empty(),
        "going back in time is a no-op"
    );
    let closed = a.close_until(T0 + MIN);
    assert_eq!(kinds(&closed), [(Resolution::Min1, ChangeKind::Closed, T0)]);
}

#[test]
fn late_tick_within_tolerance_corrects_a_closed_bar() {
    let mut a = agg(
        &[Resolution::Sec1, Resolution::Min1],
        PriceSource::Last,
        2_000,
    );
    a.update(&t(T0 + 100, "10", Some("1")));
    let up = a.update(&t(T0 + 1_200, "11", Some("1")));
    assert_eq!(up.of_kind(ChangeKind::Closed).count(), 1);
    // 1.1 s late: the 1s bar [T0, T0+1000) already closed, but is retained and corrected; the
    // 1m bar is still live.
    let up = a.update(&t(T0 + 100, "9", Some("2")));
    assert_eq!(up.outcome, TickOutcome::AppliedLate { lag_ms: 1_100 });
    assert_eq!(
        kinds(&up.changes),
        [
            (Resolution::Sec1, ChangeKind::Corrected, T0),
            (Resolution::Min1, ChangeKind::Live, T0)
        ]
    );
    // Same timestamp as the open: the earlier arrival keeps the open, the later one closes.
    assert_eq!(
        up.changes[0].candle,
        candle(T0, ["10", "10", "9", "9"], "3", 2)
    );
    // A late tick into an empty closed bucket creates that bar, reported as a correction.
    let up = a.update(&t(T0 + 3_100, "12", None));
    assert_eq!(up.outcome, TickOutcome::Applied);
    let up = a.update(&t(T0 + 2_050, "12", None));
    assert_eq!(up.changes[0].kind, ChangeKind::Corrected);
    assert_eq!(up.changes[0].candle.start_ms, T0 + 2_000);
    assert_eq!(a.stats().late_applied, 2);
    assert_eq!(a.late_dropped(), 0);
}

#[test]
fn beyond_tolerance_is_dropped_counted_and_reported() {
    let mut a = agg(
        &[Resolution::Sec1, Resolution::Min1],
        PriceSource::Last,
        1_000,
    );
    a.update(&t(T0 + 5_000, "10", None));
    let up = a.update(&t(T0 + 3_999, "99", None));
    assert_eq!(up.outcome, TickOutcome::Dropped { lag_ms: 1_001 });
    assert!(up.changes.is_empty());
    // Exactly at the tolerance still counts.
    let up = a.update(&t(T0 + 4_000, "8", None));
    assert_eq!(up.outcome, TickOutcome::AppliedLate { lag_ms: 1_000 });
    assert_eq!(a.late_dropped(), 1);
    assert_eq!(a.stats().applied, 2);
    // The dropped price never reached any bar.
    assert_eq!(a.live_bar(Resolution::Min1).unwrap().high, d("10"));
    // close_until moves the watermark too.
    a.close_until(T0 + 10_000);
    assert!(matches!(
        a.update(&t(T0 + 8_000, "1", None)).outcome,
        TickOutcome::Dropped { .. }
    ));
    assert_eq!(a.late_dropped(), 2);
}

#[test]
fn week_and_month_bars_follow_the_calendar() {
    let mut a = agg(
        &[Resolution::Week1, Resolution::Month1],
        PriceSource::Last,
        0,
    );
    // Sunday 2024-03-31 23:00 then Monday 2024-04-01 01:00: both a new week and a new month.
    let sunday = T0 + (90 * 24 + 23) * 3_600_000;
    a.update(&t(sunday, "1", None));
    let up = a.update(&t(sunday + 2 * 3_600_000, "2", None));
    let closed: Vec<_> = up
        .of_kind(ChangeKind::Closed)
        .map(|c| c.resolution)
        .collect();
    assert_eq!(closed, [Resolution::Week1, Resolution::Month1]);
    let april = sunday + 3_600_000;
    assert_eq!(a.live_bar(Resolution::Week1).unwrap().start_ms, april);
    assert_eq!(a.live_bar(Resolution::Month1).unwrap().start_ms, april);
}

#[test]
fn batch_aggregate_matches_live_and_accepts_any_order() {
    let ticks = [
        q(T0 + 5, "1", "3"),
        t(T0 + MIN + 7, "5", Some("1")),
        q(T0 + 1, "0", "2"),
        t(T0 + 3 * MIN, "6", None),
        q(T0 + MIN + 8, "100", "100"),
    ];
    let bars = aggregate(&ticks, Resolution::Min1, PriceSource::Mid);
    assert_eq!(
        bars,
        [
            candle(T0, ["1", "2", "1", "2"], "2", 2),
            candle(T0 + MIN, ["5", "5", "5", "5"], "1", 1),
            candle(T0 + 3 * MIN, ["6", "6", "6", "6"], "1", 1),
        ]
    );
    assert!(aggregate(&[], Resolution::Min1, PriceSource::Mid).is_empty());
    assert!(aggregate(&[q(T0, "1", "1")], Resolution::Min1, PriceSource::Last).is_empty());
}

#[test]
fn candle_serializes_prices_as_strings() {
    let c = candle(T0, ["1.10", "1.2", "1.0", "1.15"], "3", 3);
    let json = serde_json::to_string(&c).unwrap();
    assert_eq!(
        json,
        r#"{"start_ms":1704067200000,"open":"1.10","high":"1.2","low":"1.0","close":"1.15","volume":"3","ticks":3}"#
    );
    assert_eq!(serde_json::from_str::<Candle>(&json).unwrap(), c);
}

#[test]
fn extreme_timestamps_do_not_panic() {
    let mut a = Aggregator::new(AggregatorConfig::default()).unwrap();
    for ts in [i64::MIN, -1, 0, i64::MAX - 1, i64::MAX, i64::MAX, i64::MIN] {
        a.update(&t(ts, "1", Some("1")));
        a.update(&q(ts, "1", "2"));
    }
    a.close_until(i64::MAX);
    for res in Resolution::ALL {
        let _ = aggregate(
            &[t(i64::MAX, "1", None), t(i64::MIN, "1", None)],
            res,
            PriceSource::Mid,
        );
    }
}

/// A snapshot restored mid-stream continues exactly like the aggregator that never stopped.
#[test]
fn snapshot_restore_continues_identically() {
    use tickwire_candles::{Aggregator, AggregatorConfig, Decimal, Tick};
    let t0 = 1_704_067_200_000i64;
    let ticks: Vec<Tick> = (0..500i64)
        .map(|i| {
            let p = Decimal::new(108_000 + (i * 37) % 101, 5);
            if i % 7 == 0 {
                Tick::trade(t0 + i * 731, p, Some(Decimal::new(i, 1)))
            } else {
                Tick::quote(t0 + i * 731, p, p + Decimal::new(2, 5))
            }
        })
        .collect();
    let mut straight = Aggregator::new(AggregatorConfig::default()).unwrap();
    let mut first = Aggregator::new(AggregatorConfig::default()).unwrap();
    let mut a = Vec::new();
    let mut b = Vec::new();
    for t in &ticks[..250] {
        a.extend(straight.update(t).changes);
        b.extend(first.update(t).changes);
    }
    let snap = serde_json::to_vec(&first).unwrap();
    drop(first);
    let mut restored: Aggregator = serde_json::from_slice(&snap).unwrap();
    for t in &ticks[250..] {
        a.extend(straight.update(t).changes);
        b.extend(restored.update(t).changes);
    }
    assert_eq!(a, b);
    assert_eq!(straight.stats(), restored.stats());
}
