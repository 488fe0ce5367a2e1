//! A session: one client connection's view of the hub.

use std::{
    collections::HashSet,
    sync::{atomic::Ordering, Arc},
};

use tickwire_model::{Channel, Class, Offset};

use crate::{
    hub::{HubInner, NamespaceRt},
    node::{ChannelNode, Sub},
    HubError, Message,
};

mod shared;
#[cfg(test)]
mod tests;

pub(crate) use shared::SessionShared;
use shared::StateSlots;

/// Most stream messages taken from one channel per drain, so one busy channel cannot starve
/// the others on the same connection and one drain's memory stays bounded.
const DRAIN_PER_CHANNEL: usize = 512;
/// Most log records read per catch-up step.
const LOG_READ_RECORDS: usize = 1024;

/// Why the hub ended a session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CloseReason {
    /// A stream subscriber fell further behind than the channel's in-memory buffer.
    SlowConsumer { channel: String, limit: usize },
    /// The server is shutting down.
    Shutdown,
    /// An operator or the server API disconnected it.
    Kicked(String),
    /// The credential it connected with expired and was not refreshed in time.
    TokenExpired,
}

impl std::fmt::Display for CloseReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CloseReason::SlowConsumer { channel, limit } => write!(
                f,
                "slow consumer: more than {limit} messages behind on {channel}; reconnect and resubscribe from the resume offsets"
            ),
            CloseReason::Shutdown => f.write_str("server shutting down"),
            CloseReason::Kicked(why) => write!(f, "disconnected: {why}"),
            CloseReason::TokenExpired => f.write_str(
                "the token expired and was not refreshed; reconnect with a new one and resume from the resume offsets",
            ),
        }
    }
}

/// A `from` past the end of the stream names an offset this stream never had (a client of a
/// wiped server, or of a tail lost under `fsync = interval`): refused, never waited for.
fn check_from(ns: &NamespaceRt, from: Option<Offset>) -> Result<(), HubError> {
    // The end as far as anyone knows: on a shared stream a client may resume here from an
    // offset another node gave it, before this node has read that far.
    let end = ns.stream.known_end();
    match from {
        Some(f) if f > end => Err(HubError::OffsetBeyondEnd {
            namespace: ns.spec.name.clone(),
            from: f,
            next: end,
        }),
        _ => Ok(()),
    }
}

/// Where a stream subscription starts, and the `from` asked for if retention removed it.
fn stream_start(ns: &NamespaceRt, from: Option<Offset>) -> (Start, Option<Offset>) {
    match from {
        Some(f) => {
            let first = ns.stream.start_offset();
            (Start::From(f.max(first)), (f < first).then_some(f))
        }
        None => (Start::Live(ns.dispatched.load(Ordering::Acquire)), None),
    }
}

/// Where a new stream subscription starts.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Start {
    /// Replay from this offset.
    From(Offset),
    /// Live: the namespace's dispatched watermark.
    Live(Offset),
    /// A channel that just appeared: from its first message.
    FirstMessage,
}

/// What the hub answers to a subscribe.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubscribeInfo {
    pub class: Class,
    /// Stream: the offset delivery starts from (the log's oldest retained offset if `from`
    /// was older).
    pub offset: Option<Offset>,
    /// State: a snapshot follows.
    pub snapshot: bool,
    /// Stream: the epoch of the namespace's stream, which `offset` belongs to.
    pub epoch: Option<tickwire_model::Epoch>,
    /// Stream: the `from` asked for when retention had removed it; delivery starts at the
    /// oldest retained offset (`offset`) instead, and the client is told so.
    pub retention_gap: Option<Offset>,
}

/// One message to send to the client.
#[derive(Debug, Clone)]
pub struct Delivery {
    pub message: Arc<Message>,
    /// The first value sent after a subscribe to a state channel.
    pub snapshot: bool,
}

