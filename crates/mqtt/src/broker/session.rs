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

use std::{
    collections::{BTreeMap, BTreeSet, HashMap, VecDeque},
    time::Duration,
};

use bytes::{BufMut, Bytes, BytesMut};
use tickwire_model::{Channel, Class, Offset, Pattern};

use super::{
    stored::{StoredSession, StoredSub},
    topic::{filter_to_target, Target},
};
use crate::{
    encode, encoded_len,
    state::{ConnectionState, IncomingAction},
    varint_len, write_varint, ConnAck, Connect, ConnectReturnCode, Disconnect, LastWill, Packet,
    Property, ProtocolVersion, Publish, QoS, ReasonCode, SubAck, Subscribe, UnsubAck, Unsubscribe,
};

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
    pub client_id: String,
    /// The server chose the client id (an empty one was sent).
    pub assigned: bool,
    pub expiry_secs: u32,
    /// The expiry was lowered from what the client asked.
    pub expiry_capped: bool,
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

/// A client's subscription.
struct Sub {
    filter: String,
    qos: QoS,
    target: Target,
}

/// Delivery bookkeeping of one stream channel.
struct ChanPos {
    /// One past the newest acknowledged (or QoS 0 sent) offset.
    next: Offset,
    /// Handed out, not acknowledged yet.
    outstanding: BTreeSet<Offset>,
    /// Subscribed in the hub only to resume it at its own position on behalf of a pattern
    /// subscription (see `restore`); dropped with that pattern.
    for_pattern: bool,
    /// The QoS its messages go out with: the highest granted by a matching subscription, set
    /// by `regrant` whenever the subscriptions change rather than looked up per message.
    granted: Option<QoS>,
}

impl ChanPos {
    fn new(next: Offset) -> ChanPos {
        ChanPos {
            next,
            outstanding: BTreeSet::new(),
            for_pattern: false,
            granted: None,
        }
    }

    fn resume(&self) -> Offset {
        self.outstanding.first().copied().unwrap_or(self.next)
    }
}

/// The broker side of one MQTT connection.
pub struct BrokerSession {
    cfg: SessionConfig,
    version: ProtocolVersion,
    client_id: String,
    keep_alive: Option<Duration>,
    /// Largest packet the client accepts (its Maximum Packet Size).
    max_out: usize,
    problem_info: bool,
    will: Option<LastWill>,
    expiry_secs: u32,
    /// Expiry as CONNECT set it: a DISCONNECT may not turn 0 into non-zero [MQTT-3.14.2-2].
    connect_expiry: u32,
    proto: ConnectionState,
    subs: Vec<Sub>,
    chans: HashMap<Channel, ChanPos>,
    /// Namespace → offset before which every message of a pattern-matched channel has been
    /// taken from the hub (see [`BrokerSession::advance_marks`]).
    marks: BTreeMap<String, Offset>,
    /// Outgoing packet id → the message it carries.
    inflight: HashMap<u16, (Channel, Offset)>,
    /// QoS 1/2 messages waiting for the client's Receive Maximum.
    queue: VecDeque<(Outgoing, QoS)>,
    /// Incoming QoS 2 ids awaiting PUBREL (persisted for exactly-once across reconnects).
    qos2_in: BTreeSet<u16>,
    /// Something a stored session keeps changed since the last snapshot.
    dirty: bool,
    /// The stored session must be on disk before the output is sent (a SUBACK, a PUBREC).
    persist_before_send: bool,
    session_present: bool,
    assigned: bool,
    expiry_capped: bool,
    clean_start: bool,
    out: BytesMut,
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
            will: c.will.clone(),
            expiry_secs: a.expiry_secs,
            connect_expiry: a.expiry_secs,
            proto,
            subs: Vec::new(),
            chans: HashMap::new(),
            marks: BTreeMap::new(),
            inflight: HashMap::new(),
            queue: VecDeque::new(),
            qos2_in: BTreeSet::new(),
            dirty: false,
            persist_before_send: false,
            session_present: false,
            assigned: a.assigned,
            expiry_capped: a.expiry_capped,
            clean_start: c.clean_start,
            out: BytesMut::with_capacity(8192),
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
        self.will.take()
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

