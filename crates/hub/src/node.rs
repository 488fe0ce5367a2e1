//! A channel node: the newest message or the recent ring, and who is subscribed.
//!
//! A node that holds nothing (no newest value, an empty ring) and has no subscriber is
//! evicted from the registry, so subscribing to many names that never see a message (and
//! leaving them) does not grow the server for good. Nodes that hold a value or recent messages
//! stay: they answer `latest`, history from memory and snapshots. An evicted node is marked
//! under its own lock, and whoever holds it from before (a subscriber about to attach, a
//! writer about to dispatch) sees the mark under that same lock and looks the channel up again.

use std::{
    collections::{HashMap, VecDeque},
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc,
    },
};

use parking_lot::{Mutex, RwLock};
use tickwire_model::{Channel, Class, Offset};

use tickwire_feed::l2::{L2Book, L2Msg};

use crate::{session::SessionShared, Message};

/// Whether a channel is a keyed book (`book.<SYM>`): a state channel whose values are book
/// snapshots and sequenced deltas (docs/books.md).
pub(crate) fn is_book(channel: &Channel, class: Class) -> bool {
    class == Class::State && channel.namespace() == tickwire_feed::names::BOOK
}

/// The book a book channel's value leaves: a snapshot replaces it, a delta that follows is
/// applied, anything else (a delta after a gap, a value that is not a book value) leaves it
/// unknown until the next snapshot.
fn apply_book(book: &mut L2Book, data: &[u8]) -> Option<L2Msg> {
    match L2Msg::parse(data) {
        Ok(m) => {
            book.apply(&m);
            Some(m)
        }
        Err(_) => {
            *book = L2Book::default();
            None
        }
    }
}

/// `template` (the channel's newest message) with `m` as its data: a snapshot built for one
/// subscriber, or deltas conflated for one.
pub(crate) fn book_message(template: &Message, m: &L2Msg) -> Arc<Message> {
    let mut p = template.publication.clone();
    p.data = bytes::Bytes::from(m.to_json());
    Arc::new(Message::new(p))
}

impl NodeInner {
    /// The book as a snapshot value for a new subscriber; `None` while it is unknown.
    pub fn book_snapshot(&self) -> Option<Arc<Message>> {
        let snap = self.book.as_ref()?.snapshot()?;
        Some(book_message(self.latest.as_ref()?, &snap))
    }
}

/// One subscription of one session to one channel. Shared between the node (which flags it)
/// and the session (which drains it).
pub(crate) struct Sub {
    pub session: Arc<SessionShared>,
    pub node: Arc<ChannelNode>,
    /// Stream class: the offset of the next message this subscriber has not yet received.
    pub cursor: AtomicU64,
    /// Already in its session's ready list (avoids queuing the same cursor twice).
    pub queued: AtomicBool,
    /// Caught up to the in-memory ring; only live subscribers count as slow when they fall out.
    pub live: AtomicBool,
    pub gone: AtomicBool,
}

pub(crate) struct NodeInner {
    pub latest: Option<Arc<Message>>,
    /// Book channels (`book.<SYM>`): the book the values built, for snapshots; `None` on other
    /// channels. Unknown (no snapshot yet, or a delta that did not follow) means no snapshot
    /// is given: a subscriber waits for the next snapshot value rather than get a wrong book.
    pub book: Option<L2Book>,
    pub ring: VecDeque<Arc<Message>>,
    /// The ring holds every message of this channel with offset >= complete_from; older ones
    /// must be read from the log.
    pub complete_from: Offset,
    pub subs: Vec<Arc<Sub>>,
    /// Removed from the registry: nothing may attach to or be dispatched to this node any
    /// more (see [`Registry::evict_if_idle`]).
    pub evicted: bool,
}

impl NodeInner {
    /// Nothing to keep and nobody to tell: the node may go.
    fn is_idle(&self) -> bool {
        self.subs.is_empty() && self.latest.is_none() && self.ring.is_empty()
    }
}

pub(crate) struct ChannelNode {
    pub channel: Channel,
    pub class: Class,
    pub inner: Mutex<NodeInner>,
    /// Values published to this channel since the node was made (every one, conflated or
    /// not): the operator's per-channel rate. Written only by the namespace's dispatching
    /// thread.
    published: AtomicU64,
}

