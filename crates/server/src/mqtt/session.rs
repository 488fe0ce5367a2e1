//! One MQTT connection: CONNECT handling, then one task that serves the client's packets, the
//! hub's deliveries, keep-alive and session persistence in turn (like the WebSocket edge), so
//! a client that stops reading only ever blocks itself.
//!
//! Delivery positions: for every stream channel the connection remembers the offsets it has
//! handed out but not seen acknowledged; the resume position of a channel is the smallest of
//! those, or one past the newest acknowledged. That is what the session store keeps, so a
//! reconnect replays exactly the unacknowledged and the missed messages from the log.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap, VecDeque},
    io,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    time::Duration,
};

use axum::extract::ws::{Message as WsMessage, WebSocket};
use bytes::{BufMut, Bytes, BytesMut};
use futures_util::SinkExt;
use tickwire_hub::{Channel, Class, CloseReason, Delivery, Format, Message, Offset, Session};
use tickwire_mqtt::{
    decode, encode, encoded_len, peek_connect_version, state::ConnectionState, varint_len,
    write_varint, ConnAck, Connect, ConnectReturnCode, Disconnect, Error as CodecError, LastWill,
    Packet, Property, ProtocolVersion, Publish, QoS, ReasonCode, SubAck, Subscribe, UnsubAck,
    Unsubscribe,
};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
    time::Instant,
};

use super::{
    publish::{self, Refusal},
    store::{now_ms, StoredSession, StoredSub, MAX_CLIENT_ID},
    topic::{channel_to_topic, filter_to_target, Target},
    Broker,
};
use crate::AppState;

/// Topic aliases a client may use towards us (MQTT 5).
const TOPIC_ALIAS_MAXIMUM: u16 = 32;
/// How often acknowledged positions of a persistent session are written while connected.
const PERSIST_EVERY: Duration = Duration::from_millis(200);
/// Most publications from one client sent to the hub in one call.
const MAX_PUBLISH_BATCH: usize = 1024;

/// The byte stream under MQTT: a TCP socket, or binary WebSocket frames (a packet may span
/// frames and a frame may hold several packets, so both are just bytes to the decoder).
pub(crate) enum Transport {
    Tcp(TcpStream),
    Ws(Box<WebSocket>),
}

impl Transport {
    /// Appends what arrived to `buf`; `Ok(false)` at end of stream. Cancel-safe.
    async fn read(&mut self, buf: &mut BytesMut) -> io::Result<bool> {
        match self {
            Transport::Tcp(s) => {
                buf.reserve(8192);
                Ok(s.read_buf(buf).await? > 0)
            }
            Transport::Ws(ws) => loop {
                match ws.recv().await {
                    None | Some(Ok(WsMessage::Close(_))) => return Ok(false),
                    Some(Err(e)) => return Err(io::Error::other(e)),
                    Some(Ok(WsMessage::Binary(b))) => {
                        buf.extend_from_slice(&b);
                        return Ok(true);
                    }
                    Some(Ok(WsMessage::Text(_))) => {
                        return Err(io::Error::new(
                            io::ErrorKind::InvalidData,
                            "MQTT over WebSocket is carried in binary frames",
                        ))
                    }
                    Some(Ok(_)) => continue,
                }
            },
        }
    }

    async fn write(&mut self, data: Bytes) -> io::Result<()> {
        match self {
            Transport::Tcp(s) => s.write_all(&data).await,
            Transport::Ws(ws) => ws
                .send(WsMessage::Binary(data))
                .await
                .map_err(io::Error::other),
        }
    }

    async fn close(&mut self) {
        match self {
            Transport::Tcp(s) => {
                let _ = s.shutdown().await;
            }
            Transport::Ws(ws) => {
                let _ = ws.send(WsMessage::Close(None)).await;
            }
        }
    }
}

