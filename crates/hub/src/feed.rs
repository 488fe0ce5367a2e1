//! The append feed: a namespace writer's newest appended batches, kept in memory for a reader
//! that follows the stream closely, so that it can apply what was just appended without
//! reading it back from the log, checksumming and decoding it again.
//!
//! Why: under JSON ingest the live candle projection's read-back was half of its cost, 0.13 µs
//! of server CPU per quote on a machine whose cores the default ingest row fills
//! (bench/results/ingest.md, "What each part of the candle thread costs").
//!
//! Only a stream this process alone writes has one (the embedded log, whose writer thread
//! assigns every offset): there, the feed holds exactly what the log holds at those offsets,
//! in the same order, with the same channel, data and append time. The writer never waits for
//! a reader. The feed keeps what its readers have not yet passed: a batch every reader has
//! asked past is dropped at once, so a reader that keeps up holds only the batches it has not
//! applied yet. A reader that falls behind holds at most [`FEED_MAX_BYTES`] of data, none more
//! than `FEED_MAX_AGE_NANOS` older than the newest; older batches are dropped, and an offset the
//! feed does not hold (a reader further behind, a record the writer appended outside a publish
//! batch, a restart) is read from the log as before. Nothing is kept while no reader is
//! registered.
//!
//! Why keep until passed rather than only the newest: a reader that the scheduler stalls past
//! the limits reads the log, at twice the cost per record, and under saturated ingest it never
//! caught up again, so whether a run used the feed (97 % of its records) or the log (99 %)
//! depended on one early stall (bench/results/ingest.md, "The feed keeps what its reader has
//! not passed"). Dropping what is passed lets the limits be wide enough to ride out such
//! stalls while a reader that keeps up holds less than the old 16 MiB window did.

use std::{
    collections::VecDeque,
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    },
};

use parking_lot::Mutex;
use tickwire_model::{Channel, FieldSpans, Offset};

use crate::writer::Item;

/// Data bytes the feed keeps at most for a reader that has fallen behind (one that keeps up
/// has passed all but its newest batches, which are dropped as it passes them). Some items are
/// views of buffers an edge received (an HTTP request body, a gRPC decode buffer), so this is
/// about the memory it holds on to; it keeps a contiguous run of batches, so it holds those
/// buffers nearly whole, not one small view each. 64 MiB is ~300 ms of the default ingest
/// benchmark's quotes: wide enough that the stalls of a saturated two-core machine do not push
/// the candle projection off the feed (bench/results/ingest.md, "The feed keeps what its reader
/// has not passed").
pub(crate) const FEED_MAX_BYTES: usize = 64 << 20;
/// Batches the feed keeps at most, whatever their size.
const FEED_MAX_BATCHES: usize = 4096;
/// How much older than the newest batch (append time) a kept batch may be. The feed serves a
/// reader that follows closely; one further behind reads the log anyway. At moderate rates
/// this, not the byte limit, bounds what a stalled reader makes it hold on to.
const FEED_MAX_AGE_NANOS: u64 = 1_000_000_000;

/// One namespace's feed, shared by its writer and its readers.
#[derive(Default)]
pub(crate) struct AppendFeed {
    /// How many slots of `Ring::passed` are taken, kept apart so that the writer (per batch)
    /// and the edge (per item, `Hub::check_scanned`) can ask [`AppendFeed::wanted`] without
    /// the ring's lock. Changed only under that lock, with the slots.
    readers: AtomicUsize,
    ring: Mutex<Ring>,
}

#[derive(Default)]
struct Ring {
    batches: VecDeque<Arc<FeedBatch>>,
    bytes: usize,
    /// Per registered reader (its slot), the offset it last asked for: it has applied
    /// everything below. `Some(0)` until it first asks. `None` marks a free slot.
    passed: Vec<Option<Offset>>,
}

impl Ring {
    fn clear(&mut self) {
        self.batches.clear();
        self.bytes = 0;
    }

