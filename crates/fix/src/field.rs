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
        parse_u64(self.value).ok_or_else(|| invalid(self.tag, "not an unsigned integer"))
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

/// Built only on failure: `ok_or(Error::..)` would build (and drop, through its drop glue) an
/// error per field even on success, which profiled at 9 % of a decode.
#[cold]
pub(crate) fn invalid(tag: u32, reason: &'static str) -> Error {
    Error::InvalidValue { tag, reason }
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

/// Where one field lies in the buffer; what [`Scanner`] yields. Plain offsets, so it stays in
/// registers on the decoders' hot path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct FieldSpan {
    pub(crate) tag: u32,
    /// Offset of the field's first (tag) byte.
    pub(crate) start: usize,
    pub(crate) value_start: usize,
    /// Offset of the terminating SOH.
    pub(crate) value_end: usize,
}

/// The SOH block a [`Scanner`] last computed, kept in a parsed message's header index: the
/// header scan ends by reading the first body field, so the block at the header/body boundary
/// is already known when the body decoders start there (see [`Scanner::suspend`]). Small on
/// purpose: it is copied with every `RawMessage`, and past 128 bytes those copies became
/// `memcpy` calls (7 % of a decode).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ScanResume {
    /// `u32::MAX`: none (nothing computed yet, or an offset past `u32`).
    block: u32,
    sohs: u64,
}

impl Default for ScanResume {
    fn default() -> Self {
        ScanResume {
            block: u32::MAX,
            sohs: 0,
        }
    }
}

/// Why a field did not scan. One byte instead of a full [`Error`] on the hot path; it becomes
/// [`Error::MalformedField`] (through `?`) only when decoding fails.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ScanError {
    offset: usize,
    reason: ScanReason,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ScanReason {
    NoEquals,
    TagNotNumber,
    TagEmptyOrLeadingZero,
    DataLengthMismatch,
    NotTerminated,
    EmptyValue,
    DataLengthNotNumber,
}

impl From<ScanError> for Error {
    #[cold]
    fn from(e: ScanError) -> Error {
        let reason = match e.reason {
            ScanReason::NoEquals => "field without '='",
            ScanReason::TagNotNumber => "tag is not a number",
            ScanReason::TagEmptyOrLeadingZero => "tag is empty or has a leading zero",
            ScanReason::DataLengthMismatch => "data field length does not match",
            ScanReason::NotTerminated => "field not terminated by SOH",
            ScanReason::EmptyValue => "tag specified without a value",
            ScanReason::DataLengthNotNumber => "data length is not a number",
        };
        Error::MalformedField {
            offset: e.offset,
            reason,
        }
    }
}

/// The one field scanner: a single pass per field that parses the tag as it goes and records
/// the value's bounds, with nothing copied or validated beyond FIX syntax. [`FieldIter`] and
/// the typed decoders are built on it.
///
/// Length-prefixed data fields (e.g. RawDataLength 95 / RawData 96) are read by length, so an
/// SOH inside them does not split the field.
#[derive(Debug, Clone)]
pub(crate) struct Scanner<'a> {
    /// The input cut at the end of the scanned range, so one bounds check covers both.
    buf: &'a [u8],
    pos: usize,
    pending_data: Option<(u32, usize)>,
    /// SOH positions of the 64-byte block at `block` (bit i = byte `block + i`). Finding each
    /// field's end by searching from the previous one chains every field's latency onto the
    /// next (load, compare, count, add: ~20 cycles a field); with the block's SOHs found in a
    /// batch of independent word operations, the next field's end is one bit-scan away.
    /// (128-byte blocks in a `u128` halved the refills but made every field's bit-scan dearer:
    /// 240 -> 261 ns per X.)
    block: usize,
    sohs: u64,
}

impl<'a> Scanner<'a> {
    pub(crate) fn new(buf: &'a [u8], start: usize, end: usize) -> Self {
        Scanner {
            buf: &buf[..end.min(buf.len())],
            pos: start,
            pending_data: None,
            block: usize::MAX,
            sohs: 0,
        }
    }

    /// The SOH block computed so far, for [`Scanner::resume`].
    pub(crate) fn suspend(&self) -> ScanResume {
        match u32::try_from(self.block) {
            Ok(block) => ScanResume {
                block,
                sohs: self.sohs,
            },
            Err(_) => ScanResume::default(),
        }
    }

