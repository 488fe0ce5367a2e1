//! One namespace's JetStream stream as a [`tickwire_stream::Stream`]: its configuration, the
//! in-memory window this node's tail fills, and reads that go to JetStream for older messages.

use std::{
    collections::VecDeque,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    time::Duration,
};

use async_nats::jetstream::{self, stream::Config as JsConfig};
use parking_lot::Mutex;
use tickwire_model::{Channel, Class, Epoch, NamespaceSpec, Offset, Publication};
use tickwire_stream::{ChannelPage, Opened, ReadBatch, Stream, StreamError, Watermark, Writer};

use crate::{codec, direct, publish, tail, Cluster, ClusterError, Keep, Storage};

/// The recent messages of a namespace as this node's tail read them.
pub(crate) struct Cache {
    pub items: VecDeque<Publication>,
    /// Every stored message with an offset at or above this is in `items` (up to `end`).
    pub complete_from: Offset,
    /// One past the last message the tail read: where it continues.
    pub end: Offset,
    /// Bytes of data in `items`.
    pub bytes: usize,
    pub max_items: usize,
}

/// Data bytes the window holds at most, whatever `tail_cache` says.
const CACHE_MAX_BYTES: usize = 256 << 20;

impl Cache {
    /// Appends what the tail read (in order) and drops the oldest beyond the bounds.
    pub fn extend(&mut self, batch: Vec<Publication>, end: Offset) {
        for p in batch {
            self.bytes += p.data.len();
            self.items.push_back(p);
        }
        self.end = self.end.max(end);
        while self.items.len() > self.max_items || self.bytes > CACHE_MAX_BYTES {
            match self.items.pop_front() {
                Some(old) => {
                    self.bytes -= old.data.len();
                    self.complete_from = old.offset + 1;
                }
                None => break,
            }
        }
    }
}

/// What a namespace's stream, tail, probe and publisher share.
pub(crate) struct Shared {
    pub cluster: Arc<Cluster>,
    pub namespace: String,
    pub stream_name: String,
    pub all_subjects: String,
    pub epoch: Epoch,
    pub cache: Mutex<Cache>,
    pub watermark: Arc<Watermark>,
    /// The highest end anyone told this node of (its own publishes' acknowledgements, the
    /// stream's state): ahead of the tail for a moment after another node's append.
    pub known_end: AtomicU64,
    /// The oldest offset JetStream still holds, as last seen.
    pub start: AtomicU64,
    /// Why the last look at the stream failed, while it does.
    pub probe_error: Mutex<Option<String>>,
    /// The stream, for requests that must reach its leader.
    pub leader: jetstream::stream::Stream,
}

impl Shared {
    fn prefix(&self) -> &str {
        &self.cluster.config.prefix
    }

    fn storage(&self, e: impl std::fmt::Display) -> StreamError {
        StreamError::storage(&self.namespace, e)
    }

    /// `[from, until)` from JetStream, one read's worth; blocking.
    fn remote(
        &self,
        from: Offset,
        until: Offset,
        max: usize,
        max_bytes: usize,
        filter: Option<&Channel>,
    ) -> Result<(Vec<Publication>, Offset), StreamError> {
        let client = self.cluster.client.clone();
        let leader = self.leader.clone();
        let stream = self.stream_name.clone();
        let prefix = self.prefix().to_string();
        let all = self.all_subjects.clone();
        let filter = filter.map(|c| codec::subject(&prefix, c));
        let timeout = self.cluster.request_timeout();
        self.cluster
            .run(
                &format!("read of {}", self.stream_name),
                timeout * 2,
                async move {
                    direct::read_range(
                        &client,
                        &leader,
                        &stream,
                        &prefix,
                        &all,
                        from,
                        until,
                        max.min(direct::MAX_BATCH),
                        max_bytes,
                        filter.as_deref(),
                        timeout,
                    )
                    .await
                },
            )
            .and_then(|r| r)
            .map_err(|e| self.storage(e))
    }
}

/// The read side of a shared namespace.
pub(crate) struct NatsStream(pub Arc<Shared>);

impl Stream for NatsStream {
    fn namespace(&self) -> &str {
        &self.0.namespace
    }