/// One client connection's subscriptions. Dropping it unsubscribes everything.
pub struct Session {
    shared: Arc<SessionShared>,
    hub: Arc<HubInner>,
    /// Made on the first subscribe and let go of when the last one ends: a connection that
    /// subscribes to nothing carries one pointer instead of ~100 bytes (idle.md).
    own: Option<Box<Own>>,
}

/// What a session keeps of its own subscriptions (the hub's side is [`SessionShared::subs`]).
#[derive(Default)]
struct Own {
    /// Explicitly subscribed channels.
    explicit: HashSet<Channel>,
    /// Pattern subscriptions (registered with the hub so new channels attach themselves).
    patterns: Vec<Arc<crate::node::PatternSub>>,
    /// The other half of the pending state map, swapped in by `drain`.
    spare: StateSlots,
}

impl Session {
    pub(crate) fn new(hub: Arc<HubInner>) -> Session {
        Session {
            shared: Arc::new(SessionShared::new()),
            hub,
            own: None,
        }
    }

    /// Explicit subscriptions and patterns, none before the first subscribe.
    fn explicit(&self) -> Option<&HashSet<Channel>> {
        self.own.as_deref().map(|o| &o.explicit)
    }

    fn patterns(&self) -> &[Arc<crate::node::PatternSub>] {
        self.own.as_deref().map_or(&[], |o| &o.patterns)
    }

    /// Lets go of what the session kept of its subscriptions once it has none left, and of
    /// its pending deliveries: every subscription is detached by now, so no channel offers
    /// it anything more, and what is still pending (a gone stream subscription's turn) is
    /// for nobody. The spare map holds nothing outside `drain`, which empties it.
    fn shrink(&mut self) {
        if self
            .own
            .as_deref()
            .is_some_and(|o| o.explicit.is_empty() && o.patterns.is_empty())
        {
            self.own = None;
            *self.shared.pending.lock() = None;
        }
    }

    /// Subscribes; for a stream channel `from` replays from that offset (inclusive) before
    /// going live, with no gap and no duplicate. Without `from`, live only.
    pub fn subscribe(
        &mut self,
        channel: &Channel,
        from: Option<Offset>,
    ) -> Result<SubscribeInfo, HubError> {
        let ns = self.hub.namespace(channel)?;
        if self.is_subscribed(channel) {
            return Err(HubError::AlreadySubscribed(channel.to_string()));
        }
        if self.subscription_count() >= self.hub.config.max_subscriptions {
            return Err(HubError::TooManySubscriptions(
                self.hub.config.max_subscriptions,
            ));
        }
        if ns.spec.class == Class::State && from.is_some() {
            return Err(HubError::FromOnStateChannel(channel.to_string()));
        }
        check_from(&ns, from)?;
        let (start, gap) = stream_start(&ns, from);
        // Again while the node found is evicted before we attach (another session left it
        // idle just then): the next lookup finds or makes the channel's live node.
        let mut info = loop {
            let node = self.hub.node(channel, &ns);
            if let Some((info, _)) = self.shared.attach(&node, start) {
                break info;
            }
        };
        if info.class == Class::Stream {
            info.epoch = Some(ns.stream.epoch());
            info.retention_gap = gap;
        }
        self.own
            .get_or_insert_default()
            .explicit
            .insert(channel.clone());
        Ok(info)
    }

