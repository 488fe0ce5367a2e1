//! Aggregator input: ticks, and how a quote becomes a price.

use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

/// One market event for a single symbol, stamped in unix milliseconds (UTC).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tick {
    /// Event time, unix milliseconds.
    pub ts_ms: i64,
    /// Quote or trade.
    pub kind: TickKind,
}

/// What happened at [`Tick::ts_ms`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TickKind {
    /// Top of book changed.
    Quote {
        /// Best bid.
        bid: Decimal,
        /// Best ask.
        ask: Decimal,
    },
    /// A trade printed; `size` is `None` when the feed does not report it (most FX feeds).
    Trade {
        /// Trade price.
        price: Decimal,
        /// Traded quantity, if known.
        size: Option<Decimal>,
    },
}

impl Tick {
    /// A quote tick.
    pub const fn quote(ts_ms: i64, bid: Decimal, ask: Decimal) -> Tick {
        Tick {
            ts_ms,
            kind: TickKind::Quote { bid, ask },
        }
    }

    /// A trade tick.
    pub const fn trade(ts_ms: i64, price: Decimal, size: Option<Decimal>) -> Tick {
        Tick {
            ts_ms,
            kind: TickKind::Trade { price, size },
        }
    }
}

/// Which quote price feeds a bar that has no trades. Trades always win inside a bar; see the
/// crate docs for the exact rule.
///
/// Serialized in lowercase (`"bid"`, `"ask"`, `"mid"`, `"last"`), as in the server config.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PriceSource {
    /// Best bid (the usual choice for FX charts).
    Bid,
    /// Best ask.
    Ask,
    /// `(bid + ask) / 2`, exact decimal.
    #[default]
    Mid,
    /// Trades only: quotes never make or change a bar.
    Last,
}

impl PriceSource {
    /// The price a quote contributes under this source, or `None` for [`PriceSource::Last`].
    pub fn quote_price(self, bid: Decimal, ask: Decimal) -> Option<Decimal> {
        match self {
            PriceSource::Bid => Some(bid),
            PriceSource::Ask => Some(ask),
            PriceSource::Mid => Some(mid(bid, ask)),
            PriceSource::Last => None,
        }
    }
}

/// `(bid + ask) / 2` without the overflow panic `Decimal`'s `+` has near its 7.9e28 limit.
fn mid(bid: Decimal, ask: Decimal) -> Decimal {
    const TWO: Decimal = Decimal::TWO;
    match bid.checked_add(ask) {
        Some(sum) => sum / TWO,
        // Halving first can round each half up by one unit in the last place; saturate.
        None => (bid / TWO).saturating_add(ask / TWO),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::str::FromStr;

    fn d(s: &str) -> Decimal {
        Decimal::from_str(s).unwrap()
    }

    #[test]
    fn quote_price_per_source() {
        let (bid, ask) = (d("1.08541"), d("1.08544"));
        assert_eq!(PriceSource::Bid.quote_price(bid, ask), Some(bid));
        assert_eq!(PriceSource::Ask.quote_price(bid, ask), Some(ask));
        // Exact: one digit more than the inputs, no binary rounding.
        assert_eq!(PriceSource::Mid.quote_price(bid, ask), Some(d("1.085425")));
        assert_eq!(PriceSource::Last.quote_price(bid, ask), None);
    }

    #[test]
    fn mid_near_decimal_max_does_not_panic() {
        let m = mid(Decimal::MAX, Decimal::MAX);
        assert_eq!(m, Decimal::MAX);
        assert_eq!(mid(Decimal::MIN, Decimal::MIN), Decimal::MIN);
    }
}
