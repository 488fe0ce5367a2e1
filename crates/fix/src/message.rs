//! Decoded messages: a borrowed view ([`RawMessage`]) and an owned one ([`Message`]).

use crate::error::{Error, Result};
use crate::field::{invalid, parse_u64, FieldIter, ScanResume, Scanner, Text};
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
    /// MsgSeqNum, 0 when absent (0 is refused at parse time): an `Option` would add 8 bytes,
    /// and every byte here is copied with each `RawMessage` (see `resume`).
    seq_num: u64,
    poss_dup: bool,
    poss_resend: bool,
    body_start: u32,
    body_end: u32,
    /// The header scanner's SOH block after it read the first body field (which is how it
    /// finds where the header ends), so the body decoders do not compute that block again.
    resume: ScanResume,
}

/// A framed, checksum-verified message whose standard header has been parsed. Field values
/// borrow the input buffer.
///
/// Only the header is validated here; body fields are checked as they are iterated (by the typed
/// decoders), so a message is walked once.
#[derive(Debug, Clone, Copy)]
pub struct RawMessage<'a> {
    buf: &'a [u8],
    idx: HeaderIndex,
    /// `buf[..body_end]` as text when [`RawMessage::parse`] found all of it UTF-8: the header
    /// and the body are then validated in one pass, and the body's text values are slices of
    /// this. `None` when unknown (a view of a [`Message`]) or when the body is not UTF-8.
    text: Option<&'a str>,
}

// By hand: `text` is derived from `buf` and only says what is already known about it.
impl PartialEq for RawMessage<'_> {
    fn eq(&self, other: &Self) -> bool {
        self.buf == other.buf && self.idx == other.idx
    }
}
impl Eq for RawMessage<'_> {}

fn text(buf: &[u8], span: Span) -> Option<&str> {
    // The spans were checked to be UTF-8 at parse time, so this never yields None for a
    // present field.
    span.get(buf).and_then(|v| std::str::from_utf8(v).ok())
}

impl<'a> RawMessage<'a> {
    /// Parses one complete message occupying exactly `buf` (as returned by [`crate::frame`]).
    pub fn parse(buf: &'a [u8]) -> Result<Self> {
        Self::parse_whole(buf, true)
    }

    /// [`RawMessage::parse`]; `body_text`: also check the body's UTF-8 now and keep its text
    /// (for a view used at once), instead of leaving that to the decoder that reads the body.
    fn parse_whole(buf: &'a [u8], body_text: bool) -> Result<Self> {
        let fr = frame(buf, usize::MAX)?;
        if fr.len != buf.len() {
            return Err(Error::BadTrailer {
                offset: fr.len,
                reason: "bytes after the CheckSum field",
            });
        }
        Self::parse_framed(buf, fr.body_start, fr.trailer_start, body_text)
    }

    pub(crate) fn parse_framed(
        buf: &'a [u8],
        body_start: usize,
        trailer_start: usize,
        body_text: bool,
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
                    if idx.seq_num != 0 {
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
                    idx.seq_num = n;
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
        // The header must be text (the accessors rely on it); a body that is not falls back
        // to checking value by value. With `body_text`, one UTF-8 check covers header and body
        // (the body text is then known without a check of its own). Without it only the header
        // is checked: an owned `Message` keeps no text, so its decoder checks the body once
        // when it reads it, and checking it here as well would be a second pass.
        let checked = if body_text { trailer_start } else { body };
        let text = match std::str::from_utf8(&buf[..checked]) {
            Ok(t) if body_text => Some(t),
            Ok(_) => None,
            // `body` follows an SOH, so it is a char boundary: the header is valid.
            Err(e) if e.valid_up_to() >= body => None,
            Err(_) => return Err(invalid(tags::MSG_TYPE, "not valid UTF-8")),
        };
        idx.body_start = body as u32;
        idx.body_end = trailer_start as u32;
        idx.resume = sc.suspend();
        Ok(RawMessage { buf, idx, text })
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
        (self.idx.seq_num != 0).then_some(self.idx.seq_num)
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
        let text = match self.text {
            Some(t) => Text::from_text(self.buf, t),
            None => Text::new(self.buf, start, end),
        };
        (Scanner::resume(self.buf, start, end, self.idx.resume), text)
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
        let idx = RawMessage::parse_whole(&bytes, false)?.idx;
        Ok(Message { bytes, idx })
    }

    pub(crate) fn from_framed(
        bytes: Bytes,
        body_start: usize,
        trailer_start: usize,
    ) -> Result<Self> {
        let idx = RawMessage::parse_framed(&bytes, body_start, trailer_start, false)?.idx;
        Ok(Message { bytes, idx })
    }

    /// A borrowed view for field access and the typed decoders.
    pub fn raw(&self) -> RawMessage<'_> {
        RawMessage {
            buf: &self.bytes,
            idx: self.idx,
            text: None,
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
        (self.idx.seq_num != 0).then_some(self.idx.seq_num)
    }
    /// PossDupFlag (43) = Y.
    pub fn poss_dup(&self) -> bool {
        self.idx.poss_dup
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::md::MarketDataIncrementalRefresh;

    fn framed(body: &[u8]) -> Vec<u8> {
        let mut m = format!("8=FIX.4.4\x019={}\x01", body.len()).into_bytes();
        m.extend_from_slice(body);
        let cs = crate::checksum(&m);
        m.extend_from_slice(format!("10={cs:03}\x01").as_bytes());
        m
    }

    // Header and body are UTF-8-checked in one pass; these pin the outcomes of the two
    // separate checks that pass replaced.
    #[test]
    fn utf8_outcomes_of_header_and_body() {
        let bad_header = framed(b"35=X\x0149=S\xff\x0156=T\x01268=0\x01");
        let e = RawMessage::parse(&bad_header).unwrap_err();
        assert!(
            matches!(e, Error::InvalidValue { tag: 35, reason } if reason == "not valid UTF-8"),
            "{e:?}"
        );
        // Not UTF-8 in a body field the X does not model: parses and decodes.
        let bad_unmodeled = framed(b"35=X\x0149=S\x0156=T\x0158=\xff\x01268=0\x01");
        let raw = RawMessage::parse(&bad_unmodeled).unwrap();
        assert_eq!(raw.sender_comp_id(), Some("S"));
        assert!(MarketDataIncrementalRefresh::decode(&raw).is_ok());
        // Not UTF-8 in a modelled text field: that field's error.
        let bad_id = framed(b"35=X\x0149=S\x0156=T\x01262=\xff\x01268=0\x01");
        let raw = RawMessage::parse(&bad_id).unwrap();
        let e = MarketDataIncrementalRefresh::decode(&raw).unwrap_err();
        assert!(matches!(e, Error::InvalidValue { tag: 262, .. }), "{e:?}");
        // The first body field straight after the header, UTF-8 or not, with and without
        // the parse-time text (a Message's view has none).
        for body in [
            &b"35=X\x0149=S\x01262=r\x01268=0\x01"[..],
            b"35=X\x01262=\xc3\xa9\x01268=0\x01",
        ] {
            let bytes = framed(body);
            let raw = RawMessage::parse(&bytes).unwrap();
            let owned = Message::parse(Bytes::from(bytes.clone())).unwrap();
            let a = MarketDataIncrementalRefresh::decode(&raw).unwrap();
            let b = MarketDataIncrementalRefresh::decode(&owned.raw()).unwrap();
            assert_eq!(a, b);
            assert!(a.md_req_id.is_some());
        }
    }
}
