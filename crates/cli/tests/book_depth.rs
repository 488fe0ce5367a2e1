//! A subscriber asks its own order-book depth (`depth` on subscribe, docs/books.md): the real
//! binary, depth published over HTTP and built into `book.<SYM>` by the book projection.
//! WebSocket subscribers at depth 1, 3, everything, and 25 (more than the channel's 10) keep
//! a book from their values while the book changes at random (deletes of the best levels
//! among them, so deeper levels come into every view): each value follows the one before
//! (`prev`), its checksum is that of the book the client holds, and at every checkpoint each
//! client holds exactly the best N levels of the server's book. The values are then applied by
//! the JavaScript reference client (docs/book-client.js in Node), unchanged. Then the
//! refusals (a depth on another channel, a malformed one), SSE's `depth`, and gRPC's.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::{get_json, publish, Server, Sse, Ws};
use serde_json::{json, Value};
use tickwire_edge_grpc::client::tickwire_client::TickwireClient;
use tickwire_feed::l2::{Applied, L2Book, L2Msg, LevelText};
use tickwire_proto::v1::{
    payload, server_message::Kind, BookUpdate, SubscribeRequest, Subscription,
};
use tonic::Code;

const WAIT: Duration = Duration::from_secs(20);

fn bid_px(i: u64) -> String {
    format!("1.{:04}", 5000 - i * 7)
}

fn ask_px(i: u64) -> String {
    format!("1.{:04}", 5001 + i * 7)
}

/// A 15-level-a-side snapshot on `depth.<sym>` (the channel keeps 10, the default).
async fn publish_book(srv: &Server, sym: &str) {
    let mut levels = Vec::new();
    for i in 0..15 {
        levels.push(json!({"side": "bid", "price": bid_px(i), "size": format!("{}", i + 1)}));
        levels.push(json!({"side": "ask", "price": ask_px(i), "size": format!("{}.5", i + 1)}));
    }
    let (st, body) = publish(
        srv,
        &json!({"channel": format!("depth.{sym}"), "data": {"snapshot": levels}}),
    )
    .await;
    assert_eq!(st, 200, "{body}");
}

/// The server's book once the projection has published everything sent so far (its `seq`
/// stops moving).
async fn settled(srv: &Server, sym: &str) -> Value {
    let mut last = Value::Null;
    loop {
        tokio::time::sleep(Duration::from_millis(150)).await;
        let now = get_json(srv, &format!("/v1/latest/book.{sym}")).await["data"].clone();
        if now["seq"] == last["seq"] && !now["seq"].is_null() {
            return now;
        }
        last = now;
    }
}

/// The best `n` levels a side (`None`: all) of a book value's JSON.
fn best(book: &Value, n: Option<usize>) -> (Vec<LevelText>, Vec<LevelText>) {
    let side = |key: &str| {
        let levels = book[key].as_array().unwrap();
        levels
            .iter()
            .take(n.unwrap_or(levels.len()))
            .map(|l| {
                (
                    l[0].as_str().unwrap().to_string(),
                    l[1].as_str().unwrap().to_string(),
                )
            })
            .collect::<Vec<_>>()
    };
    (side("bids"), side("asks"))
}

/// One WebSocket subscriber and the book it keeps from its values, as docs/books.md says.
struct Client {
    ws: Ws,
    /// The depth asked for (`None`: none given).
    asked: Option<u32>,
    /// The depth its snapshot must say: what it asked, or the channel's 10 when more.
    served: u32,
    book: L2Book,
    values: Vec<Value>,
}

impl Client {
    async fn subscribe(srv: &Server, sym: &str, asked: Option<u32>) -> Client {
        let mut ws = Ws::connect(&srv.ws_url("")).await;
        let mut cmd = json!({"op": "subscribe", "channel": format!("book.{sym}")});
        if let Some(d) = asked {
            cmd["depth"] = d.into();
        }
        let r = ws.cmd(cmd).await;
        assert_eq!(r["ok"], true, "{r}");
        assert_eq!(r["snapshot"], true, "{r}");
        Client {
            ws,
            asked,
            served: asked.map_or(10, |d| d.min(10)),
            book: L2Book::default(),
            values: Vec::new(),
        }
    }

    /// Levels a side the client may hold.
    fn view(&self) -> Option<usize> {
        self.asked.map(|d| d as usize)
    }

