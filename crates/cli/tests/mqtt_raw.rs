//! MQTT edge against raw bytes over TCP: malformed, oversize and protocol-violating packets get
//! the right reason code and a disconnect, never a panic or a stuck connection; the server
//! keeps serving others afterwards. And what it keeps of persistent sessions: across a kill -9,
//! and until they expire.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::{
    get_json,
    mqtt::{self, connect, packet, varint},
    Server, TIMEOUT,
};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};

fn start(dir: &std::path::Path) -> (Server, u16) {
    let srv = Server::start(
        &dir.join("data"),
        &[],
        &[
            ("TICKWIRE_MQTT__LISTEN", "127.0.0.1:0"),
            ("TICKWIRE_MQTT__MAX_PACKET_BYTES", "1024"),
        ],
    );
    let port = srv.mqtt_port();
    (srv, port)
}

/// Reads one packet: (first byte, body). `None` when the server closed the connection.
async fn read_packet(s: &mut TcpStream) -> Option<(u8, Vec<u8>)> {
    mqtt::read_packet(s, TIMEOUT).await
}

async fn closed(s: &mut TcpStream) -> bool {
    let mut buf = [0u8; 64];
    matches!(
        tokio::time::timeout(TIMEOUT, s.read(&mut buf)).await,
        Ok(Ok(0)) | Ok(Err(_))
    )
}

async fn connected(port: u16, level: u8, id: &str) -> TcpStream {
    let mut s = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    s.write_all(&connect(level, id, true, 60)).await.unwrap();
    let (first, body) = read_packet(&mut s).await.unwrap();
    assert_eq!(first, 0x20, "CONNACK");
    assert_eq!(body[1], 0, "accepted");
    s
}

/// Expects an MQTT 5 DISCONNECT with `code`, then the close.
async fn expect_disconnect(s: &mut TcpStream, code: u8) {
    let (first, body) = read_packet(s).await.expect("DISCONNECT before the close");
    assert_eq!(first, 0xE0, "DISCONNECT, got {first:#x} {body:?}");
    assert_eq!(body[0], code, "reason code {:#x}, body {body:?}", body[0]);
    assert!(closed(s).await, "connection closed after DISCONNECT");
}

