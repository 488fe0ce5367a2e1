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
    let mut out = Vec::with_capacity(8);
    push_symbol(&mut out, i);
    // Only ASCII digits and `S` were written.
    String::from_utf8_lossy(&out).into_owned()
}

/// Appends [`symbol`]`(i)` without building a String: the publishers call it per message,
/// and the load generator shares the 2 cores with the server it measures.
pub fn push_symbol(out: &mut Vec<u8>, i: usize) {
    let mut buf = itoa::Buffer::new();
    let digits = buf.format(i);
    out.push(b'S');
    // Zero-padded to 4 digits, as `format!("S{i:04}")` would.
    out.resize(out.len() + 4usize.saturating_sub(digits.len()), b'0');
    out.extend_from_slice(digits.as_bytes());
}

/// Appends `v` in decimal without core::fmt (itoa).
pub fn push_u64(out: &mut Vec<u8>, v: u64) {
    out.extend_from_slice(itoa::Buffer::new().format(v).as_bytes());
}

/// Writes into `cmd` (cleared first) one WebSocket `publish` command (docs/protocol.md):
/// `{"id":N,"op":"publish","channel":"<prefix><symbol>","data":…}`, the data written by `data`
/// in place (no copy of it).
pub fn publish_command(
    cmd: &mut Vec<u8>,
    id: u64,
    prefix: &[u8],
    sym: usize,
    data: impl FnOnce(&mut Vec<u8>),
) {
    cmd.clear();
    cmd.extend_from_slice(br#"{"id":"#);
    push_u64(cmd, id);
    cmd.extend_from_slice(br#","op":"publish","channel":""#);
    cmd.extend_from_slice(prefix);
    push_symbol(cmd, sym);
    cmd.extend_from_slice(br#"","data":"#);
    data(cmd);
    cmd.push(b'}');
}

/// Appends the quote JSON for one tick, padded with a `pad` field to about `size` bytes.
pub fn quote(out: &mut Vec<u8>, t: u64, seq: u64, i: usize, size: usize) {
    let start = out.len();
    let frac = 8000 + seq % 997;
    out.extend_from_slice(br#"{"t":""#);
    push_u64(out, t);
    out.extend_from_slice(br#"","s":""#);
    push_u64(out, seq);
    out.extend_from_slice(br#"","bid":"1.0"#);
    push_u64(out, frac);
    out.extend_from_slice(br#"","ask":"1.0"#);
    push_u64(out, frac + (i % 7) as u64 + 1);
    out.push(b'"');
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

pub(crate) fn digits(b: &[u8]) -> Option<u64> {
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
        let mut old = Vec::new();
        {
            use std::io::Write;
            let _ = write!(
                old,
                r#"{{"t":"{}","s":"{}","bid":"1.0{}","ask":"1.0{}""#,
                1_795_240_954_353_123u64, 42, 8042, 8046
            );
        }
        assert!(v.starts_with(&old), "{}", String::from_utf8_lossy(&v));
        for i in [0, 7, 42, 9999, 10_000, 123_456] {
            let mut b = Vec::new();
            push_symbol(&mut b, i);
            assert_eq!(b, format!("S{i:04}").as_bytes());
        }
        let f = Fields::default();
        assert_eq!(f.t(&v), Some(1_795_240_954_353_123));
        assert_eq!(f.s(&v), Some(42));
    }
}
