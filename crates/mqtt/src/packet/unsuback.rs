//! UNSUBACK (spec 3.11).

use bytes::{BufMut, BytesMut};

use crate::codec::Reader;
use crate::error::Error;
use crate::property::{Ctx, Properties};
use crate::reason::ReasonCode;
use crate::types::{PacketType, ProtocolVersion};

/// Unsubscribe acknowledgment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnsubAck {
    /// Identifier of the UNSUBSCRIBE.
    pub packet_id: u16,
    /// One code per filter (v5); 3.1.1 has none, so it is empty there.
    pub reason_codes: Vec<ReasonCode>,
    /// UNSUBACK properties (v5).
    pub properties: Properties,
}

impl UnsubAck {
    pub(crate) fn read(r: &mut Reader, version: ProtocolVersion) -> Result<Self, Error> {
        let packet_id = r.packet_id()?;
        if version == ProtocolVersion::V4 {
            return Ok(Self {
                packet_id,
                reason_codes: Vec::new(),
                properties: Properties::new(),
            });
        }
        let properties = Properties::read(r, Ctx::UnsubAck)?;
        let mut reason_codes = Vec::with_capacity(r.remaining());
        while !r.is_empty() {
            reason_codes.push(ReasonCode::decode_for(
                r.u8("reason code")?,
                PacketType::UnsubAck,
            )?);
        }
        if reason_codes.is_empty() {
            return Err(r.malformed("no reason code"));
        }
        Ok(Self {
            packet_id,
            reason_codes,
            properties,
        })
    }

    pub(crate) fn len(&self, version: ProtocolVersion) -> Result<usize, Error> {
        const P: PacketType = PacketType::UnsubAck;
        if self.packet_id == 0 {
            return Err(Error::ZeroPacketId { packet: P });
        }
        match version {
            ProtocolVersion::V4 => Ok(2),
            ProtocolVersion::V5 if self.reason_codes.is_empty() => Err(Error::Unencodable {
                packet: P,
                reason: "no reason code",
            }),
            ProtocolVersion::V5 => {
                Ok(2 + self.properties.encoded_len(P)? + self.reason_codes.len())
            }
        }
    }

    pub(crate) fn write(&self, version: ProtocolVersion, out: &mut BytesMut) -> Result<(), Error> {
        out.put_u16(self.packet_id);
        if version == ProtocolVersion::V5 {
            let body = self.properties.body_len(PacketType::UnsubAck)?;
            self.properties.write(body, out);
            for code in &self.reason_codes {
                out.put_u8(code.as_u8());
            }
        }
        Ok(())
    }
}
