//! `GET /v1/ws`: the WebSocket protocol (docs/protocol.md), in JSON text frames or, when the
//! client asks for the `tickwire.v1.proto` subprotocol, in binary frames of the protobuf
//! messages gRPC uses (`ClientMessage` in, `ServerMessage` out). Both encodings run the same
//! loop and the same hub calls; only the frames differ, so their semantics cannot drift.
//!
//! One task per connection. What it reads, it answers at once (subscribe, unsubscribe,
//! ping, refusals) or hands to the hub (publishes), without waiting for the hub's
//! acknowledgement: publishes read together go to their namespace writers as one batch, and
//! the acknowledgements are kept in a window and answered in order as each batch becomes
//! durable, while the task goes on reading commands and writing deliveries. A reply always
//! precedes the snapshot it announces (deliveries are drained only after the replies to the
//! commands read before them are queued). Deliveries are drained and written in bounded
//! pieces, and commands are read between two pieces, so a long replay (`from: 0` on a big
//! channel) runs beside the connection's other work instead of in front of it. A client that
//! stops reading only ever blocks its own task.
//!
//! A connection quiet for a while ([`tickwire_gateway::park::PARK_AFTER`], longer for one that
//! is woken soon after each park) with nothing owed either way is parked: the serving loop and the WebSocket
//! layer are dropped, and the task waits with the raw socket, its [`Connection`] and one
//! timer until something needs it served again ([`run`]). Most connections of a large
//! deployment are idle most of the time; this is what they cost while they are
//! (bench/results/idle.md).

use std::{collections::VecDeque, future::Future, pin::Pin, time::Duration};

use axum::{
    extract::{Query, State},
    http::HeaderMap,
    response::{IntoResponse, Response},
};
use bytes::Bytes;
use futures_util::{FutureExt, SinkExt, StreamExt};
use prost::Message as _;
use serde::Deserialize;
use serde_json::json;
use tickwire_gateway::{
    proto::{channel_of, disconnect, request_of, subscribed, with_proto_push},
    AckFuture, Change, Connection, Credentials, Event, Principal, Refusal,
};
use tickwire_hub::{Ack, Channel, Checked, CloseReason, Delivery, PublishRequest, Recent};
use tickwire_model::SchemaFields;
use tickwire_proto::v1::{
    client_message::Op as ProtoOp, server_message::Kind, ClientMessage, PublishResult, Reply,
    ServerMessage,
};
use tickwire_wire::{
    encode_disconnect, encode_error, encode_ok, encode_publish_ok, encode_push, parse_command,
    scan_publish, ErrorCode, Op, ScannedItem, MAX_COMMAND_BYTES,
};
use tungstenite::{
    protocol::{frame::coding::CloseCode, CloseFrame},
    Message, Utf8Bytes,
};

use crate::{hardening, problem::Problem, publish::bearer, HttpState, WEBSOCKET};

// The connection's parts, by responsibility: the socket loop and deliveries (here), the
// commands a client sends and their replies, and the window of publishes waiting to be
// acknowledged in order.
mod commands;
mod outbox;
mod park;
mod upgrade;
mod window;

pub(crate) use commands::markers_json;
use commands::refusal_frame;
use outbox::{put_frame, Outbox};
use park::{Idle, Served, Wake};
use tickwire_gateway::park::Quiet;
pub(crate) use upgrade::Socket;
use upgrade::{Handshake, Lean, Upgrading};

/// Frames above this are refused by the WebSocket layer itself (close 1009); between the
/// protocol's command limit and this, the client gets a `too_large` error reply instead.
const MAX_WS_MESSAGE: usize = 4 * 1024 * 1024;
const PING_EVERY: Duration = Duration::from_secs(30);
/// Most frames taken from the socket in one turn before the task answers and writes: a
/// pipelining publisher's commands go to the hub as one batch, and a flood cannot keep the
/// task from writing. Small enough that the stages overlap: with 1,024 a publisher's whole
/// window went to the writer as one batch and came back as one burst of replies, each
/// stage idle while another worked; with 128 the writer appends one batch while the next
/// is parsed (one connection, window of 1,000: ~375 K -> ~425 K acked/s, medians of 6
/// alternating runs, bench/results/ws-publish.md).
const READ_BURST: usize = 128;
/// Most publications waiting for their acknowledgements before the task stops reading
/// commands (backpressure towards a client that publishes faster than the log takes it).
const MAX_IN_FLIGHT: usize = 16 * 1024;

