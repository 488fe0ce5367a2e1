//! The live, per-symbol aggregator.

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};

use crate::calendar::DAY_MS;
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
    bar: BarRef<'a>,
}

/// Where a reported bar's content is.
#[derive(Debug, Clone, Copy)]
enum BarRef<'a> {
    /// Stored whole in its series.
    Stored(&'a Bar),
    /// A coarser series' live bar while the finest live bar is not folded into it (see
    /// [`Aggregator`], "cascade"): that series' stored part, found only if the bar is read,
    /// plus the finest live bar.
    Merged { series: &'a Series, fine: &'a Bar },
}

impl BarView<'_> {
    /// Bucket start, unix ms.
    pub fn start_ms(&self) -> i64 {
        match self.bar {
            BarRef::Stored(bar) => bar.start,
            BarRef::Merged { series, fine } => match series.base_of(fine) {
                Some(base) => base.start,
                None => series.resolution.bucket_start(fine.start),
            },
        }
    }

    /// The bar's full current content.
    pub fn candle(&self) -> Candle {
        match self.bar {
            BarRef::Stored(bar) => bar.acc.candle(bar.start),
            BarRef::Merged { series, fine } => series.merged_candle(fine),
        }
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
#[derive(Debug, Clone, Deserialize)]
#[serde(from = "SeriesRepr")]
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

/// Written as a [`SeriesRepr`] by reference (the same bytes): going through `into` cloned
/// every series' bars for each snapshot.
impl Serialize for Series {
    fn serialize<S: serde::Serializer>(&self, ser: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        struct Bars<'a>(&'a Series);
        impl Serialize for Bars<'_> {
            fn serialize<S: serde::Serializer>(&self, ser: S) -> Result<S::Ok, S::Error> {
                ser.collect_seq(self.0.older.iter().chain(&self.0.newest))
            }
        }
        let mut st = ser.serialize_struct("SeriesRepr", 2)?;
        st.serialize_field("resolution", &self.resolution)?;
        st.serialize_field("bars", &Bars(self))?;
        st.end()
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

/// Timestamps beyond this (either sign) take the per-series path: bucket starts saturate near
/// the ends of the `i64` range, where buckets stop nesting.
const CASCADE_RANGE: i64 = 1 << 60;

/// The index of the finest series if every other series' buckets are unions of its buckets:
/// its length divides a day (weeks and months start at midnight) and every other fixed length.
/// `None` (no cascade) with a single series or a calendar-only finest resolution.
fn cascade_index(series: &[Series]) -> Option<usize> {
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

fn order_of(series: &[Series]) -> [Resolution; 12] {
    let mut order = [Resolution::Sec1; 12];
    for (slot, s) in order.iter_mut().zip(series) {
        *slot = s.resolution;
    }
    order
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

    /// The finest series' newest bar while it is pending (not folded into the coarser series).
    #[inline]
    fn pending_bar(&self) -> Option<&Bar> {
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
    fn cascade(
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
    fn fold(&mut self) {
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

impl Bar {
    #[inline]
    fn contains(&self, ts: i64) -> bool {
        self.start <= ts && ts < self.end
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

    /// The stored bar of the bucket containing `fine` (a finest bar), if any.
    #[inline]
    fn base_of(&self, fine: &Bar) -> Option<&Bar> {
        self.newest.as_ref().filter(|b| b.contains(fine.start))
    }

    /// This (coarser) series' live bar while `fine` is pending: its stored part merged with
    /// `fine`, or `fine` alone in this series' bucket.
    fn merged_candle(&self, fine: &Bar) -> Candle {
        match self.base_of(fine) {
            Some(base) => {
                let mut acc = base.acc.clone();
                acc.absorb(&fine.acc);
                acc.candle(base.start)
            }
            None => fine.acc.candle(self.resolution.bucket_start(fine.start)),
        }
    }

    /// Appends a bar after every other (the newest moves to `older`).
    fn push_newest(&mut self, bar: Bar) {
        if let Some(prev) = self.newest.replace(bar) {
            if self.older.is_empty() {
                self.older_front_end = prev.end;
            }
            self.older.push_back(prev);
        }
    }

    /// The earliest watermark at which [`Aggregator::advance`] has anything to do for this
    /// series once the watermark is `wm`: close its live bar, or drop its oldest bar.
    /// Conservative (earlier is always safe).
    fn next_event(&self, wm: i64, tolerance: i64) -> i64 {
        // Pruning drops a bar when `end <= now - tolerance`, i.e. `now >= end + tolerance`.
        let mut t = if self.older.is_empty() {
            i64::MAX
        } else {
            self.older_front_end.saturating_add(tolerance)
        };
        if let Some(b) = &self.newest {
            t = t.min(if b.end > wm {
                b.end
            } else {
                b.end.saturating_add(tolerance)
            });
        }
        t
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

#[cfg(test)]
mod cascade_tests {
    //! The cascade against the per-series algorithm it replaced (`crate::legacy`): the same
    //! reported changes, live bars and snapshots, over random streams with late ticks (within
    //! and beyond the tolerance), timer calls and snapshot/restore in the middle.
    use super::*;
    use crate::{legacy, TickKind};
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