    /// Subscribes to every channel matching `pattern`, now and as new ones appear. Stream
    /// channels that exist now start at `from` (an offset of the pattern's namespace, which
    /// must then be fixed) or live; channels that appear later start at their first message.
    /// Returns the channels matched now.
    pub fn subscribe_pattern(
        &mut self,
        pattern: crate::Pattern,
        from: Option<Offset>,
    ) -> Result<Vec<(Channel, SubscribeInfo)>, HubError> {
        if self.patterns().iter().any(|p| p.pattern == pattern) {
            return Err(HubError::AlreadySubscribed(pattern.as_str().to_string()));
        }
        if self.subscription_count() >= self.hub.config.max_subscriptions {
            return Err(HubError::TooManySubscriptions(
                self.hub.config.max_subscriptions,
            ));
        }
        let fixed_ns = match pattern.namespace() {
            Some(n) => Some(self.hub.namespace_by_name(n)?),
            None if from.is_some() => {
                return Err(HubError::Config(format!(
                    "pattern {}: `from` needs a fixed namespace (offsets are per namespace)",
                    pattern.as_str()
                )))
            }
            None => None,
        };
        if let Some(ns) = &fixed_ns {
            if ns.spec.class == Class::Stream {
                check_from(ns, from)?;
            }
        }
        let ps = Arc::new(crate::node::PatternSub {
            pattern: pattern.clone(),
            session: Arc::downgrade(&self.shared),
        });
        // Register first, then attach to what exists: a channel created in between is
        // attached by whichever path sees it, once (attach deduplicates per channel).
        self.hub.registry.add_pattern(ps.clone());
        let mut out = Vec::new();
        for node in self.hub.registry.matching(&pattern) {
            let ns = match &fixed_ns {
                Some(ns) => ns.clone(),
                None => self.hub.namespace(&node.channel)?,
            };
            let (start, gap) = match node.class {
                Class::Stream => stream_start(&ns, from),
                Class::State => (Start::Live(ns.dispatched.load(Ordering::Acquire)), None),
            };
            // An evicted node held nothing: the pattern, registered above, attaches to the
            // node its channel's first message makes.
            let Some((mut info, _)) = self.shared.attach(&node, start) else {
                continue;
            };
            if info.class == Class::Stream {
                info.epoch = Some(ns.stream.epoch());
                info.retention_gap = gap;
            }
            out.push((node.channel.clone(), info));
        }
        self.own.get_or_insert_default().patterns.push(ps);
        Ok(out)
    }

    /// Drops a pattern subscription; channels still wanted explicitly or by another pattern stay.
    pub fn unsubscribe_pattern(&mut self, pattern: &crate::Pattern) -> Result<(), HubError> {
        let not_subscribed = || HubError::NotSubscribed(pattern.as_str().to_string());
        let own = self.own.as_deref_mut().ok_or_else(not_subscribed)?;
        let i = own
            .patterns
            .iter()
            .position(|p| &p.pattern == pattern)
            .ok_or_else(not_subscribed)?;
        let ps = own.patterns.remove(i);
        self.hub.registry.remove_pattern(&ps);
        let channels: Vec<Channel> = self
            .shared
            .subs
            .lock()
            .iter()
            .map(|(c, _)| c.clone())
            .collect();
        for ch in channels {
            let still =
                self.is_subscribed(&ch) || self.patterns().iter().any(|p| p.pattern.matches(&ch));
            if !still && pattern.matches(&ch) {
                self.detach(&ch);
            }
        }
        self.shrink();
        Ok(())
    }

    pub fn unsubscribe(&mut self, channel: &Channel) -> Result<(), HubError> {
        if !self
            .own
            .as_deref_mut()
            .is_some_and(|o| o.explicit.remove(channel))
        {
            return Err(HubError::NotSubscribed(channel.to_string()));
        }
        if !self.patterns().iter().any(|p| p.pattern.matches(channel)) {
            self.detach(channel);
        }
        self.shrink();
        Ok(())
    }

    /// Ends the subscription to `channel` and evicts its node if that left it idle.
    fn detach(&self, channel: &Channel) {
        if let Some(node) = self.shared.detach(channel) {
            self.hub.registry.evict_if_idle(&node);
        }
    }

    pub fn is_subscribed(&self, channel: &Channel) -> bool {
        self.explicit().is_some_and(|e| e.contains(channel))
    }

    /// Explicit subscriptions plus patterns.
    pub fn subscription_count(&self) -> usize {
        self.explicit().map_or(0, HashSet::len) + self.patterns().len()
    }

