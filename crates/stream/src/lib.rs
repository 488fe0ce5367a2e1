//! The stream seam: one interface for a namespace's ordered, durable stream, so the hub,
//! projections and import never depend on how it is stored.
//!
//! - [`Stream`] is the shared, read side of one namespace: read from an offset, scan one
//!   channel, [`Stream::tail`] (history, then live, with no gap), the oldest and next offsets,
//!   and the [`Epoch`] that names this incarnation of the stream.
//! - [`Appender`] is its one writer (the hub's namespace writer thread owns it): append a batch
//!   (consecutive offsets), take a [`DurabilityPoint`] that makes everything appended so far
//!   durable when run, retention.
//! - [`Backend`] opens namespaces. [`embedded::Embedded`] is the default: our own segmented log
//!   (`tickwire-log`) under `<data>/log/<namespace>/`. It is the only code that depends on the
//!   log crate; a cluster backend (NATS JetStream) implements the same traits.
//!
//! Records carry the publication's channel, optional `msg_id` and JSON data; the offset and
//! timestamp are the stream's own ([`record`] has the embedded format).

pub mod embedded;
mod error;
pub mod record;
mod tail;
mod watermark;

use std::sync::Arc;

pub use error::StreamError;
pub use tail::Tail;
pub use tickwire_model::{Channel, DataDir, Epoch, NamespaceSpec, Offset, Publication, StreamPos};
pub use watermark::Watermark;

/// One publication to append, borrowed from the writer's batch.
#[derive(Debug, Clone, Copy)]
pub struct AppendItem<'a> {
    pub channel: &'a Channel,
    pub msg_id: Option<&'a str>,
    pub data: &'a [u8],
}

/// What one [`Stream::read`] returned.
#[derive(Debug, Default)]
pub struct ReadBatch {
    /// Publications in offset order.
    pub publications: Vec<Publication>,
    /// Where the next read continues: one past the last record looked at (records this version
    /// cannot decode are passed over and counted in `skipped`).
    pub next: Offset,
    /// Records passed over because this version cannot read them.
    pub skipped: u64,
    /// Records passed over because their data was lost to corruption: the log keeps their
    /// offsets, recovery quarantined their bytes (and said so when it did).
    pub lost: u64,
}

/// What a stream's recovery repaired when it was opened (zero for a backend that repairs
/// nothing itself), exported at `/metrics` per namespace.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RecoveryStats {
    /// Bytes cut from a torn tail (an incomplete last write).
    pub truncated_bytes: u64,
    /// Bytes of damaged ranges with valid records after them, moved to quarantine.
    pub quarantined_bytes: u64,
    /// Records whose data was in those ranges: lost, their offsets kept as placeholders.
    pub quarantined_records: u64,
    /// Sparse indexes rebuilt (a cache: nothing is lost).
    pub indexes_rebuilt: u64,
}

/// What [`Stream::read_channel`] found.
#[derive(Debug, Default)]
pub struct ChannelPage {
    pub publications: Vec<Publication>,
    /// Where to continue: every offset below it was scanned (or is at or after `until`).
    pub next: Offset,
    /// The stream had nothing more from `from` (retention, or the end).
    pub exhausted: bool,
}

