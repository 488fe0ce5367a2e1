//! Tails of a namespace's stream (what projections read): every message in offset order
//! under concurrent publishers, and a tail that is not read never holds up the writer; it
//! runs behind and catches up with nothing lost.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{sync::Arc, time::Duration};

use bytes::Bytes;
use tickwire_hub::{Channel, Hub, HubConfig, PublishRequest};
use tickwire_stream::Tail;

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

/// Reads until `total` messages arrived; checks each read is non-empty, and returns the
/// offsets and the number of reads.
async fn read_all(mut tail: Tail, total: usize) -> (Vec<u64>, usize) {
    let mut seen = Vec::with_capacity(total);
    let mut batches = 0;
    while seen.len() < total {
        let batch = tail.next().await.unwrap();
        assert!(!batch.is_empty());
        seen.extend(batch.iter().map(|p| p.offset));
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
    let tap = hub.stream(ns).unwrap().tail(0);
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
        .expect("the tail saw every message")
        .unwrap();
    // Every message once, in offset order, and fewer sends than messages.
    assert_eq!(seen, acked);
    assert_eq!(seen, (0..total as u64).collect::<Vec<_>>());
    assert!(batches < total, "{batches} batches for {total} messages");
    hub.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tail_sees_every_message_of_concurrent_batches_in_order_state() {
    many_concurrent_batches_in_order("quotes").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tail_sees_every_message_of_concurrent_batches_in_order_stream() {
    // Stream messages under fsync = always are dispatched by the fsync thread.
    many_concurrent_batches_in_order("trades").await;
}

/// The contract taps used to have was the opposite (a full tap made the writer wait): a
/// projection that falls behind must never take ingest's capacity, so it reads the stream
/// behind the writers instead.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tail_nobody_reads_never_blocks_the_writer() {
    let dir = tempfile::tempdir().unwrap();
    let hub = Arc::new(Hub::open(HubConfig::new(dir.path())).unwrap());
    let tail = hub.stream("quotes").unwrap().tail(0);
    let total = 20_000;
    let published = tokio::time::timeout(Duration::from_secs(30), async {
        let mut n = 0;
        while n < total {
            n += publish_batch(&hub, "quotes", n, 1_000).await.len();
        }
        n
    })
    .await
    .expect("publishing is never held up by a tail");
    assert_eq!(published, total);
    // Behind, and then caught up: every message, in order.
    let (seen, _) = tokio::time::timeout(Duration::from_secs(30), read_all(tail, total))
        .await
        .expect("the tail catches up");
    assert_eq!(seen, (0..total as u64).collect::<Vec<_>>());
    hub.shutdown().await;
}
