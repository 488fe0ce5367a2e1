//! One MQTT connection's broker state, with no I/O: subscriptions, granted QoS, delivery
//! positions, outgoing messages in flight and queued behind the client's Receive Maximum,
//! incoming QoS 2 ids, keep-alive and the Will. The driver (the server's MQTT edge) feeds it
//! packets and deliveries and writes what it puts in [`BrokerSession::output`]; subscribing
//! goes through the [`Router`] it is given.
//!
//! Delivery positions: for every stream channel the session remembers the offsets it has
//! handed out but not seen acknowledged; the resume position of a channel is the smallest of
//! those, or one past the newest acknowledged. That is what [`StoredSession`] keeps, so a
//! reconnect replays exactly the unacknowledged and the missed messages from the stream.
//!
//! This file holds the [`BrokerSession`], what the driver hands it and gets back, CONNACK, the
//! output and the stored-session snapshot; `subscriptions`, `delivery` (with messages in
//! flight), `packets` (from the client) and `publish` (PUBLISH encoding from a cached body)
//! hold the rest.

mod delivery;
mod packets;
mod publish;
mod subscriptions;
#[cfg(test)]
mod tests;

pub use publish::publish_body;

use std::{
    collections::{BTreeMap, BTreeSet, HashMap, VecDeque},
    sync::Arc,
    time::Duration,
};

use bytes::{Bytes, BytesMut};
use tickwire_model::{Channel, Class, Offset, Pattern};

use super::stored::{StoredInflight, StoredSession, StoredSub};
use crate::{
    encode, encoded_len,
    state::{ConnectionState, OutgoingStage},
    ConnAck, Connect, ConnectReturnCode, Disconnect, LastWill, Packet, Property, ProtocolVersion,
    QoS, ReasonCode,
};
use delivery::ChanPos;
use subscriptions::Sub;

/// The broker's settings for a session.
#[derive(Debug, Clone)]
pub struct SessionConfig {
    /// QoS 1/2 PUBLISH packets a client may have unacknowledged towards us (Receive Maximum).
    pub receive_maximum: u16,
    /// Topic aliases a client may use towards us (MQTT 5).
    pub topic_alias_maximum: u16,
    /// Largest packet accepted from the client.
    pub max_packet: usize,
    /// Upper bound for a session's expiry, seconds; 0 = no bound.
    pub max_session_expiry_secs: u32,
}

impl SessionConfig {
    /// A requested session expiry bounded by `max_session_expiry_secs` (0 = no bound).
    pub fn cap_session_expiry(&self, requested: u32) -> u32 {
        match self.max_session_expiry_secs {
            0 => requested,
            cap => requested.min(cap),
        }
    }
}

/// What CONNECT established (the driver decides it: client id, credentials).
#[derive(Debug, Clone)]
pub struct Accepted {
    /// Shared, not copied: the driver, the broker's client-id claims and the gateway's
    /// registry hold this same string (bench/results/idle.md).
    pub client_id: Arc<str>,
    /// The server chose the client id (an empty one was sent).
    pub assigned: bool,
    pub expiry_secs: u32,
    /// The expiry was lowered from what the client asked.
    pub expiry_capped: bool,
    /// Who connected (the gateway's principal identity): the owner of the stored session,
    /// which no other identity may take over.
    pub owner: Option<Arc<str>>,
}

/// Why a subscribe or publish was refused by the router: the reason code and a sentence.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused {
    pub code: ReasonCode,
    pub reason: String,
}

/// The hub operations a session needs, done by the driver's hub session.
pub trait Router {
    /// The class of a namespace; `None` when it does not exist.
    fn class(&self, namespace: &str) -> Option<Class>;
    /// The configured namespaces, for error messages.
    fn namespaces(&self) -> Vec<String>;
    /// Subscribes to one channel (stream channels from `from`); the offset delivery starts at.
    fn subscribe(
        &mut self,
        channel: &Channel,
        from: Option<Offset>,
    ) -> Result<Option<Offset>, Refused>;
    /// Subscribes to a pattern; the channels it matches now and their start offsets.
    fn subscribe_pattern(
        &mut self,
        pattern: &Pattern,
        from: Option<Offset>,
    ) -> Result<Vec<(Channel, Class, Option<Offset>)>, Refused>;
    fn unsubscribe(&mut self, channel: &Channel);
    fn unsubscribe_pattern(&mut self, pattern: &Pattern);
    /// The next offset of a namespace's stream.
    fn next_offset(&self, namespace: &str) -> Result<Offset, Refused>;
}

