//! The binary WebSocket encoding end to end (`Sec-WebSocket-Protocol: tickwire.v1.proto` on
//! `/v1/ws`): the real binary, a tokio-tungstenite client sending `ClientMessage` frames and
//! reading `ServerMessage` frames. The same semantics as the JSON protocol: the subprotocol is
//! echoed (and JSON stays the default), replies by id, publishes answered in order, state
//! snapshots then updates with typed payloads and exact decimals, stream channels from an
//! offset in an epoch, resume after a reconnect with no gap and no duplicate, the protocol's
//! error codes, books as typed snapshot then deltas, and the `Disconnect` with resume points
//! a shutdown sends. The JavaScript decoder of docs/ws-proto-client.mjs is tested in Node by
//! `ws_proto_client_js.rs`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::{collections::VecDeque, time::Duration};

use common::{Server, Ws};
use futures_util::{SinkExt, StreamExt};
use prost::Message as _;
use serde_json::json;
use tickwire_proto::v1::{
    client_message::Op, payload, server_message::Kind, BookLevel, BookUpdate, ChannelClass,
    ClientMessage, Disconnect, Payload, PublishItem, Push, Quote, Reply, ServerMessage,
    Subscription,
};
use tokio_tungstenite::{
    tungstenite::{client::IntoClientRequest, Message},
    MaybeTlsStream, WebSocketStream,
};

const WAIT: Duration = Duration::from_secs(20);
const PROTO: &str = "tickwire.v1.proto";

/// A binary WebSocket client: replies by id, pushes in order, the disconnect notice.
struct BinWs {
    ws: WebSocketStream<MaybeTlsStream<tokio::net::TcpStream>>,
    replies: VecDeque<Reply>,
    pushes: VecDeque<Push>,
    disconnect: Option<Disconnect>,
    close_code: Option<u16>,
    next_id: u64,
}

impl BinWs {
    async fn connect(srv: &Server) -> BinWs {
        let mut req = srv.ws_url("").into_client_request().unwrap();
        req.headers_mut()
            .insert("Sec-WebSocket-Protocol", PROTO.parse().unwrap());
        let (ws, answer) = tokio_tungstenite::connect_async(req).await.unwrap();
        // The server echoes the encoding it chose.
        assert_eq!(
            answer
                .headers()
                .get("sec-websocket-protocol")
                .map(|v| v.to_str().unwrap()),
            Some(PROTO)
        );
        BinWs {
            ws,
            replies: VecDeque::new(),
            pushes: VecDeque::new(),
            disconnect: None,
            close_code: None,
            next_id: 1,
        }
    }

    async fn send(&mut self, id: u64, op: Op) {
        let m = ClientMessage { id, op: Some(op) };
        self.ws
            .send(Message::Binary(m.encode_to_vec().into()))
            .await
            .unwrap();
    }

    /// Sends a command with a fresh id; returns the id.
    async fn send_op(&mut self, op: Op) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        self.send(id, op).await;
        id
    }

    async fn cmd(&mut self, op: Op) -> Reply {
        let id = self.send_op(op).await;
        self.reply(Some(id)).await
    }

    async fn reply(&mut self, id: Option<u64>) -> Reply {
        loop {
            if let Some(i) = self.replies.iter().position(|r| r.id == id) {
                return self.replies.remove(i).unwrap();
            }
            assert!(
                self.read_one().await,
                "connection closed before reply {id:?}"
            );
        }
    }

    async fn push(&mut self) -> Push {
        self.try_push(WAIT).await.expect("expected a push")
    }

    async fn try_push(&mut self, wait: Duration) -> Option<Push> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            if let Some(p) = self.pushes.pop_front() {
                return Some(p);
            }
            match tokio::time::timeout_at(deadline, self.read_one()).await {
                Ok(true) => {}
                _ => return None,
            }
        }
    }

    /// Reads one frame into the buffers; false when the connection ended.
    async fn read_one(&mut self) -> bool {
        loop {
            let m = tokio::time::timeout(WAIT, self.ws.next())
                .await
                .expect("read timed out");
            match m {
                Some(Ok(Message::Binary(b))) => {
                    let m = ServerMessage::decode(b).expect("a ServerMessage");
                    match m.kind.expect("a kind") {
                        Kind::Push(p) => self.pushes.push_back(p),
                        Kind::Reply(r) => self.replies.push_back(r),
                        Kind::Disconnect(d) => self.disconnect = Some(d),
                        Kind::Subscribed(s) => panic!("Subscribed comes inside a Reply: {s:?}"),
                    }
                    return true;
                }
                Some(Ok(Message::Text(t))) => panic!("a text frame on a binary connection: {t}"),
                Some(Ok(Message::Close(c))) => {
                    self.close_code = c.map(|c| c.code.into());
                    return false;
                }
                None | Some(Err(_)) => return false,
                Some(Ok(_)) => continue,
            }
        }
    }
}

