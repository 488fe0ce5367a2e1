//! The namespace writer: one thread per namespace owns its log. It batches whatever publish
//! requests are waiting (group commit), appends them in one write, fsyncs per policy,
//! acknowledges, and dispatches to channel nodes in offset order.
//! How it waits for the next batch is in [`linger`]; the fsync thread that makes batches
//! durable behind it, in [`sync`].

use std::{
    collections::{HashMap, HashSet, VecDeque},
    hash::BuildHasherDefault,
    sync::{atomic::Ordering, Arc},
    time::Instant,
};

use bytes::Bytes;
use tickwire_model::{AddrHash, Channel, Class, FieldSpans, Offset, Publication};
use tickwire_stream::{AppendItem, Appender};
use tokio::sync::{mpsc, oneshot};

use crate::{
    feed::{AppendFeed, FeedBatch},
    hub::{Ack, NamespaceRt},
    node::{ChannelNode, NodeCache, Registry},
    FsyncPolicy, HubError, Message,
};

mod linger;
mod sync;

use linger::{next_message, Linger};
use sync::{fail_replies, SyncMsg, Syncer, SYNC_QUEUE};

pub(crate) struct Item {
    pub channel: Channel,
    pub msg_id: Option<String>,
    pub data: Bytes,
    /// Where the edge found the quote/trade fields in `data`, for the append feed's reader.
    pub spans: Option<FieldSpans>,
}

/// Where a write request's acknowledgements go, one per item.
pub(crate) type Reply = oneshot::Sender<WriteReply>;

/// A writer's answer to one write request: one result per item, and when its batch was
/// appended and fsynced (for traces).
pub(crate) struct WriteReply {
    pub acks: Vec<Result<Ack, HubError>>,
    pub timing: BatchTiming,
}

/// When a group-commit batch was appended and made durable, in Unix nanoseconds (the wall
/// clock of `tickwire_model::clock`, comparable with an edge's). Zero: did not happen (a batch
/// of duplicates appends nothing; `fsync = never` or `interval` syncs no batch before its
/// acknowledgement). A few words per batch, kept always: cheaper than asking whether anyone
/// traces.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BatchTiming {
    pub append_start: u64,
    pub append_end: u64,
    pub fsync_start: u64,
    pub fsync_end: u64,
}

pub(crate) enum WriterMsg {
    Write {
        items: Vec<Item>,
        reply: Reply,
    },
    /// Interval policy: fsync if anything was written since the last one.
    Sync,
    /// Apply retention; the sender, if any, is told when it is done.
    Retention(Option<oneshot::Sender<()>>),
    Shutdown(oneshot::Sender<()>),
}

/// Remembers recent (channel, msg_id) → offset so a retried publish returns its first offset.
pub(crate) struct Dedup {
    /// Per channel, so a lookup borrows the channel and the id instead of building a key.
    map: HashMap<Channel, HashMap<String, Offset>>,
    order: VecDeque<(Channel, String)>,
    cap: usize,
}

impl Dedup {
    pub fn new(cap: usize) -> Dedup {
        Dedup {
            map: HashMap::new(),
            order: VecDeque::new(),
            cap,
        }
    }

    pub fn get(&self, channel: &Channel, id: &str) -> Option<Offset> {
        self.map.get(channel)?.get(id).copied()
    }

    pub fn insert(&mut self, channel: Channel, id: String, offset: Offset) {
        if self.cap == 0 {
            return;
        }
        let ids = self.map.entry(channel.clone()).or_default();
        if ids.insert(id.clone(), offset).is_none() {
            self.order.push_back((channel, id));
            while self.order.len() > self.cap {
                if let Some((c, i)) = self.order.pop_front() {
                    if let Some(ids) = self.map.get_mut(&c) {
                        ids.remove(&i);
                        if ids.is_empty() {
                            self.map.remove(&c);
                        }
                    }
                }
            }
        }
    }

    /// Forgets ids whose messages retention removed (everything below `start`), so whether a
    /// retry is recognised does not depend on when the server last restarted: the window is
    /// rebuilt from the retained log at start, and kept equal to it here. Entries are in offset
    /// order (appended in order, rebuilt in order).
    pub fn forget_before(&mut self, start: Offset) {
        while let Some((c, i)) = self.order.front() {
            let offset = self.map.get(c).and_then(|ids| ids.get(i)).copied();
            if offset.is_some_and(|o| o >= start) {
                break;
            }
            if let Some((c, i)) = self.order.pop_front() {
                if let Some(ids) = self.map.get_mut(&c) {
                    ids.remove(&i);
                    if ids.is_empty() {
                        self.map.remove(&c);
                    }
                }
            }
        }
    }
}

