use std::{
    collections::{HashMap, VecDeque},
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc,
    },
    thread::JoinHandle,
    time::Duration,
};

use bytes::Bytes;
use parking_lot::Mutex;
use tickwire_model::{
    validate_json, validate_schema_fields, validate_schema_json, Channel, Class, DataDir, Epoch,
    FieldSpans, NamespaceSpec, Offset, Publication, Schema, SchemaFields,
};
use tickwire_stream::{
    embedded::{Embedded, EmbeddedConfig},
    Backend, Opened, RecoveryStats, Stream, Writer as StreamWriter,
};
use tokio::sync::{mpsc, oneshot};

use crate::{
    feed::{AppendFeed, FeedReader},
    metrics::Histogram,
    node::{ChannelNode, NodeCache, Registry},
    writer::{BatchTiming, Dedup, Item, WriteReply, Writer, WriterMsg},
    FsyncPolicy, HubConfig, HubError, Message, Session,
};

// The hub's parts, by responsibility: publishing (checks, the writers' acknowledgements),
// reads (latest, history, recent lookups), and recovery of a namespace's state at open.
mod publish;
mod read;
mod recovery;

pub use publish::{Acks, NamespaceTiming};
pub use read::{History, Recent, MAX_LAST, RECENT_MAX_SCAN};
use recovery::{latest_only, recover};

/// One publication to store and deliver. `data` must be JSON text (edges parse before they
/// hand it over); the hub checks namespace, size and schema.
#[derive(Debug, Clone)]
pub struct PublishRequest {
    pub channel: Channel,
    pub msg_id: Option<String>,
    pub data: Bytes,
}

/// A stored publication's position. `duplicate` means the msg_id was seen before and nothing
/// was appended; `offset` is then the first copy's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ack {
    pub offset: Offset,
    pub timestamp: u64,
    pub duplicate: bool,
}

/// Counters for health and metrics.
#[derive(Debug, Clone, Default)]
pub struct HubStats {
    pub published: u64,
    pub sessions: u64,
    pub channels: usize,
}

pub(crate) struct NamespaceRt {
    /// Position in [`HubInner`]'s list: what a [`Checked`] carries instead of an `Arc` (a
    /// clone and a drop per published item on one shared count bounced its cache line
    /// between the publishing threads).
    pub id: usize,
    pub spec: NamespaceSpec,
    /// The namespace's stream (read side); the writer thread owns its appender.
    pub stream: Arc<dyn Stream>,
    /// Every message below this offset has been dispatched to its channel node.
    pub dispatched: AtomicU64,
    /// Where the ring of a channel that has no node yet is complete from: the stream's start
    /// when the whole stream was replayed at open (embedded), the start of the replayed window
    /// when only the newest part was (a shared stream: older messages are read from it).
    pub fresh_from: Offset,
    /// Counters and histograms for `/metrics`.
    pub metrics: crate::metrics::NamespaceMetrics,
    /// The writer's newest batches in memory, for a projection (see [`crate::feed`]); only
    /// where this process is the stream's sole writer.
    pub feed: Option<Arc<AppendFeed>>,
    tx: mpsc::Sender<WriterMsg>,
}

pub(crate) struct HubInner {
    pub config: HubConfig,
    /// Indexed by [`NamespaceRt::id`].
    namespaces: Vec<Arc<NamespaceRt>>,
    /// Name to id.
    by_name: HashMap<String, usize, foldhash::fast::RandomState>,
    pub(crate) registry: Arc<Registry>,
    published: AtomicU64,
    sessions: AtomicU64,
}

impl HubInner {
    pub fn namespace(&self, channel: &Channel) -> Result<Arc<NamespaceRt>, HubError> {
        self.namespace_by_name(channel.namespace())
    }

    pub fn namespace_by_name(&self, name: &str) -> Result<Arc<NamespaceRt>, HubError> {
        self.namespace_ref(name).cloned()
    }

