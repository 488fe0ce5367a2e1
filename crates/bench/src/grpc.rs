//! gRPC subscribers (`--sub-encoding grpc`): Tickwire's `Subscribe` call, one HTTP/2
//! connection per client like one WebSocket per client, through the server's own generated
//! client. The bench quote (its `t` and `s` fields have no typed form) arrives as a `Push`
//! whose payload is the published JSON, byte for byte: the same bytes the WebSocket rows
//! parse, so every encoding is timed and counted alike.

use std::{net::SocketAddr, time::Duration};

use tickwire_edge_grpc::client::tickwire_client::TickwireClient;
use tickwire_proto::v1::{
    payload::Kind as PayloadKind, server_message::Kind, ServerMessage, SubscribeRequest,
    Subscription,
};
use tonic::{transport::Channel, Streaming};

use crate::{
    error::{BenchError, Result},
    proto::{channel, CLIENT_CREDENTIAL},
    Target,
};

const NAME: &str = "tickwire-grpc";

/// One client's Subscribe call.
pub struct GrpcSub {
    stream: Streaming<ServerMessage>,
}

impl GrpcSub {
    /// Connects to the gRPC listener at `addr` and subscribes to `symbols`' quote channels;
    /// returns once the server confirmed every subscription.
    pub async fn subscribe(addr: SocketAddr, symbols: &[usize]) -> Result<GrpcSub> {
        let endpoint = Channel::from_shared(format!("http://{addr}"))
            .map_err(|e| BenchError::proto(NAME, e.to_string()))?
            .connect_timeout(Duration::from_secs(10));
        let ch = endpoint
            .connect()
            .await
            .map_err(|e| BenchError::proto(NAME, format!("connect {addr}: {e}")))?;
        let mut client = TickwireClient::new(ch);
        let mut req = tonic::Request::new(SubscribeRequest {
            subscriptions: symbols
                .iter()
                .map(|&s| Subscription {
                    channel: channel(Target::TickwireWs, s),
                    ..Default::default()
                })
                .collect(),
        });
        if let Ok(token) = std::env::var(CLIENT_CREDENTIAL) {
            if !token.is_empty() {
                let v = format!("Bearer {token}").parse().map_err(|_| {
                    BenchError::Usage(format!("{CLIENT_CREDENTIAL} is not a header value"))
                })?;
                req.metadata_mut().insert("authorization", v);
            }
        }
        let mut stream = client
            .subscribe(req)
            .await
            .map_err(|s| BenchError::proto(NAME, format!("subscribe refused: {s}")))?
            .into_inner();
        let mut confirmed = 0;
        while confirmed < symbols.len() {
            match stream.message().await {
                Ok(Some(ServerMessage {
                    kind: Some(Kind::Subscribed(_)),
                })) => confirmed += 1,
                Ok(Some(_)) => {}
                Ok(None) => {
                    return Err(BenchError::proto(NAME, "the call ended while subscribing"))
                }
                Err(s) => return Err(BenchError::proto(NAME, s.to_string())),
            }
        }
        Ok(GrpcSub { stream })
    }

    /// Waits for the next message and hands its JSON payload to `f` (pushes only); false when
    /// the call ended.
    pub async fn read_some(&mut self, f: &mut impl FnMut(&[u8])) -> Result<bool> {
        match self.stream.message().await {
            Ok(Some(m)) => {
                if let Some(Kind::Push(p)) = m.kind {
                    if let Some(PayloadKind::Json(json)) = p.payload.and_then(|p| p.kind) {
                        f(&json);
                    }
                }
                Ok(true)
            }
            Ok(None) => Ok(false),
            Err(s) => Err(BenchError::proto(NAME, s.to_string())),
        }
    }
}
