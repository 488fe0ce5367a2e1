//! The [`Packet`] enum, the fixed header, and the `decode` / `encode` entry points.
//!
//! One file per packet type holds its body layout for both protocol versions.

pub(crate) mod ack;
pub mod auth;
pub mod connack;
pub mod connect;
pub mod disconnect;
pub mod puback;
pub mod pubcomp;
pub mod publish;
pub mod pubrec;
pub mod pubrel;
pub mod suback;
pub mod subscribe;
pub mod unsuback;
pub mod unsubscribe;

use bytes::{Buf, BufMut, BytesMut};

use crate::codec::{read_varint, varint_len, write_varint, Reader, VARINT_MAX};
use crate::error::Error;
use crate::types::{PacketType, ProtocolVersion, QoS};

/// Largest remaining length the 4-byte variable byte integer can express (256 MB - 1).
pub const MAX_REMAINING_LENGTH: usize = VARINT_MAX as usize;

/// One MQTT control packet, in the same shape for 3.1.1 and 5.0.
///
/// Fields that only exist in MQTT 5 (properties, most reason codes) are ignored when encoding
/// for 3.1.1 and come back empty / `Success` when decoding 3.1.1, so a broker can forward a v5
/// PUBLISH to a v4 subscriber as is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Packet {
    /// CONNECT.
    Connect(connect::Connect),
    /// CONNACK.
    ConnAck(connack::ConnAck),
    /// PUBLISH.
    Publish(publish::Publish),
    /// PUBACK.
    PubAck(puback::PubAck),
    /// PUBREC.
    PubRec(pubrec::PubRec),
    /// PUBREL.
    PubRel(pubrel::PubRel),
    /// PUBCOMP.
    PubComp(pubcomp::PubComp),
    /// SUBSCRIBE.
    Subscribe(subscribe::Subscribe),
    /// SUBACK.
    SubAck(suback::SubAck),
    /// UNSUBSCRIBE.
    Unsubscribe(unsubscribe::Unsubscribe),
    /// UNSUBACK.
    UnsubAck(unsuback::UnsubAck),
    /// PINGREQ.
    PingReq,
    /// PINGRESP.
    PingResp,
    /// DISCONNECT.
    Disconnect(disconnect::Disconnect),
    /// AUTH (MQTT 5 only).
    Auth(auth::Auth),
}

impl Packet {
    /// The control packet type.
    pub fn packet_type(&self) -> PacketType {
        match self {
            Self::Connect(_) => PacketType::Connect,
            Self::ConnAck(_) => PacketType::ConnAck,
            Self::Publish(_) => PacketType::Publish,
            Self::PubAck(_) => PacketType::PubAck,
            Self::PubRec(_) => PacketType::PubRec,
            Self::PubRel(_) => PacketType::PubRel,
            Self::PubComp(_) => PacketType::PubComp,
            Self::Subscribe(_) => PacketType::Subscribe,
            Self::SubAck(_) => PacketType::SubAck,
            Self::Unsubscribe(_) => PacketType::Unsubscribe,
            Self::UnsubAck(_) => PacketType::UnsubAck,
            Self::PingReq => PacketType::PingReq,
            Self::PingResp => PacketType::PingResp,
            Self::Disconnect(_) => PacketType::Disconnect,
            Self::Auth(_) => PacketType::Auth,
        }
    }
}

/// Validates the first header byte: type nibble and the flag bits fixed by the spec (2.1.3).
fn check_first_byte(first: u8, version: ProtocolVersion) -> Result<PacketType, Error> {
    let nibble = first >> 4;
    let flags = first & 0x0F;
    let packet = match PacketType::from_nibble(nibble) {
        Some(PacketType::Auth) if version == ProtocolVersion::V4 => None,
        other => other,
    }
    .ok_or(Error::ReservedPacketType { nibble, version })?;
    let expected = match packet {
        PacketType::Publish => {
            let qos = (flags >> 1) & 0b11;
            if qos == 3 {
                return Err(Error::InvalidQos { packet, value: qos });
            }
            return Ok(packet);
        }
        PacketType::PubRel | PacketType::Subscribe | PacketType::Unsubscribe => 0b0010,
        _ => 0,
    };
    if flags != expected {
        return Err(Error::InvalidHeaderFlags { packet, flags });
    }
    Ok(packet)
}

