//! One MQTT connection: CONNECT (who the client is, through the gateway), then one task that
//! moves bytes between the socket and the broker session state machine
//! (`tickwire_mqtt::broker::BrokerSession`): packets in, publications to the hub in batches,
//! deliveries out, keep-alive and session saves, in turn, so a client that stops reading only
//! ever blocks itself. Every protocol decision is the state machine's.

use std::{
    collections::VecDeque,
    io,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    time::Duration,
};

use axum::extract::ws::{Message as WsMessage, WebSocket};
use bytes::{Bytes, BytesMut};
use tickwire_gateway::{
    park::Quiet, AckFuture, Connection, Credentials, ErrorCode, Event, Principal, Refusal,
};
use tickwire_hub::{Ack, Channel, Checked, Class, CloseReason, Delivery, Format, Message, Offset};
use tickwire_model::Pattern;
use tickwire_mqtt::{
    broker::{
        channel_to_topic, publish_body, Accepted, BrokerSession, End, Outgoing, Refused, Router,
    },
    decode, encode, peek_connect_version, Connect, Error as CodecError, Packet, ProtocolVersion,
    Publish, ReasonCode,
};
use tokio::{
    io::{AsyncRead, AsyncWriteExt},
    time::Instant,
};

// The connection's parts, by responsibility: the CONNECT phase (reading it, the broker-side
// rules, refusals), the hub operations the session asks for, the byte stream (TCP, TLS or
// WebSocket), the publish window, and the connection loop (here).
mod connect;
mod park;
mod router;
mod transport;
mod window;

use connect::{accept, read_connect, send_now, ConnectFailure};
use park::Turn;
use router::HubRouter;
pub(crate) use transport::Transport;
use window::{front_acks, Window, MAX_PENDING};

use crate::{
    publish::{self, refused},
    store::{self, now_ms, StoredSession, MAX_CLIENT_ID},
    MqttEdge, MQTT,
};

/// How often acknowledged positions of a persistent session are written while connected.
const PERSIST_EVERY: Duration = Duration::from_millis(200);
/// Serves one MQTT connection from its first byte to its end: `io` yields the byte stream
/// (after a TLS handshake, say) or `None`; `peer` is the client's address where the transport
/// knows it (counted against the per-IP connection cap).
///
/// The task spawned for a connection is allocated at the size of this future's largest
/// state, for the connection's whole life (issue 20: ≤ 2 KB per idle connection). So each
/// phase is a boxed future of its own (the handshake and CONNECT phase's locals are freed
/// when it ends), except the parked wait of a quiet connection ([`Driver::serve_parking`]):
/// that is the state the task is sized for, and an idle connection holds only it and its
/// driver. A plain function returning an `async move` block, so the task keeps one pointer
/// of what it was started with (an `async fn` keeps each parameter for its whole life).
#[allow(clippy::manual_async_fn)] // on purpose: see above
pub(crate) fn run<F>(
    edge: Arc<MqttEdge>,
    io: F,
    peer: Option<std::net::IpAddr>,
) -> impl std::future::Future<Output = ()> + Send + 'static
where
    F: std::future::Future<Output = Option<Transport>> + Send + 'static,
{
    let accepting = Box::pin(async move { accept_connection(edge, io.await?, peer).await });
    async move {
        let Some(mut d) = accepting.await else {
            return;
        };
        let started = match Box::pin(d.start()).await {
            Ok(started) => started,
            Err(refusal) => {
                // Refused before CONNACK: no session of its own was created or touched (it
                // may be another identity's), and no Will is published. The client id is
                // let go of before the client hears the refusal: the id's owner,
                // reconnecting at once, must not find it still held by the refused
                // identity.
                d.release();
                Box::pin(d.refuse(&refusal)).await;
                return;
            }
        };
        let end = match started {
            Some(end) => end,
            None => d.serve_parking().await,
        };
        Box::pin(d.wind_up(end)).await;
        d.release();
    }
}

/// Closes a connection that ends in its CONNECT phase.
async fn closed(mut io: Transport) -> Option<Box<Driver>> {
    io.close().await;
    None
}

