//! Reading quote and trade fields out of a publication's JSON data: the one place that knows
//! which keys a quote (`bid ask last bid_size ask_size volume ts`) and a trade (`price size ts`)
//! have. Values are the raw text of JSON strings (decimals stay text); `ts` is an integer.
//!
//! Feeds send flat objects of ASCII strings and numbers, which [`read`] takes in one pass with
//! the publish path's lexer (`tickwire_model::jsonlex`); anything it cannot read exactly as
//! serde does (escapes, nesting, non-ASCII, duplicate keys, syntax errors) goes to serde, which
//! decides. The two are tested against each other on edge cases and random mutations.

use serde::Deserialize;
use tickwire_model::{
    jsonlex::{integer, object, scalar, skip_ws, string},
    FieldSpans, SpanKind,
};

/// Which message shape to read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `bid`, `ask`, `last`, `bid_size`, `ask_size`, `volume`, `ts`.
    Quote,
    /// `price`, `size`, `ts`.
    Trade,
}

/// The fields of one message, borrowed from its data (string contents without quotes).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Fields<'a> {
    pub bid: Option<&'a [u8]>,
    pub ask: Option<&'a [u8]>,
    pub last: Option<&'a [u8]>,
    pub bid_size: Option<&'a [u8]>,
    pub ask_size: Option<&'a [u8]>,
    /// A quote's traded size at `last` (the CSV import's `volume` column).
    pub volume: Option<&'a [u8]>,
    pub price: Option<&'a [u8]>,
    pub size: Option<&'a [u8]>,
    /// The message's own event time, as sent (an integer; its unit is the feed's).
    pub ts: Option<i64>,
}

/// The fields of `data` read as `kind`; `None` when it is not such a message (not JSON, a
/// field of the wrong type, a duplicate field, a trade without `price`).
pub fn read(kind: Kind, data: &[u8]) -> Option<Fields<'_>> {
    match scan(kind, data) {
        Scan::Fields(f) => Some(f),
        Scan::Unusual => read_serde(kind, data),
    }
}

/// The fields of `data` read as `kind` from where the JSON publish edge found them
/// ([`FieldSpans`], made for this `data`): what [`read`] gives, without reading the text again
/// (tested against it). `None` when the spans are of the other kind or do not fit `data`, or a
/// trade has no `price` (which [`read`] refuses too).
#[inline]
pub fn from_spans<'a>(kind: Kind, spans: &FieldSpans, data: &'a [u8]) -> Option<Fields<'a>> {
    let ts = spans.ts(data)?;
    let at = |i| spans.get(data, i);
    Some(match (kind, spans.kind()) {
        (Kind::Quote, SpanKind::Quote) => Fields {
            bid: at(0)?,
            ask: at(1)?,
            last: at(2)?,
            bid_size: at(3)?,
            ask_size: at(4)?,
            volume: at(5)?,
            ts,
            ..Fields::default()
        },
        (Kind::Trade, SpanKind::Trade) => Fields {
            price: Some(at(0)??),
            size: at(1)?,
            ts,
            ..Fields::default()
        },
        _ => return None,
    })
}

#[derive(Deserialize)]
struct QuoteMsg<'a> {
    #[serde(borrow, default)]
    bid: Option<&'a str>,
    #[serde(borrow, default)]
    ask: Option<&'a str>,
    #[serde(borrow, default)]
    last: Option<&'a str>,
    #[serde(borrow, default)]
    bid_size: Option<&'a str>,
    #[serde(borrow, default)]
    ask_size: Option<&'a str>,
    #[serde(borrow, default)]
    volume: Option<&'a str>,
    #[serde(default)]
    ts: Option<i64>,
}

#[derive(Deserialize)]
struct TradeMsg<'a> {
    #[serde(borrow)]
    price: &'a str,
    #[serde(borrow, default)]
    size: Option<&'a str>,
    #[serde(default)]
    ts: Option<i64>,
}

/// The reference reading: serde into borrowed structs (so escaped strings, which cannot be
/// borrowed, are refused).
pub fn read_serde(kind: Kind, data: &[u8]) -> Option<Fields<'_>> {
    match kind {
        Kind::Quote => {
            let q: QuoteMsg<'_> = serde_json::from_slice(data).ok()?;
            Some(Fields {
                bid: q.bid.map(str::as_bytes),
                ask: q.ask.map(str::as_bytes),
                last: q.last.map(str::as_bytes),
                bid_size: q.bid_size.map(str::as_bytes),
                ask_size: q.ask_size.map(str::as_bytes),
                volume: q.volume.map(str::as_bytes),
                ts: q.ts,
                ..Fields::default()
            })
        }
        Kind::Trade => {
            let t: TradeMsg<'_> = serde_json::from_slice(data).ok()?;
            Some(Fields {
                price: Some(t.price.as_bytes()),
                size: t.size.map(str::as_bytes),
                ts: t.ts,
                ..Fields::default()
            })
        }
    }
}

