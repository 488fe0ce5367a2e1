//! The cascade (see [`Aggregator`], "Cascade"): while the finest series' newest bar is
//! pending, an in-order tick updates only that bar and the coarser series' live bars are read
//! as their stored part merged with it; the pending bar is folded into them when anything else
//! has to change them.

use super::report::{BarRef, BarView, ChangeKind};
use super::series::{Bar, Series};
use super::Aggregator;
use crate::calendar::DAY_MS;
use crate::candle::{BarAcc, Priced};
use crate::{Candle, Resolution};

/// Timestamps beyond this (either sign) take the per-series path: bucket starts saturate near
/// the ends of the `i64` range, where buckets stop nesting.
const CASCADE_RANGE: i64 = 1 << 60;

/// The index of the finest series if every other series' buckets are unions of its buckets:
/// its length divides a day (weeks and months start at midnight) and every other fixed length.
/// `None` (no cascade) with a single series or a calendar-only finest resolution.
pub(super) fn cascade_index(series: &[Series]) -> Option<usize> {
    // More than 12 only from a hand-made snapshot with duplicates: no cascade (`order`).
    if series.len() < 2 || series.len() > 12 {
        return None;
    }
    let (index, len) = series
        .iter()
        .enumerate()
        .filter_map(|(i, s)| Some((i, s.resolution.fixed_len_ms()?)))
        .min_by_key(|(_, len)| *len)?;
    let nests = len > 0
        && DAY_MS % len == 0
        && series.iter().enumerate().all(|(i, s)| {
            i == index
                || (s.resolution != series[index].resolution
                    && s.resolution.fixed_len_ms().is_none_or(|l| l % len == 0))
        });
    nests.then_some(index)
}

pub(super) fn order_of(series: &[Series]) -> [Resolution; 12] {
    let mut order = [Resolution::Sec1; 12];
    for (slot, s) in order.iter_mut().zip(series) {
        *slot = s.resolution;
    }
    order
}

impl Aggregator {
    /// The finest series' newest bar while it is pending (not folded into the coarser series).
    #[inline]
    pub(super) fn pending_bar(&self) -> Option<&Bar> {
        if !self.pending {
            return None;
        }
        self.series.get(self.fine?)?.newest.as_ref()
    }

    /// The cascade's path for one accepted tick, after [`Aggregator::advance`]: if the tick
    /// lands in the pending finest bar, or starts a new live finest bar after every other,
    /// only that bar is updated and each series' change is reported as the per-series path
    /// would have; returns false (nothing done) for any other tick.
    #[inline]
    pub(super) fn cascade(
        &mut self,
        tick: &Priced,
        ts: i64,
        wm: i64,
        sink: &mut impl FnMut(BarView<'_>),
    ) -> bool {
        let Some(fi) = self.fine else {
            return false;
        };
        // A volume sum must be added tick by tick to stay exact (see `BarAcc::absorb`).
        if tick.has_size() {
            return false;
        }
        let Some(fine) = self.series.get_mut(fi) else {
            return false;
        };
        let changed = if self.pending {
            match &mut fine.newest {
                Some(bar) if bar.contains(ts) => bar.acc.add(tick),
                _ => return false,
            }
        } else {
            // Everything is folded: a bar for a new bucket after the newest may start pending.
            if !(-CASCADE_RANGE..CASCADE_RANGE).contains(&ts)
                || fine.newest.as_ref().is_some_and(|b| ts < b.end)
            {
                return false;
            }
            let start = fine.resolution.bucket_start(ts);
            let end = fine.resolution.next_bucket_start(start);
            if end <= wm {
                // Already closed: a correction, per series.
                return false;
            }
            fine.push_newest(Bar {
                start,
                end,
                acc: BarAcc::start(tick),
            });
            self.pending = true;
            self.next_event = self.next_event.min(fine.next_event(wm, self.tolerance_ms));
            self.trades_base = self
                .series
                .iter()
                .enumerate()
                .filter(|(_, s)| {
                    s.newest
                        .as_ref()
                        .is_some_and(|b| b.contains(start) && b.acc.is_trades())
                })
                .fold(0, |m, (i, _)| m | (1 << i));
            true
        };
        if !changed {
            // A quote into a trade-built finest bar: every coarser bar holding it is
            // trade-built too, and unchanged.
            return true;
        }
        let (series, fine_bar) = match self.series.get(fi) {
            Some(Series {
                newest: Some(bar), ..
            }) => (&self.series, bar),
            _ => return true,
        };
        // A quote does not change a bar whose stored part already has trades.
        let skip = if tick.is_trade() { 0 } else { self.trades_base };
        for (i, (s, &resolution)) in series.iter().zip(&self.order).enumerate() {
            let bar = if i == fi {
                BarRef::Stored(fine_bar)
            } else if skip & (1 << i) != 0 {
                continue;
            } else {
                BarRef::Merged {
                    series: s,
                    fine: fine_bar,
                }
            };
            // The finest bar is live, and so is every bucket containing it.
            sink(BarView {
                resolution,
                kind: ChangeKind::Live,
                bar,
            });
        }
        true
    }

    /// Counts a pending finest bar into the coarser series (into the bar of its bucket, new if
    /// none), so every series holds every tick again.
    pub(super) fn fold(&mut self) {
        if !std::mem::take(&mut self.pending) {
            return;
        }
        let Some(fi) = self.fine else {
            return;
        };
        let Some(fine) = self.series.get(fi).and_then(|s| s.newest.clone()) else {
            return;
        };
        let wm = self.watermark.unwrap_or(fine.start);
        for (i, series) in self.series.iter_mut().enumerate() {
            if i == fi {
                continue;
            }
            match &mut series.newest {
                Some(bar) if bar.contains(fine.start) => bar.acc.absorb(&fine.acc),
                _ => {
                    // No tick in this bucket yet but the pending ones: its bar starts after
                    // every stored one (the pending bar holds the newest tick).
                    let start = series.resolution.bucket_start(fine.start);
                    let end = series.resolution.next_bucket_start(start);
                    series.push_newest(Bar {
                        start,
                        end,
                        acc: fine.acc.clone(),
                    });
                    self.next_event = self
                        .next_event
                        .min(series.next_event(wm, self.tolerance_ms));
                }
            }
        }
    }
}

impl Series {
    /// The stored bar of the bucket containing `fine` (a finest bar), if any.
    #[inline]
    pub(super) fn base_of(&self, fine: &Bar) -> Option<&Bar> {
        self.newest.as_ref().filter(|b| b.contains(fine.start))
    }

