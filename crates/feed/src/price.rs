//! Prices as exact decimals for ordering: any number of digits, compared as numbers.

use std::cmp::Ordering;

/// A decimal price parsed for ordering: `-?digits(.digits)?`, compared by value (`1.10001 >
/// 1.1`, `1.10 == 1.1`, `10.0000000000000000001 > 10`), with no limit on digits. The text a
/// provider sent is kept beside it by the book, so it is never rewritten.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Price {
    negative: bool,
    /// Integer digits without leading zeros ("" for 0).
    int: Box<str>,
    /// Fraction digits without trailing zeros.
    frac: Box<str>,
}

impl Price {
    /// Parses a plain decimal (`is_decimal`'s grammar without its length limit); `None`
    /// otherwise.
    pub fn parse(s: &str) -> Option<Price> {
        let (negative, body) = match s.strip_prefix('-') {
            Some(b) => (true, b),
            None => (false, s),
        };
        let (int, frac) = match body.split_once('.') {
            Some((i, f)) => (i, Some(f)),
            None => (body, None),
        };
        if int.is_empty() || !int.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        if let Some(f) = frac {
            if f.is_empty() || !f.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
        }
        let int = int.trim_start_matches('0');
        let frac = frac.unwrap_or("").trim_end_matches('0');
        // -0 is 0.
        let negative = negative && !(int.is_empty() && frac.is_empty());
        Some(Price {
            negative,
            int: int.into(),
            frac: frac.into(),
        })
    }

    /// Magnitude comparison (sign ignored).
    fn cmp_abs(&self, other: &Price) -> Ordering {
        self.int
            .len()
            .cmp(&other.int.len())
            .then_with(|| self.int.cmp(&other.int))
            // Fractions without trailing zeros compare as digit strings.
            .then_with(|| self.frac.cmp(&other.frac))
    }

    pub fn is_zero(&self) -> bool {
        self.int.is_empty() && self.frac.is_empty()
    }
}

impl Ord for Price {
    fn cmp(&self, other: &Price) -> Ordering {
        match (self.negative, other.negative) {
            (false, true) => Ordering::Greater,
            (true, false) => Ordering::Less,
            (false, false) => self.cmp_abs(other),
            (true, true) => other.cmp_abs(self),
        }
    }
}

impl PartialOrd for Price {
    fn partial_cmp(&self, other: &Price) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn p(s: &str) -> Price {
        Price::parse(s).unwrap()
    }

    #[test]
    fn orders_by_value() {
        assert!(p("1.10001") > p("1.1"));
        assert_eq!(p("1.10"), p("1.1"));
        assert_eq!(p("001.1"), p("1.1"));
        assert!(p("10.0000000000000000001") > p("10"));
        assert!(p("-1") < p("0"));
        assert!(p("-1.5") < p("-1.4"));
        assert_eq!(p("-0.0"), p("0"));
        assert!(p("123456789012345678901234567890.5") > p("123456789012345678901234567890.49"));
        for bad in ["", "-", "1.", ".5", "1e5", "+1", "1.2.3", "NaN"] {
            assert!(Price::parse(bad).is_none(), "{bad}");
        }
    }

    proptest! {
        /// Agrees with exact integer arithmetic where integers can hold the values.
        #[test]
        fn agrees_with_integers(a in -10_000_000_000i64..10_000_000_000, b in -10_000_000_000i64..10_000_000_000, sa in 0u32..8, sb in 0u32..8) {
            let text = |m: i64, s: u32| {
                let neg = m < 0;
                let digits = format!("{:0width$}", m.unsigned_abs(), width = s as usize + 1);
                let (i, f) = digits.split_at(digits.len() - s as usize);
                let body = if s == 0 { i.to_string() } else { format!("{i}.{f}") };
                if neg { format!("-{body}") } else { body }
            };
            let (ta, tb) = (text(a, sa), text(b, sb));
            // Compare a/10^sa with b/10^sb exactly.
            let scale = 10i128.pow(8);
            let va = i128::from(a) * scale / 10i128.pow(sa);
            let vb = i128::from(b) * scale / 10i128.pow(sb);
            prop_assert_eq!(p(&ta).cmp(&p(&tb)), va.cmp(&vb), "{} vs {}", ta, tb);
        }
    }
}
