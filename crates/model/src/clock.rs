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
