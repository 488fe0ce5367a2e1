//! Proleptic Gregorian civil-date arithmetic on day numbers (days since 1970-01-01, UTC).
//!
//! These are Howard Hinnant's `days_from_civil` / `civil_from_days` algorithms. They are exact for
//! every day number an `i64` millisecond timestamp can produce, need no tables and no time-zone
//! data, which is why we carry ten lines here instead of depending on chrono or time.

/// Milliseconds in one UTC day (UTC has no leap seconds in unix time).
pub(crate) const DAY_MS: i64 = 86_400_000;

/// Day number of `year-month-day` (month 1..=12, day 1..=31).
pub fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    // Shift the year to start in March so the leap day is the last day of the "year".
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400; // [0, 399]
    let m = i64::from(month);
    let mp = if m > 2 { m - 3 } else { m + 9 }; // [0, 11], March = 0
    let doy = (153 * mp + 2) / 5 + i64::from(day) - 1; // [0, 365]
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy; // [0, 146096]
    era * 146_097 + doe - 719_468
}

/// `(year, month 1..=12, day 1..=31)` of a day number.
pub(crate) fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097; // [0, 146096]
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365; // [0, 399]
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100); // [0, 365]
    let mp = (5 * doy + 2) / 153; // [0, 11]
    let day = doy - (153 * mp + 2) / 5 + 1; // [1, 31]
    let month = if mp < 10 { mp + 3 } else { mp - 9 }; // [1, 12]
    let year = yoe + era * 400 + i64::from(month <= 2);
    // The ranges above are guaranteed by the algorithm, so the narrowing cannot lose data.
    (year, month as u32, day as u32)
}

/// Day number of the Monday on or before `days` (1970-01-01 was a Thursday).
pub(crate) fn monday_on_or_before(days: i64) -> i64 {
    days - (days + 3).rem_euclid(7)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_dates() {
        assert_eq!(days_from_civil(1970, 1, 1), 0);
        assert_eq!(days_from_civil(2000, 3, 1), 11_017);
        assert_eq!(days_from_civil(1969, 12, 31), -1);
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(-1), (1969, 12, 31));
        assert_eq!(civil_from_days(days_from_civil(2024, 2, 29)), (2024, 2, 29));
        // 2024-01-01 was a Monday.
        let d = days_from_civil(2024, 1, 1);
        assert_eq!(monday_on_or_before(d), d);
        assert_eq!(monday_on_or_before(d + 6), d);
        assert_eq!(monday_on_or_before(d + 7), d + 7);
        // 1970-01-01 (Thursday) belongs to the week starting Monday 1969-12-29.
        assert_eq!(monday_on_or_before(0), -3);
    }

    #[test]
    fn round_trip_over_many_centuries() {
        for days in (-1_000_000..1_000_000).step_by(97) {
            let (y, m, d) = civil_from_days(days);
            assert_eq!(days_from_civil(y, m, d), days);
        }
    }

    #[test]
    fn extreme_day_numbers_do_not_panic() {
        let lo = i64::MIN.div_euclid(DAY_MS);
        let hi = i64::MAX.div_euclid(DAY_MS);
        for days in [lo, hi] {
            let (y, m, d) = civil_from_days(days);
            assert_eq!(days_from_civil(y, m, d), days);
            let _ = monday_on_or_before(days);
        }
    }
}
