//! MQTT 5 properties (spec 2.2.2): decoded generically, checked against the packet they sit in.

use bytes::{BufMut, Bytes, BytesMut};

use crate::codec::{field_len, varint_len, write_field, write_varint, Reader, VARINT_MAX};
use crate::error::Error;
use crate::types::{PacketType, QoS};

/// Property identifier byte.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[allow(missing_docs)] // the names are the spec's own
pub enum PropertyId {
    PayloadFormatIndicator = 0x01,
    MessageExpiryInterval = 0x02,
    ContentType = 0x03,
    ResponseTopic = 0x08,
    CorrelationData = 0x09,
    SubscriptionIdentifier = 0x0B,
    SessionExpiryInterval = 0x11,
    AssignedClientIdentifier = 0x12,
    ServerKeepAlive = 0x13,
    AuthenticationMethod = 0x15,
    AuthenticationData = 0x16,
    RequestProblemInformation = 0x17,
    WillDelayInterval = 0x18,
    RequestResponseInformation = 0x19,
    ResponseInformation = 0x1A,
    ServerReference = 0x1C,
    ReasonString = 0x1F,
    ReceiveMaximum = 0x21,
    TopicAliasMaximum = 0x22,
    TopicAlias = 0x23,
    MaximumQos = 0x24,
    RetainAvailable = 0x25,
    UserProperty = 0x26,
    MaximumPacketSize = 0x27,
    WildcardSubscriptionAvailable = 0x28,
    SubscriptionIdentifierAvailable = 0x29,
    SharedSubscriptionAvailable = 0x2A,
}

impl PropertyId {
    /// Maps an identifier to a defined property.
    pub fn from_u32(id: u32) -> Option<Self> {
        use PropertyId::*;
        Some(match id {
            0x01 => PayloadFormatIndicator,
            0x02 => MessageExpiryInterval,
            0x03 => ContentType,
            0x08 => ResponseTopic,
            0x09 => CorrelationData,
            0x0B => SubscriptionIdentifier,
            0x11 => SessionExpiryInterval,
            0x12 => AssignedClientIdentifier,
            0x13 => ServerKeepAlive,
            0x15 => AuthenticationMethod,
            0x16 => AuthenticationData,
            0x17 => RequestProblemInformation,
            0x18 => WillDelayInterval,
            0x19 => RequestResponseInformation,
            0x1A => ResponseInformation,
            0x1C => ServerReference,
            0x1F => ReasonString,
            0x21 => ReceiveMaximum,
            0x22 => TopicAliasMaximum,
            0x23 => TopicAlias,
            0x24 => MaximumQos,
            0x25 => RetainAvailable,
            0x26 => UserProperty,
            0x27 => MaximumPacketSize,
            0x28 => WildcardSubscriptionAvailable,
            0x29 => SubscriptionIdentifierAvailable,
            0x2A => SharedSubscriptionAvailable,
            _ => return None,
        })
    }

    fn bit(self) -> u64 {
        1 << (self as u8)
    }
}

/// Where a property block sits; the Will has its own set distinct from CONNECT's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Ctx {
    Connect,
    Will,
    ConnAck,
    Publish,
    Ack,
    Subscribe,
    SubAck,
    Unsubscribe,
    UnsubAck,
    Disconnect,
    Auth,
}

