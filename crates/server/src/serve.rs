use std::{net::SocketAddr, sync::atomic::Ordering, sync::Arc, time::Duration};

use axum::{
    http::header,
    response::{Html, IntoResponse},
    routing::{get, post},
    serve::ListenerExt,
    Router,
};
use tickwire_hub::{CloseReason, Hub};
use tokio::net::TcpListener;

use crate::{publish, rest, sse, ws, AppState, Config, ServerError};

const CONSOLE: &str = include_str!("../../../web/index.html");
const CONSOLE_JS: &str = include_str!("../../../web/console.js");
const CONSOLE_CSS: &str = include_str!("../../../web/console.css");
const CHARTS_JS: &str =
    include_str!("../../../web/vendor/lightweight-charts.standalone.production.js");

/// Every route of the HTTP listener.
pub fn router(st: AppState) -> Router {
    Router::new()
        .route("/", get(|| async { Html(CONSOLE) }))
        .route(
            "/favicon.ico",
            get(|| async { ([(header::CONTENT_TYPE, "image/svg+xml")], "").into_response() }),
        )
        .route(
            "/console.js",
            get(|| async {
                (
                    [(header::CONTENT_TYPE, "text/javascript; charset=utf-8")],
                    CONSOLE_JS,
                )
            }),
        )
        .route(
            "/console.css",
            get(|| async {
                (
                    [(header::CONTENT_TYPE, "text/css; charset=utf-8")],
                    CONSOLE_CSS,
                )
            }),
        )
        .route(
            "/vendor/lightweight-charts.js",
            get(|| async {
                (
                    [
                        (header::CONTENT_TYPE, "text/javascript; charset=utf-8"),
                        (header::CACHE_CONTROL, "public, max-age=86400"),
                    ],
                    CHARTS_JS,
                )
            }),
        )
        .route("/v1/publish", post(publish::publish))
        .route("/v1/ws", get(ws::upgrade))
        .route("/mqtt", get(crate::mqtt::upgrade))
        .route("/v1/sse", get(sse::sse))
        .route("/v1/history/{channel}", get(rest::history))
        .route("/v1/latest/{channel}", get(rest::latest))
        .route("/v1/namespaces", get(rest::namespaces))
        .route("/v1/channels/{namespace}", get(rest::channels))
        .route("/healthz", get(rest::healthz))
        .route("/readyz", get(rest::readyz))
        .route("/metrics", get(rest::metrics))
        .with_state(st)
}

/// A bound, not yet running server.
pub struct Server {
    pub state: AppState,
    listener: TcpListener,
    pub addr: SocketAddr,
    /// The candle driver's HTTP side (UDF, /v1/candles); `None` when candles are disabled.
    pub candles: Option<Arc<crate::candles::CandleService>>,
    /// MQTT over TCP, when `[mqtt] listen` is set; `mqtt_addr` is its bound address.
    mqtt: Option<crate::mqtt::TcpEdge>,
    pub mqtt_addr: Option<SocketAddr>,
    /// FIX initiators and acceptor; `None` when none are configured.
    pub fix: Option<Arc<crate::fix::FixService>>,
}

impl Server {
    /// Opens the hub (recovering the logs) and binds the listener.
    pub async fn bind(config: Config) -> Result<Server, ServerError> {
        let hub_cfg = config.hub_config()?;
        let hub = tokio::task::spawn_blocking(move || Hub::open(hub_cfg))
            .await
            .map_err(|e| ServerError::Config(format!("opening the hub: {e}")))??;
        let listener =
            TcpListener::bind(config.http)
                .await
                .map_err(|source| ServerError::Bind {
                    addr: config.http,
                    source,
                })?;
        let addr = listener.local_addr()?;
        let hub = Arc::new(hub);
        let candles = crate::candles::start(hub.clone(), &config.candles, config.data.clone())?;
        let mqtt = crate::mqtt::bind_tcp(&config).await?;
        let mqtt_addr = mqtt.as_ref().map(|m| m.addr);
        let fix = crate::fix::start(hub.clone(), &config.fix, &config.data).await?;
        Ok(Server {
            state: AppState::new(hub, config),
            listener,
            addr,
            candles,
            mqtt,
            mqtt_addr,
            fix,
        })
    }

    /// Serves until `shutdown` resolves, then drains: not ready, sessions told to go, writers
    /// flushed and fsynced.
    pub async fn run(
        self,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> Result<(), ServerError> {
        let st = self.state.clone();
        let drain = st.clone();
        let mut app = router(st.clone());
        if let Some(c) = &self.candles {
            app = app.merge(crate::udf::routes(c.clone()));
        }
        if let Some(f) = &self.fix {
            app = app.merge(crate::fix::routes(f.clone()));
        }
        let fix = self.fix.clone();
        let mqtt_tcp = self.mqtt.map(|m| m.spawn(st.clone()));
        let signal = async move {
            shutdown.await;
            drain.ready.store(false, Ordering::Release);
            drain.close_all(CloseReason::Shutdown);
        };
        // Without TCP_NODELAY a small WebSocket frame written while an earlier one is unacked
        // waits for the client's delayed ACK (~40 ms on Linux): that alone was the p99 of
        // every fan-out run. Frames are already coalesced per flush, so Nagle buys nothing.
        let listener = self.listener.tap_io(|tcp| {
            if let Err(e) = tcp.set_nodelay(true) {
                tracing::debug!("could not set TCP_NODELAY on a connection: {e}");
            }
        });
        let served = axum::serve(listener, app).with_graceful_shutdown(signal);
        // Long-lived streams end once their sessions close; don't wait forever for stragglers.
        let r = tokio::time::timeout(Duration::from_secs(3600 * 24 * 365), served).await;
        if let Some(f) = fix {
            f.shutdown();
        }
        if let Some(t) = mqtt_tcp {
            t.abort();
        }
        st.hub.shutdown().await;
        match r {
            Ok(r) => r.map_err(ServerError::Io),
            Err(_) => Ok(()),
        }
    }
}

/// Runs the server with `config` until SIGINT or SIGTERM.
pub async fn serve(config: Config) -> Result<(), ServerError> {
    let server = Server::bind(config.clone()).await?;
    let addr = server.addr;
    let data = std::fs::canonicalize(&config.data).unwrap_or(config.data.clone());
    println!(
        "tickwire {} listening on http://{addr}",
        env!("CARGO_PKG_VERSION")
    );
    println!("  console:   http://{addr}/");
    println!("  websocket: ws://{addr}/v1/ws");
    println!("  mqtt-ws:   ws://{addr}/mqtt");
    if let Some(m) = server.mqtt_addr {
        println!("  mqtt:      mqtt://{m}");
    }
    println!("  data:      {} (fsync {})", data.display(), config.fsync);
    if let Some(a) = server.fix.as_ref().and_then(|f| f.acceptor_addr) {
        println!("  fix:       {a} (FIX 4.4 acceptor)");
    }
    if config.api_keys.is_empty() {
        println!("  publishing is open to everyone: set api_keys to require a key");
    }
    server.run(shutdown_signal()).await
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
    tracing::info!("shutdown signal received; draining");
}