    /// Like [`Scanner::new`], reusing the SOH block of a scanner over the same `buf[..end]`.
    /// Starting at a field boundary with no data field pending is what `new` does too; the
    /// block only saves recomputing it.
    #[inline]
    pub(crate) fn resume(buf: &'a [u8], start: usize, end: usize, r: ScanResume) -> Self {
        Scanner {
            block: if r.block == u32::MAX {
                usize::MAX
            } else {
                r.block as usize
            },
            sohs: r.sohs,
            ..Scanner::new(buf, start, end)
        }
    }

    /// Moves back to a field returned earlier, so it is read again (a group decoder handing a
    /// field back to the enclosing level).
    #[inline]
    pub(crate) fn rewind(&mut self, start: usize) {
        self.pos = start;
        self.pending_data = None;
    }

    pub(crate) fn position(&self) -> usize {
        self.pos
    }

    /// The next field, `Ok(None)` at the end. After an error the scanner is exhausted, so a
    /// caller looping on it terminates.
    // Inlined so the span stays in registers: returned through memory it caused a
    // store-forwarding stall that cost more than the parsing itself.
    #[inline(always)]
    pub(crate) fn next_span(&mut self) -> Result<Option<FieldSpan>, ScanError> {
        if self.pos >= self.buf.len() {
            return Ok(None);
        }
        match self.scan() {
            Ok(f) => {
                self.pos = f.value_end + 1;
                Ok(Some(f))
            }
            Err(reason) => {
                let offset = self.pos;
                self.pos = self.buf.len();
                Err(ScanError { offset, reason })
            }
        }
    }

    /// Offset of the first SOH at or after `from`.
    #[inline(always)]
    fn next_soh(&mut self, from: usize) -> Option<usize> {
        let mut base = from & !63;
        if base != self.block {
            self.block = base;
            self.sohs = soh_bits(self.buf, base);
        }
        let mut bits = self.sohs & (u64::MAX << (from - base));
        loop {
            if bits != 0 {
                return Some(base + bits.trailing_zeros() as usize);
            }
            base += 64;
            if base >= self.buf.len() {
                return None;
            }
            self.block = base;
            self.sohs = soh_bits(self.buf, base);
            bits = self.sohs;
        }
    }

    #[inline(always)]
    fn scan(&mut self) -> Result<FieldSpan, ScanReason> {
        let buf = self.buf;
        let start = self.pos;
        let (tag, i) = match buf.get(start..).and_then(quick_tag) {
            Some((tag, len)) => (tag, start + len),
            None => slow_tag(buf, start)?,
        };
        let value_start = i + 1;
        let value_end = match self.pending_data.take() {
            Some((data_tag, len)) if data_tag == tag => {
                let e = value_start.saturating_add(len);
                if buf.get(e) != Some(&SOH) {
                    return Err(ScanReason::DataLengthMismatch);
                }
                e
            }
            _ => self
                .next_soh(value_start)
                .ok_or(ScanReason::NotTerminated)?,
        };
        if value_end == value_start {
            return Err(ScanReason::EmptyValue);
        }
        if let Some(data_tag) = tags::data_field_for_length(tag) {
            let len = parse_u64(&buf[value_start..value_end])
                .and_then(|n| usize::try_from(n).ok())
                .ok_or(ScanReason::DataLengthNotNumber)?;
            self.pending_data = Some((data_tag, len));
        }
        Ok(FieldSpan {
            tag,
            start,
            value_start,
            value_end,
        })
    }
}

// Word-at-a-time ("SWAR") search: values are mostly under 8 bytes, so one 8-byte load answers
// where they end; a byte loop took several cycles per byte, which dominated decode.
const ONES: u64 = 0x0101_0101_0101_0101;
const HIGHS: u64 = 0x8080_8080_8080_8080;

/// Index of the first byte of `w` (little-endian order) equal to `b`.
#[inline(always)]
fn first_byte_eq(w: u64, b: u8) -> Option<usize> {
    let x = w ^ (ONES * u64::from(b));
    // Exact for the lowest zero byte; borrows can only flag bytes above it.
    let m = x.wrapping_sub(ONES) & !x & HIGHS;
    (m != 0).then(|| (m.trailing_zeros() / 8) as usize)
}

#[inline(always)]
fn load8(b: &[u8]) -> Option<u64> {
    b.first_chunk::<8>().map(|c| u64::from_le_bytes(*c))
}

