use crate::{
    spans::{FieldSpans, RawFields, TsText},
    ModelError, Schema,
};

/// Most digits after the point a price or size may have.
pub const MAX_DECIMAL_PLACES: usize = 28;

/// The largest unscaled value (all digits, point removed) a price or size may have: 2^96 - 1.
/// With [`MAX_DECIMAL_PLACES`] this is exactly what the candle builder's 96-bit decimal holds,
/// so every value the server accepts is carried exactly everywhere (candles included), and a
/// value it could not carry is refused at publish instead of losing digits later.
pub const MAX_UNSCALED: &str = "79228162514264337593543950335";

/// Why a text is not an acceptable price or size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DecimalProblem {
    /// Not `-?digits(.digits)?`.
    NotDecimal,
    /// More than [`MAX_DECIMAL_PLACES`] digits after the point.
    TooManyPlaces,
    /// An unscaled value above [`MAX_UNSCALED`].
    TooLarge,
}

/// Is `s` an acceptable price or size: a plain decimal (optional `-`, digits, optional `.`
/// and digits; no exponent, no leading `+`, no NaN/Inf) within the exact range (at most 28
/// digits after the point, an unscaled value of at most 2^96 - 1)?
pub fn is_decimal(s: &str) -> bool {
    check_decimal(s.as_bytes()).is_ok()
}

/// [`is_decimal`] with the reason.
pub fn check_decimal(s: &[u8]) -> Result<(), DecimalProblem> {
    let b = s.strip_prefix(b"-").unwrap_or(s);
    let (int, frac) = match b.iter().position(|&c| c == b'.') {
        Some(i) => (&b[..i], &b[i + 1..]),
        None => (b, &b""[..]),
    };
    let has_point = int.len() < b.len();
    if int.is_empty()
        || !int.iter().all(u8::is_ascii_digit)
        || (has_point && frac.is_empty())
        || !frac.iter().all(u8::is_ascii_digit)
    {
        return Err(DecimalProblem::NotDecimal);
    }
    if frac.len() > MAX_DECIMAL_PLACES {
        return Err(DecimalProblem::TooManyPlaces);
    }
    // The unscaled value's digits without leading zeros, compared with 2^96 - 1 as text.
    let lead = int.iter().take_while(|&&c| c == b'0').count();
    let (int, frac) = if lead == int.len() {
        (
            &int[int.len()..],
            frac.get(frac.iter().take_while(|&&c| c == b'0').count()..)
                .unwrap_or_default(),
        )
    } else {
        (&int[lead..], frac)
    };
    let len = int.len() + frac.len();
    let max = MAX_UNSCALED.as_bytes();
    if len > max.len() {
        return Err(DecimalProblem::TooLarge);
    }
    if len == max.len() {
        let digits = int.iter().chain(frac.iter());
        for (d, m) in digits.zip(max) {
            match d.cmp(m) {
                std::cmp::Ordering::Less => return Ok(()),
                std::cmp::Ordering::Greater => return Err(DecimalProblem::TooLarge),
                std::cmp::Ordering::Equal => {}
            }
        }
    }
    Ok(())
}

/// The fields a schema checks, borrowed from the JSON text: no tree is built, and fields the
/// schema does not know are skipped by the parser.
#[derive(serde::Deserialize)]
struct Fields<'a> {
    #[serde(borrow)]
    bid: Option<&'a serde_json::value::RawValue>,
    #[serde(borrow)]
    ask: Option<&'a serde_json::value::RawValue>,
    #[serde(borrow)]
    last: Option<&'a serde_json::value::RawValue>,
    #[serde(borrow)]
    bid_size: Option<&'a serde_json::value::RawValue>,
    #[serde(borrow)]
    ask_size: Option<&'a serde_json::value::RawValue>,
    #[serde(borrow)]
    volume: Option<&'a serde_json::value::RawValue>,
    #[serde(borrow)]
    price: Option<&'a serde_json::value::RawValue>,
    #[serde(borrow)]
    size: Option<&'a serde_json::value::RawValue>,
}

