//! An MQTT connection that is quiet for a while is parked: its serving loop is dropped and
//! its task waits with only the driver (crates/edge-mqtt/src/driver/park.rs). These tests
//! check, with raw MQTT over real sockets against the real binary, that parking happens
//! (`tickwire_mqtt_parked_connections`), that a parked connection is served again for each
//! thing that can wake it (a packet, a delivery, an acknowledgement, a takeover of its client
//! id, the keep-alive verdict, the server closing it, the client leaving), and that a packet
//! the client is halfway through sending is never cut by a park.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::{
    metric,
    mqtt::{self, connect, packet},
    publish, until_metric, Server, TIMEOUT,
};
use serde_json::json;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};

const PARKED: &str = "tickwire_mqtt_parked_connections";

/// Longer than a connection can stay quiet without being parked in the tests below: its
/// quiet period is 500 ms at first and 1 s after one wake-up soon after a park, and it parks
/// between one and two periods after its last activity.
const QUIET: Duration = Duration::from_millis(2500);

fn start(dir: &std::path::Path) -> (Server, u16) {
    let srv = Server::start(
        &dir.join("data"),
        &[],
        &[("TICKWIRE_MQTT__LISTEN", "127.0.0.1:0")],
    );
    let port = srv.mqtt_port();
    (srv, port)
}

/// Waits until `n` MQTT connections are parked, then a little longer than the base quiet
/// period: a connection woken sooner than its period after parking gets a period twice as
/// long (`tickwire_gateway::park`), and this test, which wakes its connection again and
/// again, would wait longer and longer for the next park.
async fn parked_a_while(srv: &Server, n: u64) {
    until_metric(srv, PARKED, n).await;
    tokio::time::sleep(Duration::from_millis(600)).await;
}

async fn read_packet(s: &mut TcpStream) -> (u8, Vec<u8>) {
    mqtt::read_packet(s, TIMEOUT)
        .await
        .expect("a packet from the server")
}

/// A v5 client with a clean start and a 60 s keep alive, past its CONNACK.
async fn connected(port: u16, id: &str) -> TcpStream {
    connected_with(port, id, 60).await
}

async fn connected_with(port: u16, id: &str, keep_alive: u16) -> TcpStream {
    let mut s = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    s.write_all(&connect(5, id, true, keep_alive))
        .await
        .unwrap();
    let (first, body) = read_packet(&mut s).await;
    assert_eq!((first, body[1]), (0x20, 0), "CONNACK, accepted: {body:?}");
    s
}

/// SUBSCRIBEs (packet id `pid`) to `filter` at `qos` and checks the grant.
async fn subscribe(s: &mut TcpStream, pid: u16, filter: &str, qos: u8) {
    let mut b = pid.to_be_bytes().to_vec();
    b.push(0); // no properties
    mqtt::string(&mut b, filter.as_bytes());
    b.push(qos);
    s.write_all(&packet(0x82, &b)).await.unwrap();
    let (first, body) = read_packet(s).await;
    assert_eq!(first, 0x90, "SUBACK, got {first:#x} {body:?}");
    assert_eq!(body.last(), Some(&qos), "granted: {body:?}");
}

/// Publishes `data` on `channel` over HTTP and reads the PUBLISH it becomes: (first byte,
/// topic, packet id for QoS > 0, payload).
async fn delivered(
    srv: &Server,
    s: &mut TcpStream,
    channel: &str,
    data: serde_json::Value,
) -> (u8, String, Option<[u8; 2]>, String) {
    let (status, v) = publish(srv, &json!({"channel": channel, "data": data})).await;
    assert_eq!(status, 200, "{v}");
    let (first, body) = read_packet(s).await;
    assert_eq!(first & 0xF0, 0x30, "PUBLISH, got {first:#x} {body:?}");
    let tl = usize::from(u16::from_be_bytes([body[0], body[1]]));
    let topic = String::from_utf8(body[2..2 + tl].to_vec()).unwrap();
    let mut at = 2 + tl;
    let pid = (first & 0x06 != 0).then(|| {
        at += 2;
        [body[at - 2], body[at - 1]]
    });
    let props = usize::from(body[at]); // short property lists: one length byte
    let payload = String::from_utf8(body[at + 1 + props..].to_vec()).unwrap();
    (first, topic, pid, payload)
}

