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

use std::{future::Future, net::SocketAddr, sync::Arc, time::Duration};

pub use config::GrpcConfig;
pub use service::{CandleError, CandleSource};
pub use status::code_trailer;
use tickwire_gateway::{Edge, Gateway};
use tokio::{net::TcpListener, sync::mpsc};

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

/// How putting an item into a call's outgoing stream ended.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Sent {
    Yes,
    /// The call is gone (the client cancelled, or tonic dropped the stream).
    Gone,
    /// No room for `timeout`: the client took nothing for that long.
    TimedOut,
}

/// Puts `item` into a call's outgoing stream (the channel tonic reads), waiting at most
/// `timeout` for room. Room is the common case and is taken without a deadline: a timeout per
/// item reads the clock and builds a timer entry, and a waiting `send` spends tokio's
/// cooperative budget, so a subscriber's task yielded every 128 pushes (a quarter to a third
/// of the server's CPU per gRPC delivery at full load, bench/results/fanout-encodings.md).
pub(crate) async fn send_within<T>(tx: &mpsc::Sender<T>, item: T, timeout: Duration) -> Sent {
    let item = match tx.try_send(item) {
        Ok(()) => return Sent::Yes,
        Err(mpsc::error::TrySendError::Closed(_)) => return Sent::Gone,
        Err(mpsc::error::TrySendError::Full(item)) => item,
    };
    match tokio::time::timeout(timeout, tx.send(item)).await {
        Ok(Ok(())) => Sent::Yes,
        Ok(Err(_)) => Sent::Gone,
        Err(_) => Sent::TimedOut,
    }
}
