//! Property tests: the live aggregator (driven the way the hub drives it) and the batch
//! function must equal a naive, obviously-correct reference aggregation.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet};

use proptest::prelude::*;
use tickwire_candles::{
    aggregate, Aggregator, AggregatorConfig, Candle, ChangeKind, Decimal, PriceSource, Resolution,
    Tick, TickKind,
};

const DAY: i64 = 86_400_000;
/// 2024-01-01 00:00:00 UTC.
const T0: i64 = 1_704_067_200_000;

// ---------------------------------------------------------------------------------------------
// Naive calendar: walk years and months from 1970 one at a time. Slow, but nothing to get wrong.

fn is_leap(y: i64) -> bool {
    (y % 4 == 0 && y % 100 != 0) || y % 400 == 0
}

fn month_days(y: i64, m: usize) -> i64 {
    [
        31,
        if is_leap(y) { 29 } else { 28 },
        31,
        30,
        31,
        30,
        31,
        31,
        30,
        31,
        30,
        31,
    ][m]
}

/// (year, month 0..12, day-of-month 0..) of a day number, and the day number of that month's 1st.
fn naive_civil(days: i64) -> (i64, usize, i64, i64) {
    let (mut y, mut first_of_year) = (1970, 0);
    while days < first_of_year {
        y -= 1;
        first_of_year -= if is_leap(y) { 366 } else { 365 };
    }
    loop {
        let len = if is_leap(y) { 366 } else { 365 };
        if days < first_of_year + len {
            break;
        }
        first_of_year += len;
        y += 1;
    }
    let (mut m, mut first_of_month) = (0, first_of_year);
    while days >= first_of_month + month_days(y, m) {
        first_of_month += month_days(y, m);
        m += 1;
    }
    (y, m, days - first_of_month, first_of_month)
}

