//! Framing: finds where one message ends in a byte stream and checks BodyLength and CheckSum.

use crate::error::{Error, Result};

/// The FIX field delimiter.
pub const SOH: u8 = 0x01;

/// Default upper bound on one message, header and trailer included.
pub const DEFAULT_MAX_MESSAGE_SIZE: usize = 64 * 1024;

// Longest BeginString we accept ("FIXT.1.1" is 8); bounds the search for its SOH in garbage.
const MAX_BEGIN_STRING: usize = 16;
// BodyLength digits; 9 digits is already far past any sane max_size.
const MAX_BODY_LENGTH_DIGITS: usize = 9;
// "10=NNN<SOH>"
const TRAILER_LEN: usize = 7;

/// Where the parts of a framed message are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Frame {
    /// Total length of the message, trailer included: the bytes the caller may consume.
    pub len: usize,
    /// Offset of the first byte after `9=NNN<SOH>` (the MsgType field).
    pub body_start: usize,
    /// Offset of the `10=` trailer.
    pub trailer_start: usize,
}

/// Checks the message at the start of `buf` and returns where it ends.
///
/// `Err(Error::Incomplete)` means `buf` is a valid prefix so far: read more. Any other error
/// means the bytes can never become a valid message (the caller may resynchronise with
/// [`find_message_start`]). A declared size above `max_size` is refused before the bytes
/// arrive, so a hostile BodyLength cannot make the caller buffer gigabytes.
pub fn frame(buf: &[u8], max_size: usize) -> Result<Frame> {
    let mut pos = expect_literal(buf, 0, b"8=", || Error::BadBeginString { offset: 0 })?;
    let search_end = buf.len().min(pos + MAX_BEGIN_STRING + 1);
    // A byte loop: the value is a few bytes ("FIX.4.4"), too short for memchr's dispatch.
    let soh = match buf[pos..search_end].iter().position(|&b| b == SOH) {
        Some(i) => pos + i,
        None if search_end - pos > MAX_BEGIN_STRING => {
            return Err(Error::BadBeginString { offset: pos })
        }
        None => return Err(Error::Incomplete),
    };
    if soh == pos {
        return Err(Error::BadBeginString { offset: pos });
    }
    pos = expect_literal(buf, soh + 1, b"9=", || Error::BadBodyLength {
        reason: "BodyLength (9) must be the second field",
    })?;
    let mut body_len = 0usize;
    let digits_start = pos;
    loop {
        let Some(&b) = buf.get(pos) else {
            return Err(Error::Incomplete);
        };
        match b {
            b'0'..=b'9' => {
                if pos - digits_start == MAX_BODY_LENGTH_DIGITS {
                    return Err(Error::BadBodyLength {
                        reason: "too many digits",
                    });
                }
                body_len = body_len * 10 + usize::from(b - b'0');
            }
            SOH if pos > digits_start => break,
            SOH => return Err(Error::BadBodyLength { reason: "empty" }),
            _ => {
                return Err(Error::BadBodyLength {
                    reason: "not a number",
                })
            }
        }
        pos += 1;
    }
    let body_start = pos + 1;
    let trailer_start = body_start + body_len;
    let len = trailer_start + TRAILER_LEN;
    if len > max_size {
        return Err(Error::TooLarge {
            size: len,
            max: max_size,
        });
    }
    if buf.len() < len {
        return Err(Error::Incomplete);
    }
    // The last body field must end with SOH, otherwise BodyLength points inside a field.
    if body_len == 0 || buf[trailer_start - 1] != SOH {
        return Err(Error::BadTrailer {
            offset: trailer_start,
            reason: "BodyLength does not end on a field boundary",
        });
    }
    let t = &buf[trailer_start..len];
    if t[0] != b'1'
        || t[1] != b'0'
        || t[2] != b'='
        || t[6] != SOH
        || !t[3..6].iter().all(u8::is_ascii_digit)
    {
        return Err(Error::BadTrailer {
            offset: trailer_start,
            reason: "expected 10=NNN<SOH>",
        });
    }
    let declared =
        u32::from(t[3] - b'0') * 100 + u32::from(t[4] - b'0') * 10 + u32::from(t[5] - b'0');
    let computed = checksum(&buf[..trailer_start]);
    if declared != u32::from(computed) {
        return Err(Error::ChecksumMismatch {
            declared: u8::try_from(declared).unwrap_or(u8::MAX),
            computed,
        });
    }
    Ok(Frame {
        len,
        body_start,
        trailer_start,
    })
}