/// The CONNECT phase: reads and checks CONNECT, admits the connection and claims its client
/// id; a refusal is sent here, and `None` returned.
async fn accept_connection(
    edge: Arc<MqttEdge>,
    mut io: Transport,
    peer: Option<std::net::IpAddr>,
) -> Option<Box<Driver>> {
    let cfg = &edge.config;
    let max_in = cfg.max_packet();
    let mut rbuf = BytesMut::new();
    let connect = match tokio::time::timeout(
        Duration::from_secs(cfg.connect_timeout_secs.max(1)),
        read_connect(&mut io, &mut rbuf, max_in),
    )
    .await
    {
        Ok(Ok(c)) => c,
        Ok(Err(ConnectFailure::Io)) | Err(_) => return closed(io).await,
        Ok(Err(ConnectFailure::Codec(version, e))) => {
            tracing::debug!(error = %e, "refused MQTT CONNECT");
            let code = e.reason_code();
            // 3.1.1 answers only an unknown protocol level (0x01); other errors just close.
            let reply = match (version, code) {
                (Some(ProtocolVersion::V5), _) => Some(ProtocolVersion::V5),
                (_, ReasonCode::UnsupportedProtocolVersion) => Some(ProtocolVersion::V4),
                _ => None,
            };
            if let Some(v) = reply {
                let why = e.to_string();
                let p = BrokerSession::refusal(v, code, &why);
                let _ = send_now(&mut io, &p, v).await;
            }
            return closed(io).await;
        }
    };
    let version = connect.protocol;
    let refuse = |code: ReasonCode, why: &str| BrokerSession::refusal(version, code, why);
    let (mut accepted, principal) = match accept(&edge, &connect) {
        Ok(a) => a,
        Err(r) => {
            edge.gateway.metrics().edge(MQTT).rejected();
            let _ = send_now(&mut io, &refuse(r.code, &r.reason), version).await;
            return closed(io).await;
        }
    };
    let conn = match edge.gateway.connect_from(MQTT, principal, peer, None) {
        Ok(c) => c,
        Err(r) => {
            let code = match r.code {
                tickwire_gateway::ErrorCode::Unavailable => ReasonCode::ServerUnavailable,
                tickwire_gateway::ErrorCode::RateLimited => ReasonCode::ConnectionRateExceeded,
                _ => r.mqtt_reason(),
            };
            let _ = send_now(&mut io, &refuse(code, &r.reason), version).await;
            return closed(io).await;
        }
    };
    // The client id and the identity are each one string, shared by the registry, the claim
    // and the session (every idle connection holds them).
    conn.set_client_id(accepted.client_id.clone());
    let identity = conn.identity();
    accepted.owner = Some(identity.clone());
    let owner = match edge
        .broker
        .claim(&accepted.client_id, identity, conn.waker())
        .await
    {
        Ok(o) => o,
        Err(other) => {
            let p = if other {
                edge.gateway.metrics().edge(MQTT).rejected();
                refuse(
                    ReasonCode::NotAuthorized,
                    "this client id is in use by another identity",
                )
            } else {
                refuse(
                    ReasonCode::ServerBusy,
                    "the previous connection of this client id did not let go",
                )
            };
            let _ = send_now(&mut io, &p, version).await;
            return closed(io).await;
        }
    };
    let client_id = accepted.client_id.clone();
    let session = BrokerSession::new(edge.config.session(), &connect, accepted);
    let d = Box::new(Driver {
        edge: edge.clone(),
        io,
        rbuf,
        client_id,
        session,
        conn,
        window: None,
        moved: false,
        last_rx: Instant::now(),
        persist_at: Instant::now(),
        token_at: None,
        park_after_ms: 0,
        parked_at: Instant::now(),
        owner: Some(owner),
        in_flight: 0,
    });
    Some(d)
}

/// Why a stored session could not be used.
enum Stored {
    Io(io::Error),
    /// It belongs to this identity.
    OtherOwner(String),
}

