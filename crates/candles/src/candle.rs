//! The output bar and the accumulator that builds it.

use std::cmp::Ordering;

use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use crate::{PriceSource, Tick, TickKind};

/// One OHLCV bar. Prices and volume are exact decimals, serialized as JSON strings so no
/// consumer ever sees a binary float (`rust_decimal::serde::str` is pinned per field because
/// another crate enabling rust_decimal's `serde-float` would otherwise switch us to floats).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Candle {
    /// Bucket start, unix ms UTC ([`crate::Resolution::bucket_start`]).
    pub start_ms: i64,
    /// Price of the earliest counted tick (ties: the one that arrived first).
    #[serde(with = "rust_decimal::serde::str")]
    pub open: Decimal,
    /// Highest counted price.
    #[serde(with = "rust_decimal::serde::str")]
    pub high: Decimal,
    /// Lowest counted price.
    #[serde(with = "rust_decimal::serde::str")]
    pub low: Decimal,
    /// Price of the latest counted tick (ties: the one that arrived last).
    #[serde(with = "rust_decimal::serde::str")]
    pub close: Decimal,
    /// Sum of trade sizes if any counted trade had a size, else the tick count.
    #[serde(with = "rust_decimal::serde::str")]
    pub volume: Decimal,
    /// Number of counted ticks (trades in a trade bar, quotes in a quote bar).
    pub ticks: u64,
}

/// `a.cmp(b)` for decimals, inlined and without `Decimal::cmp`'s general rescaling loop for
/// the common case (prices of one symbol at a few nearby scales): both mantissas are brought
/// to the larger scale in `i128`, which is exact whenever it does not overflow; otherwise
/// `Decimal::cmp` decides. Called twice per tick per resolution, it was the aggregator's
/// biggest cost after the bar update itself.
#[inline]
pub(crate) fn cmp(a: &Decimal, b: &Decimal) -> Ordering {
    let (sa, sb) = (a.scale(), b.scale());
    if sa == sb {
        return a.mantissa().cmp(&b.mantissa());
    }
    let (lo, hi, swapped) = if sa < sb { (a, b, false) } else { (b, a, true) };
    let scaled = POW10
        .get(hi.scale().abs_diff(lo.scale()) as usize)
        .and_then(|p| lo.mantissa().checked_mul(*p));
    let Some(lo_m) = scaled else {
        return a.cmp(b);
    };
    let o = lo_m.cmp(&hi.mantissa());
    if swapped {
        o.reverse()
    } else {
        o
    }
}

/// 10^0 ..= 10^28 (28 is `Decimal`'s largest scale).
const POW10: [i128; 29] = {
    let mut t = [1i128; 29];
    let mut i = 1;
    while i < 29 {
        t[i] = t[i - 1] * 10;
        i += 1;
    }
    t
};

/// OHLC plus the timestamps that decide open and close, so ticks may arrive in any order.
/// Decimals are pinned to strings in snapshots for the same reason as in [`Candle`].
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Ohlc {
    #[serde(with = "rust_decimal::serde::str")]
    open: Decimal,
    open_ts: i64,
    #[serde(with = "rust_decimal::serde::str")]
    high: Decimal,
    #[serde(with = "rust_decimal::serde::str")]
    low: Decimal,
    #[serde(with = "rust_decimal::serde::str")]
    close: Decimal,
    close_ts: i64,
    count: u64,
}

impl Ohlc {
    fn new(ts: i64, price: Decimal) -> Ohlc {
        Ohlc {
            open: price,
            open_ts: ts,
            high: price,
            low: price,
            close: price,
            close_ts: ts,
            count: 1,
        }
    }

    #[inline]
    fn add(&mut self, ts: i64, price: Decimal) {
        // Strict `<` keeps the first arrival on an open tie and `>=` takes the last arrival on a
        // close tie: the same result as a stable sort by timestamp, whatever the arrival order.
        if ts < self.open_ts {
            self.open = price;
            self.open_ts = ts;
        }
        if ts >= self.close_ts {
            self.close = price;
            self.close_ts = ts;
        }
        if cmp(&price, &self.high) == Ordering::Greater {
            self.high = price;
        } else if cmp(&price, &self.low) == Ordering::Less {
            // `else`: low <= high, so a price above high cannot be below low.
            self.low = price;
        }
        self.count += 1;
    }

