//! Candle resolutions and their UTC bucket alignment.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::calendar::{civil_from_days, days_from_civil, monday_on_or_before, DAY_MS};
use crate::CandleError;

/// A candle resolution. Every bucket is aligned to UTC: fixed resolutions to multiples of their
/// length since the unix epoch, `Week1` to Monday 00:00, `Month1` to the 1st at 00:00.
///
/// Serialized (serde, `Display`, channel names `candles.<SYMBOL>.<res>`) as the native name from
/// [`Resolution::as_str`]; deserialized with [`Resolution::parse`], so TradingView notation is
/// accepted too.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Resolution {
    /// 1 second.
    Sec1,
    /// 5 seconds.
    Sec5,
    /// 15 seconds.
    Sec15,
    /// 1 minute.
    Min1,
    /// 5 minutes.
    Min5,
    /// 15 minutes.
    Min15,
    /// 30 minutes.
    Min30,
    /// 1 hour.
    Hour1,
    /// 4 hours (aligned to 00:00, 04:00, ... UTC).
    Hour4,
    /// 1 UTC day.
    Day1,
    /// 1 week starting Monday 00:00 UTC.
    Week1,
    /// 1 calendar month starting on the 1st, 00:00 UTC.
    Month1,
}

impl Resolution {
    /// Every resolution, shortest first.
    pub const ALL: [Resolution; 12] = [
        Resolution::Sec1,
        Resolution::Sec5,
        Resolution::Sec15,
        Resolution::Min1,
        Resolution::Min5,
        Resolution::Min15,
        Resolution::Min30,
        Resolution::Hour1,
        Resolution::Hour4,
        Resolution::Day1,
        Resolution::Week1,
        Resolution::Month1,
    ];

    /// Position in [`Resolution::ALL`] (`0..12`): an index for per-resolution arrays, so a
    /// hot loop needs no map keyed by resolution.
    pub const fn index(self) -> usize {
        self as usize
    }

    /// Parses a native name (`1s 5s 15s 1m 5m 15m 30m 1h 4h 1D 1W 1M`, plus `1d`/`1w`) or
    /// TradingView notation (`1S 5S 15S 1 5 15 30 60 240 D 1D W 1W M 1M`).
    ///
    /// Matching is case-sensitive on purpose: `1m` is a minute and `1M` a month.
    pub fn parse(s: &str) -> Result<Resolution, CandleError> {
        use Resolution::*;
        Ok(match s {
            "1s" | "1S" => Sec1,
            "5s" | "5S" => Sec5,
            "15s" | "15S" => Sec15,
            "1m" | "1" => Min1,
            "5m" | "5" => Min5,
            "15m" | "15" => Min15,
            "30m" | "30" => Min30,
            "1h" | "60" => Hour1,
            "4h" | "240" => Hour4,
            "1D" | "1d" | "D" => Day1,
            "1W" | "1w" | "W" => Week1,
            "1M" | "M" => Month1,
            other => return Err(CandleError::UnknownResolution(other.to_owned())),
        })
    }

