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

mod auth;
pub mod deadline;
mod limits;
mod metrics;
mod refusal;
mod stamp;

use std::{
    collections::HashMap,
    future::Future,
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc,
    },
    time::Duration,
};

use auth::Authenticator;
use parking_lot::Mutex;
use tickwire_hub::{
    Ack, Channel, Checked, CloseReason, Delivery, Epoch, Hub, HubError, Offset, Pattern,
    PublishRequest, Session, SessionCloser, SubscribeInfo,
};
use tickwire_model::Permission;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

pub use auth::{mint_hs256, ApiKeyConfig, AuthConfig, Claims, KeyIdentity, Scope, User};
pub use limits::{LimitsConfig, NamespaceLimits, PublishLimits, Rate};
pub use metrics::{EdgeCounters, Metrics, MetricsSource};
pub use refusal::Refusal;
pub use tickwire_wire::ErrorCode;

/// A client's address, put into each HTTP request's extensions by the listener so edges that
/// serve over HTTP (WebSocket, SSE, MQTT over WebSocket) can count connections per address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerAddr(pub std::net::SocketAddr);

/// The name an edge is counted and logged under (`websocket`, `sse`, `mqtt`, ...). Edges
/// declare their own; the gateway does not enumerate them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Edge(pub &'static str);

/// The gateway's settings (from the server configuration).
#[derive(Debug, Clone)]
pub struct GatewayConfig {
    /// Identities: API keys and JWT verification. Nothing configured: development mode, every
    /// client may read and publish everything.
    pub auth: AuthConfig,
    /// Rate limits for clients (the server API is not limited).
    pub limits: LimitsConfig,
    /// Concurrent long-lived connections across every edge.
    pub max_connections: usize,
    /// A client that does not take a write within this long is disconnected.
    pub write_timeout: Duration,
}

impl Default for GatewayConfig {
    fn default() -> Self {
        GatewayConfig {
            auth: AuthConfig::default(),
            limits: LimitsConfig::default(),
            max_connections: 100_000,
            write_timeout: Duration::from_secs(10),
        }
    }
}

/// What a client presented to prove who it is: an API key or a JWT, however its wire carries
/// it (`Authorization: Bearer`, `?token=`, `?api_key=`, the MQTT password, FIX Password(554)).
#[derive(Debug, Clone, Copy, Default)]
pub struct Credentials<'a> {
    pub secret: Option<&'a str>,
}

impl<'a> Credentials<'a> {
    pub fn new(secret: Option<&'a str>) -> Credentials<'a> {
        Credentials {
            secret: secret.filter(|s| !s.is_empty()),
        }
    }
}

/// Who a connection or request is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Principal {
    /// Presented nothing.
    Anonymous,
    /// Holds a configured API key.
    ApiKey(Arc<KeyIdentity>),
    /// A verified JWT.
    User(Arc<User>),
    /// No identities are configured: everyone may do everything (development mode).
    Open,
}

impl Principal {
    /// May publish to any namespace (an API key with the `publish` scope, or anyone in
    /// development mode).
    pub fn is_publisher(&self) -> bool {
        match self {
            Principal::ApiKey(k) => k.has(Scope::Publish),
            Principal::Open => true,
            _ => false,
        }
    }

    /// The JWT user, if that is who this is.
    pub fn user(&self) -> Option<&User> {
        match self {
            Principal::User(u) => Some(u),
            _ => None,
        }
    }

    /// Unix seconds the credential expires at (JWT `exp`).
    pub fn expires_at(&self) -> Option<u64> {
        self.user().and_then(|u| u.exp)
    }

    /// A stable name for who this is (`user:42`, `key:feed`, `anonymous`, `open`): owners of
    /// MQTT sessions, log lines.
    pub fn identity(&self) -> String {
        match self {
            Principal::Anonymous => "anonymous".into(),
            Principal::Open => "open".into(),
            Principal::ApiKey(k) => format!("key:{}", k.name),
            Principal::User(u) => format!("user:{}", u.sub),
        }
    }

