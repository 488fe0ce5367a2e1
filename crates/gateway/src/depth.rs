//! A subscriber's own depth of a book channel (the `depth` subscribe option, docs/books.md):
//! the best N levels a side instead of everything the channel keeps.
//!
//! The hub delivers a book channel's values to every subscriber alike (a snapshot, then
//! deltas merged per level for a slow one); a connection that asked for depth N keeps, per
//! such channel, the channel's book as those values build it and the view it last sent, and
//! turns each value into the difference between that view and the best N now
//! ([`DepthView`]). That is per subscriber by nature, so it happens here, where the
//! connection drains its session, once for every edge (WebSocket JSON and binary, SSE, gRPC);
//! a connection that asked for no depth keeps nothing and its pushes stay the shared,
//! encoded-once messages.

use std::{collections::HashMap, sync::Arc};

use tickwire_feed::l2::{Applied, DepthView, L2Book, L2Msg};
use tickwire_hub::{Channel, Delivery, Format, Hub, Message};

/// A book channel value as read once per message and shared by every subscriber that needs
/// it read (depth views here, the FIX acceptor's books); `None` for data that is not a book
/// value.
pub fn book_value(msg: &Message) -> Arc<Option<L2Msg>> {
    static BOOK: std::sync::OnceLock<Format> = std::sync::OnceLock::new();
    let format = *BOOK.get_or_init(|| Format::register("book-value"));
    msg.encoded(format, |p| Arc::new(L2Msg::parse(&p.data).ok()))
}

/// The book a book channel's newest message holds (the hub answers `latest` with the whole
/// book as a snapshot); `None` while the channel has none.
pub fn book_of(msg: &Message) -> Option<L2Book> {
    let m = book_value(msg);
    let m = m.as_ref().as_ref().filter(|m| m.snapshot)?;
    Some(L2Book::from_snapshot(m))
}

/// One book channel subscribed at depth N.
struct DepthSub {
    /// Levels a side asked for (1 or more).
    depth: u32,
    /// The channel's book as its values built it: where levels below the view come from when
    /// a better one goes.
    book: L2Book,
    /// The sequence number and view of the last value sent: what the client holds.
    sent: Option<(u64, DepthView)>,
}

impl DepthSub {
    /// The depth a snapshot reports: the one asked for, or the channel's when it keeps fewer
    /// levels (its snapshots say how many; 0 is all).
    fn served_depth(&self) -> u32 {
        match self.book.depth() {
            0 => self.depth,
            kept => kept.min(self.depth),
        }
    }

    /// The value this subscriber gets for the channel's value `d`, if its view changed.
    fn next(&mut self, d: &Delivery, hub: &Hub) -> Option<Arc<Message>> {
        let value = book_value(&d.message);
        let m = value.as_ref().as_ref()?;
        if m.snapshot {
            self.book = L2Book::from_snapshot(m);
        } else if self.book.is_known() && m.seq <= self.book.seq() {
            // Already in the copy (read from the channel's book after a gap).
            return None;
        } else if self.book.apply(m) == Applied::Gap {
            // The hub keeps a subscriber's deltas contiguous, so the channel itself lost its
            // book (a restart before its next snapshot): continue from the book it has now,
            // or send nothing until it has one. The client's view is known here, so either
            // way what it gets next is a delta from what it holds.
            let latest = hub.latest(&d.message.publication.channel).ok()??;
            self.book = book_of(&latest)?;
        }
        let seq = self.book.seq();
        let view = DepthView::of(&self.book, self.depth);
        let out = match &self.sent {
            Some((held_seq, held)) if seq > *held_seq => held.delta_to(&view, *held_seq, seq)?,
            // The first value, or a channel whose numbers started again: replace the book.
            _ => view.snapshot(seq, self.served_depth()),
        };
        self.sent = Some((seq, view));
        let mut p = d.message.publication.clone();
        p.data = bytes::Bytes::from(out.to_json());
        Some(Arc::new(Message::new(p)))
    }
}

/// The book channels a connection subscribed to at a depth of its own.
#[derive(Default)]
pub(crate) struct Depths {
    subs: HashMap<Channel, DepthSub>,
}

impl Depths {
    pub(crate) fn is_empty(&self) -> bool {
        self.subs.is_empty()
    }

    /// Starts serving `channel` at `depth` (1 or more) levels a side, from its next value on
    /// (the snapshot the subscription gets).
    pub(crate) fn add(&mut self, channel: Channel, depth: u32) {
        self.subs.insert(
            channel,
            DepthSub {
                depth,
                book: L2Book::default(),
                sent: None,
            },
        );
    }

    pub(crate) fn remove(&mut self, channel: &Channel) {
        self.subs.remove(channel);
    }

    /// Replaces each value of a channel served at a depth by this subscriber's own, and drops
    /// those that leave its view as it is.
    pub(crate) fn apply(&mut self, batch: &mut Vec<Delivery>, hub: &Hub) {
        batch.retain_mut(
            |d| match self.subs.get_mut(&d.message.publication.channel) {
                None => true,
                Some(sub) => match sub.next(d, hub) {
                    Some(m) => {
                        d.message = m;
                        true
                    }
                    None => false,
                },
            },
        );
    }
}