enum Plan {
    New { offset: Offset },
    Dup { offset: Offset },
}

pub(crate) struct Writer {
    /// The namespace's stream: this thread is its only writer.
    pub stream: Box<dyn Appender>,
    pub ns: Arc<NamespaceRt>,
    pub registry: Arc<Registry>,
    pub dedup: Dedup,
    pub fsync: FsyncPolicy,
    pub ring_cap: usize,
    pub max_batch: usize,
    /// This thread's shortcut to channel nodes (see [`NodeCache`]).
    pub nodes: NodeCache,
    /// To the fsync thread; set by [`Writer::run`].
    pub sync_tx: Option<std::sync::mpsc::SyncSender<SyncMsg>>,
    /// Where appended batches go for a reader that follows closely (see [`crate::feed`]).
    pub feed: Option<Arc<AppendFeed>>,
}

impl Writer {
    pub fn run(mut self, mut rx: mpsc::Receiver<WriterMsg>) {
        let background = self.ns.spec.background;
        if background {
            crate::lower_thread_priority();
        }
        // fsync runs on its own thread so the next batch is appended (and, for state channels,
        // delivered) while the previous one is being made durable: a writer that waited for
        // each fsync would stall every subscriber for the disk's flush time.
        let (sync_tx, sync_rx) = std::sync::mpsc::sync_channel::<SyncMsg>(SYNC_QUEUE);
        let syncer = Syncer {
            ns: self.ns.clone(),
            registry: self.registry.clone(),
            ring_cap: self.ring_cap,
        };
        let syncer_thread = std::thread::Builder::new()
            .name(format!("tw-sync-{}", self.ns.spec.name))
            .spawn(move || {
                if background {
                    crate::lower_thread_priority();
                }
                syncer.run(sync_rx)
            });
        let syncer_thread = match syncer_thread {
            Ok(t) => t,
            Err(e) => {
                tracing::error!(namespace = %self.ns.spec.name, error = %e, "could not start the fsync thread; the namespace refuses writes");
                return;
            }
        };
        self.sync_tx = Some(sync_tx);
        let mut dirty = false;
        let mut last_sync = Instant::now();
        let mut linger = Linger::default();
        let mut look = false;
        while let Some(first) = next_message(&mut rx, look.then_some(&mut linger)) {
            let mut writes = Vec::new();
            let mut items = 0usize;
            let mut want_sync = false;
            let mut want_retention = false;
            let mut retention_done = Vec::new();
            let mut shutdown = None;
            let mut take = |m: WriterMsg, items: &mut usize| match m {
                WriterMsg::Write { items: it, reply } => {
                    *items += it.len();
                    writes.push((it, reply));
                }
                WriterMsg::Sync => want_sync = true,
                WriterMsg::Retention(done) => {
                    want_retention = true;
                    retention_done.extend(done);
                }
                WriterMsg::Shutdown(done) => shutdown = Some(done),
            };
            take(first, &mut items);
            while items < self.max_batch {
                match rx.try_recv() {
                    Ok(m) => take(m, &mut items),
                    Err(_) => break,
                }
            }
            look = linger.wanted(items);
            if !writes.is_empty() {
                dirty |= self.write_batch(writes, &mut last_sync);
            }
            if (want_sync || shutdown.is_some()) && dirty {
                self.sync_in_background(Vec::new(), Vec::new());
                dirty = false;
                last_sync = Instant::now();
            }
            if want_retention {
                let now = tickwire_model::clock::now_nanos();
                if self.ns.spec.class == Class::State {
                    if let Err(e) = self.carry_forward_state(now) {
                        // Keep the values: skip deleting this round rather than lose them.
                        tracing::error!(namespace = %self.ns.spec.name, error = %e, "could not carry state values forward; retention skipped");
                        retention_done.clear();
                        continue;
                    }
                }
                match self.stream.enforce_retention(now) {
                    Ok(0) => {}
                    Ok(n) => {
                        self.ns
                            .metrics
                            .retention_segments
                            .fetch_add(n as u64, Ordering::Relaxed);
                        self.dedup.forget_before(self.ns.stream.start_offset());
                        tracing::info!(namespace = %self.ns.spec.name, segments = n, "retention removed old segments")
                    }
                    Err(e) => {
                        tracing::warn!(namespace = %self.ns.spec.name, error = %e, "retention failed")
                    }
                }
            }
            for done in retention_done {
                let _ = done.send(());
            }
            if let Some(done) = shutdown {
                // Every acknowledgement still waiting for an fsync goes out before the hub
                // reports the namespace closed.
                self.sync_tx = None;
                let _ = syncer_thread.join();
                let _ = done.send(());
                return;
            }
        }
        self.sync_tx = None;
        let _ = syncer_thread.join();
    }

