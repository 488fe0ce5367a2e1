//! The gateway: the one place every edge (HTTP publish and REST, WebSocket, SSE, MQTT, the FIX
//! acceptor, later gRPC) goes through to reach the hub.
//!
//! - **Who**: [`Gateway::authenticate`] turns what a client presented ([`Credentials`]) into a
//!   [`Principal`]; a bad credential is refused here, the same way for every edge.
//! - **What it may do**: [`Gateway::can_publish`], [`Gateway::can_subscribe`].
//! - **Connections**: [`Gateway::connect`] takes a connection permit (one limit across edges),
//!   opens a hub session, registers it for shutdown and kicks, and counts it per edge; the
//!   returned [`Connection`] gives all of that back when dropped.
//! - **Refusals**: every refused request is a [`Refusal`], mapped to each wire's error in one
//!   table ([`Refusal::http_status`], [`Refusal::mqtt_reason`], the WebSocket code itself).
//! - **Publishing** through a connection never waits for one acknowledgement before taking the
//!   next command: [`Connection::enqueue`] hands a batch to its namespace writer and returns
//!   the acknowledgements as a future the edge keeps in a window, answering in order.
//!
//! Edges stay thin: they decode their wire into these calls and encode the results.

pub mod deadline;
mod metrics;
mod refusal;

use std::{
    collections::HashMap,
    future::Future,
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc,
    },
    time::Duration,
};

use parking_lot::Mutex;
use tickwire_hub::{
    Ack, Channel, Checked, CloseReason, Delivery, Epoch, Hub, HubError, Offset, Pattern,
    PublishRequest, Session, SessionCloser, SubscribeInfo,
};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

pub use metrics::{EdgeCounters, Metrics, MetricsSource};
pub use refusal::Refusal;
pub use tickwire_wire::ErrorCode;

/// The name an edge is counted and logged under (`websocket`, `sse`, `mqtt`, ...). Edges
/// declare their own; the gateway does not enumerate them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Edge(pub &'static str);

/// The gateway's settings (from the server configuration).
#[derive(Debug, Clone)]
pub struct GatewayConfig {
    /// API keys allowed to publish to any namespace. Empty: publishing is open to everyone
    /// (development only).
    pub api_keys: Vec<String>,
    /// Concurrent long-lived connections across every edge.
    pub max_connections: usize,
    /// A client that does not take a write within this long is disconnected.
    pub write_timeout: Duration,
}

impl Default for GatewayConfig {
    fn default() -> Self {
        GatewayConfig {
            api_keys: Vec::new(),
            max_connections: 100_000,
            write_timeout: Duration::from_secs(10),
        }
    }
}

/// What a client presented to prove who it is.
#[derive(Debug, Clone, Copy, Default)]
pub struct Credentials<'a> {
    /// An API key (`Authorization: Bearer`, `?api_key=`, the MQTT password).
    pub api_key: Option<&'a str>,
}

/// Who a connection or request is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Principal {
    /// Presented nothing.
    Anonymous,
    /// Holds a configured API key: may publish to any namespace.
    ApiKey,
    /// No API keys are configured: everyone is trusted to publish (development mode).
    Open,
}

impl Principal {
    /// May publish to any namespace (a key holder, or anyone when no keys are configured).
    pub fn is_publisher(&self) -> bool {
        matches!(self, Principal::ApiKey | Principal::Open)
    }
}

/// Compares two byte strings in time that depends only on their lengths, so a wrong key's
/// answer time says nothing about how much of it matched.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

struct Registered {
    edge: Edge,
    closer: SessionCloser,
}

/// The edge contract's shared state. One per server, behind an `Arc`.
pub struct Gateway {
    hub: Arc<Hub>,
    config: GatewayConfig,
    metrics: Arc<Metrics>,
    permits: Arc<Semaphore>,
    ready: AtomicBool,
    sessions: Mutex<HashMap<u64, Registered>>,
    next_id: AtomicU64,
}

