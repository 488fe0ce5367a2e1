//! Where a flat quote or trade object's fields sit in its text, as the JSON publish edge found
//! them while checking the schema, so that the live candle projection, which gets the same
//! bytes from the append feed, need not read the text again.
//!
//! Why: the candle projection's own reading of each quote was the largest part of its thread
//! under JSON ingest once it took its records from memory (bench/results/ingest.md, "The edge
//! hands the candle projection its fields").
//!
//! A [`FieldSpans`] exists only where reading the text again could not give anything else:
//! every field of its kind was read once, as a plain JSON string (`null` and absent are the
//! same), and `ts` as an integer that fits an `i64`; any other value (a number for a price, a
//! repeated `ts`, a string with escapes, a message over 64 KiB) gives none, and the projection
//! reads the text as before. It is small on purpose (30 bytes): it travels with every item of
//! a publish batch, and a first, 112-byte version cost more in moving items than it saved.

use crate::{jsonlex::integer, Schema};

/// Which fields a [`FieldSpans`] holds, in its slots.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SpanKind {
    /// `bid`, `ask`, `last`, `bid_size`, `ask_size`, `volume`, then `ts`.
    Quote,
    /// `price`, `size`, then `ts` (in the last slot).
    Trade,
}

/// Slots: six fields at most, and `ts` last.
const SLOTS: usize = 7;
const TS: usize = SLOTS - 1;

/// Where the string contents of a quote's or a trade's fields, and the text of its `ts`, sit in
/// a message's data. Offsets are into the data the spans were made for; [`FieldSpans::get`]
/// checks them against the data it is given.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FieldSpans {
    kind: SpanKind,
    /// Bit `i`: slot `i` holds a field (else it is absent or `null`).
    present: u8,
    /// `(start, end)` in the data.
    at: [(u16, u16); SLOTS],
}

