//! Startup and shutdown of one server: what is opened in which order, and closed in reverse.

use std::{net::SocketAddr, sync::Arc, time::Duration};

use tickwire_edge_fix::FixService;
use tickwire_edge_mqtt::{MqttEdge, TcpEdge};
use tickwire_gateway::Gateway;
use tickwire_hub::Hub;
use tickwire_model::DataDir;
use tickwire_proj_book::BookService;
use tickwire_proj_candles::CandleService;
use tickwire_proj_chat::ChatService;
use tickwire_proj_search::SearchIndexService;
use tickwire_stream::{
    embedded::{Embedded, EmbeddedConfig},
    Backend,
};
use tickwire_stream_nats::{Cluster, NatsBackend};
use tickwire_tls::CertStore;
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
    /// Edits, deletes and read markers; `None` without namespaces that use them.
    pub chat: Option<Arc<ChatService>>,
    /// The full-text index; `None` without searchable namespaces.
    pub search: Option<Arc<SearchIndexService>>,
    mqtt: Arc<MqttEdge>,
    /// MQTT over TCP, when `[mqtt] listen` is set; `mqtt_addr` is its bound address.
    mqtt_tcp: Option<TcpEdge>,
    pub mqtt_addr: Option<SocketAddr>,
    /// MQTT over TLS, when `[mqtt] tls_listen` is set; `mqtt_tls_addr` is its bound address.
    mqtt_tls: Option<TcpEdge>,
    pub mqtt_tls_addr: Option<SocketAddr>,
    /// Every listener's certificate, reloaded on SIGHUP.
    certs: Arc<CertStore>,
    /// The HTTP listener's TLS (HTTPS, WSS), when `[tls]` names a certificate.
    http_tls: Option<tickwire_tls::Acceptor>,
    /// Refreshes `[auth] jwks_url` in the background.
    jwks: Option<tokio::task::JoinHandle<()>>,
    /// Reloads the certificates on SIGHUP. Installed in `bind`, before the banner is printed:
    /// a SIGHUP sent as soon as the server says it is up must not end it.
    reload: Option<tokio::task::JoinHandle<()>>,
    /// FIX initiators and acceptor; `None` when none are configured.
    pub fix: Option<Arc<FixService>>,
    /// gRPC, when `[grpc] listen` is set; `grpc_addr` is its bound address.
    grpc: Option<tickwire_edge_grpc::GrpcEdge>,
    pub grpc_addr: Option<SocketAddr>,
    /// The HTTP listener's limits, fitted to the open-file limit, and its counters.
    limits: Limits,
    listener_stats: Arc<ListenerStats>,
    /// The NATS cluster in cluster mode.
    pub cluster: Option<Arc<Cluster>>,
}

