use thiserror::Error;

/// Why the server could not start or stopped.
#[derive(Debug, Error)]
pub enum ServerError {
    #[error("configuration: {0}")]
    Config(String),
    #[error(transparent)]
    Hub(#[from] tickwire_hub::HubError),
    #[error(transparent)]
    Stream(#[from] tickwire_stream::StreamError),
    #[error(transparent)]
    Candles(#[from] tickwire_proj_candles::CandlesError),
    #[error(transparent)]
    Projection(#[from] tickwire_projection::ProjectionError),
    #[error(transparent)]
    Fix(#[from] tickwire_edge_fix::FixEdgeError),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: std::net::SocketAddr,
        source: std::io::Error,
    },
    #[error("server I/O: {0}")]
    Io(#[from] std::io::Error),
}
