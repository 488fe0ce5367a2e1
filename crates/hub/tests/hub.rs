#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Hub behaviour through its public API, on a real log in a temp directory.

use std::time::Duration;

use bytes::Bytes;
use tickwire_hub::{CloseReason, Hub, HubConfig, HubError, PublishRequest, Session};
use tickwire_model::{Channel, Class, ModelError};

fn ch(s: &str) -> Channel {
    Channel::parse(s).unwrap()
}

fn req(c: &str, data: &str, id: Option<&str>) -> PublishRequest {
    PublishRequest {
        channel: ch(c),
        msg_id: id.map(str::to_string),
        data: Bytes::from(data.to_string()),
    }
}

async fn publish1(hub: &Hub, c: &str, data: &str, id: Option<&str>) -> u64 {
    hub.publish(vec![req(c, data, id)])
        .await
        .remove(0)
        .unwrap()
        .offset
}

async fn drain_until(s: &mut Session, want: usize) -> Vec<tickwire_hub::Delivery> {
    let mut got = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while got.len() < want {
        got.extend(s.drain().await.unwrap());
        if got.len() >= want {
            break;
        }
        tokio::select! {
            _ = s.wait() => {}
            _ = tokio::time::sleep_until(deadline) => panic!("timed out with {} of {want}", got.len()),
        }
    }
    got
}