/// The raw JSON text of each field a schema checks, with quotes, as the flat reader keeps it
/// (`None`: absent or `null`), and of `ts`.
pub(crate) struct RawFields<'a> {
    pub quote: [Option<&'a [u8]>; 6],
    pub trade: [Option<&'a [u8]>; 2],
    pub ts: TsText<'a>,
}

/// The `ts` field as the flat reader met it.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TsText<'a> {
    #[default]
    Absent,
    Once(&'a [u8]),
    /// More than once: serde refuses the message as a quote or trade.
    Repeated,
}

impl FieldSpans {
    /// The spans of `raw` for a namespace of `schema`, whose slices point into `data`; `None`
    /// for a schema-free namespace, or unless every field of the kind is a plain JSON string
    /// (or `null`), `ts` an integer that fits, and every slice lies inside `data`.
    pub(crate) fn of(data: &[u8], schema: Schema, raw: &RawFields<'_>) -> Option<FieldSpans> {
        let (kind, fields): (SpanKind, &[Option<&[u8]>]) = match schema {
            Schema::Any => return None,
            Schema::Quote => (SpanKind::Quote, &raw.quote),
            Schema::Trade => (SpanKind::Trade, &raw.trade),
        };
        let mut spans = FieldSpans {
            kind,
            present: 0,
            at: [(0, 0); SLOTS],
        };
        for (i, v) in fields.iter().enumerate() {
            let Some(v) = v else { continue };
            let [b'"', inner @ .., b'"'] = v else {
                return None;
            };
            spans.set(i, data, inner)?;
        }
        match raw.ts {
            TsText::Absent | TsText::Once(b"null") => {}
            TsText::Once(t) => {
                if integer(t, 0)?.1 != t.len() {
                    return None;
                }
                spans.set(TS, data, t)?;
            }
            TsText::Repeated => return None,
        }
        Some(spans)
    }

    /// Records `v`, a slice of `data`, in slot `i`; `None` if it is not inside `data` or past
    /// what a `u16` offset reaches.
    fn set(&mut self, i: usize, data: &[u8], v: &[u8]) -> Option<()> {
        let start = (v.as_ptr() as usize).checked_sub(data.as_ptr() as usize)?;
        let end = start.checked_add(v.len())?;
        if end > data.len() {
            return None;
        }
        *self.at.get_mut(i)? = (u16::try_from(start).ok()?, u16::try_from(end).ok()?);
        self.present |= 1 << i;
        Some(())
    }

    /// Which fields these are.
    pub fn kind(&self) -> SpanKind {
        self.kind
    }

    /// Slot `i`'s text in `data` (the data these spans were made for): `Some(None)` when the
    /// field is absent, `None` if the span does not fit `data`.
    #[inline]
    pub fn get<'a>(&self, data: &'a [u8], i: usize) -> Option<Option<&'a [u8]>> {
        if self.present & (1 << i) == 0 {
            return Some(None);
        }
        let (start, end) = *self.at.get(i)?;
        data.get(start as usize..end as usize).map(Some)
    }

    /// The message's `ts` read from `data`: `Some(None)` when it has none, `None` if the span
    /// does not fit `data` or is not the integer it was.
    #[inline]
    pub fn ts(&self, data: &[u8]) -> Option<Option<i64>> {
        match self.get(data, TS)? {
            None => Some(None),
            Some(t) => match integer(t, 0)? {
                (v, end) if end == t.len() => Some(Some(v)),
                _ => None,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn quote<'a>(bid: &'a [u8], ask: &'a [u8], ts: TsText<'a>) -> RawFields<'a> {
        RawFields {
            quote: [Some(bid), Some(ask), None, None, None, None],
            trade: [None, None],
            ts,
        }
    }

    #[test]
    fn spans_only_plain_strings_and_an_integer_ts_inside_the_data() {
        assert!(std::mem::size_of::<Option<FieldSpans>>() <= 32);
        let data = br#"{"bid":"1.5","ask":"2","ts":17,"n":1}"#;
        let (bid, ask, ts) = (&data[7..12], &data[19..22], &data[28..30]);
        let s = FieldSpans::of(data, Schema::Quote, &quote(bid, ask, TsText::Once(ts))).unwrap();
        assert_eq!(s.kind(), SpanKind::Quote);
        assert_eq!(s.get(data, 0), Some(Some(&b"1.5"[..])));
        assert_eq!(s.get(data, 1), Some(Some(&b"2"[..])));
        assert_eq!(s.get(data, 2), Some(None));
        assert_eq!(s.ts(data), Some(Some(17)));
        // Data too short for the spans: none.
        assert_eq!(s.get(&data[..10], 0), None);
        // A schema-free namespace: none.
        assert!(FieldSpans::of(data, Schema::Any, &quote(bid, ask, TsText::Absent)).is_none());
        // `null` ts is no ts; anything else that is not an `i64` gives no spans.
        let null = FieldSpans::of(data, Schema::Quote, &quote(bid, ask, TsText::Once(b"null")));
        assert_eq!(null.map(|s| s.ts(data)), Some(Some(None)));
        for bad in [
            TsText::Once(&b"1.5"[..]),
            TsText::Once(&b"\"1\""[..]),
            TsText::Once(&b"99999999999999999999"[..]),
            TsText::Repeated,
        ] {
            let got = FieldSpans::of(data, Schema::Quote, &quote(bid, ask, bad));
            assert!(got.is_none(), "{bad:?}");
        }
        // A number where a string belongs: none; the trade's fields for a trade only.
        let num = br#"{"bid":15,"price":"1"}"#;
        let raw = RawFields {
            quote: [Some(&num[7..9]), None, None, None, None, None],
            trade: [Some(&num[18..21]), None],
            ts: TsText::Absent,
        };
        assert!(FieldSpans::of(num, Schema::Quote, &raw).is_none());
        let t = FieldSpans::of(num, Schema::Trade, &raw).unwrap();
        assert_eq!(
            (t.kind(), t.get(num, 0)),
            (SpanKind::Trade, Some(Some(&b"1"[..])))
        );
        // A slice from other memory: none.
        let other = br#""3""#.to_vec();
        let o = quote(&other, ask, TsText::Absent);
        assert!(FieldSpans::of(data, Schema::Quote, &o).is_none());
    }
}