    /// Whether `self` passes `perm` on `channel` (`publish`: the publish side).
    fn permits(&self, perm: Permission, channel: &Channel, publish: bool) -> bool {
        match self {
            Principal::Open => true,
            Principal::Anonymous => perm == Permission::Anyone,
            Principal::ApiKey(k) => {
                if publish {
                    // The `publish` scope is the server API: anywhere. Without it, a key is
                    // an authenticated client like any other.
                    k.has(Scope::Publish)
                        || matches!(perm, Permission::Anyone | Permission::Authenticated)
                } else {
                    k.has(Scope::SubscribeAll)
                        || matches!(
                            perm,
                            Permission::Anyone | Permission::Authenticated | Permission::ApiKey
                        )
                }
            }
            Principal::User(u) => {
                let claimed = if publish { &u.publish } else { &u.channels };
                // A token's patterns widen what the namespace allows (an operator's
                // `channels: ["user.*"]`); they never narrow it.
                claimed.iter().any(|p| p.matches(channel))
                    || match perm {
                        Permission::Anyone | Permission::Authenticated => true,
                        Permission::Owner => u.owns(channel),
                        Permission::Claim | Permission::ApiKey => false,
                    }
            }
        }
    }
}

/// The refusal for `principal` not passing `perm` on `channel`.
fn denied(principal: &Principal, action: &str, channel: &Channel, perm: Permission) -> Refusal {
    let who = principal.identity();
    let (code, hint) = match principal {
        Principal::Anonymous => (
            ErrorCode::Unauthorized,
            " — present an API key or a token".to_string(),
        ),
        _ => (ErrorCode::Forbidden, String::new()),
    };
    Refusal::new(
        code,
        format!(
            "{who} may not {action} `{channel}`: namespace `{}` allows {}{hint}",
            channel.namespace(),
            match perm {
                Permission::Anyone => "anyone",
                Permission::Authenticated => "authenticated clients",
                Permission::Owner => "only the user it belongs to (`<namespace>.<sub>`)",
                Permission::Claim => "only what the token's claims allow",
                Permission::ApiKey => "only API keys",
            }
        ),
    )
}

struct Registered {
    edge: Edge,
    closer: SessionCloser,
}

/// The edge contract's shared state. One per server, behind an `Arc`.
pub struct Gateway {
    hub: Arc<Hub>,
    config: GatewayConfig,
    auth: Authenticator,
    limiter: limits::Limiter,
    metrics: Arc<Metrics>,
    permits: Arc<Semaphore>,
    ready: AtomicBool,
    sessions: Mutex<HashMap<u64, Registered>>,
    next_id: AtomicU64,
}