    fn epoch(&self) -> Epoch {
        self.0.epoch
    }

    fn start_offset(&self) -> Offset {
        self.0.start.load(Ordering::Acquire)
    }

    fn next_offset(&self) -> Offset {
        self.0.watermark.get()
    }

    fn read(
        &self,
        from: Offset,
        max_records: usize,
        max_bytes: usize,
    ) -> Result<ReadBatch, StreamError> {
        let from = from.max(self.start_offset());
        let until = {
            let c = self.0.cache.lock();
            if from >= c.complete_from {
                let first = c.items.partition_point(|p| p.offset < from);
                let mut out = Vec::new();
                let mut bytes = 0usize;
                for p in c.items.range(first..) {
                    if out.len() >= max_records.max(1) || (!out.is_empty() && bytes >= max_bytes) {
                        break;
                    }
                    bytes += p.data.len();
                    out.push(p.clone());
                }
                let next = match out.last() {
                    Some(p) => p.offset + 1,
                    // Nothing stored from `from` to where the tail is (removed messages).
                    None => from.max(c.end),
                };
                return Ok(ReadBatch {
                    publications: out,
                    next,
                    skipped: 0,
                    lost: 0,
                });
            }
            c.complete_from
        };
        let (publications, next) = self.0.remote(from, until, max_records, max_bytes, None)?;
        Ok(ReadBatch {
            publications,
            next,
            skipped: 0,
            lost: 0,
        })
    }

    fn watermark(&self) -> &Arc<Watermark> {
        &self.0.watermark
    }

    fn known_end(&self) -> Offset {
        self.0
            .known_end
            .load(Ordering::Acquire)
            .max(self.next_offset())
    }

    fn latest_values(&self) -> Result<Option<Vec<Publication>>, StreamError> {
        let end = self.next_offset();
        tail::latest_values(&self.0, end)
            .map(Some)
            .map_err(|e| self.0.storage(e))
    }

    fn visibility_lag(&self) -> Duration {
        Duration::from_millis(self.0.cluster.config.visibility_lag_ms)
    }

    fn unavailable(&self) -> Option<String> {
        self.0
            .cluster
            .unreachable()
            .or_else(|| self.0.probe_error.lock().clone())
    }

    /// One channel's messages: older than the window, from JetStream filtered by the channel's
    /// subject (no scan of the other channels); then from the window.
    fn read_channel(
        &self,
        channel: &Channel,
        from: Offset,
        until: Offset,
        max_messages: usize,
        max_records: usize,
    ) -> Result<ChannelPage, StreamError> {
        let mut cursor = from.max(self.start_offset());
        let mut out = Vec::new();
        let complete_from = self.0.cache.lock().complete_from;
        if cursor < complete_from && cursor < until {
            let stop = until.min(complete_from);
            let want = max_messages.min(max_records).max(1);
            let (got, next) = self.0.remote(cursor, stop, want, 8 << 20, Some(channel))?;
            out = got;
            cursor = next.max(cursor);
            if out.len() >= max_messages || cursor < stop || cursor >= until {
                return Ok(ChannelPage {
                    publications: out,
                    next: cursor,
                    exhausted: false,
                });
            }
        }
        let c = self.0.cache.lock();
        // The window moved on while JetStream was read: the caller reads again from here.
        if cursor < c.complete_from {
            return Ok(ChannelPage {
                publications: out,
                next: cursor,
                exhausted: false,
            });
        }
        let first = c.items.partition_point(|p| p.offset < cursor);
        let mut next = until.min(c.end).max(cursor);
        for (scanned, p) in c.items.range(first..).enumerate() {
            if p.offset >= until {
                break;
            }
            if out.len() >= max_messages || scanned >= max_records {
                next = p.offset;
                break;
            }
            if p.channel == *channel {
                out.push(p.clone());
            }
        }
        Ok(ChannelPage {
            publications: out,
            next,
            exhausted: false,
        })
    }
}