impl Server {
    /// Opens the streams and the hub (recovering them), starts the projections and binds the
    /// listeners.
    pub async fn bind(config: Config) -> Result<Server, ServerError> {
        let hub_cfg = config.hub_config()?;
        let data = DataDir::new(&config.data);
        let backend_dir = data.clone();
        let cluster_cfg = config.cluster.clone();
        let (hub, cluster) = tokio::task::spawn_blocking(move || {
            let embedded = Embedded::open(
                backend_dir,
                EmbeddedConfig {
                    segment_bytes: hub_cfg.segment_bytes,
                },
            )?;
            // Cluster mode: shared namespaces in JetStream, derived ones in the embedded log.
            let (backend, cluster): (Arc<dyn Backend>, _) = match cluster_cfg {
                None => (Arc::new(embedded), None),
                Some(c) => {
                    let cluster = Cluster::connect(c)?;
                    (
                        Arc::new(NatsBackend::new(cluster.clone(), embedded)),
                        Some(cluster),
                    )
                }
            };
            let hub = Hub::open_with(hub_cfg, backend)?;
            Ok::<_, ServerError>((hub, cluster))
        })
        .await
        .map_err(|e| ServerError::Config(format!("opening the hub: {e}")))??;
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
        // Before any listener serves: a token signed by the provider's keys must verify from
        // the first connection on.
        if let Some(tracer) = tickwire_otel::Tracer::start(&config.tracing)
            .map_err(|e| ServerError::Config(e.to_string()))?
        {
            let stats = tracer.stats().clone();
            gateway
                .metrics()
                .add_source(Box::new(move |out| stats.render(out)));
            gateway.set_tracer(tracer);
        }
        let jwks = tickwire_gateway::jwks::start(&gateway)
            .await
            .map_err(ServerError::Config)?;
        let candles = tickwire_proj_candles::start(hub.clone(), &config.candles, &data)?;
        let books = tickwire_proj_book::start(hub.clone(), &data, config.books_config())?;
        let chat = tickwire_proj_chat::start(hub.clone(), &data)?;
        if let Some(c) = &chat {
            gateway.set_amendments(c.state.clone());
            if hub.namespace_spec(tickwire_model::MARKERS).is_some() {
                gateway.set_markers(c.state.clone());
            }
        }
        let search = tickwire_proj_search::start(hub.clone(), &data)?;
        if let Some(s) = &search {
            gateway.set_search(s.state.clone());
        }
        // One store for every listener's certificate, so one SIGHUP reloads them all.
        let certs = CertStore::new(config.tls.handshake_timeout());
        let shared = match config.tls.pair()? {
            Some((cert, key)) => Some(certs.load(cert, key)?),
            None => None,
        };
        let http_tls = match &shared {
            // HTTP/1.1 is all the listener speaks; saying so lets a client that offers h2
            // settle at once.
            Some(c) if config.tls.http => Some(certs.acceptor(c, "http", &[b"http/1.1"])?),
            _ => None,
        };
        // Cluster mode: who is in a channel counts every node's users (KV buckets), before
        // any connection joins one.
        if let Some(c) = &cluster {
            let ttl = Duration::from_secs(c.config().presence_ttl_secs);
            gateway
                .share_presence(c.kv(), ttl)
                .await
                .map_err(ServerError::Config)?;
        }
        // Cluster mode: persistent MQTT sessions in a KV bucket every node reads.
        let mqtt_sessions = match &cluster {
            Some(c) => {
                let kv = c.kv();
                let holder = kv.holder().to_string();
                let bucket = tokio::task::spawn_blocking(move || kv.bucket("mqtt_sessions", None))
                    .await
                    .map_err(|e| ServerError::Config(format!("mqtt sessions: {e}")))?
                    .map_err(|e| {
                        ServerError::Config(format!(
                            "mqtt sessions: opening their KV bucket in the cluster: {e}"
                        ))
                    })?;
                Some((bucket, holder))
            }
            None => None,
        };
        let mqtt =
            MqttEdge::with_sessions(gateway.clone(), config.mqtt.clone(), &data, mqtt_sessions);
        let mqtt_tcp = tickwire_edge_mqtt::bind_tcp(&config.mqtt).await?;
        let mqtt_addr = mqtt_tcp.as_ref().map(|m| m.addr);
        let mqtt_tls = match config.mqtt.tls_listen {
            Some(addr) => {
                let cert = match config.mqtt.tls_pair()? {
                    Some((cert, key)) => certs.load(cert, key)?,
                    None => shared.clone().ok_or_else(|| {
                        ServerError::Config(
                            "[mqtt] tls_listen needs [tls] cert_file and key_file, or \
                             [mqtt] tls_cert_file and tls_key_file"
                                .into(),
                        )
                    })?,
                };
                let acceptor = certs.acceptor(&cert, "mqtt", &[])?;
                Some(tickwire_edge_mqtt::bind_tls(addr, acceptor).await?)
            }
            None => None,
        };
        let mqtt_tls_addr = mqtt_tls.as_ref().map(|m| m.addr);
        let fix_tls = match (&shared, config.fix.acceptor.as_ref().is_some_and(|a| a.tls)) {
            (Some(c), true) => Some(certs.acceptor(c, "fix", &[])?),
            _ => None,
        };
        let fix = tickwire_edge_fix::start(
            gateway.clone(),
            &config.fix,
            &data,
            cluster.as_ref().map(|c| c.kv()),
            fix_tls,
        )
        .await?;
        let grpc = tickwire_edge_grpc::bind(&config.grpc).await?;
        let grpc_addr = grpc.as_ref().map(|g| g.addr);
        let mut runners = Vec::new();
        runners.extend(candles.as_ref().and_then(|c| c.runner_stats()));
        runners.extend(books.as_ref().map(|b| b.runner_stats.clone()));
        runners.extend(chat.as_ref().map(|c| c.runner_stats.clone()));
        runners.extend(search.as_ref().map(|s| s.runner_stats.clone()));
        let metrics_hub = hub.clone();
        gateway.metrics().add_source(Box::new(move |out| {
            tickwire_projection::metrics::render(&metrics_hub, &runners, out);
        }));
        gateway
            .metrics()
            .add_source(Box::new(crate::metrics::render_build_info));
        gateway
            .metrics()
            .add_source(Box::new(crate::metrics::render_process));
        if let Some(stats) = candles.as_ref().map(|c| c.stats.clone()) {
            gateway.metrics().add_source(Box::new(move |out| {
                crate::metrics::render_candles(&stats, out)
            }));
        }
        {
            let m = mqtt.clone();
            gateway
                .metrics()
                .add_source(Box::new(move |out| m.render_metrics(out)));
        }
        if let Some(f) = fix.clone() {
            gateway
                .metrics()
                .add_source(Box::new(move |out| f.render_metrics(out)));
        }
        let listener_stats = Arc::new(ListenerStats::default());
        let stats = listener_stats.clone();
        gateway
            .metrics()
            .add_source(Box::new(move |out| stats.render(out)));
        if !certs.is_empty() {
            let c = certs.clone();
            gateway
                .metrics()
                .add_source(Box::new(move |out| c.render(out)));
        }
        let reload = reload_on_sighup(certs.clone());
        Ok(Server {
            gateway,
            config,
            listener,
            addr,
            candles,
            books,
            chat,
            search,
            mqtt,
            mqtt_tcp,
            mqtt_addr,
            mqtt_tls,
            mqtt_tls_addr,
            certs,
            http_tls,
            jwks,
            reload,
            fix,
            grpc,
            grpc_addr,
            limits,
            listener_stats,
            cluster,
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
        app = app.merge(crate::backup::routes(crate::backup::BackupService::new(
            self.gateway.clone(),
            DataDir::new(&self.config.data),
            self.candles.clone(),
        )));
        // Every route, UDF and the candle API included: a charting page on another origin
        // reads them when the operator lists it.
        if let Some(cors) = tickwire_edge_http::cors_layer(&self.config.http.cors_allowed_origins) {
            app = app.layer(cors);
        }
        let mqtt_sweep = Some(self.mqtt.spawn_sweeper());
        let mqtt_tcp = self.mqtt_tcp.map(|m| m.spawn(self.mqtt.clone()));
        let mqtt_tls = self.mqtt_tls.map(|m| m.spawn(self.mqtt.clone()));
        let (grpc_stop, mut grpc_stopped) = tokio::sync::watch::channel(false);
        let grpc = self.grpc.map(|g| {
            let candles = self.candles.clone().map(|c| {
                Arc::new(crate::grpc::Candles(c)) as Arc<dyn tickwire_edge_grpc::CandleSource>
            });
            g.spawn(self.gateway.clone(), candles, async move {
                let _ = grpc_stopped.wait_for(|stop| *stop).await;
            })
        });
        let drain = self.gateway.clone();
        let delay = Duration::from_millis(self.config.drain_delay_ms);
        let signal = async move {
            shutdown.await;
            if !delay.is_zero() {
                // Load balancers see /readyz fail and stop sending new clients while this
                // server still serves the ones on their way; then everyone is told to go.
                drain.announce_drain();
                tracing::info!(
                    delay_ms = delay.as_millis() as u64,
                    "not ready; draining after drain_delay_ms"
                );
                tokio::time::sleep(delay).await;
            }
            drain.shutdown();
            let _ = grpc_stop.send(true);
        };
        let served = listener::serve(
            self.listener,
            app,
            self.limits,
            self.listener_stats.clone(),
            self.http_tls.clone(),
            signal,
        );
        // Long-lived streams end once their sessions close; don't wait forever for stragglers.
        let r = tokio::time::timeout(Duration::from_secs(3600 * 24 * 365), served).await;
        if let Some(f) = &self.fix {
            f.shutdown();
        }
        for t in [mqtt_sweep, mqtt_tcp, mqtt_tls, self.reload, self.jwks]
            .into_iter()
            .flatten()
        {
            t.abort();
        }
        // Its calls end as the drain closes their sessions; one that does not is cut.
        if let Some(g) = grpc {
            let abort = g.abort_handle();
            if tokio::time::timeout(Duration::from_secs(5), g)
                .await
                .is_err()
            {
                abort.abort();
            }
        }
        // Projections stop before the hub: their last derived output and checkpoint go in.
        let (candles, books, chat) = (self.candles.clone(), self.books.clone(), self.chat.clone());
        let search = self.search.clone();
        let _ = tokio::task::spawn_blocking(move || {
            if let Some(s) = search {
                s.stop();
            }
            if let Some(c) = candles {
                c.stop();
            }
            if let Some(b) = books {
                b.stop();
            }
            if let Some(c) = chat {
                c.stop();
            }
        })
        .await;
        self.gateway.hub().shutdown().await;
        // Last: the traces of the publishes the drain answered go out too.
        self.gateway.flush_traces().await;
        match r {
            Ok(r) => r.map_err(ServerError::Io),
            Err(_) => Ok(()),
        }
    }
}

/// Reloads every certificate on SIGHUP (a failed reload keeps the old one and logs why).
/// Installed whether or not TLS is on, so `kill -HUP` (`systemctl reload`) never ends the
/// server.
fn reload_on_sighup(certs: Arc<CertStore>) -> Option<tokio::task::JoinHandle<()>> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let mut hup = match signal(SignalKind::hangup()) {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!("cannot listen for SIGHUP (certificate reloads): {e}");
                return None;
            }
        };
        Some(tokio::spawn(async move {
            while hup.recv().await.is_some() {
                if certs.is_empty() {
                    tracing::info!("SIGHUP: no TLS certificate to reload");
                    continue;
                }
                let c = certs.clone();
                // Reading files is blocking I/O; a reload is rare, so one blocking task.
                let _ = tokio::task::spawn_blocking(move || c.reload()).await;
            }
        }))
    }
    #[cfg(not(unix))]
    {
        let _ = certs;
        None
    }
}

