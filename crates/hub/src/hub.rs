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
    NamespaceSpec, Offset, Publication, Schema, SchemaFields,
};
use tickwire_stream::{
    embedded::{Embedded, EmbeddedConfig},
    Backend, Opened, RecoveryStats, Stream, Writer as StreamWriter,
};
use tokio::sync::{mpsc, oneshot};

use crate::{
    metrics::Histogram,
    node::{ChannelNode, NodeCache, Registry},
    writer::{BatchTiming, Dedup, Item, WriteReply, Writer, WriterMsg},
    FsyncPolicy, HubConfig, HubError, Message, Session,
};

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
    tx: mpsc::Sender<WriterMsg>,
}

pub(crate) struct HubInner {
    pub config: HubConfig,
    /// Indexed by [`NamespaceRt::id`].
    namespaces: Vec<Arc<NamespaceRt>>,
    /// Name to id, for servers with more namespaces than a linear search suits.
    by_name: HashMap<String, usize>,
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
        // Called for every published item. A server has a handful of namespaces, and comparing
        // a few short names beats SipHashing one.
        if self.namespaces.len() <= 8 {
            self.namespaces.iter().find(|n| n.spec.name == name)
        } else {
            self.by_name
                .get(name)
                .and_then(|&id| self.namespaces.get(id))
        }
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
}

impl Checked {
    pub fn request(&self) -> &PublishRequest {
        &self.request
    }
}

/// A page of a channel's history.
/// Recent history a subscription asks for instead of an offset.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Recent {
    /// The newest `n` messages of the channel, then live.
    Last(usize),
    /// Every message appended at or after this Unix time (ms), then live.
    SinceMs(u64),
}

/// Most `last` a subscription may ask for.
pub const MAX_LAST: usize = 10_000;
/// Most log records a recent-history lookup scans (a channel with few messages in a busy
/// namespace starts at the oldest it found within them).
pub const RECENT_MAX_SCAN: u64 = 16 << 20;

