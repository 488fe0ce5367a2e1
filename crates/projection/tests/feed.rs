//! A projection that takes the append feed applies exactly the records the log holds, each
//! once, in offset order, whether they reach it from memory or from the log: while it keeps
//! up, after it started behind, and after it fell further behind than the feed keeps.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex,
    },
    time::{Duration, Instant},
};

use bytes::Bytes;
use tickwire_hub::{FsyncPolicy, Hub, HubConfig, PublishRequest};
use tickwire_model::{Channel, Offset, Publication};
use tickwire_projection::{
    Fed, Positions, Projection, ProjectionError, Runner, RunnerConfig, RunnerHandle, RunnerStats,
};

/// One applied record: source, offset, append time, channel, data, and whether it came
/// through the feed.
type Seen = (usize, Offset, u64, String, Vec<u8>, bool);

/// Records every record it applies; waits on `gate` before its first one.
struct Recorder {
    seen: Arc<Mutex<Vec<Seen>>>,
    gate: Arc<Gate>,
}

/// Holds the projection at its first record until opened, and tells whether it is held.
#[derive(Default)]
struct Gate {
    open: AtomicBool,
    /// The projection has a record in hand and waits for `open`.
    held: AtomicBool,
}

impl Gate {
    fn opened() -> Arc<Gate> {
        let g = Gate::default();
        g.open.store(true, Ordering::Release);
        Arc::new(g)
    }
}

impl Recorder {
    /// Notes one applied record, once the gate is open.
    fn note(&self, source: usize, offset: Offset, ts: u64, ch: &Channel, data: &[u8], fed: bool) {
        while !self.gate.open.load(Ordering::Acquire) {
            self.gate.held.store(true, Ordering::Release);
            std::thread::sleep(Duration::from_millis(5));
        }
        let row = (
            source,
            offset,
            ts,
            ch.as_str().to_string(),
            data.to_vec(),
            fed,
        );
        self.seen.lock().unwrap().push(row);
    }
}

impl Projection for Recorder {
    fn name(&self) -> &str {
        "feed-recorder"
    }
    fn restore(&mut self) -> Result<Positions, ProjectionError> {
        Ok(Positions::default())
    }
    fn apply(&mut self, source: usize, p: &Publication) {
        self.note(source, p.offset, p.timestamp, &p.channel, &p.data, false);
    }
    fn wants_feed(&self) -> bool {
        true
    }
    fn apply_fed(&mut self, source: usize, r: Fed<'_>) {
        self.note(source, r.offset, r.timestamp, r.channel, r.data, true);
    }
    fn derived(&mut self) -> Vec<Vec<PublishRequest>> {
        Vec::new()
    }
    fn checkpoint(&mut self, _: &Positions) -> Result<(), ProjectionError> {
        Ok(())
    }
}

const SOURCES: [&str; 2] = ["quotes", "trades"];