/// The read side of one namespace's stream. Shared (`Arc`), used from any thread.
pub trait Stream: Send + Sync + 'static {
    /// The namespace this stream holds.
    fn namespace(&self) -> &str;

    /// This incarnation of the stream; changes when the stream is recreated.
    fn epoch(&self) -> Epoch;

    /// The oldest offset still stored (retention moves it up).
    fn start_offset(&self) -> Offset;

    /// The offset the next appended record gets: one past the newest readable record.
    fn next_offset(&self) -> Offset;

    /// Records with offset >= `from` (clamped up to [`Stream::start_offset`]), in order, at
    /// most `max_records`, stopping before `max_bytes` of payload (but at least one record when
    /// one exists). Blocking I/O: call it off an async runtime's workers.
    fn read(
        &self,
        from: Offset,
        max_records: usize,
        max_bytes: usize,
    ) -> Result<ReadBatch, StreamError>;

    /// Signalled whenever [`Stream::next_offset`] moves, for [`Stream::tail`].
    fn watermark(&self) -> &Arc<Watermark>;

    /// What opening this stream repaired.
    fn recovery_stats(&self) -> RecoveryStats {
        RecoveryStats::default()
    }

    /// The position of the stream's end.
    fn position(&self) -> StreamPos {
        StreamPos {
            epoch: self.epoch(),
            offset: self.next_offset(),
        }
    }

    /// Reads from `from` and keeps one channel's records, stopping at `until`, after
    /// `max_messages` matches, or after `max_records` records of any channel (so one page never
    /// scans the whole stream for a quiet channel). History pages and subscribers catching up
    /// from behind the in-memory ring use it.
    fn read_channel(
        &self,
        channel: &Channel,
        from: Offset,
        until: Offset,
        max_messages: usize,
        max_records: usize,
    ) -> Result<ChannelPage, StreamError> {
        let mut cursor = from.max(self.start_offset());
        let mut scanned = 0usize;
        let mut publications = Vec::new();
        while publications.len() < max_messages && cursor < until && scanned < max_records {
            let batch = self.read(cursor, (max_records - scanned).min(4096), 4 << 20)?;
            if batch.next <= cursor {
                return Ok(ChannelPage {
                    publications,
                    next: cursor,
                    exhausted: true,
                });
            }
            scanned = scanned
                .saturating_add(usize::try_from(batch.skipped + batch.lost).unwrap_or(usize::MAX));
            for p in batch.publications {
                if p.offset >= until {
                    return Ok(ChannelPage {
                        publications,
                        next: until,
                        exhausted: false,
                    });
                }
                if publications.len() >= max_messages {
                    return Ok(ChannelPage {
                        publications,
                        next: cursor,
                        exhausted: false,
                    });
                }
                scanned += 1;
                cursor = p.offset + 1;
                if p.channel == *channel {
                    publications.push(p);
                }
            }
            cursor = cursor.max(batch.next.min(until));
        }
        Ok(ChannelPage {
            publications,
            next: cursor,
            exhausted: false,
        })
    }
}

impl dyn Stream {
    /// Every record from `from` on, history first, then live as it is appended, with no gap
    /// and no duplicate (see [`Tail`]).
    pub fn tail(self: Arc<Self>, from: Offset) -> Tail {
        Tail::new(self, from)
    }
}

/// A point that, when run, makes durable every record appended before it was taken. Points are
/// taken in order; a newer one covers the older ones it [absorbs](DurabilityPoint::absorb).
pub trait DurabilityPoint: Send + std::any::Any {
    /// One past the newest offset this point covers.
    fn upto(&self) -> Offset;

    /// Takes over whatever an older point of the same stream had to do that this one would
    /// not (the embedded log: a directory fsync after a segment roll).
    fn absorb(&mut self, older: Box<dyn DurabilityPoint>);

    /// Makes the records durable (fdatasync for the embedded log). A failure is final: the
    /// stream refuses every later write (see [`Appender::is_poisoned`]).
    fn run(self: Box<Self>) -> Result<Offset, StreamError>;
}

/// The one writer of a namespace's stream.
pub trait Appender: Send + 'static {
    /// Appends a batch with consecutive offsets, stamped `timestamp` (Unix nanoseconds), and
    /// returns the first offset. Readable once this returns; durable once a
    /// [`DurabilityPoint`] taken after it has run.
    fn append(&mut self, items: &[AppendItem<'_>], timestamp: u64) -> Result<Offset, StreamError>;

    /// A point covering everything appended so far.
    fn durability_point(&mut self) -> Result<Box<dyn DurabilityPoint>, StreamError>;

    /// Makes everything appended so far durable, now, on this thread.
    fn sync(&mut self) -> Result<(), StreamError>;

    /// A durability failure happened: every later append and sync fails.
    fn is_poisoned(&self) -> bool;

    /// The offset the next appended record gets.
    fn next_offset(&self) -> Offset;

    /// The oldest offset still stored.
    fn start_offset(&self) -> Offset;

    /// The offset below which retention would delete records if applied at `now` (Unix
    /// nanoseconds); [`Appender::start_offset`] when nothing would go.
    fn retention_cutoff(&self, now: u64) -> Offset;

    /// Applies retention at `now`; returns how many units (segments) were removed.
    fn enforce_retention(&mut self, now: u64) -> Result<usize, StreamError>;
}

/// A namespace's stream, opened: its shared read side and its one writer.
pub struct Opened {
    pub stream: Arc<dyn Stream>,
    pub appender: Box<dyn Appender>,
}

/// Where namespace streams live (embedded log, NATS JetStream).
pub trait Backend: Send + Sync + 'static {
    /// Opens (creating or recovering) the stream of one namespace.
    fn open(&self, spec: &NamespaceSpec) -> Result<Opened, StreamError>;
}