#[derive(Debug, Clone)]
pub struct History {
    pub messages: Vec<Arc<Message>>,
    /// Offset to ask for next (`from=`) to continue paging.
    pub next: Offset,
    /// The `from` asked for, when retention had removed it: the page starts at the oldest
    /// retained offset instead, and the client is told so.
    pub retention_gap: Option<(Offset, Offset)>,
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
        let mut by_name = HashMap::new();
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
            let ns = Arc::new(NamespaceRt {
                id: namespaces.len(),
                spec: spec.clone(),
                dispatched: AtomicU64::new(end),
                fresh_from: replay_from,
                metrics: Default::default(),
                stream,
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

    /// Validates and stores publications, in order; one result per request. Requests for the
    /// same namespace go to its writer together, so they share one group commit.
    pub async fn publish(&self, requests: Vec<PublishRequest>) -> Vec<Result<Ack, HubError>> {
        let mut results: Vec<Option<Result<Ack, HubError>>> =
            (0..requests.len()).map(|_| None).collect();
        let mut idx = Vec::with_capacity(requests.len());
        let mut checked = Vec::with_capacity(requests.len());
        for (i, r) in requests.into_iter().enumerate() {
            match self.check(r) {
                Ok(c) => {
                    idx.push(i);
                    checked.push(c);
                }
                Err(e) => results[i] = Some(Err(e)),
            }
        }
        for (i, r) in idx.into_iter().zip(self.publish_checked(checked).await) {
            results[i] = Some(r);
        }
        results
            .into_iter()
            .map(|r| r.unwrap_or(Err(HubError::ShuttingDown)))
            .collect()
    }

    /// Validates a publication without storing it (namespace, size, schema). An edge that must
    /// answer before storing (refuse a whole HTTP batch, give an MQTT packet its reason code)
    /// checks first and then stores the [`Checked`] values with [`Hub::publish_checked`], so
    /// nothing is validated twice.
    pub fn check(&self, request: PublishRequest) -> Result<Checked, HubError> {
        let ns = self.validate(&request, false, None)?;
        Ok(Checked { ns, request })
    }

    /// [`Hub::check`] with the quote/trade fields of `request.data` already read (by
    /// `tickwire_model::scan_flat_object` over exactly that text, as the JSON publish
    /// envelope reader does while skipping it), so the schema check does not read it again.
    pub fn check_scanned(
        &self,
        request: PublishRequest,
        fields: &SchemaFields<'_>,
    ) -> Result<Checked, HubError> {
        let ns = self.validate(&request, false, Some(fields))?;
        Ok(Checked { ns, request })
    }

    /// [`Hub::check`] for data that no JSON parser has read yet (the binary publish batch):
    /// it must also be one JSON value. The quote and trade schema checks prove that already;
    /// only schema-free namespaces need the extra pass.
    pub fn check_unparsed(&self, request: PublishRequest) -> Result<Checked, HubError> {
        let ns = self.validate(&request, true, None)?;
        Ok(Checked { ns, request })
    }

    /// Stores already checked publications, in order; one result per item (only storage or
    /// shutdown can fail now).
    pub async fn publish_checked(&self, checked: Vec<Checked>) -> Vec<Result<Ack, HubError>> {
        self.enqueue(checked).await.await
    }

    /// Hands checked publications to their namespace writers, in order, and returns their
    /// acknowledgements as a future (one result per item). Waits only while a writer's queue is
    /// full, never for an acknowledgement: a connection keeps several of these in flight and
    /// reads its next command meanwhile. Requests enqueued one after the other by one caller
    /// are appended in that order.
    pub async fn enqueue(&self, checked: Vec<Checked>) -> Acks {
        let n = checked.len();
        // A handful of namespaces at most: a linear search by identity beats hashing (and
        // cloning) the namespace name for every item of a 10,000-item batch.
        let mut by_ns: Vec<NamespaceBatch> = Vec::new();
        for (i, Checked { ns, request: r }) in checked.into_iter().enumerate() {
            let k = match by_ns.iter().position(|b| b.0 == ns) {
                Some(k) => k,
                None => {
                    by_ns.push((ns, Vec::new(), Vec::with_capacity(n)));
                    by_ns.len() - 1
                }
            };
            let e = &mut by_ns[k];
            e.1.push(i);
            e.2.push(Item {
                channel: r.channel,
                msg_id: r.msg_id,
                data: r.data,
            });
        }
        let started = std::time::Instant::now();
        let mut waits = Vec::with_capacity(by_ns.len());
        for (ns, idx, items) in by_ns {
            let bytes: usize = items.iter().map(|it| it.data.len()).sum();
            let (reply, rx) = oneshot::channel();
            let sent = match self.inner.namespaces.get(ns) {
                Some(ns) => ns.tx.send(WriterMsg::Write { items, reply }).await.is_ok(),
                None => false, // a Checked comes from this hub: cannot happen
            };
            waits.push(NamespaceWait {
                ns,
                bytes: bytes as u64,
                idx,
                rx: sent.then_some(rx),
            });
        }
        Acks {
            n,
            started,
            waits,
            inner: self.inner.clone(),
        }
    }

    /// Checks one publication; its namespace's id. `unparsed`: the data has not been through
    /// a JSON parser, so a schema-free namespace must check it is JSON at all.
    fn validate(
        &self,
        r: &PublishRequest,
        unparsed: bool,
        fields: Option<&SchemaFields<'_>>,
    ) -> Result<usize, HubError> {
        let ns = self.inner.namespace_ref(r.channel.namespace())?;
        if r.data.len() > ns.spec.max_message_bytes {
            return Err(HubError::TooLarge {
                namespace: ns.spec.name.clone(),
                size: r.data.len(),
                max: ns.spec.max_message_bytes,
            });
        }
        // Straight from the JSON text: publishing is the hot path, and a Value tree per quote
        // cost more than the append itself.
        match fields {
            Some(f) => validate_schema_fields(ns.spec.schema, f)?,
            None => validate_schema_json(ns.spec.schema, &r.data)?,
        }
        // The quote and trade checks above prove it is JSON already.
        if unparsed && ns.spec.schema == Schema::Any {
            validate_json(&r.data)?;
        }
        Ok(ns.id)
    }

    /// The newest message of a channel (state channels; for a stream channel, its last message).
    pub fn latest(&self, channel: &Channel) -> Result<Option<Arc<Message>>, HubError> {
        self.inner.namespace(channel)?;
        Ok(self.inner.registry.get(channel).and_then(|n| {
            let inner = n.inner.lock();
            if inner.book.is_some() {
                // A book channel's value is its whole book (a snapshot), never a lone delta.
                return inner.book_snapshot();
            }
            inner.latest.clone().or_else(|| inner.ring.back().cloned())
        }))
    }

    /// Up to `limit` messages of a channel with offset >= `from`, oldest first.
    pub async fn history(
        &self,
        channel: &Channel,
        from: Offset,
        limit: usize,
    ) -> Result<History, HubError> {
        let ns = self.inner.namespace(channel)?;
        let limit = limit.max(1);
        let end = ns.stream.known_end();
        if from > end {
            return Err(HubError::OffsetBeyondEnd {
                namespace: ns.spec.name.clone(),
                from,
                next: end,
            });
        }
        let first = ns.stream.start_offset();
        let retention_gap = (from < first).then_some((from, first));
        // Memory may still hold what retention just removed from disk: the page starts where
        // the stream does, whichever path serves it, so it agrees with `retention_gap`.
        let from = from.max(first);
        // Served from memory when the ring is complete from `from`.
        if let Some(node) = self.inner.registry.get(channel) {
            let inner = node.inner.lock();
            if node.class == Class::Stream && from >= inner.complete_from {
                let first = inner.ring.partition_point(|m| m.publication.offset < from);
                let messages: Vec<Arc<Message>> =
                    inner.ring.range(first..).take(limit).cloned().collect();
                let next = messages
                    .last()
                    .map_or(from.max(ns.dispatched.load(Ordering::Acquire)), |m| {
                        m.publication.offset + 1
                    });
                return Ok(History {
                    messages,
                    next,
                    retention_gap,
                });
            }
        }
        let stream = ns.stream.clone();
        let channel = channel.clone();
        let dispatched = ns.dispatched.load(Ordering::Acquire);
        // Bounded scan: a page never reads more than a million records of other channels.
        let page = tokio::task::spawn_blocking(move || {
            stream.read_channel(&channel, from, dispatched, limit, 1_000_000)
        })
        .await
        .map_err(|e| HubError::storage(&ns.spec.name, e))??;
        Ok(History {
            messages: page
                .publications
                .into_iter()
                .map(|p| Arc::new(Message::new(p)))
                .collect(),
            next: page.next,
            retention_gap,
        })
    }

    /// The message of `channel` at `offset`, if the stream still holds it and it is on that
    /// channel: from the channel's in-memory ring when that covers the offset, else one read of
    /// the stream. What an edit or delete checks its target against.
    pub async fn message_at(
        &self,
        channel: &Channel,
        offset: Offset,
    ) -> Result<Option<Arc<Message>>, HubError> {
        let ns = self.inner.namespace(channel)?;
        if offset >= ns.dispatched.load(Ordering::Acquire) || offset < ns.stream.start_offset() {
            return Ok(None);
        }
        if let Some(node) = self.inner.registry.get(channel) {
            let inner = node.inner.lock();
            if offset >= inner.complete_from {
                let i = inner
                    .ring
                    .partition_point(|m| m.publication.offset < offset);
                return Ok(inner
                    .ring
                    .get(i)
                    .filter(|m| m.publication.offset == offset)
                    .cloned());
            }
        }
        let stream = ns.stream.clone();
        let batch = tokio::task::spawn_blocking(move || stream.read(offset, 1, 1 << 20))
            .await
            .map_err(|e| HubError::storage(&ns.spec.name, e))??;
        Ok(batch
            .publications
            .into_iter()
            .next()
            .filter(|p| p.offset == offset && p.channel == *channel)
            .map(|p| Arc::new(Message::new(p))))
    }

    /// How many messages of a stream channel come after `after` (`None`: all of them),
    /// counting at most `cap` and only what the channel's in-memory ring holds: unread counts
    /// for subscribe replies, answered without touching the disk. `(count, capped)`: `capped`
    /// when there are more than `cap`, or more than the ring holds (the ring keeps the newest
    /// `stream_buffer` messages). `skip` passes over messages that do not count (edit and
    /// delete records).
    pub fn count_after(
        &self,
        channel: &Channel,
        after: Option<Offset>,
        cap: usize,
        skip: impl Fn(&Message) -> bool,
    ) -> (usize, bool) {
        let Some(node) = self.inner.registry.get(channel) else {
            return (0, false);
        };
        let inner = node.inner.lock();
        let from = after.map_or(0, |a| a + 1);
        let i = inner.ring.partition_point(|m| m.publication.offset < from);
        // A full ring may have let older messages go that follow the marker too (a ring that
        // was never full holds every message the channel has).
        let mut capped = from < inner.complete_from
            && inner.ring.len() >= self.inner.config.stream_buffer.max(1);
        let mut n = 0;
        for m in inner.ring.range(i..) {
            if skip(m) {
                continue;
            }
            if n == cap {
                capped = true;
                break;
            }
            n += 1;
        }
        (n, capped)
    }

    /// Where a subscription asking for recent history of a stream channel starts: the offset
    /// of its `n`th newest message (`Recent::Last`), or of its first message appended at or
    /// after a time (`Recent::Since`). Answered from the channel's in-memory ring when that
    /// holds enough, else by scanning the log backwards in growing windows (bounded: at most
    /// [`RECENT_MAX_SCAN`] records). Blocking; the common case (a chat page's last 50) never
    /// touches the disk.
    pub fn recent_start(&self, channel: &Channel, recent: Recent) -> Result<Offset, HubError> {
        let ns = self.inner.namespace(channel)?;
        if ns.spec.class != Class::Stream {
            return Err(HubError::FromOnStateChannel(channel.to_string()));
        }
        let end = ns.dispatched.load(Ordering::Acquire);
        let first = ns.stream.start_offset();
        if let Some(node) = self.inner.registry.get(channel) {
            let inner = node.inner.lock();
            // Memory is authoritative when it holds the answer, or everything retained.
            let all_retained = inner.complete_from <= first;
            match recent {
                Recent::Last(n) => {
                    let len = inner.ring.len();
                    if len >= n {
                        return Ok(inner.ring[len - n].publication.offset);
                    }
                    if all_retained {
                        return Ok(inner.ring.front().map_or(end, |m| m.publication.offset));
                    }
                }
                Recent::SinceMs(ms) => {
                    let since = ms.saturating_mul(1_000_000);
                    let older_in_ring = inner
                        .ring
                        .front()
                        .is_some_and(|m| m.publication.timestamp < since);
                    if older_in_ring || all_retained {
                        let i = inner
                            .ring
                            .partition_point(|m| m.publication.timestamp < since);
                        return Ok(inner.ring.get(i).map_or(end, |m| m.publication.offset));
                    }
                }
            }
        }
        let mut width: u64 = 4096;
        loop {
            let from = end.saturating_sub(width).max(first);
            let mut newest: VecDeque<Offset> = VecDeque::new();
            let mut since_hit = None;
            let mut older_seen = false;
            let mut cursor = from;
            while cursor < end {
                let page = ns
                    .stream
                    .read_channel(channel, cursor, end, 4096, 1 << 20)
                    .map_err(HubError::from)?;
                for p in &page.publications {
                    match recent {
                        Recent::Last(n) => {
                            newest.push_back(p.offset);
                            if newest.len() > n {
                                newest.pop_front();
                            }
                        }
                        Recent::SinceMs(ms) => {
                            if p.timestamp >= ms.saturating_mul(1_000_000) {
                                since_hit.get_or_insert(p.offset);
                            } else {
                                older_seen = true;
                            }
                        }
                    }
                }
                if page.exhausted || page.next <= cursor {
                    break;
                }
                cursor = page.next;
            }
            let whole = from == first || width >= RECENT_MAX_SCAN;
            match recent {
                Recent::Last(n) if newest.len() >= n || whole => {
                    return Ok(newest.front().copied().unwrap_or(end))
                }
                Recent::SinceMs(_) if older_seen || whole => return Ok(since_hit.unwrap_or(end)),
                _ => width = width.saturating_mul(4),
            }
        }
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

/// A namespace's share of a publish call: its id, the callers' indexes, the items.
type NamespaceBatch = (usize, Vec<usize>, Vec<Item>);

/// A namespace writer's answer to one write request: one result per item, and its timing.
type AckReceiver = oneshot::Receiver<WriteReply>;

/// When one namespace's share of a publish was appended and fsynced (see [`Acks::timed`]).
#[derive(Debug, Clone)]
pub struct NamespaceTiming {
    pub namespace: String,
    pub timing: BatchTiming,
}

/// The acknowledgements of an [`Hub::enqueue`] call: resolves to one result per item, in the
/// order given, once every namespace writer involved has answered.
pub struct Acks {
    n: usize,
    /// When the requests were handed to the hub (the acknowledgement latency's start).
    started: std::time::Instant,
    waits: Vec<NamespaceWait>,
    inner: Arc<HubInner>,
}

/// One namespace's share of an [`Acks`]: the callers' indexes, the bytes of data, and the
/// writer's reply (`None`: never sent).
struct NamespaceWait {
    ns: usize,
    bytes: u64,
    idx: Vec<usize>,
    rx: Option<AckReceiver>,
}

impl std::future::IntoFuture for Acks {
    type Output = Vec<Result<Ack, HubError>>;
    type IntoFuture =
        std::pin::Pin<Box<dyn std::future::Future<Output = Self::Output> + Send + 'static>>;

    fn into_future(self) -> Self::IntoFuture {
        Box::pin(async move { self.resolve(false).await.0 })
    }
}

impl Acks {
    /// The acknowledgements and, per namespace involved, when its group-commit batch was
    /// appended and fsynced: what a traced publish reports as its `append` and `fsync` spans.
    pub async fn timed(self) -> (Vec<Result<Ack, HubError>>, Vec<NamespaceTiming>) {
        self.resolve(true).await
    }

    async fn resolve(self, timed: bool) -> (Vec<Result<Ack, HubError>>, Vec<NamespaceTiming>) {
        let Acks {
            n,
            started,
            waits,
            inner,
        } = self;
        let mut results: Vec<Option<Result<Ack, HubError>>> = (0..n).map(|_| None).collect();
        // Counted here and added once: one shared atomic per item was a contended line.
        let mut published = 0;
        let mut timings = Vec::new();
        for NamespaceWait { ns, bytes, idx, rx } in waits {
            let answer = match rx {
                Some(rx) => rx.await.ok(),
                None => None,
            };
            match answer {
                Some(WriteReply { acks, timing }) => {
                    if timed {
                        if let Some(rt) = inner.namespaces.get(ns) {
                            timings.push(NamespaceTiming {
                                namespace: rt.spec.name.clone(),
                                timing,
                            });
                        }
                    }
                    let before = published;
                    let ok = acks.iter().all(|a| a.is_ok());
                    for (i, a) in idx.into_iter().zip(acks) {
                        if matches!(
                            a,
                            Ok(Ack {
                                duplicate: false,
                                ..
                            })
                        ) {
                            published += 1;
                        }
                        results[i] = Some(a);
                    }
                    if let Some(rt) = inner.namespaces.get(ns) {
                        let m = &rt.metrics;
                        m.published.fetch_add(published - before, Ordering::Relaxed);
                        if ok {
                            m.published_bytes.fetch_add(bytes, Ordering::Relaxed);
                            m.ack.observe(started.elapsed());
                        }
                    }
                }
                None => {
                    for i in idx {
                        results[i] = Some(Err(HubError::ShuttingDown));
                    }
                }
            }
        }
        inner.published.fetch_add(published, Ordering::Relaxed);
        let results = results
            .into_iter()
            .map(|r| r.unwrap_or(Err(HubError::ShuttingDown)))
            .collect();
        (results, timings)
    }
}

type Recovered = HashMap<Channel, (Option<Arc<Message>>, VecDeque<Arc<Message>>, Offset)>;

/// Replays a namespace's stream into per-channel state.
fn recover(
    stream: &dyn Stream,
    class: Class,
    ring_cap: usize,
    dedup: &mut Dedup,
    from: Offset,
) -> Result<Recovered, HubError> {
    // Publications while replaying, messages only for what survives: most records are
    // replaced by later ones of their channel.
    type Replayed = (Option<Publication>, VecDeque<Publication>, Offset);
    let mut out: HashMap<Channel, Replayed> = HashMap::new();
    let mut cursor = from.max(stream.start_offset());
    let end = stream.next_offset();
    let mut skipped = 0u64;
    let mut lost = 0u64;
    while cursor < end {
        let batch = stream.read(cursor, 8192, 8 << 20)?;
        if batch.next <= cursor {
            break;
        }
        cursor = batch.next;
        skipped += batch.skipped;
        lost += batch.lost;
        for p in batch.publications {
            if let Some(id) = &p.msg_id {
                dedup.insert(p.channel.clone(), id.clone(), p.offset);
            }
            let channel = p.channel.clone();
            let offset = p.offset;
            let e = out
                .entry(channel)
                .or_insert_with(|| (None, VecDeque::new(), offset));
            match class {
                Class::State => e.0 = Some(p),
                Class::Stream => {
                    e.1.push_back(p);
                    if e.1.len() > ring_cap {
                        if let Some(old) = e.1.pop_front() {
                            e.2 = old.offset + 1;
                        }
                    }
                }
            }
        }
    }
    if skipped > 0 {
        tracing::warn!(
            namespace = stream.namespace(),
            skipped,
            "log records this version cannot read were skipped during recovery"
        );
    }
    if lost > 0 {
        // Placeholders stay until retention removes them; say so on every start, not only on
        // the one that found the damage.
        tracing::warn!(
            namespace = stream.namespace(),
            lost,
            "the log holds records lost to corruption (found by an earlier recovery, bytes in \
             its quarantine directory); they are passed over"
        );
    }
    // The values that stay in memory are slices of the stream's read chunks: give each its
    // own bytes, or every kept value would pin its chunk (with many channels, most of the log).
    let keep = |mut p: Publication| {
        p.data = Bytes::copy_from_slice(&p.data);
        Arc::new(Message::new(p))
    };
    Ok(out
        .into_iter()
        .map(|(ch, (latest, ring, from))| {
            (
                ch,
                (latest.map(keep), ring.into_iter().map(keep).collect(), from),
            )
        })
        .collect())
}

/// State channels' newest values as [`Stream::latest_values`] gave them.
fn latest_only(values: Vec<Publication>) -> Recovered {
    values
        .into_iter()
        .map(|mut p| {
            p.data = Bytes::copy_from_slice(&p.data);
            let offset = p.offset;
            (
                p.channel.clone(),
                (Some(Arc::new(Message::new(p))), VecDeque::new(), offset),
            )
        })
        .collect()
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
