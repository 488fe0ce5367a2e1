//! Chat a product can ship (issue 18), end to end against the real binary.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::{publish, Server, Sse, Ws};
use serde_json::{json, Value};

const WAIT: Duration = Duration::from_secs(20);

async fn publish_chat(srv: &Server, channel: &str, range: std::ops::Range<u64>) -> Vec<u64> {
    let mut offsets = Vec::new();
    let items: Vec<Value> = range
        .map(|n| json!({"channel": channel, "data": {"n": n}}))
        .collect();
    for chunk in items.chunks(1000) {
        let (st, body) = publish(srv, &Value::Array(chunk.to_vec())).await;
        assert_eq!(st, 200, "{body}");
        offsets.extend(
            body["results"]
                .as_array()
                .unwrap()
                .iter()
                .map(|r| r["offset"].as_u64().unwrap()),
        );
    }
    offsets
}

/// (offset, n) of the next `count` pushes.
async fn take(ws: &mut Ws, count: usize) -> Vec<(u64, u64)> {
    let mut got = Vec::new();
    while got.len() < count {
        let p = ws.try_push(WAIT).await.expect("a push");
        got.push((
            p["offset"].as_u64().unwrap(),
            p["data"]["n"].as_u64().unwrap(),
        ));
    }
    got
}

/// A chat page shows its newest lines without replaying the channel from offset 0: `last: N`
/// gives exactly the newest N then live, from memory and (beyond it, after a restart) from the
/// log; `since` gives what was appended since a time; SSE takes both as parameters.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recent_history_is_the_newest_messages_then_live() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("d");
    let mut srv = Server::start(&data, &[], &[]);
    // Another channel interleaved, so offsets of chat.room are not contiguous.
    let mut room = Vec::new();
    for k in 0..3u64 {
        room.extend(publish_chat(&srv, "chat.room", k * 1000..(k + 1) * 1000).await);
        publish_chat(&srv, "chat.other", 0..500).await;
    }
    // (offset, n) of the newest `n` messages of the room (its n-th message carries n).
    fn want(room: &[u64], n: usize) -> Vec<(u64, u64)> {
        room.iter()
            .copied()
            .zip(0u64..)
            .skip(room.len() - n)
            .collect()
    }

    let mut ws = Ws::connect(&srv.ws_url("")).await;
    let r = ws
        .cmd(json!({"op": "subscribe", "channel": "chat.room", "last": 50}))
        .await;
    assert_eq!(r["ok"], true, "{r}");
    assert_eq!(r["offset"].as_u64(), Some(room[room.len() - 50]), "{r}");
    assert_eq!(take(&mut ws, 50).await, want(&room, 50));
    let live = publish_chat(&srv, "chat.room", 3000..3001).await;
    assert_eq!(take(&mut ws, 1).await, vec![(live[0], 3000)]);
    room.extend(live);

    // After a restart, and more than the in-memory ring holds: read from the log.
    srv.kill9();
    let srv = Server::start(&data, &[], &[]);
    let mut ws = Ws::connect(&srv.ws_url("")).await;
    let r = ws
        .cmd(json!({"op": "subscribe", "channel": "chat.room", "last": 2500}))
        .await;
    assert_eq!(r["ok"], true, "{r}");
    assert_eq!(take(&mut ws, 2500).await, want(&room, 2500));
    assert!(ws.try_push(Duration::from_millis(300)).await.is_none());

    // More than the channel has: all of it.
    let r = ws
        .cmd(json!({"op": "subscribe", "channel": "chat.other", "last": 10000}))
        .await;
    assert_eq!(r["ok"], true, "{r}");
    assert_eq!(take(&mut ws, 1500).await.len(), 1500);

    // Since a time: only what came after it.
    let now = || {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as u64
    };
    publish_chat(&srv, "chat.since", 0..20).await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    let t = now();
    let after = publish_chat(&srv, "chat.since", 20..25).await;
    let mut ws = Ws::connect(&srv.ws_url("")).await;
    let r = ws
        .cmd(json!({"op": "subscribe", "channel": "chat.since", "since": t}))
        .await;
    assert_eq!(r["ok"], true, "{r}");
    let got = take(&mut ws, 5).await;
    assert_eq!(got, after.iter().copied().zip(20u64..).collect::<Vec<_>>());
    assert!(ws.try_push(Duration::from_millis(300)).await.is_none());

    // Bad requests say what is wrong.
    for bad in [
        json!({"op": "subscribe", "channel": "chat.x", "last": 0}),
        json!({"op": "subscribe", "channel": "chat.x", "last": 10001}),
        json!({"op": "subscribe", "channel": "chat.x", "last": 5, "from": 0}),
        json!({"op": "subscribe", "channel": "quotes.X", "last": 5}),
    ] {
        let r = ws.cmd(bad.clone()).await;
        assert_eq!(r["ok"], false, "{bad}: {r}");
    }

    // SSE.
    let mut sse = Sse::open(&srv, "channel=chat.room&last=3", None).await;
    let mut got = Vec::new();
    for _ in 0..3 {
        let e = sse.next().await;
        got.push(e.data["offset"].as_u64().unwrap());
    }
    assert_eq!(got, room[room.len() - 3..].to_vec());
}