    /// Native name, used in channel names (`candles.EURUSD.1m`) and serialization.
    pub const fn as_str(self) -> &'static str {
        use Resolution::*;
        match self {
            Sec1 => "1s",
            Sec5 => "5s",
            Sec15 => "15s",
            Min1 => "1m",
            Min5 => "5m",
            Min15 => "15m",
            Min30 => "30m",
            Hour1 => "1h",
            Hour4 => "4h",
            Day1 => "1D",
            Week1 => "1W",
            Month1 => "1M",
        }
    }

    /// TradingView UDF notation (for `/config` `supported_resolutions` and `/history`).
    pub const fn to_tradingview(self) -> &'static str {
        use Resolution::*;
        match self {
            Sec1 => "1S",
            Sec5 => "5S",
            Sec15 => "15S",
            Min1 => "1",
            Min5 => "5",
            Min15 => "15",
            Min30 => "30",
            Hour1 => "60",
            Hour4 => "240",
            Day1 => "1D",
            Week1 => "1W",
            Month1 => "1M",
        }
    }

    /// Length in milliseconds for fixed-length resolutions; `None` for `Month1`.
    ///
    /// `Week1` is fixed-length (7 days) in UTC, only its phase differs from the epoch.
    pub const fn fixed_len_ms(self) -> Option<i64> {
        use Resolution::*;
        Some(match self {
            Sec1 => 1_000,
            Sec5 => 5_000,
            Sec15 => 15_000,
            Min1 => 60_000,
            Min5 => 300_000,
            Min15 => 900_000,
            Min30 => 1_800_000,
            Hour1 => 3_600_000,
            Hour4 => 14_400_000,
            Day1 => DAY_MS,
            Week1 => 7 * DAY_MS,
            Month1 => return None,
        })
    }

    /// Start (inclusive, unix ms) of the bucket containing `ts_ms`.
    ///
    /// Total: works for negative (pre-1970) timestamps and never panics; at the very ends of
    /// the `i64` range, where the true start is not representable, it saturates.
    pub fn bucket_start(self, ts_ms: i64) -> i64 {
        saturate(self.start_wide(ts_ms))
    }

    /// Start of the bucket after the one containing `ts_ms`, i.e. the exclusive end of that
    /// bucket: pass a bucket start to get its end. Saturates at `i64::MAX`, never panics.
    pub fn next_bucket_start(self, ts_ms: i64) -> i64 {
        match self {
            Resolution::Month1 => {
                let (y, m, _) = civil_from_days(ts_ms.div_euclid(DAY_MS));
                let (y, m) = if m == 12 { (y + 1, 1) } else { (y, m + 1) };
                saturate(days_to_wide_ms(days_from_civil(y, m, 1)))
            }
            fixed => {
                let len = fixed.fixed_len_ms().unwrap_or(DAY_MS);
                saturate(self.start_wide(ts_ms) + i128::from(len))
            }
        }
    }

    /// Unsaturated bucket start: i128 because `floor(ts / len) * len` can fall below
    /// `i64::MIN`, and the end of that lowest bucket must still come out right.
    fn start_wide(self, ts_ms: i64) -> i128 {
        let days = ts_ms.div_euclid(DAY_MS);
        match self {
            Resolution::Week1 => days_to_wide_ms(monday_on_or_before(days)),
            Resolution::Month1 => {
                let (y, m, _) = civil_from_days(days);
                days_to_wide_ms(days_from_civil(y, m, 1))
            }
            fixed => {
                let len = fixed.fixed_len_ms().unwrap_or(DAY_MS);
                i128::from(ts_ms.div_euclid(len)) * i128::from(len)
            }
        }
    }
}

fn days_to_wide_ms(days: i64) -> i128 {
    i128::from(days) * i128::from(DAY_MS)
}

fn saturate(v: i128) -> i64 {
    i64::try_from(v).unwrap_or(if v < 0 { i64::MIN } else { i64::MAX })
}

impl fmt::Display for Resolution {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Resolution {
    type Err = CandleError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Resolution::parse(s)
    }
}

impl Serialize for Resolution {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for Resolution {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = String::deserialize(deserializer)?;
        Resolution::parse(&s).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Resolution::*;

    /// Unix ms of a UTC date-time, written out so the expectations below are readable.
    fn utc(y: i64, mo: u32, d: u32, h: i64, mi: i64, s: i64) -> i64 {
        days_from_civil(y, mo, d) * DAY_MS + ((h * 60 + mi) * 60 + s) * 1_000
    }

