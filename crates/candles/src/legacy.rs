//! The per-series aggregator as it was before the cascade (every tick updates every series),
//! kept verbatim as the test-only reference the cascade is proptested against
//! (`aggregator::cascade_tests`), including its snapshot format.
#![allow(dead_code, clippy::wrong_self_convention)]

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};

use crate::candle::{BarAcc, Priced};
use crate::{Candle, CandleError, PriceSource, Resolution, Tick};

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

/// Whether a reported bar is still forming, just closed, or a closed bar that changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ChangeKind {
    /// The bar of the current bucket changed: publish it on `candles.<SYMBOL>.<res>`.
    Live,
    /// The bar's bucket ended (a later tick or [`Aggregator::close_until`]): persist it.
    /// Reported once per bar, with its final content at that moment.
    Closed,
    /// A late tick created or changed a bar whose bucket had already ended: upsert it.
    Corrected,
}

/// One bar to publish or persist.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BarChange {
    /// Which series the bar belongs to.
    pub resolution: Resolution,
    /// What happened to it.
    pub kind: ChangeKind,
    /// The bar's full current content (not a delta).
    pub candle: Candle,
}

/// A changed bar, borrowed from the aggregator: what [`Aggregator::update_with`] reports. The
/// candle is built only if asked for ([`BarView::candle`]).
#[derive(Debug, Clone, Copy)]
pub struct BarView<'a> {
    /// Which series the bar belongs to.
    pub resolution: Resolution,
    /// What happened to it.
    pub kind: ChangeKind,
    bar: &'a Bar,
}

impl BarView<'_> {
    /// Bucket start, unix ms.
    pub fn start_ms(&self) -> i64 {
        self.bar.start
    }

    /// The bar's full current content.
    pub fn candle(&self) -> Candle {
        self.bar.acc.candle(self.bar.start)
    }

    /// The owned change, as [`Aggregator::update_into`] reports it.
    pub fn to_change(&self) -> BarChange {
        BarChange {
            resolution: self.resolution,
            kind: self.kind,
            candle: self.candle(),
        }
    }
}

/// What the aggregator did with one tick.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TickOutcome {
    /// Merged; the tick was not behind the watermark.
    Applied,
    /// Merged although `lag_ms` behind the watermark (within the tolerance).
    AppliedLate {
        /// Watermark minus the tick's timestamp, `> 0`.
        lag_ms: i64,
    },
    /// Not merged: `lag_ms` behind the watermark, beyond the tolerance. Counted in
    /// [`AggregatorStats::late_dropped`].
    Dropped {
        /// Watermark minus the tick's timestamp, `> late_tolerance_ms`.
        lag_ms: i64,
    },
    /// A quote while the price source is [`PriceSource::Last`]: no effect at all, not even on
    /// the watermark (a quote feed's clock must not make trades look late).
    Ignored,
}

/// The result of [`Aggregator::update`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Update {
    /// What happened to the tick.
    pub outcome: TickOutcome,
    /// Changed bars: first the bars closed by this tick's time, then for each resolution (in
    /// configuration order) the bar the tick landed in, if its content changed.
    pub changes: Vec<BarChange>,
}

impl Update {
    /// Changes of one kind.
    pub fn of_kind(&self, kind: ChangeKind) -> impl Iterator<Item = &BarChange> {
        self.changes.iter().filter(move |c| c.kind == kind)
    }
}

/// Counters for metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct AggregatorStats {
    /// Ticks merged (in order or late).
    pub applied: u64,
    /// Of those, ticks merged although behind the watermark.
    pub late_applied: u64,
    /// Ticks refused for being later than the tolerance.
    pub late_dropped: u64,
    /// Quotes ignored under [`PriceSource::Last`].
    pub ignored: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Bar {
    start: i64,
    /// Exclusive end, cached because month ends are not free to compute.
    end: i64,
    acc: BarAcc,
}

/// Bars of one resolution, ascending by start: retained closed bars, then at most one live bar
/// (the one whose end is after the watermark).
///
/// The newest bar is stored inline, so the bars one tick updates (one per resolution) sit next
/// to each other in the aggregator's `series` vector instead of in 12 separate heap blocks: the
/// driver is memory-bound over thousands of symbols, and adjacent bars are prefetched together.
/// Snapshots keep the plain list format (`SeriesRepr`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(from = "SeriesRepr", into = "SeriesRepr")]
struct Series {
    resolution: Resolution,
    /// The last bar of the list; `None` only when the list is empty.
    newest: Option<Bar>,
    /// The bars before `newest`, ascending.
    older: VecDeque<Bar>,
    /// `end` of `older`'s first bar (`i64::MAX` if none): the pruning test on every advance
    /// reads it here instead of touching the deque's heap block.
    older_front_end: i64,
}

/// The snapshot format of a [`Series`]: its bars as one ascending list.
#[derive(Serialize, Deserialize)]
struct SeriesRepr {
    resolution: Resolution,
    bars: VecDeque<Bar>,
}

impl From<SeriesRepr> for Series {
    fn from(r: SeriesRepr) -> Series {
        let mut s = Series::new(r.resolution);
        s.put_all(r.bars);
        s
    }
}

