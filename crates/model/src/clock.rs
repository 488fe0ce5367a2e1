//! The wall clock, in the units the rest of the code stores: the one place that reads it, so a
//! clock before 1970 or past 2554 is handled (as 0 or the maximum) in one way everywhere.

use std::time::{SystemTime, UNIX_EPOCH};

/// Unix time in nanoseconds (log timestamps). 0 for a clock set before 1970.
pub fn now_nanos() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

/// Unix time in milliseconds (bar times, session files, UDF).
pub fn now_millis() -> u64 {
    now_nanos() / 1_000_000
}

/// [`now_millis`] as the signed type bar arithmetic uses.
pub fn now_millis_i64() -> i64 {
    i64::try_from(now_millis()).unwrap_or(i64::MAX)
}

/// Unix time in seconds.
pub fn now_secs() -> u64 {
    now_nanos() / 1_000_000_000
}

/// Milliseconds since the Unix epoch of a file time (`metadata().modified()`), 0 when unknown.
pub fn millis_of(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// A Unix timestamp in seconds, milliseconds, microseconds or nanoseconds, as milliseconds,
/// told apart by magnitude (as feeds send all four: Databento nanoseconds, exchange
/// milliseconds, CSV seconds). A value of 10^11 or more is not seconds (that would be the year
/// 5138), of 10^14 or more not milliseconds, of 10^17 or more not microseconds. The same rule
/// for `tickwire import` and for a quote's or trade's `ts` field.
pub fn unix_millis_from_any_unit(t: i64) -> i64 {
    match t.unsigned_abs() {
        n if n >= 100_000_000_000_000_000 => t / 1_000_000,
        n if n >= 100_000_000_000_000 => t / 1_000,
        n if n >= 100_000_000_000 => t,
        _ => t.saturating_mul(1_000),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units_by_magnitude() {
        let ms = 1_704_067_200_123i64;
        assert_eq!(unix_millis_from_any_unit(1_704_067_200), 1_704_067_200_000);
        assert_eq!(unix_millis_from_any_unit(ms), ms);
        assert_eq!(unix_millis_from_any_unit(ms * 1_000 + 456), ms);
        assert_eq!(unix_millis_from_any_unit(ms * 1_000_000 + 456_789), ms);
        assert_eq!(unix_millis_from_any_unit(0), 0);
        assert_eq!(unix_millis_from_any_unit(-1_000), -1_000_000);
    }
}
