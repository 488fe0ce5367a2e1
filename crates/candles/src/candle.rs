//! The output bar and the accumulator that builds it.

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
        if price > self.high {
            self.high = price;
        }
        if price < self.low {
            self.low = price;
        }
        self.count += 1;
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
    /// A new bar from its first tick, or `None` if the tick does not count (a quote under
    /// [`PriceSource::Last`]).
    pub(crate) fn start(tick: &Tick, source: PriceSource) -> Option<BarAcc> {
        match tick.kind {
            TickKind::Quote { bid, ask } => source
                .quote_price(bid, ask)
                .map(|p| BarAcc::Quotes(Ohlc::new(tick.ts_ms, p))),
            TickKind::Trade { price, size } => Some(BarAcc::Trades {
                ohlc: Ohlc::new(tick.ts_ms, price),
                size_sum: size.unwrap_or(Decimal::ZERO),
                any_size: size.is_some(),
            }),
        }
    }

    /// Counts `tick` into the bar; returns whether the bar's [`Candle`] changed.
    pub(crate) fn add(&mut self, tick: &Tick, source: PriceSource) -> bool {
        match (&mut *self, tick.kind) {
            (BarAcc::Quotes(ohlc), TickKind::Quote { bid, ask }) => {
                match source.quote_price(bid, ask) {
                    Some(p) => {
                        ohlc.add(tick.ts_ms, p);
                        true
                    }
                    None => false,
                }
            }
            // A quote cannot change a bar that already has trades.
            (BarAcc::Trades { .. }, TickKind::Quote { .. }) => false,
            (BarAcc::Quotes(_), TickKind::Trade { .. }) => match BarAcc::start(tick, source) {
                Some(acc) => {
                    *self = acc;
                    true
                }
                None => false,
            },
            (
                BarAcc::Trades {
                    ohlc,
                    size_sum,
                    any_size,
                },
                TickKind::Trade { price, size },
            ) => {
                ohlc.add(tick.ts_ms, price);
                if let Some(size) = size {
                    // Saturating: an absurd volume must not panic the hub.
                    *size_sum = size_sum.saturating_add(size);
                    *any_size = true;
                }
                true
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