struct Driver {
    edge: Arc<MqttEdge>,
    io: Transport,
    rbuf: BytesMut,
    session: BrokerSession,
    /// The session's client id, apart from it so the router can borrow it beside the session.
    client_id: Arc<str>,
    conn: Connection,
    /// The publish window, made on the connection's first PUBLISH and let go of when it
    /// parks: a connection that only reads carries one pointer for it instead of ~60 bytes.
    window: Option<Box<Window>>,
    /// Cluster mode: a save found that another node took this session over.
    moved: bool,
    /// When the client's last packet arrived (the keep-alive verdict counts from it).
    last_rx: Instant,
    /// The session is saved at most every [`PERSIST_EVERY`] while it changes: the first
    /// change at once, the next ones from this instant on.
    persist_at: Instant,
    /// When the token expires (MQTT 3.1.1 cannot re-authenticate: at expiry the connection
    /// closes, v5 with reason 0xA0, and the client reconnects with a new token).
    token_at: Option<Instant>,
    /// The quiet period before the connection is parked, in ms (`tickwire_gateway::park`;
    /// 0: never parked yet).
    park_after_ms: u16,
    /// When the connection was last parked.
    parked_at: Instant,
    /// Its hold on the client id (taken when the connection ends: [`Driver::release`]). In
    /// the driver, not the task: every idle connection's task is sized for its largest
    /// state (see [`run`]).
    owner: Option<crate::Owner>,
    /// This connection's share of [`crate::Broker`]'s in-flight gauge: updated as the
    /// connection loop turns, taken back when the connection ends, however it ends (`Drop`).
    in_flight: i64,
}

impl Drop for Driver {
    fn drop(&mut self) {
        self.set_in_flight(0);
    }
}

impl Driver {
    /// Sets this connection's share of the in-flight gauge to `n`.
    fn set_in_flight(&mut self, n: usize) {
        let n = i64::try_from(n).unwrap_or(i64::MAX);
        if n != self.in_flight {
            self.edge
                .broker
                .in_flight
                .fetch_add(n - self.in_flight, Ordering::Relaxed);
            self.in_flight = n;
        }
    }

    /// Sends the CONNACK that refuses the connection, and closes it.
    async fn refuse(&mut self, refusal: &Packet) {
        let _ = send_now(&mut self.io, refusal, self.session.version()).await;
        self.io.close().await;
    }

    /// Lets go of the client id.
    fn release(&mut self) {
        if let Some(owner) = self.owner.take() {
            self.edge.broker.release(&self.client_id, owner);
        }
    }

    fn router(&mut self) -> (&mut BrokerSession, HubRouter<'_>) {
        let client_id = &self.client_id;
        (
            &mut self.session,
            HubRouter {
                conn: &mut self.conn,
                hub: self.edge.gateway.hub(),
                client_id,
            },
        )
    }

    /// Ends a connection that was served: publications handed to the hub are stored whether
    /// or not anyone waits for them (their answers update the session, a QoS 2 id is
    /// remembered once stored, before it is saved, or a resent QoS 2 PUBLISH after a
    /// reconnect would be stored twice), the Will goes out after an abrupt end, the session is
    /// saved or removed, and the socket is closed.
    async fn wind_up(&mut self, end: End) {
        self.settle_pending().await;
        if end == End::Abrupt {
            self.publish_will().await;
        }
        self.finish().await;
        self.io.close().await;
    }

    /// Loads or discards the stored session and answers CONNECT; `Err` with the CONNACK that
    /// refuses the connection before it began (boxed: the task would hold the packet's room
    /// for its whole life).
    async fn start(&mut self) -> Result<Option<End>, Box<Packet>> {
        let version = self.session.version();
        let stored = match self.load_stored().await {
            Ok(s) => s,
            Err(Stored::OtherOwner(owner)) => {
                tracing::warn!(client = %self.session.client_id(), owner, identity = %self.conn.principal().identity(), "MQTT session belongs to another identity; connection refused");
                self.conn.refused();
                return Err(Box::new(BrokerSession::refusal(
                    version,
                    ReasonCode::NotAuthorized,
                    "this client id's session belongs to another identity",
                )));
            }
            Err(Stored::Io(e)) => {
                tracing::error!(client = %self.session.client_id(), error = %e, "cannot read the MQTT session store");
                let code = match version {
                    ProtocolVersion::V4 => ReasonCode::ServerUnavailable,
                    ProtocolVersion::V5 => ReasonCode::UnspecifiedError,
                };
                return Err(Box::new(BrokerSession::refusal(
                    version,
                    code,
                    "session store unreadable",
                )));
            }
        };
        let (session, mut router) = self.router();
        session.connack(stored, &mut router);
        self.last_rx = Instant::now();
        self.persist_at = self.last_rx;
        self.token_at = self.conn.token_deadline();
        if self.flush().await.is_err() {
            return Ok(Some(End::Abrupt));
        }
        Ok(None)
    }