/// Checks that `data` is exactly one JSON value (surrounding whitespace allowed), without
/// building it. For data no parser has seen yet, such as the binary publish batch's items; the
/// quote and trade checks of [`validate_schema_json`] already prove it on their own.
pub fn validate_json(data: &[u8]) -> Result<(), ModelError> {
    serde_json::from_slice::<serde::de::IgnoredAny>(data)
        .map(|_| ())
        .map_err(|e| ModelError::BadJson {
            reason: e.to_string(),
        })
}

/// The quote and trade fields of a flat JSON object, read once by [`scan_flat_object`] (the
/// JSON publish envelope reader skips each item's `data` with it) and checked against a
/// namespace schema later by [`validate_schema_fields`], so the text is not read twice.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SchemaFields<'a> {
    raw: Raw<'a>,
    /// Not a schema field, but read on the way for [`SchemaFields::spans`].
    ts: TsText<'a>,
}

impl SchemaFields<'_> {
    /// Where the fields of a `schema` message sit in `data`, the text they were read from (see
    /// [`FieldSpans`]): for a reader of the same bytes that would otherwise read them again.
    pub fn spans(&self, data: &[u8], schema: Schema) -> Option<FieldSpans> {
        let r = &self.raw;
        let raw = RawFields {
            quote: [r.bid, r.ask, r.last, r.bid_size, r.ask_size, r.volume],
            trade: [r.price, r.size],
            ts: self.ts,
        };
        FieldSpans::of(data, schema, &raw)
    }
}

/// Reads the flat object (string, number and literal values; strings in ASCII without escapes)
/// starting at `d[i]`: the index after its `}`, and its schema fields unless one repeats.
/// `None` for anything else: nesting, escapes, non-ASCII, a syntax error.
pub fn scan_flat_object(d: &[u8], i: usize) -> Option<(Option<SchemaFields<'_>>, usize)> {
    flat::object(d, i).map(|(f, end)| (f.map(|(raw, ts)| SchemaFields { raw, ts }), end))
}

/// [`scan_flat_object`] over a whole text: `Some` when `data` is exactly one flat object
/// (JSON whitespace around it allowed), with its schema fields unless one repeats. `Some`
/// proves `data` is one JSON value, as serde would read it.
pub fn scan_flat_json(data: &[u8]) -> Option<Option<SchemaFields<'_>>> {
    flat::whole(data).map(|f| f.map(|(raw, ts)| SchemaFields { raw, ts }))
}

/// [`validate_schema_json`] of the object `fields` were read from: the same answer, without
/// reading the text again.
pub fn validate_schema_fields(schema: Schema, fields: &SchemaFields<'_>) -> Result<(), ModelError> {
    match schema_name(schema) {
        Some(name) => check_fields(schema, name, &fields.raw),
        None => Ok(()),
    }
}

/// Checks JSON text against a namespace schema without building a `Value`; the same rules and
/// errors as the plain `Value` reference in the tests, which it is proptested against. This
/// is the publish hot path.
pub fn validate_schema_json(schema: Schema, data: &[u8]) -> Result<(), ModelError> {
    let Some(name) = schema_object(schema, data)? else {
        return Ok(());
    };
    // The common shape (a flat object of plain strings and numbers) is read by hand; anything
    // else, and every error, goes to serde, so the answer and its wording are serde's.
    let f = match flat::scan(data) {
        Some(f) => f,
        None => via_serde(data)?,
    };
    check_fields(schema, name, &f)
}

/// [`validate_schema_json`] through serde's reader alone: the reference the hand-written fast
/// path is fuzzed against (crates/wire/fuzz, `publish_batch`). Not an API.
#[doc(hidden)]
pub fn validate_schema_json_by_serde(schema: Schema, data: &[u8]) -> Result<(), ModelError> {
    let Some(name) = schema_object(schema, data)? else {
        return Ok(());
    };
    check_fields(schema, name, &via_serde(data)?)
}

/// The schema's name, `None` for a schema-free namespace; an error unless `data` starts as a
/// JSON object (serde would also read a struct from a JSON array; the schema wants an object).
fn schema_object(schema: Schema, data: &[u8]) -> Result<Option<&'static str>, ModelError> {
    let Some(name) = schema_name(schema) else {
        return Ok(None);
    };
    if data.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
        return Err(ModelError::NotAnObject { schema: name });
    }
    Ok(Some(name))
}