impl Ctx {
    /// Allowed identifiers as a bit set (table 2-4 of the MQTT 5 spec).
    fn allowed(self) -> u64 {
        use PropertyId::*;
        let ids: &[PropertyId] = match self {
            Ctx::Connect => &[
                SessionExpiryInterval,
                AuthenticationMethod,
                AuthenticationData,
                RequestProblemInformation,
                RequestResponseInformation,
                ReceiveMaximum,
                TopicAliasMaximum,
                UserProperty,
                MaximumPacketSize,
            ],
            Ctx::Will => &[
                PayloadFormatIndicator,
                MessageExpiryInterval,
                ContentType,
                ResponseTopic,
                CorrelationData,
                WillDelayInterval,
                UserProperty,
            ],
            Ctx::ConnAck => &[
                SessionExpiryInterval,
                AssignedClientIdentifier,
                ServerKeepAlive,
                AuthenticationMethod,
                AuthenticationData,
                ResponseInformation,
                ServerReference,
                ReasonString,
                ReceiveMaximum,
                TopicAliasMaximum,
                MaximumQos,
                RetainAvailable,
                UserProperty,
                MaximumPacketSize,
                WildcardSubscriptionAvailable,
                SubscriptionIdentifierAvailable,
                SharedSubscriptionAvailable,
            ],
            Ctx::Publish => &[
                PayloadFormatIndicator,
                MessageExpiryInterval,
                ContentType,
                ResponseTopic,
                CorrelationData,
                SubscriptionIdentifier,
                TopicAlias,
                UserProperty,
            ],
            Ctx::Ack | Ctx::SubAck | Ctx::UnsubAck => &[ReasonString, UserProperty],
            Ctx::Subscribe => &[SubscriptionIdentifier, UserProperty],
            Ctx::Unsubscribe => &[UserProperty],
            Ctx::Disconnect => &[
                SessionExpiryInterval,
                ServerReference,
                ReasonString,
                UserProperty,
            ],
            Ctx::Auth => &[
                AuthenticationMethod,
                AuthenticationData,
                ReasonString,
                UserProperty,
            ],
        };
        ids.iter().fold(0, |mask, id| mask | id.bit())
    }

    /// Properties that may repeat: User Property everywhere, Subscription Identifier only in
    /// PUBLISH (one per matching subscription, 3.3.2.3.8).
    fn repeatable(self) -> u64 {
        let mut mask = PropertyId::UserProperty.bit();
        if self == Ctx::Publish {
            mask |= PropertyId::SubscriptionIdentifier.bit();
        }
        mask
    }
}

/// One MQTT 5 property with its typed value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Property {
    /// 0x01: payload is UTF-8 text (`true`) or unspecified bytes.
    PayloadFormatIndicator(bool),
    /// 0x02: seconds until the message expires.
    MessageExpiryInterval(u32),
    /// 0x03: MIME-like content type.
    ContentType(String),
    /// 0x08: topic for a response (request/response pattern).
    ResponseTopic(String),
    /// 0x09: opaque data echoed in a response.
    CorrelationData(Bytes),
    /// 0x0B: subscription identifier (1..=268,435,455).
    SubscriptionIdentifier(u32),
    /// 0x11: seconds the session outlives the connection.
    SessionExpiryInterval(u32),
    /// 0x12: client id assigned by the server.
    AssignedClientIdentifier(String),
    /// 0x13: keep alive imposed by the server.
    ServerKeepAlive(u16),
    /// 0x15: extended authentication method.
    AuthenticationMethod(String),
    /// 0x16: extended authentication data.
    AuthenticationData(Bytes),
    /// 0x17: whether the server may send reason strings / user properties on failures.
    RequestProblemInformation(bool),
    /// 0x18: seconds to delay the Will after disconnection.
    WillDelayInterval(u32),
    /// 0x19: whether the client asks for Response Information in CONNACK.
    RequestResponseInformation(bool),
    /// 0x1A: basis for response topics.
    ResponseInformation(String),
    /// 0x1C: another server to use.
    ServerReference(String),
    /// 0x1F: human-readable diagnostic.
    ReasonString(String),
    /// 0x21: maximum unacknowledged QoS 1/2 PUBLISH packets (non-zero).
    ReceiveMaximum(u16),
    /// 0x22: highest topic alias accepted.
    TopicAliasMaximum(u16),
    /// 0x23: topic alias (non-zero).
    TopicAlias(u16),
    /// 0x24: highest QoS the server supports (0 or 1; absent means 2).
    MaximumQos(QoS),
    /// 0x25: whether retained messages are supported.
    RetainAvailable(bool),
    /// 0x26: application name/value pair; may repeat, order is kept.
    UserProperty(String, String),
    /// 0x27: largest packet the sender accepts (non-zero).
    MaximumPacketSize(u32),
    /// 0x28: whether wildcard subscriptions are supported.
    WildcardSubscriptionAvailable(bool),
    /// 0x29: whether subscription identifiers are supported.
    SubscriptionIdentifierAvailable(bool),
    /// 0x2A: whether shared subscriptions are supported.
    SharedSubscriptionAvailable(bool),
}