    /// The stored session of this client id, checked to belong to this connection's
    /// identity before anything is loaded or (clean start) removed.
    async fn load_stored(&mut self) -> Result<Option<StoredSession>, Stored> {
        // An id with nothing stored (most connections are clean sessions) needs neither the
        // disk nor a blocking-pool thread.
        if !self.edge.broker.store.may_have(self.session.client_id()) {
            return Ok(None);
        }
        let broker = self.edge.broker.clone();
        let id = self.session.client_id().to_string();
        let clean = self.session.clean_start();
        let identity = self.conn.principal().identity();
        tokio::task::spawn_blocking(move || {
            let stored = broker.store.load(&id).map_err(Stored::Io)?;
            if let Some(owner) = stored.as_ref().and_then(|s| s.owner.clone()) {
                if owner != identity {
                    return Err(Stored::OtherOwner(owner));
                }
            }
            if clean {
                broker.store.remove(&id).map_err(Stored::Io)?;
                Ok(None)
            } else {
                Ok(stored)
            }
        })
        .await
        .map_err(|e| Stored::Io(io::Error::other(e)))?
    }

    /// One turn of serving: until the connection ends, or has been quiet for its period with
    /// nothing owed either way ([`Turn::Park`]). `woken`: a wake-up from the hub was taken
    /// while parked, so deliveries are drained before waiting for the next.
    async fn main_loop(&mut self, mut woken: bool) -> Turn {
        // Set by another connection taking the client id over (`Broker::claim`).
        let Some(takeover) = self.owner.as_ref().map(|o| o.takeover.clone()) else {
            return Turn::End(End::Abrupt);
        };
        // Bytes read while parked come first, and their answers go out at once: nothing
        // else may come to end the wait below.
        if !self.rbuf.is_empty() {
            if let Some(end) = Box::pin(self.handle_input()).await {
                self.flush_briefly().await;
                return Turn::End(end);
            }
            if Box::pin(self.flush()).await.is_err() {
                return Turn::End(End::Abrupt);
            }
        }
        // One timer for the keep-alive verdict, the token's expiry, the next save and the end
        // of the quiet period, armed for the earliest (`deadline::arm`).
        let timer = tokio::time::sleep_until(self.last_rx + PERSIST_EVERY);
        tokio::pin!(timer);
        let mut quiet = Quiet::start(self.park_after_ms);
        loop {
            self.set_in_flight(self.session.in_flight());
            if self.moved {
                self.session.disconnect(
                    ReasonCode::SessionTakenOver,
                    "this client id connected to another node",
                );
                self.flush_briefly().await;
                return Turn::End(End::Abrupt);
            }
            let mut pull = false;
            let reading = self.window.as_ref().map_or(0, |w| w.pending_len) < MAX_PENDING;
            // No keep-alive verdict while this side stopped reading: the client's packets
            // may be waiting in the socket.
            let deadline = self.keep_alive_at().filter(|_| reading);
            let can_pull = self.session.queued() == 0;
            let persist_due = self.session.dirty() && self.session.persistent();
            let save_at = persist_due.then_some(self.persist_at);
            let token_at = self.token_at;
            let parking = self.parkable().then_some(quiet.at());
            let due = [deadline, token_at, save_at, parking]
                .into_iter()
                .flatten()
                .min();
            if let Some(due) = due {
                tickwire_gateway::deadline::arm(timer.as_mut(), due);
            }
            tokio::select! {
                biased;
                _ = self.conn.closed() => {
                    let reason = self.conn.close_reason().unwrap_or(CloseReason::Shutdown);
                    self.conn.gateway().metrics().note_close(&reason);
                    self.session.disconnect(close_code(&reason), &reason.to_string());
                    self.flush_briefly().await;
                    return Turn::End(End::Abrupt);
                }
                _ = takeover.wait() => {
                    self.session.disconnect(ReasonCode::SessionTakenOver, "another connection took over this client id");
                    self.flush_briefly().await;
                    return Turn::End(End::Abrupt);
                }
                // The wake-up taken while parked, once the session can take deliveries.
                () = std::future::ready(()), if woken && can_pull => {
                    woken = false;
                    pull = true;
                }
                acks = front_acks(&mut self.window), if self.window.as_ref().is_some_and(|w| !w.pending.is_empty()) => {
                    quiet.busy();
                    if !reading {
                        self.last_rx = Instant::now();
                    }
                    if let Some(end) = self.answer_front(acks) {
                        self.flush_briefly().await;
                        return Turn::End(end);
                    }
                }
                r = self.io.read(&mut self.rbuf), if reading => {
                    quiet.busy();
                    match r {
                        Ok(true) => self.last_rx = Instant::now(),
                        _ => return Turn::End(End::Abrupt),
                    }
                    if let Some(end) = Box::pin(self.handle_input()).await {
                        self.flush_briefly().await;
                        return Turn::End(end);
                    }
                }
                () = &mut timer, if due.is_some() => {
                    let now = Instant::now();
                    if deadline.is_some_and(|d| d <= now) {
                        self.session.disconnect(ReasonCode::KeepAliveTimeout, "no packet within 1.5 times the keep alive");
                        self.flush_briefly().await;
                        return Turn::End(End::Abrupt);
                    }
                    if token_at.is_some_and(|t| t <= now) {
                        self.token_at = None;
                        self.conn.expire();
                    }
                    if save_at.is_some_and(|t| t <= now) {
                        self.persist_at = now + PERSIST_EVERY;
                        Box::pin(self.persist(None)).await;
                    }
                    if quiet.check(now, self.parkable()) {
                        self.park_after_ms = quiet.ms();
                        return Turn::Park;
                    }
                }
                _ = self.conn.wait(), if can_pull => {
                    quiet.busy();
                    pull = true;
                }
            }
            if pull {
                if let Err(reason) = Box::pin(self.drain()).await {
                    self.session
                        .disconnect(close_code(&reason), &reason.to_string());
                    self.flush_briefly().await;
                    return Turn::End(End::Abrupt);
                }
            }
            if Box::pin(self.flush()).await.is_err() {
                return Turn::End(End::Abrupt);
            }
        }
    }

