//! Startup and shutdown of one server: what is opened in which order, and closed in reverse.

use std::{net::SocketAddr, sync::Arc, time::Duration};

use tickwire_edge_fix::FixService;
use tickwire_edge_mqtt::{MqttEdge, TcpEdge};
use tickwire_gateway::Gateway;
use tickwire_hub::Hub;
use tickwire_model::DataDir;
use tickwire_proj_book::BookService;
use tickwire_proj_candles::CandleService;
use tickwire_stream::embedded::{Embedded, EmbeddedConfig};
use tokio::net::TcpListener;

use crate::{
    listener::{self, Limits, ListenerStats},
    Config, ServerError,
};

/// A bound, not yet running server.
pub struct Server {
    pub gateway: Arc<Gateway>,
    pub config: Config,
    listener: TcpListener,
    pub addr: SocketAddr,
    /// The candle projection and its HTTP side (UDF, /v1/candles); `None` when disabled.
    pub candles: Option<Arc<CandleService>>,
    /// The book projection; `None` without `depth` and `book` namespaces.
    pub books: Option<Arc<BookService>>,
    mqtt: Arc<MqttEdge>,
    /// MQTT over TCP, when `[mqtt] listen` is set; `mqtt_addr` is its bound address.
    mqtt_tcp: Option<TcpEdge>,
    pub mqtt_addr: Option<SocketAddr>,
    /// FIX initiators and acceptor; `None` when none are configured.
    pub fix: Option<Arc<FixService>>,
    /// The HTTP listener's limits, fitted to the open-file limit, and its counters.
    limits: Limits,
    listener_stats: Arc<ListenerStats>,
}

impl Server {
    /// Opens the streams and the hub (recovering them), starts the projections and binds the
    /// listeners.
    pub async fn bind(config: Config) -> Result<Server, ServerError> {
        let hub_cfg = config.hub_config()?;
        let data = DataDir::new(&config.data);
        let backend_dir = data.clone();
        let hub = tokio::task::spawn_blocking(move || {
            let backend = Embedded::open(
                backend_dir,
                EmbeddedConfig {
                    segment_bytes: hub_cfg.segment_bytes,
                },
            )?;
            Hub::open_with(hub_cfg, Arc::new(backend)).map_err(ServerError::from)
        })
        .await
        .map_err(|e| ServerError::Config(format!("opening the hub: {e}")))?
        .map_err(|e| match e {
            ServerError::Hub(h) => ServerError::Hub(h),
            other => other,
        })?;
        // Before anything opens a file: every connection is a descriptor.
        let open_files = listener::raise_open_file_limit();
        let limits = Limits {
            header_timeout: config.http.header_timeout(),
            idle_timeout: config.http.idle_timeout(),
            max_pending: listener::pending_limit(config.http.max_pending_connections, open_files),
        };
        let listener = TcpListener::bind(config.http.listen)
            .await
            .map_err(|source| ServerError::Bind {
                addr: config.http.listen,
                source,
            })?;
        let addr = listener.local_addr()?;
        let hub = Arc::new(hub);
        let gateway =
            Gateway::new(hub.clone(), config.gateway_config()).map_err(ServerError::Config)?;
        let candles = tickwire_proj_candles::start(hub.clone(), &config.candles, &data)?;
        let books = tickwire_proj_book::start(hub.clone(), &data, config.books_config())?;
        let mqtt = MqttEdge::new(gateway.clone(), config.mqtt.clone(), &data);
        let mqtt_tcp = tickwire_edge_mqtt::bind_tcp(&config.mqtt).await?;
        let mqtt_addr = mqtt_tcp.as_ref().map(|m| m.addr);
        let fix = tickwire_edge_fix::start(gateway.clone(), &config.fix, &data).await?;
        let mut runners = Vec::new();
        runners.extend(candles.as_ref().and_then(|c| c.runner_stats()));
        runners.extend(books.as_ref().map(|b| b.runner_stats.clone()));
        let metrics_hub = hub.clone();
        gateway.metrics().add_source(Box::new(move |out| {
            tickwire_projection::metrics::render(&metrics_hub, &runners, out);
        }));
        let listener_stats = Arc::new(ListenerStats::default());
        let stats = listener_stats.clone();
        gateway
            .metrics()
            .add_source(Box::new(move |out| stats.render(out)));
        Ok(Server {
            gateway,
            config,
            listener,
            addr,
            candles,
            books,
            mqtt,
            mqtt_tcp,
            mqtt_addr,
            fix,
            limits,
            listener_stats,
        })
    }

    /// Serves until `shutdown` resolves, then drains: not ready, connections told to go,
    /// projections checkpointed, writers flushed and fsynced.
    pub async fn run(
        self,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> Result<(), ServerError> {
        let http = self.config.http_config();
        // MQTT over WebSocket is a browser transport too: the same Origin rule as /v1/ws.
        let mqtt_ws = self
            .mqtt
            .routes()
            .route_layer(axum::middleware::from_fn_with_state(
                std::sync::Arc::new(http.origins.clone()),
                tickwire_edge_http::hardening::origin_guard,
            ));
        let mut app = tickwire_edge_http::routes(self.gateway.clone(), http).merge(mqtt_ws);
        if let Some(c) = &self.candles {
            app = app.merge(tickwire_proj_candles::routes(c.clone()));
        }
        if let Some(f) = &self.fix {
            app = app.merge(tickwire_edge_fix::routes(f.clone()));
        }
        // Every route, UDF and the candle API included: a charting page on another origin
        // reads them when the operator lists it.
        if let Some(cors) = tickwire_edge_http::cors_layer(&self.config.http.cors_allowed_origins) {
            app = app.layer(cors);
        }
        let mqtt_tcp = self.mqtt_tcp.map(|m| m.spawn(self.mqtt.clone()));
        let drain = self.gateway.clone();
        let signal = async move {
            shutdown.await;
            drain.shutdown();
        };
        let served = listener::serve(
            self.listener,
            app,
            self.limits,
            self.listener_stats.clone(),
            signal,
        );
        // Long-lived streams end once their sessions close; don't wait forever for stragglers.
        let r = tokio::time::timeout(Duration::from_secs(3600 * 24 * 365), served).await;
        if let Some(f) = &self.fix {
            f.shutdown();
        }
        if let Some(t) = mqtt_tcp {
            t.abort();
        }
        // Projections stop before the hub: their last derived output and checkpoint go in.
        let (candles, books) = (self.candles.clone(), self.books.clone());
        let _ = tokio::task::spawn_blocking(move || {
            if let Some(c) = candles {
                c.stop();
            }
            if let Some(b) = books {
                b.stop();
            }
        })
        .await;
        self.gateway.hub().shutdown().await;
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
    if !config.gateway_config().auth.enabled() {
        println!("  development mode: no [auth] configured, every client may read and publish everything (docs/security.md)");
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
