//! Order books as a projection: every `depth.<SYM>` message (a snapshot or updates, in the
//! JSON form of `tickwire_feed::depth`, from the FIX initiator or any API-key publisher) is
//! applied to that instrument's `tickwire_feed::Book`, and the changed books are published on
//! `book.<SYM>` (`{"asks":[[px,size],...],"bids":[...]}`, best `depth` levels). Books are
//! built here and nowhere else, the same way whichever edge the deltas came in on.
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
use tickwire_feed::{book::Level, depth, names, Book, BookState};
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
}

/// The projection itself (driven by the runner).
pub struct BookProjection {
    dir: PathBuf,
    config: BookConfig,
    books: BTreeMap<String, Book>,
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
            let Some(json) = book.book_if_changed(self.config.depth) else {
                continue;
            };
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
        };
        let json = serde_json::to_vec(&state).map_err(|e| ProjectionError::state("book", e))?;
        write_atomically(&self.dir, &self.path(), &json)
            .map_err(|e| ProjectionError::state("book", e))?;
        self.dirty = false;
        Ok(())
    }
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