    /// Counts every tick of `later` into `self`, where all of `later`'s ticks ARRIVED after all
    /// of `self`'s: the same result as adding them one by one, by the tie rules of
    /// [`Ohlc::add`] (an equal open time or equal high/low keeps the earlier arrival, an equal
    /// close time takes the later one). Used to fold the finest live bar into coarser bars.
    #[inline]
    fn absorb(&mut self, later: &Ohlc) {
        if later.open_ts < self.open_ts {
            self.open = later.open;
            self.open_ts = later.open_ts;
        }
        if later.close_ts >= self.close_ts {
            self.close = later.close;
            self.close_ts = later.close_ts;
        }
        if cmp(&later.high, &self.high) == Ordering::Greater {
            self.high = later.high;
        }
        if cmp(&later.low, &self.low) == Ordering::Less {
            self.low = later.low;
        }
        self.count += later.count;
    }
}

/// A tick reduced to what a bar counts: for a quote, its price under the aggregator's
/// [`PriceSource`]. Built once per tick so the mid (a decimal division) is not recomputed for
/// each of the 12 resolutions the tick lands in.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Priced {
    ts: i64,
    kind: PricedKind,
}

#[derive(Debug, Clone, Copy)]
enum PricedKind {
    Quote(Decimal),
    Trade {
        price: Decimal,
        size: Option<Decimal>,
    },
}

impl Priced {
    /// Whether this is a trade that carries a size: those change a bar's volume sum, which
    /// the cascade does not fold (see `Aggregator`), so they take the per-series path.
    #[inline]
    pub(crate) fn has_size(&self) -> bool {
        matches!(self.kind, PricedKind::Trade { size: Some(_), .. })
    }

    #[inline]
    pub(crate) fn is_trade(&self) -> bool {
        matches!(self.kind, PricedKind::Trade { .. })
    }

    /// `None` when the tick counts for nothing: a quote under [`PriceSource::Last`].
    #[inline]
    pub(crate) fn of(tick: &Tick, source: PriceSource) -> Option<Priced> {
        let kind = match tick.kind {
            TickKind::Quote { bid, ask } => PricedKind::Quote(source.quote_price(bid, ask)?),
            TickKind::Trade { price, size } => PricedKind::Trade { price, size },
        };
        Some(Priced {
            ts: tick.ts_ms,
            kind,
        })
    }
}

/// What a bar has counted so far. A bar is quote-built until its first trade, which discards
/// the quote data for good (trades override quotes within a bar).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) enum BarAcc {
    Quotes(Ohlc),
    Trades {
        ohlc: Ohlc,
        #[serde(with = "rust_decimal::serde::str")]
        size_sum: Decimal,
        any_size: bool,
    },
}

impl BarAcc {
    /// A new bar from its first counted tick.
    pub(crate) fn start(tick: &Priced) -> BarAcc {
        match tick.kind {
            PricedKind::Quote(p) => BarAcc::Quotes(Ohlc::new(tick.ts, p)),
            PricedKind::Trade { price, size } => BarAcc::Trades {
                ohlc: Ohlc::new(tick.ts, price),
                size_sum: size.unwrap_or(Decimal::ZERO),
                any_size: size.is_some(),
            },
        }
    }

    /// Counts `tick` into the bar; returns whether the bar's [`Candle`] changed.
    #[inline]
    pub(crate) fn add(&mut self, tick: &Priced) -> bool {
        match (&mut *self, tick.kind) {
            (BarAcc::Quotes(ohlc), PricedKind::Quote(p)) => {
                ohlc.add(tick.ts, p);
                true
            }
            // A quote cannot change a bar that already has trades.
            (BarAcc::Trades { .. }, PricedKind::Quote(_)) => false,
            (BarAcc::Quotes(_), PricedKind::Trade { .. }) => {
                *self = BarAcc::start(tick);
                true
            }
            (
                BarAcc::Trades {
                    ohlc,
                    size_sum,
                    any_size,
                },
                PricedKind::Trade { price, size },
            ) => {
                ohlc.add(tick.ts, price);
                if let Some(size) = size {
                    // Saturating: an absurd volume must not panic the hub.
                    *size_sum = size_sum.saturating_add(size);
                    *any_size = true;
                }
                true
            }
        }
    }

