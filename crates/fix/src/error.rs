//! The crate's single error type.

use std::path::PathBuf;

/// Everything that can go wrong in the codec, the typed messages and the sequence store.
///
/// Decoding errors split into [`Error::Incomplete`] (feed more bytes) and every other variant
/// (the input is not valid FIX and more bytes will not fix it).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The buffer ends before the message does; read more bytes and try again.
    #[error("incomplete message: more bytes needed")]
    Incomplete,
    /// The message does not start with `8=`.
    #[error("message does not start with BeginString (8=) at byte {offset}")]
    BadBeginString {
        /// Byte offset of the problem in the input.
        offset: usize,
    },
    /// BodyLength (9) is missing, not a number or too long.
    #[error("invalid BodyLength (9): {reason}")]
    BadBodyLength {
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The declared or buffered message is larger than the configured maximum.
    #[error("message of {size} bytes exceeds the maximum of {max}")]
    TooLarge {
        /// Size of the message (or of the prefix that did not frame).
        size: usize,
        /// Configured maximum.
        max: usize,
    },
    /// The bytes at BodyLength do not hold a well-formed `10=NNN<SOH>` trailer.
    #[error("bad CheckSum (10) trailer at byte {offset}: {reason}")]
    BadTrailer {
        /// Byte offset where the trailer was expected.
        offset: usize,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The CheckSum (10) value does not match the bytes.
    #[error("CheckSum mismatch: message says {declared:03}, bytes sum to {computed:03}")]
    ChecksumMismatch {
        /// Value of tag 10.
        declared: u8,
        /// Value computed over the message.
        computed: u8,
    },
    /// A field is not of the form `tag=value<SOH>`.
    #[error("malformed field at byte {offset}: {reason}")]
    MalformedField {
        /// Byte offset of the field.
        offset: usize,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A required field is absent.
    #[error("required tag {tag} missing in MsgType {msg_type}")]
    MissingField {
        /// Missing tag.
        tag: u32,
        /// Message type being decoded.
        msg_type: &'static str,
    },
    /// A field value is not valid for its type or enumeration.
    #[error("invalid value for tag {tag}: {reason}")]
    InvalidValue {
        /// Offending tag.
        tag: u32,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A tag appears twice where it may appear once.
    #[error("tag {tag} appears more than once")]
    DuplicateField {
        /// Repeated tag.
        tag: u32,
    },
    /// A repeating group's NumInGroup does not match the entries present, or a group member is
    /// outside an entry.
    #[error("repeating group {count_tag}: {reason}")]
    BadGroup {
        /// The NumInGroup tag (e.g. 268).
        count_tag: u32,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A typed decoder was given a message of another type.
    #[error("expected MsgType {expected}, got {actual}")]
    WrongMsgType {
        /// Type the decoder handles.
        expected: &'static str,
        /// Type found in the message.
        actual: String,
    },
    /// An operation needs a logged-on session.
    #[error("session is not logged on")]
    NotLoggedOn,
    /// Configuration is unusable.
    #[error("invalid session configuration: {0}")]
    Config(&'static str),
    /// Reading or writing the sequence-number file failed.
    #[error("sequence store {path}: {context}: {source}")]
    Io {
        /// File involved.
        path: PathBuf,
        /// Which step failed.
        context: &'static str,
        /// Underlying error.
        source: std::io::Error,
    },
    /// The sequence-number file exists but does not hold what we wrote.
    #[error("sequence store {path} is corrupt: {reason}")]
    StoreCorrupt {
        /// File involved.
        path: PathBuf,
        /// What is wrong with it.
        reason: &'static str,
    },
}

impl Error {
    /// True when more input could turn this into a valid message.
    pub fn is_incomplete(&self) -> bool {
        matches!(self, Error::Incomplete)
    }
}

/// Result with the crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
