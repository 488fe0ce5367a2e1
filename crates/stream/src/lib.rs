//! The stream seam: one interface for a namespace's ordered, durable stream, so the hub,
//! projections and import never depend on how it is stored.
//!
//! - [`Stream`] is the shared, read side of one namespace: read from an offset, scan one
//!   channel, [`Stream::tail`] (history, then live, with no gap), the oldest and next offsets,
//!   and the [`Epoch`] that names this incarnation of the stream.
//! - [`Appender`] is its one writer (the hub's namespace writer thread owns it): append a batch
//!   (consecutive offsets), take a [`DurabilityPoint`] that makes everything appended so far
//!   durable when run, retention.
//! - [`SharedAppender`] is the writer of a stream other nodes append to as well (cluster mode,
//!   NATS JetStream): the stream assigns offsets when it acknowledges an append and recognises
//!   repeated `msg_id`s itself, and every node delivers from the stream's tail.
//! - [`Backend`] opens namespaces. [`embedded::Embedded`] is the default: our own segmented log
//!   (`tickwire-log`) under `<data>/log/<namespace>/`. It is the only code that depends on the
//!   log crate; the cluster backend (`tickwire-stream-nats`) implements the same traits.
//! - [`kv`] is a small key-value seam for state that must move between nodes with its owner
//!   (FIX sequence numbers and leases, MQTT sessions); only the cluster backend provides one.
//!
//! Records carry the publication's channel, optional `msg_id` and JSON data; the offset and
//! timestamp are the stream's own ([`record`] has the embedded format).

pub mod embedded;
mod error;
pub mod kv;
pub mod record;
mod tail;
mod watermark;

use std::sync::Arc;

use bytes::Bytes;

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
/// What a stream's log occupies on disk.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StorageStats {
    pub bytes: u64,
    pub segments: u64,
}

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

/// What [`Stream::backup`] returns.
pub struct StreamBackup {
    pub epoch: Epoch,
    /// The oldest record in the copy.
    pub start_offset: Offset,
    /// One past the newest record in the copy.
    pub next_offset: Offset,
    /// The files, by name relative to the namespace's directory.
    pub files: Vec<BackupFile>,
}

/// One file of a [`StreamBackup`].
pub struct BackupFile {
    /// Relative to the namespace's directory (`/`-separated).
    pub name: String,
    /// Bytes [`BackupFile::write_to`] writes.
    pub len: u64,
    source: BackupSource,
}

enum BackupSource {
    Log(tickwire_log::SnapshotFile),
    Bytes(Vec<u8>),
}

impl BackupFile {
    /// A file whose bytes are at hand.
    pub fn bytes(name: impl Into<String>, bytes: Vec<u8>) -> BackupFile {
        BackupFile {
            name: name.into(),
            len: bytes.len() as u64,
            source: BackupSource::Bytes(bytes),
        }
    }

    pub(crate) fn log(f: tickwire_log::SnapshotFile) -> BackupFile {
        BackupFile {
            name: f.name.clone(),
            len: f.len,
            source: BackupSource::Log(f),
        }
    }

    /// Reads the file's bytes from `pos` into `buf` (0 at its end), like `pread`.
    pub fn read_at(&self, buf: &mut [u8], pos: u64) -> std::io::Result<usize> {
        match &self.source {
            BackupSource::Log(f) => f.read_at(buf, pos),
            BackupSource::Bytes(b) => {
                let at = usize::try_from(pos).unwrap_or(usize::MAX).min(b.len());
                let n = buf.len().min(b.len() - at);
                buf[..n].copy_from_slice(&b[at..at + n]);
                Ok(n)
            }
        }
    }
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
    /// Bytes and segment files the stream keeps on this node's disk, for `/metrics`; `None`
    /// where it keeps none (a shared stream lives in the cluster).
    fn storage_stats(&self) -> Option<StorageStats> {
        None
    }

    fn recovery_stats(&self) -> RecoveryStats {
        RecoveryStats::default()
    }

    /// The end of the stream as far as this process knows, which for a shared stream may be
    /// ahead of [`Stream::next_offset`] (what this node has read so far): other nodes append
    /// too, and a client may resume here from an offset another node gave it a moment ago. A
    /// `from` up to this end is valid; delivery waits for this node to read up to it.
    fn known_end(&self) -> Offset {
        self.next_offset()
    }

