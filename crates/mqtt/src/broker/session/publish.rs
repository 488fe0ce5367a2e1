//! PUBLISH packets from a body cached once per message ([`publish_body`]) for every
//! subscriber, and their encoded length, checked against the client's Maximum Packet Size.

use bytes::{BufMut, Bytes, BytesMut};

use crate::{varint_len, write_varint, ProtocolVersion, QoS};

/// The part of a PUBLISH shared by every subscriber and both protocol versions: the topic
/// field and the payload. The driver builds it once per message (and caches it there).
pub fn publish_body(topic: &str, payload: &[u8]) -> Bytes {
    let mut b = BytesMut::with_capacity(2 + topic.len() + payload.len());
    // Channel names are far below 64 KiB; a longer one could not have been subscribed.
    b.put_u16(u16::try_from(topic.len()).unwrap_or(u16::MAX));
    b.put_slice(topic.as_bytes());
    b.put_slice(payload);
    b.freeze()
}

fn remaining_len(body_len: usize, version: ProtocolVersion, qos: QoS) -> usize {
    body_len
        + if qos == QoS::AtMostOnce { 0 } else { 2 }
        + if version == ProtocolVersion::V5 { 1 } else { 0 }
}

pub(super) fn packet_len(body_len: usize, version: ProtocolVersion, qos: QoS) -> usize {
    let rem = remaining_len(body_len, version, qos);
    1 + varint_len(rem) + rem
}

/// Writes a PUBLISH from the cached body: header, topic, packet id (QoS > 0), an empty
/// property block (v5), payload. Equivalent to `encode(Packet::Publish ..)` without
/// re-encoding the payload for every subscriber. `dup` marks a resend of an unacknowledged
/// QoS 1/2 message under its original packet id.
pub(super) fn write_publish(
    out: &mut BytesMut,
    body: &Bytes,
    version: ProtocolVersion,
    (qos, pid): (QoS, u16),
    retain: bool,
    dup: bool,
) {
    let topic_field = body
        .get(..2)
        .map_or(0, |b| 2 + usize::from(u16::from_be_bytes([b[0], b[1]])));
    let (topic, payload) = body.split_at(topic_field.min(body.len()));
    let rem = remaining_len(body.len(), version, qos);
    out.reserve(5 + rem);
    out.put_u8(0x30 | u8::from(dup) << 3 | (qos as u8) << 1 | u8::from(retain));
    write_varint(out, rem);
    out.put_slice(topic);
    if qos != QoS::AtMostOnce {
        out.put_u16(pid);
    }
    if version == ProtocolVersion::V5 {
        out.put_u8(0);
    }
    out.put_slice(payload);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{encode, Packet, Publish};

    #[test]
    fn cached_publish_matches_the_codec() {
        let body = publish_body("chat/lobby", br#"{"text":"hi"}"#);
        for version in [ProtocolVersion::V4, ProtocolVersion::V5] {
            for (qos, pid) in [
                (QoS::AtMostOnce, 0),
                (QoS::AtLeastOnce, 9),
                (QoS::ExactlyOnce, 300),
            ] {
                for (retain, dup) in [
                    (false, false),
                    (true, false),
                    (false, qos != QoS::AtMostOnce),
                ] {
                    let mut ours = BytesMut::new();
                    write_publish(&mut ours, &body, version, (qos, pid), retain, dup);
                    let mut p = Publish::new("chat/lobby", qos, pid, &br#"{"text":"hi"}"#[..]);
                    p.retain = retain;
                    p.dup = dup;
                    let mut theirs = BytesMut::new();
                    encode(&Packet::Publish(p), version, &mut theirs).unwrap();
                    assert_eq!(
                        ours, theirs,
                        "{version:?} {qos:?} retain={retain} dup={dup}"
                    );
                    assert_eq!(packet_len(body.len(), version, qos), theirs.len());
                }
            }
        }
    }
}
