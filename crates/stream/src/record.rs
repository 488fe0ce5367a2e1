//! How a publication sits in an embedded log record: key = channel name; value = version byte,
//! msg_id length byte, msg_id, then the JSON data. The offset and timestamp are the log's own.
//! Public so tools that must read a log file without a running stream (fixtures, fuzzing)
//! share this one definition; everything else goes through [`crate::Stream`].

use bytes::{Buf, Bytes};
use tickwire_log::Record;
use tickwire_model::{Channel, Publication};

const VERSION: u8 = 1;

/// Clears `out` and writes a record value for `msg_id` + `data`.
pub fn encode_value(msg_id: Option<&str>, data: &[u8], out: &mut Vec<u8>) {
    let id = msg_id.unwrap_or("").as_bytes();
    out.clear();
    out.reserve(2 + id.len() + data.len());
    write_header(msg_id, out);
    out.extend_from_slice(data);
}

/// Appends the value header (version, msg_id) to `out`; the JSON data must follow. For writers
/// that build many values into one buffer without copying.
pub fn write_header(msg_id: Option<&str>, out: &mut Vec<u8>) {
    let id = msg_id.unwrap_or("").as_bytes();
    // msg ids are capped at 128 bytes by every edge; the cut cannot happen in practice and the
    // cast is guarded anyway.
    let n = id.len().min(255);
    out.push(VERSION);
    out.push(n as u8);
    out.extend_from_slice(&id[..n]);
}

/// Splits a record value into its msg_id and JSON data; `None` if this version cannot read it.
/// Takes the value by value: the data is the same bytes advanced past the header, with no
/// reference count taken and dropped again per record.
pub fn decode_value(mut value: Bytes) -> Option<(Option<String>, Bytes)> {
    if value.len() < 2 || value[0] != VERSION {
        return None;
    }
    let n = value[1] as usize;
    let id = value.get(2..2 + n)?;
    let id = if n == 0 {
        None
    } else {
        Some(std::str::from_utf8(id).ok()?.to_string())
    };
    value.advance(2 + n);
    Some((id, value))
}

/// Rebuilds the publication; `None` for a record this version cannot read.
pub fn decode(rec: Record) -> Option<Publication> {
    let key = std::str::from_utf8(&rec.key).ok()?;
    // Readers decode every record of a busy namespace: the per-thread cache saves validating
    // and allocating the same few thousand names again and again.
    let channel = Channel::parse_cached(key).ok()?;
    let (msg_id, data) = decode_value(rec.value)?;
    Some(Publication {
        channel,
        offset: rec.offset,
        timestamp: rec.timestamp,
        msg_id,
        data,
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
        let p = decode(rec.clone()).unwrap();
        assert_eq!(p.msg_id.as_deref(), Some("c-1"));
        assert_eq!(&p.data[..], br#"{"a":1}"#);
        assert_eq!(p.offset, 5);
        encode_value(None, b"1", &mut buf);
        let rec = Record {
            value: Bytes::from(buf),
            ..rec
        };
        assert_eq!(decode(rec.clone()).unwrap().msg_id, None);
        let bad = Record {
            value: Bytes::from_static(&[9, 0]),
            ..rec
        };
        assert!(decode(bad).is_none());
    }
}
