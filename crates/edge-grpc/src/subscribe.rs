//! Subscribe: a connection's pushes as a server stream.
//!
//! The subscriptions are made before the call is answered, so a refused one fails the call
//! with nothing sent. Then one task per call drains the hub session and hands each push to
//! the call's stream: the shared encoding of its message, written as is. The stream holds
//! few items ([`STREAM_ITEMS`]); while the client does not take them, the task waits and the
//! hub keeps the backlog (conflated for state and book channels, a cursor for stream
//! channels), exactly as for the WebSocket. A client that takes nothing for the write timeout
//! is dropped; a server-side close sends a `Disconnect` with the resume offsets and ends the
//! call with the close's status.

use std::{net::IpAddr, pin::Pin, task::Poll, time::Duration};

use tickwire_gateway::{
    close_code,
    deadline::sleep_until,
    proto::{channel_of, disconnect, proto_push, subscribe, subscribed},
    Connection, ErrorCode, Event, Principal,
};
use tickwire_hub::CloseReason;
use tickwire_proto::{
    v1::{server_message::Kind, ServerMessage, SubscribeRequest},
    Encoded,
};
use tokio::sync::mpsc;
use tonic::Status;

use crate::{
    send_within,
    service::Service,
    status::{refused, status},
    Sent, GRPC,
};

/// Pushes waiting in a call's stream before the task stops taking more from the hub (as
/// the WebSocket's low-water mark: the backlog stays in the hub, conflated).
const STREAM_ITEMS: usize = 256;

type Item = Result<Encoded, Status>;

/// The Subscribe call's stream.
pub struct PushStream {
    rx: mpsc::Receiver<Item>,
}

impl tokio_stream::Stream for PushStream {
    type Item = Item;

    fn poll_next(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> Poll<Option<Self::Item>> {
        self.rx.poll_recv(cx)
    }
}

fn encoded(kind: Kind) -> Encoded {
    Encoded::of(&ServerMessage { kind: Some(kind) })
}

/// Opens the connection, makes every subscription (or fails the call), and starts the task.
pub(crate) fn start(
    svc: &Service,
    principal: Principal,
    ip: Option<IpAddr>,
    request: SubscribeRequest,
) -> Result<PushStream, Status> {
    if request.subscriptions.is_empty() {
        return Err(status(ErrorCode::BadRequest, "no subscriptions given"));
    }
    let mut conn = svc
        .gateway
        .connect_from(GRPC, principal, ip, None)
        .map_err(|r| {
            svc.gateway.metrics().edge(GRPC).rejected();
            refused(&r)
        })?;
    let mut first = Vec::with_capacity(request.subscriptions.len());
    for s in &request.subscriptions {
        let made = channel_of(&s.channel).and_then(|ch| {
            let info = subscribe(&mut conn, &ch, s)?;
            Ok(subscribed(ch.as_str(), &info))
        });
        match made {
            Ok(m) => first.push(encoded(Kind::Subscribed(m))),
            Err(r) => {
                // The call fails whole; dropping the connection ends what it subscribed.
                conn.refused();
                return Err(refused(&r));
            }
        }
    }
    let (tx, rx) = mpsc::channel(STREAM_ITEMS);
    tokio::spawn(pump(conn, first, tx));
    Ok(PushStream { rx })
}

/// Waits for room in the call's stream, at most the write timeout; false when the client is
/// gone or took nothing for that long (counted as a write timeout).
async fn send(conn: &Connection, tx: &mpsc::Sender<Item>, item: Item, timeout: Duration) -> bool {
    match send_within(tx, item, timeout).await {
        Sent::Yes => true,
        Sent::Gone => false,
        Sent::TimedOut => {
            conn.write_timed_out();
            false
        }
    }
}

/// Drains the connection into the call's stream until it closes or the client goes.
async fn pump(mut conn: Connection, first: Vec<Encoded>, tx: mpsc::Sender<Item>) {
    let timeout = conn.gateway().write_timeout();
    for m in first {
        if !send(&conn, &tx, Ok(m), timeout).await {
            return;
        }
    }
    let mut token_at = conn.token_deadline();
    loop {
        tokio::select! {
            biased;
            _ = conn.closed() => {}
            _ = conn.wait() => {}
            _ = tx.closed() => return,
            _ = sleep_until(token_at), if token_at.is_some() => {
                // gRPC has no way to refresh a call's credential: at expiry the call ends
                // with its resume points, and the client calls again with a new token.
                token_at = None;
                conn.expire();
            }
        }
        // Not cancel-safe: outside the select.
        match conn.drain().await {
            Event::Deliver(batch) => {
                let n = batch.len() as u64;
                let hub = conn.gateway().hub().clone();
                for d in &batch {
                    if !send(&conn, &tx, Ok(Encoded(proto_push(&hub, d))), timeout).await {
                        return;
                    }
                }
                conn.delivered(n);
            }
            Event::Close(reason) => {
                close(&conn, &reason, &tx, timeout).await;
                return;
            }
        }
    }
}

/// The `Disconnect` (with the resume offsets) and the status that ends the call.
async fn close(
    conn: &Connection,
    reason: &CloseReason,
    tx: &mpsc::Sender<Item>,
    timeout: Duration,
) {
    let code = close_code(reason);
    let message = reason.to_string();
    let d = disconnect(code, &message, conn.resume_points());
    let timeout = timeout.min(Duration::from_secs(2));
    // Already closing for `reason`: a client that takes none of this is not counted again.
    let sent = tokio::time::timeout(timeout, tx.send(Ok(encoded(Kind::Disconnect(d))))).await;
    if matches!(sent, Ok(Ok(()))) {
        let _ = tokio::time::timeout(timeout, tx.send(Err(status(code, message)))).await;
    }
}
