//! The WebSocket opening handshake (RFC 6455 §4.2) and the socket a connection is served on.
//!
//! The handshake is ours, not axum's `WebSocketUpgrade`, for one reason: where the bytes a
//! client sends wait before they are read. The WebSocket layer keeps a read buffer per
//! connection for the connection's whole life, and with axum the socket goes to it directly,
//! so that buffer also has to be the size of one socket read (4 KiB): on an idle connection
//! that was more than half of what the server held for it (bench/results/idle.md). Here the
//! socket is wrapped in [`LeanIo`] first: a read takes up to [`SOCKET_READ`] bytes through a
//! buffer on the stack that lives for one poll, hands the WebSocket layer what it asked for,
//! and keeps the rest on the heap only while the client keeps sending. So an idle connection
//! holds no socket-sized buffer, and the WebSocket layer's own can be small
//! ([`LAYER_BUFFER`]) without a system call per few hundred bytes.
//!
//! The checks and their answers are the ones axum's extractor gives (the same status codes and
//! texts), so clients see no difference.

use std::{
    future::Future,
    io,
    pin::Pin,
    task::{Context, Poll},
};

use axum::{
    body::Body,
    extract::FromRequestParts,
    http::{header, request::Parts, HeaderMap, HeaderValue, Method, StatusCode, Version},
    response::{IntoResponse, Response},
};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_tungstenite::WebSocketStream;
use tungstenite::protocol::{Role, WebSocketConfig};

/// Bytes taken from the socket in one read.
pub(crate) const SOCKET_READ: usize = 4 * 1024;
/// The WebSocket layer's read buffer: what it asks [`LeanIo`] for at a time, and what it
/// holds for the connection's life. Short commands fit in one piece; a longer frame is
/// assembled from several (copies from [`LeanIo`]'s spare, not system calls).
pub(crate) const LAYER_BUFFER: usize = 512;

/// The socket a WebSocket connection is served on.
pub(crate) type Socket = WebSocketStream<LeanIo<TokioIo<hyper::upgrade::Upgraded>>>;

/// A checked WebSocket opening request, ready to be answered with `101 Switching Protocols`.
pub struct Handshake {
    key: HeaderValue,
    on_upgrade: hyper::upgrade::OnUpgrade,
    /// The subprotocols the client offered, in its order.
    offered: Vec<HeaderValue>,
}

/// Why a request is not a WebSocket opening: the status and text axum's extractor answers.
#[derive(Debug)]
pub struct Rejection(StatusCode, &'static str);

/// A 400 for a request that is not a WebSocket opening.
const fn bad(why: &'static str) -> Rejection {
    Rejection(StatusCode::BAD_REQUEST, why)
}

impl IntoResponse for Rejection {
    fn into_response(self) -> Response {
        (self.0, self.1).into_response()
    }
}

fn header_has_token(headers: &HeaderMap, name: header::HeaderName, token: &str) -> bool {
    headers.get_all(name).iter().any(|v| {
        v.as_bytes()
            .split(|&b| b == b',')
            .any(|t| t.trim_ascii().eq_ignore_ascii_case(token.as_bytes()))
    })
}

fn header_is(headers: &HeaderMap, name: header::HeaderName, value: &str) -> bool {
    headers
        .get(name)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(value.as_bytes()))
}

impl<S: Send + Sync> FromRequestParts<S> for Handshake {
    type Rejection = Rejection;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Rejection> {
        // HTTP/1.1 only: the listeners do not offer HTTP/2, so no extended CONNECT.
        if parts.version > Version::HTTP_11 {
            return Err(Rejection(
                StatusCode::HTTP_VERSION_NOT_SUPPORTED,
                "WebSocket needs HTTP/1.1",
            ));
        }
        if parts.method != Method::GET {
            return Err(Rejection(
                StatusCode::METHOD_NOT_ALLOWED,
                "Request method must be `GET`",
            ));
        }
        if !header_has_token(&parts.headers, header::CONNECTION, "upgrade") {
            return Err(bad("Connection header did not include 'upgrade'"));
        }
        if !header_is(&parts.headers, header::UPGRADE, "websocket") {
            return Err(bad("`Upgrade` header did not include 'websocket'"));
        }
        let key = parts
            .headers
            .get(header::SEC_WEBSOCKET_KEY)
            .cloned()
            .ok_or(bad("`Sec-WebSocket-Key` header missing"))?;
        if !header_is(&parts.headers, header::SEC_WEBSOCKET_VERSION, "13") {
            return Err(bad("`Sec-WebSocket-Version` header did not include '13'"));
        }
        let on_upgrade = parts
            .extensions
            .remove::<hyper::upgrade::OnUpgrade>()
            .ok_or(Rejection(
                StatusCode::UPGRADE_REQUIRED,
                "WebSocket request couldn't be upgraded since no upgrade state was present",
            ))?;
        let offered = parts
            .headers
            .get_all(header::SEC_WEBSOCKET_PROTOCOL)
            .iter()
            .flat_map(|v| v.as_bytes().split(|&b| b == b','))
            .filter_map(|p| HeaderValue::from_bytes(p.trim_ascii()).ok())
            .collect();
        Ok(Handshake {
            key,
            on_upgrade,
            offered,
        })
    }
}