/// Runs the server with `config` until SIGINT or SIGTERM.
pub async fn serve(config: Config) -> Result<(), ServerError> {
    let server = Server::bind(config.clone()).await?;
    let addr = server.addr;
    let data = std::fs::canonicalize(&config.data).unwrap_or(config.data.clone());
    let (http, ws) = if server.http_tls.is_some() {
        ("https", "wss")
    } else {
        ("http", "ws")
    };
    println!(
        "tickwire {} listening on {http}://{addr}",
        env!("CARGO_PKG_VERSION")
    );
    println!("  console:   {http}://{addr}/");
    println!("  websocket: {ws}://{addr}/v1/ws");
    println!("  mqtt-ws:   {ws}://{addr}/mqtt");
    if let Some(m) = server.mqtt_addr {
        println!("  mqtt:      mqtt://{m}");
    }
    if let Some(m) = server.mqtt_tls_addr {
        println!("  mqtts:     mqtts://{m}");
    }
    if let Some(a) = server.fix.as_ref().and_then(|f| f.acceptor_addr) {
        let tls = config.fix.acceptor.as_ref().is_some_and(|a| a.tls);
        println!(
            "  fix:       {a} (FIX 4.4 acceptor{})",
            if tls { ", TLS" } else { "" }
        );
    }
    for c in server.certs.certificates() {
        println!(
            "  tls:       {} (sha256 {}; SIGHUP reloads)",
            c.cert_file().display(),
            c.fingerprint()
        );
    }
    if let Some(g) = server.grpc_addr {
        println!("  grpc:      {g}");
    }
    if let Some(c) = &server.cluster {
        println!(
            "  cluster:   node {} over NATS {} (replicas {})",
            c.node(),
            c.config().nats.join(","),
            c.config().replicas
        );
    }
    // Last of the addresses: tools that read the banner stop at this line.
    println!("  data:      {} (fsync {})", data.display(), config.fsync);
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