/// What an operator sees of one channel (`GET /v1/channels/{namespace}`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChannelStats {
    pub channel: Channel,
    /// Subscriptions to it (sessions), on this node.
    pub subscribers: usize,
    /// Values published to it since it was last loaded (server start, or its first value).
    pub published: u64,
    /// Its newest message in memory: offset and append time (Unix ns).
    pub newest: Option<(Offset, u64)>,
}

impl ChannelNode {
    pub fn new(channel: Channel, class: Class, complete_from: Offset) -> ChannelNode {
        let book = is_book(&channel, class).then(L2Book::default);
        ChannelNode {
            channel,
            class,
            inner: Mutex::new(NodeInner {
                latest: None,
                book,
                ring: VecDeque::new(),
                complete_from,
                subs: Vec::new(),
                evicted: false,
            }),
            published: AtomicU64::new(0),
        }
    }

    /// Counts one value published to this channel. One thread dispatches a namespace, so a
    /// load and a store do: no locked read-modify-write on the writer's path.
    pub fn count_published(&self) {
        self.published.store(
            self.published.load(Ordering::Relaxed) + 1,
            Ordering::Relaxed,
        );
    }

    /// The operator's view of this channel.
    pub fn stats(&self) -> ChannelStats {
        let inner = self.inner.lock();
        let newest = match self.class {
            Class::State => inner.latest.as_ref(),
            Class::Stream => inner.ring.back(),
        }
        .map(|m| (m.publication.offset, m.publication.timestamp));
        ChannelStats {
            channel: self.channel.clone(),
            subscribers: inner.subs.len(),
            published: self.published.load(Ordering::Relaxed),
            newest,
        }
    }

    /// Hands a freshly stored message to the node and flags its subscribers. Called only by
    /// the namespace's writer thread, in offset order. When the node was evicted, nothing is
    /// done and the message comes back: the caller looks the channel up again and dispatches
    /// to the live node.
    pub fn dispatch(&self, msg: Arc<Message>, ring_cap: usize) -> Result<(), Arc<Message>> {
        let offset = msg.publication.offset;
        let mut inner = self.inner.lock();
        if inner.evicted {
            return Err(msg);
        }
        match self.class {
            Class::State => {
                let inner = &mut *inner;
                inner.latest = Some(msg.clone());
                match &mut inner.book {
                    Some(book) => {
                        // Parsed once here for every subscriber; a slow one's waiting value
                        // is merged with it per price level (never a backlog).
                        let m = apply_book(book, &msg.publication.data);
                        for sub in &inner.subs {
                            match &m {
                                Some(m) => sub.session.offer_book(self, &msg, m),
                                None => sub.session.offer_state(self, &msg, false),
                            }
                        }
                    }
                    None => {
                        for sub in &inner.subs {
                            sub.session.offer_state(self, &msg, false);
                        }
                    }
                }
            }
            Class::Stream => {
                self.count_published();
                inner.ring.push_back(msg);
                while inner.ring.len() > ring_cap {
                    if let Some(old) = inner.ring.pop_front() {
                        let evicted = old.publication.offset;
                        inner.complete_from = evicted + 1;
                        for sub in &inner.subs {
                            if sub.live.load(Ordering::Acquire)
                                && sub.cursor.load(Ordering::Acquire) <= evicted
                            {
                                sub.session.close(crate::CloseReason::SlowConsumer {
                                    channel: self.channel.to_string(),
                                    limit: ring_cap,
                                });
                            }
                        }
                    }
                }
                for sub in &inner.subs {
                    if sub.cursor.load(Ordering::Acquire) <= offset {
                        sub.session.offer_stream(sub);
                    }
                }
            }
        }
        Ok(())
    }

    /// Loads recovered state without notifying anyone (used at startup).
    pub fn restore(
        &self,
        latest: Option<Arc<Message>>,
        ring: VecDeque<Arc<Message>>,
        complete_from: Offset,
    ) {
        let mut inner = self.inner.lock();
        if let (Some(book), Some(m)) = (inner.book.as_mut(), latest.as_ref()) {
            // Only a snapshot rebuilds the book; after a delta it stays unknown until the
            // book projection's next snapshot (it sends one for every book when it starts).
            if L2Msg::is_snapshot_text(&m.publication.data) {
                apply_book(book, &m.publication.data);
            }
        }
        inner.latest = latest;
        inner.ring = ring;
        inner.complete_from = complete_from;
    }