    /// Waits until something may be ready to drain or the session was closed. Cancel-safe.
    ///
    /// A wake-up taken must be followed by a [`Session::drain`], now or later: the hub wakes
    /// a session once when a value arrives with nothing waiting, not once per value, so the
    /// values offered after the wake-up wait for that drain and bring no wake-up of their own.
    pub async fn wait(&self) {
        self.notified().await;
    }

    /// [`Session::wait`] as the bare future, for a caller that keeps it in a large number
    /// of small tasks (each `async fn` layer around it adds to every one of them). The same
    /// rule: a wake-up it resolves with is owed a drain.
    pub fn notified(&self) -> tokio::sync::futures::Notified<'_> {
        self.shared.notify.notified()
    }

    /// Resolves when the hub closes this session (slow consumer, shutdown, kick). Cancel-safe.
    pub async fn closed(&self) {
        // A `Notified` receives every `notify_waiters` made after it was created, polled or
        // not, and `close` sets the reason before notifying: checked after creating it, no
        // close can slip between the check and the wait.
        let notified = self.shared.closing.notified();
        if self.shared.closed.get().is_some() {
            return;
        }
        notified.await;
    }

    /// Why the session was closed, if it was.
    pub fn close_reason(&self) -> Option<CloseReason> {
        self.shared.closed.get().map(|r| CloseReason::clone(r))
    }

    /// Closes the session from outside (server API `disconnect`, shutdown).
    pub fn close(&self, reason: CloseReason) {
        self.shared.close(reason);
    }

    /// A handle that can close this session from another task.
    pub fn closer(&self) -> SessionCloser {
        SessionCloser(self.shared.clone())
    }

    /// Where each stream subscription would resume: the offset of its next undelivered message.
    pub fn resume_points(&self) -> Vec<(String, Offset)> {
        let subs = self.shared.subs.lock();
        let mut v: Vec<(String, Offset)> = subs
            .iter()
            .filter(|(_, s)| s.node.class == Class::Stream)
            .map(|(c, s)| (c.to_string(), s.cursor.load(Ordering::Acquire)))
            .collect();
        v.sort();
        v
    }

    /// Takes what is ready: the newest value of each updated state channel, and the next
    /// messages of each stream channel in offset order. Reads from the log (off the async
    /// runtime) when a subscriber is behind the in-memory ring. Not cancel-safe: call it to
    /// completion, outside `select!`.
    pub async fn drain(&mut self) -> Result<Vec<Delivery>, CloseReason> {
        if let Some(r) = self.close_reason() {
            return Err(r);
        }
        // Swap in the (empty) spare map instead of taking a fresh one, so neither map is
        // reallocated per drain; both keep their capacity across drains. Nothing was ever
        // offered to a session without its pending box (a takeover's wake-up, say): nothing
        // to take, and nothing made for it. A session with no subscription left has no spare
        // either: a map for this drain only.
        let mut lone = StateSlots::default();
        let spare = self.own.as_deref_mut().map_or(&mut lone, |o| &mut o.spare);
        let (stream, kept) = {
            let mut guard = self.shared.pending.lock();
            let Some(p) = guard.as_mut() else {
                return Ok(Vec::new());
            };
            std::mem::swap(&mut p.state, spare);
            (std::mem::take(&mut p.stream), std::mem::take(&mut p.kept))
        };
        let mut out: Vec<Delivery> = Vec::with_capacity(kept.len() + spare.len() + stream.len());
        // Kept values precede their channel's newest (they are older).
        out.extend(
            kept.into_iter()
                .map(|(_, message, snapshot)| Delivery { message, snapshot }),
        );
        out.extend(
            spare
                .drain()
                .map(|(_, (message, snapshot))| Delivery { message, snapshot }),
        );
        for sub in stream {
            // Clear first: a message dispatched from now on queues the cursor again.
            sub.queued.store(false, Ordering::Release);
            if sub.gone.load(Ordering::Acquire) {
                continue;
            }
            let more = self.drain_stream(&sub, &mut out).await?;
            if more {
                self.shared.offer_stream(&sub);
            }
        }
        Ok(out)
    }

    /// Appends the next messages of one stream subscription; true if more are waiting.
    async fn drain_stream(
        &self,
        sub: &Arc<Sub>,
        out: &mut Vec<Delivery>,
    ) -> Result<bool, CloseReason> {
        let cursor = sub.cursor.load(Ordering::Acquire);
        let node: &Arc<ChannelNode> = &sub.node;
        let complete_from = {
            let inner = node.inner.lock();
            if cursor >= inner.complete_from {
                let first = inner
                    .ring
                    .partition_point(|m| m.publication.offset < cursor);
                let mut last = None;
                for m in inner.ring.range(first..).take(DRAIN_PER_CHANNEL) {
                    last = Some(m.publication.offset);
                    out.push(Delivery {
                        message: m.clone(),
                        snapshot: false,
                    });
                }
                let more = inner.ring.len() - first > DRAIN_PER_CHANNEL;
                if let Some(l) = last {
                    sub.cursor.store(l + 1, Ordering::Release);
                }
                sub.live.store(true, Ordering::Release);
                return Ok(more);
            }
            inner.complete_from
        };
        // Behind the ring: read the namespace log from the cursor, keep this channel's records.
        let ns = self
            .hub
            .namespace(&node.channel)
            .map_err(|e| CloseReason::Kicked(e.to_string()))?;
        let stream = ns.stream.clone();
        let channel = node.channel.clone();
        let scan = tokio::task::spawn_blocking(move || {
            stream.read_channel(
                &channel,
                cursor,
                complete_from,
                usize::MAX,
                LOG_READ_RECORDS,
            )
        })
        .await
        .map_err(|e| history_failed(node, &e))?
        .map_err(|e| history_failed(node, &e))?;
        out.extend(scan.publications.into_iter().map(|p| Delivery {
            message: Arc::new(Message::new(p)),
            snapshot: false,
        }));
        // Nothing older left in the log (retention removed it): continue from the ring.
        let next = if scan.exhausted {
            complete_from
        } else {
            scan.next
        };
        sub.cursor.store(next.max(cursor), Ordering::Release);
        Ok(true)
    }
}

