use serde_json::Value;

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

const QUOTE_DECIMALS: [&str; 6] = ["bid", "ask", "last", "bid_size", "ask_size", "volume"];
const TRADE_DECIMALS: [&str; 2] = ["price", "size"];

/// Checks `data` against a namespace schema. JSON numbers are refused for price fields:
/// a number would pass through binary floating point in most clients.
pub fn validate_schema(schema: Schema, data: &Value) -> Result<(), ModelError> {
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

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

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
