//! PUBLISH (spec 3.3).

use bytes::{BufMut, Bytes, BytesMut};

use super::qos_at;
use crate::codec::{field_len, Reader};
use crate::error::Error;
use crate::property::{Ctx, Properties};
use crate::topic::validate_topic_name;
use crate::types::{PacketType, ProtocolVersion, QoS};

/// Application message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Publish {
    /// Re-delivery of an earlier attempt (only with QoS > 0).
    pub dup: bool,
    /// Delivery QoS.
    pub qos: QoS,
    /// Retained message flag.
    pub retain: bool,
    /// Topic name; empty only in MQTT 5 when a Topic Alias property stands for it.
    pub topic: String,
    /// Packet identifier: non-zero for QoS 1/2, 0 (absent on the wire) for QoS 0.
    pub packet_id: u16,
    /// Payload, zero-copy from the receive buffer.
    pub payload: Bytes,
    /// PUBLISH properties (v5).
    pub properties: Properties,
}

impl Publish {
    /// A PUBLISH without properties; `packet_id` must be 0 for QoS 0 and non-zero otherwise.
    pub fn new(
        topic: impl Into<String>,
        qos: QoS,
        packet_id: u16,
        payload: impl Into<Bytes>,
    ) -> Self {
        Self {
            dup: false,
            qos,
            retain: false,
            topic: topic.into(),
            packet_id,
            payload: payload.into(),
            properties: Properties::new(),
        }
    }

    pub(crate) fn read(r: &mut Reader, first: u8, version: ProtocolVersion) -> Result<Self, Error> {
        let dup = first & 0x08 != 0;
        let qos = qos_at(first, 1, PacketType::Publish)?;
        let retain = first & 0x01 != 0;
        if dup && qos == QoS::AtMostOnce {
            return Err(r.malformed("DUP flag set on a QoS 0 message")); // [MQTT-3.3.1-2]
        }
        let topic = r.string("topic name")?;
        let packet_id = if qos == QoS::AtMostOnce {
            0
        } else {
            r.packet_id()?
        };
        let properties = match version {
            ProtocolVersion::V4 => Properties::new(),
            ProtocolVersion::V5 => Properties::read(r, Ctx::Publish)?,
        };
        // An empty topic is how MQTT 5 says "use the topic this alias was bound to".
        if !(topic.is_empty() && properties.topic_alias().is_some()) {
            validate_topic_name(&topic)?;
        }
        let payload = r.rest();
        Ok(Self {
            dup,
            qos,
            retain,
            topic,
            packet_id,
            payload,
            properties,
        })
    }

    pub(crate) fn flags(&self) -> u8 {
        u8::from(self.dup) << 3 | (self.qos as u8) << 1 | u8::from(self.retain)
    }

    pub(crate) fn len(&self, version: ProtocolVersion) -> Result<usize, Error> {
        const P: PacketType = PacketType::Publish;
        match (self.qos, self.packet_id) {
            (QoS::AtMostOnce, 0) => {}
            (QoS::AtMostOnce, _) => {
                return Err(Error::Unencodable {
                    packet: P,
                    reason: "QoS 0 message with a packet identifier",
                })
            }
            (_, 0) => return Err(Error::ZeroPacketId { packet: P }),
            _ => {}
        }
        if self.dup && self.qos == QoS::AtMostOnce {
            return Err(Error::Unencodable {
                packet: P,
                reason: "DUP flag on a QoS 0 message",
            });
        }
        if self.topic.is_empty()
            && (version == ProtocolVersion::V4 || self.properties.topic_alias().is_none())
        {
            return Err(Error::InvalidTopicName {
                reason: "empty topic name without a topic alias",
            });
        }
        let mut len = field_len(self.topic.len(), P)?;
        if self.qos != QoS::AtMostOnce {
            len += 2;
        }
        if version == ProtocolVersion::V5 {
            len += self.properties.encoded_len(P)?;
        }
        Ok(len + self.payload.len())
    }

    pub(crate) fn write(&self, version: ProtocolVersion, out: &mut BytesMut) -> Result<(), Error> {
        crate::codec::write_field(out, self.topic.as_bytes());
        if self.qos != QoS::AtMostOnce {
            out.put_u16(self.packet_id);
        }
        if version == ProtocolVersion::V5 {
            let body = self.properties.body_len(PacketType::Publish)?;
            self.properties.write(body, out);
        }
        out.put_slice(&self.payload);
        Ok(())
    }
}
