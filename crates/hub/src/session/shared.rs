//! The half of a session that channel nodes and other tasks touch (offers, attach and detach,
//! close), shared behind an `Arc`; [`super::Session`] is the connection's own half.

use std::{
    collections::HashMap,
    hash::BuildHasherDefault,
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc, OnceLock,
    },
};

use parking_lot::Mutex;
use tickwire_feed::l2::{merge, L2Msg};
use tickwire_model::{AddrHash, Channel, Class};
use tokio::sync::Notify;

use super::{CloseReason, Start, SubscribeInfo};
use crate::{
    node::{book_message, ChannelNode, Sub},
    Message,
};

#[derive(Default)]
pub(super) struct Pending {
    /// Newest undelivered message per state channel (keyed by its node), and whether it
    /// answers a subscribe.
    pub(super) state: StateSlots,
    /// Stream subscriptions with something to deliver.
    pub(super) stream: Vec<Arc<Sub>>,
    /// Values a newer one would have conflated away but every subscriber must see (a closed
    /// candle's final content), in arrival order, delivered before `state`.
    pub(super) kept: Vec<(usize, Arc<Message>, bool)>,
}

impl Pending {
    /// Nothing waits: the next offer is news, and wakes the session. An offer that finds
    /// something waiting does not wake it again: whoever made it wait did, and the drain that
    /// wake-up leads to takes this offer too (every edge drains after a wake-up it takes).
    /// One wake-up per drain instead of one per offer: the offering thread skips a locked
    /// write to a line the session's task also writes, and the session a spurious second
    /// drain after each busy one.
    fn is_empty(&self) -> bool {
        self.state.is_empty() && self.stream.is_empty() && self.kept.is_empty()
    }
}

/// Most kept values a session holds (see [`must_keep`]); past that, conflation as usual.
const MAX_KEPT: usize = 256;

/// Whether a waiting value must reach the subscriber even if a newer one arrives first: a
/// closed candle's final content (`"final":true`, docs/candles.md), which the next bar's
/// value would otherwise replace when the connection is slow to take it. Read only when a
/// value on a candle channel is about to be replaced.
fn must_keep(node: &ChannelNode, waiting: &Message) -> bool {
    const FINAL: &[u8] = b"\"final\":true";
    node.channel.namespace() == tickwire_feed::names::CANDLES
        && waiting
            .publication
            .data
            .windows(FINAL.len())
            .any(|w| w == FINAL)
}

/// Keyed by the channel node's address: the node outlives the subscription (the `Sub` holds
/// it) and the entry is removed on detach, so an address names one channel while it is here.
/// Hashing an address is one multiply, where hashing the channel name per delivery per
/// subscriber was a visible share of fan-out time.
pub(super) type StateSlots = HashMap<usize, (Arc<Message>, bool), BuildHasherDefault<AddrHash>>;

fn node_key(node: &ChannelNode) -> usize {
    std::ptr::from_ref(node) as usize
}

/// A session's subscriptions by channel, in a map allocated on the first and let go of with
/// the last: most connections of a busy server subscribe to nothing for long stretches (an
/// idle MQTT client, a publisher), and each map costs every one of them ~50 bytes.
// The box is the point: one pointer inline where the map itself is 48 bytes.
#[allow(clippy::box_collection)]
#[derive(Default)]
pub(crate) struct SubMap(Option<Box<HashMap<Channel, Arc<Sub>>>>);

impl SubMap {
    fn get(&self, channel: &Channel) -> Option<&Arc<Sub>> {
        self.0.as_ref()?.get(channel)
    }

    fn insert(&mut self, channel: Channel, sub: Arc<Sub>) {
        self.0.get_or_insert_default().insert(channel, sub);
    }

    fn remove(&mut self, channel: &Channel) -> Option<Arc<Sub>> {
        let map = self.0.as_mut()?;
        let sub = map.remove(channel);
        if map.is_empty() {
            self.0 = None;
        }
        sub
    }

    pub(crate) fn iter(&self) -> impl Iterator<Item = (&Channel, &Arc<Sub>)> {
        self.0.iter().flat_map(|m| m.iter())
    }

    /// Every subscription, leaving none.
    pub(super) fn take(&mut self) -> Vec<Arc<Sub>> {
        self.0
            .take()
            .map(|m| m.into_values().collect())
            .unwrap_or_default()
    }
}

/// The part of a session that channel nodes touch. Every connection holds one, so what only a
/// subscribed or closed session needs is boxed and made when first needed (idle.md: 272 bytes
/// per connection before, 128 after).
pub(crate) struct SessionShared {
    /// Every subscription of the session, explicit or through a pattern; one per channel, so
    /// overlapping subscriptions never deliver a message twice.
    pub(crate) subs: Mutex<SubMap>,
    /// Made on the first value offered, and kept: a session that receives anything receives
    /// often, and making it per delivery would cost an allocation each.
    pub(super) pending: Mutex<Option<Box<Pending>>>,
    pub(super) notify: Notify,
    /// Why the session was closed; set once, the first reason wins.
    pub(super) closed: OnceLock<Box<CloseReason>>,
    /// Woken once `closed` is set: what [`Session::closed`] waits for.
    pub(super) closing: Notify,
}

impl SessionShared {
    pub(super) fn new() -> SessionShared {
        SessionShared {
            subs: Mutex::new(SubMap::default()),
            pending: Mutex::new(None),
            notify: Notify::new(),
            closed: OnceLock::new(),
            closing: Notify::new(),
        }
    }

    /// Changes what waits for the session under its lock, and wakes the session if nothing
    /// waited before (see [`Pending::is_empty`]).
    fn offer(&self, f: impl FnOnce(&mut Pending)) {
        let news = {
            let mut guard = self.pending.lock();
            let p = &mut **guard.get_or_insert_default();
            let news = p.is_empty();
            f(p);
            news
        };
        if news {
            self.notify.notify_one();
        }
    }

