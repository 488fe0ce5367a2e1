//! A WebSocket connection that is quiet for a while is parked: its serving loop and WebSocket
//! layer are dropped and only the raw socket and the connection are kept
//! (crates/edge-http/src/ws/mod.rs). These tests check, with real sockets against the real
//! binary, that parking happens (`tickwire_ws_parked_connections`), that a parked connection
//! is served again for each thing that can wake it (a command, a delivery, the server
//! closing it, the client leaving), and that a frame or a fragmented message the client is
//! halfway through sending is never cut by a park.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::{metric, publish, raw_exchange, until_metric, Server, Ws, TIMEOUT};
use serde_json::{json, Value};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};

/// Longer than a connection can stay quiet without being parked in the test below: its
/// quiet period is 500 ms at first and 1 s after one wake-up soon after a park, and it parks
/// between one and two periods after its last activity.
const QUIET: Duration = Duration::from_millis(2500);

async fn parked(srv: &Server) -> u64 {
    metric(srv, "tickwire_ws_parked_connections")
        .await
        .expect("the parked gauge is exported")
}

/// Waits until `n` WebSocket connections are parked; panics after [`TIMEOUT`].
async fn until_parked(srv: &Server, n: u64) {
    until_metric(srv, "tickwire_ws_parked_connections", n).await;
}

/// Publishes a quote with `bid` on `channel` over HTTP and checks that `ws` receives it.
async fn delivered(srv: &Server, ws: &mut Ws, channel: &str, bid: &str) {
    let (status, v) = publish(
        srv,
        &json!({"channel":channel,"data":{"bid":bid,"ask":"9"}}),
    )
    .await;
    assert_eq!(status, 200, "{v}");
    let p = ws.push().await;
    assert_eq!(p["ch"], channel, "{p}");
    assert_eq!(p["data"]["bid"], bid, "{p}");
}

/// A client frame (RFC 6455 §5.2): masked, with the given first byte (FIN and opcode).
fn client_frame(first: u8, payload: &[u8]) -> Vec<u8> {
    let mask = [0x37u8, 0xfa, 0x21, 0x3d];
    let mut f = vec![first];
    match payload.len() {
        n @ 0..=125 => f.push(0x80 | n as u8),
        n => {
            f.push(0x80 | 126);
            f.extend_from_slice(&(n as u16).to_be_bytes());
        }
    }
    f.extend_from_slice(&mask);
    f.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    f
}

/// A raw WebSocket client: the handshake by hand, frames written byte by byte as the test
/// chooses.
async fn raw_client(srv: &Server) -> TcpStream {
    let req = format!(
        "GET /v1/ws HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
        srv.addr
    );
    let (status, head, s) = raw_exchange(srv, &req).await;
    assert_eq!(status, 101, "{head}");
    s
}

/// Reads server frames until a text frame; its JSON.
async fn read_text(s: &mut TcpStream) -> Value {
    loop {
        let mut h = [0u8; 2];
        tokio::time::timeout(TIMEOUT, s.read_exact(&mut h))
            .await
            .expect("no frame from the server")
            .unwrap();
        let len = match h[1] & 0x7f {
            126 => {
                let mut l = [0u8; 2];
                s.read_exact(&mut l).await.unwrap();
                u64::from(u16::from_be_bytes(l))
            }
            127 => {
                let mut l = [0u8; 8];
                s.read_exact(&mut l).await.unwrap();
                u64::from_be_bytes(l)
            }
            n => u64::from(n),
        };
        let mut payload = vec![0u8; len as usize];
        s.read_exact(&mut payload).await.unwrap();
        if h[0] & 0x0f == 1 {
            return serde_json::from_slice(&payload).unwrap();
        }
    }
}