/// The JetStream configuration a namespace's stream should have.
fn desired(cluster: &Cluster, spec: &NamespaceSpec, name: &str) -> JsConfig {
    let cfg = &cluster.config;
    let ns = cfg.namespace(&spec.name);
    let keep = ns.keep.unwrap_or(Keep::All);
    // Latest-only keeps a channel's value however old it is, like the embedded state
    // namespace that carries values forward ahead of retention.
    let max_age = match keep {
        Keep::Latest => Duration::ZERO,
        Keep::All => spec.retention_age.unwrap_or(Duration::ZERO),
    };
    // JetStream refuses a duplicate window longer than the messages are kept (a namespace
    // with `retention_age` under two minutes never opened): a message id cannot outlive its
    // message anyway.
    let mut duplicate_window = Duration::from_secs(cfg.duplicate_window_secs.max(1));
    if !max_age.is_zero() {
        duplicate_window = duplicate_window.min(max_age);
    }
    JsConfig {
        name: name.to_string(),
        description: Some(format!("Tickwire namespace `{}`", spec.name)),
        subjects: vec![codec::namespace_subjects(&cfg.prefix, &spec.name)],
        max_age,
        max_bytes: spec
            .retention_bytes
            .and_then(|b| i64::try_from(b).ok())
            .unwrap_or(-1),
        max_messages: -1,
        max_messages_per_subject: match keep {
            Keep::Latest => 1,
            Keep::All => -1,
        },
        max_message_size: i32::try_from(spec.max_message_bytes.saturating_add(1024))
            .unwrap_or(i32::MAX),
        duplicate_window,
        num_replicas: ns.replicas.unwrap_or(cfg.replicas),
        storage: match ns.storage.unwrap_or(Storage::File) {
            Storage::File => jetstream::stream::StorageType::File,
            Storage::Memory => jetstream::stream::StorageType::Memory,
        },
        // Batched reads without a consumer (history, catch-up) from any replica.
        allow_direct: true,
        discard: jetstream::stream::DiscardPolicy::Old,
        ..Default::default()
    }
}

/// The settings Tickwire owns differ (the server reports "unlimited" as -1).
fn differs(have: &JsConfig, want: &JsConfig) -> Option<String> {
    let unlimited = |v: i64| if v <= 0 { -1 } else { v };
    let mut d = Vec::new();
    if have.subjects != want.subjects {
        d.push("subjects");
    }
    if have.max_age != want.max_age {
        d.push("max_age");
    }
    if unlimited(have.max_bytes) != unlimited(want.max_bytes) {
        d.push("max_bytes");
    }
    if unlimited(have.max_messages_per_subject) != unlimited(want.max_messages_per_subject) {
        d.push("max_msgs_per_subject");
    }
    if have.max_message_size != want.max_message_size {
        d.push("max_msg_size");
    }
    if have.duplicate_window != want.duplicate_window {
        d.push("duplicate_window");
    }
    if have.num_replicas.max(1) != want.num_replicas {
        d.push("replicas");
    }
    if have.storage != want.storage {
        d.push("storage");
    }
    if have.allow_direct != want.allow_direct {
        d.push("allow_direct");
    }
    (!d.is_empty()).then(|| d.join(", "))
}

/// Creates the stream, or brings an existing one to the configured settings; its state and a
/// handle to it.
fn ensure(
    cluster: &Cluster,
    what: &str,
    want: JsConfig,
) -> Result<(jetstream::stream::Info, jetstream::stream::Stream), ClusterError> {
    let js = cluster.js.clone();
    let what2 = what.to_string();
    cluster.run(what, cluster.request_timeout() * 4, async move {
        let mut stream = js
            .get_or_create_stream(want.clone())
            .await
            .map_err(|e| ClusterError::js(&what2, e))?;
        let have = stream
            .info()
            .await
            .map_err(|e| ClusterError::js(&what2, e))?
            .config
            .clone();
        if let Some(fields) = differs(&have, &want) {
            tracing::info!(stream = %want.name, %fields, "updating the stream to the configured settings");
            js.update_stream(&want).await.map_err(|e| {
                ClusterError::js(
                    &what2,
                    format!("its settings differ from the configuration ({fields}) and cannot be changed: {e}"),
                )
            })?;
            stream = js
                .get_stream(&want.name)
                .await
                .map_err(|e| ClusterError::js(&what2, e))?;
        }
        let info = stream
            .info()
            .await
            .map_err(|e| ClusterError::js(&what2, e))?
            .clone();
        Ok::<_, ClusterError>((info, stream))
    })?
}

