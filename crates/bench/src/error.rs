use std::io;

/// Everything that can stop a benchmark run.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    #[error("i/o with {what}: {source}")]
    Io {
        what: String,
        #[source]
        source: io::Error,
    },
    #[error("protocol error from {target}: {detail}")]
    Protocol { target: String, detail: String },
    #[error("{0}")]
    Usage(String),
    #[error("json: {0}")]
    Json(#[from] serde_json::Error),
    #[error("timed out: {0}")]
    Timeout(String),
}

impl BenchError {
    pub fn io(what: impl Into<String>) -> impl FnOnce(io::Error) -> BenchError {
        let what = what.into();
        move |source| BenchError::Io { what, source }
    }

    pub fn proto(target: &str, detail: impl Into<String>) -> BenchError {
        BenchError::Protocol {
            target: target.to_string(),
            detail: detail.into(),
        }
    }
}

pub type Result<T> = std::result::Result<T, BenchError>;
