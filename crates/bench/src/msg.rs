//! The one message shape every target carries: an L1 quote whose data holds the publisher's
//! timestamp (`t`, unix microseconds) and a per-symbol sequence number (`s`), both as decimal
//! strings so Tickwire's quote schema accepts them unchanged. Peers get the same bytes as payload.

use std::time::{SystemTime, UNIX_EPOCH};

use memchr::memmem::Finder;

/// Microseconds since the Unix epoch: the clock shared by publisher and subscribers.
pub fn now_micros() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

/// The symbol names (`S0000`…), fixed so every target sees the same channels.
pub fn symbol(i: usize) -> String {
    format!("S{i:04}")
}

/// Appends the quote JSON for one tick, padded with a `pad` field to about `size` bytes.
pub fn quote(out: &mut Vec<u8>, t: u64, seq: u64, i: usize, size: usize) {
    use std::io::Write;
    let start = out.len();
    let frac = 8000 + (seq % 997) as usize;
    // Writing into a Vec cannot fail.
    let _ = write!(
        out,
        r#"{{"t":"{t}","s":"{seq}","bid":"1.0{frac}","ask":"1.0{}""#,
        frac + i % 7 + 1
    );
    let used = out.len() - start + 1;
    if size > used + 10 {
        out.extend_from_slice(br#","pad":""#);
        out.resize(out.len() + (size - used - 9), b'x');
        out.push(b'"');
    }
    out.push(b'}');
}

/// Finds the `t` and `s` fields in a delivered message, whatever the envelope.
pub struct Fields {
    t: Finder<'static>,
    s: Finder<'static>,
}

impl Default for Fields {
    fn default() -> Self {
        Fields {
            t: Finder::new(br#""t":""#),
            s: Finder::new(br#""s":""#),
        }
    }
}

fn digits(b: &[u8]) -> Option<u64> {
    let mut v: u64 = 0;
    let mut any = false;
    for &c in b {
        if !c.is_ascii_digit() {
            break;
        }
        any = true;
        v = v.wrapping_mul(10).wrapping_add(u64::from(c - b'0'));
    }
    any.then_some(v)
}

impl Fields {
    pub fn t(&self, msg: &[u8]) -> Option<u64> {
        let at = self.t.find(msg)?;
        digits(&msg[at + 5..])
    }
    pub fn s(&self, msg: &[u8]) -> Option<u64> {
        let at = self.s.find(msg)?;
        digits(&msg[at + 5..])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quote_is_json_of_the_asked_size_and_fields_parse_back() {
        let mut v = Vec::new();
        quote(&mut v, 1_795_240_954_353_123, 42, 3, 100);
        let j: serde_json::Value = serde_json::from_slice(&v).unwrap();
        assert_eq!(j["t"], "1795240954353123");
        assert!(v.len().abs_diff(100) <= 2, "{}", v.len());
        let f = Fields::default();
        assert_eq!(f.t(&v), Some(1_795_240_954_353_123));
        assert_eq!(f.s(&v), Some(42));
    }
}