    #[test]
    fn fixed_resolutions_align_to_their_length() {
        let ts = utc(2024, 5, 17, 13, 47, 38) + 123;
        let cases = [
            (Sec1, utc(2024, 5, 17, 13, 47, 38)),
            (Sec5, utc(2024, 5, 17, 13, 47, 35)),
            (Sec15, utc(2024, 5, 17, 13, 47, 30)),
            (Min1, utc(2024, 5, 17, 13, 47, 0)),
            (Min5, utc(2024, 5, 17, 13, 45, 0)),
            (Min15, utc(2024, 5, 17, 13, 45, 0)),
            (Min30, utc(2024, 5, 17, 13, 30, 0)),
            (Hour1, utc(2024, 5, 17, 13, 0, 0)),
            (Hour4, utc(2024, 5, 17, 12, 0, 0)),
            (Day1, utc(2024, 5, 17, 0, 0, 0)),
            // 2024-05-17 is a Friday; its week starts Monday 2024-05-13.
            (Week1, utc(2024, 5, 13, 0, 0, 0)),
            (Month1, utc(2024, 5, 1, 0, 0, 0)),
        ];
        for (res, start) in cases {
            assert_eq!(res.bucket_start(ts), start, "{res}");
            if let Some(len) = res.fixed_len_ms() {
                assert_eq!(res.next_bucket_start(start), start + len, "{res}");
            }
            // The start itself is in its own bucket; one ms before it is not.
            assert_eq!(res.bucket_start(start), start, "{res}");
            assert!(res.bucket_start(start - 1) < start, "{res}");
        }
    }

    #[test]
    fn week_starts_monday_even_across_month_and_year_ends() {
        // Sunday 2023-12-31 23:59:59.999 belongs to the week of Monday 2023-12-25.
        let sunday_end = utc(2024, 1, 1, 0, 0, 0) - 1;
        assert_eq!(Week1.bucket_start(sunday_end), utc(2023, 12, 25, 0, 0, 0));
        // Monday 2024-01-01 00:00 starts a new week.
        assert_eq!(
            Week1.bucket_start(utc(2024, 1, 1, 0, 0, 0)),
            utc(2024, 1, 1, 0, 0, 0)
        );
        assert_eq!(
            Week1.next_bucket_start(utc(2023, 12, 25, 0, 0, 0)),
            utc(2024, 1, 1, 0, 0, 0)
        );
        // A week spanning a month end: Wed 2024-07-31 and Sun 2024-08-04 share Mon 2024-07-29.
        assert_eq!(
            Week1.bucket_start(utc(2024, 7, 31, 9, 0, 0)),
            utc(2024, 7, 29, 0, 0, 0)
        );
        assert_eq!(
            Week1.bucket_start(utc(2024, 8, 4, 23, 0, 0)),
            utc(2024, 7, 29, 0, 0, 0)
        );
        // The epoch (a Thursday) is in the week of Monday 1969-12-29.
        assert_eq!(Week1.bucket_start(0), utc(1969, 12, 29, 0, 0, 0));
        assert_eq!(Week1.next_bucket_start(0), utc(1970, 1, 5, 0, 0, 0));
    }

    #[test]
    fn months_start_on_the_first_with_leap_years() {
        let m = Month1;
        assert_eq!(
            m.bucket_start(utc(2024, 2, 29, 23, 59, 59)),
            utc(2024, 2, 1, 0, 0, 0)
        );
        assert_eq!(
            m.next_bucket_start(utc(2024, 2, 1, 0, 0, 0)),
            utc(2024, 3, 1, 0, 0, 0)
        );
        assert_eq!(
            m.bucket_start(utc(2024, 3, 1, 0, 0, 0)),
            utc(2024, 3, 1, 0, 0, 0)
        );
        assert_eq!(
            m.bucket_start(utc(2024, 3, 1, 0, 0, 0) - 1),
            utc(2024, 2, 1, 0, 0, 0)
        );
        // Leap (29 days): 2024, 2000 (divisible by 400). Not leap (28): 2023, 1900, 2100.
        for (year, feb_days) in [(2024, 29), (2000, 29), (2023, 28), (1900, 28), (2100, 28)] {
            let feb = utc(year, 2, 1, 0, 0, 0);
            assert_eq!(m.next_bucket_start(feb) - feb, feb_days * DAY_MS, "{year}");
        }
        // Year end rolls into January.
        assert_eq!(
            m.next_bucket_start(utc(2024, 12, 31, 12, 0, 0)),
            utc(2025, 1, 1, 0, 0, 0)
        );
        assert_eq!(
            Day1.bucket_start(utc(2024, 2, 29, 18, 0, 0)),
            utc(2024, 2, 29, 0, 0, 0)
        );
        assert_eq!(
            Day1.next_bucket_start(utc(2024, 2, 29, 0, 0, 0)),
            utc(2024, 3, 1, 0, 0, 0)
        );
    }

