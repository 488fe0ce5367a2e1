//! Order books as a projection: every `depth.<SYM>` message (a snapshot or updates, in the
//! JSON form of `tickwire_feed::depth`, from the FIX initiator or any API-key publisher) is
//! applied to that instrument's `tickwire_feed::Book`, and each changed book is published on
//! `book.<SYM>` as a sequenced delta of its best `depth` levels (`tickwire_feed::l2`: the
//! levels that changed since the last value, size zero deleting, the next sequence number and
//! the checksum of the book after it), or as a snapshot the first time and after a restart
//! (docs/books.md). The hub keeps the book of each channel for snapshots and conflates deltas
//! per level for slow subscribers. Books are built here and nowhere else, the same way
//! whichever edge the deltas came in on.
//!
//! State (every book, as text) and the stream position are checkpointed together in one file,
//! `<data>/projections/book/state.json`, replaced atomically (write, fsync, rename, fsync the
//! directory), so a restart resumes exactly after the last applied delta.

use std::{
    collections::{BTreeMap, BTreeSet},
    fs::File,
    io::Write,
    path::{Path, PathBuf},
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    time::Duration,
};

use bytes::Bytes;
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use tickwire_feed::{
    book::Level,
    depth,
    l2::{L2Book, L2Msg},
    names, Book, BookState, Price,
};
use tickwire_hub::{Channel, Hub, PublishRequest};
use tickwire_model::{DataDir, Epoch, Publication};
use tickwire_projection::{
    Positions, Projection, ProjectionError, Runner, RunnerConfig, RunnerHandle,
};

/// Settings of the book projection.
#[derive(Debug, Clone)]
pub struct BookConfig {
    /// Levels per side in each published `book.<SYM>` (0: all).
    pub depth: u32,
    /// How often changed books are published.
    pub flush_interval: Duration,
    /// How often books and the stream position are checkpointed.
    pub checkpoint_interval: Duration,
}

impl Default for BookConfig {
    fn default() -> Self {
        BookConfig {
            depth: 10,
            // Books are live data a trader watches: published promptly, conflated per flush.
            flush_interval: Duration::from_millis(20),
            checkpoint_interval: Duration::from_secs(1),
        }
    }
}

/// Counters for health and metrics.
#[derive(Debug, Default)]
pub struct BookStats {
    pub applied: AtomicU64,
    /// Depth messages that were not valid JSON of the depth form.
    pub bad_messages: AtomicU64,
}

/// The checkpoint file.
#[derive(Debug, Default, Serialize, Deserialize)]
struct State {
    next: BTreeMap<String, u64>,
    epochs: BTreeMap<String, u64>,
    books: BTreeMap<String, BookState>,
    /// The sequence number of each book channel's last value (absent in checkpoints from
    /// before sequenced books: they start again at 1 with a snapshot).
    #[serde(default)]
    seqs: BTreeMap<String, u64>,
}

/// The projection itself (driven by the runner).
pub struct BookProjection {
    dir: PathBuf,
    config: BookConfig,
    books: BTreeMap<String, Book>,
    /// Each channel's book as last published and its sequence number; a symbol without one
    /// (new, or after a restart) gets a snapshot next.
    published: BTreeMap<String, L2Book>,
    seqs: BTreeMap<String, u64>,
    /// Instruments changed since the last `derived`.
    changed: BTreeSet<String>,
    /// Instruments changed since the last checkpoint.
    dirty: bool,
    stats: Arc<BookStats>,
}

impl BookProjection {
    pub fn new(data: &DataDir, config: BookConfig) -> BookProjection {
        BookProjection {
            dir: data.projection("book"),
            config,
            books: BTreeMap::new(),
            published: BTreeMap::new(),
            seqs: BTreeMap::new(),
            changed: BTreeSet::new(),
            dirty: false,
            stats: Arc::new(BookStats::default()),
        }
    }

    fn path(&self) -> PathBuf {
        self.dir.join("state.json")
    }

    /// Applies one depth message to the book of `symbol`.
    fn apply_depth(&mut self, symbol: &str, data: &[u8]) {
        let m = match depth::parse(data) {
            Ok(m) => m,
            Err(e) => {
                self.stats.bad_messages.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(%symbol, "depth message refused by the book projection: {e}");
                return;
            }
        };
        let book = self.books.entry(symbol.to_string()).or_default();
        if let Some(levels) = &m.snapshot {
            let levels: Vec<Level<'_>> = levels.iter().map(|l| l.level()).collect();
            book.apply_snapshot(&levels);
        }
        for u in m.updates.iter().flatten() {
            book.apply(&u.delta());
        }
        self.changed.insert(symbol.to_string());
        self.dirty = true;
        self.stats.applied.fetch_add(1, Ordering::Relaxed);
    }
}

