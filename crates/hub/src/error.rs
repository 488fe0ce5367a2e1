use thiserror::Error;
use tickwire_model::ModelError;

/// Why the hub refused or failed a request.
#[derive(Debug, Error, Clone)]
pub enum HubError {
    #[error("unknown namespace `{namespace}`; configured namespaces: {known}")]
    UnknownNamespace { namespace: String, known: String },
    #[error(transparent)]
    Model(#[from] ModelError),
    #[error("message is {size} bytes; namespace `{namespace}` accepts at most {max}")]
    TooLarge {
        namespace: String,
        size: usize,
        max: usize,
    },
    #[error("already subscribed to `{0}`")]
    AlreadySubscribed(String),
    #[error("not subscribed to `{0}`")]
    NotSubscribed(String),
    #[error("a session may hold at most {0} subscriptions")]
    TooManySubscriptions(usize),
    #[error(
        "`from` applies to stream channels; `{0}` is a state channel and sends a snapshot instead"
    )]
    FromOnStateChannel(String),
    #[error(
        "`from` {from} is beyond the end of namespace `{namespace}` (its next offset is {next}): this stream never had that offset — a wiped or different server, or a lost unsynced tail; resubscribe without `from`, or from {next}"
    )]
    OffsetBeyondEnd {
        namespace: String,
        from: u64,
        next: u64,
    },
    #[error("storage error in namespace `{namespace}`: {reason}")]
    Storage { namespace: String, reason: String },
    #[error("the server is shutting down")]
    ShuttingDown,
    #[error("configuration: {0}")]
    Config(String),
}

impl HubError {
    /// A storage failure in `namespace` (empty when no namespace applies).
    pub fn storage(namespace: &str, reason: impl std::fmt::Display) -> HubError {
        HubError::Storage {
            namespace: namespace.to_string(),
            reason: reason.to_string(),
        }
    }
}

impl From<tickwire_stream::StreamError> for HubError {
    fn from(e: tickwire_stream::StreamError) -> Self {
        match e {
            tickwire_stream::StreamError::Storage { namespace, reason } => {
                HubError::Storage { namespace, reason }
            }
            tickwire_stream::StreamError::Config(c) => HubError::Config(c),
        }
    }
}