/// Serves one connection from its first byte to its end.
pub(crate) async fn run(st: AppState, broker: Arc<Broker>, mut io: Transport) {
    let cfg = st.config.mqtt.clone();
    let max_in = cfg.max_packet();
    let mut rbuf = BytesMut::with_capacity(4096);
    let connect = match tokio::time::timeout(
        Duration::from_secs(cfg.connect_timeout_secs.max(1)),
        read_connect(&mut io, &mut rbuf, max_in),
    )
    .await
    {
        Ok(Ok(c)) => c,
        Ok(Err(ConnectFailure::Io)) | Err(_) => return io.close().await,
        Ok(Err(ConnectFailure::Codec(version, e))) => {
            tracing::debug!(error = %e, "refused MQTT CONNECT");
            let code = e.reason_code();
            // 3.1.1 answers only an unknown protocol level (0x01); other errors just close.
            let reply = match (version, code) {
                (Some(ProtocolVersion::V5), _) => Some((ProtocolVersion::V5, code)),
                (_, ReasonCode::UnsupportedProtocolVersion) => Some((ProtocolVersion::V4, code)),
                _ => None,
            };
            if let Some((v, code)) = reply {
                let mut ack = ConnAck::new(code, false);
                if v == ProtocolVersion::V5 {
                    ack.properties.push(Property::ReasonString(e.to_string()));
                }
                let _ = send_now(&mut io, &Packet::ConnAck(ack), v).await;
            }
            return io.close().await;
        }
    };
    let version = connect.protocol;
    let refuse = |code: ReasonCode, why: &str| {
        let mut ack = ConnAck::new(code, false);
        match version {
            ProtocolVersion::V5 => ack.properties.push(Property::ReasonString(why.to_string())),
            ProtocolVersion::V4 => {
                ack.reason_code = ConnectReturnCode::from_reason(code).to_reason();
            }
        }
        Packet::ConnAck(ack)
    };
    match accept(&st, &connect) {
        Ok(accepted) => {
            let Ok(permit) = st.connections.clone().try_acquire_owned() else {
                let p = refuse(ReasonCode::ServerUnavailable, "connection limit reached");
                let _ = send_now(&mut io, &p, version).await;
                return io.close().await;
            };
            let Some(owner) = broker.claim(&accepted.client_id).await else {
                let p = refuse(
                    ReasonCode::ServerBusy,
                    "the previous connection of this client id did not let go",
                );
                let _ = send_now(&mut io, &p, version).await;
                return io.close().await;
            };
            let client_id = accepted.client_id.clone();
            let token = owner.takeover.clone();
            let mut conn = Conn::new(st.clone(), broker.clone(), connect, accepted, io, rbuf);
            conn.serve(token).await;
            broker.release(&client_id, owner);
            drop(permit);
        }
        Err((code, why)) => {
            let _ = send_now(&mut io, &refuse(code, &why), version).await;
            io.close().await;
        }
    }
}

enum ConnectFailure {
    Io,
    Codec(Option<ProtocolVersion>, CodecError),
}

async fn read_connect(
    io: &mut Transport,
    buf: &mut BytesMut,
    max: usize,
) -> Result<Connect, ConnectFailure> {
    loop {
        match peek_connect_version(buf) {
            Err(e) => return Err(ConnectFailure::Codec(None, e)),
            Ok(Some(v)) => match decode(buf, v, max) {
                Ok(Some(Packet::Connect(c))) => return Ok(c),
                Ok(Some(_)) => {
                    return Err(ConnectFailure::Codec(
                        Some(v),
                        CodecError::ProtocolViolation {
                            packet: tickwire_mqtt::PacketType::Connect,
                            reason: "first packet is not CONNECT",
                        },
                    ))
                }
                Ok(None) => {}
                Err(e) => return Err(ConnectFailure::Codec(Some(v), e)),
            },
            Ok(None) => {}
        }
        match io.read(buf).await {
            Ok(true) => {}
            _ => return Err(ConnectFailure::Io),
        }
    }
}

async fn send_now(io: &mut Transport, p: &Packet, v: ProtocolVersion) -> io::Result<()> {
    let mut out = BytesMut::new();
    encode(p, v, &mut out).map_err(io::Error::other)?;
    tokio::time::timeout(Duration::from_secs(2), io.write(out.freeze()))
        .await
        .map_err(|_| io::Error::from(io::ErrorKind::TimedOut))?
}

/// What CONNECT established before the session starts.
struct Accepted {
    client_id: String,
    assigned: bool,
    publisher: bool,
    expiry_secs: u32,
    expiry_capped: bool,
}

/// The broker-side CONNECT rules the codec leaves to us: client id, credentials, Will.
fn accept(st: &AppState, c: &Connect) -> Result<Accepted, (ReasonCode, String)> {
    let v5 = c.protocol == ProtocolVersion::V5;
    if c.properties.authentication_method().is_some() {
        return Err((
            ReasonCode::BadAuthenticationMethod,
            "enhanced authentication is not supported; put the API key in the password".into(),
        ));
    }
    let (client_id, assigned) = if c.client_id.is_empty() {
        if !v5 && !c.clean_start {
            // [MQTT-3.1.3-8]: a server-chosen id cannot name a session to come back to.
            return Err((
                ReasonCode::ClientIdentifierNotValid,
                "an empty client id needs clean session".into(),
            ));
        }
        (
            format!(
                "tw-{}-{}",
                std::process::id(),
                NEXT_ASSIGNED_ID.fetch_add(1, Ordering::Relaxed)
            ),
            true,
        )
    } else {
        (c.client_id.clone(), false)
    };
    if client_id.len() > MAX_CLIENT_ID {
        return Err((
            ReasonCode::ClientIdentifierNotValid,
            format!("client ids are at most {MAX_CLIENT_ID} bytes"),
        ));
    }
    // The API key travels as the password (or, without a password, as the user name).
    let publisher = if st.config.api_keys.is_empty() {
        true
    } else if let Some(pw) = &c.password {
        let key = std::str::from_utf8(pw).ok();
        if !st.is_publisher(key) {
            return Err((
                ReasonCode::BadUserNameOrPassword,
                "the password is not a valid API key".into(),
            ));
        }
        true
    } else {
        c.username
            .as_deref()
            .is_some_and(|u| st.is_publisher(Some(u)))
    };
    if let Some(will) = &c.will {
        publish::precheck(st, publisher, &will.topic, &will.payload)
            .map_err(|r| (r.code, format!("will: {}", r.reason)))?;
    }
    let requested = match c.protocol {
        ProtocolVersion::V4 if c.clean_start => 0,
        ProtocolVersion::V4 => u32::MAX,
        ProtocolVersion::V5 => c.properties.session_expiry_interval().unwrap_or(0),
    };
    let expiry_secs = st.config.mqtt.cap_session_expiry(requested);
    Ok(Accepted {
        client_id,
        assigned,
        publisher,
        expiry_secs,
        expiry_capped: expiry_secs != requested,
    })
}

