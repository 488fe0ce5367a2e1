//! Tickwire's embedded segmented append-only log: the durability core of the ingest path.
//!
//! One writer ([`Log`], owned by one thread) appends batches of records with consecutive
//! offsets; any number of [`LogReader`]s read concurrently by offset. Data is split into segment
//! files named by their base offset, each with a sparse index. [`Log::sync`] is the group-commit
//! point: records are durable once a `sync` that started after their `append` returns.
//!
//! See `README.md` in this crate for the on-disk format and the recovery rules.

mod error;
mod log;
#[cfg(test)]
mod power_loss;
mod reader;
pub mod record;
mod segment;
#[cfg(test)]
mod sim;
mod snapshot;
mod vfs;

pub use error::{Error, Result};
pub use log::{Log, Quarantined, RecoveryReport, SyncPoint};
pub use reader::LogReader;
pub use snapshot::{LogSnapshot, SnapshotFile};

use std::time::Duration;

/// Position of a record in the log, starting at 0 and contiguous.
pub type Offset = u64;

/// Tuning and retention for a [`Log`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogConfig {
    /// Roll to a new segment once the active one would grow past this size.
    pub segment_bytes: u64,
    /// Add a sparse index entry every this many bytes of records.
    pub index_interval_bytes: u32,
    /// Reject records whose key + value exceed this size.
    pub max_record_bytes: u32,
    /// Bound on the total size of all segments; oldest whole segments are deleted first.
    pub retention_bytes: Option<u64>,
    /// Segments whose newest record is older than this are deleted (oldest first).
    pub retention_age: Option<Duration>,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            segment_bytes: 64 * 1024 * 1024,
            index_interval_bytes: 4096,
            max_record_bytes: 1024 * 1024,
            retention_bytes: None,
            retention_age: None,
        }
    }
}

impl LogConfig {
    fn validate(&self) -> Result<()> {
        if self.segment_bytes < 1024 {
            return Err(Error::InvalidConfig("segment_bytes must be at least 1024"));
        }
        if self.index_interval_bytes == 0 {
            return Err(Error::InvalidConfig("index_interval_bytes must be > 0"));
        }
        if self.max_record_bytes as usize > record::MAX_PAYLOAD_BYTES {
            return Err(Error::InvalidConfig("max_record_bytes must be <= 256 MiB"));
        }
        Ok(())
    }
}

/// A record to append; borrowed so a batch can be built without copying payloads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Entry<'a> {
    /// Unix nanoseconds (used by age-based retention).
    pub timestamp: u64,
    /// Key bytes (may be empty).
    pub key: &'a [u8],
    /// Value bytes.
    pub value: &'a [u8],
}

/// A record read back from the log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record {
    /// Offset of this record.
    pub offset: Offset,
    /// Unix nanoseconds given at append.
    pub timestamp: u64,
    /// Key bytes.
    pub key: bytes::Bytes,
    /// Value bytes.
    pub value: bytes::Bytes,
}

impl Record {
    /// True for a placeholder that recovery wrote in place of a damaged record: the offset
    /// exists (offsets stay contiguous), its data was lost and its bytes are in the log
    /// directory's `quarantine/` (see [`RecoveryReport::quarantined`]).
    pub fn is_lost(&self) -> bool {
        record::is_lost(self.timestamp, &self.key)
    }
}
