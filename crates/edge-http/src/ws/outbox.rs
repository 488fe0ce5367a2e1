//! What a WebSocket connection has to write, and how it writes it.
//!
//! Replies (and pings, and the close) go through the WebSocket layer. Pushes do not: the
//! connection encodes their frames itself into the socket's queue ([`super::upgrade::LeanIo`]),
//! copying each message's shared encoding where it lies. Handing the layer a frame took a
//! reference count on that encoding per subscriber, and a count every subscriber of a message
//! shares is one cache line written by both cores for every delivery: its clone and drop were
//! a tenth of the server's samples at 1.25 M deliveries/s (bench/results/fanout.md, "Push
//! frames written by the edge").

use std::{
    collections::VecDeque,
    task::{ready, Context, Poll},
};

use futures_util::SinkExt;
use tickwire_hub::Delivery;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_tungstenite::WebSocketStream;
use tungstenite::Message;

use super::upgrade::LeanIo;

/// What waits to be written: replies go before pushes, so a reply is never queued behind a
/// replay; pushes are taken from the hub only while few are waiting, so a slow socket leaves
/// the backlog in the hub (conflated, or as a cursor) instead of in this queue.
#[derive(Default)]
pub(super) struct Outbox {
    pub replies: VecDeque<Message>,
    /// Deliveries not encoded yet: encoded as the socket takes them, so a waiting replay
    /// holds references to the hub's messages, not copies.
    pub pushes: VecDeque<Delivery>,
    /// Frames handed to the layer since its last flush.
    pub unflushed: bool,
    /// When the socket last took a frame (or had nothing to take).
    pub progress: Option<tokio::time::Instant>,
}

/// Push frames encoded into the socket's queue per turn, in bytes (then written, then more).
const FILL: usize = 16 * 1024;

impl Outbox {
    pub fn has_work<S: AsyncRead + AsyncWrite + Unpin>(
        &self,
        socket: &WebSocketStream<LeanIo<S>>,
    ) -> bool {
        !self.replies.is_empty()
            || !self.pushes.is_empty()
            || self.unflushed
            || socket.get_ref().has_queued()
    }

    /// Writes what the socket takes without waiting; ready once everything is written and
    /// flushed, pending while the socket is full. `encode` appends a delivery's frame.
    pub fn poll_write<S: AsyncRead + AsyncWrite + Unpin>(
        &mut self,
        sink: &mut WebSocketStream<LeanIo<S>>,
        cx: &mut Context<'_>,
        mut encode: impl FnMut(&Delivery, &mut Vec<u8>),
    ) -> Poll<Result<(), tungstenite::Error>> {
        loop {
            if !self.replies.is_empty() {
                ready!(sink.poll_ready_unpin(cx))?;
                if let Some(frame) = self.replies.pop_front() {
                    sink.start_send_unpin(frame)?;
                    self.unflushed = true;
                    self.progress = Some(tokio::time::Instant::now());
                }
                continue;
            }
            if !self.pushes.is_empty() && !sink.get_ref().has_queued() {
                // Beside the layer, so only once it holds nothing: what it has (replies
                // before these pushes, a pong it owes) goes out first, whole.
                ready!(sink.poll_flush_unpin(cx))?;
                self.unflushed = false;
                let queue = sink.get_mut().queue();
                while queue.len() < FILL {
                    let Some(d) = self.pushes.pop_front() else {
                        break;
                    };
                    encode(&d, queue);
                }
            }
            let mut wrote = false;
            let written = sink.get_mut().poll_queued(cx, &mut wrote);
            if wrote {
                self.progress = Some(tokio::time::Instant::now());
            }
            ready!(written).map_err(tungstenite::Error::Io)?;
            if !self.pushes.is_empty() {
                continue;
            }
            if self.unflushed {
                ready!(sink.poll_flush_unpin(cx))?;
                self.unflushed = false;
            }
            self.progress = None;
            return Poll::Ready(Ok(()));
        }
    }
}

