//! The runner merges its sources by append time even when one of them shows its records late
//! (cluster mode: another node's append reaches this node's tail a moment after it was
//! stamped): a source with nothing to read holds the others back for its visibility lag, so
//! every node applies the same records in the same order.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use bytes::Bytes;
use tickwire_hub::{Hub, HubConfig, PublishRequest};
use tickwire_model::{Channel, DataDir, Epoch, NamespaceSpec, Offset, Publication};
use tickwire_projection::{Positions, Projection, ProjectionError, Runner, RunnerConfig};
use tickwire_stream::{
    embedded::{Embedded, EmbeddedConfig},
    Backend, Opened, ReadBatch, Stream, StreamError, Watermark,
};

/// A stream whose records become readable only `hide` after their timestamp, and which says
/// so through `visibility_lag`.
struct Late {
    inner: Arc<dyn Stream>,
    hide: Duration,
    lag: Duration,
}

impl Late {
    fn visible_end(&self) -> Offset {
        let cut = tickwire_model::clock::now_nanos() - self.hide.as_nanos() as u64;
        let end = self.inner.next_offset();
        let all = self.inner.read(0, 1 << 20, usize::MAX).unwrap();
        all.publications
            .iter()
            .find(|p| p.timestamp > cut)
            .map_or(end, |p| p.offset)
    }
}

impl Stream for Late {
    fn namespace(&self) -> &str {
        self.inner.namespace()
    }
    fn epoch(&self) -> Epoch {
        self.inner.epoch()
    }
    fn start_offset(&self) -> Offset {
        self.inner.start_offset()
    }
    fn next_offset(&self) -> Offset {
        self.visible_end()
    }
    fn read(&self, from: Offset, max: usize, bytes: usize) -> Result<ReadBatch, StreamError> {
        let end = self.visible_end();
        let mut b = self.inner.read(from, max, bytes)?;
        b.publications.retain(|p| p.offset < end);
        b.next = b
            .publications
            .last()
            .map_or(from.min(end), |p| p.offset + 1);
        Ok(b)
    }
    fn watermark(&self) -> &Arc<Watermark> {
        self.inner.watermark()
    }
    fn visibility_lag(&self) -> Duration {
        self.lag
    }
}

struct LateBackend {
    embedded: Embedded,
    /// Namespace → (hidden for, declared lag).
    late: Vec<(&'static str, Duration, Duration)>,
}

impl Backend for LateBackend {
    fn open(&self, spec: &NamespaceSpec) -> Result<Opened, StreamError> {
        let Opened { stream, writer } = self.embedded.open(spec)?;
        let (hide, lag) = self
            .late
            .iter()
            .find(|(n, _, _)| *n == spec.name)
            .map_or((Duration::ZERO, Duration::ZERO), |(_, h, l)| (*h, *l));
        Ok(Opened {
            stream: Arc::new(Late {
                inner: stream,
                hide,
                lag,
            }),
            writer,
        })
    }
}

/// Records which source's publications it applied, in order.
struct Recorder(Arc<Mutex<Vec<(usize, String)>>>);

impl Projection for Recorder {
    fn name(&self) -> &str {
        "recorder"
    }
    fn restore(&mut self) -> Result<Positions, ProjectionError> {
        Ok(Positions::default())
    }
    fn apply(&mut self, source: usize, p: &Publication) {
        self.0
            .lock()
            .unwrap()
            .push((source, String::from_utf8_lossy(&p.data).into_owned()));
    }
    fn derived(&mut self) -> Vec<Vec<PublishRequest>> {
        Vec::new()
    }
    fn checkpoint(&mut self, _: &Positions) -> Result<(), ProjectionError> {
        Ok(())
    }
}

fn req(ch: &str, data: &str) -> PublishRequest {
    PublishRequest {
        channel: Channel::parse(ch).unwrap(),
        msg_id: None,
        data: Bytes::from(data.to_string()),
    }
}

/// A trade stamped before a quote but readable only after it is still applied first when its
/// stream declares that lag; with no lag declared, arrival order wins.
async fn applied_order(lag: Duration) -> Vec<(usize, String)> {
    let dir = tempfile::tempdir().unwrap();
    let embedded = Embedded::open(DataDir::new(dir.path()), EmbeddedConfig::default()).unwrap();
    let hide = Duration::from_millis(250);
    let backend = LateBackend {
        embedded,
        late: vec![("trades", hide, lag), ("quotes", Duration::ZERO, lag)],
    };
    let mut cfg = HubConfig::new(dir.path());
    cfg.fsync = tickwire_hub::FsyncPolicy::Never;
    let hub = Arc::new(Hub::open_with(cfg, Arc::new(backend)).unwrap());
    let seen = Arc::new(Mutex::new(Vec::new()));
    let _runner = Runner::spawn(
        hub.clone(),
        Recorder(seen.clone()),
        RunnerConfig {
            sources: vec!["quotes".into(), "trades".into()],
            flush_interval: Duration::from_millis(20),
            checkpoint_interval: Duration::from_secs(60),
        },
    )
    .unwrap();
    for r in hub
        .publish(vec![req("trades.X", r#"{"price":"1","size":"1"}"#)])
        .await
    {
        r.unwrap();
    }
    tokio::time::sleep(Duration::from_millis(20)).await;
    for r in hub
        .publish(vec![req("quotes.X", r#"{"bid":"1","ask":"2"}"#)])
        .await
    {
        r.unwrap();
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while seen.lock().unwrap().len() < 2 {
        assert!(Instant::now() < deadline, "not applied: {:?}", seen.lock());
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let out = seen.lock().unwrap().clone();
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lagging_source_holds_the_others_back_for_its_lag() {
    let got = applied_order(Duration::from_millis(500)).await;
    assert_eq!(
        got.iter().map(|(s, _)| *s).collect::<Vec<_>>(),
        vec![1, 0],
        "the earlier trade first: {got:?}"
    );
    // Without the declared lag the quote, readable first, goes first: the order then depends
    // on when each record reached this node, which is what the lag rules out.
    let got = applied_order(Duration::ZERO).await;
    assert_eq!(
        got.iter().map(|(s, _)| *s).collect::<Vec<_>>(),
        vec![0, 1],
        "{got:?}"
    );
}
