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

const SECRET: &str = "a-test-secret-of-at-least-32-bytes!!";
const ADMIN: &str = "k-admin";
const FEED: &str = "k-feed";

/// A token for `sub`, with `info` stamped on their messages.
fn token(sub: &str, info: Option<&str>) -> String {
    common::user_token(SECRET, sub, info)
}

/// A server with users (JWT), an admin key and a publish-only key.
fn start_with_identities(dir: &std::path::Path, extra: &str) -> Server {
    let cfg = dir.join("tickwire.toml");
    std::fs::write(
        &cfg,
        format!(
            r#"
[auth]
jwt_hmac_secret = "{SECRET}"
[[auth.api_keys]]
name = "admin"
key = "{ADMIN}"
scopes = ["publish", "subscribe_all", "admin"]
[[auth.api_keys]]
name = "feed"
key = "{FEED}"
scopes = ["publish"]
{extra}
"#
        ),
    )
    .unwrap();
    Server::start(&dir.join("data"), &["--config", cfg.to_str().unwrap()], &[])
}

async fn ws_as(srv: &Server, token: &str) -> Ws {
    Ws::connect(&srv.ws_url(&format!("?token={token}"))).await
}

async fn say(ws: &mut Ws, channel: &str, text: &str) -> u64 {
    let r = ws
        .cmd(json!({"op": "publish", "channel": channel, "data": {"text": text}}))
        .await;
    assert_eq!(r["ok"], true, "{r}");
    r["offset"].as_u64().unwrap()
}

/// An HTTP request with a bearer credential; status and JSON body.
async fn call(
    method: reqwest::Method,
    srv: &Server,
    path: &str,
    cred: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let mut req = common::http()
        .request(method, srv.url(path))
        .bearer_auth(cred);
    if let Some(b) = body {
        req = req.body(b.to_string());
    }
    let r = req.send().await.unwrap();
    let st = r.status().as_u16();
    (st, r.json().await.unwrap_or(Value::Null))
}

/// The history page of `channel` once `ready` accepts it (the amendment index follows the
/// stream a moment behind).
async fn history_when(
    srv: &Server,
    channel: &str,
    cred: &str,
    ready: impl Fn(&Value) -> bool,
) -> Value {
    common::wait_for(
        srv,
        &format!("/v1/history/{channel}?from=0&token={cred}"),
        WAIT,
        ready,
    )
    .await
}

fn message(page: &Value, offset: u64) -> Value {
    page["messages"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["offset"] == offset)
        .cloned()
        .unwrap_or(Value::Null)
}