    /// Drops the oldest batches while they are beyond the limits, or every reader has passed
    /// them; returns them so that the caller frees them outside the lock. The newest batch is
    /// kept whatever its size or age (a reader may be about to ask for it).
    fn trim(&mut self) -> Vec<Arc<FeedBatch>> {
        let passed = self.passed.iter().flatten().min().copied().unwrap_or(0);
        let newest = self.batches.back().map_or(0, |b| b.timestamp);
        let mut dropped = Vec::new();
        while let Some(front) = self.batches.front() {
            let over = self.batches.len() > 1
                && (self.bytes > FEED_MAX_BYTES
                    || self.batches.len() > FEED_MAX_BATCHES
                    || front.timestamp.saturating_add(FEED_MAX_AGE_NANOS) < newest);
            if !over && front.end() > passed {
                break;
            }
            if let Some(old) = self.batches.pop_front() {
                self.bytes -= old.bytes;
                dropped.push(old);
            }
        }
        dropped
    }
}

/// One group-commit batch as the writer appended it: the `k`-th record appended has offset
/// `base + k` and is `groups[w][i]` for `fresh[k] = (w, i)` (a duplicate of an earlier
/// `msg_id` is in its group but appended nothing, so it is not in `fresh`).
pub struct FeedBatch {
    pub(crate) base: Offset,
    pub(crate) timestamp: u64,
    pub(crate) groups: Vec<Vec<Item>>,
    pub(crate) fresh: Vec<(usize, usize)>,
    pub(crate) bytes: usize,
}

impl FeedBatch {
    /// The offset of its first record.
    pub fn base(&self) -> Offset {
        self.base
    }

    /// One past the offset of its last record.
    pub fn end(&self) -> Offset {
        self.base + self.fresh.len() as Offset
    }

    /// The append time of every record in it (Unix ns), the log's timestamp for them.
    pub fn timestamp(&self) -> u64 {
        self.timestamp
    }

    /// The channel and data of the record at `offset`, if it is in this batch, with where the
    /// publish edge found its quote/trade fields in that data when it did.
    #[inline]
    pub fn get(&self, offset: Offset) -> Option<(&Channel, &[u8], Option<&FieldSpans>)> {
        let k = usize::try_from(offset.checked_sub(self.base)?).ok()?;
        let it = self.item(self.fresh.get(k)?)?;
        Some((&it.channel, &it.data, it.spans.as_ref()))
    }

    /// Every appended item with its offset, in offset order.
    pub(crate) fn appended(&self) -> impl DoubleEndedIterator<Item = (Offset, &Item)> {
        self.fresh
            .iter()
            .enumerate()
            .filter_map(|(k, at)| Some((self.base + k as Offset, self.item(at)?)))
    }

    fn item(&self, &(w, i): &(usize, usize)) -> Option<&Item> {
        self.groups.get(w)?.get(i)
    }
}

impl AppendFeed {
    /// Whether any reader is registered (the writer keeps nothing otherwise).
    pub fn wanted(&self) -> bool {
        self.readers.load(Ordering::Relaxed) > 0
    }

    /// Keeps `batch`, dropping the oldest batches beyond the limits or passed by every reader.
    /// Batches arrive in offset order from the one writer thread.
    pub fn push(&self, batch: Arc<FeedBatch>) {
        let dropped = {
            let mut ring = self.ring.lock();
            if !self.wanted() {
                // The last reader left after the writer looked: keep nothing for nobody.
                ring.clear();
                return;
            }
            ring.bytes += batch.bytes;
            ring.batches.push_back(batch);
            ring.trim()
        };
        drop(dropped);
    }

    /// Registers a reader: its slot in the ring's `passed`.
    fn register(&self) -> usize {
        let mut ring = self.ring.lock();
        self.readers.fetch_add(1, Ordering::Relaxed);
        match ring.passed.iter().position(Option::is_none) {
            Some(slot) => {
                ring.passed[slot] = Some(0);
                slot
            }
            None => {
                ring.passed.push(Some(0));
                ring.passed.len() - 1
            }
        }
    }