    /// The namespace called `name`, if configured.
    fn find(&self, name: &str) -> Option<&Arc<NamespaceRt>> {
        // Called for every published item. The index hashes with foldhash: with SipHash this
        // lookup was 4.9 % of the gRPC publish workers' samples, 1.6 % now (ws-publish.md), so
        // a linear search for small configurations is no longer worth a second path.
        self.by_name
            .get(name)
            .and_then(|&id| self.namespaces.get(id))
    }

    /// [`HubInner::namespace_by_name`] without the reference count.
    fn namespace_ref(&self, name: &str) -> Result<&Arc<NamespaceRt>, HubError> {
        self.find(name).ok_or_else(|| {
            let mut known: Vec<&str> = self
                .namespaces
                .iter()
                .map(|n| n.spec.name.as_str())
                .collect();
            known.sort_unstable();
            HubError::UnknownNamespace {
                namespace: name.to_string(),
                known: known.join(", "),
            }
        })
    }

    pub fn node(&self, channel: &Channel, ns: &NamespaceRt) -> Arc<ChannelNode> {
        // A channel without a node has no message in memory since the replay began: recovery
        // makes a node for every channel the replayed part of the stream holds, and a node that
        // was given a message is never evicted. Its (empty) ring is complete from where the
        // replay began.
        self.registry
            .get_or_create(channel, ns.spec.class, ns.fresh_from)
    }
}

/// The running hub. Cheap to share behind an `Arc`.
pub struct Hub {
    inner: Arc<HubInner>,
    /// Held for the hub's life: the embedded backend holds the data directory's lock.
    _backend: Arc<dyn Backend>,
    threads: Mutex<Vec<JoinHandle<()>>>,
    stop: Arc<AtomicBool>,
}

/// A publication that passed [`Hub::check`], with its namespace resolved.
#[derive(Clone)]
pub struct Checked {
    /// [`NamespaceRt::id`].
    ns: usize,
    request: PublishRequest,
    /// Where the edge found the quote/trade fields in `request.data`, kept only for a
    /// namespace whose append feed has a reader (the live candle projection).
    spans: Option<FieldSpans>,
}

impl Checked {
    pub fn request(&self) -> &PublishRequest {
        &self.request
    }
}

impl Hub {
    /// Opens the embedded backend over `config.data_dir` (taking its lock) and then the hub
    /// over it (see [`Hub::open_with`]).
    pub fn open(config: HubConfig) -> Result<Hub, HubError> {
        let backend = Embedded::open(
            DataDir::new(&config.data_dir),
            EmbeddedConfig {
                segment_bytes: config.segment_bytes,
            },
        )?;
        Hub::open_with(config, Arc::new(backend))
    }