/// Appends one final, unmasked frame (RFC 6455 §5.2; a server never masks): `opcode` 1 for
/// text, 2 for binary.
pub(super) fn put_frame(out: &mut Vec<u8>, opcode: u8, payload: &[u8]) {
    out.push(0x80 | opcode);
    match (u8::try_from(payload.len()), u16::try_from(payload.len())) {
        (Ok(n), _) if n < 126 => out.push(n),
        (_, Ok(n)) => {
            out.push(126);
            out.extend_from_slice(&n.to_be_bytes());
        }
        _ => {
            out.push(127);
            out.extend_from_slice(&(payload.len() as u64).to_be_bytes());
        }
    }
    out.extend_from_slice(payload);
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use futures_util::StreamExt;
    use tickwire_hub::{Channel, Message as HubMessage};
    use tickwire_model::Publication;

    use super::*;

    fn delivery(n: usize, size: usize) -> Delivery {
        let data = format!("{{\"n\":{n},\"pad\":\"{}\"}}", "x".repeat(size));
        let publication = Publication {
            channel: Channel::parse("quotes.T").expect("a channel"),
            offset: n as u64,
            timestamp: 0,
            msg_id: None,
            data: bytes::Bytes::from(data),
        };
        Delivery {
            message: Arc::new(HubMessage::new(publication)),
            snapshot: false,
        }
    }

    /// Through a socket pair that takes a few KiB at a time, with replies queued while push
    /// frames are half written and the client's pings answered by the layer meanwhile: every
    /// frame arrives whole, the pushes in order, and a reply queued before a push precedes it.
    #[tokio::test]
    async fn replies_pongs_and_pushes_never_interleave_mid_frame() {
        let (server, client) = tokio::io::duplex(4096);
        let mut sink = WebSocketStream::from_raw_socket(
            LeanIo::new(server),
            tungstenite::protocol::Role::Server,
            None,
        )
        .await;
        let mut client =
            WebSocketStream::from_raw_socket(client, tungstenite::protocol::Role::Client, None)
                .await;
        let mut out = Outbox::default();
        out.replies.push_back(Message::text("first"));
        for n in 0..200 {
            out.pushes.push_back(delivery(n, 300 + n * 7));
        }
        let encode = |d: &Delivery, q: &mut Vec<u8>| {
            put_frame(q, 1, &d.message.publication.data);
        };
        let server = tokio::spawn(async move {
            let mut turns = 0;
            while out.has_work(&sink) {
                // A reply queued every few turns, wherever the pushes have got to.
                if turns % 7 == 3 {
                    out.replies
                        .push_back(Message::text(format!("reply {turns}")));
                }
                turns += 1;
                std::future::poll_fn(|cx| {
                    // Reading lets the layer answer the client's pings by itself.
                    let _ = sink.poll_next_unpin(cx);
                    match out.poll_write(&mut sink, cx, encode) {
                        Poll::Pending => Poll::Ready(Ok(())),
                        other => other,
                    }
                })
                .await
                .expect("write");
                tokio::task::yield_now().await;
            }
            sink
        });
        let mut next_push = 0;
        let mut replies = 0;
        while next_push < 200 {
            if next_push % 50 == 10 {
                client
                    .send(Message::Ping(bytes::Bytes::from_static(b"p")))
                    .await
                    .expect("ping");
            }
            match client
                .next()
                .await
                .expect("a frame")
                .expect("a whole frame")
            {
                Message::Text(t) if t.as_str() == "first" => {
                    assert_eq!(next_push, 0, "the reply queued first came after a push");
                    replies += 1;
                }
                Message::Text(t) if t.as_str().starts_with("reply") => replies += 1,
                Message::Text(t) => {
                    let v: serde_json::Value = serde_json::from_str(t.as_str()).expect("a push");
                    assert_eq!(v["n"], next_push, "pushes in order");
                    next_push += 1;
                }
                Message::Pong(_) => {}
                other => panic!("unexpected {other:?}"),
            }
        }
        assert!(replies >= 2, "replies made their way between the pushes");
        let _ = server.await.expect("the writer");
    }

    /// Frames of every length class, written by `put_frame`, read back by tungstenite's own
    /// client over a socket pair: the client sees exactly the messages, in order.
    #[tokio::test]
    async fn frames_put_by_the_edge_read_back_as_the_layer_would_have_written_them() {
        use futures_util::StreamExt;
        use tokio::io::AsyncWriteExt;
        let (mut server, client) = tokio::io::duplex(1 << 20);
        let sizes = [0usize, 1, 125, 126, 127, 65_535, 65_536, 70_000];
        let mut out = Vec::new();
        for (i, &n) in sizes.iter().enumerate() {
            let text = "x".repeat(n);
            if i % 2 == 0 {
                put_frame(&mut out, 1, text.as_bytes());
            } else {
                put_frame(&mut out, 2, text.as_bytes());
            }
        }
        server.write_all(&out).await.expect("duplex write");
        drop(server);
        let mut ws = tokio_tungstenite::WebSocketStream::from_raw_socket(
            client,
            tungstenite::protocol::Role::Client,
            None,
        )
        .await;
        for (i, &n) in sizes.iter().enumerate() {
            let got = ws.next().await.expect("a frame").expect("a valid frame");
            match got {
                Message::Text(t) if i % 2 == 0 => assert_eq!(t.len(), n, "text frame {i}"),
                Message::Binary(b) if i % 2 == 1 => assert_eq!(b.len(), n, "binary frame {i}"),
                other => panic!("frame {i}: {other:?}"),
            }
        }
    }
}
