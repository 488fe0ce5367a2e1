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

/// The most room a connection's push frame queue keeps once written ([`LeanIo::queue`]).
const QUEUE_KEEP: usize = 64 * 1024;

/// The raw socket of an upgraded connection, before (or without) the WebSocket layer.
pub(crate) type Lean = LeanIo<TokioIo<hyper::upgrade::Upgraded>>;

/// The socket a WebSocket connection is served on.
pub(crate) type Socket = WebSocketStream<Lean>;

/// Puts the WebSocket layer over `io`: frames and messages over `max_message` bytes fail the
/// read with a capacity error. The layer starts with no state of its own, so this is only
/// done where the bytes read so far end on a message boundary ([`LeanIo::at_boundary`]).
pub(crate) async fn layer(io: Lean, max_message: usize) -> Socket {
    let config = WebSocketConfig::default()
        .max_message_size(Some(max_message))
        .max_frame_size(Some(max_message))
        .read_buffer_size(LAYER_BUFFER);
    WebSocketStream::from_raw_socket(io, Role::Server, Some(config)).await
}

/// The switch to the WebSocket protocol under way: resolves to the raw socket once the `101`
/// answer is out, or to `None` if the connection ended first.
pub struct Upgrading(hyper::upgrade::OnUpgrade);

impl Future for Upgrading {
    type Output = Option<Lean>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Lean>> {
        Pin::new(&mut self.0).poll(cx).map(|r| match r {
            Ok(u) => Some(LeanIo::new(TokioIo::new(u))),
            Err(e) => {
                tracing::debug!(error = %e, "WebSocket upgrade did not complete");
                None
            }
        })
    }
}

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
    /// and serves the connection with `serve` once the switch is done. `serve` gets the raw
    /// socket and puts the WebSocket layer over it with [`layer`] (and may take it off again
    /// while the connection is idle: ws/mod.rs, "parked").
    pub fn accept<F, Fut>(self, protocol: Option<&'static str>, serve: F) -> Response
    where
        F: FnOnce(Upgrading) -> Fut,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let Handshake {
            key, on_upgrade, ..
        } = self;
        // `serve`'s future is the task itself, with no block around it: a block would keep
        // `serve` and the upgrade beside it for the connection's whole life.
        tokio::spawn(serve(Upgrading(on_upgrade)));
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
/// waits in `spare`. Writes pass straight through, behind the push frames the connection
/// wrote itself ([`LeanIo::queue`]).
///
/// `spare`'s allocation is kept while the client keeps sending and freed when a socket read
/// finds nothing (the connection has gone quiet), so an idle connection holds none. Before,
/// it was allocated anew for every read that left bytes over: a pipelining publisher asked
/// glibc for a ~4 KiB chunk per socket read, and each such request first consolidates the
/// small chunks other threads freed (`malloc_consolidate`, ~3.5 % of the server's samples in
/// the one-connection WebSocket row; bench/results/ws-publish.md).
///
/// It also follows the frames in what it hands the reader ([`Frames`]), so the connection
/// knows when the WebSocket layer holds no part of a frame or message and may be dropped
/// while the client is quiet.
pub struct LeanIo<S> {
    inner: S,
    /// Bytes read from the socket; those from `at` on are not taken yet.
    spare: Vec<u8>,
    at: usize,
    frames: Frames,
    /// Whole frames the connection encoded itself, written before anything the WebSocket
    /// layer writes (boxed: a parked connection holds one pointer, and none of its bytes).
    queued: Option<Box<Queued>>,
}

/// Frames waiting to be written; those from `at` on are not written yet.
#[derive(Default)]
struct Queued {
    bytes: Vec<u8>,
    at: usize,
}

impl<S> LeanIo<S> {
    pub fn new(inner: S) -> LeanIo<S> {
        LeanIo {
            inner,
            spare: Vec::new(),
            at: 0,
            frames: Frames::default(),
            queued: None,
        }
    }

    /// Where the connection appends whole frames, to be written before any byte the
    /// WebSocket layer writes from now on. Only while the layer holds nothing unwritten
    /// (flushed), or its half-written frame would be cut.
    pub fn queue(&mut self) -> &mut Vec<u8> {
        let q = self.queued.get_or_insert_with(Box::default);
        if q.at > 0 && q.at >= q.bytes.len() {
            q.at = 0;
            if q.bytes.capacity() > QUEUE_KEEP {
                // A rare large message: its room is not kept for the small ones after it.
                q.bytes = Vec::new();
            } else {
                q.bytes.clear();
            }
        }
        &mut q.bytes
    }

    /// Whether queued frames are not all written yet.
    pub fn has_queued(&self) -> bool {
        self.queued.as_ref().is_some_and(|q| q.at < q.bytes.len())
    }

    /// Frees the queue's buffer once it is written: what a parked connection does not need.
    pub fn release_queue(&mut self) {
        if !self.has_queued() {
            self.queued = None;
        }
    }

    /// Whether everything handed to the reader ends on a message boundary: no frame and no
    /// fragmented message is half read, so a reader that has parsed all it was given holds
    /// nothing of the client's.
    pub fn at_boundary(&self) -> bool {
        self.frames.at_boundary()
    }
}

impl<S: AsyncRead + Unpin> LeanIo<S> {
    /// Keeps bytes read from the socket that no reader has taken yet (called only when
    /// `spare` holds none). Its allocation has room for any read's rest, so a busy
    /// connection allocates once.
    fn keep(&mut self, rest: &[u8]) {
        self.spare.clear();
        self.at = 0;
        if self.spare.capacity() == 0 {
            self.spare.reserve_exact(SOCKET_READ);
        }
        self.spare.extend_from_slice(rest);
    }

    /// Waits, without a reader, until the client sends something: ready with `true` once
    /// bytes wait to be taken, `false` at the end of the stream. What arrives is kept for the
    /// next reader, so nothing is lost while no WebSocket layer is over the socket.
    pub fn poll_readable(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<bool>> {
        if self.spare.len() > self.at {
            return Poll::Ready(Ok(true));
        }
        let mut stack = [std::mem::MaybeUninit::<u8>::uninit(); SOCKET_READ];
        let mut chunk = ReadBuf::uninit(&mut stack);
        match Pin::new(&mut self.inner).poll_read(cx, &mut chunk) {
            Poll::Ready(Ok(())) if chunk.filled().is_empty() => Poll::Ready(Ok(false)),
            Poll::Ready(Ok(())) => {
                self.keep(chunk.filled());
                Poll::Ready(Ok(true))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => Poll::Pending,
        }
    }
}

/// Follows RFC 6455 frames (§5.2) through a byte stream: where each frame's header and
/// payload end, and whether a fragmented data message is open. Only lengths and two bits are
/// read; validating frames stays the WebSocket layer's job (a malformed one fails there and
/// ends the connection, so what this makes of it does not matter, as long as it never
/// panics). 16 bytes: every parked connection holds one.
#[derive(Default)]
struct Frames {
    /// In a header: its extended length as far as read; in a payload: the bytes to come.
    count: u64,
    /// Header bytes read of the current frame (0: not in a header).
    have: u8,
    /// The header's first byte (FIN, opcode) and second (MASK, length).
    first: u8,
    second: u8,
    /// A data frame without FIN was seen, and the message's final frame not yet.
    fragmented: bool,
}

impl Frames {
    fn at_boundary(&self) -> bool {
        self.have == 0 && self.count == 0 && !self.fragmented
    }

    /// The header's full length (once its first two bytes are known).
    fn header_len(&self) -> u8 {
        let mask = if self.second & 0x80 != 0 { 4 } else { 0 };
        2 + self.extended() + mask
    }

    fn scan(&mut self, mut bytes: &[u8]) {
        while !bytes.is_empty() {
            if self.have == 0 && self.count > 0 {
                let n = usize::try_from(self.count)
                    .unwrap_or(usize::MAX)
                    .min(bytes.len());
                self.count -= n as u64;
                bytes = bytes.get(n..).unwrap_or_default();
                continue;
            }
            let Some((&b, rest)) = bytes.split_first() else {
                break;
            };
            bytes = rest;
            self.have += 1;
            match self.have {
                1 => self.first = b,
                2 => {
                    self.second = b;
                    self.count = 0;
                }
                // Extended length bytes (big-endian), then the masking key, skipped.
                n if n <= 2 + self.extended() => self.count = (self.count << 8) | u64::from(b),
                _ => {}
            }
            if self.have >= 2 && self.have == self.header_len() {
                self.end_header();
            }
        }
    }

    /// How many extended length bytes the header has.
    fn extended(&self) -> u8 {
        match self.second & 0x7f {
            126 => 2,
            127 => 8,
            _ => 0,
        }
    }

    fn end_header(&mut self) {
        if self.extended() == 0 {
            self.count = u64::from(self.second & 0x7f);
        }
        // Continuation, text and binary frames make up messages; control frames (close, ping,
        // pong) may come between the fragments of one and leave it open.
        if self.first & 0x0f <= 2 {
            self.fragmented = self.first & 0x80 == 0;
        }
        self.have = 0;
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
            let given = rest.get(..n).unwrap_or_default();
            this.frames.scan(given);
            buf.put_slice(given);
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
            let before = buf.filled().len();
            let read = Pin::new(&mut this.inner).poll_read(cx, buf);
            if let Some(new) = buf.filled().get(before..) {
                this.frames.scan(new);
            }
            return read;
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
                this.frames.scan(now);
                buf.put_slice(now);
                if !later.is_empty() {
                    this.keep(later);
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

impl<S: AsyncWrite + Unpin> LeanIo<S> {
    /// Writes the queued frames: ready once all are written. `wrote` is set when the socket
    /// took any of them (the connection's sign that its client is still reading).
    pub fn poll_queued(&mut self, cx: &mut Context<'_>, wrote: &mut bool) -> Poll<io::Result<()>> {
        let Some(q) = self.queued.as_mut() else {
            return Poll::Ready(Ok(()));
        };
        while let Some(rest) = q.bytes.get(q.at..).filter(|r| !r.is_empty()) {
            match Pin::new(&mut self.inner).poll_write(cx, rest) {
                Poll::Ready(Ok(0)) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                Poll::Ready(Ok(n)) => {
                    q.at += n;
                    *wrote = true;
                }
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => return Poll::Pending,
            }
        }
        Poll::Ready(Ok(()))
    }
}

// Every write of the WebSocket layer (replies, pongs it answers by itself while reading, the
// close frame) waits until the queued frames are out, so the two never interleave mid-frame.
impl<S: AsyncWrite + Unpin> AsyncWrite for LeanIo<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        std::task::ready!(self.poll_queued(cx, &mut false))?;
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        std::task::ready!(self.poll_queued(cx, &mut false))?;
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        std::task::ready!(self.poll_queued(cx, &mut false))?;
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        std::task::ready!(self.poll_queued(cx, &mut false))?;
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

    /// One RFC 6455 frame: FIN, opcode, the payload's length in its shortest form, masked
    /// or not.
    fn frame(fin: bool, opcode: u8, len: usize, masked: bool) -> Vec<u8> {
        let mut f = vec![if fin { 0x80 } else { 0 } | opcode];
        let m = if masked { 0x80 } else { 0 };
        match len {
            0..=125 => f.push(m | len as u8),
            126..=65535 => {
                f.push(m | 126);
                f.extend_from_slice(&(len as u16).to_be_bytes());
            }
            _ => {
                f.push(m | 127);
                f.extend_from_slice(&(len as u64).to_be_bytes());
            }
        }
        if masked {
            f.extend_from_slice(&[1, 2, 3, 4]);
        }
        f.extend((0..len).map(|i| i as u8));
        f
    }

    /// Messages of every length form, whole and fragmented, with control frames between
    /// fragments, cut into pieces of every size: the tracker is at a boundary after a piece
    /// exactly when the bytes so far end a message, and never in between.
    #[test]
    fn frames_are_followed_to_message_boundaries_in_any_pieces() {
        let mut stream = Vec::new();
        let mut ends = std::collections::BTreeSet::new();
        let lens = [0usize, 1, 125, 126, 300, 65535, 65536, 70_000];
        for (k, &len) in lens.iter().enumerate() {
            let masked = k % 2 == 0;
            // A whole text message.
            stream.extend(frame(true, 1, len, masked));
            ends.insert(stream.len());
            // A ping alone is a boundary too.
            stream.extend(frame(true, 9, k, masked));
            ends.insert(stream.len());
            // A binary message in three fragments with a pong between the first two.
            stream.extend(frame(false, 2, len, masked));
            stream.extend(frame(true, 10, 3, masked));
            stream.extend(frame(false, 0, 7, masked));
            stream.extend(frame(true, 0, len / 2, masked));
            ends.insert(stream.len());
        }
        for piece in [1usize, 2, 3, 13, 512, 4096, 100_000] {
            let mut f = Frames::default();
            let mut at = 0;
            for chunk in stream.chunks(piece) {
                f.scan(chunk);
                at += chunk.len();
                assert_eq!(
                    f.at_boundary(),
                    ends.contains(&at),
                    "piece {piece}, after {at} bytes"
                );
            }
        }
    }

    /// Garbage never panics the tracker (the WebSocket layer refuses it and the connection
    /// ends; the tracker only has to survive it).
    #[test]
    fn frames_survive_any_bytes() {
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut f = Frames::default();
        for _ in 0..200_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            f.scan(&x.to_le_bytes()[..(x % 9) as usize]);
        }
        let mut huge = Frames::default();
        huge.scan(&[0x82, 0x7f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff]);
        assert!(
            !huge.at_boundary(),
            "a frame of 2^64-1 bytes is still being read"
        );
    }

    /// Bytes that arrive while no reader is over the socket wait for the next one, in order.
    #[tokio::test]
    async fn readable_keeps_what_arrived_for_the_next_reader() {
        let (mut w, r) = tokio::io::duplex(1024);
        let mut lean = LeanIo::new(r);
        let pending = std::future::poll_fn(|cx| Poll::Ready(lean.poll_readable(cx))).await;
        assert!(pending.is_pending(), "nothing sent yet");
        w.write_all(b"hello").await.unwrap();
        let got = std::future::poll_fn(|cx| lean.poll_readable(cx))
            .await
            .unwrap();
        assert!(got);
        let mut buf = [0u8; 5];
        lean.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"hello");
        drop(w);
        let got = std::future::poll_fn(|cx| lean.poll_readable(cx))
            .await
            .unwrap();
        assert!(!got, "end of stream");
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
