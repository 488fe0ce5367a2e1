//! The gRPC calls over the `h2` crate's HTTP/2 client, without tonic (`--grpc-client h2`):
//! the ws-publish publisher's `PublishStream` and the subscribers' `Subscribe`, each the same
//! call, request and checks as its tonic counterpart (grpc.rs), with requests written and
//! answers read as bytes.
//!
//! Why a second client: the load generator shares the machine's two cores with the server.
//! Through tonic the publisher took ~40 % of a core for one connection's 750 K requests a
//! second (the WebSocket publisher: ~17 % for 880 K). perf put that in tonic's layers, not in
//! HTTP/2: an owned request (channel `String`, item `Vec`, payload `Bytes`) and a prost encode
//! per quote, the channel that feeds tonic's encoder, a decoded answer (its results `Vec`) per
//! ack, and malloc/free for all of them (~20 %). At full fan-out load tonic's subscribers,
//! decoding each push into a message of its own on the generator's one reading thread, fell a
//! second behind. Here a turn's requests are encoded into one buffer and handed to h2 as one
//! `Bytes`, and each answer or push is read where it lies in the received bytes. HTTP/2
//! framing, flow control and HPACK stay the h2 crate's, the crate tonic and the server use.

use std::{future::poll_fn, net::SocketAddr, task::Poll, time::Duration};

use bytes::{Buf, BufMut, Bytes, BytesMut};
use h2::{client::ResponseFuture, RecvStream, SendStream};
use http::HeaderMap;
use prost::{
    encoding::{decode_varint, encode_varint, encoded_len_varint},
    Message,
};
use tickwire_proto::v1::PublishResult;
use tokio::{net::TcpStream, task::JoinHandle};

use super::{
    bearer, subscribe_request, Reply, Window, NAME, PUBLISH_CREDENTIALS, TAG_PUSH, TAG_SUBSCRIBED,
};
use crate::{
    error::{BenchError, Result},
    msg::now_micros,
    proto::CLIENT_CREDENTIAL,
    publish::pacer,
    scenario::{Phase, PubOutcome},
    RunArgs,
};

/// The receive window the publisher advertises for its call and for its connection. Answers
/// are ~25 bytes each and read as they come, so the server is never held back by it.
const WINDOW: u32 = 1 << 24;

/// The largest answer accepted (tonic's default decoding limit): a length above it means the
/// stream is not what the publisher thinks it is.
const MAX_ANSWER: usize = 4 << 20;

fn h2_error(what: &str) -> impl FnOnce(h2::Error) -> BenchError + '_ {
    move |e| BenchError::proto(NAME, format!("{what}: {e}"))
}

/// Appends one gRPC message (a 5-byte prefix: not compressed, big-endian length) holding a
/// `PublishRequest` of one item: `channel` and `json` as a `json` payload, no msg_id. The
/// bytes prost writes for grpc.rs's `request` (tested).
pub(super) fn encode_request(out: &mut BytesMut, id: u64, channel: &[u8], json: &[u8]) {
    // PublishRequest { id = 1; items = 2 } > PublishItem { channel = 1; payload = 3 } >
    // Payload { json = 5 } (proto/tickwire/v1/tickwire.proto).
    let len = |n: usize| encoded_len_varint(n as u64);
    let payload = 1 + len(json.len()) + json.len();
    let item = 1 + len(channel.len()) + channel.len() + 1 + len(payload) + payload;
    let id_len = if id == 0 {
        0
    } else {
        1 + encoded_len_varint(id)
    };
    let request = id_len + 1 + len(item) + item;
    out.reserve(5 + request);
    out.put_u8(0);
    // A request is one quote and a channel name: far below 4 GiB.
    out.put_u32(request as u32);
    if id != 0 {
        out.put_u8(0x08);
        encode_varint(id, out);
    }
    out.put_u8(0x12);
    encode_varint(item as u64, out);
    out.put_u8(0x0a);
    encode_varint(channel.len() as u64, out);
    out.put_slice(channel);
    out.put_u8(0x1a);
    encode_varint(payload as u64, out);
    out.put_u8(0x2a);
    encode_varint(json.len() as u64, out);
    out.put_slice(json);
}

