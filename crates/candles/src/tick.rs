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
#[inline]
fn mid(bid: Decimal, ask: Decimal) -> Decimal {
    if let Some(m) = mid_fast(bid, ask) {
        return m;
    }
    mid_slow(bid, ask)
}

/// [`mid`] for the usual quote (bid and ask at one scale), in integers: a decimal division
/// per quote was a visible share of the candle driver. It must give exactly what
/// `(bid + ask) / 2` gives, value AND scale, because the scale shows in published bars
/// (`"1.08124"` vs `"1.081240"`). rust_decimal 1.x's `div_impl` for a divisor of 2: an even
/// sum has no remainder and keeps its scale; an odd sum `S` at scale `s <= 19` (and a quotient
/// below 2^64) is scaled by 10^9 (`find_scale`), giving `S * 5 * 10^8` at `s + 9`, which
/// `unscale` then shortens once by 10^4, 10^2 and 10 (its 10^8 step needs 32 low zero bits,
/// impossible for odd `S`): `S * 50` at `s + 2`, e.g. `3 / 2 = 1.50`. Anything else (different
/// scales, a zero sum, larger scales or sums) takes the division. Proptested against it
/// (`mid_fast_matches_decimal_division`), so a rust_decimal upgrade that changes this fails
/// the tests rather than the bars.
#[inline]
fn mid_fast(bid: Decimal, ask: Decimal) -> Option<Decimal> {
    let scale = bid.scale();
    if scale != ask.scale() || scale > 26 {
        return None;
    }
    // Mantissas are below 2^96, so the i128 sum cannot overflow.
    let sum = bid.mantissa() + ask.mantissa();
    if sum == 0 || sum.unsigned_abs() >= 1 << 64 {
        return None;
    }
    if sum % 2 == 0 {
        Decimal::try_from_i128_with_scale(sum / 2, scale).ok()
    } else if scale > 19 {
        None
    } else {
        Decimal::try_from_i128_with_scale(sum * 50, scale + 2).ok()
    }
}

#[cold]
fn mid_slow(bid: Decimal, ask: Decimal) -> Decimal {
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

    /// Mantissas at one scale, small (prices) to the fast path's limit.
    fn same_scale_pair() -> impl proptest::strategy::Strategy<Value = (Decimal, Decimal)> {
        use proptest::prelude::*;
        let mantissa = prop_oneof![
            -2_000_000i64..2_000_000,
            any::<i64>().prop_map(|m| m / 2),
            any::<i64>(),
        ];
        (mantissa.clone(), mantissa, 0u32..=28)
            .prop_map(|(b, a, s)| (Decimal::new(b, s), Decimal::new(a, s)))
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig { cases: 20_000, ..Default::default() })]

        #[test]
        fn mid_fast_matches_decimal_division((bid, ask) in same_scale_pair()) {
            if let Some(m) = mid_fast(bid, ask) {
                let want = mid_slow(bid, ask);
                proptest::prop_assert_eq!((m.mantissa(), m.scale()), (want.mantissa(), want.scale()));
                proptest::prop_assert_eq!(m.to_string(), want.to_string());
            }
        }
    }

    #[test]
    fn mid_fast_edge_cases() {
        for (b, a) in [
            ("1.08123", "1.08124"),
            ("1.08123", "1.08125"),
            ("1", "2"),
            ("-1", "0"),
            ("-0.03", "0.01"),
            ("-0.00001", "0.00000"),
            ("9223372036854775807", "9223372036854775807"),
            ("-9223372036854775808", "-9223372036854775807"),
            (
                "0.00000000000000000000000001",
                "0.00000000000000000000000002",
            ),
        ] {
            let (bid, ask) = (d(b), d(a));
            let want = mid_slow(bid, ask);
            let got = mid(bid, ask);
            assert_eq!(
                (got.mantissa(), got.scale()),
                (want.mantissa(), want.scale()),
                "{b} {a}"
            );
        }
    }

    #[test]
    fn mid_near_decimal_max_does_not_panic() {
        let m = mid(Decimal::MAX, Decimal::MAX);
        assert_eq!(m, Decimal::MAX);
        assert_eq!(mid(Decimal::MIN, Decimal::MIN), Decimal::MIN);
    }
}
