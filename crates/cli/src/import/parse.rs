//! One line of an import file into a [`Row`]: a tick or a bar, every price and size kept as
//! the exact decimal text it was written in.

use super::*;

fn num(s: &str) -> Option<i64> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

/// `YYYY-MM-DD` or `YYYY.MM.DD` plus `HH:MM[:SS[.fff]]` (UTC) into unix ms.
fn date_time_ms(date: &str, time: &str) -> Option<i64> {
    let mut d = date.split(['-', '.']);
    let (y, mo, da) = (num(d.next()?)?, num(d.next()?)?, num(d.next()?)?);
    if d.next().is_some() || !(1..=12).contains(&mo) || !(1..=31).contains(&da) {
        return None;
    }
    let time = time.trim_end_matches('Z');
    let (hms, frac) = time.split_once('.').unwrap_or((time, ""));
    let mut t = hms.split(':');
    let (h, mi) = (num(t.next()?)?, num(t.next()?)?);
    let s = t.next().map_or(Some(0), num)?;
    if t.next().is_some() || h > 23 || mi > 59 || s > 60 {
        return None;
    }
    let ms = if frac.is_empty() {
        0
    } else {
        let f = frac.get(..frac.len().min(3))?;
        num(f)? * 10i64.pow(3 - u32::try_from(f.len()).ok()?)
    };
    let days =
        tickwire_candles::days_from_civil(y, u32::try_from(mo).ok()?, u32::try_from(da).ok()?);
    Some(((days * 24 + h) * 60 + mi) * 60_000 + s * 1000 + ms)
}

/// Unix seconds/ms/us/ns (by magnitude) or ISO 8601 UTC into unix ms.
fn timestamp_ms(s: &str) -> Option<i64> {
    if let Some(n) = num(s) {
        return Some(tickwire_model::clock::unix_millis_from_any_unit(n));
    }
    if let Some((int, frac)) = s.split_once('.') {
        // Fractional unix seconds.
        if let (Some(i), true) = (num(int), frac.bytes().all(|b| b.is_ascii_digit())) {
            let f = frac.get(..frac.len().min(3))?;
            let ms = if f.is_empty() {
                0
            } else {
                num(f)? * 10i64.pow(3 - u32::try_from(f.len()).ok()?)
            };
            return Some(i * 1000 + ms);
        }
    }
    let (date, time) = s.split_once(['T', ' '])?;
    date_time_ms(date, time)
}

/// One parsed row.
/// One line of an import file.
pub(super) enum Row<'a> {
    Tick {
        ts: i64,
        symbol: &'a str,
        bid: Option<&'a str>,
        ask: Option<&'a str>,
        last: Option<&'a str>,
        volume: Option<&'a str>,
    },
    Bar {
        ts: i64,
        candle: Candle,
    },
    Skip,
}

/// A bar's candle from its decimal columns (its start is set once the resolution is known).
fn bar(ts: i64, ohlc: [&str; 4], volume: &str) -> Result<Candle, String> {
    // `dec` checked the syntax; a value past the exact range (more than 28 places) is refused
    // here rather than stored as something else.
    let p = |s: &str, what: &str| {
        Decimal::from_str(s).map_err(|e| format!("{what} {s:?} is out of range: {e}"))
    };
    Ok(Candle {
        start_ms: ts,
        open: p(ohlc[0], "open")?,
        high: p(ohlc[1], "high")?,
        low: p(ohlc[2], "low")?,
        close: p(ohlc[3], "close")?,
        volume: p(volume, "volume")?,
        ticks: 0,
    })
}

/// Reads the lines of one file in one format, for one symbol.
pub(super) struct Parser {
    format: ImportFormat,
    symbol: String,
    mt5_bars: bool,
    /// MT5 tick exports leave bid or ask empty when only the other changed.
    last_bid: String,
    last_ask: String,
}

fn opt(s: Option<&str>) -> Option<&str> {
    s.map(str::trim).filter(|s| !s.is_empty())
}

fn dec<'a>(s: &'a str, what: &str) -> Result<&'a str, String> {
    if is_decimal(s) {
        Ok(s)
    } else {
        Err(format!("{what} {s:?} is not a decimal"))
    }
}

impl Parser {
    pub(super) fn new(format: ImportFormat, symbol: String) -> Parser {
        Parser {
            format,
            symbol,
            mt5_bars: false,
            last_bid: String::new(),
            last_ask: String::new(),
        }
    }

