//! The book projection over a real hub: deltas published on `depth.<SYM>` become
//! `book.<SYM>`, and a restart resumes from the checkpoint without applying anything twice.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{sync::Arc, time::Duration};

use bytes::Bytes;
use tickwire_hub::{Channel, Hub, HubConfig, PublishRequest};
use tickwire_model::DataDir;
use tickwire_proj_book::{start, BookConfig};

fn req(ch: &str, data: &str) -> PublishRequest {
    PublishRequest {
        channel: Channel::parse(ch).unwrap(),
        msg_id: None,
        data: Bytes::from(data.to_string()),
    }
}

async fn book_of(hub: &Hub, sym: &str) -> Option<String> {
    let ch = Channel::parse(&format!("book.{sym}")).unwrap();
    hub.latest(&ch)
        .unwrap()
        .map(|m| String::from_utf8(m.publication.data.to_vec()).unwrap())
}

/// Waits until the channel's book (a snapshot: `latest` gives the whole book) has the levels
/// of `want` (`{"asks":[...],"bids":[...]}`); returns its sequence number.
async fn wait_book(hub: &Hub, sym: &str, want: &str) -> u64 {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let want: serde_json::Value = serde_json::from_str(want).unwrap();
    loop {
        let got = book_of(hub, sym).await;
        if let Some(v) = got
            .as_deref()
            .and_then(|g| serde_json::from_str::<serde_json::Value>(g).ok())
        {
            assert_eq!(v["snapshot"], true, "{v}");
            if v["bids"] == want["bids"] && v["asks"] == want["asks"] {
                return v["seq"].as_u64().unwrap();
            }
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "book.{sym}: {got:?}, want {want}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deltas_become_books_and_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let data = DataDir::new(dir.path());
    let config = BookConfig {
        depth: 0,
        flush_interval: Duration::from_millis(10),
        checkpoint_interval: Duration::from_millis(10),
    };
    let first_seq;
    {
        let hub = Arc::new(Hub::open(HubConfig::new(dir.path())).unwrap());
        let svc = start(hub.clone(), &data, config.clone()).unwrap().unwrap();
        let r = hub
            .publish(vec![
                req(
                    "depth.EURUSD",
                    r#"{"snapshot":[{"side":"bid","price":"1.1","size":"5"},{"side":"ask","price":"1.12","size":"7"}]}"#,
                ),
                req(
                    "depth.EURUSD",
                    r#"{"updates":[{"action":"new","side":"bid","price":"1.10000000000000000001","size":"1","id":"b9"}]}"#,
                ),
                req("depth.EURUSD", r#"{"not":"a depth message"}"#),
            ])
            .await;
        assert!(r.iter().all(Result::is_ok));
        first_seq = wait_book(
            &hub,
            "EURUSD",
            r#"{"asks":[["1.12","7"]],"bids":[["1.10000000000000000001","1"],["1.1","5"]]}"#,
        )
        .await;
        assert_eq!(
            svc.stats
                .bad_messages
                .load(std::sync::atomic::Ordering::Relaxed),
            1
        );
        svc.stop();
        hub.shutdown().await;
    }
    // Restart: the book comes back from the checkpoint; a delta by id applies to it once.
    let hub = Arc::new(Hub::open(HubConfig::new(dir.path())).unwrap());
    let svc = start(hub.clone(), &data, config).unwrap().unwrap();
    hub.publish(vec![req(
        "depth.EURUSD",
        r#"{"updates":[{"action":"change","id":"b9","size":"3"}]}"#,
    )])
    .await;
    // The book continues its sequence numbers (the restart republished it as a snapshot).
    let seq = wait_book(
        &hub,
        "EURUSD",
        r#"{"asks":[["1.12","7"]],"bids":[["1.10000000000000000001","3"],["1.1","5"]]}"#,
    )
    .await;
    assert!(seq > first_seq, "{seq} after {first_seq}");
    assert_eq!(
        svc.stats.applied.load(std::sync::atomic::Ordering::Relaxed),
        1,
        "only the new delta is applied after a restart"
    );
    svc.stop();
    hub.shutdown().await;
}
