//! How a publication sits in a log record: key = channel name; value = version byte, msg_id
//! length byte, msg_id, then the JSON data. The offset and timestamp are the log's own.
//! Public so tools that read or write a namespace log directly (the candle rebuild, offline
//! import) share this one definition.

use bytes::Bytes;
use tickwire_log::Record;
use tickwire_model::{Channel, Publication};

const VERSION: u8 = 1;

/// Clears `out` and writes a record value for `msg_id` + `data`.
pub fn encode_value(msg_id: Option<&str>, data: &[u8], out: &mut Vec<u8>) {
    let id = msg_id.unwrap_or("").as_bytes();
    out.clear();
    out.reserve(2 + id.len() + data.len());
    // msg ids are capped at 128 bytes by every edge; truncation cannot happen in practice and
    // the cast is guarded anyway.
    write_header(msg_id, out);
    out.extend_from_slice(data);
}

/// Appends the value header (version, msg_id) to `out`; the JSON data must follow. For writers
/// that build many values into one buffer without copying.
pub fn write_header(msg_id: Option<&str>, out: &mut Vec<u8>) {
    let id = msg_id.unwrap_or("").as_bytes();
    let n = id.len().min(255);
    out.push(VERSION);
    out.push(n as u8);
    out.extend_from_slice(&id[..n]);
}

/// Splits a record value into its msg_id and JSON data; `None` if this version cannot read it.
pub fn decode_value(value: &Bytes) -> Option<(Option<&str>, Bytes)> {
    if value.len() < 2 || value[0] != VERSION {
        return None;
    }
    let n = value[1] as usize;
    let id = value.get(2..2 + n)?;
    let id = if n == 0 {
        None
    } else {
        Some(std::str::from_utf8(id).ok()?)
    };
    Some((id, value.slice(2 + n..)))
}

/// Rebuilds the publication; `None` for a record this version cannot read (logged by the caller).
pub fn decode(rec: &Record) -> Option<Publication> {
    let key = std::str::from_utf8(&rec.key).ok()?;
    let channel = Channel::parse(key).ok()?;
    let (msg_id, data) = decode_value(&rec.value)?;
    let msg_id = msg_id.map(str::to_string);
    Some(Publication {
        channel,
        offset: rec.offset,
        timestamp: rec.timestamp,
        msg_id,
        data,
    })
}

/// What [`scan_channel`] found.
pub(crate) struct Scan {
    pub messages: Vec<std::sync::Arc<crate::Message>>,
    /// Where to continue: every offset below it was scanned (or is at/after `until`).
    pub next: tickwire_model::Offset,
    /// The log had nothing more from `from` (retention, or the end).
    pub exhausted: bool,
}

/// Reads a namespace log from `from` and keeps one channel's records, stopping at `until`,
/// after `max_messages` matches, or after `max_records` records of any channel. Shared by
/// history paging and by subscribers catching up from behind the in-memory ring.
pub(crate) fn scan_channel(
    reader: &tickwire_log::LogReader,
    key: &[u8],
    from: tickwire_model::Offset,
    until: tickwire_model::Offset,
    max_messages: usize,
    max_records: usize,
) -> Result<Scan, tickwire_log::Error> {
    let mut cursor = from.max(reader.start_offset());
    let mut scanned = 0usize;
    let mut messages = Vec::new();
    while messages.len() < max_messages && cursor < until && scanned < max_records {
        let recs = reader.read(cursor, (max_records - scanned).min(4096), 4 << 20)?;
        if recs.is_empty() {
            return Ok(Scan {
                messages,
                next: cursor,
                exhausted: true,
            });
        }
        for rec in recs {
            if rec.offset >= until {
                return Ok(Scan {
                    messages,
                    next: until,
                    exhausted: false,
                });
            }
            if messages.len() >= max_messages {
                break;
            }
            scanned += 1;
            cursor = rec.offset + 1;
            if rec.key.as_ref() == key {
                if let Some(p) = decode(&rec) {
                    messages.push(std::sync::Arc::new(crate::Message::new(p)));
                }
            }
        }
    }
    Ok(Scan {
        messages,
        next: cursor,
        exhausted: false,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let mut buf = Vec::new();
        encode_value(Some("c-1"), br#"{"a":1}"#, &mut buf);
        let rec = Record {
            offset: 5,
            timestamp: 9,
            key: Bytes::from_static(b"chat.lobby"),
            value: Bytes::from(buf.clone()),
        };
        let p = decode(&rec).unwrap();
        assert_eq!(p.msg_id.as_deref(), Some("c-1"));
        assert_eq!(&p.data[..], br#"{"a":1}"#);
        assert_eq!(p.offset, 5);
        encode_value(None, b"1", &mut buf);
        let rec = Record {
            value: Bytes::from(buf),
            ..rec
        };
        assert_eq!(decode(&rec).unwrap().msg_id, None);
        let bad = Record {
            value: Bytes::from_static(&[9, 0]),
            ..rec
        };
        assert!(decode(&bad).is_none());
    }
}