/// Creates the namespace's stream, or brings an existing one to the configured settings, and
/// starts this node's tail on it.
pub(crate) fn open(cluster: &Arc<Cluster>, spec: &NamespaceSpec) -> Result<Opened, ClusterError> {
    let name = format!("{}_{}", cluster.config.prefix, spec.name);
    let want = desired(cluster, spec, &name);
    let what = format!("stream {name}");
    // JetStream may still be electing its leaders when a cluster starts, and two nodes may
    // create the same stream at once: retried until `connect_timeout_secs`.
    let deadline =
        std::time::Instant::now() + Duration::from_secs(cluster.config.connect_timeout_secs.max(1));
    let (info, leader) = loop {
        match ensure(cluster, &what, want.clone()) {
            Ok(got) => break got,
            Err(e) if std::time::Instant::now() < deadline => {
                tracing::warn!(stream = %name, error = %e, "cannot open the stream yet; retrying");
                std::thread::sleep(Duration::from_millis(500));
            }
            Err(e) => return Err(e),
        }
    };

    let epoch = Epoch(codec::nanos(info.created));
    let end = info.state.last_sequence;
    let start = info.state.first_sequence.saturating_sub(1).min(end);
    let shared = Arc::new(Shared {
        cluster: cluster.clone(),
        namespace: spec.name.clone(),
        stream_name: name,
        all_subjects: codec::namespace_subjects(&cluster.config.prefix, &spec.name),
        epoch,
        cache: Mutex::new(Cache {
            items: VecDeque::new(),
            complete_from: end,
            end,
            bytes: 0,
            max_items: cluster.config.tail_cache,
        }),
        watermark: Arc::new(Watermark::new(end)),
        known_end: AtomicU64::new(end),
        start: AtomicU64::new(start),
        probe_error: Mutex::new(None),
        leader,
    });
    tracing::info!(
        namespace = %spec.name,
        stream = %shared.stream_name,
        epoch = %epoch,
        start,
        next = end,
        state_class = spec.class == Class::State,
        "cluster stream opened"
    );
    tail::spawn(&shared, end);
    let appender = publish::NatsAppender::spawn(&shared);
    Ok(Opened {
        stream: Arc::new(NatsStream(shared)),
        writer: Writer::Shared(Arc::new(appender)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(offset: Offset, data: &'static str) -> Publication {
        Publication {
            channel: Channel::parse("chat.a").unwrap(),
            offset,
            timestamp: 0,
            msg_id: None,
            data: bytes::Bytes::from_static(data.as_bytes()),
        }
    }

    #[test]
    fn the_window_is_complete_from_its_oldest_kept_message() {
        let mut c = Cache {
            items: VecDeque::new(),
            complete_from: 10,
            end: 10,
            bytes: 0,
            max_items: 3,
        };
        c.extend(vec![p(10, "a"), p(12, "b")], 13);
        assert_eq!((c.complete_from, c.end, c.items.len()), (10, 13, 2));
        c.extend(vec![p(13, "c"), p(14, "d")], 15);
        assert_eq!(c.items.len(), 3);
        assert_eq!(c.complete_from, 11, "evicting 10 keeps 11.. complete");
        assert_eq!(c.bytes, 3);
    }

    #[test]
    fn only_owned_settings_count_as_different() {
        let want = JsConfig {
            name: "tw_chat".into(),
            subjects: vec!["tw.chat.>".into()],
            max_bytes: -1,
            max_messages_per_subject: -1,
            num_replicas: 3,
            allow_direct: true,
            ..Default::default()
        };
        let mut have = want.clone();
        have.max_bytes = 0;
        have.description = Some("changed by hand".into());
        assert_eq!(differs(&have, &want), None);
        have.num_replicas = 1;
        assert_eq!(differs(&have, &want).as_deref(), Some("replicas"));
    }
}