    /// Opens (recovering) every namespace's stream from `backend`, rebuilds the newest value of
    /// every state channel, the recent ring of every stream channel and the idempotency
    /// window, and starts the writer threads.
    pub fn open_with(config: HubConfig, backend: Arc<dyn Backend>) -> Result<Hub, HubError> {
        let registry = Arc::new(Registry::new());
        let mut namespaces = Vec::new();
        let mut by_name = HashMap::default();
        let mut threads = Vec::new();
        let stop = Arc::new(AtomicBool::new(false));
        for spec in &config.namespaces {
            let Opened { stream, writer } = backend.open(spec)?;
            let shared = matches!(writer, StreamWriter::Shared(_));
            let mut dedup = Dedup::new(config.dedup_window);
            let end = stream.next_offset();
            // A shared stream may hold far more than this node needs at start: only the newest
            // `dedup_window` records are replayed (rings and the idempotency window); older
            // messages are read from the stream when a client asks for them.
            let replay_from = if shared {
                stream
                    .start_offset()
                    .max(end.saturating_sub(config.dedup_window as u64))
            } else {
                stream.start_offset()
            };
            let recovered = if shared && spec.class == Class::State {
                match stream.latest_values()? {
                    Some(values) => latest_only(values),
                    None => recover(
                        stream.as_ref(),
                        spec.class,
                        config.stream_buffer,
                        &mut dedup,
                        replay_from,
                    )?,
                }
            } else {
                recover(
                    stream.as_ref(),
                    spec.class,
                    config.stream_buffer,
                    &mut dedup,
                    replay_from,
                )?
            };
            let channels = recovered.len();
            for (channel, (latest, ring, complete_from)) in recovered {
                let node = registry.get_or_create(&channel, spec.class, complete_from);
                node.restore(latest, ring, complete_from);
            }
            tracing::info!(
                namespace = %spec.name,
                class = ?spec.class,
                channels,
                start = stream.start_offset(),
                next = end,
                epoch = %stream.epoch(),
                shared,
                "namespace recovered"
            );
            let (tx, rx) = mpsc::channel(1024);
            let feed = matches!(writer, StreamWriter::Sole(_)).then(Arc::<AppendFeed>::default);
            let ns = Arc::new(NamespaceRt {
                id: namespaces.len(),
                spec: spec.clone(),
                dispatched: AtomicU64::new(end),
                fresh_from: replay_from,
                metrics: Default::default(),
                stream,
                feed: feed.clone(),
                tx,
            });
            match writer {
                StreamWriter::Sole(appender) => {
                    let writer = Writer {
                        stream: appender,
                        ns: ns.clone(),
                        registry: registry.clone(),
                        dedup,
                        fsync: config.fsync,
                        ring_cap: config.stream_buffer.max(1),
                        max_batch: config.max_batch.max(1),
                        nodes: NodeCache::default(),
                        sync_tx: None,
                        feed,
                    };
                    let t = std::thread::Builder::new()
                        .name(format!("tw-writer-{}", spec.name))
                        .spawn(move || writer.run(rx))
                        .map_err(|e| {
                            HubError::storage(&spec.name, format!("spawning writer: {e}"))
                        })?;
                    threads.push(t);
                }
                StreamWriter::Shared(appender) => {
                    threads.extend(crate::shared::start(
                        appender,
                        ns.clone(),
                        registry.clone(),
                        dedup,
                        config.stream_buffer.max(1),
                        end,
                        rx,
                        stop.clone(),
                    )?);
                }
            }
            by_name.insert(spec.name.clone(), ns.id);
            namespaces.push(ns);
        }
        let inner = Arc::new(HubInner {
            config,
            namespaces,
            by_name,
            registry,
            published: AtomicU64::new(0),
            sessions: AtomicU64::new(0),
        });
        threads.push(spawn_housekeeper(inner.clone(), stop.clone())?);
        Ok(Hub {
            inner,
            _backend: backend,
            threads: Mutex::new(threads),
            stop,
        })
    }

    /// A new session for one client connection.
    pub fn session(&self) -> Session {
        self.inner.sessions.fetch_add(1, Ordering::Relaxed);
        Session::new(self.inner.clone())
    }

    /// The configured namespaces.
    pub fn namespaces(&self) -> Vec<NamespaceSpec> {
        let mut v: Vec<NamespaceSpec> = self
            .inner
            .namespaces
            .iter()
            .map(|n| n.spec.clone())
            .collect();
        v.sort_by(|a, b| a.name.cmp(&b.name));
        v
    }

    /// One namespace's configuration, borrowed: for per-message checks (client publish rights)
    /// where [`Hub::namespaces`] would clone every spec.
    pub fn namespace_spec(&self, name: &str) -> Option<&NamespaceSpec> {
        self.inner.find(name).map(|n| &n.spec)
    }

    /// The class of a channel's namespace.
    pub fn class_of(&self, channel: &Channel) -> Result<Class, HubError> {
        Ok(self.inner.namespace(channel)?.spec.class)
    }

    /// Whether `channel` is a book channel (`book.<SYM>` in a state namespace): its values are
    /// book snapshots and sequenced deltas (docs/books.md).
    pub fn is_book(&self, channel: &Channel) -> Result<bool, HubError> {
        Ok(crate::node::is_book(channel, self.class_of(channel)?))
    }

