//! Pure record codec: no files, no allocation beyond the caller's buffer.
//!
//! Layout of one record (all integers little-endian):
//!
//! ```text
//! +---------+---------+----------+-------------+-----------+-----+-------+
//! | len u32 | crc u32 | offset u64 | timestamp u64 | key_len u32 | key | value |
//! +---------+---------+----------+-------------+-----------+-----+-------+
//! ```
//!
//! `len` counts the bytes after the crc field (`20 + key_len + value_len`); `crc` is CRC-32C over
//! exactly those bytes. A zeroed region (preallocated or never written) decodes as `Corrupt`
//! because `len == 0` is below the fixed body size, so torn tails are never mistaken for records.

use crate::{Entry, Offset};

/// Bytes before the key: len, crc, offset, timestamp, key_len.
pub const HEADER_LEN: usize = 28;
/// Bytes covered by `len` that are not key or value: offset, timestamp, key_len.
const FIXED_BODY_LEN: usize = 20;
/// Hard format limit on key + value, so a corrupt length never makes a reader allocate gigabytes.
pub const MAX_PAYLOAD_BYTES: usize = 256 * 1024 * 1024;
/// Timestamp that, with an empty key, marks a placeholder recovery wrote in place of a damaged
/// record. Placeholders are ordinary records (same framing, checksum and offset), so offsets stay
/// contiguous and older readers simply see an empty record; the log refuses to append a real
/// entry that would look like one.
pub const LOST_TIMESTAMP: u64 = u64::MAX;

/// A record decoded in place; key and value borrow the input buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decoded<'a> {
    /// Offset stored in the record.
    pub offset: Offset,
    /// Unix nanoseconds stored in the record.
    pub timestamp: u64,
    /// Key bytes.
    pub key: &'a [u8],
    /// Value bytes.
    pub value: &'a [u8],
    /// Total encoded size, i.e. where the next record starts.
    pub encoded_len: usize,
}

impl Decoded<'_> {
    /// A placeholder for a record lost to corruption (see [`LOST_TIMESTAMP`]).
    pub fn is_lost(&self) -> bool {
        is_lost(self.timestamp, self.key)
    }
}

/// Whether a record with this timestamp and key is a placeholder for a lost record.
#[inline]
pub fn is_lost(timestamp: u64, key: &[u8]) -> bool {
    timestamp == LOST_TIMESTAMP && key.is_empty()
}

/// Why a buffer does not start with a valid record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The buffer is a valid prefix so far; `needed` bytes in total are required to decide.
    #[error("incomplete record: {needed} bytes needed")]
    Incomplete {
        /// Total bytes (from the start of the buffer) needed before decoding can proceed.
        needed: usize,
    },
    /// The bytes can never be a valid record, whatever follows.
    #[error("corrupt record: {0}")]
    Corrupt(CorruptKind),
}

/// The specific way a record is corrupt.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum CorruptKind {
    /// `len` is smaller than the fixed body or larger than the format limit.
    #[error("length field {0} out of range")]
    LengthOutOfRange(u32),
    /// `key_len` points past the end of the record.
    #[error("key length {key_len} exceeds record body {body_len}")]
    KeyTooLong {
        /// Key length field.
        key_len: u32,
        /// Body length field.
        body_len: u32,
    },
    /// The checksum does not match the body.
    #[error("checksum mismatch: stored {stored:#010x}, computed {computed:#010x}")]
    Checksum {
        /// CRC stored in the record.
        stored: u32,
        /// CRC computed over the body.
        computed: u32,
    },
}

/// Encoded size of `entry` in bytes.
#[inline]
pub fn encoded_len(entry: &Entry<'_>) -> usize {
    HEADER_LEN + entry.key.len() + entry.value.len()
}

