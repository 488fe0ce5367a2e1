//! The runner: one low-priority thread per projection that restores it, tails its sources and
//! checkpoints it; and a low-priority thread that publishes what it derives.

use std::{
    collections::VecDeque,
    future::Future,
    pin::Pin,
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc,
    },
    task::Poll,
    time::{Duration, Instant},
};

use tickwire_hub::{FeedBatch, FeedReader, Hub, PublishRequest};
use tickwire_model::{clock, Offset, Publication};
use tickwire_stream::{Stream, Tail};
use tokio::sync::{mpsc, Notify};

use crate::{Fed, Positions, Projection, ProjectionError};

/// How a runner drives its projection.
#[derive(Debug, Clone)]
pub struct RunnerConfig {
    /// The namespaces the projection reads, in the order of its source indexes.
    pub sources: Vec<String>,
    /// How often derived output is published and timers run.
    pub flush_interval: Duration,
    /// How often state and positions are checkpointed.
    pub checkpoint_interval: Duration,
}

/// How far one source has been applied.
#[derive(Debug, Default)]
pub struct SourceStats {
    pub namespace: String,
    /// The next offset to apply.
    pub position: AtomicU64,
    /// Publications passed over because retention removed them before they were applied.
    pub skipped_by_retention: AtomicU64,
    /// Publications applied from the namespace writer's append feed (memory) rather than read
    /// back from the log.
    pub fed: AtomicU64,
}

/// What a runner reports, for health and metrics.
#[derive(Debug, Default)]
pub struct RunnerStats {
    pub name: String,
    pub sources: Vec<SourceStats>,
    /// Publications applied since start.
    pub applied: AtomicU64,
    /// Publications applied while catching up at start (the replay).
    pub replayed: AtomicU64,
    /// Derived publications handed to the hub.
    pub derived_published: AtomicU64,
    /// Derived publications the hub refused (a full disk, say); logged once per batch.
    pub derived_failed: AtomicU64,
    /// Failed checkpoints (each is retried at the next interval).
    pub checkpoint_failures: AtomicU64,
    /// Publications the projection panicked on (skipped, each logged as an error).
    pub panics: AtomicU64,
    /// True once the runner caught up with every source after starting.
    pub live: AtomicBool,
}

/// A running projection.
pub struct RunnerHandle {
    pub stats: Arc<RunnerStats>,
    stop: Arc<StopFlag>,
    thread: Option<std::thread::JoinHandle<()>>,
}

#[derive(Default)]
struct StopFlag {
    stopped: AtomicBool,
    notify: Notify,
}

impl RunnerHandle {
    /// How far behind the stream end each source is, in publications.
    pub fn lag(&self, hub: &Hub) -> Vec<(String, u64)> {
        self.stats
            .sources
            .iter()
            .map(|s| {
                let end = hub.stream(&s.namespace).map_or(0, |st| st.next_offset());
                (
                    s.namespace.clone(),
                    end.saturating_sub(s.position.load(Ordering::Relaxed)),
                )
            })
            .collect()
    }

