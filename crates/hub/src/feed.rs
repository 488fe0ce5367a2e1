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
//! a reader: the feed keeps the newest [`FEED_MAX_BYTES`] of data, none more than
//! `FEED_MAX_AGE_NANOS` older than the newest, and drops older batches; an offset it does not
//! hold (a reader that fell behind, a record the writer appended outside
//! a publish batch, a restart) is read from the log as before. Nothing is kept while no reader
//! is registered.

use std::{
    collections::VecDeque,
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    },
};

use parking_lot::Mutex;
use tickwire_model::{Channel, Offset};

use crate::writer::Item;

/// Data bytes the feed keeps at most (the newest batches). Some items are views of buffers an
/// edge received (an HTTP request body, a gRPC decode buffer), so this is about the memory it
/// holds on to; it keeps a contiguous run of the newest batches, so it holds those buffers
/// nearly whole, not one small view each. 16 MiB is ~70 ms of the default ingest benchmark's
/// quotes: under that load the candle projection read 1-2 M of ~20 M records from the log with
/// 16 MiB or 64 MiB alike (4 MiB: nearly all), and the server held ~50 MB more at its peak with
/// 16 MiB, ~175 MB more with 64 MiB, which also made it slower (bench/results/ingest.md, "The
/// append feed").
pub const FEED_MAX_BYTES: usize = 16 << 20;
/// Batches the feed keeps at most, whatever their size.
const FEED_MAX_BATCHES: usize = 4096;
/// How much older than the newest batch (append time) a kept batch may be. The feed serves a
/// reader that follows closely; one further behind reads the log anyway. At moderate rates
/// this, not the byte limit, bounds what it holds on to: publishing 1 KB quotes at ~50 MB/s
/// past a stalled client, the server grew 42 MB with the byte limit alone (the e2e test
/// `a_client_that_stops_reading_costs_bounded_memory_and_does_not_delay_others`). At the
/// ingest benchmark's 2.4 M quotes/s the byte limit is ~70 ms, so this does not bind there.
const FEED_MAX_AGE_NANOS: u64 = 100_000_000;

/// One namespace's feed, shared by its writer and its readers.
#[derive(Default)]
pub(crate) struct AppendFeed {
    readers: AtomicUsize,
    ring: Mutex<Ring>,
}

#[derive(Default)]
struct Ring {
    batches: VecDeque<Arc<FeedBatch>>,
    bytes: usize,
}

impl Ring {
    fn clear(&mut self) {
        self.batches.clear();
        self.bytes = 0;
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

    /// The channel and data of the record at `offset`, if it is in this batch.
    #[inline]
    pub fn get(&self, offset: Offset) -> Option<(&Channel, &[u8])> {
        let k = usize::try_from(offset.checked_sub(self.base)?).ok()?;
        let it = self.item(self.fresh.get(k)?)?;
        Some((&it.channel, &it.data))
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

    /// Keeps `batch`, dropping the oldest batches beyond the limits. Batches arrive in offset
    /// order from the one writer thread.
    pub fn push(&self, batch: Arc<FeedBatch>) {
        let mut ring = self.ring.lock();
        if !self.wanted() {
            // The last reader left after the writer looked: keep nothing for nobody.
            ring.clear();
            return;
        }
        let newest = batch.timestamp;
        ring.bytes += batch.bytes;
        ring.batches.push_back(batch);
        while ring.batches.len() > 1
            && (ring.bytes > FEED_MAX_BYTES
                || ring.batches.len() > FEED_MAX_BATCHES
                || ring
                    .batches
                    .front()
                    .is_some_and(|b| b.timestamp.saturating_add(FEED_MAX_AGE_NANOS) < newest))
        {
            if let Some(old) = ring.batches.pop_front() {
                ring.bytes -= old.bytes;
            }
        }
    }

    /// Drops everything kept (the last reader is gone).
    pub fn clear(&self) {
        self.ring.lock().clear();
    }

    /// The kept batch holding `offset`, if any.
    fn batch_at(&self, offset: Offset) -> Option<Arc<FeedBatch>> {
        let ring = self.ring.lock();
        // Batches are in offset order, but not always contiguous (records appended outside a
        // publish batch, such as retention's carried-forward state values, are not here).
        let i = ring.batches.partition_point(|b| b.end() <= offset);
        let b = ring.batches.get(i)?;
        (b.base <= offset).then(|| b.clone())
    }
}

/// A registered reader of one namespace's [`AppendFeed`]; the feed keeps batches while at least
/// one exists. Get one with [`crate::Hub::append_feed`].
pub struct FeedReader {
    feed: Arc<AppendFeed>,
}

impl FeedReader {
    pub(crate) fn new(feed: Arc<AppendFeed>) -> FeedReader {
        feed.readers.fetch_add(1, Ordering::Relaxed);
        FeedReader { feed }
    }

    /// The kept batch holding `offset`; `None` when the feed does not hold it: read the log.
    pub fn batch_at(&self, offset: Offset) -> Option<Arc<FeedBatch>> {
        self.feed.batch_at(offset)
    }
}

impl Drop for FeedReader {
    fn drop(&mut self) {
        if self.feed.readers.fetch_sub(1, Ordering::Relaxed) == 1 {
            self.feed.clear();
        }
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
            b.get(21).map(|(c, d)| (c.name(), d)),
            Some(("S1", &b"21"[..]))
        );
        assert!(b.get(22).is_none() && b.get(19).is_none());
        assert!(reader.batch_at(22).is_none());
    }

    #[test]
    fn keeps_the_newest_batches_within_its_limits_and_nothing_without_a_reader() {
        let feed = Arc::new(AppendFeed::default());
        let reader = FeedReader::new(feed.clone());
        let big = FEED_MAX_BYTES / 2 + 1;
        feed.push(batch(0, 1, big));
        feed.push(batch(1, 1, big));
        assert!(
            reader.batch_at(0).is_none(),
            "the oldest went over the byte limit"
        );
        assert!(reader.batch_at(1).is_some());
        // A batch larger than the limit alone is still kept: the newest always is.
        feed.push(batch(2, 1, FEED_MAX_BYTES * 2));
        assert!(reader.batch_at(1).is_none() && reader.batch_at(2).is_some());
        for b in 3..3 + FEED_MAX_BATCHES as u64 + 1 {
            feed.push(batch(b, 1, 0));
        }
        assert!(reader.batch_at(3).is_none(), "over the batch limit");
        // Older than the age limit behind the newest: dropped, whatever the bytes.
        let t = 1_000_000_000_000;
        feed.push(batch_at_time(10_000, 1, 0, t));
        feed.push(batch_at_time(10_001, 1, 0, t + FEED_MAX_AGE_NANOS));
        assert!(reader.batch_at(10_000).is_some(), "at the limit: kept");
        feed.push(batch_at_time(10_002, 1, 0, t + FEED_MAX_AGE_NANOS + 1));
        assert!(reader.batch_at(10_000).is_none(), "past the limit: dropped");
        assert!(reader.batch_at(10_001).is_some() && reader.batch_at(10_002).is_some());
        // A clock that steps back drops nothing by age.
        feed.push(batch_at_time(10_003, 1, 0, t));
        assert!(reader.batch_at(10_001).is_some());
        drop(reader);
        assert!(!feed.wanted());
        assert_eq!(feed.ring.lock().batches.len(), 0);
        // A batch the writer pushes after the last reader left is not kept either.
        feed.push(batch(20_000, 1, 1));
        assert_eq!(feed.ring.lock().batches.len(), 0);
    }
}