#[tokio::test]
async fn bad_packets_get_reason_codes_and_a_disconnect() {
    let dir = tempfile::tempdir().unwrap();
    let (srv, port) = start(dir.path());

    // Oversize: remaining length above max_packet_bytes (1024) → 0x95 before the body arrives.
    let mut s = connected(port, 5, "big").await;
    let mut p = vec![0x30];
    varint(4000, &mut p);
    s.write_all(&p).await.unwrap();
    expect_disconnect(&mut s, 0x95).await;

    // Reserved packet type 0 → 0x81 Malformed Packet.
    let mut s = connected(port, 5, "reserved").await;
    s.write_all(&[0x00, 0x00]).await.unwrap();
    expect_disconnect(&mut s, 0x81).await;

    // A variable byte integer longer than 4 bytes → 0x81.
    let mut s = connected(port, 5, "varint").await;
    s.write_all(&[0x30, 0xff, 0xff, 0xff, 0xff, 0x01])
        .await
        .unwrap();
    expect_disconnect(&mut s, 0x81).await;

    // Second CONNECT → 0x82 Protocol Error.
    let mut s = connected(port, 5, "twice").await;
    s.write_all(&connect(5, "twice", true, 60)).await.unwrap();
    expect_disconnect(&mut s, 0x82).await;

    // PUBLISH QoS 1 with packet id 0 → 0x82.
    let mut s = connected(port, 5, "pid0").await;
    s.write_all(&packet(0x32, &[0, 3, b'a', b'/', b'b', 0, 0, 0, b'1']))
        .await
        .unwrap();
    expect_disconnect(&mut s, 0x82).await;

    // A wildcard in a PUBLISH topic → 0x90 Topic Name invalid.
    let mut s = connected(port, 5, "wild").await;
    s.write_all(&packet(
        0x30,
        &[0, 6, b'c', b'h', b'a', b't', b'/', b'+', 0, b'1'],
    ))
    .await
    .unwrap();
    expect_disconnect(&mut s, 0x90).await;

    // MQTT 3.1.1 has no DISCONNECT from the server: a malformed packet just closes.
    let mut s = connected(port, 4, "v4bad").await;
    s.write_all(&[0x82, 0x00]).await.unwrap(); // SUBSCRIBE with wrong flags
    assert!(closed(&mut s).await);

    // Protocol level 3 (MQIsdp) → 3.1.1 CONNACK 0x01 unacceptable protocol version.
    let mut s = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let mut b = vec![
        0, 6, b'M', b'Q', b'I', b's', b'd', b'p', 3, 2, 0, 60, 0, 1, b'x',
    ];
    b = packet(0x10, &std::mem::take(&mut b));
    s.write_all(&b).await.unwrap();
    assert_eq!(read_packet(&mut s).await, Some((0x20, vec![0, 1])));
    assert!(closed(&mut s).await);

    // 3.1.1 empty client id with clean session 0 → CONNACK 0x02 identifier rejected.
    let mut s = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    s.write_all(&connect(4, "", false, 60)).await.unwrap();
    assert_eq!(read_packet(&mut s).await, Some((0x20, vec![0, 2])));
    assert!(closed(&mut s).await);

    // A first packet that is not CONNECT: closed.
    let mut s = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    s.write_all(&[0xC0, 0x00]).await.unwrap();
    assert!(closed(&mut s).await);

    // Unknown namespace / bad characters: SUBACK failure, connection stays.
    let mut s = connected(port, 5, "subs").await;
    let mut body = vec![0, 7, 0];
    for f in ["nope/x", "chat/a b", "chat/lobby"] {
        body.extend_from_slice(&(f.len() as u16).to_be_bytes());
        body.extend_from_slice(f.as_bytes());
        body.push(1);
    }
    s.write_all(&packet(0x82, &body)).await.unwrap();
    let (first, body) = read_packet(&mut s).await.unwrap();
    assert_eq!(first, 0x90, "SUBACK");
    let props = body[2] as usize;
    assert!(String::from_utf8_lossy(&body[3..3 + props]).contains("unknown namespace"));
    assert_eq!(&body[3 + props..], &[0x8F, 0x8F, 0x01]);
    let mut v4 = connected(port, 4, "subs4").await;
    let mut body = vec![0, 8];
    body.extend_from_slice(&[0, 6]);
    body.extend_from_slice(b"nope/x");
    body.push(1);
    v4.write_all(&packet(0x82, &body)).await.unwrap();
    assert_eq!(read_packet(&mut v4).await, Some((0x90, vec![0, 8, 0x80])));

    // Keep alive 1 s and silence → 0x8D after 1.5 s.
    let mut s = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    s.write_all(&connect(5, "sleepy", true, 1)).await.unwrap();
    assert_eq!(read_packet(&mut s).await.unwrap().0, 0x20);
    let t = std::time::Instant::now();
    expect_disconnect(&mut s, 0x8D).await;
    assert!(
        t.elapsed() >= Duration::from_millis(1400),
        "{:?}",
        t.elapsed()
    );

    // Still serving: PINGREQ answered on a fresh connection.
    let mut s = connected(port, 5, "after").await;
    s.write_all(&[0xC0, 0x00]).await.unwrap();
    assert_eq!(read_packet(&mut s).await, Some((0xD0, vec![])));
    drop(srv);
}

