//! What an acknowledgement promises under `fsync = interval` and `never` (docs/configuration.md,
//! "Durability"): the message was written to the OS, so it survives the process. Publishers
//! over HTTP and WebSocket run concurrently while the server is stopped (SIGTERM, which drains,
//! or kill -9); after a restart every message that got an ack is in history, once, at its
//! acknowledged offset, with its data, and its msg_id is still known.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::{
    collections::{BTreeMap, HashMap},
    sync::{Arc, Mutex},
    time::Duration,
};

use common::{get_json, http, publish, Server, TIMEOUT};
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;

const HTTP_PUBLISHERS: usize = 3;
const WS_PUBLISHERS: usize = 3;
/// Publish commands a WebSocket publisher keeps in flight.
const WS_WINDOW: usize = 16;
/// How long the publishers run before the stop.
const RUN_BEFORE_STOP: Duration = Duration::from_millis(1500);

/// An acknowledged message: where the server said it put it, and what it was.
#[derive(Debug, Clone, PartialEq)]
struct Acked {
    offset: u64,
    data: Value,
}

/// Every ack received, by (channel, msg_id).
type Acks = Arc<Mutex<HashMap<(String, String), Acked>>>;

fn channel_of(publisher: usize) -> String {
    format!("chat.drain{}", publisher % 2)
}

/// Publishes batches of 20 over HTTP until the server stops answering; records each item the
/// server acknowledged.
async fn http_publisher(srv_url: String, p: usize, acks: Acks) -> usize {
    let client = http();
    let channel = channel_of(p);
    let mut seq = 0;
    let mut n = 0;
    loop {
        let items: Vec<Value> = (seq..seq + 20)
            .map(|i| json!({"channel": channel, "msg_id": format!("h{p}-{i}"), "data": {"p": p, "i": i, "via": "http"}}))
            .collect();
        seq += 20;
        let Ok(r) = client
            .post(format!("{srv_url}/v1/publish"))
            .body(Value::Array(items.clone()).to_string())
            .send()
            .await
        else {
            return n;
        };
        if r.status() != 200 {
            return n;
        }
        let Ok(v) = r.json::<Value>().await else {
            return n;
        };
        let results = v["results"].as_array().cloned().unwrap_or_default();
        let mut acks = acks.lock().unwrap();
        for (item, res) in items.iter().zip(&results) {
            if let Some(offset) = res["offset"].as_u64() {
                assert_eq!(res["duplicate"], false, "{res}");
                let key = (
                    channel.clone(),
                    item["msg_id"].as_str().unwrap().to_string(),
                );
                acks.insert(
                    key,
                    Acked {
                        offset,
                        data: item["data"].clone(),
                    },
                );
                n += 1;
            }
        }
    }
}

/// Publishes over one WebSocket with a window of commands in flight until the connection ends;
/// records each publish the server acknowledged.
async fn ws_publisher(ws_url: String, p: usize, acks: Acks) -> usize {
    let Ok((mut ws, _)) = tokio_tungstenite::connect_async(&ws_url).await else {
        return 0;
    };
    let channel = channel_of(p);
    let mut pending: BTreeMap<u64, (String, Value)> = BTreeMap::new();
    let mut next_id = 1u64;
    let mut n = 0;
    loop {
        while pending.len() < WS_WINDOW {
            let id = next_id;
            next_id += 1;
            let msg_id = format!("w{p}-{id}");
            let data = json!({"p": p, "i": id, "via": "ws"});
            let cmd = json!({"id": id, "op": "publish", "channel": channel, "msg_id": msg_id, "data": data});
            if ws
                .send(Message::Text(cmd.to_string().into()))
                .await
                .is_err()
            {
                return n;
            }
            pending.insert(id, (msg_id, data));
        }
        let frame = match tokio::time::timeout(TIMEOUT, ws.next()).await {
            Ok(Some(Ok(Message::Text(t)))) => t,
            Ok(Some(Ok(_))) => continue,
            // Closed, reset or silent: the stop reached this connection.
            _ => return n,
        };
        let v: Value = serde_json::from_str(&frame).unwrap();
        let Some(id) = v["id"].as_u64() else {
            continue; // the disconnect notice before the close
        };
        let (msg_id, data) = pending.remove(&id).expect("a reply to a command sent");
        if v["ok"] == true {
            assert_eq!(v["duplicate"], false, "{v}");
            acks.lock().unwrap().insert(
                (channel.clone(), msg_id),
                Acked {
                    offset: v["offset"].as_u64().unwrap(),
                    data,
                },
            );
            n += 1;
        }
    }
}

/// Every message of `channel` in history, by msg_id; fails on a msg_id stored twice or offsets
/// out of order. (Offsets are the namespace's: the other channel's messages sit between.)
async fn history(srv: &Server, channel: &str) -> HashMap<String, Acked> {
    let mut out = HashMap::new();
    let mut from = 0u64;
    let mut last = None;
    loop {
        let v = get_json(
            srv,
            &format!("/v1/history/{channel}?from={from}&limit=1000"),
        )
        .await;
        let msgs = v["messages"].as_array().unwrap();
        if msgs.is_empty() {
            return out;
        }
        from = v["next"].as_u64().unwrap();
        for m in msgs {
            let offset = m["offset"].as_u64().unwrap();
            assert!(last < Some(offset), "{channel}: offsets in order");
            last = Some(offset);
            let id = m["msg_id"].as_str().unwrap().to_string();
            let had = out.insert(
                id.clone(),
                Acked {
                    offset,
                    data: m["data"].clone(),
                },
            );
            assert!(had.is_none(), "{channel}: msg_id {id} stored twice");
        }
    }
}