    /// Frees a reader's slot; the last one leaving drops everything kept.
    fn unregister(&self, slot: usize) {
        let mut ring = self.ring.lock();
        if let Some(p) = ring.passed.get_mut(slot) {
            *p = None;
        }
        if self.readers.fetch_sub(1, Ordering::Relaxed) == 1 {
            ring.clear();
        }
    }

    /// The kept batch holding `offset`, if any. The reader in `slot` has applied everything
    /// before `offset`, so the batches it was the last to need are dropped.
    fn batch_at(&self, slot: usize, offset: Offset) -> Option<Arc<FeedBatch>> {
        let (found, dropped) = {
            let mut ring = self.ring.lock();
            if let Some(Some(p)) = ring.passed.get_mut(slot) {
                *p = offset;
            }
            let dropped = ring.trim();
            // Batches are in offset order, but not always contiguous (records appended outside
            // a publish batch, such as retention's carried-forward state values, are not here).
            let i = ring.batches.partition_point(|b| b.end() <= offset);
            let found = ring.batches.get(i).filter(|b| b.base <= offset).cloned();
            (found, dropped)
        };
        drop(dropped);
        found
    }
}

/// A registered reader of one namespace's [`AppendFeed`]; the feed keeps batches while at least
/// one exists, until every reader has passed them. Get one with [`crate::Hub::append_feed`].
pub struct FeedReader {
    feed: Arc<AppendFeed>,
    slot: usize,
}

impl FeedReader {
    pub(crate) fn new(feed: Arc<AppendFeed>) -> FeedReader {
        let slot = feed.register();
        FeedReader { feed, slot }
    }

    /// The kept batch holding `offset`; `None` when the feed does not hold it: read the log.
    /// Asking says the reader has applied everything before `offset`: the feed no longer
    /// keeps that for it.
    pub fn batch_at(&self, offset: Offset) -> Option<Arc<FeedBatch>> {
        self.feed.batch_at(self.slot, offset)
    }
}