    pub fn offer_state(&self, node: &ChannelNode, msg: &Arc<Message>, snapshot: bool) {
        self.offer(|p| {
            match p.state.get_mut(&node_key(node)) {
                // A final candle is kept (delivered first, with the snapshot flag if it was
                // the client's first value); the newest value waits behind it.
                Some(slot) if p.kept.len() < MAX_KEPT && must_keep(node, &slot.0) => {
                    let (old, first) = std::mem::replace(slot, (msg.clone(), false));
                    p.kept.push((node_key(node), old, first));
                }
                // Conflation: the newest value replaces the undelivered one. A replaced
                // snapshot stays flagged, since the value is still the client's first.
                Some(slot) => slot.0 = msg.clone(),
                None => {
                    p.state.insert(node_key(node), (msg.clone(), snapshot));
                }
            }
        });
    }

    /// A book channel's value `msg` (read as `m`): waiting alone, or merged per price level
    /// with the value already waiting (the newest size per level, `m`'s sequence number and
    /// checksum), so a slow subscriber gets one value that takes its book to the newest.
    pub fn offer_book(&self, node: &ChannelNode, msg: &Arc<Message>, m: &L2Msg) {
        self.offer(|p| {
            match p.state.get_mut(&node_key(node)) {
                Some(slot) => {
                    let merged = L2Msg::parse(&slot.0.publication.data)
                        .ok()
                        .and_then(|w| merge(&[w, m.clone()]));
                    slot.0 = match merged {
                        Some(merged) => book_message(msg, &merged),
                        // The waiting value is not a book value: the new one replaces it.
                        None => msg.clone(),
                    };
                }
                None => {
                    p.state.insert(node_key(node), (msg.clone(), false));
                }
            }
        });
    }

    pub fn offer_stream(&self, sub: &Arc<Sub>) {
        if !sub.queued.swap(true, Ordering::AcqRel) {
            self.offer(|p| p.stream.push(sub.clone()));
        }
    }

    /// Puts this session on `node`'s subscriber list unless it is there already. Returns what
    /// a subscribe reply reports and whether a new subscription was made; `None` when the
    /// node was evicted after the caller found it (it held nothing and had no subscriber),
    /// and the caller must look the channel up again.
    pub fn attach(
        self: &Arc<Self>,
        node: &Arc<ChannelNode>,
        start: Start,
    ) -> Option<(SubscribeInfo, bool)> {
        let mut subs = self.subs.lock();
        if let Some(existing) = subs.get(&node.channel) {
            let info = SubscribeInfo {
                class: node.class,
                offset: (node.class == Class::Stream)
                    .then(|| existing.cursor.load(Ordering::Acquire)),
                snapshot: false,
                epoch: None,
                retention_gap: None,
            };
            return Some((info, false));
        }
        let sub = Arc::new(Sub {
            session: self.clone(),
            node: node.clone(),
            cursor: AtomicU64::new(0),
            queued: AtomicBool::new(false),
            live: AtomicBool::new(!matches!(start, Start::From(_))),
            gone: AtomicBool::new(false),
        });
        let mut inner = node.inner.lock();
        if inner.evicted {
            return None;
        }
        let info = match node.class {
            Class::State => {
                // A book channel's snapshot is its whole book, not its newest delta.
                let snapshot = match inner.book {
                    Some(_) => inner.book_snapshot(),
                    None => inner.latest.clone(),
                };
                if let Some(m) = &snapshot {
                    self.offer_state(node, m, true);
                }
                SubscribeInfo {
                    class: Class::State,
                    offset: None,
                    snapshot: snapshot.is_some(),
                    epoch: None,
                    retention_gap: None,
                }
            }
            Class::Stream => {
                // Everything below `dispatched` (Live) has reached this node already; what is
                // at or above it reaches it after we are on the subscriber list (we hold its
                // lock). A node met at creation starts at its first message.
                let cursor = match start {
                    Start::From(f) | Start::Live(f) => f,
                    Start::FirstMessage => inner.complete_from,
                };
                sub.cursor.store(cursor, Ordering::Release);
                // Something at or past the cursor is already stored: deliver it before going
                // live. (A spurious drain when the log holds nothing is harmless.)
                if cursor < inner.complete_from
                    || inner
                        .ring
                        .back()
                        .is_some_and(|m| m.publication.offset >= cursor)
                {
                    self.offer_stream(&sub);
                }
                SubscribeInfo {
                    class: Class::Stream,
                    offset: Some(cursor),
                    snapshot: false,
                    epoch: None,
                    retention_gap: None,
                }
            }
        };
        inner.subs.push(sub.clone());
        drop(inner);
        subs.insert(node.channel.clone(), sub);
        Some((info, true))
    }

    /// Ends this session's subscription to `channel`; the channel's node when that left it
    /// idle, for the caller to offer to [`crate::node::Registry::evict_if_idle`].
    pub fn detach(&self, channel: &Channel) -> Option<Arc<ChannelNode>> {
        let sub = self.subs.lock().remove(channel)?;
        sub.gone.store(true, Ordering::Release);
        let idle = sub.node.remove_sub(&sub);
        if let Some(p) = self.pending.lock().as_mut() {
            let key = node_key(&sub.node);
            p.state.remove(&key);
            p.kept.retain(|(k, ..)| *k != key);
        }
        idle.then(|| sub.node.clone())
    }

    pub fn close(&self, reason: CloseReason) {
        // A second reason is dropped: the first is what the client is told.
        let _ = self.closed.set(Box::new(reason));
        self.closing.notify_waiters();
        self.notify.notify_one();
    }
}
