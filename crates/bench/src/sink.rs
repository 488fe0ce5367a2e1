//! `tickwire bench sink`: a server that only acknowledges. It answers every WebSocket command
//! with `{"id":N,"ok":true}` and every MQTT QoS 1 PUBLISH with its PUBACK (PINGREQ with
//! PINGRESP), stores and forwards nothing. A ws-publish run against it shows what one
//! publishing connection of the load generator reaches when the server costs (almost) nothing:
//! the generator's own limit, to compare a server's figure with.

use std::{net::SocketAddr, time::Duration};

use bytes::{Buf, BytesMut};
use clap::{Args, ValueEnum};
use memchr::memmem::Finder;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
};

use crate::{error::Result, msg::digits, publish::split_mqtt, BenchError};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum SinkProtocol {
    /// WebSocket (`GET /v1/ws` upgrade, then text commands).
    Ws,
    /// MQTT 3.1.1 over TCP.
    Mqtt,
}

/// `tickwire bench sink …`
#[derive(Debug, Clone, Args)]
pub struct SinkArgs {
    /// Address to listen on (loopback only).
    #[arg(long)]
    pub listen: SocketAddr,
    #[arg(long, value_enum)]
    pub protocol: SinkProtocol,
    /// Stop after this many seconds (default: run until stopped).
    #[arg(long)]
    pub seconds: Option<f64>,
}

/// Runs the sink on one thread until `--seconds` pass (or the process is stopped).
pub fn main(a: &SinkArgs) -> Result<()> {
    if !a.listen.ip().is_loopback() {
        return Err(BenchError::Usage(format!(
            "{} is not a loopback address: the sink only listens on this machine",
            a.listen
        )));
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(BenchError::io("sink runtime"))?;
    rt.block_on(async {
        let listener = TcpListener::bind(a.listen)
            .await
            .map_err(BenchError::io(format!("listen {}", a.listen)))?;
        eprintln!("sink ({:?}) listening on {}", a.protocol, a.listen);
        let serve = async {
            loop {
                let (s, _) = listener.accept().await.map_err(BenchError::io("accept"))?;
                s.set_nodelay(true).map_err(BenchError::io("nodelay"))?;
                let protocol = a.protocol;
                tokio::spawn(async move {
                    let r = match protocol {
                        SinkProtocol::Ws => ws(s).await,
                        SinkProtocol::Mqtt => mqtt(s).await,
                    };
                    if let Err(e) = r {
                        eprintln!("sink: connection ended: {e}");
                    }
                });
            }
        };
        match a.seconds {
            Some(secs) => match tokio::time::timeout(Duration::from_secs_f64(secs), serve).await {
                Ok(r) => r,
                Err(_) => Ok(()),
            },
            None => serve.await,
        }
    })
}

async fn read_more(s: &mut TcpStream, buf: &mut BytesMut) -> Result<bool> {
    buf.reserve(64 * 1024);
    Ok(s.read_buf(buf).await.map_err(BenchError::io("sink read"))? > 0)
}

async fn ws(mut s: TcpStream) -> Result<()> {
    let mut buf = BytesMut::with_capacity(64 * 1024);
    let end = loop {
        if let Some(i) = memchr::memmem::find(&buf, b"\r\n\r\n") {
            break i + 4;
        }
        if !read_more(&mut s, &mut buf).await? {
            return Ok(());
        }
    };
    buf.advance(end);
    // The load generator does not check Sec-WebSocket-Accept.
    s.write_all(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n")
        .await
        .map_err(BenchError::io("sink write"))?;
    let f_id = Finder::new(br#""id":"#);
    let mut out = Vec::with_capacity(64 * 1024);
    let mut reply = Vec::with_capacity(64);
    loop {
        // Client frames: FIN/opcode, MASK + length, extended length, 4-byte key, payload.
        loop {
            if buf.len() < 2 {
                break;
            }
            let op = buf[0] & 0x0f;
            let masked = buf[1] & 0x80 != 0;
            let (len, mut hdr) = match buf[1] & 0x7f {
                126 if buf.len() >= 4 => (usize::from(u16::from_be_bytes([buf[2], buf[3]])), 4),
                127 if buf.len() >= 10 => {
                    let mut b = [0u8; 8];
                    b.copy_from_slice(&buf[2..10]);
                    (u64::from_be_bytes(b) as usize, 10)
                }
                126 | 127 => break,
                n => (usize::from(n), 2),
            };
            let key_at = hdr;
            if masked {
                hdr += 4;
            }
            if buf.len() < hdr + len {
                break;
            }
            if masked {
                let key = [
                    buf[key_at],
                    buf[key_at + 1],
                    buf[key_at + 2],
                    buf[key_at + 3],
                ];
                if key != [0; 4] {
                    for (i, b) in buf[hdr..hdr + len].iter_mut().enumerate() {
                        *b ^= key[i % 4];
                    }
                }
            }
            match op {
                1 => {
                    let m = &buf[hdr..hdr + len];
                    if let Some(id) = f_id.find(m).and_then(|at| digits(&m[at + 5..])) {
                        reply.clear();
                        reply.extend_from_slice(br#"{"id":"#);
                        crate::msg::push_u64(&mut reply, id);
                        reply.extend_from_slice(br#","ok":true}"#);
                        out.push(0x81);
                        out.push(reply.len() as u8); // < 126: at most 20 digits
                        out.extend_from_slice(&reply);
                    }
                }
                8 => return Ok(()),
                _ => {}
            }
            buf.advance(hdr + len);
        }
        if !out.is_empty() {
            s.write_all(&out)
                .await
                .map_err(BenchError::io("sink write"))?;
            out.clear();
        }
        if !read_more(&mut s, &mut buf).await? {
            return Ok(());
        }
    }
}

async fn mqtt(mut s: TcpStream) -> Result<()> {
    let mut buf = BytesMut::with_capacity(64 * 1024);
    let mut out = Vec::with_capacity(64 * 1024);
    let mut done = false;
    loop {
        split_mqtt(&mut buf, |kind, flags, body| match kind {
            // CONNECT: CONNACK, session not present, accepted.
            1 => out.extend_from_slice(&[0x20, 0x02, 0x00, 0x00]),
            // PUBLISH: PUBACK for QoS 1 (topic length, topic, then the packet id).
            3 if (flags >> 1) & 3 == 1 && body.len() >= 2 => {
                let tl = usize::from(u16::from_be_bytes([body[0], body[1]]));
                if let Some(id) = body.get(2 + tl..4 + tl) {
                    out.extend_from_slice(&[0x40, 0x02, id[0], id[1]]);
                }
            }
            // PINGREQ
            12 => out.extend_from_slice(&[0xd0, 0x00]),
            // DISCONNECT
            14 => done = true,
            _ => {}
        });
        if !out.is_empty() {
            s.write_all(&out)
                .await
                .map_err(BenchError::io("sink write"))?;
            out.clear();
        }
        if done || !read_more(&mut s, &mut buf).await? {
            return Ok(());
        }
    }
}