/// Expects an MQTT 5 DISCONNECT with `code`, then the close.
async fn disconnected(s: &mut TcpStream, code: u8) {
    let (first, body) = read_packet(s).await;
    assert_eq!((first, body[0]), (0xE0, code), "DISCONNECT: {body:?}");
    let mut rest = [0u8; 16];
    let end = tokio::time::timeout(TIMEOUT, s.read(&mut rest)).await;
    assert!(matches!(end, Ok(Ok(0)) | Ok(Err(_))), "closed after it");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quiet_mqtt_connection_parks_and_is_served_again_by_each_wake_up() {
    let dir = tempfile::tempdir().unwrap();
    let (mut srv, port) = start(dir.path());
    let mut s = connected(port, "parker").await;
    // A new connection parks once its CONNACK is out.
    parked_a_while(&srv, 1).await;

    // A packet wakes it and is answered.
    subscribe(&mut s, 1, "quotes/PARK", 0).await;
    parked_a_while(&srv, 1).await;
    s.write_all(&[0xC0, 0x00]).await.unwrap(); // PINGREQ
    assert_eq!(read_packet(&mut s).await, (0xD0, vec![]), "PINGRESP");

    // Deliveries wake it, over several rounds of quiet and park, in order.
    for bid in ["1.5", "1.25", "1.125"] {
        parked_a_while(&srv, 1).await;
        let (_, topic, _, payload) =
            delivered(&srv, &mut s, "quotes.PARK", json!({"bid": bid, "ask": "9"})).await;
        assert_eq!(topic, "quotes/PARK");
        assert!(payload.contains(&format!("\"bid\":\"{bid}\"")), "{payload}");
    }

    // A QoS 1 delivery the client has not acknowledged yet owes the client nothing: the
    // connection parks with it in flight, and the PUBACK wakes it.
    subscribe(&mut s, 2, "chat/park", 1).await;
    parked_a_while(&srv, 1).await;
    let (first, _, pid, payload) =
        delivered(&srv, &mut s, "chat.park", json!({"text": "one"})).await;
    assert_eq!(first & 0x06, 0x02, "QoS 1");
    assert!(payload.contains("one"), "{payload}");
    parked_a_while(&srv, 1).await;
    let pid = pid.unwrap();
    s.write_all(&[0x40, 0x02, pid[0], pid[1]]).await.unwrap();
    let (_, _, _, payload) = delivered(&srv, &mut s, "chat.park", json!({"text": "two"})).await;
    assert!(payload.contains("two"), "{payload}");
    assert!(
        mqtt::read_packet(&mut s, Duration::from_millis(300))
            .await
            .is_none(),
        "acknowledged once: not sent again"
    );

    // Another connection taking the client id over reaches the parked one.
    parked_a_while(&srv, 1).await;
    let mut other = connected(port, "parker").await;
    disconnected(&mut s, 0x8E).await; // Session taken over

    // A client that leaves while parked is counted out.
    parked_a_while(&srv, 1).await;
    let _ = other.shutdown().await;
    drop(other);
    until_metric(&srv, PARKED, 0).await;

    // A server shutdown reaches a parked client as DISCONNECT "server shutting down".
    let mut last = connected(port, "last").await;
    parked_a_while(&srv, 1).await;
    let stopping = tokio::task::spawn_blocking(move || {
        let status = srv.terminate();
        (srv, status)
    });
    disconnected(&mut last, 0x8B).await;
    let (_srv, status) = stopping.await.unwrap();
    assert!(status.success(), "{status}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_packet_is_answered_at_once_none_is_cut_by_a_park_and_keep_alive_holds() {
    let dir = tempfile::tempdir().unwrap();
    let (srv, port) = start(dir.path());
    // A packet sent in the same write as CONNECT is read with it, and answered at once, not
    // left in the read buffer until the client sends something else.
    let mut eager = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let mut both = connect(5, "eager", true, 0);
    let mut sub = 1u16.to_be_bytes().to_vec();
    sub.push(0); // no properties
    mqtt::string(&mut sub, b"quotes/EAGER");
    sub.push(0);
    both.extend_from_slice(&packet(0x82, &sub));
    eager.write_all(&both).await.unwrap();
    assert_eq!(read_packet(&mut eager).await.0, 0x20, "CONNACK");
    let (first, body) = read_packet(&mut eager).await;
    assert_eq!(first, 0x90, "SUBACK, got {first:#x} {body:?}");
    drop(eager);
    until_metric(&srv, PARKED, 0).await;

    // Without a keep alive, nothing but the client's packets wakes a parked connection: each
    // is answered at once, not when something else happens to come.
    let mut idle = connected_with(port, "no-keep-alive", 0).await;
    until_metric(&srv, PARKED, 1).await;
    subscribe(&mut idle, 1, "quotes/NOKA", 0).await;
    until_metric(&srv, PARKED, 1).await;
    idle.write_all(&[0xC0, 0x00]).await.unwrap(); // PINGREQ
    assert_eq!(read_packet(&mut idle).await, (0xD0, vec![]), "PINGRESP");
    drop(idle);
    until_metric(&srv, PARKED, 0).await;

    let mut s = connected(port, "halfway").await;
    until_metric(&srv, PARKED, 1).await;

    // A QoS 1 PUBLISH, its first half held across several quiet periods.
    let mut b = Vec::new();
    mqtt::string(&mut b, b"chat/half");
    b.extend_from_slice(&7u16.to_be_bytes());
    b.push(0); // no properties
    b.extend_from_slice(br#"{"text":"held across quiet periods"}"#);
    let p = packet(0x32, &b);
    let (head, tail) = p.split_at(p.len() / 2);
    s.write_all(head).await.unwrap();
    tokio::time::sleep(QUIET).await;
    assert_eq!(
        metric(&srv, PARKED).await,
        Some(0),
        "parked in the middle of a packet"
    );
    s.write_all(tail).await.unwrap();
    let (first, body) = read_packet(&mut s).await;
    assert_eq!(first, 0x40, "PUBACK, got {first:#x} {body:?}");
    assert_eq!(&body[..2], &7u16.to_be_bytes(), "for packet 7");
    until_metric(&srv, PARKED, 1).await;

    // A parked connection whose client says nothing for 1.5 times its keep alive is
    // disconnected as any other.
    let mut sleepy = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    sleepy
        .write_all(&connect(5, "sleepy", true, 1))
        .await
        .unwrap();
    assert_eq!(read_packet(&mut sleepy).await.0, 0x20, "CONNACK");
    let t = std::time::Instant::now();
    until_metric(&srv, PARKED, 2).await;
    disconnected(&mut sleepy, 0x8D).await; // Keep alive timeout
    assert!(
        t.elapsed() >= Duration::from_millis(1400),
        "{:?}",
        t.elapsed()
    );
    until_metric(&srv, PARKED, 1).await;
    drop(srv);
}