fn quote(bid: u32) -> String {
    format!(r#"{{"bid":"1.{bid:05}","ask":"1.{:05}"}}"#, bid + 2)
}

#[tokio::test]
async fn state_channel_snapshot_then_conflated_updates() {
    let dir = tempfile::tempdir().unwrap();
    let hub = Hub::open(HubConfig::new(dir.path())).unwrap();
    publish1(&hub, "quotes.EURUSD", &quote(1), None).await;
    let mut s = hub.session();
    let info = s.subscribe(&ch("quotes.EURUSD"), None).unwrap();
    assert_eq!(info.class, Class::State);
    assert!(info.snapshot);
    let got = drain_until(&mut s, 1).await;
    assert_eq!(got.len(), 1);
    assert!(got[0].snapshot);
    assert_eq!(&got[0].message.publication.data[..], quote(1).as_bytes());

    // The client does not read while 200 updates arrive: it gets only the newest.
    for i in 2..202 {
        publish1(&hub, "quotes.EURUSD", &quote(i), None).await;
    }
    let got = s.drain().await.unwrap();
    assert_eq!(got.len(), 1, "conflated to one delivery");
    assert!(!got[0].snapshot);
    assert_eq!(&got[0].message.publication.data[..], quote(201).as_bytes());
    hub.shutdown().await;
}

/// A closed candle's final content reaches a subscriber that did not read while the next bars
/// came: conflation skips intermediate values, never a final (docs/candles.md). Quotes on the
/// same session still conflate to their newest.
#[tokio::test]
async fn candle_finals_survive_conflation_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let hub = Hub::open(HubConfig::new(dir.path())).unwrap();
    let mut s = hub.session();
    s.subscribe(&ch("candles.FIN.1s"), None).unwrap();
    s.subscribe(&ch("quotes.FIN"), None).unwrap();
    let bar = |start: u32, close: &str, fin: bool| {
        let f = if fin { r#","final":true"# } else { "" };
        format!(r#"{{"symbol":"FIN","resolution":"1s","start_ms":{start},"close":"{close}"{f}}}"#)
    };
    let sent = [
        bar(1000, "1.1", false),
        bar(1000, "1.2", true),
        bar(2000, "1.3", false),
        bar(2000, "1.4", false),
        bar(2000, "1.5", true),
        bar(3000, "1.6", false),
        bar(3000, "1.7", false),
    ];
    for (i, v) in sent.iter().enumerate() {
        publish1(&hub, "candles.FIN.1s", v, None).await;
        publish1(&hub, "quotes.FIN", &quote(i as u32), None).await;
    }
    let got = s.drain().await.unwrap();
    let bars: Vec<String> = got
        .iter()
        .filter(|d| d.message.publication.channel.as_str() == "candles.FIN.1s")
        .map(|d| String::from_utf8_lossy(&d.message.publication.data).into_owned())
        .collect();
    assert_eq!(bars, [sent[1].clone(), sent[4].clone(), sent[6].clone()]);
    let quotes: Vec<&tickwire_hub::Delivery> = got
        .iter()
        .filter(|d| d.message.publication.channel.as_str() == "quotes.FIN")
        .collect();
    assert_eq!(quotes.len(), 1, "quotes still conflate");
    assert_eq!(&quotes[0].message.publication.data[..], quote(6).as_bytes());

    // Unsubscribing drops what was kept for the channel.
    publish1(&hub, "candles.FIN.1s", &bar(3000, "1.8", true), None).await;
    publish1(&hub, "candles.FIN.1s", &bar(4000, "1.9", false), None).await;
    s.unsubscribe(&ch("candles.FIN.1s")).unwrap();
    let got = s.drain().await.unwrap();
    assert!(
        got.iter()
            .all(|d| d.message.publication.channel.as_str() != "candles.FIN.1s"),
        "nothing of an unsubscribed channel: {:?}",
        got.len()
    );
    hub.shutdown().await;
}

#[tokio::test]
async fn stream_replay_from_offset_then_live_without_gap_or_duplicate() {
    let dir = tempfile::tempdir().unwrap();
    let hub = Hub::open(HubConfig::new(dir.path())).unwrap();
    let mut offsets = Vec::new();
    for i in 0..10 {
        offsets.push(publish1(&hub, "chat.lobby", &format!(r#"{{"n":{i}}}"#), None).await);
        // Interleave another channel of the same namespace: offsets are per namespace.
        publish1(&hub, "chat.other", "1", None).await;
    }
    let mut s = hub.session();
    let info = s.subscribe(&ch("chat.lobby"), Some(offsets[3])).unwrap();
    assert_eq!(info.offset, Some(offsets[3]));
    let got = drain_until(&mut s, 7).await;
    let seen: Vec<u64> = got.iter().map(|d| d.message.publication.offset).collect();
    assert_eq!(seen, offsets[3..].to_vec());
    let live = publish1(&hub, "chat.lobby", r#"{"n":10}"#, None).await;
    let got = drain_until(&mut s, 1).await;
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].message.publication.offset, live);
    // Live-only subscription sees only what comes after it.
    let mut s2 = hub.session();
    s2.subscribe(&ch("chat.lobby"), None).unwrap();
    assert!(s2.drain().await.unwrap().is_empty());
    let o = publish1(&hub, "chat.lobby", "2", None).await;
    let got = drain_until(&mut s2, 1).await;
    assert_eq!(got[0].message.publication.offset, o);
    hub.shutdown().await;
}

#[tokio::test]
async fn replay_older_than_the_ring_reads_the_log() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = HubConfig::new(dir.path());
    cfg.stream_buffer = 8;
    // 3000 sequential publishes: skip the per-batch fsync, it is not what this test is about.
    cfg.fsync = tickwire_hub::FsyncPolicy::Never;
    let hub = Hub::open(cfg).unwrap();
    let mut offsets = Vec::new();
    for i in 0..3000 {
        offsets.push(publish1(&hub, "chat.big", &format!("{i}"), None).await);
    }
    let mut s = hub.session();
    s.subscribe(&ch("chat.big"), Some(0)).unwrap();
    let got = drain_until(&mut s, 3000).await;
    let seen: Vec<u64> = got.iter().map(|d| d.message.publication.offset).collect();
    assert_eq!(seen, offsets);
    let page = hub
        .history(&ch("chat.big"), offsets[100], 50)
        .await
        .unwrap();
    assert_eq!(page.messages.len(), 50);
    assert_eq!(page.messages[0].publication.offset, offsets[100]);
    assert_eq!(page.next, offsets[149] + 1);
    hub.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscribe_during_publishing_has_no_gap_and_no_duplicate() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = HubConfig::new(dir.path());
    // Smaller than N so the subscriber moves from log replay to the ring mid-stream; large
    // enough that a consumer on a busy 2-core machine is not judged slow.
    cfg.stream_buffer = 512;
    cfg.fsync = tickwire_hub::FsyncPolicy::Never;
    let hub = std::sync::Arc::new(Hub::open(cfg).unwrap());
    const N: usize = 3000;
    let h = hub.clone();
    let publisher = tokio::spawn(async move {
        let mut offs = Vec::new();
        for i in 0..N {
            offs.push(publish1(&h, "chat.race", &format!("{i}"), None).await);
            if i % 100 == 0 {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        }
        offs
    });
    // Subscribe (from the start) while the publisher is mid-way.
    tokio::time::sleep(Duration::from_millis(20)).await;
    let mut s = hub.session();
    s.subscribe(&ch("chat.race"), Some(0)).unwrap();
    let got = drain_until(&mut s, N).await;
    let offs = publisher.await.unwrap();
    let seen: Vec<u64> = got.iter().map(|d| d.message.publication.offset).collect();
    assert_eq!(seen, offs, "every message exactly once, in order");
    let datas: Vec<String> = got
        .iter()
        .map(|d| String::from_utf8(d.message.publication.data.to_vec()).unwrap())
        .collect();
    assert_eq!(datas, (0..N).map(|i| i.to_string()).collect::<Vec<_>>());
}

#[tokio::test]
async fn idempotent_publish_survives_restart() {
    let dir = tempfile::tempdir().unwrap();
    let first = {
        let hub = Hub::open(HubConfig::new(dir.path())).unwrap();
        let a = hub
            .publish(vec![req("chat.lobby", r#"{"t":"hi"}"#, Some("c-1"))])
            .await
            .remove(0)
            .unwrap();
        let b = hub
            .publish(vec![req("chat.lobby", r#"{"t":"hi"}"#, Some("c-1"))])
            .await
            .remove(0)
            .unwrap();
        assert!(!a.duplicate);
        assert!(b.duplicate);
        assert_eq!(a.offset, b.offset);
        // Duplicates inside one batch too.
        let r = hub
            .publish(vec![
                req("chat.lobby", "1", Some("c-2")),
                req("chat.lobby", "1", Some("c-2")),
            ])
            .await;
        assert_eq!(r[0].as_ref().unwrap().offset, r[1].as_ref().unwrap().offset);
        assert!(r[1].as_ref().unwrap().duplicate);
        publish1(&hub, "quotes.GBPUSD", &quote(7), None).await;
        hub.shutdown().await;
        a.offset
    };
    let hub = Hub::open(HubConfig::new(dir.path())).unwrap();
    let again = hub
        .publish(vec![req("chat.lobby", r#"{"t":"hi"}"#, Some("c-1"))])
        .await
        .remove(0)
        .unwrap();
    assert!(again.duplicate);
    assert_eq!(again.offset, first);
    // The newest value of a state channel survives the restart.
    let latest = hub.latest(&ch("quotes.GBPUSD")).unwrap().unwrap();
    assert_eq!(&latest.publication.data[..], quote(7).as_bytes());
    let page = hub.history(&ch("chat.lobby"), 0, 10).await.unwrap();
    assert_eq!(page.messages.len(), 2);
    hub.shutdown().await;
}

#[tokio::test]
async fn slow_stream_consumer_is_disconnected_with_resume_point() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = HubConfig::new(dir.path());
    cfg.stream_buffer = 4;
    let hub = Hub::open(cfg).unwrap();
    let mut s = hub.session();
    s.subscribe(&ch("chat.fast"), None).unwrap();
    let first = publish1(&hub, "chat.fast", "0", None).await;
    let got = drain_until(&mut s, 1).await;
    assert_eq!(got.len(), 1);
    for i in 1..10 {
        publish1(&hub, "chat.fast", &i.to_string(), None).await;
    }
    let reason = s.drain().await.unwrap_err();
    assert!(
        matches!(reason, CloseReason::SlowConsumer { limit: 4, .. }),
        "{reason:?}"
    );
    assert_eq!(
        s.resume_points(),
        vec![("chat.fast".to_string(), first + 1)]
    );
    hub.shutdown().await;
}

/// `Session::closed` resolves for a close made while it waits (from another task, through a
/// `SessionCloser`), for one made before it is called, and for a slow consumer's close by the
/// hub; it does not resolve for an open session.
#[tokio::test]
async fn closed_resolves_for_every_kind_of_close_and_only_then() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = HubConfig::new(dir.path());
    cfg.stream_buffer = 4;
    let hub = Hub::open(cfg).unwrap();
    let within = Duration::from_secs(5);

    let open = hub.session();
    assert!(
        tokio::time::timeout(Duration::from_millis(200), open.closed())
            .await
            .is_err(),
        "an open session is not closed"
    );

    let waiting = hub.session();
    let closer = waiting.closer();
    let kick = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(100)).await;
        closer.close(CloseReason::Shutdown);
    });
    tokio::time::timeout(within, waiting.closed())
        .await
        .expect("a close while waiting wakes the waiter");
    kick.await.unwrap();
    assert_eq!(waiting.close_reason(), Some(CloseReason::Shutdown));

    let early = hub.session();
    early.close(CloseReason::Shutdown);
    tokio::time::timeout(within, early.closed())
        .await
        .expect("a close before the call is seen at once");

    let mut slow = hub.session();
    slow.subscribe(&ch("chat.slow"), None).unwrap();
    let waiter = async {
        tokio::time::timeout(within, slow.closed())
            .await
            .expect("the hub's slow-consumer close wakes the waiter");
    };
    let flood = async {
        for i in 0..10 {
            publish1(&hub, "chat.slow", &i.to_string(), None).await;
        }
    };
    tokio::join!(waiter, flood);
    assert!(matches!(
        slow.close_reason(),
        Some(CloseReason::SlowConsumer { limit: 4, .. })
    ));
    drop((open, waiting, early, slow));
    hub.shutdown().await;
}

#[tokio::test]
async fn refused_publications_say_why() {
    let dir = tempfile::tempdir().unwrap();
    let hub = Hub::open(HubConfig::new(dir.path())).unwrap();
    let big = format!(r#"{{"t":"{}"}}"#, "x".repeat(70_000));
    let r = hub
        .publish(vec![
            req("nope.x", "1", None),
            req("chat.ok", "1", None),
            req("chat.big", &big, None),
            req("quotes.X", r#"{"bid":1.5}"#, None),
            req("quotes.X", r#"{"volume":"1"}"#, None),
            req("trades.X", r#"{"size":"1"}"#, None),
        ])
        .await;
    assert!(matches!(r[0], Err(HubError::UnknownNamespace { .. })));
    assert!(r[1].is_ok());
    assert!(matches!(r[2], Err(HubError::TooLarge { .. })));
    assert!(matches!(
        r[3],
        Err(HubError::Model(ModelError::BadDecimal { .. }))
    ));
    assert!(matches!(
        r[4],
        Err(HubError::Model(ModelError::MissingField { .. }))
    ));
    assert!(matches!(
        r[5],
        Err(HubError::Model(ModelError::MissingField { .. }))
    ));
    let mut s = hub.session();
    assert!(matches!(
        s.subscribe(&ch("nope.x"), None),
        Err(HubError::UnknownNamespace { .. })
    ));
    assert!(matches!(
        s.subscribe(&ch("quotes.X"), Some(1)),
        Err(HubError::FromOnStateChannel(_))
    ));
    s.subscribe(&ch("chat.ok"), None).unwrap();
    assert!(matches!(
        s.subscribe(&ch("chat.ok"), None),
        Err(HubError::AlreadySubscribed(_))
    ));
    s.unsubscribe(&ch("chat.ok")).unwrap();
    assert!(matches!(
        s.unsubscribe(&ch("chat.ok")),
        Err(HubError::NotSubscribed(_))
    ));
    hub.shutdown().await;
}

#[tokio::test]
async fn unsubscribed_channel_stops_delivering() {
    let dir = tempfile::tempdir().unwrap();
    let hub = Hub::open(HubConfig::new(dir.path())).unwrap();
    let mut s = hub.session();
    s.subscribe(&ch("quotes.A"), None).unwrap();
    s.subscribe(&ch("chat.a"), None).unwrap();
    publish1(&hub, "quotes.A", &quote(1), None).await;
    publish1(&hub, "chat.a", "1", None).await;
    s.unsubscribe(&ch("quotes.A")).unwrap();
    s.unsubscribe(&ch("chat.a")).unwrap();
    assert!(s.drain().await.unwrap().is_empty());
    hub.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tail_sees_every_message_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let hub = Hub::open(HubConfig::new(dir.path())).unwrap();
    let mut tap = hub.stream("quotes").unwrap().tail(0);
    assert!(hub.stream("nope").is_err());
    let reader = tokio::spawn(async move {
        let mut seen = Vec::new();
        while seen.len() < 100 {
            let batch = tap.next().await.unwrap();
            seen.extend(batch.iter().map(|p| p.offset));
        }
        seen
    });
    let mut offs = Vec::new();
    for i in 0..100 {
        offs.push(publish1(&hub, &format!("quotes.S{}", i % 7), &quote(i), None).await);
    }
    assert_eq!(reader.await.unwrap(), offs);
    // A dropped tail does not block the writer.
    publish1(&hub, "quotes.S1", &quote(1), None).await;
    hub.shutdown().await;
}

#[tokio::test]
async fn a_data_directory_is_used_by_one_hub_at_a_time() {
    let dir = tempfile::tempdir().unwrap();
    let hub = Hub::open(HubConfig::new(dir.path())).unwrap();
    let second = Hub::open(HubConfig::new(dir.path()));
    assert!(
        matches!(&second, Err(HubError::Storage { reason, .. }) if reason.contains("in use")),
        "{:?}",
        second.err()
    );
    hub.shutdown().await;
    drop(hub);
    Hub::open(HubConfig::new(dir.path()))
        .unwrap()
        .shutdown()
        .await;
}

#[tokio::test]
async fn pattern_subscriptions_cover_existing_and_new_channels_once() {
    use tickwire_hub::Pattern;
    let dir = tempfile::tempdir().unwrap();
    let hub = Hub::open(HubConfig::new(dir.path())).unwrap();
    publish1(&hub, "quotes.A", &quote(1), None).await;
    publish1(&hub, "quotes.B", &quote(2), None).await;
    publish1(&hub, "chat.old", "0", None).await;
    let mut s = hub.session();
    let now = s
        .subscribe_pattern(Pattern::parse("quotes.*").unwrap(), None)
        .unwrap();
    assert_eq!(now.len(), 2);
    assert!(now.iter().all(|(_, i)| i.snapshot));
    let got = drain_until(&mut s, 2).await;
    assert!(got.iter().all(|d| d.snapshot));
    // A channel that appears later is attached before its first message.
    publish1(&hub, "quotes.C", &quote(3), None).await;
    let got = drain_until(&mut s, 1).await;
    assert_eq!(got[0].message.publication.channel.as_str(), "quotes.C");

    // Stream pattern from a namespace offset, overlapping an explicit subscription: once each.
    let from = hub.next_offset("chat").unwrap();
    s.subscribe(&ch("chat.room"), None).unwrap();
    s.subscribe_pattern(Pattern::parse("chat.>").unwrap(), Some(from))
        .unwrap();
    let a = publish1(&hub, "chat.room", "1", None).await;
    let b = publish1(&hub, "chat.new.sub", "2", None).await;
    let got = drain_until(&mut s, 2).await;
    let mut offs: Vec<u64> = got.iter().map(|d| d.message.publication.offset).collect();
    offs.sort_unstable();
    assert_eq!(offs, vec![a, b]);
    assert!(s.drain().await.unwrap().is_empty(), "no duplicate");
    assert!(
        s.subscribe_pattern(Pattern::parse("*.x").unwrap(), Some(0))
            .is_err(),
        "from needs a namespace"
    );

    // Dropping the pattern keeps the explicit channel, stops the rest.
    s.unsubscribe_pattern(&Pattern::parse("chat.>").unwrap())
        .unwrap();
    publish1(&hub, "chat.room", "3", None).await;
    publish1(&hub, "chat.new.sub", "4", None).await;
    let got = drain_until(&mut s, 1).await;
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].message.publication.channel.as_str(), "chat.room");
    assert!(s.drain().await.unwrap().is_empty());
    hub.shutdown().await;
}

#[tokio::test]
async fn newest_state_values_survive_retention_and_restart() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = HubConfig::new(dir.path());
    cfg.segment_bytes = 4096;
    cfg.fsync = tickwire_hub::FsyncPolicy::Never;
    for ns in &mut cfg.namespaces {
        ns.retention_bytes = Some(16 * 1024);
    }
    let hub = Hub::open(cfg.clone()).unwrap();
    // A quiet channel, then lots of traffic on another: its only value sits in old segments.
    publish1(&hub, "quotes.QUIET", &quote(42), None).await;
    for i in 0..2000 {
        publish1(&hub, "quotes.BUSY", &quote(i), None).await;
    }
    hub.run_retention().await;
    let page = hub.history(&ch("quotes.BUSY"), 0, 10).await.unwrap();
    assert!(
        page.messages[0].publication.offset > 1000,
        "retention deleted old segments"
    );
    assert_eq!(
        &hub.latest(&ch("quotes.QUIET"))
            .unwrap()
            .unwrap()
            .publication
            .data[..],
        quote(42).as_bytes()
    );
    hub.shutdown().await;
    drop(hub);
    let hub = Hub::open(cfg).unwrap();
    let quiet = hub
        .latest(&ch("quotes.QUIET"))
        .unwrap()
        .expect("quiet value survived retention + restart");
    assert_eq!(&quiet.publication.data[..], quote(42).as_bytes());
    assert_eq!(
        &hub.latest(&ch("quotes.BUSY"))
            .unwrap()
            .unwrap()
            .publication
            .data[..],
        quote(1999).as_bytes()
    );
    hub.shutdown().await;
}

/// `fsync = always` with the fsync on its own thread: many publishers in flight at once share
/// fsyncs (group commit across writer batches), every acknowledgement is durable and unique,
/// a stream subscriber sees each message once in offset order, and a restart finds them all.
#[tokio::test]
async fn pipelined_fsync_acks_every_publication_once_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = HubConfig::new(dir.path());
    cfg.fsync = tickwire_hub::FsyncPolicy::Always;
    cfg.stream_buffer = 8192;
    let hub = std::sync::Arc::new(Hub::open(cfg).unwrap());
    let mut s = hub.session();
    s.subscribe(&ch("chat.pipe"), None).unwrap();
    const TASKS: usize = 16;
    const PER: usize = 100;
    let mut set = tokio::task::JoinSet::new();
    for t in 0..TASKS {
        let h = hub.clone();
        set.spawn(async move {
            let mut offs = Vec::new();
            for i in 0..PER {
                let id = format!("{t}-{i}");
                offs.push(publish1(&h, "chat.pipe", &format!("\"{id}\""), Some(&id)).await);
            }
            offs
        });
    }
    let mut acked = Vec::new();
    while let Some(r) = set.join_next().await {
        let offs = r.unwrap();
        assert!(
            offs.windows(2).all(|w| w[0] < w[1]),
            "one task's acks in order"
        );
        acked.extend(offs);
    }
    acked.sort_unstable();
    let first = acked[0];
    assert_eq!(
        acked,
        (first..first + (TASKS * PER) as u64).collect::<Vec<_>>()
    );
    let got = drain_until(&mut s, TASKS * PER).await;
    let seen: Vec<u64> = got.iter().map(|d| d.message.publication.offset).collect();
    assert_eq!(seen, acked, "delivered once each, in offset order");
    // A retry of an acknowledged id is a duplicate with the first offset.
    let again = hub
        .publish(vec![req("chat.pipe", "\"0-0\"", Some("0-0"))])
        .await
        .remove(0)
        .unwrap();
    assert!(again.duplicate);
    hub.shutdown().await;
    drop(hub);
    let hub = Hub::open(HubConfig::new(dir.path())).unwrap();
    let page = hub
        .history(&ch("chat.pipe"), 0, TASKS * PER + 10)
        .await
        .unwrap();
    assert_eq!(page.messages.len(), TASKS * PER);
    hub.shutdown().await;
}

/// A background namespace's writer and fsync threads run at nice 10, the others at the
/// process's own priority (Linux: nice is per thread, read from /proc/self/task/*/stat).
#[tokio::test]
async fn background_namespaces_write_at_lower_cpu_priority() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = tickwire_hub::HubConfig::new(dir.path());
    // The default namespaces: `candles` is background, `quotes` is not.
    assert!(cfg
        .namespaces
        .iter()
        .any(|n| n.name == "candles" && n.background));
    cfg.fsync = tickwire_hub::FsyncPolicy::Never;
    let hub = tickwire_hub::Hub::open(cfg).unwrap();
    // The nice value of every thread named `comm` (other tests in this process run hubs too,
    // and a thread may exit between listing and reading it).
    let nices_of = |comm: &str| -> Vec<i64> {
        std::fs::read_dir("/proc/self/task")
            .unwrap()
            .filter_map(|t| {
                let t = t.ok()?.path();
                let name = std::fs::read_to_string(t.join("comm")).ok()?;
                if name.trim() != comm {
                    return None;
                }
                let stat = std::fs::read_to_string(t.join("stat")).ok()?;
                // Fields after the parenthesised name; nice is field 19 of the whole line.
                let rest = &stat[stat.rfind(')')? + 2..];
                rest.split(' ').nth(16)?.parse().ok()
            })
            .collect()
    };
    // Thread names are cut to 15 bytes by the kernel.
    let names = [
        ("tw-writer-candl", 10),
        ("tw-sync-candles", 10),
        ("tw-writer-quote", 0),
        ("tw-sync-quotes", 0),
    ];
    let mut waited = 0;
    while names.iter().any(|(n, _)| nices_of(n).is_empty()) && waited < 200 {
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        waited += 1;
    }
    for (name, nice) in names {
        let got = nices_of(name);
        assert!(!got.is_empty(), "no {name} thread");
        assert!(
            got.iter().all(|n| *n == nice),
            "{name}: {got:?}, want {nice}"
        );
    }
    drop(hub);
}

/// One batch holding several values per state channel: the writer hands each channel's node
/// only its newest value (older ones would be conflated anyway), but the acks, the log and a
/// tail of the stream (what projections read) still carry every value, and the newest is what
/// subscribers and new snapshots see.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_delivers_each_state_channels_newest_value_and_tails_see_all() {
    for with_tap in [false, true] {
        let dir = tempfile::tempdir().unwrap();
        let hub = Hub::open(HubConfig::new(dir.path())).unwrap();
        let mut live = hub.session();
        for c in ["quotes.A", "quotes.B", "quotes.C"] {
            live.subscribe(&ch(c), None).unwrap();
        }
        let tap = with_tap.then(|| hub.stream("quotes").unwrap().tail(0));
        // A: 1, 4, 7 ... B: 2, 5, 8 ... C only once, in the middle.
        let mut batch = Vec::new();
        let mut sent = Vec::new();
        for i in 0..30u32 {
            let c = match i % 3 {
                0 => "quotes.A",
                1 if i == 13 => "quotes.C",
                1 => "quotes.B",
                _ => "quotes.A",
            };
            batch.push(req(c, &quote(i), None));
            sent.push((c, quote(i)));
        }
        let acks = hub.publish(batch).await;
        let offsets: Vec<u64> = acks.into_iter().map(|a| a.unwrap().offset).collect();
        assert_eq!(offsets, (0..30).collect::<Vec<_>>());
        let newest = |c: &str| sent.iter().rev().find(|(n, _)| *n == c).unwrap().1.clone();

        let got = drain_until(&mut live, 3).await;
        let mut seen: Vec<(String, String)> = got
            .iter()
            .map(|d| {
                let p = &d.message.publication;
                (
                    p.channel.to_string(),
                    String::from_utf8(p.data.to_vec()).unwrap(),
                )
            })
            .collect();
        seen.sort();
        let want: Vec<(String, String)> = ["quotes.A", "quotes.B", "quotes.C"]
            .iter()
            .map(|c| (c.to_string(), newest(c)))
            .collect();
        assert_eq!(seen, want, "with_tap={with_tap}");
        for c in ["quotes.A", "quotes.B", "quotes.C"] {
            let latest = hub.latest(&ch(c)).unwrap().unwrap();
            assert_eq!(&latest.publication.data[..], newest(c).as_bytes());
        }
        // A new subscriber's snapshot is the newest value.
        let mut late = hub.session();
        late.subscribe(&ch("quotes.B"), None).unwrap();
        let snap = drain_until(&mut late, 1).await;
        assert!(snap[0].snapshot);
        assert_eq!(
            &snap[0].message.publication.data[..],
            newest("quotes.B").as_bytes()
        );
        // Every value is in the log, in order.
        let h = hub.history(&ch("quotes.A"), 0, 100).await.unwrap();
        let logged: Vec<String> = h
            .messages
            .iter()
            .map(|m| String::from_utf8(m.publication.data.to_vec()).unwrap())
            .collect();
        let want_a: Vec<String> = sent
            .iter()
            .filter(|(c, _)| *c == "quotes.A")
            .map(|(_, d)| d.clone())
            .collect();
        assert_eq!(logged, want_a);
        if let Some(mut tap) = tap {
            let mut tapped = Vec::new();
            while tapped.len() < 30 {
                let b = tap.next().await.unwrap();
                tapped.extend(
                    b.iter()
                        .map(|p| (p.offset, String::from_utf8(p.data.to_vec()).unwrap())),
                );
            }
            let want: Vec<(u64, String)> = (0..30).zip(sent.iter().map(|s| s.1.clone())).collect();
            assert_eq!(tapped, want);
        }
        hub.shutdown().await;
    }
}

/// An edge may publish views of one large request body (the HTTP path does): the values the
/// hub keeps (a state channel's newest, a stream's ring) get their own copy, so a rarely
/// updated channel never pins the whole body.
#[tokio::test]
async fn kept_values_do_not_pin_the_buffer_they_were_published_from() {
    let dir = tempfile::tempdir().unwrap();
    let hub = Hub::open(HubConfig::new(dir.path())).unwrap();
    let mut text = String::new();
    let mut spans = Vec::new();
    for i in 0..100u32 {
        let start = text.len();
        text.push_str(&quote(i));
        spans.push((
            if i % 2 == 0 { "quotes.A" } else { "chat.room" },
            start..text.len(),
        ));
    }
    let body = Bytes::from(text);
    let reqs = spans
        .iter()
        .map(|(c, r)| PublishRequest {
            channel: ch(c),
            msg_id: None,
            data: body.slice(r.clone()),
        })
        .collect();
    for a in hub.publish(reqs).await {
        a.unwrap();
    }
    let inside = |b: &Bytes| body.as_ptr_range().contains(&b.as_ptr());
    let latest = hub.latest(&ch("quotes.A")).unwrap().unwrap();
    assert_eq!(&latest.publication.data[..], quote(98).as_bytes());
    assert!(
        !inside(&latest.publication.data),
        "state value pins the body"
    );
    let ring = hub.history(&ch("chat.room"), 0, 100).await.unwrap();
    assert_eq!(ring.messages.len(), 50);
    for m in &ring.messages {
        assert!(!inside(&m.publication.data), "stream message pins the body");
    }
    hub.shutdown().await;
}

/// Registry hygiene: subscribing to names that never get a message, and leaving them (by
/// unsubscribing, by a pattern going away, by the connection closing), leaves nothing behind.
/// Channels that hold a value or recent messages stay, and keep serving snapshots and history.
#[tokio::test]
async fn channels_nobody_wants_and_that_hold_nothing_are_forgotten() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = HubConfig::new(dir.path());
    cfg.fsync = tickwire_hub::FsyncPolicy::Never;
    let hub = Hub::open(cfg).unwrap();
    publish1(&hub, "quotes.KEEP", &quote(7), None).await;
    publish1(&hub, "chat.keep", r#"{"n":1}"#, None).await;
    let baseline = hub.stats().channels;
    assert_eq!(baseline, 2);

    for round in 0..20u32 {
        // Explicit subscribe, then unsubscribe.
        let mut s = hub.session();
        for i in 0..500 {
            for c in [format!("quotes.U{round}x{i}"), format!("chat.u{round}x{i}")] {
                s.subscribe(&ch(&c), None).unwrap();
                s.unsubscribe(&ch(&c)).unwrap();
            }
        }
        // Subscribed when the connection closes.
        let mut s = hub.session();
        for i in 0..500 {
            s.subscribe(&ch(&format!("chat.d{round}x{i}")), None)
                .unwrap();
        }
        assert!(hub.stats().channels >= baseline + 500);
        drop(s);
        // A pattern that attached to channels made by someone else, then went away.
        let mut owner = hub.session();
        let mut pat = hub.session();
        owner
            .subscribe(&ch(&format!("chat.p{round}")), None)
            .unwrap();
        let p = tickwire_model::Pattern::parse(&format!("chat.p{round}")).unwrap();
        assert_eq!(pat.subscribe_pattern(p.clone(), None).unwrap().len(), 1);
        owner.unsubscribe(&ch(&format!("chat.p{round}"))).unwrap();
        assert_eq!(hub.stats().channels, baseline + 1, "the pattern keeps it");
        pat.unsubscribe_pattern(&p).unwrap();
        assert_eq!(hub.stats().channels, baseline, "round {round}");
    }
    assert_eq!(hub.channels("chat"), vec![ch("chat.keep")]);
    assert_eq!(hub.channels("quotes"), vec![ch("quotes.KEEP")]);

    // What holds data stayed, and subscribing and leaving it again does not drop it.
    for _ in 0..3 {
        let mut s = hub.session();
        assert!(s.subscribe(&ch("quotes.KEEP"), None).unwrap().snapshot);
        let snap = drain_until(&mut s, 1).await;
        assert_eq!(&snap[0].message.publication.data[..], quote(7).as_bytes());
        s.subscribe(&ch("chat.keep"), None).unwrap();
    }
    assert_eq!(hub.stats().channels, baseline);
    assert_eq!(
        hub.history(&ch("chat.keep"), 0, 10)
            .await
            .unwrap()
            .messages
            .len(),
        1
    );

    // A forgotten name works as before when it is wanted again: subscribed, published to,
    // delivered, and kept from then on (it holds a message now).
    let mut s = hub.session();
    s.subscribe(&ch("chat.u0x1"), None).unwrap();
    let o = publish1(&hub, "chat.u0x1", "42", None).await;
    let got = drain_until(&mut s, 1).await;
    assert_eq!(got[0].message.publication.offset, o);
    drop(s);
    assert_eq!(hub.stats().channels, baseline + 1);
    let page = hub.history(&ch("chat.u0x1"), 0, 10).await.unwrap();
    assert_eq!(page.messages.len(), 1);
    hub.shutdown().await;
}

/// Eviction racing with everything that can touch a fresh channel: sessions subscribing and
/// leaving it (each leave may evict the node), subscribers that stay, a pattern subscriber,
/// and the writer dispatching the channel's first messages. A subscribe that attached to a
/// node evicted under it, or a message dispatched to one, would be lost for a live
/// subscriber; every live subscriber must get every stream message from its start offset,
/// and a state subscriber the newest value.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn eviction_racing_subscribe_unsubscribe_and_publish_loses_nothing() {
    use std::sync::{
        atomic::{AtomicBool, Ordering::Relaxed},
        Arc,
    };
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = HubConfig::new(dir.path());
    cfg.fsync = tickwire_hub::FsyncPolicy::Never;
    cfg.stream_buffer = 100_000;
    let hub = Arc::new(Hub::open(cfg).unwrap());
    const ROUNDS: usize = 150;
    const MSGS: usize = 20;
    const STEADY: usize = 6;
    // Fresh names each round: only a channel that has held nothing yet can be evicted.
    const STREAMS: usize = 4;
    const STATES: usize = 2;
    let mut pattern = hub.session();
    pattern
        .subscribe_pattern(tickwire_model::Pattern::parse("chat.p.*").unwrap(), None)
        .unwrap();
    for round in 0..ROUNDS {
        let streams: Vec<String> = (0..STREAMS).map(|k| format!("chat.s{round}x{k}")).collect();
        let states: Vec<String> = (0..STATES)
            .map(|k| format!("quotes.S{round}x{k}"))
            .collect();
        let patterned = format!("chat.p.{round}");
        let mut all = streams.clone();
        all.extend(states.iter().cloned());
        all.push(patterned.clone());
        let stop = Arc::new(AtomicBool::new(false));
        // Churners: subscribe and leave over and over, on their own threads.
        let churners: Vec<_> = (0..2)
            .map(|k| {
                let (hub, stop, all) = (hub.clone(), stop.clone(), all.clone());
                std::thread::spawn(move || {
                    let mut n = 0;
                    while !stop.load(Relaxed) || n < 50 {
                        let mut s = hub.session();
                        for c in &all {
                            s.subscribe(&ch(c), None).unwrap();
                        }
                        if (n + k) % 2 == 0 {
                            for c in &all {
                                s.unsubscribe(&ch(c)).unwrap();
                            }
                        }
                        drop(s);
                        n += 1;
                    }
                })
            })
            .collect();
        // Subscribers that stay, arriving while the others churn and the publisher runs.
        let steady = {
            let (hub, streams, states) = (hub.clone(), streams.clone(), states.clone());
            std::thread::spawn(move || {
                (0..STEADY)
                    .map(|_| {
                        std::thread::yield_now();
                        let mut s = hub.session();
                        let starts: Vec<u64> = streams
                            .iter()
                            .map(|c| s.subscribe(&ch(c), None).unwrap().offset.unwrap())
                            .collect();
                        for c in &states {
                            s.subscribe(&ch(c), None).unwrap();
                        }
                        (s, starts)
                    })
                    .collect::<Vec<_>>()
            })
        };
        // Per stream channel, the offsets published.
        let mut sent: Vec<Vec<u64>> = vec![Vec::new(); STREAMS];
        let mut last_quote = String::new();
        for i in 0..MSGS {
            let mut batch: Vec<PublishRequest> = streams
                .iter()
                .map(|c| req(c, &i.to_string(), None))
                .collect();
            batch.push(req(&patterned, &i.to_string(), None));
            batch.extend(states.iter().map(|c| req(c, &quote(i as u32), None)));
            let acks = hub.publish(batch).await;
            for (k, a) in acks.iter().take(STREAMS).enumerate() {
                sent[k].push(a.as_ref().unwrap().offset);
            }
            last_quote = quote(i as u32);
            tokio::task::yield_now().await;
        }
        stop.store(true, Relaxed);
        for c in churners {
            c.join().unwrap();
        }
        for (mut s, starts) in steady.join().unwrap() {
            let want: Vec<Vec<u64>> = sent
                .iter()
                .zip(&starts)
                .map(|(offs, start)| offs.iter().copied().filter(|o| o >= start).collect())
                .collect();
            let mut got: Vec<Vec<u64>> = vec![Vec::new(); STREAMS];
            let mut newest: Vec<Option<String>> = vec![None; STATES];
            let done = |got: &Vec<Vec<u64>>, newest: &Vec<Option<String>>| {
                got.iter().zip(&want).all(|(g, w)| g.len() >= w.len())
                    && newest.iter().all(|v| v.as_deref() == Some(&last_quote[..]))
            };
            let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
            loop {
                for d in s.drain().await.unwrap() {
                    let p = &d.message.publication;
                    if let Some(k) = streams.iter().position(|c| c == p.channel.as_str()) {
                        got[k].push(p.offset);
                    } else if let Some(k) = states.iter().position(|c| c == p.channel.as_str()) {
                        newest[k] = Some(String::from_utf8(p.data.to_vec()).unwrap());
                    }
                }
                if done(&got, &newest) {
                    break;
                }
                tokio::select! {
                    _ = s.wait() => {}
                    _ = tokio::time::sleep_until(deadline) => panic!(
                        "round {round}: subscribers from {starts:?} got {got:?} of {want:?}, newest values {newest:?}"
                    ),
                }
            }
            assert_eq!(got, want, "round {round}");
        }
        let got = drain_until(&mut pattern, MSGS).await;
        let datas: Vec<String> = got
            .iter()
            .map(|d| String::from_utf8(d.message.publication.data.to_vec()).unwrap())
            .collect();
        assert_eq!(
            datas,
            (0..MSGS).map(|i| i.to_string()).collect::<Vec<_>>(),
            "round {round}"
        );
        for c in &states {
            let latest = hub
                .latest(&ch(c))
                .unwrap()
                .expect("the newest value is kept");
            assert_eq!(
                &latest.publication.data[..],
                last_quote.as_bytes(),
                "round {round}"
            );
        }
    }
    // Every channel holds data now; nothing else is left.
    assert_eq!(hub.stats().channels, (STREAMS + STATES + 1) * ROUNDS);
    drop(pattern);
    hub.shutdown().await;
}

/// A book channel (`book.<SYM>`) is keyed state: a subscriber's snapshot is the whole book with
/// its sequence number (not the newest delta), then deltas; a slow subscriber gets its waiting
/// deltas merged per price level into one value (never a backlog), and every client's book,
/// checked against each value's checksum, ends equal to the producer's. After a restart whose
/// newest value was a delta the book is unknown (no snapshot, never a wrong one) until the next
/// snapshot value.
#[tokio::test]
async fn book_channels_give_a_snapshot_then_deltas_conflated_per_level() {
    use tickwire_feed::l2::{Applied, L2Book, L2Msg};

    let dir = tempfile::tempdir().unwrap();
    let hub = Hub::open(HubConfig::new(dir.path())).unwrap();
    let c = "book.EURUSD";
    let mut producer = L2Book::default();
    let mut snap = L2Msg {
        snapshot: true,
        seq: 1,
        depth: 0,
        bids: vec![("1.1".into(), "5".into())],
        asks: vec![("1.2".into(), "3".into())],
        ..L2Msg::default()
    };
    producer.apply(&snap);
    snap.checksum = producer.checksum();
    publish1(&hub, c, &snap.to_json(), None).await;

    // The next delta setting (bid?, price, size) levels.
    let mut delta = |levels: &[(bool, &str, &str)]| {
        let mut m = L2Msg {
            seq: producer.seq() + 1,
            prev: producer.seq(),
            ..L2Msg::default()
        };
        for &(bid, p, s) in levels {
            let l = (p.to_string(), s.to_string());
            if bid {
                m.bids.push(l)
            } else {
                m.asks.push(l)
            }
        }
        let mut after = producer.clone();
        assert_eq!(after.apply(&m), Applied::Ok);
        m.checksum = after.checksum();
        producer = after;
        m
    };
    let apply_all = |book: &mut L2Book, got: &[tickwire_hub::Delivery]| {
        for d in got {
            let m = L2Msg::parse(&d.message.publication.data).unwrap();
            assert_eq!(book.apply(&m), Applied::Ok, "{m:?}");
            assert_eq!(book.checksum(), m.checksum);
        }
    };

    let mut fast = hub.session();
    let mut slow = hub.session();
    for s in [&mut fast, &mut slow] {
        assert!(s.subscribe(&ch(c), None).unwrap().snapshot);
    }
    let mut fast_book = L2Book::default();
    let got = drain_until(&mut fast, 1).await;
    assert!(got[0].snapshot);
    apply_all(&mut fast_book, &got);

    let steps: Vec<Vec<(bool, &str, &str)>> = vec![
        vec![(true, "1.1", "0"), (true, "1.09", "2")],
        vec![(false, "1.20", "4"), (false, "1.19", "1")],
        vec![(true, "1.090", "0"), (true, "1.10001", "9")],
        vec![(false, "1.19", "0"), (true, "1.1", "1")],
    ];
    for levels in &steps {
        publish1(&hub, c, &delta(levels).to_json(), None).await;
        let got = drain_until(&mut fast, 1).await;
        apply_all(&mut fast_book, &got);
    }
    // The slow one took nothing meanwhile: its snapshot and four deltas come as one snapshot.
    let got = slow.drain().await.unwrap();
    assert_eq!(got.len(), 1, "conflated to one value");
    assert!(got[0].snapshot);
    let mut slow_book = L2Book::default();
    apply_all(&mut slow_book, &got);
    // Then two more deltas it does not read, merged into one delta jumping two numbers.
    for levels in [vec![(true, "1.1", "0")], vec![(false, "1.3", "6")]] {
        publish1(&hub, c, &delta(&levels).to_json(), None).await;
        apply_all(&mut fast_book, &drain_until(&mut fast, 1).await);
    }
    let got = slow.drain().await.unwrap();
    assert_eq!(got.len(), 1);
    let m = L2Msg::parse(&got[0].message.publication.data).unwrap();
    assert_eq!((m.snapshot, m.prev, m.seq), (false, 5, 7));
    apply_all(&mut slow_book, &got);
    for b in [&fast_book, &slow_book] {
        assert_eq!(b.levels(), producer.levels());
        assert_eq!(b.checksum(), producer.checksum());
        assert_eq!(b.seq(), 7);
    }
    // A late subscriber, and `latest`, get the whole book, not the newest delta.
    let mut late = hub.session();
    assert!(late.subscribe(&ch(c), None).unwrap().snapshot);
    let mut late_book = L2Book::default();
    apply_all(&mut late_book, &drain_until(&mut late, 1).await);
    assert_eq!(late_book.levels(), producer.levels());
    let latest = hub.latest(&ch(c)).unwrap().unwrap();
    let l = L2Msg::parse(&latest.publication.data).unwrap();
    assert!(l.snapshot);
    assert_eq!((l.seq, l.checksum), (7, producer.checksum()));
    drop((fast, slow, late));
    hub.shutdown().await;
    drop(hub);

    // Restarted with a delta as the newest value: no snapshot until the next snapshot value.
    let hub = Hub::open(HubConfig::new(dir.path())).unwrap();
    assert!(hub.latest(&ch(c)).unwrap().is_none());
    let mut s = hub.session();
    assert!(!s.subscribe(&ch(c), None).unwrap().snapshot);
    let mut again = producer.snapshot().unwrap();
    again.seq = 8;
    publish1(&hub, c, &again.to_json(), None).await;
    let got = drain_until(&mut s, 1).await;
    let mut b = L2Book::default();
    apply_all(&mut b, &got);
    assert_eq!(b.levels(), producer.levels());
    assert!(hub.latest(&ch(c)).unwrap().is_some());
    drop(s);
    hub.shutdown().await;
}

/// A traced publish learns when its batch was appended and fsynced, in that order, on the same
/// wall clock as the caller; with `fsync = never` no fsync is reported (there was none).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timed_acks_report_the_batchs_append_then_its_fsync() {
    let dir = tempfile::tempdir().unwrap();
    let hub = Hub::open(HubConfig::new(dir.path())).unwrap();
    let before = tickwire_model::clock::now_nanos();
    let checked = vec![
        hub.check(req("trades.EURUSD", r#"{"price":"1.1","size":"2"}"#, None))
            .unwrap(),
        hub.check(req("quotes.EURUSD", &quote(1), None)).unwrap(),
    ];
    let (acks, timings) = hub.enqueue(checked).await.timed().await;
    let after = tickwire_model::clock::now_nanos();
    assert!(acks.iter().all(|a| a.is_ok()), "{acks:?}");
    let mut names: Vec<&str> = timings.iter().map(|t| t.namespace.as_str()).collect();
    names.sort_unstable();
    assert_eq!(names, ["quotes", "trades"]);
    for t in &timings {
        let b = t.timing;
        assert!(before <= b.append_start, "{t:?}");
        assert!(b.append_start <= b.append_end, "{t:?}");
        assert!(b.append_end <= b.fsync_start, "{t:?}");
        assert!(b.fsync_start < b.fsync_end, "{t:?}");
        assert!(b.fsync_end <= after, "{t:?}");
    }
    hub.shutdown().await;

    let dir = tempfile::tempdir().unwrap();
    let mut cfg = HubConfig::new(dir.path());
    cfg.fsync = tickwire_hub::FsyncPolicy::Never;
    let hub = Hub::open(cfg).unwrap();
    let checked = vec![hub.check(req("quotes.EURUSD", &quote(2), None)).unwrap()];
    let (_, timings) = hub.enqueue(checked).await.timed().await;
    assert_eq!(timings.len(), 1);
    assert!(timings[0].timing.append_end >= timings[0].timing.append_start);
    assert!(timings[0].timing.append_start > 0);
    assert_eq!(
        (timings[0].timing.fsync_start, timings[0].timing.fsync_end),
        (0, 0)
    );
    hub.shutdown().await;
}

/// One call's results come back in the order of its requests, each in its own slot, whether the
/// call touches one namespace (whose writer's answer is passed through as it stands) or several
/// (whose answers are put back in the caller's order).
#[tokio::test]
async fn results_keep_request_order_within_and_across_namespaces() {
    let dir = tempfile::tempdir().unwrap();
    let hub = Hub::open(HubConfig::new(dir.path())).unwrap();
    // One namespace, with a message id repeated on its channel: only the repeat is a duplicate.
    let one = hub
        .publish(vec![
            req("quotes.A", &quote(1), Some("q1")),
            req("quotes.B", &quote(2), None),
            req("quotes.A", &quote(3), Some("q1")),
            req("quotes.D", &quote(4), None),
        ])
        .await;
    let acks: Vec<_> = one.into_iter().map(Result::unwrap).collect();
    assert_eq!(
        acks.iter().map(|a| a.duplicate).collect::<Vec<_>>(),
        [false, false, true, false]
    );
    assert_eq!(
        acks[0].offset, acks[2].offset,
        "a duplicate names the original"
    );
    assert!(acks[0].offset < acks[1].offset && acks[1].offset < acks[3].offset);

    // Two namespaces interleaved: each result is its own namespace's offset, in request order.
    let mixed = hub
        .publish(vec![
            req("quotes.A", &quote(5), None),
            req("chat.room", r#"{"text":"a"}"#, None),
            req("quotes.B", &quote(6), None),
            req("chat.room", r#"{"text":"b"}"#, None),
            req("nonamespace.x", "{}", None),
        ])
        .await;
    assert!(
        mixed[4].is_err(),
        "an unknown namespace is refused in its slot"
    );
    let q0 = mixed[0].as_ref().unwrap().offset;
    let c0 = mixed[1].as_ref().unwrap().offset;
    let q1 = mixed[2].as_ref().unwrap().offset;
    let c1 = mixed[3].as_ref().unwrap().offset;
    assert_eq!(q0, acks[3].offset + 1, "quotes continue their own log");
    assert_eq!(q1, q0 + 1);
    assert_eq!(c1, c0 + 1, "chat has its own offsets");
    hub.shutdown().await;
}