/// Decodes one packet from the front of `buf`.
///
/// Returns `Ok(None)` (consuming nothing) until the whole packet is buffered, then consumes
/// exactly that packet. The size check uses the fixed header alone, so an oversized packet fails
/// with [`Error::PacketTooLarge`] before its body is received or buffered. `max_packet_size`
/// counts the whole packet, fixed header included, like the MQTT 5 Maximum Packet Size.
///
/// A CONNECT is decoded with the protocol level written in it, whatever `version` says.
/// Payloads, binary fields and will messages are zero-copy slices of `buf`'s storage.
pub fn decode(
    buf: &mut BytesMut,
    version: ProtocolVersion,
    max_packet_size: usize,
) -> Result<Option<Packet>, Error> {
    let Some(&first) = buf.first() else {
        return Ok(None);
    };
    let packet = check_first_byte(first, version)?;
    let Some((remaining, len_bytes)) = read_varint(&buf[1..])? else {
        return Ok(None);
    };
    let header_len = 1 + len_bytes;
    let total = header_len + remaining as usize;
    if total > max_packet_size {
        return Err(Error::PacketTooLarge {
            size: total,
            max: max_packet_size,
        });
    }
    if buf.len() < total {
        // No `reserve(total)` here: a 5-byte header would make us allocate up to
        // `max_packet_size` per connection before the peer sent anything. Grow as bytes arrive.
        return Ok(None);
    }
    let mut frame = buf.split_to(total).freeze();
    frame.advance(header_len);
    let mut r = Reader::new(frame, packet);
    let decoded = match packet {
        PacketType::Connect => Packet::Connect(connect::Connect::read(&mut r)?),
        PacketType::ConnAck => Packet::ConnAck(connack::ConnAck::read(&mut r, version)?),
        PacketType::Publish => Packet::Publish(publish::Publish::read(&mut r, first, version)?),
        PacketType::PubAck => Packet::PubAck(puback::PubAck::read(&mut r, version)?),
        PacketType::PubRec => Packet::PubRec(pubrec::PubRec::read(&mut r, version)?),
        PacketType::PubRel => Packet::PubRel(pubrel::PubRel::read(&mut r, version)?),
        PacketType::PubComp => Packet::PubComp(pubcomp::PubComp::read(&mut r, version)?),
        PacketType::Subscribe => Packet::Subscribe(subscribe::Subscribe::read(&mut r, version)?),
        PacketType::SubAck => Packet::SubAck(suback::SubAck::read(&mut r, version)?),
        PacketType::Unsubscribe => {
            Packet::Unsubscribe(unsubscribe::Unsubscribe::read(&mut r, version)?)
        }
        PacketType::UnsubAck => Packet::UnsubAck(unsuback::UnsubAck::read(&mut r, version)?),
        PacketType::PingReq => Packet::PingReq,
        PacketType::PingResp => Packet::PingResp,
        PacketType::Disconnect => {
            Packet::Disconnect(disconnect::Disconnect::read(&mut r, version)?)
        }
        PacketType::Auth => Packet::Auth(auth::Auth::read(&mut r)?),
    };
    r.finish()?;
    Ok(Some(decoded))
}

/// First header byte and remaining length of `packet`.
fn header(packet: &Packet, version: ProtocolVersion) -> Result<(u8, usize), Error> {
    let ty = packet.packet_type();
    let (flags, remaining) = match packet {
        Packet::Connect(p) => (0, p.len()?),
        Packet::ConnAck(p) => (0, p.len(version)?),
        Packet::Publish(p) => (p.flags(), p.len(version)?),
        Packet::PubAck(p) => (0, p.len(version)?),
        Packet::PubRec(p) => (0, p.len(version)?),
        Packet::PubRel(p) => (0b0010, p.len(version)?),
        Packet::PubComp(p) => (0, p.len(version)?),
        Packet::Subscribe(p) => (0b0010, p.len(version)?),
        Packet::SubAck(p) => (0, p.len(version)?),
        Packet::Unsubscribe(p) => (0b0010, p.len(version)?),
        Packet::UnsubAck(p) => (0, p.len(version)?),
        Packet::PingReq | Packet::PingResp => (0, 0),
        Packet::Disconnect(p) => (0, p.len(version)?),
        Packet::Auth(p) => {
            if version == ProtocolVersion::V4 {
                return Err(Error::Unencodable {
                    packet: ty,
                    reason: "AUTH does not exist in MQTT 3.1.1",
                });
            }
            (0, p.len()?)
        }
    };
    if remaining > MAX_REMAINING_LENGTH {
        return Err(Error::Unencodable {
            packet: ty,
            reason: "remaining length above 268435455",
        });
    }
    Ok(((ty as u8) << 4 | flags, remaining))
}