    /// Takes `sub` off the subscriber list; true when the node is left idle (nothing kept,
    /// nobody subscribed) and the caller should offer it to [`Registry::evict_if_idle`].
    pub fn remove_sub(&self, sub: &Arc<Sub>) -> bool {
        let mut inner = self.inner.lock();
        if let Some(i) = inner.subs.iter().position(|s| Arc::ptr_eq(s, sub)) {
            inner.subs.swap_remove(i);
        }
        inner.is_idle() && !inner.evicted
    }
}

/// A session's pattern subscription, registered so channels that appear later attach to it.
pub(crate) struct PatternSub {
    pub pattern: crate::Pattern,
    pub session: std::sync::Weak<SessionShared>,
}

/// All channel nodes, sharded so dispatch and subscribe on different channels rarely contend.
pub(crate) struct Registry {
    shards: Vec<RwLock<HashMap<Channel, Arc<ChannelNode>>>>,
    patterns: RwLock<Vec<Arc<PatternSub>>>,
}

const SHARDS: usize = 64;

impl Registry {
    pub fn new() -> Registry {
        Registry {
            shards: (0..SHARDS).map(|_| RwLock::new(HashMap::new())).collect(),
            patterns: RwLock::new(Vec::new()),
        }
    }

    fn shard(&self, ch: &Channel) -> &RwLock<HashMap<Channel, Arc<ChannelNode>>> {
        use std::hash::{Hash, Hasher};
        let mut h = FxLike::default();
        ch.as_str().hash(&mut h);
        &self.shards[(h.finish() as usize) % SHARDS]
    }

    pub fn get(&self, ch: &Channel) -> Option<Arc<ChannelNode>> {
        self.shard(ch).read().get(ch).cloned()
    }

    pub fn get_or_create(
        &self,
        ch: &Channel,
        class: Class,
        complete_from: Offset,
    ) -> Arc<ChannelNode> {
        if let Some(n) = self.get(ch) {
            return n;
        }
        let (node, created) = {
            let mut shard = self.shard(ch).write();
            match shard.get(ch) {
                Some(n) => (n.clone(), false),
                None => {
                    let n = Arc::new(ChannelNode::new(ch.clone(), class, complete_from));
                    shard.insert(ch.clone(), n.clone());
                    (n, true)
                }
            }
        };
        if created {
            // Pattern subscribers learn about the new channel before its first message is
            // dispatched (the writer calls this, then dispatches).
            let patterns = self.patterns.read();
            for ps in patterns.iter() {
                if ps.pattern.matches(ch) {
                    if let Some(session) = ps.session.upgrade() {
                        // Evicted already (subscribed and left by someone else before its
                        // first message): the writer's dispatch makes a new node, and the
                        // pattern attaches to that one.
                        let _ = session.attach(&node, crate::session::Start::FirstMessage);
                    }
                }
            }
        }
        node
    }

    /// Removes `node` from the registry if it is still the channel's node and still idle.
    /// The shard's write lock is taken before the node's lock (the order every path that takes
    /// both uses), so a concurrent `get_or_create` either finds the node before it is marked
    /// evicted (and its attach or dispatch then sees the mark and looks up again) or creates a
    /// new one after.
    pub fn evict_if_idle(&self, node: &Arc<ChannelNode>) {
        let mut shard = self.shard(&node.channel).write();
        if !shard
            .get(&node.channel)
            .is_some_and(|n| Arc::ptr_eq(n, node))
        {
            return;
        }
        {
            let mut inner = node.inner.lock();
            if !inner.is_idle() || inner.evicted {
                return;
            }
            inner.evicted = true;
        }
        shard.remove(&node.channel);
        // A shard that once held many channels keeps its table otherwise: after a burst of
        // 100,000 short-lived subscriptions that alone was megabytes.
        if shard.capacity() > 64 && shard.len() < shard.capacity() / 4 {
            let keep = shard.len() * 2;
            shard.shrink_to(keep);
        }
    }

    pub fn add_pattern(&self, ps: Arc<PatternSub>) {
        self.patterns.write().push(ps);
    }

    pub fn remove_pattern(&self, ps: &Arc<PatternSub>) {
        self.patterns.write().retain(|p| !Arc::ptr_eq(p, ps));
    }

    /// Every node of a namespace.
    pub fn nodes_in(&self, namespace: &str) -> Vec<Arc<ChannelNode>> {
        self.shards
            .iter()
            .flat_map(|s| {
                s.read()
                    .values()
                    .filter(|n| n.channel.namespace() == namespace)
                    .cloned()
                    .collect::<Vec<_>>()
            })
            .collect()
    }