/// A parked connection is served again by a command and by a delivery, and parks again
/// after each; a client that leaves while parked is gone from the server's count; a server
/// that shuts down tells a parked client why.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quiet_connection_parks_and_is_served_again_by_each_wake_up() {
    let dir = tempfile::tempdir().unwrap();
    let mut srv = Server::start(&dir.path().join("data"), &["--fsync", "never"], &[]);
    let mut ws = Ws::connect(&srv.ws_url("")).await;
    let r = ws
        .cmd(json!({"op":"subscribe","channel":"quotes.PARK"}))
        .await;
    assert_eq!(r["ok"], true, "{r}");
    until_parked(&srv, 1).await;

    // A delivery wakes it: the hub's wake-up, taken while parked, is not lost.
    delivered(&srv, &mut ws, "quotes.PARK", "1.25").await;
    until_parked(&srv, 1).await;

    // A command wakes it, and is answered.
    let r = ws
        .cmd(json!({"op":"subscribe","channel":"quotes.OTHER"}))
        .await;
    assert_eq!(r["ok"], true, "{r}");
    // Parked again, and woken by a delivery again. (A connection woken soon after each park
    // waits longer before the next, 2 s here and 4 s after; the unit test in ws/mod.rs
    // covers that rule.)
    until_parked(&srv, 1).await;
    delivered(&srv, &mut ws, "quotes.OTHER", "2.5").await;

    // A second client parks beside it; the first leaves while parked and is counted out.
    let mut other = Ws::connect(&srv.ws_url("")).await;
    until_parked(&srv, 2).await;
    drop(ws);
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    while metric(&srv, "tickwire_ws_connections").await != Some(1) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "a client that left while parked is still counted"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(parked(&srv).await, 1);

    // Shutdown reaches a parked client: a disconnect saying why, then the close.
    let stopping = tokio::task::spawn_blocking(move || {
        let status = srv.terminate();
        (srv, status)
    });
    let end = other.try_push(TIMEOUT).await;
    assert!(end.is_none(), "no push expected: {end:?}");
    let bye = other
        .closed
        .take()
        .expect("a disconnect frame before the close");
    assert_eq!(bye["code"], "unavailable", "{bye}");
    let (_srv, status) = stopping.await.unwrap();
    assert!(status.success(), "{status:?}");
}

/// Half a frame, and the first fragment of a message, held across several quiet periods:
/// the connection is not parked while it holds them, and the command they end up making is
/// read whole and answered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_half_sent_frame_or_message_is_never_cut_by_a_park() {
    let dir = tempfile::tempdir().unwrap();
    let srv = Server::start(&dir.path().join("data"), &["--fsync", "never"], &[]);
    let mut s = raw_client(&srv).await;
    until_parked(&srv, 1).await;

    // Half a frame: the header and part of the payload, then a long pause.
    let cmd = json!({"op":"subscribe","channel":"quotes.HALF","id":7}).to_string();
    let frame = client_frame(0x81, cmd.as_bytes());
    let (a, b) = frame.split_at(frame.len() / 2);
    s.write_all(a).await.unwrap();
    tokio::time::sleep(QUIET).await;
    assert_eq!(parked(&srv).await, 0, "parked in the middle of a frame");
    s.write_all(b).await.unwrap();
    let r = read_text(&mut s).await;
    assert_eq!(r["id"], 7, "{r}");
    assert_eq!(r["ok"], true, "{r}");
    until_parked(&srv, 1).await;

    // A message in two fragments, with a ping between them, and pauses.
    let cmd = json!({"op":"subscribe","channel":"quotes.FRAG","id":8}).to_string();
    let (x, y) = cmd.as_bytes().split_at(10);
    s.write_all(&client_frame(0x01, x)).await.unwrap();
    tokio::time::sleep(QUIET).await;
    assert_eq!(parked(&srv).await, 0, "parked in the middle of a message");
    s.write_all(&client_frame(0x89, b"hi")).await.unwrap();
    tokio::time::sleep(QUIET).await;
    assert_eq!(parked(&srv).await, 0, "parked in the middle of a message");
    s.write_all(&client_frame(0x80, y)).await.unwrap();
    let r = read_text(&mut s).await;
    assert_eq!(r["id"], 8, "{r}");
    assert_eq!(r["ok"], true, "{r}");
    until_parked(&srv, 1).await;

    // A command split across two writes that land in one read while parked: whole.
    let cmd = json!({"op":"unsubscribe","channel":"quotes.FRAG","id":9}).to_string();
    let frame = client_frame(0x81, cmd.as_bytes());
    s.write_all(&frame).await.unwrap();
    let r = read_text(&mut s).await;
    assert_eq!(r["id"], 9, "{r}");
    assert_eq!(r["ok"], true, "{r}");
}