    /// The newest record of every channel at [`Stream::next_offset`], when the store can
    /// answer that without a replay (JetStream keeps the last message per subject); `None`
    /// means: replay the stream. The hub rebuilds state channels from it at start.
    fn latest_values(&self) -> Result<Option<Vec<Publication>>, StreamError> {
        Ok(None)
    }

    /// Why the stream cannot take writes right now (its cluster is unreachable), if it cannot.
    /// Readiness reports it; a local log is always reachable.
    fn unavailable(&self) -> Option<String> {
        None
    }

    /// How long after its timestamp a record may still become readable here (other nodes'
    /// appends reach this node through replication and its tail; timestamps come from other
    /// clocks). A reader that merges streams by timestamp waits this long on a stream that has
    /// nothing to read before it passes records of the others. Zero for a local log.
    fn visibility_lag(&self) -> std::time::Duration {
        std::time::Duration::ZERO
    }

    /// A consistent copy of the stream's files as they stand now, for `tickwire backup`:
    /// opened as a namespace directory, they hold every record below `next_offset` with the
    /// same offsets and epoch. `None`: this backend keeps its data elsewhere and is backed up
    /// by its own means (a cluster's JetStream).
    fn backup(&self) -> Result<Option<StreamBackup>, StreamError> {
        Ok(None)
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

    /// [`Appender::append`] without making the batch readable yet: readers, and waiters on
    /// the stream's watermark, see it after [`Appender::announce`]. For a writer that first
    /// hands the batch to a reader in memory (the append feed), so that the reader does not
    /// find it in the stream, and read it back, before it is there. The default appends and
    /// announces at once.
    fn append_unannounced(
        &mut self,
        items: &[AppendItem<'_>],
        timestamp: u64,
    ) -> Result<Offset, StreamError> {
        self.append(items, timestamp)
    }

    /// Makes everything appended so far readable (after [`Appender::append_unannounced`]).
    /// Calling it again, or with nothing appended since, changes nothing.
    fn announce(&mut self) {}

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

/// One publication handed to a [`SharedAppender`], owned: the append completes later, on
/// another thread.
#[derive(Debug, Clone)]
pub struct SharedItem {
    pub channel: Channel,
    pub msg_id: Option<String>,
    pub data: Bytes,
}

/// Where a shared stream put one item.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Appended {
    pub offset: Offset,
    /// The stream already held this `msg_id` on this channel; `offset` is the first copy's.
    pub duplicate: bool,
}

/// Called once, with one result per item in the order given, when the stream has
/// acknowledged (or refused) every item of a [`SharedAppender::append`].
pub type AppendDone = Box<dyn FnOnce(Vec<Result<Appended, StreamError>>) + Send>;

/// The writer side of a stream that other nodes append to as well. Offsets are the stream's,
/// known only when it acknowledges an append (so they are not predicted, and one batch's items
/// need not be consecutive); an acknowledgement means the stream's own durability rule is met
/// (JetStream: stored on a quorum of its replicas). Items of successive calls are appended in
/// call order.
pub trait SharedAppender: Send + Sync + 'static {
    /// Hands a batch to the stream without waiting; `done` receives the outcome.
    fn append(&self, items: Vec<SharedItem>, done: AppendDone);
}

/// Who writes a namespace's stream.
pub enum Writer {
    /// This process is the stream's only writer (the embedded log): it assigns offsets itself
    /// and delivers from its own batches.
    Sole(Box<dyn Appender>),
    /// Other nodes append too (NATS JetStream): the stream assigns offsets, and every node
    /// delivers from the stream's tail.
    Shared(Arc<dyn SharedAppender>),
}

/// A namespace's stream, opened: its shared read side and its writer.
pub struct Opened {
    pub stream: Arc<dyn Stream>,
    pub writer: Writer,
}

/// Where namespace streams live (embedded log, NATS JetStream).
pub trait Backend: Send + Sync + 'static {
    /// Opens (creating or recovering) the stream of one namespace.
    fn open(&self, spec: &NamespaceSpec) -> Result<Opened, StreamError>;
}
