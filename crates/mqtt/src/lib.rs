//! MQTT 3.1.1 (protocol level 4) and 5.0 (level 5) codec with no I/O.
//!
//! The crate turns bytes into [`Packet`]s and back; it never touches sockets, clocks or files.
//! A broker drives it like this:
//!
//! 1. Read bytes into a `BytesMut`; [`peek_connect_version`] tells the protocol level of the
//!    first packet (a CONNECT) as soon as enough bytes arrived, or [`decode`] the CONNECT directly:
//!    it always uses the level written inside the packet.
//! 2. Call [`decode`] with that [`ProtocolVersion`] for every later packet and [`encode`] replies
//!    with it. `Ok(None)` from [`decode`] means "need more bytes".
//! 3. On any [`Error`], send CONNACK / DISCONNECT with [`Error::reason_code`] (v5) or the
//!    [`ConnectReturnCode`] mapped from it (3.1.1), then close the connection.
//!
//! [`topic`] validates and matches topic names/filters, [`state`] tracks packet identifiers and
//! the QoS 1/2 handshakes of one connection, and [`broker`] is a whole broker-side session
//! (subscriptions, in-flight and queued messages, delivery positions, the stored session) as a
//! state machine the server drives.
//!
//! Left to the broker on purpose (they need session or configuration knowledge): a second
//! CONNECT on a connection (protocol error), an empty client id with Clean Session 0 in 3.1.1
//! (CONNACK 0x02), Topic Alias Maximum / Maximum QoS / Retain Available enforcement, Payload
//! Format Indicator checks (0x99), authorization, and the keep-alive timer.

pub mod broker;
mod codec;
mod error;
mod packet;
mod property;
mod reason;
pub mod state;
pub mod topic;
mod types;

pub use codec::{varint_len, write_varint};
pub use error::Error;
pub use packet::auth::Auth;
pub use packet::connack::ConnAck;
pub use packet::connect::{Connect, LastWill};
pub use packet::disconnect::Disconnect;
pub use packet::puback::PubAck;
pub use packet::pubcomp::PubComp;
pub use packet::publish::Publish;
pub use packet::pubrec::PubRec;
pub use packet::pubrel::PubRel;
pub use packet::suback::SubAck;
pub use packet::subscribe::{RetainHandling, Subscribe, SubscribeFilter, SubscriptionOptions};
pub use packet::unsuback::UnsubAck;
pub use packet::unsubscribe::Unsubscribe;
pub use packet::{decode, encode, encoded_len, peek_connect_version, Packet, MAX_REMAINING_LENGTH};
pub use property::{Properties, Property, PropertyId};
pub use reason::{ConnectReturnCode, ReasonCode, SubackReturnCode};
pub use types::{PacketType, ProtocolVersion, QoS};