impl Projection for BookProjection {
    fn name(&self) -> &str {
        "book"
    }

    fn restore(&mut self) -> Result<Positions, ProjectionError> {
        let bytes = match std::fs::read(self.path()) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Positions::default()),
            Err(e) => {
                return Err(ProjectionError::state(
                    "book",
                    format!("{}: {e}", self.path().display()),
                ))
            }
        };
        let state: State = match serde_json::from_slice(&bytes) {
            Ok(s) => s,
            Err(e) => {
                // A checkpoint this version cannot read: rebuild from the whole stream.
                tracing::warn!(file = %self.path().display(), "book checkpoint unreadable ({e}); rebuilding every book from the depth stream");
                return Ok(Positions::default());
            }
        };
        self.books = state
            .books
            .iter()
            .map(|(sym, b)| (sym.clone(), Book::import(b)))
            .collect();
        self.seqs = state.seqs;
        // Every book is published again as a snapshot: the hub may hold a delta as the newest
        // value of its channel, which gives no book after a restart.
        self.changed = self.books.keys().cloned().collect();
        Ok(Positions {
            next: state.next,
            epochs: state
                .epochs
                .into_iter()
                .map(|(ns, e)| (ns, Epoch(e)))
                .collect(),
        })
    }

    fn apply(&mut self, _source: usize, p: &Publication) {
        self.apply_depth(p.channel.name(), &p.data);
    }

    fn derived(&mut self) -> Vec<Vec<PublishRequest>> {
        let mut out = Vec::with_capacity(self.changed.len());
        for sym in std::mem::take(&mut self.changed) {
            let Some(book) = self.books.get_mut(&sym) else {
                continue;
            };
            let Some(json) = next_value(
                book,
                self.published.entry(sym.clone()).or_default(),
                self.seqs.entry(sym.clone()).or_insert(0),
                self.config.depth,
            ) else {
                continue;
            };
            // The sequence number moved: it goes into the next checkpoint.
            self.dirty = true;
            if let Ok(channel) = Channel::parse(&names::book(&sym)) {
                out.push(PublishRequest {
                    channel,
                    msg_id: None,
                    data: Bytes::from(json),
                });
            }
        }
        vec![out]
    }

    fn checkpoint(&mut self, positions: &Positions) -> Result<(), ProjectionError> {
        if !self.dirty && self.path().exists() {
            return Ok(());
        }
        let state = State {
            next: positions.next.clone(),
            epochs: positions
                .epochs
                .iter()
                .map(|(k, e)| (k.clone(), e.0))
                .collect(),
            books: self
                .books
                .iter()
                .map(|(s, b)| (s.clone(), b.export()))
                .collect(),
            seqs: self.seqs.clone(),
        };
        let json = serde_json::to_vec(&state).map_err(|e| ProjectionError::state("book", e))?;
        write_atomically(&self.dir, &self.path(), &json)
            .map_err(|e| ProjectionError::state("book", e))?;
        self.dirty = false;
        Ok(())
    }
}

/// The next value of a book channel: a snapshot of `book`'s best `depth` levels when nothing
/// was published since the start (`published` unknown), else a delta of the levels that
/// differ from `published` (gone ones with size "0"); `None` when nothing changed. Advances
/// `published` and `seq` to it.
fn next_value(book: &Book, published: &mut L2Book, seq: &mut u64, depth: u32) -> Option<String> {
    let (bids, asks) = book.depth(depth as usize);
    let own = |levels: Vec<(&str, Option<&str>)>| -> Vec<(String, String)> {
        levels
            .into_iter()
            .filter_map(|(p, s)| Some((p.to_string(), s?.to_string())))
            .filter(|(_, s)| !tickwire_feed::l2::is_zero(s))
            .collect()
    };
    let (bids, asks) = (own(bids), own(asks));
    let mut m = if published.is_known() {
        let diff = |bid: bool, target: &[(String, String)], old: Vec<(String, String)>| {
            let keys: BTreeSet<Price> =
                target.iter().filter_map(|(p, _)| Price::parse(p)).collect();
            let mut out: Vec<(String, String)> = old
                .into_iter()
                .filter(|(p, _)| Price::parse(p).is_some_and(|k| !keys.contains(&k)))
                .map(|(p, _)| (p, "0".to_string()))
                .collect();
            out.extend(
                target
                    .iter()
                    .filter(|(p, s)| {
                        Price::parse(p).and_then(|k| published.level(bid, &k))
                            != Some(&(p.clone(), s.clone()))
                    })
                    .cloned(),
            );
            out
        };
        let (old_bids, old_asks) = published.levels();
        let m = L2Msg {
            seq: *seq + 1,
            prev: *seq,
            bids: diff(true, &bids, old_bids),
            asks: diff(false, &asks, old_asks),
            ..L2Msg::default()
        };
        if m.bids.is_empty() && m.asks.is_empty() {
            return None;
        }
        m
    } else {
        // A book the feed left empty (a snapshot whose every size is zero) is still a book:
        // its subscribers and `latest` learn it is empty rather than wait for a first value.
        L2Msg {
            snapshot: true,
            seq: *seq + 1,
            depth,
            bids,
            asks,
            ..L2Msg::default()
        }
    };
    let mut after = published.clone();
    after.apply(&m);
    m.checksum = after.checksum();
    *published = after;
    *seq = m.seq;
    Some(m.to_json())
}