/// A publisher that pipelines: QoS 1 publishes written in bursts without waiting, so several
/// batches are with the hub at once, with refused ones (not JSON) among them. Every publish gets
/// exactly one PUBACK, in the order sent [MQTT-4.6.0-2], a refusal in its own place with its
/// reason code; and what was acknowledged is stored, in that order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_qos1_publishes_are_acknowledged_once_each_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let (srv, port) = start(dir.path());
    let mut s = connected(port, 5, "pipeliner").await;
    const N: u16 = 60; // under the default Receive Maximum (64)
    let bad = |pid: u16| pid.is_multiple_of(17);
    let mut bursts = Vec::new();
    let mut burst = Vec::new();
    for pid in 1..=N {
        let mut b = Vec::new();
        mqtt::string(&mut b, b"chat/pipe");
        b.extend_from_slice(&pid.to_be_bytes());
        b.push(0); // no properties
        if bad(pid) {
            b.extend_from_slice(b"not json");
        } else {
            b.extend_from_slice(format!("{{\"n\":{pid}}}").as_bytes());
        }
        burst.extend_from_slice(&packet(0x32, &b));
        if pid.is_multiple_of(7) {
            bursts.push(std::mem::take(&mut burst));
        }
    }
    bursts.push(burst);
    for b in bursts {
        s.write_all(&b).await.unwrap();
        // Apart enough to arrive as separate reads, so batches overlap at the hub.
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    for pid in 1..=N {
        let (first, body) = read_packet(&mut s)
            .await
            .expect("a PUBACK for every publish");
        assert_eq!(first, 0x40, "PUBACK for {pid}, got {first:#x} {body:?}");
        let got = u16::from_be_bytes([body[0], body[1]]);
        assert_eq!(got, pid, "PUBACKs in publish order");
        let code = body.get(2).copied().unwrap_or(0);
        if bad(pid) {
            assert!(
                code >= 0x80,
                "publish {pid} refused in its place, code {code:#x}"
            );
        } else {
            assert_eq!(code, 0, "publish {pid} stored, body {body:?}");
        }
    }
    let h = get_json(&srv, "/v1/history/chat.pipe?from=0&limit=1000").await;
    let stored: Vec<u64> = h["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["data"]["n"].as_u64().unwrap())
        .collect();
    let want: Vec<u64> = (1..=N).filter(|p| !bad(*p)).map(u64::from).collect();
    assert_eq!(
        stored, want,
        "each acknowledged publish stored once, in order"
    );
    // Nothing else is owed: no further packet arrives.
    assert_eq!(
        mqtt::read_packet(&mut s, Duration::from_millis(300)).await,
        None
    );
    drop(srv);
}

/// MQTT 3.1.1 §3.1.2.10 / 5.0 §3.1.2.10: a client that sends nothing for 1.5 times its keep
/// alive is disconnected (MQTT 5: reason 0x8D), and one that keeps pinging is not.
#[tokio::test]
async fn keep_alive_is_kept_by_pings_and_enforced_on_silence() {
    let dir = tempfile::tempdir().unwrap();
    let (_srv, port) = start(dir.path());
    let mut s = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    s.write_all(&connect(5, "ka", true, 1)).await.unwrap();
    let (first, body) = read_packet(&mut s).await.unwrap();
    assert_eq!((first, body[1]), (0x20, 0), "CONNACK, accepted");
    // Pinging every 0.5 s for 3 s (twice the 1.5 s allowance): served throughout.
    for _ in 0..6 {
        tokio::time::sleep(Duration::from_millis(500)).await;
        s.write_all(&[0xC0, 0x00]).await.unwrap();
        let (first, _) = read_packet(&mut s).await.expect("PINGRESP");
        assert_eq!(first, 0xD0, "PINGRESP");
    }
    // Then silence: disconnected after 1.5 s, not before 1 s.
    let quiet = std::time::Instant::now();
    expect_disconnect(&mut s, 0x8D).await;
    let after = quiet.elapsed();
    assert!(
        after >= Duration::from_millis(1000) && after < Duration::from_secs(6),
        "keep-alive verdict after {after:?}"
    );
}

/// A persistent session is saved while the connection is open (at most every 200 ms after a
/// change), not only when it ends: a QoS 1 subscriber to a chat channel acknowledges three
/// messages, the server is killed with kill -9, and after the restart the session resumes
/// after them: they are not delivered again, and the next message is.
#[tokio::test]
async fn a_persistent_session_is_saved_while_connected() {
    let dir = tempfile::tempdir().unwrap();
    let (mut srv, port) = start(dir.path());
    let mut s = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    s.write_all(&connect(4, "keeper", false, 60)).await.unwrap();
    let (first, body) = read_packet(&mut s).await.unwrap();
    assert_eq!(first, 0x20, "CONNACK");
    assert_eq!(body, [0, 0], "no session yet, accepted");
    let mut sub = vec![0, 7];
    mqtt::string(&mut sub, b"chat/keep");
    sub.push(1);
    s.write_all(&packet(0x82, &sub)).await.unwrap();
    let (first, body) = read_packet(&mut s).await.unwrap();
    assert_eq!(first, 0x90, "SUBACK");
    assert_eq!(body, [0, 7, 1], "granted QoS 1");
    let say = |text: &str| serde_json::json!({"channel":"chat.keep","data":{"text":text}});
    for text in ["one", "two", "three"] {
        let (status, r) = common::publish(&srv, &say(text)).await;
        assert_eq!(status, 200, "{r}");
        let (first, body) = read_packet(&mut s).await.expect("PUBLISH");
        assert_eq!(first & 0xF6, 0x32, "QoS 1 PUBLISH, got {first:#x}");
        let topic_len = usize::from(u16::from_be_bytes([body[0], body[1]]));
        let id = [body[2 + topic_len], body[3 + topic_len]];
        s.write_all(&[0x40, 0x02, id[0], id[1]]).await.unwrap(); // PUBACK
    }
    // Well past the save interval, with the connection still open.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    srv.kill9();
    drop(s);
    // The same data directory; the session is kept there, not tied to the port, so the
    // restarted server binds a new one.
    let (srv, port) = start(dir.path());
    let mut s = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    s.write_all(&connect(4, "keeper", false, 60)).await.unwrap();
    let (first, body) = read_packet(&mut s).await.unwrap();
    assert_eq!(first, 0x20, "CONNACK");
    assert_eq!(body, [1, 0], "session present after the kill -9");
    let (status, r) = common::publish(&srv, &say("four")).await;
    assert_eq!(status, 200, "{r}");
    let (first, body) = read_packet(&mut s).await.expect("PUBLISH");
    assert_eq!(first & 0xF6, 0x32, "QoS 1 PUBLISH, got {first:#x}");
    let text = String::from_utf8_lossy(&body);
    assert!(
        text.contains("four") && !text.contains("one") && !text.contains("three"),
        "the first message after the restart is the new one: {text}"
    );
}

#[tokio::test]
async fn expired_sessions_are_swept_at_start_over_the_default_listeners() {
    let dir = tempfile::tempdir().unwrap();
    let (mut srv, port) = start(dir.path());
    let sessions = dir.path().join("data").join("mqtt-sessions");
    // Two persistent clients subscribe and leave: each session is saved with its disconnect
    // time, to expire after `max_session_expiry_secs` (7 days by default).
    for id in ["gone", "kept"] {
        let mut s = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
        s.write_all(&connect(4, id, false, 60)).await.unwrap();
        assert_eq!(read_packet(&mut s).await.unwrap().0, 0x20, "CONNACK");
        let mut sub = vec![0, 1];
        mqtt::string(&mut sub, b"chat/swept");
        sub.push(1);
        s.write_all(&packet(0x82, &sub)).await.unwrap();
        assert_eq!(read_packet(&mut s).await.unwrap().0, 0x90, "SUBACK");
        s.write_all(&[0xE0, 0x00]).await.unwrap(); // DISCONNECT
        assert!(closed(&mut s).await);
    }
    // File names are the client ids in hex.
    let gone = sessions.join("676f6e65.json");
    let kept = sessions.join("6b657074.json");
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    while !(gone.exists() && kept.exists()) {
        assert!(tokio::time::Instant::now() < deadline, "sessions not saved");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    srv.kill9();
    // "gone" left 8 days ago: expired.
    let mut v: serde_json::Value = serde_json::from_slice(&std::fs::read(&gone).unwrap()).unwrap();
    let left = v["disconnected_at_ms"].as_u64().expect("a disconnect time");
    v["disconnected_at_ms"] = (left - 8 * 86_400_000).into();
    std::fs::write(&gone, serde_json::to_vec(&v).unwrap()).unwrap();
    // Restarted with the default listeners (MQTT over WebSocket only, no TCP listener): the
    // sweep at start still runs, and removes only the expired session.
    let _srv = Server::start(&dir.path().join("data"), &[], &[]);
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    while gone.exists() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the expired session was not swept"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(kept.exists(), "a session that has not expired is kept");
}
