//! Zero-copy iteration over `tag=value<SOH>` fields.

use crate::error::{Error, Result};
use crate::frame::SOH;
use crate::tags;

/// One field; `value` borrows the input buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Field<'a> {
    /// Tag number.
    pub tag: u32,
    /// Raw value bytes, never empty, without the SOH.
    pub value: &'a [u8],
    /// Offset of the field's first byte in the buffer given to the iterator.
    pub offset: usize,
    /// The value as text when the whole buffer was already known to be UTF-8, which saves a
    /// validation per field on the hot path.
    text: Option<&'a str>,
}

impl<'a> Field<'a> {
    /// The value as UTF-8 text.
    #[inline]
    pub fn as_str(&self) -> Result<&'a str> {
        if let Some(t) = self.text {
            return Ok(t);
        }
        std::str::from_utf8(self.value).map_err(|_| Error::InvalidValue {
            tag: self.tag,
            reason: "not valid UTF-8",
        })
    }

    /// The value as an unsigned integer (FIX int/SeqNum/NumInGroup/Length, no sign).
    pub fn as_u64(&self) -> Result<u64> {
        parse_u64(self.value).ok_or(Error::InvalidValue {
            tag: self.tag,
            reason: "not an unsigned integer",
        })
    }

    /// The value as a single character (FIX char).
    pub fn as_char(&self) -> Result<u8> {
        match self.value {
            [c] => Ok(*c),
            _ => Err(Error::InvalidValue {
                tag: self.tag,
                reason: "expected a single character",
            }),
        }
    }

    /// The value as a FIX Boolean (`Y`/`N`).
    pub fn as_bool(&self) -> Result<bool> {
        match self.value {
            b"Y" => Ok(true),
            b"N" => Ok(false),
            _ => Err(Error::InvalidValue {
                tag: self.tag,
                reason: "expected Y or N",
            }),
        }
    }
}

/// Parses ASCII digits; `None` for empty, non-digit or overflowing input.
pub(crate) fn parse_u64(v: &[u8]) -> Option<u64> {
    if v.is_empty() || v.len() > 19 {
        return None;
    }
    let mut n = 0u64;
    for &b in v {
        if !b.is_ascii_digit() {
            return None;
        }
        n = n * 10 + u64::from(b - b'0');
    }
    Some(n)
}

/// Iterator over the fields of `buf[pos..end]`.
///
/// It is `Clone` and cheap to copy, which is how the group decoders peek one field ahead.
/// Length-prefixed data fields (e.g. RawDataLength 95 / RawData 96) are read by length, so an
/// SOH inside them does not split the field.
#[derive(Debug, Clone)]
pub struct FieldIter<'a> {
    buf: &'a [u8],
    pos: usize,
    end: usize,
    pending_data: Option<(u32, usize)>,
    /// `buf[start..end]` as text, when known to be UTF-8.
    text: Option<&'a str>,
    text_base: usize,
}

impl<'a> FieldIter<'a> {
    /// Iterates `buf[start..end]`; offsets in the fields are relative to `buf`.
    pub fn new(buf: &'a [u8], start: usize, end: usize) -> Self {
        FieldIter {
            buf,
            pos: start,
            end: end.min(buf.len()),
            pending_data: None,
            text: None,
            text_base: start,
        }
    }

    /// Like [`FieldIter::new`] where `text` is `buf[start..end]` already validated as UTF-8.
    pub(crate) fn new_text(buf: &'a [u8], text: &'a str, start: usize, end: usize) -> Self {
        FieldIter {
            text: Some(text),
            ..Self::new(buf, start, end)
        }
    }

    /// Moves back to a field returned earlier, so it is read again (a group decoder handing a
    /// field back to the enclosing level).
    pub fn rewind(&mut self, field: &Field<'_>) {
        self.pos = field.offset;
        self.pending_data = None;
    }

    /// Offset of the next field.
    pub fn position(&self) -> usize {
        self.pos
    }

    #[cold]
    fn malformed(&mut self, offset: usize, reason: &'static str) -> Error {
        // Stop after the first error so a caller looping on `next` terminates.
        self.pos = self.end;
        Error::MalformedField { offset, reason }
    }

    // Inlined so the returned Field stays in registers: returned through memory it caused a
    // store-forwarding stall that cost more than the parsing itself.
    #[inline(always)]
    fn read(&mut self) -> Result<Field<'a>> {
        let start = self.pos;
        let mut i = start;
        let mut tag = 0u32;
        loop {
            let Some(&b) = self.buf[..self.end].get(i) else {
                return Err(self.malformed(start, "field without '='"));
            };
            if b == b'=' {
                break;
            }
            if !b.is_ascii_digit() || i - start >= 9 {
                return Err(self.malformed(start, "tag is not a number"));
            }
            tag = tag * 10 + u32::from(b - b'0');
            i += 1;
        }
        if i == start || self.buf[start] == b'0' {
            return Err(self.malformed(start, "tag is empty or has a leading zero"));
        }
        let value_start = i + 1;
        let value_end = match self.pending_data.take() {
            Some((data_tag, len)) if data_tag == tag => {
                let e = value_start + len;
                if e >= self.end || self.buf[e] != SOH {
                    return Err(self.malformed(start, "data field length does not match"));
                }
                e
            }
            // Values are mostly a few bytes long: a plain scan beats memchr's dispatch here.
            _ => match self.buf[value_start.min(self.end)..self.end]
                .iter()
                .position(|&b| b == SOH)
            {
                Some(n) => value_start + n,
                None => return Err(self.malformed(start, "field not terminated by SOH")),
            },
        };
        if value_end == value_start {
            return Err(self.malformed(start, "tag specified without a value"));
        }
        let value = &self.buf[value_start..value_end];
        if let Some(data_tag) = tags::data_field_for_length(tag) {
            let len = parse_u64(value)
                .and_then(|n| usize::try_from(n).ok())
                .ok_or_else(|| self.malformed(start, "data length is not a number"))?;
            self.pending_data = Some((data_tag, len));
        }
        self.pos = value_end + 1;
        Ok(Field {
            tag,
            value,
            offset: start,
            // SOH and '=' are ASCII, so field bounds are always char boundaries.
            text: self
                .text
                .and_then(|t| t.get(value_start - self.text_base..value_end - self.text_base)),
        })
    }
}

impl<'a> Iterator for FieldIter<'a> {
    type Item = Result<Field<'a>>;

    #[inline]
    fn next(&mut self) -> Option<Self::Item> {
        if self.pos >= self.end {
            return None;
        }
        Some(self.read())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn iterates_fields_and_data_fields() {
        let buf = b"35=A\x0195=3\x0196=a\x01b\x0158=x\x01";
        let f: Vec<_> = FieldIter::new(buf, 0, buf.len())
            .collect::<Result<_>>()
            .unwrap();
        let got: Vec<(u32, &[u8])> = f.iter().map(|f| (f.tag, f.value)).collect();
        assert_eq!(
            got,
            vec![(35, &b"A"[..]), (95, b"3"), (96, b"a\x01b"), (58, b"x")]
        );
    }

    #[test]
    fn rejects_malformed_fields() {
        for bad in [
            &b"=1\x01"[..],
            b"a=1\x01",
            b"35=\x01",
            b"35=A",
            b"035=A\x01",
            b"35A\x01",
        ] {
            let r: Result<Vec<_>> = FieldIter::new(bad, 0, bad.len()).collect();
            assert!(r.is_err(), "{bad:?}");
        }
    }
}