fn sub(channel: &str, from: Option<u64>, epoch: &str) -> Op {
    Op::Subscribe(Subscription {
        channel: channel.into(),
        from,
        epoch: epoch.into(),
        ..Subscription::default()
    })
}

fn publish(channel: &str, kind: payload::Kind) -> Op {
    Op::Publish(PublishItem {
        channel: channel.into(),
        msg_id: String::new(),
        payload: Some(Payload { kind: Some(kind) }),
    })
}

fn json_payload(text: &str) -> payload::Kind {
    payload::Kind::Json(text.as_bytes().to_vec().into())
}

fn error_code(r: &Reply) -> &str {
    assert!(!r.ok, "a refusal: {r:?}");
    r.error.as_ref().map(|e| e.code.as_str()).unwrap_or("")
}

fn json_of(p: &Push) -> String {
    match p.payload.as_ref().and_then(|p| p.kind.as_ref()) {
        Some(payload::Kind::Json(b)) => String::from_utf8(b.to_vec()).unwrap(),
        other => panic!("a JSON payload, not {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binary_websocket_publish_subscribe_resume_and_errors() {
    let dir = tempfile::tempdir().unwrap();
    let srv = Server::start(&dir.path().join("d"), &[], &[]);

    // JSON stays the default: no subprotocol asked, none echoed, text frames.
    let (json_ws, answer) = tokio_tungstenite::connect_async(srv.ws_url(""))
        .await
        .unwrap();
    assert!(answer.headers().get("sec-websocket-protocol").is_none());
    let mut json_ws = Ws::from_stream(json_ws);
    let r = json_ws
        .cmd(json!({"op": "subscribe", "channel": "chat.g", "from": 0}))
        .await;
    assert_eq!(r["ok"], true, "{r}");

    let mut c = BinWs::connect(&srv).await;
    assert!(c.cmd(Op::Ping(true)).await.ok);

    // A typed quote; its decimals come back with every digit.
    let bid = "1.084120000000000000000000001";
    let r = c
        .cmd(publish(
            "quotes.EURUSD",
            payload::Kind::Quote(Quote {
                bid: bid.into(),
                ask: "1.0843".into(),
                ..Quote::default()
            }),
        ))
        .await;
    assert!(r.ok, "{r:?}");
    assert_eq!(r.channel, "quotes.EURUSD");
    assert!(!r.published.unwrap().duplicate);

    // A state channel: the reply, then the snapshot, typed.
    let r = c.cmd(sub("quotes.EURUSD", None, "")).await;
    let s = r.subscribed.expect("subscribed");
    assert_eq!(s.class, ChannelClass::State as i32);
    assert!(s.snapshot);
    let snap = c.push().await;
    assert!(snap.snapshot);
    assert_eq!(snap.channel, "quotes.EURUSD");
    match snap.payload.and_then(|p| p.kind) {
        Some(payload::Kind::Quote(q)) => {
            assert_eq!((q.bid.as_str(), q.ask.as_str()), (bid, "1.0843"))
        }
        other => panic!("a typed quote, not {other:?}"),
    }

    // A stream channel from 0: where delivery starts and the epoch it belongs to.
    let r = c.cmd(sub("chat.g", Some(0), "")).await;
    let s = r.subscribed.expect("subscribed");
    assert_eq!(s.class, ChannelClass::Stream as i32);
    assert_eq!(s.offset, Some(0));
    let epoch = s.epoch.clone();
    assert_eq!(epoch.len(), 16, "{epoch:?}");

    // Pipelined publishes (sent without waiting), answered in order once durable.
    let mut ids = Vec::new();
    for n in 0..5 {
        ids.push(
            c.send_op(publish("chat.g", json_payload(&format!("{{\"n\":{n}}}"))))
                .await,
        );
    }
    let mut offsets = Vec::new();
    for id in &ids {
        let r = c.reply(Some(*id)).await;
        assert!(r.ok, "{r:?}");
        offsets.push(r.published.unwrap().offset);
    }
    assert!(offsets.windows(2).all(|w| w[0] < w[1]), "{offsets:?}");
    // Replies arrived in command order: nothing older was left behind.
    assert!(c.replies.is_empty(), "{:?}", c.replies);
    for (n, off) in offsets.iter().enumerate() {
        let p = c.push().await;
        assert_eq!((p.channel.as_str(), p.offset), ("chat.g", *off));
        assert_eq!(json_of(&p), format!("{{\"n\":{n}}}"));
        assert!(p.ts > 0);
    }
    // The JSON subscriber got the same messages at the same offsets, as text.
    for (n, off) in offsets.iter().enumerate() {
        let p = json_ws.push().await;
        assert_eq!(p["offset"], *off, "{p}");
        assert_eq!(p["data"], json!({"n": n}));
    }

    // Refusals: the protocol's codes, with the command's id.
    let r = c.cmd(sub("no such channel", None, "")).await;
    assert_eq!(error_code(&r), "bad_channel");
    let r = c.cmd(sub("chat.g", Some(0), "0000000000000001")).await;
    assert_eq!(error_code(&r), "epoch_mismatch");
    let r = c.cmd(sub("chat.h", Some(1_000_000), "")).await;
    assert_eq!(error_code(&r), "offset_out_of_range");
    let r = c.cmd(sub("chat.g", None, "")).await;
    assert_eq!(error_code(&r), "already_subscribed");
    let r = c
        .cmd(publish(
            "quotes.EURUSD",
            payload::Kind::Quote(Quote {
                bid: "1.5e3".into(),
                ..Quote::default()
            }),
        ))
        .await;
    assert_eq!(error_code(&r), "bad_data");
    let r = c.cmd(Op::Unsubscribe("chat.nope".into())).await;
    assert_eq!(error_code(&r), "not_subscribed");
    // A frame that is no ClientMessage, and a text frame: refused without an id.
    c.ws.send(Message::Binary(vec![0xff, 0xff, 0xff].into()))
        .await
        .unwrap();
    assert_eq!(error_code(&c.reply(None).await), "bad_request");
    c.ws.send(Message::Text(r#"{"op":"ping","id":1}"#.into()))
        .await
        .unwrap();
    assert_eq!(error_code(&c.reply(None).await), "bad_request");
    // The connection is still fine.
    assert!(c.cmd(Op::Ping(true)).await.ok);

    // Resume after a reconnect: from the last offset seen + 1 in its epoch, the messages
    // published meanwhile, no gap and no duplicate.
    let last = *offsets.last().unwrap();
    drop(c);
    let mut p = BinWs::connect(&srv).await;
    let mut more = Vec::new();
    for n in 5..8 {
        let r = p
            .cmd(publish("chat.g", json_payload(&format!("{{\"n\":{n}}}"))))
            .await;
        more.push(r.published.unwrap().offset);
    }
    let mut c = BinWs::connect(&srv).await;
    let r = c.cmd(sub("chat.g", Some(last + 1), &epoch)).await;
    assert_eq!(r.subscribed.unwrap().offset, Some(last + 1));
    for (k, off) in more.iter().enumerate() {
        let m = c.push().await;
        assert_eq!(m.offset, *off);
        assert_eq!(json_of(&m), format!("{{\"n\":{}}}", 5 + k));
    }
    assert!(c.try_push(Duration::from_millis(300)).await.is_none());

    // Unsubscribe, then nothing more arrives for that channel.
    let r = c.cmd(Op::Unsubscribe("chat.g".into())).await;
    assert!(r.ok && r.channel == "chat.g", "{r:?}");
    p.cmd(publish("chat.g", json_payload("{\"n\":8}"))).await;
    assert!(c.try_push(Duration::from_millis(300)).await.is_none());
}

fn levels(v: &[(&str, &str)]) -> Vec<BookLevel> {
    v.iter()
        .map(|(p, s)| BookLevel {
            price: p.to_string(),
            size: s.to_string(),
        })
        .collect()
}

fn depth(snapshot: bool, bids: &[(&str, &str)], asks: &[(&str, &str)]) -> Op {
    publish(
        "depth.BINWS",
        payload::Kind::Book(BookUpdate {
            snapshot,
            bids: levels(bids),
            asks: levels(asks),
            ..BookUpdate::default()
        }),
    )
}

fn book(p: Push) -> BookUpdate {
    match p.payload.and_then(|p| p.kind) {
        Some(payload::Kind::Book(b)) => b,
        other => panic!("a typed book value, not {other:?}"),
    }
}

/// Depth published over the binary WebSocket feeds the book projection; a binary subscriber
/// gets `book.<SYM>` as a typed snapshot with its sequence number and checksum, then typed
/// deltas that follow it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binary_websocket_books_are_a_typed_snapshot_then_deltas() {
    let dir = tempfile::tempdir().unwrap();
    let srv = Server::start(&dir.path().join("d"), &[], &[]);
    let mut c = BinWs::connect(&srv).await;
    let r = c
        .cmd(depth(
            true,
            &[("1.25", "5"), ("1.24", "2")],
            &[("1.26", "7")],
        ))
        .await;
    assert!(r.ok, "{r:?}");
    // The projection publishes within its flush interval.
    let deadline = tokio::time::Instant::now() + WAIT;
    while common::get_json(&srv, "/v1/latest/book.BINWS").await["data"]["seq"].is_null() {
        assert!(tokio::time::Instant::now() < deadline, "no book");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let r = c.cmd(sub("book.BINWS", None, "")).await;
    assert!(r.subscribed.unwrap().snapshot);
    let snap = book(c.push().await);
    assert!(snap.snapshot);
    assert_eq!(snap.bids, levels(&[("1.25", "5"), ("1.24", "2")]));
    assert_eq!(snap.asks, levels(&[("1.26", "7")]));
    assert_ne!(snap.checksum, 0);

    assert!(
        c.cmd(depth(false, &[("1.25", "0"), ("1.245", "3")], &[]))
            .await
            .ok
    );
    let d = book(c.push().await);
    assert!(!d.snapshot);
    assert_eq!((d.prev_seq, d.seq), (snap.seq, snap.seq + 1));
    let mut bids = d.bids.clone();
    bids.sort_by(|a, b| a.price.cmp(&b.price));
    assert_eq!(bids, levels(&[("1.245", "3"), ("1.25", "0")]));
    assert_ne!(d.checksum, snap.checksum);
}

/// `Subscription.depth` on the binary WebSocket: the best N levels a side as a typed snapshot
/// (its `depth` N), then deltas that keep the client at the best N (a deleted best bid pulls
/// the next one in), each checksum that of the levels held; refused on another channel.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binary_websocket_books_at_a_depth_of_the_clients_own() {
    let dir = tempfile::tempdir().unwrap();
    let srv = Server::start(&dir.path().join("d"), &[], &[]);
    let mut c = BinWs::connect(&srv).await;
    let three = [("1.25", "5"), ("1.24", "2"), ("1.23", "4")];
    let r = c
        .cmd(depth(true, &three, &[("1.26", "7"), ("1.27", "1")]))
        .await;
    assert!(r.ok, "{r:?}");
    let deadline = tokio::time::Instant::now() + WAIT;
    while common::get_json(&srv, "/v1/latest/book.BINWS").await["data"]["seq"].is_null() {
        assert!(tokio::time::Instant::now() < deadline, "no book");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let at = |channel: &str, depth: u32| {
        Op::Subscribe(Subscription {
            channel: channel.into(),
            depth: Some(depth),
            ..Subscription::default()
        })
    };
    assert_eq!(
        error_code(&c.cmd(at("quotes.BINWS", 1)).await),
        "bad_request"
    );
    assert!(
        c.cmd(at("book.BINWS", 1))
            .await
            .subscribed
            .unwrap()
            .snapshot
    );
    let snap = book(c.push().await);
    assert!(snap.snapshot);
    assert_eq!(snap.depth, 1);
    assert_eq!(snap.bids, levels(&three[..1]));
    assert_eq!(snap.asks, levels(&[("1.26", "7")]));
    // zlib.crc32(b"12671255"): the ask then the bid of the one-level view.
    assert_eq!(snap.checksum, 1_231_097_976);

    assert!(c.cmd(depth(false, &[("1.25", "0")], &[])).await.ok);
    let d = book(c.push().await);
    assert!(!d.snapshot);
    assert_eq!(d.prev_seq, snap.seq);
    assert_eq!(d.bids, levels(&[("1.25", "0"), ("1.24", "2")]));
    assert!(d.asks.is_empty());
    // zlib.crc32(b"12671242").
    assert_eq!(d.checksum, 3_458_118_810);
}

/// A shutdown sends a binary subscriber the `Disconnect` (code `unavailable`, the `from` to
/// resume each stream channel with), then close code 1001.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binary_websocket_shutdown_sends_a_disconnect_with_resume_points() {
    let dir = tempfile::tempdir().unwrap();
    let mut srv = Server::start(&dir.path().join("d"), &[], &[]);
    let mut c = BinWs::connect(&srv).await;
    for n in 0..3 {
        let r = c
            .cmd(publish("chat.s", json_payload(&format!("{{\"n\":{n}}}"))))
            .await;
        assert!(r.ok, "{r:?}");
    }
    assert!(c.cmd(sub("chat.s", Some(0), "")).await.ok);
    let mut seen = Vec::new();
    for _ in 0..3 {
        seen.push(c.push().await.offset);
    }
    let st = tokio::task::spawn_blocking(move || srv.terminate())
        .await
        .unwrap();
    assert!(st.success(), "{st:?}");
    while c.read_one().await {}
    let d = c.disconnect.expect("a Disconnect before the close");
    assert_eq!(d.code, "unavailable");
    assert_eq!(
        d.resume.get("chat.s"),
        Some(&(seen.last().unwrap() + 1)),
        "{d:?}"
    );
    assert_eq!(c.close_code, Some(1001));
}