impl Property {
    /// The identifier of this property.
    pub fn id(&self) -> PropertyId {
        use Property as P;
        use PropertyId as I;
        match self {
            P::PayloadFormatIndicator(_) => I::PayloadFormatIndicator,
            P::MessageExpiryInterval(_) => I::MessageExpiryInterval,
            P::ContentType(_) => I::ContentType,
            P::ResponseTopic(_) => I::ResponseTopic,
            P::CorrelationData(_) => I::CorrelationData,
            P::SubscriptionIdentifier(_) => I::SubscriptionIdentifier,
            P::SessionExpiryInterval(_) => I::SessionExpiryInterval,
            P::AssignedClientIdentifier(_) => I::AssignedClientIdentifier,
            P::ServerKeepAlive(_) => I::ServerKeepAlive,
            P::AuthenticationMethod(_) => I::AuthenticationMethod,
            P::AuthenticationData(_) => I::AuthenticationData,
            P::RequestProblemInformation(_) => I::RequestProblemInformation,
            P::WillDelayInterval(_) => I::WillDelayInterval,
            P::RequestResponseInformation(_) => I::RequestResponseInformation,
            P::ResponseInformation(_) => I::ResponseInformation,
            P::ServerReference(_) => I::ServerReference,
            P::ReasonString(_) => I::ReasonString,
            P::ReceiveMaximum(_) => I::ReceiveMaximum,
            P::TopicAliasMaximum(_) => I::TopicAliasMaximum,
            P::TopicAlias(_) => I::TopicAlias,
            P::MaximumQos(_) => I::MaximumQos,
            P::RetainAvailable(_) => I::RetainAvailable,
            P::UserProperty(_, _) => I::UserProperty,
            P::MaximumPacketSize(_) => I::MaximumPacketSize,
            P::WildcardSubscriptionAvailable(_) => I::WildcardSubscriptionAvailable,
            P::SubscriptionIdentifierAvailable(_) => I::SubscriptionIdentifierAvailable,
            P::SharedSubscriptionAvailable(_) => I::SharedSubscriptionAvailable,
        }
    }

    fn value_len(&self, packet: PacketType) -> Result<usize, Error> {
        use Property as P;
        Ok(match self {
            P::PayloadFormatIndicator(_)
            | P::RequestProblemInformation(_)
            | P::RequestResponseInformation(_)
            | P::MaximumQos(_)
            | P::RetainAvailable(_)
            | P::WildcardSubscriptionAvailable(_)
            | P::SubscriptionIdentifierAvailable(_)
            | P::SharedSubscriptionAvailable(_) => 1,
            P::ServerKeepAlive(_)
            | P::ReceiveMaximum(_)
            | P::TopicAliasMaximum(_)
            | P::TopicAlias(_) => 2,
            P::MessageExpiryInterval(_)
            | P::SessionExpiryInterval(_)
            | P::WillDelayInterval(_)
            | P::MaximumPacketSize(_) => 4,
            P::SubscriptionIdentifier(v) => {
                if *v == 0 || *v > VARINT_MAX {
                    return Err(Error::Unencodable {
                        packet,
                        reason: "subscription identifier outside 1..=268435455",
                    });
                }
                varint_len(*v as usize)
            }
            P::ContentType(s)
            | P::ResponseTopic(s)
            | P::AssignedClientIdentifier(s)
            | P::AuthenticationMethod(s)
            | P::ResponseInformation(s)
            | P::ServerReference(s)
            | P::ReasonString(s) => field_len(s.len(), packet)?,
            P::CorrelationData(b) | P::AuthenticationData(b) => field_len(b.len(), packet)?,
            P::UserProperty(k, v) => field_len(k.len(), packet)? + field_len(v.len(), packet)?,
        })
    }

