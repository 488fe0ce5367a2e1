use thiserror::Error;

/// Why a stream operation failed.
#[derive(Debug, Error, Clone)]
pub enum StreamError {
    /// The storage underneath failed (I/O, corruption, a poisoned log). `namespace` is empty
    /// when no namespace applies (the data-directory lock).
    #[error("storage error in namespace `{namespace}`: {reason}")]
    Storage { namespace: String, reason: String },
    /// Bad settings.
    #[error("stream configuration: {0}")]
    Config(String),
}

impl StreamError {
    pub fn storage(namespace: &str, reason: impl std::fmt::Display) -> StreamError {
        StreamError::Storage {
            namespace: namespace.to_string(),
            reason: reason.to_string(),
        }
    }
}