/// Skips one field's value of wire type `wire_type`; None if the bytes end first or the type
/// is not one proto3 writes.
fn skip(b: &mut &[u8], wire_type: u64) -> Option<()> {
    let n = match wire_type {
        0 => return decode_varint(b).ok().map(drop),
        1 => 8,
        2 => usize::try_from(decode_varint(b).ok()?).ok()?,
        5 => 4,
        _ => return None,
    };
    if n > b.len() {
        return None;
    }
    b.advance(n);
    Some(())
}

/// A `PublishResult`'s error as `code: message`, decoded only when the result has one.
fn result_error(result: &[u8]) -> Option<Option<String>> {
    let mut b = result;
    while b.has_remaining() {
        let key = decode_varint(&mut b).ok()?;
        if key == (3 << 3) | 2 {
            let r = PublishResult::decode(result).ok()?;
            return Some(r.error.map(|e| format!("{}: {}", e.code, e.message)));
        }
        skip(&mut b, key & 7)?;
    }
    Some(None)
}

/// Reads a `PublishResponse`'s id, result count and first error from its bytes, without
/// decoding it into owned values. None: not a `PublishResponse`.
pub(super) fn read_reply(mut b: &[u8]) -> Option<Reply> {
    let mut r = Reply {
        id: 0,
        results: 0,
        error: None,
    };
    while b.has_remaining() {
        let key = decode_varint(&mut b).ok()?;
        match (key >> 3, key & 7) {
            (1, 0) => r.id = decode_varint(&mut b).ok()?,
            (2, 2) => {
                let len = usize::try_from(decode_varint(&mut b).ok()?).ok()?;
                if len > b.len() {
                    return None;
                }
                let (result, rest) = b.split_at(len);
                if r.results == 0 {
                    r.error = result_error(result)?;
                }
                r.results += 1;
                b = rest;
            }
            (_, wire_type) => skip(&mut b, wire_type)?,
        }
    }
    Some(r)
}

/// Hands each whole gRPC message in `buf` to `f` and takes it out; a partial one stays for
/// the next read.
pub(super) fn split_messages(
    buf: &mut BytesMut,
    mut f: impl FnMut(&[u8]) -> Result<()>,
) -> Result<()> {
    while buf.len() >= 5 {
        let len = u32::from_be_bytes([buf[1], buf[2], buf[3], buf[4]]) as usize;
        if buf[0] != 0 {
            return Err(BenchError::proto(
                NAME,
                "a compressed answer, though the call asked for none",
            ));
        }
        if len > MAX_ANSWER {
            return Err(BenchError::proto(
                NAME,
                format!("an answer of {len} bytes (at most {MAX_ANSWER})"),
            ));
        }
        if buf.len() < 5 + len {
            break;
        }
        f(&buf[5..5 + len])?;
        buf.advance(5 + len);
    }
    Ok(())
}

/// `grpc-status` and `grpc-message` (percent-decoded) of response headers or trailers, when
/// they carry one.
fn grpc_status(h: &HeaderMap) -> Option<(String, String)> {
    let status = String::from_utf8_lossy(h.get("grpc-status")?.as_bytes()).into_owned();
    let message = h
        .get("grpc-message")
        .map(|v| percent_decode(v.as_bytes()))
        .unwrap_or_default();
    Some((status, message))
}

