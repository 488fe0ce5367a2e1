//! The `tickwire.v1.Tickwire` service, and the server that runs it beside health and
//! reflection.

use std::{future::Future, pin::Pin, sync::Arc};

use futures_util::StreamExt;
use tickwire_gateway::{
    proto::payload_kind, trace::PublishTiming, Credentials, ErrorCode, Gateway, Principal,
};
use tickwire_hub::{Channel, Epoch};
use tickwire_proto::{
    push_of,
    v1::{
        CandlesRequest, CandlesResponse, HistoryRequest, HistoryResponse, LatestRequest,
        LatestResponse, PublishRequest, PublishResponse, RetentionGap, SubscribeRequest,
    },
    FILE_DESCRIPTOR_SET,
};
use tokio::net::TcpListener;
use tonic::{metadata::MetadataMap, Request, Response, Status, Streaming};

use crate::{
    publish, server,
    status::{refused, status},
    subscribe, GrpcConfig, GrpcError,
};

/// Largest History page, as over HTTP.
const MAX_PAGE: u32 = 1000;
const DEFAULT_PAGE: u32 = 100;
/// How often health checks the gateway's readiness: probes ask every few seconds.
const READINESS_POLL: std::time::Duration = std::time::Duration::from_millis(200);

/// Why a Candles call found no bars to give.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CandleError {
    /// A resolution that is not built, a bad range.
    BadRequest(String),
    /// A symbol with no candles.
    NotFound(String),
    /// The candle store failed.
    Unavailable(String),
}

/// Where the Candles call reads bars: the candle projection's store, handed in by the server
/// (this edge does not depend on the projection).
pub trait CandleSource: Send + Sync + 'static {
    /// The bars of `request` (closed bars and the live one), newest `limit` of the range.
    fn candles(
        &self,
        request: CandlesRequest,
    ) -> Pin<Box<dyn Future<Output = Result<CandlesResponse, CandleError>> + Send + 'static>>;
}

/// The service: the gateway, and the candle source when candles are built.
pub(crate) struct Service {
    pub(crate) gateway: Arc<Gateway>,
    pub(crate) candles: Option<Arc<dyn CandleSource>>,
}

/// The credential a call presents: `authorization: Bearer <key or token>`, else `x-api-key`.
fn credential(meta: &MetadataMap) -> Option<&str> {
    let bearer = meta
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        });
    bearer.or_else(|| meta.get("x-api-key").and_then(|v| v.to_str().ok()))
}

impl Service {
    pub(crate) fn principal(&self, meta: &MetadataMap) -> Result<Principal, Status> {
        self.gateway
            .authenticate(&Credentials::new(credential(meta)))
            .map_err(|r| {
                self.gateway.metrics().edge(crate::GRPC).rejected();
                refused(&r)
            })
    }

    /// The server API's principal (Publish): a credential is required outside development
    /// mode.
    pub(crate) fn publisher(&self, meta: &MetadataMap) -> Result<Principal, Status> {
        self.gateway
            .server_api(&Credentials::new(credential(meta)))
            .map_err(|r| {
                self.gateway.metrics().edge(crate::GRPC).rejected();
                refused(&r)
            })
    }

    /// A channel a reader names, checked against what `principal` may read.
    fn readable(&self, principal: &Principal, name: &str) -> Result<Channel, Status> {
        let ch = parse_channel(name)?;
        self.gateway
            .read_command(principal)
            .map_err(|r| refused(&r))?;
        self.gateway
            .can_subscribe(principal, &ch)
            .map_err(|r| refused(&r))?;
        Ok(ch)
    }
}

pub(crate) fn parse_channel(name: &str) -> Result<Channel, Status> {
    Channel::parse_cached(name).map_err(|e| status(ErrorCode::BadChannel, e.to_string()))
}

/// `epoch` as given (empty: none).
pub(crate) fn parse_epoch(text: &str) -> Result<Option<Epoch>, Status> {
    tickwire_gateway::proto::epoch_of(text).map_err(|r| refused(&r))
}

/// The W3C Trace Context header (gRPC metadata keys are lowercase).
const TRACEPARENT: &str = "traceparent";

