use crate::{ModelError, Schema};

/// Is `s` a plain decimal: optional `-`, digits, optional `.` and digits? No exponent, no
/// leading `+`, no NaN/Inf: exactly what a fixed-point parser downstream accepts.
pub fn is_decimal(s: &str) -> bool {
    let b = s.strip_prefix('-').unwrap_or(s).as_bytes();
    if b.is_empty() || b.len() > 40 {
        return false;
    }
    let (int, frac) = match b.iter().position(|&c| c == b'.') {
        Some(i) => (&b[..i], Some(&b[i + 1..])),
        None => (b, None),
    };
    !int.is_empty()
        && int.iter().all(u8::is_ascii_digit)
        && frac.is_none_or(|f| !f.is_empty() && f.iter().all(u8::is_ascii_digit))
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

/// Checks JSON text against a namespace schema without building a `Value`; the same rules and
/// errors as the plain `Value` reference in the tests, which it is proptested against. This
/// is the publish hot path.
pub fn validate_schema_json(schema: Schema, data: &[u8]) -> Result<(), ModelError> {
    let name = match schema {
        Schema::Any => return Ok(()),
        Schema::Quote => "quote",
        Schema::Trade => "trade",
    };
    // serde would also read a struct from a JSON array; the schema wants an object.
    if data.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
        return Err(ModelError::NotAnObject { schema: name });
    }
    let f: Fields<'_> = serde_json::from_slice(data).map_err(|e| ModelError::BadJson {
        reason: e.to_string(),
    })?;
    let check = |field: &str, v: Option<&serde_json::value::RawValue>| -> Result<(), ModelError> {
        let Some(v) = v else { return Ok(()) };
        let text = v.get();
        if text == "null" {
            return Ok(());
        }
        // A decimal string never needs escapes, so the raw text between the quotes is it.
        let ok = text.len() >= 2
            && text.starts_with('"')
            && text.ends_with('"')
            && is_decimal(&text[1..text.len() - 1]);
        if ok {
            Ok(())
        } else {
            Err(ModelError::BadDecimal {
                field: field.to_string(),
                value: text.to_string(),
            })
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

    proptest::proptest! {
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
