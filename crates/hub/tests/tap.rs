//! Hub taps: one batch per dispatched writer batch, every message in offset order, and a
//! memory bound counted in messages that makes the writer wait instead of dropping.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{sync::Arc, time::Duration};

use bytes::Bytes;
use tickwire_hub::{Channel, Hub, HubConfig, PublishRequest, Tap};

fn req(channel: &str, data: String) -> PublishRequest {
    PublishRequest {
        channel: Channel::parse(channel).unwrap(),
        msg_id: None,
        data: Bytes::from(data),
    }
}

fn quote(i: usize) -> String {
    format!(
        r#"{{"bid":"1.{:05}","ask":"1.{:05}"}}"#,
        i % 90_000,
        i % 90_000 + 2
    )
}

fn trade(i: usize) -> String {
    format!(r#"{{"price":"1.{:05}","size":"1"}}"#, i % 90_000)
}

/// Publishes `n` messages into `ns` as one request; the acknowledged offsets.
async fn publish_batch(hub: &Hub, ns: &str, first: usize, n: usize) -> Vec<u64> {
    let reqs = (first..first + n)
        .map(|i| {
            let data = if ns == "quotes" { quote(i) } else { trade(i) };
            req(&format!("{ns}.S{}", i % 13), data)
        })
        .collect();
    hub.publish(reqs)
        .await
        .into_iter()
        .map(|r| r.unwrap().offset)
        .collect()
}

/// Reads batches until `total` messages arrived; checks each batch is non-empty and within
/// `capacity` unless it is a single oversize writer batch, and returns the offsets.
async fn read_all(mut tap: Tap, total: usize) -> (Vec<u64>, usize) {
    let mut seen = Vec::with_capacity(total);
    let mut batches = 0;
    while seen.len() < total {
        let batch = tap.recv().await.unwrap();
        assert!(!batch.is_empty());
        seen.extend(batch.iter().map(|m| m.publication.offset));
        batches += 1;
        // Let the writers get ahead so the bound is exercised.
        if batches % 7 == 0 {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }
    (seen, batches)
}

async fn many_concurrent_batches_in_order(ns: &'static str) {
    let dir = tempfile::tempdir().unwrap();
    let hub = Arc::new(Hub::open(HubConfig::new(dir.path())).unwrap());
    // Smaller than some writer batches (group commit merges the publishers' requests).
    let tap = hub.tap(ns, 64).unwrap();
    let (publishers, rounds, size) = (8, 20, 37);
    let total = publishers * rounds * size;
    let reader = tokio::spawn(read_all(tap, total));
    let mut tasks = Vec::new();
    for p in 0..publishers {
        let hub = hub.clone();
        tasks.push(tokio::spawn(async move {
            let mut offs = Vec::new();
            for r in 0..rounds {
                offs.extend(publish_batch(&hub, ns, (p * rounds + r) * size, size).await);
            }
            offs
        }));
    }
    let mut acked = Vec::new();
    for t in tasks {
        acked.extend(t.await.unwrap());
    }
    acked.sort_unstable();
    let (seen, batches) = tokio::time::timeout(Duration::from_secs(30), reader)
        .await
        .expect("the tap saw every message")
        .unwrap();
    // Every message once, in offset order, and fewer sends than messages.
    assert_eq!(seen, acked);
    assert_eq!(seen, (0..total as u64).collect::<Vec<_>>());
    assert!(batches < total, "{batches} batches for {total} messages");
    hub.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tap_sees_every_message_of_concurrent_batches_in_order_state() {
    many_concurrent_batches_in_order("quotes").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tap_sees_every_message_of_concurrent_batches_in_order_stream() {
    // Stream messages under fsync = always are dispatched by the fsync thread.
    many_concurrent_batches_in_order("trades").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_tap_blocks_the_writer_until_batches_are_dropped() {
    let dir = tempfile::tempdir().unwrap();
    let hub = Arc::new(Hub::open(HubConfig::new(dir.path())).unwrap());
    let mut tap = hub.tap("quotes", 10).unwrap();
    // 6 + 4 messages fill the tap exactly; nobody reads.
    assert_eq!(
        publish_batch(&hub, "quotes", 0, 6).await,
        (0..6).collect::<Vec<_>>()
    );
    assert_eq!(
        publish_batch(&hub, "quotes", 6, 4).await,
        (6..10).collect::<Vec<_>>()
    );
    // One more message does not fit: the writer waits, so its publish is not acknowledged.
    let blocked = {
        let hub = hub.clone();
        tokio::spawn(async move { publish_batch(&hub, "quotes", 10, 1).await })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !blocked.is_finished(),
        "a full tap must make the writer wait"
    );
    // Receiving alone does not free room: the consumer frees it by dropping a batch it applied.
    let first = tap.recv().await.unwrap();
    assert_eq!(first.len(), 6);
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(!blocked.is_finished());
    drop(first);
    let offs = tokio::time::timeout(Duration::from_secs(10), blocked)
        .await
        .expect("the writer resumes once room is free")
        .unwrap();
    assert_eq!(offs, vec![10]);
    let second = tap.recv().await.unwrap();
    assert_eq!(
        second
            .iter()
            .map(|m| m.publication.offset)
            .collect::<Vec<_>>(),
        (6..10).collect::<Vec<_>>()
    );
    drop(second);
    let third = tap.recv().await.unwrap();
    assert_eq!(third[0].publication.offset, 10);
    drop(third);

    // A writer batch larger than the whole capacity still goes through, whole, once the tap is
    // empty.
    assert_eq!(publish_batch(&hub, "quotes", 11, 25).await.len(), 25);
    let big = tap.recv().await.unwrap();
    assert_eq!(
        big.iter().map(|m| m.publication.offset).collect::<Vec<_>>(),
        (11..36).collect::<Vec<_>>()
    );

    // While `big` holds every permit, the next batch waits; dropping the tap (and with it the
    // batch) removes the tap and releases the writer.
    let blocked = {
        let hub = hub.clone();
        tokio::spawn(async move { publish_batch(&hub, "quotes", 36, 2).await })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(!blocked.is_finished());
    drop(tap);
    let offs = tokio::time::timeout(Duration::from_secs(10), blocked)
        .await
        .expect("a closed tap does not block the writer")
        .unwrap();
    assert_eq!(offs, vec![36, 37]);
    // Gone for good: later publishes do not wait for it.
    assert_eq!(publish_batch(&hub, "quotes", 38, 20).await.len(), 20);
    drop(big);
    hub.shutdown().await;
}