#[tonic::async_trait]
impl server::tickwire_server::Tickwire for Service {
    async fn publish(
        &self,
        request: Request<PublishRequest>,
    ) -> Result<Response<PublishResponse>, Status> {
        // Traced like HTTP publishes; one branch when tracing is off.
        let trace = self
            .gateway
            .trace_publish(|| request.metadata().get(TRACEPARENT).map(|v| v.as_bytes()));
        let mut timing = trace.as_ref().map(|_| PublishTiming::default());
        let result = match self.publisher(request.metadata()) {
            Ok(principal) => {
                publish::unary(self, &principal, request.into_inner(), timing.as_mut()).await
            }
            Err(status) => Err(status),
        };
        if let (Some(trace), Some(t)) = (trace, timing) {
            let error = result
                .as_ref()
                .err()
                .map(|s| format!("{:?}: {}", s.code(), s.message()));
            self.gateway
                .finish_publish_trace(trace, crate::GRPC.0, t, error);
        }
        result.map(Response::new)
    }

    type PublishStreamStream = publish::ResponseStream;

    async fn publish_stream(
        &self,
        request: Request<Streaming<PublishRequest>>,
    ) -> Result<Response<Self::PublishStreamStream>, Status> {
        let principal = self.principal(request.metadata())?;
        let ip = request.remote_addr().map(|a| a.ip());
        // The stream's `traceparent` is the parent of every batch's trace.
        let parent = request
            .metadata()
            .get(TRACEPARENT)
            .map(|v| v.as_bytes().to_vec());
        publish::stream(self, principal, ip, parent, request.into_inner()).map(Response::new)
    }

    type SubscribeStream = subscribe::PushStream;

    async fn subscribe(
        &self,
        request: Request<SubscribeRequest>,
    ) -> Result<Response<Self::SubscribeStream>, Status> {
        let principal = self.principal(request.metadata())?;
        let ip = request.remote_addr().map(|a| a.ip());
        subscribe::start(self, principal, ip, request.into_inner()).map(Response::new)
    }

    async fn history(
        &self,
        request: Request<HistoryRequest>,
    ) -> Result<Response<HistoryResponse>, Status> {
        let principal = self.principal(request.metadata())?;
        let r = request.into_inner();
        let ch = self.readable(&principal, &r.channel)?;
        let hub = self.gateway.hub();
        let epoch = hub.epoch(ch.namespace()).map_err(|e| refused(&e.into()))?;
        if let Some(given) = parse_epoch(&r.epoch)? {
            if given != epoch {
                return Err(status(
                    ErrorCode::EpochMismatch,
                    format!(
                        "namespace `{}` was recreated: its stream is epoch {epoch}, not {given}; offsets started again at 0",
                        ch.namespace()
                    ),
                ));
            }
        }
        let limit = match r.limit {
            0 => DEFAULT_PAGE,
            n if n > MAX_PAGE => {
                return Err(status(
                    ErrorCode::BadRequest,
                    format!("`limit` must be 1 to {MAX_PAGE}"),
                ))
            }
            n => n,
        };
        let page = hub
            .history(&ch, r.from, limit as usize)
            .await
            .map_err(|e| refused(&e.into()))?;
        let kind = payload_kind(hub, ch.namespace());
        Ok(Response::new(HistoryResponse {
            channel: ch.as_str().to_string(),
            messages: page
                .messages
                .iter()
                .map(|m| push_of(&m.publication, false, kind, true))
                .collect(),
            next: page.next,
            epoch: epoch.to_string(),
            retention_gap: page
                .retention_gap
                .map(|(requested, first_retained)| RetentionGap {
                    requested,
                    first_retained,
                }),
        }))
    }

    async fn latest(
        &self,
        request: Request<LatestRequest>,
    ) -> Result<Response<LatestResponse>, Status> {
        let principal = self.principal(request.metadata())?;
        let ch = self.readable(&principal, &request.into_inner().channel)?;
        let hub = self.gateway.hub();
        let latest = hub.latest(&ch).map_err(|e| refused(&e.into()))?;
        let Some(m) = latest else {
            return Err(status(ErrorCode::NotFound, format!("{ch} has no value")));
        };
        let kind = payload_kind(hub, ch.namespace());
        Ok(Response::new(LatestResponse {
            message: Some(push_of(&m.publication, false, kind, true)),
        }))
    }

