//! CONNECT (spec 3.1): the only packet whose layout is chosen by its own protocol level.

use bytes::{BufMut, Bytes, BytesMut};

use super::{protocol_from, qos_at};
use crate::codec::{field_len, write_field, Reader};
use crate::error::Error;
use crate::property::{Ctx, Properties};
use crate::topic::validate_topic_name;
use crate::types::{PacketType, ProtocolVersion, QoS};

const USERNAME: u8 = 0x80;
const PASSWORD: u8 = 0x40;
const WILL_RETAIN: u8 = 0x20;
const WILL: u8 = 0x04;
const CLEAN_START: u8 = 0x02;
const RESERVED: u8 = 0x01;

/// Client request to open a session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Connect {
    /// Protocol level the client speaks; it decides the format of every later packet.
    pub protocol: ProtocolVersion,
    /// Clean Session (3.1.1) / Clean Start (5).
    pub clean_start: bool,
    /// Keep alive in seconds (0 disables it).
    pub keep_alive: u16,
    /// Client identifier; may be empty (the server then assigns one or refuses, by version).
    pub client_id: String,
    /// Will message published if the connection ends abnormally.
    pub will: Option<LastWill>,
    /// User name.
    pub username: Option<String>,
    /// Password (binary data).
    pub password: Option<Bytes>,
    /// CONNECT properties (v5).
    pub properties: Properties,
}

/// Will message carried by CONNECT.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LastWill {
    /// Topic name (no wildcards).
    pub topic: String,
    /// Message payload.
    pub payload: Bytes,
    /// QoS to publish with.
    pub qos: QoS,
    /// Retain flag to publish with.
    pub retain: bool,
    /// Will properties (v5).
    pub properties: Properties,
}

impl Connect {
    /// A minimal CONNECT for `client_id` (clean start, keep alive 60 s).
    pub fn new(protocol: ProtocolVersion, client_id: impl Into<String>) -> Self {
        Self {
            protocol,
            clean_start: true,
            keep_alive: 60,
            client_id: client_id.into(),
            will: None,
            username: None,
            password: None,
            properties: Properties::new(),
        }
    }

    pub(crate) fn read(r: &mut Reader) -> Result<Self, Error> {
        let name = r.binary("protocol name")?;
        let level = r.u8("protocol level")?;
        let protocol = protocol_from(&name, level)?;
        let v5 = protocol == ProtocolVersion::V5;
        let flags = r.u8("connect flags")?;
        if flags & RESERVED != 0 {
            return Err(r.malformed("reserved connect flag set"));
        }
        let will_flag = flags & WILL != 0;
        let will_qos = qos_at(flags, 3, PacketType::Connect)?;
        let will_retain = flags & WILL_RETAIN != 0;
        if !will_flag && (will_qos != QoS::AtMostOnce || will_retain) {
            return Err(r.malformed("will QoS or retain set without will flag"));
        }
        let has_username = flags & USERNAME != 0;
        let has_password = flags & PASSWORD != 0;
        if !v5 && has_password && !has_username {
            return Err(r.malformed("password flag without user name flag"));
        }
        let keep_alive = r.u16("keep alive")?;
        let properties = if v5 {
            Properties::read(r, Ctx::Connect)?
        } else {
            Properties::new()
        };
        let client_id = r.string("client identifier")?;
        let will = if will_flag {
            let properties = if v5 {
                Properties::read(r, Ctx::Will)?
            } else {
                Properties::new()
            };
            let topic = r.string("will topic")?;
            validate_topic_name(&topic)?;
            let payload = r.binary("will payload")?;
            Some(LastWill {
                topic,
                payload,
                qos: will_qos,
                retain: will_retain,
                properties,
            })
        } else {
            None
        };
        let username = has_username.then(|| r.string("user name")).transpose()?;
        let password = has_password.then(|| r.binary("password")).transpose()?;
        Ok(Self {
            protocol,
            clean_start: flags & CLEAN_START != 0,
            keep_alive,
            client_id,
            will,
            username,
            password,
            properties,
        })
    }

    fn flags(&self) -> u8 {
        let mut flags = 0;
        if self.clean_start {
            flags |= CLEAN_START;
        }
        if let Some(will) = &self.will {
            flags |= WILL | (will.qos as u8) << 3;
            if will.retain {
                flags |= WILL_RETAIN;
            }
        }
        if self.username.is_some() {
            flags |= USERNAME;
        }
        if self.password.is_some() {
            flags |= PASSWORD;
        }
        flags
    }

    pub(crate) fn len(&self) -> Result<usize, Error> {
        const P: PacketType = PacketType::Connect;
        let v5 = self.protocol == ProtocolVersion::V5;
        if !v5 && self.password.is_some() && self.username.is_none() {
            return Err(Error::Unencodable {
                packet: P,
                reason: "MQTT 3.1.1 needs a user name to send a password",
            });
        }
        // name "MQTT" + level + flags + keep alive
        let mut len = 6 + 1 + 1 + 2;
        if v5 {
            len += self.properties.encoded_len(P)?;
        }
        len += field_len(self.client_id.len(), P)?;
        if let Some(will) = &self.will {
            if v5 {
                len += will.properties.encoded_len(P)?;
            }
            len += field_len(will.topic.len(), P)? + field_len(will.payload.len(), P)?;
        }
        if let Some(username) = &self.username {
            len += field_len(username.len(), P)?;
        }
        if let Some(password) = &self.password {
            len += field_len(password.len(), P)?;
        }
        Ok(len)
    }

    pub(crate) fn write(&self, out: &mut BytesMut) -> Result<(), Error> {
        const P: PacketType = PacketType::Connect;
        let v5 = self.protocol == ProtocolVersion::V5;
        write_field(out, b"MQTT");
        out.put_u8(self.protocol.level());
        out.put_u8(self.flags());
        out.put_u16(self.keep_alive);
        if v5 {
            self.properties.write(self.properties.body_len(P)?, out);
        }
        write_field(out, self.client_id.as_bytes());
        if let Some(will) = &self.will {
            if v5 {
                will.properties.write(will.properties.body_len(P)?, out);
            }
            write_field(out, will.topic.as_bytes());
            write_field(out, &will.payload);
        }
        if let Some(username) = &self.username {
            write_field(out, username.as_bytes());
        }
        if let Some(password) = &self.password {
            write_field(out, password);
        }
        Ok(())
    }
}