impl Gateway {
    pub fn new(hub: Arc<Hub>, config: GatewayConfig) -> Arc<Gateway> {
        Arc::new(Gateway {
            hub,
            permits: Arc::new(Semaphore::new(config.max_connections.max(1))),
            config,
            metrics: Arc::new(Metrics::default()),
            ready: AtomicBool::new(true),
            sessions: Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(1),
        })
    }

    pub fn hub(&self) -> &Arc<Hub> {
        &self.hub
    }

    pub fn config(&self) -> &GatewayConfig {
        &self.config
    }

    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// A client's write timeout (see [`GatewayConfig::write_timeout`]).
    pub fn write_timeout(&self) -> Duration {
        self.config.write_timeout.max(Duration::from_millis(1))
    }

    /// Whether publishing is open to everyone (no API keys configured).
    pub fn publishing_is_open(&self) -> bool {
        self.config.api_keys.is_empty()
    }

    /// Who presented `creds`. A credential that was given but is not valid is refused
    /// (rather than treated as anonymous), so a client learns its key is wrong.
    pub fn authenticate(&self, creds: &Credentials<'_>) -> Result<Principal, Refusal> {
        match creds.api_key {
            Some(key) if !self.config.api_keys.is_empty() => {
                // Every configured key is compared, so the time does not tell which one matched.
                let ok = self.config.api_keys.iter().fold(false, |ok, k| {
                    ok | constant_time_eq(k.as_bytes(), key.as_bytes())
                });
                if ok {
                    Ok(Principal::ApiKey)
                } else {
                    Err(Refusal::new(
                        ErrorCode::Unauthorized,
                        "the API key is not valid",
                    ))
                }
            }
            _ if self.config.api_keys.is_empty() => Ok(Principal::Open),
            _ => Ok(Principal::Anonymous),
        }
    }

    /// For the server API (HTTP publish): a publisher principal or a refusal that says what to
    /// present.
    pub fn server_api(&self, creds: &Credentials<'_>) -> Result<Principal, Refusal> {
        let p = self.authenticate(creds)?;
        if p.is_publisher() {
            Ok(p)
        } else {
            Err(Refusal::new(
                ErrorCode::Unauthorized,
                "publishing needs `Authorization: Bearer <api key>`",
            ))
        }
    }

    /// Whether `principal` may publish to `channel`: publishers anywhere, others only to
    /// namespaces open to clients (`client_publish`).
    pub fn can_publish(&self, principal: &Principal, channel: &Channel) -> Result<(), Refusal> {
        let spec = self
            .hub
            .namespace_spec(channel.namespace())
            .ok_or_else(|| Refusal::unknown_namespace(&self.hub, channel.namespace()))?;
        if principal.is_publisher() || spec.client_publish {
            Ok(())
        } else {
            Err(Refusal::new(
                ErrorCode::Forbidden,
                format!(
                    "clients may not publish to `{}`; connect with an API key",
                    channel.namespace()
                ),
            ))
        }
    }

    /// Whether `principal` may subscribe to or read `channel`. Every channel is readable today;
    /// per-namespace read permissions land here.
    pub fn can_subscribe(&self, _principal: &Principal, channel: &Channel) -> Result<(), Refusal> {
        self.hub
            .namespace_spec(channel.namespace())
            .map(|_| ())
            .ok_or_else(|| Refusal::unknown_namespace(&self.hub, channel.namespace()))
    }

    /// Validates one publication for `principal` (permission, namespace, size, schema)
    /// without storing it.
    pub fn check(
        &self,
        principal: &Principal,
        request: PublishRequest,
    ) -> Result<Checked, Refusal> {
        self.can_publish(principal, &request.channel)?;
        self.hub.check(request).map_err(Refusal::from)
    }

    /// Opens a long-lived connection for `principal` on `edge`: a permit of the shared
    /// connection limit, a hub session, registration for shutdown and kicks, per-edge counts.
    pub fn connect(
        self: &Arc<Self>,
        edge: Edge,
        principal: Principal,
    ) -> Result<Connection, Refusal> {
        self.connect_limited(edge, principal, None)
    }