    /// QoS 1/2 messages queued behind the client's Receive Maximum.
    pub fn queued(&self) -> usize {
        self.queue.len()
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
                p.push(Property::AssignedClientIdentifier(self.client_id.clone()));
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

    // ---- subscriptions ----

    /// Re-creates a stored session's subscriptions at their stored positions.
    fn restore(&mut self, s: StoredSession, router: &mut dyn Router) {
        for &pid in &s.qos2_awaiting_rel {
            if self.proto.restore_awaiting_pubrel(pid) {
                self.qos2_in.insert(pid);
            }
        }
        for stored in s.subs {
            let Ok(target) = filter_to_target(&stored.filter) else {
                continue;
            };
            let qos = QoS::from_u8(stored.qos).unwrap_or(QoS::AtMostOnce);
            let ok = match &target {
                Target::Channel(ch) => {
                    let from = s.positions.get(ch.as_str()).copied();
                    self.subscribe_channel(ch, from, router).is_ok()
                }
                Target::Pattern(p) => {
                    // Channels the client had seen resume at their own positions...
                    for (name, pos) in &s.positions {
                        let Ok(ch) = Channel::parse(name) else {
                            continue;
                        };
                        if p.matches(&ch)
                            && !self.chans.contains_key(&ch)
                            && router.subscribe(&ch, Some(*pos)).is_ok()
                        {
                            let mut cp = ChanPos::new(*pos);
                            cp.for_pattern = true;
                            self.chans.insert(ch, cp);
                        }
                    }
                    // ...and those that appeared while it was away from the namespace mark.
                    let mark = p.namespace().and_then(|ns| s.marks.get(ns).copied());
                    self.subscribe_pattern(p, mark, router).is_ok()
                }
            };
            if ok {
                self.subs.push(Sub {
                    filter: stored.filter,
                    qos,
                    target,
                });
            } else {
                tracing::warn!(client = %self.client_id, filter = %stored.filter, "stored MQTT subscription no longer valid; dropped");
            }
        }
        self.regrant();
        self.dirty = true;
    }

    fn subscribe_channel(
        &mut self,
        ch: &Channel,
        from: Option<Offset>,
        router: &mut dyn Router,
    ) -> Result<(), Refused> {
        let stream = router.class(ch.namespace()) == Some(Class::Stream);
        if let Some(cp) = self.chans.get_mut(ch) {
            if cp.for_pattern {
                cp.for_pattern = false;
                return Ok(());
            }
        }
        let start = router.subscribe(ch, if stream { from } else { None })?;
        if stream {
            let start = start.or(from).unwrap_or(0);
            self.chans
                .entry(ch.clone())
                .or_insert_with(|| ChanPos::new(start));
        }
        Ok(())
    }

    fn subscribe_pattern(
        &mut self,
        p: &Pattern,
        from: Option<Offset>,
        router: &mut dyn Router,
    ) -> Result<(), Refused> {
        let stream_ns = p
            .namespace()
            .filter(|ns| router.class(ns) == Some(Class::Stream))
            .map(str::to_string);
        let now = match &stream_ns {
            Some(ns) => Some(router.next_offset(ns)?),
            None => None,
        };
        let from = if stream_ns.is_some() { from } else { None };
        let matched = router.subscribe_pattern(p, from)?;
        for (ch, class, start) in matched {
            if class == Class::Stream {
                let start = start.or(from).or(now).unwrap_or(0);
                self.chans.entry(ch).or_insert_with(|| ChanPos::new(start));
            }
        }
        if let (Some(ns), Some(now)) = (stream_ns, now) {
            let mark = from.map_or(now, |f| f.min(now));
            self.marks.entry(ns).or_insert(mark);
        }
        Ok(())
    }

    /// One filter of a SUBSCRIBE: the granted QoS or why not.
    fn add_sub(
        &mut self,
        filter: &str,
        requested: QoS,
        router: &mut dyn Router,
    ) -> Result<QoS, Refused> {
        let refused = |code, reason: String| Refused { code, reason };
        if crate::topic::parse_shared(filter).ok().flatten().is_some() {
            return Err(refused(
                ReasonCode::SharedSubscriptionsNotSupported,
                "shared subscriptions are not supported".into(),
            ));
        }
        let target =
            filter_to_target(filter).map_err(|e| refused(ReasonCode::TopicFilterInvalid, e))?;
        let namespace = match &target {
            Target::Channel(c) => Some(c.namespace().to_string()),
            Target::Pattern(p) => p.namespace().map(str::to_string),
        };
        let class = match &namespace {
            Some(ns) => Some(router.class(ns).ok_or_else(|| {
                refused(
                    ReasonCode::TopicFilterInvalid,
                    format!(
                        "unknown namespace `{ns}`; configured namespaces: {}",
                        router.namespaces().join(", ")
                    ),
                )
            })?),
            None => None,
        };
        // State channels are latest-wins values: QoS 0 is what they can promise.
        let granted = match class {
            Some(Class::State) => QoS::AtMostOnce,
            _ => requested,
        };
        if let Some(existing) = self.subs.iter_mut().find(|s| s.filter == filter) {
            existing.qos = granted;
            self.regrant();
            return Ok(granted);
        }
        match &target {
            Target::Channel(ch) => self.subscribe_channel(ch, None, router)?,
            Target::Pattern(p) => self.subscribe_pattern(p, None, router)?,
        }
        self.subs.push(Sub {
            filter: filter.to_string(),
            qos: granted,
            target,
        });
        self.regrant();
        self.dirty = true;
        Ok(granted)
    }

    fn remove_sub(&mut self, filter: &str, router: &mut dyn Router) -> ReasonCode {
        let Some(i) = self.subs.iter().position(|s| s.filter == filter) else {
            return ReasonCode::NoSubscriptionExisted;
        };
        let sub = self.subs.remove(i);
        match &sub.target {
            Target::Channel(ch) => {
                if self.subs.iter().any(|s| matches(&s.target, ch)) {
                    // Another (pattern) subscription still wants it: keep the hub's.
                    if let Some(cp) = self.chans.get_mut(ch) {
                        cp.for_pattern = true;
                    }
                } else {
                    router.unsubscribe(ch);
                }
            }
            Target::Pattern(p) => {
                router.unsubscribe_pattern(p);
                let behalf: Vec<Channel> = self
                    .chans
                    .iter()
                    .filter(|(c, cp)| cp.for_pattern && p.matches(c))
                    .map(|(c, _)| c.clone())
                    .collect();
                for ch in behalf {
                    if !self.subs.iter().any(|s| matches(&s.target, &ch)) {
                        router.unsubscribe(&ch);
                    }
                }
                if let Some(ns) = p.namespace() {
                    let still = self.subs.iter().any(
                        |s| matches!(&s.target, Target::Pattern(q) if q.namespace() == Some(ns)),
                    );
                    if !still {
                        self.marks.remove(ns);
                    }
                }
            }
        }
        let subs = &self.subs;
        self.chans
            .retain(|ch, _| subs.iter().any(|s| matches(&s.target, ch)));
        self.regrant();
        self.dirty = true;
        ReasonCode::Success
    }

    /// Recomputes every channel's delivery QoS after the subscriptions changed.
    fn regrant(&mut self) {
        for (ch, cp) in &mut self.chans {
            cp.granted = granted_for(&self.subs, ch);
        }
    }

    // ---- packets from the client ----

    /// A PUBLISH from the client, before it is stored: topic alias and QoS handshake rules.
    /// `Ok(true)`: store it, then call [`BrokerSession::stored`] or
    /// [`BrokerSession::refused`]; `Ok(false)`: a re-sent message already handled (any reply
    /// is in the output); `Err`: a protocol error, the connection ends (DISCONNECT is in the
    /// output).
    pub fn incoming_publish(&mut self, p: &mut Publish) -> Result<bool, End> {
        if let Err(e) = self.proto.resolve_topic_alias(p) {
            self.disconnect(e.reason_code(), &e.to_string());
            return Err(End::Abrupt);
        }
        match self.proto.receive_publish(p) {
            Ok(IncomingAction::Deliver) => Ok(true),
            Ok(IncomingAction::Duplicate(reply)) => {
                if let Some(r) = reply {
                    self.send(r);
                }
                Ok(false)
            }
            Err(e) => {
                self.disconnect(e.reason_code(), &e.to_string());
                Err(End::Abrupt)
            }
        }
    }

    /// The hub stored `p` (durably under the fsync policy): acknowledge it. A QoS 2 id is
    /// saved with the session before its PUBREC is sent.
    pub fn stored(&mut self, p: &Publish) {
        if p.qos == QoS::ExactlyOnce {
            self.qos2_in.insert(p.packet_id);
            self.dirty = true;
            self.persist_before_send = true;
        }
        if let Some(ack) = self.proto.ack_incoming(p.packet_id) {
            self.send(ack);
        }
    }

    /// `p` was refused. MQTT 5 tells a QoS 1/2 publisher why in its PUBACK/PUBREC; QoS 0 has
    /// no ack, so the connection ends with the reason. 3.1.1 has no negative ack: closing is
    /// the only signal it allows [MQTT-3.3.5-2].
    pub fn refused(&mut self, p: &Publish, r: Refused) -> Option<End> {
        tracing::debug!(client = %self.client_id, topic = %p.topic, reason = %r.reason, "MQTT publish refused");
        if self.version == ProtocolVersion::V5 && p.qos != QoS::AtMostOnce {
            if let Some(mut ack) = self.proto.reject_incoming(p.packet_id, r.code) {
                if self.problem_info {
                    match &mut ack {
                        Packet::PubAck(a) => a.properties.push(Property::ReasonString(r.reason)),
                        Packet::PubRec(a) => a.properties.push(Property::ReasonString(r.reason)),
                        _ => {}
                    }
                }
                self.send(ack);
            }
            return None;
        }
        self.disconnect(r.code, &r.reason);
        Some(End::Abrupt)
    }

    /// Any packet but PUBLISH; `Some` when the connection ends.
    pub fn on_packet(&mut self, packet: Packet, router: &mut dyn Router) -> Option<End> {
        match packet {
            Packet::Publish(_) => {
                self.disconnect(
                    ReasonCode::ImplementationSpecificError,
                    "PUBLISH goes through incoming_publish",
                );
                return Some(End::Abrupt);
            }
            Packet::PubAck(a) => {
                if self.proto.receive_puback(&a).is_ok() {
                    if let Some((ch, off)) = self.inflight.remove(&a.packet_id) {
                        self.acked(&ch, off);
                    }
                }
                self.pump();
            }
            Packet::PubRec(r) => {
                // The client has the message: its position moves on now, only PUBREL remains.
                if let Some((ch, off)) = self.inflight.remove(&r.packet_id) {
                    self.acked(&ch, off);
                }
                if let Some(rel) = self.proto.receive_pubrec(&r) {
                    self.send(rel);
                }
                self.pump();
            }
            Packet::PubComp(c) => {
                let _ = self.proto.receive_pubcomp(&c);
                self.pump();
            }
            Packet::PubRel(r) => {
                let comp = self.proto.receive_pubrel(&r);
                if self.qos2_in.remove(&r.packet_id) {
                    self.dirty = true;
                }
                self.send(comp);
            }
            Packet::Subscribe(s) => self.on_subscribe(s, router),
            Packet::Unsubscribe(u) => self.on_unsubscribe(u, router),
            Packet::PingReq => self.send(Packet::PingResp),
            Packet::Disconnect(d) => {
                if self.version == ProtocolVersion::V5 {
                    if let Some(e) = d.properties.session_expiry_interval() {
                        if self.connect_expiry == 0 && e > 0 {
                            self.disconnect(
                                ReasonCode::ProtocolError,
                                "session expiry cannot be set on DISCONNECT when CONNECT had 0",
                            );
                            return Some(End::Abrupt);
                        }
                        self.expiry_secs = self.cfg.cap_session_expiry(e);
                    }
                }
                return Some(if d.reason_code == ReasonCode::DisconnectWithWill {
                    End::Abrupt
                } else {
                    End::Clean
                });
            }
            Packet::Connect(_) => {
                self.disconnect(ReasonCode::ProtocolError, "second CONNECT on a connection");
                return Some(End::Abrupt);
            }
            Packet::Auth(_) => {
                self.disconnect(
                    ReasonCode::ProtocolError,
                    "AUTH without an authentication method",
                );
                return Some(End::Abrupt);
            }
            other => {
                let why = format!("a client does not send {}", other.packet_type());
                self.disconnect(ReasonCode::ProtocolError, &why);
                return Some(End::Abrupt);
            }
        }
        None
    }

    fn on_subscribe(&mut self, s: Subscribe, router: &mut dyn Router) {
        let mut codes = Vec::with_capacity(s.filters.len());
        let mut why: Option<String> = None;
        for f in &s.filters {
            match self.add_sub(&f.filter, f.options.qos, router) {
                Ok(q) => codes.push(ReasonCode::granted(q)),
                Err(r) => {
                    codes.push(r.code);
                    why.get_or_insert(format!("{}: {}", f.filter, r.reason));
                }
            }
        }
        // The session is on disk before the client is told it exists.
        self.persist_before_send = true;
        let mut ack = SubAck {
            packet_id: s.packet_id,
            reason_codes: codes,
            properties: Default::default(),
        };
        if let (Some(w), true) = (why, self.problem_info) {
            ack.properties.push(Property::ReasonString(w));
        }
        self.send(Packet::SubAck(ack));
    }

    fn on_unsubscribe(&mut self, u: Unsubscribe, router: &mut dyn Router) {
        let codes: Vec<ReasonCode> = u
            .filters
            .iter()
            .map(|f| self.remove_sub(f, router))
            .collect();
        self.persist_before_send = true;
        self.send(Packet::UnsubAck(UnsubAck {
            packet_id: u.packet_id,
            reason_codes: codes,
            properties: Default::default(),
        }));
    }

    // ---- delivery ----

    /// The namespaces with a pattern mark, in order: the driver samples each one's next offset
    /// before draining the hub and hands the samples to [`BrokerSession::advance_marks`].
    pub fn marked_namespaces(&self) -> Vec<String> {
        self.marks.keys().cloned().collect()
    }

    /// After a drain: every message below each sampled offset has been offered to this
    /// session, so a pattern-matched channel that delivered nothing has nothing below its
    /// mark to miss.
    pub fn advance_marks(&mut self, sampled: &[Option<Offset>]) {
        for (m, o) in self.marks.values_mut().zip(sampled) {
            if let Some(o) = o {
                *m = (*m).max(*o);
            }
        }
    }

    /// One message from the hub.
    pub fn deliver(&mut self, msg: Outgoing) {
        // State channels are the hot path (every tick to every subscriber): QoS 0 whatever
        // was granted, so no filter scan and no channel clone per message.
        if msg.class != Class::Stream {
            self.write_qos0(&msg.body, msg.snapshot);
            return;
        }
        let ch = &msg.channel;
        let offset = msg.offset;
        if !self.chans.contains_key(ch) {
            // A channel a pattern matched for the first time.
            let mut cp = ChanPos::new(offset);
            cp.granted = granted_for(&self.subs, ch);
            if cp.granted.is_none() {
                return;
            }
            self.chans.insert(ch.clone(), cp);
        }
        let Some(cp) = self.chans.get_mut(ch) else {
            return;
        };
        let Some(granted) = cp.granted else {
            return;
        };
        if offset < cp.next && !cp.outstanding.contains(&offset) {
            return; // already acknowledged (overlapping resume)
        }
        if granted == QoS::AtMostOnce {
            cp.next = cp.next.max(offset + 1);
            self.dirty = true;
            self.write_qos0(&msg.body, false);
        } else {
            cp.outstanding.insert(offset);
            self.queue.push_back((msg, granted));
        }
    }

    /// Sends queued QoS 1/2 messages while the client's Receive Maximum allows.
    pub fn pump(&mut self) {
        while self.proto.can_send() {
            let Some((msg, qos)) = self.queue.pop_front() else {
                break;
            };
            if !self.fits(&msg.body, qos) {
                // [MQTT-3.1.2-25]: too big for the client is discarded as if delivered.
                self.acked(&msg.channel, msg.offset);
                continue;
            }
            match self.proto.send_publish(qos) {
                Ok(pid) => {
                    write_publish(&mut self.out, &msg.body, self.version, qos, pid, false);
                    self.inflight.insert(pid, (msg.channel, msg.offset));
                }
                Err(_) => {
                    self.queue.push_front((msg, qos));
                    break;
                }
            }
        }
    }

    fn acked(&mut self, ch: &Channel, offset: Offset) {
        if let Some(cp) = self.chans.get_mut(ch) {
            cp.outstanding.remove(&offset);
            cp.next = cp.next.max(offset + 1);
            self.dirty = true;
        }
    }

    /// Whether a PUBLISH of `body` stays within the client's Maximum Packet Size.
    fn fits(&self, body: &Bytes, qos: QoS) -> bool {
        self.max_out == usize::MAX || packet_len(body.len(), self.version, qos) <= self.max_out
    }

    /// A QoS 0 PUBLISH, dropped when too big for the client [MQTT-3.1.2-25].
    fn write_qos0(&mut self, body: &Bytes, retain: bool) {
        if self.fits(body, QoS::AtMostOnce) {
            write_publish(
                &mut self.out,
                body,
                self.version,
                QoS::AtMostOnce,
                0,
                retain,
            );
        }
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
            client_id: self.client_id.clone(),
            expiry_secs: self.expiry_secs,
            disconnected_at_ms,
            subs: self
                .subs
                .iter()
                .map(|s| StoredSub {
                    filter: s.filter.clone(),
                    qos: s.qos as u8,
                })
                .collect(),
            positions: self
                .chans
                .iter()
                .map(|(c, p)| (c.to_string(), p.resume()))
                .collect(),
            marks: self.marks.clone(),
            qos2_awaiting_rel: self.qos2_in.iter().copied().collect(),
        }
    }

