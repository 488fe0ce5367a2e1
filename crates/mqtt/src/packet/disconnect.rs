//! DISCONNECT (spec 3.14).

use bytes::{BufMut, BytesMut};

use crate::codec::Reader;
use crate::error::Error;
use crate::property::{Ctx, Properties};
use crate::reason::ReasonCode;
use crate::types::{PacketType, ProtocolVersion};

/// Disconnect notification (either direction in v5, client only in 3.1.1).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Disconnect {
    /// Why (v5); `Success` is Normal disconnection and the only value in 3.1.1.
    pub reason_code: ReasonCode,
    /// DISCONNECT properties (v5).
    pub properties: Properties,
}

impl Disconnect {
    /// A DISCONNECT with this reason and no properties.
    pub fn new(reason_code: ReasonCode) -> Self {
        Self {
            reason_code,
            properties: Properties::new(),
        }
    }

    pub(crate) fn read(r: &mut Reader, version: ProtocolVersion) -> Result<Self, Error> {
        let (reason_code, properties) = match version {
            // 3.1.1 DISCONNECT has no body; `decode` rejects any leftover byte.
            ProtocolVersion::V4 => (ReasonCode::Success, Properties::new()),
            ProtocolVersion::V5 => read_reason_and_properties(r, Ctx::Disconnect)?,
        };
        Ok(Self {
            reason_code,
            properties,
        })
    }

    pub(crate) fn len(&self, version: ProtocolVersion) -> Result<usize, Error> {
        match version {
            ProtocolVersion::V4 => Ok(0),
            ProtocolVersion::V5 => reason_and_properties_len(
                self.reason_code,
                &self.properties,
                PacketType::Disconnect,
            ),
        }
    }

    pub(crate) fn write(&self, version: ProtocolVersion, out: &mut BytesMut) -> Result<(), Error> {
        if version == ProtocolVersion::V5 {
            write_reason_and_properties(
                self.reason_code,
                &self.properties,
                PacketType::Disconnect,
                out,
            )?;
        }
        Ok(())
    }
}

/// Body of DISCONNECT and AUTH: absent means Success, then an optional property block.
pub(crate) fn read_reason_and_properties(
    r: &mut Reader,
    ctx: Ctx,
) -> Result<(ReasonCode, Properties), Error> {
    if r.is_empty() {
        return Ok((ReasonCode::Success, Properties::new()));
    }
    let reason = ReasonCode::decode_for(r.u8("reason code")?, r.packet())?;
    let properties = if r.is_empty() {
        Properties::new()
    } else {
        Properties::read(r, ctx)?
    };
    Ok((reason, properties))
}

pub(crate) fn reason_and_properties_len(
    reason: ReasonCode,
    properties: &Properties,
    packet: PacketType,
) -> Result<usize, Error> {
    Ok(if properties.is_empty() {
        usize::from(reason != ReasonCode::Success)
    } else {
        1 + properties.encoded_len(packet)?
    })
}

pub(crate) fn write_reason_and_properties(
    reason: ReasonCode,
    properties: &Properties,
    packet: PacketType,
    out: &mut BytesMut,
) -> Result<(), Error> {
    if properties.is_empty() && reason == ReasonCode::Success {
        return Ok(());
    }
    out.put_u8(reason.as_u8());
    if !properties.is_empty() {
        properties.write(properties.body_len(packet)?, out);
    }
    Ok(())
}