fn req(ns: &str, n: usize, msg_id: Option<String>) -> PublishRequest {
    let data = if ns == "quotes" {
        format!(r#"{{"bid":"1.{n}","ask":"2.{n}"}}"#)
    } else {
        format!(r#"{{"price":"3.{n}","size":"1"}}"#)
    };
    PublishRequest {
        channel: Channel::parse(&format!("{ns}.S{}", n % 7)).unwrap(),
        msg_id,
        data: Bytes::from(data),
    }
}

/// Publishes `batches` publish calls of `per` items to each source, `tasks` callers at once;
/// every fifth item carries a `msg_id` that an earlier item already used (a duplicate: in its
/// batch, but appended nothing).
async fn publish(hub: &Arc<Hub>, tasks: usize, batches: usize, per: usize, tag: &str) {
    let mut handles = Vec::new();
    for t in 0..tasks {
        let hub = hub.clone();
        let tag = tag.to_string();
        handles.push(tokio::spawn(async move {
            for b in 0..batches {
                for ns in SOURCES {
                    let reqs = (0..per)
                        .map(|i| {
                            let n = (t * batches + b) * per + i;
                            let id = (i % 5 == 4).then(|| format!("{tag}-{t}-{b}-{}", i - 1));
                            let first = (i % 5 == 3).then(|| format!("{tag}-{t}-{b}-{i}"));
                            req(ns, n, id.or(first))
                        })
                        .collect();
                    for r in hub.publish(reqs).await {
                        r.unwrap();
                    }
                }
            }
        }));
    }
    for h in handles {
        h.await.unwrap();
    }
}

fn open_hub(dir: &std::path::Path) -> Arc<Hub> {
    let mut cfg = HubConfig::new(dir);
    cfg.fsync = FsyncPolicy::Never;
    Arc::new(Hub::open(cfg).unwrap())
}

fn spawn(hub: &Arc<Hub>, seen: &Arc<Mutex<Vec<Seen>>>, gate: &Arc<Gate>) -> RunnerHandle {
    Runner::spawn(
        hub.clone(),
        Recorder {
            seen: seen.clone(),
            gate: gate.clone(),
        },
        RunnerConfig {
            sources: SOURCES.iter().map(|s| s.to_string()).collect(),
            flush_interval: Duration::from_millis(20),
            checkpoint_interval: Duration::from_secs(60),
        },
    )
    .unwrap()
}

/// Waits until every record of both logs was applied, then checks that what was applied per
/// source is the log, record for record, and that the runner counted the fed ones; returns how
/// many records came through the feed and how many from the log.
async fn check_against_log(
    hub: &Hub,
    seen: &Mutex<Vec<Seen>>,
    stats: &RunnerStats,
) -> (usize, usize) {
    let ends: Vec<Offset> = SOURCES
        .iter()
        .map(|ns| hub.stream(ns).unwrap().next_offset())
        .collect();
    let total: u64 = ends.iter().sum();
    let deadline = Instant::now() + Duration::from_secs(30);
    while (seen.lock().unwrap().len() as u64) < total {
        assert!(
            Instant::now() < deadline,
            "applied {} of {total}",
            seen.lock().unwrap().len()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // Nothing more than the log holds arrives later either.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen.len() as u64, total);
    for (source, ns) in SOURCES.iter().enumerate() {
        let log = hub
            .stream(ns)
            .unwrap()
            .read(0, usize::MAX, usize::MAX)
            .unwrap()
            .publications;
        assert_eq!(log.len() as u64, ends[source]);
        let applied: Vec<_> = seen
            .iter()
            .filter(|s| s.0 == source)
            .map(|s| (s.1, s.2, s.3.clone(), s.4.clone()))
            .collect();
        let expected: Vec<_> = log
            .iter()
            .map(|p| {
                (
                    p.offset,
                    p.timestamp,
                    p.channel.as_str().to_string(),
                    p.data.to_vec(),
                )
            })
            .collect();
        assert_eq!(applied, expected, "{ns}");
    }
    let fed = seen.iter().filter(|s| s.5).count();
    let counted: u64 = stats
        .sources
        .iter()
        .map(|s| s.fed.load(Ordering::Relaxed))
        .sum();
    assert_eq!(counted, fed as u64, "tickwire_projection_fed_total");
    (fed, seen.len() - fed)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fed_records_are_the_logs_records_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let hub = open_hub(dir.path());
    let (seen, gate) = (Arc::default(), Gate::opened());
    let runner = spawn(&hub, &seen, &gate);
    publish(&hub, 4, 40, 50, "a").await;
    let (fed, logged) = check_against_log(&hub, &seen, &runner.stats).await;
    // A runner that keeps up takes everything from the feed: the writer announces a batch
    // only once the feed holds it, so none is found in the log first.
    assert!(fed > 0 && logged == 0, "fed {fed}, from the log {logged}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_runner_that_starts_behind_reads_the_log_then_takes_the_feed() {
    let dir = tempfile::tempdir().unwrap();
    let hub = open_hub(dir.path());
    // Appended before any reader: the feed kept none of it.
    publish(&hub, 2, 10, 20, "before").await;
    let (seen, gate) = (Arc::default(), Gate::opened());
    let runner = spawn(&hub, &seen, &gate);
    publish(&hub, 2, 20, 20, "after").await;
    let (fed, logged) = check_against_log(&hub, &seen, &runner.stats).await;
    assert!(logged > 0 && fed > 0, "fed {fed}, from the log {logged}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_runner_further_behind_than_the_feed_keeps_reads_the_rest_from_the_log() {
    let dir = tempfile::tempdir().unwrap();
    let hub = open_hub(dir.path());
    let (seen, gate) = (Arc::default(), Arc::new(Gate::default()));
    let runner = spawn(&hub, &seen, &gate);
    // The projection takes its first record and is held there; only then the flood.
    publish(&hub, 1, 1, 1, "first").await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while !gate.held.load(Ordering::Acquire) {
        assert!(
            Instant::now() < deadline,
            "the projection never took its first record"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // One batch per call, one call at a time: more batches than the feed keeps (4,096) while
    // the projection is held at its first record.
    publish(&hub, 1, 4_500, 1, "flood").await;
    gate.open.store(true, Ordering::Release);
    // Once it has read the rest from the log, what comes next comes through the feed again.
    let deadline = Instant::now() + Duration::from_secs(20);
    while seen.lock().unwrap().len() < 2 * 4_501 {
        assert!(Instant::now() < deadline, "the projection did not catch up");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    publish(&hub, 1, 20, 1, "after").await;
    let (fed, logged) = check_against_log(&hub, &seen, &runner.stats).await;
    assert!(logged > 100 && fed > 0, "fed {fed}, from the log {logged}");
}