fn naive_bucket_start(res: Resolution, ts: i64) -> i64 {
    let day_start = ts - ts.rem_euclid(DAY);
    let days = day_start / DAY;
    match res {
        // 1970-01-05 (day 4) was a Monday.
        Resolution::Week1 => (days - (days - 4).rem_euclid(7)) * DAY,
        Resolution::Month1 => naive_civil(days).3 * DAY,
        fixed => {
            let len = match fixed {
                Resolution::Sec1 => 1_000,
                Resolution::Sec5 => 5_000,
                Resolution::Sec15 => 15_000,
                Resolution::Min1 => 60_000,
                Resolution::Min5 => 300_000,
                Resolution::Min15 => 900_000,
                Resolution::Min30 => 1_800_000,
                Resolution::Hour1 => 3_600_000,
                Resolution::Hour4 => 14_400_000,
                _ => DAY,
            };
            ts - ts.rem_euclid(len)
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Naive aggregation: the documented rules, applied to each bucket's ticks all at once.

fn reference(arrivals: &[Tick], res: Resolution, source: PriceSource) -> Vec<Candle> {
    let mut sorted = arrivals.to_vec();
    sorted.sort_by_key(|t| t.ts_ms); // stable: equal timestamps keep arrival order
    let mut buckets: BTreeMap<i64, Vec<Tick>> = BTreeMap::new();
    for t in sorted {
        buckets
            .entry(naive_bucket_start(res, t.ts_ms))
            .or_default()
            .push(t);
    }
    let mut out = Vec::new();
    for (start, ticks) in buckets {
        let trades: Vec<(Decimal, Option<Decimal>)> = ticks
            .iter()
            .filter_map(|t| match t.kind {
                TickKind::Trade { price, size } => Some((price, size)),
                TickKind::Quote { .. } => None,
            })
            .collect();
        let (prices, volume): (Vec<Decimal>, Decimal) = if !trades.is_empty() {
            let sizes: Vec<Decimal> = trades.iter().filter_map(|(_, s)| *s).collect();
            let volume = if sizes.is_empty() {
                Decimal::from(trades.len())
            } else {
                sizes.iter().sum()
            };
            (trades.iter().map(|(p, _)| *p).collect(), volume)
        } else {
            let prices: Vec<Decimal> = ticks
                .iter()
                .filter_map(|t| match (t.kind, source) {
                    (TickKind::Quote { bid, .. }, PriceSource::Bid) => Some(bid),
                    (TickKind::Quote { ask, .. }, PriceSource::Ask) => Some(ask),
                    (TickKind::Quote { bid, ask }, PriceSource::Mid) => {
                        Some((bid + ask) / Decimal::TWO)
                    }
                    _ => None,
                })
                .collect();
            let n = Decimal::from(prices.len());
            (prices, n)
        };
        if prices.is_empty() {
            continue; // a gap, or only quotes under PriceSource::Last
        }
        out.push(Candle {
            start_ms: start,
            open: prices[0],
            high: *prices.iter().max().unwrap(),
            low: *prices.iter().min().unwrap(),
            close: *prices.last().unwrap(),
            volume,
            ticks: prices.len() as u64,
        });
    }
    out
}

// ---------------------------------------------------------------------------------------------
// Generators.

fn price() -> impl Strategy<Value = Decimal> {
    (1i64..5_000, 0u32..=4).prop_map(|(m, scale)| Decimal::new(m, scale))
}

fn kind() -> impl Strategy<Value = TickKind> {
    prop_oneof![
        (price(), price()).prop_map(|(bid, ask)| TickKind::Quote { bid, ask }),
        (price(), proptest::option::weighted(0.5, price()))
            .prop_map(|(price, size)| TickKind::Trade { price, size }),
    ]
}

fn source() -> impl Strategy<Value = PriceSource> {
    prop_oneof![
        Just(PriceSource::Bid),
        Just(PriceSource::Ask),
        Just(PriceSource::Mid),
        Just(PriceSource::Last),
    ]
}

/// Ticks in timestamp order: mostly dense, sometimes hours to weeks apart (to cross day, week
/// and month boundaries), occasionally on the same millisecond.
fn sorted_ticks() -> impl Strategy<Value = Vec<Tick>> {
    let step = prop_oneof![
        8 => 0i64..2_000,
        3 => 0i64..180_000,
        1 => 0i64..(20 * DAY),
    ];
    (
        -400 * DAY..400 * DAY,
        proptest::collection::vec((step, kind()), 0..250),
    )
        .prop_map(|(offset, steps)| {
            let mut ts = T0 + offset;
            steps
                .into_iter()
                .map(|(dt, kind)| {
                    ts += dt;
                    Tick { ts_ms: ts, kind }
                })
                .collect()
        })
}

/// What a persistence layer plus live channel would end up holding: the latest reported
/// content of every bar, checking on the way that the change stream is well-formed.
fn drive(
    a: &mut Aggregator,
    script: &[(Tick, Option<i64>)],
) -> BTreeMap<(Resolution, i64), Candle> {
    let mut store = BTreeMap::new();
    let mut closed = BTreeSet::new();
    let mut apply = |changes: Vec<tickwire_candles::BarChange>| {
        for c in changes {
            let key = (c.resolution, c.candle.start_ms);
            match c.kind {
                ChangeKind::Closed => assert!(closed.insert(key), "closed twice: {key:?}"),
                ChangeKind::Live => assert!(!closed.contains(&key), "live after close: {key:?}"),
                ChangeKind::Corrected => {}
            }
            if c.kind == ChangeKind::Corrected {
                closed.insert(key);
            }
            store.insert(key, c.candle);
        }
    };
    for (tick, timer) in script {
        apply(a.update(tick).changes);
        if let Some(now) = timer {
            apply(a.close_until(*now));
        }
    }
    apply(a.close_until(i64::MAX));
    // After the final flush every bar must have been reported closed (or corrected).
    for key in store.keys() {
        assert!(closed.contains(key), "never closed: {key:?}");
    }
    store
}

fn series(store: &BTreeMap<(Resolution, i64), Candle>, res: Resolution) -> Vec<Candle> {
    store
        .iter()
        .filter(|((r, _), _)| *r == res)
        .map(|(_, c)| c.clone())
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    /// Sorted input, then the same ticks shuffled within the tolerance, with timer calls: the
    /// live aggregator ends up with exactly the reference bars, drops nothing, and the batch
    /// function agrees.
    #[test]
    fn live_equals_reference_within_tolerance(
        ticks in sorted_ticks(),
        source in source(),
        tolerance in prop_oneof![Just(0i64), Just(1_000), Just(5_000), Just(90_000)],
        jitter_seed in proptest::collection::vec((0.0f64..=1.0, any::<bool>()), 250),
    ) {
        // Arrival order: sort by ts + jitter with jitter in [0, tolerance]. A tick arriving after
        // another has ts + j >= ts' + j', so it is at most `tolerance` behind anything seen.
        let mut keyed: Vec<(i64, Tick, bool)> = ticks
            .iter()
            .zip(&jitter_seed)
            .map(|(t, (j, timer))| (t.ts_ms + (j * tolerance as f64) as i64, *t, *timer))
            .collect();
        keyed.sort_by_key(|(k, _, _)| *k);
        // Timer calls at the arrival key so far: never ahead of a later tick by more than the
        // tolerance.
        let script: Vec<(Tick, Option<i64>)> =
            keyed.iter().map(|(k, t, timer)| (*t, timer.then_some(*k))).collect();
        let arrivals: Vec<Tick> = keyed.iter().map(|(_, t, _)| *t).collect();

        for input in [&ticks, &arrivals] {
            let script: Vec<(Tick, Option<i64>)> = if std::ptr::eq(input, &ticks) {
                ticks.iter().map(|t| (*t, None)).collect()
            } else {
                script.clone()
            };
            let mut a = Aggregator::new(AggregatorConfig {
                resolutions: Resolution::ALL.to_vec(),
                price_source: source,
                late_tolerance_ms: tolerance,
            }).unwrap();
            let store = drive(&mut a, &script);
            prop_assert_eq!(a.late_dropped(), 0);
            for res in Resolution::ALL {
                let expected = reference(input, res, source);
                prop_assert_eq!(&series(&store, res), &expected, "live {} {:?}", res, source);
                prop_assert_eq!(&aggregate(input, res, source), &expected, "batch {}", res);
            }
        }
    }

    /// Any disorder at all: ticks beyond the tolerance are dropped and counted, exactly those,
    /// and the bars equal the reference over the ticks that were accepted.
    #[test]
    fn late_ticks_beyond_tolerance_are_dropped_and_counted(
        ticks in sorted_ticks(),
        source in source(),
        tolerance in prop_oneof![Just(0i64), Just(1_000), Just(60_000)],
        order in any::<proptest::sample::Index>().prop_map(|i| i.index(usize::MAX)),
    ) {
        // A deterministic shuffle from one seed (a tiny LCG), so shrinking stays meaningful.
        let mut arrivals = ticks.clone();
        let mut state = order as u64 | 1;
        for i in (1..arrivals.len()).rev() {
            state = state.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
            arrivals.swap(i, (state >> 33) as usize % (i + 1));
        }
        // Naive watermark simulation of the documented rule.
        let mut watermark: Option<i64> = None;
        let mut accepted = Vec::new();
        let mut dropped = 0u64;
        for t in &arrivals {
            if source == PriceSource::Last && matches!(t.kind, TickKind::Quote { .. }) {
                continue;
            }
            if watermark.is_some_and(|wm| t.ts_ms < wm - tolerance) {
                dropped += 1;
            } else {
                watermark = Some(watermark.map_or(t.ts_ms, |wm| wm.max(t.ts_ms)));
                accepted.push(*t);
            }
        }
        let mut a = Aggregator::new(AggregatorConfig {
            resolutions: Resolution::ALL.to_vec(),
            price_source: source,
            late_tolerance_ms: tolerance,
        }).unwrap();
        let script: Vec<(Tick, Option<i64>)> = arrivals.iter().map(|t| (*t, None)).collect();
        let store = drive(&mut a, &script);
        prop_assert_eq!(a.late_dropped(), dropped);
        for res in Resolution::ALL {
            prop_assert_eq!(series(&store, res), reference(&accepted, res, source), "{}", res);
        }
    }

    /// Alignment against the naive calendar, over +-250 years around the epoch.
    #[test]
    fn bucket_alignment_matches_naive_calendar(ts in -250 * 365 * DAY..250 * 365 * DAY) {
        for res in Resolution::ALL {
            let start = res.bucket_start(ts);
            let next = res.next_bucket_start(ts);
            prop_assert_eq!(start, naive_bucket_start(res, ts), "{}", res);
            prop_assert!(start <= ts && ts < next, "{} {} {} {}", res, start, ts, next);
            prop_assert_eq!(res.bucket_start(next), next, "{}", res);
            prop_assert_eq!(res.bucket_start(next - 1), start, "{}", res);
        }
        let (_, _, day_of_month, _) = naive_civil(Resolution::Month1.bucket_start(ts) / DAY);
        prop_assert_eq!(day_of_month, 0);
    }

    /// Anything at all: no panic anywhere in the i64 range.
    #[test]
    fn never_panics(ts in proptest::collection::vec(any::<i64>(), 1..20), kinds in proptest::collection::vec(kind(), 20)) {
        let mut a = Aggregator::new(AggregatorConfig::default()).unwrap();
        let ticks: Vec<Tick> = ts.iter().zip(&kinds).map(|(ts, k)| Tick { ts_ms: *ts, kind: *k }).collect();
        for (i, t) in ticks.iter().enumerate() {
            a.update(t);
            if i % 3 == 0 {
                a.close_until(t.ts_ms);
            }
        }
        for res in Resolution::ALL {
            let _ = aggregate(&ticks, res, PriceSource::Mid);
        }
    }
}
