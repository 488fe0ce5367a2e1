//! The crate's one error type.

use std::path::PathBuf;

/// Everything that can go wrong in the log.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An earlier fsync (or an unrepairable write) failed; the page cache can no longer be trusted,
    /// so the log refuses further writes until it is reopened and recovered.
    #[error("log is poisoned by an earlier failed fsync or write; reopen it to recover")]
    Poisoned,
    /// A record's key + value exceed `max_record_bytes`.
    #[error("record at batch index {index} has {size} bytes of key+value, max is {max}")]
    RecordTooLarge {
        /// Position of the record in the batch.
        index: usize,
        /// Key + value size.
        size: usize,
        /// Configured maximum.
        max: u32,
    },
    /// An entry with an empty key and timestamp `u64::MAX`: that is how recovery marks a lost
    /// record ([`crate::Record::is_lost`]), so a real one would be mistaken for a loss.
    #[error("record at batch index {index} has an empty key and timestamp u64::MAX, reserved for lost-record placeholders")]
    ReservedRecord {
        /// Position of the record in the batch.
        index: usize,
    },
    /// An I/O operation failed.
    #[error("{op} failed on {}: {source}", path.display())]
    Io {
        /// File or directory involved.
        path: PathBuf,
        /// What was being done (e.g. "write", "fdatasync").
        op: &'static str,
        /// Underlying error.
        #[source]
        source: std::io::Error,
    },
    /// Data on disk is inconsistent in a place recovery must not silently repair.
    #[error("corrupt log data in {} at byte {position}: {reason}", path.display())]
    Corrupt {
        /// Segment or index file.
        path: PathBuf,
        /// Byte position in that file.
        position: u64,
        /// What is wrong.
        reason: String,
    },
    /// The configuration is unusable.
    #[error("invalid log config: {0}")]
    InvalidConfig(&'static str),
}

/// Result with the crate's [`Error`].
pub type Result<T> = std::result::Result<T, Error>;

/// Builds a closure mapping `io::Error` to [`Error::Io`] with context.
pub(crate) fn io_err<'a>(
    op: &'static str,
    path: &'a std::path::Path,
) -> impl FnOnce(std::io::Error) -> Error + 'a {
    move |source| Error::Io {
        path: path.to_path_buf(),
        op,
        source,
    }
}