/// The name errors give a schema; `None` for a schema-free namespace.
fn schema_name(schema: Schema) -> Option<&'static str> {
    match schema {
        Schema::Any => None,
        Schema::Quote => Some("quote"),
        Schema::Trade => Some("trade"),
    }
}

/// The fields by serde's general reader: any JSON, and the error texts users see.
fn via_serde(data: &[u8]) -> Result<Raw<'_>, ModelError> {
    let f: Fields<'_> = serde_json::from_slice(data).map_err(|e| ModelError::BadJson {
        reason: e.to_string(),
    })?;
    fn raw(v: Option<&serde_json::value::RawValue>) -> Option<&[u8]> {
        v.map(|v| v.get().as_bytes())
    }
    Ok(Raw {
        bid: raw(f.bid),
        ask: raw(f.ask),
        last: raw(f.last),
        bid_size: raw(f.bid_size),
        ask_size: raw(f.ask_size),
        volume: raw(f.volume),
        price: raw(f.price),
        size: raw(f.size),
    })
}

/// The raw JSON text of each field a schema checks (`None`: absent). Bytes, not `str`: the
/// hand-written reader only ever sees ASCII and serde's raw values are valid UTF-8, so nothing
/// needs a UTF-8 check except an error message (`from_utf8_lossy` there is lossless).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct Raw<'a> {
    bid: Option<&'a [u8]>,
    ask: Option<&'a [u8]>,
    last: Option<&'a [u8]>,
    bid_size: Option<&'a [u8]>,
    ask_size: Option<&'a [u8]>,
    volume: Option<&'a [u8]>,
    price: Option<&'a [u8]>,
    size: Option<&'a [u8]>,
}

fn check_fields(schema: Schema, name: &'static str, f: &Raw<'_>) -> Result<(), ModelError> {
    let check = |field: &str, v: Option<&[u8]>| -> Result<(), ModelError> {
        let Some(text) = v else { return Ok(()) };
        if text == b"null" {
            return Ok(());
        }
        // A decimal string never needs escapes, so the raw text between the quotes is it.
        let problem = match text {
            [b'"', inner @ .., b'"'] => check_decimal(inner).err(),
            _ => Some(DecimalProblem::NotDecimal),
        };
        let value = || String::from_utf8_lossy(text).into_owned();
        match problem {
            None => Ok(()),
            Some(DecimalProblem::NotDecimal) => Err(ModelError::BadDecimal {
                field: field.to_string(),
                value: value(),
            }),
            Some(DecimalProblem::TooManyPlaces) => Err(ModelError::DecimalOutOfRange {
                field: field.to_string(),
                value: value(),
                why: format!("more than {MAX_DECIMAL_PLACES} digits after the point"),
            }),
            Some(DecimalProblem::TooLarge) => Err(ModelError::DecimalOutOfRange {
                field: field.to_string(),
                value: value(),
                why: format!(
                    "its digits without the point make a number above {MAX_UNSCALED} (2^96 - 1)"
                ),
            }),
        }
    };
    match schema {
        Schema::Quote => {
            if f.bid.is_none() && f.ask.is_none() && f.last.is_none() {
                return Err(ModelError::MissingField {
                    field: "bid, ask or last".to_string(),
                    schema: name,
                });
            }
            check("bid", f.bid)?;
            check("ask", f.ask)?;
            check("last", f.last)?;
            check("bid_size", f.bid_size)?;
            check("ask_size", f.ask_size)?;
            check("volume", f.volume)
        }
        _ => {
            if f.price.is_none() {
                return Err(ModelError::MissingField {
                    field: "price".to_string(),
                    schema: name,
                });
            }
            check("price", f.price)?;
            check("size", f.size)
        }
    }
}

/// A hand-written reader for the shape nearly every quote and trade has: one flat object whose
/// values are strings without escapes, numbers, `true`, `false` or `null`, in ASCII. It says
/// `None` whenever it is not sure (nesting, escapes, non-ASCII, a repeated schema field, any
/// syntax error), and the caller asks serde: an accepted text is one serde accepts with the
/// same fields, and every refusal is worded by serde. Publishing is the hot path, and serde's
/// general reader cost several times the append.
mod flat {
    use super::Raw;
    use crate::jsonlex::{flat_object, skip_ws};
    use crate::spans::TsText;