    fn write(&self, out: &mut BytesMut) {
        use Property as P;
        // Every identifier is below 128, so its variable byte integer is one byte.
        out.put_u8(self.id() as u8);
        match self {
            P::PayloadFormatIndicator(b)
            | P::RequestProblemInformation(b)
            | P::RequestResponseInformation(b)
            | P::RetainAvailable(b)
            | P::WildcardSubscriptionAvailable(b)
            | P::SubscriptionIdentifierAvailable(b)
            | P::SharedSubscriptionAvailable(b) => out.put_u8(u8::from(*b)),
            P::MaximumQos(q) => out.put_u8(*q as u8),
            P::ServerKeepAlive(v)
            | P::ReceiveMaximum(v)
            | P::TopicAliasMaximum(v)
            | P::TopicAlias(v) => out.put_u16(*v),
            P::MessageExpiryInterval(v)
            | P::SessionExpiryInterval(v)
            | P::WillDelayInterval(v)
            | P::MaximumPacketSize(v) => out.put_u32(*v),
            P::SubscriptionIdentifier(v) => write_varint(out, *v as usize),
            P::ContentType(s)
            | P::ResponseTopic(s)
            | P::AssignedClientIdentifier(s)
            | P::AuthenticationMethod(s)
            | P::ResponseInformation(s)
            | P::ServerReference(s)
            | P::ReasonString(s) => write_field(out, s.as_bytes()),
            P::CorrelationData(b) | P::AuthenticationData(b) => write_field(out, b),
            P::UserProperty(k, v) => {
                write_field(out, k.as_bytes());
                write_field(out, v.as_bytes());
            }
        }
    }

    fn read(id: PropertyId, r: &mut Reader) -> Result<Self, Error> {
        use Property as P;
        use PropertyId as I;
        let flag = |r: &mut Reader| -> Result<bool, Error> {
            match r.u8("property value")? {
                0 => Ok(false),
                1 => Ok(true),
                v => Err(Error::InvalidPropertyValue {
                    property: id,
                    value: u32::from(v),
                }),
            }
        };
        // Receive Maximum, Subscription Identifier and Maximum Packet Size may not be 0.
        let non_zero = |v: u32| -> Result<u32, Error> {
            if v == 0 {
                return Err(Error::InvalidPropertyValue {
                    property: id,
                    value: 0,
                });
            }
            Ok(v)
        };
        const V: &str = "property value";
        Ok(match id {
            I::PayloadFormatIndicator => P::PayloadFormatIndicator(flag(r)?),
            I::MessageExpiryInterval => P::MessageExpiryInterval(r.u32(V)?),
            I::ContentType => P::ContentType(r.string("content type")?),
            I::ResponseTopic => P::ResponseTopic(r.string("response topic")?),
            I::CorrelationData => P::CorrelationData(r.binary(V)?),
            I::SubscriptionIdentifier => P::SubscriptionIdentifier(non_zero(r.varint(V)?)?),
            I::SessionExpiryInterval => P::SessionExpiryInterval(r.u32(V)?),
            I::AssignedClientIdentifier => {
                P::AssignedClientIdentifier(r.string("assigned client identifier")?)
            }
            I::ServerKeepAlive => P::ServerKeepAlive(r.u16(V)?),
            I::AuthenticationMethod => P::AuthenticationMethod(r.string("authentication method")?),
            I::AuthenticationData => P::AuthenticationData(r.binary(V)?),
            I::RequestProblemInformation => P::RequestProblemInformation(flag(r)?),
            I::WillDelayInterval => P::WillDelayInterval(r.u32(V)?),
            I::RequestResponseInformation => P::RequestResponseInformation(flag(r)?),
            I::ResponseInformation => P::ResponseInformation(r.string("response information")?),
            I::ServerReference => P::ServerReference(r.string("server reference")?),
            I::ReasonString => P::ReasonString(r.string("reason string")?),
            I::ReceiveMaximum => {
                let v = r.u16(V)?;
                non_zero(u32::from(v))?;
                P::ReceiveMaximum(v)
            }
            I::TopicAliasMaximum => P::TopicAliasMaximum(r.u16(V)?),
            // Alias 0 is forbidden [MQTT-3.3.2-8]; the broker checks the upper bound.
            I::TopicAlias => match r.u16(V)? {
                0 => {
                    return Err(Error::InvalidTopicAlias {
                        alias: 0,
                        reason: "alias 0 is not allowed",
                    })
                }
                v => P::TopicAlias(v),
            },
            I::MaximumQos => match r.u8(V)? {
                0 => P::MaximumQos(QoS::AtMostOnce),
                1 => P::MaximumQos(QoS::AtLeastOnce),
                v => {
                    return Err(Error::InvalidPropertyValue {
                        property: id,
                        value: u32::from(v),
                    })
                }
            },
            I::RetainAvailable => P::RetainAvailable(flag(r)?),
            I::UserProperty => P::UserProperty(
                r.string("user property name")?,
                r.string("user property value")?,
            ),
            I::MaximumPacketSize => P::MaximumPacketSize(non_zero(r.u32(V)?)?),
            I::WildcardSubscriptionAvailable => P::WildcardSubscriptionAvailable(flag(r)?),
            I::SubscriptionIdentifierAvailable => P::SubscriptionIdentifierAvailable(flag(r)?),
            I::SharedSubscriptionAvailable => P::SharedSubscriptionAvailable(flag(r)?),
        })
    }
}