/// Why a subscriber is disconnected when its catch-up read fails. The storage error names log
/// files under the data directory: it goes to the server log, the client gets the channel.
fn history_failed(node: &ChannelNode, e: &dyn std::fmt::Display) -> CloseReason {
    tracing::warn!(channel = %node.channel, error = %e, "reading history for a subscriber failed; disconnecting it");
    CloseReason::Kicked(format!(
        "reading the history of {} failed on the server; resubscribe later",
        node.channel
    ))
}

/// Closes a session from another task (server API, shutdown).
#[derive(Clone)]
pub struct SessionCloser(Arc<SessionShared>);

impl SessionCloser {
    pub fn close(&self, reason: CloseReason) {
        self.0.close(reason);
    }

    /// Wakes the session's task as a delivery would, without one: its drain finds nothing,
    /// and it looks at what else changed (MQTT: another connection took its client id over).
    /// A parked connection waits for the session's wake-up and nothing else of the hub's.
    pub fn wake(&self) {
        self.0.notify.notify_one();
    }

    /// Calls `f` with the namespace of each channel the session is subscribed to (explicitly
    /// or through a pattern), for the subscription gauges a metrics scrape reports.
    pub fn each_subscription(&self, mut f: impl FnMut(&str)) {
        for (channel, _) in self.0.subs.lock().iter() {
            f(channel.namespace());
        }
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        if let Some(own) = self.own.take() {
            for ps in &own.patterns {
                self.hub.registry.remove_pattern(ps);
            }
        }
        let subs = self.shared.subs.lock().take();
        for sub in subs {
            sub.gone.store(true, Ordering::Release);
            if sub.node.remove_sub(&sub) {
                self.hub.registry.evict_if_idle(&sub.node);
            }
        }
    }
}
