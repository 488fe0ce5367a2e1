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
    Cluster(#[from] tickwire_stream_nats::ClusterError),
    #[error(transparent)]
    Candles(#[from] tickwire_proj_candles::CandlesError),
    #[error(transparent)]
    Projection(#[from] tickwire_projection::ProjectionError),
    #[error(transparent)]
    Fix(#[from] tickwire_edge_fix::FixEdgeError),
    #[error(transparent)]
    Tls(#[from] tickwire_tls::TlsError),
    #[error(transparent)]
    Grpc(#[from] tickwire_edge_grpc::GrpcError),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: std::net::SocketAddr,
        source: std::io::Error,
    },
    #[error("server I/O: {0}")]
    Io(#[from] std::io::Error),
}