enum Stop {
    /// SIGTERM: the server drains and exits 0.
    Term,
    /// SIGKILL: the process dies with whatever it had written.
    Kill,
}

/// Publishes over HTTP and WebSocket concurrently, stops the server mid-stream, restarts it
/// and checks every acknowledged message.
async fn acked_messages_survive(fsync: &str, stop: Stop) {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("d");
    let args = ["--fsync", fsync];
    // The retries below sample every acknowledged id; a fast machine acknowledges more than
    // the default window (100,000 ids per namespace) remembers, and forgotten ids are new.
    let env = [("TICKWIRE_DEDUP_WINDOW", "10000000")];
    let mut srv = Server::start(&data, &args, &env);
    let acks: Acks = Arc::default();
    let mut tasks = Vec::new();
    for p in 0..HTTP_PUBLISHERS {
        tasks.push(tokio::spawn(http_publisher(srv.url(""), p, acks.clone())));
    }
    for p in 0..WS_PUBLISHERS {
        tasks.push(tokio::spawn(ws_publisher(
            srv.ws_url(""),
            HTTP_PUBLISHERS + p,
            acks.clone(),
        )));
    }
    tokio::time::sleep(RUN_BEFORE_STOP).await;
    let before_stop = acks.lock().unwrap().len();
    // The stop lands while every publisher has requests in flight.
    match stop {
        Stop::Term => {
            let st = tokio::task::spawn_blocking(move || {
                let st = srv.terminate();
                (st, srv)
            })
            .await
            .unwrap();
            assert!(st.0.success(), "SIGTERM: clean exit, got {:?}", st.0);
        }
        Stop::Kill => srv.kill9(),
    }
    let mut per_task = Vec::new();
    for t in tasks {
        per_task.push(
            tokio::time::timeout(TIMEOUT, t)
                .await
                .expect("a publisher noticed the stop")
                .unwrap(),
        );
    }
    let acks = acks.lock().unwrap().clone();
    eprintln!(
        "{} acks ({before_stop} before the stop), per publisher {per_task:?}",
        acks.len()
    );
    // Every publisher, over both edges, was acknowledged before the stop: the stop hit a
    // running stream, not an idle server.
    assert!(
        per_task.iter().all(|&n| n > 0) && before_stop > 100,
        "{per_task:?}"
    );

    let srv = Server::start(&data, &args, &env);
    let mut stored = HashMap::new();
    for c in 0..2 {
        let ch = channel_of(c);
        for (id, m) in history(&srv, &ch).await {
            stored.insert((ch.clone(), id), m);
        }
    }
    let mut missing = Vec::new();
    for (key, a) in &acks {
        match stored.get(key) {
            Some(s) => assert_eq!(s, a, "{key:?} stored differently from its ack"),
            None => missing.push(key.clone()),
        }
    }
    missing.sort();
    assert!(
        missing.is_empty(),
        "{} of {} acknowledged messages missing after the restart, first {:?}",
        missing.len(),
        acks.len(),
        &missing[..missing.len().min(5)]
    );
    // The idempotency window came back too: a retry of an acknowledged msg_id is a duplicate
    // at its first offset, not a second copy.
    let mut sample: Vec<_> = acks.iter().collect();
    sample.sort_by_key(|(k, _)| (*k).clone());
    let retry: Vec<Value> = sample
        .iter()
        .step_by((sample.len() / 50).max(1))
        .map(|((ch, id), a)| json!({"channel": ch, "msg_id": id, "data": a.data}))
        .collect();
    let (s, v) = publish(&srv, &Value::Array(retry.clone())).await;
    assert_eq!(s, 200, "{v}");
    for (item, res) in retry.iter().zip(v["results"].as_array().unwrap()) {
        let key = (
            item["channel"].as_str().unwrap().to_string(),
            item["msg_id"].as_str().unwrap().to_string(),
        );
        assert_eq!(res["duplicate"], true, "{key:?}: {res}");
        assert_eq!(res["offset"].as_u64(), Some(acks[&key].offset), "{key:?}");
    }
}

/// `fsync = interval`, SIGTERM while HTTP and WebSocket publishers are mid-stream: the drain
/// answers or refuses what is in flight, and a restart finds every acknowledged message.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_under_fsync_interval_keeps_every_acknowledged_message() {
    acked_messages_survive("interval:200ms", Stop::Term).await;
}

/// `fsync = interval`, kill -9 mid-stream: an ack means the OS has the message, so a process
/// crash loses none of them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill9_under_fsync_interval_keeps_every_acknowledged_message() {
    acked_messages_survive("interval:200ms", Stop::Kill).await;
}

/// `fsync = never`, kill -9 mid-stream: the same promise for a process crash.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill9_under_fsync_never_keeps_every_acknowledged_message() {
    acked_messages_survive("never", Stop::Kill).await;
}