    /// This (coarser) series' live bar while `fine` is pending: its stored part merged with
    /// `fine`, or `fine` alone in this series' bucket.
    pub(super) fn merged_candle(&self, fine: &Bar) -> Candle {
        match self.base_of(fine) {
            Some(base) => {
                let mut acc = base.acc.clone();
                acc.absorb(&fine.acc);
                acc.candle(base.start)
            }
            None => fine.acc.candle(self.resolution.bucket_start(fine.start)),
        }
    }
}

#[cfg(test)]
mod tests {
    //! The cascade against the per-series algorithm it replaced (`crate::legacy`): the same
    //! reported changes, live bars and snapshots, over random streams with late ticks (within
    //! and beyond the tolerance), timer calls and snapshot/restore in the middle.
    use super::super::{Aggregator, AggregatorConfig};
    use crate::{legacy, PriceSource, Resolution, Tick, TickKind};
    use proptest::prelude::*;
    use rust_decimal::Decimal;

    #[derive(Debug, Clone)]
    enum Op {
        Tick(i64, TickKind),
        CloseUntil(i64),
        Snapshot,
    }

    fn price() -> impl Strategy<Value = Decimal> {
        prop_oneof![
            (1i64..2_000, 0u32..=3).prop_map(|(m, s)| Decimal::new(m, s)),
            // Equal values at other scales: which representation wins is a tie rule.
            (1i64..20, 0u32..=2).prop_map(|(m, s)| Decimal::new(m * 10i64.pow(s), s)),
        ]
    }

    fn kind() -> impl Strategy<Value = TickKind> {
        prop_oneof![
            6 => (price(), price()).prop_map(|(bid, ask)| TickKind::Quote { bid, ask }),
            1 => (price(), proptest::option::of(price()))
                .prop_map(|(price, size)| TickKind::Trade { price, size }),
            1 => price().prop_map(|price| TickKind::Trade { price, size: None }),
        ]
    }

    /// Time moves mostly forward in small steps, sometimes jumps (closing coarse bars, going
    /// quiet past the tolerance), sometimes back (late ticks); timer calls and snapshots.
    fn ops() -> impl Strategy<Value = Vec<Op>> {
        let step = prop_oneof![
            10 => (0i64..400, kind()).prop_map(|(d, k)| (d, Some(k))),
            2 => (-8_000i64..0, kind()).prop_map(|(d, k)| (d, Some(k))),
            1 => (0i64..4 * 3_600_000, kind()).prop_map(|(d, k)| (d, Some(k))),
            1 => (0i64..40 * 86_400_000, kind()).prop_map(|(d, k)| (d, Some(k))),
            1 => (0i64..20_000).prop_map(|d| (d, None)),
            1 => Just((i64::MIN, None)),
        ];
        (
            -400 * 86_400_000i64..400 * 86_400_000,
            proptest::collection::vec(step, 0..300),
        )
            .prop_map(|(offset, steps)| {
                // 2024-01-01T00:00:00Z
                let mut ts = 1_704_067_200_000 + offset;
                let mut out = Vec::new();
                for (d, k) in steps {
                    match (d, k) {
                        (i64::MIN, None) => out.push(Op::Snapshot),
                        (d, Some(k)) if d < 0 => out.push(Op::Tick(ts + d, k)),
                        (d, Some(k)) => {
                            ts += d;
                            out.push(Op::Tick(ts, k));
                        }
                        (d, None) => out.push(Op::CloseUntil(ts + d)),
                    }
                }
                out
            })
    }