    /// When the keep-alive verdict falls: 1.5 times the keep alive after the client's last
    /// packet (none for a keep alive of 0).
    fn keep_alive_at(&self) -> Option<Instant> {
        self.session.keep_alive().map(|k| self.last_rx + k)
    }

    /// Decodes and handles every complete packet in the read buffer.
    async fn handle_input(&mut self) -> Option<End> {
        let max_in = self.edge.config.max_packet();
        loop {
            let packet = match decode(&mut self.rbuf, self.session.version(), max_in) {
                Ok(Some(p)) => p,
                Ok(None) => {
                    // Everything read was a whole packet: let go of the buffer, so a connection
                    // that goes idle holds none (the next read allocates what it needs).
                    if self.rbuf.is_empty() {
                        self.rbuf = BytesMut::new();
                    }
                    self.submit().await;
                    return None;
                }
                Err(e) => {
                    // What arrived before the bad packet was valid: store and acknowledge it.
                    if let Some(end) = self.flush_batch().await {
                        return Some(end);
                    }
                    tracing::debug!(client = %self.session.client_id(), error = %e, "MQTT protocol error");
                    self.session.disconnect(e.reason_code(), &e.to_string());
                    return Some(End::Abrupt);
                }
            };
            let end = match packet {
                Packet::Publish(p) => self.on_publish(p).await,
                // The client's acknowledgements of deliveries answer nothing of its own
                // publishes: no reason to wait for them.
                ack @ (Packet::PubAck(_) | Packet::PubRec(_) | Packet::PubComp(_)) => {
                    let (session, mut router) = self.router();
                    session.on_packet(ack, &mut router)
                }
                other => match self.flush_batch().await {
                    Some(end) => Some(end),
                    None => {
                        let (session, mut router) = self.router();
                        session.on_packet(other, &mut router)
                    }
                },
            };
            if let Some(end) = end {
                return Some(end);
            }
            // Keep replies flowing while a client pipelines many packets.
            if self.session.output().len() > 64 * 1024 && self.flush().await.is_err() {
                return Some(End::Abrupt);
            }
        }
    }

    /// Takes what the hub has ready into the session. The namespace marks are sampled first:
    /// every message below them has been offered to this session (see
    /// `BrokerSession::advance_marks`).
    async fn drain(&mut self) -> Result<(), CloseReason> {
        let hub = self.conn.gateway().hub().clone();
        let sampled: Vec<Option<Offset>> = self
            .session
            .marked_namespaces()
            .iter()
            .map(|ns| hub.next_offset(ns).ok())
            .collect();
        let batch = match self.conn.drain().await {
            Event::Deliver(b) => b,
            Event::Close(reason) => return Err(reason),
        };
        self.session.advance_marks(&sampled);
        let n = batch.len() as u64;
        for d in batch {
            let class = self
                .edge
                .gateway
                .hub()
                .namespace_spec(d.message.publication.channel.namespace())
                .map_or(Class::State, |n| n.class);
            self.session.deliver(outgoing(&d, class));
        }
        self.session.pump();
        self.conn.delivered(n);
        Ok(())
    }