/// A `grpc-message` as sent: percent-encoded UTF-8 (gRPC over HTTP/2); a `%` not followed by
/// two hex digits stays as it is.
fn percent_decode(b: &[u8]) -> String {
    let hex = |c: u8| (c as char).to_digit(16);
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let pair = (
            b.get(i + 1).copied().and_then(hex),
            b.get(i + 2).copied().and_then(hex),
        );
        match (b[i], pair) {
            (b'%', (Some(h), Some(l))) => {
                // Two hex digits: at most 0xff.
                out.push((h * 16 + l) as u8);
                i += 3;
            }
            (c, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// One gRPC call on its own HTTP/2 connection: the request stream, the answer to come, and
/// the connection's task, which reads and writes its frames (its errors reach the call's
/// handles). The task is spawned on the caller's runtime, so its CPU counts where the
/// caller's does.
struct Call {
    send: SendStream<Bytes>,
    response: ResponseFuture,
    conn: JoinHandle<()>,
}

impl Call {
    /// Connects to `addr` (advertising `window` bytes of receive window for the call and
    /// `conn_window` for the connection) and starts `tickwire.v1.Tickwire/<method>`,
    /// authorized with the first of `credentials` that is set.
    async fn open(
        addr: SocketAddr,
        window: u32,
        conn_window: u32,
        method: &str,
        credentials: &[&str],
    ) -> Result<Call> {
        let connect = async {
            let tcp = TcpStream::connect(addr)
                .await
                .map_err(BenchError::io(format!("{NAME}: connect {addr}")))?;
            tcp.set_nodelay(true).map_err(BenchError::io(NAME))?;
            h2::client::Builder::new()
                .initial_window_size(window)
                .initial_connection_window_size(conn_window)
                .handshake::<_, Bytes>(tcp)
                .await
                .map_err(h2_error("HTTP/2 handshake"))
        };
        let (client, conn) = tokio::time::timeout(Duration::from_secs(10), connect)
            .await
            .map_err(|_| BenchError::Timeout(format!("{NAME}: connect {addr}")))??;
        let conn = tokio::spawn(async move {
            let _ = conn.await;
        });
        let mut req = http::Request::builder()
            .method("POST")
            .uri(format!("http://{addr}/tickwire.v1.Tickwire/{method}"))
            .header("content-type", "application/grpc")
            .header("te", "trailers");
        if let Some(b) = bearer(credentials) {
            req = req.header("authorization", b);
        }
        let req = req
            .body(())
            .map_err(|e| BenchError::Usage(format!("the {method} request: {e}")))?;
        let mut client = client.ready().await.map_err(h2_error("not ready"))?;
        let (response, send) = client.send_request(req, false).map_err(h2_error(method))?;
        Ok(Call {
            send,
            response,
            conn,
        })
    }
}

/// The body of `method`'s answer once the server accepted the call; a refusal (an HTTP status
/// other than 200, or a gRPC status in a headers-only answer) is an error with its message.
async fn accepted(response: ResponseFuture, method: &str) -> Result<RecvStream> {
    let resp = tokio::time::timeout(Duration::from_secs(10), response)
        .await
        .map_err(|_| BenchError::Timeout(format!("{NAME}: {method} call not answered")))?
        .map_err(h2_error(method))?;
    let (head, body) = resp.into_parts();
    if head.status != http::StatusCode::OK {
        return Err(BenchError::proto(
            NAME,
            format!("{method} refused: HTTP {}", head.status),
        ));
    }
    // A refusal comes as headers only (a "Trailers-Only" response), with a status other than 0.
    if let Some((code, msg)) = grpc_status(&head.headers).filter(|(c, _)| c != "0") {
        return Err(BenchError::proto(
            NAME,
            format!("{method} refused: grpc-status {code}: {msg}"),
        ));
    }
    Ok(body)
}

/// Takes one item the call's body gave (`body.data()`) into `buf`, giving its window back at
/// once; false when the body ended.
fn take_chunk(
    body: &mut RecvStream,
    buf: &mut BytesMut,
    d: Option<std::result::Result<Bytes, h2::Error>>,
) -> Result<bool> {
    match d {
        Some(Ok(chunk)) => {
            let _ = body.flow_control().release_capacity(chunk.len());
            buf.extend_from_slice(&chunk);
            Ok(true)
        }
        Some(Err(e)) => Err(h2_error("the call failed")(e)),
        None => Ok(false),
    }
}

/// The `grpc-status` and `grpc-message` of an ended call's trailers, if it sent any.
async fn end_status(body: &mut RecvStream) -> Result<Option<(String, String)>> {
    let trailers = body
        .trailers()
        .await
        .map_err(h2_error("the call's trailers"))?;
    Ok(trailers.and_then(|t| grpc_status(&t)))
}

/// Hands the gRPC messages of the next chunk `body` receives to `f`; false when the call
/// ended (an error when it ended with a status other than 0).
async fn read_chunk(
    body: &mut RecvStream,
    buf: &mut BytesMut,
    mut f: impl FnMut(&[u8]),
) -> Result<bool> {
    let d = body.data().await;
    if !take_chunk(body, buf, d)? {
        return match end_status(body).await? {
            Some((code, msg)) if code != "0" => Err(BenchError::proto(
                NAME,
                format!("the call ended: grpc-status {code}: {msg}"),
            )),
            _ => Ok(false),
        };
    }
    split_messages(buf, |m| {
        f(m);
        Ok(())
    })?;
    Ok(true)
}

/// The receive windows tonic's channel advertises by default (per call, per connection): the
/// h2 subscribers advertise the same unless `--grpc-window` says otherwise, so the two clients'
/// rows differ only in the client.
const TONIC_STREAM_WINDOW: u32 = 2 * 1024 * 1024;
const TONIC_CONN_WINDOW: u32 = 5 * 1024 * 1024;

/// One client's Subscribe call over h2 (`--sub-encoding grpc --grpc-client h2`): the same call
/// and request as [`super::GrpcSub`], each answer handed over as its raw `ServerMessage`
/// bytes where it lies in the received chunk (no copy into a message of its own).
pub struct H2Sub {
    body: RecvStream,
    buf: BytesMut,
    conn: JoinHandle<()>,
}

impl H2Sub {
    /// Connects to the gRPC listener at `addr` and subscribes to `symbols`' quote channels;
    /// returns once the server confirmed every subscription.
    pub async fn subscribe(
        addr: SocketAddr,
        window: Option<u32>,
        symbols: &[usize],
    ) -> Result<H2Sub> {
        let Call {
            mut send,
            response,
            conn,
        } = Call::open(
            addr,
            window.unwrap_or(TONIC_STREAM_WINDOW),
            window.unwrap_or(TONIC_CONN_WINDOW),
            "Subscribe",
            &[CLIENT_CREDENTIAL],
        )
        .await?;
        // A unary request: the server reads it whole before it answers.
        let req = subscribe_request(symbols).encode_to_vec();
        let mut framed = BytesMut::with_capacity(5 + req.len());
        framed.put_u8(0);
        // One request of a few channel names: far below 4 GiB.
        framed.put_u32(req.len() as u32);
        framed.put_slice(&req);
        send.send_data(framed.freeze(), true)
            .map_err(h2_error("Subscribe"))?;
        let mut sub = H2Sub {
            body: accepted(response, "Subscribe").await?,
            buf: BytesMut::new(),
            conn,
        };
        let mut confirmed = 0;
        while confirmed < symbols.len() {
            let open = read_chunk(&mut sub.body, &mut sub.buf, |m| {
                if m.first() == Some(&TAG_SUBSCRIBED) {
                    confirmed += 1;
                }
            })
            .await?;
            if !open {
                return Err(BenchError::proto(NAME, "the call ended while subscribing"));
            }
        }
        Ok(sub)
    }

    /// Waits for the next chunk and hands each push's raw `ServerMessage` bytes in it to `f`;
    /// false when the call ended.
    pub async fn read_some(&mut self, f: &mut impl FnMut(&[u8])) -> Result<bool> {
        read_chunk(&mut self.body, &mut self.buf, |m| {
            if m.first() == Some(&TAG_PUSH) {
                f(m);
            }
        })
        .await
    }
}

impl Drop for H2Sub {
    fn drop(&mut self) {
        self.conn.abort();
    }
}

/// The ws-publish publisher over one PublishStream call on h2: publishes at `--rate` (0: as
/// fast as the window allows) until the time or count bound, then ends its side of the call
/// and waits for the outstanding answers. Counts as the tonic publisher (grpc.rs) does. The
/// HTTP/2 connection's task runs on the publisher's own thread, so `cpu_s` includes it.
pub(crate) async fn stream_publisher(
    a: &RunArgs,
    phase: &Phase,
    total: Duration,
) -> Result<PubOutcome> {
    let Call {
        mut send,
        response,
        conn,
    } = Call::open(
        a.addr,
        WINDOW,
        WINDOW,
        "PublishStream",
        &PUBLISH_CREDENTIALS,
    )
    .await?;
    let mut body = accepted(response, "PublishStream").await?;
    let mut w = Window::new(a, total);
    let mut out = BytesMut::with_capacity(64 * 1024);
    let mut rbuf = BytesMut::with_capacity(64 * 1024);
    let mut sending = true;
    let mut tick = pacer(a.rate);
    loop {
        if !w.turn(phase) {
            if sending {
                // Ends the request stream: the server answers what it has read, then ends
                // the call.
                send.send_data(Bytes::new(), true)
                    .map_err(h2_error("ending the call"))?;
                sending = false;
            }
            if w.drained()? {
                break;
            }
        } else {
            // A turn's requests go to h2 as one buffer: it frames them within the server's
            // flow-control window and holds the rest until the server opens it.
            w.top_up(|id, channel, quote| {
                encode_request(&mut out, id, channel.as_bytes(), quote);
                Ok(true)
            })?;
            if !out.is_empty() {
                send.send_data(out.split().freeze(), false)
                    .map_err(h2_error("the call ended while publishing"))?;
            }
        }
        let got = tokio::select! {
            d = body.data() => d,
            _ = tick.tick() => continue,
        };
        // One clock read per turn, as the socket publishers take one per read.
        let now = now_micros();
        let mut ended = false;
        let mut next = Some(got);
        while let Some(d) = next.take() {
            if !take_chunk(&mut body, &mut rbuf, d)? {
                ended = true;
                break;
            }
            // Takes every chunk already received in this turn rather than one per turn.
            next = poll_fn(|cx| match body.poll_data(cx) {
                Poll::Ready(d) => Poll::Ready(Some(d)),
                Poll::Pending => Poll::Ready(None),
            })
            .await;
        }
        split_messages(&mut rbuf, |m| {
            let reply = read_reply(m).ok_or_else(|| {
                BenchError::proto(NAME, "an answer that is not a PublishResponse")
            })?;
            w.answer(&reply, now)
        })?;
        if ended {
            let status = end_status(&mut body).await?;
            if w.unanswered() == 0 && !sending && rbuf.is_empty() {
                break;
            }
            let status = status.map_or_else(
                || "no grpc-status".to_string(),
                |(c, m)| format!("grpc-status {c}: {m}"),
            );
            return Err(BenchError::proto(
                NAME,
                format!(
                    "the call ended with {} publishes unanswered ({status})",
                    w.unanswered()
                ),
            ));
        }
    }
    conn.abort();
    Ok(w.finish())
}

#[cfg(test)]
mod tests {
    use tickwire_proto::v1::{Error, PublishRequest, PublishResponse};

    use super::{super::request, *};
    use crate::msg::quote;

    #[test]
    fn a_request_is_the_bytes_prost_writes_for_it() {
        let mut data = Vec::new();
        quote(&mut data, 1_700_000_000_000_000, 42_042, 42, 100);
        for (id, ch) in [
            (1, "quotes.S0042"),
            (300, "quotes.S0001"),
            (u64::MAX, "q.x"),
        ] {
            let mut out = BytesMut::new();
            encode_request(&mut out, id, ch.as_bytes(), &data);
            let want = request(id, ch, &data).encode_to_vec();
            assert_eq!(out[0], 0, "not compressed");
            assert_eq!(&out[1..5], &(want.len() as u32).to_be_bytes());
            assert_eq!(&out[5..], &want[..], "id {id}");
            assert_eq!(
                PublishRequest::decode(&out[5..]).unwrap(),
                request(id, ch, &data)
            );
        }
    }

    fn bytes_of(r: &PublishResponse) -> Vec<u8> {
        r.encode_to_vec()
    }

    #[test]
    fn an_answer_is_read_as_prost_decodes_it() {
        let stored = PublishResult {
            offset: 1 << 40,
            duplicate: true,
            error: None,
        };
        let refused = PublishResult {
            error: Some(Error {
                code: "bad_data".into(),
                message: "`bid` is not a decimal".into(),
            }),
            ..PublishResult::default()
        };
        for r in [
            PublishResponse {
                id: 7,
                results: vec![stored.clone()],
            },
            PublishResponse {
                id: 8,
                results: vec![refused.clone(), stored.clone()],
            },
            PublishResponse {
                id: 0,
                results: vec![],
            },
            PublishResponse {
                id: u64::MAX,
                results: vec![stored.clone(), refused.clone()],
            },
        ] {
            assert_eq!(read_reply(&bytes_of(&r)), Some(Reply::from(&r)), "{r:?}");
        }
        // A field the publisher does not know (a newer server's) is skipped.
        let mut b = bytes_of(&PublishResponse {
            id: 9,
            results: vec![stored],
        });
        // Field 15 (bytes "hi"), then field 16 (a varint, 1) behind a two-byte key.
        b.extend_from_slice(&[(15 << 3) | 2, 2, b'h', b'i', 0x80, 0x01, 1]);
        let r = read_reply(&b).unwrap();
        assert_eq!((r.id, r.results, r.error), (9, 1, None));
    }

    #[test]
    fn bytes_that_are_not_an_answer_are_refused() {
        let good = bytes_of(&PublishResponse {
            id: 3,
            results: vec![PublishResult::default()],
        });
        // Cut anywhere inside: the result's length points past the end, or a varint is cut.
        for cut in 1..good.len() {
            if let Some(r) = read_reply(&good[..cut]) {
                // A cut between fields is a shorter answer, never a different id.
                assert!(r.id == 3 && r.results == 0, "{cut}: {r:?}");
            }
        }
        // Wire types 3 and 4 (groups) and 6 and 7 are not proto3's.
        for wt in [3u8, 4, 6, 7] {
            assert_eq!(read_reply(&[(1 << 3) | wt, 0]), None, "wire type {wt}");
        }
        assert_eq!(read_reply(&[0x08, 0xff]), None, "a varint with no end");
    }

    #[test]
    fn a_refusal_reads_as_the_server_wrote_it() {
        let mut h = HeaderMap::new();
        assert_eq!(grpc_status(&h), None);
        h.insert("grpc-status", "16".parse().unwrap());
        h.insert(
            "grpc-message",
            "the%20token%20is%20not%20a%20JWT:%20%E2%82%AC%2"
                .parse()
                .unwrap(),
        );
        assert_eq!(
            grpc_status(&h),
            Some(("16".into(), "the token is not a JWT: \u{20ac}%2".into()))
        );
    }

    #[test]
    fn messages_are_split_whole_and_a_partial_one_waits() {
        let mut buf = BytesMut::new();
        for m in [&b"ab"[..], b"", b"cde"] {
            buf.put_u8(0);
            buf.put_u32(m.len() as u32);
            buf.put_slice(m);
        }
        buf.put_slice(&[0, 0, 0, 0, 4, b'x']);
        let mut got = Vec::new();
        split_messages(&mut buf, |m| {
            got.push(m.to_vec());
            Ok(())
        })
        .unwrap();
        assert_eq!(got, [b"ab".to_vec(), vec![], b"cde".to_vec()]);
        assert_eq!(
            &buf[..],
            &[0, 0, 0, 0, 4, b'x'],
            "the partial message waits"
        );
        let mut compressed = BytesMut::from(&[1u8, 0, 0, 0, 1, b'z'][..]);
        assert!(split_messages(&mut compressed, |_| Ok(())).is_err());
        let mut huge = BytesMut::from(&[0u8, 0x7f, 0xff, 0xff, 0xff][..]);
        assert!(split_messages(&mut huge, |_| Ok(())).is_err());
    }
}