    /// Existing nodes whose channel matches `pattern`.
    pub fn matching(&self, pattern: &crate::Pattern) -> Vec<Arc<ChannelNode>> {
        let mut v: Vec<Arc<ChannelNode>> = self
            .shards
            .iter()
            .flat_map(|s| {
                s.read()
                    .values()
                    .filter(|n| pattern.matches(&n.channel))
                    .cloned()
                    .collect::<Vec<_>>()
            })
            .collect();
        v.sort_by(|a, b| a.channel.cmp(&b.channel));
        v
    }

    pub fn len(&self) -> usize {
        self.shards.iter().map(|s| s.read().len()).sum()
    }

    /// Every channel of a namespace with its subscribers, publish count and newest message,
    /// sorted by name.
    pub fn stats_in(&self, namespace: &str) -> Vec<ChannelStats> {
        // Each node's lock is taken after the shard locks are let go.
        let mut v: Vec<ChannelStats> = self.nodes_in(namespace).iter().map(|n| n.stats()).collect();
        v.sort_by(|a, b| a.channel.cmp(&b.channel));
        v
    }

    /// Channel names of a namespace, for listings.
    pub fn channels_in(&self, namespace: &str) -> Vec<Channel> {
        let mut v: Vec<Channel> = self
            .shards
            .iter()
            .flat_map(|s| {
                s.read()
                    .keys()
                    .filter(|c| c.namespace() == namespace)
                    .cloned()
                    .collect::<Vec<_>>()
            })
            .collect();
        v.sort();
        v
    }
}

/// One thread's map from a channel's allocation to its node, in front of the shared
/// [`Registry`]: the writer dispatches every message, and hashing the name and taking a shard
/// lock per message were a visible share of its time. Publishers hand the writer the same few
/// `Channel` allocations over and over ([`Channel::parse_cached`]). The cached clone keeps
/// each allocation alive, so its address cannot come back under another name. Bounded: it
/// starts over when full. An entry may name a node evicted since (one that had nothing yet
/// when the writer looked it up): its dispatch says so, and [`NodeCache::forget`] drops the
/// entry before the channel is looked up again.
#[derive(Default)]
pub(crate) struct NodeCache {
    map: tickwire_model::ByAlloc<Arc<ChannelNode>>,
}

const NODE_CACHE_MAX: usize = 1 << 16;

impl NodeCache {
    /// Borrowed, so a lookup costs no reference count: the writer looks up every message's
    /// node and keeps only a few of them.
    pub fn get_or_create(
        &mut self,
        registry: &Registry,
        ch: &Channel,
        class: Class,
        complete_from: Offset,
    ) -> &Arc<ChannelNode> {
        if self.map.len() >= NODE_CACHE_MAX && !self.map.contains_key(&ch.alloc_id()) {
            self.map.clear();
        }
        &self
            .map
            .entry(ch.alloc_id())
            .or_insert_with(|| (ch.clone(), registry.get_or_create(ch, class, complete_from)))
            .1
    }

    /// Drops the entry of `ch` (its node was evicted).
    pub fn forget(&mut self, ch: &Channel) {
        self.map.remove(&ch.alloc_id());
    }

    /// Dispatches `msg` to its channel's live node, looking the channel up again while the
    /// node found was evicted meanwhile (at most a few rounds: an evicted node is one that
    /// never held a message, and the node made next holds this one).
    pub fn dispatch(
        &mut self,
        registry: &Registry,
        class: Class,
        complete_from: Offset,
        mut msg: Arc<Message>,
        ring_cap: usize,
    ) {
        loop {
            let node = self.get_or_create(registry, &msg.publication.channel, class, complete_from);
            match node.dispatch(msg, ring_cap) {
                Ok(()) => return,
                Err(back) => msg = back,
            }
            self.forget(&msg.publication.channel);
        }
    }
}

/// A tiny fixed-key FNV-1a hasher: shard choice needs to be stable, not DoS-resistant (the
/// shard maps themselves use std's randomized hasher).
#[derive(Default)]
struct FxLike(u64);

impl std::hash::Hasher for FxLike {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        let mut h = if self.0 == 0 {
            0xcbf2_9ce4_8422_2325
        } else {
            self.0
        };
        for b in bytes {
            h ^= u64::from(*b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
        self.0 = h;
    }
}
