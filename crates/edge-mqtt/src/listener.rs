//! Where MQTT connections come from: a TCP listener (`[mqtt] listen`), a TLS listener
//! (`[mqtt] tls_listen`) and `GET /mqtt` on the HTTP port (WebSocket, subprotocol `mqtt`; WSS
//! when the HTTP listener speaks TLS).

use std::{net::SocketAddr, sync::Arc, time::Duration};

use axum::{
    extract::{State, WebSocketUpgrade},
    response::Response,
    routing::get,
    Router,
};
use tickwire_tls::Stream;
use tokio::net::TcpListener;

use crate::{
    driver::{run, Transport},
    MqttEdge,
};

/// A bound MQTT-over-TCP listener (plain or TLS), started by [`TcpEdge::spawn`].
pub struct TcpEdge {
    listener: TcpListener,
    /// The bound address (the real port when `listen` asked for port 0).
    pub addr: SocketAddr,
    tls: Option<tickwire_tls::Acceptor>,
}

/// Binds `[mqtt] listen` if configured.
pub async fn bind_tcp(config: &crate::MqttConfig) -> std::io::Result<Option<TcpEdge>> {
    let Some(addr) = config.listen else {
        return Ok(None);
    };
    let listener = TcpListener::bind(addr).await.map_err(|e| {
        std::io::Error::new(e.kind(), format!("cannot listen on {addr} (mqtt): {e}"))
    })?;
    let addr = listener.local_addr()?;
    Ok(Some(TcpEdge {
        listener,
        addr,
        tls: None,
    }))
}

/// Binds the MQTT-over-TLS listener at `addr`; each connection is handshaken by `tls`.
pub async fn bind_tls(addr: SocketAddr, tls: tickwire_tls::Acceptor) -> std::io::Result<TcpEdge> {
    let listener = TcpListener::bind(addr).await.map_err(|e| {
        std::io::Error::new(e.kind(), format!("cannot listen on {addr} (mqtt tls): {e}"))
    })?;
    let addr = listener.local_addr()?;
    Ok(TcpEdge {
        listener,
        addr,
        tls: Some(tls),
    })
}

impl TcpEdge {
    /// Accepts connections until the returned task is aborted (at shutdown; live connections
    /// end when shutdown closes their hub sessions).
    pub fn spawn(self, edge: Arc<MqttEdge>) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move {
            loop {
                match self.listener.accept().await {
                    Ok((stream, peer)) => {
                        tickwire_tls::socket::tune_accepted(&stream);
                        let edge = edge.clone();
                        let tls = self.tls.clone();
                        // The handshake runs in the connection's task, bounded by the
                        // handshake timeout: a stalled client never holds up accept.
                        let io = async move {
                            match tls {
                                None => Some(Transport::Tcp(Stream::Plain(stream))),
                                Some(tls) => match tls.accept(stream).await {
                                    Ok(s) => Some(Transport::Tcp(Stream::from(s))),
                                    Err(e) => {
                                        tracing::debug!(%peer, "MQTT TLS handshake failed: {e}");
                                        None
                                    }
                                },
                            }
                        };
                        tokio::spawn(run(edge, io, Some(peer.ip())));
                    }
                    Err(e) => {
                        // Out of file descriptors and similar: back off instead of spinning.
                        tracing::warn!(error = %e, "MQTT accept failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                }
            }
        })
    }
}

/// How often expired sessions of clients that did not come back are removed, after the
/// sweep at start: files are small, but a deployment of short-lived client ids would
/// otherwise keep every one of them until the next restart.
const SWEEP_EVERY: Duration = Duration::from_secs(3600);

impl MqttEdge {
    /// Removes expired sessions in the background (they are also checked on every load): at
    /// once, as the server starts serving, and every [`SWEEP_EVERY`] until the returned task
    /// is aborted (at shutdown). Whatever the edge listens on: the default configuration
    /// serves MQTT over WebSocket only, and swept nothing when the sweep came with the TCP
    /// listener.
    pub fn spawn_sweeper(self: &Arc<Self>) -> tokio::task::JoinHandle<()> {
        let (b, gateway) = (self.broker.clone(), self.gateway.clone());
        tokio::spawn(async move {
            let mut sweeps = tokio::time::interval(SWEEP_EVERY);
            loop {
                sweeps.tick().await;
                let (b, gateway) = (b.clone(), gateway.clone());
                // Cluster mode: which cluster processes are alive, for the sessions saved
                // while connected to one that is gone (a crashed node's clients).
                let alive = move || match gateway.live_holders()? {
                    Ok(holders) => Some(holders),
                    Err(e) => {
                        tracing::warn!(error = %e, "MQTT session sweep: cannot list the live cluster nodes; their sessions stay until the next sweep");
                        None
                    }
                };
                let swept =
                    tokio::task::spawn_blocking(move || b.store.sweep(|id| b.is_live(id), alive))
                        .await
                        .map_err(std::io::Error::other)
                        .and_then(|swept| swept);
                match swept {
                    Ok(0) => {}
                    Ok(n) => tracing::info!(removed = n, "expired MQTT sessions removed"),
                    Err(e) => tracing::warn!(error = %e, "sweeping MQTT sessions failed"),
                }
            }
        })
    }
}

pub(crate) fn routes(edge: Arc<MqttEdge>) -> Router {
    Router::new().route("/mqtt", get(upgrade)).with_state(edge)
}

/// `GET /mqtt`: MQTT over WebSocket. Clients offer the `mqtt` subprotocol (paho, mqtt.js);
/// it is echoed back when offered.
async fn upgrade(
    State(edge): State<Arc<MqttEdge>>,
    peer: Option<axum::Extension<tickwire_gateway::PeerAddr>>,
    ws: WebSocketUpgrade,
) -> Response {
    let ip = peer.map(|p| p.0 .0.ip());
    let max = edge.config.max_packet() * 2 + 1024;
    // The WebSocket layer's read buffer lives as long as the connection; its default
    // (128 KiB) made every browser MQTT client cost ~130 KB of server memory. 4 KiB is one
    // socket read of MQTT packets; a larger packet still grows it.
    ws.protocols(["mqtt"])
        .max_message_size(max)
        .max_frame_size(max)
        .read_buffer_size(4 * 1024)
        .on_upgrade(move |socket| {
            run(
                edge,
                std::future::ready(Some(Transport::Ws(Box::new(socket)))),
                ip,
            )
        })
}
