//! One-shot aggregation for import, rebuild and benchmarks.

use crate::candle::{BarAcc, Priced};
use crate::{Candle, PriceSource, Resolution, Tick};

/// Aggregates `ticks` (one symbol, any order) into bars of `resolution`, ascending by start,
/// with the same rules as the live [`crate::Aggregator`] but no late tolerance: every tick
/// counts. Equal timestamps keep slice order (earlier element opens, later element closes).
/// Gaps produce no bar.
///
/// Sorted input (the normal case for a log replay) is one linear pass; otherwise the ticks are
/// stably sorted by timestamp first.
pub fn aggregate(ticks: &[Tick], resolution: Resolution, source: PriceSource) -> Vec<Candle> {
    if ticks.is_sorted_by_key(|t| t.ts_ms) {
        aggregate_sorted(ticks.iter(), resolution, source)
    } else {
        let mut sorted: Vec<&Tick> = ticks.iter().collect();
        sorted.sort_by_key(|t| t.ts_ms); // stable: keeps slice order on ties
        aggregate_sorted(sorted.into_iter(), resolution, source)
    }
}

fn aggregate_sorted<'a>(
    ticks: impl Iterator<Item = &'a Tick>,
    resolution: Resolution,
    source: PriceSource,
) -> Vec<Candle> {
    let mut out = Vec::new();
    // (start, end, accumulator) of the bar being built.
    let mut current: Option<(i64, i64, BarAcc)> = None;
    for tick in ticks {
        // A quote under `PriceSource::Last` counts for nothing, not even a bar.
        let Some(priced) = Priced::of(tick, source) else {
            continue;
        };
        let ts = tick.ts_ms;
        if let Some((start, end, acc)) = &mut current {
            // `start ==` covers the saturated last bucket of the i64 range (see Series::merge).
            if ts < *end || *start == resolution.bucket_start(ts) {
                acc.add(&priced);
                continue;
            }
        }
        let acc = BarAcc::start(&priced);
        let start = resolution.bucket_start(ts);
        let end = resolution.next_bucket_start(start);
        if let Some((s, _, done)) = current.replace((start, end, acc)) {
            out.push(done.candle(s));
        }
    }
    if let Some((s, _, done)) = current {
        out.push(done.candle(s));
    }
    out
}