impl From<Series> for SeriesRepr {
    fn from(mut s: Series) -> SeriesRepr {
        SeriesRepr {
            resolution: s.resolution,
            bars: s.take_all(),
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
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Aggregator {
    source: PriceSource,
    tolerance_ms: i64,
    series: Vec<Series>,
    /// Latest time seen (tick or `close_until`); `None` before the first.
    watermark: Option<i64>,
    stats: AggregatorStats,
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
        Ok(Aggregator {
            source: config.price_source,
            tolerance_ms: config.late_tolerance_ms,
            series,
            watermark: None,
            stats: AggregatorStats::default(),
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
        for series in &mut self.series {
            let resolution = series.resolution;
            if let Some(bar) = series.merge(&priced, ts) {
                let kind = if bar.end > wm {
                    ChangeKind::Live
                } else {
                    ChangeKind::Corrected
                };
                sink(BarView {
                    resolution,
                    kind,
                    bar,
                });
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
        let series = self.series.iter().find(|s| s.resolution == resolution)?;
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
        let horizon = now.saturating_sub(self.tolerance_ms);
        for series in &mut self.series {
            // Only the last bar can have been live (bars never start after the watermark).
            if let Some(bar) = &series.newest {
                let was_live = old.is_none_or(|wm| bar.end > wm);
                if was_live && bar.end <= now {
                    sink(BarView {
                        resolution: series.resolution,
                        kind: ChangeKind::Closed,
                        bar,
                    });
                }
            }
            // An accepted tick has ts >= horizon, so it lands in a bar ending after horizon.
            series.prune(horizon);
        }
    }
}

impl Series {
    fn new(resolution: Resolution) -> Series {
        Series {
            resolution,
            newest: None,
            older: VecDeque::new(),
            older_front_end: i64::MAX,
        }
    }

    /// Every bar as one ascending list, leaving the series empty.
    fn take_all(&mut self) -> VecDeque<Bar> {
        let mut bars = std::mem::take(&mut self.older);
        bars.extend(self.newest.take());
        self.older_front_end = i64::MAX;
        bars
    }

    /// Replaces the bars with an ascending list.
    fn put_all(&mut self, mut bars: VecDeque<Bar>) {
        self.newest = bars.pop_back();
        self.older_front_end = bars.front().map_or(i64::MAX, |b| b.end);
        self.older = bars;
    }

    /// Drops the bars that ended at or before `horizon` (the oldest first).
    #[inline]
    fn prune(&mut self, horizon: i64) {
        // The emptiness test matters: `older_front_end` of an empty deque is `i64::MAX`, which
        // a saturated horizon reaches.
        while self.older_front_end <= horizon && !self.older.is_empty() {
            self.older.pop_front();
            self.older_front_end = self.older.front().map_or(i64::MAX, |b| b.end);
        }
        if self.older.is_empty() && self.newest.as_ref().is_some_and(|b| b.end <= horizon) {
            self.newest = None;
        }
    }

    /// Merges `tick` into its bar (created if needed); returns the bar if its candle changed.
    #[inline]
    fn merge(&mut self, tick: &Priced, ts: i64) -> Option<&Bar> {
        // Ticks nearly always hit the newest bar.
        if let Some(bar) = &mut self.newest {
            if bar.start <= ts && ts < bar.end {
                if !bar.acc.add(tick) {
                    return None;
                }
                return self.newest.as_ref();
            }
        }
        self.merge_slow(tick, ts)
    }

    /// A tick for another bar than the newest (a new bucket, or a late tick): done on the
    /// plain list, which is rare enough that moving the newest bar in and out does not matter.
    #[cold]
    fn merge_slow(&mut self, tick: &Priced, ts: i64) -> Option<&Bar> {
        let mut bars = self.take_all();
        let changed = Self::merge_into(&mut bars, self.resolution, tick, ts);
        let last = bars.len().checked_sub(1);
        self.put_all(bars);
        let index = changed?;
        if Some(index) == last {
            self.newest.as_ref()
        } else {
            self.older.get(index)
        }
    }

    /// Merges into an ascending list; returns the index of the bar if its candle changed.
    fn merge_into(
        bars: &mut VecDeque<Bar>,
        resolution: Resolution,
        tick: &Priced,
        ts: i64,
    ) -> Option<usize> {
        // Search from the back and compute the bucket (a civil-date conversion for weeks and
        // months) only when a bar is missing.
        let mut insert_at = 0;
        let mut found = None;
        for (i, bar) in bars.iter().enumerate().rev() {
            if bar.start <= ts {
                // The `start ==` test covers the saturated last bucket of the i64 range, whose
                // end cannot exceed `i64::MAX`.
                if ts < bar.end || bar.start == resolution.bucket_start(ts) {
                    found = Some(i);
                } else {
                    insert_at = i + 1;
                }
                break;
            }
        }
        match found {
            Some(i) => {
                let bar = bars.get_mut(i)?;
                if !bar.acc.add(tick) {
                    return None;
                }
                Some(i)
            }
            None => {
                let acc = BarAcc::start(tick);
                let start = resolution.bucket_start(ts);
                let end = resolution.next_bucket_start(start);
                bars.insert(insert_at, Bar { start, end, acc });
                Some(insert_at)
            }
        }
    }
}
