//! Exact decimal values kept as the text received (prices and sizes are never floats).

use crate::error::{Error, Result};

/// A FIX `float`/`Price`/`Qty` value: optional `-`, digits, at most one `.`, at least one digit.
///
/// It keeps the wire text, so `1.50` and `1.5` are different values here (and round-trip
/// byte-exactly); use [`Decimal::to_scaled`] to compare numerically or convert.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Decimal<'a>(&'a str);

impl<'a> Decimal<'a> {
    /// Validates `s` as a FIX decimal.
    pub fn new(s: &'a str) -> Result<Self> {
        Self::for_tag(0, s)
    }

    #[inline]
    pub(crate) fn for_tag(tag: u32, s: &'a str) -> Result<Self> {
        let b = s.as_bytes();
        let digits = b.strip_prefix(b"-").unwrap_or(b);
        let mut seen_dot = false;
        let mut seen_digit = false;
        for &c in digits {
            match c {
                b'0'..=b'9' => seen_digit = true,
                b'.' if !seen_dot => seen_dot = true,
                _ => {
                    return Err(Error::InvalidValue {
                        tag,
                        reason: "not a decimal number",
                    })
                }
            }
        }
        if !seen_digit {
            return Err(Error::InvalidValue {
                tag,
                reason: "not a decimal number",
            });
        }
        Ok(Decimal(s))
    }

    /// The wire text.
    pub fn as_str(&self) -> &'a str {
        self.0
    }

    /// `(mantissa, scale)` with value = mantissa / 10^scale, or `None` if it overflows i64.
    pub fn to_scaled(&self) -> Option<(i64, u32)> {
        let b = self.0.as_bytes();
        let (neg, digits) = match b.strip_prefix(b"-") {
            Some(rest) => (true, rest),
            None => (false, b),
        };
        let mut m: i64 = 0;
        let mut scale = 0u32;
        let mut after_dot = false;
        for &c in digits {
            if c == b'.' {
                after_dot = true;
                continue;
            }
            m = m.checked_mul(10)?.checked_add(i64::from(c - b'0'))?;
            if after_dot {
                scale += 1;
            }
        }
        Some((if neg { -m } else { m }, scale))
    }
}

impl std::fmt::Display for Decimal<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validates_and_scales() {
        for ok in ["1", "1.5", "-0.00012", "00023.23", ".5", "5."] {
            assert!(Decimal::new(ok).is_ok(), "{ok}");
        }
        for bad in ["", "-", ".", "1.2.3", "1e5", "+1", " 1", "NaN"] {
            assert!(Decimal::new(bad).is_err(), "{bad}");
        }
        assert_eq!(
            Decimal::new("-12.340").unwrap().to_scaled(),
            Some((-12340, 3))
        );
        assert_eq!(
            Decimal::new("99999999999999999999").unwrap().to_scaled(),
            None
        );
    }
}