impl Handshake {
    /// Whether the client offered subprotocol `name`.
    pub fn offers(&self, name: &str) -> bool {
        self.offered.iter().any(|p| p.as_bytes() == name.as_bytes())
    }

    /// Answers `101 Switching Protocols` (echoing `protocol`, when given, as the one chosen)
    /// and serves the connection with `serve` once the switch is done. `max_message` bounds a
    /// frame and a message; over it the read fails with a capacity error.
    pub fn accept<F, Fut>(
        self,
        protocol: Option<&'static str>,
        max_message: usize,
        serve: F,
    ) -> Response
    where
        F: FnOnce(Socket) -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let Handshake {
            key, on_upgrade, ..
        } = self;
        // The task keeps what it captures for the connection's whole life: a size, not the
        // 64-byte configuration, which is built where it is used.
        tokio::spawn(async move {
            let upgraded = match on_upgrade.await {
                Ok(u) => u,
                Err(e) => {
                    tracing::debug!(error = %e, "WebSocket upgrade did not complete");
                    return;
                }
            };
            let io = LeanIo::new(TokioIo::new(upgraded));
            let config = WebSocketConfig::default()
                .max_message_size(Some(max_message))
                .max_frame_size(Some(max_message))
                .read_buffer_size(LAYER_BUFFER);
            let socket = WebSocketStream::from_raw_socket(io, Role::Server, Some(config)).await;
            serve(socket).await;
        });
        let accept = tungstenite::handshake::derive_accept_key(key.as_bytes());
        let mut resp = Response::new(Body::empty());
        *resp.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
        let h = resp.headers_mut();
        h.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        if let Ok(v) = HeaderValue::from_str(&accept) {
            h.insert(header::SEC_WEBSOCKET_ACCEPT, v);
        }
        if let Some(p) = protocol {
            h.insert(header::SEC_WEBSOCKET_PROTOCOL, HeaderValue::from_static(p));
        }
        resp
    }
}

/// A socket whose reads go through a per-poll stack buffer: what the reader did not take yet
/// waits in `spare`. Writes pass straight through.
///
/// `spare`'s allocation is kept while the client keeps sending and freed when a socket read
/// finds nothing (the connection has gone quiet), so an idle connection holds none. Before,
/// it was allocated anew for every read that left bytes over: a pipelining publisher asked
/// glibc for a ~4 KiB chunk per socket read, and each such request first consolidates the
/// small chunks other threads freed (`malloc_consolidate`, ~3.5 % of the server's samples in
/// the one-connection WebSocket row; bench/results/ws-publish.md).
pub struct LeanIo<S> {
    inner: S,
    /// Bytes read from the socket; those from `at` on are not taken yet.
    spare: Vec<u8>,
    at: usize,
}