    /// [`Gateway::connect`] with a limit of this edge's own as well (the FIX acceptor's
    /// `max_connections`), checked in the same place as the shared one.
    pub fn connect_limited(
        self: &Arc<Self>,
        edge: Edge,
        principal: Principal,
        edge_limit: Option<usize>,
    ) -> Result<Connection, Refusal> {
        if !self.ready.load(Ordering::Acquire) {
            return Err(Refusal::new(ErrorCode::Unavailable, "server shutting down"));
        }
        let counters = self.metrics.edge(edge);
        if let Some(limit) = edge_limit {
            if !counters.try_connect(limit.max(1)) {
                return Err(Refusal::new(
                    ErrorCode::Unavailable,
                    format!("connection limit of the {} edge reached", edge.0),
                ));
            }
        } else {
            counters.connected();
        }
        let Ok(permit) = self.permits.clone().try_acquire_owned() else {
            counters.disconnected();
            return Err(Refusal::new(
                ErrorCode::Unavailable,
                "connection limit reached",
            ));
        };
        let session = self.hub.session();
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        self.sessions.lock().insert(
            id,
            Registered {
                edge,
                closer: session.closer(),
            },
        );
        Ok(Connection {
            gateway: self.clone(),
            edge,
            principal,
            session,
            id,
            _permit: permit,
        })
    }

    /// Whether the server takes new work (false while draining).
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
    }

    /// Graceful drain: not ready any more, and every live connection is told to go.
    pub fn shutdown(&self) {
        self.ready.store(false, Ordering::Release);
        self.close_all(CloseReason::Shutdown);
    }

    /// Closes every live connection with `reason`.
    pub fn close_all(&self, reason: CloseReason) {
        for r in self.sessions.lock().values() {
            r.closer.close(reason.clone());
        }
    }

    /// Live connections, all edges.
    pub fn live_connections(&self) -> usize {
        self.sessions.lock().len()
    }

    /// Live connections per edge, for metrics.
    pub fn connections_by_edge(&self) -> Vec<(Edge, usize)> {
        let mut m: HashMap<Edge, usize> = HashMap::new();
        for r in self.sessions.lock().values() {
            *m.entry(r.edge).or_default() += 1;
        }
        let mut v: Vec<(Edge, usize)> = m.into_iter().collect();
        v.sort();
        v
    }

    /// The Prometheus text of every counter (hub and edges).
    pub fn render_metrics(&self) -> String {
        self.metrics.render(&self.hub, self)
    }
}

/// One long-lived client connection: a principal, a hub session and a permit; unregistered
/// and counted down when dropped.
pub struct Connection {
    gateway: Arc<Gateway>,
    edge: Edge,
    principal: Principal,
    session: Session,
    id: u64,
    _permit: OwnedSemaphorePermit,
}

/// What [`Connection::next`] has for the edge.
#[derive(Debug)]
pub enum Event {
    /// Messages to write, in order (state snapshots and updates, stream messages).
    Deliver(Vec<Delivery>),
    /// The hub closed the session: tell the client why and where to resume, then close.
    Close(CloseReason),
}

impl Connection {
    pub fn gateway(&self) -> &Arc<Gateway> {
        &self.gateway
    }

    pub fn principal(&self) -> &Principal {
        &self.principal
    }

    pub fn edge(&self) -> Edge {
        self.edge
    }

    /// The hub session underneath, for edges with subscription rules of their own (MQTT).
    pub fn session(&mut self) -> &mut Session {
        &mut self.session
    }

