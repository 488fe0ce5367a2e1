//! Just enough of each wire protocol to drive a server from a load generator, spoken directly
//! over tokio TCP so the generator stays lean and its per-message cost is a few comparisons:
//! WebSocket (client side, RFC 6455) + HTTP/1.1 for Tickwire, the NATS text protocol, and
//! MQTT 3.1.1 QoS 0 (packets built with tickwire-mqtt, PUBLISH parsed by hand on the hot path).

use std::net::{IpAddr, SocketAddr};

use bytes::{Buf, BytesMut};
use tickwire_mqtt as mqtt;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpSocket, TcpStream},
};

use crate::{error::Result, BenchError, Target};

/// Opens a TCP connection to `addr`, from `source` when given: one source address can hold only
/// ~28k connections to one server port (the ephemeral range), so big idle runs spread over
/// 127.0.0.x.
pub async fn tcp(addr: SocketAddr, source: Option<IpAddr>) -> Result<TcpStream> {
    let mut sock = TcpSocket::new_v4().map_err(BenchError::io("socket"))?;
    if let Some(first) = source {
        // A source address whose ephemeral ports an earlier run's sockets still hold (TIME_WAIT
        // lasts a minute, and run ids can repeat) refuses the bind: the next second octet is as
        // good (all of 127/8 is loopback).
        let mut ip = first;
        let mut tries = 0;
        loop {
            match sock.bind(SocketAddr::new(ip, 0)) {
                Ok(()) => break,
                Err(e) if e.kind() == std::io::ErrorKind::AddrInUse && tries < 16 => {
                    tries += 1;
                    ip = match ip {
                        IpAddr::V4(v4) => {
                            let [a, b, c, d] = v4.octets();
                            IpAddr::V4(std::net::Ipv4Addr::new(a, b % 250 + 1, c, d))
                        }
                        other => other,
                    };
                    sock = TcpSocket::new_v4().map_err(BenchError::io("socket"))?;
                }
                Err(e) => return Err(BenchError::io(format!("bind {ip}"))(e)),
            }
        }
    }
    let s = sock
        .connect(addr)
        .await
        .map_err(BenchError::io(format!("connect {addr}")))?;
    s.set_nodelay(true).map_err(BenchError::io("nodelay"))?;
    Ok(s)
}

/// The channel (topic, subject) of symbol `i` on a target.
pub fn channel(target: Target, i: usize) -> String {
    match target {
        Target::Mqtt => format!("quotes/{}", crate::msg::symbol(i)),
        _ => format!("quotes.{}", crate::msg::symbol(i)),
    }
}

/// Appends a masked client WebSocket text frame. The mask key is zero: a client must mask, but
/// the key's only purpose is defeating broken proxies, and a zero key leaves the payload as is.
pub fn ws_frame(out: &mut Vec<u8>, payload: &[u8]) {
    ws_frame_op(out, 0x81, payload);
}

/// [`ws_frame`] as a binary frame (the `tickwire.v1.proto` encoding's commands).
pub fn ws_frame_binary(out: &mut Vec<u8>, payload: &[u8]) {
    ws_frame_op(out, 0x82, payload);
}

fn ws_frame_op(out: &mut Vec<u8>, first: u8, payload: &[u8]) {
    out.push(first);
    let n = payload.len();
    if n < 126 {
        out.push(0x80 | n as u8);
    } else if n <= 0xffff {
        out.push(0x80 | 126);
        out.extend_from_slice(&(n as u16).to_be_bytes());
    } else {
        out.push(0x80 | 127);
        out.extend_from_slice(&(n as u64).to_be_bytes());
    }
    out.extend_from_slice(&[0, 0, 0, 0]);
    out.extend_from_slice(payload);
}