    #[test]
    fn pre_1970_floors_downwards() {
        assert_eq!(Sec1.bucket_start(-1), -1_000);
        assert_eq!(Min1.bucket_start(-60_000), -60_000);
        assert_eq!(Day1.bucket_start(-1), utc(1969, 12, 31, 0, 0, 0));
        assert_eq!(Month1.bucket_start(-1), utc(1969, 12, 1, 0, 0, 0));
        assert_eq!(Month1.next_bucket_start(-1), 0);
        assert_eq!(
            Week1.bucket_start(utc(1900, 1, 3, 5, 0, 0)),
            utc(1900, 1, 1, 0, 0, 0)
        );
    }

    #[test]
    fn extremes_saturate_without_panicking() {
        for res in Resolution::ALL {
            for ts in [i64::MIN, i64::MIN + 1, -1, 0, i64::MAX - 1, i64::MAX] {
                let start = res.bucket_start(ts);
                let next = res.next_bucket_start(ts);
                assert!(start <= ts, "{res} {ts}");
                assert!(next >= start, "{res} {ts}");
            }
        }
    }

    #[test]
    fn parses_native_and_tradingview_names() {
        let cases = [
            ("1s", Sec1),
            ("1S", Sec1),
            ("5s", Sec5),
            ("5S", Sec5),
            ("15s", Sec15),
            ("15S", Sec15),
            ("1m", Min1),
            ("1", Min1),
            ("5m", Min5),
            ("5", Min5),
            ("15m", Min15),
            ("15", Min15),
            ("30m", Min30),
            ("30", Min30),
            ("1h", Hour1),
            ("60", Hour1),
            ("4h", Hour4),
            ("240", Hour4),
            ("1D", Day1),
            ("D", Day1),
            ("1d", Day1),
            ("1W", Week1),
            ("W", Week1),
            ("1M", Month1),
            ("M", Month1),
        ];
        for (s, res) in cases {
            assert_eq!(Resolution::parse(s), Ok(res), "{s}");
        }
        for bad in ["", "2m", "1min", "1H", " 1m", "120", "1Y", "0"] {
            assert_eq!(
                Resolution::parse(bad),
                Err(CandleError::UnknownResolution(bad.into()))
            );
        }
    }

    #[test]
    fn index_is_the_position_in_all() {
        for (i, res) in Resolution::ALL.iter().enumerate() {
            assert_eq!(res.index(), i, "{res}");
        }
    }

    #[test]
    fn names_round_trip() {
        for res in Resolution::ALL {
            assert_eq!(Resolution::parse(res.as_str()), Ok(res));
            assert_eq!(Resolution::parse(res.to_tradingview()), Ok(res));
            assert_eq!(res.to_string(), res.as_str());
            let json = serde_json::to_string(&res).unwrap();
            assert_eq!(json, format!("\"{}\"", res.as_str()));
            assert_eq!(serde_json::from_str::<Resolution>(&json).unwrap(), res);
        }
        assert_eq!(
            serde_json::from_str::<Resolution>("\"240\"").unwrap(),
            Hour4
        );
        assert_eq!(Min1.to_tradingview(), "1");
        assert_eq!(Hour4.to_tradingview(), "240");
        assert_eq!(Month1.to_tradingview(), "1M");
    }
}