/// A message for the client: its channel and offset, and the PUBLISH body (topic field and
/// payload) the driver encodes once per message for every subscriber.
#[derive(Debug, Clone)]
pub struct Outgoing {
    pub channel: Channel,
    pub offset: Offset,
    pub class: Class,
    pub body: Bytes,
    /// The first value sent after a subscribe to a state channel (sent with RETAIN).
    pub snapshot: bool,
}

/// How a connection ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum End {
    /// DISCONNECT from the client with reason 0x00: no Will.
    Clean,
    /// Anything else: the Will is published.
    Abrupt,
}

/// The broker side of one MQTT connection.
pub struct BrokerSession {
    cfg: SessionConfig,
    version: ProtocolVersion,
    client_id: Arc<str>,
    keep_alive: Option<Duration>,
    /// Largest packet the client accepts (its Maximum Packet Size).
    max_out: usize,
    problem_info: bool,
    /// Boxed: most connections have none, and every connection holds this (88 bytes inline).
    will: Option<Box<LastWill>>,
    expiry_secs: u32,
    /// Expiry as CONNECT set it: a DISCONNECT may not turn 0 into non-zero [MQTT-3.14.2-2].
    connect_expiry: u32,
    proto: ConnectionState,
    /// Subscriptions and deliveries, in a box made when first needed: a connection that has
    /// not subscribed (a device that only publishes, or any client before its first
    /// SUBSCRIBE) holds one pointer instead of ~200 bytes (bench/results/idle.md).
    flows: LazyFlows,
    /// Something a stored session keeps changed since the last snapshot.
    dirty: bool,
    /// The stored session must be on disk before the output is sent (a SUBACK, a PUBREC).
    persist_before_send: bool,
    session_present: bool,
    owner: Option<Arc<str>>,
    assigned: bool,
    expiry_capped: bool,
    clean_start: bool,
    out: BytesMut,
}

/// What a session holds of subscriptions and deliveries, and of the client's QoS 2
/// publications: nothing, for a connection that neither subscribed nor used QoS 2.
#[derive(Default)]
struct Flows {
    subs: Vec<Sub>,
    chans: HashMap<Channel, ChanPos>,
    /// Namespace → offset before which every message of a pattern-matched channel has been
    /// taken from the hub (see [`BrokerSession::advance_marks`]).
    marks: BTreeMap<String, Offset>,
    /// Outgoing packet id → the message it carries (at most Receive Maximum entries).
    inflight: BTreeMap<u16, (Channel, Offset)>,
    /// QoS 1/2 messages waiting for the client's Receive Maximum.
    queue: VecDeque<(Outgoing, QoS)>,
    /// Incoming QoS 2 ids awaiting PUBREL (persisted for exactly-once across reconnects).
    qos2_in: BTreeSet<u16>,
    /// Outgoing QoS 2 messages in flight before this connection (a stored session): channel →
    /// offset → the packet id they are resent with, DUP set, when the stream replays them.
    resend: BTreeMap<Channel, BTreeMap<Offset, u16>>,
}

impl Flows {
    fn is_empty(&self) -> bool {
        self.subs.is_empty()
            && self.chans.is_empty()
            && self.marks.is_empty()
            && self.inflight.is_empty()
            && self.queue.is_empty()
            && self.qos2_in.is_empty()
            && self.resend.is_empty()
    }
}

/// [`Flows`] made on the first write: reading one that was never written reads one empty
/// `Flows` shared by every session, so only a change allocates.
#[derive(Default)]
struct LazyFlows(Option<Box<Flows>>);

impl std::ops::Deref for LazyFlows {
    type Target = Flows;

    fn deref(&self) -> &Flows {
        static EMPTY: std::sync::OnceLock<Flows> = std::sync::OnceLock::new();
        match &self.0 {
            Some(f) => f,
            None => EMPTY.get_or_init(Flows::default),
        }
    }
}

impl std::ops::DerefMut for LazyFlows {
    fn deref_mut(&mut self) -> &mut Flows {
        self.0.get_or_insert_with(Box::default)
    }
}

