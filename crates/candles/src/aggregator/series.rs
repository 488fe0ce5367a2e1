//! Bar state: a [`Bar`] and the [`Series`] of one resolution's bars (retained closed bars,
//! then at most one live bar), how bars are appended and pruned past the tolerance, and the
//! series' snapshot format.

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};

use crate::candle::BarAcc;
use crate::Resolution;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct Bar {
    pub(super) start: i64,
    /// Exclusive end, cached because month ends are not free to compute.
    pub(super) end: i64,
    pub(super) acc: BarAcc,
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
pub(super) struct Series {
    pub(super) resolution: Resolution,
    /// The last bar of the list; `None` only when the list is empty.
    pub(super) newest: Option<Bar>,
    /// The bars before `newest`, ascending.
    pub(super) older: VecDeque<Bar>,
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

impl Bar {
    #[inline]
    pub(super) fn contains(&self, ts: i64) -> bool {
        self.start <= ts && ts < self.end
    }
}

impl Series {
    pub(super) fn new(resolution: Resolution) -> Series {
        Series {
            resolution,
            newest: None,
            older: VecDeque::new(),
            older_front_end: i64::MAX,
        }
    }

    /// Appends a bar after every other (the newest moves to `older`).
    pub(super) fn push_newest(&mut self, bar: Bar) {
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
    ///
    /// [`Aggregator::advance`]: super::Aggregator::advance
    pub(super) fn next_event(&self, wm: i64, tolerance: i64) -> i64 {
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
    pub(super) fn take_all(&mut self) -> VecDeque<Bar> {
        let mut bars = std::mem::take(&mut self.older);
        bars.extend(self.newest.take());
        self.older_front_end = i64::MAX;
        bars
    }

    /// Replaces the bars with an ascending list.
    pub(super) fn put_all(&mut self, mut bars: VecDeque<Bar>) {
        self.newest = bars.pop_back();
        self.older_front_end = bars.front().map_or(i64::MAX, |b| b.end);
        self.older = bars;
    }

    /// Drops the bars that ended at or before `horizon` (the oldest first).
    #[inline]
    pub(super) fn prune(&mut self, horizon: i64) {
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
}
