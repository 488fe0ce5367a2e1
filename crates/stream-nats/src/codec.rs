//! How a publication sits in JetStream: subject `<prefix>.<channel>` (the channel name is
//! already dotted, namespace first), payload = the JSON data byte for byte, the `msg_id` in
//! `Nats-Msg-Id` as `<channel>/<escaped id>` (JetStream deduplicates per stream, Tickwire per
//! channel), offset = stream sequence − 1 (JetStream counts from 1, offsets from 0), timestamp
//! = the time JetStream stored it (the same on every replica, so every node derives the same
//! candles from it).

use bytes::Bytes;
use tickwire_model::{Channel, Offset, Publication};

/// The header JetStream deduplicates on.
pub(crate) const MSG_ID: &str = "Nats-Msg-Id";

/// The subject a channel's messages are published on.
pub(crate) fn subject(prefix: &str, channel: &Channel) -> String {
    let mut s = String::with_capacity(prefix.len() + 1 + channel.as_str().len());
    s.push_str(prefix);
    s.push('.');
    s.push_str(channel.as_str());
    s
}

/// Every subject of a namespace.
pub(crate) fn namespace_subjects(prefix: &str, namespace: &str) -> String {
    format!("{prefix}.{namespace}.>")
}

/// The channel of a subject, if it is one of ours.
pub(crate) fn channel_of(prefix: &str, subject: &str) -> Option<Channel> {
    let name = subject.strip_prefix(prefix)?.strip_prefix('.')?;
    Channel::parse_cached(name).ok()
}

/// `Nats-Msg-Id` for a channel's msg_id. Header values cannot carry CR/LF and NATS trims
/// spaces, so every byte outside printable ASCII (and `%`) is escaped as `%XX`: the id comes
/// back exactly.
pub(crate) fn dedup_key(channel: &Channel, msg_id: &str) -> String {
    let mut s = String::with_capacity(channel.as_str().len() + 1 + msg_id.len());
    s.push_str(channel.as_str());
    s.push('/');
    for b in msg_id.bytes() {
        if (0x21..=0x7e).contains(&b) && b != b'%' {
            s.push(char::from(b));
        } else {
            s.push_str(&format!("%{b:02X}"));
        }
    }
    s
}

/// The msg_id inside a `Nats-Msg-Id` written by [`dedup_key`]; `None` for anything else.
pub(crate) fn msg_id_of(key: &str) -> Option<String> {
    let (_, escaped) = key.split_once('/')?;
    let mut out = Vec::with_capacity(escaped.len());
    let bytes = escaped.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = escaped.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// A stream sequence as an offset.
pub(crate) fn offset_of(seq: u64) -> Offset {
    seq.saturating_sub(1)
}

/// An offset as a stream sequence.
pub(crate) fn seq_of(offset: Offset) -> u64 {
    offset + 1
}

/// Unix nanoseconds of a JetStream time.
pub(crate) fn nanos(t: time::OffsetDateTime) -> u64 {
    u64::try_from(t.unix_timestamp_nanos()).unwrap_or(0)
}

/// Builds the publication of a stored message.
pub(crate) fn publication(
    prefix: &str,
    subject: &str,
    seq: u64,
    timestamp: u64,
    msg_id_header: Option<&str>,
    data: Bytes,
) -> Option<Publication> {
    Some(Publication {
        channel: channel_of(prefix, subject)?,
        offset: offset_of(seq),
        timestamp,
        msg_id: msg_id_header.and_then(msg_id_of),
        data,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn msg_ids_round_trip_through_the_header() {
        let ch = Channel::parse("chat.lobby").unwrap();
        for id in ["c-1", "a b", "x\r\ny", "100%", "ünï", "/slash/"] {
            let key = dedup_key(&ch, id);
            assert!(!key.contains(['\r', '\n', ' ']), "{key}");
            assert_eq!(msg_id_of(&key).as_deref(), Some(id), "{key}");
        }
        let other = Channel::parse("chat.other").unwrap();
        assert_ne!(dedup_key(&ch, "x"), dedup_key(&other, "x"));
        assert_eq!(msg_id_of("no-slash"), None);
    }

    #[test]
    fn subjects_map_to_channels() {
        let ch = Channel::parse("candles.EURUSD.1m").unwrap();
        let s = subject("tw", &ch);
        assert_eq!(s, "tw.candles.EURUSD.1m");
        assert_eq!(channel_of("tw", &s), Some(ch));
        assert_eq!(channel_of("tw", "other.candles.x"), None);
        assert_eq!(namespace_subjects("tw", "chat"), "tw.chat.>");
        assert_eq!(offset_of(seq_of(41)), 41);
    }
}
