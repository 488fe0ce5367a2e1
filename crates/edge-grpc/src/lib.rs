//! The gRPC edge (docs/grpc.md): the `tickwire.v1.Tickwire` service of
//! `proto/tickwire/v1/tickwire.proto` on its own listener (`[grpc] listen`), beside
//! `grpc.health.v1.Health` (with Watch) and server reflection (v1 and v1alpha), so `grpcurl`
//! and Kubernetes probes work without the proto file.
//!
//! Like every edge it goes through the gateway: the credential in metadata
//! (`authorization: Bearer <API key or JWT>`, or `x-api-key`) becomes a principal, long-lived
//! calls (Subscribe, PublishStream) open a `Connection` (limits, shutdown, per-edge metrics),
//! and refusals become gRPC statuses through the one table (`Refusal::grpc_code`), with the
//! protocol's error code in the `tickwire-code` trailer.
//!
//! Pushes are the shared protobuf encoding of a message (`tickwire_gateway::proto::proto_push`,
//! one message-cache slot with the binary WebSocket): a message is encoded once however many
//! subscribers it has.

mod config;
mod publish;
mod service;
mod status;
mod subscribe;

use std::{future::Future, net::SocketAddr, sync::Arc};

pub use config::GrpcConfig;
pub use service::{CandleError, CandleSource};
pub use status::code_trailer;
use tickwire_gateway::{Edge, Gateway};
use tokio::net::TcpListener;

/// The name this edge is counted and logged under.
pub const GRPC: Edge = Edge("grpc");

/// The generated `tickwire.v1.Tickwire` server (its `ServerMessage` is pre-encoded).
#[allow(clippy::all, missing_docs)]
pub mod server {
    include!("gen/server/tickwire.v1.rs");
}

/// A generated `tickwire.v1.Tickwire` client, for tests, tools and the bench.
#[allow(clippy::all, missing_docs)]
pub mod client {
    include!("gen/client/tickwire.v1.rs");
}

/// What can stop the gRPC edge from starting.
#[derive(Debug, thiserror::Error)]
pub enum GrpcError {
    #[error("gRPC listener {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("gRPC reflection: {0}")]
    Reflection(String),
    #[error("gRPC server: {0}")]
    Serve(String),
}

/// A bound gRPC listener, not serving yet.
pub struct GrpcEdge {
    listener: TcpListener,
    /// The address it is bound to (the port when `listen` said 0).
    pub addr: SocketAddr,
    config: GrpcConfig,
}

/// Binds `[grpc] listen`; `None` when it is not set (no gRPC).
pub async fn bind(config: &GrpcConfig) -> Result<Option<GrpcEdge>, GrpcError> {
    let Some(addr) = config.listen else {
        return Ok(None);
    };
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|source| GrpcError::Bind { addr, source })?;
    let addr = listener
        .local_addr()
        .map_err(|source| GrpcError::Bind { addr, source })?;
    Ok(Some(GrpcEdge {
        listener,
        addr,
        config: config.clone(),
    }))
}

impl GrpcEdge {
    /// Serves until `shutdown` resolves: then health says NOT_SERVING, no new calls are
    /// taken, and the call ends once its streams end (the gateway's drain closes their
    /// sessions, each with a `Disconnect`).
    pub fn spawn(
        self,
        gateway: Arc<Gateway>,
        candles: Option<Arc<dyn CandleSource>>,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> tokio::task::JoinHandle<Result<(), GrpcError>> {
        tokio::spawn(service::serve(
            self.listener,
            self.config,
            gateway,
            candles,
            shutdown,
        ))
    }
}
