//! A long replay runs beside a connection's other work, never in front of it: while one
//! WebSocket replays 100,000 chat messages from offset 0, a subscribe sent on the same
//! connection is answered, and its snapshot delivered, within 50 ms; and for a client that
//! reads slower than the server replays, the reply waits only behind what the client's own
//! socket buffer already holds, not behind the server's backlog.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::{Duration, Instant};

use common::*;
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;

const MESSAGES: usize = 100_000;
const BATCH: usize = 10_000;

/// Starts a server with `MESSAGES` chat messages and a quote stored.
async fn server_with_history(dir: &std::path::Path) -> Server {
    // fsync per batch is not what is measured here.
    let srv = Server::start(&dir.join("d"), &["--fsync", "never"], &[]);
    for b in 0..MESSAGES / BATCH {
        let batch: Vec<Value> = (0..BATCH)
            .map(|i| json!({"channel": "chat.lobby", "data": {"text": format!("message {}", b * BATCH + i), "pad": "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"}}))
            .collect();
        let (status, body) = publish(&srv, &Value::Array(batch)).await;
        assert_eq!(status, 200, "{body}");
    }
    let (status, _) = publish(
        &srv,
        &json!({"channel": "quotes.EURUSD", "data": {"bid": "1.1", "ask": "1.2"}}),
    )
    .await;
    assert_eq!(status, 200);
    srv
}

/// Replays the whole chat history from 0, reading as fast as it can, or pausing 1 ms every
/// `pause_every` messages; after 1,000 messages it subscribes to a quote on the same
/// connection. How long the reply and the snapshot took.
async fn subscribe_during_replay(srv: &Server, pause_every: usize) -> (Duration, Duration) {
    let (mut ws, _) = tokio_tungstenite::connect_async(srv.ws_url(""))
        .await
        .unwrap();
    ws.send(Message::Text(
        json!({"id": 1, "op": "subscribe", "channel": "chat.lobby", "from": 0})
            .to_string()
            .into(),
    ))
    .await
    .unwrap();
    let mut replayed = 0usize;
    let mut asked: Option<Instant> = None;
    let mut reply_after = None;
    let mut snapshot_after = None;
    let deadline = Instant::now() + Duration::from_secs(120);
    while replayed < MESSAGES || reply_after.is_none() || snapshot_after.is_none() {
        assert!(
            Instant::now() < deadline,
            "replayed {replayed}, reply {reply_after:?}, snapshot {snapshot_after:?}"
        );
        let m = tokio::time::timeout(Duration::from_secs(20), ws.next())
            .await
            .expect("read timed out")
            .expect("connection ended")
            .unwrap();
        let Message::Text(t) = m else { continue };
        // Cheap checks first: a fast client must keep up with the replay to measure the server.
        if t.starts_with(r#"{"ch":"chat.lobby""#) {
            replayed += 1;
            if pause_every > 0 && replayed.is_multiple_of(pause_every) {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            if replayed == 1_000 {
                ws.send(Message::Text(
                    json!({"id": 2, "op": "subscribe", "channel": "quotes.EURUSD"})
                        .to_string()
                        .into(),
                ))
                .await
                .unwrap();
                asked = Some(Instant::now());
            }
            continue;
        }
        let v: Value = serde_json::from_str(&t).unwrap();
        if v["id"] == 2 {
            assert_eq!(v["ok"], true, "{v}");
            reply_after = asked.map(|a| a.elapsed());
        } else if v["ch"] == "quotes.EURUSD" {
            assert_eq!(v["snapshot"], true, "{v}");
            snapshot_after = asked.map(|a| a.elapsed());
        }
    }
    let (reply, snapshot) = (reply_after.unwrap(), snapshot_after.unwrap());
    eprintln!(
        "pause every {pause_every}: replayed {replayed}; reply after {reply:?}, snapshot after {snapshot:?}"
    );
    (reply, snapshot)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_replay_does_not_delay_the_next_subscribe() {
    let dir = tempfile::tempdir().unwrap();
    let srv = server_with_history(dir.path()).await;
    let (reply, snapshot) = subscribe_during_replay(&srv, 0).await;
    assert!(
        reply < Duration::from_millis(50) && snapshot < Duration::from_millis(50),
        "the subscribe waited behind the replay: reply after {reply:?}, snapshot after {snapshot:?}"
    );
}

/// A client reading about 45,000 messages/s, slower than the replay: before the edge wrote
/// with a bounded backlog (TCP_NOTSENT_LOWAT, replies ahead of pushes, writes beside reads)
/// the reply waited 1.2 s behind the replay here; now 0.13-0.2 s, which is what the
/// client's own receive buffer holds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slower_reader_waits_only_behind_its_own_buffer() {
    let dir = tempfile::tempdir().unwrap();
    let srv = server_with_history(dir.path()).await;
    let (reply, snapshot) = subscribe_during_replay(&srv, 50).await;
    assert!(
        reply < Duration::from_millis(700) && snapshot < Duration::from_millis(700),
        "the subscribe waited behind the server's backlog: reply after {reply:?}, snapshot after {snapshot:?}"
    );
}
