//! Projections: state derived from namespace streams (live candles, order books, a search
//! index), built the same way whatever edge the data came in on, and exactly once across
//! restarts.
//!
//! A [`Projection`] says how to apply a publication, what it derives (publications the runner
//! publishes for it), and how to store and restore its state together with the stream
//! positions that state reflects. The [`Runner`] does the rest, the same for every projection:
//!
//! 1. **Restore**: the projection loads its last checkpoint: its state and, per source
//!    namespace, the next offset to apply (and the stream epoch it belongs to).
//! 2. **Tail from the checkpoint**: one [`tickwire_stream::Tail`] per source reads history from
//!    the stored offset and then follows the stream live, with no gap and no duplicate, so
//!    every publication after the checkpoint is applied once. Sources are merged by append
//!    time while catching up, so a trade is not judged late only because quotes came first.
//!    A source with nothing to read holds the others back for its stream's
//!    `visibility_lag` (zero for the embedded log; in cluster mode, how late another node's
//!    append may reach this node), so every node merges the same streams in the same order.
//! 3. **Checkpoint**: every `checkpoint_interval` the projection writes its state and the
//!    positions atomically (one transaction or one file rename). A crash between checkpoints
//!    replays from the last one: state and positions always agree.
//! 4. **Derived output** is collected by the projection (conflating as it likes) and handed,
//!    every `flush_interval`, to a low-priority publisher thread; while that thread is busy
//!    the projection keeps conflating, so derived publishing never takes the CPU that live
//!    delivery needs, and the projection never holds up a namespace writer: it reads the
//!    stream behind the writers and reports how far behind it is ([`RunnerStats`]).
//!
//! A stream whose epoch differs from the checkpoint's was recreated: its old offsets mean
//! nothing, so the runner logs it and reads the new stream from its start.

mod runner;

use std::collections::BTreeMap;

use tickwire_hub::PublishRequest;
use tickwire_model::{Channel, Epoch, FieldSpans, Offset, Publication};

pub mod metrics;

pub use runner::{Runner, RunnerConfig, RunnerHandle, RunnerStats, SourceStats};

/// Derived publications: groups published in order (see [`Projection::derived`]).
pub type Derived = Vec<Vec<PublishRequest>>;

/// A record from a source's append feed: what the log holds at `offset`, and where the
/// publish edge found its quote/trade fields in `data` when it did (see [`FieldSpans`]).
#[derive(Debug, Clone, Copy)]
pub struct Fed<'a> {
    pub channel: &'a Channel,
    pub offset: Offset,
    /// Append time (Unix ns), the log's timestamp for it.
    pub timestamp: u64,
    pub data: &'a [u8],
    pub spans: Option<&'a FieldSpans>,
}

/// Why a projection could not restore or checkpoint.
#[derive(Debug, thiserror::Error)]
pub enum ProjectionError {
    #[error("projection `{projection}`: {reason}")]
    State { projection: String, reason: String },
    #[error(transparent)]
    Hub(#[from] tickwire_hub::HubError),
    #[error("projection runner: {0}")]
    Runner(String),
}

impl ProjectionError {
    pub fn state(projection: &str, reason: impl std::fmt::Display) -> ProjectionError {
        ProjectionError::State {
            projection: projection.to_string(),
            reason: reason.to_string(),
        }
    }
}

/// Where a projection's state stands in each source stream.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Positions {
    /// Namespace → the next offset to apply.
    pub next: BTreeMap<String, Offset>,
    /// Namespace → the epoch those offsets belong to (absent in checkpoints written before
    /// epochs existed: then the offsets are trusted).
    pub epochs: BTreeMap<String, Epoch>,
}

/// State derived from one or more namespace streams.
pub trait Projection: Send + 'static {
    /// A short name for logs and metrics (`candles`, `book`).
    fn name(&self) -> &str;

    /// Loads the last checkpoint's state and returns its positions (empty: from the start).
    fn restore(&mut self) -> Result<Positions, ProjectionError>;

    /// Applies one publication of source `source` (an index into the runner's sources), in
    /// offset order per source.
    fn apply(&mut self, source: usize, publication: &Publication);

    /// Whether the runner may hand this projection records from a source's append feed (the
    /// embedded log's newest batches in memory, `tickwire_hub::FeedReader`) through
    /// [`Projection::apply_fed`] instead of reading them back from the log. Only for a
    /// projection that does not need a record's `msg_id`: a fed record has none.
    fn wants_feed(&self) -> bool {
        false
    }

    /// Applies the record the log holds at `record.offset` of source `source`, given by its
    /// parts: the same channel, append time and data [`Projection::apply`] would get, without
    /// its `msg_id`. Called only when [`Projection::wants_feed`] says so, in the same offset
    /// order.
    fn apply_fed(&mut self, source: usize, record: Fed<'_>) {
        self.apply(
            source,
            &Publication {
                channel: record.channel.clone(),
                offset: record.offset,
                timestamp: record.timestamp,
                msg_id: None,
                data: bytes::Bytes::copy_from_slice(record.data),
            },
        );
    }

    /// Timer work, called about every `flush_interval` with the runner's clock (Unix ms): the
    /// wall clock while the projection is caught up, the append time of the newest publication
    /// applied while it is behind (never ahead of its input). Close bars whose feed went
    /// quiet, expire things.
    fn tick(&mut self, _now_ms: i64) {}

    /// Publications derived since the last call (live bars, book views), as groups published
    /// one after the other, each once the one before is acknowledged. Of several values for
    /// one state channel in one group only the newest reaches live subscribers (the hub's
    /// write-batch rule), so values every subscriber must see in turn (a bar's final content,
    /// then the next bar) go in successive groups. Called only when the publisher can take
    /// them; otherwise the projection keeps conflating.
    fn derived(&mut self) -> Vec<Vec<PublishRequest>>;

    /// Writes the state and `positions` atomically. On an error the projection keeps what was
    /// not written, and the next checkpoint tries again.
    fn checkpoint(&mut self, positions: &Positions) -> Result<(), ProjectionError>;
}
