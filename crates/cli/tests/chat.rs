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

async fn notify(srv: &Server, body: &Value, key: Option<&str>) -> (u16, Value) {
    let mut req = common::http()
        .post(srv.url("/v1/notify"))
        .body(body.to_string());
    if let Some(k) = key {
        req = req.bearer_auth(k);
    }
    let r = req.send().await.unwrap();
    let st = r.status().as_u16();
    (st, r.json().await.unwrap_or(Value::Null))
}

/// A back-end tells thousands of users the same thing in one durable request: every listed
/// `user.<id>` gets it once, a retry with the same `msg_id` returns the same offsets, a bad id
/// fails the request before anyone is told, and only the server API may do it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn notify_reaches_every_listed_user_exactly_once() {
    let dir = tempfile::tempdir().unwrap();
    let srv = Server::start(
        &dir.path().join("d"),
        &[],
        &[("TICKWIRE_API_KEYS", r#"["k-backend"]"#)],
    );
    let users: Vec<String> = (0..2000).map(|i| format!("u{i}")).collect();
    // Two users listening live.
    let mut a = Ws::connect(&srv.ws_url("?api_key=k-backend")).await;
    for u in ["u7", "u1999"] {
        let r = a
            .cmd(json!({"op": "subscribe", "channel": format!("user.{u}")}))
            .await;
        assert_eq!(r["ok"], true, "{r}");
    }
    let body = json!({"users": users, "msg_id": "trade-open-1", "data": {"kind": "trade", "px": "1.0841"}});
    let (st, v) = notify(&srv, &body, None).await;
    assert_eq!(st, 401, "{v}");
    let (st, first) = notify(&srv, &body, Some("k-backend")).await;
    assert_eq!(st, 200, "{first}");
    let results = first["results"].as_array().unwrap();
    assert_eq!(results.len(), 2000);
    assert!(results.iter().all(|r| r["duplicate"] == false));
    let mut got = Vec::new();
    for _ in 0..2 {
        let p = a.try_push(WAIT).await.unwrap();
        assert_eq!(p["data"]["px"], "1.0841");
        got.push(p["ch"].as_str().unwrap().to_string());
    }
    got.sort();
    assert_eq!(got, vec!["user.u1999", "user.u7"]);

    // A retry (a lost response) notifies nobody again.
    let (st, again) = notify(&srv, &body, Some("k-backend")).await;
    assert_eq!(st, 200, "{again}");
    for (x, y) in results.iter().zip(again["results"].as_array().unwrap()) {
        assert_eq!(x["offset"], y["offset"]);
        assert_eq!(y["duplicate"], true);
    }
    assert!(a.try_push(Duration::from_millis(300)).await.is_none());
    // Every user holds exactly one copy.
    for u in ["u0", "u1000", "u1999"] {
        let h = common::get_json(
            &srv,
            &format!("/v1/history/user.{u}?from=0&api_key=k-backend"),
        )
        .await;
        assert_eq!(h["messages"].as_array().unwrap().len(), 1, "{u}: {h}");
    }

    // One bad id: nobody is told.
    let bad = json!({"users": ["ok1", "bad id", "ok2"], "data": {"x": 1}});
    let (st, v) = notify(&srv, &bad, Some("k-backend")).await;
    assert_eq!(st, 422, "{v}");
    assert_eq!(v["errors"][0]["index"], 1, "{v}");
    let h = common::get_json(&srv, "/v1/history/user.ok1?from=0&api_key=k-backend").await;
    assert_eq!(h["messages"].as_array().unwrap().len(), 0, "{h}");
    let (st, _) = notify(&srv, &json!({"users": [], "data": 1}), Some("k-backend")).await;
    assert_eq!(st, 400);
}