    /// Writes the session's output; a persistent session that must be on disk first (a
    /// SUBACK, a PUBREC of QoS 2) is saved before.
    async fn flush(&mut self) -> io::Result<()> {
        if self.session.take_persist_before_send() {
            self.persist(None).await;
        }
        if self.session.output().is_empty() {
            return Ok(());
        }
        // Taken whole, not split: a split leaves the rest of the allocation with the session,
        // and an idle connection would keep holding it (issue 20: ≤ 2 KB per idle connection).
        let data = std::mem::take(self.session.output()).freeze();
        let limit = self.conn.gateway().write_timeout();
        // The deadline is armed only for a write that waits: almost every write finds room,
        // and a timer per flush is paid by every delivery batch of every subscriber.
        let write = std::pin::pin!(self.io.write(data));
        match tickwire_gateway::deadline::timeout_if_pending(limit, write).await {
            Ok(r) => r,
            Err(_) => {
                self.conn.write_timed_out();
                Err(io::ErrorKind::TimedOut.into())
            }
        }
    }

    /// A last write (a DISCONNECT) before closing, bounded.
    async fn flush_briefly(&mut self) {
        let _ = Box::pin(tokio::time::timeout(Duration::from_secs(2), self.flush())).await;
    }

    async fn publish_will(&mut self) {
        let Some(will) = self.session.take_will() else {
            return;
        };
        let gw = self.conn.gateway().clone();
        if let Err(r) =
            publish::publish(&gw, self.conn.principal(), &will.topic, &will.payload).await
        {
            tracing::warn!(client = %self.session.client_id(), topic = %will.topic, reason = %r.reason, "will not published");
        }
    }

    async fn finish(&mut self) {
        if self.session.persistent() {
            self.persist(Some(now_ms())).await;
        } else if (self.session.session_present() || !self.session.clean_start())
            && self.edge.broker.store.may_have(self.session.client_id())
        {
            let broker = self.edge.broker.clone();
            let id = self.session.client_id().to_string();
            let _ = tokio::task::spawn_blocking(move || broker.store.remove(&id)).await;
        }
    }

    async fn persist(&mut self, disconnected_at_ms: Option<u64>) {
        if !self.session.persistent() {
            return;
        }
        let s = self.session.snapshot(disconnected_at_ms);
        let broker = self.edge.broker.clone();
        let saved = tokio::task::spawn_blocking(move || broker.store.save(&s))
            .await
            .map_err(io::Error::other)
            .and_then(|r| r);
        if let Err(e) = saved {
            if store::taken_over(&e) {
                tracing::info!(client = %self.session.client_id(), "MQTT session moved to another node; closing it here");
                self.moved = true;
                return;
            }
            self.session.mark_dirty();
            tracing::error!(client = %self.session.client_id(), error = %e, "cannot save the MQTT session");
        }
    }
}

/// The message-cache slot of the MQTT PUBLISH body.
fn mqtt_format() -> Format {
    static MQTT_FORMAT: std::sync::OnceLock<Format> = std::sync::OnceLock::new();
    *MQTT_FORMAT.get_or_init(|| Format::register("mqtt"))
}

/// A hub delivery as the broker session takes it: the PUBLISH body is built once per message
/// and shared by every MQTT subscriber.
fn outgoing(d: &Delivery, class: Class) -> Outgoing {
    let m: &Message = &d.message;
    let body = m.encoded(mqtt_format(), |p| {
        publish_body(&channel_to_topic(p.channel.as_str()), &p.data)
    });
    Outgoing {
        channel: m.publication.channel.clone(),
        offset: m.publication.offset,
        class,
        body,
        snapshot: d.snapshot,
    }
}

/// The DISCONNECT reason code for a hub session that was closed under us.
fn close_code(reason: &CloseReason) -> ReasonCode {
    match reason {
        CloseReason::SlowConsumer { .. } => ReasonCode::QuotaExceeded,
        CloseReason::Shutdown => ReasonCode::ServerShuttingDown,
        CloseReason::Kicked(_) => ReasonCode::AdministrativeAction,
        // MQTT 5 has no "credential expired"; 0xA0 (Maximum connect time) is the closest.
        CloseReason::TokenExpired => ReasonCode::MaximumConnectTime,
    }
}