    /// Applies every value that arrives within `wait` of the one before, checking each.
    async fn take(&mut self, wait: Duration) {
        while let Some(p) = self.ws.try_push(wait).await {
            let v = p["data"].clone();
            let m = L2Msg::parse(v.to_string().as_bytes()).unwrap();
            if self.values.is_empty() {
                assert_eq!(p["snapshot"], true, "the first value is the snapshot: {p}");
                assert!(m.snapshot, "{p}");
                assert_eq!(m.depth, self.served, "{p}");
            } else {
                assert!(!m.snapshot, "one snapshot, then deltas: {p}");
                assert_eq!(
                    m.prev,
                    self.book.seq(),
                    "`prev` is the last value sent: {p}"
                );
                assert!(
                    !m.bids.is_empty() || !m.asks.is_empty(),
                    "an empty delta: {p}"
                );
            }
            assert_eq!(self.book.apply(&m), Applied::Ok, "{p}");
            assert_eq!(
                self.book.checksum(),
                m.checksum,
                "the checksum is that of the book held ({:?}): {p}",
                self.asked
            );
            let (bids, asks) = self.book.levels();
            let cap = self.view().unwrap_or(usize::MAX);
            assert!(bids.len() <= cap && asks.len() <= cap, "{p}");
            self.values.push(v);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_subscribers_at_depth_1_3_and_full_hold_the_servers_best_levels() {
    let dir = tempfile::tempdir().unwrap();
    let srv = Server::start(&dir.path().join("d"), &[], &[]);
    let sym = "BDX";
    publish_book(&srv, sym).await;
    settled(&srv, sym).await;
    let mut clients = Vec::new();
    for asked in [Some(1), Some(3), None, Some(25)] {
        clients.push(Client::subscribe(&srv, sym, asked).await);
    }

    let mut seed: u64 = 0x2545_f491_4f6c_dd1d;
    let mut rnd = |n: u64| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed % n
    };
    for round in 0..48 {
        let mut items = Vec::new();
        for _ in 0..1 + rnd(4) {
            let i = rnd(18);
            let (side, px) = if rnd(2) == 0 {
                ("bid", bid_px(i))
            } else {
                ("ask", ask_px(i))
            };
            // "1.4993" and "1.49930" are one level.
            let px = if rnd(3) == 0 { format!("{px}0") } else { px };
            let update = if rnd(4) == 0 {
                json!({"action": "delete", "side": side, "price": px})
            } else {
                json!({"action": "change", "side": side, "price": px, "size": format!("{}.{}", rnd(50) + 1, rnd(100))})
            };
            items.push(json!({"channel": format!("depth.{sym}"), "data": {"updates": [update]}}));
        }
        // Every few rounds the best bid and the best ask go: deeper levels come into every
        // view, the depth-1 one included.
        if round % 3 == 1 {
            let top = get_json(&srv, &format!("/v1/latest/book.{sym}")).await["data"].clone();
            for (key, side) in [("bids", "bid"), ("asks", "ask")] {
                let px = top[key][0][0].clone();
                items.push(json!({"channel": format!("depth.{sym}"), "data": {"updates": [{"action": "delete", "side": side, "price": px}]}}));
            }
        }
        let (st, body) = publish(&srv, &Value::Array(items)).await;
        assert_eq!(st, 200, "{body}");
        // Some rounds come faster than the projection's 20 ms flush, some slower.
        if round % 3 == 0 {
            tokio::time::sleep(Duration::from_millis(30)).await;
        }
        if round % 8 != 7 {
            continue;
        }
        // A checkpoint: every client holds the best N of the server's book once it has taken
        // what was sent (the projection and the server take their time on a busy machine).
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let book = settled(&srv, sym).await;
            for c in &mut clients {
                c.take(Duration::from_millis(200)).await;
            }
            let wrong: Vec<_> = clients
                .iter()
                .filter(|c| c.book.levels() != best(&book, c.view()))
                .map(|c| c.asked)
                .collect();
            if wrong.is_empty() {
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "after round {round}, depths {wrong:?} differ from the server's book {book}"
            );
        }
    }

    let book = settled(&srv, sym).await;
    // Deeper than the depth-3 view on both sides, so its levels were a true part of the book.
    for side in ["bids", "asks"] {
        assert!(book[side].as_array().unwrap().len() > 4, "{book}");
    }
    for c in &clients {
        assert_eq!(c.book.levels(), best(&book, c.view()), "{:?}", c.asked);
    }
    // A change below the best 3 reaches the views that hold that level (the whole book,
    // depth 25) and no other; a change of the best bid reaches every view.
    let (st, body) = publish(
        &srv,
        &json!({"channel": format!("depth.{sym}"), "data": {"updates": [{"action": "change", "side": "bid", "price": book["bids"][3][0], "size": "777"}]}}),
    )
    .await;
    assert_eq!(st, 200, "{body}");
    let book = settled(&srv, sym).await;
    let mut got = Vec::new();
    for c in &mut clients {
        let before = c.values.len();
        c.take(Duration::from_millis(500)).await;
        got.push(c.values.len() - before);
        assert_eq!(c.book.levels(), best(&book, c.view()), "{:?}", c.asked);
    }
    assert_eq!(
        got,
        vec![0, 0, 1, 1],
        "values per view for a change at the 4th level"
    );
    let (st, body) = publish(
        &srv,
        &json!({"channel": format!("depth.{sym}"), "data": {"updates": [{"action": "change", "side": "bid", "price": book["bids"][0][0], "size": "555"}]}}),
    )
    .await;
    assert_eq!(st, 200, "{body}");
    let book = settled(&srv, sym).await;
    for c in &mut clients {
        let before = c.values.len();
        c.take(Duration::from_millis(500)).await;
        assert_eq!(c.values.len() - before, 1, "{:?}", c.asked);
        assert_eq!(c.book.levels(), best(&book, c.view()), "{:?}", c.asked);
    }

    // The reference client verifies every value of every view, unchanged, and holds the
    // server's best N.
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../tests/interop/books/check.cjs"
    );
    for c in &clients {
        let file = dir.path().join(format!("values-{:?}.jsonl", c.asked));
        let lines: Vec<String> = c.values.iter().map(Value::to_string).collect();
        std::fs::write(&file, lines.join("\n")).unwrap();
        let out = std::process::Command::new("node")
            .arg(script)
            .arg(&file)
            .output()
            .expect("node is installed (the console test needs it too)");
        assert!(
            out.status.success(),
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let held: Value = serde_json::from_slice(&out.stdout).unwrap();
        let results = held["results"].as_array().unwrap();
        assert_eq!(results.len(), c.values.len());
        assert!(results.iter().all(|r| r == "ok"), "{:?}: {held}", c.asked);
        let (bids, asks) = best(&book, c.view());
        assert_eq!(held["bids"], json!(bids), "{:?}", c.asked);
        assert_eq!(held["asks"], json!(asks), "{:?}", c.asked);
    }
}

/// `depth` on a channel that is not a book, or not a non-negative integer, or beside a stream
/// option, is refused with `bad_request` and subscribes nothing; SSE says the same with 400.
/// SSE's `depth` applies to the book channels of the request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn depth_is_refused_where_it_means_nothing_and_served_over_sse() {
    let dir = tempfile::tempdir().unwrap();
    let srv = Server::start(&dir.path().join("d"), &[], &[]);
    publish_book(&srv, "BDE").await;
    settled(&srv, "BDE").await;

