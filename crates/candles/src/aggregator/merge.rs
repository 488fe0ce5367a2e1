//! Merging a tick into one series (the per-series path): into the newest bar in place, or
//! into any other bar on the plain list: a new bucket, or a late tick that corrects (or
//! creates) a bar whose bucket already ended, which the aggregator reports as
//! [`ChangeKind::Corrected`].
//!
//! [`ChangeKind::Corrected`]: super::ChangeKind::Corrected

use std::collections::VecDeque;

use super::series::{Bar, Series};
use crate::candle::{BarAcc, Priced};
use crate::Resolution;

impl Series {
    /// Merges `tick` into its bar (created if needed); returns the bar if its candle changed.
    #[inline]
    pub(super) fn merge(&mut self, tick: &Priced, ts: i64) -> Option<&Bar> {
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