/// Tag and its length for the common 2- and 3-digit tags followed by '=' (every tag of the
/// header and of V/W/X/Y but 7, 8 and 9); `None` sends the caller to [`slow_tag`], which reads
/// any other width and produces the errors. Direct byte tests beat a word-wide search here:
/// the width pattern repeats from message to message, so the branches predict well.
#[inline(always)]
fn quick_tag(rest: &[u8]) -> Option<(u32, usize)> {
    let [a, b, c, d, ..] = *rest else {
        return None;
    };
    let (a, b) = (a.wrapping_sub(b'0'), b.wrapping_sub(b'0'));
    // A leading zero is an error, which the slow path reports.
    if a == 0 || a > 9 || b > 9 {
        return None;
    }
    let ab = u32::from(a) * 10 + u32::from(b);
    if c == b'=' {
        return Some((ab, 2));
    }
    let c = c.wrapping_sub(b'0');
    if c > 9 || d != b'=' {
        return None;
    }
    Some((ab * 10 + u32::from(c), 3))
}

/// The byte-by-byte tag reader: for tags [`quick_tag`] does not take, and for the errors.
/// Returns the tag and the offset of its '='.
#[inline(never)]
fn slow_tag(buf: &[u8], start: usize) -> Result<(u32, usize), ScanReason> {
    let mut i = start;
    let mut tag = 0u32;
    loop {
        let Some(&b) = buf.get(i) else {
            return Err(ScanReason::NoEquals);
        };
        if b == b'=' {
            break;
        }
        let d = b.wrapping_sub(b'0');
        if d > 9 || i - start >= 9 {
            return Err(ScanReason::TagNotNumber);
        }
        tag = tag * 10 + u32::from(d);
        i += 1;
    }
    if i == start || buf[start] == b'0' {
        return Err(ScanReason::TagEmptyOrLeadingZero);
    }
    Ok((tag, i))
}

/// Offset of the first SOH at or after `from`, for a one-off search.
#[inline(always)]
pub(crate) fn find_soh(buf: &[u8], mut from: usize) -> Option<usize> {
    loop {
        let rest = buf.get(from..)?;
        match load8(rest) {
            Some(w) => match first_byte_eq(w, SOH) {
                Some(n) => return Some(from + n),
                None => from += 8,
            },
            None => return rest.iter().position(|&b| b == SOH).map(|n| from + n),
        }
    }
}

/// Bit i set when `buf[base + i]` is SOH, for the 64 bytes from `base` (fewer at the end).
#[inline]
fn soh_bits(buf: &[u8], base: usize) -> u64 {
    let block = buf.get(base..).unwrap_or_default();
    match block.first_chunk::<64>() {
        Some(full) => soh_bits_64(full),
        None => soh_bits_partial(block),
    }
}

/// [`soh_bits`] for the last, partial block of a message (fewer than 64 bytes). Words are
/// assembled in registers: copying the bytes into a zeroed array and loading that back stalled
/// on store forwarding (~15 cycles).
#[inline(never)]
fn soh_bits_partial(block: &[u8]) -> u64 {
    let mut t = 0u64;
    for (k, c) in block.chunks(8).take(8).enumerate() {
        // Missing bytes are zero, which is not SOH.
        let w = match c.first_chunk::<8>() {
            Some(c) => u64::from_le_bytes(*c),
            None => c.iter().rev().fold(0, |acc, &b| acc << 8 | u64::from(b)),
        };
        t |= soh_flags(w) >> (7 - k);
    }
    transpose_8x8(t)
}

#[inline(always)]
fn soh_bits_64(block: &[u8; 64]) -> u64 {
    // Word k's SOH flags go to bit k of each byte (an 8x8 bit matrix, byte j bit k standing
    // for offset 8k + j), then one bit-matrix transpose puts bit 8k + j in place. Gathering
    // each word's 8 flags on its own (shifts and ORs, or a multiply, which the vectoriser makes
    // slow on SSE2) took ~12 ns a block against ~7 ns this way (microbenchmark); SSE2's
    // byte-compare-and-movemask would be faster still but needs `unsafe`.
    let mut t = 0u64;
    for (k, c) in block.chunks_exact(8).enumerate() {
        let mut a = [0u8; 8];
        a.copy_from_slice(c);
        t |= soh_flags(u64::from_le_bytes(a)) >> (7 - k);
    }
    transpose_8x8(t)
}

/// 0x80 in each byte of `w` that is SOH (an exact zero-byte test of `w ^ SOH…`, unlike the
/// lowest-only trick).
#[inline(always)]
fn soh_flags(w: u64) -> u64 {
    const LOW7: u64 = 0x7F7F_7F7F_7F7F_7F7F;
    let x = w ^ (ONES * u64::from(SOH));
    !(((x & LOW7) + LOW7) | x | LOW7)
}