    let mut ws = Ws::connect(&srv.ws_url("")).await;
    for (cmd, why) in [
        (
            json!({"op": "subscribe", "channel": "quotes.BDE", "depth": 3}),
            "non-book",
        ),
        (
            json!({"op": "subscribe", "channel": "chat.lobby", "depth": 0}),
            "non-book",
        ),
        (
            json!({"op": "subscribe", "channel": "book.BDE", "depth": -1}),
            "negative",
        ),
        (
            json!({"op": "subscribe", "channel": "book.BDE", "depth": 2.5}),
            "fraction",
        ),
        (
            json!({"op": "subscribe", "channel": "book.BDE", "depth": "3"}),
            "string",
        ),
        (
            json!({"op": "subscribe", "channel": "book.BDE", "depth": 3, "last": 5}),
            "with last",
        ),
    ] {
        let r = ws.cmd(cmd).await;
        assert_eq!(r["ok"], false, "{why}: {r}");
        assert_eq!(r["error"]["code"], "bad_request", "{why}: {r}");
    }
    let r = ws
        .cmd(json!({"op": "subscribe", "channel": "quotes.BDE", "depth": 3}))
        .await;
    assert!(
        r["error"]["message"].as_str().unwrap().contains("book"),
        "the refusal says why: {r}"
    );
    // Nothing was subscribed: the same channels subscribe fine without a depth.
    for c in ["quotes.BDE", "book.BDE"] {
        let r = ws.cmd(json!({"op": "subscribe", "channel": c})).await;
        assert_eq!(r["ok"], true, "{r}");
    }