    async fn candles(
        &self,
        request: Request<CandlesRequest>,
    ) -> Result<Response<CandlesResponse>, Status> {
        let principal = self.principal(request.metadata())?;
        self.gateway
            .read_command(&principal)
            .map_err(|r| refused(&r))?;
        let Some(source) = &self.candles else {
            return Err(Status::unimplemented(
                "candles are not built on this server (`[candles] enabled = false`)",
            ));
        };
        match source.candles(request.into_inner()).await {
            Ok(r) => Ok(Response::new(r)),
            Err(CandleError::BadRequest(m)) => Err(status(ErrorCode::BadRequest, m)),
            Err(CandleError::NotFound(m)) => Err(status(ErrorCode::NotFound, m)),
            Err(CandleError::Unavailable(m)) => Err(status(ErrorCode::Unavailable, m)),
        }
    }
}

/// Runs the server on `listener` until `shutdown`.
pub(crate) async fn serve(
    listener: TcpListener,
    config: GrpcConfig,
    gateway: Arc<Gateway>,
    candles: Option<Arc<dyn CandleSource>>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), GrpcError> {
    use tonic_health::ServingStatus;

    let (health, health_service) = tonic_health::server::health_reporter();
    health
        .set_serving::<server::tickwire_server::TickwireServer<Service>>()
        .await;
    let reflection_v1 = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()
        .map_err(|e| GrpcError::Reflection(e.to_string()))?;
    // grpcurl before 1.9 and many tools still ask v1alpha.
    let reflection_v1alpha = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1alpha()
        .map_err(|e| GrpcError::Reflection(e.to_string()))?;
    // Health follows the gateway's readiness (as /readyz does): NOT_SERVING while a drain is
    // announced (`drain_delay_ms`: calls are still served, probes steer new clients away) or
    // while the cluster is unreachable, SERVING again when it comes back.
    let follower = {
        let (reporter, gateway) = (health.clone(), gateway.clone());
        tokio::spawn(async move {
            let mut serving = true;
            loop {
                tokio::time::sleep(READINESS_POLL).await;
                let ready = gateway.is_ready();
                if ready != serving {
                    serving = ready;
                    let status = if ready {
                        ServingStatus::Serving
                    } else {
                        ServingStatus::NotServing
                    };
                    reporter.set_service_status("", status).await;
                    reporter
                        .set_service_status(
                            <server::tickwire_server::TickwireServer<Service> as tonic::server::NamedService>::NAME,
                            status,
                        )
                        .await;
                }
            }
        })
    };
    let service = server::tickwire_server::TickwireServer::new(Service { gateway, candles })
        .max_decoding_message_size(config.max_message_bytes)
        .max_encoding_message_size(config.max_message_bytes);
    // The options every TCP edge sets (no Nagle, a bounded unsent backlog, so pings and
    // answers are not queued behind megabytes the kernel holds for a slow reader).
    let incoming = tonic::transport::server::TcpIncoming::from(listener).inspect(|accepted| {
        if let Ok(tcp) = accepted {
            tickwire_tls::socket::tune_accepted(tcp);
        }
    });
    let reporter = health.clone();
    let signal = async move {
        shutdown.await;
        // Probes see the drain before the listener closes.
        reporter
            .set_service_status("", ServingStatus::NotServing)
            .await;
        reporter
            .set_not_serving::<server::tickwire_server::TickwireServer<Service>>()
            .await;
    };
    let served = tonic::transport::Server::builder()
        .http2_keepalive_interval(config.keepalive_interval())
        .http2_keepalive_timeout(Some(config.keepalive_timeout()))
        .max_concurrent_streams(config.max_concurrent_streams)
        .add_service(health_service)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .add_service(service)
        .serve_with_incoming_shutdown(incoming, signal)
        .await
        .map_err(|e| GrpcError::Serve(e.to_string()));
    follower.abort();
    served
}
