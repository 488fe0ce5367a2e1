//! The live, per-symbol aggregator.
//!
//! This file holds the [`Aggregator`], its configuration and its entry points (ticks, timer,
//! reads); `report` has what it reports, `series` the bar state of one resolution, `merge` how
//! a tick (in order or late) lands in a series, and `cascade` the fast path that updates only
//! the finest bar.

mod cascade;
mod merge;
mod report;
mod series;

pub use report::{AggregatorStats, BarChange, BarView, ChangeKind, TickOutcome, Update};

use serde::{Deserialize, Serialize};

use crate::candle::Priced;
use crate::{Candle, CandleError, PriceSource, Resolution, Tick};
use cascade::{cascade_index, order_of};
use report::BarRef;
use series::Series;

/// How an [`Aggregator`] is set up. `Default` is every resolution, [`PriceSource::Mid`] and a
/// 5 s late tolerance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AggregatorConfig {
    /// Resolutions to build; duplicates are ignored, order is kept in reported changes.
    pub resolutions: Vec<Resolution>,
    /// Price of quote-built bars (trades always win within a bar).
    pub price_source: PriceSource,
    /// How far (ms) behind the watermark a tick may be and still be merged. Also sets how
    /// long closed bars are retained for correction. Must be `>= 0`.
    pub late_tolerance_ms: i64,
}

impl Default for AggregatorConfig {
    fn default() -> Self {
        AggregatorConfig {
            resolutions: Resolution::ALL.to_vec(),
            price_source: PriceSource::Mid,
            late_tolerance_ms: 5_000,
        }
    }
}

/// Live OHLCV aggregation for ONE symbol over a set of resolutions. Pure state machine: feed it
/// ticks and timer instants, publish and persist what it reports. See the crate docs for the
/// driving loop and the exact rules.
///
/// It is `Serialize + Deserialize`: a snapshot taken together with the position of the last
/// tick it saw lets a restarted process continue exactly where it stopped (see the crate docs,
/// "Restarting").
///
/// # Cascade
///
/// A tick used to update all 12 series' newest bars, which was most of the driver's cost (12
/// bars of 128 bytes touched per tick, over thousands of symbols). When every other configured
/// resolution's buckets are unions of the finest one's (true of the 12 standard ones: the finest
/// fixed length divides a day and every longer fixed length), an in-order tick only updates
/// the finest series' newest bar while that bar is "pending": the coarser series' stored
/// bars then hold every counted tick EXCEPT the pending bar's, and their live content is the
/// stored part merged with the pending bar ([`BarAcc::absorb`], exact because every pending tick
/// arrived after every stored one). The pending bar is folded into the coarser series when it
/// closes, before anything else changes them (a late tick for another bucket, a sized trade,
/// whose volume sum is kept one-by-one), and before a snapshot, so snapshots keep the plain
/// per-series format. Everything the aggregator reports is what the per-series algorithm
/// reported (proptested against a copy of it).
///
/// [`BarAcc::absorb`]: crate::candle::BarAcc::absorb
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(from = "AggregatorRepr", into = "AggregatorRepr")]
pub struct Aggregator {
    source: PriceSource,
    tolerance_ms: i64,
    series: Vec<Series>,
    /// Latest time seen (tick or `close_until`); `None` before the first.
    watermark: Option<i64>,
    stats: AggregatorStats,
    /// Index in `series` of the finest resolution, if the cascade applies (see above).
    fine: Option<usize>,
    /// The series' resolutions in order (with the cascade, at most 12): the cascade reports
    /// them per tick without touching each series' memory.
    order: [Resolution; 12],
    /// While `pending`: bit `i` set when series `i`'s stored bar of the pending bar's bucket
    /// is trade-built, so a quote changes it not. Stored bars do not change while a bar is
    /// pending, so this is computed once when it starts.
    trades_base: u16,
    /// The finest series' newest bar is not folded into the coarser series yet. Only with
    /// `fine`; then that bar is live (its end is after the watermark).
    pending: bool,
    /// No watermark below this can close or prune anything (`Series::next_event`), so
    /// [`Aggregator::advance`] skips the per-series pass: an in-order tick then touches no
    /// other series' memory. Lowered whenever a series gains a bar; `i64::MIN` = unknown.
    next_event: i64,
}

