//! MQTT QoS 2 across a kill -9 of the server, both directions, with a client that stays up and
//! resumes its session as the spec says [MQTT-4.4.0-1]:
//! - towards the client: a released message (PUBREL sent) gets PUBREL again, never the message;
//!   an unreceived one (no PUBREC yet) comes again with DUP and its own packet id; nothing the
//!   client has received is sent as a new message (it used to be: the PUBREL stage was not
//!   persisted and every unfinished message went out again under a new id);
//! - from the client: a PUBLISH acknowledged with PUBREC and re-sent after the restart is not
//!   stored twice; nor is one the server read and stored just before the client went away
//!   (its PUBREC never sent), then re-sent on the next connection.
//!
//! Raw MQTT 3.1.1 over TCP, so the test decides exactly which acknowledgements the client sends.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::{collections::BTreeMap, time::Duration};

use common::{
    get_json,
    mqtt::{self, packet},
    publish, Server, TIMEOUT,
};
use serde_json::json;
use tokio::{io::AsyncWriteExt, net::TcpStream};

/// One packet: (first byte, body); `None` when nothing arrives within `wait`.
async fn read(s: &mut TcpStream, wait: Duration) -> Option<(u8, Vec<u8>)> {
    mqtt::read_packet(s, wait).await
}

fn pid_of(body: &[u8]) -> u16 {
    u16::from_be_bytes([body[0], body[1]])
}

async fn ack(s: &mut TcpStream, first: u8, pid: u16) {
    s.write_all(&packet(first, &pid.to_be_bytes()))
        .await
        .unwrap();
}

/// A persistent (clean session 0) 3.1.1 connection; whether the server had a session.
async fn connect(port: u16, client_id: &str) -> (TcpStream, bool) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let mut b = vec![0, 4, b'M', b'Q', b'T', b'T', 4, 0x00, 0, 60];
    b.extend_from_slice(&(client_id.len() as u16).to_be_bytes());
    b.extend_from_slice(client_id.as_bytes());
    s.write_all(&packet(0x10, &b)).await.unwrap();
    let (first, body) = read(&mut s, TIMEOUT).await.expect("CONNACK");
    assert_eq!((first, body[1]), (0x20, 0), "CONNACK accepted: {body:?}");
    (s, body[0] & 1 == 1)
}

/// A PUBLISH from the server: (dup, qos, packet id, topic, payload).
fn parse_publish(first: u8, body: &[u8]) -> (bool, u8, u16, String, Vec<u8>) {
    assert_eq!(first >> 4, 3, "PUBLISH, got {first:#x}");
    let qos = (first >> 1) & 3;
    let tl = usize::from(pid_of(body));
    let topic = String::from_utf8(body[2..2 + tl].to_vec()).unwrap();
    let (pid, rest) = if qos > 0 {
        (pid_of(&body[2 + tl..]), &body[4 + tl..])
    } else {
        (0, &body[2 + tl..])
    };
    (first & 0x08 != 0, qos, pid, topic, rest.to_vec())
}