/// Appends an MQTT 3.1.1 PUBLISH of `payload` to `quotes/<symbol>`: QoS 0 without a packet id,
/// QoS 1 with `Some(id)` (1..=65535). Built by hand: the publishers call it per message.
pub fn mqtt_publish(out: &mut Vec<u8>, sym: usize, packet_id: Option<u16>, payload: &[u8]) {
    // "quotes/" + `S` + at least 4 digits, as push_symbol writes it.
    let digits = itoa::Buffer::new().format(sym).len();
    let tl = 7 + 1 + digits.max(4);
    let rem = 2 + tl + packet_id.map_or(0, |_| 2) + payload.len();
    out.push(if packet_id.is_some() { 0x32 } else { 0x30 });
    let mut x = rem;
    loop {
        let mut b = (x % 128) as u8;
        x /= 128;
        if x > 0 {
            b |= 0x80;
        }
        out.push(b);
        if x == 0 {
            break;
        }
    }
    out.extend_from_slice(&(tl as u16).to_be_bytes());
    out.extend_from_slice(b"quotes/");
    crate::msg::push_symbol(out, sym);
    if let Some(id) = packet_id {
        out.extend_from_slice(&id.to_be_bytes());
    }
    out.extend_from_slice(payload);
}

/// `GET path` on a fresh HTTP/1.1 connection; the body of a 2xx answer.
pub async fn http_get(addr: SocketAddr, path: &str) -> Result<String> {
    let mut c = Conn {
        stream: tcp(addr, None).await?,
        buf: BytesMut::with_capacity(16 * 1024),
        target: Target::TickwireWs,
        pong: false,
        proto: false,
    };
    c.send(format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").as_bytes())
        .await?;
    let body = http_response_body(&mut c).await?;
    Ok(String::from_utf8_lossy(&body).into_owned())
}

/// A connection that receives messages.
pub struct Conn {
    pub stream: TcpStream,
    pub buf: BytesMut,
    target: Target,
    pong: bool,
    /// A Tickwire WebSocket speaking the binary encoding (`tickwire.v1.proto`).
    proto: bool,
}

/// The subprotocol of Tickwire's binary WebSocket encoding.
const PROTO_SUBPROTOCOL: &str = "tickwire.v1.proto";

impl Conn {
    /// A plain keep-alive TCP connection to Tickwire's HTTP API (no upgrade).
    pub async fn http(addr: SocketAddr) -> Result<Conn> {
        Ok(Conn {
            stream: tcp(addr, None).await?,
            buf: BytesMut::with_capacity(64 * 1024),
            target: Target::TickwireWs,
            pong: false,
            proto: false,
        })
    }

    /// Connects and completes the protocol handshake (WebSocket upgrade, NATS CONNECT, MQTT
    /// CONNECT/CONNACK).
    pub async fn connect(target: Target, addr: SocketAddr, source: Option<IpAddr>) -> Result<Conn> {
        Conn::connect_as(target, addr, source, false).await
    }

    /// [`Conn::connect`]; a Tickwire WebSocket asks for the binary encoding when `proto`.
    pub async fn connect_as(
        target: Target,
        addr: SocketAddr,
        source: Option<IpAddr>,
        proto: bool,
    ) -> Result<Conn> {
        let proto = proto && target == Target::TickwireWs;
        let mut stream = tcp(addr, source).await?;
        let mut buf = BytesMut::with_capacity(16 * 1024);
        let name = target.name();
        match target {
            Target::TickwireGrpc => return Err(not_a_socket()),
            Target::TickwireWs => {
                let subprotocol = if proto {
                    format!("Sec-WebSocket-Protocol: {PROTO_SUBPROTOCOL}\r\n")
                } else {
                    String::new()
                };
                let req = format!(
                    "GET /v1/ws HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n{subprotocol}{}\r\n",
                    authorization(CLIENT_CREDENTIAL)
                );
                stream
                    .write_all(req.as_bytes())
                    .await
                    .map_err(BenchError::io("ws upgrade"))?;
                let end = read_until(&mut stream, &mut buf, b"\r\n\r\n", name).await?;
                if !buf.starts_with(b"HTTP/1.1 101") {
                    let head = String::from_utf8_lossy(&buf[..end.min(200)]).into_owned();
                    return Err(BenchError::proto(name, format!("upgrade refused: {head}")));
                }
                // A server that does not speak the binary encoding answers in JSON: measuring
                // that as "proto" would be wrong.
                if proto
                    && memchr::memmem::find(&buf[..end], PROTO_SUBPROTOCOL.as_bytes()).is_none()
                {
                    return Err(BenchError::proto(
                        name,
                        format!("the server did not choose {PROTO_SUBPROTOCOL}"),
                    ));
                }
                buf.advance(end);
            }
            Target::Nats | Target::JetStream => {
                // Headers only where a publisher sends them (JetStream atomic batches): core
                // NATS subscribers then never see HMSG.
                let connect: &[u8] = if target == Target::JetStream {
                    b"CONNECT {\"verbose\":false,\"pedantic\":false,\"headers\":true}\r\nPING\r\n"
                } else {
                    b"CONNECT {\"verbose\":false,\"pedantic\":false,\"headers\":false}\r\nPING\r\n"
                };
                stream
                    .write_all(connect)
                    .await
                    .map_err(BenchError::io("nats connect"))?;
                let end = read_until(&mut stream, &mut buf, b"PONG\r\n", name).await?;
                if memchr::memmem::find(&buf[..end], b"-ERR").is_some() {
                    return Err(BenchError::proto(
                        name,
                        String::from_utf8_lossy(&buf[..end]).into_owned(),
                    ));
                }
                buf.advance(end);
            }
            Target::Mqtt => {
                let connect = mqtt::Packet::Connect(mqtt::Connect {
                    protocol: mqtt::ProtocolVersion::V4,
                    clean_start: true,
                    keep_alive: 0,
                    client_id: String::new(),
                    will: None,
                    username: None,
                    password: None,
                    properties: Default::default(),
                });
                let mut out = BytesMut::new();
                mqtt::encode(&connect, mqtt::ProtocolVersion::V4, &mut out)
                    .map_err(|e| BenchError::proto(name, e.to_string()))?;
                stream
                    .write_all(&out)
                    .await
                    .map_err(BenchError::io("mqtt connect"))?;
                loop {
                    match mqtt::decode(&mut buf, mqtt::ProtocolVersion::V4, 1 << 20)
                        .map_err(|e| BenchError::proto(name, e.to_string()))?
                    {
                        Some(mqtt::Packet::ConnAck(_)) => break,
                        Some(p) => {
                            return Err(BenchError::proto(name, format!("expected CONNACK: {p:?}")))
                        }
                        None => fill(&mut stream, &mut buf, 4096, name).await?,
                    }
                }
            }
        }
        Ok(Conn {
            stream,
            buf,
            target,
            pong: false,
            proto,
        })
    }

    /// Subscribes to the symbols and waits until the server confirmed every subscription.
    pub async fn subscribe(&mut self, symbols: &[usize]) -> Result<()> {
        let name = self.target.name();
        let mut out = Vec::new();
        match self.target {
            Target::TickwireGrpc => return Err(not_a_socket()),
            Target::TickwireWs if self.proto => {
                use prost::Message as _;
                use tickwire_proto::v1::{client_message::Op, server_message::Kind};
                for (k, &s) in symbols.iter().enumerate() {
                    let cmd = tickwire_proto::v1::ClientMessage {
                        id: k as u64,
                        op: Some(Op::Subscribe(tickwire_proto::v1::Subscription {
                            channel: channel(self.target, s),
                            ..Default::default()
                        })),
                    };
                    ws_frame_binary(&mut out, &cmd.encode_to_vec());
                }
                self.send(&out).await?;
                let mut acked = 0;
                let mut err = None;
                while acked < symbols.len() {
                    self.read_some(usize::MAX, |m: &[u8]| {
                        // Replies are counted; pushes (snapshots) may arrive too.
                        match tickwire_proto::v1::ServerMessage::decode(m).map(|m| m.kind) {
                            Ok(Some(Kind::Reply(r))) if r.ok => acked += 1,
                            Ok(Some(Kind::Reply(r))) => err = Some(format!("{:?}", r.error)),
                            Ok(_) => {}
                            Err(e) => err = Some(e.to_string()),
                        }
                    })
                    .await?;
                    if let Some(e) = err.take() {
                        return Err(BenchError::proto(name, format!("subscribe refused: {e}")));
                    }
                }
            }
            Target::TickwireWs => {
                for (k, &s) in symbols.iter().enumerate() {
                    let cmd = format!(
                        r#"{{"id":{k},"op":"subscribe","channel":"{}"}}"#,
                        channel(self.target, s)
                    );
                    ws_frame(&mut out, cmd.as_bytes());
                }
                self.send(&out).await?;
                let mut acked = 0;
                let mut err = None;
                while acked < symbols.len() {
                    self.read_some(usize::MAX, |m: &[u8]| {
                        // Replies carry "ok"; pushes start with {"ch": (snapshots may arrive too).
                        if !m.starts_with(br#"{"ch":"#) {
                            if memchr::memmem::find(m, br#""ok":true"#).is_some() {
                                acked += 1;
                            } else {
                                err = Some(String::from_utf8_lossy(m).into_owned());
                            }
                        }
                    })
                    .await?;
                    if let Some(e) = err.take() {
                        return Err(BenchError::proto(name, format!("subscribe refused: {e}")));
                    }
                }
            }
            Target::Nats | Target::JetStream => {
                for (k, &s) in symbols.iter().enumerate() {
                    out.extend_from_slice(
                        format!("SUB {} {}\r\n", channel(self.target, s), k + 1).as_bytes(),
                    );
                }
                out.extend_from_slice(b"PING\r\n");
                self.send(&out).await?;
                let end = read_until(&mut self.stream, &mut self.buf, b"PONG\r\n", name).await?;
                self.buf.advance(end);
            }
            Target::Mqtt => {
                let mut enc = BytesMut::new();
                for chunk in symbols.chunks(64) {
                    let sub = mqtt::Packet::Subscribe(mqtt::Subscribe {
                        packet_id: 1,
                        filters: chunk
                            .iter()
                            .map(|&s| {
                                mqtt::SubscribeFilter::new(
                                    channel(self.target, s),
                                    mqtt::QoS::AtMostOnce,
                                )
                            })
                            .collect(),
                        properties: Default::default(),
                    });
                    mqtt::encode(&sub, mqtt::ProtocolVersion::V4, &mut enc)
                        .map_err(|e| BenchError::proto(name, e.to_string()))?;
                }
                self.send(&enc).await?;
                let want = symbols.len().div_ceil(64);
                let mut got = 0;
                while got < want {
                    match mqtt::decode(&mut self.buf, mqtt::ProtocolVersion::V4, 1 << 20)
                        .map_err(|e| BenchError::proto(name, e.to_string()))?
                    {
                        Some(mqtt::Packet::SubAck(_)) => got += 1,
                        Some(_) => {}
                        None => fill(&mut self.stream, &mut self.buf, 4096, name).await?,
                    }
                }
            }
        }
        Ok(())
    }

    /// The socket and whatever was read past the handshake, for a caller that reads and writes
    /// on its own.
    pub fn into_parts(self) -> (TcpStream, BytesMut) {
        (self.stream, self.buf)
    }

    pub async fn send(&mut self, bytes: &[u8]) -> Result<()> {
        self.stream
            .write_all(bytes)
            .await
            .map_err(BenchError::io(self.target.name()))
    }

    /// Reads once (at most `chunk` bytes) and hands every complete message payload to `f`.
    /// Returns false at end of stream.
    pub async fn read_some(&mut self, chunk: usize, mut f: impl FnMut(&[u8])) -> Result<bool> {
        let name = self.target.name();
        let chunk = chunk.min(256 * 1024);
        self.buf.reserve(chunk.min(64 * 1024));
        let n = if chunk < self.buf.capacity() - self.buf.len() {
            let mut limited = (&mut self.stream).take(chunk as u64);
            limited.read_buf(&mut self.buf).await
        } else {
            self.stream.read_buf(&mut self.buf).await
        }
        .map_err(BenchError::io(name))?;
        if n == 0 {
            return Ok(false);
        }
        let open = match self.target {
            Target::TickwireWs => parse_ws(&mut self.buf, &mut f),
            Target::Nats | Target::JetStream => {
                parse_nats(&mut self.buf, &mut self.pong, &mut f, name)?
            }
            Target::Mqtt => parse_mqtt(&mut self.buf, &mut f, name)?,
            Target::TickwireGrpc => return Err(not_a_socket()),
        };
        if self.pong {
            self.pong = false;
            self.send(b"PONG\r\n").await?;
        }
        Ok(open)
    }
}

/// What a reader saw in one read, as a verdict: the refusal it noted fails the run, then a
/// closed connection does.
pub(crate) fn after_read(name: &str, refused: Option<String>, open: bool) -> Result<()> {
    if let Some(why) = refused {
        return Err(BenchError::proto(name, why));
    }
    if !open {
        return Err(BenchError::proto(name, "the server closed the connection"));
    }
    Ok(())
}

async fn fill(stream: &mut TcpStream, buf: &mut BytesMut, n: usize, name: &str) -> Result<()> {
    buf.reserve(n);
    let got = stream.read_buf(buf).await.map_err(BenchError::io(name))?;
    if got == 0 {
        return Err(BenchError::proto(name, "connection closed"));
    }
    Ok(())
}

/// Reads until `pat` appears; returns the index just past it.
async fn read_until(
    stream: &mut TcpStream,
    buf: &mut BytesMut,
    pat: &[u8],
    name: &str,
) -> Result<usize> {
    loop {
        if let Some(i) = memchr::memmem::find(buf, pat) {
            return Ok(i + pat.len());
        }
        if buf.len() > 1 << 20 {
            return Err(BenchError::proto(name, "no end of handshake"));
        }
        fill(stream, buf, 4096, name).await?;
    }
}

/// Server-to-client frames are unmasked. Text and binary payloads go to `f`; close ends.
pub(crate) fn parse_ws(buf: &mut BytesMut, f: &mut impl FnMut(&[u8])) -> bool {
    loop {
        if buf.len() < 2 {
            return true;
        }
        let op = buf[0] & 0x0f;
        let (len, hdr) = match buf[1] & 0x7f {
            126 if buf.len() >= 4 => (usize::from(u16::from_be_bytes([buf[2], buf[3]])), 4),
            127 if buf.len() >= 10 => {
                let mut b = [0u8; 8];
                b.copy_from_slice(&buf[2..10]);
                (u64::from_be_bytes(b) as usize, 10)
            }
            126 | 127 => return true,
            n => (usize::from(n), 2),
        };
        if buf.len() < hdr + len {
            return true;
        }
        match op {
            0..=2 => f(&buf[hdr..hdr + len]),
            8 => return false,
            _ => {}
        }
        buf.advance(hdr + len);
    }
}

fn parse_nats(
    buf: &mut BytesMut,
    pong: &mut bool,
    f: &mut impl FnMut(&[u8]),
    name: &str,
) -> Result<bool> {
    loop {
        let Some(eol) = memchr::memmem::find(buf, b"\r\n") else {
            return Ok(true);
        };
        let line = &buf[..eol];
        if line.starts_with(b"MSG ") || line.starts_with(b"HMSG ") {
            // MSG <subject> <sid> [reply-to] <#bytes>; HMSG ... <#header bytes> <#total bytes>:
            // the last number is the length of what follows either way, and the callback gets
            // it whole (headers and payload: a status header is how an HMSG reply fails).
            let len_at = line.iter().rposition(|&c| c == b' ').unwrap_or(0) + 1;
            let len = std::str::from_utf8(&line[len_at..])
                .ok()
                .and_then(|s| s.parse::<usize>().ok())
                .ok_or_else(|| BenchError::proto(name, "bad MSG/HMSG line"))?;
            let start = eol + 2;
            if buf.len() < start + len + 2 {
                return Ok(true);
            }
            f(&buf[start..start + len]);
            buf.advance(start + len + 2);
        } else {
            if line.starts_with(b"PING") {
                *pong = true;
            } else if line.starts_with(b"-ERR") {
                let e = String::from_utf8_lossy(line).into_owned();
                return Err(BenchError::proto(name, e));
            }
            buf.advance(eol + 2);
        }
    }
}

/// QoS 0 PUBLISH is parsed here by hand (no topic allocation); anything else goes through the
/// codec and is ignored.
fn parse_mqtt(buf: &mut BytesMut, f: &mut impl FnMut(&[u8]), name: &str) -> Result<bool> {
    loop {
        if buf.len() < 2 {
            return Ok(true);
        }
        let mut len = 0usize;
        let mut shift = 0;
        let mut i = 1;
        loop {
            if i >= buf.len() || i > 4 {
                return Ok(true);
            }
            let b = buf[i];
            len |= usize::from(b & 0x7f) << shift;
            shift += 7;
            i += 1;
            if b & 0x80 == 0 {
                break;
            }
        }
        if buf.len() < i + len {
            return Ok(true);
        }
        if buf[0] >> 4 == 3 && buf[0] & 0x06 == 0 {
            let body = &buf[i..i + len];
            if body.len() < 2 {
                return Err(BenchError::proto(name, "short PUBLISH"));
            }
            let tl = usize::from(u16::from_be_bytes([body[0], body[1]]));
            if body.len() < 2 + tl {
                return Err(BenchError::proto(name, "bad PUBLISH topic length"));
            }
            f(&body[2 + tl..]);
        }
        buf.advance(i + len);
    }
}

/// Reads one HTTP/1.1 response with a Content-Length body; an error unless 2xx. Returns the
/// body's length.
pub(crate) async fn http_response(c: &mut Conn) -> Result<usize> {
    Ok(http_response_body(c).await?.len())
}

/// [`http_response`], returning the body itself.
async fn http_response_body(c: &mut Conn) -> Result<BytesMut> {
    let name = "tickwire http";
    let end = read_until(&mut c.stream, &mut c.buf, b"\r\n\r\n", name).await?;
    let head = String::from_utf8_lossy(&c.buf[..end]).into_owned();
    let len = head
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("content-length")
                .then(|| v.trim().parse::<usize>().ok())
                .flatten()
        })
        .unwrap_or(0);
    while c.buf.len() < end + len {
        let missing = end + len - c.buf.len();
        fill(&mut c.stream, &mut c.buf, missing.max(4096), name).await?;
    }
    let ok = head.starts_with("HTTP/1.1 2");
    if !ok {
        let body = String::from_utf8_lossy(&c.buf[end..(end + len).min(end + 300)]).into_owned();
        return Err(BenchError::proto(
            name,
            format!("{} {body}", head.lines().next().unwrap_or("")),
        ));
    }
    let mut body = c.buf.split_to(end + len);
    body.advance(end);
    Ok(body)
}