impl Drop for FeedReader {
    fn drop(&mut self) {
        self.feed.unregister(self.slot);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn batch(base: Offset, n: usize, bytes: usize) -> Arc<FeedBatch> {
        batch_at_time(base, n, bytes, base)
    }

    fn batch_at_time(base: Offset, n: usize, bytes: usize, timestamp: u64) -> Arc<FeedBatch> {
        let items = (0..n)
            .map(|k| Item {
                channel: Channel::parse(&format!("quotes.S{k}")).unwrap(),
                msg_id: None,
                data: Bytes::from(format!("{}", base + k as u64)),
                spans: None,
            })
            .collect();
        Arc::new(FeedBatch {
            base,
            timestamp,
            groups: vec![items],
            fresh: (0..n).map(|k| (0, k)).collect(),
            bytes,
        })
    }

    #[test]
    fn finds_the_batch_holding_an_offset_and_nothing_in_a_gap() {
        let feed = Arc::new(AppendFeed::default());
        let reader = FeedReader::new(feed.clone());
        assert!(feed.wanted());
        feed.push(batch(10, 5, 1)); // 10..15
        feed.push(batch(15, 3, 1)); // 15..18
        feed.push(batch(20, 2, 1)); // 20..22: 18 and 19 appended elsewhere
        assert!(reader.batch_at(9).is_none());
        assert_eq!(reader.batch_at(10).unwrap().base(), 10);
        assert_eq!(reader.batch_at(14).unwrap().base(), 10);
        assert_eq!(reader.batch_at(15).unwrap().base(), 15);
        assert!(reader.batch_at(18).is_none());
        assert!(reader.batch_at(19).is_none());
        let b = reader.batch_at(21).unwrap();
        assert_eq!(
            b.get(21).map(|(c, d, _)| (c.name(), d)),
            Some(("S1", &b"21"[..]))
        );
        assert!(b.get(22).is_none() && b.get(19).is_none());
        assert!(reader.batch_at(22).is_none());
    }

    /// The first offsets of the batches kept, without asking as a reader (which would pass
    /// them).
    fn kept(feed: &AppendFeed) -> Vec<Offset> {
        feed.ring.lock().batches.iter().map(|b| b.base).collect()
    }

    #[test]
    fn a_stalled_reader_keeps_the_newest_batches_within_the_limits_and_none_without_a_reader() {
        let feed = Arc::new(AppendFeed::default());
        // Registered, never asks: it has passed nothing, so only the limits drop batches.
        let stalled = FeedReader::new(feed.clone());
        let big = FEED_MAX_BYTES / 2 + 1;
        feed.push(batch(0, 1, big));
        feed.push(batch(1, 1, big));
        assert_eq!(kept(&feed), [1], "the oldest went over the byte limit");
        // A batch larger than the limit alone is still kept: the newest always is.
        feed.push(batch(2, 1, FEED_MAX_BYTES * 2));
        assert_eq!(kept(&feed), [2]);
        for b in 3..3 + FEED_MAX_BATCHES as u64 + 1 {
            feed.push(batch(b, 1, 0));
        }
        assert_eq!(kept(&feed).len(), FEED_MAX_BATCHES, "the batch limit");
        assert_eq!(kept(&feed)[0], 4);
        // Older than the age limit behind the newest: dropped, whatever the bytes.
        let t = 1_000_000_000_000;
        feed.push(batch_at_time(10_000, 1, 0, t));
        feed.push(batch_at_time(10_001, 1, 0, t + FEED_MAX_AGE_NANOS));
        assert_eq!(kept(&feed), [10_000, 10_001], "at the limit: kept");
        feed.push(batch_at_time(10_002, 1, 0, t + FEED_MAX_AGE_NANOS + 1));
        assert_eq!(kept(&feed), [10_001, 10_002], "past the limit: dropped");
        // A clock that steps back drops nothing by age.
        feed.push(batch_at_time(10_003, 1, 0, t));
        assert_eq!(kept(&feed), [10_001, 10_002, 10_003]);
        drop(stalled);
        assert!(!feed.wanted());
        assert!(kept(&feed).is_empty());
        // A batch the writer pushes after the last reader left is not kept either.
        feed.push(batch(20_000, 1, 1));
        assert!(kept(&feed).is_empty());
    }

    #[test]
    fn a_batch_is_dropped_once_every_reader_has_passed_it() {
        let feed = Arc::new(AppendFeed::default());
        let (a, b) = (FeedReader::new(feed.clone()), FeedReader::new(feed.clone()));
        for base in [0, 5, 10] {
            feed.push(batch(base, 5, 1));
        }
        assert_eq!(a.batch_at(5).map(|x| x.base()), Some(5));
        assert_eq!(kept(&feed), [0, 5, 10], "b has passed nothing yet");
        assert_eq!(b.batch_at(10).map(|x| x.base()), Some(10));
        assert_eq!(kept(&feed), [5, 10], "both passed 0..5; a is inside 5..10");
        assert_eq!(a.batch_at(12).map(|x| x.base()), Some(10));
        assert_eq!(kept(&feed), [10]);
        // A reader that leaves no longer holds anything back.
        drop(b);
        feed.push(batch(15, 5, 1));
        assert_eq!(a.batch_at(15).map(|x| x.base()), Some(15));
        assert_eq!(kept(&feed), [15]);
        // A new reader takes the free slot and has passed nothing: what comes is kept for it,
        // and what a has passed before it came is not brought back.
        let c = FeedReader::new(feed.clone());
        assert_eq!(feed.ring.lock().passed.len(), 2);
        feed.push(batch(20, 5, 1));
        assert_eq!(
            a.batch_at(25).map(|x| x.base()),
            None,
            "nothing appended there yet"
        );
        assert_eq!(kept(&feed), [15, 20]);
        assert_eq!(c.batch_at(3).map(|x| x.base()), None, "passed already");
        assert_eq!(c.batch_at(20).map(|x| x.base()), Some(20));
        assert_eq!(kept(&feed), [20]);
        drop((a, c));
        assert!(!feed.wanted() && kept(&feed).is_empty());
    }
}