/// Numbers the client ids the server assigns (`tw-<pid>-<n>`).
static NEXT_ASSIGNED_ID: AtomicU64 = AtomicU64::new(1);

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
    /// Subscribed explicitly in the hub only to resume it at its own position on behalf of a
    /// pattern subscription (see `restore`); dropped with that pattern.
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

/// How a connection ended.
#[derive(Debug, PartialEq, Eq)]
enum End {
    /// DISCONNECT from the client with reason 0x00: no Will.
    Clean,
    /// Anything else: the Will is published.
    Abrupt,
}

struct Conn {
    st: AppState,
    broker: Arc<Broker>,
    io: Transport,
    rbuf: BytesMut,
    out: BytesMut,
    version: ProtocolVersion,
    client_id: String,
    publisher: bool,
    keep_alive: Option<Duration>,
    /// Largest packet the client accepts (its Maximum Packet Size).
    max_out: usize,
    max_in: usize,
    problem_info: bool,
    will: Option<LastWill>,
    expiry_secs: u32,
    /// Expiry as CONNECT set it: a DISCONNECT may not turn 0 into non-zero [MQTT-3.14.2-2].
    connect_expiry: u32,
    proto: ConnectionState,
    session: Session,
    subs: Vec<Sub>,
    chans: HashMap<Channel, ChanPos>,
    /// Namespace → log offset before which every message of a pattern-matched channel has
    /// been taken from the hub (see `drain`).
    marks: BTreeMap<String, Offset>,
    /// Outgoing packet id → the message it carries.
    inflight: HashMap<u16, (Channel, Offset)>,
    /// QoS 1/2 messages waiting for the client's Receive Maximum.
    queue: VecDeque<(Arc<Message>, QoS)>,
    /// Incoming QoS 2 ids awaiting PUBREL (persisted for exactly-once across reconnects).
    qos2_in: BTreeSet<u16>,
    dirty: bool,
    session_present: bool,
    assigned: bool,
    expiry_capped: bool,
    classes: HashMap<String, Class>,
    clean_start: bool,
    /// Checked publications waiting for one hub call.
    batch: Vec<(Publish, tickwire_hub::Checked)>,
}

impl Conn {
    fn new(
        st: AppState,
        broker: Arc<Broker>,
        c: Connect,
        a: Accepted,
        io: Transport,
        rbuf: BytesMut,
    ) -> Conn {
        let cfg = &st.config.mqtt;
        let version = c.protocol;
        let mut proto = ConnectionState::new(version)
            .with_receive_maximum(cfg.receive_maximum)
            .with_topic_alias_maximum(TOPIC_ALIAS_MAXIMUM);
        if let Some(rm) = c.properties.receive_maximum() {
            proto = proto.with_peer_receive_maximum(rm);
        }
        let classes = st
            .hub
            .namespaces()
            .into_iter()
            .map(|n| (n.name, n.class))
            .collect();
        let session = st.hub.session();
        Conn {
            broker,
            io,
            rbuf,
            out: BytesMut::with_capacity(8192),
            version,
            client_id: a.client_id,
            publisher: a.publisher,
            keep_alive: (c.keep_alive > 0)
                .then(|| Duration::from_millis(u64::from(c.keep_alive) * 1500)),
            max_out: c
                .properties
                .maximum_packet_size()
                .map_or(usize::MAX, |m| m as usize),
            max_in: cfg.max_packet(),
            problem_info: c.properties.request_problem_information().unwrap_or(true),
            will: c.will,
            expiry_secs: a.expiry_secs,
            connect_expiry: a.expiry_secs,
            proto,
            session,
            subs: Vec::new(),
            chans: HashMap::new(),
            marks: BTreeMap::new(),
            inflight: HashMap::new(),
            queue: VecDeque::new(),
            qos2_in: BTreeSet::new(),
            dirty: false,
            session_present: false,
            assigned: a.assigned,
            expiry_capped: a.expiry_capped,
            classes,
            clean_start: c.clean_start,
            batch: Vec::new(),
            st,
        }
    }

