//! SUBACK (spec 3.9).

use bytes::{BufMut, BytesMut};

use crate::codec::Reader;
use crate::error::Error;
use crate::property::{Ctx, Properties};
use crate::reason::{ReasonCode, SubackReturnCode};
use crate::types::{PacketType, ProtocolVersion};

/// Subscribe acknowledgment: one code per requested filter, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubAck {
    /// Identifier of the SUBSCRIBE.
    pub packet_id: u16,
    /// Granted QoS (`Success`/`GrantedQos1`/`GrantedQos2`) or a failure per filter. For 3.1.1
    /// every failure is written as 0x80 and decoded as `UnspecifiedError`.
    pub reason_codes: Vec<ReasonCode>,
    /// SUBACK properties (v5).
    pub properties: Properties,
}

impl SubAck {
    pub(crate) fn read(r: &mut Reader, version: ProtocolVersion) -> Result<Self, Error> {
        const P: PacketType = PacketType::SubAck;
        let packet_id = r.packet_id()?;
        let properties = match version {
            ProtocolVersion::V4 => Properties::new(),
            ProtocolVersion::V5 => Properties::read(r, Ctx::SubAck)?,
        };
        let mut reason_codes = Vec::with_capacity(r.remaining());
        while !r.is_empty() {
            let code = r.u8("reason code")?;
            reason_codes.push(match version {
                ProtocolVersion::V4 => SubackReturnCode::from_u8(code)
                    .ok_or(Error::InvalidReasonCode { packet: P, code })?
                    .to_reason(),
                ProtocolVersion::V5 => ReasonCode::decode_for(code, P)?,
            });
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
        const P: PacketType = PacketType::SubAck;
        if self.packet_id == 0 {
            return Err(Error::ZeroPacketId { packet: P });
        }
        if self.reason_codes.is_empty() {
            return Err(Error::Unencodable {
                packet: P,
                reason: "no reason code",
            });
        }
        let props = match version {
            ProtocolVersion::V4 => 0,
            ProtocolVersion::V5 => self.properties.encoded_len(P)?,
        };
        Ok(2 + props + self.reason_codes.len())
    }

    pub(crate) fn write(&self, version: ProtocolVersion, out: &mut BytesMut) -> Result<(), Error> {
        out.put_u16(self.packet_id);
        match version {
            ProtocolVersion::V4 => {
                for code in &self.reason_codes {
                    out.put_u8(SubackReturnCode::from_reason(*code).as_u8());
                }
            }
            ProtocolVersion::V5 => {
                let body = self.properties.body_len(PacketType::SubAck)?;
                self.properties.write(body, out);
                for code in &self.reason_codes {
                    out.put_u8(code.as_u8());
                }
            }
        }
        Ok(())
    }
}
