//! Shared body of PUBACK, PUBREC, PUBREL and PUBCOMP: packet id, then in MQTT 5 an optional
//! reason code and optional properties (3.4.2.1: both may be omitted when trivial).

use bytes::{BufMut, BytesMut};

use crate::codec::Reader;
use crate::error::Error;
use crate::property::{Ctx, Properties};
use crate::reason::ReasonCode;
use crate::types::{PacketType, ProtocolVersion};

pub(crate) fn read(
    r: &mut Reader,
    version: ProtocolVersion,
) -> Result<(u16, ReasonCode, Properties), Error> {
    let packet_id = r.packet_id()?;
    if version == ProtocolVersion::V4 || r.is_empty() {
        return Ok((packet_id, ReasonCode::Success, Properties::new()));
    }
    let reason = ReasonCode::decode_for(r.u8("reason code")?, r.packet())?;
    let properties = if r.is_empty() {
        Properties::new()
    } else {
        Properties::read(r, Ctx::Ack)?
    };
    Ok((packet_id, reason, properties))
}

fn check_id(packet_id: u16, packet: PacketType) -> Result<(), Error> {
    if packet_id == 0 {
        return Err(Error::ZeroPacketId { packet });
    }
    Ok(())
}

pub(crate) fn len(
    packet: PacketType,
    packet_id: u16,
    reason: ReasonCode,
    properties: &Properties,
    version: ProtocolVersion,
) -> Result<usize, Error> {
    check_id(packet_id, packet)?;
    Ok(match version {
        ProtocolVersion::V4 => 2,
        // Shortest form the spec allows: drop trailing defaults.
        ProtocolVersion::V5 if properties.is_empty() && reason == ReasonCode::Success => 2,
        ProtocolVersion::V5 if properties.is_empty() => 3,
        ProtocolVersion::V5 => 3 + properties.encoded_len(packet)?,
    })
}

pub(crate) fn write(
    packet: PacketType,
    packet_id: u16,
    reason: ReasonCode,
    properties: &Properties,
    version: ProtocolVersion,
    out: &mut BytesMut,
) -> Result<(), Error> {
    out.put_u16(packet_id);
    if version == ProtocolVersion::V4 || (properties.is_empty() && reason == ReasonCode::Success) {
        return Ok(());
    }
    out.put_u8(reason.as_u8());
    if !properties.is_empty() {
        properties.write(properties.body_len(packet)?, out);
    }
    Ok(())
}

/// Defines one of the four acknowledgment packets: they share their body and differ only in
/// name and packet type, so one definition serves all four.
macro_rules! ack_packet {
    ($(#[$doc:meta])* $name:ident, $kind:ident, $new_doc:literal) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq)]
        pub struct $name {
            /// Identifier of the PUBLISH flow (non-zero).
            pub packet_id: u16,
            /// Outcome (v5; always `Success` in 3.1.1).
            pub reason_code: $crate::reason::ReasonCode,
            /// Properties (v5): Reason String and User Property.
            pub properties: $crate::property::Properties,
        }

        impl $name {
            #[doc = $new_doc]
            pub fn new(packet_id: u16) -> Self {
                Self {
                    packet_id,
                    reason_code: $crate::reason::ReasonCode::Success,
                    properties: $crate::property::Properties::new(),
                }
            }

            pub(crate) fn read(
                r: &mut $crate::codec::Reader,
                version: $crate::types::ProtocolVersion,
            ) -> Result<Self, $crate::error::Error> {
                let (packet_id, reason_code, properties) = $crate::packet::ack::read(r, version)?;
                Ok(Self { packet_id, reason_code, properties })
            }

            pub(crate) fn len(
                &self,
                version: $crate::types::ProtocolVersion,
            ) -> Result<usize, $crate::error::Error> {
                $crate::packet::ack::len(
                    $crate::types::PacketType::$kind,
                    self.packet_id,
                    self.reason_code,
                    &self.properties,
                    version,
                )
            }

            pub(crate) fn write(
                &self,
                version: $crate::types::ProtocolVersion,
                out: &mut bytes::BytesMut,
            ) -> Result<(), $crate::error::Error> {
                $crate::packet::ack::write(
                    $crate::types::PacketType::$kind,
                    self.packet_id,
                    self.reason_code,
                    &self.properties,
                    version,
                    out,
                )
            }
        }
    };
}

pub(crate) use ack_packet;
