//! The crate's single error type; every variant maps to the MQTT 5 reason code a broker sends.

use crate::property::PropertyId;
use crate::reason::ReasonCode;
use crate::types::{PacketType, ProtocolVersion};

/// Everything that can go wrong while decoding, encoding or tracking protocol state.
///
/// After a decode error the stream is out of sync: the broker should answer with
/// [`Error::reason_code`] (CONNACK before a session exists, DISCONNECT after, in v5) and close.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Remaining length (or another variable byte integer) longer than 4 bytes or not minimal.
    #[error("malformed variable byte integer: {reason}")]
    MalformedVarint {
        /// What was wrong.
        reason: &'static str,
    },
    /// Packet type nibble is reserved (0, or 15 before MQTT 5).
    #[error("reserved packet type {nibble} for {version:?}")]
    ReservedPacketType {
        /// The type nibble received.
        nibble: u8,
        /// Protocol version in use.
        version: ProtocolVersion,
    },
    /// Fixed header flag bits differ from the ones the spec requires for this packet type.
    #[error("invalid fixed header flags {flags:#06b} for {packet}")]
    InvalidHeaderFlags {
        /// Packet type.
        packet: PacketType,
        /// The low nibble received.
        flags: u8,
    },
    /// Structure error inside a packet: truncated field, trailing bytes, reserved bit set, ...
    #[error("malformed {packet} packet: {reason}")]
    Malformed {
        /// Packet type.
        packet: PacketType,
        /// What was wrong.
        reason: &'static str,
    },
    /// A field runs past the end of the packet given by the remaining length.
    #[error("{packet} packet truncated in {field}")]
    Truncated {
        /// Packet type.
        packet: PacketType,
        /// The field being read.
        field: &'static str,
    },
    /// A string is not well-formed UTF-8 or contains U+0000.
    #[error("invalid UTF-8 string in {packet} {field}: {reason}")]
    InvalidString {
        /// Packet type.
        packet: PacketType,
        /// Which field.
        field: &'static str,
        /// What was wrong.
        reason: &'static str,
    },
    /// QoS bits equal 3.
    #[error("invalid QoS {value} in {packet}")]
    InvalidQos {
        /// Packet type.
        packet: PacketType,
        /// The value received.
        value: u8,
    },
    /// A semantic rule of the protocol was broken (MQTT 5 "Protocol Error").
    #[error("protocol error in {packet}: {reason}")]
    ProtocolViolation {
        /// Packet type.
        packet: PacketType,
        /// What was wrong.
        reason: &'static str,
    },
    /// A packet identifier is 0 where a non-zero one is required.
    #[error("{packet} has packet identifier 0")]
    ZeroPacketId {
        /// Packet type.
        packet: PacketType,
    },
    /// CONNECT names a protocol level this crate does not speak (e.g. 3 for MQTT 3.1).
    #[error("unsupported protocol level {level}")]
    UnsupportedProtocolVersion {
        /// The level byte received.
        level: u8,
    },
    /// CONNECT protocol name is not "MQTT".
    #[error("unsupported protocol name")]
    InvalidProtocolName,
    /// Property identifier not defined by MQTT 5.
    #[error("unknown property identifier {id:#04x} in {packet}")]
    UnknownProperty {
        /// Packet type.
        packet: PacketType,
        /// Identifier received.
        id: u32,
    },
    /// Property defined by MQTT 5 but not allowed in this packet.
    #[error("property {property:?} not allowed in {packet}")]
    PropertyNotAllowed {
        /// Packet type.
        packet: PacketType,
        /// The property.
        property: PropertyId,
    },
    /// Property that may appear once appeared more than once.
    #[error("property {property:?} repeated in {packet}")]
    DuplicateProperty {
        /// Packet type.
        packet: PacketType,
        /// The property.
        property: PropertyId,
    },
    /// Property value outside its allowed range (e.g. Receive Maximum 0).
    #[error("invalid value {value} for property {property:?}")]
    InvalidPropertyValue {
        /// The property.
        property: PropertyId,
        /// Value received.
        value: u32,
    },
    /// Reason / return code not defined for this packet.
    #[error("reason code {code:#04x} not valid in {packet}")]
    InvalidReasonCode {
        /// Packet type.
        packet: PacketType,
        /// Code received.
        code: u8,
    },
    /// Topic name empty, containing a wildcard, or too long.
    #[error("invalid topic name: {reason}")]
    InvalidTopicName {
        /// What was wrong.
        reason: &'static str,
    },
    /// Topic filter empty, with misplaced wildcards, or a bad shared subscription.
    #[error("invalid topic filter: {reason}")]
    InvalidTopicFilter {
        /// What was wrong.
        reason: &'static str,
    },
    /// Topic alias 0, above the negotiated maximum, or unknown when the topic is empty.
    #[error("invalid topic alias {alias}: {reason}")]
    InvalidTopicAlias {
        /// Alias received.
        alias: u16,
        /// What was wrong.
        reason: &'static str,
    },
    /// Whole packet (fixed header included) larger than the maximum packet size.
    #[error("packet of {size} bytes exceeds maximum packet size {max}")]
    PacketTooLarge {
        /// Size announced by the fixed header (or computed for encode).
        size: usize,
        /// The limit.
        max: usize,
    },
    /// The packet cannot be written in this version (e.g. AUTH in 3.1.1, 70 KB string).
    #[error("cannot encode {packet}: {reason}")]
    Unencodable {
        /// Packet type.
        packet: PacketType,
        /// Why.
        reason: &'static str,
    },
    /// An acknowledgment names a packet identifier with no matching flow.
    #[error("{packet} for unknown packet identifier {packet_id}")]
    PacketIdNotFound {
        /// Packet type.
        packet: PacketType,
        /// Identifier received.
        packet_id: u16,
    },
    /// The peer sent more unacknowledged QoS 1/2 PUBLISH packets than our Receive Maximum.
    #[error("receive maximum {max} exceeded")]
    ReceiveMaximumExceeded {
        /// Our Receive Maximum.
        max: u16,
    },
    /// We may not send another QoS 1/2 PUBLISH before an acknowledgment frees a slot.
    #[error("send quota of {max} in-flight messages exhausted")]
    SendQuotaExhausted {
        /// The peer's Receive Maximum.
        max: u16,
    },
}

