//! UNSUBSCRIBE (spec 3.10).

use bytes::{BufMut, BytesMut};

use crate::codec::{field_len, write_field, Reader};
use crate::error::Error;
use crate::property::{Ctx, Properties};
use crate::topic::validate_topic_filter;
use crate::types::{PacketType, ProtocolVersion};

/// Unsubscribe request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unsubscribe {
    /// Packet identifier (non-zero).
    pub packet_id: u16,
    /// At least one topic filter.
    pub filters: Vec<String>,
    /// UNSUBSCRIBE properties (v5): User Property.
    pub properties: Properties,
}

impl Unsubscribe {
    pub(crate) fn read(r: &mut Reader, version: ProtocolVersion) -> Result<Self, Error> {
        let packet_id = r.packet_id()?;
        let properties = match version {
            ProtocolVersion::V4 => Properties::new(),
            ProtocolVersion::V5 => Properties::read(r, Ctx::Unsubscribe)?,
        };
        let mut filters = Vec::new();
        while !r.is_empty() {
            let filter = r.string("topic filter")?;
            validate_topic_filter(&filter)?;
            filters.push(filter);
        }
        if filters.is_empty() {
            return Err(r.protocol("no topic filter")); // [MQTT-3.10.3-2]
        }
        Ok(Self {
            packet_id,
            filters,
            properties,
        })
    }

    pub(crate) fn len(&self, version: ProtocolVersion) -> Result<usize, Error> {
        const P: PacketType = PacketType::Unsubscribe;
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
            len += field_len(f.len(), P)?;
        }
        Ok(len)
    }

    pub(crate) fn write(&self, version: ProtocolVersion, out: &mut BytesMut) -> Result<(), Error> {
        out.put_u16(self.packet_id);
        if version == ProtocolVersion::V5 {
            let body = self.properties.body_len(PacketType::Unsubscribe)?;
            self.properties.write(body, out);
        }
        for f in &self.filters {
            write_field(out, f.as_bytes());
        }
        Ok(())
    }
}
