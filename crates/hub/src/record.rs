//! How a publication sits in a log record: key = channel name; value = version byte, msg_id
//! length byte, msg_id, then the JSON data. The offset and timestamp are the log's own.

use bytes::Bytes;
use tickwire_log::Record;
use tickwire_model::{Channel, Publication};

const VERSION: u8 = 1;

pub(crate) fn encode_value(msg_id: Option<&str>, data: &[u8], out: &mut Vec<u8>) {
    let id = msg_id.unwrap_or("").as_bytes();
    out.clear();
    out.reserve(2 + id.len() + data.len());
    out.push(VERSION);
    // msg ids are capped at 128 bytes by every edge; truncation cannot happen in practice and
    // the cast is guarded anyway.
    let n = id.len().min(255);
    out.push(n as u8);
    out.extend_from_slice(&id[..n]);
    out.extend_from_slice(data);
}

/// Rebuilds the publication; `None` for a record this version cannot read (logged by the caller).
pub(crate) fn decode(rec: &Record) -> Option<Publication> {
    let key = std::str::from_utf8(&rec.key).ok()?;
    let channel = Channel::parse(key).ok()?;
    let v = &rec.value;
    if v.len() < 2 || v[0] != VERSION {
        return None;
    }
    let n = v[1] as usize;
    if v.len() < 2 + n {
        return None;
    }
    let msg_id = if n == 0 {
        None
    } else {
        Some(std::str::from_utf8(&v[2..2 + n]).ok()?.to_string())
    };
    let data: Bytes = rec.value.slice(2 + n..);
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
