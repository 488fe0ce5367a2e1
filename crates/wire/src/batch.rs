//! The binary publish batch (`Content-Type: application/vnd.tickwire.batch` on
//! `POST /v1/publish`) and its binary answer. Documented in docs/protocol.md.
//!
//! Why a binary envelope: at millions of quotes per second the JSON envelope
//! (`{"channel":..,"data":..}` per item, parsed and then re-scanned for the `data` span) cost
//! the server about a third of its ingest CPU and the client as much again to build and parse.
//! Here every field is length-prefixed, so the server slices the body without scanning it. The
//! `data` of each item stays JSON text: that is what subscribers receive and what the log
//! stores, and the namespace schema still checks it.
//!
//! ```text
//! request  = "TWB1" item*
//! item     = u16le channel_len, channel (UTF-8),
//!            u16le msg_id_len (0: none), msg_id (UTF-8),
//!            u32le data_len, data (JSON text)
//! answer   = "TWA1" u32le count, count × (u64le offset, u8 flags)   flags bit 0: duplicate
//! ```

use thiserror::Error;

/// The request body's first four bytes (format and version).
pub const BATCH_MAGIC: &[u8; 4] = b"TWB1";
/// The answer body's first four bytes.
pub const ACKS_MAGIC: &[u8; 4] = b"TWA1";
/// Media type of a binary request body.
pub const BATCH_CONTENT_TYPE: &str = "application/vnd.tickwire.batch";
/// Media type of the binary answer.
pub const ACKS_CONTENT_TYPE: &str = "application/vnd.tickwire.acks";
/// Bytes per item in the answer after its 8-byte header.
pub const ACK_LEN: usize = 9;

/// One item of a binary batch, borrowed from the body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchItem<'a> {
    pub channel: &'a str,
    pub msg_id: Option<&'a str>,
    pub data: &'a [u8],
}

/// Why a binary batch could not be split into items. The framing is length-prefixed, so after
/// the first framing error nothing later can be trusted: the whole batch is refused.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum BatchError {
    #[error("a binary batch starts with \"TWB1\"")]
    BadMagic,
    #[error("the batch holds no items")]
    Empty,
    #[error("a batch holds at most {max} items")]
    TooMany { max: usize },
    #[error("item {index}: the body ends inside its {field} (at byte {at})")]
    Truncated {
        index: usize,
        field: &'static str,
        at: usize,
    },
    #[error("item {index}: its {field} is not UTF-8")]
    NotUtf8 { index: usize, field: &'static str },
}

/// Splits a binary batch into items; at most `max_items`, at least one.
pub fn decode_batch(body: &[u8], max_items: usize) -> Result<Vec<BatchItem<'_>>, BatchError> {
    let rest = body.strip_prefix(BATCH_MAGIC).ok_or(BatchError::BadMagic)?;
    let mut r = Reader {
        buf: rest,
        at: BATCH_MAGIC.len(),
    };
    // A typical quote item is ~110 bytes; reserving for that avoids regrowth without trusting
    // a length the client controls.
    let mut items = Vec::with_capacity((rest.len() / 96).clamp(1, max_items.max(1)));
    while !r.buf.is_empty() {
        let index = items.len();
        if index == max_items {
            return Err(BatchError::TooMany { max: max_items });
        }
        let n = r.u16(index, "channel length")? as usize;
        let channel = r.str(n, index, "channel")?;
        let n = r.u16(index, "msg_id length")? as usize;
        let msg_id = if n == 0 {
            None
        } else {
            Some(r.str(n, index, "msg_id")?)
        };
        let n = r.u32(index, "data length")? as usize;
        let data = r.take(n, index, "data")?;
        items.push(BatchItem {
            channel,
            msg_id,
            data,
        });
    }
    if items.is_empty() {
        return Err(BatchError::Empty);
    }
    Ok(items)
}