    /// The fields of `data` when the whole of it is one flat object and none repeats.
    pub(super) fn scan(data: &[u8]) -> Option<Raw<'_>> {
        whole(data)?.map(|(raw, _)| raw)
    }

    /// The whole of `data` as one flat object (see [`object`]).
    pub(super) fn whole(data: &[u8]) -> Option<Option<(Raw<'_>, TsText<'_>)>> {
        let (fields, end) = object(data, skip_ws(data, 0))?;
        (skip_ws(data, end) == data.len()).then_some(fields)
    }

    /// The flat object at `d[i]` and the index after it, with its schema fields and the raw
    /// text of its `ts`. The fields are `None` when a schema field repeats: the object is
    /// still valid JSON (a raw value may repeat keys), but serde refuses it as a quote or
    /// trade, with its own words. Strings with escapes or non-ASCII bytes make the whole
    /// answer `None` (`jsonlex::string` refuses them).
    pub(super) fn object(d: &[u8], i: usize) -> Option<(Option<(Raw<'_>, TsText<'_>)>, usize)> {
        let mut r = Raw::default();
        let mut ts = TsText::Absent;
        let mut seen = 0u8;
        let mut repeated = false;
        let end = flat_object(d, i, |key, start, end| {
            if key == b"ts" {
                // Not a schema field: a repeat only makes it unusable (serde ignores it).
                let Some(text) = d.get(start..end) else {
                    return false;
                };
                ts = match ts {
                    TsText::Absent => TsText::Once(text),
                    _ => TsText::Repeated,
                };
                return true;
            }
            let (bit, slot) = match key {
                b"bid" => (1, &mut r.bid),
                b"ask" => (2, &mut r.ask),
                b"last" => (4, &mut r.last),
                b"bid_size" => (8, &mut r.bid_size),
                b"ask_size" => (16, &mut r.ask_size),
                b"volume" => (32, &mut r.volume),
                b"price" => (64, &mut r.price),
                b"size" => (128, &mut r.size),
                _ => (0, &mut None),
            };
            repeated |= seen & bit != 0;
            seen |= bit;
            let Some(text) = d.get(start..end) else {
                return false;
            };
            // serde reads `null` into an `Option` as absent.
            if text != b"null" {
                *slot = Some(text);
            }
            true
        })?;
        Some(((!repeated).then_some((r, ts)), end))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};

    const QUOTE_DECIMALS: [&str; 6] = ["bid", "ask", "last", "bid_size", "ask_size", "volume"];
    const TRADE_DECIMALS: [&str; 2] = ["price", "size"];

    /// The reference: the schema rules written plainly over a `serde_json::Value`.
    /// `validate_schema_json` (the production check) is proptested to agree with it. JSON
    /// numbers are refused for price fields: a number would pass through binary floating point
    /// in most clients.
    fn validate_schema(schema: Schema, data: &Value) -> Result<(), ModelError> {
        let (name, fields, required): (&'static str, &[&str], &[&str]) = match schema {
            Schema::Any => return Ok(()),
            Schema::Quote => ("quote", &QUOTE_DECIMALS, &[]),
            Schema::Trade => ("trade", &TRADE_DECIMALS, &["price"]),
        };
        let obj = data
            .as_object()
            .ok_or(ModelError::NotAnObject { schema: name })?;
        for f in required {
            if !obj.contains_key(*f) {
                return Err(ModelError::MissingField {
                    field: (*f).to_string(),
                    schema: name,
                });
            }
        }
        if schema == Schema::Quote && !["bid", "ask", "last"].iter().any(|f| obj.contains_key(*f)) {
            return Err(ModelError::MissingField {
                field: "bid, ask or last".to_string(),
                schema: name,
            });
        }
        for f in fields {
            match obj.get(*f) {
                None | Some(Value::Null) => {}
                Some(Value::String(s)) if is_decimal(s) => {}
                Some(Value::String(s))
                    if check_decimal(s.as_bytes()) != Err(DecimalProblem::NotDecimal) =>
                {
                    let why = match check_decimal(s.as_bytes()) {
                        Err(DecimalProblem::TooManyPlaces) => format!("more than {MAX_DECIMAL_PLACES} digits after the point"),
                        _ => format!("its digits without the point make a number above {MAX_UNSCALED} (2^96 - 1)"),
                    };
                    return Err(ModelError::DecimalOutOfRange {
                        field: (*f).to_string(),
                        value: Value::String(s.clone()).to_string(),
                        why,
                    });
                }
                Some(v) => {
                    return Err(ModelError::BadDecimal {
                        field: (*f).to_string(),
                        value: v.to_string(),
                    })
                }
            }
        }
        Ok(())
    }

    #[test]
    fn decimals() {
        for ok in [
            "0",
            "1",
            "-1",
            "1.5",
            "1.08412",
            "000.10",
            "123456789012345678",
        ] {
            assert!(is_decimal(ok), "{ok}");
        }
        for bad in [
            "", "-", ".5", "5.", "1e5", "+1", "1.2.3", "NaN", "inf", " 1", "1,5", "0x10",
        ] {
            assert!(!is_decimal(bad), "{bad}");
        }
    }

    /// The exact range: what a 96-bit decimal at scale 0..=28 holds, and nothing else.
    #[test]
    fn decimal_range_is_the_exact_one() {
        for ok in [
            "79228162514264337593543950335",
            "-79228162514264337593543950335",
            "7.9228162514264337593543950335",
            "0.0000000000000000000000000001",
            "0000000000000000000000000000079228162514264337593543950335",
            "10.0000000000000000001",
            "123456789.123456789",
            "0.00000012",
        ] {
            assert_eq!(check_decimal(ok.as_bytes()), Ok(()), "{ok}");
        }
        for (bad, why) in [
            ("79228162514264337593543950336", DecimalProblem::TooLarge),
            ("7.9228162514264337593543950336", DecimalProblem::TooLarge),
            (
                "12345678901234567890123456789.123456789",
                DecimalProblem::TooLarge,
            ),
            (
                "1234567890123456789012345678901234567890",
                DecimalProblem::TooLarge,
            ),
            (
                "0.00000000000000000000000000001",
                DecimalProblem::TooManyPlaces,
            ),
            (
                "1.50000000000000000000000000000",
                DecimalProblem::TooManyPlaces,
            ),
            ("1.", DecimalProblem::NotDecimal),
        ] {
            assert_eq!(check_decimal(bad.as_bytes()), Err(why), "{bad}");
        }
        let e = validate_schema_json(
            Schema::Trade,
            br#"{"price":"12345678901234567890123456789.123456789"}"#,
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("79228162514264337593543950335"), "{e}");
        assert!(!e.contains("not a decimal string"), "{e}");
    }

    #[test]
    fn flat_reader_takes_the_common_shapes() {
        for t in [
            r#"{"bid":"1.08123","ask":"1.08125","ts":1732180000000}"#,
            r#" { "price" : "10.5" , "size":"3", "side":"buy", "n": -1.5e-3, "ok": true, "x": null } "#,
            "{}",
        ] {
            let fast = flat::scan(t.as_bytes());
            assert!(fast.is_some(), "{t}");
            assert_eq!(
                fast.ok_or(()),
                via_serde(t.as_bytes()).map_err(|_| ()),
                "{t}"
            );
        }
        // Not sure: serde decides (and words the error).
        for t in [
            r#"{"bid":"1.1","bid":"1.2"}"#,
            r#"{"bid":"1\u002e1"}"#,
            r#"{"a":{"b":1}}"#,
            r#"{"a":[1]}"#,
            r#"{"a":"é"}"#,
            r#"{"a":01}"#,
            r#"{"a":1.}"#,
            r#"{"a":1}x"#,
            "{}",
            r#"{"a":1,}"#,
        ] {
            assert_eq!(flat::scan(t.as_bytes()), None, "{t}");
        }
    }

    proptest::proptest! {
        /// Whenever the hand-written reader answers, serde reads the same text the same way.
        #[test]
        fn flat_reader_agrees_with_serde(
            parts in proptest::collection::vec((
                proptest::prop_oneof!["bid", "ask", "last", "price", "size", "volume", "ts", "[a-z_]{0,6}"],
                proptest::prop_oneof![
                    "\"[0-9]{1,3}(\\.[0-9]{1,4})?\"",
                    "\"[ -~]{0,6}\"",
                    "-?(0|[1-9][0-9]{0,3})(\\.[0-9]{1,3})?([eE][+-]?[0-9]{1,3})?",
                    "[0-9.eE+-]{1,5}",
                    "true|false|null|nul|tru",
                    "1e400|-0|-",
                    "\\{\\}|\\[\\]",
                ],
                "[ \t\n\r]{0,2}",
            ), 0..6),
            tail in "[ \t\n\r,}x]{0,2}",
        ) {
            let mut t = String::from("{");
            for (i, (k, v, ws)) in parts.iter().enumerate() {
                if i > 0 { t.push(','); }
                t.push_str(&format!("{ws}\"{k}\"{ws}:{ws}{v}{ws}"));
            }
            t.push('}');
            t.push_str(&tail);
            if let Some(fast) = flat::scan(t.as_bytes()) {
                proptest::prop_assert_eq!(Ok(fast), via_serde(t.as_bytes()), "{}", t);
            }
        }

        /// The byte validator and the Value validator agree on every input.
        #[test]
        fn byte_and_value_validators_agree(
            bid in proptest::option::of(proptest::prop_oneof!["[0-9]{1,3}(\\.[0-9]{1,4})?", "[a-z.]{0,4}", "-?[0-9]\\.[0-9]e5"]),
            num in proptest::option::of(-1000.0f64..1000.0),
            extra in proptest::bool::ANY,
            schema in proptest::prop_oneof![proptest::strategy::Just(Schema::Quote), proptest::strategy::Just(Schema::Trade)],
        ) {
            let mut o = serde_json::Map::new();
            if let Some(b) = &bid { o.insert("bid".into(), b.clone().into()); o.insert("price".into(), b.clone().into()); }
            if let Some(n) = num { o.insert("ask".into(), n.into()); o.insert("size".into(), n.into()); }
            if extra { o.insert("pad".into(), json!({"nested": [1, "x"]})); }
            let v = serde_json::Value::Object(o);
            let text = v.to_string();
            proptest::prop_assert_eq!(
                validate_schema(schema, &v).map_err(|e| e.to_string()),
                validate_schema_json(schema, text.as_bytes()).map_err(|e| e.to_string())
            );
        }
    }

    #[test]
    fn byte_validator_refuses_non_objects() {
        assert!(matches!(
            validate_schema_json(Schema::Quote, b" [1]"),
            Err(ModelError::NotAnObject { .. })
        ));
        assert!(matches!(
            validate_schema_json(Schema::Trade, b"\"x\""),
            Err(ModelError::NotAnObject { .. })
        ));
        assert!(
            validate_schema_json(Schema::Quote, br#"{"bid":"1.5","bid":"2"}"#).is_err(),
            "duplicate field"
        );
        assert!(validate_schema_json(Schema::Any, b"[1]").is_ok());
    }

    #[test]
    fn quote_schema() {
        assert!(validate_schema(Schema::Quote, &json!({"bid":"1.1","ask":"1.2"})).is_ok());
        assert!(validate_schema(Schema::Quote, &json!({"last":"3"})).is_ok());
        assert!(matches!(
            validate_schema(Schema::Quote, &json!({"bid":1.1})),
            Err(ModelError::BadDecimal { .. })
        ));
        assert!(matches!(
            validate_schema(Schema::Quote, &json!({"bid":"abc"})),
            Err(ModelError::BadDecimal { .. })
        ));
        assert!(matches!(
            validate_schema(Schema::Quote, &json!({"foo":"1"})),
            Err(ModelError::MissingField { .. })
        ));
        assert!(matches!(
            validate_schema(Schema::Quote, &json!([1])),
            Err(ModelError::NotAnObject { .. })
        ));
        assert!(matches!(
            validate_schema(Schema::Trade, &json!({"size":"1"})),
            Err(ModelError::MissingField { .. })
        ));
        assert!(validate_schema(Schema::Any, &json!(1.5)).is_ok());
    }
}
