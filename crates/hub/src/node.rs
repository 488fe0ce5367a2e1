//! A channel node: the newest message or the recent ring, and who is subscribed.

use std::{
    collections::{HashMap, VecDeque},
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc,
    },
};

use parking_lot::{Mutex, RwLock};
use tickwire_model::{Channel, Class, Offset};

use crate::{session::SessionShared, Message};

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
    pub ring: VecDeque<Arc<Message>>,
    /// The ring holds every message of this channel with offset >= complete_from; older ones
    /// must be read from the log.
    pub complete_from: Offset,
    pub subs: Vec<Arc<Sub>>,
}

pub(crate) struct ChannelNode {
    pub channel: Channel,
    pub class: Class,
    pub inner: Mutex<NodeInner>,
}

impl ChannelNode {
    pub fn new(channel: Channel, class: Class, complete_from: Offset) -> ChannelNode {
        ChannelNode {
            channel,
            class,
            inner: Mutex::new(NodeInner {
                latest: None,
                ring: VecDeque::new(),
                complete_from,
                subs: Vec::new(),
            }),
        }
    }

    /// Hands a freshly stored message to the node and flags its subscribers. Called only by
    /// the namespace's writer thread, in offset order.
    pub fn dispatch(&self, msg: Arc<Message>, ring_cap: usize) {
        let offset = msg.publication.offset;
        let mut inner = self.inner.lock();
        match self.class {
            Class::State => {
                inner.latest = Some(msg.clone());
                for sub in &inner.subs {
                    sub.session.offer_state(self, &msg, false);
                }
            }
            Class::Stream => {
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
    }

    /// Loads recovered state without notifying anyone (used at startup).
    pub fn restore(
        &self,
        latest: Option<Arc<Message>>,
        ring: VecDeque<Arc<Message>>,
        complete_from: Offset,
    ) {
        let mut inner = self.inner.lock();
        inner.latest = latest;
        inner.ring = ring;
        inner.complete_from = complete_from;
    }

    pub fn remove_sub(&self, sub: &Arc<Sub>) {
        let mut inner = self.inner.lock();
        if let Some(i) = inner.subs.iter().position(|s| Arc::ptr_eq(s, sub)) {
            inner.subs.swap_remove(i);
        }
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
                        session.attach(&node, crate::session::Start::FirstMessage, false);
                    }
                }
            }
        }
        node
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
/// starts over when full. Nodes are never removed from the registry, so an entry never
/// goes stale.
#[derive(Default)]
pub(crate) struct NodeCache {
    map: HashMap<
        usize,
        (Channel, Arc<ChannelNode>),
        std::hash::BuildHasherDefault<crate::session::AddrHash>,
    >,
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
