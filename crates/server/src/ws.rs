//! `GET /v1/ws`: the JSON WebSocket protocol (docs/protocol.md). One task per connection
//! serves commands and deliveries in turn, so a reply always precedes the snapshot it
//! announces, and a client that stops reading only ever blocks its own task.

use std::{sync::atomic::Ordering, time::Duration};

use axum::{
    extract::{
        ws::{CloseFrame, Message, Utf8Bytes, WebSocket, WebSocketUpgrade},
        Query, State,
    },
    http::{HeaderMap, StatusCode},
    response::{IntoResponse, Response},
};
use bytes::Bytes;
use futures_util::SinkExt;
use serde::Deserialize;
use serde_json::json;
use tickwire_hub::{CloseReason, Delivery, Format, PublishRequest, Session};
use tickwire_wire::{
    encode_disconnect, encode_error, encode_ok, encode_push, parse_command, ErrorCode, Op,
};
use tokio::sync::OwnedSemaphorePermit;

use crate::{
    problem::{classify, Problem},
    publish::bearer,
    AppState,
};

/// Frames above this are refused by the WebSocket layer itself (close 1009); between the
/// protocol's command limit and this, the client gets a `too_large` error reply instead.
const MAX_WS_MESSAGE: usize = 4 * 1024 * 1024;
const PING_EVERY: Duration = Duration::from_secs(30);
/// Initial read buffer per connection. The WebSocket layer's default (128 KiB) made an idle
/// connection cost ~135 KB of server RSS (bench/results/idle.md); clients mostly send short
/// commands, and the buffer still grows for a large frame.
const READ_BUFFER: usize = 4 * 1024;

#[derive(Deserialize)]
pub struct WsQuery {
    api_key: Option<String>,
}

pub async fn upgrade(
    State(st): State<AppState>,
    Query(q): Query<WsQuery>,
    headers: HeaderMap,
    ws: WebSocketUpgrade,
) -> Response {
    let key = q.api_key.as_deref().or_else(|| bearer(&headers));
    if key.is_some() && !st.is_publisher(key) {
        return Problem::new(
            StatusCode::UNAUTHORIZED,
            ErrorCode::Unauthorized,
            "the API key is not valid",
        )
        .into_response();
    }
    let publisher = key.is_some() && st.is_publisher(key) || st.config.api_keys.is_empty();
    let Ok(permit) = st.connections.clone().try_acquire_owned() else {
        return Problem::new(
            StatusCode::SERVICE_UNAVAILABLE,
            ErrorCode::Unavailable,
            "connection limit reached",
        )
        .into_response();
    };
    ws.max_message_size(MAX_WS_MESSAGE)
        .max_frame_size(MAX_WS_MESSAGE)
        .read_buffer_size(READ_BUFFER)
        .on_upgrade(move |socket| run(st, socket, publisher, permit))
}