/// The snapshot format of an [`Aggregator`] (unchanged from before the cascade): a pending
/// finest bar is folded into the coarser series first.
#[derive(Serialize, Deserialize)]
struct AggregatorRepr {
    source: PriceSource,
    tolerance_ms: i64,
    series: Vec<Series>,
    watermark: Option<i64>,
    stats: AggregatorStats,
}

impl From<AggregatorRepr> for Aggregator {
    fn from(r: AggregatorRepr) -> Aggregator {
        let fine = cascade_index(&r.series);
        let order = order_of(&r.series);
        Aggregator {
            source: r.source,
            tolerance_ms: r.tolerance_ms,
            series: r.series,
            watermark: r.watermark,
            stats: r.stats,
            order,
            fine,
            pending: false,
            trades_base: 0,
            next_event: i64::MIN,
        }
    }
}

impl From<Aggregator> for AggregatorRepr {
    fn from(mut a: Aggregator) -> AggregatorRepr {
        a.fold();
        AggregatorRepr {
            source: a.source,
            tolerance_ms: a.tolerance_ms,
            series: a.series,
            watermark: a.watermark,
            stats: a.stats,
        }
    }
}

impl Aggregator {
    /// Builds an aggregator; fails on a negative tolerance or no resolutions.
    pub fn new(config: AggregatorConfig) -> Result<Aggregator, CandleError> {
        if config.late_tolerance_ms < 0 {
            return Err(CandleError::InvalidConfig("late_tolerance_ms must be >= 0"));
        }
        let mut series: Vec<Series> = Vec::with_capacity(config.resolutions.len());
        for resolution in config.resolutions {
            if !series.iter().any(|s| s.resolution == resolution) {
                series.push(Series::new(resolution));
            }
        }
        if series.is_empty() {
            return Err(CandleError::InvalidConfig(
                "at least one resolution is required",
            ));
        }
        let fine = cascade_index(&series);
        let order = order_of(&series);
        Ok(Aggregator {
            source: config.price_source,
            tolerance_ms: config.late_tolerance_ms,
            series,
            watermark: None,
            stats: AggregatorStats::default(),
            order,
            fine,
            pending: false,
            trades_base: 0,
            next_event: i64::MIN,
        })
    }

    /// Merges one tick and reports what changed. Allocates the change list; hot loops can
    /// reuse a buffer with [`Aggregator::update_into`].
    pub fn update(&mut self, tick: &Tick) -> Update {
        let mut changes = Vec::new();
        let outcome = self.update_into(tick, &mut changes);
        Update { outcome, changes }
    }

    /// Like [`Aggregator::update`], appending the changes to `out` (not cleared).
    pub fn update_into(&mut self, tick: &Tick, out: &mut Vec<BarChange>) -> TickOutcome {
        self.update_with(tick, |c| out.push(c.to_change()))
    }