    fn persistent(&self) -> bool {
        self.expiry_secs > 0
    }

    fn class(&self, namespace: &str) -> Option<Class> {
        self.classes.get(namespace).copied()
    }

    async fn serve(&mut self, takeover: tokio_util::sync::CancellationToken) {
        let _tracked = self.st.track(self.session.closer());
        let end = self.start().await;
        let end = match end {
            Some(end) => end,
            None => self.main_loop(takeover).await,
        };
        if end == End::Abrupt {
            self.publish_will().await;
        }
        self.finish().await;
        self.io.close().await;
    }

    /// Loads or discards the stored session and answers CONNECT.
    async fn start(&mut self) -> Option<End> {
        // Already decided by the caller: clean start removes, otherwise load.
        let stored = match self.broker_load().await {
            Ok(s) => s,
            Err(e) => {
                tracing::error!(client = %self.client_id, error = %e, "cannot read the MQTT session store");
                let mut ack = ConnAck::new(ReasonCode::UnspecifiedError, false);
                if self.version == ProtocolVersion::V4 {
                    ack.reason_code = ReasonCode::ServerUnavailable;
                }
                self.send(Packet::ConnAck(ack));
                let _ = self.flush().await;
                return Some(End::Abrupt);
            }
        };
        self.session_present = stored.is_some();
        let mut ack = ConnAck::new(ReasonCode::Success, self.session_present);
        if self.version == ProtocolVersion::V5 {
            let p = &mut ack.properties;
            p.push(Property::ReceiveMaximum(
                self.st.config.mqtt.receive_maximum.max(1),
            ));
            p.push(Property::MaximumPacketSize(
                u32::try_from(self.max_in).unwrap_or(u32::MAX),
            ));
            p.push(Property::TopicAliasMaximum(TOPIC_ALIAS_MAXIMUM));
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
            self.restore(s);
        }
        if self.persistent() {
            // Written at once so a crash right after CONNECT still knows the session exists.
            self.persist(false).await;
        }
        if self.flush().await.is_err() {
            return Some(End::Abrupt);
        }
        None
    }

    async fn broker_load(&mut self) -> io::Result<Option<StoredSession>> {
        let broker = self.broker.clone();
        let id = self.client_id.clone();
        let clean = self.clean_start;
        tokio::task::spawn_blocking(move || {
            if clean {
                broker.store.remove(&id)?;
                Ok(None)
            } else {
                broker.store.load(&id)
            }
        })
        .await
        .map_err(io::Error::other)?
    }

    // ---- subscriptions ----

    /// Re-creates a stored session's subscriptions at their stored positions.
    fn restore(&mut self, s: StoredSession) {
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
                    self.subscribe_channel(ch, from).is_ok()
                }
                Target::Pattern(p) => {
                    // Channels the client had seen resume at their own positions...
                    for (name, pos) in &s.positions {
                        let Ok(ch) = Channel::parse(name) else {
                            continue;
                        };
                        if p.matches(&ch)
                            && !self.chans.contains_key(&ch)
                            && self.session.subscribe(&ch, Some(*pos)).is_ok()
                        {
                            let mut cp = ChanPos::new(*pos);
                            cp.for_pattern = true;
                            self.chans.insert(ch, cp);
                        }
                    }
                    // ...and those that appeared while it was away from the namespace mark.
                    let mark = p.namespace().and_then(|ns| s.marks.get(ns).copied());
                    self.subscribe_pattern(p, mark).is_ok()
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
    ) -> Result<(), tickwire_hub::HubError> {
        let stream = self.class(ch.namespace()) == Some(Class::Stream);
        if let Some(cp) = self.chans.get_mut(ch) {
            if cp.for_pattern {
                cp.for_pattern = false;
                return Ok(());
            }
        }
        let info = self
            .session
            .subscribe(ch, if stream { from } else { None })?;
        if stream {
            let start = info.offset.or(from).unwrap_or(0);
            self.chans
                .entry(ch.clone())
                .or_insert_with(|| ChanPos::new(start));
        }
        Ok(())
    }

