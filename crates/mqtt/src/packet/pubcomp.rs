//! PUBCOMP (spec 3.7).

use bytes::BytesMut;

use super::ack;
use crate::codec::Reader;
use crate::error::Error;
use crate::property::Properties;
use crate::reason::ReasonCode;
use crate::types::{PacketType, ProtocolVersion};

/// QoS 2 delivery part 3: publish complete.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PubComp {
    /// Identifier of the PUBLISH flow (non-zero).
    pub packet_id: u16,
    /// Outcome (v5; always `Success` in 3.1.1).
    pub reason_code: ReasonCode,
    /// Properties (v5): Reason String and User Property.
    pub properties: Properties,
}

impl PubComp {
    /// A successful PUBCOMP for `packet_id`.
    pub fn new(packet_id: u16) -> Self {
        Self {
            packet_id,
            reason_code: ReasonCode::Success,
            properties: Properties::new(),
        }
    }

    pub(crate) fn read(r: &mut Reader, version: ProtocolVersion) -> Result<Self, Error> {
        let (packet_id, reason_code, properties) = ack::read(r, version)?;
        Ok(Self {
            packet_id,
            reason_code,
            properties,
        })
    }

    pub(crate) fn len(&self, version: ProtocolVersion) -> Result<usize, Error> {
        let Self {
            packet_id,
            reason_code,
            properties,
        } = self;
        ack::len(
            PacketType::PubComp,
            *packet_id,
            *reason_code,
            properties,
            version,
        )
    }

    pub(crate) fn write(&self, version: ProtocolVersion, out: &mut BytesMut) -> Result<(), Error> {
        let Self {
            packet_id,
            reason_code,
            properties,
        } = self;
        ack::write(
            PacketType::PubComp,
            *packet_id,
            *reason_code,
            properties,
            version,
            out,
        )
    }
}