    /// Hands the current sync point to the fsync thread, with the replies and stream messages
    /// that must wait for it. A log that cannot give a point is poisoned: they fail now.
    fn sync_in_background(&mut self, replies: Vec<(Reply, WriteReply)>, stream: Vec<Arc<Message>>) {
        let point = match self.stream.durability_point() {
            Ok(p) => p,
            Err(e) => {
                let err = HubError::from(e);
                fail_replies(replies, &err);
                return;
            }
        };
        let job = SyncMsg {
            point,
            replies,
            stream,
        };
        let sent = match &self.sync_tx {
            Some(tx) => tx.send(job).map_err(|e| e.0),
            None => Err(job),
        };
        if let Err(job) = sent {
            let err = HubError::storage(&self.ns.spec.name, "the fsync thread stopped");
            fail_replies(job.replies, &err);
        }
    }

    /// Appends one group-commit batch. Returns whether unsynced data remains.
    fn write_batch(&mut self, writes: Vec<(Vec<Item>, Reply)>, last_sync: &mut Instant) -> bool {
        let timestamp = tickwire_model::clock::now_nanos();
        let base = self.stream.next_offset();
        let mut next = base;
        let (groups, reply_to): (Vec<Vec<Item>>, Vec<Reply>) = writes.into_iter().unzip();
        let mut plans: Vec<Vec<Plan>> = Vec::with_capacity(groups.len());
        // Each item to append: its (write, item) index. The k-th one gets offset `base + k`.
        let mut fresh: Vec<(usize, usize)> = Vec::new();
        // Borrowed from the requests: duplicates within this batch, before the window knows them.
        let mut in_batch: HashMap<(&str, &str), Offset> = HashMap::new();
        for (wi, items) in groups.iter().enumerate() {
            let mut p = Vec::with_capacity(items.len());
            for (ii, it) in items.iter().enumerate() {
                if let Some(id) = &it.msg_id {
                    let known = self
                        .dedup
                        .get(&it.channel, id)
                        .or_else(|| in_batch.get(&(it.channel.as_str(), id.as_str())).copied());
                    if let Some(offset) = known {
                        p.push(Plan::Dup { offset });
                        continue;
                    }
                    in_batch.insert((it.channel.as_str(), id.as_str()), next);
                }
                fresh.push((wi, ii));
                p.push(Plan::New { offset: next });
                next += 1;
            }
            plans.push(p);
        }
        // Whether the batch goes to the append feed's reader before it is announced.
        let hold = self.feed.as_ref().is_some_and(|f| f.wanted());
        // A poisoned log fails everything, duplicates too: their first copy may be among the
        // pages a failed fsync dropped.
        let mut timing = BatchTiming::default();
        let mut result: Result<(), HubError> = if self.stream.is_poisoned() {
            Err(HubError::storage(
                &self.ns.spec.name,
                "an earlier fsync failed; the namespace refuses writes until the server restarts",
            ))
        } else {
            Ok(())
        };
        if result.is_ok() && !fresh.is_empty() {
            let items: Vec<AppendItem<'_>> = fresh
                .iter()
                .map(|&(wi, ii)| {
                    let it = &groups[wi][ii];
                    AppendItem {
                        channel: &it.channel,
                        msg_id: it.msg_id.as_deref(),
                        data: &it.data,
                    }
                })
                .collect();
            timing.append_start = tickwire_model::clock::now_nanos();
            // With a feed reader, the batch becomes readable only once the feed holds it
            // (below): a reader woken by the append would otherwise find it in the log first and
            // read it back, which under load it did for ~6 % of the quotes.
            let appended = if hold {
                self.stream.append_unannounced(&items, timestamp)
            } else {
                self.stream.append(&items, timestamp)
            };
            timing.append_end = tickwire_model::clock::now_nanos();
            result = match appended {
                Ok(first) if first == base => Ok(()),
                Ok(first) => Err(HubError::storage(
                    &self.ns.spec.name,
                    format!("log assigned offset {first}, expected {base}"),
                )),
                Err(e) => Err(HubError::from(e)),
            };
        }
        let stream = self.ns.spec.class == Class::Stream;
        let always = matches!(self.fsync, FsyncPolicy::Always);
        let wrote = result.is_ok() && !fresh.is_empty();
        // The appended batch, handed to the feed's reader (if any) before it is delivered, so
        // a reader woken by the append finds it there rather than reading the log.
        let feed = self.feed.as_ref().filter(|_| wrote && hold);
        let batch = Arc::new(FeedBatch {
            base,
            timestamp,
            bytes: feed.map_or(0, |_| batch_bytes(&groups)),
            groups,
            fresh,
        });
        if let Some(feed) = feed {
            feed.push(batch.clone());
        }
        if hold {
            // Nothing to announce after no append or a failed one (the log's end did not
            // move), and announcing the same end again changes nothing.
            self.stream.announce();
        }
        let mut messages: Vec<Arc<Message>> = Vec::new();
        if wrote {
            // The window learns the ids now, not after the fsync: a retry that arrives while
            // the first copy is being synced must still be recognised. Its acknowledgement
            // waits behind the same fsync (the fsync thread completes in order).
            for (offset, it) in batch.appended() {
                if let Some(id) = &it.msg_id {
                    self.dedup.insert(it.channel.clone(), id.clone(), offset);
                }
            }
            if stream {
                messages = batch
                    .appended()
                    .map(|(offset, it)| message(it, offset, timestamp))
                    .collect();
                // Stream messages go out once durable under the policy (with `always`, on the
                // fsync thread).
                if !always {
                    dispatch_stream(
                        &self.ns,
                        &self.registry,
                        &mut self.nodes,
                        self.ring_cap,
                        &messages,
                    );
                }
            } else {
                // State values go out as soon as they are written.
                self.dispatch_state(&batch);
            }
        }
        let replies: Vec<(Reply, WriteReply)> = reply_to
            .into_iter()
            .zip(plans)
            .map(|(reply, plan)| {
                let acks = plan
                    .into_iter()
                    .map(|p| match (p, &result) {
                        (Plan::Dup { offset }, Ok(())) => Ok(Ack {
                            offset,
                            timestamp: 0,
                            duplicate: true,
                        }),
                        (Plan::New { offset }, Ok(())) => Ok(Ack {
                            offset,
                            timestamp,
                            duplicate: false,
                        }),
                        (_, Err(e)) => Err(e.clone()),
                    })
                    .collect();
                (reply, WriteReply { acks, timing })
            })
            .collect();
        if result.is_err() {
            for (reply, answer) in replies {
                let _ = reply.send(answer);
            }
            return false;
        }
        if always {
            // Acknowledged (and, for streams, delivered) by the fsync thread once durable.
            let stream_msgs = if stream { messages } else { Vec::new() };
            self.sync_in_background(replies, stream_msgs);
            return false;
        }
        for (reply, answer) in replies {
            let _ = reply.send(answer);
        }
        if let FsyncPolicy::Interval(d) = self.fsync {
            if wrote && last_sync.elapsed() >= d {
                self.sync_in_background(Vec::new(), Vec::new());
                *last_sync = Instant::now();
                return false;
            }
        }
        // Unsynced data: the interval tick (or a clean shutdown, under any policy) syncs it.
        wrote
    }