/// FIX CheckSum: the byte sum modulo 256.
pub fn checksum(bytes: &[u8]) -> u8 {
    // A u32 accumulator lets the compiler vectorise; wrapping keeps the value mod 256 exact.
    let sum = bytes
        .iter()
        .fold(0u32, |acc, &b| acc.wrapping_add(u32::from(b)));
    (sum & 0xff) as u8
}

/// Offset of the next plausible message start (`8=FIX`) after a garbled one, skipping byte 0.
///
/// FIX says a garbled message is ignored and processing continues with the next one; this is
/// how to find it. Returns `buf.len()` (drop everything) when there is none.
pub fn find_message_start(buf: &[u8]) -> usize {
    let mut from = 1;
    while from < buf.len() {
        match memchr::memchr(b'8', &buf[from..]) {
            Some(i) => {
                let at = from + i;
                let rest = &buf[at..];
                // A start must follow an SOH (or be a partial "8=FIX" at the end of the buffer).
                let after_soh = buf[at - 1] == SOH;
                let n = rest.len().min(5);
                if after_soh && rest[..n] == b"8=FIX"[..n] {
                    return at;
                }
                from = at + 1;
            }
            None => break,
        }
    }
    buf.len()
}

/// Matches `lit` at `pos`, reporting Incomplete for a matching prefix cut short.
fn expect_literal(
    buf: &[u8],
    pos: usize,
    lit: &[u8],
    err: impl FnOnce() -> Error,
) -> Result<usize> {
    let avail = buf.len().saturating_sub(pos).min(lit.len());
    // Compared byte by byte: slice `!=` calls memcmp, which costs more than these 2 bytes.
    let got = &buf[pos.min(buf.len())..][..avail];
    if got.iter().zip(lit).any(|(a, b)| a != b) {
        return Err(err());
    }
    if avail < lit.len() {
        return Err(Error::Incomplete);
    }
    Ok(pos + lit.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    const MSG: &[u8] = b"8=FIX.4.4\x019=5\x0135=0\x0110=163\x01";

    #[test]
    fn frames_a_minimal_message() {
        let f = frame(MSG, 1024).unwrap();
        assert_eq!(f.len, MSG.len());
        assert_eq!(&MSG[f.body_start..f.trailer_start], b"35=0\x01");
    }

    #[test]
    fn every_prefix_is_incomplete() {
        for n in 0..MSG.len() {
            assert!(
                frame(&MSG[..n], 1024).unwrap_err().is_incomplete(),
                "prefix {n}"
            );
        }
    }

    #[test]
    fn refuses_oversize_before_reading_it() {
        let e = frame(b"8=FIX.4.4\x019=999999\x01", 1024).unwrap_err();
        assert!(matches!(e, Error::TooLarge { .. }));
    }

    #[test]
    fn garbage_is_invalid_not_incomplete() {
        for g in [
            &b"x"[..],
            b"8x",
            b"8=FIX.4.4\x01x",
            b"8=FIX.4.4\x019=a",
            b"8=\x01",
        ] {
            assert!(!frame(g, 1024).unwrap_err().is_incomplete(), "{g:?}");
        }
        assert!(!frame(b"8=AAAAAAAAAAAAAAAAAAAAAAAAAAAAA", 1024)
            .unwrap_err()
            .is_incomplete());
    }

    #[test]
    fn resync_finds_next_start() {
        let mut buf = b"garbage\x01".to_vec();
        buf.extend_from_slice(MSG);
        assert_eq!(find_message_start(&buf), 8);
        assert_eq!(find_message_start(b"8=FIX no more"), 13);
    }
}