/// The credential subscribers present at the WebSocket upgrade (a JWT), from the environment,
/// so a run can measure fan-out with identities on against the open configuration.
pub(crate) const CLIENT_CREDENTIAL: &str = "TICKWIRE_BENCH_TOKEN";
/// The credential the HTTP publishers present (an API key with the `publish` scope).
pub(crate) const PUBLISHER_CREDENTIAL: &str = "TICKWIRE_BENCH_API_KEY";

/// The gRPC target is a tonic client (grpc.rs), never one of these hand-spoken connections;
/// the run's validation keeps it out of every scenario but ws-publish, so this is a guard.
pub(crate) fn not_a_socket() -> BenchError {
    BenchError::Usage("tickwire-grpc is a gRPC call, not a raw connection: ws-publish only".into())
}

/// `Authorization: Bearer ...` and its line end, or nothing when `var` is unset.
pub(crate) fn authorization(var: &str) -> String {
    match std::env::var(var) {
        Ok(v) if !v.is_empty() => format!("Authorization: Bearer {v}\r\n"),
        _ => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `wire` to `parse` cut at every byte boundary (what a socket may hand over) and
    /// returns the messages it produced; each cut must give the same messages.
    fn every_split(
        wire: &[u8],
        mut parse: impl FnMut(&mut BytesMut, &mut dyn FnMut(&[u8])) -> bool,
    ) -> Vec<Vec<u8>> {
        let mut first: Option<Vec<Vec<u8>>> = None;
        for cut in 0..=wire.len() {
            let mut buf = BytesMut::new();
            let mut got = Vec::new();
            for part in [&wire[..cut], &wire[cut..]] {
                buf.extend_from_slice(part);
                assert!(parse(&mut buf, &mut |m| got.push(m.to_vec())));
            }
            assert!(buf.is_empty(), "cut {cut}: {} bytes left", buf.len());
            match &first {
                None => first = Some(got),
                Some(f) => assert_eq!(f, &got, "cut {cut}"),
            }
        }
        first.unwrap_or_default()
    }

    #[test]
    fn nats_parser_yields_each_message_once_however_the_bytes_arrive() {
        let wire = b"MSG quotes.S0001 1 5\r\nhello\r\nPING\r\n+OK\r\n\
MSG quotes.S0002 1 _INBOX.x 0\r\n\r\n\
HMSG _INBOX.b0.1 1 12 16\r\nNATS/1.0\r\n\r\nbody\r\n\
MSG a 1 7\r\nwith\r\nx\r\n";
        let mut pongs = 0;
        let got = every_split(wire, |buf, f| {
            let mut pong = false;
            let open = parse_nats(buf, &mut pong, &mut |m| f(m), "nats").unwrap_or(false);
            pongs += usize::from(pong);
            open
        });
        let want: Vec<Vec<u8>> = vec![
            b"hello".to_vec(),
            Vec::new(),
            b"NATS/1.0\r\n\r\nbody".to_vec(),
            b"with\r\nx".to_vec(),
        ];
        assert_eq!(got, want);
        // One PING per pass, answered once per pass.
        assert_eq!(pongs, wire.len() + 1);
    }

    #[test]
    fn nats_parser_fails_on_err_and_on_a_bad_length() {
        let mut pong = false;
        let mut buf = BytesMut::from(&b"-ERR 'Slow Consumer'\r\n"[..]);
        assert!(parse_nats(&mut buf, &mut pong, &mut |_| {}, "nats").is_err());
        let mut buf = BytesMut::from(&b"MSG a 1 x\r\n"[..]);
        assert!(parse_nats(&mut buf, &mut pong, &mut |_| {}, "nats").is_err());
    }

    fn ws_frame(op: u8, payload: &[u8]) -> Vec<u8> {
        let mut f = vec![0x80 | op];
        match payload.len() {
            n if n < 126 => f.push(n as u8),
            n if n <= 0xffff => {
                f.push(126);
                f.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                f.push(127);
                f.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        f.extend_from_slice(payload);
        f
    }

    #[test]
    fn websocket_parser_yields_text_and_binary_and_skips_control_frames() {
        let big = vec![b'x'; 300];
        let mut wire = ws_frame(1, b"{\"t\":\"1\"}");
        wire.extend(ws_frame(9, b"ping"));
        wire.extend(ws_frame(2, &big));
        wire.extend(ws_frame(1, b""));
        let got = every_split(&wire, |buf, f| parse_ws(buf, &mut |m| f(m)));
        assert_eq!(got, vec![b"{\"t\":\"1\"}".to_vec(), big, Vec::new()]);
        // A close frame ends the connection.
        let mut buf = BytesMut::from(&ws_frame(8, b"")[..]);
        assert!(!parse_ws(&mut buf, &mut |_| {}));
    }

    #[test]
    fn mqtt_parser_yields_qos0_payloads_whatever_the_split() {
        let mut wire = Vec::new();
        mqtt_publish(&mut wire, 7, None, b"first");
        mqtt_publish(&mut wire, 8, None, &[b'y'; 200]);
        let got = every_split(&wire, |buf, f| {
            parse_mqtt(buf, &mut |m| f(m), "mqtt").unwrap_or(false)
        });
        assert_eq!(got, vec![b"first".to_vec(), vec![b'y'; 200]]);
    }

    #[test]
    fn hand_built_publish_decodes_with_the_codec() {
        for (sym, id) in [(42, None), (42, Some(7u16)), (123_456, Some(65_535))] {
            let payload = br#"{"t":"1","s":"2","bid":"1.08","ask":"1.09"}"#;
            let mut out = Vec::new();
            mqtt_publish(&mut out, sym, id, payload);
            let mut buf = BytesMut::from(&out[..]);
            let p = mqtt::decode(&mut buf, mqtt::ProtocolVersion::V4, 1 << 20);
            let Ok(Some(mqtt::Packet::Publish(p))) = p else {
                panic!("not a PUBLISH: {p:?}");
            };
            assert!(buf.is_empty());
            assert_eq!(p.topic, format!("quotes/{}", crate::msg::symbol(sym)));
            assert_eq!(p.packet_id, id.unwrap_or(0));
            let qos = if id.is_some() {
                mqtt::QoS::AtLeastOnce
            } else {
                mqtt::QoS::AtMostOnce
            };
            assert_eq!(p.qos, qos);
            assert_eq!(&p.payload[..], &payload[..]);
        }
    }
}
