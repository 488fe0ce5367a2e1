//! Time as a value passed in by the caller: the core never reads a clock.

use crate::error::{Error, Result};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// A UTC instant in milliseconds since the Unix epoch.
///
/// The session uses it both for SendingTime and for its timers, so the transport passes the wall
/// clock (e.g. `Timestamp::from(SystemTime::now())`); tests pass whatever they like.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Timestamp(pub u64);

impl Timestamp {
    /// Milliseconds since the Unix epoch.
    pub const fn from_millis(ms: u64) -> Self {
        Timestamp(ms)
    }

    /// Milliseconds since the Unix epoch.
    pub const fn as_millis(self) -> u64 {
        self.0
    }

    /// `self + d`, saturating.
    pub fn saturating_add(self, d: Duration) -> Self {
        Timestamp(
            self.0
                .saturating_add(u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
        )
    }

    /// `self - earlier` as a duration, zero if `earlier` is later.
    pub fn since(self, earlier: Timestamp) -> Duration {
        Duration::from_millis(self.0.saturating_sub(earlier.0))
    }

    /// Formats as FIX UTCTimestamp with milliseconds: `YYYYMMDD-HH:MM:SS.sss` (21 bytes).
    pub fn to_fix(self) -> [u8; 21] {
        let ms = self.0 % 1000;
        let secs = self.0 / 1000;
        let days = (secs / 86_400) as i64;
        let sod = secs % 86_400;
        let (y, m, d) = civil_from_days(days);
        let (hh, mm, ss) = (sod / 3600, (sod / 60) % 60, sod % 60);
        let mut out = [0u8; 21];
        let y = y.clamp(0, 9999) as u64;
        put_digits(&mut out[0..4], y);
        put_digits(&mut out[4..6], u64::from(m));
        put_digits(&mut out[6..8], u64::from(d));
        out[8] = b'-';
        put_digits(&mut out[9..11], hh);
        out[11] = b':';
        put_digits(&mut out[12..14], mm);
        out[14] = b':';
        put_digits(&mut out[15..17], ss);
        out[17] = b'.';
        put_digits(&mut out[18..21], ms);
        out
    }

    /// Parses FIX UTCTimestamp `YYYYMMDD-HH:MM:SS[.fraction]` (fraction truncated to ms).
    pub fn parse_fix(s: &[u8]) -> Result<Self> {
        const BAD: Error = Error::InvalidValue {
            tag: 52,
            reason: "not a UTCTimestamp YYYYMMDD-HH:MM:SS[.sss]",
        };
        if s.len() < 17 || s[8] != b'-' || s[11] != b':' || s[14] != b':' {
            return Err(BAD);
        }
        let num = |r: std::ops::Range<usize>| -> Result<u64> {
            let mut v = 0u64;
            for &b in &s[r] {
                if !b.is_ascii_digit() {
                    return Err(BAD);
                }
                v = v * 10 + u64::from(b - b'0');
            }
            Ok(v)
        };
        let (y, mo, d) = (num(0..4)?, num(4..6)?, num(6..8)?);
        let (h, mi, sec) = (num(9..11)?, num(12..14)?, num(15..17)?);
        // 60 allows a leap second, as the FIX spec does.
        if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || sec > 60 {
            return Err(BAD);
        }
        let mut ms = 0;
        if s.len() > 17 {
            let frac = &s[18..];
            if s[17] != b'.' || frac.is_empty() || frac.len() > 9 {
                return Err(BAD);
            }
            let f = num(18..s.len())?;
            ms = match frac.len() {
                1 => f * 100,
                2 => f * 10,
                n => f / 10u64.pow(n as u32 - 3),
            };
        }
        let days = days_from_civil(y as i64, mo as u32, d as u32);
        let secs = days * 86_400 + (h * 3600 + mi * 60 + sec) as i64;
        let ms_total = u64::try_from(secs).map_err(|_| BAD)? * 1000 + ms;
        Ok(Timestamp(ms_total))
    }
}

impl From<SystemTime> for Timestamp {
    fn from(t: SystemTime) -> Self {
        let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
        Timestamp(u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
    }
}

fn put_digits(out: &mut [u8], mut v: u64) {
    for b in out.iter_mut().rev() {
        *b = b'0' + (v % 10) as u8;
        v /= 10;
    }
}

// Howard Hinnant's days<->civil algorithms (proleptic Gregorian), exact for any i64 range we use.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = i64::from((m + 9) % 12);
    let doy = (153 * mp + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_and_parses_utc_timestamp() {
        // 2024-02-29T13:45:07.089Z, checked with `date -u -d @1709214307`.
        let t = Timestamp(1_709_214_307_089);
        assert_eq!(&t.to_fix(), b"20240229-13:45:07.089");
        assert_eq!(Timestamp::parse_fix(b"20240229-13:45:07.089").unwrap(), t);
        assert_eq!(
            Timestamp::parse_fix(b"20240229-13:45:07").unwrap(),
            Timestamp(1_709_214_307_000)
        );
        assert_eq!(
            Timestamp::parse_fix(b"20240229-13:45:07.089123").unwrap(),
            t
        );
        assert_eq!(&Timestamp(0).to_fix(), b"19700101-00:00:00.000");
        assert!(Timestamp::parse_fix(b"20241329-13:45:07").is_err());
        assert!(Timestamp::parse_fix(b"20240229 13:45:07").is_err());
        assert!(Timestamp::parse_fix(b"20240229-13:45:07.").is_err());
    }

    #[test]
    fn civil_round_trip() {
        for days in (-1000..30_000).step_by(7) {
            let (y, m, d) = civil_from_days(days);
            assert_eq!(days_from_civil(y, m, d), days);
        }
    }
}
