//! The W3C Trace Context `traceparent` header: `version-traceid-parentid-flags`, lowercase
//! hex (<https://www.w3.org/TR/trace-context/#traceparent-header>). A header that does not
//! parse is ignored (the request starts a new trace), never refused: tracing must not change
//! what a publisher gets.

/// A parsed `traceparent`: the caller's trace and span, and whether it sampled the trace.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TraceParent {
    pub trace_id: [u8; 16],
    pub span_id: [u8; 8],
    pub sampled: bool,
}

impl TraceParent {
    /// Reads a header value; `None` when it is not a valid `traceparent`.
    pub fn parse(value: &[u8]) -> Option<TraceParent> {
        let value = value.trim_ascii();
        let version = hex_byte(value.get(0..2)?)?;
        // Version ff is forbidden; a later version may append fields after a '-', which this
        // reader ignores (the spec asks parsers of version 00 to do exactly that).
        if version == 0xff {
            return None;
        }
        if version == 0 && value.len() != 55 {
            return None;
        }
        if value.len() < 55 || (value.len() > 55 && value.get(55) != Some(&b'-')) {
            return None;
        }
        if value[2] != b'-' || value[35] != b'-' || value[52] != b'-' {
            return None;
        }
        let mut trace_id = [0u8; 16];
        for (i, b) in trace_id.iter_mut().enumerate() {
            *b = hex_byte(&value[3 + 2 * i..5 + 2 * i])?;
        }
        let mut span_id = [0u8; 8];
        for (i, b) in span_id.iter_mut().enumerate() {
            *b = hex_byte(&value[36 + 2 * i..38 + 2 * i])?;
        }
        let flags = hex_byte(&value[53..55])?;
        // All-zero ids are invalid by the spec.
        if trace_id == [0; 16] || span_id == [0; 8] {
            return None;
        }
        Some(TraceParent {
            trace_id,
            span_id,
            sampled: flags & 1 == 1,
        })
    }
}

/// Two lowercase hex digits (the spec allows no uppercase).
fn hex_byte(two: &[u8]) -> Option<u8> {
    let digit = |c: u8| match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    };
    match two {
        [h, l] => Some(digit(*h)? << 4 | digit(*l)?),
        _ => None,
    }
}

/// Lowercase hex of `bytes` (for logs and tests).
pub fn hex(bytes: &[u8]) -> String {
    const D: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(D[(b >> 4) as usize] as char);
        s.push(D[(b & 15) as usize] as char);
    }
    s
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    const GOOD: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn a_valid_traceparent_gives_its_ids_and_sampled_flag() {
        let p = TraceParent::parse(GOOD.as_bytes()).unwrap();
        assert_eq!(hex(&p.trace_id), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(hex(&p.span_id), "00f067aa0ba902b7");
        assert!(p.sampled);
        let unsampled = GOOD.replace("-01", "-00");
        assert!(!TraceParent::parse(unsampled.as_bytes()).unwrap().sampled);
        // Surrounding whitespace is optional whitespace in an HTTP header value.
        assert!(TraceParent::parse(format!(" {GOOD} ").as_bytes()).is_some());
        // A future version may carry more fields after a dash.
        let future = GOOD.replacen("00-", "cc-", 1) + "-what-ever";
        assert!(TraceParent::parse(future.as_bytes()).is_some());
    }

    #[test]
    fn invalid_traceparents_are_ignored() {
        let bad = [
            "",
            "garbage",
            &GOOD[..54],
            &format!("{GOOD}0"),
            &format!("{GOOD}-extra"), // version 00 has exactly four fields
            &GOOD.replacen("00-", "ff-", 1),
            &GOOD.to_uppercase(),
            &GOOD.replace("4bf92f3577b34da6a3ce929d0e0e4736", &"0".repeat(32)),
            &GOOD.replace("00f067aa0ba902b7", &"0".repeat(16)),
            &GOOD.replace("-00f067", "_00f067"),
            &GOOD.replace("4736-", "473g-"),
        ];
        for b in bad {
            assert_eq!(TraceParent::parse(b.as_bytes()), None, "{b:?}");
        }
    }
}