    pub(super) fn parse<'a>(&'a mut self, line: &'a str, lineno: u64) -> Result<Row<'a>, String> {
        let line = line.trim_end_matches(['\r', '\n']);
        if line.trim().is_empty() {
            return Ok(Row::Skip);
        }
        match self.format {
            ImportFormat::Csv => {
                let mut f = line.split(',').map(str::trim);
                let ts_s = f.next().unwrap_or("");
                let Some(ts) = timestamp_ms(ts_s) else {
                    if lineno == 1 {
                        return Ok(Row::Skip); // header
                    }
                    return Err(format!(
                        "timestamp {ts_s:?} is not unix s/ms/us/ns or ISO 8601"
                    ));
                };
                let symbol = opt(f.next()).ok_or("missing symbol")?;
                let bid = opt(f.next()).map(|s| dec(s, "bid")).transpose()?;
                let ask = opt(f.next()).map(|s| dec(s, "ask")).transpose()?;
                let last = opt(f.next()).map(|s| dec(s, "last")).transpose()?;
                let volume = opt(f.next()).map(|s| dec(s, "volume")).transpose()?;
                if f.next().is_some() {
                    return Err("more than 6 columns".into());
                }
                if (bid.is_none() || ask.is_none()) && last.is_none() {
                    return Err("needs bid and ask, or last".into());
                }
                Ok(Row::Tick {
                    ts,
                    symbol,
                    bid,
                    ask,
                    last,
                    volume,
                })
            }
            ImportFormat::Mt4 => {
                let f: Vec<&str> = line.split(',').map(str::trim).collect();
                if f.len() < 7 {
                    if lineno == 1 {
                        return Ok(Row::Skip);
                    }
                    return Err(format!("expected 7 columns, got {}", f.len()));
                }
                let Some(ts) = date_time_ms(f[0], f[1]) else {
                    if lineno == 1 {
                        return Ok(Row::Skip);
                    }
                    return Err(format!(
                        "date/time {:?} {:?} not YYYY.MM.DD HH:MM",
                        f[0], f[1]
                    ));
                };
                let ohlc = [
                    dec(f[2], "open")?,
                    dec(f[3], "high")?,
                    dec(f[4], "low")?,
                    dec(f[5], "close")?,
                ];
                Ok(Row::Bar {
                    ts,
                    candle: bar(ts, ohlc, dec(f[6], "volume")?)?,
                })
            }
            ImportFormat::Mt5 => {
                if line.starts_with("<DATE>") {
                    self.mt5_bars = line.contains("<OPEN>");
                    return Ok(Row::Skip);
                }
                let f: Vec<&str> = line.split('\t').map(str::trim).collect();
                let ts = date_time_ms(f[0], f.get(1).copied().unwrap_or(""))
                    .ok_or_else(|| format!("date/time {:?} not YYYY.MM.DD HH:MM:SS.fff", f[0]))?;
                let get = |i: usize| f.get(i).copied().filter(|s| !s.is_empty());
                if self.mt5_bars {
                    let col = |i: usize, w: &str| -> Result<&str, String> {
                        dec(get(i).ok_or_else(|| format!("missing {w}"))?, w)
                    };
                    let ohlc = [
                        col(2, "open")?,
                        col(3, "high")?,
                        col(4, "low")?,
                        col(5, "close")?,
                    ];
                    return Ok(Row::Bar {
                        ts,
                        candle: bar(ts, ohlc, col(6, "tick volume")?)?,
                    });
                }
                if let Some(b) = get(2) {
                    self.last_bid.clear();
                    self.last_bid.push_str(dec(b, "bid")?);
                }
                if let Some(a) = get(3) {
                    self.last_ask.clear();
                    self.last_ask.push_str(dec(a, "ask")?);
                }
                let last = get(4).map(|s| dec(s, "last")).transpose()?;
                let volume = get(5).map(|s| dec(s, "volume")).transpose()?;
                let have_quote = !self.last_bid.is_empty() && !self.last_ask.is_empty();
                if !have_quote && last.is_none() {
                    return Err("no bid/ask seen yet and no last".into());
                }
                Ok(Row::Tick {
                    ts,
                    symbol: &self.symbol,
                    bid: have_quote.then_some(self.last_bid.as_str()),
                    ask: have_quote.then_some(self.last_ask.as_str()),
                    last,
                    volume,
                })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps() {
        assert_eq!(timestamp_ms("1704067200"), Some(1_704_067_200_000));
        assert_eq!(timestamp_ms("1704067200123"), Some(1_704_067_200_123));
        assert_eq!(timestamp_ms("1704067200123456"), Some(1_704_067_200_123));
        assert_eq!(timestamp_ms("1704067200.5"), Some(1_704_067_200_500));
        assert_eq!(
            timestamp_ms("2024-01-01T00:00:01.250Z"),
            Some(1_704_067_201_250)
        );
        assert_eq!(date_time_ms("2024.01.01", "00:01"), Some(1_704_067_260_000));
        assert_eq!(timestamp_ms("yesterday"), None);
        assert_eq!(date_time_ms("2024.13.01", "00:00"), None);
    }

    #[test]
    fn decimals() {
        assert!(is_decimal("1.08541") && is_decimal("-3") && is_decimal("10"));
        assert!(!is_decimal("1.") && !is_decimal(".5") && !is_decimal("1e5") && !is_decimal(""));
    }
}