    /// Whether the bar is trade-built (a quote cannot change it any more).
    #[inline]
    pub(crate) fn is_trades(&self) -> bool {
        matches!(self, BarAcc::Trades { .. })
    }

    /// Counts into `self` every tick counted in `later`, all of which arrived after `self`'s
    /// ticks: the same bar as adding them one by one with [`BarAcc::add`]. Exact for prices,
    /// counts and trade-building; a volume sum is added as one sum, which equals the
    /// one-by-one sum unless a decimal addition rounds, so the aggregator only folds bars whose
    /// `later` part has no sized trade.
    pub(crate) fn absorb(&mut self, later: &BarAcc) {
        match (&mut *self, later) {
            (BarAcc::Quotes(a), BarAcc::Quotes(b)) => a.absorb(b),
            // Quotes after trades are ignored.
            (BarAcc::Trades { .. }, BarAcc::Quotes(_)) => {}
            // The first later trade restarted the bar: `later` is that restarted bar.
            (BarAcc::Quotes(_), BarAcc::Trades { .. }) => *self = later.clone(),
            (
                BarAcc::Trades {
                    ohlc,
                    size_sum,
                    any_size,
                },
                BarAcc::Trades {
                    ohlc: b,
                    size_sum: b_sum,
                    any_size: b_any,
                },
            ) => {
                ohlc.absorb(b);
                if *b_any {
                    *size_sum = size_sum.saturating_add(*b_sum);
                    *any_size = true;
                }
            }
        }
    }

    /// The bar as published.
    pub(crate) fn candle(&self, start_ms: i64) -> Candle {
        let (ohlc, volume) = match self {
            BarAcc::Quotes(ohlc) => (ohlc, Decimal::from(ohlc.count)),
            BarAcc::Trades {
                ohlc,
                size_sum,
                any_size,
            } => (
                ohlc,
                if *any_size {
                    *size_sum
                } else {
                    Decimal::from(ohlc.count)
                },
            ),
        };
        Candle {
            start_ms,
            open: ohlc.open,
            high: ohlc.high,
            low: ohlc.low,
            close: ohlc.close,
            volume,
            ticks: ohlc.count,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn dec() -> impl Strategy<Value = Decimal> {
        prop_oneof![
            // Prices: small mantissas at nearby scales (the fast path).
            (-10_000_000i64..10_000_000, 0u32..10).prop_map(|(m, s)| Decimal::new(m, s)),
            // Anything: large mantissas and far-apart scales (overflow falls back).
            (any::<i64>(), any::<u32>(), 0u32..=28).prop_map(|(hi, lo, s)| {
                Decimal::from_i128_with_scale((i128::from(hi) << 32) | i128::from(lo), s)
            }),
        ]
    }

    proptest! {
        #[test]
        fn cmp_matches_decimal_ord(a in dec(), b in dec()) {
            prop_assert_eq!(cmp(&a, &b), a.cmp(&b));
            prop_assert_eq!(cmp(&b, &a), b.cmp(&a));
        }
    }

    #[test]
    fn cmp_edge_cases() {
        let z = Decimal::ZERO;
        let neg_z = -Decimal::ZERO;
        for (a, b) in [
            (z, neg_z),
            (Decimal::new(0, 5), Decimal::new(0, 0)),
            (Decimal::MAX, Decimal::MIN),
            (Decimal::MAX, Decimal::new(1, 28)),
            (Decimal::new(-1, 28), Decimal::MIN),
            (Decimal::new(108_123, 5), Decimal::new(1_081_230, 6)),
            (Decimal::new(108_123, 5), Decimal::new(1_081_235, 6)),
            (Decimal::new(-108_123, 5), Decimal::new(-1_081_235, 6)),
        ] {
            assert_eq!(cmp(&a, &b), a.cmp(&b), "{a} {b}");
            assert_eq!(cmp(&b, &a), b.cmp(&a), "{b} {a}");
        }
    }
}