impl BrokerSession {
    pub fn new(cfg: SessionConfig, c: &Connect, a: Accepted) -> BrokerSession {
        let version = c.protocol;
        let mut proto = ConnectionState::new(version)
            .with_receive_maximum(cfg.receive_maximum)
            .with_topic_alias_maximum(cfg.topic_alias_maximum);
        if let Some(rm) = c.properties.receive_maximum() {
            proto = proto.with_peer_receive_maximum(rm);
        }
        BrokerSession {
            version,
            client_id: a.client_id,
            keep_alive: (c.keep_alive > 0)
                .then(|| Duration::from_millis(u64::from(c.keep_alive) * 1500)),
            max_out: c
                .properties
                .maximum_packet_size()
                .map_or(usize::MAX, |m| m as usize),
            problem_info: c.properties.request_problem_information().unwrap_or(true),
            will: c.will.clone().map(Box::new),
            expiry_secs: a.expiry_secs,
            connect_expiry: a.expiry_secs,
            proto,
            flows: LazyFlows::default(),
            dirty: false,
            persist_before_send: false,
            session_present: false,
            owner: a.owner,
            assigned: a.assigned,
            expiry_capped: a.expiry_capped,
            clean_start: c.clean_start,
            // Grows with the first packet out: a connection that stays idle holds none.
            out: BytesMut::new(),
            cfg,
        }
    }

    pub fn client_id(&self) -> &str {
        &self.client_id
    }

    pub fn version(&self) -> ProtocolVersion {
        self.version
    }

    /// The session outlives the connection.
    pub fn persistent(&self) -> bool {
        self.expiry_secs > 0
    }

    /// CONNECT asked for a clean start.
    pub fn clean_start(&self) -> bool {
        self.clean_start
    }

    /// A stored session existed at CONNECT.
    pub fn session_present(&self) -> bool {
        self.session_present
    }

    /// 1.5 × the keep alive: the client is gone when nothing arrives for this long.
    pub fn keep_alive(&self) -> Option<Duration> {
        self.keep_alive
    }

    /// The Will, taken (published once, by the driver, when the connection ends abruptly).
    pub fn take_will(&mut self) -> Option<LastWill> {
        self.will.take().map(|w| *w)
    }

    /// The stored session changed since the last [`BrokerSession::snapshot`] was saved.
    pub fn dirty(&self) -> bool {
        self.dirty
    }

    /// True once: the stored session must be saved before the output is sent.
    pub fn take_persist_before_send(&mut self) -> bool {
        std::mem::take(&mut self.persist_before_send) && self.persistent()
    }

    /// Bytes to write to the client.
    pub fn output(&mut self) -> &mut BytesMut {
        &mut self.out
    }

    /// Outgoing QoS 1/2 messages sent and not yet acknowledged by the client.
    pub fn in_flight(&self) -> usize {
        self.flows.inflight.len()
    }

    /// QoS 1/2 messages queued behind the client's Receive Maximum.
    pub fn queued(&self) -> usize {
        self.flows.queue.len()
    }

    /// Lets go of the subscription and delivery state's box when it holds nothing (the driver
    /// calls this as a quiet connection is parked), so a session that subscribed and left
    /// again, or only touched it, holds nothing of it while idle.
    pub fn shrink(&mut self) {
        if self.flows.0.as_ref().is_some_and(|f| f.is_empty()) {
            self.flows.0 = None;
        }
    }

    /// Answers CONNECT: CONNACK, then the stored session's subscriptions re-created at their
    /// stored positions.
    pub fn connack(&mut self, stored: Option<StoredSession>, router: &mut dyn Router) {
        self.session_present = stored.is_some();
        let mut ack = ConnAck::new(ReasonCode::Success, self.session_present);
        if self.version == ProtocolVersion::V5 {
            let p = &mut ack.properties;
            p.push(Property::ReceiveMaximum(self.cfg.receive_maximum.max(1)));
            p.push(Property::MaximumPacketSize(
                u32::try_from(self.cfg.max_packet).unwrap_or(u32::MAX),
            ));
            p.push(Property::TopicAliasMaximum(self.cfg.topic_alias_maximum));
            p.push(Property::SharedSubscriptionAvailable(false));
            p.push(Property::SubscriptionIdentifierAvailable(false));
            if self.assigned {
                p.push(Property::AssignedClientIdentifier(
                    self.client_id.to_string(),
                ));
            }
            if self.expiry_capped {
                p.push(Property::SessionExpiryInterval(self.expiry_secs));
            }
        }
        self.send(Packet::ConnAck(ack));
        if let Some(s) = stored {
            self.restore(s, router);
        }
        // Written at once so a crash right after CONNECT still knows the session exists.
        self.persist_before_send = true;
    }