    /// Stops the runner after a last flush and checkpoint, and waits for it.
    pub fn stop(&mut self) {
        self.stop.stopped.store(true, Ordering::Release);
        self.stop.notify.notify_one();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for RunnerHandle {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Starts projections.
pub struct Runner;

impl Runner {
    /// Starts `projection` over `config.sources` of `hub`: restores it, then applies every
    /// publication after its checkpoint and follows the streams live, on a thread of its own.
    pub fn spawn<P: Projection>(
        hub: Arc<Hub>,
        mut projection: P,
        config: RunnerConfig,
    ) -> Result<RunnerHandle, ProjectionError> {
        let name = projection.name().to_string();
        let mut streams: Vec<Arc<dyn Stream>> = Vec::with_capacity(config.sources.len());
        let mut feeds = Vec::with_capacity(config.sources.len());
        for ns in &config.sources {
            streams.push(hub.stream(ns)?);
            feeds.push(if projection.wants_feed() {
                hub.append_feed(ns)?
            } else {
                None
            });
        }
        let mut positions = projection.restore()?;
        let mut tails = Vec::with_capacity(streams.len());
        let mut sources = Vec::with_capacity(streams.len());
        for (ns, stream) in config.sources.iter().zip(&streams) {
            let epoch = stream.epoch();
            let stored = positions.next.get(ns).copied().unwrap_or(0);
            let from = match positions.epochs.get(ns) {
                Some(e) if *e != epoch => {
                    tracing::warn!(
                        projection = %name,
                        namespace = %ns,
                        checkpoint_epoch = %e,
                        stream_epoch = %epoch,
                        "the stream was recreated since the last checkpoint: reading the new stream from its start"
                    );
                    0
                }
                _ if stored > stream.next_offset() => {
                    tracing::warn!(
                        projection = %name,
                        namespace = %ns,
                        checkpoint = stored,
                        stream_end = stream.next_offset(),
                        "the checkpoint is past the end of the stream (records lost before they were made durable?): continuing at the end"
                    );
                    stream.next_offset()
                }
                _ => stored,
            };
            positions.next.insert(ns.clone(), from);
            positions.epochs.insert(ns.clone(), epoch);
            tails.push(stream.clone().tail(from));
            sources.push(SourceStats {
                namespace: ns.clone(),
                position: AtomicU64::new(from),
                skipped_by_retention: AtomicU64::new(0),
                fed: AtomicU64::new(0),
            });
        }
        let stats = Arc::new(RunnerStats {
            name: name.clone(),
            sources,
            ..RunnerStats::default()
        });
        let (pub_tx, pub_rx) = mpsc::channel::<Vec<Vec<PublishRequest>>>(2);
        let (pub_hub, pub_stats) = (hub.clone(), stats.clone());
        std::thread::Builder::new()
            .name(format!("tw-{name}-pub"))
            .spawn(move || {
                tickwire_hub::lower_thread_priority();
                match tokio::runtime::Builder::new_current_thread().build() {
                    Ok(rt) => rt.block_on(publisher(pub_hub, pub_rx, pub_stats)),
                    Err(e) => tracing::error!("projection publisher cannot start its runtime: {e}"),
                }
            })
            .map_err(|e| ProjectionError::Runner(format!("spawning the publisher: {e}")))?;
        let stop = Arc::new(StopFlag::default());
        let mut state = RunState {
            tails: tails
                .into_iter()
                .zip(feeds)
                .map(|(t, feed)| Source {
                    lag: t.stream().visibility_lag(),
                    tail: t,
                    buf: VecDeque::new(),
                    feed,
                    fed: None,
                    caught_up: false,
                })
                .collect(),
            applied_until: None,
            held: false,
            positions,
            stats: stats.clone(),
            pub_tx,
            config,
        };
        let stop_r = stop.clone();
        let thread = std::thread::Builder::new()
            .name(format!("tw-{name}"))
            .spawn(move || {
                // Derived data: the paths clients wait on come first.
                tickwire_hub::lower_thread_priority();
                // Its own runtime: the server's may shut down first.
                match tokio::runtime::Builder::new_current_thread()
                    .enable_time()
                    .build()
                {
                    Ok(rt) => rt.block_on(state.run(&mut projection, &stop_r)),
                    Err(e) => tracing::error!("projection runner cannot start its runtime: {e}"),
                }
            })
            .map_err(|e| ProjectionError::Runner(format!("spawning the runner: {e}")))?;
        Ok(RunnerHandle {
            stats,
            stop,
            thread: Some(thread),
        })
    }
}

struct Source {
    tail: Tail,
    buf: VecDeque<Publication>,
    /// The namespace writer's newest batches in memory, for a projection that
    /// [wants them](Projection::wants_feed) over an embedded log.
    feed: Option<FeedReader>,
    /// The feed's batch holding the tail's position, applied from there (only while `buf` is
    /// empty: records come from one or the other, and the tail's cursor follows both).
    fed: Option<Arc<FeedBatch>>,
    /// The last read found nothing: the source is at its stream's end.
    caught_up: bool,
    /// Its stream's [`Stream::visibility_lag`].
    lag: Duration,
}

impl Source {
    /// The append time of the next record to apply, if one is at hand.
    fn head(&self) -> Option<u64> {
        match self.buf.front() {
            Some(m) => Some(m.timestamp),
            None => self
                .fed
                .as_ref()
                .filter(|b| b.end() > self.tail.position())
                .map(|b| b.timestamp()),
        }
    }

    /// Takes the next records at hand when none are: from the feed when it holds the tail's
    /// position, else from the log. A source whose read returns nothing is caught up.
    fn refill(&mut self, projection: &str) {
        if self.head().is_some() {
            return;
        }
        let at = self.tail.position();
        // Looked at before the feed: the writer announces a batch only once the feed holds
        // it, so an offset announced by then and not in the feed never will be (read the
        // log), and one not announced yet is not there to read. Asking the feed first, the
        // writer could push and announce in between, and the log read found the batch first.
        if let Some(feed) = &self.feed {
            let announced = self.tail.stream().watermark().get();
            self.fed = feed.batch_at(at);
            if self.fed.is_some() {
                self.caught_up = false;
                return;
            }
            if announced <= at {
                self.caught_up = true;
                return;
            }
        }
        match self.tail.poll() {
            Ok(got) => {
                self.caught_up = got.is_empty();
                self.buf.extend(got);
            }
            Err(e) => {
                tracing::error!(projection = %projection, error = %e, "reading a source stream failed; retrying");
                self.caught_up = true;
            }
        }
    }
}

/// Runs `apply` for the record at `offset` of source `source`. A projection bug must not take
/// the whole projection down silently with the thread: the record is skipped, loudly, and
/// counted.
fn guarded(
    stats: &RunnerStats,
    config: &RunnerConfig,
    source: usize,
    offset: Offset,
    apply: impl FnOnce(),
) {
    if let Err(panic) = std::panic::catch_unwind(std::panic::AssertUnwindSafe(apply)) {
        let why = panic
            .downcast_ref::<&str>()
            .map(|s| (*s).to_string())
            .or_else(|| panic.downcast_ref::<String>().cloned())
            .unwrap_or_default();
        stats.panics.fetch_add(1, Ordering::Relaxed);
        tracing::error!(
            projection = %stats.name,
            namespace = config.sources.get(source).map_or("", String::as_str),
            offset,
            "projection panicked applying a publication ({why}); it is skipped"
        );
    }
}

struct RunState {
    tails: Vec<Source>,
    /// Append time (Unix ns) of the newest publication applied since the start.
    applied_until: Option<u64>,
    /// The last [`RunState::apply_some`] stopped at a record another source's lag holds back.
    held: bool,
    positions: Positions,
    stats: Arc<RunnerStats>,
    pub_tx: mpsc::Sender<Vec<Vec<PublishRequest>>>,
    config: RunnerConfig,
}

/// Most publications applied between two looks at the clock (flush, checkpoint, stop).
const APPLY_SLICE: usize = 4096;
/// How soon a runner holding records back for a lagging source looks again.
const HELD_RECHECK: Duration = Duration::from_millis(20);

impl RunState {
    async fn run<P: Projection>(&mut self, p: &mut P, stop: &StopFlag) {
        let started = Instant::now();
        let flush_every = self.config.flush_interval.max(Duration::from_millis(10));
        let checkpoint_every = self
            .config
            .checkpoint_interval
            .max(Duration::from_millis(10));
        let mut last_flush = Instant::now();
        let mut last_checkpoint = Instant::now();
        loop {
            if stop.stopped.load(Ordering::Acquire) {
                break;
            }
            let applied = self.apply_some(p);
            if !self.stats.live.load(Ordering::Relaxed) && self.tails.iter().all(|s| s.caught_up) {
                self.stats.live.store(true, Ordering::Relaxed);
                let replayed = self.stats.applied.load(Ordering::Relaxed);
                self.stats.replayed.store(replayed, Ordering::Relaxed);
                if replayed > 0 {
                    tracing::info!(
                        projection = %self.stats.name,
                        messages = replayed,
                        secs = started.elapsed().as_secs_f64(),
                        "projection caught up with its streams"
                    );
                }
                // The replay's result is worth keeping at once.
                self.checkpoint(p);
                last_checkpoint = Instant::now();
            }
            if last_flush.elapsed() >= flush_every {
                if let Some(now) = self.timer_clock() {
                    p.tick(now);
                }
                self.flush(p);
                last_flush = Instant::now();
            }
            if last_checkpoint.elapsed() >= checkpoint_every {
                self.checkpoint(p);
                last_checkpoint = Instant::now();
            }
            if applied == 0 {
                let mut until = (last_flush + flush_every).min(last_checkpoint + checkpoint_every);
                if self.held {
                    // Held back for a lagging source: look again soon.
                    until = until.min(Instant::now() + HELD_RECHECK);
                }
                self.wait(until, stop).await;
            }
        }
        // A stop while behind keeps the timers behind too: the checkpoint must not hold bars
        // closed ahead of the input the next start will replay.
        if let Some(now) = self.timer_clock() {
            p.tick(now);
        }
        self.flush(p);
        self.checkpoint(p);
    }

    /// The clock timer work runs on (Unix ms): the wall clock once every source is caught up;
    /// while the runner is behind (the replay after a restart, a burst it has not caught up
    /// with yet), the append time of the newest publication it applied, and no tick at all
    /// before it applied one. A timer running ahead of the input would act on time the
    /// projection has not seen: candles would close bars at the wall clock and then refuse
    /// every publication still to be applied as later than the tolerance.
    fn timer_clock(&self) -> Option<i64> {
        let wall = clock::now_millis_i64();
        if self.tails.iter().all(|s| s.caught_up && s.head().is_none()) {
            return Some(wall);
        }
        let applied_ms = i64::try_from(self.applied_until? / 1_000_000).unwrap_or(i64::MAX);
        Some(wall.min(applied_ms))
    }

    /// Reads what is there and applies up to [`APPLY_SLICE`] publications, merging the
    /// sources by append time; how many were applied.
    fn apply_some<P: Projection>(&mut self, p: &mut P) -> usize {
        let mut applied = 0;
        self.held = false;
        while applied < APPLY_SLICE {
            for s in &mut self.tails {
                s.refill(&self.stats.name);
            }
            let pick = self
                .tails
                .iter()
                .enumerate()
                .filter_map(|(i, s)| s.head().map(|ts| (i, ts)))
                .min_by_key(|(_, ts)| *ts)
                .map(|(i, _)| i);
            let Some(i) = pick else { break };
            // Apply this source's head run while it stays the oldest. A source with nothing
            // to read may still receive records stamped up to `visibility_lag` ago (another
            // node's append on its way): until then it holds the others back, so every node
            // merges the same streams into the same order.
            let horizon = self.horizon();
            let other_min = self
                .tails
                .iter()
                .enumerate()
                .filter(|(k, _)| *k != i)
                .map(|(_, s)| match s.head() {
                    Some(ts) => ts,
                    None if s.lag.is_zero() => u64::MAX,
                    None => horizon(s.lag),
                })
                .min()
                .unwrap_or(u64::MAX);
            if self
                .tails
                .get(i)
                .and_then(Source::head)
                .is_some_and(|ts| ts > other_min)
            {
                self.held = true;
                break;
            }
            let Some(src) = self.tails.get_mut(i) else {
                break;
            };
            // Where this source's run ends: stored once per run, not per message (a name
            // lookup in the positions and a shared store per message were visible per tick).
            let mut next = None;
            while let Some(m) = src.buf.front() {
                if m.timestamp > other_min || applied >= APPLY_SLICE {
                    break;
                }
                let Some(m) = src.buf.pop_front() else { break };
                guarded(&self.stats, &self.config, i, m.offset, || p.apply(i, &m));
                applied += 1;
                self.applied_until = Some(
                    self.applied_until
                        .map_or(m.timestamp, |t| t.max(m.timestamp)),
                );
                next = Some(m.offset + 1);
            }
            // Or the feed's batch: one append time for all of it, so it is applied up to its
            // end (or the slice's) in one run.
            if let Some(b) = src.fed.clone().filter(|_| src.buf.is_empty()) {
                let ts = b.timestamp();
                let start = src.tail.position();
                let mut at = start;
                if ts <= other_min && at < b.end() {
                    while at < b.end() && applied < APPLY_SLICE {
                        if let Some((channel, data, spans)) = b.get(at) {
                            let record = Fed {
                                channel,
                                offset: at,
                                timestamp: ts,
                                data,
                                spans,
                            };
                            guarded(&self.stats, &self.config, i, at, || p.apply_fed(i, record));
                        }
                        applied += 1;
                        at += 1;
                    }
                    if let Some(st) = self.stats.sources.get(i) {
                        st.fed.fetch_add(at - start, Ordering::Relaxed);
                    }
                    src.tail.advance_to(at);
                    self.applied_until = Some(self.applied_until.map_or(ts, |t| t.max(ts)));
                    next = Some(at);
                }
            }
            if let Some(next) = next {
                if let Some(ns) = self.config.sources.get(i) {
                    if let Some(pos) = self.positions.next.get_mut(ns) {
                        *pos = next;
                    }
                }
                if let Some(st) = self.stats.sources.get(i) {
                    st.position.store(next, Ordering::Relaxed);
                }
            }
            if let (Some(src), Some(st)) = (self.tails.get(i), self.stats.sources.get(i)) {
                st.skipped_by_retention
                    .store(src.tail.skipped_by_retention(), Ordering::Relaxed);
            }
        }
        self.stats
            .applied
            .fetch_add(applied as u64, Ordering::Relaxed);
        applied
    }

    /// The append time before which a source lagging by `lag` has shown everything it will.
    fn horizon(&self) -> impl Fn(Duration) -> u64 {
        let now = clock::now_nanos();
        move |lag| now.saturating_sub(u64::try_from(lag.as_nanos()).unwrap_or(u64::MAX))
    }

    /// Hands the derived output to the publisher, unless it is still busy with the last.
    fn flush<P: Projection>(&mut self, p: &mut P) {
        let permit = match self.pub_tx.try_reserve() {
            Ok(permit) => permit,
            // Busy: the projection keeps conflating until the next flush.
            Err(mpsc::error::TrySendError::Full(())) => return,
            Err(mpsc::error::TrySendError::Closed(())) => {
                // Nobody publishes any more (shutdown): drop what was derived.
                let _ = p.derived();
                return;
            }
        };
        let out = p.derived();
        if out.iter().any(|g| !g.is_empty()) {
            permit.send(out);
        }
    }

    fn checkpoint<P: Projection>(&mut self, p: &mut P) {
        if let Err(e) = p.checkpoint(&self.positions) {
            self.stats
                .checkpoint_failures
                .fetch_add(1, Ordering::Relaxed);
            tracing::error!(projection = %self.stats.name, error = %e, "checkpoint failed; retrying at the next interval");
        }
    }

    /// Waits until a source has more, `until`, or a stop.
    async fn wait(&self, until: Instant, stop: &StopFlag) {
        let deadline = tokio::time::Instant::from_std(until);
        let mut changed: Vec<Pin<Box<dyn Future<Output = ()> + Send + '_>>> = self
            .tails
            .iter()
            .map(|s| {
                let seen = s.tail.position();
                let w = s.tail.stream().watermark().clone();
                Box::pin(async move {
                    w.changed(seen).await;
                }) as Pin<Box<dyn Future<Output = ()> + Send>>
            })
            .collect();
        let any = std::future::poll_fn(|cx| {
            for f in changed.iter_mut() {
                if f.as_mut().poll(cx).is_ready() {
                    return Poll::Ready(());
                }
            }
            Poll::Pending
        });
        tokio::select! {
            _ = any => {}
            _ = stop.notify.notified() => {}
            _ = tokio::time::sleep_until(deadline) => {}
        }
    }
}

async fn publisher(
    hub: Arc<Hub>,
    mut rx: mpsc::Receiver<Vec<Vec<PublishRequest>>>,
    stats: Arc<RunnerStats>,
) {
    while let Some(groups) = rx.recv().await {
        // One group after the other, each once the one before is acknowledged, so no two
        // groups share a write batch.
        // A failing store fails every group the same way: one line per batch, with the count.
        let mut failed = 0u64;
        let mut first_error = None;
        for reqs in groups.into_iter().filter(|g| !g.is_empty()) {
            let n = reqs.len() as u64;
            let mut group_failed = 0;
            for r in hub.publish(reqs).await {
                if let Err(e) = r {
                    group_failed += 1;
                    first_error.get_or_insert(e);
                }
            }
            failed += group_failed;
            stats
                .derived_published
                .fetch_add(n - group_failed, Ordering::Relaxed);
        }
        if let Some(e) = first_error {
            stats.derived_failed.fetch_add(failed, Ordering::Relaxed);
            tracing::warn!(projection = %stats.name, failed, "publishing derived output failed: {e}");
        }
    }
}
