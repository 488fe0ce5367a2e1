use thiserror::Error;

/// Why cluster mode could not start or a cluster operation failed.
#[derive(Debug, Error, Clone)]
pub enum ClusterError {
    /// Bad `[cluster]` settings.
    #[error("cluster configuration: {0}")]
    Config(String),
    /// The NATS servers could not be reached or refused us.
    #[error("cannot reach the NATS servers {servers}: {reason}")]
    Connect { servers: String, reason: String },
    /// A JetStream request failed (`what` names the stream, bucket or operation).
    #[error("JetStream {what}: {reason}")]
    JetStream { what: String, reason: String },
}

impl ClusterError {
    pub(crate) fn js(what: impl Into<String>, reason: impl std::fmt::Display) -> ClusterError {
        ClusterError::JetStream {
            what: what.into(),
            reason: reason.to_string(),
        }
    }
}

impl From<ClusterError> for tickwire_stream::StreamError {
    fn from(e: ClusterError) -> Self {
        match e {
            ClusterError::Config(c) => tickwire_stream::StreamError::Config(c),
            other => tickwire_stream::StreamError::storage("", other),
        }
    }
}