    /// Like [`Aggregator::update`], handing each change to `sink` as a [`BarView`], in the same
    /// order. For a driver that only needs to know which live bars changed (and reads them
    /// once per publication with [`Aggregator::live_bar`]): a tick then builds no [`Candle`]
    /// and copies none, which at 12 resolutions per tick is most of the cost of
    /// [`Aggregator::update_into`].
    #[inline]
    pub fn update_with(&mut self, tick: &Tick, mut sink: impl FnMut(BarView<'_>)) -> TickOutcome {
        // The quote's price is computed here once for every resolution. `None` only for a
        // quote under `PriceSource::Last`.
        let Some(priced) = Priced::of(tick, self.source) else {
            self.stats.ignored += 1;
            return TickOutcome::Ignored;
        };
        let ts = tick.ts_ms;
        let lag_ms = match self.watermark {
            Some(wm) if ts < wm => wm.saturating_sub(ts),
            _ => 0,
        };
        if lag_ms > self.tolerance_ms {
            self.stats.late_dropped += 1;
            return TickOutcome::Dropped { lag_ms };
        }
        self.advance(ts, &mut sink);
        let wm = self.watermark.unwrap_or(ts);
        if !self.cascade(&priced, ts, wm, &mut sink) {
            // Per series: the coarser series must hold every tick first.
            self.fold();
            let tolerance = self.tolerance_ms;
            for series in &mut self.series {
                let resolution = series.resolution;
                let gains_bar = !series.newest.as_ref().is_some_and(|b| b.contains(ts));
                if let Some(bar) = series.merge(&priced, ts) {
                    let kind = if bar.end > wm {
                        ChangeKind::Live
                    } else {
                        ChangeKind::Corrected
                    };
                    sink(BarView {
                        resolution,
                        kind,
                        bar: BarRef::Stored(bar),
                    });
                }
                if gains_bar {
                    self.next_event = self.next_event.min(series.next_event(wm, tolerance));
                }
            }
        }
        self.stats.applied += 1;
        if lag_ms > 0 {
            self.stats.late_applied += 1;
            TickOutcome::AppliedLate { lag_ms }
        } else {
            TickOutcome::Applied
        }
    }

    /// Timer tick: declares that time has reached `now_ms`, closing every bar whose bucket
    /// ended at or before it, exactly as a tick at `now_ms` would. It also moves the watermark,
    /// so pass the wall clock minus the feed's expected delay, not a clock ahead of the feed.
    /// Earlier instants than the watermark are a no-op.
    pub fn close_until(&mut self, now_ms: i64) -> Vec<BarChange> {
        let mut out = Vec::new();
        self.close_until_into(now_ms, &mut out);
        out
    }

    /// Like [`Aggregator::close_until`], appending the changes to `out`.
    pub fn close_until_into(&mut self, now_ms: i64, out: &mut Vec<BarChange>) {
        self.advance(now_ms, &mut |c| out.push(c.to_change()));
    }

    /// Like [`Aggregator::close_until`], handing each change to `sink` as a [`BarView`].
    pub fn close_until_with(&mut self, now_ms: i64, mut sink: impl FnMut(BarView<'_>)) {
        self.advance(now_ms, &mut sink);
    }

    /// The bar of the current bucket for `resolution`, if any tick landed in it: the snapshot
    /// for a new subscriber of `candles.<SYMBOL>.<res>`.
    pub fn live_bar(&self, resolution: Resolution) -> Option<Candle> {
        let wm = self.watermark?;
        let (i, series) = self
            .series
            .iter()
            .enumerate()
            .find(|(_, s)| s.resolution == resolution)?;
        if let Some(fine) = self.pending_bar().filter(|_| Some(i) != self.fine) {
            // A coarser bucket contains the pending (live) finest bar, so it is live too.
            return Some(series.merged_candle(fine));
        }
        let bar = series.newest.as_ref().filter(|b| b.end > wm)?;
        Some(bar.acc.candle(bar.start))
    }

    /// Latest time seen (the maximum of merged tick timestamps and `close_until` instants).
    pub fn watermark(&self) -> Option<i64> {
        self.watermark
    }

    /// Counters for metrics.
    pub fn stats(&self) -> AggregatorStats {
        self.stats
    }

    /// Ticks refused as too late so far (also in [`Aggregator::stats`]).
    pub fn late_dropped(&self) -> u64 {
        self.stats.late_dropped
    }

    /// The resolutions this aggregator builds, in configuration order.
    pub fn resolutions(&self) -> impl Iterator<Item = Resolution> + '_ {
        self.series.iter().map(|s| s.resolution)
    }

    /// Moves the watermark to `now` if later, reporting bars that closed and dropping closed
    /// bars that no tick within the tolerance can reach any more.
    fn advance(&mut self, now: i64, sink: &mut impl FnMut(BarView<'_>)) {
        let old = self.watermark;
        if old.is_some_and(|wm| now <= wm) {
            return;
        }
        self.watermark = Some(now);
        if now < self.next_event {
            // Nothing closes or expires yet: the common case of an in-order tick.
            return;
        }
        // A pending finest bar that closes now is folded first, so the coarser bars closing
        // with it are reported whole.
        if self.pending_bar().is_some_and(|b| b.end <= now) {
            self.fold();
        }
        let horizon = now.saturating_sub(self.tolerance_ms);
        let mut next_event = i64::MAX;
        for series in &mut self.series {
            // Only the last bar can have been live (bars never start after the watermark).
            if let Some(bar) = &series.newest {
                let was_live = old.is_none_or(|wm| bar.end > wm);
                if was_live && bar.end <= now {
                    sink(BarView {
                        resolution: series.resolution,
                        kind: ChangeKind::Closed,
                        bar: BarRef::Stored(bar),
                    });
                }
            }
            // An accepted tick has ts >= horizon, so it lands in a bar ending after horizon.
            series.prune(horizon);
            next_event = next_event.min(series.next_event(now, self.tolerance_ms));
        }
        self.next_event = next_event;
    }
}

impl Series {}