    /// A save failed: the session stays dirty, so the next save tries again.
    pub fn mark_dirty(&mut self) {
        self.dirty = true;
    }
}

/// The QoS a message of `ch` is delivered with: the highest granted by a matching filter.
fn granted_for(subs: &[Sub], ch: &Channel) -> Option<QoS> {
    subs.iter()
        .filter(|s| matches(&s.target, ch))
        .map(|s| s.qos)
        .max()
}

fn matches(target: &Target, ch: &Channel) -> bool {
    match target {
        Target::Channel(c) => c == ch,
        Target::Pattern(p) => p.matches(ch),
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

/// The part of a PUBLISH shared by every subscriber and both protocol versions: the topic
/// field and the payload. The driver builds it once per message (and caches it there).
pub fn publish_body(topic: &str, payload: &[u8]) -> Bytes {
    let mut b = BytesMut::with_capacity(2 + topic.len() + payload.len());
    // Channel names are far below 64 KiB; a longer one could not have been subscribed.
    b.put_u16(u16::try_from(topic.len()).unwrap_or(u16::MAX));
    b.put_slice(topic.as_bytes());
    b.put_slice(payload);
    b.freeze()
}

fn remaining_len(body_len: usize, version: ProtocolVersion, qos: QoS) -> usize {
    body_len
        + if qos == QoS::AtMostOnce { 0 } else { 2 }
        + if version == ProtocolVersion::V5 { 1 } else { 0 }
}

fn packet_len(body_len: usize, version: ProtocolVersion, qos: QoS) -> usize {
    let rem = remaining_len(body_len, version, qos);
    1 + varint_len(rem) + rem
}

/// Writes a PUBLISH from the cached body: header, topic, packet id (QoS > 0), an empty
/// property block (v5), payload. Equivalent to `encode(Packet::Publish ..)` without
/// re-encoding the payload for every subscriber.
fn write_publish(
    out: &mut BytesMut,
    body: &Bytes,
    version: ProtocolVersion,
    qos: QoS,
    pid: u16,
    retain: bool,
) {
    let topic_field = body
        .get(..2)
        .map_or(0, |b| 2 + usize::from(u16::from_be_bytes([b[0], b[1]])));
    let (topic, payload) = body.split_at(topic_field.min(body.len()));
    let rem = remaining_len(body.len(), version, qos);
    out.reserve(5 + rem);
    out.put_u8(0x30 | (qos as u8) << 1 | u8::from(retain));
    write_varint(out, rem);
    out.put_slice(topic);
    if qos != QoS::AtMostOnce {
        out.put_u16(pid);
    }
    if version == ProtocolVersion::V5 {
        out.put_u8(0);
    }
    out.put_slice(payload);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cached_publish_matches_the_codec() {
        let body = publish_body("chat/lobby", br#"{"text":"hi"}"#);
        for version in [ProtocolVersion::V4, ProtocolVersion::V5] {
            for (qos, pid) in [
                (QoS::AtMostOnce, 0),
                (QoS::AtLeastOnce, 9),
                (QoS::ExactlyOnce, 300),
            ] {
                for retain in [false, true] {
                    let mut ours = BytesMut::new();
                    write_publish(&mut ours, &body, version, qos, pid, retain);
                    let mut p = Publish::new("chat/lobby", qos, pid, &br#"{"text":"hi"}"#[..]);
                    p.retain = retain;
                    let mut theirs = BytesMut::new();
                    encode(&Packet::Publish(p), version, &mut theirs).unwrap();
                    assert_eq!(ours, theirs, "{version:?} {qos:?} retain={retain}");
                    assert_eq!(packet_len(body.len(), version, qos), theirs.len());
                }
            }
        }
    }
}
