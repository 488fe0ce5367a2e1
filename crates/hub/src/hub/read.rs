//! Reads: the newest value, history pages, and where recent history starts.

use super::*;

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

/// A page of a channel's history.
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
}