/// Size of `packet` on the wire, fixed header included, to compare with the peer's
/// Maximum Packet Size before sending (a broker must drop, not send, a packet that exceeds it).
pub fn encoded_len(packet: &Packet, version: ProtocolVersion) -> Result<usize, Error> {
    let (_, remaining) = header(packet, version)?;
    Ok(1 + varint_len(remaining) + remaining)
}

/// Appends `packet` to `out` in the wire format of `version` (a CONNECT uses its own level).
///
/// On error nothing is written. MQTT 5 only fields are dropped for 3.1.1 (see [`Packet`]).
pub fn encode(packet: &Packet, version: ProtocolVersion, out: &mut BytesMut) -> Result<(), Error> {
    let (first, remaining) = header(packet, version)?;
    out.reserve(1 + varint_len(remaining) + remaining);
    let start = out.len();
    out.put_u8(first);
    write_varint(out, remaining);
    let body_start = out.len();
    if let Err(err) = write_body(packet, version, out) {
        out.truncate(start);
        return Err(err);
    }
    // The length pass and the write pass are separate code; a mismatch would corrupt the stream.
    debug_assert_eq!(out.len() - body_start, remaining, "{first:#x}");
    Ok(())
}

fn write_body(packet: &Packet, version: ProtocolVersion, out: &mut BytesMut) -> Result<(), Error> {
    match packet {
        Packet::Connect(p) => p.write(out),
        Packet::ConnAck(p) => p.write(version, out),
        Packet::Publish(p) => p.write(version, out),
        Packet::PubAck(p) => p.write(version, out),
        Packet::PubRec(p) => p.write(version, out),
        Packet::PubRel(p) => p.write(version, out),
        Packet::PubComp(p) => p.write(version, out),
        Packet::Subscribe(p) => p.write(version, out),
        Packet::SubAck(p) => p.write(version, out),
        Packet::Unsubscribe(p) => p.write(version, out),
        Packet::UnsubAck(p) => p.write(version, out),
        Packet::PingReq | Packet::PingResp => Ok(()),
        Packet::Disconnect(p) => p.write(version, out),
        Packet::Auth(p) => p.write(out),
    }
}

/// Maps CONNECT's protocol name and level to a version (3.1.2.1 / 3.1.2.2).
fn protocol_from(name: &[u8], level: u8) -> Result<ProtocolVersion, Error> {
    if name == b"MQIsdp" {
        // MQTT 3.1 clients get "unacceptable protocol version", not a silent close.
        return Err(Error::UnsupportedProtocolVersion { level });
    }
    if name != b"MQTT" {
        return Err(Error::InvalidProtocolName);
    }
    ProtocolVersion::from_level(level).ok_or(Error::UnsupportedProtocolVersion { level })
}

/// Learns the protocol version from a CONNECT at the front of `buf`, without consuming it.
///
/// `Ok(None)` means more bytes are needed. Errors if the first packet is not a CONNECT
/// [MQTT-3.1.0-1] or names an unsupported protocol, so the broker can refuse early.
pub fn peek_connect_version(buf: &[u8]) -> Result<Option<ProtocolVersion>, Error> {
    let Some(&first) = buf.first() else {
        return Ok(None);
    };
    if first >> 4 != PacketType::Connect as u8 {
        return Err(Error::ProtocolViolation {
            packet: PacketType::Connect,
            reason: "first packet is not CONNECT",
        });
    }
    check_first_byte(first, ProtocolVersion::V5)?;
    let Some((_, len_bytes)) = read_varint(&buf[1..])? else {
        return Ok(None);
    };
    let body = &buf[1 + len_bytes..];
    let [hi, lo, rest @ ..] = body else {
        return Ok(None);
    };
    let name_len = usize::from(u16::from_be_bytes([*hi, *lo]));
    let (Some(name), Some(&level)) = (rest.get(..name_len), rest.get(name_len)) else {
        return Ok(None);
    };
    protocol_from(name, level).map(Some)
}

/// Reads the QoS bits at `shift` of a flags byte.
pub(crate) fn qos_at(flags: u8, shift: u8, packet: PacketType) -> Result<QoS, Error> {
    let value = (flags >> shift) & 0b11;
    QoS::from_u8(value).ok_or(Error::InvalidQos { packet, value })
}