/// Replaces `path` with `bytes` so a crash leaves the old or the new file, never half.
fn write_atomically(dir: &Path, path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let tmp = path.with_extension("tmp");
    {
        let mut f = File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, path)?;
    File::open(dir)?.sync_all()
}

/// The running book projection.
pub struct BookService {
    pub stats: Arc<BookStats>,
    /// The runner's report (position, lag), kept after it stops.
    pub runner_stats: Arc<tickwire_projection::RunnerStats>,
    runner: Mutex<Option<RunnerHandle>>,
}

impl BookService {
    /// Stops the projection after a last flush and checkpoint.
    pub fn stop(&self) {
        let handle = self.runner.lock().take();
        if let Some(mut h) = handle {
            h.stop();
        }
    }
}

/// Starts the book projection when the server has both a `depth` and a `book` namespace.
pub fn start(
    hub: Arc<Hub>,
    data: &DataDir,
    config: BookConfig,
) -> Result<Option<Arc<BookService>>, ProjectionError> {
    if hub.namespace_spec(names::DEPTH).is_none() || hub.namespace_spec(names::BOOK).is_none() {
        return Ok(None);
    }
    let projection = BookProjection::new(data, config.clone());
    let stats = projection.stats.clone();
    let handle = Runner::spawn(
        hub,
        projection,
        RunnerConfig {
            sources: vec![names::DEPTH.to_string()],
            flush_interval: config.flush_interval,
            checkpoint_interval: config.checkpoint_interval,
        },
    )?;
    Ok(Some(Arc::new(BookService {
        stats,
        runner_stats: handle.stats.clone(),
        runner: Mutex::new(Some(handle)),
    })))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use tickwire_feed::book::{Action, Delta, EntryKind};
    use tickwire_feed::l2::Applied;

    use super::*;

    /// Random level changes to a feed's book, published after each with `next_value` at
    /// depth 3 and at full depth: a client applying the values (checking each checksum) holds
    /// the book's best levels every time; the first value is a snapshot, then deltas that
    /// follow one another.
    #[test]
    fn published_values_rebuild_the_best_levels_of_the_book() {
        let prices = ["1.1", "1.10", "1.09", "1.2", "1.15", "0.9", "1.099", "1.3"];
        let sizes = ["1", "2", "0.5", "10"];
        let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut rnd = |n: usize| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            (seed % n as u64) as usize
        };
        for depth in [3u32, 0] {
            let mut book = Book::default();
            let (mut published, mut seq) = (L2Book::default(), 0u64);
            let mut client = L2Book::default();
            let mut values = 0;
            for i in 0..400 {
                let bid = rnd(2) == 0;
                let price = prices[rnd(prices.len())];
                let size = sizes[rnd(sizes.len())];
                let action = if rnd(3) == 0 {
                    Action::Delete
                } else {
                    Action::Change
                };
                book.apply(&Delta {
                    action,
                    kind: Some(if bid { EntryKind::Bid } else { EntryKind::Ask }),
                    price: Some(price),
                    size: (action != Action::Delete).then_some(size),
                    id: None,
                });
                let Some(json) = next_value(&book, &mut published, &mut seq, depth) else {
                    continue;
                };
                let m = L2Msg::parse(json.as_bytes()).unwrap();
                assert_eq!(m.snapshot, values == 0, "value {values} (step {i})");
                assert_eq!(client.apply(&m), Applied::Ok);
                assert_eq!(client.checksum(), m.checksum);
                let (bids, asks) = book.depth(depth as usize);
                let want = |v: Vec<(&str, Option<&str>)>| -> Vec<(String, String)> {
                    v.into_iter()
                        .map(|(p, s)| (p.to_string(), s.unwrap().to_string()))
                        .collect()
                };
                assert_eq!(client.levels(), (want(bids), want(asks)), "step {i}");
                values += 1;
            }
            assert!(values > 100, "{values} values");
            assert_eq!(client.seq(), seq);
        }
    }
}
