//! Ticks from stored quote and trade messages: the fields come from `tickwire_feed::fields`
//! (the one reader of quote and trade fields), the decimals from a fast path checked against
//! `Decimal::from_str`.

use std::str::FromStr;

use tickwire_candles::{Decimal, Tick};
use tickwire_feed::fields::{self, Fields};
use tickwire_model::FieldSpans;

/// What a source namespace carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SourceKind {
    Quote,
    Trade,
}

impl SourceKind {
    fn fields(self) -> fields::Kind {
        match self {
            SourceKind::Quote => fields::Kind::Quote,
            SourceKind::Trade => fields::Kind::Trade,
        }
    }
}

/// Turns a stored message into a tick. Event time: the message's own `ts` when present (Unix
/// seconds, milliseconds, microseconds or nanoseconds, told apart by magnitude: a feed in
/// nanoseconds put its bars in the year 55,000,000 when `ts` was read as milliseconds), else
/// the server's append time. `spans`: where the publish edge found the fields in `data`, when
/// it did; the same tick without reading the text again (`fields::from_spans` gives what
/// `fields::read` does, tested in tickwire-feed and here).
#[inline]
pub(crate) fn parse_tick_spanned(
    kind: SourceKind,
    data: &[u8],
    spans: Option<&FieldSpans>,
    log_ts_nanos: u64,
) -> Option<Tick> {
    let log_ms = i64::try_from(log_ts_nanos / 1_000_000).ok()?;
    let fields = match spans.and_then(|s| fields::from_spans(kind.fields(), s, data)) {
        Some(f) => f,
        None => fields::read(kind.fields(), data)?,
    };
    tick_from_fields(kind, fields, log_ms, dec)
}

/// The tick a message's fields make, with `dec` reading the decimals (and `log_ms` the time
/// when the message has no `ts`).
#[inline]
fn tick_from_fields(
    kind: SourceKind,
    fields: Fields<'_>,
    log_ms: i64,
    dec: impl Fn(&[u8]) -> Option<Decimal>,
) -> Option<Tick> {
    let ts = fields
        .ts
        .map_or(log_ms, tickwire_model::clock::unix_millis_from_any_unit);
    match kind {
        SourceKind::Quote => match (fields.bid, fields.ask, fields.last) {
            (Some(b), Some(a), _) => Some(Tick::quote(ts, dec(b)?, dec(a)?)),
            // A quote that only carries a last price is a trade print, of size `volume` when
            // it has one (what `tickwire import` writes for a CSV row with `last,volume`).
            (_, _, Some(l)) => {
                let size = match fields.volume {
                    Some(v) => Some(dec(v)?),
                    None => None,
                };
                Some(Tick::trade(ts, dec(l)?, size))
            }
            _ => None,
        },
        SourceKind::Trade => {
            let size = match fields.size {
                Some(s) => Some(dec(s)?),
                None => None,
            };
            Some(Tick::trade(ts, dec(fields.price?)?, size))
        }
    }
}

/// A decimal from the bytes of a JSON string. Prices are nearly always plain `123.456` with few
/// digits: those become `Decimal::new(mantissa, scale)` directly (the same value and scale
/// `Decimal::from_str` gives, tested); anything else goes through `from_str`.
#[inline]
fn dec(b: &[u8]) -> Option<Decimal> {
    let mut mantissa: i64 = 0;
    let mut digits = 0u32;
    let mut scale: Option<u32> = None;
    for &c in b {
        match c {
            // 18 digits always fit an i64; a 19th might not, so it goes the slow way before
            // the multiplication could overflow (it did, and panicked the candle thread in a
            // debug build, for a 22-digit price).
            b'0'..=b'9' if digits < 18 => {
                mantissa = mantissa * 10 + i64::from(c - b'0');
                digits += 1;
                if let Some(s) = &mut scale {
                    *s += 1;
                }
            }
            b'.' if scale.is_none() && digits > 0 => scale = Some(0),
            _ => return dec_slow(b),
        }
    }
    // "" and "1." are whatever from_str says.
    if digits == 0 || scale == Some(0) {
        return dec_slow(b);
    }
    Some(Decimal::new(mantissa, scale.unwrap_or(0)))
}