    /// Delivers a state batch: to each channel's node only its newest value in the batch
    /// (latest wins, and a subscriber would conflate the older ones anyway). Most of a fast
    /// symbol's ticks are superseded within their own batch.
    fn dispatch_state(&mut self, batch: &FeedBatch) {
        // Newest first, so a node's first sighting is its channel's newest value here.
        let mut newest: Vec<Option<Arc<ChannelNode>>> = vec![None; batch.fresh.len()];
        let mut seen: HashSet<usize, BuildHasherDefault<AddrHash>> = HashSet::default();
        let slot = |offset: Offset| usize::try_from(offset - batch.base).unwrap_or(usize::MAX);
        for (offset, it) in batch.appended().rev() {
            let node = self
                .nodes
                .get_or_create(&self.registry, &it.channel, Class::State, offset);
            node.count_published();
            if seen.insert(Arc::as_ptr(node) as usize) {
                if let Some(s) = newest.get_mut(slot(offset)) {
                    *s = Some(node.clone());
                }
            }
        }
        // An older value never becomes a message at all: projections read every value from
        // the stream, behind the writer.
        for (offset, it) in batch.appended() {
            if let Some(node) = newest.get_mut(slot(offset)).and_then(Option::take) {
                let m = message(it, offset, batch.timestamp);
                if let Err(m) = node.dispatch(m, self.ring_cap) {
                    // Evicted since the lookup above (it held nothing yet): the channel's
                    // live node, made now if need be, gets the value.
                    self.nodes.forget(&m.publication.channel);
                    self.nodes
                        .dispatch(&self.registry, Class::State, offset, m, self.ring_cap);
                }
            }
        }
        self.ns.dispatched.store(batch.end(), Ordering::Release);
    }