/// The `Sec-WebSocket-Protocol` that selects the binary encoding; without it (or with any
/// other) the connection speaks JSON.
pub const PROTO_SUBPROTOCOL: &str = "tickwire.v1.proto";

#[derive(Deserialize)]
pub struct WsQuery {
    api_key: Option<String>,
    token: Option<String>,
}

pub async fn upgrade(
    State(st): State<HttpState>,
    Query(q): Query<WsQuery>,
    headers: HeaderMap,
    peer: Option<axum::Extension<tickwire_gateway::PeerAddr>>,
    ws: Handshake,
) -> Response {
    let key = q
        .token
        .as_deref()
        .or(q.api_key.as_deref())
        .or_else(|| bearer(&headers));
    let conn = st
        .gateway
        .authenticate(&Credentials::new(key))
        .and_then(|principal| {
            let ip = peer.map(|p| p.0 .0.ip());
            st.gateway.connect_from(WEBSOCKET, principal, ip, None)
        });
    let conn = match conn {
        Ok(c) => c,
        Err(r) => {
            st.gateway.metrics().edge(WEBSOCKET).rejected();
            return Problem::from(r).into_response();
        }
    };
    // Boxed while the upgrade completes: the task holding the upgrade future and then the
    // connection loop reserves room for both, and an inline `Connection` made every idle
    // WebSocket ~300 bytes larger (bench/results/idle.md).
    let conn = Box::new(conn);
    // The chosen subprotocol is echoed in the 101 answer, so the client knows which encoding
    // it got (a client that asked for it and finds no echo must not send binary frames).
    let binary = ws.offers(PROTO_SUBPROTOCOL);
    let chosen = binary.then_some(PROTO_SUBPROTOCOL);
    ws.accept(chosen, move |upgrading| run(upgrading, conn, binary))
}