/// A chat line can be fixed or taken back by whoever wrote it, and by an operator's admin key,
/// and by nobody else: the edit or delete is a record in the channel, pushed live to its
/// subscribers, and history shows each message as it is now (the newest edit, or deleted).
/// Writing such a record by hand is refused, so the author check cannot be passed over.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn edits_and_deletes_by_author_or_admin_apply_live_and_in_history() {
    let dir = tempfile::tempdir().unwrap();
    let mut srv = start_with_identities(dir.path(), "");
    let ann_t = token("42", Some(r#"{"name":"Ann"}"#));
    let bob_t = token("7", Some(r#"{"name":"Bob"}"#));
    let mut ann = ws_as(&srv, &ann_t).await;
    let mut bob = ws_as(&srv, &bob_t).await;
    let mut watcher = ws_as(&srv, &token("9", None)).await;
    let r = watcher
        .cmd(json!({"op": "subscribe", "channel": "chat.room"}))
        .await;
    assert_eq!(r["ok"], true, "{r}");
    let typo = say(&mut ann, "chat.room", "hello wrld").await;
    let bobs = say(&mut bob, "chat.room", "hi ann").await;
    for want in [typo, bobs] {
        assert_eq!(watcher.push().await["offset"], want);
    }

    // The author fixes the typo: a record on the channel, pushed live.
    let r = ann
        .cmd(json!({"op": "edit", "channel": "chat.room", "offset": typo, "data": {"text": "hello world"}}))
        .await;
    assert_eq!(r["ok"], true, "{r}");
    let edit_at = r["offset"].as_u64().unwrap();
    let p = watcher.push().await;
    assert_eq!(p["offset"], edit_at, "{p}");
    assert_eq!(p["data"]["$edit"], typo, "{p}");
    assert_eq!(p["data"]["from"]["sub"], "42", "the editor is stamped: {p}");
    assert_eq!(p["data"]["data"]["text"], "hello world", "{p}");
    assert_eq!(
        p["data"]["data"]["from"],
        json!({"sub": "42", "info": {"name": "Ann"}}),
        "the edited message keeps its author: {p}"
    );

    // Nobody else may, whatever the op or the edge.
    for cmd in [
        json!({"op": "edit", "channel": "chat.room", "offset": typo, "data": {"text": "pwned"}}),
        json!({"op": "delete", "channel": "chat.room", "offset": typo}),
    ] {
        let r = bob.cmd(cmd.clone()).await;
        assert_eq!(r["error"]["code"], "forbidden", "{cmd}: {r}");
    }
    let (st, v) = call(
        reqwest::Method::DELETE,
        &srv,
        &format!("/v1/messages/chat.room/{typo}"),
        &bob_t,
        None,
    )
    .await;
    assert_eq!(st, 403, "{v}");
    // A publish-only server key is not an operator.
    let (st, v) = call(
        reqwest::Method::DELETE,
        &srv,
        &format!("/v1/messages/chat.room/{typo}"),
        FEED,
        None,
    )
    .await;
    assert_eq!(st, 403, "{v}");
    // Hand-written records are refused from clients (WebSocket and HTTP alike).
    let r = bob
        .cmd(json!({"op": "publish", "channel": "chat.room", "data": {"$delete": typo}}))
        .await;
    assert_eq!(r["error"]["code"], "bad_data", "{r}");
    let r = bob
        .cmd(json!({"op": "publish", "channel": "chat.room", "data": {"$edit": typo, "data": {"text": "x"}}}))
        .await;
    assert_eq!(r["error"]["code"], "bad_data", "{r}");
    let (st, v) = common::publish_raw(
        &srv,
        json!({"channel": "chat.room", "data": {"$delete": typo}}).to_string(),
        Some(&bob_t),
    )
    .await;
    assert_eq!(st, 422, "{v}");
    // Not a message: a record, a missing offset, a namespace without edits.
    let r = ann
        .cmd(json!({"op": "delete", "channel": "chat.room", "offset": edit_at}))
        .await;
    assert_eq!(r["error"]["code"], "bad_request", "{r}");
    let r = ann
        .cmd(json!({"op": "delete", "channel": "chat.room", "offset": 999_999}))
        .await;
    assert_eq!(r["error"]["code"], "not_found", "{r}");
    let r = ann
        .cmd(json!({"op": "delete", "channel": "chat.other", "offset": typo}))
        .await;
    assert_eq!(
        r["error"]["code"], "not_found",
        "another channel's offset: {r}"
    );

    // An operator removes Bob's line over REST.
    let (st, v) = call(
        reqwest::Method::DELETE,
        &srv,
        &format!("/v1/messages/chat.room/{bobs}"),
        ADMIN,
        None,
    )
    .await;
    assert_eq!(st, 200, "{v}");
    let delete_at = v["offset"].as_u64().unwrap();
    let p = watcher.push().await;
    assert_eq!(p["data"], json!({"$delete": bobs}), "{p}");

    // History shows each message as it is now, the records themselves in their place.
    let applied = |page: &Value| {
        message(page, bobs)["deleted"]["offset"] == delete_at
            && message(page, typo)["edited"]["offset"] == edit_at
    };
    let page = history_when(&srv, "chat.room", &bob_t, applied).await;
    assert_eq!(
        message(&page, typo)["data"]["text"],
        "hello world",
        "{page}"
    );
    assert_eq!(message(&page, typo)["data"]["from"]["sub"], "42", "{page}");
    assert!(message(&page, bobs).get("data").is_none(), "{page}");
    assert_eq!(message(&page, edit_at)["data"]["$edit"], typo);
    // A deleted message stays deleted.
    let r = bob
        .cmd(
            json!({"op": "edit", "channel": "chat.room", "offset": bobs, "data": {"text": "back"}}),
        )
        .await;
    assert_eq!(r["error"]["code"], "not_found", "{r}");
    // An edit over REST, then a second: the newest wins.
    let (st, v) = call(
        reqwest::Method::PATCH,
        &srv,
        &format!("/v1/messages/chat.room/{typo}"),
        &ann_t,
        Some(json!({"data": {"text": "hello, world"}})),
    )
    .await;
    assert_eq!(st, 200, "{v}");
    let second = v["offset"].as_u64().unwrap();
    let page = history_when(&srv, "chat.room", &bob_t, |p| {
        message(p, typo)["edited"]["offset"] == second
    })
    .await;
    assert_eq!(message(&page, typo)["data"]["text"], "hello, world");

    // After a crash the index is back as it was (checkpoint, then the stream after it).
    srv.kill9();
    let srv = start_with_identities(dir.path(), "");
    let page = history_when(&srv, "chat.room", &bob_t, |p| {
        message(p, typo)["edited"]["offset"] == second
            && message(p, bobs)["deleted"]["offset"] == delete_at
    })
    .await;
    assert_eq!(message(&page, typo)["data"]["text"], "hello, world");
}

/// Search as `cred` once `ready` accepts the answer (the index commits about every second).
async fn search_when(
    srv: &Server,
    query: &str,
    cred: &str,
    ready: impl Fn(&Value) -> bool,
) -> Value {
    common::wait_for(
        srv,
        &format!("/v1/search?{query}&token={cred}"),
        WAIT,
        ready,
    )
    .await
}

fn hit_offsets(v: &Value) -> Vec<(String, u64)> {
    common::search_hits(v)
}

/// Search finds what was published (words, phrases, prefixes, non-English text, newest
/// first, with author, time and a marked snippet), over REST and the WebSocket op; it shows
/// edits and forgets deletes; a user never finds another user's private `user.<id>` message,
/// whatever they ask; and the index is the same after a crash and a restart, new messages
/// found as before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn search_finds_what_was_said_scoped_to_what_the_reader_may_read() {
    let dir = tempfile::tempdir().unwrap();
    let mut srv = start_with_identities(dir.path(), "");
    let ann_t = token("42", Some(r#"{"name":"Ann"}"#));
    let bob_t = token("7", Some(r#"{"name":"Bob"}"#));
    let mut ann = ws_as(&srv, &ann_t).await;
    let mut bob = ws_as(&srv, &bob_t).await;
    let report = say(&mut ann, "chat.room", "The quarterly report is ready").await;
    let cafe = say(&mut bob, "chat.room", "Rendez-vous au Café à Zürich").await;
    let tokyo = say(&mut bob, "chat.travel", "東京タワーで会いましょう").await;
    // Private notifications, one per user, with the same words.
    let (st, v) = common::publish_raw(
        &srv,
        json!([
            {"channel": "user.42", "data": {"text": "payout report for Ann"}},
            {"channel": "user.7", "data": {"text": "payout report for Bob"}},
            {"channel": "user.420", "data": {"text": "payout report for someone else"}},
        ])
        .to_string(),
        Some(ADMIN),
    )
    .await;
    assert_eq!(st, 200, "{v}");
    let user_ann = v["results"][0]["offset"].as_u64().unwrap();
    let user_bob = v["results"][1]["offset"].as_u64().unwrap();

    // Each user finds their own notification and the chat line, never another user's.
    let v = search_when(&srv, "q=report", &ann_t, |v| hit_offsets(v).len() == 2).await;
    assert_eq!(
        hit_offsets(&v),
        [
            ("user.42".to_string(), user_ann),
            ("chat.room".into(), report)
        ],
        "newest first: {v}"
    );
    let v = search_when(&srv, "q=payout", &bob_t, |v| hit_offsets(v).len() == 1).await;
    assert_eq!(hit_offsets(&v), [("user.7".to_string(), user_bob)], "{v}");
    // Naming someone else's channel is refused, not answered empty.
    let (st, v) = call(
        reqwest::Method::GET,
        &srv,
        "/v1/search?q=payout&channel=user.42",
        &bob_t,
        None,
    )
    .await;
    assert_eq!(st, 403, "{v}");
    // An admin key reads everything.
    common::wait_for(
        &srv,
        &format!("/v1/search?q=payout&api_key={ADMIN}"),
        WAIT,
        |v| hit_offsets(v).len() == 3,
    )
    .await;
    // Without a credential: nothing of the private namespace, whatever the query.
    let v = common::get_json(&srv, "/v1/search?q=payout").await;
    assert!(hit_offsets(&v).is_empty(), "{v}");

    // The hit: where, when, who, and why (marked, escaped).
    let v = search_when(&srv, "q=quarterly", &bob_t, |v| hit_offsets(v).len() == 1).await;
    let h = &v["hits"][0];
    assert_eq!(h["from"]["sub"], "42", "{h}");
    assert_eq!(h["from"]["info"]["name"], "Ann", "{h}");
    assert!(h["ts"].as_u64().unwrap() > 1_700_000_000_000, "{h}");
    assert_eq!(h["snippet"], "The <mark>quarterly</mark> report is ready");
    // Phrases, prefixes, exclusions, accents and ideographs; filters by author and channel.
    for (q, want) in [
        ("%22report%20is%20ready%22", vec![report]),
        ("%22ready%20is%22", vec![]),
        ("quart*", vec![report]),
        ("cafe%20zurich", vec![cafe]),
        ("%E6%9D%B1%E4%BA%AC", vec![tokyo]),
        ("report%20-quarterly", vec![]),
    ] {
        let chat_hits = |v: &Value| -> Vec<u64> {
            hit_offsets(v)
                .into_iter()
                .filter(|(c, _)| c.starts_with("chat."))
                .map(|(_, o)| o)
                .collect()
        };
        let v = search_when(&srv, &format!("q={q}"), &bob_t, |v| chat_hits(v) == want).await;
        let got = chat_hits(&v);
        assert_eq!(got, want, "{q}: {v}");
    }
    let v = search_when(&srv, "q=report&from_user=7", &ann_t, |v| {
        v["hits"].is_array()
    })
    .await;
    assert!(hit_offsets(&v).is_empty(), "{v}");

    // The WebSocket op answers the same.
    let r = ann
        .cmd(json!({"op": "search", "q": "\"quarterly rep\"*"}))
        .await;
    assert_eq!(r["ok"], true, "{r}");
    assert_eq!(r["hits"][0]["offset"], report, "{r}");
    assert_eq!(
        r["hits"][0]["snippet"],
        "The <mark>quarterly</mark> <mark>report</mark> is ready"
    );
    let r = bob
        .cmd(json!({"op": "search", "q": "payout", "channel": "user.42"}))
        .await;
    assert_eq!(r["error"]["code"], "forbidden", "{r}");

    // An edit re-indexes the message; a delete removes it.
    let r = ann
        .cmd(json!({"op": "edit", "channel": "chat.room", "offset": report, "data": {"text": "The annual report is ready"}}))
        .await;
    assert_eq!(r["ok"], true, "{r}");
    let (st, v) = call(
        reqwest::Method::DELETE,
        &srv,
        &format!("/v1/messages/chat.room/{cafe}"),
        ADMIN,
        None,
    )
    .await;
    assert_eq!(st, 200, "{v}");
    let v = search_when(&srv, "q=annual", &bob_t, |v| hit_offsets(v).len() == 1).await;
    assert_eq!(v["hits"][0]["offset"], report);
    assert_eq!(v["hits"][0]["edited"], true);
    search_when(&srv, "q=quarterly", &bob_t, |v| hit_offsets(v).is_empty()).await;
    search_when(&srv, "q=cafe", &bob_t, |v| hit_offsets(v).is_empty()).await;

    // A crash, then a restart: the same answers, and what is said next is found too.
    srv.kill9();
    let srv = start_with_identities(dir.path(), "");
    let v = search_when(&srv, "q=annual", &bob_t, |v| hit_offsets(v).len() == 1).await;
    assert_eq!(v["hits"][0]["offset"], report);
    let v = search_when(&srv, "q=payout", &bob_t, |v| hit_offsets(v).len() == 1).await;
    assert_eq!(hit_offsets(&v), [("user.7".to_string(), user_bob)], "{v}");
    search_when(&srv, "q=cafe", &bob_t, |v| hit_offsets(v).is_empty()).await;
    let mut ann = ws_as(&srv, &ann_t).await;
    let later = say(&mut ann, "chat.room", "after the restart").await;
    let v = search_when(&srv, "q=restart", &bob_t, |v| hit_offsets(v).len() == 1).await;
    assert_eq!(v["hits"][0]["offset"], later);
    // Nothing counted twice: one hit per message after the replay.
    let v = search_when(&srv, "q=report", &ann_t, |v| hit_offsets(v).len() == 2).await;
    assert_eq!(hit_offsets(&v).len(), 2, "{v}");
}

/// A presence subscriber's view: the members its subscribe reply listed, changed by each
/// join and leave push the way docs/chat.md tells clients to (a join of someone listed, a
/// leave of someone not, changes nothing: events published before the reply may arrive after
/// it).
struct Members {
    subs: std::collections::BTreeSet<String>,
}

impl Members {
    fn from_reply(r: &Value) -> Members {
        Members {
            subs: subs(&r["presence"]).into_iter().collect(),
        }
    }

    /// The next push on `presence.<channel>` that changes who is there.
    async fn next_change(&mut self, ws: &mut Ws, channel: &str) -> Value {
        let ch = format!("presence.{channel}");
        loop {
            let p = ws.try_push(WAIT).await.expect("a presence push");
            if p["ch"] != ch.as_str() {
                continue;
            }
            if let Some(sub) = p["data"]["join"]["sub"].as_str() {
                if self.subs.insert(sub.to_string()) {
                    return p;
                }
            } else if let Some(sub) = p["data"]["leave"]["sub"].as_str() {
                if self.subs.remove(sub) {
                    return p;
                }
            } else {
                panic!("not a presence event: {p}");
            }
        }
    }
}

fn subs(members: &Value) -> Vec<String> {
    common::member_subs(members)
}

/// Presence counts users, not connections: a user with two connections joins once and leaves
/// only when both are gone (closed or unsubscribed), then joins again on reconnecting. A
/// subscriber that asks gets who is there with its subscribe reply and each join and leave
/// after it, in order; REST and the WebSocket op answer the same list; who is in a channel is
/// as private as the channel.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn presence_joins_and_leaves_by_user_across_connections() {
    let dir = tempfile::tempdir().unwrap();
    let srv = start_with_identities(dir.path(), "");
    let ann_t = token("42", Some(r#"{"name":"Ann"}"#));
    let bob_t = token("7", Some(r#"{"name":"Bob"}"#));
    let mut ann1 = ws_as(&srv, &ann_t).await;
    let r = ann1
        .cmd(json!({"op": "subscribe", "channel": "chat.room"}))
        .await;
    assert_eq!(r["ok"], true, "{r}");

    // Bob asks for presence: Ann and himself now, then the changes.
    let mut bob = ws_as(&srv, &bob_t).await;
    let r = bob
        .cmd(json!({"op": "subscribe", "channel": "chat.room", "presence": true}))
        .await;
    assert_eq!(r["ok"], true, "{r}");
    assert_eq!(subs(&r["presence"]), ["42", "7"], "{r}");
    let ann_entry = r["presence"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["sub"] == "42")
        .cloned()
        .unwrap();
    assert_eq!(ann_entry["info"]["name"], "Ann", "{r}");
    let mut seen = Members::from_reply(&r);

    // Ann's second connection (another tab): no join, she is there already.
    let mut ann2 = ws_as(&srv, &ann_t).await;
    let r = ann2
        .cmd(json!({"op": "subscribe", "channel": "chat.room"}))
        .await;
    assert_eq!(r["ok"], true, "{r}");
    // Carol comes: a join.
    let mut carol = ws_as(&srv, &token("9", None)).await;
    let r = carol
        .cmd(json!({"op": "subscribe", "channel": "chat.room"}))
        .await;
    assert_eq!(r["ok"], true, "{r}");
    let p = seen.next_change(&mut bob, "chat.room").await;
    assert_eq!(p["data"], json!({"join": {"sub": "9"}}), "{p}");

    // Ann's first tab closes: she stays. Carol unsubscribes: she leaves.
    ann1.ws.close(None).await.unwrap();
    drop(ann1);
    let r = carol
        .cmd(json!({"op": "unsubscribe", "channel": "chat.room"}))
        .await;
    assert_eq!(r["ok"], true, "{r}");
    let p = seen.next_change(&mut bob, "chat.room").await;
    assert_eq!(
        p["data"],
        json!({"leave": {"sub": "9"}}),
        "Ann did not leave: {p}"
    );
    let (st, v) = call(
        reqwest::Method::GET,
        &srv,
        "/v1/presence/chat.room",
        &bob_t,
        None,
    )
    .await;
    assert_eq!(st, 200, "{v}");
    assert_eq!(subs(&v["members"]), ["42", "7"], "{v}");

    // Her last connection drops without a close frame: she leaves.
    drop(ann2);
    let p = seen.next_change(&mut bob, "chat.room").await;
    assert_eq!(p["data"], json!({"leave": {"sub": "42"}}), "{p}");
    let r = bob
        .cmd(json!({"op": "presence", "channel": "chat.room"}))
        .await;
    assert_eq!(subs(&r["members"]), ["7"], "{r}");

    // She reconnects: a join again, with her info.
    let mut ann3 = ws_as(&srv, &ann_t).await;
    let r = ann3
        .cmd(json!({"op": "subscribe", "channel": "chat.room"}))
        .await;
    assert_eq!(r["ok"], true, "{r}");
    let p = seen.next_change(&mut bob, "chat.room").await;
    assert_eq!(
        p["data"],
        json!({"join": {"sub": "42", "info": {"name": "Ann"}}}),
        "{p}"
    );
    let v = common::wait_for(
        &srv,
        &format!("/v1/presence/chat.room?token={bob_t}"),
        WAIT,
        |v| subs(&v["members"]) == ["42", "7"],
    )
    .await;
    assert_eq!(subs(&v["members"]), ["42", "7"]);

    // Private: nobody without a credential; a namespace without presence says so.
    let v = common::get_json(&srv, "/v1/presence/chat.room").await;
    assert_eq!(v["code"], "unauthorized", "{v}");
    let (st, v) = call(
        reqwest::Method::GET,
        &srv,
        "/v1/presence/user.7",
        &bob_t,
        None,
    )
    .await;
    assert_eq!(st, 400, "{v}");
    let (st, v) = call(
        reqwest::Method::GET,
        &srv,
        "/v1/presence/user.42",
        &bob_t,
        None,
    )
    .await;
    assert_eq!(st, 403, "{v}");
}

/// A user's read marker is stored per channel, only moves forward, survives a restart, and
/// every subscribe reply and the marker list carry the unread count after it (edit and delete
/// records not counted).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_markers_and_unread_counts_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let mut srv = start_with_identities(dir.path(), "");
    let ann_t = token("42", None);
    let bob_t = token("7", None);
    let mut bob = ws_as(&srv, &bob_t).await;
    let mut said = Vec::new();
    for i in 0..5 {
        said.push(say(&mut bob, "chat.room", &format!("line {i}")).await);
    }
    let mut ann = ws_as(&srv, &ann_t).await;
    // Nothing read yet: everything is unread.
    let r = ann
        .cmd(json!({"op": "subscribe", "channel": "chat.room"}))
        .await;
    assert_eq!(
        (r["read"].clone(), r["unread"].clone()),
        (Value::Null, json!(5)),
        "{r}"
    );
    // She read up to the third line.
    let r = ann
        .cmd(json!({"op": "read", "channel": "chat.room", "offset": said[2]}))
        .await;
    assert_eq!(r["ok"], true, "{r}");
    assert_eq!(
        (r["read"].clone(), r["unread"].clone()),
        (json!(said[2]), json!(2)),
        "{r}"
    );
    // An older read from a stale device does not move it back.
    let (st, v) = call(
        reqwest::Method::POST,
        &srv,
        "/v1/markers",
        &ann_t,
        Some(json!({"channel": "chat.room", "offset": said[0]})),
    )
    .await;
    assert_eq!(st, 200, "{v}");
    assert_eq!(
        (v["read"].clone(), v["unread"].clone()),
        (json!(said[2]), json!(2)),
        "{v}"
    );
    // An edit record is not a new message.
    let r = bob
        .cmd(json!({"op": "edit", "channel": "chat.room", "offset": said[4], "data": {"text": "line 4!"}}))
        .await;
    assert_eq!(r["ok"], true, "{r}");
    let (_, v) = call(reqwest::Method::GET, &srv, "/v1/markers", &ann_t, None).await;
    assert_eq!(
        v["markers"],
        json!([{"channel": "chat.room", "read": said[2], "unread": 2}]),
        "{v}"
    );
    // Markers are a user's own.
    let (_, v) = call(reqwest::Method::GET, &srv, "/v1/markers", &bob_t, None).await;
    assert_eq!(v["markers"], json!([]), "{v}");
    let (st, v) = call(reqwest::Method::GET, &srv, "/v1/markers", ADMIN, None).await;
    assert_eq!(st, 400, "{v}");

    // A crash right after (the marker is in the stream; the projection may not have
    // checkpointed it), a restart, and more lines.
    srv.kill9();
    let srv = start_with_identities(dir.path(), "");
    let mut bob = ws_as(&srv, &bob_t).await;
    say(&mut bob, "chat.room", "line 5").await;
    let v = common::wait_for(&srv, &format!("/v1/markers?token={ann_t}"), WAIT, |v| {
        v["markers"][0]["read"] == said[2]
    })
    .await;
    assert_eq!(
        v["markers"],
        json!([{"channel": "chat.room", "read": said[2], "unread": 3}]),
        "{v}"
    );
    let mut ann = ws_as(&srv, &ann_t).await;
    let r = ann
        .cmd(json!({"op": "subscribe", "channel": "chat.room"}))
        .await;
    assert_eq!(
        (r["read"].clone(), r["unread"].clone()),
        (json!(said[2]), json!(3)),
        "{r}"
    );
    let r = ann.cmd(json!({"op": "markers"})).await;
    assert_eq!(r["markers"][0]["unread"], 3, "{r}");
}