struct Reader<'a> {
    buf: &'a [u8],
    /// Position of `buf` in the whole body, for error messages.
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(
        &mut self,
        n: usize,
        index: usize,
        field: &'static str,
    ) -> Result<&'a [u8], BatchError> {
        if self.buf.len() < n {
            return Err(BatchError::Truncated {
                index,
                field,
                at: self.at + self.buf.len(),
            });
        }
        let (head, tail) = self.buf.split_at(n);
        self.buf = tail;
        self.at += n;
        Ok(head)
    }

    fn u16(&mut self, index: usize, field: &'static str) -> Result<u16, BatchError> {
        let b = self.take(2, index, field)?;
        Ok(u16::from_le_bytes([b[0], b[1]]))
    }

    fn u32(&mut self, index: usize, field: &'static str) -> Result<u32, BatchError> {
        let b = self.take(4, index, field)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn str(&mut self, n: usize, index: usize, field: &'static str) -> Result<&'a str, BatchError> {
        let b = self.take(n, index, field)?;
        std::str::from_utf8(b).map_err(|_| BatchError::NotUtf8 { index, field })
    }
}

/// Appends one item to a batch being built (`out` must start with [`BATCH_MAGIC`]). `None` if
/// a field is longer than its length prefix can say.
pub fn encode_item(out: &mut Vec<u8>, item: &BatchItem<'_>) -> Option<()> {
    let msg_id = item.msg_id.unwrap_or("");
    let c = u16::try_from(item.channel.len()).ok()?;
    let m = u16::try_from(msg_id.len()).ok()?;
    let d = u32::try_from(item.data.len()).ok()?;
    out.reserve(8 + item.channel.len() + msg_id.len() + item.data.len());
    out.extend_from_slice(&c.to_le_bytes());
    out.extend_from_slice(item.channel.as_bytes());
    out.extend_from_slice(&m.to_le_bytes());
    out.extend_from_slice(msg_id.as_bytes());
    out.extend_from_slice(&d.to_le_bytes());
    out.extend_from_slice(item.data);
    Some(())
}

/// Writes the answer header for `count` acks; follow with [`push_ack`] per item.
pub fn encode_acks_header(out: &mut Vec<u8>, count: u32) {
    out.reserve(8 + count as usize * ACK_LEN);
    out.extend_from_slice(ACKS_MAGIC);
    out.extend_from_slice(&count.to_le_bytes());
}

/// Appends one item's ack to an answer.
pub fn push_ack(out: &mut Vec<u8>, offset: u64, duplicate: bool) {
    out.extend_from_slice(&offset.to_le_bytes());
    out.push(u8::from(duplicate));
}

/// Reads a binary answer into (offset, duplicate) pairs; `None` if it is malformed.
pub fn decode_acks(body: &[u8]) -> Option<Vec<(u64, bool)>> {
    let rest = body.strip_prefix(ACKS_MAGIC)?;
    let (count, rest) = rest.split_first_chunk::<4>()?;
    let count = u32::from_le_bytes(*count) as usize;
    if rest.len() != count.checked_mul(ACK_LEN)? {
        return None;
    }
    let acks = rest
        .chunks_exact(ACK_LEN)
        .map(|c| {
            let mut o = [0u8; 8];
            o.copy_from_slice(&c[..8]);
            (u64::from_le_bytes(o), c[8] & 1 == 1)
        })
        .collect();
    Some(acks)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn batch(items: &[BatchItem<'_>]) -> Vec<u8> {
        let mut out = BATCH_MAGIC.to_vec();
        for i in items {
            encode_item(&mut out, i).unwrap();
        }
        out
    }

    #[test]
    fn round_trip() {
        let items = [
            BatchItem {
                channel: "quotes.EURUSD",
                msg_id: None,
                data: br#"{"bid":"1.1"}"#,
            },
            BatchItem {
                channel: "chat.room1",
                msg_id: Some("m-1"),
                data: b"\"hi\"",
            },
        ];
        assert_eq!(decode_batch(&batch(&items), 10).unwrap(), items);
    }

    #[test]
    fn framing_errors_are_named() {
        assert_eq!(decode_batch(b"TWB2", 10), Err(BatchError::BadMagic));
        assert_eq!(decode_batch(b"", 10), Err(BatchError::BadMagic));
        assert_eq!(decode_batch(b"TWB1", 10), Err(BatchError::Empty));
        let one = BatchItem {
            channel: "quotes.A",
            msg_id: None,
            data: b"{}",
        };
        let full = batch(&[one, one, one]);
        assert_eq!(decode_batch(&full, 2), Err(BatchError::TooMany { max: 2 }));
        // Cut inside the second item's data.
        let cut = &full[..full.len() - 20];
        match decode_batch(cut, 10) {
            Err(BatchError::Truncated { index: 1, .. }) => {}
            other => panic!("{other:?}"),
        }
        // A data length far beyond the body.
        let mut huge = BATCH_MAGIC.to_vec();
        huge.extend_from_slice(&1u16.to_le_bytes());
        huge.push(b'q');
        huge.extend_from_slice(&0u16.to_le_bytes());
        huge.extend_from_slice(&u32::MAX.to_le_bytes());
        huge.extend_from_slice(b"{}");
        assert_eq!(
            decode_batch(&huge, 10),
            Err(BatchError::Truncated {
                index: 0,
                field: "data",
                at: huge.len()
            })
        );
        let mut bad = BATCH_MAGIC.to_vec();
        bad.extend_from_slice(&2u16.to_le_bytes());
        bad.extend_from_slice(&[0xff, 0xfe]);
        assert_eq!(
            decode_batch(&bad, 10),
            Err(BatchError::NotUtf8 {
                index: 0,
                field: "channel"
            })
        );
    }

    #[test]
    fn acks_round_trip_and_reject_garbage() {
        let mut out = Vec::new();
        encode_acks_header(&mut out, 2);
        push_ack(&mut out, 7, false);
        push_ack(&mut out, u64::MAX, true);
        assert_eq!(decode_acks(&out), Some(vec![(7, false), (u64::MAX, true)]));
        assert_eq!(decode_acks(&out[..out.len() - 1]), None);
        assert_eq!(decode_acks(b"TWA1"), None);
    }

    proptest! {
        #[test]
        fn any_items_round_trip(items in proptest::collection::vec(
            ("[a-z.]{0,40}", proptest::option::of("[ -~]{1,20}"), proptest::collection::vec(any::<u8>(), 0..200)),
            1..20,
        )) {
            let items: Vec<BatchItem<'_>> = items
                .iter()
                .map(|(c, m, d)| BatchItem { channel: c, msg_id: m.as_deref(), data: d })
                .collect();
            let body = batch(&items);
            prop_assert_eq!(decode_batch(&body, 100).unwrap(), items);
        }

        #[test]
        fn any_bytes_decode_or_fail_cleanly(body in proptest::collection::vec(any::<u8>(), 0..300)) {
            let mut with_magic = BATCH_MAGIC.to_vec();
            with_magic.extend_from_slice(&body);
            if let Ok(items) = decode_batch(&with_magic, 50) {
                // Re-encoding what was decoded gives back the same bytes: nothing skipped.
                prop_assert_eq!(batch(&items), with_magic);
            }
        }
    }
}
