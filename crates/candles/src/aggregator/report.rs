//! What the aggregator reports: each changed bar ([`BarChange`], or borrowed as a [`BarView`])
//! with its [`ChangeKind`], what became of a tick ([`TickOutcome`], [`Update`]) and the
//! counters for metrics ([`AggregatorStats`]).

use serde::{Deserialize, Serialize};

use super::series::{Bar, Series};
use crate::{Candle, Resolution};

/// Whether a reported bar is still forming, just closed, or a closed bar that changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ChangeKind {
    /// The bar of the current bucket changed: publish it on `candles.<SYMBOL>.<res>`.
    Live,
    /// The bar's bucket ended (a later tick or [`Aggregator::close_until`]): persist it.
    /// Reported once per bar, with its final content at that moment.
    ///
    /// [`Aggregator::close_until`]: super::Aggregator::close_until
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
///
/// [`Aggregator::update_with`]: super::Aggregator::update_with
#[derive(Debug, Clone, Copy)]
pub struct BarView<'a> {
    /// Which series the bar belongs to.
    pub resolution: Resolution,
    /// What happened to it.
    pub kind: ChangeKind,
    pub(super) bar: BarRef<'a>,
}

/// Where a reported bar's content is.
#[derive(Debug, Clone, Copy)]
pub(super) enum BarRef<'a> {
    /// Stored whole in its series.
    Stored(&'a Bar),
    /// A coarser series' live bar while the finest live bar is not folded into it (see
    /// [`Aggregator`], "cascade"): that series' stored part, found only if the bar is read,
    /// plus the finest live bar.
    ///
    /// [`Aggregator`]: super::Aggregator
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
    ///
    /// [`Aggregator::update_into`]: super::Aggregator::update_into
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
    ///
    /// [`PriceSource::Last`]: crate::PriceSource::Last
    Ignored,
}

/// The result of [`Aggregator::update`].
///
/// [`Aggregator::update`]: super::Aggregator::update
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
    ///
    /// [`PriceSource::Last`]: crate::PriceSource::Last
    pub ignored: u64,
}