/// Appends the encoding of `entry` at `offset` to `out`.
///
/// Precondition: `key.len() + value.len() <= MAX_PAYLOAD_BYTES` (the `Log` checks this before
/// encoding); larger inputs would not round-trip.
#[inline]
pub fn encode(offset: Offset, entry: &Entry<'_>, out: &mut Vec<u8>) {
    debug_assert!(entry.key.len() + entry.value.len() <= MAX_PAYLOAD_BYTES);
    let start = out.len();
    // Truncating casts are safe under the precondition (payload < 2^28).
    let body_len = (FIXED_BODY_LEN + entry.key.len() + entry.value.len()) as u32;
    out.reserve(HEADER_LEN + entry.key.len() + entry.value.len());
    out.extend_from_slice(&body_len.to_le_bytes());
    out.extend_from_slice(&[0u8; 4]); // crc, patched below once the body is in place
    out.extend_from_slice(&offset.to_le_bytes());
    out.extend_from_slice(&entry.timestamp.to_le_bytes());
    out.extend_from_slice(&(entry.key.len() as u32).to_le_bytes());
    out.extend_from_slice(entry.key);
    out.extend_from_slice(entry.value);
    let crc = crc32c::crc32c(&out[start + 8..]);
    out[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
}

/// Appends a placeholder for the lost record at `offset`, `HEADER_LEN + padding` bytes long (its
/// value is `padding` zero bytes), so a run of placeholders can fill a damaged range exactly.
pub fn encode_lost(offset: Offset, padding: usize, out: &mut Vec<u8>) {
    // Recovery only: the allocation does not matter.
    let pad = vec![0u8; padding];
    encode(
        offset,
        &Entry {
            timestamp: LOST_TIMESTAMP,
            key: b"",
            value: &pad,
        },
        out,
    );
}

#[inline]
fn u32_at(buf: &[u8], at: usize) -> u32 {
    let mut b = [0u8; 4];
    b.copy_from_slice(&buf[at..at + 4]);
    u32::from_le_bytes(b)
}

#[inline]
fn u64_at(buf: &[u8], at: usize) -> u64 {
    let mut b = [0u8; 8];
    b.copy_from_slice(&buf[at..at + 8]);
    u64::from_le_bytes(b)
}

/// The offset and total encoded length a record starting at `buf` claims, if its header is
/// complete and its length fields are in range; the checksum is not verified. Lets recovery
/// skip most byte positions of a damaged range without hashing anything.
pub fn peek(buf: &[u8]) -> Option<(Offset, usize)> {
    let header = buf.get(..HEADER_LEN)?;
    let body = u32_at(header, 0) as usize;
    if !(FIXED_BODY_LEN..=FIXED_BODY_LEN + MAX_PAYLOAD_BYTES).contains(&body)
        || u32_at(header, 24) as usize > body - FIXED_BODY_LEN
    {
        return None;
    }
    Some((u64_at(header, 8), 8 + body))
}

/// Decodes the record at the start of `buf`, verifying its checksum.
///
/// Returns `Incomplete` only while `buf` could still be the prefix of a valid record, so a reader
/// at end of file can tell a torn write (`Incomplete`) from garbage (`Corrupt`).
pub fn decode(buf: &[u8]) -> Result<Decoded<'_>, DecodeError> {
    if buf.len() < 4 {
        return Err(DecodeError::Incomplete { needed: HEADER_LEN });
    }
    let body_len = u32_at(buf, 0);
    let body = body_len as usize;
    if !(FIXED_BODY_LEN..=FIXED_BODY_LEN + MAX_PAYLOAD_BYTES).contains(&body) {
        return Err(DecodeError::Corrupt(CorruptKind::LengthOutOfRange(
            body_len,
        )));
    }
    if buf.len() < HEADER_LEN {
        return Err(DecodeError::Incomplete { needed: 8 + body });
    }
    let key_len = u32_at(buf, 24);
    if key_len as usize > body - FIXED_BODY_LEN {
        return Err(DecodeError::Corrupt(CorruptKind::KeyTooLong {
            key_len,
            body_len,
        }));
    }
    let total = 8 + body;
    if buf.len() < total {
        return Err(DecodeError::Incomplete { needed: total });
    }
    let stored = u32_at(buf, 4);
    let computed = crc32c::crc32c(&buf[8..total]);
    if stored != computed {
        return Err(DecodeError::Corrupt(CorruptKind::Checksum {
            stored,
            computed,
        }));
    }
    let key_end = HEADER_LEN + key_len as usize;
    Ok(Decoded {
        offset: u64_at(buf, 8),
        timestamp: u64_at(buf, 16),
        key: &buf[HEADER_LEN..key_end],
        value: &buf[key_end..total],
        encoded_len: total,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn enc(offset: u64, ts: u64, key: &[u8], value: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        encode(
            offset,
            &Entry {
                timestamp: ts,
                key,
                value,
            },
            &mut out,
        );
        out
    }

    #[test]
    fn empty_key_and_value_round_trip() {
        let buf = enc(7, 9, b"", b"");
        assert_eq!(buf.len(), HEADER_LEN);
        let d = decode(&buf).unwrap();
        assert_eq!(
            (d.offset, d.timestamp, d.key, d.value),
            (7, 9, &b""[..], &b""[..])
        );
        assert_eq!(d.encoded_len, HEADER_LEN);
    }

    #[test]
    fn zeroes_are_corrupt_not_incomplete() {
        assert_eq!(
            decode(&[0u8; 64]),
            Err(DecodeError::Corrupt(CorruptKind::LengthOutOfRange(0)))
        );
    }

    #[test]
    fn flipped_bit_is_detected() {
        let mut buf = enc(1, 2, b"k", b"value");
        let last = buf.len() - 1;
        buf[last] ^= 0x01;
        assert!(matches!(
            decode(&buf),
            Err(DecodeError::Corrupt(CorruptKind::Checksum { .. }))
        ));
    }

    proptest! {
        #[test]
        fn round_trip(offset: u64, ts: u64,
                      key in proptest::collection::vec(any::<u8>(), 0..64),
                      value in proptest::collection::vec(any::<u8>(), 0..512),
                      trailing in proptest::collection::vec(any::<u8>(), 0..16)) {
            let mut buf = enc(offset, ts, &key, &value);
            let len = buf.len();
            buf.extend_from_slice(&trailing);
            let d = decode(&buf).unwrap();
            prop_assert_eq!(d.offset, offset);
            prop_assert_eq!(d.timestamp, ts);
            prop_assert_eq!(d.key, &key[..]);
            prop_assert_eq!(d.value, &value[..]);
            prop_assert_eq!(d.encoded_len, len);
        }

        #[test]
        fn every_strict_prefix_is_incomplete(
            value in proptest::collection::vec(any::<u8>(), 0..200), cut in 0usize..1000) {
            let buf = enc(3, 4, b"key", &value);
            let cut = cut % buf.len();
            let incomplete =
                matches!(decode(&buf[..cut]), Err(DecodeError::Incomplete { needed }) if needed > cut);
            prop_assert!(incomplete);
        }

        #[test]
        fn arbitrary_bytes_never_panic(buf in proptest::collection::vec(any::<u8>(), 0..256)) {
            if let Ok(d) = decode(&buf) {
                // Anything accepted must re-encode to the same bytes.
                let again = enc(d.offset, d.timestamp, d.key, d.value);
                prop_assert_eq!(&again[..], &buf[..d.encoded_len]);
            }
        }
    }
}