    /// Retention deletes whole segments; a state channel whose newest value lives only in a
    /// segment about to go would lose it. Re-append those values (fsynced) first, so the newest
    /// value of every state channel survives retention and restarts.
    fn carry_forward_state(&mut self, now: u64) -> Result<(), HubError> {
        // Appending can roll a segment and change the plan; a few rounds always settle it.
        for _ in 0..4 {
            let cutoff = self.stream.retention_cutoff(now);
            if cutoff <= self.stream.start_offset() {
                return Ok(());
            }
            let doomed: Vec<(Arc<crate::node::ChannelNode>, Arc<Message>)> = self
                .registry
                .nodes_in(&self.ns.spec.name)
                .into_iter()
                .filter_map(|n| {
                    let latest = n.inner.lock().latest.clone()?;
                    (latest.publication.offset < cutoff).then_some((n, latest))
                })
                .collect();
            if doomed.is_empty() {
                return Ok(());
            }
            let items: Vec<AppendItem<'_>> = doomed
                .iter()
                .map(|(n, m)| AppendItem {
                    channel: &n.channel,
                    msg_id: m.publication.msg_id.as_deref(),
                    data: &m.publication.data,
                })
                .collect();
            let first = self.stream.append(&items, now)?;
            self.stream.sync()?;
            for (i, (node, old)) in doomed.iter().enumerate() {
                let mut p = old.publication.clone();
                p.offset = first + i as u64;
                p.timestamp = now;
                let mut inner = node.inner.lock();
                // Only if no newer value arrived meanwhile (none can: this thread dispatches).
                if inner.latest.as_ref().is_some_and(|l| Arc::ptr_eq(l, old)) {
                    inner.latest = Some(Arc::new(Message::new(p)));
                }
            }
            self.ns
                .dispatched
                .store(self.stream.next_offset(), Ordering::Release);
            tracing::info!(namespace = %self.ns.spec.name, values = doomed.len(), "carried state values forward ahead of retention");
        }
        Ok(())
    }
}

/// Delivers written stream messages (every one, in offset order) to their channel nodes, then
/// records how far delivery got. State batches go through
/// [`Writer::dispatch_state`], which hands each node only its newest value.
pub(crate) fn dispatch_stream(
    ns: &NamespaceRt,
    registry: &Registry,
    nodes: &mut NodeCache,
    ring_cap: usize,
    messages: &[Arc<Message>],
) {
    for m in messages {
        nodes.dispatch(
            registry,
            Class::Stream,
            m.publication.offset,
            m.clone(),
            ring_cap,
        );
    }
    if let Some(m) = messages.last() {
        ns.dispatched
            .store(m.publication.offset + 1, Ordering::Release);
    }
}

/// The message for a freshly appended item. The message stays in memory for an unknown time
/// (a state channel's newest value, a stream's ring), so its data gets an allocation of its
/// own: an edge may hand in a view of a whole request body (see the HTTP publish path), and a
/// rarely updated channel would pin it.
fn message(it: &Item, offset: Offset, timestamp: u64) -> Arc<Message> {
    Arc::new(Message::new(Publication {
        channel: it.channel.clone(),
        offset,
        timestamp,
        msg_id: it.msg_id.clone(),
        data: Bytes::copy_from_slice(&it.data),
    }))
}

/// The data bytes of a batch's items, what the feed counts against its limit: every item it
/// holds on to, duplicates too (they are in their request's group and keep its body).
fn batch_bytes(groups: &[Vec<Item>]) -> usize {
    groups.iter().flatten().map(|it| it.data.len()).sum()
}
