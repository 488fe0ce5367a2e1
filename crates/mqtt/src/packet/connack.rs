//! CONNACK (spec 3.2).

use bytes::{BufMut, BytesMut};

use crate::codec::Reader;
use crate::error::Error;
use crate::property::{Ctx, Properties};
use crate::reason::{ConnectReturnCode, ReasonCode};
use crate::types::{PacketType, ProtocolVersion};

/// Server answer to CONNECT.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnAck {
    /// Whether the server resumed a stored session (must be false on failure).
    pub session_present: bool,
    /// Outcome. For 3.1.1 it is written as [`ConnectReturnCode::from_reason`] and decoded as
    /// [`ConnectReturnCode::to_reason`], so one broker code path serves both versions.
    pub reason_code: ReasonCode,
    /// CONNACK properties (v5).
    pub properties: Properties,
}

impl ConnAck {
    /// A CONNACK with this outcome and no properties.
    pub fn new(reason_code: ReasonCode, session_present: bool) -> Self {
        Self {
            session_present,
            reason_code,
            properties: Properties::new(),
        }
    }

    pub(crate) fn read(r: &mut Reader, version: ProtocolVersion) -> Result<Self, Error> {
        let flags = r.u8("acknowledge flags")?;
        if flags & 0xFE != 0 {
            return Err(r.malformed("reserved acknowledge flags set"));
        }
        let code = r.u8("reason code")?;
        let reason_code = match version {
            ProtocolVersion::V4 => ConnectReturnCode::from_u8(code)
                .ok_or(Error::InvalidReasonCode {
                    packet: PacketType::ConnAck,
                    code,
                })?
                .to_reason(),
            ProtocolVersion::V5 => ReasonCode::decode_for(code, PacketType::ConnAck)?,
        };
        let session_present = flags & 1 != 0;
        if session_present && reason_code.is_error() {
            return Err(r.protocol("session present on a refused connection"));
        }
        let properties = match version {
            ProtocolVersion::V4 => Properties::new(),
            ProtocolVersion::V5 => Properties::read(r, Ctx::ConnAck)?,
        };
        Ok(Self {
            session_present,
            reason_code,
            properties,
        })
    }

    pub(crate) fn len(&self, version: ProtocolVersion) -> Result<usize, Error> {
        Ok(match version {
            ProtocolVersion::V4 => 2,
            ProtocolVersion::V5 => 2 + self.properties.encoded_len(PacketType::ConnAck)?,
        })
    }

    pub(crate) fn write(&self, version: ProtocolVersion, out: &mut BytesMut) -> Result<(), Error> {
        out.put_u8(u8::from(self.session_present));
        match version {
            ProtocolVersion::V4 => {
                out.put_u8(ConnectReturnCode::from_reason(self.reason_code) as u8);
            }
            ProtocolVersion::V5 => {
                out.put_u8(self.reason_code.as_u8());
                let body = self.properties.body_len(PacketType::ConnAck)?;
                self.properties.write(body, out);
            }
        }
        Ok(())
    }
}
