//! Decoded messages: a borrowed view ([`RawMessage`]) and an owned one ([`Message`]).

use crate::error::{Error, Result};
use crate::field::{invalid, parse_u64, FieldIter, Scanner, Text};
use crate::frame::frame;
use crate::tags;
use crate::time::Timestamp;
use bytes::Bytes;

/// A byte range inside the message; `start == end` means the field is absent (values are never
/// empty on the wire).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Span {
    start: u32,
    end: u32,
}

impl Span {
    fn of(buf_offset: usize, len: usize) -> Span {
        // Messages are bounded by max_size (far below 4 GiB), so offsets fit in u32.
        Span {
            start: buf_offset as u32,
            end: (buf_offset + len) as u32,
        }
    }
    fn get<'a>(&self, buf: &'a [u8]) -> Option<&'a [u8]> {
        (self.start < self.end).then(|| &buf[self.start as usize..self.end as usize])
    }
}

/// Offsets and values of the standard header, found in one pass at parse time.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct HeaderIndex {
    begin_string: Span,
    msg_type: Span,
    sender_comp_id: Span,
    target_comp_id: Span,
    sending_time: Span,
    orig_sending_time: Span,
    seq_num: Option<u64>,
    poss_dup: bool,
    poss_resend: bool,
    body_start: u32,
    body_end: u32,
}

/// A framed, checksum-verified message whose standard header has been parsed. Field values
/// borrow the input buffer.
///
/// Only the header is validated here; body fields are checked as they are iterated (by the typed
/// decoders), so a message is walked once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RawMessage<'a> {
    buf: &'a [u8],
    idx: HeaderIndex,
}

fn as_text(v: &[u8], tag: u32) -> Result<()> {
    std::str::from_utf8(v)
        .map(|_| ())
        .map_err(|_| Error::InvalidValue {
            tag,
            reason: "not valid UTF-8",
        })
}

fn text(buf: &[u8], span: Span) -> Option<&str> {
    // The spans were checked to be UTF-8 at parse time, so this never yields None for a
    // present field.
    span.get(buf).and_then(|v| std::str::from_utf8(v).ok())
}

impl<'a> RawMessage<'a> {
    /// Parses one complete message occupying exactly `buf` (as returned by [`crate::frame`]).
    pub fn parse(buf: &'a [u8]) -> Result<Self> {
        let fr = frame(buf, usize::MAX)?;
        if fr.len != buf.len() {
            return Err(Error::BadTrailer {
                offset: fr.len,
                reason: "bytes after the CheckSum field",
            });
        }
        Self::parse_framed(buf, fr.body_start, fr.trailer_start)
    }

    pub(crate) fn parse_framed(
        buf: &'a [u8],
        body_start: usize,
        trailer_start: usize,
    ) -> Result<Self> {
        let mut idx = HeaderIndex {
            begin_string: Span::of(2, body_start_of_begin(buf)),
            ..HeaderIndex::default()
        };
        let mut sc = Scanner::new(buf, body_start, trailer_start);
        match sc.next_span()? {
            Some(f) if f.tag == tags::MSG_TYPE => {
                idx.msg_type = Span::of(f.value_start, f.value_end - f.value_start);
            }
            _ => {
                return Err(Error::MalformedField {
                    offset: body_start,
                    reason: "MsgType (35) must be the third field",
                })
            }
        }
        let mut body = trailer_start;
        while let Some(f) = sc.next_span()? {
            if !tags::is_header_tag(f.tag) {
                body = f.start;
                break;
            }
            let value = &buf[f.value_start..f.value_end];
            let slot = match f.tag {
                tags::SENDER_COMP_ID => &mut idx.sender_comp_id,
                tags::TARGET_COMP_ID => &mut idx.target_comp_id,
                tags::SENDING_TIME => &mut idx.sending_time,
                tags::ORIG_SENDING_TIME => &mut idx.orig_sending_time,
                tags::MSG_SEQ_NUM => {
                    if idx.seq_num.is_some() {
                        return Err(Error::DuplicateField { tag: f.tag });
                    }
                    let n = parse_u64(value)
                        .ok_or_else(|| invalid(f.tag, "not an unsigned integer"))?;
                    if n == 0 {
                        return Err(Error::InvalidValue {
                            tag: f.tag,
                            reason: "MsgSeqNum must be at least 1",
                        });
                    }
                    idx.seq_num = Some(n);
                    continue;
                }
                tags::POSS_DUP_FLAG => {
                    idx.poss_dup = yes_no(f.tag, value)?;
                    continue;
                }
                tags::POSS_RESEND => {
                    idx.poss_resend = yes_no(f.tag, value)?;
                    continue;
                }
                _ => continue,
            };
            if slot.start < slot.end {
                return Err(Error::DuplicateField { tag: f.tag });
            }
            *slot = Span::of(f.value_start, f.value_end - f.value_start);
        }
        // One check for the whole header instead of one per text field; the accessors rely on it.
        as_text(&buf[..body], tags::MSG_TYPE)?;
        idx.body_start = body as u32;
        idx.body_end = trailer_start as u32;
        Ok(RawMessage { buf, idx })
    }