/// The property block of one packet, in wire order (duplicates only where the spec allows).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Properties(Vec<Property>);

macro_rules! accessor {
    ($(#[doc = $doc:literal])* $fn:ident, $variant:ident, $ty:ty, |$v:ident| $conv:expr) => {
        $(#[doc = $doc])*
        pub fn $fn(&self) -> Option<$ty> {
            self.0.iter().find_map(|p| match p {
                Property::$variant($v) => Some($conv),
                _ => None,
            })
        }
    };
}

impl Properties {
    /// An empty property block.
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends a property (no checks: decode enforces the spec, encode writes what it is given).
    pub fn push(&mut self, property: Property) {
        self.0.push(property);
    }

    /// Builder-style [`Properties::push`].
    pub fn with(mut self, property: Property) -> Self {
        self.push(property);
        self
    }

    /// True when there are no properties.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Number of properties.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Properties in wire order.
    pub fn iter(&self) -> std::slice::Iter<'_, Property> {
        self.0.iter()
    }

    /// Removes every property with this identifier (e.g. Topic Alias before forwarding).
    pub fn remove(&mut self, id: PropertyId) {
        self.0.retain(|p| p.id() != id);
    }

    /// First property with this identifier.
    pub fn get(&self, id: PropertyId) -> Option<&Property> {
        self.0.iter().find(|p| p.id() == id)
    }

    accessor!(/// 0x01 Payload Format Indicator (`true` = UTF-8).
        payload_format_indicator, PayloadFormatIndicator, bool, |v| *v);
    accessor!(/// 0x02 Message Expiry Interval in seconds.
        message_expiry_interval, MessageExpiryInterval, u32, |v| *v);
    accessor!(/// 0x03 Content Type.
        content_type, ContentType, &str, |v| v.as_str());
    accessor!(/// 0x08 Response Topic.
        response_topic, ResponseTopic, &str, |v| v.as_str());
    accessor!(/// 0x09 Correlation Data.
        correlation_data, CorrelationData, &Bytes, |v| v);
    accessor!(/// 0x11 Session Expiry Interval in seconds.
        session_expiry_interval, SessionExpiryInterval, u32, |v| *v);
    accessor!(/// 0x12 Assigned Client Identifier.
        assigned_client_identifier, AssignedClientIdentifier, &str, |v| v.as_str());
    accessor!(/// 0x13 Server Keep Alive in seconds.
        server_keep_alive, ServerKeepAlive, u16, |v| *v);
    accessor!(/// 0x15 Authentication Method.
        authentication_method, AuthenticationMethod, &str, |v| v.as_str());
    accessor!(/// 0x16 Authentication Data.
        authentication_data, AuthenticationData, &Bytes, |v| v);
    accessor!(/// 0x17 Request Problem Information (absent means `true`).
        request_problem_information, RequestProblemInformation, bool, |v| *v);
    accessor!(/// 0x18 Will Delay Interval in seconds.
        will_delay_interval, WillDelayInterval, u32, |v| *v);
    accessor!(/// 0x19 Request Response Information (absent means `false`).
        request_response_information, RequestResponseInformation, bool, |v| *v);
    accessor!(/// 0x1A Response Information.
        response_information, ResponseInformation, &str, |v| v.as_str());
    accessor!(/// 0x1C Server Reference.
        server_reference, ServerReference, &str, |v| v.as_str());
    accessor!(/// 0x1F Reason String.
        reason_string, ReasonString, &str, |v| v.as_str());
    accessor!(/// 0x21 Receive Maximum (absent means 65535).
        receive_maximum, ReceiveMaximum, u16, |v| *v);
    accessor!(/// 0x22 Topic Alias Maximum (absent means 0).
        topic_alias_maximum, TopicAliasMaximum, u16, |v| *v);
    accessor!(/// 0x23 Topic Alias.
        topic_alias, TopicAlias, u16, |v| *v);
    accessor!(/// 0x24 Maximum QoS (absent means QoS 2).
        maximum_qos, MaximumQos, QoS, |v| *v);
    accessor!(/// 0x25 Retain Available (absent means `true`).
        retain_available, RetainAvailable, bool, |v| *v);
    accessor!(/// 0x27 Maximum Packet Size (absent means no limit beyond the protocol's).
        maximum_packet_size, MaximumPacketSize, u32, |v| *v);
    accessor!(/// 0x28 Wildcard Subscription Available (absent means `true`).
        wildcard_subscription_available, WildcardSubscriptionAvailable, bool, |v| *v);
    accessor!(/// 0x29 Subscription Identifier Available (absent means `true`).
        subscription_identifier_available, SubscriptionIdentifierAvailable, bool, |v| *v);
    accessor!(/// 0x2A Shared Subscription Available (absent means `true`).
        shared_subscription_available, SharedSubscriptionAvailable, bool, |v| *v);
    accessor!(/// 0x0B first Subscription Identifier (SUBSCRIBE carries at most one).
        subscription_identifier, SubscriptionIdentifier, u32, |v| *v);

    /// 0x0B all Subscription Identifiers (a PUBLISH carries one per matching subscription).
    pub fn subscription_identifiers(&self) -> impl Iterator<Item = u32> + '_ {
        self.0.iter().filter_map(|p| match p {
            Property::SubscriptionIdentifier(v) => Some(*v),
            _ => None,
        })
    }

    /// 0x26 User Properties as (name, value) in wire order.
    pub fn user_properties(&self) -> impl Iterator<Item = (&str, &str)> + '_ {
        self.0.iter().filter_map(|p| match p {
            Property::UserProperty(k, v) => Some((k.as_str(), v.as_str())),
            _ => None,
        })
    }

    /// Size of the property bytes, excluding their length prefix.
    pub(crate) fn body_len(&self, packet: PacketType) -> Result<usize, Error> {
        let mut len = 0usize;
        for p in &self.0 {
            len += 1 + p.value_len(packet)?;
        }
        if len > VARINT_MAX as usize {
            return Err(Error::Unencodable {
                packet,
                reason: "property block too large",
            });
        }
        Ok(len)
    }

    /// Size of the block including its length prefix.
    pub(crate) fn encoded_len(&self, packet: PacketType) -> Result<usize, Error> {
        let body = self.body_len(packet)?;
        Ok(varint_len(body) + body)
    }

    /// Writes the length prefix and the properties; `body_len` is from [`Properties::body_len`].
    pub(crate) fn write(&self, body_len: usize, out: &mut BytesMut) {
        write_varint(out, body_len);
        for p in &self.0 {
            p.write(out);
        }
    }

    /// Reads a property block (length prefix included) and enforces table 2-4 of the spec.
    pub(crate) fn read(r: &mut Reader, ctx: Ctx) -> Result<Self, Error> {
        let len = r.varint("property length")? as usize;
        if len == 0 {
            return Ok(Self::default());
        }
        let mut block = r.sub(len, "properties")?;
        let packet = block.packet();
        let allowed = ctx.allowed();
        let repeatable = ctx.repeatable();
        let mut seen = 0u64;
        let mut props = Vec::new();
        while !block.is_empty() {
            let raw = block.varint("property identifier")?;
            let id = PropertyId::from_u32(raw).ok_or(Error::UnknownProperty { packet, id: raw })?;
            if allowed & id.bit() == 0 {
                return Err(Error::PropertyNotAllowed {
                    packet,
                    property: id,
                });
            }
            if seen & id.bit() != 0 && repeatable & id.bit() == 0 {
                return Err(Error::DuplicateProperty {
                    packet,
                    property: id,
                });
            }
            seen |= id.bit();
            props.push(Property::read(id, &mut block)?);
        }
        Ok(Self(props))
    }
}

impl From<Vec<Property>> for Properties {
    fn from(props: Vec<Property>) -> Self {
        Self(props)
    }
}

impl FromIterator<Property> for Properties {
    fn from_iter<T: IntoIterator<Item = Property>>(iter: T) -> Self {
        Self(iter.into_iter().collect())
    }
}

impl<'a> IntoIterator for &'a Properties {
    type Item = &'a Property;
    type IntoIter = std::slice::Iter<'a, Property>;
    fn into_iter(self) -> Self::IntoIter {
        self.0.iter()
    }
}
