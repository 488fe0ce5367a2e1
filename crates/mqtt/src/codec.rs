//! Primitive MQTT data types (1.5 of the spec): integers, variable byte integers, strings, binary.

use bytes::{Buf, BufMut, Bytes, BytesMut};

use crate::error::Error;
use crate::types::PacketType;

/// Largest value a 4-byte variable byte integer can carry.
pub(crate) const VARINT_MAX: u32 = 268_435_455;

/// Reads a variable byte integer from the start of `buf`.
///
/// `Ok(None)` means more bytes are needed; the error fires as soon as a 4th byte still has the
/// continuation bit, so a hostile peer cannot make us wait on an endless length.
pub(crate) fn read_varint(buf: &[u8]) -> Result<Option<(u32, usize)>, Error> {
    let mut value: u32 = 0;
    for (i, byte) in buf.iter().take(4).enumerate() {
        value |= u32::from(byte & 0x7F) << (7 * i);
        if byte & 0x80 == 0 {
            // [MQTT-1.5.5-1] minimum number of bytes: a trailing zero group adds nothing.
            if i > 0 && *byte == 0 {
                return Err(Error::MalformedVarint {
                    reason: "not minimally encoded",
                });
            }
            return Ok(Some((value, i + 1)));
        }
    }
    if buf.len() >= 4 {
        return Err(Error::MalformedVarint {
            reason: "longer than 4 bytes",
        });
    }
    Ok(None)
}

/// Bytes needed to encode `value` as a variable byte integer (1.5.5), e.g. a remaining length.
pub fn varint_len(value: usize) -> usize {
    match value {
        0..=127 => 1,
        128..=16_383 => 2,
        16_384..=2_097_151 => 3,
        _ => 4,
    }
}

/// Writes a variable byte integer (1.5.5); callers have checked `value` is at most
/// [`MAX_REMAINING_LENGTH`](crate::MAX_REMAINING_LENGTH).
pub fn write_varint(out: &mut BytesMut, mut value: usize) {
    loop {
        let mut byte = (value & 0x7F) as u8;
        value >>= 7;
        if value > 0 {
            byte |= 0x80;
        }
        out.put_u8(byte);
        if value == 0 {
            break;
        }
    }
}

/// Encoded size of a length-prefixed string or binary field, checking the 16-bit limit.
pub(crate) fn field_len(len: usize, packet: PacketType) -> Result<usize, Error> {
    if len > usize::from(u16::MAX) {
        return Err(Error::Unencodable {
            packet,
            reason: "string or binary field longer than 65535 bytes",
        });
    }
    Ok(2 + len)
}

/// Writes a length-prefixed string or binary field; the length was checked by [`field_len`].
pub(crate) fn write_field(out: &mut BytesMut, data: &[u8]) {
    out.put_u16(data.len() as u16);
    out.put_slice(data);
}

/// Checks the rules every MQTT UTF-8 string follows: well-formed (Rust's UTF-8 check already
/// rejects surrogates) and no U+0000 [MQTT-1.5.4-2].
pub(crate) fn check_str<'a>(
    bytes: &'a [u8],
    packet: PacketType,
    field: &'static str,
) -> Result<&'a str, Error> {
    let text = std::str::from_utf8(bytes).map_err(|_| Error::InvalidString {
        packet,
        field,
        reason: "not well-formed UTF-8",
    })?;
    if text.contains('\0') {
        return Err(Error::InvalidString {
            packet,
            field,
            reason: "contains U+0000",
        });
    }
    Ok(text)
}

/// Cursor over the body of one complete packet; slices share the packet's buffer.
pub(crate) struct Reader {
    buf: Bytes,
    packet: PacketType,
}

impl Reader {
    pub(crate) fn new(buf: Bytes, packet: PacketType) -> Self {
        Self { buf, packet }
    }

    pub(crate) fn packet(&self) -> PacketType {
        self.packet
    }

    pub(crate) fn remaining(&self) -> usize {
        self.buf.len()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    pub(crate) fn malformed(&self, reason: &'static str) -> Error {
        Error::Malformed {
            packet: self.packet,
            reason,
        }
    }

    pub(crate) fn protocol(&self, reason: &'static str) -> Error {
        Error::ProtocolViolation {
            packet: self.packet,
            reason,
        }
    }

    fn need(&self, n: usize, field: &'static str) -> Result<(), Error> {
        if self.buf.len() < n {
            return Err(Error::Truncated {
                packet: self.packet,
                field,
            });
        }
        Ok(())
    }

    pub(crate) fn u8(&mut self, field: &'static str) -> Result<u8, Error> {
        self.need(1, field)?;
        Ok(self.buf.get_u8())
    }

    pub(crate) fn u16(&mut self, field: &'static str) -> Result<u16, Error> {
        self.need(2, field)?;
        Ok(self.buf.get_u16())
    }

    pub(crate) fn u32(&mut self, field: &'static str) -> Result<u32, Error> {
        self.need(4, field)?;
        Ok(self.buf.get_u32())
    }

    pub(crate) fn varint(&mut self, field: &'static str) -> Result<u32, Error> {
        match read_varint(&self.buf)? {
            Some((value, len)) => {
                self.buf.advance(len);
                Ok(value)
            }
            None => Err(Error::Truncated {
                packet: self.packet,
                field,
            }),
        }
    }

    /// Non-zero packet identifier [MQTT-2.2.1-3].
    pub(crate) fn packet_id(&mut self) -> Result<u16, Error> {
        let id = self.u16("packet identifier")?;
        if id == 0 {
            return Err(Error::ZeroPacketId {
                packet: self.packet,
            });
        }
        Ok(id)
    }

    pub(crate) fn take(&mut self, n: usize, field: &'static str) -> Result<Bytes, Error> {
        self.need(n, field)?;
        Ok(self.buf.split_to(n))
    }

    pub(crate) fn binary(&mut self, field: &'static str) -> Result<Bytes, Error> {
        let len = self.u16(field)?;
        self.take(usize::from(len), field)
    }

    pub(crate) fn string(&mut self, field: &'static str) -> Result<String, Error> {
        let raw = self.binary(field)?;
        Ok(check_str(&raw, self.packet, field)?.to_owned())
    }

    /// The rest of the packet (PUBLISH payload), zero-copy.
    pub(crate) fn rest(&mut self) -> Bytes {
        self.buf.split_off(0)
    }

    /// A sub-reader over the next `n` bytes (a property block).
    pub(crate) fn sub(&mut self, n: usize, field: &'static str) -> Result<Reader, Error> {
        Ok(Reader::new(self.take(n, field)?, self.packet))
    }

    pub(crate) fn finish(&self) -> Result<(), Error> {
        if !self.buf.is_empty() {
            return Err(self.malformed("unexpected bytes after the last field"));
        }
        Ok(())
    }
}