    /// Applies retention to every namespace now (it also runs every minute) and waits for it.
    pub async fn run_retention(&self) {
        let mut waits = Vec::new();
        for ns in self.inner.namespaces.iter() {
            let (tx, rx) = oneshot::channel();
            if ns.tx.send(WriterMsg::Retention(Some(tx))).await.is_ok() {
                waits.push(rx);
            }
        }
        for rx in waits {
            let _ = rx.await;
        }
    }

    /// The offset the next message of `namespace` will get (its log's end). A client that
    /// stores this and later subscribes with it as `from` misses nothing in between.
    pub fn next_offset(&self, namespace: &str) -> Result<Offset, HubError> {
        Ok(self
            .inner
            .namespace_by_name(namespace)?
            .dispatched
            .load(Ordering::Acquire))
    }

    /// A namespace's stream: for projections, which tail it from their checkpoints.
    pub fn stream(&self, namespace: &str) -> Result<Arc<dyn Stream>, HubError> {
        Ok(self.inner.namespace_ref(namespace)?.stream.clone())
    }

    /// A reader of a namespace's append feed: its writer's newest batches in memory, as they
    /// sit in the log (see [`FeedReader`]). `None` where the stream has other writers too (a
    /// cluster's JetStream), whose records this process's writer never sees.
    pub fn append_feed(&self, namespace: &str) -> Result<Option<FeedReader>, HubError> {
        let ns = self.inner.namespace_ref(namespace)?;
        Ok(ns.feed.clone().map(FeedReader::new))
    }

    /// The epoch of a namespace's stream (see [`tickwire_model::Epoch`]).
    pub fn epoch(&self, namespace: &str) -> Result<Epoch, HubError> {
        Ok(self.inner.namespace_ref(namespace)?.stream.epoch())
    }

    /// Channels of a namespace the hub holds: those with a value or recent messages in memory
    /// (every channel in the retained log, and any published to since), and those with a
    /// subscriber. A channel that was only subscribed to is forgotten once nobody is.
    pub fn channels(&self, namespace: &str) -> Vec<Channel> {
        self.inner.registry.channels_in(namespace)
    }

    /// Every channel of `namespace` this node holds, with its subscribers, publish count and
    /// newest message (the operator's channel list).
    pub fn channel_stats(&self, namespace: &str) -> Vec<crate::node::ChannelStats> {
        self.inner.registry.stats_in(namespace)
    }

    pub fn stats(&self) -> HubStats {
        HubStats {
            published: self.inner.published.load(Ordering::Relaxed),
            sessions: self.inner.sessions.load(Ordering::Relaxed),
            channels: self.inner.registry.len(),
        }
    }

