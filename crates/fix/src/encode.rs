//! Encoder: writes fields, then frames them with BodyLength and CheckSum.

use crate::error::{Error, Result};
use crate::frame::{checksum, SOH};
use crate::tags;
use crate::time::Timestamp;
use bytes::Bytes;

/// Appends `tag=value<SOH>` fields to a buffer, refusing values that would break framing.
#[derive(Debug)]
pub struct FieldWriter<'b> {
    buf: &'b mut Vec<u8>,
}

impl<'b> FieldWriter<'b> {
    /// Writes into `buf` (appending).
    pub fn new(buf: &'b mut Vec<u8>) -> Self {
        FieldWriter { buf }
    }

    #[inline]
    fn tag(&mut self, tag: u32) {
        self.buf
            .extend_from_slice(itoa::Buffer::new().format(tag).as_bytes());
        self.buf.push(b'=');
    }

    /// A text or other pre-formatted value; must be non-empty and free of SOH.
    pub fn bytes(&mut self, tag: u32, v: &[u8]) -> Result<()> {
        if v.is_empty() {
            return Err(Error::InvalidValue {
                tag,
                reason: "empty value",
            });
        }
        if memchr::memchr(SOH, v).is_some() {
            return Err(Error::InvalidValue {
                tag,
                reason: "value contains SOH",
            });
        }
        self.tag(tag);
        self.buf.extend_from_slice(v);
        self.buf.push(SOH);
        Ok(())
    }

    /// A text value.
    pub fn str(&mut self, tag: u32, v: &str) -> Result<()> {
        self.bytes(tag, v.as_bytes())
    }

    /// An unsigned integer.
    pub fn uint(&mut self, tag: u32, v: u64) {
        self.tag(tag);
        self.buf
            .extend_from_slice(itoa::Buffer::new().format(v).as_bytes());
        self.buf.push(SOH);
    }

    /// Appends already-encoded fields (each ending in SOH) as they are.
    pub(crate) fn raw_fields(&mut self, fields: &[u8]) {
        self.buf.extend_from_slice(fields);
    }

    /// A single-character value (FIX char / enumerations).
    pub fn char(&mut self, tag: u32, c: u8) -> Result<()> {
        self.bytes(tag, &[c])
    }

    /// A FIX Boolean.
    pub fn bool(&mut self, tag: u32, v: bool) {
        self.tag(tag);
        self.buf.push(if v { b'Y' } else { b'N' });
        self.buf.push(SOH);
    }

    /// A UTCTimestamp with milliseconds.
    pub fn timestamp(&mut self, tag: u32, t: Timestamp) {
        self.tag(tag);
        self.buf.extend_from_slice(&t.to_fix());
        self.buf.push(SOH);
    }
}

/// An application message the session can send: its MsgType and its body fields.
pub trait AppMessage {
    /// MsgType (35).
    fn msg_type(&self) -> &str;
    /// Writes the body (everything after the standard header) in FIX field order.
    fn write_body(&self, w: &mut FieldWriter<'_>) -> Result<()>;
}

/// A message given as MsgType plus already-encoded body fields (each ending in SOH); lets the
/// caller send any message type this crate has no struct for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawBody {
    /// MsgType (35).
    pub msg_type: String,
    /// Encoded body fields.
    pub body: Vec<u8>,
}

impl AppMessage for RawBody {
    fn msg_type(&self) -> &str {
        &self.msg_type
    }
    fn write_body(&self, w: &mut FieldWriter<'_>) -> Result<()> {
        if !self.body.is_empty() && self.body.last() != Some(&SOH) {
            return Err(Error::InvalidValue {
                tag: 0,
                reason: "raw body must end with SOH",
            });
        }
        w.buf.extend_from_slice(&self.body);
        Ok(())
    }
}

/// The standard header of an outgoing message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header<'h> {
    /// BeginString (8), e.g. `FIX.4.4`.
    pub begin_string: &'h str,
    /// SenderCompID (49).
    pub sender_comp_id: &'h str,
    /// TargetCompID (56).
    pub target_comp_id: &'h str,
    /// MsgSeqNum (34).
    pub seq_num: u64,
    /// SendingTime (52).
    pub sending_time: Timestamp,
    /// For a resend: PossDupFlag (43) = Y and this OrigSendingTime (122).
    pub orig_sending_time: Option<Timestamp>,
}

/// Encodes a complete message: header in the order 8, 9, 35, 49, 56, 34, 52 [, 43, 122], the body,
/// then CheckSum.
pub fn encode<M: AppMessage + ?Sized>(header: &Header<'_>, msg: &M) -> Result<Bytes> {
    let mut buf = Vec::with_capacity(256);
    encode_with(&mut buf, header, msg.msg_type(), |w| msg.write_body(w))
}

/// Like [`encode`] with the body written by a closure, into a reused buffer.
pub(crate) fn encode_with(
    buf: &mut Vec<u8>,
    h: &Header<'_>,
    msg_type: &str,
    body: impl FnOnce(&mut FieldWriter<'_>) -> Result<()>,
) -> Result<Bytes> {
    if h.begin_string.is_empty() || h.begin_string.len() > 16 {
        return Err(Error::InvalidValue {
            tag: tags::BEGIN_STRING,
            reason: "BeginString must be 1 to 16 bytes",
        });
    }
    // Leave room in front for "8=..|9=NNN|", written once the body length is known, so the
    // message is built in one buffer and handed out as a slice without copying.
    let headroom = 2 + h.begin_string.len() + 1 + 2 + 10 + 1;
    buf.clear();
    buf.resize(headroom, 0);
    let mut w = FieldWriter::new(buf);
    w.str(tags::MSG_TYPE, msg_type)?;
    w.str(tags::SENDER_COMP_ID, h.sender_comp_id)?;
    w.str(tags::TARGET_COMP_ID, h.target_comp_id)?;
    w.uint(tags::MSG_SEQ_NUM, h.seq_num);
    w.timestamp(tags::SENDING_TIME, h.sending_time);
    if let Some(orig) = h.orig_sending_time {
        w.bool(tags::POSS_DUP_FLAG, true);
        w.timestamp(tags::ORIG_SENDING_TIME, orig);
    }
    body(&mut w)?;
    let body_len = buf.len() - headroom;
    let mut len_buf = itoa::Buffer::new();
    let len_str = len_buf.format(body_len).as_bytes();
    let prefix_len = 2 + h.begin_string.len() + 1 + 2 + len_str.len() + 1;
    let start = headroom - prefix_len;
    let mut p = start;
    for part in [
        b"8=",
        h.begin_string.as_bytes(),
        &[SOH],
        b"9=",
        len_str,
        &[SOH],
    ] {
        buf[p..p + part.len()].copy_from_slice(part);
        p += part.len();
    }
    let sum = checksum(&buf[start..]);
    buf.extend_from_slice(b"10=");
    buf.extend_from_slice(&[
        b'0' + sum / 100,
        b'0' + (sum / 10) % 10,
        b'0' + sum % 10,
        SOH,
    ]);
    Ok(Bytes::copy_from_slice(&buf[start..]))
}