    let r = common::http()
        .get(srv.url("/v1/sse?channel=quotes.BDE&depth=2"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["code"], "bad_request", "{body}");

    // Mixed channels: the book at depth 2, the quotes as they are.
    let mut sse = Sse::open(&srv, "channel=book.BDE&channel=quotes.BDE&depth=2", None).await;
    let ev = sse.next().await;
    assert_eq!(ev.data["ch"], "book.BDE", "{:?}", ev.data);
    let snap = L2Msg::parse(ev.data["data"].to_string().as_bytes()).unwrap();
    assert!(snap.snapshot);
    assert_eq!((snap.depth, snap.bids.len(), snap.asks.len()), (2, 2, 2));
    assert_eq!(snap.bids[0], (bid_px(0), "1".to_string()));
    let mut held = L2Book::from_snapshot(&snap);
    assert_eq!(held.checksum(), snap.checksum);
    // The best bid goes: the third level comes in.
    let (st, body) = publish(
        &srv,
        &json!({"channel": "depth.BDE", "data": {"updates": [{"action": "delete", "side": "bid", "price": bid_px(0)}]}}),
    )
    .await;
    assert_eq!(st, 200, "{body}");
    let ev = sse.next().await;
    let d = L2Msg::parse(ev.data["data"].to_string().as_bytes()).unwrap();
    assert_eq!(d.prev, snap.seq);
    assert_eq!(held.apply(&d), Applied::Ok);
    assert_eq!(held.checksum(), d.checksum);
    assert_eq!(
        held.levels().0,
        vec![(bid_px(1), "2".to_string()), (bid_px(2), "3".to_string())]
    );
}

async fn next(s: &mut tonic::Streaming<tickwire_proto::v1::ServerMessage>) -> Kind {
    tokio::time::timeout(WAIT, s.message())
        .await
        .expect("a message within the timeout")
        .unwrap()
        .expect("the stream goes on")
        .kind
        .unwrap()
}

fn book_of(k: Kind) -> BookUpdate {
    match k {
        Kind::Push(p) => match p.payload.and_then(|p| p.kind) {
            Some(payload::Kind::Book(b)) => b,
            other => panic!("a typed book value, not {other:?}"),
        },
        other => panic!("a push, not {other:?}"),
    }
}

/// A typed book value as the JSON value it stands for.
fn l2_of(b: &BookUpdate) -> L2Msg {
    let side = |v: &[tickwire_proto::v1::BookLevel]| {
        v.iter()
            .map(|l| (l.price.clone(), l.size.clone()))
            .collect()
    };
    L2Msg {
        snapshot: b.snapshot,
        seq: b.seq,
        prev: b.prev_seq,
        checksum: b.checksum,
        depth: b.depth,
        bids: side(&b.bids),
        asks: side(&b.asks),
    }
}

/// gRPC `Subscription.depth`: a typed snapshot of the best N, then typed deltas that keep the
/// client at the best N; refused (INVALID_ARGUMENT, `bad_request`) on a channel that is not a
/// book.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_subscribers_ask_their_depth() {
    let dir = tempfile::tempdir().unwrap();
    let srv = Server::start(
        &dir.path().join("d"),
        &[],
        &[("TICKWIRE_GRPC__LISTEN", "127.0.0.1:0")],
    );
    let listen = srv.grpc_addr();
    publish_book(&srv, "BDG").await;
    settled(&srv, "BDG").await;
    let channel = tonic::transport::Channel::from_shared(format!("http://{listen}"))
        .unwrap()
        .connect_timeout(WAIT)
        .connect()
        .await
        .unwrap();
    let mut c = TickwireClient::new(channel);
    let at = |ch: &str, depth: u32| SubscribeRequest {
        subscriptions: vec![Subscription {
            channel: ch.into(),
            depth: Some(depth),
            ..Subscription::default()
        }],
    };

    let e = c.subscribe(at("quotes.BDG", 2)).await.unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
    let code = e.metadata().get("tickwire-code").unwrap().to_str().unwrap();
    assert_eq!(code, "bad_request");

    let mut s = c.subscribe(at("book.BDG", 2)).await.unwrap().into_inner();
    assert!(matches!(next(&mut s).await, Kind::Subscribed(x) if x.snapshot));
    let snap = book_of(next(&mut s).await);
    assert!(snap.snapshot);
    assert_eq!((snap.depth, snap.bids.len(), snap.asks.len()), (2, 2, 2));
    let mut held = L2Book::from_snapshot(&l2_of(&snap));
    assert_eq!(held.checksum(), snap.checksum);

    // The best ask goes, a deeper bid changes: the ask view pulls the third level in, the bid
    // view does not change.
    let (st, body) = publish(
        &srv,
        &json!({"channel": "depth.BDG", "data": {"updates": [
            {"action": "delete", "side": "ask", "price": ask_px(0)},
            {"action": "change", "side": "bid", "price": bid_px(5), "size": "99"}
        ]}}),
    )
    .await;
    assert_eq!(st, 200, "{body}");
    let d = book_of(next(&mut s).await);
    assert!(!d.snapshot);
    assert_eq!(d.prev_seq, snap.seq);
    assert!(d.bids.is_empty(), "{d:?}");
    assert_eq!(held.apply(&l2_of(&d)), Applied::Ok);
    assert_eq!(held.checksum(), d.checksum);
    assert_eq!(
        held.levels().1,
        vec![
            (ask_px(1), "2.5".to_string()),
            (ask_px(2), "3.5".to_string())
        ]
    );
}