/// What the fast reader made of a message.
#[derive(Debug)]
pub enum Scan<'a> {
    /// A flat object read completely; exactly what [`read_serde`] gives.
    Fields(Fields<'a>),
    /// Anything else: ask serde.
    Unusual,
}

/// The fast path of [`read`] (public for tests and benches that check it is taken).
pub fn scan(kind: Kind, data: &[u8]) -> Scan<'_> {
    let mut f = Fields::default();
    let end = object(data, skip_ws(data, 0), |key, i| {
        let slot = match (kind, key) {
            (Kind::Quote, b"bid") => Some(&mut f.bid),
            (Kind::Quote, b"ask") => Some(&mut f.ask),
            (Kind::Quote, b"last") => Some(&mut f.last),
            (Kind::Quote, b"bid_size") => Some(&mut f.bid_size),
            (Kind::Quote, b"ask_size") => Some(&mut f.ask_size),
            (Kind::Quote, b"volume") => Some(&mut f.volume),
            (Kind::Trade, b"price") => Some(&mut f.price),
            (Kind::Trade, b"size") => Some(&mut f.size),
            _ => None,
        };
        if let Some(slot) = slot {
            // serde rejects a duplicate field; leave that (and non-strings) to it.
            let (v, end) = string(data, i).filter(|_| slot.is_none())?;
            *slot = Some(v);
            Some(end)
        } else if key == b"ts" {
            let (v, end) = integer(data, i).filter(|_| f.ts.is_none())?;
            f.ts = Some(v);
            Some(end)
        } else {
            // A field serde ignores: any scalar; nesting is left to serde.
            scalar(data, i)
        }
    });
    // Only whitespace may follow the object (serde's `from_slice` rule), and a trade needs
    // its price (serde's struct has no default for it).
    match end {
        Some(end) if skip_ws(data, end) == data.len() => {
            if kind == Kind::Trade && f.price.is_none() {
                Scan::Unusual
            } else {
                Scan::Fields(f)
            }
        }
        _ => Scan::Unusual,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tickwire_model::Schema;

    /// A reproducible generator (Knuth's MMIX LCG).
    fn lcg(seed: u64) -> impl FnMut() -> u64 {
        let mut state = seed;
        move || {
            state = state
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            state
        }
    }

    pub(crate) const CORPUS: &[&str] = &[
        r#"{"bid":"1.2345","ask":"1.2347","ts":1795242936000}"#,
        r#"{"t":"1700000000000000","s":"12","bid":"1.08123","ask":"1.08125","pad":"xxxx"}"#,
        r#" { "bid" : "1.1" , "ask" : "1.2" } "#,
        "{\n\t\"bid\":\"1.1\",\r\n\"ask\":\"1.2\"}\n",
        r#"{"bid":"1.1","ask":"1.2","bid_size":"5","ask_size":"7"}"#,
        r#"{"last":"1.1","volume":"0.25","ts":1795242936000}"#,
        r#"{"bid":"1.1","ask":"1.2","bid_size":5}"#,
        r#"{"last":"1.1","volume":3}"#,
        r#"{"last":"1.1","volume":"1","volume":"2"}"#,
        r#"{"bid":"1.1","ask":"1.2","ts":-0}"#,
        r#"{"bid":"1.1","ask":"1.2","ts":01}"#,
        r#"{"bid":"1.1","ask":"1.2","ts":1.0}"#,
        r#"{"bid":"1.1","ask":"1.2","ts":9223372036854775808}"#,
        r#"{"bid":"1.1","ask":"1.2","ts":-9223372036854775808}"#,
        r#"{"bid":"1.1","ask":"1.2","ts":1,"ts":2}"#,
        r#"{"bid":"1.1","bid":"1.3","ask":"1.2"}"#,
        r#"{"b\u0069d":"1.1","ask":"1.2"}"#,
        r#"{"bid":"1.1","ask":"1.2","x":{"y":[1,2]}}"#,
        r#"{"bid":"1.1","ask":"1.2",}"#,
        r#"{"bid":"1.1","ask":"1.2"}x"#,
        r#"{"price":"3","size":"0.5","ts":12}"#,
        r#"{"price":"3"}"#,
        r#"{"size":"3"}"#,
        r#"{"price":"3","price":"4"}"#,
        r#"{}"#,
        r#"[]"#,
        "",
        "{",
    ];

    /// Where the publish edge's reading of `m` (inside a batch envelope, as the edge reads it)
    /// gives spans for a quote or a trade namespace, that they give what [`read`] does; for
    /// which kinds it gave any (bit 0: quote, bit 1: trade).
    fn spans_agree_with_read(m: &[u8]) -> u8 {
        let mut envelope = br#"{"channel":"quotes.X","data":"#.to_vec();
        let at = envelope.len();
        envelope.extend_from_slice(m);
        envelope.extend_from_slice(br#","n":1}"#);
        let Some((Some(fields), end)) = tickwire_model::scan_flat_object(&envelope, at) else {
            return 0;
        };
        let data = &envelope[at..end];
        let mut spanned = 0;
        for (bit, kind, schema) in [
            (1, Kind::Quote, Schema::Quote),
            (2, Kind::Trade, Schema::Trade),
        ] {
            let Some(spans) = fields.spans(data, schema) else {
                continue;
            };
            spanned |= bit;
            assert_eq!(
                from_spans(kind, &spans, data),
                read(kind, data),
                "{kind:?} {:?}",
                String::from_utf8_lossy(data)
            );
            // Spans of one kind are not read as the other.
            let other = if kind == Kind::Quote {
                Kind::Trade
            } else {
                Kind::Quote
            };
            assert_eq!(from_spans(other, &spans, data), None);
        }
        spanned
    }

    #[test]
    fn fast_reader_agrees_with_serde_on_edge_cases() {
        for kind in [Kind::Quote, Kind::Trade] {
            for m in CORPUS {
                assert_eq!(
                    read(kind, m.as_bytes()),
                    read_serde(kind, m.as_bytes()),
                    "{kind:?} {m}"
                );
            }
        }
        let spanned: Vec<u8> = CORPUS
            .iter()
            .map(|m| spans_agree_with_read(m.trim().as_bytes()))
            .collect();
        // Plain quotes and trades give spans of both kinds (19's trailing `x` is outside the
        // object the edge reads: its envelope reader refuses the batch); a number in a quote
        // field gives trade spans only (6, 7); repeats (8, 14, 15, 23), a `ts` that is not an
        // `i64` (9-12), escapes, nesting and syntax errors give none.
        let expected = [
            3, 3, 3, 3, 3, 3, 2, 2, 0, 0, 0, 0, 0, 3, 0, 0, 0, 0, 0, 3, 3, 3, 3, 0, 3, 0, 0, 0,
        ];
        assert_eq!(spanned, expected);
        for m in &CORPUS[..6] {
            assert!(
                matches!(scan(Kind::Quote, m.as_bytes()), Scan::Fields(_)),
                "{m}"
            );
        }
        let f = read(Kind::Quote, CORPUS[4].as_bytes()).unwrap();
        assert_eq!(f.bid_size, Some(&b"5"[..]));
        assert_eq!(f.ask_size, Some(&b"7"[..]));
        let f = read(Kind::Quote, CORPUS[5].as_bytes()).unwrap();
        assert_eq!((f.last, f.volume), (Some(&b"1.1"[..]), Some(&b"0.25"[..])));
        // A trade's size is `size`; `volume` is not one of its fields.
        assert_eq!(
            read(Kind::Trade, br#"{"price":"1","volume":"2"}"#)
                .unwrap()
                .size,
            None
        );
    }

    /// Random mutations of real messages: the fast path never answers differently from serde.
    #[test]
    fn fast_reader_agrees_with_serde_on_mutations() {
        let alphabet = b"{}[]:,\" \t\n\\0123456789-+.eEabdklstpricezun_\x7f\xc3\xa9";
        let mut rng = lcg(42);
        let mut next = move |n: usize| ((rng() >> 33) as usize) % n;
        let (mut fast_hits, mut spanned) = (0, 0);
        for _ in 0..100_000 {
            let base = CORPUS[next(6)].as_bytes();
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
            spanned += usize::from(spans_agree_with_read(&m) != 0);
            for kind in [Kind::Quote, Kind::Trade] {
                if matches!(scan(kind, &m), Scan::Fields(_)) {
                    fast_hits += 1;
                }
                assert_eq!(
                    read(kind, &m),
                    read_serde(kind, &m),
                    "{kind:?} {:?}",
                    String::from_utf8_lossy(&m)
                );
            }
        }
        assert!(fast_hits > 25_000, "{fast_hits}");
        assert!(spanned > 10_000, "{spanned}");
    }
}