/// The server on `data` with MQTT on a port of its choosing ([`Server::mqtt_port`]). A restart
/// binds a new one: the sessions are in the data directory, not tied to the port.
fn start(data: &std::path::Path) -> Server {
    Server::start(data, &[], &[("TICKWIRE_MQTT__LISTEN", "127.0.0.1:0")])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outgoing_qos2_resumes_at_its_stage_after_kill9() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut srv = start(&data);
    let (mut c, present) = connect(srv.mqtt_port(), "q2-out").await;
    assert!(!present);
    let mut sub = vec![0, 1];
    sub.extend_from_slice(&7u16.to_be_bytes());
    sub.extend_from_slice(b"chat/q2");
    sub.push(2);
    c.write_all(&packet(0x82, &sub)).await.unwrap();
    let (first, body) = read(&mut c, TIMEOUT).await.expect("SUBACK");
    assert_eq!((first, body[2]), (0x90, 2), "granted QoS 2");

    for n in 0..3 {
        let (st, b) = publish(&srv, &json!({"channel": "chat.q2", "data": {"n": n}})).await;
        assert_eq!(st, 200, "{b}");
    }
    // (packet id, payload) of m0, m1, m2, in order.
    let mut sent = Vec::new();
    while sent.len() < 3 {
        let (first, body) = read(&mut c, TIMEOUT).await.expect("PUBLISH");
        let (dup, qos, pid, topic, payload) = parse_publish(first, &body);
        assert_eq!((dup, qos, topic.as_str()), (false, 2, "chat/q2"));
        sent.push((pid, payload));
    }
    // m0 and m2 received (PUBREC) and released by the server (PUBREL); m1 not received.
    for i in [0, 2] {
        ack(&mut c, 0x50, sent[i].0).await;
        let (first, body) = read(&mut c, TIMEOUT).await.expect("PUBREL");
        assert_eq!((first, pid_of(&body)), (0x62, sent[i].0), "PUBREL for m{i}");
    }

    // The server dies; the client keeps its side of the flows and comes back.
    srv.kill9();
    drop(c);
    let srv = start(&data);
    let (mut c, present) = connect(srv.mqtt_port(), "q2-out").await;
    assert!(present, "the session survived the restart");
    let mut pubrels = Vec::new();
    let mut publishes = Vec::new();
    while let Some((first, body)) = read(&mut c, Duration::from_millis(1_500)).await {
        match first >> 4 {
            6 => pubrels.push(pid_of(&body)),
            3 => publishes.push(parse_publish(first, &body)),
            other => panic!("unexpected packet type {other}"),
        }
    }
    pubrels.sort_unstable();
    let mut want_rel = vec![sent[0].0, sent[2].0];
    want_rel.sort_unstable();
    assert_eq!(pubrels, want_rel, "PUBREL again for the released messages");
    let resent: Vec<_> = publishes
        .iter()
        .map(|(dup, qos, pid, _, payload)| (*dup, *qos, *pid, payload.clone()))
        .collect();
    assert_eq!(
        resent,
        vec![(true, 2, sent[1].0, sent[1].1.clone())],
        "only the unreceived message again, with DUP and its own packet id"
    );

    // The flows complete, and new messages go out as new ones.
    for i in [0, 2] {
        ack(&mut c, 0x70, sent[i].0).await;
    }
    ack(&mut c, 0x50, sent[1].0).await;
    let (first, body) = read(&mut c, TIMEOUT).await.expect("PUBREL for m1");
    assert_eq!((first, pid_of(&body)), (0x62, sent[1].0));
    ack(&mut c, 0x70, sent[1].0).await;
    let (st, b) = publish(&srv, &json!({"channel": "chat.q2", "data": {"n": 3}})).await;
    assert_eq!(st, 200, "{b}");
    let (first, body) = read(&mut c, TIMEOUT).await.expect("PUBLISH m3");
    let (dup, qos, _pid, _, payload) = parse_publish(first, &body);
    assert_eq!((dup, qos), (false, 2));
    let v: serde_json::Value = serde_json::from_slice(&payload).unwrap();
    assert_eq!(v["n"], 3, "{v}");
    assert!(
        read(&mut c, Duration::from_millis(500)).await.is_none(),
        "nothing else"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn incoming_qos2_is_stored_once_across_kill9() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut srv = start(&data);
    let publish_packet = |pid: u16, n: u32, dup: bool| {
        let mut b = Vec::new();
        b.extend_from_slice(&7u16.to_be_bytes());
        b.extend_from_slice(b"chat/in");
        b.extend_from_slice(&pid.to_be_bytes());
        b.extend_from_slice(format!("{{\"n\":{n}}}").as_bytes());
        packet(0x34 | if dup { 0x08 } else { 0 }, &b)
    };
    let (mut c, _) = connect(srv.mqtt_port(), "q2-in").await;
    // Two messages acknowledged with PUBREC; neither released before the crash.
    for (pid, n) in [(7, 1), (8, 2)] {
        c.write_all(&publish_packet(pid, n, false)).await.unwrap();
        let (first, body) = read(&mut c, TIMEOUT).await.expect("PUBREC");
        assert_eq!((first, pid_of(&body)), (0x50, pid));
    }
    srv.kill9();
    drop(c);
    let srv = start(&data);
    let (mut c, present) = connect(srv.mqtt_port(), "q2-in").await;
    assert!(present);
    // The client did not see the PUBREC of 7 (it resends the PUBLISH) but did see 8's (it
    // sends PUBREL): neither is stored again.
    c.write_all(&publish_packet(7, 1, true)).await.unwrap();
    let (first, body) = read(&mut c, TIMEOUT).await.expect("PUBREC again");
    assert_eq!((first, pid_of(&body)), (0x50, 7));
    for pid in [7, 8] {
        ack(&mut c, 0x62, pid).await;
        let (first, body) = read(&mut c, TIMEOUT).await.expect("PUBCOMP");
        assert_eq!((first, pid_of(&body)), (0x70, pid));
    }
    let h = get_json(&srv, "/v1/history/chat.in?from=0").await;
    let ns: BTreeMap<u64, u64> = h["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            (
                m["offset"].as_u64().unwrap(),
                m["data"]["n"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        ns.values().copied().collect::<Vec<_>>(),
        vec![1, 2],
        "each message stored once: {h}"
    );
}

/// The connection hands publishes to the hub and goes on reading; when the client vanishes
/// right after its publishes, those still with the hub are stored all the same, and their ids
/// must be in the session it saves: re-sent with DUP on the next connection, none is stored
/// twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn incoming_qos2_stored_as_the_client_vanished_is_not_stored_again() {
    let dir = tempfile::tempdir().unwrap();
    let srv = start(&dir.path().join("data"));
    let port = srv.mqtt_port();
    const N: u16 = 20;
    let publish_packet = |pid: u16, dup: bool| {
        let mut b = Vec::new();
        mqtt::string(&mut b, b"chat/gone");
        b.extend_from_slice(&pid.to_be_bytes());
        b.extend_from_slice(format!("{{\"n\":{pid}}}").as_bytes());
        packet(0x34 | if dup { 0x08 } else { 0 }, &b)
    };
    let (mut c, _) = connect(port, "q2-gone").await;
    let burst: Vec<u8> = (1..=N).flat_map(|pid| publish_packet(pid, false)).collect();
    c.write_all(&burst).await.unwrap();
    drop(c); // gone before reading a single PUBREC
    let stored = || async {
        let h = get_json(&srv, "/v1/history/chat.gone?from=0&limit=1000").await;
        h["messages"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["data"]["n"].as_u64().unwrap())
            .collect::<Vec<u64>>()
    };
    let deadline = std::time::Instant::now() + TIMEOUT;
    while stored().await.len() < usize::from(N) && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The client did not see any PUBREC: it sends every PUBLISH again, then releases each.
    let (mut c, present) = connect(port, "q2-gone").await;
    assert!(present, "the session was kept");
    let again: Vec<u8> = (1..=N).flat_map(|pid| publish_packet(pid, true)).collect();
    c.write_all(&again).await.unwrap();
    for pid in 1..=N {
        let (first, body) = read(&mut c, TIMEOUT).await.expect("PUBREC");
        assert_eq!((first, pid_of(&body)), (0x50, pid), "PUBREC in order");
    }
    for pid in 1..=N {
        ack(&mut c, 0x62, pid).await;
        let (first, body) = read(&mut c, TIMEOUT).await.expect("PUBCOMP");
        assert_eq!((first, pid_of(&body)), (0x70, pid));
    }
    let want: Vec<u64> = (1..=N).map(u64::from).collect();
    assert_eq!(stored().await, want, "each message stored once, in order");
}
