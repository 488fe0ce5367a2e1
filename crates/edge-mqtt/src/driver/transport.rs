//! The byte stream under MQTT, read through a per-poll stack buffer.

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
        match self {
            // An idle connection holds no read buffer of its own (issue 20: ≤ 2 KB per idle
            // connection): the socket is read into a buffer on the stack of the poll that
            // finds bytes, which lives only for that poll, and what arrived is copied into
            // `buf`, which the driver empties and lets go of between packets.
            Transport::Tcp(s) => {
                let n = std::future::poll_fn(|cx| {
                    let mut chunk = [0u8; READ_CHUNK];
                    let mut rb = tokio::io::ReadBuf::new(&mut chunk);
                    match std::pin::Pin::new(&mut *s).poll_read(cx, &mut rb) {
                        std::task::Poll::Ready(Ok(())) => {
                            buf.extend_from_slice(rb.filled());
                            std::task::Poll::Ready(Ok(rb.filled().len()))
                        }
                        std::task::Poll::Ready(Err(e)) => std::task::Poll::Ready(Err(e)),
                        std::task::Poll::Pending => std::task::Poll::Pending,
                    }
                })
                .await?;
                Ok(n > 0)
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