fn text(b: Bytes) -> Message {
    // Frames are built from JSON text; a failed check would be a bug, answered with an error frame.
    Message::Text(
        Utf8Bytes::try_from(b).unwrap_or_else(|_| Utf8Bytes::from_static(r#"{"op":"error"}"#)),
    )
}

/// A binary frame holding one `ServerMessage`.
fn binary(kind: Kind) -> Message {
    Message::Binary(Bytes::from(
        ServerMessage { kind: Some(kind) }.encode_to_vec(),
    ))
}

/// A publish reply in the window: answered in command order.
enum PublishReply {
    /// Publishes read before a refusal in this turn, handed to the hub at the turn's end by
    /// [`Conn::submit`] (never left in the window between turns).
    Unsent(Vec<(u64, Channel, Checked)>),
    /// A batch handed to the hub: (command id, channel) per publication.
    Pending {
        ids: Vec<(u64, Channel)>,
        acks: AckFuture,
    },
    /// A publish refused before it reached the hub: its frame.
    Ready(Message),
    /// A command answered once work off this task is done (an edit checked against its
    /// target and stored, a read marker made durable, a search): the reply itself.
    Later(ReplyFuture),
    /// A subscribe reply waiting for its channel's presence list (read from the cluster in
    /// cluster mode): pushes wait behind it, since a reply precedes its channel's data.
    Subscribed(ReplyFuture),
}

/// A reply computed off the connection's task.
type ReplyFuture = Pin<Box<dyn Future<Output = Bytes> + Send>>;

/// What the front of the window produced.
enum Front {
    Acks(Vec<Result<Ack, Refusal>>),
    Reply(Bytes),
}

/// One connection's state besides the socket.
struct Conn {
    /// Boxed: it is large, and every idle connection's task carries this struct.
    conn: Box<Connection>,
    /// Publish replies, oldest first.
    window: VecDeque<PublishReply>,
    /// Publications in `window` still waiting for the hub.
    in_flight: usize,
    /// `Subscribed` replies in `window`: while any waits, pushes wait behind it (counted, so
    /// the loop does not scan a window of thousands of publishes every turn).
    held_subscribes: usize,
    /// Publishes read in this turn, not yet handed to the hub.
    batch: Vec<(u64, Channel, Checked)>,
    out: Outbox,
    /// When the connection's token expires (it is then told, and given a grace period).
    token_at: Option<tokio::time::Instant>,
    /// The end of the grace period after expiry: without a `refresh` by then, it is closed.
    grace_at: Option<tokio::time::Instant>,
    /// The last read failed on a frame over the size limit: the close says 1009.
    too_large: bool,
    /// The connection speaks the binary encoding ([`PROTO_SUBPROTOCOL`]).
    binary: bool,
}

impl Conn {
    /// Whether the connection holds nothing for the client and nothing of it: no command
    /// waiting for an answer, nothing to write or flush, and the WebSocket layer holds no
    /// part of a frame (so it can be dropped and made again without losing a byte).
    fn parkable(&self, socket: &Socket) -> bool {
        self.window.is_empty()
            && self.batch.is_empty()
            && !self.out.has_work(socket)
            && !self.too_large
            && socket.get_ref().at_boundary()
    }

    /// What the connection keeps while parked.
    fn into_idle(self, ping_at: tokio::time::Instant, park_after_ms: u16) -> Idle {
        Idle {
            conn: self.conn,
            binary: self.binary,
            token_at: self.token_at,
            grace_at: self.grace_at,
            ping_at,
            park_after_ms,
        }
    }
}

/// Pushes waiting to be written before the task takes more from the hub.
const PUSH_LOW_WATER: usize = 256;

/// Serves one WebSocket connection: [`serve`] while there is traffic, parked while there is
/// none.
///
/// The connection's task is allocated at the size of this future's largest state for its
/// whole life (bench/results/idle.md). Serving is boxed, so that allocation (the serving
/// loop, the WebSocket layer and its buffers) exists only while the connection is served:
/// from the client's first bytes until it has been quiet for its period ([`Quiet`])
/// with nothing owed either way. [`serve`] then returns the raw socket, and the task holds
/// only that socket, its [`Connection`] and one timer, until the client sends something, the
/// hub has a delivery or closes the session, or a deadline (ping, token expiry) comes. It is
/// a plain function returning an `async move` block, so what the task keeps is built once,
/// before the block captures it (an `async fn` moves each parameter into a local of its body,
/// and the task held both).
#[allow(clippy::manual_async_fn)] // on purpose: see above
fn run(
    upgrading: Upgrading,
    conn: Box<Connection>,
    binary: bool,
) -> impl std::future::Future<Output = ()> {
    // Built before the block, so the block captures it once, and no copy of `conn` stays
    // behind in the task.
    let token_at = conn.token_deadline();
    let mut idle = Idle {
        conn,
        binary,
        token_at,
        grace_at: None,
        ping_at: tokio::time::Instant::now() + PING_EVERY,
        park_after_ms: 0,
    };
    async move {
        let Some(mut io) = upgrading.await else {
            return;
        };
        // A new connection starts parked: it has no subscription yet, so nothing can need it
        // before the client's first bytes arrive (or a deadline comes).
        loop {
            idle.conn.set_parked(true);
            // Waits for whatever needs the connection served again. Nothing read here is
            // lost: bytes the client sends wait in `io` for the WebSocket layer made next.
            // The hub closing the session wakes `notified` too, and the drain that follows
            // returns the close, so no separate wait for it is kept. Written out here rather
            // than in a function of its own, as every parked task holds this state: its
            // arguments would be two more words in each.
            let due = idle
                .grace_at
                .or(idle.token_at)
                .map_or(idle.ping_at, |t| t.min(idle.ping_at));
            let parked_at = tokio::time::Instant::now();
            let wake = tokio::select! {
                biased;
                r = std::future::poll_fn(|cx| io.poll_readable(cx)) => match r {
                    Ok(true) => Wake::Resume { deliver: false },
                    Ok(false) | Err(_) => Wake::Gone,
                },
                () = idle.conn.notified() => Wake::Resume { deliver: true },
                () = tokio::time::sleep_until(due) => Wake::Resume { deliver: false },
            };
            idle.conn.set_parked(false);
            idle.adapt(parked_at.elapsed());
            let deliver = match wake {
                Wake::Resume { deliver } => deliver,
                Wake::Gone => return,
            };
            match Box::pin(serve(io, idle, deliver)).await {
                Served::Ended => return,
                Served::Parked(socket, kept) => {
                    io = socket;
                    idle = kept;
                }
            }
        }
    }
}

/// Serves the connection until it ends or parks (see [`run`]). The awaits on rare paths
/// (answering a burst of publishes, closing) are boxed: this future is allocated at the size
/// of its largest state while the connection is served.
async fn serve(io: Lean, idle: Idle, deliver_first: bool) -> Served {
    let mut socket = upgrade::layer(io, MAX_WS_MESSAGE).await;
    let Idle {
        conn,
        binary,
        token_at,
        grace_at,
        mut ping_at,
        park_after_ms,
    } = idle;
    let write_timeout = conn.gateway().write_timeout();
    // One socket, not split halves: a split moves the socket into a shared allocation of its
    // own, and with thousands of idle connections that was ~600 bytes each
    // (bench/results/idle.md). Reading and writing are driven from one branch instead.
    let mut c = Conn {
        conn,
        window: VecDeque::new(),
        in_flight: 0,
        held_subscribes: 0,
        batch: Vec::new(),
        out: Outbox::default(),
        token_at,
        grace_at,
        too_large: false,
        binary,
    };
    // One timer for every deadline of the loop (the next ping, the token's expiry or its
    // grace period, the write timeout, parking), armed for the earliest
    // (`deadline::arm`). The write timeout's own timer used to be registered anew in
    // every turn with a write waiting.
    let timer = tokio::time::sleep_until(ping_at);
    tokio::pin!(timer);
    // Parking: once the timer reaches the end of the quiet period with nothing held, the
    // connection parks unless a turn ran since.
    let mut quiet = Quiet::start(park_after_ms);
    let mut deliver = deliver_first;
    loop {
        // Replies already due go out in this turn. The select below is biased to the
        // socket, so while a pipelining publisher keeps frames coming it would reach the
        // window only once the client's own window ran dry: stop-and-wait, with the
        // acknowledgements of finished batches held back for a whole round.
        loop {
            c.flush_window();
            match poll_front(&mut c.window).now_or_never() {
                Some(front) => c.on_front(front),
                None => break,
            }
        }
        let reading = c.in_flight < MAX_IN_FLIGHT;
        let acks_pending = c.front_waits();
        let writing = c.out.has_work(&socket);
        let take_more = c.out.pushes.len() < PUSH_LOW_WATER && c.held_subscribes == 0;
        // A socket that takes nothing for the write timeout belongs to a client that is gone.
        let stalled_at = c
            .out
            .progress
            .filter(|_| writing)
            .map(|p| p + write_timeout);
        let expiry = c.grace_at.or(c.token_at);
        let parking = c.parkable(&socket).then_some(quiet.at());
        let due = [stalled_at, expiry, parking]
            .into_iter()
            .flatten()
            .fold(ping_at, Ord::min);
        tickwire_gateway::deadline::arm(timer.as_mut(), due);
        // A wake-up taken while parked: drain before waiting again.
        if !deliver {
            tokio::select! {
                biased;
                _ = c.conn.closed() => {
                    let reason = c.conn.close_reason().unwrap_or(CloseReason::Shutdown);
                    c.flush_window();
                    let replies: Vec<Message> = c.out.replies.drain(..).collect();
                    Box::pin(close_after(&mut socket, replies, &c.conn, &reason, write_timeout, c.binary)).await;
                    break;
                }
                ev = std::future::poll_fn(|cx| {
                    let encode = |d: &Delivery, out: &mut Vec<u8>| put_push(c.binary, &c.conn, d, out);
                    let ev = poll_socket(&mut socket, &mut c.out, reading, cx, encode);
                    if ev.is_pending() && c.batch.is_empty() && c.batch.capacity() > 0 {
                        // Nothing to read: a quiet connection holds no batch allocation.
                        c.batch = Vec::new();
                    }
                    ev
                }), if reading || writing => {
                    quiet.busy();
                    match ev {
                        SocketEvent::Written => {}
                        SocketEvent::WriteFailed => break,
                        SocketEvent::Frame(incoming) => {
                            let mut ended = !c.on_frame(incoming);
                            // Whatever else is already here, up to a burst.
                            for _ in 1..READ_BURST {
                                if ended || c.in_flight + c.batch.len() >= MAX_IN_FLIGHT {
                                    break;
                                }
                                match socket.next().now_or_never() {
                                    Some(m) => ended = !c.on_frame(m),
                                    None => break,
                                }
                            }
                            Box::pin(c.submit()).await;
                            if ended {
                                if c.too_large {
                                    Box::pin(hardening::close_too_large(&mut socket, write_timeout)).await;
                                }
                                break;
                            }
                        }
                    }
                }
                front = poll_front(&mut c.window), if acks_pending => {
                    quiet.busy();
                    c.on_front(front);
                }
                () = &mut timer => {
                    let now = tokio::time::Instant::now();
                    if stalled_at.is_some_and(|t| t <= now) {
                        // Nothing can be sent to say why: the socket takes nothing.
                        c.conn.write_timed_out();
                        break;
                    }
                    if expiry.is_some_and(|t| t <= now) {
                        c.on_expiry();
                    }
                    if ping_at <= now {
                        c.out.replies.push_back(Message::Ping(Bytes::new()));
                        ping_at = now + PING_EVERY;
                    }
                    if quiet.check(now, c.parkable(&socket)) {
                        // The layer may still owe the client a pong: written first,
                        // or no parking yet.
                        match std::future::poll_fn(|cx| {
                            std::task::Poll::Ready(socket.poll_flush_unpin(cx))
                        })
                        .await
                        {
                            std::task::Poll::Ready(Ok(())) => {
                                let mut io = socket.into_inner();
                                io.release_queue();
                                return Served::Parked(io, c.into_idle(ping_at, quiet.ms()));
                            }
                            std::task::Poll::Ready(Err(_)) => break,
                            std::task::Poll::Pending => c.out.unflushed = true,
                        }
                    }
                }
                _ = c.conn.wait(), if take_more => {
                    quiet.busy();
                    deliver = true;
                }
            }
        }
        c.flush_window();
        if deliver {
            deliver = false;
            // The replies queued above go first: a subscribe's reply precedes its snapshot.
            match c.conn.drain().await {
                Event::Deliver(batch) => {
                    c.conn.delivered(batch.len() as u64);
                    c.out.pushes.extend(batch);
                }
                Event::Close(reason) => {
                    let replies: Vec<Message> = c.out.replies.drain(..).collect();
                    Box::pin(close_after(
                        &mut socket,
                        replies,
                        &c.conn,
                        &reason,
                        write_timeout,
                        c.binary,
                    ))
                    .await;
                    break;
                }
            }
        }
        if c.out.has_work(&socket) && c.out.progress.is_none() {
            c.out.progress = Some(tokio::time::Instant::now());
        }
    }
    Served::Ended
}

/// The acknowledgements of the oldest pending batch, or the reply of the oldest command
/// answered later; pending while the front waits for nothing (see [`Conn::front_waits`]).
async fn poll_front(window: &mut VecDeque<PublishReply>) -> Front {
    std::future::poll_fn(|cx| match window.front_mut() {
        Some(PublishReply::Pending { acks, .. }) => acks.as_mut().poll(cx).map(Front::Acks),
        Some(PublishReply::Later(reply) | PublishReply::Subscribed(reply)) => {
            reply.as_mut().poll(cx).map(Front::Reply)
        }
        _ => std::task::Poll::Pending,
    })
    .await
}

/// Appends a delivery's frame: the JSON text or the protobuf bytes, each encoded once per
/// message and copied from where it lies for every subscriber that takes that encoding.
fn put_push(binary: bool, conn: &Connection, d: &Delivery, out: &mut Vec<u8>) {
    if binary {
        with_proto_push(conn.gateway().hub(), d, |b| put_frame(out, 2, b));
    } else {
        with_json_push(d, |t| put_frame(out, 1, t.as_bytes()));
    }
}

/// The JSON push text of a delivery, shared by WebSocket frames and SSE events and lent to
/// `use_`, which copies it where it goes (no reference count per subscriber). Built once per
/// message. A snapshot carries its own flag, so it is encoded for its one subscriber.
pub(crate) fn with_json_push<R>(d: &Delivery, use_: impl FnOnce(&Utf8Bytes) -> R) -> R {
    if d.snapshot {
        use_(&Utf8Bytes::from(encode_push(&d.message.publication, true)))
    } else {
        d.message.with_encoded(
            json_format(),
            |p| Utf8Bytes::from(encode_push(p, false)),
            use_,
        )
    }
}

/// The message-cache slot of the JSON push text (WebSocket and SSE share it).
fn json_format() -> tickwire_hub::Format {
    static JSON: std::sync::OnceLock<tickwire_hub::Format> = std::sync::OnceLock::new();
    *JSON.get_or_init(|| tickwire_hub::Format::register("json-push"))
}

/// The protocol error code that tells a client why the server closed its session.
pub(crate) fn close_error_code(reason: &CloseReason) -> ErrorCode {
    match reason {
        CloseReason::SlowConsumer { .. } => ErrorCode::SlowConsumer,
        CloseReason::Shutdown => ErrorCode::Unavailable,
        CloseReason::Kicked(_) => ErrorCode::Forbidden,
        CloseReason::TokenExpired => ErrorCode::TokenExpired,
    }
}

type Sink = Socket;

/// What the socket branch of a connection's loop produced.
enum SocketEvent {
    /// A frame (or the end of the stream) arrived.
    Frame(Option<Result<Message, tungstenite::Error>>),
    /// Everything queued was written and flushed.
    Written,
    WriteFailed,
}

/// Drives the socket both ways from one place: writes what the outbox has (as far as the
/// socket takes it), then looks for a frame to read.
fn poll_socket(
    socket: &mut Socket,
    out: &mut Outbox,
    reading: bool,
    cx: &mut std::task::Context<'_>,
    encode: impl FnMut(&Delivery, &mut Vec<u8>),
) -> std::task::Poll<SocketEvent> {
    use std::task::Poll;
    let mut written = false;
    if out.has_work(socket) {
        match out.poll_write(socket, cx, encode) {
            Poll::Ready(Ok(())) => written = true,
            Poll::Ready(Err(_)) => return Poll::Ready(SocketEvent::WriteFailed),
            Poll::Pending => {}
        }
    }
    if reading {
        if let Poll::Ready(m) = socket.poll_next_unpin(cx) {
            return Poll::Ready(SocketEvent::Frame(m));
        }
    }
    if written {
        Poll::Ready(SocketEvent::Written)
    } else {
        Poll::Pending
    }
}

/// Writes frames into the socket buffer and flushes once: many pushes, one write. A client that
/// does not take them within the write timeout is treated as gone.
async fn send(
    sink: &mut Sink,
    frames: impl Iterator<Item = Message>,
    timeout: Duration,
) -> Result<(), ()> {
    let work = async {
        for f in frames {
            sink.feed(f).await?;
        }
        sink.flush().await
    };
    let done = tickwire_gateway::deadline::timeout_if_pending(timeout, std::pin::pin!(work)).await;
    match done {
        Ok(Ok(())) => Ok(()),
        _ => Err(()),
    }
}

/// The last replies, then the close frame.
async fn close_after(
    sink: &mut Sink,
    replies: Vec<Message>,
    conn: &Connection,
    reason: &CloseReason,
    timeout: Duration,
    binary: bool,
) {
    let _ = send(sink, replies.into_iter(), timeout).await;
    close_with(sink, conn, reason, timeout, binary).await;
}

async fn close_with(
    sink: &mut Sink,
    conn: &Connection,
    reason: &CloseReason,
    timeout: Duration,
    binary: bool,
) {
    let code = close_error_code(reason);
    let close_code = match reason {
        CloseReason::SlowConsumer { .. } => 4001,
        CloseReason::Shutdown => 1001,
        CloseReason::Kicked(_) => 4002,
        CloseReason::TokenExpired => 4003,
    };
    let msg = reason.to_string();
    let frame = if binary {
        self::binary(Kind::Disconnect(disconnect(
            code,
            &msg,
            conn.resume_points(),
        )))
    } else {
        text(encode_disconnect(code, &msg, &conn.resume_points()))
    };
    let close = Message::Close(Some(CloseFrame {
        code: CloseCode::from(close_code),
        reason: Utf8Bytes::from(code.as_str()),
    }));
    let _ = send(
        sink,
        [frame, close].into_iter(),
        timeout.min(Duration::from_secs(2)),
    )
    .await;
}