    fn subscribe_pattern(
        &mut self,
        p: &tickwire_hub::Pattern,
        from: Option<Offset>,
    ) -> Result<(), tickwire_hub::HubError> {
        let stream_ns = p
            .namespace()
            .filter(|ns| self.class(ns) == Some(Class::Stream))
            .map(str::to_string);
        let now = match &stream_ns {
            Some(ns) => Some(self.st.hub.next_offset(ns)?),
            None => None,
        };
        let from = if stream_ns.is_some() { from } else { None };
        let matched = self.session.subscribe_pattern(p.clone(), from)?;
        for (ch, info) in matched {
            if info.class == Class::Stream {
                let start = info.offset.or(from).or(now).unwrap_or(0);
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
    fn add_sub(&mut self, filter: &str, requested: QoS) -> Result<QoS, (ReasonCode, String)> {
        if tickwire_mqtt::topic::parse_shared(filter)
            .ok()
            .flatten()
            .is_some()
        {
            return Err((
                ReasonCode::SharedSubscriptionsNotSupported,
                "shared subscriptions are not supported".into(),
            ));
        }
        let target = filter_to_target(filter).map_err(|e| (ReasonCode::TopicFilterInvalid, e))?;
        let namespace = match &target {
            Target::Channel(c) => Some(c.namespace().to_string()),
            Target::Pattern(p) => p.namespace().map(str::to_string),
        };
        let class = match &namespace {
            Some(ns) => Some(self.class(ns).ok_or_else(|| {
                (
                    ReasonCode::TopicFilterInvalid,
                    format!(
                        "unknown namespace `{ns}`; configured namespaces: {}",
                        self.classes.keys().cloned().collect::<Vec<_>>().join(", ")
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
        let hub_err = |e: tickwire_hub::HubError| match e {
            tickwire_hub::HubError::TooManySubscriptions(_) => {
                (ReasonCode::QuotaExceeded, e.to_string())
            }
            tickwire_hub::HubError::UnknownNamespace { .. } => {
                (ReasonCode::TopicFilterInvalid, e.to_string())
            }
            _ => (ReasonCode::UnspecifiedError, e.to_string()),
        };
        match &target {
            Target::Channel(ch) => self.subscribe_channel(ch, None).map_err(hub_err)?,
            Target::Pattern(p) => self.subscribe_pattern(p, None).map_err(hub_err)?,
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

    fn remove_sub(&mut self, filter: &str) -> ReasonCode {
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
                    let _ = self.session.unsubscribe(ch);
                }
            }
            Target::Pattern(p) => {
                let _ = self.session.unsubscribe_pattern(p);
                let behalf: Vec<Channel> = self
                    .chans
                    .iter()
                    .filter(|(c, cp)| cp.for_pattern && p.matches(c))
                    .map(|(c, _)| c.clone())
                    .collect();
                for ch in behalf {
                    if !self.subs.iter().any(|s| matches(&s.target, &ch)) {
                        let _ = self.session.unsubscribe(&ch);
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

    // ---- the loop ----

    async fn main_loop(&mut self, takeover: tokio_util::sync::CancellationToken) -> End {
        let mut last_rx = Instant::now();
        let mut persist_tick = tokio::time::interval(PERSIST_EVERY);
        persist_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let mut pull = false;
            let deadline = self.keep_alive.map(|k| last_rx + k);
            let can_pull = self.queue.is_empty();
            let persist_due = self.dirty && self.persistent();
            tokio::select! {
                biased;
                _ = self.session.closed() => {
                    let reason = self.session.close_reason().unwrap_or(CloseReason::Shutdown);
                    self.st.metrics.note_close(&reason);
                    self.disconnect(close_code(&reason), &reason.to_string()).await;
                    return End::Abrupt;
                }
                _ = takeover.cancelled() => {
                    self.disconnect(ReasonCode::SessionTakenOver, "another connection took over this client id").await;
                    return End::Abrupt;
                }
                r = self.io.read(&mut self.rbuf) => {
                    match r {
                        Ok(true) => last_rx = Instant::now(),
                        _ => return End::Abrupt,
                    }
                    if let Some(end) = self.handle_input().await {
                        return end;
                    }
                }
                _ = sleep_until_opt(deadline) => {
                    self.disconnect(ReasonCode::KeepAliveTimeout, "no packet within 1.5 times the keep alive").await;
                    return End::Abrupt;
                }
                _ = self.session.wait(), if can_pull => pull = true,
                _ = persist_tick.tick(), if persist_due => {
                    self.persist(false).await;
                }
            }
            if pull {
                if let Err(reason) = self.drain().await {
                    self.st.metrics.note_close(&reason);
                    self.disconnect(close_code(&reason), &reason.to_string())
                        .await;
                    return End::Abrupt;
                }
            }
            if self.flush().await.is_err() {
                return End::Abrupt;
            }
        }
    }

    /// Decodes and handles every complete packet in the read buffer.
    async fn handle_input(&mut self) -> Option<End> {
        loop {
            let packet = match decode(&mut self.rbuf, self.version, self.max_in) {
                Ok(Some(p)) => p,
                Ok(None) => return self.flush_batch().await,
                Err(e) => {
                    // What arrived before the bad packet was valid: store and acknowledge it.
                    if let Some(end) = self.flush_batch().await {
                        return Some(end);
                    }
                    tracing::debug!(client = %self.client_id, error = %e, "MQTT protocol error");
                    self.disconnect(e.reason_code(), &e.to_string()).await;
                    return Some(End::Abrupt);
                }
            };
            let end = match packet {
                Packet::Publish(p) => self.on_publish(p).await,
                other => match self.flush_batch().await {
                    Some(end) => Some(end),
                    None => self.handle(other).await,
                },
            };
            if let Some(end) = end {
                return Some(end);
            }
            // Keep replies flowing while a client pipelines many packets.
            if self.out.len() > 64 * 1024 && self.flush().await.is_err() {
                return Some(End::Abrupt);
            }
        }
    }

    async fn handle(&mut self, packet: Packet) -> Option<End> {
        match packet {
            Packet::Publish(p) => return self.on_publish(p).await,
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
            Packet::Subscribe(s) => self.on_subscribe(s).await,
            Packet::Unsubscribe(u) => self.on_unsubscribe(u).await,
            Packet::PingReq => self.send(Packet::PingResp),
            Packet::Disconnect(d) => {
                if self.version == ProtocolVersion::V5 {
                    if let Some(e) = d.properties.session_expiry_interval() {
                        if self.connect_expiry == 0 && e > 0 {
                            self.disconnect(
                                ReasonCode::ProtocolError,
                                "session expiry cannot be set on DISCONNECT when CONNECT had 0",
                            )
                            .await;
                            return Some(End::Abrupt);
                        }
                        self.expiry_secs = self.st.config.mqtt.cap_session_expiry(e);
                    }
                }
                return Some(if d.reason_code == ReasonCode::DisconnectWithWill {
                    End::Abrupt
                } else {
                    End::Clean
                });
            }
            Packet::Connect(_) => {
                self.disconnect(ReasonCode::ProtocolError, "second CONNECT on a connection")
                    .await;
                return Some(End::Abrupt);
            }
            Packet::Auth(_) => {
                self.disconnect(
                    ReasonCode::ProtocolError,
                    "AUTH without an authentication method",
                )
                .await;
                return Some(End::Abrupt);
            }
            other => {
                let why = format!("a client does not send {}", other.packet_type());
                self.disconnect(ReasonCode::ProtocolError, &why).await;
                return Some(End::Abrupt);
            }
        }
        None
    }

    /// Checks a PUBLISH and adds it to the batch. Consecutive PUBLISH packets already in the
    /// read buffer go to the hub together (one group commit), acknowledged in order after it.
    async fn on_publish(&mut self, mut p: Publish) -> Option<End> {
        if let Err(e) = self.proto.resolve_topic_alias(&mut p) {
            self.disconnect(e.reason_code(), &e.to_string()).await;
            return Some(End::Abrupt);
        }
        match self.proto.receive_publish(&p) {
            Ok(tickwire_mqtt::state::IncomingAction::Deliver) => {}
            Ok(tickwire_mqtt::state::IncomingAction::Duplicate(reply)) => {
                if let Some(r) = reply {
                    self.send(r);
                }
                return None;
            }
            Err(e) => {
                self.disconnect(e.reason_code(), &e.to_string()).await;
                return Some(End::Abrupt);
            }
        }
        match publish::precheck(&self.st, self.publisher, &p.topic, &p.payload) {
            Ok(req) => {
                self.batch.push((p, req));
                if self.batch.len() >= MAX_PUBLISH_BATCH {
                    return self.flush_batch().await;
                }
                None
            }
            Err(r) => {
                // Earlier publications keep their order: stored and acknowledged first.
                if let Some(end) = self.flush_batch().await {
                    return Some(end);
                }
                self.refuse_publish(&p, r).await
            }
        }
    }

    /// Stores the batched publications and acknowledges each (PUBACK / PUBREC only now, after
    /// the hub's durable ack).
    async fn flush_batch(&mut self) -> Option<End> {
        if self.batch.is_empty() {
            return None;
        }
        let (packets, requests): (Vec<Publish>, Vec<tickwire_hub::Checked>) =
            std::mem::take(&mut self.batch).into_iter().unzip();
        let results = self.st.hub.publish_checked(requests).await;
        // Replies are only buffered here; the socket sees them after this returns, so saving
        // the QoS 2 ids once, before any flush, keeps "on disk before PUBREC".
        let mut qos2 = false;
        for (p, result) in packets.iter().zip(results) {
            match result {
                Ok(_) => {
                    if p.qos == QoS::ExactlyOnce {
                        self.qos2_in.insert(p.packet_id);
                        qos2 = true;
                    }
                    if let Some(ack) = self.proto.ack_incoming(p.packet_id) {
                        self.send(ack);
                    }
                }
                Err(e) => {
                    if std::mem::take(&mut qos2) && self.persistent() {
                        self.persist(false).await;
                    }
                    let r = publish::refusal(&e);
                    if let Some(end) = self.refuse_publish(p, r).await {
                        return Some(end);
                    }
                }
            }
        }
        if qos2 && self.persistent() {
            self.persist(false).await;
        }
        None
    }

    /// MQTT 5 tells a QoS 1/2 publisher why in its PUBACK/PUBREC; QoS 0 has no ack, so the
    /// connection ends with the reason. 3.1.1 has no negative ack: closing is the only signal
    /// it allows [MQTT-3.3.5-2].
    async fn refuse_publish(&mut self, p: &Publish, r: Refusal) -> Option<End> {
        tracing::debug!(client = %self.client_id, topic = %p.topic, reason = %r.reason, "MQTT publish refused");
        self.st.metrics.rejected.fetch_add(1, Ordering::Relaxed);
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
        self.disconnect(r.code, &r.reason).await;
        Some(End::Abrupt)
    }

    async fn on_subscribe(&mut self, s: Subscribe) {
        let mut codes = Vec::with_capacity(s.filters.len());
        let mut why: Option<String> = None;
        for f in &s.filters {
            match self.add_sub(&f.filter, f.options.qos) {
                Ok(q) => codes.push(ReasonCode::granted(q)),
                Err((code, reason)) => {
                    codes.push(code);
                    why.get_or_insert(format!("{}: {reason}", f.filter));
                }
            }
        }
        // The session is on disk before the client is told it exists.
        if self.persistent() {
            self.persist(false).await;
        }
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

    async fn on_unsubscribe(&mut self, u: Unsubscribe) {
        let codes: Vec<ReasonCode> = u.filters.iter().map(|f| self.remove_sub(f)).collect();
        if self.persistent() {
            self.persist(false).await;
        }
        self.send(Packet::UnsubAck(UnsubAck {
            packet_id: u.packet_id,
            reason_codes: codes,
            properties: Default::default(),
        }));
    }

    // ---- delivery ----

    /// Takes what the hub has ready. The namespace marks are sampled first: every message
    /// below them has been offered to this session, so after the drain a pattern-matched
    /// channel that delivered nothing has nothing below its mark to miss.
    async fn drain(&mut self) -> Result<(), CloseReason> {
        // In key order; nothing changes `marks` until they are applied below.
        let sampled: Vec<Option<Offset>> = self
            .marks
            .keys()
            .map(|ns| self.st.hub.next_offset(ns).ok())
            .collect();
        let batch = self.session.drain().await?;
        for (m, o) in self.marks.values_mut().zip(sampled) {
            if let Some(o) = o {
                *m = (*m).max(o);
            }
        }
        let n = batch.len() as u64;
        for d in batch {
            self.deliver(d);
        }
        self.pump();
        self.st.metrics.delivered.fetch_add(n, Ordering::Relaxed);
        Ok(())
    }

    fn deliver(&mut self, d: Delivery) {
        // State channels are the hot path (every tick to every subscriber): QoS 0 whatever
        // was granted, so no filter scan and no channel clone per message.
        if self.class(d.message.publication.channel.namespace()) != Some(Class::Stream) {
            self.write_qos0(&d.message, d.snapshot);
            return;
        }
        let ch = &d.message.publication.channel;
        let offset = d.message.publication.offset;
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
            self.write_qos0(&d.message, false);
        } else {
            cp.outstanding.insert(offset);
            self.queue.push_back((d.message, granted));
        }
    }

    /// Sends queued QoS 1/2 messages while the client's Receive Maximum allows.
    fn pump(&mut self) {
        while self.proto.can_send() {
            let Some((msg, qos)) = self.queue.pop_front() else {
                break;
            };
            let ch = &msg.publication.channel;
            let offset = msg.publication.offset;
            let body = mqtt_body(&msg);
            if !self.fits(&body, qos) {
                // [MQTT-3.1.2-25]: too big for the client is discarded as if delivered.
                self.acked(ch, offset);
                continue;
            }
            match self.proto.send_publish(qos) {
                Ok(pid) => {
                    self.inflight.insert(pid, (ch.clone(), offset));
                    write_publish(&mut self.out, &body, self.version, qos, pid, false);
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
    fn write_qos0(&mut self, msg: &Message, retain: bool) {
        let body = mqtt_body(msg);
        if self.fits(&body, QoS::AtMostOnce) {
            write_publish(
                &mut self.out,
                &body,
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

    async fn flush(&mut self) -> io::Result<()> {
        if self.out.is_empty() {
            return Ok(());
        }
        let data = self.out.split().freeze();
        match tokio::time::timeout(self.st.config.write_timeout(), self.io.write(data)).await {
            Ok(r) => r,
            Err(_) => Err(io::ErrorKind::TimedOut.into()),
        }
    }

    /// MQTT 5: DISCONNECT with the reason, then close. 3.1.1 has no server DISCONNECT: close.
    async fn disconnect(&mut self, code: ReasonCode, why: &str) {
        if self.version == ProtocolVersion::V5 {
            let mut d = Disconnect::new(code);
            if self.problem_info {
                d.properties.push(Property::ReasonString(why.to_string()));
            }
            self.send(Packet::Disconnect(d));
        }
        let _ = tokio::time::timeout(Duration::from_secs(2), self.flush()).await;
    }

    // ---- end of the connection ----

    async fn publish_will(&mut self) {
        let Some(will) = self.will.take() else {
            return;
        };
        if let Err(r) = publish::publish(&self.st, self.publisher, &will.topic, &will.payload).await
        {
            tracing::warn!(client = %self.client_id, topic = %will.topic, reason = %r.reason, "will not published");
        }
    }

    async fn finish(&mut self) {
        if self.persistent() {
            self.persist(true).await;
        } else if self.session_present || !self.clean_start {
            let broker = self.broker.clone();
            let id = self.client_id.clone();
            let _ = tokio::task::spawn_blocking(move || broker.store.remove(&id)).await;
        }
    }

    fn snapshot(&self, disconnected: bool) -> StoredSession {
        StoredSession {
            client_id: self.client_id.clone(),
            expiry_secs: self.expiry_secs,
            disconnected_at_ms: disconnected.then(now_ms),
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

    async fn persist(&mut self, disconnected: bool) {
        let s = self.snapshot(disconnected);
        let broker = self.broker.clone();
        let saved = tokio::task::spawn_blocking(move || broker.store.save(&s))
            .await
            .map_err(io::Error::other)
            .and_then(|r| r);
        match saved {
            Ok(()) => self.dirty = false,
            Err(e) => {
                tracing::error!(client = %self.client_id, error = %e, "cannot save the MQTT session")
            }
        }
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

/// The DISCONNECT reason code for a hub session that was closed under us.
fn close_code(reason: &CloseReason) -> ReasonCode {
    match reason {
        CloseReason::SlowConsumer { .. } => ReasonCode::QuotaExceeded,
        CloseReason::Shutdown => ReasonCode::ServerShuttingDown,
        CloseReason::Kicked(_) => ReasonCode::AdministrativeAction,
    }
}

async fn sleep_until_opt(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
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
/// field and the payload, encoded once per message.
fn mqtt_body(msg: &Message) -> Bytes {
    msg.encoded(Format::Mqtt, |p| {
        let topic = channel_to_topic(p.channel.as_str());
        let mut b = BytesMut::with_capacity(2 + topic.len() + p.data.len());
        // Channel names are far below 64 KiB; a longer one could not have been subscribed.
        b.put_u16(u16::try_from(topic.len()).unwrap_or(u16::MAX));
        b.put_slice(topic.as_bytes());
        b.put_slice(&p.data);
        b.freeze()
    })
}

fn remaining_len(body_len: usize, version: ProtocolVersion, qos: QoS) -> usize {
    body_len
        + if qos == QoS::AtMostOnce { 0 } else { 2 }
        + if version == ProtocolVersion::V5 { 1 } else { 0 }
}

#[cfg(test)]
fn publish_len(msg: &Message, version: ProtocolVersion, qos: QoS) -> usize {
    packet_len(mqtt_body(msg).len(), version, qos)
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
    use tickwire_hub::Publication;

    #[test]
    fn cached_publish_matches_the_codec() {
        let ch = Channel::parse("chat.lobby").unwrap();
        let msg = Message::new(Publication {
            channel: ch,
            offset: 7,
            timestamp: 1,
            msg_id: None,
            data: Bytes::from_static(br#"{"text":"hi"}"#),
        });
        for version in [ProtocolVersion::V4, ProtocolVersion::V5] {
            for (qos, pid) in [
                (QoS::AtMostOnce, 0),
                (QoS::AtLeastOnce, 9),
                (QoS::ExactlyOnce, 300),
            ] {
                for retain in [false, true] {
                    let mut ours = BytesMut::new();
                    write_publish(&mut ours, &mqtt_body(&msg), version, qos, pid, retain);
                    let mut p = Publish::new("chat/lobby", qos, pid, &br#"{"text":"hi"}"#[..]);
                    p.retain = retain;
                    let mut theirs = BytesMut::new();
                    encode(&Packet::Publish(p), version, &mut theirs).unwrap();
                    assert_eq!(ours, theirs, "{version:?} {qos:?} retain={retain}");
                    assert_eq!(publish_len(&msg, version, qos), theirs.len());
                }
            }
        }
    }
}