fn text(b: Bytes) -> Message {
    // Frames are built from JSON text; a failed check would be a bug, answered with an error frame.
    Message::Text(
        Utf8Bytes::try_from(b).unwrap_or_else(|_| Utf8Bytes::from_static(r#"{"op":"error"}"#)),
    )
}

async fn run(st: AppState, mut socket: WebSocket, publisher: bool, _permit: OwnedSemaphorePermit) {
    st.metrics.ws_connections.fetch_add(1, Ordering::Relaxed);
    let mut session = st.hub.session();
    let _tracked = st.track(session.closer());
    let write_timeout = st.config.write_timeout();
    let mut ping = tokio::time::interval_at(tokio::time::Instant::now() + PING_EVERY, PING_EVERY);
    loop {
        tokio::select! {
            biased;
            _ = session.closed() => {
                let reason = session.close_reason().unwrap_or(CloseReason::Shutdown);
                close_with(&st, &mut socket, &session, &reason, write_timeout).await;
                break;
            }
            incoming = socket.recv() => {
                let reply = match incoming {
                    None | Some(Err(_)) | Some(Ok(Message::Close(_))) => break,
                    Some(Ok(Message::Text(t))) => command(&st, &mut session, publisher, t.as_bytes()).await,
                    Some(Ok(Message::Binary(_))) => {
                        encode_error(None, ErrorCode::BadRequest, "binary frames are not part of the JSON protocol; send text frames")
                    }
                    // Pings are answered by the WebSocket layer.
                    Some(Ok(_)) => continue,
                };
                if send_all(&mut socket, std::iter::once(text(reply)), write_timeout).await.is_err() {
                    break;
                }
            }
            _ = session.wait() => {
                match session.drain().await {
                    Ok(batch) if batch.is_empty() => {}
                    Ok(batch) => {
                        let n = batch.len() as u64;
                        if send_all(&mut socket, batch.iter().map(push), write_timeout).await.is_err() {
                            break;
                        }
                        st.metrics.delivered.fetch_add(n, Ordering::Relaxed);
                    }
                    Err(reason) => {
                        close_with(&st, &mut socket, &session, &reason, write_timeout).await;
                        break;
                    }
                }
            }
            _ = ping.tick() => {
                if send_all(&mut socket, std::iter::once(Message::Ping(Bytes::new())), write_timeout).await.is_err() {
                    break;
                }
            }
        }
    }
    st.metrics.ws_connections.fetch_sub(1, Ordering::Relaxed);
}

fn push(d: &Delivery) -> Message {
    Message::Text(json_push(d))
}

/// The JSON push text of a delivery, shared by WebSocket frames and SSE events. Built once per
/// message; every subscriber on either edge gets a reference-counted clone. A snapshot carries
/// its own flag, so it is encoded for its one subscriber.
pub(crate) fn json_push(d: &Delivery) -> Utf8Bytes {
    if d.snapshot {
        Utf8Bytes::from(encode_push(&d.message.publication, true))
    } else {
        d.message
            .encoded(Format::Json, |p| Utf8Bytes::from(encode_push(p, false)))
    }
}

/// The protocol error code that tells a client why the server closed its session.
pub(crate) fn close_error_code(reason: &CloseReason) -> ErrorCode {
    match reason {
        CloseReason::SlowConsumer { .. } => ErrorCode::SlowConsumer,
        CloseReason::Shutdown => ErrorCode::Unavailable,
        CloseReason::Kicked(_) => ErrorCode::Forbidden,
    }
}

/// Writes frames into the socket buffer and flushes once: many pushes, one write. A client that
/// does not take them within the write timeout is treated as gone.
async fn send_all(
    socket: &mut WebSocket,
    frames: impl Iterator<Item = Message>,
    timeout: Duration,
) -> Result<(), ()> {
    let work = async {
        for f in frames {
            socket.feed(f).await?;
        }
        socket.flush().await
    };
    let done = crate::deadline::timeout_if_pending(timeout, std::pin::pin!(work)).await;
    match done {
        Ok(Ok(())) => Ok(()),
        _ => Err(()),
    }
}

async fn close_with(
    st: &AppState,
    socket: &mut WebSocket,
    session: &Session,
    reason: &CloseReason,
    timeout: Duration,
) {
    let code = close_error_code(reason);
    st.metrics.note_close(reason);
    let close_code = match reason {
        CloseReason::SlowConsumer { .. } => 4001,
        CloseReason::Shutdown => 1001,
        CloseReason::Kicked(_) => 4002,
    };
    let msg = reason.to_string();
    let frame = encode_disconnect(code, &msg, &session.resume_points());
    let close = Message::Close(Some(CloseFrame {
        code: close_code,
        reason: Utf8Bytes::from(code.as_str()),
    }));
    let _ = send_all(
        socket,
        [text(frame), close].into_iter(),
        timeout.min(Duration::from_secs(2)),
    )
    .await;
}

async fn command(st: &AppState, session: &mut Session, publisher: bool, frame: &[u8]) -> Bytes {
    let cmd = match parse_command(frame) {
        Ok(c) => c,
        Err(e) => {
            st.metrics.rejected.fetch_add(1, Ordering::Relaxed);
            return encode_error(e.id, e.code, &e.message);
        }
    };
    let id = cmd.id;
    let refuse = |e: tickwire_hub::HubError| {
        st.metrics.rejected.fetch_add(1, Ordering::Relaxed);
        let (_, code) = classify(&e);
        encode_error(Some(id), code, &e.to_string())
    };
    match cmd.op {
        Op::Ping => encode_ok(id, json!({"pong": true})),
        Op::Subscribe { channel, from } => match session.subscribe(&channel, from) {
            Ok(info) => {
                let mut extra = json!({"channel": channel.as_str(), "class": info.class});
                if let Some(o) = info.offset {
                    extra["offset"] = o.into();
                }
                if info.snapshot {
                    extra["snapshot"] = true.into();
                }
                encode_ok(id, extra)
            }
            Err(e) => refuse(e),
        },
        Op::Unsubscribe { channel } => match session.unsubscribe(&channel) {
            Ok(()) => encode_ok(id, json!({"channel": channel.as_str()})),
            Err(e) => refuse(e),
        },
        Op::Publish {
            channel,
            msg_id,
            data,
        } => {
            let allowed = publisher
                || st
                    .hub
                    .namespace_spec(channel.namespace())
                    .is_some_and(|n| n.client_publish);
            if !allowed {
                st.metrics.rejected.fetch_add(1, Ordering::Relaxed);
                return encode_error(
                    Some(id),
                    ErrorCode::Forbidden,
                    &format!(
                        "clients may not publish to `{}`; connect with an API key",
                        channel.namespace()
                    ),
                );
            }
            let req = PublishRequest {
                channel: channel.clone(),
                msg_id,
                data: Bytes::from(data.into_string()),
            };
            match st.hub.publish(vec![req]).await.pop() {
                Some(Ok(ack)) => encode_ok(
                    id,
                    json!({"channel": channel.as_str(), "offset": ack.offset, "duplicate": ack.duplicate}),
                ),
                Some(Err(e)) => refuse(e),
                None => encode_error(Some(id), ErrorCode::Internal, "no result from the hub"),
            }
        }
    }
}
