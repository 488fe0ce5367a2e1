//! A namespace whose stream other nodes append to as well (cluster mode). Two threads replace
//! the embedded writer's one:
//!
//! - the **writer** hands each publish request to the stream in arrival order and answers it
//!   once the stream acknowledged every item (for JetStream: stored on a quorum). Offsets come
//!   from those acknowledgements, and a repeated `msg_id` is recognised by the stream (its
//!   duplicate window, across nodes) or, before that, by this node's window of ids it has seen
//!   in the stream;
//! - the **dispatcher** follows the stream's tail — every node's appends, in stream order — and
//!   hands each message to its channel node exactly as the embedded writer does with its own
//!   batches. Messages reach subscribers only from here, so every node delivers the same
//!   messages with the same offsets, and only once the stream has stored them.

use std::{
    collections::HashSet,
    hash::BuildHasherDefault,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use bytes::Bytes;
use parking_lot::{Condvar, Mutex};
use tickwire_model::{AddrHash, Class, Offset, Publication};
use tickwire_stream::{Appended, SharedAppender, SharedItem, StreamError};
use tokio::sync::mpsc;

use crate::{
    hub::{Ack, NamespaceRt},
    node::{NodeCache, Registry},
    writer::{dispatch_stream, BatchTiming, Dedup, Item, Reply, WriteReply, WriterMsg},
    HubError, Message,
};

/// Starts the writer and dispatcher threads of a shared namespace. The dispatcher follows the
/// stream from `from` (where the replay at open ended).
#[allow(clippy::too_many_arguments)]
pub(crate) fn start(
    appender: Arc<dyn SharedAppender>,
    ns: Arc<NamespaceRt>,
    registry: Arc<Registry>,
    dedup: Dedup,
    ring_cap: usize,
    from: Offset,
    rx: mpsc::Receiver<WriterMsg>,
    stop: Arc<AtomicBool>,
) -> Result<Vec<JoinHandle<()>>, HubError> {
    let dedup = Arc::new(Mutex::new(dedup));
    let name = ns.spec.name.clone();
    let spawn_err = |e: std::io::Error| HubError::storage(&name, format!("spawning a thread: {e}"));
    let writer = SharedWriter {
        appender,
        ns: ns.clone(),
        dedup: dedup.clone(),
        outstanding: Arc::new(Outstanding::default()),
    };
    let w = std::thread::Builder::new()
        .name(format!("tw-writer-{name}"))
        .spawn(move || writer.run(rx))
        .map_err(spawn_err)?;
    let dispatcher = Dispatcher {
        ns,
        registry,
        dedup,
        ring_cap,
        stop,
    };
    let d = std::thread::Builder::new()
        .name(format!("tw-dispatch-{name}"))
        .spawn(move || dispatcher.run(from))
        .map_err(spawn_err)?;
    Ok(vec![w, d])
}

/// Appends handed to the stream and not yet acknowledged, so shutdown can wait for them.
#[derive(Default)]
struct Outstanding {
    count: Mutex<usize>,
    zero: Condvar,
}

impl Outstanding {
    fn add(&self) {
        *self.count.lock() += 1;
    }

    fn done(&self) {
        let mut c = self.count.lock();
        *c = c.saturating_sub(1);
        if *c == 0 {
            self.zero.notify_all();
        }
    }

    /// Waits until nothing is outstanding or `timeout` passes; whether it got to zero.
    fn wait_zero(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let mut c = self.count.lock();
        while *c > 0 {
            if self.zero.wait_until(&mut c, deadline).timed_out() {
                return *c == 0;
            }
        }
        true
    }
}

/// How long shutdown waits for acknowledgements still in flight: the stream's own publish
/// timeout bounds each of them, so this only guards against a stuck connection.
const SHUTDOWN_WAIT: Duration = Duration::from_secs(15);

struct SharedWriter {
    appender: Arc<dyn SharedAppender>,
    ns: Arc<NamespaceRt>,
    dedup: Arc<Mutex<Dedup>>,
    outstanding: Arc<Outstanding>,
}

impl SharedWriter {
    fn run(self, mut rx: mpsc::Receiver<WriterMsg>) {
        while let Some(msg) = rx.blocking_recv() {
            match msg {
                WriterMsg::Write { items, reply } => self.write(items, reply),
                // The stream's servers decide when to sync and apply its limits themselves.
                WriterMsg::Sync => {}
                WriterMsg::Retention(done) => {
                    if let Some(done) = done {
                        let _ = done.send(());
                    }
                }
                WriterMsg::Shutdown(done) => {
                    if !self.outstanding.wait_zero(SHUTDOWN_WAIT) {
                        tracing::warn!(namespace = %self.ns.spec.name, "shutdown: acknowledgements still outstanding from the cluster; their publishers are told the server is shutting down");
                    }
                    let _ = done.send(());
                    return;
                }
            }
        }
        self.outstanding.wait_zero(SHUTDOWN_WAIT);
    }

    /// One publish request: ids this node has seen in the stream are answered at once as
    /// duplicates; the rest go to the stream, and the request is answered when they are
    /// acknowledged.
    fn write(&self, items: Vec<Item>, reply: Reply) {
        let timestamp = tickwire_model::clock::now_nanos();
        // Per item: the first copy's offset when this node knows the id already.
        let mut known: Vec<Option<Offset>> = Vec::with_capacity(items.len());
        let mut fresh: Vec<SharedItem> = Vec::with_capacity(items.len());
        {
            let dedup = self.dedup.lock();
            for it in items {
                let seen = it
                    .msg_id
                    .as_deref()
                    .and_then(|id| dedup.get(&it.channel, id));
                known.push(seen);
                if seen.is_none() {
                    fresh.push(SharedItem {
                        channel: it.channel,
                        msg_id: it.msg_id,
                        data: it.data,
                    });
                }
            }
        }
        let duplicate = |offset| {
            Ok(Ack {
                offset,
                timestamp: 0,
                duplicate: true,
            })
        };
        if fresh.is_empty() {
            let _ = reply.send(WriteReply {
                acks: known.into_iter().flatten().map(duplicate).collect(),
                timing: BatchTiming::default(),
            });
            return;
        }
        // Remembered once acknowledged, so a retry on this node is recognised even before the
        // dispatcher reads the first copy back from the stream.
        let ids: Vec<Option<(tickwire_model::Channel, String)>> = fresh
            .iter()
            .map(|f| f.msg_id.clone().map(|id| (f.channel.clone(), id)))
            .collect();
        let dedup = self.dedup.clone();
        let outstanding = self.outstanding.clone();
        let namespace = self.ns.spec.name.clone();
        outstanding.add();
        self.appender.append(
            fresh,
            Box::new(move |results: Vec<Result<Appended, StreamError>>| {
                {
                    let mut d = dedup.lock();
                    for (id, r) in ids.into_iter().zip(&results) {
                        if let (Some((channel, id)), Ok(a)) = (id, r) {
                            d.insert(channel, id, a.offset);
                        }
                    }
                }
                let mut results = results.into_iter();
                let acks = known
                    .into_iter()
                    .map(|k| match k {
                        Some(offset) => duplicate(offset),
                        None => match results.next() {
                            Some(Ok(a)) => Ok(Ack {
                                offset: a.offset,
                                timestamp,
                                duplicate: a.duplicate,
                            }),
                            Some(Err(e)) => Err(HubError::from(e)),
                            None => Err(HubError::storage(
                                &namespace,
                                "the stream answered fewer items than it was given",
                            )),
                        },
                    })
                    .collect();
                // JetStream persists before it acknowledges: the append span runs to its answer,
                // and there is no fsync of ours to time.
                let timing = BatchTiming {
                    append_start: timestamp,
                    append_end: tickwire_model::clock::now_nanos(),
                    ..BatchTiming::default()
                };
                let _ = reply.send(WriteReply { acks, timing });
                outstanding.done();
            }),
        );
    }
}

struct Dispatcher {
    ns: Arc<NamespaceRt>,
    registry: Arc<Registry>,
    dedup: Arc<Mutex<Dedup>>,
    ring_cap: usize,
    stop: Arc<AtomicBool>,
}

/// How often a dispatcher with nothing to do looks at the stop flag.
const IDLE_WAIT: Duration = Duration::from_millis(200);

impl Dispatcher {
    fn run(self, from: Offset) {
        let mut tail = self.ns.stream.clone().tail(from);
        let mut nodes = NodeCache::default();
        let mut failures = 0usize;
        while !self.stop.load(Ordering::Acquire) {
            let batch = match tail.next_blocking(IDLE_WAIT) {
                Ok(b) => {
                    failures = 0;
                    b
                }
                Err(e) => {
                    // Reads retry forever: the stream comes back (the node rejoins by itself),
                    // and nothing after the failed position may be delivered before it.
                    failures += 1;
                    if failures == 1 || failures.is_power_of_two() {
                        tracing::warn!(namespace = %self.ns.spec.name, position = tail.position(), error = %e, failures, "reading the shared stream failed; retrying");
                    }
                    std::thread::sleep(IDLE_WAIT);
                    continue;
                }
            };
            if batch.is_empty() {
                continue;
            }
            {
                let mut d = self.dedup.lock();
                for p in &batch {
                    if let Some(id) = &p.msg_id {
                        d.insert(p.channel.clone(), id.clone(), p.offset);
                    }
                }
            }
            let end = tail.position();
            match self.ns.spec.class {
                Class::Stream => {
                    let messages: Vec<Arc<Message>> = batch
                        .into_iter()
                        .map(|p| Arc::new(Message::new(p)))
                        .collect();
                    dispatch_stream(
                        &self.ns,
                        &self.registry,
                        &mut nodes,
                        self.ring_cap,
                        &messages,
                    );
                }
                Class::State => self.dispatch_state(batch, &mut nodes),
            }
            // Past gaps too (records the stream removed): nothing below `end` is coming.
            self.ns.dispatched.fetch_max(end, Ordering::AcqRel);
        }
    }

    /// Each channel's newest value of the batch only, as the embedded writer does: the older
    /// ones would be conflated by every subscriber anyway.
    fn dispatch_state(&self, batch: Vec<Publication>, nodes: &mut NodeCache) {
        let mut seen: HashSet<usize, BuildHasherDefault<AddrHash>> = HashSet::default();
        let mut newest = Vec::new();
        for p in batch.into_iter().rev() {
            let node = nodes.get_or_create(&self.registry, &p.channel, Class::State, p.offset);
            node.count_published();
            if seen.insert(Arc::as_ptr(node) as usize) {
                newest.push((node.clone(), p));
            }
        }
        for (node, mut p) in newest.into_iter().rev() {
            // A newest value stays in memory for as long as its channel is quiet: its own
            // bytes, not a view that pins the read buffer it came in.
            p.data = Bytes::copy_from_slice(&p.data);
            let offset = p.offset;
            if let Err(m) = node.dispatch(Arc::new(Message::new(p)), self.ring_cap) {
                // Evicted since the lookup above (it held nothing yet): the channel's live
                // node, made now if need be, gets the value, as in the embedded writer.
                nodes.forget(&m.publication.channel);
                nodes.dispatch(&self.registry, Class::State, offset, m, self.ring_cap);
            }
        }
    }
}