    fn resolutions() -> impl Strategy<Value = Vec<Resolution>> {
        prop_oneof![
            3 => Just(Resolution::ALL.to_vec()),
            2 => proptest::sample::subsequence(Resolution::ALL.to_vec(), 1..=12)
                .prop_shuffle(),
        ]
    }

    fn source() -> impl Strategy<Value = PriceSource> {
        prop_oneof![
            Just(PriceSource::Mid),
            Just(PriceSource::Bid),
            Just(PriceSource::Ask),
            Just(PriceSource::Last),
        ]
    }

    fn check_live(new: &Aggregator, old: &legacy::Aggregator, all: &[Resolution]) {
        for r in all {
            assert_eq!(new.live_bar(*r), old.live_bar(*r), "live_bar {r}");
        }
    }

    fn run(ops: &[Op], config: &AggregatorConfig) {
        let mut new = Aggregator::new(config.clone()).unwrap();
        let mut old = legacy::Aggregator::new(legacy::AggregatorConfig {
            resolutions: config.resolutions.clone(),
            price_source: config.price_source,
            late_tolerance_ms: config.late_tolerance_ms,
        })
        .unwrap();
        let mut got = Vec::new();
        let mut want = Vec::new();
        for op in ops {
            match op {
                Op::Tick(ts, kind) => {
                    let tick = Tick {
                        ts_ms: *ts,
                        kind: *kind,
                    };
                    let outcome = new.update_with(&tick, |v| {
                        let c = v.to_change();
                        assert_eq!(v.start_ms(), c.candle.start_ms);
                        got.push(c);
                    });
                    let want_outcome = old.update_into(&tick, &mut want);
                    assert_eq!(format!("{outcome:?}"), format!("{want_outcome:?}"));
                }
                Op::CloseUntil(now) => {
                    new.close_until_into(*now, &mut got);
                    old.close_until_into(*now, &mut want);
                }
                Op::Snapshot => {
                    // Same bytes as the per-series snapshot, and both restore each other.
                    let a = serde_json::to_string(&new).unwrap();
                    let b = serde_json::to_string(&old).unwrap();
                    assert_eq!(a, b, "snapshot");
                    new = serde_json::from_str(&b).unwrap();
                    old = serde_json::from_str(&a).unwrap();
                }
            }
            let want_changes: Vec<String> = want.drain(..).map(|c| format!("{c:?}")).collect();
            let got_changes: Vec<String> = got.drain(..).map(|c| format!("{c:?}")).collect();
            assert_eq!(got_changes, want_changes, "after {op:?}");
            check_live(&new, &old, &Resolution::ALL);
            assert_eq!(new.watermark(), old.watermark());
            assert_eq!(format!("{:?}", new.stats()), format!("{:?}", old.stats()));
        }
        new.close_until_into(i64::MAX, &mut got);
        old.close_until_into(i64::MAX, &mut want);
        let want_changes: Vec<String> = want.iter().map(|c| format!("{c:?}")).collect();
        let got_changes: Vec<String> = got.iter().map(|c| format!("{c:?}")).collect();
        assert_eq!(got_changes, want_changes, "final close");
        assert_eq!(
            serde_json::to_string(&new).unwrap(),
            serde_json::to_string(&old).unwrap()
        );
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

        #[test]
        fn cascade_reports_what_the_per_series_algorithm_reported(
            ops in ops(),
            resolutions in resolutions(),
            source in source(),
            tolerance in prop_oneof![Just(0i64), Just(1_000), Just(5_000), Just(90_000)],
        ) {
            run(&ops, &AggregatorConfig { resolutions, price_source: source, late_tolerance_ms: tolerance });
        }
    }

    #[test]
    fn cascade_applies_to_the_standard_resolutions_only_when_buckets_nest() {
        let idx = |rs: &[Resolution]| {
            let a = Aggregator::new(AggregatorConfig {
                resolutions: rs.to_vec(),
                ..AggregatorConfig::default()
            })
            .unwrap();
            a.fine
        };
        assert_eq!(idx(&Resolution::ALL), Some(0));
        assert_eq!(idx(&[Resolution::Hour1, Resolution::Sec5]), Some(1));
        assert_eq!(idx(&[Resolution::Min1]), None);
        assert_eq!(idx(&[Resolution::Week1, Resolution::Month1]), None);
        assert_eq!(idx(&[Resolution::Day1, Resolution::Month1]), Some(0));
    }
}