    /// The whole message, trailer included.
    pub fn as_bytes(&self) -> &'a [u8] {
        self.buf
    }
    /// BeginString (8).
    pub fn begin_string(&self) -> &'a str {
        text(self.buf, self.idx.begin_string).unwrap_or_default()
    }
    /// MsgType (35).
    pub fn msg_type(&self) -> &'a str {
        text(self.buf, self.idx.msg_type).unwrap_or_default()
    }
    /// SenderCompID (49), if present.
    pub fn sender_comp_id(&self) -> Option<&'a str> {
        text(self.buf, self.idx.sender_comp_id)
    }
    /// TargetCompID (56), if present.
    pub fn target_comp_id(&self) -> Option<&'a str> {
        text(self.buf, self.idx.target_comp_id)
    }
    /// MsgSeqNum (34), if present.
    pub fn seq_num(&self) -> Option<u64> {
        self.idx.seq_num
    }
    /// PossDupFlag (43) = Y.
    pub fn poss_dup(&self) -> bool {
        self.idx.poss_dup
    }
    /// PossResend (97) = Y.
    pub fn poss_resend(&self) -> bool {
        self.idx.poss_resend
    }
    /// SendingTime (52) as text, if present.
    pub fn sending_time_str(&self) -> Option<&'a str> {
        text(self.buf, self.idx.sending_time)
    }
    /// SendingTime (52) parsed, if present.
    pub fn sending_time(&self) -> Option<Result<Timestamp>> {
        self.idx
            .sending_time
            .get(self.buf)
            .map(Timestamp::parse_fix)
    }
    /// OrigSendingTime (122) parsed, if present.
    pub fn orig_sending_time(&self) -> Option<Result<Timestamp>> {
        self.idx.orig_sending_time.get(self.buf).map(|v| {
            Timestamp::parse_fix(v).map_err(|_| Error::InvalidValue {
                tag: tags::ORIG_SENDING_TIME,
                reason: "not a UTCTimestamp",
            })
        })
    }
    /// The body fields (after the standard header, before the trailer).
    pub fn body_fields(&self) -> FieldIter<'a> {
        let (start, end) = (self.idx.body_start as usize, self.idx.body_end as usize);
        // One UTF-8 check over the whole body (FIX is nearly always ASCII) instead of one per
        // field; a body with non-UTF-8 bytes falls back to checking field by field.
        match std::str::from_utf8(&self.buf[start..end]) {
            Ok(text) => FieldIter::new_text(self.buf, text, start, end),
            Err(_) => FieldIter::new(self.buf, start, end),
        }
    }
    /// MsgType (35) as bytes, for comparisons that need no text.
    pub(crate) fn msg_type_bytes(&self) -> &'a [u8] {
        self.idx.msg_type.get(self.buf).unwrap_or_default()
    }
    /// A scanner over the body fields and the body's text, for the typed decoders.
    pub(crate) fn body_scan(&self) -> (Scanner<'a>, Text<'a>) {
        let (start, end) = (self.idx.body_start as usize, self.idx.body_end as usize);
        (
            Scanner::new(self.buf, start, end),
            Text::new(self.buf, start, end),
        )
    }
    /// The raw body bytes (each field ends with SOH).
    pub fn body_bytes(&self) -> &'a [u8] {
        &self.buf[self.idx.body_start as usize..self.idx.body_end as usize]
    }
    /// First body field with `tag`, or an error if the body is malformed before it.
    pub fn body_field(&self, tag: u32) -> Result<Option<crate::field::Field<'a>>> {
        for f in self.body_fields() {
            let f = f?;
            if f.tag == tag {
                return Ok(Some(f));
            }
        }
        Ok(None)
    }
}

fn yes_no(tag: u32, v: &[u8]) -> Result<bool> {
    match v {
        b"Y" => Ok(true),
        b"N" => Ok(false),
        _ => Err(Error::InvalidValue {
            tag,
            reason: "expected Y or N",
        }),
    }
}

fn body_start_of_begin(buf: &[u8]) -> usize {
    // frame() guaranteed "8=<value><SOH>" with a bounded value, so it is within a word or two.
    crate::field::find_soh(buf, 2).map_or(0, |end| end - 2)
}

/// An owned message (shares the receive buffer through [`Bytes`], no copy) with its header
/// already parsed. This is what the session delivers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    bytes: Bytes,
    idx: HeaderIndex,
}

impl Message {
    /// Parses one complete message occupying exactly `bytes`.
    pub fn parse(bytes: Bytes) -> Result<Self> {
        let idx = RawMessage::parse(&bytes)?.idx;
        Ok(Message { bytes, idx })
    }

    pub(crate) fn from_framed(
        bytes: Bytes,
        body_start: usize,
        trailer_start: usize,
    ) -> Result<Self> {
        let idx = RawMessage::parse_framed(&bytes, body_start, trailer_start)?.idx;
        Ok(Message { bytes, idx })
    }

    /// A borrowed view for field access and the typed decoders.
    pub fn raw(&self) -> RawMessage<'_> {
        RawMessage {
            buf: &self.bytes,
            idx: self.idx,
        }
    }

    /// The wire bytes.
    pub fn bytes(&self) -> &Bytes {
        &self.bytes
    }
    /// MsgType (35).
    pub fn msg_type(&self) -> &str {
        self.raw().msg_type()
    }
    /// MsgSeqNum (34), if present.
    pub fn seq_num(&self) -> Option<u64> {
        self.idx.seq_num
    }
    /// PossDupFlag (43) = Y.
    pub fn poss_dup(&self) -> bool {
        self.idx.poss_dup
    }
}
