//! Where MQTT connections come from: a TCP listener (`[mqtt] listen`) and `GET /mqtt` on the
//! HTTP port (WebSocket, subprotocol `mqtt`).

use std::{net::SocketAddr, sync::Arc, time::Duration};

use axum::{
    extract::{State, WebSocketUpgrade},
    response::Response,
};
use tokio::net::TcpListener;

use super::{
    session::{run, Transport},
    Broker,
};
use crate::{AppState, Config, ServerError};

/// A bound MQTT-over-TCP listener, started by [`TcpEdge::spawn`].
pub struct TcpEdge {
    listener: TcpListener,
    /// The bound address (the real port when `listen` asked for port 0).
    pub addr: SocketAddr,
}

/// Binds `[mqtt] listen` if configured.
pub async fn bind_tcp(config: &Config) -> Result<Option<TcpEdge>, ServerError> {
    let Some(addr) = config.mqtt.listen else {
        return Ok(None);
    };
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|source| ServerError::Bind { addr, source })?;
    let addr = listener.local_addr()?;
    Ok(Some(TcpEdge { listener, addr }))
}

impl TcpEdge {
    /// Accepts connections until the returned task is aborted (at shutdown; live connections
    /// end when shutdown closes their hub sessions).
    pub fn spawn(self, st: AppState) -> tokio::task::JoinHandle<()> {
        let broker = st.mqtt.clone();
        sweep(&broker);
        tokio::spawn(async move {
            loop {
                match self.listener.accept().await {
                    Ok((stream, _peer)) => {
                        let _ = stream.set_nodelay(true);
                        tokio::spawn(run(st.clone(), broker.clone(), Transport::Tcp(stream)));
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

/// Removes expired sessions in the background (they are also checked on every load).
fn sweep(broker: &Arc<Broker>) {
    let b = broker.clone();
    tokio::task::spawn_blocking(move || match b.store.sweep() {
        Ok(0) => {}
        Ok(n) => tracing::info!(removed = n, "expired MQTT sessions removed"),
        Err(e) => tracing::warn!(error = %e, "sweeping MQTT sessions failed"),
    });
}

/// `GET /mqtt`: MQTT over WebSocket. Clients offer the `mqtt` subprotocol (paho, mqtt.js);
/// it is echoed back when offered.
pub async fn upgrade(State(st): State<AppState>, ws: WebSocketUpgrade) -> Response {
    let max = st.config.mqtt.max_packet() * 2 + 1024;
    let b = st.mqtt.clone();
    ws.protocols(["mqtt"])
        .max_message_size(max)
        .max_frame_size(max)
        .on_upgrade(move |socket| run(st, b, Transport::Ws(Box::new(socket))))
}
