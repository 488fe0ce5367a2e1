//! AUTH (spec 3.15), MQTT 5 only: extended authentication exchange.

use bytes::BytesMut;

use super::disconnect::{
    read_reason_and_properties, reason_and_properties_len, write_reason_and_properties,
};
use crate::codec::Reader;
use crate::error::Error;
use crate::property::{Ctx, Properties};
use crate::reason::ReasonCode;
use crate::types::PacketType;

/// Authentication exchange step.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Auth {
    /// `Success`, `ContinueAuthentication` or `ReAuthenticate`.
    pub reason_code: ReasonCode,
    /// AUTH properties: Authentication Method/Data, Reason String, User Property.
    pub properties: Properties,
}

impl Auth {
    pub(crate) fn read(r: &mut Reader) -> Result<Self, Error> {
        let (reason_code, properties) = read_reason_and_properties(r, Ctx::Auth)?;
        Ok(Self {
            reason_code,
            properties,
        })
    }

    pub(crate) fn len(&self) -> Result<usize, Error> {
        reason_and_properties_len(self.reason_code, &self.properties, PacketType::Auth)
    }

    pub(crate) fn write(&self, out: &mut BytesMut) -> Result<(), Error> {
        write_reason_and_properties(self.reason_code, &self.properties, PacketType::Auth, out)
    }
}
