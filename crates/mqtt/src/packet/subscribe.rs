//! SUBSCRIBE (spec 3.8).

use bytes::{BufMut, BytesMut};

use super::qos_at;
use crate::codec::{field_len, write_field, Reader};
use crate::error::Error;
use crate::property::{Ctx, Properties};
use crate::topic::{parse_shared, validate_topic_filter};
use crate::types::{PacketType, ProtocolVersion, QoS};

/// When the server sends retained messages for a new subscription (v5).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum RetainHandling {
    /// 0: send retained messages at subscribe time.
    #[default]
    SendAtSubscribe = 0,
    /// 1: send them only if the subscription did not exist.
    SendIfNew = 1,
    /// 2: never send them.
    DoNotSend = 2,
}

/// Subscription options byte (3.8.3.1); 3.1.1 only has the QoS.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct SubscriptionOptions {
    /// Maximum QoS the client wants.
    pub qos: QoS,
    /// Do not send the client its own publications (v5).
    pub no_local: bool,
    /// Keep the retain flag of forwarded messages as published (v5).
    pub retain_as_published: bool,
    /// Retained message handling (v5).
    pub retain_handling: RetainHandling,
}

impl SubscriptionOptions {
    fn read(byte: u8, version: ProtocolVersion, r: &Reader) -> Result<Self, Error> {
        let qos = qos_at(byte, 0, PacketType::Subscribe)?;
        if version == ProtocolVersion::V4 {
            if byte & 0xFC != 0 {
                return Err(r.malformed("reserved subscription option bits set"));
            }
            return Ok(Self {
                qos,
                ..Self::default()
            });
        }
        if byte & 0xC0 != 0 {
            return Err(r.malformed("reserved subscription option bits set"));
        }
        let retain_handling = match (byte >> 4) & 0b11 {
            0 => RetainHandling::SendAtSubscribe,
            1 => RetainHandling::SendIfNew,
            2 => RetainHandling::DoNotSend,
            _ => return Err(r.protocol("retain handling 3")),
        };
        Ok(Self {
            qos,
            no_local: byte & 0x04 != 0,
            retain_as_published: byte & 0x08 != 0,
            retain_handling,
        })
    }

    fn byte(&self, version: ProtocolVersion) -> u8 {
        let qos = self.qos as u8;
        match version {
            ProtocolVersion::V4 => qos,
            ProtocolVersion::V5 => {
                qos | u8::from(self.no_local) << 2
                    | u8::from(self.retain_as_published) << 3
                    | (self.retain_handling as u8) << 4
            }
        }
    }
}

/// One topic filter with its options.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubscribeFilter {
    /// Topic filter (validated on decode, including `$share/{group}/...`).
    pub filter: String,
    /// Options.
    pub options: SubscriptionOptions,
}

impl SubscribeFilter {
    /// A filter with default options at `qos`.
    pub fn new(filter: impl Into<String>, qos: QoS) -> Self {
        Self {
            filter: filter.into(),
            options: SubscriptionOptions {
                qos,
                ..SubscriptionOptions::default()
            },
        }
    }
}

/// Subscribe request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subscribe {
    /// Packet identifier (non-zero).
    pub packet_id: u16,
    /// At least one filter.
    pub filters: Vec<SubscribeFilter>,
    /// SUBSCRIBE properties (v5): Subscription Identifier, User Property.
    pub properties: Properties,
}

impl Subscribe {
    pub(crate) fn read(r: &mut Reader, version: ProtocolVersion) -> Result<Self, Error> {
        let packet_id = r.packet_id()?;
        let properties = match version {
            ProtocolVersion::V4 => Properties::new(),
            ProtocolVersion::V5 => Properties::read(r, Ctx::Subscribe)?,
        };
        let mut filters = Vec::new();
        while !r.is_empty() {
            let filter = r.string("topic filter")?;
            validate_topic_filter(&filter)?;
            let options = SubscriptionOptions::read(r.u8("subscription options")?, version, r)?;
            if options.no_local && parse_shared(&filter)?.is_some() {
                return Err(r.protocol("no local on a shared subscription")); // [MQTT-3.8.3-4]
            }
            filters.push(SubscribeFilter { filter, options });
        }
        if filters.is_empty() {
            return Err(r.protocol("no topic filter")); // [MQTT-3.8.3-2]
        }
        Ok(Self {
            packet_id,
            filters,
            properties,
        })
    }

    pub(crate) fn len(&self, version: ProtocolVersion) -> Result<usize, Error> {
        const P: PacketType = PacketType::Subscribe;
        if self.packet_id == 0 {
            return Err(Error::ZeroPacketId { packet: P });
        }
        if self.filters.is_empty() {
            return Err(Error::Unencodable {
                packet: P,
                reason: "no topic filter",
            });
        }
        let mut len = 2;
        if version == ProtocolVersion::V5 {
            len += self.properties.encoded_len(P)?;
        }
        for f in &self.filters {
            len += field_len(f.filter.len(), P)? + 1;
        }
        Ok(len)
    }

    pub(crate) fn write(&self, version: ProtocolVersion, out: &mut BytesMut) -> Result<(), Error> {
        out.put_u16(self.packet_id);
        if version == ProtocolVersion::V5 {
            let body = self.properties.body_len(PacketType::Subscribe)?;
            self.properties.write(body, out);
        }
        for f in &self.filters {
            write_field(out, f.filter.as_bytes());
            out.put_u8(f.options.byte(version));
        }
        Ok(())
    }
}