    /// Per-namespace families for `/metrics` (Prometheus text): publications, bytes, the
    /// publish-to-ack and fsync histograms, retention, and what each log keeps on disk.
    pub fn render_metrics(&self, out: &mut String) {
        use std::fmt::Write as _;
        let nss = &self.inner.namespaces;
        let mut counter = |name: &str, help: &str, f: &dyn Fn(&NamespaceRt) -> Option<u64>| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
            for ns in nss {
                if let Some(v) = f(ns) {
                    let _ = writeln!(out, "{name}{{namespace=\"{}\"}} {v}", ns.spec.name);
                }
            }
        };
        counter(
            "tickwire_namespace_published_total",
            "Publications stored per namespace (retried duplicates not counted).",
            &|ns| Some(ns.metrics.published.load(Ordering::Relaxed)),
        );
        counter(
            "tickwire_namespace_published_bytes_total",
            "Bytes of data in acknowledged publish requests per namespace.",
            &|ns| Some(ns.metrics.published_bytes.load(Ordering::Relaxed)),
        );
        counter(
            "tickwire_retention_deleted_segments_total",
            "Log segments removed by retention per namespace.",
            &|ns| Some(ns.metrics.retention_segments.load(Ordering::Relaxed)),
        );
        let storage: Vec<Option<tickwire_stream::StorageStats>> =
            nss.iter().map(|ns| ns.stream.storage_stats()).collect();
        let mut gauge = |name: &str, help: &str, f: fn(&tickwire_stream::StorageStats) -> u64| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge");
            for (ns, st) in nss.iter().zip(&storage) {
                if let Some(st) = st {
                    let _ = writeln!(out, "{name}{{namespace=\"{}\"}} {}", ns.spec.name, f(st));
                }
            }
        };
        gauge(
            "tickwire_log_bytes",
            "Bytes of log segments on this node's disk per namespace.",
            |s| s.bytes,
        );
        gauge(
            "tickwire_log_segments",
            "Log segment files on this node's disk per namespace.",
            |s| s.segments,
        );
        let mut histogram = |name: &str, help: &str, f: fn(&NamespaceRt) -> &Histogram| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
            for ns in nss {
                f(ns).render(out, name, &format!("namespace=\"{}\"", ns.spec.name));
            }
        };
        histogram(
            "tickwire_publish_ack_seconds",
            "From a publish request reaching the hub to its acknowledgement (durable under the fsync policy), per namespace.",
            |ns| &ns.metrics.ack,
        );
        histogram(
            "tickwire_fsync_seconds",
            "Duration of one log fdatasync (one per group commit) per namespace.",
            |ns| &ns.metrics.fsync,
        );
    }

    /// What each namespace's stream repaired when it was opened, for `/metrics`.
    pub fn recovery_stats(&self) -> Vec<(String, RecoveryStats)> {
        self.inner
            .namespaces
            .iter()
            .map(|ns| (ns.spec.name.clone(), ns.stream.recovery_stats()))
            .collect()
    }

    pub fn fsync_policy(&self) -> FsyncPolicy {
        self.inner.config.fsync
    }

    /// Why the hub cannot take writes right now, if it cannot: a namespace whose stream lives
    /// in a cluster that is unreachable. Readiness turns false while this is `Some`.
    pub fn unavailable(&self) -> Option<String> {
        self.inner
            .namespaces
            .iter()
            .find_map(|ns| ns.stream.unavailable())
    }

    /// Stops the writers after they finish what is queued, fsyncing first. Idempotent.
    pub async fn shutdown(&self) {
        self.stop.store(true, Ordering::Release);
        let mut done = Vec::new();
        for ns in self.inner.namespaces.iter() {
            let (tx, rx) = oneshot::channel();
            if ns.tx.send(WriterMsg::Shutdown(tx)).await.is_ok() {
                done.push(rx);
            }
        }
        for rx in done {
            let _ = rx.await;
        }
        let threads: Vec<JoinHandle<()>> = std::mem::take(&mut *self.threads.lock());
        let _ = tokio::task::spawn_blocking(move || {
            for t in threads {
                let _ = t.join();
            }
        })
        .await;
    }
}

/// Sends periodic fsync (interval policy) and retention ticks to every writer.
fn spawn_housekeeper(
    inner: Arc<HubInner>,
    stop: Arc<AtomicBool>,
) -> Result<JoinHandle<()>, HubError> {
    let tick = match inner.config.fsync {
        FsyncPolicy::Interval(d) => d.min(Duration::from_millis(500)),
        _ => Duration::from_millis(500),
    };
    std::thread::Builder::new()
        .name("tw-housekeeper".into())
        .spawn(move || {
            // Retention runs at the first tick too: a server started after a long stop (or
            // with tighter limits) enforces them at once, not a minute later.
            let mut since_retention = Duration::from_secs(60);
            while !stop.load(Ordering::Acquire) {
                std::thread::sleep(tick);
                since_retention += tick;
                let retention = since_retention >= Duration::from_secs(60);
                if retention {
                    since_retention = Duration::ZERO;
                }
                for ns in inner.namespaces.iter() {
                    if matches!(inner.config.fsync, FsyncPolicy::Interval(_)) {
                        let _ = ns.tx.try_send(WriterMsg::Sync);
                    }
                    if retention {
                        let _ = ns.tx.try_send(WriterMsg::Retention(None));
                    }
                }
            }
        })
        .map_err(|e| HubError::Config(format!("spawning housekeeper: {e}")))
}