impl Error {
    /// MQTT 5 reason code to put in CONNACK or DISCONNECT when this error ends a connection.
    pub fn reason_code(&self) -> ReasonCode {
        match self {
            Self::MalformedVarint { .. }
            | Self::ReservedPacketType { .. }
            | Self::InvalidHeaderFlags { .. }
            | Self::Malformed { .. }
            | Self::Truncated { .. }
            | Self::InvalidString { .. }
            | Self::InvalidQos { .. }
            | Self::UnknownProperty { .. }
            | Self::PropertyNotAllowed { .. }
            | Self::InvalidReasonCode { .. } => ReasonCode::MalformedPacket,
            Self::ProtocolViolation { .. }
            | Self::ZeroPacketId { .. }
            | Self::DuplicateProperty { .. }
            | Self::InvalidPropertyValue { .. } => ReasonCode::ProtocolError,
            // A client speaking another protocol name is best told "not this version".
            Self::UnsupportedProtocolVersion { .. } | Self::InvalidProtocolName => {
                ReasonCode::UnsupportedProtocolVersion
            }
            Self::InvalidTopicName { .. } => ReasonCode::TopicNameInvalid,
            Self::InvalidTopicFilter { .. } => ReasonCode::TopicFilterInvalid,
            Self::InvalidTopicAlias { .. } => ReasonCode::TopicAliasInvalid,
            Self::PacketTooLarge { .. } => ReasonCode::PacketTooLarge,
            Self::Unencodable { .. } => ReasonCode::ImplementationSpecificError,
            Self::PacketIdNotFound { .. } => ReasonCode::PacketIdentifierNotFound,
            Self::ReceiveMaximumExceeded { .. } | Self::SendQuotaExhausted { .. } => {
                ReasonCode::ReceiveMaximumExceeded
            }
        }
    }
}