    /// Subscribes to a channel; `from` (stream channels) replays from that offset first.
    /// With `epoch`, the client says which incarnation of the stream its `from` belongs to: a
    /// different one is refused (`epoch_mismatch`) instead of replaying a new stream's offsets.
    pub fn subscribe(
        &mut self,
        channel: &Channel,
        from: Option<Offset>,
        epoch: Option<Epoch>,
    ) -> Result<SubscribeInfo, Refusal> {
        self.gateway.can_subscribe(&self.principal, channel)?;
        if let Some(given) = epoch {
            let current = self.gateway.hub.epoch(channel.namespace())?;
            if given != current {
                return Err(Refusal::new(
                    ErrorCode::EpochMismatch,
                    format!(
                        "namespace `{}` was recreated: its stream is epoch {current}, not {given}; offsets started again at 0, so subscribe without `epoch` (from 0 to replay it)",
                        channel.namespace()
                    ),
                ));
            }
        }
        self.session.subscribe(channel, from).map_err(Refusal::from)
    }

    /// Subscribes to every channel matching `pattern` (see `Session::subscribe_pattern`).
    pub fn subscribe_pattern(
        &mut self,
        pattern: Pattern,
        from: Option<Offset>,
    ) -> Result<Vec<(Channel, SubscribeInfo)>, Refusal> {
        self.session
            .subscribe_pattern(pattern, from)
            .map_err(Refusal::from)
    }

    pub fn unsubscribe(&mut self, channel: &Channel) -> Result<(), Refusal> {
        self.session.unsubscribe(channel).map_err(Refusal::from)
    }

    /// Validates one publication for this connection's principal.
    pub fn check(&self, request: PublishRequest) -> Result<Checked, Refusal> {
        self.gateway.check(&self.principal, request)
    }

    /// Hands checked publications to their namespace writers now (waiting only while a
    /// writer's queue is full) and returns their acknowledgements as a future, one per item in
    /// order. An edge keeps these futures in a window and reads its next command meanwhile.
    pub async fn enqueue(
        &self,
        checked: Vec<Checked>,
    ) -> impl Future<Output = Vec<Result<Ack, Refusal>>> + Send + 'static {
        let n = checked.len() as u64;
        let metrics = self.gateway.metrics.clone();
        let edge = self.edge;
        let acks = self.gateway.hub.enqueue(checked).await;
        async move {
            let acks = acks.await;
            metrics.edge(edge).published(n);
            acks.into_iter().map(|r| r.map_err(Refusal::from)).collect()
        }
    }

    /// Waits for the next thing to do: deliveries to write, or the session's end. Cancel-safe
    /// while waiting; the drain after the wait runs to completion.
    pub async fn next(&mut self) -> Event {
        tokio::select! {
            biased;
            _ = self.session.closed() => {}
            _ = self.session.wait() => {}
        }
        self.drain().await
    }

    /// Whatever is ready now, without waiting for more. Not cancel-safe: call it outside
    /// `select!`.
    pub async fn drain(&mut self) -> Event {
        match self.session.drain().await {
            Ok(batch) => Event::Deliver(batch),
            Err(reason) => {
                self.gateway.metrics.note_close(&reason);
                Event::Close(reason)
            }
        }
    }

    /// Counts messages written to the client.
    pub fn delivered(&self, n: u64) {
        self.gateway.metrics.edge(self.edge).delivered(n);
    }

    /// Counts a refused command or publication.
    pub fn refused(&self) {
        self.gateway.metrics.edge(self.edge).rejected();
    }

    /// Where each stream subscription would resume (for a disconnect frame).
    pub fn resume_points(&self) -> Vec<(String, Offset)> {
        self.session.resume_points()
    }

    /// Resolves when the hub closes this session. Cancel-safe.
    pub async fn closed(&self) {
        self.session.closed().await
    }

    /// Resolves when something may be ready to drain. Cancel-safe.
    pub async fn wait(&self) {
        self.session.wait().await
    }

    /// Why the hub closed the session, if it did.
    pub fn close_reason(&self) -> Option<CloseReason> {
        self.session.close_reason()
    }
}

impl Drop for Connection {
    fn drop(&mut self) {
        self.gateway.sessions.lock().remove(&self.id);
        self.gateway.metrics.edge(self.edge).disconnected();
    }
}

impl From<HubError> for Refusal {
    fn from(e: HubError) -> Refusal {
        Refusal::from_hub(&e)
    }
}