#[cold]
fn dec_slow(b: &[u8]) -> Option<Decimal> {
    Decimal::from_str(std::str::from_utf8(b).ok()?).ok()
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    use tickwire_model::Schema;

    /// The tick of a message read from its text.
    pub(crate) fn parse_tick(kind: SourceKind, data: &[u8], log_ts_nanos: u64) -> Option<Tick> {
        parse_tick_spanned(kind, data, None, log_ts_nanos)
    }

    /// Messages as a JSON publish batch carries them: the tick from the edge's spans is the
    /// tick from the text, for quotes and trades, with and without `ts` and extra fields.
    #[test]
    fn ticks_from_the_edges_spans_are_the_ticks_from_the_text() {
        let mut rng = lcg(7);
        let mut next = move |n: u64| (rng() >> 33) % n;
        let mut spanned = 0;
        for _ in 0..5_000 {
            let px = format!("{}.{}", next(100_000), next(1_000));
            let ts = match next(4) {
                0 => String::new(),
                1 => format!(r#","ts":{}"#, 1_704_067_200_000 + next(1 << 40)),
                2 => format!(r#","ts":{}"#, 1_704_067_200 + next(1 << 20)),
                _ => r#","ts":null"#.to_string(),
            };
            let pad = if next(2) == 0 {
                r#","venue":"X","n":12"#
            } else {
                ""
            };
            let data = match next(4) {
                0 => format!(r#"{{"bid":"{px}","ask":"{px}1"{ts}{pad}}}"#),
                1 => format!(r#"{{"last":"{px}","volume":"0.{}"{ts}{pad}}}"#, next(99)),
                2 => format!(r#"{{"price":"{px}","size":"{}"{pad}{ts}}}"#, next(500)),
                _ => format!(r#"{{{pad_}"last":"{px}"{ts}}}"#, pad_ = r#""s":"Y","#),
            };
            let envelope = format!(r#"{{"channel":"quotes.X","data":{data}}}"#);
            let at = envelope.len() - data.len() - 1;
            let (Some(fields), end) =
                tickwire_model::scan_flat_object(envelope.as_bytes(), at).unwrap()
            else {
                panic!("{data}")
            };
            let bytes = &envelope.as_bytes()[at..end];
            for (kind, schema) in [
                (SourceKind::Quote, Schema::Quote),
                (SourceKind::Trade, Schema::Trade),
            ] {
                let spans = fields.spans(bytes, schema);
                spanned += usize::from(spans.is_some());
                assert_eq!(
                    parse_tick_spanned(kind, bytes, spans.as_ref(), 9_000_000),
                    parse_tick(kind, bytes, 9_000_000),
                    "{kind:?} {data}"
                );
            }
        }
        assert_eq!(spanned, 2 * 5_000);
    }

    /// A reproducible generator for the randomised tests (Knuth's MMIX LCG); each call
    /// returns the next state.
    pub(crate) fn lcg(seed: u64) -> impl FnMut() -> u64 {
        let mut state = seed;
        move || {
            state = state
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            state
        }
    }

    #[test]
    fn ticks_from_messages() {
        let q = parse_tick(
            SourceKind::Quote,
            br#"{"bid":"1.1","ask":"1.2","ts":5}"#,
            9_000_000,
        )
        .unwrap();
        // `ts: 5` is seconds (a millisecond value that small would be January 1970).
        assert_eq!(
            q,
            Tick::quote(5_000, Decimal::new(11, 1), Decimal::new(12, 1))
        );
        // The same instant in ms, µs and ns makes the same tick.
        for ts in ["1704067200123", "1704067200123456", "1704067200123456789"] {
            let data = format!(r#"{{"bid":"1.1","ask":"1.2","ts":{ts}}}"#);
            let t = parse_tick(SourceKind::Quote, data.as_bytes(), 9_000_000).unwrap();
            assert_eq!(t.ts_ms, 1_704_067_200_123, "{ts}");
        }
        let l = parse_tick(SourceKind::Quote, br#"{"last":"3"}"#, 9_000_000).unwrap();
        assert_eq!(l, Tick::trade(9, Decimal::new(3, 0), None));
        let l = parse_tick(
            SourceKind::Quote,
            br#"{"last":"3","volume":"0.25"}"#,
            9_000_000,
        )
        .unwrap();
        assert_eq!(
            l,
            Tick::trade(9, Decimal::new(3, 0), Some(Decimal::new(25, 2)))
        );
        // With bid and ask it is a quote, as before: `volume` sizes only a last-only quote.
        let q = parse_tick(
            SourceKind::Quote,
            br#"{"bid":"1","ask":"2","last":"3","volume":"4"}"#,
            9_000_000,
        )
        .unwrap();
        assert_eq!(q, Tick::quote(9, Decimal::new(1, 0), Decimal::new(2, 0)));
        assert!(parse_tick(SourceKind::Quote, br#"{"last":"3","volume":"x"}"#, 0).is_none());
        let t = parse_tick(
            SourceKind::Trade,
            br#"{"price":"3","size":"0.5"}"#,
            9_000_000,
        )
        .unwrap();
        assert_eq!(
            t,
            Tick::trade(9, Decimal::new(3, 0), Some(Decimal::new(5, 1)))
        );
        assert!(parse_tick(SourceKind::Quote, br#"{"bid":"1"}"#, 0).is_none());
        assert!(parse_tick(SourceKind::Trade, br#"{"price":"x"}"#, 0).is_none());
    }

    /// `parse_tick` through serde and `Decimal::from_str` alone: the reference the fast
    /// scanner and the fast decimals must agree with.
    fn parse_tick_serde(kind: SourceKind, data: &[u8], log_ts_nanos: u64) -> Option<Tick> {
        let log_ms = i64::try_from(log_ts_nanos / 1_000_000).ok()?;
        tick_from_fields(
            kind,
            fields::read_serde(kind.fields(), data)?,
            log_ms,
            dec_slow,
        )
    }

    fn assert_same(kind: SourceKind, data: &[u8]) {
        let fast = parse_tick(kind, data, 7_000_000);
        let reference = parse_tick_serde(kind, data, 7_000_000);
        assert_eq!(
            fast,
            reference,
            "{kind:?} {:?}",
            String::from_utf8_lossy(data)
        );
        // The scale matters too: bars are published from the decimal text.
        if let (Some(a), Some(b)) = (fast, reference) {
            assert_eq!(format!("{a:?}"), format!("{b:?}"));
        }
    }

    const CORPUS: &[&str] = &[
        r#"{"bid":"1.2345","ask":"1.2347","ts":1795242936000}"#,
        r#"{"t":"1700000000000000","s":"12","bid":"1.08123","ask":"1.08125","pad":"xxxx"}"#,
        r#" { "bid" : "1.1" , "ask" : "1.2" } "#,
        "{\n\t\"bid\":\"1.1\",\r\n\"ask\":\"1.2\"}\n",
        r#"{"bid":"1.1","ask":"1.2","ts":-0}"#,
        r#"{"bid":"1.1","ask":"1.2","ts":0}"#,
        r#"{"bid":"1.1","ask":"1.2","ts":-5}"#,
        r#"{"bid":"1.1","ask":"1.2","ts":01}"#,
        r#"{"bid":"1.1","ask":"1.2","ts":1.0}"#,
        r#"{"bid":"1.1","ask":"1.2","ts":1e3}"#,
        r#"{"bid":"1.1","ask":"1.2","ts":"5"}"#,
        r#"{"bid":"1.1","ask":"1.2","ts":null}"#,
        r#"{"bid":"1.1","ask":"1.2","ts":9223372036854775807}"#,
        r#"{"bid":"1.1","ask":"1.2","ts":9223372036854775808}"#,
        r#"{"bid":"1.1","ask":"1.2","ts":-9223372036854775808}"#,
        r#"{"bid":"1.1","ask":"1.2","ts":1,"ts":2}"#,
        r#"{"bid":"1.1","bid":"1.3","ask":"1.2"}"#,
        r#"{"bid":"1.1","ask":null}"#,
        r#"{"bid":1.1,"ask":"1.2"}"#,
        r#"{"b\u0069d":"1.1","ask":"1.2"}"#,
        r#"{"bid":"1.\u0031","ask":"1.2"}"#,
        r#"{"bid":"1.1","ask":"1.2","x":{"y":[1,2]}}"#,
        r#"{"bid":"1.1","ask":"1.2","x":true}"#,
        r#"{"bid":"1.1","ask":"1.2","x":-1.5e-3}"#,
        r#"{"bid":"1.1","ask":"1.2","x":1.}"#,
        r#"{"bid":"1.1","ask":"1.2","x":"é"}"#,
        r#"{"bid":"1.1","ask":"1.2",}"#,
        r#"{"bid":"1.1","ask":"1.2"}x"#,
        r#"{"bid":"1.1","ask":"1.2"}}"#,
        r#"{"bid":"1.1" "ask":"1.2"}"#,
        r#"{"last":"3"}"#,
        r#"{"last":"3","bid":"1"}"#,
        r#"{"last":"3","volume":"0.5"}"#,
        r#"{"last":"3","volume":"1e3"}"#,
        r#"{"last":"3","volume":5}"#,
        r#"{"bid":"x","ask":"1"}"#,
        r#"{"bid":"","ask":"1"}"#,
        r#"{"price":"3","size":"0.5","ts":12}"#,
        r#"{"price":"3"}"#,
        r#"{"size":"3"}"#,
        r#"{"price":"3","size":null}"#,
        r#"{"price":"3","price":"4"}"#,
        r#"{}"#,
        r#"[]"#,
        r#""bid""#,
        "",
        "{",
    ];

    #[test]
    fn fast_decimals_match_from_str() {
        let mut cases: Vec<String> = [
            "0",
            "00",
            "0.0",
            "0.00000",
            "1",
            "1.",
            ".5",
            "1.5",
            "-1.5",
            "+1",
            "1e5",
            "1_0",
            "007.50",
            "1.2.3",
            "",
            " 1",
            "1 ",
            "123456789012345678",
            "1234567890123456789",
            "9999999999999999999",
            "987654321012.3035401678",
            "79228162514264337593543950335",
            "12345678901234567.8",
            "0.123456789012345678",
            "79228162514264337593543950335",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let mut rng = lcg(7);
        for _ in 0..20_000 {
            let state = rng();
            let v = state >> 20;
            let digits = v.to_string();
            let cut = (state % 25) as usize;
            let mut t = digits.clone();
            if cut < t.len() {
                t.insert(cut, '.');
            }
            cases.push(t);
        }
        for c in &cases {
            let want = Decimal::from_str(c).ok();
            let got = dec(c.as_bytes());
            assert_eq!(got, want, "{c:?}");
            // Same scale, not only the same value: bars are published from the decimal text.
            assert_eq!(format!("{got:?}"), format!("{want:?}"), "{c:?}");
        }
    }

    #[test]
    fn fast_scan_agrees_with_serde_on_edge_cases() {
        for kind in [SourceKind::Quote, SourceKind::Trade] {
            for m in CORPUS {
                assert_same(kind, m.as_bytes());
            }
        }
        // The common shapes do take the fast path.
        for m in &CORPUS[..3] {
            assert!(matches!(
                fields::scan(fields::Kind::Quote, m.as_bytes()),
                fields::Scan::Fields(_)
            ));
        }
    }

    /// Random mutations of real messages (bytes inserted, deleted or replaced with JSON-ish
    /// characters): the fast path must never answer differently from serde.
    #[test]
    fn fast_scan_agrees_with_serde_on_mutations() {
        let alphabet = b"{}[]:,\" \t\n\\0123456789-+.eEabdklstpricezun\x7f\xc3\xa9";
        let mut rng = lcg(42);
        let mut next = move |n: usize| ((rng() >> 33) as usize) % n;
        let mut fast_hits = 0;
        for _ in 0..200_000 {
            let base = CORPUS[next(3)].as_bytes();
            let mut m = base.to_vec();
            for _ in 0..1 + next(3) {
                let at = next(m.len() + 1);
                let c = alphabet[next(alphabet.len())];
                match next(3) {
                    0 => m.insert(at, c),
                    1 if at < m.len() => {
                        m.remove(at);
                    }
                    _ if at < m.len() => m[at] = c,
                    _ => m.push(c),
                }
            }
            for kind in [SourceKind::Quote, SourceKind::Trade] {
                if matches!(fields::scan(kind.fields(), &m), fields::Scan::Fields(_)) {
                    fast_hits += 1;
                }
                assert_same(kind, &m);
            }
        }
        // Most mutants are still read by the fast path, so the comparison is not vacuous.
        assert!(fast_hits > 50_000, "{fast_hits}");
    }
}