    /// A CONNACK refusing the connection, for the driver to send before closing.
    pub fn refusal(version: ProtocolVersion, code: ReasonCode, why: &str) -> Packet {
        let mut ack = ConnAck::new(code, false);
        match version {
            ProtocolVersion::V5 => ack.properties.push(Property::ReasonString(why.to_string())),
            ProtocolVersion::V4 => {
                ack.reason_code = ConnectReturnCode::from_reason(code).to_reason();
            }
        }
        Packet::ConnAck(ack)
    }

    // ---- output ----

    /// Buffers a reply, taken by value: it is encoded once and never needed again.
    fn send(&mut self, mut p: Packet) {
        // Without a client Maximum Packet Size nothing is too big: skip measuring.
        if self.max_out != usize::MAX
            && encoded_len(&p, self.version).is_ok_and(|len| len > self.max_out)
        {
            strip_properties(&mut p);
        }
        if let Err(e) = encode(&p, self.version, &mut self.out) {
            tracing::warn!(error = %e, "cannot encode an MQTT reply");
        }
    }

    /// MQTT 5: DISCONNECT with the reason (the driver then closes). 3.1.1 has no server
    /// DISCONNECT: closing is all.
    pub fn disconnect(&mut self, code: ReasonCode, why: &str) {
        if self.version == ProtocolVersion::V5 {
            let mut d = Disconnect::new(code);
            if self.problem_info {
                d.properties.push(Property::ReasonString(why.to_string()));
            }
            self.send(Packet::Disconnect(d));
        }
    }

    /// What the session store keeps; marks the session clean.
    pub fn snapshot(&mut self, disconnected_at_ms: Option<u64>) -> StoredSession {
        self.dirty = false;
        StoredSession {
            client_id: self.client_id.to_string(),
            owner: self.owner.as_deref().map(str::to_owned),
            expiry_secs: self.expiry_secs,
            disconnected_at_ms,
            subs: self
                .flows
                .subs
                .iter()
                .map(|s| StoredSub {
                    filter: s.filter.clone(),
                    qos: s.qos as u8,
                })
                .collect(),
            positions: self
                .flows
                .chans
                .iter()
                .map(|(c, p)| (c.to_string(), p.resume()))
                .collect(),
            marks: self.flows.marks.clone(),
            qos2_awaiting_rel: self.flows.qos2_in.iter().copied().collect(),
            acked_ahead: self
                .flows
                .chans
                .iter()
                .filter(|(_, p)| !p.acked_ahead.is_empty())
                .map(|(c, p)| (c.to_string(), p.acked_ahead.iter().copied().collect()))
                .collect(),
            qos2_out_unreceived: self.unreceived_qos2(),
            qos2_out_awaiting_comp: self
                .proto
                .pending_outgoing()
                .filter(|(_, stage)| *stage == OutgoingStage::AwaitingPubComp)
                .map(|(pid, _)| pid)
                .collect(),
        }
    }

    /// Outgoing QoS 2 messages sent (or restored to resend) without a PUBREC yet.
    fn unreceived_qos2(&self) -> Vec<StoredInflight> {
        let mut out: Vec<StoredInflight> = self
            .proto
            .pending_outgoing()
            .filter(|(_, stage)| *stage == OutgoingStage::AwaitingPubRec)
            .filter_map(|(pid, _)| {
                let (ch, offset) = self.flows.inflight.get(&pid)?;
                Some(StoredInflight {
                    packet_id: pid,
                    channel: ch.to_string(),
                    offset: *offset,
                })
            })
            .collect();
        for (ch, waiting) in &self.flows.resend {
            out.extend(waiting.iter().map(|(offset, pid)| StoredInflight {
                packet_id: *pid,
                channel: ch.to_string(),
                offset: *offset,
            }));
        }
        out
    }

    /// A save failed: the session stays dirty, so the next save tries again.
    pub fn mark_dirty(&mut self) {
        self.dirty = true;
    }
}

/// Drops optional properties (reason strings, user properties) from a reply that would exceed
/// the client's Maximum Packet Size [MQTT-3.1.2-24].
fn strip_properties(p: &mut Packet) {
    match p {
        Packet::SubAck(a) => a.properties = Default::default(),
        Packet::UnsubAck(a) => a.properties = Default::default(),
        Packet::PubAck(a) => a.properties = Default::default(),
        Packet::PubRec(a) => a.properties = Default::default(),
        Packet::Disconnect(a) => a.properties = Default::default(),
        _ => {}
    }
}