impl Gateway {
    /// The gateway over `hub`; fails when `config.auth` names a key file that cannot be read
    /// or a secret too short to be safe.
    pub fn new(hub: Arc<Hub>, config: GatewayConfig) -> Result<Arc<Gateway>, String> {
        let auth = Authenticator::new(&config.auth)?;
        if !config.auth.enabled() {
            tracing::warn!("no [auth] configured: every client may read and publish every channel (development mode)");
        }
        Ok(Arc::new(Gateway {
            hub,
            permits: Arc::new(Semaphore::new(config.max_connections.max(1))),
            auth,
            limiter: limits::Limiter::new(config.limits.clone()),
            config,
            metrics: Arc::new(Metrics::default()),
            ready: AtomicBool::new(true),
            sessions: Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(1),
        }))
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

    /// Whether no identity is configured (development mode: everything is open).
    pub fn publishing_is_open(&self) -> bool {
        !self.config.auth.enabled()
    }

    /// How long a connection whose token expired may send `refresh` before it is closed.
    pub fn token_grace(&self) -> Duration {
        Duration::from_secs(self.config.auth.token_grace_secs)
    }

    /// Who presented `creds`: an API key, a JWT user, or anonymous (nothing presented). A
    /// credential that was given but is not valid is refused (rather than treated as
    /// anonymous), so a client learns its key or token is wrong.
    pub fn authenticate(&self, creds: &Credentials<'_>) -> Result<Principal, Refusal> {
        if !self.config.auth.enabled() {
            return Ok(Principal::Open);
        }
        let Some(secret) = creds.secret.filter(|s| !s.is_empty()) else {
            return Ok(Principal::Anonymous);
        };
        if let Some(k) = self.auth.api_key(secret) {
            return Ok(Principal::ApiKey(k));
        }
        // Three base64url parts: a JWT. Anything else was meant as an API key.
        if secret.split('.').count() == 3 && self.auth.has_jwt() {
            return self
                .auth
                .verify(secret)
                .map(|u| Principal::User(Arc::new(u)));
        }
        Err(Refusal::new(
            ErrorCode::Unauthorized,
            if self.auth.has_jwt() {
                "the credential is neither a configured API key nor a valid token"
            } else {
                "the API key is not valid"
            },
        ))
    }

    /// For the server API (HTTP publish): a principal that may publish somewhere, or a
    /// refusal that says what to present. What it may publish is checked per item.
    pub fn server_api(&self, creds: &Credentials<'_>) -> Result<Principal, Refusal> {
        let p = self.authenticate(creds)?;
        match p {
            Principal::Anonymous => Err(Refusal::new(
                ErrorCode::Unauthorized,
                "publishing needs `Authorization: Bearer <api key or token>`",
            )),
            p => Ok(p),
        }
    }

    /// Whether `principal` may use the operator endpoints (`/metrics`, FIX sessions, channel
    /// and namespace listings): the `admin` scope, development mode, or `admin_open`.
    pub fn require_admin(&self, principal: &Principal) -> Result<(), Refusal> {
        let ok = self.config.auth.admin_open
            || match principal {
                Principal::Open => true,
                Principal::ApiKey(k) => k.has(Scope::Admin),
                _ => false,
            };
        if ok {
            Ok(())
        } else if *principal == Principal::Anonymous {
            Err(Refusal::new(
                ErrorCode::Unauthorized,
                "this endpoint needs an API key with the `admin` scope (`Authorization: Bearer`)",
            ))
        } else {
            Err(Refusal::new(
                ErrorCode::Forbidden,
                "this endpoint needs an API key with the `admin` scope",
            ))
        }
    }

    fn spec(&self, channel: &Channel) -> Result<&tickwire_hub::NamespaceSpec, Refusal> {
        self.hub
            .namespace_spec(channel.namespace())
            .ok_or_else(|| Refusal::unknown_namespace(&self.hub, channel.namespace()))
    }

    /// Whether `principal` may publish to `channel` (the namespace's `publish` permission).
    pub fn can_publish(&self, principal: &Principal, channel: &Channel) -> Result<(), Refusal> {
        let spec = self.spec(channel)?;
        if principal.permits(spec.publish, channel, true) {
            return Ok(());
        }
        Err(denied(principal, "publish to", channel, spec.publish))
    }

    /// Whether `principal` may subscribe to or read `channel` (the namespace's `subscribe`
    /// permission): WebSocket, SSE, MQTT, history, latest.
    pub fn can_subscribe(&self, principal: &Principal, channel: &Channel) -> Result<(), Refusal> {
        let spec = self.spec(channel)?;
        if principal.permits(spec.subscribe, channel, false) {
            return Ok(());
        }
        Err(denied(principal, "read", channel, spec.subscribe))
    }

    /// Whether `principal` may subscribe to a pattern: every channel it can match must be
    /// readable, so a pattern is allowed only where the namespace is readable as a whole.
    pub fn can_subscribe_pattern(
        &self,
        principal: &Principal,
        pattern: &Pattern,
    ) -> Result<(), Refusal> {
        if matches!(principal, Principal::Open) {
            return Ok(());
        }
        let check = |ns: &str| -> Result<(), Refusal> {
            let spec = self
                .hub
                .namespace_spec(ns)
                .ok_or_else(|| Refusal::unknown_namespace(&self.hub, ns))?;
            let wide = match (principal, spec.subscribe) {
                (Principal::ApiKey(k), _) if k.has(Scope::SubscribeAll) => true,
                (_, Permission::Anyone) => true,
                (Principal::Anonymous, _) => false,
                (_, Permission::Authenticated) => true,
                (Principal::ApiKey(_), Permission::ApiKey) => true,
                (Principal::User(u), _) => u.channels.iter().any(|c| c == pattern),
                _ => false,
            };
            if wide {
                Ok(())
            } else {
                Err(Refusal::new(
                    if *principal == Principal::Anonymous {
                        ErrorCode::Unauthorized
                    } else {
                        ErrorCode::Forbidden
                    },
                    format!(
                        "`{}` may match channels {} may not read (namespace `{ns}` is readable by {}); subscribe to your channels by name",
                        pattern.as_str(),
                        principal.identity(),
                        spec.subscribe.as_str()
                    ),
                ))
            }
        };
        match pattern.namespace() {
            Some(ns) => check(ns),
            None => self
                .hub
                .namespaces()
                .iter()
                .try_for_each(|s| check(&s.name)),
        }
    }

    /// Validates one publication for `principal` (permission, namespace, size, schema)
    /// without storing it. A user's message in a stream namespace is stamped with who sent
    /// it (`from`), which no client can forge.
    pub fn check(
        &self,
        principal: &Principal,
        mut request: PublishRequest,
    ) -> Result<Checked, Refusal> {
        let spec = self.spec(&request.channel)?;
        if !principal.permits(spec.publish, &request.channel, true) {
            return Err(denied(
                principal,
                "publish to",
                &request.channel,
                spec.publish,
            ));
        }
        if spec.class == tickwire_hub::Class::Stream {
            match principal {
                Principal::User(u) => request.data = stamp::from_user(&request.data, u)?,
                Principal::Anonymous => stamp::refuse_forged_from(&request.data)?,
                Principal::ApiKey(_) | Principal::Open => {}
            }
        }
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
        self.connect_from(edge, principal, None, edge_limit)
    }

    /// [`Gateway::connect_limited`] for a client at `ip`, counted against
    /// `[limits] max_connections_per_ip`.
    pub fn connect_from(
        self: &Arc<Self>,
        edge: Edge,
        principal: Principal,
        ip: Option<std::net::IpAddr>,
        edge_limit: Option<usize>,
    ) -> Result<Connection, Refusal> {
        if !self.ready.load(Ordering::Acquire) {
            return Err(Refusal::new(ErrorCode::Unavailable, "server shutting down"));
        }
        if let Some(ip) = ip {
            if let Err(r) = self.limiter.connect_ip(ip) {
                self.metrics.edge(edge).rate_limited();
                return Err(r);
            }
        }
        // Undoes the IP count if anything below refuses the connection.
        let ip_guard = IpCount {
            gateway: self.clone(),
            ip,
        };
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
        let shared = self.shared_buckets(&principal);
        Ok(Connection {
            gateway: self.clone(),
            edge,
            principal,
            session,
            id,
            _permit: permit,
            buckets: Mutex::new(None),
            shared,
            _ip: ip_guard,
        })
    }

    /// Whether `principal` is rate-limited: clients are, the server API is not.
    fn limited(principal: &Principal) -> bool {
        !principal.is_publisher()
    }

    /// The buckets `principal` shares across its connections (users and API keys without the
    /// `publish` scope; anonymous clients have no identity to share).
    fn shared_buckets(&self, principal: &Principal) -> Option<Arc<Mutex<limits::Buckets>>> {
        match principal {
            Principal::User(_) | Principal::ApiKey(_) if Self::limited(principal) => {
                Some(self.limiter.principal(&principal.identity()))
            }
            _ => None,
        }
    }

    /// [`Gateway::check`] for a request without a connection (HTTP publish): the principal's
    /// shared publish limits apply.
    pub fn check_limited(
        &self,
        principal: &Principal,
        request: PublishRequest,
    ) -> Result<Checked, Refusal> {
        if let Some(b) = self.shared_buckets(principal) {
            // A request has no connection of its own: only the shared buckets count.
            let r = self.limiter.publish_shared(
                &b,
                request.channel.namespace(),
                request.data.len() as u64,
            );
            self.limiter.release_principal(&principal.identity(), b);
            if let Err(r) = r {
                self.metrics.edge(Edge("http")).rate_limited();
                return Err(r);
            }
        }
        self.check(principal, request)
    }

    /// A REST read (history, latest) counted as a command of `principal` (anonymous reads
    /// are limited by the HTTP layer's connection limits, not here).
    pub fn read_command(&self, principal: &Principal) -> Result<(), Refusal> {
        let Some(b) = self.shared_buckets(principal) else {
            return Ok(());
        };
        let r = self.limiter.command(&b);
        self.limiter.release_principal(&principal.identity(), b);
        if r.is_err() {
            self.metrics.edge(Edge("http")).rate_limited();
        }
        r
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
    /// This connection's rate-limit buckets, made on its first publish or command (most
    /// connections only read: nothing to keep for them).
    buckets: Mutex<Option<Box<limits::Buckets>>>,
    /// Its principal's buckets, shared with the principal's other connections.
    shared: Option<Arc<Mutex<limits::Buckets>>>,
    _ip: IpCount,
}

/// A connection's place in the per-IP count, given back when it closes.
struct IpCount {
    gateway: Arc<Gateway>,
    ip: Option<std::net::IpAddr>,
}

impl Drop for IpCount {
    fn drop(&mut self) {
        if let Some(ip) = self.ip {
            self.gateway.limiter.disconnect_ip(ip);
        }
    }
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

    /// A connection that presents its credential after opening (WebSocket `connect`), or a
    /// fresh token for the same user (`refresh`): who it is from now on. A refresh must name
    /// the same user, so a connection can never change hands.
    pub fn set_principal(&mut self, principal: Principal) -> Result<(), Refusal> {
        match (&self.principal, &principal) {
            (Principal::Anonymous, _) => {}
            (Principal::User(a), Principal::User(b)) if a.sub == b.sub => {}
            (a, b) if a == b => {}
            (a, b) => {
                return Err(Refusal::new(
                    ErrorCode::Forbidden,
                    format!(
                        "this connection is {}; a credential for {} cannot take it over",
                        a.identity(),
                        b.identity()
                    ),
                ))
            }
        }
        if let Some(old) = self.shared.take() {
            self.gateway
                .limiter
                .release_principal(&self.principal.identity(), old);
        }
        self.shared = self.gateway.shared_buckets(&principal);
        self.principal = principal;
        Ok(())
    }

    /// One command against this connection's command bucket (clients only).
    fn command(&self) -> Result<(), Refusal> {
        if !Gateway::limited(&self.principal) {
            return Ok(());
        }
        let rate = self.gateway.limiter.config.commands;
        let mut b = self.buckets.lock();
        let b = b.get_or_insert_with(Default::default);
        let r = b.command_at(rate);
        if r.is_err() {
            self.refused_by_limit();
        }
        r
    }

    fn refused_by_limit(&self) {
        self.gateway.metrics.edge(self.edge).rate_limited();
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
        self.command()?;
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

    /// Subscribes to a stream channel starting with its recent history: its newest `n`
    /// messages, or those since a time, then live. For a chat page that shows the latest
    /// lines without replaying the channel from offset 0.
    pub fn subscribe_recent(
        &mut self,
        channel: &Channel,
        recent: tickwire_hub::Recent,
    ) -> Result<SubscribeInfo, Refusal> {
        if let tickwire_hub::Recent::Last(n) = recent {
            if n == 0 || n > tickwire_hub::MAX_LAST {
                return Err(Refusal::new(
                    ErrorCode::BadRequest,
                    format!("`last` must be 1 to {}", tickwire_hub::MAX_LAST),
                ));
            }
        }
        self.command()?;
        self.gateway.can_subscribe(&self.principal, channel)?;
        let from = self.gateway.hub.recent_start(channel, recent)?;
        self.session
            .subscribe(channel, Some(from))
            .map_err(Refusal::from)
    }

    /// Subscribes to every channel matching `pattern` (see `Session::subscribe_pattern`).
    pub fn subscribe_pattern(
        &mut self,
        pattern: Pattern,
        from: Option<Offset>,
    ) -> Result<Vec<(Channel, SubscribeInfo)>, Refusal> {
        self.command()?;
        self.gateway
            .can_subscribe_pattern(&self.principal, &pattern)?;
        self.session
            .subscribe_pattern(pattern, from)
            .map_err(Refusal::from)
    }

    pub fn unsubscribe(&mut self, channel: &Channel) -> Result<(), Refusal> {
        self.command()?;
        self.session.unsubscribe(channel).map_err(Refusal::from)
    }

    /// Validates one publication for this connection's principal, within its rate limits.
    pub fn check(&self, request: PublishRequest) -> Result<Checked, Refusal> {
        if Gateway::limited(&self.principal) {
            let mut b = self.buckets.lock();
            let b = b.get_or_insert_with(Default::default);
            let r = self.gateway.limiter.publish(
                b,
                self.shared.as_deref(),
                request.channel.namespace(),
                request.data.len() as u64,
            );
            if let Err(r) = r {
                self.refused_by_limit();
                return Err(r);
            }
        }
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

    /// When the credential of `principal` expires, as an instant of the runtime's clock.
    pub fn token_deadline(&self) -> Option<tokio::time::Instant> {
        let exp = self.principal.expires_at()?;
        let now = tickwire_model::clock::now_nanos() / 1_000_000_000;
        Some(tokio::time::Instant::now() + Duration::from_secs(exp.saturating_sub(now)))
    }

    /// Ends the connection because its token expired: the edge's close path (a disconnect
    /// with resume points) runs as for any server-side close.
    pub fn expire(&self) {
        self.session.closer().close(CloseReason::TokenExpired);
    }

    pub fn close_reason(&self) -> Option<CloseReason> {
        self.session.close_reason()
    }
}

impl Drop for Connection {
    fn drop(&mut self) {
        self.gateway.sessions.lock().remove(&self.id);
        self.gateway.metrics.edge(self.edge).disconnected();
        if let Some(shared) = self.shared.take() {
            self.gateway
                .limiter
                .release_principal(&self.principal.identity(), shared);
        }
    }
}

impl From<HubError> for Refusal {
    fn from(e: HubError) -> Refusal {
        Refusal::from_hub(&e)
    }
}