/// Transposes the 8x8 bit matrix whose row j is byte j, by swapping 1x1, 2x2 and 4x4
/// sub-blocks across the diagonal.
#[inline(always)]
fn transpose_8x8(mut t: u64) -> u64 {
    let mut y = (t ^ (t >> 7)) & 0x00AA_00AA_00AA_00AA;
    t ^= y ^ (y << 7);
    y = (t ^ (t >> 14)) & 0x0000_CCCC_0000_CCCC;
    t ^= y ^ (y << 14);
    y = (t ^ (t >> 28)) & 0x0000_0000_F0F0_F0F0;
    t ^ y ^ (y << 28)
}

/// The text of a range of a buffer, validated as UTF-8 once, so each field value is a
/// bounds-checked slice of it rather than a validation of its own.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Text<'a> {
    buf: &'a [u8],
    text: Option<&'a str>,
    base: usize,
}

impl<'a> Text<'a> {
    /// `buf[start..end]` checked once; a range that is not UTF-8 (FIX nearly always is ASCII)
    /// falls back to checking each value asked for.
    pub(crate) fn new(buf: &'a [u8], start: usize, end: usize) -> Self {
        Text {
            buf,
            text: buf
                .get(start..end)
                .and_then(|b| std::str::from_utf8(b).ok()),
            base: start,
        }
    }

    /// Text already validated: `text` is `buf[..text.len()]`.
    pub(crate) fn from_text(buf: &'a [u8], text: &'a str) -> Self {
        Text {
            buf,
            text: Some(text),
            base: 0,
        }
    }

    /// The value of `f` as text.
    #[inline(always)]
    pub(crate) fn value(&self, f: &FieldSpan) -> Result<&'a str> {
        // SOH and '=' are ASCII, so field bounds are always char boundaries.
        let t = match self.text {
            Some(t) => t.get(f.value_start - self.base..f.value_end - self.base),
            None => std::str::from_utf8(&self.buf[f.value_start..f.value_end]).ok(),
        };
        t.ok_or_else(|| invalid(f.tag, "not valid UTF-8"))
    }

    /// The raw value bytes of `f`.
    #[inline(always)]
    pub(crate) fn bytes(&self, f: &FieldSpan) -> &'a [u8] {
        &self.buf[f.value_start..f.value_end]
    }
}

/// Iterator over the fields of `buf[pos..end]`.
///
/// It is `Clone` and cheap to copy, which is how the group decoders peek one field ahead.
/// Length-prefixed data fields (e.g. RawDataLength 95 / RawData 96) are read by length, so an
/// SOH inside them does not split the field.
#[derive(Debug, Clone)]
pub struct FieldIter<'a> {
    scanner: Scanner<'a>,
    /// `buf[start..end]` as text, when known to be UTF-8.
    text: Option<&'a str>,
    text_base: usize,
}

impl<'a> FieldIter<'a> {
    /// Iterates `buf[start..end]`; offsets in the fields are relative to `buf`.
    pub fn new(buf: &'a [u8], start: usize, end: usize) -> Self {
        FieldIter {
            scanner: Scanner::new(buf, start, end),
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
        self.scanner.rewind(field.offset);
    }

    /// Offset of the next field.
    pub fn position(&self) -> usize {
        self.scanner.position()
    }
}

impl<'a> Iterator for FieldIter<'a> {
    type Item = Result<Field<'a>>;

    #[inline]
    fn next(&mut self) -> Option<Self::Item> {
        match self.scanner.next_span() {
            Ok(None) => None,
            Err(e) => Some(Err(e.into())),
            Ok(Some(f)) => Some(Ok(Field {
                tag: f.tag,
                value: &self.scanner.buf[f.value_start..f.value_end],
                offset: f.start,
                text: self.text.and_then(|t| {
                    t.get(f.value_start - self.text_base..f.value_end - self.text_base)
                }),
            })),
        }
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
    fn soh_bits_match_a_byte_loop() {
        let mut buf = Vec::new();
        let mut r = 7u32;
        for _ in 0..300 {
            // A mix of SOH, bytes that differ from it in one bit, and high bytes.
            r = r.wrapping_mul(1_103_515_245).wrapping_add(12_345);
            buf.push([1u8, 0, 3, 0x81, 0xff, b'=', 1, b'7'][(r >> 16) as usize % 8]);
        }
        // Every base, so full, partial and empty halves of a block all occur; and every cut.
        for end in [300, 257, 200, 130, 64, 3, 0] {
            let buf = &buf[..end];
            for base in 0..=end {
                let want = buf
                    .iter()
                    .enumerate()
                    .skip(base)
                    .take(64)
                    .filter(|(_, &b)| b == SOH)
                    .fold(0u64, |m, (i, _)| m | 1 << (i - base));
                assert_eq!(soh_bits(buf, base), want, "end {end} base {base}");
            }
        }
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
