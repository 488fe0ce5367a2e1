//! The broker side of MQTT with no I/O, like the FIX session in `tickwire-fix`: what a
//! connection's subscriptions, QoS handshakes, delivery positions and stored session mean for
//! Tickwire channels. The server's MQTT edge is a thin async loop around [`BrokerSession`]: it
//! reads bytes, decodes packets, hands them in, stores publications through the gateway,
//! drains the hub into [`BrokerSession::deliver`] and writes [`BrokerSession::output`].
//!
//! - [`topic`]: topic names and filters ↔ channels and patterns;
//! - [`stored`]: what a persistent session keeps between connections;
//! - [`session`]: one connection's state machine.

pub mod session;
pub mod stored;
pub mod topic;

pub use session::{
    publish_body, Accepted, BrokerSession, End, Outgoing, Refused, Router, SessionConfig,
};
pub use stored::{StoredSession, StoredSub, MAX_CLIENT_ID};
pub use topic::{channel_to_topic, filter_to_target, topic_to_channel, Target};
