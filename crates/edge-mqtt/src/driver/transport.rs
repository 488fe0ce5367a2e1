//! The byte stream under MQTT, read through a per-poll stack buffer.

use futures_util::StreamExt;

use super::*;

/// Most bytes one socket read takes (on the stack of the poll, see [`Transport::read`]).
const READ_CHUNK: usize = 16 * 1024;

/// The byte stream under MQTT: a TCP socket (plain or TLS), or binary WebSocket frames (a
/// packet may span frames and a frame may hold several packets, so both are just bytes to the
/// decoder).
pub(crate) enum Transport {
    Tcp(tickwire_tls::Stream),
    Ws(Box<WebSocket>),
}

impl Transport {
    /// Appends what arrived to `buf`; `Ok(false)` at end of stream. Cancel-safe.
    pub(super) async fn read(&mut self, buf: &mut BytesMut) -> io::Result<bool> {
        std::future::poll_fn(|cx| self.poll_read(cx, buf)).await
    }

    /// [`Transport::read`] as a poll: a parked connection's task waits in it, and the bare
    /// poll holds two references where an `async fn` layer would hold its own state too.
    pub(super) fn poll_read(
        &mut self,
        cx: &mut std::task::Context<'_>,
        buf: &mut BytesMut,
    ) -> std::task::Poll<io::Result<bool>> {
        use std::task::Poll;
        match self {
            // An idle connection holds no read buffer of its own (issue 20: ≤ 2 KB per idle
            // connection): the socket is read into a buffer on the stack of the poll that
            // finds bytes, which lives only for that poll, and what arrived is copied into
            // `buf`, which the driver empties and lets go of between packets.
            Transport::Tcp(s) => {
                let mut chunk = [0u8; READ_CHUNK];
                let mut rb = tokio::io::ReadBuf::new(&mut chunk);
                match std::pin::Pin::new(&mut *s).poll_read(cx, &mut rb) {
                    Poll::Ready(Ok(())) => {
                        buf.extend_from_slice(rb.filled());
                        Poll::Ready(Ok(!rb.filled().is_empty()))
                    }
                    Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
                    Poll::Pending => Poll::Pending,
                }
            }
            Transport::Ws(ws) => loop {
                let next = match ws.poll_next_unpin(cx) {
                    Poll::Ready(m) => m,
                    Poll::Pending => return Poll::Pending,
                };
                return Poll::Ready(match next {
                    None | Some(Ok(WsMessage::Close(_))) => Ok(false),
                    Some(Err(e)) => Err(io::Error::other(e)),
                    Some(Ok(WsMessage::Binary(b))) => {
                        buf.extend_from_slice(&b);
                        Ok(true)
                    }
                    Some(Ok(WsMessage::Text(_))) => Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        "MQTT over WebSocket is carried in binary frames",
                    )),
                    Some(Ok(_)) => continue,
                });
            },
        }
    }

    pub(super) async fn write(&mut self, data: Bytes) -> io::Result<()> {
        match self {
            // The flush hands TLS records buffered by rustls to the socket (a no-op on TCP).
            Transport::Tcp(s) => {
                s.write_all(&data).await?;
                s.flush().await
            }
            Transport::Ws(ws) => ws
                .send(WsMessage::Binary(data))
                .await
                .map_err(io::Error::other),
        }
    }

    pub(super) async fn close(&mut self) {
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