impl<S> LeanIo<S> {
    pub fn new(inner: S) -> LeanIo<S> {
        LeanIo {
            inner,
            spare: Vec::new(),
            at: 0,
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for LeanIo<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if let Some(rest) = this.spare.get(this.at..).filter(|r| !r.is_empty()) {
            let n = rest.len().min(buf.remaining());
            buf.put_slice(rest.get(..n).unwrap_or_default());
            this.at += n;
            if this.at >= this.spare.len() {
                // Emptied, not freed: the next read that leaves bytes over reuses it.
                this.spare.clear();
                this.at = 0;
            }
            return Poll::Ready(Ok(()));
        }
        // A reader that asks for a socket's worth gets it directly.
        if buf.remaining() >= SOCKET_READ {
            return Pin::new(&mut this.inner).poll_read(cx, buf);
        }
        // Uninitialised: the socket writes what it fills, and zeroing 4 KiB per read would
        // cost more than the read's copy.
        let mut stack = [std::mem::MaybeUninit::<u8>::uninit(); SOCKET_READ];
        let mut chunk = ReadBuf::uninit(&mut stack);
        match Pin::new(&mut this.inner).poll_read(cx, &mut chunk) {
            Poll::Ready(Ok(())) => {
                let got = chunk.filled();
                let n = got.len().min(buf.remaining());
                let (now, later) = got.split_at(n);
                buf.put_slice(now);
                if !later.is_empty() {
                    if this.spare.capacity() == 0 {
                        // Room for any read's rest, so a busy connection allocates once.
                        this.spare.reserve_exact(SOCKET_READ);
                    }
                    this.spare.extend_from_slice(later);
                    this.at = 0;
                }
                Poll::Ready(Ok(()))
            }
            Poll::Pending => {
                // Nothing to read: the connection is quiet, and holds no buffer while it is.
                this.spare = Vec::new();
                Poll::Pending
            }
            other => other,
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for LeanIo<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// Whatever sizes the reader asks for, it gets the bytes in order, none lost or repeated,
    /// and nothing waits in `spare` once all is taken.
    #[tokio::test]
    async fn reads_in_any_piece_size_give_the_stream_back_in_order() {
        let data: Vec<u8> = (0..50_000u32).map(|i| (i * 31 % 251) as u8).collect();
        for piece in [1usize, 7, 200, 512, 4095, 4096, 9000] {
            let (mut w, r) = tokio::io::duplex(64 * 1024);
            let sent = data.clone();
            let writer = tokio::spawn(async move {
                // Uneven writes, so reads see partial chunks.
                for part in sent.chunks(3_333) {
                    w.write_all(part).await.unwrap();
                }
            });
            let mut lean = LeanIo::new(r);
            let mut got = Vec::new();
            let mut buf = vec![0u8; piece];
            while got.len() < data.len() {
                let n = lean.read(&mut buf).await.unwrap();
                assert!(n > 0, "piece {piece}: end of stream before all data");
                got.extend_from_slice(&buf[..n]);
            }
            writer.await.unwrap();
            assert_eq!(got, data, "piece {piece}");
            assert!(
                lean.spare.len() == lean.at,
                "piece {piece}: bytes left unread"
            );
        }
    }

    /// A busy connection reuses one spare allocation; once a read finds the socket empty
    /// (the client has gone quiet), the connection holds no buffer at all.
    #[tokio::test]
    async fn spare_is_reused_while_busy_and_freed_when_quiet() {
        let (mut w, r) = tokio::io::duplex(64 * 1024);
        let mut lean = LeanIo::new(r);
        let mut buf = [0u8; 100];
        w.write_all(&[1u8; 1000]).await.unwrap();
        assert_eq!(lean.read(&mut buf).await.unwrap(), 100);
        let first = lean.spare.as_ptr();
        assert!(lean.spare.capacity() >= SOCKET_READ);
        for _ in 0..9 {
            assert_eq!(lean.read(&mut buf).await.unwrap(), 100);
        }
        w.write_all(&[2u8; 1000]).await.unwrap();
        assert_eq!(lean.read(&mut buf).await.unwrap(), 100);
        assert_eq!(lean.spare.as_ptr(), first, "the allocation was reused");
        for _ in 0..9 {
            assert_eq!(lean.read(&mut buf).await.unwrap(), 100);
        }
        // Nothing more sent: the next read is pending, and the buffer is gone.
        let pending = futures_util::FutureExt::now_or_never(lean.read(&mut buf));
        assert!(pending.is_none(), "nothing to read");
        assert_eq!(
            lean.spare.capacity(),
            0,
            "a quiet connection holds no buffer"
        );
        assert_eq!(buf, [2u8; 100]);
    }

    /// End of stream is passed on once the spare bytes are taken.
    #[tokio::test]
    async fn end_of_stream_after_the_spare_bytes() {
        let (mut w, r) = tokio::io::duplex(1024);
        w.write_all(&[9u8; 100]).await.unwrap();
        drop(w);
        let mut lean = LeanIo::new(r);
        let mut buf = [0u8; 30];
        let mut total = 0;
        loop {
            let n = lean.read(&mut buf).await.unwrap();
            if n == 0 {
                break;
            }
            total += n;
        }
        assert_eq!(total, 100);
    }
}
